//! Checkpoints: the model's weights, the optimizer's state and the loop's position, written
//! at the end of every epoch and when a run is stopped, and what `--resume` reads back.
//!
//! Every file is written atomically and carries a checksum ([`crate::io`]) and the spec's
//! fingerprint ([`Spec::fingerprint`]). The checkpoint before the current one is kept as
//! `checkpoint.prev.safetensors`: a crash between the two renames leaves it to resume from,
//! and a checkpoint damaged on disk is refused with the offer to resume from it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::files;
use crate::error::{Error, Result};
use crate::io;
use crate::nn::Sequential;
use crate::optim::Optimizer;
use crate::spec::Spec;
use crate::train::EpochRow;

/// Which checkpoint `--resume` continues from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// A new run.
    No,
    /// The latest checkpoint (the previous one when a crash left no latest).
    Latest,
    /// The checkpoint before the latest (`--from-previous`), when the latest is damaged.
    Previous,
}

/// The loop's state between steps: what a checkpoint saves beside tensors.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct LoopState {
    pub epoch: usize,
    pub step: usize,
    pub optimizer_steps: u64,
    pub loss_sum: f64,
    /// Sum of the metric's terms this epoch (correct samples, or absolute errors).
    #[serde(alias = "correct")]
    pub metric_sum: f64,
    #[serde(default)]
    pub metric_terms: usize,
    pub seen: usize,
    pub epoch_seconds: f64,
    pub schedule: (f32, Option<f32>, usize),
    pub best: Option<f64>,
    pub best_epoch: Option<usize>,
    pub bad_epochs: usize,
    pub history: Vec<EpochRow>,
    /// Updates of the moving average of the weights (`[train] ema`).
    #[serde(default)]
    pub ema_updates: u64,
}

impl LoopState {
    /// Check that the position is one this run can be at, with `steps` batches an epoch.
    pub fn check(&self, steps: usize, path: &Path) -> Result<()> {
        let bad = |msg: String| Error::Format {
            path: path.display().to_string(),
            msg: format!("the loop state is inconsistent: {msg}"),
        };
        if self.history.len() != self.epoch {
            return Err(bad(format!(
                "epoch {} with {} epochs of history",
                self.epoch,
                self.history.len()
            )));
        }
        if self.step > steps {
            return Err(bad(format!(
                "step {} of an epoch of {steps} steps",
                self.step
            )));
        }
        let most = (self.epoch as u64 + 1).saturating_mul(steps as u64);
        if self.optimizer_steps > most {
            return Err(bad(format!(
                "{} optimizer steps after {} epochs of {steps} steps",
                self.optimizer_steps, self.epoch
            )));
        }
        if self.best_epoch.is_some_and(|b| b == 0 || b > self.epoch) {
            return Err(bad(format!(
                "best epoch {:?} after {} epochs",
                self.best_epoch, self.epoch
            )));
        }
        Ok(())
    }
}

/// The metadata every weights file of a run carries: the spec's fingerprint.
pub(crate) fn weights_meta(spec: &Spec) -> BTreeMap<String, String> {
    BTreeMap::from([(SPEC_KEY.to_string(), spec.fingerprint())])
}

const SPEC_KEY: &str = "convnet.spec";

/// Refuse weights trained with another spec than `spec` (files without a fingerprint, from
/// older versions or other tools, are taken as they are).
pub(crate) fn check_spec(meta: &BTreeMap<String, String>, spec: &Spec, path: &Path) -> Result<()> {
    match meta.get(SPEC_KEY) {
        Some(f) if *f != spec.fingerprint() => Err(Error::Format {
            path: path.display().to_string(),
            msg: format!(
                "these weights were trained with another spec (fingerprint {f}) than {} ({}): the model or [train] section was edited after training; restore it or train a new run",
                spec.path.display(),
                spec.fingerprint()
            ),
        }),
        _ => Ok(()),
    }
}

/// Save the run's state; the checkpoint it replaces becomes the previous one.
pub(crate) fn save(
    dir: &Path,
    spec: &Spec,
    model: &Sequential,
    opt: &Optimizer,
    ema: Option<&crate::train::ema::Ema>,
    st: &LoopState,
) -> Result<()> {
    let mut tensors = model.state_dict();
    tensors.extend(opt.state_tensors());
    tensors.extend(ema.map(|e| e.tensors()).unwrap_or_default());
    let mut meta = weights_meta(spec);
    meta.insert(
        "loop".to_string(),
        serde_json::to_string(st).map_err(|e| Error::Format {
            path: dir.display().to_string(),
            msg: e.to_string(),
        })?,
    );
    let (latest, prev) = (
        dir.join(files::CHECKPOINT),
        dir.join(files::CHECKPOINT_PREV),
    );
    if latest.exists() {
        std::fs::rename(&latest, &prev).map_err(|e| Error::Io {
            path: prev.display().to_string(),
            source: e,
        })?;
    }
    io::save(&latest, &tensors, &meta)
}

/// Read the loop state (and tensors) of the checkpoint `bytes` read from `path`, checked
/// against `spec`.
fn parse(
    bytes: &[u8],
    path: &Path,
    spec: &Spec,
) -> Result<(BTreeMap<String, crate::Tensor>, LoopState)> {
    let (tensors, meta) = io::load_bytes(bytes, path)?;
    check_spec(&meta, spec, path)?;
    let fmt = |msg: String| Error::Format {
        path: path.display().to_string(),
        msg,
    };
    let st: LoopState = serde_json::from_str(
        meta.get("loop")
            .ok_or_else(|| fmt("no loop state in the checkpoint".into()))?,
    )
    .map_err(|e| fmt(format!("bad loop state: {e}")))?;
    Ok((tensors, st))
}

fn read(path: &Path, spec: &Spec) -> Result<(Vec<u8>, LoopState)> {
    let bytes = crate::limits::read_file(path, 2)?;
    let (_, st) = parse(&bytes, path, spec)?;
    Ok((bytes, st))
}

/// The checkpoint `which` names in `dir`, checked, with its bytes and a note when it is not
/// the one asked for.
fn choose(dir: &Path, which: Resume, spec: &Spec) -> Result<(PathBuf, Vec<u8>, Option<String>)> {
    let (latest, prev) = (
        dir.join(files::CHECKPOINT),
        dir.join(files::CHECKPOINT_PREV),
    );
    let (path, note) = match which {
        Resume::Previous => (prev.clone(), None),
        _ if !latest.exists() && prev.exists() => (
            prev.clone(),
            Some(format!(
                "{} is missing (the run stopped while replacing it): resuming from {}",
                files::CHECKPOINT,
                files::CHECKPOINT_PREV
            )),
        ),
        _ => (latest.clone(), None),
    };
    match read(&path, spec) {
        Ok((bytes, _)) => Ok((path, bytes, note)),
        Err(Error::Format { msg, .. }) if path == latest && prev.exists() => {
            let offer = match read(&prev, spec) {
                Ok((_, p)) => format!(
                    "; the previous checkpoint (epoch {}, step {}) is intact: `convnet train --resume {} --from-previous` continues from it",
                    p.epoch + 1,
                    p.step,
                    dir.display()
                ),
                Err(_) => "; the previous checkpoint is damaged too".into(),
            };
            Err(Error::Format {
                path: path.display().to_string(),
                msg: format!("{msg}{offer}"),
            })
        }
        Err(e) => Err(e),
    }
}

/// Restore `model`, `opt` and the moving average `ema` from the checkpoint `which` names;
/// returns the loop state, the file it came from and a note when it is not the one asked for.
/// Rank 0 of `world` reads the file; every rank restores from its bytes.
pub(crate) fn load(
    dir: &Path,
    which: Resume,
    spec: &Spec,
    model: &Sequential,
    opt: &mut Optimizer,
    ema: Option<&mut crate::train::ema::Ema>,
    world: &dyn crate::dist::Collective,
) -> Result<(LoopState, PathBuf, Option<String>)> {
    let (path, bytes, note) = crate::dist::from_rank0(
        world,
        || choose(dir, which, spec),
        |(p, b, n): &(PathBuf, Vec<u8>, Option<String>)| {
            let p = p.to_string_lossy();
            let n = n.as_deref().unwrap_or_default();
            crate::dist::frame(&[p.as_bytes(), n.as_bytes(), b])
        },
        |b| match crate::dist::unframe(b).as_deref() {
            Some([p, n, b]) => {
                let p = PathBuf::from(String::from_utf8_lossy(p).into_owned());
                let n = (!n.is_empty()).then(|| String::from_utf8_lossy(n).into_owned());
                Ok((p, b.to_vec(), n))
            }
            _ => Err(Error::Dist(
                "the checkpoint from rank 0 came cut short".into(),
            )),
        },
    )?;
    let (tensors, st) = parse(&bytes, &path, spec)?;
    let (ema_t, rest): (BTreeMap<_, _>, BTreeMap<_, _>) = tensors
        .into_iter()
        .partition(|(k, _)| k.starts_with(crate::train::ema::PREFIX));
    let (model_t, opt_t): (BTreeMap<_, _>, BTreeMap<_, _>) = rest
        .into_iter()
        .partition(|(k, _)| !k.starts_with("state."));
    model.load_state_dict(&model_t, &path.display().to_string())?;
    opt.load_state(&opt_t, st.optimizer_steps, &model.named_params(), &path)?;
    if let Some(ema) = ema {
        ema.load(&ema_t, st.ema_updates, &path.display().to_string())?;
    }
    Ok((st, path, note))
}
