//! What runs a model: the worker processes a point needs, and how memory use is read.
//!
//! [`TorchWorkers`] start `parva-worker` (TorchScript on libtorch); [`EmulatedWorkers`] start the
//! emulated worker (`parva worker`), which sleeps for latencies taken from an existing profile
//! table and fakes running out of memory where that table has no measurement: it measures the
//! profiler itself (tests, the sweep benchmark), never a model.

use std::path::{Path, PathBuf};

use parva_core::ModelProfile;
use parva_runner::spawn::WorkerSpec;

use crate::partition::Segment;

/// Builds the worker processes of one (instance, process count).
pub trait WorkerFactory {
    /// `procs` specs for `segment`; sockets and logs go under `run_dir`.
    fn specs(&self, segment: &Segment, procs: u32, run_dir: &Path) -> Result<Vec<WorkerSpec>, String>;
}

fn spec(name: String, program: &Path, mut args: Vec<String>, env: Vec<(String, String)>, run_dir: &Path) -> WorkerSpec {
    let socket = run_dir.join(format!("{name}.sock"));
    args.splice(0..0, ["--socket".to_string(), socket.display().to_string()]);
    WorkerSpec { log: run_dir.join(format!("{name}.log")), name, program: program.to_path_buf(), args, env, socket }
}

/// `parva-worker` processes running a TorchScript file.
#[derive(Debug, Clone)]
pub struct TorchWorkers {
    pub program: PathBuf,
    /// Arguments before `--socket` (none for `parva-worker`).
    pub leading_args: Vec<String>,
    pub model: PathBuf,
    pub model_meta: PathBuf,
    /// `cpu` or `cuda`.
    pub device: String,
    /// Intra-op threads per worker on a CPU; `None`: the cores shared among the workers.
    pub threads: Option<usize>,
}

impl WorkerFactory for TorchWorkers {
    fn specs(&self, segment: &Segment, procs: u32, run_dir: &Path) -> Result<Vec<WorkerSpec>, String> {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let threads = self.threads.unwrap_or((cores / procs.max(1) as usize).max(1));
        Ok((0..procs)
            .map(|i| {
                let mut args = self.leading_args.clone();
                args.extend([
                    "--model-meta".into(),
                    self.model_meta.display().to_string(),
                    "--model".into(),
                    self.model.display().to_string(),
                    "--device".into(),
                    self.device.clone(),
                    // Load and warm up with one row; each batch size gets its own warm-up.
                    "--max-batch".into(),
                    "1".into(),
                ]);
                if self.device == "cpu" {
                    args.extend(["--threads".into(), threads.to_string()]);
                }
                spec(format!("s{}p{procs}w{i}", segment.size), &self.program, args, segment.env.clone(), run_dir)
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
    fn specs(&self, segment: &Segment, procs: u32, run_dir: &Path) -> Result<Vec<WorkerSpec>, String> {
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
        let exec_ms: Vec<String> = (1..=self.max_batch)
            .map(|b| parva_core::profile::interpolate(&curve, b).map_or("0".into(), |s| format!("{:.4}", s * 1e3)))
            .collect();
        let mut env = segment.env.clone();
        if let Some(b) = oom {
            env.push(("PARVA_INJECT_WORKER_OOM_ROWS".into(), b.to_string()));
        }
        Ok((0..procs)
            .map(|i| {
                let args = vec![
                    "--model-meta".into(),
                    self.model_meta.display().to_string(),
                    "--max-batch".into(),
                    "1".into(),
                    "--exec-ms".into(),
                    exec_ms.join(","),
                ];
                let mut s = spec(format!("s{}p{procs}w{i}", segment.size), &self.program, args, env.clone(), run_dir);
                s.args.insert(0, "worker".into());
                s
            })
            .collect())
    }
}

/// Reads how much memory a point uses.
pub trait MemoryProbe {
    /// MiB in use for `segment`'s workers `pids`; `None` when unknown.
    fn used_mib(&mut self, segment: &Segment, pids: &[u32]) -> Option<f64>;
    /// What the `mem_mib` column means with this probe.
    fn describe(&self) -> &'static str;
}

/// On a CPU: the workers' peak resident memory (`VmHWM` of `/proc/<pid>/status`), summed.
#[derive(Debug, Default)]
pub struct HostRss;

impl MemoryProbe for HostRss {
    fn used_mib(&mut self, _segment: &Segment, pids: &[u32]) -> Option<f64> {
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
    fn used_mib(&mut self, _segment: &Segment, _pids: &[u32]) -> Option<f64> {
        None
    }
    fn describe(&self) -> &'static str {
        "not measured"
    }
}

/// On a GPU: memory in use on the instance's device (NVML), MiB.
pub struct NvmlProbe(pub parva_gpu::nvml::NvmlMig);

impl MemoryProbe for NvmlProbe {
    fn used_mib(&mut self, segment: &Segment, _pids: &[u32]) -> Option<f64> {
        self.0.memory_used_mib(segment.device.as_deref()?)
    }
    fn describe(&self) -> &'static str {
        "GPU memory in use on the instance's device (NVML), the highest reading after any round, MiB"
    }
}
