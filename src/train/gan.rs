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
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::autograd::no_grad;
use crate::data::{Batch, Normalize};
use crate::error::{Error, Result};
use crate::io;
use crate::nn::{Ctx, Sequential, fmt_shape};
use crate::ops;
use crate::optim::Optimizer;
use crate::rng::Rng;
use crate::spec::{Spec, with_trail};
use crate::tensor::Tensor;

use super::driver::{Driver, EpochEnd, Learner, Progress};
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
pub use super::files::DISCRIMINATOR;

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
        class_names: Vec::new(),
        ..RunInfo::new(spec, Some(&prepared), "none")
    };
    info.save(dir)?;
    let fixed = noise(64, &g.input, &mut Rng::new(mix(t.seed, 0xf1e5)))?;
    let driver = Driver::new(spec, &prepared, false, stop);
    let mut gan = GanSteps {
        gp: g.named_params(),
        dp: d.named_params(),
        opt_g: Optimizer::new(t.optimizer.clone(), t.weight_decay)?,
        opt_d: Optimizer::new(t.optimizer.clone(), t.weight_decay)?,
        g,
        d,
        real_target: 1.0 - t.label_smoothing,
        epoch: 0,
        sums: [0.0; 4],
        seen: 0,
    };
    let mut rows = Vec::new();
    for e in 0..t.epochs {
        (gan.epoch, gan.sums, gan.seen) = (e, [0.0; 4], 0);
        let started = Instant::now();
        let end = driver.run_epoch(e, 0, &Default::default(), &mut gan, obs)?;
        let (EpochEnd::Done { lr } | EpochEnd::Stopped { lr, .. }) = end;
        let (g, d) = (&gan.g, &gan.d);
        let [dl, gl, dr, df] = gan.sums;
        let k = gan.seen.max(1) as f64;
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
        let samples = sample(g, &fixed, &prepared.normalize)?;
        sample_grid(
            &dir.join(format!("samples_epoch_{:03}.png", e + 1)),
            &samples,
            &shape,
            8,
        )?;
        let meta = super::rundir::checkpoint::weights_meta(spec);
        io::save(&dir.join(files::LAST), &g.state_dict(), &meta)?;
        io::save(&dir.join(DISCRIMINATOR), &d.state_dict(), &meta)?;
        write_gan_metrics(dir, &rows)?;
        if driver.stop_asked() {
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

/// The two models of a GAN and their optimizers; the sums of the epoch's figures
/// (discriminator loss, generator loss, D(real), D(generated)) over its samples.
struct GanSteps {
    g: Sequential,
    d: Sequential,
    gp: Vec<(String, Tensor)>,
    dp: Vec<(String, Tensor)>,
    opt_g: Optimizer,
    opt_d: Optimizer,
    /// One-sided label smoothing: real images count as 1 - `[train] label_smoothing`.
    real_target: f32,
    epoch: usize,
    sums: [f64; 4],
    seen: usize,
}

impl Learner for GanSteps {
    fn set_momentum(&mut self, m: f32) {
        self.opt_d.set_momentum(m);
        self.opt_g.set_momentum(m);
    }

    fn step(&mut self, batch: &Batch, lr: f32, rng: &mut Rng) -> Result<Progress> {
        let (g, d) = (&self.g, &self.d);
        let bn = batch.len();
        let mut ctx = Ctx {
            training: true,
            rng,
            lengths: None,
        };
        // the discriminator: real batch -> 1, generated batch -> 0
        let z = noise(bn, &g.input, ctx.rng)?;
        let fake = no_grad(|| g.forward(&z, &mut ctx))?;
        let real_logits = d.forward(&batch.x, &mut ctx)?;
        let fake_logits = d.forward(&fake, &mut ctx)?;
        let loss_d = ops::add(
            &bce_to(&real_logits, self.real_target)?,
            &bce_to(&fake_logits, 0.0)?,
        )?;
        let ld = loss_d.item()? as f64;
        loss_d.backward()?;
        self.opt_d.step(&self.dp, lr)?;
        // the generator: make the discriminator say 1
        let z = noise(bn, &g.input, ctx.rng)?;
        let fake = g.forward(&z, &mut ctx)?;
        let loss_g = bce_to(&d.forward(&fake, &mut ctx)?, 1.0)?;
        let lg = loss_g.item()? as f64;
        if !ld.is_finite() || !lg.is_finite() {
            return Err(Error::Autograd(format!(
                "GAN training diverged at epoch {}, step {}: discriminator loss {ld}, generator loss {lg}",
                self.epoch + 1,
                batch.step + 1
            )));
        }
        loss_g.backward()?;
        self.opt_g.step(&self.gp, lr)?;
        // the generator's step left gradients in the discriminator: not its own
        for (_, p) in &self.dp {
            p.zero_grad();
        }
        let w = bn as f64;
        let figures = [ld, lg, mean_prob(&real_logits), mean_prob(&fake_logits)];
        for (s, f) in self.sums.iter_mut().zip(figures) {
            *s += f * w;
        }
        self.seen += bn;
        Ok(Progress {
            loss: (self.sums[0] + self.sums[1]) / self.seen as f64,
            metric: 0.0,
            samples_per_sec: 0.0,
            stop: None,
        })
    }
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
