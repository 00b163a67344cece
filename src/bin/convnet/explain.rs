//! `convnet explain DIR [INPUT] [--out report.html]`: a self-contained HTML page that shows
//! what a trained model does with one input: an image for an image model, a series CSV for a
//! forecaster (the window ending before `--start`), a `.ts`/`.tsv` file for a series
//! classifier (sample `--index`), or, for a GAN's generator, seeded noise.

use std::path::PathBuf;

use anyhow::{Result, bail};
use convnet::data::{load_image, read_series_csv, read_ts, read_ucr_tsv};
use convnet::explain::report::{ExplainInput, explain};
use convnet::spec::DataSource;
use convnet::train::forecast::Forecaster;
use convnet::train::{self, gan};
use convnet::{Rng, Tensor};

pub struct Args {
    pub dir: PathBuf,
    pub input: Option<PathBuf>,
    pub out: PathBuf,
    pub start: Option<usize>,
    pub index: usize,
    pub seed: u64,
    pub overwrite: bool,
}

pub fn run(a: Args) -> Result<()> {
    if a.out.exists() && !a.overwrite {
        bail!("{} exists: pass --overwrite to replace it", a.out.display());
    }
    let (spec, model, info) = train::load_run(&a.dir)?;
    let norm = info.normalize();
    let source = spec.data.as_ref().map(|d| &d.source);
    let kind = train::RunKind::of(&spec);
    let input = if kind == train::RunKind::Gan {
        let z = gan::noise(1, &model.input, &mut Rng::new(a.seed))?;
        ExplainInput {
            display: z.to_vec(),
            x: z,
            describe: format!("the generator on noise drawn with seed {}", a.seed),
            class_names: Vec::new(),
        }
    } else {
        let Some(path) = &a.input else {
            bail!("give the INPUT to explain: an image, a series CSV or a .ts/.tsv file");
        };
        match source {
            Some(DataSource::Series(_)) if kind == train::RunKind::Forecaster => {
                let mut f = Forecaster::new(&spec, &model, &info)?;
                let series = read_series_csv(path, &f.source.read)?;
                f.attach(&series, &path.display().to_string())?;
                let t = a.start.unwrap_or(series.len());
                if t > series.len() || t < f.window {
                    bail!(
                        "--start {t}: the window needs {} steps before it in a series of {}",
                        f.window,
                        series.len()
                    );
                }
                let cols: Vec<Vec<f32>> = series.values.iter().map(|v| v[..t].to_vec()).collect();
                let (x, _) = f.input_window(&cols);
                let display: Vec<f32> = cols
                    .iter()
                    .flat_map(|v| v[t - f.window..].to_vec())
                    .collect();
                ExplainInput {
                    x: Tensor::from_vec(x, &[1, cols.len(), f.window])?,
                    display,
                    describe: format!(
                        "the {} steps of {} before step {t}",
                        f.window,
                        file_name(path)
                    ),
                    class_names: Vec::new(),
                }
            }
            Some(DataSource::Labeled { tsv, .. }) => {
                let ls = if *tsv {
                    read_ucr_tsv(path, Some(&info.class_names))?
                } else {
                    read_ts(path, Some(&info.class_names))?
                };
                let Some(s) = ls.series.get(a.index) else {
                    bail!(
                        "--index {}: {} holds {} series",
                        a.index,
                        path.display(),
                        ls.series.len()
                    );
                };
                let raw: Vec<f32> = s.concat();
                let mut x = raw.clone();
                norm.apply(&mut x);
                ExplainInput {
                    x: Tensor::from_vec(x, &[1, s.len(), s[0].len()])?,
                    display: raw,
                    describe: format!(
                        "series {} of {} (class {})",
                        a.index,
                        file_name(path),
                        ls.labels
                            .get(a.index)
                            .and_then(|&l| ls.class_names.get(l))
                            .map_or("?", |s| s.as_str())
                    ),
                    class_names: info.class_names.clone(),
                }
            }
            _ => {
                if spec.input.len() != 3 {
                    bail!(
                        "this model takes {:?}; give it an input of that kind",
                        spec.input
                    );
                }
                let any = spec.any_size[1..].iter().all(|&v| v);
                let resize = spec.data.as_ref().is_some_and(|d| d.resize);
                let (raw, size) = load_image(path, &spec.input, resize, any)?;
                let mut x = raw.clone();
                norm.apply(&mut x);
                let mut shape = vec![1, spec.input[0]];
                shape.extend(&size);
                ExplainInput {
                    x: Tensor::from_vec(x, &shape)?,
                    display: raw,
                    describe: format!("the image {}", file_name(path)),
                    class_names: info.class_names.clone(),
                }
            }
        }
    };
    let e = explain(&spec, &model, &input)?;
    convnet::io::write_atomic(&a.out, e.html.as_bytes())?;
    match e.predicted {
        Some((k, p)) => println!(
            "wrote {} (prediction: {}, {:.2}%)",
            a.out.display(),
            info.class_names
                .get(k)
                .cloned()
                .unwrap_or_else(|| k.to_string()),
            100.0 * p
        ),
        None => println!("wrote {}", a.out.display()),
    }
    Ok(())
}

/// The input's file name, as the page names it (a full path says where the user keeps files,
/// not what the model saw).
fn file_name(path: &std::path::Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
