//! `parva doctor`: is this machine ready (for a map)? The checks live in `parva_gpu::doctor`;
//! this file picks the real or fake sources, prints the report and sets the exit code
//! (0 ready, 3 not ready, 1 the doctor itself could not run, e.g. an unreadable map).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use parva_core::DeploymentMap;
use parva_gpu::cuda::{ChildCudaProbe, CudaProbe, ProbeOutput, probe_visible};
use parva_gpu::doctor::{CommandWorkerProbe, Doctor, DoctorReport, MapNeeds, ModelFiles, NodeInfo, Status, fake_cuda_for, find_mps_binary};
use parva_gpu::mps::{MpsControl, RealMps};
use parva_gpu::nvml::NvmlMig;

#[derive(clap::Args)]
pub struct DoctorArgs {
    /// Judge readiness for this deployment map: its GPU type, the GPUs and MIG mode its node
    /// needs, and its models' exported files.
    #[arg(long)]
    map: Option<PathBuf>,
    /// The node of --map this machine is to serve.
    #[arg(long, default_value_t = 0)]
    node: u32,
    /// Exported models (`<dir>/<model>.pt` and `<dir>/<model>.json`).
    #[arg(long, default_value = "models")]
    models: PathBuf,
    /// The backend the deployment will run: `torch` (the default: driver, GPUs, CUDA, MPS, the
    /// torch worker and TorchScript files are checked) or `emulated` (none of those are needed;
    /// with --map, the models' metadata and what `serve` checks before starting, with --prof-data).
    #[arg(long, value_enum, default_value_t = DoctorBackend::Torch)]
    backend: DoctorBackend,
    /// Profile tables of the map's GPU type: the emulated backend sleeps for their latencies.
    #[arg(long, value_name = "DIR")]
    prof_data: Option<PathBuf>,
    /// Fake GPUs instead of NVML and CUDA, e.g. `a100-80gb:2`: for trying the doctor on a machine
    /// without a GPU (the worker and model checks stay real). Also `PARVA_FAKE_GPUS`.
    #[arg(long, value_name = "SPEC")]
    fake_gpus: Option<String>,
    #[command(flatten)]
    catalogue: super::CatalogueFiles,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Internal: probe the CUDA devices this process sees and print them as JSON (the doctor
    /// runs this once per GPU / MIG device with CUDA_VISIBLE_DEVICES set).
    #[arg(long, hide = true, exclusive = true)]
    cuda_probe: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DoctorBackend {
    Torch,
    Emulated,
}

/// How long one device's CUDA probe may take (context creation on a busy GPU can take seconds).
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    if args.cuda_probe {
        super::print_json(&ProbeOutput::from_result(probe_visible()))?;
        return Ok(ExitCode::SUCCESS);
    }
    args.catalogue.load()?;
    let needs = match &args.map {
        Some(path) => Some(map_needs(path, args.node)?),
        None => None,
    };
    let models = needs.as_ref().map(|n| model_files(&n.models, &args.models)).unwrap_or_default();
    if args.backend == DoctorBackend::Emulated {
        let report = emulated(&args, needs, &models)?;
        if args.json {
            super::print_json(&report)?;
        } else {
            print_report(&report)?;
        }
        return Ok(super::exit(report.ready));
    }
    let scratch = std::env::temp_dir().join(format!("parva-doctor-{}", std::process::id()));
    let worker_path = parva_runner::serve::locate_torch_worker(
        std::env::var_os("PARVA_WORKER"),
        std::env::current_exe().ok().as_deref(),
        std::env::var_os("PATH").as_deref(),
    )
    .map_err(|e| match e {
        parva_runner::ServeError::NoWorker { looked } => format!("parva-worker not found ({looked})"),
        other => other.to_string(),
    });
    let mut worker = CommandWorkerProbe { program: worker_path };
    let report = match super::fake_node(args.fake_gpus.as_deref(), None)? {
        Some(fake) => {
            let (spec, mut node, mut mps) = (fake.spec, fake.gpus, fake.mps);
            let mut cuda = fake_cuda_for(&mut node);
            let doctor = Doctor {
                node: Ok(&mut node),
                cuda: &mut cuda,
                mps: &mut mps,
                mps_binary: Ok(PathBuf::from("nvidia-cuda-mps-control (fake)")),
                worker: &mut worker,
                scratch: scratch.clone(),
                needs,
                models,
                fake: true,
            };
            if !args.json {
                eprintln!("using FAKE GPUs ({spec}): NVML, CUDA and MPS are simulated");
            }
            doctor.run()
        }
        None => {
            let mut nvml = NvmlMig::load();
            let node: Result<&mut dyn NodeInfo, _> = match &mut nvml {
                Ok(n) => Ok(n),
                Err(e) => Err(e.clone()),
            };
            let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("parva"));
            let mut cuda = ChildCudaProbe { program, timeout: PROBE_TIMEOUT };
            let mut mps = RealMps::default();
            let mps_binary = find_mps_binary(std::env::var_os("PATH").as_deref());
            if let Ok(bin) = &mps_binary {
                mps.binary = bin.clone();
            }
            let doctor = Doctor {
                node,
                cuda: &mut cuda as &mut dyn CudaProbe,
                mps: &mut mps as &mut dyn MpsControl,
                mps_binary,
                worker: &mut worker,
                scratch: scratch.clone(),
                needs,
                models,
                fake: false,
            };
            doctor.run()
        }
    };
    let _ = std::fs::remove_dir_all(&scratch);
    if args.json {
        super::print_json(&report)?;
    } else {
        print_report(&report)?;
    }
    Ok(super::exit(report.ready))
}

/// `doctor --backend emulated`: no GPU checks; the map's models and serve's own preflight.
fn emulated(args: &DoctorArgs, needs: Option<MapNeeds>, models: &[ModelFiles]) -> anyhow::Result<DoctorReport> {
    let Some(path) = &args.map else {
        anyhow::bail!("doctor --backend emulated checks a deployment: give --map FILE (and --prof-data DIR, the tables the emulated workers sleep by)");
    };
    let preflight = match &args.prof_data {
        None => Err("no --prof-data: the emulated backend sleeps for the profile tables' latencies; give the tables the map was planned on".to_string()),
        Some(prof) => {
            let (map, _) = DeploymentMap::read(path)?;
            let mut opts = parva_runner::ServeOptions::new(map, args.node, args.models.clone(), parva_runner::BackendKind::Emulated);
            opts.prof_data = Some(prof.clone());
            // Port 0: whether a port is free is a question for the moment serve starts.
            opts.listen = "127.0.0.1:0".parse().expect("a literal address");
            parva_runner::serve::preflight(&mut opts)
                .map(|p| format!("node {}: {} worker(s) would start, each with its profiled latencies from {}", p.node, p.workers.len(), prof.display()))
                .map_err(|e| e.to_string())
        }
    };
    Ok(parva_gpu::doctor::emulated_report(needs, models, Some(preflight)))
}

/// The node's GPUs, GPU type and models, from the map.
fn map_needs(path: &Path, node: u32) -> anyhow::Result<MapNeeds> {
    let (map, _) = DeploymentMap::read(path)?;
    let segments: Vec<_> = map.segments.iter().filter(|s| s.node == node).collect();
    if segments.is_empty() {
        let mut nodes: Vec<u32> = map.segments.iter().map(|s| s.node).collect();
        nodes.dedup();
        anyhow::bail!("{}: no segment on node {node} (nodes in the map: {nodes:?}); pass --node", path.display());
    }
    let mut gpus: Vec<u32> = segments.iter().map(|s| s.gpu).collect();
    gpus.sort_unstable();
    gpus.dedup();
    let mut models: Vec<String> = segments.iter().map(|s| s.model.clone()).collect();
    models.sort();
    models.dedup();
    Ok(MapNeeds {
        path: path.display().to_string(),
        gpu_type: map.segments.iter().find_map(|s| s.gpu_type.clone()),
        node,
        gpus,
        models,
    })
}

/// Each model's files, with the metadata read by the serving path's own reader.
fn model_files(models: &[String], dir: &Path) -> Vec<ModelFiles> {
    models
        .iter()
        .map(|m| {
            let meta = dir.join(format!("{m}.json"));
            let meta_problem = if meta.is_file() {
                // The whole chain: the reader's message, then its cause (e.g. the OS error).
                parva_proto::meta::ModelMeta::read(&meta).err().map(|e| format!("{:#}", anyhow::Error::new(e)))
            } else {
                None
            };
            ModelFiles { model: m.clone(), torchscript: dir.join(format!("{m}.pt")), meta, meta_problem }
        })
        .collect()
}

fn print_report(r: &DoctorReport) -> anyhow::Result<()> {
    let width = r.checks.iter().map(|c| c.item.len()).max().unwrap_or(0);
    for c in &r.checks {
        outln!("{:<4}  {:<width$}  {}", c.status.label(), c.item, c.detail)?;
        if let Some(fix) = &c.fix {
            outln!("{:<4}  {:<width$}  fix: {fix}", "", "")?;
        }
    }
    let failed = r.failures().count();
    let warned = r.checks.iter().filter(|c| c.status == Status::Warn).count();
    let what = r.map.as_ref().map_or("this machine".to_string(), |m| format!("this machine, for {m},"));
    if r.ready {
        outln!("{what} is ready ({} checks, {warned} warning(s))", r.checks.len())?;
    } else {
        outln!("{what} is NOT ready: {failed} problem(s) above, each with its fix")?;
    }
    Ok(())
}
