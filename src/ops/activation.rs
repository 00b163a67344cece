//! Activations, each written beside its derivative: relu, leaky_relu, elu, gelu (exact, erf),
//! sigmoid, tanh, softmax and log_softmax along an axis; plus exp, log, sqrt, neg, abs.

use rayon::prelude::*;

use crate::autograd::{make_node, output};
use crate::error::{Result, param_err, shape_err};
use crate::kernels::avx2_twin;
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

/// An elementwise activation as plain functions: its value `f(x)` and its derivative
/// `d(x, y)` with `y = f(x)`, each written beside the other. The ops below and the compiled
/// plan's fused epilogues (`plan`) both use them, so the formulas exist once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pointwise {
    /// max(x, 0); the derivative at 0 is 0, as in PyTorch.
    Relu,
    /// x for x > 0, else slope * x.
    LeakyRelu(f32),
    /// x for x > 0, else alpha * (exp(x) - 1).
    Elu(f32),
    /// The exact GELU, x * Phi(x) with the normal CDF through erf (PyTorch's default).
    Gelu,
    /// 1 / (1 + exp(-x)), computed without overflow.
    Sigmoid,
    Tanh,
}

const INV_SQRT2: f64 = std::f64::consts::FRAC_1_SQRT_2;
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

impl Pointwise {
    /// The name of the op.
    pub fn name(self) -> &'static str {
        match self {
            Pointwise::Relu => "relu",
            Pointwise::LeakyRelu(_) => "leaky_relu",
            Pointwise::Elu(_) => "elu",
            Pointwise::Gelu => "gelu",
            Pointwise::Sigmoid => "sigmoid",
            Pointwise::Tanh => "tanh",
        }
    }

    /// `f(x)`.
    #[inline]
    pub fn f(self, v: f32) -> f32 {
        match self {
            Pointwise::Relu => {
                if v > 0.0 {
                    v
                } else {
                    0.0
                }
            }
            Pointwise::LeakyRelu(slope) => {
                if v > 0.0 {
                    v
                } else {
                    slope * v
                }
            }
            Pointwise::Elu(alpha) => {
                if v > 0.0 {
                    v
                } else {
                    alpha * v.exp_m1()
                }
            }
            Pointwise::Gelu => {
                let v = v as f64;
                (0.5 * v * (1.0 + libm::erf(v * INV_SQRT2))) as f32
            }
            Pointwise::Sigmoid => sigmoid_f(v),
            Pointwise::Tanh => v.tanh(),
        }
    }

    /// `f'(x)`, given `x` and `y = f(x)`.
    #[inline]
    pub fn d(self, v: f32, y: f32) -> f32 {
        match self {
            Pointwise::Relu => {
                if v > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Pointwise::LeakyRelu(slope) => {
                if v > 0.0 {
                    1.0
                } else {
                    slope
                }
            }
            Pointwise::Elu(alpha) => {
                if v > 0.0 {
                    1.0
                } else {
                    y + alpha
                }
            }
            Pointwise::Gelu => {
                let v = v as f64;
                let cdf = 0.5 * (1.0 + libm::erf(v * INV_SQRT2));
                (cdf + v * INV_SQRT_2PI * (-0.5 * v * v).exp()) as f32
            }
            Pointwise::Sigmoid => y * (1.0 - y),
            Pointwise::Tanh => 1.0 - y * y,
        }
    }

    /// `v = f(v)` over a slice, the match taken once outside the loop (so it vectorises, eight
    /// wide where the CPU has AVX2).
    pub fn apply(self, v: &mut [f32]) {
        avx2_twin! { fn run(p: Pointwise, v: &mut [f32]) = apply_plain; }
        run(self, v)
    }

    /// `g *= f'(x)` where `f'` follows from the output `y` alone (see
    /// [`Pointwise::derivative_from_output`]): the backward of an activation fused into the
    /// step that produced `y`. One loop per activation, so each vectorises.
    pub fn mul_derivative_from_output(self, y: &[f32], g: &mut [f32]) {
        avx2_twin! { fn run(p: Pointwise, y: &[f32], g: &mut [f32]) = mul_derivative_plain; }
        run(self, y, g)
    }

    /// Whether `d` can be computed from `y` alone (`d(y, y)` gives the same value), so that a
    /// fused epilogue need not keep `x`: `x > 0` exactly when `y > 0` for these.
    pub fn derivative_from_output(self) -> bool {
        match self {
            Pointwise::Relu | Pointwise::Sigmoid | Pointwise::Tanh => true,
            Pointwise::LeakyRelu(slope) => slope >= 0.0,
            Pointwise::Elu(alpha) => alpha >= 0.0,
            Pointwise::Gelu => false,
        }
    }
}

/// Apply a pointwise activation as an op.
pub fn pointwise(x: &Tensor, p: Pointwise) -> Result<Tensor> {
    unary(p.name(), x, move |v| p.f(v), move |v, y| p.d(v, y))
}

/// max(x, 0). The derivative at 0 is 0, as in PyTorch.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    pointwise(x, Pointwise::Relu)
}

/// x for x > 0, else slope * x.
pub fn leaky_relu(x: &Tensor, slope: f32) -> Result<Tensor> {
    pointwise(x, Pointwise::LeakyRelu(slope))
}

/// x for x > 0, else alpha * (exp(x) - 1).
pub fn elu(x: &Tensor, alpha: f32) -> Result<Tensor> {
    pointwise(x, Pointwise::Elu(alpha))
}

/// The exact GELU, x * Phi(x) with the normal CDF through erf (PyTorch's default).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    pointwise(x, Pointwise::Gelu)
}

/// 1 / (1 + exp(-x)), computed without overflow.
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    pointwise(x, Pointwise::Sigmoid)
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
    pointwise(x, Pointwise::Tanh)
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

/// Softmax (or log-softmax) of `x` along the middle axis of `(outer, len, inner)` into `y`,
/// with the maximum subtracted and the sum taken in f64.
pub(crate) fn softmax_forward(
    xd: &[f32],
    y: &mut [f32],
    (outer, len, inner): (usize, usize, usize),
    log: bool,
) {
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
    softmax_forward(&xd, &mut y, (outer, len, inner), log);
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

#[inline(always)]
fn apply_plain(p: Pointwise, v: &mut [f32]) {
    #[inline(always)]
    fn each(v: &mut [f32], f: impl Fn(f32) -> f32) {
        v.iter_mut().for_each(|e| *e = f(*e));
    }
    match p {
        // the same value as `f` (NaN and -0 give +0), written so that every element is
        // stored: the compiler turns the plain select into masked stores of the zeros only,
        // which are slow on some CPUs
        Pointwise::Relu => each(v, |e| e.max(0.0) + 0.0),
        Pointwise::LeakyRelu(s) => each(v, |e| Pointwise::LeakyRelu(s).f(e)),
        Pointwise::Elu(a) => each(v, |e| Pointwise::Elu(a).f(e)),
        Pointwise::Gelu => each(v, |e| Pointwise::Gelu.f(e)),
        Pointwise::Sigmoid => each(v, |e| Pointwise::Sigmoid.f(e)),
        Pointwise::Tanh => each(v, |e| Pointwise::Tanh.f(e)),
    }
}

#[inline(always)]
fn mul_derivative_plain(p: Pointwise, y: &[f32], g: &mut [f32]) {
    #[inline(always)]
    fn each(y: &[f32], g: &mut [f32], d: impl Fn(f32) -> f32) {
        g.iter_mut().zip(y).for_each(|(g, &y)| *g *= d(y));
    }
    match p {
        Pointwise::Relu => each(y, g, |y| Pointwise::Relu.d(y, y)),
        Pointwise::LeakyRelu(s) => each(y, g, |y| Pointwise::LeakyRelu(s).d(y, y)),
        Pointwise::Elu(a) => each(y, g, |y| Pointwise::Elu(a).d(y, y)),
        Pointwise::Gelu => each(y, g, |y| Pointwise::Gelu.d(y, y)),
        Pointwise::Sigmoid => each(y, g, |y| Pointwise::Sigmoid.d(y, y)),
        Pointwise::Tanh => each(y, g, |y| Pointwise::Tanh.d(y, y)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Values of every sign and scale, with zeros of both signs, NaN and infinities.
    fn values(len: usize) -> Vec<f32> {
        let mut rng = Rng::new(11);
        let specials = [0.0, -0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e-40];
        (0..len)
            .map(|i| match specials.get(i % 9) {
                Some(&v) => v,
                None => rng.normal() * 4.0,
            })
            .collect()
    }

    #[test]
    fn the_avx2_copies_give_the_plain_loops_bits() {
        let all = [
            Pointwise::Relu,
            Pointwise::LeakyRelu(0.1),
            Pointwise::Elu(1.0),
            Pointwise::Gelu,
            Pointwise::Sigmoid,
            Pointwise::Tanh,
        ];
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for p in all {
            let x = values(203);
            let (mut fast, mut plain) = (x.clone(), x.clone());
            p.apply(&mut fast);
            apply_plain(p, &mut plain);
            assert_eq!(bits(&fast), bits(&plain), "{}", p.name());
            // and `apply` is `f` element by element
            let each: Vec<f32> = x.iter().map(|&v| p.f(v)).collect();
            assert_eq!(bits(&fast), bits(&each), "{}", p.name());
            let g = values(203);
            let (mut fast, mut plain) = (g.clone(), g.clone());
            p.mul_derivative_from_output(&each, &mut fast);
            mul_derivative_plain(p, &each, &mut plain);
            assert_eq!(bits(&fast), bits(&plain), "{}", p.name());
        }
    }
}
