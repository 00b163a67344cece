//! Reductions: sum and mean over any set of axes (with or without keeping them), and over all
//! elements. Sums accumulate in f64.

use rayon::prelude::*;

use crate::autograd::output;
use crate::error::{Result, param_err};
use crate::ops::elementwise::{broadcast_data, sum_f64, sum_to_data};
use crate::tensor::Tensor;

/// Normalise possibly negative axes; errors name the op and the shape.
pub(crate) fn norm_axes(op: &'static str, shape: &[usize], axes: &[isize]) -> Result<Vec<usize>> {
    let rank = shape.len() as isize;
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = if a < 0 { a + rank } else { a };
        if n < 0 || n >= rank {
            return param_err(
                op,
                "axes",
                format!("axis {a} is out of range for shape {shape:?}"),
            );
        }
        if out.contains(&(n as usize)) {
            return param_err(op, "axes", format!("axis {a} is repeated in {axes:?}"));
        }
        out.push(n as usize);
    }
    Ok(out)
}

fn reduce(
    op: &'static str,
    x: &Tensor,
    axes: &[isize],
    keepdim: bool,
    mean: bool,
) -> Result<Tensor> {
    let ax = norm_axes(op, x.shape(), axes)?;
    let kept: Vec<usize> = x
        .shape()
        .iter()
        .enumerate()
        .map(|(i, &d)| if ax.contains(&i) { 1 } else { d })
        .collect();
    let count: usize = ax.iter().map(|&a| x.shape()[a]).product();
    // Reducing a trailing block of axes (global pooling, row sums): contiguous rows, in parallel.
    let trailing = !ax.is_empty() && {
        let mut sorted = ax.clone();
        sorted.sort_unstable();
        sorted
            .iter()
            .enumerate()
            .all(|(i, &a)| a == x.rank() - sorted.len() + i)
    };
    let mut data = if trailing && count > 0 {
        let min_rows = (1 << 14) / count + 1;
        x.data()
            .par_chunks(count)
            .with_min_len(min_rows)
            .map(|row| sum_f64(row) as f32)
            .collect()
    } else {
        sum_to_data(&x.data(), x.shape(), &kept)
    };
    if mean {
        let c = count.max(1) as f32;
        data.iter_mut().for_each(|v| *v /= c);
        if count == 0 {
            data.iter_mut().for_each(|v| *v = f32::NAN);
        }
    }
    let out_shape: Vec<usize> = if keepdim {
        kept.clone()
    } else {
        x.shape()
            .iter()
            .enumerate()
            .filter(|(i, _)| !ax.contains(i))
            .map(|(_, &d)| d)
            .collect()
    };
    let xs = x.shape().to_vec();
    Ok(output(op, data, out_shape, &[x], move |g| {
        let mut gd = if trailing && count > 0 {
            let gdat = g.data();
            let mut v = vec![0f32; gdat.len() * count];
            v.par_chunks_mut(count)
                .zip(gdat.par_iter())
                .for_each(|(row, &gv)| row.fill(gv));
            v
        } else {
            broadcast_data(&g.data(), &kept, &xs)
        };
        if mean {
            let c = count.max(1) as f32;
            gd.iter_mut().for_each(|v| *v /= c);
        }
        Ok(vec![Some(Tensor::make(gd, xs, false, None))])
    }))
}

/// Sum over `axes` (negative counts from the end); `keepdim` keeps them with size 1.
pub fn sum(x: &Tensor, axes: &[isize], keepdim: bool) -> Result<Tensor> {
    reduce("sum", x, axes, keepdim, false)
}

/// Mean over `axes`.
pub fn mean(x: &Tensor, axes: &[isize], keepdim: bool) -> Result<Tensor> {
    reduce("mean", x, axes, keepdim, true)
}

/// Sum of all elements, as a rank-0 tensor.
pub fn sum_all(x: &Tensor) -> Result<Tensor> {
    let axes: Vec<isize> = (0..x.rank() as isize).collect();
    reduce("sum_all", x, &axes, false, false)
}

/// Mean of all elements, as a rank-0 tensor.
pub fn mean_all(x: &Tensor) -> Result<Tensor> {
    let axes: Vec<isize> = (0..x.rank() as isize).collect();
    reduce("mean_all", x, &axes, false, true)
}
