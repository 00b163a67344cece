//! Depthwise convolution with stride 1 on the wide grid: each plane is copied once into
//! zero-padded scratch whose rows are `wp` values apart, and the outputs are computed on the
//! same grid, so that every tap is one shifted read of the padded plane (`ki * dil_h * wp +
//! kj * dil_w` further on) and the whole plane is one flat loop in blocks of [`BLOCK`] values
//! held in vector registers. The `wp - out_w` columns at the end of each wide row are
//! computed and dropped (or, for the weight gradient, multiplied by a zeroed dY).
//!
//! Per output value the taps are added in the order of the direct loops (`super::depthwise`),
//! with a multiply and an add (no FMA), so only the sign of an exact zero can differ from them
//! (a tap in the padding adds `w * 0` where the direct loop skips it).

use rayon::prelude::*;

use super::Conv2dGeom;
use super::block::with_scratch;
use crate::kernels::wide_twin;

/// Values per block: four AVX-512 registers, eight AVX2 ones.
const BLOCK: usize = 64;

/// A padded plane and the flat range of wide positions computed on it.
#[derive(Clone, Copy, Debug)]
struct Grid {
    /// Rows and row length of the padded plane.
    hp: usize,
    wp: usize,
    /// Rows and columns of the result (`len = (rows - 1) * wp + cols` wide positions).
    rows: usize,
    cols: usize,
}

impl Grid {
    /// Wide positions computed, a whole number of blocks.
    fn wide_len(&self) -> usize {
        ((self.rows - 1) * self.wp + self.cols).div_ceil(BLOCK) * BLOCK
    }
    /// The padded plane with room for the last block's reads past its end.
    fn padded_len(&self) -> usize {
        self.hp * self.wp + BLOCK
    }
}

/// Kernel taps as `(k_h, k_w, row step, column step)`: tap `(ki, kj)` is read
/// `ki * row step + kj * column step` values further on.
type Taps = (usize, usize, usize, usize);

/// Whether the wide kernels run `g`: a depthwise convolution with stride 1 (others take the
/// direct loops).
pub(super) fn applies(g: &Conv2dGeom) -> bool {
    g.stride_h == 1 && g.stride_w == 1 && g.out_h > 0 && g.out_w > 0 && g.h > 0 && g.w > 0
}

/// The padded input plane of the forward and the weight gradient: input `(r, c)` at
/// `(r + pad_t, c + pad_l)`, outputs `(oh, ow)` at wide position `oh * wp + ow`.
fn input_grid(g: &Conv2dGeom) -> Grid {
    Grid {
        hp: g.out_h + (g.k_h - 1) * g.dil_h,
        wp: g.out_w + (g.k_w - 1) * g.dil_w,
        rows: g.out_h,
        cols: g.out_w,
    }
}

/// The padded dY plane of the input gradient: dY `(oh, ow)` at `(oh + (k_h - 1) * dil_h,
/// ow + (k_w - 1) * dil_w)`; dX `(ih, iw)` at wide position `ih * wp + iw`, reading from
/// `pad_t * wp + pad_l` on.
fn output_grid(g: &Conv2dGeom) -> Grid {
    Grid {
        hp: g.h + g.pad_t + (g.k_h - 1) * g.dil_h,
        wp: g.w + g.pad_l + (g.k_w - 1) * g.dil_w,
        rows: g.h,
        cols: g.w,
    }
}

/// Copy an `h x w` plane into `dst` (zeroed first) at row `top`, column `left` of rows `gr.wp`
/// long, clipped to the grid.
fn pad_into(src: &[f32], h: usize, w: usize, top: usize, left: usize, gr: Grid, dst: &mut [f32]) {
    dst.fill(0.0);
    let n = w.min(gr.wp.saturating_sub(left));
    for r in 0..h.min(gr.hp.saturating_sub(top)) {
        let at = (r + top) * gr.wp + left;
        copy_short(&mut dst[at..at + n], &src[r * w..r * w + n]);
    }
}

/// `out[i] = start[i] + sum over taps of w[tap] * x[base + i + offset(tap)]` for each block,
/// the taps in order (rows descending where `flip`, as the input gradient's direct loop adds
/// them).
#[inline(always)]
fn taps_plain(x: &[f32], base: usize, wk: &[f32], taps: Taps, flip: bool, out: &mut [f32]) {
    let (kh, kw, rs, cs) = taps;
    for (blk, o) in out.chunks_exact_mut(BLOCK).enumerate() {
        let i0 = base + blk * BLOCK;
        let mut acc = [0f32; BLOCK];
        acc.copy_from_slice(o);
        for t in 0..kh {
            let ki = if flip { kh - 1 - t } else { t };
            for kj in 0..kw {
                let wv = wk[ki * kw + kj];
                let off = if flip {
                    t * rs + (kw - 1 - kj) * cs
                } else {
                    ki * rs + kj * cs
                };
                let xs = &x[i0 + off..i0 + off + BLOCK];
                for l in 0..BLOCK {
                    acc[l] += wv * xs[l];
                }
            }
        }
        o.copy_from_slice(&acc);
    }
}

wide_twin! {
    fn taps(x: &[f32], base: usize, wk: &[f32], taps: Taps, flip: bool, out: &mut [f32]) = taps_plain;
}

/// `sum(a[i] * b[i])` over `BLOCK` interleaved partial sums added in a fixed order (`a.len()`
/// a whole number of blocks, `b` at least as long).
#[inline(always)]
fn dot_plain(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; BLOCK];
    for (x, y) in a.chunks_exact(BLOCK).zip(b.chunks_exact(BLOCK)) {
        for l in 0..BLOCK {
            lanes[l] += x[l] * y[l];
        }
    }
    let mut width = BLOCK;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            lanes[l] += lanes[l + width];
        }
    }
    lanes[0]
}

wide_twin! {
    fn dot(a: &[f32], b: &[f32]) -> f32 = dot_plain;
}

/// `dst.copy_from_slice(src)` for the short rows of an image: in inline copies of eight
/// values (the last one overlapping the one before), not a call to `memcpy` per row.
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    let n = dst.len();
    if n < 8 {
        dst.copy_from_slice(src);
        return;
    }
    let mut i = 0;
    while i + 8 < n {
        dst[i..i + 8].copy_from_slice(&src[i..i + 8]);
        i += 8;
    }
    dst[n - 8..].copy_from_slice(&src[n - 8..n]);
}

/// Copy the valid columns of the wide rows out: `rows x cols` values, rows `wp` apart.
fn unwiden(wide: &[f32], gr: Grid, dst: &mut [f32]) {
    for (r, d) in dst.chunks_exact_mut(gr.cols).take(gr.rows).enumerate() {
        copy_short(d, &wide[r * gr.wp..r * gr.wp + gr.cols]);
    }
}

/// Depthwise forward with stride 1 (see [`applies`]).
pub(super) fn forward(g: &Conv2dGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    let (m, hw, kk, p) = (g.cout_g(), g.h * g.w, g.k_h * g.k_w, g.positions());
    let gr = input_grid(g);
    let tp = (g.k_h, g.k_w, g.dil_h * gr.wp, g.dil_w);
    y.par_chunks_mut(p).enumerate().for_each(|(plane, yp)| {
        let (img, o) = (plane / g.c_out, plane % g.c_out);
        let xp = &x[(img * g.c_in + o / m) * hw..][..hw];
        with_scratch(|s| {
            s.a.resize(gr.padded_len(), 0.0);
            s.b.resize(gr.wide_len(), 0.0);
            pad_into(xp, g.h, g.w, g.pad_t, g.pad_l, gr, &mut s.a);
            s.b.fill(bias.map_or(0.0, |b| b[o]));
            taps(&s.a, 0, &w[o * kk..(o + 1) * kk], tp, false, &mut s.b);
            unwiden(&s.b, gr, yp);
        });
    });
}

/// Depthwise input gradient with stride 1 (see [`applies`]).
pub(super) fn backward_input(g: &Conv2dGeom, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let (m, hw, kk, p) = (g.cout_g(), g.h * g.w, g.k_h * g.k_w, g.positions());
    let gr = output_grid(g);
    let (top, left) = ((g.k_h - 1) * g.dil_h, (g.k_w - 1) * g.dil_w);
    let tp = (g.k_h, g.k_w, g.dil_h * gr.wp, g.dil_w);
    let base = g.pad_t * gr.wp + g.pad_l;
    dx.par_chunks_mut(hw).enumerate().for_each(|(plane, dxp)| {
        let (img, c) = (plane / g.c_in, plane % g.c_in);
        with_scratch(|s| {
            s.a.resize(gr.padded_len(), 0.0);
            s.b.resize(gr.wide_len(), 0.0);
            s.b.fill(0.0);
            for o in c * m..(c + 1) * m {
                let dyp = &dy[(img * g.c_out + o) * p..][..p];
                pad_into(dyp, g.out_h, g.out_w, top, left, gr, &mut s.a);
                taps(&s.a, base, &w[o * kk..(o + 1) * kk], tp, true, &mut s.b);
            }
            unwiden(&s.b, gr, dxp);
        });
    });
}

/// Depthwise weight gradient with stride 1 (see [`applies`]; `dw` fully overwritten). Each
/// tap's sum over one image is a dot product of the wide dY (its extra columns zero) with the
/// padded input shifted by the tap; the images' sums are added in f64.
pub(super) fn backward_weight(g: &Conv2dGeom, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let (m, hw, kk, p) = (g.cout_g(), g.h * g.w, g.k_h * g.k_w, g.positions());
    let gr = input_grid(g);
    dw.par_chunks_mut(kk).enumerate().for_each(|(o, dwk)| {
        with_scratch(|s| {
            s.a.resize(gr.padded_len(), 0.0);
            s.b.resize(gr.wide_len(), 0.0);
            let mut acc = vec![0f64; kk];
            for img in 0..g.n {
                let xp = &x[(img * g.c_in + o / m) * hw..][..hw];
                let dyp = &dy[(img * g.c_out + o) * p..][..p];
                pad_into(xp, g.h, g.w, g.pad_t, g.pad_l, gr, &mut s.a);
                let wide_dy = Grid { hp: gr.rows, ..gr };
                pad_into(dyp, g.out_h, g.out_w, 0, 0, wide_dy, &mut s.b);
                for ki in 0..g.k_h {
                    for kj in 0..g.k_w {
                        let off = ki * g.dil_h * gr.wp + kj * g.dil_w;
                        acc[ki * g.k_w + kj] += dot(&s.b, &s.a[off..]) as f64;
                    }
                }
            }
            for (d, a) in dwk.iter_mut().zip(acc.iter()) {
                *d = *a as f32;
            }
        });
    });
}
