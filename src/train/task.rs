//! What a run learns, and so which loss and which quality figure it uses: a classifier
//! (cross-entropy, accuracy) or a forecaster (MSE, MAE or Huber loss on normalised targets;
//! mean absolute error reported in the targets' own units).

use crate::data::{Batch, Normalize};
use crate::error::{Error, Result};
use crate::nn::Sequential;
use crate::ops::{self, CrossEntropyOptions, PointLoss, Pointwise};
use crate::plan::PlanLoss;
use crate::spec::{DataSource, Loss, Spec};
use crate::tensor::Tensor;

use super::metrics::argmax;

/// The per-epoch quality figure.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Metric {
    /// Fraction of samples classified right.
    Accuracy,
    /// Mean absolute error of the forecasts, in the targets' units.
    Mae,
    /// Mean squared error of reconstructed pixels (in [0, 1]).
    Mse,
}

impl Metric {
    /// `acc` or `mae`, as in metrics.csv's columns and `val_acc` / `val_mae`.
    pub fn name(&self) -> &'static str {
        match self {
            Metric::Accuracy => "acc",
            Metric::Mae => "mae",
            Metric::Mse => "mse",
        }
    }
    /// `91.25%` or `10.3121`.
    pub fn show(&self, v: f64) -> String {
        match self {
            Metric::Accuracy => format!("{:.2}%", 100.0 * v),
            Metric::Mae => format!("{v:.4}"),
            Metric::Mse => format!("{v:.5}"),
        }
    }
    pub fn higher_is_better(&self) -> bool {
        *self == Metric::Accuracy
    }
    /// The chart's title.
    pub fn title(&self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::Mae => "MAE",
            Metric::Mse => "reconstruction MSE",
        }
    }
}

/// A classifier or a forecaster.
#[derive(Clone, Debug, PartialEq)]
pub enum Task {
    Classify {
        classes: usize,
        options: CrossEntropyOptions,
    },
    Forecast {
        /// Values per sample: targets x horizon, target-major.
        outputs: usize,
        horizon: usize,
        loss: Loss,
        /// Per target: its standard deviation, to report errors in its units.
        target_std: Vec<f32>,
    },
    /// Reconstruct the input (pixels in [0, 1]); with `Loss::Bce` the model outputs logits.
    Autoencode { loss: Loss },
}

impl Task {
    /// The task a spec and its model describe; the model's output must fit it. For a
    /// forecaster, `target_std` is filled in once the data is read.
    pub fn of(spec: &Spec, model: &Sequential) -> Result<Task> {
        let out = model.output_shape();
        let loss = spec.train.loss.clone();
        let kind = super::RunKind::of(spec);
        if kind == super::RunKind::Autoencoder {
            if out != &model.input[..] {
                let e = spec.err(
                    "[model]",
                    format!(
                        "an autoencoder must output its input's shape {}, this model outputs {}",
                        crate::nn::fmt_shape(&model.input),
                        crate::nn::fmt_shape(out)
                    ),
                );
                return Err(crate::spec::with_trail(e, model));
            }
            if let Some(d) = &spec.data {
                if d.normalize != crate::spec::NormalizeSpec::Scale {
                    return Err(spec.err(
                        "[data], key `normalize`",
                        "an autoencoder reconstructs pixels in [0, 1]: set normalize = \"scale\""
                            .into(),
                    ));
                }
            }
            let loss = match loss {
                None => Loss::Mse,
                Some(l @ (Loss::Mse | Loss::Bce)) => l,
                Some(_) => {
                    return Err(spec.err(
                        "[train], key `loss`",
                        "an autoencoder's loss is mse or bce".into(),
                    ));
                }
            };
            return Ok(Task::Autoencode { loss });
        }
        if let (super::RunKind::Forecaster, Some(DataSource::Series(s))) =
            (kind, spec.data.as_ref().map(|d| &d.source))
        {
            let targets = s.targets.as_ref().map_or(spec.input[0], |t| t.len());
            let outputs = targets * s.horizon;
            let n: usize = out.iter().product();
            if n != outputs {
                return Err(spec.err("[model]",
                    format!(
                        "the model outputs {out:?} per sample ({n} values) but the data asks for {targets} target(s) x horizon {} = {outputs}",
                        s.horizon
                    ),
                ));
            }
            let loss = match loss {
                None => Loss::Mse,
                Some(Loss::CrossEntropy) => {
                    return Err(spec.err(
                        "[train], key `loss`",
                        "a forecaster's loss is mse, mae or huber".into(),
                    ));
                }
                Some(l) => l,
            };
            return Ok(Task::Forecast {
                outputs,
                horizon: s.horizon,
                loss,
                target_std: vec![1.0; targets],
            });
        }
        if matches!(loss, Some(ref l) if *l != Loss::CrossEntropy) {
            return Err(spec.err(
                "[train], key `loss`",
                "a classifier's loss is cross_entropy".into(),
            ));
        }
        let classes = match out {
            [k] if *k >= 2 => *k,
            other => {
                return Err(spec.err("[model]",
                    format!(
                        "a classifier's last layer must output (classes) with at least 2 classes per sample, this model outputs {other:?}"
                    ),
                ));
            }
        };
        let options = super::loss_options(spec);
        // Check the options (class weights per class) before any data is read.
        ops::cross_entropy(&Tensor::zeros(&[1, classes])?, &[0], &options)
            .map_err(|e| spec.err("[train]", e.to_string()))?;
        Ok(Task::Classify { classes, options })
    }

    pub fn metric(&self) -> Metric {
        match self {
            Task::Classify { .. } => Metric::Accuracy,
            Task::Forecast { .. } => Metric::Mae,
            Task::Autoencode { .. } => Metric::Mse,
        }
    }

    /// The loss of a batch's outputs.
    pub fn loss(&self, out: &Tensor, batch: &Batch) -> Result<Tensor> {
        match self {
            Task::Classify { options, .. } => ops::cross_entropy(out, &batch.labels, options),
            Task::Forecast { outputs, loss, .. } => {
                let y = ops::reshape(out, &[batch.len(), *outputs])?;
                let t = batch
                    .targets
                    .as_ref()
                    .ok_or_else(|| Error::Autograd("a forecaster's batch has no targets".into()))?;
                match loss {
                    Loss::Mae => ops::mae(&y, t),
                    Loss::Huber { delta } => ops::huber(&y, t, *delta),
                    _ => ops::mse(&y, t),
                }
            }
            Task::Autoencode { loss } => match loss {
                Loss::Bce => ops::binary_cross_entropy_with_logits(out, &batch.x, None),
                _ => ops::mse(out, &batch.x),
            },
        }
    }

    /// The model's reconstructions in pixel units (after the sigmoid of a BCE model).
    pub fn reconstruction(&self, out: &Tensor) -> Result<Tensor> {
        match self {
            Task::Autoencode { loss: Loss::Bce } => ops::sigmoid(out),
            _ => Ok(out.clone()),
        }
    }

    /// The loss of a batch as the compiled training plan computes it, handed to `f`; `None`
    /// where the plan has no such loss (the caller then runs [`Self::loss`] eagerly).
    pub fn with_plan_loss<R>(&self, batch: &Batch, f: impl FnOnce(PlanLoss) -> R) -> Option<R> {
        let kind = |loss: &Loss| match loss {
            Loss::Mae => Some(PointLoss::Mae),
            Loss::Huber { delta } if *delta > 0.0 => Some(PointLoss::Huber(*delta)),
            Loss::Huber { .. } => None, // the eager op names the bad delta
            Loss::Bce => Some(PointLoss::Bce(1.0)),
            _ => Some(PointLoss::Mse),
        };
        match self {
            Task::Classify { options, .. } => Some(f(PlanLoss::CrossEntropy {
                targets: &batch.labels,
                options,
            })),
            Task::Forecast { loss, .. } => {
                let kind = kind(loss).filter(|k| *k != PointLoss::Bce(1.0))?;
                let t = batch.targets.as_ref()?.data();
                Some(f(PlanLoss::Pointwise { kind, targets: &t }))
            }
            Task::Autoencode { loss } => {
                let kind = kind(loss)?;
                let t = batch.x.data();
                Some(f(PlanLoss::Pointwise { kind, targets: &t }))
            }
        }
    }

    /// The metric's sum over a batch (correct samples, or absolute errors in target units)
    /// and the number of terms it sums.
    pub fn metric_sum(&self, out: &Tensor, batch: &Batch) -> (f64, usize) {
        self.metric_sum_of(&out.data(), batch)
    }

    /// [`Self::metric_sum`] of the outputs `(n, *output)` flattened.
    pub fn metric_sum_of(&self, out: &[f32], batch: &Batch) -> (f64, usize) {
        match self {
            Task::Classify { classes, .. } => {
                let correct = out
                    .chunks(*classes)
                    .zip(&batch.labels)
                    .filter(|(row, y)| argmax(row) == **y)
                    .count();
                (correct as f64, batch.labels.len())
            }
            Task::Forecast {
                outputs,
                horizon,
                target_std,
                ..
            } => {
                let Some(t) = &batch.targets else {
                    return (0.0, 0);
                };
                let sum = out
                    .iter()
                    .zip(t.data().iter())
                    .enumerate()
                    .map(|(i, (a, b))| {
                        let j = (i % outputs) / horizon;
                        (a - b).abs() as f64 * target_std[j] as f64
                    })
                    .sum();
                (sum, out.len())
            }
            Task::Autoencode { loss } => {
                // the reconstruction: the outputs, through the sigmoid for a BCE model
                let bce = matches!(loss, Loss::Bce);
                let sum = out
                    .iter()
                    .zip(batch.x.data().iter())
                    .map(|(&a, b)| {
                        let r = if bce { Pointwise::Sigmoid.f(a) } else { a };
                        ((r - b) as f64).powi(2)
                    })
                    .sum();
                (sum, out.len())
            }
        }
    }

    /// The targets' normalisation, for a forecaster.
    pub fn with_target_norm(self, norm: &Normalize) -> Task {
        match self {
            Task::Forecast {
                outputs,
                horizon,
                loss,
                ..
            } => Task::Forecast {
                outputs,
                horizon,
                loss,
                target_std: norm.std.clone(),
            },
            t => t,
        }
    }
}
