//! Stride-1 convolutions without lowering: the zero-padded input read in place through
//! per-tap row offsets (forward, and the input gradient as a convolution of dY with flipped
//! weights), and the weight gradient as blocks of dot products over the same layout.

use rayon::prelude::*;

use super::Conv2dGeom;
use super::block::{Epilogue, Scratch, for_each_block, pack_weights};
use super::chanvec::ChanVec;
use crate::kernels::micro::{MAX_DOTS, Micro, Store};

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

    fn plane(&self) -> usize {
        self.hp * self.wp
    }

    /// Values the weight gradient of `g` allocates at once: the widened output gradient and
    /// the padded input, for every image.
    /// (Saturating: sizes a model of shapes only, of any size.)
    pub(crate) fn backward_len(&self, g: &Conv2dGeom) -> u64 {
        let per = crate::nn::count(&[g.c_out, self.q_all])
            .saturating_add(crate::nn::count(&[g.c_in, self.hp, self.wp]));
        let blocks = Micro::best().map_or(0, |mk| {
            let (tasks, _) = self.weight_tasks(g, mk);
            crate::nn::count(&[tasks, mk.dots_block().0, g.kdim()])
        });
        per.saturating_mul(g.n as u64).saturating_add(blocks)
    }

    /// The tasks of [`backward_weight`] and the images of each chunk: images are taken in
    /// chunks whose widened dY and padded input fit in 512 KiB (a fixed size, not the running
    /// CPU's L2: the chunks decide the order of the sums, so the result is the same on every
    /// machine), one task per chunk, group and block of output channels.
    fn weight_tasks(&self, g: &Conv2dGeom, mk: Micro) -> (usize, usize) {
        let (rb, _, lanes) = mk.dots_block();
        let qr = self.q_all.next_multiple_of(lanes);
        let img_bytes = 4 * (g.c_out * qr + g.c_in * self.plane());
        let chunk = (524_288 / img_bytes.max(1)).clamp(1, g.n.max(1));
        let tasks = g.n.div_ceil(chunk) * g.groups * g.cout_g().div_ceil(rb);
        (tasks, chunk)
    }

    /// Values of the padded input of `g`, saturating (see [`Implicit::backward_len`]).
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
    fn offsets_into(&self, g: &Conv2dGeom, offs: &mut Vec<usize>) {
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
    /// last plane for the reads of the last panel past the end.
    fn pad(&self, g: &Conv2dGeom, x: &[f32], slack: usize) -> Vec<f32> {
        let mut xp = vec![0f32; self.padded_len(g, slack)];
        self.pad_into(g, x, &mut xp);
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
        }
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
        let direct = im.wq == g.out_w;
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
                if direct || self.cv.is_some() {
                    // (the channel-vector kernel writes real outputs only: straight to y)
                    let c = (yt, p_all, g.out_w);
                    self.block(g, xp, bias, (img, grp, q0, q1), &mut s.b, c);
                    return;
                }
                let cbuf = &mut s.a;
                cbuf.resize(cog * t, 0.0);
                self.block(g, xp, bias, (img, grp, q0, q1), &mut s.b, (cbuf, t, im.wq));
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

    /// The outputs of group `grp` of image `img` at wide positions `q0..q1` (`t` of them),
    /// written to `c` (`cout_g` rows of stride `ldc`, column `q - q0`). With `row_out ==
    /// g.out_w` (only where the channel-vector kernel runs, or the rows are not widened), `c`
    /// is compact instead: the real outputs only, rows `out_w` apart.
    fn block(
        &self,
        g: &Conv2dGeom,
        xp: &[f32],
        bias: Option<&[f32]>,
        (img, grp, q0, q1): (usize, usize, usize, usize),
        tail: &mut Vec<f32>,
        (c, ldc, row_out): (&mut [f32], usize, usize),
    ) {
        let (mk, im) = (self.mk, &self.im);
        let (cig, cog, kd) = (g.cin_g(), g.cout_g(), g.kdim());
        if let Some((cv, cw)) = &self.cv {
            let xb = &xp[(img * g.c_in + grp * cig) * im.plane() + q0..];
            let wg = &cw[grp * cog * kd..(grp + 1) * cog * kd];
            let bias = bias.map(|b| &b[grp * cog..]);
            cv.block(
                g,
                (wg, &self.offs),
                xb,
                (q0, q1, im.wq),
                bias,
                (c, ldc, row_out),
            );
            return;
        }
        debug_assert_eq!(row_out, im.wq, "the micro-kernel writes wide rows");
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
                let t = q1 - q0;
                super::block::with_scratch(|s| {
                    let cbuf = &mut s.a;
                    cbuf.resize(g.cout_g() * t, 0.0);
                    self.block(g, xp, bias, (img, grp, q0, q1), &mut s.b, (cbuf, t, im.wq));
                    sink(Band {
                        img,
                        grp,
                        oh0,
                        rows: nrows,
                        data: cbuf,
                        chan_stride: t,
                        row_stride: im.wq,
                    });
                });
            });
    }
}

/// A band of a convolution's output rows, as [`ImplicitForward::run_banded`] hands it on:
/// output `(grp * cout_g + o, oh0 + r, c)` of image `img` at
/// `data[o * chan_stride + r * row_stride + c]` for `r < rows`, `c < out_w`.
pub struct Band<'a> {
    pub img: usize,
    pub grp: usize,
    pub oh0: usize,
    pub rows: usize,
    pub data: &'a mut [f32],
    pub chan_stride: usize,
    pub row_stride: usize,
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

/// The buffers of [`backward_weight`], kept between calls by a compiled plan.
#[derive(Default)]
pub struct WeightScratch {
    dyw: Vec<f32>,
    xp: Vec<f32>,
    /// Each task's block of dW rows, added in task order.
    blocks: Vec<f32>,
    /// The taps' offsets into a padded image.
    offs: Vec<usize>,
}

/// Weight gradient of a stride-1 convolution as blocks of dot products over wide positions
/// (see [`Implicit`]): `dW[o][tap] = sum(img, q) dY_wide[o][q] * x_padded[offset(tap) + q]`,
/// with dY zero on the dropped columns. Images are taken in chunks whose dY and input fit in
/// L2; each chunk's sums go to their own buffer, added in chunk order, so the result does not
/// depend on the thread count.
///
/// `scratch` holds the widened dY and the padded input: empty, or left by an earlier call for
/// the same geometry with at least as many images (only their interiors are written again;
/// what lies past this call's images is read only against zeros of dY).
pub(crate) fn backward_weight(
    mk: Micro,
    g: &Conv2dGeom,
    im: &Implicit,
    (x, dy): (&[f32], &[f32]),
    dw: &mut [f32],
    scratch: &mut WeightScratch,
) {
    let p_all = g.positions();
    let widen = |dyw: &mut [f32], qr: usize| {
        dyw.par_chunks_mut(qr)
            .zip(dy.par_chunks(p_all))
            .for_each(|(d, s)| {
                for (oh, row) in s.chunks_exact(g.out_w).enumerate() {
                    d[oh * im.wq..oh * im.wq + g.out_w].copy_from_slice(row);
                }
            });
    };
    backward_weight_filled(mk, g, im, x, &widen, dw, scratch);
}

/// The wide dY of [`backward_weight_filled`]: `fill(dyw, qr)` writes image `i`'s channel
/// `o`, output row `oh`, into `dyw[(i * c_out + o) * qr + oh * row_stride..][..out_w]` (and
/// nothing else: the rest stays zero).
pub(crate) type FillWide<'a> = dyn Fn(&mut [f32], usize) + Sync + 'a;

/// [`backward_weight`] with the widened dY written by `fill` in place of a copy of dY: a
/// pooling's backward spreads its gradient straight into it.
pub(crate) fn backward_weight_filled(
    mk: Micro,
    g: &Conv2dGeom,
    im: &Implicit,
    x: &[f32],
    fill: &FillWide,
    dw: &mut [f32],
    scratch: &mut WeightScratch,
) {
    let (cig, cog, kd) = (g.cin_g(), g.cout_g(), g.kdim());
    let (rb, cb, lanes) = mk.dots_block();
    let qr = im.q_all.next_multiple_of(lanes);
    let slack = lanes + (g.k_w - 1) * g.dil_w;
    let WeightScratch {
        dyw,
        xp,
        blocks,
        offs,
    } = scratch;
    let (tasks, chunk) = im.weight_tasks(g, mk);
    let row_blocks = cog.div_ceil(rb);
    for (buf, len) in [
        (&mut *dyw, g.n * g.c_out * qr),
        (&mut *xp, im.padded_len(g, slack)),
        (&mut *blocks, tasks * rb * kd),
    ] {
        if buf.len() < len {
            buf.clear();
            buf.resize(len, 0.0);
        }
    }
    fill(&mut dyw[..g.n * g.c_out * qr], qr);
    im.pad_into(g, x, xp);
    let (dyw, xp) = (&*dyw, &*xp);
    im.offsets_into(g, offs);
    let offs = &*offs;
    // one task per (chunk, group, block of output channels): that block's rows of dW
    blocks[..tasks * rb * kd]
        .par_chunks_mut(rb * kd)
        .enumerate()
        .for_each(|(task, out)| {
            let ch = task / (g.groups * row_blocks);
            let grp = (task / row_blocks) % g.groups;
            let o0 = (task % row_blocks) * rb;
            let rows = rb.min(cog - o0);
            let (i0, imgs) = (ch * chunk, chunk.min(g.n - ch * chunk));
            let mut a_rows = [0usize; MAX_DOTS];
            for (i, r) in a_rows[..rows].iter_mut().enumerate() {
                *r = (i0 * g.c_out + grp * cog + o0 + i) * qr;
            }
            let xbase = (i0 * g.c_in + grp * cig) * im.plane();
            let out = &mut out[..rows * kd];
            out.fill(0.0);
            for t0 in (0..kd).step_by(cb) {
                let taps = &offs[t0..(t0 + cb).min(kd)];
                let mut b_rows = [0usize; MAX_DOTS];
                for (b, o) in b_rows.iter_mut().zip(taps) {
                    *b = xbase + o;
                }
                mk.dots(
                    qr,
                    imgs,
                    (dyw, &a_rows[..rows], g.c_out * qr),
                    (xp, &b_rows[..taps.len()], g.c_in * im.plane()),
                    &mut out[t0..],
                    kd,
                );
            }
        });
    // blocks of chunk ch come before those of ch + 1: add them in that order
    dw.fill(0.0);
    for (task, block) in blocks[..tasks * rb * kd].chunks_exact(rb * kd).enumerate() {
        let grp = (task / row_blocks) % g.groups;
        let o0 = (task % row_blocks) * rb;
        let block = &block[..rb.min(cog - o0) * kd];
        let dst = &mut dw[(grp * cog + o0) * kd..][..block.len()];
        for (d, v) in dst.iter_mut().zip(block) {
            *d += v;
        }
    }
}
