//! Kernels: plain functions on slices, with their geometry in small structs. They know nothing
//! of tensors or autograd, assume validated input (`debug_assert!` only), and are each tested
//! against a direct reference loop. A second backend would replace this module.

pub mod cache;
pub mod conv;
pub mod dense;
pub mod gemm;
pub mod micro;
pub mod pool;
mod pool2x2;
mod reduce;

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// Transpose 8 x 8 values in registers (`r[i]` lane `j` becomes `r[j]` lane `i`): pairs
    /// of rows interleaved, then pairs of pairs, then the 128-bit halves swapped.
    #[target_feature(enable = "avx2")]
    pub(crate) fn transpose8(r: &mut [__m256; 8]) {
        let t: [__m256; 8] = std::array::from_fn(|i| {
            let (a, b) = (r[2 * (i / 2)], r[2 * (i / 2) + 1]);
            match i % 2 {
                0 => _mm256_unpacklo_ps(a, b),
                _ => _mm256_unpackhi_ps(a, b),
            }
        });
        // s[4q + k]: lanes (k of each 128-bit half) of rows 4q..4q + 4
        let s: [__m256; 8] = std::array::from_fn(|i| {
            let (q, k) = (i / 4, i % 4);
            let (a, b) = (t[4 * q + k / 2], t[4 * q + k / 2 + 2]);
            match k % 2 {
                0 => _mm256_shuffle_ps::<0x44>(a, b),
                _ => _mm256_shuffle_ps::<0xEE>(a, b),
            }
        });
        for (j, row) in r.iter_mut().enumerate() {
            let (lo, hi) = (s[j % 4], s[4 + j % 4]);
            *row = match j < 4 {
                true => _mm256_permute2f128_ps::<0x20>(lo, hi),
                false => _mm256_permute2f128_ps::<0x31>(lo, hi),
            };
        }
    }
}

/// `n` zeros, written by the worker threads in parallel where `n` is large: an output buffer
/// that a kernel then overwrites, whose zeroing (a single-threaded `memset` when the allocator
/// reuses memory) would otherwise keep one core busy while the others wait.
pub fn zeros(n: usize) -> Vec<f32> {
    use rayon::prelude::*;
    if n < 1 << 18 || rayon::current_num_threads() < 2 {
        return vec![0.0; n];
    }
    let mut v: Vec<f32> = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(1 << 16)
        .for_each(|c| c.fill(std::mem::MaybeUninit::new(0.0)));
    // SAFETY: all `n` values were written just above
    unsafe { v.set_len(n) };
    v
}

/// What runs on each finished block of a kernel's outputs while it is still in cache (a
/// fused activation): a convolution calls it with one output channel's positions of one
/// tile, a dense layer with a task's rows.
pub type Epilogue<'a> = &'a (dyn Fn(&mut [f32]) + Sync);

/// Whether [`avx2_twin`] functions run their AVX2 copy: the CPU has it and `CONVNET_MICRO`
/// is not `off` (which keeps every kernel on plain code, for comparison).
pub(crate) fn wide_avx2() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::env::var("CONVNET_MICRO").as_deref() != Ok("off")
                && std::arch::is_x86_feature_detected!("avx2")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

/// Define `fn $name(args) -> R` that runs `$plain(args)` (an `#[inline(always)]` function
/// of plain code) compiled for AVX2 where the CPU has it, so that its elementwise loops
/// vectorise eight floats wide instead of the baseline's four. The same operations run in the
/// same order either way (no FMA contraction), so the results are the same bits. Use it for
/// the innermost sequential loop of a parallel task; every function `$plain` calls must be
/// `#[inline(always)]` too, or it runs on the baseline.
macro_rules! avx2_twin {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? = $plain:path;) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            if $crate::kernels::wide_avx2() {
                #[target_feature(enable = "avx2")]
                fn avx2($($a: $t),*) $(-> $r)? {
                    $plain($($a),*)
                }
                // SAFETY: the CPU has AVX2 (checked by `wide_avx2`)
                return unsafe { avx2($($a),*) };
            }
            $plain($($a),*)
        }
    };
}
pub(crate) use avx2_twin;

/// Whether [`wide_twin`] functions run their AVX-512 copy: the CPU has AVX-512 F and
/// `CONVNET_MICRO` is neither `avx2` nor `off` (the same switch as the micro-kernels').
pub(crate) fn wide_avx512() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            !matches!(
                std::env::var("CONVNET_MICRO").as_deref(),
                Ok("off" | "avx2")
            ) && std::arch::is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

/// As [`avx2_twin`], with a third copy compiled for AVX-512 F (sixteen floats wide) that runs
/// where [`wide_avx512`] says so. For loops over fixed-size blocks that the compiler keeps in
/// vector registers; the same operations in the same order on every copy, so the same bits.
macro_rules! wide_twin {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? = $plain:path;) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            if $crate::kernels::wide_avx512() {
                #[target_feature(enable = "avx512f")]
                fn avx512($($a: $t),*) $(-> $r)? {
                    $plain($($a),*)
                }
                // SAFETY: the CPU has AVX-512 F (checked by `wide_avx512`)
                return unsafe { avx512($($a),*) };
            }
            $crate::kernels::avx2_twin! { fn twin($($a: $t),*) $(-> $r)? = $plain; }
            twin($($a),*)
        }
    };
}
pub(crate) use wide_twin;

pub use reduce::{
    each_sum_and_centered_dot_f64, each_sum_f64, each_sum_sq_dev_f64, sum_and_centered_dot_f64,
    sum_f64, sum_sq_dev_f64,
};

#[cfg(test)]
mod tests {
    #[test]
    fn zeros_are_zeros_at_every_size() {
        // below the parallel size, at it, and a size that leaves a short last chunk
        for n in [0, 5, 1 << 18, (1 << 18) + 12_345] {
            let v = super::zeros(n);
            assert_eq!(v.len(), n);
            assert!(v.iter().all(|&x| x.to_bits() == 0), "{n}");
        }
    }
}
