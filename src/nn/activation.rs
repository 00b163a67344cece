//! Activations usable as a layer or as a layer option (`activation = "relu"`).

use crate::error::{Result, param_err};
use crate::ops::{self, Pointwise};
use crate::tensor::Tensor;

/// An elementwise (or, for softmax, per-row) activation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Linear,
    Relu,
    LeakyRelu(f32),
    Elu(f32),
    Gelu,
    Sigmoid,
    Tanh,
    /// Over the channel axis (axis 1), as `nn.Softmax(dim=1)`.
    Softmax,
    LogSoftmax,
}

impl Activation {
    /// Every name the spec accepts.
    pub const NAMES: &'static [&'static str] = &[
        "linear",
        "relu",
        "leaky_relu",
        "elu",
        "gelu",
        "sigmoid",
        "tanh",
        "softmax",
        "log_softmax",
    ];

    /// Parse a name; `alpha` is leaky_relu's slope (default 0.01) or elu's alpha (default 1).
    pub fn parse(name: &str, alpha: Option<f32>) -> Result<Activation> {
        Ok(match name {
            "linear" | "none" => Activation::Linear,
            "relu" => Activation::Relu,
            "leaky_relu" => Activation::LeakyRelu(alpha.unwrap_or(0.01)),
            "elu" => Activation::Elu(alpha.unwrap_or(1.0)),
            "gelu" => Activation::Gelu,
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            "softmax" => Activation::Softmax,
            "log_softmax" => Activation::LogSoftmax,
            other => {
                return param_err(
                    "activation",
                    "activation",
                    format!(
                        "unknown activation `{other}`; expected one of {}",
                        Activation::NAMES.join(", ")
                    ),
                );
            }
        })
    }

    /// The spec name.
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Linear => "linear",
            Activation::Relu => "relu",
            Activation::LeakyRelu(_) => "leaky_relu",
            Activation::Elu(_) => "elu",
            Activation::Gelu => "gelu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Softmax => "softmax",
            Activation::LogSoftmax => "log_softmax",
        }
    }

    /// Apply to a batch.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let axis = if x.rank() >= 2 { 1 } else { 0 };
        match (self, self.pointwise()) {
            (_, Some(p)) => ops::pointwise(x, p),
            (Activation::Softmax, _) => ops::softmax(x, axis),
            (Activation::LogSoftmax, _) => ops::log_softmax(x, axis),
            _ => Ok(x.clone()),
        }
    }

    /// The elementwise function of this activation, or `None` (linear, and the softmaxes,
    /// which mix a sample's channels).
    pub fn pointwise(&self) -> Option<Pointwise> {
        Some(match *self {
            Activation::Relu => Pointwise::Relu,
            Activation::LeakyRelu(a) => Pointwise::LeakyRelu(a),
            Activation::Elu(a) => Pointwise::Elu(a),
            Activation::Gelu => Pointwise::Gelu,
            Activation::Sigmoid => Pointwise::Sigmoid,
            Activation::Tanh => Pointwise::Tanh,
            Activation::Linear | Activation::Softmax | Activation::LogSoftmax => return None,
        })
    }

    /// Apply to a layer's own output: when nothing is recorded (inference) and the buffer is
    /// not shared, elementwise activations run in place, saving a pass and an allocation.
    pub fn apply_owned(&self, y: Tensor) -> Result<Tensor> {
        if *self == Activation::Linear {
            return Ok(y);
        }
        match self.pointwise() {
            Some(p) if !y.requires_grad() && y.is_unique() => {
                use rayon::prelude::*;
                y.data_mut()
                    .par_chunks_mut(1 << 15)
                    .for_each(|c| p.apply(c));
                Ok(y)
            }
            _ => self.apply(&y),
        }
    }

    /// Values a layer's output of `n` values and this activation keep for training's backward:
    /// with an activation, the values before it too.
    pub fn kept(&self, n: u64) -> u64 {
        match self {
            Activation::Linear => n,
            _ => n.saturating_mul(2),
        }
    }

    /// FLOPs per element, roughly (0 for linear).
    pub fn flops_per_element(&self) -> u64 {
        match self {
            Activation::Linear => 0,
            Activation::Relu | Activation::LeakyRelu(_) => 1,
            _ => 4,
        }
    }
}
