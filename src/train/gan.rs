//! Generative adversarial training (DCGAN, Radford et al. 2016): a generator maps noise to
//! images, a discriminator scores images as real or generated; each step the discriminator
//! learns to tell a real batch from a generated one (binary cross-entropy of its logits), then
//! the generator learns to make the discriminator call its images real (`[train]
//! label_smoothing` lowers the real images' target, one-sided). After every epoch a
//! grid of samples from one fixed noise batch is written, so a person watches the images form.
//!
//! Run directory: spec.toml, run.json, last.safetensors (the generator's state dict),
//! discriminator.safetensors, metrics.csv, curves.png/svg, samples_epoch_NNN.png.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::autograd::no_grad;
use crate::data::{Loader, Normalize};
use crate::error::{Error, Result};
use crate::io;
use crate::nn::{Ctx, Sequential, fmt_shape};
use crate::ops;
use crate::optim::Optimizer;
use crate::rng::Rng;
use crate::spec::{Spec, with_trail};
use crate::tensor::Tensor;

use super::{Observer, RunInfo, files, mix, plot, prepare_samples, split_seed, write_file};

/// One epoch of adversarial training.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct GanRow {
    pub epoch: usize,
    pub d_loss: f64,
    pub g_loss: f64,
    /// The discriminator's mean probability that real images are real.
    pub d_real: f64,
    /// ... and that generated images are real (before the generator's step).
    pub d_fake: f64,
    pub seconds: f64,
}

/// The discriminator's weights in a GAN's run directory.
pub const DISCRIMINATOR: &str = "discriminator.safetensors";

/// Build a GAN's two models and check that they fit each other and the data.
pub fn build_gan(spec: &Spec, seed: u64) -> Result<(Sequential, Sequential)> {
    let g = spec.build_model(&mut Rng::new(mix(seed, 0x6e17)))?;
    let d = spec
        .build_discriminator(&mut Rng::new(mix(seed, 0xd15c)))?
        .ok_or_else(|| spec.err("top level", "a GAN needs a [discriminator]".into()))?;
    if g.output_shape() != &d.input[..] {
        let e = spec.err(
            "[generator]",
            format!(
                "the generator makes {} samples but the discriminator takes {}",
                fmt_shape(g.output_shape()),
                fmt_shape(&d.input)
            ),
        );
        return Err(with_trail(e, &g));
    }
    if d.output_shape().iter().product::<usize>() != 1 {
        return Err(with_trail(
            spec.err(
                "[discriminator]",
                format!(
                    "the discriminator must output one logit per sample, this one outputs {}",
                    fmt_shape(d.output_shape())
                ),
            ),
            &d,
        ));
    }
    Ok((g, d))
}

/// `n` noise vectors for a generator taking `shape` per sample.
pub fn noise(n: usize, shape: &[usize], rng: &mut Rng) -> Result<Tensor> {
    let mut s = vec![n];
    s.extend(shape);
    Tensor::randn(&s, rng)
}

/// Generate `n` samples (eval mode) and undo the data's normalisation, so pixels are in [0, 1].
pub fn generate(
    g: &Sequential,
    n: usize,
    norm: &Normalize,
    rng: &mut Rng,
) -> Result<Vec<Vec<f32>>> {
    // the noise drawn in one go, so that a count's first images do not depend on the count
    let z = noise(n, &g.input, rng)?;
    let per = z.numel() / n.max(1);
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(256) {
        let k = (n - start).min(256);
        let mut s = vec![k];
        s.extend(&g.input);
        let chunk = Tensor::from_vec(z.data()[start * per..(start + k) * per].to_vec(), &s)?;
        out.extend(sample(g, &chunk, norm)?);
    }
    Ok(out)
}

/// The generator's images (eval mode) for the noise batch `z`, in the data's units.
fn sample(g: &Sequential, z: &Tensor, norm: &Normalize) -> Result<Vec<Vec<f32>>> {
    let n = z.shape()[0];
    let y = no_grad(|| {
        g.forward(
            z,
            &mut Ctx {
                training: false,
                rng: &mut Rng::new(0),
                lengths: None,
            },
        )
    })?;
    let per = y.numel() / n.max(1);
    let c = norm.mean.len().max(1);
    let plane = per / c;
    Ok(y.data()
        .chunks(per)
        .map(|s| {
            s.iter()
                .enumerate()
                .map(|(i, &v)| v * norm.std[i / plane] + norm.mean[i / plane])
                .collect()
        })
        .collect())
}

/// Samples as a PNG grid of `cols` per row.
pub fn sample_grid(path: &Path, samples: &[Vec<f32>], shape: &[usize], cols: usize) -> Result<()> {
    let rows: Vec<Vec<&[f32]>> = samples
        .chunks(cols.max(1))
        .map(|r| r.iter().map(|s| s.as_slice()).collect())
        .collect();
    plot::image_grid(path, &rows, shape)
}

fn bce_to(logits: &Tensor, target: f32) -> Result<Tensor> {
    let t = Tensor::full(logits.shape(), target)?;
    ops::binary_cross_entropy_with_logits(logits, &t, None)
}

fn mean_prob(logits: &Tensor) -> f64 {
    let d = logits.data();
    d.iter()
        .map(|&x| 1.0 / (1.0 + (-x as f64).exp()))
        .sum::<f64>()
        / d.len().max(1) as f64
}

/// Train the GAN that `spec` describes into `dir` (which the caller created).
pub fn train_gan(
    spec: &Spec,
    dir: &Path,
    stop: Option<Arc<AtomicBool>>,
    obs: &mut dyn Observer,
) -> Result<Vec<GanRow>> {
    let t = &spec.train;
    let _lock = super::rundir::Lock::acquire(dir)?;
    super::memory::check_fits(spec)?;
    let (g, d) = build_gan(spec, t.seed)?;
    let prepared = prepare_samples(spec, usize::MAX, split_seed(t.seed))?;
    let shape = d.input.clone();
    write_file(&dir.join(files::SPEC), &spec.text)?;
    let info = RunInfo {
        convnet_version: crate::VERSION.into(),
        class_names: Vec::new(),
        normalize_mean: prepared.normalize.mean.clone(),
        normalize_std: prepared.normalize.std.clone(),
        best_epoch: None,
        monitor: "none".into(),
        finished: false,
        seed: t.seed,
        epochs: t.epochs,
        threads: Some(rayon::current_num_threads()),
        spec_dir: spec.base().map(Path::to_path_buf),
        target_names: Vec::new(),
        target_mean: Vec::new(),
        target_std: Vec::new(),
        normalize_per_series: prepared.normalize.per_sample,
    };
    info.save(dir)?;
    let (gp, dp) = (g.named_params(), d.named_params());
    let mut opt_g = Optimizer::new(t.optimizer.clone(), t.weight_decay)?;
    let mut opt_d = Optimizer::new(t.optimizer.clone(), t.weight_decay)?;
    let fixed = noise(64, &g.input, &mut Rng::new(mix(t.seed, 0xf1e5)))?;
    let n = prepared.train.len();
    let all: Vec<usize> = (0..n).collect();
    let steps = prepared.train.batches(&all, t.batch_size).len();
    let mut rows = Vec::new();
    for e in 0..t.epochs {
        let es = mix(t.seed, e as u64 + 1);
        let mut order = all.clone();
        let mut rng = Rng::new(es);
        rng.shuffle(&mut order);
        let batches = prepared.train.batches(&order, t.batch_size);
        let augment = spec.data()?.augment.clone();
        let loader = Loader::spawn(
            prepared.train.clone(),
            batches,
            0,
            augment.is_active().then_some(augment),
            prepared.normalize.clone(),
            None,
            es,
        );
        obs.epoch_start(e + 1, t.epochs, steps, 0);
        let started = Instant::now();
        let (mut dl, mut gl, mut dr, mut df, mut seen) = (0f64, 0f64, 0f64, 0f64, 0usize);
        let mut lr = t.lr;
        for batch in loader {
            lr = t
                .schedule
                .lr(t.lr, &Default::default(), e, batch.step, steps, t.epochs);
            if let Some(m) = t.schedule.momentum(e, batch.step, steps, t.epochs) {
                opt_d.set_momentum(m);
                opt_g.set_momentum(m);
            }
            let bn = batch.len();
            let mut srng = Rng::new(mix(es, batch.step as u64 + (1 << 40)));
            let mut ctx = Ctx {
                training: true,
                rng: &mut srng,
                lengths: None,
            };
            // the discriminator: real batch -> 1, generated batch -> 0
            let z = noise(bn, &g.input, ctx.rng)?;
            let fake = no_grad(|| g.forward(&z, &mut ctx))?;
            let real_logits = d.forward(&batch.x, &mut ctx)?;
            let fake_logits = d.forward(&fake, &mut ctx)?;
            // one-sided label smoothing: real images count as 1 - label_smoothing
            let real_target = 1.0 - t.label_smoothing;
            let loss_d = ops::add(
                &bce_to(&real_logits, real_target)?,
                &bce_to(&fake_logits, 0.0)?,
            )?;
            let ld = loss_d.item()? as f64;
            loss_d.backward()?;
            opt_d.step(&dp, lr)?;
            // the generator: make the discriminator say 1
            let z = noise(bn, &g.input, ctx.rng)?;
            let fake = g.forward(&z, &mut ctx)?;
            let loss_g = bce_to(&d.forward(&fake, &mut ctx)?, 1.0)?;
            let lg = loss_g.item()? as f64;
            if !ld.is_finite() || !lg.is_finite() {
                return Err(Error::Autograd(format!(
                    "GAN training diverged at epoch {}, step {}: discriminator loss {ld}, generator loss {lg}",
                    e + 1,
                    batch.step + 1
                )));
            }
            loss_g.backward()?;
            opt_g.step(&gp, lr)?;
            // the generator's step left gradients in the discriminator: not its own
            for (_, p) in &dp {
                p.zero_grad();
            }
            dl += ld * bn as f64;
            gl += lg * bn as f64;
            dr += mean_prob(&real_logits) * bn as f64;
            df += mean_prob(&fake_logits) * bn as f64;
            seen += bn;
            obs.step(batch.step + 1, (dl + gl) / seen as f64, 0.0, 0.0);
            if stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
                break;
            }
        }
        let k = seen.max(1) as f64;
        let row = GanRow {
            epoch: e + 1,
            d_loss: dl / k,
            g_loss: gl / k,
            d_real: dr / k,
            d_fake: df / k,
            seconds: started.elapsed().as_secs_f64(),
        };
        obs.message(&format!(
            "epoch {}/{}  discriminator loss {:.4}  generator loss {:.4}  D(real) {:.3}  D(generated) {:.3}  lr {lr:.2e}  {:.1}s",
            row.epoch, t.epochs, row.d_loss, row.g_loss, row.d_real, row.d_fake, row.seconds
        ));
        rows.push(row);
        // samples from the fixed noise, the weights, the metrics
        let samples = sample(&g, &fixed, &prepared.normalize)?;
        sample_grid(
            &dir.join(format!("samples_epoch_{:03}.png", e + 1)),
            &samples,
            &shape,
            8,
        )?;
        let meta = super::checkpoint::weights_meta(spec);
        io::save(&dir.join(files::LAST), &g.state_dict(), &meta)?;
        io::save(&dir.join(DISCRIMINATOR), &d.state_dict(), &meta)?;
        write_gan_metrics(dir, &rows)?;
        if stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
            obs.message(
                "stopped; the weights of the last epoch are saved (GAN runs do not resume)",
            );
            return Ok(rows);
        }
    }
    RunInfo {
        finished: true,
        ..info
    }
    .save(dir)?;
    Ok(rows)
}

fn write_gan_metrics(dir: &Path, rows: &[GanRow]) -> Result<()> {
    let mut s = String::from("epoch,d_loss,g_loss,d_real,d_fake,seconds\n");
    for r in rows {
        s.push_str(&format!(
            "{},{:.6},{:.6},{:.6},{:.6},{:.3}\n",
            r.epoch, r.d_loss, r.g_loss, r.d_real, r.d_fake, r.seconds
        ));
    }
    write_file(&dir.join(files::METRICS), s)?;
    use plotters::style::RGBColor;
    let col = |f: &dyn Fn(&GanRow) -> f64| -> Vec<f64> { rows.iter().map(f).collect() };
    let (d, g) = (col(&|r| r.d_loss), col(&|r| r.g_loss));
    let (pr, pf) = (col(&|r| r.d_real), col(&|r| r.d_fake));
    let (blue, orange) = (RGBColor(31, 119, 180), RGBColor(255, 127, 14));
    let s = |label, values, color| plot::Series {
        label,
        values,
        color,
    };
    plot::learning_curves(
        &dir.join(files::CURVES),
        "GAN",
        &[
            (
                "loss",
                vec![s("discriminator", &d, blue), s("generator", &g, orange)],
            ),
            (
                "discriminator's P(real)",
                vec![s("real images", &pr, blue), s("generated", &pf, orange)],
            ),
        ],
    )
}
