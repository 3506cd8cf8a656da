//! The event loop of the simulator.
//!
//! Nothing couples two worker processes but the router's picks, which are made in each service's
//! arrival order and do not depend on the processes' state (smooth weighted round-robin over
//! fixed weights; the interference of neighbours is a fixed slowdown). So each service's
//! arrivals are drawn in order, each is handed to its process, and a process's own events (a
//! batch done, its deadline timer) are run up to the moment of its next arrival, and drained
//! after the last: the same events in the same order per process as one loop over every event
//! of the map would run, with no shared event queue (profiling `simulate --rates` on a 3-day
//! trace found a quarter of its time in that queue's heap).

use std::collections::{BTreeMap, VecDeque};

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
    /// When the running batch is done (`None`: idle).
    done_at: Option<f64>,
    /// When a partial batch must go at the latest (its oldest request's deadline); only an
    /// idle process holding requests has one.
    timer_at: Option<f64>,
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
    /// Smooth weighted round-robin over the service's processes: their indices, weights and
    /// current values, and the weights' sum.
    procs: Vec<usize>,
    weight: Vec<f64>,
    current: Vec<f64>,
    total_weight: f64,
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
                    procs: Vec::new(),
                    weight: Vec::new(),
                    current: Vec::new(),
                    total_weight: 0.0,
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
                svc.procs.push(procs.len());
                svc.weight.push(capacity / seg.num_proc as f64);
                svc.current.push(0.0);
                procs.push(Proc {
                    // Batched against the planning target; the report checks the SLO itself.
                    policy: BatchPolicy::new(seg.batch_size, seg.target_ms(slo_ms)),
                    exec: exec.clone(),
                    queue: VecDeque::new(),
                    rate: ArrivalRate::new(0.0),
                    keep_up: 1,
                    running: Vec::new(),
                    done_at: None,
                    timer_at: None,
                    service: si,
                });
            }
        }
        for svc in &mut svcs {
            // Summed in the order the round-robin used to sum them on every pick.
            svc.total_weight = svc.weight.iter().fold(0.0, |t, w| t + w);
        }
        Ok(Model { procs, svcs })
    }

    pub(super) fn run(mut self, config: &SimConfig) -> SimReport {
        let mut events = 0u64;
        for si in 0..self.svcs.len() {
            let s = &mut self.svcs[si];
            if s.rate > 0.0 {
                let gap = |s: &mut Svc| match config.distribution {
                    Distribution::Poisson => s.rng.exp(s.rate),
                    Distribution::Constant => 1.0 / s.rate,
                };
                let mut now = match config.distribution {
                    Distribution::Poisson => s.rng.exp(s.rate),
                    Distribution::Constant => s.rng.unit() / s.rate,
                };
                loop {
                    let p = self.svcs[si].pick();
                    // The process's own events up to this arrival (a batch done at the same
                    // moment frees it first), then the arrival.
                    events += self.advance(p, now, config) + 1;
                    self.arrive(p, now);
                    let next = now + gap(&mut self.svcs[si]);
                    if !(next < config.duration_s) {
                        break;
                    }
                    now = next;
                }
            }
            for k in 0..self.svcs[si].procs.len() {
                let p = self.svcs[si].procs[k];
                events += self.advance(p, f64::INFINITY, config);
            }
        }
        self.report(config, events)
    }

    /// Run process `p`'s pending events (batches done, deadline timers) up to `until`, inclusive;
    /// returns how many ran.
    fn advance(&mut self, p: usize, until: f64, config: &SimConfig) -> u64 {
        let mut events = 0;
        loop {
            let proc = &mut self.procs[p];
            let (done, timer) = (proc.done_at.unwrap_or(f64::INFINITY), proc.timer_at.unwrap_or(f64::INFINITY));
            let now = done.min(timer);
            if !(now <= until) || now == f64::INFINITY {
                return events;
            }
            events += 1;
            if done <= timer {
                proc.done_at = None;
                self.svcs[proc.service].finish(now, &mut proc.running, config);
            } else {
                proc.timer_at = None;
            }
            self.try_dispatch(p, now);
        }
    }

    /// A request of process `p`'s service arrives at `now` and is routed to it.
    fn arrive(&mut self, p: usize, now: f64) {
        let proc = &mut self.procs[p];
        let len = proc.enqueue(now);
        // The deadline depends only on the oldest request, so a pending timer stays valid: act
        // only when this request is the oldest or completes a batch.
        if proc.done_at.is_none() && (len == 1 || len >= proc.keep_up) {
            self.try_dispatch(p, now);
        }
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

    /// Dispatch from a free process if the policy says so (the batch's end pending, any timer
    /// void); else set the timer for its oldest request's deadline.
    fn try_dispatch(&mut self, p: usize, now: f64) {
        let proc = &mut self.procs[p];
        if proc.done_at.is_some() || proc.queue.is_empty() {
            return;
        }
        let b = proc.policy.max_batch as usize;
        let k = proc.queue.len().min(b);
        let full = proc.exec[b];
        let oldest = proc.queue[0];
        if proc.policy.should_dispatch(now, proc.queue.len(), oldest, full, proc.keep_up) {
            proc.running.extend(proc.queue.drain(..k));
            proc.done_at = Some(now + proc.exec[k]);
            proc.timer_at = None;
        } else {
            proc.timer_at = Some(proc.policy.latest_dispatch(oldest, full));
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
                    processes: s.procs.len(),
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

impl Proc {
    /// Queue a request arriving at `now`, updating the measured rate and the keep-up batch;
    /// returns the queue's length.
    fn enqueue(&mut self, now: f64) -> usize {
        self.queue.push_back(now);
        if let Some(rate) = self.rate.arrived(now, 1) {
            let exec = &self.exec;
            self.keep_up = self.policy.keep_up_batch(rate, |k| exec[k.min(exec.len() - 1)]);
        }
        self.queue.len()
    }
}

impl Svc {
    /// The batch of `running` (their arrival times) is done at `now`: count it where the
    /// measured window holds it.
    fn finish(&mut self, now: f64, running: &mut Vec<f64>, config: &SimConfig) {
        if now >= config.warmup_s && now <= config.duration_s {
            self.served += running.len() as u64;
        }
        for arrival in running.drain(..) {
            if arrival >= config.warmup_s {
                let latency = now - arrival + self.data_path;
                self.counted += 1;
                if latency <= self.slo {
                    self.within += 1;
                }
                let us = (latency * 1e6).round().clamp(1.0, 3.6e9) as u64;
                self.hist.saturating_record(us);
            }
        }
    }

    /// Smooth weighted round-robin (as nginx): deterministic, spreads picks evenly.
    fn pick(&mut self) -> usize {
        let mut best = 0;
        let mut top = f64::NEG_INFINITY;
        for (i, (c, w)) in self.current.iter_mut().zip(&self.weight).enumerate() {
            *c += w;
            if *c > top {
                top = *c;
                best = i;
            }
        }
        self.current[best] -= self.total_weight;
        self.procs[best]
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

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;
    use std::collections::BinaryHeap;
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;
    use crate::profile::ModelProfile;

    /// The engine as it was before each service ran on its own: one queue of every event of the
    /// map (arrivals, timers, batches done), popped in time order, ties in the order they were
    /// scheduled; a timer is void once its process dispatched after setting it.
    fn one_queue(mut m: Model, config: &SimConfig) -> SimReport {
        /// (time, order scheduled, kind: 0 arrival / 1 timer / 2 done, service or process, generation)
        struct E(f64, u64, u8, usize, u64);
        impl PartialEq for E {
            fn eq(&self, o: &Self) -> bool {
                self.cmp(o) == Ordering::Equal
            }
        }
        impl Eq for E {}
        impl Ord for E {
            fn cmp(&self, o: &Self) -> Ordering {
                o.0.total_cmp(&self.0).then(o.1.cmp(&self.1))
            }
        }
        impl PartialOrd for E {
            fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
                Some(self.cmp(o))
            }
        }
        let n = m.procs.len();
        let (mut busy, mut generation) = (vec![false; n], vec![0u64; n]);
        let mut heap = BinaryHeap::new();
        let mut seq = 0u64;
        let mut push = |heap: &mut BinaryHeap<E>, at: f64, kind: u8, i: usize, g: u64| {
            seq += 1;
            heap.push(E(at, seq, kind, i, g));
        };
        let dispatch = |m: &mut Model, busy: &mut [bool], generation: &mut [u64], p: usize, now: f64| -> Option<(f64, u8)> {
            let proc = &mut m.procs[p];
            if busy[p] || proc.queue.is_empty() {
                return None;
            }
            let b = proc.policy.max_batch as usize;
            let k = proc.queue.len().min(b);
            let (full, oldest) = (proc.exec[b], proc.queue[0]);
            if proc.policy.should_dispatch(now, proc.queue.len(), oldest, full, proc.keep_up) {
                proc.running.extend(proc.queue.drain(..k));
                busy[p] = true;
                generation[p] += 1;
                Some((now + proc.exec[k], 2))
            } else {
                Some((proc.policy.latest_dispatch(oldest, full), 1))
            }
        };
        for (i, s) in m.svcs.iter_mut().enumerate() {
            if s.rate > 0.0 {
                let first = match config.distribution {
                    Distribution::Poisson => s.rng.exp(s.rate),
                    Distribution::Constant => s.rng.unit() / s.rate,
                };
                push(&mut heap, first, 0, i, 0);
            }
        }
        let mut events = 0;
        while let Some(E(now, _, kind, i, g)) = heap.pop() {
            events += 1;
            match kind {
                0 => {
                    let p = m.svcs[i].pick();
                    let proc = &mut m.procs[p];
                    let len = proc.enqueue(now);
                    if !busy[p] && (len == 1 || len >= proc.keep_up) {
                        if let Some((at, kind)) = dispatch(&mut m, &mut busy, &mut generation, p, now) {
                            push(&mut heap, at, kind, p, generation[p]);
                        }
                    }
                    let s = &mut m.svcs[i];
                    let next = now
                        + match config.distribution {
                            Distribution::Poisson => s.rng.exp(s.rate),
                            Distribution::Constant => 1.0 / s.rate,
                        };
                    if next < config.duration_s {
                        push(&mut heap, next, 0, i, 0);
                    }
                }
                1 => {
                    if g == generation[i] && !busy[i] {
                        if let Some((at, kind)) = dispatch(&mut m, &mut busy, &mut generation, i, now) {
                            push(&mut heap, at, kind, i, generation[i]);
                        }
                    }
                }
                _ => {
                    busy[i] = false;
                    let proc = &mut m.procs[i];
                    m.svcs[proc.service].finish(now, &mut proc.running, config);
                    if let Some((at, kind)) = dispatch(&mut m, &mut busy, &mut generation, i, now) {
                        push(&mut heap, at, kind, i, generation[i]);
                    }
                }
            }
        }
        m.report(config, events)
    }

    /// One model whose batch of k takes 2 ms + 1 ms per request, 30 % longer per process beside it.
    fn profiles() -> ProfileSet {
        let mut text = String::from("Mig instance,Batch size,Workload Number,Throughput,Latency\n");
        for procs in 1..=3u32 {
            for b in [1u32, 2, 4, 8, 16] {
                let lat = (0.002 + 0.001 * b as f64) * (1.0 + 0.3 * (procs - 1) as f64);
                text.push_str(&format!("1,{b},{procs},{},{lat}\n", b as f64 / lat));
            }
        }
        let t = ModelProfile::read_from(text.as_bytes(), Path::new("m.csv"), "m".into(), None).unwrap();
        ProfileSet { dir: "mem".into(), models: [("m".to_string(), t)].into_iter().collect() }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Running each process on its own gives every service the same figures as one queue of
        /// all the map's events: overloaded and idle processes, partial batches at their
        /// deadline, several processes per segment, weighted picks, both arrival processes.
        #[test]
        fn each_process_on_its_own_gives_the_report_one_event_queue_gives(
            segments in proptest::collection::vec((0usize..3, 1u32..=16, 1u32..=3, proptest::option::of(50.0f64..3000.0)), 1..7),
            rates in proptest::collection::vec(1.0f64..4000.0, 3),
            slos in proptest::collection::vec(8.0f64..300.0, 3),
            duration in 0.5f64..3.0,
            warmup in 0.0f64..0.4,
            seed in any::<u64>(),
            constant in any::<bool>(),
        ) {
            let mut text = String::from("node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n");
            for (i, (s, batch, procs, thr)) in segments.iter().enumerate() {
                let thr = thr.map_or(String::new(), |t| t.to_string());
                text.push_str(&format!("0,{i},s{s},m,0,1,{batch},{procs},,,{thr},{},{}\n", rates[*s], slos[*s]));
            }
            let map = DeploymentMap::read_from(text.as_bytes(), Path::new("d.csv")).unwrap().0;
            let p = profiles();
            let distribution = if constant { Distribution::Constant } else { Distribution::Poisson };
            let config = SimConfig { duration_s: duration + warmup, warmup_s: warmup, seed, distribution, ..SimConfig::default() };
            let slos = crate::sim::service_slos(&map, None).unwrap();
            let build = || Model::build(&map, &|_| Some(&p), &slos, &config).unwrap();
            let (fast, slow) = (build().run(&config), one_queue(build(), &config));
            prop_assert_eq!(fast.services, slow.services);
            prop_assert!(fast.events <= slow.events, "{} events against {}", fast.events, slow.events);
        }
    }
}
