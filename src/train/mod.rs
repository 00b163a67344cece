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
mod data;
mod driver;
pub mod ema;
mod fit;
pub mod forecast;
pub mod gan;
mod kind;
pub mod memory;
mod metrics;
mod parallel;
pub mod plot;
pub mod rundir;
mod seeds;
mod task;

pub use data::{Prepared, prepare, prepare_samples, read_split, read_test, series_columns};
pub use fit::train;
pub use kind::RunKind;
use metrics::for_each_batch;
pub use metrics::{EvalReport, argmax_rows, evaluate, evaluate_task};
pub use rundir::checkpoint::Resume;
pub use rundir::{RunInfo, files, load_run};
pub(crate) use rundir::{run_weights, write_file};
use seeds::mix;
pub use seeds::split_seed;
pub use task::{Metric, Task};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::error::Result;
use crate::nn::Sequential;
use crate::ops::CrossEntropyOptions;
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
    /// The ranks of a data-parallel run ([`crate::dist::solo`] on one process): each trains
    /// on its part of every batch, rank 0 writes `out`.
    pub world: crate::dist::World,
}

/// The result of a run.
pub struct TrainResult {
    pub outcome: Outcome,
    pub history: Vec<EpochRow>,
    pub best_epoch: Option<usize>,
    pub model: Sequential,
    pub prepared: Prepared,
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
