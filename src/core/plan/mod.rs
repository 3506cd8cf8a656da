//! Planning: from profile tables and per-service SLOs to a deployment map.
//!
//! A plan decides, per service, a set of segments (MIG instance size, batch size, MPS process
//! count), and places every segment on a GPU at a legal MIG placement. Algorithms:
//! - [`Algorithm::Optimal`] (default): fewest GPUs over every segment mix and legal layout at
//!   once, by integer programming (see [`optimal`]); reports a lower bound and whether the plan is
//!   proven optimal.
//! - [`Algorithm::ParvaGpu`]: ParvaGPU's published planner (see [`parvagpu`]), with legal placements.
//!
//! Which profile points a service may use, and how much rate a segment may take, is decided by the
//! latency model (see [`crate::latency`]): ParvaGPU's rule (profiled batch latency below
//! `latency_budget` x SLO; the parvagpu algorithm always uses it) or the queueing model.

pub mod cover;
pub mod gpus;
pub mod optimal;
pub mod parvagpu;

use std::time::Instant;

use crate::deploy::{DeploymentMap, Segment};
use crate::latency::LatencyModel;
use crate::mig::GpuType;
use crate::profile::{ModelProfile, ProfilePoint, ProfileSet};
use crate::slo::Service;

pub use gpus::{GpuState, Placed};

/// Which planner to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Fewest GPUs by integer programming over segment mixes and MIG layouts.
    Optimal,
    /// ParvaGPU's greedy planner (SC'24), with legal MIG placements.
    ParvaGpu,
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
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            algorithm: Algorithm::Optimal,
            latency_model: LatencyModel::Queueing { percentile: 99.0 },
            latency_budget: 0.45,
            max_procs: 3,
            gpus_per_node: 8,
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
}

/// Run the planner `input.options.algorithm` names.
pub fn plan(input: PlanInput<'_>) -> Plan {
    let started = Instant::now();
    let mut plan = match input.options.algorithm {
        Algorithm::ParvaGpu => parvagpu::plan(&input),
        Algorithm::Optimal => optimal::plan(&input, &input.options.latency_model),
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
        LatencyModel::Queueing { percentile } => {
            let closest = fastest_point(profile, input.gpu, input.options.max_procs);
            let guard = crate::batching::BatchPolicy::new(1, service.slo_ms).guard * 1000.0;
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
            latency_model: self.latency_model,
            lower_bound_gpus: self.lower_bound_gpus,
            proven_optimal: self.proven_optimal,
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
    pub latency_model: LatencyModel,
    /// Fewest GPUs any plan could use under the same rules (when computed).
    pub lower_bound_gpus: Option<usize>,
    /// True when `gpus` is proven to be the fewest possible under the same rules.
    pub proven_optimal: bool,
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
