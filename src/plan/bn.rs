//! A training-time batch norm as one step of a training plan: batch statistics, the running
//! statistics' update, the affine map and the elementwise activation after it, and, where a
//! 2x2 stride-2 max pooling follows, that pooling too. Pooled, the forward normalises each
//! plane into the worker's scratch and pools it while it is in cache, keeping the pooled
//! values and each maximum's position in its window (one byte): the normalised activations,
//! four times the pooled size, are never written. Backward applies the activation's
//! derivative to the pooled gradient (the pooled values are its outputs at the maxima),
//! spreads it to the positions kept and runs the batch norm's backward on that: the values of
//! the separate batch-norm and pooling steps, bit for bit.

use rayon::prelude::*;

use super::train::through_act;
use crate::kernels::conv::with_scratch;
use crate::kernels::pool::{self, Pool2dGeom};
use crate::nn::BatchNorm;
use crate::ops::Pointwise;
use crate::ops::norm::{
    BnSaved, affine_plane, affine_planes, batch_norm_backward, batch_stats, inv_std, scale_shift,
    update_running,
};
use crate::tensor::Tensor;

/// The 2x2 max pooling a batch norm step takes in, with what its backward keeps.
pub(super) struct Pooled {
    /// The pooling at the largest batch.
    pub(super) geom: Pool2dGeom,
    /// Each pooled value's position in its window (0 to 3, in scan order).
    idx: Vec<u8>,
    /// The gradient of the batch norm's output, spread from the pooled gradient.
    dy: Vec<f32>,
}

impl Pooled {
    pub(super) fn new(geom: Pool2dGeom) -> Pooled {
        Pooled {
            idx: vec![0; geom.planes() * geom.out_h * geom.out_w],
            dy: vec![0.0; geom.planes() * geom.h * geom.w],
            geom,
        }
    }

    /// Values it keeps: the positions (a quarter of a value each) and the full gradient.
    pub(super) fn buffer_len(geom: &Pool2dGeom) -> u64 {
        let pooled = crate::nn::count(&[geom.n, geom.c, geom.out_h, geom.out_w]);
        let full = crate::nn::count(&[geom.n, geom.c, geom.h, geom.w]);
        (pooled / 4).saturating_add(full)
    }
}

pub(super) struct BnStep {
    pub(super) bn: BatchNorm,
    pub(super) weight: usize,
    pub(super) bias: usize,
    pub(super) act: Option<Pointwise>,
    /// Values per channel and sample (`h * w` of an image).
    pub(super) inner: usize,
    pub(super) pooled: Option<Pooled>,
    mean: Vec<f32>,
    var: Vec<f64>,
    invstd: Vec<f32>,
    scale: Vec<f32>,
    shift: Vec<f32>,
    sums: Vec<(f64, f64)>,
}

impl BnStep {
    pub(super) fn new(
        bn: &BatchNorm,
        (weight, bias): (usize, usize),
        act: Option<Pointwise>,
        inner: usize,
        pool: Option<Pool2dGeom>,
    ) -> BnStep {
        let c = bn.channels;
        BnStep {
            bn: bn.clone(),
            weight,
            bias,
            act,
            inner,
            pooled: pool.map(Pooled::new),
            mean: vec![0.0; c],
            var: vec![0.0; c],
            invstd: vec![0.0; c],
            scale: vec![0.0; c],
            shift: vec![0.0; c],
            sums: vec![(0.0, 0.0); c],
        }
    }

    /// The forward in training mode on the `n` samples of `x` into `y` (pooled, where the
    /// step pools).
    pub(super) fn forward(
        &mut self,
        params: &[(Tensor, Vec<f32>)],
        n: usize,
        x: &[f32],
        y: &mut [f32],
    ) {
        let (c, inner) = (self.bn.channels, self.inner);
        let m = batch_stats(x, (n, c, inner), &mut self.mean, &mut self.var);
        for (is, &v) in self.invstd.iter_mut().zip(&self.var) {
            *is = inv_std(v, self.bn.eps);
        }
        update_running(
            &mut self.bn.running_mean.data_mut(),
            &mut self.bn.running_var.data_mut(),
            &self.mean,
            &self.var,
            self.bn.momentum,
            m,
        );
        let (w, b) = (params[self.weight].0.data(), params[self.bias].0.data());
        scale_shift(
            &w,
            &b,
            &self.mean,
            &self.invstd,
            &mut self.scale,
            &mut self.shift,
        );
        let ab = (&self.scale[..], &self.shift[..]);
        match &mut self.pooled {
            None => affine_planes(x, y, ab, inner, self.act),
            Some(p) => pool_planes(&Pool2dGeom { n, ..p.geom }, x, y, &mut p.idx, ab, self.act),
        }
    }

    /// Backward from `dy`, the gradient of the output `y` (pooled, where the step pools): the
    /// input gradient into `dx` (where wanted) and the weight's and bias's gradients;
    /// `act_applied`: the next step applied the activation's derivative already.
    pub(super) fn backward(
        &mut self,
        params: &mut [(Tensor, Vec<f32>)],
        n: usize,
        (x, y): (&[f32], &[f32]),
        (dy, dx): (&mut [f32], Option<&mut [f32]>),
        act_applied: bool,
    ) {
        through_act(self.act.filter(|_| !act_applied), y, dy);
        let gd: &[f32] = match &mut self.pooled {
            None => dy,
            Some(p) => {
                let g = Pool2dGeom { n, ..p.geom };
                let full = &mut p.dy[..g.planes() * g.h * g.w];
                pool::max_backward_2x2(&g, &p.idx[..dy.len()], dy, full);
                full
            }
        };
        let w = params[self.weight].0.data();
        let saved = BnSaved {
            mean: &self.mean,
            invstd: &self.invstd,
            weight: &w,
            batch: true,
        };
        let mut scratch;
        let dxs = match dx {
            Some(d) => d,
            None => {
                scratch = vec![0f32; gd.len()];
                &mut scratch[..]
            }
        };
        let dims = (n, self.bn.channels, self.inner);
        batch_norm_backward(gd, x, dims, &saved, &mut self.sums, dxs);
        drop(w);
        for (ch, &(sg, sgx)) in self.sums.iter().enumerate() {
            params[self.weight].1[ch] = sgx as f32;
            params[self.bias].1[ch] = sg as f32;
        }
    }
}

/// `y = pool(act(x * scale[ch] + shift[ch]))` over the planes of `g` (channel `plane % c`),
/// each plane normalised into the worker's scratch and pooled from there; `idx` gets each
/// maximum's position in its window.
fn pool_planes(
    g: &Pool2dGeom,
    x: &[f32],
    y: &mut [f32],
    idx: &mut [u8],
    (scale, shift): (&[f32], &[f32]),
    act: Option<Pointwise>,
) {
    let (c, inner, p) = (scale.len(), g.h * g.w, g.out_h * g.out_w);
    let (y, idx) = (&mut y[..g.planes() * p], &mut idx[..g.planes() * p]);
    y.par_chunks_mut(p)
        .zip(idx.par_chunks_mut(p))
        .enumerate()
        .for_each(|(plane, (yp, ip))| {
            let xp = &x[plane * inner..][..inner];
            with_scratch(|s| {
                s.a.resize(inner, 0.0);
                let full = &mut s.a[..inner];
                affine_plane(xp, full, (scale[plane % c], shift[plane % c]), act);
                pool::max_pool_block_argmax(full, (g.h, g.w, g.w), yp, ip);
            });
        });
}
