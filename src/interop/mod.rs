//! Models and weights to and from other tools: PyTorch state dicts ([`torch`]).

pub mod onnx;
pub mod torch;
