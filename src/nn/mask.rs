//! Batches of series of unequal length: each series padded at its end to the batch's longest,
//! with its valid length in [`Ctx::lengths`]. Every op that mixes positions across time
//! honours it, so a padded batch gives each series what it would get alone:
//!
//! - a convolution or a pooling window reads zeros past a series' end (as its own zero
//!   padding would give it): [`zero_tail`], [`fill_tail`];
//! - batch normalisation in training takes its statistics over valid positions only
//!   ([`batch_norm`]); in evaluation it is per position and needs nothing;
//! - global pooling and a sequence-to-one block's pick of a time step see each series' own
//!   positions ([`global_pool`], [`time_steps`]);
//! - losses come after those, per sample.
//!
//! Pointwise layers (activations, dropout) leave garbage in the padding, which the next op
//! that reads it masks. [`Sequential::forward`](super::Sequential::forward) carries the
//! lengths from layer to layer through each layer's shape arithmetic; [`support`] says
//! whether a model's results with padded batches equal its results one series at a time.

use super::{Ctx, Layer, PoolKind, Sequential};
use crate::error::Result;
use crate::ops;
use crate::tensor::Tensor;

/// Below every value a max pool can meet: what a padded position holds for one.
const LOWEST: f32 = -3.0e38;

/// The batch's valid lengths when some series is shorter than `x`'s time axis; `None` when
/// there is nothing to mask (no lengths, or every series fills the batch).
fn short(x: &Tensor, ctx: &Ctx) -> Option<Vec<usize>> {
    let lengths = ctx.lengths.as_ref()?;
    let l = *x.shape().last()?;
    (x.rank() == 3 && lengths.len() == x.shape()[0] && lengths.iter().any(|&v| v < l))
        .then(|| lengths.clone())
}

/// `(n, 1, l)`: 1 at each series' valid positions, 0 past its end.
fn mask(lengths: &[usize], l: usize) -> Result<Tensor> {
    let mut m = vec![0f32; lengths.len() * l];
    for (row, &v) in m.chunks_mut(l).zip(lengths) {
        row[..v.min(l)].fill(1.0);
    }
    Tensor::from_vec(m, &[lengths.len(), 1, l])
}

/// `x` with every position past a series' end set to `value`.
fn fill(x: &Tensor, lengths: &[usize], value: f32) -> Result<Tensor> {
    let m = mask(lengths, x.shape()[2])?;
    let kept = ops::mul(x, &m)?;
    if value == 0.0 {
        return Ok(kept);
    }
    // (m - 1) * -value is 0 where valid and `value` past the end
    let pad = ops::mul_scalar(&ops::add_scalar(&m, -1.0)?, -value)?;
    ops::add(&kept, &pad)
}

/// `x` with zeros past each series' end (the input of a convolution or average pool).
pub(crate) fn zero_tail(x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
    fill_tail(x, ctx, 0.0)
}

/// `x` with `value` past each series' end; `x` itself when nothing is padded.
pub(crate) fn fill_tail(x: &Tensor, ctx: &Ctx, value: f32) -> Result<Tensor> {
    match short(x, ctx) {
        Some(lengths) => fill(x, &lengths, value),
        None => Ok(x.clone()),
    }
}

/// The input of a max pool: padded positions below any value.
pub(crate) fn max_pool_input(x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
    fill_tail(x, ctx, LOWEST)
}

/// Batch normalisation in training over `(n, c, l)` with statistics from each series' valid
/// positions only ([`ops::norm::batch_norm_masked`]); `None` when nothing is padded or in
/// evaluation (the plain op applies).
pub(crate) fn batch_norm(x: &Tensor, ctx: &Ctx, a: &ops::BatchNormArgs) -> Result<Option<Tensor>> {
    match short(x, ctx).filter(|_| a.training) {
        Some(lengths) => ops::norm::batch_norm_masked(x, &lengths, a).map(Some),
        None => Ok(None),
    }
}

/// Global pooling of `(n, c, l)` over each series' valid positions, `(n, c)`; `None` when
/// nothing is padded.
pub(crate) fn global_pool(kind: PoolKind, x: &Tensor, ctx: &Ctx) -> Result<Option<Tensor>> {
    let Some(lengths) = short(x, ctx) else {
        return Ok(None);
    };
    Ok(Some(match kind {
        PoolKind::Max => ops::global_max_pool1d(&fill(x, &lengths, LOWEST)?)?,
        PoolKind::Avg => {
            let sums = ops::sum(&fill(x, &lengths, 0.0)?, &[2], false)?;
            let n: Vec<f32> = lengths.iter().map(|&v| v.max(1) as f32).collect();
            ops::div(&sums, &Tensor::from_vec(n, &[lengths.len(), 1])?)?
        }
    }))
}

/// The time step `step(length)` of each series of `(n, c, l)`, as `(n, c)`: a sequence-to-one
/// block's output taken at each series' own last (or middle) position; `None` when nothing is
/// padded.
pub(crate) fn time_steps(
    x: &Tensor,
    ctx: &Ctx,
    step: impl Fn(usize) -> usize,
) -> Result<Option<Tensor>> {
    let Some(lengths) = short(x, ctx) else {
        return Ok(None);
    };
    let l = x.shape()[2];
    let mut pick = vec![0f32; lengths.len() * l];
    for (row, &v) in pick.chunks_mut(l).zip(&lengths) {
        row[step(v.clamp(1, l)).min(l - 1)] = 1.0;
    }
    let pick = Tensor::from_vec(pick, &[lengths.len(), 1, l])?;
    Ok(Some(ops::sum(&ops::mul(x, &pick)?, &[2], false)?))
}

/// The lengths after `layer` for inputs of `channels` channels and `lengths` (its output a
/// series), from the layer's shape arithmetic; the layer's own error for a series too short
/// for it (which the padding would otherwise hide).
pub(crate) fn lengths_after(
    layer: &dyn Layer,
    channels: usize,
    lengths: &[usize],
) -> Result<Vec<usize>> {
    let mut memo: Vec<(usize, usize)> = Vec::new();
    let mut out = Vec::with_capacity(lengths.len());
    for &v in lengths {
        let after = match memo.iter().find(|(k, _)| *k == v) {
            Some(&(_, a)) => a,
            None => {
                let info = layer.infer(&[channels, v])?;
                let [_, a] = info.output[..] else {
                    return crate::error::shape_err(
                        layer.kind(),
                        format!("turns a series into {:?}", info.output),
                    );
                };
                memo.push((v, a));
                a
            }
        };
        out.push(after);
    }
    Ok(out)
}

/// Whether `model` gives each series of a padded, masked batch what it gives the series alone:
/// every layer that sees a time axis honours the mask ([`Layer::takes_mask`]). The error names
/// the first layer that does not.
pub fn support(model: &Sequential) -> std::result::Result<(), String> {
    if model.input.len() != 2 {
        return Err("the inputs are not series (channels, length)".into());
    }
    let mut shape = model.input.clone();
    for (i, layer) in model.layers().iter().enumerate() {
        if shape.len() != 2 {
            break;
        }
        if !layer.takes_mask() {
            return Err(format!(
                "layer {i} ({}) would mix a series with its padding",
                layer.kind()
            ));
        }
        shape = match layer.infer(&shape) {
            Ok(info) => info.output,
            Err(e) => return Err(e.to_string()),
        };
    }
    Ok(())
}

/// Whether every layer of `layers` takes a mask and keeps the length (a block's body, whose
/// lengths [`Sequential::forward`] does not follow).
pub(crate) fn chain_takes_mask<'a>(
    layers: impl IntoIterator<Item = &'a dyn Layer>,
    channels: usize,
) -> bool {
    let mut c = channels;
    for l in layers {
        if !l.takes_mask() {
            return false;
        }
        // the length must come out as it went in, whatever it is
        let mut out = Vec::new();
        for probe in [17, 64] {
            match l.infer(&[c, probe]) {
                Ok(i) if i.output.len() == 2 && i.output[1] == probe => out.push(i.output[0]),
                _ => return false,
            }
        }
        c = out[0];
    }
    true
}
