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
