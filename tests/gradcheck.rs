//! Finite-difference gradient checks for every op, over grids of stride, padding (mode and
//! kind), dilation, groups and odd sizes. For `L = sum(op(inputs) * r)` with a fixed random
//! `r`, each analytic gradient element is compared with the central difference
//! `(L(x + e) - L(x - e)) / 2e`, the loss summed in f64.

use convnet::ops::{self, PadMode, Padding};
use convnet::{Result, Rng, Tensor, no_grad};

const EPS: f32 = 1e-2;
/// Elements perturbed per input at most (chosen at random beyond that).
const MAX_PROBES: usize = 48;

fn loss_of(out: &Tensor, r: &[f32]) -> f64 {
    out.data()
        .iter()
        .zip(r)
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum()
}

/// Checks the gradients `f` gives its inputs against central differences.
fn check(name: &str, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let mut rng = Rng::new(
        name.bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)),
    );
    let leaves: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.deep_clone().requires_grad_())
        .collect();
    let out = f(&leaves).unwrap_or_else(|e| panic!("{name}: {e}"));
    let r: Vec<f32> = (0..out.numel()).map(|_| rng.normal()).collect();
    let rt = Tensor::from_vec(r.clone(), out.shape()).unwrap();
    ops::sum_all(&ops::mul(&out, &rt).unwrap())
        .unwrap()
        .backward()
        .unwrap();
    for (i, leaf) in leaves.iter().enumerate() {
        let analytic = leaf
            .grad()
            .unwrap_or_else(|| panic!("{name}: input {i} got no gradient"))
            .to_vec();
        let n = inputs[i].numel();
        let mut probes: Vec<usize> = (0..n).collect();
        if n > MAX_PROBES {
            rng.shuffle(&mut probes);
            probes.truncate(MAX_PROBES);
        }
        for &j in &probes {
            let eval = |delta: f32| {
                let moved: Vec<Tensor> = inputs
                    .iter()
                    .enumerate()
                    .map(|(k, t)| {
                        let mut d = t.to_vec();
                        if k == i {
                            d[j] += delta;
                        }
                        Tensor::from_vec(d, t.shape()).unwrap()
                    })
                    .collect();
                no_grad(|| loss_of(&f(&moved).unwrap(), &r))
            };
            let numeric = (eval(EPS) - eval(-EPS)) / (2.0 * EPS as f64);
            let a = analytic[j] as f64;
            assert!(
                (a - numeric).abs() <= 5e-3 + 1e-2 * a.abs().max(numeric.abs()),
                "{name}: d/d input{i}[{j}]: analytic {a}, numeric {numeric}"
            );
        }
    }
}

fn randn(shape: &[usize], rng: &mut Rng) -> Tensor {
    Tensor::randn(shape, rng).unwrap()
}

/// Values at least 0.1 apart and away from 0, so that no +-EPS step crosses a kink (ReLU's
/// zero, a max's tie, |x|'s corner).
fn spread(shape: &[usize], rng: &mut Rng) -> Tensor {
    let n: usize = shape.iter().product();
    let mut v: Vec<f32> = (0..n)
        .map(|i| (i as f32 - n as f32 / 2.0 + 0.5) * 0.1)
        .collect();
    rng.shuffle(&mut v);
    Tensor::from_vec(v, shape).unwrap()
}

#[test]
fn conv2d_grid() {
    let mut rng = Rng::new(1);
    let paddings = [
        Padding::Valid,
        Padding::Same,
        Padding::Explicit(vec![(2, 0), (1, 2)]),
    ];
    let mut count = 0;
    for stride in [1, 2] {
        for dilation in [1, 2] {
            for groups in [1, 2, 4] {
                for (pi, padding) in paddings.iter().enumerate() {
                    for mode in [
                        PadMode::Zeros,
                        PadMode::Reflect,
                        PadMode::Replicate,
                        PadMode::Circular,
                    ] {
                        if mode != PadMode::Zeros && pi == 0 {
                            continue;
                        }
                        // depthwise when groups == c_in == 4; kernel 2x3 (even and odd)
                        let x = randn(&[2, 4, 7, 6], &mut rng);
                        let w = randn(&[4, 4 / groups, 2, 3], &mut rng);
                        let b = randn(&[4], &mut rng);
                        let cfg = ops::Conv2dConfig {
                            stride: [stride, 3 - stride],
                            padding: padding.clone(),
                            dilation: [dilation, 1],
                            groups,
                            pad_mode: mode,
                        };
                        let name = format!(
                            "conv2d s{stride} d{dilation} g{groups} {padding:?} {}",
                            mode.name()
                        );
                        check(&name, &[x, w, b], |t| {
                            ops::conv2d(&t[0], &t[1], Some(&t[2]), &cfg)
                        });
                        count += 1;
                    }
                }
            }
        }
    }
    assert!(count >= 100);
}

#[test]
fn conv1d_grid_with_causal() {
    let mut rng = Rng::new(2);
    for stride in [1, 2, 3] {
        for dilation in [1, 2, 4] {
            for groups in [1, 3] {
                for padding in [
                    Padding::Valid,
                    Padding::Same,
                    Padding::Causal,
                    Padding::Explicit(vec![(0, 3)]),
                ] {
                    for mode in [PadMode::Zeros, PadMode::Replicate] {
                        let x = randn(&[2, 3, 13], &mut rng);
                        let w = randn(&[6, 3 / groups, 2], &mut rng);
                        let cfg = ops::Conv1dConfig {
                            stride,
                            padding: padding.clone(),
                            dilation,
                            groups,
                            pad_mode: mode,
                        };
                        check(
                            &format!(
                                "conv1d s{stride} d{dilation} g{groups} {padding:?} {}",
                                mode.name()
                            ),
                            &[x, w],
                            |t| ops::conv1d(&t[0], &t[1], None, &cfg),
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn conv_transpose_grid() {
    let mut rng = Rng::new(3);
    for stride in [1, 2, 3] {
        for padding in [0, 1] {
            for dilation in [1, 2] {
                for groups in [1, 2] {
                    for output_padding in 0..stride.max(dilation) {
                        let x = randn(&[2, 4, 3, 4], &mut rng);
                        let w = randn(&[4, 6 / groups, 3, 2], &mut rng);
                        let b = randn(&[6], &mut rng);
                        let cfg = ops::ConvTranspose2dConfig {
                            stride: [stride, stride],
                            padding: [padding, padding],
                            output_padding: [output_padding, output_padding],
                            dilation: [dilation, dilation],
                            groups,
                        };
                        let name = format!(
                            "conv_transpose2d s{stride} p{padding} d{dilation} g{groups} op{output_padding}"
                        );
                        check(&name, &[x, w, b], |t| {
                            ops::conv_transpose2d(&t[0], &t[1], Some(&t[2]), &cfg)
                        });
                    }
                }
            }
        }
    }
    let x = randn(&[2, 3, 5], &mut rng);
    let w = randn(&[3, 2, 4], &mut rng);
    let cfg = ops::ConvTranspose1dConfig {
        stride: 2,
        padding: 1,
        output_padding: 1,
        dilation: 1,
        groups: 1,
    };
    check("conv_transpose1d", &[x, w], |t| {
        ops::conv_transpose1d(&t[0], &t[1], None, &cfg)
    });
}

#[test]
fn pooling_grid() {
    let mut rng = Rng::new(4);
    for k in [2, 3] {
        for stride in [1, 2, 3] {
            for pad in 0..=k / 2 {
                for ceil in [false, true] {
                    let mut cfg = ops::Pool2dConfig::new(k)
                        .with_stride(stride)
                        .with_pad(pad)
                        .with_ceil_mode(ceil);
                    let x = spread(&[2, 2, 7, 6], &mut rng);
                    let name = format!("k{k} s{stride} p{pad} ceil={ceil}");
                    check(&format!("max_pool2d {name}"), &[x.clone()], |t| {
                        ops::max_pool2d(&t[0], &cfg)
                    });
                    for inc in [true, false] {
                        cfg.count_include_pad = inc;
                        check(
                            &format!("avg_pool2d {name} include_pad={inc}"),
                            &[x.clone()],
                            |t| ops::avg_pool2d(&t[0], &cfg),
                        );
                    }
                    let cfg1 = ops::Pool1dConfig {
                        kernel: k,
                        stride: Some(stride),
                        padding: pad,
                        ceil_mode: ceil,
                        count_include_pad: false,
                    };
                    let x1 = spread(&[2, 3, 11], &mut rng);
                    check(&format!("max_pool1d {name}"), &[x1.clone()], |t| {
                        ops::max_pool1d(&t[0], &cfg1)
                    });
                    check(&format!("avg_pool1d {name}"), &[x1], |t| {
                        ops::avg_pool1d(&t[0], &cfg1)
                    });
                }
            }
        }
    }
    let x = spread(&[2, 3, 5, 4], &mut rng);
    check("global_avg_pool2d", &[x.clone()], |t| {
        ops::global_avg_pool2d(&t[0])
    });
    check("global_max_pool2d", &[x.clone()], |t| {
        ops::global_max_pool2d(&t[0])
    });
    for (mode, sh, sw) in [
        (ops::UpsampleMode::Nearest, 2, 3),
        (ops::UpsampleMode::Linear, 2, 2),
        (ops::UpsampleMode::Linear, 3, 1),
    ] {
        let x = randn(&[2, 2, 3, 4], &mut rng);
        check(&format!("upsample2d {mode:?} {sh}x{sw}"), &[x], |t| {
            ops::upsample2d(&t[0], [sh, sw], mode)
        });
        let x = randn(&[2, 2, 5], &mut rng);
        check(&format!("upsample1d {mode:?} {sh}"), &[x], |t| {
            ops::upsample1d(&t[0], sh, mode)
        });
    }
    check("adaptive_avg_pool2d", &[x], |t| {
        ops::adaptive_avg_pool2d(&t[0], [3, 3])
    });
    let x = spread(&[2, 3, 7], &mut rng);
    check("global_avg_pool1d", &[x.clone()], |t| {
        ops::global_avg_pool1d(&t[0])
    });
    check("global_max_pool1d", &[x.clone()], |t| {
        ops::global_max_pool1d(&t[0])
    });
    check("adaptive_avg_pool1d", &[x], |t| {
        ops::adaptive_avg_pool1d(&t[0], 4)
    });
}

#[test]
fn dense_arithmetic_and_shape_ops() {
    let mut rng = Rng::new(5);
    let (a, b) = (randn(&[3, 4], &mut rng), randn(&[4, 5], &mut rng));
    check("matmul", &[a, b], |t| ops::matmul(&t[0], &t[1]));
    let (a, b) = (randn(&[2, 3, 4], &mut rng), randn(&[2, 4, 2], &mut rng));
    check("matmul batched", &[a, b], |t| ops::matmul(&t[0], &t[1]));
    let (x, w, bias) = (
        randn(&[2, 3, 5], &mut rng),
        randn(&[4, 5], &mut rng),
        randn(&[4], &mut rng),
    );
    check("linear", &[x, w, bias], |t| {
        ops::linear(&t[0], &t[1], Some(&t[2]))
    });
    for (sa, sb) in [
        (vec![2, 3, 4], vec![3, 1]),
        (vec![4], vec![2, 1, 4]),
        (vec![2, 3], vec![2, 3]),
        (vec![1], vec![3, 2]),
    ] {
        let a = randn(&sa, &mut rng);
        let b = randn(&sb, &mut rng);
        check(
            &format!("add {sa:?} {sb:?}"),
            &[a.clone(), b.clone()],
            |t| ops::add(&t[0], &t[1]),
        );
        check(
            &format!("sub {sa:?} {sb:?}"),
            &[a.clone(), b.clone()],
            |t| ops::sub(&t[0], &t[1]),
        );
        check(
            &format!("mul {sa:?} {sb:?}"),
            &[a.clone(), b.clone()],
            |t| ops::mul(&t[0], &t[1]),
        );
        let b = Tensor::from_vec(
            b.to_vec().iter().map(|v| v.abs() + 1.0).collect(),
            b.shape(),
        )
        .unwrap();
        check(
            &format!("div {sa:?} {sb:?}"),
            &[a.clone(), b.clone()],
            |t| ops::div(&t[0], &t[1]),
        );
    }
    let x = randn(&[2, 3, 4], &mut rng);
    check("add_scalar", &[x.clone()], |t| ops::add_scalar(&t[0], 2.0));
    check("mul_scalar", &[x.clone()], |t| ops::mul_scalar(&t[0], -1.5));
    check("broadcast_to", &[randn(&[3, 1], &mut rng)], |t| {
        ops::broadcast_to(&t[0], &[2, 3, 4])
    });
    check("sum_to_shape", &[x.clone()], |t| {
        ops::sum_to_shape(&t[0], &[3, 1])
    });
    check("sum", &[x.clone()], |t| ops::sum(&t[0], &[0, 2], false));
    check("mean keepdim", &[x.clone()], |t| {
        ops::mean(&t[0], &[-1], true)
    });
    check("sum_all", &[x.clone()], |t| ops::sum_all(&t[0]));
    check("mean_all", &[x.clone()], |t| ops::mean_all(&t[0]));
    check("reshape", &[x.clone()], |t| ops::reshape(&t[0], &[4, 6]));
    check("flatten", &[x.clone()], |t| ops::flatten(&t[0], 1, 2));
    check("permute", &[x.clone()], |t| ops::permute(&t[0], &[2, 0, 1]));
    check("transpose", &[x.clone()], |t| ops::transpose(&t[0], 0, 2));
    check("concat", &[x.clone(), randn(&[2, 2, 4], &mut rng)], |t| {
        ops::concat(&[&t[0], &t[1]], 1)
    });
    check("slice", &[x.clone()], |t| ops::slice(&t[0], 2, 1, 3));
    for mode in [
        PadMode::Zeros,
        PadMode::Reflect,
        PadMode::Replicate,
        PadMode::Circular,
    ] {
        check(&format!("pad {}", mode.name()), &[x.clone()], |t| {
            ops::pad(&t[0], &[(2, 1), (1, 3)], mode, 0.5)
        });
    }
    // A tensor used twice (a residual connection): gradients add up.
    check("residual reuse", &[x.clone()], |t| {
        ops::add(&ops::tanh(&t[0])?, &ops::mul(&t[0], &t[0])?)
    });
}

#[test]
fn activations() {
    let mut rng = Rng::new(6);
    let x = spread(&[3, 4, 5], &mut rng);
    check("relu", &[x.clone()], |t| ops::relu(&t[0]));
    check("leaky_relu", &[x.clone()], |t| ops::leaky_relu(&t[0], 0.1));
    check("elu", &[x.clone()], |t| ops::elu(&t[0], 1.2));
    check("gelu", &[x.clone()], |t| ops::gelu(&t[0]));
    check("sigmoid", &[x.clone()], |t| ops::sigmoid(&t[0]));
    check("tanh", &[x.clone()], |t| ops::tanh(&t[0]));
    check("softmax", &[x.clone()], |t| ops::softmax(&t[0], 1));
    check("log_softmax", &[x.clone()], |t| ops::log_softmax(&t[0], -1));
    check("exp", &[x.clone()], |t| ops::exp(&t[0]));
    check("neg", &[x.clone()], |t| ops::neg(&t[0]));
    check("abs", &[x.clone()], |t| ops::abs(&t[0]));
    let pos = Tensor::from_vec(
        x.to_vec().iter().map(|v| v.abs() + 0.5).collect(),
        x.shape(),
    )
    .unwrap();
    check("log", &[pos.clone()], |t| ops::log(&t[0]));
    check("sqrt", &[pos], |t| ops::sqrt(&t[0]));
}

#[test]
fn dropout_and_norms() {
    let mut rng = Rng::new(7);
    let x = randn(&[3, 4, 5], &mut rng);
    // A fresh generator per call gives the same mask for each finite difference.
    check("dropout", &[x.clone()], |t| {
        ops::dropout(&t[0], 0.3, true, &mut Rng::new(1))
    });
    check("spatial_dropout", &[x.clone()], |t| {
        ops::spatial_dropout(&t[0], 0.5, true, &mut Rng::new(2))
    });
    for shape in [vec![6, 3], vec![4, 3, 5], vec![3, 3, 4, 2]] {
        let x = randn(&shape, &mut rng);
        let (w, b) = (randn(&[3], &mut rng), randn(&[3], &mut rng));
        check(
            &format!("batch_norm train {shape:?}"),
            &[x.clone(), w.clone(), b.clone()],
            |t| {
                let a = ops::BatchNormArgs {
                    weight: Some(&t[1]),
                    bias: Some(&t[2]),
                    ..Default::default()
                };
                ops::batch_norm(&t[0], &a)
            },
        );
        let (rm, rv) = (randn(&[3], &mut rng), Tensor::full(&[3], 1.7).unwrap());
        check(&format!("batch_norm eval {shape:?}"), &[x, w, b], |t| {
            let a = ops::BatchNormArgs {
                weight: Some(&t[1]),
                bias: Some(&t[2]),
                running_mean: Some(&rm),
                running_var: Some(&rv),
                training: false,
                ..Default::default()
            };
            ops::batch_norm(&t[0], &a)
        });
    }
    // series padded to the longest: statistics and gradients over valid positions only
    let x = randn(&[3, 3, 6], &mut rng);
    let (w, b) = (randn(&[3], &mut rng), randn(&[3], &mut rng));
    check("batch_norm_masked", &[x, w, b], |t| {
        let a = ops::BatchNormArgs {
            weight: Some(&t[1]),
            bias: Some(&t[2]),
            ..Default::default()
        };
        ops::norm::batch_norm_masked(&t[0], &[6, 2, 4], &a)
    });
    let x = randn(&[2, 3, 4], &mut rng);
    let (w, b) = (randn(&[3, 4], &mut rng), randn(&[3, 4], &mut rng));
    check("layer_norm", &[x, w, b], |t| {
        ops::layer_norm(&t[0], &[3, 4], Some(&t[1]), Some(&t[2]), 1e-5)
    });
    for shape in [vec![5, 3, 2], vec![4, 2, 3, 3]] {
        let v = randn(&shape, &mut rng);
        let mut gs = vec![1; shape.len()];
        gs[0] = shape[0];
        let g = randn(&gs, &mut rng);
        check(&format!("weight_norm {shape:?}"), &[v, g], |t| {
            ops::weight_norm(&t[0], &t[1])
        });
    }
}

#[test]
fn losses() {
    let mut rng = Rng::new(8);
    let logits = randn(&[5, 4], &mut rng);
    let targets = [3, 0, 1, 1, 2];
    for (w, s) in [
        (None, 0.0),
        (Some(vec![0.2, 1.0, 2.0, 0.7]), 0.0),
        (None, 0.15),
        (Some(vec![0.2, 1.0, 2.0, 0.7]), 0.3),
    ] {
        let opts = ops::CrossEntropyOptions {
            class_weights: w.clone(),
            label_smoothing: s,
        };
        check(
            &format!("cross_entropy w={w:?} s={s}"),
            &[logits.clone()],
            |t| ops::cross_entropy(&t[0], &targets, &opts),
        );
    }
    let x = spread(&[3, 4], &mut rng);
    let y = Tensor::rand_uniform(&[3, 4], 0.0, 1.0, &mut rng).unwrap();
    check("bce_with_logits", &[x.clone(), y.clone()], |t| {
        ops::binary_cross_entropy_with_logits(&t[0], &t[1], None)
    });
    check("bce_with_logits pos_weight", &[x.clone(), y.clone()], |t| {
        ops::binary_cross_entropy_with_logits(&t[0], &t[1], Some(3.0))
    });
    // Targets offset so that no difference sits within EPS of a kink.
    let t = Tensor::from_vec(x.to_vec().iter().map(|v| v + 0.05).collect(), x.shape()).unwrap();
    let t2 = Tensor::from_vec(
        x.to_vec().iter().map(|v| v * 0.3 + 0.03).collect(),
        x.shape(),
    )
    .unwrap();
    check("mse", &[x.clone(), t2.clone()], |t| ops::mse(&t[0], &t[1]));
    check("mae", &[x.clone(), t.clone()], |t| ops::mae(&t[0], &t[1]));
    check("huber", &[x.clone(), t2], |t| {
        ops::huber(&t[0], &t[1], 0.47)
    });
}
