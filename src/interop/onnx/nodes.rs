//! The ONNX nodes that become one spec entry each (convolutions, pooling, dense layers,
//! activations, upsampling) and a residual shortcut, for [`super::import`].

use super::import::{Entry, Graph, float, int, ints, list, refuse, string};
use super::proto::NodeProto;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The activation node `n` is, as its spec name and `alpha` (leaky ReLU, ELU), or `None`.
pub(super) fn activation(n: &NodeProto) -> Result<Option<(&'static str, Option<f32>)>> {
    Ok(Some(match n.op_type.as_str() {
        "Relu" => ("relu", None),
        "Sigmoid" => ("sigmoid", None),
        "Tanh" => ("tanh", None),
        "LeakyRelu" => ("leaky_relu", Some(float(n, "alpha", 0.01))),
        "Elu" => ("elu", Some(float(n, "alpha", 1.0))),
        "Gelu" if string(n, "approximate", "none") == "none" => ("gelu", None),
        "Softmax" | "LogSoftmax" => {
            let axis = int(n, "axis", -1);
            if axis != 1 && axis != -1 {
                return Err(refuse(
                    n,
                    format!("a softmax over axis {axis}; convnet's is over the channels"),
                ));
            }
            if n.op_type == "Softmax" {
                ("softmax", None)
            } else {
                ("log_softmax", None)
            }
        }
        _ => return Ok(None),
    }))
}

pub(super) fn transpose2(w: &Tensor) -> Result<Tensor> {
    let (r, c) = match w.shape() {
        [r, c] => (*r, *c),
        s => {
            return Err(Error::Convert {
                at: "a dense weight".into(),
                why: format!("shape {s:?}"),
            });
        }
    };
    let d = w.data();
    Tensor::from_vec(
        (0..r * c).map(|k| d[(k % r) * c + k / r]).collect(),
        &[c, r],
    )
}

pub(super) fn dense(w: Tensor, b: Option<Tensor>) -> Entry {
    let units = w.shape()[0];
    with_weights(Entry::of("dense").key("units", units), w, b)
}

/// `e` with its `weight` and its `bias` (or `use_bias = false`).
fn with_weights(mut e: Entry, w: Tensor, b: Option<Tensor>) -> Entry {
    if b.is_none() {
        e = e.key("use_bias", false);
    }
    e.weights.push(("weight".into(), w));
    if let Some(b) = b {
        e.weights.push(("bias".into(), b));
    }
    e
}

/// The bias of a Conv or ConvTranspose node, where it has one.
fn bias(g: &Graph, n: &NodeProto) -> Result<Option<Tensor>> {
    g.constant(n, 2).map(|_| g.weight(n, 2)).transpose()
}

/// A convolution's kernel size, strides and dilations (`d` spatial axes, kernel from `w`).
fn geometry(e: Entry, n: &NodeProto, w: &Tensor, d: usize) -> Entry {
    let kernel: Vec<i64> = w.shape()[2..].iter().map(|&k| k as i64).collect();
    e.key("kernel_size", list(&kernel))
        .key("strides", list(&ints(n, "strides").unwrap_or(vec![1; d])))
        .key(
            "dilation_rate",
            list(&ints(n, "dilations").unwrap_or(vec![1; d])),
        )
}

/// A convolution with `extra` spatial padding from a Pad node before it (in `mode`).
pub(super) fn conv_entry(
    g: &Graph,
    n: &NodeProto,
    extra: &[(i64, i64)],
    mode: &str,
) -> Result<Entry> {
    let w = g.weight(n, 1)?;
    let d = w.shape().len().saturating_sub(2);
    if !(1..=2).contains(&d) {
        return Err(refuse(n, format!("a weight of shape {:?}", w.shape())));
    }
    let kind = if d == 1 { "conv1d" } else { "conv2d" };
    let pads = ints(n, "pads").unwrap_or(vec![0; 2 * d]);
    if pads.len() != 2 * d || extra.len() != d {
        return Err(refuse(n, format!("pads {pads:?} for {d} spatial axes")));
    }
    let auto = string(n, "auto_pad", "NOTSET");
    let mut e = geometry(Entry::of(kind).key("filters", w.shape()[0]), n, &w, d)
        .key("groups", int(n, "group", 1));
    e = match auto.as_str() {
        "SAME_UPPER" if extra.iter().all(|&p| p == (0, 0)) => e.key("padding", "\"same\""),
        "NOTSET" | "VALID" => {
            let pairs: Vec<String> = (0..d)
                .map(|a| {
                    let (b, f) = extra.get(a).copied().unwrap_or((0, 0));
                    let own = |i: usize| pads.get(i).copied().unwrap_or(0);
                    format!(
                        "[{}, {}]",
                        own(a).saturating_add(b),
                        own(d + a).saturating_add(f)
                    )
                })
                .collect();
            e.key("padding", format!("[{}]", pairs.join(", ")))
        }
        other => return Err(refuse(n, format!("auto_pad {other}"))),
    };
    if mode != "zeros" {
        if pads.iter().any(|&p| p != 0) {
            return Err(refuse(
                n,
                "a convolution's own zero padding after a padding of other values",
            ));
        }
        e = e.key("padding_mode", format!("\"{mode}\""));
    }
    let b = bias(g, n)?;
    Ok(with_weights(e, w, b))
}

pub(super) fn conv_transpose(g: &Graph, n: &NodeProto) -> Result<Entry> {
    let w = g.weight(n, 1)?;
    let d = w.shape().len().saturating_sub(2);
    if !(1..=2).contains(&d) || int(n, "group", 1) != 1 {
        return Err(refuse(
            n,
            "a grouped or other than 1-D or 2-D transposed convolution",
        ));
    }
    let pads = ints(n, "pads").unwrap_or(vec![0; 2 * d]);
    if pads.len() != 2 * d || pads[..d] != pads[d..] || ints(n, "output_shape").is_some() {
        return Err(refuse(
            n,
            format!("pads {pads:?}: only even pads (or output_padding) are read"),
        ));
    }
    let kind = if d == 1 {
        "conv1d_transpose"
    } else {
        "conv2d_transpose"
    };
    let e = geometry(Entry::of(kind).key("filters", w.shape()[1]), n, &w, d)
        .key("padding", list(&pads[..d]))
        .key(
            "output_padding",
            list(&ints(n, "output_padding").unwrap_or(vec![0; d])),
        );
    let b = bias(g, n)?;
    Ok(with_weights(e, w, b))
}

pub(super) fn pool(n: &NodeProto, spatial: usize) -> Result<Entry> {
    let k = ints(n, "kernel_shape").ok_or_else(|| refuse(n, "no kernel_shape"))?;
    let pads = ints(n, "pads").unwrap_or(vec![0; 2 * k.len()]);
    if pads.len() != 2 * k.len() || pads[..k.len()] != pads[k.len()..] {
        return Err(refuse(n, format!("pads {pads:?}: only even pads are read")));
    }
    if ints(n, "dilations").is_some_and(|d| d.iter().any(|&x| x != 1)) || k.len() != spatial {
        return Err(refuse(n, "a dilated pooling, or one over other axes"));
    }
    let max = n.op_type == "MaxPool";
    let kind = format!("{}_pool{}d", if max { "max" } else { "avg" }, k.len());
    let mut e = Entry::of(&kind)
        .key("pool_size", list(&k))
        .key(
            "strides",
            list(&ints(n, "strides").unwrap_or(vec![1; k.len()])),
        )
        .key("padding", list(&pads[..k.len()]))
        .key("ceil_mode", int(n, "ceil_mode", 0) != 0);
    if !max {
        e = e.key("count_include_pad", int(n, "count_include_pad", 0) != 0);
    }
    Ok(e)
}

pub(super) fn upsample(g: &Graph, n: &NodeProto) -> Result<Entry> {
    let scales = (1..n.input.len())
        .rev()
        .find_map(|i| g.constant(n, i).filter(|c| !c.floats().is_empty()))
        .ok_or_else(|| refuse(n, "scales computed at run time"))?
        .floats();
    if scales.len() < 3 || scales[..2] != [1.0, 1.0] || scales.iter().any(|s| s.fract() != 0.0) {
        return Err(refuse(
            n,
            format!("scales {scales:?}: whole factors on the spatial axes"),
        ));
    }
    let factors: Vec<i64> = scales[2..].iter().map(|&s| s as i64).collect();
    let mode = string(n, "mode", "nearest");
    let ct = string(n, "coordinate_transformation_mode", "half_pixel");
    let interpolation = match (mode.as_str(), ct.as_str()) {
        ("nearest", "asymmetric") if string(n, "nearest_mode", "round_prefer_floor") == "floor" => {
            "nearest"
        }
        ("linear", "half_pixel" | "pytorch_half_pixel") => "bilinear",
        _ => return Err(refuse(n, format!("mode {mode} with {ct} coordinates"))),
    };
    Ok(Entry::of("upsample")
        .key("size", list(&factors))
        .key("interpolation", format!("\"{interpolation}\"")))
}

/// A residual shortcut: a 1x1 convolution without padding (a batch norm after it folded in).
pub(super) fn shortcut(
    g: &Graph,
    conv: &NodeProto,
    bn: Option<&NodeProto>,
) -> Result<Vec<(String, Tensor)>> {
    let w = g.weight(conv, 1)?;
    if w.shape().len() < 3
        || w.shape()[2..].iter().any(|&k| k != 1)
        || ints(conv, "pads").is_some_and(|p| p.iter().any(|&x| x != 0))
        || int(conv, "group", 1) != 1
    {
        return Err(refuse(conv, "a shortcut other than a 1x1 convolution"));
    }
    let c = w.shape()[0];
    let per = w.numel() / c.max(1);
    let mut wv = w.data().to_vec();
    let mut bv = match g.constant(conv, 2) {
        Some(_) => g.weight(conv, 2)?.data().to_vec(),
        None => vec![0.0; c],
    };
    if let Some(bn) = bn {
        if bn.op_type != "BatchNormalization" {
            return Err(refuse(
                bn,
                "only a batch norm follows a shortcut's convolution",
            ));
        }
        let p: Vec<Vec<f32>> = (1..=4)
            .map(|i| Ok(g.weight(bn, i)?.data().to_vec()))
            .collect::<Result<_>>()?;
        let eps = float(bn, "epsilon", 1e-5) as f64;
        for o in 0..c {
            let s = p[0][o] as f64 / (p[3][o] as f64 + eps).sqrt();
            for v in &mut wv[o * per..(o + 1) * per] {
                *v = (*v as f64 * s) as f32;
            }
            bv[o] = ((bv[o] as f64 - p[2][o] as f64) * s + p[1][o] as f64) as f32;
        }
    }
    Ok(vec![
        ("shortcut.weight".into(), Tensor::from_vec(wv, w.shape())?),
        ("shortcut.bias".into(), Tensor::from_vec(bv, &[c])?),
    ])
}
