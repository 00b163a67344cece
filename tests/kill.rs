//! Crash safety: a real training killed (SIGKILL) at many moments, checkpoint writes
//! included, then resumed, ends with the weights of an uninterrupted run, bit for bit; so does
//! one stopped by SIGINT. A run killed before its first checkpoint is started again with
//! `--overwrite`, which accepts the folder it left.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{convnet, setup};

/// How many kill moments: `CONVNET_KILL_MOMENTS`, default 50.
fn moments() -> usize {
    std::env::var("CONVNET_KILL_MOMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

/// Epochs of every run here: long enough for many moments (15 steps and a checkpoint each).
const EPOCHS: &str = "10";

/// The binary in `d` with `args`, its output discarded.
fn quiet(d: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_convnet"));
    c.current_dir(d)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// A new training of `bars.toml` into `out`, as every run here trains.
fn train_args(out: &str) -> [&str; 8] {
    [
        "train",
        "bars.toml",
        "--out",
        out,
        "--threads",
        "1",
        "--epochs",
        EPOCHS,
    ]
}

fn start(d: &Path, out: &str) -> Child {
    quiet(d, &train_args(out)).spawn().unwrap()
}

/// Bring the run in `out` to its end after an interruption: resume from its checkpoint, or
/// start again when it has none.
fn finish(d: &Path, out: &str) -> &'static str {
    let run = d.join(out);
    let checkpoint = ["checkpoint.safetensors", "checkpoint.prev.safetensors"]
        .iter()
        .any(|f| run.join(f).exists());
    let finished = std::fs::read_to_string(run.join("run.json"))
        .is_ok_and(|t| t.contains("\"finished\": true"));
    if finished {
        return "finished before the kill";
    }
    let (how, args): (&str, Vec<&str>) = if checkpoint {
        ("resumed", vec!["train", "--resume", out, "--threads", "1"])
    } else if run.exists() && std::fs::read_dir(&run).unwrap().next().is_some() {
        let args = [
            "train",
            "bars.toml",
            "--out",
            out,
            "--overwrite",
            "--threads",
            "1",
            "--epochs",
            EPOCHS,
        ];
        ("restarted", args.to_vec())
    } else {
        (
            "started",
            vec![
                "train",
                "bars.toml",
                "--out",
                out,
                "--threads",
                "1",
                "--epochs",
                EPOCHS,
            ],
        )
    };
    let (ok, stdout, err) = convnet(d, &args);
    assert!(ok, "{out} ({how}): {stdout}{err}");
    how
}

/// `out` ends as `reference` did; `lock_ok`: a stale lock may remain (a run killed after its
/// last write, before it removed the lock; the next training takes it over).
fn same_as(d: &Path, reference: &str, out: &str, lock_ok: bool) {
    for f in ["last.safetensors", "best.safetensors"] {
        let a = std::fs::read(d.join(reference).join(f)).unwrap();
        let b = std::fs::read(d.join(out).join(f)).unwrap_or_default();
        assert!(a == b, "{out}/{f} differs from the uninterrupted run's");
    }
    let strip = |s: String| {
        s.lines()
            .map(|l| l.split(',').take(5).collect::<Vec<_>>().join(","))
            .collect::<Vec<_>>()
    };
    let m = |r: &str| strip(std::fs::read_to_string(d.join(r).join("metrics.csv")).unwrap());
    assert_eq!(m(reference), m(out), "{out}/metrics.csv");
    let leftovers: Vec<_> = std::fs::read_dir(d.join(out))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") || (n == "train.lock" && !lock_ok))
        .collect();
    assert!(leftovers.is_empty(), "{out}: {leftovers:?} left behind");
}

#[test]
fn killed_at_any_moment_a_run_resumes_to_the_uninterrupted_weights() {
    let (dir, _) = setup("");
    let d = dir.path();
    // the run's length from start to exit: the fastest of three
    let mut total = Duration::MAX;
    for r in 0..3 {
        let t0 = Instant::now();
        assert!(
            start(d, if r == 0 { "full" } else { "again" })
                .wait()
                .unwrap()
                .success()
        );
        total = total.min(t0.elapsed());
        std::fs::remove_dir_all(d.join("again")).ok();
    }
    let n = moments();
    let mut how = std::collections::BTreeMap::new();
    for k in 0..n {
        let out = format!("k{k}");
        // moments spread over the whole run, startup and the last checkpoint included
        let at = total.mul_f64((k as f64 + 0.5) / n as f64);
        let mut child = start(d, &out);
        std::thread::sleep(at);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // every fifth run is killed a second time, while it resumes
        if k % 5 == 4 && d.join(&out).join("checkpoint.safetensors").exists() {
            let mut again = quiet(d, &["train", "--resume", &out, "--threads", "1"])
                .spawn()
                .unwrap();
            std::thread::sleep(total.mul_f64(0.3));
            let _ = again.kill();
            let _ = again.wait();
        }
        let done = finish(d, &out);
        *how.entry(done).or_insert(0) += 1;
        same_as(d, "full", &out, done == "finished before the kill");
        if done == "finished before the kill" {
            // the machine runs faster than measured (the other tests of this file ran beside
            // the measurement): aim the later moments earlier
            total = total.mul_f64(0.85);
        }
    }
    eprintln!(
        "{n} kills in a run of {:.2} s: {how:?}",
        total.as_secs_f64()
    );
    let count = |k: &str| how.get(k).copied().unwrap_or(0);
    // the moments must have reached the run: most kills land after a checkpoint
    assert!(
        count("resumed") >= n / 3,
        "{how:?}: too few kills after a checkpoint"
    );
}

#[test]
fn sigint_stops_with_a_checkpoint_that_resumes_to_the_same_weights() {
    let (dir, _) = setup("");
    let d = dir.path();
    assert!(start(d, "full").wait().unwrap().success());
    let mut child = start(d, "int");
    // once the first epoch's checkpoint is there, the run is mid-way
    let t0 = Instant::now();
    while !d.join("int/checkpoint.safetensors").exists() && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(2));
    }
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let code = child.wait().unwrap().code();
    let info = std::fs::read_to_string(d.join("int/run.json")).unwrap();
    if !info.contains("\"finished\": true") {
        assert_eq!(code, Some(130), "stopped by Ctrl-C with a checkpoint");
        // stopped before its end (a fast machine may finish first)
        let (ok, out, err) = convnet(d, &["train", "--resume", "int", "--threads", "1"]);
        assert!(ok, "{out}{err}");
        assert!(err.contains("resuming at epoch"), "{err}");
    }
    same_as(d, "full", "int", false);
}

#[test]
fn a_crash_in_the_middle_of_any_write_leaves_a_run_that_resumes_to_the_same_weights() {
    let (dir, _) = setup("");
    let d = dir.path();
    assert!(start(d, "full").wait().unwrap().success());
    let points = [
        ("spec.toml", 1),
        ("run.json", 1),
        ("run.json", 4),
        ("checkpoint.safetensors", 1),
        ("checkpoint.safetensors", 2),
        ("checkpoint.safetensors", 7),
        ("last.safetensors", 1),
        ("last.safetensors", 5),
        ("best.safetensors", 2),
        ("metrics.csv", 3),
        ("curves.png", 2),
        ("curves.svg", 9),
    ];
    for (i, (file, n)) in points.iter().enumerate() {
        let out = format!("c{i}");
        let status = quiet(d, &train_args(&out))
            .env("CONVNET_CRASH_IN_WRITE", format!("{file}:{n}"))
            .status()
            .unwrap();
        assert!(!status.success(), "{file}:{n} did not crash");
        // the file being written is intact (its previous version) or absent, never half
        let target = d.join(&out).join(file);
        if file.ends_with(".safetensors") && target.exists() {
            assert!(
                convnet::io::load(&target).is_ok(),
                "{file}:{n} left damaged"
            );
        }
        finish(d, &out);
        same_as(d, "full", &out, false);
    }
}
