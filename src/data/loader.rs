//! A background thread that gathers, augments and normalises batches while the main thread
//! computes, so that both cores stay on compute. Batches are a pure function of (data, order,
//! seed, step): augmentation draws from a generator seeded per sample position, so a run that
//! resumes at step k sees the very batches an uninterrupted run would.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use super::{Augment, Dataset, Normalize};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// One batch: inputs `(n, c, h, w)`, labels or normalised regression targets
/// `(n, target_len)`, and the step index within the epoch.
pub struct Batch {
    pub x: Tensor,
    pub labels: Vec<usize>,
    pub targets: Option<Tensor>,
    pub step: usize,
    /// Each series' valid length when the batch mixes lengths (padded to its longest).
    pub lengths: Option<Vec<usize>>,
}

impl Batch {
    /// Samples in the batch.
    pub fn len(&self) -> usize {
        self.x.shape()[0]
    }
    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Iterator over batches prepared by a background thread.
pub struct Loader {
    rx: Option<Receiver<Batch>>,
    handle: Option<JoinHandle<()>>,
}

/// Generator for the sample at `position` of an epoch whose order was drawn with `seed`.
pub fn sample_rng(seed: u64, position: usize) -> Rng {
    Rng::new(
        seed ^ (position as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(17),
    )
}

/// The samples `lo..hi` of a batch of `n` that part `rank` of `ranks` takes: contiguous, in
/// rank order, as equal as can be (the first `n % ranks` parts hold one more).
pub fn part_of(n: usize, rank: usize, ranks: usize) -> std::ops::Range<usize> {
    let at = |r: usize| r * (n / ranks) + r.min(n % ranks);
    at(rank)..at(rank + 1)
}

impl Loader {
    /// The `batches` of `data` (sample indices, see [`Dataset::batches`]) from batch
    /// `start_step` on, each cut to part `part.0` of `part.1` ([`part_of`]; `(0, 1)` for the
    /// whole batch). Inputs are normalised by `norm`, regression targets by `target_norm`
    /// (per target, over its horizon); augmentation draws from a generator seeded by the
    /// sample's position in the epoch, so a sample is augmented alike in any part.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        data: Arc<Dataset>,
        batches: Vec<Vec<usize>>,
        start_step: usize,
        part: (usize, usize),
        augment: Option<Augment>,
        norm: Normalize,
        target_norm: Option<Normalize>,
        seed: u64,
    ) -> Loader {
        let (tx, rx) = sync_channel::<Batch>(2);
        let handle = std::thread::spawn(move || {
            let mut position: usize = batches[..start_step.min(batches.len())]
                .iter()
                .map(|b| b.len())
                .sum();
            for (step, whole) in batches.iter().enumerate().skip(start_step) {
                let range = part_of(whole.len(), part.0, part.1);
                let idx = &whole[range.clone()];
                let first = position + range.start;
                let x = data.batch_input(idx, |k, x| {
                    if let Some(a) = &augment {
                        // the sample's own size: samples of several sizes are trimmed
                        let mut shape = data.shape[..1].to_vec();
                        shape.extend(data.size(idx[k]));
                        a.apply(x, &shape, &mut sample_rng(seed, first + k));
                    }
                    norm.apply(x);
                });
                position += whole.len();
                let Ok(x) = x else {
                    return;
                };
                let labels = if data.labels.is_empty() {
                    Vec::new()
                } else {
                    idx.iter().map(|&i| data.labels[i]).collect()
                };
                let Ok(targets) = data.batch_targets(idx, target_norm.as_ref()) else {
                    return;
                };
                let batch = Batch {
                    x,
                    labels,
                    targets,
                    step,
                    lengths: data.batch_lengths(idx),
                };
                if tx.send(batch).is_err() {
                    return; // the consumer stopped early
                }
            }
        });
        Loader {
            rx: Some(rx),
            handle: Some(handle),
        }
    }
}

impl Iterator for Loader {
    type Item = Batch;
    fn next(&mut self) -> Option<Batch> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Dropping the receiver makes the producer's next send fail, so it ends.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
