//! The fallback for CPUs without a micro-kernel (and a few shapes where its register block
//! would be mostly empty): tiles of output positions lowered by im2col, multiplied through
//! `matrixmultiply`; col2im for the input gradient.

use rayon::prelude::*;

use super::Conv2dGeom;
use super::block::{Epilogue, Scratch, for_each_block};
use super::im2col::{col2im_tile, im2col_tile};
use crate::kernels::gemm::{MatRef, sgemm};

/// Forward convolution (see [`super::conv2d_forward`]), then `epi` on each finished block.
pub(crate) fn forward(
    g: &Conv2dGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    epi: Option<Epilogue>,
) {
    let p_all = g.positions();
    let tile = g.tile();
    let ntiles = p_all.div_ceil(tile).max(1);
    let (cig, cog, kd) = (g.cin_g(), g.cout_g(), g.kdim());
    let hw = g.h * g.w;
    let start = |tix: usize| (tix * tile).min(p_all);
    for_each_block(
        g,
        ntiles,
        start,
        y,
        epi,
        |s: &mut Scratch, img, grp, tix, yt| {
            let col = &mut s.a;
            let (p0, p1) = (start(tix), start(tix + 1));
            let t = p1 - p0;
            let xg = &x[(img * g.c_in + grp * cig) * hw..(img * g.c_in + (grp + 1) * cig) * hw];
            for o in 0..cog {
                let b = bias.map_or(0.0, |b| b[grp * cog + o]);
                yt[o * p_all..o * p_all + t].fill(b);
            }
            let wg = MatRef::rm(&w[grp * cog * kd..(grp + 1) * cog * kd], kd);
            if g.is_pointwise() {
                let xm = MatRef {
                    data: &xg[p0..],
                    rs: p_all,
                    cs: 1,
                };
                sgemm(cog, kd, t, wg, xm, 1.0, yt, p_all);
            } else {
                col.resize(kd * t, 0.0);
                im2col_tile(g, xg, p0, p1, t, col);
                sgemm(cog, kd, t, wg, MatRef::rm(col, t), 1.0, yt, p_all);
            }
        },
    );
}

/// Input gradient (see [`super::conv2d_backward_input`]).
pub(crate) fn backward_input(g: &Conv2dGeom, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let p_all = g.positions();
    let tile = g.tile();
    let (cig, cog, kd) = (g.cin_g(), g.cout_g(), g.kdim());
    let hw = g.h * g.w;
    // One chunk per (image, group): disjoint input channels, so chunks never overlap.
    dx.par_chunks_mut(cig * hw).enumerate().for_each_init(
        Vec::new,
        |col: &mut Vec<f32>, (chunk, dxg)| {
            let img = chunk / g.groups;
            let grp = chunk % g.groups;
            let wt = MatRef::rm_t(&w[grp * cog * kd..(grp + 1) * cog * kd], kd);
            let dyg =
                &dy[(img * g.c_out + grp * cog) * p_all..(img * g.c_out + (grp + 1) * cog) * p_all];
            if g.is_pointwise() {
                sgemm(kd, cog, p_all, wt, MatRef::rm(dyg, p_all), 0.0, dxg, p_all);
                return;
            }
            dxg.fill(0.0);
            let mut p0 = 0;
            while p0 < p_all {
                let p1 = (p0 + tile).min(p_all);
                let t = p1 - p0;
                col.resize(kd * t, 0.0);
                let dym = MatRef {
                    data: &dyg[p0..],
                    rs: p_all,
                    cs: 1,
                };
                sgemm(kd, cog, t, wt, dym, 0.0, col, t);
                col2im_tile(g, col, p0, p1, dxg);
                p0 = p1;
            }
        },
    );
}

/// Number of batch chunks whose weight gradients are summed in a fixed order: independent of
/// the thread count, so results are bit-identical whatever the number of threads.
const WEIGHT_GRAD_CHUNKS: usize = 8;

/// Weight gradient, summed over [`WEIGHT_GRAD_CHUNKS`] batch chunks in a fixed order (see
/// [`super::conv2d_backward_weight`]).
pub(crate) fn backward_weight(g: &Conv2dGeom, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let p_all = g.positions();
    let tile = g.tile();
    let (cig, cog, kd) = (g.cin_g(), g.cout_g(), g.kdim());
    let hw = g.h * g.w;
    let chunks = WEIGHT_GRAD_CHUNKS.min(g.n).max(1);
    let per = g.n.div_ceil(chunks);
    let partials: Vec<Vec<f32>> = (0..chunks)
        .into_par_iter()
        .map(|ch| {
            let mut acc = vec![0f32; dw.len()];
            let mut col = Vec::new();
            for img in ch * per..((ch + 1) * per).min(g.n) {
                for grp in 0..g.groups {
                    let xg =
                        &x[(img * g.c_in + grp * cig) * hw..(img * g.c_in + (grp + 1) * cig) * hw];
                    let dyg = &dy[(img * g.c_out + grp * cog) * p_all..];
                    let accg = &mut acc[grp * cog * kd..(grp + 1) * cog * kd];
                    let mut p0 = 0;
                    while p0 < p_all {
                        let p1 = (p0 + tile).min(p_all);
                        let t = p1 - p0;
                        let dym = MatRef {
                            data: &dyg[p0..],
                            rs: p_all,
                            cs: 1,
                        };
                        if g.is_pointwise() {
                            let xt = MatRef {
                                data: &xg[p0..],
                                rs: 1,
                                cs: p_all,
                            };
                            sgemm(cog, t, kd, dym, xt, 1.0, accg, kd);
                        } else {
                            col.resize(kd * t, 0.0);
                            im2col_tile(g, xg, p0, p1, t, &mut col);
                            sgemm(cog, t, kd, dym, MatRef::rm_t(&col, t), 1.0, accg, kd);
                        }
                        p0 = p1;
                    }
                }
            }
            acc
        })
        .collect();
    dw.copy_from_slice(&partials[0]);
    for p in &partials[1..] {
        for (a, b) in dw.iter_mut().zip(p) {
            *a += *b;
        }
    }
}
