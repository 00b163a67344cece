//! A model compiled for training steps: forward in training mode keeping what backward needs
//! in buffers allocated once, and backward writing each parameter's gradient, with no
//! autograd graph. The loss stays with the caller (an eager op on the logits, which are
//! small), so every loss and task of the eager loop works unchanged.
//!
//! Fusions: a convolution or dense layer takes its bias and an elementwise activation into
//! its store (and the activation's derivative into the gradient it hands back); a batch norm
//! takes the activation after it. An activation is fused only where its derivative follows
//! from its output (`Pointwise::derivative_from_output`); others run as their own step.

use rayon::prelude::*;

use super::Weighted;
use super::conv_pool::ConvPool;
use super::loss::{LossBuffers, PlanLoss};
use super::train_lower::{build, shape_steps};
use crate::error::{Error, Result};
use crate::kernels::conv::ConvBackward;
use crate::kernels::dense::Gemm;
use crate::kernels::gemm::MatRef;
use crate::kernels::pool::{self, Pool2dGeom};
use crate::kernels::sum_f64;
use crate::nn::{BatchNorm, Sequential};
use crate::ops::Pointwise;
use crate::ops::dropout::fill_mask;
use crate::ops::norm::{
    BnSaved, affine_planes, batch_norm_backward, batch_stats, inv_std, scale_shift, update_running,
};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// One step of a training plan (reads activation `k`, writes activation `k + 1`).
pub(super) enum TStep {
    Conv {
        fwd: Box<dyn Weighted + Send>,
        /// The backward's kernels with their buffers, kept between steps.
        bwd: Box<ConvBackward>,
        weight: usize,
        bias: Option<usize>,
        act: Option<Pointwise>,
    },
    Dense {
        fwd: Box<dyn Weighted + Send>,
        /// The input gradient's product (`dY W`) and the weight gradient's (`dY^T X`).
        dx_gemm: Gemm,
        dw_gemm: Gemm,
        weight: usize,
        bias: Option<usize>,
        act: Option<Pointwise>,
        in_f: usize,
        units: usize,
    },
    BatchNorm {
        bn: BatchNorm,
        weight: usize,
        bias: usize,
        act: Option<Pointwise>,
        inner: usize,
        mean: Vec<f32>,
        var: Vec<f64>,
        invstd: Vec<f32>,
        scale: Vec<f32>,
        shift: Vec<f32>,
        sums: Vec<(f64, f64)>,
    },
    /// A convolution, its activation and a 2x2 max pooling in one pass.
    ConvPool(Box<ConvPool>),
    Act(Pointwise),
    MaxPool(Pool2dGeom),
    AvgPool(Pool2dGeom, bool),
    GlobalAvg {
        c: usize,
        inner: usize,
    },
    Dropout {
        rate: f32,
        /// Elements that share one mask entry (a whole plane for spatial dropout).
        group: usize,
        mask: Vec<f32>,
    },
}

/// The parameters the steps use, each with its gradient buffer.
pub(super) type Params = Vec<(Tensor, Vec<f32>)>;

/// Steps with the per-sample lengths of their input and output.
type Steps = Vec<(TStep, usize, usize)>;

/// A model compiled for training on batches of up to `batch` samples of one shape.
pub struct TrainPlan {
    input: Vec<usize>,
    output: Vec<usize>,
    batch: usize,
    steps: Steps,
    /// `acts[k]`: the input of step `k` (`acts[0]` the batch); the last, the output.
    acts: Vec<Vec<f32>>,
    /// Two gradient buffers of the largest activation, used in turn by backward.
    grads: [Vec<f32>; 2],
    /// The parameters the steps use, with their gradient buffers.
    params: Params,
    /// `first[k]`: the parameters of steps before `k` (those of step `k` on follow them).
    first: Vec<usize>,
    /// The gradient tensors handed to the parameters, reused while no one else holds them.
    grad_tensors: Vec<Option<Tensor>>,
    /// The loss's buffers ([`Self::train_step`]).
    loss: LossBuffers,
    /// Samples in the last forward.
    n: usize,
    /// What each step runs: `layers.0-1 conv2d + activation`.
    names: Vec<String>,
}

impl TrainPlan {
    /// Compile `model` for training steps on up to `batch` samples shaped `input`.
    pub fn compile(model: &Sequential, input: &[usize], batch: usize) -> Result<TrainPlan> {
        let (decided, shapes) = shape_steps(model, input, batch)?;
        let numel = |s: &[usize]| s.iter().product::<usize>();
        let mut params = Vec::new();
        let layers = model.layers();
        let names = decided
            .iter()
            .enumerate()
            .map(|(k, d)| {
                let end = decided.get(k + 1).map_or(layers.len(), |e| e.layer);
                let kinds: Vec<&str> = layers[d.layer..end].iter().map(|l| l.kind()).collect();
                format!("layers.{} {}", d.layer, kinds.join(" + "))
            })
            .collect();
        let mut first = Vec::new();
        let steps: Steps = decided
            .iter()
            .enumerate()
            .map(|(k, d)| {
                first.push(params.len());
                let step = build(d, &*model.layers()[d.layer], (batch, k == 0), &mut params);
                (step, d.inp, d.out)
            })
            .collect();
        let alloc = |per: usize| -> Result<Vec<f32>> {
            per.checked_mul(batch)
                .map(|len| vec![0.0; len])
                .ok_or_else(|| Error::Shape {
                    op: "plan",
                    msg: format!("a batch of {batch} activations of {per} values overflows"),
                })
        };
        let mut acts = vec![alloc(numel(input))?];
        for (_, _, out) in &steps {
            acts.push(alloc(*out)?);
        }
        let largest = steps
            .iter()
            .map(|(_, i, o)| (*i).max(*o))
            .fold(numel(input), usize::max);
        let output = shapes.last().cloned().unwrap_or_default();
        Ok(TrainPlan {
            input: input.to_vec(),
            loss: LossBuffers::new(alloc(numel(&output))?.len()),
            output,
            batch,
            steps,
            acts,
            grads: [alloc(largest)?, alloc(largest)?],
            grad_tensors: vec![None; params.len()],
            params,
            first,
            n: 0,
            names,
        })
    }

    /// Per-sample output shape.
    pub fn output_shape(&self) -> &[usize] {
        &self.output
    }

    /// Whether the batch `x` can run on this plan (its sample shape, at most `batch` samples).
    pub fn fits(&self, x: &Tensor) -> bool {
        let s = x.shape();
        !s.is_empty() && s[0] >= 1 && s[0] <= self.batch && s[1..] == self.input[..]
    }

    /// The forward pass in training mode on `x` (`n <= batch` samples): batch statistics
    /// (running statistics updated), dropout masks drawn from `rng` in layer order as the
    /// eager engine draws them. Returns the outputs `(n, *output)`.
    pub fn forward(&mut self, x: &[f32], rng: &mut Rng) -> Result<&[f32]> {
        self.forward_with(x, rng, &mut |_, _| {})
    }

    fn forward_with(
        &mut self,
        x: &[f32],
        rng: &mut Rng,
        timed: &mut dyn FnMut(usize, f64),
    ) -> Result<&[f32]> {
        let n = super::samples(x.len(), &self.input, self.batch)?;
        self.n = n;
        self.acts[0][..x.len()].copy_from_slice(x);
        for (k, (step, inp, out)) in self.steps.iter_mut().enumerate() {
            let started = std::time::Instant::now();
            let (before, after) = self.acts.split_at_mut(k + 1);
            let (x, y) = (&before[k][..n * *inp], &mut after[0][..n * *out]);
            forward(step, &self.params, n, x, y, rng);
            timed(k, started.elapsed().as_secs_f64());
        }
        Ok(&self.acts[self.steps.len()][..n * self.output.iter().product::<usize>()])
    }

    /// What each step runs, in order (`layers.0 conv2d + activation`).
    pub fn steps(&self) -> &[String] {
        &self.names
    }

    /// A forward and a backward on `x` with the output gradient `dy`, returning the seconds
    /// each step took in each direction (a profile by step, in step order).
    pub fn profile(&mut self, x: &[f32], dy: &[f32], rng: &mut Rng) -> Result<Vec<(f64, f64)>> {
        let mut times = vec![(0.0, 0.0); self.steps.len()];
        self.forward_with(x, rng, &mut |k, s| times[k].0 = s)?;
        self.backward_with(dy, &mut |k, s| times[k].1 = s)?;
        Ok(times)
    }

    /// One training step's forward and backward on the batch `x` `(n, *input)`: the outputs
    /// (detached), the loss `loss(outputs)` computed eagerly, and every parameter's gradient
    /// set, ready for an optimizer step.
    pub fn step(
        &mut self,
        x: &Tensor,
        rng: &mut Rng,
        loss: impl FnOnce(&Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let (out, l, dy) = self.forward_loss(x, rng, loss)?;
        self.backward(&dy.data())?;
        Ok((out, l))
    }

    /// One training step with a loss the plan computes itself: the forward on `x`
    /// `(n, *input)` flattened, the loss against the batch's targets and backward, every
    /// parameter's gradient set for an optimizer step. Returns the loss; the outputs are in
    /// [`Self::outputs`]. After the first step, a step allocates nothing.
    pub fn train_step(&mut self, x: &[f32], loss: PlanLoss, rng: &mut Rng) -> Result<f32> {
        let len = self.forward(x, rng)?.len();
        let out = &self.acts[self.steps.len()][..len];
        let l = self.loss.compute(loss, out, self.n)?;
        let dy = std::mem::take(&mut self.loss.dy);
        let done = self.backward(&dy[..len]);
        self.loss.dy = dy;
        done.map(|()| l)
    }

    /// The outputs of the last forward, `(n, *output)` flattened.
    pub fn outputs(&self) -> &[f32] {
        &self.acts[self.steps.len()][..self.n * self.output.iter().product::<usize>()]
    }

    /// The first half of [`Self::step`]: the forward on `x`, the outputs (detached), the loss
    /// and its gradient with respect to the outputs, for [`Self::backward`].
    pub fn forward_loss(
        &mut self,
        x: &Tensor,
        rng: &mut Rng,
        loss: impl FnOnce(&Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let out = self.forward(&x.data(), rng)?.to_vec();
        let mut shape = vec![self.n];
        shape.extend(&self.output);
        let out = Tensor::from_vec(out, &shape)?.requires_grad_();
        let l = loss(&out)?;
        l.backward()?;
        let dy = out.grad().ok_or_else(|| {
            Error::Autograd("the loss does not depend on the model's outputs".into())
        })?;
        Ok((out.detach(), l, dy))
    }

    /// [`Self::backward`], calling `ready(param, grad)` for each parameter as soon as its
    /// gradient is final (the last layer's first), while backward goes on: a data-parallel
    /// run starts summing them over the ranks then.
    pub fn backward_ready(
        &mut self,
        dy: &[f32],
        ready: &mut dyn FnMut(&Tensor, &[f32]),
    ) -> Result<()> {
        self.backward_inner(dy, &mut |_, _| {}, ready)
    }

    /// Backward from `dy`, the loss's gradient with respect to the last forward's outputs:
    /// sets each parameter's gradient (replacing what it held), as the eager engine's
    /// backward leaves them for an optimizer step.
    pub fn backward(&mut self, dy: &[f32]) -> Result<()> {
        self.backward_with(dy, &mut |_, _| {})
    }

    fn backward_with(&mut self, dy: &[f32], timed: &mut dyn FnMut(usize, f64)) -> Result<()> {
        self.backward_inner(dy, timed, &mut |_, _| {})
    }

    fn backward_inner(
        &mut self,
        dy: &[f32],
        timed: &mut dyn FnMut(usize, f64),
        ready: &mut dyn FnMut(&Tensor, &[f32]),
    ) -> Result<()> {
        let n = self.n;
        let out_len = n * self.output.iter().product::<usize>();
        if n == 0 || dy.len() != out_len {
            return Err(Error::Shape {
                op: "plan",
                msg: format!(
                    "backward needs {out_len} output gradients (after a forward), got {}",
                    dy.len()
                ),
            });
        }
        let [ga, gb] = &mut self.grads;
        ga[..dy.len()].copy_from_slice(dy);
        let (mut cur, mut other) = (ga, gb);
        // whether the step after this one applied this one's activation derivative
        let mut act_applied = false;
        for k in (0..self.steps.len()).rev() {
            let started = std::time::Instant::now();
            // A max pooling after an activation fused into the step before: the activation's
            // derivative (from its output) taken at the pooled values, which are its outputs
            // at the maxima, on the pooled gradient (a quarter of the size for 2x2), instead
            // of on the whole gradient where all but the maxima are zero: the same values.
            let fold = match (&self.steps[k].0, k.checked_sub(1)) {
                (TStep::MaxPool(_), Some(before)) => fused_act(&self.steps[before].0),
                _ => None,
            };
            let (step, inp, out) = &mut self.steps[k];
            let (x, y) = (&self.acts[k][..n * *inp], &self.acts[k + 1][..n * *out]);
            through_act(fold, y, &mut cur[..n * *out]);
            let dx = (k > 0).then(|| &mut other[..n * *inp]);
            let g = (&mut cur[..n * *out], dx);
            backward(step, &mut self.params, n, (x, y), g, act_applied);
            act_applied = fold.is_some();
            std::mem::swap(&mut cur, &mut other);
            timed(k, started.elapsed().as_secs_f64());
            let done = self.first.get(k + 1).copied().unwrap_or(self.params.len());
            for (t, g) in self.params[self.first[k]..done].iter().rev() {
                ready(t, g);
            }
        }
        for ((t, g), slot) in self.params.iter().zip(&mut self.grad_tensors) {
            t.zero_grad(); // its reference to last step's tensor
            match slot {
                Some(held) if held.unshared() => held.data_mut().copy_from_slice(g),
                _ => *slot = Some(Tensor::from_vec(g.clone(), t.shape())?),
            }
            t.set_grad(slot.clone().expect("set above"));
        }
        Ok(())
    }
}

fn forward(
    step: &mut TStep,
    params: &[(Tensor, Vec<f32>)],
    n: usize,
    x: &[f32],
    y: &mut [f32],
    rng: &mut Rng,
) {
    match step {
        TStep::Conv {
            fwd,
            weight,
            bias,
            act,
            ..
        }
        | TStep::Dense {
            fwd,
            weight,
            bias,
            act,
            ..
        } => {
            let wb = (&params[*weight].0, bias.map(|b| &params[b].0));
            super::run_weighted(fwd.as_mut(), wb, *act, n, x, y);
        }
        TStep::BatchNorm {
            bn,
            weight,
            bias,
            act,
            inner,
            mean,
            var,
            invstd,
            scale,
            shift,
            ..
        } => {
            let (c, inner) = (bn.channels, *inner);
            let m = batch_stats(x, (n, c, inner), mean, var);
            for (is, &v) in invstd.iter_mut().zip(var.iter()) {
                *is = inv_std(v, bn.eps);
            }
            update_running(
                &mut bn.running_mean.data_mut(),
                &mut bn.running_var.data_mut(),
                mean,
                var,
                bn.momentum,
                m,
            );
            let (w, b) = (params[*weight].0.data(), params[*bias].0.data());
            scale_shift(&w, &b, mean, invstd, scale, shift);
            affine_planes(x, y, (scale, shift), inner, *act);
        }
        TStep::ConvPool(cp) => cp.forward(params, n, x, y),
        TStep::Act(p) => {
            y.copy_from_slice(x);
            y.par_chunks_mut(1 << 14).for_each(|c| p.apply(c));
        }
        TStep::MaxPool(g) => pool::max_forward(&Pool2dGeom { n, ..*g }, x, y),
        TStep::AvgPool(g, cip) => pool::avg_forward(&Pool2dGeom { n, ..*g }, x, y, *cip),
        TStep::GlobalAvg { c, inner } => {
            let (count, inner) = (*inner as f32, (*inner).max(1));
            y[..n * *c]
                .par_iter_mut()
                .zip(x.par_chunks(inner))
                .for_each(|(o, row)| *o = sum_f64(row) as f32 / count);
        }
        TStep::Dropout { rate, group, mask } => {
            let mask = &mut mask[..x.len() / *group];
            if *rate == 0.0 {
                mask.fill(1.0);
            } else {
                fill_mask(mask, *rate, rng);
            }
            apply_mask(x, mask, *group, y);
        }
    }
}

/// `y = x * mask`, each mask entry shared by `group` consecutive elements; in parallel
/// chunks (elementwise: the same bits as one loop).
fn apply_mask(x: &[f32], mask: &[f32], group: usize, y: &mut [f32]) {
    let n = x.len().min(mask.len() * group);
    let (x, y) = (&x[..n], &mut y[..n]);
    let chunk = (1 << 14) / group.max(1) + 1;
    y.par_chunks_mut(chunk * group)
        .zip(x.par_chunks(chunk * group))
        .zip(mask.par_chunks(chunk))
        .for_each(|((y, x), m)| match group {
            1 => y
                .iter_mut()
                .zip(x)
                .zip(m)
                .for_each(|((a, b), k)| *a = b * k),
            g => y
                .chunks_mut(g)
                .zip(x.chunks(g))
                .zip(m)
                .for_each(|((a, b), k)| a.iter_mut().zip(b).for_each(|(a, b)| *a = b * k)),
        });
}

/// `dy *= f'(y)` for an activation fused into the step that produced `y`.
pub(super) fn through_act(act: Option<Pointwise>, y: &[f32], dy: &mut [f32]) {
    if let Some(p) = act {
        dy.par_chunks_mut(1 << 14)
            .zip(y.par_chunks(1 << 14))
            .for_each(|(d, y)| p.mul_derivative_from_output(y, d));
    }
}

/// The activation fused into a step (its derivative follows from its output).
fn fused_act(step: &TStep) -> Option<Pointwise> {
    match step {
        TStep::Conv { act, .. } | TStep::Dense { act, .. } | TStep::BatchNorm { act, .. } => *act,
        _ => None,
    }
}

/// Backward of `step`: `dx` from `dy` (through the step's fused activation, unless the next
/// step applied its derivative: `act_applied`), and the step's parameter gradients.
fn backward(
    step: &mut TStep,
    params: &mut [(Tensor, Vec<f32>)],
    n: usize,
    (x, y): (&[f32], &[f32]),
    (dy, dx): (&mut [f32], Option<&mut [f32]>),
    act_applied: bool,
) {
    let act_of = |act: &Option<Pointwise>| if act_applied { None } else { *act };
    match step {
        TStep::Conv {
            bwd,
            weight,
            bias,
            act,
            ..
        } => {
            through_act(act_of(act), y, dy);
            if let Some(dx) = dx {
                bwd.input(n, dy, &params[*weight].0.data(), dx);
            }
            let mut db = bias.map(|b| std::mem::take(&mut params[b].1));
            let dw = &mut params[*weight].1;
            bwd.weight(n, (x, dy), dw, db.as_deref_mut());
            if let (Some(b), Some(db)) = (bias, db) {
                params[*b].1 = db;
            }
        }
        TStep::Dense {
            dx_gemm,
            dw_gemm,
            weight,
            bias,
            act,
            in_f,
            units,
            ..
        } => {
            let (in_f, units) = (*in_f, *units);
            through_act(act_of(act), y, dy);
            if let Some(dx) = dx {
                let wd = params[*weight].0.data();
                dx_gemm.run(
                    (n, units, in_f),
                    MatRef::rm(dy, units),
                    MatRef::rm(&wd, in_f),
                    dx,
                );
            }
            let dw = &mut params[*weight].1;
            dw_gemm.run(
                (units, n, in_f),
                MatRef::rm_t(dy, units),
                MatRef::rm(x, in_f),
                dw,
            );
            if let Some(b) = bias {
                // each unit's sum over the rows in row order, in f64
                for (u, o) in params[*b].1.iter_mut().enumerate() {
                    *o = dy
                        .iter()
                        .skip(u)
                        .step_by(units)
                        .map(|&v| v as f64)
                        .sum::<f64>() as f32;
                }
            }
        }
        TStep::BatchNorm {
            bn,
            weight,
            bias,
            act,
            inner,
            mean,
            invstd,
            sums,
            ..
        } => {
            through_act(act_of(act), y, dy);
            let wt = params[*weight].0.clone();
            let w = wt.data();
            let saved = BnSaved {
                mean,
                invstd,
                weight: &w,
                batch: true,
            };
            let mut scratch;
            let dxs = match dx {
                Some(d) => d,
                None => {
                    scratch = vec![0f32; dy.len()];
                    &mut scratch[..]
                }
            };
            batch_norm_backward(dy, x, (n, bn.channels, *inner), &saved, sums, dxs);
            drop(w);
            for (ch, &(sg, sgx)) in sums.iter().enumerate() {
                params[*weight].1[ch] = sgx as f32;
                params[*bias].1[ch] = sg as f32;
            }
        }
        TStep::ConvPool(cp) => cp.backward(params, n, (x, y), dy, dx),
        TStep::Act(p) => {
            if let Some(dx) = dx {
                dx.par_chunks_mut(1 << 14)
                    .zip(dy.par_chunks(1 << 14))
                    .zip(x.par_chunks(1 << 14).zip(y.par_chunks(1 << 14)))
                    .for_each(|((d, g), (x, y))| {
                        for (((d, &g), &x), &y) in d.iter_mut().zip(g).zip(x).zip(y) {
                            *d = g * p.d(x, y);
                        }
                    });
            }
        }
        TStep::MaxPool(g) => {
            if let Some(dx) = dx {
                pool::max_backward_saved(&Pool2dGeom { n, ..*g }, x, y, dy, dx);
            }
        }
        TStep::AvgPool(g, cip) => {
            if let Some(dx) = dx {
                pool::avg_backward(&Pool2dGeom { n, ..*g }, dy, dx, *cip);
            }
        }
        TStep::GlobalAvg { inner, .. } => {
            if let Some(dx) = dx {
                let (count, inner) = (*inner as f32, (*inner).max(1));
                dx.par_chunks_mut(inner)
                    .zip(dy.par_iter())
                    .for_each(|(row, &g)| row.fill(g / count));
            }
        }
        TStep::Dropout { group, mask, .. } => {
            if let Some(dx) = dx {
                apply_mask(dy, mask, *group, dx);
            }
        }
    }
}
