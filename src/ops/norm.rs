//! Batch normalisation (1-D and 2-D: batch statistics in training with running statistics
//! updated as in PyTorch, running statistics in evaluation) and layer normalisation.

use rayon::prelude::*;

use crate::autograd::output;
use crate::error::{Result, param_err, shape_err};
use crate::kernels::{avx2_twin, each_sum_and_centered_dot_f64, each_sum_f64, each_sum_sq_dev_f64};
use crate::ops::Pointwise;
use crate::ops::elementwise::sum_f64;
use crate::tensor::Tensor;

/// Arguments of [`batch_norm`] beside the input.
#[derive(Clone, Copy)]
pub struct BatchNormArgs<'a> {
    /// Per-channel scale (gamma), or `None` for 1.
    pub weight: Option<&'a Tensor>,
    /// Per-channel shift (beta), or `None` for 0.
    pub bias: Option<&'a Tensor>,
    /// Running mean and (unbiased) variance, updated in training:
    /// `running = (1 - momentum) * running + momentum * batch`. Without them, batch
    /// statistics are used in evaluation too (PyTorch's `track_running_stats=False`).
    pub running_mean: Option<&'a Tensor>,
    pub running_var: Option<&'a Tensor>,
    pub training: bool,
    pub momentum: f32,
    pub eps: f32,
}

impl Default for BatchNormArgs<'_> {
    fn default() -> Self {
        BatchNormArgs {
            weight: None,
            bias: None,
            running_mean: None,
            running_var: None,
            training: true,
            momentum: 0.1,
            eps: 1e-5,
        }
    }
}

fn check_vec(op: &'static str, name: &'static str, t: Option<&Tensor>, c: usize) -> Result<()> {
    if let Some(t) = t {
        if t.shape() != [c] {
            return param_err(
                op,
                name,
                format!(
                    "has shape {:?}, expected [{c}] (one per channel)",
                    t.shape()
                ),
            );
        }
    }
    Ok(())
}

/// Batch normalisation over every axis but the channel axis 1.
///
/// # Shapes
/// x: `(n, c)`, `(n, c, l)` or `(n, c, h, w)`; weight, bias, running stats: `(c)`; output as x.
pub fn batch_norm(x: &Tensor, a: &BatchNormArgs) -> Result<Tensor> {
    const OP: &str = "batch_norm";
    if !(2..=4).contains(&x.rank()) {
        return shape_err(
            OP,
            format!(
                "input must be (n, c), (n, c, l) or (n, c, h, w), got {:?}",
                x.shape()
            ),
        );
    }
    let (n, c) = (x.shape()[0], x.shape()[1]);
    let inner: usize = x.shape()[2..].iter().product();
    for (name, t) in [
        ("weight", a.weight),
        ("bias", a.bias),
        ("running_mean", a.running_mean),
        ("running_var", a.running_var),
    ] {
        check_vec(OP, name, t, c)?;
    }
    if a.running_mean.is_some() != a.running_var.is_some() {
        return param_err(
            OP,
            "running_var",
            "running mean and variance must be given together",
        );
    }
    let m = n * inner;
    let use_batch = a.training || a.running_mean.is_none();
    if use_batch && m <= 1 {
        return shape_err(
            OP,
            format!(
                "expected more than 1 value per channel when using batch statistics, got input {:?}",
                x.shape()
            ),
        );
    }
    let (mean, var, m): (Vec<f32>, Vec<f64>, usize) = if use_batch {
        let (mut mean, mut var) = (vec![0f32; c], vec![0f64; c]);
        let m = batch_stats(&x.data(), (n, c, inner), &mut mean, &mut var);
        (mean, var, m)
    } else {
        let (Some(rm), Some(rv)) = (a.running_mean, a.running_var) else {
            return shape_err(
                OP,
                "evaluation without batch statistics needs running statistics",
            );
        };
        (
            rm.to_vec(),
            rv.to_vec().iter().map(|&v| v as f64).collect(),
            m,
        )
    };
    let invstd: Vec<f32> = var.iter().map(|&v| inv_std(v, a.eps)).collect();
    // Running statistics are written only once no buffer is borrowed (one of them may be the
    // input itself).
    if a.training {
        if let (Some(rm), Some(rv)) = (a.running_mean, a.running_var) {
            update_running(
                &mut rm.data_mut(),
                &mut rv.data_mut(),
                &mean,
                &var,
                a.momentum,
                m,
            );
        }
    }
    let wv: Vec<f32> = a.weight.map_or(vec![1.0; c], |w| w.to_vec());
    let bv: Vec<f32> = a.bias.map_or(vec![0.0; c], |b| b.to_vec());
    let (mut scale, mut shift) = (vec![0f32; c], vec![0f32; c]);
    scale_shift(&wv, &bv, &mean, &invstd, &mut scale, &mut shift);
    let mut y = vec![0f32; n * c * inner];
    affine_planes(&x.data(), &mut y, (&scale, &shift), inner, None);
    let mut inputs = vec![x];
    inputs.extend(a.weight);
    inputs.extend(a.bias);
    let (hw, hb) = (a.weight.is_some(), a.bias.is_some());
    let shape = x.shape().to_vec();
    let xc = x.clone();
    Ok(output(OP, y, shape.clone(), &inputs, move |g| {
        let (gd, xd) = (g.data(), xc.data());
        let mut sums = vec![(0f64, 0f64); c];
        let mut dx = vec![0f32; gd.len()];
        let stats = BnSaved {
            mean: &mean,
            invstd: &invstd,
            weight: &wv,
            batch: use_batch,
        };
        batch_norm_backward(&gd, &xd, (n, c, inner), &stats, &mut sums, &mut dx);
        Ok(with_param_grads(
            Tensor::make(dx, shape, false, None),
            &sums,
            (hw, hb),
        ))
    }))
}

/// A batch norm's gradients: the input's `dx`, then the weight's (`sum(g * xhat)` per
/// channel) and the bias's (`sum(g)`) where the op has them.
fn with_param_grads(
    dx: Tensor,
    sums: &[(f64, f64)],
    (weight, bias): (bool, bool),
) -> Vec<Option<Tensor>> {
    let per_channel = |f: fn(&(f64, f64)) -> f64| {
        Some(Tensor::make(
            sums.iter().map(|s| f(s) as f32).collect(),
            vec![sums.len()],
            false,
            None,
        ))
    };
    let mut grads = vec![Some(dx)];
    if weight {
        grads.push(per_channel(|s| s.1));
    }
    if bias {
        grads.push(per_channel(|s| s.0));
    }
    grads
}

/// Per-channel batch mean and biased variance of `x` shaped `(n, c, inner)`: two passes per
/// channel (mean, then squared deviations) in f64, channels in parallel. Returns the values
/// per channel they were taken over: `n * inner`, or in a data-parallel run with
/// `sync_batch_norm` the whole batch's over every rank ([`synced_stats`]).
pub(crate) fn batch_stats(
    x: &[f32],
    (n, c, inner): (usize, usize, usize),
    mean: &mut [f32],
    var: &mut [f64],
) -> usize {
    if let Some(world) = crate::dist::batch_norm_world() {
        return synced_stats(&*world, x, (n, c, inner), mean, var);
    }
    let m = (n * inner) as f64;
    let planes = move |ch: usize| (0..n).map(move |i| (i * c + ch) * inner);
    mean.par_iter_mut()
        .zip(var.par_iter_mut())
        .enumerate()
        .for_each(|(ch, (mu_out, var_out))| {
            let s: f64 = each_sum_f64(planes(ch).map(|o| &x[o..o + inner])).sum();
            let mu = s / m;
            let v: f64 = each_sum_sq_dev_f64(planes(ch).map(|o| &x[o..o + inner]), mu).sum();
            (*mu_out, *var_out) = (mu as f32, v / m);
        });
    n * inner
}

/// [`batch_stats`] over the batch of every rank: the per-channel sums and counts summed over
/// the ranks, then the squared deviations from the whole batch's mean.
fn synced_stats(
    world: &dyn crate::dist::Collective,
    x: &[f32],
    (n, c, inner): (usize, usize, usize),
    mean: &mut [f32],
    var: &mut [f64],
) -> usize {
    let planes = move |ch: usize| (0..n).map(move |i| (i * c + ch) * inner);
    let mut sums = vec![0f64; c + 1];
    sums[..c].par_iter_mut().enumerate().for_each(|(ch, s)| {
        *s = each_sum_f64(planes(ch).map(|o| &x[o..o + inner])).sum();
    });
    sums[c] = (n * inner) as f64;
    world.all_reduce_sum_f64(&mut sums);
    let m = sums[c];
    let mut dev = vec![0f64; c];
    dev.par_iter_mut().enumerate().for_each(|(ch, d)| {
        let mu = sums[ch] / m;
        *d = each_sum_sq_dev_f64(planes(ch).map(|o| &x[o..o + inner]), mu).sum();
    });
    world.all_reduce_sum_f64(&mut dev);
    for ch in 0..c {
        (mean[ch], var[ch]) = ((sums[ch] / m) as f32, dev[ch] / m);
    }
    m as usize
}

/// `1 / sqrt(var + eps)` in f64.
pub(crate) fn inv_std(var: f64, eps: f32) -> f32 {
    (1.0 / (var + eps as f64).sqrt()) as f32
}

/// A batch norm as `y = x * scale + shift` per channel: `scale = weight * invstd`,
/// `shift = bias - mean * scale`.
pub(crate) fn scale_shift(
    weight: &[f32],
    bias: &[f32],
    mean: &[f32],
    invstd: &[f32],
    scale: &mut [f32],
    shift: &mut [f32],
) {
    for ch in 0..scale.len() {
        scale[ch] = weight[ch] * invstd[ch];
        shift[ch] = bias[ch] - mean[ch] * scale[ch];
    }
}

/// `running = (1 - momentum) * running + momentum * batch`, the variance unbiased over the
/// `m` values per channel.
pub(crate) fn update_running(
    rm: &mut [f32],
    rv: &mut [f32],
    mean: &[f32],
    var: &[f64],
    momentum: f32,
    m: usize,
) {
    for (r, b) in rm.iter_mut().zip(mean) {
        *r = (1.0 - momentum) * *r + momentum * b;
    }
    for (r, v) in rv.iter_mut().zip(var) {
        let unbiased = (*v * m as f64 / (m - 1) as f64) as f32;
        *r = (1.0 - momentum) * *r + momentum * unbiased;
    }
}

/// `y = act(x * scale[ch] + shift[ch])` over `(n, c, inner)` planes (channel `plane % c`),
/// the activation (if any) applied to each plane while it is in cache.
pub(crate) fn affine_planes(
    x: &[f32],
    y: &mut [f32],
    (scale, shift): (&[f32], &[f32]),
    inner: usize,
    act: Option<Pointwise>,
) {
    let c = scale.len();
    y.par_chunks_mut(inner.max(1))
        .zip(x.par_chunks(inner.max(1)))
        .enumerate()
        .for_each(|(plane, (yp, xp))| {
            affine(xp, yp, (scale[plane % c], shift[plane % c]));
            if let Some(p) = act {
                p.apply(yp);
            }
        });
}

avx2_twin! {
    /// `y = x * a + b`.
    fn affine(x: &[f32], y: &mut [f32], ab: (f32, f32)) = affine_plain;
}

#[inline(always)]
fn affine_plain(x: &[f32], y: &mut [f32], (a, b): (f32, f32)) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = v * a + b;
    }
}

/// What a batch norm's backward needs of its forward.
pub(crate) struct BnSaved<'a> {
    pub(crate) mean: &'a [f32],
    pub(crate) invstd: &'a [f32],
    pub(crate) weight: &'a [f32],
    /// Batch statistics were used (training): the input gradient goes through them.
    pub(crate) batch: bool,
}

/// Batch norm backward: `sums[ch]` = (sum(g), sum(g * xhat)) (the bias's and weight's
/// gradients) and `dx`, with xhat recomputed from the saved input.
pub(crate) fn batch_norm_backward(
    gd: &[f32],
    xd: &[f32],
    (n, c, inner): (usize, usize, usize),
    st: &BnSaved,
    sums: &mut [(f64, f64)],
    dx: &mut [f32],
) {
    let planes = move |ch: usize| (0..n).map(move |i| (i * c + ch) * inner);
    sums.par_iter_mut().enumerate().for_each(|(ch, out)| {
        let mu = st.mean[ch] as f64;
        let (mut sg, mut sgx) = (0f64, 0f64);
        let pairs = planes(ch).map(|o| (&gd[o..o + inner], &xd[o..o + inner]));
        for (a, b) in each_sum_and_centered_dot_f64(pairs, mu) {
            sg += a;
            sgx += b;
        }
        *out = (sg, sgx * st.invstd[ch] as f64);
    });
    // what the input gradient goes through: the means of g and g * xhat over the batch
    let synced = crate::dist::batch_norm_world()
        .filter(|_| st.batch)
        .map(|world| synced_grad_means(&*world, sums, n, inner));
    let (m, sums) = ((n * inner) as f64, &*sums);
    let means = |ch: usize| match &synced {
        Some(means) => means[ch],
        None => (sums[ch].0 / m, sums[ch].1 / m),
    };
    dx.par_chunks_mut(inner.max(1))
        .enumerate()
        .for_each(|(plane, dp)| {
            let ch = plane % c;
            let o = plane * inner;
            let (gp, xp) = (&gd[o..o + inner], &xd[o..o + inner]);
            let k = st.weight[ch] * st.invstd[ch];
            if st.batch {
                // d/dx of (x - mean) * invstd with batch statistics
                let (mg, mgx) = means(ch);
                let (mg, mgx) = (mg as f32, mgx as f32);
                let coef = [k, mg, st.mean[ch], st.invstd[ch], mgx];
                bn_input_grad(gp, xp, dp, coef);
            } else {
                for (d, &gv) in dp.iter_mut().zip(gp) {
                    *d = k * gv;
                }
            }
        });
}

/// The means of `g` and `g * xhat` over the batch of every rank, for this rank's input
/// gradient (`sync_batch_norm`). Each rank's `g` is the gradient of its own part's mean loss,
/// and the ranks' gradients are later summed weighted by their share `n_r / N` of the batch:
/// so the sums are summed weighted by `n_r`, and this rank's means scaled by `1 / n_r`:
/// `sum_r(n_r * S_r) / (n * M)` with `M` the values per channel over every rank.
fn synced_grad_means(
    world: &dyn crate::dist::Collective,
    sums: &[(f64, f64)],
    n: usize,
    inner: usize,
) -> Vec<(f64, f64)> {
    let c = sums.len();
    let w = n as f64;
    let mut all: Vec<f64> = sums.iter().flat_map(|&(a, b)| [a * w, b * w]).collect();
    all.push(n as f64);
    world.all_reduce_sum_f64(&mut all);
    let m = all[2 * c] * inner as f64;
    (0..c)
        .map(|ch| (all[2 * ch] / (w * m), all[2 * ch + 1] / (w * m)))
        .collect()
}

avx2_twin! {
    /// `d = k * (g - mg - (x - mean) * invstd * mgx)` with `coef = [k, mg, mean, invstd, mgx]`:
    /// a batch norm's input gradient through batch statistics.
    fn bn_input_grad(g: &[f32], x: &[f32], d: &mut [f32], coef: [f32; 5]) = bn_input_grad_plain;
}

#[inline(always)]
fn bn_input_grad_plain(g: &[f32], x: &[f32], d: &mut [f32], [k, mg, mean, is, mgx]: [f32; 5]) {
    for ((d, &gv), &xv) in d.iter_mut().zip(g).zip(x) {
        *d = k * (gv - mg - (xv - mean) * is * mgx);
    }
}

/// Layer normalisation over the trailing dimensions `normalized_shape`, with optional
/// elementwise affine `weight` and `bias` of that shape.
pub fn layer_norm(
    x: &Tensor,
    normalized_shape: &[usize],
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
) -> Result<Tensor> {
    const OP: &str = "layer_norm";
    let r = normalized_shape.len();
    if r == 0 || r > x.rank() || x.shape()[x.rank() - r..] != *normalized_shape {
        return shape_err(
            OP,
            format!(
                "normalized_shape {normalized_shape:?} must be the trailing dimensions of the input {:?}",
                x.shape()
            ),
        );
    }
    for (name, t) in [("weight", weight), ("bias", bias)] {
        if let Some(t) = t {
            if t.shape() != normalized_shape {
                return param_err(
                    OP,
                    name,
                    format!("has shape {:?}, expected {normalized_shape:?}", t.shape()),
                );
            }
        }
    }
    let d: usize = normalized_shape.iter().product();
    if d == 0 {
        return shape_err(OP, "normalized_shape has no elements");
    }
    let rows = x.numel() / d;
    let xd = x.data();
    let wv: Vec<f32> = weight.map_or(vec![1.0; d], |w| w.to_vec());
    let bv: Vec<f32> = bias.map_or(vec![0.0; d], |b| b.to_vec());
    let mut xhat = vec![0f32; xd.len()];
    let mut invstd = vec![0f32; rows];
    let mut y = vec![0f32; xd.len()];
    for r in 0..rows {
        let row = &xd[r * d..(r + 1) * d];
        let mu = sum_f64(row) / d as f64;
        let var = row.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / d as f64;
        let is = 1.0 / (var + eps as f64).sqrt();
        invstd[r] = is as f32;
        for j in 0..d {
            let xh = ((row[j] as f64 - mu) * is) as f32;
            xhat[r * d + j] = xh;
            y[r * d + j] = xh * wv[j] + bv[j];
        }
    }
    drop(xd);
    let mut inputs = vec![x];
    inputs.extend(weight);
    inputs.extend(bias);
    let (hw, hb) = (weight.is_some(), bias.is_some());
    let shape = x.shape().to_vec();
    let nshape = normalized_shape.to_vec();
    Ok(output(OP, y, shape.clone(), &inputs, move |g| {
        let gd = g.data();
        let mut dx = vec![0f32; gd.len()];
        let mut dw = vec![0f64; d];
        let mut db = vec![0f64; d];
        for r in 0..rows {
            let (mut s1, mut s2) = (0f64, 0f64);
            for j in 0..d {
                let k = r * d + j;
                let gh = (gd[k] * wv[j]) as f64;
                s1 += gh;
                s2 += gh * xhat[k] as f64;
                dw[j] += (gd[k] * xhat[k]) as f64;
                db[j] += gd[k] as f64;
            }
            for j in 0..d {
                let k = r * d + j;
                let gh = (gd[k] * wv[j]) as f64;
                dx[k] = (invstd[r] as f64 * (gh - s1 / d as f64 - xhat[k] as f64 * s2 / d as f64))
                    as f32;
            }
        }
        let mut grads = vec![Some(Tensor::make(dx, shape, false, None))];
        if hw {
            grads.push(Some(Tensor::make(
                dw.iter().map(|&v| v as f32).collect(),
                nshape.clone(),
                false,
                None,
            )));
        }
        if hb {
            grads.push(Some(Tensor::make(
                db.iter().map(|&v| v as f32).collect(),
                nshape,
                false,
                None,
            )));
        }
        Ok(grads)
    }))
}

/// The L2 norm of each slice `w[i]` (over all axes but the first), shaped `(n, 1, ..)`.
pub fn filter_norms(w: &Tensor) -> Result<Tensor> {
    if w.rank() < 2 {
        return shape_err(
            "weight_norm",
            format!("needs a weight with at least 2 axes, got {:?}", w.shape()),
        );
    }
    let axes: Vec<isize> = (1..w.rank() as isize).collect();
    super::sqrt(&super::sum(&super::mul(w, w)?, &axes, true)?)
}

/// Weight normalisation (PyTorch's `_weight_norm` with `dim=0`): `g * v / ||v||`, the norm of
/// each `v[i]` taken over all its other axes; `g` is shaped `(n, 1, ..)` like that norm.
pub fn weight_norm(v: &Tensor, g: &Tensor) -> Result<Tensor> {
    let mut want = vec![1; v.rank().max(1)];
    want[0] = v.shape().first().copied().unwrap_or(0);
    if v.rank() < 2 || g.shape() != want {
        return shape_err(
            "weight_norm",
            format!(
                "g must be shaped {want:?} for v {:?}, got {:?}",
                v.shape(),
                g.shape()
            ),
        );
    }
    super::mul(v, &super::div(g, &filter_norms(v)?)?)
}

/// Batch normalisation in training of series padded to the longest, `(n, c, l)`: sample
/// `i`'s valid positions are its first `lengths[i]`. Statistics (and the running statistics,
/// updated as [`batch_norm`] does, the variance unbiased over the valid count) come from
/// valid positions only; padded positions of the output are 0 and pass no gradient. Equal
/// to [`batch_norm`] over the valid parts laid end to end.
pub fn batch_norm_masked(x: &Tensor, lengths: &[usize], a: &BatchNormArgs) -> Result<Tensor> {
    const OP: &str = "batch_norm";
    if x.rank() != 3 || lengths.len() != x.shape()[0] {
        return shape_err(
            OP,
            format!(
                "masked batch norm takes (n, c, l) with one length per sample, got {:?} and {} lengths",
                x.shape(),
                lengths.len()
            ),
        );
    }
    let (n, c, l) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    for (name, t) in [("weight", a.weight), ("bias", a.bias)] {
        check_vec(OP, name, t, c)?;
    }
    let valid: Vec<usize> = lengths.iter().map(|&v| v.min(l)).collect();
    let m: usize = valid.iter().sum();
    if m <= 1 {
        return shape_err(
            OP,
            format!("expected more than 1 valid value per channel, got {m}"),
        );
    }
    let vr = &valid;
    let parts = move |ch: usize| (0..n).map(move |i| ((i * c + ch) * l, vr[i]));
    let (mut mean, mut var) = (vec![0f32; c], vec![0f64; c]);
    {
        let xd = x.data();
        mean.par_iter_mut()
            .zip(var.par_iter_mut())
            .enumerate()
            .for_each(|(ch, (mu_out, var_out))| {
                let s: f64 = each_sum_f64(parts(ch).map(|(o, v)| &xd[o..o + v])).sum();
                let mu = s / m as f64;
                let q: f64 = each_sum_sq_dev_f64(parts(ch).map(|(o, v)| &xd[o..o + v]), mu).sum();
                (*mu_out, *var_out) = (mu as f32, q / m as f64);
            });
    }
    let invstd: Vec<f32> = var.iter().map(|&v| inv_std(v, a.eps)).collect();
    if let (Some(rm), Some(rv)) = (a.running_mean, a.running_var) {
        update_running(
            &mut rm.data_mut(),
            &mut rv.data_mut(),
            &mean,
            &var,
            a.momentum,
            m,
        );
    }
    let wv: Vec<f32> = a.weight.map_or(vec![1.0; c], |w| w.to_vec());
    let bv: Vec<f32> = a.bias.map_or(vec![0.0; c], |b| b.to_vec());
    let (mut scale, mut shift) = (vec![0f32; c], vec![0f32; c]);
    scale_shift(&wv, &bv, &mean, &invstd, &mut scale, &mut shift);
    let mut y = vec![0f32; n * c * l];
    {
        let xd = x.data();
        y.par_chunks_mut(l.max(1))
            .enumerate()
            .for_each(|(plane, yp)| {
                let (ch, v) = (plane % c, lengths[plane / c].min(l));
                let xp = &xd[plane * l..plane * l + v];
                for (o, &xv) in yp[..v].iter_mut().zip(xp) {
                    *o = xv * scale[ch] + shift[ch];
                }
            });
    }
    let mut inputs = vec![x];
    inputs.extend(a.weight);
    inputs.extend(a.bias);
    let (hw, hb) = (a.weight.is_some(), a.bias.is_some());
    let (shape, xc, lengths) = (x.shape().to_vec(), x.clone(), lengths.to_vec());
    Ok(output(OP, y, shape.clone(), &inputs, move |g| {
        let (gd, xd) = (g.data(), xc.data());
        let valid: Vec<usize> = lengths.iter().map(|&v| v.min(l)).collect();
        let vr = &valid;
        let parts = move |ch: usize| (0..n).map(move |i| ((i * c + ch) * l, vr[i]));
        // per channel: sum(g) and sum(g * xhat) over valid positions
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let mu = mean[ch] as f64;
                let pairs = parts(ch).map(|(o, v)| (&gd[o..o + v], &xd[o..o + v]));
                let (sg, sgx) = each_sum_and_centered_dot_f64(pairs, mu)
                    .fold((0f64, 0f64), |(sg, sgx), (a, b)| (sg + a, sgx + b));
                (sg, sgx * invstd[ch] as f64)
            })
            .collect();
        let mut dx = vec![0f32; gd.len()];
        dx.par_chunks_mut(l.max(1))
            .enumerate()
            .for_each(|(plane, dp)| {
                let (ch, v) = (plane % c, valid[plane / c]);
                let o = plane * l;
                let k = wv[ch] * invstd[ch];
                let (mg, mgx) = (
                    (sums[ch].0 / m as f64) as f32,
                    (sums[ch].1 / m as f64) as f32,
                );
                for ((d, &gv), &xv) in dp[..v].iter_mut().zip(&gd[o..o + v]).zip(&xd[o..o + v]) {
                    *d = k * (gv - mg - (xv - mean[ch]) * invstd[ch] * mgx);
                }
            });
        Ok(with_param_grads(
            Tensor::make(dx, shape, false, None),
            &sums,
            (hw, hb),
        ))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn the_avx2_copies_give_the_plain_loops_bits() {
        let mut rng = Rng::new(5);
        let mut v = |n: usize| (0..n).map(|_| rng.normal() * 3.0).collect::<Vec<f32>>();
        let (g, x) = (v(203), v(203));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let coef = [0.7, 0.01, 0.3, 1.9, -0.2];
        let (mut fast, mut plain) = (vec![0f32; 203], vec![0f32; 203]);
        bn_input_grad(&g, &x, &mut fast, coef);
        bn_input_grad_plain(&g, &x, &mut plain, coef);
        assert_eq!(bits(&fast), bits(&plain));
        affine(&x, &mut fast, (1.3, -0.4));
        affine_plain(&x, &mut plain, (1.3, -0.4));
        assert_eq!(bits(&fast), bits(&plain));
    }
}
