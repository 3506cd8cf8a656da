use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use parva_core::sim::{self, SimConfig, SimReport};

use super::DistributionArg;
use parva_core::{DeploymentMap, ProfileSet, slo};

#[derive(clap::Args)]
pub struct SimulateArgs {
    /// Deployment map to simulate (parva's or ParvaGPU's CSV).
    #[arg(long = "map", alias = "plan", value_name = "FILE")]
    plan: PathBuf,
    /// Profile tables giving each segment's batch latency.
    #[arg(long, value_name = "DIR")]
    prof_data: PathBuf,
    #[command(flatten)]
    catalogue: super::CatalogueFiles,
    /// Rates and SLOs per service, overriding the map's `rate`/`slo_ms` columns (needed for
    /// ParvaGPU maps).
    #[arg(long, value_name = "FILE", conflicts_with = "slo_dir")]
    services: Option<PathBuf>,
    /// ParvaGPU SLO directory (with --slo), instead of --services.
    #[arg(long, value_name = "DIR", requires = "slo")]
    slo_dir: Option<PathBuf>,
    /// Scenario (row, 1-based) of the SLO files (with --slo-dir).
    #[arg(long, value_name = "N", requires = "slo_dir")]
    slo: Option<usize>,
    /// Seconds of traffic (e.g. 60, 60s, 2m): at most one day, and at most 2e8 expected arrivals
    /// over all services (Σ rate x rate scale x duration), both checked before the run.
    #[arg(long, default_value = "60s", value_parser = parse_seconds)]
    duration: f64,
    /// Leading seconds not counted in the results.
    #[arg(long, default_value = "5s", value_parser = parse_seconds)]
    warmup: f64,
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

/// Parse `60`, `60s`, `1.5s`, `500ms`, `2m` into seconds.
pub fn parse_seconds(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (num, scale) = if let Some(v) = t.strip_suffix("ms") {
        (v, 0.001)
    } else if let Some(v) = t.strip_suffix('s') {
        (v, 1.0)
    } else if let Some(v) = t.strip_suffix('m') {
        (v, 60.0)
    } else {
        (t, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if (v * scale).is_finite() && v >= 0.0 => Ok(v * scale),
        _ => Err(format!("expected a duration like 60s, 500ms or 2m; got {text:?}")),
    }
}

pub fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    args.catalogue.load()?;
    // Flags first: nothing is read when one is out of its range.
    parva_core::limits::DURATION_S.check(args.duration).map_err(|rule| anyhow::anyhow!("--duration: {rule}"))?;
    parva_core::limits::RATE_SCALE.check(args.rate_scale).map_err(|rule| anyhow::anyhow!("--rate-scale: {rule}"))?;
    if args.warmup >= args.duration {
        anyhow::bail!("--warmup ({}s) must be shorter than --duration ({}s)", args.warmup, args.duration);
    }
    if !(args.percentile > 0.0 && args.percentile < 100.0) {
        anyhow::bail!("--percentile must be in (0, 100); got {}", args.percentile);
    }
    let (map, _) = DeploymentMap::read(&args.plan)?;
    let profiles = ProfileSet::read_dir(&args.prof_data, None)?;
    let services = match (&args.services, &args.slo_dir, args.slo) {
        (Some(f), _, _) => Some(slo::read_services(f, &profiles)?),
        (None, Some(d), Some(n)) => Some(slo::read_slo_pair(d, n, &profiles)?),
        _ => None,
    };
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
        duration_s: args.duration,
        warmup_s: args.warmup,
        seed: args.seed,
        distribution: args.distribution.into(),
        percentile: args.percentile,
        rate_scale: args.rate_scale,
    };
    let started = std::time::Instant::now();
    let report = sim::simulate(&map, &profiles, services.as_deref(), &config)
        .with_context(|| format!("simulating {}", args.plan.display()))?;
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
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut w = csv::Writer::from_path(dir.join("simulate.csv"))?;
    for s in &report.services {
        w.serialize(s)?;
    }
    w.flush()?;
    std::fs::write(dir.join("simulate.json"), serde_json::to_string_pretty(report)?)?;
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
