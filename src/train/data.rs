//! Loading a spec's data: the training set (split into train and validation by seed), the test
//! set, class names, and the normalisation fitted on the training split only.

use std::path::Path;
use std::sync::Arc;

use crate::data::{Dataset, Normalize, read_csv, read_folder, read_idx_images, read_idx_labels};
use crate::error::{Error, Result};
use crate::spec::{DataSource, NormalizeSpec, Spec};

/// The data of a run, ready for training and evaluation.
pub struct Prepared {
    pub train: Arc<Dataset>,
    pub val: Option<Dataset>,
    pub test: Option<Dataset>,
    pub class_names: Vec<String>,
    pub normalize: Normalize,
}

fn idx_pair(images: &Path, labels: &Path, shape: &[usize]) -> Result<Dataset> {
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
    if shape != [1, h, w] {
        return Err(Error::Format {
            path: images.display().to_string(),
            msg: format!("the images are 1x{h}x{w} but the model's input is {shape:?}"),
        });
    }
    Ok(Dataset {
        shape: shape.to_vec(),
        pixels,
        labels: lab,
    })
}

/// Read one split ("train" or "test") of the spec's data source.
pub fn read_split(spec: &Spec, which: &str) -> Result<Option<(Dataset, Option<Vec<String>>)>> {
    let d = spec.data()?;
    let shape = &spec.input;
    if shape.len() != 3 {
        return Err(Error::Spec {
            path: spec.path.display().to_string(),
            at: "[model], key `input`".into(),
            msg: format!("image data needs an input of (channels, height, width), got {shape:?}"),
        });
    }
    Ok(match (&d.source, which) {
        (
            DataSource::Idx {
                train_images,
                train_labels,
                ..
            },
            "train",
        ) => Some((idx_pair(train_images, train_labels, shape)?, None)),
        (
            DataSource::Idx {
                test_images: Some(i),
                test_labels: Some(l),
                ..
            },
            _,
        ) => Some((idx_pair(i, l, shape)?, None)),
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
            let (ds, names) = read_folder(train, shape, d.resize)?;
            Some((ds, Some(names)))
        }
        (DataSource::Folder { test: Some(t), .. }, _) => {
            let (ds, names) = read_folder(t, shape, d.resize)?;
            Some((ds, Some(names)))
        }
        _ => None,
    })
}

/// Load and split the data, check labels against `classes`, fit the normalisation.
pub fn prepare(spec: &Spec, classes: usize, seed: u64) -> Result<Prepared> {
    let d = spec.data()?;
    let (full, folder_names) = read_split(spec, "train")?.ok_or_else(|| Error::Spec {
        path: spec.path.display().to_string(),
        at: "[data]".into(),
        msg: "no training data".into(),
    })?;
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
        return Err(Error::Spec {
            path: spec.path.display().to_string(),
            at: "[data], key `validation_split`".into(),
            msg: "leaves no training samples".into(),
        });
    }
    let c = spec.input[0];
    let normalize = match &d.normalize {
        NormalizeSpec::Scale => Normalize::identity(c),
        NormalizeSpec::Standardize => {
            let (mean, std) = train.channel_stats();
            Normalize { mean, std }
        }
        NormalizeSpec::Fixed { mean, std } => {
            if mean.len() != c {
                return Err(Error::Spec {
                    path: spec.path.display().to_string(),
                    at: "[data.normalize]".into(),
                    msg: format!("{} means for {c} input channels", mean.len()),
                });
            }
            Normalize {
                mean: mean.clone(),
                std: std.clone(),
            }
        }
    };
    let class_names = match (&d.class_names, folder_names) {
        (Some(n), _) if n.len() == classes => n.clone(),
        (Some(n), _) => {
            return Err(Error::Spec {
                path: spec.path.display().to_string(),
                at: "[data], key `class_names`".into(),
                msg: format!("{} names for the {classes} outputs of the model", n.len()),
            });
        }
        (None, Some(n)) if n.len() == classes => n,
        (None, Some(n)) => {
            return Err(Error::Spec {
                path: spec.path.display().to_string(),
                at: "[data]".into(),
                msg: format!(
                    "the image folder has {} classes but the model outputs {classes}",
                    n.len()
                ),
            });
        }
        (None, None) => (0..classes).map(|i| i.to_string()).collect(),
    };
    Ok(Prepared {
        train: Arc::new(train),
        val,
        test,
        class_names,
        normalize,
    })
}
