//! `parva worker` (hidden): the emulated worker process that `parva serve --backend emulated`
//! starts; it sleeps for the profiled latency of each batch and returns zeros. Its command line is
//! [`parva_runner::worker_args`], the type the spawners build.

use std::process::ExitCode;

use clap::Args;
use parva_runner::worker::{EmulatedWorkerOptions, run_emulated_worker};
use parva_runner::worker_args::{EmulatedArgs, WorkerArgs as CommonArgs};

#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    worker: CommonArgs,
    #[command(flatten)]
    emulated: EmulatedArgs,
}

pub fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let (socket, model_meta) = args.worker.serving()?;
    let opts = EmulatedWorkerOptions {
        socket: socket.clone(),
        model_meta: model_meta.clone(),
        max_batch: args.worker.max_batch,
        exec_ms: args.emulated.exec_ms,
    };
    run_emulated_worker(&opts)?;
    Ok(ExitCode::SUCCESS)
}
