//! `convnet explain`: one self-contained HTML page for a trained model and one input. Every
//! layer appears with its hyperparameters, output shape and arithmetic, parameters and
//! receptive field; its feature maps as image grids with one colour scale per layer (line plots
//! for 1-D layers); the filters of convolutions; what max pooling kept; the output as a bar
//! chart of class probabilities; a Grad-CAM map of the predicted class over the input; and,
//! with JavaScript, the input region that any clicked unit can see (from the geometry of
//! `Sequential::geometry`). Everything is inline: no network, no CDN.

use base64::Engine;

use crate::autograd::no_grad;
use crate::error::{Error, Result};
use crate::nn::{Ctx, Sequential, fmt_shape};
use crate::ops;
use crate::rng::Rng;
use crate::spec::Spec;
use crate::tensor::Tensor;

/// What the page explains.
pub struct ExplainInput {
    /// The sample as the model sees it, `(1, *shape)`, normalised.
    pub x: Tensor,
    /// The same sample for display (pixels in [0, 1], or the series' own units).
    pub display: Vec<f32>,
    /// One line on where the input came from.
    pub describe: String,
    /// Class names, when the model is a classifier.
    pub class_names: Vec<String>,
}

impl ExplainInput {
    /// The name of class `k`, or its number where the run names fewer classes.
    pub fn class_name(&self, k: usize) -> String {
        self.class_names
            .get(k)
            .cloned()
            .unwrap_or_else(|| k.to_string())
    }
}

/// The page, and the class the model predicts (for a classifier).
pub struct Explained {
    pub html: String,
    pub predicted: Option<(usize, f32)>,
}

const MAX_MAPS: usize = 32;
const MAX_LINES: usize = 12;

fn b64_png(w: usize, h: usize, rgb: &[u8]) -> Result<String> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::write_buffer_with_format(
        &mut out,
        rgb,
        w as u32,
        h as u32,
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .map_err(|e| Error::Format {
        path: "report".into(),
        msg: format!("cannot encode an image: {e}"),
    })?;
    Ok(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(out.into_inner())
    ))
}

/// A colour scale shared by one layer's maps: diverging blue-white-red around 0 when the
/// values take both signs, white to dark blue otherwise.
#[derive(Clone, Copy)]
struct Scale {
    lo: f32,
    hi: f32,
}

impl Scale {
    fn of(v: &[f32]) -> Scale {
        let (lo, hi) = v
            .iter()
            .filter(|x| x.is_finite())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        if lo.is_finite() {
            Scale { lo, hi }
        } else {
            Scale { lo: 0.0, hi: 1.0 }
        }
    }
    fn diverging(&self) -> bool {
        self.lo < 0.0 && self.hi > 0.0
    }
    fn rgb(&self, v: f32) -> [u8; 3] {
        let mix = |a: [f32; 3], b: [f32; 3], t: f32| {
            let t = t.clamp(0.0, 1.0);
            [0, 1, 2].map(|i| (a[i] + (b[i] - a[i]) * t).round() as u8)
        };
        let (white, blue, red, navy) = (
            [255.0, 255.0, 255.0],
            [33.0, 102.0, 172.0],
            [178.0, 24.0, 43.0],
            [8.0, 48.0, 107.0],
        );
        if self.diverging() {
            let m = self.lo.abs().max(self.hi.abs()).max(1e-12);
            if v < 0.0 {
                mix(white, blue, -v / m)
            } else {
                mix(white, red, v / m)
            }
        } else {
            let span = (self.hi - self.lo).max(1e-12);
            mix(white, navy, (v - self.lo) / span)
        }
    }
    fn legend(&self) -> String {
        let stops: Vec<String> = (0..=10)
            .map(|i| {
                let v = self.lo + (self.hi - self.lo) * i as f32 / 10.0;
                let c = self.rgb(v);
                format!("rgb({},{},{}) {}%", c[0], c[1], c[2], i * 10)
            })
            .collect();
        format!(
            "<div class=\"legend\"><span>{:.3}</span><span class=\"bar\" style=\"background: linear-gradient(to right, {})\"></span><span>{:.3}</span></div>",
            self.lo,
            stops.join(", "),
            self.hi
        )
    }
}

/// One `h x w` map as a PNG data URI, `z` pixels per value.
fn map_png(v: &[f32], h: usize, w: usize, scale: Scale, z: usize) -> Result<String> {
    let (zw, zh) = (w * z, h * z);
    let mut rgb = vec![0u8; zw * zh * 3];
    for y in 0..zh {
        for x in 0..zw {
            let c = scale.rgb(v[(y / z) * w + x / z]);
            rgb[(y * zw + x) * 3..(y * zw + x) * 3 + 3].copy_from_slice(&c);
        }
    }
    b64_png(zw, zh, &rgb)
}

fn zoom_for(h: usize, w: usize) -> usize {
    (96 / h.max(w).max(1)).clamp(1, 8)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Channel maps of a `(c, h, w)` output as a grid of images with one scale.
fn grid_2d(layer: &str, v: &[f32], c: usize, h: usize, w: usize) -> Result<String> {
    let shown = c.min(MAX_MAPS);
    let scale = Scale::of(&v[..shown * h * w]);
    let z = zoom_for(h, w);
    let mut s = format!("<div class=\"fmaps\" data-layer=\"{layer}\">");
    for ch in 0..shown {
        s.push_str(&format!(
            "<figure><img class=\"fmap\" data-layer=\"{layer}\" data-h=\"{h}\" data-w=\"{w}\" src=\"{}\" width=\"{}\" height=\"{}\" alt=\"channel {ch}\"><figcaption>{ch}</figcaption></figure>",
            map_png(&v[ch * h * w..(ch + 1) * h * w], h, w, scale, z)?,
            w * z,
            h * z
        ));
    }
    s.push_str("</div>");
    if shown < c {
        s.push_str(&format!(
            "<p class=\"note\">the first {shown} of {c} channels</p>"
        ));
    }
    s.push_str(&scale.legend());
    Ok(s)
}

/// Channel lines of a `(c, l)` output as small SVG plots with one y range.
fn grid_1d(layer: Option<&str>, v: &[f32], c: usize, l: usize) -> String {
    let shown = c.min(MAX_LINES);
    let scale = Scale::of(&v[..shown * l]);
    let (w, h) = (220.0f32, 60.0f32);
    let y = |x: f32| h - 4.0 - (x - scale.lo) / (scale.hi - scale.lo).max(1e-12) * (h - 8.0);
    let (class, data) = match layer {
        Some(i) => ("fmap1d", format!(" data-layer=\"{i}\"")),
        None => ("plot1d", String::new()),
    };
    let mut s = format!("<div class=\"fmaps\"{data}>");
    for ch in 0..shown {
        let pts: Vec<String> = (0..l)
            .map(|i| {
                let x = if l > 1 {
                    i as f32 * w / (l - 1) as f32
                } else {
                    w / 2.0
                };
                format!("{x:.1},{:.1}", y(v[ch * l + i]))
            })
            .collect();
        s.push_str(&format!(
            "<figure><svg class=\"{class}\"{data} data-l=\"{l}\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\"><rect width=\"{w}\" height=\"{h}\" fill=\"#fafafa\"/><polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.2\" points=\"{}\"/></svg><figcaption>{ch}</figcaption></figure>",
            pts.join(" ")
        ));
    }
    s.push_str("</div>");
    if shown < c {
        s.push_str(&format!(
            "<p class=\"note\">the first {shown} of {c} channels</p>"
        ));
    }
    s.push_str(&format!(
        "<p class=\"note\">one y range for every channel: {:.3} to {:.3}</p>",
        scale.lo, scale.hi
    ));
    s
}

/// Values as horizontal bars, with labels; `top` marks the largest.
fn bars(layer: &str, v: &[f32], labels: &[String], probs: bool) -> String {
    let n = v.len().min(64);
    let top = (0..n).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap_or(0);
    let m = v[..n].iter().fold(1e-12f32, |a, &x| a.max(x.abs()));
    let mut s = format!(
        "<div class=\"fmaps bars{}\" data-layer=\"{layer}\"><table>",
        if probs { " probs" } else { "" }
    );
    for (i, &x) in v.iter().enumerate().take(n) {
        let label = labels.get(i).cloned().unwrap_or_else(|| i.to_string());
        let width = (x.abs() / m * 200.0).round();
        s.push_str(&format!(
            "<tr{}><td>{}</td><td><span class=\"b{}\" style=\"width:{width}px\"></span></td><td>{}</td></tr>",
            if i == top { " class=\"top\"" } else { "" },
            esc(&label),
            if x < 0.0 { " neg" } else { "" },
            if probs {
                format!("{:.2}%", 100.0 * x)
            } else {
                format!("{x:.4}")
            }
        ));
    }
    s.push_str("</table></div>");
    s
}

/// The filters of a convolution: images per filter (and input channel), or taps for 1-D.
fn filters_html(w: &Tensor) -> Result<String> {
    let s = w.shape().to_vec();
    let d = w.data();
    let mut out = String::from("<details><summary>filters</summary>");
    match s[..] {
        [co, ci, kh, kw] => {
            let scale = Scale::of(&d);
            let z = (48 / kh.max(kw)).clamp(2, 12);
            let (fshow, cshow) = (co.min(16), ci.min(8));
            out.push_str(&format!(
                "<p class=\"note\">{co} filters of {ci} x {kh} x {kw}{}</p><div class=\"filters\">",
                if fshow < co || cshow < ci {
                    format!("; the first {fshow} filters, {cshow} input channels each")
                } else {
                    String::new()
                }
            ));
            for f in 0..fshow {
                out.push_str("<div class=\"filter\">");
                for c in 0..cshow {
                    let off = (f * ci + c) * kh * kw;
                    out.push_str(&format!(
                        "<img src=\"{}\" width=\"{}\" height=\"{}\" alt=\"filter {f}, channel {c}\">",
                        map_png(&d[off..off + kh * kw], kh, kw, scale, z)?,
                        kw * z,
                        kh * z
                    ));
                }
                out.push_str("</div>");
            }
            out.push_str(&format!("</div>{}", scale.legend()));
        }
        [co, ci, k] => {
            out.push_str(&format!(
                "<p class=\"note\">{co} filters of {ci} x {k} taps (the first input channel of the first 16)</p><div class=\"filters\">"
            ));
            for f in 0..co.min(16) {
                out.push_str(&bars("filter", &d[f * ci * k..f * ci * k + k], &[], false));
            }
            out.push_str("</div>");
        }
        _ => {}
    }
    out.push_str("</details>");
    Ok(out)
}

/// Where a 2-D max pool took its values: the input map with the kept positions lit.
fn kept_html(
    input: &[f32],
    c: usize,
    h: usize,
    w: usize,
    out: &[f32],
    oh: usize,
    ow: usize,
) -> Result<String> {
    let shown = c.min(8);
    let mut s = String::from(
        "<details><summary>what max pooling kept</summary><p class=\"note\">each channel's input, dark where a window's maximum came from</p><div class=\"fmaps-kept\">",
    );
    for ch in 0..shown {
        let x = &input[ch * h * w..(ch + 1) * h * w];
        let y = &out[ch * oh * ow..(ch + 1) * oh * ow];
        // a position is kept when it holds a value the pool output took (+ 0.0 makes -0 and 0
        // one key, as == does)
        let taken: std::collections::HashSet<u32> = y.iter().map(|v| (v + 0.0).to_bits()).collect();
        let mask: Vec<f32> = x
            .iter()
            .map(|v| f32::from(u8::from(taken.contains(&(v + 0.0).to_bits()))))
            .collect();
        let z = zoom_for(h, w).min(4);
        s.push_str(&format!(
            "<img src=\"{}\" width=\"{}\" height=\"{}\" alt=\"kept, channel {ch}\">",
            map_png(&mask, h, w, Scale { lo: 0.0, hi: 1.0 }, z)?,
            w * z,
            h * z
        ));
    }
    s.push_str("</div></details>");
    Ok(s)
}

/// Grad-CAM (Selvaraju et al. 2017) for `class` at the last layer that still has positions:
/// each channel weighted by the mean gradient of the class score over its positions, summed,
/// ReLU, scaled to [0, 1]. Returns the map and its spatial shape.
/// `outs` are the layers' outputs for the input, whose rank is `rank`.
fn grad_cam(
    model: &Sequential,
    outs: &[Tensor],
    rank: usize,
    class: usize,
) -> Result<Option<(Vec<f32>, Vec<usize>, usize)>> {
    let layers = model.layers();
    let mut ctx_rng = Rng::new(0);
    let Some(k) = (0..layers.len()).rev().find(|&i| outs[i].rank() == rank) else {
        return Ok(None);
    };
    let a = outs[k].deep_clone().requires_grad_();
    let mut y = a.clone();
    for l in &layers[k + 1..] {
        y = l.forward(
            &y,
            &mut Ctx {
                training: false,
                rng: &mut ctx_rng,
                lengths: None,
            },
        )?;
    }
    let n = y.numel();
    if class >= n {
        return Ok(None);
    }
    let mut onehot = vec![0f32; n];
    onehot[class] = 1.0;
    ops::sum_all(&ops::mul(&y, &Tensor::from_vec(onehot, y.shape())?)?)?.backward()?;
    let Some(g) = a.grad() else {
        return Ok(None);
    };
    let s = a.shape().to_vec();
    let (c, plane) = (s[1], s[2..].iter().product::<usize>());
    let (ad, gd) = (a.data(), g.data());
    let mut cam = vec![0f32; plane];
    for ch in 0..c {
        let alpha: f32 = gd[ch * plane..(ch + 1) * plane].iter().sum::<f32>() / plane as f32;
        for (p, v) in cam.iter_mut().enumerate() {
            *v += alpha * ad[ch * plane + p];
        }
    }
    let m = cam.iter().fold(0f32, |a, &v| a.max(v));
    cam.iter_mut()
        .for_each(|v| *v = if m > 0.0 { v.max(0.0) / m } else { 0.0 });
    Ok(Some((cam, s[2..].to_vec(), k)))
}

/// Resample a map to `(h, w)` (bilinear, via the image crate).
fn resample(v: &[f32], from: &[usize], to: &[usize]) -> Vec<f32> {
    use image::{ImageBuffer, Luma, imageops};
    let (fh, fw, th, tw) = match (from, to) {
        ([a, b], [c, d]) => (*a, *b, *c, *d),
        ([a], [c]) => (1, *a, 1, *c),
        _ => return v.to_vec(),
    };
    let Some(img): Option<ImageBuffer<Luma<f32>, Vec<f32>>> =
        ImageBuffer::from_raw(fw as u32, fh as u32, v.to_vec())
    else {
        return v.to_vec();
    };
    imageops::resize(&img, tw as u32, th as u32, imageops::FilterType::Triangle).into_raw()
}

/// A layer's output: image grids, line plots, or bars (class probabilities for the last layer
/// of a classifier).
fn maps(id: &str, out: &Tensor, probs: Option<&Vec<f32>>, names: &[String]) -> Result<String> {
    let s = out.shape().to_vec();
    let d = out.to_vec();
    Ok(match (&s[1..], probs) {
        ([c, oh, ow], _) => grid_2d(id, &d, *c, *oh, *ow)?,
        ([c, l], _) => grid_1d(Some(id), &d, *c, *l),
        (_, Some(p)) => format!(
            "<p class=\"note\">class probabilities (softmax of the outputs)</p>{}",
            bars(id, p, names, true)
        ),
        _ => bars(id, &d, &[], false),
    })
}

/// One entry of the page's geometry table, for the unit-to-input-region lookup.
fn geo_entry(id: &str, rf: &crate::nn::ReceptiveField, start: &[f64]) -> String {
    format!(
        "\"{id}\":{{\"size\":{:?},\"jump\":{:?},\"start\":{:?},\"global\":{}}}",
        rf.size, rf.jump, start, rf.global
    )
}

/// The whole page.
pub fn explain(spec: &Spec, model: &Sequential, input: &ExplainInput) -> Result<Explained> {
    // shapes, arithmetic and fields at this input's size (an open-size model's may differ
    // from its nominal one)
    let shape = input.x.shape()[1..].to_vec();
    let rows = model.report_for(&shape)?;
    let geometry = model.geometry_for(&shape);
    let top_rows: Vec<_> = rows.iter().filter(|r| r.depth == 0).collect();
    let mut ctx_rng = Rng::new(0);
    // every layer's output for this input
    let mut outs: Vec<Tensor> = Vec::new();
    let mut h = input.x.clone();
    for l in model.layers() {
        h = no_grad(|| {
            l.forward(
                &h,
                &mut Ctx {
                    training: false,
                    rng: &mut ctx_rng,
                    lengths: None,
                },
            )
        })?;
        outs.push(h.clone());
    }
    let last = outs.last().cloned().unwrap_or_else(|| input.x.clone());
    let classifier = !input.class_names.is_empty() && last.rank() == 2;
    let probs = if classifier {
        Some(no_grad(|| ops::softmax(&last, 1))?.to_vec())
    } else {
        None
    };
    let predicted = probs.as_ref().map(|p| {
        let k = (0..p.len())
            .max_by(|&a, &b| p[a].total_cmp(&p[b]))
            .unwrap_or(0);
        (k, p[k])
    });

    let mut body = String::new();
    // a run's spec is DIR/spec.toml: the run directory names it better
    let named = |p: Option<&std::path::Path>| {
        p.and_then(|p| p.file_stem())
            .map(|s| s.to_string_lossy().into_owned())
    };
    let title = match named(Some(&spec.path)) {
        Some(s) if s == "spec" => named(spec.path.parent()).unwrap_or(s),
        other => other.unwrap_or_default(),
    };
    body.push_str(&format!(
        "<h1>{}</h1><p class=\"note\">{}; input {}; {} parameters</p>",
        esc(&title),
        esc(&input.describe),
        fmt_shape(&shape),
        model.num_params()
    ));
    if let (Some((k, p)), Some(_)) = (predicted, &probs) {
        body.push_str(&format!(
            "<p id=\"prediction\">prediction: <b id=\"top-class\">{}</b> ({:.2}%)</p>",
            esc(&input.class_name(k)),
            100.0 * p
        ));
    }
    // the input, with an overlay for receptive fields
    body.push_str("<section class=\"input\"><h2>input</h2><div id=\"rf-info\" class=\"note\">click a unit of any feature map to see the input region it can see</div>");
    match shape[..] {
        [c, ih, iw] => {
            let z = zoom_for(ih, iw).max(4);
            let d = &input.display;
            let mut rgb = vec![0u8; ih * z * iw * z * 3];
            for y in 0..ih * z {
                for x in 0..iw * z {
                    let at = (y / z) * iw + x / z;
                    for k in 0..3 {
                        let ch = if c == 3 { k } else { 0 };
                        rgb[(y * iw * z + x) * 3 + k] =
                            (d[ch * ih * iw + at].clamp(0.0, 1.0) * 255.0).round() as u8;
                    }
                }
            }
            body.push_str(&format!(
                "<div class=\"inputwrap\" style=\"width:{w}px;height:{h}px\"><img id=\"input-img\" src=\"{}\" width=\"{w}\" height=\"{h}\" data-h=\"{ih}\" data-w=\"{iw}\" alt=\"input\"><div id=\"rf-box\"></div></div>",
                b64_png(iw * z, ih * z, &rgb)?,
                w = iw * z,
                h = ih * z
            ));
        }
        [c, l] => {
            body.push_str(&format!("<div class=\"inputwrap1d\" data-l=\"{l}\">"));
            body.push_str(
                &grid_1d(None, &input.display, c, l)
                    .replace("class=\"fmaps\"", "class=\"inputplots\""),
            );
            body.push_str("<div id=\"rf-band\"></div></div>");
        }
        _ => body.push_str(&bars("input", &input.display, &[], false)),
    }
    body.push_str("</section>");

    // Grad-CAM for the predicted class
    if let Some((k, _)) = predicted {
        if let Some((cam, cshape, at)) = grad_cam(model, &outs, input.x.rank(), k)? {
            body.push_str(&format!(
                "<section class=\"gradcam\"><h2>Grad-CAM: where the input raised the score of {}</h2><p class=\"note\">computed at layers.{at} ({}), resampled to the input</p>",
                esc(&input.class_name(k)),
                model.layers()[at].kind()
            ));
            let spatial = &shape[1..];
            let up = resample(&cam, &cshape, spatial);
            match spatial {
                [ih, iw] => {
                    let z = zoom_for(*ih, *iw).max(4);
                    let d = &input.display;
                    let plane = ih * iw;
                    let mut rgb = vec![0u8; ih * z * iw * z * 3];
                    for y in 0..ih * z {
                        for x in 0..iw * z {
                            let at = (y / z) * iw + x / z;
                            let g = d[at % plane].clamp(0.0, 1.0);
                            let heat = up[at].clamp(0.0, 1.0);
                            // grey input, red heat on top
                            let px = [
                                (255.0 * (0.5 * g + 0.5 * heat)) as u8,
                                (255.0 * 0.5 * g) as u8,
                                (255.0 * 0.5 * g * (1.0 - heat)) as u8,
                            ];
                            rgb[(y * iw * z + x) * 3..(y * iw * z + x) * 3 + 3]
                                .copy_from_slice(&px);
                        }
                    }
                    body.push_str(&format!(
                        "<img id=\"gradcam\" src=\"{}\" width=\"{}\" height=\"{}\" alt=\"Grad-CAM\">",
                        b64_png(iw * z, ih * z, &rgb)?,
                        iw * z,
                        ih * z
                    ));
                }
                [l] => body.push_str(&grid_1d(None, &up, 1, *l)),
                _ => {}
            }
            body.push_str("</section>");
        }
    }

    // the layers
    let spec_layers = &spec.layers;
    let mut prev = input.x.clone();
    let mut geo_js = Vec::new();
    let mut prev_geo = (
        crate::nn::ReceptiveField::identity(shape.len().saturating_sub(1)),
        vec![0.0; shape.len().saturating_sub(1)],
    );
    for (i, (layer, out)) in model.layers().iter().zip(&outs).enumerate() {
        let id = i.to_string();
        body.push_str(&format!(
            "<section class=\"layer\" id=\"layer-{i}\"><h2>layers.{i} <span class=\"kind\">{}</span></h2>",
            layer.kind()
        ));
        if let Some(ls) = spec_layers.get(i) {
            let kv: Vec<String> = ls
                .table
                .iter()
                .filter(|(k, _)| *k != "type" && *k != "layers")
                .map(|(k, v)| format!("<code>{} = {}</code>", esc(k), esc(&v.to_string())))
                .collect();
            if !kv.is_empty() {
                body.push_str(&format!("<p class=\"hp\">{}</p>", kv.join(" ")));
            }
        }
        if let Some(r) = top_rows.get(i) {
            body.push_str(&format!(
                "<p>output {} &middot; {} parameters &middot; receptive field {}</p>",
                fmt_shape(&r.output_shape),
                r.params,
                r.receptive_field
            ));
            if !r.arithmetic.is_empty() {
                body.push_str(&format!("<pre>{}</pre>", esc(&r.arithmetic.join("\n"))));
            }
        }
        let probs_here = probs.as_ref().filter(|_| i + 1 == outs.len());
        body.push_str(&maps(&id, out, probs_here, &input.class_names)?);
        for (name, t) in layer.params() {
            if (name == "weight" || name == "weight_v")
                && (layer.kind() == "conv2d" || layer.kind() == "conv1d")
            {
                body.push_str(&filters_html(&t)?);
            }
        }
        if layer.kind() == "max_pool2d" {
            let (ps, os) = (prev.shape().to_vec(), out.shape().to_vec());
            if ps.len() == 4 && os.len() == 4 {
                body.push_str(&kept_html(
                    &prev.to_vec(),
                    ps[1],
                    ps[2],
                    ps[3],
                    &out.to_vec(),
                    os[2],
                    os[3],
                )?);
            }
        }
        // a block's parts along its main path, each with its maps and receptive field
        let parts = layer.parts();
        if !parts.is_empty() {
            body.push_str("<details open><summary>inside the block</summary>");
            let (mut rf, mut start) = prev_geo.clone();
            let mut h = prev.clone();
            for (pname, part) in parts {
                let sample_shape = h.shape()[1..].to_vec();
                start = part.rf_start(&sample_shape, &start, &rf.jump);
                rf = part.receptive_field(&rf);
                h = no_grad(|| {
                    part.forward(
                        &h,
                        &mut Ctx {
                            training: false,
                            rng: &mut ctx_rng,
                            lengths: None,
                        },
                    )
                })?;
                let pid = format!("{i}.{pname}");
                body.push_str(&format!(
                    "<div class=\"part\"><h3>layers.{pid} <span class=\"kind\">{}</span></h3><p>output {} &middot; receptive field {}</p>",
                    part.kind(),
                    fmt_shape(&h.shape()[1..]),
                    rf.describe()
                ));
                body.push_str(&maps(&pid, &h, None, &[])?);
                body.push_str("</div>");
                geo_js.push(geo_entry(&pid, &rf, &start));
            }
            body.push_str("</details>");
        }
        body.push_str("</section>");
        if let Some((rf, start)) = geometry.get(i) {
            geo_js.push(geo_entry(&id, rf, start));
            prev_geo = (rf.clone(), start.clone());
        }
        prev = out.clone();
    }
    let html = include_str!("report.html")
        .replace("/*TITLE*/", &esc(&title))
        .replace("/*BODY*/", &body)
        .replace("/*GEOMETRY*/", &format!("{{{}}}", geo_js.join(",")))
        .replace("/*INPUT*/", &format!("{:?}", shape));
    Ok(Explained { html, predicted })
}
