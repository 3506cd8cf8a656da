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

mod joint;
mod summary;
use joint::{Problem, Start, gcd, whole_costs};
pub use summary::{FleetServiceSummary, FleetSummary, TypeSummary};

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

#[cfg(test)]
mod tests;
