//! ONNX export: every example model (with the PyTorch fixtures' weights, whose batch-norm
//! statistics are not the trivial ones; a GAN's generator and discriminator), and small models for the ops the
//! examples do not use, written as ONNX; `onnx.checker` accepts each file and ONNX Runtime's
//! outputs equal convnet's within 1e-5 relative (tools/check_onnx.py, in the virtual
//! environment .ci/run makes). Without that environment the ONNX Runtime check is skipped
//! with a message, unless CI is set.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{convnet, npy, torch_fixtures};
use convnet::Tensor;
use convnet::interop::onnx::proto::ModelProto;
use convnet::rng::Rng;
use prost::Message;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn npy_f32(t: &Tensor) -> Vec<u8> {
    let bytes: Vec<u8> = t.data().iter().flat_map(|v| v.to_le_bytes()).collect();
    npy(t.shape(), "<f4", &bytes)
}

/// convnet's outputs of `model` on `inputs` in eval mode.
fn outputs(model: &convnet::nn::Sequential, x: &Tensor) -> Tensor {
    let mut rng = Rng::new(0);
    let mut ctx = convnet::nn::Ctx {
        training: false,
        rng: &mut rng,
        lengths: None,
    };
    model.forward(x, &mut ctx).unwrap()
}

/// Write `model` as `dir/name.onnx` with its inputs and convnet's outputs for the check.
fn case(
    dir: &Path,
    name: &str,
    model: &convnet::nn::Sequential,
    inputs: &[Tensor],
    opset: Option<i64>,
) {
    convnet::interop::onnx::save(model, &dir.join(format!("{name}.onnx")), opset).unwrap();
    for (i, x) in inputs.iter().enumerate() {
        std::fs::write(dir.join(format!("{name}.in{i}.npy")), npy_f32(x)).unwrap();
        let y = outputs(model, x);
        std::fs::write(dir.join(format!("{name}.out{i}.npy")), npy_f32(&y)).unwrap();
    }
}

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut r = Rng::new(seed);
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|_| r.normal()).collect(), shape).unwrap()
}

/// A model with its weights drawn and its batch-norm statistics moved off 0 and 1.
fn drawn(spec: &convnet::spec::Spec, seed: u64) -> convnet::nn::Sequential {
    let model = spec.build_model(&mut Rng::new(seed)).unwrap();
    let mut r = Rng::new(seed + 1);
    for (name, t) in model.state_dict() {
        if name.ends_with("running_var") || name.ends_with("running_mean") {
            let var = name.ends_with("running_var");
            for v in t.data_mut().iter_mut() {
                *v = if var {
                    0.5 + r.uniform()
                } else {
                    0.3 * r.normal()
                };
            }
        }
    }
    model
}

fn spec_of(text: &str) -> convnet::spec::Spec {
    convnet::spec::Spec::parse(text, Path::new("test.toml")).unwrap()
}

/// Small models for what the examples do not cover.
const EXTRA: &[(&str, &str, &[usize])] = &[
    (
        "ops_2d",
        r#"[model]
input = [3, 13, 11]
[[model.layers]]
type = "conv2d"
filters = 6
kernel_size = [3, 2]
strides = 2
padding = "same"
activation = "elu"
[[model.layers]]
type = "conv2d"
filters = 6
kernel_size = 3
groups = 3
dilation_rate = 2
padding = "same"
padding_mode = "reflect"
activation = "gelu"
[[model.layers]]
type = "avg_pool2d"
pool_size = 3
strides = 2
padding = 1
ceil_mode = true
count_include_pad = false
[[model.layers]]
type = "upsample"
size = 2
[[model.layers]]
type = "conv2d"
filters = 4
kernel_size = 1
padding_mode = "replicate"
[[model.layers]]
type = "upsample"
size = [2, 3]
interpolation = "bilinear"
[[model.layers]]
type = "spatial_dropout"
rate = 0.3
[[model.layers]]
type = "max_pool2d"
pool_size = 2
ceil_mode = true
[[model.layers]]
type = "flatten"
[[model.layers]]
type = "dense"
units = 12
activation = "leaky_relu"
alpha = 0.2
[[model.layers]]
type = "reshape"
target_shape = [3, 4]
[[model.layers]]
type = "layer_norm"
[[model.layers]]
type = "dense"
units = 5
activation = "tanh"
[[model.layers]]
type = "flatten"
[[model.layers]]
type = "activation"
activation = "log_softmax"
"#,
        &[2, 3, 13, 11],
    ),
    (
        "ops_1d",
        r#"[model]
input = [2, "any"]
[[model.layers]]
type = "conv1d"
filters = 4
kernel_size = 4
padding = "same"
activation = "sigmoid"
[[model.layers]]
type = "conv1d_transpose"
filters = 3
kernel_size = 3
strides = 2
padding = "same"
[[model.layers]]
type = "batch_norm"
[[model.layers]]
type = "max_pool1d"
pool_size = 2
[[model.layers]]
type = "conv1d"
filters = 4
kernel_size = 3
padding = [[2, 1]]
padding_mode = "replicate"
[[model.layers]]
type = "global_max_pool"
[[model.layers]]
type = "dense"
units = 3
activation = "softmax"
"#,
        &[2, 2, 19],
    ),
];

/// Runs tools/check_onnx.py on `dir` in the ONNX Runtime environment, or says why not.
fn onnx_runtime_check(dir: &Path) {
    let python = PathBuf::from(ROOT).join("target/onnx-venv/bin/python");
    if !python.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but target/onnx-venv (onnx, onnxruntime) is missing: .ci/run makes it"
        );
        eprintln!(
            "ONNX Runtime check skipped: target/onnx-venv is missing (.ci/run makes it: python3 -m venv target/onnx-venv; target/onnx-venv/bin/pip install onnx onnxruntime numpy)"
        );
        return;
    }
    let out = std::process::Command::new(python)
        .arg(Path::new(ROOT).join("tools/check_onnx.py"))
        .arg(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_example_model_runs_the_same_in_onnx_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cases");
    std::fs::create_dir(&dir).unwrap();
    let mut names = Vec::new();
    for (spec, io, weights) in torch_fixtures(tmp.path()) {
        let model = common::fixture_model(&spec);
        let state = convnet::interop::torch::load_torch(&model, &weights)
            .unwrap()
            .state;
        model.load_state_dict(&state, &spec).unwrap();
        let inputs: Vec<Tensor> = (0..)
            .map_while(|i| io.get(&format!("input{i}")).cloned())
            .collect();
        case(&dir, &spec, &model, &inputs, None);
        names.push(spec);
    }
    // circular padding: a Pad node of mode "wrap", from opset 19
    let circular = drawn(
        &spec_of(
            "[model]\ninput = [2, 12]\n[[model.layers]]\ntype = \"conv1d\"\nfilters = 3\nkernel_size = 5\npadding = \"same\"\npadding_mode = \"circular\"\n",
        ),
        8,
    );
    case(
        &dir,
        "circular_opset19",
        &circular,
        &[random(&[2, 2, 12], 9)],
        Some(19),
    );
    for (name, text, shape) in EXTRA {
        let model = drawn(&spec_of(text), 5);
        let mut inputs = vec![random(shape, 6)];
        if name == &"ops_1d" {
            inputs.push(random(&[1, 2, 30], 7)); // another length
        }
        case(&dir, name, &model, &inputs, None);
        // the composed GELU before opset 20, the GELU node from it
        if name == &"ops_2d" {
            case(&dir, "ops_2d_opset13", &model, &inputs, Some(13));
            case(&dir, "ops_2d_opset21", &model, &inputs, Some(21));
        }
    }
    // every example, the GAN's two models among them
    assert!(
        names.len() >= 16 && names.contains(&"fashion_dcgan.discriminator".to_string()),
        "{names:?}"
    );
    // the files are ONNX as their schema reads them: named input and output, dynamic batch
    let bytes = std::fs::read(dir.join("fashion_fcn.onnx")).unwrap();
    let m = ModelProto::decode(bytes.as_slice()).unwrap();
    let g = m.graph.unwrap();
    assert_eq!(m.opset_import[0].version, 17);
    assert_eq!(
        (g.input[0].name.as_str(), g.output[0].name.as_str()),
        ("input", "output")
    );
    let dims = |v: &convnet::interop::onnx::proto::ValueInfoProto| -> Vec<String> {
        use convnet::interop::onnx::proto::{tensor_shape_proto::dimension::Value, type_proto};
        let Some(type_proto::Value::TensorType(t)) =
            v.r#type.as_ref().and_then(|t| t.value.clone())
        else {
            panic!("not a tensor")
        };
        t.shape
            .unwrap()
            .dim
            .iter()
            .map(|d| match d.value.clone().unwrap() {
                Value::DimValue(n) => n.to_string(),
                Value::DimParam(p) => p,
            })
            .collect()
    };
    assert_eq!(dims(&g.input[0]), ["N", "1", "H", "W"]);
    assert_eq!(dims(&g.output[0]), ["N", "10"]);
    let ops: BTreeMap<&str, usize> = g.node.iter().fold(BTreeMap::new(), |mut m, n| {
        *m.entry(n.op_type.as_str()).or_default() += 1;
        m
    });
    assert_eq!(ops.get("Conv"), Some(&4), "{ops:?}");
    assert_eq!(ops.get("BatchNormalization"), Some(&3), "{ops:?}");
    onnx_runtime_check(&dir);
}

#[test]
fn what_onnx_cannot_express_is_an_error_naming_the_layer() {
    // circular padding is a Pad mode from opset 19
    let spec = spec_of(
        "[model]\ninput = [1, 8]\n[[model.layers]]\ntype = \"conv1d\"\nfilters = 2\nkernel_size = 3\npadding = \"same\"\npadding_mode = \"circular\"\n",
    );
    let model = spec.build_model(&mut Rng::new(0)).unwrap();
    let err = convnet::interop::onnx::export(&model, Some(17))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layers.0") && err.contains("opset 19"),
        "{err}"
    );
    assert!(convnet::interop::onnx::export(&model, Some(19)).is_ok());
    let err = convnet::interop::onnx::export(&model, Some(9))
        .unwrap_err()
        .to_string();
    assert!(err.contains("13 to 21"), "{err}");
    // a TCN's layer normalisation has no ONNX form here
    let spec = spec_of(
        "[model]\ninput = [1, 16]\n[[model.layers]]\ntype = \"tcn\"\nnb_filters = 4\nkernel_size = 2\ndilations = [1, 2]\nnormalization = \"layer\"\n",
    );
    let model = spec.build_model(&mut Rng::new(0)).unwrap();
    let err = convnet::interop::onnx::export(&model, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("layers.0/blocks.0/norm1"), "{err}");
}

#[test]
fn export_writes_onnx_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let gz = Path::new(ROOT).join("tests/torch/sunspots_conv1d.safetensors.gz");
    let weights = common::gunzip_into(&gz, d);
    let spec = Path::new(ROOT).join("examples/sunspots_conv1d.toml");
    let (ok, _, err) = convnet(
        d,
        &[
            "import-weights",
            spec.to_str().unwrap(),
            weights.to_str().unwrap(),
            "--out",
            "run",
        ],
    );
    assert!(ok, "{err}");
    let (ok, out, err) = convnet(d, &["export", "run", "--onnx", "m.onnx", "--opset", "19"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("ONNX opset 19, input `input` (N, 1, 24)"),
        "{out}"
    );
    let m = ModelProto::decode(std::fs::read(d.join("m.onnx")).unwrap().as_slice()).unwrap();
    assert_eq!(m.opset_import[0].version, 19);
    let (ok, _, err) = convnet(d, &["export", "run", "--onnx", "m.onnx", "--opset", "30"]);
    assert!(!ok && err.contains("30"), "{err}");
}
