//! The TOML spec: `[model]` (input shape, a size possibly `"any"`, and `[[model.layers]]`,
//! blocks holding `[[model.layers.layers]]`) or a GAN's `[generator]` and `[discriminator]`;
//! `[data]` (images: idx, csv, folder; labelled series: ts, tsv; a series to forecast: series;
//! paths, validation split, normalisation, `[data.augment]`) and `[train]` (task, loss,
//! optimizer, schedule, epochs, batch size, seed, early stopping). Every key is checked: unknown keys,
//! wrong types and impossible shapes are reported with the file, the layer's index and type,
//! the key, and what was expected, before any training starts.

mod layers;
mod table;

pub use layers::LAYER_TYPES;

use std::path::{Path, PathBuf};

use table::{R, Table};

use crate::data::{Augment, SeriesRead};
use crate::error::{Error, Result};
use crate::nn::{Sequential, SizeDependence};
use crate::optim::{OptimizerKind, Schedule};
use crate::rng::Rng;

/// Where the data comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSource {
    /// IDX files (raw or gzip), as MNIST and Fashion-MNIST ship.
    Idx {
        train_images: PathBuf,
        train_labels: PathBuf,
        test_images: Option<PathBuf>,
        test_labels: Option<PathBuf>,
    },
    /// CSV with one row per image: pixel columns and a label column.
    Csv {
        train: PathBuf,
        test: Option<PathBuf>,
        label_column: String,
        pixel_max: f32,
    },
    /// A folder with one subfolder of images per class.
    Folder {
        train: PathBuf,
        test: Option<PathBuf>,
    },
    /// Labelled series for classification: UCR/UEA `.ts` files, or UCR `.tsv` when `tsv`.
    Labeled {
        train: PathBuf,
        test: Option<PathBuf>,
        tsv: bool,
    },
    /// NumPy `.npy` arrays: inputs `(n, *input)` (or `(n, h, w)` for one channel) and class
    /// labels `(n,)`; unsigned bytes are scaled to [0, 1].
    Npy {
        train_x: PathBuf,
        train_y: PathBuf,
        test_x: Option<PathBuf>,
        test_y: Option<PathBuf>,
    },
    /// A NumPy `.npz` archive holding the same arrays by name (Keras's `x_train`, `y_train`,
    /// `x_test`, `y_test` unless named otherwise).
    Npz {
        path: PathBuf,
        train_x: String,
        train_y: String,
        test_x: String,
        test_y: String,
        /// Whether the test arrays were named in the spec (then they must exist); otherwise
        /// they are read when the archive has them.
        test_named: bool,
    },
    /// A time series in a CSV file, cut into windows to forecast from.
    Series(SeriesSource),
}

/// Where the validation part of a series starts.
#[derive(Clone, Debug, PartialEq)]
pub enum SeriesSplit {
    /// At this time step (0-based row after the header).
    At(usize),
    /// The last fraction of the time steps.
    Fraction(f32),
}

/// `[data] format = "series"`.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesSource {
    pub path: PathBuf,
    pub read: SeriesRead,
    /// Columns to forecast (by default every input column).
    pub targets: Option<Vec<String>>,
    /// Steps forecast from each window.
    pub horizon: usize,
    /// Steps between the starts of neighbouring training windows.
    pub stride: usize,
    pub split: SeriesSplit,
    /// Where the test part starts (`test_start`, `test_split`): the validation part ends
    /// there; `None`: no test part (the validation part is reported).
    pub test: Option<SeriesSplit>,
    /// The season's length in steps (12 for monthly data with a yearly cycle), for the
    /// seasonal-naive baseline and MASE.
    pub seasonality: Option<usize>,
    /// Windows relative to their last value (see [`crate::data::make_relative`]).
    pub relative: bool,
}

impl DataSource {
    /// Every file or folder the data is read from.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.clone()
            .paths_mut()
            .into_iter()
            .map(|p| p.clone())
            .collect()
    }

    /// The same, to rewrite.
    fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        match self {
            DataSource::Idx {
                train_images,
                train_labels,
                test_images,
                test_labels,
            } => {
                let mut v = vec![train_images, train_labels];
                v.extend(test_images.iter_mut().chain(test_labels.iter_mut()));
                v
            }
            DataSource::Csv { train, test, .. }
            | DataSource::Folder { train, test }
            | DataSource::Labeled { train, test, .. } => {
                let mut v = vec![train];
                v.extend(test.iter_mut());
                v
            }
            DataSource::Npy {
                train_x,
                train_y,
                test_x,
                test_y,
            } => {
                let mut v = vec![train_x, train_y];
                v.extend(test_x.iter_mut().chain(test_y.iter_mut()));
                v
            }
            DataSource::Npz { path, .. } => vec![path],
            DataSource::Series(s) => vec![&mut s.path],
        }
    }
}

impl SeriesSource {
    /// The first validation step of a series of `len` steps (a fraction counts back from the
    /// test part, or from the end without one).
    pub fn split_at(&self, len: usize) -> usize {
        let end = self.test_at(len).unwrap_or(len);
        match self.split {
            SeriesSplit::At(i) => i,
            SeriesSplit::Fraction(f) => {
                end.saturating_sub((len as f64 * f as f64).round() as usize)
            }
        }
    }

    /// The first step of the test part, if the spec sets one apart.
    pub fn test_at(&self, len: usize) -> Option<usize> {
        Some(match self.test.clone()? {
            SeriesSplit::At(i) => i,
            SeriesSplit::Fraction(f) => len - ((len as f64 * f as f64).round() as usize).min(len),
        })
    }

    /// The end of the validation part: the test part's start, or the series' end.
    pub fn val_end(&self, len: usize) -> usize {
        self.test_at(len).unwrap_or(len)
    }
}

/// How inputs are normalised after augmentation.
#[derive(Clone, Debug, PartialEq)]
pub enum NormalizeSpec {
    /// Pixels in [0, 1].
    Scale,
    /// Per-channel mean and standard deviation of the training split.
    Standardize,
    /// Given per-channel mean and standard deviation (of [0, 1] pixels).
    Fixed { mean: Vec<f32>, std: Vec<f32> },
    /// Each sample's channels z-normalised by their own mean and standard deviation (a
    /// series, as the UCR/UEA papers normalise; an image, per-image standardisation).
    PerSeries,
}

/// `[data]`.
#[derive(Clone, Debug, PartialEq)]
pub struct DataSpec {
    pub source: DataSource,
    pub validation_split: f32,
    pub normalize: NormalizeSpec,
    pub augment: Augment,
    pub class_names: Option<Vec<String>>,
    /// Resize images of another size to the model's input (folders, predict).
    pub resize: bool,
    /// Labelled series resampled (linearly) to this many steps.
    pub resample: Option<usize>,
}

/// `[train.early_stopping]`.
#[derive(Clone, Debug, PartialEq)]
pub struct EarlyStopping {
    /// `val_loss` or `val_acc`.
    pub monitor: String,
    pub patience: usize,
    pub min_delta: f32,
}

/// `[train]`.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainSpec {
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub label_smoothing: f32,
    pub class_weights: Option<Vec<f32>>,
    pub optimizer: OptimizerKind,
    pub lr: f32,
    pub weight_decay: f32,
    pub schedule: Schedule,
    pub clip_grad_norm: Option<f32>,
    pub early_stopping: Option<EarlyStopping>,
    /// A budget of training time in seconds: no epoch starts once the epochs so far took
    /// this long (a resumed run counts the epochs before it).
    pub max_seconds: Option<f32>,
    /// The decay of a moving average of the weights kept beside them (`ema = { decay = 0.999 }`;
    /// see [`crate::train::ema`]).
    pub ema: Option<f32>,
    /// Test-time augmentation of an image classifier's evaluation (`tta = ["hflip"]`): the
    /// class probabilities averaged over each image and its mirror image.
    pub tta_hflip: bool,
    /// `cross_entropy` for classifiers; `mse`, `mae` or `huber` for forecasters; `mse` or
    /// `bce` for autoencoders; `None`: cross-entropy or MSE, as the data asks.
    pub loss: Option<Loss>,
    pub task: TaskKind,
    /// In a data-parallel run: batch norm's statistics over the whole batch, summed over the
    /// ranks in forward and backward (PyTorch's SyncBatchNorm), instead of each rank's own
    /// part of it (DistributedDataParallel's default).
    pub sync_batch_norm: bool,
}

/// `[train] loss`.
#[derive(Clone, Debug, PartialEq)]
pub enum Loss {
    CrossEntropy,
    Mse,
    Mae,
    Huber {
        delta: f32,
    },
    /// Binary cross-entropy of the model's logits against targets in [0, 1].
    Bce,
}

/// `[train] task`: what the model learns beside what the data implies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TaskKind {
    /// Classify, or forecast a series, as the data says.
    Supervised,
    /// Reconstruct the input: the target is the input itself.
    Autoencoder,
    /// A generator and a discriminator trained against each other.
    Gan,
}

/// One `[[model.layers]]` entry, kept as written.
#[derive(Clone, Debug)]
pub struct LayerSpec {
    pub index: usize,
    pub kind: String,
    pub table: toml::Table,
}

/// A model section of a spec: `[model]`, or a GAN's `[generator]` and `[discriminator]`.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    /// `model`, `generator` or `discriminator`.
    pub section: String,
    pub input: Vec<usize>,
    pub any_size: Vec<bool>,
    pub layers: Vec<LayerSpec>,
}

/// A parsed and checked spec.
#[derive(Clone, Debug)]
pub struct Spec {
    pub path: PathBuf,
    /// The file as written (saved beside a run).
    pub text: String,
    /// Per-sample input shape; an open (`"any"`) axis holds [`ANY_NOMINAL`].
    pub input: Vec<usize>,
    /// Per input axis: left open with `"any"`.
    pub any_size: Vec<bool>,
    pub layers: Vec<LayerSpec>,
    /// The section the model above came from: `model`, or `generator` in a GAN's spec.
    pub section: String,
    /// A GAN's `[discriminator]` (the model above is then its `[generator]`).
    pub discriminator: Option<ModelSpec>,
    pub data: Option<DataSpec>,
    pub train: TrainSpec,
    /// The folder relative data paths were resolved from (see [`Spec::parse_in`]).
    base: Option<PathBuf>,
}

impl Spec {
    /// Read and parse a spec file, checking keys and types but not yet the layers' shapes
    /// (that is done by [`Spec::build_model`]).
    pub fn read(path: &Path) -> Result<Spec> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        Spec::parse(&crate::data::strip_bom(text), path)
    }

    /// [`Spec::read`] with relative data paths taken from `base` (see [`Spec::parse_in`]),
    /// and the layers checked as [`Spec::load`] does.
    pub fn load_in(path: &Path, base: Option<&Path>) -> Result<Spec> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let spec = Spec::parse_in(&crate::data::strip_bom(text), path, base)?;
        crate::tensor::meta(|| spec.build_model(&mut Rng::new(0)))?;
        Ok(spec)
    }

    /// A fingerprint of what the weights depend on: the model sections and `[train]`, parsed
    /// (comments and layout do not count) and hashed (FNV-1a, 16 hex digits). A run's weights
    /// carry it, so that a spec.toml edited after training is noticed. `[data]` is left out:
    /// moving the data changes a path, not the model.
    pub fn fingerprint(&self) -> String {
        let root: toml::Table = self.text.parse().unwrap_or_default();
        let kept: toml::Table = root.into_iter().filter(|(k, _)| k != "data").collect();
        let canonical = toml::to_string(&kept).unwrap_or_default();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in canonical.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }

    /// Read and check a spec file: syntax, keys and types, and that the layers fit together
    /// (built from shapes alone, [`crate::tensor::meta`], so any size can be checked).
    pub fn load(path: &Path) -> Result<Spec> {
        let spec = Spec::read(path)?;
        crate::tensor::meta(|| spec.build_model(&mut Rng::new(0)))?;
        Ok(spec)
    }

    /// Parse `text` (named `path` in messages); relative data paths are taken from the
    /// folder of `path`, as cargo and most config-driven tools do.
    pub fn parse(text: &str, path: &Path) -> Result<Spec> {
        let base = std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        Spec::parse_in(text, path, base.as_deref())
    }

    /// Parse `text` with relative data paths taken from `base` (from the current folder when
    /// `None`): a run's copy of its spec resolves them from the folder of the spec it was
    /// trained from.
    pub fn parse_in(text: &str, path: &Path, base: Option<&Path>) -> Result<Spec> {
        let mut spec = Spec::parse_unresolved(text, path)?;
        if let (Some(base), Some(d)) = (base, spec.data.as_mut()) {
            for p in d.source.paths_mut() {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        spec.base = base.map(Path::to_path_buf);
        Ok(spec)
    }

    /// The folder relative data paths were taken from (`None`: the current folder).
    pub fn base(&self) -> Option<&Path> {
        self.base.as_deref()
    }

    fn parse_unresolved(text: &str, path: &Path) -> Result<Spec> {
        let p = path.display().to_string();
        let root: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let at = e.span().map(|s| {
                let line = text[..s.start.min(text.len())].lines().count().max(1);
                format!("line {line}")
            });
            Error::Spec {
                path: p.clone(),
                at: at.unwrap_or_else(|| "syntax".into()),
                msg: e.message().to_string(),
            }
        })?;
        let top = Table::new(&p, "top level", &root);
        let section = |name: &str| -> R<Option<&toml::Table>> {
            match top.get(name) {
                Some(toml::Value::Table(t)) => Ok(Some(t)),
                Some(_) => Err(top.err(name, format!("expected a [{name}] table"))),
                None => Ok(None),
            }
        };
        let (model, generator, disc) = (
            section("model")?,
            section("generator")?,
            section("discriminator")?,
        );
        let (main, discriminator) = match (model, generator, disc) {
            (Some(m), None, None) => (parse_model(&p, "model", m)?, None),
            (None, Some(g), Some(d)) => (
                parse_model(&p, "generator", g)?,
                Some(parse_model(&p, "discriminator", d)?),
            ),
            (Some(_), _, _) => {
                return Err(top.err_here(
                    "[model] goes alone; a GAN has [generator] and [discriminator] instead",
                ));
            }
            (None, Some(_), None) | (None, None, Some(_)) => {
                return Err(
                    top.err_here("a GAN needs both [generator] and [discriminator] sections")
                );
            }
            (None, None, None) => {
                return Err(top.err_here(
                    "no [model] section: a spec needs [model] with `input` and [[model.layers]]",
                ));
            }
        };
        let data = match top.get("data") {
            Some(toml::Value::Table(t)) => Some(parse_data(&Table::new(&p, "[data]", t))?),
            Some(_) => return Err(top.err("data", "expected a [data] table")),
            None => None,
        };
        let train = match top.get("train") {
            Some(toml::Value::Table(t)) => parse_train(&Table::new(&p, "[train]", t))?,
            Some(_) => return Err(top.err("train", "expected a [train] table")),
            None => parse_train(&Table::new(&p, "[train]", &toml::Table::new()))?,
        };
        top.finish()?;
        if discriminator.is_some() && train.task != TaskKind::Gan {
            return Err(Error::Spec {
                path: p,
                at: "[train], key `task`".into(),
                msg: "a spec with [generator] and [discriminator] trains a GAN: set task = \"gan\""
                    .into(),
            });
        }
        if train.tta_hflip && (main.input.len() != 3 || train.task != TaskKind::Supervised) {
            return Err(Error::Spec {
                path: p,
                at: "[train], key `tta`".into(),
                msg: format!(
                    "\"hflip\" averages an image classifier's class probabilities over each image and its mirror; this model's input is {:?}{}",
                    main.input,
                    if train.task == TaskKind::Supervised {
                        ""
                    } else {
                        " and it is not a classifier"
                    }
                ),
            });
        }
        if discriminator.is_none() && train.task == TaskKind::Gan {
            return Err(Error::Spec {
                path: p,
                at: "[train], key `task`".into(),
                msg: "a GAN needs [generator] and [discriminator] sections instead of [model]"
                    .into(),
            });
        }
        Ok(Spec {
            path: path.to_path_buf(),
            text: text.to_string(),
            input: main.input,
            any_size: main.any_size,
            layers: main.layers,
            section: main.section,
            discriminator,
            data,
            train,
            base: None,
        })
    }

    /// An error about this spec at `at` (`[data], key `split``).
    pub fn err(&self, at: &str, msg: String) -> Error {
        Error::Spec {
            path: self.path.display().to_string(),
            at: at.into(),
            msg,
        }
    }

    /// The shape of the data's samples: the model's input, or a GAN discriminator's.
    pub fn sample_shape(&self) -> (&[usize], &[bool]) {
        match &self.discriminator {
            Some(d) => (&d.input, &d.any_size),
            None => (&self.input, &self.any_size),
        }
    }

    /// Build the model (a GAN's generator) with weights drawn from `rng`; errors name the
    /// layer and the key.
    pub fn build_model(&self, rng: &mut Rng) -> Result<Sequential> {
        let main = ModelSpec {
            section: self.section.clone(),
            input: self.input.clone(),
            any_size: self.any_size.clone(),
            layers: self.layers.clone(),
        };
        main.build(&self.path.display().to_string(), rng)
    }

    /// Build a GAN's discriminator.
    pub fn build_discriminator(&self, rng: &mut Rng) -> Result<Option<Sequential>> {
        self.discriminator
            .as_ref()
            .map(|d| d.build(&self.path.display().to_string(), rng))
            .transpose()
    }

    /// The data section, or an error saying it is needed.
    pub fn data(&self) -> Result<&DataSpec> {
        self.data.as_ref().ok_or_else(|| Error::Spec {
            path: self.path.display().to_string(),
            at: "top level".into(),
            msg: "no [data] section: training and evaluation need one".into(),
        })
    }
}

fn parse_model(p: &str, section: &str, model: &toml::Table) -> R<ModelSpec> {
    let m = Table::new(p, format!("[{section}]"), model);
    let (input, any_size) = parse_input(&m)?;
    let layers = match m.get("layers") {
        Some(toml::Value::Array(a)) if !a.is_empty() => a,
        _ => {
            return Err(m.err(
                "layers",
                format!("expected at least one [[{section}.layers]] entry"),
            ));
        }
    };
    let mut out = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let toml::Value::Table(t) = l else {
            return Err(m.err("layers", format!("entry {i} is not a table")));
        };
        let lt = Table::new(p, format!("layer {i}"), t);
        let kind = lt.required(
            "type",
            lt.str("type"),
            &format!("one of: {}", LAYER_TYPES.join(", ")),
        )?;
        out.push(LayerSpec {
            index: i,
            kind: kind.to_string(),
            table: t.clone(),
        });
    }
    m.finish()?;
    Ok(ModelSpec {
        section: section.to_string(),
        input,
        any_size,
        layers: out,
    })
}

impl ModelSpec {
    /// Build with weights drawn from `rng`; `path` names the file in errors.
    pub fn build(&self, path: &str, rng: &mut Rng) -> Result<Sequential> {
        let p = path.to_string();
        let prefix = if self.section == "model" {
            String::new()
        } else {
            format!("[{}] ", self.section)
        };
        let mut model = Sequential::new(self.input.clone())
            .with_any_size(self.any_size.clone())
            .map_err(|e| Error::Spec {
                path: p.clone(),
                at: format!("[{}], key `input`", self.section),
                msg: e.to_string(),
            })?;
        for l in &self.layers {
            let t = Table::new(
                &p,
                format!("{prefix}layer {} ({})", l.index, l.kind),
                &l.table,
            );
            t.get("type");
            let shape = model.output_shape().to_vec();
            let layer =
                layers::build(&t, &l.kind, &shape, rng).map_err(|e| layers::at_layer(&t, e))?;
            t.finish()?;
            model
                .push(layer)
                .map_err(|e| with_trail(layers::at_layer(&t, e), &model))?;
        }
        if self.any_size.contains(&true) {
            if let SizeDependence::Fixed { layer, why } = model.size_dependence() {
                return Err(Error::Spec {
                    path: p,
                    at: format!("[{}], key `input`", self.section),
                    msg: format!(
                        "the input size is \"any\" but {layer} fixes it: {why}; end the model with global pooling (or a 1x1 convolution head) instead of flatten + dense"
                    ),
                });
            }
        }
        Ok(model)
    }
}

/// `e` with the shapes that led to the failing layer, each with its arithmetic, so that a
/// person sees where a size went wrong.
pub fn with_trail(e: Error, model: &Sequential) -> Error {
    let Error::Spec { path, at, mut msg } = e else {
        return e;
    };
    let Ok(rows) = model.report() else {
        return Error::Spec { path, at, msg };
    };
    let top: Vec<_> = rows.iter().filter(|r| r.depth == 0).collect();
    if top.is_empty() {
        return Error::Spec { path, at, msg };
    }
    msg.push_str(&format!(
        "\nthe shapes before it, from the input {}:",
        crate::nn::fmt_shape(&model.input)
    ));
    for r in top {
        msg.push_str(&format!(
            "\n  {} {} -> {}",
            r.name,
            r.kind,
            crate::nn::fmt_shape(&r.output_shape)
        ));
        for a in &r.arithmetic {
            msg.push_str(&format!("\n      {a}"));
        }
    }
    Error::Spec { path, at, msg }
}

/// The size a model is built, checked and summarised at along an axis left open with `"any"`.
pub const ANY_NOMINAL: usize = 64;

/// `input = [channels, size...]`, each spatial size a positive integer or `"any"`.
fn parse_input(m: &Table) -> R<(Vec<usize>, Vec<bool>)> {
    let what = "the per-sample input shape: positive integers, channels first, a spatial size may be \"any\" (e.g. [1, 28, 28] or [1, \"any\"])";
    let Some(v) = m.get("input") else {
        return Err(m.missing("input", what));
    };
    let bad = || m.err("input", format!("expected {what}, got {v}"));
    let toml::Value::Array(a) = v else {
        return Err(bad());
    };
    let mut dims = Vec::new();
    let mut any = Vec::new();
    for (i, x) in a.iter().enumerate() {
        match x {
            toml::Value::Integer(d) if *d > 0 => {
                dims.push(*d as usize);
                any.push(false);
            }
            toml::Value::String(s) if s == "any" && i > 0 => {
                dims.push(ANY_NOMINAL);
                any.push(true);
            }
            _ => return Err(bad()),
        }
    }
    if dims.is_empty() {
        return Err(bad());
    }
    Ok((dims, any))
}

fn path_of(t: &Table, key: &str) -> R<Option<PathBuf>> {
    Ok(t.str(key)?.map(PathBuf::from))
}

fn parse_data(t: &Table) -> R<DataSpec> {
    let format = t.required(
        "format",
        t.choice(
            "format",
            &["idx", "csv", "folder", "ts", "tsv", "series", "npy", "npz"],
        ),
        "\"idx\", \"csv\", \"folder\", \"ts\", \"tsv\", \"series\", \"npy\" or \"npz\"",
    )?;
    let source = match format {
        "idx" => DataSource::Idx {
            train_images: t.required(
                "train_images",
                path_of(t, "train_images"),
                "path of the training images (IDX)",
            )?,
            train_labels: t.required(
                "train_labels",
                path_of(t, "train_labels"),
                "path of the training labels (IDX)",
            )?,
            test_images: path_of(t, "test_images")?,
            test_labels: path_of(t, "test_labels")?,
        },
        "npy" => DataSource::Npy {
            train_x: t.required(
                "train_x",
                path_of(t, "train_x"),
                "the training inputs (.npy)",
            )?,
            train_y: t.required(
                "train_y",
                path_of(t, "train_y"),
                "the training labels (.npy)",
            )?,
            test_x: path_of(t, "test_x")?,
            test_y: path_of(t, "test_y")?,
        },
        "npz" => {
            let name = |key: &str, default: &str| -> R<String> {
                Ok(t.str(key)?.unwrap_or(default).to_string())
            };
            DataSource::Npz {
                path: t.required("path", path_of(t, "path"), "the .npz archive")?,
                train_x: name("train_x", "x_train")?,
                train_y: name("train_y", "y_train")?,
                test_x: name("test_x", "x_test")?,
                test_y: name("test_y", "y_test")?,
                test_named: t.get("test_x").is_some() || t.get("test_y").is_some(),
            }
        }
        "csv" => DataSource::Csv {
            train: t.required("train", path_of(t, "train"), "path of the training CSV")?,
            test: path_of(t, "test")?,
            label_column: t.str("label_column")?.unwrap_or("label").to_string(),
            pixel_max: t.f32("pixel_max")?.unwrap_or(255.0),
        },
        "ts" | "tsv" => DataSource::Labeled {
            train: t.required("train", path_of(t, "train"), "path of the training series")?,
            test: path_of(t, "test")?,
            tsv: format == "tsv",
        },
        "series" => DataSource::Series(parse_series(t)?),
        _ => DataSource::Folder {
            train: t.required(
                "train",
                path_of(t, "train"),
                "folder with one subfolder per class",
            )?,
            test: path_of(t, "test")?,
        },
    };
    if let DataSource::Npy { test_x, test_y, .. } = &source
        && test_x.is_some() != test_y.is_some()
    {
        return Err(t.err("test_y", "test_x and test_y go together"));
    }
    if let DataSource::Idx {
        test_images,
        test_labels,
        ..
    } = &source
    {
        if test_images.is_some() != test_labels.is_some() {
            return Err(t.err("test_labels", "test_images and test_labels go together"));
        }
    }
    let validation_split = match &source {
        // a series' validation part is its end, read by parse_series
        DataSource::Series(_) => 0.0,
        _ => t.f32("validation_split")?.unwrap_or(0.1),
    };
    if !(0.0..1.0).contains(&validation_split) {
        return Err(t.err(
            "validation_split",
            format!("{validation_split} is not in [0, 1)"),
        ));
    }
    let normalize = match t.get("normalize") {
        None => NormalizeSpec::Standardize,
        Some(toml::Value::String(s)) if s == "standardize" => NormalizeSpec::Standardize,
        Some(toml::Value::String(s)) if s == "scale" || s == "none" => NormalizeSpec::Scale,
        Some(toml::Value::String(s)) if s == "per_series" => NormalizeSpec::PerSeries,
        Some(toml::Value::Table(nt)) => {
            let n = Table::new(t.path, "[data.normalize]", nt);
            let mean = n.required("mean", n.f32_list("mean"), "per-channel means")?;
            let std = n.required("std", n.f32_list("std"), "per-channel standard deviations")?;
            n.finish()?;
            if mean.len() != std.len() || std.iter().any(|&s| s <= 0.0) {
                return Err(t.err(
                    "normalize",
                    "mean and std need one value per channel, std positive",
                ));
            }
            NormalizeSpec::Fixed { mean, std }
        }
        Some(v) => return Err(t.err(
            "normalize",
            format!(
                "expected \"standardize\", \"scale\", \"per_series\" or {{ mean = [...], std = [...] }}, got {v}"
            ),
        )),
    };
    let augment = match t.get("augment") {
        None => Augment::default(),
        Some(toml::Value::Table(at)) => parse_augment(&Table::new(t.path, "[data.augment]", at))?,
        Some(v) => {
            return Err(t.err(
                "augment",
                format!("expected a table [data.augment], got {v}"),
            ));
        }
    };
    if augment.is_active() && matches!(source, DataSource::Series(_) | DataSource::Labeled { .. }) {
        return Err(t.err("augment", "image augmentation does not apply to series"));
    }
    let class_names = t.str_list("class_names")?;
    let resize = t.bool("resize")?.unwrap_or(false);
    let resample = t.usize("resample")?;
    match (resample, &source) {
        (Some(n), _) if n < 2 => {
            return Err(t.err("resample", format!("{n} steps: at least 2")));
        }
        (Some(_), DataSource::Labeled { .. }) | (None, _) => {}
        (Some(_), _) => {
            return Err(t.err(
                "resample",
                "resamples labelled series (format = \"ts\" or \"tsv\")",
            ));
        }
    }
    t.finish()?;
    Ok(DataSpec {
        source,
        validation_split,
        normalize,
        augment,
        class_names,
        resize,
        resample,
    })
}

fn parse_series(t: &Table) -> R<SeriesSource> {
    let path = t.required("path", path_of(t, "path"), "path of the series CSV")?;
    let interpolate = match t.choice("missing", &["error", "interpolate"])? {
        Some("interpolate") => true,
        _ => false,
    };
    let read = SeriesRead {
        columns: t.str_list("columns")?,
        time_column: t.str("time_column")?.map(str::to_string),
        interpolate,
    };
    let horizon = t.usize("horizon")?.unwrap_or(1);
    let stride = t.usize("stride")?.unwrap_or(1);
    for (k, v) in [("horizon", horizon), ("stride", stride)] {
        if v == 0 {
            return Err(t.err(k, "must be positive"));
        }
    }
    let split = match (t.usize("split")?, t.f32("validation_split")?) {
        (Some(_), Some(_)) => {
            return Err(t.err(
                "validation_split",
                "give `split` (the first validation step) or `validation_split` (a fraction), not both",
            ));
        }
        (Some(i), None) => SeriesSplit::At(i),
        (None, Some(f)) if (0.0..1.0).contains(&f) => SeriesSplit::Fraction(f),
        (None, Some(f)) => return Err(t.err("validation_split", format!("{f} is not in [0, 1)"))),
        (None, None) => SeriesSplit::Fraction(0.2),
    };
    let test = match (t.usize("test_start")?, t.f32("test_split")?) {
        (Some(_), Some(_)) => {
            return Err(t.err(
                "test_split",
                "give `test_start` (the first test step) or `test_split` (a fraction), not both",
            ));
        }
        (Some(i), None) => Some(SeriesSplit::At(i)),
        (None, Some(f)) if f > 0.0 && f < 1.0 => Some(SeriesSplit::Fraction(f)),
        (None, Some(f)) => return Err(t.err("test_split", format!("{f} is not in (0, 1)"))),
        (None, None) => None,
    };
    let seasonality = t.usize("seasonality")?;
    if seasonality == Some(0) {
        return Err(t.err("seasonality", "must be positive"));
    }
    Ok(SeriesSource {
        path,
        read,
        targets: t.str_list("targets")?,
        horizon,
        stride,
        split,
        test,
        seasonality,
        relative: t.bool("relative")?.unwrap_or(false),
    })
}

/// `[train.schedule] type = "one_cycle"`: PyTorch's `OneCycleLR` keys and defaults.
fn parse_one_cycle(s: &Table) -> R<crate::optim::OneCycle> {
    let d = crate::optim::OneCycle::default();
    let positive = |k: &str, v: Option<f32>| -> R<Option<f32>> {
        match v {
            Some(x) if !(x > 0.0 && x.is_finite()) => {
                Err(s.err(k, format!("{x} must be positive")))
            }
            _ => Ok(v),
        }
    };
    let pct_start = s.f32("pct_start")?.unwrap_or(d.pct_start);
    if !(pct_start > 0.0 && pct_start < 1.0) {
        return Err(s.err("pct_start", format!("{pct_start} is not in (0, 1)")));
    }
    let (base, max) = (
        s.f32("base_momentum")?.unwrap_or(0.85),
        s.f32("max_momentum")?.unwrap_or(0.95),
    );
    if !(0.0..1.0).contains(&base) || !(0.0..1.0).contains(&max) {
        return Err(s.err("base_momentum", "momenta are in [0, 1)"));
    }
    Ok(crate::optim::OneCycle {
        max_lr: positive("max_lr", s.f32("max_lr")?)?,
        pct_start,
        div_factor: positive("div_factor", s.f32("div_factor")?)?.unwrap_or(d.div_factor),
        final_div_factor: positive("final_div_factor", s.f32("final_div_factor")?)?
            .unwrap_or(d.final_div_factor),
        three_phase: s.bool("three_phase")?.unwrap_or(false),
        momentum: s
            .bool("cycle_momentum")?
            .unwrap_or(true)
            .then_some((base, max)),
    })
}

fn parse_augment(t: &Table) -> R<Augment> {
    let prob = |k: &str| -> R<f32> {
        let v = t.f32(k)?.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&v) {
            return Err(t.err(k, format!("{v} is not a probability in [0, 1]")));
        }
        Ok(v)
    };
    let nonneg = |k: &str, max: f32| -> R<f32> {
        let v = t.f32(k)?.unwrap_or(0.0);
        if !(0.0..=max).contains(&v) {
            return Err(t.err(k, format!("{v} is not in [0, {max}]")));
        }
        Ok(v)
    };
    let a = Augment {
        hflip: prob("hflip")?,
        vflip: prob("vflip")?,
        rotation: nonneg("rotation", 180.0)?,
        zoom: nonneg("zoom", 0.9)?,
        translate: nonneg("translate", 0.5)?,
        crop_padding: t.usize("crop_padding")?.unwrap_or(0),
        brightness: nonneg("brightness", 1.0)?,
        contrast: nonneg("contrast", 1.0)?,
        erasing: prob("erasing")?,
    };
    t.finish()?;
    Ok(a)
}

fn parse_train(t: &Table) -> R<TrainSpec> {
    let epochs = t.usize("epochs")?.unwrap_or(10);
    let batch_size = t.usize("batch_size")?.unwrap_or(64);
    if epochs == 0 || batch_size == 0 {
        return Err(t.err(
            if epochs == 0 { "epochs" } else { "batch_size" },
            "must be positive",
        ));
    }
    let seed = t.usize("seed")?.unwrap_or(0) as u64;
    let max_seconds = t.f32("max_seconds")?;
    if max_seconds.is_some_and(|s| !(s > 0.0 && s.is_finite())) {
        return Err(t.err("max_seconds", "must be a positive number of seconds"));
    }
    let task = match t.choice("task", &["supervised", "autoencoder", "gan"])? {
        Some("autoencoder") => TaskKind::Autoencoder,
        Some("gan") => TaskKind::Gan,
        _ => TaskKind::Supervised,
    };
    let loss = match t.choice("loss", &["cross_entropy", "mse", "mae", "huber", "bce"])? {
        Some("bce") => Some(Loss::Bce),
        Some("mse") => Some(Loss::Mse),
        Some("mae") => Some(Loss::Mae),
        Some("huber") => Some(Loss::Huber {
            delta: t.f32("huber_delta")?.unwrap_or(1.0),
        }),
        Some(_) => Some(Loss::CrossEntropy),
        None => None,
    };
    let sync_batch_norm = t.bool("sync_batch_norm")?.unwrap_or(false);
    let label_smoothing = t.f32("label_smoothing")?.unwrap_or(0.0);
    if !(0.0..1.0).contains(&label_smoothing) {
        return Err(t.err(
            "label_smoothing",
            format!("{label_smoothing} is not in [0, 1)"),
        ));
    }
    let class_weights = t.f32_list("class_weights")?;
    let clip_grad_norm = t.f32("clip_grad_norm")?.filter(|&v| v > 0.0);
    let ot = t.table_or_name("optimizer")?.unwrap_or_else(|| {
        let mut m = toml::Table::new();
        m.insert("type".into(), toml::Value::String("adam".into()));
        m
    });
    let o = Table::new(t.path, "[train.optimizer]", &ot);
    let kind = o.required(
        "type",
        o.choice("type", &["sgd", "adam", "adamw", "rmsprop"]),
        "sgd, adam, adamw or rmsprop",
    )?;
    let betas = o.f32_list("betas")?.unwrap_or(vec![0.9, 0.999]);
    if betas.len() != 2 {
        return Err(o.err("betas", "expected two numbers [beta1, beta2]"));
    }
    let (lr_default, wd_default) = match kind {
        "sgd" => (0.01, 0.0),
        "adamw" => (1e-3, 0.01),
        "rmsprop" => (0.01, 0.0),
        _ => (1e-3, 0.0),
    };
    let lr = o.f32("lr")?.unwrap_or(lr_default);
    if !(lr > 0.0) {
        return Err(o.err("lr", format!("{lr} must be positive")));
    }
    let weight_decay = o.f32("weight_decay")?.unwrap_or(wd_default);
    let optimizer = match kind {
        "sgd" => OptimizerKind::Sgd {
            momentum: o.f32("momentum")?.unwrap_or(0.0),
            nesterov: o.bool("nesterov")?.unwrap_or(false),
            dampening: 0.0,
        },
        "adam" => OptimizerKind::Adam {
            beta1: betas[0],
            beta2: betas[1],
            eps: o.f32("eps")?.unwrap_or(1e-8),
        },
        "adamw" => OptimizerKind::AdamW {
            beta1: betas[0],
            beta2: betas[1],
            eps: o.f32("eps")?.unwrap_or(1e-8),
        },
        _ => OptimizerKind::RmsProp {
            alpha: o.f32("alpha")?.unwrap_or(0.99),
            eps: o.f32("eps")?.unwrap_or(1e-8),
            momentum: o.f32("momentum")?.unwrap_or(0.0),
        },
    };
    crate::optim::Optimizer::new(optimizer.clone(), weight_decay).map_err(|e| match e {
        Error::Param { param, msg, .. } => o.err(param, msg),
        other => other,
    })?;
    o.finish()?;
    let schedule = match t.table_or_name("schedule")? {
        None => Schedule::Constant,
        Some(st) => {
            let s = Table::new(t.path, "[train.schedule]", &st);
            let kind = s.required(
                "type",
                s.choice(
                    "type",
                    &[
                        "constant",
                        "step",
                        "exponential",
                        "cosine",
                        "plateau",
                        "one_cycle",
                    ],
                ),
                "constant, step, exponential, cosine, plateau or one_cycle",
            )?;
            let sched = match kind {
                "step" => Schedule::Step {
                    step_size: s.usize("step_size")?.unwrap_or(10).max(1),
                    gamma: s.f32("gamma")?.unwrap_or(0.1),
                },
                "exponential" => Schedule::Exponential {
                    gamma: s.f32("gamma")?.unwrap_or(0.95),
                },
                "cosine" => Schedule::Cosine {
                    warmup_epochs: s.f32("warmup_epochs")?.unwrap_or(0.0),
                    min_lr: s.f32("min_lr")?.unwrap_or(0.0),
                },
                "plateau" => Schedule::Plateau {
                    factor: s.f32("factor")?.unwrap_or(0.1),
                    patience: s.usize("patience")?.unwrap_or(2),
                    min_lr: s.f32("min_lr")?.unwrap_or(0.0),
                },
                "one_cycle" => Schedule::OneCycle(parse_one_cycle(&s)?),
                _ => Schedule::Constant,
            };
            s.finish()?;
            sched
        }
    };
    let ema = match t.get("ema") {
        None => None,
        Some(toml::Value::Table(et)) => {
            let e = Table::new(t.path, "[train.ema]", et);
            let decay = e.required("decay", e.f32("decay"), "a number in (0, 1), e.g. 0.999")?;
            if !(decay > 0.0 && decay < 1.0) {
                return Err(e.err("decay", format!("{decay} is not in (0, 1)")));
            }
            e.finish()?;
            Some(decay)
        }
        Some(v) => {
            return Err(t.err(
                "ema",
                format!("expected a table such as {{ decay = 0.999 }}, got {v}"),
            ));
        }
    };
    let tta_hflip = match t.str_list("tta")? {
        None => false,
        Some(v) => {
            if let Some(bad) = v.iter().find(|a| a.as_str() != "hflip") {
                return Err(t.err(
                    "tta",
                    format!("unknown test-time augmentation \"{bad}\" (known: \"hflip\")"),
                ));
            }
            !v.is_empty()
        }
    };
    let early_stopping = match t.get("early_stopping") {
        None => None,
        Some(toml::Value::Table(et)) => {
            let e = Table::new(t.path, "[train.early_stopping]", et);
            let es = EarlyStopping {
                monitor: e
                    .choice("monitor", &["val_loss", "val_acc", "val_mae"])?
                    .unwrap_or("val_loss")
                    .to_string(),
                patience: e.usize("patience")?.unwrap_or(3),
                min_delta: e.f32("min_delta")?.unwrap_or(0.0),
            };
            e.finish()?;
            Some(es)
        }
        Some(v) => return Err(t.err("early_stopping", format!("expected a table, got {v}"))),
    };
    t.finish()?;
    Ok(TrainSpec {
        epochs,
        batch_size,
        seed,
        label_smoothing,
        class_weights,
        optimizer,
        lr,
        weight_decay,
        schedule,
        clip_grad_norm,
        early_stopping,
        max_seconds,
        ema,
        tta_hflip,
        loss,
        task,
        sync_batch_norm,
    })
}
