//! `dense`: a fully connected layer over the last axis (PyTorch's `Linear`), with an optional
//! activation. Parameters: `weight` `(units, in_features)`, `bias` `(units)`.

use super::{Activation, Ctx, Layer, ReceptiveField, ShapeInfo, fmt_shape};
use crate::error::{Result, param_err, shape_err};
use crate::init;
use crate::ops;
use crate::rng::Rng;
use crate::tensor::Tensor;

/// A fully connected layer.
pub struct Dense {
    pub in_features: usize,
    pub units: usize,
    pub activation: Activation,
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Dense {
    /// PyTorch's default initialisation.
    pub fn new(
        in_features: usize,
        units: usize,
        bias: bool,
        activation: Activation,
        rng: &mut Rng,
    ) -> Result<Dense> {
        if units == 0 {
            return param_err("dense", "units", "must be positive");
        }
        if in_features == 0 {
            return param_err("dense", "units", "the input has no features");
        }
        let weight = init::default_weight(&[units, in_features], rng)?.requires_grad_();
        let bias = if bias {
            Some(init::default_bias(&[units, in_features], units, rng)?.requires_grad_())
        } else {
            None
        };
        Ok(Dense {
            in_features,
            units,
            activation,
            weight,
            bias,
        })
    }
}

impl Layer for Dense {
    fn kind(&self) -> &'static str {
        "dense"
    }

    fn forward(&self, x: &Tensor, _ctx: &mut Ctx) -> Result<Tensor> {
        self.activation
            .apply_owned(ops::linear(x, &self.weight, self.bias.as_ref())?)
    }

    fn onnx(
        &self,
        g: &mut crate::interop::onnx::Graph,
        x: &str,
        input: &[usize],
    ) -> Result<String> {
        crate::interop::onnx::layers::dense(self, g, x, input)
    }

    /// An activation written inside is PyTorch's next module.
    fn torch_span(&self, _input: &[usize]) -> Result<super::torch::TorchSpan> {
        Ok(super::torch::TorchSpan {
            before: 0,
            after: usize::from(self.activation != super::Activation::Linear),
        })
    }

    /// The output, and the values before the activation that its backward reads.
    fn kept(&self, _input: &[usize], output: &[usize]) -> u64 {
        self.activation.kept(super::count(output))
    }

    fn infer(&self, input: &[usize]) -> Result<ShapeInfo> {
        match input.last() {
            Some(&f) if f == self.in_features => {}
            _ => {
                let hint = if input.len() > 1 {
                    " (add a flatten layer before it?)"
                } else {
                    ""
                };
                return shape_err(
                    "dense",
                    format!(
                        "expects {} input features on the last axis, got input {}{hint}",
                        self.in_features,
                        fmt_shape(input)
                    ),
                );
            }
        }
        let mut out = input.to_vec();
        *out.last_mut().unwrap_or(&mut 0) = self.units;
        let rows = super::count(&input[..input.len() - 1]);
        let elements = super::mul(&[rows, self.units as u64]);
        Ok(ShapeInfo {
            arithmetic: vec![format!(
                "features {} -> units {}",
                self.in_features, self.units
            )],
            output: out,
            flops: super::mul(&[2, elements, self.in_features as u64]).saturating_add(super::mul(
                &[
                    elements,
                    self.activation.flops_per_element() + u64::from(self.bias.is_some()),
                ],
            )),
        })
    }

    fn receptive_field(&self, rf: &ReceptiveField) -> ReceptiveField {
        // Each unit reads every input feature; after a flatten, that is every position (but
        // after a block that kept one position, only that position's field).
        ReceptiveField {
            global: rf.global || !rf.collapsed,
            ..rf.clone()
        }
    }

    fn params(&self) -> Vec<(String, Tensor)> {
        let mut v = vec![("weight".to_string(), self.weight.clone())];
        if let Some(b) = &self.bias {
            v.push(("bias".into(), b.clone()));
        }
        v
    }
    fn lowered(&self) -> super::Lowered<'_> {
        super::Lowered::Dense(self)
    }
}
