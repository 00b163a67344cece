//! Upsampling layers: transposed convolution with `same` padding (output = input * stride, the
//! exact adjoint of a `same` convolution), every stride/padding combination giving the size the
//! arithmetic promises, and specs whose sizes cannot reach their target failing before training.

use std::path::Path;

use convnet::nn::{Activation, Conv, ConvKind, Ctx, Layer};
use convnet::ops::{PadMode, Padding};
use convnet::spec::Spec;
use convnet::{Rng, Tensor, no_grad};

fn conv(
    kind: ConvKind,
    c_in: usize,
    c_out: usize,
    k: usize,
    s: usize,
    d: usize,
    p: Padding,
) -> Conv {
    let dims = kind.dims();
    Conv::new(
        kind,
        c_in,
        c_out,
        vec![k; dims],
        vec![s; dims],
        p,
        vec![d; dims],
        1,
        PadMode::Zeros,
        vec![0; dims],
        false,
        Activation::Linear,
        &mut Rng::new((k * 100 + s * 10 + d) as u64),
    )
    .unwrap()
}

fn fwd(l: &dyn Layer, x: &Tensor) -> Tensor {
    no_grad(|| {
        l.forward(
            x,
            &mut Ctx {
                training: false,
                rng: &mut Rng::new(0),
                lengths: None,
            },
        )
    })
    .unwrap()
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    a.to_vec()
        .iter()
        .zip(b.to_vec())
        .map(|(&x, y)| x as f64 * y as f64)
        .sum()
}

#[test]
fn transposed_same_is_input_times_stride_and_the_adjoint_of_a_same_convolution() {
    let mut rng = Rng::new(1);
    let mut checked = 0;
    for (kind, tkind) in [
        (ConvKind::Conv1d, ConvKind::ConvTranspose1d),
        (ConvKind::Conv2d, ConvKind::ConvTranspose2d),
    ] {
        for k in 1..=5 {
            for s in 1..=3 {
                for d in 1..=2 {
                    let t = conv(tkind, 3, 2, k, s, d, Padding::Same);
                    let mut c = conv(kind, 2, 3, k, s, d, Padding::Same);
                    // the same weight: (3 in, 2 out) transposed is (3 out, 2 in) forward
                    c.weight = t.weight.clone();
                    for n in 1..=5 {
                        let dims = kind.dims();
                        let spatial = vec![n; dims];
                        let mut shape = vec![3];
                        shape.extend(&spatial);
                        let info = t.infer(&shape).unwrap();
                        let want: Vec<usize> = spatial.iter().map(|v| v * s).collect();
                        assert_eq!(info.output[1..], want[..], "k {k} s {s} d {d} n {n}");
                        let mut xs = vec![2];
                        xs.extend(&shape);
                        let y = Tensor::randn(&xs, &mut rng).unwrap();
                        let ty = fwd(&t, &y);
                        assert_eq!(ty.shape()[2..], want[..]);
                        // <conv(x), y> == <x, conv_transpose(y)>
                        let x = Tensor::randn(ty.shape(), &mut rng).unwrap();
                        let cx = fwd(&c, &x);
                        assert_eq!(cx.shape(), y.shape(), "k {k} s {s} d {d} n {n}");
                        let (a, b) = (dot(&cx, &y), dot(&x, &ty));
                        assert!(
                            (a - b).abs() <= 1e-4 * (1.0 + a.abs()),
                            "{kind:?} k {k} s {s} d {d} n {n}: {a} vs {b}"
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 2 * 5 * 3 * 2 * 5);
}

fn spec(layers: &str, input: &str) -> convnet::Result<Spec> {
    let text = format!("[model]\ninput = {input}\n{layers}");
    let s = Spec::parse(&text, Path::new("gen.toml"))?;
    s.build_model(&mut Rng::new(0))?;
    Ok(s)
}

fn up(k: usize, s: usize, padding: &str, extra: &str) -> String {
    format!(
        "[[model.layers]]\ntype = \"conv2d_transpose\"\nfilters = 4\nkernel_size = {k}\nstrides = {s}\npadding = {padding}\n{extra}\n"
    )
}

#[test]
fn every_stride_and_padding_gives_the_size_its_arithmetic_promises() {
    // (kernel, stride, padding, output_padding) from 7x7: the size each spec promises
    let mut rng = Rng::new(3);
    for k in 1..=5usize {
        for s in 1..=3usize {
            for (padding, op) in [
                ("\"valid\"".to_string(), 0),
                ("\"same\"".into(), 0),
                ("1".into(), 0),
                ("1".into(), s.saturating_sub(1)),
            ] {
                let extra = if op > 0 {
                    format!("output_padding = {op}")
                } else {
                    String::new()
                };
                let layers = up(k, s, &padding, &extra);
                let want = match padding.as_str() {
                    "\"valid\"" => (7 - 1) * s + k,
                    "\"same\"" => 7 * s,
                    _ => ((7 - 1) * s + k + op).checked_sub(2).unwrap_or(0),
                };
                let m = match spec(&layers, "[2, 7, 7]") {
                    Ok(sp) => sp.build_model(&mut Rng::new(0)).unwrap(),
                    Err(e) => {
                        assert_eq!(want, 0, "{layers}: {e}");
                        continue;
                    }
                };
                assert_eq!(m.output_shape(), &[4, want, want], "{layers}");
                let x = Tensor::randn(&[1, 2, 7, 7], &mut rng).unwrap();
                let y = m
                    .forward(
                        &x,
                        &mut Ctx {
                            training: false,
                            rng: &mut rng,
                            lengths: None,
                        },
                    )
                    .unwrap();
                assert_eq!(y.shape(), &[1, 4, want, want], "{layers}");
            }
        }
    }
}

#[test]
fn a_generator_whose_sizes_cannot_reach_the_target_fails_with_the_arithmetic() {
    // dense -> 7x7 -> 14x14 -> 28x28 works; a 3x3 kernel with padding 0 at stride 2 overshoots
    let head = "[[model.layers]]\ntype = \"dense\"\nunits = 196\n[[model.layers]]\ntype = \"reshape\"\ntarget_shape = [4, 7, 7]\n";
    let good = format!(
        "{head}{}{}",
        up(4, 2, "1", ""),
        up(4, 2, "1", "").replace("filters = 4", "filters = 1")
    );
    let s = spec(&good, "[16]").unwrap();
    assert_eq!(
        s.build_model(&mut Rng::new(0)).unwrap().output_shape(),
        &[1, 28, 28]
    );
    let e = spec(
        &format!("{good}[[model.layers]]\ntype = \"reshape\"\ntarget_shape = [784]\n"),
        "[16]",
    );
    assert!(e.is_ok());
    let bad = format!("{head}{}{}", up(3, 2, "0", ""), up(3, 2, "0", ""));
    let s = spec(
        &format!("{bad}[[model.layers]]\ntype = \"reshape\"\ntarget_shape = [4, 28, 28]\n"),
        "[16]",
    );
    let e = s.unwrap_err().to_string();
    assert!(e.contains("layer 4 (reshape)"), "{e}");
    assert!(e.contains("(4, 31, 31)"), "{e}");
    assert!(
        e.contains("height 15 -> (15 - 1) * 2 - 2 * 0 + 1 * (3 - 1) + 0 + 1 = 31"),
        "{e}"
    );
    // same padding with an output padding of its own is a contradiction
    let e = spec(&up(3, 2, "\"same\"", "output_padding = 1"), "[2, 7, 7]")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("key `output_padding`") && e.contains("chooses"),
        "{e}"
    );
}

mod common;
use common::{GAN, bars, convnet, write_idx};

/// A folder with 8x8 bar images as IDX files.
fn bar_data() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (px, lab) = bars(240, 1);
    write_idx(&d.join("train-images"), 3, &[240, 8, 8], &px);
    write_idx(&d.join("train-labels"), 1, &[240], &lab);
    let (px, lab) = bars(60, 2);
    write_idx(&d.join("test-images"), 3, &[60, 8, 8], &px);
    write_idx(&d.join("test-labels"), 1, &[60], &lab);
    dir
}

const DATA: &str = "[data]\nformat = \"idx\"\ntrain_images = \"train-images\"\ntrain_labels = \"train-labels\"\ntest_images = \"test-images\"\ntest_labels = \"test-labels\"\nvalidation_split = 0.1\n";

const AUTOENCODER: &str = r#"
[model]
input = [1, 8, 8]
[[model.layers]]
type = "conv2d"
filters = 8
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
units = 128
activation = "relu"
[[model.layers]]
type = "reshape"
target_shape = [8, 4, 4]
[[model.layers]]
type = "conv2d_transpose"
filters = 1
kernel_size = 3
strides = 2
padding = "same"
"#;

#[test]
fn autoencoder_trains_and_reports_against_pca() {
    let dir = bar_data();
    let d = dir.path();
    let spec = format!(
        "{AUTOENCODER}{DATA}normalize = \"scale\"\n[train]\ntask = \"autoencoder\"\nloss = \"bce\"\nepochs = 3\nbatch_size = 16\noptimizer = {{ type = \"adam\", lr = 0.01 }}\n"
    );
    std::fs::write(d.join("ae.toml"), &spec).unwrap();
    let (ok, out, err) = convnet(d, &["train", "ae.toml", "--out", "run"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("val_mse"), "{out}");
    assert!(out.contains("reconstruction of 60 test images"), "{out}");
    assert!(out.contains("autoencoder (code of 6 values)"), "{out}");
    assert!(out.contains("PCA, 6 components"), "{out}");
    let png = std::fs::read(d.join("run/reconstructions.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let (ok, _, err) = convnet(d, &["predict", "run", "x.png"]);
    assert!(!ok && err.contains("is an autoencoder run"), "{err}");
    let (ok, out, err) = convnet(d, &["eval", "run", "--data", "val", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["samples"], 24);
    assert_eq!(v["code_size"], 6);
    assert!(v["model_mse"].as_f64().unwrap() < 0.25 && v["pca_mse"].as_f64().unwrap() > 0.0);
    // standardised inputs cannot be the target, and a model that does not end at the input's
    // shape is refused with the shapes that led there
    std::fs::write(
        d.join("std.toml"),
        spec.replace("normalize = \"scale\"", ""),
    )
    .unwrap();
    let (ok, _, err) = convnet(d, &["train", "std.toml", "--out", "r2"]);
    assert!(!ok);
    assert!(err.contains("set normalize = \"scale\""), "{err}");
    let short = spec.replace("padding = \"same\"\n\"#", "padding = 1\n\"#");
    let short = short.replacen(
        "type = \"conv2d_transpose\"\nfilters = 1\nkernel_size = 3\nstrides = 2\npadding = \"same\"",
        "type = \"conv2d_transpose\"\nfilters = 1\nkernel_size = 3\nstrides = 2\npadding = 1",
        1,
    );
    std::fs::write(d.join("short.toml"), short).unwrap();
    let (ok, _, err) = convnet(d, &["train", "short.toml", "--out", "r3"]);
    assert!(!ok);
    assert!(
        err.contains("must output its input's shape (1, 8, 8)") && err.contains("(1, 7, 7)"),
        "{err}"
    );
    assert!(
        err.contains("height 4 -> (4 - 1) * 2 - 2 * 1 + 1 * (3 - 1) + 0 + 1 = 7"),
        "{err}"
    );
}

#[test]
fn gan_trains_writes_sample_grids_and_generates() {
    let dir = bar_data();
    let d = dir.path();
    let spec = format!(
        "{GAN}{DATA}normalize = {{ mean = [0.5], std = [0.5] }}\n[train]\ntask = \"gan\"\nepochs = 2\nbatch_size = 16\noptimizer = {{ type = \"adam\", lr = 0.0002, betas = [0.5, 0.999] }}\n"
    );
    std::fs::write(d.join("gan.toml"), &spec).unwrap();
    let (ok, out, err) = convnet(d, &["summary", "gan.toml"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("[generator]") && out.contains("[discriminator]"),
        "{out}"
    );
    let (ok, out, err) = convnet(d, &["train", "gan.toml", "--out", "run"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("epoch 2/2  discriminator loss"), "{out}");
    for f in [
        "samples_epoch_001.png",
        "samples_epoch_002.png",
        "last.safetensors",
        "discriminator.safetensors",
        "curves.png",
        "metrics.csv",
    ] {
        assert!(d.join("run").join(f).exists(), "{f} missing");
    }
    let csv = std::fs::read_to_string(d.join("run/metrics.csv")).unwrap();
    assert!(
        csv.starts_with("epoch,d_loss,g_loss,d_real,d_fake,seconds"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 3);
    // seeded: the same seed gives the same file, another seed another
    let sample = |out: &str, seed: &str| {
        let (ok, o, e) = convnet(
            d,
            &[
                "generate", "run", "--count", "6", "--cols", "3", "--out", out, "--seed", seed,
            ],
        );
        assert!(ok, "{o}\n{e}");
        std::fs::read(d.join(out)).unwrap()
    };
    let (a, b, c) = (
        sample("a.png", "1"),
        sample("b.png", "1"),
        sample("c.png", "2"),
    );
    assert_eq!(a, b);
    assert_ne!(a, c);
    let (ok, _, err) = convnet(d, &["generate", "run", "--out", "a.png"]);
    assert!(!ok && err.contains("exists"), "{err}");
    let (ok, _, err) = convnet(d, &["eval", "run"]);
    assert!(!ok && err.contains("is a GAN run"), "{err}");
    let (ok, _, err) = convnet(d, &["predict", "run", "a.png"]);
    assert!(!ok && err.contains("convnet generate"), "{err}");
    // the generator must make what the discriminator takes
    let bad = spec.replace(
        "strides = 2\npadding = \"same\"\nactivation = \"tanh\"",
        "strides = 1\npadding = \"same\"\nactivation = \"tanh\"",
    );
    std::fs::write(d.join("bad.toml"), bad).unwrap();
    let (ok, _, err) = convnet(d, &["summary", "bad.toml"]);
    assert!(!ok);
    assert!(
        err.contains("the generator makes (1, 4, 4) samples but the discriminator takes (1, 8, 8)"),
        "{err}"
    );
    // a GAN spec must say task = "gan", and a classifier run is not a generator
    std::fs::write(d.join("notask.toml"), spec.replace("task = \"gan\"\n", "")).unwrap();
    let (ok, _, err) = convnet(d, &["summary", "notask.toml"]);
    assert!(!ok && err.contains("set task = \"gan\""), "{err}");
}

#[test]
fn pca_finds_the_directions_of_largest_variance() {
    use convnet::data::Dataset;
    use convnet::train::autoencoder::fit_pca;
    let mut rng = Rng::new(4);
    let sd = [3.0f32, 0.3, 2.0, 1.0, 0.1, 0.5];
    let n = 4000;
    let mut pixels = Vec::new();
    for _ in 0..n {
        for s in sd {
            pixels.push(1.0 + s * rng.normal());
        }
    }
    let ds = Dataset {
        shape: vec![1, 2, 3],
        pixels,
        labels: vec![0; n],
        ..Default::default()
    };
    let pca = fit_pca(&ds, 3, 1);
    // the axes of sd 3, 2 and 1, in that order, with their sample variances
    for (c, axis) in pca.components.iter().zip([0, 2, 3]) {
        assert!(c[axis].abs() > 0.99, "{c:?} should lie along axis {axis}");
    }
    for (v, s) in pca.variances.iter().zip([3.0f64, 2.0, 1.0]) {
        assert!((v / (s * s) - 1.0).abs() < 0.08, "variance {v} for sd {s}");
    }
    // with every component, reconstruction is exact
    let full = fit_pca(&ds, 6, 1);
    let x = ds.sample(7);
    for (a, b) in x.iter().zip(full.reconstruct(x)) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
}

#[test]
fn kernel_initializers_draw_the_asked_spread() {
    let std_of = |init: &str| -> f64 {
        let s = spec(
            &format!("[[model.layers]]\ntype = \"conv2d\"\nfilters = 64\nkernel_size = 3\nkernel_initializer = {init}\n"),
            "[32, 8, 8]",
        )
        .unwrap();
        let m = s.build_model(&mut Rng::new(2)).unwrap();
        let w = m.named_params()[0].1.to_vec();
        let mean = w.iter().map(|&v| v as f64).sum::<f64>() / w.len() as f64;
        (w.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / w.len() as f64).sqrt()
    };
    let close = |a: f64, b: f64| (a / b - 1.0).abs() < 0.05;
    // 18432 weights, fan_in 288, fan_out 576
    assert!(close(std_of("{ type = \"normal\", stddev = 0.02 }"), 0.02));
    assert!(close(std_of("\"he_normal\""), (2.0f64 / 288.0).sqrt()));
    assert!(close(std_of("\"he_uniform\""), (2.0f64 / 288.0).sqrt()));
    assert!(close(std_of("\"glorot_normal\""), (2.0f64 / 864.0).sqrt()));
    // PyTorch's default: uniform in +-1/sqrt(fan_in), std 1/sqrt(3 fan_in)
    assert!(close(std_of("\"default\""), 1.0 / (3.0f64 * 288.0).sqrt()));
    let e = spec(
        "[[model.layers]]\ntype = \"dense\"\nunits = 3\nkernel_initializer = \"orthogonal\"\n",
        "[4]",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("key `kernel_initializer`") && e.contains("he_normal"),
        "{e}"
    );
}
