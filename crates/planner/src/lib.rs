//! # parva-planner
//!
//! Planning: from profile tables and per-service SLOs to a deployment map. This crate holds the
//! planners and their integer-programming solver (HiGHS, a C++ library built with cmake and
//! bindgen), apart from `parva-core`, so that only the CLI links the solver: the router, the
//! GPU-control crate, the load generator, the profiler and the worker depend on the core alone.
//!
//! A plan decides, per service, a set of segments (MIG instance size, batch size, MPS process
//! count), and places every segment on a GPU at a legal MIG placement. Algorithms:
//! - [`Algorithm::Optimal`] (default): fewest GPUs over every segment mix and legal layout at
//!   once, by integer programming (see [`optimal`]); reports a lower bound and whether the plan is
//!   proven optimal.
//! - [`Algorithm::ParvaGpu`]: ParvaGPU's published planner (see [`parvagpu`]), with legal placements.
//!
//! Which profile points a service may use, and how much rate a segment may take, is decided by the
//! latency model (see [`parva_core::latency`]): ParvaGPU's rule (profiled batch latency below
//! `latency_budget` x SLO; the parvagpu algorithm always uses it) or the queueing model.

pub mod cover;
pub mod fleet;
pub mod gpulet;
pub mod gpus;
pub mod jobs;
pub mod optimal;
pub mod parvagpu;
pub mod replan;
pub mod report;
pub mod rollout;

use std::collections::BTreeMap;
use std::time::Instant;

use parva_core::deploy::{DeploymentMap, Segment};
use parva_core::latency::LatencyModel;
use parva_core::limits;
use parva_core::mig::GpuType;
use parva_core::profile::{ModelProfile, ProfilePoint, ProfileSet};
use parva_core::slo::{Margin, Service};

pub use gpus::{GpuState, Placed};

/// Which planner to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Fewest GPUs by integer programming over segment mixes and MIG layouts.
    Optimal,
    /// ParvaGPU's greedy planner (SC'24), with legal MIG placements.
    ParvaGpu,
    /// gpu-let's heuristic (ATC'22) for GPUs without MIG: at most two MPS shares per GPU.
    #[serde(rename = "gpulet")]
    GpuLet,
}

/// Options shared by every planner.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanOptions {
    pub algorithm: Algorithm,
    /// Admissibility and capacity of points for the optimal planner (parvagpu always uses its rule
    /// with `latency_budget`).
    pub latency_model: LatencyModel,
    /// ParvaGPU's rule: a point is admissible when its batch latency < budget x SLO.
    pub latency_budget: f64,
    /// Largest MPS process count considered.
    pub max_procs: u32,
    /// GPUs per node when numbering the map.
    pub gpus_per_node: u32,
    /// Most GPUs a plan may use: one that would need more is refused before it is attempted
    /// (see [`PlanError::TooManyGpus`]).
    pub max_gpus: u32,
    /// Serving margin: each service is planned to its SLO minus this (see [`Margin`]); the plan
    /// and its map keep the SLO itself and carry the margin. [`Margin::NONE`] by default here
    /// (ParvaGPU's rule); `parva plan` defaults to [`Margin::DEFAULT`].
    pub margin: Margin,
    /// Milliseconds each request of a service spends on the serving data path
    /// ([`parva_core::data_path`]): planned for like a margin of its own, on top of `margin`.
    pub data_path_ms: BTreeMap<String, f64>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            algorithm: Algorithm::Optimal,
            latency_model: LatencyModel::Queueing { percentile: 99.0 },
            latency_budget: 0.45,
            max_procs: 3,
            gpus_per_node: 8,
            max_gpus: limits::DEFAULT_MAX_GPUS,
            margin: Margin::NONE,
            data_path_ms: BTreeMap::new(),
        }
    }
}

/// What a planner needs.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub gpu: &'static GpuType,
    pub profiles: &'a ProfileSet,
    pub services: &'a [Service],
    pub options: &'a PlanOptions,
}

/// A segment a planner chose for a service: one profile point.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentChoice {
    /// Index into the plan's services.
    pub service: usize,
    pub size: u8,
    pub batch: u32,
    pub procs: u32,
    /// Capacity the plan counts on for the segment (all processes), samples/s: the profiled
    /// throughput under ParvaGPU's rule, the largest rate meeting the SLO under the queueing model.
    pub capacity: f64,
    /// Profiled batch latency, seconds.
    pub latency_s: f64,
}

impl SegmentChoice {
    pub fn from_point(service: usize, p: &ProfilePoint) -> Self {
        SegmentChoice {
            service,
            size: p.size,
            batch: p.batch,
            procs: p.procs,
            capacity: p.segment_throughput(),
            latency_s: p.latency_s,
        }
    }
}

/// A service no point of whose profile meets its SLO.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Infeasible {
    pub service: String,
    pub model: String,
    pub reason: String,
}

/// A finished plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub gpu: &'static GpuType,
    pub services: Vec<Service>,
    /// GPUs in map order; none is empty.
    pub gpus: Vec<GpuState>,
    pub infeasible: Vec<Infeasible>,
    pub gpus_per_node: u32,
    pub algorithm: Algorithm,
    /// The latency model the plan was made under.
    pub latency_model: LatencyModel,
    pub plan_seconds: f64,
    /// Facts about the plan worth telling the user (e.g. where legal placement cost a GPU).
    pub notes: Vec<String>,
    /// A lower bound on the GPUs any plan needs under the same rules, when the planner computes one.
    pub lower_bound_gpus: Option<usize>,
    /// Whether the GPU count is proven to be the fewest possible under the same rules.
    pub proven_optimal: bool,
    /// Services with a rate of 0: no segment planned for them (reported, never dropped silently).
    pub zero_rate: Vec<String>,
    /// How [`Plan::lower_bound_gpus`] is made, in words (for the plan report).
    pub lower_bound_why: Option<String>,
    /// The serving margin the plan was made with: every service was planned to `slo_ms` minus it
    /// (and minus its data-path cost, [`Plan::data_path_ms`]).
    pub margin: Margin,
    /// The data-path cost each service was planned with, ms (see [`PlanOptions::data_path_ms`]).
    pub data_path_ms: BTreeMap<String, f64>,
}

impl Plan {
    /// Everything service `s` was planned short of its SLO by: the margin and its data path, ms.
    pub fn margin_ms(&self, s: &Service) -> f64 {
        self.margin.of(s.slo_ms) + self.data_path_ms.get(&s.name).copied().unwrap_or(0.0)
    }
}

/// Why a plan was refused. Nothing is planned (and nothing written) when one is returned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// A service's value or a planning option is outside its physical range ([`parva_core::limits`]).
    #[error("{what}: {rule}")]
    Invalid { what: String, rule: String },
    /// The plan would need more GPUs than allowed; `needed` is a lower bound when `at_least`.
    #[error(
        "the plan would need {}{needed} {gpu} GPUs, more than --max-gpus {max}; the largest share is service \
         {service:?} (rate {rate} requests/s, at least {service_gpus} GPUs); lower the rates or raise --max-gpus",
        if *at_least { "at least " } else { "" }
    )]
    TooManyGpus { needed: u64, at_least: bool, max: u32, gpu: String, service: String, rate: f64, service_gpus: u64 },
    /// The solver failed where no fallback exists.
    #[error("the solver failed while {task}: {detail}")]
    Solver { task: String, detail: String },
}

/// Run the planner `input.options.algorithm` names. The input is validated first (every value in
/// its range, see [`parva_core::limits`]), and a plan that would need more than `max_gpus` GPUs is
/// refused before it is attempted, so the solver is never handed a problem it can reject.
/// Services with a rate of 0 get no segment and are listed in [`Plan::zero_rate`]; a service with
/// a positive rate that ends with no segment (or too little capacity) is listed in
/// [`Plan::infeasible`], so the plan is never reported complete without it.
pub fn plan(input: PlanInput<'_>) -> Result<Plan, PlanError> {
    let started = Instant::now();
    validate(&input)?;
    // gpu-let's rule plans every rate at its Poisson p99 (and its heuristic only under that rule).
    let gpulet_rule = input.options.algorithm == Algorithm::GpuLet || input.options.latency_model == LatencyModel::GpuLet;
    if gpulet_rule {
        let options = PlanOptions { latency_model: LatencyModel::GpuLet, ..input.options.clone() };
        let inflated: Vec<Service> = input.services.iter().map(|s| Service { rate: parva_core::latency::gpulet_rate(s.rate), ..s.clone() }).collect();
        let mut plan = plan_with_margin(PlanInput { services: &inflated, options: &options, ..input }, started)?;
        plan.services = input.services.to_vec();
        return Ok(plan);
    }
    plan_with_margin(input, started)
}

fn plan_with_margin(input: PlanInput<'_>, started: Instant) -> Result<Plan, PlanError> {
    let data_path = &input.options.data_path_ms;
    if input.options.margin.is_none() && data_path.values().all(|ms| *ms <= 0.0) {
        return plan_to_targets(input, started);
    }
    // Plan to the targets (SLO - margin - data path), then put the SLOs themselves back: the map
    // carries both.
    let targets = targets(input.services, input.options)?;
    let mut plan = plan_to_targets(PlanInput { services: &targets, ..input }, started)?;
    plan.services = input.services.to_vec();
    plan.margin = input.options.margin;
    plan.data_path_ms = data_path.iter().filter(|(_, ms)| **ms > 0.0).map(|(s, ms)| (s.clone(), *ms)).collect();
    Ok(plan)
}

/// Each service with its SLO lowered to what it is planned to: the SLO less the margin and its data
/// path (see [`PlanOptions::margin`], [`PlanOptions::data_path_ms`]).
pub(crate) fn targets(services: &[Service], options: &PlanOptions) -> Result<Vec<Service>, PlanError> {
    let data_path = &options.data_path_ms;
    services
        .iter()
        .map(|s| {
            let slo_ms = options.margin.target(&s.name, s.slo_ms).map_err(|e| PlanError::Invalid {
                what: "--margin".into(),
                rule: e.to_string(),
            })?;
            let dp = data_path.get(&s.name).copied().unwrap_or(0.0);
            if !(dp.is_finite() && dp >= 0.0 && dp < slo_ms) {
                return Err(PlanError::Invalid {
                    what: format!("service {:?}", s.name),
                    rule: format!("its data path takes {dp:.3} ms of a target of {slo_ms} ms (SLO less margin); nothing is left to run it"),
                });
            }
            Ok(Service { slo_ms: slo_ms - dp, ..s.clone() })
        })
        .collect::<Result<Vec<_>, PlanError>>()
}

fn plan_to_targets(input: PlanInput<'_>, started: Instant) -> Result<Plan, PlanError> {
    let model = match input.options.algorithm {
        Algorithm::ParvaGpu => LatencyModel::ParvaGpu { budget: input.options.latency_budget },
        Algorithm::Optimal => input.options.latency_model,
        Algorithm::GpuLet => LatencyModel::GpuLet,
    };
    let opts = cover::options(&input, &model);
    check_gpu_bound(&input, &opts, None)?;
    let mut plan = match input.options.algorithm {
        Algorithm::ParvaGpu => parvagpu::plan(&input),
        Algorithm::Optimal => optimal::plan(&input, &model, opts)?,
        Algorithm::GpuLet => gpulet::plan(&input)?,
    };
    plan.gpus.retain(|g| !g.is_empty());
    if plan.gpus.len() > input.options.max_gpus as usize {
        let caps = plan.gpcs_by_service();
        let (si, gpcs) = caps.iter().enumerate().max_by_key(|(_, g)| **g).map(|(i, g)| (i, *g)).unwrap_or((0, 0));
        return Err(too_many(&input, plan.gpus.len() as u64, false, si, (gpcs as u64).div_ceil(input.gpu.gpcs as u64)));
    }
    plan.zero_rate = input.services.iter().filter(|s| s.rate == 0.0).map(|s| s.name.clone()).collect();
    short_of_capacity(input.services, &plan.capacities(), &mut plan.infeasible);
    plan.plan_seconds = started.elapsed().as_secs_f64();
    Ok(plan)
}

/// Never report a plan complete while a service with a positive rate lacks capacity: each such
/// service not yet in `infeasible` is added with what was provisioned (`caps`, in service order).
pub(crate) fn short_of_capacity(services: &[Service], caps: &[f64], infeasible: &mut Vec<Infeasible>) {
    for (s, cap) in services.iter().zip(caps) {
        if s.rate > 0.0 && cap * (1.0 + 1e-9) < s.rate && !infeasible.iter().any(|b| b.service == s.name) {
            infeasible.push(Infeasible {
                service: s.name.clone(),
                model: s.model.clone(),
                reason: format!("the planner provisioned {cap} samples/s for a rate of {} requests/s", s.rate),
            });
        }
    }
}

/// Every service value and option in its range.
fn validate(input: &PlanInput<'_>) -> Result<(), PlanError> {
    let bad = |what: String, rule: String| Err(PlanError::Invalid { what, rule });
    for s in input.services {
        if s.rate != 0.0 {
            if let Err(rule) = limits::RATE.check(s.rate) {
                return bad(format!("service {:?}", s.name), format!("{rule} (or 0 for no traffic)"));
            }
        }
        if let Err(rule) = limits::SLO_MS.check(s.slo_ms) {
            return bad(format!("service {:?}", s.name), rule);
        }
    }
    let o = input.options;
    if !(o.latency_budget > 0.0 && o.latency_budget <= 1.0) {
        return bad("--latency-budget".into(), format!("must be in (0, 1], found {}", o.latency_budget));
    }
    if let LatencyModel::Queueing { percentile } = o.latency_model {
        if !(percentile > 50.0 && percentile < 100.0) {
            return bad("--percentile".into(), format!("must be in (50, 100), found {percentile}"));
        }
    }
    if !(1..=limits::MAX_PROCS).contains(&o.max_procs) {
        return bad("--max-procs".into(), format!("must be in 1..={}, found {}", limits::MAX_PROCS, o.max_procs));
    }
    if o.gpus_per_node == 0 {
        return bad("--gpus-per-node".into(), "must be at least 1, found 0".into());
    }
    if !(1..=limits::MAX_GPUS_LIMIT).contains(&o.max_gpus) {
        return bad("--max-gpus".into(), format!("must be in 1..={}, found {}", limits::MAX_GPUS_LIMIT, o.max_gpus));
    }
    for (name, table) in &input.profiles.models {
        for p in table.points.iter().filter(|p| p.is_measured()) {
            let checks = [limits::THROUGHPUT.check(p.throughput), limits::BATCH_LATENCY_S.check(p.latency_s)];
            if let Some(Err(rule)) = checks.into_iter().find(Result::is_err) {
                return bad(format!("profile {name} (size {}, batch {}, procs {})", p.size, p.batch, p.procs), rule);
            }
            if p.batch > limits::MAX_BATCH || p.procs > limits::MAX_PROCS {
                return bad(
                    format!("profile {name} (size {}, batch {}, procs {})", p.size, p.batch, p.procs),
                    format!("batch must be at most {} and procs at most {}", limits::MAX_BATCH, limits::MAX_PROCS),
                );
            }
        }
    }
    Ok(())
}

/// Refuse, before planning, a plan whose GPU lower bound exceeds `max_gpus`. Without covers, each
/// service's bound is its rate over the best capacity per GPC of its options (what any mix of its
/// segments needs at least); with covers (the exact fewest GPCs per service), their sum.
pub(crate) fn check_gpu_bound(
    input: &PlanInput<'_>,
    opts: &[Result<cover::Options, Infeasible>],
    covers: Option<&[(usize, u32)]>,
) -> Result<(), PlanError> {
    let gpcs = input.gpu.gpcs as f64;
    let per_service: Vec<(usize, f64)> = match covers {
        Some(c) => c.iter().map(|&(si, g)| (si, g as f64)).collect(),
        None => opts
            .iter()
            .enumerate()
            .filter(|(si, _)| input.services[*si].rate > 0.0)
            .filter_map(|(si, o)| o.as_ref().ok().map(|o| (si, o)))
            .map(|(si, o)| {
                let best = o.by_size.values().map(|c| c.capacity / c.size as f64).fold(0.0, f64::max);
                (si, (input.services[si].rate / best).ceil().max(1.0))
            })
            .collect(),
    };
    let total: f64 = per_service.iter().map(|(_, g)| g).sum();
    let needed = (total / gpcs).ceil();
    if needed > input.options.max_gpus as f64 {
        let (si, g) = per_service.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap_or((0, 0.0));
        return Err(too_many(input, needed as u64, true, si, (g / gpcs).ceil() as u64));
    }
    Ok(())
}

fn too_many(input: &PlanInput<'_>, needed: u64, at_least: bool, si: usize, service_gpus: u64) -> PlanError {
    let s = input.services.get(si);
    PlanError::TooManyGpus {
        needed,
        at_least,
        max: input.options.max_gpus,
        gpu: input.gpu.id.to_string(),
        service: s.map(|s| s.name.clone()).unwrap_or_default(),
        rate: s.map_or(0.0, |s| s.rate),
        service_gpus,
    }
}

/// The points of `profile` a service may use under the latency-budget rule, in grid order.
pub fn admissible_points<'p>(
    profile: &'p ModelProfile,
    service: &Service,
    gpu: &GpuType,
    options: &PlanOptions,
) -> Vec<&'p ProfilePoint> {
    let mut points: Vec<&ProfilePoint> = profile
        .points
        .iter()
        .filter(|p| p.is_measured() && p.procs <= options.max_procs && gpu.profile_for_size(p.size).is_some())
        .filter(|p| p.latency_s * 1000.0 < options.latency_budget * service.slo_ms)
        .collect();
    points.sort_by_key(|p| (p.size, p.batch, p.procs));
    points
}

/// The measured point with the lowest batch latency that the GPU type and process limit allow:
/// the "closest" point named when no point meets an SLO.
fn fastest_point<'p>(profile: &'p ModelProfile, gpu: &GpuType, max_procs: u32) -> Option<&'p ProfilePoint> {
    profile
        .points
        .iter()
        .filter(|p| p.is_measured() && p.procs <= max_procs && gpu.profile_for_size(p.size).is_some())
        .min_by(|a, b| a.latency_s.total_cmp(&b.latency_s))
}

/// Explain why a service has no admissible point under `model`, naming the closest one.
pub fn infeasible_with(profile: &ModelProfile, service: &Service, input: &PlanInput<'_>, model: &LatencyModel) -> Infeasible {
    match model {
        LatencyModel::ParvaGpu { budget } => {
            let options = PlanOptions { latency_budget: *budget, ..input.options.clone() };
            infeasible(profile, service, input.gpu, &options)
        }
        LatencyModel::GpuLet => {
            let options = PlanOptions { latency_budget: 0.5 / parva_core::latency::GPULET_LATENCY_FACTOR, ..input.options.clone() };
            let mut bad = infeasible(profile, service, input.gpu, &options);
            bad.reason.push_str(" (gpu-let's rule: 2 x 1.1 x batch latency <= SLO)");
            bad
        }
        LatencyModel::Queueing { percentile } => {
            let closest = fastest_point(profile, input.gpu, input.options.max_procs);
            let guard = parva_core::batching::BatchPolicy::new(1, service.slo_ms).guard * 1000.0;
            let reason = match closest {
                Some(p) => format!(
                    "no profile point meets the SLO at the p{percentile} under the queueing model (a lone request \
                     needs batch latency + {guard:.1} ms guard < {} ms); closest: size {} batch {} procs {} at {:.2} ms",
                    service.slo_ms, p.size, p.batch, p.procs, p.latency_s * 1000.0
                ),
                None => format!("model {} has no measured point with at most {} processes", service.model, input.options.max_procs),
            };
            Infeasible { service: service.name.clone(), model: service.model.clone(), reason }
        }
    }
}

/// Explain why a service has no admissible point, naming the closest one.
pub fn infeasible(profile: &ModelProfile, service: &Service, gpu: &GpuType, options: &PlanOptions) -> Infeasible {
    let closest = fastest_point(profile, gpu, options.max_procs);
    let budget_ms = options.latency_budget * service.slo_ms;
    let reason = match closest {
        Some(p) => format!(
            "no profile point meets the latency rule (batch latency < {:.2} x {} ms = {budget_ms:.2} ms); \
             closest: size {} batch {} procs {} at {:.2} ms",
            options.latency_budget,
            service.slo_ms,
            p.size,
            p.batch,
            p.procs,
            p.latency_s * 1000.0
        ),
        None => format!("model {} has no measured point with at most {} processes", service.model, options.max_procs),
    };
    Infeasible { service: service.name.clone(), model: service.model.clone(), reason }
}

impl Plan {
    /// Capacity provisioned for each service (samples/s), in service order.
    pub fn capacities(&self) -> Vec<f64> {
        let mut cap = vec![0.0; self.services.len()];
        for g in &self.gpus {
            for p in &g.placed {
                cap[p.segment.service] += p.segment.capacity;
            }
        }
        cap
    }

    /// GPCs placed for each service, in service order.
    pub fn gpcs_by_service(&self) -> Vec<u32> {
        let mut gpcs = vec![0u32; self.services.len()];
        for g in &self.gpus {
            for p in &g.placed {
                gpcs[p.segment.service] += p.segment.size as u32;
            }
        }
        gpcs
    }

    pub fn segment_count(&self) -> usize {
        self.gpus.iter().map(|g| g.placed.len()).sum()
    }

    pub fn gpcs(&self) -> u32 {
        self.gpus.iter().map(|g| g.used_gpcs() as u32).sum()
    }

    pub fn node_count(&self) -> usize {
        self.gpus.len().div_ceil(self.gpus_per_node.max(1) as usize)
    }

    /// The deployment map: GPU i of the plan is node i / gpus_per_node, GPU i % gpus_per_node.
    pub fn to_map(&self) -> DeploymentMap {
        let ids: Vec<u32> = (0..self.gpus.len() as u32).collect();
        self.to_map_on(&ids)
    }

    /// The deployment map with GPU `i` of the plan on GPU id `ids[i]` (node id / gpus_per_node,
    /// GPU id % gpus_per_node), as a replan keeps running GPUs where they are.
    pub fn to_map_on(&self, ids: &[u32]) -> DeploymentMap {
        let per_node = self.gpus_per_node.max(1);
        let mut segments = Vec::with_capacity(self.segment_count());
        for (g, &i) in self.gpus.iter().zip(ids) {
            for p in &g.placed {
                let s = &self.services[p.segment.service];
                segments.push(Segment {
                    node: i / per_node,
                    gpu: i % per_node,
                    service: s.name.clone(),
                    model: s.model.clone(),
                    placement: p.start,
                    instance_size: p.segment.size,
                    batch_size: p.segment.batch,
                    num_proc: p.segment.procs,
                    profile: self.gpu.profile_for_size(p.segment.size).map(|pr| pr.name.to_string()),
                    gpu_type: Some(self.gpu.id.to_string()),
                    throughput: Some(p.segment.capacity),
                    rate: Some(s.rate),
                    slo_ms: Some(s.slo_ms),
                    margin_ms: Some(self.margin_ms(s)).filter(|m| *m > 0.0),
                });
            }
        }
        DeploymentMap { segments, jobs: Vec::new() }
    }

    /// The machine-readable summary `parva plan --json` prints.
    pub fn summary(&self) -> PlanSummary {
        let caps = self.capacities();
        let mut seg_counts = vec![0usize; self.services.len()];
        for g in &self.gpus {
            for p in &g.placed {
                seg_counts[p.segment.service] += 1;
            }
        }
        PlanSummary {
            gpu_type: self.gpu.id.to_string(),
            algorithm: self.algorithm,
            gpus: self.gpus.len(),
            nodes: self.node_count(),
            segments: self.segment_count(),
            gpcs: self.gpcs(),
            plan_seconds: self.plan_seconds,
            latency_model: self.latency_model,
            lower_bound_gpus: self.lower_bound_gpus,
            proven_optimal: self.proven_optimal,
            complete: self.infeasible.is_empty()
                && self.services.iter().zip(&seg_counts).all(|(s, n)| s.rate == 0.0 || *n > 0),
            zero_rate: self.zero_rate.clone(),
            services: self
                .services
                .iter()
                .zip(caps)
                .zip(seg_counts)
                .map(|((s, capacity), segments)| ServiceSummary {
                    service: s.name.clone(),
                    model: s.model.clone(),
                    rate: s.rate,
                    slo_ms: s.slo_ms,
                    margin_ms: self.margin_ms(s),
                    capacity: (capacity * 1000.0).round() / 1000.0,
                    segments,
                })
                .collect(),
            infeasible: self.infeasible.clone(),
            notes: self.notes.clone(),
        }
    }
}

/// Summary of a plan, as `parva plan --json` prints it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PlanSummary {
    pub gpu_type: String,
    pub algorithm: Algorithm,
    pub gpus: usize,
    pub nodes: usize,
    pub segments: usize,
    pub gpcs: u32,
    pub plan_seconds: f64,
    pub latency_model: LatencyModel,
    /// Fewest GPUs any plan could use under the same rules (when computed).
    pub lower_bound_gpus: Option<usize>,
    /// True when `gpus` is proven to be the fewest possible under the same rules.
    pub proven_optimal: bool,
    /// False when some service with a positive rate has no segment (see `infeasible`).
    pub complete: bool,
    /// Services with a rate of 0, for which nothing is planned.
    pub zero_rate: Vec<String>,
    pub services: Vec<ServiceSummary>,
    pub infeasible: Vec<Infeasible>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ServiceSummary {
    pub service: String,
    pub model: String,
    pub rate: f64,
    pub slo_ms: f64,
    /// The serving margin the service was planned with: its target was `slo_ms - margin_ms`.
    pub margin_ms: f64,
    /// Provisioned capacity, samples/s (0 when infeasible).
    pub capacity: f64,
    pub segments: usize,
}

#[cfg(test)]
#[path = "lib_tests.rs"]
mod tests;
