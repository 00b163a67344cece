//! Dropout with inverted scaling (survivors scaled by 1 / (1 - p) in training, identity in
//! evaluation), and spatial dropout, which drops whole channels of `(n, c, ...)` inputs.

use crate::autograd::output;
use crate::error::{Result, param_err, shape_err};
use crate::rng::Rng;
use crate::tensor::Tensor;

fn check_p(op: &'static str, p: f32) -> Result<()> {
    if !(0.0..=1.0).contains(&p) {
        return param_err(op, "rate", format!("{p} is not a probability in [0, 1]"));
    }
    Ok(())
}

fn masked(op: &'static str, x: &Tensor, mask: Vec<f32>, group: usize) -> Tensor {
    let xd = x.data();
    let y: Vec<f32> = xd
        .iter()
        .enumerate()
        .map(|(i, v)| v * mask[i / group])
        .collect();
    drop(xd);
    let shape = x.shape().to_vec();
    output(op, y, shape.clone(), &[x], move |g| {
        let dx: Vec<f32> = g
            .data()
            .iter()
            .enumerate()
            .map(|(i, v)| v * mask[i / group])
            .collect();
        Ok(vec![Some(Tensor::make(dx, shape, false, None))])
    })
}

fn mask(n: usize, p: f32, rng: &mut Rng) -> Vec<f32> {
    let mut m = vec![0f32; n];
    fill_mask(&mut m, p, rng);
    m
}

/// A dropout mask: each entry 0 with probability `p`, else `1 / (1 - p)`, drawn in order.
pub(crate) fn fill_mask(mask: &mut [f32], p: f32, rng: &mut Rng) {
    let keep = 1.0 - p;
    let scale = if keep > 0.0 { 1.0 / keep } else { 0.0 };
    for m in mask {
        *m = if rng.uniform() < p { 0.0 } else { scale };
    }
}

/// Zero each element with probability `p` and scale the rest by `1 / (1 - p)` when
/// `training`; the identity otherwise.
pub fn dropout(x: &Tensor, p: f32, training: bool, rng: &mut Rng) -> Result<Tensor> {
    check_p("dropout", p)?;
    if !training || p == 0.0 {
        return Ok(x.clone());
    }
    Ok(masked("dropout", x, mask(x.numel(), p, rng), 1))
}

/// Zero whole channels of `(n, c, ...)` with probability `p` (scaled as [`dropout`]).
pub fn spatial_dropout(x: &Tensor, p: f32, training: bool, rng: &mut Rng) -> Result<Tensor> {
    check_p("spatial_dropout", p)?;
    if x.rank() < 3 {
        return shape_err(
            "spatial_dropout",
            format!(
                "input must be (n, c, ...) with positions, got {:?}",
                x.shape()
            ),
        );
    }
    if !training || p == 0.0 {
        return Ok(x.clone());
    }
    let planes = x.shape()[0] * x.shape()[1];
    let group = (x.numel() / planes.max(1)).max(1);
    Ok(masked("spatial_dropout", x, mask(planes, p, rng), group))
}
