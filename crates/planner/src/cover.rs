//! Per-service segment options and the exact fewest-GPC cover of one service's rate.

use std::collections::BTreeMap;

use super::{Infeasible, PlanInput, SegmentChoice};
use parva_core::latency::LatencyModel;
use parva_core::slo::Service;

/// The best segment of each instance size a service may use (highest planned capacity).
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub by_size: BTreeMap<u8, SegmentChoice>,
}

/// For every service, its best admissible segment per size, or why it has none. Services with the
/// same model and SLO share the work; distinct ones are evaluated in parallel (the result does not
/// depend on the number of threads).
pub fn options(input: &PlanInput<'_>, model: &LatencyModel) -> Vec<Result<Options, Infeasible>> {
    use rayon::prelude::*;
    let mut keys: BTreeMap<(&str, u64), usize> = BTreeMap::new();
    let mut first: Vec<usize> = Vec::new();
    let key_of: Vec<usize> = input
        .services
        .iter()
        .enumerate()
        .map(|(si, s)| {
            *keys.entry((s.model.as_str(), s.slo_ms.to_bits())).or_insert_with(|| {
                first.push(si);
                first.len() - 1
            })
        })
        .collect();
    let shared: Vec<Result<Options, Infeasible>> =
        first.par_iter().map(|&si| service_options(input, model, si, &input.services[si])).collect();
    input
        .services
        .iter()
        .enumerate()
        .map(|(si, svc)| match &shared[key_of[si]] {
            Ok(o) => Ok(Options {
                by_size: o.by_size.iter().map(|(s, c)| (*s, SegmentChoice { service: si, ..c.clone() })).collect(),
            }),
            Err(bad) => Err(Infeasible { service: svc.name.clone(), ..bad.clone() }),
        })
        .collect()
}

fn service_options(input: &PlanInput<'_>, model: &LatencyModel, si: usize, svc: &Service) -> Result<Options, Infeasible> {
    let Some(profile) = input.profiles.get(&svc.model) else {
        return Err(Infeasible {
            service: svc.name.clone(),
            model: svc.model.clone(),
            reason: format!("model {} has no profile table", svc.model),
        });
    };
    // Capacity never exceeds a point's profiled throughput, so within a size, points are tried in
    // order of profiled throughput and the search stops once no remaining point can do better.
    // A segment's processes must fit in its instance's (or MPS share's) memory, when the table
    // says how much a process takes (its `mem_mib` column).
    let mut too_big = 0usize;
    let fits_memory = |p: &parva_core::ProfilePoint| input.gpu.profile_for_size(p.size).is_some_and(|inst| profile.point_fits(p, inst));
    let mut points: Vec<_> = profile
        .points
        .iter()
        .filter(|p| p.is_measured() && p.procs <= input.options.max_procs && input.gpu.profile_for_size(p.size).is_some())
        .filter(|p| {
            let fits = fits_memory(p);
            too_big += usize::from(!fits);
            fits
        })
        .collect();
    points.sort_by(|a, b| {
        a.size
            .cmp(&b.size)
            .then(b.segment_throughput().total_cmp(&a.segment_throughput()))
            .then((a.batch, a.procs).cmp(&(b.batch, b.procs)))
    });
    // However the service is covered, its processes number at least rate / (the most any one
    // process can take): the router gives each of them every n-th request, n at least that.
    let per_proc_max = points.iter().map(|p| p.segment_throughput() / p.procs.max(1) as f64).fold(0.0, f64::max);
    let splits = if per_proc_max > 0.0 { (svc.rate / per_proc_max).floor().clamp(1.0, f64::from(u32::MAX)) as u32 } else { 1 };
    let mut by_size: BTreeMap<u8, SegmentChoice> = BTreeMap::new();
    let mut curves: BTreeMap<(u8, u32), Vec<(u32, f64)>> = BTreeMap::new();
    for p in points {
        if by_size.get(&p.size).is_some_and(|b| p.segment_throughput() <= b.capacity) {
            continue;
        }
        let curve = curves.entry((p.size, p.procs)).or_insert_with(|| profile.latency_curve(p.size, p.procs));
        let Some(capacity) = model.capacity_on_curve(curve, p, svc.slo_ms, splits) else { continue };
        let seg = SegmentChoice { capacity, ..SegmentChoice::from_point(si, p) };
        if by_size.get(&p.size).is_none_or(|b| capacity > b.capacity) {
            by_size.insert(p.size, seg);
        }
    }
    if by_size.is_empty() {
        let mut bad = super::infeasible_with(profile, svc, input, model);
        if too_big > 0 {
            bad.reason.push_str(&format!(
                "; {too_big} profiled point(s) left out because their processes need more memory than their {} has",
                if input.gpu.is_mps() { "share" } else { "instance" }
            ));
        }
        return Err(bad);
    }
    Ok(Options { by_size })
}


/// Segment counts per size covering a rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Cover {
    pub counts: BTreeMap<u8, u32>,
    pub gpcs: u32,
    pub capacity: f64,
}

/// The exact fewest-GPC cover of `rate` with the service's options (ties: more capacity, then
/// fewer segments). With `e` the size of best capacity per GPC, some optimal cover uses fewer than
/// `e` segments of every other size (exchange `e` of them for as many GPCs of size `e`), so the
/// other sizes take at most `B = Σ (e - 1) · size` GPCs together. A knapsack over those `B` GPCs
/// finds, for every exact GPC total of the other sizes, the most capacity (then the fewest
/// segments); size `e` fills the rest. `O(B · sizes)`: a few thousand steps even for the ten
/// sizes of an MPS-share GPU (where enumerating the counts would take `e^9`).
pub fn min_cover(opts: &Options, rate: f64) -> Cover {
    let sizes: Vec<(u8, f64)> = opts.by_size.iter().map(|(&s, c)| (s, c.capacity)).collect();
    let (e_idx, &(e_size, e_cap)) = sizes
        .iter()
        .enumerate()
        .max_by(|a, b| (a.1.1 / a.1.0 as f64).total_cmp(&(b.1.1 / b.1.0 as f64)).then(b.1.0.cmp(&a.1.0)))
        .expect("options are never empty");
    let others: Vec<(u8, f64)> = sizes.iter().enumerate().filter(|(i, _)| *i != e_idx).map(|(_, s)| *s).collect();
    let bound: usize = others.iter().map(|(s, _)| (e_size as usize).saturating_sub(1) * *s as usize).sum();
    // best[g]: (capacity, segments, the size added last) of the best mix of other sizes taking
    // exactly g GPCs.
    let mut best: Vec<Option<(f64, u32, usize)>> = vec![None; bound + 1];
    best[0] = Some((0.0, 0, usize::MAX));
    for g in 1..=bound {
        for (i, &(s, c)) in others.iter().enumerate() {
            let Some(rest) = g.checked_sub(s as usize) else { continue };
            let Some((cap, segs, _)) = best[rest] else { continue };
            let cand = (cap + c, segs + 1, i);
            let better = match best[g] {
                None => true,
                Some((bc, bs, _)) => cand.0 > bc + 1e-9 || ((cand.0 - bc).abs() <= 1e-9 && cand.1 < bs),
            };
            if better {
                best[g] = Some(cand);
            }
        }
    }
    let mut chosen: Option<(Cover, u32, usize)> = None;
    for (g, entry) in best.iter().enumerate() {
        let Some((cap_o, segs_o, _)) = *entry else { continue };
        let need = ((rate - cap_o) / e_cap).ceil().max(0.0) as u32;
        let cap = cap_o + need as f64 * e_cap;
        let gpcs = g as u32 + need * e_size as u32;
        let segs = segs_o + need;
        let better = match &chosen {
            None => true,
            Some((b, bsegs, _)) => {
                gpcs < b.gpcs || (gpcs == b.gpcs && (cap > b.capacity + 1e-9 || ((cap - b.capacity).abs() <= 1e-9 && segs < *bsegs)))
            }
        };
        if better {
            let mut counts = BTreeMap::new();
            if need > 0 {
                counts.insert(e_size, need);
            }
            chosen = Some((Cover { counts, gpcs, capacity: cap }, segs, g));
        }
    }
    let (mut cover, _, mut g) = chosen.expect("best[0] is always set");
    // Walk the knapsack back to the other sizes' counts.
    while g > 0 {
        let Some((_, _, i)) = best[g] else { break };
        let (s, _) = others[i];
        *cover.counts.entry(s).or_insert(0) += 1;
        g -= s as usize;
    }
    cover
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(caps: &[(u8, f64)]) -> Options {
        Options {
            by_size: caps
                .iter()
                .map(|&(size, capacity)| {
                    (size, SegmentChoice { service: 0, size, batch: 1, procs: 1, capacity, latency_s: 0.01 })
                })
                .collect(),
        }
    }

    /// Independent exact answer: the largest capacity that fits in a budget of G GPCs is an
    /// unbounded knapsack over integer sizes; the answer is the smallest G whose best reaches the rate.
    fn brute(o: &Options, rate: f64) -> u32 {
        let sizes: Vec<(usize, f64)> = o.by_size.iter().map(|(&s, c)| (s as usize, c.capacity)).collect();
        let mut best = vec![0.0f64; 1];
        loop {
            let g = best.len();
            let here = sizes.iter().filter(|(s, _)| *s <= g).map(|(s, c)| best[g - s] + c).fold(0.0, f64::max);
            best.push(here.max(best[g - 1]));
            if best[g] >= rate {
                return g as u32;
            }
        }
    }

    #[test]
    fn min_cover_matches_exact_knapsack() {
        let cases = [
            opts(&[(1, 100.0), (2, 230.0), (3, 330.0), (4, 420.0), (7, 800.0)]),
            opts(&[(1, 90.0), (2, 150.0), (3, 310.0), (7, 640.0)]),
            opts(&[(2, 50.0), (4, 130.0)]),
            opts(&[(1, 10.0)]),
            // Regression: the ten sizes of an MPS-share GPU (10 % .. 100 %) made the old
            // enumeration of counts take e^9 steps (a `plan --gpu-type l4-24gb` ran for minutes).
            opts(&[(1, 40.0), (2, 95.0), (3, 150.0), (4, 190.0), (5, 260.0), (6, 300.0), (7, 340.0), (8, 420.0), (9, 430.0), (10, 470.0)]),
            opts(&[(1, 12.0), (2, 30.0), (3, 41.0), (4, 58.0), (5, 70.0), (6, 88.0), (7, 99.0), (8, 130.0), (9, 131.0), (10, 140.0)]),
        ];
        for o in &cases {
            for rate in [1.0, 55.0, 99.0, 100.0, 101.0, 333.0, 777.0, 1000.0, 1234.5, 2100.0] {
                let c = min_cover(o, rate);
                assert!(c.capacity >= rate, "{rate}: {c:?}");
                let total: u32 = c.counts.iter().map(|(s, n)| *s as u32 * n).sum();
                assert_eq!(total, c.gpcs);
                let cap: f64 = c.counts.iter().map(|(s, n)| o.by_size[s].capacity * *n as f64).sum();
                assert!((cap - c.capacity).abs() < 1e-6, "{c:?}");
                assert_eq!(c.gpcs, brute(o, rate), "rate {rate} with {o:?}");
            }
        }
    }

    /// Issue 17: on every MPS type, a segment's processes must fit its share's memory (the table's
    /// `mem_mib` x processes <= the share's GB): the same point is usable on a share with room
    /// and left out on one without; with no such point at all the service is infeasible, and
    /// the reason says memory.
    #[test]
    fn a_segment_must_fit_its_shares_memory_on_every_mps_type() {
        use crate::{PlanInput, PlanOptions};
        use parva_core::latency::LatencyModel;
        use parva_core::profile::{ModelProfile, ProfileSet};
        use parva_core::slo::Service;
        for gpu in parva_core::mig::catalogue().into_iter().filter(|g| g.is_mps()) {
            let whole_mib = gpu.profile_for_size(10).unwrap().mem_mib();
            // One process takes 30 % of the GPU's memory: it fits a 40 % share, not a 20 % one;
            // two processes need 60 %.
            let mib = (0.3 * whole_mib).round();
            let text = format!("MPS share,Batch size,Workload Number,Throughput,Latency,mem_mib\n20,1,1,100,0.01,{mib}\n40,1,1,150,0.01,{mib}\n40,1,2,90,0.012,{mib}\n");
            let t = ModelProfile::read_from(text.as_bytes(), std::path::Path::new("m.csv"), "m".into(), Some(gpu)).unwrap();
            let profiles = ProfileSet { dir: "mem".into(), models: [("m".to_string(), t)].into_iter().collect() };
            let services = [Service { name: "s".into(), model: "m".into(), rate: 50.0, slo_ms: 100.0 }];
            let options = PlanOptions::default();
            let model = LatencyModel::ParvaGpu { budget: 0.45 };
            let input = PlanInput { gpu, profiles: &profiles, services: &services, options: &options };
            let o = super::options(&input, &model);
            let by_size = &o[0].as_ref().unwrap().by_size;
            assert_eq!(by_size.keys().copied().collect::<Vec<_>>(), [4], "{}: only the 40 % share has room", gpu.id);
            assert_eq!(by_size[&4].procs, 1, "{}: two processes need 60 % of the memory", gpu.id);
            // Every point too big: infeasible, for memory.
            let big = format!("MPS share,Batch size,Workload Number,Throughput,Latency,mem_mib\n20,1,1,100,0.01,{}\n", whole_mib * 2.0);
            let t = ModelProfile::read_from(big.as_bytes(), std::path::Path::new("m.csv"), "m".into(), Some(gpu)).unwrap();
            let profiles = ProfileSet { dir: "mem".into(), models: [("m".to_string(), t)].into_iter().collect() };
            let input = PlanInput { profiles: &profiles, ..input };
            let e = super::options(&input, &model).remove(0).unwrap_err();
            assert!(e.reason.contains("more memory than their share has"), "{}: {}", gpu.id, e.reason);
        }
    }
}
