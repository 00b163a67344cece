//! Activations, each written beside its derivative: relu, leaky_relu, elu, gelu (exact, erf),
//! sigmoid, tanh, softmax and log_softmax along an axis; plus exp, log, sqrt, neg, abs.

use rayon::prelude::*;

use crate::autograd::{make_node, output};
use crate::error::{Result, param_err, shape_err};
use crate::ops::elementwise::{PAR_MIN, map_data};
use crate::tensor::Tensor;

/// An elementwise op with derivative `d(x, y)`, where `y = f(x)`. The output buffer is shared
/// with the backward closure, not copied.
fn unary(
    name: &'static str,
    x: &Tensor,
    f: impl Fn(f32) -> f32 + Sync,
    d: impl Fn(f32, f32) -> f32 + Sync + Send + 'static,
) -> Result<Tensor> {
    let shape = x.shape().to_vec();
    let y = Tensor::make(map_data(&x.data(), f), shape.clone(), false, None);
    let (xs, ys) = (x.clone(), y.clone());
    let node = make_node(name, &[x], move |g| {
        let (xd, yd, gd) = (xs.data(), ys.data(), g.data());
        let mut dx = vec![0f32; gd.len()];
        dx.par_chunks_mut(PAR_MIN)
            .zip(gd.par_chunks(PAR_MIN))
            .zip(xd.par_chunks(PAR_MIN).zip(yd.par_chunks(PAR_MIN)))
            .for_each(|((out, g), (x, y))| {
                for (((v, &gv), &xv), &yv) in out.iter_mut().zip(g).zip(x).zip(y) {
                    *v = gv * d(xv, yv);
                }
            });
        Ok(vec![Some(Tensor::make(
            dx,
            xs.shape().to_vec(),
            false,
            None,
        ))])
    });
    Ok(y.with_shape(shape, node))
}

/// max(x, 0). The derivative at 0 is 0, as in PyTorch.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    unary(
        "relu",
        x,
        |v| if v > 0.0 { v } else { 0.0 },
        |v, _| if v > 0.0 { 1.0 } else { 0.0 },
    )
}

/// x for x > 0, else slope * x.
pub fn leaky_relu(x: &Tensor, slope: f32) -> Result<Tensor> {
    unary(
        "leaky_relu",
        x,
        move |v| if v > 0.0 { v } else { slope * v },
        move |v, _| if v > 0.0 { 1.0 } else { slope },
    )
}

/// x for x > 0, else alpha * (exp(x) - 1).
pub fn elu(x: &Tensor, alpha: f32) -> Result<Tensor> {
    unary(
        "elu",
        x,
        move |v| if v > 0.0 { v } else { alpha * v.exp_m1() },
        move |v, y| if v > 0.0 { 1.0 } else { y + alpha },
    )
}

/// The exact GELU, x * Phi(x) with the normal CDF through erf (PyTorch's default).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    const INV_SQRT2: f64 = std::f64::consts::FRAC_1_SQRT_2;
    const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
    unary(
        "gelu",
        x,
        |v| {
            let v = v as f64;
            (0.5 * v * (1.0 + libm::erf(v * INV_SQRT2))) as f32
        },
        |v, _| {
            let v = v as f64;
            let cdf = 0.5 * (1.0 + libm::erf(v * INV_SQRT2));
            (cdf + v * INV_SQRT_2PI * (-0.5 * v * v).exp()) as f32
        },
    )
}

/// 1 / (1 + exp(-x)), computed without overflow.
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    unary("sigmoid", x, sigmoid_f, |_, y| y * (1.0 - y))
}

pub(crate) fn sigmoid_f(v: f32) -> f32 {
    if v >= 0.0 {
        1.0 / (1.0 + (-v).exp())
    } else {
        let e = v.exp();
        e / (1.0 + e)
    }
}

/// Hyperbolic tangent.
pub fn tanh(x: &Tensor) -> Result<Tensor> {
    unary("tanh", x, f32::tanh, |_, y| 1.0 - y * y)
}

/// e^x.
pub fn exp(x: &Tensor) -> Result<Tensor> {
    unary("exp", x, f32::exp, |_, y| y)
}

/// Natural logarithm.
pub fn log(x: &Tensor) -> Result<Tensor> {
    unary("log", x, f32::ln, |v, _| 1.0 / v)
}

/// Square root.
pub fn sqrt(x: &Tensor) -> Result<Tensor> {
    unary("sqrt", x, f32::sqrt, |_, y| 0.5 / y)
}

/// -x.
pub fn neg(x: &Tensor) -> Result<Tensor> {
    unary("neg", x, |v| -v, |_, _| -1.0)
}

/// |x|; the derivative at 0 is 0, as in PyTorch.
pub fn abs(x: &Tensor) -> Result<Tensor> {
    unary("abs", x, f32::abs, |v, _| {
        if v > 0.0 {
            1.0
        } else if v < 0.0 {
            -1.0
        } else {
            0.0
        }
    })
}

/// Split `shape` at `axis` into (outer, len, inner).
pub(crate) fn axis_split(
    op: &'static str,
    shape: &[usize],
    axis: isize,
) -> Result<(usize, usize, usize, usize)> {
    let rank = shape.len() as isize;
    let a = if axis < 0 { axis + rank } else { axis };
    if rank == 0 || a < 0 || a >= rank {
        return param_err(
            op,
            "axis",
            format!("axis {axis} is out of range for shape {shape:?}"),
        );
    }
    let a = a as usize;
    Ok((
        a,
        shape[..a].iter().product(),
        shape[a],
        shape[a + 1..].iter().product(),
    ))
}

fn softmax_impl(x: &Tensor, axis: isize, log: bool) -> Result<Tensor> {
    let name = if log { "log_softmax" } else { "softmax" };
    let (_, outer, len, inner) = axis_split(name, x.shape(), axis)?;
    if len == 0 {
        return shape_err(
            name,
            format!("axis {axis} of shape {:?} is empty", x.shape()),
        );
    }
    let xd = x.data();
    let mut y = vec![0f32; xd.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * len + k) * inner + i;
            let m = (0..len)
                .map(|k| xd[at(k)])
                .fold(f32::NEG_INFINITY, f32::max);
            let s: f64 = (0..len).map(|k| ((xd[at(k)] - m) as f64).exp()).sum();
            let ls = s.ln() as f32;
            for k in 0..len {
                y[at(k)] = if log {
                    xd[at(k)] - m - ls
                } else {
                    ((xd[at(k)] - m) as f64).exp() as f32 / s as f32
                };
            }
        }
    }
    drop(xd);
    let ys = y.clone();
    let shape = x.shape().to_vec();
    Ok(output(name, y, shape.clone(), &[x], move |g| {
        let gd = g.data();
        let mut dx = vec![0f32; gd.len()];
        for o in 0..outer {
            for i in 0..inner {
                let at = |k: usize| (o * len + k) * inner + i;
                if log {
                    // d log_softmax: g - softmax * sum(g)
                    let s: f32 = (0..len).map(|k| gd[at(k)]).sum();
                    for k in 0..len {
                        dx[at(k)] = gd[at(k)] - ys[at(k)].exp() * s;
                    }
                } else {
                    // d softmax: y * (g - sum(g * y))
                    let s: f32 = (0..len).map(|k| gd[at(k)] * ys[at(k)]).sum();
                    for k in 0..len {
                        dx[at(k)] = ys[at(k)] * (gd[at(k)] - s);
                    }
                }
            }
        }
        Ok(vec![Some(Tensor::make(dx, shape, false, None))])
    }))
}

/// Softmax along `axis` (negative counts from the end).
pub fn softmax(x: &Tensor, axis: isize) -> Result<Tensor> {
    softmax_impl(x, axis, false)
}

/// Log-softmax along `axis`, computed stably.
pub fn log_softmax(x: &Tensor, axis: isize) -> Result<Tensor> {
    softmax_impl(x, axis, true)
}
