//! `parva profile`: measure a model's profile table (instance size x batch x MPS processes) on
//! a GPU — MIG instances (`--partition mig`), SM shares under MPS (`mps`) or the device as it is
//! (`none`, e.g. a CPU) — writing one row per point as it goes (see `parva-profiler`).
//!
//! Fake GPUs for tests without a GPU: `--fake-gpus a100-80gb:1` (or `PARVA_FAKE_GPUS`) keeps the
//! fake node's state in `<run-dir>/fake-gpus.json`; MPS daemons are faked with marker files.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use parva_core::mig::GpuType;
use parva_gpu::mig::MigControl;
use parva_gpu::mps::{MpsControl, RealMps};
use parva_gpu::nvml::{GpuDescription, NvmlMig};
use parva_profiler::grid::Point;
use parva_profiler::meta::{Host, Metadata, RunStatus, utc_now};
use parva_profiler::partition::{AsIs, Mode, MigPartitioner, MpsPartitioner, Partitioner};
use parva_profiler::prune::PruneRules;
use parva_profiler::stats::MeasureSettings;
use parva_profiler::sweep::{Observer, Summary, Sweep};
use parva_profiler::request::{Invalid, Request, series};
use parva_profiler::table::{Done, Outcome, Table};
use parva_profiler::ProfileError;
use parva_profiler::workers::{HostRss, MemoryProbe, NoProbe, NvmlProbe};
use parva_runner::{BackendKind, Device};
use parva_runner::spawn::ProcessSpawner;

use super::serve::{say, shutdown_signal};
use super::{BackendArg, DeviceArg};

#[path = "profile_pairs.rs"]
mod pairs;

#[derive(Args, Clone)]
pub struct ProfileArgs {
    /// The model: a TorchScript file (`models/resnet50.pt`) with its metadata beside it
    /// (`models/resnet50.json`). The table is named after the file (`resnet50.csv`).
    #[arg(long)]
    model: PathBuf,
    /// NVML index of the GPU to profile on.
    #[arg(long = "gpu-index", alias = "gpu", value_name = "INDEX", default_value_t = 0)]
    gpu: u32,
    /// Instance sizes in GPCs (default: every MIG size of the GPU type; `7` with --partition
    /// none, where the size is only the label written in the table).
    #[arg(long, value_delimiter = ',', conflicts_with = "shares")]
    sizes: Vec<u8>,
    /// MPS shares in percent of the GPU's SMs, in 10 % steps (e.g. 20,40,50,60,80,100), for a GPU
    /// without MIG: needs --partition mps; the table is keyed by share (`MPS share` column). The
    /// GPU type is an MPS one (`parva catalogue`: v100-16gb, l4-24gb, ...); a MIG GPU is profiled
    /// as its `-nomig` type (h100-80gb-nomig). Default for an MPS type: 20,40,50,60,80,100.
    #[arg(long, value_delimiter = ',')]
    shares: Vec<u8>,
    /// Batch sizes (default 1,2,4,...,128).
    #[arg(long, value_delimiter = ',')]
    batches: Vec<u32>,
    /// MPS process counts per instance.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    procs: Vec<u32>,
    /// mig: a MIG instance per size (MIG mode must be on; parva never changes it); mps: the whole
    /// GPU under one MPS daemon, SMs capped at size/7 per worker (memory not partitioned); none:
    /// the device as it is.
    #[arg(long, value_enum, default_value_t = PartitionArg::Mig)]
    partition: PartitionArg,
    /// Where the workers run with --partition none (default: cuda when NVML sees a GPU, else
    /// cpu); mig and mps are always cuda.
    #[arg(long, value_enum)]
    device: Option<DeviceArg>,
    /// Output directory (default prof_data/<gpu-type> for mig, prof_data/<gpu-type>-mps for mps,
    /// prof_data/<gpu-type>-none or prof_data/cpu for none). Re-running into it resumes.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Skip the larger batches of a (size, processes) once its mean batch latency exceeds this.
    #[arg(long)]
    max_latency_ms: Option<f64>,
    /// Least measuring time per point, seconds.
    #[arg(long, default_value_t = 2.0)]
    min_seconds: f64,
    /// Time cap per point, seconds (the point is recorded with the interval reached).
    #[arg(long, default_value_t = 30.0)]
    max_seconds: f64,
    /// Warm-up per point, seconds (at least one batch per worker).
    #[arg(long, default_value_t = 1.0)]
    warmup_seconds: f64,
    /// Stop a point when the 95% confidence interval of its throughput is within this fraction
    /// of the mean.
    #[arg(long, default_value_t = 0.02)]
    target_ci: f64,
    /// Also skip dominated points (batches past the throughput plateau; after an out-of-memory
    /// batch, that batch and larger with more processes); each skip is noted in the table.
    #[arg(long)]
    fast: bool,
    /// torch: TorchScript workers; emulated: replay the latencies of --emulate-from's table
    /// (tests and benchmarks of the sweep itself; not a measurement).
    #[arg(long, value_enum, default_value_t = BackendArg::Torch)]
    backend: BackendArg,
    /// Profile tables replayed by --backend emulated.
    #[arg(long)]
    emulate_from: Option<PathBuf>,
    /// GPU type when it cannot be recognised from the GPU's name (see `parva catalogue`).
    #[arg(long)]
    gpu_type: Option<String>,
    /// Intra-op threads per worker on a CPU (default: cores / processes).
    #[arg(long)]
    threads: Option<usize>,
    /// Worker sockets and logs, MPS pipe and log directories (default: a new temp directory).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// How long workers may take to start and load the model, seconds.
    #[arg(long, default_value_t = 600)]
    ready_timeout: u64,
    /// Print the summary as JSON on stdout (no progress bar).
    #[arg(long)]
    json: bool,
    /// For machines without a GPU (trying the sweep out, tests): a fake node of COUNT GPUs of TYPE
    /// instead of NVML, with fake MPS daemons; its state is kept in <run-dir>/fake-gpus.json.
    /// Also PARVA_FAKE_GPUS=TYPE:COUNT.
    #[arg(long, value_name = "TYPE:COUNT")]
    fake_gpus: Option<String>,
    #[command(flatten)]
    catalogue: super::CatalogueFiles,
    /// Run a best-effort job beside every point: `train:MODEL` or `batch:MODEL` (its files beside
    /// --model's), on the SMs the point leaves under the same MPS daemon (--partition mps or none;
    /// MIG isolates instances). The table then holds latencies under its interference, for plans
    /// that put jobs next to MPS shares; the metadata says so.
    #[arg(long, value_name = "KIND:MODEL")]
    background: Option<String>,
    /// Batch of the --background job's steps.
    #[arg(long, default_value_t = 32, requires = "background")]
    background_batch: u32,
    /// Also measure interference (MPS shares, --partition mps): after the sweep, sweep again
    /// (one process per share, every share below 100 %) beside each of these models running flat
    /// out on the rest of the GPU (`batch:MODEL`, files beside --model's), and record each share's
    /// slowdown (the median over batch sizes of latency beside / alone) in
    /// `<out>/interference.csv`, which `plan`, `simulate` and `verify` use instead of the
    /// --interference margin.
    #[arg(long, value_delimiter = ',', value_name = "MODEL,...", conflicts_with = "background")]
    pairs: Vec<String>,
    /// Say nothing on stdout (the sweeps of --pairs).
    #[arg(skip)]
    quiet: bool,
}

/// `--background KIND:MODEL`.
fn parse_background(v: &str) -> anyhow::Result<(parva_core::jobs::JobKind, String)> {
    let (kind, model) = v.split_once(':').ok_or_else(|| anyhow::anyhow!("--background must be KIND:MODEL (train:bert, batch:resnet50); got {v:?}"))?;
    let kind = parva_core::jobs::JobKind::parse(kind).ok_or_else(|| anyhow::anyhow!("--background: kind must be train or batch; got {kind:?}"))?;
    if model.is_empty() || model.contains('/') {
        anyhow::bail!("--background: MODEL must be a model name (its .json and .pt beside --model's); got {model:?}");
    }
    Ok((kind, model.to_string()))
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PartitionArg {
    Mig,
    Mps,
    None,
}

impl PartitionArg {
    fn mode(self) -> Mode {
        match self {
            PartitionArg::Mig => Mode::Mig,
            PartitionArg::Mps => Mode::Mps,
            PartitionArg::None => Mode::None,
        }
    }
}

/// The GPU side: NVML (or fake GPUs), MPS control, and what they say about the GPU.
struct Gpu {
    mig: Box<dyn MigControl>,
    mps: Box<dyn MpsControl>,
    description: GpuDescription,
    gpu_type: &'static GpuType,
    fake: bool,
}

fn open_gpu(args: &ProfileArgs, run_dir: &Path) -> anyhow::Result<Gpu> {
    let fake = super::fake_node(args.fake_gpus.as_deref(), Some(&run_dir.join("fake-gpus.json")))?;
    let spec = fake.as_ref().map(|f| f.spec.clone());
    let (mut mig, mps, description): (Box<dyn MigControl>, Box<dyn MpsControl>, Option<GpuDescription>) = match fake {
        Some(f) => (Box::new(f.gpus), Box::new(f.mps), None),
        None => {
            let nvml = NvmlMig::load()?;
            let d = nvml.describe(args.gpu)?;
            (Box::new(nvml), Box::new(RealMps::default()), Some(d))
        }
    };
    let info = mig
        .gpus()?
        .into_iter()
        .find(|g| g.index == args.gpu)
        .with_context(|| format!("--gpu-index {}: no such GPU on this node", args.gpu))?;
    if args.gpu_type.is_none() {
        for note in super::learn_unknown_gpus(mig.as_mut(), Some(args.gpu))? {
            eprintln!("note: {note}");
        }
    }
    let gpu_type = match &args.gpu_type {
        Some(id) => GpuType::by_id(id)?,
        None => info.identify().map_err(|e| {
            anyhow::anyhow!("GPU {}: {e}; name its type with --gpu-type (see `parva catalogue`)", args.gpu)
        })?,
    };
    // Shares of a MIG GPU used without MIG: its `-nomig` type.
    let gpu_type = match (args.shares.is_empty(), gpu_type.is_mps(), &args.gpu_type) {
        (false, false, None) => gpu_type
            .nomig()
            .ok_or_else(|| anyhow::anyhow!("--shares: GPU {} is a {}, which has no MPS type without MIG; name one with --gpu-type", args.gpu, gpu_type.id))?,
        _ => gpu_type,
    };
    check_shares_for(args, gpu_type)?;
    let description = description.unwrap_or(GpuDescription {
        index: info.index,
        uuid: info.uuid.clone(),
        name: format!("{} (FAKE)", info.name),
        driver: "fake".into(),
        cuda_driver: "fake".into(),
        memory_total_mib: 0.0,
    });
    Ok(Gpu { mig, mps, description, gpu_type, fake: spec.is_some() })
}

/// --shares and --sizes against the GPU type: shares for an MPS type, sizes for a MIG one.
fn check_shares_for(args: &ProfileArgs, gpu_type: &GpuType) -> anyhow::Result<()> {
    if !args.shares.is_empty() && !gpu_type.is_mps() {
        anyhow::bail!("--shares: {} is cut by MIG; name its MPS type with --gpu-type (e.g. {}-nomig), or profile MIG sizes with --sizes", gpu_type.id, gpu_type.id);
    }
    if !args.sizes.is_empty() && gpu_type.is_mps() && args.partition != PartitionArg::None {
        anyhow::bail!("--sizes: {} has no MIG (an MPS type): give its shares in percent with --shares", gpu_type.id);
    }
    Ok(())
}

/// --shares in share units, each a multiple of the share step up to 100 %.
fn share_units(shares: &[u8]) -> anyhow::Result<Vec<u8>> {
    use parva_core::mig::MPS_SHARE_STEP;
    shares
        .iter()
        .map(|&s| {
            if s == 0 || s > 100 || s % MPS_SHARE_STEP != 0 {
                anyhow::bail!("--shares: {s} is not a share parva plans (10, 20, ..., 100: percent of the SMs in {MPS_SHARE_STEP} % steps)");
            }
            Ok(s / MPS_SHARE_STEP)
        })
        .collect()
}

/// The library request the flags make (settings checked there).
fn request(args: &ProfileArgs) -> anyhow::Result<Request> {
    if !args.shares.is_empty() && args.partition != PartitionArg::Mps {
        anyhow::bail!("--shares needs --partition mps (shares are MPS's active-thread percentage)");
    }
    Ok(Request {
        model: args.model.clone(),
        mode: args.partition.mode(),
        device: args.device.map(Into::into),
        sizes: if args.shares.is_empty() { args.sizes.clone() } else { share_units(&args.shares)? },
        batches: args.batches.clone(),
        procs: args.procs.clone(),
        out: args.out.clone(),
        measure: MeasureSettings {
            warmup_seconds: args.warmup_seconds,
            min_seconds: args.min_seconds,
            max_seconds: args.max_seconds,
            target_ci: args.target_ci,
        },
        rules: PruneRules { max_latency_s: args.max_latency_ms.map(|ms| ms / 1e3), fast: args.fast },
        backend: args.backend.into(),
        emulate_from: args.emulate_from.clone(),
        threads: args.threads,
        ready_timeout: Duration::from_secs(args.ready_timeout),
    })
}

/// A request's refusal in the command's words: each field is the flag of the same name.
fn flag_error(e: Invalid) -> anyhow::Error {
    let Invalid { field, value, rule } = e;
    let flag = format!("--{}", field.replace('_', "-"));
    match (field, value.as_str()) {
        ("grid", _) => anyhow::anyhow!("{rule}"),
        ("emulate_from", "(none)") => anyhow::anyhow!("--backend emulated needs --emulate-from DIR (the tables it replays)"),
        ("emulate_from", _) => anyhow::anyhow!("--emulate-from is for --backend emulated"),
        ("out", "(none)") => anyhow::anyhow!("--backend emulated needs --out: an emulated table is not a measurement"),
        ("device", v) => anyhow::anyhow!("--device {v} needs --partition none (mig and mps partition a GPU)"),
        ("max_seconds", v) if rule.starts_with("is below") => {
            anyhow::anyhow!("--max-seconds {v} {}", rule.replace("min_seconds", "--min-seconds"))
        }
        ("sizes", v) => anyhow::anyhow!("--sizes: {v} {rule}"),
        (_, v) => anyhow::anyhow!("{flag} {v}: {rule}"),
    }
}

/// What the sweep runs on: for mig and mps the GPU (NVML or fakes); the workers' device; what is
/// known of the GPU.
struct Setup {
    gpu: Option<Gpu>,
    /// NVML for `--partition none` on a GPU (memory readings).
    nvml: Option<NvmlMig>,
    device: Device,
    description: Option<GpuDescription>,
    gpu_type: Option<&'static GpuType>,
}

fn resolve_target(args: &ProfileArgs, mode: Mode, run_dir: &Path) -> anyhow::Result<Setup> {
    let gpu = match mode {
        Mode::None => None,
        Mode::Mig | Mode::Mps => Some(open_gpu(args, run_dir)?),
    };
    let nvml = match (mode, args.device) {
        (Mode::None, None | Some(DeviceArg::Cuda)) => NvmlMig::load().ok().and_then(|n| n.describe(args.gpu).ok().map(|d| (n, d))),
        _ => None,
    };
    let device = match (mode, args.device) {
        (Mode::None, None) if nvml.is_some() => Device::Cuda,
        (Mode::None, None) | (_, Some(DeviceArg::Cpu)) => Device::Cpu,
        _ => Device::Cuda,
    };
    let description = gpu.as_ref().map(|g| g.description.clone()).or_else(|| nvml.as_ref().map(|(_, d)| d.clone()));
    let gpu_type = gpu.as_ref().map(|g| g.gpu_type).or_else(|| {
        args.gpu_type.as_deref().and_then(|t| GpuType::by_id(t).ok()).or_else(|| description.as_ref().and_then(|d| GpuType::by_product_name(&d.name)))
    });
    Ok(Setup { gpu, nvml: nvml.map(|(n, _)| n), device, description, gpu_type })
}

/// How memory is read: workers' peak RSS on a CPU, NVML on a real GPU, nothing on fake GPUs.
fn memory_probe(target: &mut Setup) -> Box<dyn MemoryProbe> {
    if target.device == Device::Cpu {
        return Box::new(HostRss);
    }
    if target.gpu.as_ref().is_some_and(|g| g.fake) {
        return Box::new(NoProbe);
    }
    match target.nvml.take().map(Ok).unwrap_or_else(NvmlMig::load) {
        Ok(n) => Box::new(NvmlProbe(n)),
        Err(_) => Box::new(NoProbe),
    }
}

pub fn run(args: ProfileArgs) -> anyhow::Result<ExitCode> {
    if args.pairs.is_empty() {
        return sweep(&args).map(|(code, _)| code);
    }
    pairs::run(&args)
}

/// One sweep; the exit code and the table it wrote.
fn sweep(args: &ProfileArgs) -> anyhow::Result<(ExitCode, PathBuf)> {
    let req = request(args)?;
    req.check().map_err(flag_error)?;
    args.catalogue.load()?;
    let files = req.model_files().map_err(|e| anyhow::anyhow!("--{e}"))?;
    let (pt, model) = (files.pt.clone(), files.name.clone());
    let background = match &args.background {
        Some(v) => {
            let (kind, bg_model) = parse_background(v)?;
            if args.partition == PartitionArg::Mig {
                anyhow::bail!("--background needs --partition mps or none: MIG instances are isolated, a job beside one does not share its SMs");
            }
            let models_dir = pt.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
            let meta = models_dir.join(format!("{bg_model}.json"));
            if !meta.is_file() {
                anyhow::bail!("--background {v}: no metadata {} beside --model", meta.display());
            }
            Some((kind, bg_model, models_dir))
        }
        None => None,
    };
    let run_dir = match &args.run_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("parva-profile-{}", std::process::id())),
    };
    std::fs::create_dir_all(&run_dir).with_context(|| format!("create run directory {}", run_dir.display()))?;
    // Absolute: MPS pipe directories are handed to daemons and workers.
    let run_dir = std::path::absolute(&run_dir).with_context(|| format!("resolve {}", run_dir.display()))?;
    let mode = args.partition.mode();
    let mut target = resolve_target(args, mode, &run_dir)?;
    let (device, gpu_type) = (target.device, target.gpu_type);
    let description = target.description.clone();
    let out = req.out_dir(gpu_type, device);
    let grid = req.grid(gpu_type).map_err(flag_error)?;
    // Open (and check) the table before changing anything on the GPU.
    let table_path = out.join(format!("{model}.csv"));
    let share_keyed = mode == Mode::Mps && gpu_type.is_some_and(GpuType::is_mps);
    let mut table = Table::open_keyed(&table_path, &model, mode.name(), share_keyed)?;
    let (measure, rules) = (req.measure, req.rules);
    let emulator = std::env::current_exe().context("find the running executable")?;
    let torch_worker = || parva_runner::serve::default_worker_command(BackendKind::Torch).map_err(|e| ProfileError::Config(e.to_string()));
    let factory = req.workers(&files, device, *grid.batches.last().unwrap_or(&1), torch_worker, &emulator)?;
    let mut probe = memory_probe(&mut target);

    let mut metadata = Metadata {
        model: model.clone(),
        model_file: if args.backend == BackendArg::Torch { pt.clone() } else { args.emulate_from.clone().unwrap_or_default().join(format!("{model}.csv")) },
        backend: req.backend,
        parva_version: env!("CARGO_PKG_VERSION").to_string(),
        command: std::env::args().collect(),
        status: RunStatus::Running,
        started_utc: utc_now(),
        finished_utc: None,
        partition: mode,
        gpu_type: gpu_type.map(|t| t.id.to_string()),
        gpu: description.clone(),
        host: Host::detect(),
        memory_column: probe.describe().to_string(),
        grid: grid.clone(),
        measure,
        prune: rules,
        summary: None,
        background: None,
    };
    let mut bg = match background {
        Some((kind, bg_model, models_dir)) => {
            let (program, leading, emulated) = if args.backend == BackendArg::Torch {
                let w = parva_runner::serve::default_worker_command(BackendKind::Torch)?;
                (w.program, w.args, None)
            } else {
                (emulator.clone(), vec!["worker".to_string()], Some(1.0))
            };
            let command = parva_runner::jobs::JobCommand {
                program,
                args: leading,
                models_dir,
                emulated_ms_per_row: emulated,
                device: (args.backend == BackendArg::Torch).then(|| device.name().to_string()),
                checkpoint_every_s: 60.0,
            };
            let procs = parva_runner::jobs::JobProcs::new(run_dir.join("background"), command);
            Some(parva_profiler::background::Background::new(procs, kind, &bg_model, args.background_batch, Duration::from_secs(30)))
        }
        None => None,
    };
    metadata.background = bg.as_ref().map(|b| b.describe());

    let mut as_is;
    let mut mig_part;
    let mut mps_part;
    let partitioner: &mut dyn Partitioner = match (mode, target.gpu.as_mut()) {
        (Mode::Mig, Some(g)) => {
            mig_part = MigPartitioner::new(g.mig.as_mut(), g.mps.as_mut(), args.gpu, run_dir.clone())?;
            &mut mig_part
        }
        (Mode::Mps, Some(g)) => {
            mps_part = MpsPartitioner::new(g.mps.as_mut(), g.description.uuid.clone(), g.gpu_type.gpcs, run_dir.clone());
            &mut mps_part
        }
        _ => {
            let (env, device_id, what) = match (device, &description) {
                (Device::Cuda, Some(d)) => (vec![("CUDA_VISIBLE_DEVICES".to_string(), d.uuid.clone())], Some(d.uuid.clone()), format!("GPU {} ({})", d.index, d.name)),
                (Device::Cuda, None) => (vec![("CUDA_VISIBLE_DEVICES".to_string(), args.gpu.to_string())], None, format!("GPU {}", args.gpu)),
                _ => (vec![], None, format!("the CPU ({})", metadata.host.cpu)),
            };
            as_is = AsIs { env, device: device_id, what };
            &mut as_is
        }
    };

    // Written once the GPU has passed its checks (MIG mode, privileges), before it is changed.
    let meta_path = Metadata::path(&out, &model);
    metadata.write(&meta_path)?;
    let show_bar = !args.json && std::io::stderr().is_terminal();
    let mut observer = Progress::new(show_bar);
    if !args.json {
        eprintln!("profiling {model} ({}) into {} with --partition {}; worker logs in {}", metadata.backend.name(), table_path.display(), mode.name(), run_dir.display());
    }
    let spawner = ProcessSpawner;
    let bar = observer.bar.clone();
    let sweep = Sweep {
        grid: grid.clone(),
        measure,
        rules,
        ready_timeout: req.ready_timeout,
        run_dir: run_dir.clone(),
        table: &mut table,
        partitioner,
        workers: factory.as_ref(),
        spawner: &spawner,
        probe: probe.as_mut(),
        observer: &mut observer,
        background: bg.as_mut(),
    };
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
    let signal_bar = bar.clone();
    let summary = rt.block_on(async move {
        tokio::spawn(async move {
            shutdown_signal().await;
            say(&signal_bar, "stopping: killing workers and undoing instances and daemons (Ctrl-C again aborts without clean-up)");
            let _ = cancel_tx.send(true);
            shutdown_signal().await;
            std::process::exit(130);
        });
        sweep.run(cancel_rx).await
    });
    bar.finish_and_clear();
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            metadata.status = RunStatus::Failed(e.to_string());
            metadata.finished_utc = Some(utc_now());
            let _ = metadata.write(&meta_path);
            return Err(e.into());
        }
    };
    metadata.status = RunStatus::of_sweep(summary.interrupted, summary.counts.failed);
    metadata.finished_utc = Some(utc_now());
    metadata.summary = Some(summary.clone());
    if let Some(b) = &bg {
        let beside: Vec<String> = b.sizes.iter().map(|&s| if share_keyed { format!("{}%", u32::from(s) * u32::from(parva_core::mig::MPS_SHARE_STEP)) } else { s.to_string() }).collect();
        let what = if share_keyed { "shares" } else { "sizes" };
        metadata.background = Some(format!("{}: {} samples, beside {what} [{}]", b.describe(), b.samples(), beside.join(", ")));
    }
    metadata.write(&meta_path)?;
    if !args.quiet {
        report(args, &table, &summary, &table_path, &meta_path)?;
    }
    // A complete run removes the temporary run directory it made; one with failed points keeps it
    // (the workers' logs say why), and one given with --run-dir is never removed.
    if args.run_dir.is_none() && !summary.interrupted && summary.counts.failed == 0 {
        let _ = std::fs::remove_dir_all(&run_dir);
    }
    let code = if summary.interrupted { ExitCode::from(130) } else { super::exit(summary.counts.failed == 0) };
    Ok((code, table_path))
}

/// The progress bar (points decided / total, current point, ETA); lines for each point when
/// stderr is not a terminal.
struct Progress {
    bar: indicatif::ProgressBar,
    shown: bool,
}

impl Progress {
    fn new(shown: bool) -> Self {
        let bar = if shown { indicatif::ProgressBar::new(0) } else { indicatif::ProgressBar::hidden() };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} points, ETA {eta} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        if shown {
            bar.enable_steady_tick(Duration::from_millis(250));
        }
        Progress { bar, shown }
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Measured(m) => format!(
            "{:.1} samples/s per process, mean {:.3} ms, p99 {:.3} ms, ci {:.1}% in {:.1} s{}",
            m.throughput,
            m.latency_s * 1e3,
            m.p99_ms,
            m.ci * 100.0,
            m.seconds,
            if m.note.is_empty() { String::new() } else { format!(" ({})", m.note) }
        ),
        Outcome::Oom(n) => format!("out of memory: {n}"),
        Outcome::Failed(n) => format!("FAILED: {n}"),
        Outcome::Pruned(n) => format!("skipped: {n}"),
    }
}

impl Observer for Progress {
    fn started(&mut self, total: usize, resumed: usize) {
        self.bar.set_length(total as u64);
        if resumed > 0 {
            say(&self.bar, format!("resuming: {resumed} of {total} points are already in the table"));
        }
    }
    fn measuring(&mut self, point: Point) {
        self.bar.set_message(point.to_string());
    }
    fn decided(&mut self, point: Point, outcome: &Outcome) {
        self.bar.inc(1);
        let line = format!("{point}: {}", describe(outcome));
        if self.shown {
            self.bar.println(line);
        } else {
            tracing::info!("{line}");
            if !matches!(outcome, Outcome::Measured(_)) {
                eprintln!("{line}");
            }
        }
    }
    fn resumed(&mut self, _: Point, _: Done) {
        self.bar.inc(1);
    }
}

/// The summary: a table per (size, processes) on stdout, or JSON.
fn report(args: &ProfileArgs, table: &Table, summary: &Summary, table_path: &Path, meta_path: &Path) -> anyhow::Result<()> {
    let series = series(table);
    if args.json {
        return super::print_json(&serde_json::json!({
            "table": table_path,
            "metadata": meta_path,
            "summary": summary,
            "series": series,
        }));
    }
    outln!("{:>4} {:>5} {:>8} {:>10} {:>18} {:>20} {:>4} {:>6} {:>6}", "size", "procs", "measured", "best batch", "best samples/s", "batch latency ms", "oom", "pruned", "failed")?;
    for s in &series {
        let lat = match (s.min_latency_ms, s.max_latency_ms) {
            (Some(a), Some(b)) => format!("{a:.2}..{b:.2}"),
            _ => "-".into(),
        };
        let best = s.best_batch.map_or("-".into(), |b| b.to_string());
        outln!(
            "{:>4} {:>5} {:>8} {:>10} {:>18.1} {:>20} {:>4} {:>6} {:>6}",
            s.size, s.procs, s.measured, best, s.best_segment_throughput, lat, s.oom, s.pruned, s.failed
        )?;
    }
    let c = &summary.counts;
    let minutes = summary.seconds / 60.0;
    outln!(
        "{} points: {} measured, {} resumed, {} out of memory, {} pruned, {} failed in {:.1} s ({:.1} measured points/min){}",
        c.measured + c.resumed + c.oom + c.pruned + c.failed,
        c.measured,
        c.resumed,
        c.oom,
        c.pruned,
        c.failed,
        summary.seconds,
        if minutes > 0.0 { c.measured as f64 / minutes } else { 0.0 },
        if summary.interrupted { "; INTERRUPTED" } else { "" }
    )?;
    outln!("table: {}\nmetadata: {}", table_path.display(), meta_path.display())?;
    Ok(())
}
