//! The epoch driver every kind of run trains with: the order of an epoch's batches (a
//! function of the seed and the epoch), the background loader that assembles and augments
//! them, the learning rate and momentum of each step, each step's random stream, the progress
//! the observer hears, and a stop asked for between steps. What a step does (a supervised
//! step, a GAN's two) and what follows an epoch (validation, checkpoints, sample grids) is
//! the caller's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::seeds::{epoch_seed, step_rng};
use super::{Observer, Prepared};
use crate::data::{Batch, Dataset, Loader, Normalize};
use crate::error::{Error, Result};
use crate::optim::ScheduleState;
use crate::rng::Rng;
use crate::spec::Spec;

/// How the batches of an epoch ended.
pub(crate) enum EpochEnd {
    /// Every batch ran; the last step's learning rate.
    Done { lr: f32 },
    /// A stop was asked for; `step` batches of the epoch ran (fewer than all).
    Stopped { step: usize, lr: f32 },
}

/// What the observer hears after a step: the epoch's running loss and metric, and its speed.
pub(crate) struct Progress {
    pub loss: f64,
    pub metric: f64,
    pub samples_per_sec: f64,
    /// Whether the ranks agreed to stop after this step; `None`: the stop flag decides.
    pub stop: Option<bool>,
}

/// What one kind of run does with a batch: `step(batch, lr, rng)` trains on it (the momentum
/// of a cycled schedule was given to `set_momentum` first).
pub(crate) trait Learner {
    fn set_momentum(&mut self, momentum: f32);
    fn step(&mut self, batch: &Batch, lr: f32, rng: &mut Rng) -> Result<Progress>;
}

/// The epochs of one run.
pub(crate) struct Driver<'a> {
    pub spec: &'a Spec,
    /// The training part, and the normalisation of its inputs and targets.
    pub train: Arc<Dataset>,
    pub normalize: Normalize,
    pub target_norm: Option<Normalize>,
    /// Batches mix series of several lengths (padded and masked, bucketed by length).
    pub mixed: bool,
    /// Batches per epoch.
    pub steps: usize,
    /// Raised (by Ctrl-C) to stop after the current step.
    pub stop: Option<Arc<AtomicBool>>,
    /// This process's part of every batch: (rank, ranks) of a data-parallel run.
    pub part: (usize, usize),
}

impl<'a> Driver<'a> {
    /// The driver of a run of `spec` on `prepared`'s training part.
    pub fn new(
        spec: &'a Spec,
        prepared: &Prepared,
        mixed: bool,
        stop: Option<Arc<AtomicBool>>,
    ) -> Driver<'a> {
        let train = prepared.train.clone();
        let all: Vec<usize> = (0..train.len()).collect();
        // series of unequal length batch by length, so the count can exceed n / batch_size
        let steps = train
            .epoch_batches(&all, spec.train.batch_size, mixed)
            .len();
        Driver {
            spec,
            train,
            normalize: prepared.normalize.clone(),
            target_norm: prepared.target_norm.clone(),
            mixed,
            steps,
            stop,
            part: (0, 1),
        }
    }

    /// Refuse a data-parallel run in which some rank's part of a batch would be empty.
    pub fn check_parts(&self) -> Result<()> {
        let ranks = self.part.1;
        match self.batch_sizes().into_iter().min() {
            Some(n) if n < ranks => Err(Error::Dist(format!(
                "a batch of {n} samples cannot be shared by {ranks} ranks (batch_size = {}, {} training samples): use fewer ranks or a batch size that leaves no batch smaller than {ranks}",
                self.spec.train.batch_size,
                self.train.len()
            ))),
            _ => Ok(()),
        }
    }

    /// The samples in each batch of an epoch.
    pub fn batch_sizes(&self) -> Vec<usize> {
        let all: Vec<usize> = (0..self.train.len()).collect();
        let batches = self
            .train
            .epoch_batches(&all, self.spec.train.batch_size, self.mixed);
        batches.iter().map(|b| b.len()).collect()
    }

    pub fn stop_asked(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
    }

    /// Epoch `e`'s seed and its batches (sample indices), in the order every run with this
    /// seed takes them.
    fn batches(&self, e: usize) -> (u64, Vec<Vec<usize>>) {
        let t = &self.spec.train;
        let es = epoch_seed(t.seed, e);
        let train = &self.train;
        let mut order: Vec<usize> = (0..train.len()).collect();
        let mut rng = Rng::new(es);
        rng.shuffle(&mut order);
        let mut batches = train.epoch_batches(&order, t.batch_size, self.mixed);
        if !train.sizes.is_empty() {
            // grouped or bucketed by size: mix the sizes over the epoch
            rng.shuffle(&mut batches);
        }
        (es, batches)
    }

    /// The batches of epoch `e` (0-based) from `start_step` on, each given to `learner` at
    /// the schedule's learning rate; `sched` is the plateau schedule's state.
    pub fn run_epoch(
        &self,
        e: usize,
        start_step: usize,
        sched: &ScheduleState,
        learner: &mut dyn Learner,
        obs: &mut dyn Observer,
    ) -> Result<EpochEnd> {
        let t = &self.spec.train;
        let (es, batches) = self.batches(e);
        let augment = self.spec.data()?.augment.clone();
        let loader = Loader::spawn(
            self.train.clone(),
            batches,
            start_step,
            self.part,
            augment.is_active().then_some(augment),
            self.normalize.clone(),
            self.target_norm.clone(),
            es,
        );
        obs.epoch_start(e + 1, t.epochs, self.steps, start_step);
        let (mut lr, mut done) = (t.lr, start_step);
        for batch in loader {
            lr = t
                .schedule
                .lr(t.lr, sched, e, batch.step, self.steps, t.epochs);
            if let Some(m) = t.schedule.momentum(e, batch.step, self.steps, t.epochs) {
                learner.set_momentum(m);
            }
            let mut rng = step_rng(es, batch.step, self.part.0);
            let p = learner.step(&batch, lr, &mut rng)?;
            done = batch.step + 1;
            obs.step(done, p.loss, p.metric, p.samples_per_sec);
            if p.stop.unwrap_or_else(|| self.stop_asked()) && done < self.steps {
                return Ok(EpochEnd::Stopped { step: done, lr });
            }
        }
        if done < self.steps {
            // the loader ends early only when it could not build a batch
            return Err(Error::Format {
                path: "training data".into(),
                msg: format!(
                    "epoch {}: the data gave {done} of {} batches (a batch could not be assembled)",
                    e + 1,
                    self.steps
                ),
            });
        }
        Ok(EpochEnd::Done { lr })
    }
}
