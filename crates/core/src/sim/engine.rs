//! The event loop of the simulator.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use hdrhistogram::Histogram;

use super::{Distribution, ServiceResult, SimConfig, SimError, SimReport};
use crate::batching::{ArrivalRate, BatchPolicy};
use crate::deploy::DeploymentMap;
use crate::profile::ProfileSet;

/// One worker process.
struct Proc {
    policy: BatchPolicy,
    /// `exec[k]` = latency of a batch of k requests (index 0 unused).
    exec: Vec<f64>,
    queue: VecDeque<f64>,
    /// Its arrival rate, measured as the router measures it, and the keep-up batch at that rate.
    rate: ArrivalRate,
    keep_up: usize,
    running: Vec<f64>,
    busy: bool,
    /// Timers carry the generation they were set in; a later dispatch or arrival invalidates them.
    generation: u64,
    service: usize,
}

struct Svc {
    name: String,
    model: String,
    rate: f64,
    slo: f64,
    /// Seconds every request spends on the data path (added to its latency).
    data_path: f64,
    segments: usize,
    /// (process index, weight, current) for smooth weighted round-robin.
    wrr: Vec<(usize, f64, f64)>,
    rng: SplitMix64,
    hist: Histogram<u64>,
    within: u64,
    counted: u64,
    /// Requests completed inside the measured window (throughput).
    served: u64,
}

pub(super) struct Model {
    procs: Vec<Proc>,
    svcs: Vec<Svc>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ev {
    Arrival(usize),
    Timer(usize, u64),
    Done(usize),
}

struct Event {
    at: f64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Event {
    /// Reversed: the heap pops the earliest event (then the earliest scheduled).
    fn cmp(&self, o: &Self) -> Ordering {
        o.at.total_cmp(&self.at).then(o.seq.cmp(&self.seq))
    }
}

impl Model {
    pub(super) fn build<'p>(
        map: &DeploymentMap,
        profiles: &dyn Fn(&crate::deploy::Segment) -> Option<&'p ProfileSet>,
        slos: &BTreeMap<String, (f64, f64)>,
        config: &SimConfig,
    ) -> Result<Model, SimError> {
        let mut index: BTreeMap<&str, usize> = BTreeMap::new();
        let mut svcs: Vec<Svc> = Vec::new();
        let mut procs: Vec<Proc> = Vec::new();
        let mut per_gpu: BTreeMap<(u32, u32), usize> = BTreeMap::new();
        for seg in &map.segments {
            *per_gpu.entry((seg.node, seg.gpu)).or_insert(0) += 1;
        }
        for seg in &map.segments {
            // A segment beside others on its GPU runs slower by the interference factor, unless
            // it is a MIG instance (isolated: a mixed map's A100 nodes beside its L4 nodes).
            let mig = seg.gpu_type.as_deref().and_then(|t| crate::mig::GpuType::by_id(t).ok()).is_some_and(|t| !t.is_mps());
            let slow = if per_gpu[&(seg.node, seg.gpu)] > 1 && !mig {
                config.measured.get(&(seg.model.clone(), seg.instance_size)).copied().unwrap_or(1.0 + config.interference)
            } else {
                1.0
            };
            let si = *index.entry(seg.service.as_str()).or_insert_with(|| {
                let (rate, slo_ms) = slos[&seg.service];
                let i = svcs.len();
                svcs.push(Svc {
                    name: seg.service.clone(),
                    model: seg.model.clone(),
                    rate: rate * config.rate_scale,
                    slo: slo_ms / 1000.0,
                    data_path: config.data_path_s.get(&seg.service).copied().filter(|s| s.is_finite() && *s > 0.0).unwrap_or(0.0),
                    segments: 0,
                    wrr: Vec::new(),
                    rng: SplitMix64(config.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                    hist: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid"),
                    within: 0,
                    counted: 0,
                    served: 0,
                });
                i
            });
            let profile = profiles(seg)
                .and_then(|p| p.get(&seg.model))
                .ok_or_else(|| SimError::MissingModel { service: seg.service.clone(), model: seg.model.clone() })?;
            let missing = || SimError::MissingPoint {
                service: seg.service.clone(),
                model: seg.model.clone(),
                size: seg.instance_size,
                procs: seg.num_proc,
            };
            let mut exec = vec![0.0];
            for k in 1..=seg.batch_size {
                exec.push(profile.batch_latency(seg.instance_size, seg.num_proc, k).ok_or_else(missing)? * slow);
            }
            let capacity = match seg.throughput {
                Some(t) if t > 0.0 => t / slow,
                _ => seg.num_proc as f64 * seg.batch_size as f64 / exec[seg.batch_size as usize],
            };
            let svc = &mut svcs[si];
            svc.segments += 1;
            let slo_ms = svc.slo * 1000.0;
            for _ in 0..seg.num_proc {
                svc.wrr.push((procs.len(), capacity / seg.num_proc as f64, 0.0));
                procs.push(Proc {
                    // Batched against the planning target; the report checks the SLO itself.
                    policy: BatchPolicy::new(seg.batch_size, seg.target_ms(slo_ms)),
                    exec: exec.clone(),
                    queue: VecDeque::new(),
                    rate: ArrivalRate::new(0.0),
                    keep_up: 1,
                    running: Vec::new(),
                    busy: false,
                    generation: 0,
                    service: si,
                });
            }
        }
        Ok(Model { procs, svcs })
    }

    pub(super) fn run(mut self, config: &SimConfig) -> SimReport {
        let mut heap = BinaryHeap::new();
        let mut seq = 0u64;
        let mut push = |heap: &mut BinaryHeap<Event>, at: f64, ev: Ev| {
            seq += 1;
            heap.push(Event { at, seq, ev });
        };
        for (i, s) in self.svcs.iter_mut().enumerate() {
            if s.rate > 0.0 {
                let first = match config.distribution {
                    Distribution::Poisson => s.rng.exp(s.rate),
                    Distribution::Constant => s.rng.unit() / s.rate,
                };
                push(&mut heap, first, Ev::Arrival(i));
            }
        }
        let mut events = 0u64;
        while let Some(Event { at: now, ev, .. }) = heap.pop() {
            events += 1;
            match ev {
                Ev::Arrival(si) => {
                    let p = self.svcs[si].pick();
                    let proc = &mut self.procs[p];
                    proc.queue.push_back(now);
                    if let Some(rate) = proc.rate.arrived(now, 1) {
                        let exec = &proc.exec;
                        proc.keep_up = proc.policy.keep_up_batch(rate, |k| exec[k.min(exec.len() - 1)]);
                    }
                    // The deadline depends only on the oldest request, so a pending timer stays
                    // valid: act only when this request is the oldest or completes a batch.
                    let len = proc.queue.len();
                    if !proc.busy && (len == 1 || len >= proc.keep_up) {
                        if let Some((at, ev)) = self.try_dispatch(p, now) {
                            push(&mut heap, at, ev);
                        }
                    }
                    let s = &mut self.svcs[si];
                    let next = now
                        + match config.distribution {
                            Distribution::Poisson => s.rng.exp(s.rate),
                            Distribution::Constant => 1.0 / s.rate,
                        };
                    if next < config.duration_s {
                        push(&mut heap, next, Ev::Arrival(si));
                    }
                }
                Ev::Timer(p, generation) => {
                    if generation == self.procs[p].generation && !self.procs[p].busy {
                        if let Some((at, ev)) = self.try_dispatch(p, now) {
                            push(&mut heap, at, ev);
                        }
                    }
                }
                Ev::Done(p) => {
                    let proc = &mut self.procs[p];
                    proc.busy = false;
                    let svc = &mut self.svcs[proc.service];
                    if now >= config.warmup_s && now <= config.duration_s {
                        svc.served += proc.running.len() as u64;
                    }
                    for arrival in proc.running.drain(..) {
                        if arrival >= config.warmup_s {
                            let latency = now - arrival + svc.data_path;
                            svc.counted += 1;
                            if latency <= svc.slo {
                                svc.within += 1;
                            }
                            let us = (latency * 1e6).round().clamp(1.0, 3.6e9) as u64;
                            svc.hist.saturating_record(us);
                        }
                    }
                    if let Some((at, ev)) = self.try_dispatch(p, now) {
                        push(&mut heap, at, ev);
                    }
                }
            }
        }
        self.report(config, events)
    }

    /// How many of `n` requests of service `si` each of its processes gets (for tests).
    #[cfg(test)]
    pub(super) fn picks(mut self, si: usize, n: usize) -> Vec<usize> {
        let mut counts = vec![0; self.procs.len()];
        for _ in 0..n {
            counts[self.svcs[si].pick()] += 1;
        }
        counts
    }

    /// Dispatch from a free process if the policy says so; else return the timer to set.
    fn try_dispatch(&mut self, p: usize, now: f64) -> Option<(f64, Ev)> {
        let proc = &mut self.procs[p];
        if proc.busy || proc.queue.is_empty() {
            return None;
        }
        let b = proc.policy.max_batch as usize;
        let k = proc.queue.len().min(b);
        let full = proc.exec[b];
        let oldest = proc.queue[0];
        if proc.policy.should_dispatch(now, proc.queue.len(), oldest, full, proc.keep_up) {
            proc.running.extend(proc.queue.drain(..k));
            proc.busy = true;
            proc.generation += 1;
            Some((now + proc.exec[k], Ev::Done(p)))
        } else {
            Some((proc.policy.latest_dispatch(oldest, full), Ev::Timer(p, proc.generation)))
        }
    }

    fn report(self, config: &SimConfig, events: u64) -> SimReport {
        let window = (config.duration_s - config.warmup_s).max(f64::MIN_POSITIVE);
        let q = |h: &Histogram<u64>, p: f64| if h.is_empty() { 0.0 } else { h.value_at_quantile(p) as f64 / 1000.0 };
        let services: Vec<ServiceResult> = self
            .svcs
            .iter()
            .map(|s| {
                let percentile_ms = q(&s.hist, config.percentile / 100.0);
                let slo_ms = s.slo * 1000.0;
                ServiceResult {
                    service: s.name.clone(),
                    model: s.model.clone(),
                    segments: s.segments,
                    processes: s.wrr.len(),
                    slo_ms,
                    offered_rate: s.counted as f64 / window,
                    served_rate: s.served as f64 / window,
                    target_rate: s.rate,
                    requests: s.counted,
                    p50_ms: q(&s.hist, 0.50),
                    p95_ms: q(&s.hist, 0.95),
                    p99_ms: q(&s.hist, 0.99),
                    percentile_ms,
                    max_ms: if s.hist.is_empty() { 0.0 } else { s.hist.max() as f64 / 1000.0 },
                    attainment_pct: if s.counted == 0 { 100.0 } else { 100.0 * s.within as f64 / s.counted as f64 },
                    pass: percentile_ms <= slo_ms,
                }
            })
            .collect();
        let all_pass = services.iter().all(|s| s.pass);
        SimReport { config: config.clone(), services, all_pass, events }
    }
}

impl Svc {
    /// Smooth weighted round-robin (as nginx): deterministic, spreads picks evenly.
    fn pick(&mut self) -> usize {
        let mut total = 0.0;
        let mut best = 0;
        for i in 0..self.wrr.len() {
            let w = &mut self.wrr[i];
            w.2 += w.1;
            total += w.1;
            if self.wrr[i].2 > self.wrr[best].2 {
                best = i;
            }
        }
        self.wrr[best].2 -= total;
        self.wrr[best].0
    }
}

/// SplitMix64: a tiny PRNG whose sequence never changes with library versions, so a seed
/// reproduces a simulation exactly.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
    fn exp(&mut self, rate: f64) -> f64 {
        -self.unit().ln() / rate
    }
}
