//! A convolution, its activation and a 2x2 stride-2 max pooling as one training step. The
//! forward pools each band of the convolution's output rows while it is in the worker's
//! cache (as inference does) and keeps, besides the pooled values, only each maximum's
//! position in its window (one byte): the convolution's output, four times the pooled size,
//! is never written. Backward applies the activation's derivative to the pooled gradient (the
//! pooled values are the activation's outputs at the maxima), spreads it to the positions
//! kept, and runs the convolution's backward on that. The values are those of the separate
//! convolution and pooling steps, bit for bit, except in the plan's first step: there nothing
//! needs the input gradient, so the pooled gradient is spread straight into the weight
//! gradient's wide buffer and the bias gradient summed from the pooled gradient (the same
//! terms in another order: equal to the eager engine within rounding).

use rayon::prelude::*;

use super::train::through_act;
use crate::kernels::conv::{Band, Conv2dGeom, ConvBackward, ConvForward};
use crate::kernels::each_sum_f64;
use crate::kernels::pool::{self, Pool2dGeom};
use crate::ops::Pointwise;
use crate::tensor::Tensor;

pub(super) struct ConvPool {
    fwd: ConvForward,
    bwd: ConvBackward,
    weight: usize,
    bias: Option<usize>,
    act: Option<Pointwise>,
    /// The pooling at the largest batch.
    pool: Pool2dGeom,
    /// Each pooled value's position in its window (0 to 3, in scan order).
    idx: Vec<u8>,
    /// The gradient of the convolution's output, spread from the pooled gradient; empty for
    /// the first step, whose pooled gradient is spread straight into the weight gradient's
    /// wide buffer (nothing needs the input gradient).
    dy: Vec<f32>,
}

/// The pooled values and positions of every band (see the SAFETY note where they are made).
struct Outputs(*mut f32, *mut u8, usize);
// SAFETY: each band writes its own disjoint part of both buffers (see `forward`).
unsafe impl Sync for Outputs {}

impl ConvPool {
    /// Whether a convolution of geometry `g` can pool its bands (a stride-1 convolution on a
    /// micro-kernel) into the 2x2 stride-2 pooling `pool`.
    pub(super) fn fits(g: &Conv2dGeom, pool: &Pool2dGeom) -> bool {
        ConvForward::can_band(g) && pool.is_2x2_tiling()
    }

    /// Values it keeps besides the convolution's buffers: the positions (a quarter of a value
    /// each) and the convolution's output gradient (for the `first` step, the weight
    /// gradient's wide one, which the pooling's backward fills).
    pub(super) fn buffer_len(g: &Conv2dGeom, pool: &Pool2dGeom, first: bool) -> u64 {
        let pooled = crate::nn::count(&[pool.n, pool.c, pool.out_h, pool.out_w]);
        let full = match first && Self::spreads_into_wide(g) {
            true => ConvBackward::wide_len(g),
            false => crate::nn::count(&[g.n, g.c_out, g.out_h, g.out_w]),
        };
        (pooled / 4).saturating_add(full)
    }

    /// Whether the weight gradient of `g` runs on a wide dY the pooling can spread into.
    fn spreads_into_wide(g: &Conv2dGeom) -> bool {
        crate::kernels::micro::Micro::best().is_some() && ConvBackward::implicit_weight(g)
    }

    /// The step for `g` pooled by `pool`; `first`: the plan's first step (no input gradient).
    pub(super) fn new(
        g: Conv2dGeom,
        pool: Pool2dGeom,
        (weight, bias): (usize, Option<usize>),
        act: Option<Pointwise>,
        first: bool,
    ) -> ConvPool {
        let bwd = ConvBackward::new(g);
        let wide = first && bwd.wide_row_stride().is_some();
        ConvPool {
            fwd: ConvForward::new(g),
            bwd,
            weight,
            bias,
            act,
            pool,
            idx: vec![0; pool.planes() * pool.out_h * pool.out_w],
            dy: match wide {
                true => Vec::new(),
                false => vec![0.0; g.n * g.c_out * g.out_h * g.out_w],
            },
        }
    }

    /// The pooled activations of the convolution of the `n` images of `x` into `y`.
    pub(super) fn forward(
        &mut self,
        params: &[(Tensor, Vec<f32>)],
        n: usize,
        x: &[f32],
        y: &mut [f32],
    ) {
        let ConvPool { fwd, act, idx, .. } = self;
        fwd.set_weights(&params[self.weight].0.data());
        let bias = self.bias.map(|b| params[b].0.data());
        let g = *fwd.geom();
        let (cog, ph, pw) = (g.cout_g(), self.pool.out_h, self.pool.out_w);
        let len = n * g.c_out * ph * pw;
        let out = Outputs(y[..len].as_mut_ptr(), idx[..len].as_mut_ptr(), len);
        let act = *act;
        let sink = |b: Band| {
            // the band's rows that make whole pooled rows (oh0 is even)
            let first = b.oh0 / 2;
            let rows = (b.rows / 2 * 2).min((ph - first) * 2);
            if let Some(p) = act {
                // the whole band at once (the wide columns too, which nothing reads): one
                // call instead of one per row
                let end = ((cog - 1) * b.chan_stride + b.rows * b.row_stride).min(b.data.len());
                p.apply(&mut b.data[..end]);
            }
            for o in 0..cog {
                let block = &mut b.data[o * b.chan_stride..];
                let at = ((b.img * g.c_out + b.grp * cog + o) * ph + first) * pw;
                let len = (rows / 2 * pw).min(out.2.saturating_sub(at));
                let o = &out;
                // SAFETY: band (img, grp, oh0) writes the pooled rows first..first + rows / 2
                // of its own group's channels of its image only; the bands of one plane
                // cover disjoint rows, so no two tasks share an element, and at + len is
                // within both buffers (`len` values each).
                let (y, i) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(o.0.add(at), len),
                        std::slice::from_raw_parts_mut(o.1.add(at), len),
                    )
                };
                pool::max_pool_block_argmax(block, (rows, g.out_w, b.row_stride), y, i);
            }
        };
        let bias = bias.as_ref().map(|b| b.as_slice());
        let ran = fwd.run_banded(n, x, bias, 2, &sink);
        debug_assert!(ran, "ConvPool::fits said the convolution pools its bands");
    }

    /// Backward from `dy`, the gradient of the pooled output `y`: the input gradient into
    /// `dx` (where wanted) and the weight's and bias's gradients.
    pub(super) fn backward(
        &mut self,
        params: &mut [(Tensor, Vec<f32>)],
        n: usize,
        (x, y): (&[f32], &[f32]),
        dy: &mut [f32],
        dx: Option<&mut [f32]>,
    ) {
        through_act(self.act, y, dy);
        let g = *self.fwd.geom();
        let pooled = Pool2dGeom { n, ..self.pool };
        let idx = &self.idx[..dy.len()];
        if self.dy.is_empty() {
            // the first step: spread straight into the weight gradient's wide dY
            let stride = self.bwd.wide_row_stride().expect("checked when built");
            if let Some(b) = self.bias {
                // the bias gradient from the pooled gradient: the same terms, a quarter of
                // the reads (summed in another order than the unfused step's)
                let p = pooled.out_h * pooled.out_w;
                let db = &mut params[b].1;
                db.par_iter_mut().enumerate().for_each(|(o, d)| {
                    let planes = (0..n).map(|i| &dy[(i * g.c_out + o) * p..][..p]);
                    *d = each_sum_f64(planes).sum::<f64>() as f32;
                });
            }
            let fill = |wide: &mut [f32], qr: usize| {
                pool::max_backward_2x2_strided(&pooled, idx, dy, wide, (qr, stride));
            };
            let dw = &mut params[self.weight].1;
            let ran = self.bwd.weight_filled(n, x, &fill, dw);
            debug_assert!(ran, "the wide path was checked when built");
            return;
        }
        let full = &mut self.dy[..n * g.c_out * g.out_h * g.out_w];
        pool::max_backward_2x2(&pooled, idx, dy, full);
        if let Some(dx) = dx {
            self.bwd.input(n, full, &params[self.weight].0.data(), dx);
        }
        let mut db = self.bias.map(|b| std::mem::take(&mut params[b].1));
        let dw = &mut params[self.weight].1;
        self.bwd.weight(n, (x, full), dw, db.as_deref_mut());
        if let (Some(b), Some(db)) = (self.bias, db) {
            params[b].1 = db;
        }
    }
}
