//! `parva doctor`: is this machine ready to profile and serve, and for a given map? Reads, never
//! changes: NVML (driver, GPUs, MIG mode and instances), CUDA (a context on every GPU and MIG
//! device, SMs, free memory, a timed copy), the MPS control binary (a daemon started and quit in a
//! private pipe directory), the torch worker binary and its libtorch, and the exported models a
//! map needs. Every check says OK or what is wrong and the exact command that fixes it.
//!
//! Each source sits behind a narrow trait ([`NodeInfo`] = [`MigControl`] + driver versions,
//! [`CudaProbe`], [`MpsControl`], [`WorkerProbe`]) so the whole doctor runs on fakes in tests.
//! [`Doctor::run`] is pure orchestration over them and returns a [`DoctorReport`]; the CLI prints
//! it and exits 0 when [`DoctorReport::ready`].

use crate::cuda::{CudaDevice, CudaError, CudaProbe, FakeCuda};
use crate::mig::{GpuInfo, MigControl, MigError, mig_device_name};
use crate::mps::{MpsControl, MpsDirs};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The driver facts NVML reports, beside the MIG facts of [`MigControl`].
pub trait NodeInfo: MigControl {
    /// (driver version `570.124.06`, highest CUDA version it supports `12.8`).
    fn driver_versions(&mut self) -> Result<(String, String), MigError>;
    /// Total memory of GPU `gpu`, MiB, when known.
    fn memory_total_mib(&mut self, gpu: u32) -> Option<f64>;
}

impl NodeInfo for crate::nvml::NvmlMig {
    fn driver_versions(&mut self) -> Result<(String, String), MigError> {
        self.versions()
    }
    fn memory_total_mib(&mut self, gpu: u32) -> Option<f64> {
        self.describe(gpu).ok().map(|d| d.memory_total_mib)
    }
}

impl NodeInfo for crate::fake::FakeGpus {
    fn driver_versions(&mut self) -> Result<(String, String), MigError> {
        Ok(("fake".into(), "fake".into()))
    }
    fn memory_total_mib(&mut self, gpu: u32) -> Option<f64> {
        let g = self.gpus().ok()?.into_iter().find(|g| g.index == gpu)?;
        g.gpu_type()?.profiles.iter().map(|p| p.mem_mib).max().map(f64::from)
    }
}

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works, but something a user should know (e.g. MIG disabled on a GPU the map does not use).
    Warn,
    /// Not ready: the fix says what to do.
    Fail,
    /// Not checked, because something it needs failed (said in the detail).
    Skip,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// What was checked: `nvml`, `gpu 0`, `cuda MIG-...`, `mps`, `worker`, `model resnet50`, `map`.
    pub item: String,
    pub status: Status,
    pub detail: String,
    /// The exact command or step that fixes a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Everything the doctor found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DoctorReport {
    pub checks: Vec<Check>,
    /// No check failed: the machine is ready (for the map, when one was given).
    pub ready: bool,
    /// The map the readiness is judged for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map: Option<String>,
}

impl DoctorReport {
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == Status::Fail)
    }
}

/// What `parva-worker --probe` reports.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize)]
pub struct WorkerFacts {
    /// The binary that answered.
    #[serde(default)]
    pub path: String,
    pub version: String,
    /// `libtorch 2.11 (tch 0.24)`.
    pub libtorch: String,
    /// libtorch_cuda.so was loaded, so CUDA kernels are registered.
    pub cuda_registered: bool,
    /// CUDA devices libtorch sees (0 on a CPU-only machine).
    pub cuda_devices: i64,
}

/// Runs the torch worker binary's self-report.
pub trait WorkerProbe {
    fn probe(&mut self) -> Result<WorkerFacts, String>;
}

/// What a deployment map needs of this node.
#[derive(Debug, Clone, PartialEq)]
pub struct MapNeeds {
    /// The map file, for messages.
    pub path: String,
    /// Catalogue id of the map's GPU type (`a100-80gb`).
    pub gpu_type: Option<String>,
    /// Node of the map this machine is to serve.
    pub node: u32,
    /// GPU indices the node's segments use.
    pub gpus: Vec<u32>,
    /// Models the node serves.
    pub models: Vec<String>,
}

/// A model's exported files and whether they read.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFiles {
    pub model: String,
    pub torchscript: PathBuf,
    pub meta: PathBuf,
    /// Why the metadata does not read, if it does not (checked by the caller, who knows the format).
    pub meta_problem: Option<String>,
}

/// The command that exports `model` into `dir`.
pub fn export_command(model: &str, dir: &Path) -> String {
    format!("python3 scripts/export_models.py --out {} {model}", dir.display())
}

/// The command that builds the torch worker.
pub const BUILD_WORKER: &str =
    "eval \"$(scripts/bootstrap --torch)\" && cargo build --release --locked -p parva-worker (or PARVA_WORKER=/path/to/parva-worker)";

/// The doctor's inputs. `node` is `Err(why)` when NVML could not be loaded.
pub struct Doctor<'a> {
    pub node: Result<&'a mut dyn NodeInfo, MigError>,
    pub cuda: &'a mut dyn CudaProbe,
    /// The MPS controller, and the control binary's path (`Err(why)` when it is not installed).
    pub mps: &'a mut dyn MpsControl,
    pub mps_binary: Result<PathBuf, String>,
    pub worker: &'a mut dyn WorkerProbe,
    /// Where the MPS check's private pipe and log directories go.
    pub scratch: PathBuf,
    pub needs: Option<MapNeeds>,
    pub models: Vec<ModelFiles>,
    /// The node is fake GPUs (`--fake-gpus`): a worker without CUDA is then only a warning.
    pub fake: bool,
}

struct Lines(Vec<Check>);

impl Lines {
    fn push(&mut self, item: impl Into<String>, status: Status, detail: impl Into<String>, fix: Option<String>) {
        self.0.push(Check { item: item.into(), status, detail: detail.into(), fix });
    }
}

impl Doctor<'_> {
    /// Runs every check, in order: driver, GPUs, CUDA, MPS, worker, models, map.
    pub fn run(self) -> DoctorReport {
        let Doctor { node, cuda, mps, mps_binary, worker, scratch, needs, models, fake } = self;
        let mut out = Lines(Vec::new());
        // 1. NVML: driver and GPUs.
        let gpus = match node {
            Err(e) => {
                out.push(
                    "nvidia driver",
                    Status::Fail,
                    format!("{e}"),
                    Some("install the NVIDIA driver (nvidia-smi must work); without a GPU, parva can still plan, simulate, \
                          and serve or profile with --backend emulated"
                        .into()),
                );
                None
            }
            Ok(node) => Some(gpu_checks(node, &mut out, needs.as_ref())),
        };
        let no_driver = gpus.is_none();
        // 2. CUDA on every device: each MIG device of a MIG-enabled GPU, else the GPU.
        let targets: Vec<String> = gpus.iter().flatten().flat_map(|(g, migs)| {
            if g.mig.current { migs.clone() } else { vec![g.uuid.clone()] }
        }).collect();
        if no_driver {
            out.push("cuda", Status::Skip, "no NVIDIA driver", None);
        } else if targets.is_empty() {
            out.push("cuda", Status::Skip, "no GPU or MIG device to open a context on", None);
        }
        for t in &targets {
            match cuda.probe(Some(t)) {
                Ok(r) => {
                    for d in &r.devices {
                        let copy = d.copy_gbps.map_or("copy not timed (little free memory)".to_string(), |g| format!("copy {g:.0} GB/s"));
                        out.push(
                            format!("cuda {t}"),
                            Status::Ok,
                            format!("{}: {} SMs, {:.0} of {:.0} MiB free, {copy}, context in {:.0} ms (CUDA {})",
                                d.name, d.sms, d.free_mib, d.total_mib, d.context_ms, r.driver_api),
                            None,
                        );
                    }
                }
                Err(CudaError::NoDriver) => out.push(
                    format!("cuda {t}"),
                    Status::Fail,
                    CudaError::NoDriver.to_string(),
                    Some("install the NVIDIA driver's CUDA library (libcuda.so.1), or add its directory to LD_LIBRARY_PATH".into()),
                ),
                Err(e) => out.push(
                    format!("cuda {t}"),
                    Status::Fail,
                    e.to_string(),
                    Some("check `nvidia-smi`, that no other tenant holds the device in exclusive mode, and the driver log (dmesg)".into()),
                ),
            }
        }
        // 3. MPS: a daemon starts and quits in a private pipe directory.
        match (&mps_binary, targets.first()) {
            (Err(why), _) => out.push(
                "mps",
                Status::Fail,
                why.clone(),
                Some("install the NVIDIA driver's utilities (nvidia-cuda-mps-control: package nvidia-utils-<driver> or the CUDA toolkit)".into()),
            ),
            (Ok(_), None) => out.push("mps", Status::Skip, "no device to start a daemon on", None),
            (Ok(bin), Some(t)) => {
                let dirs = MpsDirs::under(&scratch, &t.replace('/', "_"));
                let res = mps.start(t, &dirs).and_then(|()| mps.stop(t, &dirs));
                match res {
                    Ok(()) => out.push("mps", Status::Ok, format!("{}: a daemon for {t} started and quit in {}", bin.display(), dirs.pipe.display()), None),
                    Err(e) => out.push(
                        "mps",
                        Status::Fail,
                        e.to_string(),
                        Some(format!("see the daemon log in {}", dirs.log.display())),
                    ),
                }
            }
        }
        // 4. The torch worker.
        match worker.probe() {
            Err(why) => out.push("worker", Status::Fail, why, Some(BUILD_WORKER.into())),
            Ok(w) => {
                let cuda_ok = w.cuda_registered && w.cuda_devices > 0;
                let (status, fix) = if cuda_ok || no_driver || fake {
                    (if cuda_ok { Status::Ok } else { Status::Warn }, None)
                } else {
                    (Status::Fail, Some("the worker's libtorch has no CUDA: bootstrap it from the CUDA torch wheel (scripts/bootstrap --torch) or set LIBTORCH to a CUDA libtorch 2.11, then rebuild parva-worker".into()))
                };
                out.push(
                    "worker",
                    status,
                    format!("{} {}: {}, CUDA {} ({} device(s))", w.path, w.version, w.libtorch,
                        if w.cuda_registered { "registered" } else { "not registered" }, w.cuda_devices),
                    fix,
                );
            }
        }
        // 5. The models the map needs.
        model_checks(&mut out, &models, true);
        let ready = !out.0.iter().any(|c| c.status == Status::Fail);
        DoctorReport { checks: out.0, ready, map: needs.map(|n| n.path) }
    }
}

/// One line per model: its metadata reads, and (`torchscript`) its TorchScript file exists.
fn model_checks(out: &mut Lines, models: &[ModelFiles], torchscript: bool) {
    for m in models {
        let export = export_command(&m.model, m.torchscript.parent().unwrap_or(Path::new("models")));
        let item = format!("model {}", m.model);
        if !m.meta.is_file() {
            let fix = if torchscript { export } else { format!("{export} (or --meta-only: the emulated backend needs only the metadata)") };
            out.push(item, Status::Fail, format!("no metadata {}", m.meta.display()), Some(fix));
        } else if let Some(why) = &m.meta_problem {
            out.push(item, Status::Fail, format!("{}: {why}", m.meta.display()), Some(export));
        } else if !torchscript {
            out.push(item, Status::Ok, format!("{} (the emulated backend needs no TorchScript file)", m.meta.display()), None);
        } else if !m.torchscript.is_file() {
            out.push(item, Status::Fail, format!("no TorchScript file {}", m.torchscript.display()), Some(export));
        } else {
            out.push(item, Status::Ok, format!("{} and {}", m.torchscript.display(), m.meta.display()), None);
        }
    }
}

/// The doctor for an emulated deployment (`parva doctor --backend emulated`): workers that sleep
/// for the profiled latencies need no driver, GPU, CUDA, MPS, torch worker or TorchScript file,
/// so those are skipped, not failed. What it needs is checked: each model's metadata, and
/// `preflight` (what `serve` checks before its first worker: the node's segments, the profile
/// points of each, the run directory), `Err(why)` when it would refuse to start.
pub fn emulated_report(needs: Option<MapNeeds>, models: &[ModelFiles], preflight: Option<Result<String, String>>) -> DoctorReport {
    let mut out = Lines(Vec::new());
    out.push("backend", Status::Ok, "emulated: workers sleep for the profiled latencies (no measurement of a GPU)", None);
    for item in ["nvidia driver", "cuda", "mps", "worker"] {
        out.push(item, Status::Skip, "not needed by the emulated backend", None);
    }
    model_checks(&mut out, models, false);
    match preflight {
        Some(Ok(what)) => out.push("serve", Status::Ok, what, None),
        Some(Err(why)) => out.push("serve", Status::Fail, why, Some("`parva serve --backend emulated` checks the same before its first worker and would refuse to start".into())),
        None => {}
    }
    let ready = !out.0.iter().any(|c| c.status == Status::Fail);
    DoctorReport { checks: out.0, ready, map: needs.map(|n| n.path) }
}

/// NVML's lines: driver, one per GPU (type, MIG mode, instances), and the map's needs of them.
/// Returns each GPU with its MIG device names.
fn gpu_checks(node: &mut dyn NodeInfo, out: &mut Lines, needs: Option<&MapNeeds>) -> Vec<(GpuInfo, Vec<String>)> {
    match node.driver_versions() {
        Ok((driver, cuda)) => out.push("nvidia driver", Status::Ok, format!("driver {driver}, CUDA {cuda}"), None),
        Err(e) => out.push("nvidia driver", Status::Fail, e.to_string(), Some("check `nvidia-smi`".into())),
    }
    let gpus = match node.gpus() {
        Ok(g) => g,
        Err(e) => {
            out.push("gpus", Status::Fail, e.to_string(), Some("check `nvidia-smi -L`".into()));
            return vec![];
        }
    };
    if gpus.is_empty() {
        out.push("gpus", Status::Fail, "NVML sees no GPU", Some("check `nvidia-smi -L` and the driver log (dmesg)".into()));
    }
    let mut found = Vec::new();
    for g in gpus {
        let item = format!("gpu {}", g.index);
        let used = needs.is_some_and(|n| n.gpus.contains(&g.index));
        let kind = match g.identify() {
            Ok(t) => t.id.to_string(),
            Err(e) => {
                out.push(&item, if used { Status::Fail } else { Status::Warn }, e.to_string(), None);
                found.push((g, vec![]));
                continue;
            }
        };
        let mut migs = Vec::new();
        let mode = if !g.mig.supported {
            "MIG not supported".to_string()
        } else if g.mig.current {
            match node.instances(g.index) {
                Ok(list) => {
                    let names: Vec<String> = list.iter().map(|i| {
                        let t = g.gpu_type().and_then(|t| t.profile_by_id(i.profile_id)).map_or(format!("GI profile {}", i.profile_id), |p| p.name.to_string());
                        format!("{t}@{}", i.start)
                    }).collect();
                    migs = list.iter().filter_map(|i| i.uuid.as_deref().map(mig_device_name)).collect();
                    format!("MIG on, {} instance(s){}{}", list.len(), if names.is_empty() { "" } else { ": " }, names.join(" "))
                }
                Err(e) => {
                    out.push(&item, Status::Fail, e.to_string(), None);
                    found.push((g, vec![]));
                    continue;
                }
            }
        } else if g.mig.pending {
            "MIG off (on after the next GPU reset)".to_string()
        } else {
            "MIG off".to_string()
        };
        let memory = node.memory_total_mib(g.index).map_or(String::new(), |m| format!(", {:.0} GiB", m / 1024.0));
        let wrong_type = needs.and_then(|n| n.gpu_type.as_deref()).filter(|want| used && *want != kind);
        let (status, fix) = if let Some(want) = wrong_type {
            (Status::Fail, Some(format!("the map is planned for {want}: re-plan for {kind} (parva plan --gpu-type {kind}) or serve it on {want} GPUs")))
        } else if used && !g.mig.current {
            (Status::Fail, Some(format!("enable MIG on GPU {}: sudo nvidia-smi -i {} -mig 1 (drain the GPU first; may need a GPU reset)", g.index, g.index)))
        } else {
            (Status::Ok, None)
        };
        out.push(&item, status, format!("{} [{kind}] {}{memory}, {mode}", g.product(), g.uuid), fix);
        found.push((g, migs));
    }
    if let Some(n) = needs {
        let have: Vec<u32> = found.iter().map(|(g, _)| g.index).collect();
        let missing: Vec<u32> = n.gpus.iter().copied().filter(|i| !have.contains(i)).collect();
        if missing.is_empty() {
            out.push("map", Status::Ok, format!("{}: node {} uses GPU(s) {:?}, all present", n.path, n.node, n.gpus), None);
        } else {
            out.push(
                "map",
                Status::Fail,
                format!("{}: node {} uses GPU(s) {:?}; this machine has {} GPU(s), missing {:?}", n.path, n.node, n.gpus, have.len(), missing),
                Some("serve another node of the map (--node), or re-plan with GPUs per node matching this machine".into()),
            );
        }
    }
    found
}

/// CUDA's view of a fake node: every MIG device with its profile's SMs and memory, every GPU
/// without MIG with its type's full size (what `--fake-gpus` runs the doctor against).
pub fn fake_cuda_for(node: &mut dyn MigControl) -> FakeCuda {
    let mut devices = Vec::new();
    for g in node.gpus().unwrap_or_default() {
        let Some(ty) = g.gpu_type() else { continue };
        let device = |name: String, sms: u16, mem_mib: u32| CudaDevice {
            ordinal: 0,
            name,
            uuid: g.uuid.trim_start_matches("GPU-").to_string(),
            compute_capability: "fake".into(),
            sms: i32::from(sms),
            total_mib: f64::from(mem_mib),
            free_mib: f64::from(mem_mib),
            copy_gbps: None,
            context_ms: 0.0,
        };
        if g.mig.current {
            for i in node.instances(g.index).unwrap_or_default() {
                if let (Some(uuid), Some(p)) = (&i.uuid, ty.profile_by_id(i.profile_id)) {
                    devices.push((mig_device_name(uuid), device(format!("{} MIG {}", g.name, p.name), p.sms, p.mem_mib)));
                }
            }
        } else if let Some(full) = ty.profiles.iter().max_by_key(|p| p.sms) {
            devices.push((g.uuid.clone(), device(g.name.clone(), full.sms, full.mem_mib)));
        }
    }
    FakeCuda { devices: Some(devices), calls: vec![] }
}

/// The MPS control binary: `nvidia-cuda-mps-control` on `PATH`.
pub fn find_mps_binary(path_var: Option<&std::ffi::OsStr>) -> Result<PathBuf, String> {
    find_on_path("nvidia-cuda-mps-control", path_var).ok_or_else(|| "nvidia-cuda-mps-control is not on PATH".to_string())
}

/// The first executable file `name` in the directories of `path_var` (a `PATH` value).
pub fn find_on_path(name: &str, path_var: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path_var?).map(|d| d.join(name)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The real worker probe: `<program> --probe` prints [`WorkerFacts`] as JSON.
pub struct CommandWorkerProbe {
    /// `None`: the worker was not found; the string says where parva looked.
    pub program: Result<PathBuf, String>,
}

impl WorkerProbe for CommandWorkerProbe {
    fn probe(&mut self) -> Result<WorkerFacts, String> {
        let program = self.program.clone()?;
        let out = std::process::Command::new(&program)
            .arg("--probe")
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(format!("{} --probe failed ({}): {}", program.display(), out.status, err.lines().last().unwrap_or("").trim()));
        }
        let mut facts: WorkerFacts = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("{} --probe printed no report ({e}); is it parva's worker, and as new as this parva?", program.display()))?;
        facts.path = program.display().to_string();
        Ok(facts)
    }
}

#[cfg(test)]
#[path = "doctor_tests.rs"]
mod tests;
