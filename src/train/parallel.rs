//! A training step's exchange between the ranks of a data-parallel run ([`crate::dist`]):
//! after the forward on its part of the batch, each rank adds what it saw (samples, loss,
//! metric, whether it failed or was asked to stop) to the others' ([`Reducer::figures`]), so
//! every rank knows of a failure or a stop before any gradient moves; after (or, in
//! [`Buckets`], during) backward, its gradients weighted by its share of the batch
//! ([`Reducer::gradients`]). Every rank then holds the gradient of the whole batch, the
//! batch's loss and the same decision to go on, and applies the same update.
//!
//! Buffers (batch norm's running statistics) are averaged over the ranks after the step, so
//! the ranks keep one model: each rank's statistics come from its own part of the batch, as
//! with PyTorch's DistributedDataParallel.

use std::sync::mpsc::{Receiver, Sender, channel};

use crate::dist::World;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// What one rank saw in a step.
pub(crate) struct Local {
    /// Samples in this rank's part.
    pub samples: usize,
    /// The mean loss over the part (0 when it failed).
    pub loss: f64,
    pub metric_sum: f64,
    pub metric_terms: usize,
    pub stop: bool,
    pub failed: bool,
}

/// What the ranks saw together.
#[derive(Debug)]
pub(crate) struct Global {
    pub samples: usize,
    /// The mean loss over the whole batch.
    pub loss: f64,
    pub metric_sum: f64,
    pub metric_terms: usize,
    pub stop: bool,
}

/// The exchange of one run, with its buffer (kept between steps).
pub(crate) struct Reducer {
    world: World,
    flat: Vec<f32>,
    /// Average the buffers over the ranks after each step (not needed when batch norm's
    /// statistics are synced, and so the same on every rank).
    pub average_buffers: bool,
    /// Steps exchanged, the seconds spent exchanging, the seconds between exchanges within
    /// an epoch (the steps' own work), and the end of the last exchange of this epoch.
    steps: usize,
    seconds: f64,
    between: (usize, f64),
    last: Option<std::time::Instant>,
    /// The start of this step's exchange; the seconds the training thread waited on
    /// gradients (all of the gradient all-reduce without buckets, what backward did not hide
    /// with them).
    started: Option<std::time::Instant>,
    exposed: f64,
    /// Gradient buckets summed while backward runs, once started; `no_buckets` where the
    /// ranks cannot (or `CONVNET_OVERLAP=0` asks them not to).
    buckets: Option<Buckets>,
    no_buckets: bool,
}

/// Ranks named in the failure mask (one bit per rank below 52).
fn failed_ranks(mask: f64, size: usize) -> String {
    let m = mask as u64;
    let named: Vec<String> = (0..size.min(52))
        .filter(|r| m >> r & 1 == 1)
        .map(|r| r.to_string())
        .collect();
    if named.is_empty() {
        "a rank".into()
    } else {
        format!("rank {}", named.join(", "))
    }
}

impl Reducer {
    pub fn new(world: World) -> Reducer {
        Reducer {
            world,
            flat: Vec::new(),
            average_buffers: true,
            steps: 0,
            seconds: 0.0,
            between: (0, 0.0),
            last: None,
            started: None,
            exposed: 0.0,
            buckets: None,
            no_buckets: false,
        }
    }

    /// Whether to sum gradients in buckets during backward: `CONVNET_OVERLAP=1` or `=0`
    /// decides; by default, when the ranks are on more than one machine. On one machine the
    /// ranks' sums take shared memory and little time, and the summing thread, which polls
    /// while it waits, takes a core from the ranks' work (measured on 2 cores with the F
    /// network: 1-8% slower with shared memory, no gain over TCP; BENCHMARKS.md). One call on
    /// every rank.
    pub fn choose_buckets(&mut self) -> bool {
        let on = match std::env::var("CONVNET_OVERLAP").as_deref() {
            Ok("0") => false,
            Ok(_) => true,
            Err(_) => {
                let mut host = self.world.host().into_bytes();
                let mine = host.clone();
                self.world.broadcast(&mut host);
                let mut elsewhere = [(host != mine) as u8 as f64];
                self.world.all_reduce_sum_f64(&mut elsewhere);
                elsewhere[0] > 0.0
            }
        };
        self.no_buckets = !on;
        on
    }

    /// Give every rank rank 0's values of `tensors` (the starting weights: drawn alike from
    /// the seed, or loaded by rank 0 alone with `--init-from`), as DDP does when it starts.
    pub fn broadcast_tensors(&self, tensors: &[(String, Tensor)]) -> Result<()> {
        let mut bytes = Vec::new();
        if self.world.rank() == 0 {
            for (_, t) in tensors {
                bytes.extend(t.data().iter().flat_map(|v| v.to_le_bytes()));
            }
        }
        self.world.broadcast(&mut bytes);
        let want: usize = tensors.iter().map(|(_, t)| 4 * t.numel()).sum();
        if bytes.len() != want {
            return Err(Error::Dist(format!(
                "rank 0 sent {} bytes of weights, this rank's model holds {want}",
                bytes.len()
            )));
        }
        let mut at = 0;
        for (_, t) in tensors {
            for v in t.data_mut().iter_mut() {
                *v = f32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
                at += 4;
            }
        }
        Ok(())
    }

    /// Whether any rank was asked to stop (one call on every rank).
    pub fn any_stop(&self, mine: bool) -> bool {
        let mut v = [mine as u8 as f64];
        self.world.all_reduce_sum_f64(&mut v);
        v[0] > 0.0
    }

    /// The epoch's steps are over (what follows them is not a step's work).
    pub fn end_epoch(&mut self) {
        self.last = None;
    }

    /// What the exchange cost: the values sent per step and the time it took, against the
    /// time of a step's own work (`None` before any step).
    pub fn summary(&self) -> Option<String> {
        if self.steps == 0 {
            return None;
        }
        let per = |s: f64| 1e3 * s / self.steps as f64;
        let exchange = per(self.seconds);
        let work = 1e3 * self.between.1 / self.between.0.max(1) as f64;
        let how = match &self.buckets {
            Some(b) => format!(
                "in buckets of up to {:.2} MiB while backward ran",
                4.0 * b.cap as f64 / (1 << 20) as f64
            ),
            None => "after backward".into(),
        };
        Some(format!(
            "data-parallel: {} steps of {:.2} ms: gradients summed {how}; the training thread waited {:.2} ms a step for them, and {:.2} ms from the step's first exchange to its last",
            self.steps,
            work + exchange,
            per(self.exposed),
            exchange,
        ))
    }

    /// Rank 0's `v` on every rank (one call on every rank).
    pub fn rank0_value(&self, v: f64) -> f64 {
        let mut b = [if self.world.rank() == 0 { v } else { 0.0 }];
        self.world.all_reduce_sum_f64(&mut b);
        b[0]
    }

    /// The first half of a step's exchange: the figures of `local` summed over the ranks,
    /// and this rank's share of the batch (by which its gradients are weighted). An error
    /// when a rank failed (the failing rank returns its own error instead).
    pub fn figures(&mut self, local: &Local, at: &str) -> Result<(Global, f32)> {
        let started = std::time::Instant::now();
        if let Some(l) = self.last {
            self.between.0 += 1;
            self.between.1 += (started - l).as_secs_f64();
        }
        self.started = Some(started);
        let (rank, size) = (self.world.rank(), self.world.size());
        let bit = if rank < 52 {
            (1u64 << rank) as f64
        } else {
            0.0
        };
        let mut figures = [
            local.samples as f64,
            local.loss * local.samples as f64,
            local.metric_sum,
            local.metric_terms as f64,
            local.stop as u8 as f64,
            if local.failed { bit.max(1.0) } else { 0.0 },
        ];
        self.world.all_reduce_sum_f64(&mut figures);
        let [samples, loss, metric_sum, terms, stop, failed] = figures;
        if failed > 0.0 {
            return Err(Error::Dist(format!(
                "{} failed at {at}; every rank stops (its message is in its own output)",
                failed_ranks(failed, size)
            )));
        }
        let global = Global {
            samples: samples as usize,
            loss: loss / samples.max(1.0),
            metric_sum,
            metric_terms: terms as usize,
            stop: stop > 0.0,
        };
        Ok((global, local.samples as f32 / samples as f32))
    }

    /// The second half, after backward: the gradients of `params` weighted by `share`
    /// summed over the ranks (each replaced by the whole batch's), and the `buffers`
    /// averaged. Gradients already summed in buckets during backward are waited for.
    pub fn gradients(
        &mut self,
        params: &[(String, Tensor)],
        buffers: &[(String, Tensor)],
        share: f32,
    ) -> Result<()> {
        let overlapped = match &mut self.buckets {
            Some(b) if b.active => {
                let waited = std::time::Instant::now();
                b.finish()?;
                self.exposed += waited.elapsed().as_secs_f64();
                true
            }
            _ => false,
        };
        self.flat.clear();
        if !overlapped {
            for (_, p) in params {
                match p.grad() {
                    Some(g) => self.flat.extend(g.data().iter().map(|v| v * share)),
                    None => self.flat.extend(std::iter::repeat_n(0.0, p.numel())),
                }
            }
        }
        let buffers = if self.average_buffers { buffers } else { &[] };
        for (_, b) in buffers {
            self.flat.extend(b.data().iter());
        }
        if !self.flat.is_empty() {
            let t = std::time::Instant::now();
            self.world.all_reduce_sum(&mut self.flat);
            if !overlapped {
                self.exposed += t.elapsed().as_secs_f64();
            }
        }
        let mut at = 0;
        if !overlapped {
            for (_, p) in params {
                let n = p.numel();
                let whole = &self.flat[at..at + n];
                match p.grad() {
                    Some(g) => g.data_mut().copy_from_slice(whole),
                    None => p.set_grad(Tensor::from_vec(whole.to_vec(), p.shape())?),
                }
                at += n;
            }
        }
        let ranks = self.world.size() as f32;
        for (_, b) in buffers {
            let n = b.numel();
            for (v, s) in b.data_mut().iter_mut().zip(&self.flat[at..at + n]) {
                *v = s / ranks;
            }
            at += n;
        }
        self.steps += 1;
        if let Some(s) = self.started.take() {
            self.seconds += s.elapsed().as_secs_f64();
        }
        self.last = Some(std::time::Instant::now());
        Ok(())
    }

    /// Sum gradients in buckets while backward runs ([`Self::ready`]), where the ranks can:
    /// `Some` with the buckets started for this step (weighted by `share`).
    pub fn start_buckets(&mut self, share: f32) -> Option<&mut Buckets> {
        if self.buckets.is_none() && !self.no_buckets {
            match Buckets::new(&*self.world) {
                Ok(b) => self.buckets = Some(b),
                Err(_) => self.no_buckets = true,
            }
        }
        let b = self.buckets.as_mut()?;
        b.begin(share);
        Some(b)
    }
}

/// Gradients summed over the ranks in buckets while backward runs, as PyTorch's DDP does: as
/// backward finishes a layer, its parameters' gradients (weighted by the rank's share) fill
/// the current bucket; a full bucket goes to a thread of its own that sums it over a
/// duplicate of the ranks' channel, and backward goes on. Every rank fills the buckets in
/// the same order (the parameters from the last layer back), so the sums meet.
pub(crate) struct Buckets {
    /// `None` once dropped (which ends the thread).
    to: Option<Sender<Vec<f32>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    back: Receiver<Vec<f32>>,
    /// Values per bucket (a parameter larger than this fills one alone).
    cap: usize,
    cur: Vec<f32>,
    cur_members: Vec<Tensor>,
    /// The parameters of each bucket sent this step, in order.
    sent: Vec<Vec<Tensor>>,
    spare: Vec<Vec<f32>>,
    share: f32,
    /// A step's buckets are being filled.
    active: bool,
}

/// Values per bucket: 1 MiB (the size of DDP's first bucket; the models here are small,
/// and more buckets start sums earlier).
const BUCKET: usize = 1 << 18;

impl Buckets {
    fn new(world: &dyn crate::dist::Collective) -> Result<Buckets> {
        let side = world.duplicate()?;
        let (to, jobs) = channel::<Vec<f32>>();
        let (done, back) = channel::<Vec<f32>>();
        let thread = std::thread::Builder::new()
            .name("convnet-allreduce".into())
            .spawn(move || {
                for mut b in jobs {
                    side.all_reduce_sum(&mut b);
                    if done.send(b).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| Error::Dist(format!("cannot start the all-reduce thread: {e}")))?;
        Ok(Buckets {
            to: Some(to),
            thread: Some(thread),
            back,
            cap: BUCKET,
            cur: Vec::new(),
            cur_members: Vec::new(),
            sent: Vec::new(),
            spare: Vec::new(),
            share: 1.0,
            active: false,
        })
    }

    fn begin(&mut self, share: f32) {
        self.share = share;
        self.active = true;
    }

    /// `param`'s gradient `grad` is final: into the current bucket, sent once full.
    pub fn ready(&mut self, param: &Tensor, grad: &[f32]) {
        let share = self.share;
        self.cur.extend(grad.iter().map(|v| v * share));
        self.cur_members.push(param.clone());
        if self.cur.len() >= self.cap {
            self.send();
        }
    }

    fn send(&mut self) {
        let next = self.spare.pop().unwrap_or_default();
        let full = std::mem::replace(&mut self.cur, next);
        self.sent.push(std::mem::take(&mut self.cur_members));
        // a closed channel means the thread ended; `finish` says so
        if let Some(to) = &self.to {
            let _ = to.send(full);
        }
    }

    /// Wait for every bucket of the step and write the sums into the parameters' gradients.
    fn finish(&mut self) -> Result<()> {
        if !self.cur.is_empty() {
            self.send();
        }
        self.active = false;
        for members in std::mem::take(&mut self.sent) {
            let mut b = self
                .back
                .recv()
                .map_err(|_| Error::Dist("the all-reduce thread ended".into()))?;
            let mut at = 0;
            for p in members {
                let n = p.numel();
                match p.grad() {
                    Some(g) => g.data_mut().copy_from_slice(&b[at..at + n]),
                    None => p.set_grad(Tensor::from_vec(b[at..at + n].to_vec(), p.shape())?),
                }
                at += n;
            }
            b.clear();
            self.spare.push(b);
        }
        Ok(())
    }
}

impl Drop for Buckets {
    /// End the thread (which lets MPI finish), waiting for it when no bucket is in flight; a
    /// rank that fails mid-step leaves it, and its process's exit ends it.
    fn drop(&mut self) {
        self.to = None;
        if !self.active && self.sent.is_empty() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::local::local_ranks;

    fn local(samples: usize, loss: f64, failed: bool) -> Local {
        Local {
            samples,
            loss,
            metric_sum: samples as f64,
            metric_terms: samples,
            stop: false,
            failed,
        }
    }

    /// On each of two thread ranks: a parameter with gradient `grads[rank]`, a buffer, and a
    /// part of `parts[rank]` samples; `buckets`: summed during "backward". What each rank
    /// ends with: (figures, gradient, buffer).
    fn two_ranks(buckets: bool) -> Vec<(Global, Vec<f32>, Vec<f32>)> {
        let grads = [vec![1.0f32, 2.0], vec![5.0, -2.0]];
        let parts = [3usize, 1];
        std::thread::scope(|s| {
            let hs: Vec<_> = local_ranks(2)
                .into_iter()
                .map(|w| {
                    let g = grads[w.rank()].clone();
                    let n = parts[w.rank()];
                    s.spawn(move || {
                        let p = Tensor::from_vec(vec![0.0, 0.0], &[2]).unwrap();
                        p.set_grad(Tensor::from_vec(g.clone(), &[2]).unwrap());
                        let b = Tensor::from_vec(vec![w.rank() as f32 * 4.0], &[1]).unwrap();
                        let mut r = Reducer::new(w);
                        let loss = if n == 3 { 1.0 } else { 5.0 };
                        let (global, share) = r.figures(&local(n, loss, false), "here").unwrap();
                        if buckets {
                            let bk = r.start_buckets(share).unwrap();
                            bk.ready(&p, &g);
                        }
                        let params = [("w".to_string(), p.clone())];
                        let bufs = [("m".to_string(), b.clone())];
                        r.gradients(&params, &bufs, share).unwrap();
                        (global, p.grad().unwrap().to_vec(), b.to_vec())
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn ranks_sum_gradients_weighted_by_their_parts_and_average_buffers() {
        for buckets in [false, true] {
            for (g, grad, buf) in two_ranks(buckets) {
                // (3 * [1, 2] + 1 * [5, -2]) / 4
                assert_eq!(grad, [2.0, 1.0], "buckets {buckets}");
                assert_eq!(buf, [2.0]);
                assert_eq!(g.samples, 4);
                assert_eq!(g.loss, (3.0 * 1.0 + 5.0) / 4.0);
                assert_eq!((g.metric_sum, g.metric_terms), (4.0, 4));
            }
        }
    }

    #[test]
    fn a_failed_rank_stops_every_rank_with_its_name() {
        let errs: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> = local_ranks(3)
                .into_iter()
                .map(|w| {
                    s.spawn(move || {
                        let failed = w.rank() == 1;
                        let mut r = Reducer::new(w);
                        let l = local(if failed { 0 } else { 4 }, 0.5, failed);
                        r.figures(&l, "epoch 2, step 7").unwrap_err().to_string()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for e in errs {
            assert!(
                e.contains("rank 1 failed at epoch 2, step 7; every rank stops"),
                "{e}"
            );
        }
    }
}
