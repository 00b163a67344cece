//! The `convnet` command line: one module per subcommand.

mod bench;
mod demo;

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
    #[arg(long, global = true)]
    threads: Option<usize>,
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
    if let Some(t) = cli.threads {
        if t == 0 {
            eprintln!("error: --threads must be at least 1");
            return ExitCode::FAILURE;
        }
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
        Command::Bench { json, filter, reps } => bench::run(json, filter.as_deref(), reps),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed pipe (`convnet ops | head`) is not an error.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_ops() {
    println!("convnet {}", convnet::VERSION);
    for (family, ops) in convnet::ops::OPS {
        println!("{family:>16}: {}", ops.join(", "));
    }
}
