//! Every random draw of a run is a function of (seed, epoch, step): the split, the shuffle
//! and augmentation of an epoch, the dropout masks of a step. So a run interrupted at any step
//! and resumed gives the weights of an uninterrupted run, and the ranks of a distributed run
//! agree on every batch without talking.

use crate::rng::Rng;

/// A seed derived from `a` for the purpose `b`.
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    Rng::new(a ^ b.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}

/// Seed of the train/validation split of a run with `seed`.
pub fn split_seed(seed: u64) -> u64 {
    mix(seed, 0x5917)
}

/// Seed of epoch `e`'s shuffle and augmentation.
pub(crate) fn epoch_seed(seed: u64, e: usize) -> u64 {
    mix(seed, e as u64 + 1)
}

/// The random stream of step `step` of the epoch with seed `epoch_seed` (dropout masks, a
/// GAN's noise) on rank `rank` of a data-parallel run (0 on one process): each rank draws
/// its own masks for its part of the batch.
pub(crate) fn step_rng(epoch_seed: u64, step: usize, rank: usize) -> Rng {
    let s = mix(epoch_seed, step as u64 + (1 << 40));
    Rng::new(if rank == 0 { s } else { mix(s, rank as u64) })
}
