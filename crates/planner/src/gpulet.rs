//! gpu-let's scheduler (Choi et al., ATC'22), reproduced on parva's tables for comparison with the
//! optimal planner on GPUs without MIG (`--algorithm gpulet`). Read from its source
//! (casys-kaist/glet, `src/scheduler/`); written here from that reading, not copied.
//!
//! 1. Partitions: a GPU holds at most two "gpu-lets", `p` and `100 - p` percent of its SMs with
//!    `p` in {20, 40, 50, 60, 80, 100}; a GPU is split on first use.
//! 2. Rates: each service's rate is replaced by its Poisson 99th percentile
//!    (`r + 2.326 sqrt(r)`), x1.1 above 550 requests/s.
//! 3. Latency for decisions: the profiled batch latency (one process per gpu-let) x 1.1. The
//!    interference between the two gpu-lets of a GPU is the tables' own (parva slows them by
//!    `--interference` before any planner sees them), where gpu-let fits a model of L2 and DRAM
//!    use per GPU type.
//! 4. Batch: the largest profiled batch (up to 32) with `2 L(b) <= SLO` for a saturated gpu-let;
//!    a residue gpu-let for a rate `r` needs `L(b) + b / r <= SLO` and `b / L(b) >= r`. gpu-let
//!    profiles every batch 1..=31; parva plans only measured points, so it takes the profiled ones.
//! 5. Order and packing: services by `rate x SLO`, ascending. Per service, saturated gpu-lets of
//!    the share with the best throughput per percent (a larger share only when it is at least
//!    5 % better per percent), as many as the rate fills, then one residue gpu-let of the smallest
//!    share that serves the rest. Each gpu-let goes to the GPU whose free gpu-let is the smallest
//!    that holds it (best fit), else to a new GPU split as `p / 100 - p`; a gpu-let put into a
//!    larger free one takes all of it.
//!
//! Left out: gpu-let's readjusting, merging of residues and time-sharing of a gpu-let by up to
//! three models (parva runs one service per segment); the GPU count is minimised by construction
//! here, where gpu-let takes it as an input. Memory is checked as for every parva plan (a
//! segment's processes within its share's memory).

use super::{GpuState, Infeasible, Plan, PlanError, PlanInput, SegmentChoice};
use parva_core::mig::GpuType;
use parva_core::profile::ModelProfile;

/// gpu-let's partition sizes, in share units (20, 40, 50, 60, 80, 100 %).
const SHARES: [u8; 6] = [2, 4, 5, 6, 8, 10];
use parva_core::latency::GPULET_LATENCY_FACTOR as LATENCY_FACTOR;
/// Largest batch gpu-let's binary search considers.
const MAX_BATCH: u32 = 32;
/// A larger share is taken only when its throughput per percent is this much better.
const SHARE_GAIN: f64 = 1.05;

/// One gpu-let a service asked for: its share, batch and the capacity it serves.
#[derive(Debug, Clone)]
struct Ask {
    service: usize,
    units: u8,
    batch: u32,
}

pub(super) fn plan(input: &PlanInput<'_>) -> Result<Plan, PlanError> {
    let gpu = input.gpu;
    if !gpu.is_mps() {
        return Err(PlanError::Invalid {
            what: "--algorithm gpulet".into(),
            rule: format!("is for GPU types without MIG (MPS shares); {} is cut by MIG", gpu.id),
        });
    }
    let mut order: Vec<usize> = (0..input.services.len()).filter(|&i| input.services[i].rate > 0.0).collect();
    order.sort_by(|&a, &b| {
        let key = |i: usize| input.services[i].rate * input.services[i].slo_ms;
        key(a).total_cmp(&key(b)).then(a.cmp(&b))
    });
    let mut infeasible = Vec::new();
    let mut gpus: Vec<Vec<(u8, Option<SegmentChoice>)>> = Vec::new();
    for si in order {
        let svc = &input.services[si];
        let Some(profile) = input.profiles.get(&svc.model) else {
            infeasible.push(Infeasible { service: svc.name.clone(), model: svc.model.clone(), reason: format!("model {} has no profile table", svc.model) });
            continue;
        };
        let slo = svc.slo_ms / 1000.0;
        // (The rate is already at its Poisson p99: `plan` applies gpu-let's rule before this.)
        let Some(asks) = asks_for(gpu, profile, si, svc.rate, slo) else {
            infeasible.push(Infeasible {
                service: svc.name.clone(),
                model: svc.model.clone(),
                reason: format!("no gpu-let share (20..100 %) serves it within its {} ms SLO by gpu-let's rules", svc.slo_ms),
            });
            continue;
        };
        for ask in asks {
            place(gpu, profile, &mut gpus, ask);
        }
    }
    let gpus = gpus
        .into_iter()
        .map(|parts| {
            let mut state = GpuState::default();
            let mut start = 0u8;
            for (units, seg) in parts {
                if let Some(seg) = seg {
                    state.insert(start, seg);
                }
                start += units;
            }
            state
        })
        .collect();
    Ok(Plan {
        gpu,
        services: input.services.to_vec(),
        gpus,
        infeasible,
        gpus_per_node: input.options.gpus_per_node,
        algorithm: super::Algorithm::GpuLet,
        latency_model: parva_core::latency::LatencyModel::GpuLet,
        plan_seconds: 0.0,
        notes: vec!["gpu-let's heuristic (ATC'22): at most 2 gpu-lets of 20/40/50/60/80/100 % per GPU, rates at their Poisson p99, latency x1.1".into()],
        lower_bound_gpus: None,
        proven_optimal: false,
        zero_rate: Vec::new(),
        lower_bound_why: None,
        margin: parva_core::slo::Margin::NONE,
        data_path_ms: Default::default(),
    })
}

/// Decision latency of `batch` on `units` (one process), seconds; None without a measured point
/// (what was not measured is not planned, as for every parva planner) or when the process does
/// not fit the share's memory.
fn latency(gpu: &GpuType, profile: &ModelProfile, units: u8, batch: u32) -> Option<f64> {
    let inst = gpu.profile_for_size(units)?;
    profile.point(units, batch, 1).filter(|p| p.is_measured() && profile.point_fits(p, inst)).map(|p| p.latency_s * LATENCY_FACTOR)
}

/// Saturated gpu-let of `units`: the largest batch with `2 L(b) <= slo`, and its throughput.
fn saturated(gpu: &GpuType, profile: &ModelProfile, units: u8, slo: f64) -> Option<(u32, f64)> {
    (1..=MAX_BATCH).rev().find_map(|b| latency(gpu, profile, units, b).filter(|l| 2.0 * l <= slo).map(|l| (b, b as f64 / l)))
}

/// Residue gpu-let for `rate`: the smallest share (and its largest batch) with
/// `L(b) + b / rate <= slo` and `b / L(b) >= rate`.
fn residue(gpu: &GpuType, profile: &ModelProfile, rate: f64, slo: f64) -> Option<(u8, u32)> {
    SHARES.iter().find_map(|&u| {
        (1..=MAX_BATCH).rev().find_map(|b| {
            let l = latency(gpu, profile, u, b)?;
            (l + b as f64 / rate <= slo && b as f64 / l >= rate).then_some((u, b))
        })
    })
}

/// The gpu-lets one service asks for (step 5's first half).
fn asks_for(gpu: &GpuType, profile: &ModelProfile, si: usize, rate: f64, slo: f64) -> Option<Vec<Ask>> {
    let mut best: Option<(u8, u32, f64)> = None;
    for &u in &SHARES {
        let Some((b, tput)) = saturated(gpu, profile, u, slo) else { continue };
        let per = |units: u8, t: f64| t / f64::from(units);
        if best.is_none_or(|(bu, _, bt)| per(u, tput) >= SHARE_GAIN * per(bu, bt)) {
            best = Some((u, b, tput));
        }
    }
    let (units, batch, tput) = best?;
    let mut asks = Vec::new();
    let full = (rate / tput).floor() as usize;
    asks.extend(std::iter::repeat_n(Ask { service: si, units, batch }, full));
    let rest = rate - full as f64 * tput;
    if rest > 1e-9 {
        match residue(gpu, profile, rest, slo) {
            Some((u, b)) => asks.push(Ask { service: si, units: u, batch: b }),
            None => asks.push(Ask { service: si, units, batch }),
        }
    }
    Some(asks)
}

/// Best fit: the smallest free gpu-let that holds the ask (taking all of it), else a new GPU
/// split as `units / 100 - units`.
fn place(gpu: &GpuType, profile: &ModelProfile, gpus: &mut Vec<Vec<(u8, Option<SegmentChoice>)>>, ask: Ask) {
    let free = gpus
        .iter()
        .enumerate()
        .flat_map(|(g, parts)| parts.iter().enumerate().filter(|(_, (_, s))| s.is_none()).map(move |(i, (u, _))| (g, i, *u)))
        .filter(|&(_, _, u)| u >= ask.units)
        .min_by_key(|&(g, _, u)| (u, g));
    let (g, i, units) = match free {
        Some(f) => f,
        None => {
            let parts = if ask.units >= gpu.gpcs { vec![(gpu.gpcs, None)] } else { vec![(ask.units, None), (gpu.gpcs - ask.units, None)] };
            gpus.push(parts);
            (gpus.len() - 1, 0, ask.units.min(gpu.gpcs))
        }
    };
    // The segment runs on the whole free gpu-let: its latency and capacity at that share.
    // (At the share it asked for when the larger one has no such point: more SMs are not slower.)
    let measured = |u: u8| profile.point(u, ask.batch, 1).filter(|p| p.is_measured()).map(|p| p.latency_s);
    let lat = measured(units).or_else(|| measured(ask.units)).unwrap_or(f64::INFINITY);
    let seg = SegmentChoice { service: ask.service, size: units, batch: ask.batch, procs: 1, capacity: ask.batch as f64 / (lat * LATENCY_FACTOR), latency_s: lat };
    gpus[g][i].1 = Some(seg);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Algorithm, PlanOptions};
    use parva_core::profile::ProfileSet;
    use parva_core::slo::Service;

    fn profiles() -> ProfileSet {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/mps/prof/fast.csv")).unwrap();
        let l4 = GpuType::by_id("l4-24gb").unwrap();
        let t = ModelProfile::read_from(text.as_bytes(), std::path::Path::new("fast.csv"), "fast".into(), Some(l4)).unwrap();
        ProfileSet { dir: "mem".into(), models: [("fast".to_string(), t)].into_iter().collect() }
    }

    fn run(rates: &[f64], gpu: &'static GpuType) -> Result<Plan, PlanError> {
        run_with(rates, &[100.0], gpu, PlanOptions { algorithm: Algorithm::GpuLet, ..PlanOptions::default() })
    }

    fn run_with(rates: &[f64], slos: &[f64], gpu: &'static GpuType, options: PlanOptions) -> Result<Plan, PlanError> {
        let services: Vec<Service> = rates
            .iter()
            .enumerate()
            .map(|(i, &r)| Service { name: format!("s{i}"), model: "fast".into(), rate: r, slo_ms: slos[i % slos.len()] })
            .collect();
        let p = profiles();
        crate::plan(PlanInput { gpu, profiles: &p, services: &services, options: &options })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, failure_persistence: None, ..Default::default() })]

        /// Under the same rule (gpu-let's), the optimal planner never needs more GPUs than
        /// gpu-let's heuristic: every gpu-let plan is one of the plans it searches.
        #[test]
        fn optimal_under_gpulets_rule_never_needs_more_gpus_than_gpulet(
            rates in proptest::collection::vec(1.0f64..600.0, 1..6),
            slos in proptest::collection::vec(40.0f64..400.0, 1..6),
        ) {
            let l4 = GpuType::by_id("l4-24gb").unwrap();
            let g = run_with(&rates, &slos, l4, PlanOptions { algorithm: Algorithm::GpuLet, ..PlanOptions::default() }).unwrap();
            let o = run_with(&rates, &slos, l4, PlanOptions { latency_model: parva_core::latency::LatencyModel::GpuLet, ..PlanOptions::default() }).unwrap();
            proptest::prop_assume!(g.infeasible.is_empty());
            proptest::prop_assert!(o.infeasible.is_empty(), "{:?}", o.infeasible);
            proptest::prop_assert!(o.gpus.len() <= g.gpus.len(), "optimal {} > gpulet {}", o.gpus.len(), g.gpus.len());
        }
    }

    #[test]
    fn gpulet_plans_at_most_two_gpulets_per_gpu_of_its_shares_and_covers_every_rate() {
        let l4 = GpuType::by_id("l4-24gb").unwrap();
        let plan = run(&[30.0, 150.0, 400.0, 5.0], l4).unwrap();
        assert!(plan.infeasible.is_empty(), "{:?}", plan.infeasible);
        let caps = plan.capacities();
        for (i, s) in plan.services.iter().enumerate() {
            assert!(caps[i] >= s.rate, "{} {} < {}", s.name, caps[i], s.rate);
        }
        for g in &plan.gpus {
            assert!(g.placed.len() <= 2, "{g:?}");
            assert!(g.used_gpcs() <= 10);
            for p in &g.placed {
                assert!([2, 4, 5, 6, 8, 10].contains(&p.segment.size) || g.placed.len() == 2, "{g:?}");
                assert_eq!(p.segment.procs, 1);
            }
            l4.validate(&g.layout(l4)).unwrap();
        }
        assert_eq!(plan.algorithm, Algorithm::GpuLet);
    }

    #[test]
    fn gpulet_is_refused_for_a_mig_type_and_plans_rates_at_their_poisson_p99() {
        let e = run(&[10.0], GpuType::by_id("a100-80gb").unwrap()).unwrap_err().to_string();
        assert!(e.contains("--algorithm gpulet") && e.contains("without MIG"), "{e}");
        let gpulet_rate = parva_core::latency::gpulet_rate;
        assert!((gpulet_rate(100.0) - 123.26).abs() < 1e-9);
        assert!((gpulet_rate(900.0) - (900.0 + 2.326 * 30.0) * 1.1).abs() < 1e-9);
    }
}
