//! Values checked, not only types: numbers beyond f32, pixels outside their range, `.ts`
//! headers that disagree with the data, hidden and empty class folders, and a UTF-8
//! byte-order mark (read, not refused).

use std::path::Path;

mod common;
use common::{convnet, refused_within};

fn write(d: &Path, name: &str, text: &str) {
    std::fs::write(d.join(name), text).unwrap();
}

const SERIES: &str = "[model]\ninput = [1, 4]\n[[model.layers]]\ntype = \"conv1d\"\nfilters = 2\nkernel_size = 2\n[[model.layers]]\ntype = \"global_avg_pool\"\n[[model.layers]]\ntype = \"dense\"\nunits = 2\n";

fn ts_spec(train: &str) -> String {
    format!(
        "{SERIES}[data]\nformat = \"ts\"\ntrain = \"{train}\"\nvalidation_split = 0.0\n[train]\nepochs = 1\n"
    )
}

#[test]
fn numbers_beyond_f32_and_pixels_beyond_pixel_max_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "s.ts",
        "@classLabel true a b\n@data\n1,2,3,4:a\n4,3,2,1:b\n",
    );
    write(
        d,
        "lr.toml",
        &(ts_spec("s.ts") + "optimizer = { type = \"adam\", lr = 1e39 }\n"),
    );
    refused_within(
        d,
        &["train", "lr.toml"],
        &["lr.toml", "key `lr`", "1e39", "32-bit float"],
        256,
        10,
    );
    let csv = "label,p0,p1,p2,p3\n0,0,10,255,3\n1,300,0,0,0\n";
    write(d, "px.csv", csv);
    let img = "[model]\ninput = [1, 2, 2]\n[[model.layers]]\ntype = \"flatten\"\n[[model.layers]]\ntype = \"dense\"\nunits = 2\n[data]\nformat = \"csv\"\ntrain = \"px.csv\"\n[train]\nepochs = 1\n";
    write(d, "px.toml", img);
    refused_within(
        d,
        &["train", "px.toml", "--out", "r"],
        &[
            "px.csv",
            "line 3, column `p0`",
            "pixel 300 is outside [0, 255]",
        ],
        256,
        10,
    );
}

#[test]
fn ts_headers_that_disagree_with_the_data_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        (
            "@dimensions 2\n",
            "line 1: the header says 2 dimension(s) but the series have 1",
        ),
        (
            "@univariate maybe\n",
            "line 1: @univariate expects true or false, got \"maybe\"",
        ),
        (
            "@equalLength true\n",
            "line 1: the header says equal lengths but series 2 has 5 values",
        ),
        (
            "@seriesLength 4\n",
            "line 1: the header says series of length 4 but series 2 has 5",
        ),
        (
            "@seriesLength -3\n",
            "line 1: @serieslength expects a whole number",
        ),
    ];
    for (i, (head, want)) in cases.iter().enumerate() {
        let ts = format!("{head}@classLabel true a b\n@data\n1,2,3,4:a\n4,3,2,1,0:b\n");
        write(d, &format!("h{i}.ts"), &ts);
        write(d, &format!("h{i}.toml"), &ts_spec(&format!("h{i}.ts")));
        refused_within(
            d,
            &["train", &format!("h{i}.toml"), "--out", "r"],
            &[&format!("h{i}.ts"), want],
            256,
            10,
        );
    }
    // a header that agrees, unequal lengths declared as such
    let ts = "@univariate true\n@equalLength false\n@seriesLength 4\n@classLabel true a b\n@data\n1,2,3,4:a\n4,3,2,1,0:b\n";
    write(d, "fine.ts", ts);
    let any = ts_spec("fine.ts").replace("input = [1, 4]", "input = [1, \"any\"]");
    write(d, "fine.toml", &any);
    let (ok, _, err) = convnet(d, &["train", "fine.toml", "--out", "fine"]);
    assert!(ok, "{err}");
}

#[test]
fn a_byte_order_mark_is_read_and_hidden_or_empty_class_folders_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // a BOM before the spec, a .ts file and a CSV
    write(
        d,
        "s.ts",
        "\u{feff}@classLabel true a b\n@data\n1,2,3,4:a\n4,3,2,1:b\n",
    );
    write(d, "bom.toml", &format!("\u{feff}{}", ts_spec("s.ts")));
    let (ok, _, err) = convnet(d, &["train", "bom.toml", "--out", "bom"]);
    assert!(ok, "{err}");
    write(
        d,
        "px.csv",
        "\u{feff}label,p0,p1,p2,p3\n0,0,10,255,3\n1,30,0,0,0\n",
    );
    let img = "[model]\ninput = [1, 2, 2]\n[[model.layers]]\ntype = \"flatten\"\n[[model.layers]]\ntype = \"dense\"\nunits = 2\n[data]\nformat = \"csv\"\ntrain = \"px.csv\"\nvalidation_split = 0.0\n[train]\nepochs = 1\n";
    write(d, "px.toml", img);
    let (ok, _, err) = convnet(d, &["train", "px.toml", "--out", "px"]);
    assert!(ok, "{err}");

    // a folder of classes with a notebook's hidden checkpoint folder: not a class
    for (class, v) in [("cats", 0u8), ("dogs", 255u8)] {
        std::fs::create_dir_all(d.join("imgs").join(class)).unwrap();
        for i in 0..3 {
            let img = image::GrayImage::from_pixel(4, 4, image::Luma([v.wrapping_add(i)]));
            img.save(d.join("imgs").join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
    std::fs::create_dir_all(d.join("imgs/.ipynb_checkpoints")).unwrap();
    let folder = "[model]\ninput = [1, 4, 4]\n[[model.layers]]\ntype = \"flatten\"\n[[model.layers]]\ntype = \"dense\"\nunits = 2\n[data]\nformat = \"folder\"\ntrain = \"imgs\"\nvalidation_split = 0.0\n[train]\nepochs = 1\n";
    write(d, "folder.toml", folder);
    let (ok, _, err) = convnet(d, &["train", "folder.toml", "--out", "folder"]);
    assert!(ok, "{err}");
    let info = std::fs::read_to_string(d.join("folder/run.json")).unwrap();
    assert!(
        info.contains("\"cats\"") && !info.contains("ipynb"),
        "{info}"
    );
    // an empty class folder would shift every label: refused with its name
    std::fs::create_dir_all(d.join("imgs/birds")).unwrap();
    refused_within(
        d,
        &["train", "folder.toml", "--out", "r"],
        &["birds", "a class folder without images"],
        256,
        10,
    );
}
