//! CSV files (one row per image: pixel columns and a named label column) and folders of
//! images (one subfolder per class), converted to the model's channels and size.

use std::path::Path;

use super::Dataset;
use crate::error::{Error, Result};

fn fmt(path: &Path, msg: String) -> Error {
    Error::Format {
        path: path.display().to_string(),
        msg,
    }
}

/// Read a CSV of pixels (0..=`pixel_max`) and labels; every row must hold `c * h * w` pixels.
pub fn read_csv(
    path: &Path,
    label_column: &str,
    shape: &[usize],
    pixel_max: f32,
) -> Result<Dataset> {
    let (cols, lines) = super::csv_rows(path)?;
    let Some(li) = cols.iter().position(|c| *c == label_column) else {
        return Err(fmt(
            path,
            format!(
                "no column named `{label_column}` in the header (columns: {})",
                cols.iter().take(6).cloned().collect::<Vec<_>>().join(", ")
                    + if cols.len() > 6 { ", ..." } else { "" }
            ),
        ));
    };
    let need: usize = shape.iter().product();
    if cols.len() - 1 != need {
        return Err(fmt(
            path,
            format!(
                "{} pixel columns, but the model's input {shape:?} needs {need}",
                cols.len() - 1
            ),
        ));
    }
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (ln, cells) in lines {
        if cells.len() != cols.len() {
            return Err(fmt(
                path,
                format!(
                    "line {ln}: {} cells, the header has {}",
                    cells.len(),
                    cols.len()
                ),
            ));
        }
        for (ci, cell) in cells.iter().enumerate() {
            let v: f32 = cell.parse().map_err(|_| {
                fmt(
                    path,
                    format!(
                        "line {}, column `{}`: `{cell}` is not a number",
                        ln, cols[ci]
                    ),
                )
            })?;
            if !v.is_finite() {
                return Err(fmt(
                    path,
                    format!("line {}, column `{}`: `{cell}` is not finite", ln, cols[ci]),
                ));
            }
            if ci != li && !(0.0..=pixel_max).contains(&v) {
                return Err(fmt(
                    path,
                    format!(
                        "line {}, column `{}`: pixel {cell} is outside [0, {pixel_max}] (`pixel_max` in [data])",
                        ln, cols[ci]
                    ),
                ));
            }
            if ci == li {
                if v < 0.0 || v.fract() != 0.0 {
                    return Err(fmt(
                        path,
                        format!(
                            "line {}, column `{}`: label `{cell}` is not a class index",
                            ln, cols[ci]
                        ),
                    ));
                }
                labels.push(v as usize);
            } else {
                pixels.push(v / pixel_max);
            }
        }
    }
    if labels.is_empty() {
        return Err(fmt(path, "no data rows".into()));
    }
    Ok(Dataset {
        shape: shape.to_vec(),
        pixels,
        labels,
        ..Default::default()
    })
}

/// Decode an image file into a sample `(c, h, w)` in [0, 1]: grayscale for one channel, RGB
/// for three. A size other than `(h, w)` is an error unless `resize`.
pub fn image_to_sample(path: &Path, shape: &[usize], resize: bool) -> Result<Vec<f32>> {
    let (c, h, w) = (shape[0], shape[1], shape[2]);
    let (iw, ih) = dimensions(path, c)?;
    if (iw as usize != w || ih as usize != h) && !resize {
        return Err(fmt(
            path,
            format!(
                "the image is {iw}x{ih} (width x height) but the model takes {w}x{h}; set `resize = true` in [data] or pass --resize"
            ),
        ));
    }
    let img = decode(path, (iw, ih))?;
    let img = if iw as usize != w || ih as usize != h {
        img.resize_exact(w as u32, h as u32, image::imageops::FilterType::Triangle)
    } else {
        img
    };
    channels(path, &img, c)
}

/// The most pixels one image may declare: Pillow's decompression-bomb threshold (a 389 KB PNG
/// can declare 20000 x 20000 pixels).
pub const MAX_PIXELS: u64 = 89_478_485;

/// An image's `(width, height)` from its header alone, checked against [`MAX_PIXELS`] and
/// the memory budget (decoded as RGBA bytes, converted to `c` f32 planes) before any pixel
/// is decoded.
fn dimensions(path: &Path, c: usize) -> Result<(u32, u32)> {
    let cannot = |e: image::ImageError| fmt(path, format!("cannot decode the image: {e}"));
    let (w, h) = reader(path)?.into_dimensions().map_err(cannot)?;
    let pixels = u64::from(w) * u64::from(h);
    if pixels > MAX_PIXELS {
        return Err(fmt(
            path,
            format!(
                "the image declares {w}x{h} pixels ({:.0} megapixels), more than the {:.1} megapixels one image may have",
                pixels as f64 / 1e6,
                MAX_PIXELS as f64 / 1e6
            ),
        ));
    }
    crate::limits::check(
        &format!("{}: decoding a {w}x{h} image", path.display()),
        pixels.saturating_mul(4 + 4 * c as u64),
    )?;
    Ok((w, h))
}

/// A reader of the image at `path`, its format guessed from its first bytes.
fn reader(path: &Path) -> Result<image::ImageReader<std::io::BufReader<std::fs::File>>> {
    let io = |e| Error::Io {
        path: path.display().to_string(),
        source: e,
    };
    image::ImageReader::open(path)
        .map_err(io)?
        .with_guessed_format()
        .map_err(io)
}

/// Decode an image whose header said `(w, h)`, the decoder held to that size.
fn decode(path: &Path, (w, h): (u32, u32)) -> Result<image::DynamicImage> {
    let cannot = |e: image::ImageError| fmt(path, format!("cannot decode the image: {e}"));
    let mut reader = reader(path)?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    // the decoded image (up to 16 bytes a pixel) and the decoder's own buffers
    limits.max_alloc = Some(
        (u64::from(w) * u64::from(h))
            .saturating_mul(16)
            .max(1 << 20),
    );
    reader.limits(limits);
    reader.decode().map_err(cannot)
}

/// An image for a model taking `shape` `(c, h, w)`: at its own size when the model's size is
/// open (`any_size`) and `resize` is off, else at the model's size (resized when `resize`,
/// refused otherwise); values in [0, 1] with the `[height, width]` used.
pub fn load_image(
    path: &Path,
    shape: &[usize],
    resize: bool,
    any_size: bool,
) -> Result<(Vec<f32>, Vec<usize>)> {
    if any_size && !resize {
        read_image(path, shape[0])
    } else {
        Ok((image_to_sample(path, shape, resize)?, shape[1..].to_vec()))
    }
}

/// An image at its own size as `(c, height, width)` values in [0, 1], with `[height, width]`.
pub fn read_image(path: &Path, c: usize) -> Result<(Vec<f32>, Vec<usize>)> {
    let img = decode(path, dimensions(path, c)?)?;
    let size = vec![img.height() as usize, img.width() as usize];
    Ok((channels(path, &img, c)?, size))
}

fn channels(path: &Path, img: &image::DynamicImage, c: usize) -> Result<Vec<f32>> {
    let (h, w) = (img.height() as usize, img.width() as usize);
    match c {
        1 => Ok(img
            .to_luma8()
            .pixels()
            .map(|p| p.0[0] as f32 / 255.0)
            .collect()),
        3 => {
            let rgb = img.to_rgb8();
            let mut out = vec![0f32; 3 * h * w];
            for (i, p) in rgb.pixels().enumerate() {
                for ch in 0..3 {
                    out[ch * h * w + i] = p.0[ch] as f32 / 255.0;
                }
            }
            Ok(out)
        }
        other => Err(fmt(
            path,
            format!("images convert to 1 (grayscale) or 3 (RGB) channels; the model takes {other}"),
        )),
    }
}

/// The image files a class folder's images are read from (what the `image` crate decodes here).
pub const IMAGE_EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp"];

/// Read a folder with one subfolder per class (sorted by name); returns the data and the
/// class names. With `any_size`, images keep their own sizes (batched one size at a time).
pub fn read_folder(
    dir: &Path,
    shape: &[usize],
    resize: bool,
    any_size: bool,
) -> Result<(Dataset, Vec<String>)> {
    let io = |e| Error::Io {
        path: dir.display().to_string(),
        source: e,
    };
    let mut classes: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // hidden folders (.ipynb_checkpoints, .git) are not classes
        .filter(|name| !name.starts_with('.'))
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(fmt(
            dir,
            "no class subfolders: expected one folder of images per class".into(),
        ));
    }
    let mut samples = Vec::new();
    let mut labels = Vec::new();
    for (ci, class) in classes.iter().enumerate() {
        let sub = dir.join(class);
        let mut files: Vec<_> = std::fs::read_dir(&sub)
            .map_err(io)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect();
        files.retain(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        });
        files.sort();
        if files.is_empty() {
            return Err(fmt(
                &sub,
                "a class folder without images (PNG, JPEG, BMP, GIF, TIFF or WebP): remove it or add its images (each subfolder is a class)".into(),
            ));
        }
        for f in files {
            samples.push(load_image(&f, shape, resize, any_size)?);
            labels.push(ci);
        }
    }
    Ok((Dataset::padded(shape[0], samples, labels), classes))
}

/// Every image of `ds` resized to `h x w` (bilinear): to test a model at other input sizes.
pub fn resize_images(ds: &Dataset, h: usize, w: usize) -> Result<Dataset> {
    use image::{ImageBuffer, Luma, imageops};
    let c = ds.shape.first().copied().unwrap_or(1);
    let mut samples = Vec::with_capacity(ds.len());
    for i in 0..ds.len() {
        let x = ds.sample_trimmed(i);
        let size = ds.size(i);
        let [ih, iw] = size[..] else {
            return Err(fmt(
                Path::new("images"),
                format!(
                    "resizing needs images (c, h, w), got samples {:?}",
                    ds.shape
                ),
            ));
        };
        let mut out = Vec::with_capacity(c * h * w);
        for plane in x.chunks(ih * iw) {
            let img: ImageBuffer<Luma<f32>, Vec<f32>> =
                ImageBuffer::from_raw(iw as u32, ih as u32, plane.to_vec())
                    .ok_or_else(|| fmt(Path::new("images"), "bad image buffer".into()))?;
            let r = imageops::resize(&img, w as u32, h as u32, imageops::FilterType::Triangle);
            out.extend(r.into_raw());
        }
        samples.push((out, vec![h, w]));
    }
    let mut d = Dataset::padded(c, samples, ds.labels.clone());
    d.targets = ds.targets.clone();
    d.target_len = ds.target_len;
    Ok(d)
}
