//! The differentiable ops. Each file owns an op family: its settings, shape checks, forward
//! call and backward closure. Every public op validates its inputs and returns a `Result`.
//!
//! To add an op: write it in the file of its family (or a new file with a `mod` line here),
//! record its backward with `autograd::output`, add it to [`OPS`], and add a gradient-check
//! and a golden case (tests/gradcheck.rs, tools/make_golden.py).

pub mod activation;
pub mod conv;
pub mod conv_transpose;
pub mod dropout;
pub mod elementwise;
pub mod linear;
pub mod loss;
pub mod norm;
pub mod pool;
pub mod reduce;
pub mod shape;
pub mod upsample;

use crate::error::{Result, shape_err};
use crate::tensor::Tensor;

/// Checks that `what` (input, weight) of `op` has `rank` dimensions laid out as `layout`.
pub(crate) fn expect_rank(
    op: &'static str,
    what: &str,
    t: &Tensor,
    rank: usize,
    layout: &str,
) -> Result<()> {
    if t.rank() != rank {
        return shape_err(
            op,
            format!("{what} must be {layout}, got shape {:?}", t.shape()),
        );
    }
    Ok(())
}

/// The inputs of a layer op (input, weight, optional bias) in the order its backward returns
/// their gradients, and which of them need one.
pub(crate) struct LayerInputs<'a> {
    pub list: Vec<&'a Tensor>,
    pub grad_x: bool,
    pub grad_w: bool,
    pub grad_b: bool,
    pub has_b: bool,
}

impl<'a> LayerInputs<'a> {
    pub fn new(x: &'a Tensor, w: &'a Tensor, b: Option<&'a Tensor>) -> Self {
        let mut list = vec![x, w];
        list.extend(b);
        LayerInputs {
            list,
            grad_x: x.requires_grad(),
            grad_w: w.requires_grad(),
            grad_b: b.is_some_and(|b| b.requires_grad()),
            has_b: b.is_some(),
        }
    }
}

pub use activation::{
    Pointwise, abs, elu, exp, gelu, leaky_relu, log, log_softmax, neg, pointwise, relu, sigmoid,
    softmax, sqrt, tanh,
};
pub use conv::{Conv1dConfig, Conv2dConfig, Padding, conv1d, conv2d, same_padding};
pub use conv_transpose::{
    ConvTranspose1dConfig, ConvTranspose2dConfig, conv_transpose_out_len, conv_transpose1d,
    conv_transpose2d,
};
pub use dropout::{dropout, spatial_dropout};
pub use elementwise::{add, add_scalar, broadcast_to, div, mul, mul_scalar, sub, sum_to_shape};
pub use linear::{linear, matmul};
pub use loss::{
    CrossEntropyOptions, PointLoss, binary_cross_entropy_with_logits, cross_entropy, huber, mae,
    mse,
};
pub use norm::{BatchNormArgs, batch_norm, filter_norms, layer_norm, weight_norm};
pub use pool::{
    Pool1dConfig, Pool2dConfig, adaptive_avg_pool1d, adaptive_avg_pool2d, avg_pool1d, avg_pool2d,
    global_avg_pool1d, global_avg_pool2d, global_max_pool1d, global_max_pool2d, max_pool1d,
    max_pool2d,
};
pub use reduce::{mean, mean_all, sum, sum_all};
pub use shape::{PadMode, concat, flatten, pad, permute, reshape, slice, transpose};
pub use upsample::{UpsampleMode, upsample1d, upsample2d};

/// Every op, by family, as `convnet ops` lists them.
pub const OPS: &[(&str, &[&str])] = &[
    (
        "convolution",
        &["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d"],
    ),
    (
        "pooling",
        &[
            "max_pool1d",
            "max_pool2d",
            "avg_pool1d",
            "avg_pool2d",
            "global_avg_pool1d",
            "global_avg_pool2d",
            "global_max_pool1d",
            "global_max_pool2d",
            "adaptive_avg_pool1d",
            "adaptive_avg_pool2d",
        ],
    ),
    (
        "upsampling",
        &[
            "upsample_nearest1d",
            "upsample_linear1d",
            "upsample_nearest2d",
            "upsample_bilinear2d",
        ],
    ),
    ("linear algebra", &["matmul", "linear"]),
    (
        "arithmetic",
        &[
            "add",
            "sub",
            "mul",
            "div",
            "add_scalar",
            "mul_scalar",
            "broadcast_to",
            "sum_to_shape",
        ],
    ),
    ("reduction", &["sum", "mean", "sum_all", "mean_all"]),
    (
        "shape",
        &[
            "reshape",
            "flatten",
            "permute",
            "transpose",
            "concat",
            "slice",
            "pad",
        ],
    ),
    (
        "activation",
        &[
            "relu",
            "leaky_relu",
            "elu",
            "gelu",
            "sigmoid",
            "tanh",
            "softmax",
            "log_softmax",
            "exp",
            "log",
            "sqrt",
            "neg",
            "abs",
        ],
    ),
    ("regularisation", &["dropout", "spatial_dropout"]),
    (
        "normalisation",
        &["batch_norm", "layer_norm", "weight_norm"],
    ),
    (
        "loss",
        &[
            "cross_entropy",
            "binary_cross_entropy_with_logits",
            "mse",
            "mae",
            "huber",
        ],
    ),
];
