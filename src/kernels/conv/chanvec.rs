//! The implicit lowering's second kernel: output channels across the vector lanes.
//!
//! The micro-kernel of [`crate::kernels::micro`] puts output positions across its lanes, in
//! panels of `nr` wide positions, so a row of `out_w` outputs costs `wq` (the padded row,
//! `out_w + (k_w - 1) * dil_w`) and a tile's last panel is computed whole: on F's second
//! convolution (14 x 14 outputs, rows 16 wide, 224 wide positions in panels of 48) a fifth of
//! the work is thrown away. Here a block is `cb` output channels (two vector registers) by up
//! to `pmax` real output positions: each tap broadcasts the input value of each position and
//! multiplies it into the two registers of weights, so only real outputs are computed. The
//! AVX2 kernel (16 channels by 6 positions) keeps each position's offset in a register, so
//! its blocks run on across rows: F's 196 outputs are 31 blocks of 6 and 2 of 5, where blocks
//! within a row (14 as 5 + 5 + 4) ran 8-10% slower on a Zen 3. Its block is transposed in
//! registers and stored a channel's positions at a time (whole vectors where the lanes past
//! the block fall on positions a later block writes); the AVX-512 kernel's (32 channels by up
//! to 14 positions of one row) likewise, under a mask.
//!
//! Each output is the same chain of fused multiply-adds over the taps in the same order as in
//! the micro-kernel (then `+ bias`), so the results are the micro-kernel's, bit for bit.

use super::Conv2dGeom;
use crate::kernels::micro::Micro;

/// A channel-vector kernel this CPU runs, with its block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChanVec {
    /// Output channels per block (two vector registers).
    cb: usize,
    /// Output positions per block, at most.
    pmax: usize,
}

impl ChanVec {
    /// The kernel for `g` on the ISA of `mk` (so that `CONVNET_MICRO` holds both), where its
    /// output channels per group are a whole number of blocks and it pays: `used`, the share
    /// of the micro-kernel's computed columns that are real outputs, is below 0.93, and
    /// there are at least 32 taps (with fewer, writing a block out through the tile costs
    /// more than the wide columns: F's first convolution, 9 taps, ran 0.28 ms on the
    /// micro-kernel and 0.44 ms here on an AMD EPYC Zen 5). `None`: the micro-kernel runs.
    pub(crate) fn for_geom(mk: Micro, g: &Conv2dGeom, used: f64) -> Option<ChanVec> {
        if used >= 0.93 || g.kdim() < 32 {
            return None;
        }
        Self::channels_last(mk, g)
    }

    /// The kernel for `g` on the ISA of `mk` whether or not it pays on planes: where a
    /// convolution's output is wanted channels last (its bands pooled), nothing is
    /// transposed and it beats the micro-kernel at any number of taps.
    pub(crate) fn channels_last(mk: Micro, g: &Conv2dGeom) -> Option<ChanVec> {
        let cv = if mk.is_avx512() {
            ChanVec { cb: 32, pmax: 14 }
        } else {
            ChanVec { cb: 16, pmax: 6 }
        };
        (cfg!(target_arch = "x86_64") && g.cout_g().is_multiple_of(cv.cb) && g.out_w > 1)
            .then_some(cv)
    }

    /// Length of the weights packed by [`ChanVec::pack`].
    pub(crate) fn packed_len(&self, g: &Conv2dGeom) -> usize {
        g.c_out * g.kdim()
    }

    /// `(c_out, c_in / groups, k_h, k_w)` weights as blocks of `cb` channels, tap-major: channel
    /// `v` of block `b` of group `grp`, tap `k`, at `((grp * blocks + b) * kdim + k) * cb + v`.
    pub(crate) fn pack(&self, g: &Conv2dGeom, w: &[f32], dst: &mut Vec<f32>) {
        let (kd, cb) = (g.kdim(), self.cb);
        dst.clear();
        dst.resize(self.packed_len(g), 0.0);
        for (blk, out) in dst.chunks_exact_mut(kd * cb).enumerate() {
            for (k, taps) in out.chunks_exact_mut(cb).enumerate() {
                for (v, t) in taps.iter_mut().enumerate() {
                    *t = w[(blk * cb + v) * kd + k];
                }
            }
        }
    }

    /// The outputs of one group at wide positions `q0..q1` of `xb` (the group's first padded
    /// plane, from position `q0` on), into `c` as `layout` says: only the real outputs (the
    /// columns below `out_w` of each wide row of `wq`) are computed, and written compact,
    /// numbered from the first real position of `q0..q1`. `wg`: the group's packed weights;
    /// `offs`: each tap's offset from a position, as the implicit lowering's; `bias` from the
    /// group's first channel.
    pub(crate) fn block(
        &self,
        g: &Conv2dGeom,
        (wg, offs): (&[f32], &[usize]),
        xb: &[f32],
        (q0, q1, wq): (usize, usize, usize),
        bias: Option<&[f32]>,
        (c, layout): (&mut [f32], Layout),
    ) {
        let (kd, cb, ow, cog) = (g.kdim(), self.cb, g.out_w, g.cout_g());
        // real (compact) position of wide position q, and back
        let real = |q: usize| (q / wq) * ow + (q % wq).min(ow);
        let wide = |r: usize| (r / ow) * wq + r % ow;
        let (r0, r1) = (real(q0), real(q1));
        let reach = offs.iter().max().copied().unwrap_or(0);
        if let Layout::Planes(ld) = layout {
            assert!(
                r1 - r0 <= ld,
                "a channel's outputs overlap the next channel's"
            );
        }
        for (blk, wb) in wg.chunks_exact(kd * cb).enumerate() {
            let bias = bias.map(|b| &b[blk * cb..blk * cb + cb]);
            for (r, p) in self.blocks(r0, r1, ow) {
                // each position's offset from the block's first (the AVX2 kernel's blocks
                // may span rows; the AVX-512 kernel's stay within one)
                let mut pos = [0usize; 16];
                for (j, d) in pos.iter_mut().enumerate().take(p) {
                    *d = wide(r + j) - wide(r);
                }
                let x = &xb[wide(r) - q0..];
                assert!(x.len() > reach + pos[p - 1] && offs.len() == kd && wb.len() == kd * cb);
                // (first value, distance between channels' / positions' rows, whether whole
                // vectors may be stored, values from the first that it writes)
                let (at, ldc, whole, span) = match layout {
                    Layout::Planes(ld) => {
                        // a block may store whole vectors when the lanes past its end fall
                        // on positions of this call that a later block writes
                        let whole = r + 8 <= r1;
                        let row = if whole { 8 } else { p };
                        (blk * cb * ld + r - r0, ld, whole, (cb - 1) * ld + row)
                    }
                    Layout::ChannelsLast => {
                        ((r - r0) * cog + blk * cb, cog, false, (p - 1) * cog + cb)
                    }
                };
                assert!(c.len() >= at + span);
                let out = Out {
                    c: c[at..].as_mut_ptr(),
                    ldc,
                    bias: bias.map_or(std::ptr::null(), |b| b.as_ptr()),
                    whole,
                    channels_last: matches!(layout, Layout::ChannelsLast),
                };
                // SAFETY: the kernel reads `x[offs[k] + pos[j]]` for k < kd, j < p (in
                // bounds: asserted), kd * cb weights and cb bias values, and writes the
                // block's `span` values from `c[at]` (in bounds: asserted): `p` (8 where
                // `whole`: still within this call's `r1 - r0 <= ld` columns of the row) of
                // each of `cb` rows `ldc` apart, or `cb` channels of each of `p` positions
                // `ldc` apart; the ISA was checked when `self` was made
                // (`Micro::is_avx512`, or AVX2 + FMA for any micro-kernel).
                unsafe {
                    self.kernel(
                        p,
                        kd,
                        offs.as_ptr(),
                        (x.as_ptr(), pos.as_ptr()),
                        wb.as_ptr(),
                        out,
                    )
                };
            }
        }
    }

    /// The blocks `(first, count)` of real positions `r0..r1`, rows `ow` long, in order. The
    /// AVX2 kernel's span rows: as many blocks of at most `pmax` as needed, their sizes
    /// within one of each other (196 as 31 x 6 + 2 x 5: a short block has too few
    /// accumulators to hide the multiply-add's latency). The AVX-512 kernel's (14 positions,
    /// its positions' offsets not kept in registers) stay within a row, each row's rest split
    /// the same way.
    fn blocks(&self, r0: usize, r1: usize, ow: usize) -> impl Iterator<Item = (usize, usize)> {
        let (pmax, cross) = (self.pmax, self.cb == 16);
        let mut r = r0;
        let (mut left, mut n) = (0, 0);
        std::iter::from_fn(move || {
            if r >= r1 {
                return None;
            }
            if n == 0 {
                // a new run of positions split evenly: the rest of the call, or of the row
                left = if cross {
                    r1 - r
                } else {
                    (ow - r % ow).min(r1 - r)
                };
                n = left.div_ceil(pmax);
            }
            let p = left.div_ceil(n);
            let at = r;
            (r, left, n) = (r + p, left - p, n - 1);
            Some((at, p))
        })
    }

    /// One block of `p` positions (1 <= p <= pmax) by `cb` channels, written to `out`;
    /// position `j` reads the input at `x + pos[j]` (the AVX-512 kernel, whose blocks stay
    /// within a row, at `x + j`).
    #[cfg(target_arch = "x86_64")]
    unsafe fn kernel(
        &self,
        p: usize,
        kd: usize,
        offs: *const usize,
        (x, pos): (*const f32, *const usize),
        w: *const f32,
        out: Out,
    ) {
        macro_rules! pick {
            ($f:ident $args:tt, $($n:literal)*) => {
                match p {
                    $($n => $f::<$n> $args,)*
                    _ => unreachable!("block of {p} positions"),
                }
            };
        }
        // SAFETY: the caller's contract; p is within the kernel's block
        unsafe {
            if self.cb == 32 {
                pick!(avx512(kd, offs, x, w, out), 1 2 3 4 5 6 7 8 9 10 11 12 13 14)
            } else {
                pick!(avx2(kd, offs, x, pos, w, out), 1 2 3 4 5 6)
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn kernel(
        &self,
        _: usize,
        _: usize,
        _: *const usize,
        _: (*const f32, *const usize),
        _: *const f32,
        _: Out,
    ) {
        unreachable!("no channel-vector kernel off x86-64")
    }
}

/// Where [`ChanVec::block`] writes a group's outputs.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Layout {
    /// `cout_g` rows `ld` apart (a channel's plane, or its part): real position `r` at
    /// column `r - r0`.
    Planes(usize),
    /// Position by position: real position `r`'s `cout_g` channels from `(r - r0) * cout_g`.
    ChannelsLast,
}

/// Where a block goes: channel `v`, position `j` to `c[v * ldc + j]` (`c[j * ldc + v]` where
/// `channels_last`), plus `bias[v]` where `bias` is not null; `whole`: each channel's row may
/// be written 8 values long (the values past the block's are written again later).
#[derive(Clone, Copy)]
struct Out {
    c: *mut f32,
    ldc: usize,
    bias: *const f32,
    whole: bool,
    channels_last: bool,
}

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// `P` positions x 32 channels: 2P accumulators of 16 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::needless_range_loop)] // (indices into registers, channels and positions)
unsafe fn avx512<const P: usize>(
    kd: usize,
    offs: *const usize,
    x: *const f32,
    w: *const f32,
    out: Out,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; P];
    // SAFETY (whole body): the contract of `ChanVec::kernel`
    unsafe {
        for k in 0..kd {
            let w0 = _mm512_loadu_ps(w.add(k * 32));
            let w1 = _mm512_loadu_ps(w.add(k * 32 + 16));
            let xk = x.add(*offs.add(k));
            for (j, a) in acc.iter_mut().enumerate() {
                let b = _mm512_set1_ps(*xk.add(j));
                a[0] = _mm512_fmadd_ps(b, w0, a[0]);
                a[1] = _mm512_fmadd_ps(b, w1, a[1]);
            }
        }
        if out.channels_last {
            for (j, a) in acc.iter().enumerate() {
                for (h, v) in a.iter().enumerate() {
                    let mut v = *v;
                    if !out.bias.is_null() {
                        v = _mm512_add_ps(v, _mm512_loadu_ps(out.bias.add(16 * h)));
                    }
                    _mm512_storeu_ps(out.c.add(j * out.ldc + 16 * h), v);
                }
            }
            return;
        }
        // each half of the channels transposed in registers: one channel's P positions per
        // register, stored under a mask (the rows past P are zeros)
        let mask = ((1u32 << P) - 1) as __mmask16;
        for h in 0..2 {
            let mut r: [__m512; 16] = std::array::from_fn(|j| {
                if j < P {
                    acc[j][h]
                } else {
                    _mm512_setzero_ps()
                }
            });
            transpose16(&mut r);
            for (v, row) in r.iter().enumerate() {
                let o = h * 16 + v;
                let mut row = *row;
                if !out.bias.is_null() {
                    row = _mm512_add_ps(row, _mm512_set1_ps(*out.bias.add(o)));
                }
                _mm512_mask_storeu_ps(out.c.add(o * out.ldc), mask, row);
            }
        }
    }
}

/// Transpose 16 x 16 values in registers (`r[i]` lane `j` becomes `r[j]` lane `i`): four
/// butterfly stages, each swapping the off-diagonal blocks of size `b` (8, 4, 2, 1).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn transpose16(r: &mut [__m512; 16]) {
    for b in [8usize, 4, 2, 1] {
        let lo: [i32; 16] =
            std::array::from_fn(|l| { if l & b == 0 { l } else { 16 + l - b } } as i32);
        let hi: [i32; 16] =
            std::array::from_fn(|l| { if l & b == 0 { l + b } else { 16 + l } } as i32);
        // SAFETY: 16 i32 values each
        let (lo, hi) = unsafe {
            (
                _mm512_loadu_si512(lo.as_ptr().cast()),
                _mm512_loadu_si512(hi.as_ptr().cast()),
            )
        };
        for i in (0..16).filter(|i| i & b == 0) {
            let (a, c) = (r[i], r[i + b]);
            r[i] = _mm512_permutex2var_ps(a, lo, c);
            r[i + b] = _mm512_permutex2var_ps(a, hi, c);
        }
    }
}

/// `P` positions x 16 channels: 2P accumulators of 8 lanes. Position `j` reads the input at
/// `x + pos[j]`: the offsets stay in registers, so a block may span output rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)] // (indices into registers, channels and positions)
unsafe fn avx2<const P: usize>(
    kd: usize,
    offs: *const usize,
    x: *const f32,
    pos: *const usize,
    w: *const f32,
    out: Out,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; P];
    // SAFETY (whole body): the contract of `ChanVec::kernel`
    unsafe {
        let pos: [usize; P] = std::array::from_fn(|j| *pos.add(j));
        for k in 0..kd {
            let w0 = _mm256_loadu_ps(w.add(k * 16));
            let w1 = _mm256_loadu_ps(w.add(k * 16 + 8));
            let xk = x.add(*offs.add(k));
            for (j, a) in acc.iter_mut().enumerate() {
                let b = _mm256_broadcast_ss(&*xk.add(pos[j]));
                a[0] = _mm256_fmadd_ps(b, w0, a[0]);
                a[1] = _mm256_fmadd_ps(b, w1, a[1]);
            }
        }
        // each half of the channels plus its bias, stored as it is (channels last), or
        // transposed in registers: one channel's positions per register
        for h in 0..2 {
            let bias = match out.bias.is_null() {
                true => None,
                false => Some(_mm256_loadu_ps(out.bias.add(8 * h))),
            };
            if out.channels_last {
                for (j, a) in acc.iter().enumerate() {
                    let v = bias.map_or(a[h], |b| _mm256_add_ps(a[h], b));
                    _mm256_storeu_ps(out.c.add(j * out.ldc + 8 * h), v);
                }
                continue;
            }
            let mut r: [__m256; 8] = std::array::from_fn(|j| match (j < P, bias) {
                (false, _) => _mm256_setzero_ps(),
                (true, None) => acc[j][h],
                (true, Some(b)) => _mm256_add_ps(acc[j][h], b),
            });
            crate::kernels::x86::transpose8(&mut r);
            for (v, row) in r.iter().enumerate() {
                let dst = out.c.add((8 * h + v) * out.ldc);
                if out.whole {
                    _mm256_storeu_ps(dst, *row);
                } else {
                    let mut t = [0f32; 8];
                    _mm256_storeu_ps(t.as_mut_ptr(), *row);
                    std::ptr::copy_nonoverlapping(t.as_ptr(), dst, P);
                }
            }
        }
    }
}
