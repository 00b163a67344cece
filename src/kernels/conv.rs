//! Convolution kernels on slices: im2col / col2im tiled over output positions, lowered to GEMM,
//! with a plain GEMM for pointwise (1x1) convolutions and direct loops for depthwise ones.
//!
//! 1-D convolutions run here as 2-D ones with `h = 1`; transposed convolutions reuse these
//! kernels with the roles of input and output swapped (see `ops::conv_transpose`).

use rayon::prelude::*;

use super::gemm::{MatRef, SendPtr, sgemm};
use super::micro::{Micro, Store};

/// Geometry of a 2-D convolution: zero padding may differ per side (`pad_t`/`pad_l` are
/// given; bottom/right follow from `out_h`/`out_w`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dGeom {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_t: usize,
    pub pad_l: usize,
    pub dil_h: usize,
    pub dil_w: usize,
    pub groups: usize,
    pub out_h: usize,
    pub out_w: usize,
}

/// Output length along one axis: floor((n + pad_total - dilation * (k - 1) - 1) / stride) + 1,
/// or `None` when the dilated kernel spans more than the padded input.
pub fn conv_out_len(
    n: usize,
    pad_total: usize,
    k: usize,
    stride: usize,
    dilation: usize,
) -> Option<usize> {
    let span = dilation.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
    let padded = n.checked_add(pad_total)?;
    if stride == 0 || padded < span {
        return None;
    }
    Some((padded - span) / stride + 1)
}

impl Conv2dGeom {
    /// Input channels per group.
    pub fn cin_g(&self) -> usize {
        self.c_in / self.groups
    }
    /// Output channels per group.
    pub fn cout_g(&self) -> usize {
        self.c_out / self.groups
    }
    /// Rows of the lowered matrix: input channels per group times kernel taps.
    pub fn kdim(&self) -> usize {
        self.cin_g() * self.k_h * self.k_w
    }
    /// Output positions per image and channel.
    pub fn positions(&self) -> usize {
        self.out_h * self.out_w
    }
    /// Multiply-adds counted as two FLOPs, bias excluded.
    pub fn flops(&self) -> f64 {
        2.0 * self.n as f64 * self.c_out as f64 * self.positions() as f64 * self.kdim() as f64
    }
    /// A 1x1 convolution with stride 1 and no padding: the lowered matrix is the input itself.
    pub fn is_pointwise(&self) -> bool {
        self.k_h == 1
            && self.k_w == 1
            && self.stride_h == 1
            && self.stride_w == 1
            && self.pad_t == 0
            && self.pad_l == 0
            && self.out_h == self.h
            && self.out_w == self.w
    }
    /// Each output channel reads one input channel (groups == c_in).
    pub fn is_depthwise(&self) -> bool {
        self.cin_g() == 1 && self.groups > 1
    }
    /// Output positions per im2col tile, so that the column buffer stays near 1 MiB.
    fn tile(&self) -> usize {
        let p = self.positions().max(1);
        if self.is_pointwise() {
            return p;
        }
        (262_144 / self.kdim().max(1)).clamp(64, 4096).min(p)
    }
    /// Valid output columns `[lo, hi)` for kernel column `kj`: those whose input column is in range.
    pub(crate) fn valid_cols(&self, kj: usize) -> (usize, usize) {
        valid_range(
            self.out_w,
            self.stride_w,
            kj * self.dil_w,
            self.pad_l,
            self.w,
        )
    }
}

/// For outputs `o` in `0..out`, input index `o * stride + offset - pad`; returns the range of
/// `o` for which it lies in `0..n`.
fn valid_range(out: usize, stride: usize, offset: usize, pad: usize, n: usize) -> (usize, usize) {
    // o * stride + offset >= pad  and  o * stride + offset < pad + n
    let lo = if offset >= pad {
        0
    } else {
        (pad - offset).div_ceil(stride)
    };
    let hi = if pad + n <= offset {
        0
    } else {
        (pad + n - offset).div_ceil(stride)
    };
    (lo.min(out), hi.min(out).max(lo.min(out)))
}

/// Where tile column `j` of lowered row `r` lives when the tile is stored in panels of `nr`
/// columns (`kd x nr` each, row-major, one after another).
#[inline]
fn panel_at(kd: usize, nr: usize, r: usize, j: usize) -> usize {
    (j / nr) * kd * nr + r * nr + j % nr
}

/// Write `len` values of lowered row `r` from tile column `j` on (a copy of `src`, or zeros),
/// splitting the run where it crosses into the next panel.
fn put_run(
    col: &mut [f32],
    kd: usize,
    nr: usize,
    r: usize,
    j: usize,
    len: usize,
    src: Option<&[f32]>,
) {
    let mut done = 0;
    while done < len {
        let at = panel_at(kd, nr, r, j + done);
        let n = (nr - (j + done) % nr).min(len - done);
        match src {
            Some(s) => col[at..at + n].copy_from_slice(&s[done..done + n]),
            None => col[at..at + n].fill(0.0),
        }
        done += n;
    }
}

/// Fill `col` with the input patches of output positions `p0..p1`, stored in panels of `nr`
/// columns: row `r` of the lowered matrix, tile column `j`, is at [`panel_at`]. With `nr` no
/// less than `p1 - p0` this is the plain row-major `kdim x (p1 - p0)` matrix. Columns of the last
/// panel past the tile are left as they were. `x`: one image's channels of one group,
/// `(cin_g, h, w)`.
fn im2col_tile(g: &Conv2dGeom, x: &[f32], p0: usize, p1: usize, nr: usize, col: &mut [f32]) {
    let hw = g.h * g.w;
    let kd = g.kdim();
    for c in 0..g.cin_g() {
        let plane = &x[c * hw..(c + 1) * hw];
        for ki in 0..g.k_h {
            for kj in 0..g.k_w {
                let r = (c * g.k_h + ki) * g.k_w + kj;
                let (vlo, vhi) = g.valid_cols(kj);
                let mut p = p0;
                while p < p1 {
                    let oh = p / g.out_w;
                    let ow0 = p % g.out_w;
                    let ow1 = g.out_w.min(ow0 + (p1 - p));
                    let j = p - p0;
                    let ih = (oh * g.stride_h + ki * g.dil_h) as isize - g.pad_t as isize;
                    if ih < 0 || ih >= g.h as isize {
                        put_run(col, kd, nr, r, j, ow1 - ow0, None);
                    } else {
                        let src = &plane[ih as usize * g.w..(ih as usize + 1) * g.w];
                        let lo = vlo.clamp(ow0, ow1);
                        let hi = vhi.clamp(lo, ow1);
                        put_run(col, kd, nr, r, j, lo - ow0, None);
                        put_run(col, kd, nr, r, j + hi - ow0, ow1 - hi, None);
                        let base = kj * g.dil_w;
                        if g.stride_w == 1 && hi > lo {
                            let s0 = lo + base - g.pad_l;
                            let s = &src[s0..s0 + (hi - lo)];
                            put_run(col, kd, nr, r, j + lo - ow0, hi - lo, Some(s));
                        } else {
                            for ow in lo..hi {
                                col[panel_at(kd, nr, r, j + ow - ow0)] =
                                    src[ow * g.stride_w + base - g.pad_l];
                            }
                        }
                    }
                    p += ow1 - ow0;
                }
            }
        }
    }
}

/// Add the columns of `col` (`kdim x (p1 - p0)`) back onto the image they were taken from:
/// the adjoint of [`im2col_tile`]. `dx`: `(cin_g, h, w)`.
fn col2im_tile(g: &Conv2dGeom, col: &[f32], p0: usize, p1: usize, dx: &mut [f32]) {
    let t = p1 - p0;
    let hw = g.h * g.w;
    for c in 0..g.cin_g() {
        let plane = &mut dx[c * hw..(c + 1) * hw];
        for ki in 0..g.k_h {
            for kj in 0..g.k_w {
                let r = (c * g.k_h + ki) * g.k_w + kj;
                let row = &col[r * t..(r + 1) * t];
                let (vlo, vhi) = g.valid_cols(kj);
                let mut p = p0;
                while p < p1 {
                    let oh = p / g.out_w;
                    let ow0 = p % g.out_w;
                    let ow1 = g.out_w.min(ow0 + (p1 - p));
                    let ih = (oh * g.stride_h + ki * g.dil_h) as isize - g.pad_t as isize;
                    if ih >= 0 && ih < g.h as isize {
                        let dst = &mut plane[ih as usize * g.w..(ih as usize + 1) * g.w];
                        let lo = vlo.clamp(ow0, ow1);
                        let hi = vhi.clamp(lo, ow1);
                        let base = kj * g.dil_w;
                        if g.stride_w == 1 && hi > lo {
                            let d0 = lo + base - g.pad_l;
                            let r0 = p - p0 + lo - ow0;
                            for (d, &v) in
                                dst[d0..d0 + hi - lo].iter_mut().zip(&row[r0..r0 + hi - lo])
                            {
                                *d += v;
                            }
                        } else {
                            for ow in lo..hi {
                                dst[ow * g.stride_w + base - g.pad_l] += row[p - p0 + ow - ow0];
                            }
                        }
                    }
                    p += ow1 - ow0;
                }
            }
        }
    }
}

/// Run `f(scratch, img, grp, tix, y_block)` for every (image, group, tile) in parallel, with
/// per-thread scratch from `init`. Tile `tix` owns output positions `start(tix)..start(tix + 1)`
/// (`start` must be non-decreasing); `y_block` begins at output channel `grp * cout_g` of image
/// `img`, position `start(tix)`, with the row stride `positions()`, and `f` may write only that
/// group's rows within the tile's positions.
fn for_each_block<S>(
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

/// Forward convolution.
///
/// # Shapes
/// x: `(n, c_in, h, w)`, w: `(c_out, c_in / groups, k_h, k_w)`, bias: `(c_out)`,
/// y: `(n, c_out, out_h, out_w)`, fully overwritten.
pub fn conv2d_forward(g: &Conv2dGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    conv2d_forward_with(Micro::best(), g, x, w, bias, y)
}

/// [`conv2d_forward`] through the given micro-kernel, or through `matrixmultiply` with `None`.
pub(crate) fn conv2d_forward_with(
    micro: Option<Micro>,
    g: &Conv2dGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    debug_assert_eq!(x.len(), g.n * g.c_in * g.h * g.w);
    debug_assert_eq!(w.len(), g.c_out * g.kdim());
    debug_assert_eq!(y.len(), g.n * g.c_out * g.positions());
    if g.is_depthwise() {
        return super::depthwise::forward(g, x, w, bias, y);
    }
    if let Some(mk) = micro {
        return match Implicit::of(g) {
            Some(im) => forward_implicit(mk, g, &im, x, w, bias, y),
            None => forward_packed(mk, g, x, w, bias, y),
        };
    }
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
        Vec::new,
        |col: &mut Vec<f32>, img, grp, tix, yt| {
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

/// The weights of each group packed once for `mk` (group `grp` at `grp * packed_a_len`).
fn pack_weights(mk: Micro, g: &Conv2dGeom, w: &[f32]) -> Vec<f32> {
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

/// The layout of a stride-1 convolution lowered implicitly. With the input zero-padded to
/// `hp x wp` per channel, output `(oh, ow)` reads tap `(c, ki, kj)` at
/// `c * hp * wp + (oh + ki * dil_h) * wp + ow + kj * dil_w`: a fixed offset per tap plus
/// `oh * wp + ow`. So over "wide" positions `q = oh * wq + ow` (`wq = wp`, the columns
/// `ow >= out_w` computed and dropped) every row of the lowered matrix is a contiguous run of
/// the padded input, and the micro-kernel reads it in place. A single output row needs no
/// wide columns (`wq = out_w`).
struct Implicit {
    hp: usize,
    wp: usize,
    wq: usize,
    /// Wide positions: `(out_h - 1) * wq + out_w`.
    q_all: usize,
}

impl Implicit {
    fn of(g: &Conv2dGeom) -> Option<Implicit> {
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

    /// Offset of each tap `(c, ki, kj)` (in lowered-row order) from a group's first plane.
    fn offsets(&self, g: &Conv2dGeom) -> Vec<usize> {
        let mut offs = Vec::with_capacity(g.kdim());
        for c in 0..g.cin_g() {
            for ki in 0..g.k_h {
                for kj in 0..g.k_w {
                    offs.push(c * self.plane() + ki * g.dil_h * self.wp + kj * g.dil_w);
                }
            }
        }
        offs
    }

    /// The input needs no padding: it is read in place.
    fn in_place(&self, g: &Conv2dGeom) -> bool {
        self.hp == g.h && self.wp == g.w && g.pad_t == 0 && g.pad_l == 0
    }

    /// The input of every image zero-padded to `hp x wp` planes, with `slack` zeros after the
    /// last plane for the reads of the last panel past the end.
    fn pad(&self, g: &Conv2dGeom, x: &[f32], slack: usize) -> Vec<f32> {
        let (hw, plane) = (g.h * g.w, self.plane());
        let planes = g.n * g.c_in;
        let mut xp = vec![0f32; planes * plane + slack];
        xp[..planes * plane]
            .par_chunks_mut(plane)
            .zip(x.par_chunks(hw))
            .for_each(|(dst, src)| {
                for (ih, row) in src.chunks_exact(g.w).enumerate() {
                    let at = (ih + g.pad_t) * self.wp + g.pad_l;
                    dst[at..at + g.w].copy_from_slice(row);
                }
            });
        xp
    }
}

/// Forward of a stride-1 convolution through the micro-kernel reading the padded input in
/// place (see [`Implicit`]); tiles of wide positions, parallel over images, groups and tiles.
fn forward_implicit(
    mk: Micro,
    g: &Conv2dGeom,
    im: &Implicit,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let p_all = g.positions();
    let (cig, cog, kd) = (g.cin_g(), g.cout_g(), g.kdim());
    let alen = mk.packed_a_len(cog, kd);
    let wp = pack_weights(mk, g, w);
    let offs = im.offsets(g);
    let padded;
    let xp: &[f32] = if im.in_place(g) {
        x
    } else {
        padded = im.pad(g, x, mk.nr + (g.k_w - 1) * g.dil_w);
        &padded
    };
    let reach = offs.iter().max().map_or(0, |&o| o + mk.nr);
    let packed = mk.packed_offsets(kd);
    // a tile's output block (cog x tile) stays within 128 KiB
    let tile = ((32_768 / cog.max(1)) / mk.nr).max(1) * mk.nr;
    let tile = tile.min(im.q_all.next_multiple_of(mk.nr));
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
        || (Vec::new(), Vec::new()),
        |(cbuf, tail): &mut (Vec<f32>, Vec<f32>), img, grp, tix, yt| {
            let (q0, q1) = (wide(tix), wide(tix + 1));
            let t = q1 - q0;
            let xb = &xp[(img * g.c_in + grp * cig) * im.plane() + q0..];
            let wg = &wp[grp * alen..(grp + 1) * alen];
            let o0 = pos(q0);
            let panels = t.div_ceil(mk.nr);
            // One panel of B: in place, or (where its rows would read past the input's end, an
            // unpadded input's last panel) gathered into `tail` with packed offsets.
            let store = bias.map_or(Store::Replace, |b| Store::Bias(&b[grp * cog..]));
            let mut panel = |q: usize, c: &mut [f32], ldc: usize| {
                let cols = mk.nr.min(t - q * mk.nr);
                let bq = &xb[q * mk.nr..];
                if bq.len() >= reach {
                    mk.panel(cog, kd, wg, bq, &offs, c, ldc, cols, store);
                } else {
                    tail.clear();
                    tail.resize(kd * mk.nr, 0.0);
                    for (p, &o) in offs.iter().enumerate() {
                        tail[p * mk.nr..p * mk.nr + cols].copy_from_slice(&bq[o..o + cols]);
                    }
                    mk.panel(cog, kd, wg, tail, &packed, c, ldc, cols, store);
                }
            };
            if direct {
                for q in 0..panels {
                    panel(q, &mut yt[q * mk.nr..], p_all);
                }
                return;
            }
            cbuf.resize(cog * t, 0.0);
            for q in 0..panels {
                panel(q, &mut cbuf[q * mk.nr..], t);
            }
            // drop the wide columns
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

/// Forward through the packed micro-kernel: weights packed once, each tile of output positions
/// lowered by im2col straight into B panels, one kernel call per (row block, panel).
fn forward_packed(
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

/// For stride 1, the input gradient is itself a stride-1 convolution: of dY, padded by
/// `dil * (k - 1) - pad` (per side), with the kernel flipped and its channel axes swapped.
/// Returns that convolution's geometry when its padding is non-negative on every side.
fn transposed_as_conv(g: &Conv2dGeom) -> Option<(Conv2dGeom, Implicit)> {
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
fn flip_weights(g: &Conv2dGeom, w: &[f32]) -> Vec<f32> {
    let (cig, cog, kk) = (g.cin_g(), g.cout_g(), g.k_h * g.k_w);
    let mut out = vec![0f32; w.len()];
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
    out
}

/// Gradient of the convolution with respect to its input.
///
/// # Shapes
/// dy: `(n, c_out, out_h, out_w)`, w: `(c_out, c_in / groups, k_h, k_w)`, dx: `(n, c_in, h, w)`,
/// fully overwritten.
pub fn conv2d_backward_input(g: &Conv2dGeom, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    conv2d_backward_input_with(Micro::best(), g, dy, w, dx)
}

/// [`conv2d_backward_input`] through the given micro-kernel, or `matrixmultiply` with `None`.
pub(crate) fn conv2d_backward_input_with(
    micro: Option<Micro>,
    g: &Conv2dGeom,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
) {
    if g.is_depthwise() {
        return super::depthwise::backward_input(g, dy, w, dx);
    }
    // (with fewer input channels per group than a register block has rows, most of each
    // block would be wasted: the GEMM over the lowered dY is faster there)
    if let Some(mk) = micro.filter(|mk| g.cin_g() >= mk.mr)
        && let Some((gt, im)) = transposed_as_conv(g)
    {
        return forward_implicit(mk, &gt, &im, dy, &flip_weights(g, w), None, dx);
    }
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

/// Gradients of the convolution with respect to its weight and bias.
///
/// # Shapes
/// x: `(n, c_in, h, w)`, dy: `(n, c_out, out_h, out_w)`, dw: `(c_out, c_in / groups, k_h, k_w)`,
/// db: `(c_out)`; both fully overwritten.
pub fn conv2d_backward_weight(
    g: &Conv2dGeom,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
) {
    conv2d_backward_weight_with(Micro::best(), g, x, dy, dw, db)
}

/// [`conv2d_backward_weight`] through the given micro-kernel, or `matrixmultiply` with `None`.
pub(crate) fn conv2d_backward_weight_with(
    micro: Option<Micro>,
    g: &Conv2dGeom,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
) {
    let p_all = g.positions();
    if let Some(db) = db {
        db.par_iter_mut().enumerate().for_each(|(o, d)| {
            let mut s = 0f64;
            for img in 0..g.n {
                let row = &dy[(img * g.c_out + o) * p_all..(img * g.c_out + o + 1) * p_all];
                s += super::sum_f64(row);
            }
            *d = s as f32;
        });
    }
    if g.is_depthwise() {
        return super::depthwise::backward_weight(g, x, dy, dw);
    }
    // (a pointwise convolution's GEMM needs no lowering, and its dot products would stream
    // the whole input once per block of output channels)
    if let (Some(mk), Some(im), false) = (micro, Implicit::of(g), g.is_pointwise()) {
        return backward_weight_implicit(mk, g, &im, x, dy, dw);
    }
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

/// Weight gradient of a stride-1 convolution as blocks of dot products over wide positions
/// (see [`Implicit`]): `dW[o][tap] = sum(img, q) dY_wide[o][q] * x_padded[offset(tap) + q]`,
/// with dY zero on the dropped columns. Images are taken in chunks whose dY and input fit in
/// L2; each chunk's sums go to their own buffer, added in chunk order, so the result does not
/// depend on the thread count.
fn backward_weight_implicit(
    mk: Micro,
    g: &Conv2dGeom,
    im: &Implicit,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) {
    let (cig, cog, kd) = (g.cin_g(), g.cout_g(), g.kdim());
    let (rb, cb, lanes) = mk.dots_block();
    let (p_all, qr) = (g.positions(), im.q_all.next_multiple_of(lanes));
    let mut dyw = vec![0f32; g.n * g.c_out * qr];
    dyw.par_chunks_mut(qr)
        .zip(dy.par_chunks(p_all))
        .for_each(|(d, s)| {
            for (oh, row) in s.chunks_exact(g.out_w).enumerate() {
                d[oh * im.wq..oh * im.wq + g.out_w].copy_from_slice(row);
            }
        });
    let xp = im.pad(g, x, lanes + (g.k_w - 1) * g.dil_w);
    let offs = im.offsets(g);
    let img_bytes = 4 * (g.c_out * qr + g.c_in * im.plane());
    let chunk = (524_288 / img_bytes.max(1)).clamp(1, g.n);
    let nchunks = g.n.div_ceil(chunk);
    let row_blocks = cog.div_ceil(rb);
    // one task per (chunk, group, block of output channels): that block's rows of dW
    let blocks: Vec<Vec<f32>> = (0..nchunks * g.groups * row_blocks)
        .into_par_iter()
        .map(|task| {
            let ch = task / (g.groups * row_blocks);
            let grp = (task / row_blocks) % g.groups;
            let o0 = (task % row_blocks) * rb;
            let rows = rb.min(cog - o0);
            let (i0, imgs) = (ch * chunk, chunk.min(g.n - ch * chunk));
            let a_rows: Vec<usize> = (0..rows)
                .map(|i| (i0 * g.c_out + grp * cog + o0 + i) * qr)
                .collect();
            let xbase = (i0 * g.c_in + grp * cig) * im.plane();
            let mut out = vec![0f32; rows * kd];
            for t0 in (0..kd).step_by(cb) {
                let b_rows: Vec<usize> = offs[t0..(t0 + cb).min(kd)]
                    .iter()
                    .map(|o| xbase + o)
                    .collect();
                mk.dots(
                    qr,
                    imgs,
                    (&dyw, &a_rows, g.c_out * qr),
                    (&xp, &b_rows, g.c_in * im.plane()),
                    &mut out[t0..],
                    kd,
                );
            }
            out
        })
        .collect();
    // blocks of chunk ch come before those of ch + 1: add them in that order
    dw.fill(0.0);
    for (task, block) in blocks.iter().enumerate() {
        let grp = (task / row_blocks) % g.groups;
        let o0 = (task % row_blocks) * rb;
        let dst = &mut dw[(grp * cog + o0) * kd..][..block.len()];
        for (d, v) in dst.iter_mut().zip(block) {
            *d += v;
        }
    }
}

#[cfg(test)]
pub(crate) mod reference {
    //! Direct loops, obviously correct, that the fast kernels are tested against.
    use super::Conv2dGeom;

    fn at(g: &Conv2dGeom, oh: usize, ow: usize, ki: usize, kj: usize) -> Option<(usize, usize)> {
        let ih = (oh * g.stride_h + ki * g.dil_h) as isize - g.pad_t as isize;
        let iw = (ow * g.stride_w + kj * g.dil_w) as isize - g.pad_l as isize;
        (ih >= 0 && iw >= 0 && (ih as usize) < g.h && (iw as usize) < g.w)
            .then_some((ih as usize, iw as usize))
    }

    /// Visit every (image, out channel, in channel, output position, kernel tap) that meets an input pixel.
    fn each(g: &Conv2dGeom, mut f: impl FnMut(usize, usize, usize, usize, usize, usize)) {
        let (cig, cog) = (g.cin_g(), g.cout_g());
        for n in 0..g.n {
            for o in 0..g.c_out {
                let grp = o / cog;
                for ci in 0..cig {
                    let c = grp * cig + ci;
                    for oh in 0..g.out_h {
                        for ow in 0..g.out_w {
                            for ki in 0..g.k_h {
                                for kj in 0..g.k_w {
                                    if let Some((ih, iw)) = at(g, oh, ow, ki, kj) {
                                        let yi = ((n * g.c_out + o) * g.out_h + oh) * g.out_w + ow;
                                        let xi = ((n * g.c_in + c) * g.h + ih) * g.w + iw;
                                        let wi = ((o * cig + ci) * g.k_h + ki) * g.k_w + kj;
                                        f(n, o, yi, xi, wi, 0);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    pub fn forward(g: &Conv2dGeom, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f32> {
        let p = g.positions();
        let mut y = vec![0f64; g.n * g.c_out * p];
        each(g, |_, _, yi, xi, wi, _| {
            y[yi] += x[xi] as f64 * w[wi] as f64
        });
        let mut out: Vec<f32> = y.iter().map(|&v| v as f32).collect();
        if let Some(b) = b {
            for (i, v) in out.iter_mut().enumerate() {
                *v += b[(i / p) % g.c_out];
            }
        }
        out
    }

    pub fn backward(g: &Conv2dGeom, x: &[f32], w: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let mut dx = vec![0f64; x.len()];
        let mut dw = vec![0f64; w.len()];
        each(g, |_, _, yi, xi, wi, _| {
            dx[xi] += dy[yi] as f64 * w[wi] as f64;
            dw[wi] += dy[yi] as f64 * x[xi] as f64;
        });
        (
            dx.iter().map(|&v| v as f32).collect(),
            dw.iter().map(|&v| v as f32).collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn close(a: &[f32], b: &[f32], what: &str, g: &Conv2dGeom) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                "{what} [{i}]: {x} vs {y}, {g:?}"
            );
        }
    }

    /// `matrixmultiply` (None) and every micro-kernel this CPU has.
    fn micros() -> Vec<Option<Micro>> {
        std::iter::once(None)
            .chain(Micro::available().into_iter().map(Some))
            .collect()
    }

    fn random_geom(r: &mut Rng) -> Conv2dGeom {
        loop {
            let groups = [1, 1, 2, 3][r.below(4)];
            let depthwise = r.below(4) == 0;
            let c_in = if depthwise {
                groups * 2
            } else {
                groups * (1 + r.below(3))
            };
            let groups = if depthwise { c_in } else { groups };
            let c_out = groups * (1 + r.below(3));
            let (k_h, k_w) = (1 + r.below(4), 1 + r.below(4));
            let (h, w) = (1 + r.below(9), 1 + r.below(9));
            let (sh, sw) = (1 + r.below(3), 1 + r.below(3));
            let (dh, dw) = (1 + r.below(2), 1 + r.below(3));
            let (pt, pb, pl, pr) = (r.below(3), r.below(3), r.below(3), r.below(3));
            let (Some(out_h), Some(out_w)) = (
                conv_out_len(h, pt + pb, k_h, sh, dh),
                conv_out_len(w, pl + pr, k_w, sw, dw),
            ) else {
                continue;
            };
            return Conv2dGeom {
                n: 1 + r.below(3),
                c_in,
                h,
                w,
                c_out,
                k_h,
                k_w,
                stride_h: sh,
                stride_w: sw,
                pad_t: pt,
                pad_l: pl,
                dil_h: dh,
                dil_w: dw,
                groups,
                out_h,
                out_w,
            };
        }
    }

    #[test]
    fn fast_conv_matches_reference_on_random_geometries() {
        let mut r = Rng::new(11);
        for _ in 0..300 {
            let g = random_geom(&mut r);
            let x: Vec<f32> = (0..g.n * g.c_in * g.h * g.w).map(|_| r.normal()).collect();
            let w: Vec<f32> = (0..g.c_out * g.kdim()).map(|_| r.normal()).collect();
            let b: Vec<f32> = (0..g.c_out).map(|_| r.normal()).collect();
            let dy: Vec<f32> = (0..g.n * g.c_out * g.positions())
                .map(|_| r.normal())
                .collect();
            let want = reference::forward(&g, &x, &w, Some(&b));
            for micro in micros() {
                let mut y = vec![f32::NAN; dy.len()];
                conv2d_forward_with(micro, &g, &x, &w, Some(&b), &mut y);
                close(&y, &want, &format!("forward {micro:?}"), &g);
            }
            let (rdx, rdw) = reference::backward(&g, &x, &w, &dy);
            for micro in micros() {
                let mut dx = vec![f32::NAN; x.len()];
                conv2d_backward_input_with(micro, &g, &dy, &w, &mut dx);
                close(&dx, &rdx, &format!("grad_x {micro:?}"), &g);
            }
            for micro in micros() {
                let mut dw = vec![f32::NAN; w.len()];
                conv2d_backward_weight_with(micro, &g, &x, &dy, &mut dw, None);
                close(&dw, &rdw, &format!("grad_w {micro:?}"), &g);
            }
            let mut dw = vec![f32::NAN; w.len()];
            let mut db = vec![f32::NAN; b.len()];
            conv2d_backward_weight(&g, &x, &dy, &mut dw, Some(&mut db));
            close(&dw, &rdw, "grad_w", &g);
            for o in 0..g.c_out {
                let s: f32 = (0..g.n)
                    .flat_map(|n| dy[(n * g.c_out + o) * g.positions()..][..g.positions()].iter())
                    .sum();
                assert!((db[o] - s).abs() < 1e-4 * (1.0 + s.abs()));
            }
        }
    }

    #[test]
    fn tiled_lowering_matches_reference_when_tiles_split_rows() {
        // kdim large enough that a tile holds fewer positions than the image.
        let g = Conv2dGeom {
            n: 2,
            c_in: 128,
            h: 30,
            w: 29,
            c_out: 5,
            k_h: 3,
            k_w: 3,
            stride_h: 1,
            stride_w: 2,
            pad_t: 1,
            pad_l: 2,
            dil_h: 2,
            dil_w: 1,
            groups: 1,
            out_h: conv_out_len(30, 2, 3, 1, 2).unwrap(),
            out_w: conv_out_len(29, 3, 3, 2, 1).unwrap(),
        };
        assert!(g.tile() < g.positions());
        let mut r = Rng::new(2);
        let x: Vec<f32> = (0..g.n * g.c_in * g.h * g.w).map(|_| r.normal()).collect();
        let w: Vec<f32> = (0..g.c_out * g.kdim()).map(|_| r.normal()).collect();
        let dy: Vec<f32> = (0..g.n * g.c_out * g.positions())
            .map(|_| r.normal())
            .collect();
        let want = reference::forward(&g, &x, &w, None);
        for micro in micros() {
            let mut y = vec![0f32; dy.len()];
            conv2d_forward_with(micro, &g, &x, &w, None, &mut y);
            close(&y, &want, &format!("forward {micro:?}"), &g);
        }
        let (rdx, rdw) = reference::backward(&g, &x, &w, &dy);
        let mut dx = vec![0f32; x.len()];
        conv2d_backward_input(&g, &dy, &w, &mut dx);
        close(&dx, &rdx, "grad_x", &g);
        let mut dw = vec![0f32; w.len()];
        conv2d_backward_weight(&g, &x, &dy, &mut dw, None);
        close(&dw, &rdw, "grad_w", &g);
    }

    /// Stride-1 geometries of the implicit lowering: in place (no padding, the last panel
    /// gathered), padded with wide columns, a single output row, tiles that split rows.
    #[test]
    fn implicit_lowering_matches_reference() {
        let mut r = Rng::new(3);
        let cases = [
            // (n, c_in, h, w, c_out, k_h, k_w, pad_t, pad_b, pad_l, pad_r, dil_h, dil_w, groups)
            (2, 5, 7, 9, 3, 1, 1, 0, 0, 0, 0, 1, 1, 1),
            (3, 4, 6, 11, 10, 3, 3, 0, 0, 0, 0, 1, 1, 1),
            (2, 3, 1, 50, 9, 1, 3, 0, 0, 4, 0, 1, 2, 1),
            (2, 6, 1, 40, 4, 1, 2, 0, 0, 0, 0, 1, 5, 2),
            (1, 3, 9, 8, 70, 3, 2, 1, 2, 0, 1, 2, 1, 1),
            (2, 8, 30, 33, 70, 3, 3, 1, 1, 1, 1, 1, 1, 1),
            (1, 2, 5, 5, 2, 5, 5, 4, 4, 4, 4, 1, 1, 1),
        ];
        for (n, c_in, h, w, c_out, k_h, k_w, pt, pb, pl, pr, dh, dw, groups) in cases {
            let g = Conv2dGeom {
                n,
                c_in,
                h,
                w,
                c_out,
                k_h,
                k_w,
                stride_h: 1,
                stride_w: 1,
                pad_t: pt,
                pad_l: pl,
                dil_h: dh,
                dil_w: dw,
                groups,
                out_h: conv_out_len(h, pt + pb, k_h, 1, dh).unwrap(),
                out_w: conv_out_len(w, pl + pr, k_w, 1, dw).unwrap(),
            };
            assert!(Implicit::of(&g).is_some(), "{g:?}");
            let x: Vec<f32> = (0..g.n * g.c_in * g.h * g.w).map(|_| r.normal()).collect();
            let wt: Vec<f32> = (0..g.c_out * g.kdim()).map(|_| r.normal()).collect();
            let b: Vec<f32> = (0..g.c_out).map(|_| r.normal()).collect();
            let want = reference::forward(&g, &x, &wt, Some(&b));
            let dy: Vec<f32> = (0..want.len()).map(|_| r.normal()).collect();
            let (rdx, rdw) = reference::backward(&g, &x, &wt, &dy);
            for micro in micros() {
                let mut y = vec![f32::NAN; want.len()];
                conv2d_forward_with(micro, &g, &x, &wt, Some(&b), &mut y);
                close(&y, &want, &format!("forward {micro:?}"), &g);
                let mut dx = vec![f32::NAN; x.len()];
                conv2d_backward_input_with(micro, &g, &dy, &wt, &mut dx);
                close(&dx, &rdx, &format!("grad_x {micro:?}"), &g);
                let mut dw = vec![f32::NAN; wt.len()];
                conv2d_backward_weight_with(micro, &g, &x, &dy, &mut dw, None);
                close(&dw, &rdw, &format!("grad_w {micro:?}"), &g);
            }
        }
    }

    #[test]
    fn valid_range_is_exact() {
        for out in 0..6 {
            for stride in 1..4 {
                for offset in 0..5 {
                    for pad in 0..4 {
                        for n in 1..6 {
                            let (lo, hi) = valid_range(out, stride, offset, pad, n);
                            for o in 0..out {
                                let i = (o * stride + offset) as isize - pad as isize;
                                let ok = i >= 0 && (i as usize) < n;
                                assert_eq!(
                                    ok,
                                    o >= lo && o < hi,
                                    "{out} {stride} {offset} {pad} {n} {o}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
