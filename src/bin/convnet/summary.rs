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
