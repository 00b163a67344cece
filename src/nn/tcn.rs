//! The Temporal Convolution Network of Bai et al. 2018, with the parameters of keras-tcn:
//! stacks of residual blocks, each holding two dilated causal (or `same`) convolutions with
//! normalisation, activation and spatial dropout, a 1x1 convolution on the shortcut when the
//! channels change, and the sum of every block's output as skip connections.
//!
//! Parameters: `blocks.{i}.conv1.*`, `blocks.{i}.norm1.*`, `blocks.{i}.conv2.*`,
//! `blocks.{i}.norm2.*`, `blocks.{i}.shortcut.*`.

use super::block::{SkipBlock, named_children, plain_conv, run_with_skips, time_step};
use super::{Activation, BatchNorm, Conv, Ctx, Layer, ReceptiveField, ShapeInfo, fmt_shape};
use crate::error::{Result, param_err, shape_err};
use crate::ops::{self, Padding};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Normalisation inside a TCN's residual blocks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TcnNorm {
    None,
    /// Batch normalisation over channels.
    Batch,
    /// Layer normalisation over the channels of each time step.
    Layer,
    /// Weight normalisation of the convolutions (the TCN paper's choice).
    Weight,
}

impl TcnNorm {
    pub const NAMES: &[&str] = &["none", "batch", "layer", "weight"];
    /// From the spec's name.
    pub fn parse(name: &str) -> Option<TcnNorm> {
        Some(match name {
            "none" => TcnNorm::None,
            "batch" => TcnNorm::Batch,
            "layer" => TcnNorm::Layer,
            "weight" => TcnNorm::Weight,
            _ => return None,
        })
    }
}

/// A TCN's settings; the defaults are keras-tcn's.
#[derive(Clone, Debug, PartialEq)]
pub struct TcnConfig {
    pub nb_filters: usize,
    pub kernel_size: usize,
    pub dilations: Vec<usize>,
    pub nb_stacks: usize,
    /// `Causal` or `Same`.
    pub padding: Padding,
    pub use_skip_connections: bool,
    /// Spatial dropout after each activation inside the blocks.
    pub dropout_rate: f32,
    /// Output every time step `(nb_filters, length)`, or one `(nb_filters)`: the last step
    /// when causal, the middle one when `same` (as keras-tcn).
    pub return_sequences: bool,
    pub activation: Activation,
    pub norm: TcnNorm,
}

impl Default for TcnConfig {
    fn default() -> Self {
        TcnConfig {
            nb_filters: 64,
            kernel_size: 3,
            dilations: vec![1, 2, 4, 8, 16, 32],
            nb_stacks: 1,
            padding: Padding::Causal,
            use_skip_connections: true,
            dropout_rate: 0.0,
            return_sequences: false,
            activation: Activation::Relu,
            norm: TcnNorm::None,
        }
    }
}

impl TcnConfig {
    /// keras-tcn's receptive field: `1 + 2 (kernel_size - 1) nb_stacks sum(dilations)`.
    pub fn receptive_field(&self) -> usize {
        1 + 2 * (self.kernel_size - 1) * self.nb_stacks * self.dilations.iter().sum::<usize>()
    }
}

/// Layer normalisation over the channels of each time step of `(n, c, length)`.
struct ChannelNorm {
    weight: Tensor,
    bias: Tensor,
}

impl Layer for ChannelNorm {
    fn kind(&self) -> &'static str {
        "layer_norm"
    }
    fn forward(&self, x: &Tensor, _ctx: &mut Ctx) -> Result<Tensor> {
        let c = self.weight.shape()[0];
        let t = ops::permute(x, &[0, 2, 1])?;
        let y = ops::layer_norm(&t, &[c], Some(&self.weight), Some(&self.bias), 1e-5)?;
        ops::permute(&y, &[0, 2, 1])
    }
    fn infer(&self, input: &[usize]) -> Result<ShapeInfo> {
        Ok(ShapeInfo {
            output: input.to_vec(),
            arithmetic: vec![],
            flops: super::count(input).saturating_mul(6),
        })
    }
    fn params(&self) -> Vec<(String, Tensor)> {
        vec![
            ("weight".into(), self.weight.clone()),
            ("bias".into(), self.bias.clone()),
        ]
    }
}

/// One residual block of a TCN.
pub struct TcnBlock {
    pub conv1: Conv,
    pub conv2: Conv,
    norm1: Option<Box<dyn Layer>>,
    norm2: Option<Box<dyn Layer>>,
    pub shortcut: Option<Conv>,
    pub activation: Activation,
    pub dropout_rate: f32,
}

impl TcnBlock {
    fn new(in_channels: usize, cfg: &TcnConfig, dilation: usize, rng: &mut Rng) -> Result<Self> {
        let f = cfg.nb_filters;
        let conv = |c_in: usize, rng: &mut Rng| -> Result<Conv> {
            let c = plain_conv(
                1,
                c_in,
                f,
                (cfg.kernel_size, 1, dilation),
                cfg.padding.clone(),
                rng,
            )?;
            if cfg.norm == TcnNorm::Weight {
                c.with_weight_norm()
            } else {
                Ok(c)
            }
        };
        let norm = || -> Result<Option<Box<dyn Layer>>> {
            Ok(match cfg.norm {
                TcnNorm::Batch => Some(Box::new(BatchNorm::new(f, 0.1, 1e-5)?)),
                TcnNorm::Layer => Some(Box::new(ChannelNorm {
                    weight: Tensor::ones(&[f])?.requires_grad_(),
                    bias: Tensor::zeros(&[f])?.requires_grad_(),
                })),
                _ => None,
            })
        };
        Ok(TcnBlock {
            conv1: conv(in_channels, rng)?,
            conv2: conv(f, rng)?,
            norm1: norm()?,
            norm2: norm()?,
            shortcut: if in_channels != f {
                Some(plain_conv(
                    1,
                    in_channels,
                    f,
                    (1, 1, 1),
                    Padding::Valid,
                    rng,
                )?)
            } else {
                None
            },
            activation: cfg.activation,
            dropout_rate: cfg.dropout_rate,
        })
    }
}

impl SkipBlock for TcnBlock {
    /// The block's output (input plus branch, activated) and its skip output (the branch).
    fn forward_with_skip(&self, x: &Tensor, ctx: &mut Ctx) -> Result<(Tensor, Tensor)> {
        let mut h = x.clone();
        for (conv, norm) in [(&self.conv1, &self.norm1), (&self.conv2, &self.norm2)] {
            h = conv.forward(&h, ctx)?;
            if let Some(n) = norm {
                h = n.forward(&h, ctx)?;
            }
            h = self.activation.apply(&h)?;
            if self.dropout_rate > 0.0 {
                h = ops::spatial_dropout(&h, self.dropout_rate, ctx.training, ctx.rng)?;
            }
        }
        let s = match &self.shortcut {
            Some(c) => c.forward(x, ctx)?,
            None => x.clone(),
        };
        let out = self.activation.apply_owned(ops::add(&h, &s)?)?;
        Ok((out, h))
    }
}

impl TcnBlock {
    /// The block as ONNX nodes: its output and its skip output (the branch).
    fn onnx_with_skip(
        &self,
        g: &mut crate::interop::onnx::Graph,
        x: &str,
        input: &[usize],
    ) -> Result<(String, String)> {
        use crate::interop::onnx::layers as onnx;
        let (mut h, mut shape) = (x.to_string(), input.to_vec());
        let parts = [
            ("conv1", &self.conv1, "norm1", &self.norm1),
            ("conv2", &self.conv2, "norm2", &self.norm2),
        ];
        for (name, conv, norm_name, norm) in parts {
            h = onnx::within(g, name, conv, &h, &shape)?;
            shape = conv.infer(&shape)?.output;
            if let Some(n) = norm {
                h = onnx::within(g, norm_name, n.as_ref(), &h, &shape)?;
            }
            // (dropout is the identity at inference)
            h = onnx::activation(g, self.activation, &h)?;
        }
        let s = match &self.shortcut {
            Some(c) => onnx::within(g, "shortcut", c, x, input)?,
            None => x.to_string(),
        };
        let sum = onnx::add(g, &h, &s);
        Ok((onnx::activation(g, self.activation, &sum)?, h))
    }

    fn children(&self) -> Vec<(String, &dyn Layer)> {
        let mut v: Vec<(String, &dyn Layer)> = vec![("conv1".into(), &self.conv1)];
        if let Some(n) = &self.norm1 {
            v.push(("norm1".into(), n.as_ref()));
        }
        v.push(("conv2".into(), &self.conv2));
        if let Some(n) = &self.norm2 {
            v.push(("norm2".into(), n.as_ref()));
        }
        if let Some(s) = &self.shortcut {
            v.push(("shortcut".into(), s));
        }
        v
    }
}

impl Layer for TcnBlock {
    fn kind(&self) -> &'static str {
        "tcn_block"
    }
    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        Ok(self.forward_with_skip(x, ctx)?.0)
    }
    /// Per convolution: its output, the norm's, the activation's and the dropout's (with its
    /// mask of one value per channel); then the shortcut's output, the sum, its activation.
    fn kept(&self, input: &[usize], output: &[usize]) -> u64 {
        let n = super::count(output);
        let mut kept = 0u64;
        let mid = self
            .conv1
            .infer(input)
            .map_or(output.to_vec(), |i| i.output);
        for (conv, norm, x) in [
            (&self.conv1, &self.norm1, input),
            (&self.conv2, &self.norm2, &mid[..]),
        ] {
            kept = kept.saturating_add(conv.kept(x, output));
            if let Some(norm) = norm {
                kept = kept.saturating_add(norm.kept(output, output));
            }
            kept = kept.saturating_add(n);
            if self.dropout_rate > 0.0 {
                kept = kept.saturating_add(n + output[0] as u64);
            }
        }
        if let Some(s) = &self.shortcut {
            kept = kept.saturating_add(s.kept(input, output));
        }
        kept.saturating_add(n.saturating_mul(2))
    }
    fn infer(&self, input: &[usize]) -> Result<ShapeInfo> {
        let a = self.conv1.infer(input)?;
        let b = self.conv2.infer(&a.output)?;
        let n = super::count(&b.output);
        let own = super::mul(&[n, 2 * self.activation.flops_per_element() + 1]);
        let mut flops = a.flops.saturating_add(b.flops).saturating_add(own);
        if let Some(s) = &self.shortcut {
            flops = flops.saturating_add(s.infer(input)?.flops);
        }
        if self.norm1.is_some() {
            flops += 2 * 6 * n;
        }
        let mut arithmetic = a.arithmetic;
        arithmetic.extend(b.arithmetic);
        Ok(ShapeInfo {
            output: b.output,
            arithmetic,
            flops,
        })
    }
    fn receptive_field(&self, rf: &ReceptiveField) -> ReceptiveField {
        self.conv2.receptive_field(&self.conv1.receptive_field(rf))
    }
    fn rf_start(&self, input: &[usize], start: &[f64], jump: &[f64]) -> Vec<f64> {
        // stride 1 throughout: the second conv sees the first's output with the same jump
        let s = self.conv1.rf_start(input, start, jump);
        self.conv2.rf_start(input, &s, jump)
    }
    fn params(&self) -> Vec<(String, Tensor)> {
        named_children(self.children(), |l| l.params())
    }
    fn buffers(&self) -> Vec<(String, Tensor)> {
        named_children(self.children(), |l| l.buffers())
    }
}

/// A Temporal Convolution Network over `(channels, length)` inputs.
pub struct Tcn {
    pub config: TcnConfig,
    pub in_channels: usize,
    pub blocks: Vec<TcnBlock>,
}

impl Tcn {
    /// A TCN taking `in_channels` input channels.
    pub fn new(in_channels: usize, config: TcnConfig, rng: &mut Rng) -> Result<Tcn> {
        const OP: &str = "tcn";
        if config.nb_filters == 0 {
            return param_err(OP, "nb_filters", "must be positive");
        }
        if config.kernel_size == 0 {
            return param_err(OP, "kernel_size", "must be positive");
        }
        if config.dilations.is_empty() || config.dilations.contains(&0) {
            return param_err(
                OP,
                "dilations",
                format!(
                    "{:?} must be a non-empty list of positive integers",
                    config.dilations
                ),
            );
        }
        if config.nb_stacks == 0 {
            return param_err(OP, "nb_stacks", "must be positive");
        }
        if !matches!(config.padding, Padding::Causal | Padding::Same) {
            return param_err(OP, "padding", "a TCN's padding is \"causal\" or \"same\"");
        }
        if !(0.0..1.0).contains(&config.dropout_rate) {
            return param_err(
                OP,
                "dropout_rate",
                format!("{} is not in [0, 1)", config.dropout_rate),
            );
        }
        let mut blocks = Vec::new();
        let mut c = in_channels;
        for _ in 0..config.nb_stacks {
            for &d in &config.dilations {
                blocks.push(TcnBlock::new(c, &config, d, rng)?);
                c = config.nb_filters;
            }
        }
        Ok(Tcn {
            config,
            in_channels,
            blocks,
        })
    }

    /// The step a sequence-to-one TCN returns for an input of `length`.
    fn output_step(&self, length: usize) -> usize {
        match self.config.padding {
            Padding::Same => length / 2,
            _ => length - 1,
        }
    }
}

impl Layer for Tcn {
    fn kind(&self) -> &'static str {
        "tcn"
    }

    /// The blocks, their skip outputs summed (or the last block's output), and the time step
    /// kept (the last, or the middle for `same` padding) unless every step is returned.
    fn onnx(
        &self,
        g: &mut crate::interop::onnx::Graph,
        x: &str,
        input: &[usize],
    ) -> Result<String> {
        use crate::interop::onnx::layers as onnx;
        let (mut h, mut shape, mut skips) = (x.to_string(), input.to_vec(), None);
        for (i, b) in self.blocks.iter().enumerate() {
            let (out, skip) = onnx::scoped(g, &format!("blocks.{i}"), |g| {
                b.onnx_with_skip(g, &h, &shape)
            })?;
            shape = b.infer(&shape)?.output;
            h = out;
            if self.config.use_skip_connections {
                skips = Some(onnx::accumulate(g, skips, skip));
            }
        }
        let y = skips.unwrap_or(h);
        Ok(match (self.config.return_sequences, &self.config.padding) {
            (true, _) => y,
            (false, Padding::Same) => onnx::middle_step(g, &y),
            (false, _) => onnx::time_step(g, &y, -1),
        })
    }

    /// The running sums of the blocks' skip outputs, and the output (the blocks have rows).
    fn kept(&self, input: &[usize], output: &[usize]) -> u64 {
        let sums = match (self.config.use_skip_connections, self.blocks.first()) {
            (true, Some(b)) => b.infer(input).map_or(0, |i| {
                super::count(&i.output).saturating_mul(self.blocks.len() as u64 - 1)
            }),
            _ => 0,
        };
        sums.saturating_add(super::count(output))
    }

    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let (h, skips) = run_with_skips(&self.blocks, x, ctx, self.config.use_skip_connections)?;
        let y = skips.unwrap_or(h);
        if self.config.return_sequences {
            return Ok(y);
        }
        if let Some(y) = super::mask::time_steps(&y, ctx, |l| self.output_step(l))? {
            return Ok(y);
        }
        let l = y.shape()[2];
        time_step(&y, self.output_step(l))
    }

    /// Its convolutions keep the length (`same` or causal, stride 1) and read zeros past a
    /// series' end; its batch norms take the mask; the kept step is each series' own.
    fn takes_mask(&self) -> bool {
        true
    }

    fn infer(&self, input: &[usize]) -> Result<ShapeInfo> {
        super::expect_spatial("tcn", input, 1)?;
        if input[0] != self.in_channels {
            return shape_err(
                "tcn",
                format!(
                    "expects {} input channels, got input {}",
                    self.in_channels,
                    fmt_shape(input)
                ),
            );
        }
        let mut shape = input.to_vec();
        let mut flops = 0;
        for b in &self.blocks {
            let i = b.infer(&shape)?;
            flops += i.flops;
            shape = i.output;
        }
        let c = &self.config;
        let sum: usize = c.dilations.iter().sum();
        let mut arithmetic = vec![format!(
            "receptive field 1 + 2 * ({} - 1) * {} * {sum} = {} (kernel_size, nb_stacks, sum of dilations {:?})",
            c.kernel_size,
            c.nb_stacks,
            c.receptive_field(),
            c.dilations
        )];
        let output = if c.return_sequences {
            shape
        } else {
            arithmetic.push(format!(
                "returns time step {} of {} ({})",
                self.output_step(input[1]),
                input[1],
                if c.padding == Padding::Same {
                    "the middle, with `same` padding"
                } else {
                    "the last"
                }
            ));
            vec![c.nb_filters]
        };
        Ok(ShapeInfo {
            output,
            arithmetic,
            flops,
        })
    }

    fn receptive_field(&self, rf: &ReceptiveField) -> ReceptiveField {
        let mut r = self
            .blocks
            .iter()
            .fold(rf.clone(), |r, b| b.receptive_field(&r));
        r.collapsed |= !self.config.return_sequences;
        r
    }

    fn rf_start(&self, input: &[usize], start: &[f64], jump: &[f64]) -> Vec<f64> {
        let s = self
            .blocks
            .iter()
            .fold(start.to_vec(), |s, b| b.rf_start(input, &s, jump));
        if self.config.return_sequences {
            s
        } else {
            // one output: the step the TCN returns
            let step = self.output_step(input.get(1).copied().unwrap_or(1)) as f64;
            s.iter().map(|v| v + step * jump[0]).collect()
        }
    }

    fn params(&self) -> Vec<(String, Tensor)> {
        named_children(self.parts(), |l| l.params())
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        named_children(self.parts(), |l| l.buffers())
    }

    fn parts(&self) -> Vec<(String, &dyn Layer)> {
        self.blocks
            .iter()
            .enumerate()
            .map(|(i, b)| (format!("blocks.{i}"), b as &dyn Layer))
            .collect()
    }
}
