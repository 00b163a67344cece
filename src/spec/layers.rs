//! Building a layer from its `[[model.layers]]` table, with the Keras vocabulary of the spec
//! (`filters`, `kernel_size`, `strides`, `padding`, `dilation_rate`, `groups`, `pool_size`,
//! `rate`, `units`, `activation`).

use super::table::{R, Table};
use crate::error::Error;
use crate::nn::{
    Activation, BatchNorm, Conv, ConvKind, Dense, Dropout, Flatten, GlobalPool, Layer, LayerNorm,
    Pool, PoolKind, Reshape, Residual, Tcn, TcnConfig, TcnNorm, Upsample, WaveNet, WaveNetConfig,
};
use crate::ops::{self, PadMode, Padding, same_padding};
use crate::rng::Rng;

/// Every layer type the spec accepts.
pub const LAYER_TYPES: &[&str] = &[
    "conv1d",
    "conv2d",
    "conv1d_transpose",
    "conv2d_transpose",
    "max_pool1d",
    "max_pool2d",
    "avg_pool1d",
    "avg_pool2d",
    "global_avg_pool",
    "global_max_pool",
    "dense",
    "dropout",
    "spatial_dropout",
    "batch_norm",
    "layer_norm",
    "flatten",
    "activation",
    "reshape",
    "upsample",
    "residual",
    "tcn",
    "wavenet",
];

fn activation(t: &Table, default: Activation) -> R<Activation> {
    let alpha = t.f32("alpha")?;
    match t.str("activation")? {
        None => Ok(default),
        Some(name) => Activation::parse(name, alpha).map_err(|_| {
            t.err(
                "activation",
                format!(
                    "unknown activation \"{name}\"; expected one of: {}",
                    Activation::NAMES.join(", ")
                ),
            )
        }),
    }
}

/// `padding`: "valid" | "same" | "causal" | an integer | one integer per axis | one
/// `[before, after]` pair per axis.
fn padding(t: &Table, dims: usize) -> R<Padding> {
    let what = format!(
        "\"valid\", \"same\", \"causal\", an integer, {dims} integer(s), or {dims} [before, after] pair(s)"
    );
    let Some(v) = t.get("padding") else {
        return Ok(Padding::Valid);
    };
    let bad = || Err(t.err("padding", format!("expected {what}, got {v}")));
    match v {
        toml::Value::String(s) => match s.as_str() {
            "valid" => Ok(Padding::Valid),
            "same" => Ok(Padding::Same),
            "causal" => Ok(Padding::Causal),
            _ => bad(),
        },
        toml::Value::Integer(p) if *p >= 0 => {
            Ok(Padding::Explicit(vec![(*p as usize, *p as usize); dims]))
        }
        toml::Value::Array(a) if a.len() == dims => {
            let mut out = Vec::new();
            for x in a {
                match x {
                    toml::Value::Integer(p) if *p >= 0 => out.push((*p as usize, *p as usize)),
                    toml::Value::Array(pair) if pair.len() == 2 => match (&pair[0], &pair[1]) {
                        (toml::Value::Integer(a), toml::Value::Integer(b))
                            if *a >= 0 && *b >= 0 =>
                        {
                            out.push((*a as usize, *b as usize))
                        }
                        _ => return bad(),
                    },
                    _ => return bad(),
                }
            }
            Ok(Padding::Explicit(out))
        }
        _ => bad(),
    }
}

fn dims_of(kind: &str) -> usize {
    if kind.contains("1d") { 1 } else { 2 }
}

/// Build the layer described by `t` for inputs of per-sample shape `input`.
pub(crate) fn build(t: &Table, kind: &str, input: &[usize], rng: &mut Rng) -> R<Box<dyn Layer>> {
    let layer: Box<dyn Layer> = match kind {
        "conv1d" | "conv2d" | "conv1d_transpose" | "conv2d_transpose" => {
            let d = dims_of(kind);
            let ck = match kind {
                "conv1d" => ConvKind::Conv1d,
                "conv2d" => ConvKind::Conv2d,
                "conv1d_transpose" => ConvKind::ConvTranspose1d,
                _ => ConvKind::ConvTranspose2d,
            };
            let filters = t.required("filters", t.usize("filters"), "the number of filters")?;
            let kernel = t.required(
                "kernel_size",
                t.usize_per_dim("kernel_size", d),
                "an integer or one per axis",
            )?;
            let stride = t.usize_per_dim("strides", d)?.unwrap_or(vec![1; d]);
            let dilation = t.usize_per_dim("dilation_rate", d)?.unwrap_or(vec![1; d]);
            let groups = t.usize("groups")?.unwrap_or(1);
            let pad = padding(t, d)?;
            let mode = match t.choice(
                "padding_mode",
                &["zeros", "reflect", "replicate", "circular"],
            )? {
                Some("reflect") => PadMode::Reflect,
                Some("replicate") => PadMode::Replicate,
                Some("circular") => PadMode::Circular,
                _ => PadMode::Zeros,
            };
            let output_padding =
                if ck == ConvKind::ConvTranspose1d || ck == ConvKind::ConvTranspose2d {
                    t.usize_per_dim("output_padding", d)?.unwrap_or(vec![0; d])
                } else {
                    vec![0; d]
                };
            let bias = t.bool("use_bias")?.unwrap_or(true);
            let act = activation(t, Activation::Linear)?;
            let in_ch = input.first().copied().unwrap_or(0);
            // Optional, as PyTorch writes it: checked against what the previous layer gives.
            if let Some(want) = t.usize("in_channels")? {
                if want != in_ch {
                    return Err(t.err("in_channels", format!("is {want}, but the previous layer outputs {in_ch} channels (shape {input:?})")));
                }
            }
            let mut conv = Conv::new(
                ck,
                in_ch,
                filters,
                kernel,
                stride,
                pad,
                dilation,
                groups,
                mode,
                output_padding,
                bias,
                act,
                rng,
            )?;
            if let Some(w) = kernel_initializer(t, conv.weight.shape(), rng)? {
                conv.weight = w.requires_grad_();
            }
            Box::new(conv)
        }
        "max_pool1d" | "max_pool2d" | "avg_pool1d" | "avg_pool2d" => {
            let d = dims_of(kind);
            let pk = if kind.starts_with("max") {
                PoolKind::Max
            } else {
                PoolKind::Avg
            };
            let pool_size = t.required(
                "pool_size",
                t.usize_per_dim("pool_size", d),
                "an integer or one per axis",
            )?;
            let stride = t.usize_per_dim("strides", d)?.unwrap_or(pool_size.clone());
            let mut ceil_mode = t.bool("ceil_mode")?.unwrap_or(false);
            let count_include_pad = if pk == PoolKind::Avg {
                t.bool("count_include_pad")?.unwrap_or(true)
            } else {
                true
            };
            let pad = match padding(t, d)? {
                Padding::Valid => vec![0; d],
                Padding::Explicit(p) if p.iter().all(|(a, b)| a == b) => {
                    p.iter().map(|(a, _)| *a).collect()
                }
                Padding::Same => {
                    // TensorFlow's `same` pooling, where it pads only at the end: a partial last window.
                    let spatial = input.get(1..).unwrap_or(&[]);
                    if spatial.len() != d
                        || (0..d)
                            .any(|i| same_padding(spatial[i], pool_size[i], stride[i], 1).0 != 0)
                    {
                        return Err(t.err("padding", "\"same\" pooling is supported where it pads only after the input (pool_size <= strides); give explicit padding instead"));
                    }
                    ceil_mode = true;
                    vec![0; d]
                }
                _ => {
                    return Err(t.err(
                        "padding",
                        "pooling takes \"valid\", \"same\" or symmetric explicit padding",
                    ));
                }
            };
            Box::new(Pool {
                kind: pk,
                pool_size,
                stride,
                padding: pad,
                ceil_mode,
                count_include_pad,
            })
        }
        "global_avg_pool" => Box::new(GlobalPool {
            kind: PoolKind::Avg,
        }),
        "global_max_pool" => Box::new(GlobalPool {
            kind: PoolKind::Max,
        }),
        "dense" => {
            let units = t.required("units", t.usize("units"), "the number of output units")?;
            let bias = t.bool("use_bias")?.unwrap_or(true);
            let act = activation(t, Activation::Linear)?;
            let in_f = input.last().copied().unwrap_or(0);
            if let Some(want) = t.usize("in_features")? {
                if want != in_f {
                    return Err(t.err("in_features", format!("is {want}, but the previous layer outputs {in_f} features (shape {input:?})")));
                }
            }
            let mut dense = Dense::new(in_f, units, bias, act, rng)?;
            if let Some(w) = kernel_initializer(t, dense.weight.shape(), rng)? {
                dense.weight = w.requires_grad_();
            }
            Box::new(dense)
        }
        "dropout" | "spatial_dropout" => {
            let rate = t.required("rate", t.f32("rate"), "the fraction to drop, in [0, 1)")?;
            Box::new(
                Dropout::new(rate, kind == "spatial_dropout")
                    .map_err(|e| t.err("rate", e.to_string()))?,
            )
        }
        "batch_norm" => {
            let momentum = t.f32("momentum")?.unwrap_or(0.1);
            let eps = t.f32("epsilon")?.unwrap_or(1e-5);
            Box::new(BatchNorm::new(
                input.first().copied().unwrap_or(0),
                momentum,
                eps,
            )?)
        }
        "layer_norm" => {
            let eps = t.f32("epsilon")?.unwrap_or(1e-5);
            let shape = match t.int_list("normalized_shape", false)? {
                Some(v) => v.into_iter().flatten().collect(),
                None => input.to_vec(),
            };
            Box::new(LayerNorm::new(shape, eps)?)
        }
        "flatten" => Box::new(Flatten),
        "activation" => {
            if t.get("activation").is_none() {
                return Err(t.missing(
                    "activation",
                    &format!("one of: {}", Activation::NAMES.join(", ")),
                ));
            }
            Box::new(activation(t, Activation::Linear)?)
        }
        "reshape" => {
            let target = t.required(
                "target_shape",
                t.int_list("target_shape", true),
                "the per-sample shape, -1 for one inferred axis",
            )?;
            Box::new(Reshape { target })
        }
        "upsample" => {
            let d = input.len().saturating_sub(1).clamp(1, 2);
            let size = t.usize_per_dim("size", d)?.unwrap_or(vec![2; d]);
            if size.contains(&0) {
                return Err(t.err("size", format!("{size:?} must be positive")));
            }
            let mode = match t.choice("interpolation", &["nearest", "bilinear", "linear"])? {
                Some("bilinear") | Some("linear") => crate::ops::UpsampleMode::Linear,
                _ => crate::ops::UpsampleMode::Nearest,
            };
            Box::new(Upsample { size, mode })
        }
        "residual" => {
            let body = sub_layers(t, input, rng)?;
            let act = activation(t, Activation::Linear)?;
            Box::new(Residual::new(body, input, act, rng)?)
        }
        "tcn" => {
            let d = TcnConfig::default();
            let padding = match t.choice("padding", &["causal", "same"])? {
                Some("same") => Padding::Same,
                _ => Padding::Causal,
            };
            let norm = match t.choice("normalization", TcnNorm::NAMES)? {
                Some(n) => TcnNorm::parse(n).unwrap_or(TcnNorm::None),
                None => TcnNorm::None,
            };
            let cfg = TcnConfig {
                nb_filters: t.usize("nb_filters")?.unwrap_or(d.nb_filters),
                kernel_size: t.usize("kernel_size")?.unwrap_or(d.kernel_size),
                nb_stacks: stacks(
                    t,
                    d.nb_stacks,
                    dilations(t)?.map_or(d.dilations.len(), |v| v.len()),
                )?,
                dilations: dilations(t)?.unwrap_or(d.dilations),
                padding,
                use_skip_connections: t
                    .bool("use_skip_connections")?
                    .unwrap_or(d.use_skip_connections),
                dropout_rate: t.f32("dropout_rate")?.unwrap_or(d.dropout_rate),
                return_sequences: t.bool("return_sequences")?.unwrap_or(d.return_sequences),
                activation: activation(t, d.activation)?,
                norm,
            };
            Box::new(Tcn::new(input.first().copied().unwrap_or(0), cfg, rng)?)
        }
        "wavenet" => {
            let d = WaveNetConfig::default();
            let dil = match (dilations(t)?, t.usize("layers_per_stack")?) {
                (Some(_), Some(_)) => {
                    return Err(t.err(
                        "layers_per_stack",
                        "give either `dilations` or `layers_per_stack` (dilations 1, 2, 4, ...), not both",
                    ));
                }
                (Some(v), None) => v,
                (None, Some(n)) if n > 62 => {
                    return Err(t.err(
                        "layers_per_stack",
                        format!("{n} layers make dilations beyond 2^62; at most 62"),
                    ));
                }
                (None, Some(n)) => crate::nn::wavenet_dilations(n),
                (None, None) => d.dilations,
            };
            let cfg = WaveNetConfig {
                residual_channels: t.usize("residual_channels")?.unwrap_or(d.residual_channels),
                skip_channels: t.usize("skip_channels")?.unwrap_or(d.skip_channels),
                output_channels: t.usize("output_channels")?.unwrap_or(d.output_channels),
                kernel_size: t.usize("kernel_size")?.unwrap_or(d.kernel_size),
                nb_stacks: stacks(t, d.nb_stacks, dil.len())?,
                dilations: dil,
                return_sequences: t.bool("return_sequences")?.unwrap_or(d.return_sequences),
            };
            Box::new(WaveNet::new(input.first().copied().unwrap_or(0), cfg, rng)?)
        }
        other => {
            return Err(t.err(
                "type",
                format!(
                    "unknown layer type \"{other}\"; expected one of: {}",
                    LAYER_TYPES.join(", ")
                ),
            ));
        }
    };
    Ok(layer)
}

/// The most residual blocks one TCN or WaveNet layer may stack (`nb_stacks` times the
/// dilations): far beyond any published model, and small enough to build and check at once.
pub const MAX_BLOCKS: usize = 4096;

/// `nb_stacks`, checked against [`MAX_BLOCKS`] with `per_stack` blocks in each stack.
fn stacks(t: &Table, default: usize, per_stack: usize) -> R<usize> {
    let n = t.usize("nb_stacks")?.unwrap_or(default);
    if n.saturating_mul(per_stack) > MAX_BLOCKS {
        return Err(t.err(
            "nb_stacks",
            format!(
                "{n} stacks of {per_stack} dilations make {} residual blocks; at most {MAX_BLOCKS}",
                n.saturating_mul(per_stack)
            ),
        ));
    }
    Ok(n)
}

/// `kernel_initializer`: how a conv or dense layer's weight is drawn instead of PyTorch's
/// default: `"he_normal"`, `"he_uniform"`, `"glorot_normal"`, `"glorot_uniform"` (Keras's
/// names), or `{ type = "normal", stddev = 0.02 }` (DCGAN's).
fn kernel_initializer(t: &Table, shape: &[usize], rng: &mut Rng) -> R<Option<crate::Tensor>> {
    use crate::init::{self, FanMode};
    let what = "\"he_normal\", \"he_uniform\", \"glorot_normal\", \"glorot_uniform\" or { type = \"normal\", stddev = ... }";
    let w = match t.get("kernel_initializer") {
        None => return Ok(None),
        Some(toml::Value::String(s)) => match s.as_str() {
            "default" => return Ok(None),
            "he_normal" => init::kaiming_normal(shape, FanMode::FanIn, 2f32.sqrt(), rng),
            "he_uniform" => init::kaiming_uniform(shape, FanMode::FanIn, 2f32.sqrt(), rng),
            "glorot_normal" => init::xavier_normal(shape, 1.0, rng),
            "glorot_uniform" => init::xavier_uniform(shape, 1.0, rng),
            _ => {
                return Err(t.err(
                    "kernel_initializer",
                    format!("expected {what}, got \"{s}\""),
                ));
            }
        },
        Some(toml::Value::Table(it)) => {
            let n = Table::new(t.path, format!("{}, key `kernel_initializer`", t.at), it);
            n.required("type", n.choice("type", &["normal"]), "\"normal\"")?;
            let std = n.f32("stddev")?.unwrap_or(0.05);
            let mean = n.f32("mean")?.unwrap_or(0.0);
            n.finish()?;
            if !(std >= 0.0) {
                return Err(t.err("kernel_initializer", format!("stddev {std} must be >= 0")));
            }
            crate::Tensor::randn(shape, rng)
                .and_then(|x| ops::add_scalar(&ops::mul_scalar(&x, std)?, mean))
        }
        Some(v) => return Err(t.err("kernel_initializer", format!("expected {what}, got {v}"))),
    };
    w.map(Some)
        .map_err(|e| t.err("kernel_initializer", e.to_string()))
}

/// `dilations`: a list of positive integers.
fn dilations(t: &Table) -> R<Option<Vec<usize>>> {
    Ok(t.int_list("dilations", false)?
        .map(|v| v.into_iter().flatten().collect()))
}

/// The `[[...layers]]` entries of a block, built in order from the block's input shape.
fn sub_layers(t: &Table, input: &[usize], rng: &mut Rng) -> R<Vec<Box<dyn Layer>>> {
    let entries = match t.get("layers") {
        Some(toml::Value::Array(a)) if !a.is_empty() => a,
        _ => {
            return Err(t.missing(
                "layers",
                "the block's layers, as [[model.layers.layers]] entries",
            ));
        }
    };
    let mut shape = input.to_vec();
    let mut out = Vec::new();
    for (j, e) in entries.iter().enumerate() {
        let toml::Value::Table(ct) = e else {
            return Err(t.err("layers", format!("entry {j} is not a table")));
        };
        let Some(toml::Value::String(kind)) = ct.get("type") else {
            return Err(Table::new(t.path, format!("{} > layer {j}", t.at), ct)
                .missing("type", &format!("one of: {}", LAYER_TYPES.join(", "))));
        };
        let child = Table::new(t.path, format!("{} > layer {j} ({kind})", t.at), ct);
        child.get("type");
        let layer = build(&child, kind, &shape, rng).map_err(|e| at_layer(&child, e))?;
        child.finish()?;
        shape = layer.infer(&shape).map_err(|e| at_layer(&child, e))?.output;
        out.push(layer);
    }
    Ok(out)
}

/// Turn a library error from building or checking a layer into a spec error at that layer,
/// naming the key at fault when the library names its parameter.
pub(crate) fn at_layer(t: &Table, e: Error) -> Error {
    let key = |p: &str| -> &'static str {
        match p {
            "kernel_size" => "kernel_size",
            "stride" | "strides" => "strides",
            "dilation" | "dilation_rate" => "dilation_rate",
            "groups" => "groups",
            "padding" => "padding",
            "output_padding" => "output_padding",
            "pool_size" => "pool_size",
            "units" => "units",
            "filters" => "filters",
            "rate" => "rate",
            "momentum" => "momentum",
            "epsilon" => "epsilon",
            "normalized_shape" => "normalized_shape",
            "activation" => "activation",
            "nb_filters" => "nb_filters",
            "dilations" => "dilations",
            "nb_stacks" => "nb_stacks",
            "dropout_rate" => "dropout_rate",
            "residual_channels" => "residual_channels",
            "skip_channels" => "skip_channels",
            "output_channels" => "output_channels",
            _ => "",
        }
    };
    match e {
        Error::Param { param, msg, .. } if !key(param).is_empty() => t.err(key(param), msg),
        Error::Param { param, msg, .. } => t.err_here(format!("{param}: {msg}")),
        Error::Shape { msg, .. } => t.err_here(msg),
        Error::Spec { .. } => e,
        other => t.err_here(other.to_string()),
    }
}
