//! The conventions users bring from cargo and config-driven tools: data paths relative to the
//! spec file, run directories usable from any folder, `eval` of the test set without the
//! training data.

mod common;
use common::{MODEL, bars, convnet, npy, write_idx};

#[test]
fn data_paths_are_relative_to_the_spec_and_runs_work_from_any_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let project = d.join("project");
    std::fs::create_dir_all(project.join("data")).unwrap();
    let (px, lab) = bars(120, 1);
    write_idx(&project.join("data/train-images"), 3, &[120, 8, 8], &px);
    write_idx(&project.join("data/train-labels"), 1, &[120], &lab);
    let (px, lab) = bars(30, 2);
    write_idx(&project.join("data/test-images"), 3, &[30, 8, 8], &px);
    write_idx(&project.join("data/test-labels"), 1, &[30], &lab);
    let spec = format!(
        "{MODEL}[data]\nformat = \"idx\"\ntrain_images = \"data/train-images\"\ntrain_labels = \"data/train-labels\"\ntest_images = \"data/test-images\"\ntest_labels = \"data/test-labels\"\n[train]\nepochs = 1\nbatch_size = 16\n"
    );
    std::fs::write(project.join("bars.toml"), spec).unwrap();
    // trained from the folder above the project: the spec's paths are the spec's folder's
    let (ok, out, err) = convnet(d, &["train", "project/bars.toml", "--out", "runs/bars"]);
    assert!(ok, "{out}{err}");
    // evaluated from an unrelated folder, through an absolute path to the run
    let elsewhere = d.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let run = d.join("runs/bars");
    let (ok, out, err) = convnet(&elsewhere, &["eval", run.to_str().unwrap(), "--json"]);
    assert!(ok, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["samples"], 30);
    // the test set alone: run.json holds the normalisation and the class names
    for f in ["train-images", "train-labels"] {
        std::fs::remove_file(project.join("data").join(f)).unwrap();
    }
    let (ok, out2, err) = convnet(&elsewhere, &["eval", run.to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    let w: serde_json::Value = serde_json::from_str(&out2).unwrap();
    assert_eq!(v["accuracy"], w["accuracy"]);
    assert_eq!(v["loss"], w["loss"]);
    // the validation split needs the training data, and says which file is missing
    let (ok, _, err) = convnet(
        &elsewhere,
        &["eval", run.to_str().unwrap(), "--data", "val"],
    );
    assert!(!ok && err.contains("train-images"), "{err}");
}

#[test]
fn folders_and_predict_read_every_image_format_and_predict_speaks_json() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let formats = [
        image::ImageFormat::Png,
        image::ImageFormat::Jpeg,
        image::ImageFormat::Bmp,
        image::ImageFormat::Gif,
        image::ImageFormat::Tiff,
        image::ImageFormat::WebP,
    ];
    let exts = ["png", "jpg", "bmp", "gif", "tiff", "webp"];
    for (class, v) in [("dark", 20u8), ("light", 230u8)] {
        std::fs::create_dir_all(d.join("imgs").join(class)).unwrap();
        for (fmt, ext) in formats.iter().zip(exts) {
            let img = image::RgbImage::from_pixel(6, 6, image::Rgb([v, v, v]));
            let p = d.join("imgs").join(class).join(format!("a.{ext}"));
            image::DynamicImage::ImageRgb8(img)
                .save_with_format(&p, *fmt)
                .unwrap();
        }
    }
    let spec = "[model]\ninput = [1, 6, 6]\n[[model.layers]]\ntype = \"flatten\"\n[[model.layers]]\ntype = \"dense\"\nunits = 2\n[data]\nformat = \"folder\"\ntrain = \"imgs\"\nvalidation_split = 0.0\nnormalize = \"scale\"\n[train]\nepochs = 30\nbatch_size = 4\noptimizer = { type = \"adam\", lr = 0.05 }\n";
    std::fs::write(d.join("f.toml"), spec).unwrap();
    let (ok, out, err) = convnet(d, &["train", "f.toml", "--out", "run"]);
    assert!(ok, "{out}{err}");
    // every format was read: 6 files per class
    let (ok, out, err) = convnet(d, &["eval", "run", "--data", "train", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["samples"], 12);
    let files: Vec<String> = exts.iter().map(|e| format!("imgs/light/a.{e}")).collect();
    let mut args = vec!["predict", "run", "--json", "--top", "2"];
    args.extend(files.iter().map(|s| s.as_str()));
    let (ok, out, err) = convnet(d, &args);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 6);
    for (r, f) in rows.iter().zip(&files) {
        assert_eq!(r["file"], f.as_str());
        let top = r["top"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        assert_eq!(top[0]["class"], "light", "{r}");
        let p0 = top[0]["probability"].as_f64().unwrap();
        let p1 = top[1]["probability"].as_f64().unwrap();
        assert!(p0 >= p1 && (p0 + p1 - 1.0).abs() < 1e-5, "{r}");
    }
}

#[test]
fn eval_reports_f1_and_top_k_accuracy() {
    let (dir, _) = common::setup("");
    let d = dir.path();
    let (ok, _, err) = convnet(d, &["train", "bars.toml", "--out", "run", "--epochs", "1"]);
    assert!(ok, "{err}");
    let json = |k: &str| {
        let (ok, out, err) = convnet(d, &["eval", "run", "--json", "--top-k", k]);
        assert!(ok, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let v = json("1");
    let rows = v["per_class"].as_array().unwrap();
    let (mut macro_f1, mut weighted, mut n) = (0.0, 0.0, 0.0);
    for r in rows {
        let (p, rc) = (
            r["precision"].as_f64().unwrap(),
            r["recall"].as_f64().unwrap(),
        );
        let f1 = if p + rc > 0.0 {
            2.0 * p * rc / (p + rc)
        } else {
            0.0
        };
        assert!((r["f1"].as_f64().unwrap() - f1).abs() < 1e-12, "{r}");
        let s = r["support"].as_f64().unwrap();
        macro_f1 += f1 / rows.len() as f64;
        weighted += f1 * s;
        n += s;
    }
    assert_eq!(n as u64, v["samples"].as_u64().unwrap());
    assert!((v["macro_f1"].as_f64().unwrap() - macro_f1).abs() < 1e-12);
    assert!((v["weighted_f1"].as_f64().unwrap() - weighted / n).abs() < 1e-12);
    // top-1 is the accuracy; the top 3 of 3 classes hold every true class
    assert_eq!(v["top_k"]["accuracy"], v["accuracy"]);
    assert_eq!(json("3")["top_k"]["accuracy"], 1.0);
    let a2 = json("2")["top_k"]["accuracy"].as_f64().unwrap();
    assert!(a2 >= v["accuracy"].as_f64().unwrap() && a2 <= 1.0);
    let (ok, out, _) = convnet(d, &["eval", "run", "--top-k", "2"]);
    assert!(
        ok && out.contains("top-2 accuracy") && out.contains("macro F1"),
        "{out}"
    );
    // the confusion matrix in blue (correct) and orange (errors), not red and green
    let png = image::open(d.join("run/confusion_test.png"))
        .unwrap()
        .to_rgb8();
    let (left, top, cell) = (130, 60, 44);
    for i in 0..3u32 {
        for j in 0..3u32 {
            let p = png.get_pixel(left + cell * j + 40, top + cell * i + 40).0;
            let (r, g, b) = (p[0] as i32, p[1] as i32, p[2] as i32);
            if i == j {
                assert!(b >= r && b >= g, "cell {i},{j}: {p:?}");
            } else {
                assert!(r >= g && g >= b, "cell {i},{j}: {p:?}");
            }
        }
    }
    let (ok, _, err) = convnet(d, &["eval", "run", "--top-k", "0"]);
    assert!(!ok && err.contains("at least 1"), "{err}");
}

#[test]
fn the_playground_folds_its_self_check_and_the_report_names_files_not_paths() {
    let (dir, _) = common::setup("");
    let d = dir.path();
    let (ok, _, err) = convnet(d, &["playground", "--out", "p.html"]);
    assert!(ok, "{err}");
    let page = std::fs::read_to_string(d.join("p.html")).unwrap();
    let folded = page.find("<details id=\"engine-sizes\">").unwrap();
    assert!(folded < page.find("<table id=\"engine\"").unwrap());
    let (ok, _, err) = convnet(d, &["train", "bars.toml", "--out", "run", "--epochs", "1"]);
    assert!(ok, "{err}");
    let img = image::GrayImage::from_pixel(8, 8, image::Luma([200u8]));
    let input = d.join("inputs/a bar.png");
    std::fs::create_dir_all(input.parent().unwrap()).unwrap();
    img.save(&input).unwrap();
    let (ok, _, err) = convnet(
        d,
        &["explain", "run", input.to_str().unwrap(), "--out", "r.html"],
    );
    assert!(ok, "{err}");
    let page = std::fs::read_to_string(d.join("r.html")).unwrap();
    assert!(page.contains("a bar.png"), "the input's file name");
    assert!(
        !page.contains(d.to_str().unwrap()),
        "a full path in the report"
    );
    assert!(
        page.contains("<title>convnet explain: run</title>"),
        "the run's name"
    );
}

#[test]
fn csv_files_are_read_as_spreadsheets_write_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // a series export: BOM, CRLF, quoted time stamps holding commas, a quoted number
    let mut csv = "\u{feff}\"date, local\",\"value\"\r\n".to_string();
    for i in 0..60 {
        csv.push_str(&format!(
            "\"Jan {i}, 2020\",\"{}\"\r\n",
            (i as f32 * 0.3).sin()
        ));
    }
    std::fs::write(d.join("s.csv"), &csv).unwrap();
    let spec = "[model]\ninput = [1, 8]\n[[model.layers]]\ntype = \"conv1d\"\nfilters = 2\nkernel_size = 3\n[[model.layers]]\ntype = \"flatten\"\n[[model.layers]]\ntype = \"dense\"\nunits = 1\n[data]\nformat = \"series\"\npath = \"s.csv\"\ntime_column = \"date, local\"\ncolumns = [\"value\"]\nhorizon = 1\n[train]\nepochs = 1\n";
    std::fs::write(d.join("s.toml"), spec).unwrap();
    let (ok, out, err) = convnet(d, &["train", "s.toml", "--out", "s"]);
    assert!(ok, "{out}{err}");
    // pixels with CRLF and quoted cells; an error still names the line and the column
    let px =
        "\u{feff}label,\"p0\",p1,p2,p3\r\n0,\"0\",10,255,3\r\n1,30,0,0,0\r\n1,30,\"x\",0,0\r\n";
    std::fs::write(d.join("px.csv"), px).unwrap();
    let img = "[model]\ninput = [1, 2, 2]\n[[model.layers]]\ntype = \"flatten\"\n[[model.layers]]\ntype = \"dense\"\nunits = 2\n[data]\nformat = \"csv\"\ntrain = \"px.csv\"\nvalidation_split = 0.0\n[train]\nepochs = 1\n";
    std::fs::write(d.join("px.toml"), img).unwrap();
    let (ok, _, err) = convnet(d, &["train", "px.toml", "--out", "px"]);
    assert!(
        !ok && err.contains("line 4, column `p1`") && err.contains("`x` is not a number"),
        "{err}"
    );
    std::fs::write(d.join("px.csv"), &px[..px.rfind("1,30,\"x\"").unwrap()]).unwrap();
    let (ok, _, err) = convnet(d, &["train", "px.toml", "--out", "px"]);
    assert!(ok, "{err}");
}

#[test]
fn numpy_arrays_are_an_input_format() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // images as uint8 (n, h, w) with int64 labels; a test split as float32 (n, 1, h, w)
    let (px, lab) = bars(120, 1);
    let labels: Vec<u8> = lab.iter().flat_map(|&l| (l as i64).to_le_bytes()).collect();
    std::fs::write(d.join("x.npy"), npy(&[120, 8, 8], "|u1", &px)).unwrap();
    std::fs::write(d.join("y.npy"), npy(&[120], "<i8", &labels)).unwrap();
    let (px, lab) = bars(30, 2);
    let floats: Vec<u8> = px
        .iter()
        .flat_map(|&p| (p as f32 / 255.0).to_le_bytes())
        .collect();
    let labels: Vec<u8> = lab.iter().flat_map(|&l| (l as i32).to_le_bytes()).collect();
    std::fs::write(d.join("tx.npy"), npy(&[30, 1, 8, 8], "<f4", &floats)).unwrap();
    std::fs::write(d.join("ty.npy"), npy(&[30], "<i4", &labels)).unwrap();
    let spec = format!(
        "{MODEL}[data]\nformat = \"npy\"\ntrain_x = \"x.npy\"\ntrain_y = \"y.npy\"\ntest_x = \"tx.npy\"\ntest_y = \"ty.npy\"\n[train]\nepochs = 3\nbatch_size = 16\n"
    );
    std::fs::write(d.join("n.toml"), spec).unwrap();
    let (ok, out, err) = convnet(d, &["train", "n.toml", "--out", "run"]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = convnet(d, &["eval", "run", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["samples"], 30);
    assert!(v["accuracy"].as_f64().unwrap() > 0.5, "{v}");
    // a header that disagrees with the data, and a shape that does not fit the model
    std::fs::write(d.join("tx.npy"), npy(&[31, 1, 8, 8], "<f4", &floats)).unwrap();
    let (ok, _, err) = convnet(d, &["eval", "run"]);
    assert!(
        !ok && err.contains("tx.npy") && err.contains("the file holds"),
        "{err}"
    );
    std::fs::write(d.join("tx.npy"), npy(&[30, 64], "<f4", &floats)).unwrap();
    let (ok, _, err) = convnet(d, &["eval", "run"]);
    assert!(
        !ok && err.contains("tx.npy") && err.contains("expected (n, 1, 8, 8)"),
        "{err}"
    );
}

/// The `.npz` archives NumPy writes (tools/make_npz_fixtures.py), stored and deflated, read
/// to the value.
#[test]
fn numpy_npz_archives_are_read_as_numpy_writes_them() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for file in ["arrays.npz", "arrays_compressed.npz"] {
        let p = fixtures.join(file);
        let names = convnet::data::npz_names(&p).unwrap();
        assert_eq!(names, ["x_train", "y_train", "x_test", "y_test", "wide"]);
        let x = convnet::data::read_npz(&p, "x_train").unwrap();
        assert_eq!(x.shape, [6, 4, 4]);
        assert!(x.bytes);
        let want: Vec<f32> = (0..96).map(|i| (i * 37 % 256) as f32).collect();
        assert_eq!(x.values, want);
        let y = convnet::data::read_npz(&p, "y_train").unwrap();
        assert_eq!(y.values, [0.0, 1.0, 0.0, 1.0, 2.0, 2.0]);
        let t = convnet::data::read_npz(&p, "x_test").unwrap();
        assert_eq!(t.shape, [3, 1, 4, 4]);
        let want: Vec<f32> = (0..48).map(|i| (i as f64 / 10.0) as f32).collect();
        assert_eq!(t.values, want);
        assert_eq!(
            convnet::data::read_npz(&p, "y_test").unwrap().values,
            [2.0, 0.0, 1.0]
        );
        let w = convnet::data::read_npz(&p, "wide").unwrap();
        assert_eq!(w.shape, [2, 3]);
        assert_eq!(w.values, [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]);
        // a missing array names the ones the archive holds
        let err = convnet::data::read_npz(&p, "x_valid")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(file) && err.contains("no array `x_valid`") && err.contains("`x_train`"),
            "{err}"
        );
    }
    // a truncated archive is an error that names the file
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixtures.join("arrays_compressed.npz")).unwrap();
    let cut = dir.path().join("cut.npz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = convnet::data::npz_names(&cut).err().unwrap().to_string();
    assert!(err.contains("cut.npz") && err.contains("zip"), "{err}");
}

/// An archive of `.npy` members, each stored or deflated.
fn npz(members: &[(&str, Vec<u8>)], deflate: bool) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let options = zip::write::SimpleFileOptions::default().compression_method(method);
    for (name, data) in members {
        zip.start_file(format!("{name}.npy"), options).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

#[test]
fn an_npz_archive_trains_and_evaluates_with_keras_array_names() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (px, lab) = bars(120, 1);
    let labels: Vec<u8> = lab.iter().flat_map(|&l| (l as i64).to_le_bytes()).collect();
    let (tpx, tlab) = bars(30, 2);
    let tlabels: Vec<u8> = tlab
        .iter()
        .flat_map(|&l| (l as i64).to_le_bytes())
        .collect();
    let members = [
        ("x_train", npy(&[120, 8, 8], "|u1", &px)),
        ("y_train", npy(&[120], "<i8", &labels)),
        ("x_test", npy(&[30, 8, 8], "|u1", &tpx)),
        ("y_test", npy(&[30], "<i8", &tlabels)),
    ];
    std::fs::create_dir(d.join("data")).unwrap();
    std::fs::write(d.join("data/bars.npz"), npz(&members, true)).unwrap();
    let spec = format!(
        "{MODEL}[data]\nformat = \"npz\"\npath = \"data/bars.npz\"\n[train]\nepochs = 3\nbatch_size = 16\n"
    );
    std::fs::write(d.join("z.toml"), spec).unwrap();
    let (ok, out, err) = convnet(d, &["train", "z.toml", "--out", "run"]);
    assert!(ok, "{out}{err}");
    // evaluated from another folder: the archive is found relative to the spec
    let elsewhere = d.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let (ok, out, err) = convnet(&elsewhere, &["eval", "../run", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["samples"], 30);
    assert!(v["accuracy"].as_f64().unwrap() > 0.5, "{v}");

    // other names, stored members, and no test arrays: training works, eval has nothing
    let members = [
        ("images", npy(&[120, 8, 8], "|u1", &px)),
        ("labels", npy(&[120], "<i8", &labels)),
    ];
    std::fs::write(d.join("data/own.npz"), npz(&members, false)).unwrap();
    let spec = format!(
        "{MODEL}[data]\nformat = \"npz\"\npath = \"data/own.npz\"\ntrain_x = \"images\"\ntrain_y = \"labels\"\n[train]\nepochs = 1\nbatch_size = 16\n"
    );
    std::fs::write(d.join("own.toml"), &spec).unwrap();
    let (ok, out, err) = convnet(d, &["train", "own.toml", "--out", "own"]);
    assert!(ok, "{out}{err}");
    // test arrays named but absent: the error names the archive and what it holds
    std::fs::write(
        d.join("own.toml"),
        spec.replace(
            "[train]",
            "test_x = \"x_test\"\ntest_y = \"y_test\"\n[train]",
        ),
    )
    .unwrap();
    let (ok, _, err) = convnet(d, &["train", "own.toml", "--out", "own2"]);
    assert!(
        !ok && err.contains("own.npz")
            && err.contains("no array `x_test`")
            && err.contains("`images`"),
        "{err}"
    );
    // a member that inflates past the memory budget is refused before it is inflated
    let zeros = npy(&[4096, 8, 8], "|u1", &vec![0; 4096 * 64]);
    let members = [("images", zeros), ("labels", npy(&[120], "<i8", &labels))];
    let packed = npz(&members, true);
    assert!(packed.len() < 4096, "{}", packed.len());
    std::fs::write(d.join("data/own.npz"), packed).unwrap();
    std::fs::write(d.join("own.toml"), &spec).unwrap();
    let (ok, _, err) = convnet(
        d,
        &["train", "own.toml", "--out", "own3", "--max-memory", "200K"],
    );
    assert!(
        !ok && err.contains("own.npz: array `images`") && err.contains("memory budget"),
        "{err}"
    );
}

/// Series as NumPy arrays: `(n, length)` for one channel, classified by a 1-D model.
#[test]
fn an_npz_archive_of_series_trains_a_1d_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // class 0 rises, class 1 falls, with a seeded wobble
    let mut rng = convnet::Rng::new(3);
    let (n, len) = (80, 16);
    let mut values = Vec::new();
    let mut labels = Vec::new();
    for i in 0..n {
        let class = i % 2;
        for t in 0..len {
            let trend = if class == 0 {
                t as f32
            } else {
                (len - t) as f32
            } / len as f32;
            values.extend((trend + 0.1 * rng.normal()).to_le_bytes());
        }
        labels.extend((class as i64).to_le_bytes());
    }
    let members = [
        ("x_train", npy(&[n, len], "<f4", &values)),
        ("y_train", npy(&[n], "<i8", &labels)),
        ("x_test", npy(&[n, 1, len], "<f4", &values)),
        ("y_test", npy(&[n], "<i8", &labels)),
    ];
    std::fs::write(d.join("series.npz"), npz(&members, true)).unwrap();
    let spec = "[model]\ninput = [1, 16]\n[[model.layers]]\ntype = \"conv1d\"\nfilters = 4\nkernel_size = 3\nactivation = \"relu\"\n[[model.layers]]\ntype = \"global_avg_pool\"\n[[model.layers]]\ntype = \"dense\"\nunits = 2\n[data]\nformat = \"npz\"\npath = \"series.npz\"\n[train]\nepochs = 20\nbatch_size = 8\n[train.optimizer]\ntype = \"adam\"\nlr = 0.02\n";
    std::fs::write(d.join("s.toml"), spec).unwrap();
    let (ok, out, err) = convnet(d, &["train", "s.toml", "--out", "run"]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = convnet(d, &["eval", "run", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["samples"], 80);
    assert!(v["accuracy"].as_f64().unwrap() > 0.8, "{v}");
}
