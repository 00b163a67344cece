//! Autoencoders: the reconstruction error on held-out images beside that of PCA with the
//! same code size (the linear baseline an autoencoder must beat), computed here, and a PNG grid
//! of originals, reconstructions and PCA reconstructions.

use std::path::Path;

use crate::autograd::no_grad;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::kernels::gemm::{MatRef, sgemm_par};
use crate::nn::Sequential;
use crate::rng::Rng;

use super::{Task, for_each_batch};

/// Principal components of a set of vectors.
pub struct Pca {
    pub mean: Vec<f32>,
    /// `k` orthonormal rows of length `d`, by decreasing variance.
    pub components: Vec<Vec<f64>>,
    /// The variance along each component.
    pub variances: Vec<f64>,
}

fn orthonormalise(v: &mut [Vec<f64>]) {
    for i in 0..v.len() {
        for j in 0..i {
            let d: f64 = v[i].iter().zip(&v[j]).map(|(a, b)| a * b).sum();
            let (head, tail) = v.split_at_mut(i);
            for (x, y) in tail[0].iter_mut().zip(&head[j]) {
                *x -= d * y;
            }
        }
        let n = v[i].iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-300);
        v[i].iter_mut().for_each(|x| *x /= n);
    }
}

/// Fit `k` components to the samples of `data` (each flattened): the covariance by one matrix
/// product, then subspace iteration with Rayleigh-Ritz steps until the subspace settles.
pub fn fit_pca(data: &Dataset, k: usize, seed: u64) -> Pca {
    let (n, d) = (data.len(), data.sample_len());
    let k = k.min(d).max(1);
    let mut mean = vec![0f64; d];
    for i in 0..n {
        for (m, &v) in mean.iter_mut().zip(data.sample(i)) {
            *m += v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
    let mut x = Vec::with_capacity(n * d);
    for i in 0..n {
        x.extend(
            data.sample(i)
                .iter()
                .zip(&mean)
                .map(|(&v, &m)| v - m as f32),
        );
    }
    let mut cov32 = vec![0f32; d * d];
    sgemm_par(
        d,
        n,
        d,
        MatRef::rm_t(&x, d),
        MatRef::rm(&x, d),
        0.0,
        &mut cov32,
        d,
    );
    let cov: Vec<f64> = cov32.iter().map(|&c| c as f64 / n.max(1) as f64).collect();
    let mul = |v: &[f64]| -> Vec<f64> {
        use rayon::prelude::*;
        (0..d)
            .into_par_iter()
            .map(|r| {
                cov[r * d..(r + 1) * d]
                    .iter()
                    .zip(v)
                    .map(|(a, b)| a * b)
                    .sum()
            })
            .collect()
    };
    // a few extra vectors speed up the convergence of the last wanted ones
    let m = (k + 8).min(d);
    let mut rng = Rng::new(seed);
    let mut q: Vec<Vec<f64>> = (0..m)
        .map(|_| (0..d).map(|_| rng.normal() as f64).collect())
        .collect();
    orthonormalise(&mut q);
    let mut variances = vec![0f64; m];
    for _ in 0..300 {
        let mut z: Vec<Vec<f64>> = q.iter().map(|v| mul(v)).collect();
        orthonormalise(&mut z);
        // Rayleigh-Ritz: order the basis by the variance along each vector
        let mut scored: Vec<(f64, Vec<f64>)> = z
            .into_iter()
            .map(|v| {
                let cv = mul(&v);
                (v.iter().zip(&cv).map(|(a, b)| a * b).sum(), v)
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let new: Vec<f64> = scored.iter().map(|s| s.0).collect();
        let settled = new
            .iter()
            .zip(&variances)
            .take(k)
            .all(|(a, b)| (a - b).abs() <= 1e-6 * a.abs().max(1e-12));
        variances = new;
        q = scored.into_iter().map(|s| s.1).collect();
        if settled {
            break;
        }
    }
    q.truncate(k);
    variances.truncate(k);
    Pca {
        mean: mean.iter().map(|&m| m as f32).collect(),
        components: q,
        variances,
    }
}

impl Pca {
    /// Project onto the components and back.
    pub fn reconstruct(&self, x: &[f32]) -> Vec<f32> {
        let c: Vec<f64> = x
            .iter()
            .zip(&self.mean)
            .map(|(&a, &m)| (a - m) as f64)
            .collect();
        let mut out: Vec<f64> = self.mean.iter().map(|&m| m as f64).collect();
        for v in &self.components {
            let coef: f64 = v.iter().zip(&c).map(|(a, b)| a * b).sum();
            out.iter_mut().zip(v).for_each(|(o, a)| *o += coef * a);
        }
        out.into_iter().map(|v| v as f32).collect()
    }
}

/// The size of a model's narrowest layer output per sample: an autoencoder's code.
pub fn code_size(model: &Sequential) -> usize {
    model
        .report()
        .map(|rows| {
            rows.iter()
                .filter(|r| r.depth == 0)
                .map(|r| r.output_shape.iter().product::<usize>())
                .min()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// An autoencoder against PCA on held-out images.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AutoencoderReport {
    pub samples: usize,
    pub code_size: usize,
    /// Mean squared error per pixel (pixels in [0, 1]).
    pub model_mse: f64,
    pub pca_mse: f64,
}

/// Reconstruct every sample of `heldout` with the model and with PCA fitted on `train` (code
/// size = the model's narrowest layer), and when `grid` is given, draw the first `show`
/// originals, reconstructions and PCA reconstructions as rows of a PNG.
pub fn evaluate_autoencoder(
    model: &Sequential,
    task: &Task,
    train: &Dataset,
    heldout: &Dataset,
    grid: Option<(&Path, usize)>,
) -> Result<AutoencoderReport> {
    let k = code_size(model);
    let pca = fit_pca(train, k, 7);
    let (mut se_m, mut se_p) = (0f64, 0f64);
    let mut shown: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = Vec::new();
    let show = grid.map_or(0, |g| g.1);
    let sl = heldout.sample_len();
    // the pixels are the target: no normalisation
    let identity = crate::data::Normalize::identity(heldout.shape[0]);
    for_each_batch(model, heldout, &identity, None, 256, false, |b, out| {
        let r = no_grad(|| task.reconstruction(out))?;
        let (rd, xd) = (r.data(), b.x.data());
        for j in 0..b.len() {
            let orig = &xd[j * sl..(j + 1) * sl];
            let rec = &rd[j * sl..(j + 1) * sl];
            let p = pca.reconstruct(orig);
            se_m += orig
                .iter()
                .zip(rec)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>();
            se_p += orig
                .iter()
                .zip(&p)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>();
            if shown.len() < show {
                shown.push((orig.to_vec(), rec.to_vec(), p));
            }
        }
        Ok(())
    })?;
    let n = (heldout.len() * heldout.sample_len()).max(1) as f64;
    if let Some((path, _)) = grid {
        let rows: Vec<Vec<&[f32]>> = vec![
            shown.iter().map(|s| s.0.as_slice()).collect(),
            shown.iter().map(|s| s.1.as_slice()).collect(),
            shown.iter().map(|s| s.2.as_slice()).collect(),
        ];
        super::plot::image_grid(path, &rows, &heldout.shape)?;
    }
    if heldout.is_empty() {
        return Err(Error::Format {
            path: "held-out data".into(),
            msg: "no images to reconstruct".into(),
        });
    }
    Ok(AutoencoderReport {
        samples: heldout.len(),
        code_size: k,
        model_mse: se_m / n,
        pca_mse: se_p / n,
    })
}
