//! The training commands run for real on small synthetic data in temporary folders: summary,
//! train (files written, determinism, resume, refusing to overwrite), eval, predict, and the
//! errors that bad specs and bad data files must give.

use std::path::PathBuf;
use std::process::Command;

mod common;
use common::{MODEL, bars, convnet, setup, write_idx};

#[test]
fn summary_shows_the_arithmetic_and_totals() {
    let (dir, _) = setup("");
    let (ok, out, err) = convnet(dir.path(), &["summary", "bars.toml"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("height 8 -> floor((8 + 2 - 3) / 1) + 1 = 8"),
        "{out}"
    );
    assert!(out.contains("layers.4   dense"), "{out}");
    // conv 4*1*9 + 4, dense 3 * 64 + 3
    assert!(
        out.contains("total: 235 trainable parameters, 0 non-trainable"),
        "{out}"
    );
    let (ok, out, _) = convnet(dir.path(), &["summary", "bars.toml", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["total_params"], 235);
    let l0 = &v["layers"][0];
    for k in [
        "name",
        "type",
        "output_shape",
        "params",
        "flops",
        "receptive_field",
    ] {
        assert!(!l0[k].is_null(), "{k} missing in {l0}");
    }
    assert_eq!(l0["output_shape"], serde_json::json!([4, 8, 8]));
    // numbers as numbers
    assert_eq!(v["layers"][1]["receptive_field"], serde_json::json!([4, 4]));
    assert_eq!(v["layers"][1]["receptive_field_text"], "4x4");
    assert_eq!(v["trainable_params"], 235);
    assert_eq!(v["non_trainable_params"], 0);
    // a block's row before its parts, each part naming its parent; batch norm's running
    // statistics counted as non-trainable (Keras's count)
    let root = env!("CARGO_MANIFEST_DIR");
    let (ok, out, _) = convnet(
        dir.path(),
        &[
            "summary",
            &format!("{root}/examples/gunpoint_resnet.toml"),
            "--json",
        ],
    );
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = v["layers"].as_array().unwrap();
    for (i, r) in rows.iter().enumerate() {
        if r["depth"] == 0 {
            assert!(r["parent"].is_null());
            continue;
        }
        let parent = r["parent"].as_str().unwrap();
        let at = rows.iter().position(|p| p["name"] == parent).unwrap();
        assert!(at < i, "{parent} after its part {}", r["name"]);
        assert!(r["name"].as_str().unwrap().starts_with(parent));
    }
    assert!(rows.iter().any(|r| r["depth"] == 1));
    let bn: u64 = rows
        .iter()
        .filter(|r| r["type"] == "batch_norm")
        .map(|r| r["non_trainable"].as_u64().unwrap())
        .sum();
    assert!(bn > 0);
    assert_eq!(v["non_trainable_params"], bn);
    let (_, text, _) = convnet(
        dir.path(),
        &["summary", &format!("{root}/examples/gunpoint_resnet.toml")],
    );
    assert!(
        text.contains(&format!(
            "{} non-trainable",
            convnet::explain::thousands(bn)
        )),
        "{text}"
    );
}

#[test]
fn train_writes_the_run_and_eval_and_predict_use_it() {
    let (dir, _) = setup("");
    let d = dir.path();
    let (ok, out, err) = convnet(d, &["train", "bars.toml", "--out", "run"]);
    assert!(ok, "{out}{err}");
    for f in [
        "spec.toml",
        "best.safetensors",
        "last.safetensors",
        "checkpoint.safetensors",
        "metrics.csv",
        "curves.png",
        "curves.svg",
        "run.json",
    ] {
        assert!(d.join("run").join(f).exists(), "{f} missing");
    }
    let csv = std::fs::read_to_string(d.join("run/metrics.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "epoch,train_loss,train_acc,val_loss,val_acc,seconds,lr"
    );
    assert_eq!(lines.len(), 4, "{csv}");
    // three parts: the report names the part that chose the weights
    let best = lines[1..]
        .iter()
        .map(|l| l.split(',').nth(3).unwrap().parse::<f64>().unwrap())
        .enumerate()
        .fold(
            (0, f64::INFINITY),
            |b, (i, v)| if v < b.1 { (i + 1, v) } else { b },
        )
        .0;
    assert!(
        out.contains(&format!(
            "test (90 samples; weights of epoch {best}, chosen by val_loss on the validation part)"
        )),
        "{out}"
    );
    let acc: f64 = lines[3].split(',').nth(4).unwrap().parse().unwrap();
    assert!(acc > 0.8, "the bars are easy: {csv}");

    let (ok, out, err) = convnet(d, &["eval", "run"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("90 samples of `test` (weights of epoch")
            && out.contains("chosen by val_loss on the validation part)")
            && out.contains("precision")
            && out.contains("confusion matrix"),
        "{out}"
    );
    assert!(d.join("run/confusion_test.png").exists());
    let (ok, out, _) = convnet(d, &["eval", "run", "--data", "val", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["samples"], 60);
    assert_eq!(v["confusion"].as_array().unwrap().len(), 3);

    // predict: a vertical bar as a PNG
    let mut img = image::GrayImage::new(8, 8);
    for y in 0..8 {
        img.put_pixel(3, y, image::Luma([255]));
    }
    img.save(d.join("v.png")).unwrap();
    let (ok, out, err) = convnet(d, &["predict", "run", "v.png", "--top", "2"]);
    assert!(ok, "{err}");
    let first = out.lines().nth(1).unwrap();
    assert!(first.contains("vertical") && first.contains('%'), "{out}");
    let big = image::GrayImage::new(10, 9);
    big.save(d.join("big.png")).unwrap();
    let (ok, _, err) = convnet(d, &["predict", "run", "big.png"]);
    assert!(
        !ok && err.contains("10x9") && err.contains("resize"),
        "{err}"
    );
    let (ok, _, err) = convnet(d, &["predict", "run", "big.png", "--resize"]);
    assert!(ok, "{err}");

    // the run is never overwritten without asking
    let (ok, _, err) = convnet(d, &["train", "bars.toml", "--out", "run"]);
    assert!(
        !ok && err.contains("already exists") && err.contains("--resume"),
        "{err}"
    );
    assert!(d.join("run/best.safetensors").exists());
}

#[test]
fn the_same_seed_gives_the_same_weights_bit_for_bit() {
    let (dir, _) = setup("");
    let d = dir.path();
    for out in ["a", "b"] {
        let (ok, _, err) = convnet(d, &["train", "bars.toml", "--out", out, "--epochs", "2"]);
        assert!(ok, "{err}");
    }
    let a = std::fs::read(d.join("a/last.safetensors")).unwrap();
    let b = std::fs::read(d.join("b/last.safetensors")).unwrap();
    assert_eq!(a, b);
    let (ok, _, _) = convnet(
        d,
        &[
            "train",
            "bars.toml",
            "--out",
            "c",
            "--epochs",
            "2",
            "--seed",
            "6",
        ],
    );
    assert!(ok);
    assert_ne!(a, std::fs::read(d.join("c/last.safetensors")).unwrap());
}

/// Raises the stop flag after a given number of steps, as Ctrl-C does.
struct StopAt {
    steps: usize,
    seen: usize,
    flag: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl convnet::train::Observer for StopAt {
    fn step(&mut self, _: usize, _: f64, _: f64, _: f64) {
        self.seen += 1;
        if self.seen == self.steps {
            self.flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// Train the spec at `spec_path` (with `seed` and `epochs` in place of its own) into
/// `d/part` through the library, stopped as Ctrl-C would after `steps` steps. The library
/// resolves data paths against the current folder, which a test must not change: the spec is
/// given absolute ones.
fn interrupted(
    d: &std::path::Path,
    spec_path: &std::path::Path,
    seed: u64,
    epochs: usize,
    steps: usize,
) -> convnet::train::TrainResult {
    let text = std::fs::read_to_string(spec_path).unwrap();
    let text = text.replace("= \"t", &format!("= \"{}/t", d.display()));
    std::fs::write(d.join("abs.toml"), text).unwrap();
    let mut spec = convnet::spec::Spec::load(&d.join("abs.toml")).unwrap();
    assert_eq!((spec.train.seed, spec.train.epochs), (5, 3));
    (spec.train.seed, spec.train.epochs) = (seed, epochs);
    std::fs::create_dir_all(d.join("part")).unwrap();
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut obs = StopAt {
        steps,
        seen: 0,
        flag: flag.clone(),
    };
    let opts = convnet::train::TrainOptions {
        out: d.join("part"),
        resume: convnet::train::Resume::No,
        stop: Some(flag),
        init: None,
        test_curve: false,
        world: convnet::dist::solo(),
    };
    convnet::train::train(&spec, &opts, &mut obs).unwrap()
}

#[test]
fn an_interrupted_run_resumed_matches_an_uninterrupted_one() {
    let (dir, spec_path) = setup("");
    let d = dir.path();
    // uninterrupted, through the CLI, with a seed and epoch count other than the spec's
    let flags = ["--seed", "7", "--epochs", "2"];
    let (ok, _, err) = convnet(
        d,
        &[&["train", "bars.toml", "--out", "full"][..], &flags].concat(),
    );
    assert!(ok, "{err}");
    // interrupted mid-epoch 2 (15 steps per epoch), through the library, as Ctrl-C would;
    // --seed 7 --epochs 2 as the spec's
    let res = interrupted(d, &spec_path, 7, 2, 20);
    assert_eq!(
        res.outcome,
        convnet::train::Outcome::Interrupted { epoch: 2, step: 5 }
    );
    // another seed on resume would change the validation split mid-run: refused
    let (ok, _, err) = convnet(d, &["train", "--resume", "part", "--seed", "8"]);
    assert!(
        !ok && err.contains("seed 7") && err.contains("--seed"),
        "{err}"
    );
    // resumed through the CLI with no flags: the run's own seed and epochs
    let (ok, out, err) = convnet(d, &["train", "--resume", "part"]);
    assert!(ok, "{out}{err}");
    assert!(err.contains("resuming at epoch 2, step 5"), "{err}");
    let a = std::fs::read(d.join("full/last.safetensors")).unwrap();
    let b = std::fs::read(d.join("part/last.safetensors")).unwrap();
    assert_eq!(a, b, "resumed weights differ from the uninterrupted run");
    let ma = std::fs::read_to_string(d.join("full/metrics.csv")).unwrap();
    let mb = std::fs::read_to_string(d.join("part/metrics.csv")).unwrap();
    let strip = |s: &str| {
        s.lines()
            .map(|l| l.split(',').take(5).collect::<Vec<_>>().join(","))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&ma), strip(&mb));
    let info = std::fs::read_to_string(d.join("part/run.json")).unwrap();
    assert!(
        info.contains("\"seed\": 7") && info.contains("\"epochs\": 2"),
        "run.json must keep the run's seed and epochs: {info}"
    );
}

/// Every file below `d`, with its content, to show that a refused command touched nothing.
fn snapshot(d: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(snapshot(&p));
        } else {
            v.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    v.sort();
    v
}

#[test]
fn overwrite_never_removes_what_convnet_did_not_write() {
    let (dir, _) = setup("");
    let d = dir.path();
    std::fs::create_dir_all(d.join("mydocs")).unwrap();
    std::fs::write(d.join("mydocs/thesis.txt"), "years of work").unwrap();
    std::fs::create_dir_all(d.join("specs")).unwrap();
    std::fs::copy(d.join("bars.toml"), d.join("specs/bars.toml")).unwrap();
    std::fs::create_dir_all(d.join("data")).unwrap();
    for f in ["train-images", "train-labels", "test-images", "test-labels"] {
        std::fs::copy(d.join(f), d.join("data").join(f)).unwrap();
    }
    let in_data = std::fs::read_to_string(d.join("bars.toml"))
        .unwrap()
        .replace("= \"t", "= \"data/t");
    std::fs::write(d.join("data.toml"), in_data).unwrap();
    let (ok, _, err) = convnet(d, &["train", "bars.toml", "--out", "run", "--epochs", "1"]);
    assert!(ok, "{err}");
    std::fs::write(d.join("run/notes.md"), "mine").unwrap();
    let before = snapshot(d);
    for (args, says) in [
        (vec!["train", "bars.toml", "--out", "."], "current folder"),
        (vec!["train", "bars.toml", "--out", ".."], "current folder"),
        (vec!["train", "data.toml", "--out", "data"], "data"),
        (
            vec!["train", "specs/bars.toml", "--out", "specs"],
            "the spec",
        ),
        (
            vec!["train", "bars.toml", "--out", "mydocs"],
            "no convnet run",
        ),
        (
            vec!["train", "bars.toml", "--out", "mydocs/thesis.txt"],
            "not a folder",
        ),
        (vec!["train", "bars.toml", "--out", "run"], "notes.md"),
    ] {
        let args = [&args[..], &["--overwrite", "--epochs", "1"]].concat();
        let (ok, out, err) = convnet(d, &args);
        assert!(!ok, "{args:?} succeeded: {out}");
        assert!(
            err.contains(says) && err.contains("--out"),
            "{args:?}: {err}"
        );
        assert!(before == snapshot(d), "{args:?} changed files");
    }
    // a run folder holding only what convnet wrote is replaced
    std::fs::remove_file(d.join("run/notes.md")).unwrap();
    let (ok, _, err) = convnet(d, &["eval", "run"]);
    assert!(ok, "{err}");
    let args = [
        "train",
        "bars.toml",
        "--out",
        "run",
        "--overwrite",
        "--seed",
        "9",
        "--epochs",
        "1",
    ];
    let (ok, _, err) = convnet(d, &args);
    assert!(ok, "{err}");
    assert!(!d.join("run/confusion_test.png").exists());
    assert!(!d.join("run/train.lock").exists());
    let info = std::fs::read_to_string(d.join("run/run.json")).unwrap();
    assert!(info.contains("\"seed\": 9"), "{info}");
}

#[test]
fn a_second_training_into_a_folder_being_written_is_refused() {
    let (dir, _) = setup("");
    let d = dir.path();
    let (ok, _, err) = convnet(d, &["train", "bars.toml", "--out", "run", "--epochs", "1"]);
    assert!(ok, "{err}");
    // a live owner: this test's own process
    std::fs::write(d.join("run/train.lock"), std::process::id().to_string()).unwrap();
    let before = snapshot(d);
    let overwrite = [
        "train",
        "bars.toml",
        "--out",
        "run",
        "--overwrite",
        "--epochs",
        "1",
    ];
    let resume = ["train", "--resume", "run", "--epochs", "2"];
    for args in [&overwrite[..], &resume[..]] {
        let (ok, _, err) = convnet(d, args);
        assert!(
            !ok && err.contains("another training")
                && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(before == snapshot(d), "{args:?} changed files");
    }
    // the owner is gone (killed): the lock is stale and taken over
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    std::fs::write(d.join("run/train.lock"), gone.id().to_string()).unwrap();
    let (ok, _, err) = convnet(d, &resume);
    assert!(ok, "{err}");
    assert!(!d.join("run/train.lock").exists());
}

/// `[train] max_seconds`: no epoch starts once the budget is spent; the run is finished and
/// its best weights usable. Without a validation part the weights are chosen by the
/// training loss, and the report says so.
#[test]
fn a_time_budget_ends_training_after_the_epoch_that_spends_it() {
    let (dir, spec) = setup("max_seconds = 0.001");
    let d = dir.path();
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("epochs = 3", "epochs = 50")
        .replace("validation_split = 0.2", "validation_split = 0.0");
    std::fs::write(&spec, text).unwrap();
    let (ok, out, err) = convnet(d, &["train", "bars.toml", "--out", "run"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("stopped after epoch 1 of 50") && out.contains("reached max_seconds"),
        "{out}"
    );
    assert!(
        out.contains(
            "weights of epoch 1, chosen by train_loss on the training data (no validation part)"
        ),
        "{out}"
    );
    let csv = std::fs::read_to_string(d.join("run/metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    let info = std::fs::read_to_string(d.join("run/run.json")).unwrap();
    assert!(info.contains("\"finished\": true"), "{info}");
    std::fs::write(
        &spec,
        std::fs::read_to_string(&spec)
            .unwrap()
            .replace("max_seconds = 0.001", "max_seconds = -1"),
    )
    .unwrap();
    let (ok, _, err) = convnet(d, &["train", "bars.toml", "--out", "run2"]);
    assert!(
        !ok && err.contains("max_seconds") && err.contains("positive"),
        "{err}"
    );
}

/// `[train] ema`: the moving average is what validation scores and best.safetensors holds,
/// saved as ema.safetensors beside the raw weights (last.safetensors), and a run interrupted
/// mid-epoch and resumed ends with the average an uninterrupted run ends with, bit for bit.
#[test]
fn the_weight_average_is_validated_saved_and_resumed() {
    let (dir, spec_path) = setup("ema = { decay = 0.8 }");
    let d = dir.path();
    let (ok, _, err) = convnet(d, &["train", "bars.toml", "--out", "full", "--epochs", "2"]);
    assert!(ok, "{err}");
    let read = |p: &str| std::fs::read(d.join(p)).unwrap();
    assert_ne!(read("full/ema.safetensors"), read("full/last.safetensors"));
    // validation scored the average: eval of best.safetensors repeats the best epoch's
    // val_loss, the raw weights do not
    let csv = std::fs::read_to_string(d.join("full/metrics.csv")).unwrap();
    let val: Vec<f64> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(3).unwrap().parse().unwrap())
        .collect();
    let best = val.iter().copied().fold(f64::INFINITY, f64::min);
    let loss = |run: &str| -> f64 {
        let (ok, out, err) = convnet(d, &["eval", run, "--data", "val", "--json"]);
        assert!(ok, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["loss"]
            .as_f64()
            .unwrap()
    };
    assert!(
        (loss("full") - best).abs() < 1e-4,
        "{} vs {val:?}",
        loss("full")
    );
    std::fs::create_dir_all(d.join("raw")).unwrap();
    for f in ["spec.toml", "run.json"] {
        std::fs::copy(d.join("full").join(f), d.join("raw").join(f)).unwrap();
    }
    std::fs::copy(
        d.join("full/last.safetensors"),
        d.join("raw/best.safetensors"),
    )
    .unwrap();
    assert!(
        (loss("raw") - val[1]).abs() > 1e-4,
        "the raw weights score as the average"
    );
    // interrupted mid-epoch 2, resumed: the same average
    interrupted(d, &spec_path, 5, 2, 20);
    let (ok, out, err) = convnet(d, &["train", "--resume", "part"]);
    assert!(ok, "{out}{err}");
    for f in ["ema.safetensors", "best.safetensors", "last.safetensors"] {
        assert_eq!(
            read(&format!("full/{f}")),
            read(&format!("part/{f}")),
            "{f}"
        );
    }
    let bad = std::fs::read_to_string(&spec_path)
        .unwrap()
        .replace("decay = 0.8", "decay = 1.5");
    std::fs::write(&spec_path, bad).unwrap();
    let (ok, _, err) = convnet(d, &["train", "bars.toml", "--out", "x"]);
    assert!(
        !ok && err.contains("[train.ema], key `decay`: 1.5 is not in (0, 1)"),
        "{err}"
    );
}

/// `[train] tta = ["hflip"]`: evaluation averages the class probabilities of each image and
/// its mirror, so its output is the same for an image and its mirror and is a distribution;
/// validation, `eval` and `predict` use it; a model that is not an image classifier refuses it.
#[test]
fn flip_test_time_augmentation_averages_an_image_and_its_mirror() {
    let (dir, spec_path) = setup("tta = [\"hflip\"]");
    let d = dir.path();
    let (ok, out, err) = convnet(d, &["train", "bars.toml", "--out", "run"]);
    assert!(ok, "{out}{err}");
    // the bars train without flips: the mirror images were never seen
    assert!(
        err.contains("warning: tta = [\"hflip\"]") && err.contains("no hflip"),
        "{err}"
    );
    let (spec, model, _) = convnet::train::load_run(&d.join("run")).unwrap();
    assert!(spec.train.tta_hflip);
    let mut r = convnet::Rng::new(4);
    let x: Vec<f32> = (0..2 * 64).map(|_| r.uniform()).collect();
    let mirrored: Vec<f32> = x
        .chunks(8)
        .flat_map(|row| row.iter().rev().copied().collect::<Vec<_>>())
        .collect();
    let run = |v: Vec<f32>, hflip: bool| {
        let t = convnet::Tensor::from_vec(v, &[2, 1, 8, 8]).unwrap();
        let mut inf = convnet::plan::Inference::new(&model, 2).hflip(hflip);
        inf.forward(&t).unwrap().to_vec()
    };
    let (a, b) = (run(x.clone(), true), run(mirrored.clone(), true));
    for (u, v) in a.iter().zip(&b) {
        assert!((u - v).abs() < 1e-5, "{a:?} vs {b:?}");
    }
    for row in a.chunks(3) {
        let total: f32 = row.iter().map(|v| v.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5, "{row:?}");
    }
    // without it, the model's own logits: an image and its mirror differ
    let (p, q) = (run(x, false), run(mirrored, false));
    assert!(p.iter().zip(&q).any(|(u, v)| (u - v).abs() > 1e-3));
    let (ok, out, err) = convnet(d, &["eval", "run", "--json"]);
    assert!(ok, "{err}");
    assert!(out.contains("\"accuracy\""), "{out}");
    let text = std::fs::read_to_string(&spec_path).unwrap();
    std::fs::write(&spec_path, text.replace("[\"hflip\"]", "[\"rotate\"]")).unwrap();
    let (ok, _, err) = convnet(d, &["train", "bars.toml", "--out", "r2"]);
    assert!(
        !ok && err.contains("key `tta`: unknown test-time augmentation \"rotate\""),
        "{err}"
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let series = std::fs::read_to_string(root.join("examples/gunpoint_fcn.toml"))
        .unwrap()
        .replace("[train]", "[train]\ntta = [\"hflip\"]");
    std::fs::write(d.join("s.toml"), series).unwrap();
    let (ok, _, err) = convnet(d, &["summary", "s.toml"]);
    assert!(
        !ok && err.contains("key `tta`") && err.contains("[1, 150]"),
        "{err}"
    );
}

/// `schedule = { type = "one_cycle" }` from the spec: per-batch steps up to max_lr and down
/// to max_lr / div_factor / final_div_factor at the last step (the formulas themselves are
/// checked against PyTorch in tests/golden.rs); bad settings name their key.
#[test]
fn the_one_cycle_schedule_trains_from_the_spec() {
    let (dir, spec) = setup(
        "schedule = { type = \"one_cycle\", max_lr = 0.02, pct_start = 0.5, final_div_factor = 100.0 }",
    );
    let d = dir.path();
    let (ok, out, err) = convnet(d, &["train", "bars.toml", "--out", "run"]);
    assert!(ok, "{out}{err}");
    let csv = std::fs::read_to_string(d.join("run/metrics.csv")).unwrap();
    let lr: Vec<f64> = csv
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
        .collect();
    // the last step of the last epoch: 0.02 / 25 / 100
    assert!((lr[2] - 8e-6).abs() < 1e-9, "{lr:?}");
    assert!(lr[0] > 8e-4 && lr[0] <= 0.02, "{lr:?}");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, text.replace("pct_start = 0.5", "pct_start = 1.5")).unwrap();
    let (ok, _, err) = convnet(d, &["train", "bars.toml", "--out", "run2"]);
    assert!(
        !ok && err.contains("[train.schedule], key `pct_start`: 1.5 is not in (0, 1)"),
        "{err}"
    );
}

#[test]
fn a_diverging_loss_stops_with_the_epoch_and_step() {
    let (dir, _) = setup("");
    let spec = std::fs::read_to_string(dir.path().join("bars.toml"))
        .unwrap()
        .replace("lr = 0.01", "lr = 1e12")
        .replace("type = \"adam\"", "type = \"sgd\"");
    std::fs::write(dir.path().join("bars.toml"), spec).unwrap();
    let (ok, _, err) = convnet(dir.path(), &["train", "bars.toml", "--out", "r"]);
    assert!(!ok);
    assert!(err.contains("training diverged at epoch 1, step"), "{err}");
}

fn spec_error(model_layers: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        format!("[model]\ninput = [1, 28, 28]\n{model_layers}"),
    )
    .unwrap();
    let (ok, out, err) = convnet(dir.path(), &["summary", "bad.toml"]);
    assert!(!ok, "{out}");
    err
}

#[test]
fn bad_specs_are_reported_with_file_layer_key_and_expectation() {
    let e = spec_error(
        "[[model.layers]]\ntype = \"conv2d\"\nfiltrs = 3\nfilters = 3\nkernel_size = 3\n",
    );
    assert!(
        e.contains(
            "bad.toml: layer 0 (conv2d), key `filtrs`: unknown key (did you mean `filters`?)"
        ),
        "{e}"
    );
    let e = spec_error("[[model.layers]]\ntype = \"conv2d\"\nfilters = 3\nkernel_size = \"3\"\n");
    assert!(e.contains("layer 0 (conv2d), key `kernel_size`: expected a non-negative integer or a list of 2 of them, got the string \"3\""), "{e}");
    let e = spec_error("[[model.layers]]\ntype = \"conv2d\"\nfilters = 3\nkernel_size = 30\n");
    assert!(
        e.contains("layer 0 (conv2d), key `kernel_size`") && e.contains("spans 30"),
        "{e}"
    );
    let e = spec_error(
        "[[model.layers]]\ntype = \"flatten\"\n[[model.layers]]\ntype = \"dense\"\nin_features = 100\nunits = 10\n",
    );
    assert!(e.contains("layer 1 (dense), key `in_features`: is 100, but the previous layer outputs 784 features"), "{e}");
    let e = spec_error(
        "[[model.layers]]\ntype = \"flatten\"\n[[model.layers]]\ntype = \"conv2d\"\nfilters = 2\nkernel_size = 3\n",
    );
    assert!(
        e.contains("layer 1 (conv2d)")
            && e.contains("expects inputs shaped (channels, height, width) per sample, got (784)"),
        "{e}"
    );
    let e = spec_error("[[model.layers]]\ntype = \"convolution\"\n");
    assert!(
        e.contains("layer 0 (convolution), key `type`: unknown layer type"),
        "{e}"
    );
    let e = spec_error(
        "[[model.layers]]\ntype = \"conv2d\"\nfilters = 4\nkernel_size = 3\ngroups = 3\n",
    );
    assert!(e.contains("key `groups`"), "{e}");
    let e = spec_error("[[model.layers]]\ntype = \"max_pool2d\"\npool_size = 3\npadding = 2\n");
    assert!(
        e.contains("layer 0 (max_pool2d), key `padding`") && e.contains("half"),
        "{e}"
    );
    let e = spec_error("[[model.layers]]\ntype = \"dropout\"\nrate = 1.5\n");
    assert!(e.contains("key `rate`"), "{e}");
    let e = spec_error("[[model.layers]]\ntype = \"flatten\"\n[train]\nepochs = \"many\"\n");
    assert!(
        e.contains("[train], key `epochs`: expected a non-negative integer"),
        "{e}"
    );
    let e = spec_error(
        "[[model.layers]]\ntype = \"flatten\"\n[train]\noptimizer = { type = \"adam\", learning_rate = 0.1 }\n",
    );
    assert!(
        e.contains("[train.optimizer], key `learning_rate`: unknown key"),
        "{e}"
    );
    let e = spec_error("[[model.layers]\n");
    assert!(e.contains("bad.toml: line"), "{e}");
    let e = spec_error("[[model.layers]]\ntype = \"flatten\"\n[data]\nformat = \"idx\"\n");
    assert!(e.contains("[data], key `train_images`: is required"), "{e}");
}

#[test]
fn bad_data_files_are_named_with_what_is_wrong() {
    let (dir, _) = setup("");
    let d = dir.path();
    // wrong magic: labels where images belong
    std::fs::copy(d.join("train-labels"), d.join("train-images")).unwrap();
    let (ok, _, err) = convnet(d, &["train", "bars.toml", "--out", "r1"]);
    assert!(
        !ok && err.contains("train-images") && err.contains("wrong IDX magic"),
        "{err}"
    );
    // truncated
    let (px, _) = bars(300, 1);
    write_idx(&d.join("train-images"), 3, &[300, 8, 8], &px[..1000]);
    let (ok, _, err) = convnet(d, &["train", "bars.toml", "--out", "r2"]);
    assert!(
        !ok && err.contains("train-images") && err.contains("truncated"),
        "{err}"
    );
    // label out of range
    write_idx(&d.join("train-images"), 3, &[300, 8, 8], &px);
    let mut lab = vec![0u8; 300];
    lab[17] = 7;
    write_idx(&d.join("train-labels"), 1, &[300], &lab);
    let (ok, _, err) = convnet(d, &["train", "bars.toml", "--out", "r3"]);
    assert!(
        !ok && err.contains("label 7 of sample 17") && err.contains("3 classes"),
        "{err}"
    );
    // counts disagree
    write_idx(&d.join("train-labels"), 1, &[299], &lab[..299]);
    let (ok, _, err) = convnet(d, &["train", "bars.toml", "--out", "r4"]);
    assert!(
        !ok && err.contains("299 labels for the 300 images"),
        "{err}"
    );
    // missing file
    std::fs::remove_file(d.join("train-labels")).unwrap();
    let (ok, _, err) = convnet(d, &["train", "bars.toml", "--out", "r5"]);
    assert!(
        !ok && err.contains("train-labels") && err.contains("No such file"),
        "{err}"
    );
    // nothing half-made is left behind as a finished run
    assert!(!d.join("r5/best.safetensors").exists());
}

#[test]
fn csv_and_folder_data_train_too() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (px, lab) = bars(120, 3);
    let mut csv = String::from("label");
    for i in 0..64 {
        csv.push_str(&format!(",p{i}"));
    }
    csv.push('\n');
    for (k, l) in lab.iter().enumerate() {
        csv.push_str(&l.to_string());
        for v in &px[k * 64..(k + 1) * 64] {
            csv.push_str(&format!(",{v}"));
        }
        csv.push('\n');
    }
    std::fs::write(d.join("train.csv"), &csv).unwrap();
    std::fs::write(
        d.join("s.toml"),
        format!("{MODEL}\n[data]\nformat = \"csv\"\ntrain = \"train.csv\"\n[train]\nepochs = 1\n"),
    )
    .unwrap();
    let (ok, out, err) = convnet(d, &["train", "s.toml", "--out", "r"]);
    assert!(ok, "{out}{err}");
    // a bad cell is named by line and column
    std::fs::write(d.join("train.csv"), csv.replacen(",255", ",abc", 1)).unwrap();
    let (ok, _, err) = convnet(d, &["train", "s.toml", "--out", "r2"]);
    assert!(
        !ok && err.contains("train.csv")
            && err.contains("line")
            && err.contains("`abc` is not a number"),
        "{err}"
    );
    // folders of PNG images, one per class
    for (k, l) in lab.iter().enumerate().take(60) {
        let sub = d.join("imgs").join(["h", "v", "d"][*l as usize]);
        std::fs::create_dir_all(&sub).unwrap();
        image::GrayImage::from_raw(8, 8, px[k * 64..(k + 1) * 64].to_vec())
            .unwrap()
            .save(sub.join(format!("{k}.png")))
            .unwrap();
    }
    std::fs::write(d.join("f.toml"), format!("{MODEL}\n[data]\nformat = \"folder\"\ntrain = \"imgs\"\nvalidation_split = 0.0\n[train]\nepochs = 1\n")).unwrap();
    let (ok, out, err) = convnet(d, &["train", "f.toml", "--out", "rf"]);
    assert!(ok, "{out}{err}");
    let info = std::fs::read_to_string(d.join("rf/run.json")).unwrap();
    assert!(
        info.contains("\"d\"") && info.contains("\"h\"") && info.contains("\"v\""),
        "class names from the folders: {info}"
    );
}

#[test]
fn early_stopping_stops_after_patience_epochs_without_improvement() {
    // A learning rate too small to move the validation loss: epoch 1 is the best, 2 and 3 are not.
    let (dir, _) = setup("early_stopping = { monitor = \"val_loss\", patience = 2 }");
    let spec = std::fs::read_to_string(dir.path().join("bars.toml"))
        .unwrap()
        .replace("lr = 0.01", "lr = 1e-30")
        .replace("epochs = 3", "epochs = 10");
    std::fs::write(dir.path().join("bars.toml"), spec).unwrap();
    let (ok, out, err) = convnet(dir.path(), &["train", "bars.toml", "--out", "r"]);
    assert!(ok, "{err}");
    assert!(out.contains("stopped early after epoch 3"), "{out}");
    let csv = std::fs::read_to_string(dir.path().join("r/metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    let info = std::fs::read_to_string(dir.path().join("r/run.json")).unwrap();
    assert!(info.contains("\"best_epoch\": 1"), "{info}");
}

#[test]
fn ctrl_c_saves_a_checkpoint_that_resume_continues() {
    let (dir, _) = setup("");
    let d = dir.path();
    let spec = std::fs::read_to_string(d.join("bars.toml"))
        .unwrap()
        .replace("epochs = 3", "epochs = 100000");
    std::fs::write(d.join("bars.toml"), spec).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_convnet"))
        .current_dir(d)
        .args(["train", "bars.toml", "--out", "r"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first epoch to finish, then interrupt as Ctrl-C does.
    let started = std::time::Instant::now();
    while !d.join("r/metrics.csv").exists() {
        assert!(started.elapsed().as_secs() < 120, "no epoch finished");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    // stopped with a checkpoint: exit 130, as a shell reports SIGINT (`train && eval` stops)
    assert_eq!(out.status.code(), Some(130), "{so}{se}");
    assert!(
        so.contains("interrupted at epoch") && so.contains("--resume"),
        "{so}{se}"
    );
    let done = std::fs::read_to_string(d.join("r/metrics.csv"))
        .unwrap()
        .lines()
        .count()
        - 1;
    // Resume, asking for one more epoch than were finished.
    let target = (done + 1).to_string();
    let (ok, so, se) = convnet(d, &["train", "--resume", "r", "--epochs", &target]);
    assert!(ok, "{so}{se}");
    assert!(se.contains("resuming at epoch"), "{se}");
    let rows = std::fs::read_to_string(d.join("r/metrics.csv"))
        .unwrap()
        .lines()
        .count()
        - 1;
    assert_eq!(rows, done + 1);
}

#[test]
fn a_damaged_run_json_is_named_not_a_panic() {
    let (dir, _) = setup("");
    let d = dir.path();
    let (ok, _, err) = convnet(d, &["train", "bars.toml", "--out", "run", "--epochs", "1"]);
    assert!(ok, "{err}");
    let mut img = image::GrayImage::new(8, 8);
    img.put_pixel(3, 3, image::Luma([255]));
    img.save(d.join("v.png")).unwrap();
    let good = std::fs::read_to_string(d.join("run/run.json")).unwrap();
    let info: serde_json::Value = serde_json::from_str(&good).unwrap();
    for (field, value, says) in [
        (
            "class_names",
            serde_json::json!(["only one"]),
            "1 names for a model with 3 outputs",
        ),
        ("normalize_std", serde_json::json!([]), "0 values for 1"),
        (
            "normalize_std",
            serde_json::json!([0.0]),
            "not a positive number",
        ),
        (
            "normalize_mean",
            serde_json::json!([0.1, 0.2]),
            "takes 1 channel",
        ),
    ] {
        let mut bad = info.clone();
        bad[field] = value;
        if field == "normalize_mean" {
            bad["normalize_std"] = serde_json::json!([1.0, 1.0]);
        }
        std::fs::write(d.join("run/run.json"), bad.to_string()).unwrap();
        for args in [
            vec!["eval", "run"],
            vec!["predict", "run", "v.png"],
            vec!["explain", "run", "v.png", "--out", "e.html"],
        ] {
            let out = Command::new(env!("CARGO_BIN_EXE_convnet"))
                .current_dir(d)
                .args(&args)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?} {field}: {err}");
            assert!(
                err.contains("run.json") && err.contains(field) && err.contains(says),
                "{args:?} {field}: {err}"
            );
        }
    }
    std::fs::write(d.join("run/run.json"), good).unwrap();
    let (ok, _, err) = convnet(d, &["eval", "run"]);
    assert!(ok, "{err}");
}

#[test]
fn a_test_curve_is_measured_without_changing_the_run() {
    let (dir, _) = setup("");
    let d = dir.path();
    let (ok, out, err) = convnet(d, &["train", "bars.toml", "--out", "plain"]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = convnet(d, &["train", "bars.toml", "--out", "curve", "--test-curve"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("test_acc"), "{out}");
    // the same weights as without the curve: evaluating the test part draws nothing
    for f in ["best.safetensors", "last.safetensors"] {
        let read = |run: &str| std::fs::read(d.join(run).join(f)).unwrap();
        assert_eq!(read("plain"), read("curve"), "{f}");
    }
    let csv = std::fs::read_to_string(d.join("curve/metrics.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "epoch,train_loss,train_acc,val_loss,val_acc,seconds,lr,test_loss,test_acc"
    );
    // the best epoch's test accuracy is that of the weights eval reads
    let col = |l: &str, i: usize| l.split(',').nth(i).unwrap().parse::<f64>().unwrap();
    let best = lines[1..]
        .iter()
        .min_by(|a, b| col(a, 3).total_cmp(&col(b, 3)))
        .unwrap();
    let (ok, out, err) = convnet(d, &["eval", "curve", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let acc = v["accuracy"].as_f64().unwrap();
    assert!((col(best, 8) - acc).abs() < 1e-6, "{best} against {acc}");
    // without test data the flag says it has nothing to measure
    let spec = std::fs::read_to_string(d.join("bars.toml")).unwrap();
    let spec: String = spec
        .lines()
        .filter(|l| !l.starts_with("test_"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(d.join("notest.toml"), spec).unwrap();
    let (ok, out, err) = convnet(
        d,
        &["train", "notest.toml", "--out", "notest", "--test-curve"],
    );
    assert!(ok, "{out}{err}");
    assert!(err.contains("names no test data"), "{err}");
}
