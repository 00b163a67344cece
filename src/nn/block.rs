//! Layers that hold layers: helpers to run, infer, name and trace a chain of sub-layers, and the
//! `residual` block (a body of layers plus its input, through a 1x1 convolution when the body
//! changes the channels or the size).

use super::{Activation, Conv, ConvKind, Ctx, Layer, ReceptiveField, ShapeInfo, fmt_shape};
use crate::error::{Result, shape_err};
use crate::ops::{self, PadMode, Padding};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// `v` with every name put below `prefix` (`conv1.weight`).
pub(crate) fn prefixed(prefix: &str, v: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    v.into_iter()
        .map(|(n, t)| (format!("{prefix}.{n}"), t))
        .collect()
}

/// The parameters (or buffers, as `f` picks) of named sub-layers, each below its name.
pub(crate) fn named_children<'a>(
    children: impl IntoIterator<Item = (String, &'a dyn Layer)>,
    f: impl Fn(&dyn Layer) -> Vec<(String, Tensor)>,
) -> Vec<(String, Tensor)> {
    children
        .into_iter()
        .flat_map(|(name, l)| prefixed(&name, f(l)))
        .collect()
}

/// Run `layers` in order.
pub(crate) fn chain_forward(
    layers: &[Box<dyn Layer>],
    x: &Tensor,
    ctx: &mut Ctx,
) -> Result<Tensor> {
    let mut h = x.clone();
    for l in layers {
        h = l.forward(&h, ctx)?;
    }
    Ok(h)
}

/// Shapes through `layers` in order: the last output, every layer's arithmetic, the FLOPs.
pub(crate) fn chain_infer<'a>(
    layers: impl IntoIterator<Item = &'a dyn Layer>,
    input: &[usize],
) -> Result<ShapeInfo> {
    let mut info = ShapeInfo {
        output: input.to_vec(),
        arithmetic: Vec::new(),
        flops: 0,
    };
    for l in layers {
        let i = l.infer(&info.output)?;
        info.output = i.output;
        info.flops += i.flops;
        info.arithmetic.extend(
            i.arithmetic
                .into_iter()
                .map(|a| format!("{}: {a}", l.kind())),
        );
    }
    Ok(info)
}

/// The receptive field after `layers` in order.
pub(crate) fn chain_rf<'a>(
    layers: impl IntoIterator<Item = &'a dyn Layer>,
    rf: &ReceptiveField,
) -> ReceptiveField {
    layers
        .into_iter()
        .fold(rf.clone(), |r, l| l.receptive_field(&r))
}

/// Where the receptive field starts after `layers` in order (see [`Layer::rf_start`]).
pub(crate) fn chain_start<'a>(
    layers: impl IntoIterator<Item = &'a dyn Layer>,
    input: &[usize],
    rf: &ReceptiveField,
    start: &[f64],
) -> Vec<f64> {
    let (mut shape, mut rf, mut start) = (input.to_vec(), rf.clone(), start.to_vec());
    for l in layers {
        start = l.rf_start(&shape, &start, &rf.jump);
        rf = l.receptive_field(&rf);
        match l.infer(&shape) {
            Ok(i) => shape = i.output,
            Err(_) => break,
        }
    }
    start
}

/// The receptive field of a sum of two branches: the larger along each axis.
pub(crate) fn rf_union(a: &ReceptiveField, b: &ReceptiveField) -> ReceptiveField {
    ReceptiveField {
        size: a.size.iter().zip(&b.size).map(|(x, y)| x.max(*y)).collect(),
        jump: a.jump.clone(),
        global: a.global || b.global,
        collapsed: a.collapsed || b.collapsed,
    }
}

/// A convolution with the same kernel size, stride and dilation along every axis, bias, no
/// activation, PyTorch's initialisation.
pub(crate) fn plain_conv(
    dims: usize,
    in_channels: usize,
    filters: usize,
    (kernel, stride, dilation): (usize, usize, usize),
    padding: Padding,
    rng: &mut Rng,
) -> Result<Conv> {
    Conv::new(
        if dims == 1 {
            ConvKind::Conv1d
        } else {
            ConvKind::Conv2d
        },
        in_channels,
        filters,
        vec![kernel; dims],
        vec![stride; dims],
        padding,
        vec![dilation; dims],
        1,
        PadMode::Zeros,
        vec![0; dims],
        true,
        Activation::Linear,
        rng,
    )
}

/// A block with a residual output and a skip output (TCN and WaveNet layers).
pub(crate) trait SkipBlock {
    fn forward_with_skip(&self, x: &Tensor, ctx: &mut Ctx) -> Result<(Tensor, Tensor)>;
}

/// Run `blocks` in order: the last residual output, and the sum of the skip outputs when
/// `sum_skips`.
pub(crate) fn run_with_skips<B: SkipBlock>(
    blocks: &[B],
    x: &Tensor,
    ctx: &mut Ctx,
    sum_skips: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let mut h = x.clone();
    let mut skips: Option<Tensor> = None;
    for b in blocks {
        let (out, skip) = b.forward_with_skip(&h, ctx)?;
        h = out;
        if sum_skips {
            skips = Some(match skips {
                None => skip,
                Some(s) => ops::add(&s, &skip)?,
            });
        }
    }
    Ok((h, skips))
}

/// The time step at `index` of a batch `(n, c, length)`, as `(n, c)`.
pub(crate) fn time_step(x: &Tensor, index: usize) -> Result<Tensor> {
    let s = x.shape().to_vec();
    let t = ops::slice(x, 2, index, index + 1)?;
    ops::reshape(&t, &s[..2])
}

/// A residual block: `activation(body(x) + shortcut(x))`, where the shortcut is the identity,
/// or a 1x1 convolution (with the stride that matches the body's output size) when the body
/// changes the channels or the size, as in ResNet.
///
/// Parameters: `body.{i}.*` and `shortcut.*`.
pub struct Residual {
    pub body: Vec<Box<dyn Layer>>,
    pub shortcut: Option<Conv>,
    pub activation: Activation,
    /// The input's channels.
    channels: usize,
}

impl Residual {
    /// A block over per-sample inputs of shape `input`; fails when the body's output cannot be
    /// added to its input through a 1x1 convolution.
    pub fn new(
        body: Vec<Box<dyn Layer>>,
        input: &[usize],
        activation: Activation,
        rng: &mut Rng,
    ) -> Result<Residual> {
        if body.is_empty() {
            return shape_err("residual", "the block has no layers");
        }
        let out = chain_infer(body.iter().map(|l| l.as_ref()), input)?.output;
        let dims = input.len().saturating_sub(1);
        if out.len() != input.len() || !(1..=2).contains(&dims) {
            return shape_err(
                "residual",
                format!(
                    "the body turns {} into {}: a residual block needs (channels, *spatial) in and out",
                    fmt_shape(input),
                    fmt_shape(&out)
                ),
            );
        }
        let mut stride = Vec::new();
        for i in 1..input.len() {
            // a 1x1 convolution with stride s gives ceil(n / s) positions
            let s = input[i].div_ceil(out[i].max(1)).max(1);
            if out[i] == 0 || input[i].div_ceil(s) != out[i] {
                return shape_err(
                    "residual",
                    format!(
                        "the body turns {} into {}: no strided 1x1 convolution maps the input's size to the output's (use `same` or `causal` padding in the body)",
                        fmt_shape(input),
                        fmt_shape(&out)
                    ),
                );
            }
            stride.push(s);
        }
        let shortcut = if out[0] != input[0] || stride.iter().any(|&s| s != 1) {
            let mut c = plain_conv(dims, input[0], out[0], (1, 1, 1), Padding::Valid, rng)?;
            c.stride = stride;
            Some(c)
        } else {
            None
        };
        Ok(Residual {
            body,
            shortcut,
            activation,
            channels: input[0],
        })
    }

    fn children(&self) -> Vec<(String, &dyn Layer)> {
        let mut v: Vec<(String, &dyn Layer)> = self
            .body
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("body.{i}"), l.as_ref()))
            .collect();
        if let Some(s) = &self.shortcut {
            v.push(("shortcut".into(), s));
        }
        v
    }
}

impl Layer for Residual {
    fn kind(&self) -> &'static str {
        "residual"
    }

    /// When its body takes the mask and keeps the length (the shortcut is then pointwise).
    fn takes_mask(&self) -> bool {
        super::mask::chain_takes_mask(self.body.iter().map(|l| l.as_ref()), self.channels)
    }

    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let h = chain_forward(&self.body, x, ctx)?;
        let s = match &self.shortcut {
            Some(c) => c.forward(x, ctx)?,
            None => x.clone(),
        };
        self.activation.apply_owned(ops::add(&h, &s)?)
    }

    /// `activation(body(x) + shortcut(x))`.
    fn onnx(
        &self,
        g: &mut crate::interop::onnx::Graph,
        x: &str,
        input: &[usize],
    ) -> Result<String> {
        use crate::interop::onnx::layers as onnx;
        let (h, _) = onnx::chain(g, "body.", &self.body, x, input)?;
        let s = match &self.shortcut {
            Some(c) => onnx::within(g, "shortcut", c, x, input)?,
            None => x.to_string(),
        };
        let sum = onnx::add(g, &h, &s);
        onnx::activation(g, self.activation, &sum)
    }

    /// The body numbered as PyTorch numbers a `nn.Sequential` of it (see [`super::torch`]);
    /// the shortcut's names unchanged.
    fn torch_local(&self, input: &[usize]) -> Result<Vec<(String, String)>> {
        let body: Vec<&dyn Layer> = self.body.iter().map(|l| l.as_ref()).collect();
        let mut names = super::torch::chain_names(&body, input, ("body.", "body."))?;
        if let Some(s) = &self.shortcut {
            names.extend(
                s.params()
                    .into_iter()
                    .map(|(n, _)| (format!("shortcut.{n}"), format!("shortcut.{n}"))),
            );
        }
        Ok(names)
    }

    /// The sum and its activation, and the shortcut's output (the body's parts have rows).
    fn kept(&self, input: &[usize], output: &[usize]) -> u64 {
        let own = self.activation.kept(super::count(output));
        match &self.shortcut {
            Some(c) => own.saturating_add(c.kept(input, output)),
            None => own,
        }
    }

    fn infer(&self, input: &[usize]) -> Result<ShapeInfo> {
        let mut info = chain_infer(self.body.iter().map(|l| l.as_ref()), input)?;
        if let Some(s) = &self.shortcut {
            let si = s.infer(input)?;
            if si.output != info.output {
                return shape_err(
                    "residual",
                    format!(
                        "the body gives {} but the shortcut {} for input {}",
                        fmt_shape(&info.output),
                        fmt_shape(&si.output),
                        fmt_shape(input)
                    ),
                );
            }
            info.flops += si.flops;
            info.arithmetic.push("shortcut: 1x1 convolution".into());
        } else if info.output != input {
            return shape_err(
                "residual",
                format!(
                    "the body gives {} for input {}: without a shortcut they must match",
                    fmt_shape(&info.output),
                    fmt_shape(input)
                ),
            );
        }
        let n = super::count(&info.output);
        let own = super::mul(&[n, 1 + self.activation.flops_per_element()]);
        info.flops = info.flops.saturating_add(own);
        Ok(info)
    }

    fn rf_start(&self, input: &[usize], start: &[f64], jump: &[f64]) -> Vec<f64> {
        let rf = ReceptiveField {
            size: vec![1.0; start.len()],
            jump: jump.to_vec(),
            global: false,
            collapsed: false,
        };
        chain_start(self.body.iter().map(|l| l.as_ref()), input, &rf, start)
    }

    fn receptive_field(&self, rf: &ReceptiveField) -> ReceptiveField {
        let body = chain_rf(self.body.iter().map(|l| l.as_ref()), rf);
        let short = match &self.shortcut {
            Some(s) => s.receptive_field(rf),
            None => rf.clone(),
        };
        rf_union(&body, &short)
    }

    fn params(&self) -> Vec<(String, Tensor)> {
        named_children(self.children(), |l| l.params())
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        named_children(self.children(), |l| l.buffers())
    }

    fn parts(&self) -> Vec<(String, &dyn Layer)> {
        self.body
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("body.{i}"), l.as_ref()))
            .collect()
    }
}
