//! A training step's exchange between the ranks of a data-parallel run ([`crate::dist`]):
//! after backward on its part of the batch, each rank adds what it saw (samples, loss,
//! metric, whether it failed or was asked to stop) and its gradients, weighted by its share
//! of the batch, to the others'. Every rank then holds the gradient of the whole batch, the
//! batch's loss and the same decision to go on, and applies the same update.
//!
//! Buffers (batch norm's running statistics) are averaged over the ranks after the step, so
//! the ranks keep one model: each rank's statistics come from its own part of the batch, as
//! with PyTorch's DistributedDataParallel.

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
        }
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

    /// Rank 0's `v` on every rank (one call on every rank).
    pub fn rank0_value(&self, v: f64) -> f64 {
        let mut b = [if self.world.rank() == 0 { v } else { 0.0 }];
        self.world.all_reduce_sum_f64(&mut b);
        b[0]
    }

    /// Sum the step over the ranks: the figures of `local`, the gradients of `params`
    /// (replaced by the whole batch's), the `buffers` (averaged). An error when a rank
    /// failed (the failing rank returns its own error instead).
    pub fn step(
        &mut self,
        local: Local,
        params: &[(String, Tensor)],
        buffers: &[(String, Tensor)],
        at: &str,
    ) -> Result<Global> {
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
        let share = local.samples as f32 / samples as f32;
        self.flat.clear();
        for (_, p) in params {
            match p.grad() {
                Some(g) => self.flat.extend(g.data().iter().map(|v| v * share)),
                None => self.flat.extend(std::iter::repeat_n(0.0, p.numel())),
            }
        }
        let buffers = if self.average_buffers { buffers } else { &[] };
        for (_, b) in buffers {
            self.flat.extend(b.data().iter());
        }
        self.world.all_reduce_sum(&mut self.flat);
        let mut at = 0;
        for (_, p) in params {
            let n = p.numel();
            let whole = &self.flat[at..at + n];
            match p.grad() {
                Some(g) => g.data_mut().copy_from_slice(whole),
                None => p.set_grad(Tensor::from_vec(whole.to_vec(), p.shape())?),
            }
            at += n;
        }
        let ranks = size as f32;
        for (_, b) in buffers {
            let n = b.numel();
            for (v, s) in b.data_mut().iter_mut().zip(&self.flat[at..at + n]) {
                *v = s / ranks;
            }
            at += n;
        }
        Ok(Global {
            samples: samples as usize,
            loss: loss / samples.max(1.0),
            metric_sum,
            metric_terms: terms as usize,
            stop: stop > 0.0,
        })
    }
}
