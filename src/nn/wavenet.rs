//! WaveNet (van den Oord et al. 2016) over `(channels, length)` inputs: a causal input
//! convolution, then layers of dilated causal convolutions whose dilations double within each
//! stack, each with the gated activation `tanh(filter) * sigmoid(gate)`, a 1x1 residual
//! convolution added back to its input and a 1x1 skip convolution; the sum of the skips goes
//! through ReLU, a 1x1 convolution, ReLU, and a final 1x1 convolution with `output_channels`
//! filters, stride 1, that plays the dense layer.
//!
//! Parameters: `input.*`, `layers.{i}.gated.*` (filter and gate as one convolution with twice
//! the residual channels: filter first), `layers.{i}.residual.*`, `layers.{i}.skip.*`,
//! `head.*`, `output.*`.

use super::block::{SkipBlock, named_children, plain_conv, run_with_skips, time_step};
use super::{Conv, Ctx, Layer, ReceptiveField, ShapeInfo, fmt_shape};
use crate::error::{Result, param_err, shape_err};
use crate::ops::{self, Padding};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// A WaveNet's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct WaveNetConfig {
    pub residual_channels: usize,
    pub skip_channels: usize,
    pub output_channels: usize,
    pub kernel_size: usize,
    /// The dilations of one stack (by default 1, 2, 4, ..., 512).
    pub dilations: Vec<usize>,
    pub nb_stacks: usize,
    /// Output every time step `(output_channels, length)`, or the last `(output_channels)`.
    pub return_sequences: bool,
}

impl Default for WaveNetConfig {
    fn default() -> Self {
        WaveNetConfig {
            residual_channels: 32,
            skip_channels: 32,
            output_channels: 1,
            kernel_size: 2,
            dilations: doubling(10),
            nb_stacks: 1,
            return_sequences: false,
        }
    }
}

/// `1, 2, 4, ...`: `n` dilations, doubling.
pub fn doubling(n: usize) -> Vec<usize> {
    (0..n).map(|i| 1usize << i.min(62)).collect()
}

impl WaveNetConfig {
    /// `kernel_size + (kernel_size - 1) nb_stacks sum(dilations)`: the input convolution's
    /// taps plus each dilated layer's reach.
    pub fn receptive_field(&self) -> usize {
        self.kernel_size
            + (self.kernel_size - 1) * self.nb_stacks * self.dilations.iter().sum::<usize>()
    }
}

/// One gated layer.
pub struct GatedLayer {
    pub gated: Conv,
    /// Absent in the last layer, whose residual output nothing reads.
    pub residual: Option<Conv>,
    pub skip: Conv,
}

impl SkipBlock for GatedLayer {
    /// The residual output (the input when this is the last layer) and the skip output.
    fn forward_with_skip(&self, x: &Tensor, ctx: &mut Ctx) -> Result<(Tensor, Tensor)> {
        let g = self.gated.forward(x, ctx)?;
        let c = g.shape()[1] / 2;
        let filter = ops::tanh(&ops::slice(&g, 1, 0, c)?)?;
        let gate = ops::sigmoid(&ops::slice(&g, 1, c, 2 * c)?)?;
        let z = ops::mul(&filter, &gate)?;
        let skip = self.skip.forward(&z, ctx)?;
        let out = match &self.residual {
            Some(r) => ops::add(x, &r.forward(&z, ctx)?)?,
            None => x.clone(),
        };
        Ok((out, skip))
    }
}

impl GatedLayer {
    fn children(&self) -> Vec<(String, &dyn Layer)> {
        let mut v: Vec<(String, &dyn Layer)> = vec![("gated".into(), &self.gated)];
        if let Some(r) = &self.residual {
            v.push(("residual".into(), r));
        }
        v.push(("skip".into(), &self.skip));
        v
    }
}

impl Layer for GatedLayer {
    fn kind(&self) -> &'static str {
        "wavenet_layer"
    }
    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        Ok(self.forward_with_skip(x, ctx)?.0)
    }
    /// The gated convolution's output, its two halves, their tanh and sigmoid, their
    /// product; the skip output; the residual output and the sum.
    fn kept(&self, input: &[usize], _output: &[usize]) -> u64 {
        let Ok(g) = self.gated.infer(input) else {
            return 0;
        };
        let z = super::count(&g.output) / 2;
        let length = g.output.get(1).copied().unwrap_or(1) as u64;
        let skip = (self.skip.filters as u64).saturating_mul(length);
        let residual = if self.residual.is_some() { 2 * z } else { 0 };
        z.saturating_mul(7)
            .saturating_add(skip)
            .saturating_add(residual)
    }
    fn infer(&self, input: &[usize]) -> Result<ShapeInfo> {
        let g = self.gated.infer(input)?;
        let z = [g.output[0] / 2, g.output[1]];
        let n = super::count(&z);
        let mut flops = g
            .flops
            .saturating_add(n.saturating_mul(10))
            .saturating_add(self.skip.infer(&z)?.flops);
        if let Some(r) = &self.residual {
            flops = flops.saturating_add(r.infer(&z)?.flops).saturating_add(n);
        }
        Ok(ShapeInfo {
            output: input.to_vec(),
            arithmetic: g.arithmetic,
            flops,
        })
    }
    fn receptive_field(&self, rf: &ReceptiveField) -> ReceptiveField {
        self.gated.receptive_field(rf)
    }
    fn rf_start(&self, input: &[usize], start: &[f64], jump: &[f64]) -> Vec<f64> {
        self.gated.rf_start(input, start, jump)
    }
    fn params(&self) -> Vec<(String, Tensor)> {
        named_children(self.children(), |l| l.params())
    }
}

/// A WaveNet.
pub struct WaveNet {
    pub config: WaveNetConfig,
    pub in_channels: usize,
    pub input: Conv,
    pub layers: Vec<GatedLayer>,
    pub head: Conv,
    pub output: Conv,
}

impl WaveNet {
    /// A WaveNet taking `in_channels` input channels.
    pub fn new(in_channels: usize, config: WaveNetConfig, rng: &mut Rng) -> Result<WaveNet> {
        const OP: &str = "wavenet";
        for (name, v) in [
            ("residual_channels", config.residual_channels),
            ("skip_channels", config.skip_channels),
            ("output_channels", config.output_channels),
            ("kernel_size", config.kernel_size),
            ("nb_stacks", config.nb_stacks),
        ] {
            if v == 0 {
                return param_err(OP, name, "must be positive");
            }
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
        let (r, s, k) = (
            config.residual_channels,
            config.skip_channels,
            config.kernel_size,
        );
        let input = plain_conv(1, in_channels, r, (k, 1, 1), Padding::Causal, rng)?;
        let total = config.nb_stacks * config.dilations.len();
        let mut layers = Vec::new();
        for i in 0..total {
            let d = config.dilations[i % config.dilations.len()];
            layers.push(GatedLayer {
                gated: plain_conv(1, r, 2 * r, (k, 1, d), Padding::Causal, rng)?,
                residual: if i + 1 < total {
                    Some(plain_conv(1, r, r, (1, 1, 1), Padding::Valid, rng)?)
                } else {
                    None
                },
                skip: plain_conv(1, r, s, (1, 1, 1), Padding::Valid, rng)?,
            });
        }
        Ok(WaveNet {
            head: plain_conv(1, s, s, (1, 1, 1), Padding::Valid, rng)?,
            output: plain_conv(1, s, config.output_channels, (1, 1, 1), Padding::Valid, rng)?,
            config,
            in_channels,
            input,
            layers,
        })
    }

    fn children(&self) -> Vec<(String, &dyn Layer)> {
        let mut v = self.parts();
        v.push(("head".into(), &self.head));
        v.push(("output".into(), &self.output));
        v
    }
}

impl Layer for WaveNet {
    fn kind(&self) -> &'static str {
        "wavenet"
    }

    /// The input convolution, the gated layers (tanh and sigmoid of the gated convolution's
    /// halves, multiplied; skip and residual 1x1 convolutions), the skip outputs summed, the
    /// ReLU-1x1-ReLU-1x1 head, and the last time step unless every step is returned.
    fn onnx(
        &self,
        g: &mut crate::interop::onnx::Graph,
        x: &str,
        input: &[usize],
    ) -> Result<String> {
        use crate::interop::onnx::layers as onnx;
        let r = self.config.residual_channels;
        let mut h = onnx::within(g, "input", &self.input, x, input)?;
        let shape = self.input.infer(input)?.output;
        let mut skips = None;
        for (i, l) in self.layers.iter().enumerate() {
            let (out, skip) = onnx::scoped(g, &format!("layers.{i}"), |g| {
                let gated = onnx::within(g, "gated", &l.gated, &h, &shape)?;
                let filter = onnx::channels(g, &gated, 0, r);
                let gate = onnx::channels(g, &gated, r, 2 * r);
                let filter = g.node("Tanh", &[&filter], vec![]);
                let gate = g.node("Sigmoid", &[&gate], vec![]);
                let z = g.node("Mul", &[&filter, &gate], vec![]);
                let skip = onnx::within(g, "skip", &l.skip, &z, &shape)?;
                let out = match &l.residual {
                    Some(c) => {
                        let res = onnx::within(g, "residual", c, &z, &shape)?;
                        onnx::add(g, &h, &res)
                    }
                    None => h.clone(),
                };
                Ok((out, skip))
            })?;
            h = out;
            skips = Some(onnx::accumulate(g, skips, skip));
        }
        let Some(skips) = skips else {
            return Err(g.cannot("a WaveNet without layers"));
        };
        let s = [self.config.skip_channels, shape[1]];
        let a = g.node("Relu", &[&skips], vec![]);
        let a = onnx::within(g, "head", &self.head, &a, &s)?;
        let a = g.node("Relu", &[&a], vec![]);
        let y = onnx::within(g, "output", &self.output, &a, &s)?;
        Ok(if self.config.return_sequences {
            y
        } else {
            onnx::time_step(g, &y, -1)
        })
    }

    /// The input convolution's output, the running sums of the skip outputs, the head's
    /// two activations and convolution, and the output (the gated layers have rows).
    fn kept(&self, input: &[usize], output: &[usize]) -> u64 {
        let length = input.get(1).copied().unwrap_or(1) as u64;
        let c = &self.config;
        let per_step = (c.residual_channels + c.skip_channels * (self.layers.len() + 2))
            .saturating_add(c.output_channels) as u64;
        per_step
            .saturating_mul(length)
            .saturating_add(super::count(output))
    }

    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let h = self.input.forward(x, ctx)?;
        let (_, skips) = run_with_skips(&self.layers, &h, ctx, true)?;
        let Some(skips) = skips else {
            return shape_err("wavenet", "has no layers");
        };
        let h = ops::relu(&skips)?;
        let h = ops::relu(&self.head.forward(&h, ctx)?)?;
        let y = self.output.forward(&h, ctx)?;
        if self.config.return_sequences {
            return Ok(y);
        }
        if let Some(y) = super::mask::time_steps(&y, ctx, |l| l - 1)? {
            return Ok(y);
        }
        let l = y.shape()[2];
        time_step(&y, l - 1)
    }

    /// Causal convolutions that keep the length; the kept step is each series' last.
    fn takes_mask(&self) -> bool {
        true
    }

    fn infer(&self, input: &[usize]) -> Result<ShapeInfo> {
        super::expect_spatial("wavenet", input, 1)?;
        if input[0] != self.in_channels {
            return shape_err(
                "wavenet",
                format!(
                    "expects {} input channels, got input {}",
                    self.in_channels,
                    fmt_shape(input)
                ),
            );
        }
        let mut info = self.input.infer(input)?;
        for l in &self.layers {
            info.flops += l.infer(&info.output)?.flops;
        }
        let sk = [self.config.skip_channels, input[1]];
        info.flops += self.head.infer(&sk)?.flops + self.output.infer(&sk)?.flops;
        let c = &self.config;
        let sum: usize = c.dilations.iter().sum();
        info.arithmetic = vec![format!(
            "receptive field {k} + ({k} - 1) * {} * {sum} = {} (input conv, nb_stacks, sum of dilations {:?})",
            c.nb_stacks,
            c.receptive_field(),
            c.dilations,
            k = c.kernel_size,
        )];
        info.output = if c.return_sequences {
            vec![c.output_channels, input[1]]
        } else {
            info.arithmetic
                .push(format!("returns the last time step of {}", input[1]));
            vec![c.output_channels]
        };
        Ok(info)
    }

    fn receptive_field(&self, rf: &ReceptiveField) -> ReceptiveField {
        let mut r = self
            .layers
            .iter()
            .fold(self.input.receptive_field(rf), |r, l| l.receptive_field(&r));
        r.collapsed |= !self.config.return_sequences;
        r
    }

    fn rf_start(&self, input: &[usize], start: &[f64], jump: &[f64]) -> Vec<f64> {
        let s = self.input.rf_start(input, start, jump);
        let s = self
            .layers
            .iter()
            .fold(s, |s, l| l.rf_start(input, &s, jump));
        if self.config.return_sequences {
            s
        } else {
            let last = input.get(1).copied().unwrap_or(1).saturating_sub(1) as f64;
            s.iter().map(|v| v + last * jump[0]).collect()
        }
    }

    fn params(&self) -> Vec<(String, Tensor)> {
        named_children(self.children(), |l| l.params())
    }

    fn parts(&self) -> Vec<(String, &dyn Layer)> {
        let mut v: Vec<(String, &dyn Layer)> = vec![("input".into(), &self.input)];
        v.extend(
            self.layers
                .iter()
                .enumerate()
                .map(|(i, l)| (format!("layers.{i}"), l as &dyn Layer)),
        );
        v
    }
}
