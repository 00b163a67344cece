//! `convnet playground [--out playground.html] [--overwrite]`: the hyperparameter playground,
//! a self-contained HTML page.

use std::path::Path;

use anyhow::{Result, bail};

pub fn run(out: &Path, overwrite: bool) -> Result<()> {
    if out.exists() && !overwrite {
        bail!("{} exists: pass --overwrite to replace it", out.display());
    }
    convnet::io::write_atomic(
        out,
        convnet::explain::playground::playground_html()?.as_bytes(),
    )?;
    println!("wrote {}", out.display());
    Ok(())
}
