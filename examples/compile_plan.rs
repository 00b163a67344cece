//! Compile a model into an execution plan and run inference on it: the plan's steps (what
//! was fused), its output against the eager engine's, and the time of each step.
//!
//!     cargo run --release --example compile_plan [SPEC] [BATCH] [--train]
//!
//! With `--train`, the training plan instead: the time of each step's forward and backward.

use convnet::autograd::no_grad;
use convnet::nn::Ctx;
use convnet::plan::{Plan, TrainPlan};
use convnet::rng::Rng;
use convnet::spec::Spec;
use convnet::tensor::Tensor;

fn main() -> convnet::error::Result<()> {
    let mut args: Vec<String> = std::env::args().collect();
    let train = args.iter().any(|a| a == "--train");
    args.retain(|a| a != "--train");
    let path = args
        .get(1)
        .map_or("examples/fashion_mnist.toml", |s| s.as_str());
    let batch: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(256);
    let spec = Spec::load(std::path::Path::new(path))?;
    let model = spec.build_model(&mut Rng::new(1))?;
    if train {
        return train_profile(&spec, batch);
    }
    // compile for the model's input shape and a largest batch
    let mut plan = Plan::compile(&model, &model.input, batch)?;
    let mut shape = vec![batch];
    shape.extend(&model.input);
    let x = Tensor::randn(&shape, &mut Rng::new(2))?;
    let xs = x.to_vec();
    let eager = no_grad(|| {
        model.forward(
            &x,
            &mut Ctx {
                training: false,
                rng: &mut Rng::new(0),
                lengths: None,
            },
        )
    })?;
    let out = plan.run(&xs)?;
    let diff = out
        .iter()
        .zip(eager.to_vec())
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    println!("{path}, batch {batch}: largest difference from the eager engine {diff:.2e}");
    for _ in 0..3 {
        plan.run(&xs)?; // warm up
    }
    let mut total = vec![0f64; plan.steps().len()];
    let runs = 20;
    for _ in 0..runs {
        for (t, s) in total.iter_mut().zip(plan.run_timed(&xs)?) {
            *t += s;
        }
    }
    for (name, t) in plan.steps().iter().zip(&total) {
        println!("{:>8.3} ms  {name}", t * 1e3 / runs as f64);
    }
    let sum: f64 = total.iter().sum();
    println!("{:>8.3} ms  in all", sum * 1e3 / runs as f64);
    Ok(())
}

/// The training plan's time by step and direction, medians of 20 steps after 3 warm-up steps.
fn train_profile(spec: &Spec, batch: usize) -> convnet::error::Result<()> {
    let model = spec.build_model(&mut Rng::new(1))?;
    let mut plan = TrainPlan::compile(&model, &model.input, batch)?;
    let mut shape = vec![batch];
    shape.extend(&model.input);
    let xs = Tensor::randn(&shape, &mut Rng::new(2))?.to_vec();
    let out: usize = plan.output_shape().iter().product();
    let dy = vec![1.0 / (batch * out) as f32; batch * out];
    let mut rng = Rng::new(3);
    let mut runs = Vec::new();
    for i in 0..23 {
        let t = plan.profile(&xs, &dy, &mut rng)?;
        if i >= 3 {
            runs.push(t);
        }
    }
    let median = |f: &dyn Fn(&[(f64, f64)]) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(|r| f(r)).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] * 1e3
    };
    println!("training plan, batch {batch}: forward ms, backward ms by step");
    for (k, name) in plan.steps().iter().enumerate() {
        let (f, b) = (median(&|r| r[k].0), median(&|r| r[k].1));
        println!("{f:>8.3} {b:>8.3}  {name}");
    }
    let (f, b) = (
        median(&|r| r.iter().map(|t| t.0).sum()),
        median(&|r| r.iter().map(|t| t.1).sum()),
    );
    println!("{f:>8.3} {b:>8.3}  in all");
    Ok(())
}
