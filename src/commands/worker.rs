//! `parva worker` (hidden): the emulated worker process that `parva serve --backend emulated`
//! starts; it sleeps for the profiled latency of each batch and returns zeros.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use parva_runner::worker::{EmulatedWorkerOptions, run_emulated_worker};

#[derive(Args)]
pub struct WorkerArgs {
    /// The router's socket for this worker.
    #[arg(long)]
    socket: PathBuf,
    /// Model metadata (`models/<name>.json`).
    #[arg(long)]
    model_meta: PathBuf,
    /// Largest batch the worker accepts.
    #[arg(long)]
    max_batch: usize,
    /// Milliseconds per batch of 1, 2, ... rows.
    #[arg(long, value_delimiter = ',')]
    exec_ms: Vec<f64>,
}

pub fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let opts = EmulatedWorkerOptions { socket: args.socket, model_meta: args.model_meta, max_batch: args.max_batch, exec_ms: args.exec_ms };
    run_emulated_worker(&opts)?;
    Ok(ExitCode::SUCCESS)
}
