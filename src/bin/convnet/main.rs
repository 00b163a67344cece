//! The `convnet` command line: one module per subcommand.

mod baseline;
mod bench;
mod demo;
mod eval;
mod explain;
mod forecast;
mod generate;
mod interop;
mod playground;
mod predict;
mod summary;
mod train;

use std::path::PathBuf;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "convnet",
    version,
    about = "Convolutional neural networks: exact to PyTorch, fast on the CPU, explained"
)]
struct Cli {
    /// Worker threads (default: RAYON_NUM_THREADS, else one per core).
    #[arg(long, global = true, value_parser = at_least_one)]
    threads: Option<usize>,
    /// Memory budget (e.g. 4G, 512M): sizes from specs and files beyond it are refused before
    /// anything is allocated (default: 3/4 of the machine's memory).
    #[arg(long, global = true, value_name = "SIZE", value_parser = convnet::limits::parse_size)]
    max_memory: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the library version and every op it provides.
    Ops,
    /// Learn a convolution filter and a small conv+pool+dense classifier on synthetic images.
    Demo {
        /// Seed of the data and the initial weights.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Each layer's output shape (with its arithmetic), parameters, FLOPs and receptive field.
    Summary {
        /// The model spec (TOML).
        spec: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One nearest neighbour with the Euclidean distance on a series classifier's training
    /// and test data: the baseline a trained model should beat.
    Baseline {
        /// The classifier's spec (TOML), with test data.
        spec: PathBuf,
        /// Print JSON instead of a line.
        #[arg(long)]
        json: bool,
    },
    /// Train a model from its spec, writing weights, metrics and curves to a run directory.
    Train {
        /// The spec (TOML); not needed with --resume.
        #[arg(required_unless_present = "resume", conflicts_with = "resume")]
        spec: Option<PathBuf>,
        /// The run directory (default: runs/<spec name>, numbered if taken).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override [train] epochs.
        #[arg(long)]
        epochs: Option<usize>,
        /// Override [train] seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Continue the interrupted run in this directory from its checkpoint.
        #[arg(long, value_name = "DIR")]
        resume: Option<PathBuf>,
        /// With --resume: continue from the checkpoint before the latest (when the latest is
        /// damaged; the error says so).
        #[arg(long)]
        from_previous: bool,
        /// Replace the contents of an existing --out directory.
        #[arg(long)]
        overwrite: bool,
        /// Start from the weights of this run directory (fine-tuning a trained or imported
        /// model; the spec's model must hold the same tensors).
        #[arg(long, value_name = "DIR", conflicts_with = "resume")]
        init_from: Option<PathBuf>,
        /// Evaluate the test data after every epoch too and write it to metrics.csv (a
        /// learning curve against wall time; its time is not counted, and nothing is chosen
        /// by it).
        #[arg(long)]
        test_curve: bool,
    },
    /// Explain a trained model on one input: a self-contained HTML page with every layer's
    /// shape, arithmetic, receptive field and feature maps, filters, Grad-CAM and the output.
    Explain {
        /// The run directory.
        dir: PathBuf,
        /// An image, a series CSV (forecasters) or a .ts/.tsv file (series classifiers); none
        /// for a GAN, whose generator is shown on seeded noise.
        input: Option<PathBuf>,
        /// The page to write.
        #[arg(long, default_value = "report.html")]
        out: PathBuf,
        /// A forecaster: the window ends before this step (default: the series' end).
        #[arg(long)]
        start: Option<usize>,
        /// A .ts/.tsv file: which series.
        #[arg(long, default_value_t = 0)]
        index: usize,
        /// A GAN: the seed of the noise.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Replace an existing --out file.
        #[arg(long)]
        overwrite: bool,
    },
    /// Write the hyperparameter playground: a self-contained HTML page that animates a
    /// kernel over its input and shows the output size with its formula.
    Playground {
        /// The page to write.
        #[arg(long, default_value = "playground.html")]
        out: PathBuf,
        /// Replace an existing --out file.
        #[arg(long)]
        overwrite: bool,
    },
    /// Sample a trained GAN's generator: a PNG grid of images from seeded noise.
    Generate {
        /// The run directory.
        dir: PathBuf,
        /// How many images.
        #[arg(long, default_value_t = 64)]
        count: usize,
        /// The PNG to write.
        #[arg(long, default_value = "samples.png")]
        out: PathBuf,
        /// Seed of the noise.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Images per row.
        #[arg(long, default_value_t = 8)]
        cols: usize,
        /// Replace an existing --out file.
        #[arg(long)]
        overwrite: bool,
    },
    /// Forecast a series with a trained forecaster: CSV and PNG, and errors where the truth is known.
    Forecast {
        /// The run directory.
        dir: PathBuf,
        /// The series (CSV with the columns the model was trained on).
        series: PathBuf,
        /// Steps to forecast.
        #[arg(long)]
        horizon: usize,
        /// The first forecast step (0-based row); the rows before it are the history
        /// (default: after the last row).
        #[arg(long)]
        start: Option<usize>,
        /// Output prefix for PREFIX.csv and PREFIX.png (default: DIR/forecast).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace existing --out files.
        #[arg(long)]
        overwrite: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate a trained run: loss, accuracy, per-class precision and recall, confusion
    /// matrix; for a forecaster, MAE, RMSE, sMAPE and MASE beside naive baselines.
    Eval {
        /// The run directory.
        dir: PathBuf,
        /// `test`, `val`, `train`, or a path (CSV file, folder of class subfolders, IDX images);
        /// a forecaster: `val`, the part of its series after the split (the default).
        #[arg(long)]
        data: Option<String>,
        /// A forecaster: steps to forecast from each origin (default: the model's horizon;
        /// more feeds forecasts back as inputs).
        #[arg(long)]
        horizon: Option<usize>,
        /// Resize the images to SIZE x SIZE first (bilinear): a fully convolutional model's
        /// accuracy at another input size.
        #[arg(long)]
        size: Option<usize>,
        /// Labels of IDX images given with --data.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Also report the top-K accuracy: the true class among the K highest scores.
        #[arg(long, value_name = "K", value_parser = at_least_one)]
        top_k: Option<usize>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Classify images (PNG, JPEG, BMP, GIF, TIFF, WebP) with a trained run.
    Predict {
        /// The run directory.
        dir: PathBuf,
        /// Image files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// How many classes to show per image.
        #[arg(long, default_value_t = 3)]
        top: usize,
        /// Resize images of another size to the model's input.
        #[arg(long)]
        resize: bool,
        /// Print JSON: per file, the top classes with their index and probability.
        #[arg(long)]
        json: bool,
    },
    /// Import an ONNX model (a chain of layers with residual additions) as a run directory
    /// with its spec and weights, which predict, explain, summary and export take (and eval,
    /// once the spec has [data]).
    Import {
        /// The .onnx file.
        model: PathBuf,
        /// The run directory to make (absent or empty).
        #[arg(long)]
        out: PathBuf,
    },
    /// Load a PyTorch state dict (safetensors) into the model a spec describes, as a run
    /// directory that eval, predict, explain and export take. Names are those of the
    /// equivalent nn.Sequential (README: "PyTorch weights").
    ImportWeights {
        /// The spec of the model.
        spec: PathBuf,
        /// The weights: a .safetensors state dict (a GAN's generator).
        weights: PathBuf,
        /// A GAN's discriminator weights.
        #[arg(long, value_name = "FILE")]
        discriminator: Option<PathBuf>,
        /// The run directory to make (absent or empty).
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a run's model for another tool: --onnx FILE, the model as ONNX (a dynamic batch
    /// axis); --torch FILE, its weights as a PyTorch state dict (safetensors) that
    /// load_state_dict(strict=True) of the equivalent nn.Sequential takes.
    Export {
        /// The run directory.
        dir: PathBuf,
        /// The ONNX model to write.
        #[arg(long, value_name = "FILE", required_unless_present = "torch")]
        onnx: Option<PathBuf>,
        /// The ONNX opset (13 to 21; default 17).
        #[arg(long, requires = "onnx", value_parser = clap::value_parser!(i64).range(13..=21))]
        opset: Option<i64>,
        /// The PyTorch state dict to write.
        #[arg(long, value_name = "FILE")]
        torch: Option<PathBuf>,
        /// Replace a FILE that exists (a run's own files are never replaced).
        #[arg(long)]
        overwrite: bool,
    },
    /// Print a shell completion script: `source <(convnet completions bash)`, or save it where
    /// the shell loads completions from.
    Completions {
        /// bash, zsh, fish, powershell or elvish.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `convnet man > convnet.1; man ./convnet.1`.
    Man,
    /// Time the engine's ops on the performance workloads (median ms and GFLOP/s).
    Bench {
        /// Print one JSON object keyed by workload instead of a table.
        #[arg(long)]
        json: bool,
        /// Run only workloads whose name contains this text.
        #[arg(long)]
        filter: Option<String>,
        /// Timed repetitions per workload (the median is reported).
        #[arg(long, default_value_t = 7)]
        reps: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(b) = cli.max_memory {
        convnet::limits::set_budget(b);
    }
    if let Some(t) = cli.threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
        {
            eprintln!("error: cannot set {t} threads: {e}");
            return ExitCode::FAILURE;
        }
    }
    let result = match cli.command {
        Command::Ops => {
            print_ops();
            Ok(())
        }
        Command::Demo { seed } => demo::run(seed),
        Command::Summary { spec, json } => summary::run(&spec, json),
        Command::Baseline { spec, json } => baseline::run(&spec, json),
        Command::Train {
            spec,
            out,
            epochs,
            seed,
            resume,
            from_previous,
            overwrite,
            init_from,
            test_curve,
        } => train::run(train::Args {
            spec,
            out,
            epochs,
            seed,
            resume,
            from_previous,
            overwrite,
            init_from,
            test_curve,
            threads_given: cli.threads.is_some(),
        }),
        Command::Eval {
            dir,
            data,
            labels,
            horizon,
            size,
            top_k,
            json,
        } => eval::run(eval::Args {
            dir,
            data,
            labels,
            horizon,
            size,
            top_k,
            json,
        }),
        Command::Playground { out, overwrite } => playground::run(&out, overwrite),
        Command::Explain {
            dir,
            input,
            out,
            start,
            index,
            seed,
            overwrite,
        } => explain::run(explain::Args {
            dir,
            input,
            out,
            start,
            index,
            seed,
            overwrite,
        }),
        Command::Generate {
            dir,
            count,
            out,
            seed,
            cols,
            overwrite,
        } => generate::run(generate::Args {
            dir,
            count,
            out,
            seed,
            cols,
            overwrite,
        }),
        Command::Forecast {
            dir,
            series,
            horizon,
            start,
            out,
            overwrite,
            json,
        } => forecast::run(forecast::Args {
            dir,
            series,
            horizon,
            start,
            out,
            overwrite,
            json,
        }),
        Command::Predict {
            dir,
            files,
            top,
            resize,
            json,
        } => predict::run(&dir, &files, top, resize, json),
        Command::Bench { json, filter, reps } => bench::run(json, filter.as_deref(), reps),
        Command::Import { model, out } => interop::import(&model, &out),
        Command::ImportWeights {
            spec,
            weights,
            discriminator,
            out,
        } => interop::import_weights(&spec, &weights, discriminator.as_deref(), &out),
        Command::Export {
            dir,
            onnx,
            opset,
            torch,
            overwrite,
        } => interop::export(&dir, onnx.as_deref(), opset, torch.as_deref(), overwrite),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "convnet", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .map_err(Into::into)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // stopped by Ctrl-C with a checkpoint: as a shell reports SIGINT, so `train && eval`
        // stops there
        Err(e) if e.downcast_ref::<train::Interrupted>().is_some() => ExitCode::from(130),
        Err(e) => {
            // A closed pipe (`convnet ops | head`) is not an error.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            // the chain, without repeating a cause the message already states
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                let t = cause.to_string();
                if !msg.contains(&t) {
                    msg.push_str(": ");
                    msg.push_str(&t);
                }
            }
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// `--threads`: a positive count (a usage error, exit 2, otherwise).
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(t) => Ok(t),
        Err(e) => Err(e.to_string()),
    }
}

fn print_ops() {
    println!("convnet {}", convnet::VERSION);
    for (family, ops) in convnet::ops::OPS {
        println!("{family:>16}: {}", ops.join(", "));
    }
}
