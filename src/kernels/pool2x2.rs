//! The 2 x 2, stride-2 max pooling of one output row, the common case of every small CNN:
//! forward (the maxima of two input rows) and backward (each output's gradient to the first
//! position of its window that holds the maximum, zeros elsewhere). An AVX2 path deinterleaves
//! eight windows per step (masked loads and stores for the last few); the plain path is the
//! reference, and both give the same bits (NaN wins a window, as in PyTorch; the scan order is
//! (0, 0), (0, 1), (1, 0), (1, 1)).

/// `a` or `b`, whichever is larger, NaN winning.
#[inline(always)]
pub(super) fn nan_max(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() & !a.is_nan() {
        b
    } else {
        a
    }
}

/// `out[j] = max(r0[2j], r0[2j + 1], r1[2j], r1[2j + 1])` for `j < out.len()`.
pub fn max_row(r0: &[f32], r1: &[f32], out: &mut [f32]) {
    let w = out.len();
    let (r0, r1) = (&r0[..2 * w], &r1[..2 * w]);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if super::wide_avx2() {
        // SAFETY: the CPU has AVX2; the slices hold 2w inputs and w outputs
        done = unsafe { x86::max_row(r0, r1, out) };
    }
    for j in done..w {
        out[j] = nan_max(
            nan_max(nan_max(r0[2 * j], r0[2 * j + 1]), r1[2 * j]),
            r1[2 * j + 1],
        );
    }
}

/// [`max_row`], also writing the window position of each maximum (0 to 3 in the scan order,
/// the first that holds it, as [`backward_row`] finds it) to `idx`.
pub fn max_row_argmax(r0: &[f32], r1: &[f32], out: &mut [f32], idx: &mut [u8]) {
    let w = out.len();
    let (r0, r1, idx) = (&r0[..2 * w], &r1[..2 * w], &mut idx[..w]);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if super::wide_avx2() {
        // SAFETY: the CPU has AVX2; the slices hold 2w inputs and w outputs and positions
        done = unsafe { x86::max_row_argmax(r0, r1, out, idx) };
    }
    let same = |v: f32, t: f32| (v == t) | (v.is_nan() & t.is_nan());
    for j in done..w {
        let (a, b, c, d) = (r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1]);
        let t = nan_max(nan_max(nan_max(a, b), c), d);
        out[j] = t;
        idx[j] = if same(a, t) {
            0
        } else if same(b, t) {
            1
        } else if same(c, t) {
            2
        } else {
            3
        };
    }
}

/// 2x2 stride-2 max pooling of a channels-last block `x` (`rows x w` positions of `c`
/// channels: position `(r, col)`'s channels from `(r * w + col) * c`; an odd last row or
/// column is not read), written as planes: channel `o`'s `(rows / 2) * (w / 2)` pooled
/// values, row by row, from `out + o * ld`. The values of [`max_row`] on each channel's plane.
///
/// # Safety
/// For every `o < c`, the `(rows / 2) * (w / 2)` values from `out + o * ld` must be valid for
/// writes and accessed by no one else meanwhile.
pub unsafe fn max_channels_last(
    x: &[f32],
    (rows, w, c): (usize, usize, usize),
    out: *mut f32,
    ld: usize,
) {
    let (ph, pw) = (rows / 2, w / 2);
    let np = ph * pw;
    assert!(x.len() >= 2 * ph * w * c, "a band shorter than its rows");
    #[cfg(target_arch = "x86_64")]
    if super::wide_avx2() && c.is_multiple_of(8) {
        // SAFETY: the CPU has AVX2; x holds the 2 * ph rows read (asserted); the caller's
        // contract for `out`
        unsafe { x86::max_channels_last(x, (w, c), (np, pw), out, ld) };
        return;
    }
    for p in 0..np {
        let at = (2 * (p / pw) * w + 2 * (p % pw)) * c;
        for o in 0..c {
            let (a, b) = (&x[at + o..], &x[at + w * c + o..]);
            let v = nan_max(nan_max(nan_max(a[0], a[c]), b[0]), b[c]);
            // SAFETY: p < np; the caller's contract
            unsafe { *out.add(o * ld + p) = v };
        }
    }
}

/// Backward of [`max_row_argmax`]: `top` and `bottom` (`2w` long) get `d[j]` at window
/// `j`'s position `idx[j]`, zero at the others (the values of [`backward_row`]).
pub fn scatter_row(idx: &[u8], d: &[f32], top: &mut [f32], bottom: &mut [f32]) {
    let w = d.len();
    let (idx, top, bottom) = (&idx[..w], &mut top[..2 * w], &mut bottom[..2 * w]);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if super::wide_avx2() {
        // SAFETY: the CPU has AVX2; every slice holds w windows
        done = unsafe { x86::scatter_row(idx, d, top, bottom) };
    }
    for j in done..w {
        let (i, d) = (idx[j], d[j]);
        let pick = |at: u8| if i == at { d } else { 0.0 };
        (top[2 * j], top[2 * j + 1]) = (pick(0), pick(1));
        (bottom[2 * j], bottom[2 * j + 1]) = (pick(2), pick(3));
    }
}

/// Backward of [`max_row`]: `top` and `bottom` (the gradient rows of `x0` and `x1`, `2w`
/// long) get `d[j]` at the first position of window `j` equal to its maximum `t[j]`, zero at
/// the others.
pub fn backward_row(
    (x0, x1): (&[f32], &[f32]),
    (t, d): (&[f32], &[f32]),
    top: &mut [f32],
    bottom: &mut [f32],
) {
    let w = t.len();
    let (x0, x1, d) = (&x0[..2 * w], &x1[..2 * w], &d[..w]);
    let (top, bottom) = (&mut top[..2 * w], &mut bottom[..2 * w]);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if super::wide_avx2() {
        // SAFETY: the CPU has AVX2; every slice holds w windows
        done = unsafe { x86::backward_row((x0, x1), (t, d), top, bottom) };
    }
    let same = |v: f32, t: f32| (v == t) | (v.is_nan() & t.is_nan());
    for j in done..w {
        let (t, d) = (t[j], d[j]);
        let m0 = same(x0[2 * j], t);
        let m1 = same(x0[2 * j + 1], t) & !m0;
        let m2 = same(x1[2 * j], t) & !(m0 | m1);
        let m3 = same(x1[2 * j + 1], t) & !(m0 | m1 | m2);
        let pick = |m: bool| if m { d } else { 0.0 };
        (top[2 * j], top[2 * j + 1]) = (pick(m0), pick(m1));
        (bottom[2 * j], bottom[2 * j + 1]) = (pick(m2), pick(m3));
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// A load/store mask of the first `k` lanes (`k <= 8`).
    #[target_feature(enable = "avx2")]
    fn first(k: usize) -> __m256i {
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(k as i32), lane)
    }

    /// The first `k` of eight floats at `p` (`k <= 8`), zeros after; reads only those.
    #[target_feature(enable = "avx2")]
    unsafe fn load(p: *const f32, k: usize) -> __m256 {
        // SAFETY: the caller guarantees k readable floats at p; masked lanes are not read
        unsafe {
            match k {
                0 => _mm256_setzero_ps(),
                8.. => _mm256_loadu_ps(p),
                _ => _mm256_maskload_ps(p, first(k)),
            }
        }
    }

    /// Store the first `k` lanes of `v` at `p` (`k <= 8`).
    #[target_feature(enable = "avx2")]
    unsafe fn store(p: *mut f32, v: __m256, k: usize) {
        // SAFETY: the caller guarantees room for k floats at p; masked lanes are not written
        unsafe {
            match k {
                0 => {}
                8.. => _mm256_storeu_ps(p, v),
                _ => _mm256_maskstore_ps(p, first(k), v),
            }
        }
    }

    /// Swap the middle 64-bit pairs: `[p0 p1 p2 p3]` to `[p0 p2 p1 p3]` (its own inverse).
    #[target_feature(enable = "avx2")]
    fn pairs(v: __m256) -> __m256 {
        _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)))
    }

    /// The even and odd elements of the first `2k` of 16 floats at `p` (`k <= 8`), in order.
    #[target_feature(enable = "avx2")]
    unsafe fn deinterleave(p: *const f32, k: usize) -> (__m256, __m256) {
        // SAFETY: the caller guarantees 2k readable floats at p; the second half's address
        // may lie past the buffer when k <= 4 (`wrapping_add`), and then it is not read
        let second = p.wrapping_add(8);
        let (a, b) = unsafe { (load(p, 2 * k), load(second, (2 * k).saturating_sub(8))) };
        // per 128-bit lane: [a0 a2 b0 b2 | a4 a6 b4 b6]; `pairs` puts them in order
        let even = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
        let odd = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
        (pairs(even), pairs(odd))
    }

    /// Store the first `k` of `even` and `odd` interleaved as `2k` floats at `p`.
    #[target_feature(enable = "avx2")]
    unsafe fn interleave(p: *mut f32, even: __m256, odd: __m256, k: usize) {
        let (e, o) = (pairs(even), pairs(odd));
        // SAFETY: the caller guarantees room for 2k floats at p; as in `deinterleave`, no
        // lane of the second half is written when its address may lie past the buffer
        let second = p.wrapping_add(8);
        unsafe {
            store(p, _mm256_unpacklo_ps(e, o), 2 * k);
            store(second, _mm256_unpackhi_ps(e, o), (2 * k).saturating_sub(8));
        }
    }

    /// `nan_max(a, b)` lane by lane.
    #[target_feature(enable = "avx2")]
    fn nan_max(a: __m256, b: __m256) -> __m256 {
        let greater = _mm256_cmp_ps::<_CMP_GT_OQ>(b, a);
        let b_nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(b, b);
        let a_num = _mm256_cmp_ps::<_CMP_ORD_Q>(a, a);
        _mm256_blendv_ps(a, b, _mm256_or_ps(greater, _mm256_and_ps(b_nan, a_num)))
    }

    /// `v == t`, or both NaN, lane by lane.
    #[target_feature(enable = "avx2")]
    fn same(v: __m256, t: __m256, t_nan: __m256) -> __m256 {
        let eq = _mm256_cmp_ps::<_CMP_EQ_OQ>(v, t);
        _mm256_or_ps(
            eq,
            _mm256_and_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v), t_nan),
        )
    }

    /// [`super::max_row`], eight windows at a time (the last step masked); returns how many
    /// were done (all).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn max_row(r0: &[f32], r1: &[f32], out: &mut [f32]) -> usize {
        let w = out.len();
        let mut j = 0;
        while j < w {
            let k = (w - j).min(8);
            // SAFETY: 2(j + k) <= 2w <= r0.len(), r1.len(); j + k <= out.len()
            unsafe {
                let (a0, a1) = deinterleave(r0.as_ptr().add(2 * j), k);
                let (b0, b1) = deinterleave(r1.as_ptr().add(2 * j), k);
                let m = nan_max(nan_max(nan_max(a0, a1), b0), b1);
                store(out.as_mut_ptr().add(j), m, k);
            }
            j += k;
        }
        w
    }

    /// The first `k` (`k <= 8`) of eight small integers held as floats, as bytes at `p`.
    #[target_feature(enable = "avx2")]
    unsafe fn store_bytes(p: *mut u8, v: __m256, k: usize) {
        let v = _mm256_cvttps_epi32(v);
        let w16 = _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let mut bytes = [0u8; 16];
        // SAFETY: `bytes` holds 16 bytes; the caller guarantees room for k bytes at p
        unsafe {
            _mm_storeu_si128(bytes.as_mut_ptr().cast(), _mm_packus_epi16(w16, w16));
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, k);
        }
    }

    /// The first `k` (`k <= 8`) bytes at `p` as floats (zeros after).
    #[target_feature(enable = "avx2")]
    unsafe fn load_bytes(p: *const u8, k: usize) -> __m256 {
        let mut b = [0u8; 16];
        // SAFETY: the caller guarantees k readable bytes at p
        // (and `b` holds 16)
        let v = unsafe {
            std::ptr::copy_nonoverlapping(p, b.as_mut_ptr(), k);
            _mm_loadu_si128(b.as_ptr().cast())
        };
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
    }

    /// [`super::max_channels_last`] (`c` a multiple of 8): eight pooled positions' windows
    /// of eight channels at a time, transposed in registers into eight channels' rows.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn max_channels_last(
        x: &[f32],
        (w, c): (usize, usize),
        (np, pw): (usize, usize),
        out: *mut f32,
        ld: usize,
    ) {
        let xp = x.as_ptr();
        let mut p0 = 0;
        while p0 < np {
            let k = (np - p0).min(8);
            for o in (0..c).step_by(8) {
                let mut r = [_mm256_setzero_ps(); 8];
                for (i, v) in r.iter_mut().enumerate().take(k) {
                    let p = p0 + i;
                    // SAFETY (this block): the window's four positions hold c channels
                    // each within x (the caller's contract), o + 8 <= c; the stores are the
                    // first k <= np - p0 values of rows o..o + 8 from p0
                    unsafe {
                        let at = xp.add((2 * (p / pw) * w + 2 * (p % pw)) * c + o);
                        let m = nan_max(_mm256_loadu_ps(at), _mm256_loadu_ps(at.add(c)));
                        let m = nan_max(m, _mm256_loadu_ps(at.add(w * c)));
                        *v = nan_max(m, _mm256_loadu_ps(at.add(w * c + c)));
                    }
                }
                crate::kernels::x86::transpose8(&mut r);
                for (v, row) in r.iter().enumerate() {
                    // SAFETY: see above
                    unsafe { store(out.add((o + v) * ld + p0), *row, k) };
                }
            }
            p0 += k;
        }
    }

    /// [`super::max_row_argmax`], eight windows at a time (the last step masked); returns
    /// how many were done (all).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn max_row_argmax(
        r0: &[f32],
        r1: &[f32],
        out: &mut [f32],
        idx: &mut [u8],
    ) -> usize {
        let w = out.len();
        let mut j = 0;
        while j < w {
            let k = (w - j).min(8);
            // SAFETY: 2(j + k) <= 2w <= r0.len(), r1.len(); j + k <= out.len(), idx.len()
            unsafe {
                let (a0, a1) = deinterleave(r0.as_ptr().add(2 * j), k);
                let (b0, b1) = deinterleave(r1.as_ptr().add(2 * j), k);
                let m = nan_max(nan_max(nan_max(a0, a1), b0), b1);
                store(out.as_mut_ptr().add(j), m, k);
                let m_nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(m, m);
                // the first match wins: blended from the last position to the first
                let mut at = _mm256_set1_ps(3.0);
                at = _mm256_blendv_ps(at, _mm256_set1_ps(2.0), same(b0, m, m_nan));
                at = _mm256_blendv_ps(at, _mm256_set1_ps(1.0), same(a1, m, m_nan));
                at = _mm256_blendv_ps(at, _mm256_setzero_ps(), same(a0, m, m_nan));
                store_bytes(idx.as_mut_ptr().add(j), at, k);
            }
            j += k;
        }
        w
    }

    /// [`super::scatter_row`], eight windows at a time (the last step masked); returns how
    /// many were done (all).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn scatter_row(
        idx: &[u8],
        d: &[f32],
        top: &mut [f32],
        bottom: &mut [f32],
    ) -> usize {
        let w = d.len();
        let mut j = 0;
        while j < w {
            let k = (w - j).min(8);
            // SAFETY: j + k <= w = idx.len() = d.len(); 2(j + k) <= top.len(), bottom.len()
            unsafe {
                let (at, dv) = (
                    load_bytes(idx.as_ptr().add(j), k),
                    load(d.as_ptr().add(j), k),
                );
                let pick =
                    |i: f32| _mm256_and_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(at, _mm256_set1_ps(i)), dv);
                interleave(top.as_mut_ptr().add(2 * j), pick(0.0), pick(1.0), k);
                interleave(bottom.as_mut_ptr().add(2 * j), pick(2.0), pick(3.0), k);
            }
            j += k;
        }
        w
    }

    /// [`super::backward_row`], eight windows at a time (the last step masked); returns how
    /// many were done (all).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn backward_row(
        (x0, x1): (&[f32], &[f32]),
        (t, d): (&[f32], &[f32]),
        top: &mut [f32],
        bottom: &mut [f32],
    ) -> usize {
        let w = t.len();
        let mut j = 0;
        while j < w {
            let k = (w - j).min(8);
            // SAFETY: 2(j + k) <= 2w = every row's length; j + k <= t.len() = d.len()
            unsafe {
                let (tv, dv) = (load(t.as_ptr().add(j), k), load(d.as_ptr().add(j), k));
                let t_nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(tv, tv);
                let (a0, a1) = deinterleave(x0.as_ptr().add(2 * j), k);
                let (b0, b1) = deinterleave(x1.as_ptr().add(2 * j), k);
                let m0 = same(a0, tv, t_nan);
                let taken = m0;
                let m1 = _mm256_andnot_ps(taken, same(a1, tv, t_nan));
                let taken = _mm256_or_ps(taken, m1);
                let m2 = _mm256_andnot_ps(taken, same(b0, tv, t_nan));
                let taken = _mm256_or_ps(taken, m2);
                let m3 = _mm256_andnot_ps(taken, same(b1, tv, t_nan));
                let pick = |m: __m256| _mm256_and_ps(m, dv);
                interleave(top.as_mut_ptr().add(2 * j), pick(m0), pick(m1), k);
                interleave(bottom.as_mut_ptr().add(2 * j), pick(m2), pick(m3), k);
            }
            j += k;
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Rows with ties, NaNs, signed zeros and infinities, long enough for both paths.
    fn rows(rng: &mut Rng, len: usize) -> Vec<f32> {
        let specials = [f32::NAN, 0.0, -0.0, 1.0, f32::INFINITY, f32::NEG_INFINITY];
        (0..len)
            .map(|_| {
                if rng.uniform() < 0.3 {
                    specials[(rng.uniform() * 6.0) as usize % 6]
                } else {
                    (rng.uniform() * 4.0).floor()
                }
            })
            .collect()
    }

    #[test]
    fn rows_match_the_scalar_windows() {
        let mut rng = Rng::new(3);
        for w in [1usize, 7, 8, 9, 16, 21] {
            for _ in 0..50 {
                let (x0, x1) = (rows(&mut rng, 2 * w + 1), rows(&mut rng, 2 * w + 1));
                let mut t = vec![0f32; w];
                max_row(&x0, &x1, &mut t);
                let d: Vec<f32> = (0..w).map(|j| j as f32 + 0.5).collect();
                let (mut top, mut bottom) = (vec![9f32; 2 * w], vec![9f32; 2 * w]);
                backward_row((&x0, &x1), (&t, &d), &mut top, &mut bottom);
                for j in 0..w {
                    let win = [x0[2 * j], x0[2 * j + 1], x1[2 * j], x1[2 * j + 1]];
                    let want = win.iter().fold(f32::NEG_INFINITY, |m, &v| nan_max(m, v));
                    assert_eq!(t[j].to_bits(), want.to_bits(), "w {w} window {j}: {win:?}");
                    let first = win
                        .iter()
                        .position(|&v| v == want || v.is_nan() && want.is_nan())
                        .unwrap();
                    let got = [top[2 * j], top[2 * j + 1], bottom[2 * j], bottom[2 * j + 1]];
                    for (k, g) in got.iter().enumerate() {
                        let expect = if k == first { d[j] } else { 0.0 };
                        assert_eq!(g.to_bits(), expect.to_bits(), "w {w} window {j} pos {k}");
                    }
                }
            }
        }
    }

    #[test]
    fn positions_kept_in_the_forward_give_the_backward_of_the_saved_maxima() {
        let mut rng = Rng::new(4);
        for w in [1usize, 7, 8, 9, 16, 21] {
            for _ in 0..50 {
                let (x0, x1) = (rows(&mut rng, 2 * w + 1), rows(&mut rng, 2 * w + 1));
                let (mut t, mut idx) = (vec![0f32; w], vec![9u8; w]);
                max_row_argmax(&x0, &x1, &mut t, &mut idx);
                let mut want = vec![0f32; w];
                max_row(&x0, &x1, &mut want);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&t), bits(&want), "w {w}: maxima");
                let d: Vec<f32> = (0..w).map(|j| j as f32 - 3.5).collect();
                let (mut top, mut bottom) = (vec![9f32; 2 * w], vec![9f32; 2 * w]);
                scatter_row(&idx, &d, &mut top, &mut bottom);
                let (mut top_s, mut bottom_s) = (vec![7f32; 2 * w], vec![7f32; 2 * w]);
                backward_row((&x0, &x1), (&t, &d), &mut top_s, &mut bottom_s);
                assert_eq!(bits(&top), bits(&top_s), "w {w}: top row");
                assert_eq!(bits(&bottom), bits(&bottom_s), "w {w}: bottom row");
            }
        }
    }
}
