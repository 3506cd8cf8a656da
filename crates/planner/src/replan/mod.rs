//! Re-planning for new rates with the fewest changes to what runs, and the transition to get there.
//!
//! [`replan`] plans the new rates as [`crate::plan`] does (the same fewest GPUs, proven by the
//! same lower bound), then places the plan's segments so that as many as possible of the running
//! map's segments stay where they are: a segment is **kept** when a new segment of the same
//! service, MIG size and process count can take its GPU and placement (its batch size may change:
//! that is a router setting and restarts nothing). What is not kept is destroyed (its workers
//! stopped, its MIG instance destroyed) and created elsewhere.
//!
//! Placement, for each GPU budget from the plan's count up to `max_extra_gpus` more:
//! 1. the running GPUs are ranked by the GPCs they could keep (a greedy match of their segments
//!    against the plan's), and the best `budget` of them are chosen;
//! 2. matching segments on the chosen GPUs are kept; the plan's other segments are placed largest
//!    first into slots of the chosen GPUs that are free now, then into slots that free up as their
//!    running segments go (break before make), then onto new GPUs (ids the running map leaves
//!    empty, then those it gives up);
//! 3. when that packing does not fit the budget, the kept segments of the chosen GPUs that keep
//!    least are given up (the most GPUs that still pack, by bisection); and the plan's own
//!    placement is always a candidate, its GPUs given the ids of the running GPUs they coincide
//!    with most, so that what happens to sit where it ran is kept (a replan never needs more GPUs
//!    than the plan).
//!
//! The choice with the fewest changes wins (ties: fewer GPUs); every budget tried is reported with
//! what it costs. Changes are counted as MIG instances destroyed + created (each with its workers).
//!
//! **Whole nodes free** (`free_nodes`, issue 33): a cluster autoscaler removes whole nodes, and the
//! fewest changes free GPUs scattered over every node. With it, the chosen placement is gathered
//! onto the fewest nodes that can hold its GPUs (those already using most GPUs, then keeping most
//! segments): every GPU of another node moves whole, its layout unchanged, to a free GPU of a kept
//! node (its segments destroyed and created there, make before break), so that the nodes left
//! are free whole. [`Replan::freed_nodes`] names them.
//!
//!
//! [`transition`] orders the changes as steps, make before break (see [`mod@transition`]).

mod transition;

pub use transition::{Costs, ServiceDip, Step, Transition, transition};

use std::collections::BTreeMap;

use parva_core::deploy::DeploymentMap;
use parva_core::mig::{GpuType, Placement};

use crate::gpus::{GpuState, profile};
use crate::{Plan, PlanError, PlanInput, SegmentChoice};

/// Why a replan was refused; nothing is written when one is returned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplanError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The running map does not fit the GPU type or the node numbering.
    #[error("the running map, segment {index} ({service} on node {node} GPU {gpu}): {rule}")]
    Current { index: usize, service: String, node: u32, gpu: u32, rule: String },
}

/// A placement: GPUs with their ids, and the indices of the running segments kept.
type Placing = (Vec<(u32, GpuState)>, Vec<usize>);

/// A running segment, as the replan sees it.
#[derive(Debug, Clone, PartialEq)]
struct Old {
    /// GPU id: node x GPUs per node + GPU.
    gpu: u32,
    start: u8,
    size: u8,
    procs: u32,
    batch: u32,
    service: String,
    capacity: f64,
}

/// One budget tried: the GPUs it uses and the changes it needs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Alternative {
    pub gpus: usize,
    pub kept: usize,
    pub destroyed: usize,
    pub created: usize,
    pub changes: usize,
}

/// The result of a replan.
#[derive(Debug, Clone)]
pub struct Replan {
    /// The plan for the new rates; `gpus[i]` runs on GPU id `gpu_ids[i]`.
    pub plan: Plan,
    pub gpu_ids: Vec<u32>,
    /// Segments of the running map kept in place, destroyed, and created.
    pub kept: Vec<KeptSegment>,
    pub destroyed: Vec<ChangedSegment>,
    pub created: Vec<ChangedSegment>,
    /// GPUs the running map used.
    pub old_gpus: usize,
    /// The fewest GPUs the new rates need (the plan's); the replan uses more only when
    /// `max_extra_gpus` allowed it and that saved changes.
    pub fewest_gpus: usize,
    /// GPUs the running map used and the new one does not: free for other work.
    pub freed: Vec<GpuRef>,
    /// Nodes the running map used of which the new one uses no GPU: free whole.
    pub freed_nodes: Vec<u32>,
    /// GPUs moved whole to another node to free nodes (`free_nodes`).
    pub moved_gpus: usize,
    /// Every budget tried, the chosen one first.
    pub alternatives: Vec<Alternative>,
}

/// A GPU of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct GpuRef {
    pub node: u32,
    pub gpu: u32,
}

/// A segment kept in place (its batch size may change).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KeptSegment {
    pub node: u32,
    pub gpu: u32,
    pub placement: u8,
    pub size: u8,
    pub service: String,
    pub procs: u32,
    pub old_batch: u32,
    pub new_batch: u32,
}

/// A segment destroyed or created.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChangedSegment {
    pub node: u32,
    pub gpu: u32,
    pub placement: u8,
    pub size: u8,
    pub service: String,
    pub procs: u32,
    pub batch: u32,
    /// Capacity of the segment, samples/s.
    pub capacity: f64,
}

/// What `parva replan --json` prints of a replan.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReplanSummary {
    pub old_gpus: usize,
    pub gpus: usize,
    /// The fewest GPUs the new rates need: `gpus` is more only when `--max-extra-gpus` let a
    /// larger count save changes.
    pub fewest_gpus: usize,
    pub lower_bound_gpus: Option<usize>,
    pub proven_optimal: bool,
    pub kept: usize,
    pub destroyed: usize,
    pub created: usize,
    pub rebatched: usize,
    pub workers_started: u32,
    pub workers_stopped: u32,
    /// GPUs the running map used and the new one does not (free for other work), and the GPCs
    /// no segment uses on the GPUs the new map keeps.
    pub freed_gpus: Vec<GpuRef>,
    /// Nodes the running map used of which the new one uses no GPU (what a cluster autoscaler can
    /// remove), and the GPUs moved whole to free them (`--free-nodes`).
    pub freed_nodes: Vec<u32>,
    pub moved_gpus: usize,
    pub idle_gpcs: u32,
    pub alternatives: Vec<Alternative>,
}

impl Replan {
    /// Workers started (the processes of the created segments) and stopped.
    pub fn workers(&self) -> (u32, u32) {
        (self.created.iter().map(|c| c.procs).sum(), self.destroyed.iter().map(|c| c.procs).sum())
    }

    pub fn summary(&self) -> ReplanSummary {
        let (started, stopped) = self.workers();
        ReplanSummary {
            old_gpus: self.old_gpus,
            gpus: self.plan.gpus.len(),
            fewest_gpus: self.fewest_gpus,
            lower_bound_gpus: self.plan.lower_bound_gpus,
            proven_optimal: self.plan.proven_optimal,
            kept: self.kept.len(),
            destroyed: self.destroyed.len(),
            created: self.created.len(),
            rebatched: self.kept.iter().filter(|k| k.old_batch != k.new_batch).count(),
            workers_started: started,
            workers_stopped: stopped,
            freed_gpus: self.freed.clone(),
            freed_nodes: self.freed_nodes.clone(),
            moved_gpus: self.moved_gpus,
            idle_gpcs: self.plan.gpus.iter().map(|g| u32::from(self.plan.gpu.gpcs.saturating_sub(g.used_gpcs()))).sum(),
            alternatives: self.alternatives.clone(),
        }
    }

    /// The new map: GPU ids as the running map numbers them, so kept segments keep their node,
    /// GPU and placement.
    pub fn to_map(&self) -> DeploymentMap {
        self.plan.to_map_on(&self.gpu_ids)
    }
}

/// Plan `input` (the new rates) with the fewest changes to `current` (the running map), trying up
/// to `max_extra_gpus` GPUs more than the plan needs when that saves changes; with `free_nodes`,
/// gathered onto the fewest nodes so that what it frees is whole nodes. See the module doc.
pub fn replan(input: PlanInput<'_>, current: &DeploymentMap, max_extra_gpus: u32, free_nodes: bool) -> Result<Replan, ReplanError> {
    let per_node = input.options.gpus_per_node.max(1);
    let old = read_current(input.gpu, current, per_node)?;
    let plan = crate::plan(input)?;
    let names: BTreeMap<&str, usize> = plan.services.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
    let planned: Vec<SegmentChoice> = plan.gpus.iter().flat_map(|g| g.placed.iter().map(|p| p.segment.clone())).collect();
    // Two segment mixes: the plan's, and the plan's with every unchanged service's running mix
    // instead of its own where that costs no more GPCs (the integer program may pick another mix
    // of the same cost for a service whose rate and SLO did not change).
    let mixes = [planned.clone(), running_mix(&input, current, &old, &planned)];
    let need = plan.gpus.len();
    let mut tried: Vec<(Alternative, Placing)> = Vec::new();
    for (m, segments) in mixes.iter().enumerate() {
        if m > 0 && *segments == planned {
            break;
        }
        for extra in 0..=max_extra_gpus.min(need.max(1) as u32) {
            let budget = need + extra as usize;
            if let Some((gpus, kept)) = place_keeping(input.gpu, &old, &names, segments, budget) {
                let alt = count(&old, segments, &gpus, &kept);
                tried.push((alt, (gpus, kept)));
            }
            if tried.last().is_some_and(|t| t.0.changes == 0) {
                break; // nothing left to save
            }
        }
    }
    // The plan's own placement is always possible: its GPUs take the ids of the running GPUs they
    // coincide with most, keeping what happens to be where it was (at the fewest GPUs of a large
    // fleet the greedy packing above may not fit at all, and this is what is left).
    let (gpus, kept) = relabel(&old, &names, &plan.gpus);
    tried.push((count(&old, &planned, &gpus, &kept), (gpus, kept)));
    let best = (0..tried.len()).min_by_key(|&i| (tried[i].0.changes, tried[i].0.gpus)).unwrap_or(0);
    let (mut alt, (mut gpus, mut kept_idx)) = tried.swap_remove(best);
    let moved_gpus = if free_nodes { gather_on_fewest_nodes(&mut gpus, &mut kept_idx, &old, per_node) } else { 0 };
    if moved_gpus > 0 {
        let placed: usize = gpus.iter().map(|(_, g)| g.placed.len()).sum();
        alt = Alternative { gpus: alt.gpus, kept: kept_idx.len(), destroyed: old.len() - kept_idx.len(), created: placed - kept_idx.len(), changes: old.len() + placed - 2 * kept_idx.len() };
    }
    // Per GPU count, the best of the mixes.
    tried.sort_by_key(|t| (t.0.gpus, t.0.changes));
    let mut alternatives: Vec<Alternative> = tried.into_iter().map(|t| t.0).collect();
    alternatives.sort_by_key(|a| a.gpus);
    alternatives.dedup_by_key(|a| a.gpus);
    alternatives.retain(|a| a.gpus != alt.gpus);
    alternatives.insert(0, alt);

    let (mut gpu_ids, mut states): (Vec<u32>, Vec<GpuState>) = gpus.into_iter().filter(|(_, g)| !g.is_empty()).unzip();
    // Map order: by GPU id.
    let mut order: Vec<usize> = (0..gpu_ids.len()).collect();
    order.sort_by_key(|&i| gpu_ids[i]);
    gpu_ids = order.iter().map(|&i| gpu_ids[i]).collect();
    states = order.iter().map(|&i| states[i].clone()).collect();

    let at = |id: u32| (id / per_node, id % per_node);
    let kept_set: Vec<bool> = (0..old.len()).map(|i| kept_idx.contains(&i)).collect();
    let mut kept = Vec::new();
    let mut created = Vec::new();
    for (id, g) in gpu_ids.iter().zip(&states) {
        for p in &g.placed {
            let s = &p.segment;
            let name = plan.services[s.service].name.clone();
            let keep = old.iter().enumerate().find(|(i, o)| {
                kept_set[*i] && o.gpu == *id && o.start == p.start && o.size == s.size && o.procs == s.procs && o.service == name
            });
            let (node, gpu) = at(*id);
            match keep {
                Some((_, o)) => kept.push(KeptSegment {
                    node,
                    gpu,
                    placement: p.start,
                    size: s.size,
                    service: name,
                    procs: s.procs,
                    old_batch: o.batch,
                    new_batch: s.batch,
                }),
                None => created.push(ChangedSegment {
                    node,
                    gpu,
                    placement: p.start,
                    size: s.size,
                    service: name,
                    procs: s.procs,
                    batch: s.batch,
                    capacity: s.capacity,
                }),
            }
        }
    }
    let destroyed = old
        .iter()
        .enumerate()
        .filter(|(i, _)| !kept_set[*i])
        .map(|(_, o)| {
            let (node, gpu) = at(o.gpu);
            ChangedSegment {
                node,
                gpu,
                placement: o.start,
                size: o.size,
                service: o.service.clone(),
                procs: o.procs,
                batch: o.batch,
                capacity: o.capacity,
            }
        })
        .collect();
    let old_ids: std::collections::BTreeSet<u32> = old.iter().map(|o| o.gpu).collect();
    let freed = old_ids.iter().filter(|id| !gpu_ids.contains(id)).map(|&id| GpuRef { node: at(id).0, gpu: at(id).1 }).collect();
    let new_nodes: std::collections::BTreeSet<u32> = gpu_ids.iter().map(|&id| at(id).0).collect();
    let old_nodes: std::collections::BTreeSet<u32> = old_ids.iter().map(|&id| at(id).0).collect();
    let freed_nodes = old_nodes.difference(&new_nodes).copied().collect();
    let mut plan = plan;
    plan.gpus = states;
    Ok(Replan { plan, gpu_ids, kept, destroyed, created, old_gpus: old_ids.len(), fewest_gpus: need, freed, freed_nodes, moved_gpus, alternatives })
}

/// Move whole GPUs (their layouts unchanged) off the nodes that use fewest onto free GPUs of the
/// fewest nodes that can hold them all: those using most GPUs, then keeping most segments. The
/// segments kept on a moved GPU are kept no more. Returns how many GPUs moved.
fn gather_on_fewest_nodes(gpus: &mut [(u32, GpuState)], kept: &mut Vec<usize>, old: &[Old], per_node: u32) -> usize {
    let per_node = per_node.max(1);
    let used: Vec<usize> = (0..gpus.len()).filter(|&i| !gpus[i].1.is_empty()).collect();
    let need = used.len().div_ceil(per_node as usize);
    // Per node: GPUs used and segments kept.
    let mut load: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    for &i in &used {
        let id = gpus[i].0;
        let e = load.entry(id / per_node).or_default();
        e.0 += 1;
        e.1 += kept.iter().filter(|&&k| old[k].gpu == id).count();
    }
    if load.len() <= need {
        return 0;
    }
    let mut ranked: Vec<(u32, (usize, usize))> = load.into_iter().collect();
    ranked.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(b.1.1.cmp(&a.1.1)).then(a.0.cmp(&b.0)));
    let stay: std::collections::BTreeSet<u32> = ranked.iter().take(need).map(|r| r.0).collect();
    let taken: std::collections::BTreeSet<u32> = used.iter().map(|&i| gpus[i].0).collect();
    let mut free: std::collections::BTreeSet<u32> =
        stay.iter().flat_map(|n| (0..per_node).map(move |g| n * per_node + g)).filter(|id| !taken.contains(id)).collect();
    let mut moved = 0;
    for &i in &used {
        let id = gpus[i].0;
        if stay.contains(&(id / per_node)) {
            continue;
        }
        // The kept nodes have room for every used GPU by construction.
        let Some(to) = free.pop_first() else { break };
        kept.retain(|&k| old[k].gpu != id);
        gpus[i].0 = to;
        moved += 1;
    }
    moved
}

/// `planned` with the segments of every service whose rate and SLO are the running map's replaced
/// by its running segments, when those cost no more GPCs and every one of them is a profile point
/// (so their capacity under the same rules is what the map says).
fn running_mix(input: &PlanInput<'_>, current: &DeploymentMap, old: &[Old], planned: &[SegmentChoice]) -> Vec<SegmentChoice> {
    let mut out: Vec<SegmentChoice> = Vec::with_capacity(planned.len());
    for (si, svc) in input.services.iter().enumerate() {
        let mine: Vec<&SegmentChoice> = planned.iter().filter(|c| c.service == si).collect();
        let running: Vec<(&Old, &parva_core::deploy::Segment)> =
            old.iter().zip(&current.segments).filter(|(o, _)| o.service == svc.name).collect();
        let unchanged = !running.is_empty()
            && running.iter().all(|(_, seg)| {
                seg.rate.is_some_and(|r| (r - svc.rate).abs() <= 1e-9 * r.abs().max(1.0))
                    && seg.slo_ms.is_some_and(|x| (x - svc.slo_ms).abs() <= 1e-9 * x.abs().max(1.0))
                    && seg.model == svc.model
                    && (seg.margin_ms.unwrap_or(0.0) - input.options.margin.of(svc.slo_ms)).abs() <= 1e-6
            });
        let gpcs = |it: &mut dyn Iterator<Item = u8>| it.map(u32::from).sum::<u32>();
        let cheaper = gpcs(&mut running.iter().map(|(o, _)| o.size)) <= gpcs(&mut mine.iter().map(|c| c.size));
        let profile = input.profiles.models.get(&svc.model);
        let choices: Option<Vec<SegmentChoice>> = (unchanged && cheaper)
            .then(|| {
                running
                    .iter()
                    .map(|(o, _)| {
                        let p = profile?.points.iter().find(|p| p.size == o.size && p.batch == o.batch && p.procs == o.procs && p.is_measured())?;
                        (o.capacity > 0.0).then(|| SegmentChoice { capacity: o.capacity, ..SegmentChoice::from_point(si, p) })
                    })
                    .collect()
            })
            .flatten();
        match choices {
            Some(c) => out.extend(c),
            None => out.extend(mine.into_iter().cloned()),
        }
    }
    out
}

fn read_current(gpu: &GpuType, map: &DeploymentMap, per_node: u32) -> Result<Vec<Old>, ReplanError> {
    let mut out = Vec::with_capacity(map.segments.len());
    for (index, s) in map.segments.iter().enumerate() {
        let bad = |rule: String| ReplanError::Current { index: index + 1, service: s.service.clone(), node: s.node, gpu: s.gpu, rule };
        if let Some(t) = &s.gpu_type {
            if t != gpu.id {
                return Err(bad(format!("the map is for GPU type {t}, the replan for {}", gpu.id)));
            }
        }
        if s.gpu >= per_node {
            return Err(bad(format!("GPU index {} is past --gpus-per-node {per_node}", s.gpu)));
        }
        parva_core::deploy::segment_profile(gpu, s).map_err(bad)?;
        let id = s.node.checked_mul(per_node).and_then(|n| n.checked_add(s.gpu)).ok_or_else(|| bad("node number too large".into()))?;
        out.push(Old {
            gpu: id,
            start: s.placement,
            size: s.instance_size,
            procs: s.num_proc,
            batch: s.batch_size,
            service: s.service.clone(),
            capacity: s.throughput.unwrap_or(0.0),
        });
    }
    let problems = map.check_layouts(gpu);
    if let Some(p) = problems.first() {
        return Err(ReplanError::Current { index: 0, service: String::new(), node: 0, gpu: 0, rule: p.to_string() });
    }
    Ok(out)
}

/// `n` GPU ids for a placement that keeps nothing: the running map's GPUs first, in order.
/// `plan_gpus` (the plan's own placement) with GPU ids: greedily, the pair (new GPU, running GPU)
/// with the most GPCs of identical segments (service, size, processes, start) first; the rest get
/// the running map's other ids, then new ones. Returns the GPUs and the kept old segments.
fn relabel(old: &[Old], names: &BTreeMap<&str, usize>, plan_gpus: &[GpuState]) -> (Vec<(u32, GpuState)>, Vec<usize>) {
    let mut at: BTreeMap<(usize, u8, u32, u8), Vec<usize>> = BTreeMap::new();
    for (i, o) in old.iter().enumerate() {
        if let Some(&si) = names.get(o.service.as_str()) {
            at.entry((si, o.size, o.procs, o.start)).or_default().push(i);
        }
    }
    let mut pairs: Vec<(u32, usize, u32)> = Vec::new();
    for (n, g) in plan_gpus.iter().enumerate() {
        let mut per_old: BTreeMap<u32, u32> = BTreeMap::new();
        for p in &g.placed {
            for &i in at.get(&(p.segment.service, p.segment.size, p.segment.procs, p.start)).map_or(&[][..], Vec::as_slice) {
                *per_old.entry(old[i].gpu).or_default() += u32::from(p.segment.size);
            }
        }
        pairs.extend(per_old.into_iter().map(|(o, gpcs)| (gpcs, n, o)));
    }
    pairs.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut id_of: Vec<Option<u32>> = vec![None; plan_gpus.len()];
    let mut taken = std::collections::BTreeSet::new();
    for (_, n, o) in pairs {
        if id_of[n].is_none() && !taken.contains(&o) {
            id_of[n] = Some(o);
            taken.insert(o);
        }
    }
    let mut kept = Vec::new();
    for (n, g) in plan_gpus.iter().enumerate() {
        let Some(o) = id_of[n] else { continue };
        for p in &g.placed {
            let same = at.get(&(p.segment.service, p.segment.size, p.segment.procs, p.start)).and_then(|v| v.iter().find(|&&i| old[i].gpu == o));
            kept.extend(same);
        }
    }
    // The other GPUs: ids the running map uses but no new GPU took, then fresh ones.
    let mut spare = fresh_ids(old, old.len() + plan_gpus.len()).into_iter().filter(|id| !taken.contains(id));
    let gpus = plan_gpus.iter().zip(id_of).map(|(g, id)| (id.or_else(|| spare.next()).unwrap_or(u32::MAX), g.clone())).collect();
    (gpus, kept)
}

fn fresh_ids(old: &[Old], n: usize) -> Vec<u32> {
    let mut ids: Vec<u32> = old.iter().map(|o| o.gpu).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let mut next = ids.last().map_or(0, |l| l + 1);
    ids.truncate(n);
    while ids.len() < n {
        // Smallest ids not used yet.
        let free = (0..).find(|i| !ids.contains(i)).unwrap_or(next);
        ids.push(free);
        next = next.max(free + 1);
    }
    ids
}

/// The placement of `segments` on at most `budget` GPUs keeping the most of `old` (see the module
/// doc); `None` when even keeping nothing the greedy packing does not fit. Returns the GPUs with
/// their ids and the indices of the kept old segments.
fn place_keeping(
    gpu: &GpuType,
    old: &[Old],
    names: &BTreeMap<&str, usize>,
    segments: &[SegmentChoice],
    budget: usize,
) -> Option<Placing> {
    // Greedy match of old segments to new ones by (service, size, procs), per old GPU.
    let key = |service: usize, size: u8, procs: u32| (service, size, procs);
    let mut by_gpu: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, o) in old.iter().enumerate() {
        by_gpu.entry(o.gpu).or_default().push(i);
    }
    let demand = |segments: &[SegmentChoice]| {
        let mut d: BTreeMap<(usize, u8, u32), Vec<usize>> = BTreeMap::new();
        for (i, s) in segments.iter().enumerate() {
            d.entry(key(s.service, s.size, s.procs)).or_default().push(i);
        }
        d
    };
    let score = |gpu_id: u32| -> u32 {
        let mut d = demand(segments);
        by_gpu[&gpu_id]
            .iter()
            .filter_map(|&i| {
                let o = &old[i];
                let si = *names.get(o.service.as_str())?;
                d.get_mut(&key(si, o.size, o.procs))?.pop().map(|_| o.size as u32)
            })
            .sum()
    };
    let mut ranked: Vec<(u32, u32)> = by_gpu.keys().map(|&g| (score(g), g)).filter(|(s, _)| *s > 0).collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked.truncate(budget);
    let packing = Packing { gpu, old, names, segments, by_gpu: &by_gpu, budget };
    let attempt = |n: usize| try_pack(&packing, &ranked[..n], demand(segments));
    if let Some(found) = attempt(ranked.len()) {
        return Some(found);
    }
    // Give up what the chosen GPUs that keep least would keep: the most GPUs that still pack,
    // found by bisection over how many of the ranked GPUs are kept (a few packings, not one per
    // GPU: a 1,000-service fleet has hundreds). At last, keep nothing.
    let (mut fits, mut fails) = (None, ranked.len());
    let mut lo = 0;
    while lo < fails {
        let mid = lo + (fails - lo) / 2;
        match attempt(mid) {
            Some(found) => {
                fits = Some(found);
                lo = mid + 1;
            }
            None => fails = mid,
        }
    }
    fits
}

/// What every packing attempt of [`place_keeping`] shares: the GPU type, the running segments
/// (and their indices by GPU), the services' indices by name, the new segments and the most GPUs.
#[derive(Clone, Copy)]
struct Packing<'a> {
    gpu: &'a GpuType,
    old: &'a [Old],
    names: &'a BTreeMap<&'a str, usize>,
    segments: &'a [SegmentChoice],
    by_gpu: &'a BTreeMap<u32, Vec<usize>>,
    budget: usize,
}

/// One packing: the running segments of the `chosen` GPUs kept where `demand` (the new segments
/// not placed yet, by service, size and processes) still asks for them, the rest placed.
fn try_pack(p: &Packing<'_>, chosen: &[(u32, u32)], mut demand: BTreeMap<(usize, u8, u32), Vec<usize>>) -> Option<Placing> {
    let Packing { gpu, old, names, segments, by_gpu, budget } = *p;
    let mut gpus: Vec<(u32, GpuState)> = Vec::new();
    let mut kept = Vec::new();
    let mut placed = vec![false; segments.len()];
    // Per chosen GPU, the running segments it gives up: a new segment placed over one of them
    // can only start once it is gone (break before make), so free slots are tried first.
    let mut doomed: Vec<Vec<Placement>> = Vec::new();
    for &(_, id) in chosen {
        let mut state = GpuState::default();
        let mut gone = Vec::new();
        for &i in &by_gpu[&id] {
            let o = &old[i];
            let keep = names.get(o.service.as_str()).and_then(|&si| demand.get_mut(&(si, o.size, o.procs)).and_then(Vec::pop));
            match keep {
                Some(j) => {
                    state.insert(o.start, segments[j].clone());
                    placed[j] = true;
                    kept.push(i);
                }
                None => gone.push(Placement { profile: profile(gpu, o.size), start: o.start }),
            }
        }
        gpus.push((id, state));
        doomed.push(gone);
    }
    // The rest, largest first: into slots of the chosen GPUs that are free now, then into slots
    // that free up as their segments go, then onto new GPUs (ids the running map leaves empty,
    // then those it gives up, then past its last).
    let mut rest: Vec<usize> = (0..segments.len()).filter(|&j| !placed[j]).collect();
    rest.sort_by_key(|&j| (std::cmp::Reverse(segments[j].size), segments[j].service));
    let chosen_ids: Vec<u32> = chosen.iter().map(|c| c.1).collect();
    let last_old = by_gpu.keys().next_back().copied().unwrap_or(0);
    let mut fresh: Vec<u32> = (0..=last_old).filter(|i| !by_gpu.contains_key(i)).collect();
    fresh.extend(by_gpu.keys().filter(|i| !chosen_ids.contains(i)));
    let mut fresh = fresh.into_iter();
    let mut next_id = last_old + 1;
    for j in rest {
        let s = &segments[j];
        let prof = profile(gpu, s.size);
        let free_now = gpus.iter().zip(&doomed).position(|((_, g), gone)| {
            let mut layout = g.layout(gpu);
            layout.extend(gone.iter().copied());
            !gpu.free_starts(&layout, prof).is_empty()
        });
        let slot = match free_now {
            Some(k) => {
                let mut layout = gpus[k].1.layout(gpu);
                layout.extend(doomed[k].iter().copied());
                gpu.free_starts(&layout, prof).first().map(|st| (k, *st))
            }
            None => gpus.iter().enumerate().find_map(|(k, (_, g))| g.free_start(gpu, s.size, &[]).map(|st| (k, st))),
        };
        match slot {
            Some((k, st)) => gpus[k].1.insert(st, s.clone()),
            None => {
                if gpus.len() >= budget {
                    return None;
                }
                let id = fresh.next().unwrap_or_else(|| {
                    next_id += 1;
                    next_id - 1
                });
                // A GPU the running map gives up still runs its old segments until they go: a
                // start clear of them lets the new one come up first (make before break).
                let gone: Vec<Placement> =
                    by_gpu.get(&id).map(|v| v.iter().map(|&i| Placement { profile: profile(gpu, old[i].size), start: old[i].start }).collect()).unwrap_or_default();
                let mut g = GpuState::default();
                let st = match gpu.free_starts(&gone, prof).first() {
                    Some(st) => *st,
                    None => g.free_start(gpu, s.size, &[])?,
                };
                g.insert(st, s.clone());
                gpus.push((id, g));
                doomed.push(gone);
            }
        }
    }
    Some((gpus, kept))
}

fn count(old: &[Old], segments: &[SegmentChoice], gpus: &[(u32, GpuState)], kept: &[usize]) -> Alternative {
    let kept_n = kept.len();
    Alternative {
        gpus: gpus.iter().filter(|(_, g)| !g.is_empty()).count(),
        kept: kept_n,
        destroyed: old.len() - kept_n,
        created: segments.len() - kept_n,
        changes: (old.len() - kept_n) + (segments.len() - kept_n),
    }
}

/// One step of a transition.
#[cfg(test)]
mod tests;
