//! A plan that explains itself: which rule made it, where its GPCs go (per service, sorted by
//! cost, with their share of the fleet), how its lower bound is made, what each node and GPU
//! holds, and warnings for services that cost far more than their rate suggests, with the SLO
//! that would make them cheaper ([`sensitivity`], by re-planning).

use serde::Serialize;

use super::{Plan, PlanError, PlanInput, Service};

/// One service's share of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceCost {
    pub service: String,
    pub model: String,
    pub rate: f64,
    pub slo_ms: f64,
    pub segments: usize,
    pub gpcs: u32,
    /// Percent of the plan's GPCs in use.
    pub share_pct: f64,
    /// Provisioned capacity, samples/s.
    pub capacity: f64,
    /// Capacity / rate: far above 1 means the SLO, not the load, sets the cost.
    pub headroom: f64,
    /// GPCs the rate would need at the model's most efficient profiled point (best samples/s per
    /// GPC, whatever its latency): what the service costs without its SLO. `None` without tables.
    pub unconstrained_gpcs: Option<f64>,
}

/// One model's share of the plan: its services' GPCs together, beside their share of the
/// requests (a model that takes most of the GPCs for few of the requests is where an SLO or a
/// faster model pays).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelCost {
    pub model: String,
    pub services: usize,
    pub gpcs: u32,
    /// Percent of the plan's GPCs in use.
    pub share_pct: f64,
    /// Percent of all services' requests per second.
    pub requests_pct: f64,
}

/// One GPU of the map and what it holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuLayout {
    pub node: u32,
    /// The GPU's index on its node (the map's `gpu` column).
    pub gpu: u32,
    /// `[4g photo-tags b8x2][2g ocr b4x1][1g -]`: each segment, then the free GPCs.
    pub layout: String,
}

impl std::fmt::Display for GpuLayout {
    /// `gpu 3: [4g photo-tags b8x2][2g ocr b4x1][1g -]` (under its node's line).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gpu {}: {}", self.gpu, self.layout)
    }
}

/// What one node of the map holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeUse {
    pub node: u32,
    pub gpus: usize,
    pub gpus_per_node: u32,
    pub gpcs: u32,
    pub gpcs_total: u32,
}

/// The whole explanation. `headline` comes first; an incomplete plan says so there.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanReport {
    pub headline: String,
    pub complete: bool,
    pub algorithm: String,
    pub latency_model: String,
    pub gpus: usize,
    pub gpcs: u32,
    /// Services, most GPCs first; their `gpcs` sum to `gpcs`.
    pub services: Vec<ServiceCost>,
    /// The same per model, most GPCs first.
    pub models: Vec<ModelCost>,
    pub lower_bound: Option<String>,
    pub nodes: Vec<NodeUse>,
    /// Each GPU's layout, in map order, numbered per node as the map numbers them (issue 33:
    /// the report said `gpu 11` where the map says node 1, GPU 3).
    pub layouts: Vec<GpuLayout>,
    pub warnings: Vec<String>,
    /// When a memory fit check rested on an instance memory NVIDIA publishes no figure for
    /// (the catalogue's conservative rule): which profiles, and how to get the exact figure.
    pub memory: Option<String>,
}

/// A service is flagged as costly when it takes at least [`COSTLY_MIN_GPCS`] GPCs and at least
/// [`COSTLY_FACTOR`] times what its rate would need at its model's most efficient point: its SLO,
/// not its load, sets its cost.
pub const COSTLY_MIN_GPCS: u32 = 7;
pub const COSTLY_FACTOR: f64 = 2.0;

impl ServiceCost {
    pub fn is_costly(&self) -> bool {
        self.gpcs >= COSTLY_MIN_GPCS && self.unconstrained_gpcs.is_some_and(|u| f64::from(self.gpcs) >= COSTLY_FACTOR * u.max(1.0))
    }
}

/// How the latency model reads in the headline.
pub fn model_text(plan: &Plan) -> String {
    let dp = if plan.data_path_ms.is_empty() { "" } else { " - data path" };
    let slo = if plan.margin.is_none() && dp.is_empty() { "SLO".to_string() } else { format!("(SLO - {} margin{dp})", plan.margin) };
    let mut within = if plan.margin.is_none() {
        "within the SLO".to_string()
    } else {
        format!("within the SLO less a serving margin of {}", plan.margin)
    };
    if !plan.data_path_ms.is_empty() {
        let (lo, hi) = plan.data_path_ms.values().fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        within.push_str(&format!(" and each service's measured data path ({lo:.2}-{hi:.2} ms, data_path.csv)"));
    }
    match plan.latency_model {
        parva_core::latency::LatencyModel::ParvaGpu { budget } => {
            format!("ParvaGPU's rule (a point is admissible when its batch latency < {budget} x {slo}; no queueing)")
        }
        parva_core::latency::LatencyModel::Queueing { percentile } => {
            format!("queueing (predicted p{percentile} latency, batching and queueing included, {within})")
        }
        parva_core::latency::LatencyModel::GpuLet => format!(
            "gpu-let's rule (two batches at 1.1x their profiled latency within the {slo}; rates planned at their Poisson p99; no queueing model)"
        ),
    }
}

/// [`ModelCost`]s from the services' costs: GPCs summed per model, most first (ties by name).
pub fn model_costs(services: &[ServiceCost]) -> Vec<ModelCost> {
    let gpcs: u32 = services.iter().map(|s| s.gpcs).sum();
    let rate: f64 = services.iter().map(|s| s.rate).sum();
    let mut by: std::collections::BTreeMap<&str, ModelCost> = std::collections::BTreeMap::new();
    for s in services {
        let m = by.entry(&s.model).or_insert_with(|| ModelCost { model: s.model.clone(), services: 0, gpcs: 0, share_pct: 0.0, requests_pct: 0.0 });
        m.services += 1;
        m.gpcs += s.gpcs;
        m.requests_pct += if rate > 0.0 { 100.0 * s.rate / rate } else { 0.0 };
    }
    let mut out: Vec<ModelCost> = by.into_values().collect();
    for m in &mut out {
        m.share_pct = if gpcs == 0 { 0.0 } else { 100.0 * f64::from(m.gpcs) / f64::from(gpcs) };
    }
    out.sort_by(|a, b| b.gpcs.cmp(&a.gpcs).then_with(|| a.model.cmp(&b.model)));
    out
}

/// The report of `plan`; `profiles` (the tables it was planned on) lets it say what each service
/// would cost without its SLO.
pub fn report(plan: &Plan, profiles: Option<&parva_core::ProfileSet>) -> PlanReport {
    let gpcs_by = plan.gpcs_by_service();
    let caps = plan.capacities();
    let total: u32 = gpcs_by.iter().sum();
    let mut segs = vec![0usize; plan.services.len()];
    for g in &plan.gpus {
        for p in &g.placed {
            segs[p.segment.service] += 1;
        }
    }
    let mut services: Vec<ServiceCost> = plan
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| ServiceCost {
            service: s.name.clone(),
            model: s.model.clone(),
            rate: s.rate,
            slo_ms: s.slo_ms,
            segments: segs[i],
            gpcs: gpcs_by[i],
            share_pct: if total == 0 { 0.0 } else { 100.0 * f64::from(gpcs_by[i]) / f64::from(total) },
            capacity: caps[i],
            headroom: if s.rate > 0.0 { caps[i] / s.rate } else { 0.0 },
            unconstrained_gpcs: profiles.and_then(|p| p.get(&s.model)).and_then(|m| {
                let best = m.points.iter().filter(|p| p.is_measured() && p.size > 0).map(|p| p.segment_throughput() / f64::from(p.size)).fold(0.0, f64::max);
                (best > 0.0).then(|| s.rate / best)
            }),
        })
        .collect();
    services.sort_by(|a, b| b.gpcs.cmp(&a.gpcs).then_with(|| a.service.cmp(&b.service)));
    let models = model_costs(&services);
    let per_node = plan.gpus_per_node.max(1);
    let mut nodes: Vec<NodeUse> = Vec::new();
    let mut layouts = Vec::new();
    for (i, g) in plan.gpus.iter().enumerate() {
        let node = i as u32 / per_node;
        if nodes.last().is_none_or(|n| n.node != node) {
            nodes.push(NodeUse { node, gpus: 0, gpus_per_node: per_node, gpcs: 0, gpcs_total: 0 });
        }
        let n = nodes.last_mut().expect("pushed above");
        n.gpus += 1;
        n.gpcs += u32::from(g.used_gpcs());
        n.gpcs_total += u32::from(plan.gpu.gpcs);
        let mut text = String::new();
        for p in &g.placed {
            let s = &plan.services[p.segment.service];
            text.push_str(&format!("[{} {} b{}x{}]", plan.gpu.size_label(p.segment.size), s.name, p.segment.batch, p.segment.procs));
        }
        let free = plan.gpu.gpcs.saturating_sub(g.used_gpcs());
        if free > 0 {
            text.push_str(&format!("[{} -]", plan.gpu.size_label(free)));
        }
        layouts.push(GpuLayout { node, gpu: i as u32 % per_node, layout: text });
    }
    let complete = plan.infeasible.is_empty();
    let algorithm = match plan.algorithm {
        super::Algorithm::Optimal if plan.gpu.is_mps() => {
            "optimal (integer program over segment mixes and MPS shares; an MPS type's \"GPC\" is a 10 % share of the SMs and memory)"
        }
        super::Algorithm::Optimal => "optimal (integer program over segment mixes and MIG layouts)",
        super::Algorithm::ParvaGpu => "parvagpu (ParvaGPU's greedy planner)",
        super::Algorithm::GpuLet => "gpulet (gpu-let's heuristic: at most two MPS shares per GPU)",
    };
    let mut headline = String::new();
    if !complete {
        let names: Vec<&str> = plan.infeasible.iter().map(|b| b.service.as_str()).collect();
        headline.push_str(&format!("INCOMPLETE: {} service(s) without enough capacity ({}); ", names.len(), names.join(", ")));
    }
    headline.push_str(&format!(
        "{} GPUs, {} of {} GPCs used; algorithm {algorithm}; latency model {}",
        plan.gpus.len(),
        total,
        plan.gpus.len() as u32 * u32::from(plan.gpu.gpcs),
        model_text(plan)
    ));
    let mut warnings = Vec::new();
    for s in services.iter().filter(|s| s.is_costly()) {
        warnings.push(format!(
            "{}: {} GPCs ({:.0} % of the plan's) for {} requests/s, {:.1}x the {:.1} GPCs its model's most efficient point \
             would need: its {} ms SLO, not its load, sets its cost",
            s.service, s.gpcs, s.share_pct, s.rate, f64::from(s.gpcs) / s.unconstrained_gpcs.unwrap_or(1.0).max(1e-9),
            s.unconstrained_gpcs.unwrap_or(0.0), s.slo_ms
        ));
    }
    let memory = memory_note(plan, profiles);
    PlanReport {
        headline,
        complete,
        algorithm: algorithm.into(),
        latency_model: model_text(plan),
        gpus: plan.gpus.len(),
        gpcs: total,
        services,
        models,
        lower_bound: plan.lower_bound_gpus.map(|lb| match &plan.lower_bound_why {
            Some(why) => format!("{lb} GPUs: {why}"),
            None => format!("{lb} GPUs"),
        }),
        nodes,
        layouts,
        warnings,
        memory,
    }
}

/// The profiles whose assumed memory (no published or NVML figure) a fit check of this plan's
/// models used: those of the sizes the tables give a `mem_mib` for.
fn memory_note(plan: &Plan, profiles: Option<&parva_core::ProfileSet>) -> Option<String> {
    let set = profiles?;
    let mut assumed: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for s in &plan.services {
        let Some(table) = set.get(&s.model) else { continue };
        for p in table.points.iter().filter(|p| table.mem_mib(p).is_some()) {
            if let Some(inst) = plan.gpu.profile_for_size(p.size).filter(|i| i.mem_source == parva_core::mig::MemSource::Assumed) {
                assumed.insert(inst.name);
            }
        }
    }
    if assumed.is_empty() {
        return None;
    }
    let names: Vec<&str> = assumed.into_iter().collect();
    Some(format!(
        "memory fit checks on {} used assumed instance memory ({}: no figure published by NVIDIA or read from a GPU, so a conservative \
         rule); run `parva catalogue --from-gpu` on such a GPU for the exact one",
        plan.gpu.id,
        names.join(", ")
    ))
}

/// What relaxing one service's SLO would save.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sensitivity {
    pub service: String,
    pub slo_ms: f64,
    pub relaxed_slo_ms: f64,
    pub gpus: usize,
    pub relaxed_gpus: usize,
}

impl std::fmt::Display for Sensitivity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: SLO {} -> {} ms saves {} ({} -> {})",
            self.service,
            self.slo_ms,
            self.relaxed_slo_ms,
            gpus_text(self.gpus.saturating_sub(self.relaxed_gpus)),
            self.gpus,
            self.relaxed_gpus
        )
    }
}

/// `1 GPU`, `2 GPUs`.
pub fn gpus_text(n: usize) -> String {
    if n == 1 { "1 GPU".into() } else { format!("{n} GPUs") }
}

/// Re-plans `input` with service `service`'s SLO times `factor` (everything else equal) and says
/// how many GPUs that saves against `gpus`; `None` when it saves none.
pub fn sensitivity(input: PlanInput<'_>, service: usize, factor: f64, gpus: usize) -> Result<Option<Sensitivity>, PlanError> {
    let Some(s) = input.services.get(service) else { return Ok(None) };
    let relaxed_slo = (s.slo_ms * factor * 10.0).round() / 10.0;
    let mut services: Vec<Service> = input.services.to_vec();
    services[service].slo_ms = relaxed_slo;
    let relaxed = super::plan(PlanInput { services: &services, ..input })?;
    if !relaxed.infeasible.is_empty() || relaxed.gpus.len() >= gpus {
        return Ok(None);
    }
    Ok(Some(Sensitivity { service: s.name.clone(), slo_ms: s.slo_ms, relaxed_slo_ms: relaxed_slo, gpus, relaxed_gpus: relaxed.gpus.len() }))
}

/// A service the simulator says misses its SLO under a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimulatedMiss {
    pub service: String,
    pub p99_ms: f64,
    pub slo_ms: f64,
    pub attainment_pct: f64,
}

/// One row of `plan --compare`: a planner and a latency rule, what it plans, and what the
/// simulator says of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub algorithm: &'static str,
    pub latency_model: &'static str,
    /// `None` when planning failed (`error` says why).
    pub gpus: Option<usize>,
    pub gpcs: Option<u32>,
    /// Every service got capacity.
    pub complete: bool,
    /// Services the simulator says meet their SLO at p99; `None` when not simulated (a fleet too
    /// large to simulate quickly, or no plan).
    pub meeting_slo: Option<usize>,
    pub services: usize,
    /// The services the simulator says miss.
    pub misses: Vec<SimulatedMiss>,
    pub error: Option<String>,
}

/// Plans `input` under each planner and latency rule that applies to its GPU type (the exact
/// planner on predicted tail latency, and on ParvaGPU's rule; ParvaGPU's greedy planner; on a type
/// without MIG, gpu-let's heuristic) and simulates every plan, as `plan --compare` shows side by
/// side. The queueing row uses `input`'s percentile, the ParvaGPU rows its latency budget.
pub fn compare(input: PlanInput<'_>) -> Vec<Comparison> {
    use parva_core::latency::LatencyModel;
    use super::Algorithm;
    let percentile = match input.options.latency_model {
        LatencyModel::Queueing { percentile } => percentile,
        _ => 99.0,
    };
    let budget = input.options.latency_budget;
    let mut combos = vec![
        (Algorithm::Optimal, LatencyModel::Queueing { percentile }, "optimal", "queueing"),
        (Algorithm::Optimal, LatencyModel::ParvaGpu { budget }, "optimal", "parvagpu"),
        (Algorithm::ParvaGpu, LatencyModel::ParvaGpu { budget }, "parvagpu", "parvagpu"),
    ];
    if input.gpu.is_mps() {
        combos.push((Algorithm::GpuLet, LatencyModel::GpuLet, "gpulet", "gpulet"));
    }
    combos
        .into_iter()
        .map(|(algorithm, latency_model, a, l)| {
            let options = super::PlanOptions { algorithm, latency_model, ..input.options.clone() };
            let mut row = Comparison {
                algorithm: a,
                latency_model: l,
                gpus: None,
                gpcs: None,
                complete: false,
                meeting_slo: None,
                services: input.services.len(),
                misses: Vec::new(),
                error: None,
            };
            match super::plan(PlanInput { options: &options, ..input }) {
                Err(e) => row.error = Some(e.to_string()),
                Ok(plan) => {
                    row.gpus = Some(plan.gpus.len());
                    row.gpcs = Some(plan.gpcs_by_service().iter().sum());
                    row.complete = plan.infeasible.is_empty();
                    match simulated_misses(&plan.to_map(), input.profiles, input.services) {
                        Ok(Some(misses)) => {
                            row.meeting_slo = Some(input.services.len() - misses.len().min(input.services.len()));
                            row.misses = misses;
                        }
                        Ok(None) => {}
                        Err(e) => row.error = Some(format!("simulating the plan: {e}")),
                    }
                }
            }
            row
        })
        .collect()
}

/// Seconds of Poisson arrivals [`simulated_misses`] runs (5 s of them warm-up).
pub const CHECK_SECONDS: f64 = 30.0;
/// [`simulated_misses`] is skipped above this many expected arrivals (it would take long).
pub const CHECK_MAX_ARRIVALS: f64 = 2.0e6;

/// Simulates `map` ([`CHECK_SECONDS`] of Poisson arrivals at the services' rates, the same
/// simulator as `parva simulate`) and returns the services that miss their SLO at p99; `None` when
/// the fleet is too large to check quickly ([`CHECK_MAX_ARRIVALS`]).
pub fn simulated_misses(
    map: &parva_core::DeploymentMap,
    profiles: &parva_core::ProfileSet,
    services: &[Service],
) -> Result<Option<Vec<SimulatedMiss>>, parva_core::sim::SimError> {
    let arrivals: f64 = services.iter().map(|s| s.rate).sum::<f64>() * CHECK_SECONDS;
    if arrivals > CHECK_MAX_ARRIVALS {
        return Ok(None);
    }
    let config = parva_core::sim::SimConfig { duration_s: CHECK_SECONDS, warmup_s: 5.0, ..Default::default() };
    let report = parva_core::sim::simulate(map, profiles, Some(services), &config)?;
    Ok(Some(
        report
            .services
            .iter()
            .filter(|r| r.p99_ms > r.slo_ms)
            .map(|r| SimulatedMiss { service: r.service.clone(), p99_ms: r.p99_ms, slo_ms: r.slo_ms, attainment_pct: r.attainment_pct })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PlanOptions, SegmentChoice, gpus::GpuState};
    use parva_core::mig::GpuType;

    fn seg(service: usize, size: u8, batch: u32, procs: u32, capacity: f64) -> SegmentChoice {
        SegmentChoice { service, size, batch, procs, capacity, latency_s: 0.01 }
    }

    fn plan() -> Plan {
        let gpu = GpuType::by_id("a100-80gb").unwrap();
        let services = vec![
            Service { name: "ocr".into(), model: "resnet50".into(), rate: 100.0, slo_ms: 100.0 },
            Service { name: "photo-tags".into(), model: "vgg16".into(), rate: 50.0, slo_ms: 20.0 },
        ];
        let mut g0 = GpuState::default();
        g0.insert(0, seg(1, 4, 8, 2, 300.0));
        g0.insert(4, seg(0, 2, 4, 1, 120.0));
        let mut g1 = GpuState::default();
        g1.insert(0, seg(1, 7, 8, 1, 200.0));
        Plan {
            gpu,
            services,
            gpus: vec![g0, g1],
            infeasible: vec![],
            gpus_per_node: 1,
            algorithm: crate::Algorithm::Optimal,
            latency_model: PlanOptions::default().latency_model,
            plan_seconds: 0.0,
            notes: vec![],
            lower_bound_gpus: Some(2),
            proven_optimal: true,
            zero_rate: vec![],
            lower_bound_why: Some("because".into()),
            margin: parva_core::slo::Margin::NONE,
        data_path_ms: Default::default(),
        }
    }

    #[test]
    fn a_service_costing_far_more_than_its_rate_needs_is_warned_about_with_its_slo() {
        // vgg16 in the example tables: its best point gives far more than 50/11 samples/s per GPC.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../prof_data/example");
        let profiles = parva_core::ProfileSet::read_dir(&dir, None).unwrap();
        let r = report(&plan(), Some(&profiles));
        let photo = r.services.iter().find(|s| s.service == "photo-tags").unwrap();
        let u = photo.unconstrained_gpcs.unwrap();
        assert!(u > 0.0 && 11.0 >= 2.0 * u.max(1.0), "{u}");
        assert!(photo.is_costly());
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(r.warnings[0].starts_with("photo-tags: 11 GPCs (85 % of the plan's) for 50 requests/s"), "{:?}", r.warnings);
        assert!(r.warnings[0].ends_with("its 20 ms SLO, not its load, sets its cost"), "{:?}", r.warnings);
        // ocr: 2 GPCs, under the floor, never flagged.
        assert!(!r.services.iter().find(|s| s.service == "ocr").unwrap().is_costly());
    }

    #[test]
    fn per_service_costs_sum_to_the_plans_gpcs_most_costly_first() {
        let r = report(&plan(), None);
        assert_eq!(r.gpcs, 13);
        assert_eq!(r.services.iter().map(|s| s.gpcs).sum::<u32>(), r.gpcs);
        assert_eq!(r.services.iter().map(|s| s.service.as_str()).collect::<Vec<_>>(), ["photo-tags", "ocr"]);
        let photo = &r.services[0];
        assert_eq!((photo.segments, photo.gpcs, photo.capacity), (2, 11, 500.0));
        assert!((photo.share_pct - 100.0 * 11.0 / 13.0).abs() < 1e-9);
        assert!((r.services.iter().map(|s| s.share_pct).sum::<f64>() - 100.0).abs() < 1e-9);
    }

    /// Issue 38: a cost rollup per model, beside the model's share of the requests.
    #[test]
    fn per_model_costs_sum_services_of_a_model_and_their_requests() {
        let mut p = plan();
        p.services.push(Service { name: "thumbs".into(), model: "vgg16".into(), rate: 50.0, slo_ms: 200.0 });
        p.gpus.push(GpuState::default());
        p.gpus[2].insert(0, seg(2, 3, 8, 1, 80.0));
        let r = report(&p, None);
        assert_eq!(r.models.iter().map(|m| (m.model.as_str(), m.services, m.gpcs)).collect::<Vec<_>>(), [("vgg16", 2, 14), ("resnet50", 1, 2)]);
        assert!((r.models[0].requests_pct - 50.0).abs() < 1e-9 && (r.models[1].requests_pct - 50.0).abs() < 1e-9);
        assert!((r.models.iter().map(|m| m.share_pct).sum::<f64>() - 100.0).abs() < 1e-9);
        assert_eq!(r.models.iter().map(|m| m.gpcs).sum::<u32>(), r.gpcs);
        assert!(model_costs(&[]).is_empty());
    }

    /// Issue 38: `plan --compare`'s rows: one per planner and rule the type allows, the queueing
    /// row is the default plan, and every plan is simulated.
    #[test]
    fn compare_plans_each_rule_and_simulates_each_plan() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../prof_data/example");
        let profiles = parva_core::ProfileSet::read_dir(&dir, None).unwrap();
        let services = vec![
            Service { name: "chat".into(), model: "bert".into(), rate: 200.0, slo_ms: 40.0 },
            Service { name: "thumbs".into(), model: "mobilenetv2".into(), rate: 500.0, slo_ms: 60.0 },
        ];
        let gpu = GpuType::by_id("a100-80gb").unwrap();
        let options = PlanOptions::default();
        let input = PlanInput { gpu, profiles: &profiles, services: &services, options: &options };
        let rows = compare(input);
        assert_eq!(rows.iter().map(|r| (r.algorithm, r.latency_model)).collect::<Vec<_>>(), [("optimal", "queueing"), ("optimal", "parvagpu"), ("parvagpu", "parvagpu")]);
        assert_eq!(rows[0].gpus, Some(crate::plan(input).unwrap().gpus.len()));
        for r in &rows {
            assert!(r.error.is_none() && r.meeting_slo.is_some(), "{r:?}");
            assert_eq!(r.meeting_slo.unwrap() + r.misses.len(), r.services);
        }
    }

    #[test]
    fn a_saving_of_one_gpu_is_singular() {
        let s = Sensitivity { service: "chat".into(), slo_ms: 40.0, relaxed_slo_ms: 60.0, gpus: 4, relaxed_gpus: 3 };
        assert_eq!(s.to_string(), "chat: SLO 40 -> 60 ms saves 1 GPU (4 -> 3)");
        assert_eq!(Sensitivity { relaxed_gpus: 2, ..s }.to_string(), "chat: SLO 40 -> 60 ms saves 2 GPUs (4 -> 2)");
    }

    #[test]
    fn layouts_name_each_segment_and_the_free_gpcs_and_nodes_count_their_gpus() {
        let r = report(&plan(), None);
        let shown: Vec<String> = r.layouts.iter().map(|l| format!("node {} {l}", l.node)).collect();
        // Issue 33: GPUs are numbered per node, as the map numbers them.
        assert_eq!(shown, ["node 0 gpu 0: [4g photo-tags b8x2][2g ocr b4x1][1g -]", "node 1 gpu 0: [7g photo-tags b8x1]"]);
        assert_eq!(r.nodes.len(), 2, "one GPU per node");
        assert_eq!((r.nodes[0].gpus, r.nodes[0].gpcs, r.nodes[0].gpcs_total), (1, 6, 7));
        assert_eq!(r.lower_bound.as_deref(), Some("2 GPUs: because"));
    }

    #[test]
    fn an_incomplete_plan_says_so_first_and_a_costly_service_is_warned_about() {
        let mut p = plan();
        p.infeasible.push(crate::Infeasible { service: "bert".into(), model: "bert".into(), reason: "x".into() });
        let r = report(&p, None);
        assert!(!r.complete);
        assert!(r.headline.starts_with("INCOMPLETE: 1 service(s) without enough capacity (bert); 2 GPUs"), "{}", r.headline);
        // Without tables nothing can be said about cost against the rate.
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        let complete = report(&plan(), None);
        assert!(complete.headline.starts_with("2 GPUs, 13 of 14 GPCs used; algorithm optimal"), "{}", complete.headline);
        assert!(complete.headline.contains("latency model queueing (predicted p99"), "{}", complete.headline);
    }
}
