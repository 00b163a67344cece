//! Labelled series for classification: the UCR/UEA `.ts` format (univariate or multichannel,
//! `@classLabel`, equal or unequal lengths) and the UCR archive's tab-separated format (the
//! label first, then the values; shorter series padded with NaN at the end).

use std::path::Path;

use super::{Dataset, read_text};
use crate::error::{Error, Result};

/// Series with class labels: `series[i][channel][t]`.
#[derive(Clone, Debug, PartialEq)]
pub struct LabeledSeries {
    pub series: Vec<Vec<Vec<f32>>>,
    pub labels: Vec<usize>,
    pub class_names: Vec<String>,
}

impl LabeledSeries {
    /// Channels per series.
    pub fn channels(&self) -> usize {
        self.series.first().map_or(0, |s| s.len())
    }
    /// The distinct lengths, ascending.
    pub fn lengths(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.series.iter().map(|s| s[0].len()).collect();
        v.sort();
        v.dedup();
        v
    }
    /// Every series as a dataset `(n, channels, longest)`: shorter series padded with zeros at
    /// the end, their lengths kept (so batches hold one length each and never see padding).
    /// Every series resampled to `len` steps (`len` >= 2), each channel linearly interpolated
    /// between its first and last values (step `i` at position `i (n - 1) / (len - 1)`).
    pub fn resample(&mut self, len: usize) {
        for s in &mut self.series {
            for ch in s.iter_mut() {
                if ch.len() != len && !ch.is_empty() {
                    *ch = resample(ch, len);
                }
            }
        }
    }

    pub fn to_dataset(&self) -> Dataset {
        let samples = self
            .series
            .iter()
            .map(|s| (s.concat(), vec![s[0].len()]))
            .collect();
        Dataset::padded(self.channels(), samples, self.labels.clone())
    }
}

/// `values` resampled to `len` steps (`len` >= 2): linearly interpolated between the first
/// and last values, step `i` at position `i (n - 1) / (len - 1)`.
pub fn resample(values: &[f32], len: usize) -> Vec<f32> {
    let n = values.len();
    if n == 0 {
        return vec![0.0; len];
    }
    (0..len)
        .map(|i| {
            let x = i as f64 * (n - 1) as f64 / (len - 1).max(1) as f64;
            let lo = (x.floor() as usize).min(n - 1);
            let hi = (lo + 1).min(n - 1);
            let f = x - lo as f64;
            (values[lo] as f64 * (1.0 - f) + values[hi] as f64 * f) as f32
        })
        .collect()
}

fn fmt_err(path: &Path, msg: String) -> Error {
    Error::Format {
        path: path.display().to_string(),
        msg,
    }
}

/// The index of `label` among `names`, or an error naming the line.
fn class_index(path: &Path, names: &[String], label: &str, line: usize) -> Result<usize> {
    names.iter().position(|n| n == label).ok_or_else(|| {
        fmt_err(
            path,
            format!(
                "line {line}: class label \"{label}\" is not one of the classes {}",
                names.join(", ")
            ),
        )
    })
}

fn parse_values(path: &Path, text: &str, line: usize, what: &str) -> Result<Vec<f32>> {
    text.split(',')
        .map(|c| {
            let c = c.trim();
            match c.parse::<f32>() {
                Ok(v) if v.is_finite() => Ok(v),
                _ if c == "?" || c.eq_ignore_ascii_case("nan") || c.is_empty() => Err(fmt_err(
                    path,
                    format!(
                        "line {line}, {what}: missing value \"{c}\" (convnet reads complete series; shorter series are fine)"
                    ),
                )),
                _ => Err(fmt_err(
                    path,
                    format!("line {line}, {what}: \"{c}\" is not a number"),
                )),
            }
        })
        .collect()
}

/// Read a `.ts` file. `classes` (from the training file) fixes the class order of a test file;
/// otherwise the order is the header's `@classLabel` list.
pub fn read_ts(path: &Path, classes: Option<&[String]>) -> Result<LabeledSeries> {
    let text = read_text(path)?;
    let mut class_names: Option<Vec<String>> = None;
    let mut has_labels = false;
    let mut in_data = false;
    let mut declared = Declared::default();
    let mut out = LabeledSeries {
        series: Vec::new(),
        labels: Vec::new(),
        class_names: Vec::new(),
    };
    for (ln, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let n = ln + 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !in_data {
            if !line.starts_with('@') {
                return Err(fmt_err(
                    path,
                    format!("line {n}: expected a header line (@...) or @data before the data"),
                ));
            }
            let mut parts = line.split_whitespace();
            let key = parts.next().unwrap_or("").to_ascii_lowercase();
            let rest: Vec<&str> = parts.collect();
            match key.as_str() {
                "@data" => in_data = true,
                "@timestamps" if rest.first() == Some(&"true") => {
                    return Err(fmt_err(
                        path,
                        format!("line {n}: series with time stamps are not supported"),
                    ));
                }
                "@classlabel" => {
                    has_labels = rest.first() == Some(&"true");
                    if has_labels {
                        if rest.len() < 3 {
                            return Err(fmt_err(
                                path,
                                format!(
                                    "line {n}: @classLabel true needs at least two class names"
                                ),
                            ));
                        }
                        class_names = Some(rest[1..].iter().map(|s| s.to_string()).collect());
                    }
                }
                "@targetlabel" if rest.first() == Some(&"true") => {
                    return Err(fmt_err(
                        path,
                        format!(
                            "line {n}: regression targets (@targetLabel) are not supported; convnet classifies .ts series"
                        ),
                    ));
                }
                "@univariate" | "@dimensions" | "@equallength" | "@serieslength" => {
                    declared.read(path, &key, &rest, n)?
                }
                _ => {} // @problemName, @missing
            }
            continue;
        }
        if !has_labels {
            return Err(fmt_err(
                path,
                "no `@classLabel true ...` line before @data: convnet needs labelled series".into(),
            ));
        }
        let header_names = class_names.clone().unwrap_or_default();
        let names = classes.map(|c| c.to_vec()).unwrap_or(header_names);
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 2 {
            return Err(fmt_err(
                path,
                format!("line {n}: expected values, ':' and a class label"),
            ));
        }
        let (label, dims) = fields.split_last().unwrap_or((&"", &[]));
        let mut channels = Vec::new();
        for (d, f) in dims.iter().enumerate() {
            channels.push(parse_values(path, f, n, &format!("dimension {}", d + 1))?);
        }
        let len = channels[0].len();
        if let Some(d) = channels.iter().position(|c| c.len() != len) {
            return Err(fmt_err(
                path,
                format!(
                    "line {n}: dimension {} has {} values, dimension 1 has {len}",
                    d + 1,
                    channels[d].len()
                ),
            ));
        }
        if let Some(first) = out.series.first() {
            if first.len() != channels.len() {
                return Err(fmt_err(
                    path,
                    format!(
                        "line {n}: {} dimensions, earlier series have {}",
                        channels.len(),
                        first.len()
                    ),
                ));
            }
        }
        out.labels.push(class_index(path, &names, label.trim(), n)?);
        out.series.push(channels);
        out.class_names = names;
    }
    if out.series.is_empty() {
        return Err(fmt_err(path, "no series after @data".into()));
    }
    declared.check(path, &out)?;
    Ok(out)
}

/// What a `.ts` header declares about its series, with the line that declared it.
#[derive(Default)]
struct Declared {
    univariate: Option<(bool, usize)>,
    dimensions: Option<(usize, usize)>,
    equal_length: Option<(bool, usize)>,
    series_length: Option<(usize, usize)>,
}

impl Declared {
    fn read(&mut self, path: &Path, key: &str, rest: &[&str], n: usize) -> Result<()> {
        let value = rest.first().copied().unwrap_or("");
        let bad = |what: &str| {
            fmt_err(
                path,
                format!("line {n}: {key} expects {what}, got \"{value}\""),
            )
        };
        let flag = || match value.to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(bad("true or false")),
        };
        let count = || value.parse::<usize>().map_err(|_| bad("a whole number"));
        match key {
            "@univariate" => self.univariate = Some((flag()?, n)),
            "@dimensions" => self.dimensions = Some((count()?, n)),
            "@equallength" => self.equal_length = Some((flag()?, n)),
            _ => self.series_length = Some((count()?, n)),
        }
        Ok(())
    }

    /// The data agrees with the header: its dimension count, and equal lengths of the
    /// declared length where the header says so.
    fn check(&self, path: &Path, data: &LabeledSeries) -> Result<()> {
        let disagree =
            |line: usize, msg: String| fmt_err(path, format!("line {line}: the header says {msg}"));
        let dims = data.series[0].len();
        if let Some((d, line)) = self.dimensions.filter(|(d, _)| *d != dims) {
            return Err(disagree(
                line,
                format!("{d} dimension(s) but the series have {dims}"),
            ));
        }
        if let Some((true, line)) = self.univariate.filter(|_| dims != 1) {
            return Err(disagree(
                line,
                format!("univariate but the series have {dims} dimensions"),
            ));
        }
        let lens = || data.series.iter().map(|s| s[0].len());
        if let Some((true, line)) = self.equal_length {
            let first = data.series[0][0].len();
            if let Some((i, l)) = lens().enumerate().find(|(_, l)| *l != first) {
                return Err(disagree(
                    line,
                    format!(
                        "equal lengths but series {} has {l} values, series 1 has {first}",
                        i + 1
                    ),
                ));
            }
        }
        // a length is declared for series of equal length only
        let equal = self.equal_length.is_none_or(|(e, _)| e);
        if let Some((want, line)) = self.series_length.filter(|_| equal)
            && let Some((i, l)) = lens().enumerate().find(|(_, l)| *l != want)
        {
            return Err(disagree(
                line,
                format!("series of length {want} but series {} has {l}", i + 1),
            ));
        }
        Ok(())
    }
}

/// Distinct labels, in numeric order when every one is a number, else alphabetical.
fn tsv_order(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    if v.iter().all(|s| s.parse::<f64>().is_ok()) {
        v.sort_by(|a, b| {
            let (x, y) = (
                a.parse::<f64>().unwrap_or(0.0),
                b.parse::<f64>().unwrap_or(0.0),
            );
            x.total_cmp(&y)
        });
    }
    v
}

/// The class names a file's series are labelled with, in the order its reader gives them,
/// without reading the values: a `.ts` file's `@classLabel` list, or a `.tsv` file's labels.
pub fn class_names(path: &Path, tsv: bool) -> Result<Vec<String>> {
    let text = read_text(path)?;
    if tsv {
        let labels = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| {
                l.trim()
                    .split(['\t', ','])
                    .next()
                    .map(|s| s.trim().to_string())
            })
            .collect();
        return Ok(tsv_order(labels));
    }
    for line in text.lines().map(str::trim) {
        let mut parts = line.split_whitespace();
        match parts.next().map(str::to_ascii_lowercase).as_deref() {
            Some("@classlabel") if parts.next() == Some("true") => {
                return Ok(parts.map(str::to_string).collect());
            }
            Some("@data") => break,
            _ => {}
        }
    }
    Err(fmt_err(
        path,
        "no `@classLabel true ...` line before @data: convnet needs labelled series".into(),
    ))
}

/// Read a UCR archive `.tsv` file: one series per line, the label first, values separated by
/// tabs (or commas); trailing NaNs mark a shorter series. Classes are ordered numerically when
/// every label is a number, else alphabetically, unless `classes` (from the training file)
/// fixes them.
pub fn read_ucr_tsv(path: &Path, classes: Option<&[String]>) -> Result<LabeledSeries> {
    let text = read_text(path)?;
    let mut rows: Vec<(usize, String, Vec<f32>)> = Vec::new();
    for (ln, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let sep = if line.contains('\t') { '\t' } else { ',' };
        let mut cells: Vec<&str> = line.split(sep).map(|c| c.trim()).collect();
        let label = cells.remove(0).to_string();
        while cells
            .last()
            .is_some_and(|c| c.eq_ignore_ascii_case("nan") || c.is_empty())
        {
            cells.pop();
        }
        if cells.is_empty() {
            return Err(fmt_err(
                path,
                format!("line {}: no values after the label", ln + 1),
            ));
        }
        let values = parse_values(path, &cells.join(","), ln + 1, "values")?;
        rows.push((ln + 1, label, values));
    }
    if rows.is_empty() {
        return Err(fmt_err(path, "no series".into()));
    }
    let names = match classes {
        Some(c) => c.to_vec(),
        None => tsv_order(rows.iter().map(|r| r.1.clone()).collect()),
    };
    let mut out = LabeledSeries {
        series: Vec::new(),
        labels: Vec::new(),
        class_names: names.clone(),
    };
    for (ln, label, values) in rows {
        out.labels.push(class_index(path, &names, &label, ln)?);
        out.series.push(vec![values]);
    }
    Ok(out)
}

#[cfg(test)]
mod resample_tests {
    use super::LabeledSeries;

    #[test]
    fn resampling_interpolates_between_the_ends() {
        let mut ls = LabeledSeries {
            series: vec![
                vec![vec![0.0, 2.0, 4.0]],
                vec![vec![1.0, 1.0, 3.0, 3.0, 5.0]],
            ],
            labels: vec![0, 1],
            class_names: vec!["a".into(), "b".into()],
        };
        ls.resample(5);
        assert_eq!(ls.series[0][0], [0.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(ls.series[1][0], [1.0, 1.0, 3.0, 3.0, 5.0]);
        ls.resample(3);
        assert_eq!(ls.series[1][0], [1.0, 3.0, 5.0]);
        assert_eq!(ls.lengths(), [3]);
    }
}
