//! Pooling ops: max and average (1-D and 2-D) with their own stride, padding and ceil mode;
//! global average and max pooling; adaptive average pooling to a given output size.

use crate::autograd::{make_node, output};
use crate::error::{Result, param_err, shape_err};
use crate::kernels::pool::{self, Pool2dGeom, pool_out_len};
use crate::ops::expect_rank;
use crate::ops::reduce::mean;
use crate::ops::shape::reshape;
use crate::tensor::Tensor;

/// Settings of a 2-D pooling window.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool2dConfig {
    pub kernel: [usize; 2],
    /// Defaults to the kernel size.
    pub stride: Option<[usize; 2]>,
    /// Implicit padding on both sides (max pooling pads with -inf), at most half the kernel.
    pub padding: [usize; 2],
    /// Round the output size up, so that a last partial window is kept.
    pub ceil_mode: bool,
    /// Average pooling only: divide by the full window including padding (PyTorch's default).
    pub count_include_pad: bool,
}

impl Pool2dConfig {
    /// A `k x k` window with stride `k`.
    pub fn new(k: usize) -> Self {
        Pool2dConfig {
            kernel: [k, k],
            stride: None,
            padding: [0, 0],
            ceil_mode: false,
            count_include_pad: true,
        }
    }
    pub fn with_stride(mut self, s: usize) -> Self {
        self.stride = Some([s, s]);
        self
    }
    pub fn with_pad(mut self, p: usize) -> Self {
        self.padding = [p, p];
        self
    }
    pub fn with_ceil_mode(mut self, c: bool) -> Self {
        self.ceil_mode = c;
        self
    }
    pub fn with_count_include_pad(mut self, c: bool) -> Self {
        self.count_include_pad = c;
        self
    }
}

/// Settings of a 1-D pooling window.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool1dConfig {
    pub kernel: usize,
    pub stride: Option<usize>,
    pub padding: usize,
    pub ceil_mode: bool,
    pub count_include_pad: bool,
}

impl Pool1dConfig {
    /// A window of `k` with stride `k`.
    pub fn new(k: usize) -> Self {
        Pool1dConfig {
            kernel: k,
            stride: None,
            padding: 0,
            ceil_mode: false,
            count_include_pad: true,
        }
    }
    fn to_2d(&self) -> Pool2dConfig {
        Pool2dConfig {
            kernel: [1, self.kernel],
            stride: Some([1, self.stride.unwrap_or(self.kernel)]),
            padding: [0, self.padding],
            ceil_mode: self.ceil_mode,
            count_include_pad: self.count_include_pad,
        }
    }
}

fn geometry(
    op: &'static str,
    xs: &[usize],
    cfg: &Pool2dConfig,
    dims_1d: bool,
) -> Result<Pool2dGeom> {
    let stride = cfg.stride.unwrap_or(cfg.kernel);
    let names = if dims_1d {
        ["", "length"]
    } else {
        ["height", "width"]
    };
    let mut outs = [0usize; 2];
    for i in 0..2 {
        let (k, s, p, n) = (cfg.kernel[i], stride[i], cfg.padding[i], xs[2 + i]);
        if k == 0 {
            return param_err(op, "pool_size", "must be positive");
        }
        if s == 0 {
            return param_err(op, "strides", "must be positive");
        }
        if p > k / 2 {
            return param_err(
                op,
                "padding",
                format!(
                    "{p} is more than half the pool size {k} along the {}",
                    names[i]
                ),
            );
        }
        outs[i] = pool_out_len(n, k, s, p, cfg.ceil_mode).ok_or_else(|| crate::error::Error::Param {
            op,
            param: "pool_size",
            msg: format!("a window of {k} does not fit the {} of {n} plus padding {p} on each side (input {xs:?})", names[i]),
        })?;
    }
    Ok(Pool2dGeom {
        n: xs[0],
        c: xs[1],
        h: xs[2],
        w: xs[3],
        k_h: cfg.kernel[0],
        k_w: cfg.kernel[1],
        stride_h: stride[0],
        stride_w: stride[1],
        pad_h: cfg.padding[0],
        pad_w: cfg.padding[1],
        out_h: outs[0],
        out_w: outs[1],
    })
}

fn max_pool_core(op: &'static str, x: &Tensor, g: Pool2dGeom) -> Tensor {
    let n_out = g.planes() * g.out_h * g.out_w;
    let mut y = vec![0f32; n_out];
    pool::max_forward(&g, &x.data(), &mut y);
    let shape = vec![g.n, g.c, g.out_h, g.out_w];
    let y = Tensor::make(y, shape.clone(), false, None);
    // Backward finds each maximum again from the saved input and output (no index buffer).
    let (xs, ys) = (x.clone(), y.clone());
    let node = make_node(op, &[x], move |gy| {
        let mut dx = vec![0f32; g.planes() * g.h * g.w];
        pool::max_backward_saved(&g, &xs.data(), &ys.data(), &gy.data(), &mut dx);
        Ok(vec![Some(Tensor::make(
            dx,
            xs.shape().to_vec(),
            false,
            None,
        ))])
    });
    y.with_shape(shape, node)
}

fn avg_pool_core(op: &'static str, x: &Tensor, g: Pool2dGeom, include_pad: bool) -> Tensor {
    let mut y = vec![0f32; g.planes() * g.out_h * g.out_w];
    pool::avg_forward(&g, &x.data(), &mut y, include_pad);
    let xs = x.shape().to_vec();
    output(op, y, vec![g.n, g.c, g.out_h, g.out_w], &[x], move |gy| {
        let mut dx = vec![0f32; g.planes() * g.h * g.w];
        pool::avg_backward(&g, &gy.data(), &mut dx, include_pad);
        Ok(vec![Some(Tensor::make(dx, xs, false, None))])
    })
}

/// 2-D max pooling.
///
/// # Shapes
/// x: `(n, c, h, w)` -> `(n, c, out_h, out_w)`, `out = floor((in + 2 * pad - k) / stride) + 1`
/// (ceil with `ceil_mode`).
pub fn max_pool2d(x: &Tensor, cfg: &Pool2dConfig) -> Result<Tensor> {
    expect_rank("max_pool2d", "input", x, 4, "(n, c, h, w)")?;
    let g = geometry("max_pool2d", x.shape(), cfg, false)?;
    Ok(max_pool_core("max_pool2d", x, g))
}

/// 2-D average pooling. Shapes as [`max_pool2d`].
pub fn avg_pool2d(x: &Tensor, cfg: &Pool2dConfig) -> Result<Tensor> {
    expect_rank("avg_pool2d", "input", x, 4, "(n, c, h, w)")?;
    let g = geometry("avg_pool2d", x.shape(), cfg, false)?;
    Ok(avg_pool_core("avg_pool2d", x, g, cfg.count_include_pad))
}

fn as_2d(x: &Tensor) -> Result<Tensor> {
    let s = x.shape();
    reshape(x, &[s[0], s[1], 1, s[2]])
}

fn from_2d(y: Tensor) -> Result<Tensor> {
    let s = y.shape().to_vec();
    reshape(&y, &[s[0], s[1], s[3]])
}

/// 1-D max pooling: `(n, c, l)` -> `(n, c, out_l)`.
pub fn max_pool1d(x: &Tensor, cfg: &Pool1dConfig) -> Result<Tensor> {
    expect_rank("max_pool1d", "input", x, 3, "(n, c, l)")?;
    let x4 = as_2d(x)?;
    let g = geometry("max_pool1d", x4.shape(), &cfg.to_2d(), true)?;
    from_2d(max_pool_core("max_pool1d", &x4, g))
}

/// 1-D average pooling: `(n, c, l)` -> `(n, c, out_l)`.
pub fn avg_pool1d(x: &Tensor, cfg: &Pool1dConfig) -> Result<Tensor> {
    expect_rank("avg_pool1d", "input", x, 3, "(n, c, l)")?;
    let x4 = as_2d(x)?;
    let g = geometry("avg_pool1d", x4.shape(), &cfg.to_2d(), true)?;
    from_2d(avg_pool_core("avg_pool1d", &x4, g, cfg.count_include_pad))
}

fn check_nonempty(op: &'static str, x: &Tensor) -> Result<()> {
    if x.shape()[2..].contains(&0) {
        return shape_err(
            op,
            format!("input {:?} has no positions to pool", x.shape()),
        );
    }
    Ok(())
}

/// Global average pooling over all positions: `(n, c, h, w)` -> `(n, c)`.
pub fn global_avg_pool2d(x: &Tensor) -> Result<Tensor> {
    expect_rank("global_avg_pool2d", "input", x, 4, "(n, c, h, w)")?;
    check_nonempty("global_avg_pool2d", x)?;
    mean(x, &[2, 3], false)
}

/// Global average pooling over time: `(n, c, l)` -> `(n, c)`.
pub fn global_avg_pool1d(x: &Tensor) -> Result<Tensor> {
    expect_rank("global_avg_pool1d", "input", x, 3, "(n, c, l)")?;
    check_nonempty("global_avg_pool1d", x)?;
    mean(x, &[2], false)
}

fn global_max(op: &'static str, x4: &Tensor) -> Result<Tensor> {
    let s = x4.shape().to_vec();
    let g = Pool2dGeom::global(s[0], s[1], s[2], s[3]);
    let y = max_pool_core(op, x4, g);
    reshape(&y, &[s[0], s[1]])
}

/// Global max pooling: `(n, c, h, w)` -> `(n, c)`.
pub fn global_max_pool2d(x: &Tensor) -> Result<Tensor> {
    expect_rank("global_max_pool2d", "input", x, 4, "(n, c, h, w)")?;
    check_nonempty("global_max_pool2d", x)?;
    global_max("global_max_pool2d", x)
}

/// Global max pooling over time: `(n, c, l)` -> `(n, c)`.
pub fn global_max_pool1d(x: &Tensor) -> Result<Tensor> {
    expect_rank("global_max_pool1d", "input", x, 3, "(n, c, l)")?;
    check_nonempty("global_max_pool1d", x)?;
    global_max("global_max_pool1d", &as_2d(x)?)
}

fn adaptive_core(op: &'static str, x4: &Tensor, out_h: usize, out_w: usize) -> Tensor {
    let s = x4.shape().to_vec();
    let planes = s[0] * s[1];
    let mut y = vec![0f32; planes * out_h * out_w];
    pool::adaptive_avg_forward(planes, s[2], s[3], out_h, out_w, &x4.data(), &mut y);
    output(op, y, vec![s[0], s[1], out_h, out_w], &[x4], move |gy| {
        let mut dx = vec![0f32; planes * s[2] * s[3]];
        pool::adaptive_avg_backward(planes, s[2], s[3], out_h, out_w, &gy.data(), &mut dx);
        Ok(vec![Some(Tensor::make(dx, s, false, None))])
    })
}

/// Adaptive average pooling to `(out_h, out_w)`: `(n, c, h, w)` -> `(n, c, out_h, out_w)`.
pub fn adaptive_avg_pool2d(x: &Tensor, out: [usize; 2]) -> Result<Tensor> {
    const OP: &str = "adaptive_avg_pool2d";
    expect_rank(OP, "input", x, 4, "(n, c, h, w)")?;
    check_nonempty(OP, x)?;
    if out.contains(&0) {
        return param_err(OP, "output_size", format!("{out:?} must be positive"));
    }
    Ok(adaptive_core(OP, x, out[0], out[1]))
}

/// Adaptive average pooling to `out_l`: `(n, c, l)` -> `(n, c, out_l)`.
pub fn adaptive_avg_pool1d(x: &Tensor, out_l: usize) -> Result<Tensor> {
    const OP: &str = "adaptive_avg_pool1d";
    expect_rank(OP, "input", x, 3, "(n, c, l)")?;
    check_nonempty(OP, x)?;
    if out_l == 0 {
        return param_err(OP, "output_size", "must be positive");
    }
    from_2d(adaptive_core(OP, &as_2d(x)?, 1, out_l))
}
