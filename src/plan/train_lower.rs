//! How a model becomes the steps of a [`super::TrainPlan`], in two stages: [`shape_steps`]
//! decides every step (which layers fuse into it, its geometry) from shapes and layer kinds
//! alone, so that the memory a plan will take can be computed before any of it is allocated
//! (and for models of any size, on shape-only tensors); [`build`] then makes a decided step
//! with its buffers and registers its parameters.

use super::conv_pool::ConvPool;
use super::not_compiled;
use super::train::{Params, TStep};
use crate::error::Result;
use crate::kernels::conv::{Conv2dGeom, ConvBackward, ConvForward};
use crate::kernels::dense::{DenseForward, Gemm};
use crate::kernels::pool::Pool2dGeom;
use crate::nn::{Activation, Layer, Lowered, PoolKind, Sequential};
use crate::ops::Pointwise;
use crate::tensor::Tensor;

/// A training step as decided from shapes: what it computes, not yet its buffers.
#[derive(Clone, Copy, Debug)]
pub(super) enum Shaped {
    Conv {
        g: Conv2dGeom,
        act: Option<Pointwise>,
    },
    /// A convolution, its activation and the 2x2 max pooling after them.
    ConvPool {
        g: Conv2dGeom,
        act: Option<Pointwise>,
        pool: Pool2dGeom,
    },
    Dense {
        act: Option<Pointwise>,
        in_f: usize,
        units: usize,
    },
    BatchNorm {
        act: Option<Pointwise>,
        inner: usize,
    },
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
        /// Mask entries for a full batch.
        mask: usize,
    },
}

/// One decided step: the layer it starts at, what it is, and its per-sample input and output
/// lengths.
#[derive(Clone, Debug)]
pub(super) struct Decided {
    pub layer: usize,
    pub step: Shaped,
    pub inp: usize,
    pub out: usize,
}

/// The activation after layer `j`, if it is elementwise with a derivative from its output.
fn fusable(layers: &[Box<dyn Layer>], j: usize) -> Option<Pointwise> {
    match layers.get(j).map(|l| l.lowered()) {
        Some(Lowered::Activation(a)) => a.pointwise().filter(|p| p.derivative_from_output()),
        _ => None,
    }
}

/// Every step of training `model` on batches of up to `batch` samples shaped `input`, or why
/// the plan does not compile it. Allocates nothing that grows with the model or the batch.
pub(super) fn shape_steps(
    model: &Sequential,
    input: &[usize],
    batch: usize,
) -> Result<(Vec<Decided>, Vec<Vec<usize>>)> {
    let layers = model.layers();
    let shapes = super::layer_shapes(model, input)?;
    // (saturating: a model of shapes only can be of any size)
    let numel = |s: &[usize]| crate::nn::count(s).try_into().unwrap_or(usize::MAX);
    let mut steps = Vec::new();
    let mut i = 0;
    while i < layers.len() {
        let (step, end) = shape_step(layers, &shapes, i, batch)?;
        if let Some(step) = step {
            steps.push(Decided {
                layer: i,
                step,
                inp: numel(&shapes[i]),
                out: numel(&shapes[end]),
            });
        }
        i = end;
    }
    Ok((steps, shapes))
}

/// The step layer `i` and the layers fused into it become (`None` for a layer that needs no
/// step: a view, a linear activation), and the index of the first layer not taken.
fn shape_step(
    layers: &[Box<dyn Layer>],
    shapes: &[Vec<usize>],
    i: usize,
    batch: usize,
) -> Result<(Option<Shaped>, usize)> {
    let numel = |s: &[usize]| crate::nn::count(s).try_into().unwrap_or(usize::MAX);
    let (layer, shape) = (&*layers[i], &shapes[i]);
    let mut end = i + 1;
    let softmax = || {
        not_compiled(
            i,
            layer,
            "training runs softmax outputs eagerly (the loss takes logits)",
        )
    };
    // a layer's own activation, or else the elementwise one after it, fused into its step
    let mut fused = |a: Activation| -> Result<Option<Pointwise>> {
        match (a, a.pointwise()) {
            (Activation::Linear, _) => {
                let next = fusable(layers, end);
                if next.is_some() {
                    end += 1;
                }
                Ok(next)
            }
            (_, Some(p)) if p.derivative_from_output() => Ok(Some(p)),
            (_, Some(_)) => Err(not_compiled(i, layer, "its activation needs its input")),
            _ => Err(softmax()),
        }
    };
    let step = match layer.lowered() {
        Lowered::Conv(conv) => {
            let g = conv
                .zero_padded_geom(batch, shape)
                .map_err(|why| not_compiled(i, layer, format!("it is {why}")))?;
            let act = fused(conv.activation)?;
            // a max pooling next, pooled from the convolution's bands where they allow it
            let pool = match layers.get(end).map(|l| l.lowered()) {
                Some(Lowered::Pool(p)) if p.kind == PoolKind::Max => {
                    Some(super::pool_geom(batch, p, &shapes[end], &shapes[end + 1]))
                }
                _ => None,
            };
            match pool.filter(|pool| ConvPool::fits(&g, pool)) {
                Some(pool) => {
                    end += 1;
                    Shaped::ConvPool { g, act, pool }
                }
                None => Shaped::Conv { g, act },
            }
        }
        Lowered::Dense(d) if shape.len() == 1 => Shaped::Dense {
            act: fused(d.activation)?,
            in_f: d.in_features,
            units: d.units,
        },
        Lowered::BatchNorm(_) => Shaped::BatchNorm {
            act: fused(Activation::Linear)?,
            inner: numel(&shape[1..]),
        },
        Lowered::Activation(a) => match (a, a.pointwise()) {
            (_, Some(p)) => Shaped::Act(p),
            (Activation::Linear, _) => return Ok((None, end)),
            _ => return Err(softmax()),
        },
        Lowered::Pool(p) => {
            let g = super::pool_geom(batch, p, shape, &shapes[end]);
            match p.kind {
                PoolKind::Max => Shaped::MaxPool(g),
                PoolKind::Avg => Shaped::AvgPool(g, p.count_include_pad),
            }
        }
        Lowered::GlobalPool(gp) => {
            let (c, h, w) = super::chw(shape);
            match gp.kind {
                PoolKind::Avg => Shaped::GlobalAvg { c, inner: h * w },
                PoolKind::Max => Shaped::MaxPool(super::global_max_geom(batch, shape)),
            }
        }
        Lowered::Dropout(d) => {
            let group = if d.spatial { numel(&shape[1..]) } else { 1 }.max(1);
            Shaped::Dropout {
                rate: d.rate,
                group,
                mask: batch.saturating_mul(numel(shape)) / group,
            }
        }
        Lowered::View => return Ok((None, end)),
        Lowered::Dense(_) | Lowered::Opaque => {
            return Err(not_compiled(
                i,
                layer,
                "the compiled plan does not train this layer",
            ));
        }
    };
    Ok((Some(step), end))
}

fn param(params: &mut Params, t: &Tensor) -> usize {
    params.push((t.clone(), vec![0.0; t.numel()]));
    params.len() - 1
}

/// The step `d` decided for `layer`, with its buffers, its parameters registered in `params`.
/// `first`: the plan's first step (nothing needs its input gradient).
pub(super) fn build(
    d: &Decided,
    layer: &dyn Layer,
    (batch, first): (usize, bool),
    params: &mut Params,
) -> TStep {
    match (d.step, layer.lowered()) {
        (Shaped::Conv { g, act }, Lowered::Conv(conv)) => TStep::Conv {
            fwd: Box::new(ConvForward::new(g)),
            bwd: Box::new(ConvBackward::new(g)),
            weight: param(params, &conv.weight),
            bias: conv.bias.as_ref().map(|b| param(params, b)),
            act,
        },
        (Shaped::ConvPool { g, act, pool }, Lowered::Conv(conv)) => {
            let weight = param(params, &conv.weight);
            let bias = conv.bias.as_ref().map(|b| param(params, b));
            TStep::ConvPool(Box::new(ConvPool::new(g, pool, (weight, bias), act, first)))
        }
        (Shaped::Dense { act, in_f, units }, Lowered::Dense(dense)) => TStep::Dense {
            fwd: Box::new(DenseForward::new(in_f, units, batch)),
            dx_gemm: Gemm::new((batch, units, in_f)),
            dw_gemm: Gemm::new((units, batch, in_f)),
            weight: param(params, &dense.weight),
            bias: dense.bias.as_ref().map(|b| param(params, b)),
            act,
            in_f,
            units,
        },
        (Shaped::BatchNorm { act, inner }, Lowered::BatchNorm(bn)) => {
            let c = bn.channels;
            TStep::BatchNorm {
                bn: bn.clone(),
                weight: param(params, &bn.weight),
                bias: param(params, &bn.bias),
                act,
                inner,
                mean: vec![0.0; c],
                var: vec![0.0; c],
                invstd: vec![0.0; c],
                scale: vec![0.0; c],
                shift: vec![0.0; c],
                sums: vec![(0.0, 0.0); c],
            }
        }
        (Shaped::Act(p), _) => TStep::Act(p),
        (Shaped::MaxPool(g), _) => TStep::MaxPool(g),
        (Shaped::AvgPool(g, incl), _) => TStep::AvgPool(g, incl),
        (Shaped::GlobalAvg { c, inner }, _) => TStep::GlobalAvg { c, inner },
        (Shaped::Dropout { rate, group, mask }, _) => TStep::Dropout {
            rate,
            group,
            mask: vec![0.0; mask],
        },
        (step, _) => unreachable!("step {step:?} was decided for another kind of layer"),
    }
}

/// The values (f32) a training plan holds, by kind, computed from its decided steps.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PlanFootprint {
    /// The activations kept for backward: the batch and every step's output.
    pub activations: u64,
    /// What backward works in: two gradient buffers of the largest activation, the dropout
    /// masks, the convolutions' padded inputs, and each convolution backward's buffers (kept
    /// between steps).
    pub working: u64,
    /// The plan's gradient buffer of each parameter (the gradient tensors it hands the
    /// parameters, kept and reused, are as large again: the estimate counts them with the
    /// parameters).
    pub gradient_buffers: u64,
    /// The weights prepared (packed) for the forward kernels.
    pub prepared_weights: u64,
}

/// The footprint of training `model` on batches of `batch` samples shaped `input`, or why the
/// plan does not compile it; from shapes alone (works on [`crate::tensor::meta`] models).
pub fn footprint(model: &Sequential, input: &[usize], batch: usize) -> Result<PlanFootprint> {
    let (steps, _) = shape_steps(model, input, batch)?;
    let b = batch as u64;
    let numel = crate::nn::count(input);
    let mut f = PlanFootprint {
        activations: numel.saturating_mul(b),
        ..Default::default()
    };
    let mut largest = numel;
    for (k, d) in steps.iter().enumerate() {
        f.activations = f
            .activations
            .saturating_add((d.out as u64).saturating_mul(b));
        largest = largest.max(d.inp as u64).max(d.out as u64);
        // (buffers, weights prepared, parameters)
        let (buffers, weights, params) = match d.step {
            Shaped::Conv { g, .. } | Shaped::ConvPool { g, .. } => {
                let w = crate::nn::count(&[g.c_out, g.cin_g(), g.k_h, g.k_w]);
                let params = w.saturating_add(g.c_out as u64);
                let backward = ConvBackward::buffer_len(&g);
                let pooled = match d.step {
                    Shaped::ConvPool { pool, .. } => ConvPool::buffer_len(&g, &pool, k == 0),
                    _ => 0,
                };
                let buffers = ConvForward::buffer_len(&g).saturating_add(backward);
                (buffers.saturating_add(pooled), w, params)
            }
            Shaped::Dense { in_f, units, .. } => {
                let w = (in_f as u64).saturating_mul(units as u64);
                // the forward's packed input and W^T; backward's two products (dX = dY W,
                // dW = dY^T X), each with its operands packed
                let fwd = DenseForward::buffer_len(in_f, units, batch);
                let dx = Gemm::buffer_len((batch, units, in_f));
                let dw = Gemm::buffer_len((units, batch, in_f));
                let buffers = fwd.saturating_add(dx).saturating_add(dw);
                // (W^T unpadded is counted with the prepared weights)
                (buffers.saturating_sub(w), w, w.saturating_add(units as u64))
            }
            Shaped::BatchNorm { inner, .. } => (0, 0, 2 * (d.inp / inner.max(1)) as u64),
            Shaped::Dropout { mask, .. } => (mask as u64, 0, 0),
            _ => (0, 0, 0),
        };
        f.working = f.working.saturating_add(buffers);
        f.prepared_weights = f.prepared_weights.saturating_add(weights);
        f.gradient_buffers = f.gradient_buffers.saturating_add(params);
    }
    let output = steps.last().map_or(numel, |d| d.out as u64);
    f.working = f
        .working
        .saturating_add(largest.saturating_mul(b).saturating_mul(2))
        // the loss's buffers
        .saturating_add(output.saturating_mul(b).saturating_mul(3));
    Ok(f)
}
