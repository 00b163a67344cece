//! `Sequential`: a model as a list of layers, with PyTorch-style names (`layers.0.weight`),
//! state dicts, and the per-layer report behind `convnet summary`.

use std::collections::BTreeMap;

use super::{Ctx, Layer, ReceptiveField, fmt_shape};
use crate::error::{Error, Result, shape_err};
use crate::tensor::Tensor;

/// One row of a model's summary.
#[derive(Clone, Debug)]
pub struct LayerReport {
    /// `layers.3`, or `layers.3.blocks.0` for a part of a block.
    pub name: String,
    /// 0 for the model's layers, 1 for the parts of a block, and so on.
    pub depth: usize,
    pub kind: String,
    /// Per sample.
    pub input_shape: Vec<usize>,
    /// Per sample.
    pub output_shape: Vec<usize>,
    /// Values per sample the eager forward keeps for backward ([`Layer::kept`]).
    pub kept: u64,
    /// Trainable parameters (a block's row counts its parts').
    pub params: usize,
    /// Non-trainable values: buffers such as batch norm's running statistics (Keras counts
    /// them as non-trainable parameters).
    pub buffers: usize,
    pub flops: u64,
    pub receptive_field: String,
    /// The receptive field's size along each spatial axis, in input positions.
    pub rf_size: Vec<f64>,
    /// Whether an output sees the whole input (after global pooling or a dense layer).
    pub rf_global: bool,
    /// Input positions between neighbouring outputs along each spatial axis (the product of
    /// strides, divided by upsampling factors).
    pub jump: Vec<f64>,
    pub arithmetic: Vec<String>,
}

/// A sequence of layers applied in order, with a per-sample input shape whose spatial axes
/// may be left open (`any_size`).
pub struct Sequential {
    /// Per-sample input shape, e.g. `[1, 28, 28]`; for an open axis, the nominal size the
    /// model was checked and is summarised at.
    pub input: Vec<usize>,
    /// Per input axis: whether any size is accepted there.
    pub any_size: Vec<bool>,
    layers: Vec<Box<dyn Layer>>,
    output: Vec<usize>,
}

/// How a model's output depends on its input's spatial size.
#[derive(Clone, Debug, PartialEq)]
pub enum SizeDependence {
    /// Any size gives the same output shape (global pooling, a sequence-to-one block).
    Independent,
    /// Any size is accepted; the output's spatial size follows the input's.
    Follows,
    /// A layer fixes the input size.
    Fixed {
        /// `layers.5 (flatten)`
        layer: String,
        why: String,
    },
}

impl Sequential {
    /// An empty model taking samples of shape `input`.
    pub fn new(input: Vec<usize>) -> Sequential {
        Sequential {
            output: input.clone(),
            any_size: vec![false; input.len()],
            input,
            layers: Vec::new(),
        }
    }

    /// Accept any size along the axes marked `true` (spatial axes only: never the channels).
    pub fn with_any_size(mut self, any: Vec<bool>) -> Result<Sequential> {
        if any.len() != self.input.len() || any.first() == Some(&true) {
            return shape_err(
                "model",
                format!(
                    "open axes {any:?} do not fit the input {}: only spatial axes may be open",
                    fmt_shape(&self.input)
                ),
            );
        }
        self.any_size = any;
        Ok(self)
    }

    /// Whether the model takes inputs of any spatial size, and if not, which layer fixes it:
    /// the shapes at the nominal input are compared with those at a larger, odd size.
    pub fn size_dependence(&self) -> SizeDependence {
        if self.input.len() < 2 {
            return SizeDependence::Independent;
        }
        let mut alt = self.input.clone();
        for d in alt.iter_mut().skip(1) {
            *d = *d * 2 + 3;
        }
        let (mut a, mut b) = (self.input.clone(), alt.clone());
        for (i, layer) in self.layers.iter().enumerate() {
            let name = format!("layers.{i} ({})", layer.kind());
            let na = match layer.infer(&a) {
                Ok(x) => x.output,
                Err(_) => return SizeDependence::Independent,
            };
            let nb = match layer.infer(&b) {
                Ok(x) => x.output,
                Err(e) => {
                    return SizeDependence::Fixed {
                        layer: name,
                        why: format!("it fails for input {}: {e}", fmt_shape(&alt)),
                    };
                }
            };
            if na != nb && na.len() < self.input.len() {
                return SizeDependence::Fixed {
                    layer: name,
                    why: format!(
                        "it gives {} for input {} but {} for input {}, so the layers after it are sized for one input size",
                        fmt_shape(&na),
                        fmt_shape(&self.input),
                        fmt_shape(&nb),
                        fmt_shape(&alt)
                    ),
                };
            }
            (a, b) = (na, nb);
        }
        if a == b {
            SizeDependence::Independent
        } else {
            SizeDependence::Follows
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

    /// Whether the model takes samples shaped `sample` (its input shape, or any positive size
    /// along its open axes).
    pub fn fits(&self, sample: &[usize]) -> bool {
        sample.len() == self.input.len()
            && sample
                .iter()
                .zip(&self.input)
                .zip(&self.any_size)
                .all(|((&got, &want), &any)| got == want || (any && got > 0))
    }

    /// Forward pass on a batch `(n, *input)`.
    pub fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let fits = x.rank() == self.input.len() + 1 && self.fits(&x.shape()[1..]);
        if !fits {
            let want: Vec<String> = self
                .input
                .iter()
                .zip(&self.any_size)
                .map(|(d, &any)| if any { "any".into() } else { d.to_string() })
                .collect();
            let same_rank = x.rank() == self.input.len() + 1 && x.shape()[1] == self.input[0];
            let why = match self.size_dependence() {
                SizeDependence::Fixed { layer, .. } if same_rank => {
                    format!(": {layer} fixes the input size")
                }
                SizeDependence::Independent | SizeDependence::Follows if same_rank => {
                    ": its layers take any size; declare the input's size \"any\" to feed others"
                        .into()
                }
                _ => String::new(),
            };
            return shape_err(
                "model",
                format!(
                    "expects samples shaped ({}), got {} (batch {:?}){why}",
                    want.join(", "),
                    fmt_shape(&x.shape()[1.min(x.rank())..]),
                    x.shape()
                ),
            );
        }
        let mut h = x.clone();
        for layer in &self.layers {
            let channels = h.shape().get(1).copied().unwrap_or(0);
            h = layer.forward(&h, ctx)?;
            if let Some(lengths) = &ctx.lengths {
                // each series' length after the layer, from its shape arithmetic
                ctx.lengths = match h.rank() {
                    3 => Some(super::mask::lengths_after(
                        layer.as_ref(),
                        channels,
                        lengths,
                    )?),
                    _ => None,
                };
            }
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
        super::block::named_children(
            self.layers
                .iter()
                .enumerate()
                .map(|(i, l)| (format!("layers.{i}"), l.as_ref())),
            f,
        )
    }

    /// `(convnet name, PyTorch name)` of every tensor of the state dict: the names of the
    /// equivalent `nn.Sequential` (see [`super::torch`]).
    pub fn torch_names(&self) -> Result<Vec<(String, String)>> {
        let layers: Vec<&dyn Layer> = self.layers.iter().map(|l| l.as_ref()).collect();
        super::torch::chain_names(&layers, &self.input, ("layers.", ""))
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
    /// A block's parts come before the block's own row, one level deeper.
    pub fn report(&self) -> Result<Vec<LayerReport>> {
        self.report_for(&self.input)
    }

    /// The report for per-sample inputs of shape `input` (a size-independent model's
    /// shapes at a size other than its nominal one).
    pub fn report_for(&self, input: &[usize]) -> Result<Vec<LayerReport>> {
        let mut rows = Vec::new();
        let layers = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("layers.{i}"), l.as_ref()))
            .collect();
        report_rows(layers, input, &self.input_rf(), 0, &mut rows)?;
        Ok(rows)
    }

    fn input_rf(&self) -> ReceptiveField {
        ReceptiveField::identity(self.input.len().saturating_sub(1))
    }

    /// After each layer: the receptive field and where output position 0's field starts in
    /// the input (position `u` along an axis sees input positions `start + u * jump` up to
    /// `start + u * jump + size - 1`, clipped to the input; after a transposed convolution,
    /// whose taps meet inputs or inserted zeros by the output's phase, an upper bound).
    pub fn geometry(&self) -> Vec<(ReceptiveField, Vec<f64>)> {
        self.geometry_for(&self.input)
    }

    /// [`Sequential::geometry`] for per-sample inputs of shape `input`.
    pub fn geometry_for(&self, input: &[usize]) -> Vec<(ReceptiveField, Vec<f64>)> {
        let mut rf = self.input_rf();
        let mut start = vec![0.0; rf.size.len()];
        let mut shape = input.to_vec();
        let mut out = Vec::new();
        for l in &self.layers {
            start = l.rf_start(&shape, &start, &rf.jump);
            rf = l.receptive_field(&rf);
            if let Ok(i) = l.infer(&shape) {
                shape = i.output;
            }
            out.push((rf.clone(), start.clone()));
        }
        out
    }

    /// The receptive field of one output position of the whole model.
    pub fn receptive_field(&self) -> ReceptiveField {
        self.layers
            .iter()
            .fold(self.input_rf(), |r, l| l.receptive_field(&r))
    }

    /// Number of trainable parameters.
    pub fn num_params(&self) -> usize {
        self.named_params().iter().map(|(_, t)| t.numel()).sum()
    }
}

/// Rows for `layers` applied in order to `input` with receptive field `rf`, each block's parts
/// before it; returns the output shape and receptive field.
fn report_rows(
    layers: Vec<(String, &dyn Layer)>,
    input: &[usize],
    rf: &ReceptiveField,
    depth: usize,
    rows: &mut Vec<LayerReport>,
) -> Result<(Vec<usize>, ReceptiveField)> {
    let mut shape = input.to_vec();
    let mut rf = rf.clone();
    for (name, layer) in layers {
        let parts = layer.parts();
        if !parts.is_empty() {
            let named = parts
                .into_iter()
                .map(|(n, l)| (format!("{name}.{n}"), l))
                .collect();
            report_rows(named, &shape, &rf, depth + 1, rows)?;
        }
        let info = layer.infer(&shape)?;
        rf = layer.receptive_field(&rf);
        rows.push(LayerReport {
            name,
            depth,
            kind: layer.kind().to_string(),
            input_shape: shape.clone(),
            output_shape: info.output.clone(),
            kept: layer.kept(&shape, &info.output),
            params: layer.params().iter().map(|(_, t)| t.numel()).sum(),
            buffers: layer.buffers().iter().map(|(_, t)| t.numel()).sum(),
            flops: info.flops,
            receptive_field: rf.describe(),
            rf_size: rf.size.clone(),
            rf_global: rf.global,
            jump: rf.jump.clone(),
            arithmetic: info.arithmetic,
        });
        shape = info.output;
    }
    Ok((shape, rf))
}
