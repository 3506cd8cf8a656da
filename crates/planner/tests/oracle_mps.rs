//! An independent oracle for the optimal planner on a GPU without MIG (issue 17): MPS shares of
//! 20, 50 and 100 % on an L4 that takes at most 3 shares (`--max-shares 3`), up to 3 services and
//! 3 GPUs. A plain enumeration, without HiGHS and without the planner's code, finds the fewest
//! GPUs any plan needs, and every `--algorithm optimal` plan is checked against it: GPU count,
//! every GPU's shares summing to at most 100 % in at most 3 segments, every rate covered.
//!
//! The rules, restated from the README: a segment is one share running one profile point; under
//! ParvaGPU's latency rule a point is admissible when its batch latency is below budget x SLO, and
//! its capacity is throughput x processes. A GPU holds any shares summing to at most 100 %, at most
//! `max_shares` of them. The property test runs 64 random cases in the suite; run it longer with
//! `PROPTEST_CASES=5000 cargo test --locked -p parva-planner --test oracle_mps`.

use std::collections::BTreeSet;

use parva_core::latency::LatencyModel;
use parva_core::mig::GpuType;
use parva_core::profile::{ModelProfile, ProfilePoint, ProfileSet};
use parva_core::slo::Service;
use parva_planner::{Algorithm, Plan, PlanInput, PlanOptions};
use proptest::prelude::*;

mod common;
use common::covers;

/// Share sizes in 10 % units (20, 50, 100 %), in the order of the count vectors.
const UNITS: [u8; 3] = [2, 5, 10];
const MAX_SHARES: u32 = 3;
const MAX_GPUS: usize = 3;
const BUDGET: f64 = 0.45;
const MAX_PROCS: u32 = 3;

type Counts = [u32; 3];

/// Every (20 %, 50 %, 100 %) count vector one GPU holds.
fn one_gpu() -> Vec<Counts> {
    let mut out = Vec::new();
    for a in 0..=5u32 {
        for b in 0..=2u32 {
            for c in 0..=1u32 {
                if 2 * a + 5 * b + 10 * c <= 10 && a + b + c <= MAX_SHARES {
                    out.push([a, b, c]);
                }
            }
        }
    }
    out
}

/// Count vectors that `g` GPUs hold, for g = 0..=MAX_GPUS.
fn packable() -> Vec<BTreeSet<Counts>> {
    let single = one_gpu();
    let mut out = vec![BTreeSet::from([[0; 3]])];
    for g in 1..=MAX_GPUS {
        let next = out[g - 1].iter().flat_map(|t| single.iter().map(move |s| [t[0] + s[0], t[1] + s[1], t[2] + s[2]])).collect();
        out.push(next);
    }
    out
}

fn admissible(p: &ProfilePoint, slo_ms: f64) -> bool {
    p.throughput > 0.0 && p.latency_s > 0.0 && p.procs <= MAX_PROCS && p.latency_s * 1000.0 < BUDGET * slo_ms
}

/// The fewest GPUs, or None when some service is infeasible or needs more than MAX_GPUS.
fn oracle(services: &[Service], profiles: &ProfileSet) -> Option<usize> {
    let pk = packable();
    let mut totals: BTreeSet<Counts> = BTreeSet::from([[0; 3]]);
    for svc in services {
        let mut caps = [0.0f64; 3];
        for p in profiles.models[&svc.model].points.iter().filter(|p| admissible(p, svc.slo_ms)) {
            let k = UNITS.iter().position(|u| *u == p.size)?;
            caps[k] = caps[k].max(p.throughput * p.procs as f64);
        }
        let cap = |v: &Counts| v.iter().zip(&caps).map(|(n, c)| *n as f64 * c).sum::<f64>();
        let mut enough = Vec::new();
        for a in 0..=15u32 {
            for b in 0..=6u32 {
                for c in 0..=3u32 {
                    let v = [a, b, c];
                    if covers(cap(&v), svc.rate) {
                        enough.push(v);
                    }
                }
            }
        }
        if enough.is_empty() {
            return None;
        }
        totals = totals.iter().flat_map(|t| enough.iter().map(move |v| [t[0] + v[0], t[1] + v[1], t[2] + v[2]])).filter(|t| pk[MAX_GPUS].contains(t)).collect();
    }
    (0..=MAX_GPUS).find(|&g| totals.iter().any(|t| pk[g].contains(t)))
}

fn plan_of(services: &[Service], profiles: &ProfileSet) -> Plan {
    let options = PlanOptions {
        algorithm: Algorithm::Optimal,
        latency_model: LatencyModel::ParvaGpu { budget: BUDGET },
        latency_budget: BUDGET,
        max_procs: MAX_PROCS,
        ..PlanOptions::default()
    };
    let gpu = GpuType::by_id("l4-24gb").unwrap().with_max_instances(MAX_SHARES as u8);
    parva_planner::plan(PlanInput { gpu, profiles, services, options: &options }).unwrap()
}

fn case_of(services: Vec<(f64, f64, Vec<ProfilePoint>)>) -> (Vec<Service>, ProfileSet) {
    let mut models = std::collections::BTreeMap::new();
    let mut list = Vec::new();
    for (i, (rate, slo_ms, points)) in services.into_iter().enumerate() {
        let model = format!("m{i}");
        models.insert(model.clone(), ModelProfile { model: model.clone(), share_keyed: true, points, extra_headers: Vec::new() });
        list.push(Service { name: format!("s{i}"), model, rate, slo_ms });
    }
    (list, ProfileSet { dir: "generated".into(), models })
}

fn arb_case() -> impl Strategy<Value = (Vec<Service>, ProfileSet)> {
    let point = (0usize..3, prop::sample::select(vec![1u32, 4, 16]), 1u32..=3, 5.0f64..600.0, 1.0f64..200.0).prop_map(|(k, batch, procs, tp, ms)| {
        ProfilePoint { size: UNITS[k], batch, procs, throughput: (tp * 10.0).round() / 10.0, latency_s: (ms * 10.0).round() / 1e4, extra: Vec::new() }
    });
    let service = (1.0f64..1200.0, 10.0f64..400.0, prop::collection::vec(point, 1..10)).prop_map(|(rate, slo, mut pts)| {
        let mut seen = BTreeSet::new();
        pts.retain(|p| seen.insert((p.size, p.batch, p.procs)));
        ((rate * 10.0).round() / 10.0, slo.round(), pts)
    });
    prop::collection::vec(service, 1..=3).prop_map(case_of)
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
}

#[test]
fn the_oracle_agrees_with_hand_worked_cases() {
    let p = |size: u8, tp: f64| ProfilePoint { size, batch: 1, procs: 1, throughput: tp, latency_s: 0.001, extra: Vec::new() };
    // 100/s per 20 % share, 260/s per 50 %: 500/s is two 50 % shares on one GPU.
    let (s, pr) = case_of(vec![(500.0, 100.0, vec![p(2, 100.0), p(5, 260.0)])]);
    assert_eq!(oracle(&s, &pr), Some(1));
    // Only 20 % shares of 100/s: 400/s needs four, but a GPU takes at most 3 shares: 2 GPUs.
    let (s, pr) = case_of(vec![(400.0, 100.0, vec![p(2, 100.0)])]);
    assert_eq!(oracle(&s, &pr), Some(2));
    let plan = plan_of(&s, &pr);
    assert_eq!(plan.gpus.len(), 2);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// The planner's optimal plans on an MPS type agree with the oracle on random small fleets.
    #[test]
    fn optimal_mps_plans_agree_with_the_oracle(case in arb_case()) {
        let (services, profiles) = case;
        let Some(best) = oracle(&services, &profiles) else { return Ok(()) };
        let plan = plan_of(&services, &profiles);
        let gpu = GpuType::by_id("l4-24gb").unwrap();
        prop_assert!(plan.infeasible.is_empty(), "{:?}", plan.infeasible);
        prop_assert_eq!(plan.gpus.len(), best, "plan {:?}", plan.gpus);
        for g in &plan.gpus {
            prop_assert!(g.placed.len() as u32 <= MAX_SHARES && g.used_gpcs() <= 10, "{:?}", g);
            prop_assert!(gpu.validate(&g.layout(gpu)).is_ok());
        }
        let caps = plan.capacities();
        for (i, s) in services.iter().enumerate() {
            prop_assert!(caps[i] + 1e-6 >= s.rate, "{} {} < {}", s.name, caps[i], s.rate);
        }
    }
}
