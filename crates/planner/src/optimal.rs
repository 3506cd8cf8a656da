//! The optimal planner: fewest GPUs, then fewest GPCs, over every service's segment mix and every
//! legal MIG layout at once.
//!
//! A GPU's instances always fit one of the GPU type's *maximal layouts* (a legal layout to which no
//! instance can be added); only how many slots of each size a layout has matters for counting, so
//! the layouts reduce to a few *patterns* (A100: `7`, `4+3`, `4+2+1`, `3+3`, `3+2+2`, `2+2+2+1`,
//! `1x7`, ...). The joint integer program is
//!
//! ```text
//! minimise   Σ_p y_p                                (GPUs; then, at that count, Σ g·x_sg: GPCs)
//! subject to Σ_g cap_sg · x_sg >= rate_s            for every service s
//!            Σ_s x_sg <= Σ_p slots_pg · y_p         for every size g
//!            x_sg, y_p integers >= 0
//! ```
//!
//! with `x_sg` the number of size-`g` segments of service `s` (each with the service's best
//! admissible point of that size) and `y_p` the number of GPUs laid out as pattern `p`. HiGHS
//! solves it (one thread, node limits instead of time limits, so results are deterministic); the
//! exact per-service fewest-GPC covers, packed optimally, give its starting solution. Fleets larger
//! than [`JOINT_LIMIT`] services keep those covers and only the packing is optimised. The lower
//! bound reported is the larger of `ceil(Σ fewest GPCs / GPCs per GPU)` and the solver's bound.

use std::collections::BTreeMap;

use highs::{HighsModelStatus, HighsSolutionStatus, RowProblem, Sense};

use super::cover::{Cover, Options, min_cover};
use super::{GpuState, Plan, PlanError, PlanInput, SegmentChoice};
use parva_core::latency::LatencyModel;
use parva_core::mig::{GpuType, Placement};

/// Largest number of services solved as one joint program.
pub const JOINT_LIMIT: usize = 400;
/// Branch-and-bound node limit per solve (deterministic, unlike a time limit).
pub const NODE_LIMIT: i32 = 20_000;

/// A layout pattern: how many slots of each size a maximal layout offers, with one concrete layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    pub slots: BTreeMap<u8, u32>,
    pub layout: Vec<Placement>,
}

/// The non-dominated patterns of `gpu`'s maximal layouts, in a fixed order.
pub fn patterns(gpu: &GpuType) -> Vec<Pattern> {
    let mut out: Vec<Pattern> = Vec::new();
    for layout in gpu.maximal_layouts() {
        let mut slots = BTreeMap::new();
        for p in &layout {
            *slots.entry(p.profile.gpcs).or_insert(0) += 1;
        }
        if !out.iter().any(|o| o.slots == slots) {
            out.push(Pattern { slots, layout });
        }
    }
    let dominated = |a: &Pattern, b: &Pattern| {
        a.slots != b.slots && a.slots.iter().all(|(s, n)| b.slots.get(s).copied().unwrap_or(0) >= *n)
    };
    let keep: Vec<bool> = out.iter().map(|a| !out.iter().any(|b| dominated(a, b))).collect();
    out.into_iter().zip(keep).filter(|(_, k)| *k).map(|(p, _)| p).collect()
}

/// The result of the optimisation, before placement.
#[derive(Debug, Clone)]
pub(crate) struct Solution {
    /// Per service (feasible ones), segments per size.
    pub(crate) counts: Vec<BTreeMap<u8, u32>>,
    /// GPUs per pattern.
    pub(crate) gpus: Vec<u32>,
    pub(crate) proven: bool,
    pub(crate) bound: f64,
}

pub(super) fn plan(
    input: &PlanInput<'_>,
    model: &LatencyModel,
    opts: Vec<Result<Options, super::Infeasible>>,
) -> Result<Plan, PlanError> {
    let mut infeasible = Vec::new();
    let mut feasible: Vec<(usize, Options)> = Vec::new();
    for (si, o) in opts.into_iter().enumerate() {
        if input.services[si].rate == 0.0 {
            continue; // no traffic: nothing to plan (reported by the caller)
        }
        match o {
            Ok(o) => feasible.push((si, o)),
            Err(bad) => infeasible.push(bad),
        }
    }
    let pats = patterns(input.gpu);
    let covers: Vec<Cover> = feasible.iter().map(|(si, o)| min_cover(o, input.services[*si].rate)).collect();
    let per_service: Vec<(usize, u32)> = feasible.iter().zip(&covers).map(|((si, _), c)| (*si, c.gpcs)).collect();
    super::check_gpu_bound(input, &[], Some(&per_service))?;
    let gpcs_needed: u32 = covers.iter().map(|c| c.gpcs).sum();
    let simple_bound = gpcs_needed.div_ceil(input.gpu.gpcs as u32) as usize;

    let start = Solution {
        counts: covers.iter().map(|c| c.counts.clone()).collect(),
        gpus: pack_counts(&pats, &aggregate(covers.iter().map(|c| &c.counts)))?,
        proven: false,
        bound: 0.0,
    };
    let start_gpus = place(&pats, &start, &feasible);
    let solution = if feasible.len() <= JOINT_LIMIT && !feasible.is_empty() {
        solve_joint(input, &feasible, &pats, start.clone())
    } else {
        start.clone()
    };
    // The solver's solution must place; if it somehow does not, the covers packed exactly do.
    let (solution, gpus) = match place(&pats, &solution, &feasible) {
        Some(gpus) => (solution, gpus),
        None => {
            tracing::warn!("the joint solution does not fit its layouts; keeping the per-service covers");
            let gpus = start_gpus.ok_or_else(|| PlanError::Solver {
                task: "packing the per-service covers into MIG layouts".into(),
                detail: "the packing leaves a segment without a slot".into(),
            })?;
            (start, gpus)
        }
    };
    let used: u32 = solution.gpus.iter().sum();
    let lower = simple_bound.max((solution.bound - 1e-6).ceil().max(0.0) as usize);
    let mut plan = Plan {
        gpu: input.gpu,
        services: input.services.to_vec(),
        gpus,
        infeasible,
        gpus_per_node: input.options.gpus_per_node,
        algorithm: super::Algorithm::Optimal,
        latency_model: *model,
        plan_seconds: 0.0,
        notes: Vec::new(),
        lower_bound_gpus: Some(lower),
        proven_optimal: solution.proven || used as usize <= lower,
        zero_rate: Vec::new(),
        lower_bound_why: Some(format!(
            "the larger of the GPC volume bound (each service's cheapest cover needs {gpcs_needed} GPCs in all, \
             / {} per GPU = {simple_bound} GPUs) and the solver's bound on covers packed into legal layouts ({} GPUs)",
            input.gpu.gpcs,
            (solution.bound - 1e-6).ceil().max(0.0) as usize
        )),
        margin: parva_core::slo::Margin::NONE,
        data_path_ms: Default::default(),
    };
    plan.gpus.retain(|g| !g.is_empty());
    if !plan.proven_optimal {
        plan.notes.push(format!(
            "not proven optimal: {} GPUs against a lower bound of {lower} (gap {:.1} %)",
            plan.gpus.len(),
            100.0 * (plan.gpus.len() as f64 - lower as f64) / lower.max(1) as f64
        ));
    }
    Ok(plan)
}

pub(crate) fn aggregate<'a>(counts: impl Iterator<Item = &'a BTreeMap<u8, u32>>) -> BTreeMap<u8, u32> {
    let mut total = BTreeMap::new();
    for c in counts {
        for (s, n) in c {
            *total.entry(*s).or_insert(0) += n;
        }
    }
    total
}

/// A model with parva's deterministic settings; `None` when HiGHS refuses the problem or an
/// option (never a panic).
pub(crate) fn quiet(problem: RowProblem, sense: Sense) -> Option<highs::Model> {
    let mut m = problem.try_optimise(sense).ok()?;
    m.make_quiet();
    m.try_set_option("threads", 1).ok()?;
    m.try_set_option("mip_rel_gap", 0.0).ok()?;
    m.try_set_option("mip_abs_gap", 0.999).ok()?;
    m.try_set_option("mip_max_nodes", NODE_LIMIT).ok()?;
    m.try_set_option("random_seed", 0).ok()?;
    Some(m)
}

/// Fewest GPUs (patterns) offering at least `need` slots of each size.
pub(crate) fn pack_counts(pats: &[Pattern], need: &BTreeMap<u8, u32>) -> Result<Vec<u32>, PlanError> {
    let fail = |detail: String| PlanError::Solver {
        task: format!(
            "packing {} segments into MIG layouts",
            need.iter().map(|(s, n)| format!("{n} of {s} GPCs")).collect::<Vec<_>>().join(", ")
        ),
        detail,
    };
    let mut pb = RowProblem::default();
    let cols: Vec<_> = pats.iter().map(|_| pb.add_integer_column(1.0, 0..)).collect();
    for (size, n) in need {
        let row: Vec<_> = pats.iter().zip(&cols).filter_map(|(p, c)| p.slots.get(size).map(|k| (*c, *k as f64))).collect();
        pb.add_row(*n as f64.., row);
    }
    let model = quiet(pb, Sense::Minimise).ok_or_else(|| fail("HiGHS refused the problem".into()))?;
    let solved = model.try_solve().map_err(|e| fail(format!("{e:?}")))?;
    let gpus: Vec<u32> = solved.get_solution().columns().iter().map(|v| v.round().max(0.0) as u32).collect();
    for (size, n) in need {
        let have: u32 = pats.iter().zip(&gpus).map(|(p, g)| p.slots.get(size).copied().unwrap_or(0) * g).sum();
        if gpus.len() != pats.len() || have < *n {
            return Err(fail(format!("status {:?}: {have} slots of {size} GPCs for {n} segments", solved.status())));
        }
    }
    Ok(gpus)
}

/// The joint program: phase 1 fewest GPUs, phase 2 fewest GPCs at that GPU count.
fn solve_joint(input: &PlanInput<'_>, feasible: &[(usize, Options)], pats: &[Pattern], start: Solution) -> Solution {
    let phase1 = joint_model(input, feasible, pats, &start, None);
    let Some((sol1, proven, bound)) = phase1 else { return start };
    let gpus1: u32 = sol1.gpus.iter().sum();
    let warm = Solution { proven, bound, ..sol1 };
    match joint_model(input, feasible, pats, &warm, Some(gpus1)) {
        Some((sol2, _, _)) if sol2.gpus.iter().sum::<u32>() <= gpus1 => Solution { proven, bound, ..sol2 },
        _ => warm,
    }
}

/// Build and solve the joint model; with `gpu_cap`, minimise GPCs subject to at most that many GPUs.
fn joint_model(
    input: &PlanInput<'_>,
    feasible: &[(usize, Options)],
    pats: &[Pattern],
    warm: &Solution,
    gpu_cap: Option<u32>,
) -> Option<(Solution, bool, f64)> {
    let mut pb = RowProblem::default();
    let mut x_cols: Vec<Vec<(u8, highs::Col, f64)>> = Vec::with_capacity(feasible.len());
    let mut warm_values = Vec::new();
    let max_gpus = input.options.max_gpus as f64;
    for ((si, o), counts) in feasible.iter().zip(&warm.counts) {
        let rate = input.services[*si].rate;
        let mut cols = Vec::new();
        for (&size, seg) in &o.by_size {
            // No more segments than the rate needs or than max_gpus GPUs could hold.
            let upper = (rate / seg.capacity).ceil().min(max_gpus * input.gpu.gpcs as f64 / size as f64).max(1.0);
            let cost = if gpu_cap.is_some() { size as f64 } else { 0.0 };
            // Coverage row scaled by the rate, with each coefficient capped at 1 (one segment that
            // covers the whole rate is enough; for integer counts the row means the same), so the
            // row reads `Σ a x >= 1` with every a in (0, 1]: whatever the rates and throughputs,
            // the solver sees well-scaled numbers, and a tiny rate still needs a segment.
            let coef = (seg.capacity / rate).min(1.0);
            cols.push((size, pb.add_integer_column(cost, 0.0..=upper.floor().max(1.0)), coef));
            warm_values.push(counts.get(&size).copied().unwrap_or(0) as f64);
        }
        x_cols.push(cols);
    }
    let y_cols: Vec<_> = pats
        .iter()
        .map(|_| pb.add_integer_column(if gpu_cap.is_some() { 0.0 } else { 1.0 }, 0.0..=max_gpus))
        .collect();
    warm_values.extend(warm.gpus.iter().map(|&v| v as f64));
    for cols in &x_cols {
        pb.add_row(1.0.., cols.iter().map(|(_, c, coef)| (*c, *coef)).collect::<Vec<_>>());
    }
    for size in input.gpu.sizes() {
        let mut row: Vec<(highs::Col, f64)> =
            x_cols.iter().flatten().filter(|(s, _, _)| *s == size).map(|(_, c, _)| (*c, 1.0)).collect();
        if row.is_empty() {
            continue;
        }
        row.extend(pats.iter().zip(&y_cols).filter_map(|(p, c)| p.slots.get(&size).map(|k| (*c, -(*k as f64)))));
        pb.add_row(..=0.0, row);
    }
    if let Some(cap) = gpu_cap {
        pb.add_row(..=cap as f64, y_cols.iter().map(|c| (*c, 1.0)).collect::<Vec<_>>());
    }
    let Some(model) = quiet(pb, Sense::Minimise) else {
        tracing::warn!("HiGHS refused the joint planning model; keeping the per-service covers");
        return None;
    };
    let solved = solve_warm(model, &warm_values, "joint planning model", "per-service covers")?;
    let (values, bound) = (solved.values, solved.dual_bound);
    let status = solved.status;
    let mut counts = Vec::with_capacity(feasible.len());
    for cols in &x_cols {
        let mut m = BTreeMap::new();
        for (size, col, _) in cols {
            let n = values[col.index()].round().max(0.0) as u32;
            if n > 0 {
                m.insert(*size, n);
            }
        }
        counts.push(m);
    }
    let gpus: Vec<u32> = y_cols.iter().map(|c| values[c.index()].round().max(0.0) as u32).collect();
    // Guard against numerical slack: every service covered (with at least one segment, whatever
    // its rate), every segment has a slot (checked when placing).
    for ((si, o), c) in feasible.iter().zip(&counts) {
        let cap: f64 = c.iter().map(|(s, n)| o.by_size.get(s).map_or(0.0, |seg| seg.capacity) * *n as f64).sum();
        if c.is_empty() || cap * (1.0 + 1e-9) < input.services[*si].rate {
            return None;
        }
    }
    let proven = status == HighsModelStatus::Optimal;
    Some((Solution { counts, gpus, proven, bound: if gpu_cap.is_some() { 0.0 } else { bound } }, proven, bound))
}

/// What a solved model gives back: the column values, the status and the dual bound.
pub(crate) struct Solved {
    pub(crate) values: Vec<f64>,
    pub(crate) status: HighsModelStatus,
    pub(crate) dual_bound: f64,
}

/// Solve `model` from the warm start `warm`; `None` (logged, naming `what` and the `fallback`
/// kept instead) when HiGHS fails or finds no feasible solution.
pub(crate) fn solve_warm(mut model: highs::Model, warm: &[f64], what: &str, fallback: &str) -> Option<Solved> {
    let _ = model.try_set_solution(Some(warm), None, None, None);
    let solved = match model.try_solve() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(?e, "{what} failed; keeping the {fallback}");
            return None;
        }
    };
    let status = solved.status();
    if status != HighsModelStatus::Optimal && solved.primal_solution_status() != HighsSolutionStatus::Feasible {
        tracing::warn!(?status, "{what} not solved; keeping the {fallback}");
        return None;
    }
    let values = solved.get_solution().columns().to_vec();
    if values.is_empty() {
        return None;
    }
    let dual_bound = solved.double_info_value(c"mip_dual_bound").unwrap_or(0.0);
    Some(Solved { values, status, dual_bound })
}

/// Turn counts into GPUs with concrete placements: GPUs laid out per pattern, segments of each size
/// filling that size's slots in service order. `None` when some segment finds no slot.
pub(crate) fn place(pats: &[Pattern], sol: &Solution, feasible: &[(usize, Options)]) -> Option<Vec<GpuState>> {
    let mut slots: BTreeMap<u8, Vec<(usize, u8)>> = BTreeMap::new(); // size -> (gpu, start)
    let mut gpus = Vec::new();
    for (p, &n) in pats.iter().zip(&sol.gpus) {
        for _ in 0..n {
            for pl in &p.layout {
                slots.entry(pl.profile.gpcs).or_default().push((gpus.len(), pl.start));
            }
            gpus.push(GpuState::default());
        }
    }
    let mut next: BTreeMap<u8, usize> = BTreeMap::new();
    let mut sizes: Vec<u8> = sol.counts.iter().flat_map(|c| c.keys().copied()).collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    sizes.dedup();
    for size in sizes {
        for ((_, o), counts) in feasible.iter().zip(&sol.counts) {
            let Some(&n) = counts.get(&size) else { continue };
            let seg: &SegmentChoice = o.by_size.get(&size)?;
            for _ in 0..n {
                let i = next.entry(size).or_insert(0);
                let &(g, start) = slots.get(&size)?.get(*i)?;
                *i += 1;
                gpus[g].insert(start, seg.clone());
            }
        }
    }
    Some(gpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a100_patterns_are_the_known_ones() {
        let pats = patterns(GpuType::by_id("a100-80gb").unwrap());
        let mut names: Vec<String> = pats
            .iter()
            .map(|p| {
                let mut parts: Vec<String> = Vec::new();
                for (s, n) in p.slots.iter().rev() {
                    for _ in 0..*n {
                        parts.push(s.to_string());
                    }
                }
                parts.join("+")
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["1+1+1+1+1+1+1", "2+1+1+1+1+1", "2+2+1+1+1", "2+2+2+1", "3+1+1+1+1", "3+2+1+1", "3+2+2", "3+3", "4+1+1+1", "4+2+1", "4+3", "7"]
        );
        let a30 = patterns(GpuType::by_id("a30-24gb").unwrap());
        assert_eq!(a30.len(), 4, "{a30:?}"); // 4, 2+2, 2+1+1, 1+1+1+1
    }

    #[test]
    fn packing_prefers_pairing_4g_with_3g() {
        let pats = patterns(GpuType::by_id("a100-80gb").unwrap());
        let need: BTreeMap<u8, u32> = [(4, 2), (3, 2)].into_iter().collect();
        assert_eq!(pack_counts(&pats, &need).unwrap().iter().sum::<u32>(), 2);
        let need: BTreeMap<u8, u32> = [(3, 3)].into_iter().collect();
        assert_eq!(pack_counts(&pats, &need).unwrap().iter().sum::<u32>(), 2);
        let need: BTreeMap<u8, u32> = [(7, 1), (1, 8)].into_iter().collect();
        assert_eq!(pack_counts(&pats, &need).unwrap().iter().sum::<u32>(), 3);
    }
}
