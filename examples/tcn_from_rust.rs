//! A TCN forecaster built and trained from Rust, without a spec: one step ahead on a noisy
//! sine wave, beside the naive (last value) forecast.
//!
//! Run: cargo run --release --example tcn_from_rust

use convnet::data::windows;
use convnet::nn::{Activation, Ctx, Dense, Sequential, Tcn, TcnConfig, TcnNorm};
use convnet::ops;
use convnet::optim::{Optimizer, OptimizerKind};
use convnet::train::forecast::forecast_metrics;
use convnet::{Rng, no_grad};

fn main() -> convnet::Result<()> {
    let mut rng = Rng::new(7);
    let series: Vec<f32> = (0..1200)
        .map(|t| (t as f32 * 0.15).sin() + 0.1 * rng.normal())
        .collect();
    let (window, split) = (32, 1000);
    let train = windows(&[&series], &[&series], window, 1, 1, window..split);
    let val = windows(&[&series], &[&series], window, 1, 1, split..series.len());

    let tcn = Tcn::new(
        1,
        TcnConfig {
            nb_filters: 16,
            kernel_size: 2,
            dilations: vec![1, 2, 4, 8, 16],
            norm: TcnNorm::Weight,
            ..TcnConfig::default()
        },
        &mut rng,
    )?;
    println!(
        "receptive field: {} steps (keras-tcn's formula 1 + 2 (k - 1) stacks sum(d))",
        tcn.config.receptive_field()
    );
    let mut model = Sequential::new(vec![1, window]);
    model.push(Box::new(tcn))?;
    model.push(Box::new(Dense::new(
        16,
        1,
        true,
        Activation::Linear,
        &mut rng,
    )?))?;
    println!("{}", convnet::explain::summarize(&model)?.to_table());

    let params = model.named_params();
    let mut opt = Optimizer::new(
        OptimizerKind::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        0.0,
    )?;
    let batch = 32;
    for epoch in 1..=10 {
        let mut order: Vec<usize> = (0..train.len()).collect();
        rng.shuffle(&mut order);
        let mut loss_sum = 0.0;
        for idx in train.batches(&order, batch) {
            let x = train.batch_input(&idx, |_, _| {})?;
            let y = train
                .batch_targets(&idx, None)?
                .expect("regression targets");
            let out = model.forward(
                &x,
                &mut Ctx {
                    training: true,
                    rng: &mut rng,
                    lengths: None,
                },
            )?;
            let loss = ops::mse(&out, &y)?;
            loss_sum += loss.item()? as f64 * idx.len() as f64;
            loss.backward()?;
            opt.step(&params, 2e-3)?;
        }
        println!(
            "epoch {epoch}: train MSE {:.4}",
            loss_sum / train.len() as f64
        );
    }

    let all: Vec<usize> = (0..val.len()).collect();
    let x = val.batch_input(&all, |_, _| {})?;
    let pred = no_grad(|| {
        model.forward(
            &x,
            &mut Ctx {
                training: false,
                rng: &mut rng,
                lengths: None,
            },
        )
    })?;
    let truth = val.targets.clone();
    let naive: Vec<f32> = (0..val.len()).map(|i| val.sample(i)[window - 1]).collect();
    let m = forecast_metrics(&pred.to_vec(), &truth, None);
    let n = forecast_metrics(&naive, &truth, None);
    println!("validation MAE: TCN {:.4}, naive {:.4}", m.mae, n.mae);
    Ok(())
}
