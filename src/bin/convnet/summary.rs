//! `convnet summary SPEC [--json]`.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use convnet::explain::summarize;
use convnet::rng::Rng;
use convnet::spec::Spec;
use convnet::tensor::meta;
use convnet::train::memory::estimate_spec;

pub fn run(spec: &Path, json: bool) -> Result<()> {
    let spec = Spec::read(spec)?;
    // built from shapes alone: a summary answers for a model of any size
    let memory = estimate_spec(&spec)?;
    let mut out = std::io::stdout().lock();
    if spec.discriminator.is_some() {
        // a GAN: both models, built once and checked against each other
        let (g, d) = meta(|| convnet::train::gan::build_gan(&spec, 0))?;
        let (s, ds) = (summarize(&g)?, summarize(&d)?);
        if json {
            let v = serde_json::json!({"generator": s.to_json(), "discriminator": ds.to_json(),
                "training_memory": memory.to_json()});
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        } else {
            write!(
                out,
                "[generator]\n{}\n[discriminator]\n{}training memory: {}\n",
                s.to_table(),
                ds.to_table(),
                memory.describe()
            )?;
        }
        return Ok(());
    }
    let model = meta(|| spec.build_model(&mut Rng::new(0)))?;
    let mut s = summarize(&model)?;
    // (the spec's batch size; training also checks the batches the data makes)
    s.warnings.extend(convnet::train::small_batch_warning(
        &model,
        &[spec.train.batch_size],
    )?);
    if json {
        let mut v = s.to_json();
        v["training_memory"] = memory.to_json();
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        write!(out, "{}", s.to_table())?;
        writeln!(out, "training memory: {}", memory.describe())?;
        writeln!(
            out,
            "FLOPs count a multiply-add as two; the receptive field is in input positions per output position."
        )?;
    }
    Ok(())
}
