//! The input gradient of a strided convolution (the forward of a strided transposed
//! convolution) as `stride_h * stride_w` stride-1 convolutions of dY, one per phase.
//!
//! Input row `ih` takes dY row `oh` through kernel row `ki` where `oh * s + ki - pad = ih`: the
//! rows of one phase `a = ih mod s` take only the kernel rows `ki = r + j * s` with `r = (a +
//! pad) mod s`, and for them `oh = c0 + t - j` (`ih = a + s * t`, `c0 = (a + pad - r) / s`).
//! So the phase is a stride-1 correlation of dY with those `J` kernel rows in reverse order,
//! padded by `J - 1 - c0` on top (where that is negative, its first `c0 - J + 1` outputs are
//! computed and dropped instead); the same for columns. Each phase runs on the implicit
//! lowering (no lowered matrix, no col2im, no output written twice), and its rows and
//! columns are then spread into every `s`-th position of dX.

use rayon::prelude::*;

use super::Conv2dGeom;
use super::implicit::{self, Implicit};
use crate::kernels::micro::Micro;

/// One phase: where its outputs go in dX, the kernel taps it takes, and its convolution.
struct Phase {
    rows: Axis,
    cols: Axis,
    /// The stride-1 convolution of dY; `None` where the phase takes no tap (its dX is zero).
    conv: Option<(Conv2dGeom, Implicit)>,
}

/// One axis of a phase.
#[derive(Clone, Copy)]
struct Axis {
    /// First position of dX (then every stride-th), and how many.
    first: usize,
    outs: usize,
    /// Kernel taps taken (from `tap0`, every stride-th).
    taps: usize,
    tap0: usize,
    /// The phase convolution's padding before dY, and its outputs computed and dropped before
    /// the first one kept (where the first kept output reads past the padding into dY).
    pad: usize,
    skip: usize,
    /// Outputs the phase convolution computes: enough to keep `outs` after `skip`, and to
    /// read every row of dY (the implicit lowering takes no negative padding at the end).
    total: usize,
}

/// The phase of an axis starting at dX position `a` (`n` positions, kernel `k`, stride `s`,
/// padding `pad`, `n_dy` positions of dY).
fn axis(a: usize, n: usize, k: usize, s: usize, pad: usize, n_dy: usize) -> Axis {
    let outs = n.saturating_sub(a).div_ceil(s);
    let tap0 = (a + pad) % s;
    let taps = if tap0 < k { (k - tap0).div_ceil(s) } else { 0 };
    // output t reads dY at t + c0 - j for tap j
    let c0 = (a + pad - tap0) / s;
    let (pad, skip) = match taps.checked_sub(1) {
        None => (0, 0),
        Some(last) if c0 <= last => (last - c0, 0),
        Some(last) => (0, c0 - last),
    };
    let total = (outs + skip).max((n_dy + pad + 1).saturating_sub(taps));
    Axis {
        first: a,
        outs,
        taps,
        tap0,
        pad,
        skip,
        total,
    }
}

/// The phases of `g`, or `None` where this lowering does not take it (stride 1, dilation,
/// or a phase whose convolution the implicit lowering cannot run).
fn phases(g: &Conv2dGeom) -> Option<Vec<Phase>> {
    let (sh, sw) = (g.stride_h, g.stride_w);
    if (sh == 1 && sw == 1) || g.dil_h != 1 || g.dil_w != 1 {
        return None;
    }
    let mut out = Vec::with_capacity(sh * sw);
    for a in 0..sh {
        let rows = axis(a, g.h, g.k_h, sh, g.pad_t, g.out_h);
        for b in 0..sw {
            let cols = axis(b, g.w, g.k_w, sw, g.pad_l, g.out_w);
            let conv = if rows.taps == 0 || cols.taps == 0 {
                None
            } else {
                let gp = Conv2dGeom {
                    n: g.n,
                    c_in: g.c_out,
                    h: g.out_h,
                    w: g.out_w,
                    c_out: g.c_in,
                    k_h: rows.taps,
                    k_w: cols.taps,
                    stride_h: 1,
                    stride_w: 1,
                    pad_t: rows.pad,
                    pad_l: cols.pad,
                    dil_h: 1,
                    dil_w: 1,
                    groups: g.groups,
                    out_h: rows.total,
                    out_w: cols.total,
                };
                Some((gp, Implicit::of(&gp)?))
            };
            out.push(Phase { rows, cols, conv });
        }
    }
    Some(out)
}

/// `dx` from `dy` and `w` as [`super::conv2d_backward_input`], phase by phase; returns false,
/// writing nothing, where this lowering does not take `g`.
pub(crate) fn backward_input(
    mk: Micro,
    g: &Conv2dGeom,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
) -> bool {
    let Some(phases) = phases(g) else {
        return false;
    };
    let (hw, planes) = (g.h * g.w, g.n * g.c_in);
    let outs: Vec<Option<Vec<f32>>> = phases
        .iter()
        .map(|ph| {
            let (gp, im) = ph.conv.as_ref()?;
            let wp = phase_weights(g, ph, gp, w);
            let mut y = vec![0f32; planes * gp.positions()];
            implicit::forward(mk, gp, im, dy, &wp, None, &mut y);
            Some(y)
        })
        .collect();
    dx[..planes * hw]
        .par_chunks_mut(hw)
        .enumerate()
        .for_each(|(plane, d)| {
            for (ph, y) in phases.iter().zip(&outs) {
                let (r, c) = (ph.rows, ph.cols);
                let Some(((gp, _), y)) = ph.conv.as_ref().zip(y.as_ref()) else {
                    for ih in (r.first..g.h).step_by(g.stride_h) {
                        for iw in (c.first..g.w).step_by(g.stride_w) {
                            d[ih * g.w + iw] = 0.0;
                        }
                    }
                    continue;
                };
                let src = &y[plane * gp.positions()..(plane + 1) * gp.positions()];
                let kept = src.chunks_exact(gp.out_w).skip(r.skip).take(r.outs);
                for (t, row) in kept.enumerate() {
                    let drow = &mut d[(r.first + t * g.stride_h) * g.w..][..g.w];
                    for (s, &v) in row[c.skip..c.skip + c.outs].iter().enumerate() {
                        drow[c.first + s * g.stride_w] = v;
                    }
                }
            }
        });
    true
}

/// The weights of one phase's convolution, `(c_in, c_out / groups, J_h, J_w)`: tap `(u, v)`
/// is kernel tap `(r_h + (J_h - 1 - u) * s_h, r_w + (J_w - 1 - v) * s_w)`, the channel axes
/// swapped within each group.
fn phase_weights(g: &Conv2dGeom, ph: &Phase, gp: &Conv2dGeom, w: &[f32]) -> Vec<f32> {
    let (cig, cog) = (g.cin_g(), g.cout_g());
    let (jh, jw) = (gp.k_h, gp.k_w);
    let mut out = vec![0f32; g.c_in * cog * jh * jw];
    for grp in 0..g.groups {
        for ci in 0..cig {
            for co in 0..cog {
                for u in 0..jh {
                    for v in 0..jw {
                        let ki = ph.rows.tap0 + (jh - 1 - u) * g.stride_h;
                        let kj = ph.cols.tap0 + (jw - 1 - v) * g.stride_w;
                        let src = (((grp * cog + co) * cig + ci) * g.k_h + ki) * g.k_w + kj;
                        let dst = (((grp * cig + ci) * cog + co) * jh + u) * jw + v;
                        out[dst] = w[src];
                    }
                }
            }
        }
    }
    out
}
