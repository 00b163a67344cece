//! `convnet forecast DIR SERIES.csv --horizon H [--start STEP] [--out PREFIX]`: multi-step
//! forecasts of a trained forecaster from the history before STEP (by default, beyond the
//! series' end), written as CSV and drawn as PNG; where the truth is known, the errors of the
//! model and of the naive and seasonal-naive forecasts from the same origin.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};
use convnet::data::read_series_csv;
use convnet::train::forecast::{Forecaster, score};
use convnet::train::{self, plot};
use plotters::style::RGBColor;

pub struct Args {
    pub dir: PathBuf,
    pub series: PathBuf,
    pub horizon: usize,
    pub start: Option<usize>,
    pub out: Option<PathBuf>,
    pub overwrite: bool,
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    if a.horizon == 0 {
        bail!("--horizon must be at least 1");
    }
    let (spec, model, info) = train::load_run(&a.dir)?;
    let mut f = Forecaster::new(&spec, &model, &info)?;
    let series = read_series_csv(&a.series, &f.source.read)?;
    f.attach(&series, &a.series.display().to_string())?;
    let n = series.len();
    let start = a.start.unwrap_or(n);
    if start > n {
        bail!("--start {start} is past the end of the series ({n} steps)");
    }
    if start < f.window {
        bail!(
            "--start {start}: the model needs {} steps of history before the first forecast",
            f.window
        );
    }
    let prefix = a.out.clone().unwrap_or_else(|| a.dir.join("forecast"));
    let (csv, png) = (prefix.with_extension("csv"), prefix.with_extension("png"));
    if a.out.is_some() && !a.overwrite {
        for p in [&csv, &png] {
            if p.exists() {
                bail!("{} exists: pass --overwrite to replace it", p.display());
            }
        }
    }
    let preds = f.forecast(&series.values, &[start], a.horizon)?;
    let preds = &preds[0];
    let known = n.saturating_sub(start).min(a.horizon);
    let names: Vec<&str> = f
        .targets
        .iter()
        .map(|&j| series.names[j].as_str())
        .collect();
    // CSV: step, time (when the series has one and the step is in it), forecast and truth
    let mut text = String::from("step");
    if series.times.is_some() {
        text.push_str(",time");
    }
    for name in &names {
        text.push_str(&format!(",{name}_forecast,{name}_truth"));
    }
    text.push('\n');
    for i in 0..a.horizon {
        let t = start + i;
        text.push_str(&t.to_string());
        if let Some(times) = &series.times {
            text.push(',');
            text.push_str(times.get(t).map_or("", |s| s.as_str()));
        }
        for (jj, &j) in f.targets.iter().enumerate() {
            let truth = series.values[j]
                .get(t)
                .map_or(String::new(), |v| v.to_string());
            text.push_str(&format!(",{},{truth}", preds[jj][i]));
        }
        text.push('\n');
    }
    convnet::io::write_atomic(&csv, text.as_bytes())?;
    // PNG: the first target's recent history, truth and forecast
    let j = f.targets[0];
    let v = &series.values[j];
    let from = start.saturating_sub((3 * f.window).max(4 * a.horizon));
    let blue = RGBColor(31, 119, 180);
    let mut lines = vec![plot::Line {
        label: "history",
        start: from,
        values: &v[from..start],
        color: blue,
    }];
    if known > 0 {
        lines.push(plot::Line {
            label: "truth",
            start,
            values: &v[start..start + known],
            color: RGBColor(90, 90, 90),
        });
    }
    lines.push(plot::Line {
        label: "forecast",
        start,
        values: &preds[0],
        color: RGBColor(214, 39, 40),
    });
    let title = format!("{}: {} steps from step {start}", names[0], a.horizon);
    plot::series_png(&png, &title, names[0], &lines)?;

    let mut out = std::io::stdout().lock();
    let mut metrics = serde_json::Map::new();
    if known > 0 {
        let r = score(
            &series,
            &f.targets,
            &[start],
            known,
            std::slice::from_ref(preds),
            f.source.seasonality,
            None,
        );
        let mut rows = vec![("model", r.model), ("naive", r.naive)];
        if let Some(s) = r.seasonal_naive {
            rows.push(("seasonal_naive", s));
        }
        if !a.json {
            writeln!(out, "{known} known step(s) from step {start}:")?;
            writeln!(
                out,
                "{:<16} {:>10} {:>10} {:>9}",
                "forecast", "MAE", "RMSE", "sMAPE %"
            )?;
        }
        for (name, r) in rows {
            if !a.json {
                writeln!(
                    out,
                    "{name:<16} {:>10.4} {:>10.4} {:>9.2}",
                    r.mae, r.rmse, r.smape
                )?;
            }
            metrics.insert(name.into(), serde_json::to_value(&r)?);
        }
    }
    if a.json {
        let v = serde_json::json!({
            "start": start,
            "horizon": a.horizon,
            "known_steps": known,
            "targets": names,
            "forecast": preds,
            "metrics": metrics,
            "csv": csv.display().to_string(),
            "png": png.display().to_string(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(out, "wrote {} and {}", csv.display(), png.display())?;
    }
    Ok(())
}
