//! A [`Sequential`] as an ONNX model: one input `input` `(N, *input)` and one output `output`,
//! the batch axis dynamic (`N`), and the spatial axes too for a model that takes any size
//! (`L`, or `H` and `W`); weights as initializers.

use std::path::Path;

use prost::Message;

use super::graph::{Axis, Graph, value_info};
use super::proto::{ModelProto, OperatorSetIdProto, StringStringEntryProto};
use crate::error::{Error, Result};
use crate::nn::Sequential;

/// The opsets convnet writes (17 by default): 13 has every op it needs but LayerNormalization
/// (17) and the circular Pad (19); from 20, GELU is one node.
pub const MIN_OPSET: i64 = 13;
pub const MAX_OPSET: i64 = 21;
pub const DEFAULT_OPSET: i64 = 17;

/// The IR version an opset came with.
fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        _ => 10,
    }
}

/// The ONNX model of `model` at `opset` (`None`: 17).
pub fn export(model: &Sequential, opset: Option<i64>) -> Result<ModelProto> {
    let opset = opset.unwrap_or(DEFAULT_OPSET);
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Err(Error::Convert {
            at: "opset".into(),
            why: format!("{opset} is not written; {MIN_OPSET} to {MAX_OPSET}"),
        });
    }
    let mut g = Graph::new(opset);
    let mut x = "input".to_string();
    let mut shape = model.input.clone();
    for (i, layer) in model.layers().iter().enumerate() {
        g.at = format!("layers.{i}");
        x = layer.onnx(&mut g, &x, &shape)?;
        shape = layer.infer(&shape)?.output;
    }
    g.at.clear();
    let y = g.node("Identity", &[&x], vec![]);
    if let Some(n) = g.nodes.last_mut() {
        n.output = vec!["output".into()];
        n.name = "output".into();
    }
    let _ = y;
    let graph = super::proto::GraphProto {
        name: "convnet".into(),
        node: std::mem::take(&mut g.nodes),
        initializer: std::mem::take(&mut g.inits),
        input: vec![value_info("input", &input_dims(model))],
        output: vec![value_info("output", &output_dims(model)?)],
        ..Default::default()
    };
    Ok(ModelProto {
        ir_version: ir_version(opset),
        producer_name: "convnet".into(),
        producer_version: crate::VERSION.into(),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        graph: Some(graph),
        metadata_props: vec![StringStringEntryProto {
            key: "convnet.input".into(),
            value: format!("{:?}", model.input),
        }],
        ..Default::default()
    })
}

/// The input's axes: `N`, then the sizes, open ones named `L` or `H`, `W`.
fn input_dims(model: &Sequential) -> Vec<Axis> {
    let names: &[&str] = if model.input.len() == 2 {
        &["L"]
    } else {
        &["H", "W"]
    };
    let mut v = vec![Axis::Named("N".into())];
    for (i, &d) in model.input.iter().enumerate() {
        let open = i > 0 && model.any_size.get(i).copied().unwrap_or(false);
        v.push(match (open, names.get(i.saturating_sub(1))) {
            (true, Some(n)) => Axis::Named(n.to_string()),
            _ => Axis::Fixed(d),
        });
    }
    v
}

/// The output's axes: those that change with an open input size are named.
fn output_dims(model: &Sequential) -> Result<Vec<Axis>> {
    let out = model.output_shape().to_vec();
    let mut v = vec![Axis::Named("N".into())];
    let other = if model.any_size.iter().any(|&a| a) {
        let bigger: Vec<usize> = model
            .input
            .iter()
            .zip(&model.any_size)
            .map(|(&d, &a)| if a { d + 8 } else { d })
            .collect();
        Some(
            model
                .report_for(&bigger)?
                .last()
                .map(|r| r.output_shape.clone()),
        )
    } else {
        None
    };
    for (i, &d) in out.iter().enumerate() {
        let varies = other
            .as_ref()
            .and_then(|o| o.as_ref())
            .is_some_and(|o| o.get(i) != Some(&d));
        v.push(if varies {
            Axis::Named(format!("out{i}"))
        } else {
            Axis::Fixed(d)
        });
    }
    Ok(v)
}

/// Write the ONNX model of `model` to `path`.
pub fn save(model: &Sequential, path: &Path, opset: Option<i64>) -> Result<()> {
    let m = export(model, opset)?;
    crate::io::write_atomic(path, &m.encode_to_vec())
}
