//! The training loop: seeded shuffling, batches from a background loader, forward, loss,
//! backward, clipping, optimizer step, schedule; validation each epoch; metrics.csv, learning
//! curves, best and last weights; early stopping; divergence detection; checkpoints that a
//! resumed run continues from bit for bit.
//!
//! Every random draw is a function of (seed, epoch, step): the shuffle of an epoch, the
//! augmentation of each sample and the dropout masks of each step. So a run interrupted at
//! any step and resumed gives the weights of an uninterrupted run.

pub mod autoencoder;
pub mod baseline;
mod checkpoint;
mod data;
pub mod ema;
mod fit;
pub mod forecast;
pub mod gan;
pub mod memory;
mod metrics;
pub mod plot;
pub mod rundir;
mod task;

pub use checkpoint::Resume;
pub use data::{Prepared, prepare, prepare_samples, read_split, read_test, series_columns};
pub use fit::train;
use metrics::for_each_batch;
pub use metrics::{EvalReport, argmax_rows, evaluate, evaluate_task};
pub use task::{Metric, Task};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::data::Normalize;
use crate::error::{Error, Result};
use crate::io;
use crate::nn::Sequential;
use crate::ops::CrossEntropyOptions;
use crate::rng::Rng;
use crate::spec::Spec;

/// One row of metrics.csv.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochRow {
    pub epoch: usize,
    pub train_loss: f64,
    /// Accuracy, or MAE for a forecaster (see [`Metric`]).
    #[serde(alias = "train_acc")]
    pub train_metric: f64,
    pub val_loss: Option<f64>,
    #[serde(alias = "val_acc")]
    pub val_metric: Option<f64>,
    pub lr: f64,
    /// The epoch's wall time: training steps and the validation pass.
    pub seconds: f64,
    /// With [`TrainOptions::test_curve`]: the test part's loss and metric after this epoch
    /// (measured for learning curves only; nothing is chosen by them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_metric: Option<f64>,
}

/// What the loop tells its caller (a progress bar, a log).
pub trait Observer {
    /// Called once, before the first epoch, with the figure `step` and `EpochRow` report.
    fn metric(&mut self, _metric: Metric) {}
    fn epoch_start(&mut self, _epoch: usize, _epochs: usize, _steps: usize, _start_step: usize) {}
    fn step(&mut self, _step: usize, _loss: f64, _acc: f64, _samples_per_sec: f64) {}
    fn epoch_end(&mut self, _row: &EpochRow, _is_best: bool) {}
    fn message(&mut self, _text: &str) {}
}

/// An observer that does nothing.
pub struct Silent;
impl Observer for Silent {}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// All epochs ran.
    Finished,
    /// Early stopping fired after this epoch (1-based).
    EarlyStopped { epoch: usize },
    /// The stop flag was raised; a checkpoint holds the state after this step (epoch 1-based).
    Interrupted { epoch: usize, step: usize },
    /// `[train] max_seconds` was spent after this epoch (1-based).
    OutOfTime { epoch: usize, seconds: f64 },
}

/// Settings of one `train` call beside the spec.
pub struct TrainOptions {
    /// The run directory (created by the caller; must hold no other run unless resuming).
    pub out: PathBuf,
    /// Start a new run, or continue from a checkpoint of `out`.
    pub resume: Resume,
    /// Raised (by Ctrl-C) to stop after the current step, saving a checkpoint.
    pub stop: Option<Arc<AtomicBool>>,
    /// A new run starts from the weights of this run directory (fine-tuning a trained or an
    /// imported model) instead of drawn ones; the model must hold the same tensors.
    pub init: Option<PathBuf>,
    /// Evaluate the test part after every epoch as well (its time not counted in the epoch's
    /// seconds) and write it to metrics.csv: a learning curve against wall time, as
    /// time-to-accuracy comparisons report. Nothing is chosen by it.
    pub test_curve: bool,
}

/// The result of a run.
pub struct TrainResult {
    pub outcome: Outcome,
    pub history: Vec<EpochRow>,
    pub best_epoch: Option<usize>,
    pub model: Sequential,
    pub prepared: Prepared,
}

/// Files of a run directory.
pub mod files {
    pub const SPEC: &str = "spec.toml";
    pub const BEST: &str = "best.safetensors";
    pub const LAST: &str = "last.safetensors";
    /// The moving average of the weights (`[train] ema`), after the last epoch.
    pub const EMA: &str = "ema.safetensors";
    pub const CHECKPOINT: &str = "checkpoint.safetensors";
    /// The checkpoint before the latest (see [`super::checkpoint`]).
    pub const CHECKPOINT_PREV: &str = "checkpoint.prev.safetensors";
    pub const METRICS: &str = "metrics.csv";
    pub const CURVES: &str = "curves";
    pub const RUN: &str = "run.json";
    /// Held by the training writing into the folder (its pid); see [`super::rundir::Lock`].
    pub const LOCK: &str = "train.lock";
}

/// What run.json holds: what evaluation and prediction need beside the weights.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RunInfo {
    pub convnet_version: String,
    pub class_names: Vec<String>,
    pub normalize_mean: Vec<f32>,
    pub normalize_std: Vec<f32>,
    pub best_epoch: Option<usize>,
    pub monitor: String,
    pub finished: bool,
    /// The seed the run used (the spec's, or `--seed`): it fixes the validation split.
    pub seed: u64,
    pub epochs: usize,
    /// The worker threads of the run (results do not depend on it; a resume reuses it).
    #[serde(default)]
    pub threads: Option<usize>,
    /// The folder the spec's relative data paths were taken from when the run was trained
    /// (absolute), so that `eval` and `--resume` find the data from any folder.
    #[serde(default)]
    pub spec_dir: Option<PathBuf>,
    /// A forecaster's target columns, and their normalisation (fitted on the training part).
    #[serde(default)]
    pub target_names: Vec<String>,
    /// Each series (or image) z-normalised by its own statistics first (`normalize =
    /// "per_series"`).
    #[serde(default)]
    pub normalize_per_series: bool,
    #[serde(default)]
    pub target_mean: Vec<f32>,
    #[serde(default)]
    pub target_std: Vec<f32>,
}

impl RunInfo {
    /// A run of `spec` on the data `prepared` (the normalisation fitted, the class names),
    /// watching `monitor`; not finished, no best epoch yet. Without data (weights trained
    /// elsewhere, a spec without `[data]`): no normalisation and no names.
    pub fn new(spec: &Spec, prepared: Option<&Prepared>, monitor: &str) -> RunInfo {
        let target = prepared.and_then(|p| p.target_norm.as_ref());
        RunInfo {
            convnet_version: crate::VERSION.into(),
            class_names: prepared.map_or(vec![], |p| p.class_names.clone()),
            normalize_mean: prepared.map_or(vec![], |p| p.normalize.mean.clone()),
            normalize_std: prepared.map_or(vec![], |p| p.normalize.std.clone()),
            normalize_per_series: prepared.is_some_and(|p| p.normalize.per_sample),
            target_names: prepared.map_or(vec![], |p| p.target_names.clone()),
            target_mean: target.map_or(vec![], |n| n.mean.clone()),
            target_std: target.map_or(vec![], |n| n.std.clone()),
            best_epoch: None,
            monitor: monitor.to_string(),
            finished: false,
            seed: spec.train.seed,
            epochs: spec.train.epochs,
            threads: Some(rayon::current_num_threads()),
            spec_dir: spec.base().map(Path::to_path_buf),
        }
    }

    /// Read `dir/run.json`.
    pub fn load(dir: &Path) -> Result<RunInfo> {
        let p = dir.join(files::RUN);
        let text = std::fs::read_to_string(&p).map_err(|e| Error::Io {
            path: p.display().to_string(),
            source: e,
        })?;
        serde_json::from_str(&text).map_err(|e| Error::Format {
            path: p.display().to_string(),
            msg: format!("not a run description: {e}"),
        })
    }
    /// Write `dir/run.json`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        write_file(
            &dir.join(files::RUN),
            serde_json::to_string_pretty(self).unwrap_or_default(),
        )
    }
    /// Check run.json against the run's spec and model: the normalisation has one positive,
    /// finite mean and standard deviation per channel of the data (or none), and class names,
    /// where given, are one per output of a classifier. The error names the file and field.
    pub fn check(&self, spec: &Spec, model: &Sequential, dir: &Path) -> Result<()> {
        let bad = |field: &str, msg: String| Error::Format {
            path: dir.join(files::RUN).display().to_string(),
            msg: format!("`{field}`: {msg}"),
        };
        let (mean, std) = (&self.normalize_mean, &self.normalize_std);
        // the data's channels: a GAN's generator takes noise, its discriminator the data
        let channels = spec.sample_shape().0.first().copied().unwrap_or(0);
        if mean.len() != std.len() {
            return Err(bad(
                "normalize_std",
                format!(
                    "{} values for {} in `normalize_mean`",
                    std.len(),
                    mean.len()
                ),
            ));
        }
        if !mean.is_empty() && mean.len() != channels {
            return Err(bad(
                "normalize_mean",
                format!(
                    "{} values, but the model takes {channels} channel(s)",
                    mean.len()
                ),
            ));
        }
        if let Some(v) = std.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            return Err(bad(
                "normalize_std",
                format!("{v} is not a positive number"),
            ));
        }
        if let Some(v) = mean.iter().find(|v| !v.is_finite()) {
            return Err(bad("normalize_mean", format!("{v} is not a finite number")));
        }
        if let [classes] = *model.output_shape()
            && !self.class_names.is_empty()
            && self.class_names.len() != classes
            && self.target_names.is_empty()
        {
            return Err(bad(
                "class_names",
                format!(
                    "{} names for a model with {classes} outputs",
                    self.class_names.len()
                ),
            ));
        }
        Ok(())
    }

    /// Which weights a report uses and what chose them: `weights of epoch 12, chosen by
    /// val_loss on the validation part` (or `by train_loss on the training data` without a
    /// validation part): a figure on the part that chose the weights is optimistic.
    pub fn chosen_by(&self) -> String {
        let on = if self.monitor.starts_with("val_") {
            "the validation part"
        } else {
            "the training data (no validation part)"
        };
        match self.best_epoch {
            Some(e) => format!("weights of epoch {e}, chosen by {} on {on}", self.monitor),
            None => "the last weights".into(),
        }
    }

    pub fn normalize(&self) -> Normalize {
        Normalize {
            mean: self.normalize_mean.clone(),
            std: self.normalize_std.clone(),
            per_sample: self.normalize_per_series,
        }
    }
}

fn mix(a: u64, b: u64) -> u64 {
    Rng::new(a ^ b.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}

/// Seed of the train/validation split of a run with `seed`.
pub fn split_seed(seed: u64) -> u64 {
    mix(seed, 0x5917)
}

/// Seed of epoch `e`'s shuffle and augmentation.
fn epoch_seed(seed: u64, e: usize) -> u64 {
    mix(seed, e as u64 + 1)
}

/// The number of classes a classifier outputs, from its per-sample output shape.
pub fn classes_of(spec: &Spec, model: &Sequential) -> Result<usize> {
    match Task::of(spec, model)? {
        Task::Classify { classes, .. } => Ok(classes),
        Task::Forecast { .. } => Err(spec.err(
            "[data]",
            "this spec forecasts a series; it has no classes".into(),
        )),
        Task::Autoencode { .. } => Err(spec.err(
            "[train], key `task`",
            "this spec trains an autoencoder; it has no classes".into(),
        )),
    }
}

/// The loss settings of a spec's `[train]`.
pub fn loss_options(spec: &Spec) -> CrossEntropyOptions {
    CrossEntropyOptions {
        class_weights: spec.train.class_weights.clone(),
        label_smoothing: spec.train.label_smoothing,
    }
}

/// Write a file of a run directory (atomically, see [`io::write_atomic`]); a failure names it.
pub(crate) fn write_file(p: &Path, data: impl AsRef<[u8]>) -> Result<()> {
    io::write_atomic(p, data.as_ref())
}

fn write_metrics(dir: &Path, history: &[EpochRow], metric: Metric) -> Result<()> {
    let m = metric.name();
    let test = history.iter().any(|r| r.test_metric.is_some());
    let mut s = format!("epoch,train_loss,train_{m},val_loss,val_{m},seconds,lr");
    if test {
        s.push_str(&format!(",test_loss,test_{m}"));
    }
    s.push('\n');
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
    for r in history {
        s.push_str(&format!(
            "{},{:.6},{:.6},{},{},{:.3},{:.6e}",
            r.epoch,
            r.train_loss,
            r.train_metric,
            opt(r.val_loss),
            opt(r.val_metric),
            r.seconds,
            r.lr
        ));
        if test {
            s.push_str(&format!(",{},{}", opt(r.test_loss), opt(r.test_metric)));
        }
        s.push('\n');
    }
    write_file(&dir.join(files::METRICS), s)
}

fn write_curves(dir: &Path, history: &[EpochRow], title: &str, metric: Metric) -> Result<()> {
    use plot::Series;
    use plotters::style::RGBColor;
    let col = |f: &dyn Fn(&EpochRow) -> Option<f64>| -> Vec<f64> {
        history.iter().map(|r| f(r).unwrap_or(f64::NAN)).collect()
    };
    let (tl, vl) = (col(&|r| Some(r.train_loss)), col(&|r| r.val_loss));
    let (ta, va) = (col(&|r| Some(r.train_metric)), col(&|r| r.val_metric));
    let (blue, orange) = (RGBColor(31, 119, 180), RGBColor(255, 127, 14));
    let mut loss = vec![Series {
        label: "train",
        values: &tl,
        color: blue,
    }];
    let mut acc = vec![Series {
        label: "train",
        values: &ta,
        color: blue,
    }];
    if history.iter().any(|r| r.val_loss.is_some()) {
        loss.push(Series {
            label: "validation",
            values: &vl,
            color: orange,
        });
        acc.push(Series {
            label: "validation",
            values: &va,
            color: orange,
        });
    }
    plot::learning_curves(
        &dir.join(files::CURVES),
        title,
        &[("loss", loss), (metric.title(), acc)],
    )
}

/// Batches smaller than this give batch norm statistics too noisy to keep.
pub const SMALL_BATCH: usize = 8;

/// A warning when `model` has batch norm and at least a quarter of an epoch's batches (of
/// `sizes` samples) are smaller than [`SMALL_BATCH`]: its running statistics, used in
/// evaluation, are then far from what training saw (series of unequal length batched by
/// length, for a model that cannot take padded batches, can make many small batches).
pub fn small_batch_warning(model: &Sequential, sizes: &[usize]) -> Result<Option<String>> {
    let norms = model
        .report()?
        .iter()
        .filter(|r| r.kind == "batch_norm")
        .count();
    let small = sizes.iter().filter(|&&n| n < SMALL_BATCH).count();
    if norms == 0 || sizes.is_empty() || small * 4 <= sizes.len() {
        return Ok(None);
    }
    let median = {
        let mut s = sizes.to_vec();
        s.sort_unstable();
        s[s.len() / 2]
    };
    Ok(Some(format!(
        "batch norm ({norms} layer{}) trains on batches of fewer than {SMALL_BATCH} samples in {small} of {} batches per epoch (median {median}): its running statistics, which evaluation uses, will be unreliable; give a larger batch_size{}, or use layer_norm",
        if norms == 1 { "" } else { "s" },
        sizes.len(),
        if sizes.len() > 1 && median < SMALL_BATCH {
            " (series of unequal length are batched by length where a layer cannot take the mask of a padded batch: resample them to one length)"
        } else {
            ""
        }
    )))
}

/// The weights file of the run directory `dir`: the best, or else the last.
fn run_weights(dir: &Path) -> Result<PathBuf> {
    [files::BEST, files::LAST]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists())
        .ok_or_else(|| Error::Format {
            path: dir.display().to_string(),
            msg:
                "no weights (best.safetensors or last.safetensors): has the run finished an epoch?"
                    .into(),
        })
}

/// Load a trained model from a run directory: its spec, and the best weights (or the last).
pub fn load_run(dir: &Path) -> Result<(Spec, Sequential, RunInfo)> {
    // Building the model checks the spec; no need to build it twice.
    let info = RunInfo::load(dir)?;
    let spec = Spec::parse_in(
        &crate::data::read_text(&dir.join(files::SPEC))?,
        &dir.join(files::SPEC),
        info.spec_dir.as_deref(),
    )?;
    let model = spec.build_model(&mut Rng::new(0))?;
    let weights = run_weights(dir)?;
    info.check(&spec, &model, dir)?;
    let (state, meta) = io::load(&weights)?;
    checkpoint::check_spec(&meta, &spec, &weights)?;
    model.load_state_dict(&state, &weights.display().to_string())?;
    Ok((spec, model, info))
}
