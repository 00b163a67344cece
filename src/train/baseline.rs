//! The baseline a time-series classifier is judged against: one nearest neighbour with the
//! Euclidean distance (1-NN ED), as the UCR archive reports it.

use rayon::prelude::*;

use crate::data::{Dataset, Normalize, resample};
use crate::error::{Result, shape_err};

/// 1-NN ED on a test set.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NearestNeighbour {
    pub samples: usize,
    pub accuracy: f64,
    /// The length every series was resampled to when the series differ in length (the
    /// longest training series), `None` when they are all one length.
    pub resampled_to: Option<usize>,
}

/// Each sample of `data` normalised by `norm`, resampled to `len` steps per channel when
/// given, flattened.
fn rows(data: &Dataset, norm: &Normalize, len: Option<usize>) -> Vec<Vec<f32>> {
    let c = data.shape.first().copied().unwrap_or(1).max(1);
    (0..data.len())
        .map(|i| {
            let mut x = data.sample_trimmed(i).into_owned();
            norm.apply(&mut x);
            match len {
                Some(l) => x
                    .chunks(x.len() / c)
                    .flat_map(|ch| resample(ch, l))
                    .collect(),
                None => x,
            }
        })
        .collect()
}

/// Classify each series of `test` by the label of its nearest series of `train` (squared
/// Euclidean distance over every channel; ties go to the earlier training series), both
/// normalised by `norm`. Series of several lengths are first resampled to the longest
/// training series' length.
pub fn nearest_neighbour(
    train: &Dataset,
    test: &Dataset,
    norm: &Normalize,
) -> Result<NearestNeighbour> {
    if train.is_empty() || test.is_empty() || train.labels.is_empty() {
        return shape_err("1-NN", "needs labelled training and test series");
    }
    let lengths = |d: &Dataset| (0..d.len()).map(|i| d.size(i).to_vec()).collect::<Vec<_>>();
    let (a, b) = (lengths(train), lengths(test));
    let one_length = a.iter().chain(&b).all(|l| *l == a[0]);
    let len = (!one_length).then(|| a.iter().map(|l| l[0]).max().unwrap_or(2).max(2));
    let (tr, te) = (rows(train, norm, len), rows(test, norm, len));
    let correct = te
        .par_iter()
        .enumerate()
        .filter(|(j, x)| {
            let nearest = tr
                .iter()
                .map(|t| {
                    t.iter()
                        .zip(x.iter())
                        .map(|(u, v)| ((u - v) as f64).powi(2))
                        .sum::<f64>()
                })
                .enumerate()
                .fold(
                    (0, f64::INFINITY),
                    |best, (i, d)| if d < best.1 { (i, d) } else { best },
                );
            train.labels[nearest.0] == test.labels[*j]
        })
        .count();
    Ok(NearestNeighbour {
        samples: test.len(),
        accuracy: correct as f64 / test.len() as f64,
        resampled_to: len,
    })
}
