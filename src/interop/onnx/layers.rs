//! Each layer as ONNX nodes, called from the layers' `Layer::onnx`: `x` is the name of the
//! layer's input `(N, *input)`, the result the name of its output.

use super::graph::{Graph, float, i64s, int, ints, string};
use crate::error::Result;
use crate::nn::{Activation, BatchNorm, Conv, Dense, Layer, LayerNorm, Pool, PoolKind, Upsample};
use crate::ops::conv::resolve_padding;
use crate::ops::{PadMode, Padding, UpsampleMode};

/// An activation after `x` (nothing for linear). Softmaxes are over axis 1, as convnet's.
pub fn activation(g: &mut Graph, a: Activation, x: &str) -> Result<String> {
    Ok(match a {
        Activation::Linear => x.to_string(),
        Activation::Relu => g.node("Relu", &[x], vec![]),
        Activation::LeakyRelu(alpha) => g.node("LeakyRelu", &[x], vec![float("alpha", alpha)]),
        Activation::Elu(alpha) => g.node("Elu", &[x], vec![float("alpha", alpha)]),
        Activation::Sigmoid => g.node("Sigmoid", &[x], vec![]),
        Activation::Tanh => g.node("Tanh", &[x], vec![]),
        Activation::Softmax => g.node("Softmax", &[x], vec![int("axis", 1)]),
        Activation::LogSoftmax => g.node("LogSoftmax", &[x], vec![int("axis", 1)]),
        Activation::Gelu if g.opset >= 20 => g.node("Gelu", &[x], vec![]),
        Activation::Gelu => {
            // x / 2 * (1 + erf(x / sqrt(2))), the exact GELU before opset 20 had it
            let root2 = g.floats("sqrt2", &[], &[std::f32::consts::SQRT_2]);
            let (one, half) = (g.floats("one", &[], &[1.0]), g.floats("half", &[], &[0.5]));
            let scaled = g.node("Div", &[x, &root2], vec![]);
            let erf = g.node("Erf", &[&scaled], vec![]);
            let shifted = g.node("Add", &[&erf, &one], vec![]);
            let times = g.node("Mul", &[x, &shifted], vec![]);
            g.node("Mul", &[&times, &half], vec![])
        }
    })
}

/// Convolutions, transposed or not, with their padding, bias and activation.
pub fn conv(c: &Conv, g: &mut Graph, x: &str, input: &[usize]) -> Result<String> {
    let d = c.kernel.len();
    let w = g.weight("weight", &c.effective_weight()?);
    let b = c.bias.as_ref().map(|b| g.weight("bias", b));
    let mut attrs = vec![
        ints("kernel_shape", &i64s(&c.kernel)),
        ints("strides", &i64s(&c.stride)),
        ints("dilations", &i64s(&c.dilation)),
        int("group", c.groups as i64),
    ];
    let mut x = x.to_string();
    let op = if c.kind.transposed() {
        let t = c.transpose_padding()?;
        let mut pads = t.pad.clone();
        pads.extend(t.pad.iter().zip(&t.crop_end).map(|(p, c)| p + c));
        attrs.push(ints("pads", &i64s(&pads)));
        attrs.push(ints("output_padding", &i64s(&t.output_padding)));
        "ConvTranspose"
    } else {
        let strided = c.stride.iter().any(|&s| s != 1);
        if c.padding == Padding::Same && strided && c.pad_mode == PadMode::Zeros {
            // TensorFlow's `same` puts the odd padding after; it depends on the input size
            attrs.push(string("auto_pad", "SAME_UPPER"));
        } else {
            let pads = resolve_padding(
                c.kind.name(),
                &c.padding,
                &input[1..],
                &c.kernel,
                &c.stride,
                &c.dilation,
            )?;
            let (before, after): (Vec<usize>, Vec<usize>) = pads.into_iter().unzip();
            if c.pad_mode != PadMode::Zeros && (before.iter().chain(&after).any(|&p| p > 0)) {
                x = pad(g, &x, &before, &after, c.pad_mode)?;
                attrs.push(ints("pads", &vec![0; 2 * d]));
            } else {
                attrs.push(ints("pads", &i64s(&[before, after].concat())));
            }
        }
        "Conv"
    };
    let mut inputs = vec![x.as_str(), w.as_str()];
    if let Some(b) = &b {
        inputs.push(b);
    }
    let y = g.node(op, &inputs, attrs);
    activation(g, c.activation, &y)
}

/// `x` padded by `before` and `after` on its spatial axes with `mode`'s values.
fn pad(g: &mut Graph, x: &str, before: &[usize], after: &[usize], mode: PadMode) -> Result<String> {
    let name = match mode {
        PadMode::Zeros => "constant",
        PadMode::Reflect => "reflect",
        PadMode::Replicate => "edge",
        PadMode::Circular if g.opset >= 19 => "wrap",
        PadMode::Circular => {
            return Err(g.cannot("circular padding needs opset 19 or later (--opset 19)"));
        }
    };
    let mut pads = vec![0i64, 0];
    pads.extend(i64s(before));
    pads.extend([0, 0]);
    pads.extend(i64s(after));
    let p = g.int64s("pads", &[pads.len() as i64], &pads);
    Ok(g.node("Pad", &[x, &p], vec![string("mode", name)]))
}

pub fn dense(l: &Dense, g: &mut Graph, x: &str, input: &[usize]) -> Result<String> {
    let y = if input.len() == 1 {
        let w = g.weight("weight", &l.weight);
        let mut inputs = vec![x.to_string(), w];
        if let Some(b) = &l.bias {
            inputs.push(g.weight("bias", b));
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        g.node("Gemm", &refs, vec![int("transB", 1)])
    } else {
        // over the last axis: x W^T (+ b)
        let (units, in_f) = (l.units, l.in_features);
        let w = l.weight.data();
        let wt: Vec<f32> = (0..in_f * units)
            .map(|k| w[(k % units) * in_f + k / units])
            .collect();
        let w = g.floats("weight_t", &[in_f as i64, units as i64], &wt);
        let y = g.node("MatMul", &[x, &w], vec![]);
        match &l.bias {
            Some(b) => {
                let b = g.weight("bias", b);
                g.node("Add", &[&y, &b], vec![])
            }
            None => y,
        }
    };
    activation(g, l.activation, &y)
}

pub fn batch_norm(l: &BatchNorm, g: &mut Graph, x: &str) -> Result<String> {
    let s = g.weight("weight", &l.weight);
    let b = g.weight("bias", &l.bias);
    let m = g.weight("running_mean", &l.running_mean);
    let v = g.weight("running_var", &l.running_var);
    Ok(g.node(
        "BatchNormalization",
        &[x, &s, &b, &m, &v],
        vec![float("epsilon", l.eps)],
    ))
}

/// Layer normalisation over the last axes: one node from opset 17, composed before it.
pub fn layer_norm(l: &LayerNorm, g: &mut Graph, x: &str, input: &[usize]) -> Result<String> {
    let s = g.weight("weight", &l.weight);
    let b = g.weight("bias", &l.bias);
    if g.opset < 17 {
        // (x - mean) / sqrt(var + eps) * weight + bias, over the normalised axes
        let rank = input.len() as i64 + 1;
        let axes: Vec<i64> = (rank - l.normalized_shape.len() as i64..rank).collect();
        let reduce = |g: &mut Graph, v: &str| {
            g.node(
                "ReduceMean",
                &[v],
                vec![ints("axes", &axes), int("keepdims", 1)],
            )
        };
        let mean = reduce(g, x);
        let d = g.node("Sub", &[x, &mean], vec![]);
        let sq = g.node("Mul", &[&d, &d], vec![]);
        let var = reduce(g, &sq);
        let eps = g.floats("epsilon", &[], &[l.eps]);
        let shifted = g.node("Add", &[&var, &eps], vec![]);
        let root = g.node("Sqrt", &[&shifted], vec![]);
        let norm = g.node("Div", &[&d, &root], vec![]);
        let scaled = g.node("Mul", &[&norm, &s], vec![]);
        return Ok(g.node("Add", &[&scaled, &b], vec![]));
    }
    Ok(g.node(
        "LayerNormalization",
        &[x, &s, &b],
        vec![
            int("axis", -(l.normalized_shape.len() as i64)),
            float("epsilon", l.eps),
        ],
    ))
}

pub fn pool(p: &Pool, g: &mut Graph, x: &str) -> Result<String> {
    let mut attrs = vec![
        ints("kernel_shape", &i64s(&p.pool_size)),
        ints("strides", &i64s(&p.stride)),
        ints(
            "pads",
            &i64s(&[p.padding.clone(), p.padding.clone()].concat()),
        ),
        int("ceil_mode", i64::from(p.ceil_mode)),
    ];
    let op = match p.kind {
        PoolKind::Max => "MaxPool",
        PoolKind::Avg => {
            attrs.push(int("count_include_pad", i64::from(p.count_include_pad)));
            "AveragePool"
        }
    };
    Ok(g.node(op, &[x], attrs))
}

/// Global pooling to `(N, C)`.
pub fn global_pool(kind: PoolKind, g: &mut Graph, x: &str) -> Result<String> {
    let op = match kind {
        PoolKind::Max => "GlobalMaxPool",
        PoolKind::Avg => "GlobalAveragePool",
    };
    let y = g.node(op, &[x], vec![]);
    Ok(g.node("Flatten", &[&y], vec![int("axis", 1)]))
}

/// `(N, *input)` seen as `(N, *output)`.
pub fn reshape(g: &mut Graph, x: &str, output: &[usize]) -> Result<String> {
    if output.len() == 1 {
        return Ok(g.node("Flatten", &[x], vec![int("axis", 1)]));
    }
    let mut shape = vec![0i64];
    shape.extend(i64s(output));
    let s = g.int64s("shape", &[shape.len() as i64], &shape);
    Ok(g.node("Reshape", &[x, &s], vec![]))
}

pub fn upsample(u: &Upsample, g: &mut Graph, x: &str) -> Result<String> {
    let mut scales = vec![1.0f32, 1.0];
    scales.extend(u.size.iter().map(|&s| s as f32));
    let roi = "";
    let s = g.floats("scales", &[scales.len() as i64], &scales);
    let attrs = match u.mode {
        UpsampleMode::Nearest => vec![
            string("mode", "nearest"),
            string("coordinate_transformation_mode", "asymmetric"),
            string("nearest_mode", "floor"),
        ],
        UpsampleMode::Linear => vec![
            string("mode", "linear"),
            string("coordinate_transformation_mode", "half_pixel"),
        ],
    };
    Ok(g.node("Resize", &[x, roi, &s], attrs))
}

/// The time step `index` of `(N, C, L)` as `(N, C)`; a negative index counts from the end.
pub fn time_step(g: &mut Graph, x: &str, index: i64) -> String {
    let i = g.int64s("step", &[], &[index]);
    g.node("Gather", &[x, &i], vec![int("axis", 2)])
}

/// The middle time step (`L / 2`) of `(N, C, L)` as `(N, C)`, for any length.
pub fn middle_step(g: &mut Graph, x: &str) -> String {
    let shape = g.node("Shape", &[x], vec![]);
    let axis = g.int64s("axis", &[], &[2]);
    let len = g.node("Gather", &[&shape, &axis], vec![int("axis", 0)]);
    let two = g.int64s("two", &[], &[2]);
    let mid = g.node("Div", &[&len, &two], vec![]);
    g.node("Gather", &[x, &mid], vec![int("axis", 2)])
}

/// Channels `from..to` of `x`.
pub fn channels(g: &mut Graph, x: &str, from: usize, to: usize) -> String {
    let s = g.int64s("starts", &[1], &[from as i64]);
    let e = g.int64s("ends", &[1], &[to as i64]);
    let a = g.int64s("axes", &[1], &[1]);
    g.node("Slice", &[x, &s, &e, &a], vec![])
}

/// `f` with the names of its nodes and errors below `name` (`layers.0/blocks.1`).
pub fn scoped<T>(g: &mut Graph, name: &str, f: impl FnOnce(&mut Graph) -> Result<T>) -> Result<T> {
    let outer = std::mem::take(&mut g.at);
    g.at = format!("{outer}/{name}");
    let y = f(g);
    g.at = outer;
    y
}

/// `layer`, a part of the current layer named `name` (`conv1`), on `x` `(N, *input)`.
pub fn within(
    g: &mut Graph,
    name: &str,
    layer: &dyn Layer,
    x: &str,
    input: &[usize],
) -> Result<String> {
    scoped(g, name, |g| layer.onnx(g, x, input))
}

/// `layers` in order from `x` `(N, *input)`, each named `{prefix}{i}`; the output's name
/// and per-sample shape.
pub fn chain(
    g: &mut Graph,
    prefix: &str,
    layers: &[Box<dyn Layer>],
    x: &str,
    input: &[usize],
) -> Result<(String, Vec<usize>)> {
    let (mut h, mut shape) = (x.to_string(), input.to_vec());
    for (i, l) in layers.iter().enumerate() {
        h = within(g, &format!("{prefix}{i}"), l.as_ref(), &h, &shape)?;
        shape = l.infer(&shape)?.output;
    }
    Ok((h, shape))
}

/// The running sum of skip outputs: `total + skip`, or `skip` first.
pub fn accumulate(g: &mut Graph, total: Option<String>, skip: String) -> String {
    match total {
        Some(t) => add(g, &t, &skip),
        None => skip,
    }
}

/// `a + b`.
pub fn add(g: &mut Graph, a: &str, b: &str) -> String {
    g.node("Add", &[a, b], vec![])
}
