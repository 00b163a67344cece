//! What the lowerings share: the parallel loop over (image, group, tile) blocks of the output,
//! and the weights packed once per call for a micro-kernel.

use rayon::prelude::*;

use super::Conv2dGeom;
use crate::kernels::gemm::{MatRef, SendPtr};
use crate::kernels::micro::Micro;

/// Run `f(scratch, img, grp, tix, y_block)` for every (image, group, tile) in parallel, with
/// per-thread scratch from `init`. Tile `tix` owns output positions `start(tix)..start(tix + 1)`
/// (`start` must be non-decreasing); `y_block` begins at output channel `grp * cout_g` of image
/// `img`, position `start(tix)`, with the row stride `positions()`, and `f` may write only that
/// group's rows within the tile's positions.
pub(crate) fn for_each_block<S>(
    g: &Conv2dGeom,
    ntiles: usize,
    start: impl Fn(usize) -> usize + Sync,
    y: &mut [f32],
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, usize, usize, &mut [f32]) + Sync + Send,
) {
    let (p_all, cog, ylen) = (g.positions(), g.cout_g(), y.len());
    let yp = SendPtr(y.as_mut_ptr());
    (0..g.n * g.groups * ntiles)
        .into_par_iter()
        .for_each_init(init, |scratch, item| {
            let tix = item % ntiles;
            let grp = (item / ntiles) % g.groups;
            let img = item / (ntiles * g.groups);
            let off = (img * g.c_out + grp * cog) * p_all + start(tix);
            let base = yp;
            // SAFETY: item (img, grp, tix) writes rows grp*cog..(grp+1)*cog of image img at the
            // tile's positions only (the contract of `f`); tiles own disjoint position ranges, so
            // distinct items never share an element, and off <= y.len().
            let yt = unsafe { std::slice::from_raw_parts_mut(base.0.add(off), ylen - off) };
            f(scratch, img, grp, tix, yt);
        });
}

/// The weights of each group packed once for `mk` (group `grp` at `grp * packed_a_len`).
pub(crate) fn pack_weights(mk: Micro, g: &Conv2dGeom, w: &[f32]) -> Vec<f32> {
    let (cog, kd) = (g.cout_g(), g.kdim());
    let alen = mk.packed_a_len(cog, kd);
    let mut packed = Vec::with_capacity(alen * g.groups);
    let mut one = Vec::new();
    for grp in 0..g.groups {
        mk.pack_a(
            cog,
            kd,
            MatRef::rm(&w[grp * cog * kd..(grp + 1) * cog * kd], kd),
            &mut one,
        );
        packed.extend_from_slice(&one);
    }
    packed
}
