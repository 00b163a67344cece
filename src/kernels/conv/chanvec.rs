//! The implicit lowering's second kernel: output channels across the vector lanes.
//!
//! The micro-kernel of [`crate::kernels::micro`] puts output positions across its lanes, in
//! panels of `nr` wide positions, so a row of `out_w` outputs costs `wq` (the padded row,
//! `out_w + (k_w - 1) * dil_w`) and a tile's last panel is computed whole: on F's second
//! convolution (14 x 14 outputs, rows 16 wide, 224 wide positions in panels of 48) a fifth of
//! the work is thrown away. Here a block is `cb` output channels (two vector registers) by up
//! to `pmax` output positions of one row: each tap broadcasts the input value of each position
//! and multiplies it into the two registers of weights, so only real outputs are computed.
//! The block is then written out through a small tile, channel by channel.
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
    /// plane, from position `q0` on), into `c` (`cout_g` rows of stride `ldc`): only the
    /// columns below `out_w` of each wide row of `wq` are computed, and written at column
    /// `f(q) - f(q0)` with `f(q) = (q / wq) * row_out + min(q % wq, row_out)`: `q - q0` for
    /// `row_out == wq`, the compact output positions for `row_out == out_w`. `wg`: the
    /// group's packed weights; `offs`: each tap's offset from a position, as the implicit
    /// lowering's; `bias` from the group's first channel.
    pub(crate) fn block(
        &self,
        g: &Conv2dGeom,
        (wg, offs): (&[f32], &[usize]),
        xb: &[f32],
        (q0, q1, wq): (usize, usize, usize),
        bias: Option<&[f32]>,
        (c, ldc, row_out): (&mut [f32], usize, usize),
    ) {
        let (kd, cb) = (g.kdim(), self.cb);
        let f = |q: usize| (q / wq) * row_out + (q % wq).min(row_out);
        let f0 = f(q0);
        let reach = offs.iter().max().copied().unwrap_or(0);
        for (blk, wb) in wg.chunks_exact(kd * cb).enumerate() {
            let mut q = q0;
            while q < q1 {
                let ow = q % wq;
                if ow >= g.out_w {
                    q += wq - ow;
                    continue;
                }
                // the row's rest in blocks of even size (14 as 5 + 5 + 4, not 6 + 6 + 2): a
                // short block has too few accumulators to hide the multiply-add's latency
                let left = g.out_w - ow;
                let p = left.div_ceil(left.div_ceil(self.pmax)).min(q1 - q);
                let x = &xb[q - q0..];
                let at = blk * cb * ldc + f(q) - f0;
                let bias = bias.map(|b| &b[blk * cb..blk * cb + cb]);
                assert!(x.len() >= reach + p && offs.len() == kd && wb.len() == kd * cb);
                assert!(c.len() >= at + (cb - 1) * ldc + p);
                let out = Out {
                    c: c[at..].as_mut_ptr(),
                    ldc,
                    bias: bias.map_or(std::ptr::null(), |b| b.as_ptr()),
                };
                // SAFETY: the kernel reads `x[offs[k] + j]` for k < kd, j < p (in bounds:
                // asserted), kd * cb weights and cb bias values, and writes `p` values of
                // each of `cb` rows `ldc` apart from `c[at]` (asserted); the ISA was checked
                // when `self` was made (`Micro::is_avx512`, or AVX2 + FMA for any
                // micro-kernel).
                unsafe { self.kernel(p, kd, offs.as_ptr(), x.as_ptr(), wb.as_ptr(), out) };
                q += p;
            }
        }
    }

    /// One block of `p` positions (1 <= p <= pmax) by `cb` channels, written to `out`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn kernel(
        &self,
        p: usize,
        kd: usize,
        offs: *const usize,
        x: *const f32,
        w: *const f32,
        out: Out,
    ) {
        macro_rules! pick {
            ($f:ident, $($n:literal)*) => {
                match p {
                    $($n => $f::<$n>(kd, offs, x, w, out),)*
                    _ => unreachable!("block of {p} positions"),
                }
            };
        }
        // SAFETY: the caller's contract; p is within the kernel's block
        unsafe {
            if self.cb == 32 {
                pick!(avx512, 1 2 3 4 5 6 7 8 9 10 11 12 13 14)
            } else {
                pick!(avx2, 1 2 3 4 5 6)
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn kernel(
        &self,
        _: usize,
        _: usize,
        _: *const usize,
        _: *const f32,
        _: *const f32,
        _: Out,
    ) {
        unreachable!("no channel-vector kernel off x86-64")
    }
}

/// Where a block goes: channel `v`, position `j` to `c[v * ldc + j]`, plus `bias[v]` where
/// `bias` is not null.
#[derive(Clone, Copy)]
struct Out {
    c: *mut f32,
    ldc: usize,
    bias: *const f32,
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

/// `P` positions x 16 channels: 2P accumulators of 8 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)] // (indices into registers, channels and positions)
unsafe fn avx2<const P: usize>(
    kd: usize,
    offs: *const usize,
    x: *const f32,
    w: *const f32,
    out: Out,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; P];
    // SAFETY (whole body): the contract of `ChanVec::kernel`
    unsafe {
        for k in 0..kd {
            let w0 = _mm256_loadu_ps(w.add(k * 16));
            let w1 = _mm256_loadu_ps(w.add(k * 16 + 8));
            let xk = x.add(*offs.add(k));
            for (j, a) in acc.iter_mut().enumerate() {
                let b = _mm256_set1_ps(*xk.add(j));
                a[0] = _mm256_fmadd_ps(b, w0, a[0]);
                a[1] = _mm256_fmadd_ps(b, w1, a[1]);
            }
        }
        // through a tile, position-major, then channel by channel
        let mut tile = [[0f32; 16]; P];
        for (j, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(tile[j].as_mut_ptr(), a[0]);
            _mm256_storeu_ps(tile[j].as_mut_ptr().add(8), a[1]);
        }
        for v in 0..16 {
            let row = out.c.add(v * out.ldc);
            for j in 0..P {
                let mut y = tile[j][v];
                if !out.bias.is_null() {
                    y += *out.bias.add(v);
                }
                *row.add(j) = y;
            }
        }
    }
}
