//! Optimizers (SGD with momentum / Nesterov / weight decay, Adam, AdamW, RMSprop) with
//! PyTorch's update rules, gradient clipping by global norm, and learning-rate schedules.

mod schedule;

pub use schedule::{OneCycle, Schedule, ScheduleState};

use std::collections::BTreeMap;

use rayon::prelude::*;

use crate::error::{Error, Result, param_err};
use crate::tensor::Tensor;

/// Values per parallel task of an update (a parameter smaller than two runs on one thread).
const PAR_CHUNK: usize = 1 << 15;

/// Which update rule, with its hyperparameters.
#[derive(Clone, Debug, PartialEq)]
pub enum OptimizerKind {
    Sgd {
        momentum: f32,
        nesterov: bool,
        dampening: f32,
    },
    Adam {
        beta1: f32,
        beta2: f32,
        eps: f32,
    },
    /// Adam with decoupled weight decay.
    AdamW {
        beta1: f32,
        beta2: f32,
        eps: f32,
    },
    RmsProp {
        alpha: f32,
        eps: f32,
        momentum: f32,
    },
}

/// An optimizer over named parameters; its state is keyed by parameter name so that it can
/// be saved and restored with a checkpoint.
pub struct Optimizer {
    pub kind: OptimizerKind,
    pub weight_decay: f32,
    /// Steps taken (Adam's bias correction uses it).
    pub steps: u64,
    state: BTreeMap<String, Vec<Vec<f32>>>,
}

impl Optimizer {
    /// Set the momentum a schedule cycles (PyTorch's `OneCycleLR`): SGD's and RMSprop's
    /// `momentum`, Adam's and AdamW's `beta1`.
    pub fn set_momentum(&mut self, m: f32) {
        match &mut self.kind {
            OptimizerKind::Sgd { momentum, .. } | OptimizerKind::RmsProp { momentum, .. } => {
                *momentum = m
            }
            OptimizerKind::Adam { beta1, .. } | OptimizerKind::AdamW { beta1, .. } => *beta1 = m,
        }
    }

    /// Checks the hyperparameters.
    pub fn new(kind: OptimizerKind, weight_decay: f32) -> Result<Optimizer> {
        let bad = |p: &'static str, m: String| param_err::<()>("optimizer", p, m);
        if !(weight_decay >= 0.0) {
            bad("weight_decay", format!("{weight_decay} must be >= 0"))?;
        }
        match &kind {
            OptimizerKind::Sgd {
                momentum,
                nesterov,
                dampening,
            } => {
                if !(0.0..1.0).contains(momentum) && *momentum != 0.0 {
                    bad("momentum", format!("{momentum} is not in [0, 1)"))?;
                }
                if *nesterov && (*momentum <= 0.0 || *dampening != 0.0) {
                    bad(
                        "nesterov",
                        "Nesterov momentum needs momentum > 0 and no dampening".into(),
                    )?;
                }
            }
            OptimizerKind::Adam { beta1, beta2, eps }
            | OptimizerKind::AdamW { beta1, beta2, eps } => {
                for (n, b) in [("beta1", beta1), ("beta2", beta2)] {
                    if !(0.0..1.0).contains(b) {
                        bad("betas", format!("{n} = {b} is not in [0, 1)"))?;
                    }
                }
                if !(*eps > 0.0) {
                    bad("eps", format!("{eps} must be positive"))?;
                }
            }
            OptimizerKind::RmsProp {
                alpha,
                eps,
                momentum,
            } => {
                if !(0.0..1.0).contains(alpha) {
                    bad("alpha", format!("{alpha} is not in [0, 1)"))?;
                }
                if !(*eps > 0.0) || !(*momentum >= 0.0) {
                    bad("eps", "eps must be positive and momentum >= 0".into())?;
                }
            }
        }
        Ok(Optimizer {
            kind,
            weight_decay,
            steps: 0,
            state: BTreeMap::new(),
        })
    }

    /// One update of every parameter from its gradient, at learning rate `lr`; gradients are
    /// then cleared. A parameter without a gradient is left as it is.
    pub fn step(&mut self, params: &[(String, Tensor)], lr: f32) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        let wd = self.weight_decay;
        for (name, p) in params {
            let Some(g) = p.grad() else { continue };
            let gd = g.data();
            let mut pd = p.data_mut();
            let n = pd.len();
            // Slots: SGD's momentum buffer; Adam's first and second moments; RMSprop's square
            // average and momentum buffer. Empty until first used.
            if !self.state.contains_key(name) {
                self.state.insert(name.clone(), vec![Vec::new(); SLOTS]);
            }
            let st = self.state.get_mut(name).expect("inserted above");
            if st.iter().any(|s| !s.is_empty() && s.len() != n) {
                return Err(Error::Autograd(format!(
                    "optimizer state of `{name}` does not match its size"
                )));
            }
            match self.kind {
                OptimizerKind::Sgd {
                    momentum,
                    nesterov,
                    dampening,
                } => {
                    let first = st[0].is_empty();
                    if momentum > 0.0 && first {
                        st[0] = vec![0.0; n];
                    }
                    for i in 0..n {
                        let mut d = gd[i] + wd * pd[i];
                        if momentum > 0.0 {
                            let b = &mut st[0][i];
                            *b = if first {
                                d
                            } else {
                                momentum * *b + (1.0 - dampening) * d
                            };
                            d = if nesterov { d + momentum * *b } else { *b };
                        }
                        pd[i] -= lr * d;
                    }
                }
                OptimizerKind::Adam { beta1, beta2, eps }
                | OptimizerKind::AdamW { beta1, beta2, eps } => {
                    let decoupled = matches!(self.kind, OptimizerKind::AdamW { .. });
                    if st[0].is_empty() {
                        st[0] = vec![0.0; n];
                        st[1] = vec![0.0; n];
                    }
                    let bc1 = 1.0 - beta1.powi(t);
                    let bc2 = 1.0 - beta2.powi(t);
                    let step_size = lr / bc1;
                    let bc2_sqrt = bc2.sqrt();
                    let (m, v) = st.split_at_mut(1);
                    let (m, v) = (&mut m[0], &mut v[0]);
                    let h = AdamStep {
                        beta1,
                        beta2,
                        eps,
                        lr,
                        wd,
                        decoupled,
                        step_size,
                        bc2_sqrt,
                    };
                    // each element on its own: chunks in parallel give the same bits
                    let update =
                        |((pd, gd), (m, v)): ((&mut [f32], &[f32]), (&mut [f32], &mut [f32]))| {
                            adam_update(pd, gd, (m, v), h)
                        };
                    if n < 2 * PAR_CHUNK {
                        update(((&mut pd[..], &gd[..]), (&mut m[..], &mut v[..])));
                    } else {
                        pd.par_chunks_mut(PAR_CHUNK)
                            .zip(gd.par_chunks(PAR_CHUNK))
                            .zip(m.par_chunks_mut(PAR_CHUNK).zip(v.par_chunks_mut(PAR_CHUNK)))
                            .for_each(update);
                    }
                }
                OptimizerKind::RmsProp {
                    alpha,
                    eps,
                    momentum,
                } => {
                    if st[0].is_empty() {
                        st[0] = vec![0.0; n];
                        st[1] = vec![0.0; n];
                    }
                    let (sq, buf) = st.split_at_mut(1);
                    let (sq, buf) = (&mut sq[0], &mut buf[0]);
                    for i in 0..n {
                        let g = gd[i] + wd * pd[i];
                        sq[i] = alpha * sq[i] + (1.0 - alpha) * g * g;
                        let avg = sq[i].sqrt() + eps;
                        if momentum > 0.0 {
                            buf[i] = momentum * buf[i] + g / avg;
                            pd[i] -= lr * buf[i];
                        } else {
                            pd[i] -= lr * g / avg;
                        }
                    }
                }
            }
            drop(pd);
            drop(gd);
            p.zero_grad();
        }
        Ok(())
    }

    /// The state as named tensors (`state.{param}.{slot}`), for checkpoints.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut v = Vec::new();
        for (name, slots) in &self.state {
            for (i, s) in slots.iter().enumerate() {
                if !s.is_empty() {
                    if let Ok(t) = Tensor::from_vec(s.clone(), &[s.len()]) {
                        v.push((format!("state.{name}.{i}"), t));
                    }
                }
            }
        }
        v
    }

    /// Restore what [`Optimizer::state_tensors`] saved, with the step count. Every tensor
    /// must name one of `params` and a slot (0 or 1) and hold one value per weight; anything
    /// else is an error naming the tensor and `path`.
    pub fn load_state(
        &mut self,
        tensors: &BTreeMap<String, Tensor>,
        steps: u64,
        params: &[(String, Tensor)],
        path: &std::path::Path,
    ) -> Result<()> {
        let bad = |k: &str, msg: String| Error::Format {
            path: path.display().to_string(),
            msg: format!("optimizer state `{k}`: {msg}"),
        };
        let mut state: BTreeMap<String, Vec<Vec<f32>>> = BTreeMap::new();
        for (k, t) in tensors {
            let parsed = k
                .strip_prefix("state.")
                .and_then(|rest| rest.rsplit_once('.'))
                .and_then(|(name, slot)| Some((name, slot.parse::<usize>().ok()?)));
            let Some((name, slot)) = parsed else {
                return Err(bad(k, "not a `state.{parameter}.{slot}` name".into()));
            };
            let Some((_, p)) = params.iter().find(|(n, _)| n == name) else {
                return Err(bad(k, format!("the model has no parameter `{name}`")));
            };
            if slot >= SLOTS {
                return Err(bad(k, format!("slot {slot}; the optimizer keeps {SLOTS}")));
            }
            if t.numel() != p.numel() {
                return Err(bad(
                    k,
                    format!("{} values for a parameter of {}", t.numel(), p.numel()),
                ));
            }
            state
                .entry(name.to_string())
                .or_insert_with(|| vec![Vec::new(); SLOTS])[slot] = t.to_vec();
        }
        self.state = state;
        self.steps = steps;
        Ok(())
    }
}

/// Per-parameter state slots: SGD's momentum; Adam's two moments; RMSprop's square average
/// and momentum buffer.
const SLOTS: usize = 2;

/// Scale all gradients so that their global L2 norm is at most `max_norm`; returns the norm
/// before clipping (PyTorch's `clip_grad_norm_`).
pub fn clip_grad_norm(params: &[(String, Tensor)], max_norm: f32) -> f32 {
    let grads: Vec<Tensor> = params.iter().filter_map(|(_, p)| p.grad()).collect();
    let norm = grads
        .iter()
        .map(|g| {
            g.data()
                .iter()
                .map(|&v| (v as f64) * (v as f64))
                .sum::<f64>()
        })
        .sum::<f64>()
        .sqrt() as f32;
    if max_norm > 0.0 && norm.is_finite() {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            for g in &grads {
                g.data_mut().iter_mut().for_each(|v| *v *= coef);
            }
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// A parameter large enough to be updated in parallel chunks ends with the bits of the same
    /// values updated as small parameters, one thread each (Adam and AdamW).
    #[test]
    fn a_large_parameter_updated_in_parallel_chunks_gives_the_sequential_bits() {
        let n = 3 * PAR_CHUNK + 123;
        let mut rng = Rng::new(2);
        let w: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        let grads: Vec<Vec<f32>> = (0..3)
            .map(|_| (0..n).map(|_| rng.normal()).collect())
            .collect();
        for kind in [
            OptimizerKind::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            OptimizerKind::AdamW {
                beta1: 0.8,
                beta2: 0.99,
                eps: 1e-6,
            },
        ] {
            let whole = [("w".to_string(), Tensor::from_vec(w.clone(), &[n]).unwrap())];
            let parts: Vec<(String, Tensor)> = w
                .chunks(1000)
                .enumerate()
                .map(|(i, c)| {
                    (
                        format!("p{i}"),
                        Tensor::from_vec(c.to_vec(), &[c.len()]).unwrap(),
                    )
                })
                .collect();
            let (mut a, mut b) = (
                Optimizer::new(kind.clone(), 0.01).unwrap(),
                Optimizer::new(kind.clone(), 0.01).unwrap(),
            );
            for g in &grads {
                whole[0]
                    .1
                    .set_grad(Tensor::from_vec(g.clone(), &[n]).unwrap());
                for ((_, p), c) in parts.iter().zip(g.chunks(1000)) {
                    p.set_grad(Tensor::from_vec(c.to_vec(), &[c.len()]).unwrap());
                }
                a.step(&whole, 1e-2).unwrap();
                b.step(&parts, 1e-2).unwrap();
            }
            let got: Vec<u32> = whole[0].1.to_vec().iter().map(|v| v.to_bits()).collect();
            let want: Vec<u32> = parts
                .iter()
                .flat_map(|(_, p)| p.to_vec())
                .map(|v| v.to_bits())
                .collect();
            assert_eq!(got, want, "{kind:?}");
        }
    }
}

/// The constants of one Adam (or AdamW) step.
#[derive(Clone, Copy)]
struct AdamStep {
    beta1: f32,
    beta2: f32,
    eps: f32,
    lr: f32,
    wd: f32,
    decoupled: bool,
    step_size: f32,
    bc2_sqrt: f32,
}

crate::kernels::avx2_twin! {
    /// Adam's update of `pd` from `gd` and the moments `(m, v)` (all the same length), eight
    /// elements at a time where the CPU has AVX2: the same operations, the same bits.
    fn adam_update(pd: &mut [f32], gd: &[f32], mv: (&mut [f32], &mut [f32]), h: AdamStep) = adam_plain;
}

#[inline(always)]
fn adam_plain(pd: &mut [f32], gd: &[f32], (m, v): (&mut [f32], &mut [f32]), h: AdamStep) {
    let n = pd.len();
    let (gd, m, v) = (&gd[..n], &mut m[..n], &mut v[..n]);
    for (((p, &g), m), v) in pd.iter_mut().zip(gd).zip(m.iter_mut()).zip(v.iter_mut()) {
        let mut g = g;
        if h.decoupled {
            *p *= 1.0 - h.lr * h.wd;
        } else {
            g += h.wd * *p;
        }
        *m = h.beta1 * *m + (1.0 - h.beta1) * g;
        *v = h.beta2 * *v + (1.0 - h.beta2) * g * g;
        *p -= h.step_size * *m / (v.sqrt() / h.bc2_sqrt + h.eps);
    }
}
