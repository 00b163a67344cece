//! The `convnet` binary, run for real: its output and exit codes.

mod common;

/// The binary, run in the package's folder.
fn convnet(args: &[&str]) -> (bool, String, String) {
    common::convnet(std::path::Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

#[test]
fn ops_lists_the_version_and_every_op() {
    let (ok, out, _) = convnet(&["ops"]);
    assert!(ok);
    assert!(out.starts_with(&format!("convnet {}", env!("CARGO_PKG_VERSION"))));
    for (_, ops) in convnet::ops::OPS {
        for op in *ops {
            assert!(out.contains(op), "{op} missing from `convnet ops`");
        }
    }
}

#[test]
fn demo_recovers_the_filter_and_learns_the_classifier() {
    let (ok, out, err) = convnet(&["demo", "--seed", "3"]);
    assert!(ok, "{err}");
    let acc: f32 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("test accuracy after 300 steps: "))
        .and_then(|l| l.split('%').next())
        .and_then(|v| v.parse().ok())
        .expect("an accuracy line");
    assert!(acc > 90.0, "{out}");
    let last_mse: f32 = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("step 150  mse "))
        .next()
        .and_then(|v| v.parse().ok())
        .expect("mse");
    assert!(last_mse < 1e-3, "{out}");
}

#[test]
fn bench_json_has_a_median_for_each_workload() {
    let (ok, out, err) = convnet(&["bench", "--json", "--filter", "E.", "--reps", "1"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    for k in ["E.maxpool.fwd", "E.maxpool.fwdbwd", "E.gap.fwd"] {
        assert!(
            v[k]["median_ms"].as_f64().is_some_and(|m| m > 0.0),
            "{k} in {out}"
        );
    }
}

#[test]
fn bad_arguments_fail_with_a_message() {
    let (ok, _, err) = convnet(&["bench", "--reps", "many"]);
    assert!(!ok && err.contains("--reps"), "{err}");
    let (ok, _, err) = convnet(&["nonsense"]);
    assert!(!ok && err.contains("nonsense"), "{err}");
    // usage errors exit 2, as clap reports them; other failures exit 1
    for (args, want) in [
        (
            &["--threads", "0", "ops"][..],
            "'--threads <THREADS>': must be at least 1",
        ),
        (&["train"][..], "<SPEC>"),
        (
            &["train", "a.toml", "--resume", "r"][..],
            "cannot be used with '--resume <DIR>'",
        ),
        (&["predict", "run"][..], "<FILES>"),
        (&["--max-memory", "lots", "ops"][..], "not a size"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_convnet"))
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_convnet"))
        .args(["eval", "no-such-run"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failure that is not a usage error"
    );
    let (ok, out, _) = convnet(&[
        "--threads",
        "1",
        "bench",
        "--filter",
        "E.gap",
        "--reps",
        "1",
    ]);
    assert!(ok && out.starts_with("threads: 1"), "{out}");
}

#[test]
fn completions_and_the_manual_page_are_generated() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let (ok, out, err) = convnet(&["completions", shell]);
        assert!(ok, "{shell}: {err}");
        for word in ["train", "summary", "resume", "max-memory"] {
            assert!(out.contains(word), "{shell} completions lack {word}");
        }
    }
    // bash loads it and registers the completion
    let script = std::process::Command::new(env!("CARGO_BIN_EXE_convnet"))
        .args(["completions", "bash"])
        .output()
        .unwrap()
        .stdout;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.bash"), script).unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg("source c.bash && complete -p convnet")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("-F _convnet convnet"),
        "{text}"
    );
    let (ok, man, err) = convnet(&["man"]);
    assert!(ok, "{err}");
    assert!(man.contains(".TH convnet 1"), "{man}");
    for sub in [
        "summary",
        "train",
        "eval",
        "predict",
        "explain",
        "completions",
    ] {
        assert!(man.contains(sub), "the manual page lacks {sub}");
    }
}

/// The progress bar as a terminal of 80 columns shows it: run under `script` (a pseudo
/// terminal set to 80 x 24), every redraw of the bar fits in one line.
#[test]
fn the_progress_bar_fits_an_80_column_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let spec =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sunspots_conv1d.toml");
    let bin = env!("CARGO_BIN_EXE_convnet");
    let command = format!(
        "stty cols 80 rows 24; exec '{bin}' train '{}' --out '{}' --epochs 3",
        spec.display(),
        dir.path().join("run").display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("`script` (util-linux) runs the binary in a pseudo terminal");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // each redraw starts after a carriage return; escape sequences take no columns
    let visible = |s: &str| {
        let mut n = 0;
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // CSI: ESC [ parameters, then a final letter
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                n += 1;
            }
        }
        n
    };
    let bars: Vec<usize> = text
        .split(['\r', '\n'])
        .filter(|l| l.contains("epoch ") && l.contains(" ETA "))
        .map(visible)
        .collect();
    assert!(!bars.is_empty(), "no progress bar drawn:\n{text}");
    assert!(bars.iter().all(|&w| w <= 80), "bar widths {bars:?}");
}
