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
    let mut points: Vec<_> = profile
        .points
        .iter()
        .filter(|p| p.is_measured() && p.procs <= input.options.max_procs && input.gpu.profile_for_size(p.size).is_some())
        .collect();
    points.sort_by(|a, b| {
        a.size
            .cmp(&b.size)
            .then(b.segment_throughput().total_cmp(&a.segment_throughput()))
            .then((a.batch, a.procs).cmp(&(b.batch, b.procs)))
    });
    let mut by_size: BTreeMap<u8, SegmentChoice> = BTreeMap::new();
    let mut curves: BTreeMap<(u8, u32), Vec<(u32, f64)>> = BTreeMap::new();
    for p in points {
        if by_size.get(&p.size).is_some_and(|b| p.segment_throughput() <= b.capacity) {
            continue;
        }
        let curve = curves.entry((p.size, p.procs)).or_insert_with(|| profile.latency_curve(p.size, p.procs));
        let Some(capacity) = model.capacity_on_curve(curve, p, svc.slo_ms) else { continue };
        let seg = SegmentChoice { capacity, ..SegmentChoice::from_point(si, p) };
        if by_size.get(&p.size).is_none_or(|b| capacity > b.capacity) {
            by_size.insert(p.size, seg);
        }
    }
    if by_size.is_empty() {
        return Err(super::infeasible_with(profile, svc, input, model));
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
/// search enumerates those counts and fills the rest with size `e`.
pub fn min_cover(opts: &Options, rate: f64) -> Cover {
    let sizes: Vec<(u8, f64)> = opts.by_size.iter().map(|(&s, c)| (s, c.capacity)).collect();
    let (e_idx, &(e_size, e_cap)) = sizes
        .iter()
        .enumerate()
        .max_by(|a, b| (a.1.1 / a.1.0 as f64).total_cmp(&(b.1.1 / b.1.0 as f64)).then(b.1.0.cmp(&a.1.0)))
        .expect("options are never empty");
    let others: Vec<(u8, f64)> = sizes.iter().enumerate().filter(|(i, _)| *i != e_idx).map(|(_, s)| *s).collect();
    let limit = e_size as u32; // counts 0..e_size for each other size
    let mut best: Option<Cover> = None;
    let mut counts = vec![0u32; others.len()];
    loop {
        let mut cap: f64 = others.iter().zip(&counts).map(|((_, c), &n)| c * n as f64).sum();
        let mut gpcs: u32 = others.iter().zip(&counts).map(|((s, _), &n)| *s as u32 * n).sum();
        let need = ((rate - cap) / e_cap).ceil().max(0.0) as u32;
        cap += need as f64 * e_cap;
        gpcs += need * e_size as u32;
        let segs = need + counts.iter().sum::<u32>();
        let better = match &best {
            None => true,
            Some(b) => {
                let bsegs: u32 = b.counts.values().sum();
                gpcs < b.gpcs || (gpcs == b.gpcs && (cap > b.capacity + 1e-9 || ((cap - b.capacity).abs() <= 1e-9 && segs < bsegs)))
            }
        };
        if better {
            let mut m: BTreeMap<u8, u32> = others.iter().zip(&counts).filter(|(_, n)| **n > 0).map(|((s, _), n)| (*s, *n)).collect();
            if need > 0 {
                m.insert(e_size, need);
            }
            best = Some(Cover { counts: m, gpcs, capacity: cap });
        }
        // Next combination (odometer over 0..limit for each other size).
        let mut i = 0;
        loop {
            if i == counts.len() {
                return best.expect("at least one combination is evaluated");
            }
            counts[i] += 1;
            if counts[i] < limit {
                break;
            }
            counts[i] = 0;
            i += 1;
        }
    }
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
        ];
        for o in &cases {
            for rate in [1.0, 55.0, 99.0, 100.0, 101.0, 333.0, 777.0, 1000.0, 1234.5, 2100.0] {
                let c = min_cover(o, rate);
                assert!(c.capacity >= rate, "{rate}: {c:?}");
                let total: u32 = c.counts.iter().map(|(s, n)| *s as u32 * n).sum();
                assert_eq!(total, c.gpcs);
                assert_eq!(c.gpcs, brute(o, rate), "rate {rate} with {o:?}");
            }
        }
    }
}
