//! `convnet summary SPEC [--json]`.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use convnet::explain::summarize;
use convnet::rng::Rng;
use convnet::spec::Spec;

pub fn run(spec: &Path, json: bool) -> Result<()> {
    let spec = Spec::read(spec)?;
    let model = spec.build_model(&mut Rng::new(0))?;
    let s = summarize(&model)?;
    let mut out = std::io::stdout().lock();
    if let Some(d) = spec.build_discriminator(&mut Rng::new(0))? {
        // a GAN: both models, checked against each other
        convnet::train::gan::build_gan(&spec, 0)?;
        let ds = summarize(&d)?;
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
