//! `parva route`: the router tier in front of `parva segment` processes (see
//! `parva_runner::route`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use parva_core::DeploymentMap;
use parva_core::segments::SegmentUrls;
use parva_runner::route::{RouteOptions, route};

use super::flags::parse_timeout;
use super::serve::{HttpFlags, shutdown_signal};

#[derive(Args)]
pub struct RouteArgs {
    /// Deployment map (parva's or ParvaGPU's format): its services and segments, and the
    /// planned capacity each segment's share of its service follows.
    #[arg(long = "map", value_name = "FILE")]
    map: PathBuf,
    /// Where the segments listen: a `segment,url` list (`n0-g1-p4,http://10.0.0.7:8001`), or a
    /// URL template with `{segment}`, e.g. `http://parva-{segment}.parva.svc:8000` (the
    /// per-segment Services `parva export k8s` writes).
    #[arg(long, value_name = "FILE|TEMPLATE")]
    segments: String,
    /// HTTP address (port 0: any free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// How often every segment's readiness is checked; a failed check ejects it (0.1s to 1h).
    /// Each replica checks every segment: with thousands of segments, raise it (a dead segment's
    /// refused connection ejects it at its next request anyway).
    #[arg(long, default_value = "250ms", value_parser = parse_timeout)]
    health_interval: f64,
    /// A readiness check slower than this fails (0.1s to 1h).
    #[arg(long, default_value = "500ms", value_parser = parse_timeout)]
    health_timeout: f64,
    /// Longest a segment may take to answer one request before the client gets 504 (0.1s to 1h).
    #[arg(long, default_value = "30s", value_parser = parse_timeout)]
    upstream_timeout: f64,
    /// Most connections to one segment; requests past it wait for a free one (bounded by
    /// --upstream-timeout).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    max_segment_connections: u64,
    /// Worker threads of the router (default: one per core). A router is stateless: for more
    /// throughput run more replicas; one thread avoids cross-thread wake-ups on a busy machine.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    threads: Option<u64>,
    #[command(flatten)]
    http: HttpFlags,
}

pub fn run(args: RouteArgs) -> anyhow::Result<ExitCode> {
    let (map, _) = DeploymentMap::read(&args.map)?;
    super::note_best_effort_rows(&map, false);
    let urls = SegmentUrls::parse(&args.segments)?;
    let mut opts = RouteOptions::new(map, urls);
    opts.listen = args.listen;
    opts.health_interval = Duration::from_secs_f64(args.health_interval);
    opts.health_timeout = Duration::from_secs_f64(args.health_timeout);
    opts.upstream_timeout = Duration::from_secs_f64(args.upstream_timeout);
    opts.max_segment_connections = usize::try_from(args.max_segment_connections).unwrap_or(usize::MAX);
    args.http.apply(&mut opts.http);
    let services = opts.map.segments.iter().map(|s| s.service.as_str()).collect::<std::collections::BTreeSet<_>>().len();
    let segments = opts.map.segments.len();
    let rt = match args.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread().worker_threads(usize::try_from(n).unwrap_or(1)).enable_all().build(),
        None => tokio::runtime::Runtime::new(),
    }
    .context("start the async runtime")?;
    rt.block_on(async move {
        let listening = move |addr: SocketAddr| {
            // stdout: the one line scripts wait for; a closed stdout must not stop the router.
            let _ = outln!("listening on http://{addr}");
            eprintln!("routing {services} service(s) over {segments} segment(s); segment health at http://{addr}/v2/route/segments");
        };
        route(opts, listening, shutdown_signal()).await
    })?;
    eprintln!("stopped");
    Ok(ExitCode::SUCCESS)
}
