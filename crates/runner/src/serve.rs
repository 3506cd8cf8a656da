//! `serve`: start the router and the worker processes of one node of a deployment map.
//!
//! Entry point for `parva serve` and for `parva deploy` (which first partitions the GPUs and then
//! passes each segment's environment in [`ServeOptions::segment_env`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parva_core::batching::BatchPolicy;
use parva_core::{DeploymentMap, ProfileSet, Segment};
use tokio::sync::mpsc;

use parva_proto::shm::SlabLayout;
use crate::batcher::ProcShared;
use crate::error::ServeError;
pub use crate::live::LiveNode;
use parva_proto::meta::{self, ModelMeta};
use crate::metrics::{BackendLabel, Metrics};
use crate::router::QueueLimits;
pub use crate::router::{DEFAULT_QUEUE_BATCHES, DEFAULT_QUEUE_BYTES};
use crate::spawn::{ProcessSpawner, Spawner, WorkerSpec};
use crate::supervisor::Backoff;
use parva_proto::worker_args;

/// Which executor the workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// TorchScript through libtorch (`parva-worker`).
    Torch,
    /// Sleeps for the profiled latency and returns zeros (`parva worker`); not a measurement.
    Emulated,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Torch => "torch",
            BackendKind::Emulated => "emulated",
        }
    }
}

pub use parva_proto::Device;

/// The program (and leading arguments) that starts one worker.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// Progress reports of [`serve`].
#[derive(Debug, Clone, PartialEq)]
pub enum ServeEvent {
    /// The HTTP server listens here (requests get 503 until workers are ready).
    Listening(SocketAddr),
    /// `ready` of `total` worker processes are ready.
    Workers { ready: usize, total: usize },
    /// Shutdown started: no new connections; in-flight requests finish.
    Draining,
}

/// How long a deploy waits for its workers before it gives up (see [`ServeOptions::startup`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StartupGuard {
    pub ready_within: Duration,
    pub max_failed_starts: u32,
}

impl Default for StartupGuard {
    fn default() -> Self {
        StartupGuard { ready_within: Duration::from_secs(600), max_failed_starts: 5 }
    }
}

/// Default of [`ServeOptions::worker_timeout`]: 2 s past a batch's expected end. A GPU's first
/// batch of a new shape can take ~1 s of one-time work (kernels chosen, memory allocated).
pub const DEFAULT_WORKER_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything [`serve`] needs. Build with [`ServeOptions::new`] and adjust the fields.
pub struct ServeOptions {
    pub map: DeploymentMap,
    /// The node of `map` to serve.
    pub node: u32,
    /// Holds `<model>.json` (and `<model>.pt` for the torch backend).
    pub models_dir: PathBuf,
    pub backend: BackendKind,
    /// Profile tables: latencies for the emulated backend (required there) and the batcher's
    /// first estimates; throughputs when the map lacks them.
    pub prof_data: Option<PathBuf>,
    pub device: Device,
    pub listen: SocketAddr,
    /// Worker sockets, pid files and logs go here (created if needed).
    pub run_dir: PathBuf,
    /// Extra environment of the workers of the segment at (GPU index on the node, placement
    /// start): `CUDA_VISIBLE_DEVICES=MIG-<uuid>`, `CUDA_MPS_PIPE_DIRECTORY`, ...
    pub segment_env: BTreeMap<(u32, u8), Vec<(String, String)>>,
    /// Latency SLO (ms) per service, overriding the map's `slo_ms` (needed for ParvaGPU maps).
    pub slo_ms: BTreeMap<String, f64>,
    /// The worker program; `None`: `parva worker` (emulated) or `parva-worker` beside this
    /// executable or named by `PARVA_WORKER` (torch).
    pub worker_command: Option<WorkerCommand>,
    /// Hard bound on the rows one process holds (queued or running), in batches of its segment's
    /// size (default [`DEFAULT_QUEUE_BATCHES`]); admission by deadline refuses long before, this
    /// is a memory bound. Beyond it requests get 429.
    pub queue_batches: usize,
    /// Hard bound on the input bytes one process holds (queued or running), default
    /// [`DEFAULT_QUEUE_BYTES`] (256 MiB): node memory for queued requests stays under
    /// processes x this. Beyond it requests get 429.
    pub queue_bytes: usize,
    /// Intra-op threads per torch worker on CPU; `None`: the cores shared among the workers.
    pub threads_per_worker: Option<usize>,
    /// How long a worker may take to start, load and warm up.
    pub ready_timeout: Duration,
    /// How much longer than expected a batch may run before its worker is taken for stalled:
    /// killed and restarted like a crashed one, its requests sent to another process or answered
    /// 504 (`--worker-timeout`).
    pub worker_timeout: Duration,
    /// `parva deploy`: the node must have every worker ready within this time of listening, and
    /// no worker may fail to start [`StartupGuard::max_failed_starts`] times in a row before it
    /// was first ready; otherwise [`serve`] stops with [`ServeError::NotReady`] (the deploy then
    /// rolls the node back). `None` (`parva serve`): workers are retried for as long as it runs.
    pub startup: Option<StartupGuard>,
    pub backoff: Backoff,
    pub spawner: Arc<dyn Spawner>,
    pub events: Option<mpsc::UnboundedSender<ServeEvent>>,
    /// Limits of the HTTP edge: body sizes, memory in flight, timeouts, connections.
    pub http: crate::http::HttpLimits,
    /// Runs beside the server once it listens, with the live node (`parva deploy --follow`'s
    /// controller); stopped when the server shuts down.
    pub control: Option<Control>,
    /// How batches reach the workers: shared memory (default) or the socket.
    pub worker_transport: WorkerTransport,
}

/// How a batch's tensors travel between the router and a worker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkerTransport {
    /// In a slab of shared memory per worker ([`parva_proto::shm`]): written once by the router, read
    /// in place by the worker; the socket carries offsets. Falls back to the socket for a batch
    /// that does not fit, or when the slab cannot be made.
    #[default]
    Shm,
    /// Every byte through the worker's Unix socket.
    Socket,
}

/// A task run beside the server with its [`LiveNode`] (see [`ServeOptions::control`]).
pub type Control = Box<dyn FnOnce(Arc<LiveNode>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send>;

impl ServeOptions {
    /// The device workers run on: the torch backend's `--device`, `none` for the emulated one.
    pub fn device_label(&self) -> &'static str {
        if self.backend == BackendKind::Torch { self.device.name() } else { "none" }
    }

    /// Options with defaults: 127.0.0.1:8000, CPU, a run directory under the system's temp dir,
    /// no extra environment, the default queue bounds, real processes.
    pub fn new(map: DeploymentMap, node: u32, models_dir: PathBuf, backend: BackendKind) -> Self {
        ServeOptions {
            map,
            node,
            models_dir,
            backend,
            prof_data: None,
            device: Device::Cpu,
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            run_dir: std::env::temp_dir().join(format!("parva-{}", std::process::id())),
            segment_env: BTreeMap::new(),
            slo_ms: BTreeMap::new(),
            worker_command: None,
            queue_batches: DEFAULT_QUEUE_BATCHES,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            threads_per_worker: None,
            ready_timeout: Duration::from_secs(600),
            worker_timeout: DEFAULT_WORKER_TIMEOUT,
            startup: None,
            backoff: Backoff::default(),
            spawner: Arc::new(ProcessSpawner),
            events: None,
            http: crate::http::HttpLimits::default(),
            control: None,
            worker_transport: WorkerTransport::Shm,
        }
    }
}

/// Longest Unix socket path, bytes.
const SOCKET_PATH_MAX: usize = 107;

/// The default worker program for `backend`.
pub fn default_worker_command(backend: BackendKind) -> Result<WorkerCommand, ServeError> {
    let exe = std::env::current_exe().map_err(|e| ServeError::io("/proc/self/exe", "find the running executable", e))?;
    Ok(match backend {
        BackendKind::Emulated => WorkerCommand { program: exe, args: vec!["worker".into()] },
        BackendKind::Torch => WorkerCommand {
            program: locate_torch_worker(std::env::var_os("PARVA_WORKER"), Some(&exe), std::env::var_os("PATH").as_deref())?,
            args: vec![],
        },
    })
}

/// The torch worker binary: `PARVA_WORKER` when set (it must exist), else `parva-worker` beside
/// this executable, else the first `parva-worker` on `PATH`. Missing, the error says where it
/// looked and the command that builds it, before anything starts.
pub fn locate_torch_worker(env: Option<std::ffi::OsString>, exe: Option<&Path>, path_var: Option<&std::ffi::OsStr>) -> Result<PathBuf, ServeError> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if let Some(p) = env.filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if runnable(&p) { Ok(p) } else { Err(ServeError::NoWorker { looked: format!("PARVA_WORKER={} is not an executable file", p.display()) }) };
    }
    let beside = exe.and_then(Path::parent).map(|d| d.join("parva-worker"));
    if let Some(p) = beside.as_ref().filter(|p| runnable(p)) {
        return Ok(p.clone());
    }
    if let Some(p) = path_var.into_iter().flat_map(std::env::split_paths).map(|d| d.join("parva-worker")).find(|p| runnable(p)) {
        return Ok(p);
    }
    let beside = beside.map_or("beside parva".to_string(), |p| format!("not at {}", p.display()));
    Err(ServeError::NoWorker { looked: format!("PARVA_WORKER unset, {beside}, not on PATH") })
}

/// One worker process to start.
pub(crate) struct Planned {
    pub(crate) service: String,
    model: String,
    max_batch: u32,
    /// The segment's GPU on the node and MIG placement start.
    gpu: u32,
    placement: u8,
    pub(crate) spec: WorkerSpec,
    pub(crate) policy: BatchPolicy,
    pub(crate) exec_profile: Vec<f64>,
    pub(crate) weight: f64,
    pub(crate) limits: QueueLimits,
    /// The shared buffers of the process (`None`: batches go over the socket).
    pub(crate) slab: Option<SlabLayout>,
}

fn segment_profile(seg: &Segment, prof: Option<&ProfileSet>, backend: BackendKind) -> Result<(Vec<f64>, Option<f64>), ServeError> {
    let table = prof.and_then(|p| p.get(&seg.model));
    let lat: Option<Vec<f64>> =
        table.and_then(|t| (1..=seg.batch_size).map(|b| t.batch_latency(seg.instance_size, seg.num_proc, b)).collect());
    let per_proc = table.and_then(|t| t.point(seg.instance_size, seg.batch_size, seg.num_proc)).map(|p| p.throughput);
    match (lat, backend) {
        (Some(l), _) => Ok((l, per_proc)),
        (None, BackendKind::Torch) => Ok((map_profile(seg), per_proc)),
        (None, BackendKind::Emulated) => Err(ServeError::Config(match prof {
            None => "--backend emulated needs --prof-data DIR: it sleeps for the profiled latencies".into(),
            Some(p) => format!(
                "{}: no measured latency for model {:?} at instance size {} with {} processes (the emulated backend needs it)",
                p.dir.display(), seg.model, seg.instance_size, seg.num_proc
            ),
        })),
    }
}

/// Latencies of 1..=batch rows when no profile table has them: from the map's throughput for the
/// segment (a full batch in `batch x processes / throughput` seconds), in proportion to the rows.
/// The batcher corrects them by what it measures, all sizes together, and an excess over a small
/// batch's share carries over as a constant, so this start errs towards the measured. Without a
/// throughput either, empty: each size is learned on its own.
fn map_profile(seg: &Segment) -> Vec<f64> {
    let Some(t) = seg.throughput.filter(|t| t.is_finite() && *t > 0.0) else {
        tracing::warn!(
            service = %seg.service, model = %seg.model,
            "no profiled latency and no throughput in the map for this segment: batching deadlines start blind (pass --prof-data)"
        );
        return vec![];
    };
    let b = seg.batch_size.max(1);
    let full = (b as f64) * seg.num_proc.max(1) as f64 / t;
    tracing::info!(
        service = %seg.service, model = %seg.model,
        "no profiled latency for this segment (pass --prof-data): batches start from the map's throughput, {:.1} ms for {b} rows, corrected as they run",
        full * 1e3
    );
    (1..=b).map(|r| full * r as f64 / b as f64).collect()
}

/// What every worker of the node shares: how to start one for a segment (also for segments
/// added while the node serves, see [`crate::live`]).
pub(crate) struct WorkerTemplate {
    pub(crate) models_dir: PathBuf,
    pub(crate) backend: BackendKind,
    pub(crate) device: Device,
    pub(crate) run_dir: PathBuf,
    pub(crate) slo_ms: BTreeMap<String, f64>,
    pub(crate) cmd: WorkerCommand,
    /// Intra-op threads per torch worker.
    pub(crate) threads: usize,
    pub(crate) queue_batches: usize,
    pub(crate) queue_bytes: usize,
    pub(crate) prof: Option<ProfileSet>,
    pub(crate) ready_timeout: Duration,
    pub(crate) worker_timeout: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) spawner: Arc<dyn Spawner>,
    pub(crate) transport: WorkerTransport,
}

impl WorkerTemplate {
    fn new(opts: &ServeOptions, prof: Option<ProfileSet>) -> Result<Self, ServeError> {
        let total: u32 = opts.map.segments.iter().filter(|s| s.node == opts.node).map(|s| s.num_proc).sum();
        let cmd = match &opts.worker_command {
            Some(c) => c.clone(),
            None => default_worker_command(opts.backend)?,
        };
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Ok(WorkerTemplate {
            models_dir: opts.models_dir.clone(),
            backend: opts.backend,
            device: opts.device,
            run_dir: opts.run_dir.clone(),
            slo_ms: opts.slo_ms.clone(),
            cmd,
            threads: opts.threads_per_worker.unwrap_or((cores / total.max(1) as usize).max(1)),
            queue_batches: opts.queue_batches,
            queue_bytes: opts.queue_bytes,
            prof,
            ready_timeout: opts.ready_timeout,
            worker_timeout: opts.worker_timeout,
            backoff: opts.backoff,
            spawner: opts.spawner.clone(),
            transport: opts.worker_transport,
        })
    }

    /// The worker processes of `seg` with extra environment `env`, named from `w<next>` on.
    pub(crate) fn segment_workers(&self, seg: &Segment, env: &[(String, String)], next: &mut usize) -> Result<Vec<Planned>, ServeError> {
        let slo = self.slo_ms.get(&seg.service).copied().or(seg.slo_ms).ok_or_else(|| ServeError::MissingSlo { service: seg.service.clone() })?;
        let (exec_profile, per_proc) = segment_profile(seg, self.prof.as_ref(), self.backend)?;
        let weight = seg.throughput.map(|t| t / seg.num_proc as f64).or(per_proc).filter(|w| *w > 0.0).unwrap_or(1.0);
        let meta_file = meta::meta_path(&self.models_dir, &seg.model);
        // Slots sized for the segment's batch; a request bigger than that goes over the socket.
        let slab = match self.transport {
            WorkerTransport::Socket => None,
            WorkerTransport::Shm => ModelMeta::read(&meta_file).ok().and_then(|m| {
                SlabLayout::for_batches(seg.batch_size as usize, m.input_row_bytes()?, m.output_row_bytes()?)
            }),
        };
        let mut out = Vec::new();
        for _ in 0..seg.num_proc {
            let name = format!("w{next}");
            *next += 1;
            let socket = self.run_dir.join(format!("{name}.sock"));
            let len = socket.as_os_str().len();
            if len > SOCKET_PATH_MAX {
                return Err(ServeError::SocketPath { path: socket, len, limit: SOCKET_PATH_MAX });
            }
            let mut args = self.cmd.args.clone();
            let backend = match self.backend {
                BackendKind::Emulated => {
                    worker_args::Backend::Emulated(worker_args::EmulatedArgs { exec_ms: exec_profile.iter().map(|l| l * 1e3).collect() })
                }
                BackendKind::Torch => worker_args::Backend::Torch(worker_args::TorchArgs {
                    model: Some(meta::torchscript_path(&self.models_dir, &seg.model)),
                    device: self.device.into(),
                    threads: Some(self.threads),
                }),
            };
            args.extend(worker_args::WorkerArgs::new(socket.clone(), meta_file.clone(), seg.batch_size as usize).to_args(&backend));
            let log = self.run_dir.join(format!("{name}.log"));
            let spec = WorkerSpec { name, program: self.cmd.program.clone(), args, env: env.to_vec(), socket, log };
            out.push(Planned {
                service: seg.service.clone(),
                model: seg.model.clone(),
                max_batch: seg.batch_size,
                gpu: seg.gpu,
                placement: seg.placement,
                spec,
                // Batching and admission work to the plan's target, SLO - margin (map column
                // `margin_ms`), the latency the plan predicted; verify checks the SLO itself.
                policy: BatchPolicy::new(seg.batch_size, seg.target_ms(slo)),
                exec_profile: exec_profile.clone(),
                weight,
                limits: QueueLimits::new(self.queue_batches, seg.batch_size as usize, self.queue_bytes),
                slab,
            });
        }
        Ok(out)
    }
}

/// The node's segments with their workers' extra environment.
fn node_segments(opts: &ServeOptions) -> Vec<(Segment, Vec<(String, String)>)> {
    opts.map
        .segments
        .iter()
        .filter(|s| s.node == opts.node)
        .map(|s| (s.clone(), opts.segment_env.get(&(s.gpu, s.placement)).cloned().unwrap_or_default()))
        .collect()
}

fn plan_workers(opts: &ServeOptions, metas: &BTreeMap<String, ModelMeta>, prof: Option<ProfileSet>) -> Result<Vec<Planned>, ServeError> {
    let template = WorkerTemplate::new(opts, prof)?;
    let mut next = 0;
    let mut out = Vec::new();
    for (seg, env) in node_segments(opts) {
        out.extend(template.segment_workers(&seg, &env, &mut next)?);
        if !metas.contains_key(&seg.model) {
            return Err(ServeError::Config(format!("model {:?} has no metadata", seg.model)));
        }
    }
    Ok(out)
}

/// Read every model's metadata (and check the TorchScript files exist for the torch backend).
fn load_metas(opts: &ServeOptions) -> Result<BTreeMap<String, ModelMeta>, ServeError> {
    let mut metas = BTreeMap::new();
    let mut service_model: BTreeMap<&str, &str> = BTreeMap::new();
    for seg in opts.map.segments.iter().filter(|s| s.node == opts.node) {
        if let Some(m) = service_model.insert(&seg.service, &seg.model) {
            if m != seg.model {
                return Err(ServeError::Config(format!("service {:?} runs two models in the map: {m:?} and {:?}", seg.service, seg.model)));
            }
        }
        if metas.contains_key(&seg.model) {
            continue;
        }
        let meta = ModelMeta::read(&meta::meta_path(&opts.models_dir, &seg.model))?;
        if opts.backend == BackendKind::Torch {
            let pt = meta::torchscript_path(&opts.models_dir, &seg.model);
            if !pt.is_file() {
                return Err(ServeError::Config(format!(
                    "{}: no TorchScript file for model {:?}; export it with scripts/export_models.py or use --backend emulated",
                    pt.display(), seg.model
                )));
            }
        }
        metas.insert(seg.model.clone(), meta);
    }
    Ok(metas)
}

/// One worker process [`serve`] would start, as [`preflight`] reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PlannedWorker {
    pub name: String,
    pub service: String,
    pub model: String,
    /// Largest batch (the segment's batch size).
    pub max_batch: u32,
    /// The segment's GPU on the node and MIG placement start.
    pub gpu: u32,
    pub placement: u8,
    /// Extra environment (`CUDA_VISIBLE_DEVICES`, the MPS pipe directory, ...).
    pub env: Vec<(String, String)>,
}

/// What serving the node will start, found without starting or changing anything.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ServePreview {
    pub node: u32,
    pub backend: &'static str,
    pub device: &'static str,
    pub listen: SocketAddr,
    pub worker_program: PathBuf,
    pub run_dir: PathBuf,
    pub workers: Vec<PlannedWorker>,
}

/// The checks and reads [`serve`] and [`preflight`] share: absolute paths (workers run
/// elsewhere), the node has segments, the worker program (first: a newcomer without
/// `parva-worker` learns how to build it before being asked for model files), every model's
/// metadata and files, the profile tables, the HTTP limits against the models.
fn prepare(opts: &mut ServeOptions) -> Result<(BTreeMap<String, ModelMeta>, Option<ProfileSet>), ServeError> {
    for dir in [&mut opts.models_dir, &mut opts.run_dir] {
        *dir = std::path::absolute(&*dir).map_err(|e| ServeError::io(&*dir, "resolve path", e))?;
    }
    if !opts.map.segments.iter().any(|s| s.node == opts.node) {
        let mut nodes: Vec<u32> = opts.map.segments.iter().map(|s| s.node).collect();
        nodes.dedup();
        return Err(ServeError::NoSegments { node: opts.node, nodes });
    }
    if opts.worker_command.is_none() {
        opts.worker_command = Some(default_worker_command(opts.backend)?);
    }
    let metas = load_metas(opts)?;
    let prof = match &opts.prof_data {
        Some(dir) => Some(ProfileSet::read_dir(dir, None)?),
        None => None,
    };
    opts.http.check(metas.values()).map_err(ServeError::Config)?;
    Ok((metas, prof))
}

/// Everything [`serve`] checks before its first worker, without starting or creating anything:
/// the node has segments, the worker program exists, every model's metadata (and TorchScript file
/// for the torch backend) reads, the profile tables the emulated backend needs, the HTTP limits,
/// socket path lengths, that the run directory can be made and the listen port is free. `parva
/// deploy` runs it before its first MIG change. Fills `opts.worker_command` and makes the paths
/// absolute, as [`serve`] would.
pub fn preflight(opts: &mut ServeOptions) -> Result<ServePreview, ServeError> {
    let (metas, prof) = prepare(opts)?;
    // The run directory, or the nearest existing directory above it, must be a directory.
    let mut existing = opts.run_dir.as_path();
    while !existing.exists() {
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    if !existing.is_dir() {
        return Err(ServeError::Config(format!("run directory {}: {} is not a directory", opts.run_dir.display(), existing.display())));
    }
    if opts.listen.port() != 0 {
        std::net::TcpListener::bind(opts.listen).map_err(|e| ServeError::Bind { addr: opts.listen, source: e })?;
    }
    let workers = plan_workers(opts, &metas, prof)?
        .into_iter()
        .map(|p| PlannedWorker {
            name: p.spec.name,
            service: p.service,
            model: p.model,
            max_batch: p.max_batch,
            gpu: p.gpu,
            placement: p.placement,
            env: p.spec.env,
        })
        .collect();
    Ok(ServePreview {
        node: opts.node,
        backend: opts.backend.name(),
        device: opts.device_label(),
        listen: opts.listen,
        worker_program: opts.worker_command.as_ref().map(|c| c.program.clone()).unwrap_or_default(),
        run_dir: opts.run_dir.clone(),
        workers,
    })
}

/// Serve node `opts.node` of the map until `shutdown` resolves: bind the HTTP listener, start one
/// worker process per MPS process of every segment, route and batch requests; then stop accepting,
/// let in-flight requests finish and stop the workers.
pub async fn serve(mut opts: ServeOptions, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
    let (metas, prof) = prepare(&mut opts)?;
    std::fs::create_dir_all(&opts.run_dir).map_err(|e| ServeError::io(&opts.run_dir, "create run directory", e))?;
    let workers: usize = opts.map.segments.iter().filter(|s| s.node == opts.node).map(|s| s.num_proc as usize).sum();
    let allowed = crate::listen::ensure_fd_room(opts.http.conn.max_connections, 64 + 4 * workers);
    if allowed < opts.http.conn.max_connections {
        tracing::warn!(
            "the open-file limit allows {allowed} connections, not --max-connections {}: raise `ulimit -n`",
            opts.http.conn.max_connections
        );
        opts.http.conn.max_connections = allowed;
    }
    // Bind before starting any worker: a busy port fails fast and leaves nothing behind.
    let listener = tokio::net::TcpListener::bind(opts.listen).await.map_err(|e| ServeError::Bind { addr: opts.listen, source: e })?;
    let addr = listener.local_addr().map_err(ServeError::Http)?;
    let metrics = Arc::new(Metrics::new());
    let device = opts.device_label();
    metrics.backend.get_or_create(&BackendLabel { backend: opts.backend.name().into(), device: device.into() }).set(1);
    let template = WorkerTemplate::new(&opts, prof)?;
    let live = Arc::new(LiveNode::launch(template, node_segments(&opts), &metas, metrics)?);
    let router = live.router.clone();
    let shared_all = live.shared().await;
    tracing::info!(%addr, backend = opts.backend.name(), "listening");
    let events = opts.events.clone();
    let send = move |e: ServeEvent| {
        if let Some(tx) = &events {
            let _ = tx.send(e);
        }
    };
    send(ServeEvent::Listening(addr));
    let (gave_up_tx, gave_up) = tokio::sync::oneshot::channel::<String>();
    let watcher = tokio::spawn(watch_readiness(shared_all, send.clone(), opts.startup, gave_up_tx));
    let app = crate::http::app_with(router.clone(), Some(router.metrics.clone()), opts.http.clone());
    let drain_send = send.clone();
    let failure: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let failed = failure.clone();
    let graceful = async move {
        // A closed channel (no guard) never ends the wait: only the shutdown signal does.
        let gave_up = async move {
            match gave_up.await {
                Ok(why) => why,
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown => {}
            why = gave_up => {
                tracing::error!("{why}; stopping");
                *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
            }
        }
        drain_send(ServeEvent::Draining);
    };
    let listener = crate::listen::LimitedListener::new(listener, opts.http.conn);
    let app = app.into_make_service_with_connect_info::<crate::listen::ConnHandle>();
    let control = opts.control.take().map(|c| tokio::spawn(c(live.clone())));
    let result = axum::serve(listener, app).with_graceful_shutdown(graceful).await.map_err(ServeError::Http);
    watcher.abort();
    if let Some(c) = control {
        c.abort();
        let _ = c.await;
    }
    live.stop_everything().await;
    if let Some(why) = failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(ServeError::NotReady(why));
    }
    result
}

/// Report readiness changes until every worker is ready, then keep watching (restarts). With a
/// startup guard, until every worker has been ready once: say why on `gave_up` when the node
/// misses the guard's deadline or a worker fails to start too often.
async fn watch_readiness(shared: Vec<Arc<ProcShared>>, send: impl Fn(ServeEvent), guard: Option<StartupGuard>, gave_up: tokio::sync::oneshot::Sender<String>) {
    let total = shared.len();
    let mut last = usize::MAX;
    let t0 = tokio::time::Instant::now();
    let mut gave_up = Some(gave_up);
    let mut was_ready = vec![false; total];
    loop {
        let ready = shared.iter().filter(|s| s.ready.load(Ordering::SeqCst)).count();
        if ready != last {
            send(ServeEvent::Workers { ready, total });
            last = ready;
        }
        for (w, s) in was_ready.iter_mut().zip(&shared) {
            *w |= s.ready.load(Ordering::SeqCst);
        }
        if let (Some(g), true) = (guard, gave_up.is_some() && !was_ready.iter().all(|w| *w)) {
            let failing = shared.iter().zip(&was_ready).filter(|(s, w)| !**w && s.start_failures.load(Ordering::SeqCst) >= g.max_failed_starts).count();
            let why = if failing > 0 {
                Some(format!(
                    "{failing} worker process(es) failed to start {} times in a row (see the worker logs in the run directory); {ready}/{total} ready",
                    g.max_failed_starts
                ))
            } else if t0.elapsed() >= g.ready_within {
                Some(format!("{ready}/{total} worker processes ready {:.0} s after start (the readiness deadline, --ready-timeout)", g.ready_within.as_secs_f64()))
            } else {
                None
            };
            // Only now take the sender: taken with no reason, it would be dropped unused.
            if let Some(why) = why {
                if let Some(tx) = gave_up.take() {
                    let _ = tx.send(why);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
#[path = "serve_tests.rs"]
mod tests;
