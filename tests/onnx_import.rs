//! ONNX import: models PyTorch exported (tools/make_onnx_fixtures.py: a LeNet, a VGG-style net
//! with batch norm, a small ResNet, a causal dilated 1-D net) become run directories whose
//! model gives PyTorch's outputs; a node convnet cannot express is an error naming it.

mod common;

use std::path::Path;

use common::convnet;
use convnet::Tensor;
use convnet::interop::onnx::proto::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto};
use convnet::rng::Rng;
use prost::Message;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn pytorch_exported_models_import_and_give_pytorch_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let mut table = String::new();
    for name in ["lenet", "vgg_bn", "resnet", "causal_1d"] {
        let onnx = Path::new(ROOT).join(format!("tests/onnx/{name}.onnx"));
        let out = dir.path().join(name);
        convnet::interop::onnx::import_run(&onnx, &out).unwrap();
        let (_, model, _) = convnet::train::load_run(&out).unwrap();
        let (io, _) =
            convnet::io::load(&Path::new(ROOT).join(format!("tests/onnx/{name}.io.safetensors")))
                .unwrap();
        let mut rng = Rng::new(0);
        let mut ctx = convnet::nn::Ctx {
            training: false,
            rng: &mut rng,
            lengths: None,
        };
        let got = model.forward(&io["input0"], &mut ctx).unwrap();
        let err = common::rel_err(&got, &io["output0"]);
        let kinds: Vec<String> = model
            .report()
            .unwrap()
            .iter()
            .map(|r| r.kind.clone())
            .collect();
        table += &format!("{name:<10} relative error {err:.1e}  {}\n", kinds.join(" "));
        assert!(err <= 1e-5, "{name}: {err:e}");
    }
    println!("{table}");
    // what the walk made of the residual network and the causal net
    assert!(table.contains("residual"), "{table}");
    let spec = std::fs::read_to_string(dir.path().join("causal_1d/spec.toml")).unwrap();
    assert!(
        spec.contains("padding = [[2, 0]]") && spec.contains("dilation_rate = [4]"),
        "{spec}"
    );
}

#[test]
fn an_imported_model_is_a_run_the_commands_take() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let onnx = Path::new(ROOT).join("tests/onnx/lenet.onnx");
    let (ok, out, err) = convnet(d, &["import", onnx.to_str().unwrap(), "--out", "lenet"]);
    assert!(
        ok && out.contains("12 layers with 10 weights"),
        "{out}{err}"
    );
    let (ok, out, err) = convnet(d, &["summary", "lenet/spec.toml"]);
    assert!(
        ok && out.contains("61,706 trainable parameters"),
        "{out}{err}"
    );
    // an image through the imported model: predict and explain
    let img =
        image::GrayImage::from_fn(28, 28, |x, y| image::Luma([((x * 9 + y * 5) % 256) as u8]));
    img.save(d.join("digit.png")).unwrap();
    let (ok, out, err) = convnet(d, &["predict", "lenet", "digit.png", "--json"]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = convnet(d, &["explain", "lenet", "digit.png", "--out", "lenet.html"]);
    assert!(ok && d.join("lenet.html").exists(), "{err}");
    // and back out as ONNX
    let (ok, _, err) = convnet(d, &["export", "lenet", "--onnx", "again.onnx"]);
    assert!(ok, "{err}");
    let (ok, _, err) = convnet(d, &["import", onnx.to_str().unwrap(), "--out", "lenet"]);
    assert!(!ok && err.contains("not empty"), "{err}");
}

/// A graph of one node of `op` between an input and an output.
fn one_node(op: &str) -> Vec<u8> {
    use convnet::interop::onnx::proto::{
        TensorShapeProto, TypeProto, ValueInfoProto, tensor_shape_proto::Dimension,
        tensor_shape_proto::dimension::Value, type_proto,
    };
    let value = |name: &str| ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1,
                shape: Some(TensorShapeProto {
                    dim: [1, 3, 8, 8]
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            node: vec![NodeProto {
                name: "the_node".into(),
                op_type: op.into(),
                input: vec!["x".into()],
                output: vec!["y".into()],
                ..Default::default()
            }],
            input: vec![value("x")],
            output: vec![value("y")],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn a_node_convnet_cannot_express_is_named_with_its_op_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.onnx");
    std::fs::write(&p, one_node("LRN")).unwrap();
    let err = convnet::interop::onnx::import(&p)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("node `the_node` (LRN)") && err.contains("no convnet layer"),
        "{err}"
    );
    std::fs::write(&p, b"not protobuf at all").unwrap();
    let err = convnet::interop::onnx::import(&p)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("m.onnx") && err.contains("not an ONNX model"),
        "{err}"
    );
    // a truncated real model
    let bytes = std::fs::read(Path::new(ROOT).join("tests/onnx/resnet.onnx")).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 3]).unwrap();
    assert!(convnet::interop::onnx::import(&p).is_err());
}

/// An imported model fine-tunes: `train --init-from` starts from its weights.
#[test]
fn an_imported_model_fine_tunes_from_its_weights() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let onnx = Path::new(ROOT).join("tests/onnx/lenet.onnx");
    convnet::interop::onnx::import_run(&onnx, &d.join("lenet")).unwrap();
    let mut r = Rng::new(1);
    let pixels: Vec<u8> = (0..64 * 784).map(|_| (r.uniform() * 255.0) as u8).collect();
    let labels: Vec<u8> = (0..64).map(|i| (i % 10) as u8).collect();
    common::write_idx(&d.join("x.idx"), 3, &[64, 28, 28], &pixels);
    common::write_idx(&d.join("y.idx"), 1, &[64], &labels);
    let spec = std::fs::read_to_string(d.join("lenet/spec.toml")).unwrap()
        + "\n[data]\nformat = \"idx\"\ntrain_images = \"x.idx\"\ntrain_labels = \"y.idx\"\nnormalize = \"scale\"\n[train]\nepochs = 1\nbatch_size = 32\n[train.optimizer]\ntype = \"sgd\"\nlr = 1e-6\n";
    std::fs::write(d.join("tune.toml"), spec).unwrap();
    let (ok, out, err) = convnet(
        d,
        &[
            "train",
            "tune.toml",
            "--init-from",
            "lenet",
            "--out",
            "tuned",
        ],
    );
    assert!(ok, "{out}{err}");
    let (ok, _, err) = convnet(d, &["train", "tune.toml", "--out", "fresh"]);
    assert!(ok, "{err}");
    let weights = |run: &str| {
        let p = [
            d.join(run).join("best.safetensors"),
            d.join(run).join("last.safetensors"),
        ]
        .into_iter()
        .find(|p| p.exists())
        .unwrap();
        convnet::io::load(&p).unwrap().0
    };
    let (imported, tuned, fresh) = (weights("lenet"), weights("tuned"), weights("fresh"));
    let diff = |a: &Tensor, b: &Tensor| {
        a.data()
            .iter()
            .zip(b.data().iter())
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    let w = "layers.0.weight";
    assert!(
        diff(&tuned[w], &imported[w]) < 1e-4,
        "{}",
        diff(&tuned[w], &imported[w])
    );
    assert!(diff(&fresh[w], &imported[w]) > 1e-2);
    // a model of other tensors is refused, naming the run
    std::fs::write(d.join("other.toml"), "[model]\ninput = [1, 28, 28]\n[[model.layers]]\ntype = \"flatten\"\n[[model.layers]]\ntype = \"dense\"\nunits = 10\n[data]\nformat = \"idx\"\ntrain_images = \"x.idx\"\ntrain_labels = \"y.idx\"\n[train]\nepochs = 1\n").unwrap();
    let (ok, _, err) = convnet(
        d,
        &["train", "other.toml", "--init-from", "lenet", "--out", "o"],
    );
    assert!(!ok && err.contains("lenet"), "{err}");
}
