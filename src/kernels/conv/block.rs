//! What the lowerings share: the parallel loop over (image, group, tile) blocks of the output,
//! and the weights packed once per call for a micro-kernel.

use rayon::prelude::*;

use super::Conv2dGeom;
use crate::kernels::gemm::{MatRef, SendPtr};
use crate::kernels::micro::Micro;

/// Reusable per-thread buffers of the lowerings (im2col panels, a block of wide columns, a
/// gathered last panel). They live as long as the worker thread, so after the first call of
/// a given size a convolution allocates nothing for them.
#[derive(Default)]
pub(crate) struct Scratch {
    pub(crate) a: Vec<f32>,
    pub(crate) b: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// Run `f` with this thread's [`Scratch`]. `f` must call no parallel code (a task stolen
/// while it waits could borrow the same scratch).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| f(&mut s.borrow_mut()))
}

pub(crate) use crate::kernels::Epilogue;

/// Run `f(scratch, img, grp, tix, y_block)` for every (image, group, tile) in parallel, with
/// the worker thread's [`Scratch`]. Tile `tix` owns output positions `start(tix)..start(tix + 1)`
/// (`start` must be non-decreasing); `y_block` begins at output channel `grp * cout_g` of image
/// `img`, position `start(tix)`, with the row stride `positions()`, and `f` may write only that
/// group's rows within the tile's positions. With `epi`, each of those rows' tile positions
/// then goes through it.
pub(crate) fn for_each_block(
    g: &Conv2dGeom,
    ntiles: usize,
    start: impl Fn(usize) -> usize + Sync,
    y: &mut [f32],
    epi: Option<Epilogue>,
    f: impl Fn(&mut Scratch, usize, usize, usize, &mut [f32]) + Sync + Send,
) {
    let (p_all, cog, ylen) = (g.positions(), g.cout_g(), y.len());
    let yp = SendPtr(y.as_mut_ptr());
    (0..g.n * g.groups * ntiles)
        .into_par_iter()
        .for_each(|item| {
            let tix = item % ntiles;
            let grp = (item / ntiles) % g.groups;
            let img = item / (ntiles * g.groups);
            let off = (img * g.c_out + grp * cog) * p_all + start(tix);
            let base = yp;
            // SAFETY: item (img, grp, tix) writes rows grp*cog..(grp+1)*cog of image img at the
            // tile's positions only (the contract of `f`, and the epilogue's slices below); tiles
            // own disjoint position ranges, so distinct items never share an element, and
            // off <= y.len().
            let yt = unsafe { std::slice::from_raw_parts_mut(base.0.add(off), ylen - off) };
            // `f` calls no parallel code, so the thread's scratch is never borrowed twice.
            SCRATCH.with(|s| f(&mut s.borrow_mut(), img, grp, tix, yt));
            if let Some(epi) = epi {
                let t = start(tix + 1) - start(tix);
                for o in 0..cog {
                    epi(&mut yt[o * p_all..o * p_all + t]);
                }
            }
        });
}

/// The weights of each group packed for `mk` into `dst` (group `grp` at
/// `grp * packed_a_len`); `dst` keeps its allocation from one call to the next.
pub(crate) fn pack_weights(mk: Micro, g: &Conv2dGeom, w: &[f32], dst: &mut Vec<f32>) {
    let (cog, kd) = (g.cout_g(), g.kdim());
    let alen = mk.packed_a_len(cog, kd);
    dst.clear();
    dst.resize(alen * g.groups, 0.0);
    for (grp, out) in dst.chunks_exact_mut(alen.max(1)).enumerate().take(g.groups) {
        let wg = MatRef::rm(&w[grp * cog * kd..(grp + 1) * cog * kd], kd);
        mk.pack_a_into(cog, kd, wg, out);
    }
}
