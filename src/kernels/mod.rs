//! Kernels: plain functions on slices, with their geometry in small structs. They know nothing
//! of tensors or autograd, assume validated input (`debug_assert!` only), and are each tested
//! against a direct reference loop. A second backend would replace this module.

pub mod conv;
pub mod depthwise;
pub mod gemm;
pub mod pool;
