//! The loss of a training step computed on the plan's own output buffer: the loss's value
//! and its gradient with respect to the outputs, written into buffers of the plan, with no
//! autograd graph and nothing allocated. The arithmetic is the eager ops' own
//! (`ops::loss`), so a step gives the same bits either way.

use crate::error::{Result, shape_err};
use crate::ops::loss::{check_cross_entropy, cross_entropy_grad, cross_entropy_values};
use crate::ops::{CrossEntropyOptions, PointLoss};

/// A loss the plan computes itself (see [`super::TrainPlan::train_step`]); a loss not named
/// here runs eagerly on the outputs ([`super::TrainPlan::step`]).
#[derive(Clone, Copy, Debug)]
pub enum PlanLoss<'a> {
    /// Cross-entropy of the `(n, classes)` outputs against class indices.
    CrossEntropy {
        targets: &'a [usize],
        options: &'a CrossEntropyOptions,
    },
    /// An elementwise loss against targets shaped as the outputs.
    Pointwise { kind: PointLoss, targets: &'a [f32] },
}

/// Buffers of the loss, sized for the plan's largest batch of outputs.
pub(super) struct LossBuffers {
    /// Cross-entropy's log-probabilities and their gradients.
    lp: Vec<f32>,
    q: Vec<f32>,
    /// The gradient with respect to the outputs.
    pub(super) dy: Vec<f32>,
}

impl LossBuffers {
    pub(super) fn new(len: usize) -> LossBuffers {
        LossBuffers {
            lp: vec![0.0; len],
            q: vec![0.0; len],
            dy: vec![0.0; len],
        }
    }

    /// The loss of `out`, `(n, *per_sample)`, with its gradient written to `dy[..out.len()]`.
    pub(super) fn compute(&mut self, loss: PlanLoss, out: &[f32], n: usize) -> Result<f32> {
        let len = out.len();
        let dy = &mut self.dy[..len];
        match loss {
            PlanLoss::CrossEntropy { targets, options } => {
                let c = len / n.max(1);
                check_cross_entropy(n, c, targets, options)?;
                let (lp, q) = (&mut self.lp[..len], &mut self.q[..len]);
                let (l, denom) = cross_entropy_values(out, targets, options, lp, q);
                // the eager backward's seed (1) over the denominator
                cross_entropy_grad(lp, q, c, 1.0 / denom as f32, dy);
                Ok(l)
            }
            PlanLoss::Pointwise { kind, targets } => {
                if targets.len() != len || len == 0 {
                    return shape_err(
                        "plan loss",
                        format!("{} targets for {len} outputs", targets.len()),
                    );
                }
                let gs = 1.0 / len as f32;
                for ((d, &a), &b) in dy.iter_mut().zip(out).zip(targets) {
                    *d = gs * kind.grad(a, b).0;
                }
                Ok(kind.mean(out, targets))
            }
        }
    }
}
