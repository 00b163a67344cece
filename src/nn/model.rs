//! `Sequential`: a model as a list of layers, with PyTorch-style names (`layers.0.weight`),
//! state dicts, and the per-layer report behind `convnet summary`.

use std::collections::BTreeMap;

use super::{Ctx, Layer, ReceptiveField, fmt_shape};
use crate::error::{Error, Result, shape_err};
use crate::tensor::Tensor;

/// One row of a model's summary.
#[derive(Clone, Debug)]
pub struct LayerReport {
    /// `layers.3`
    pub name: String,
    pub kind: String,
    /// Per sample.
    pub output_shape: Vec<usize>,
    pub params: usize,
    pub flops: u64,
    pub receptive_field: String,
    pub arithmetic: Vec<String>,
}

/// A sequence of layers applied in order, with a fixed per-sample input shape.
pub struct Sequential {
    /// Per-sample input shape, e.g. `[1, 28, 28]`.
    pub input: Vec<usize>,
    layers: Vec<Box<dyn Layer>>,
    output: Vec<usize>,
}

impl Sequential {
    /// An empty model taking samples of shape `input`.
    pub fn new(input: Vec<usize>) -> Sequential {
        Sequential {
            output: input.clone(),
            input,
            layers: Vec::new(),
        }
    }

    /// Append a layer; fails, naming the layer, if it cannot take the current output shape.
    pub fn push(&mut self, layer: Box<dyn Layer>) -> Result<()> {
        let info = layer.infer(&self.output)?;
        self.output = info.output;
        self.layers.push(layer);
        Ok(())
    }

    /// The layers.
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }

    /// Per-sample output shape.
    pub fn output_shape(&self) -> &[usize] {
        &self.output
    }

    /// Forward pass on a batch `(n, *input)`.
    pub fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        if x.rank() != self.input.len() + 1 || x.shape()[1..] != self.input[..] {
            return shape_err(
                "model",
                format!(
                    "expects a batch of samples shaped {}, got {:?}",
                    fmt_shape(&self.input),
                    x.shape()
                ),
            );
        }
        let mut h = x.clone();
        for layer in &self.layers {
            h = layer.forward(&h, ctx)?;
        }
        Ok(h)
    }

    /// Trainable parameters named as in a PyTorch state dict.
    pub fn named_params(&self) -> Vec<(String, Tensor)> {
        self.named(|l| l.params())
    }

    /// Parameters and buffers, as a state dict.
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        let mut v = self.named_params();
        v.extend(self.named(|l| l.buffers()));
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn named(&self, f: impl Fn(&dyn Layer) -> Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| {
                f(l.as_ref())
                    .into_iter()
                    .map(move |(n, t)| (format!("layers.{i}.{n}"), t))
            })
            .collect()
    }

    /// Copy values from `state` into the model; every key must be present with its shape, and
    /// no key may be left over.
    pub fn load_state_dict(&self, state: &BTreeMap<String, Tensor>, source: &str) -> Result<()> {
        let own = self.state_dict();
        let fmt_err = |msg: String| Error::Format {
            path: source.to_string(),
            msg,
        };
        for (name, t) in &own {
            let Some(v) = state.get(name) else {
                return Err(fmt_err(format!(
                    "missing tensor `{name}` (shape {:?}) that the model needs",
                    t.shape()
                )));
            };
            if v.shape() != t.shape() {
                return Err(fmt_err(format!(
                    "tensor `{name}` has shape {:?}, the model needs {:?}",
                    v.shape(),
                    t.shape()
                )));
            }
        }
        if let Some(extra) = state.keys().find(|k| !own.iter().any(|(n, _)| n == *k)) {
            return Err(fmt_err(format!(
                "tensor `{extra}` does not belong to this model"
            )));
        }
        for (name, t) in &own {
            let src = state[name].data();
            t.data_mut().copy_from_slice(&src);
        }
        Ok(())
    }

    /// Per-layer shapes with their arithmetic, parameters, FLOPs and receptive fields.
    pub fn report(&self) -> Result<Vec<LayerReport>> {
        let mut shape = self.input.clone();
        let mut rf = ReceptiveField::identity(self.input.len().saturating_sub(1));
        let mut rows = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let info = layer.infer(&shape)?;
            rf = layer.receptive_field(&rf);
            rows.push(LayerReport {
                name: format!("layers.{i}"),
                kind: layer.kind().to_string(),
                output_shape: info.output.clone(),
                params: layer.params().iter().map(|(_, t)| t.numel()).sum(),
                flops: info.flops,
                receptive_field: rf.describe(),
                arithmetic: info.arithmetic,
            });
            shape = info.output;
        }
        Ok(rows)
    }

    /// Number of trainable parameters.
    pub fn num_params(&self) -> usize {
        self.named_params().iter().map(|(_, t)| t.numel()).sum()
    }
}
