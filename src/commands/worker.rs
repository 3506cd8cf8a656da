//! `parva worker` (hidden): the emulated worker process that `parva serve --backend emulated`
//! starts; it sleeps for the profiled latency of each batch and returns zeros. Its command line is
//! [`parva_proto::worker_args`], the type the spawners build.

use std::process::ExitCode;

use clap::Args;
use parva_proto::worker::{EmulatedWorkerOptions, run_emulated_worker};
use parva_proto::worker_args::{EmulatedArgs, WorkerArgs as CommonArgs};

#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    worker: CommonArgs,
    #[command(flatten)]
    emulated: EmulatedArgs,
    #[command(flatten)]
    job: parva_proto::jobs::JobArgs,
}

pub fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    if args.job.job.is_some() {
        // The emulated best-effort job: a step of a batch takes --exec-ms (its first value).
        let meta = args.worker.model_meta.as_deref().ok_or_else(|| anyhow::anyhow!("--model-meta is required"))?;
        let meta = parva_proto::meta::ModelMeta::read(meta)?;
        let ms = args.emulated.exec_ms.first().copied().unwrap_or(1.0);
        parva_proto::jobs::run_emulated_job(&args.job, &meta.name, args.worker.max_batch, ms).map_err(anyhow::Error::msg)?;
        return Ok(ExitCode::SUCCESS);
    }
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
