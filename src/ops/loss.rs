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
    if targets.len() != n {
        return shape_err(
            OP,
            format!("{} targets for {n} rows of logits", targets.len()),
        );
    }
    if n == 0 || c == 0 {
        return shape_err(OP, format!("logits {:?} are empty", logits.shape()));
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
    let w: Vec<f32> = match &opts.class_weights {
        Some(w) if w.len() != c => {
            return param_err(
                OP,
                "class_weights",
                format!("{} weights for {c} classes", w.len()),
            );
        }
        Some(w) => w.clone(),
        None => vec![1.0; c],
    };
    let ld = logits.data();
    // log-softmax per row
    let mut lp = vec![0f32; n * c];
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
    drop(ld);
    let denom: f64 = targets.iter().map(|&t| w[t] as f64).sum();
    // q[i, j] = dLoss / dlogp[i, j]
    let mut q = vec![0f32; n * c];
    let mut loss = 0f64;
    for i in 0..n {
        let t = targets[i];
        loss -= (1.0 - s as f64) * w[t] as f64 * lp[i * c + t] as f64;
        q[i * c + t] -= (1.0 - s) * w[t];
        for j in 0..c {
            loss -= s as f64 / c as f64 * w[j] as f64 * lp[i * c + j] as f64;
            q[i * c + j] -= s / c as f32 * w[j];
        }
    }
    let loss = (loss / denom) as f32;
    let shape = logits.shape().to_vec();
    Ok(output(OP, vec![loss], vec![], &[logits], move |g| {
        let gs = g.data()[0] / denom as f32;
        let mut dx = vec![0f32; n * c];
        for i in 0..n {
            let qs: f32 = q[i * c..(i + 1) * c].iter().sum();
            for j in 0..c {
                // through log_softmax: dz = q - softmax * sum(q)
                dx[i * c + j] = gs * (q[i * c + j] - lp[i * c + j].exp() * qs);
            }
        }
        Ok(vec![Some(Tensor::make(dx, shape, false, None))])
    }))
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

/// A mean over elements of `f(x, t)`, with `df(x, t) = (d/dx, d/dt)`.
fn pointwise_loss(
    op: &'static str,
    x: &Tensor,
    t: &Tensor,
    f: impl Fn(f32, f32) -> f64,
    df: impl Fn(f32, f32) -> (f32, f32) + Send + 'static,
) -> Result<Tensor> {
    same_shape(op, x, t)?;
    let n = x.numel();
    let loss = {
        let (xd, td) = (x.data(), t.data());
        (xd.iter()
            .zip(td.iter())
            .map(|(&a, &b)| f(a, b))
            .sum::<f64>()
            / n as f64) as f32
    };
    let (xc, tc) = (x.clone(), t.clone());
    Ok(output(op, vec![loss], vec![], &[x, t], move |g| {
        let gs = g.data()[0] / n as f32;
        let (xd, td) = (xc.data(), tc.data());
        let (mut dx, mut dt) = (vec![0f32; n], vec![0f32; n]);
        for i in 0..n {
            let (a, b) = df(xd[i], td[i]);
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
    let p = pos_weight.unwrap_or(1.0);
    // loss = (1 - t) x + (1 + (p - 1) t) * softplus(-x)
    let softplus_neg = |x: f32| ((-x.abs()) as f64).exp().ln_1p() + (-x as f64).max(0.0);
    pointwise_loss(
        "binary_cross_entropy_with_logits",
        logits,
        targets,
        move |x, t| {
            (1.0 - t as f64) * x as f64 + (1.0 + (p as f64 - 1.0) * t as f64) * softplus_neg(x)
        },
        move |x, t| {
            let l = 1.0 + (p - 1.0) * t;
            let dx = (1.0 - t) - l * sigmoid_f(-x);
            // d/dt = -x + (p - 1) softplus(-x)
            let dt = -x + (p - 1.0) * softplus_neg(x) as f32;
            (dx, dt)
        },
    )
}

/// Mean squared error.
pub fn mse(x: &Tensor, target: &Tensor) -> Result<Tensor> {
    pointwise_loss(
        "mse",
        x,
        target,
        |a, b| ((a - b) as f64).powi(2),
        |a, b| (2.0 * (a - b), -2.0 * (a - b)),
    )
}

/// Mean absolute error (L1); the derivative at 0 is 0.
pub fn mae(x: &Tensor, target: &Tensor) -> Result<Tensor> {
    let sign = |d: f32| {
        if d > 0.0 {
            1.0
        } else if d < 0.0 {
            -1.0
        } else {
            0.0
        }
    };
    pointwise_loss(
        "mae",
        x,
        target,
        |a, b| (a as f64 - b as f64).abs(),
        move |a, b| (sign(a - b), -sign(a - b)),
    )
}

/// Huber loss: `0.5 d^2` where `|d| < delta`, else `delta (|d| - 0.5 delta)`.
pub fn huber(x: &Tensor, target: &Tensor, delta: f32) -> Result<Tensor> {
    if delta.is_nan() || delta <= 0.0 {
        return param_err("huber", "delta", format!("{delta} must be positive"));
    }
    pointwise_loss(
        "huber",
        x,
        target,
        move |a, b| {
            let d = (a as f64 - b as f64).abs();
            if d < delta as f64 {
                0.5 * d * d
            } else {
                delta as f64 * (d - 0.5 * delta as f64)
            }
        },
        move |a, b| {
            let g = (a - b).clamp(-delta, delta);
            (g, -g)
        },
    )
}
