//! ParvaGPU's planner (Lee et al., SC'24), re-implemented from its published description and
//! artifact, with one deliberate change: every placement is a legal MIG placement.
//!
//! 1. Optimal Triplet Decision: per service, among admissible points (batch latency <
//!    budget x SLO, at most `max_procs` processes), take the one with the highest segment
//!    throughput per GPC; also remember the best point of every instance size.
//! 2. Demand Matching: `n = floor(rate / capacity)` segments of the optimal point (one fewer when
//!    the division is exact), then one segment of the smallest size whose best point covers the
//!    remaining rate.
//! 3. Segment Relocation: place segments largest size first (7, 4, 3, 2, 1; first come first
//!    served within a size), each on the GPU it fits best (fewest GPCs left over; lowest index on
//!    ties), opening a new GPU when none fits.
//! 4. Allocation Optimization: from the last GPU to the first, every GPU using at most 4 of 7
//!    GPCs has its segments taken off one by one (in placement order) and their rate re-covered
//!    by 2g/1g segments (2g ones first when a 2g point beats two 1g points), which are placed again
//!    by best fit. A rate surplus from rounding up is credited to the service's next re-cover.
//!
//! Where the published code differs from the description or loses capacity, this follows the
//! description: a segment whose service has no 1g or 2g point is left where it is (the published
//! code drops it), and a re-placed segment keeps the throughput of its own point.
//!
//! The published allocator tracks placements by start index only, so its maps overlap on memory
//! slices (e.g. a 1g at slice 1 beside a 2g at slice 0, or a 1g at slice 6 inside a 3g at 4). Here a
//! segment goes only where the catalogue says it fits, else to another GPU. [`Fit::AsPublished`]
//! reproduces the published bookkeeping, so that a plan can report whether legality cost GPUs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{GpuState, Infeasible, Plan, PlanInput, SegmentChoice, admissible_points, infeasible};
use parva_core::mig::GpuType;

/// How segments are fitted onto GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Only legal, non-overlapping MIG placements (what parva emits).
    Legal,
    /// The published allocator's bookkeeping: a start is free when no instance starts there.
    AsPublished,
}

/// What Optimal Triplet Decision and Demand Matching chose for one service.
#[derive(Debug, Clone)]
struct Configuration {
    optimal: SegmentChoice,
    optimal_count: usize,
    last: SegmentChoice,
    best_of_size: BTreeMap<u8, SegmentChoice>,
}

pub(super) fn plan(input: &PlanInput<'_>) -> Plan {
    let legal = plan_with(input, Fit::Legal);
    let published = plan_with(input, Fit::AsPublished);
    let mut plan = legal;
    let (n_legal, n_pub) = (used(&plan.gpus), used(&published.gpus));
    if n_legal != n_pub {
        plan.notes.push(format!(
            "legal MIG placement changed the GPU count: {n_legal} GPUs here, {n_pub} with the published \
             allocator's overlapping placements"
        ));
    }
    plan
}

fn used(gpus: &[GpuState]) -> usize {
    gpus.iter().filter(|g| !g.is_empty()).count()
}

/// Run the planner with the given fitting rule.
pub fn plan_with(input: &PlanInput<'_>, fit: Fit) -> Plan {
    let (configs, infeasible) = configure(input);
    let mut packer = Packer { gpu: input.gpu, fit, gpus: Vec::new(), fits: BTreeMap::new(), entries: Vec::new() };
    // Segment Relocation: queue per size, served largest first.
    let mut sizes = input.gpu.sizes();
    sizes.reverse();
    let mut queues: BTreeMap<u8, VecDeque<SegmentChoice>> = sizes.iter().map(|&s| (s, VecDeque::new())).collect();
    for c in configs.iter().flatten() {
        for _ in 0..c.optimal_count {
            queues.entry(c.optimal.size).or_default().push_back(c.optimal.clone());
        }
        queues.entry(c.last.size).or_default().push_back(c.last.clone());
    }
    for size in &sizes {
        while let Some(seg) = queues.get_mut(size).and_then(VecDeque::pop_front) {
            packer.place(seg);
        }
    }
    optimize(&mut packer, &configs, input.services.len());
    Plan {
        gpu: input.gpu,
        services: input.services.to_vec(),
        gpus: packer.gpus,
        infeasible,
        gpus_per_node: input.options.gpus_per_node,
        algorithm: super::Algorithm::ParvaGpu,
        latency_model: parva_core::latency::LatencyModel::ParvaGpu { budget: input.options.latency_budget },
        plan_seconds: 0.0,
        notes: Vec::new(),
        lower_bound_gpus: None,
        proven_optimal: false,
        zero_rate: Vec::new(),
        lower_bound_why: None,
        margin: parva_core::slo::Margin::NONE,
        data_path_ms: Default::default(),
    }
}

/// Optimal Triplet Decision and Demand Matching for every service.
fn configure(input: &PlanInput<'_>) -> (Vec<Option<Configuration>>, Vec<Infeasible>) {
    let mut configs = Vec::with_capacity(input.services.len());
    let mut bad = Vec::new();
    for (si, svc) in input.services.iter().enumerate() {
        if svc.rate == 0.0 {
            configs.push(None); // no traffic: nothing to plan (reported by the caller)
            continue;
        }
        let Some(profile) = input.profiles.get(&svc.model) else {
            bad.push(Infeasible {
                service: svc.name.clone(),
                model: svc.model.clone(),
                reason: format!("model {} has no profile table", svc.model),
            });
            configs.push(None);
            continue;
        };
        let points = admissible_points(profile, svc, input.gpu, input.options);
        let mut optimal: Option<SegmentChoice> = None;
        let mut best_of_size: BTreeMap<u8, SegmentChoice> = BTreeMap::new();
        for p in points {
            let seg = SegmentChoice::from_point(si, p);
            let per_gpc = seg.capacity / seg.size as f64;
            // Strict comparisons in grid order, as published: the first of equal points wins.
            if optimal.as_ref().is_none_or(|o| per_gpc > o.capacity / o.size as f64) {
                optimal = Some(seg.clone());
            }
            if best_of_size.get(&seg.size).is_none_or(|b| seg.capacity > b.capacity) {
                best_of_size.insert(seg.size, seg);
            }
        }
        let Some(optimal) = optimal else {
            bad.push(infeasible(profile, svc, input.gpu, input.options));
            configs.push(None);
            continue;
        };
        let mut optimal_count = (svc.rate / optimal.capacity).floor() as usize;
        if svc.rate % optimal.capacity == 0.0 {
            optimal_count = optimal_count.saturating_sub(1);
        }
        let residual = svc.rate - optimal.capacity * optimal_count as f64;
        let last = best_of_size
            .values()
            .find(|b| residual <= b.capacity)
            .cloned()
            .unwrap_or_else(|| optimal.clone());
        configs.push(Some(Configuration { optimal, optimal_count, last, best_of_size }));
    }
    (configs, bad)
}

/// Allocation Optimization: split the segments of lightly used GPUs into 2g/1g ones.
fn optimize(packer: &mut Packer, configs: &[Option<Configuration>], services: usize) {
    let threshold = packer.gpu.gpcs * 4 / 7;
    let mut credit = vec![0.0f64; services];
    for i in (0..packer.gpus.len()).rev() {
        if packer.gpus[i].used_gpcs() > threshold {
            continue;
        }
        for start in 0..packer.gpu.mem_slices {
            let Some(pos) = packer.gpus[i].placed.iter().position(|p| p.start == start) else { continue };
            let seg = packer.gpus[i].placed[pos].segment.clone();
            let Some(cfg) = configs[seg.service].as_ref() else { continue };
            let one = cfg.best_of_size.get(&1);
            let two = cfg.best_of_size.get(&2);
            if one.is_none() && two.is_none() {
                continue; // nothing smaller to re-cover with: leave the segment where it is
            }
            packer.gpus[i].placed.remove(pos);
            packer.refresh(i);
            credit[seg.service] += seg.capacity;
            let need = credit[seg.service];
            let mut cover: Vec<SegmentChoice> = Vec::new();
            match (two, one) {
                (Some(two), Some(one)) if two.capacity / 2.0 > one.capacity => {
                    let n2 = (need / two.capacity).floor().max(0.0) as usize;
                    cover.extend(std::iter::repeat_n(two.clone(), n2));
                    let rest = need - n2 as f64 * two.capacity;
                    cover.extend(std::iter::repeat_n(one.clone(), (rest / one.capacity).ceil().max(0.0) as usize));
                }
                (_, Some(one)) => {
                    cover.extend(std::iter::repeat_n(one.clone(), (need / one.capacity).ceil().max(0.0) as usize));
                }
                (Some(two), None) => {
                    cover.extend(std::iter::repeat_n(two.clone(), (need / two.capacity).ceil().max(0.0) as usize));
                }
                (None, None) => unreachable!("checked above"),
            }
            credit[seg.service] -= cover.iter().map(|c| c.capacity).sum::<f64>();
            // Dequeue order: 2g segments before 1g ones.
            cover.sort_by_key(|c| std::cmp::Reverse(c.size));
            for c in cover {
                packer.place(c);
            }
        }
    }
}

struct Packer {
    gpu: &'static GpuType,
    fit: Fit,
    gpus: Vec<GpuState>,
    /// Per instance size, the GPUs it fits on now as (GPCs left after it, GPU index, start): the
    /// first entry is the best fit (fewest GPCs left over, lowest index on ties), found in
    /// O(log n) instead of a scan of every GPU, so plans of thousands of GPUs stay fast.
    fits: BTreeMap<u8, BTreeSet<(u8, usize, u8)>>,
    /// Per GPU, its entries in `fits`, to remove when it changes.
    entries: Vec<Vec<(u8, (u8, usize, u8))>>,
}

impl Packer {
    /// Best fit: the GPU left with the fewest free GPCs, lowest index on ties; a new GPU if none.
    fn place(&mut self, seg: SegmentChoice) {
        let best = self.fits.get(&seg.size).and_then(|f| f.first().copied());
        let (i, start) = match best {
            Some((_, i, start)) => (i, start),
            None => {
                let fresh = GpuState::default();
                let start = self.start_on(&fresh, seg.size).unwrap_or(0);
                self.gpus.push(fresh);
                self.entries.push(Vec::new());
                (self.gpus.len() - 1, start)
            }
        };
        self.gpus[i].insert(start, seg);
        self.refresh(i);
    }

    /// Recompute where GPU `i` can take an instance of each size, after it changed.
    fn refresh(&mut self, i: usize) {
        for (size, key) in std::mem::take(&mut self.entries[i]) {
            if let Some(f) = self.fits.get_mut(&size) {
                f.remove(&key);
            }
        }
        let free = self.gpu.gpcs - self.gpus[i].used_gpcs();
        for size in self.gpu.sizes() {
            if size > free {
                continue;
            }
            if let Some(start) = self.start_on(&self.gpus[i], size) {
                let key = (free - size, i, start);
                self.fits.entry(size).or_default().insert(key);
                self.entries[i].push((size, key));
            }
        }
    }

    fn start_on(&self, g: &GpuState, size: u8) -> Option<u8> {
        let prefs = preferred_starts(self.gpu, size);
        match self.fit {
            Fit::Legal => g.free_start(self.gpu, size, prefs),
            Fit::AsPublished => {
                let taken = |s: u8| g.placed.iter().any(|p| p.start == s);
                let three_at = |s: u8| g.placed.iter().any(|p| p.start == s && p.segment.size == 3);
                if g.used_gpcs() + size > self.gpu.gpcs
                    || (size == 3 && three_at(4))
                    || (size == 1 && three_at(0) && three_at(4))
                {
                    return None;
                }
                let starts: Vec<u8> = if prefs.is_empty() {
                    super::gpus::profile(self.gpu, size).starts.to_vec()
                } else {
                    prefs.to_vec()
                };
                starts.into_iter().find(|&s| !taken(s))
            }
        }
    }
}

/// The order in which the published allocator tries starts on a 7-GPC, 8-slice GPU. Other GPU
/// types try their legal starts in ascending order.
fn preferred_starts(gpu: &GpuType, size: u8) -> &'static [u8] {
    if gpu.gpcs != 7 || gpu.mem_slices != 8 {
        return &[];
    }
    match size {
        7 | 4 => &[0],
        3 => &[4],
        2 => &[0, 4, 2],
        1 => &[0, 6, 4, 1, 2, 3, 5],
        _ => &[],
    }
}
