//! Losses, each a scalar mean as in PyTorch's default reduction: cross-entropy from logits
//! (class weights, label smoothing), binary cross-entropy from logits (positive weight), MSE,
//! MAE (L1) and Huber.

use crate::autograd::output;
use crate::error::{Result, param_err, shape_err};
use crate::ops::activation::sigmoid_f;
use crate::tensor::Tensor;

/// Options of [`cross_entropy`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CrossEntropyOptions {
    /// One weight per class; the mean is weighted by the targets' weights (PyTorch's rule).
    pub class_weights: Option<Vec<f32>>,
    /// Mix the one-hot target with the uniform distribution: `(1 - s) * onehot + s / classes`.
    pub label_smoothing: f32,
}

/// Cross-entropy of `logits` `(n, classes)` against class indices `targets` (length n).
pub fn cross_entropy(
    logits: &Tensor,
    targets: &[usize],
    opts: &CrossEntropyOptions,
) -> Result<Tensor> {
    const OP: &str = "cross_entropy";
    if logits.rank() != 2 {
        return shape_err(
            OP,
            format!("logits must be (n, classes), got {:?}", logits.shape()),
        );
    }
    let (n, c) = (logits.shape()[0], logits.shape()[1]);
    check_cross_entropy(n, c, targets, opts)?;
    let (mut lp, mut q) = (vec![0f32; n * c], vec![0f32; n * c]);
    let (loss, denom) = cross_entropy_values(&logits.data(), targets, opts, &mut lp, &mut q);
    let shape = logits.shape().to_vec();
    Ok(output(OP, vec![loss], vec![], &[logits], move |g| {
        let gs = g.data()[0] / denom as f32;
        let mut dx = vec![0f32; n * c];
        cross_entropy_grad(&lp, &q, c, gs, &mut dx);
        Ok(vec![Some(Tensor::make(dx, shape, false, None))])
    }))
}

/// The checks of [`cross_entropy`] on `(n, c)` logits: as many targets as rows, each a
/// class index, smoothing in [0, 1], one weight per class.
pub(crate) fn check_cross_entropy(
    n: usize,
    c: usize,
    targets: &[usize],
    opts: &CrossEntropyOptions,
) -> Result<()> {
    const OP: &str = "cross_entropy";
    if targets.len() != n {
        return shape_err(
            OP,
            format!("{} targets for {n} rows of logits", targets.len()),
        );
    }
    if n == 0 || c == 0 {
        return shape_err(OP, format!("logits ({n}, {c}) are empty"));
    }
    if let Some((i, &t)) = targets.iter().enumerate().find(|&(_, &t)| t >= c) {
        return param_err(
            OP,
            "targets",
            format!("target {t} at row {i} is not a class index below {c}"),
        );
    }
    let s = opts.label_smoothing;
    if !(0.0..=1.0).contains(&s) {
        return param_err(OP, "label_smoothing", format!("{s} is not in [0, 1]"));
    }
    if let Some(w) = &opts.class_weights
        && w.len() != c
    {
        return param_err(
            OP,
            "class_weights",
            format!("{} weights for {c} classes", w.len()),
        );
    }
    Ok(())
}

/// The arithmetic of [`cross_entropy`] on checked inputs, shared with the compiled training
/// plan's loss (so both give the same bits): writes the log-probabilities `lp` and
/// `q = dLoss / dlp` (times the denominator) of the `(n, c)` logits `ld`; returns the loss
/// and the denominator (the targets' summed weights).
pub(crate) fn cross_entropy_values(
    ld: &[f32],
    targets: &[usize],
    opts: &CrossEntropyOptions,
    lp: &mut [f32],
    q: &mut [f32],
) -> (f32, f64) {
    let (n, s) = (targets.len(), opts.label_smoothing);
    let c = ld.len() / n;
    let w = |j: usize| opts.class_weights.as_ref().map_or(1.0, |w| w[j]);
    // log-softmax per row
    for i in 0..n {
        let row = &ld[i * c..(i + 1) * c];
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse = m as f64
            + row
                .iter()
                .map(|&v| ((v - m) as f64).exp())
                .sum::<f64>()
                .ln();
        for j in 0..c {
            lp[i * c + j] = (row[j] as f64 - lse) as f32;
        }
    }
    let denom: f64 = targets.iter().map(|&t| w(t) as f64).sum();
    q.fill(0.0);
    let mut loss = 0f64;
    for i in 0..n {
        let t = targets[i];
        loss -= (1.0 - s as f64) * w(t) as f64 * lp[i * c + t] as f64;
        q[i * c + t] -= (1.0 - s) * w(t);
        for j in 0..c {
            loss -= s as f64 / c as f64 * w(j) as f64 * lp[i * c + j] as f64;
            q[i * c + j] -= s / c as f32 * w(j);
        }
    }
    ((loss / denom) as f32, denom)
}

/// The logits' gradient of [`cross_entropy`] from what [`cross_entropy_values`] wrote, `gs`
/// being the loss's gradient over the denominator.
pub(crate) fn cross_entropy_grad(lp: &[f32], q: &[f32], c: usize, gs: f32, dx: &mut [f32]) {
    for ((dx, lp), q) in dx
        .chunks_exact_mut(c)
        .zip(lp.chunks_exact(c))
        .zip(q.chunks_exact(c))
    {
        let qs: f32 = q.iter().sum();
        for j in 0..c {
            // through log_softmax: dz = q - softmax * sum(q)
            dx[j] = gs * (q[j] - lp[j].exp() * qs);
        }
    }
}

fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return shape_err(
            op,
            format!(
                "input {:?} and target {:?} must have the same shape",
                a.shape(),
                b.shape()
            ),
        );
    }
    if a.numel() == 0 {
        return shape_err(op, "inputs are empty");
    }
    Ok(())
}

/// The elementwise losses, each a mean over elements of `value(x, t)` (the compiled training
/// plan takes them by this name; the functions below are the eager ops).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PointLoss {
    Mse,
    Mae,
    Huber(f32),
    /// Binary cross-entropy from logits with the positive weight.
    Bce(f32),
}

impl PointLoss {
    fn name(self) -> &'static str {
        match self {
            PointLoss::Mse => "mse",
            PointLoss::Mae => "mae",
            PointLoss::Huber(_) => "huber",
            PointLoss::Bce(_) => "binary_cross_entropy_with_logits",
        }
    }

    /// The loss of one element.
    pub(crate) fn value(self, a: f32, b: f32) -> f64 {
        match self {
            PointLoss::Mse => ((a - b) as f64).powi(2),
            PointLoss::Mae => (a as f64 - b as f64).abs(),
            PointLoss::Huber(delta) => {
                let d = (a as f64 - b as f64).abs();
                if d < delta as f64 {
                    0.5 * d * d
                } else {
                    delta as f64 * (d - 0.5 * delta as f64)
                }
            }
            // loss = (1 - t) x + (1 + (p - 1) t) * softplus(-x)
            PointLoss::Bce(p) => {
                (1.0 - b as f64) * a as f64 + (1.0 + (p as f64 - 1.0) * b as f64) * softplus_neg(a)
            }
        }
    }

    /// The derivatives of [`Self::value`] with respect to the input and the target.
    pub(crate) fn grad(self, a: f32, b: f32) -> (f32, f32) {
        match self {
            PointLoss::Mse => (2.0 * (a - b), -2.0 * (a - b)),
            PointLoss::Mae => {
                // the derivative at 0 is 0
                let d = a - b;
                let sign = if d > 0.0 {
                    1.0
                } else if d < 0.0 {
                    -1.0
                } else {
                    0.0
                };
                (sign, -sign)
            }
            PointLoss::Huber(delta) => {
                let g = (a - b).clamp(-delta, delta);
                (g, -g)
            }
            PointLoss::Bce(p) => {
                let l = 1.0 + (p - 1.0) * b;
                let dx = (1.0 - b) - l * sigmoid_f(-a);
                // d/dt = -x + (p - 1) softplus(-x)
                let dt = -a + (p - 1.0) * softplus_neg(a) as f32;
                (dx, dt)
            }
        }
    }

    /// The mean loss of `x` against `t` (same length, not empty).
    pub(crate) fn mean(self, x: &[f32], t: &[f32]) -> f32 {
        (x.iter()
            .zip(t)
            .map(|(&a, &b)| self.value(a, b))
            .sum::<f64>()
            / x.len() as f64) as f32
    }
}

/// `softplus(-x)`, computed stably.
fn softplus_neg(x: f32) -> f64 {
    ((-x.abs()) as f64).exp().ln_1p() + (-x as f64).max(0.0)
}

/// The mean of `kind`'s loss over the elements of `x` against `t`, with its gradient.
fn pointwise_loss(kind: PointLoss, x: &Tensor, t: &Tensor) -> Result<Tensor> {
    let op = kind.name();
    same_shape(op, x, t)?;
    let n = x.numel();
    let loss = kind.mean(&x.data(), &t.data());
    let (xc, tc) = (x.clone(), t.clone());
    Ok(output(op, vec![loss], vec![], &[x, t], move |g| {
        let gs = g.data()[0] / n as f32;
        let (xd, td) = (xc.data(), tc.data());
        let (mut dx, mut dt) = (vec![0f32; n], vec![0f32; n]);
        for i in 0..n {
            let (a, b) = kind.grad(xd[i], td[i]);
            dx[i] = gs * a;
            dt[i] = gs * b;
        }
        Ok(vec![
            Some(Tensor::make(dx, xc.shape().to_vec(), false, None)),
            Some(Tensor::make(dt, tc.shape().to_vec(), false, None)),
        ])
    }))
}

/// Binary cross-entropy from logits: mean of `-(p t log s(x) + (1 - t) log(1 - s(x)))`,
/// computed stably; `pos_weight` (p) weights the positive term.
pub fn binary_cross_entropy_with_logits(
    logits: &Tensor,
    targets: &Tensor,
    pos_weight: Option<f32>,
) -> Result<Tensor> {
    pointwise_loss(PointLoss::Bce(pos_weight.unwrap_or(1.0)), logits, targets)
}

/// Mean squared error.
pub fn mse(x: &Tensor, target: &Tensor) -> Result<Tensor> {
    pointwise_loss(PointLoss::Mse, x, target)
}

/// Mean absolute error (L1); the derivative at 0 is 0.
pub fn mae(x: &Tensor, target: &Tensor) -> Result<Tensor> {
    pointwise_loss(PointLoss::Mae, x, target)
}

/// Huber loss: `0.5 d^2` where `|d| < delta`, else `delta (|d| - 0.5 delta)`.
pub fn huber(x: &Tensor, target: &Tensor, delta: f32) -> Result<Tensor> {
    if delta.is_nan() || delta <= 0.0 {
        return param_err("huber", "delta", format!("{delta} must be positive"));
    }
    pointwise_loss(PointLoss::Huber(delta), x, target)
}
