//! `parva-worker`: one TorchScript inference worker process (the only binary linking libtorch).
//!
//! Started by `parva serve --backend torch` with `--socket`: connects to the router, loads the
//! model on the device, warms up with two batches of `--max-batch` zero rows, reports ready and
//! serves batches (see `parva_proto::frame`). With `--bench ITERS` instead, it times a bare tch
//! loop over batches of `--max-batch` rows and prints samples/s (the benchmark's baseline). With
//! `--job train|batch --checkpoint DIR`, it runs a best-effort job instead (see `job`).

use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use parva_proto::meta::ModelMeta;
use parva_proto::worker::{Executor, WorkerIdentity, run_worker};
use parva_proto::worker_args::{DeviceArg, TorchArgs, WorkerArgs};

mod exec;
mod job;

#[derive(Parser)]
#[command(name = "parva-worker", version, about = "parva's TorchScript inference worker")]
struct Args {
    /// The command line the router and the profiler build (parva_proto::worker_args).
    #[command(flatten)]
    worker: WorkerArgs,
    #[command(flatten)]
    torch: TorchArgs,
    #[command(flatten)]
    job: parva_proto::jobs::JobArgs,
    /// Benchmark mode: run ITERS batches of --max-batch rows in a bare loop and print samples/s.
    #[arg(long)]
    bench: Option<usize>,
    /// Print what this worker runs on as JSON (version, libtorch, whether CUDA registered and how
    /// many devices it sees) and exit: what `parva doctor` reads.
    #[arg(long, exclusive = true)]
    probe: bool,
}

/// Load libtorch_cuda.so so that CUDA registers: torch-sys links with --as-needed, which drops it.
/// On a machine without CUDA this fails quietly and the worker runs on CPU only.
fn register_cuda() -> bool {
    let mut names = vec!["libtorch_cuda.so".to_string()];
    if let Some(dir) = option_env!("PARVA_LIBTORCH_LIB") {
        names.push(format!("{dir}/libtorch_cuda.so"));
    }
    names.iter().any(|name| {
        let Ok(c) = std::ffi::CString::new(name.as_str()) else { return false };
        // SAFETY: dlopen with a valid NUL-terminated path; the handle is kept for the process's life.
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        !handle.is_null()
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    parva_proto::log::init("parva_worker=info,parva_proto=info");
    let cuda_lib = register_cuda();
    if args.probe {
        let cuda_devices = if cuda_lib { tch::Cuda::device_count() } else { 0 };
        println!(
            "{{\"version\":\"{}\",\"libtorch\":\"libtorch 2.11 (tch 0.24)\",\"cuda_registered\":{cuda_lib},\"cuda_devices\":{cuda_devices}}}",
            env!("CARGO_PKG_VERSION")
        );
        return Ok(());
    }
    let (Some(model_meta), Some(model)) = (args.worker.model_meta.as_ref(), args.torch.model.as_ref()) else {
        anyhow::bail!("--model and --model-meta are required");
    };
    let device = match args.torch.device {
        DeviceArg::Cpu => tch::Device::Cpu,
        DeviceArg::Cuda => tch::Device::Cuda(0),
    };
    if let Some(n) = args.torch.threads {
        tch::set_num_threads(n.clamp(1, i32::MAX as usize) as i32);
        tch::set_num_interop_threads(1);
    }
    tracing::info!(cuda_lib, cuda = tch::Cuda::is_available(), ?device, "starting");
    let meta = ModelMeta::read(model_meta)?;
    let load = || -> Result<exec::TorchExecutor, String> {
        if device != tch::Device::Cpu && !tch::Cuda::is_available() {
            return Err(format!("--device cuda but CUDA is not available (libtorch_cuda loaded: {cuda_lib})"));
        }
        exec::TorchExecutor::load(model, device, meta.clone())
    };
    if let Some(mode) = args.job.job {
        if args.bench.is_some() {
            anyhow::bail!("--job and --bench are different modes; give one");
        }
        if device != tch::Device::Cpu && !tch::Cuda::is_available() {
            anyhow::bail!("--device cuda but CUDA is not available (libtorch_cuda loaded: {cuda_lib})");
        }
        return job::run(&args.job, mode.into(), model, &meta, args.worker.max_batch, device).map_err(anyhow::Error::msg);
    }
    if let Some(iters) = args.bench {
        let mut ex = load().map_err(anyhow::Error::msg)?;
        let rows = args.worker.max_batch.max(1);
        let inputs = meta.zero_inputs(rows);
        for _ in 0..3 {
            ex.execute(inputs.clone()).map_err(anyhow::Error::msg)?;
        }
        let t0 = Instant::now();
        for _ in 0..iters {
            ex.execute(inputs.clone()).map_err(anyhow::Error::msg)?;
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "{{\"model\":\"{}\",\"batch\":{rows},\"iters\":{iters},\"seconds\":{secs:.3},\"samples_per_s\":{:.3}}}",
            meta.name,
            (iters * rows) as f64 / secs
        );
        return Ok(());
    }
    let socket = args.worker.socket.clone().context("--socket is required")?;
    let runtime = if tch::Cuda::is_available() {
        format!("libtorch 2.11 (tch 0.24), cudart {}, cudnn {}", tch::utils::version_cudart(), tch::utils::version_cudnn())
    } else {
        "libtorch 2.11 (tch 0.24), cpu".to_string()
    };
    let identity = WorkerIdentity { backend: "torch".into(), device: format!("{device:?}"), runtime };
    run_worker(&socket, &identity, &meta, args.worker.max_batch, load)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Args::command().debug_assert();
    }
}
