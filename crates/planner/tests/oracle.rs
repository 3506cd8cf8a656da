//! An independent oracle for the optimal planner (issue 19): on small fleets (up to 4 services,
//! up to 3 A100 GPUs) a plain enumeration, without HiGHS and without the planner's code, finds the
//! fewest GPUs (then the fewest GPCs at that count) that any plan under the same rules needs, and
//! every plan of `--algorithm optimal` is checked against it: GPU and GPC counts, every GPU's MIG
//! layout legal, every segment an admissible profile point at the capacity the rules give it,
//! every service's rate covered.
//!
//! The rules, restated here from the README rather than taken from the planner: a segment is one
//! MIG instance of size g running one profile point (batch, processes <= max_procs); under
//! ParvaGPU's latency rule (`--latency-model parvagpu`) a point is admissible when its batch
//! latency is below budget x SLO, and a segment's capacity is the point's throughput x processes.
//! A GPU holds any set of instances at legal, non-overlapping placements; the A100's placements
//! are written out below from NVIDIA's MIG user guide (the catalogue is only compared with them).
//!
//! The search: per service, every vector of segment counts per size of at most 21 GPCs that
//! covers the rate and is minimal (no segment can be dropped); their sums over services; and the
//! sums of 1, 2 and 3 legal single-GPU layouts (as counts per size), enumerated from the
//! placements. The fewest GPUs is the smallest G for which some sum of the services' vectors is
//! a sum of G layouts (both sets are closed under removing segments, so minimal vectors suffice).
//!
//! The property test runs 96 random cases in the suite (a few seconds); run it longer with
//! `PROPTEST_CASES=5000 cargo test --locked -p parva-planner --test oracle`.

use std::collections::{BTreeMap, BTreeSet};

use parva_core::latency::LatencyModel;
use parva_core::mig::GpuType;
use parva_core::profile::{ModelProfile, ProfilePoint, ProfileSet};
use parva_core::slo::Service;
use parva_planner::{Algorithm, Plan, PlanInput, PlanOptions};
use proptest::prelude::*;

mod common;
use common::covers;

/// Instance sizes of an A100, in the order of the count vectors below.
const SIZES: [u8; 5] = [1, 2, 3, 4, 7];
/// A100 (40 and 80 GB) MIG geometry from NVIDIA's MIG user guide: (GPCs, memory slices, legal
/// starts) of the planner's profile of each size (1g.10gb, 2g.20gb, 3g.40gb, 4g.40gb, 7g.80gb).
const A100: [(u8, u8, &[u8]); 5] = [(1, 1, &[0, 1, 2, 3, 4, 5, 6]), (2, 2, &[0, 2, 4]), (3, 4, &[0, 4]), (4, 4, &[0]), (7, 8, &[0])];
const A100_GPCS: u32 = 7;
const MAX_GPUS: usize = 3;
const BUDGET: f64 = 0.45;
const MAX_PROCS: u32 = 3;

/// Segment counts per size, indexed like [`SIZES`].
type Counts = [u32; 5];

fn gpcs(c: &Counts) -> u32 {
    c.iter().zip(SIZES).map(|(n, s)| n * s as u32).sum()
}

fn add(a: &Counts, b: &Counts) -> Counts {
    std::array::from_fn(|i| a[i] + b[i])
}

fn size_index(size: u8) -> Option<usize> {
    SIZES.iter().position(|s| *s == size)
}

fn geometry(size: u8) -> Option<(u8, u8, &'static [u8])> {
    A100.iter().copied().find(|(g, _, _)| *g == size)
}

/// Every legal single-GPU layout of the A100, as counts per size (the empty one included).
fn legal_layouts() -> BTreeSet<Counts> {
    let placements: Vec<(usize, u16, u8)> = A100
        .iter()
        .flat_map(|&(g, slices, starts)| {
            starts.iter().map(move |&st| (size_index(g).unwrap(), (((1u32 << slices) - 1) << st) as u16, g))
        })
        .collect();
    let mut out = BTreeSet::new();
    // Every subset of placements (21 of them): keep those without overlap within 7 GPCs.
    fn walk(i: usize, mask: u16, gpcs: u32, counts: Counts, p: &[(usize, u16, u8)], out: &mut BTreeSet<Counts>) {
        if i == p.len() {
            out.insert(counts);
            return;
        }
        walk(i + 1, mask, gpcs, counts, p, out);
        let (k, m, g) = p[i];
        if mask & m == 0 && gpcs + g as u32 <= A100_GPCS {
            let mut c = counts;
            c[k] += 1;
            walk(i + 1, mask | m, gpcs + g as u32, c, p, out);
        }
    }
    walk(0, 0, 0, [0; 5], &placements, &mut out);
    out
}

/// `packable[g]`: the count vectors that g GPUs can hold (sums of g legal layouts).
fn packable() -> Vec<BTreeSet<Counts>> {
    let one = legal_layouts();
    let mut out = vec![BTreeSet::from([[0u32; 5]])];
    for g in 1..=MAX_GPUS {
        let next: BTreeSet<Counts> = out[g - 1].iter().flat_map(|a| one.iter().map(move |b| add(a, b))).collect();
        out.push(next);
    }
    out
}

/// One generated service: its model's points and its SLO.
#[derive(Debug, Clone)]
struct Case {
    services: Vec<Service>,
    profiles: ProfileSet,
}

/// The oracle's answer.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    /// Services with no admissible point, by name.
    infeasible: BTreeSet<String>,
    /// Per feasible service: best capacity per size (the rules' capacity of a size-g segment).
    best: BTreeMap<String, [Option<f64>; 5]>,
    /// Fewest GPUs and, at that count, fewest GPCs; `None` when more than [`MAX_GPUS`] are needed.
    optimum: Option<(usize, u32)>,
}

fn admissible(p: &ProfilePoint, slo_ms: f64) -> bool {
    // The rule as the README states it: profiled batch latency below budget x SLO.
    p.throughput > 0.0 && p.latency_s > 0.0 && p.procs <= MAX_PROCS && p.latency_s * 1000.0 < BUDGET * slo_ms
}

fn oracle(case: &Case, packable: &[BTreeSet<Counts>]) -> Answer {
    let mut infeasible = BTreeSet::new();
    let mut best = BTreeMap::new();
    let mut totals: BTreeSet<Counts> = BTreeSet::from([[0; 5]]);
    for svc in &case.services {
        let mut caps: [Option<f64>; 5] = [None; 5];
        for p in case.profiles.models[&svc.model].points.iter().filter(|p| admissible(p, svc.slo_ms)) {
            let k = size_index(p.size).expect("generated sizes are A100 sizes");
            let cap = p.throughput * p.procs as f64;
            caps[k] = Some(caps[k].map_or(cap, |c: f64| c.max(cap)));
        }
        if caps.iter().all(Option::is_none) {
            infeasible.insert(svc.name.clone());
            continue;
        }
        best.insert(svc.name.clone(), caps);
        // Minimal covering vectors of at most 3 GPUs' GPCs.
        let limit = MAX_GPUS as u32 * A100_GPCS;
        let cap_of = |c: &Counts| -> f64 { c.iter().zip(&caps).map(|(n, cap)| *n as f64 * cap.unwrap_or(0.0)).sum() };
        let mut minimal: Vec<Counts> = Vec::new();
        let bound = |k: usize| if caps[k].is_some() { limit / SIZES[k] as u32 } else { 0 };
        for a in 0..=bound(0) {
            for b in 0..=bound(1) {
                for c in 0..=bound(2) {
                    for d in 0..=bound(3) {
                        for e in 0..=bound(4) {
                            let v = [a, b, c, d, e];
                            if gpcs(&v) > limit || !covers(cap_of(&v), svc.rate) {
                                continue;
                            }
                            let drop_one = (0..5).any(|k| {
                                v[k] > 0 && {
                                    let mut w = v;
                                    w[k] -= 1;
                                    covers(cap_of(&w), svc.rate)
                                }
                            });
                            if !drop_one {
                                minimal.push(v);
                            }
                        }
                    }
                }
            }
        }
        totals = totals
            .iter()
            .flat_map(|t| minimal.iter().map(move |m| add(t, m)))
            .filter(|t| gpcs(t) <= limit)
            .collect();
    }
    let optimum = (0..=MAX_GPUS).find_map(|g| {
        let fits: Vec<u32> = totals.iter().filter(|t| packable[g].contains(*t)).map(gpcs).collect();
        fits.into_iter().min().map(|gp| (g, gp))
    });
    Answer { infeasible, best, optimum }
}

/// The planner's optimal plan of `case` under ParvaGPU's latency rule.
fn plan_of(case: &Case) -> Plan {
    let options = PlanOptions {
        algorithm: Algorithm::Optimal,
        latency_model: LatencyModel::ParvaGpu { budget: BUDGET },
        latency_budget: BUDGET,
        max_procs: MAX_PROCS,
        ..PlanOptions::default()
    };
    let input = PlanInput { gpu: GpuType::by_id("a100-80gb").unwrap(), profiles: &case.profiles, services: &case.services, options: &options };
    parva_planner::plan(input).unwrap_or_else(|e| panic!("plan refused {case:?}: {e}"))
}

/// Check `plan` against the oracle's `answer`; the first disagreement, in words.
fn check(case: &Case, plan: &Plan, answer: &Answer) -> Result<(), String> {
    let planned_bad: BTreeSet<String> = plan.infeasible.iter().map(|b| b.service.clone()).collect();
    if planned_bad != answer.infeasible {
        return Err(format!("infeasible services: planner {planned_bad:?}, oracle {:?}", answer.infeasible));
    }
    let mut capacity: BTreeMap<&str, f64> = BTreeMap::new();
    let mut used_gpcs = 0u32;
    for (gi, gpu) in plan.gpus.iter().enumerate() {
        if gpu.placed.is_empty() {
            return Err(format!("GPU {gi} is empty"));
        }
        // Legality, checked against the geometry written out above.
        let (mut mask, mut g_sum) = (0u16, 0u32);
        for p in &gpu.placed {
            let seg = &p.segment;
            let Some((g, slices, starts)) = geometry(seg.size) else { return Err(format!("GPU {gi}: size {} is no A100 size", seg.size)) };
            if !starts.contains(&p.start) {
                return Err(format!("GPU {gi}: {g}g at {} is not a legal start ({starts:?})", p.start));
            }
            let m = (((1u32 << slices) - 1) << p.start) as u16;
            if mask & m != 0 {
                return Err(format!("GPU {gi}: {g}g at {} overlaps another instance", p.start));
            }
            mask |= m;
            g_sum += g as u32;
            // The segment is an admissible point of its service at the rules' capacity.
            let svc = plan.services.get(seg.service).ok_or_else(|| format!("GPU {gi}: unknown service {}", seg.service))?;
            let point = case.profiles.models[&svc.model]
                .point(seg.size, seg.batch, seg.procs)
                .ok_or_else(|| format!("{}: no profile point {}g b{} x{}", svc.name, seg.size, seg.batch, seg.procs))?;
            if !admissible(point, svc.slo_ms) {
                return Err(format!("{}: point {point:?} is not admissible at SLO {} ms", svc.name, svc.slo_ms));
            }
            let want = point.throughput * point.procs as f64;
            if (seg.capacity - want).abs() > 1e-9 * want {
                return Err(format!("{}: segment capacity {} but the point gives {want}", svc.name, seg.capacity));
            }
            let best = answer.best[&svc.name][size_index(seg.size).unwrap()].unwrap();
            if want < best * (1.0 - 1e-12) {
                return Err(format!("{}: a {}g segment of capacity {want} where the best is {best}", svc.name, seg.size));
            }
            *capacity.entry(svc.name.as_str()).or_default() += seg.capacity;
        }
        if g_sum > A100_GPCS {
            return Err(format!("GPU {gi}: {g_sum} GPCs"));
        }
        used_gpcs += g_sum;
    }
    for svc in case.services.iter().filter(|s| !answer.infeasible.contains(&s.name)) {
        let cap = capacity.get(svc.name.as_str()).copied().unwrap_or(0.0);
        // Relative tolerance as the planner's own check (`plan`): 189 segments of 7.8 req/s sum to
        // 1474.1999999999995 in floating point, which covers a rate of 1474.2 (a case proptest found).
        if cap * (1.0 + 1e-9) < svc.rate {
            return Err(format!("{}: capacity {cap} below its rate {}", svc.name, svc.rate));
        }
    }
    match answer.optimum {
        Some((gpus, g)) => {
            if plan.gpus.len() != gpus {
                return Err(format!("the planner uses {} GPUs, the oracle needs {gpus}", plan.gpus.len()));
            }
            if used_gpcs != g {
                return Err(format!("the planner uses {used_gpcs} GPCs on {gpus} GPUs, the oracle needs {g}"));
            }
            if !plan.proven_optimal || plan.lower_bound_gpus.is_none_or(|lb| lb > gpus) {
                return Err(format!("optimal plan not reported so: proven {} bound {:?}", plan.proven_optimal, plan.lower_bound_gpus));
            }
        }
        None if plan.gpus.len() <= MAX_GPUS => {
            return Err(format!("the planner fits in {} GPUs where the oracle finds no plan within {MAX_GPUS}", plan.gpus.len()));
        }
        None => {}
    }
    Ok(())
}

fn point(size: u8, batch: u32, procs: u32, throughput: f64, latency_s: f64) -> ProfilePoint {
    ProfilePoint { size, batch, procs, throughput, latency_s, extra: Vec::new() }
}

fn case_of(services: Vec<(f64, f64, Vec<ProfilePoint>)>) -> Case {
    let mut models = BTreeMap::new();
    let mut list = Vec::new();
    for (i, (rate, slo_ms, points)) in services.into_iter().enumerate() {
        let model = format!("m{i}");
        models.insert(model.clone(), ModelProfile { model: model.clone(), share_keyed: false, points, extra_headers: Vec::new() });
        list.push(Service { name: format!("s{i}"), model, rate, slo_ms });
    }
    Case { services: list, profiles: ProfileSet { dir: "generated".into(), models } }
}

#[test]
fn the_geometry_written_out_here_is_the_catalogues() {
    let gpu = GpuType::by_id("a100-80gb").unwrap();
    for (g, slices, starts) in A100 {
        let p = gpu.profile_for_size(g).unwrap();
        assert_eq!((p.mem_slices, p.starts), (slices, starts), "{}", p.name);
    }
    let layouts = legal_layouts();
    // Spot checks by hand: 4+3 fits, 4+4 and 3+3+1 do not, seven 1g do.
    assert!(layouts.contains(&[0, 0, 1, 1, 0]) && layouts.contains(&[7, 0, 0, 0, 0]) && layouts.contains(&[0, 0, 2, 0, 0]));
    assert!(!layouts.contains(&[0, 0, 0, 2, 0]) && !layouts.contains(&[1, 0, 2, 0, 0]) && !layouts.contains(&[0, 3, 1, 0, 0]));
}

/// Hand-worked answers: the oracle itself is right on cases whose optimum is known.
#[test]
fn the_oracle_agrees_with_hand_worked_cases() {
    let pk = packable();
    // Only 3g segments of 100/s for 250/s: three 3g, two per GPU (at 0 and 4): 2 GPUs, 9 GPCs.
    let c = case_of(vec![(250.0, 100.0, vec![point(3, 1, 1, 100.0, 0.01)])]);
    assert_eq!(oracle(&c, &pk).optimum, Some((2, 9)));
    // Only 4g: one per GPU (start 0 only), so 12 GPCs need 3 GPUs, not 2.
    let c = case_of(vec![(250.0, 100.0, vec![point(4, 1, 1, 100.0, 0.01)])]);
    assert_eq!(oracle(&c, &pk).optimum, Some((3, 12)));
    // Too slow for the SLO (10 ms >= 0.45 x 20 ms): infeasible.
    let c = case_of(vec![(10.0, 20.0, vec![point(1, 1, 1, 100.0, 0.01)])]);
    let a = oracle(&c, &pk);
    assert_eq!((a.infeasible.len(), a.optimum), (1, Some((0, 0))));
    // Four 4g services: more than 3 GPUs.
    let c = case_of((0..4).map(|_| (50.0, 100.0, vec![point(4, 1, 1, 100.0, 0.01)])).collect());
    assert_eq!(oracle(&c, &pk).optimum, None);
}

/// A test of the test: plans that are wrong in each way the check looks for are refused.
#[test]
fn the_check_rejects_a_broken_packing_a_missing_gpu_and_a_wrong_optimum() {
    let pk = packable();
    // 3g at 240/s and 1g at 70/s for s0 (rate 460), 2g at 120/s for s1 (rate 300): by hand,
    // 3g+3g on one GPU and three 2g on another, 12 GPCs.
    let c = case_of(vec![
        (460.0, 100.0, vec![point(3, 4, 2, 120.0, 0.02), point(1, 2, 1, 70.0, 0.01)]),
        (300.0, 200.0, vec![point(2, 8, 1, 120.0, 0.05)]),
    ]);
    let answer = oracle(&c, &pk);
    let plan = plan_of(&c);
    assert_eq!(check(&c, &plan, &answer), Ok(()));
    assert_eq!(answer.optimum, Some((2, 12)), "{answer:?}");
    let gpus = 2;
    // One GPU fewer: a service loses capacity, or the count disagrees.
    let mut fewer = plan.clone();
    fewer.gpus.pop();
    let e = check(&c, &fewer, &answer).unwrap_err();
    assert!(e.contains("below its rate") || e.contains("GPUs"), "{e}");
    // A broken packing: the first instance of GPU 0 moved onto the second's slices.
    let mut overlap = plan.clone();
    let g0 = overlap.gpus.iter_mut().find(|g| g.placed.len() >= 2).expect("a GPU with two instances");
    g0.placed[0] = g0.placed[1].clone();
    let e = check(&c, &overlap, &answer).unwrap_err();
    assert!(e.contains("overlaps another instance"), "{e}");
    // An illegal start.
    let mut illegal = plan.clone();
    let p = illegal.gpus.iter_mut().flat_map(|g| g.placed.iter_mut()).find(|p| p.segment.size == 3).unwrap();
    p.start = 2;
    let e = check(&c, &illegal, &answer).unwrap_err();
    assert!(e.contains("3g at 2 is not a legal start"), "{e}");
    // An oracle that knows a plan with one GPU fewer makes the planner's count a disagreement.
    let better = Answer { optimum: answer.optimum.map(|(g, gp)| (g - 1, gp)), ..answer.clone() };
    let e = check(&c, &plan, &better).unwrap_err();
    assert_eq!(e, format!("the planner uses {gpus} GPUs, the oracle needs {}", gpus - 1));
    // A segment at less than its size's best point.
    let mut weak = plan.clone();
    let seg = &mut weak.gpus[0].placed[0].segment;
    seg.capacity *= 0.5;
    assert!(check(&c, &weak, &answer).unwrap_err().contains("segment capacity"));
}

/// Regression (a proptest case in a fresh clone's `scripts/test`): six 1-GPC segments of 180.2
/// samples/s sum to 1081.1999999999998, which the planner counts as covering a rate of 1081.2;
/// the oracle counted exactly and asked for a seventh. Both now use one rule ([`covers`]).
#[test]
fn regression_six_segments_whose_float_sum_is_just_under_the_rate_cover_it() {
    let case = case_of(vec![(1081.2, 239.0, vec![point(1, 1, 1, 180.2, 0.001)])]);
    let answer = oracle(&case, &packable());
    assert_eq!(answer.optimum, Some((1, 6)), "{answer:?}");
    let plan = plan_of(&case);
    check(&case, &plan, &answer).unwrap();
}

fn arb_point() -> impl Strategy<Value = ProfilePoint> {
    (0usize..5, prop::sample::select(vec![1u32, 2, 4, 8, 16]), 1u32..=4, 5.0f64..600.0, 1.0f64..200.0)
        .prop_map(|(k, batch, procs, tp, lat_ms)| point(SIZES[k], batch, procs, (tp * 10.0).round() / 10.0, (lat_ms * 10.0).round() / 1e4))
}

fn arb_case() -> impl Strategy<Value = Case> {
    let service = (1.0f64..1500.0, 10.0f64..400.0, prop::collection::vec(arb_point(), 1..12)).prop_map(|(rate, slo, mut pts)| {
        let mut seen = BTreeSet::new();
        pts.retain(|p| seen.insert((p.size, p.batch, p.procs)));
        ((rate * 10.0).round() / 10.0, slo.round(), pts)
    });
    prop::collection::vec(service, 1..=4).prop_map(case_of)
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96)
}

proptest! {
    // No regression files: this crate's layout (lib.rs at the crate root) makes proptest write
    // them to src/proptest-regressions/; a failure prints its minimal case instead.
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// The planner's optimal plans agree with the oracle on random small fleets.
    #[test]
    fn optimal_plans_agree_with_the_oracle(case in arb_case()) {
        let answer = oracle(&case, &packable());
        let plan = plan_of(&case);
        if let Err(e) = check(&case, &plan, &answer) {
            return Err(TestCaseError::fail(format!("{e}\ncase: {case:?}\noracle: {answer:?}\nplan: {:?}", plan.gpus)));
        }
    }
}
