//! ONNX: a model written as an ONNX graph ([`export`]), every layer by its `Layer::onnx`
//! (the nodes in [`layers`]), through the message types generated from the ONNX schema
//! ([`proto`]).

mod export;
mod graph;
pub mod layers;

pub use export::{DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, export, save};
pub use graph::Graph;

/// The ONNX messages, generated from proto/onnx.proto3 by build.rs.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}
