use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use parva_core::latency::LatencyModel;
use parva_core::mig::GpuType;
use parva_planner::{self as plan, Algorithm, PlanInput, PlanOptions};
use parva_core::{ProfileSet, slo};

#[derive(clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub input: PlanInputArgs,
    /// Where to write the map [default: deployment/SLO<N>/SLO<N>_deploy.csv with --slo,
    /// deployment/deploy.csv otherwise].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
    /// Best-effort jobs (`job,model,kind,min_gpcs,max_gpcs,priority`) for the GPCs the plan
    /// leaves idle: placed after the plan, which they never change, as `best-effort` map rows.
    #[arg(long, value_name = "FILE")]
    jobs: Option<PathBuf>,
    /// GPUs the cluster has for jobs [default: the plan's nodes, whole]. GPU i is node
    /// i / --gpus-per-node.
    #[arg(long, value_name = "N", requires = "jobs",
          value_parser = clap::value_parser!(u32).range(1..=parva_core::limits::MAX_GPUS_LIMIT as i64))]
    cluster_gpus: Option<u32>,
    /// Map format: parva's (every column, best-effort rows) or ParvaGPU's deploy CSV (serving
    /// segments only).
    #[arg(long, value_enum, default_value_t = MapFormatArg::Parva)]
    format: MapFormatArg,
    /// Plan under every planner and latency rule side by side (the exact planner on predicted
    /// tail latency and on ParvaGPU's rule, ParvaGPU's planner, and gpu-let's on types without
    /// MIG), each simulated at the services' rates: GPUs, GPCs and services meeting their SLO.
    /// Writes no map.
    #[arg(long, conflicts_with_all = ["out", "jobs", "format"])]
    compare: bool,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum MapFormatArg {
    Parva,
    Parvagpu,
}

/// What a plan is made from: profile tables, services, GPU type and the planner's options
/// (shared by `parva plan` and `parva replan`).
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("slos").required(true).args(["slo_dir", "services"])))]
pub struct PlanInputArgs {
    /// Directory of profile tables (one `<model>.csv` per model) for the GPU type.
    #[arg(long, value_name = "DIR", required_unless_present = "fleet")]
    pub(crate) prof_data: Option<PathBuf>,
    /// Plan over a mixed fleet instead of one GPU type: a `fleet.csv`
    /// (`gpu_type,prof_data,cost_per_hour,max_gpus,gpus_per_node`, one row per type). Each
    /// service goes to the types that serve it cheapest (a service may be split), within each
    /// type's max_gpus; the map keeps one type per node. Needs --services.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["prof_data", "gpu", "gpus_per_node", "max_shares", "interference", "models", "slo_dir"],
          requires = "services")]
    pub(crate) fleet: Option<PathBuf>,
    /// With --fleet: minimise the fleet's cost per hour, or its number of GPUs.
    #[arg(long, value_enum, default_value_t = ObjectiveArg::Cost, requires = "fleet")]
    pub(crate) objective: ObjectiveArg,
    /// Directory holding ParvaGPU's `SLO_req_rate.csv` and `SLO_latency.csv` (with --slo).
    #[arg(long, value_name = "DIR", requires = "slo")]
    slo_dir: Option<PathBuf>,
    /// Scenario (row, 1-based) of the SLO files.
    #[arg(long, value_name = "N", requires = "slo_dir")]
    slo: Option<usize>,
    /// Service list with header `service,model,rate,slo_ms`.
    #[arg(long, value_name = "FILE", conflicts_with = "slo_dir")]
    pub services: Option<PathBuf>,
    /// Model metadata (`<model>.json`): with a `data_path.csv` beside the profile tables (measured
    /// by scripts/bench/wire.sh), each service is also planned short of its SLO by its requests'
    /// data path, from their bytes.
    #[arg(long, value_name = "DIR")]
    models: Option<PathBuf>,
    /// Which wire's data path to plan for (the row of data_path.csv).
    #[arg(long, value_enum, value_name = "WIRE", default_value_t = super::DataPathWire::Binary)]
    data_path_wire: super::DataPathWire,
    /// GPU type (see `parva catalogue`), e.g. a100-80gb.
    #[arg(long = "gpu-type", alias = "gpu", value_name = "TYPE", required_unless_present = "fleet")]
    gpu: Option<String>,
    #[command(flatten)]
    catalogue: super::CatalogueFiles,
    /// GPUs per node when numbering the map.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    gpus_per_node: u32,
    /// Planning algorithm.
    #[arg(long, value_enum, default_value_t = AlgorithmArg::Optimal)]
    algorithm: AlgorithmArg,
    /// Which points a service may use and how much rate a segment may take [default: queueing
    /// for optimal; parvagpu always uses its own rule].
    #[arg(long, value_enum)]
    latency_model: Option<LatencyModelArg>,
    /// Latency percentile the queueing model keeps within the SLO.
    #[arg(long, default_value_t = 99.0)]
    percentile: f64,
    /// ParvaGPU's rule: a point is admissible when its profiled batch latency < budget x SLO.
    #[arg(long, default_value_t = 0.45)]
    latency_budget: f64,
    /// Largest MPS process count per segment.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=48))]
    max_procs: u32,
    /// Most MPS shares (segments) on one GPU, for GPU types without MIG [default: the type's,
    /// 10]. gpu-let uses at most 2 "gpu-lets" per GPU.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=10))]
    max_shares: Option<u8>,
    /// GPU types without MIG: plan every segment as if its batches took this much longer beside
    /// the other shares of its GPU (0.2 = 20 %, 0..=10) [default: 0.2, the worst pair measured on
    /// an H200 being 1.21x]. MIG instances are isolated: not for MIG types.
    #[arg(long, value_name = "X")]
    interference: Option<f64>,
    /// Most GPUs the plan may use: a plan that would need more is refused before it is
    /// attempted, with the number it would need (1..=100000).
    #[arg(long, default_value_t = parva_core::limits::DEFAULT_MAX_GPUS,
          value_parser = clap::value_parser!(u32).range(1..=parva_core::limits::MAX_GPUS_LIMIT as i64))]
    max_gpus: u32,
    /// Serving margin: plan each service to its SLO minus this, in ms (`3`, `3ms`) or percent of
    /// the SLO (`5%`); the router batches and admits to the same target, and verify checks the
    /// SLO itself. `0` plans to the SLO (ParvaGPU's rule). The default covers what the latency
    /// model does not see (HTTP, IPC, the client; see the README's "Planning margin").
    #[arg(long, alias = "margin-ms", value_name = "MS|PCT%", default_value = "5%")]
    margin: parva_core::slo::Margin,
    /// Plan each service for its rate x (1 + H) (`0.2`: room for 20 % more load, or a burst);
    /// the map's `rate` column keeps the rate asked for, so `simulate` and `verify` load it at
    /// that rate and show the room. 0 to 10.
    #[arg(long, value_name = "H", default_value_t = 0.0)]
    headroom: f64,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
pub(crate) enum ObjectiveArg {
    /// The fleet's cost per hour (each GPU at its type's cost_per_hour).
    Cost,
    /// The number of GPUs, whatever their type.
    Gpus,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum AlgorithmArg {
    /// Fewest GPUs by integer programming over segment mixes and legal MIG layouts.
    Optimal,
    /// ParvaGPU's greedy planner, with legal MIG placements.
    Parvagpu,
    /// gpu-let's heuristic (ATC'22), for GPU types without MIG: at most two MPS shares of
    /// 20/40/50/60/80/100 % per GPU; for comparison with optimal.
    Gpulet,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum LatencyModelArg {
    /// Profiled batch latency < --latency-budget x SLO; a segment takes its profiled throughput.
    Parvagpu,
    /// Predicted tail latency (batch formation, queueing, execution) within the SLO at --percentile.
    Queueing,
    /// gpu-let's rule: two batches at 1.1x their profiled latency within the SLO, rates at their
    /// Poisson p99 (what --algorithm gpulet uses; with optimal, the same rule for a fair comparison).
    Gpulet,
}

/// What the plan report says about interference: which (model, share) were planned on a measured
/// slowdown and which on the margin.
fn interference_text(p: &Prepared, flag: bool, prof_data: &std::path::Path) -> String {
    let source = if flag { "--interference" } else { "the default margin" };
    let margin = format!("{:.0} % slower than profiled alone (interference {}: {source})", p.interference * 100.0, p.interference);
    let measured: Vec<String> = match &p.measured {
        Some(m) => {
            let mut by_model: std::collections::BTreeMap<&str, Vec<String>> = std::collections::BTreeMap::new();
            for pair in m.pairs().filter(|pair| p.profiles.get(&pair.model).is_some()) {
                let f = m.factor(&pair.model, pair.share).unwrap_or(1.0);
                let list = by_model.entry(pair.model.as_str()).or_default();
                let item = format!("{} % x{f:.2}", pair.share);
                if !list.contains(&item) {
                    list.push(item);
                }
            }
            by_model.into_iter().map(|(model, shares)| format!("{model} ({})", shares.join(", "))).collect()
        }
        None => Vec::new(),
    };
    if measured.is_empty() {
        format!("every MPS share below 100 % planned {margin}, for its neighbours on the GPU; no measured pairs (parva profile --pairs)")
    } else {
        format!(
            "measured beside the worst neighbour ({}): {}; every other MPS share below 100 % planned {margin}",
            prof_data.join(parva_core::interference::FILE).display(),
            measured.join("; ")
        )
    }
}

/// What a plan is made from, read and checked from the flags (shared with `parva replan`).
pub struct Prepared {
    pub gpu: &'static GpuType,
    pub profiles: ProfileSet,
    pub services: Vec<slo::Service>,
    pub options: PlanOptions,
    /// The MPS interference margin the tables were slowed by where nothing was measured (0 for
    /// MIG types).
    pub interference: f64,
    /// The measured slowdowns (`interference.csv` of the profile set), MPS types only.
    pub measured: Option<parva_core::interference::Interference>,
    /// With `--headroom`: the rate each service asked for (its `services` rate is planned higher).
    pub asked: std::collections::BTreeMap<String, f64>,
}

impl Prepared {
    /// Puts the rates asked for back into a map planned with `--headroom` (its capacity stays).
    pub fn restore_asked_rates(&self, map: &mut parva_core::DeploymentMap) {
        for seg in &mut map.segments {
            if let Some(rate) = self.asked.get(&seg.service) {
                seg.rate = Some(*rate);
            }
        }
    }
}

impl Prepared {
    pub fn input(&self) -> PlanInput<'_> {
        PlanInput { gpu: self.gpu, profiles: &self.profiles, services: &self.services, options: &self.options }
    }
}

/// A GPU type's profile tables as planned: read for the type (with `--max-shares`), and for MPS
/// types slowed by interference (measured where `profile --pairs` measured, the margin elsewhere).
pub(crate) struct TypeTables {
    pub gpu: &'static GpuType,
    pub profiles: ProfileSet,
    pub interference: f64,
    pub measured: Option<parva_core::interference::Interference>,
}

pub(crate) fn type_tables(args: &PlanInputArgs, gpu_id: &str, prof_data: &Path) -> anyhow::Result<TypeTables> {
    let gpu = GpuType::by_id(gpu_id)?;
    let gpu = match args.max_shares {
        Some(_) if !gpu.is_mps() => {
            anyhow::bail!("--max-shares is for GPU types without MIG (MPS shares); {} is cut by MIG (try {}-nomig)", gpu.id, gpu.id)
        }
        Some(n) => gpu.with_max_instances(n),
        None => gpu,
    };
    let profiles = ProfileSet::read_dir(prof_data, Some(gpu))?;
    let interference = match args.interference {
        Some(_) if !gpu.is_mps() => anyhow::bail!("--interference is for GPU types without MIG (MPS shares); {}'s MIG instances are isolated", gpu.id),
        Some(x) if !(x.is_finite() && (0.0..=parva_core::limits::MAX_INTERFERENCE).contains(&x)) => {
            anyhow::bail!("--interference must be a number in [0, {}]; got {x}", parva_core::limits::MAX_INTERFERENCE)
        }
        Some(x) => x,
        None if gpu.is_mps() => parva_core::mig::DEFAULT_MPS_INTERFERENCE,
        None => 0.0,
    };
    // Shares of one GPU slow each other: plan on tables that are that much slower.
    // Measured where `profile --pairs` measured, the margin elsewhere; a whole GPU is never slowed.
    let measured = if gpu.is_mps() { parva_core::interference::Interference::read_dir(prof_data)? } else { None };
    let whole = gpu.sizes().into_iter().max().unwrap_or(0);
    let profiles = if gpu.is_mps() {
        profiles.slowed_by(|m, s| parva_core::interference::plan_factor(measured.as_ref(), interference, m, s, whole))
    } else {
        profiles
    };
    Ok(TypeTables { gpu, profiles, interference, measured })
}

/// Read the catalogue, the profile tables and the services, and check the options.
pub fn prepare(args: &PlanInputArgs) -> anyhow::Result<Prepared> {
    if !(args.latency_budget > 0.0 && args.latency_budget <= 1.0) {
        anyhow::bail!("--latency-budget must be in (0, 1]; got {}", args.latency_budget);
    }
    if args.fleet.is_some() {
        anyhow::bail!("--fleet plans a new map (parva plan); re-planning a mixed fleet's map is not supported yet: plan it again");
    }
    args.catalogue.load()?;
    let (Some(gpu_id), Some(prof_data)) = (args.gpu.as_deref(), args.prof_data.as_deref()) else {
        anyhow::bail!("give --gpu-type and --prof-data (or --fleet)");
    };
    let TypeTables { gpu, profiles, interference, measured } = type_tables(args, gpu_id, prof_data)?;
    let services = match (&args.slo_dir, args.slo, &args.services) {
        (Some(dir), Some(n), _) => {
            // Zero-rate models are planned as services with rate 0: reported, never dropped silently.
            let scenario = slo::read_slo_scenario(dir, n, &profiles)?;
            scenario.services.into_iter().chain(scenario.zero_rate).collect()
        }
        (_, _, Some(file)) => slo::read_services(file, &profiles)?,
        _ => anyhow::bail!("give --slo-dir DIR --slo N, or --services FILE"),
    };
    // Tables measured on another GPU type plan with that GPU's latencies (issue 38: planning
    // a100-80gb on H100 tables said nothing).
    for (model, measured) in parva_profiler::meta::measured_gpu_types(prof_data) {
        if services.iter().any(|s| s.model == model) && !parva_profiler::meta::same_gpu(&measured, gpu.id) {
            eprintln!(
                "warning: the table of {model} in {} was measured on {measured} (its {model}.meta.json), not on {}: the plan uses another GPU's latencies; plan with --gpu-type {measured}, or profile {model} on {}",
                prof_data.display(), gpu.id, gpu.id
            );
        }
    }
    let data_path_ms = super::data_path_costs(prof_data, args.models.as_deref(), args.data_path_wire, services.iter().map(|s| (s.name.as_str(), s.model.as_str())))?
        .into_iter()
        .map(|(s, secs)| (s, secs * 1e3))
        .collect();
    let (services, asked, options) = options_for(args, services, data_path_ms)?;
    Ok(Prepared { gpu, profiles, services, options, interference, measured, asked })
}

/// The planner's options from the flags, and each service at its rate with `--headroom` (the
/// rates asked for kept apart), shared by a one-type plan and a fleet's.
pub(crate) fn options_for(
    args: &PlanInputArgs,
    services: Vec<slo::Service>,
    data_path_ms: std::collections::BTreeMap<String, f64>,
) -> anyhow::Result<(Vec<slo::Service>, std::collections::BTreeMap<String, f64>, PlanOptions)> {
    if !(args.headroom.is_finite() && (0.0..=10.0).contains(&args.headroom)) {
        anyhow::bail!("--headroom must be a number in [0, 10] (0.2: plan for 20 % more than each rate); got {}", args.headroom);
    }
    let mut services = services;
    let mut asked = std::collections::BTreeMap::new();
    if args.headroom > 0.0 {
        for s in &mut services {
            asked.insert(s.name.clone(), s.rate);
            s.rate *= 1.0 + args.headroom;
        }
    }
    if !(args.percentile > 50.0 && args.percentile < 100.0) {
        anyhow::bail!("--percentile must be in (50, 100); got {}", args.percentile);
    }
    if args.algorithm == AlgorithmArg::Parvagpu && args.latency_model == Some(LatencyModelArg::Queueing) {
        anyhow::bail!("--algorithm parvagpu uses ParvaGPU's latency rule; --latency-model queueing needs --algorithm optimal");
    }
    if args.algorithm == AlgorithmArg::Gpulet && matches!(args.latency_model, Some(m) if m != LatencyModelArg::Gpulet) {
        anyhow::bail!("--algorithm gpulet uses gpu-let's latency rule (--latency-model gpulet)");
    }
    let latency_model = match args.latency_model {
        Some(LatencyModelArg::Gpulet) => LatencyModel::GpuLet,
        _ if args.algorithm == AlgorithmArg::Gpulet => LatencyModel::GpuLet,
        Some(LatencyModelArg::Parvagpu) => LatencyModel::ParvaGpu { budget: args.latency_budget },
        _ if args.algorithm == AlgorithmArg::Parvagpu => LatencyModel::ParvaGpu { budget: args.latency_budget },
        _ => LatencyModel::Queueing { percentile: args.percentile },
    };
    let options = PlanOptions {
        algorithm: match args.algorithm {
            AlgorithmArg::Optimal => Algorithm::Optimal,
            AlgorithmArg::Parvagpu => Algorithm::ParvaGpu,
            AlgorithmArg::Gpulet => Algorithm::GpuLet,
        },
        latency_model,
        latency_budget: args.latency_budget,
        max_procs: args.max_procs,
        gpus_per_node: args.gpus_per_node,
        max_gpus: args.max_gpus,
        margin: args.margin,
        data_path_ms,
    };
    Ok((services, asked, options))
}

mod fleet;

pub fn run(args: PlanArgs) -> anyhow::Result<ExitCode> {
    if let Some(file) = args.input.fleet.clone() {
        return fleet::run(&args, &file);
    }
    let prepared = prepare(&args.input)?;
    let Prepared { gpu, profiles, services, options, .. } = &prepared;
    let (gpu, profiles, services, options) = (*gpu, profiles, services, options);
    let input = prepared.input();
    if args.compare {
        return print_comparison(&parva_planner::report::compare(input), args.json);
    }
    let jobs = match &args.jobs {
        Some(path) => {
            let jobs = parva_core::jobs::read_jobs(path, Some(profiles))?;
            // A map names a job instance in its `service` column: a job named like a service
            // would make a map that `validate` and `simulate` refuse (issue 34).
            parva_core::jobs::check_names_apart(&jobs, services, path)?;
            Some(jobs)
        }
        None => None,
    };
    let out = args.out.clone().unwrap_or_else(|| default_out(args.input.slo));
    parva_core::files::check_output(&out)?;
    let plan = plan::plan(input).map_err(|e| anyhow::anyhow!("{e} (nothing written)"))?;
    let mut map = plan.to_map();
    prepared.restore_asked_rates(&mut map);
    if args.input.headroom > 0.0 {
        eprintln!(
            "note: planned with --headroom {}: each service for {:.2}x its rate; the map's rate column keeps the rates asked for",
            args.input.headroom,
            1.0 + args.input.headroom
        );
    }
    if map.segments.is_empty() {
        // A map without segments would not validate: say why and write nothing (issue 34).
        for bad in &plan.infeasible {
            eprintln!("warning: service {} ({}) is not planned: {}", bad.service, bad.model, bad.reason);
        }
        eprintln!("error: no service could be planned, so no map was written ({} left as it was)", out.display());
        return Ok(super::exit(false));
    }
    let jobs_summary = jobs.as_ref().map(|jobs| {
        let cluster = parva_planner::jobs::Cluster {
            gpu,
            gpus: args.cluster_gpus.unwrap_or((plan.node_count().max(1) as u32) * options.gpus_per_node),
            gpus_per_node: options.gpus_per_node,
            first_node: 0,
        };
        map.jobs = parva_planner::jobs::place_jobs(&cluster, profiles, jobs, &[&map], &[]);
        parva_planner::jobs::summarize(&cluster, jobs, &map)
    });
    // Assert, then write: a map with an illegal layout is a planner bug and must never reach a node.
    let problems = map.check_layouts(gpu);
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        anyhow::bail!("internal error: the planner produced illegal MIG layouts (nothing written):\n  {}", list.join("\n  "));
    }
    match args.format {
        MapFormatArg::Parva => map.write_file(&out),
        MapFormatArg::Parvagpu => {
            let mut buf = Vec::new();
            map.write_parvagpu_to(&mut buf)
                .map_err(|e| parva_core::FormatError::io(&out, "encode deployment map", std::io::Error::other(e)))
                .and_then(|()| parva_core::files::write_atomic(&out, &buf))
        }
    }
    .with_context(|| format!("writing the deployment map {}", out.display()))?;
    if args.format == MapFormatArg::Parvagpu && !map.jobs.is_empty() {
        eprintln!("note: ParvaGPU's format has no best-effort rows: the {} job instances are not in {}", map.jobs.len(), out.display());
    }

    let summary = plan.summary();
    let mut report = parva_planner::report::report(&plan, Some(profiles));
    // For each costly service (at most 3), what relaxing its SLO by half would save: re-planned,
    // so only for fleets of at most SENSITIVITY_MAX_SERVICES services (a large fleet would plan up
    // to four times over). Decided by the input, not by how long planning took on this machine
    // (issue 34: a loaded machine lost the lines a test relied on).
    let mut sensitivity = Vec::new();
    let costly = report.services.iter().filter(|c| c.is_costly()).take(3);
    let costly: Vec<_> = if services.len() <= SENSITIVITY_MAX_SERVICES {
        costly.collect()
    } else {
        if report.services.iter().any(|c| c.is_costly()) {
            eprintln!(
                "note: no sensitivity lines: {} services (> {SENSITIVITY_MAX_SERVICES}) would be re-planned for each; re-plan with a relaxed SLO to see what it saves",
                services.len()
            );
        }
        Vec::new()
    };
    for cost in costly {
        let Some(i) = services.iter().position(|s| s.name == cost.service) else { continue };
        if let Ok(Some(s)) = parva_planner::report::sensitivity(input, i, 1.5, plan.gpus.len()) {
            sensitivity.push(s);
        }
    }
    // A plan made under a rule without queueing (ParvaGPU's or gpu-let's, by either algorithm) is
    // checked by the simulator, which names the services that would miss their SLO (issue 38:
    // `--latency-model parvagpu` with the default algorithm was not checked).
    let mut simulated_misses = None;
    let rule = match options.latency_model {
        parva_core::latency::LatencyModel::Queueing { .. } => None,
        parva_core::latency::LatencyModel::ParvaGpu { .. } => Some("ParvaGPU's rule"),
        parva_core::latency::LatencyModel::GpuLet => Some("gpu-let's rule"),
    };
    if let Some(rule) = rule {
        simulated_misses = parva_planner::report::simulated_misses(&map, profiles, services)?;
        match simulated_misses.clone() {
            None => report.warnings.push(format!(
                "{rule} ignores queueing and this fleet is too large to simulate here (> {} arrivals); run `parva simulate --map {}`",
                parva_planner::report::CHECK_MAX_ARRIVALS, out.display()
            )),
            Some(misses) if misses.is_empty() => {}
            Some(misses) => {
                let list: Vec<String> =
                    misses.iter().map(|m| format!("{} (p99 {:.1} ms, SLO {} ms)", m.service, m.p99_ms, m.slo_ms)).collect();
                report.warnings.push(format!(
                    "the simulator says {} of {} services miss their SLO under this plan ({rule} ignores queueing; \
                     {} s of Poisson arrivals): {}; the default latency model (queueing) plans on predicted tail latency",
                    misses.len(), services.len(), parva_planner::report::CHECK_SECONDS, list.join(", ")
                ));
            }
        }
    }
    // Which interference the plan assumed, and where it came from (MPS types only).
    let interference = gpu.is_mps().then(|| interference_text(&prepared, args.input.interference.is_some(), args.input.prof_data.as_deref().unwrap_or(Path::new(""))));
    if args.json {
        let mut v = serde_json::to_value(&summary)?;
        v["out"] = serde_json::json!(out);
        v["interference"] = serde_json::json!(interference);
        v["report"] = serde_json::to_value(&report)?;
        if let Some(m) = &simulated_misses {
            v["simulated_misses"] = serde_json::to_value(m)?;
        }
        v["sensitivity"] = serde_json::to_value(&sensitivity)?;
        if let Some(j) = &jobs_summary {
            v["jobs"] = serde_json::to_value(j)?;
        }
        super::print_json(&v)?;
    } else {
        print_summary(&summary, &out)?;
        print_report(&report, &sensitivity)?;
        if let Some(text) = &interference {
            outln!("interference: {text}")?;
        }
        if let Some(j) = &jobs_summary {
            print_jobs(j)?;
        }
    }
    for (model, what) in parva_profiler::meta::measured_beside_jobs(args.input.prof_data.as_deref().unwrap_or(Path::new(""))) {
        eprintln!("note: the table of {model} was measured beside a best-effort job ({what}): its latencies include that job's interference");
    }
    for bad in &summary.infeasible {
        eprintln!("warning: service {} ({}) is not planned: {}", bad.service, bad.model, bad.reason);
    }
    for name in &summary.zero_rate {
        eprintln!("note: service {name} has a rate of 0 in this scenario: no segment planned for it");
    }
    Ok(super::exit(summary.complete))
}

/// Sensitivity lines re-plan; they are skipped for fleets of more services than this.
const SENSITIVITY_MAX_SERVICES: usize = 200;

fn default_out(slo: Option<usize>) -> PathBuf {
    match slo {
        Some(n) => Path::new("deployment").join(format!("SLO{n}")).join(format!("SLO{n}_deploy.csv")),
        None => Path::new("deployment").join("deploy.csv"),
    }
}

/// The plan's explanation, after the summary: rule, costs by service, bound, nodes, layouts,
/// warnings and what relaxing a costly SLO would save.
fn print_report(r: &parva_planner::report::PlanReport, sensitivity: &[parva_planner::report::Sensitivity]) -> Result<(), super::StdoutError> {
    outln!("")?;
    outln!("plan: {}", r.headline)?;
    outln!("{:<24} {:>8} {:>6} {:>7} {:>9}", "cost by service", "segments", "GPCs", "share", "capacity/rate")?;
    for c in &r.services {
        outln!("{:<24} {:>8} {:>6} {:>6.1}% {:>8.1}x", c.service, c.segments, c.gpcs, c.share_pct, c.headroom)?;
    }
    outln!("{:<24} {:>8} {:>6} {:>7} {:>10}", "cost by model", "services", "GPCs", "share", "requests")?;
    for m in &r.models {
        outln!("{:<24} {:>8} {:>6} {:>6.1}% {:>9.1}%", m.model, m.services, m.gpcs, m.share_pct, m.requests_pct)?;
    }
    if let Some(lb) = &r.lower_bound {
        outln!("lower bound: {lb}")?;
    }
    // Each node, then its GPUs numbered as the map numbers them (per node).
    const SHOWN: usize = 64;
    let mut shown = 0;
    for n in &r.nodes {
        if shown >= SHOWN {
            break;
        }
        outln!("node {}: {} of {} GPUs, {} of {} GPCs used", n.node, n.gpus, n.gpus_per_node, n.gpcs, n.gpcs_total)?;
        for l in r.layouts.iter().filter(|l| l.node == n.node) {
            if shown >= SHOWN {
                break;
            }
            outln!("  {l}")?;
            shown += 1;
        }
    }
    if r.layouts.len() > shown {
        outln!("  ... and {} more GPUs (all of them in --json)", r.layouts.len() - shown)?;
    }
    if let Some(m) = &r.memory {
        outln!("memory: {m}")?;
    }
    for w in &r.warnings {
        outln!("warning: {w}")?;
    }
    for s in sensitivity {
        outln!("sensitivity: {s}")?;
    }
    Ok(())
}

/// `plan --compare`'s table (or JSON).
fn print_comparison(rows: &[parva_planner::report::Comparison], json: bool) -> anyhow::Result<ExitCode> {
    if json {
        super::print_json(&serde_json::json!({ "compare": rows }))?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!("{:<10} {:<14} {:>5} {:>6} {:>9}  {}", "algorithm", "latency model", "GPUs", "GPCs", "meet SLO", "simulated misses (p99 / SLO)")?;
    for r in rows {
        let n = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let meet = r.meeting_slo.map(|m| format!("{m}/{}", r.services));
        let what = match (&r.error, r.meeting_slo) {
            (Some(e), _) => e.clone(),
            (None, None) => "not simulated (too many arrivals to simulate quickly)".into(),
            (None, Some(_)) if r.misses.is_empty() => "-".into(),
            (None, Some(_)) => r.misses.iter().map(|m| format!("{} {:.0}/{} ms", m.service, m.p99_ms, m.slo_ms)).collect::<Vec<_>>().join(", "),
        };
        let incomplete = if r.complete || r.gpus.is_none() { "" } else { " (INCOMPLETE)" };
        outln!("{:<10} {:<14} {:>5} {:>6} {:>9}  {what}{incomplete}", r.algorithm, r.latency_model, n(r.gpus.map(|g| g.to_string())), n(r.gpcs.map(|g| g.to_string())), n(meet))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_jobs(j: &parva_planner::jobs::JobsSummary) -> Result<(), super::StdoutError> {
    outln!("")?;
    outln!(
        "best-effort: {} of the cluster's {} GPCs ({} GPUs) serve, {} go to jobs, {} stay idle; {:.1} samples/s expected",
        j.serving_gpcs, j.cluster_gpcs, j.cluster_gpus, j.job_gpcs, j.idle_gpcs, j.samples_per_s
    )?;
    outln!("{:<24} {:<16} {:>6} {:>8} {:>9} {:>6} {:>11}", "job", "model", "kind", "priority", "instances", "GPCs", "samples/s")?;
    for r in &j.jobs {
        outln!(
            "{:<24} {:<16} {:>6} {:>8} {:>9} {:>6} {:>11.1}",
            r.job, r.model, r.kind.as_str(), r.priority, r.instances, r.gpcs, r.samples_per_s
        )?;
    }
    Ok(())
}

fn print_summary(s: &plan::PlanSummary, out: &Path) -> Result<(), super::StdoutError> {
    outln!(
        "{} services on {} {} GPUs ({} node{}): {} segments, {} GPCs, planned in {:.3} s",
        s.services.len() - s.infeasible.len() - s.zero_rate.len(),
        s.gpus,
        s.gpu_type,
        s.nodes,
        if s.nodes == 1 { "" } else { "s" },
        s.segments,
        s.gpcs,
        s.plan_seconds
    )?;
    outln!("{:<24} {:<16} {:>10} {:>9} {:>11} {:>8}", "service", "model", "rate/s", "SLO ms", "capacity/s", "segments")?;
    for svc in &s.services {
        if s.zero_rate.contains(&svc.service) {
            outln!("{:<24} {:<16} {:>10.1} {:>9.1} {:>11} {:>8}", svc.service, svc.model, svc.rate, svc.slo_ms, "rate 0", 0)?;
            continue;
        }
        // Rates below 0.1/s would print as 0.0: show them in full.
        let rate = if svc.rate < 0.1 { format!("{:.3e}", svc.rate) } else { format!("{:.1}", svc.rate) };
        outln!(
            "{:<24} {:<16} {:>10} {:>9.1} {:>11.1} {:>8}",
            svc.service, svc.model, rate, svc.slo_ms, svc.capacity, svc.segments
        )?;
    }
    if let Some(lb) = s.lower_bound_gpus {
        let proof = if s.proven_optimal { "proven optimal" } else { "not proven optimal" };
        outln!("lower bound: {lb} GPUs ({proof})")?;
    }
    for note in &s.notes {
        outln!("note: {note}")?;
    }
    outln!("wrote {}", out.display())
}
