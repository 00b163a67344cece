//! The run directory as a thing the user owns: which files in it convnet wrote, when
//! `--overwrite` may clear it, and what a resumed run takes from it (seed, epochs, threads).
//!
//! `--overwrite` never removes a folder: it removes the files convnet writes into a run, and
//! only from a folder that holds a run (spec.toml and a readable run.json) and nothing else.
//! The current folder, its ancestors, and any folder holding the spec or the data are refused
//! before anything is touched.

use std::path::{Path, PathBuf};

use super::{RunInfo, files};
use crate::error::{Error, Result};
use crate::spec::Spec;

fn refused(path: &Path, msg: impl Into<String>) -> Error {
    Error::Refused {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

/// Is `name` a file convnet writes into a run directory (by `train`, `eval`, `forecast`'s
/// default output, or a failed write)?
pub fn is_run_file(name: &str) -> bool {
    const FIXED: [&str; 9] = [
        files::SPEC,
        files::RUN,
        files::BEST,
        files::LAST,
        files::EMA,
        files::CHECKPOINT,
        files::CHECKPOINT_PREV,
        files::METRICS,
        files::LOCK,
    ];
    let stem_ext = |prefix: &str, ext: &str| name.starts_with(prefix) && name.ends_with(ext);
    FIXED.contains(&name)
        || name == format!("{}.png", files::CURVES)
        || name == format!("{}.svg", files::CURVES)
        || stem_ext("confusion_", ".png")
        || stem_ext("reconstructions", ".png")
        || stem_ext("samples_epoch_", ".png")
        || name == files::DISCRIMINATOR
        || name == "forecast.csv"
        || name == "forecast.png"
        || (name.ends_with(".tmp") && is_run_file(name.trim_end_matches(".tmp")))
}

/// Remove the `.tmp` files a killed writer left (the holder of the lock is the only writer).
fn remove_stale_tmp(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") && is_run_file(&name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// `p` made absolute and free of `.`/`..` and links, as far as it exists.
fn resolved(p: &Path) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    // A path that does not exist yet: resolve its parent (a data file may be missing).
    match (p.parent(), p.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => resolved(parent).join(name),
        _ => std::env::current_dir().unwrap_or_default().join(p),
    }
}

/// Check that `--overwrite` may clear `out` before `spec` trains into it: `out` holds a
/// convnet run and nothing else, and is neither the current folder, an ancestor of it, nor a
/// folder holding the spec or its data. Returns the files to remove.
pub fn replaceable(out: &Path, spec: &Spec) -> Result<Vec<PathBuf>> {
    if !out.is_dir() {
        return Err(refused(
            out,
            "is not a folder; --overwrite replaces a run folder only: choose another --out",
        ));
    }
    let target = resolved(out);
    let cwd = resolved(Path::new("."));
    if cwd.starts_with(&target) {
        return Err(refused(
            out,
            "is the current folder or holds it; --overwrite never clears it: choose another --out",
        ));
    }
    let mut inside: Vec<(&str, PathBuf)> = vec![("the spec", spec.path.clone())];
    let data = spec.data.iter().flat_map(|d| d.source.paths());
    inside.extend(data.map(|p| ("the data", p)));
    for (what, p) in inside {
        if resolved(&p).starts_with(&target) {
            return Err(refused(
                out,
                format!(
                    "holds {what} ({}); --overwrite never clears it: choose another --out",
                    p.display()
                ),
            ));
        }
    }
    // a run: spec.toml with a readable run.json, or what a training killed before it wrote
    // run.json leaves: its lock (and perhaps spec.toml); nothing else may be there (below)
    let killed_early = out.join(files::LOCK).is_file() && !out.join(files::RUN).exists();
    if !killed_early {
        if !out.join(files::SPEC).is_file() {
            return Err(refused(
                out,
                format!(
                    "holds no convnet run ({} is missing); --overwrite replaces only a run folder: remove it yourself or choose another --out",
                    files::SPEC
                ),
            ));
        }
        RunInfo::load(out).map_err(|e| {
            refused(
                out,
                format!(
                    "does not look like a convnet run ({e}); remove it yourself or choose another --out"
                ),
            )
        })?;
    }
    let mut remove = Vec::new();
    let entries = std::fs::read_dir(out).map_err(|e| Error::Io {
        path: out.display().to_string(),
        source: e,
    })?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::Io {
            path: out.display().to_string(),
            source: e,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let plain = entry
            .file_type()
            .is_ok_and(|t| t.is_file() || t.is_symlink());
        if name == files::LOCK {
            continue; // the caller's own (see `Lock`); never removed here
        }
        if !plain || !is_run_file(&name) {
            return Err(refused(
                out,
                format!(
                    "holds `{name}`, which convnet did not write; --overwrite removes nothing it did not write: move it away or choose another --out"
                ),
            ));
        }
        remove.push(entry.path());
    }
    remove.sort();
    Ok(remove)
}

/// Clear the run in `out` for `--overwrite` (see [`replaceable`]); the folder stays.
pub fn clear_for_overwrite(out: &Path, spec: &Spec) -> Result<()> {
    for f in replaceable(out, spec)? {
        std::fs::remove_file(&f).map_err(|e| Error::Io {
            path: f.display().to_string(),
            source: e,
        })?;
    }
    Ok(())
}

/// The spec of the run in `dir` as it was trained: its spec.toml with the seed, epochs and
/// thread count that run.json recorded. A `seed` that differs is refused (it would change the
/// validation split mid-run); `epochs` given here is an explicit change and is applied.
pub fn resumed_spec(
    dir: &Path,
    seed: Option<u64>,
    epochs: Option<usize>,
) -> Result<(Spec, RunInfo)> {
    let info = RunInfo::load(dir)?;
    let mut spec = Spec::load_in(&dir.join(files::SPEC), info.spec_dir.as_deref())?;
    if let Some(s) = seed.filter(|&s| s != info.seed) {
        return Err(refused(
            dir,
            format!(
                "the run was trained with seed {}, not {s}; a resumed run keeps its seed (drop --seed, or start a new run)",
                info.seed
            ),
        ));
    }
    spec.train.seed = info.seed;
    spec.train.epochs = epochs.unwrap_or(info.epochs);
    Ok((spec, info))
}

/// The claim of one training on a run directory: `train.lock` holding the owner's pid,
/// created exclusively and removed on drop. A lock whose process is gone (a killed run) is
/// stale and taken over; a live owner makes a second training into the same folder fail.
/// Taking it again in the process that holds it (the CLI, then the library's loop) gives a
/// guard that leaves the file to the first.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
    owned: bool,
}

impl Lock {
    pub fn acquire(dir: &Path) -> Result<Lock> {
        let path = dir.join(files::LOCK);
        let io = |e: std::io::Error| Error::Io {
            path: path.display().to_string(),
            source: e,
        };
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    write!(f, "{}", std::process::id()).map_err(io)?;
                    remove_stale_tmp(dir);
                    return Ok(Lock { path, owned: true });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse::<u32>().ok());
                    match owner {
                        Some(pid) if pid == std::process::id() => {
                            return Ok(Lock { path, owned: false });
                        }
                        Some(pid) if process_alive(pid) => {
                            return Err(refused(
                                dir,
                                format!(
                                    "another training (pid {pid}) is writing into this folder; wait for it, or choose another --out"
                                ),
                            ));
                        }
                        // The owner is gone (killed): the lock is stale.
                        _ => std::fs::remove_file(&path).or_else(|e| {
                            if e.kind() == std::io::ErrorKind::NotFound {
                                Ok(())
                            } else {
                                Err(io(e))
                            }
                        })?,
                    }
                }
                Err(e) => return Err(io(e)),
            }
        }
        Err(refused(
            dir,
            "another training keeps taking this folder's lock; choose another --out",
        ))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.owned {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether process `pid` exists (Linux: /proc; elsewhere every owner counts as alive).
fn process_alive(pid: u32) -> bool {
    let proc_root = Path::new("/proc");
    if !proc_root.join("self").exists() {
        return true;
    }
    // a zombie (ended, not yet reaped by its parent, as the ranks of an aborted MPI job can
    // be for a while) writes nothing
    match std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => proc_root.join(pid.to_string()).exists(),
    }
}

#[cfg(test)]
mod tests {
    use super::is_run_file;

    #[test]
    fn run_files_are_what_convnet_writes_and_nothing_else() {
        for name in [
            "spec.toml",
            "run.json",
            "best.safetensors",
            "checkpoint.safetensors.tmp",
            "curves.svg",
            "confusion_test.png",
            "reconstructions_val.png",
            "samples_epoch_003.png",
            "forecast.csv",
            "train.lock",
        ] {
            assert!(is_run_file(name), "{name}");
        }
        for name in [
            "notes.md",
            "data.csv",
            "best.safetensors.bak",
            "x.tmp",
            ".git",
            "curves.pdf",
        ] {
            assert!(!is_run_file(name), "{name}");
        }
    }
}

/// Whether `path` holds something the user could lose: a file, or a folder that is not empty
/// (or cannot be read).
pub fn is_taken(path: &Path) -> bool {
    path.exists()
        && std::fs::read_dir(path)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
}

/// Make `out` (absent or empty) the run directory of weights trained elsewhere: the spec, the
/// model's weights as the best, and run.json with what evaluation needs, fitted on the spec's
/// data as a training would fit it (the normalisation, the class names); without `[data]`,
/// none. `eval`, `predict`, `explain` and `export` then take it like a trained run. A GAN's
/// `discriminator` is written beside its generator (`model`), as training writes it.
pub fn write_imported(
    spec: &Spec,
    model: &crate::nn::Sequential,
    discriminator: Option<&crate::nn::Sequential>,
    out: &Path,
) -> Result<()> {
    if is_taken(out) {
        return Err(refused(
            out,
            "already exists and is not empty: give another --out",
        ));
    }
    let seed = crate::train::split_seed(spec.train.seed);
    let prepared = match (&spec.data, discriminator) {
        (None, _) => None,
        (Some(_), Some(_)) => Some(crate::train::prepare_samples(spec, usize::MAX, seed)?),
        (Some(_), None) => Some(crate::train::prepare(
            spec,
            &crate::train::Task::of(spec, model)?,
            seed,
        )?),
    };
    let info = RunInfo {
        finished: true,
        epochs: 0,
        ..RunInfo::new(spec, prepared.as_ref(), "imported")
    };
    std::fs::create_dir_all(out).map_err(|e| Error::Io {
        path: out.display().to_string(),
        source: e,
    })?;
    let _lock = Lock::acquire(out)?;
    super::write_file(&out.join(files::SPEC), &spec.text)?;
    let meta = super::checkpoint::weights_meta(spec);
    crate::io::save(&out.join(files::BEST), &model.state_dict(), &meta)?;
    if let Some(d) = discriminator {
        crate::io::save(&out.join(files::DISCRIMINATOR), &d.state_dict(), &meta)?;
    }
    info.save(out)
}
