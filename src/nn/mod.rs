//! Layers: parameterised wrappers around the ops, with PyTorch-style parameter names, shape
//! inference with its arithmetic, FLOPs and receptive fields. A model is a [`Sequential`] of
//! layers; a layer that holds sub-layers (residual, TCN and WaveNet blocks) implements the same
//! [`Layer`] trait and names its children's parameters below its own prefix.

mod activation;
mod block;
mod conv;
mod dense;
pub mod mask;
mod misc;
mod model;
mod norm;
mod pool;
mod tcn;
pub(crate) mod torch;
mod wavenet;

pub use activation::Activation;
pub use block::Residual;
pub use conv::{Conv, ConvKind};
pub use dense::Dense;
pub use misc::{Dropout, Flatten, Reshape, Upsample};
pub use model::{LayerReport, Sequential, SizeDependence};
pub use norm::{BatchNorm, LayerNorm};
pub use pool::{GlobalPool, Pool, PoolKind};
pub use tcn::{Tcn, TcnBlock, TcnConfig, TcnNorm};
pub use wavenet::{WaveNet, WaveNetConfig, doubling as wavenet_dilations};

use crate::error::Result;
use crate::rng::Rng;
use crate::tensor::Tensor;

/// What a forward pass needs beside the input: the mode, a generator for dropout, and for a
/// batch of series padded to its longest, each series' valid length (see [`mask`]).
pub struct Ctx<'a> {
    pub training: bool,
    pub rng: &'a mut Rng,
    /// Valid positions of each sample along the time axis of the tensor being processed;
    /// `None` when every sample fills it.
    pub lengths: Option<Vec<usize>>,
}

impl<'a> Ctx<'a> {
    /// A context for batches whose samples fill the input (no lengths).
    pub fn new(training: bool, rng: &'a mut Rng) -> Ctx<'a> {
        Ctx {
            training,
            rng,
            lengths: None,
        }
    }
}

/// Receptive field of one output position along each spatial axis: `size` input positions,
/// and `jump`, the input distance between neighbouring outputs (the product of strides).
#[derive(Clone, Debug, PartialEq)]
pub struct ReceptiveField {
    pub size: Vec<f64>,
    pub jump: Vec<f64>,
    /// Set once a global pool or a dense layer over flattened positions sees the whole input.
    pub global: bool,
    /// Set when a sequence-to-one block kept one position: what follows (a dense head)
    /// sees only that position's field, not the whole input.
    pub collapsed: bool,
}

impl ReceptiveField {
    /// A single input position along each of `dims` spatial axes.
    pub fn identity(dims: usize) -> Self {
        ReceptiveField {
            size: vec![1.0; dims],
            jump: vec![1.0; dims],
            global: false,
            collapsed: false,
        }
    }
    /// After a window of `k` taps with `dilation` and `stride` along each axis.
    pub fn window(&self, k: &[usize], stride: &[usize], dilation: &[usize]) -> Self {
        let mut r = self.clone();
        for i in 0..r.size.len().min(k.len()) {
            r.size[i] += (dilation[i] * (k[i] - 1)) as f64 * r.jump[i];
            r.jump[i] *= stride[i] as f64;
        }
        r
    }
    /// After a transposed convolution: outputs are `stride` times denser.
    pub fn transposed(&self, k: &[usize], stride: &[usize], dilation: &[usize]) -> Self {
        let mut r = self.clone();
        for i in 0..r.size.len().min(k.len()) {
            r.jump[i] /= stride[i] as f64;
            r.size[i] += (dilation[i] * (k[i] - 1)) as f64 * r.jump[i];
        }
        r
    }
    /// Text such as `7x7`, `15` or `all`.
    pub fn describe(&self) -> String {
        if self.global {
            return "all".into();
        }
        let v: Vec<String> = self
            .size
            .iter()
            .map(|s| {
                if s.fract() == 0.0 {
                    format!("{}", *s as u64)
                } else {
                    format!("{s:.2}")
                }
            })
            .collect();
        v.join("x")
    }
}

/// A layer's per-sample output shape, with the arithmetic that gives it and its FLOPs.
#[derive(Clone, Debug)]
pub struct ShapeInfo {
    pub output: Vec<usize>,
    /// One line per changed axis, e.g. `28 -> floor((28 + 2 - 3) / 1) + 1 = 28`.
    pub arithmetic: Vec<String>,
    /// Floating-point operations per sample (a multiply-add counts two).
    pub flops: u64,
}

/// A layer of a model.
pub trait Layer: Send + Sync {
    /// The spec's name of the layer type (`conv2d`, `dense`, ...).
    fn kind(&self) -> &'static str;
    /// Forward pass on a batch.
    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor>;
    /// Per-sample output shape for a per-sample input shape, or the error the forward
    /// pass would give.
    fn infer(&self, input: &[usize]) -> Result<ShapeInfo>;
    /// Receptive field after this layer.
    fn receptive_field(&self, rf: &ReceptiveField) -> ReceptiveField {
        rf.clone()
    }
    /// Trainable parameters, by local name (`weight`, `bias`).
    fn params(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
    /// Non-trainable state saved with the weights (`running_mean`, `running_var`).
    fn buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
    /// Where the receptive field of output position 0 starts, in input positions, after this
    /// layer, given where it started before (`start`) and the spacing of the layer's input
    /// positions (`jump`), for a per-sample `input` shape: a padded window starts `padding *
    /// jump` earlier. Output position `u` then sees input positions from
    /// `start + u * jump_after` over the receptive field's size.
    fn rf_start(&self, _input: &[usize], start: &[f64], _jump: &[f64]) -> Vec<f64> {
        start.to_vec()
    }
    /// For a block: its sub-layers along the main path, in order, with their names
    /// (`blocks.0`), shown as their own rows by `convnet summary`.
    fn parts(&self) -> Vec<(String, &dyn Layer)> {
        Vec::new()
    }
    /// Values per sample the eager forward keeps for backward beyond what the rows of its
    /// parts show (for a plain layer, its output; a view keeps nothing of its own). The
    /// training-memory estimate sums them.
    fn kept(&self, _input: &[usize], output: &[usize]) -> u64 {
        match self.lowered() {
            Lowered::View => 0,
            _ => count(output),
        }
    }
    /// The PyTorch modules this layer becomes around the one holding its weights, for a
    /// per-sample `input` (see [`torch`]); none by default.
    fn torch_span(&self, _input: &[usize]) -> Result<torch::TorchSpan> {
        Ok(torch::TorchSpan::default())
    }
    /// `(convnet's, PyTorch's)` local names of this layer's weights (`weight`, `body.0.weight`);
    /// the same by default.
    fn torch_local(&self, _input: &[usize]) -> Result<Vec<(String, String)>> {
        let names = self.params().into_iter().chain(self.buffers());
        Ok(names.map(|(n, _)| (n.clone(), n)).collect())
    }
    /// This layer as ONNX nodes on the value `x` (`(N, *input)`), returning its output's name
    /// (see [`crate::interop::onnx`]); by default, an error naming the layer.
    fn onnx(
        &self,
        g: &mut crate::interop::onnx::Graph,
        _x: &str,
        _input: &[usize],
    ) -> Result<String> {
        Err(g.cannot(format!("a {} layer has no ONNX form", self.kind())))
    }
    /// Whether the layer honours [`Ctx::lengths`] for series padded to a batch's longest:
    /// its output at a series' valid positions does not depend on the padding (see
    /// [`mask`]). False by default: a model with such a layer batches one length at a time.
    fn takes_mask(&self) -> bool {
        false
    }
    /// What a compiled plan ([`crate::plan`]) sees of this layer; `Opaque` (the default):
    /// the plan does not compile it, and the model runs eagerly.
    fn lowered(&self) -> Lowered<'_> {
        Lowered::Opaque
    }
}

/// A layer as a compiled plan sees it: the layer kinds the plan runs itself.
pub enum Lowered<'a> {
    Conv(&'a Conv),
    Dense(&'a Dense),
    BatchNorm(&'a BatchNorm),
    Activation(Activation),
    Pool(&'a Pool),
    GlobalPool(&'a GlobalPool),
    Dropout(&'a Dropout),
    /// The same values under another per-sample shape (flatten, reshape).
    View,
    /// Not compiled: blocks, upsampling, layer norm, ...
    Opaque,
}

/// Checks that a per-sample input has one channel axis and `dims` spatial axes.
pub(crate) fn expect_spatial(op: &'static str, input: &[usize], dims: usize) -> Result<()> {
    if input.len() != dims + 1 {
        let layout = if dims == 1 {
            "(channels, length)"
        } else {
            "(channels, height, width)"
        };
        return crate::error::shape_err(
            op,
            format!(
                "expects inputs shaped {layout} per sample, got {}",
                fmt_shape(input)
            ),
        );
    }
    Ok(())
}

/// The element count of `dims`, saturating: the FLOPs of an absurd model stay a number
/// (at most `u64::MAX`) instead of wrapping.
pub(crate) fn count(dims: &[usize]) -> u64 {
    dims.iter().fold(1u64, |a, &d| a.saturating_mul(d as u64))
}

/// The product of `factors`, saturating (see [`count`]).
pub(crate) fn mul(factors: &[u64]) -> u64 {
    factors.iter().fold(1u64, |a, &b| a.saturating_mul(b))
}

/// Format a shape as `(32, 14, 14)`.
pub fn fmt_shape(s: &[usize]) -> String {
    let v: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("({})", v.join(", "))
}
