//! Mixed fleets: one plan over several GPU types (MIG and MPS-share alike), at the lowest cost per
//! hour or with the fewest GPUs, within each type's limit.
//!
//! Each type brings its own profile tables, so a service has its best segment per size on every
//! type where some point meets its SLO ([`cover::options`]). The joint integer program extends the
//! single-type one ([`super::optimal`]) by a type index:
//!
//! ```text
//! minimise   Σ_t c_t Σ_p y_tp                        (cost per hour, or GPUs with c_t = 1)
//! subject to Σ_t Σ_g cap_stg · x_stg >= rate_s       for every service s (a service may be split)
//!            Σ_s x_stg <= Σ_p slots_tpg · y_tp       for every type t and size g
//!            Σ_p y_tp <= max_t                       for every type with a limit
//! ```
//!
//! then, at that cost, the fewest GPCs (as a share of each GPU). HiGHS solves it deterministically
//! (one thread, node limits); the start is every service on its cheapest type's fewest-GPC cover.
//! Fleets of more than [`JOINT_LIMIT`] services keep that assignment (moved off a type that would
//! pass its limit) and pack each type optimally. The lower bound on cost is the larger of the
//! solver's bound and the *rate bound*: each service's rate at the best price per sample/s any
//! segment of any type offers, summed.

use std::collections::BTreeMap;
use std::time::Instant;

use highs::{HighsModelStatus, RowProblem, Sense};

use super::cover::{self, Options, min_cover};
use super::optimal::{self, Pattern, Solution, pack_counts, patterns, place, quiet};
use super::{Algorithm, Infeasible, Plan, PlanError, PlanInput, PlanOptions};
use parva_core::latency::LatencyModel;
use parva_core::mig::GpuType;
use parva_core::profile::ProfileSet;
use parva_core::slo::Service;

/// Largest number of services solved as one joint program over every type.
pub const JOINT_LIMIT: usize = 60;
/// Branch-and-bound node limit of the fleet program (deterministic, unlike a time limit).
pub const NODE_LIMIT: i32 = 50_000;

/// What a fleet plan minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// The fleet's cost per hour (each GPU at its type's price).
    Cost,
    /// The number of GPUs, whatever their type.
    Gpus,
}

/// One GPU type a fleet plan may use.
#[derive(Debug, Clone, Copy)]
pub struct FleetType<'a> {
    pub gpu: &'static GpuType,
    /// The type's profile tables (for MPS types, already slowed by their interference margin).
    pub profiles: &'a ProfileSet,
    pub cost_per_hour: f64,
    /// Most GPUs of the type; `None`: as many as needed (up to the options' `max_gpus`).
    pub max_gpus: Option<u32>,
    pub gpus_per_node: u32,
}

/// What the fleet planner needs. The options' `algorithm` must be the optimal planner; their
/// `gpus_per_node` and `max_gpus` are replaced by each type's.
#[derive(Debug, Clone, Copy)]
pub struct FleetInput<'a> {
    pub types: &'a [FleetType<'a>],
    pub services: &'a [Service],
    pub options: &'a PlanOptions,
    pub objective: Objective,
}

/// A type's part of a fleet plan.
#[derive(Debug, Clone, PartialEq)]
pub struct TypePlan {
    pub cost_per_hour: f64,
    /// First node id of the type in the map (types take consecutive nodes, in fleet order).
    pub first_node: u32,
    /// The type's GPUs; its `services` are all the fleet's services, each served here in part,
    /// wholly or not at all.
    pub plan: Plan,
}

impl TypePlan {
    pub fn cost(&self) -> f64 {
        self.plan.gpus.len() as f64 * self.cost_per_hour
    }
}

/// What one type alone would need for every service: GPUs and cost, or why it cannot.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Alone {
    pub gpu_type: String,
    pub gpus: Option<usize>,
    pub cost_per_hour: Option<f64>,
    pub proven_optimal: bool,
    /// Why the type alone cannot serve every service, when it cannot.
    pub why_not: Option<String>,
}

/// A finished fleet plan.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetPlan {
    pub objective: Objective,
    pub services: Vec<Service>,
    /// One part per fleet type, in fleet order (a type the plan does not use has no GPUs).
    pub types: Vec<TypePlan>,
    /// Services no type can serve within their SLO, with each type's reason.
    pub infeasible: Vec<Infeasible>,
    pub zero_rate: Vec<String>,
    /// A lower bound on the objective (cost per hour, or GPUs) under the same rules.
    pub lower_bound: f64,
    pub lower_bound_why: String,
    pub proven_optimal: bool,
    /// Each type on its own, for the saving of mixing.
    pub alone: Vec<Alone>,
    pub plan_seconds: f64,
    pub notes: Vec<String>,
}

impl FleetPlan {
    pub fn cost(&self) -> f64 {
        self.types.iter().map(TypePlan::cost).sum()
    }

    pub fn gpus(&self) -> usize {
        self.types.iter().map(|t| t.plan.gpus.len()).sum()
    }

    /// The plan's value of its objective.
    pub fn value(&self) -> f64 {
        match self.objective {
            Objective::Cost => self.cost(),
            Objective::Gpus => self.gpus() as f64,
        }
    }

    /// The mixed map: each type's GPUs on nodes of their own, numbered on from the previous type's.
    pub fn to_map(&self) -> parva_core::DeploymentMap {
        let mut map = parva_core::DeploymentMap { segments: Vec::new(), jobs: Vec::new() };
        for t in &self.types {
            let part = t.plan.to_map();
            map.segments.extend(part.segments.into_iter().map(|s| parva_core::deploy::Segment { node: s.node + t.first_node, ..s }));
        }
        map
    }

    /// Capacity provisioned for each service over every type (samples/s), in service order.
    pub fn capacities(&self) -> Vec<f64> {
        let mut cap = vec![0.0; self.services.len()];
        for t in &self.types {
            for (c, add) in cap.iter_mut().zip(t.plan.capacities()) {
                *c += add;
            }
        }
        cap
    }

    /// Each service's cost per hour: every GPU's price shared among its segments by GPCs (so the
    /// services' costs add up to the fleet's), per type, in service order.
    pub fn cost_by_service(&self) -> Vec<BTreeMap<&'static str, f64>> {
        let mut out = vec![BTreeMap::new(); self.services.len()];
        for t in &self.types {
            for g in &t.plan.gpus {
                let used = g.used_gpcs().max(1) as f64;
                for p in &g.placed {
                    *out[p.segment.service].entry(t.plan.gpu.id).or_insert(0.0) += t.cost_per_hour * p.segment.size as f64 / used;
                }
            }
        }
        out
    }
}

/// Plan `input`'s services over its types. Every service value and option is checked first; a
/// service no type can serve is reported in [`FleetPlan::infeasible`], never dropped.
pub fn plan_fleet(input: FleetInput<'_>) -> Result<FleetPlan, PlanError> {
    let started = Instant::now();
    if input.types.is_empty() {
        return Err(PlanError::Invalid { what: "--fleet".into(), rule: "lists no GPU types".into() });
    }
    if input.options.algorithm != Algorithm::Optimal || input.options.latency_model == LatencyModel::GpuLet {
        return Err(PlanError::Invalid {
            what: "--fleet".into(),
            rule: "a fleet is planned by the optimal planner (--algorithm optimal) under the queueing or ParvaGPU latency rule".into(),
        });
    }
    let model = input.options.latency_model;
    let targets = super::targets(input.services, input.options)?;
    let type_options: Vec<PlanOptions> = input
        .types
        .iter()
        .map(|t| PlanOptions {
            gpus_per_node: t.gpus_per_node,
            max_gpus: t.max_gpus.unwrap_or(input.options.max_gpus),
            ..input.options.clone()
        })
        .collect();
    let mut per_type: Vec<Vec<Result<Options, Infeasible>>> = Vec::with_capacity(input.types.len());
    for (t, o) in input.types.iter().zip(&type_options) {
        let pi = PlanInput { gpu: t.gpu, profiles: t.profiles, services: &targets, options: o };
        super::validate(&pi)?;
        per_type.push(cover::options(&pi, &model));
    }
    let costs: Vec<f64> = input
        .types
        .iter()
        .map(|t| match input.objective {
            Objective::Cost => t.cost_per_hour,
            Objective::Gpus => 1.0,
        })
        .collect();
    let limits: Vec<u32> = type_options.iter().map(|o| o.max_gpus).collect();
    let pats: Vec<Vec<Pattern>> = input.types.iter().map(|t| patterns(t.gpu)).collect();

    let mut infeasible = Vec::new();
    let mut feasible: Vec<usize> = Vec::new();
    for (si, s) in input.services.iter().enumerate() {
        if s.rate == 0.0 {
            continue;
        }
        if per_type.iter().any(|o| o[si].is_ok()) {
            feasible.push(si);
        } else {
            let reasons: Vec<String> = input
                .types
                .iter()
                .zip(&per_type)
                .filter_map(|(t, o)| o[si].as_ref().err().map(|bad| format!("{}: {}", t.gpu.id, bad.reason)))
                .collect();
            infeasible.push(Infeasible { service: s.name.clone(), model: s.model.clone(), reason: reasons.join("; ") });
        }
    }
    let (scaled, scale) = whole_costs(&costs);
    let step = scaled.iter().map(|c| *c as u64).filter(|c| *c > 0).fold(0, gcd).max(1) as f64;
    let problem = Problem { input: &input, targets: &targets, per_type: &per_type, costs: &costs, limits: &limits, pats: &pats, feasible: &feasible, scaled, scale, step };
    let (rate_bound, rate_why) = problem.rate_bound();
    let Start { solution: start, over } = problem.start()?;
    let joint = (feasible.len() <= JOINT_LIMIT && !feasible.is_empty()).then(|| problem.solve(&start)).flatten();
    let tried = joint.is_some();
    let (mut solution, mut placed) = match joint {
        Some(sol) => {
            let placed = problem.place(&sol);
            (sol, placed)
        }
        None => (start.clone(), None),
    };
    if placed.is_none() {
        if let Some(t) = over {
            let ty = &input.types[t];
            return Err(PlanError::Invalid {
                what: "--fleet".into(),
                rule: format!(
                    "the services need more {} GPUs than its max_gpus {}, and the other types cannot take the rest{}; raise max_gpus or add GPUs of another type",
                    ty.gpu.id,
                    limits[t],
                    if feasible.len() > JOINT_LIMIT { format!(" (more than {JOINT_LIMIT} services: each service is placed whole on one type)") } else { String::new() }
                ),
            });
        }
        if tried {
            tracing::warn!("the joint fleet solution does not fit its layouts; keeping the per-service assignment");
        }
        solution = start;
        placed = problem.place(&solution);
    }
    let Some(gpus_by_type) = placed else {
        return Err(PlanError::Solver {
            task: "placing a fleet's segments into its GPU types' layouts".into(),
            detail: "a segment found no slot".into(),
        });
    };
    for (t, gpus) in input.types.iter().zip(&gpus_by_type) {
        let used = gpus.iter().filter(|g| !g.is_empty()).count();
        let max = t.max_gpus.unwrap_or(input.options.max_gpus);
        if used > max as usize {
            return Err(PlanError::Invalid {
                what: "--fleet".into(),
                rule: format!(
                    "the services need {used} {} GPUs, more than its max_gpus {max}, and the other types cannot take the rest; raise max_gpus or add GPUs of another type",
                    t.gpu.id
                ),
            });
        }
    }
    let solver_bound = solution.first().map_or(0.0, |s| s.bound);
    let solver_proven = solution.first().is_some_and(|s| s.proven);
    let margin = input.options.margin;
    let data_path_ms: BTreeMap<String, f64> = input.options.data_path_ms.iter().filter(|(_, ms)| **ms > 0.0).map(|(s, ms)| (s.clone(), *ms)).collect();
    let mut types = Vec::with_capacity(input.types.len());
    let mut first_node = 0u32;
    for ((t, mut gpus), o) in input.types.iter().zip(gpus_by_type).zip(&type_options) {
        gpus.retain(|g| !g.is_empty());
        let plan = Plan {
            gpu: t.gpu,
            services: input.services.to_vec(),
            gpus,
            infeasible: Vec::new(),
            gpus_per_node: o.gpus_per_node,
            algorithm: Algorithm::Optimal,
            latency_model: model,
            plan_seconds: 0.0,
            notes: Vec::new(),
            lower_bound_gpus: None,
            proven_optimal: false,
            zero_rate: Vec::new(),
            lower_bound_why: None,
            margin,
            data_path_ms: data_path_ms.clone(),
        };
        let nodes = plan.node_count() as u32;
        types.push(TypePlan { cost_per_hour: t.cost_per_hour, first_node, plan });
        first_node += nodes;
    }
    let lower_bound = rate_bound.max(solver_bound);
    let mut plan = FleetPlan {
        objective: input.objective,
        services: input.services.to_vec(),
        types,
        infeasible,
        zero_rate: input.services.iter().filter(|s| s.rate == 0.0).map(|s| s.name.clone()).collect(),
        lower_bound,
        lower_bound_why: format!(
            "the larger of the rate bound ({rate_why}: {}) and the solver's bound on whole segments in legal layouts within each type's limit ({})",
            fmt_value(input.objective, rate_bound),
            fmt_value(input.objective, solver_bound)
        ),
        proven_optimal: false,
        alone: Vec::new(),
        plan_seconds: 0.0,
        notes: Vec::new(),
    };
    // Each type alone; one that beats the mixed plan (possible only where the mixed plan is not
    // proven, a large fleet's services each placed whole) is the plan: mixing never costs more.
    let singles = alone(&input);
    let value_of = |p: &Plan, t: &FleetType<'_>| match input.objective {
        Objective::Cost => p.gpus.len() as f64 * t.cost_per_hour,
        Objective::Gpus => p.gpus.len() as f64,
    };
    let best_single = singles
        .iter()
        .enumerate()
        .filter_map(|(ti, (_, p))| p.as_ref().map(|p| (ti, value_of(p, &input.types[ti]), p)))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((ti, v, single)) = best_single {
        if v < plan.value() - 1e-9 && plan.infeasible.is_empty() {
            plan.notes.push(format!(
                "{} alone ({}) beats what the mixed search found: the plan is that type's",
                input.types[ti].gpu.id,
                fmt_value(input.objective, v)
            ));
            for (k, t) in plan.types.iter_mut().enumerate() {
                t.plan.gpus = if k == ti { single.gpus.clone() } else { Vec::new() };
            }
            let mut first = 0;
            for t in &mut plan.types {
                t.first_node = first;
                first += t.plan.node_count() as u32;
            }
        }
    }
    plan.alone = singles.into_iter().map(|(a, _)| a).collect();
    let value = plan.value();
    plan.proven_optimal = solver_proven || value <= lower_bound + 1e-6 * value.max(1.0);
    if !plan.proven_optimal {
        plan.notes.push(format!(
            "not proven optimal: {} against a lower bound of {} (gap {:.1} %)",
            fmt_value(input.objective, value),
            fmt_value(input.objective, lower_bound),
            100.0 * (value - lower_bound) / lower_bound.max(1e-9)
        ));
    }
    super::short_of_capacity(input.services, &plan.capacities(), &mut plan.infeasible);
    plan.plan_seconds = started.elapsed().as_secs_f64();
    Ok(plan)
}

/// Each type alone, planned for every service by the single-type planner within the type's
/// limit, with its plan where it serves them all.
fn alone(input: &FleetInput<'_>) -> Vec<(Alone, Option<Plan>)> {
    input
        .types
        .iter()
        .map(|t| {
            let options = PlanOptions {
                gpus_per_node: t.gpus_per_node,
                max_gpus: t.max_gpus.unwrap_or(input.options.max_gpus),
                ..input.options.clone()
            };
            let id = t.gpu.id.to_string();
            match super::plan(PlanInput { gpu: t.gpu, profiles: t.profiles, services: input.services, options: &options }) {
                Ok(p) if p.infeasible.is_empty() => (
                    Alone {
                        gpu_type: id,
                        gpus: Some(p.gpus.len()),
                        cost_per_hour: Some(p.gpus.len() as f64 * t.cost_per_hour),
                        proven_optimal: p.proven_optimal,
                        why_not: None,
                    },
                    Some(p),
                ),
                Ok(p) => {
                    let names: Vec<&str> = p.infeasible.iter().map(|b| b.service.as_str()).collect();
                    let why = format!("no segment on it meets the SLO of {} ({})", plural(names.len()), names.join(", "));
                    (Alone { gpu_type: id, gpus: None, cost_per_hour: None, proven_optimal: false, why_not: Some(why) }, None)
                }
                Err(e) => (Alone { gpu_type: id, gpus: None, cost_per_hour: None, proven_optimal: false, why_not: Some(e.to_string()) }, None),
            }
        })
        .collect()
}

fn plural(n: usize) -> String {
    if n == 1 { "1 service".into() } else { format!("{n} services") }
}

/// A value of the objective in words: `12.34/h` or `5 GPUs`.
pub fn fmt_value(objective: Objective, v: f64) -> String {
    match objective {
        Objective::Cost => format!("{v:.2}/h"),
        Objective::Gpus => format!("{} GPUs", (v - 1e-6).ceil().max(0.0)),
    }
}

/// The fleet problem, shared by the start, the solve and the placement.
struct Problem<'p, 'a> {
    input: &'p FleetInput<'a>,
    /// Services at the SLO they are planned to.
    targets: &'p [Service],
    /// Per type, per service: its best segment per size, or why it has none.
    per_type: &'p [Vec<Result<Options, Infeasible>>],
    costs: &'p [f64],
    limits: &'p [u32],
    pats: &'p [Vec<Pattern>],
    /// Services with a positive rate that some type can serve.
    feasible: &'p [usize],
    /// The costs times `scale`, whole numbers: the solver then knows every objective value is a
    /// whole number and proves a cost to the cent instead of to within 1.
    scaled: Vec<f64>,
    scale: f64,
    /// The greatest common divisor of the scaled costs: the objective's step.
    step: f64,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The smallest power of ten (at most 10^4) that makes every cost a whole number, and the costs
/// times it (rounded: a price finer than 1/10,000 is optimised to the nearest 1/10,000).
fn whole_costs(costs: &[f64]) -> (Vec<f64>, f64) {
    let mut scale = 1.0;
    for _ in 0..4 {
        if costs.iter().all(|c| ((c * scale).round() - c * scale).abs() < 1e-6) {
            break;
        }
        scale *= 10.0;
    }
    (costs.iter().map(|c| (c * scale).round()).collect(), scale)
}

/// A fleet solution: per type, a single-type [`Solution`] whose counts run over `feasible`.
type FleetSolution = Solution;

/// The starting assignment, and the type it leaves over its limit when no service could move.
struct Start {
    solution: Vec<FleetSolution>,
    over: Option<usize>,
}

type Choices = Vec<Vec<(f64, usize, cover::Cover)>>;

/// Per type, the covers `pick` assigns to it, packed as `packed` says.
fn assignment(choices: &Choices, pick: &[usize], packed: &[Vec<u32>], n: usize) -> Vec<FleetSolution> {
    (0..n)
        .map(|t| Solution {
            counts: choices.iter().zip(pick).map(|(c, p)| if c[*p].1 == t { c[*p].2.counts.clone() } else { BTreeMap::new() }).collect(),
            gpus: packed[t].clone(),
            proven: false,
            bound: 0.0,
        })
        .collect()
}

impl Problem<'_, '_> {
    fn gpcs(&self, t: usize) -> f64 {
        self.input.types[t].gpu.gpcs as f64
    }

    fn opts(&self, t: usize, si: usize) -> Option<&Options> {
        self.per_type[t][si].as_ref().ok()
    }

    /// Each service's rate at the lowest price per sample/s of any segment of any type, summed.
    fn rate_bound(&self) -> (f64, String) {
        let mut total = 0.0;
        for &si in self.feasible {
            let rate = self.targets[si].rate;
            let best = (0..self.input.types.len())
                .filter_map(|t| self.opts(t, si).map(|o| (t, o)))
                .flat_map(|(t, o)| o.by_size.values().map(move |c| self.costs[t] * c.size as f64 / self.gpcs(t) / c.capacity))
                .fold(f64::INFINITY, f64::min);
            total += rate * best;
        }
        (total, "each service's rate at the lowest price per sample/s of any segment on any type".into())
    }

    /// Every service on its cheapest type's fewest-GPC cover (moved to its next cheapest where a
    /// type would pass its limit), each type packed optimally. Counts, per type, per feasible
    /// service; `gpus`: per type, per pattern, concatenated.
    fn start(&self) -> Result<Start, PlanError> {
        let n = self.input.types.len();
        // Per feasible service: the cost and cover of each type that can serve it, cheapest first.
        let choices: Choices = self
            .feasible
            .iter()
            .map(|&si| {
                let mut c: Vec<(f64, usize, cover::Cover)> = (0..n)
                    .filter_map(|t| self.opts(t, si).map(|o| (t, min_cover(o, self.targets[si].rate))))
                    .map(|(t, cv)| (self.costs[t] * cv.gpcs as f64 / self.gpcs(t), t, cv))
                    .collect();
                c.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                c
            })
            .collect();
        let mut pick: Vec<usize> = vec![0; choices.len()];
        loop {
            let mut packed = Vec::with_capacity(n);
            for t in 0..n {
                let counts = choices.iter().zip(&pick).filter(|(c, p)| c[**p].1 == t).map(|(c, p)| &c[*p].2.counts);
                packed.push(pack_counts(&self.pats[t], &optimal::aggregate(counts))?);
            }
            let over = (0..n).find(|&t| packed[t].iter().sum::<u32>() > self.limits[t]);
            let Some(t) = over else {
                return Ok(Start { solution: assignment(&choices, &pick, &packed, n), over: None });
            };
            // Move the service that loses least by leaving type t for its next choice.
            let mv = choices
                .iter()
                .zip(&pick)
                .enumerate()
                .filter(|(_, (c, p))| c[**p].1 == t && **p + 1 < c.len())
                .min_by(|a, b| {
                    let loss = |(c, p): &(&Vec<(f64, usize, cover::Cover)>, &usize)| c[**p + 1].0 - c[**p].0;
                    loss(&a.1).total_cmp(&loss(&b.1)).then(a.0.cmp(&b.0))
                })
                .map(|(i, _)| i);
            match mv {
                Some(i) => pick[i] += 1,
                // No service can move whole: the joint program may still split one (it starts
                // cold); the assignment as it stands is kept to say so.
                None => {
                    let mut sol = assignment(&choices, &pick, &packed, n);
                    sol[t].proven = false;
                    return Ok(Start { solution: sol, over: Some(t) });
                }
            }
        }
    }

    /// The joint program: phase 1 the objective, phase 2 the fewest GPU shares at that objective.
    fn solve(&self, start: &[FleetSolution]) -> Option<Vec<FleetSolution>> {
        let t0 = Instant::now();
        let (mut sol, proven, bound) = self.model(start)?;
        tracing::debug!(seconds = t0.elapsed().as_secs_f64(), value = self.value(&sol) , proven, "fleet program solved");
        self.trim(&mut sol);
        for s in &mut sol {
            s.proven = proven;
            s.bound = bound;
        }
        Some(sol)
    }

    /// Drop every segment a service can do without (largest share of a GPU first), so that the
    /// cost-optimal plan holds no capacity beyond what the rates need; GPU counts stay.
    fn trim(&self, sol: &mut [FleetSolution]) {
        let n = self.input.types.len();
        for (k, &si) in self.feasible.iter().enumerate() {
            let rate = self.targets[si].rate;
            let mut segs: Vec<(f64, usize, u8, f64)> = Vec::new(); // (share of a GPU, type, size, capacity)
            for t in 0..n {
                let Some(o) = self.opts(t, si) else { continue };
                for (size, count) in &sol[t].counts[k] {
                    let cap = o.by_size.get(size).map_or(0.0, |c| c.capacity);
                    segs.extend(std::iter::repeat_n((*size as f64 / self.gpcs(t), t, *size, cap), *count as usize));
                }
            }
            segs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(b.2.cmp(&a.2)));
            let mut have: f64 = segs.iter().map(|s| s.3).sum();
            for (_, t, size, cap) in segs {
                if (have - cap) * (1.0 + 1e-9) >= rate && sol[t].counts[k].get(&size).is_some_and(|c| *c > 0) {
                    let remaining: u32 = sol.iter().map(|s| s.counts[k].values().sum::<u32>()).sum();
                    if remaining <= 1 {
                        break;
                    }
                    have -= cap;
                    let c = sol[t].counts[k].entry(size).or_insert(0);
                    *c -= 1;
                    if *c == 0 {
                        sol[t].counts[k].remove(&size);
                    }
                }
            }
        }
    }

    fn value(&self, sol: &[FleetSolution]) -> f64 {
        sol.iter().zip(self.costs).map(|(s, c)| s.gpus.iter().sum::<u32>() as f64 * c).sum()
    }

    /// Build and solve the joint model: the objective, from the warm start.
    fn model(&self, warm: &[FleetSolution]) -> Option<(Vec<FleetSolution>, bool, f64)> {
        let n = self.input.types.len();
        let mut pb = RowProblem::default();
        let mut warm_values = Vec::new();
        // x[t][k]: (size, col, coverage coefficient) per feasible service k.
        let mut x: Vec<Vec<Vec<(u8, highs::Col, f64)>>> = vec![Vec::with_capacity(self.feasible.len()); n];
        let upper = |t: usize, si: usize, size: u8, capacity: f64| {
            (self.targets[si].rate / capacity).ceil().min(self.limits[t] as f64 * self.gpcs(t) / size as f64).floor().max(1.0)
        };
        // Among plans of one cost, fewer segments (one 50 % share, not five of 10 %): each segment
        // costs `tie`, so little that all of them together stay under 0.4 of a cost step.
        let most: f64 = (0..n)
            .flat_map(|t| self.feasible.iter().map(move |&si| (t, si)))
            .filter_map(|(t, si)| self.opts(t, si).map(|o| (t, si, o)))
            .flat_map(|(t, si, o)| o.by_size.iter().map(move |(&size, seg)| upper(t, si, size, seg.capacity)))
            .sum();
        let tie = 0.4 * self.step / (most + 1.0);
        for t in 0..n {
            for (k, &si) in self.feasible.iter().enumerate() {
                let rate = self.targets[si].rate;
                let mut cols = Vec::new();
                if let Some(o) = self.opts(t, si) {
                    for (&size, seg) in &o.by_size {
                        let coef = (seg.capacity / rate).min(1.0);
                        cols.push((size, pb.add_integer_column(tie, 0.0..=upper(t, si, size, seg.capacity)), coef));
                        warm_values.push(warm[t].counts[k].get(&size).copied().unwrap_or(0) as f64);
                    }
                }
                x[t].push(cols);
            }
        }
        // y[t][p]: GPUs of type t laid out as pattern p; total[t]: GPUs of type t, an integer of
        // its own that carries the price (branching on a type's GPU count closes the cost gap far
        // sooner than branching on its patterns).
        let mut y: Vec<Vec<highs::Col>> = Vec::with_capacity(n);
        let mut total: Vec<highs::Col> = Vec::with_capacity(n);
        for t in 0..n {
            let obj = self.scaled[t];
            y.push(self.pats[t].iter().map(|_| pb.add_integer_column(0.0, 0.0..=self.limits[t] as f64)).collect());
            total.push(pb.add_integer_column(obj, 0.0..=self.limits[t] as f64));
            warm_values.extend(warm[t].gpus.iter().map(|&v| v as f64));
            warm_values.push(warm[t].gpus.iter().sum::<u32>() as f64);
        }
        for k in 0..self.feasible.len() {
            let row: Vec<(highs::Col, f64)> = (0..n).flat_map(|t| x[t][k].iter().map(|(_, c, coef)| (*c, *coef))).collect();
            pb.add_row(1.0.., row);
        }
        for t in 0..n {
            for size in self.input.types[t].gpu.sizes() {
                let mut row: Vec<(highs::Col, f64)> =
                    x[t].iter().flatten().filter(|(s, _, _)| *s == size).map(|(_, c, _)| (*c, 1.0)).collect();
                if row.is_empty() {
                    continue;
                }
                row.extend(self.pats[t].iter().zip(&y[t]).filter_map(|(p, c)| p.slots.get(&size).map(|k| (*c, -(*k as f64)))));
                pb.add_row(..=0.0, row);
            }
            let mut row: Vec<(highs::Col, f64)> = y[t].iter().map(|c| (*c, 1.0)).collect();
            row.push((total[t], -1.0));
            pb.add_row(0.0..=0.0, row);
        }
        let mut model = quiet(pb, Sense::Minimise)?;
        model.try_set_option("mip_max_nodes", NODE_LIMIT).ok()?;
        // Every cost is a multiple of the costs' greatest common divisor (the step), and the
        // segments' tie-break adds less than 0.4 of one: a plan within half a step of the bound
        // has the lowest cost.
        model.try_set_option("mip_abs_gap", 0.5 * self.step).ok()?;
        let solved = optimal::solve_warm(model, &warm_values, "the joint fleet model", "per-service assignment")?;
        let (values, status) = (solved.values, solved.status);
        // The bound on cost alone: less the tie-break's at most 0.4 step, up to a whole step.
        let dual = solved.dual_bound;
        let bound = (((dual - 0.4 * self.step) / self.step - 1e-9).ceil() * self.step).max(0.0) / self.scale;
        let mut out = Vec::with_capacity(n);
        for t in 0..n {
            let counts = x[t]
                .iter()
                .map(|cols| cols.iter().filter_map(|(size, col, _)| {
                    let v = values[col.index()].round().max(0.0) as u32;
                    (v > 0).then_some((*size, v))
                }).collect::<BTreeMap<u8, u32>>())
                .collect();
            let gpus = y[t].iter().map(|c| values[c.index()].round().max(0.0) as u32).collect();
            out.push(Solution { counts, gpus, proven: false, bound: 0.0 });
        }
        // Guard against numerical slack: every service covered, every type within its limit.
        for (k, &si) in self.feasible.iter().enumerate() {
            let cap: f64 = (0..n)
                .filter_map(|t| self.opts(t, si).map(|o| (t, o)))
                .flat_map(|(t, o)| out[t].counts[k].iter().map(move |(s, c)| o.by_size.get(s).map_or(0.0, |seg| seg.capacity) * *c as f64))
                .sum();
            if cap * (1.0 + 1e-9) < self.targets[si].rate {
                return None;
            }
        }
        if (0..n).any(|t| out[t].gpus.iter().sum::<u32>() > self.limits[t]) {
            return None;
        }
        Some((out, status == HighsModelStatus::Optimal, bound))
    }

    /// Concrete GPUs per type; `None` when some segment finds no slot.
    fn place(&self, sol: &[FleetSolution]) -> Option<Vec<Vec<super::GpuState>>> {
        (0..self.input.types.len())
            .map(|t| {
                // place() takes the services with options on t, with their counts.
                let mut feasible = Vec::new();
                let mut counts = Vec::new();
                for (k, &si) in self.feasible.iter().enumerate() {
                    match self.opts(t, si) {
                        Some(o) => {
                            feasible.push((si, o.clone()));
                            counts.push(sol[t].counts[k].clone());
                        }
                        None if !sol[t].counts[k].is_empty() => return None,
                        None => {}
                    }
                }
                place(&self.pats[t], &Solution { counts, gpus: sol[t].gpus.clone(), proven: false, bound: 0.0 }, &feasible)
            })
            .collect()
    }
}

/// The machine-readable summary of a fleet plan (`parva plan --fleet --json`), and what the
/// report prints.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FleetSummary {
    pub objective: Objective,
    pub gpus: usize,
    pub nodes: usize,
    pub segments: usize,
    pub cost_per_hour: f64,
    pub lower_bound: f64,
    pub lower_bound_why: String,
    pub proven_optimal: bool,
    pub complete: bool,
    pub plan_seconds: f64,
    pub types: Vec<TypeSummary>,
    pub services: Vec<FleetServiceSummary>,
    pub alone: Vec<Alone>,
    /// The cheapest single type that serves every service alone, and what mixing saves on it
    /// (per hour); `None` when no type alone serves them all.
    pub cheapest_alone: Option<(String, f64)>,
    pub saving_per_hour: Option<f64>,
    pub infeasible: Vec<Infeasible>,
    pub zero_rate: Vec<String>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TypeSummary {
    pub gpu_type: String,
    pub gpus: usize,
    /// Node ids of the type, first to last (none when it has no GPUs).
    pub nodes: Option<(u32, u32)>,
    pub cost_per_hour: f64,
    pub price_per_gpu_hour: f64,
    pub max_gpus: Option<u32>,
    pub segments: usize,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FleetServiceSummary {
    pub service: String,
    pub model: String,
    pub rate: f64,
    pub slo_ms: f64,
    pub capacity: f64,
    pub segments: usize,
    pub cost_per_hour: f64,
    /// Cost per hour on each type that serves it.
    pub by_type: BTreeMap<String, f64>,
}

impl FleetPlan {
    pub fn summary(&self, limits: &[Option<u32>]) -> FleetSummary {
        let caps = self.capacities();
        let by_service = self.cost_by_service();
        let mut segs = vec![0usize; self.services.len()];
        for t in &self.types {
            for g in &t.plan.gpus {
                for p in &g.placed {
                    segs[p.segment.service] += 1;
                }
            }
        }
        let cost = self.cost();
        let cheapest_alone = self
            .alone
            .iter()
            .filter_map(|a| a.cost_per_hour.map(|c| (a.gpu_type.clone(), c)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let round = |v: f64| (v * 1e4).round() / 1e4;
        FleetSummary {
            objective: self.objective,
            gpus: self.gpus(),
            nodes: self.types.iter().map(|t| t.plan.node_count()).sum(),
            segments: segs.iter().sum(),
            cost_per_hour: round(cost),
            lower_bound: round(self.lower_bound),
            lower_bound_why: self.lower_bound_why.clone(),
            proven_optimal: self.proven_optimal,
            complete: self.infeasible.is_empty() && self.services.iter().zip(&segs).all(|(s, n)| s.rate == 0.0 || *n > 0),
            plan_seconds: self.plan_seconds,
            types: self
                .types
                .iter()
                .zip(limits.iter().copied().chain(std::iter::repeat(None)))
                .map(|(t, max)| TypeSummary {
                    gpu_type: t.plan.gpu.id.to_string(),
                    gpus: t.plan.gpus.len(),
                    nodes: (!t.plan.gpus.is_empty()).then(|| (t.first_node, t.first_node + t.plan.node_count() as u32 - 1)),
                    cost_per_hour: round(t.cost()),
                    price_per_gpu_hour: t.cost_per_hour,
                    max_gpus: max,
                    segments: t.plan.segment_count(),
                })
                .collect(),
            services: self
                .services
                .iter()
                .enumerate()
                .map(|(i, s)| FleetServiceSummary {
                    service: s.name.clone(),
                    model: s.model.clone(),
                    rate: s.rate,
                    slo_ms: s.slo_ms,
                    capacity: (caps[i] * 1000.0).round() / 1000.0,
                    segments: segs[i],
                    cost_per_hour: round(by_service[i].values().sum()),
                    by_type: by_service[i].iter().map(|(t, c)| (t.to_string(), round(*c))).collect(),
                })
                .collect(),
            alone: self.alone.clone(),
            saving_per_hour: cheapest_alone.as_ref().map(|(_, c)| round(c - cost)),
            cheapest_alone,
            infeasible: self.infeasible.clone(),
            zero_rate: self.zero_rate.clone(),
            notes: self.notes.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parva_core::profile::{ModelProfile, ProfilePoint};
    use parva_core::slo::Margin;

    #[test]
    fn costs_become_whole_numbers_at_the_smallest_power_of_ten() {
        assert_eq!(whole_costs(&[1.3, 3.0, 0.8]), (vec![13.0, 30.0, 8.0], 10.0));
        assert_eq!(whole_costs(&[2.0, 0.0]), (vec![2.0, 0.0], 1.0));
        assert_eq!(whole_costs(&[1.2345, 2.0]), (vec![12345.0, 20000.0], 10_000.0));
        assert_eq!(gcd(130, 300), 10);
    }

    /// One model `m`: a 7-GPC (or whole-GPU) point of `cap` samples/s and a 1-GPC (10 %) point of
    /// `cap / 8`, both fast enough for any SLO here.
    fn tables(sizes: (u8, u8), cap: f64, share_keyed: bool) -> ProfileSet {
        let p = |size: u8, tp: f64| ProfilePoint { size, batch: 1, procs: 1, throughput: tp, latency_s: 0.001, extra: Vec::new() };
        let points = vec![p(sizes.0, cap / 8.0), p(sizes.1, cap)];
        let model = ModelProfile { model: "m".into(), share_keyed, points, extra_headers: Vec::new() };
        ProfileSet { dir: "generated".into(), models: [("m".to_string(), model)].into_iter().collect() }
    }

    fn options() -> PlanOptions {
        PlanOptions { latency_model: LatencyModel::ParvaGpu { budget: 0.45 }, margin: Margin::NONE, ..PlanOptions::default() }
    }

    fn services(n: usize, rate: f64) -> Vec<Service> {
        (0..n).map(|i| Service { name: format!("s{i}"), model: "m".into(), rate, slo_ms: 100.0 }).collect()
    }

    /// A large fleet (past the joint program) on a cheap type limited to 2 GPUs: the rest moves to
    /// the dear type, every rate is covered, and the plan costs no more than the dear type alone.
    #[test]
    fn a_large_fleet_keeps_each_types_limit_and_never_costs_more_than_one_type_alone() {
        let a100 = GpuType::by_id("a100-80gb").unwrap();
        let l4 = GpuType::by_id("l4-24gb").unwrap();
        let (ta, tl) = (tables((1, 7), 800.0, false), tables((1, 10), 400.0, true));
        let types = [
            FleetType { gpu: a100, profiles: &ta, cost_per_hour: 1.0, max_gpus: Some(2), gpus_per_node: 8 },
            FleetType { gpu: l4, profiles: &tl, cost_per_hour: 0.9, max_gpus: None, gpus_per_node: 4 },
        ];
        let svcs = services(JOINT_LIMIT + 10, 150.0);
        let opts = options();
        let plan = plan_fleet(FleetInput { types: &types, services: &svcs, options: &opts, objective: Objective::Cost }).unwrap();
        assert!(plan.infeasible.is_empty(), "{:?}", plan.infeasible);
        assert!(plan.types[0].plan.gpus.len() <= 2, "{}", plan.types[0].plan.gpus.len());
        for (s, cap) in svcs.iter().zip(plan.capacities()) {
            assert!(cap * (1.0 + 1e-9) >= s.rate, "{} {cap}", s.name);
        }
        let cheapest = plan.alone.iter().filter_map(|a| a.cost_per_hour).fold(f64::INFINITY, f64::min);
        assert!(plan.cost() <= cheapest + 1e-9, "{} > {cheapest}", plan.cost());
        // Nodes: the A100s first (if any), the L4s on the nodes after theirs, 4 to a node.
        let map = plan.to_map();
        let problems = map.check_layouts_by_node(None);
        assert!(problems.is_empty(), "{problems:?}");
        let l4_nodes: std::collections::BTreeSet<u32> = map.segments.iter().filter(|s| s.gpu_type.as_deref() == Some("l4-24gb")).map(|s| s.node).collect();
        assert_eq!(plan.types[1].first_node as usize, plan.types[0].plan.node_count());
        assert_eq!(l4_nodes.first(), Some(&plan.types[1].first_node));
        assert_eq!(l4_nodes.len(), plan.types[1].plan.gpus.len().div_ceil(4));
    }

    /// `--objective gpus` counts GPUs whatever they cost; `cost` pays for more, cheaper GPUs.
    #[test]
    fn the_objective_decides_between_fewer_dear_gpus_and_more_cheap_ones() {
        let a100 = GpuType::by_id("a100-80gb").unwrap();
        let l4 = GpuType::by_id("l4-24gb").unwrap();
        // A whole A100 serves 800/s for 3.00; a whole L4 400/s for 1.00: 1,600/s is 2 A100s (6.00)
        // or 4 L4s (4.00).
        let (ta, tl) = (tables((1, 7), 800.0, false), tables((1, 10), 400.0, true));
        let types = [
            FleetType { gpu: a100, profiles: &ta, cost_per_hour: 3.0, max_gpus: None, gpus_per_node: 8 },
            FleetType { gpu: l4, profiles: &tl, cost_per_hour: 1.0, max_gpus: None, gpus_per_node: 8 },
        ];
        let svcs = services(1, 1600.0);
        let opts = options();
        let by = |objective| {
            let p = plan_fleet(FleetInput { types: &types, services: &svcs, options: &opts, objective }).unwrap();
            assert!(p.proven_optimal);
            (p.types[0].plan.gpus.len(), p.types[1].plan.gpus.len(), p.cost())
        };
        assert_eq!(by(Objective::Cost), (0, 4, 4.0));
        assert_eq!(by(Objective::Gpus), (2, 0, 6.0));
    }
}
