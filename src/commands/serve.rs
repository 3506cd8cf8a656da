//! `parva serve`: serve one node of a deployment map over KServe v2 (see `parva-runner`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use parva_core::DeploymentMap;
use parva_runner::{BackendKind, ServeEvent, ServeOptions};

use super::{BackendArg, DeviceArg};

#[derive(Args)]
pub struct ServeArgs {
    /// Deployment map (parva's or ParvaGPU's format).
    #[arg(long = "map", alias = "plan", value_name = "FILE")]
    plan: PathBuf,
    /// Which node of the map to serve.
    #[arg(long, default_value_t = 0)]
    node: u32,
    #[command(flatten)]
    serving: ServingFlags,
}

/// How a node or a segment serves: `parva serve` and `parva segment`.
#[derive(Args)]
pub struct ServingFlags {
    /// Directory of `<model>.json` metadata (and `<model>.pt` TorchScript for --backend torch).
    #[arg(long, default_value = "models")]
    models: PathBuf,
    /// torch: TorchScript workers (`parva-worker`); emulated: workers sleep for the profiled
    /// latency and return zeros (needs --prof-data; every report says "emulated").
    #[arg(long, value_enum, default_value_t = BackendArg::Torch)]
    backend: BackendArg,
    /// Profile tables of the GPU type (latencies for the emulated backend; first batch-time
    /// estimates otherwise).
    #[arg(long)]
    prof_data: Option<PathBuf>,
    /// Where torch workers run their model.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    /// HTTP address (port 0: any free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Service list `service,model,rate,slo_ms` supplying SLOs (for ParvaGPU maps, which lack them).
    /// A list whose models or SLOs contradict the map's is refused, unless --replace-services.
    #[arg(long)]
    services: Option<PathBuf>,
    /// With --services: the list's SLOs win over the map's where they differ.
    #[arg(long, requires = "services")]
    replace_services: bool,
    /// Worker sockets, pid files and logs (default: a new directory under the temp dir).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Hard bound on the rows one worker process holds (queued or running), in batches of its
    /// segment's size; beyond it requests get 429. A memory bound: requests are refused long
    /// before by their deadline (429 when the work queued in front of a request would make it
    /// miss its SLO on every ready process). `--queue-batches` is the old spelling.
    #[arg(long, alias = "queue-batches", default_value_t = parva_runner::serve::DEFAULT_QUEUE_BATCHES as u64,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_queue_batches: u64,
    /// Hard bound on the input bytes one worker process holds (queued or running), MiB; beyond
    /// it requests get 429. Memory for queued requests stays under workers x this.
    #[arg(long, default_value_t = (parva_runner::serve::DEFAULT_QUEUE_BYTES >> 20) as u64,
          value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    max_queue_mib: u64,
    /// Intra-op threads per torch worker on CPU (default: cores / workers).
    #[arg(long)]
    threads: Option<usize>,
    /// Most rows (first dimension) one inference request may carry; also sets each model's
    /// body limit (binary: rows x bytes per row + 64 KiB; JSON: rows x elements per row x 32 +
    /// 64 KiB). Over it: 400 (rows) or 413 (body).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_request_rows: u64,
    /// How batches reach the worker processes: `shm`, a slab of shared memory per worker that the
    /// router writes each request's tensors into once and the worker reads in place (the socket
    /// carries offsets; a batch bigger than the segment's batch size still goes over the socket);
    /// `socket`: every byte over the worker's Unix socket.
    #[arg(long, value_enum, default_value_t = TransportArg::Shm)]
    worker_transport: TransportArg,
    #[command(flatten)]
    watchdog: WatchdogFlag,
    #[command(flatten)]
    http: HttpFlags,
}

/// The worker watchdog: `parva serve`, `parva segment` and `parva deploy`.
#[derive(Args)]
pub struct WatchdogFlag {
    /// A worker whose running batch is this much past its expected time is taken for stalled:
    /// killed and restarted like a crashed one (`parva_worker_stalls_total`); its requests go to
    /// another process of the service if one can answer them in time, else get 504 at once
    /// (0.1s to 1h).
    #[arg(long, default_value = "2s", value_parser = super::flags::parse_timeout)]
    worker_timeout: f64,
}

impl WatchdogFlag {
    pub(crate) fn apply(&self, opts: &mut ServeOptions) {
        opts.worker_timeout = std::time::Duration::from_secs_f64(self.worker_timeout);
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TransportArg {
    Shm,
    Socket,
}

/// Limits of an HTTP edge: `parva serve`, `parva segment` and `parva route`.
#[derive(Args)]
pub struct HttpFlags {
    /// Hard cap on any request body, MiB, whatever the model; over it: 413, judged on
    /// Content-Length before the body is read.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    max_body_mib: u64,
    /// Bound on the memory request bodies in flight may hold (body, decoded tensors, largest
    /// response), MiB; a request that would pass it gets 429 at once. Must fit each model's
    /// largest request.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    max_inflight_mib: u64,
    /// Most open HTTP connections; past it new connections wait in the listen backlog until one
    /// closes (the open-file limit is raised to fit when it can, else the cap is lowered to it).
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
    /// A request's head (request line and headers) must arrive within this time of its first
    /// byte, else the connection is closed (0.1s to 1h).
    #[arg(long, default_value = "10s", value_parser = super::flags::parse_timeout)]
    header_timeout: f64,
    /// A connection with no request in progress (or whose client stops reading a response) is
    /// closed after this time (0.1s to 1h).
    #[arg(long, default_value = "60s", value_parser = super::flags::parse_timeout)]
    idle_timeout: f64,
    /// A request body must arrive within this time of its head, else 408 (0.1s to 1h).
    #[arg(long, default_value = "60s", value_parser = super::flags::parse_timeout)]
    body_timeout: f64,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let (map, _) = DeploymentMap::read(&args.plan)?;
    super::note_best_effort_rows(&map, false);
    let (opts, default_run_dir) = args.serving.options(map, args.node)?;
    serve_until_signal(opts)?;
    remove_default_run_dir(default_run_dir);
    Ok(ExitCode::SUCCESS)
}

/// A clean stop removes the temporary run directory it made (sockets, pid files, worker logs);
/// after an error it stays, for the logs. One given with --run-dir is never removed.
pub(crate) fn remove_default_run_dir(dir: Option<PathBuf>) {
    match dir {
        Some(dir) if std::fs::remove_dir_all(&dir).is_ok() => eprintln!("stopped (removed the temporary run directory {})", dir.display()),
        _ => eprintln!("stopped"),
    }
}

impl ServingFlags {
    /// Serve options for node `node` of `map`, and the run directory to remove after a clean
    /// stop (`None` when one was given with --run-dir).
    pub(crate) fn options(&self, map: DeploymentMap, node: u32) -> anyhow::Result<(ServeOptions, Option<PathBuf>)> {
        let backend: BackendKind = self.backend.into();
        let mut opts = ServeOptions::new(map, node, self.models.clone(), backend);
        opts.prof_data = self.prof_data.clone();
        opts.device = self.device.into();
        opts.listen = self.listen;
        if let Some(dir) = &self.run_dir {
            opts.run_dir = dir.clone();
        }
        if let Some(file) = &self.services {
            let list = parva_core::slo::read_service_list(file, None)?;
            let refuse = super::Contradictions { missing: false, extra: false, models: true, slos: true };
            super::check_services_against_map(&opts.map, Some(node), &list, file, refuse, self.replace_services)?;
            let extra = parva_core::slo::MapDifferences::between(&opts.map, Some(node), &list).extra;
            if !extra.is_empty() {
                eprintln!("note: {} lists services node {node} does not serve (ignored): {}", file.display(), extra.join(", "));
            }
            opts.slo_ms = list.into_iter().map(|s| (s.name, s.slo_ms)).collect();
        }
        opts.queue_batches = usize::try_from(self.max_queue_batches).unwrap_or(usize::MAX);
        opts.queue_bytes = usize::try_from(self.max_queue_mib << 20).unwrap_or(usize::MAX);
        opts.threads_per_worker = self.threads;
        opts.worker_transport = match self.worker_transport {
            TransportArg::Shm => parva_runner::serve::WorkerTransport::Shm,
            TransportArg::Socket => parva_runner::serve::WorkerTransport::Socket,
        };
        opts.http.max_request_rows = usize::try_from(self.max_request_rows).unwrap_or(usize::MAX);
        self.http.apply(&mut opts.http);
        self.watchdog.apply(&mut opts);
        let default_run_dir = self.run_dir.is_none().then(|| opts.run_dir.clone());
        Ok((opts, default_run_dir))
    }
}

impl HttpFlags {
    /// Set `limits` from the flags.
    pub(crate) fn apply(&self, limits: &mut parva_runner::http::HttpLimits) {
        limits.max_body_bytes = self.max_body_mib << 20;
        limits.max_inflight_bytes = self.max_inflight_mib << 20;
        limits.conn.max_connections = usize::try_from(self.max_connections).unwrap_or(usize::MAX);
        limits.conn.header_timeout = std::time::Duration::from_secs_f64(self.header_timeout);
        limits.conn.idle_timeout = std::time::Duration::from_secs_f64(self.idle_timeout);
        limits.body_timeout = std::time::Duration::from_secs_f64(self.body_timeout);
    }
}

/// Serve `opts` (one node) until SIGINT or SIGTERM, showing where it listens and its workers'
/// readiness: `parva serve` and the serving step of `parva deploy`.
pub(crate) fn serve_until_signal(mut opts: ServeOptions) -> anyhow::Result<()> {
    let backend = opts.backend;
    let workers: u32 = opts.map.segments.iter().filter(|s| s.node == opts.node).map(|s| s.num_proc).sum();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    opts.events = Some(tx);
    let run_dir = opts.run_dir.clone();
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(async move {
        let progress = tokio::spawn(show_progress(rx, backend, workers, run_dir));
        let result = parva_runner::serve(opts, shutdown_signal()).await;
        progress.abort();
        result
    })?;
    Ok(())
}

/// Print where the server listens and the workers' readiness.
async fn show_progress(mut rx: tokio::sync::mpsc::UnboundedReceiver<ServeEvent>, backend: BackendKind, total: u32, run_dir: PathBuf) {
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} workers ready {pos}/{len} [{elapsed}] {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    while let Some(ev) = rx.recv().await {
        match ev {
            ServeEvent::Listening(addr) => {
                let label = if backend == BackendKind::Emulated { " (EMULATED backend: latencies are the profile's, outputs are zeros)" } else { "" };
                // stdout: the one line scripts wait for.
                // A closed stdout must not stop the server (`parva serve | head -1` waits for this line).
                let _ = outln!("listening on http://{addr}{label}");
                say(&bar, format!("worker logs in {}", run_dir.display()));
            }
            ServeEvent::Workers { ready, total } => {
                bar.set_position(ready as u64);
                if ready == total {
                    bar.set_message("ready");
                    say(&bar, format!("ready: {ready}/{total} workers"));
                } else {
                    bar.set_message("");
                }
            }
            ServeEvent::Draining => {
                say(&bar, "shutting down: draining requests, stopping workers");
            }
        }
    }
}

/// SIGINT or SIGTERM. The handlers are installed when this is called, not when the future is
/// first polled: a signal that arrives while the server is still starting (after its "listening"
/// line, before it waits for shutdown) drains and cleans up instead of killing the process.
/// Call it inside the runtime, before starting the work it stops.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    async move {
        let int = async {
            match int.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let term = async {
            match term.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = int => {},
            _ = term => {},
        }
    }
}

/// Print a line on stderr whether or not the progress bar is drawn (it is hidden off a terminal).
pub(crate) fn say(bar: &indicatif::ProgressBar, line: impl AsRef<str>) {
    bar.suspend(|| eprintln!("{}", line.as_ref()));
}
