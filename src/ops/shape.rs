//! Ops that move data without arithmetic: reshape, flatten, permute / transpose, concat, slice
//! along an axis, and pad (constant, reflect, replicate, circular).

use crate::autograd::{make_node, output};
use crate::error::{Result, param_err, shape_err};
use crate::tensor::{Tensor, checked_numel, numel_of};

/// The same data seen with a new shape (no copy). One dimension may be `usize::MAX`, inferred.
pub fn reshape(x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let mut shape = shape.to_vec();
    let infer: Vec<usize> = (0..shape.len())
        .filter(|&i| shape[i] == usize::MAX)
        .collect();
    if infer.len() > 1 {
        return param_err("reshape", "shape", "only one dimension can be inferred");
    }
    if let Some(&i) = infer.first() {
        let known: usize = shape
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, &d)| d)
            .product();
        if known == 0 || x.numel() % known != 0 {
            return shape_err(
                "reshape",
                format!(
                    "cannot infer a dimension to view {:?} as {:?}",
                    x.shape(),
                    shape
                ),
            );
        }
        shape[i] = x.numel() / known;
    }
    let n = checked_numel("reshape", &shape)?;
    if n != x.numel() {
        return shape_err(
            "reshape",
            format!(
                "cannot view shape {:?} ({} elements) as {:?} ({} elements)",
                x.shape(),
                x.numel(),
                shape,
                n
            ),
        );
    }
    let xs = x.shape().to_vec();
    let node = make_node("reshape", &[x], move |g| {
        Ok(vec![Some(g.with_shape(xs, None))])
    });
    Ok(x.with_shape(shape, node))
}

/// Merge dimensions `start..=end` into one (PyTorch's `flatten(start_dim, end_dim)`).
pub fn flatten(x: &Tensor, start: usize, end: usize) -> Result<Tensor> {
    if x.rank() == 0 {
        return reshape(x, &[1]);
    }
    if start > end || end >= x.rank() {
        return param_err(
            "flatten",
            "start/end",
            format!(
                "dimensions {start}..={end} are not a range of shape {:?}",
                x.shape()
            ),
        );
    }
    let s = x.shape();
    let mut shape = s[..start].to_vec();
    shape.push(s[start..=end].iter().product());
    shape.extend_from_slice(&s[end + 1..]);
    reshape(x, &shape)
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut st = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        st[i] = st[i + 1] * shape[i + 1];
    }
    st
}

fn permute_data(data: &[f32], shape: &[usize], dims: &[usize]) -> (Vec<f32>, Vec<usize>) {
    let out_shape: Vec<usize> = dims.iter().map(|&d| shape[d]).collect();
    let st = strides(shape);
    let src_st: Vec<usize> = dims.iter().map(|&d| st[d]).collect();
    let n = numel_of(&out_shape);
    let mut out = Vec::with_capacity(n);
    let rank = out_shape.len();
    let mut idx = vec![0usize; rank];
    let mut off = 0usize;
    for _ in 0..n {
        out.push(data[off]);
        for d in (0..rank).rev() {
            idx[d] += 1;
            off += src_st[d];
            if idx[d] < out_shape[d] {
                break;
            }
            off -= src_st[d] * out_shape[d];
            idx[d] = 0;
        }
    }
    (out, out_shape)
}

/// Reorder dimensions: output dimension i is input dimension `dims[i]`.
pub fn permute(x: &Tensor, dims: &[usize]) -> Result<Tensor> {
    let mut seen = vec![false; x.rank()];
    if dims.len() != x.rank()
        || dims
            .iter()
            .any(|&d| d >= x.rank() || std::mem::replace(&mut seen[d], true))
    {
        return param_err(
            "permute",
            "dims",
            format!(
                "{dims:?} is not a permutation of the {} dimensions of {:?}",
                x.rank(),
                x.shape()
            ),
        );
    }
    let (data, out_shape) = permute_data(&x.data(), x.shape(), dims);
    let mut inv = vec![0; dims.len()];
    for (i, &d) in dims.iter().enumerate() {
        inv[d] = i;
    }
    Ok(output("permute", data, out_shape, &[x], move |g| {
        let (d, s) = permute_data(&g.data(), g.shape(), &inv);
        Ok(vec![Some(Tensor::make(d, s, false, None))])
    }))
}

/// Swap two dimensions.
pub fn transpose(x: &Tensor, a: usize, b: usize) -> Result<Tensor> {
    if a >= x.rank() || b >= x.rank() {
        return param_err(
            "transpose",
            "dims",
            format!("({a}, {b}) out of range for shape {:?}", x.shape()),
        );
    }
    let mut dims: Vec<usize> = (0..x.rank()).collect();
    dims.swap(a, b);
    permute(x, &dims)
}

/// Join tensors along `axis`; all other dimensions must agree.
pub fn concat(xs: &[&Tensor], axis: usize) -> Result<Tensor> {
    let Some(first) = xs.first() else {
        return param_err("concat", "tensors", "needs at least one tensor");
    };
    let rank = first.rank();
    if axis >= rank {
        return param_err(
            "concat",
            "axis",
            format!("axis {axis} is out of range for shape {:?}", first.shape()),
        );
    }
    for (i, t) in xs.iter().enumerate() {
        let ok =
            t.rank() == rank && (0..rank).all(|d| d == axis || t.shape()[d] == first.shape()[d]);
        if !ok {
            return shape_err(
                "concat",
                format!(
                    "tensor {i} has shape {:?}, which does not match {:?} outside axis {axis}",
                    t.shape(),
                    first.shape()
                ),
            );
        }
    }
    let outer: usize = first.shape()[..axis].iter().product();
    let inner: usize = first.shape()[axis + 1..].iter().product();
    let lens: Vec<usize> = xs.iter().map(|t| t.shape()[axis]).collect();
    let total: usize = lens.iter().sum();
    let mut out_shape = first.shape().to_vec();
    out_shape[axis] = total;
    let mut data = vec![0f32; outer * total * inner];
    let mut at = 0;
    for (t, &l) in xs.iter().zip(&lens) {
        let d = t.data();
        for o in 0..outer {
            data[(o * total + at) * inner..(o * total + at + l) * inner]
                .copy_from_slice(&d[o * l * inner..(o + 1) * l * inner]);
        }
        at += l;
    }
    let shapes: Vec<Vec<usize>> = xs.iter().map(|t| t.shape().to_vec()).collect();
    Ok(output("concat", data, out_shape, xs, move |g| {
        let gd = g.data();
        let mut grads = Vec::with_capacity(shapes.len());
        let mut at = 0;
        for (s, &l) in shapes.iter().zip(&lens) {
            let mut v = vec![0f32; outer * l * inner];
            for o in 0..outer {
                v[o * l * inner..(o + 1) * l * inner]
                    .copy_from_slice(&gd[(o * total + at) * inner..(o * total + at + l) * inner]);
            }
            at += l;
            grads.push(Some(Tensor::make(v, s.clone(), false, None)));
        }
        Ok(grads)
    }))
}

/// Elements `start..end` along `axis` (PyTorch's `narrow`).
pub fn slice(x: &Tensor, axis: usize, start: usize, end: usize) -> Result<Tensor> {
    if axis >= x.rank() {
        return param_err(
            "slice",
            "axis",
            format!("axis {axis} is out of range for shape {:?}", x.shape()),
        );
    }
    let len = x.shape()[axis];
    if start > end || end > len {
        return param_err(
            "slice",
            "range",
            format!(
                "{start}..{end} is not within 0..{len} of axis {axis} of {:?}",
                x.shape()
            ),
        );
    }
    let outer: usize = x.shape()[..axis].iter().product();
    let inner: usize = x.shape()[axis + 1..].iter().product();
    let l = end - start;
    let xd = x.data();
    let mut data = Vec::with_capacity(outer * l * inner);
    for o in 0..outer {
        data.extend_from_slice(&xd[(o * len + start) * inner..(o * len + end) * inner]);
    }
    drop(xd);
    let mut out_shape = x.shape().to_vec();
    out_shape[axis] = l;
    let xs = x.shape().to_vec();
    Ok(output("slice", data, out_shape, &[x], move |g| {
        let gd = g.data();
        let mut v = vec![0f32; outer * len * inner];
        for o in 0..outer {
            v[(o * len + start) * inner..(o * len + end) * inner]
                .copy_from_slice(&gd[o * l * inner..(o + 1) * l * inner]);
        }
        Ok(vec![Some(Tensor::make(v, xs, false, None))])
    }))
}

/// How padded positions are filled.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum PadMode {
    /// A constant (zero for convolutions).
    #[default]
    Zeros,
    /// Mirror without repeating the edge: `[a b c]` padded by 2 on the left reads `c b | a b c`.
    Reflect,
    /// Repeat the edge value.
    Replicate,
    /// Wrap around.
    Circular,
}

impl PadMode {
    /// Name as used in specs and messages.
    pub fn name(&self) -> &'static str {
        match self {
            PadMode::Zeros => "zeros",
            PadMode::Reflect => "reflect",
            PadMode::Replicate => "replicate",
            PadMode::Circular => "circular",
        }
    }
}

/// Source index of padded position `o` along an axis of length `n` with `before` padding.
fn pad_source(o: usize, n: usize, before: usize, mode: PadMode) -> Option<usize> {
    let i = o as isize - before as isize;
    let n_i = n as isize;
    if (0..n_i).contains(&i) {
        return Some(i as usize);
    }
    match mode {
        PadMode::Zeros => None,
        PadMode::Replicate => Some(i.clamp(0, n_i - 1) as usize),
        PadMode::Reflect => Some(if i < 0 { -i } else { 2 * (n_i - 1) - i } as usize),
        PadMode::Circular => Some(i.rem_euclid(n_i) as usize),
    }
}

/// Pad the last `pads.len()` dimensions: `pads[k] = (before, after)` for dimension
/// `rank - pads.len() + k`. Zeros mode fills with `value`.
pub fn pad(x: &Tensor, pads: &[(usize, usize)], mode: PadMode, value: f32) -> Result<Tensor> {
    let rank = x.rank();
    if pads.len() > rank {
        return param_err(
            "pad",
            "pads",
            format!(
                "{} padded dimensions for a tensor of shape {:?}",
                pads.len(),
                x.shape()
            ),
        );
    }
    let first = rank - pads.len();
    for (k, &(b, a)) in pads.iter().enumerate() {
        let n = x.shape()[first + k];
        let bad = match mode {
            PadMode::Zeros => false,
            PadMode::Reflect => b >= n || a >= n,
            PadMode::Replicate => n == 0 && (a > 0 || b > 0),
            PadMode::Circular => b > n || a > n,
        };
        if bad {
            return param_err(
                "pad",
                "pads",
                format!(
                    "{} padding of ({b}, {a}) on dimension {} of size {n} (shape {:?}): reflect needs padding < size, circular padding <= size",
                    mode.name(),
                    first + k,
                    x.shape()
                ),
            );
        }
    }
    let mut out_shape = x.shape().to_vec();
    for (k, &(b, a)) in pads.iter().enumerate() {
        out_shape[first + k] += b + a;
    }
    checked_numel("pad", &out_shape)?;
    // Per-dimension maps from output index to source index.
    let maps: Vec<Vec<Option<usize>>> = (0..rank)
        .map(|d| {
            let (b, _) = if d >= first { pads[d - first] } else { (0, 0) };
            (0..out_shape[d])
                .map(|o| pad_source(o, x.shape()[d], b, mode))
                .collect()
        })
        .collect();
    let st = strides(x.shape());
    let n = numel_of(&out_shape);
    // Gather list: source offset of each output element.
    let mut src: Vec<Option<usize>> = Vec::with_capacity(n);
    let mut idx = vec![0usize; rank];
    for _ in 0..n {
        let mut off = Some(0usize);
        for d in 0..rank {
            off = match (off, maps[d][idx[d]]) {
                (Some(o), Some(s)) => Some(o + s * st[d]),
                _ => None,
            };
        }
        src.push(off);
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    let xd = x.data();
    let data: Vec<f32> = src.iter().map(|s| s.map_or(value, |i| xd[i])).collect();
    drop(xd);
    let xs = x.shape().to_vec();
    Ok(output("pad", data, out_shape, &[x], move |g| {
        let gd = g.data();
        let mut v = vec![0f32; numel_of(&xs)];
        for (o, s) in src.iter().enumerate() {
            if let Some(i) = s {
                v[*i] += gd[o];
            }
        }
        Ok(vec![Some(Tensor::make(v, xs, false, None))])
    }))
}
