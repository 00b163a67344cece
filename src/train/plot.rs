//! Charts as PNG and SVG: learning curves (loss and accuracy per epoch) and the confusion
//! matrix. Text is drawn with the DejaVu Sans font that ships in assets/, so a machine needs
//! no system fonts.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use crate::error::{Error, Result};

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/DejaVuSans.ttf");
        // A registration failure leaves text undrawn; the chart itself still renders.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
    });
}

fn perr<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Format {
        path: path.display().to_string(),
        msg: format!("cannot draw the chart: {e}"),
    }
}

/// One line of a chart.
pub struct Series<'a> {
    pub label: &'a str,
    pub values: &'a [f64],
    pub color: RGBColor,
}

fn draw_curves<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    panels: &[(&str, Vec<Series>)],
) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| e.to_string())?;
    let areas = root.split_evenly((1, panels.len()));
    for (area, (ylabel, series)) in areas.iter().zip(panels) {
        let n = series
            .iter()
            .map(|s| s.values.len())
            .max()
            .unwrap_or(0)
            .max(2);
        let vals = series
            .iter()
            .flat_map(|s| s.values.iter().copied())
            .filter(|v| v.is_finite());
        let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        let pad = ((hi - lo) * 0.08).max(1e-3);
        let mut chart = ChartBuilder::on(area)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(1i32..n as i32, (lo - pad)..(hi + pad))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(*ylabel)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())?;
        for s in series {
            let pts: Vec<(i32, f64)> = s
                .values
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(i, &v)| ((i + 1) as i32, v))
                .collect();
            let color = s.color;
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(s.label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

/// Learning curves: one panel per (y label, series), written to `stem.png` and `stem.svg`.
pub fn learning_curves(stem: &Path, title: &str, panels: &[(&str, Vec<Series>)]) -> Result<()> {
    register_font();
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    let (w, h) = (480 * panels.len() as u32, 380);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        draw_curves(root, title, panels).map_err(perr(&png))?;
    }
    save_rgb_png(&png, &buf, w, h)?;
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (w, h)).into_drawing_area();
        draw_curves(root, title, panels).map_err(perr(&svg))?;
    }
    crate::io::write_atomic(&svg, text.as_bytes())
}

/// Encode an RGB buffer as PNG and write it atomically.
fn save_rgb_png(path: &Path, buf: &[u8], w: u32, h: u32) -> Result<()> {
    let mut bytes = Vec::new();
    image::write_buffer_with_format(
        &mut std::io::Cursor::new(&mut bytes),
        buf,
        w,
        h,
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .map_err(perr(path))?;
    crate::io::write_atomic(path, &bytes)
}

/// A confusion matrix as a PNG heat map with counts (rows: true class, columns: predicted).
pub fn confusion_png(path: &Path, matrix: &[Vec<usize>], names: &[String]) -> Result<()> {
    register_font();
    let k = matrix.len();
    let cell = 44u32;
    // rows are labelled `i name` in full, columns by the class number
    let longest = (0..k)
        .map(|i| names.get(i).map_or(0, |n| n.chars().count()) + 4)
        .max()
        .unwrap_or(4) as u32;
    let (left, top) = ((16 + 8 * longest).clamp(130, 480), 60u32);
    let (w, h) = (left + cell * k as u32 + 20, top + cell * k as u32 + 110);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    let draw = |buf: &mut Vec<u8>| -> std::result::Result<(), String> {
        let root = BitMapBackend::with_buffer(buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        root.draw_text(
            "confusion matrix (rows: true, columns: predicted)",
            &("sans-serif", 16).into_text_style(&root),
            (10, 10),
        )
        .map_err(|e| e.to_string())?;
        for (i, row) in matrix.iter().enumerate() {
            let total = row.iter().sum::<usize>().max(1) as f64;
            for (j, &c) in row.iter().enumerate() {
                let frac = c as f64 / total;
                // colour-blind safe (Okabe-Ito): blue for correct, orange for errors, from white
                let base = if i == j { (0, 114, 178) } else { (230, 159, 0) };
                let mix = |b: u8| (255.0 + (b as f64 - 255.0) * frac).round() as u8;
                let color = RGBColor(mix(base.0), mix(base.1), mix(base.2));
                let ink = if frac > 0.6 && i == j { WHITE } else { BLACK };
                let (x0, y0) = (
                    (left + cell * j as u32) as i32,
                    (top + cell * i as u32) as i32,
                );
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cell as i32, y0 + cell as i32)],
                    color.filled(),
                ))
                .map_err(|e| e.to_string())?;
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cell as i32, y0 + cell as i32)],
                    BLACK.mix(0.2),
                ))
                .map_err(|e| e.to_string())?;
                root.draw_text(
                    &c.to_string(),
                    &("sans-serif", 12).into_text_style(&root).color(&ink),
                    (x0 + 6, y0 + 16),
                )
                .map_err(|e| e.to_string())?;
            }
            let name = match names.get(i) {
                Some(n) => format!("{i} {n}"),
                None => i.to_string(),
            };
            root.draw_text(
                &name,
                &("sans-serif", 13).into_text_style(&root),
                (8, (top + cell * i as u32 + 16) as i32),
            )
            .map_err(|e| e.to_string())?;
            root.draw_text(
                &i.to_string(),
                &("sans-serif", 11).into_text_style(&root),
                (
                    (left + cell * i as u32 + 2) as i32,
                    (top + cell * k as u32 + 8) as i32,
                ),
            )
            .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())
    };
    draw(&mut buf).map_err(perr(path))?;
    save_rgb_png(path, &buf, w, h)?;
    Ok(())
}

/// One line of a series chart: values at steps `start, start + 1, ...`.
pub struct Line<'a> {
    pub label: &'a str,
    pub start: usize,
    pub values: &'a [f32],
    pub color: RGBColor,
}

/// A series chart (history, truth, forecast) as PNG.
pub fn series_png(path: &Path, title: &str, ylabel: &str, lines: &[Line]) -> Result<()> {
    register_font();
    let (w, h) = (900u32, 420u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    let draw = |buf: &mut Vec<u8>| -> std::result::Result<(), String> {
        let root = BitMapBackend::with_buffer(buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let x0 = lines.iter().map(|l| l.start).min().unwrap_or(0);
        let x1 = lines
            .iter()
            .map(|l| l.start + l.values.len())
            .max()
            .unwrap_or(1)
            .max(x0 + 2);
        let vals = lines
            .iter()
            .flat_map(|l| l.values.iter().map(|&v| v as f64))
            .filter(|v| v.is_finite());
        let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        let pad = ((hi - lo) * 0.08).max(1e-3);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0 as f64..(x1 - 1) as f64, (lo - pad)..(hi + pad))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("step")
            .x_label_formatter(&|x| format!("{}", x.round() as i64))
            .y_desc(ylabel)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())?;
        for l in lines {
            let pts: Vec<(f64, f64)> = l
                .values
                .iter()
                .enumerate()
                .map(|(i, &v)| ((l.start + i) as f64, v as f64))
                .collect();
            let color = l.color;
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(l.label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())
    };
    draw(&mut buf).map_err(perr(path))?;
    save_rgb_png(path, &buf, w, h)?;
    Ok(())
}

/// Rows of images (each `(c, h, w)` with values in [0, 1], c = 1 or 3) as one PNG, each pixel
/// drawn 2x2, with a gap between images and between rows.
pub fn image_grid(path: &Path, rows: &[Vec<&[f32]>], shape: &[usize]) -> Result<()> {
    let (c, h, w) = match shape {
        [c, h, w] if *c == 1 || *c == 3 => (*c, *h, *w),
        _ => {
            return Err(Error::Format {
                path: path.display().to_string(),
                msg: format!("an image grid needs (1 or 3, h, w) images, got {shape:?}"),
            });
        }
    };
    let (z, gap) = (2usize, 4usize);
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
    let (gw, gh) = (
        gap + cols * (w * z + gap),
        gap + rows.len().max(1) * (h * z + gap),
    );
    let mut buf = vec![255u8; gw * gh * 3];
    for (ri, row) in rows.iter().enumerate() {
        for (ci, img) in row.iter().enumerate() {
            let (x0, y0) = (gap + ci * (w * z + gap), gap + ri * (h * z + gap));
            for y in 0..h * z {
                for x in 0..w * z {
                    let at = (y / z) * w + x / z;
                    let px = |ch: usize| {
                        let v = img[ch * h * w + at];
                        (v.clamp(0.0, 1.0) * 255.0).round() as u8
                    };
                    let o = ((y0 + y) * gw + x0 + x) * 3;
                    for k in 0..3 {
                        buf[o + k] = px(if c == 3 { k } else { 0 });
                    }
                }
            }
        }
    }
    save_rgb_png(path, &buf, gw as u32, gh as u32)
}
