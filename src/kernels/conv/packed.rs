//! Strided convolutions through the micro-kernel: each tile of output positions lowered by
//! im2col straight into packed panels.

use super::Conv2dGeom;
use super::block::{for_each_block, pack_weights};
use super::im2col::im2col_tile;
use crate::kernels::micro::{Micro, Store};

/// Forward through the packed micro-kernel: weights packed once, each tile of output positions
/// lowered by im2col straight into B panels, one kernel call per (row block, panel).
pub(crate) fn forward(
    mk: Micro,
    g: &Conv2dGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let p_all = g.positions();
    let (cig, cog, kd) = (g.cin_g(), g.cout_g(), g.kdim());
    let hw = g.h * g.w;
    let alen = mk.packed_a_len(cog, kd);
    let wp = pack_weights(mk, g, w);
    let offs = mk.packed_offsets(kd);
    let tile = (g.tile() / mk.nr).max(1) * mk.nr;
    let ntiles = p_all.div_ceil(tile).max(1);
    let start = |tix: usize| (tix * tile).min(p_all);
    for_each_block(
        g,
        ntiles,
        start,
        y,
        Vec::new,
        |col: &mut Vec<f32>, img, grp, tix, yt| {
            let (p0, p1) = (start(tix), start(tix + 1));
            let t = p1 - p0;
            let xg = &x[(img * g.c_in + grp * cig) * hw..(img * g.c_in + (grp + 1) * cig) * hw];
            let store = bias.map_or(Store::Replace, |b| Store::Bias(&b[grp * cog..]));
            let panels = t.div_ceil(mk.nr);
            col.resize(panels * kd * mk.nr, 0.0);
            im2col_tile(g, xg, p0, p1, mk.nr, col);
            let wg = &wp[grp * alen..(grp + 1) * alen];
            for q in 0..panels {
                let cols = mk.nr.min(t - q * mk.nr);
                let bq = &col[q * kd * mk.nr..(q + 1) * kd * mk.nr];
                mk.panel(
                    cog,
                    kd,
                    wg,
                    bq,
                    &offs,
                    &mut yt[q * mk.nr..],
                    p_all,
                    cols,
                    store,
                );
            }
        },
    );
}
