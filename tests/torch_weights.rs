//! PyTorch state dicts in both directions: the fixtures of tools/make_torch_fixtures.py (each
//! example spec's PyTorch model, random weights as PyTorch names them, its outputs on fixed
//! inputs in eval mode) load into convnet and give PyTorch's outputs; what convnet writes back
//! carries PyTorch's names (the script checks that PyTorch loads it strictly).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{convnet, gunzip_into, torch_fixtures};
use convnet::Tensor;
use convnet::interop::torch;
use convnet::rng::Rng;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn model_of(spec: &str) -> convnet::nn::Sequential {
    common::fixture_model(spec)
}

#[test]
fn every_example_loads_pytorch_weights_and_gives_pytorch_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let all = torch_fixtures(dir.path());
    assert!(all.len() >= 16, "{} fixtures", all.len());
    let mut table = String::new();
    for (spec, io, weights) in &all {
        let model = model_of(spec);
        let imported = torch::load_torch(&model, weights).unwrap();
        assert!(!imported.native && imported.prefix.is_empty(), "{spec}");
        let has_bn = model
            .state_dict()
            .iter()
            .any(|(n, _)| n.ends_with("running_var"));
        assert_eq!(
            !imported.ignored.is_empty(),
            has_bn,
            "{spec}: {:?}",
            imported.ignored
        );
        assert!(
            imported
                .ignored
                .iter()
                .all(|n| n.ends_with("num_batches_tracked"))
        );
        model.load_state_dict(&imported.state, spec).unwrap();
        for i in 0.. {
            let (Some(x), Some(want)) =
                (io.get(&format!("input{i}")), io.get(&format!("output{i}")))
            else {
                break;
            };
            let mut rng = Rng::new(0);
            let mut ctx = convnet::nn::Ctx {
                training: false,
                rng: &mut rng,
                lengths: None,
            };
            let got = model.forward(x, &mut ctx).unwrap();
            let err = common::rel_err(&got, want);
            let scale = want.data().iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(scale > 1e-3, "{spec}: outputs of at most {scale}");
            table += &format!(
                "{spec:<26} input {:?}: outputs up to {scale:.3}, relative error {err:.1e}\n",
                x.shape()
            );
            assert!(
                err <= 1e-5,
                "{spec}, input{i} {:?}: relative error {err:e}",
                x.shape()
            );
        }
    }
    println!("{table}");
}

/// What convnet writes under PyTorch's names is the fixture again (less
/// `num_batches_tracked`, which PyTorch sets to 0 when absent).
#[test]
fn weights_go_back_under_pytorch_names() {
    let dir = tempfile::tempdir().unwrap();
    for (spec, _, weights) in torch_fixtures(dir.path()) {
        let model = model_of(&spec);
        model
            .load_state_dict(&torch::load_torch(&model, &weights).unwrap().state, &spec)
            .unwrap();
        let back: BTreeMap<String, Tensor> =
            torch::torch_state(&model).unwrap().into_iter().collect();
        let original = convnet::io::load_foreign(&weights).unwrap();
        assert_eq!(
            back.keys().collect::<Vec<_>>(),
            original.floats.keys().collect::<Vec<_>>(),
            "{spec}"
        );
        for (name, t) in &back {
            assert_eq!(
                t.data().to_vec(),
                original.floats[name].data().to_vec(),
                "{spec} {name}"
            );
        }
    }
}

/// The sunspots_conv1d fixture: `1.weight`, `1.bias` (the causal convolution, after its
/// padding module 0; its ReLU is module 2, the flatten module 3) and `4.weight`, `4.bias`
/// (the dense layer).
fn small(dir: &Path) -> (BTreeMap<String, Tensor>, convnet::nn::Sequential) {
    let gz = Path::new(ROOT).join("tests/torch/sunspots_conv1d.safetensors.gz");
    let file = convnet::io::load_foreign(&gunzip_into(&gz, dir)).unwrap();
    (file.floats, model_of("sunspots_conv1d"))
}

fn write(path: &Path, tensors: &BTreeMap<String, Tensor>) {
    let v: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect();
    convnet::io::save(path, &v, &BTreeMap::new()).unwrap();
}

#[test]
fn every_mismatch_is_reported_at_once_with_names_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut state, model) = small(dir.path());
    assert_eq!(
        state.keys().collect::<Vec<_>>(),
        ["1.bias", "1.weight", "4.bias", "4.weight"]
    );
    state.remove("4.bias");
    state.insert("9.weight".into(), Tensor::zeros(&[2, 2]).unwrap());
    state.insert("1.weight".into(), Tensor::zeros(&[16, 1, 5]).unwrap());
    let p = dir.path().join("bad.safetensors");
    write(&p, &state);
    let err = torch::load_torch(&model, &p).unwrap_err().to_string();
    for want in [
        "bad.safetensors",
        "3 problems",
        "missing `4.bias` of shape [1] (convnet's `layers.2.bias`)",
        "`1.weight` has shape [16, 1, 5], the model's `layers.0.weight` needs [16, 1, 4]",
        "unexpected `9.weight` of shape [2, 2]",
    ] {
        assert!(err.contains(want), "{want:?} not in:\n{err}");
    }
}

#[test]
fn a_wrapped_sequential_other_precisions_and_integer_buffers() {
    let dir = tempfile::tempdir().unwrap();
    let (state, model) = small(dir.path());
    // `self.net = nn.Sequential(...)`: every name below `net.`
    let wrapped: BTreeMap<String, Tensor> = state
        .iter()
        .map(|(n, t)| (format!("net.{n}"), t.clone()))
        .collect();
    let p = dir.path().join("wrapped.safetensors");
    write(&p, &wrapped);
    let imported = torch::load_torch(&model, &p).unwrap();
    assert_eq!(imported.prefix, "net.");
    assert_eq!(
        imported.state["layers.2.weight"].data().to_vec(),
        state["4.weight"].data().to_vec()
    );

    // bfloat16 weights are converted; an integer tensor other than num_batches_tracked is not
    // a weight
    let mut views = Vec::new();
    let mut bf16 = BTreeMap::new();
    for (n, t) in &state {
        let bytes: Vec<u8> = t
            .data()
            .iter()
            .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
            .collect();
        bf16.insert(n.clone(), (t.shape().to_vec(), bytes));
    }
    for (n, (shape, bytes)) in &bf16 {
        views.push((
            n.clone(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, shape.clone(), bytes)
                .unwrap(),
        ));
    }
    let steps = 7i64.to_le_bytes();
    views.push((
        "1.num_batches_tracked".into(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![], &steps).unwrap(),
    ));
    let p = dir.path().join("bf16.safetensors");
    safetensors::serialize_to_file(views.clone(), None, &p).unwrap();
    let imported = torch::load_torch(&model, &p).unwrap();
    assert_eq!(imported.ignored, ["1.num_batches_tracked"]);
    assert_eq!(imported.converted.len(), 4);
    assert!(
        imported.converted[0].ends_with("(BF16)"),
        "{:?}",
        imported.converted
    );
    let w = imported.state["layers.0.weight"].data().to_vec();
    let exact = state["1.weight"].data().to_vec();
    assert!(
        w.iter()
            .zip(&exact)
            .all(|(a, b)| (a - b).abs() <= b.abs() / 128.0)
    );

    views.push((
        "extra_steps".into(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![], &steps).unwrap(),
    ));
    let p = dir.path().join("int.safetensors");
    safetensors::serialize_to_file(views, None, &p).unwrap();
    let err = torch::load_torch(&model, &p).unwrap_err().to_string();
    assert!(
        err.contains("`extra_steps` is I64, not floating point"),
        "{err}"
    );
}

/// `import-weights` makes a run that `eval` and `export --torch` take; convnet's own weights
/// import as they are; an occupied folder is refused.
#[test]
fn import_weights_and_export_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let gz = Path::new(ROOT).join("tests/torch/sunspots_conv1d.safetensors.gz");
    let weights = gunzip_into(&gz, d);
    let spec = Path::new(ROOT).join("examples/sunspots_conv1d.toml");
    let spec = spec.to_str().unwrap();
    let w = weights.to_str().unwrap();
    let (ok, out, err) = convnet(d, &["import-weights", spec, w, "--out", "run"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("imported 4 tensors (PyTorch's names)"),
        "{out}"
    );
    let (ok, out, err) = convnet(d, &["eval", "run"]);
    assert!(ok && out.contains("MAE"), "{out}{err}");
    let (ok, _, err) = convnet(d, &["export", "run", "--torch", "back.safetensors"]);
    assert!(ok, "{err}");
    let back = convnet::io::load_foreign(&d.join("back.safetensors")).unwrap();
    let original = convnet::io::load_foreign(&weights).unwrap();
    assert_eq!(
        back.floats.keys().collect::<Vec<_>>(),
        original.floats.keys().collect::<Vec<_>>()
    );
    for (n, t) in &back.floats {
        assert_eq!(t.data().to_vec(), original.floats[n].data().to_vec(), "{n}");
    }
    let (ok, out, err) = convnet(
        d,
        &[
            "import-weights",
            spec,
            "run/best.safetensors",
            "--out",
            "again",
        ],
    );
    assert!(ok && out.contains("convnet's names"), "{out}{err}");
    let (ok, _, err) = convnet(d, &["import-weights", spec, w, "--out", "run"]);
    assert!(
        !ok && err.contains("already exists and is not empty"),
        "{err}"
    );
    // an existing file is replaced only when asked; a run's own files never
    let (ok, _, err) = convnet(d, &["export", "run", "--torch", "back.safetensors"]);
    assert!(
        !ok && err.contains("already exists") && err.contains("--overwrite"),
        "{err}"
    );
    let (ok, _, err) = convnet(
        d,
        &[
            "export",
            "run",
            "--torch",
            "back.safetensors",
            "--overwrite",
        ],
    );
    assert!(ok, "{err}");
    let best = std::fs::read(d.join("run/best.safetensors")).unwrap();
    let (ok, _, err) = convnet(
        d,
        &[
            "export",
            "run",
            "--onnx",
            "run/best.safetensors",
            "--overwrite",
        ],
    );
    assert!(!ok && err.contains("a file of the run"), "{err}");
    assert_eq!(std::fs::read(d.join("run/best.safetensors")).unwrap(), best);
    let (ok, _, err) = convnet(d, &["export", "run"]);
    assert!(!ok && err.contains("--onnx"), "{err}");
}

/// A GAN's two state dicts make a run that `generate` samples from.
#[test]
fn a_gan_imports_with_its_discriminator() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = Path::new(ROOT).join("tests/torch");
    let g = gunzip_into(&root.join("fashion_dcgan.safetensors.gz"), d);
    let disc = gunzip_into(&root.join("fashion_dcgan.discriminator.safetensors.gz"), d);
    let spec = Path::new(ROOT).join("examples/fashion_dcgan.toml");
    let (spec, g, disc) = (
        spec.to_str().unwrap(),
        g.to_str().unwrap(),
        disc.to_str().unwrap(),
    );
    let (ok, _, err) = convnet(d, &["import-weights", spec, g, "--out", "gan"]);
    assert!(!ok && err.contains("--discriminator"), "{err}");
    let (ok, out, err) = convnet(
        d,
        &[
            "import-weights",
            spec,
            g,
            "--discriminator",
            disc,
            "--out",
            "gan",
        ],
    );
    assert!(ok, "{out}{err}");
    let saved = convnet::io::load(&d.join("gan/discriminator.safetensors"))
        .unwrap()
        .0;
    assert_eq!(
        saved.len(),
        convnet::io::load_foreign(Path::new(disc))
            .unwrap()
            .floats
            .len()
    );
    let (ok, _, err) = convnet(d, &["generate", "gan", "--count", "4", "--out", "s.png"]);
    assert!(ok && d.join("s.png").exists(), "{err}");
}
