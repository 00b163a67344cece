//! Stride-1 convolutions without lowering: the zero-padded input read in place through
//! per-tap row offsets (forward, and the input gradient as a convolution of dY with flipped
//! weights); the weight gradient over the same layout is in `wgrad`.

use rayon::prelude::*;

use super::Conv2dGeom;
use super::block::{Epilogue, Scratch, for_each_block, pack_weights};
use super::chanvec::{ChanVec, Layout};
use crate::kernels::micro::{Micro, Store};

/// The layout of a stride-1 convolution lowered implicitly. With the input zero-padded to
/// `hp x wp` per channel, output `(oh, ow)` reads tap `(c, ki, kj)` at
/// `c * hp * wp + (oh + ki * dil_h) * wp + ow + kj * dil_w`: a fixed offset per tap plus
/// `oh * wp + ow`. So over "wide" positions `q = oh * wq + ow` (`wq = wp`, the columns
/// `ow >= out_w` computed and dropped) every row of the lowered matrix is a contiguous run of
/// the padded input, and the micro-kernel reads it in place. A single output row needs no
/// wide columns (`wq = out_w`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Implicit {
    hp: usize,
    wp: usize,
    wq: usize,
    /// Wide positions: `(out_h - 1) * wq + out_w`.
    q_all: usize,
}

impl Implicit {
    pub(crate) fn of(g: &Conv2dGeom) -> Option<Implicit> {
        if g.stride_h != 1 || g.stride_w != 1 || g.positions() == 0 {
            return None;
        }
        let hp = g.out_h + (g.k_h - 1) * g.dil_h;
        let wp = g.out_w + (g.k_w - 1) * g.dil_w;
        if hp < g.h + g.pad_t || wp < g.w + g.pad_l {
            return None;
        }
        let wq = if g.out_h == 1 { g.out_w } else { wp };
        Some(Implicit {
            hp,
            wp,
            wq,
            q_all: (g.out_h - 1) * wq + g.out_w,
        })
    }

    /// Values per padded input plane.
    pub(crate) fn plane(&self) -> usize {
        self.hp * self.wp
    }

    /// Wide positions: `(out_h - 1) * wq + out_w`.
    pub(crate) fn q_all(&self) -> usize {
        self.q_all
    }

    /// Values of the padded input of `g`, saturating (for memory estimates).
    pub(crate) fn padded_values(&self, g: &Conv2dGeom) -> u64 {
        crate::nn::count(&[g.n, g.c_in, self.hp, self.wp])
    }

    /// Distance between output rows in the wide layout.
    pub(crate) fn row_stride(&self) -> usize {
        self.wq
    }

    /// Offset of each tap `(c, ki, kj)` (in lowered-row order) from a group's first plane.
    fn offsets(&self, g: &Conv2dGeom) -> Vec<usize> {
        let mut offs = Vec::with_capacity(g.kdim());
        self.offsets_into(g, &mut offs);
        offs
    }

    /// [`Self::offsets`] into `offs` (kept between calls).
    pub(crate) fn offsets_into(&self, g: &Conv2dGeom, offs: &mut Vec<usize>) {
        offs.clear();
        for c in 0..g.cin_g() {
            for ki in 0..g.k_h {
                for kj in 0..g.k_w {
                    offs.push(c * self.plane() + ki * g.dil_h * self.wp + kj * g.dil_w);
                }
            }
        }
    }

    /// The input needs no padding: it is read in place.
    pub(crate) fn in_place(&self, g: &Conv2dGeom) -> bool {
        self.hp == g.h && self.wp == g.w && g.pad_t == 0 && g.pad_l == 0
    }

    /// Length of the padded input of `g` with `slack` values after the last plane.
    pub(crate) fn padded_len(&self, g: &Conv2dGeom, slack: usize) -> usize {
        g.n * g.c_in * self.plane() + slack
    }

    /// The input of every image zero-padded to `hp x wp` planes, with `slack` zeros after the
    /// last plane for the reads of the last panel past the end. Each value is written once
    /// (zeros at the borders, the input inside), in parallel over planes: no pass that zeroes
    /// the whole buffer first.
    fn pad(&self, g: &Conv2dGeom, x: &[f32], slack: usize) -> Vec<f32> {
        use std::mem::MaybeUninit;
        let (hw, plane, planes) = (g.h * g.w, self.plane(), g.n * g.c_in);
        let len = self.padded_len(g, slack);
        if hw == 0 {
            return vec![0.0; len];
        }
        let zero = MaybeUninit::new(0f32);
        let mut xp: Vec<f32> = Vec::with_capacity(len);
        let spare = &mut xp.spare_capacity_mut()[..len];
        let (body, tail) = spare.split_at_mut(planes * plane);
        body.par_chunks_mut(plane.max(1))
            .zip(x[..planes * hw].par_chunks(hw.max(1)))
            .for_each(|(dst, src)| {
                let (top, rest) = dst.split_at_mut(g.pad_t * self.wp);
                top.fill(zero);
                let (rows, bottom) = rest.split_at_mut(g.h * self.wp);
                for (d, s) in rows.chunks_exact_mut(self.wp).zip(src.chunks_exact(g.w)) {
                    let (left, d) = d.split_at_mut(g.pad_l);
                    left.fill(zero);
                    for (o, &v) in d.iter_mut().zip(s) {
                        o.write(v);
                    }
                    d[g.w..].fill(zero);
                }
                bottom.fill(zero);
            });
        tail.fill(zero);
        // SAFETY: every one of the `len` values was written above: the `planes` planes (as
        // many as `x` has chunks of `hw > 0`), each as its top rows, its `h` rows (left
        // border, the input's row, right border) and its bottom rows, together `hp * wp`
        // values (`hp >= pad_t + h` and `wp >= pad_l + w`, as `Implicit::of` checked); then
        // the slack after the last plane.
        unsafe { xp.set_len(len) };
        xp
    }

    /// Copy the `g.n` images of `x` into the interiors of the padded planes of `xp`. The
    /// borders are not written: `xp` must hold zeros there (a buffer zeroed once and reused
    /// for the same geometry keeps them).
    pub(crate) fn pad_into(&self, g: &Conv2dGeom, x: &[f32], xp: &mut [f32]) {
        let (hw, plane) = (g.h * g.w, self.plane());
        let planes = g.n * g.c_in;
        xp[..planes * plane]
            .par_chunks_mut(plane)
            .zip(x[..planes * hw].par_chunks(hw))
            .for_each(|(dst, src)| {
                for (ih, row) in src.chunks_exact(g.w).enumerate() {
                    let at = (ih + g.pad_t) * self.wp + g.pad_l;
                    dst[at..at + g.w].copy_from_slice(row);
                }
            });
    }
}

/// A stride-1 forward prepared once for a geometry and a micro-kernel: the tap offsets, the
/// tile size and (after [`ImplicitForward::set_weights`]) the packed weights, so that running
/// it on a batch allocates nothing.
pub(crate) struct ImplicitForward {
    mk: Micro,
    im: Implicit,
    offs: Vec<usize>,
    packed_offs: Vec<usize>,
    wp: Vec<f32>,
    tile: usize,
    /// The channel-vector kernel and its packed weights, where it runs this geometry.
    cv: Option<(ChanVec, Vec<f32>)>,
    /// [`Self::run_banded`] hands on its bands channels last (see
    /// [`Self::bands_channels_last`]).
    channels_last: bool,
}

impl ImplicitForward {
    pub(crate) fn new(mk: Micro, g: &Conv2dGeom, im: Implicit) -> ImplicitForward {
        let cog = g.cout_g();
        // a tile's output block (cog x tile) stays within 128 KiB
        let tile = ((32_768 / cog.max(1)) / mk.nr).max(1) * mk.nr;
        let tile = tile.min(im.q_all.next_multiple_of(mk.nr));
        // the share of the micro-kernel's columns that are outputs: the rest are wide
        // columns and the unused columns of each tile's last panel
        let computed = im.q_all / tile * tile + (im.q_all % tile).next_multiple_of(mk.nr);
        let used = g.positions() as f64 / computed.max(1) as f64;
        ImplicitForward {
            mk,
            im,
            offs: im.offsets(g),
            packed_offs: mk.packed_offsets(g.kdim()),
            wp: Vec::new(),
            tile,
            cv: ChanVec::for_geom(mk, g, used).map(|cv| (cv, Vec::new())),
            channels_last: false,
        }
    }

    /// Hand the bands of [`Self::run_banded`] on channels last (position by position, each
    /// position's output channels together), computed by the channel-vector kernel, which
    /// then runs this geometry whether or not it pays on planes: nothing is transposed, and
    /// a 2x2 pooling of such a band reads whole vectors. Returns false, changing nothing,
    /// where that kernel cannot run `g`. Call it before [`Self::set_weights`].
    pub(crate) fn bands_channels_last(&mut self, g: &Conv2dGeom) -> bool {
        if self.cv.is_none() {
            self.cv = ChanVec::channels_last(self.mk, g).map(|cv| (cv, Vec::new()));
        }
        self.channels_last = self.cv.is_some();
        self.channels_last
    }

    /// The same forward on the micro-kernel alone (the channel-vector kernel's tests).
    #[cfg(test)]
    pub(crate) fn micro_only(mut self) -> ImplicitForward {
        self.cv = None;
        self
    }

    /// Whether the channel-vector kernel runs this forward.
    #[cfg(test)]
    pub(crate) fn chanvec(&self) -> bool {
        self.cv.is_some()
    }

    pub(crate) fn set_weights(&mut self, g: &Conv2dGeom, w: &[f32]) {
        match &mut self.cv {
            Some((cv, cw)) => cv.pack(g, w, cw),
            None => pack_weights(self.mk, g, w, &mut self.wp),
        }
    }

    /// Zeros the padded input needs after its last plane.
    pub(crate) fn slack(&self, g: &Conv2dGeom) -> usize {
        self.mk.nr + (g.k_w - 1) * g.dil_w
    }

    /// `y = conv(x) + bias`, then `epi` on each finished block; `xp` is the input padded by
    /// [`Implicit::pad_into`] (or the input itself when [`Implicit::in_place`]).
    pub(crate) fn run(
        &self,
        g: &Conv2dGeom,
        xp: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
        epi: Option<Epilogue>,
    ) {
        let (im, tile) = (&self.im, self.tile);
        let (p_all, cog) = (g.positions(), g.cout_g());
        let ntiles = im.q_all.div_ceil(tile);
        // output positions of wide positions: tile tix's q0..q1 map to a contiguous range
        let pos = |q: usize| (q / im.wq) * g.out_w + (q % im.wq).min(g.out_w);
        let wide = |tix: usize| (tix * tile).min(im.q_all);
        for_each_block(
            g,
            ntiles,
            |tix| pos(wide(tix)),
            y,
            epi,
            |s: &mut Scratch, img, grp, tix, yt| {
                let (q0, q1) = (wide(tix), wide(tix + 1));
                let t = q1 - q0;
                if self.compact(g) {
                    // (real outputs only: straight to y)
                    let c = (yt, Layout::Planes(p_all));
                    self.block(g, xp, bias, (img, grp, q0, q1), &mut s.b, c);
                    return;
                }
                let cbuf = &mut s.a;
                cbuf.resize(cog * t, 0.0);
                let c = (&mut cbuf[..], Layout::Planes(t));
                self.block(g, xp, bias, (img, grp, q0, q1), &mut s.b, c);
                // drop the wide columns
                let o0 = pos(q0);
                for o in 0..cog {
                    let (src, dst) = (&cbuf[o * t..(o + 1) * t], &mut yt[o * p_all..]);
                    let mut q = q0;
                    while q < q1 {
                        let ow = q % im.wq;
                        let run_end = (q - ow + g.out_w).min(q1);
                        if run_end > q {
                            let d = pos(q) - o0;
                            dst[d..d + run_end - q].copy_from_slice(&src[q - q0..run_end - q0]);
                        }
                        q = q - ow + im.wq;
                    }
                }
            },
        );
    }

    /// Whether [`Self::block`] writes the real outputs only (rows `out_w` apart): on the
    /// channel-vector kernel, or where the rows are not widened.
    fn compact(&self, g: &Conv2dGeom) -> bool {
        self.cv.is_some() || self.im.wq == g.out_w
    }

    /// The outputs of group `grp` of image `img` at wide positions `q0..q1` (`t` of them),
    /// written to `c` as `layout` says: in `Planes(ldc)` at column `q - q0`, or where
    /// [`Self::compact`], the real outputs only, from the first of `q0..q1` on;
    /// `ChannelsLast` only on the channel-vector kernel.
    fn block(
        &self,
        g: &Conv2dGeom,
        xp: &[f32],
        bias: Option<&[f32]>,
        (img, grp, q0, q1): (usize, usize, usize, usize),
        tail: &mut Vec<f32>,
        (c, layout): (&mut [f32], Layout),
    ) {
        let (mk, im) = (self.mk, &self.im);
        let (cig, cog, kd) = (g.cin_g(), g.cout_g(), g.kdim());
        if let Some((cv, cw)) = &self.cv {
            let xb = &xp[(img * g.c_in + grp * cig) * im.plane() + q0..];
            let wg = &cw[grp * cog * kd..(grp + 1) * cog * kd];
            let bias = bias.map(|b| &b[grp * cog..]);
            cv.block(g, (wg, &self.offs), xb, (q0, q1, im.wq), bias, (c, layout));
            return;
        }
        let Layout::Planes(ldc) = layout else {
            unreachable!("channels last without the channel-vector kernel")
        };
        let alen = mk.packed_a_len(cog, kd);
        let (offs, packed) = (&self.offs, &self.packed_offs);
        let reach = offs.iter().max().map_or(0, |&o| o + mk.nr);
        let t = q1 - q0;
        let xb = &xp[(img * g.c_in + grp * cig) * im.plane() + q0..];
        let wg = &self.wp[grp * alen..(grp + 1) * alen];
        let store = bias.map_or(Store::Replace, |b| Store::Bias(&b[grp * cog..]));
        for q in 0..t.div_ceil(mk.nr) {
            let cols = mk.nr.min(t - q * mk.nr);
            let bq = &xb[q * mk.nr..];
            let cq = &mut c[q * mk.nr..];
            // One panel of B: in place, or (where its rows would read past the input's end,
            // an unpadded input's last panel) gathered into `tail` with packed offsets.
            if bq.len() >= reach {
                mk.panel(cog, kd, wg, bq, offs, cq, ldc, cols, store);
            } else {
                tail.clear();
                tail.resize(kd * mk.nr, 0.0);
                for (p, &o) in offs.iter().enumerate() {
                    tail[p * mk.nr..p * mk.nr + cols].copy_from_slice(&bq[o..o + cols]);
                }
                mk.panel(cog, kd, wg, tail, packed, cq, ldc, cols, store);
            }
        }
    }

    /// The convolution in bands of `rows` output rows (the last may be shorter), each
    /// computed into the worker's scratch and handed to `sink` while it is in cache; nothing
    /// is written to memory but what `sink` writes. Parallel over (image, group, band).
    pub(crate) fn run_banded(
        &self,
        g: &Conv2dGeom,
        xp: &[f32],
        bias: Option<&[f32]>,
        rows: usize,
        sink: &(dyn Fn(Band) + Sync),
    ) {
        use rayon::prelude::*;
        let im = &self.im;
        let rows = rows.clamp(1, g.out_h.max(1));
        let bands = g.out_h.div_ceil(rows);
        (0..g.n * g.groups * bands)
            .into_par_iter()
            .for_each(|item| {
                let band = item % bands;
                let grp = (item / bands) % g.groups;
                let img = item / (bands * g.groups);
                let oh0 = band * rows;
                let nrows = rows.min(g.out_h - oh0);
                let q0 = oh0 * im.wq;
                let q1 = ((oh0 + nrows - 1) * im.wq + g.out_w).min(im.q_all);
                // the band's rows wide, or compact (`out_w` apart); or channels last
                let cog = g.cout_g();
                let row = if self.compact(g) { g.out_w } else { im.wq };
                let t = (nrows - 1) * row + g.out_w;
                let (layout, len, strides) = match self.channels_last {
                    true => (Layout::ChannelsLast, t * cog, (1, g.out_w * cog, cog)),
                    false => (Layout::Planes(t), cog * t, (t, row, 1)),
                };
                super::block::with_scratch(|s| {
                    let cbuf = &mut s.a;
                    cbuf.resize(len, 0.0);
                    let c = (&mut cbuf[..], layout);
                    self.block(g, xp, bias, (img, grp, q0, q1), &mut s.b, c);
                    sink(Band {
                        img,
                        grp,
                        oh0,
                        rows: nrows,
                        data: cbuf,
                        chan_stride: strides.0,
                        row_stride: strides.1,
                        col_stride: strides.2,
                    });
                });
            });
    }
}

/// A band of a convolution's output rows, as [`ImplicitForward::run_banded`] hands it on:
/// output `(grp * cout_g + o, oh0 + r, c)` of image `img` at
/// `data[o * chan_stride + r * row_stride + c * col_stride]` for `r < rows`, `c < out_w`:
/// planes (`col_stride` 1), or channels last (`chan_stride` 1, `col_stride` the group's
/// channels).
pub struct Band<'a> {
    pub img: usize,
    pub grp: usize,
    pub oh0: usize,
    pub rows: usize,
    pub data: &'a mut [f32],
    pub chan_stride: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

/// Forward of a stride-1 convolution through the micro-kernel reading the padded input in
/// place (see [`Implicit`]); tiles of wide positions, parallel over images, groups and tiles.
pub(crate) fn forward(
    mk: Micro,
    g: &Conv2dGeom,
    im: &Implicit,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    forward_on(ImplicitForward::new(mk, g, *im), g, im, x, w, bias, y)
}

/// [`forward`] on a given [`ImplicitForward`] (made for `g` and `im`).
pub(crate) fn forward_on(
    mut f: ImplicitForward,
    g: &Conv2dGeom,
    im: &Implicit,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    f.set_weights(g, w);
    let padded;
    let xp: &[f32] = if im.in_place(g) {
        x
    } else {
        padded = im.pad(g, x, f.slack(g));
        &padded
    };
    f.run(g, xp, bias, y, None);
}

/// For stride 1, the input gradient is itself a stride-1 convolution: of dY, padded by
/// `dil * (k - 1) - pad` (per side), with the kernel flipped and its channel axes swapped.
/// Returns that convolution's geometry when its padding is non-negative on every side.
pub(crate) fn transposed_as_conv(g: &Conv2dGeom) -> Option<(Conv2dGeom, Implicit)> {
    if g.stride_h != 1 || g.stride_w != 1 {
        return None;
    }
    let gt = Conv2dGeom {
        n: g.n,
        c_in: g.c_out,
        h: g.out_h,
        w: g.out_w,
        c_out: g.c_in,
        k_h: g.k_h,
        k_w: g.k_w,
        stride_h: 1,
        stride_w: 1,
        pad_t: (g.dil_h * (g.k_h - 1)).checked_sub(g.pad_t)?,
        pad_l: (g.dil_w * (g.k_w - 1)).checked_sub(g.pad_l)?,
        dil_h: g.dil_h,
        dil_w: g.dil_w,
        groups: g.groups,
        out_h: g.h,
        out_w: g.w,
    };
    // `Implicit::of` also refuses a negative bottom or right padding
    let im = Implicit::of(&gt)?;
    Some((gt, im))
}

/// `(c_out, c_in/g, kh, kw)` weights as the `(c_in, c_out/g, kh, kw)` weights of the transposed
/// convolution: channel axes swapped within each group, taps flipped.
pub(crate) fn flip_weights(g: &Conv2dGeom, w: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    flip_weights_into(g, w, &mut out);
    out
}

/// [`flip_weights`] into `out` (as long as `w`).
pub(crate) fn flip_weights_into(g: &Conv2dGeom, w: &[f32], out: &mut [f32]) {
    let (cig, cog, kk) = (g.cin_g(), g.cout_g(), g.k_h * g.k_w);
    for grp in 0..g.groups {
        for o in 0..cog {
            for i in 0..cig {
                let src = &w[((grp * cog + o) * cig + i) * kk..][..kk];
                let dst = &mut out[((grp * cig + i) * cog + o) * kk..][..kk];
                for (d, v) in dst.iter_mut().zip(src.iter().rev()) {
                    *d = *v;
                }
            }
        }
    }
}
