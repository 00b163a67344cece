//! `convnet summary SPEC [--json]`.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use convnet::explain::summarize;
use convnet::rng::Rng;
use convnet::spec::Spec;

pub fn run(spec: &Path, json: bool) -> Result<()> {
    let spec = Spec::read(spec)?;
    let mut out = std::io::stdout().lock();
    if spec.discriminator.is_some() {
        // a GAN: both models, built once and checked against each other
        let (g, d) = convnet::train::gan::build_gan(&spec, 0)?;
        let (s, ds) = (summarize(&g)?, summarize(&d)?);
        if json {
            let v = serde_json::json!({"generator": s.to_json(), "discriminator": ds.to_json()});
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        } else {
            write!(
                out,
                "[generator]\n{}\n[discriminator]\n{}",
                s.to_table(),
                ds.to_table()
            )?;
        }
        return Ok(());
    }
    let model = spec.build_model(&mut Rng::new(0))?;
    let s = summarize(&model)?;
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&s.to_json())?)?;
    } else {
        write!(out, "{}", s.to_table())?;
        writeln!(
            out,
            "FLOPs count a multiply-add as two; the receptive field is in input positions per output position."
        )?;
    }
    Ok(())
}
