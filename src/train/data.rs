//! Loading a spec's data: the training set (split into train and validation by seed, or for a
//! series by time), the test set, class names, and the normalisation fitted on the training
//! split only.

use std::path::Path;
use std::sync::Arc;

use crate::data::{
    Dataset, Normalize, class_names, column_stats, make_relative, read_csv, read_folder,
    read_idx_images, read_idx_labels, read_series_csv, read_ts, read_ucr_tsv, windows,
};
use crate::error::{Error, Result};
use crate::spec::{DataSource, NormalizeSpec, SeriesSource, Spec};

use super::Task;

/// The data of a run, ready for training and evaluation.
pub struct Prepared {
    pub train: Arc<Dataset>,
    pub val: Option<Dataset>,
    pub test: Option<Dataset>,
    pub class_names: Vec<String>,
    pub normalize: Normalize,
    /// A forecaster's target columns and their normalisation.
    pub target_names: Vec<String>,
    pub target_norm: Option<Normalize>,
}

fn idx_pair(images: &Path, labels: &Path, shape: &[usize], any_size: bool) -> Result<Dataset> {
    let (pixels, n, h, w) = read_idx_images(images)?;
    let lab = read_idx_labels(labels)?;
    if lab.len() != n {
        return Err(Error::Format {
            path: labels.display().to_string(),
            msg: format!(
                "{} labels for the {n} images of {}",
                lab.len(),
                images.display()
            ),
        });
    }
    if shape[0] != 1 || (!any_size && shape != [1, h, w]) {
        return Err(Error::Format {
            path: images.display().to_string(),
            msg: format!("the images are 1x{h}x{w} but the model's input is {shape:?}"),
        });
    }
    Ok(Dataset {
        shape: vec![1, h, w],
        pixels,
        labels: lab,
        ..Default::default()
    })
}

/// Labelled series from a `.ts` or `.tsv` file, all of the model's input shape.
fn labeled(
    spec: &Spec,
    path: &Path,
    tsv: bool,
    classes: Option<&[String]>,
) -> Result<(Dataset, Vec<String>)> {
    let mut ls = if tsv {
        read_ucr_tsv(path, classes)?
    } else {
        read_ts(path, classes)?
    };
    if let Some(n) = spec.data()?.resample {
        ls.resample(n);
    }
    let (shape, any_size) = spec.sample_shape();
    let fmt = |msg: String| Error::Format {
        path: path.display().to_string(),
        msg,
    };
    if shape.len() != 2 || shape[0] != ls.channels() {
        return Err(fmt(format!(
            "the series have {} channel(s) but the model's input is {shape:?}; series need [channels, length]",
            ls.channels()
        )));
    }
    let lengths = ls.lengths();
    let any = any_size.get(1) == Some(&true);
    if !any && lengths != [shape[1]] {
        let (lo, hi) = (lengths[0], lengths[lengths.len() - 1]);
        return Err(fmt(format!(
            "the series are {} long but the model's input length is {}{}",
            if lo == hi {
                format!("{lo} steps")
            } else {
                format!("{lo} to {hi} steps")
            },
            shape[1],
            if lo == hi {
                String::new()
            } else {
                " (a length-independent model takes them all with input = [channels, \"any\"])"
                    .to_string()
            }
        )));
    }
    Ok((ls.to_dataset(), ls.class_names))
}

/// Inputs and labels from two `.npy` files.
fn npy_pair(x: &Path, y: &Path, shape: &[usize]) -> Result<Dataset> {
    let xs = crate::data::read_npy(x)?;
    let ys = crate::data::read_npy(y)?;
    npy_dataset(xs, x, ys, y, shape)
}

/// Inputs and labels from two arrays of an `.npz` archive; `None` when the test arrays were
/// not named and the archive has none.
fn npz_pair(
    path: &Path,
    (x, y): (&str, &str),
    required: bool,
    shape: &[usize],
) -> Result<Option<Dataset>> {
    if !required && !crate::data::npz_names(path)?.iter().any(|n| n == x) {
        return Ok(None);
    }
    let xs = crate::data::read_npz(path, x)?;
    let ys = crate::data::read_npz(path, y)?;
    let member = |n: &str| path.join(format!("{n}.npy"));
    npy_dataset(xs, &member(x), ys, &member(y), shape).map(Some)
}

/// A dataset from arrays `xs` (read from `x`) of shape `(n, *shape)` (or `(n, h, w)` when
/// `shape` has one channel) and `ys` (from `y`) of `n` class indices.
fn npy_dataset(
    xs: crate::data::Npy,
    x: &Path,
    ys: crate::data::Npy,
    y: &Path,
    shape: &[usize],
) -> Result<Dataset> {
    let fail = |p: &Path, msg: String| Error::Format {
        path: p.display().to_string(),
        msg,
    };
    let n = xs.shape.first().copied().unwrap_or(0);
    let per: &[usize] = xs.shape.get(1..).unwrap_or(&[]);
    let fits = per == shape || (shape.first() == Some(&1) && per == &shape[1..]);
    if !fits {
        return Err(fail(
            x,
            format!(
                "inputs of shape {:?}: expected (n, {}) for the model's input",
                xs.shape,
                shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if ys.shape != [n] {
        return Err(fail(
            y,
            format!(
                "labels of shape {:?}: expected ({n},), one class index per input",
                ys.shape
            ),
        ));
    }
    let labels = ys
        .values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if v >= 0.0 && v.fract() == 0.0 {
                Ok(v as usize)
            } else {
                Err(fail(y, format!("label {i} is {v}, not a class index")))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let scale = if xs.bytes { 1.0 / 255.0 } else { 1.0 };
    Ok(Dataset {
        shape: shape.to_vec(),
        pixels: xs.values.iter().map(|v| v * scale).collect(),
        labels,
        ..Default::default()
    })
}

/// Read one split ("train" or "test") of the spec's data source.
pub fn read_split(spec: &Spec, which: &str) -> Result<Option<(Dataset, Option<Vec<String>>)>> {
    let d = spec.data()?;
    let (shape, any) = spec.sample_shape();
    // images keep their own sizes when the model's are open
    let any_spatial = any.len() > 1 && any[1..].iter().all(|&a| a);
    match &d.source {
        DataSource::Labeled { train, test, tsv } => {
            return Ok(match (which, test) {
                ("train", _) => {
                    let (tr, names) = labeled(spec, train, *tsv, None)?;
                    Some((tr, Some(names)))
                }
                (_, Some(t)) => {
                    // the training file's classes, in its order, without reading its series
                    let names = class_names(train, *tsv)?;
                    let (ts, _) = labeled(spec, t, *tsv, Some(&names))?;
                    Some((ts, Some(names)))
                }
                _ => None,
            });
        }
        DataSource::Series(_) => {
            return Err(spec.err(
                "[data]",
                "a series is split by time into windows, not read as samples".into(),
            ));
        }
        DataSource::Npy {
            train_x,
            train_y,
            test_x,
            test_y,
        } => {
            return match (which, test_x, test_y) {
                ("train", _, _) => Ok(Some((npy_pair(train_x, train_y, shape)?, None))),
                (_, Some(x), Some(y)) => Ok(Some((npy_pair(x, y, shape)?, None))),
                _ => Ok(None),
            };
        }
        DataSource::Npz {
            path,
            train_x,
            train_y,
            test_x,
            test_y,
            test_named,
        } => {
            let (names, required) = match which {
                "train" => ((train_x.as_str(), train_y.as_str()), true),
                _ => ((test_x.as_str(), test_y.as_str()), *test_named),
            };
            return Ok(npz_pair(path, names, required, shape)?.map(|ds| (ds, None)));
        }
        _ => {}
    }
    if shape.len() != 3 {
        return Err(spec.err(
            "[model], key `input`",
            format!("image data needs an input of (channels, height, width), got {shape:?}"),
        ));
    }
    Ok(match (&d.source, which) {
        (
            DataSource::Idx {
                train_images,
                train_labels,
                ..
            },
            "train",
        ) => Some((
            idx_pair(train_images, train_labels, shape, any_spatial)?,
            None,
        )),
        (
            DataSource::Idx {
                test_images: Some(i),
                test_labels: Some(l),
                ..
            },
            _,
        ) => Some((idx_pair(i, l, shape, any_spatial)?, None)),
        (
            DataSource::Csv {
                train,
                label_column,
                pixel_max,
                ..
            },
            "train",
        ) => Some((read_csv(train, label_column, shape, *pixel_max)?, None)),
        (
            DataSource::Csv {
                test: Some(t),
                label_column,
                pixel_max,
                ..
            },
            _,
        ) => Some((read_csv(t, label_column, shape, *pixel_max)?, None)),
        (DataSource::Folder { train, .. }, "train") => {
            let (ds, names) = read_folder(train, shape, d.resize, any_spatial)?;
            Some((ds, Some(names)))
        }
        (DataSource::Folder { test: Some(t), .. }, _) => {
            let (ds, names) = read_folder(t, shape, d.resize, any_spatial)?;
            Some((ds, Some(names)))
        }
        _ => None,
    })
}

/// The test split alone, without reading the training data: a labelled series file's
/// classes come from `classes` (a run's class names) when given. `None` when the spec names
/// no test data.
pub fn read_test(spec: &Spec, classes: Option<&[String]>) -> Result<Option<Dataset>> {
    let d = spec.data()?;
    if let (
        DataSource::Labeled {
            test: Some(t), tsv, ..
        },
        Some(names),
    ) = (&d.source, classes)
        && !names.is_empty()
    {
        return Ok(Some(labeled(spec, t, *tsv, Some(names))?.0));
    }
    Ok(read_split(spec, "test")?.map(|(ds, _)| ds))
}

/// Load and split the data, check labels against the task's classes, fit the normalisation.
pub fn prepare(spec: &Spec, task: &Task, seed: u64) -> Result<Prepared> {
    let d = spec.data()?;
    if let DataSource::Series(s) = &d.source {
        return prepare_series(spec, s, &d.normalize);
    }
    // an autoencoder reads the same data and ignores the labels
    let classes = match task {
        Task::Classify { classes, .. } => *classes,
        Task::Autoencode { .. } => usize::MAX,
        Task::Forecast { .. } => {
            return Err(spec.err("[data]", "regression needs format = \"series\"".into()));
        }
    };
    prepare_samples(spec, classes, seed)
}

/// Images or labelled series without a task's checks: `classes` is `usize::MAX` where the
/// labels do not matter (autoencoders, GANs).
pub fn prepare_samples(spec: &Spec, classes: usize, seed: u64) -> Result<Prepared> {
    let d = spec.data()?;
    let (full, folder_names) =
        read_split(spec, "train")?.ok_or_else(|| spec.err("[data]", "no training data".into()))?;
    full.check_labels(classes, "training data")?;
    let test = match read_split(spec, "test")? {
        Some((t, _)) => {
            t.check_labels(classes, "test data")?;
            Some(t)
        }
        None => None,
    };
    let (train, val) = if d.validation_split > 0.0 {
        let (t, v) = full.split(d.validation_split, seed);
        (t, if v.is_empty() { None } else { Some(v) })
    } else {
        (full, None)
    };
    if train.is_empty() {
        return Err(spec.err(
            "[data], key `validation_split`",
            "leaves no training samples".into(),
        ));
    }
    let c = spec.sample_shape().0[0];
    let normalize = match &d.normalize {
        NormalizeSpec::Scale => Normalize::identity(c),
        NormalizeSpec::PerSeries => Normalize::per_sample(c),
        NormalizeSpec::Standardize => {
            let (mean, std) = train.channel_stats();
            Normalize::new(mean, std)
        }
        NormalizeSpec::Fixed { mean, std } => {
            if mean.len() != c {
                return Err(spec.err(
                    "[data.normalize]",
                    format!("{} means for {c} input channels", mean.len()),
                ));
            }
            Normalize::new(mean.clone(), std.clone())
        }
    };
    let class_names = match (&d.class_names, folder_names) {
        _ if classes == usize::MAX => Vec::new(),
        (Some(n), _) if n.len() == classes => n.clone(),
        (Some(n), _) => {
            return Err(spec.err(
                "[data], key `class_names`",
                format!("{} names for the {classes} outputs of the model", n.len()),
            ));
        }
        (None, Some(n)) if n.len() == classes => n,
        (None, Some(n)) => {
            return Err(spec.err(
                "[data]",
                format!(
                    "the image folder has {} classes but the model outputs {classes}",
                    n.len()
                ),
            ));
        }
        (None, None) => (0..classes).map(|i| i.to_string()).collect(),
    };
    Ok(Prepared {
        train: Arc::new(train),
        val,
        test,
        class_names,
        normalize,
        target_names: Vec::new(),
        target_norm: None,
    })
}

/// The columns of a series spec: inputs, the indices of the targets among them, and the
/// series itself.
pub fn series_columns(spec: &Spec, s: &SeriesSource) -> Result<(crate::data::Series, Vec<usize>)> {
    let series = read_series_csv(&s.path, &s.read)?;
    let (c, window) = match spec.input[..] {
        [c, w] => (c, w),
        _ => {
            return Err(spec.err(
                "[model], key `input`",
                format!(
                    "a series model's input is [channels, window], got {:?}",
                    spec.input
                ),
            ));
        }
    };
    if series.names.len() != c {
        return Err(spec.err(
            "[data], key `columns`",
            format!(
                "{} column(s) ({}) for a model with {c} input channel(s)",
                series.names.len(),
                series.names.join(", ")
            ),
        ));
    }
    let targets = match &s.targets {
        None => (0..c).collect(),
        Some(t) => t
            .iter()
            .map(|name| {
                series.names.iter().position(|n| n == name).ok_or_else(|| {
                    spec.err(
                        "[data], key `targets`",
                        format!(
                            "`{name}` is not an input column ({})",
                            series.names.join(", ")
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?,
    };
    let split = s.split_at(series.len());
    if split < window + s.horizon || split >= series.len() {
        return Err(spec.err("[data], key `split`",
            format!(
                "the validation part starts at step {split} of {}: the training part needs at least window + horizon = {} steps and the validation part at least one",
                series.len(),
                window + s.horizon
            ),
        ));
    }
    if let Some(test) = s.test_at(series.len()) {
        if test < split + s.horizon || test + s.horizon > series.len() {
            return Err(spec.err("[data], key `test_start`",
                format!(
                    "the test part starts at step {test} of {}: the validation part (from step {split}) and the test part each need at least horizon = {} steps",
                    series.len(),
                    s.horizon
                ),
            ));
        }
    }
    Ok((series, targets))
}

fn prepare_series(spec: &Spec, s: &SeriesSource, norm: &NormalizeSpec) -> Result<Prepared> {
    let (series, targets) = series_columns(spec, s)?;
    let window = spec.input[1];
    let split = s.split_at(series.len());
    let cols: Vec<&[f32]> = series.values.iter().map(|v| v.as_slice()).collect();
    let tcols: Vec<&[f32]> = targets.iter().map(|&j| cols[j]).collect();
    let normalize = match norm {
        NormalizeSpec::Scale => Normalize::identity(cols.len()),
        NormalizeSpec::Standardize => {
            let (mean, std) = column_stats(&cols, 0..split);
            Normalize::new(mean, std)
        }
        NormalizeSpec::Fixed { .. } | NormalizeSpec::PerSeries => {
            return Err(spec.err("[data], key `normalize`",
                "a series is normalised with \"standardize\" (fitted on the training part) or \"none\"".into(),
            ));
        }
    };
    let target_norm = Normalize::new(
        targets.iter().map(|&j| normalize.mean[j]).collect(),
        targets.iter().map(|&j| normalize.std[j]).collect(),
    );
    // Training windows forecast steps before the split only; validation windows start there.
    let mut train = windows(
        &cols,
        &tcols,
        window,
        s.horizon,
        s.stride,
        window..split + 1 - s.horizon,
    );
    // validation windows forecast steps before the test part only; test windows start there
    let val_end = s.val_end(series.len());
    let mut val = windows(
        &cols,
        &tcols,
        window,
        s.horizon,
        1,
        split..val_end + 1 - s.horizon,
    );
    let mut test = s
        .test_at(series.len())
        .map(|t| windows(&cols, &tcols, window, s.horizon, 1, t..series.len()));
    let (normalize, target_norm) = if s.relative {
        make_relative(&mut train, &targets);
        make_relative(&mut val, &targets);
        if let Some(t) = &mut test {
            make_relative(t, &targets);
        }
        match norm {
            // the relative windows' own statistics, from the training windows
            NormalizeSpec::Standardize => {
                let (mean, std) = train.channel_stats();
                let h = s.horizon;
                let tv: Vec<Vec<f32>> = (0..targets.len())
                    .map(|j| {
                        (0..train.len())
                            .flat_map(|i| train.target(i)[j * h..(j + 1) * h].to_vec())
                            .collect()
                    })
                    .collect();
                let tcols: Vec<&[f32]> = tv.iter().map(|v| v.as_slice()).collect();
                let (tm, ts) = column_stats(&tcols, 0..tv[0].len());
                (Normalize::new(mean, std), Normalize::new(tm, ts))
            }
            _ => (normalize, target_norm),
        }
    } else {
        (normalize, target_norm)
    };
    if train.is_empty() {
        return Err(spec.err("[data], key `split`", "leaves no training windows".into()));
    }
    Ok(Prepared {
        train: Arc::new(train),
        val: if val.is_empty() { None } else { Some(val) },
        test: test.filter(|t| !t.is_empty()),
        class_names: Vec::new(),
        normalize,
        target_names: targets.iter().map(|&j| series.names[j].clone()).collect(),
        target_norm: Some(target_norm),
    })
}
