//! Batches of series of unequal length, padded to the longest and masked: every model that
//! takes the mask gives each series of a padded batch what it gives the series alone; batch
//! norm's training statistics are those of the valid positions; a model trained on unequal
//! lengths scores alike in training and evaluation mode on its own training set.

mod common;

use std::path::Path;

use convnet::nn::{Ctx, Sequential, mask};
use convnet::spec::Spec;
use convnet::{Rng, Tensor, no_grad};

fn model(layers: &str, channels: usize) -> Sequential {
    let text = format!("[model]\ninput = [{channels}, \"any\"]\n{layers}");
    let spec = Spec::parse(&text, Path::new("m.toml")).unwrap();
    spec.build_model(&mut Rng::new(7)).unwrap()
}

fn layer(kind: &str, keys: &str) -> String {
    format!("[[model.layers]]\ntype = \"{kind}\"\n{keys}\n")
}

/// Random series of `lengths`, each `(c, l)`.
fn series(c: usize, lengths: &[usize], seed: u64) -> Vec<Vec<f32>> {
    let mut r = Rng::new(seed);
    lengths
        .iter()
        .map(|&l| (0..c * l).map(|_| r.normal()).collect())
        .collect()
}

/// The series padded with zeros to the longest, as `(n, c, longest)`.
fn padded(c: usize, xs: &[Vec<f32>], lengths: &[usize]) -> Tensor {
    let longest = *lengths.iter().max().unwrap();
    let mut v = Vec::new();
    for (x, &l) in xs.iter().zip(lengths) {
        for row in x.chunks(l) {
            v.extend_from_slice(row);
            v.resize(v.len() + longest - l, 0.0);
        }
    }
    Tensor::from_vec(v, &[xs.len(), c, longest]).unwrap()
}

fn run(m: &Sequential, x: &Tensor, training: bool, lengths: Option<Vec<usize>>) -> Tensor {
    m.forward(
        x,
        &mut Ctx {
            training,
            rng: &mut Rng::new(0),
            lengths,
        },
    )
    .unwrap()
}

fn models() -> Vec<(&'static str, usize, String)> {
    let bn = layer("batch_norm", "");
    let relu = layer("activation", "activation = \"relu\"");
    let conv = |f: usize, k: usize| {
        layer(
            "conv1d",
            &format!("filters = {f}\nkernel_size = {k}\npadding = \"same\""),
        )
    };
    let head = layer("dense", "units = 3");
    let fcn = [
        conv(8, 8),
        bn.clone(),
        relu.clone(),
        conv(6, 5),
        bn.clone(),
        relu.clone(),
    ]
    .concat()
        + &layer("global_avg_pool", "")
        + &head;
    let body = [conv(6, 7), bn.clone(), relu.clone(), conv(6, 3), bn.clone()]
        .concat()
        .replace("[[model.layers]]", "[[model.layers.layers]]");
    let resnet =
        layer("residual", "activation = \"relu\"") + &body + &layer("global_avg_pool", "") + &head;
    let pools = layer("conv1d", "filters = 5\nkernel_size = 3")
        + &layer("max_pool1d", "pool_size = 2")
        + &layer(
            "conv1d",
            "filters = 4\nkernel_size = 3\nstrides = 2\npadding = 1",
        )
        + &bn
        + &relu
        + &layer("avg_pool1d", "pool_size = 3\nstrides = 1\npadding = 1")
        + &layer("global_max_pool", "")
        + &head;
    let tcn = |padding: &str| {
        layer(
            "tcn",
            &format!(
                "nb_filters = 6\nkernel_size = 3\ndilations = [1, 2, 4]\npadding = \"{padding}\"\nnormalization = \"batch\"\nreturn_sequences = false"
            ),
        ) + &head
    };
    let wavenet = layer(
        "wavenet",
        "residual_channels = 4\nskip_channels = 4\nkernel_size = 2\nlayers_per_stack = 3\noutput_channels = 2\nreturn_sequences = false",
    );
    vec![
        ("fcn", 2, fcn),
        ("resnet", 2, resnet),
        ("pools and strides", 2, pools),
        ("tcn causal", 2, tcn("causal")),
        ("tcn same", 2, tcn("same")),
        ("wavenet", 1, wavenet),
    ]
}

/// A padded batch with its lengths gives each series, in evaluation mode, what the series
/// gives alone; without the lengths it does not (the test can fail).
#[test]
fn a_padded_batch_equals_its_series_run_one_by_one() {
    let lengths = [23, 40, 31, 40, 17, 29];
    for (name, c, layers) in models() {
        let m = model(&layers, c);
        assert_eq!(mask::support(&m), Ok(()), "{name}");
        let xs = series(c, &lengths, 3);
        let x = padded(c, &xs, &lengths);
        // running statistics of batch norm away from their initial values
        run(&m, &x, true, Some(lengths.to_vec()));
        let batch = no_grad(|| run(&m, &x, false, Some(lengths.to_vec())));
        let unmasked = no_grad(|| run(&m, &x, false, None));
        let per = batch.shape()[1..].iter().product::<usize>();
        let (got, loose) = (batch.to_vec(), unmasked.to_vec());
        let mut differs = false;
        for (i, (xi, &l)) in xs.iter().zip(&lengths).enumerate() {
            let alone = Tensor::from_vec(xi.clone(), &[1, c, l]).unwrap();
            let want = no_grad(|| run(&m, &alone, false, None)).to_vec();
            let row = &got[i * per..(i + 1) * per];
            let err = row
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
                .fold(0f32, f32::max);
            assert!(
                err < 1e-5,
                "{name}: series {i} (length {l}): {row:?} vs {want:?}"
            );
            differs |= loose[i * per..(i + 1) * per]
                .iter()
                .zip(&want)
                .any(|(a, b)| (a - b).abs() > 1e-3);
        }
        assert!(
            differs,
            "{name}: the padding changes nothing, the test proves nothing"
        );
    }
}

/// In training, batch norm's statistics (and the running statistics it keeps) are those of
/// the valid positions: the same as one long series made of the valid parts; so are the
/// gradients.
#[test]
fn masked_batch_norm_uses_the_valid_positions_only() {
    let (c, lengths) = (3, [9, 4, 7]);
    let xs = series(c, &lengths, 5);
    let bn = layer("batch_norm", "");
    let (a, b) = (model(&bn, c), model(&bn, c));
    let x = padded(c, &xs, &lengths).requires_grad_();
    let total: usize = lengths.iter().sum();
    // the valid parts side by side: (1, c, total)
    let mut joined = vec![0f32; c * total];
    let mut at = 0;
    for (xi, &l) in xs.iter().zip(&lengths) {
        for ch in 0..c {
            joined[ch * total + at..ch * total + at + l].copy_from_slice(&xi[ch * l..(ch + 1) * l]);
        }
        at += l;
    }
    let j = Tensor::from_vec(joined, &[1, c, total])
        .unwrap()
        .requires_grad_();
    let y = run(&a, &x, true, Some(lengths.to_vec()));
    let yj = run(&b, &j, true, None);
    // a loss on the valid positions: weights r, the same for both layouts
    let longest = 9;
    let mut r = Rng::new(11);
    let mut wp = vec![0f32; lengths.len() * c * longest];
    let mut wj = vec![0f32; c * total];
    let mut at = 0;
    for (i, &l) in lengths.iter().enumerate() {
        for ch in 0..c {
            for t in 0..l {
                let w = r.normal();
                wp[(i * c + ch) * longest + t] = w;
                wj[ch * total + at + t] = w;
            }
        }
        at += l;
    }
    let yv = y.to_vec();
    let yjv = yj.to_vec();
    let mut at = 0;
    for (i, &l) in lengths.iter().enumerate() {
        for ch in 0..c {
            for t in 0..l {
                let (p, q) = (yv[(i * c + ch) * longest + t], yjv[ch * total + at + t]);
                assert!(
                    (p - q).abs() < 1e-5,
                    "series {i} channel {ch} step {t}: {p} vs {q}"
                );
            }
        }
        at += l;
    }
    let loss = |y: &Tensor, w: Vec<f32>| {
        let w = Tensor::from_vec(w, y.shape()).unwrap();
        convnet::ops::sum_all(&convnet::ops::mul(y, &w).unwrap()).unwrap()
    };
    loss(&y, wp).backward().unwrap();
    loss(&yj, wj).backward().unwrap();
    let state = |m: &Sequential| -> Vec<(String, Vec<f32>)> {
        m.state_dict()
            .into_iter()
            .map(|(n, t)| (n, t.to_vec()))
            .collect()
    };
    for ((n, p), (_, q)) in state(&a).iter().zip(state(&b).iter()) {
        for (u, v) in p.iter().zip(q) {
            assert!((u - v).abs() < 1e-5, "{n}: {p:?} vs {q:?}");
        }
    }
    let grads = |m: &Sequential| -> Vec<Vec<f32>> {
        m.named_params()
            .iter()
            .map(|(_, t)| t.grad().unwrap().to_vec())
            .collect()
    };
    for (p, q) in grads(&a).iter().zip(&grads(&b)) {
        for (u, v) in p.iter().zip(q) {
            assert!((u - v).abs() < 1e-4, "parameter gradients {p:?} vs {q:?}");
        }
    }
    // the input's gradient: the joined layout's, and zero in the padding
    let (gx, gj) = (x.grad().unwrap().to_vec(), j.grad().unwrap().to_vec());
    let mut at = 0;
    for (i, &l) in lengths.iter().enumerate() {
        for ch in 0..c {
            for t in 0..longest {
                let g = gx[(i * c + ch) * longest + t];
                let want = if t < l { gj[ch * total + at + t] } else { 0.0 };
                assert!(
                    (g - want).abs() < 1e-5,
                    "dx series {i} channel {ch} step {t}: {g} vs {want}"
                );
            }
        }
        at += l;
    }
}

/// A layer that would mix a series with its padding is named, and the model batches one
/// length at a time.
#[test]
fn models_that_cannot_take_a_mask_say_which_layer() {
    let m = model(
        &(layer(
            "conv1d",
            "filters = 4\nkernel_size = 3\nstrides = 2\npadding = \"same\"",
        ) + &layer("global_avg_pool", "")),
        1,
    );
    let e = mask::support(&m).unwrap_err();
    assert!(e.contains("layer 0 (conv1d)"), "{e}");
    let m = model(
        &(layer(
            "conv1d",
            "filters = 4\nkernel_size = 3\npadding = \"same\"\npadding_mode = \"reflect\"",
        ) + &layer("global_avg_pool", "")),
        1,
    );
    assert!(mask::support(&m).unwrap_err().contains("layer 0"));
    // a series too short for a layer is refused by name, not hidden by the padding
    let m = model(
        &(layer("conv1d", "filters = 2\nkernel_size = 5") + &layer("global_avg_pool", "")),
        1,
    );
    let x = padded(1, &series(1, &[3, 10], 1), &[3, 10]);
    let e = m
        .forward(
            &x,
            &mut Ctx {
                training: false,
                rng: &mut Rng::new(0),
                lengths: Some(vec![3, 10]),
            },
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("conv1d"), "{e}");
    // after the time axis is gone, anything goes
    let m = model(
        &(layer("conv1d", "filters = 4\nkernel_size = 3\npadding = \"same\"")
            + &layer("global_avg_pool", "")
            + &layer("dense", "units = 2")),
        1,
    );
    assert_eq!(mask::support(&m), Ok(()));
}

/// A `.ts` file of two classes whose series are 30 to 149 steps long (about 40 distinct
/// lengths): a sine of a few periods or a sawtooth of the same, with noise and a random
/// offset and scale.
fn shapes_ts(n: usize, seed: u64) -> String {
    let mut r = Rng::new(seed);
    let mut s =
        String::from("@problemName Shapes\n@equalLength false\n@classLabel true sine saw\n@data\n");
    for i in 0..n {
        let len = 30 + 3 * r.below(40);
        let sine = i % 2 == 0;
        let periods = 2.0 + 3.0 * r.uniform();
        let (a, b) = (0.5 + r.uniform(), r.normal());
        let v: Vec<String> = (0..len)
            .map(|t| {
                let p = periods * t as f32 / len as f32;
                let y = if sine {
                    (p * std::f32::consts::TAU).sin()
                } else {
                    2.0 * (p - p.floor()) - 1.0
                };
                format!("{:.3}", a * y + b + 0.1 * r.normal())
            })
            .collect();
        s.push_str(&format!(
            "{}:{}\n",
            v.join(","),
            if sine { "sine" } else { "saw" }
        ));
    }
    s
}

/// Trained on series of ~40 lengths in padded, masked, bucketed batches, a model with batch
/// norm scores on its own training set in evaluation mode (running statistics) what it
/// scores in training mode (batch statistics): the running statistics are those training saw.
#[test]
fn a_model_trained_on_unequal_lengths_scores_alike_in_train_and_eval_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("train.ts"), shapes_ts(160, 1)).unwrap();
    let conv = |f: usize, k: usize| {
        layer(
            "conv1d",
            &format!("filters = {f}\nkernel_size = {k}\npadding = \"same\""),
        ) + &layer("batch_norm", "")
            + &layer("activation", "activation = \"relu\"")
    };
    let text = format!(
        "[model]\ninput = [1, \"any\"]\n{}{}{}[data]\nformat = \"ts\"\ntrain = \"train.ts\"\nvalidation_split = 0.0\nnormalize = \"per_series\"\n[train]\nepochs = 12\nbatch_size = 16\nseed = 2\n[train.optimizer]\ntype = \"adam\"\nlr = 0.01\n",
        conv(16, 7) + &conv(16, 5),
        layer("global_avg_pool", ""),
        layer("dense", "units = 2"),
    );
    std::fs::write(d.join("s.toml"), &text).unwrap();
    let (ok, out, err) = common::convnet(d, &["train", "s.toml", "--out", "run"]);
    assert!(ok, "{out}{err}");
    assert!(
        err.contains("padded to its longest and masked") && !err.contains("warning"),
        "{err}"
    );
    let spec = Spec::load(&d.join("s.toml")).unwrap();
    let (_, m, info) = convnet::train::load_run(&d.join("run")).unwrap();
    let task = convnet::train::Task::of(&spec, &m).unwrap();
    let prepared = convnet::train::prepare(&spec, &task, 0).unwrap();
    let data = &prepared.train;
    assert!(data.mixes_lengths());
    let norm = info.normalize();
    let accuracy = |training: bool| {
        let order: Vec<usize> = (0..data.len()).collect();
        let mut correct = 0;
        for idx in data.epoch_batches(&order, 16, true) {
            let x = data.batch_input(&idx, |_, s| norm.apply(s)).unwrap();
            let y = no_grad(|| run(&m, &x, training, data.batch_lengths(&idx)));
            let pred = convnet::train::argmax_rows(&y.to_vec(), 2);
            correct += idx
                .iter()
                .zip(pred)
                .filter(|&(&i, p)| data.labels[i] == p)
                .count();
        }
        correct as f64 / data.len() as f64
    };
    let eval = accuracy(false);
    let train = accuracy(true);
    assert!(train > 0.9, "training mode {train}, evaluation mode {eval}");
    assert!(
        (train - eval).abs() <= 0.04,
        "training mode {train}, evaluation mode {eval}"
    );
}
