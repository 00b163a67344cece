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
        return unsafe { x86::lanes(v, v, 0.0, x86::Kind::Sum).0 };
    }
    plain::sum(v)
}

/// `sum((v - mu)^2)` in f64.
pub fn sum_sq_dev_f64(v: &[f32], mu: f64) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if super::wide_avx2() {
        // SAFETY: as above
        return unsafe { x86::lanes(v, v, mu, x86::Kind::SqDev).0 };
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
        return unsafe { x86::lanes(g, x, mu, x86::Kind::CenteredDot) };
    }
    plain::centered_dot(g, x, mu)
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
    use std::arch::x86_64::*;

    #[derive(Clone, Copy, PartialEq)]
    pub(super) enum Kind {
        Sum,
        SqDev,
        CenteredDot,
    }

    /// The three sums over lanes 0-3 and 4-7 of each eight, in two pairs of `__m256d`
    /// accumulators; the same operations per lane as `plain` (no FMA), so the same bits.
    /// Returns (the sum of `a`'s kind, the centered dot) as `plain` does.
    #[target_feature(enable = "avx2")]
    pub(super) fn lanes(a: &[f32], b: &[f32], mu: f64, kind: Kind) -> (f64, f64) {
        let n8 = a.len() / 8 * 8;
        let m = _mm256_set1_pd(mu);
        let (mut s0, mut s1) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        let (mut t0, mut t1) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        let mut i = 0;
        while i < n8 {
            // SAFETY: i + 8 <= n8 <= a.len() (and b.len() for the dot, asserted by the caller)
            let (a0, a1) = unsafe { halves(a.as_ptr().add(i)) };
            match kind {
                Kind::Sum => {
                    s0 = _mm256_add_pd(s0, a0);
                    s1 = _mm256_add_pd(s1, a1);
                }
                Kind::SqDev => {
                    let (d0, d1) = (_mm256_sub_pd(a0, m), _mm256_sub_pd(a1, m));
                    s0 = _mm256_add_pd(s0, _mm256_mul_pd(d0, d0));
                    s1 = _mm256_add_pd(s1, _mm256_mul_pd(d1, d1));
                }
                Kind::CenteredDot => {
                    // SAFETY: as above
                    let (b0, b1) = unsafe { halves(b.as_ptr().add(i)) };
                    s0 = _mm256_add_pd(s0, a0);
                    s1 = _mm256_add_pd(s1, a1);
                    let (d0, d1) = (_mm256_sub_pd(b0, m), _mm256_sub_pd(b1, m));
                    t0 = _mm256_add_pd(t0, _mm256_mul_pd(a0, d0));
                    t1 = _mm256_add_pd(t1, _mm256_mul_pd(a1, d1));
                }
            }
            i += 8;
        }
        let lanes = |lo: __m256d, hi: __m256d| {
            let mut v = [0f64; 8];
            // SAFETY: v has room for eight f64
            unsafe {
                _mm256_storeu_pd(v.as_mut_ptr(), lo);
                _mm256_storeu_pd(v.as_mut_ptr().add(4), hi);
            }
            v.iter().sum::<f64>()
        };
        let (ra, rb) = (&a[n8..], &b[n8.min(b.len())..]);
        match kind {
            Kind::Sum => (lanes(s0, s1) + super::plain::sum(ra), 0.0),
            Kind::SqDev => (lanes(s0, s1) + super::plain::sq_dev(ra, mu), 0.0),
            Kind::CenteredDot => {
                let (tg, tgx) = super::plain::centered_dot(ra, rb, mu);
                (lanes(s0, s1) + tg, lanes(t0, t1) + tgx)
            }
        }
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
