//! The weights a run ends with are a function of its spec and seed alone: a change to the
//! training code that is not meant to change results (a refactor of the loop, the run
//! directory, the distributed driver) must give the same weights, bit for bit, as the code
//! before it. Each case trains a small run of one kind (classifier on the compiled plan and
//! eagerly, forecaster, autoencoder, GAN) and compares every tensor it saved with weights
//! saved by an earlier version (tests/fixtures/spine/).
//!
//! The fixtures were written on an x86-64 CPU with AVX2 and FMA, with the AVX2 kernels
//! (`CONVNET_MICRO=avx2`, which these runs also select), so any such CPU gives the same bits.
//! `CONVNET_BLESS=1 cargo test --release --test spine` rewrites them: only for a change
//! that is meant to change results, and say so in its commit.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{GAN, bars, setup, write_idx};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spine")
}

fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `convnet train` in `dir` with the AVX2 kernels and 2 threads (`extra_env` added).
fn train(dir: &Path, args: &[&str], extra_env: &[(&str, &str)]) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_convnet"));
    c.current_dir(dir)
        .arg("train")
        .args(args)
        .env("CONVNET_MICRO", "avx2")
        .env("RAYON_NUM_THREADS", "2");
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "convnet train {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compare `files` of the run `run` with the fixtures `<case>_<file>` (or write them).
fn same_weights(case: &str, run: &Path, files: &[&str]) {
    for f in files {
        let fixture = fixtures().join(format!("{case}_{f}"));
        if std::env::var_os("CONVNET_BLESS").is_some() {
            std::fs::create_dir_all(fixtures()).unwrap();
            std::fs::copy(run.join(f), &fixture).unwrap();
            continue;
        }
        let (got, _) = convnet::io::load(&run.join(f)).unwrap();
        let (want, _) = convnet::io::load(&fixture)
            .unwrap_or_else(|e| panic!("{case}: {e} (CONVNET_BLESS=1 writes the fixtures)"));
        let names = |m: &std::collections::BTreeMap<String, convnet::Tensor>| {
            m.keys().cloned().collect::<Vec<_>>()
        };
        assert_eq!(names(&got), names(&want), "{case} {f}: tensor names");
        for (name, w) in &want {
            let g = &got[name];
            assert_eq!(g.shape(), w.shape(), "{case} {f} {name}: shape");
            let (gv, wv) = (g.to_vec(), w.to_vec());
            let differ = gv
                .iter()
                .zip(&wv)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(
                differ,
                0,
                "{case} {f} {name}: {differ} of {} values differ from the fixture",
                wv.len()
            );
        }
    }
}

#[test]
fn a_classifier_ends_with_the_weights_of_earlier_versions() {
    if !avx2() {
        eprintln!("skipped: the fixtures hold AVX2 + FMA results");
        return;
    }
    let extra = "ema = { decay = 0.9 }\nschedule = { type = \"one_cycle\", max_lr = 0.02 }\n";
    let (dir, spec) = setup(extra);
    let d = dir.path();
    let s = spec.to_str().unwrap();
    train(d, &[s, "--out", "plan"], &[]);
    same_weights(
        "classifier",
        &d.join("plan"),
        &["best.safetensors", "last.safetensors", "ema.safetensors"],
    );
    train(d, &[s, "--out", "eager"], &[("CONVNET_EAGER", "1")]);
    same_weights("classifier_eager", &d.join("eager"), &["last.safetensors"]);
}

#[test]
fn a_forecaster_ends_with_the_weights_of_earlier_versions() {
    if !avx2() {
        eprintln!("skipped: the fixtures hold AVX2 + FMA results");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/airline_conv1d.toml");
    let out = dir.path().join("run");
    train(
        dir.path(),
        &[
            spec.to_str().unwrap(),
            "--epochs",
            "4",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    same_weights(
        "forecaster",
        &out,
        &["best.safetensors", "last.safetensors"],
    );
}

const AUTOENCODER: &str = r#"
[model]
input = [1, 8, 8]
[[model.layers]]
type = "conv2d"
filters = 4
kernel_size = 3
strides = 2
padding = "same"
activation = "relu"
[[model.layers]]
type = "flatten"
[[model.layers]]
type = "dense"
units = 6
[[model.layers]]
type = "dense"
units = 64
activation = "relu"
[[model.layers]]
type = "reshape"
target_shape = [4, 4, 4]
[[model.layers]]
type = "conv2d_transpose"
filters = 1
kernel_size = 3
strides = 2
padding = "same"
[train]
task = "autoencoder"
loss = "bce"
epochs = 2
batch_size = 16
seed = 3
optimizer = { type = "adam", lr = 0.01 }
"#;

/// The generator and discriminator of tests/generators.rs, and how they train here.
const GAN_TRAIN: &str = r#"
[train]
task = "gan"
epochs = 2
batch_size = 16
seed = 4
label_smoothing = 0.1
optimizer = { type = "adam", lr = 0.0002, betas = [0.5, 0.999] }
"#;

/// Bar images in `d`, and `spec` followed by their `[data]` table (`normalize` as given).
fn image_run(d: &Path, spec: &str, normalize: &str) -> PathBuf {
    let (px, lab) = bars(160, 7);
    write_idx(&d.join("train-images"), 3, &[160, 8, 8], &px);
    write_idx(&d.join("train-labels"), 1, &[160], &lab);
    let data = format!(
        "[data]\nformat = \"idx\"\ntrain_images = \"train-images\"\ntrain_labels = \"train-labels\"\nvalidation_split = 0.1\nnormalize = {normalize}\n"
    );
    let p = d.join("spec.toml");
    std::fs::write(&p, format!("{spec}\n{data}")).unwrap();
    p
}

#[test]
fn an_autoencoder_and_a_gan_end_with_the_weights_of_earlier_versions() {
    if !avx2() {
        eprintln!("skipped: the fixtures hold AVX2 + FMA results");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ae = d.join("ae");
    std::fs::create_dir(&ae).unwrap();
    let p = image_run(&ae, AUTOENCODER, "\"scale\"");
    train(&ae, &[p.to_str().unwrap(), "--out", "run"], &[]);
    same_weights("autoencoder", &ae.join("run"), &["last.safetensors"]);
    let gan = d.join("gan");
    std::fs::create_dir(&gan).unwrap();
    let p = image_run(
        &gan,
        &format!("{GAN}{GAN_TRAIN}"),
        "{ mean = [0.5], std = [0.5] }",
    );
    train(&gan, &[p.to_str().unwrap(), "--out", "run"], &[]);
    same_weights(
        "gan",
        &gan.join("run"),
        &["last.safetensors", "discriminator.safetensors"],
    );
}
