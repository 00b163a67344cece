//! The fuzzing harness: every reader of user files is fed structured mutations of real seeds
//! (`fuzz/mutate.rs`) and must return an error or a value, never panic, abort or hang. The
//! process runs under a 256 MiB memory budget, so that a size taken on trust is refused, not
//! allocated.
//!
//! CI runs `CONVNET_FUZZ_CASES` (default 2,000) cases per reader; a long run:
//!
//! ```text
//! CONVNET_FUZZ_CASES=1000000 cargo test --release --test fuzz -- --nocapture
//! ```
//!
//! A release build wraps integer overflow silently; a debug run (`CONVNET_FUZZ_CASES=60000
//! cargo test --test fuzz`) has overflow checks and finds size arithmetic that is not checked.
//!
//! A failing input is written to `target/fuzz-failures/<reader>/`; once fixed, it is kept in
//! `tests/fuzz/regressions/<reader>/` under a name saying what it pins, and replayed by
//! [`regressions_stay_fixed`].

use std::path::{Path, PathBuf};
use std::sync::Once;

use convnet::Rng;

mod common;
#[path = "fuzz/mutate.rs"]
mod mutate;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn cases() -> usize {
    std::env::var("CONVNET_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

thread_local! {
    static IN_READER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn quiet() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        convnet::limits::set_budget(256 << 20);
        // a reader's panic is reported by the harness with its input; the tests' own
        // assertions still print
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_READER.with(|r| r.get()) {
                default(info);
            }
        }));
    });
}

/// `reader` on `path`, its panic caught.
fn run(reader: Reader, path: &Path) -> std::thread::Result<Result<(), String>> {
    IN_READER.with(|r| r.set(true));
    let r = std::panic::catch_unwind(|| reader(path));
    IN_READER.with(|r| r.set(false));
    r
}

/// A reader under test: parses the file at the path it is given.
type Reader = fn(&Path) -> Result<(), String>;

/// Feed `reader` `n` mutations of each seed (written to a scratch file named `file`);
/// return the panicking inputs.
fn fuzz(
    name: &str,
    file: &str,
    seeds: &[Vec<u8>],
    binary: bool,
    reader: Reader,
    n: usize,
) -> usize {
    quiet();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file);
    let mut rng = Rng::new(0x5eed ^ name.len() as u64);
    let (mut errors, mut values, mut panics) = (0, 0, Vec::new());
    let started = std::time::Instant::now();
    for i in 0..n {
        let seed = &seeds[i % seeds.len()];
        let input = mutate::mutate(seed, &mut rng, binary);
        std::fs::write(&path, &input).unwrap();
        match run(reader, &path) {
            Ok(Ok(())) => values += 1,
            Ok(Err(_)) => errors += 1,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let out = PathBuf::from(ROOT).join("target/fuzz-failures").join(name);
                std::fs::create_dir_all(&out).unwrap();
                std::fs::write(out.join(format!("case-{i}-{file}")), &input).unwrap();
                panics.push(format!("case {i}: {msg}"));
            }
        }
    }
    eprintln!(
        "fuzz {name}: {n} cases in {:.1} s: {values} read, {errors} refused, {} panics",
        started.elapsed().as_secs_f64(),
        panics.len()
    );
    assert!(
        panics.is_empty(),
        "{name}: {} panics, e.g. {:?}",
        panics.len(),
        &panics[..panics.len().min(5)]
    );
    n
}

fn read(p: &str) -> Vec<u8> {
    std::fs::read(Path::new(ROOT).join(p)).unwrap()
}

fn head(p: &str, lines: usize) -> Vec<u8> {
    let text = String::from_utf8(read(p)).unwrap();
    text.lines()
        .take(lines)
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .into_bytes()
}

fn e2s<T>(r: convnet::Result<T>) -> Result<(), String> {
    r.map(|_| ()).map_err(|e| e.to_string())
}

// ---- the readers, as the commands use them ----

fn spec_reader(p: &Path) -> Result<(), String> {
    let spec = convnet::spec::Spec::read(p).map_err(|e| e.to_string())?;
    // the shape checks and arithmetic of every layer, on shapes alone
    let model =
        convnet::tensor::meta(|| spec.build_model(&mut Rng::new(0))).map_err(|e| e.to_string())?;
    e2s(convnet::explain::summarize(&model))?;
    e2s(convnet::train::memory::estimate_spec(&spec))
}

fn idx_reader(p: &Path) -> Result<(), String> {
    let images = e2s(convnet::data::read_idx_images(p));
    let labels = e2s(convnet::data::read_idx_labels(p));
    images.or(labels)
}

fn npy_reader(p: &Path) -> Result<(), String> {
    e2s(convnet::data::read_npy(p))
}

/// Every array of an archive, as training reads them.
fn npz_reader(p: &Path) -> Result<(), String> {
    let names = convnet::data::npz_names(p).map_err(|e| e.to_string())?;
    for name in names {
        e2s(convnet::data::read_npz(p, &name))?;
    }
    Ok(())
}

/// A PyTorch state dict (any dtypes) read for the sunspots_conv1d example model.
fn torch_reader(p: &Path) -> Result<(), String> {
    let spec = convnet::spec::Spec::load(&Path::new(ROOT).join("examples/sunspots_conv1d.toml"))
        .map_err(|e| e.to_string())?;
    let model = spec
        .build_model(&mut Rng::new(0))
        .map_err(|e| e.to_string())?;
    e2s(convnet::interop::torch::load_torch(&model, p))
}

/// An ONNX model read as a spec and weights, and the spec built.
fn onnx_reader(p: &Path) -> Result<(), String> {
    let imported = convnet::interop::onnx::import(p).map_err(|e| e.to_string())?;
    let spec = convnet::spec::Spec::parse(&imported.spec, Path::new("imported.toml"))
        .map_err(|e| e.to_string())?;
    let model =
        convnet::tensor::meta(|| spec.build_model(&mut Rng::new(0))).map_err(|e| e.to_string())?;
    e2s(convnet::explain::summarize(&model))
}

fn csv_reader(p: &Path) -> Result<(), String> {
    e2s(convnet::data::read_csv(p, "label", &[1, 2, 2], 255.0))
}

fn series_reader(p: &Path) -> Result<(), String> {
    let how = convnet::data::SeriesRead {
        time_column: Some("month".into()),
        interpolate: true,
        ..Default::default()
    };
    let _ = convnet::data::read_series_csv(p, &convnet::data::SeriesRead::default());
    e2s(convnet::data::read_series_csv(p, &how))
}

fn ts_reader(p: &Path) -> Result<(), String> {
    e2s(convnet::data::class_names(p, false))?;
    e2s(convnet::data::read_ts(p, None))
}

fn tsv_reader(p: &Path) -> Result<(), String> {
    e2s(convnet::data::class_names(p, true))?;
    e2s(convnet::data::read_ucr_tsv(p, None))
}

fn image_reader(p: &Path) -> Result<(), String> {
    let any = e2s(convnet::data::read_image(p, 3));
    let fixed = e2s(convnet::data::image_to_sample(p, &[1, 8, 8], true));
    any.and(fixed)
}

/// The model of the checkpoint seed.
fn small_model() -> convnet::nn::Sequential {
    let text = "[model]\ninput = [1, 8, 8]\n[[model.layers]]\ntype = \"conv2d\"\nfilters = 2\nkernel_size = 3\n[[model.layers]]\ntype = \"batch_norm\"\n[[model.layers]]\ntype = \"flatten\"\n[[model.layers]]\ntype = \"dense\"\nunits = 3\n";
    let spec = convnet::spec::Spec::parse(text, Path::new("small.toml")).unwrap();
    spec.build_model(&mut Rng::new(1)).unwrap()
}

fn checkpoint_reader(p: &Path) -> Result<(), String> {
    let (tensors, _) = convnet::io::load(p).map_err(|e| e.to_string())?;
    let model = small_model();
    let (model_t, opt_t): (
        std::collections::BTreeMap<_, _>,
        std::collections::BTreeMap<_, _>,
    ) = tensors
        .into_iter()
        .partition(|(k, _)| !k.starts_with("state."));
    e2s(model.load_state_dict(&model_t, "checkpoint"))?;
    let kind = convnet::optim::OptimizerKind::Adam {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    let mut opt = convnet::optim::Optimizer::new(kind, 0.0).unwrap();
    e2s(opt.load_state(&opt_t, 3, &model.named_params(), p))
}

fn run_json_reader(p: &Path) -> Result<(), String> {
    let dir = p.parent().unwrap();
    let info = convnet::train::RunInfo::load(dir).map_err(|e| e.to_string())?;
    let text = "[model]\ninput = [1, 8, 8]\n[[model.layers]]\ntype = \"flatten\"\n[[model.layers]]\ntype = \"dense\"\nunits = 3\n";
    let spec = convnet::spec::Spec::parse(text, Path::new("spec.toml")).unwrap();
    let model = spec.build_model(&mut Rng::new(0)).unwrap();
    e2s(info.check(&spec, &model, dir))?;
    let _ = info.normalize();
    Ok(())
}

// ---- seeds ----

fn spec_seeds() -> Vec<Vec<u8>> {
    let mut v: Vec<_> = std::fs::read_dir(Path::new(ROOT).join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn idx_seeds() -> Vec<Vec<u8>> {
    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 4];
    images.extend((0..48).map(|i| (i * 5) as u8));
    let labels = vec![0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 0];
    let gz = |b: &[u8]| {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    };
    vec![gz(&images), images.clone(), labels.clone(), gz(&labels)]
}

fn png_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let gray = image::GrayImage::from_fn(8, 8, |x, y| image::Luma([(x * 30 + y) as u8]));
    let rgb = image::RgbImage::from_fn(5, 7, |x, y| image::Rgb([x as u8 * 40, y as u8 * 30, 7]));
    for (img, fmt) in [
        (
            image::DynamicImage::ImageLuma8(gray),
            image::ImageFormat::Png,
        ),
        (
            image::DynamicImage::ImageRgb8(rgb.clone()),
            image::ImageFormat::Png,
        ),
        (
            image::DynamicImage::ImageRgb8(rgb.clone()),
            image::ImageFormat::Jpeg,
        ),
        (
            image::DynamicImage::ImageRgb8(rgb.clone()),
            image::ImageFormat::Bmp,
        ),
        (
            image::DynamicImage::ImageRgb8(rgb.clone()),
            image::ImageFormat::Gif,
        ),
        (
            image::DynamicImage::ImageRgb8(rgb.clone()),
            image::ImageFormat::Tiff,
        ),
        (
            image::DynamicImage::ImageRgb8(rgb),
            image::ImageFormat::WebP,
        ),
    ] {
        let mut c = std::io::Cursor::new(Vec::new());
        img.write_to(&mut c, fmt).unwrap();
        out.push(c.into_inner());
    }
    out
}

fn checkpoint_seeds() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.safetensors");
    let model = small_model();
    let mut tensors = model.state_dict();
    for (n, t) in model.named_params() {
        let state = convnet::Tensor::from_vec(vec![0.5; t.numel()], &[t.numel()]).unwrap();
        tensors.push((format!("state.{n}.0"), state.clone()));
        tensors.push((format!("state.{n}.1"), state));
    }
    let meta = [("loop".to_string(), "{\"epoch\":1,\"step\":0}".to_string())].into();
    convnet::io::save(&p, &tensors, &meta).unwrap();
    let with_sum = std::fs::read(&p).unwrap();
    // the same without the checksum, as another tool writes it: mutations reach the checks
    // behind the checksum
    let (t, _) = convnet::io::load(&p).unwrap();
    let tensors = t
        .iter()
        .map(|(k, v)| (k.clone(), v.shape().to_vec(), v.to_vec()))
        .collect();
    let plain = common::safetensors_plain(tensors, None);
    vec![with_sum, plain]
}

fn run_json_seeds() -> Vec<Vec<u8>> {
    let info = serde_json::json!({
        "convnet_version": "0.1.0", "class_names": ["a", "b", "c"], "normalize_mean": [0.5],
        "normalize_std": [0.25], "best_epoch": 2, "monitor": "val_loss", "finished": true,
        "seed": 7, "epochs": 3, "threads": 2, "target_names": [], "target_mean": [], "target_std": []
    });
    vec![serde_json::to_vec_pretty(&info).unwrap()]
}

// ---- one test per reader ----

#[test]
fn fuzz_spec() {
    fuzz(
        "spec",
        "spec.toml",
        &spec_seeds(),
        false,
        spec_reader,
        cases(),
    );
}

#[test]
fn fuzz_idx() {
    fuzz("idx", "data.idx", &idx_seeds(), true, idx_reader, cases());
}

fn npy_seeds() -> Vec<Vec<u8>> {
    use common::npy;
    vec![
        npy(
            &[2, 3],
            "<f4",
            &(0..6)
                .flat_map(|i| (i as f32).to_le_bytes())
                .collect::<Vec<_>>(),
        ),
        npy(
            &[4],
            "<i8",
            &(0..4)
                .flat_map(|i| (i as i64).to_le_bytes())
                .collect::<Vec<_>>(),
        ),
        npy(&[2, 2, 2], "|u1", &(0..8).collect::<Vec<u8>>()),
        npy(
            &[3],
            "<f8",
            &(0..3)
                .flat_map(|i| (i as f64).to_le_bytes())
                .collect::<Vec<_>>(),
        ),
    ]
}

#[test]
fn fuzz_npy() {
    fuzz("npy", "data.npy", &npy_seeds(), true, npy_reader, cases());
}

#[test]
fn fuzz_npz() {
    // the archives NumPy writes: stored (np.savez) and deflated (np.savez_compressed)
    let fixtures = Path::new(ROOT).join("tests/fixtures");
    let seeds: Vec<Vec<u8>> = ["arrays.npz", "arrays_compressed.npz"]
        .iter()
        .map(|f| std::fs::read(fixtures.join(f)).unwrap())
        .collect();
    fuzz("npz", "data.npz", &seeds, true, npz_reader, cases());
}

#[test]
fn fuzz_torch_state_dict() {
    use std::io::Read;
    let mut seed = Vec::new();
    let gz = Path::new(ROOT).join("tests/torch/sunspots_conv1d.safetensors.gz");
    flate2::read::GzDecoder::new(std::fs::File::open(gz).unwrap())
        .read_to_end(&mut seed)
        .unwrap();
    fuzz(
        "torch",
        "weights.safetensors",
        &[seed],
        true,
        torch_reader,
        cases(),
    );
}

#[test]
fn fuzz_onnx() {
    let seeds: Vec<Vec<u8>> = ["causal_1d", "resnet", "vgg_bn"]
        .iter()
        .map(|m| std::fs::read(Path::new(ROOT).join(format!("tests/onnx/{m}.onnx"))).unwrap())
        .collect();
    fuzz("onnx", "model.onnx", &seeds, true, onnx_reader, cases());
}

#[test]
fn fuzz_csv() {
    let seed = b"label,p0,p1,p2,p3\n0,0,10,255,3\n1,30,0,0,0\n2,1.5,2,3,4\n".to_vec();
    fuzz("csv", "data.csv", &[seed], false, csv_reader, cases());
}

#[test]
fn fuzz_series_csv() {
    let seeds = [
        head("data/sunspots/sunspots_monthly.csv", 40),
        head("data/airline/airline.csv", 30),
    ];
    fuzz(
        "series",
        "series.csv",
        &seeds,
        false,
        series_reader,
        cases(),
    );
}

#[test]
fn fuzz_ts() {
    let seeds = [
        head("data/ucr/ItalyPowerDemand_TRAIN.ts", 40),
        head("data/ucr/GunPoint_TRAIN.ts", 24),
    ];
    fuzz("ts", "data.ts", &seeds, false, ts_reader, cases());
}

#[test]
fn fuzz_tsv() {
    let seed = b"1\t0.5\t0.25\t-1\t2\n2\t1\t2\t3\t4\n1\t0\t0\t0\t1\n-1\t3\t2\t1\t0\n".to_vec();
    fuzz("tsv", "data.tsv", &[seed], false, tsv_reader, cases());
}

#[test]
fn fuzz_image() {
    fuzz(
        "image",
        "image.png",
        &png_seeds(),
        true,
        image_reader,
        cases(),
    );
}

#[test]
fn fuzz_checkpoint() {
    fuzz(
        "checkpoint",
        "checkpoint.safetensors",
        &checkpoint_seeds(),
        true,
        checkpoint_reader,
        cases(),
    );
}

#[test]
fn fuzz_run_json() {
    fuzz(
        "run_json",
        "run.json",
        &run_json_seeds(),
        false,
        run_json_reader,
        cases(),
    );
}

/// Every input that once failed, replayed through its reader: it must not panic, and it must
/// be refused, unless its name says `.ok.` (read: e.g. a huge model that a summary answers for).
#[test]
fn regressions_stay_fixed() {
    quiet();
    let readers: [(&str, Reader); 13] = [
        ("onnx", onnx_reader),
        ("torch", torch_reader),
        ("npy", npy_reader),
        ("npz", npz_reader),
        ("spec", spec_reader),
        ("idx", idx_reader),
        ("csv", csv_reader),
        ("series", series_reader),
        ("ts", ts_reader),
        ("tsv", tsv_reader),
        ("image", image_reader),
        ("checkpoint", checkpoint_reader),
        ("run_json", run_json_reader),
    ];
    let root = Path::new(ROOT).join("tests/fuzz/regressions");
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for (name, reader) in readers {
        let Ok(entries) = std::fs::read_dir(root.join(name)) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            // run.json is read by its name from its folder
            let input = if name == "run_json" {
                let at = dir.path().join("run.json");
                std::fs::copy(&p, &at).unwrap();
                at
            } else {
                p.clone()
            };
            let r = run(reader, &input);
            let Ok(r) = r else {
                panic!("{} panics again", p.display())
            };
            let ok = p.to_string_lossy().contains(".ok.");
            assert_eq!(r.is_ok(), ok, "{}: {r:?}", p.display());
            checked += 1;
        }
    }
    assert!(checked >= 14, "{checked} regression files");
}

/// Writes the regression files that pin the reliability issue's cases at the readers (run
/// once with `cargo test --release --test fuzz -- --ignored`; the files are committed).
#[test]
#[ignore]
fn write_issue_regressions() {
    use std::io::Write;
    let root = Path::new(ROOT).join("tests/fuzz/regressions");
    let put = |reader: &str, name: &str, bytes: &[u8]| {
        std::fs::create_dir_all(root.join(reader)).unwrap();
        std::fs::write(root.join(reader).join(name), bytes).unwrap();
    };
    let layer = |body: &str| format!("[model]\ninput = [1, 28, 28]\n[[model.layers]]\n{body}\n");
    put(
        "spec",
        "conv_filters_1e9.ok.toml",
        layer("type = \"conv2d\"\nfilters = 1000000000\nkernel_size = 3").as_bytes(),
    );
    put("spec", "dense_units_1e12.ok.toml", "[model]\ninput = [1, 28, 28]\n[[model.layers]]\ntype = \"flatten\"\n[[model.layers]]\ntype = \"dense\"\nunits = 1000000000000\n".as_bytes());
    put(
        "spec",
        "padding_i64_max.toml",
        layer("type = \"conv2d\"\nfilters = 4\nkernel_size = 3\npadding = 9223372036854775807")
            .as_bytes(),
    );
    put(
        "spec",
        "tcn_nb_stacks_1e9.toml",
        b"[model]\ninput = [1, 32]\n[[model.layers]]\ntype = \"tcn\"\nnb_stacks = 1000000000\n",
    );
    put("spec", "lr_beyond_f32.toml", b"[model]\ninput = [1, 4]\n[[model.layers]]\ntype = \"flatten\"\n[train]\noptimizer = { type = \"adam\", lr = 1e39 }\n");
    let run = |names: &str, mean: &str, std: &str| {
        format!(
            "{{\"convnet_version\": \"0.1.0\", \"class_names\": {names}, \"normalize_mean\": {mean}, \"normalize_std\": {std}, \"best_epoch\": 1, \"monitor\": \"val_loss\", \"finished\": true, \"seed\": 1, \"epochs\": 1}}"
        )
    };
    put(
        "run_json",
        "class_names_empty.ok.json",
        run("[]", "[0.5]", "[0.2]").as_bytes(),
    );
    put(
        "run_json",
        "class_names_short.json",
        run("[\"a\"]", "[0.5]", "[0.2]").as_bytes(),
    );
    put(
        "run_json",
        "std_shorter_than_mean.json",
        run("[\"a\", \"b\", \"c\"]", "[0.5, 0.5]", "[0.2]").as_bytes(),
    );
    put(
        "run_json",
        "std_zero.json",
        run("[\"a\", \"b\", \"c\"]", "[0.5]", "[0]").as_bytes(),
    );
    // an IDX header announcing 10 images before 16 MiB of zeros, gzip-compressed
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&[0, 0, 8, 3, 0, 0, 0, 10, 0, 0, 0, 28, 0, 0, 0, 28])
        .unwrap();
    gz.write_all(&vec![0u8; 16 << 20]).unwrap();
    put("idx", "gzip_bomb_beyond_header.gz", &gz.finish().unwrap());
    put(
        "idx",
        "header_u32_max_dims",
        &[
            0, 0, 8, 3, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 1, 2, 3,
        ],
    );
    // a PNG declaring 20000 x 20000 pixels with a few bytes of data
    let png = common::png_declaring(20000, 20000);
    put("image", "png_declaring_20000x20000.png", &png);
    // checkpoints naming optimizer slots 999999999999 and u64::MAX
    let model = small_model();
    for (name, slot) in [
        ("slot_999999999999", "999999999999"),
        ("slot_u64_max", "18446744073709551615"),
    ] {
        let mut t = model.state_dict();
        t.push((
            format!("state.layers.0.weight.{slot}"),
            convnet::Tensor::from_vec(vec![0.0], &[1]).unwrap(),
        ));
        let p = root.join("checkpoint").join(format!("{name}.safetensors"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        convnet::io::save(&p, &t, &Default::default()).unwrap();
    }
}
