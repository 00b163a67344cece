//! The steps of a compiled plan: each a layer or a fused run of layers, with what it reads
//! from the model's tensors and the buffers it keeps, run on slices of the plan's arena.

use rayon::prelude::*;

use crate::kernels::conv::{Band, ConvForward};
use crate::kernels::dense::DenseForward;
use crate::kernels::gemm::SendPtr;
use crate::kernels::pool::{self, Pool2dGeom};
use crate::kernels::sum_f64;
use crate::nn::BatchNorm;
use crate::ops::Pointwise;
use crate::ops::activation::softmax_forward;
use crate::ops::norm::{inv_std, scale_shift};
use crate::tensor::Tensor;

/// Elements per parallel chunk of the elementwise steps.
const CHUNK: usize = 1 << 14;

/// Inference batch norm as a per-channel affine map: `scale = weight / sqrt(var + eps)`,
/// `shift = bias - mean * scale` (the formula of `ops::batch_norm` in evaluation).
pub(crate) fn bn_affine(bn: &BatchNorm, scale: &mut Vec<f32>, shift: &mut Vec<f32>) {
    let c = bn.channels;
    let invstd: Vec<f32> = bn
        .running_var
        .data()
        .iter()
        .map(|&v| inv_std(v as f64, bn.eps))
        .collect();
    scale.resize(c, 0.0);
    shift.resize(c, 0.0);
    let (w, b, m) = (bn.weight.data(), bn.bias.data(), bn.running_mean.data());
    scale_shift(&w, &b, &m, &invstd, scale, shift);
}

/// One step of a plan.
pub(crate) enum Step {
    /// A convolution with its bias, a folded inference batch norm and an activation fused
    /// into its store.
    Conv {
        fwd: Box<ConvForward>,
        weight: Tensor,
        bias: Option<Tensor>,
        bn: Option<BatchNorm>,
        act: Option<Pointwise>,
        /// The weights and bias the kernel runs with (folded with `bn`).
        folded_w: Vec<f32>,
        folded_b: Vec<f32>,
        /// A max pooling fused after the activation: each band of output rows is pooled
        /// while in cache, and only the pooled values are written.
        pool: Option<FusedPool>,
    },
    /// `y = x W^T + b`, then the activation (on the micro-kernel, `W^T` kept packed).
    Dense {
        fwd: Box<DenseForward>,
        weight: Tensor,
        bias: Option<Tensor>,
        act: Option<Pointwise>,
    },
    /// A batch norm (its tensors shared with the model) not folded into a convolution: `y = x * scale[c] + shift[c]`, in place.
    Affine {
        bn: BatchNorm,
        scale: Vec<f32>,
        shift: Vec<f32>,
        inner: usize,
    },
    /// An elementwise activation, in place.
    Act(Pointwise),
    /// Softmax or log-softmax over the channel axis.
    Softmax {
        log: bool,
        c: usize,
        inner: usize,
    },
    MaxPool(Pool2dGeom),
    AvgPool {
        g: Pool2dGeom,
        count_include_pad: bool,
    },
    GlobalAvg {
        c: usize,
        inner: usize,
    },
    GlobalMax(Pool2dGeom),
}

/// A max pooling with stride equal to its window and no padding, fused into a convolution.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FusedPool {
    pub(crate) k: (usize, usize),
    /// The pooled output's height and width.
    pub(crate) out: (usize, usize),
}

impl Step {
    /// Whether the step writes its output over its input.
    pub(crate) fn in_place(&self) -> bool {
        matches!(self, Step::Affine { .. } | Step::Act(_))
    }

    /// Re-read the model's weights (after training changed them): fold and pack.
    pub(crate) fn sync(&mut self) {
        match self {
            Step::Conv {
                fwd,
                weight,
                bias,
                bn,
                folded_w,
                folded_b,
                ..
            } => {
                let c_out = fwd.geom().c_out;
                folded_w.clear();
                folded_w.extend_from_slice(&weight.data());
                folded_b.clear();
                match bias {
                    Some(b) => folded_b.extend_from_slice(&b.data()),
                    None => folded_b.resize(c_out, 0.0),
                }
                if let Some(bn) = bn {
                    let (mut scale, mut shift) = (Vec::new(), Vec::new());
                    bn_affine(bn, &mut scale, &mut shift);
                    let per = folded_w.len() / c_out.max(1);
                    for (o, row) in folded_w.chunks_mut(per.max(1)).enumerate() {
                        row.iter_mut().for_each(|v| *v *= scale[o]);
                        folded_b[o] = folded_b[o] * scale[o] + shift[o];
                    }
                }
                fwd.set_weights(folded_w);
            }
            Step::Affine {
                bn, scale, shift, ..
            } => bn_affine(bn, scale, shift),
            Step::Dense { fwd, weight, .. } => fwd.set_weights(&weight.data()),
            _ => {}
        }
    }

    /// Run on `n` samples: `x` the input, `y` the output (ignored for in-place steps, which
    /// work on `x`).
    pub(crate) fn run(&mut self, n: usize, x: &mut [f32], y: &mut [f32]) {
        match self {
            Step::Conv {
                fwd,
                act,
                folded_b,
                pool: Some(pool),
                ..
            } => conv_pool(fwd, *act, folded_b, *pool, n, x, y),
            Step::Conv {
                fwd, act, folded_b, ..
            } => {
                let epi = super::epilogue(*act);
                let epi = epi.as_ref().map(|f| f as &(dyn Fn(&mut [f32]) + Sync));
                fwd.run(n, x, Some(folded_b), y, epi);
            }
            Step::Dense { fwd, bias, act, .. } => {
                let b = bias.as_ref().map(|b| b.data());
                let epi = super::epilogue(*act);
                let epi = epi.as_ref().map(|f| f as &(dyn Fn(&mut [f32]) + Sync));
                fwd.run(n, x, b.as_deref().map(|v| v.as_slice()), y, epi);
            }
            Step::Affine {
                scale,
                shift,
                inner,
                ..
            } => {
                let (c, inner) = (scale.len(), (*inner).max(1));
                x[..n * c * inner]
                    .par_chunks_mut(inner)
                    .enumerate()
                    .for_each(|(plane, v)| {
                        let ch = plane % c;
                        v.iter_mut().for_each(|e| *e = *e * scale[ch] + shift[ch]);
                    });
            }
            Step::Act(p) => pointwise(*p, x),
            Step::Softmax { log, c, inner } => {
                let len = n * *c * *inner;
                softmax_forward(&x[..len], &mut y[..len], (n, *c, *inner), *log);
            }
            Step::MaxPool(g) | Step::GlobalMax(g) => {
                let (g, x, y) = pool_slices(n, g, x, y);
                pool::max_forward(&g, x, y);
            }
            Step::AvgPool {
                g,
                count_include_pad,
            } => {
                let (g, x, y) = pool_slices(n, g, x, y);
                pool::avg_forward(&g, x, y, *count_include_pad);
            }
            Step::GlobalAvg { c, inner } => {
                let (planes, inner) = (n * *c, (*inner).max(1));
                let count = inner as f32;
                y[..planes]
                    .par_iter_mut()
                    .zip(x[..planes * inner].par_chunks(inner))
                    .for_each(|(o, row)| *o = sum_f64(row) as f32 / count);
            }
        }
    }
}

/// A convolution, its activation and a max pooling over each band of rows in cache:
/// `y` gets only the pooled values, `(n, c_out, out.0, out.1)`.
fn conv_pool(
    fwd: &mut ConvForward,
    act: Option<Pointwise>,
    bias: &[f32],
    pool: FusedPool,
    n: usize,
    x: &[f32],
    y: &mut [f32],
) {
    let g = *fwd.geom();
    let (cog, (ph, pw)) = (g.cout_g(), pool.out);
    let plane = ph * pw;
    let y = &mut y[..n * g.c_out * plane];
    let (ylen, yp) = (y.len(), SendPtr(y.as_mut_ptr()));
    let sink = |b: Band| {
        let rows = (b.rows / pool.k.0 * pool.k.0).min((ph - b.oh0 / pool.k.0) * pool.k.0);
        let first = b.oh0 / pool.k.0;
        let prows = rows / pool.k.0;
        if b.col_stride != 1 {
            // channels last (2x2 windows only; see `Plan::compile`)
            debug_assert_eq!(pool.k, (2, 2));
            let end = (b.rows * g.out_w * cog).min(b.data.len());
            if let Some(p) = act {
                p.apply(&mut b.data[..end]);
            }
            let at = ((b.img * g.c_out + b.grp * cog) * ph + first) * pw;
            assert!(at + (cog - 1) * plane + prows * pw <= ylen);
            // SAFETY: band (img, grp, oh0) writes the pooled rows first..first + prows of
            // each of its group's channel planes of its image only (at + o * plane, within
            // y: asserted); bands of one plane cover disjoint row ranges, so no two tasks
            // share an element
            unsafe {
                pool::max_pool_2x2_channels_last(
                    &b.data[..end],
                    (rows, g.out_w, cog),
                    yp.0.add(at),
                    plane,
                )
            };
            return;
        }
        if let Some(p) = act {
            // the whole band at once (the wide columns too, which nothing reads): one call
            // instead of one per row
            let end = ((cog - 1) * b.chan_stride + b.rows * b.row_stride).min(b.data.len());
            p.apply(&mut b.data[..end]);
        }
        for o in 0..cog {
            let block = &mut b.data[o * b.chan_stride..];
            let at = ((b.img * g.c_out + b.grp * cog + o) * ph + first) * pw;
            let len = (prows * pw).min(ylen.saturating_sub(at));
            let base = &yp;
            // SAFETY: band (img, grp, oh0) writes the pooled rows first..first + prows of its
            // own group's channels of its image only; bands of one plane cover disjoint row
            // ranges (oh0 is a multiple of the pool's height), so no two tasks share an
            // element, and at + len <= y.len().
            let out = unsafe { std::slice::from_raw_parts_mut(base.0.add(at), len) };
            pool::max_pool_block(pool.k, block, (rows, g.out_w, b.row_stride), out);
        }
    };
    let ran = fwd.run_banded(n, x, Some(bias), pool.k.0, &sink);
    debug_assert!(ran, "a pooling is fused only into a banded convolution");
}

/// A pooling's geometry at `n` samples, and its input and output within the buffers.
fn pool_slices<'a>(
    n: usize,
    g: &Pool2dGeom,
    x: &'a [f32],
    y: &'a mut [f32],
) -> (Pool2dGeom, &'a [f32], &'a mut [f32]) {
    let g = Pool2dGeom { n, ..*g };
    let (xl, yl) = (g.planes() * g.h * g.w, g.planes() * g.out_h * g.out_w);
    (g, &x[..xl], &mut y[..yl])
}

/// `p` over every element of `v`, in parallel chunks.
fn pointwise(p: Pointwise, v: &mut [f32]) {
    v.par_chunks_mut(CHUNK).for_each(|c| p.apply(c));
}
