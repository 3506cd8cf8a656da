//! The machine-readable summary of a fleet plan (`parva plan --fleet --json`), and what the
//! report prints.

use std::collections::BTreeMap;

use super::{Alone, FleetPlan, Objective};
use crate::Infeasible;

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
