//! The training loop of a classifier, forecaster or autoencoder: [`train`] sets a run up
//! (model, data, optimizer, what watches the epochs, a resumed position), then each epoch is
//! its batches ([`Run::train_epoch`]) and what follows them ([`Run::end_epoch`]: validation,
//! best and last weights, metrics, the schedule, a checkpoint, the rules that stop a run).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::driver::{Driver, EpochEnd, Learner, Progress};
use super::ema::Ema;
use super::parallel::{Global, Local, Reducer};
use super::rundir::checkpoint::{self, LoopState};
use super::{
    EpochRow, Observer, Outcome, Prepared, Resume, RunInfo, Task, TrainOptions, TrainResult,
    evaluate_task, files, memory, mix, prepare, run_weights, rundir, split_seed, write_curves,
    write_file, write_metrics,
};
use crate::data::{Batch, Dataset};
use crate::error::{Error, Result};
use crate::io;
use crate::nn::{Ctx, Sequential};
use crate::optim::{Optimizer, ScheduleState, clip_grad_norm};
use crate::rng::Rng;
use crate::spec::Spec;
use crate::tensor::Tensor;

/// Train the classifier, forecaster or autoencoder that `spec` describes, writing the run
/// into `opts.out` (a GAN trains with [`super::gan::train_gan`]).
pub fn train(spec: &Spec, opts: &TrainOptions, obs: &mut dyn Observer) -> Result<TrainResult> {
    let t = &spec.train;
    let dir = &opts.out;
    if super::RunKind::of(spec) == super::RunKind::Gan {
        return Err(spec.err(
            "[train], key `task`",
            "a GAN trains with train::gan::train_gan".into(),
        ));
    }
    memory::check_fits(spec)?;
    let world = opts.world.clone();
    let writes = world.rank() == 0;
    let _lock = writes.then(|| rundir::Lock::acquire(dir)).transpose()?;
    let model = spec.build_model(&mut Rng::new(mix(t.seed, 0x1417)))?;
    if let (Some(from), Resume::No) = (&opts.init, opts.resume) {
        let (state, _) = io::load(&run_weights(from)?)?;
        model.load_state_dict(&state, &from.display().to_string())?;
    }
    let task = Task::of(spec, &model)?;
    let prepared = prepare(spec, &task, split_seed(t.seed))?;
    let task = match &prepared.target_norm {
        Some(n) => task.with_target_norm(n),
        None => task,
    };
    obs.metric(task.metric());
    warn_options(spec, opts, &prepared, obs)?;
    let mut opt = Optimizer::new(t.optimizer.clone(), t.weight_decay)?;
    let (monitor, minimize) = monitor(spec, &task, &prepared)?;
    let mut ema = t.ema.map(|d| Ema::new(spec, d)).transpose()?;
    let (mut st, from) = if opts.resume != Resume::No {
        let (st, from, note) = checkpoint::load(
            dir,
            opts.resume,
            spec,
            &model,
            &mut opt,
            ema.as_mut(),
            &*world,
        )?;
        if let Some(note) = note {
            obs.message(&note);
        }
        let at = format!("resuming at epoch {}, step {}", st.epoch + 1, st.step);
        obs.message(&at);
        (st, Some(from))
    } else {
        if writes {
            write_file(&dir.join(files::SPEC), &spec.text)?;
        }
        (LoopState::default(), None)
    };
    let ranks = world.size();
    let params = model.named_params();
    let state = model.state_dict();
    // the buffers alone: the state that is not a parameter
    let buffers = state
        .iter()
        .filter(|(n, _)| !params.iter().any(|(p, _)| p == n));
    let buffers = buffers.cloned().collect();
    let mut run = Run {
        spec,
        dir,
        opts,
        task,
        mixed: mixes_lengths(&model, &prepared.train, obs),
        // a rank's part of a batch
        engine: Engine::for_data(&model, &prepared.train, t.batch_size.div_ceil(ranks)),
        params,
        state,
        buffers,
        reducer: (ranks > 1).then(|| Reducer::new(world.clone())),
        writes,
        model,
        prepared,
        opt,
        ema,
        monitor,
        minimize,
        steps: 0,
    };
    let mut driver = Driver::new(spec, &run.prepared, run.mixed, opts.stop.clone());
    driver.part = (world.rank(), ranks);
    run.steps = driver.steps;
    // batch norm sums its statistics over the ranks while this lives
    let _sync = run.join_ranks(&driver, from.is_some(), obs)?;
    run.save_info(st.best_epoch, false)?;
    if let Some(w) = super::small_batch_warning(&run.model, &driver.batch_sizes())? {
        obs.message(&format!("warning: {w}"));
    }
    if let Some(from) = &from {
        st.check(run.steps, from)?;
    }
    obs.message(&run.engine.describe());
    let outcome = run.epochs(&driver, &mut st, obs)?;
    Ok(TrainResult {
        outcome,
        history: st.history.clone(),
        best_epoch: st.best_epoch,
        model: run.model,
        prepared: run.prepared,
    })
}

/// What chooses the best weights, and whether lower is better: the early-stopping monitor
/// (val_loss by default), or the training loss without a validation part.
fn monitor(spec: &Spec, task: &Task, prepared: &Prepared) -> Result<(String, bool)> {
    let metric = task.metric();
    let monitor = match (&prepared.val, &spec.train.early_stopping) {
        (None, _) => "train_loss".to_string(),
        (Some(_), Some(e)) => e.monitor.clone(),
        (Some(_), None) => "val_loss".to_string(),
    };
    if monitor.starts_with("val_")
        && !monitor.ends_with("loss")
        && monitor != format!("val_{}", metric.name())
    {
        return Err(spec.err(
            "[train.early_stopping], key `monitor`",
            format!(
                "{monitor} does not apply: this run reports val_loss and val_{}",
                metric.name()
            ),
        ));
    }
    let minimize = monitor.ends_with("loss") || !metric.higher_is_better();
    Ok((monitor, minimize))
}

/// Warnings on options that do not fit the spec's data.
fn warn_options(
    spec: &Spec,
    opts: &TrainOptions,
    prepared: &Prepared,
    obs: &mut dyn Observer,
) -> Result<()> {
    if spec.train.tta_hflip && spec.data()?.augment.hflip == 0.0 {
        // measured: 83.7% test accuracy instead of 90.6% on Fashion-MNIST after 3 epochs
        obs.message("warning: tta = [\"hflip\"] averages each image with its mirror, but [data.augment] has no hflip: the model never sees mirror images in training, and their predictions pull the average down");
    }
    if opts.test_curve && prepared.test.is_none() {
        obs.message("warning: --test-curve: the spec names no test data, so metrics.csv has no test columns");
    }
    Ok(())
}

/// A run being trained: what every epoch needs.
struct Run<'a> {
    spec: &'a Spec,
    dir: &'a Path,
    opts: &'a TrainOptions,
    task: Task,
    model: Sequential,
    prepared: Prepared,
    opt: Optimizer,
    /// The moving average of the weights, validated and saved in their place.
    ema: Option<Ema>,
    /// The model's parameters, and its parameters and buffers (handles on its tensors,
    /// which the optimizer updates in place).
    params: Vec<(String, Tensor)>,
    state: Vec<(String, Tensor)>,
    /// The buffers alone (batch norm's running statistics).
    buffers: Vec<(String, Tensor)>,
    engine: Engine,
    /// The exchange with the other ranks of a data-parallel run.
    reducer: Option<Reducer>,
    /// This process writes the run directory (rank 0 of a data-parallel run).
    writes: bool,
    /// Batches mix series of several lengths (padded and masked).
    mixed: bool,
    monitor: String,
    minimize: bool,
    /// Batches per epoch.
    steps: usize,
}

impl Run<'_> {
    fn info(&self, best_epoch: Option<usize>, finished: bool) -> RunInfo {
        RunInfo {
            best_epoch,
            finished,
            ..RunInfo::new(self.spec, Some(&self.prepared), &self.monitor)
        }
    }

    /// The model validation evaluates and `best.safetensors` holds: the moving average where
    /// there is one.
    fn evaluated(&self) -> &Sequential {
        self.ema.as_ref().map_or(&self.model, |e| &e.model)
    }

    /// The epochs from where `st` stands to the last, or to what ends the run.
    fn epochs(
        &mut self,
        driver: &Driver,
        st: &mut LoopState,
        obs: &mut dyn Observer,
    ) -> Result<Outcome> {
        let mut sched = ScheduleState {
            scale: st.schedule.0,
            best: st.schedule.1,
            bad_epochs: st.schedule.2,
        };
        let mut outcome = Outcome::Finished;
        while st.epoch < self.spec.train.epochs {
            let (stopped, lr) = self.train_epoch(driver, st, &sched, obs)?;
            if let Some(o) = stopped {
                outcome = o;
                break;
            }
            if let Some(o) = self.end_epoch(st, &mut sched, lr, obs)? {
                outcome = o;
                break;
            }
        }
        if let Some(msg) = self.reducer.as_ref().and_then(Reducer::summary) {
            obs.message(&msg);
        }
        if !matches!(outcome, Outcome::Interrupted { .. }) {
            self.save_info(st.best_epoch, true)?;
        }
        Ok(outcome)
    }

    /// A data-parallel run's start on every rank: the starting weights from rank 0 (unless
    /// `resumed` from a checkpoint rank 0 sent), batch norm synced or not, buckets or not,
    /// the parts checked. What keeps batch norm synced while it lives.
    fn join_ranks(
        &mut self,
        driver: &Driver,
        resumed: bool,
        obs: &mut dyn Observer,
    ) -> Result<Option<crate::dist::SyncBatchNorm>> {
        let Some(r) = &mut self.reducer else {
            return Ok(None);
        };
        let (t, world) = (&self.spec.train, &self.opts.world);
        let (rank, ranks) = (world.rank(), world.size());
        if !resumed {
            r.broadcast_tensors(&self.state)?;
        }
        let sync_bn = t.sync_batch_norm;
        if sync_bn && self.mixed {
            return Err(Error::Dist(
                "sync_batch_norm does not apply to batches of padded series of several lengths (their batch norm takes each rank's own part)".into(),
            ));
        }
        // with synced statistics every rank's running statistics are the same already
        r.average_buffers = !sync_bn;
        r.choose_buckets();
        driver.check_parts()?;
        obs.message(&format!(
            "data-parallel: rank {rank} of {ranks}{}, {} samples of each batch of {} here",
            match world.host() {
                h if h.is_empty() => String::new(),
                h => format!(" on {h}"),
            },
            crate::data::part_of(t.batch_size, rank, ranks).len(),
            t.batch_size
        ));
        Ok(sync_bn.then(|| crate::dist::SyncBatchNorm::start(world.clone())))
    }

    /// Write run.json (on the rank that writes).
    fn save_info(&self, best_epoch: Option<usize>, finished: bool) -> Result<()> {
        match self.writes {
            true => self.info(best_epoch, finished).save(self.dir),
            false => Ok(()),
        }
    }

    fn checkpoint(&self, st: &mut LoopState) -> Result<()> {
        st.ema_updates = self.ema.as_ref().map_or(0, |e| e.updates);
        if !self.writes {
            return Ok(());
        }
        checkpoint::save(
            self.dir,
            self.spec,
            &self.model,
            &self.opt,
            self.ema.as_ref(),
            st,
        )
    }

    /// In a data-parallel run, that every rank stopped after epoch `epoch` (1-based), step
    /// `step`, its checkpoint saved: said at once, as mpirun may end the ranks soon after it
    /// passed the signal on.
    fn say_stopped(&self, epoch: usize, step: usize, obs: &mut dyn Observer) {
        if self.reducer.is_some() {
            obs.message(&format!(
                "every rank stopped after epoch {epoch}, step {step}; the checkpoint is saved: `mpirun -np {} convnet train --resume {}` continues",
                self.opts.world.size(),
                self.dir.display()
            ));
        }
    }

    /// A stop asked for here, or (in a data-parallel run) on any rank: one call on every rank.
    fn stop_agreed(&self) -> bool {
        match &self.reducer {
            Some(r) => r.any_stop(self.stop_asked()),
            None => self.stop_asked(),
        }
    }

    fn stop_asked(&self) -> bool {
        self.opts
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::SeqCst))
    }

    /// The batches of epoch `st.epoch` from step `st.step` on; the outcome when the run was
    /// stopped inside it (a checkpoint saved), and the last learning rate.
    fn train_epoch(
        &mut self,
        driver: &Driver,
        st: &mut LoopState,
        sched: &ScheduleState,
        obs: &mut dyn Observer,
    ) -> Result<(Option<Outcome>, f32)> {
        let (e, start_step) = (st.epoch, st.step);
        let mut steps = EpochSteps {
            started: Instant::now(),
            base_seconds: st.epoch_seconds,
            run: self,
            st,
        };
        let end = driver.run_epoch(e, start_step, sched, &mut steps, obs)?;
        let secs = steps.seconds();
        if let Some(r) = &mut self.reducer {
            r.end_epoch();
        }
        st.epoch_seconds = secs;
        match end {
            EpochEnd::Done { lr } => Ok((None, lr)),
            EpochEnd::Stopped { step, lr } => {
                st.schedule = (sched.scale, sched.best, sched.bad_epochs);
                self.checkpoint(st)?;
                self.say_stopped(e + 1, step, obs);
                let at = Outcome::Interrupted { epoch: e + 1, step };
                Ok((Some(at), lr))
            }
        }
    }

    /// Forward, loss and backward of one batch (this rank's part of it), on the compiled plan
    /// where it takes the batch (with the loss computed by the plan where it has it): the
    /// loss and the metric's sum and terms.
    fn forward_backward(&mut self, batch: &Batch, rng: &mut Rng) -> Result<(f64, (f64, usize))> {
        let task = &self.task;
        if let Engine::Plan(p) = &mut self.engine {
            if p.fits(&batch.x) {
                let fused = task
                    .with_plan_loss(batch, |loss| p.train_step(&batch.x.data(), loss, &mut *rng));
                let (out, loss) = match fused {
                    Some(l) => return Ok((l? as f64, task.metric_sum_of(p.outputs(), batch))),
                    None => p.step(&batch.x, rng, |o| task.loss(o, batch))?,
                };
                return Ok((loss.item()? as f64, task.metric_sum(&out, batch)));
            }
        }
        let out = self.model.forward(
            &batch.x,
            &mut Ctx {
                training: true,
                rng,
                lengths: batch.lengths.clone(),
            },
        )?;
        let loss = task.loss(&out, batch)?;
        loss.backward()?;
        Ok((loss.item()? as f64, task.metric_sum(&out, batch)))
    }

    /// What this step saw over every rank: forward and backward here, then (in a
    /// data-parallel run) the ranks' figures and gradients summed.
    fn seen(&mut self, batch: &Batch, rng: &mut Rng, epoch: usize) -> Result<Global> {
        if self.reducer.is_none() {
            let (loss, (metric_sum, metric_terms)) = self.forward_backward(batch, rng)?;
            return Ok(Global {
                samples: batch.len(),
                loss,
                metric_sum,
                metric_terms,
                stop: self.stop_asked(),
            });
        }
        // Data-parallel: forward and the loss, then the figures summed (so a failure or a
        // stop is known to every rank before any gradient is sent), then backward, with the
        // gradients summed in buckets as it goes where the plan runs it; the eager engine's
        // backward runs with its forward and its gradients are summed after.
        let task = &self.task;
        let on_plan = matches!(&self.engine, Engine::Plan(p) if p.fits(&batch.x));
        let fwd = match &mut self.engine {
            Engine::Plan(p) if on_plan => p
                .forward_loss(&batch.x, rng, |o| task.loss(o, batch))
                .and_then(|(out, l, dy)| {
                    Ok((l.item()? as f64, task.metric_sum(&out, batch), Some(dy)))
                }),
            _ => self
                .forward_backward(batch, rng)
                .map(|(loss, metric)| (loss, metric, None)),
        };
        let local = match &fwd {
            Ok((loss, (metric_sum, metric_terms), _)) => {
                let (metric_sum, metric_terms) = (*metric_sum, *metric_terms);
                Local {
                    samples: batch.len(),
                    loss: *loss,
                    metric_sum,
                    metric_terms,
                    stop: self.stop_asked(),
                    failed: false,
                }
            }
            Err(_) => Local {
                samples: 0,
                loss: 0.0,
                metric_sum: 0.0,
                metric_terms: 0,
                stop: true,
                failed: true,
            },
        };
        let at = format!("epoch {epoch}, step {}", batch.step + 1);
        let (Some(reducer), engine) = (&mut self.reducer, &mut self.engine) else {
            unreachable!("a data-parallel run has its reducer");
        };
        let summed = reducer.figures(&local, &at);
        let (_, _, dy) = fwd?; // this rank's own error first
        let (global, share) = summed?;
        if let (Some(dy), Engine::Plan(p)) = (dy, engine) {
            match reducer.start_buckets(share) {
                Some(b) => p.backward_ready(&dy.data(), &mut |t, g| b.ready(t, g))?,
                None => p.backward(&dy.data())?,
            }
        }
        reducer.gradients(&self.params, &self.buffers, share)?;
        Ok(global)
    }

    /// One training step of `epoch` (1-based) at learning rate `lr`: forward, loss and
    /// backward, the divergence checks, clipping, the optimizer. What the step saw.
    fn step(&mut self, batch: &Batch, rng: &mut Rng, lr: f32, epoch: usize) -> Result<Global> {
        let t = &self.spec.train;
        let seen = self.seen(batch, rng, epoch)?;
        let lv = seen.loss;
        let at = |what: String| {
            Error::Autograd(format!(
                "training diverged at epoch {epoch}, step {}: {what}",
                batch.step + 1
            ))
        };
        if !lv.is_finite() || lv > 1e6 {
            return Err(at(format!(
                "the loss is {lv} (try a lower learning rate than {lr}, or clip_grad_norm); the weights of the last finished epoch are in {}",
                self.dir.join(files::LAST).display()
            )));
        }
        if let Some(c) = t.clip_grad_norm {
            let norm = clip_grad_norm(&self.params, c);
            if !norm.is_finite() {
                return Err(at(format!("the gradient norm is {norm}")));
            }
        }
        self.opt.step(&self.params, lr)?;
        if let Some(ema) = &mut self.ema {
            ema.update(&self.state);
        }
        Ok(seen)
    }

    /// After the batches of epoch `st.epoch`: validation, the epoch's row, last and best
    /// weights, the schedule, metrics and curves, a checkpoint; the outcome when a rule ends
    /// the run here (early stopping, the time budget, a stop asked for).
    fn end_epoch(
        &mut self,
        st: &mut LoopState,
        sched: &mut ScheduleState,
        lr: f32,
        obs: &mut dyn Observer,
    ) -> Result<Option<Outcome>> {
        let (t, dir, e) = (&self.spec.train, self.dir, st.epoch);
        let started = std::time::Instant::now();
        let on = |data: &Option<_>| -> Result<Option<(f64, f64)>> {
            data.as_ref()
                .map(|d| {
                    evaluate_task(
                        self.evaluated(),
                        d,
                        &self.prepared.normalize,
                        self.prepared.target_norm.as_ref(),
                        &self.task,
                        256,
                        t.tta_hflip,
                    )
                })
                .transpose()
        };
        let val = on(&self.prepared.val)?;
        st.epoch_seconds += started.elapsed().as_secs_f64();
        if let Some(r) = &self.reducer {
            // the time budget is rank 0's clock, so every rank stops after the same epoch
            st.epoch_seconds = r.rank0_value(st.epoch_seconds);
        }
        let test = match self.opts.test_curve {
            true => on(&self.prepared.test)?,
            false => None,
        };
        let row = EpochRow {
            epoch: e + 1,
            train_loss: st.loss_sum / st.seen.max(1) as f64,
            train_metric: st.metric_sum / st.metric_terms.max(1) as f64,
            val_loss: val.map(|v| v.0),
            val_metric: val.map(|v| v.1),
            lr: lr as f64,
            seconds: st.epoch_seconds,
            test_loss: test.map(|v| v.0),
            test_metric: test.map(|v| v.1),
        };
        let watched = match self.monitor.as_str() {
            "val_acc" | "val_mae" => row.val_metric.unwrap_or(row.train_metric),
            "val_loss" => row.val_loss.unwrap_or(row.train_loss),
            _ => row.train_loss,
        };
        let min_delta = t
            .early_stopping
            .as_ref()
            .map_or(0.0, |e| e.min_delta as f64);
        let improved = match st.best {
            None => true,
            Some(b) if self.minimize => watched < b - min_delta,
            Some(b) => watched > b + min_delta,
        };
        st.history.push(row.clone());
        let weights = |file: &str, m: &Sequential| match self.writes {
            true => io::save(
                &dir.join(file),
                &m.state_dict(),
                &checkpoint::weights_meta(self.spec),
            ),
            false => Ok(()),
        };
        weights(files::LAST, &self.model)?;
        if let Some(ema) = &self.ema {
            weights(files::EMA, &ema.model)?;
        }
        if improved {
            st.best = Some(watched);
            st.best_epoch = Some(e + 1);
            st.bad_epochs = 0;
            weights(files::BEST, self.evaluated())?;
        } else {
            st.bad_epochs += 1;
        }
        t.schedule.end_epoch(sched, watched as f32, self.minimize);
        obs.epoch_end(&row, improved);
        if self.writes {
            let metric = self.task.metric();
            write_metrics(dir, &st.history, metric)?;
            let title = self.spec.path.file_stem().unwrap_or_default();
            write_curves(dir, &st.history, &title.to_string_lossy(), metric)?;
        }
        st.epoch += 1;
        st.step = 0;
        st.loss_sum = 0.0;
        st.metric_sum = 0.0;
        st.metric_terms = 0;
        st.seen = 0;
        st.epoch_seconds = 0.0;
        st.schedule = (sched.scale, sched.best, sched.bad_epochs);
        self.checkpoint(st)?;
        self.save_info(st.best_epoch, false)?;
        Ok(self.stop_rule(st, obs))
    }

    /// Whether the run ends after the epoch just finished: early stopping, the time
    /// budget, or a stop asked for.
    fn stop_rule(&self, st: &LoopState, obs: &mut dyn Observer) -> Option<Outcome> {
        let (t, epoch) = (&self.spec.train, st.epoch);
        if let Some(es) = &t.early_stopping {
            // As Keras: stop once `patience` epochs in a row brought no improvement.
            if st.bad_epochs >= es.patience.max(1) {
                obs.message(&format!(
                    "early stopping after epoch {epoch}: {} has not improved for {} epochs",
                    es.monitor, st.bad_epochs
                ));
                return Some(Outcome::EarlyStopped { epoch });
            }
        }
        if epoch >= t.epochs {
            return None;
        }
        let spent: f64 = st.history.iter().map(|r| r.seconds).sum();
        if let Some(max) = t.max_seconds.filter(|&m| spent >= m as f64) {
            obs.message(&format!(
                "stopping after epoch {epoch}: {spent:.0} s of training reach max_seconds = {max}"
            ));
            return Some(Outcome::OutOfTime {
                epoch,
                seconds: spent,
            });
        }
        let stopped = self.stop_agreed();
        if stopped {
            self.say_stopped(epoch, self.steps, obs);
        }
        stopped.then_some(Outcome::Interrupted {
            epoch,
            step: self.steps,
        })
    }
}

/// The steps of one epoch of a [`Run`], with the loop state they add to.
struct EpochSteps<'r, 'a> {
    run: &'r mut Run<'a>,
    st: &'r mut LoopState,
    started: Instant,
    /// The seconds the epoch had run before a resume.
    base_seconds: f64,
}

impl EpochSteps<'_, '_> {
    fn seconds(&self) -> f64 {
        self.base_seconds + self.started.elapsed().as_secs_f64()
    }
}

impl Learner for EpochSteps<'_, '_> {
    fn set_momentum(&mut self, momentum: f32) {
        self.run.opt.set_momentum(momentum);
    }

    fn step(&mut self, batch: &Batch, lr: f32, rng: &mut Rng) -> Result<Progress> {
        let seen = self.run.step(batch, rng, lr, self.st.epoch + 1)?;
        let st = &mut *self.st;
        st.loss_sum += seen.loss * seen.samples as f64;
        st.metric_sum += seen.metric_sum;
        st.metric_terms += seen.metric_terms;
        st.seen += seen.samples;
        st.step = batch.step + 1;
        st.optimizer_steps = self.run.opt.steps;
        let secs = self.seconds();
        let st = &*self.st;
        Ok(Progress {
            loss: st.loss_sum / st.seen as f64,
            metric: st.metric_sum / st.metric_terms.max(1) as f64,
            samples_per_sec: st.seen as f64 / secs.max(1e-9),
            // one process reads its flag after the observer heard the step (as Ctrl-C's
            // handler may have raised it meanwhile); ranks go by what they agreed
            stop: self.run.reducer.is_some().then_some(seen.stop),
        })
    }
}

/// What runs the training steps: a plan compiled for the data's sample shape, or the eager
/// engine, with the reason.
enum Engine {
    Plan(crate::plan::TrainPlan),
    Eager(String),
}

impl Engine {
    fn for_data(model: &Sequential, data: &Dataset, batch: usize) -> Engine {
        if std::env::var_os("CONVNET_EAGER").is_some() {
            return Engine::Eager("CONVNET_EAGER is set".into());
        }
        if data.sizes.iter().any(|s| s[..] != data.shape[1..]) {
            // one engine for every batch keeps a resumed run equal to an uninterrupted one
            return Engine::Eager(if data.mixes_lengths() {
                "the series are of several lengths".into()
            } else {
                "the samples are of several sizes".into()
            });
        }
        match crate::plan::TrainPlan::compile(model, &data.shape, batch) {
            Ok(p) => Engine::Plan(p),
            Err(e) => Engine::Eager(e.to_string()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Engine::Plan(_) => "training on the compiled plan".into(),
            Engine::Eager(why) => format!("training eagerly ({why})"),
        }
    }
}

/// Whether training batches mix series of several lengths (padded to each batch's longest,
/// masked, bucketed by length): when the data has several lengths and every layer of
/// `model` honours the mask; otherwise each batch holds one length, and `obs` hears why.
fn mixes_lengths(model: &Sequential, data: &Dataset, obs: &mut dyn Observer) -> bool {
    if !data.mixes_lengths() {
        return false;
    }
    match crate::nn::mask::support(model) {
        Ok(()) => {
            obs.message("series of several lengths: each batch padded to its longest and masked, batches bucketed by length");
            true
        }
        Err(why) => {
            obs.message(&format!(
                "series of several lengths: one length per batch ({why})"
            ));
            false
        }
    }
}
