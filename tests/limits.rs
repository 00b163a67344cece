//! Sizes taken from specs and files are checked before anything is allocated: each case of
//! the reliability issue, run with the address space held to 256 MiB so that an allocation
//! beyond it would abort the test's process instead of passing, gives a one-line error that
//! names the file and what was too large.

use std::io::Write;
use std::path::Path;

mod common;
use common::{convnet, png_declaring, refused_within, write_idx};

const MIB: u64 = 256;

fn spec(dir: &Path, name: &str, input: &str, layers: &str) -> String {
    let text =
        format!("[model]\ninput = {input}\n{layers}\n[train]\nepochs = 1\nbatch_size = 64\n");
    std::fs::write(dir.join(name), text).unwrap();
    name.to_string()
}

const CONV_1E9: &str = "[[model.layers]]\ntype = \"conv2d\"\nfilters = 1000000000\nkernel_size = 3";
const DENSE_1E12: &str = "[[model.layers]]\ntype = \"flatten\"\n[[model.layers]]\ntype = \"dense\"\nunits = 1000000000000";
const FLAT_DENSE: &str =
    "[[model.layers]]\ntype = \"flatten\"\n[[model.layers]]\ntype = \"dense\"\nunits = 10";

#[test]
fn summary_answers_for_any_model_size_without_allocating_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        (
            spec(d, "filters.toml", "[1, 28, 28]", CONV_1E9),
            "10,000,000,000",
            "TiB",
        ),
        (
            spec(d, "units.toml", "[1, 28, 28]", DENSE_1E12),
            "785,000,000,000,000",
            "PiB",
        ),
        (
            spec(d, "input.toml", "[1, 1000000, 1000000]", FLAT_DENSE),
            "10,000,000,000,010",
            "PiB",
        ),
    ];
    for (name, params, unit) in cases {
        let started = std::time::Instant::now();
        let out = std::process::Command::new("sh")
            .current_dir(d)
            .arg("-c")
            .arg(format!(
                "ulimit -v {} && exec \"$0\" summary {name}",
                MIB * 1024
            ))
            .arg(env!("CARGO_BIN_EXE_convnet"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(started.elapsed().as_secs() < 10, "{name}");
        assert!(
            text.contains(&format!("total: {params} trainable parameters")),
            "{name}:\n{text}"
        );
        let mem = text
            .lines()
            .find(|l| l.starts_with("training memory: about"))
            .unwrap();
        assert!(
            mem.contains(unit) && mem.contains("at batch 64"),
            "{name}: {mem}"
        );
    }
}

#[test]
fn training_beyond_the_memory_budget_is_refused_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_idx(&d.join("x.idx"), 3, &[4, 28, 28], &[0; 4 * 28 * 28]);
    write_idx(&d.join("y.idx"), 1, &[4], &[0, 1, 2, 3]);
    let data = "[data]\nformat = \"idx\"\ntrain_images = \"x.idx\"\ntrain_labels = \"y.idx\"\n";
    for (name, input, layers) in [
        ("filters.toml", "[1, 28, 28]", CONV_1E9),
        ("units.toml", "[1, 28, 28]", DENSE_1E12),
        ("input.toml", "[1, 1000000, 1000000]", FLAT_DENSE),
    ] {
        let name = spec(d, name, input, &format!("{layers}\n{data}"));
        let e = refused_within(
            d,
            &["train", &name, "--out", "run"],
            &[
                &name,
                "training this model needs",
                "more than the memory budget",
                "at batch 64",
            ],
            MIB,
            10,
        );
        assert!(!d.join("run").exists(), "{e}");
    }
    // a series window of 1e9 steps
    let csv: String = "v\n".to_string() + &(0..100).map(|i| format!("{i}\n")).collect::<String>();
    std::fs::write(d.join("s.csv"), csv).unwrap();
    let name = spec(
        d,
        "window.toml",
        "[1, 1000000000]",
        "[[model.layers]]\ntype = \"conv1d\"\nfilters = 8\nkernel_size = 3\n[[model.layers]]\ntype = \"global_avg_pool\"\n[[model.layers]]\ntype = \"dense\"\nunits = 1\n[data]\nformat = \"series\"\npath = \"s.csv\"\nhorizon = 1\n",
    );
    refused_within(
        d,
        &["train", &name, "--out", "run"],
        &["window.toml", "more than the memory budget"],
        MIB,
        10,
    );
    // an explicit budget: the default example's model at 20 MiB
    let name = spec(
        d,
        "small.toml",
        "[1, 28, 28]",
        &format!("{CONV_1E9}\n{FLAT_DENSE}\n{data}").replace("1000000000", "32"),
    );
    refused_within(
        d,
        &["train", &name, "--out", "run", "--max-memory", "20M"],
        &["more than the memory budget of 20.0 MiB (set with --max-memory)"],
        MIB,
        10,
    );
    let (ok, _, err) = convnet(d, &["train", &name, "--max-memory", "lots"]);
    assert!(
        !ok && err.contains("--max-memory") && err.contains("not a size"),
        "{err}"
    );
}

#[test]
fn absurd_hyperparameters_are_errors_with_their_arithmetic_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let name = spec(
        d,
        "pad.toml",
        "[1, 28, 28]",
        "[[model.layers]]\ntype = \"conv2d\"\nfilters = 4\nkernel_size = 3\npadding = 9223372036854775807",
    );
    refused_within(
        d,
        &["summary", &name],
        &["key `padding`", "9223372036854775807", "too large"],
        MIB,
        10,
    );
    let name = spec(
        d,
        "dil.toml",
        "[1, 28, 28]",
        "[[model.layers]]\ntype = \"conv2d\"\nfilters = 4\nkernel_size = 3\ndilation_rate = 9223372036854775807",
    );
    refused_within(d, &["summary", &name], &["dil.toml", "layer 0"], MIB, 10);
    let tcn = "[[model.layers]]\ntype = \"tcn\"\nnb_filters = 16\nkernel_size = 2\ndilations = [1, 2, 4, 8, 16]\nnb_stacks = 1000000000\n[[model.layers]]\ntype = \"dense\"\nunits = 1";
    let name = spec(d, "tcn.toml", "[1, 32]", tcn);
    refused_within(
        d,
        &["summary", &name],
        &["key `nb_stacks`", "at most 4096"],
        MIB,
        10,
    );
    let wn = "[[model.layers]]\ntype = \"wavenet\"\nlayers_per_stack = 1000000000\n[[model.layers]]\ntype = \"dense\"\nunits = 1";
    let name = spec(d, "wavenet.toml", "[1, 32]", wn);
    refused_within(d, &["summary", &name], &["key `layers_per_stack`"], MIB, 10);
}

#[test]
fn a_gzip_bomb_is_refused_without_inflating_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 10 images announced, 1 GiB of zeros behind the header (about 1 MB compressed)
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut header = vec![0, 0, 8, 3];
    for v in [10u32, 28, 28] {
        header.extend(v.to_be_bytes());
    }
    gz.write_all(&header).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        gz.write_all(&zeros).unwrap();
    }
    std::fs::write(d.join("bomb.gz"), gz.finish().unwrap()).unwrap();
    write_idx(&d.join("y.idx"), 1, &[10], &[0; 10]);
    let name = spec(
        d,
        "bomb.toml",
        "[1, 28, 28]",
        &format!(
            "{FLAT_DENSE}\n[data]\nformat = \"idx\"\ntrain_images = \"bomb.gz\"\ntrain_labels = \"y.idx\"\n"
        ),
    );
    refused_within(
        d,
        &["train", &name, "--out", "run"],
        &["bomb.gz", "[10, 28, 28] = 7840 bytes", "holds more"],
        MIB,
        10,
    );
    // and a header announcing more than the budget
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut header = vec![0, 0, 8, 3];
    for v in [4_000_000u32, 1000, 1000] {
        header.extend(v.to_be_bytes());
    }
    gz.write_all(&header).unwrap();
    std::fs::write(d.join("huge.gz"), gz.finish().unwrap()).unwrap();
    let name = spec(
        d,
        "huge.toml",
        "[1, 28, 28]",
        &format!(
            "{FLAT_DENSE}\n[data]\nformat = \"idx\"\ntrain_images = \"huge.gz\"\ntrain_labels = \"y.idx\"\n"
        ),
    );
    refused_within(
        d,
        &["train", &name, "--out", "run"],
        &["huge.gz", "more than the memory budget"],
        MIB,
        10,
    );
}

#[test]
fn an_image_declaring_too_many_pixels_is_refused_from_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("bomb.png"), png_declaring(20000, 20000)).unwrap();
    std::fs::write(d.join("big.png"), png_declaring(5000, 4000)).unwrap();
    // trained runs: an any-size model and a fixed-size one
    write_idx(&d.join("x.idx"), 3, &[4, 8, 8], &[0; 4 * 64]);
    write_idx(&d.join("y.idx"), 1, &[4], &[0, 1, 0, 1]);
    let data = "[data]\nformat = \"idx\"\ntrain_images = \"x.idx\"\ntrain_labels = \"y.idx\"\n";
    let any = "[[model.layers]]\ntype = \"conv2d\"\nfilters = 2\nkernel_size = 3\n[[model.layers]]\ntype = \"global_avg_pool\"\n";
    spec(
        d,
        "any.toml",
        "[1, \"any\", \"any\"]",
        &format!("{any}{data}"),
    );
    spec(
        d,
        "fixed.toml",
        "[1, 8, 8]",
        &format!("{FLAT_DENSE}\n{data}").replace("10", "2"),
    );
    for name in ["any", "fixed"] {
        let (ok, _, err) = convnet(
            d,
            &[
                "train",
                &format!("{name}.toml"),
                "--out",
                name,
                "--epochs",
                "1",
            ],
        );
        assert!(ok, "{err}");
    }
    for run in ["any", "fixed"] {
        refused_within(
            d,
            &["predict", run, "bomb.png"],
            &["bomb.png", "20000x20000", "megapixels"],
            MIB,
            10,
        );
    }
    // the fixed-size model refuses another size before decoding a pixel (the data is bogus)
    refused_within(
        d,
        &["predict", "fixed", "big.png"],
        &["big.png", "5000x4000", "the model takes 8x8"],
        MIB,
        10,
    );
}

#[test]
fn a_model_built_from_shapes_alone_summarises_as_the_real_one() {
    use convnet::explain::summarize;
    use convnet::train::memory::estimate;
    let mut n = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let spec = convnet::spec::Spec::read(&p).unwrap();
        let build = || spec.build_model(&mut convnet::Rng::new(0)).unwrap();
        let (real, meta) = (build(), convnet::tensor::meta(build));
        assert!(meta.named_params().iter().all(|(_, t)| t.data().is_empty()));
        let (t, o) = (spec.train.batch_size, &spec.train.optimizer);
        assert_eq!(
            summarize(&real).unwrap().to_json(),
            summarize(&meta).unwrap().to_json(),
            "{}",
            p.display()
        );
        assert_eq!(
            estimate(&real, t, o).unwrap(),
            estimate(&meta, t, o).unwrap()
        );
        n += 1;
    }
    assert!(n >= 10, "{n} example specs");
}
