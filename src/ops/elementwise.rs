//! Elementwise arithmetic with NumPy/PyTorch broadcasting (add, sub, mul, div), scalar
//! arithmetic, and the broadcasting helpers other ops reuse (`broadcast_to`, `sum_to_shape`).

use rayon::prelude::*;

use crate::autograd::output;
use crate::error::{Result, shape_err};
pub(crate) use crate::kernels::sum_f64;
use crate::tensor::{Tensor, numel_of};

/// Elements above which an elementwise loop is split across threads.
pub(crate) const PAR_MIN: usize = 1 << 15;

/// The broadcast shape of `a` and `b` (aligned at their last dimensions).
pub fn broadcast_shape(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i < rank - a.len() {
            1
        } else {
            a[i - (rank - a.len())]
        };
        let db = if i < rank - b.len() {
            1
        } else {
            b[i - (rank - b.len())]
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return shape_err(
                    op,
                    format!(
                        "shapes {a:?} and {b:?} do not broadcast (dimension {i} of the aligned shapes: {da} vs {db})"
                    ),
                );
            }
        };
    }
    Ok(out)
}

/// Strides of `shape` read as if broadcast to `out` (0 along broadcast dimensions).
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; out.len()];
    let off = out.len() - shape.len();
    let mut s = 1;
    for i in (0..shape.len()).rev() {
        strides[off + i] = if shape[i] == 1 { 0 } else { s };
        s *= shape[i];
    }
    strides
}

/// Calls `f(out_row_start, offsets, inner_strides)` for each row (last dimension) of `out`.
fn for_each_row(
    out: &[usize],
    strides: &[Vec<usize>],
    mut f: impl FnMut(usize, &[usize], &[usize]),
) {
    let rank = out.len();
    if rank == 0 {
        let offs = vec![0; strides.len()];
        let inner = vec![0; strides.len()];
        f(0, &offs, &inner);
        return;
    }
    let last = out[rank - 1];
    let rows = if last == 0 { 0 } else { numel_of(out) / last };
    let inner: Vec<usize> = strides.iter().map(|s| s[rank - 1]).collect();
    let mut idx = vec![0usize; rank - 1];
    let mut offs = vec![0usize; strides.len()];
    for row in 0..rows {
        for (k, s) in strides.iter().enumerate() {
            offs[k] = idx.iter().zip(s).map(|(i, st)| i * st).sum();
        }
        f(row * last, &offs, &inner);
        for d in (0..rank - 1).rev() {
            idx[d] += 1;
            if idx[d] < out[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// `data` (of `shape`) broadcast to `out`.
pub(crate) fn broadcast_data(data: &[f32], shape: &[usize], out: &[usize]) -> Vec<f32> {
    if shape == out {
        return data.to_vec();
    }
    if data.len() == 1 {
        return vec![data[0]; numel_of(out)];
    }
    let st = broadcast_strides(shape, out);
    let last = out.last().copied().unwrap_or(1);
    let mut v = vec![0f32; numel_of(out)];
    for_each_row(out, &[st], |o, offs, inner| {
        for j in 0..last {
            v[o + j] = data[offs[0] + j * inner[0]];
        }
    });
    v
}

/// Sum `data` (of `shape`) over the dimensions along which `target` was broadcast to it.
pub(crate) fn sum_to_data(data: &[f32], shape: &[usize], target: &[usize]) -> Vec<f32> {
    if shape == target {
        return data.to_vec();
    }
    if numel_of(target) == 1 {
        // Fixed chunks summed in order: the same bits whatever the thread count.
        let partial: Vec<f64> = data.par_chunks(PAR_MIN).map(sum_f64).collect();
        return vec![partial.iter().sum::<f64>() as f32];
    }
    let st = broadcast_strides(target, shape);
    let last = shape.last().copied().unwrap_or(1);
    let mut acc = vec![0f64; numel_of(target)];
    for_each_row(shape, &[st], |o, offs, inner| {
        for j in 0..last {
            acc[offs[0] + j * inner[0]] += data[o + j] as f64;
        }
    });
    acc.into_iter().map(|v| v as f32).collect()
}

/// Differentiable broadcast of `x` to `shape`.
pub fn broadcast_to(x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let out = broadcast_shape("broadcast_to", x.shape(), shape)?;
    if out != shape {
        return shape_err(
            "broadcast_to",
            format!("{:?} cannot be broadcast to {:?}", x.shape(), shape),
        );
    }
    let data = broadcast_data(&x.data(), x.shape(), shape);
    let xs = x.shape().to_vec();
    let os = out.clone();
    Ok(output("broadcast_to", data, out, &[x], move |g| {
        Ok(vec![Some(Tensor::make(
            sum_to_data(&g.data(), &os, &xs),
            xs,
            false,
            None,
        ))])
    }))
}

/// Differentiable sum of `x` down to `shape` (the adjoint of `broadcast_to`).
pub fn sum_to_shape(x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let b = broadcast_shape("sum_to_shape", shape, x.shape())?;
    if b != x.shape() {
        return shape_err(
            "sum_to_shape",
            format!("{:?} does not broadcast to {:?}", shape, x.shape()),
        );
    }
    let data = sum_to_data(&x.data(), x.shape(), shape);
    let xs = x.shape().to_vec();
    let ts = shape.to_vec();
    Ok(output("sum_to_shape", data, ts.clone(), &[x], move |g| {
        Ok(vec![Some(Tensor::make(
            broadcast_data(&g.data(), &ts, &xs),
            xs,
            false,
            None,
        ))])
    }))
}

fn binary_data(
    a: &Tensor,
    b: &Tensor,
    out: &[usize],
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Vec<f32> {
    let (ad, bd) = (a.data(), b.data());
    if a.shape() == b.shape() {
        let mut v = vec![0f32; ad.len()];
        if v.len() >= PAR_MIN {
            v.par_chunks_mut(PAR_MIN).enumerate().for_each(|(c, vc)| {
                let o = c * PAR_MIN;
                for (i, r) in vc.iter_mut().enumerate() {
                    *r = f(ad[o + i], bd[o + i]);
                }
            });
        } else {
            for (i, r) in v.iter_mut().enumerate() {
                *r = f(ad[i], bd[i]);
            }
        }
        return v;
    }
    let sa = broadcast_strides(a.shape(), out);
    let sb = broadcast_strides(b.shape(), out);
    let last = out.last().copied().unwrap_or(1);
    let mut v = vec![0f32; numel_of(out)];
    for_each_row(out, &[sa, sb], |o, offs, inner| {
        for j in 0..last {
            v[o + j] = f(ad[offs[0] + j * inner[0]], bd[offs[1] + j * inner[1]]);
        }
    });
    v
}

#[derive(Clone, Copy)]
enum Bin {
    Add,
    Sub,
    Mul,
    Div,
}

fn binary(a: &Tensor, b: &Tensor, kind: Bin) -> Result<Tensor> {
    let name = match kind {
        Bin::Add => "add",
        Bin::Sub => "sub",
        Bin::Mul => "mul",
        Bin::Div => "div",
    };
    let out = broadcast_shape(name, a.shape(), b.shape())?;
    let data = match kind {
        Bin::Add => binary_data(a, b, &out, |x, y| x + y),
        Bin::Sub => binary_data(a, b, &out, |x, y| x - y),
        Bin::Mul => binary_data(a, b, &out, |x, y| x * y),
        Bin::Div => binary_data(a, b, &out, |x, y| x / y),
    };
    let (ac, bc) = (a.clone(), b.clone());
    let (ra, rb) = (a.requires_grad(), b.requires_grad());
    Ok(output(name, data, out, &[a, b], move |g| {
        let (ash, bsh) = (ac.shape().to_vec(), bc.shape().to_vec());
        let reduce = |t: Tensor, shape: &[usize]| -> Result<Tensor> { sum_to_shape(&t, shape) };
        let (ga, gb) = match kind {
            Bin::Add => (
                ra.then(|| reduce(g.clone(), &ash)),
                rb.then(|| reduce(g.clone(), &bsh)),
            ),
            Bin::Sub => (
                ra.then(|| reduce(g.clone(), &ash)),
                rb.then(|| reduce(scale(g, -1.0), &bsh)),
            ),
            Bin::Mul => (
                ra.then(|| mul(g, &bc).and_then(|t| reduce(t, &ash))),
                rb.then(|| mul(g, &ac).and_then(|t| reduce(t, &bsh))),
            ),
            Bin::Div => (
                ra.then(|| div(g, &bc).and_then(|t| reduce(t, &ash))),
                // d(a/b)/db = -a / b^2
                rb.then(|| {
                    let gb = mul(&div(g, &bc)?, &div(&ac, &bc)?)?;
                    reduce(scale(&gb, -1.0), &bsh)
                }),
            ),
        };
        Ok(vec![ga.transpose()?, gb.transpose()?])
    }))
}

/// `a + b`, broadcasting.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(a, b, Bin::Add)
}

/// `a - b`, broadcasting.
pub fn sub(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(a, b, Bin::Sub)
}

/// `a * b` elementwise, broadcasting.
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(a, b, Bin::Mul)
}

/// `a / b` elementwise, broadcasting.
pub fn div(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(a, b, Bin::Div)
}

/// Apply `f` to each element in parallel chunks.
pub(crate) fn map_data(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut v = vec![0f32; x.len()];
    if x.len() >= PAR_MIN {
        v.par_chunks_mut(PAR_MIN)
            .zip(x.par_chunks(PAR_MIN))
            .for_each(|(o, i)| {
                for (a, b) in o.iter_mut().zip(i) {
                    *a = f(*b);
                }
            });
    } else {
        for (a, b) in v.iter_mut().zip(x) {
            *a = f(*b);
        }
    }
    v
}

/// `x * s` (untracked): gradients scaled inside backward closures.
pub(crate) fn scale(x: &Tensor, s: f32) -> Tensor {
    Tensor::make(
        map_data(&x.data(), |v| v * s),
        x.shape().to_vec(),
        false,
        None,
    )
}

/// `x * s` for a scalar `s`.
pub fn mul_scalar(x: &Tensor, s: f32) -> Result<Tensor> {
    let data = map_data(&x.data(), |v| v * s);
    Ok(output(
        "mul_scalar",
        data,
        x.shape().to_vec(),
        &[x],
        move |g| Ok(vec![Some(scale(g, s))]),
    ))
}

/// `x + s` for a scalar `s`.
pub fn add_scalar(x: &Tensor, s: f32) -> Result<Tensor> {
    let data = map_data(&x.data(), |v| v + s);
    Ok(output(
        "add_scalar",
        data,
        x.shape().to_vec(),
        &[x],
        move |g| Ok(vec![Some(g.clone())]),
    ))
}
