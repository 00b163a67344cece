//! `convnet predict DIR FILE... [--top K] [--resize] [--json]`: classify images with a
//! trained run.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use convnet::data::load_image;
use convnet::{Tensor, no_grad, ops, train};

pub fn run(dir: &Path, files: &[PathBuf], top: usize, resize: bool, json: bool) -> Result<()> {
    if files.is_empty() {
        bail!("give at least one image file to classify");
    }
    let (spec, model, info) = train::load_run(dir)?;
    match train::RunKind::of(&spec) {
        train::RunKind::Gan => bail!(
            "{} is a GAN run: sample it with `convnet generate`",
            dir.display()
        ),
        train::RunKind::Autoencoder => bail!(
            "{} is an autoencoder run: `convnet eval` reports its reconstructions",
            dir.display()
        ),
        train::RunKind::Classifier | train::RunKind::Forecaster => {}
    }
    if spec.input.len() != 3 {
        bail!(
            "this model takes inputs of shape {:?}, not images (channels, height, width)",
            spec.input
        );
    }
    let resize = resize || spec.data.as_ref().is_some_and(|d| d.resize);
    // a model whose input size is open takes each image at its own size
    let any = spec.any_size[1..].iter().all(|&a| a);
    let norm = info.normalize();
    let mut out = std::io::stdout().lock();
    let mut infer = convnet::plan::Inference::new(&model, 1).hflip(spec.train.tta_hflip);
    let mut rows = Vec::new();
    for f in files {
        let (mut x, size) = load_image(f, &spec.input, resize, any)?;
        norm.apply(&mut x);
        let mut shape = vec![1, spec.input[0]];
        shape.extend(&size);
        let x = Tensor::from_vec(x, &shape)?;
        let logits = infer.forward(&x)?;
        let probs = no_grad(|| ops::softmax(&logits, 1))?.to_vec();
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let name = |k: usize| {
            info.class_names
                .get(k)
                .cloned()
                .unwrap_or_else(|| k.to_string())
        };
        let best = order.iter().take(top.max(1));
        if json {
            let top: Vec<_> = best
                .map(
                    |&k| serde_json::json!({"class": name(k), "index": k, "probability": probs[k]}),
                )
                .collect();
            rows.push(serde_json::json!({"file": f.display().to_string(), "top": top}));
            continue;
        }
        writeln!(out, "{}", f.display())?;
        for &k in best {
            writeln!(out, "  {:>6.2}%  {}", 100.0 * probs[k], name(k))?;
        }
    }
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(())
}
