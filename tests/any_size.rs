//! Models that take any input size: symbolic shapes in the summary, a fixed-size model refusing
//! another size with the layer that fixes it, training on images of several sizes (one size per
//! batch), and evaluating and predicting at sizes never trained on.

use std::path::Path;

use convnet::Rng;
use convnet::explain::{summarize, symbolic_size};
use convnet::nn::Ctx;
use convnet::spec::Spec;
use convnet::{Tensor, no_grad};

mod common;
use common::{bars, convnet, write_idx};

const FCN: &str = r#"
[[model.layers]]
type = "conv2d"
filters = 8
kernel_size = 3
padding = "same"
activation = "relu"
[[model.layers]]
type = "max_pool2d"
pool_size = 2
[[model.layers]]
type = "conv2d"
filters = 3
kernel_size = 1
[[model.layers]]
type = "global_avg_pool"
"#;

const FIXED: &str = r#"
[[model.layers]]
type = "conv2d"
filters = 4
kernel_size = 3
activation = "relu"
[[model.layers]]
type = "flatten"
[[model.layers]]
type = "dense"
units = 3
"#;

fn spec(input: &str, layers: &str) -> convnet::Result<Spec> {
    let s = Spec::parse(
        &format!("[model]\ninput = {input}\n{layers}"),
        Path::new("m.toml"),
    )?;
    s.build_model(&mut Rng::new(0))?;
    Ok(s)
}

#[test]
fn symbolic_sizes() {
    assert_eq!(symbolic_size("H", 64, 16, 4.0), "H/4");
    assert_eq!(symbolic_size("W", 64, 128, 0.5), "2W");
    assert_eq!(symbolic_size("L", 64, 62, 1.0), "L - 2");
    assert_eq!(symbolic_size("H", 64, 31, 2.0), "H/2 - 1");
    assert_eq!(symbolic_size("H", 64, 20, 3.0), "~H/3");
    let s = spec("[1, \"any\", \"any\"]", FCN).unwrap();
    let m = s.build_model(&mut Rng::new(0)).unwrap();
    let sum = summarize(&m).unwrap();
    let shapes: Vec<String> = sum.layers.iter().map(|l| sum.shape_of(l)).collect();
    assert_eq!(
        shapes,
        ["(8, H, W)", "(8, H/2, W/2)", "(3, H/2, W/2)", "(3)"]
    );
    assert!(
        sum.size_line().starts_with("size-independent"),
        "{}",
        sum.size_line()
    );
    let table = sum.to_table();
    assert!(table.contains("(1, H, W)"), "{table}");
}

#[test]
fn a_fixed_size_model_refuses_another_size_naming_the_layer() {
    let s = spec("[1, 8, 8]", FIXED).unwrap();
    let m = s.build_model(&mut Rng::new(0)).unwrap();
    let x = Tensor::zeros(&[2, 1, 12, 12]).unwrap();
    let e = no_grad(|| {
        m.forward(
            &x,
            &mut Ctx {
                training: false,
                rng: &mut Rng::new(0),
                lengths: None,
            },
        )
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("(1, 8, 8)") && e.contains("(1, 12, 12)"), "{e}");
    assert!(e.contains("layers.1 (flatten) fixes the input size"), "{e}");
    // an open size with a flatten is refused when the spec is read
    let e = spec("[1, \"any\", \"any\"]", FIXED)
        .unwrap_err()
        .to_string();
    assert!(e.contains("layers.1 (flatten) fixes it"), "{e}");
    // the open model takes other sizes; the same layers with a fixed input say how to open it
    let open = spec("[1, \"any\", \"any\"]", FCN)
        .unwrap()
        .build_model(&mut Rng::new(0))
        .unwrap();
    let fixed = spec("[1, 8, 8]", FCN)
        .unwrap()
        .build_model(&mut Rng::new(0))
        .unwrap();
    let mut ctx = Ctx {
        training: false,
        rng: &mut Rng::new(0),
        lengths: None,
    };
    for (h, w) in [(8, 8), (13, 20), (2, 2)] {
        let x = Tensor::zeros(&[1, 1, h, w]).unwrap();
        assert_eq!(
            no_grad(|| open.forward(&x, &mut ctx)).unwrap().shape(),
            &[1, 3]
        );
    }
    let e = no_grad(|| fixed.forward(&Tensor::zeros(&[1, 1, 9, 9]).unwrap(), &mut ctx))
        .unwrap_err()
        .to_string();
    assert!(e.contains("declare the input's size \"any\""), "{e}");
}

/// An 8x8 bar image scaled to `s x s` (nearest), as a PNG.
fn png(path: &Path, img: &[u8], s: usize) {
    let mut buf = image::GrayImage::new(s as u32, s as u32);
    for y in 0..s {
        for x in 0..s {
            buf.put_pixel(
                x as u32,
                y as u32,
                image::Luma([img[(y * 8 / s) * 8 + x * 8 / s]]),
            );
        }
    }
    buf.save(path).unwrap();
}

#[test]
fn images_of_several_sizes_train_evaluate_and_predict() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (px, lab) = bars(150, 3);
    for (i, &l) in lab.iter().enumerate() {
        let class = d
            .join("train")
            .join(["horizontal", "vertical", "diagonal"][l as usize]);
        std::fs::create_dir_all(&class).unwrap();
        png(
            &class.join(format!("{i}.png")),
            &px[i * 64..(i + 1) * 64],
            [8, 12, 16][i % 3],
        );
    }
    let spec = format!(
        "[model]\ninput = [1, \"any\", \"any\"]\n{FCN}\n[data]\nformat = \"folder\"\ntrain = \"train\"\nvalidation_split = 0.2\n[train]\nepochs = 12\nbatch_size = 8\noptimizer = {{ type = \"adam\", lr = 0.02 }}\n"
    );
    std::fs::write(d.join("fcn.toml"), spec).unwrap();
    let (ok, out, err) = convnet(d, &["train", "fcn.toml", "--out", "run"]);
    assert!(ok, "{out}\n{err}");
    // validation over all three sizes
    let last = out
        .lines()
        .filter(|l| l.starts_with("epoch 12/12"))
        .next()
        .unwrap();
    let acc: f64 = last
        .split("val_acc ")
        .nth(1)
        .and_then(|v| v.split('%').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(acc >= 80.0, "bars at three sizes: {acc}%\n{out}");
    // augmentation works on each image at its own size
    let augmented = std::fs::read_to_string(d.join("fcn.toml"))
        .unwrap()
        .replace(
            "[train]",
            "[data.augment]\nhflip = 0.5\nvflip = 0.5\nrotation = 10\ntranslate = 0.1\n[train]",
        );
    std::fs::write(d.join("aug.toml"), augmented).unwrap();
    let (ok, out, err) = convnet(d, &["train", "aug.toml", "--out", "aug", "--epochs", "2"]);
    assert!(ok, "{out}\n{err}");
    // a size never trained on, at its own size, and a whole folder resized to 24x24
    let big = d.join("big.png");
    let (px, lab) = bars(1, 9);
    png(&big, &px, 20);
    let (ok, out, err) = convnet(d, &["predict", "run", &big.display().to_string()]);
    assert!(ok, "{err}");
    let want = ["horizontal", "vertical", "diagonal"][lab[0] as usize];
    assert!(
        out.lines().nth(1).is_some_and(|l| l.ends_with(want)),
        "{want}: {out}"
    );
    let (ok, out, err) = convnet(d, &["eval", "run", "--data", "val", "--size", "24"]);
    assert!(ok, "{err}");
    assert!(out.contains("30 samples of `val`"), "{out}");
    assert!(d.join("run/confusion_val_24x24.png").exists());
}

#[test]
fn eval_size_on_a_fixed_model_names_the_layer_and_both_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (px, lab) = bars(60, 1);
    write_idx(&d.join("ti"), 3, &[60, 8, 8], &px);
    write_idx(&d.join("tl"), 1, &[60], &lab);
    let spec = format!(
        "[model]\ninput = [1, 8, 8]\n{FIXED}\n[data]\nformat = \"idx\"\ntrain_images = \"ti\"\ntrain_labels = \"tl\"\ntest_images = \"ti\"\ntest_labels = \"tl\"\n[train]\nepochs = 1\n"
    );
    std::fs::write(d.join("f.toml"), spec).unwrap();
    let (ok, _, err) = convnet(d, &["train", "f.toml", "--out", "run"]);
    assert!(ok, "{err}");
    let (ok, _, err) = convnet(d, &["eval", "run", "--size", "12"]);
    assert!(!ok);
    assert!(
        err.contains("(1, 8, 8), got (1, 12, 12)")
            && err.contains("layers.1 (flatten) fixes the input size"),
        "{err}"
    );
    let (ok, _, err) = convnet(d, &["eval", "run", "--size", "0"]);
    assert!(!ok && err.contains("--size must be positive"), "{err}");
    // a classifier run is not a generator
    let (ok, _, err) = convnet(d, &["generate", "run", "--out", "g.png"]);
    assert!(!ok && err.contains("is not a GAN run"), "{err}");
    let (ok, _, err) = convnet(d, &["generate", "run", "--count", "5000"]);
    assert!(!ok && err.contains("at most 4096"), "{err}");
    let (ok, _, err) = convnet(d, &["generate", "run", "--count", "0"]);
    assert!(
        !ok && err.contains("--count and --cols must be at least 1"),
        "{err}"
    );
}
