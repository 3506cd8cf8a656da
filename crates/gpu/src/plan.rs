//! Pure planning: a deployment map, the options and what was observed on the node -> the checks'
//! verdict and an ordered list of typed [`Action`]s. No call to a GPU or a process happens here,
//! so every rule is tested on plain data.
//!
//! Diff, don't wipe: on each GPU the plan uses, an instance whose profile and placement match a
//! planned one is kept (with its MPS daemon); the others are destroyed (with `keep_unchanged`,
//! only those overlapping a planned instance); the missing ones are created at the plan's
//! placements. Order: stop daemons, destroy, create (largest first), start daemons.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use parva_core::mig::{GiProfile, GpuType};
use parva_core::{DeploymentMap, Segment};
use serde::Serialize;

use crate::error::DeployError;
use crate::mig::{GpuInfo, GpuProcess, MigInstance};

/// What `parva deploy` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    pub node: u32,
    /// GPU type of the plan when the map has no `gpu_type` column.
    pub gpu_type: Option<String>,
    /// Plan GPU index -> NVML index on the node (identity when absent).
    pub gpu_index_map: BTreeMap<u32, u32>,
    /// Whole GPUs under one MPS daemon each, no MIG change.
    pub no_mig: bool,
    /// Keep instances that are not in the plan when they overlap no planned instance.
    pub keep_unchanged: bool,
}

/// Parse `0=2,1=3` (plan GPU = node GPU).
pub fn parse_index_map(spec: &str) -> Result<BTreeMap<u32, u32>, DeployError> {
    let bad = |reason: String| DeployError::BadIndexMap { spec: spec.to_string(), reason };
    let mut out = BTreeMap::new();
    for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = pair.split_once('=').ok_or_else(|| bad(format!("`{pair}` has no `=`")))?;
        let a: u32 = a.trim().parse().map_err(|_| bad(format!("`{a}` is not a GPU index")))?;
        let b: u32 = b.trim().parse().map_err(|_| bad(format!("`{b}` is not a GPU index")))?;
        if out.insert(a, b).is_some() {
            return Err(bad(format!("plan GPU {a} appears twice")));
        }
    }
    Ok(out)
}

/// A plan GPU -> NVML index map as `--gpu-index-map` spells it (`0=2,1=3`).
pub fn index_map_text(map: &BTreeMap<u32, u32>) -> String {
    map.iter().map(|(a, b)| format!("{a}={b}")).collect::<Vec<_>>().join(",")
}

/// One GPU as observed (read-only) before planning.
#[derive(Debug, Clone)]
pub struct ObservedGpu {
    pub info: GpuInfo,
    /// Empty when MIG is off.
    pub instances: Vec<MigInstance>,
    pub processes: Vec<GpuProcess>,
    /// Devices (`MIG-...`/`GPU-...`) of this GPU whose MPS daemon runs in our run directory.
    pub daemons: BTreeSet<String>,
}

/// The node as observed.
#[derive(Debug, Clone, Default)]
pub struct ObservedNode {
    pub gpus: Vec<ObservedGpu>,
    /// Daemons running in our run directory for devices that no longer exist.
    pub orphan_daemons: Vec<String>,
}

/// One step that changes the node.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// `gpu` None: a daemon of our run directory whose device no longer exists.
    StopDaemon { gpu: Option<u32>, device: String },
    DestroyInstance { gpu: u32, gi_id: u32, profile_id: u32, profile: String, start: u8 },
    CreateInstance { gpu: u32, profile_id: u32, profile: String, start: u8 },
    /// `start` None: the whole GPU (`--no-mig`). `device` None: the instance created at `start`.
    StartDaemon { gpu: u32, start: Option<u8>, device: Option<String> },
}

impl Action {
    pub fn changes_mig(&self) -> bool {
        matches!(self, Action::DestroyInstance { .. } | Action::CreateInstance { .. })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::StopDaemon { gpu: Some(gpu), device } => write!(f, "GPU {gpu}: stop the MPS daemon of {device}"),
            Action::StopDaemon { gpu: None, device } => {
                write!(f, "stop the MPS daemon of {device}, whose device no longer exists")
            }
            Action::DestroyInstance { gpu, gi_id, profile, start, .. } => {
                write!(f, "GPU {gpu}: destroy {profile} at placement {{{start}}} (GI {gi_id}) and its compute instance")
            }
            Action::CreateInstance { gpu, profile_id, profile, start } => {
                write!(f, "GPU {gpu}: create {profile} (profile id {profile_id}) at placement {{{start}}} with one compute instance")
            }
            Action::StartDaemon { gpu, start: Some(start), device } => write!(
                f,
                "GPU {gpu}: start an MPS daemon for the instance at {{{start}}} ({})",
                device.as_deref().unwrap_or("created above")
            ),
            Action::StartDaemon { gpu, start: None, device } => {
                write!(f, "GPU {gpu}: start an MPS daemon for the whole GPU ({})", device.as_deref().unwrap_or("?"))
            }
        }
    }
}

/// A planned instance (or, with `--no-mig`, a planned share of a whole GPU).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedInstance {
    pub plan_gpu: u32,
    /// NVML index on the node.
    pub gpu: u32,
    pub gpu_uuid: String,
    pub profile_id: u32,
    pub profile: String,
    pub gpcs: u8,
    pub start: u8,
    pub service: String,
    pub model: String,
    pub batch_size: u32,
    pub num_proc: u32,
    /// `--no-mig`: the SM share (instance size / GPCs of the GPU) as a percentage.
    pub active_thread_percentage: Option<u8>,
    /// `--no-mig`, best-effort instances: the device memory (MB) the process may pin, the memory
    /// of the MIG profile it stands for (`CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`), so a job beside
    /// MPS shares cannot take their memory.
    pub pinned_mem_limit_mb: Option<u64>,
    /// MIG device already there and kept (its UUID), or None when it is created.
    pub kept_device: Option<String>,
}

/// The result of planning: what is kept, and the ordered actions.
#[derive(Debug, Clone, Serialize)]
pub struct DeployPlan {
    pub node: u32,
    pub gpu_type: &'static str,
    pub no_mig: bool,
    pub targets: Vec<PlannedInstance>,
    pub actions: Vec<Action>,
    /// Instances outside the plan left alone by `--keep-unchanged` ("GPU 0: 1g.10gb at {6}").
    pub untouched: Vec<String>,
}

impl DeployPlan {
    pub fn changes_mig(&self) -> bool {
        self.actions.iter().any(Action::changes_mig)
    }
}

struct PlanCtx<'a> {
    opts: &'a DeployOptions,
    ty: &'static GpuType,
}

/// The changes that deploy `map`'s segments on node `opts.node` given what was `observed` (the
/// planner's `plan` makes maps; this plans a node's MIG and MPS changes).
pub fn changes(map: &DeploymentMap, opts: &DeployOptions, observed: &ObservedNode) -> Result<DeployPlan, DeployError> {
    // Best-effort instances are deployed as serving ones are (MIG instance, MPS daemon); only
    // what runs in them differs.
    let jobs: Vec<Segment> = map.jobs.iter().map(parva_core::deploy::JobSlot::as_segment).collect();
    let segs: Vec<&Segment> = map.segments.iter().chain(&jobs).filter(|s| s.node == opts.node).collect();
    if segs.is_empty() {
        let nodes: BTreeSet<u32> = map.segments.iter().map(|s| s.node).collect();
        return Err(DeployError::NoSegments { node: opts.node, nodes: nodes.into_iter().collect() });
    }
    let ty_id = opts.gpu_type.clone().or_else(|| segs.iter().find_map(|s| s.gpu_type.clone())).ok_or(DeployError::NoGpuType)?;
    let ty = GpuType::by_id(&ty_id).map_err(|e| DeployError::UnknownGpuType(e.to_string()))?;
    let node_map = DeploymentMap { segments: segs.iter().map(|s| (*s).clone()).collect(), jobs: Vec::new() };
    if let Some(p) = node_map.check_layouts(ty).into_iter().next() {
        return Err(DeployError::BadLayout { node: p.node, plan_gpu: p.gpu, problem: p.problem });
    }
    // A type without MIG (MPS shares) is always deployed as whole GPUs under MPS.
    let mps_opts;
    let opts = if ty.is_mps() && !opts.no_mig {
        mps_opts = DeployOptions { no_mig: true, ..opts.clone() };
        &mps_opts
    } else {
        opts
    };
    let ctx = PlanCtx { opts, ty };
    let job_at: BTreeSet<(u32, u8)> = jobs.iter().filter(|j| j.node == opts.node).map(|j| (j.gpu, j.placement)).collect();
    let mut by_gpu: BTreeMap<u32, Vec<&Segment>> = BTreeMap::new();
    for s in &segs {
        by_gpu.entry(s.gpu).or_default().push(s);
    }
    let mut out = DeployPlan { node: opts.node, gpu_type: ty.id, no_mig: opts.no_mig, targets: Vec::new(), actions: Vec::new(), untouched: Vec::new() };
    let mut phases: [Vec<Action>; 4] = Default::default();
    phases[0].extend(observed.orphan_daemons.iter().map(|d| Action::StopDaemon { gpu: None, device: d.clone() }));
    let mut used = BTreeMap::new();
    for (plan_gpu, segs) in by_gpu {
        let gpu = opts.gpu_index_map.get(&plan_gpu).copied().unwrap_or(plan_gpu);
        if let Some(other) = used.insert(gpu, plan_gpu) {
            // Regression (issue 34): the spec was printed as Rust's `{0: 1}`.
            return Err(DeployError::BadIndexMap {
                spec: index_map_text(&opts.gpu_index_map),
                reason: format!(
                    "plan GPUs {other} and {plan_gpu} both map to NVML GPU {gpu} (a plan GPU not in the map keeps its own index); \
                     give each plan GPU its own, e.g. {other}={gpu},{plan_gpu}={other}"
                ),
            });
        }
        let obs = observed
            .gpus
            .iter()
            .find(|g| g.info.index == gpu)
            .ok_or(DeployError::GpuMissing { plan_gpu, gpu, count: observed.gpus.len() })?;
        ctx.check_gpu(obs)?;
        let mut targets = ctx.targets(plan_gpu, obs, &segs)?;
        if opts.no_mig {
            // Every share of an MPS type, and best-effort jobs beside MIG-sized shares, may pin
            // only its share of the memory: the instance memory its fit checks counted.
            for t in targets.iter_mut().filter(|t| ty.is_mps() || job_at.contains(&(plan_gpu, t.start))) {
                t.pinned_mem_limit_mb = ty.profile_for_size(t.gpcs).map(|p| u64::from(p.mem_mib));
            }
        }
        if opts.no_mig {
            let device = obs.info.uuid.clone();
            if !obs.daemons.contains(&device) {
                phases[3].push(Action::StartDaemon { gpu, start: None, device: Some(device) });
            }
            out.targets.extend(targets);
        } else {
            let targets = ctx.diff(obs, targets, &mut phases, &mut out.untouched)?;
            out.targets.extend(targets);
        }
    }
    out.actions = phases.into_iter().flatten().collect();
    Ok(out)
}

impl PlanCtx<'_> {
    fn check_gpu(&self, obs: &ObservedGpu) -> Result<(), DeployError> {
        let info = &obs.info;
        let seen = info.identify();
        // A MIG GPU used without MIG is recognised as its MIG type (`h100-80gb` for `h100-80gb-nomig`).
        let matches = |t: &GpuType| t.id == self.ty.id || self.ty.mig_sibling().is_some_and(|m| m.id == t.id);
        if !seen.as_ref().is_ok_and(|t| matches(t)) {
            return Err(DeployError::TypeMismatch {
                gpu: info.index,
                uuid: info.uuid.clone(),
                found: info.name.clone(),
                seen: match seen {
                    Ok(t) => format!("{}, recognised as {}", info.product(), t.id),
                    Err(e) => e.to_string(),
                },
                want: self.ty.id.to_string(),
            });
        }
        let (gpu, uuid) = (info.index, info.uuid.clone());
        if self.opts.no_mig {
            if info.mig.current {
                return Err(DeployError::MigEnabled { gpu, uuid, command: format!("sudo nvidia-smi -i {gpu} -mig 0") });
            }
            return Ok(());
        }
        if !info.mig.supported {
            return Err(DeployError::MigUnsupported { gpu, uuid });
        }
        if !info.mig.current {
            let state = if info.mig.pending { "enabled but pending a GPU reset" } else { "disabled" };
            let command = if info.mig.pending {
                format!("sudo nvidia-smi -i {gpu} -r")
            } else {
                format!("sudo nvidia-smi -i {gpu} -mig 1")
            };
            return Err(DeployError::MigDisabled { gpu, uuid, state: state.into(), command });
        }
        Ok(())
    }

    fn targets(&self, plan_gpu: u32, obs: &ObservedGpu, segs: &[&Segment]) -> Result<Vec<PlannedInstance>, DeployError> {
        let mut out = Vec::new();
        for s in segs {
            let profile = self.profile_of(plan_gpu, s)?;
            let pct = ((s.instance_size as f64 / self.ty.gpcs as f64) * 100.0).round().clamp(1.0, 100.0) as u8;
            out.push(PlannedInstance {
                plan_gpu,
                gpu: obs.info.index,
                gpu_uuid: obs.info.uuid.clone(),
                profile_id: profile.id,
                profile: profile.name.to_string(),
                gpcs: profile.gpcs,
                start: s.placement,
                service: s.service.clone(),
                model: s.model.clone(),
                batch_size: s.batch_size,
                num_proc: s.num_proc,
                active_thread_percentage: self.opts.no_mig.then_some(pct),
                pinned_mem_limit_mb: None,
                kept_device: None,
            });
        }
        out.sort_by_key(|t| t.start);
        Ok(out)
    }

    fn profile_of(&self, plan_gpu: u32, s: &Segment) -> Result<&'static GiProfile, DeployError> {
        let bad = |problem: String| DeployError::BadLayout { node: s.node, plan_gpu, problem };
        let profile = match &s.profile {
            Some(name) => self
                .ty
                .profile_by_name(name)
                .ok_or_else(|| bad(format!("profile `{name}` of {} is not a {} profile", s.service, self.ty.id)))?,
            None => self.ty.profile_for_size(s.instance_size).ok_or_else(|| {
                bad(format!("instance size {} of {} is not a MIG size of {}", s.instance_size, s.service, self.ty.id))
            })?,
        };
        if profile.gpcs != s.instance_size {
            return Err(bad(format!(
                "{} has instance size {} but profile {} has {} GPCs",
                s.service, s.instance_size, profile.name, profile.gpcs
            )));
        }
        Ok(profile)
    }

    fn diff(
        &self,
        obs: &ObservedGpu,
        mut targets: Vec<PlannedInstance>,
        phases: &mut [Vec<Action>; 4],
        untouched: &mut Vec<String>,
    ) -> Result<Vec<PlannedInstance>, DeployError> {
        let gpu = obs.info.index;
        let mut kept = BTreeSet::new();
        for inst in &obs.instances {
            let name = self.ty.profile_by_id(inst.profile_id).map_or_else(|| format!("profile {}", inst.profile_id), |p| p.name.to_string());
            if let Some(t) = targets.iter_mut().find(|t| t.profile_id == inst.profile_id && t.start == inst.start) {
                let Some(device) = inst.uuid.clone() else {
                    return Err(DeployError::Inconsistent {
                        gpu,
                        uuid: obs.info.uuid.clone(),
                        what: format!("{name} at {{{}}} (GI {}) has no compute instance; destroy it or fix it by hand", inst.start, inst.gi_id),
                    });
                };
                if !obs.daemons.contains(&device) {
                    phases[3].push(Action::StartDaemon { gpu, start: Some(inst.start), device: Some(device.clone()) });
                }
                t.kept_device = Some(device);
                kept.insert(inst.gi_id);
                continue;
            }
            let mask = parva_core::mig::slice_mask(inst.start, inst.size);
            let overlaps = targets.iter().any(|t| {
                self.ty.profile_by_id(t.profile_id).is_some_and(|p| p.mask_at(t.start) & mask != 0)
            });
            if self.opts.keep_unchanged && !overlaps {
                untouched.push(format!("GPU {gpu}: {name} at {{{}}}", inst.start));
                continue;
            }
            let ours = inst.uuid.as_ref().is_some_and(|u| obs.daemons.contains(u));
            let foreign: Vec<&GpuProcess> = obs
                .processes
                .iter()
                .filter(|p| p.gi_id == Some(inst.gi_id))
                .filter(|p| !(ours && p.name.as_deref().is_some_and(|n| n.starts_with("nvidia-cuda-mps"))))
                .collect();
            if !foreign.is_empty() {
                return Err(DeployError::ForeignProcesses {
                    gpu,
                    uuid: obs.info.uuid.clone(),
                    profile: name,
                    start: inst.start,
                    pids: foreign
                        .iter()
                        .map(|p| format!("{} ({})", p.pid, p.name.as_deref().unwrap_or("?")))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            if let (true, Some(device)) = (ours, inst.uuid.clone()) {
                phases[0].push(Action::StopDaemon { gpu: Some(gpu), device });
            }
            phases[1].push(Action::DestroyInstance { gpu, gi_id: inst.gi_id, profile_id: inst.profile_id, profile: name, start: inst.start });
        }
        let mut new: Vec<&PlannedInstance> = targets.iter().filter(|t| t.kept_device.is_none()).collect();
        new.sort_by_key(|t| (std::cmp::Reverse(t.gpcs), t.start));
        for t in new {
            phases[2].push(Action::CreateInstance { gpu, profile_id: t.profile_id, profile: t.profile.clone(), start: t.start });
            phases[3].push(Action::StartDaemon { gpu, start: Some(t.start), device: None });
        }
        Ok(targets)
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
