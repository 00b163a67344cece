//! The compiled plan against the eager engine (the reference): every example spec and every
//! layer type the plan runs, at the full batch and a smaller one, with batch-norm statistics
//! that make the folding matter; layers it does not run are named in the error.

use convnet::autograd::no_grad;
use convnet::nn::{Ctx, Sequential};
use convnet::plan::Plan;
use convnet::rng::Rng;
use convnet::spec::Spec;
use convnet::tensor::Tensor;

/// Running statistics and affine parameters away from their defaults, so that folding a batch
/// norm into a convolution is exercised.
fn randomize_norms(model: &Sequential, rng: &mut Rng) {
    for (name, t) in model.state_dict() {
        let stat = name.ends_with("running_mean") || name.ends_with("running_var");
        let bn_affine = name.contains("running") || model_has_bn_param(model, &name);
        if !(stat || bn_affine) {
            continue;
        }
        let mut d = t.data_mut();
        for v in d.iter_mut() {
            *v = if name.ends_with("running_var") {
                0.5 + rng.uniform()
            } else {
                rng.normal() * 0.5 + if name.ends_with("weight") { 1.0 } else { 0.0 }
            };
        }
    }
}

/// Whether `name` is the weight or bias of a batch norm (a 1-D parameter beside running stats).
fn model_has_bn_param(model: &Sequential, name: &str) -> bool {
    let prefix = name.rsplit_once('.').map_or("", |(p, _)| p);
    model
        .state_dict()
        .iter()
        .any(|(n, _)| n == &format!("{prefix}.running_mean"))
}

fn eager(model: &Sequential, x: &Tensor) -> Vec<f32> {
    let mut rng = Rng::new(0);
    no_grad(|| {
        model.forward(
            x,
            &mut Ctx {
                training: false,
                rng: &mut rng,
                lengths: None,
            },
        )
    })
    .unwrap()
    .to_vec()
}

/// `got` equals `want` within 1e-5 of the larger of 1 and the output's largest magnitude.
fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * scale,
            "{what}: [{i}] plan {a} vs eager {b} (scale {scale})"
        );
    }
}

/// Compile `model` for batch 5 and compare with the eager engine at batches 5 and 2.
fn check(model: &Sequential, input: &[usize], what: &str) {
    let mut rng = Rng::new(3);
    randomize_norms(model, &mut rng);
    let mut plan = Plan::compile(model, input, 5).unwrap_or_else(|e| panic!("{what}: {e}"));
    for n in [5, 2] {
        let mut shape = vec![n];
        shape.extend(input);
        let x = Tensor::randn(&shape, &mut rng).unwrap();
        let want = eager(model, &x);
        let got = plan.run(&x.to_vec()).unwrap().to_vec();
        assert_close(&got, &want, &format!("{what}, batch {n}"));
    }
}

fn model_of(text: &str) -> Sequential {
    Spec::parse(text, std::path::Path::new("t.toml"))
        .unwrap()
        .build_model(&mut Rng::new(1))
        .unwrap()
}

#[test]
fn every_example_spec_runs_on_the_plan_or_names_the_layer_it_cannot() {
    let mut compiled = Vec::new();
    let mut dir: Vec<_> = std::fs::read_dir("examples")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    dir.sort();
    for path in dir {
        let spec = Spec::load(&path).unwrap();
        let model = spec.build_model(&mut Rng::new(2)).unwrap();
        let what = path.display().to_string();
        match Plan::compile(&model, &model.input, 5) {
            Ok(_) => {
                check(&model, &model.input.clone(), &what);
                compiled.push(what);
            }
            Err(e) => {
                let msg = e.to_string();
                let opaque = ["residual", "tcn", "wavenet", "conv2d_transpose", "upsample"];
                assert!(
                    msg.contains("not compiled") && opaque.iter().any(|k| msg.contains(k)),
                    "{what}: {msg}"
                );
            }
        }
    }
    for must in [
        "fashion_mnist.toml",
        "classic_cnn.toml",
        "italypower_fcn.toml",
        "sunspots_conv1d.toml",
    ] {
        assert!(
            compiled.iter().any(|p| p.ends_with(must)),
            "{must} must compile: {compiled:?}"
        );
    }
}

#[test]
fn every_layer_type_the_plan_runs_matches_the_eager_engine() {
    // 2-D: strided, dilated, grouped, depthwise and 1x1 convolutions, every elementwise
    // activation (own and as a layer), batch norm folded and standalone, both poolings with
    // padding and ceil mode, global pools, reshape, dropout, dense with an activation, softmax.
    let two_d = r#"
[model]
input = [3, 13, 11]
[[model.layers]]
type = "conv2d"
filters = 6
kernel_size = [3, 2]
strides = [2, 1]
padding = "same"
[[model.layers]]
type = "batch_norm"
[[model.layers]]
type = "activation"
activation = "elu"
[[model.layers]]
type = "conv2d"
filters = 6
kernel_size = 3
dilation_rate = 2
padding = 2
groups = 3
activation = "leaky_relu"
[[model.layers]]
type = "batch_norm"
[[model.layers]]
type = "conv2d"
filters = 6
kernel_size = 3
groups = 6
padding = "valid"
activation = "gelu"
[[model.layers]]
type = "avg_pool2d"
pool_size = 3
strides = 2
padding = 1
ceil_mode = true
[[model.layers]]
type = "conv2d"
filters = 8
kernel_size = 1
activation = "tanh"
[[model.layers]]
type = "max_pool2d"
pool_size = 2
padding = 1
[[model.layers]]
type = "spatial_dropout"
rate = 0.3
[[model.layers]]
type = "flatten"
[[model.layers]]
type = "dense"
units = 7
activation = "sigmoid"
[[model.layers]]
type = "dropout"
rate = 0.5
[[model.layers]]
type = "dense"
units = 4
activation = "softmax"
"#;
    check(&model_of(two_d), &[3, 13, 11], "2-D layers");

    // 1-D: causal and dilated convolutions, batch norm over (c, l), global pools, reshape,
    // log-softmax as its own layer.
    let one_d = r#"
[model]
input = [2, "any"]
[[model.layers]]
type = "conv1d"
filters = 5
kernel_size = 3
padding = "causal"
dilation_rate = 2
[[model.layers]]
type = "batch_norm"
[[model.layers]]
type = "activation"
activation = "relu"
[[model.layers]]
type = "max_pool1d"
pool_size = 2
[[model.layers]]
type = "conv1d"
filters = 4
kernel_size = 2
strides = 2
activation = "relu"
[[model.layers]]
type = "global_avg_pool"
[[model.layers]]
type = "reshape"
target_shape = [4]
[[model.layers]]
type = "dense"
units = 3
[[model.layers]]
type = "activation"
activation = "log_softmax"
"#;
    let m = model_of(one_d);
    check(&m, &[2, 40], "1-D layers at length 40");
    check(&m, &[2, 17], "1-D layers at length 17");

    let global_max = r#"
[model]
input = [3, 9, 9]
[[model.layers]]
type = "batch_norm"
[[model.layers]]
type = "conv2d"
filters = 4
kernel_size = 3
activation = "softmax"
[[model.layers]]
type = "global_max_pool"
"#;
    check(
        &model_of(global_max),
        &[3, 9, 9],
        "softmax conv, global max",
    );
}

#[test]
fn layers_the_plan_does_not_run_are_named() {
    let m = model_of(
        r#"
[model]
input = [2, 8, 8]
[[model.layers]]
type = "conv2d"
filters = 4
kernel_size = 3
[[model.layers]]
type = "upsample"
size = 2
"#,
    );
    let e = Plan::compile(&m, &[2, 8, 8], 4).err().unwrap().to_string();
    assert!(
        e.contains("layers.1 (upsample)") && e.contains("not compiled"),
        "{e}"
    );
    let m = model_of(
        r#"
[model]
input = [2, 8, 8]
[[model.layers]]
type = "conv2d"
filters = 4
kernel_size = 3
padding = "same"
padding_mode = "reflect"
"#,
    );
    let e = Plan::compile(&m, &[2, 8, 8], 4).err().unwrap().to_string();
    assert!(
        e.contains("layers.0 (conv2d)") && e.contains("reflect"),
        "{e}"
    );
}

#[test]
fn a_run_checks_its_batch() {
    let m = model_of("[model]\ninput = [4]\n[[model.layers]]\ntype = \"dense\"\nunits = 2\n");
    let mut plan = Plan::compile(&m, &[4], 3).unwrap();
    for bad in [0, 3, 16] {
        let e = plan.run(&vec![0.0; bad]).err().unwrap().to_string();
        assert!(e.contains("samples shaped [4]"), "{bad}: {e}");
    }
    assert_eq!(plan.run(&[1.0; 12]).unwrap().len(), 6);
}

#[test]
fn inference_compiles_one_plan_per_shape_and_falls_back_to_eager_naming_why() {
    let m = model_of(
        r#"
[model]
input = [1, "any"]
[[model.layers]]
type = "conv1d"
filters = 3
kernel_size = 3
padding = "same"
activation = "relu"
[[model.layers]]
type = "global_max_pool"
"#,
    );
    let mut infer = convnet::plan::Inference::new(&m, 4);
    let mut rng = Rng::new(9);
    for len in [12, 7, 12] {
        let x = Tensor::randn(&[3, 1, len], &mut rng).unwrap();
        let got = infer.forward(&x).unwrap();
        assert_eq!(got.shape(), &[3, 3]);
        assert_close(&got.to_vec(), &eager(&m, &x), &format!("length {len}"));
    }
    assert!(infer.eager_because().is_none());
    let up =
        model_of("[model]\ninput = [1, 4, 4]\n[[model.layers]]\ntype = \"upsample\"\nsize = 2\n");
    let mut infer = convnet::plan::Inference::new(&up, 4);
    let x = Tensor::randn(&[2, 1, 4, 4], &mut rng).unwrap();
    assert_eq!(infer.forward(&x).unwrap().to_vec(), eager(&up, &x));
    assert!(
        infer
            .eager_because()
            .unwrap()
            .contains("layers.0 (upsample)")
    );
}

/// `got` equals `want` within `tol` of the larger of 1 and `want`'s largest magnitude.
fn assert_rel(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(1e-30f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= tol * scale,
            "{what}: [{i}] plan {a} vs eager {b} (largest {scale})"
        );
    }
}

/// Train `spec`'s model three steps with SGD both eagerly and on a training plan (two
/// copies with the same initial weights, the same batches and dropout seeds): outputs, loss
/// and every gradient of the first step agree within 1e-5; those of later steps (computed
/// from weights that optimizer steps have already moved apart by rounding) and the weights
/// and batch-norm statistics after the steps within 1e-4.
fn check_training(text: &str, input: &[usize], classes: usize, what: &str) {
    use convnet::ops;
    use convnet::optim::{Optimizer, OptimizerKind};
    let (eager_m, plan_m) = (model_of(text), model_of(text));
    let mut plan = convnet::plan::TrainPlan::compile(&plan_m, input, 6)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    // SGD with momentum: Adam divides each gradient by its own running magnitude, so a
    // gradient near zero that rounds differently in the two engines moves its weight by up
    // to 2 * lr either way, and the comparison after the steps would measure that, not the plan
    let sgd = || {
        let kind = OptimizerKind::Sgd {
            momentum: 0.9,
            nesterov: false,
            dampening: 0.0,
        };
        Optimizer::new(kind, 0.0).unwrap()
    };
    let (mut opt_e, mut opt_p) = (sgd(), sgd());
    let (pe, pp) = (eager_m.named_params(), plan_m.named_params());
    let mut data = Rng::new(4);
    for step in 0..3 {
        let n = if step == 1 { 4 } else { 6 }; // a smaller batch too
        let mut shape = vec![n];
        shape.extend(input);
        let x = Tensor::randn(&shape, &mut data).unwrap();
        let labels: Vec<usize> = (0..n).map(|_| data.below(classes)).collect();
        let ce = |out: &Tensor| ops::cross_entropy(out, &labels, &Default::default());
        let mut rng = Rng::new(50 + step);
        let out_e = eager_m
            .forward(
                &x,
                &mut Ctx {
                    training: true,
                    rng: &mut rng,
                    lengths: None,
                },
            )
            .unwrap();
        let loss_e = ce(&out_e).unwrap();
        loss_e.backward().unwrap();
        let mut rng = Rng::new(50 + step);
        let (out_p, loss_p) = plan.step(&x, &mut rng, ce).unwrap();
        let at = format!("{what}, step {step}");
        let tol = if step == 0 { 1e-5 } else { 1e-4 };
        assert_rel(
            &out_p.to_vec(),
            &out_e.to_vec(),
            tol,
            &format!("{at}: outputs"),
        );
        assert_rel(
            &loss_p.to_vec(),
            &loss_e.to_vec(),
            tol,
            &format!("{at}: loss"),
        );
        for ((name, a), (_, b)) in pe.iter().zip(&pp) {
            let (ga, gb) = (a.grad().unwrap(), b.grad().unwrap());
            assert_rel(
                &gb.to_vec(),
                &ga.to_vec(),
                tol,
                &format!("{at}: grad {name}"),
            );
        }
        opt_e.step(&pe, 0.05).unwrap();
        opt_p.step(&pp, 0.05).unwrap();
    }
    for ((name, a), (_, b)) in eager_m.state_dict().iter().zip(&plan_m.state_dict()) {
        assert_rel(
            &b.to_vec(),
            &a.to_vec(),
            1e-4,
            &format!("{what}: {name} after 3 steps"),
        );
    }
}

/// Convolutions pooled from their bands in training (with an activation, with none, odd
/// sizes whose last row and column the pooling drops), as bench's F and classic_cnn.toml.
const POOLED: &str = r#"
[model]
input = [2, 11, 10]
[[model.layers]]
type = "conv2d"
filters = 9
kernel_size = 3
padding = 1
activation = "relu"
[[model.layers]]
type = "max_pool2d"
pool_size = 2
[[model.layers]]
type = "conv2d"
filters = 8
kernel_size = 3
padding = "same"
use_bias = false
[[model.layers]]
type = "max_pool2d"
pool_size = 2
[[model.layers]]
type = "flatten"
[[model.layers]]
type = "dense"
units = 3
"#;

#[test]
fn training_steps_on_the_plan_match_the_eager_engine() {
    let spec = std::fs::read_to_string("examples/fashion_mnist.toml").unwrap();
    let model = spec[..spec.find("[data]").unwrap()].to_string();
    check_training(&model, &[1, 28, 28], 10, "fashion_mnist.toml");
    let two_d = r#"
[model]
input = [3, 11, 9]
[[model.layers]]
type = "conv2d"
filters = 6
kernel_size = 3
strides = 2
padding = "same"
activation = "tanh"
[[model.layers]]
type = "conv2d"
filters = 6
kernel_size = 3
groups = 3
dilation_rate = 2
padding = 2
[[model.layers]]
type = "activation"
activation = "gelu"
[[model.layers]]
type = "avg_pool2d"
pool_size = 2
padding = 1
[[model.layers]]
type = "batch_norm"
[[model.layers]]
type = "activation"
activation = "leaky_relu"
[[model.layers]]
type = "spatial_dropout"
rate = 0.3
[[model.layers]]
type = "conv2d"
filters = 5
kernel_size = 1
[[model.layers]]
type = "global_max_pool"
[[model.layers]]
type = "dense"
units = 4
activation = "sigmoid"
"#;
    check_training(two_d, &[3, 11, 9], 4, "2-D layers");
    let one_d = r#"
[model]
input = [2, 30]
[[model.layers]]
type = "conv1d"
filters = 4
kernel_size = 3
padding = "causal"
dilation_rate = 2
use_bias = false
[[model.layers]]
type = "batch_norm"
[[model.layers]]
type = "activation"
activation = "relu"
[[model.layers]]
type = "max_pool1d"
pool_size = 2
[[model.layers]]
type = "conv1d"
filters = 6
kernel_size = 3
activation = "elu"
[[model.layers]]
type = "global_avg_pool"
[[model.layers]]
type = "dropout"
rate = 0.2
[[model.layers]]
type = "dense"
units = 3
"#;
    check_training(one_d, &[2, 30], 3, "1-D layers");
    check_training(POOLED, &[2, 11, 10], 3, "convolutions with max pooling");
}

#[test]
fn plan_results_are_bit_identical_for_one_two_and_three_threads() {
    let spec = std::fs::read_to_string("examples/fashion_mnist.toml").unwrap();
    let fashion = spec[..spec.find("[data]").unwrap()].to_string();
    for (text, input, classes) in [(&fashion[..], [1, 28, 28], 10), (POOLED, [2, 11, 10], 3)] {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let m = model_of(text);
                let mut shape = vec![7];
                shape.extend(input);
                let x = Tensor::randn(&shape, &mut Rng::new(5)).unwrap();
                let labels: Vec<usize> = (0..7).map(|i| i % classes).collect();
                let mut plan = convnet::plan::TrainPlan::compile(&m, &input, 7).unwrap();
                let (out, _) = plan
                    .step(&x, &mut Rng::new(1), |o| {
                        convnet::ops::cross_entropy(o, &labels, &Default::default())
                    })
                    .unwrap();
                let mut bits: Vec<u32> = out.to_vec().iter().map(|v| v.to_bits()).collect();
                for (_, p) in m.named_params() {
                    bits.extend(p.grad().unwrap().to_vec().iter().map(|v| v.to_bits()));
                }
                let mut infer = Plan::compile(&m, &input, 7).unwrap();
                bits.extend(infer.run(&x.to_vec()).unwrap().iter().map(|v| v.to_bits()));
                bits
            })
        };
        let one = run(1);
        assert_eq!(one, run(2), "{input:?}: 2 threads");
        assert_eq!(one, run(3), "{input:?}: 3 threads");
    }
}

/// The loss a training plan computes itself (`train_step` with a `PlanLoss`) gives the eager
/// op's loss and, through backward, the same gradients, to the bit: cross-entropy (plain,
/// with label smoothing and class weights) and each elementwise loss; a batch's targets of
/// the wrong length are an error naming them.
#[test]
fn the_plans_own_loss_equals_the_eager_loss_to_the_bit() {
    use convnet::ops::{self, CrossEntropyOptions, PointLoss};
    use convnet::plan::{PlanLoss, TrainPlan};
    let text = r#"
[model]
input = [2, 6, 6]
[[model.layers]]
type = "conv2d"
filters = 4
kernel_size = 3
activation = "relu"
[[model.layers]]
type = "max_pool2d"
pool_size = 2
[[model.layers]]
type = "flatten"
[[model.layers]]
type = "dense"
units = 3
"#;
    let m = model_of(text);
    let mut plan = TrainPlan::compile(&m, &[2, 6, 6], 5).unwrap();
    let mut data = Rng::new(9);
    let x = Tensor::randn(&[5, 2, 6, 6], &mut data).unwrap();
    let labels = [2usize, 0, 1, 1, 2];
    let soft: Vec<f32> = (0..15).map(|_| data.uniform()).collect();
    let targets = Tensor::from_vec(soft.clone(), &[5, 3]).unwrap();
    let bits = |plan: &TrainPlan, loss: f32| {
        let mut b = vec![loss.to_bits()];
        b.extend(plan.outputs().iter().map(|v| v.to_bits()));
        for (_, p) in m.named_params() {
            b.extend(p.grad().unwrap().to_vec().iter().map(|v| v.to_bits()));
        }
        b
    };
    let smoothed = CrossEntropyOptions {
        class_weights: Some(vec![0.5, 2.0, 1.0]),
        label_smoothing: 0.2,
    };
    let plain = CrossEntropyOptions::default();
    for options in [&plain, &smoothed] {
        let (_, l) = plan
            .step(&x, &mut Rng::new(1), |o| {
                ops::cross_entropy(o, &labels, options)
            })
            .unwrap();
        let eager = bits(&plan, l.item().unwrap());
        let loss = PlanLoss::CrossEntropy {
            targets: &labels,
            options,
        };
        let l = plan.train_step(&x.data(), loss, &mut Rng::new(1)).unwrap();
        assert_eq!(bits(&plan, l), eager, "cross-entropy {options:?}");
    }
    for kind in [
        PointLoss::Mse,
        PointLoss::Mae,
        PointLoss::Huber(0.3),
        PointLoss::Bce(2.0),
    ] {
        let eager_op = |o: &Tensor| match kind {
            PointLoss::Mse => ops::mse(o, &targets),
            PointLoss::Mae => ops::mae(o, &targets),
            PointLoss::Huber(d) => ops::huber(o, &targets, d),
            PointLoss::Bce(p) => ops::binary_cross_entropy_with_logits(o, &targets, Some(p)),
        };
        let (_, l) = plan.step(&x, &mut Rng::new(1), eager_op).unwrap();
        let eager = bits(&plan, l.item().unwrap());
        let loss = PlanLoss::Pointwise {
            kind,
            targets: &soft,
        };
        let l = plan.train_step(&x.data(), loss, &mut Rng::new(1)).unwrap();
        assert_eq!(bits(&plan, l), eager, "{kind:?}");
    }
    let short = PlanLoss::CrossEntropy {
        targets: &labels[..3],
        options: &plain,
    };
    let e = plan
        .train_step(&x.data(), short, &mut Rng::new(1))
        .unwrap_err();
    assert!(e.to_string().contains("3 targets for 5 rows"), "{e}");
    let short = PlanLoss::Pointwise {
        kind: PointLoss::Mse,
        targets: &soft[..14],
    };
    let e = plan
        .train_step(&x.data(), short, &mut Rng::new(1))
        .unwrap_err();
    assert!(e.to_string().contains("14 targets for 15 outputs"), "{e}");
}
