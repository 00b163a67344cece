//! ONNX: a model written as an ONNX graph ([`export`]), every layer by its `Layer::onnx`
//! (the nodes in [`layers`]), through the message types generated from the ONNX schema
//! ([`proto`]).

mod export;
mod fold;
mod graph;
mod import;
pub mod layers;
mod nodes;

pub use import::{Imported, import};

pub use export::{DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, export, save};
pub use graph::Graph;

/// The ONNX messages, generated from proto/onnx.proto3 by build.rs.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

/// Import the ONNX model at `path` as the run directory `out` (absent or empty): its spec, its
/// weights, a run.json without normalisation; `eval` (once the spec has `[data]`),
/// `predict`, `explain`, `summary` and `export` take it.
pub fn import_run(path: &std::path::Path, out: &std::path::Path) -> crate::Result<Imported> {
    let imported = import(path)?;
    let spec = crate::spec::Spec::parse(&imported.spec, &out.join("spec.toml"))?;
    let model = spec.build_model(&mut crate::Rng::new(0))?;
    model.load_state_dict(&imported.state, &path.display().to_string())?;
    crate::train::rundir::write_imported(&spec, &model, None, out)?;
    Ok(imported)
}
