//! Golden tests: every op's output and every input's gradient against PyTorch's, from the
//! fixtures that tools/make_golden.py wrote (PyTorch 1.13, float64 rounded to f32). For each
//! case the loss is `sum(out * gout)` with the fixture's upstream gradient `gout`.

use std::collections::BTreeMap;
use std::path::Path;

use convnet::ops::{self, PadMode, Padding};
use convnet::{Result, Tensor};
use safetensors::SafeTensors;
use serde_json::Value;

struct Case {
    name: String,
    op: String,
    cfg: Value,
    tensors: BTreeMap<String, Tensor>,
}

fn load(path: &Path) -> Case {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        tensors.insert(
            name.to_string(),
            Tensor::from_vec(data, view.shape()).unwrap(),
        );
    }
    Case {
        name: path.file_stem().unwrap().to_string_lossy().into_owned(),
        op: meta["op"].clone(),
        cfg: serde_json::from_str(&meta["cfg"]).unwrap(),
        tensors,
    }
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}
fn u(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}
fn pair2(v: &Value) -> [usize; 2] {
    let x = usizes(v);
    [x[0], x[1]]
}

fn padding(v: &Value) -> Padding {
    match v {
        Value::String(s) if s == "valid" => Padding::Valid,
        Value::String(s) if s == "same" => Padding::Same,
        Value::String(s) if s == "causal" => Padding::Causal,
        Value::Array(a) => Padding::Explicit(a.iter().map(|p| (u(&p[0]), u(&p[1]))).collect()),
        other => panic!("padding {other}"),
    }
}

fn pad_mode(v: &Value) -> PadMode {
    match v.as_str().unwrap() {
        "zeros" => PadMode::Zeros,
        "reflect" => PadMode::Reflect,
        "replicate" => PadMode::Replicate,
        "circular" => PadMode::Circular,
        m => panic!("mode {m}"),
    }
}

fn f(v: &Value) -> f32 {
    v.as_f64().unwrap() as f32
}

fn pool2d_cfg(c: &Value) -> ops::Pool2dConfig {
    ops::Pool2dConfig {
        kernel: pair2(&c["kernel"]),
        stride: (!c["stride"].is_null()).then(|| pair2(&c["stride"])),
        padding: pair2(&c["padding"]),
        ceil_mode: c["ceil_mode"].as_bool().unwrap(),
        count_include_pad: c
            .get("count_include_pad")
            .and_then(Value::as_bool)
            .unwrap_or(true),
    }
}

fn pool1d_cfg(c: &Value) -> ops::Pool1dConfig {
    ops::Pool1dConfig {
        kernel: u(&c["kernel"]),
        stride: c["stride"].as_u64().map(|v| v as usize),
        padding: u(&c["padding"]),
        ceil_mode: c["ceil_mode"].as_bool().unwrap(),
        count_include_pad: c
            .get("count_include_pad")
            .and_then(Value::as_bool)
            .unwrap_or(true),
    }
}

/// Runs the case's op on its inputs (leaves that require grad).
fn run(case: &Case, t: &BTreeMap<String, Tensor>) -> Result<Tensor> {
    let c = &case.cfg;
    let g = |k: &str| {
        t.get(k)
            .unwrap_or_else(|| panic!("{}: no input {k}", case.name))
    };
    let x = || g("x");
    let b = t.get("b");
    match case.op.as_str() {
        "conv2d" => ops::conv2d(
            x(),
            g("w"),
            b,
            &ops::Conv2dConfig {
                stride: pair2(&c["stride"]),
                padding: padding(&c["padding"]),
                dilation: pair2(&c["dilation"]),
                groups: u(&c["groups"]),
                pad_mode: pad_mode(&c["pad_mode"]),
            },
        ),
        "conv1d" => ops::conv1d(
            x(),
            g("w"),
            b,
            &ops::Conv1dConfig {
                stride: u(&c["stride"]),
                padding: padding(&c["padding"]),
                dilation: u(&c["dilation"]),
                groups: u(&c["groups"]),
                pad_mode: pad_mode(&c["pad_mode"]),
            },
        ),
        "conv_transpose2d" => ops::conv_transpose2d(
            x(),
            g("w"),
            b,
            &ops::ConvTranspose2dConfig {
                stride: pair2(&c["stride"]),
                padding: pair2(&c["padding"]),
                output_padding: pair2(&c["output_padding"]),
                dilation: pair2(&c["dilation"]),
                groups: u(&c["groups"]),
            },
        ),
        "conv_transpose1d" => ops::conv_transpose1d(
            x(),
            g("w"),
            b,
            &ops::ConvTranspose1dConfig {
                stride: u(&c["stride"]),
                padding: u(&c["padding"]),
                output_padding: u(&c["output_padding"]),
                dilation: u(&c["dilation"]),
                groups: u(&c["groups"]),
            },
        ),
        "max_pool2d" => ops::max_pool2d(x(), &pool2d_cfg(c)),
        "avg_pool2d" => ops::avg_pool2d(x(), &pool2d_cfg(c)),
        "max_pool1d" => ops::max_pool1d(x(), &pool1d_cfg(c)),
        "avg_pool1d" => ops::avg_pool1d(x(), &pool1d_cfg(c)),
        "global_avg_pool2d" => ops::global_avg_pool2d(x()),
        "global_avg_pool1d" => ops::global_avg_pool1d(x()),
        "global_max_pool2d" => ops::global_max_pool2d(x()),
        "global_max_pool1d" => ops::global_max_pool1d(x()),
        "adaptive_avg_pool2d" => ops::adaptive_avg_pool2d(x(), pair2(&c["output_size"])),
        "adaptive_avg_pool1d" => ops::adaptive_avg_pool1d(x(), u(&c["output_size"])),
        "linear" => ops::linear(x(), g("w"), b),
        "matmul" => ops::matmul(g("a"), g("b")),
        "add" => ops::add(g("a"), g("b")),
        "sub" => ops::sub(g("a"), g("b")),
        "mul" => ops::mul(g("a"), g("b")),
        "div" => ops::div(g("a"), g("b")),
        "sum" | "mean" => {
            let axes: Vec<isize> = c["axes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap() as isize)
                .collect();
            let keep = c["keepdim"].as_bool().unwrap();
            if case.op == "sum" {
                ops::sum(x(), &axes, keep)
            } else {
                ops::mean(x(), &axes, keep)
            }
        }
        "sum_all" => ops::sum_all(x()),
        "mean_all" => ops::mean_all(x()),
        "reshape" => ops::reshape(x(), &usizes(&c["shape"])),
        "flatten" => ops::flatten(x(), u(&c["start"]), u(&c["end"])),
        "permute" => ops::permute(x(), &usizes(&c["dims"])),
        "transpose" => ops::transpose(x(), u(&c["a"]), u(&c["b"])),
        "concat" => ops::concat(&[g("a"), g("b")], u(&c["axis"])),
        "slice" => ops::slice(x(), u(&c["axis"]), u(&c["start"]), u(&c["end"])),
        "pad" => {
            let pads: Vec<(usize, usize)> = c["pads"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (u(&p[0]), u(&p[1])))
                .collect();
            ops::pad(x(), &pads, pad_mode(&c["mode"]), 0.0)
        }
        "relu" => ops::relu(x()),
        "leaky_relu" => ops::leaky_relu(x(), f(&c["slope"])),
        "elu" => ops::elu(x(), f(&c["alpha"])),
        "gelu" => ops::gelu(x()),
        "sigmoid" => ops::sigmoid(x()),
        "tanh" => ops::tanh(x()),
        "softmax" => ops::softmax(x(), c["axis"].as_i64().unwrap() as isize),
        "log_softmax" => ops::log_softmax(x(), c["axis"].as_i64().unwrap() as isize),
        "exp" => ops::exp(x()),
        "log" => ops::log(x()),
        "sqrt" => ops::sqrt(x()),
        "neg" => ops::neg(x()),
        "abs" => ops::abs(x()),
        "add_scalar" => ops::add_scalar(x(), f(&c["s"])),
        "mul_scalar" => ops::mul_scalar(x(), f(&c["s"])),
        "broadcast_to" => ops::broadcast_to(x(), &usizes(&c["shape"])),
        "sum_to_shape" => ops::sum_to_shape(x(), &usizes(&c["shape"])),
        "batch_norm" => ops::batch_norm(
            x(),
            &ops::BatchNormArgs {
                weight: t.get("w"),
                bias: t.get("b"),
                running_mean: t.get("running_mean"),
                running_var: t.get("running_var"),
                training: c["training"].as_bool().unwrap(),
                momentum: f(&c["momentum"]),
                eps: f(&c["eps"]),
            },
        ),
        "weight_norm" => ops::weight_norm(x(), &t["g"]),
        "upsample_nearest2d" | "upsample_bilinear2d" => {
            let s = usizes(&c["scale"]);
            let mode = if case.op == "upsample_nearest2d" {
                ops::UpsampleMode::Nearest
            } else {
                ops::UpsampleMode::Linear
            };
            ops::upsample2d(x(), [s[0], s[1]], mode)
        }
        "upsample_nearest1d" | "upsample_linear1d" => {
            let mode = if case.op == "upsample_nearest1d" {
                ops::UpsampleMode::Nearest
            } else {
                ops::UpsampleMode::Linear
            };
            ops::upsample1d(x(), c["scale"].as_u64().unwrap() as usize, mode)
        }
        "layer_norm" => ops::layer_norm(
            x(),
            &usizes(&c["normalized_shape"]),
            t.get("w"),
            t.get("b"),
            f(&c["eps"]),
        ),
        "cross_entropy" => ops::cross_entropy(
            x(),
            &usizes(&c["targets"]),
            &ops::CrossEntropyOptions {
                class_weights: c
                    .get("class_weights")
                    .map(|w| w.as_array().unwrap().iter().map(f).collect()),
                label_smoothing: c.get("label_smoothing").map_or(0.0, f),
            },
        ),
        "bce_with_logits" => {
            ops::binary_cross_entropy_with_logits(x(), g("t"), c.get("pos_weight").map(f))
        }
        "mse" => ops::mse(x(), g("t")),
        "mae" => ops::mae(x(), g("t")),
        "huber" => ops::huber(x(), g("t"), f(&c["delta"])),
        other => panic!("{}: no runner for op {other}", case.name),
    }
}

/// Elementwise work must agree to 1e-5 relative, long reductions to 1e-4; the scale floor is
/// the expected tensor's mean magnitude, so values that cancel to near zero are judged
/// against the size of what was summed.
fn tolerance(op: &str) -> f32 {
    match op {
        "relu" | "leaky_relu" | "elu" | "gelu" | "sigmoid" | "tanh" | "exp" | "log" | "sqrt"
        | "neg" | "abs" | "add_scalar" | "mul_scalar" | "broadcast_to" | "add" | "sub" | "mul"
        | "div" | "reshape" | "flatten" | "permute" | "transpose" | "concat" | "slice" | "pad" => {
            1e-5
        }
        _ => 1e-4,
    }
}

fn compare(case: &str, what: &str, got: &Tensor, want: &Tensor, rtol: f32) -> Option<String> {
    if got.shape() != want.shape() {
        return Some(format!(
            "{case}: {what} shape {:?}, PyTorch {:?}",
            got.shape(),
            want.shape()
        ));
    }
    let (g, w) = (got.data(), want.data());
    let scale = w.iter().map(|v| v.abs()).sum::<f32>() / w.len().max(1) as f32;
    for (i, (a, b)) in g.iter().zip(w.iter()).enumerate() {
        if !((a - b).abs() <= rtol * (b.abs() + scale.max(1e-3))) {
            return Some(format!(
                "{case}: {what}[{i}] = {a}, PyTorch {b} (rtol {rtol})"
            ));
        }
    }
    None
}

/// Three steps of an optimizer against `torch.optim` from the same start and gradients.
fn check_optimizer(case: &Case) -> Vec<String> {
    use convnet::optim::{Optimizer, OptimizerKind};
    let c = &case.cfg;
    let g = |k: &str, d: f32| c.get(k).map_or(d, f);
    let betas = c
        .get("betas")
        .map(|b| (f(&b[0]), f(&b[1])))
        .unwrap_or((0.9, 0.999));
    let kind = match c["type"].as_str().unwrap() {
        "sgd" => OptimizerKind::Sgd {
            momentum: g("momentum", 0.0),
            nesterov: c.get("nesterov").and_then(Value::as_bool).unwrap_or(false),
            dampening: 0.0,
        },
        "adam" => OptimizerKind::Adam {
            beta1: betas.0,
            beta2: betas.1,
            eps: g("eps", 1e-8),
        },
        "adamw" => OptimizerKind::AdamW {
            beta1: betas.0,
            beta2: betas.1,
            eps: g("eps", 1e-8),
        },
        "rmsprop" => OptimizerKind::RmsProp {
            alpha: g("alpha", 0.99),
            eps: g("eps", 1e-8),
            momentum: g("momentum", 0.0),
        },
        t => panic!("optimizer {t}"),
    };
    let mut opt = Optimizer::new(kind, g("weight_decay", 0.0)).unwrap();
    let p = case.tensors["in.p"].deep_clone().requires_grad_();
    let grads = case.tensors["in.grads"].to_vec();
    let want = case.tensors["out"].to_vec();
    let n = p.numel();
    let params = vec![("w".to_string(), p.clone())];
    let mut failures = Vec::new();
    for step in 0..3 {
        // Give the parameter its gradient through a backward pass: d(sum(p * g))/dp = g.
        let gt = Tensor::from_vec(grads[step * n..(step + 1) * n].to_vec(), &[n]).unwrap();
        ops::sum_all(&ops::mul(&p, &gt).unwrap())
            .unwrap()
            .backward()
            .unwrap();
        opt.step(&params, g("lr", 0.1)).unwrap();
        let got = Tensor::from_vec(p.to_vec(), &[n]).unwrap();
        let exp = Tensor::from_vec(want[step * n..(step + 1) * n].to_vec(), &[n]).unwrap();
        failures.extend(compare(
            &case.name,
            &format!("params after step {}", step + 1),
            &got,
            &exp,
            1e-5,
        ));
    }
    failures
}

/// A schedule's learning rate and momentum at every step against `torch.optim.lr_scheduler`.
fn check_schedule(case: &Case) -> Vec<String> {
    use convnet::optim::{OneCycle, Schedule, ScheduleState};
    let c = &case.cfg;
    let g = |k: &str, d: f32| c.get(k).map_or(d, f);
    let d = OneCycle::default();
    let s = Schedule::OneCycle(OneCycle {
        max_lr: Some(g("max_lr", 0.0)),
        pct_start: g("pct_start", d.pct_start),
        div_factor: g("div_factor", d.div_factor),
        final_div_factor: g("final_div_factor", d.final_div_factor),
        three_phase: c
            .get("three_phase")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        momentum: Some((g("base_momentum", 0.85), g("max_momentum", 0.95))),
    });
    let (epochs, steps) = (g("epochs", 1.0) as usize, g("steps", 1.0) as usize);
    let (mut lr, mut mom) = (Vec::new(), Vec::new());
    for e in 0..epochs {
        for i in 0..steps {
            // the optimizer's own lr does not matter once max_lr is given
            lr.push(s.lr(1.0, &ScheduleState::default(), e, i, steps, epochs));
            mom.push(s.momentum(e, i, steps, epochs).unwrap());
        }
    }
    let n = lr.len();
    let mut failures = Vec::new();
    for (what, got) in [("lr", lr), ("momentum", mom)] {
        let got = Tensor::from_vec(got, &[n]).unwrap();
        failures.extend(compare(&case.name, what, &got, &case.tensors[what], 1e-5));
    }
    failures
}

#[test]
fn every_op_matches_pytorch_forward_and_backward() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.retain(|p| p.extension().is_some_and(|e| e == "safetensors"));
    paths.sort();
    assert!(
        paths.len() >= 100,
        "expected the committed fixtures in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    let mut ops_seen = std::collections::BTreeSet::new();
    for p in &paths {
        let case = load(p);
        if case.op == "optimizer" {
            failures.extend(check_optimizer(&case));
            continue;
        }
        if case.op == "schedule" {
            failures.extend(check_schedule(&case));
            continue;
        }
        ops_seen.insert(case.op.clone());
        let mut inputs = BTreeMap::new();
        for (k, v) in &case.tensors {
            if let Some(name) = k.strip_prefix("in.") {
                let leaf = v.deep_clone();
                let leaf = if name.starts_with("running_") {
                    leaf
                } else {
                    leaf.requires_grad_()
                };
                inputs.insert(name.to_string(), leaf);
            }
        }
        let out = match run(&case, &inputs) {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("{}: {e}", case.name));
                continue;
            }
        };
        let rtol = tolerance(&case.op);
        failures.extend(compare(
            &case.name,
            "output",
            &out,
            &case.tensors["out"],
            rtol,
        ));
        let loss = ops::sum_all(&ops::mul(&out, &case.tensors["gout"]).unwrap()).unwrap();
        loss.backward().unwrap();
        for (k, want) in &case.tensors {
            if let Some(name) = k.strip_prefix("grad.") {
                match inputs[name].grad() {
                    Some(got) => failures.extend(compare(&case.name, k, &got, want, rtol)),
                    None => failures.push(format!("{}: no gradient for {name}", case.name)),
                }
            }
            if let Some(name) = k.strip_prefix("extra.") {
                let stat = name.trim_end_matches("_after");
                failures.extend(compare(&case.name, k, &inputs[stat], want, rtol));
            }
        }
    }
    for op in ops::OPS.iter().flat_map(|(_, v)| v.iter()) {
        // Dropout's masks come from convnet's own generator, not PyTorch's: it is pinned by
        // its statistics and its gradient check instead (tests/engine.rs, tests/gradcheck.rs).
        let untested = ["dropout", "spatial_dropout"];
        let alias = match *op {
            "binary_cross_entropy_with_logits" => "bce_with_logits",
            o => o,
        };
        if !untested.contains(op) && !ops_seen.contains(alias) {
            failures.push(format!("op {op} has no golden fixture"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Whole models (tests/golden/models/, written by tools/make_golden.py): a spec, parameters
/// under convnet's names, and PyTorch's output and gradients from a functional statement of
/// the blocks (TCN with weight norm and skips, WaveNet, a residual block with batch norm).
#[test]
fn whole_models_match_pytorch_forward_and_backward() {
    use convnet::nn::Ctx;
    use convnet::spec::Spec;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/models");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    assert_eq!(
        paths.len(),
        3,
        "the committed model fixtures in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    for p in paths {
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        let (tensors, meta) = convnet::io::load(&p).unwrap();
        let spec = Spec::parse(&meta["spec"], &p).unwrap();
        let model = spec
            .build_model(&mut convnet::Rng::new(0))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let state: BTreeMap<String, Tensor> = tensors
            .iter()
            .filter_map(|(k, t)| {
                let k = k.strip_prefix("in.")?;
                (k != "x").then(|| (k.to_string(), t.deep_clone()))
            })
            .collect();
        model
            .load_state_dict(&state, &name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let x = tensors["in.x"].deep_clone().requires_grad_();
        let y = model
            .forward(
                &x,
                &mut Ctx {
                    training: false,
                    rng: &mut convnet::Rng::new(0),
                    lengths: None,
                },
            )
            .unwrap();
        failures.extend(compare(&name, "out", &y, &tensors["out"], 1e-4));
        ops::sum_all(&ops::mul(&y, &tensors["gout"]).unwrap())
            .unwrap()
            .backward()
            .unwrap();
        failures.extend(compare(
            &name,
            "grad.x",
            &x.grad().unwrap(),
            &tensors["grad.x"],
            1e-4,
        ));
        let params: BTreeMap<String, Tensor> = model.named_params().into_iter().collect();
        let mut checked = 0;
        for (k, want) in &tensors {
            let Some(pname) = k.strip_prefix("grad.").filter(|n| *n != "x") else {
                continue;
            };
            match params.get(pname).and_then(|t| t.grad()) {
                Some(g) => failures.extend(compare(&name, k, &g, want, 1e-4)),
                None => failures.push(format!("{name}: no gradient for {pname}")),
            }
            checked += 1;
        }
        assert_eq!(
            checked,
            params.len(),
            "{name}: every parameter's gradient is in the fixture"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
