//! The tensor and autograd contract, metamorphic tests of the conv kernels through the ops,
//! dropout's statistics, and the initialisers.

use convnet::ops::{self, Padding};
use convnet::{Rng, Tensor, init, no_grad};

fn t(v: &[f32], s: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), s).unwrap()
}

#[test]
fn gradients_add_up_where_a_tensor_is_used_twice() {
    let x = t(&[1.0, -2.0, 3.0], &[3]).requires_grad_();
    // y = x * x + x  ->  dy/dx = 2x + 1
    let y = ops::add(&ops::mul(&x, &x).unwrap(), &x).unwrap();
    ops::sum_all(&y).unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec(), vec![3.0, -3.0, 7.0]);
}

#[test]
fn leaf_gradients_accumulate_across_backward_calls_until_zeroed() {
    let w = t(&[2.0], &[1]).requires_grad_();
    for _ in 0..2 {
        ops::sum_all(&ops::mul_scalar(&w, 3.0).unwrap())
            .unwrap()
            .backward()
            .unwrap();
    }
    assert_eq!(w.grad().unwrap().to_vec(), vec![6.0]);
    w.zero_grad();
    assert!(w.grad().is_none());
}

#[test]
fn no_grad_records_nothing() {
    let w = t(&[1.0, 2.0], &[2]).requires_grad_();
    let y = no_grad(|| ops::relu(&w).unwrap());
    assert!(!y.requires_grad() && y.is_leaf() && y.op_name().is_none());
    assert!(convnet::is_grad_enabled());
    let e = ops::sum_all(&y)
        .unwrap()
        .backward()
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not require grad"), "{e}");
}

#[test]
fn backward_needs_a_scalar_and_runs_once() {
    let w = t(&[1.0, 2.0], &[2]).requires_grad_();
    let y = ops::tanh(&w).unwrap();
    assert!(y.backward().unwrap_err().to_string().contains("scalar"));
    let l = ops::sum_all(&y).unwrap();
    l.backward().unwrap();
    let e = l.backward().unwrap_err().to_string();
    assert!(e.contains("second time"), "{e}");
}

#[test]
fn only_inputs_that_require_grad_get_one() {
    let x = t(&[1.0, 2.0, 3.0, 4.0], &[1, 1, 4]);
    let w = t(&[0.5, -1.0], &[1, 1, 2]).requires_grad_();
    let y = ops::conv1d(&x, &w, None, &Default::default()).unwrap();
    ops::sum_all(&y).unwrap().backward().unwrap();
    assert!(x.grad().is_none());
    assert_eq!(w.grad().unwrap().to_vec(), vec![6.0, 9.0]);
}

fn conv_with_threads(threads: usize, x: &Tensor, w: &Tensor) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let xl = x.deep_clone().requires_grad_();
        let wl = w.deep_clone().requires_grad_();
        let y = ops::conv2d(
            &xl,
            &wl,
            None,
            &ops::Conv2dConfig::default().with_padding(Padding::Same),
        )
        .unwrap();
        ops::sum_all(&ops::mul(&y, &y).unwrap())
            .unwrap()
            .backward()
            .unwrap();
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect();
        (
            bits(y.to_vec()),
            bits(xl.grad().unwrap().to_vec()),
            bits(wl.grad().unwrap().to_vec()),
        )
    })
}

#[test]
fn results_are_bit_identical_whatever_the_thread_count() {
    let mut r = Rng::new(3);
    let x = Tensor::randn(&[13, 8, 12, 11], &mut r).unwrap();
    let w = Tensor::randn(&[6, 8, 3, 3], &mut r).unwrap();
    let one = conv_with_threads(1, &x, &w);
    assert_eq!(one, conv_with_threads(2, &x, &w));
    assert_eq!(one, conv_with_threads(3, &x, &w));
}

#[test]
fn a_batch_equals_its_items_run_one_by_one() {
    let mut r = Rng::new(4);
    let x = Tensor::randn(&[3, 4, 9, 7], &mut r).unwrap();
    let w = Tensor::randn(&[6, 2, 3, 2], &mut r).unwrap();
    let cfg = ops::Conv2dConfig::default()
        .with_stride(2)
        .with_groups(2)
        .with_padding(Padding::Same);
    let whole = ops::conv2d(&x, &w, None, &cfg).unwrap();
    let items: Vec<Tensor> = (0..3)
        .map(|i| ops::conv2d(&ops::slice(&x, 0, i, i + 1).unwrap(), &w, None, &cfg).unwrap())
        .collect();
    let joined = ops::concat(&items.iter().collect::<Vec<_>>(), 0).unwrap();
    assert_eq!(whole.to_vec(), joined.to_vec());
}

#[test]
fn a_grouped_conv_equals_its_per_group_slices() {
    let mut r = Rng::new(5);
    let x = Tensor::randn(&[2, 6, 8, 8], &mut r).unwrap();
    let w = Tensor::randn(&[9, 2, 3, 3], &mut r).unwrap();
    let cfg = ops::Conv2dConfig::default().with_pad(1);
    let grouped = ops::conv2d(&x, &w, None, &cfg.clone().with_groups(3)).unwrap();
    let parts: Vec<Tensor> = (0..3)
        .map(|g| {
            let xs = ops::slice(&x, 1, 2 * g, 2 * g + 2).unwrap();
            let ws = ops::slice(&w, 0, 3 * g, 3 * g + 3).unwrap();
            ops::conv2d(&xs, &ws, None, &cfg).unwrap()
        })
        .collect();
    let joined = ops::concat(&parts.iter().collect::<Vec<_>>(), 1).unwrap();
    for (a, b) in grouped.to_vec().iter().zip(joined.to_vec()) {
        assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()));
    }
}

#[test]
fn depthwise_direct_kernel_equals_the_grouped_lowering() {
    // groups == c_in takes the direct kernel; the same weights as a block-diagonal dense conv
    // take the GEMM path.
    let mut r = Rng::new(6);
    let (c, m) = (3, 2);
    let x = Tensor::randn(&[2, c, 7, 6], &mut r).unwrap();
    let w = Tensor::randn(&[c * m, 1, 3, 3], &mut r).unwrap();
    let cfg = ops::Conv2dConfig::default()
        .with_stride(2)
        .with_pad(1)
        .with_dilation(1);
    let direct = ops::conv2d(&x, &w, None, &cfg.clone().with_groups(c)).unwrap();
    let mut dense = vec![0f32; c * m * c * 9];
    let wd = w.to_vec();
    for o in 0..c * m {
        let ci = o / m;
        dense[(o * c + ci) * 9..(o * c + ci + 1) * 9].copy_from_slice(&wd[o * 9..(o + 1) * 9]);
    }
    let dense = ops::conv2d(&x, &t(&dense, &[c * m, c, 3, 3]), None, &cfg).unwrap();
    for (a, b) in direct.to_vec().iter().zip(dense.to_vec()) {
        assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()));
    }
}

#[test]
fn causal_conv_output_never_depends_on_later_inputs() {
    let mut r = Rng::new(7);
    let x = Tensor::randn(&[1, 2, 20], &mut r).unwrap();
    let w = Tensor::randn(&[3, 2, 3], &mut r).unwrap();
    let cfg = ops::Conv1dConfig::default()
        .with_padding(Padding::Causal)
        .with_dilation(2);
    let y0 = ops::conv1d(&x, &w, None, &cfg).unwrap().to_vec();
    for t_cut in [0, 5, 13, 19] {
        let mut xd = x.to_vec();
        for c in 0..2 {
            for k in t_cut + 1..20 {
                xd[c * 20 + k] += 10.0;
            }
        }
        let y1 = ops::conv1d(&t(&xd, &[1, 2, 20]), &w, None, &cfg)
            .unwrap()
            .to_vec();
        for o in 0..3 {
            for k in 0..=t_cut {
                assert_eq!(
                    y0[o * 20 + k].to_bits(),
                    y1[o * 20 + k].to_bits(),
                    "output {k} moved after changing inputs > {t_cut}"
                );
            }
        }
    }
    // `same` padding looks ahead, so it lacks this property.
    let same = ops::Conv1dConfig::default().with_padding(Padding::Same);
    let a = ops::conv1d(&x, &w, None, &same).unwrap().to_vec();
    let mut xd = x.to_vec();
    xd[10] += 1.0;
    let b = ops::conv1d(&t(&xd, &[1, 2, 20]), &w, None, &same)
        .unwrap()
        .to_vec();
    assert_ne!(a[9], b[9]);
}

#[test]
fn dropout_drops_at_the_rate_and_scales_the_survivors() {
    let x = Tensor::ones(&[100_000]).unwrap();
    let y = ops::dropout(&x, 0.3, true, &mut Rng::new(1))
        .unwrap()
        .to_vec();
    let zeros = y.iter().filter(|&&v| v == 0.0).count() as f64 / y.len() as f64;
    assert!((zeros - 0.3).abs() < 0.01, "{zeros}");
    assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
    assert_eq!(
        ops::dropout(&x, 0.3, false, &mut Rng::new(1))
            .unwrap()
            .to_vec(),
        x.to_vec()
    );
    let again = ops::dropout(&x, 0.3, true, &mut Rng::new(1))
        .unwrap()
        .to_vec();
    assert_eq!(y, again, "a seed gives the same mask");
    assert!(
        ops::dropout(&x, 1.0, true, &mut Rng::new(1))
            .unwrap()
            .to_vec()
            .iter()
            .all(|&v| v == 0.0)
    );
}

#[test]
fn spatial_dropout_drops_whole_channels() {
    let x = Tensor::ones(&[8, 16, 3, 3]).unwrap();
    let y = ops::spatial_dropout(&x, 0.5, true, &mut Rng::new(2))
        .unwrap()
        .to_vec();
    let mut dropped = 0;
    for plane in y.chunks(9) {
        assert!(
            plane.iter().all(|&v| v == plane[0]),
            "a channel is dropped whole or kept whole"
        );
        dropped += (plane[0] == 0.0) as usize;
    }
    assert!(
        dropped > 30 && dropped < 98,
        "{dropped} of 128 channels dropped"
    );
}

#[test]
fn batch_norm_tracks_running_statistics_like_pytorch() {
    let x = t(&[1.0, 2.0, 3.0, 6.0], &[4, 1]);
    let (rm, rv) = (Tensor::zeros(&[1]).unwrap(), Tensor::ones(&[1]).unwrap());
    let args = ops::BatchNormArgs {
        running_mean: Some(&rm),
        running_var: Some(&rv),
        ..Default::default()
    };
    ops::batch_norm(&x, &args).unwrap();
    // mean 3, unbiased variance 14/3; momentum 0.1
    assert!((rm.to_vec()[0] - 0.3).abs() < 1e-6);
    assert!((rv.to_vec()[0] - (0.9 + 0.1 * 14.0 / 3.0)).abs() < 1e-6);
    let eval = ops::BatchNormArgs {
        training: false,
        ..args
    };
    let y = ops::batch_norm(&t(&[0.3], &[1, 1]), &eval).unwrap();
    assert!(
        y.to_vec()[0].abs() < 1e-6,
        "evaluation uses the running statistics"
    );
}

#[test]
fn initialisers_follow_pytorch_bounds_and_are_seeded() {
    let shape = [64, 32, 3, 3];
    let fan_in = 32.0 * 9.0f32;
    let w = init::default_weight(&shape, &mut Rng::new(1))
        .unwrap()
        .to_vec();
    let bound = 1.0 / fan_in.sqrt();
    assert!(w.iter().all(|v| v.abs() <= bound));
    assert!(w.iter().any(|v| v.abs() > 0.95 * bound));
    assert_eq!(
        w,
        init::default_weight(&shape, &mut Rng::new(1))
            .unwrap()
            .to_vec()
    );
    assert_ne!(
        w,
        init::default_weight(&shape, &mut Rng::new(2))
            .unwrap()
            .to_vec()
    );
    let std =
        |v: &[f32]| (v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
    let k = init::kaiming_normal(
        &shape,
        init::FanMode::FanIn,
        init::gain("relu", None).unwrap(),
        &mut Rng::new(3),
    )
    .unwrap()
    .to_vec();
    assert!((std(&k) / (2.0 / fan_in as f64).sqrt() - 1.0).abs() < 0.02);
    let ku = init::kaiming_uniform(&shape, init::FanMode::FanOut, 1.0, &mut Rng::new(3))
        .unwrap()
        .to_vec();
    let fan_out = 64.0 * 9.0;
    assert!(ku.iter().all(|v| v.abs() <= (3.0f32 / fan_out).sqrt()));
    let xu = init::xavier_uniform(&[10, 30], 1.0, &mut Rng::new(4))
        .unwrap()
        .to_vec();
    assert!(xu.iter().all(|v| v.abs() <= (6.0f32 / 40.0).sqrt()));
    let xn = init::xavier_normal(&[200, 300], 1.0, &mut Rng::new(5))
        .unwrap()
        .to_vec();
    assert!((std(&xn) / (2.0f64 / 500.0).sqrt() - 1.0).abs() < 0.02);
    let b = init::default_bias(&shape, 64, &mut Rng::new(6))
        .unwrap()
        .to_vec();
    assert!(b.len() == 64 && b.iter().all(|v| v.abs() <= bound));
    // ConvTranspose weights (c_in, c_out, k, k): PyTorch takes fan_in from dimension 1.
    assert_eq!(init::fans(&[16, 8, 4, 4]).unwrap(), (8 * 16, 16 * 16));
    assert!(init::fans(&[5]).is_err());
}
