//! What runs a model: the worker processes a point needs, and how memory use is read.
//!
//! [`TorchWorkers`] start `parva-worker` (TorchScript on libtorch); [`EmulatedWorkers`] start the
//! emulated worker (`parva worker`), which sleeps for latencies taken from an existing profile
//! table and fakes running out of memory where that table has no measurement: it measures the
//! profiler itself (tests, the sweep benchmark), never a model.

use std::path::{Path, PathBuf};

use parva_core::ModelProfile;
use parva_runner::spawn::WorkerSpec;
use parva_proto::worker_args::{Backend, EmulatedArgs, TorchArgs, WorkerArgs};

use crate::partition::Instance;

/// Builds the worker processes of one (instance, process count).
pub trait WorkerFactory {
    /// `procs` specs for `segment`; sockets and logs go under `run_dir`.
    fn specs(&self, segment: &Instance, procs: u32, run_dir: &Path) -> Result<Vec<WorkerSpec>, String>;
}

/// A worker's spec: `leading` arguments, then the command line [`WorkerArgs`] builds (the one the
/// worker binaries parse), with its socket and log under `run_dir`.
fn spec(
    name: String,
    program: &Path,
    mut leading: Vec<String>,
    worker: (&Path, usize, &Backend),
    env: Vec<(String, String)>,
    run_dir: &Path,
) -> WorkerSpec {
    let socket = run_dir.join(format!("{name}.sock"));
    let (model_meta, max_batch, backend) = worker;
    leading.extend(WorkerArgs::new(socket.clone(), model_meta.to_path_buf(), max_batch).to_args(backend));
    WorkerSpec { log: run_dir.join(format!("{name}.log")), name, program: program.to_path_buf(), args: leading, env, socket }
}

/// `parva-worker` processes running a TorchScript file.
#[derive(Debug, Clone)]
pub struct TorchWorkers {
    pub program: PathBuf,
    /// Arguments before `--socket` (none for `parva-worker`).
    pub leading_args: Vec<String>,
    pub model: PathBuf,
    pub model_meta: PathBuf,
    pub device: parva_runner::Device,
    /// Intra-op threads per worker on a CPU; `None`: the cores shared among the workers.
    pub threads: Option<usize>,
}

impl WorkerFactory for TorchWorkers {
    fn specs(&self, segment: &Instance, procs: u32, run_dir: &Path) -> Result<Vec<WorkerSpec>, String> {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let threads = self.threads.unwrap_or((cores / procs.max(1) as usize).max(1));
        Ok((0..procs)
            .map(|i| {
                let backend = Backend::Torch(TorchArgs {
                    model: Some(self.model.clone()),
                    device: self.device.into(),
                    threads: (self.device == parva_runner::Device::Cpu).then_some(threads),
                });
                // Load and warm up with one row; each batch size gets its own warm-up.
                let worker = (self.model_meta.as_path(), 1, &backend);
                spec(format!("s{}p{procs}w{i}", segment.size), &self.program, self.leading_args.clone(), worker, segment.env.clone(), run_dir)
            })
            .collect())
    }
}

/// Emulated workers replaying `table`'s latencies.
#[derive(Debug, Clone)]
pub struct EmulatedWorkers {
    /// The `parva` executable.
    pub program: PathBuf,
    pub model_meta: PathBuf,
    pub table: ModelProfile,
    /// Largest batch the sweep asks for.
    pub max_batch: u32,
}

impl WorkerFactory for EmulatedWorkers {
    fn specs(&self, segment: &Instance, procs: u32, run_dir: &Path) -> Result<Vec<WorkerSpec>, String> {
        let curve = self.table.latency_curve(segment.size, procs);
        if curve.is_empty() {
            return Err(format!(
                "the emulated table of {} has no measured point at size {} with {procs} processes",
                self.table.model, segment.size
            ));
        }
        // Out of memory from the first batch the table has a row for but no measurement.
        let oom = self
            .table
            .points
            .iter()
            .filter(|p| p.size == segment.size && p.procs == procs && !p.is_measured())
            .map(|p| p.batch)
            .min();
        let exec_ms: Vec<f64> =
            (1..=self.max_batch).map(|b| parva_core::profile::interpolate(&curve, b).map_or(0.0, |s| s * 1e3)).collect();
        let backend = Backend::Emulated(EmulatedArgs { exec_ms });
        let mut env = segment.env.clone();
        if let Some(b) = oom {
            env.push(("PARVA_INJECT_WORKER_OOM_ROWS".into(), b.to_string()));
        }
        Ok((0..procs)
            .map(|i| {
                let worker = (self.model_meta.as_path(), 1, &backend);
                spec(format!("s{}p{procs}w{i}", segment.size), &self.program, vec!["worker".into()], worker, env.clone(), run_dir)
            })
            .collect())
    }
}

/// Reads how much memory a point uses.
pub trait MemoryProbe {
    /// MiB in use for `segment`'s workers `pids`; `None` when unknown.
    fn used_mib(&mut self, segment: &Instance, pids: &[u32]) -> Option<f64>;
    /// What the `mem_mib` column means with this probe.
    fn describe(&self) -> &'static str;
}

/// On a CPU: the workers' peak resident memory (`VmHWM` of `/proc/<pid>/status`), summed.
#[derive(Debug, Default)]
pub struct HostRss;

impl MemoryProbe for HostRss {
    fn used_mib(&mut self, _segment: &Instance, pids: &[u32]) -> Option<f64> {
        let mut total = 0.0;
        for pid in pids {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let kb: f64 = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
            total += kb / 1024.0;
        }
        (!pids.is_empty()).then_some(total)
    }
    fn describe(&self) -> &'static str {
        "peak resident memory of the worker processes (VmHWM), summed, MiB"
    }
}

/// No memory reading.
#[derive(Debug, Default)]
pub struct NoProbe;

impl MemoryProbe for NoProbe {
    fn used_mib(&mut self, _segment: &Instance, _pids: &[u32]) -> Option<f64> {
        None
    }
    fn describe(&self) -> &'static str {
        "not measured"
    }
}

/// On a GPU: memory in use on the instance's device (NVML), MiB.
pub struct NvmlProbe(pub parva_gpu::nvml::NvmlMig);

impl MemoryProbe for NvmlProbe {
    fn used_mib(&mut self, segment: &Instance, _pids: &[u32]) -> Option<f64> {
        self.0.memory_used_mib(segment.device.as_deref()?)
    }
    fn describe(&self) -> &'static str {
        "GPU memory in use on the instance's device (NVML), the highest reading after any round, MiB"
    }
}
