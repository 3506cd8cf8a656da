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
