//! Strided convolutions through the micro-kernel: each tile of output positions lowered by
//! im2col straight into packed panels.

use super::Conv2dGeom;
use super::block::{Epilogue, Scratch, for_each_block, pack_weights};
use super::im2col::im2col_tile;
use crate::kernels::micro::{Micro, Store};

/// A lowered forward prepared once for a geometry and a micro-kernel: the tile size, the
/// panel row offsets and (after [`PackedForward::set_weights`]) the packed weights.
pub(crate) struct PackedForward {
    mk: Micro,
    offs: Vec<usize>,
    wp: Vec<f32>,
    tile: usize,
}

impl PackedForward {
    pub(crate) fn new(mk: Micro, g: &Conv2dGeom) -> PackedForward {
        PackedForward {
            mk,
            offs: mk.packed_offsets(g.kdim()),
            wp: Vec::new(),
            tile: (g.tile() / mk.nr).max(1) * mk.nr,
        }
    }

    pub(crate) fn set_weights(&mut self, g: &Conv2dGeom, w: &[f32]) {
        pack_weights(self.mk, g, w, &mut self.wp);
    }

    /// `y = conv(x) + bias`, then `epi` on each finished block: weights packed once, each
    /// tile of output positions lowered by im2col straight into B panels, one kernel call per
    /// (row block, panel).
    pub(crate) fn run(
        &self,
        g: &Conv2dGeom,
        x: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
        epi: Option<Epilogue>,
    ) {
        let (mk, tile) = (self.mk, self.tile);
        let p_all = g.positions();
        let (cig, cog, kd) = (g.cin_g(), g.cout_g(), g.kdim());
        let hw = g.h * g.w;
        let alen = mk.packed_a_len(cog, kd);
        let ntiles = p_all.div_ceil(tile).max(1);
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
                let store = bias.map_or(Store::Replace, |b| Store::Bias(&b[grp * cog..]));
                let panels = t.div_ceil(mk.nr);
                col.resize(panels * kd * mk.nr, 0.0);
                im2col_tile(g, xg, p0, p1, mk.nr, col);
                let wg = &self.wp[grp * alen..(grp + 1) * alen];
                for q in 0..panels {
                    let cols = mk.nr.min(t - q * mk.nr);
                    let bq = &col[q * kd * mk.nr..(q + 1) * kd * mk.nr];
                    let c = &mut yt[q * mk.nr..];
                    mk.panel(cog, kd, wg, bq, &self.offs, c, p_all, cols, store);
                }
            },
        );
    }
}

/// Forward through the packed micro-kernel (see [`PackedForward::run`]).
pub(crate) fn forward(
    mk: Micro,
    g: &Conv2dGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let mut f = PackedForward::new(mk, g);
    f.set_weights(g, w);
    f.run(g, x, bias, y, None);
}
