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
mod tests {
    use super::*;
    use crate::{Algorithm, PlanOptions};
    use parva_core::ProfileSet;
    use parva_core::profile::ModelProfile;
    use parva_core::slo::Service;
    use std::path::Path;

    /// Two models on every A100 size: a batch of b takes (2 + b) ms / size^0.8 (`m`), twice that (`h`).
    fn profiles() -> ProfileSet {
        let table = |name: &str, slow: f64| {
            let mut text = String::from("Mig instance,Batch size,Workload Number,Throughput,Latency\n");
            for size in [1u8, 2, 3, 4, 7] {
                for b in [1u32, 2, 4, 8] {
                    let lat = slow * (0.002 + 0.001 * b as f64) / (size as f64).powf(0.8);
                    text.push_str(&format!("{size},{b},1,{},{lat}\n", b as f64 / lat));
                }
            }
            ModelProfile::read_from(text.as_bytes(), Path::new("m.csv"), name.into(), None).unwrap()
        };
        ProfileSet { dir: "mem".into(), models: [("m".to_string(), table("m", 1.0)), ("h".to_string(), table("h", 2.0))].into_iter().collect() }
    }

    fn services(scale: &[(usize, f64)]) -> Vec<Service> {
        let base = [("a", "m", 900.0), ("b", "h", 700.0), ("c", "m", 2500.0), ("d", "h", 300.0), ("e", "m", 5000.0), ("f", "h", 1200.0)];
        base.iter()
            .enumerate()
            .map(|(i, (n, m, r))| {
                let k = scale.iter().find(|(j, _)| *j == i).map_or(1.0, |x| x.1);
                Service { name: n.to_string(), model: m.to_string(), rate: r * k, slo_ms: 100.0 }
            })
            .collect()
    }

    fn gpu() -> &'static GpuType {
        GpuType::by_id("a100-80gb").unwrap()
    }

    /// Regression (2026-11-26, a 1,000-service replan at the fewest GPUs kept nothing): when the
    /// greedy packing does not fit, the plan's own placement still keeps the segments that happen
    /// to sit where they ran, on the GPU ids they ran on.
    #[test]
    fn the_plans_own_placement_keeps_what_coincides_with_the_running_map() {
        let seg = |service: usize, size: u8| SegmentChoice { service, size, batch: 4, procs: 1, capacity: 1.0, latency_s: 0.01 };
        let old_seg = |gpu: u32, start: u8, service: &str, size: u8| Old { gpu, start, size, procs: 1, batch: 8, service: service.into(), capacity: 1.0 };
        let names: BTreeMap<&str, usize> = [("a", 0), ("b", 1)].into_iter().collect();
        // Running: GPU 0 holds a 7g of a; GPU 3 holds b's 4g at 0 and a's 3g at 4.
        let old = vec![old_seg(0, 0, "a", 7), old_seg(3, 0, "b", 4), old_seg(3, 4, "a", 3)];
        // The plan: b's 4g at 0 with a's 3g at 4 (GPU 3's exact content, new batch size), and a
        // GPU of two 3g of b (nothing like it runs).
        let mut g1 = GpuState::default();
        g1.insert(0, seg(1, 4));
        g1.insert(4, seg(0, 3));
        let mut g2 = GpuState::default();
        g2.insert(0, seg(1, 3));
        g2.insert(4, seg(1, 3));
        let (gpus, mut kept) = relabel(&old, &names, &[g1, g2]);
        kept.sort_unstable();
        assert_eq!(kept, [1, 2], "both segments of GPU 3 stay");
        assert_eq!(gpus.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [3, 0], "the other GPU reuses a running id that no new GPU took");
        let alt = count(&old, &[seg(1, 4), seg(0, 3), seg(1, 3), seg(1, 3)], &gpus, &kept);
        assert_eq!((alt.kept, alt.destroyed, alt.created), (2, 1, 2));
    }

    fn input<'a>(profiles: &'a ProfileSet, services: &'a [Service], options: &'a PlanOptions) -> PlanInput<'a> {
        PlanInput { gpu: gpu(), profiles, services, options }
    }

    fn options() -> PlanOptions {
        PlanOptions { gpus_per_node: 4, ..PlanOptions::default() }
    }

    /// Replay a transition's steps from the running map and check every layout on the way.
    fn replay(old: &DeploymentMap, r: &Replan, t: &Transition) -> BTreeMap<(u32, u32), Vec<Placement>> {
        let mut layouts: BTreeMap<(u32, u32), Vec<Placement>> = BTreeMap::new();
        for s in &old.segments {
            layouts.entry((s.node, s.gpu)).or_default().push(Placement { profile: profile(gpu(), s.instance_size), start: s.placement });
        }
        for st in &t.steps {
            let l = layouts.entry((st.node, st.gpu)).or_default();
            let p = Placement { profile: profile(gpu(), st.size), start: st.placement };
            match st.action {
                "create" => l.push(p),
                "destroy" => l.retain(|x| *x != p),
                _ => {}
            }
            gpu().validate(l).unwrap_or_else(|e| panic!("after {st:?}: {e}"));
        }
        // The end is the new map's layout.
        let mut want: BTreeMap<(u32, u32), Vec<Placement>> = BTreeMap::new();
        for s in &r.to_map().segments {
            want.entry((s.node, s.gpu)).or_default().push(Placement { profile: profile(gpu(), s.instance_size), start: s.placement });
        }
        layouts.retain(|_, l| !l.is_empty());
        for l in layouts.values_mut().chain(want.values_mut()) {
            l.sort_by_key(|p| p.start);
        }
        assert_eq!(layouts, want);
        layouts
    }

    /// Regression (found by `deploy --follow` scaling a service down): the only GPU keeps none of
    /// its segments, so it was packed as a fresh GPU and the new, smaller segment went to
    /// placement 0, under the old one: break before make, the service unserved between the drain
    /// and the new workers being ready (503s). It now goes to a slot clear of the old segment.
    #[test]
    fn a_smaller_segment_on_a_gpu_that_keeps_nothing_is_placed_clear_of_the_old_one() {
        let p = profiles();
        let o = options();
        // One service on a 3g at {0}; at a tenth of the rate a 1g does.
        let old_csv = "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput\n0,0,a,m,0,3,8,1,3g.40gb,a100-80gb,3000\n";
        let (old, _) = DeploymentMap::read_from(old_csv.as_bytes(), Path::new("old.csv")).unwrap();
        let s = vec![Service { name: "a".into(), model: "m".into(), rate: 100.0, slo_ms: 100.0 }];
        let r = replan(input(&p, &s, &o), &old, 0, false).unwrap();
        let map = r.to_map();
        assert_eq!(map.segments.len(), 1, "{:?}", map.segments);
        let new = &map.segments[0];
        assert!(new.instance_size < 3, "{new:?}");
        assert!(new.placement >= 4, "placed over the old 3g at {{0}}: {new:?}");
        let t = transition(&r, gpu(), 4, Costs::default(), &|_| 0.1);
        assert_eq!(t.steps.first().map(|s| s.action), Some("create"), "{:?}", t.steps);
        assert!(t.services.iter().all(|d| d.seconds_unserved == 0.0), "{:?}", t.services);
        replay(&old, &r, &t);
    }

    /// Issue 33: a replan freed GPUs scattered over every node, and a cluster autoscaler can only
    /// remove whole nodes. With `free_nodes` the new map is gathered onto the fewest nodes.
    #[test]
    fn free_nodes_gathers_the_map_onto_the_fewest_nodes_make_before_break() {
        let p = profiles();
        // Two GPUs per node; each service's running GPU alone on its own node.
        let one = PlanOptions { gpus_per_node: 1, ..PlanOptions::default() };
        let two = PlanOptions { gpus_per_node: 2, ..PlanOptions::default() };
        let s = services(&[]);
        let old = crate::plan(input(&p, &s, &one)).unwrap().to_map();
        let used = old.segments.iter().map(|x| x.node).collect::<std::collections::BTreeSet<_>>().len();
        assert!(used >= 3, "the fixture needs GPUs on at least 3 nodes: {used}");
        // Without it: nothing changes, no node is freed.
        let r = replan(input(&p, &s, &two), &old, 0, false).unwrap();
        assert_eq!((r.alternatives[0].changes, r.moved_gpus), (0, 0));
        assert!(r.freed_nodes.is_empty(), "{:?}", r.freed_nodes);
        // With it: the GPUs sit on ceil(used / 2) nodes; the others are free whole, named.
        let r = replan(input(&p, &s, &two), &old, 0, true).unwrap();
        let map = r.to_map();
        let nodes: std::collections::BTreeSet<u32> = map.segments.iter().map(|x| x.node).collect();
        assert_eq!(nodes.len(), used.div_ceil(2), "{nodes:?}");
        let old_nodes: std::collections::BTreeSet<u32> = old.segments.iter().map(|x| x.node).collect();
        assert_eq!(r.freed_nodes, old_nodes.difference(&nodes).copied().collect::<Vec<_>>());
        assert_eq!(r.moved_gpus, used - used.div_ceil(2));
        // Each moved GPU keeps its layout: the same segments, on another node.
        let layout = |m: &DeploymentMap, node: u32, gpu: u32| {
            let mut l: Vec<(u8, u8, String)> = m.segments.iter().filter(|x| (x.node, x.gpu) == (node, gpu)).map(|x| (x.placement, x.instance_size, x.service.clone())).collect();
            l.sort();
            l
        };
        let mut before: Vec<_> = old_nodes.iter().map(|&n| layout(&old, n, 0)).collect();
        let mut after: Vec<_> = map.segments.iter().map(|x| (x.node, x.gpu)).collect::<std::collections::BTreeSet<_>>().into_iter().map(|(n, g)| layout(&map, n, g)).collect();
        before.sort();
        after.sort();
        assert_eq!(before, after);
        assert_eq!(r.alternatives[0].changes, r.destroyed.len() + r.created.len());
        // Make before break: every service keeps serving through the moves (an independent replay
        // of the steps checks every layout on the way and the end).
        let t = transition(&r, gpu(), 2, Costs::default(), &|_| 0.1);
        assert!(t.services.iter().all(|d| d.seconds_unserved == 0.0), "{:?}", t.services);
        replay(&old, &r, &t);
    }

    #[test]
    fn the_same_rates_change_nothing() {
        let (p, o) = (profiles(), options());
        let s = services(&[]);
        let old = crate::plan(input(&p, &s, &o)).unwrap().to_map();
        let r = replan(input(&p, &s, &o), &old, 0, false).unwrap();
        assert_eq!(r.alternatives[0].changes, 0, "{:?}", r.alternatives);
        assert_eq!(r.kept.len(), old.segments.len());
        let mut a = old.segments.clone();
        let mut b = r.to_map().segments;
        for v in [&mut a, &mut b] {
            v.sort_by_key(|x| (x.node, x.gpu, x.placement));
        }
        assert_eq!(a, b);
        let t = transition(&r, gpu(), 4, Costs::default(), &|_| 0.1);
        assert!(t.steps.is_empty(), "{:?}", t.steps);
    }

    #[test]
    fn a_replan_keeps_unchanged_segments_in_place_and_uses_the_fewest_gpus() {
        let (p, o) = (profiles(), options());
        let s = services(&[]);
        let old = crate::plan(input(&p, &s, &o)).unwrap().to_map();
        // c triples.
        let s2 = services(&[(2, 3.0)]);
        let fresh = crate::plan(input(&p, &s2, &o)).unwrap();
        let r = replan(input(&p, &s2, &o), &old, 0, false).unwrap();
        assert_eq!(r.plan.gpus.len(), fresh.gpus.len(), "the plan's GPU count");
        let map = r.to_map();
        assert!(map.check_layouts(gpu()).is_empty());
        // Every segment of the services whose rate did not change and whose mix the plan kept stays.
        for seg in old.segments.iter().filter(|x| x.service != "c") {
            let still = map.segments.iter().any(|m| m.service == seg.service && m.node == seg.node && m.gpu == seg.gpu && m.placement == seg.placement);
            let mix_kept = fresh.to_map().segments.iter().filter(|m| m.service == seg.service && m.instance_size == seg.instance_size).count()
                >= old.segments.iter().filter(|m| m.service == seg.service && m.instance_size == seg.instance_size).count();
            if mix_kept {
                assert!(still, "{} at node {} GPU {} slice {} was moved", seg.service, seg.node, seg.gpu, seg.placement);
            }
        }
        // Capacity covers the new rates.
        let caps = r.plan.capacities();
        for (i, sv) in s2.iter().enumerate() {
            assert!(caps[i] >= sv.rate, "{}: {} < {}", sv.name, caps[i], sv.rate);
        }
        let t = transition(&r, gpu(), 4, Costs::default(), &|_| 0.1);
        replay(&old, &r, &t);
        assert!(r.kept.len() > r.destroyed.len(), "kept {} destroyed {}", r.kept.len(), r.destroyed.len());
    }

    #[test]
    fn when_the_load_falls_gpus_are_freed_and_every_service_stays_served() {
        let (p, o) = (profiles(), options());
        let s = services(&[(2, 3.0), (4, 2.0)]);
        let old = crate::plan(input(&p, &s, &o)).unwrap().to_map();
        let s2 = services(&[]);
        let r = replan(input(&p, &s2, &o), &old, 0, false).unwrap();
        assert!(r.plan.gpus.len() < r.old_gpus, "{} GPUs, was {}", r.plan.gpus.len(), r.old_gpus);
        // The GPUs given up are reported free: used before, unused now, at least the difference.
        let map = r.to_map();
        assert!(r.freed.len() >= r.old_gpus - r.plan.gpus.len(), "{:?}", r.freed);
        for g in &r.freed {
            assert!(old.segments.iter().any(|s| (s.node, s.gpu) == (g.node, g.gpu)), "{g:?}");
            assert!(!map.segments.iter().any(|s| (s.node, s.gpu) == (g.node, g.gpu)), "{g:?}");
        }
        let idle: u32 = map.by_gpu().values().map(|segs| 7 - segs.iter().map(|s| u32::from(s.instance_size)).sum::<u32>()).sum();
        assert_eq!(r.summary().idle_gpcs, idle);
        let t = transition(&r, gpu(), 4, Costs::default(), &|_| 0.1);
        replay(&old, &r, &t);
        for d in &t.services {
            assert_eq!(d.seconds_unserved, 0.0, "{d:?}");
            assert!(d.capacity_after >= d.rate, "{d:?}");
        }
        // Make before break: no destroy before the last create unless a create needed its slot.
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains("\"action\":\"destroy\""));
    }

    #[test]
    fn when_the_load_rises_new_segments_come_up_before_old_ones_go() {
        let (p, o) = (profiles(), options());
        let s = services(&[]);
        let old = crate::plan(input(&p, &s, &o)).unwrap().to_map();
        let s2 = services(&[(0, 3.0), (1, 3.0), (2, 3.0), (3, 3.0), (4, 3.0), (5, 3.0)]);
        let r = replan(input(&p, &s2, &o), &old, 0, false).unwrap();
        let t = transition(&r, gpu(), 4, Costs::default(), &|_| 0.1);
        replay(&old, &r, &t);
        let creates_on_new_gpus = t.steps.iter().take_while(|s| s.action != "drain").filter(|s| s.action == "create").count();
        assert!(creates_on_new_gpus > 0, "{:?}", t.steps);
        for d in &t.services {
            assert_eq!(d.seconds_unserved, 0.0, "{d:?}");
        }
        // Timeline: steps begin in order, the transition ends with the last one to end.
        let mut begun = 0.0;
        for st in &t.steps {
            assert!(st.start_s + 1e-9 >= begun && st.end_s >= st.start_s, "{st:?}");
            begun = st.start_s;
        }
        let end = t.steps.iter().map(|s| s.end_s).fold(0.0, f64::max);
        assert!((t.seconds - end).abs() < 1e-9, "{} against {end}", t.seconds);
        // The creations before the first drain are one wave: instances one after another, each
        // one's workers starting at once, so n of them take Costs::wave(n), not n whole creations.
        let c = Costs::default();
        let first_wave = t.steps.iter().take_while(|s| s.action != "drain").filter(|s| s.action == "create").map(|s| s.end_s).fold(0.0, f64::max);
        assert!((first_wave - c.wave(creates_on_new_gpus)).abs() < 1e-9, "{first_wave} for {creates_on_new_gpus} creations");
        if creates_on_new_gpus > 1 {
            assert!(first_wave < creates_on_new_gpus as f64 * (c.mig_create + c.mps_start + c.worker_start));
        }
    }

    #[test]
    fn a_wave_makes_instances_one_after_another_and_starts_workers_at_once() {
        let c = Costs { mig_create: 1.0, mig_destroy: 0.5, worker_start: 2.0, mps_start: 0.5 };
        assert_eq!(c.creation(0), (0.0, 3.5));
        assert_eq!(c.creation(2), (3.0, 6.5));
        assert_eq!((c.wave(0), c.wave(1), c.wave(3)), (0.0, 3.5, 6.5));
    }

    #[test]
    fn extra_gpus_are_taken_only_when_they_save_changes_and_each_choice_is_reported() {
        let (p, o) = (profiles(), options());
        let s = services(&[]);
        let old = crate::plan(input(&p, &s, &o)).unwrap().to_map();
        let s2 = services(&[(4, 1.5)]);
        let r0 = replan(input(&p, &s2, &o), &old, 0, false).unwrap();
        let r2 = replan(input(&p, &s2, &o), &old, 2, false).unwrap();
        assert!(r2.alternatives[0].changes <= r0.alternatives[0].changes);
        assert!(r2.plan.gpus.len() <= r0.plan.gpus.len() + 2);
        if r2.plan.gpus.len() > r0.plan.gpus.len() {
            assert!(r2.alternatives[0].changes < r0.alternatives[0].changes, "{:?}", r2.alternatives);
        }
        assert!(r2.alternatives.iter().any(|a| a.gpus == r0.plan.gpus.len()), "{:?}", r2.alternatives);
    }

    #[test]
    fn a_running_map_for_another_gpu_type_or_numbering_is_refused() {
        let (p, o) = (profiles(), options());
        let s = services(&[]);
        let mut old = crate::plan(input(&p, &s, &o)).unwrap().to_map();
        old.segments[0].gpu_type = Some("h100-80gb".into());
        let e = replan(input(&p, &s, &o), &old, 0, false).unwrap_err().to_string();
        assert!(e.contains("segment 1") && e.contains("GPU type h100-80gb"), "{e}");
        old.segments[0].gpu_type = None;
        old.segments[0].gpu = 4;
        let e = replan(input(&p, &s, &o), &old, 0, false).unwrap_err().to_string();
        assert!(e.contains("GPU index 4 is past --gpus-per-node 4"), "{e}");
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

        /// Any change of rates: the fewest GPUs, every new rate covered, legal layouts at every
        /// step of the transition and at its end, kept segments untouched, every running segment
        /// either kept or destroyed exactly once.
        #[test]
        fn any_change_of_rates_replans_legally_with_the_fewest_gpus(
            before in proptest::collection::vec(0.2f64..3.0, 6),
            after in proptest::collection::vec(0.2f64..3.0, 6),
        ) {
            let (p, o) = (profiles(), options());
            let scale = |k: &[f64]| k.iter().copied().enumerate().collect::<Vec<_>>();
            let s1 = services(&scale(&before));
            let s2 = services(&scale(&after));
            let old = crate::plan(input(&p, &s1, &o)).unwrap().to_map();
            let fresh = crate::plan(input(&p, &s2, &o)).unwrap();
            let r = replan(input(&p, &s2, &o), &old, 0, false).unwrap();
            prop_assert_eq!(r.plan.gpus.len(), fresh.gpus.len());
            let caps = r.plan.capacities();
            for (i, sv) in s2.iter().enumerate() {
                prop_assert!(caps[i] * (1.0 + 1e-9) >= sv.rate, "{}: {} < {}", sv.name, caps[i], sv.rate);
            }
            let map = r.to_map();
            prop_assert!(map.check_layouts(gpu()).is_empty());
            prop_assert_eq!(r.kept.len() + r.destroyed.len(), old.segments.len());
            prop_assert_eq!(r.kept.len() + r.created.len(), map.segments.len());
            for k in &r.kept {
                let same = |m: &DeploymentMap| m.segments.iter().filter(|x| x.node == k.node && x.gpu == k.gpu && x.placement == k.placement
                    && x.instance_size == k.size && x.service == k.service && x.num_proc == k.procs).count();
                prop_assert_eq!((same(&old), same(&map)), (1, 1), "{:?}", k);
            }
            let t = transition(&r, gpu(), 4, Costs::default(), &|_| 0.1);
            replay(&old, &r, &t);
        }
    }

    #[test]
    fn costs_are_read_from_key_value_pairs_and_checked() {
        let c: Costs = "mig-create=2.5,worker-start=4s".parse().unwrap();
        assert_eq!(c, Costs { mig_create: 2.5, worker_start: 4.0, ..Costs::default() });
        for (bad, why) in [("mig-create", "expected KEY=SECONDS"), ("boot=1", "unknown cost \"boot\""), ("mps-start=x", "not a number"), ("mig-destroy=-1", "outside 0..=3600")] {
            let e = bad.parse::<Costs>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_plan_with_algorithm_parvagpu_replans_too() {
        let p = profiles();
        let o = PlanOptions { algorithm: Algorithm::ParvaGpu, ..options() };
        let s = services(&[]);
        let old = crate::plan(input(&p, &s, &o)).unwrap().to_map();
        let r = replan(input(&p, &s, &o), &old, 0, false).unwrap();
        assert_eq!(r.alternatives[0].changes, 0, "{:?}", r.alternatives);
    }
}
