//! `convnet baseline SPEC [--json]`: one nearest neighbour with the Euclidean distance on a
//! classifier spec's training and test series, normalised as the spec says.

use std::io::Write;
use std::path::Path;

use anyhow::{Result, bail};
use convnet::spec::Spec;
use convnet::train;

pub fn run(spec: &Path, json: bool) -> Result<()> {
    let mut spec = Spec::load(spec)?;
    if let Some(d) = spec.data.as_mut() {
        // the whole training file: a nearest neighbour has nothing to validate
        d.validation_split = 0.0;
    }
    let p = train::prepare_samples(&spec, usize::MAX, 0)?;
    let Some(test) = &p.test else {
        bail!("the spec names no test data: 1-NN is scored on a test set");
    };
    if p.train.shape.len() != 2 {
        bail!(
            "1-NN with the Euclidean distance is the baseline of series classifiers; these samples are not series"
        );
    }
    let r = train::baseline::nearest_neighbour(&p.train, test, &p.normalize)?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
        return Ok(());
    }
    let resampled = r.resampled_to.map_or(String::new(), |l| {
        format!(", every series resampled to {l} steps")
    });
    writeln!(
        out,
        "1-NN, Euclidean distance ({} training series{resampled}): test accuracy {:.2}% on {} series",
        p.train.len(),
        100.0 * r.accuracy,
        r.samples
    )?;
    Ok(())
}
