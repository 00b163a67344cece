//! Forecasting with a trained model: multi-step forecasts (direct from a multi-output head,
//! or recursive by feeding forecasts back as inputs), the error metrics MAE, RMSE, sMAPE and
//! MASE, and the naive (last value) and seasonal-naive baselines on the same windows, so that a
//! person sees at once whether the model learned anything.

use crate::autograd::no_grad;
use crate::data::{Normalize, Series};
use crate::error::{Error, Result};
use crate::nn::{Ctx, Sequential};
use crate::rng::Rng;
use crate::spec::{DataSource, SeriesSource, Spec};
use crate::tensor::Tensor;

use super::RunInfo;
use super::data::series_columns;

/// Error metrics of a set of forecasts against the truth.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ForecastMetrics {
    pub mae: f64,
    pub rmse: f64,
    /// Symmetric MAPE in percent: mean of `200 |y - f| / (|y| + |f|)` (0 where both are 0).
    pub smape: f64,
    /// MAE over the in-sample MAE of the (seasonal) naive one-step forecast on the training part.
    pub mase: Option<f64>,
}

/// `pred[i]` against `truth[i]`; `scale[i]` is the MASE denominator for that value.
pub fn forecast_metrics(pred: &[f32], truth: &[f32], scale: Option<&[f64]>) -> ForecastMetrics {
    let n = pred.len().max(1) as f64;
    let (mut ae, mut se, mut sm, mut scaled) = (0f64, 0f64, 0f64, 0f64);
    for (i, (&f, &y)) in pred.iter().zip(truth).enumerate() {
        let (f, y) = (f as f64, y as f64);
        let e = (y - f).abs();
        ae += e;
        se += e * e;
        let d = y.abs() + f.abs();
        if d > 0.0 {
            sm += 2.0 * e / d;
        }
        if let Some(s) = scale {
            scaled += e / s[i];
        }
    }
    ForecastMetrics {
        mae: ae / n,
        rmse: (se / n).sqrt(),
        smape: 100.0 * sm / n,
        mase: scale.map(|_| scaled / n),
    }
}

/// The mean absolute change over `lag` steps of `v[..end]`: MASE's scale.
pub fn naive_scale(v: &[f32], lag: usize, end: usize) -> f64 {
    let end = end.min(v.len());
    if end <= lag {
        return f64::NAN;
    }
    let s: f64 = (lag..end).map(|t| (v[t] - v[t - lag]).abs() as f64).sum();
    (s / (end - lag) as f64).max(1e-12)
}

/// The naive forecast from origin `t` (the last value before it), `h` steps.
pub fn naive(v: &[f32], t: usize, h: usize) -> Vec<f32> {
    vec![v[t - 1]; h]
}

/// The seasonal-naive forecast from origin `t`: each step's value one season earlier.
pub fn seasonal_naive(v: &[f32], t: usize, h: usize, m: usize) -> Vec<f32> {
    (0..h).map(|i| v[t + i - m * (i / m + 1)]).collect()
}

/// A forecaster loaded from a run: the model, its series settings and normalisation.
pub struct Forecaster<'a> {
    pub model: &'a Sequential,
    pub source: &'a SeriesSource,
    pub window: usize,
    pub input_norm: Normalize,
    pub target_norm: Normalize,
    /// The columns the model forecasts (run.json).
    pub target_names: Vec<String>,
    /// Indices of the targets among the input columns of the attached series.
    pub targets: Vec<usize>,
}

impl<'a> Forecaster<'a> {
    /// From a run's spec, model and run.json.
    pub fn new(spec: &'a Spec, model: &'a Sequential, info: &RunInfo) -> Result<Forecaster<'a>> {
        let Some(DataSource::Series(source)) = spec.data.as_ref().map(|d| &d.source) else {
            return Err(spec.err(
                "[data]",
                "this run is not a forecaster (its data is not format = \"series\")".into(),
            ));
        };
        let n = info.target_names.len();
        if n == 0 || info.target_std.len() != n || info.target_mean.len() != n {
            return Err(Error::Format {
                path: "run.json".into(),
                msg: format!(
                    "{} target names with {} normalisations: not a forecaster's run",
                    n,
                    info.target_std.len()
                ),
            });
        }
        Ok(Forecaster {
            model,
            source,
            window: spec.input[1],
            input_norm: info.normalize(),
            target_norm: Normalize::new(info.target_mean.clone(), info.target_std.clone()),
            target_names: info.target_names.clone(),
            targets: Vec::new(),
        })
    }

    /// Fit the forecaster to a series to forecast (read with the spec's columns): it must have
    /// the model's input channels and the targets the model was trained on.
    pub fn attach(&mut self, series: &Series, path: &str) -> Result<()> {
        let channels = self.input_norm.mean.len();
        if series.names.len() != channels {
            return Err(Error::Format {
                path: path.into(),
                msg: format!(
                    "{} value column(s) ({}) for a model trained on {channels}",
                    series.names.len(),
                    series.names.join(", ")
                ),
            });
        }
        self.targets = self
            .target_names
            .iter()
            .map(|t| {
                series
                    .names
                    .iter()
                    .position(|n| n == t)
                    .ok_or_else(|| Error::Format {
                        path: path.into(),
                        msg: format!(
                            "no column `{t}`, which the model forecasts; the series has {}",
                            series.names.join(", ")
                        ),
                    })
            })
            .collect::<Result<_>>()?;
        Ok(())
    }

    /// The model's input for the last `window` steps of `cols` (each column's history): the
    /// values as the model sees them (relative to the last value when the spec asks,
    /// normalised), laid out `(channels, window)`, and each column's last value.
    pub fn input_window(&self, cols: &[Vec<f32>]) -> (Vec<f32>, Vec<f32>) {
        let last: Vec<f32> = cols.iter().map(|v| v[v.len() - 1]).collect();
        let mut x = Vec::with_capacity(cols.len() * self.window);
        for (ch, v) in cols.iter().enumerate() {
            let (m, s) = (self.input_norm.mean[ch], self.input_norm.std[ch]);
            let base = if self.source.relative { last[ch] } else { 0.0 };
            x.extend(
                v[v.len() - self.window..]
                    .iter()
                    .map(|&v| (v - base - m) / s),
            );
        }
        (x, last)
    }

    /// Forecasts (per target, `horizon` steps, in the targets' units) from each origin `t`
    /// of `origins`, using `cols[c][t - window..t]`, in batches. One model call per origin when
    /// the model's horizon covers `horizon`; otherwise the model's forecasts are fed back
    /// (recursive forecasting, which needs every input column to be a target).
    pub fn forecast(
        &self,
        cols: &[Vec<f32>],
        origins: &[usize],
        horizon: usize,
    ) -> Result<Vec<Vec<Vec<f32>>>> {
        if horizon == 0 {
            return Err(Error::Param {
                op: "forecast",
                param: "horizon",
                msg: "must be at least 1".into(),
            });
        }
        let h_model = self.source.horizon;
        let c = cols.len();
        let recursive = horizon > h_model;
        if recursive
            && (self.targets.len() != c || self.targets.iter().enumerate().any(|(i, &j)| i != j))
        {
            return Err(Error::Param {
                op: "forecast",
                param: "horizon",
                msg: format!(
                    "the model forecasts {h_model} step(s); forecasting {horizon} feeds its forecasts back as inputs, which needs every input column to be a target"
                ),
            });
        }
        // per origin: the working history of each column (the window, then forecasts)
        let mut hist: Vec<Vec<Vec<f32>>> = origins
            .iter()
            .map(|&t| {
                cols.iter()
                    .map(|v| v[t - self.window..t].to_vec())
                    .collect()
            })
            .collect();
        let mut out: Vec<Vec<Vec<f32>>> = vec![vec![Vec::new(); self.targets.len()]; origins.len()];
        let mut rng = Rng::new(0);
        while out.first().is_some_and(|o| o[0].len() < horizon) {
            for chunk in (0..origins.len()).collect::<Vec<_>>().chunks(256) {
                let mut x = Vec::with_capacity(chunk.len() * c * self.window);
                let mut lasts = Vec::with_capacity(chunk.len());
                for &k in chunk {
                    let (w, last) = self.input_window(&hist[k]);
                    x.extend(w);
                    lasts.push(last);
                }
                let xt = Tensor::from_vec(x, &[chunk.len(), c, self.window])?;
                let y = no_grad(|| {
                    self.model.forward(
                        &xt,
                        &mut Ctx {
                            training: false,
                            rng: &mut rng,
                            lengths: None,
                        },
                    )
                })?;
                let y = y.data();
                let per = self.targets.len() * h_model;
                for (r, &k) in chunk.iter().enumerate() {
                    for j in 0..self.targets.len() {
                        let (m, s) = (self.target_norm.mean[j], self.target_norm.std[j]);
                        let base = if self.source.relative {
                            lasts[r][self.targets[j]]
                        } else {
                            0.0
                        };
                        let vals: Vec<f32> = (0..h_model)
                            .map(|i| y[r * per + j * h_model + i] * s + m + base)
                            .collect();
                        let need = horizon - out[k][j].len();
                        out[k][j].extend(vals.iter().take(need));
                        if recursive {
                            hist[k][j].extend(vals.iter().take(need));
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The part of a forecaster's series to score: the validation part (between `split` and the
/// test part, whose windows chose the weights) or the test part (after it, seen by nothing
/// before the report).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Part {
    Validation,
    Test,
}

impl Part {
    /// `validation` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            Part::Validation => "validation",
            Part::Test => "test",
        }
    }
}

/// Model and baselines on a part of a forecaster's series: every origin of the part whose
/// `horizon` steps are known and inside it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ForecastReport {
    /// `validation` or `test` (empty for a forecast from one origin).
    pub part: String,
    /// The first step of the part (of the training part's end for MASE's scale).
    pub split: usize,
    pub origins: usize,
    pub horizon: usize,
    pub targets: Vec<String>,
    pub model: ForecastMetrics,
    pub naive: ForecastMetrics,
    pub seasonal_naive: Option<ForecastMetrics>,
    pub seasonality: Option<usize>,
}

/// Evaluate a forecaster on a part of its series, `horizon` steps from each origin (the
/// model's own horizon by default), none reaching past the part's end. MASE is scaled by the
/// naive forecast's error on the training part in both parts.
pub fn evaluate_forecaster(
    spec: &Spec,
    model: &Sequential,
    info: &RunInfo,
    horizon: Option<usize>,
    part: Part,
) -> Result<ForecastReport> {
    let mut f = Forecaster::new(spec, model, info)?;
    let (series, targets) = series_columns(spec, f.source)?;
    f.attach(&series, &f.source.path.display().to_string())?;
    let horizon = horizon.unwrap_or(f.source.horizon);
    if horizon == 0 {
        return Err(Error::Param {
            op: "forecast",
            param: "horizon",
            msg: "must be at least 1".into(),
        });
    }
    let len = series.len();
    let split = f.source.split_at(len);
    let (start, end) = match (part, f.source.test_at(len)) {
        (Part::Validation, _) => (split, f.source.val_end(len)),
        (Part::Test, Some(t)) => (t, len),
        (Part::Test, None) => {
            return Err(Error::Param {
                op: "forecast",
                param: "data",
                msg: "the spec sets no test part apart ([data] test_start or test_split)".into(),
            });
        }
    };
    let origins: Vec<usize> = (start.max(f.window)..=end.saturating_sub(horizon)).collect();
    if origins.is_empty() {
        return Err(Error::Param {
            op: "forecast",
            param: "horizon",
            msg: format!(
                "no origin of the {} part (steps {start} to {end} of {len}) has {horizon} known steps inside it",
                part.name()
            ),
        });
    }
    let mut r = report(&f, &series, &targets, split, &origins, horizon)?;
    r.part = part.name().into();
    r.split = start;
    Ok(r)
}

/// Metrics of the model and the baselines from `origins`, `horizon` steps each.
pub fn report(
    f: &Forecaster,
    series: &Series,
    targets: &[usize],
    split: usize,
    origins: &[usize],
    horizon: usize,
) -> Result<ForecastReport> {
    let preds = f.forecast(&series.values, origins, horizon)?;
    Ok(score(
        series,
        targets,
        origins,
        horizon,
        &preds,
        f.source.seasonality,
        Some(split),
    ))
}

/// Metrics of forecasts `preds[origin][target]` (at least `horizon` steps each) and of the
/// baselines from the same origins; MASE scaled by the history before `mase_split` when given.
pub fn score(
    series: &Series,
    targets: &[usize],
    origins: &[usize],
    horizon: usize,
    preds: &[Vec<Vec<f32>>],
    seasonality: Option<usize>,
    mase_split: Option<usize>,
) -> ForecastReport {
    let m = seasonality;
    let lag = m.unwrap_or(1);
    let scales: Vec<f64> = targets
        .iter()
        .map(|&j| mase_split.map_or(f64::NAN, |s| naive_scale(&series.values[j], lag, s)))
        .collect();
    let (mut p, mut truth, mut nv, mut sn, mut sc) = (vec![], vec![], vec![], vec![], vec![]);
    let mut seasonal_ok = m.is_some();
    for (k, &t) in origins.iter().enumerate() {
        for (jj, &j) in targets.iter().enumerate() {
            let v = &series.values[j];
            p.extend_from_slice(&preds[k][jj][..horizon]);
            truth.extend_from_slice(&v[t..t + horizon]);
            nv.extend(naive(v, t, horizon));
            match m {
                Some(m) if t >= m => sn.extend(seasonal_naive(v, t, horizon, m)),
                _ => seasonal_ok = false,
            }
            sc.extend(std::iter::repeat_n(scales[jj], horizon));
        }
    }
    let scale = scales
        .iter()
        .all(|s| s.is_finite())
        .then_some(sc.as_slice());
    ForecastReport {
        part: String::new(),
        split: mase_split.unwrap_or(origins.first().copied().unwrap_or(0)),
        origins: origins.len(),
        horizon,
        targets: targets.iter().map(|&j| series.names[j].clone()).collect(),
        model: forecast_metrics(&p, &truth, scale),
        naive: forecast_metrics(&nv, &truth, scale),
        seasonal_naive: seasonal_ok.then(|| forecast_metrics(&sn, &truth, scale)),
        seasonality: m,
    }
}
