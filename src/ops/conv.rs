//! `conv1d` and `conv2d`: filters, kernel size per dimension, stride, dilation, groups
//! (depthwise included), optional bias, and padding `valid`, `same` (TensorFlow's rule),
//! `causal` (1-D) or explicit per side, in modes zeros, reflect, replicate or circular.
//!
//! Non-zero padding modes pad the input explicitly (a differentiable `pad`) and then run a
//! valid convolution; zero padding is folded into the lowering. Backward: the input gradient
//! is col2im of `W^T dY`, the weight gradient `dY col(x)^T` (see `kernels::conv`).

use crate::autograd::output;
use crate::error::{Result, param_err, shape_err};
use crate::kernels::conv::{
    Conv2dGeom, conv_out_len, conv2d_backward_input, conv2d_backward_weight, conv2d_forward,
};
use crate::ops::shape::{PadMode, pad, reshape};
use crate::ops::{LayerInputs, expect_rank};
use crate::tensor::Tensor;

/// How a convolution pads its input.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Padding {
    /// No padding: the kernel stays inside the input.
    #[default]
    Valid,
    /// TensorFlow's rule: output = ceil(input / stride); when the total padding is odd the
    /// extra element goes at the end. Works with even kernels and stride > 1.
    Same,
    /// 1-D only: `dilation * (kernel_size - 1)` on the left, none on the right, so output t
    /// depends on inputs at times <= t only.
    Causal,
    /// `(before, after)` for each spatial dimension, in order (H then W for 2-D).
    Explicit(Vec<(usize, usize)>),
}

/// Settings of a 2-D convolution (kernel size comes from the weight).
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2dConfig {
    pub stride: [usize; 2],
    pub padding: Padding,
    pub dilation: [usize; 2],
    pub groups: usize,
    pub pad_mode: PadMode,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Conv2dConfig {
            stride: [1, 1],
            padding: Padding::Valid,
            dilation: [1, 1],
            groups: 1,
            pad_mode: PadMode::Zeros,
        }
    }
}

impl Conv2dConfig {
    pub fn with_stride(mut self, s: usize) -> Self {
        self.stride = [s, s];
        self
    }
    pub fn with_padding(mut self, p: Padding) -> Self {
        self.padding = p;
        self
    }
    /// Symmetric explicit padding `p` on every side.
    pub fn with_pad(mut self, p: usize) -> Self {
        self.padding = Padding::Explicit(vec![(p, p), (p, p)]);
        self
    }
    pub fn with_dilation(mut self, d: usize) -> Self {
        self.dilation = [d, d];
        self
    }
    pub fn with_groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    pub fn with_pad_mode(mut self, m: PadMode) -> Self {
        self.pad_mode = m;
        self
    }
}

/// Settings of a 1-D convolution.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv1dConfig {
    pub stride: usize,
    pub padding: Padding,
    pub dilation: usize,
    pub groups: usize,
    pub pad_mode: PadMode,
}

impl Default for Conv1dConfig {
    fn default() -> Self {
        Conv1dConfig {
            stride: 1,
            padding: Padding::Valid,
            dilation: 1,
            groups: 1,
            pad_mode: PadMode::Zeros,
        }
    }
}

impl Conv1dConfig {
    pub fn with_stride(mut self, s: usize) -> Self {
        self.stride = s;
        self
    }
    pub fn with_padding(mut self, p: Padding) -> Self {
        self.padding = p;
        self
    }
    pub fn with_dilation(mut self, d: usize) -> Self {
        self.dilation = d;
        self
    }
    pub fn with_groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    pub fn with_pad_mode(mut self, m: PadMode) -> Self {
        self.pad_mode = m;
        self
    }
}

/// TensorFlow's `same` padding for one axis: (before, after).
pub fn same_padding(n: usize, k: usize, stride: usize, dilation: usize) -> (usize, usize) {
    let out = n.div_ceil(stride);
    let span = dilation * (k.saturating_sub(1)) + 1;
    let total = ((out.saturating_sub(1)) * stride + span).saturating_sub(n);
    (total / 2, total - total / 2)
}

/// Resolve a padding spec to (before, after) per spatial axis.
pub(crate) fn resolve_padding(
    op: &'static str,
    padding: &Padding,
    sizes: &[usize],
    kernel: &[usize],
    stride: &[usize],
    dilation: &[usize],
) -> Result<Vec<(usize, usize)>> {
    let dims = sizes.len();
    // every size below is checked once here, so that the arithmetic (and the messages) that
    // follow cannot overflow
    for i in 0..dims {
        let span = (kernel[i].saturating_sub(1))
            .checked_mul(dilation[i])
            .and_then(|s| s.checked_add(sizes[i]));
        if span.is_none_or(|s| s > isize::MAX as usize) {
            return param_err(
                op,
                "kernel_size",
                format!(
                    "a kernel of {} with dilation {} is too large to compute with",
                    kernel[i], dilation[i]
                ),
            );
        }
    }
    let pads = resolve_unchecked(op, padding, sizes, kernel, stride, dilation)?;
    for (i, &(pb, pa)) in pads.iter().enumerate() {
        let padded = sizes[i].checked_add(pb).and_then(|v| v.checked_add(pa));
        if padded.is_none_or(|v| v > isize::MAX as usize) {
            return param_err(
                op,
                "padding",
                format!(
                    "padding ({pb}, {pa}) is too large to compute with (input size {})",
                    sizes[i]
                ),
            );
        }
    }
    Ok(pads)
}

fn resolve_unchecked(
    op: &'static str,
    padding: &Padding,
    sizes: &[usize],
    kernel: &[usize],
    stride: &[usize],
    dilation: &[usize],
) -> Result<Vec<(usize, usize)>> {
    let dims = sizes.len();
    match padding {
        Padding::Valid => Ok(vec![(0, 0); dims]),
        Padding::Same => Ok((0..dims)
            .map(|i| same_padding(sizes[i], kernel[i], stride[i], dilation[i]))
            .collect()),
        Padding::Causal => {
            if dims != 1 {
                return param_err(
                    op,
                    "padding",
                    "`causal` padding is defined for 1-D convolutions only",
                );
            }
            Ok(vec![(dilation[0] * (kernel[0] - 1), 0)])
        }
        Padding::Explicit(p) => {
            if p.len() != dims {
                return param_err(
                    op,
                    "padding",
                    format!(
                        "explicit padding needs one (before, after) pair per spatial dimension ({dims}), got {}",
                        p.len()
                    ),
                );
            }
            Ok(p.clone())
        }
    }
}

fn check_positive(op: &'static str, param: &'static str, v: &[usize]) -> Result<()> {
    if v.contains(&0) {
        return param_err(op, param, format!("{v:?} must be positive"));
    }
    Ok(())
}

/// Validate a convolution and return its geometry on the (already padded, if needed) input.
#[allow(clippy::too_many_arguments)]
fn geometry(
    op: &'static str,
    xs: &[usize],
    ws: &[usize],
    bias: Option<&[usize]>,
    stride: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
    pads: [(usize, usize); 2],
    dims_1d: bool,
) -> Result<Conv2dGeom> {
    let (n, c_in, h, w) = (xs[0], xs[1], xs[2], xs[3]);
    let (c_out, wc, k_h, k_w) = (ws[0], ws[1], ws[2], ws[3]);
    if groups == 0 {
        return param_err(op, "groups", "must be positive");
    }
    if c_in % groups != 0 || c_out % groups != 0 {
        return param_err(
            op,
            "groups",
            format!("{groups} groups do not divide the {c_in} input channels and {c_out} filters"),
        );
    }
    let wdesc = |s: &[usize]| {
        if dims_1d {
            format!("{:?}", [s[0], s[1], s[3]])
        } else {
            format!("{s:?}")
        }
    };
    if wc != c_in / groups {
        return shape_err(
            op,
            format!(
                "weight {} expects {wc} input channels per group, but the input {} has {c_in} channels in {groups} group(s) ({} per group)",
                wdesc(ws),
                wdesc(xs),
                c_in / groups
            ),
        );
    }
    if k_h == 0 || k_w == 0 || c_out == 0 {
        return shape_err(op, format!("weight {} has an empty dimension", wdesc(ws)));
    }
    if let Some(b) = bias {
        if b != [c_out] {
            return shape_err(
                op,
                format!("bias has shape {b:?}, expected [{c_out}] (one per filter)"),
            );
        }
    }
    let axes: &[(usize, usize, usize, usize, (usize, usize), &str)] = &[
        (h, k_h, stride[0], dilation[0], pads[0], "height"),
        (
            w,
            k_w,
            stride[1],
            dilation[1],
            pads[1],
            if dims_1d { "length" } else { "width" },
        ),
    ];
    let mut outs = [0usize; 2];
    for (i, &(len, k, s, d, (pb, pa), name)) in axes.iter().enumerate() {
        if dims_1d && i == 0 {
            outs[0] = 1;
            continue;
        }
        outs[i] = conv_out_len(len, pb + pa, k, s, d).ok_or_else(|| crate::error::Error::Param {
            op,
            param: "kernel_size",
            msg: format!(
                "along the {name}, the kernel of size {k} with dilation {d} spans {} but the padded input is only {} ({len} + {pb} + {pa}); input {}, weight {}",
                d * (k - 1) + 1,
                len + pb + pa,
                wdesc(xs),
                wdesc(ws)
            ),
        })?;
    }
    Ok(Conv2dGeom {
        n,
        c_in,
        h,
        w,
        c_out,
        k_h,
        k_w,
        stride_h: stride[0],
        stride_w: stride[1],
        pad_t: pads[0].0,
        pad_l: pads[1].0,
        dil_h: dilation[0],
        dil_w: dilation[1],
        groups,
        out_h: outs[0],
        out_w: outs[1],
    })
}

/// The differentiable core: a zero-padded convolution with a known geometry.
fn conv_core(
    op: &'static str,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    g: Conv2dGeom,
) -> Tensor {
    let mut y = crate::kernels::zeros(g.n * g.c_out * g.positions());
    {
        let bd = b.map(|b| b.data());
        conv2d_forward(
            &g,
            &x.data(),
            &w.data(),
            bd.as_ref().map(|d| d.as_slice()),
            &mut y,
        );
    }
    let li = LayerInputs::new(x, w, b);
    let (rx, rw, rb, has_b) = (li.grad_x, li.grad_w, li.grad_b, li.has_b);
    let (xc, wc) = (x.clone(), w.clone());
    let out_shape = vec![g.n, g.c_out, g.out_h, g.out_w];
    output(op, y, out_shape, &li.list, move |gy| {
        let gyd = gy.data();
        let dx = rx.then(|| {
            let mut dx = crate::kernels::zeros(xc.numel());
            conv2d_backward_input(&g, &gyd, &wc.data(), &mut dx);
            Tensor::make(dx, xc.shape().to_vec(), false, None)
        });
        let mut grads = vec![dx];
        let (dw, db) = if rw || rb {
            let mut dw = vec![0f32; wc.numel()];
            let mut db = vec![0f32; g.c_out];
            conv2d_backward_weight(&g, &xc.data(), &gyd, &mut dw, has_b.then_some(&mut db[..]));
            (
                rw.then(|| Tensor::make(dw, wc.shape().to_vec(), false, None)),
                rb.then(|| Tensor::make(db, vec![g.c_out], false, None)),
            )
        } else {
            (None, None)
        };
        grads.push(dw);
        if has_b {
            grads.push(db);
        }
        Ok(grads)
    })
}

/// 2-D convolution (PyTorch's cross-correlation).
///
/// # Shapes
/// x: `(n, c_in, h, w)`; weight: `(c_out, c_in / groups, k_h, k_w)`; bias: `(c_out)`;
/// output: `(n, c_out, out_h, out_w)` with
/// `out = floor((in + pad_total - dilation * (k - 1) - 1) / stride) + 1`.
pub fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, cfg: &Conv2dConfig) -> Result<Tensor> {
    const OP: &str = "conv2d";
    expect_rank(OP, "input", x, 4, "(n, c_in, h, w)")?;
    expect_rank(OP, "weight", w, 4, "(c_out, c_in / groups, k_h, k_w)")?;
    check_positive(OP, "stride", &cfg.stride)?;
    check_positive(OP, "dilation", &cfg.dilation)?;
    let (xs, ws) = (x.shape(), w.shape());
    let pads = resolve_padding(
        OP,
        &cfg.padding,
        &xs[2..],
        &ws[2..],
        &cfg.stride,
        &cfg.dilation,
    )?;
    conv_nd(
        OP,
        x,
        w,
        b,
        cfg.stride,
        cfg.dilation,
        cfg.groups,
        [pads[0], pads[1]],
        cfg.pad_mode,
        false,
    )
}

#[allow(clippy::too_many_arguments)]
fn conv_nd(
    op: &'static str,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
    pads: [(usize, usize); 2],
    mode: PadMode,
    dims_1d: bool,
) -> Result<Tensor> {
    let bshape = b.map(|b| b.shape().to_vec());
    // Validate everything on the unpadded input first, so errors speak of what the user gave.
    let g = geometry(
        op,
        x.shape(),
        w.shape(),
        bshape.as_deref(),
        stride,
        dilation,
        groups,
        pads,
        dims_1d,
    )?;
    let any_pad = pads.iter().any(|&(a, b)| a + b > 0);
    if mode == PadMode::Zeros || !any_pad {
        return Ok(conv_core(op, x, w, b, g));
    }
    let padded = pad(x, &pads, mode, 0.0).map_err(|e| match e {
        crate::error::Error::Param { .. } => {
            // Speak of the input the caller gave (1-D inputs run here as (n, c, 1, l)).
            let (shape, pads) = if dims_1d {
                let s = x.shape();
                (format!("{:?}", [s[0], s[1], s[3]]), format!("{:?}", [pads[1]]))
            } else {
                (format!("{:?}", x.shape()), format!("{pads:?}"))
            };
            crate::error::Error::Param {
                op,
                param: "padding",
                msg: format!(
                    "{} padding {pads} does not fit the input {shape}: reflect needs padding < size, circular padding <= size",
                    mode.name()
                ),
            }
        }
        other => other,
    })?;
    let g = geometry(
        op,
        padded.shape(),
        w.shape(),
        bshape.as_deref(),
        stride,
        dilation,
        groups,
        [(0, 0), (0, 0)],
        dims_1d,
    )?;
    Ok(conv_core(op, &padded, w, b, g))
}

/// 1-D convolution over sequences.
///
/// # Shapes
/// x: `(n, c_in, l)`; weight: `(c_out, c_in / groups, k)`; bias: `(c_out)`; output: `(n, c_out, out_l)`.
pub fn conv1d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, cfg: &Conv1dConfig) -> Result<Tensor> {
    const OP: &str = "conv1d";
    expect_rank(OP, "input", x, 3, "(n, c_in, l)")?;
    expect_rank(OP, "weight", w, 3, "(c_out, c_in / groups, k)")?;
    check_positive(OP, "stride", &[cfg.stride])?;
    check_positive(OP, "dilation", &[cfg.dilation])?;
    let (xs, ws) = (x.shape(), w.shape());
    let pads = resolve_padding(
        OP,
        &cfg.padding,
        &xs[2..],
        &ws[2..],
        &[cfg.stride],
        &[cfg.dilation],
    )?;
    let x4 = reshape(x, &[xs[0], xs[1], 1, xs[2]])?;
    let w4 = reshape(w, &[ws[0], ws[1], 1, ws[2]])?;
    let y = conv_nd(
        OP,
        &x4,
        &w4,
        b,
        [1, cfg.stride],
        [1, cfg.dilation],
        cfg.groups,
        [(0, 0), pads[0]],
        cfg.pad_mode,
        true,
    )?;
    let ys = y.shape().to_vec();
    reshape(&y, &[ys[0], ys[1], ys[3]])
}
