//! Bad input to the keys, formats and flags of series, generators, open sizes and the
//! explainer: every case fails with a message that names what was wrong (and where), never a
//! panic (a panicking binary exits with 101, an error with 1).

use std::path::Path;

mod common;
use common::{bars, convnet, write_idx};

/// Run the binary in `dir`; assert it failed cleanly and the message holds every `want`.
fn refused(dir: &Path, args: &[&str], want: &[&str]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_convnet"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "convnet {args:?}: {err}");
    for w in want {
        assert!(
            err.contains(w),
            "convnet {args:?}: expected `{w}` in:\n{err}"
        );
    }
}

const SERIES_MODEL: &str = "[model]\ninput = [1, 8]\n[[model.layers]]\ntype = \"conv1d\"\nfilters = 2\nkernel_size = 3\npadding = \"causal\"\n[[model.layers]]\ntype = \"flatten\"\n[[model.layers]]\ntype = \"dense\"\nunits = 1\n";

#[test]
fn bad_series_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let csv: String = "t,v,w\n".to_string()
        + &(0..60)
            .map(|i| format!("{i},{i},{}\n", 2 * i))
            .collect::<String>();
    std::fs::write(d.join("s.csv"), csv).unwrap();
    let cases: &[(&str, &[&str])] = &[
        (
            "horizon = 0",
            &["[data], key `horizon`", "must be positive"],
        ),
        ("stride = 0", &["[data], key `stride`", "must be positive"]),
        (
            "seasonality = 0",
            &["[data], key `seasonality`", "must be positive"],
        ),
        (
            "split = 40\nvalidation_split = 0.2",
            &["key `validation_split`", "not both"],
        ),
        (
            "validation_split = 1.5",
            &["key `validation_split`", "1.5 is not in [0, 1)"],
        ),
        (
            "missing = \"drop\"",
            &[
                "key `missing`",
                "\"drop\" is not one of: error, interpolate",
            ],
        ),
        ("relative = \"yes\"", &["key `relative`", "true or false"]),
        (
            "columns = [\"v\"]\ntargets = [\"w\"]",
            &["key `targets`", "`w` is not an input column"],
        ),
        (
            "time_column = \"date\"",
            &["no column `date`", "time_column"],
        ),
        (
            "normalize = { mean = [0.0], std = [1.0] }",
            &["key `normalize`", "standardize"],
        ),
        (
            "horizon = \"two\"",
            &["key `horizon`", "expected a non-negative integer"],
        ),
    ];
    for (i, (extra, want)) in cases.iter().enumerate() {
        let spec = format!(
            "{SERIES_MODEL}[data]\nformat = \"series\"\npath = \"s.csv\"\ncolumns = [\"v\"]\n{extra}\n[train]\nepochs = 1\n"
        );
        // a key given twice is a TOML error of its own: the case's `columns` replaces the default
        let spec = if extra.contains("columns") {
            spec.replacen("columns = [\"v\"]\n", "", 1)
        } else if extra.contains("time_column") {
            spec
        } else {
            spec.replacen(
                "columns = [\"v\"]\n",
                "time_column = \"t\"\ncolumns = [\"v\"]\n",
                1,
            )
        };
        let name = format!("s{i}.toml");
        std::fs::write(d.join(&name), spec).unwrap();
        refused(d, &["train", &name, "--out", &format!("r{i}")], want);
    }
}

#[test]
fn bad_tasks_layers_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let image = "[model]\ninput = [1, 8, 8]\n[[model.layers]]\ntype = \"conv2d\"\nfilters = 2\nkernel_size = 3\n[[model.layers]]\ntype = \"global_avg_pool\"\n";
    let cases: Vec<(String, &[&str])> = vec![
        (
            format!("{image}[train]\ntask = \"regression\"\n"),
            &["[train], key `task`", "\"regression\" is not one of"],
        ),
        (
            format!("{image}[train]\nloss = \"bce\"\n"),
            &["[train], key `loss`", "a classifier's loss is cross_entropy"],
        ),
        (
            "[model]\ninput = [1, 8, 8]\n[[model.layers]]\ntype = \"upsample\"\nsize = 0\n".into(),
            &["layer 0 (upsample), key `size`", "must be positive"],
        ),
        (
            "[model]\ninput = [1, 8, 8]\n[[model.layers]]\ntype = \"upsample\"\ninterpolation = \"cubic\"\n".into(),
            &["key `interpolation`", "\"cubic\" is not one of: nearest, bilinear, linear"],
        ),
        (
            "[model]\ninput = [\"any\", 8]\n[[model.layers]]\ntype = \"flatten\"\n".into(),
            &["[model], key `input`", "a spatial size may be"],
        ),
        (
            "[generator]\ninput = [4]\n[[generator.layers]]\ntype = \"dense\"\nunits = 4\n[train]\ntask = \"gan\"\n".into(),
            &["a GAN needs both [generator] and [discriminator]"],
        ),
        (
            format!("{image}[generator]\ninput = [4]\n[[generator.layers]]\ntype = \"dense\"\nunits = 4\n"),
            &["[model] goes alone"],
        ),
        (
            format!("{image}[train]\ntask = \"gan\"\n"),
            &["[train], key `task`", "needs [generator] and [discriminator]"],
        ),
        (
            format!("{image}[train]\nsync_batch_norm = \"yes\"\n"),
            &["[train], key `sync_batch_norm`"],
        ),
        (
            format!("{image}[train]\nsync_batchnorm = true\n"),
            &["sync_batchnorm", "sync_batch_norm"],
        ),
    ];
    for (i, (spec, want)) in cases.iter().enumerate() {
        let name = format!("m{i}.toml");
        std::fs::write(d.join(&name), spec).unwrap();
        refused(d, &["train", &name, "--out", &format!("r{i}")], want);
    }
    // an autoencoder's loss
    let (px, lab) = bars(20, 1);
    write_idx(&d.join("ti"), 3, &[20, 8, 8], &px);
    write_idx(&d.join("tl"), 1, &[20], &lab);
    let ae = "[model]\ninput = [1, 8, 8]\n[[model.layers]]\ntype = \"conv2d\"\nfilters = 1\nkernel_size = 3\npadding = \"same\"\n[data]\nformat = \"idx\"\ntrain_images = \"ti\"\ntrain_labels = \"tl\"\nnormalize = \"scale\"\n[train]\ntask = \"autoencoder\"\nloss = \"mae\"\n";
    std::fs::write(d.join("ae.toml"), ae).unwrap();
    refused(
        d,
        &["train", "ae.toml", "--out", "r"],
        &["key `loss`", "an autoencoder's loss is mse or bce"],
    );
}

#[test]
fn bad_ts_files_and_explain_flags() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let spec = |train: &str| {
        format!(
            "[model]\ninput = [1, 4]\n[[model.layers]]\ntype = \"conv1d\"\nfilters = 2\nkernel_size = 2\n[[model.layers]]\ntype = \"global_avg_pool\"\n[[model.layers]]\ntype = \"dense\"\nunits = 2\n[data]\nformat = \"ts\"\ntrain = \"{train}\"\nvalidation_split = 0.0\n[train]\nepochs = 1\n"
        )
    };
    let good = "@classLabel true a b\n@data\n1,2,3,4:a\n4,3,2,1:b\n1,2,3,5:a\n5,3,2,1:b\n";
    std::fs::write(d.join("good.ts"), good).unwrap();
    std::fs::write(d.join("short.ts"), "@classLabel true a b\n@data\n1,2,3:a\n").unwrap();
    std::fs::write(
        d.join("two.ts"),
        "@classLabel true a b\n@data\n1,2,3,4:4,3,2,1:a\n",
    )
    .unwrap();
    std::fs::write(d.join("nolabel.ts"), "@problemName x\n@data\n1,2,3,4\n").unwrap();
    let cases: &[(&str, &[&str])] = &[
        ("missing.ts", &["missing.ts", "No such file"]),
        (
            "short.ts",
            &["short.ts", "3 steps long but the model's input length is 4"],
        ),
        (
            "two.ts",
            &["two.ts", "2 channel(s) but the model's input is [1, 4]"],
        ),
        (
            "nolabel.ts",
            &["nolabel.ts", "no `@classLabel true ...` line before @data"],
        ),
    ];
    for (i, (file, want)) in cases.iter().enumerate() {
        let name = format!("t{i}.toml");
        std::fs::write(d.join(&name), spec(file)).unwrap();
        refused(d, &["train", &name, "--out", &format!("r{i}")], want);
    }
    std::fs::write(d.join("ok.toml"), spec("good.ts")).unwrap();
    let (ok, _, err) = convnet(d, &["train", "ok.toml", "--out", "run"]);
    assert!(ok, "{err}");
    refused(
        d,
        &["explain", "run", "good.ts", "--index", "9"],
        &["--index 9", "holds 4 series"],
    );
    refused(d, &["explain", "run"], &["give the INPUT to explain"]);
    std::fs::write(d.join("taken.html"), "mine").unwrap();
    refused(
        d,
        &["explain", "run", "good.ts", "--out", "taken.html"],
        &["taken.html exists", "--overwrite"],
    );
    refused(
        d,
        &["playground", "--out", "taken.html"],
        &["taken.html exists", "--overwrite"],
    );
    assert_eq!(
        std::fs::read_to_string(d.join("taken.html")).unwrap(),
        "mine"
    );
    refused(
        d,
        &["forecast", "run", "good.ts", "--horizon", "2"],
        &["not a forecaster"],
    );
}

#[test]
fn bad_forecast_flags() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let csv: String = "t,v\n".to_string()
        + &(0..80)
            .map(|i| format!("{i},{}\n", i % 7))
            .collect::<String>();
    std::fs::write(d.join("s.csv"), csv).unwrap();
    let spec = format!(
        "{SERIES_MODEL}[data]\nformat = \"series\"\npath = \"s.csv\"\ntime_column = \"t\"\n[train]\nepochs = 1\n"
    );
    std::fs::write(d.join("f.toml"), spec).unwrap();
    let (ok, _, err) = convnet(d, &["train", "f.toml", "--out", "run"]);
    assert!(ok, "{err}");
    refused(
        d,
        &["eval", "run", "--horizon", "0"],
        &["horizon", "must be at least 1"],
    );
    refused(
        d,
        &[
            "forecast",
            "run",
            "s.csv",
            "--horizon",
            "2",
            "--start",
            "500",
        ],
        &["--start 500 is past the end"],
    );
    refused(
        d,
        &["explain", "run", "s.csv", "--start", "3"],
        &["--start 3", "needs 8 steps"],
    );
    refused(
        d,
        &["eval", "run", "--size", "4"],
        &["--size resizes the images of a classifier"],
    );
}

#[test]
fn a_misspelt_required_key_is_named_with_its_correction_first() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let layer = |body: &str| format!("[model]\ninput = [1, 8, 8]\n[[model.layers]]\n{body}\n");
    let cases = [
        (
            layer("type = \"conv2d\"\nfiltres = 4\nkernel_size = 3"),
            &[
                "layer 0 (conv2d), key `filtres`",
                "did you mean `filters`?",
                "required",
            ][..],
        ),
        (
            "[model]\nimput = [1, 8, 8]\n[[model.layers]]\ntype = \"flatten\"\n".to_string(),
            &["[model], key `imput`", "did you mean `input`?"][..],
        ),
        (
            layer("typ = \"flatten\""),
            &["key `typ`", "did you mean `type`?"][..],
        ),
        (
            layer("type = \"activation\"\nactivaton = \"relu\""),
            &["key `activaton`", "did you mean `activation`?"][..],
        ),
        // a key that is simply absent is still named as required
        (
            layer("type = \"conv2d\"\nkernel_size = 3"),
            &["key `filters`: is required (the number of filters)"][..],
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let name = format!("typo{i}.toml");
        std::fs::write(d.join(&name), text).unwrap();
        refused(d, &["summary", &name], want);
    }
}
