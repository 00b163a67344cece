//! `convnet train SPEC [--out DIR] [--epochs N] [--seed S] [--resume DIR]`: trains with a
//! progress bar, validates each epoch, and writes the run directory. Ctrl-C stops after the
//! current step with a checkpoint that `--resume` continues from.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use convnet::dist::{Collective, frame, unframe};
use convnet::spec::Spec;
use convnet::train::{self, EpochRow, Metric, Observer, Outcome, TrainOptions, files, rundir};
use indicatif::{ProgressBar, ProgressStyle};

/// A training stopped by Ctrl-C, its checkpoint saved: the process exits with 130.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

pub struct Args {
    pub spec: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub epochs: Option<usize>,
    pub seed: Option<u64>,
    pub resume: Option<PathBuf>,
    /// Resume from the checkpoint before the latest (when the latest is damaged).
    pub from_previous: bool,
    pub overwrite: bool,
    /// Start from this run's weights.
    pub init_from: Option<PathBuf>,
    /// Evaluate the test data after every epoch (`--test-curve`).
    pub test_curve: bool,
    /// `--threads` was given (else a resumed run takes the thread count it was started with).
    pub threads_given: bool,
}

/// An epoch's bar: `epoch 3/10 [=====>    ] 412/938 loss 0.4321 ... ETA 12s`, as wide as
/// the terminal (the bar takes what the text leaves).
fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("epoch {prefix} [{wide_bar}] {pos}/{len} {msg} ETA {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

struct Bar {
    bar: Option<ProgressBar>,
    epoch: usize,
    epochs: usize,
    metric: Metric,
}

impl Observer for Bar {
    fn metric(&mut self, metric: Metric) {
        self.metric = metric;
    }
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize, start: usize) {
        self.epoch = epoch;
        self.epochs = epochs;
        let bar = ProgressBar::new(steps as u64);
        bar.set_style(bar_style());
        bar.set_prefix(format!("{epoch}/{epochs}"));
        bar.set_position(start as u64);
        self.bar = Some(bar);
    }
    fn step(&mut self, step: usize, loss: f64, acc: f64, sps: f64) {
        if let Some(b) = &self.bar {
            b.set_position(step as u64);
            b.set_message(format!(
                "loss {loss:.4} {} {} {sps:.0} samples/s",
                self.metric.name(),
                self.metric.show(acc)
            ));
        }
    }
    fn epoch_end(&mut self, r: &EpochRow, best: bool) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        let m = self.metric;
        let val = match (r.val_loss, r.val_metric) {
            (Some(l), Some(a)) => format!("  val_loss {l:.4}  val_{} {}", m.name(), m.show(a)),
            _ => String::new(),
        };
        let test = match (r.test_loss, r.test_metric) {
            (Some(l), Some(a)) => format!("  test_loss {l:.4}  test_{} {}", m.name(), m.show(a)),
            _ => String::new(),
        };
        println!(
            "epoch {}/{}  loss {:.4}  {} {}{val}{test}  lr {:.2e}  {:.1}s{}",
            r.epoch,
            self.epochs,
            r.train_loss,
            m.name(),
            m.show(r.train_metric),
            r.lr,
            r.seconds,
            if best { "  (best)" } else { "" }
        );
    }
    fn message(&mut self, text: &str) {
        if let Some(b) = &self.bar {
            b.suspend(|| eprintln!("{text}"));
        } else {
            eprintln!("{text}");
        }
    }
}

/// Progress of a GAN: steps with the mean loss, a line per epoch.
struct GanBar {
    bar: Option<ProgressBar>,
}

impl Observer for GanBar {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize, _start: usize) {
        let bar = ProgressBar::new(steps as u64);
        bar.set_style(bar_style());
        bar.set_prefix(format!("{epoch}/{epochs}"));
        self.bar = Some(bar);
    }
    fn step(&mut self, step: usize, loss: f64, _acc: f64, _sps: f64) {
        if let Some(b) = &self.bar {
            b.set_position(step as u64);
            b.set_message(format!("D + G loss {loss:.4}"));
        }
    }
    fn message(&mut self, text: &str) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        println!("{text}");
    }
}

/// `runs/<stem>`, or `runs/<stem>-2`, `-3`, ... when taken.
fn fresh_dir(spec: &Path) -> PathBuf {
    let stem = spec
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let base = PathBuf::from("runs").join(&stem);
    if !base.exists() {
        return base;
    }
    (2..)
        .map(|i| PathBuf::from("runs").join(format!("{stem}-{i}")))
        .find(|p| !p.exists())
        .unwrap_or(base)
}

/// Rank 0's side of a run's start: the spec (with `--epochs` and `--seed`), the run
/// directory made or checked (`--resume`, `--overwrite`) and locked, the memory check.
fn prepare_dir(a: &Args) -> Result<(Spec, PathBuf, bool, rundir::Lock)> {
    let (spec_path, out, resume) = match (&a.resume, &a.spec) {
        (Some(dir), None) => (dir.join(files::SPEC), dir.clone(), true),
        (Some(_), Some(_)) => bail!(
            "--resume DIR continues the run in DIR with its own spec.toml; do not pass a SPEC as well"
        ),
        (None, Some(s)) => (
            s.clone(),
            a.out.clone().unwrap_or_else(|| fresh_dir(s)),
            false,
        ),
        (None, None) => bail!("give a SPEC to train, or --resume DIR"),
    };
    if a.from_previous && !resume {
        bail!("--from-previous goes with --resume DIR");
    }
    let latest = if a.from_previous {
        files::CHECKPOINT_PREV
    } else {
        files::CHECKPOINT
    };
    let any = [latest, files::CHECKPOINT_PREV];
    if resume && !any.iter().any(|f| out.join(f).exists()) {
        bail!(
            "{}: no checkpoint to resume from ({latest} is missing)",
            out.display()
        );
    }
    if a.epochs == Some(0) {
        bail!("--epochs must be at least 1");
    }
    let (spec, lock) = if resume {
        let (spec, info) = rundir::resumed_spec(&out, a.seed, a.epochs)?;
        if a.epochs.is_some_and(|e| e != info.epochs) {
            eprintln!(
                "epochs: {} as asked (the run was started with {})",
                spec.train.epochs, info.epochs
            );
        }
        if let Some(t) = info.threads.filter(|_| !a.threads_given) {
            // The pool is not built yet when --threads was not given; results do not depend on it.
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build_global();
        }
        (spec, rundir::Lock::acquire(&out)?)
    } else {
        let mut spec = Spec::load(&spec_path)?;
        if let Some(e) = a.epochs {
            spec.train.epochs = e;
        }
        if let Some(s) = a.seed {
            spec.train.seed = s;
        }
        // a training beyond the memory budget is refused before the folder is made
        train::memory::check_fits(&spec)?;
        let taken = rundir::is_taken(&out);
        if taken && !a.overwrite {
            bail!(
                "{} already exists and is not empty: pass --resume {} to continue that run, --overwrite to replace it, or another --out",
                out.display(),
                out.display()
            );
        }
        if taken {
            rundir::replaceable(&out, &spec)?; // refused before anything is written there
        }
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        // Held before anything is cleared, so a training writing here now is never touched.
        let lock = rundir::Lock::acquire(&out)?;
        if taken {
            rundir::clear_for_overwrite(&out, &spec)?;
        }
        (spec, lock)
    };
    Ok((spec, out, resume, lock))
}

/// The spec of the run rank 0 prepared, on every rank of a data-parallel run (rank 0's
/// error, if it failed, on every rank). `None` on a run of one process.
fn share_spec(
    world: &dyn Collective,
    mine: Option<&Result<(Spec, PathBuf, bool, rundir::Lock)>>,
) -> Result<Option<(Spec, PathBuf, bool)>> {
    if world.size() == 1 {
        return Ok(None);
    }
    let mut bytes = match mine {
        Some(Ok((spec, out, resume, _))) => frame(&[
            b"ok",
            spec.text.as_bytes(),
            spec.path.to_string_lossy().as_bytes(),
            spec.base()
                .map(|b| b.to_string_lossy().into_owned())
                .unwrap_or_default()
                .as_bytes(),
            &spec.train.seed.to_le_bytes(),
            &(spec.train.epochs as u64).to_le_bytes(),
            out.to_string_lossy().as_bytes(),
            &[*resume as u8],
        ]),
        Some(Err(e)) => frame(&[b"error", format!("{e:#}").as_bytes()]),
        None => Vec::new(),
    };
    world.broadcast(&mut bytes);
    if world.rank() == 0 {
        return Ok(None);
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let num = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
    match unframe(&bytes).as_deref() {
        Some([b"ok", t, p, base, seed, epochs, out, resume]) => {
            let base = text(base);
            let base = (!base.is_empty()).then(|| PathBuf::from(base));
            let mut spec = Spec::parse_in(&text(t), Path::new(&text(p)), base.as_deref())?;
            spec.train.seed = num(seed);
            spec.train.epochs = num(epochs) as usize;
            Ok(Some((spec, PathBuf::from(text(out)), resume == &[1])))
        }
        Some([b"error", msg]) => bail!("rank 0 could not start the run: {}", text(msg)),
        _ => bail!("rank 0 sent a damaged start message"),
    }
}

pub fn run(a: Args) -> Result<()> {
    let world = convnet::dist::from_launcher()?;
    let (rank, ranks) = (world.rank(), world.size());
    let mine = (rank == 0).then(|| prepare_dir(&a));
    let theirs = share_spec(&*world, mine.as_ref())?;
    let (spec, out, resume, _lock) = match (mine, theirs) {
        (Some(r), _) => {
            let (spec, out, resume, lock) = r?;
            (spec, out, resume, Some(lock))
        }
        (None, Some((spec, out, resume))) => (spec, out, resume, None),
        (None, None) => bail!("rank {rank} of {ranks} has no spec"),
    };
    let spec_path = spec.path.clone();
    let stop = stop_flag();
    let kind = train::RunKind::of(&spec);
    if ranks > 1 && kind == train::RunKind::Gan {
        bail!("a GAN trains on one process: run it without mpirun");
    }
    if rank > 0 {
        return follow(&spec, &out, resume, a.test_curve, stop, world);
    }
    println!("training {} into {}", spec_path.display(), out.display());
    if kind == train::RunKind::Gan {
        return gan(&a, &spec, &out, resume, stop);
    }
    let mut obs = Bar {
        bar: None,
        epoch: 0,
        epochs: spec.train.epochs,
        metric: Metric::Accuracy,
    };
    let started = std::time::Instant::now();
    let res = train::train(
        &spec,
        &TrainOptions {
            out: out.clone(),
            resume: match (resume, a.from_previous) {
                (false, _) => train::Resume::No,
                (true, false) => train::Resume::Latest,
                (true, true) => train::Resume::Previous,
            },
            stop: Some(stop),
            init: a.init_from.clone(),
            test_curve: a.test_curve,
            world,
        },
        &mut obs,
    )?;
    let mut so = std::io::stdout().lock();
    match res.outcome {
        Outcome::Interrupted { epoch, step } => {
            writeln!(
                so,
                "interrupted at epoch {epoch}, step {step}; continue with: convnet train --resume {}",
                out.display()
            )?;
            return Err(Interrupted.into());
        }
        Outcome::EarlyStopped { epoch } => writeln!(so, "stopped early after epoch {epoch}")?,
        Outcome::OutOfTime { epoch, seconds } => writeln!(
            so,
            "stopped after epoch {epoch} of {}: {seconds:.0} s of training reached max_seconds",
            spec.train.epochs
        )?,
        Outcome::Finished => {}
    }
    report(&mut so, &spec, &out, &res.prepared)?;
    writeln!(
        so,
        "done in {:.1}s; the run is in {} (metrics.csv, curves.png, best.safetensors)",
        started.elapsed().as_secs_f64(),
        out.display()
    )?;
    Ok(())
}

/// Ctrl-C (or SIGTERM) raises the flag: the loop stops after its current step and saves a
/// checkpoint. A second one quits at once (it should not be needed while that is written).
fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!(
            "\nstopping after this step; a checkpoint will be saved (Ctrl-C again to quit at once)"
        );
    });
    stop
}

/// `convnet train` of a GAN spec.
fn gan(a: &Args, spec: &Spec, out: &Path, resume: bool, stop: Arc<AtomicBool>) -> Result<()> {
    if resume {
        bail!("GAN runs do not resume: start a new run");
    }
    if a.init_from.is_some() {
        bail!("--init-from takes one model's weights; a GAN trains two");
    }
    let mut obs = GanBar { bar: None };
    let started = std::time::Instant::now();
    let rows = train::gan::train_gan(spec, out, Some(stop), &mut obs)?;
    println!(
        "done in {:.1}s ({} epochs); samples_epoch_*.png show the fixed noise batch after each epoch; `convnet generate {}` samples more",
        started.elapsed().as_secs_f64(),
        rows.len(),
        out.display()
    );
    Ok(())
}

/// After training: the chosen weights on the held-out data, as its kind of run reports them.
fn report(so: &mut impl Write, spec: &Spec, out: &Path, prepared: &train::Prepared) -> Result<()> {
    let kind = train::RunKind::of(spec);
    if kind == train::RunKind::Autoencoder {
        let (_, best, _) = train::load_run(out)?;
        let task = train::Task::of(spec, &best)?;
        let (name, held) = match (&prepared.test, &prepared.val) {
            (Some(t), _) => ("test", t),
            (None, Some(v)) => ("validation", v),
            (None, None) => ("training", &*prepared.train),
        };
        let png = out.join("reconstructions.png");
        let r = train::autoencoder::evaluate_autoencoder(
            &best,
            &task,
            &prepared.train,
            held,
            Some((&png, 12)),
        )?;
        return crate::eval::print_autoencoder_report(so, &r, name, &png);
    }
    if kind == train::RunKind::Forecaster {
        use train::forecast::{Part, evaluate_forecaster};
        let (_, best, info) = train::load_run(out)?;
        let r = evaluate_forecaster(spec, &best, &info, None, Part::Validation)?;
        crate::eval::print_forecast_report(so, &r, &info)?;
        if prepared.test.is_some() {
            let r = evaluate_forecaster(spec, &best, &info, None, Part::Test)?;
            crate::eval::print_forecast_report(so, &r, &info)?;
        }
    } else if let Some(test) = &prepared.test {
        let classes = prepared.class_names.len();
        let (_, best, info) = train::load_run(out)?;
        let r = train::evaluate(
            &best,
            test,
            &info.normalize(),
            classes,
            &train::loss_options(spec),
            256,
            spec.train.tta_hflip,
        )?;
        writeln!(
            so,
            "test ({} samples; {}): loss {:.4}, accuracy {:.2}%",
            r.samples,
            info.chosen_by(),
            r.loss,
            100.0 * r.accuracy
        )?;
    }
    Ok(())
}

/// A rank other than 0 of a data-parallel run: trains its part of every batch, writes
/// nothing, and says only what goes wrong.
fn follow(
    spec: &Spec,
    out: &Path,
    resume: bool,
    test_curve: bool,
    stop: Arc<AtomicBool>,
    world: convnet::dist::World,
) -> Result<()> {
    struct Quiet;
    impl Observer for Quiet {}
    let res = train::train(
        spec,
        &TrainOptions {
            out: out.to_path_buf(),
            resume: if resume {
                train::Resume::Latest
            } else {
                train::Resume::No
            },
            stop: Some(stop),
            init: None,
            test_curve,
            world,
        },
        &mut Quiet,
    )?;
    match res.outcome {
        Outcome::Interrupted { .. } => Err(Interrupted.into()),
        _ => Ok(()),
    }
}
