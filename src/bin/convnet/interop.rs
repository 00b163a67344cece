//! `convnet import-weights SPEC WEIGHTS --out DIR` and `convnet export DIR --torch FILE`.

use std::path::Path;

use anyhow::{Result, bail};
use convnet::interop::torch;
use convnet::rng::Rng;
use convnet::spec::Spec;

pub fn import_weights(spec: &Path, weights: &Path, out: &Path) -> Result<()> {
    let spec = Spec::load(spec)?;
    if spec.discriminator.is_some() {
        bail!(
            "{}: a GAN holds two models; import-weights takes a spec of one",
            spec.path.display()
        );
    }
    let model = spec.build_model(&mut Rng::new(0))?;
    let imported = torch::load_torch(&model, weights)?;
    model.load_state_dict(&imported.state, &weights.display().to_string())?;
    convnet::train::rundir::write_imported(&spec, &model, out)?;
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

pub fn export(dir: &Path, torch_out: Option<&Path>) -> Result<()> {
    let Some(file) = torch_out else {
        bail!("say what to export: --torch FILE (a PyTorch state dict as safetensors)");
    };
    let (_, model, _) = convnet::train::load_run(dir)?;
    torch::save_torch(&model, file)?;
    println!(
        "wrote {} ({} tensors under PyTorch's names)",
        file.display(),
        model.state_dict().len()
    );
    Ok(())
}
