use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use parva_core::sim::{self, SimConfig, SimReport};
use parva_control::day::{DayConfig, DayReport, Policy};

use super::DistributionArg;
use parva_core::{DeploymentMap, ProfileSet, slo};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["plan", "rates"])))]
pub struct SimulateArgs {
    /// Deployment map to simulate (parva's or ParvaGPU's CSV).
    #[arg(long = "map", alias = "plan", value_name = "FILE")]
    plan: Option<PathBuf>,
    /// A rate trace (`time_s,service,rate`, see the README's "Load that changes over the day"):
    /// simulate a day of changing load under each --policy, which makes its own plans (needs
    /// --services or --slo-dir for models and SLOs, and --gpu-type).
    #[arg(long, value_name = "TRACE", conflicts_with = "plan", requires = "gpu_type")]
    rates: Option<PathBuf>,
    /// With --rates: the policies to compare (repeatable or comma-separated): static (one plan
    /// for every peak), oracle (each piece's own plan, reconfigured for free), forecast (parva's
    /// controller as `deploy --follow` runs it: forecasts from trend, time of day and
    /// burstiness, paying for reconfigurations), follow (the same controller, reactive: only
    /// the last windows).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [PolicyArg::Static, PolicyArg::Oracle, PolicyArg::Forecast])]
    policy: Vec<PolicyArg>,
    /// With --rates: the GPU type plans are made for.
    #[arg(long = "gpu-type", value_name = "TYPE")]
    gpu_type: Option<String>,
    #[command(flatten)]
    controller: super::flags::ControllerFlags,
    /// With --rates: most seconds simulated of each piece of the day (pieces are weighted by
    /// their length; see the README).
    #[arg(long, default_value = "20s", value_parser = super::flags::parse_seconds)]
    sample: f64,
    /// With --rates: seconds each reconfiguration step takes (as `parva replan --cost`).
    #[arg(long, value_name = "KEY=S,...", default_value = "")]
    cost: parva_planner::replan::Costs,
    /// With --rates: best-effort jobs (`job,model,kind,min_gpcs,max_gpcs,priority`) on the GPCs
    /// each policy leaves idle of the cluster static needs; reports their GPU-hours and samples.
    #[arg(long, value_name = "FILE", requires = "rates")]
    jobs: Option<PathBuf>,
    /// With --jobs: seconds a job has to checkpoint and stop when inference takes its instance
    /// back (a new segment waits at most this long for it).
    #[arg(long, default_value = "30s", value_parser = super::flags::parse_seconds, requires = "jobs")]
    job_grace: f64,
    /// With --jobs: seconds a job instance spends starting and resuming from its checkpoint
    /// before it makes progress (assumed; a worker starts in 1.2-2 s on an H100/H200).
    #[arg(long, default_value = "10s", value_parser = super::flags::parse_seconds, requires = "jobs")]
    job_start: f64,
    /// With --rates: largest MPS process count per planned segment.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=48))]
    max_procs: u32,
    /// With --rates: GPUs per node when numbering the plans.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    gpus_per_node: u32,
    /// Profile tables giving each segment's batch latency.
    #[arg(long, value_name = "DIR", required_unless_present = "fleet")]
    prof_data: Option<PathBuf>,
    /// A mixed fleet's map (one GPU type per node): the fleet file (`plan --fleet`) whose
    /// profile tables time each segment, by its node's type (what --prof-data is for one type).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["prof_data", "rates", "models", "slo_dir"])]
    fleet: Option<PathBuf>,
    /// Model metadata (`<model>.json`): with a `data_path.csv` beside the profile tables, each
    /// request's latency includes its data path, from its bytes.
    #[arg(long, value_name = "DIR")]
    models: Option<PathBuf>,
    /// Which wire's data path to add (the row of data_path.csv).
    #[arg(long, value_enum, value_name = "WIRE", default_value_t = super::DataPathWire::Binary)]
    data_path_wire: super::DataPathWire,
    #[command(flatten)]
    catalogue: super::CatalogueFiles,
    /// Rates and SLOs per service, overriding the map's `rate`/`slo_ms` columns (needed for
    /// ParvaGPU maps).
    #[arg(long, value_name = "FILE", conflicts_with = "slo_dir")]
    services: Option<PathBuf>,
    /// With --services: the list's models and SLOs win over the map's where they differ (and the
    /// map's services it lacks are left out); without it such a list is refused, the differences
    /// named. Rates always come from the list.
    #[arg(long, requires = "services")]
    replace_services: bool,
    /// ParvaGPU SLO directory (with --slo), instead of --services.
    #[arg(long, value_name = "DIR", requires = "slo")]
    slo_dir: Option<PathBuf>,
    /// Scenario (row, 1-based) of the SLO files (with --slo-dir).
    #[arg(long, value_name = "N", requires = "slo_dir")]
    slo: Option<usize>,
    /// Seconds of traffic (e.g. 60, 60s, 2m): at most one day, and at most 2e8 expected arrivals
    /// over all services (Σ rate x rate scale x duration), both checked before the run [default:
    /// 60s; with --rates, the trace's last change plus --window].
    #[arg(long, value_parser = super::flags::parse_seconds)]
    duration: Option<f64>,
    /// Leading seconds not counted in the results (with --rates: of each piece) [default: 5s;
    /// with --rates, 2s].
    #[arg(long, value_parser = super::flags::parse_seconds)]
    warmup: Option<f64>,
    /// Arrival process of every service.
    #[arg(long, value_enum, default_value_t = DistributionArg::Poisson)]
    distribution: DistributionArg,
    /// Random seed; the same seed gives the same result.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Percentile that decides pass/fail.
    #[arg(long, default_value_t = 99.0)]
    percentile: f64,
    /// Multiply every service's rate by this: in (0, 1000].
    #[arg(long, default_value_t = 1.0)]
    rate_scale: f64,
    /// Slowdown of a segment that shares its GPU with other MPS segments: 0.2 = its batches take
    /// 20 % longer (0..=10) [default: 0.2 for a map of a GPU type without MIG, 0 for MIG, whose
    /// instances are isolated].
    #[arg(long, value_name = "X")]
    interference: Option<f64>,
    /// Serving margin the router batches to (SLO - margin), in ms or `N%` of each SLO [default:
    /// the map's `margin_ms` column, none when it has none]; pass/fail is against the SLO itself.
    #[arg(long, alias = "margin-ms", value_name = "MS|PCT%")]
    margin: Option<slo::Margin>,
    /// Write simulate.csv and simulate.json into this directory.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PolicyArg {
    Static,
    Oracle,
    Follow,
    Forecast,
}

impl From<PolicyArg> for Policy {
    fn from(p: PolicyArg) -> Self {
        match p {
            PolicyArg::Static => Policy::Static,
            PolicyArg::Oracle => Policy::Oracle,
            PolicyArg::Follow => Policy::Follow,
            PolicyArg::Forecast => Policy::Forecast,
        }
    }
}

pub fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    args.catalogue.load()?;
    if let Some(trace) = args.rates.clone() {
        return run_day(args, &trace);
    }
    let plan_path = args.plan.clone().unwrap_or_default();
    let duration = args.duration.unwrap_or(60.0);
    let warmup = args.warmup.unwrap_or(5.0);
    // Flags first: nothing is read when one is out of its range.
    parva_core::limits::DURATION_S.check(duration).map_err(|rule| anyhow::anyhow!("--duration: {rule}"))?;
    parva_core::limits::RATE_SCALE.check(args.rate_scale).map_err(|rule| anyhow::anyhow!("--rate-scale: {rule}"))?;
    if warmup >= duration {
        anyhow::bail!("--warmup ({warmup}s) must be shorter than --duration ({duration}s)");
    }
    if !(args.percentile > 0.0 && args.percentile < 100.0) {
        anyhow::bail!("--percentile must be in (0, 100); got {}", args.percentile);
    }
    let (map, _) = DeploymentMap::read(&plan_path)?;
    // One type's tables, or (a mixed fleet's map) each node type's from the fleet file.
    let (profiles, by_type) = match (&args.fleet, &args.prof_data) {
        (Some(file), _) => {
            let fleet = parva_core::fleet::Fleet::read(file)?;
            let mut by_type = std::collections::BTreeMap::new();
            for t in &fleet.types {
                by_type.insert(t.gpu.id.to_string(), ProfileSet::read_dir(&t.prof_data, Some(t.gpu))?);
            }
            for id in map.gpu_type_ids() {
                if !by_type.contains_key(&id) {
                    anyhow::bail!("{}: the map has {id} nodes but the fleet {} lists no {id}", plan_path.display(), file.display());
                }
            }
            (None, Some(by_type))
        }
        (None, Some(dir)) => {
            if map.gpu_type_ids().len() > 1 {
                anyhow::bail!(
                    "{}: the map mixes GPU types ({}), one per node: give --fleet FILE for each type's profile tables",
                    plan_path.display(),
                    map.gpu_type_ids().join(", ")
                );
            }
            (Some(ProfileSet::read_dir(dir, None)?), None)
        }
        (None, None) => anyhow::bail!("give --prof-data DIR (or --fleet FILE for a mixed fleet's map)"),
    };
    let services = match (&args.services, &args.slo_dir, args.slo) {
        (Some(f), _, _) => Some(match &profiles {
            Some(profiles) => slo::read_services(f, profiles)?,
            None => slo::read_service_list(f, None)?,
        }),
        (None, Some(d), Some(n)) => Some(slo::read_slo_pair(d, n, profiles.as_ref().context("--slo-dir needs --prof-data")?)?),
        _ => None,
    };
    if let (Some(list), Some(file)) = (&services, &args.services) {
        let refuse = super::Contradictions { missing: true, extra: true, models: true, slos: true };
        super::check_services_against_map(&map, None, list, file, refuse, args.replace_services)?;
    }
    let mut map = map;
    if let Some(margin) = args.margin {
        let listed: std::collections::BTreeMap<&str, f64> =
            services.iter().flatten().map(|s| (s.name.as_str(), s.slo_ms)).collect();
        for seg in &mut map.segments {
            if let Some(slo_ms) = listed.get(seg.service.as_str()).copied().or(seg.slo_ms) {
                let target = margin.target(&seg.service, slo_ms)?;
                seg.margin_ms = Some(slo_ms - target);
            }
        }
    }
    let config = SimConfig {
        duration_s: duration,
        warmup_s: warmup,
        seed: args.seed,
        distribution: args.distribution.into(),
        percentile: args.percentile,
        rate_scale: args.rate_scale,
        interference: args.interference.unwrap_or_else(|| parva_core::deploy::default_interference(&map)),
        // The slowdowns `profile --pairs` measured, where it measured (MPS maps).
        measured: match (&profiles, &by_type) {
            (Some(p), _) => parva_core::interference::for_map(&map, &p.dir)?,
            // A mixed map: the slowdowns measured for its MPS types (MIG instances are isolated).
            (None, Some(by_type)) => {
                let mut all = std::collections::BTreeMap::new();
                for (id, p) in by_type.iter().filter(|(id, _)| parva_core::GpuType::by_id(id).is_ok_and(|t| t.is_mps())) {
                    let part = parva_core::DeploymentMap {
                        segments: map.segments.iter().filter(|s| s.gpu_type.as_deref() == Some(id.as_str())).cloned().collect(),
                        jobs: Vec::new(),
                    };
                    all.extend(parva_core::interference::for_map(&part, &p.dir)?);
                }
                all
            }
            (None, None) => Default::default(),
        },
        data_path_s: match &args.prof_data {
            Some(dir) => super::data_path_costs(dir, args.models.as_deref(), args.data_path_wire, map.segments.iter().map(|s| (s.service.as_str(), s.model.as_str())))?,
            None => Default::default(),
        },
    };
    let started = std::time::Instant::now();
    let report = match (&profiles, &by_type) {
        (_, Some(t)) => sim::simulate_fleet(&map, t, services.as_deref(), &config),
        (Some(p), None) => sim::simulate(&map, p, services.as_deref(), &config),
        (None, None) => anyhow::bail!("give --prof-data DIR (or --fleet FILE)"),
    }
    .with_context(|| format!("simulating {}", plan_path.display()))?;
    tracing::info!(seconds = started.elapsed().as_secs_f64(), events = report.events, "simulated");
    if let Some(dir) = &args.out {
        write_outputs(dir, &report)?;
    }
    if args.json {
        super::print_json(&report)?;
    } else {
        print_table(&report)?;
    }
    Ok(super::exit(report.all_pass))
}

fn write_outputs(dir: &std::path::Path, report: &SimReport) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for s in &report.services {
        w.serialize(s)?;
    }
    let table = w.into_inner().map_err(|e| anyhow::anyhow!("encoding simulate.csv: {e}"))?;
    parva_core::files::write_atomic(&dir.join("simulate.csv"), &table)?;
    parva_core::files::write_atomic(&dir.join("simulate.json"), serde_json::to_string_pretty(report)?.as_bytes())?;
    Ok(())
}

fn print_table(r: &SimReport) -> Result<(), super::StdoutError> {
    let p = r.config.percentile;
    outln!(
        "{:<24} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}  result",
        "service", "offered/s", "served/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "SLO ms", "in SLO %"
    )?;
    for s in &r.services {
        outln!(
            "{:<24} {:>9.1} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9.2}  {}",
            s.service, s.offered_rate, s.served_rate, s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms, s.slo_ms, s.attainment_pct,
            if s.pass { "pass" } else { "FAIL" }
        )?;
    }
    let failed = r.services.iter().filter(|s| !s.pass).count();
    outln!(
        "{} of {} services meet their SLO at p{p} ({} s simulated, {:?} arrivals, seed {})",
        r.services.len() - failed,
        r.services.len(),
        r.config.duration_s,
        r.config.distribution,
        r.config.seed
    )
}

/// `simulate --rates`: a day of changing load under each policy.
fn run_day(args: SimulateArgs, trace_path: &std::path::Path) -> anyhow::Result<ExitCode> {
    if !(args.percentile > 0.0 && args.percentile < 100.0) {
        anyhow::bail!("--percentile must be in (0, 100); got {}", args.percentile);
    }
    if args.rate_scale != 1.0 {
        anyhow::bail!("--rate-scale applies to --map; scale the trace's rates instead");
    }
    let gpu = parva_core::GpuType::by_id(args.gpu_type.as_deref().unwrap_or_default())?;
    let profiles = ProfileSet::read_dir(args.prof_data.as_deref().context("--rates needs --prof-data")?, Some(gpu))?;
    let services = match (&args.services, &args.slo_dir, args.slo) {
        (Some(f), _, _) => slo::read_services(f, &profiles)?,
        (None, Some(d), Some(n)) => slo::read_slo_pair(d, n, &profiles)?,
        _ => anyhow::bail!("--rates needs the services' models and SLOs: give --services FILE, or --slo-dir DIR --slo N"),
    };
    let trace = parva_core::trace::RateTrace::read(trace_path, &services)?;
    let jobs = match &args.jobs {
        Some(path) => Some(parva_control::day::DayJobs {
            jobs: parva_core::jobs::read_jobs(path, Some(&profiles))?,
            grace_s: args.job_grace,
            start_s: args.job_start,
        }),
        None => None,
    };
    let follow = args.controller.settings(parva_control::Mode::Forecast)?;
    let config = DayConfig {
        duration_s: args.duration.unwrap_or(trace.last_change_s() + follow.window_s),
        sample_s: args.sample,
        warmup_s: args.warmup.unwrap_or(2.0),
        seed: args.seed,
        percentile: args.percentile,
        follow,
        costs: args.cost,
        jobs,
    };
    let options = parva_planner::PlanOptions {
        max_procs: args.max_procs,
        gpus_per_node: args.gpus_per_node,
        margin: args.margin.unwrap_or(slo::Margin::DEFAULT),
        ..parva_planner::PlanOptions::default()
    };
    let input = parva_planner::PlanInput { gpu, profiles: &profiles, services: &services, options: &options };
    let mut policies: Vec<Policy> = args.policy.iter().map(|p| Policy::from(*p)).collect();
    policies.sort();
    policies.dedup();
    let started = std::time::Instant::now();
    let mut progress = DayProgress::new();
    let report = parva_control::day::simulate_day(input, &trace, &config, &policies, &mut |p| progress.show(p))
        .with_context(|| format!("simulating the day of {}", trace_path.display()))?;
    progress.finish();
    tracing::info!(seconds = started.elapsed().as_secs_f64(), pieces = report.pieces_simulated, "simulated the day");
    if let Some(dir) = &args.out {
        write_day(dir, &report)?;
    }
    let pass = report.policies.iter().all(|p| p.worst_service_pct >= args.percentile);
    if args.json {
        super::print_json(&report)?;
    } else {
        print_day(&report, started.elapsed().as_secs_f64())?;
    }
    Ok(super::exit(pass))
}

/// Progress of a day simulation (the policies run side by side): a bar per policy at a terminal;
/// otherwise a line on stderr per tenth of each policy's stage (a log file still shows a long run
/// moving).
struct DayProgress {
    bars: indicatif::MultiProgress,
    bar: std::collections::BTreeMap<&'static str, indicatif::ProgressBar>,
    terminal: bool,
    last: std::collections::BTreeMap<(&'static str, &'static str), u64>,
}

impl DayProgress {
    fn new() -> Self {
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bars = indicatif::MultiProgress::new();
        if !terminal {
            bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        DayProgress { bars, bar: Default::default(), terminal, last: Default::default() }
    }

    fn show(&mut self, p: parva_control::day::Progress) {
        let what = if p.stage == "planning" { "controller looks" } else { "pieces" };
        let name = p.policy.name();
        if self.terminal {
            let bars = &self.bars;
            let bar = self.bar.entry(name).or_insert_with(|| {
                let bar = bars.add(indicatif::ProgressBar::new(0));
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{spinner} {msg:32} [{elapsed_precise}] {bar:30} {pos}/{len}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar
            });
            bar.set_message(format!("{name} {} ({what})", p.stage));
            bar.set_length(p.total);
            bar.set_position(p.done);
            return;
        }
        let tenth = (p.done * 10).checked_div(p.total).unwrap_or(10);
        if self.last.insert((name, p.stage), tenth) != Some(tenth) {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "simulate: {name} {}: {}/{} {what}", p.stage, p.done, p.total);
        }
    }

    fn finish(&self) {
        for b in self.bar.values() {
            b.finish_and_clear();
        }
        let _ = self.bars.clear();
    }
}

fn write_day(dir: &std::path::Path, r: &DayReport) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["policy", "start_s", "end_s", "gpus", "transition", "service", "rate", "attainment_pct", "p99_ms"])?;
    for p in &r.policies {
        let name = p.policy.name().to_string();
        for x in &p.pieces {
            for s in &x.services {
                w.write_record([
                    name.clone(),
                    x.start_s.to_string(),
                    x.end_s.to_string(),
                    x.gpus.to_string(),
                    x.transition.to_string(),
                    s.service.clone(),
                    format!("{:.3}", s.rate),
                    format!("{:.4}", s.attainment_pct),
                    format!("{:.3}", s.p99_ms),
                ])?;
            }
        }
    }
    let pieces = w.into_inner().map_err(|e| anyhow::anyhow!("encoding day-pieces.csv: {e}"))?;
    parva_core::files::write_atomic(&dir.join("day-pieces.csv"), &pieces)?;
    parva_core::files::write_atomic(&dir.join("day.json"), (serde_json::to_string_pretty(r)? + "\n").as_bytes())?;
    let series: Vec<parva_verify::plot::DaySeries<'_>> = r
        .policies
        .iter()
        .map(|p| parva_verify::plot::DaySeries {
            name: p.policy.name(),
            gpus: p.pieces.iter().map(|x| (x.start_s, x.end_s, x.gpus as f64)).collect(),
            attainment: p
                .bucket_worst_pct
                .iter()
                .enumerate()
                .map(|(k, pct)| {
                    let at = k as f64 * parva_control::day::BUCKET_S;
                    (at, (at + parva_control::day::BUCKET_S).min(r.config.duration_s), *pct)
                })
                .collect(),
        })
        .collect();
    let demand: Vec<(f64, f64, f64)> = r.policies.first().map(|p| p.pieces.iter().map(|x| (x.start_s, x.end_s, x.demand)).collect()).unwrap_or_default();
    let svg = parva_verify::plot::day_svg("Demand, GPUs and SLO attainment over the day", &demand, &series)?;
    parva_core::files::write_atomic(&dir.join("day.svg"), svg.as_bytes())?;
    Ok(())
}

fn print_day(r: &DayReport, wall_s: f64) -> Result<(), super::StdoutError> {
    outln!(
        "{:<9} {:>10} {:>9} {:>9} {:>11} {:>11} {:>11} {:>8} {:>9} {:>10} {:>13}",
        "policy", "GPU-hours", "peak GPUs", "in SLO %", "worst svc %", "worst 10m %", "replans/day", "refused", "created", "destroyed", "transition s"
    )?;
    for p in &r.policies {
        outln!(
            "{:<9} {:>10.1} {:>9} {:>9.3} {:>11.3} {:>11.2} {:>11.1} {:>8} {:>9} {:>10} {:>13.0}",
            p.policy.name(),
            p.gpu_hours,
            p.peak_gpus,
            p.within_slo_pct,
            p.worst_service_pct,
            p.worst_bucket_pct,
            p.replans_per_day,
            p.refused,
            p.instances_created,
            p.instances_destroyed,
            p.transition_seconds
        )?;
    }
    if let Some(cluster) = r.cluster_gpus {
        outln!(
            "best-effort jobs on the idle GPCs of the {cluster} GPUs static needs (grace {} s, start {} s):",
            r.config.jobs.as_ref().map_or(0.0, |j| j.grace_s),
            r.config.jobs.as_ref().map_or(0.0, |j| j.start_s)
        )?;
        outln!("{:<9} {:>10} {:>14} {:>10} {:>7} {:>7} {:>15}", "policy", "job GPU-h", "job samples", "idle GPU-h", "starts", "stops", "goodput req/s")?;
        for p in &r.policies {
            outln!(
                "{:<9} {:>10.1} {:>14.3e} {:>10.1} {:>7} {:>7} {:>15.1}",
                p.policy.name(), p.job_gpu_hours, p.job_samples, p.idle_gpu_hours, p.job_starts, p.job_stops, p.goodput_rps
            )?;
        }
    }
    let hours = |pol: Policy| r.policies.iter().find(|p| p.policy == pol).map(|p| p.gpu_hours);
    for c in r.policies.iter().filter(|p| p.policy.mode().is_some()) {
        for base in [Policy::Static, Policy::Oracle] {
            if let Some(b) = hours(base).filter(|b| *b > 0.0) {
                outln!("{} uses {:.2}x the GPU-hours of {}", c.policy.name(), c.gpu_hours / b, base.name())?;
            }
        }
    }
    // Each service's day beside its worst 10 minutes, per policy.
    outln!("within SLO per service: the day, and its worst 10 minutes (from hh:mm of the trace)")?;
    let mut head = format!("{:<24} {:>7}", "service", "SLO ms");
    for p in &r.policies {
        head.push_str(&format!(" {:>26}", p.policy.name()));
    }
    outln!("{head}")?;
    let names: Vec<&str> = r.policies.first().map(|p| p.services.iter().map(|s| s.service.as_str()).collect()).unwrap_or_default();
    for (i, name) in names.iter().enumerate() {
        let slo = r.policies[0].services[i].slo_ms;
        let mut line = format!("{name:<24} {slo:>7.0}");
        for p in &r.policies {
            let s = &p.services[i];
            let at = s.worst_bucket_s;
            let cell = format!("{:.3} % ({:.2} % {:02}:{:02})", s.within_slo_pct, s.worst_bucket_pct, (at / 3600.0) as u64, ((at % 3600.0) / 60.0) as u64);
            line.push_str(&format!(" {cell:>26}"));
        }
        outln!("{line}")?;
    }
    for p in &r.policies {
        let below: usize = p.services.iter().map(|s| s.buckets_below_95).sum();
        if below > 0 {
            outln!("{}: {below} service-10-minute pieces below 95 % within SLO", p.policy.name())?;
        }
    }
    outln!(
        "{} h of trace, {} pieces simulated ({:.0} s of simulated traffic, at most {} s per piece) in {:.1} s",
        r.config.duration_s / 3600.0,
        r.pieces_simulated,
        r.seconds_simulated,
        r.config.sample_s,
        wall_s
    )
}
