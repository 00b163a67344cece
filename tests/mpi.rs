//! Data-parallel training on the ranks of an MPI job: `mpirun -np N convnet train` gives the
//! weights of a run on one process (within 1e-5 relative), the same bits every time with as
//! many ranks, resumes after a rank is killed to end as an uninterrupted run, and refuses
//! what it cannot do with a message.
//!
//! The binary with MPI is built here (`cargo build --release --features mpi`, into
//! target/mpi) and run under `mpirun --oversubscribe` (as root too). Without Open MPI
//! (`mpirun` and `libopenmpi-dev`, which .ci/run installs) these tests say so and pass; with
//! `CI` set they fail instead.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{bars, write_idx};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Skip (or, under CI, fail) for want of MPI.
fn missing(what: &str) -> Option<PathBuf> {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run the MPI tests: {what}"
    );
    eprintln!("skipped: {what}");
    None
}

/// The convnet binary built with `--features mpi`, or `None` where MPI is missing.
fn mpi_binary() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        if Command::new("mpirun").arg("--version").output().is_err() {
            return missing("no mpirun (Debian: openmpi-bin)");
        }
        let target = root().join("target/mpi");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(root())
            .args([
                "build",
                "--release",
                "--features",
                "mpi",
                "--bin",
                "convnet",
            ])
            .arg("--target-dir")
            .arg(&target)
            .output()
            .expect("cargo runs");
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(15).collect();
            return missing(&format!(
                "the build with --features mpi failed (Debian: libopenmpi-dev, libclang-dev):\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        Some(target.join("release/convnet"))
    })
    .clone()
}

/// `mpirun -np n BIN train ARGS` in `dir`, one thread per rank.
fn mpirun(bin: &Path, n: usize, dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.current_dir(dir)
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "-np",
            &n.to_string(),
        ])
        .arg(bin)
        .arg("train")
        .args(args)
        .args(["--threads", "1"])
        .env("CONVNET_MICRO", "avx2");
    c
}

fn run(mut c: Command) -> Output {
    c.output().expect("mpirun runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A conv + batch norm + pooling classifier of 8x8 bar images with flips and shifts; no
/// dropout (each rank draws its own masks, as DDP's ranks do).
const SPEC: &str = r#"
[model]
input = [1, 8, 8]
[[model.layers]]
type = "conv2d"
filters = 6
kernel_size = 3
padding = "same"
use_bias = false
[[model.layers]]
type = "batch_norm"
[[model.layers]]
type = "activation"
activation = "relu"
[[model.layers]]
type = "max_pool2d"
pool_size = 2
[[model.layers]]
type = "flatten"
[[model.layers]]
type = "dense"
units = 3
[data]
format = "idx"
train_images = "train-images"
train_labels = "train-labels"
validation_split = 0.2
[data.augment]
hflip = 0.5
translate = 0.1
[train]
seed = 3
optimizer = { type = "adam", lr = 0.01 }
"#;

/// Bar images and `spec.toml` (SPEC with `extra` in `[train]`, batches of 24 unless it
/// says otherwise) in a new folder.
fn setup(extra: &str) -> tempfile::TempDir {
    let batch = if extra.contains("batch_size") {
        ""
    } else {
        "batch_size = 24\n"
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (px, lab) = bars(300, 1);
    write_idx(&d.join("train-images"), 3, &[300, 8, 8], &px);
    write_idx(&d.join("train-labels"), 1, &[300], &lab);
    std::fs::write(d.join("spec.toml"), format!("{SPEC}{batch}{extra}\n")).unwrap();
    dir
}

type Weights = std::collections::BTreeMap<String, convnet::Tensor>;

fn weights(run: &Path) -> Weights {
    convnet::io::load(&run.join("last.safetensors")).unwrap().0
}

/// The largest difference of two runs' weights, relative to each tensor's largest value.
fn rel_diff(a: &Weights, b: &Weights) -> f64 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter()
        .map(|(k, x)| {
            let (x, y) = (x.to_vec(), b[k].to_vec());
            let scale = x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
            let d = x
                .iter()
                .zip(&y)
                .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            (d / scale) as f64
        })
        .fold(0.0, f64::max)
}

fn bits(w: &Weights) -> Vec<u32> {
    w.values()
        .flat_map(|t| t.to_vec())
        .map(f32::to_bits)
        .collect()
}

/// One process, then 1, 2 and 4 ranks, with batch norm's statistics summed over the ranks.
#[test]
fn ranks_train_the_weights_of_one_process() {
    let Some(bin) = mpi_binary() else { return };
    let dir = setup("epochs = 3\nsync_batch_norm = true");
    let d = dir.path();
    let solo = Command::new(&bin)
        .current_dir(d)
        .args(["train", "spec.toml", "--out", "solo", "--threads", "1"])
        .env("CONVNET_MICRO", "avx2")
        .output()
        .unwrap();
    assert!(solo.status.success(), "{}", text(&solo));
    let one = weights(&d.join("solo"));
    for n in [1, 2, 4] {
        let out = format!("np{n}");
        let o = run(mpirun(&bin, n, d, &["spec.toml", "--out", &out]));
        assert!(o.status.success(), "{n} ranks: {}", text(&o));
        let w = weights(&d.join(&out));
        let diff = rel_diff(&one, &w);
        eprintln!("{n} rank(s): weights within {diff:.2e} of one process's");
        assert!(
            diff < 1e-5,
            "{n} ranks: weights {diff:e} from one process's"
        );
        if n == 1 {
            assert_eq!(bits(&one), bits(&w), "1 rank differs from one process");
        }
        // the loss and accuracy of each epoch, summed over the ranks
        let m = |r: &str| std::fs::read_to_string(d.join(r).join("metrics.csv")).unwrap();
        let rows = |s: String| -> Vec<Vec<f64>> {
            s.lines()
                .skip(1)
                .map(|l| l.split(',').take(5).map(|v| v.parse().unwrap()).collect())
                .collect()
        };
        for (a, b) in rows(m("solo")).iter().zip(rows(m(&out))) {
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x - y).abs() <= 1e-4 * x.abs().max(1.0),
                    "{n} ranks: {a:?} vs {b:?}"
                );
            }
        }
    }
    // two ranks again: the same bits
    let o = run(mpirun(&bin, 2, d, &["spec.toml", "--out", "np2-again"]));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        bits(&weights(&d.join("np2"))),
        bits(&weights(&d.join("np2-again"))),
        "two runs on 2 ranks differ"
    );
    // only rank 0 speaks and writes
    assert_eq!(
        text(&o).matches("training spec.toml into").count(),
        1,
        "{}",
        text(&o)
    );
    // gradients summed in buckets while backward runs (the default across machines): the
    // same sums (two ranks add each value in one order), so the same bits
    let mut c = mpirun(&bin, 2, d, &["spec.toml", "--out", "np2-buckets"]);
    c.env("CONVNET_OVERLAP", "1");
    let o = run(c);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("summed in buckets"), "{}", text(&o));
    assert_eq!(
        bits(&weights(&d.join("np2"))),
        bits(&weights(&d.join("np2-buckets"))),
        "buckets changed the sums"
    );
}

/// Per-rank batch norm statistics (the default) train too, and the ranks keep one model:
/// the running statistics are averaged after every step.
#[test]
fn per_rank_batch_norm_statistics_train_one_model() {
    let Some(bin) = mpi_binary() else { return };
    let dir = setup("epochs = 2");
    let d = dir.path();
    let o = run(mpirun(&bin, 2, d, &["spec.toml", "--out", "r"]));
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("data-parallel: rank 0 of 2"), "{t}");
    assert!(t.contains("12 samples of each batch of 24"), "{t}");
    // evaluation of the saved weights works as for any run
    let e = Command::new(&bin)
        .current_dir(d)
        .args(["eval", "r", "--data", "val"])
        .output()
        .unwrap();
    assert!(e.status.success(), "{}", text(&e));
}

/// How a run is cut short.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// SIGKILL to one rank: the job ends, the last epoch's checkpoint is left.
    KillRank,
    /// SIGINT to mpirun (Ctrl-C), which passes it on: every rank stops after the same step
    /// and rank 0 saves a checkpoint there.
    CtrlC,
}

/// Train `out` on 2 ranks and cut it short once its first checkpoint exists; whether it was
/// cut before its training finished, and what it said.
fn cut_short(bin: &Path, d: &Path, out: &str, how: Cut) -> (bool, String) {
    let mut job = mpirun(bin, 2, d, &["spec.toml", "--out", out]);
    let child = job
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let ckpt = d.join(out).join("checkpoint.safetensors");
    while !ckpt.exists() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(ckpt.exists(), "no checkpoint within 60 s");
    // the ranks' command lines (not mpirun's, which holds the same words after its own)
    let pattern = format!("^{} train spec.toml --out {out}", bin.display());
    match how {
        Cut::KillRank => {
            let pids = Command::new("pgrep")
                .args(["-f", &pattern])
                .output()
                .unwrap();
            let pids = String::from_utf8_lossy(&pids.stdout).to_string();
            let victim = pids.lines().last().expect("the ranks run");
            Command::new("kill").args(["-9", victim]).status().unwrap();
        }
        Cut::CtrlC => {
            let id = child.id().to_string();
            Command::new("kill").args(["-INT", &id]).status().unwrap();
        }
    }
    let o = child.wait_with_output().unwrap();
    // mpirun is back once it has sent its signals; a rank may take a moment to end
    let gone = Instant::now();
    while gone.elapsed() < Duration::from_secs(30) {
        let left = Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .unwrap();
        if left.stdout.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // cut while training, or only after it finished (then nothing is left to resume)
    let info = std::fs::read_to_string(d.join(out).join("run.json")).unwrap();
    (!info.contains("\"finished\": true"), text(&o))
}

/// A rank killed mid-run takes the job down, and Ctrl-C on mpirun stops every rank with a
/// checkpoint; `--resume` on as many ranks continues from the checkpoint and ends with the
/// weights of an uninterrupted run.
#[test]
fn a_run_cut_short_on_ranks_resumes_to_the_uninterrupted_weights() {
    let Some(bin) = mpi_binary() else { return };
    // long enough (about 2 s) for a signal through mpirun to land mid-run
    let dir = setup("epochs = 200");
    let d = dir.path();
    let o = run(mpirun(&bin, 2, d, &["spec.toml", "--out", "full"]));
    assert!(o.status.success(), "{}", text(&o));
    for (how, out) in [(Cut::KillRank, "killed"), (Cut::CtrlC, "stopped")] {
        let (cut, said) = cut_short(&bin, d, out, how);
        if !cut {
            // the job finished before the signal landed: nothing to resume
            eprintln!("{how:?}: the job finished first");
            continue;
        }
        if let Cut::CtrlC = how {
            assert!(said.contains("every rank stopped after epoch"), "{said}");
        }
        let o = run(mpirun(&bin, 2, d, &["--resume", out]));
        let t = text(&o);
        assert!(o.status.success(), "{how:?}: {t}");
        let at = t.lines().find(|l| l.contains("resuming at epoch"));
        eprintln!("{how:?}: {}", at.unwrap_or("no resume line"));
        assert!(at.is_some(), "{t}");
        assert_eq!(
            bits(&weights(&d.join("full"))),
            bits(&weights(&d.join(out))),
            "{how:?}: the resumed run differs from the uninterrupted one"
        );
    }
}

#[test]
fn what_ranks_cannot_do_is_refused_with_a_message() {
    let Some(bin) = mpi_binary() else { return };
    // a batch too small to share: 240 samples in batches of 24 leave none smaller, so make
    // the batch smaller than the ranks
    let dir = setup("epochs = 1\nbatch_size = 3");
    let d = dir.path();
    let o = run(mpirun(&bin, 4, d, &["spec.toml", "--out", "small"]));
    assert!(!o.status.success());
    assert!(
        text(&o).contains("a batch of 3 samples cannot be shared by 4 ranks"),
        "{}",
        text(&o)
    );
    // the binary without MPI, started as ranks, would train the run twice: refused
    let plain = env!("CARGO_BIN_EXE_convnet");
    let o = run(mpirun(
        Path::new(plain),
        2,
        d,
        &["spec.toml", "--out", "plain"],
    ));
    assert!(!o.status.success());
    assert!(
        text(&o)
            .contains("built without MPI: build it with `cargo build --release --features mpi`"),
        "{}",
        text(&o)
    );
}
