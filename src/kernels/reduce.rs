//! Sums in f64 over f32 slices, as a batch norm's statistics and gradients and the mean
//! reductions need them: eight lanes (element `i` into lane `i % 8`), the lanes added in order
//! 0..8 and the remainder after, so the result is the same bits on every path, thread count
//! and CPU. The AVX path converts and adds four lanes per instruction; the plain path is the
//! reference it is tested against.

/// Sum in f64.
pub fn sum_f64(v: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if super::wide_avx2() {
        // SAFETY: the CPU has AVX2 (`wide_avx2`)
        return unsafe { x86::lanes::<1>(&[v], &[v], 0.0, Joint::Sum)[0].0 };
    }
    plain::sum(v)
}

/// `sum((v - mu)^2)` in f64.
pub fn sum_sq_dev_f64(v: &[f32], mu: f64) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if super::wide_avx2() {
        // SAFETY: as above
        return unsafe { x86::lanes::<1>(&[v], &[v], mu, Joint::SqDev)[0].0 };
    }
    plain::sq_dev(v, mu)
}

/// `(sum(g), sum(g * (x - mu)))` in f64 (a batch norm's bias gradient and, scaled by the
/// inverse deviation, its weight's). `g` and `x` have the same length.
pub fn sum_and_centered_dot_f64(g: &[f32], x: &[f32], mu: f64) -> (f64, f64) {
    debug_assert_eq!(g.len(), x.len());
    #[cfg(target_arch = "x86_64")]
    if super::wide_avx2() {
        // SAFETY: as above
        return unsafe { x86::lanes::<1>(&[g], &[x], mu, Joint::CenteredDot)[0] };
    }
    plain::centered_dot(g, x, mu)
}

/// Slices summed together at a time by the `each_*` functions: their chains of additions
/// are independent, so running four at once keeps both adders busy where one chain waits on
/// the latency of the last addition.
const JOINT: usize = 4;

/// [`sum_f64`] of each slice, in order (the same bits as one call each); slices of equal
/// length are summed four at a time.
pub fn each_sum_f64<'a>(slices: impl Iterator<Item = &'a [f32]>) -> impl Iterator<Item = f64> {
    joint(slices.map(|s| (s, s)), 0.0, Joint::Sum).map(|(a, _)| a)
}

/// [`sum_sq_dev_f64`] of each slice, in order (the same bits as one call each).
pub fn each_sum_sq_dev_f64<'a>(
    slices: impl Iterator<Item = &'a [f32]>,
    mu: f64,
) -> impl Iterator<Item = f64> {
    joint(slices.map(|s| (s, s)), mu, Joint::SqDev).map(|(a, _)| a)
}

/// [`sum_and_centered_dot_f64`] of each pair `(g, x)`, in order (the same bits as one call
/// each).
pub fn each_sum_and_centered_dot_f64<'a>(
    pairs: impl Iterator<Item = (&'a [f32], &'a [f32])>,
    mu: f64,
) -> impl Iterator<Item = (f64, f64)> {
    joint(pairs, mu, Joint::CenteredDot)
}

#[derive(Clone, Copy, PartialEq)]
enum Joint {
    Sum,
    SqDev,
    CenteredDot,
}

/// The sums of `kind` over each pair, in order, [`JOINT`] pairs at a time.
fn joint<'a>(
    mut pairs: impl Iterator<Item = (&'a [f32], &'a [f32])>,
    mu: f64,
    kind: Joint,
) -> impl Iterator<Item = (f64, f64)> {
    let mut group: [(&[f32], &[f32]); JOINT] = [(&[], &[]); JOINT];
    let mut ready = [(0f64, 0f64); JOINT];
    let (mut at, mut len) = (0, 0);
    std::iter::from_fn(move || {
        if at == len {
            len = 0;
            for p in pairs.by_ref().take(JOINT) {
                group[len] = p;
                len += 1;
            }
            if len == 0 {
                return None;
            }
            at = 0;
            ready = group_sums(&group[..len], mu, kind);
        }
        at += 1;
        Some(ready[at - 1])
    })
}

/// The sums of `kind` over up to [`JOINT`] pairs: jointly on the AVX path where there are
/// [`JOINT`] of one length, else one call each.
fn group_sums(group: &[(&[f32], &[f32])], mu: f64, kind: Joint) -> [(f64, f64); JOINT] {
    #[cfg(target_arch = "x86_64")]
    if group.len() == JOINT
        && group
            .iter()
            .all(|(g, x)| g.len() == group[0].0.len() && x.len() == g.len())
        && super::wide_avx2()
    {
        let a: [&[f32]; JOINT] = std::array::from_fn(|k| group[k].0);
        let b: [&[f32]; JOINT] = std::array::from_fn(|k| group[k].1);
        // SAFETY: the CPU has AVX2 (`wide_avx2`); the slices have one length
        return unsafe { x86::lanes::<JOINT>(&a, &b, mu, kind) };
    }
    let mut out = [(0f64, 0f64); JOINT];
    for (r, &(g, x)) in out.iter_mut().zip(group) {
        *r = match kind {
            Joint::Sum => (sum_f64(g), 0.0),
            Joint::SqDev => (sum_sq_dev_f64(g, mu), 0.0),
            Joint::CenteredDot => sum_and_centered_dot_f64(g, x, mu),
        };
    }
    out
}

/// The reference: eight accumulators in plain code.
mod plain {
    fn finish(acc: [f64; 8], tail: f64) -> f64 {
        acc.iter().sum::<f64>() + tail
    }

    pub(super) fn sum(v: &[f32]) -> f64 {
        let mut acc = [0f64; 8];
        let chunks = v.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for i in 0..8 {
                acc[i] += c[i] as f64;
            }
        }
        finish(acc, rest.iter().map(|&x| x as f64).sum())
    }

    pub(super) fn sq_dev(v: &[f32], mu: f64) -> f64 {
        let mut acc = [0f64; 8];
        let chunks = v.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for i in 0..8 {
                let d = c[i] as f64 - mu;
                acc[i] += d * d;
            }
        }
        let tail = rest
            .iter()
            .map(|&x| (x as f64 - mu) * (x as f64 - mu))
            .sum();
        finish(acc, tail)
    }

    pub(super) fn centered_dot(g: &[f32], x: &[f32], mu: f64) -> (f64, f64) {
        let (mut sg, mut sgx) = ([0f64; 8], [0f64; 8]);
        let (gc, xc) = (g.chunks_exact(8), x.chunks_exact(8));
        let (gr, xr) = (gc.remainder(), xc.remainder());
        for (a, b) in gc.zip(xc) {
            for i in 0..8 {
                sg[i] += a[i] as f64;
                sgx[i] += a[i] as f64 * (b[i] as f64 - mu);
            }
        }
        let (mut tg, mut tgx) = (0f64, 0f64);
        for (&a, &b) in gr.iter().zip(xr) {
            tg += a as f64;
            tgx += a as f64 * (b as f64 - mu);
        }
        (finish(sg, tg), finish(sgx, tgx))
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Joint as Kind;
    use std::arch::x86_64::*;

    /// The three sums over lanes 0-3 and 4-7 of each eight, in two pairs of `__m256d`
    /// accumulators per slice, for `K` slices (`a[k]`, and `b[k]` for the dot) of one length
    /// at once; the same operations per lane as `plain` (no FMA), so the same bits. Returns,
    /// per slice, (the sum of `a`'s kind, the centered dot) as `plain` does.
    #[target_feature(enable = "avx2")]
    pub(super) fn lanes<const K: usize>(
        a: &[&[f32]; K],
        b: &[&[f32]; K],
        mu: f64,
        kind: Kind,
    ) -> [(f64, f64); K] {
        let len = a[0].len();
        assert!(
            (0..K).all(|k| a[k].len() == len && (kind != Kind::CenteredDot || b[k].len() == len))
        );
        let n8 = len / 8 * 8;
        let m = _mm256_set1_pd(mu);
        let mut s = [[_mm256_setzero_pd(); 2]; K];
        let mut t = [[_mm256_setzero_pd(); 2]; K];
        let mut i = 0;
        while i < n8 {
            for k in 0..K {
                // SAFETY: i + 8 <= n8 <= len, the length of every a[k] (and b[k] for the
                // dot), asserted above
                let (a0, a1) = unsafe { halves(a[k].as_ptr().add(i)) };
                let s = &mut s[k];
                match kind {
                    Kind::Sum => {
                        s[0] = _mm256_add_pd(s[0], a0);
                        s[1] = _mm256_add_pd(s[1], a1);
                    }
                    Kind::SqDev => {
                        let (d0, d1) = (_mm256_sub_pd(a0, m), _mm256_sub_pd(a1, m));
                        s[0] = _mm256_add_pd(s[0], _mm256_mul_pd(d0, d0));
                        s[1] = _mm256_add_pd(s[1], _mm256_mul_pd(d1, d1));
                    }
                    Kind::CenteredDot => {
                        // SAFETY: as above
                        let (b0, b1) = unsafe { halves(b[k].as_ptr().add(i)) };
                        s[0] = _mm256_add_pd(s[0], a0);
                        s[1] = _mm256_add_pd(s[1], a1);
                        let (d0, d1) = (_mm256_sub_pd(b0, m), _mm256_sub_pd(b1, m));
                        let t = &mut t[k];
                        t[0] = _mm256_add_pd(t[0], _mm256_mul_pd(a0, d0));
                        t[1] = _mm256_add_pd(t[1], _mm256_mul_pd(a1, d1));
                    }
                }
            }
            i += 8;
        }
        let lanes = |[lo, hi]: [__m256d; 2]| {
            let mut v = [0f64; 8];
            // SAFETY: v has room for eight f64
            unsafe {
                _mm256_storeu_pd(v.as_mut_ptr(), lo);
                _mm256_storeu_pd(v.as_mut_ptr().add(4), hi);
            }
            v.iter().sum::<f64>()
        };
        std::array::from_fn(|k| {
            let (ra, rb) = (&a[k][n8..], &b[k][n8.min(b[k].len())..]);
            match kind {
                Kind::Sum => (lanes(s[k]) + super::plain::sum(ra), 0.0),
                Kind::SqDev => (lanes(s[k]) + super::plain::sq_dev(ra, mu), 0.0),
                Kind::CenteredDot => {
                    let (tg, tgx) = super::plain::centered_dot(ra, rb, mu);
                    (lanes(s[k]) + tg, lanes(t[k]) + tgx)
                }
            }
        })
    }

    /// Eight floats at `p` as two vectors of four doubles.
    #[target_feature(enable = "avx2")]
    unsafe fn halves(p: *const f32) -> (__m256d, __m256d) {
        // SAFETY: the caller guarantees eight readable floats at p
        let v = unsafe { _mm256_loadu_ps(p) };
        (
            _mm256_cvtps_pd(_mm256_castps256_ps128(v)),
            _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn each_slice_summed_jointly_gives_its_own_sums_bits() {
        let mut rng = Rng::new(8);
        // counts around the group of four; equal lengths, and one group with a shorter slice
        for (count, len) in [(0usize, 9usize), (3, 17), (4, 49), (9, 196), (6, 0)] {
            let mut lens = vec![len; count];
            if count > 5 {
                lens[5] = len.saturating_sub(1);
            }
            let a: Vec<Vec<f32>> = lens
                .iter()
                .map(|&l| (0..l).map(|_| rng.normal() * 2.0 + 0.5).collect())
                .collect();
            let b: Vec<Vec<f32>> = lens
                .iter()
                .map(|&l| (0..l).map(|_| rng.normal() * 10.0).collect())
                .collect();
            let mu = -0.21;
            let sums: Vec<u64> = each_sum_f64(a.iter().map(|v| &v[..]))
                .map(f64::to_bits)
                .collect();
            let want: Vec<u64> = a.iter().map(|v| sum_f64(v).to_bits()).collect();
            assert_eq!(sums, want, "sums, {count} x {len}");
            let devs: Vec<u64> = each_sum_sq_dev_f64(a.iter().map(|v| &v[..]), mu)
                .map(f64::to_bits)
                .collect();
            let want: Vec<u64> = a.iter().map(|v| sum_sq_dev_f64(v, mu).to_bits()).collect();
            assert_eq!(devs, want, "deviations, {count} x {len}");
            let pairs = a.iter().zip(&b).map(|(g, x)| (&g[..], &x[..]));
            let dots: Vec<(u64, u64)> = each_sum_and_centered_dot_f64(pairs, mu)
                .map(|(p, q)| (p.to_bits(), q.to_bits()))
                .collect();
            let want: Vec<(u64, u64)> = a
                .iter()
                .zip(&b)
                .map(|(g, x)| {
                    let (p, q) = sum_and_centered_dot_f64(g, x, mu);
                    (p.to_bits(), q.to_bits())
                })
                .collect();
            assert_eq!(dots, want, "centered dots, {count} x {len}");
        }
    }

    #[test]
    fn every_path_gives_the_reference_bits() {
        let mut rng = Rng::new(7);
        for len in [0usize, 1, 7, 8, 9, 15, 16, 17, 100, 1023] {
            let a: Vec<f32> = (0..len).map(|_| rng.normal() * 3.0 + 1.5).collect();
            let b: Vec<f32> = (0..len).map(|_| rng.normal() * 1e3).collect();
            let mu = 0.37;
            assert_eq!(sum_f64(&a).to_bits(), plain::sum(&a).to_bits(), "{len}");
            assert_eq!(
                sum_sq_dev_f64(&a, mu).to_bits(),
                plain::sq_dev(&a, mu).to_bits()
            );
            let (p, q) = sum_and_centered_dot_f64(&a, &b, mu);
            let (r, s) = plain::centered_dot(&a, &b, mu);
            assert_eq!((p.to_bits(), q.to_bits()), (r.to_bits(), s.to_bits()));
            // and the sums are the sums
            let exact: f64 = a.iter().map(|&v| v as f64).sum();
            assert!((sum_f64(&a) - exact).abs() <= 1e-9 * (1.0 + exact.abs()));
            let dot: f64 = a
                .iter()
                .zip(&b)
                .map(|(&g, &x)| g as f64 * (x as f64 - mu))
                .sum();
            assert!((q - dot).abs() <= 1e-9 * (1.0 + dot.abs()));
        }
    }
}
