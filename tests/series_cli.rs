//! The series commands on the shipped data: a forecaster trained for two epochs, evaluated
//! beside its baselines and asked for recursive multi-step forecasts; a time-series classifier
//! trained for one epoch; and the errors bad series files and bad arguments give.

use std::path::{Path, PathBuf};

mod common;
use common::convnet;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ok(args: &[&str]) -> String {
    let (good, out, err) = convnet(&root(), args);
    assert!(good, "convnet {args:?} failed:\n{out}\n{err}");
    out
}

fn fails(args: &[&str]) -> String {
    let (good, out, err) = convnet(&root(), args);
    assert!(!good, "convnet {args:?} succeeded:\n{out}");
    err
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn forecaster_trains_evaluates_beside_baselines_and_forecasts() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = ok(&[
        "train",
        "examples/sunspots_conv1d.toml",
        "--epochs",
        "2",
        "--out",
        &s(&run),
    ]);
    assert!(out.contains("val_mae"), "{out}");
    assert!(out.contains("naive (last value)        11.9437"), "{out}");
    assert!(out.contains("seasonal naive (m=132)"), "{out}");
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert!(metrics.starts_with("epoch,train_loss,train_mae,val_loss,val_mae"));
    // three parts: the validation part chose the epoch, the test part after it is reported
    assert!(
        out.contains("validation part from step 2868: 132 origin(s)")
            && out.contains("test part from step 3000: 126 origin(s)")
            && out.contains("chosen by val_loss on the validation part"),
        "{out}"
    );

    // eval reports the test part unless asked for the validation part
    let json: serde_json::Value = serde_json::from_str(&ok(&["eval", &s(&run), "--json"])).unwrap();
    assert_eq!(json["part"], "test");
    assert_eq!(json["split"], 3000);
    assert_eq!(json["origins"], 126);
    let val: serde_json::Value =
        serde_json::from_str(&ok(&["eval", &s(&run), "--data", "val", "--json"])).unwrap();
    assert_eq!(
        (&val["part"], &val["split"], &val["origins"]),
        (&"validation".into(), &2868.into(), &132.into())
    );
    // the validation part's origins are the windows that chose the epoch: its MAE is the
    // best epoch's val_mae
    let best: Vec<f64> = metrics
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(4).unwrap().parse().unwrap())
        .collect();
    let chosen = best.iter().copied().fold(f64::INFINITY, f64::min);
    let mae = val["model"]["mae"].as_f64().unwrap();
    assert!((mae - chosen).abs() < 1e-3 * chosen, "{mae} vs {best:?}");
    assert!((json["naive"]["mae"].as_f64().unwrap() - 11.9437).abs() < 1e-3);
    assert!(json["model"]["mase"].as_f64().unwrap() > 0.0);
    // six months ahead from every origin: the one-step model is fed its own forecasts
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["eval", &s(&run), "--horizon", "6", "--json"])).unwrap();
    assert_eq!(
        (json["horizon"].as_u64(), json["origins"].as_u64()),
        (Some(6), Some(121))
    );

    let prefix = tmp.path().join("f");
    let out = ok(&[
        "forecast",
        &s(&run),
        "data/sunspots/sunspots_monthly.csv",
        "--horizon",
        "12",
        "--start",
        "3000",
        "--out",
        &s(&prefix),
    ]);
    assert!(out.contains("12 known step(s) from step 3000"), "{out}");
    assert!(out.contains("naive"), "{out}");
    let csv = std::fs::read_to_string(prefix.with_extension("csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "step,time,sunspots_forecast,sunspots_truth");
    assert_eq!(lines.len(), 13);
    assert!(lines[1].starts_with("3000,1999-01,"), "{}", lines[1]);
    assert!(lines[1].ends_with(",62"), "{}", lines[1]);
    let png = std::fs::read(prefix.with_extension("png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    // beyond the end: no truth
    let json: serde_json::Value = serde_json::from_str(&ok(&[
        "forecast",
        &s(&run),
        "data/sunspots/sunspots_monthly.csv",
        "--horizon",
        "3",
        "--json",
    ]))
    .unwrap();
    assert_eq!(json["known_steps"], 0);
    assert_eq!(json["forecast"][0].as_array().unwrap().len(), 3);

    // refusing to overwrite, bad starts and horizons, a series without the column
    let e = fails(&[
        "forecast",
        &s(&run),
        "data/sunspots/sunspots_monthly.csv",
        "--horizon",
        "12",
        "--out",
        &s(&prefix),
    ]);
    assert!(e.contains("exists") && e.contains("--overwrite"), "{e}");
    let e = fails(&[
        "forecast",
        &s(&run),
        "data/sunspots/sunspots_monthly.csv",
        "--horizon",
        "2",
        "--start",
        "5",
    ]);
    assert!(e.contains("needs 24 steps of history"), "{e}");
    let e = fails(&[
        "forecast",
        &s(&run),
        "data/sunspots/sunspots_monthly.csv",
        "--horizon",
        "0",
    ]);
    assert!(e.contains("--horizon must be at least 1"), "{e}");
    let e = fails(&[
        "forecast",
        &s(&run),
        "data/airline/airline.csv",
        "--horizon",
        "2",
    ]);
    assert!(
        e.contains("no column `month`") || e.contains("no column `sunspots`"),
        "{e}"
    );
    let e = fails(&["eval", &s(&run), "--data", "train"]);
    assert!(e.contains("--data val") && e.contains("--data test"), "{e}");
    // forecasting needs the series it is given, not the training file: from another folder
    std::fs::copy(
        root().join("data/sunspots/sunspots_monthly.csv"),
        tmp.path().join("copy.csv"),
    )
    .unwrap();
    let (good, out, err) = convnet(
        tmp.path(),
        &[
            "forecast",
            "run",
            "copy.csv",
            "--horizon",
            "2",
            "--out",
            "elsewhere",
        ],
    );
    assert!(good, "{out}\n{err}");
    assert!(tmp.path().join("elsewhere.csv").exists());
}

#[test]
fn time_series_classifier_trains_on_ts_files() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = ok(&[
        "train",
        "examples/italypower_fcn.toml",
        "--epochs",
        "1",
        "--out",
        &s(&run),
    ]);
    assert!(out.contains("test (1029 samples"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&ok(&["eval", &s(&run), "--json"])).unwrap();
    assert_eq!(json["samples"], 1029);
    let e = fails(&["eval", &s(&run), "--horizon", "3"]);
    assert!(e.contains("--horizon is for forecasters"), "{e}");
}

#[test]
fn bad_series_files_fail_with_the_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("s.csv"),
        "t,v\n".to_string()
            + &(0..40).map(|i| format!("{i},{i}\n")).collect::<String>()
            + "40,\n41,oops\n",
    )
    .unwrap();
    let spec = |extra: &str| {
        format!(
            "[model]\ninput = [1, 8]\n[[model.layers]]\ntype = \"conv1d\"\nfilters = 2\nkernel_size = 3\npadding = \"causal\"\n[[model.layers]]\ntype = \"flatten\"\n[[model.layers]]\ntype = \"dense\"\nunits = 1\n[data]\nformat = \"series\"\npath = \"s.csv\"\ntime_column = \"t\"\nvalidation_split = 0.2\n{extra}\n[train]\nepochs = 1\n"
        )
    };
    std::fs::write(tmp.path().join("a.toml"), spec("")).unwrap();
    let (good, _, err) = convnet(tmp.path(), &["train", "a.toml", "--out", "r1"]);
    assert!(!good);
    assert!(
        err.contains("s.csv: line 42, column `v`: missing value"),
        "{err}"
    );
    std::fs::write(tmp.path().join("b.toml"), spec("missing = \"interpolate\"")).unwrap();
    let (good, _, err) = convnet(tmp.path(), &["train", "b.toml", "--out", "r2"]);
    assert!(!good);
    assert!(
        err.contains("line 43, column `v`: \"oops\" is not a number"),
        "{err}"
    );
    std::fs::write(tmp.path().join("c.toml"), spec("loss_typo = 1")).unwrap();
    let (good, _, err) = convnet(tmp.path(), &["train", "c.toml"]);
    assert!(!good);
    assert!(
        err.contains("[data], key `loss_typo`: unknown key"),
        "{err}"
    );
    std::fs::write(
        tmp.path().join("d.toml"),
        spec("").replace("[train]\n", "[train]\nloss = \"cross_entropy\"\n"),
    )
    .unwrap();
    let (good, _, err) = convnet(tmp.path(), &["train", "d.toml"]);
    assert!(!good);
    assert!(
        err.contains("a forecaster's loss is mse, mae or huber"),
        "{err}"
    );
}

#[test]
fn summary_reports_block_receptive_fields() {
    let out = ok(&["summary", "examples/sunspots_wavenet.toml"]);
    assert!(out.contains("receptive field of one output: 33"), "{out}");
    assert!(out.contains("layers.0.layers.4"), "{out}");
    assert!(!out.contains("warning"), "{out}");
}

/// Bad test parts of a series are refused naming the key; without a test part, `eval --data
/// test` says how to set one apart.
#[test]
fn bad_test_parts_name_their_key() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let root = root();
    let base = std::fs::read_to_string(root.join("examples/sunspots_conv1d.toml"))
        .unwrap()
        .replace("../data/", &format!("{}/data/", root.display()));
    let run = |name: &str, text: String| {
        std::fs::write(d.join(name), text).unwrap();
        convnet(
            d,
            &[
                "train",
                name,
                "--epochs",
                "1",
                "--out",
                &format!("r_{name}"),
            ],
        )
    };
    let (good, _, err) = run(
        "both.toml",
        base.replace("test_start = 3000", "test_start = 3000\ntest_split = 0.1"),
    );
    assert!(
        !good && err.contains("key `test_split`") && err.contains("not both"),
        "{err}"
    );
    let (good, _, err) = run(
        "late.toml",
        base.replace("test_start = 3000", "test_start = 3200"),
    );
    assert!(
        !good && err.contains("key `test_start`") && err.contains("3200 of 3126"),
        "{err}"
    );
    let (good, _, err) = run(
        "frac.toml",
        base.replace("test_start = 3000", "test_split = 1.5"),
    );
    assert!(
        !good && err.contains("key `test_split`: 1.5 is not in (0, 1)"),
        "{err}"
    );
    let (good, out, err) = run(
        "none.toml",
        base.replace("test_start = 3000", "# no test part"),
    );
    assert!(good, "{out}{err}");
    assert!(
        out.contains("these weights were chosen on this part"),
        "{out}"
    );
    let (good, _, err) = convnet(d, &["eval", "r_none.toml", "--data", "test"]);
    assert!(!good && err.contains("test_start or test_split"), "{err}");
}

/// `convnet baseline`: one nearest neighbour with the Euclidean distance, as the UCR archive
/// reports it (GunPoint 0.087 error, ItalyPowerDemand 0.045); series of unequal length are
/// resampled to the longest training series.
#[test]
fn the_nearest_neighbour_baseline_matches_the_published_figures() {
    let json = |spec: &str| -> serde_json::Value {
        serde_json::from_str(&ok(&["baseline", spec, "--json"])).unwrap()
    };
    let g = json("examples/gunpoint_fcn.toml");
    assert_eq!(
        (g["samples"].as_u64(), g["resampled_to"].as_u64()),
        (Some(150), None)
    );
    assert!(
        (g["accuracy"].as_f64().unwrap() - 0.9133).abs() < 1e-4,
        "{g}"
    );
    let i = json("examples/italypower_fcn.toml");
    assert!(
        (i["accuracy"].as_f64().unwrap() - 0.9553).abs() < 1e-4,
        "{i}"
    );
    let out = ok(&["baseline", "examples/gunpoint_fcn.toml"]);
    assert!(out.contains("test accuracy 91.33% on 150 series"), "{out}");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("train.ts"), unequal_ts(60, 1)).unwrap();
    std::fs::write(d.join("test.ts"), unequal_ts(30, 2)).unwrap();
    std::fs::write(d.join("s.toml"), "[model]\ninput = [1, \"any\"]\n[[model.layers]]\ntype = \"global_avg_pool\"\n[[model.layers]]\ntype = \"dense\"\nunits = 2\n[data]\nformat = \"ts\"\ntrain = \"train.ts\"\ntest = \"test.ts\"\n").unwrap();
    let (good, out, err) = convnet(d, &["baseline", "s.toml", "--json"]);
    assert!(good, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["resampled_to"], 43, "the longest training series");
    // ramps up or down: the nearest resampled ramp has the same direction
    assert!(v["accuracy"].as_f64().unwrap() > 0.8, "{v}");
    std::fs::write(d.join("n.toml"), "[model]\ninput = [1, \"any\"]\n[[model.layers]]\ntype = \"global_avg_pool\"\n[[model.layers]]\ntype = \"dense\"\nunits = 2\n[data]\nformat = \"ts\"\ntrain = \"train.ts\"\n").unwrap();
    let (good, _, err) = convnet(d, &["baseline", "n.toml"]);
    assert!(!good && err.contains("no test data"), "{err}");
}

/// A `.ts` file of two classes (a rising or a falling ramp with noise) whose series are 20 to
/// 44 steps long.
fn unequal_ts(n: usize, seed: u64) -> String {
    let mut r = convnet::Rng::new(seed);
    let mut s =
        String::from("@problemName Ramps\n@equalLength false\n@classLabel true up down\n@data\n");
    for i in 0..n {
        let len = 20 + r.below(25);
        let up = i % 2 == 0;
        let v: Vec<String> = (0..len)
            .map(|t| {
                let x = t as f32 / len as f32;
                format!("{:.3}", if up { x } else { 1.0 - x } + 0.2 * r.normal())
            })
            .collect();
        s.push_str(&format!(
            "{}:{}\n",
            v.join(","),
            if up { "up" } else { "down" }
        ));
    }
    s
}

#[test]
fn series_of_unequal_length_train_a_length_independent_model() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("train.ts"), unequal_ts(60, 1)).unwrap();
    std::fs::write(tmp.path().join("test.ts"), unequal_ts(30, 2)).unwrap();
    let spec = |input: &str, head: &str| {
        format!(
            "[model]\ninput = {input}\n[[model.layers]]\ntype = \"conv1d\"\nfilters = 8\nkernel_size = 5\npadding = \"same\"\nactivation = \"relu\"\n{head}[[model.layers]]\ntype = \"dense\"\nunits = 2\n[data]\nformat = \"ts\"\ntrain = \"train.ts\"\ntest = \"test.ts\"\nvalidation_split = 0.2\n[train]\nepochs = 30\nbatch_size = 8\n[train.optimizer]\ntype = \"adam\"\nlr = 0.01\n"
        )
    };
    let gap = "[[model.layers]]\ntype = \"global_avg_pool\"\n";
    let flat = "[[model.layers]]\ntype = \"flatten\"\n";
    std::fs::write(tmp.path().join("any.toml"), spec("[1, \"any\"]", gap)).unwrap();
    let (good, out, err) = convnet(tmp.path(), &["summary", "any.toml"]);
    assert!(good, "{err}");
    assert!(out.contains("length-independent"), "{out}");
    assert!(
        out.contains("the input's length is open: shapes are shown at (1, 64)")
            && out.contains(
                "series of unequal length train in batches padded to their longest and masked"
            ),
        "{out}"
    );
    let (good, out, err) = convnet(tmp.path(), &["train", "any.toml", "--out", "r"]);
    assert!(good, "{out}\n{err}");
    let acc: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("test (30 samples"))
        .and_then(|l| l.rsplit("accuracy ").next())
        .and_then(|v| v.trim_end_matches('%').parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(acc >= 80.0, "ramps up or down, 8 epochs: {acc}%\n{out}");
    // a fixed length refuses the series; "any" with flatten + dense is refused before training
    std::fs::write(tmp.path().join("fixed.toml"), spec("[1, 30]", gap)).unwrap();
    let (good, _, err) = convnet(tmp.path(), &["train", "fixed.toml", "--out", "r2"]);
    assert!(!good);
    assert!(
        err.contains("steps long but the model's input length is 30") && err.contains("\"any\""),
        "{err}"
    );
    std::fs::write(tmp.path().join("flat.toml"), spec("[1, \"any\"]", flat)).unwrap();
    let (good, _, err) = convnet(tmp.path(), &["summary", "flat.toml"]);
    assert!(!good);
    assert!(
        err.contains("layers.1 (flatten) fixes it") && err.contains("global pooling"),
        "{err}"
    );
}

#[test]
fn relative_windows_forecast_a_trend_beyond_the_training_range() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    ok(&[
        "train",
        "examples/airline_conv1d.toml",
        "--epochs",
        "20",
        "--out",
        &s(&run),
    ]);
    let json: serde_json::Value = serde_json::from_str(&ok(&["eval", &s(&run), "--json"])).unwrap();
    // the last training year peaks at 559; the validation years reach 622. Forecasts put
    // back on the level of each window's last value follow the trend the naive forecast
    // misses
    let (model, naive) = (
        json["model"]["mae"].as_f64().unwrap(),
        json["naive"]["mae"].as_f64().unwrap(),
    );
    assert!(model < naive, "model {model}, naive {naive}");
    let out: serde_json::Value = serde_json::from_str(&ok(&[
        "forecast",
        &s(&run),
        "data/airline/airline.csv",
        "--horizon",
        "24",
        "--start",
        "120",
        "--json",
        "--out",
        &s(&tmp.path().join("f")),
    ]))
    .unwrap();
    let f: Vec<f64> = out["forecast"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(f.len(), 24);
    assert!(f.iter().all(|&v| (250.0..800.0).contains(&v)), "{f:?}");
}

/// `normalize = "per_series"`: each series z-normalised by its own statistics, in training and
/// in `eval` (run.json says so), so that a model does not see a series' offset or scale.
#[test]
fn per_series_normalisation_makes_a_model_blind_to_offset_and_scale() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("train.ts"), unequal_ts(60, 1)).unwrap();
    let test = unequal_ts(30, 2);
    std::fs::write(d.join("test.ts"), &test).unwrap();
    let spec = "[model]\ninput = [1, \"any\"]\n[[model.layers]]\ntype = \"conv1d\"\nfilters = 8\nkernel_size = 5\npadding = \"same\"\nactivation = \"relu\"\n[[model.layers]]\ntype = \"global_avg_pool\"\n[[model.layers]]\ntype = \"dense\"\nunits = 2\n[data]\nformat = \"ts\"\ntrain = \"train.ts\"\ntest = \"test.ts\"\nnormalize = \"per_series\"\n[train]\nepochs = 6\nbatch_size = 8\n[train.optimizer]\ntype = \"adam\"\nlr = 0.01\n";
    std::fs::write(d.join("s.toml"), spec).unwrap();
    let (ok, out, err) = convnet(d, &["train", "s.toml", "--out", "run"]);
    assert!(ok, "{out}{err}");
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("run/run.json")).unwrap()).unwrap();
    assert_eq!(info["normalize_per_series"], true);
    let eval = || {
        let (ok, out, err) = convnet(d, &["eval", "run", "--json"]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        (v["accuracy"].as_f64().unwrap(), v["loss"].as_f64().unwrap())
    };
    let before = eval();
    // every test series scaled and shifted by its own amounts
    let mut r = convnet::Rng::new(9);
    let moved: String = test
        .lines()
        .map(|l| match l.rsplit_once(':') {
            Some((values, label)) if !l.starts_with('@') => {
                let (a, b) = (0.5 + 3.0 * r.uniform(), 100.0 * r.normal());
                let v: Vec<String> = values
                    .split(',')
                    .map(|x| format!("{}", a * x.parse::<f32>().unwrap() + b))
                    .collect();
                format!("{}:{label}\n", v.join(","))
            }
            _ => format!("{l}\n"),
        })
        .collect();
    std::fs::write(d.join("test.ts"), moved).unwrap();
    let after = eval();
    assert_eq!(before.0, after.0, "accuracy {before:?} then {after:?}");
    assert!(
        (before.1 - after.1).abs() < 1e-3,
        "loss {before:?} then {after:?}"
    );
    // a forecaster's windows are not series to normalise one by one
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let f = std::fs::read_to_string(root.join("examples/sunspots_conv1d.toml"))
        .unwrap()
        .replace("../data/", &format!("{}/data/", root.display()))
        .replace("[data]", "[data]\nnormalize = \"per_series\"");
    std::fs::write(d.join("f.toml"), f).unwrap();
    let (ok, _, err) = convnet(d, &["train", "f.toml", "--out", "f"]);
    assert!(
        !ok && err.contains("normalize") && err.contains("standardize"),
        "{err}"
    );
}

/// Batch norm on small batches is warned about: in `summary` from the spec's batch size, in
/// `train` from the batches the data makes (series of unequal length batched by length when
/// a layer cannot take padded, masked batches; none when every layer can).
#[test]
fn batch_norm_on_small_batches_is_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("train.ts"), unequal_ts(60, 1)).unwrap();
    let spec_mode = |norm: &str, batch: usize, mode: &str| {
        format!(
            "[model]\ninput = [1, \"any\"]\n[[model.layers]]\ntype = \"conv1d\"\nfilters = 4\nkernel_size = 3\npadding = \"same\"\npadding_mode = \"{mode}\"\n{norm}[[model.layers]]\ntype = \"global_avg_pool\"\n[[model.layers]]\ntype = \"dense\"\nunits = 2\n[data]\nformat = \"ts\"\ntrain = \"train.ts\"\n[train]\nepochs = 1\nbatch_size = {batch}\n"
        )
    };
    let spec = |norm: &str, batch: usize| spec_mode(norm, batch, "zeros");
    let bn = "[[model.layers]]\ntype = \"batch_norm\"\n";
    // reflect padding would read a padded batch's zeros: one length per batch
    std::fs::write(d.join("bn.toml"), spec_mode(bn, 16, "reflect")).unwrap();
    let (ok, out, err) = convnet(d, &["train", "bn.toml", "--out", "r"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("warning: batch norm (1 layer) trains on batches of fewer than 8")
            && err.contains("batched by length")
            && err.contains(
                "one length per batch (layer 0 (conv1d) would mix a series with its padding)"
            ),
        "{out}{err}"
    );
    // zero padding takes the mask: full batches, bucketed by length, and no warning
    std::fs::write(d.join("bn0.toml"), spec(bn, 16)).unwrap();
    let (ok, out, err) = convnet(d, &["train", "bn0.toml", "--out", "r0"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("padded to its longest and masked") && !err.contains("warning"),
        "{out}{err}"
    );
    std::fs::write(d.join("small.toml"), spec(bn, 4)).unwrap();
    let (ok, out, _) = convnet(d, &["summary", "small.toml"]);
    assert!(
        ok && out.contains("batch norm (1 layer) trains on batches of fewer than 8"),
        "{out}"
    );
    // without batch norm, or with batches large enough, nothing is said
    std::fs::write(d.join("plain.toml"), spec("", 4)).unwrap();
    let (ok, out, _) = convnet(d, &["summary", "plain.toml"]);
    assert!(ok && !out.contains("batch norm"), "{out}");
    std::fs::write(d.join("big.toml"), spec(bn, 16)).unwrap();
    let (ok, out, _) = convnet(d, &["summary", "big.toml"]);
    assert!(ok && !out.contains("fewer than 8"), "{out}");
}

/// `[data] resample = N`: series of unequal length resampled to one length take a model of a
/// fixed input length (flatten and dense), in training and evaluation.
#[test]
fn series_resampled_to_one_length_train_a_fixed_length_model() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("train.ts"), unequal_ts(60, 1)).unwrap();
    std::fs::write(d.join("test.ts"), unequal_ts(30, 2)).unwrap();
    let spec = "[model]\ninput = [1, 32]\n[[model.layers]]\ntype = \"conv1d\"\nfilters = 4\nkernel_size = 3\nactivation = \"relu\"\n[[model.layers]]\ntype = \"flatten\"\n[[model.layers]]\ntype = \"dense\"\nunits = 2\n[data]\nformat = \"ts\"\ntrain = \"train.ts\"\ntest = \"test.ts\"\nresample = 32\n[train]\nepochs = 30\nbatch_size = 8\n[train.optimizer]\ntype = \"adam\"\nlr = 0.01\n";
    std::fs::write(d.join("r.toml"), spec).unwrap();
    let (ok, out, err) = convnet(d, &["train", "r.toml", "--out", "run"]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = convnet(d, &["eval", "run", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["samples"], 30);
    assert!(v["accuracy"].as_f64().unwrap() >= 0.8, "{v}");
    // a resampling to fewer than 2 steps is refused, naming the key
    std::fs::write(
        d.join("bad.toml"),
        spec.replace("resample = 32", "resample = 1"),
    )
    .unwrap();
    let (ok, _, err) = convnet(d, &["train", "bad.toml", "--out", "b"]);
    assert!(
        !ok && err.contains("resample") && err.contains("at least 2"),
        "{err}"
    );
}
