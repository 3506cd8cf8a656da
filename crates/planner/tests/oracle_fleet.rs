//! An independent oracle for the fleet planner (issue 35): on small cases (1-3 services, an A100
//! and an L4 type, at most 3 GPUs of each) a plain enumeration, without HiGHS and without the
//! planner's code, finds the lowest cost per hour any plan under the same rules has, and every
//! `plan_fleet` plan is checked against it: cost, each type within its limit, every GPU's layout
//! legal for its type, every segment an admissible point of its service on its type, every rate
//! covered, and the plan reported proven optimal.
//!
//! The rules, restated from the README rather than taken from the planner: a segment is one MIG
//! instance (A100: 1, 2, 3, 4 or 7 GPCs at NVIDIA's legal placements) or one MPS share (L4: 20, 50
//! or 100 % here, at most 3 shares per GPU summing to at most 100 %) running one profile point of
//! its type's table; under ParvaGPU's latency rule a point is admissible when its batch latency is
//! below budget x SLO, and a segment's capacity is throughput x processes. A service may be split
//! over both types. A plan costs each GPU's price per hour.
//!
//! The search: per service, every pair (A100 counts per size, L4 counts per share) that covers its
//! rate, fits 3 GPUs of each type and is minimal (no segment can be dropped); their sums over the
//! services, kept while they fit 3 GPUs of each type; for each sum, the fewest GPUs of each type
//! that hold its part (sums of legal single-GPU layouts), priced. Both sets are closed under
//! removing segments, so minimal covers suffice. The suite runs 48 random cases; run it longer
//! with `PROPTEST_CASES=2000 cargo test --locked -p parva-planner --test oracle_fleet`.

use std::collections::{BTreeMap, BTreeSet};

use parva_core::latency::LatencyModel;
use parva_core::mig::GpuType;
use parva_core::profile::{ModelProfile, ProfilePoint, ProfileSet};
use parva_core::slo::{Margin, Service};
use parva_planner::fleet::{FleetInput, FleetPlan, FleetType, Objective, plan_fleet};
use parva_planner::{Algorithm, PlanOptions};
use proptest::prelude::*;

mod common;
use common::covers;

const MAX_GPUS: usize = 3;
const BUDGET: f64 = 0.45;
const MAX_PROCS: u32 = 3;
/// A100 sizes and (GPCs, memory slices, legal starts), from NVIDIA's MIG user guide.
const A_SIZES: [u8; 5] = [1, 2, 3, 4, 7];
const A100: [(u8, u8, &[u8]); 5] = [(1, 1, &[0, 1, 2, 3, 4, 5, 6]), (2, 2, &[0, 2, 4]), (3, 4, &[0, 4]), (4, 4, &[0]), (7, 8, &[0])];
/// L4 shares in 10 % units, at most 3 per GPU.
const L_UNITS: [u8; 3] = [2, 5, 10];
const MAX_SHARES: u32 = 3;

type A = [u32; 5];
type L = [u32; 3];

/// Every A100 single-GPU layout as counts per size (the empty one included).
fn a_layouts() -> BTreeSet<A> {
    let placements: Vec<(usize, u16)> = A100
        .iter()
        .enumerate()
        .flat_map(|(k, &(_, slices, starts))| starts.iter().map(move |&st| (k, (((1u32 << slices) - 1) << st) as u16)))
        .collect();
    let mut out = BTreeSet::new();
    fn walk(i: usize, mask: u16, gpcs: u32, c: A, p: &[(usize, u16)], out: &mut BTreeSet<A>) {
        if i == p.len() {
            out.insert(c);
            return;
        }
        walk(i + 1, mask, gpcs, c, p, out);
        let (k, m) = p[i];
        let g = A_SIZES[k] as u32;
        if mask & m == 0 && gpcs + g <= 7 {
            let mut c = c;
            c[k] += 1;
            walk(i + 1, mask | m, gpcs + g, c, p, out);
        }
    }
    walk(0, 0, 0, [0; 5], &placements, &mut out);
    out
}

fn l_layouts() -> BTreeSet<L> {
    let mut out = BTreeSet::new();
    for a in 0..=3u32 {
        for b in 0..=2u32 {
            for c in 0..=1u32 {
                if 2 * a + 5 * b + 10 * c <= 10 && a + b + c <= MAX_SHARES {
                    out.insert([a, b, c]);
                }
            }
        }
    }
    out
}

/// `out[g]`: the count vectors g GPUs hold.
fn packable<const N: usize>(one: &BTreeSet<[u32; N]>) -> Vec<BTreeSet<[u32; N]>> {
    let mut out = vec![BTreeSet::from([[0u32; N]])];
    for g in 1..=MAX_GPUS {
        let next = out[g - 1].iter().flat_map(|a| one.iter().map(move |b| std::array::from_fn(|i| a[i] + b[i]))).collect();
        out.push(next);
    }
    out
}

fn admissible(p: &ProfilePoint, slo_ms: f64) -> bool {
    p.throughput > 0.0 && p.latency_s > 0.0 && p.procs <= MAX_PROCS && p.latency_s * 1000.0 < BUDGET * slo_ms
}

/// Best capacity per size of a service's admissible points in `table`, indexed like `sizes`.
fn caps<const N: usize>(table: &ModelProfile, slo_ms: f64, sizes: &[u8; N]) -> [f64; N] {
    let mut caps = [0.0f64; N];
    for p in table.points.iter().filter(|p| admissible(p, slo_ms)) {
        if let Some(k) = sizes.iter().position(|s| *s == p.size) {
            caps[k] = caps[k].max(p.throughput * p.procs as f64);
        }
    }
    caps
}

#[derive(Debug, Clone)]
struct Case {
    services: Vec<Service>,
    a: ProfileSet,
    l: ProfileSet,
    cost_a: f64,
    cost_l: f64,
}

/// The lowest cost, or `None` when some service has no admissible point on either type or no plan
/// fits 3 GPUs of each.
fn oracle(case: &Case, pa: &[BTreeSet<A>], pl: &[BTreeSet<L>]) -> Option<f64> {
    let mut totals: BTreeSet<(A, L)> = BTreeSet::from([([0; 5], [0; 3])]);
    for svc in &case.services {
        let ca = caps(&case.a.models[&svc.model], svc.slo_ms, &A_SIZES);
        let cl = caps(&case.l.models[&svc.model], svc.slo_ms, &L_UNITS);
        let cap = |a: &A, l: &L| -> f64 {
            a.iter().zip(&ca).map(|(n, c)| *n as f64 * c).sum::<f64>() + l.iter().zip(&cl).map(|(n, c)| *n as f64 * c).sum::<f64>()
        };
        let mut minimal: Vec<(A, L)> = Vec::new();
        let a_vecs: Vec<&A> = pa[MAX_GPUS].iter().filter(|a| a.iter().zip(&ca).all(|(n, c)| *n == 0 || *c > 0.0)).collect();
        let l_vecs: Vec<&L> = pl[MAX_GPUS].iter().filter(|l| l.iter().zip(&cl).all(|(n, c)| *n == 0 || *c > 0.0)).collect();
        for a in &a_vecs {
            for l in &l_vecs {
                if !covers(cap(a, l), svc.rate) {
                    continue;
                }
                let drop_a = (0..5).any(|k| a[k] > 0 && {
                    let mut w = **a;
                    w[k] -= 1;
                    covers(cap(&w, l), svc.rate)
                });
                let drop_l = (0..3).any(|k| l[k] > 0 && {
                    let mut w = **l;
                    w[k] -= 1;
                    covers(cap(a, &w), svc.rate)
                });
                if !drop_a && !drop_l {
                    minimal.push((**a, **l));
                }
            }
        }
        if minimal.is_empty() {
            return None;
        }
        totals = totals
            .iter()
            .flat_map(|(ta, tl)| {
                minimal.iter().map(move |(a, l)| (std::array::from_fn(|i| ta[i] + a[i]), std::array::from_fn(|i| tl[i] + l[i])))
            })
            .filter(|(a, l)| pa[MAX_GPUS].contains(a) && pl[MAX_GPUS].contains(l))
            .collect();
    }
    totals
        .iter()
        .map(|(a, l)| {
            let ga = (0..=MAX_GPUS).find(|&g| pa[g].contains(a)).unwrap();
            let gl = (0..=MAX_GPUS).find(|&g| pl[g].contains(l)).unwrap();
            ga as f64 * case.cost_a + gl as f64 * case.cost_l
        })
        .min_by(f64::total_cmp)
}

fn options() -> PlanOptions {
    PlanOptions {
        algorithm: Algorithm::Optimal,
        latency_model: LatencyModel::ParvaGpu { budget: BUDGET },
        latency_budget: BUDGET,
        max_procs: MAX_PROCS,
        margin: Margin::NONE,
        ..PlanOptions::default()
    }
}

fn l4() -> &'static GpuType {
    GpuType::by_id("l4-24gb").unwrap().with_max_instances(MAX_SHARES as u8)
}

fn plan_of(case: &Case) -> Result<FleetPlan, parva_planner::PlanError> {
    let types = [
        FleetType { gpu: GpuType::by_id("a100-80gb").unwrap(), profiles: &case.a, cost_per_hour: case.cost_a, max_gpus: Some(3), gpus_per_node: 8 },
        FleetType { gpu: l4(), profiles: &case.l, cost_per_hour: case.cost_l, max_gpus: Some(3), gpus_per_node: 8 },
    ];
    let options = options();
    plan_fleet(FleetInput { types: &types, services: &case.services, options: &options, objective: Objective::Cost })
}

/// Check `plan` against the rules and the oracle's cost; the first disagreement, in words.
fn check(case: &Case, plan: &FleetPlan, best: f64) -> Result<(), String> {
    let mut capacity: BTreeMap<&str, f64> = BTreeMap::new();
    for t in &plan.types {
        let is_l4 = t.plan.gpu.is_mps();
        if t.plan.gpus.len() > MAX_GPUS {
            return Err(format!("{} GPUs of {}", t.plan.gpus.len(), t.plan.gpu.id));
        }
        for (gi, gpu) in t.plan.gpus.iter().enumerate() {
            let (mut mask, mut units, mut shares) = (0u16, 0u32, 0u32);
            for p in &gpu.placed {
                let seg = &p.segment;
                if is_l4 {
                    if !L_UNITS.contains(&seg.size) {
                        return Err(format!("L4 GPU {gi}: share {} is not one of {L_UNITS:?}", seg.size));
                    }
                    units += seg.size as u32;
                    shares += 1;
                } else {
                    let Some(&(_, slices, starts)) = A100.iter().find(|(g, _, _)| *g == seg.size) else {
                        return Err(format!("A100 GPU {gi}: size {}", seg.size));
                    };
                    let m = (((1u32 << slices) - 1) << p.start) as u16;
                    if !starts.contains(&p.start) || mask & m != 0 {
                        return Err(format!("A100 GPU {gi}: {}g at {} is illegal or overlaps", seg.size, p.start));
                    }
                    mask |= m;
                    units += seg.size as u32;
                }
                let svc = &plan.services[seg.service];
                let table = if is_l4 { &case.l } else { &case.a };
                let point = table.models[&svc.model]
                    .point(seg.size, seg.batch, seg.procs)
                    .ok_or_else(|| format!("{}: no point {} b{} x{} on {}", svc.name, seg.size, seg.batch, seg.procs, t.plan.gpu.id))?;
                if !admissible(point, svc.slo_ms) {
                    return Err(format!("{}: point {point:?} not admissible at {} ms", svc.name, svc.slo_ms));
                }
                let want = point.throughput * point.procs as f64;
                if (seg.capacity - want).abs() > 1e-9 * want {
                    return Err(format!("{}: capacity {} but the point gives {want}", svc.name, seg.capacity));
                }
                *capacity.entry(svc.name.as_str()).or_default() += seg.capacity;
            }
            if (is_l4 && (units > 10 || shares > MAX_SHARES)) || (!is_l4 && units > 7) {
                return Err(format!("{} GPU {gi} holds {units} units in {shares} shares", t.plan.gpu.id));
            }
        }
    }
    for svc in &case.services {
        let cap = capacity.get(svc.name.as_str()).copied().unwrap_or(0.0);
        if cap * (1.0 + 1e-9) < svc.rate {
            return Err(format!("{}: capacity {cap} below its rate {}", svc.name, svc.rate));
        }
    }
    if (plan.cost() - best).abs() > 1e-9 {
        return Err(format!("the plan costs {}/h, the oracle finds {best}/h", plan.cost()));
    }
    if !plan.proven_optimal || plan.lower_bound > best + 1e-6 {
        return Err(format!("an optimal plan not reported so: proven {} bound {}", plan.proven_optimal, plan.lower_bound));
    }
    Ok(())
}

fn table(model: &str, share_keyed: bool, points: Vec<ProfilePoint>) -> ModelProfile {
    ModelProfile { model: model.into(), share_keyed, points, extra_headers: Vec::new() }
}

type Gen = (f64, f64, Vec<ProfilePoint>, Vec<ProfilePoint>);

fn case_of(services: Vec<Gen>, cost_a: f64, cost_l: f64) -> Case {
    let (mut a, mut l) = (BTreeMap::new(), BTreeMap::new());
    let mut list = Vec::new();
    for (i, (rate, slo_ms, pa, pl)) in services.into_iter().enumerate() {
        let model = format!("m{i}");
        a.insert(model.clone(), table(&model, false, pa));
        l.insert(model.clone(), table(&model, true, pl));
        list.push(Service { name: format!("s{i}"), model, rate, slo_ms });
    }
    Case {
        services: list,
        a: ProfileSet { dir: "generated-a100".into(), models: a },
        l: ProfileSet { dir: "generated-l4".into(), models: l },
        cost_a,
        cost_l,
    }
}

fn pt(size: u8, batch: u32, procs: u32, throughput: f64, latency_s: f64) -> ProfilePoint {
    ProfilePoint { size, batch, procs, throughput, latency_s, extra: Vec::new() }
}

fn arb_points(sizes: &'static [u8]) -> impl Strategy<Value = Vec<ProfilePoint>> {
    let point = (prop::sample::select(sizes), prop::sample::select(vec![1u32, 4, 16]), 1u32..=3, 5.0f64..600.0, 1.0f64..200.0)
        .prop_map(|(size, batch, procs, tp, ms)| pt(size, batch, procs, (tp * 10.0).round() / 10.0, (ms * 10.0).round() / 1e4));
    prop::collection::vec(point, 1..6).prop_map(|mut pts| {
        let mut seen = BTreeSet::new();
        pts.retain(|p| seen.insert((p.size, p.batch, p.procs)));
        pts
    })
}

fn arb_case() -> impl Strategy<Value = Case> {
    let service = (1.0f64..900.0, 10.0f64..400.0, arb_points(&A_SIZES), arb_points(&L_UNITS))
        .prop_map(|(rate, slo, pa, pl)| ((rate * 10.0).round() / 10.0, slo.round(), pa, pl));
    (prop::collection::vec(service, 1..=3), prop::sample::select(vec![1.3, 2.25]), prop::sample::select(vec![0.4, 0.8, 1.1]))
        .prop_map(|(s, ca, cl)| case_of(s, ca, cl))
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48)
}

#[test]
fn the_geometry_written_out_here_is_the_catalogues() {
    let a100 = GpuType::by_id("a100-80gb").unwrap();
    for (g, slices, starts) in A100 {
        let p = a100.profile_for_size(g).unwrap();
        assert_eq!((p.mem_slices, p.starts), (slices, starts), "{}", p.name);
    }
    for u in L_UNITS {
        assert_eq!(l4().profile_for_size(u).unwrap().name, format!("mps-{}", u as u32 * 10));
    }
}

/// Hand-worked answers, so the oracle itself is right where the optimum is known.
#[test]
fn the_oracle_and_the_planner_agree_with_hand_worked_cases() {
    let (pa, pl) = (packable(&a_layouts()), packable(&l_layouts()));
    // s0: a 7g A100 segment of 1000/s or a whole L4 of 300/s; 900/s: one A100 (1.30) beats three
    // L4s (3 x 0.80). s1: only the L4 meets its SLO (its A100 point is too slow): one 20 % share.
    let c = case_of(
        vec![
            (900.0, 100.0, vec![pt(7, 8, 1, 1000.0, 0.01)], vec![pt(10, 8, 1, 300.0, 0.02)]),
            (50.0, 40.0, vec![pt(1, 1, 1, 100.0, 0.03)], vec![pt(2, 1, 1, 60.0, 0.01)]),
        ],
        1.3,
        0.8,
    );
    assert_eq!(oracle(&c, &pa, &pl), Some(2.1));
    let plan = plan_of(&c).unwrap();
    assert_eq!(check(&c, &plan, 2.1), Ok(()));
    let by_type: Vec<usize> = plan.types.iter().map(|t| t.plan.gpus.len()).collect();
    assert_eq!(by_type, [1, 1]);
    // The same with the A100 at 2.50: three L4s (2.40) are cheaper than one A100 plus one L4.
    let c = case_of(
        vec![
            (900.0, 100.0, vec![pt(7, 8, 1, 1000.0, 0.01)], vec![pt(10, 8, 1, 300.0, 0.02)]),
            (50.0, 40.0, vec![pt(1, 1, 1, 100.0, 0.03)], vec![pt(2, 1, 1, 60.0, 0.01)]),
        ],
        2.5,
        0.8,
    );
    // s0 takes 3 whole L4s, s1 a share: 4 L4 GPUs > 3 allowed, or A100 + L4 = 3.30.
    assert_eq!(oracle(&c, &pa, &pl), Some(3.3));
    // A check that cannot fail is no check: a plan priced wrong is refused.
    assert!(check(&c, &plan, 3.3).unwrap_err().contains("oracle finds 3.3"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// The fleet planner's plans agree with the oracle on random small cases.
    #[test]
    fn fleet_plans_agree_with_the_oracle(case in arb_case()) {
        let (pa, pl) = (packable(&a_layouts()), packable(&l_layouts()));
        let Some(best) = oracle(&case, &pa, &pl) else { return Ok(()) };
        let plan = plan_of(&case).map_err(|e| TestCaseError::fail(format!("plan refused: {e}")))?;
        prop_assert!(plan.infeasible.is_empty(), "{:?}", plan.infeasible);
        if let Err(e) = check(&case, &plan, best) {
            return Err(TestCaseError::fail(format!("{e}\ncase {case:?}")));
        }
    }
}
