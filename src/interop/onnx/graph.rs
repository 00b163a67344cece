//! Building an ONNX graph: unique value names, initializers, nodes with their attributes, and
//! the typed inputs and outputs (a dynamic batch axis, dynamic spatial axes where the model
//! takes any size).

use super::proto::{
    AttributeProto, NodeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::Dimension,
    tensor_shape_proto::dimension::Value as Dim, type_proto,
};
use crate::error::Error;
use crate::tensor::Tensor;

/// A graph being written: nodes in order, initializers, and the opset they are written for.
pub struct Graph {
    pub opset: i64,
    pub nodes: Vec<NodeProto>,
    pub inits: Vec<TensorProto>,
    /// Where in the model the layer being written is (`layers.3`), for names and errors.
    pub at: String,
    used: std::collections::HashSet<String>,
}

/// An attribute: `ints("strides", &[1, 1])`.
pub fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

pub fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

pub fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f: v,
        ..Default::default()
    }
}

pub fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// `usize` values as ONNX's int64.
pub fn i64s(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&x| x as i64).collect()
}

impl Graph {
    pub fn new(opset: i64) -> Graph {
        Graph {
            opset,
            nodes: Vec::new(),
            inits: Vec::new(),
            at: String::new(),
            used: Default::default(),
        }
    }

    /// A value name not used before, from `hint` under the current layer (`layers.3/conv`).
    pub fn fresh(&mut self, hint: &str) -> String {
        let base = if self.at.is_empty() {
            hint.to_string()
        } else {
            format!("{}/{hint}", self.at)
        };
        let mut name = base.clone();
        let mut k = 1;
        while !self.used.insert(name.clone()) {
            name = format!("{base}_{k}");
            k += 1;
        }
        name
    }

    /// The error for what the current layer cannot express.
    pub fn cannot(&self, why: impl Into<String>) -> Error {
        Error::Convert {
            at: self.at.clone(),
            why: why.into(),
        }
    }

    /// A float initializer holding `t`, named after `hint`.
    pub fn weight(&mut self, hint: &str, t: &Tensor) -> String {
        let name = self.fresh(hint);
        self.inits.push(TensorProto {
            name: name.clone(),
            dims: i64s(t.shape()),
            data_type: DataType::Float as i32,
            raw_data: t.data().iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// An int64 initializer (shapes, indices, axes).
    pub fn int64s(&mut self, hint: &str, dims: &[i64], values: &[i64]) -> String {
        let name = self.fresh(hint);
        self.inits.push(TensorProto {
            name: name.clone(),
            dims: dims.to_vec(),
            data_type: DataType::Int64 as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// A float initializer of `values` shaped `dims`.
    pub fn floats(&mut self, hint: &str, dims: &[i64], values: &[f32]) -> String {
        let name = self.fresh(hint);
        self.inits.push(TensorProto {
            name: name.clone(),
            dims: dims.to_vec(),
            data_type: DataType::Float as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// A node `op(inputs)` with `attrs`; returns its output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.nodes.push(NodeProto {
            name: out.clone(),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            attribute: attrs,
            ..Default::default()
        });
        out
    }
}

/// An axis of a graph's input or output: a size, or a name for a size given at run time.
#[derive(Clone, Debug, PartialEq)]
pub enum Axis {
    Fixed(usize),
    Named(String),
}

/// A float tensor value named `name` with `dims`.
pub fn value_info(name: &str, dims: &[Axis]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Axis::Fixed(n) => Dim::DimValue(*n as i64),
                Axis::Named(p) => Dim::DimParam(p.clone()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
