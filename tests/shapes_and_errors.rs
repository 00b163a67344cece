//! Shape arithmetic against the formulas for random hyperparameters, clear errors for bad
//! input, and no panic from any public op whatever its input.

use std::panic::{AssertUnwindSafe, catch_unwind};

use convnet::ops::{self, PadMode, Padding};
use convnet::{Error, Rng, Tensor};

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape).unwrap()
}

#[test]
fn conv_output_shapes_follow_the_formula() {
    let mut r = Rng::new(1);
    let mut checked = 0;
    for _ in 0..2000 {
        let (n, k, s, d) = (
            1 + r.below(12),
            1 + r.below(5),
            1 + r.below(4),
            1 + r.below(3),
        );
        let (pb, pa) = (r.below(4), r.below(4));
        let x = zeros(&[1, 2, n]);
        let w = zeros(&[3, 2, k]);
        let cfg = ops::Conv1dConfig::default()
            .with_stride(s)
            .with_dilation(d)
            .with_padding(Padding::Explicit(vec![(pb, pa)]));
        let total = n + pb + pa;
        let span = d * (k - 1) + 1;
        match ops::conv1d(&x, &w, None, &cfg) {
            Ok(y) => {
                assert!(total >= span);
                // floor((n + pad_total - dilation * (k - 1) - 1) / stride) + 1
                assert_eq!(
                    y.shape()[2],
                    (total - d * (k - 1) - 1) / s + 1,
                    "n={n} k={k} s={s} d={d} pads=({pb},{pa})"
                );
                checked += 1;
            }
            Err(e) => {
                assert!(total < span, "unexpected error {e}");
                assert!(e.to_string().contains("spans"), "{e}");
            }
        }
        // 2-D with different hyperparameters per axis
        let (h, wd) = (1 + r.below(10), 1 + r.below(10));
        let (kh, kw) = (1 + r.below(4), 1 + r.below(4));
        let x = zeros(&[1, 2, h, wd]);
        let w = zeros(&[2, 2, kh, kw]);
        let cfg = ops::Conv2dConfig {
            stride: [s, 1 + r.below(3)],
            padding: Padding::Same,
            dilation: [d, 1],
            groups: 1,
            pad_mode: PadMode::Zeros,
        };
        let y = ops::conv2d(&x, &w, None, &cfg).unwrap();
        // TensorFlow's same: ceil(n / stride)
        assert_eq!(
            y.shape()[2..],
            [h.div_ceil(cfg.stride[0]), wd.div_ceil(cfg.stride[1])]
        );
        // transposed: (n - 1) * stride - pad_total + dilation * (k - 1) + output_padding + 1
        let p = r.below(3);
        let op = r.below(s.max(d));
        let xt = zeros(&[1, 2, n]);
        let wt = zeros(&[2, 3, k]);
        let tc = ops::ConvTranspose1dConfig {
            stride: s,
            padding: p,
            output_padding: op,
            dilation: d,
            groups: 1,
        };
        let full = (n - 1) * s + d * (k - 1) + op + 1;
        match ops::conv_transpose1d(&xt, &wt, None, &tc) {
            Ok(y) => assert_eq!(y.shape()[2], full - 2 * p),
            Err(e) => assert!(full <= 2 * p, "{e}"),
        }
        // pooling: floor((n + 2p - k) / s) + 1
        let pk = 1 + r.below(4);
        let pp = r.below(pk / 2 + 1);
        if n + 2 * pp >= pk {
            let y = ops::max_pool1d(
                &x_1d(n),
                &ops::Pool1dConfig {
                    kernel: pk,
                    stride: Some(s),
                    padding: pp,
                    ceil_mode: false,
                    count_include_pad: true,
                },
            )
            .unwrap();
            assert_eq!(y.shape()[2], (n + 2 * pp - pk) / s + 1);
        }
    }
    assert!(checked > 500);
}

fn x_1d(n: usize) -> Tensor {
    zeros(&[1, 1, n])
}

fn msg(r: convnet::Result<Tensor>) -> String {
    match r {
        Ok(t) => panic!("expected an error, got shape {:?}", t.shape()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn errors_name_the_op_the_shapes_and_the_parameter() {
    let x = zeros(&[2, 6, 5, 5]);
    let m = msg(ops::conv2d(
        &x,
        &zeros(&[4, 6, 7, 3]),
        None,
        &Default::default(),
    ));
    assert!(
        m.starts_with("conv2d: invalid `kernel_size`")
            && m.contains("spans 7")
            && m.contains("[2, 6, 5, 5]"),
        "{m}"
    );
    let m = msg(ops::conv2d(
        &x,
        &zeros(&[4, 3, 3, 3]),
        None,
        &ops::Conv2dConfig::default().with_groups(4),
    ));
    assert!(
        m.contains("groups") && m.contains("6 input channels"),
        "{m}"
    );
    let m = msg(ops::conv2d(
        &x,
        &zeros(&[4, 6, 3]),
        None,
        &Default::default(),
    ));
    assert!(
        m.contains("conv2d") && m.contains("weight must be") && m.contains("[4, 6, 3]"),
        "{m}"
    );
    let m = msg(ops::conv2d(
        &x,
        &zeros(&[4, 5, 3, 3]),
        None,
        &Default::default(),
    ));
    assert!(m.contains("expects 5 input channels"), "{m}");
    let m = msg(ops::conv2d(
        &x,
        &zeros(&[4, 6, 3, 3]),
        Some(&zeros(&[3])),
        &Default::default(),
    ));
    assert!(m.contains("bias") && m.contains("[4]"), "{m}");
    let m = msg(ops::conv2d(
        &x,
        &zeros(&[4, 6, 3, 3]),
        None,
        &ops::Conv2dConfig::default().with_padding(Padding::Causal),
    ));
    assert!(m.contains("causal") && m.contains("1-D"), "{m}");
    let m = msg(ops::conv2d(
        &x,
        &zeros(&[4, 6, 3, 3]),
        None,
        &ops::Conv2dConfig::default().with_stride(0),
    ));
    assert!(m.contains("stride"), "{m}");
    let m = msg(ops::conv2d(
        &x,
        &zeros(&[4, 6, 3, 3]),
        None,
        &ops::Conv2dConfig::default()
            .with_pad(5)
            .with_pad_mode(PadMode::Reflect),
    ));
    assert!(m.contains("conv2d") && m.contains("reflect"), "{m}");
    let m = msg(ops::conv1d(
        &zeros(&[1, 2, 4]),
        &zeros(&[3, 2, 3]),
        None,
        &ops::Conv1dConfig::default().with_dilation(2),
    ));
    assert!(
        m.starts_with("conv1d") && m.contains("length") && m.contains("[3, 2, 3]"),
        "{m}"
    );
    let m = msg(ops::conv_transpose2d(
        &x,
        &zeros(&[6, 2, 3, 3]),
        None,
        &ops::ConvTranspose2dConfig::default()
            .with_stride(2)
            .with_output_padding(2),
    ));
    assert!(m.contains("output_padding"), "{m}");
    let m = msg(ops::max_pool2d(&x, &ops::Pool2dConfig::new(3).with_pad(2)));
    assert!(
        m.contains("max_pool2d") && m.contains("padding") && m.contains("half"),
        "{m}"
    );
    let m = msg(ops::max_pool2d(&x, &ops::Pool2dConfig::new(7)));
    assert!(m.contains("does not fit"), "{m}");
    let m = msg(ops::add(&zeros(&[2, 3]), &zeros(&[4])));
    assert!(m.contains("add") && m.contains("broadcast"), "{m}");
    let m = msg(ops::linear(&zeros(&[2, 3]), &zeros(&[4, 5]), None));
    assert!(m.contains("in_features = 5"), "{m}");
    let m = msg(ops::cross_entropy(
        &zeros(&[2, 3]),
        &[1, 3],
        &Default::default(),
    ));
    assert!(m.contains("target 3 at row 1"), "{m}");
    let m = msg(ops::batch_norm(&zeros(&[1, 3]), &Default::default()));
    assert!(m.contains("more than 1 value per channel"), "{m}");
    let m = msg(ops::reshape(&zeros(&[2, 3]), &[4, 2]));
    assert!(m.contains("reshape") && m.contains("[2, 3]"), "{m}");
    let m = msg(Tensor::from_vec(vec![1.0; 5], &[2, 3]));
    assert!(m.contains("5 values"), "{m}");
    assert!(matches!(
        ops::softmax(&zeros(&[2, 3]), 2),
        Err(Error::Param {
            op: "softmax",
            param: "axis",
            ..
        })
    ));
}

/// Random shape of rank 0..=5, mostly 3 or 4, with small dimensions (0 included) so that
/// channel counts often agree and the checks past the first ones are reached.
fn any_shape(r: &mut Rng) -> Vec<usize> {
    let rank = [0, 1, 2, 3, 3, 3, 4, 4, 4, 5][r.below(10)];
    (0..rank)
        .map(|_| [0, 1, 1, 2, 2, 3, 4, 6][r.below(8)])
        .collect()
}

fn any_tensor(r: &mut Rng) -> Tensor {
    let s = any_shape(r);
    Tensor::randn(&s, r).unwrap()
}

/// Inputs whose shapes mostly fit op `which` (channels a multiple of `g`, matching weight and
/// bias), so that the fuzzing also reaches the kernels; one dimension is sometimes disturbed.
fn related(r: &mut Rng, which: usize, g: usize) -> (Tensor, Tensor, Tensor) {
    let g1 = g.max(1);
    let mut d = |lo: usize| lo + r.below(4);
    let (n, ci, co, h, w, kh, kw) = (d(0), g1 * d(1), g1 * d(1), d(0), d(1), d(1), d(1));
    let (mut sa, mut sb, mut sc): (Vec<usize>, Vec<usize>, Vec<usize>) = match which {
        0 => (vec![n, ci, h, w], vec![co, ci / g1, kh, kw], vec![co]),
        1 => (vec![n, ci, w], vec![co, ci / g1, kw], vec![co]),
        2 => (vec![n, ci, h, w], vec![ci, co / g1, kh, kw], vec![co]),
        3 => (vec![n, ci, w], vec![ci, co / g1, kw], vec![co]),
        10 => (vec![h, w], vec![w, kw], vec![]),
        11 => (vec![n, h, w], vec![co, w], vec![co]),
        20 | 21 => (vec![n, ci, w], vec![ci], vec![ci]),
        _ => (vec![n, ci, h, w], vec![n, ci, h, w], vec![ci]),
    };
    if which == 21 {
        sb = vec![w];
        sc = vec![w];
    }
    if r.below(5) == 0 {
        let pick = r.below(3);
        let v = if pick == 0 {
            &mut sa
        } else if pick == 1 {
            &mut sb
        } else {
            &mut sc
        };
        if !v.is_empty() {
            let k = r.below(v.len());
            v[k] = r.below(5);
        }
    }
    let t = |s: &[usize], r: &mut Rng| Tensor::randn(s, r).unwrap();
    (t(&sa, r), t(&sb, r), t(&sc, r))
}

#[test]
fn no_public_op_panics_on_any_input() {
    let mut r = Rng::new(9);
    let mut succeeded = [0usize; 32];
    for i in 0..20000 {
        let u = |r: &mut Rng| r.below(5);
        let (s1, s2, d1, g, p1, p2) = (
            u(&mut r),
            u(&mut r),
            u(&mut r),
            u(&mut r),
            u(&mut r),
            u(&mut r),
        );
        let which = r.below(32);
        let (a, b, c) = if r.below(2) == 0 {
            (any_tensor(&mut r), any_tensor(&mut r), any_tensor(&mut r))
        } else {
            related(&mut r, which, g)
        };
        let mode = [
            PadMode::Zeros,
            PadMode::Reflect,
            PadMode::Replicate,
            PadMode::Circular,
        ][r.below(4)];
        let padding = [
            Padding::Valid,
            Padding::Same,
            Padding::Causal,
            Padding::Explicit(vec![(p1, p2)]),
            Padding::Explicit(vec![(p1, p2), (p2, p1)]),
        ][r.below(5)]
        .clone();
        let res = catch_unwind(AssertUnwindSafe(|| {
            let cfg2 = ops::Conv2dConfig {
                stride: [s1, s2],
                padding: padding.clone(),
                dilation: [d1, 1],
                groups: g,
                pad_mode: mode,
            };
            let cfg1 = ops::Conv1dConfig {
                stride: s1,
                padding: padding.clone(),
                dilation: d1,
                groups: g,
                pad_mode: mode,
            };
            let p2c = ops::Pool2dConfig {
                kernel: [s1, s2],
                stride: Some([d1, g]),
                padding: [p1, p2],
                ceil_mode: p1 % 2 == 0,
                count_include_pad: p2 % 2 == 0,
            };
            let p1c = ops::Pool1dConfig {
                kernel: s1,
                stride: Some(d1),
                padding: p1,
                ceil_mode: p2 % 2 == 0,
                count_include_pad: true,
            };
            let t2 = ops::ConvTranspose2dConfig {
                stride: [s1, s2],
                padding: [p1, p2],
                output_padding: [p2, p1],
                dilation: [d1, 1],
                groups: g,
            };
            let t1 = ops::ConvTranspose1dConfig {
                stride: s1,
                padding: p1,
                output_padding: p2,
                dilation: d1,
                groups: g,
            };
            let bn = ops::BatchNormArgs {
                weight: Some(&b),
                bias: Some(&c),
                training: p1 % 2 == 0,
                running_mean: Some(&b),
                running_var: Some(&c),
                ..Default::default()
            };
            let targets: Vec<usize> = (0..a.shape().first().copied().unwrap_or(0))
                .map(|k| k % 4)
                .collect();
            let mut rng = Rng::new(i);
            match which {
                0 => ops::conv2d(&a, &b, Some(&c), &cfg2),
                1 => ops::conv1d(&a, &b, Some(&c), &cfg1),
                2 => ops::conv_transpose2d(&a, &b, Some(&c), &t2),
                3 => ops::conv_transpose1d(&a, &b, None, &t1),
                4 => ops::max_pool2d(&a, &p2c),
                5 => ops::avg_pool2d(&a, &p2c),
                6 => ops::max_pool1d(&a, &p1c),
                7 => ops::avg_pool1d(&a, &p1c),
                8 => ops::global_avg_pool2d(&a).or_else(|_| ops::global_max_pool1d(&a)),
                9 => ops::adaptive_avg_pool2d(&a, [s1, s2])
                    .or_else(|_| ops::adaptive_avg_pool1d(&a, s1)),
                10 => ops::matmul(&a, &b),
                11 => ops::linear(&a, &b, Some(&c)),
                12 => ops::add(&a, &b).and(ops::div(&a, &b)),
                13 => ops::sum(&a, &[s1 as isize - 2, s2 as isize], p1 % 2 == 0),
                14 => ops::reshape(&a, &b.shape().to_vec()),
                15 => ops::permute(&a, &b.shape().to_vec()),
                16 => ops::concat(&[&a, &b], s1),
                17 => ops::slice(&a, s1, s2, p1),
                18 => ops::pad(&a, &[(p1, p2), (s1, s2)], mode, 0.0),
                19 => ops::softmax(&a, s1 as isize - 2).and(ops::log_softmax(&a, s2 as isize)),
                20 => ops::batch_norm(&a, &bn),
                21 => ops::layer_norm(&a, &b.shape().to_vec(), Some(&b), Some(&c), 1e-5),
                22 => ops::cross_entropy(&a, &targets, &Default::default()),
                23 => ops::binary_cross_entropy_with_logits(&a, &b, None).and(ops::huber(
                    &a,
                    &b,
                    p1 as f32 - 1.0,
                )),
                24 => ops::dropout(&a, p1 as f32 / 3.0, true, &mut rng)
                    .and(ops::spatial_dropout(&a, 0.5, true, &mut rng)),
                25 => ops::flatten(&a, s1, s2).and(ops::transpose(&a, s1, s2)),
                26 => ops::broadcast_to(&a, b.shape()).and(ops::sum_to_shape(&a, b.shape())),
                27 => ops::global_max_pool2d(&a).or_else(|_| ops::global_avg_pool1d(&a)),
                28 => ops::mse(&a, &b).and(ops::mae(&a, &b)),
                29 => ops::upsample2d(&a, [s1, s2], ops::UpsampleMode::Linear)
                    .or_else(|_| ops::upsample1d(&a, s1, ops::UpsampleMode::Nearest)),
                30 => ops::weight_norm(&a, &b),
                _ => a.item().map(Tensor::scalar).and(ops::mean_all(&a)),
            }
            .is_ok()
        }));
        if let Ok(true) = res {
            succeeded[which] += 1;
        }
        assert!(
            res.is_ok(),
            "case {i} (op #{which}) panicked on shapes {:?} {:?} {:?}",
            a.shape(),
            b.shape(),
            c.shape()
        );
    }
    // The fuzzing reached every op's computation, not only its first checks.
    assert!(
        succeeded.iter().all(|&n| n > 0),
        "ops that never ran to completion: {succeeded:?}"
    );
}
