//! `parva verify`: load a KServe v2 endpoint open-loop at each service's SLO rate and check its
//! latency SLO (see `crates/verify`, crate `parva-verify`). This file reads the arguments and the
//! input files, shows progress, prints and writes the report.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgGroup, Args, ValueEnum};
use parva_core::{DeploymentMap, ProfileSet, slo};
use parva_verify::{Distribution, Endpoint, Live, ServiceSpec, Spec, Wire, predict, report, trace};

use super::DistributionArg;
use super::flags::parse_seconds;

#[derive(Args)]
#[command(group(ArgGroup::new("source").required(true).multiple(true).args(["services", "slo_dir", "plan"])))]
pub struct VerifyArgs {
    /// The KServe v2 server: http://host:port, optionally with a path prefix before /v2.
    #[arg(long, default_value = "http://127.0.0.1:8000", value_name = "URL")]
    endpoint: String,
    /// Services to verify: `service,model,rate,slo_ms` (the service is the model name at the
    /// endpoint, as `parva serve` names them).
    #[arg(long, value_name = "FILE", conflicts_with = "slo_dir")]
    services: Option<PathBuf>,
    /// ParvaGPU SLO directory (with --slo and --prof-data, whose files give the column order).
    #[arg(long, value_name = "DIR", requires_all = ["slo", "prof_data"])]
    slo_dir: Option<PathBuf>,
    /// Scenario (row, 1-based) of the SLO files.
    #[arg(long, value_name = "N", requires = "slo_dir")]
    slo: Option<usize>,
    /// Deployment map: its services with its `rate`/`slo_ms` columns (unless --services or
    /// --slo-dir give them); with --prof-data, also the simulator's predicted p99 to compare.
    #[arg(long = "map", alias = "plan", value_name = "FILE")]
    plan: Option<PathBuf>,
    /// With --map: verify node N of a multi-node map, at its share of each service's rate (the
    /// node's planned capacity over the service's in the whole map) and only the services it
    /// serves; the prediction simulates that node alone.
    #[arg(long, value_name = "N", requires = "plan")]
    node: Option<u32>,
    /// Profile tables (for --slo-dir, and for the prediction with --map).
    #[arg(long, value_name = "DIR")]
    prof_data: Option<PathBuf>,
    /// Model metadata (`<model>.json`): with a `data_path.csv` beside the profile tables, the
    /// prediction includes each request's data path over this run's --wire, from its bytes.
    #[arg(long, value_name = "DIR", requires = "prof_data")]
    models: Option<PathBuf>,
    /// Seconds of load, warm-up included (e.g. 60s, 2m) [default: 60s; with --trace, up to its
    /// last request].
    #[arg(long, value_parser = parse_seconds)]
    duration: Option<f64>,
    /// Leading seconds whose requests are sent but not counted.
    #[arg(long, default_value = "5s", value_parser = parse_seconds)]
    warmup: f64,
    /// Arrival process of every service at its rate.
    #[arg(long, value_enum, default_value_t = DistributionArg::Poisson)]
    distribution: DistributionArg,
    /// Random seed of the Poisson arrivals (and of constant arrivals' phases).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Replay send times from a CSV `time_s[,service]` instead of fixed rates.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Load at rates that change over time: a rate trace `time_s,service,rate` (the format of
    /// `parva simulate --rates`; Poisson arrivals at each moment's rate, x --rate-scale)
    /// [--duration default: the trace's last change + 60 s].
    #[arg(long, value_name = "TRACE", conflicts_with = "trace")]
    rates: Option<PathBuf>,
    /// Multiply every rate by this (with --trace: replay this many times faster). Several,
    /// comma-separated (`0.1,0.25,0.5,1`), verify each load in turn, one report each in
    /// `--out/x<scale>/`, and a summary by load (`loads.csv`): measured and predicted p50/p99.
    #[arg(long, value_delimiter = ',', default_value = "1", value_name = "SCALE[,SCALE...]")]
    rate_scale: Vec<f64>,
    /// With several --rate-scale loads: measure each until it has sent as many requests as the
    /// highest (x0.1 runs the measured seconds of --duration ten times over; the warm-up stays),
    /// so that every load's p99 is taken from as many requests (perf_analyzer's
    /// `--measurement-mode count_windows` does the same for its windows).
    #[arg(long)]
    equal_requests: bool,
    /// A service passes when at least this percentage of its requests succeed within the SLO.
    #[arg(long, default_value_t = 99.0)]
    percentile: f64,
    /// Directory for verify.json, verify.csv, verify_over_time.csv, latency_cdf.svg and over_time.svg
    /// [default: reports/verify-<UTC time>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Per service: requests due but unfinished at most; a request due beyond it is dropped
    /// (counted, and a miss).
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
    /// Per service: requests on the wire at once [default: up to --max-in-flight]; a due request
    /// waits for a free connection, and the wait counts as lag and latency.
    #[arg(long)]
    connections: Option<usize>,
    /// A request unfinished this long after its scheduled time fails as `timeout`.
    #[arg(long, default_value = "30s", value_parser = parse_seconds)]
    timeout: f64,
    /// How long to wait for every service to be ready before the load starts.
    #[arg(long, default_value = "30s", value_parser = parse_seconds)]
    wait_ready: f64,
    /// Request encoding: binary tensor data (as tritonclient and perf_analyzer send), JSON, or
    /// system shared memory (`shm`: the server must run on this machine; no tensor bytes on the wire).
    #[arg(long, value_enum, default_value_t = WireArg::Binary)]
    wire: WireArg,
    /// Print the report as JSON on stdout (no table, no progress bar).
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum WireArg {
    Binary,
    Json,
    /// System shared memory (KServe/Triton extension): for a server on this machine; the load
    /// generator then moves no tensor bytes.
    Shm,
}

/// The plan and profiles for the simulator's prediction.
struct Prediction {
    map: DeploymentMap,
    profiles: ProfileSet,
    services: Option<Vec<slo::Service>>,
    how: String,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    // Everything is read and checked before the first request and before --out is touched.
    let endpoint = Endpoint::parse(&args.endpoint)?;
    let profiles = match &args.prof_data {
        Some(dir) => Some(ProfileSet::read_dir(dir, None)?),
        None => None,
    };
    let listed = match (&args.services, &args.slo_dir, args.slo, &profiles) {
        (Some(f), _, _, _) => Some(slo::read_service_list(f, None)?),
        (None, Some(d), Some(n), Some(p)) => Some(slo::read_slo_pair(d, n, p)?),
        _ => None,
    };
    let map = match &args.plan {
        Some(p) => Some(DeploymentMap::read(p)?.0),
        None => None,
    };
    // One node of a multi-node map: its segments, each service at the node's share of its rate.
    let (map, listed) = match (args.node, map) {
        (Some(node), Some(whole)) => {
            let shares = whole.node_shares(node);
            if shares.is_empty() {
                let nodes: std::collections::BTreeSet<u32> = whole.segments.iter().map(|s| s.node).collect();
                anyhow::bail!("--node {node}: {} has no segment on node {node} (its nodes: {nodes:?})", args.plan.as_deref().unwrap_or(Path::new("")).display());
            }
            for (name, share) in &shares {
                eprintln!("node {node} serves {:.1} % of service {name}'s capacity: verified at that share of its rate", share * 100.0);
            }
            let listed = listed.map(|list| {
                list.into_iter()
                    .filter_map(|s| shares.get(&s.name).map(|f| slo::Service { rate: s.rate * f, ..s }))
                    .collect::<Vec<_>>()
            });
            (Some(whole.for_node(node)), listed)
        }
        (_, map) => (map, listed),
    };
    let services: Vec<ServiceSpec> = match (&listed, &map) {
        (Some(list), _) => list
            .iter()
            .map(|s| ServiceSpec { name: s.name.clone(), model: Some(s.model.clone()), rate: s.rate, slo_ms: s.slo_ms })
            .collect(),
        (None, Some(map)) => services_of_map(map, args.plan.as_deref().unwrap_or(Path::new("")))?,
        (None, None) => anyhow::bail!("give --services, --slo-dir with --slo, or --map"),
    };
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    if let Some(bad) = args.rate_scale.iter().find(|s| !(**s > 0.0 && s.is_finite())) {
        anyhow::bail!("--rate-scale must be numbers > 0; got {bad}");
    }
    if args.rate_scale.len() > MAX_SCALES {
        anyhow::bail!("--rate-scale: at most {MAX_SCALES} loads in one run; got {}", args.rate_scale.len());
    }
    if args.rate_scale.len() > 1 && (args.trace.is_some() || args.rates.is_some()) {
        anyhow::bail!("--rate-scale: several loads need fixed rates; with --trace or --rates give one scale");
    }
    let rate_scale = args.rate_scale.first().copied().unwrap_or(1.0);
    let mut trace = match &args.trace {
        Some(path) => Some((path.clone(), trace::read_trace(path, &names, rate_scale)?)),
        None => None,
    };
    let mut rates_duration = None;
    if let Some(path) = &args.rates {
        let list: Vec<slo::Service> = services
            .iter()
            .map(|s| slo::Service { name: s.name.clone(), model: s.model.clone().unwrap_or_default(), rate: s.rate, slo_ms: s.slo_ms })
            .collect();
        let rates = parva_core::trace::RateTrace::read(path, &list)?;
        let duration = args.duration.unwrap_or(rates.last_change_s() + 60.0);
        let times = trace::times_from_rates(&rates, &names, duration, rate_scale, args.seed)
            .map_err(|e| anyhow::anyhow!("--rates {}: {e}", path.display()))?;
        trace = Some((path.clone(), times));
        rates_duration = Some(duration);
    }
    let duration_s = match (args.duration, &trace) {
        (Some(d), _) => d,
        (None, _) if rates_duration.is_some() => rates_duration.unwrap_or(60.0),
        // Up to and including the trace's last request.
        (None, Some((_, t))) => t.values().filter_map(|v| v.last()).fold(0.0f64, |a, b| a.max(*b)) + 0.001,
        (None, None) => 60.0,
    };
    if let Some((path, times)) = &trace {
        let beyond: usize = times.values().map(|v| v.iter().filter(|t| **t >= duration_s).count()).sum();
        if beyond > 0 {
            tracing::warn!("{}: {beyond} requests are due after --duration ({duration_s} s) and are not sent", path.display());
        }
    }
    let distribution: Distribution = args.distribution.into();
    let spec = Spec {
        endpoint,
        services,
        trace,
        distribution,
        seed: args.seed,
        rate_scale,
        percentile: args.percentile,
        duration_s,
        warmup_s: args.warmup,
        max_in_flight: args.max_in_flight,
        connections: args.connections,
        timeout: Duration::from_secs_f64(args.timeout),
        wait_ready: Duration::from_secs_f64(args.wait_ready),
        wire: match args.wire {
            WireArg::Binary => Wire::Binary,
            WireArg::Json => Wire::Json,
            WireArg::Shm => Wire::Shm,
        },
        tool: super::tool_version(),
    };
    spec.check()?;
    let out_dir = args.out.clone().unwrap_or_else(default_out_dir);
    if out_dir.exists() && !out_dir.is_dir() {
        anyhow::bail!("--out {}: exists and is not a directory", out_dir.display());
    }
    let prediction = match (map, profiles, &args.plan) {
        (Some(map), Some(profiles), Some(plan)) if spec.trace.is_none() => Some(Prediction {
            how: format!("parva simulate of {} with profiles {}, same duration, warm-up, arrivals, seed and rate scale", plan.display(), profiles.dir.display()),
            services: listed,
            map,
            profiles,
        }),
        (Some(_), _, _) if spec.trace.is_some() => {
            tracing::warn!("no simulator prediction with --trace or --rates (the simulator replays fixed rates only)");
            None
        }
        _ => None,
    };
    let data_path = match &prediction {
        Some(p) => {
            let wire = match spec.wire {
                Wire::Binary => super::DataPathWire::Binary,
                Wire::Json => super::DataPathWire::Json,
                Wire::Shm => super::DataPathWire::Shm,
            };
            super::data_path_costs(&p.profiles.dir, args.models.as_deref(), wire, p.map.segments.iter().map(|s| (s.service.as_str(), s.model.as_str())))?
        }
        None => Default::default(),
    };
    // Every load's spec (its duration checked) before the first request.
    let loads = args.rate_scale.iter().map(|&scale| spec.at_load(scale, &args.rate_scale, args.equal_requests)).collect::<Result<Vec<Spec>, _>>()?;
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    let several = args.rate_scale.len() > 1;
    let mut reports = Vec::with_capacity(args.rate_scale.len());
    for spec in loads {
        let scale = spec.rate_scale;
        let dir = if several { out_dir.join(format!("x{scale}")) } else { out_dir.clone() };
        if several {
            eprintln!("load x{scale}: {:.0} s", spec.duration_s);
        }
        let predicted = match &prediction {
            Some(p) => Some(
                predict::predict(&p.map, &p.profiles, p.services.as_deref(), &spec, data_path.clone())
                    .context("predicting the plan's latency with the simulator")?,
            ),
            None => None,
        };
        let live = Arc::new(Live::default());
        let bar = progress_bar(args.json, spec.duration_s);
        let verification = rt.block_on(async {
            // SIGINT or SIGTERM ends the run early: nothing more is sent, the shared-memory regions
            // are unregistered and their files removed, and no report is written.
            let stop = {
                let (live, signal) = (live.clone(), super::serve::shutdown_signal());
                tokio::spawn(async move {
                    signal.await;
                    tracing::warn!("interrupted: stopping the load");
                    live.stop();
                })
            };
            let progress = tokio::spawn(show_progress(bar.clone(), live.clone(), spec.duration_s));
            let result = parva_verify::verify(&spec, live.clone()).await;
            progress.abort();
            stop.abort();
            result
        });
        bar.finish_and_clear();
        let mut verification = verification?;
        if let (Some(p), Some(pred)) = (&prediction, &predicted) {
            predict::attach(&mut verification.report, pred, p.how.clone());
        }
        let plots = verification.plots()?;
        let written = report::write_files(&dir, &verification.report, &plots)?;
        if !args.json {
            out!("{}", report::table(&verification.report))?;
        }
        eprintln!("report: {}", written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
        reports.push(verification.report);
    }
    let all_pass = reports.iter().all(|r| r.all_pass);
    if several {
        let loads = report::loads_csv(&reports)?;
        let path = out_dir.join(report::LOADS_CSV_FILE);
        parva_core::files::write_atomic(&path, &loads).with_context(|| format!("write {}", path.display()))?;
        if args.json {
            super::print_json(&reports)?;
        } else {
            out!("{}", report::loads_table(&reports))?;
        }
        eprintln!("by load: {}", path.display());
    } else if let (true, Some(r)) = (args.json, reports.first()) {
        super::print_json(r)?;
    }
    Ok(super::exit(all_pass))
}

/// Most loads one `--rate-scale` list may ask for.
const MAX_SCALES: usize = 16;

/// The services of a map, in map order, with the map's rate and SLO columns.
fn services_of_map(map: &DeploymentMap, path: &Path) -> anyhow::Result<Vec<ServiceSpec>> {
    let slos = parva_core::sim::service_slos(map, None)
        .with_context(|| format!("{}: give --services (or --slo-dir) for a map without rate/slo_ms columns", path.display()))?;
    let mut out: Vec<ServiceSpec> = Vec::new();
    for seg in &map.segments {
        if out.iter().any(|s| s.name == seg.service) {
            continue;
        }
        let (rate, slo_ms) = slos[&seg.service];
        out.push(ServiceSpec { name: seg.service.clone(), model: Some(seg.model.clone()), rate, slo_ms });
    }
    Ok(out)
}

fn default_out_dir() -> PathBuf {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    // 2025-01-31T12:00:00Z -> verify-20250131-120000
    let stamp: String = report::utc_timestamp(now).chars().filter(|c| c.is_ascii_digit() || *c == 'T').collect();
    PathBuf::from("reports").join(format!("verify-{}", stamp.replace('T', "-")))
}

fn progress_bar(json: bool, duration_s: f64) -> indicatif::ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new((duration_s * 1000.0) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {bar:20} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("waiting for the endpoint");
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

async fn show_progress(bar: indicatif::ProgressBar, live: Arc<Live>, duration_s: f64) {
    use std::sync::atomic::Ordering::Relaxed;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Some(start) = live.started.get() else { continue };
        let elapsed = start.elapsed().as_secs_f64().min(duration_s);
        bar.set_position((elapsed * 1000.0) as u64);
        let phase = if elapsed >= duration_s { "draining" } else { "load" };
        bar.set_message(format!(
            "{phase} {:.0}/{:.0} s  due {} ok {} failed {} dropped {}",
            elapsed,
            duration_s,
            live.due.load(Relaxed),
            live.succeeded.load(Relaxed),
            live.failed.load(Relaxed),
            live.dropped.load(Relaxed)
        ));
    }
}
