//! A transition as typed steps, and an independent check of it.
//!
//! [`Step`]s come from the planner's ordering ([`parva_planner::replan::transition`]: make before
//! break where the slots allow) and are what the [`crate::node::Executor`] applies to a node, one
//! after another. [`replay`] re-checks a step list against nothing but the running segments, the
//! new ones and each service's demand: at every step every GPU's layout is legal and every
//! service keeps ready capacity for `min(its demand, what it had before)`. It does not use the
//! planner's own figures ([`parva_planner::replan::ServiceDip`]), so a wrong ordering or a wrong
//! figure there cannot hide a dip. [`make_before_break`] moves a new segment that would come too
//! late (its slot is held by a segment it replaces) to a slot that is free earlier, on any GPU of
//! the node, when that removes the dip.

use std::collections::BTreeMap;

use parva_core::deploy::{DeploymentMap, Segment};
use parva_core::mig::{GpuType, Placement};
use parva_planner::replan::{Replan, Transition};

/// One change to a node.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Step {
    /// Create the segment's MIG instance and MPS daemon, start its workers; once they are ready
    /// the router sends it requests.
    Create { segment: Segment },
    /// The router stops sending to the segment, which finishes what it holds; its workers stop
    /// (its instance stays until destroyed).
    Drain { gpu: u32, placement: u8, service: String },
    /// Destroy the segment's instance (drained first when it still serves).
    Destroy { gpu: u32, placement: u8, service: String },
    /// A kept segment's batch size (a router setting; its workers restart with it).
    Rebatch { gpu: u32, placement: u8, service: String, batch: u32 },
}

impl Step {
    /// `create resnet on GPU 1 {4}` and the like, for logs.
    pub fn describe(&self) -> String {
        match self {
            Step::Create { segment: s } => format!("create {} ({}g b{}x{}) on GPU {} {{{}}}", s.service, s.instance_size, s.batch_size, s.num_proc, s.gpu, s.placement),
            Step::Drain { gpu, placement, service } => format!("drain {service} on GPU {gpu} {{{placement}}}"),
            Step::Destroy { gpu, placement, service } => format!("destroy {service} on GPU {gpu} {{{placement}}}"),
            Step::Rebatch { gpu, placement, service, batch } => format!("rebatch {service} on GPU {gpu} {{{placement}}} to {batch}"),
        }
    }

    /// The (GPU, placement) the step acts on.
    pub fn slot(&self) -> (u32, u8) {
        match self {
            Step::Create { segment } => (segment.gpu, segment.placement),
            Step::Drain { gpu, placement, .. } | Step::Destroy { gpu, placement, .. } | Step::Rebatch { gpu, placement, .. } => (*gpu, *placement),
        }
    }
}

/// The steps of `t` (the transition of `r`) for one node (`node`; its GPUs numbered from 0), with
/// the new map's segments for the creations.
pub fn from_transition(t: &Transition, new_map: &DeploymentMap, node: u32) -> Result<Vec<Step>, String> {
    let mut out = Vec::with_capacity(t.steps.len());
    for s in t.steps.iter().filter(|s| s.node == node) {
        let (gpu, placement, service) = (s.gpu, s.placement, s.service.clone());
        out.push(match s.action {
            "create" => {
                let segment = new_map
                    .segments
                    .iter()
                    .find(|x| (x.node, x.gpu, x.placement) == (node, gpu, placement))
                    .cloned()
                    .ok_or_else(|| format!("the new map has no segment on GPU {gpu} {{{placement}}} to create"))?;
                Step::Create { segment }
            }
            "drain" => Step::Drain { gpu, placement, service },
            "destroy" => Step::Destroy { gpu, placement, service },
            "rebatch" => Step::Rebatch { gpu, placement, service, batch: s.batch },
            other => return Err(format!("unknown transition step {other:?}")),
        });
    }
    if let Some(s) = t.steps.iter().find(|s| s.node != node) {
        return Err(format!("the transition changes node {} (this node is {node})", s.node));
    }
    Ok(out)
}

/// What went wrong at one step of a [`replay`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Violation {
    #[error("step {step} ({what}): {rule}")]
    Illegal { step: usize, what: String, rule: String },
    #[error("step {step} ({what}): service {service} has {capacity:.1}/s ready, below the {need:.1}/s it needs (min of its demand {demand:.1}/s and the {before:.1}/s it had)")]
    Dip { step: usize, what: String, service: String, capacity: f64, need: f64, demand: f64, before: f64 },
}

/// A segment's capacity for the replay: its planned `throughput`.
fn capacity(s: &Segment) -> f64 {
    s.throughput.unwrap_or(0.0).max(0.0)
}

/// Check `steps` from `old` (the segments running now) on GPU type `gpu`: every layout legal and
/// every service with ready capacity for `min(demand, capacity before)` after every step (see
/// the module doc). `new_capacity` gives a kept segment's capacity at its new batch size.
pub fn replay(gpu: &GpuType, old: &[Segment], steps: &[Step], demand: &BTreeMap<String, f64>, new_capacity: &dyn Fn(&Segment, u32) -> f64) -> Result<(), Violation> {
    // Instances that exist, and whether each serves.
    let mut inst: BTreeMap<(u32, u8), (Segment, bool)> = old.iter().map(|s| ((s.gpu, s.placement), (s.clone(), true))).collect();
    let ready = |inst: &BTreeMap<(u32, u8), (Segment, bool)>| {
        let mut c: BTreeMap<String, f64> = BTreeMap::new();
        for (s, serving) in inst.values() {
            if *serving {
                *c.entry(s.service.clone()).or_default() += capacity(s);
            }
        }
        c
    };
    let before = ready(&inst);
    for (i, step) in steps.iter().enumerate() {
        let what = step.describe();
        let illegal = |rule: String| Violation::Illegal { step: i + 1, what: what.clone(), rule };
        match step {
            Step::Create { segment } => {
                let key = (segment.gpu, segment.placement);
                if inst.contains_key(&key) {
                    return Err(illegal("an instance is there already".into()));
                }
                let profile = gpu.profile_for_size(segment.instance_size).ok_or_else(|| illegal(format!("no {}-GPC profile", segment.instance_size)))?;
                let mut layout: Vec<Placement> = inst
                    .iter()
                    .filter(|((g, _), _)| *g == segment.gpu)
                    .filter_map(|(_, (s, _))| gpu.profile_for_size(s.instance_size).map(|p| Placement { profile: p, start: s.placement }))
                    .collect();
                layout.push(Placement { profile, start: segment.placement });
                gpu.validate(&layout).map_err(|e| illegal(e.to_string()))?;
                inst.insert(key, (segment.clone(), true));
            }
            Step::Drain { gpu: g, placement, .. } => match inst.get_mut(&(*g, *placement)) {
                Some((_, serving)) if *serving => *serving = false,
                _ => return Err(illegal("nothing serves there".into())),
            },
            Step::Destroy { gpu: g, placement, .. } => {
                if inst.remove(&(*g, *placement)).is_none() {
                    return Err(illegal("no instance there".into()));
                }
            }
            Step::Rebatch { gpu: g, placement, batch, .. } => match inst.get_mut(&(*g, *placement)) {
                Some((s, _)) => {
                    let cap = new_capacity(s, *batch);
                    s.batch_size = *batch;
                    s.throughput = Some(cap);
                }
                None => return Err(illegal("no segment there to rebatch".into())),
            },
        }
        let now = ready(&inst);
        for (service, d) in demand {
            let had = before.get(service).copied().unwrap_or(0.0);
            let need = d.min(had);
            let have = now.get(service).copied().unwrap_or(0.0);
            if have + 1e-6 < need * (1.0 - 1e-9) {
                return Err(Violation::Dip { step: i + 1, what, service: service.clone(), capacity: have, need, demand: *d, before: had });
            }
        }
    }
    Ok(())
}

/// Repair a step list whose [`replay`] finds a dip: move the creation of a segment of the dipping
/// service before the break that causes it, into a slot free at that moment (on any of the
/// node's `node_gpus` GPUs), and update `new_map` to match. Returns the repaired steps (or the
/// violation that no move removes). At most one move per new segment.
pub fn make_before_break(
    gpu: &GpuType,
    node_gpus: u32,
    old: &[Segment],
    steps: Vec<Step>,
    new_map: &mut DeploymentMap,
    demand: &BTreeMap<String, f64>,
    new_capacity: &dyn Fn(&Segment, u32) -> f64,
) -> Result<Vec<Step>, Violation> {
    let mut steps = steps;
    for _ in 0..=steps.len() {
        let (at, service) = match replay(gpu, old, &steps, demand, new_capacity) {
            Ok(()) => return Ok(steps),
            Err(Violation::Dip { step, service, .. }) => (step - 1, service),
            Err(e) => return Err(e),
        };
        // The first creation of `service` after the break.
        let Some(ci) = steps.iter().enumerate().skip(at + 1).find_map(|(i, s)| matches!(s, Step::Create { segment } if segment.service == service).then_some(i)) else {
            return replay(gpu, old, &steps, demand, new_capacity).map(|()| steps);
        };
        let Some((g, start)) = free_slot(gpu, node_gpus, old, &steps, at, ci, new_map) else {
            return replay(gpu, old, &steps, demand, new_capacity).map(|()| steps);
        };
        // Move it: the step goes right before the break, the map follows.
        move_creation(&mut steps, new_map, ci, at, (g, start));
    }
    replay(gpu, old, &steps, demand, new_capacity).map(|()| steps)
}

/// A slot for the creation `steps[ci]` at position `at`: free then and until the end (clear of
/// the instances existing just before `at` and of every later creation other than this one), on
/// any of the node's GPUs, those the new map uses first (a move there costs no GPU).
fn free_slot(gpu: &GpuType, node_gpus: u32, old: &[Segment], steps: &[Step], at: usize, ci: usize, new_map: &DeploymentMap) -> Option<(u32, u8)> {
    let Step::Create { segment } = steps.get(ci)? else { return None };
    // The instances existing just before `at`.
    let mut inst: BTreeMap<(u32, u8), u8> = old.iter().map(|s| ((s.gpu, s.placement), s.instance_size)).collect();
    for s in &steps[..at] {
        match s {
            Step::Create { segment } => {
                inst.insert((segment.gpu, segment.placement), segment.instance_size);
            }
            Step::Destroy { gpu, placement, .. } => {
                inst.remove(&(*gpu, *placement));
            }
            _ => {}
        }
    }
    let later: Vec<(u32, u8, u8)> = steps
        .iter()
        .enumerate()
        .skip(at)
        .filter_map(|(k, s)| match s {
            Step::Create { segment: x } if k != ci => Some((x.gpu, x.placement, x.instance_size)),
            _ => None,
        })
        .collect();
    let used: std::collections::BTreeSet<u32> = new_map.segments.iter().map(|s| s.gpu).collect();
    let order: Vec<u32> = used.iter().copied().chain((0..node_gpus.max(1)).filter(|g| !used.contains(g))).collect();
    let profile = gpu.profile_for_size(segment.instance_size)?;
    for g in order {
        // An instance replaced later by one of the same size in its slot counts once.
        let slots: std::collections::BTreeSet<(u8, u8)> = inst
            .iter()
            .filter(|((gg, _), _)| *gg == g)
            .map(|((_, p), sz)| (*p, *sz))
            .chain(later.iter().filter(|(gg, _, _)| *gg == g).map(|(_, p, sz)| (*p, *sz)))
            .collect();
        let layout: Vec<Placement> = slots
            .into_iter()
            .filter_map(|(p, sz)| gpu.profile_for_size(sz).map(|pr| Placement { profile: pr, start: p }))
            .collect();
        if let Some(start) = gpu.free_starts(&layout, profile).first() {
            return Some((g, *start));
        }
    }
    None
}

/// Move the creation `steps[ci]` to position `to` and into `slot` (GPU, placement); the map's
/// segment follows. Anything but a creation at `ci` is left alone.
fn move_creation(steps: &mut Vec<Step>, new_map: &mut DeploymentMap, ci: usize, to: usize, slot: (u32, u8)) {
    let Some(Step::Create { segment }) = steps.get(ci).cloned() else { return };
    let moved = Segment { gpu: slot.0, placement: slot.1, ..segment.clone() };
    if let Some(m) = new_map.segments.iter_mut().find(|s| **s == segment) {
        *m = moved.clone();
    }
    steps.remove(ci);
    steps.insert(to, Step::Create { segment: moved });
}

/// Bring forward the creations of the services in `urgent` (those whose demand is past what runs
/// now: an alarm's, a burst's): each to the front of the steps where a slot is free from the
/// start to the end (the map follows), so that they serve after one creation rather than after
/// the whole transition. A creation with no such slot stays where it is.
pub fn urgent_first(gpu: &GpuType, node_gpus: u32, old: &[Segment], steps: Vec<Step>, new_map: &mut DeploymentMap, urgent: &std::collections::BTreeSet<String>) -> Vec<Step> {
    let mut steps = steps;
    // Creations already brought forward sit at the front, in order.
    let mut front = 0usize;
    let mut ci = 0usize;
    while ci < steps.len() {
        let is_urgent = matches!(&steps[ci], Step::Create { segment } if urgent.contains(&segment.service));
        if !is_urgent {
            ci += 1;
            continue;
        }
        if ci == front {
            front += 1;
            ci += 1;
            continue;
        }
        let Some((g, start)) = free_slot(gpu, node_gpus, old, &steps, front, ci, new_map) else {
            ci += 1;
            continue;
        };
        move_creation(&mut steps, new_map, ci, front, (g, start));
        front += 1;
        ci += 1;
    }
    steps
}

/// The capacity of a kept segment at `batch`, from the replan's plan (0 when unknown).
pub fn replan_capacity(r: &Replan) -> impl Fn(&Segment, u32) -> f64 + '_ {
    move |s: &Segment, batch: u32| {
        r.plan
            .gpus
            .iter()
            .zip(&r.gpu_ids)
            .flat_map(|(g, id)| g.placed.iter().map(move |p| (*id, p)))
            .find(|(id, p)| {
                let per = r.plan.gpus_per_node.max(1);
                *id == s.node * per + s.gpu && p.start == s.placement && p.segment.batch == batch
            })
            .map(|(_, p)| p.segment.capacity)
            .unwrap_or_else(|| capacity(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(gpu: u32, placement: u8, size: u8, service: &str, tput: f64) -> Segment {
        Segment {
            batch_size: 4,
            gpu_type: Some("a100-80gb".into()),
            throughput: Some(tput),
            rate: Some(100.0),
            slo_ms: Some(100.0),
            ..Segment::at(0, gpu, placement, size, service, "m")
        }
    }

    fn a100() -> &'static GpuType {
        GpuType::by_id("a100-80gb").unwrap()
    }

    fn same(s: &Segment, _: u32) -> f64 {
        capacity(s)
    }

    #[test]
    fn a_break_before_make_is_a_dip_and_make_before_break_passes() {
        // `a` runs a 4g (200/s) on a full GPU 0 beside a 3g of `b`; the new map gives `a` a 7g.
        let old = vec![seg(0, 0, 4, "a", 200.0), seg(0, 4, 3, "b", 100.0)];
        let demand: BTreeMap<String, f64> = [("a".to_string(), 150.0), ("b".to_string(), 80.0)].into();
        let bad = vec![
            Step::Drain { gpu: 0, placement: 0, service: "a".into() },
            Step::Destroy { gpu: 0, placement: 0, service: "a".into() },
            Step::Drain { gpu: 0, placement: 4, service: "b".into() },
            Step::Destroy { gpu: 0, placement: 4, service: "b".into() },
            Step::Create { segment: seg(0, 0, 7, "a", 400.0) },
        ];
        let e = replay(a100(), &old, &bad, &demand, &same).unwrap_err();
        assert!(matches!(&e, Violation::Dip { step: 1, service, .. } if service == "a"), "{e}");
        // On a free GPU 1 first: no dip (b's dip is its own: it has nowhere to go here, so
        // `b` keeps its segment in this step list).
        let good = vec![
            Step::Create { segment: seg(1, 0, 7, "a", 400.0) },
            Step::Drain { gpu: 0, placement: 0, service: "a".into() },
            Step::Destroy { gpu: 0, placement: 0, service: "a".into() },
        ];
        replay(a100(), &old, &good, &demand, &same).unwrap();
        // Illegal layouts are caught: a 7g on a GPU that still holds an instance.
        let e = replay(a100(), &old, &[Step::Create { segment: seg(0, 0, 7, "a", 1.0) }], &demand, &same).unwrap_err();
        assert!(matches!(e, Violation::Illegal { .. }), "{e}");
    }

    /// A burst's service got its new segment only after a whole re-balance of the others (the
    /// day simulation's worst pieces: 0 % within the SLO for ~25 s while other services moved).
    #[test]
    fn an_urgent_services_creation_comes_first_where_a_slot_is_free() {
        // `b` runs past its capacity; the transition first moves `a` around GPU 0, then adds a
        // 3g for `b` on GPU 1 (whose 4g slot is free from the start).
        let old = vec![seg(0, 0, 4, "a", 200.0), seg(0, 4, 3, "b", 100.0), seg(1, 0, 4, "c", 200.0)];
        let mut map = DeploymentMap {
            segments: vec![seg(0, 0, 4, "a", 200.0), seg(0, 4, 3, "b", 100.0), seg(1, 0, 4, "c", 200.0), seg(1, 4, 3, "b", 100.0)],
            jobs: vec![],
        };
        let steps = vec![
            Step::Rebatch { gpu: 0, placement: 0, service: "a".into(), batch: 8 },
            Step::Drain { gpu: 1, placement: 0, service: "c".into() },
            Step::Destroy { gpu: 1, placement: 0, service: "c".into() },
            Step::Create { segment: seg(1, 0, 4, "c", 200.0) },
            Step::Create { segment: seg(1, 4, 3, "b", 100.0) },
        ];
        let urgent: std::collections::BTreeSet<String> = ["b".to_string()].into();
        let out = urgent_first(a100(), 2, &old, steps.clone(), &mut map, &urgent);
        assert_eq!(out[0], Step::Create { segment: seg(1, 4, 3, "b", 100.0) }, "{out:?}");
        assert_eq!(out.len(), steps.len());
        assert_eq!(&out[1..], &steps[..4], "the others keep their order");
        // The result replays legally and the map still holds what the steps build.
        let demand: BTreeMap<String, f64> = [("a".to_string(), 150.0), ("b".to_string(), 150.0), ("c".to_string(), 0.0)].into();
        replay(a100(), &old, &out, &demand, &same).unwrap();
        assert!(map.segments.contains(&seg(1, 4, 3, "b", 100.0)));
        // No urgent service: the steps are unchanged. A creation with no slot free from the
        // start (a 7g where instances stand until later) stays where it is.
        assert_eq!(urgent_first(a100(), 2, &old, steps.clone(), &mut map, &Default::default()), steps);
        let late = vec![
            Step::Drain { gpu: 0, placement: 4, service: "b".into() },
            Step::Destroy { gpu: 0, placement: 4, service: "b".into() },
            Step::Drain { gpu: 0, placement: 0, service: "a".into() },
            Step::Destroy { gpu: 0, placement: 0, service: "a".into() },
            Step::Create { segment: seg(0, 0, 7, "b", 400.0) },
        ];
        let mut full = DeploymentMap { segments: vec![seg(0, 0, 7, "b", 400.0), seg(1, 0, 4, "c", 200.0)], jobs: vec![] };
        let old2 = vec![seg(0, 0, 4, "a", 200.0), seg(0, 4, 3, "b", 100.0), seg(1, 0, 4, "c", 200.0), seg(1, 4, 3, "c", 100.0)];
        assert_eq!(urgent_first(a100(), 2, &old2, late.clone(), &mut full, &urgent), late);
    }

    #[test]
    fn make_before_break_moves_a_late_creation_to_a_free_gpu() {
        let old = vec![seg(0, 0, 4, "a", 200.0), seg(0, 4, 3, "b", 100.0)];
        let demand: BTreeMap<String, f64> = [("a".to_string(), 150.0), ("b".to_string(), 80.0)].into();
        let mut map = DeploymentMap { segments: vec![seg(0, 0, 7, "a", 400.0)], jobs: vec![] };
        let steps = vec![
            Step::Drain { gpu: 0, placement: 0, service: "a".into() },
            Step::Destroy { gpu: 0, placement: 0, service: "a".into() },
            Step::Create { segment: seg(0, 0, 7, "a", 400.0) },
        ];
        // One GPU only: nowhere to make first; the dip stays.
        assert!(make_before_break(a100(), 1, &old, steps.clone(), &mut map.clone(), &demand, &same).is_err());
        // Two: the 7g goes to GPU 1 before the break.
        let fixed = make_before_break(a100(), 2, &old, steps, &mut map, &demand, &same).unwrap();
        assert_eq!(fixed[0], Step::Create { segment: seg(1, 0, 7, "a", 400.0) });
        assert_eq!(map.segments[0].gpu, 1);
        replay(a100(), &old, &fixed, &demand, &same).unwrap();
    }
}
