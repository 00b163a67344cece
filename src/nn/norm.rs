//! `batch_norm` (1-D and 2-D, chosen by the input's rank) and `layer_norm`.
//! Parameters: `weight`, `bias`; buffers: `running_mean`, `running_var` (PyTorch's names).

use super::{Ctx, Layer, ShapeInfo, fmt_shape};
use crate::error::{Result, param_err, shape_err};
use crate::ops;
use crate::tensor::Tensor;

/// Batch normalisation over the channel axis.
/// (Cloning shares the tensors.)
#[derive(Clone)]
pub struct BatchNorm {
    pub channels: usize,
    /// PyTorch's meaning: `running = (1 - momentum) * running + momentum * batch`.
    pub momentum: f32,
    pub eps: f32,
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
}

impl BatchNorm {
    /// Weight 1, bias 0, running mean 0 and variance 1, as in PyTorch.
    pub fn new(channels: usize, momentum: f32, eps: f32) -> Result<BatchNorm> {
        if !(0.0..=1.0).contains(&momentum) {
            return param_err(
                "batch_norm",
                "momentum",
                format!(
                    "{momentum} is not in [0, 1] (PyTorch's meaning: the weight of the new batch)"
                ),
            );
        }
        if eps.is_nan() || eps <= 0.0 {
            return param_err("batch_norm", "epsilon", format!("{eps} must be positive"));
        }
        Ok(BatchNorm {
            channels,
            momentum,
            eps,
            weight: Tensor::ones(&[channels])?.requires_grad_(),
            bias: Tensor::zeros(&[channels])?.requires_grad_(),
            running_mean: Tensor::zeros(&[channels])?,
            running_var: Tensor::ones(&[channels])?,
        })
    }
}

impl Layer for BatchNorm {
    fn kind(&self) -> &'static str {
        "batch_norm"
    }
    fn onnx(
        &self,
        g: &mut crate::interop::onnx::Graph,
        x: &str,
        _input: &[usize],
    ) -> Result<String> {
        crate::interop::onnx::layers::batch_norm(self, g, x)
    }

    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let args = ops::BatchNormArgs {
            weight: Some(&self.weight),
            bias: Some(&self.bias),
            running_mean: Some(&self.running_mean),
            running_var: Some(&self.running_var),
            training: ctx.training,
            momentum: self.momentum,
            eps: self.eps,
        };
        match super::mask::batch_norm(x, ctx, &args)? {
            Some(y) => Ok(y),
            None => ops::batch_norm(x, &args),
        }
    }

    /// Statistics over each series' valid positions in training; per position in evaluation.
    fn takes_mask(&self) -> bool {
        true
    }

    fn infer(&self, input: &[usize]) -> Result<ShapeInfo> {
        if !(1..=3).contains(&input.len()) || input[0] != self.channels {
            return shape_err(
                "batch_norm",
                format!(
                    "expects {} channels first, got input {}",
                    self.channels,
                    fmt_shape(input)
                ),
            );
        }
        let n = super::count(input);
        Ok(ShapeInfo {
            output: input.to_vec(),
            arithmetic: vec![],
            flops: n.saturating_mul(4),
        })
    }

    fn params(&self) -> Vec<(String, Tensor)> {
        vec![
            ("weight".into(), self.weight.clone()),
            ("bias".into(), self.bias.clone()),
        ]
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        vec![
            ("running_mean".into(), self.running_mean.clone()),
            ("running_var".into(), self.running_var.clone()),
        ]
    }
    fn lowered(&self) -> super::Lowered<'_> {
        super::Lowered::BatchNorm(self)
    }
}

/// Layer normalisation over the trailing `normalized_shape` of each sample.
pub struct LayerNorm {
    pub normalized_shape: Vec<usize>,
    pub eps: f32,
    pub weight: Tensor,
    pub bias: Tensor,
}

impl LayerNorm {
    /// Weight 1, bias 0.
    pub fn new(normalized_shape: Vec<usize>, eps: f32) -> Result<LayerNorm> {
        if normalized_shape.is_empty() || normalized_shape.contains(&0) {
            return param_err(
                "layer_norm",
                "normalized_shape",
                format!("{normalized_shape:?} must be non-empty and positive"),
            );
        }
        Ok(LayerNorm {
            weight: Tensor::ones(&normalized_shape)?.requires_grad_(),
            bias: Tensor::zeros(&normalized_shape)?.requires_grad_(),
            normalized_shape,
            eps,
        })
    }
}

impl Layer for LayerNorm {
    fn kind(&self) -> &'static str {
        "layer_norm"
    }
    fn onnx(
        &self,
        g: &mut crate::interop::onnx::Graph,
        x: &str,
        input: &[usize],
    ) -> Result<String> {
        crate::interop::onnx::layers::layer_norm(self, g, x, input)
    }

    fn forward(&self, x: &Tensor, _ctx: &mut Ctx) -> Result<Tensor> {
        ops::layer_norm(
            x,
            &self.normalized_shape,
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
        )
    }

    fn infer(&self, input: &[usize]) -> Result<ShapeInfo> {
        let k = self.normalized_shape.len();
        if input.len() < k || input[input.len() - k..] != self.normalized_shape[..] {
            return shape_err(
                "layer_norm",
                format!(
                    "normalized_shape {} must be the trailing dimensions of the input {}",
                    fmt_shape(&self.normalized_shape),
                    fmt_shape(input)
                ),
            );
        }
        let n = super::count(input);
        Ok(ShapeInfo {
            output: input.to_vec(),
            arithmetic: vec![],
            flops: n.saturating_mul(6),
        })
    }

    fn params(&self) -> Vec<(String, Tensor)> {
        vec![
            ("weight".into(), self.weight.clone()),
            ("bias".into(), self.bias.clone()),
        ]
    }
}
