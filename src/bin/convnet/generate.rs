//! `convnet generate DIR [--count N] [--out grid.png] [--seed S] [--cols C]`: samples of a
//! trained GAN's generator as a PNG grid (seeded: the same seed gives the same images).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use convnet::Rng;
use convnet::train::{self, gan};

pub struct Args {
    pub dir: PathBuf,
    pub count: usize,
    pub out: PathBuf,
    pub seed: u64,
    pub cols: usize,
    pub overwrite: bool,
}

pub fn run(a: Args) -> Result<()> {
    if a.count == 0 || a.cols == 0 {
        bail!("--count and --cols must be at least 1");
    }
    if a.count > 4096 {
        bail!("--count {}: a grid holds at most 4096 images", a.count);
    }
    if a.out.exists() && !a.overwrite {
        bail!("{} exists: pass --overwrite to replace it", a.out.display());
    }
    let (spec, g, info) = train::load_run(&a.dir)?;
    if spec.discriminator.is_none() {
        bail!(
            "{} is not a GAN run (its spec has no [generator] and [discriminator])",
            a.dir.display()
        );
    }
    let shape = spec.sample_shape().0.to_vec();
    let samples = gan::generate(&g, a.count, &info.normalize(), &mut Rng::new(a.seed))?;
    gan::sample_grid(&a.out, &samples, &shape, a.cols)?;
    println!(
        "wrote {} samples of {:?} to {}",
        a.count,
        shape,
        Path::new(&a.out).display()
    );
    Ok(())
}
