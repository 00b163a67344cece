//! An ONNX CNN as a convnet spec and its weights. The graph must be what convnet can express:
//! a chain of layers from the one input to the one output, where a value used twice starts a
//! residual block (a body, and the value itself or a 1x1 convolution, added). Constant shape
//! arithmetic is evaluated first ([`super::fold`]); a padding before a convolution becomes its
//! padding; batch norms an exporter left after a shortcut's convolution are folded into it.
//! A node that does not fit is an error naming it, its op type and why.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use prost::Message;

use super::fold::{self, Const};
use super::nodes::{
    activation, conv_entry, conv_transpose, dense, pool, shortcut, transpose2, upsample,
};
use super::proto::{
    ModelProto, NodeProto, tensor_shape_proto::dimension::Value as Dim, type_proto,
};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// What an ONNX model becomes: a spec's text and the weights under the spec's names.
pub struct Imported {
    pub spec: String,
    pub state: BTreeMap<String, Tensor>,
    /// Nodes read, and nodes evaluated as constants.
    pub nodes: usize,
    pub folded: usize,
}

/// One `[[model.layers]]` entry: its keys (TOML values as written), its weights by local
/// name, and a residual block's body.
#[derive(Default)]
pub(super) struct Entry {
    pub(super) keys: Vec<(&'static str, String)>,
    pub(super) weights: Vec<(String, Tensor)>,
    pub(super) body: Vec<Entry>,
}

impl Entry {
    pub(super) fn of(kind: &str) -> Entry {
        Entry {
            keys: vec![("type", format!("\"{kind}\""))],
            ..Default::default()
        }
    }
    /// The `activation` key (and `alpha`, where the activation has one).
    fn activation(self, (name, alpha): (&str, Option<f32>)) -> Entry {
        let e = self.key("activation", format!("\"{name}\""));
        match alpha {
            Some(a) => e.key("alpha", a),
            None => e,
        }
    }
    pub(super) fn key(mut self, k: &'static str, v: impl std::fmt::Display) -> Entry {
        self.keys.push((k, v.to_string()));
        self
    }
}

pub(super) fn list(v: &[i64]) -> String {
    format!(
        "[{}]",
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

pub(super) struct Graph<'a> {
    nodes: Vec<&'a NodeProto>,
    consts: HashMap<String, Const>,
    consumers: HashMap<String, Vec<usize>>,
    output: String,
}

pub(super) fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a super::proto::AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}
pub(super) fn ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}
pub(super) fn int(n: &NodeProto, name: &str, d: i64) -> i64 {
    attr(n, name).map_or(d, |a| a.i)
}
pub(super) fn float(n: &NodeProto, name: &str, d: f32) -> f32 {
    attr(n, name).map_or(d, |a| a.f)
}
pub(super) fn string(n: &NodeProto, name: &str, d: &str) -> String {
    attr(n, name).map_or(d.to_string(), |a| {
        String::from_utf8_lossy(&a.s).into_owned()
    })
}

/// The error for node `n`.
pub(super) fn refuse(n: &NodeProto, why: impl Into<String>) -> Error {
    let name = if n.name.is_empty() {
        n.output.first().cloned().unwrap_or_default()
    } else {
        n.name.clone()
    };
    Error::Convert {
        at: format!("node `{name}` ({})", n.op_type),
        why: why.into(),
    }
}

impl<'a> Graph<'a> {
    pub(super) fn weight(&self, n: &NodeProto, i: usize) -> Result<Tensor> {
        let name = n
            .input
            .get(i)
            .ok_or_else(|| refuse(n, format!("input {i} is missing")))?;
        let c = self.consts.get(name).ok_or_else(|| {
            refuse(
                n,
                format!("input `{name}` is not a constant (an initializer)"),
            )
        })?;
        Tensor::from_vec(c.floats(), &c.dims)
    }
    pub(super) fn constant(&self, n: &NodeProto, i: usize) -> Option<&Const> {
        n.input
            .get(i)
            .filter(|s| !s.is_empty())
            .and_then(|s| self.consts.get(s))
    }
    /// The nodes reading `value`.
    fn users(&self, value: &str) -> Vec<usize> {
        self.consumers.get(value).cloned().unwrap_or_default()
    }
    /// The one node reading `value`, if exactly one does.
    fn only_user(&self, value: &str) -> Option<&'a NodeProto> {
        match self.users(value).as_slice() {
            [i] => Some(self.nodes[*i]),
            _ => None,
        }
    }
    fn is_join(&self, n: &NodeProto) -> bool {
        n.op_type == "Add"
            && n.input.len() == 2
            && n.input.iter().all(|i| !self.consts.contains_key(i))
    }
}

/// Read the ONNX model at `path` as a spec and weights.
pub fn import(path: &Path) -> Result<Imported> {
    let bytes = crate::limits::read_file(path, 3)?;
    let fail = |msg: String| Error::Format {
        path: path.display().to_string(),
        msg,
    };
    let model = ModelProto::decode(bytes.as_slice())
        .map_err(|e| fail(format!("not an ONNX model (protobuf): {e}")))?;
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| fail("no graph".into()))?;
    if let Some(o) = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        && !(7..=23).contains(&o.version)
    {
        return Err(fail(format!("opset {} is not read (7 to 23)", o.version)));
    }
    let mut consts = HashMap::new();
    for t in &g.initializer {
        let c = fold::tensor(t).map_err(|e| fail(format!("initializer `{}`: {e}", t.name)))?;
        consts.insert(t.name.clone(), c);
    }
    let inputs: Vec<_> = g
        .input
        .iter()
        .filter(|i| !consts.contains_key(&i.name))
        .collect();
    let [input] = inputs.as_slice() else {
        return Err(fail(format!(
            "{} inputs; convnet models take one",
            inputs.len()
        )));
    };
    let [output] = g.output.as_slice() else {
        return Err(fail(format!(
            "{} outputs; convnet models give one",
            g.output.len()
        )));
    };
    let (live, folded) = fold_constants(&g.node, &mut consts)?;
    let consumers = consumers_of(&live, &consts);
    let graph = Graph {
        nodes: live,
        consts,
        consumers,
        output: output.name.clone(),
    };
    let shape = input_shape(input).map_err(fail)?;
    let mut walk = Walk {
        g: &graph,
        rank: shape.len() + 1,
        taken: Default::default(),
    };
    let (entries, end) = walk.chain(&input.name, None, None)?;
    if end != graph.output {
        return Err(fail(format!(
            "the chain of layers ends at `{end}`, not at the output `{}`",
            graph.output
        )));
    }
    let mut spec = String::new();
    let dims: Vec<String> = shape
        .iter()
        .map(|d| d.map_or("\"any\"".into(), |v| v.to_string()))
        .collect();
    let _ = writeln!(
        spec,
        "# imported from {}",
        path.file_name().unwrap_or_default().to_string_lossy()
    );
    let _ = writeln!(spec, "[model]\ninput = [{}]", dims.join(", "));
    let mut state = BTreeMap::new();
    write_entries(&mut spec, &mut state, &entries, "model.layers", "layers.");
    Ok(Imported {
        spec,
        state,
        nodes: graph.nodes.len(),
        folded,
    })
}

/// The nodes computed from constants alone, evaluated into `consts` (their count returned),
/// and the others, in order.
fn fold_constants<'a>(
    nodes: &'a [NodeProto],
    consts: &mut HashMap<String, Const>,
) -> Result<(Vec<&'a NodeProto>, usize)> {
    let mut live = Vec::new();
    let mut folded = 0;
    for n in nodes {
        match fold::fold(n, consts).map_err(|e| refuse(n, e))? {
            Some(c) if n.output.len() == 1 => {
                consts.insert(n.output[0].clone(), c);
                folded += 1;
            }
            _ => live.push(n),
        }
    }
    Ok((live, folded))
}

/// For every value that is not a constant, the nodes (indices into `live`) that read it.
fn consumers_of(
    live: &[&NodeProto],
    consts: &HashMap<String, Const>,
) -> HashMap<String, Vec<usize>> {
    let mut consumers: HashMap<String, Vec<usize>> = HashMap::new();
    for (k, n) in live.iter().enumerate() {
        for i in n
            .input
            .iter()
            .filter(|i| !i.is_empty() && !consts.contains_key(*i))
        {
            consumers.entry(i.clone()).or_default().push(k);
        }
    }
    consumers
}

/// The per-sample input shape (`None`: a size given at run time).
fn input_shape(
    v: &super::proto::ValueInfoProto,
) -> std::result::Result<Vec<Option<usize>>, String> {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(format!("input `{}` is not a tensor", v.name));
    };
    let dims = t.shape.as_ref().map(|s| s.dim.clone()).unwrap_or_default();
    if !(3..=4).contains(&dims.len()) {
        return Err(format!(
            "input `{}` has {} axes; convnet reads (N, C, L) and (N, C, H, W)",
            v.name,
            dims.len()
        ));
    }
    Ok(dims[1..]
        .iter()
        .map(|d| match d.value {
            Some(Dim::DimValue(n)) if n > 0 => Some(n as usize),
            _ => None,
        })
        .collect())
}

fn write_entries(
    spec: &mut String,
    state: &mut BTreeMap<String, Tensor>,
    entries: &[Entry],
    table: &str,
    prefix: &str,
) {
    for (i, e) in entries.iter().enumerate() {
        let _ = writeln!(spec, "\n[[{table}]]");
        for (k, v) in &e.keys {
            let _ = writeln!(spec, "{k} = {v}");
        }
        for (name, t) in &e.weights {
            state.insert(format!("{prefix}{i}.{name}"), t.clone());
        }
        write_entries(
            spec,
            state,
            &e.body,
            &format!("{table}.layers"),
            &format!("{prefix}{i}.body."),
        );
    }
}

/// A walk down the graph, with the rank of the current value and the nodes taken so far.
struct Walk<'g, 'a> {
    g: &'g Graph<'a>,
    rank: usize,
    taken: std::collections::HashSet<*const NodeProto>,
}

impl<'a> Walk<'_, 'a> {
    /// The layers from `value` on (through `first` when given, for a value read twice) until
    /// `until` or the graph's end; the entries and the value reached.
    fn chain(
        &mut self,
        value: &str,
        first: Option<&NodeProto>,
        until: Option<&str>,
    ) -> Result<(Vec<Entry>, String)> {
        let mut v = value.to_string();
        let mut out = Vec::new();
        let mut next = first.map(|n| n as *const NodeProto);
        loop {
            if Some(v.as_str()) == until || v == self.g.output && until.is_none() {
                return Ok((out, v));
            }
            let users = self.g.users(&v);
            let node = match (next.take(), users.len()) {
                (Some(p), _) => users
                    .iter()
                    .map(|&i| self.g.nodes[i])
                    .find(|n| std::ptr::eq(*n, p)),
                (None, 1) => Some(self.g.nodes[users[0]]),
                (None, 0) => return Ok((out, v)),
                (None, 2) => {
                    let (e, after) = self.residual(&v)?;
                    out.push(e);
                    v = after;
                    continue;
                }
                (None, k) => {
                    let n = self.g.nodes[users[0]];
                    return Err(refuse(
                        n,
                        format!("`{v}` is read by {k} nodes; a residual block reads it twice"),
                    ));
                }
            };
            let Some(n) = node else {
                return Err(Error::Convert {
                    at: v,
                    why: "the walk lost its way".into(),
                });
            };
            if self.g.is_join(n) {
                return Ok((out, v));
            }
            if !self.taken.insert(n as *const NodeProto) {
                return Err(refuse(n, "the graph comes back to this node (a cycle)"));
            }
            let (entry, after) = self.layer(n)?;
            out.extend(entry);
            v = after;
        }
    }

    /// A value read by two nodes that meet again at an Add: the residual block, and the value
    /// after it (after its activation, when one follows).
    fn residual(&mut self, v: &str) -> Result<(Entry, String)> {
        let g = self.g;
        let users: Vec<&'a NodeProto> = g.users(v).iter().map(|&i| g.nodes[i]).collect();
        // the shortcut: the Add itself, or a 1x1 convolution (and a batch norm) into it
        let leads_to_add = |n: &'a NodeProto| -> Option<(Vec<&'a NodeProto>, &'a NodeProto)> {
            let mut path = Vec::new();
            let mut cur = n;
            for _ in 0..3 {
                if g.is_join(cur) {
                    return Some((path, cur));
                }
                path.push(cur);
                cur = g.only_user(cur.output.first()?)?;
            }
            None
        };
        let (short, body_start, join) = match (leads_to_add(users[0]), leads_to_add(users[1])) {
            (Some((p, j)), _) if p.is_empty() || p.len() <= 2 && p[0].op_type == "Conv" => {
                (p, users[1], j)
            }
            (_, Some((p, j))) if p.is_empty() || p.len() <= 2 && p[0].op_type == "Conv" => {
                (p, users[0], j)
            }
            _ => {
                return Err(refuse(
                    users[0],
                    format!("`{v}` is read twice but not by a residual block"),
                ));
            }
        };
        let join_inputs = join.input.clone();
        let short_end = short.last().map_or(v.to_string(), |n| n.output[0].clone());
        let body_end = join_inputs
            .iter()
            .find(|i| **i != short_end)
            .cloned()
            .unwrap_or_default();
        let rank = self.rank;
        let (body, reached) = self.chain(v, Some(body_start), Some(&body_end))?;
        if reached != body_end {
            return Err(refuse(
                join,
                "the residual body does not end at the addition",
            ));
        }
        self.rank = rank;
        let mut e = Entry::of("residual");
        if let Some(conv) = short.first() {
            e.weights = shortcut(g, conv, short.get(1).copied())?;
        }
        let mut after = join.output[0].clone();
        if let Some(n) = g.only_user(&after)
            && let Some(a) = activation(n)?
        {
            e = e.activation(a);
            after = n.output[0].clone();
        }
        e.body = body;
        Ok((e, after))
    }

    /// The layer node `n` starts (with the nodes it takes along), and the value after them.
    fn layer(&mut self, n: &NodeProto) -> Result<(Option<Entry>, String)> {
        let g = self.g;
        let out = n.output[0].clone();
        let spatial = self.rank.saturating_sub(2);
        if let Some(a) = activation(n)? {
            return Ok((Some(Entry::of("activation").activation(a)), out));
        }
        Ok(match n.op_type.as_str() {
            "Identity" | "Dropout" => (None, out),
            "Pad" => self.pad_then_conv(n)?,
            "Conv" => (
                Some(conv_entry(g, n, &vec![(0, 0); spatial], "zeros")?),
                out,
            ),
            "ConvTranspose" => (Some(conv_transpose(g, n)?), out),
            "BatchNormalization" => {
                let mut e = Entry::of("batch_norm").key("epsilon", float(n, "epsilon", 1e-5));
                e.weights = ["weight", "bias", "running_mean", "running_var"]
                    .iter()
                    .enumerate()
                    .map(|(i, w)| Ok((w.to_string(), g.weight(n, i + 1)?)))
                    .collect::<Result<_>>()?;
                (Some(e), out)
            }
            "MaxPool" | "AveragePool" => (Some(pool(n, spatial)?), out),
            "GlobalAveragePool" | "GlobalMaxPool" | "ReduceMean" | "ReduceMax" => {
                self.global_pool(n)?
            }
            "Flatten" => {
                if int(n, "axis", 1) != 1 {
                    return Err(refuse(n, "a flatten from an axis other than 1"));
                }
                self.rank = 2;
                (Some(Entry::of("flatten")), out)
            }
            "Reshape" => self.reshape(n)?,
            "Gemm" => {
                if int(n, "transA", 0) != 0
                    || float(n, "alpha", 1.0) != 1.0
                    || float(n, "beta", 1.0) != 1.0
                {
                    return Err(refuse(n, "a Gemm with transA, alpha or beta"));
                }
                let w = transpose2(&g.weight(n, 1)?)?;
                let w = if int(n, "transB", 0) == 1 {
                    transpose2(&w)?
                } else {
                    w
                };
                let b = g.constant(n, 2).map(|_| g.weight(n, 2)).transpose()?;
                (Some(dense(w, b)), out)
            }
            "MatMul" => {
                let w = transpose2(&g.weight(n, 1)?)?;
                match g
                    .only_user(&out)
                    .filter(|a| a.op_type == "Add" && !g.is_join(a))
                {
                    Some(add) => {
                        let i = add.input.iter().position(|x| *x != out).unwrap_or(1);
                        (
                            Some(dense(w, Some(g.weight(add, i)?))),
                            add.output[0].clone(),
                        )
                    }
                    None => (Some(dense(w, None)), out),
                }
            }
            "Resize" | "Upsample" => (Some(upsample(g, n)?), out),
            op => return Err(refuse(n, format!("{op} has no convnet layer"))),
        })
    }
}

impl Walk<'_, '_> {
    /// A Pad node and the convolution after it, as one convolution with that padding.
    fn pad_then_conv(&mut self, n: &NodeProto) -> Result<(Option<Entry>, String)> {
        let g = self.g;
        let out = n.output[0].clone();
        let conv = g
            .only_user(&out)
            .filter(|c| c.op_type == "Conv")
            .ok_or_else(|| refuse(n, "a padding is read here only before a convolution"))?;
        let pads = match g.constant(n, 1) {
            Some(c) => c.ints(),
            None => ints(n, "pads").unwrap_or_default(),
        };
        if g.constant(n, 2)
            .is_some_and(|c| c.floats().iter().any(|&v| v != 0.0))
        {
            return Err(refuse(n, "a constant padding other than 0"));
        }
        let r = pads.len() / 2;
        if r != self.rank || pads[..2].iter().chain(&pads[r..r + 2]).any(|&p| p != 0) {
            return Err(refuse(
                n,
                format!("pads {pads:?}: only the spatial axes are padded here"),
            ));
        }
        let mode = match string(n, "mode", "constant").as_str() {
            "constant" => "zeros",
            "reflect" => "reflect",
            "edge" => "replicate",
            "wrap" => "circular",
            m => return Err(refuse(n, format!("mode {m}"))),
        };
        let extra: Vec<(i64, i64)> = (2..r).map(|a| (pads[a], pads[r + a])).collect();
        Ok((
            Some(conv_entry(g, conv, &extra, mode)?),
            conv.output[0].clone(),
        ))
    }

    /// Global pooling: its node and the flatten after it, or a mean or max over the spatial axes.
    fn global_pool(&mut self, n: &NodeProto) -> Result<(Option<Entry>, String)> {
        let g = self.g;
        let out = n.output[0].clone();
        let kind = if n.op_type.contains("Max") {
            "global_max_pool"
        } else {
            "global_avg_pool"
        };
        if n.op_type.starts_with("Reduce") {
            let axes = g
                .constant(n, 1)
                .map(|c| c.ints())
                .or_else(|| ints(n, "axes"))
                .unwrap_or_default();
            let rank = self.rank as i64;
            let mut a: Vec<i64> = axes.iter().map(|&x| x.rem_euclid(rank)).collect();
            a.sort();
            if a != (2..rank).collect::<Vec<_>>() || int(n, "keepdims", 1) != 0 {
                return Err(refuse(
                    n,
                    "only a mean or max over every spatial axis, not kept, is global pooling",
                ));
            }
            self.rank = 2;
            return Ok((Some(Entry::of(kind)), out));
        }
        // (N, C, 1, 1) then flattened: convnet's global pooling gives (N, C)
        let flat = g
            .only_user(&out)
            .filter(|f| matches!(f.op_type.as_str(), "Flatten" | "Reshape" | "Squeeze"))
            .ok_or_else(|| refuse(n, "global pooling is read here when flattened right after"))?;
        self.rank = 2;
        Ok((Some(Entry::of(kind)), flat.output[0].clone()))
    }

    /// A Reshape to a constant shape, the batch axis first: a flatten, or a reshape.
    fn reshape(&mut self, n: &NodeProto) -> Result<(Option<Entry>, String)> {
        let g = self.g;
        let out = n.output[0].clone();
        let shape = g
            .constant(n, 1)
            .ok_or_else(|| refuse(n, "a shape computed at run time"))?
            .ints();
        if shape.len() < 2 || !matches!(shape[0], 0 | -1) && shape[1..].contains(&-1) {
            return Err(refuse(
                n,
                format!("shape {shape:?}: the batch axis must stay first"),
            ));
        }
        self.rank = shape.len();
        Ok(if shape.len() == 2 {
            (Some(Entry::of("flatten")), out)
        } else {
            (
                Some(Entry::of("reshape").key("target_shape", list(&shape[1..]))),
                out,
            )
        })
    }
}
