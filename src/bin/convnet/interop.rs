//! `convnet import-weights SPEC WEIGHTS --out DIR` and `convnet export DIR --torch FILE`.

use std::path::Path;

use anyhow::{Result, bail};
use convnet::interop::torch;
use convnet::rng::Rng;
use convnet::spec::Spec;

pub fn import(model: &Path, out: &Path) -> Result<()> {
    let imported = convnet::interop::onnx::import_run(model, out)?;
    let layers = imported.spec.matches("[[model.layers").count();
    println!(
        "imported {} ({} nodes, {} evaluated as constants) as {layers} layers with {} weights into {}; `convnet summary {}` shows them",
        model.display(),
        imported.nodes + imported.folded,
        imported.folded,
        imported.state.len(),
        out.display(),
        out.join("spec.toml").display()
    );
    Ok(())
}

pub fn import_weights(
    spec: &Path,
    weights: &Path,
    discriminator: Option<&Path>,
    out: &Path,
) -> Result<()> {
    let spec = Spec::load(spec)?;
    let model = spec.build_model(&mut Rng::new(0))?;
    let imported = torch::load_torch(&model, weights)?;
    model.load_state_dict(&imported.state, &weights.display().to_string())?;
    let disc = match (spec.build_discriminator(&mut Rng::new(0))?, discriminator) {
        (Some(d), Some(file)) => {
            d.load_state_dict(
                &torch::load_torch(&d, file)?.state,
                &file.display().to_string(),
            )?;
            Some(d)
        }
        (Some(_), None) => bail!(
            "{} is a GAN: give the discriminator's weights too (--discriminator FILE)",
            spec.path.display()
        ),
        (None, Some(_)) => bail!(
            "{} has no discriminator for --discriminator",
            spec.path.display()
        ),
        (None, None) => None,
    };
    convnet::train::rundir::write_imported(&spec, &model, disc.as_ref(), out)?;
    let names = if imported.native {
        "convnet's names".to_string()
    } else if imported.prefix.is_empty() {
        "PyTorch's names".to_string()
    } else {
        format!("PyTorch's names below `{}`", imported.prefix)
    };
    println!(
        "imported {} tensors ({names}) into {}",
        imported.state.len(),
        out.display()
    );
    if !imported.ignored.is_empty() {
        println!("left out: {}", imported.ignored.join(", "));
    }
    if !imported.converted.is_empty() {
        println!("converted to f32: {}", imported.converted.join(", "));
    }
    Ok(())
}

pub fn export(
    dir: &Path,
    onnx: Option<&Path>,
    opset: Option<i64>,
    torch_out: Option<&Path>,
    overwrite: bool,
) -> Result<()> {
    if onnx.is_none() && torch_out.is_none() {
        bail!("say what to export: --onnx FILE or --torch FILE");
    }
    // checked before anything is written
    for file in onnx.iter().chain(torch_out.iter()) {
        let in_run = file
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .zip(file.file_name())
            .is_some_and(|(p, name)| {
                same_dir(p, dir) && convnet::train::rundir::is_run_file(&name.to_string_lossy())
            });
        if in_run {
            bail!(
                "{}: a file of the run {}; export to another name",
                file.display(),
                dir.display()
            );
        }
        if file.exists() && !overwrite {
            bail!(
                "{} already exists: pass --overwrite to replace it, or another name",
                file.display()
            );
        }
    }
    let (_, model, _) = convnet::train::load_run(dir)?;
    if let Some(file) = onnx {
        convnet::interop::onnx::save(&model, file, opset)?;
        println!(
            "wrote {} (ONNX opset {}, input `input` {}, output `output`)",
            file.display(),
            opset.unwrap_or(convnet::interop::onnx::DEFAULT_OPSET),
            shape_text(&model)
        );
    }
    if let Some(file) = torch_out {
        torch::save_torch(&model, file)?;
        println!(
            "wrote {} ({} tensors under PyTorch's names)",
            file.display(),
            model.state_dict().len()
        );
    }
    Ok(())
}

/// `(N, 1, H, W)`: the batch and the open sizes by name.
fn shape_text(model: &convnet::nn::Sequential) -> String {
    let names = if model.input.len() == 2 {
        ["L", "L"]
    } else {
        ["H", "W"]
    };
    let mut v = vec!["N".to_string()];
    for (i, d) in model.input.iter().enumerate() {
        v.push(if i > 0 && model.any_size[i] {
            names[i - 1].to_string()
        } else {
            d.to_string()
        });
    }
    format!("({})", v.join(", "))
}

/// Whether `a` and `b` are the same folder.
fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
