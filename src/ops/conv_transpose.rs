//! `conv_transpose1d` and `conv_transpose2d`: the adjoint of a convolution, used to upsample
//! (stride 2 spreads the input apart and the learned kernel fills the gaps).
//!
//! A transposed convolution of x is the input-gradient of the convolution whose output has
//! x's shape, so its forward is `conv2d_backward_input`, its input gradient a plain
//! convolution of dY, and its weight gradient `conv2d_backward_weight` with the roles swapped.

use crate::autograd::output;
use crate::error::{Result, param_err, shape_err};
use crate::kernels::conv::{
    Conv2dGeom, conv2d_backward_input, conv2d_backward_weight, conv2d_forward,
};
use crate::ops::shape::reshape;
use crate::ops::{LayerInputs, expect_rank};
use crate::tensor::Tensor;

/// Settings of a 2-D transposed convolution (PyTorch's `ConvTranspose2d`).
#[derive(Clone, Debug, PartialEq)]
pub struct ConvTranspose2dConfig {
    pub stride: [usize; 2],
    /// Removed from both sides of the output: `dilation * (k - 1) - padding` zeros are
    /// implicitly added around the (stride-spread) input.
    pub padding: [usize; 2],
    /// Extra rows/columns added to one side of the output, to pick among the sizes that a
    /// strided convolution maps to the same length. Must be smaller than stride or dilation.
    pub output_padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Default for ConvTranspose2dConfig {
    fn default() -> Self {
        ConvTranspose2dConfig {
            stride: [1, 1],
            padding: [0, 0],
            output_padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        }
    }
}

impl ConvTranspose2dConfig {
    pub fn with_stride(mut self, s: usize) -> Self {
        self.stride = [s, s];
        self
    }
    pub fn with_pad(mut self, p: usize) -> Self {
        self.padding = [p, p];
        self
    }
    pub fn with_output_padding(mut self, p: usize) -> Self {
        self.output_padding = [p, p];
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
}

/// Settings of a 1-D transposed convolution.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvTranspose1dConfig {
    pub stride: usize,
    pub padding: usize,
    pub output_padding: usize,
    pub dilation: usize,
    pub groups: usize,
}

impl Default for ConvTranspose1dConfig {
    fn default() -> Self {
        ConvTranspose1dConfig {
            stride: 1,
            padding: 0,
            output_padding: 0,
            dilation: 1,
            groups: 1,
        }
    }
}

/// Output length of a transposed convolution axis:
/// `(n - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1`, or `None` if not positive.
pub fn conv_transpose_out_len(
    n: usize,
    k: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    output_padding: usize,
) -> Option<usize> {
    let full = (n.checked_sub(1)?).checked_mul(stride)?
        + dilation.checked_mul(k.checked_sub(1)?)?
        + output_padding
        + 1;
    full.checked_sub(2 * padding).filter(|&v| v > 0)
}

#[allow(clippy::too_many_arguments)]
fn conv_transpose_nd(
    op: &'static str,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: [usize; 2],
    padding: [usize; 2],
    output_padding: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
    dims_1d: bool,
) -> Result<Tensor> {
    let (xs, ws) = (x.shape().to_vec(), w.shape().to_vec());
    let desc = |s: &[usize]| {
        if dims_1d {
            format!("{:?}", [s[0], s[1], s[3]])
        } else {
            format!("{s:?}")
        }
    };
    for (name, v) in [("stride", stride), ("dilation", dilation)] {
        if v.contains(&0) {
            return param_err(op, name, "must be positive");
        }
    }
    if groups == 0 {
        return param_err(op, "groups", "must be positive");
    }
    let (n, c_in, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
    if ws[0] != c_in {
        return shape_err(
            op,
            format!(
                "weight {} must have the input's {c_in} channels first (c_in, c_out / groups, k...)",
                desc(&ws)
            ),
        );
    }
    if c_in % groups != 0 {
        return param_err(
            op,
            "groups",
            format!("{groups} groups do not divide the {c_in} input channels"),
        );
    }
    let c_out = ws[1] * groups;
    if ws[1] == 0 || ws[2] == 0 || ws[3] == 0 {
        return shape_err(op, format!("weight {} has an empty dimension", desc(&ws)));
    }
    if let Some(b) = b {
        if b.shape() != [c_out] {
            return shape_err(
                op,
                format!("bias has shape {:?}, expected [{c_out}]", b.shape()),
            );
        }
    }
    let mut outs = [0usize; 2];
    for i in 0..2 {
        if dims_1d && i == 0 {
            outs[0] = 1;
            continue;
        }
        if output_padding[i] >= stride[i] && output_padding[i] >= dilation[i] {
            return param_err(
                op,
                "output_padding",
                format!(
                    "{} must be smaller than stride ({}) or dilation ({})",
                    output_padding[i], stride[i], dilation[i]
                ),
            );
        }
        let len = [h, wd][i];
        outs[i] = conv_transpose_out_len(len, ws[2 + i], stride[i], padding[i], dilation[i], output_padding[i]).ok_or_else(|| {
            crate::error::Error::Param {
                op,
                param: "padding",
                msg: format!(
                    "input {} with weight {} gives an empty output: (n - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1 <= 0",
                    desc(&xs),
                    desc(&ws)
                ),
            }
        })?;
    }
    // The convolution this one transposes: its input has our output's shape.
    let g = Conv2dGeom {
        n,
        c_in: c_out,
        h: outs[0],
        w: outs[1],
        c_out: c_in,
        k_h: ws[2],
        k_w: ws[3],
        stride_h: stride[0],
        stride_w: stride[1],
        pad_t: padding[0],
        pad_l: padding[1],
        dil_h: dilation[0],
        dil_w: dilation[1],
        groups,
        out_h: h,
        out_w: wd,
    };
    let plane = outs[0] * outs[1];
    let mut y = vec![0f32; n * c_out * plane];
    conv2d_backward_input(&g, &x.data(), &w.data(), &mut y);
    if let Some(b) = b {
        let bd = b.data();
        for (i, chunk) in y.chunks_mut(plane.max(1)).enumerate() {
            let bv = bd[i % c_out];
            chunk.iter_mut().for_each(|v| *v += bv);
        }
    }
    let li = LayerInputs::new(x, w, b);
    let (rx, rw, rb, has_b) = (li.grad_x, li.grad_w, li.grad_b, li.has_b);
    let (xc, wc) = (x.clone(), w.clone());
    Ok(output(
        op,
        y,
        vec![n, c_out, outs[0], outs[1]],
        &li.list,
        move |gy| {
            let gyd = gy.data();
            let dx = rx.then(|| {
                let mut dx = vec![0f32; xc.numel()];
                conv2d_forward(&g, &gyd, &wc.data(), None, &mut dx);
                Tensor::make(dx, xc.shape().to_vec(), false, None)
            });
            let dw = rw.then(|| {
                let mut dw = vec![0f32; wc.numel()];
                conv2d_backward_weight(&g, &gyd, &xc.data(), &mut dw, None);
                Tensor::make(dw, wc.shape().to_vec(), false, None)
            });
            let mut grads = vec![dx, dw];
            if has_b {
                grads.push(rb.then(|| {
                    let mut db = vec![0f64; c_out];
                    for (i, chunk) in gyd.chunks(plane.max(1)).enumerate() {
                        db[i % c_out] += crate::ops::elementwise::sum_f64(chunk);
                    }
                    Tensor::make(
                        db.into_iter().map(|v| v as f32).collect(),
                        vec![c_out],
                        false,
                        None,
                    )
                }));
            }
            Ok(grads)
        },
    ))
}

/// 2-D transposed convolution.
///
/// # Shapes
/// x: `(n, c_in, h, w)`; weight: `(c_in, c_out / groups, k_h, k_w)`; bias: `(c_out)`;
/// output: `(n, c_out, out_h, out_w)` with
/// `out = (in - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1`.
pub fn conv_transpose2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    cfg: &ConvTranspose2dConfig,
) -> Result<Tensor> {
    const OP: &str = "conv_transpose2d";
    expect_rank(OP, "input", x, 4, "(n, c_in, h, w)")?;
    expect_rank(OP, "weight", w, 4, "(c_in, c_out / groups, k_h, k_w)")?;
    conv_transpose_nd(
        OP,
        x,
        w,
        b,
        cfg.stride,
        cfg.padding,
        cfg.output_padding,
        cfg.dilation,
        cfg.groups,
        false,
    )
}

/// 1-D transposed convolution.
///
/// # Shapes
/// x: `(n, c_in, l)`; weight: `(c_in, c_out / groups, k)`; bias: `(c_out)`; output: `(n, c_out, out_l)`.
pub fn conv_transpose1d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    cfg: &ConvTranspose1dConfig,
) -> Result<Tensor> {
    const OP: &str = "conv_transpose1d";
    expect_rank(OP, "input", x, 3, "(n, c_in, l)")?;
    expect_rank(OP, "weight", w, 3, "(c_in, c_out / groups, k)")?;
    let (xs, ws) = (x.shape().to_vec(), w.shape().to_vec());
    let x4 = reshape(x, &[xs[0], xs[1], 1, xs[2]])?;
    let w4 = reshape(w, &[ws[0], ws[1], 1, ws[2]])?;
    let y = conv_transpose_nd(
        OP,
        &x4,
        &w4,
        b,
        [1, cfg.stride],
        [0, cfg.padding],
        [0, cfg.output_padding],
        [1, cfg.dilation],
        cfg.groups,
        true,
    )?;
    let ys = y.shape().to_vec();
    reshape(&y, &[ys[0], ys[1], ys[3]])
}
