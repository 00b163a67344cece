//! Layers and models: shape inference agrees with the forward pass for random layer settings,
//! parameter names follow PyTorch's state dict, and state dicts round-trip through safetensors.

use std::collections::BTreeMap;
use std::path::Path;

use convnet::nn::Ctx;
use convnet::spec::Spec;
use convnet::{Rng, Tensor};

fn spec(layers: &str, input: &str) -> convnet::Result<Spec> {
    Spec::parse(
        &format!("[model]\ninput = {input}\n{layers}"),
        Path::new("t.toml"),
    )
}

fn forward_shape(s: &Spec) -> convnet::Result<(Vec<usize>, Vec<usize>)> {
    let model = s.build_model(&mut Rng::new(1))?;
    let mut shape = vec![2];
    shape.extend(&s.input);
    let x = Tensor::randn(&shape, &mut Rng::new(2))?;
    let y = model.forward(
        &x,
        &mut Ctx {
            training: true,
            rng: &mut Rng::new(3),
            lengths: None,
        },
    )?;
    Ok((model.output_shape().to_vec(), y.shape()[1..].to_vec()))
}

#[test]
fn inferred_shapes_equal_forward_shapes_for_random_layers() {
    let mut r = Rng::new(7);
    let mut built = 0;
    for _ in 0..400 {
        let two_d = r.below(2) == 0;
        let (kind, input) = if two_d {
            (
                "2d",
                format!(
                    "[{}, {}, {}]",
                    1 + r.below(4),
                    3 + r.below(12),
                    3 + r.below(12)
                ),
            )
        } else {
            ("1d", format!("[{}, {}]", 1 + r.below(4), 3 + r.below(20)))
        };
        let pad = [
            "\"valid\"",
            "\"same\"",
            "1",
            if two_d {
                "[[0, 2], [1, 0]]"
            } else {
                "\"causal\""
            },
        ][r.below(4)];
        let mode = ["zeros", "reflect", "replicate", "circular"][r.below(4)];
        let layer = match r.below(8) {
            0 | 1 => format!(
                "[[model.layers]]\ntype = \"conv{kind}\"\nfilters = {}\nkernel_size = {}\nstrides = {}\ndilation_rate = {}\npadding = {pad}\npadding_mode = \"{mode}\"\nactivation = \"relu\"\n",
                1 + r.below(5),
                1 + r.below(4),
                1 + r.below(3),
                1 + r.below(2)
            ),
            2 => format!(
                "[[model.layers]]\ntype = \"conv{kind}_transpose\"\nfilters = {}\nkernel_size = {}\nstrides = {}\npadding = {}\noutput_padding = {}\n",
                1 + r.below(4),
                1 + r.below(4),
                2,
                r.below(2),
                r.below(2)
            ),
            3 => format!("[[model.layers]]\ntype = \"max_pool{kind}\"\npool_size = {}\nstrides = {}\nceil_mode = {}\n", 1 + r.below(3), 1 + r.below(3), r.below(2) == 0),
            4 => format!("[[model.layers]]\ntype = \"avg_pool{kind}\"\npool_size = {}\npadding = {}\ncount_include_pad = false\n", 2 + r.below(2), r.below(2)),
            5 => format!(
                "[[model.layers]]\ntype = \"conv{kind}_transpose\"\nfilters = 2\nkernel_size = {}\nstrides = {}\ndilation_rate = {}\npadding = \"same\"\n",
                1 + r.below(5),
                1 + r.below(3),
                1 + r.below(2)
            ),
            6 => format!(
                "[[model.layers]]\ntype = \"upsample\"\nsize = {}\ninterpolation = \"{}\"\n",
                1 + r.below(3),
                ["nearest", "bilinear"][r.below(2)]
            ),
            _ => "[[model.layers]]\ntype = \"batch_norm\"\n[[model.layers]]\ntype = \"global_max_pool\"\n[[model.layers]]\ntype = \"dense\"\nunits = 3\n".to_string(),
        };
        // Settings that do not fit the input must fail at build time, never at forward time.
        match spec(&layer, &input).and_then(|s| forward_shape(&s)) {
            Ok((inferred, actual)) => {
                assert_eq!(inferred, actual, "{layer} on {input}");
                built += 1;
            }
            Err(e) => {
                let s = spec(&layer, &input);
                assert!(
                    s.is_err() || s.unwrap().build_model(&mut Rng::new(1)).is_err(),
                    "forward failed after a successful build: {e}\n{layer} on {input}"
                );
            }
        }
    }
    assert!(built > 200, "only {built} random models were valid");
}

#[test]
fn parameter_names_follow_pytorch_state_dicts() {
    let s = spec(
        "[[model.layers]]\ntype = \"conv2d\"\nfilters = 4\nkernel_size = 3\n[[model.layers]]\ntype = \"batch_norm\"\n[[model.layers]]\ntype = \"flatten\"\n[[model.layers]]\ntype = \"dense\"\nunits = 2\nuse_bias = false\n",
        "[1, 5, 5]",
    )
    .unwrap();
    let m = s.build_model(&mut Rng::new(0)).unwrap();
    let names: Vec<(String, Vec<usize>)> = m
        .state_dict()
        .into_iter()
        .map(|(n, t)| (n, t.shape().to_vec()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("layers.0.bias".to_string(), vec![4]),
            ("layers.0.weight".to_string(), vec![4, 1, 3, 3]),
            ("layers.1.bias".to_string(), vec![4]),
            ("layers.1.running_mean".to_string(), vec![4]),
            ("layers.1.running_var".to_string(), vec![4]),
            ("layers.1.weight".to_string(), vec![4]),
            ("layers.3.weight".to_string(), vec![2, 36]),
        ]
    );
    // round trip through safetensors into a fresh model
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.safetensors");
    convnet::io::save(&p, &m.state_dict(), &BTreeMap::new()).unwrap();
    let (loaded, _) = convnet::io::load(&p).unwrap();
    let m2 = s.build_model(&mut Rng::new(99)).unwrap();
    m2.load_state_dict(&loaded, "w.safetensors").unwrap();
    for ((_, a), (_, b)) in m.state_dict().iter().zip(m2.state_dict().iter()) {
        assert_eq!(a.to_vec(), b.to_vec());
    }
    // a state dict of another model is refused with the tensor named
    let mut wrong = loaded.clone();
    wrong.insert(
        "layers.0.weight".into(),
        Tensor::zeros(&[4, 1, 5, 5]).unwrap(),
    );
    let e = m2
        .load_state_dict(&wrong, "w.safetensors")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layers.0.weight") && e.contains("[4, 1, 5, 5]"),
        "{e}"
    );
    // a truncated file is an error, not a panic
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = convnet::io::load(&p).unwrap_err().to_string();
    assert!(e.contains("truncated or corrupt"), "{e}");
}

#[test]
fn every_example_spec_parses_and_builds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let s = Spec::load(&p).unwrap_or_else(|e| panic!("{e}"));
            assert!(s.data.is_some(), "{} has no [data]", p.display());
            n += 1;
        }
    }
    assert!(n >= 4);
}

#[test]
fn inference_gives_the_training_graphs_numbers() {
    // Evaluation mode runs activations in place on a layer's own output; the values must be
    // those of the recorded path.
    let s = spec(
        "[[model.layers]]\ntype = \"conv2d\"\nfilters = 4\nkernel_size = 3\nactivation = \"relu\"\n[[model.layers]]\ntype = \"flatten\"\n[[model.layers]]\ntype = \"dense\"\nunits = 5\nactivation = \"tanh\"\n[[model.layers]]\ntype = \"dense\"\nunits = 3\nactivation = \"sigmoid\"\n",
        "[2, 6, 6]",
    )
    .unwrap();
    let m = s.build_model(&mut Rng::new(0)).unwrap();
    let x = Tensor::randn(&[3, 2, 6, 6], &mut Rng::new(1)).unwrap();
    let recorded = m
        .forward(
            &x,
            &mut Ctx {
                training: false,
                rng: &mut Rng::new(0),
                lengths: None,
            },
        )
        .unwrap();
    assert!(recorded.requires_grad());
    let inference = convnet::no_grad(|| {
        m.forward(
            &x,
            &mut Ctx {
                training: false,
                rng: &mut Rng::new(0),
                lengths: None,
            },
        )
    })
    .unwrap();
    assert!(!inference.requires_grad());
    assert_eq!(recorded.to_vec(), inference.to_vec());
    // the input is left untouched
    assert_eq!(
        x.to_vec(),
        Tensor::randn(&[3, 2, 6, 6], &mut Rng::new(1))
            .unwrap()
            .to_vec()
    );
}
