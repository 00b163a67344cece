//! Activations usable as a layer or as a layer option (`activation = "relu"`).

use crate::error::{Result, param_err};
use crate::ops;
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
        match *self {
            Activation::Linear => Ok(x.clone()),
            Activation::Relu => ops::relu(x),
            Activation::LeakyRelu(a) => ops::leaky_relu(x, a),
            Activation::Elu(a) => ops::elu(x, a),
            Activation::Gelu => ops::gelu(x),
            Activation::Sigmoid => ops::sigmoid(x),
            Activation::Tanh => ops::tanh(x),
            Activation::Softmax => ops::softmax(x, axis),
            Activation::LogSoftmax => ops::log_softmax(x, axis),
        }
    }

    /// Apply to a layer's own output: when nothing is recorded (inference) and the buffer is
    /// not shared, elementwise activations run in place, saving a pass and an allocation.
    pub fn apply_owned(&self, y: Tensor) -> Result<Tensor> {
        if y.requires_grad() || !y.is_unique() {
            return self.apply(&y);
        }
        fn inplace(y: &Tensor, f: impl Fn(f32) -> f32 + Sync) {
            use rayon::prelude::*;
            y.data_mut()
                .par_chunks_mut(1 << 15)
                .for_each(|c| c.iter_mut().for_each(|v| *v = f(*v)));
        }
        match *self {
            Activation::Linear => {}
            Activation::Relu => inplace(&y, |v| if v > 0.0 { v } else { 0.0 }),
            Activation::LeakyRelu(a) => inplace(&y, move |v| if v > 0.0 { v } else { a * v }),
            Activation::Sigmoid => inplace(&y, crate::ops::activation::sigmoid_f),
            Activation::Tanh => inplace(&y, f32::tanh),
            _ => return self.apply(&y),
        }
        Ok(y)
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
