//! Kernels: plain functions on slices, with their geometry in small structs. They know nothing
//! of tensors or autograd, assume validated input (`debug_assert!` only), and are each tested
//! against a direct reference loop. A second backend would replace this module.

pub mod cache;
pub mod conv;
pub mod dense;
pub mod gemm;
pub mod micro;
pub mod pool;

/// What runs on each finished block of a kernel's outputs while it is still in cache (a
/// fused activation): a convolution calls it with one output channel's positions of one
/// tile, a dense layer with a task's rows.
pub type Epilogue<'a> = &'a (dyn Fn(&mut [f32]) + Sync);

/// Sum in f64 with eight independent accumulators (so the loop vectorises), in a fixed order.
pub fn sum_f64(v: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i] as f64;
        }
    }
    acc.iter().sum::<f64>() + rest.iter().map(|&x| x as f64).sum::<f64>()
}
