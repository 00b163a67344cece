//! Helpers shared by the tests that run the `convnet` binary.
#![allow(dead_code)] // each test crate uses some of the helpers

use std::path::{Path, PathBuf};
use std::process::Command;

use convnet::rng::Rng;

/// Run the binary with `args` in `dir`; returns (success, stdout, stderr).
pub fn convnet(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_convnet"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run the binary in `dir` with at most `mem_mib` MiB of address space (`ulimit -v`), so
/// that an attempt to allocate beyond it aborts; assert it failed cleanly (exit 1, not a
/// panic's 101 or an abort's 134) within `secs` seconds, and that the message holds every
/// `want`. Returns the message.
pub fn refused_within(dir: &Path, args: &[&str], want: &[&str], mem_mib: u64, secs: u64) -> String {
    let started = std::time::Instant::now();
    let out = Command::new("sh")
        .current_dir(dir)
        .arg("-c")
        .arg(format!(
            "ulimit -v {} && exec \"$0\" \"$@\"",
            mem_mib * 1024
        ))
        .arg(env!("CARGO_BIN_EXE_convnet"))
        .args(args)
        .output()
        .expect("the binary runs");
    let took = started.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "convnet {args:?}: {err}");
    assert!(
        took < secs as f64,
        "convnet {args:?} took {took:.1} s: {err}"
    );
    assert_eq!(
        err.trim().lines().count(),
        1,
        "convnet {args:?}: not one line:\n{err}"
    );
    for w in want {
        assert!(
            err.contains(w),
            "convnet {args:?}: expected `{w}` in:\n{err}"
        );
    }
    err
}

/// 8x8 images of a horizontal (0), vertical (1) or diagonal (2) bar with noise.
pub fn bars(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut r = Rng::new(seed);
    let mut px = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..n {
        let c = r.below(3);
        let at = 1 + r.below(6);
        let mut img = [0u8; 64];
        for v in img.iter_mut() {
            *v = (r.uniform() * 60.0) as u8;
        }
        for k in 0..8 {
            let (y, x) = match c {
                0 => (at, k),
                1 => (k, at),
                _ => (k, k),
            };
            img[y * 8 + x] = 255;
        }
        px.extend_from_slice(&img);
        labels.push(c as u8);
    }
    (px, labels)
}

pub fn write_idx(path: &Path, magic: u8, dims: &[u32], data: &[u8]) {
    let mut b = vec![0, 0, 8, magic];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    std::fs::write(path, b).unwrap();
}

/// A small DCGAN: a generator of 8x8 images from 8 noise values, and its discriminator.
pub const GAN: &str = r#"
[generator]
input = [8]
[[generator.layers]]
type = "dense"
units = 64
activation = "relu"
[[generator.layers]]
type = "reshape"
target_shape = [4, 4, 4]
[[generator.layers]]
type = "conv2d_transpose"
filters = 1
kernel_size = 4
strides = 2
padding = "same"
activation = "tanh"
[discriminator]
input = [1, 8, 8]
[[discriminator.layers]]
type = "conv2d"
filters = 4
kernel_size = 3
strides = 2
padding = "same"
activation = "leaky_relu"
alpha = 0.2
[[discriminator.layers]]
type = "flatten"
[[discriminator.layers]]
type = "dense"
units = 1
"#;

pub const MODEL: &str = r#"
[model]
input = [1, 8, 8]
[[model.layers]]
type = "conv2d"
filters = 4
kernel_size = 3
padding = "same"
activation = "relu"
[[model.layers]]
type = "max_pool2d"
pool_size = 2
[[model.layers]]
type = "flatten"
[[model.layers]]
type = "dropout"
rate = 0.2
[[model.layers]]
type = "dense"
units = 3
"#;

/// A temporary folder with train/test IDX files of [`bars`] and `bars.toml` training
/// [`MODEL`] on them (3 epochs of 15 steps; `extra_train` goes into `[train]`).
pub fn setup(extra_train: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (px, lab) = bars(300, 1);
    write_idx(&d.join("train-images"), 3, &[300, 8, 8], &px);
    write_idx(&d.join("train-labels"), 1, &[300], &lab);
    let (px, lab) = bars(90, 2);
    write_idx(&d.join("test-images"), 3, &[90, 8, 8], &px);
    write_idx(&d.join("test-labels"), 1, &[90], &lab);
    let spec = format!(
        "{MODEL}
[data]
format = \"idx\"
train_images = \"train-images\"
train_labels = \"train-labels\"
test_images = \"test-images\"
test_labels = \"test-labels\"
validation_split = 0.2
class_names = [\"horizontal\", \"vertical\", \"diagonal\"]
[data.augment]
translate = 0.1
[train]
epochs = 3
batch_size = 16
seed = 5
optimizer = {{ type = \"adam\", lr = 0.01 }}
{extra_train}
"
    );
    let p = d.join("bars.toml");
    std::fs::write(&p, spec).unwrap();
    (dir, p)
}

/// A `.npy` file (format 1.0) of `descr` values with `shape`.
pub fn npy(shape: &[usize], descr: &str, data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

/// A PNG that declares `w x h` grayscale pixels and holds a few bytes of data.
pub fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend(kind);
        out.extend(data);
        out.extend(crc.sum().to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut z, &[0; 64]).unwrap();
    chunk(&mut png, b"IDAT", &z.finish().unwrap());
    chunk(&mut png, b"IEND", &[]);
    png
}

/// A safetensors file of f32 `tensors` (name, shape, values) and `metadata`, as another tool
/// writes it: without convnet's checksum.
pub fn safetensors_plain(
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Vec<u8> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(k, s, v)| (k, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<_> = bytes
        .iter()
        .map(|(k, s, b)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b);
            (k.clone(), view.unwrap())
        })
        .collect();
    safetensors::serialize(views, metadata).unwrap()
}

/// The gzipped file `gz` unpacked into `dir` (its name without `.gz`).
pub fn gunzip_into(gz: &Path, dir: &Path) -> PathBuf {
    use std::io::Read;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(gz).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    let out = dir.join(gz.file_stem().unwrap());
    std::fs::write(&out, bytes).unwrap();
    out
}

/// The PyTorch fixtures of tools/make_torch_fixtures.py: per example spec with one, its name,
/// its inputs and outputs (`input0`, `output0`, ...) and its weights unpacked into `dir`.
pub fn torch_fixtures(
    dir: &Path,
) -> Vec<(
    String,
    std::collections::BTreeMap<String, convnet::Tensor>,
    PathBuf,
)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torch");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&root).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let Some(spec) = name.strip_suffix(".io.safetensors") else {
            continue;
        };
        let (io, meta) = convnet::io::load(&p).unwrap();
        let weights = gunzip_into(&root.join(&meta["weights"]), dir);
        out.push((spec.to_string(), io, weights));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The model a fixture of tools/make_torch_fixtures.py is for: `NAME` the model of
/// examples/NAME.toml (a GAN's generator), `NAME.discriminator` a GAN's discriminator.
pub fn fixture_model(name: &str) -> convnet::nn::Sequential {
    let (spec, disc) = match name.strip_suffix(".discriminator") {
        Some(s) => (s, true),
        None => (name, false),
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(format!("{spec}.toml"));
    let spec = convnet::spec::Spec::load(&path).unwrap();
    let mut rng = Rng::new(7);
    if disc {
        spec.build_discriminator(&mut rng).unwrap().unwrap()
    } else {
        spec.build_model(&mut rng).unwrap()
    }
}

/// The largest difference between `got` and `want` relative to the largest value of `want`.
pub fn rel_err(got: &convnet::Tensor, want: &convnet::Tensor) -> f64 {
    assert_eq!(got.shape(), want.shape());
    let scale = want
        .data()
        .iter()
        .fold(0f64, |m, v| m.max(v.abs() as f64))
        .max(1e-12);
    got.data()
        .iter()
        .zip(want.data().iter())
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .fold(0.0, f64::max)
        / scale
}
