//! Convolution layers: `conv1d`, `conv2d`, `conv1d_transpose`, `conv2d_transpose`, each with an
//! optional bias and activation. Parameters: `weight`, `bias` (PyTorch's names and layouts).

use super::{Activation, Ctx, Layer, ReceptiveField, ShapeInfo, fmt_shape};
use crate::error::{Error, Result, param_err, shape_err};
use crate::init;
use crate::kernels::conv::{Conv2dGeom, conv_out_len};
use crate::ops::{self, PadMode, Padding, conv::resolve_padding};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Which convolution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ConvKind {
    Conv1d,
    Conv2d,
    ConvTranspose1d,
    ConvTranspose2d,
}

impl ConvKind {
    /// Spatial dimensions.
    pub fn dims(&self) -> usize {
        match self {
            ConvKind::Conv1d | ConvKind::ConvTranspose1d => 1,
            _ => 2,
        }
    }
    /// Whether this is a transposed convolution.
    pub fn transposed(&self) -> bool {
        matches!(self, ConvKind::ConvTranspose1d | ConvKind::ConvTranspose2d)
    }
    /// The spec's type name.
    pub fn name(&self) -> &'static str {
        match self {
            ConvKind::Conv1d => "conv1d",
            ConvKind::Conv2d => "conv2d",
            ConvKind::ConvTranspose1d => "conv1d_transpose",
            ConvKind::ConvTranspose2d => "conv2d_transpose",
        }
    }
}

/// A convolution layer.
///
/// # Shapes
/// conv: input `(n, in_channels, *spatial)` -> `(n, filters, *out)`; weight
/// `(filters, in_channels / groups, *kernel)`. Transposed: weight `(in_channels, filters / groups, *kernel)`.
pub struct Conv {
    pub kind: ConvKind,
    pub in_channels: usize,
    pub filters: usize,
    pub kernel: Vec<usize>,
    pub stride: Vec<usize>,
    pub padding: Padding,
    pub dilation: Vec<usize>,
    pub groups: usize,
    pub pad_mode: PadMode,
    /// Transposed only.
    pub output_padding: Vec<usize>,
    pub activation: Activation,
    /// The weight, or under weight normalisation its direction `v` (PyTorch's `weight_v`).
    pub weight: Tensor,
    /// Weight normalisation's per-filter magnitude `g` (`weight_g`, shaped `(filters, 1, ..)`):
    /// the weight used is `g * v / ||v||`, the norm taken over all but the first axis.
    pub weight_g: Option<Tensor>,
    pub bias: Option<Tensor>,
}

impl Conv {
    /// A layer with PyTorch's default initialisation, drawn from `rng`. Every vector has one
    /// entry per spatial dimension.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: ConvKind,
        in_channels: usize,
        filters: usize,
        kernel: Vec<usize>,
        stride: Vec<usize>,
        padding: Padding,
        dilation: Vec<usize>,
        groups: usize,
        pad_mode: PadMode,
        output_padding: Vec<usize>,
        bias: bool,
        activation: Activation,
        rng: &mut Rng,
    ) -> Result<Conv> {
        let op = kind.name();
        let d = kind.dims();
        for (name, v) in [
            ("kernel_size", &kernel),
            ("strides", &stride),
            ("dilation_rate", &dilation),
            ("output_padding", &output_padding),
        ] {
            if v.len() != d {
                return param_err(op, name, format!("needs {d} value(s), got {v:?}"));
            }
        }
        for (name, v) in [
            ("kernel_size", &kernel),
            ("strides", &stride),
            ("dilation_rate", &dilation),
        ] {
            if v.contains(&0) {
                return param_err(op, name, format!("{v:?} must be positive"));
            }
        }
        if filters == 0 {
            return param_err(op, "filters", "must be positive");
        }
        if groups == 0 || in_channels % groups != 0 || filters % groups != 0 {
            return param_err(
                op,
                "groups",
                format!(
                    "{groups} must divide both the {in_channels} input channels and the {filters} filters"
                ),
            );
        }
        if kind.transposed() {
            if padding == Padding::Causal {
                return param_err(
                    op,
                    "padding",
                    "transposed convolutions take `valid`, `same` or explicit padding",
                );
            }
            if padding == Padding::Same && output_padding.iter().any(|&p| p != 0) {
                return param_err(
                    op,
                    "output_padding",
                    "`same` padding chooses the output padding itself (output = input * stride)",
                );
            }
            if pad_mode != PadMode::Zeros {
                return param_err(
                    op,
                    "padding_mode",
                    "transposed convolutions pad with zeros only",
                );
            }
        } else if padding == Padding::Causal && d != 1 {
            return param_err(
                op,
                "padding",
                "`causal` padding is for 1-D convolutions (conv1d)",
            );
        }
        let mut wshape = if kind.transposed() {
            vec![in_channels, filters / groups]
        } else {
            vec![filters, in_channels / groups]
        };
        wshape.extend(&kernel);
        let weight = init::default_weight(&wshape, rng)?.requires_grad_();
        let bias = if bias {
            Some(init::default_bias(&wshape, filters, rng)?.requires_grad_())
        } else {
            None
        };
        let conv = Conv {
            kind,
            in_channels,
            filters,
            kernel,
            stride,
            padding,
            dilation,
            groups,
            pad_mode,
            output_padding,
            activation,
            weight,
            weight_g: None,
            bias,
        };
        if kind.transposed() {
            conv.transpose_padding()?;
        }
        Ok(conv)
    }

    /// Reparameterise the weight as `g * v / ||v||` (weight normalisation, Salimans and
    /// Kingma 2016, as PyTorch's `weight_norm` with `dim=0`); the effective weight is unchanged.
    pub fn with_weight_norm(mut self) -> Result<Conv> {
        if self.kind.transposed() {
            return param_err(
                self.kind.name(),
                "weight_norm",
                "is for convolutions, not transposed ones",
            );
        }
        let g = crate::autograd::no_grad(|| ops::filter_norms(&self.weight))?;
        self.weight_g = Some(g.detach().requires_grad_());
        Ok(self)
    }

    /// The weight the convolution uses.
    pub fn effective_weight(&self) -> Result<Tensor> {
        match &self.weight_g {
            None => Ok(self.weight.clone()),
            Some(g) => ops::weight_norm(&self.weight, g),
        }
    }

    /// A transposed convolution's symmetric padding, output padding and the positions cropped
    /// from the end of each axis. `same` (output = input * stride, as Keras) takes
    /// `total = dilation * (k - 1) + 1 - stride` off the full output: half (rounded down) from
    /// each side by the padding, the odd one from the end by cropping; a negative total is
    /// made up by output padding.
    pub(crate) fn transpose_padding(&self) -> Result<TransposePads> {
        let d = self.kind.dims();
        let pads = |pad: Vec<usize>| TransposePads {
            pad,
            output_padding: self.output_padding.clone(),
            crop_end: vec![0; d],
        };
        match &self.padding {
            Padding::Valid => Ok(pads(vec![0; d])),
            Padding::Explicit(p) if p.len() == d && p.iter().all(|(a, b)| a == b) => {
                Ok(pads(p.iter().map(|(a, _)| *a).collect()))
            }
            Padding::Same => {
                let mut t = pads(vec![0; d]);
                for i in 0..d {
                    let total = (self.dilation[i] * (self.kernel[i] - 1) + 1) as isize
                        - self.stride[i] as isize;
                    if total < 0 {
                        t.output_padding[i] = (-total) as usize;
                    } else {
                        t.pad[i] = total as usize / 2;
                        t.crop_end[i] = total as usize % 2;
                    }
                }
                Ok(t)
            }
            Padding::Explicit(p) => param_err(
                self.kind.name(),
                "padding",
                format!("transposed convolutions need one symmetric padding per axis, got {p:?}"),
            ),
            _ => param_err(
                self.kind.name(),
                "padding",
                "transposed convolutions take `valid` or explicit padding",
            ),
        }
    }
}

impl Conv {
    /// The zero-padded convolution this layer computes on a batch of `n` samples shaped
    /// `input` (1-D as 2-D with `h = 1`), or why it is not one (a compiled plan runs only
    /// those): transposed convolutions, weight normalisation and padding modes other than
    /// zeros go through other ops.
    pub fn zero_padded_geom(
        &self,
        n: usize,
        input: &[usize],
    ) -> std::result::Result<Conv2dGeom, &'static str> {
        if self.kind.transposed() {
            return Err("a transposed convolution");
        }
        if self.weight_g.is_some() {
            return Err("a weight-normalised convolution");
        }
        let spatial = &input[1..];
        let pads = resolve_padding(
            self.kind.name(),
            &self.padding,
            spatial,
            &self.kernel,
            &self.stride,
            &self.dilation,
        )
        .map_err(|_| "a padding the plan cannot resolve")?;
        if self.pad_mode != PadMode::Zeros && pads.iter().any(|&(a, b)| a + b > 0) {
            return Err("a convolution padding with reflect, replicate or circular values");
        }
        // 1-D runs as 2-D: (n, c, 1, l), kernel (1, k)
        let one = |v: &[usize], fill: usize| -> [usize; 2] {
            if v.len() == 1 {
                [fill, v[0]]
            } else {
                [v[0], v[1]]
            }
        };
        let (hw, k, st, dl) = (
            one(spatial, 1),
            one(&self.kernel, 1),
            one(&self.stride, 1),
            one(&self.dilation, 1),
        );
        let pd = if pads.len() == 1 {
            [(0, 0), pads[0]]
        } else {
            [pads[0], pads[1]]
        };
        let out = |i: usize| conv_out_len(hw[i], pd[i].0 + pd[i].1, k[i], st[i], dl[i]);
        let (Some(out_h), Some(out_w)) = (out(0), out(1)) else {
            return Err("a kernel larger than its padded input");
        };
        Ok(Conv2dGeom {
            n,
            c_in: self.in_channels,
            h: hw[0],
            w: hw[1],
            c_out: self.filters,
            k_h: k[0],
            k_w: k[1],
            stride_h: st[0],
            stride_w: st[1],
            pad_t: pd[0].0,
            pad_l: pd[1].0,
            dil_h: dl[0],
            dil_w: dl[1],
            groups: self.groups,
            out_h,
            out_w,
        })
    }
}

/// See [`Conv::transpose_padding`].
pub(crate) struct TransposePads {
    pub(crate) pad: Vec<usize>,
    pub(crate) output_padding: Vec<usize>,
    pub(crate) crop_end: Vec<usize>,
}

impl TransposePads {
    /// Take `crop_end` positions off the end of each spatial axis of `y`.
    fn crop(&self, mut y: Tensor) -> Result<Tensor> {
        for (i, &c) in self.crop_end.iter().enumerate() {
            if c > 0 {
                let axis = 2 + i;
                let n = y.shape()[axis];
                y = ops::slice(&y, axis, 0, n - c)?;
            }
        }
        Ok(y)
    }
}

impl Layer for Conv {
    fn kind(&self) -> &'static str {
        self.kind.name()
    }

    fn onnx(
        &self,
        g: &mut crate::interop::onnx::Graph,
        x: &str,
        input: &[usize],
    ) -> Result<String> {
        crate::interop::onnx::layers::conv(self, g, x, input)
    }

    /// A padding module before an uneven padding; a crop after a transposed convolution
    /// cropped to `same`; the activation written inside as a module after.
    fn torch_span(&self, input: &[usize]) -> Result<super::torch::TorchSpan> {
        let act = usize::from(self.activation != Activation::Linear);
        if self.kind.transposed() {
            let crop = self.transpose_padding()?.crop_end.iter().any(|&c| c > 0);
            return Ok(super::torch::TorchSpan {
                before: 0,
                after: usize::from(crop) + act,
            });
        }
        let pads = resolve_padding(
            self.kind.name(),
            &self.padding,
            input.get(1..).unwrap_or(&[]),
            &self.kernel,
            &self.stride,
            &self.dilation,
        )?;
        Ok(super::torch::TorchSpan {
            before: usize::from(pads.iter().any(|(a, b)| a != b)),
            after: act,
        })
    }

    /// The output (and the values before the activation); a transposed convolution cropped
    /// to `same` makes its uncropped output first.
    fn kept(&self, _input: &[usize], output: &[usize]) -> u64 {
        let mut kept = self.activation.kept(super::count(output));
        if matches!(
            self.kind,
            ConvKind::ConvTranspose1d | ConvKind::ConvTranspose2d
        ) && let Ok(t) = self.transpose_padding()
            && t.crop_end.iter().any(|&c| c > 0)
        {
            let mut full = output.to_vec();
            for (d, c) in full.iter_mut().skip(1).zip(&t.crop_end) {
                *d += c;
            }
            kept = kept.saturating_add(super::count(&full));
        }
        kept
    }

    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        // a window wider than one position reads past a short series' end: zeros there, as
        // its own zero padding would give it
        let masked;
        let x = if self.kind == ConvKind::Conv1d && ctx.lengths.is_some() && self.kernel[0] > 1 {
            masked = super::mask::zero_tail(x, ctx)?;
            &masked
        } else {
            x
        };
        let b = self.bias.as_ref();
        let weight = self.effective_weight()?;
        let y = match self.kind {
            ConvKind::Conv2d => ops::conv2d(
                x,
                &weight,
                b,
                &ops::Conv2dConfig {
                    stride: [self.stride[0], self.stride[1]],
                    padding: self.padding.clone(),
                    dilation: [self.dilation[0], self.dilation[1]],
                    groups: self.groups,
                    pad_mode: self.pad_mode,
                },
            )?,
            ConvKind::Conv1d => ops::conv1d(
                x,
                &weight,
                b,
                &ops::Conv1dConfig {
                    stride: self.stride[0],
                    padding: self.padding.clone(),
                    dilation: self.dilation[0],
                    groups: self.groups,
                    pad_mode: self.pad_mode,
                },
            )?,
            ConvKind::ConvTranspose2d => {
                let t = self.transpose_padding()?;
                let y = ops::conv_transpose2d(
                    x,
                    &weight,
                    b,
                    &ops::ConvTranspose2dConfig {
                        stride: [self.stride[0], self.stride[1]],
                        padding: [t.pad[0], t.pad[1]],
                        output_padding: [t.output_padding[0], t.output_padding[1]],
                        dilation: [self.dilation[0], self.dilation[1]],
                        groups: self.groups,
                    },
                )?;
                t.crop(y)?
            }
            ConvKind::ConvTranspose1d => {
                let t = self.transpose_padding()?;
                let y = ops::conv_transpose1d(
                    x,
                    &weight,
                    b,
                    &ops::ConvTranspose1dConfig {
                        stride: self.stride[0],
                        padding: t.pad[0],
                        output_padding: t.output_padding[0],
                        dilation: self.dilation[0],
                        groups: self.groups,
                    },
                )?;
                t.crop(y)?
            }
        };
        self.activation.apply_owned(y)
    }

    fn infer(&self, input: &[usize]) -> Result<ShapeInfo> {
        let op = self.kind.name();
        let d = self.kind.dims();
        super::expect_spatial(op, input, d)?;
        if input[0] != self.in_channels {
            return shape_err(
                op,
                format!(
                    "expects {} input channels, got {} (input {})",
                    self.in_channels,
                    input[0],
                    fmt_shape(input)
                ),
            );
        }
        let spatial = &input[1..];
        let names = if d == 1 {
            vec!["length"]
        } else {
            vec!["height", "width"]
        };
        let mut out = vec![self.filters];
        let mut arithmetic = Vec::new();
        if self.kind.transposed() {
            let t = self.transpose_padding()?;
            let p = &t.pad;
            for i in 0..d {
                let (n, k, s, dl, op_) = (
                    spatial[i],
                    self.kernel[i],
                    self.stride[i],
                    self.dilation[i],
                    t.output_padding[i],
                );
                if op_ >= s && op_ >= dl {
                    return param_err(
                        op,
                        "output_padding",
                        format!(
                            "{op_} must be smaller than the stride ({s}) or the dilation ({dl})"
                        ),
                    );
                }
                let o = ops::conv_transpose_out_len(n, k, s, p[i], dl, op_).ok_or_else(|| {
                    Error::Param {
                        op,
                        param: "padding",
                        msg: format!("the {} of {n} gives an empty output", names[i]),
                    }
                })?;
                let o = o - t.crop_end[i];
                if self.padding == Padding::Same {
                    let full = (n - 1) * s + dl * (k - 1) + 1;
                    arithmetic.push(format!(
                        "{} {n} -> {n} * {s} = {o} (same: the full ({n} - 1) * {s} + {dl} * ({k} - 1) + 1 = {full}, less {dl} * ({k} - 1) + 1 - {s} = {})",
                        names[i],
                        full as isize - o as isize
                    ));
                } else {
                    arithmetic.push(format!(
                        "{} {n} -> ({n} - 1) * {s} - 2 * {} + {dl} * ({k} - 1) + {op_} + 1 = {o}",
                        names[i], p[i]
                    ));
                }
                out.push(o);
            }
        } else {
            let pads = resolve_padding(
                op,
                &self.padding,
                spatial,
                &self.kernel,
                &self.stride,
                &self.dilation,
            )?;
            for i in 0..d {
                let (n, k, s, dl) = (spatial[i], self.kernel[i], self.stride[i], self.dilation[i]);
                let pt = pads[i].0 + pads[i].1;
                let (pb, pa) = pads[i];
                let too_big = match self.pad_mode {
                    PadMode::Reflect => pb >= n || pa >= n,
                    PadMode::Circular => pb > n || pa > n,
                    _ => false,
                };
                if too_big {
                    return param_err(
                        op,
                        "padding",
                        format!(
                            "{} padding ({pb}, {pa}) does not fit a {} of {n}: reflect needs padding < size, circular padding <= size",
                            self.pad_mode.name(),
                            names[i]
                        ),
                    );
                }
                let o = conv_out_len(n, pt, k, s, dl).ok_or_else(|| Error::Param {
                    op,
                    param: "kernel_size",
                    msg: format!(
                        "the kernel spans {} along the {} (size {k}, dilation {dl}) but the padded input is only {}",
                        dl * (k - 1) + 1,
                        names[i],
                        n + pt
                    ),
                })?;
                let kterm = if dl == 1 {
                    format!("{k}")
                } else {
                    format!("({dl} * ({k} - 1) + 1)")
                };
                arithmetic.push(format!(
                    "{} {n} -> floor(({n} + {pt} - {kterm}) / {s}) + 1 = {o}",
                    names[i]
                ));
                out.push(o);
            }
        }
        use super::{count, mul};
        let (positions, taps) = (count(&out[1..]), count(&self.kernel));
        let per_group = |c: usize| (c / self.groups) as u64;
        let macs = if self.kind.transposed() {
            // each input position scatters its kernel into filters / groups output channels
            let inputs = count(spatial);
            mul(&[
                inputs,
                self.in_channels as u64,
                per_group(self.filters),
                taps,
            ])
        } else {
            mul(&[
                positions,
                self.filters as u64,
                per_group(self.in_channels),
                taps,
            ])
        };
        let elements = mul(&[positions, self.filters as u64]);
        let per_element = self.activation.flops_per_element() + u64::from(self.bias.is_some());
        Ok(ShapeInfo {
            output: out,
            arithmetic,
            flops: mul(&[2, macs]).saturating_add(mul(&[elements, per_element])),
        })
    }

    fn rf_start(&self, input: &[usize], start: &[f64], jump: &[f64]) -> Vec<f64> {
        let d = self.kind.dims();
        let spatial = input.get(1..).unwrap_or(&[]);
        if self.kind.transposed() {
            // output o reads inputs from (o - (dilation (k - 1) - padding)) / stride on
            let Ok(t) = self.transpose_padding() else {
                return start.to_vec();
            };
            return (0..d.min(start.len()))
                .map(|i| {
                    let reach = (self.dilation[i] * (self.kernel[i] - 1)) as f64 - t.pad[i] as f64;
                    start[i] - reach * jump[i] / self.stride[i] as f64
                })
                .collect();
        }
        let pads = resolve_padding(
            self.kind.name(),
            &self.padding,
            spatial,
            &self.kernel,
            &self.stride,
            &self.dilation,
        )
        .unwrap_or_else(|_| vec![(0, 0); d]);
        (0..d.min(start.len()))
            .map(|i| start[i] - pads[i].0 as f64 * jump[i])
            .collect()
    }

    fn receptive_field(&self, rf: &ReceptiveField) -> ReceptiveField {
        if self.kind.transposed() {
            rf.transposed(&self.kernel, &self.stride, &self.dilation)
        } else {
            rf.window(&self.kernel, &self.stride, &self.dilation)
        }
    }

    fn params(&self) -> Vec<(String, Tensor)> {
        let mut v = match &self.weight_g {
            None => vec![("weight".to_string(), self.weight.clone())],
            Some(g) => vec![
                ("weight_g".to_string(), g.clone()),
                ("weight_v".to_string(), self.weight.clone()),
            ],
        };
        if let Some(b) = &self.bias {
            v.push(("bias".into(), b.clone()));
        }
        v
    }
    fn lowered(&self) -> super::Lowered<'_> {
        super::Lowered::Conv(self)
    }
    /// A 1-D convolution with zero padding whose padding does not depend on the length
    /// (TensorFlow's `same` with a stride does).
    fn takes_mask(&self) -> bool {
        self.kind == ConvKind::Conv1d
            && self.pad_mode == PadMode::Zeros
            && (self.stride[0] == 1 || self.padding != Padding::Same)
    }
}
