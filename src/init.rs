//! Seeded weight initialisers: PyTorch's defaults for each layer type, Kaiming/He and
//! Glorot/Xavier (normal and uniform). Fans follow PyTorch's `_calculate_fan_in_and_fan_out`:
//! `fan_in = shape[1] * receptive`, `fan_out = shape[0] * receptive`.

use crate::error::{Error, Result, param_err};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Which fan a Kaiming initialiser preserves the variance of.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FanMode {
    FanIn,
    FanOut,
}

/// (fan_in, fan_out) of a weight shape; needs at least 2 dimensions.
pub fn fans(shape: &[usize]) -> Result<(usize, usize)> {
    if shape.len() < 2 {
        return param_err(
            "init",
            "shape",
            format!("fans need a weight of at least 2 dimensions, got {shape:?}"),
        );
    }
    let too_large = || Error::Param {
        op: "init",
        param: "shape",
        msg: format!("a weight of shape {shape:?} is too large to compute with"),
    };
    let receptive = shape[2..]
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(too_large)?;
    let fan_in = shape[1].checked_mul(receptive).ok_or_else(too_large)?;
    let fan_out = shape[0].checked_mul(receptive).ok_or_else(too_large)?;
    Ok((fan_in, fan_out))
}

/// The gain PyTorch's `calculate_gain` gives a nonlinearity (`param`: leaky_relu's slope).
pub fn gain(nonlinearity: &str, param: Option<f32>) -> Result<f32> {
    Ok(match nonlinearity {
        "linear" | "conv1d" | "conv2d" | "conv_transpose1d" | "conv_transpose2d" | "sigmoid" => 1.0,
        "tanh" => 5.0 / 3.0,
        "relu" => std::f32::consts::SQRT_2,
        "leaky_relu" => {
            let a = param.unwrap_or(0.01);
            (2.0 / (1.0 + a * a)).sqrt()
        }
        "selu" => 0.75,
        other => {
            return param_err(
                "init",
                "nonlinearity",
                format!("unknown nonlinearity `{other}`"),
            );
        }
    })
}

fn uniform(shape: &[usize], bound: f32, rng: &mut Rng) -> Result<Tensor> {
    Tensor::rand_uniform(shape, -bound, bound, rng)
}

fn normal(shape: &[usize], std: f32, rng: &mut Rng) -> Result<Tensor> {
    let t = Tensor::randn(shape, rng)?;
    t.data_mut().iter_mut().for_each(|v| *v *= std);
    Ok(t)
}

fn fan(shape: &[usize], mode: FanMode) -> Result<usize> {
    let (i, o) = fans(shape)?;
    let f = if mode == FanMode::FanIn { i } else { o };
    if f == 0 {
        return param_err("init", "shape", format!("{shape:?} has a zero fan"));
    }
    Ok(f)
}

/// Kaiming/He uniform: bound = gain * sqrt(3 / fan).
pub fn kaiming_uniform(shape: &[usize], mode: FanMode, gain: f32, rng: &mut Rng) -> Result<Tensor> {
    let f = fan(shape, mode)?;
    uniform(shape, gain * (3.0 / f as f32).sqrt(), rng)
}

/// Kaiming/He normal: std = gain / sqrt(fan).
pub fn kaiming_normal(shape: &[usize], mode: FanMode, gain: f32, rng: &mut Rng) -> Result<Tensor> {
    let f = fan(shape, mode)?;
    normal(shape, gain / (f as f32).sqrt(), rng)
}

/// Glorot/Xavier uniform: bound = gain * sqrt(6 / (fan_in + fan_out)).
pub fn xavier_uniform(shape: &[usize], gain: f32, rng: &mut Rng) -> Result<Tensor> {
    let (i, o) = fans(shape)?;
    if i + o == 0 {
        return param_err("init", "shape", format!("{shape:?} has zero fans"));
    }
    uniform(shape, gain * (6.0 / (i + o) as f32).sqrt(), rng)
}

/// Glorot/Xavier normal: std = gain * sqrt(2 / (fan_in + fan_out)).
pub fn xavier_normal(shape: &[usize], gain: f32, rng: &mut Rng) -> Result<Tensor> {
    let (i, o) = fans(shape)?;
    if i + o == 0 {
        return param_err("init", "shape", format!("{shape:?} has zero fans"));
    }
    normal(shape, gain * (2.0 / (i + o) as f32).sqrt(), rng)
}

/// PyTorch's default for Linear, Conv and ConvTranspose weights:
/// `kaiming_uniform_(a = sqrt(5))`, i.e. uniform in `±1 / sqrt(fan_in)`.
pub fn default_weight(shape: &[usize], rng: &mut Rng) -> Result<Tensor> {
    let g = gain("leaky_relu", Some(5f32.sqrt()))?;
    kaiming_uniform(shape, FanMode::FanIn, g, rng)
}

/// PyTorch's default bias for a layer whose weight has `weight_shape`: uniform in
/// `±1 / sqrt(fan_in)`.
pub fn default_bias(weight_shape: &[usize], n: usize, rng: &mut Rng) -> Result<Tensor> {
    let (fan_in, _) = fans(weight_shape)?;
    let bound = if fan_in > 0 {
        1.0 / (fan_in as f32).sqrt()
    } else {
        0.0
    };
    uniform(&[n], bound, rng)
}
