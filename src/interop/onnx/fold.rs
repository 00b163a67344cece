//! The constant values of an ONNX graph: its initializers, its `Constant` nodes, and what the
//! shape arithmetic exporters write (PyTorch's padding sizes: ConstantOfShape, Concat,
//! Reshape, Slice, Transpose, Cast, ...) computes from them, evaluated once at import.

use std::collections::HashMap;

use super::proto::{NodeProto, TensorProto, tensor_proto::DataType};

/// A constant: its dimensions and values (floats or integers).
#[derive(Clone, Debug, PartialEq)]
pub struct Const {
    pub dims: Vec<usize>,
    pub values: Values,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl Const {
    pub fn ints(&self) -> Vec<i64> {
        match &self.values {
            Values::I64(v) => v.clone(),
            Values::F32(v) => v.iter().map(|&x| x as i64).collect(),
        }
    }
    pub fn floats(&self) -> Vec<f32> {
        match &self.values {
            Values::F32(v) => v.clone(),
            Values::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
    fn len(&self) -> usize {
        match &self.values {
            Values::F32(v) => v.len(),
            Values::I64(v) => v.len(),
        }
    }
    /// Element `i` kept, as a constant of the same kind.
    fn pick(&self, idx: &[usize], dims: Vec<usize>) -> Const {
        Const {
            dims,
            values: match &self.values {
                Values::F32(v) => Values::F32(idx.iter().map(|&i| v[i]).collect()),
                Values::I64(v) => Values::I64(idx.iter().map(|&i| v[i]).collect()),
            },
        }
    }
}

/// A tensor's values, or why they cannot be read.
pub fn tensor(t: &TensorProto) -> Result<Const, String> {
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("dimension {d}")))
        .collect::<Result<_, _>>()?;
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("too many values")?;
    crate::limits::check(&format!("tensor `{}`", t.name), crate::limits::f32_bytes(n))
        .map_err(|e| e.to_string())?;
    let raw = &t.raw_data;
    let values = match DataType::try_from(t.data_type) {
        Ok(DataType::Float) if !raw.is_empty() => Values::F32(
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ),
        Ok(DataType::Float) => Values::F32(t.float_data.clone()),
        Ok(DataType::Double) if !raw.is_empty() => Values::F32(
            raw.chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
        ),
        Ok(DataType::Double) => Values::F32(t.double_data.iter().map(|&v| v as f32).collect()),
        Ok(DataType::Int64) if !raw.is_empty() => Values::I64(
            raw.chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                .collect(),
        ),
        Ok(DataType::Int64) => Values::I64(t.int64_data.clone()),
        Ok(DataType::Int32) if !raw.is_empty() => Values::I64(
            raw.chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
                .collect(),
        ),
        Ok(DataType::Int32) => Values::I64(t.int32_data.iter().map(|&v| v as i64).collect()),
        other => return Err(format!("data type {other:?} is not read")),
    };
    let c = Const { dims, values };
    if c.len() != n {
        return Err(format!(
            "holds {} values for dimensions {:?}",
            c.len(),
            c.dims
        ));
    }
    if let Values::F32(v) = &c.values
        && v.iter().any(|x| !x.is_finite())
    {
        return Err("holds a value that is not finite".into());
    }
    Ok(c)
}

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a super::proto::AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

/// Strides of row-major `dims`.
fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// The output of `n` when every input is a constant in `known` and its op is one of the
/// shape-arithmetic ops folded here; `None` otherwise.
pub fn fold(n: &NodeProto, known: &HashMap<String, Const>) -> Result<Option<Const>, String> {
    let inputs: Option<Vec<&Const>> = n
        .input
        .iter()
        .filter(|i| !i.is_empty())
        .map(|i| known.get(i))
        .collect();
    let Some(x) = inputs else {
        return Ok(None);
    };
    let ints = |name: &str| attr(n, name).map(|a| a.ints.clone());
    let int = |name: &str, d: i64| attr(n, name).map_or(d, |a| a.i);
    Ok(Some(match n.op_type.as_str() {
        "Constant" => match attr(n, "value").and_then(|a| a.t.as_ref()) {
            Some(t) => tensor(t)?,
            None => match (
                attr(n, "value_ints"),
                attr(n, "value_int"),
                attr(n, "value_float"),
            ) {
                (Some(a), _, _) => Const {
                    dims: vec![a.ints.len()],
                    values: Values::I64(a.ints.clone()),
                },
                (_, Some(a), _) => Const {
                    dims: vec![],
                    values: Values::I64(vec![a.i]),
                },
                (_, _, Some(a)) => Const {
                    dims: vec![],
                    values: Values::F32(vec![a.f]),
                },
                _ => return Err("a Constant of a kind not read".into()),
            },
        },
        "Identity" | "Cast" if x.len() == 1 => {
            let to = int("to", DataType::Int64 as i32 as i64);
            let mut c = x[0].clone();
            if n.op_type == "Cast" {
                c.values = if to == DataType::Float as i64 || to == DataType::Double as i64 {
                    Values::F32(c.floats())
                } else {
                    Values::I64(c.ints())
                };
            }
            c
        }
        "ConstantOfShape" if x.len() == 1 => {
            let dims: Vec<usize> = x[0].ints().iter().map(|&d| d.max(0) as usize).collect();
            let count = dims
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or("a shape too large to compute with")?;
            crate::limits::check("ConstantOfShape", crate::limits::f32_bytes(count))
                .map_err(|e| e.to_string())?;
            let fill = attr(n, "value")
                .and_then(|a| a.t.as_ref())
                .map(tensor)
                .transpose()?;
            let values = match fill.map(|f| f.values) {
                Some(Values::F32(v)) => Values::F32(vec![v.first().copied().unwrap_or(0.0); count]),
                Some(Values::I64(v)) => Values::I64(vec![v.first().copied().unwrap_or(0); count]),
                None => Values::F32(vec![0.0; count]),
            };
            Const { dims, values }
        }
        "Concat" if !x.is_empty() && x.iter().all(|c| c.dims.len() <= 1) => {
            let v: Vec<i64> = x.iter().flat_map(|c| c.ints()).collect();
            Const {
                dims: vec![v.len()],
                values: Values::I64(v),
            }
        }
        "Reshape" if x.len() == 2 => {
            let mut dims: Vec<i64> = x[1].ints();
            let total = x[0].len() as i64;
            for (i, d) in dims.iter_mut().enumerate() {
                if *d == 0 {
                    *d = x[0].dims.get(i).copied().unwrap_or(1) as i64;
                }
            }
            if let Some(i) = dims.iter().position(|&d| d == -1) {
                let known: i64 = dims.iter().filter(|&&d| d != -1).product();
                dims[i] = if known == 0 { 0 } else { total / known };
            }
            let mut c = x[0].clone();
            c.dims = dims.iter().map(|&d| d.max(0) as usize).collect();
            if c.dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(c.len()) {
                return Err(format!("a Reshape of {} values to {dims:?}", c.len()));
            }
            c
        }
        "Unsqueeze" | "Squeeze" => {
            let axes = ints("axes")
                .or_else(|| x.get(1).map(|c| c.ints()))
                .unwrap_or_default();
            let mut c = x[0].clone();
            if n.op_type == "Unsqueeze" {
                let rank = c.dims.len() + axes.len();
                let mut sorted: Vec<usize> = axes
                    .iter()
                    .map(|&a| a.rem_euclid(rank as i64) as usize)
                    .collect();
                sorted.sort();
                for a in sorted {
                    c.dims.insert(a.min(c.dims.len()), 1);
                }
            } else {
                c.dims.retain(|&d| d != 1);
            }
            c
        }
        "Transpose" if x.len() == 1 => {
            let c = x[0];
            let rank = c.dims.len();
            let perm: Vec<usize> = ints("perm")
                .map(|p| {
                    p.iter()
                        .map(|&a| a.rem_euclid(rank.max(1) as i64) as usize)
                        .collect()
                })
                .unwrap_or_else(|| (0..rank).rev().collect());
            let mut sorted = perm.clone();
            sorted.sort();
            if sorted != (0..rank).collect::<Vec<_>>() {
                return Err(format!("perm {perm:?} for {rank} axes"));
            }
            let dims: Vec<usize> = perm.iter().map(|&p| c.dims[p]).collect();
            let (src, dst) = (strides(&c.dims), strides(&dims));
            let idx: Vec<usize> = (0..c.len())
                .map(|k| {
                    (0..rank)
                        .map(|a| (k / dst[a]) % dims[a].max(1) * src[perm[a]])
                        .sum()
                })
                .collect();
            c.pick(&idx, dims)
        }
        "Slice" if x.len() >= 3 && (1..=2).contains(&x[0].dims.len()) => slice(x)?,
        _ => return Ok(None),
    }))
}

/// Slice of a 1-D or 2-D constant (`starts`, `ends`, `axes`, `steps`).
fn slice(x: Vec<&Const>) -> Result<Const, String> {
    let c = x[0];
    let rank = c.dims.len();
    let (starts, ends) = (x[1].ints(), x[2].ints());
    let axes: Vec<usize> = x
        .get(3)
        .map(|a| a.ints())
        .unwrap_or_else(|| (0..starts.len() as i64).collect())
        .iter()
        .map(|&a| a.rem_euclid(rank as i64) as usize)
        .collect();
    let steps = x.get(4).map(|s| s.ints()).unwrap_or(vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("a Slice whose starts, ends, axes and steps differ in length".into());
    }
    let mut ranges: Vec<Vec<usize>> = c.dims.iter().map(|&d| (0..d).collect()).collect();
    for (k, &a) in axes.iter().enumerate() {
        let d = c.dims[a] as i64;
        let step = steps.get(k).copied().unwrap_or(1);
        if step == 0 {
            return Err("a Slice step of 0".into());
        }
        let clamp = |v: i64, lo: i64, hi: i64| v.clamp(lo, hi);
        let norm = |v: i64| if v < 0 { v + d } else { v };
        ranges[a] = if step > 0 {
            let (s, e) = (clamp(norm(starts[k]), 0, d), clamp(norm(ends[k]), 0, d));
            (s..e).step_by(step as usize).map(|i| i as usize).collect()
        } else {
            let (s, e) = (
                clamp(norm(starts[k]), -1, d - 1),
                clamp(norm(ends[k]), -1, d - 1),
            );
            let mut v = Vec::new();
            let mut i = s;
            while i > e {
                v.push(i as usize);
                i += step;
            }
            v
        };
    }
    let st0 = strides(&c.dims)[0];
    let dims: Vec<usize> = ranges.iter().map(|r| r.len()).collect();
    let idx: Vec<usize> = if rank == 1 {
        ranges[0].clone()
    } else {
        ranges[0]
            .iter()
            .flat_map(|&i| ranges[1].iter().map(move |&j| i * st0 + j))
            .collect()
    };
    Ok(c.pick(&idx, dims))
}
