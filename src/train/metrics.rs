//! Evaluation of a classifier: loss, accuracy, per-class precision and recall, and the
//! confusion matrix.

use crate::autograd::no_grad;
use crate::data::{Batch, Dataset, Normalize};
use crate::error::Result;
use crate::nn::Sequential;
use crate::ops::{self, CrossEntropyOptions};
use crate::tensor::Tensor;

/// What `convnet eval` reports.
#[derive(Clone, Debug)]
pub struct EvalReport {
    pub samples: usize,
    pub loss: f64,
    pub accuracy: f64,
    /// `confusion[true][predicted]`
    pub confusion: Vec<Vec<usize>>,
    pub precision: Vec<f64>,
    pub recall: Vec<f64>,
    /// Per class: the harmonic mean of precision and recall (0 where both are 0).
    pub f1: Vec<f64>,
    /// Per class: the samples of that class.
    pub support: Vec<usize>,
    /// `rank_hits[r]`: samples whose true class had the `r`-th highest score (0: predicted).
    pub rank_hits: Vec<usize>,
}

impl EvalReport {
    /// The unweighted mean of the per-class F1 scores (scikit-learn's `average="macro"`).
    pub fn macro_f1(&self) -> f64 {
        self.f1.iter().sum::<f64>() / self.f1.len().max(1) as f64
    }

    /// The per-class F1 scores weighted by support (`average="weighted"`).
    pub fn weighted_f1(&self) -> f64 {
        let n: usize = self.support.iter().sum();
        let s: f64 = self
            .f1
            .iter()
            .zip(&self.support)
            .map(|(f, &c)| f * c as f64)
            .sum();
        s / n.max(1) as f64
    }

    /// The share of samples whose true class is among the `k` highest scores.
    pub fn top_k(&self, k: usize) -> f64 {
        let hits: usize = self.rank_hits.iter().take(k).sum();
        hits as f64 / self.samples.max(1) as f64
    }
}

/// The rank of `label` among the scores of `row` (0: the highest); ties rank the lower index
/// first, as [`argmax_rows`] predicts.
fn rank_of(row: &[f32], label: usize) -> usize {
    let v = row[label];
    row.iter()
        .enumerate()
        .filter(|&(j, &x)| x > v || (x == v && j < label))
        .count()
}

/// Index of the largest value of each row of `(n, k)` logits.
pub fn argmax_rows(logits: &[f32], k: usize) -> Vec<usize> {
    logits.chunks(k.max(1)).map(argmax).collect()
}

/// The index of a row's largest value (the first of equals; 0 for an empty row).
pub(crate) fn argmax(r: &[f32]) -> usize {
    (0..r.len())
        .max_by(|&a, &b| r[a].total_cmp(&r[b]).then(b.cmp(&a)))
        .unwrap_or(0)
}

/// Run `model` in evaluation mode over `data`, batch by batch (inputs normalised by `norm`,
/// regression targets by `target_norm`), handing `f` each batch and the model's output (with
/// `hflip`, the log of class probabilities averaged over each image and its mirror).
pub(crate) fn for_each_batch(
    model: &Sequential,
    data: &Dataset,
    norm: &Normalize,
    target_norm: Option<&Normalize>,
    batch: usize,
    hflip: bool,
    mut f: impl FnMut(&Batch, &Tensor) -> Result<()>,
) -> Result<()> {
    let mut infer = crate::plan::Inference::new(model, batch).hflip(hflip);
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mixed = data.mixes_lengths() && crate::nn::mask::support(model).is_ok();
    if mixed {
        // shortest first: the least padding
        order.sort_by_key(|&i| data.size(i)[0]);
    }
    for idx in data.epoch_batches(&order, batch, mixed) {
        let b = Batch {
            x: data.batch_input(&idx, |_, s| norm.apply(s))?,
            labels: idx
                .iter()
                .filter_map(|&i| data.labels.get(i).copied())
                .collect(),
            targets: data.batch_targets(&idx, target_norm)?,
            step: 0,
            lengths: data.batch_lengths(&idx),
        };
        let out = infer.forward_masked(&b.x, b.lengths.as_deref())?;
        f(&b, &out)?;
    }
    Ok(())
}

/// Evaluate `model` on `data` in batches, in evaluation mode.
pub fn evaluate(
    model: &Sequential,
    data: &Dataset,
    norm: &Normalize,
    classes: usize,
    loss_opts: &CrossEntropyOptions,
    batch: usize,
    hflip: bool,
) -> Result<EvalReport> {
    let mut confusion = vec![vec![0usize; classes]; classes];
    let mut rank_hits = vec![0usize; classes];
    let mut loss_sum = 0f64;
    for_each_batch(model, data, norm, None, batch, hflip, |b, logits| {
        let l = no_grad(|| ops::cross_entropy(logits, &b.labels, loss_opts))?.item()?;
        loss_sum += l as f64 * b.len() as f64;
        let scores = logits.data();
        for (&p, &y) in argmax_rows(&scores, classes).iter().zip(&b.labels) {
            confusion[y][p] += 1;
        }
        for (row, &y) in scores.chunks(classes.max(1)).zip(&b.labels) {
            rank_hits[rank_of(row, y)] += 1;
        }
        Ok(())
    })?;
    let n = data.len().max(1);
    let correct: usize = (0..classes).map(|i| confusion[i][i]).sum();
    let precision: Vec<f64> = (0..classes)
        .map(|j| {
            let col: usize = (0..classes).map(|i| confusion[i][j]).sum();
            if col == 0 {
                0.0
            } else {
                confusion[j][j] as f64 / col as f64
            }
        })
        .collect();
    let recall: Vec<f64> = (0..classes)
        .map(|i| {
            let row: usize = confusion[i].iter().sum();
            if row == 0 {
                0.0
            } else {
                confusion[i][i] as f64 / row as f64
            }
        })
        .collect();
    Ok(EvalReport {
        samples: data.len(),
        loss: loss_sum / n as f64,
        accuracy: correct as f64 / n as f64,
        f1: precision
            .iter()
            .zip(&recall)
            .map(|(p, r)| {
                if p + r > 0.0 {
                    2.0 * p * r / (p + r)
                } else {
                    0.0
                }
            })
            .collect(),
        support: confusion.iter().map(|row| row.iter().sum()).collect(),
        rank_hits,
        confusion,
        precision,
        recall,
    })
}

/// Loss and metric (accuracy, or MAE in the targets' units) of `model` on `data`, in
/// evaluation mode, batch by batch.
pub fn evaluate_task(
    model: &Sequential,
    data: &Dataset,
    norm: &Normalize,
    target_norm: Option<&Normalize>,
    task: &super::Task,
    batch: usize,
    hflip: bool,
) -> Result<(f64, f64)> {
    let (mut loss_sum, mut metric_sum, mut terms) = (0f64, 0f64, 0usize);
    for_each_batch(model, data, norm, target_norm, batch, hflip, |b, out| {
        let l = no_grad(|| task.loss(out, b))?.item()?;
        loss_sum += l as f64 * b.len() as f64;
        let (m, n) = task.metric_sum(out, b);
        metric_sum += m;
        terms += n;
        Ok(())
    })?;
    Ok((
        loss_sum / data.len().max(1) as f64,
        metric_sum / terms.max(1) as f64,
    ))
}
