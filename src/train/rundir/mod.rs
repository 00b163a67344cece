//! The run directory's format: which files a run holds ([`files`]), what run.json says
//! ([`RunInfo`]), checkpoints ([`checkpoint`]), loading a trained run ([`load_run`]), and the
//! directory as a thing the user owns ([`owner`]: what `--overwrite` may clear, the lock,
//! what a resumed run takes from it).

pub(crate) mod checkpoint;
mod owner;

pub use owner::*;

use std::path::{Path, PathBuf};

use crate::data::Normalize;
use crate::error::{Error, Result};
use crate::io;
use crate::nn::Sequential;
use crate::rng::Rng;
use crate::spec::Spec;

use super::Prepared;

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
    /// A GAN's discriminator (its generator is `last.safetensors`).
    pub const DISCRIMINATOR: &str = "discriminator.safetensors";
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

/// Write a file of a run directory (atomically, see [`io::write_atomic`]); a failure names it.
pub(crate) fn write_file(p: &Path, data: impl AsRef<[u8]>) -> Result<()> {
    io::write_atomic(p, data.as_ref())
}

/// The weights file of the run directory `dir`: the best, or else the last.
/// The weights file of the run directory `dir`: the best, or else the last.
pub(crate) fn run_weights(dir: &Path) -> Result<PathBuf> {
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
