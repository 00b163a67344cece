//! Upsampling by integer factors: nearest neighbour and (bi)linear interpolation, as
//! PyTorch's `F.interpolate(x, scale_factor=..., mode=..., align_corners=False)`; 1-D runs as
//! 2-D with a height of one.
//!
//! Each output position reads at most two input positions per axis with fixed weights, so the
//! forward and backward passes share one table per axis: `(i0, i1, w0, w1)`.

use rayon::prelude::*;

use crate::autograd::output;
use crate::error::{Result, param_err};
use crate::ops::expect_rank;
use crate::ops::shape::reshape;
use crate::tensor::Tensor;

/// How new positions get their values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpsampleMode {
    /// The value of the input position the output falls in.
    Nearest,
    /// Linear along each axis (bilinear in 2-D) between the two nearest input centres, with
    /// half-pixel centres (`align_corners=False`).
    Linear,
}

impl UpsampleMode {
    pub fn name(&self) -> &'static str {
        match self {
            UpsampleMode::Nearest => "nearest",
            UpsampleMode::Linear => "linear",
        }
    }
}

/// The two input positions and weights of each of `n * scale` output positions.
fn taps(n: usize, scale: usize, mode: UpsampleMode) -> Vec<(usize, usize, f32, f32)> {
    (0..n * scale)
        .map(|o| match mode {
            UpsampleMode::Nearest => (o / scale, o / scale, 1.0, 0.0),
            UpsampleMode::Linear => {
                // PyTorch: src = (o + 0.5) / scale - 0.5, clamped below at 0
                let src = ((o as f64 + 0.5) / scale as f64 - 0.5).max(0.0);
                let i0 = (src.floor() as usize).min(n - 1);
                let i1 = (i0 + 1).min(n - 1);
                let l1 = (src - i0 as f64) as f32;
                (i0, i1, 1.0 - l1, l1)
            }
        })
        .collect()
}

/// `(n, c, h, w)` -> `(n, c, h * scale[0], w * scale[1])`.
pub fn upsample2d(x: &Tensor, scale: [usize; 2], mode: UpsampleMode) -> Result<Tensor> {
    core(
        if mode == UpsampleMode::Nearest {
            "upsample_nearest2d"
        } else {
            "upsample_bilinear2d"
        },
        x,
        scale,
        mode,
    )
}

/// `(n, c, l)` -> `(n, c, l * scale)`.
pub fn upsample1d(x: &Tensor, scale: usize, mode: UpsampleMode) -> Result<Tensor> {
    let op = if mode == UpsampleMode::Nearest {
        "upsample_nearest1d"
    } else {
        "upsample_linear1d"
    };
    expect_rank(op, "input", x, 3, "(n, c, l)")?;
    let s = x.shape().to_vec();
    let y = core(op, &reshape(x, &[s[0], s[1], 1, s[2]])?, [1, scale], mode)?;
    reshape(&y, &[s[0], s[1], s[2] * scale])
}

fn core(op: &'static str, x: &Tensor, scale: [usize; 2], mode: UpsampleMode) -> Result<Tensor> {
    expect_rank(op, "input", x, 4, "(n, c, h, w)")?;
    if scale.contains(&0) {
        return param_err(op, "size", format!("{scale:?} must be positive"));
    }
    let s = x.shape().to_vec();
    if s[2] == 0 || s[3] == 0 {
        return param_err(op, "input", format!("has an empty spatial axis: {s:?}"));
    }
    let (h, w) = (s[2], s[3]);
    let (oh, ow) = (h * scale[0], w * scale[1]);
    let th = taps(h, scale[0], mode);
    let tw = taps(w, scale[1], mode);
    let planes = s[0] * s[1];
    let mut y = vec![0f32; planes * oh * ow];
    {
        let xd = x.data();
        y.par_chunks_mut(oh * ow)
            .zip(xd.par_chunks(h * w))
            .for_each(|(yp, xp)| {
                for (r, &(a0, a1, u0, u1)) in th.iter().enumerate() {
                    let (ra, rb) = (&xp[a0 * w..(a0 + 1) * w], &xp[a1 * w..(a1 + 1) * w]);
                    for (c, &(b0, b1, v0, v1)) in tw.iter().enumerate() {
                        yp[r * ow + c] =
                            u0 * (v0 * ra[b0] + v1 * ra[b1]) + u1 * (v0 * rb[b0] + v1 * rb[b1]);
                    }
                }
            });
    }
    let out_shape = vec![s[0], s[1], oh, ow];
    Ok(output(op, y, out_shape, &[x], move |gy| {
        let g = gy.data();
        let mut dx = vec![0f32; planes * h * w];
        dx.par_chunks_mut(h * w)
            .zip(g.par_chunks(oh * ow))
            .for_each(|(dp, gp)| {
                for (r, &(a0, a1, u0, u1)) in th.iter().enumerate() {
                    for (c, &(b0, b1, v0, v1)) in tw.iter().enumerate() {
                        let gv = gp[r * ow + c];
                        dp[a0 * w + b0] += u0 * v0 * gv;
                        dp[a0 * w + b1] += u0 * v1 * gv;
                        dp[a1 * w + b0] += u1 * v0 * gv;
                        dp[a1 * w + b1] += u1 * v1 * gv;
                    }
                }
            });
        Ok(vec![Some(Tensor::from_vec(dx, &s)?)])
    }))
}
