//! A packed matrix product for the convolution kernels: register-blocked micro-kernels (AVX-512
//! and AVX2 + FMA, chosen at run time) over operands that the caller packs itself.
//!
//! A general GEMM packs both operands on every call. A convolution can do better: the weight
//! matrix is packed once per call and shared by every image and tile, and the lowered input is
//! written by im2col straight into the packed layout, so it is never copied a second time.
//!
//! Layouts (`mr` x `nr` is the micro-kernel's register block):
//! - packed A (`m x k`): panels of `mr` rows; panel `i` holds `a[i * mr + r][p]` at
//!   `i * k * mr + p * mr + r`, rows past `m` are zero.
//! - B (`k x nr`) is read through a table of row offsets: `b[p][j]` at `offs[p] + j`. A packed
//!   panel has `offs[p] = p * nr`; a stride-1 convolution points the rows straight into its
//!   zero-padded input, so its lowered matrix is never written at all. Columns past the
//!   caller's `cols` are never stored to C, whatever they hold.

use super::gemm::MatRef;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

/// What a kernel call does with the block of C it computes (`AB` = the product).
#[derive(Clone, Copy, Debug)]
pub enum Store<'a> {
    /// `C = AB`.
    Replace,
    /// `C += AB`.
    Accumulate,
    /// `C = AB + bias[row]`, the bias indexed by the rows of this call.
    Bias(&'a [f32]),
}

/// A micro-kernel this CPU can run, with its register block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Micro {
    /// Rows of C per kernel call.
    pub mr: usize,
    /// Columns of C per kernel call (the width of a packed B panel).
    pub nr: usize,
    isa: Isa,
}

impl Micro {
    /// Every micro-kernel this CPU supports, fastest first.
    pub fn available() -> Vec<Micro> {
        #[allow(unused_mut)]
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                v.push(Micro {
                    mr: 8,
                    nr: 48,
                    isa: Isa::Avx512,
                });
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                v.push(Micro {
                    mr: 6,
                    nr: 16,
                    isa: Isa::Avx2,
                });
            }
        }
        v
    }

    /// The fastest micro-kernel, or `None` where there is none (the callers then fall back to
    /// `matrixmultiply`). `CONVNET_MICRO=avx2` or `=off` selects a slower one, for comparison.
    pub fn best() -> Option<Micro> {
        static BEST: std::sync::OnceLock<Option<Micro>> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            let all = Micro::available();
            match std::env::var("CONVNET_MICRO").as_deref() {
                Ok("off") => None,
                Ok("avx2") => all.into_iter().find(|m| m.nr == 16),
                _ => all.into_iter().next(),
            }
        })
    }

    /// Whether this is the AVX-512 kernel (the others are AVX2 + FMA).
    pub(crate) fn is_avx512(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return self.isa == Isa::Avx512;
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// Length of packed A for an `m x k` matrix.
    pub fn packed_a_len(&self, m: usize, k: usize) -> usize {
        m.div_ceil(self.mr) * self.mr * k
    }

    /// Pack the `m x k` matrix `a` (any strides) into `dst` (resized to [`Self::packed_a_len`]).
    pub fn pack_a(&self, m: usize, k: usize, a: MatRef, dst: &mut Vec<f32>) {
        dst.clear();
        dst.resize(self.packed_a_len(m, k), 0.0);
        self.pack_a_into(m, k, a, dst);
    }

    /// [`Self::pack_a`] into a slice of exactly [`Self::packed_a_len`] zeros.
    pub fn pack_a_into(&self, m: usize, k: usize, a: MatRef, dst: &mut [f32]) {
        let mr = self.mr;
        debug_assert_eq!(dst.len(), self.packed_a_len(m, k));
        if k == 0 {
            return;
        }
        // column by column: each of the panel's cache lines written once, in order (row by
        // row, every line of a panel longer than L1 came back from L2 `mr` times)
        for (i, panel) in dst.chunks_exact_mut(k * mr).enumerate() {
            let rows = mr.min(m - i * mr);
            let base = i * mr * a.rs;
            for (p, out) in panel.chunks_exact_mut(mr).enumerate() {
                let at = base + p * a.cs;
                for (r, o) in out[..rows].iter_mut().enumerate() {
                    *o = a.data[at + r * a.rs];
                }
            }
        }
    }

    /// `C[0..m, 0..cols] (+)= A * B` for packed A (`m x k`) and B (`k x nr`, row `p` at
    /// `b[offs[p]..]`); C has row stride `ldc`; `store` says how the product meets C.
    #[allow(clippy::too_many_arguments)]
    pub fn panel(
        &self,
        m: usize,
        k: usize,
        a: &[f32],
        b: &[f32],
        offs: &[usize],
        c: &mut [f32],
        ldc: usize,
        cols: usize,
        store: Store,
    ) {
        if m == 0 || cols == 0 {
            return;
        }
        assert!(c.len() >= (m - 1) * ldc + cols, "panel: C too short");
        let a = (a, k * self.mr);
        // SAFETY: `c` holds the block (asserted) and is borrowed mutably for the call
        unsafe { self.panel_to(m, k, a, b, offs, c.as_mut_ptr(), ldc, cols, store) }
    }

    /// [`Self::panel`] into C through a pointer, for callers whose parallel tasks own
    /// rectangles of one C (a slice per task would overlap the others' rows); A's panels of
    /// `mr` rows `a.1` apart (`k * mr` for a packed A of `k` columns; more where `k` is one
    /// pass over a part of longer rows).
    ///
    /// # Safety
    /// `c` must point to a block of `m` rows of stride `ldc` and `cols` columns that is valid
    /// for reads and writes and that nothing else reads or writes during the call.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn panel_to(
        &self,
        m: usize,
        k: usize,
        (a, a_stride): (&[f32], usize),
        b: &[f32],
        offs: &[usize],
        c: *mut f32,
        ldc: usize,
        cols: usize,
        store: Store,
    ) {
        if m == 0 || cols == 0 {
            return;
        }
        assert!(
            cols <= self.nr,
            "panel: {cols} columns in a panel of {}",
            self.nr
        );
        let blocks = m.div_ceil(self.mr);
        assert!(a_stride >= k * self.mr, "panel: A's panels overlap");
        let a_len = (blocks - 1) * a_stride + k * self.mr;
        assert!(a.len() >= a_len, "panel: packed A too short");
        assert!(
            offs.len() >= k,
            "panel: {} row offsets for k = {k}",
            offs.len()
        );
        let last = offs[..k].iter().max().map_or(0, |&o| o + self.nr);
        assert!(b.len() >= last, "panel: B too short for its row offsets");
        let accumulate = matches!(store, Store::Accumulate);
        let bias = match store {
            Store::Bias(b) => {
                assert!(b.len() >= m, "panel: {} biases for {m} rows", b.len());
                Some(b)
            }
            _ => None,
        };
        for i in 0..blocks {
            let rows = self.mr.min(m - i * self.mr);
            let ap = a[i * a_stride..].as_ptr();
            // SAFETY: row i * mr < m of the caller's block
            let cp = unsafe { c.add(i * self.mr * ldc) };
            let (bp, op) = (b.as_ptr(), offs.as_ptr());
            let bias = bias.map_or(std::ptr::null(), |b| b[i * self.mr..].as_ptr());
            // SAFETY: the kernel reads k * mr values of A from ap, nr values of B at each of
            // the k row offsets, and touches C at rows < rows (row stride ldc) and columns
            // < cols only (and `bias` at rows < rows, when not null); the asserts above bound
            // A, B and the bias within their slices, the caller's contract C, and
            // `available` checked the CPU features.
            unsafe {
                match self.isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => {
                        x86::kernel_avx512(k, ap, bp, op, cp, ldc, rows, cols, accumulate, bias)
                    }
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => {
                        x86::kernel_avx2(k, ap, bp, op, cp, ldc, rows, cols, accumulate, bias)
                    }
                }
            }
        }
    }

    /// Row offsets of a packed B panel: row `p` at `p * nr`.
    pub fn packed_offsets(&self, k: usize) -> Vec<usize> {
        (0..k).map(|p| p * self.nr).collect()
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// 8 x 48 block: 24 accumulators of 16 lanes; A broadcast from the packed panel.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn kernel_avx512(
        k: usize,
        a: *const f32,
        b: *const f32,
        offs: *const usize,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        accumulate: bool,
        bias: *const f32,
    ) {
        const MR: usize = 8;
        let mut s = [[_mm512_setzero_ps(); 3]; MR];
        let mut ap = a;
        // SAFETY (whole body): the caller guarantees k * MR values at a, NR at b + offs[p] for
        // p < k, and C
        // rows < rows, columns < cols in bounds.
        unsafe {
            for p in 0..k {
                let bp = b.add(*offs.add(p));
                let b0 = _mm512_loadu_ps(bp);
                let b1 = _mm512_loadu_ps(bp.add(16));
                let b2 = _mm512_loadu_ps(bp.add(32));
                for (i, si) in s.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*ap.add(i));
                    si[0] = _mm512_fmadd_ps(av, b0, si[0]);
                    si[1] = _mm512_fmadd_ps(av, b1, si[1]);
                    si[2] = _mm512_fmadd_ps(av, b2, si[2]);
                }
                ap = ap.add(MR);
            }
            let masks: [__mmask16; 3] = std::array::from_fn(|j| {
                let left = cols.saturating_sub(16 * j).min(16);
                ((1u32 << left) - 1) as __mmask16
            });
            for (i, si) in s.iter().enumerate() {
                if i >= rows {
                    break;
                }
                let row = c.add(i * ldc);
                for j in 0..3 {
                    if masks[j] == 0 {
                        break;
                    }
                    let p = row.add(16 * j);
                    let mut v = si[j];
                    if accumulate {
                        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(masks[j], p));
                    }
                    if !bias.is_null() {
                        v = _mm512_add_ps(v, _mm512_set1_ps(*bias.add(i)));
                    }
                    _mm512_mask_storeu_ps(p, masks[j], v);
                }
            }
        }
    }

    /// 6 x 16 block: 12 accumulators of 8 lanes (16 registers in all on AVX2).
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn kernel_avx2(
        k: usize,
        a: *const f32,
        b: *const f32,
        offs: *const usize,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        accumulate: bool,
        bias: *const f32,
    ) {
        const MR: usize = 6;
        let mut s = [[_mm256_setzero_ps(); 2]; MR];
        let mut ap = a;
        // SAFETY (whole body): as for kernel_avx512, with this kernel's block.
        unsafe {
            for p in 0..k {
                let bp = b.add(*offs.add(p));
                let b0 = _mm256_loadu_ps(bp);
                let b1 = _mm256_loadu_ps(bp.add(8));
                for (i, si) in s.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*ap.add(i));
                    si[0] = _mm256_fmadd_ps(av, b0, si[0]);
                    si[1] = _mm256_fmadd_ps(av, b1, si[1]);
                }
                ap = ap.add(MR);
            }
            let masks: [__m256i; 2] = std::array::from_fn(|j| {
                let left = cols.saturating_sub(8 * j).min(8) as i32;
                let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                _mm256_cmpgt_epi32(_mm256_set1_epi32(left), lane)
            });
            for (i, si) in s.iter().enumerate() {
                if i >= rows {
                    break;
                }
                let row = c.add(i * ldc);
                for j in 0..2 {
                    if 8 * j >= cols {
                        break;
                    }
                    let p = row.add(8 * j);
                    // whole vectors plainly: masked loads and stores are slow on AMD's cores
                    // (a masked store costs about a dozen cycles on Zen 3 against one)
                    let whole = cols >= 8 * (j + 1);
                    let mut v = si[j];
                    if accumulate {
                        let old = if whole {
                            _mm256_loadu_ps(p)
                        } else {
                            _mm256_maskload_ps(p, masks[j])
                        };
                        v = _mm256_add_ps(v, old);
                    }
                    if !bias.is_null() {
                        v = _mm256_add_ps(v, _mm256_set1_ps(*bias.add(i)));
                    }
                    if whole {
                        _mm256_storeu_ps(p, v);
                    } else {
                        _mm256_maskstore_ps(p, masks[j], v);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn every_kernel_matches_a_plain_product_on_ragged_blocks() {
        let mut r = Rng::new(5);
        for mk in Micro::available() {
            for &(m, k, cols) in &[
                (1, 1, 1),
                (5, 3, 7),
                (8, 17, 16),
                (13, 40, mk.nr),
                (9, 0, 3),
            ] {
                let cols = cols.min(mk.nr);
                let a: Vec<f32> = (0..m * k).map(|_| r.normal()).collect();
                let mut b: Vec<f32> = (0..k * mk.nr).map(|_| r.normal()).collect();
                // columns past `cols` hold garbage the kernel must not store
                for p in 0..k {
                    for j in cols..mk.nr {
                        b[p * mk.nr + j] = f32::NAN;
                    }
                }
                let mut ap = Vec::new();
                mk.pack_a(m, k, MatRef::rm(&a, k), &mut ap);
                let ldc = mk.nr + 3;
                let bias: Vec<f32> = (0..m).map(|_| r.normal()).collect();
                for (store, mode) in [
                    (Store::Replace, 0),
                    (Store::Accumulate, 1),
                    (Store::Bias(&bias), 2),
                ] {
                    let mut c: Vec<f32> = (0..m * ldc).map(|i| i as f32).collect();
                    mk.panel(
                        m,
                        k,
                        &ap,
                        &b,
                        &mk.packed_offsets(k),
                        &mut c,
                        ldc,
                        cols,
                        store,
                    );
                    for i in 0..m {
                        for j in 0..ldc {
                            let old = (i * ldc + j) as f32;
                            let got = c[i * ldc + j];
                            if j >= cols {
                                assert_eq!(got, old, "{mk:?} wrote past the block at {i},{j}");
                                continue;
                            }
                            let dot: f64 = (0..k)
                                .map(|p| a[i * k + p] as f64 * b[p * mk.nr + j] as f64)
                                .sum();
                            let want = dot
                                + match mode {
                                    1 => old as f64,
                                    2 => bias[i] as f64,
                                    _ => 0.0,
                                };
                            assert!(
                                (got as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
                                "{mk:?} m{m} k{k} cols{cols}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
