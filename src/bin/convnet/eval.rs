//! `convnet eval DIR [--data test|val|train|PATH] [--labels PATH] [--json]`: loss, accuracy,
//! per-class precision and recall, and the confusion matrix (text, and PNG in DIR).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use convnet::data::{Dataset, read_csv, read_folder, read_idx_images, read_idx_labels};
use convnet::spec::{DataSource, Spec};
use convnet::train::autoencoder::AutoencoderReport;
use convnet::train::forecast::ForecastReport;
use convnet::train::{self, Task, plot};

fn load_path(spec: &Spec, path: &Path, labels: Option<&Path>) -> Result<Dataset> {
    if path.is_dir() {
        let any = spec.any_size.iter().skip(1).all(|&a| a) && spec.any_size.len() > 1;
        return Ok(read_folder(
            path,
            &spec.input,
            spec.data.as_ref().is_some_and(|d| d.resize),
            any,
        )?
        .0);
    }
    let is_csv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if is_csv {
        let (col, max) = match spec.data.as_ref().map(|d| &d.source) {
            Some(DataSource::Csv {
                label_column,
                pixel_max,
                ..
            }) => (label_column.clone(), *pixel_max),
            _ => ("label".to_string(), 255.0),
        };
        return Ok(read_csv(path, &col, &spec.input, max)?);
    }
    let Some(labels) = labels else {
        bail!(
            "{}: IDX images need their labels: pass --labels PATH (or give a .csv file or a folder of class subfolders)",
            path.display()
        );
    };
    let (pixels, n, h, w) = read_idx_images(path)?;
    let lab = read_idx_labels(labels)?;
    if lab.len() != n {
        bail!(
            "{}: {} labels for the {n} images of {}",
            labels.display(),
            lab.len(),
            path.display()
        );
    }
    if spec.input != [1, h, w] {
        bail!(
            "{}: the images are 1x{h}x{w} but the model's input is {:?}",
            path.display(),
            spec.input
        );
    }
    Ok(Dataset {
        shape: spec.input.clone(),
        pixels,
        labels: lab,
        ..Default::default()
    })
}

/// The `test`, `val` or `train` part of a run's data; `otherwise` says what to pass instead
/// when the part is missing.
fn split_of(p: train::Prepared, data: &str, otherwise: &str) -> Result<Dataset> {
    Ok(match data {
        "test" => p
            .test
            .ok_or_else(|| anyhow::anyhow!("the spec names no test data; {otherwise}"))?,
        "val" => p.val.ok_or_else(|| {
            anyhow::anyhow!("the run had no validation split (validation_split = 0)")
        })?,
        _ => (*p.train).clone(),
    })
}

/// The autoencoder's reconstruction error beside PCA's.
pub fn print_autoencoder_report(
    out: &mut dyn Write,
    r: &AutoencoderReport,
    data: &str,
    png: &Path,
) -> Result<()> {
    writeln!(
        out,
        "reconstruction of {} {data} images, mean squared error per pixel (pixels in [0, 1]):",
        r.samples
    )?;
    writeln!(
        out,
        "  autoencoder (code of {} values)  {:.5}",
        r.code_size, r.model_mse
    )?;
    writeln!(
        out,
        "  PCA, {} components               {:.5}",
        r.code_size, r.pca_mse
    )?;
    let gain = 100.0 * (1.0 - r.model_mse / r.pca_mse);
    writeln!(
        out,
        "the autoencoder's error is {:.1}% {} than PCA's; {} shows originals, reconstructions and PCA's, row by row",
        gain.abs(),
        if gain >= 0.0 { "lower" } else { "higher" },
        png.display()
    )?;
    Ok(())
}

fn run_autoencoder(
    dir: &Path,
    spec: &Spec,
    model: &convnet::nn::Sequential,
    info: &train::RunInfo,
    data: &str,
    json: bool,
) -> Result<()> {
    let task = Task::of(spec, model)?;
    let p = train::prepare(spec, &task, train::split_seed(info.seed))?;
    if !matches!(data, "test" | "val" | "train") {
        bail!("an autoencoder is evaluated on test, val or train, not {data}");
    }
    let train_part = p.train.clone();
    let held = split_of(p, data, "pass --data val or --data train")?;
    let png = dir.join(format!("reconstructions_{data}.png"));
    let r = train::autoencoder::evaluate_autoencoder(
        model,
        &task,
        &train_part,
        &held,
        Some((&png, 12)),
    )?;
    let mut out = std::io::stdout().lock();
    if json {
        let mut v = serde_json::to_value(&r)?;
        v["data"] = data.into();
        v["png"] = png.display().to_string().into();
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        print_autoencoder_report(&mut out, &r, data, &png)?;
    }
    Ok(())
}

/// The forecaster's metrics beside the baselines', as a table.
pub fn print_forecast_report(
    out: &mut dyn Write,
    r: &ForecastReport,
    info: &train::RunInfo,
) -> Result<()> {
    writeln!(
        out,
        "{} part from step {}: {} origin(s), horizon {}, target(s) {}; {}",
        r.part,
        r.split,
        r.origins,
        r.horizon,
        r.targets.join(", "),
        info.chosen_by()
    )?;
    if r.part == "validation" && info.monitor.starts_with("val_") {
        writeln!(
            out,
            "(these weights were chosen on this part: set a test part apart with [data] test_start or test_split for a figure that did not choose them)"
        )?;
    }
    writeln!(
        out,
        "{:<22} {:>10} {:>10} {:>9} {:>8}",
        "forecast", "MAE", "RMSE", "sMAPE %", "MASE"
    )?;
    let mut rows = vec![("model", &r.model), ("naive (last value)", &r.naive)];
    let seasonal = r.seasonality.map(|m| format!("seasonal naive (m={m})"));
    if let (Some(s), Some(name)) = (&r.seasonal_naive, &seasonal) {
        rows.push((name.as_str(), s));
    }
    for (name, m) in rows {
        writeln!(
            out,
            "{name:<22} {:>10.4} {:>10.4} {:>9.2} {:>8}",
            m.mae,
            m.rmse,
            m.smape,
            m.mase.map_or("-".into(), |v| format!("{v:.3}"))
        )?;
    }
    let gain = 100.0 * (1.0 - r.model.mae / r.naive.mae);
    writeln!(
        out,
        "the model's MAE is {:.1}% {} than the naive forecast's",
        gain.abs(),
        if gain >= 0.0 { "lower" } else { "higher" }
    )?;
    Ok(())
}

fn run_forecaster(
    spec: &Spec,
    model: &convnet::nn::Sequential,
    info: &train::RunInfo,
    data: &str,
    horizon: Option<usize>,
    json: bool,
) -> Result<()> {
    use train::forecast::Part;
    let has_test = matches!(
        spec.data.as_ref().map(|d| &d.source),
        Some(DataSource::Series(s)) if s.test.is_some()
    );
    let part = match data {
        "val" => Part::Validation,
        "test" if has_test => Part::Test,
        "test" => bail!(
            "the spec sets no test part apart ([data] test_start or test_split): pass --data val"
        ),
        _ => bail!(
            "a forecaster is evaluated on its validation part (--data val) or test part (--data test); use `convnet forecast DIR SERIES.csv --start STEP` for another series"
        ),
    };
    let r = train::forecast::evaluate_forecaster(spec, model, info, horizon, part)?;
    let mut out = std::io::stdout().lock();
    if json {
        let mut v = serde_json::to_value(&r)?;
        v["chosen_by"] = info.chosen_by().into();
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        print_forecast_report(&mut out, &r, info)?;
    }
    Ok(())
}

/// What `convnet eval` was asked.
pub struct Args {
    pub dir: PathBuf,
    pub data: Option<String>,
    pub labels: Option<PathBuf>,
    pub horizon: Option<usize>,
    pub size: Option<usize>,
    pub top_k: Option<usize>,
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let (dir, data, labels, horizon, size, json) = (
        a.dir.as_path(),
        a.data.as_deref(),
        a.labels,
        a.horizon,
        a.size,
        a.json,
    );
    let (spec, model, info) = train::load_run(dir)?;
    let kind = train::RunKind::of(&spec);
    if kind == train::RunKind::Gan {
        bail!(
            "{} is a GAN run: its metrics.csv and samples_epoch_*.png are its record; `convnet generate` samples it",
            dir.display()
        );
    }
    if size.is_some() && kind != train::RunKind::Classifier {
        bail!("--size resizes the images of a classifier; this run is not one");
    }
    if let (train::RunKind::Forecaster, Some(DataSource::Series(s))) =
        (kind, spec.data.as_ref().map(|d| &d.source))
    {
        // the test part where the spec sets one apart: the figure nothing chose
        let part = data.unwrap_or(if s.test.is_some() { "test" } else { "val" });
        return run_forecaster(&spec, &model, &info, part, horizon, json);
    }
    let data = data.unwrap_or("test");
    if kind == train::RunKind::Autoencoder {
        return run_autoencoder(dir, &spec, &model, &info, data, json);
    }
    if horizon.is_some() {
        bail!("--horizon is for forecasters; this run is a classifier");
    }
    let task = Task::of(&spec, &model)?;
    let Task::Classify {
        classes,
        ref options,
    } = task
    else {
        bail!("{} is not a classifier's run", dir.display());
    };
    let ds = match data {
        // the test set alone: run.json holds the normalisation and class names, so the
        // training data is not read
        "test" => train::read_test(&spec, Some(&info.class_names))?.ok_or_else(|| {
            anyhow::anyhow!("the spec names no test data; pass --data val, --data train, or a path")
        })?,
        "val" | "train" => {
            let p = train::prepare(&spec, &task, train::split_seed(info.seed))?;
            split_of(p, data, "pass --data val, --data train, or a path")?
        }
        path => load_path(&spec, Path::new(path), labels.as_deref())?,
    };
    let ds = match size {
        None => ds,
        Some(0) => bail!("--size must be positive"),
        Some(s) => {
            if spec.input.len() != 3 {
                bail!("--size resizes images; this model takes {:?}", spec.input);
            }
            // a model that fixes its size says so, naming the layer, when it meets the images
            convnet::data::resize_images(&ds, s, s)?
        }
    };
    ds.check_labels(classes, data)?;
    let r = train::evaluate(
        &model,
        &ds,
        &info.normalize(),
        classes,
        options,
        256,
        spec.train.tta_hflip,
    )?;
    // a run without class names (or with fewer) shows class numbers
    let names: Vec<String> = (0..classes)
        .map(|i| {
            info.class_names
                .get(i)
                .cloned()
                .unwrap_or_else(|| i.to_string())
        })
        .collect();
    let top_k = a.top_k.map(|k| (k, r.top_k(k)));
    let tag = match size {
        Some(s) => format!("{data}_{s}x{s}"),
        None => data.to_string(),
    };
    let safe: String = tag
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let png = dir.join(format!("confusion_{safe}.png"));
    plot::confusion_png(&png, &r.confusion, &names)?;
    let mut out = std::io::stdout().lock();
    if json {
        let v = serde_json::json!({
            "data": data,
            "chosen_by": info.chosen_by(),
            "samples": r.samples,
            "loss": r.loss,
            "accuracy": r.accuracy,
            "per_class": (0..classes).map(|i| serde_json::json!({"class": names[i], "precision": r.precision[i], "recall": r.recall[i], "f1": r.f1[i], "support": r.support[i]})).collect::<Vec<_>>(),
            "macro_f1": r.macro_f1(),
            "weighted_f1": r.weighted_f1(),
            "top_k": top_k.map(|(k, acc)| serde_json::json!({"k": k, "accuracy": acc})),
            "confusion": r.confusion,
            "confusion_png": png.display().to_string(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{} samples of `{data}` ({}): loss {:.4}, accuracy {:.2}%",
        r.samples,
        info.chosen_by(),
        r.loss,
        100.0 * r.accuracy
    )?;
    if let Some((k, acc)) = top_k {
        writeln!(out, "top-{k} accuracy {:.2}%", 100.0 * acc)?;
    }
    writeln!(
        out,
        "macro F1 {:.4}, weighted F1 {:.4}",
        r.macro_f1(),
        r.weighted_f1()
    )?;
    let w = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    writeln!(
        out,
        "\n{:<w$} {:>9} {:>9} {:>9} {:>8}",
        "class", "precision", "recall", "F1", "support"
    )?;
    for i in 0..classes {
        writeln!(
            out,
            "{:<w$} {:>8.1}% {:>8.1}% {:>9.4} {:>8}",
            names[i],
            100.0 * r.precision[i],
            100.0 * r.recall[i],
            r.f1[i],
            r.support[i]
        )?;
    }
    writeln!(
        out,
        "\nconfusion matrix (rows: true class, columns: predicted)"
    )?;
    write!(out, "{:<14}", "")?;
    for j in 0..classes {
        write!(out, "{:>6}", j)?;
    }
    writeln!(out)?;
    for i in 0..classes {
        write!(
            out,
            "{:<14}",
            format!("{i} {}", names[i].chars().take(11).collect::<String>())
        )?;
        for j in 0..classes {
            write!(out, "{:>6}", r.confusion[i][j])?;
        }
        writeln!(out)?;
    }
    writeln!(out, "\nwrote {}", png.display())?;
    Ok(())
}
