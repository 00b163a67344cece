//! convnet: convolutional neural networks in Rust, exact to PyTorch's numbers.
//!
//! The crate is layered: [`kernels`] are plain functions on slices (im2col + GEMM convolution,
//! direct depthwise and pooling loops); [`ops`] wrap them as differentiable operations on
//! [`Tensor`]s, with shape checks and backward rules; [`autograd`] records and walks the graph.
//!
//! ```
//! use convnet::{Tensor, ops, Rng};
//! let mut rng = Rng::new(0);
//! let x = Tensor::randn(&[2, 3, 8, 8], &mut rng).unwrap();
//! let w = Tensor::randn(&[4, 3, 3, 3], &mut rng).unwrap().requires_grad_();
//! let y = ops::conv2d(&x, &w, None, &ops::Conv2dConfig::default().with_padding(ops::Padding::Same)).unwrap();
//! assert_eq!(y.shape(), &[2, 4, 8, 8]);
//! ops::sum_all(&ops::relu(&y).unwrap()).unwrap().backward().unwrap();
//! assert_eq!(w.grad().unwrap().shape(), &[4, 3, 3, 3]);
//! ```

pub mod autograd;
pub mod data;
pub mod dist;
pub mod error;
pub mod explain;
pub mod init;
pub mod interop;
pub mod io;
pub mod kernels;
pub mod limits;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod plan;
pub mod rng;
pub mod spec;
pub mod tensor;
pub mod train;

pub use autograd::{NoGradGuard, is_grad_enabled, no_grad};
pub use error::{Error, Result};
pub use rng::Rng;
pub use tensor::Tensor;

/// The library's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
