//! Planning: from profile tables and per-service SLOs to a deployment map.
//!
//! A plan decides, per service, a set of segments (MIG instance size, batch size, MPS process
//! count), and places every segment on a GPU at a legal MIG placement. Algorithms:
//! - [`Algorithm::ParvaGpu`]: ParvaGPU's published planner (see [`parvagpu`]), with legal placements.
//!
//! Which profile points a service may use is decided by the latency rule: a point is admissible
//! when its profiled batch latency is below `latency_budget` x SLO (ParvaGPU's 45 % rule).

pub mod gpus;
pub mod parvagpu;

use std::time::Instant;

use crate::deploy::{DeploymentMap, Segment};
use crate::mig::GpuType;
use crate::profile::{ModelProfile, ProfilePoint, ProfileSet};
use crate::slo::Service;

pub use gpus::{GpuState, Placed};

/// Which planner to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// ParvaGPU's greedy planner (SC'24), with legal MIG placements.
    ParvaGpu,
}

/// Options shared by every planner.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanOptions {
    pub algorithm: Algorithm,
    /// A point is admissible when its batch latency < budget x SLO.
    pub latency_budget: f64,
    /// Largest MPS process count considered.
    pub max_procs: u32,
    /// GPUs per node when numbering the map.
    pub gpus_per_node: u32,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions { algorithm: Algorithm::ParvaGpu, latency_budget: 0.45, max_procs: 3, gpus_per_node: 8 }
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
    /// Capacity of the segment (all processes), samples/s.
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
    pub plan_seconds: f64,
    /// Facts about the plan worth telling the user (e.g. where legal placement cost a GPU).
    pub notes: Vec<String>,
}

/// Run the planner `input.options.algorithm` names.
pub fn plan(input: PlanInput<'_>) -> Plan {
    let started = Instant::now();
    let mut plan = match input.options.algorithm {
        Algorithm::ParvaGpu => parvagpu::plan(&input),
    };
    plan.gpus.retain(|g| !g.is_empty());
    plan.plan_seconds = started.elapsed().as_secs_f64();
    plan
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

/// Explain why a service has no admissible point, naming the closest one.
pub fn infeasible(profile: &ModelProfile, service: &Service, gpu: &GpuType, options: &PlanOptions) -> Infeasible {
    let closest = profile
        .points
        .iter()
        .filter(|p| p.is_measured() && p.procs <= options.max_procs && gpu.profile_for_size(p.size).is_some())
        .min_by(|a, b| a.latency_s.total_cmp(&b.latency_s));
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
        let per_node = self.gpus_per_node.max(1);
        let mut segments = Vec::with_capacity(self.segment_count());
        for (i, g) in self.gpus.iter().enumerate() {
            for p in &g.placed {
                let s = &self.services[p.segment.service];
                segments.push(Segment {
                    node: i as u32 / per_node,
                    gpu: i as u32 % per_node,
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
                });
            }
        }
        DeploymentMap { segments }
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
            complete: self.infeasible.is_empty(),
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
    /// False when some service could not be planned (see `infeasible`).
    pub complete: bool,
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
    /// Provisioned capacity, samples/s (0 when infeasible).
    pub capacity: f64,
    pub segments: usize,
}
