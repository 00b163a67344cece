//! Time series: numeric columns of a CSV file (with an optional time column), missing values
//! found or interpolated, and the windows `(channels, window) -> (targets, horizon)` that a
//! forecaster trains on.

use std::ops::Range;
use std::path::Path;

use super::Dataset;
use crate::error::{Error, Result};

/// Columns of a series file, column-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Names of the value columns, in the order asked for.
    pub names: Vec<String>,
    /// `values[c][t]`.
    pub values: Vec<Vec<f32>>,
    /// The time column's cells, when there is one.
    pub times: Option<Vec<String>>,
}

impl Series {
    /// Number of time steps.
    pub fn len(&self) -> usize {
        self.values.first().map_or(0, |v| v.len())
    }
    /// Whether there are no time steps.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&[f32]> {
        let i = self.names.iter().position(|n| n == name)?;
        Some(&self.values[i])
    }
}

/// How a series file is read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeriesRead {
    /// Value columns to keep (all but the time column when `None`).
    pub columns: Option<Vec<String>>,
    /// A column of time stamps (kept as text; never a model input).
    pub time_column: Option<String>,
    /// Fill missing cells (empty, `NA`, `NaN`, `?`) by linear interpolation between the nearest
    /// known values (the nearest one at either end) instead of failing.
    pub interpolate: bool,
}

fn is_missing(cell: &str) -> bool {
    matches!(
        cell.to_ascii_lowercase().as_str(),
        "" | "na" | "nan" | "n/a" | "null" | "?"
    )
}

/// Read the value columns of a CSV file with a header row. Errors name the file, the line and
/// the column of a missing or non-numeric cell.
pub fn read_series_csv(path: &Path, how: &SeriesRead) -> Result<Series> {
    let p = path.display().to_string();
    let fmt = |msg: String| Error::Format {
        path: p.clone(),
        msg,
    };
    let (header, lines) = super::csv_rows(path)?;
    let find = |name: &str, key: &str| -> Result<usize> {
        header.iter().position(|h| h == name).ok_or_else(|| {
            fmt(format!(
                "no column `{name}` (the spec's `{key}`); the header has: {}",
                header.join(", ")
            ))
        })
    };
    let time_idx = match &how.time_column {
        Some(t) => Some(find(t, "time_column")?),
        None => None,
    };
    let cols: Vec<usize> = match &how.columns {
        Some(names) => names
            .iter()
            .map(|n| find(n, "columns"))
            .collect::<Result<_>>()?,
        None => (0..header.len()).filter(|&i| Some(i) != time_idx).collect(),
    };
    if cols.is_empty() {
        return Err(fmt("no value columns".into()));
    }
    let mut values = vec![Vec::new(); cols.len()];
    let mut missing: Vec<Vec<usize>> = vec![Vec::new(); cols.len()];
    let mut times = time_idx.map(|_| Vec::new());
    for (ln, cells) in lines {
        if cells.len() != header.len() {
            return Err(fmt(format!(
                "line {ln}: {} cells, the header has {} columns",
                cells.len(),
                header.len()
            )));
        }
        if let (Some(t), Some(ti)) = (times.as_mut(), time_idx) {
            t.push(cells[ti].to_string());
        }
        for (k, &c) in cols.iter().enumerate() {
            let cell = cells[c].as_str();
            let v = if is_missing(cell) {
                if !how.interpolate {
                    return Err(fmt(format!(
                        "line {ln}, column `{}`: missing value \"{cell}\" (set `missing = \"interpolate\"` in [data] to fill gaps linearly)",
                        header[c]
                    )));
                }
                missing[k].push(values[k].len());
                f32::NAN
            } else {
                match cell.parse::<f32>() {
                    Ok(v) if v.is_finite() => v,
                    _ => {
                        return Err(fmt(format!(
                            "line {ln}, column `{}`: \"{cell}\" is not a number",
                            header[c]
                        )));
                    }
                }
            };
            values[k].push(v);
        }
    }
    for (k, v) in values.iter_mut().enumerate() {
        if v.is_empty() {
            return Err(fmt("no rows after the header".into()));
        }
        if missing[k].len() == v.len() {
            return Err(fmt(format!(
                "column `{}` has no values to interpolate from",
                header[cols[k]]
            )));
        }
        interpolate(v);
    }
    Ok(Series {
        names: cols.iter().map(|&c| header[c].clone()).collect(),
        values,
        times,
    })
}

/// Replace NaNs by linear interpolation between the nearest known values; at the ends, by the
/// nearest known value.
pub fn interpolate(v: &mut [f32]) {
    let known: Vec<usize> = (0..v.len()).filter(|&i| !v[i].is_nan()).collect();
    let (Some(&first), Some(&last)) = (known.first(), known.last()) else {
        return;
    };
    for i in 0..first {
        v[i] = v[first];
    }
    for i in last + 1..v.len() {
        v[i] = v[last];
    }
    for pair in known.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        for i in a + 1..b {
            let f = (i - a) as f32 / (b - a) as f32;
            v[i] = v[a] + f * (v[b] - v[a]);
        }
    }
}

/// Windows of a series: each sample holds `inputs[c][t - window .. t]` for every input
/// column and has targets `targets[j][t .. t + horizon]`, for `t` in `origins` stepping by
/// `stride` (`t` is the first forecast step).
pub fn windows(
    inputs: &[&[f32]],
    targets: &[&[f32]],
    window: usize,
    horizon: usize,
    stride: usize,
    origins: Range<usize>,
) -> Dataset {
    let n = inputs.first().map_or(0, |v| v.len());
    let mut pixels = Vec::new();
    let mut tv = Vec::new();
    let mut t = origins.start.max(window);
    while t < origins.end && t + horizon <= n {
        for c in inputs {
            pixels.extend_from_slice(&c[t - window..t]);
        }
        for c in targets {
            tv.extend_from_slice(&c[t..t + horizon]);
        }
        t += stride.max(1);
    }
    Dataset {
        shape: vec![inputs.len(), window],
        pixels,
        labels: Vec::new(),
        targets: tv,
        target_len: targets.len() * horizon,
        sizes: Vec::new(),
    }
}

/// Make every window relative to its last value: each input channel minus its last value in
/// the window, each target minus the last input value of its column (`targets[j]` is that
/// column's index among the inputs). A model then learns changes, and a trend that leaves the
/// training range does not leave the model's input range.
pub fn make_relative(ds: &mut Dataset, targets: &[usize]) {
    let (c, w) = (ds.shape[0], ds.shape[1]);
    let h = ds.target_len / targets.len().max(1);
    for i in 0..ds.len() {
        let x = &mut ds.pixels[i * c * w..(i + 1) * c * w];
        let last: Vec<f32> = (0..c).map(|ch| x[ch * w + w - 1]).collect();
        for ch in 0..c {
            x[ch * w..(ch + 1) * w]
                .iter_mut()
                .for_each(|v| *v -= last[ch]);
        }
        let t = &mut ds.targets[i * ds.target_len..(i + 1) * ds.target_len];
        for (j, &col) in targets.iter().enumerate() {
            t[j * h..(j + 1) * h]
                .iter_mut()
                .for_each(|v| *v -= last[col]);
        }
    }
}

/// Per-column mean and standard deviation over `range`.
pub fn column_stats(cols: &[&[f32]], range: Range<usize>) -> (Vec<f32>, Vec<f32>) {
    let mut means = Vec::new();
    let mut stds = Vec::new();
    for c in cols {
        let v = &c[range.clone()];
        let n = v.len().max(1) as f64;
        let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n;
        means.push(m as f32);
        stds.push(var.sqrt().max(1e-6) as f32);
    }
    (means, stds)
}
