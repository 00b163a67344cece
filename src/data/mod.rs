//! Datasets for image classification: readers (IDX, CSV, image folders), the in-memory
//! [`Dataset`], normalisation fitted on the training split, seeded augmentation, and a
//! background batch loader.

mod augment;
mod idx;
mod images;
mod loader;
mod npy;
mod series;
mod ts;

pub use augment::Augment;
pub use idx::{read_idx_images, read_idx_labels};
pub use images::{image_to_sample, load_image, read_csv, read_folder, read_image, resize_images};
pub use loader::{Batch, Loader, part_of};
pub use npy::{Npy, npz_names, read_npy, read_npz};
pub use series::{
    Series, SeriesRead, column_stats, interpolate, make_relative, read_series_csv, windows,
};
pub use ts::{LabeledSeries, class_names, read_ts, read_ucr_tsv, resample};

use crate::error::{Error, Result};
use crate::rng::Rng;

/// The text of a data file; a failure names the file.
pub(crate) fn read_text(path: &std::path::Path) -> Result<String> {
    // parsed text takes a few times its size: one f32 per 2 or more characters
    let bytes = crate::limits::read_file(path, 3)?;
    let text = String::from_utf8(bytes).map_err(|e| Error::Io {
        path: path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    Ok(strip_bom(text))
}

/// The rows of a CSV file as spreadsheets write it (the `csv` crate: quoted fields holding
/// commas or quotes, CRLF line ends, a byte-order mark), cells trimmed, blank lines skipped:
/// the header, then each row with its line number (1-based) for messages.
pub(crate) fn csv_rows(path: &std::path::Path) -> Result<(Vec<String>, Vec<(usize, Vec<String>)>)> {
    // CRLF as LF: the csv crate counts the lines of CRLF files from the second row on short
    let text = read_text(path)?.replace("\r\n", "\n");
    let fail = |msg: String| Error::Format {
        path: path.display().to_string(),
        msg,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            fail(format!("line {line}: not a CSV row: {e}"))
        })?;
        if record.iter().all(str::is_empty) {
            continue;
        }
        let line = record.position().map_or(0, |p| p.line()) as usize;
        rows.push((line, record.iter().map(str::to_string).collect()));
    }
    if rows.is_empty() {
        return Err(fail(
            "empty file: expected a header row of column names".into(),
        ));
    }
    let (_, header) = rows.remove(0);
    Ok((header, rows))
}

/// `text` without the UTF-8 byte-order mark that some editors (and Excel) write first.
pub fn strip_bom(text: String) -> String {
    match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    }
}

/// Batches' worth of samples sorted by length together by [`Dataset::bucketed`]: enough for
/// batches of similar length, few enough that an epoch's batches still mix the whole set.
pub const BUCKET: usize = 8;

/// Samples in memory, laid out `(n, *shape)`: images with pixels scaled to [0, 1] and class
/// labels, series windows `(channels, length)` with class labels, or series windows with
/// regression targets (the values to forecast, `target_len` per sample).
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    /// Per-sample shape `(c, h, w)` or `(c, length)`.
    pub shape: Vec<usize>,
    pub pixels: Vec<f32>,
    /// Class labels (classification); empty for regression.
    pub labels: Vec<usize>,
    /// Regression targets, `target_len` per sample, laid out `(targets, horizon)`.
    pub targets: Vec<f32>,
    pub target_len: usize,
    /// Samples of unequal size (series of several lengths, images of several sizes): each
    /// sample's spatial size, its values stored padded to `shape` at the end of each axis
    /// (empty when every sample fills `shape`).
    pub sizes: Vec<Vec<usize>>,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        if self.target_len > 0 {
            self.targets.len() / self.target_len
        } else {
            self.labels.len()
        }
    }
    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Samples of possibly unequal spatial size, `(values laid out (c, *size), size)`, stored
    /// padded with zeros to the largest size along each axis.
    pub fn padded(
        channels: usize,
        samples: Vec<(Vec<f32>, Vec<usize>)>,
        labels: Vec<usize>,
    ) -> Dataset {
        let dims = samples.first().map_or(0, |s| s.1.len());
        let full: Vec<usize> = (0..dims)
            .map(|a| samples.iter().map(|s| s.1[a]).max().unwrap_or(0))
            .collect();
        let equal = samples.iter().all(|s| s.1 == full);
        let per: usize = channels * full.iter().product::<usize>();
        let mut pixels = Vec::with_capacity(samples.len() * per);
        for (x, size) in &samples {
            if equal {
                pixels.extend_from_slice(x);
                continue;
            }
            let start = pixels.len();
            pixels.resize(start + per, 0.0);
            let out = &mut pixels[start..];
            match (&size[..], &full[..]) {
                ([l], [fl]) => {
                    for c in 0..channels {
                        out[c * fl..c * fl + l].copy_from_slice(&x[c * l..(c + 1) * l]);
                    }
                }
                ([h, w], [fh, fw]) => {
                    for c in 0..channels {
                        for r in 0..*h {
                            let (o, i) = (c * fh * fw + r * fw, (c * h + r) * w);
                            out[o..o + w].copy_from_slice(&x[i..i + w]);
                        }
                    }
                }
                _ => {}
            }
        }
        let mut shape = vec![channels];
        shape.extend(&full);
        Dataset {
            shape,
            pixels,
            labels,
            sizes: if equal {
                Vec::new()
            } else {
                samples.into_iter().map(|s| s.1).collect()
            },
            ..Default::default()
        }
    }

    /// Sample `i`'s spatial size.
    pub fn size(&self, i: usize) -> &[usize] {
        match self.sizes.get(i) {
            Some(s) => s,
            None => self.shape.get(1..).unwrap_or(&[]),
        }
    }

    /// Sample `i`'s values without padding, laid out `(c, *size(i))`: borrowed when the
    /// sample fills `shape`.
    pub fn sample_trimmed(&self, i: usize) -> std::borrow::Cow<'_, [f32]> {
        let x = self.sample(i);
        let full = self.shape.get(1..).unwrap_or(&[]);
        let size = self.size(i);
        if size == full {
            return x.into();
        }
        let v: Vec<f32> = match (full, size) {
            ([fl], [l]) => x
                .chunks(*fl)
                .flat_map(|row| row[..*l].iter().copied())
                .collect(),
            ([fh, fw], [h, w]) => x
                .chunks(fh * fw)
                .flat_map(|plane| {
                    plane
                        .chunks(*fw)
                        .take(*h)
                        .flat_map(move |row| row[..*w].iter().copied())
                })
                .collect(),
            _ => x.to_vec(),
        };
        v.into()
    }

    /// The batches of an epoch that visits samples in `order`: runs of `batch_size`, and for
    /// samples of unequal size, each batch of one size (grouped in order of first
    /// appearance, so a shuffled order gives shuffled batches).
    pub fn batches(&self, order: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
        let bs = batch_size.max(1);
        if self.sizes.is_empty() {
            return order.chunks(bs).map(|c| c.to_vec()).collect();
        }
        let mut groups: Vec<(&[usize], Vec<usize>)> = Vec::new();
        for &i in order {
            let s = &self.sizes[i][..];
            match groups.iter_mut().find(|(g, _)| *g == s) {
                Some((_, v)) => v.push(i),
                None => groups.push((s, vec![i])),
            }
        }
        groups
            .iter()
            .flat_map(|(_, v)| v.chunks(bs).map(|c| c.to_vec()))
            .collect()
    }

    /// Whether the samples are series of several lengths, which a batch can mix (padded to
    /// its longest, with [`Dataset::batch_lengths`] for the mask).
    pub fn mixes_lengths(&self) -> bool {
        self.shape.len() == 2 && !self.sizes.is_empty()
    }

    /// The batches of an epoch of series of several lengths that visits samples in `order`,
    /// bucketed so that padding stays small: each run of [`BUCKET`] batches' worth of samples
    /// is sorted by length and cut into batches of `batch_size` (a shuffled order gives
    /// batches of similar lengths drawn from all over the set; shuffle the batches too).
    pub fn bucketed(&self, order: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
        let bs = batch_size.max(1);
        let mut batches = Vec::new();
        for pool in order.chunks(bs.saturating_mul(BUCKET)) {
            let mut pool = pool.to_vec();
            pool.sort_by_key(|&i| self.size(i).first().copied().unwrap_or(0));
            batches.extend(pool.chunks(bs).map(|c| c.to_vec()));
        }
        batches
    }

    /// An epoch's batches in `order`: [`Dataset::bucketed`] when `mixed` (the model takes
    /// padded batches of series, see [`crate::nn::mask`]), else [`Dataset::batches`].
    pub fn epoch_batches(
        &self,
        order: &[usize],
        batch_size: usize,
        mixed: bool,
    ) -> Vec<Vec<usize>> {
        if mixed && self.mixes_lengths() {
            self.bucketed(order, batch_size)
        } else {
            self.batches(order, batch_size)
        }
    }

    /// Each sample's length when the series `idx` differ in length (the batch is padded to
    /// the longest), `None` when they are all of one size.
    pub fn batch_lengths(&self, idx: &[usize]) -> Option<Vec<usize>> {
        if !self.mixes_lengths() {
            return None;
        }
        let lengths: Vec<usize> = idx.iter().map(|&i| self.size(i)[0]).collect();
        lengths.iter().any(|&l| l != lengths[0]).then_some(lengths)
    }

    /// The inputs of the samples `idx` as a batch `(n, c, *size)`: all of one size, or series
    /// of several lengths each padded with zeros at its end to the longest; `prepare(k, x)`
    /// may change the k-th sample's own values (augmentation, normalisation) first.
    pub fn batch_input(
        &self,
        idx: &[usize],
        mut prepare: impl FnMut(usize, &mut [f32]),
    ) -> Result<crate::tensor::Tensor> {
        let lengths = self.batch_lengths(idx);
        let size: Vec<usize> = match &lengths {
            Some(l) => vec![l.iter().copied().max().unwrap_or(0)],
            None => idx.first().map_or(vec![], |&i| self.size(i).to_vec()),
        };
        let c = self.shape.first().copied().unwrap_or(1);
        let mut shape = vec![idx.len(), c];
        shape.extend(&size);
        let per: usize = shape[1..].iter().product();
        let mut pixels = Vec::with_capacity(idx.len() * per);
        for (k, &i) in idx.iter().enumerate() {
            let start = pixels.len();
            match &lengths {
                Some(_) => {
                    let mut x = self.sample_trimmed(i).into_owned();
                    prepare(k, &mut x);
                    let l = self.size(i)[0];
                    for row in x.chunks(l.max(1)).take(c) {
                        pixels.extend_from_slice(row);
                        pixels.resize(pixels.len() + size[0] - l, 0.0);
                    }
                }
                None => {
                    pixels.extend_from_slice(&self.sample_trimmed(i));
                    prepare(k, &mut pixels[start..]);
                }
            }
            if pixels.len() - start != per {
                return Err(Error::Format {
                    path: "batch".into(),
                    msg: format!("sample {i} has size {:?}, the batch {size:?}", self.size(i)),
                });
            }
        }
        crate::tensor::Tensor::from_vec(pixels, &shape)
    }

    /// The regression targets of the samples `idx` as `(n, target_len)`, each normalised by
    /// `norm`; `None` for a classification set.
    pub fn batch_targets(
        &self,
        idx: &[usize],
        norm: Option<&Normalize>,
    ) -> Result<Option<crate::tensor::Tensor>> {
        if self.target_len == 0 {
            return Ok(None);
        }
        let mut t = Vec::with_capacity(idx.len() * self.target_len);
        for &i in idx {
            let start = t.len();
            t.extend_from_slice(self.target(i));
            if let Some(n) = norm {
                n.apply(&mut t[start..]);
            }
        }
        crate::tensor::Tensor::from_vec(t, &[idx.len(), self.target_len]).map(Some)
    }

    /// The regression targets of sample `i`.
    pub fn target(&self, i: usize) -> &[f32] {
        &self.targets[i * self.target_len..(i + 1) * self.target_len]
    }
    /// Values per sample.
    pub fn sample_len(&self) -> usize {
        self.shape.iter().product()
    }
    /// The pixels of sample `i`.
    pub fn sample(&self, i: usize) -> &[f32] {
        let s = self.sample_len();
        &self.pixels[i * s..(i + 1) * s]
    }
    /// The samples at `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        let mut pixels = Vec::with_capacity(idx.len() * self.sample_len());
        let mut targets = Vec::with_capacity(idx.len() * self.target_len);
        for &i in idx {
            pixels.extend_from_slice(self.sample(i));
            if self.target_len > 0 {
                targets.extend_from_slice(self.target(i));
            }
        }
        Dataset {
            shape: self.shape.clone(),
            pixels,
            sizes: if self.sizes.is_empty() {
                Vec::new()
            } else {
                idx.iter().map(|&i| self.sizes[i].clone()).collect()
            },
            labels: if self.labels.is_empty() {
                Vec::new()
            } else {
                idx.iter().map(|&i| self.labels[i]).collect()
            },
            targets,
            target_len: self.target_len,
        }
    }
    /// A seeded split into (train, validation): `fraction` of the samples, drawn after a
    /// shuffle, go to validation.
    pub fn split(&self, fraction: f32, seed: u64) -> (Dataset, Dataset) {
        let mut idx: Vec<usize> = (0..self.len()).collect();
        Rng::new(seed).shuffle(&mut idx);
        let n_val = ((self.len() as f64) * fraction as f64).round() as usize;
        let (val, train) = idx.split_at(n_val.min(self.len()));
        (self.subset(train), self.subset(val))
    }
    /// Check every label against the number of classes; the error names the source.
    pub fn check_labels(&self, classes: usize, source: &str) -> Result<()> {
        if let Some((i, &l)) = self.labels.iter().enumerate().find(|&(_, &l)| l >= classes) {
            return Err(Error::Format {
                path: source.to_string(),
                msg: format!(
                    "label {l} of sample {i} is out of range: the model has {classes} classes (0..{})",
                    classes - 1
                ),
            });
        }
        Ok(())
    }
    /// Per-channel mean and standard deviation.
    pub fn channel_stats(&self) -> (Vec<f32>, Vec<f32>) {
        let c = self.shape[0];
        let mut mean = vec![0f64; c];
        let mut sq = vec![0f64; c];
        let mut count = 0usize;
        for s in 0..self.len() {
            let x = self.sample_trimmed(s);
            let plane = x.len() / c.max(1);
            count += plane;
            for ch in 0..c {
                for &v in &x[ch * plane..(ch + 1) * plane] {
                    mean[ch] += v as f64;
                    sq[ch] += (v as f64) * (v as f64);
                }
            }
        }
        let n = count.max(1) as f64;
        let m: Vec<f32> = mean.iter().map(|v| (v / n) as f32).collect();
        let sd: Vec<f32> = (0..c)
            .map(|ch| ((sq[ch] / n - (mean[ch] / n).powi(2)).max(1e-12)).sqrt() as f32)
            .collect();
        (m, sd)
    }
}

/// Per-channel normalisation `(x - mean) / std`, applied after augmentation; with
/// `per_sample`, each sample's channels are first z-normalised by their own mean and standard
/// deviation (as the UCR/UEA papers normalise each series).
#[derive(Clone, Debug, PartialEq)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub per_sample: bool,
}

impl Normalize {
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Self {
        Normalize {
            mean,
            std,
            per_sample: false,
        }
    }
    /// The identity.
    pub fn identity(channels: usize) -> Self {
        Normalize::new(vec![0.0; channels], vec![1.0; channels])
    }
    /// Each sample's channels z-normalised by their own statistics.
    pub fn per_sample(channels: usize) -> Self {
        Normalize {
            per_sample: true,
            ..Normalize::identity(channels)
        }
    }
    /// Normalise one sample `(c, *spatial)` in place (a sample of unequal size trimmed to its
    /// own size, so that its statistics are its values').
    pub fn apply(&self, x: &mut [f32]) {
        let c = self.mean.len();
        let plane = x.len() / c.max(1);
        for ch in 0..c {
            let v = &mut x[ch * plane..(ch + 1) * plane];
            if self.per_sample && !v.is_empty() {
                let n = v.len() as f64;
                let mean = v.iter().map(|&a| a as f64).sum::<f64>() / n;
                let var = v.iter().map(|&a| (a as f64 - mean).powi(2)).sum::<f64>() / n;
                // a constant channel becomes zeros
                let sd = if var > 1e-16 { var.sqrt() } else { 1.0 };
                for a in v.iter_mut() {
                    *a = ((*a as f64 - mean) / sd) as f32;
                }
            }
            let (m, s) = (self.mean[ch], self.std[ch]);
            for a in v.iter_mut() {
                *a = (*a - m) / s;
            }
        }
    }
}

#[cfg(test)]
mod normalize_tests {
    use super::Normalize;

    #[test]
    fn per_sample_normalisation_gives_each_channel_mean_0_and_std_1() {
        // two channels of 4 steps: a ramp, and a constant channel (which becomes zeros)
        let mut x = vec![1.0, 2.0, 3.0, 4.0, 7.0, 7.0, 7.0, 7.0];
        Normalize::per_sample(2).apply(&mut x);
        let m: f32 = x[..4].iter().sum::<f32>() / 4.0;
        let v: f32 = x[..4].iter().map(|a| (a - m) * (a - m)).sum::<f32>() / 4.0;
        assert!(m.abs() < 1e-6 && (v - 1.0).abs() < 1e-5, "{x:?}");
        assert_eq!(&x[4..], &[0.0; 4]);
        // dataset statistics alone leave the sample's own offset
        let mut y = vec![1.0, 2.0, 3.0, 4.0];
        Normalize::new(vec![1.0], vec![2.0]).apply(&mut y);
        assert_eq!(y, [0.0, 0.5, 1.0, 1.5]);
    }
}
