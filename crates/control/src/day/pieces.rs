//! Each policy's spans simulated piece by piece, and what the day report says of them.

use super::*;

/// What a day is simulated on: the services and their tables, the rates over time, the settings.
#[derive(Clone, Copy)]
pub(super) struct Day<'a> {
    pub(super) input: &'a PlanInput<'a>,
    pub(super) trace: &'a RateTrace,
    pub(super) config: &'a DayConfig,
}

/// Simulate every piece of `spans` (cut further at the trace's change points).
pub(super) fn serve(
    day: Day<'_>,
    policy: Policy,
    cluster_gpus: Option<u32>,
    spans: &[Span],
    stats: Stats,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<PolicyDay, DayError> {
    let Day { input, trace, config: c } = day;
    let breaks = trace.breakpoints();
    let mut jobs: Vec<(usize, f64, f64)> = Vec::new();
    for (i, sp) in spans.iter().enumerate() {
        let mut cuts: Vec<f64> = breaks.iter().copied().filter(|b| *b > sp.start && *b < sp.end).collect();
        cuts.insert(0, sp.start);
        cuts.push(sp.end);
        for w in cuts.windows(2) {
            if w[1] > w[0] {
                jobs.push((i, w[0], w[1]));
            }
        }
    }
    let n = input.services.len();
    let (mut within, mut total) = (vec![0.0; n], vec![0.0; n]);
    let mut worst: Vec<(f64, f64, f64)> = vec![(0.0, f64::INFINITY, 0.0); n]; // (start, attainment, p99)
    // Per service and BUCKET_S bucket: (requests within the SLO, requests).
    let buckets = (c.duration_s / BUCKET_S).ceil().max(1.0) as usize;
    let mut bucket: Vec<Vec<(f64, f64)>> = vec![vec![(0.0, 0.0); buckets]; n];
    let mut pieces = Vec::with_capacity(jobs.len());
    let (mut gpu_seconds, mut peak_gpus, mut transition_seconds) = (0.0, 0usize, 0.0);
    let jobs_on = c.jobs.is_some();
    let gpcs_per_gpu = input.gpu.gpcs as f64;
    // Jobs: GPC-seconds held, samples, and the GPC-seconds serving holds on the cluster.
    let (mut job_gpc_s, mut job_samples, mut serving_gpc_s) = (0.0f64, 0.0f64, 0.0f64);
    let mut job_held_gpc_s = 0.0f64;
    // Each piece's simulation is independent of the others: run them on every core, a chunk at
    // a time (the report is the same as one after another: each piece has its own seed).
    let simulate_piece = |done: usize, &(i, a, b): &(usize, f64, f64)| -> Result<Option<sim::SimReport>, DayError> {
        let sp = &spans[i];
        if sp.map.segments.is_empty() {
            return Ok(None);
        }
        let rates = at_rates(input.services, &|s| trace.rate(&s.name, a));
        let sample = (b - a).min(c.sample_s);
        // The simulator needs a positive rate per served service; a rate of 0 gets no arrivals.
        let list: Vec<Service> = rates.iter().map(|s| Service { rate: s.rate.max(1e-6), ..s.clone() }).collect();
        let seed = c.seed ^ (done as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let cfg = SimConfig { duration_s: c.warmup_s + sample, warmup_s: c.warmup_s, seed, percentile: c.percentile, ..SimConfig::default() };
        sim::simulate(&sp.map, input.profiles, Some(&list), &cfg).map(Some).map_err(|source| DayError::Sim { at_s: a, source })
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 64);
    let chunk = (threads * 8).max(1);
    let mut reports: Vec<Option<sim::SimReport>> = Vec::with_capacity(jobs.len());
    for (k, part) in jobs.chunks(chunk).enumerate() {
        let base = k * chunk;
        let per = part.len().div_ceil(threads).max(1);
        let results: Vec<Result<Vec<Option<sim::SimReport>>, DayError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = part
                .chunks(per)
                .enumerate()
                .map(|(t, sub)| {
                    let simulate_piece = &simulate_piece;
                    scope.spawn(move || sub.iter().enumerate().map(|(j, job)| simulate_piece(base + t * per + j, job)).collect())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(DayError::Invalid { what: "the simulation".into(), rule: "a simulation thread panicked".into() }))).collect()
        });
        for r in results {
            reports.extend(r?);
        }
        progress(base as u64 + part.len() as u64, jobs.len() as u64);
    }
    for (&(i, a, b), report) in jobs.iter().zip(reports) {
        let sp = &spans[i];
        let len = b - a;
        let rates = at_rates(input.services, &|s| trace.rate(&s.name, a));
        let (mut p_within, mut p_total) = (0.0, 0.0);
        let mut p_worst = (String::new(), 100.0f64, 0.0f64);
        let mut p_services = Vec::new();
        for (si, s) in rates.iter().enumerate() {
            if s.rate <= 0.0 {
                continue;
            }
            let (att, p99) = match report.as_ref().and_then(|r| r.services.iter().find(|x| x.service == s.name)) {
                Some(x) => (x.attainment_pct, x.p99_ms),
                None => (0.0, f64::INFINITY),
            };
            p_services.push(PieceService { service: s.name.clone(), rate: s.rate, attainment_pct: att, p99_ms: finite(p99) });
            let req = s.rate * len;
            // Share the piece's requests out to the buckets it overlaps.
            let mut from = a;
            while from < b {
                let k = ((from / BUCKET_S).floor() as usize).min(buckets - 1);
                let to = (((k + 1) as f64) * BUCKET_S).min(b).max(from);
                let r = s.rate * (to - from);
                bucket[si][k].0 += att / 100.0 * r;
                bucket[si][k].1 += r;
                if to <= from {
                    break;
                }
                from = to;
            }
            within[si] += att / 100.0 * req;
            total[si] += req;
            p_within += att / 100.0 * req;
            p_total += req;
            if att < worst[si].1 {
                worst[si] = (a, att, p99);
            }
            if att < p_worst.1 || p_worst.0.is_empty() {
                p_worst = (s.name.clone(), att, p99);
            }
        }
        gpu_seconds += sp.gpus as f64 * len;
        peak_gpus = peak_gpus.max(sp.gpus);
        if jobs_on {
            job_gpc_s += job_gpcs(&sp.jobs) as f64 * len;
            job_held_gpc_s += job_gpcs(&sp.jobs) as f64 * len;
            job_samples += sp.jobs.iter().filter_map(|j| j.throughput).sum::<f64>() * len;
            let cluster = cluster_gpus.unwrap_or(0);
            let per = input.options.gpus_per_node.max(1);
            serving_gpc_s += sp.held.as_ref().unwrap_or(&sp.map).segments.iter()
                .filter(|s| s.node * per + s.gpu < cluster)
                .map(|s| s.instance_size as f64)
                .sum::<f64>() * len;
        }
        if sp.transition {
            transition_seconds += len;
        }
        pieces.push(Piece {
            start_s: a,
            end_s: b,
            gpus: sp.gpus,
            transition: sp.transition,
            demand: rates.iter().map(|s| s.rate).sum(),
            attainment_pct: if p_total > 0.0 { 100.0 * p_within / p_total } else { 100.0 },
            worst_service: p_worst.0,
            worst_attainment_pct: p_worst.1,
            worst_p99_ms: finite(p_worst.2),
            services: p_services,
        });
    }
    let (mut job_starts, mut job_stops) = (0usize, 0usize);
    if jobs_on {
        let key = |j: &JobSlot| (j.node, j.gpu, j.placement, j.instance_size, j.job.clone());
        let mut prev: std::collections::BTreeSet<_> = std::collections::BTreeSet::new();
        let start_s = c.jobs.as_ref().map_or(0.0, |j| j.start_s);
        for sp in spans {
            let now: std::collections::BTreeSet<_> = sp.jobs.iter().map(key).collect();
            for j in sp.jobs.iter().filter(|j| !prev.contains(&key(j))) {
                job_starts += 1;
                // The instance makes no progress while it starts (at most the span's length).
                let lost = start_s.min(sp.end - sp.start);
                job_gpc_s -= j.instance_size as f64 * lost;
                job_samples -= j.throughput.unwrap_or(0.0) * lost;
            }
            job_stops += prev.difference(&now).count();
            prev = now;
        }
    }
    let services: Vec<ServiceDay> = input
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let share = |b: &(f64, f64)| if b.1 > 0.0 { 100.0 * b.0 / b.1 } else { 100.0 };
            let (worst_bucket, worst_bucket_pct) =
                bucket[i].iter().enumerate().map(|(k, b)| (k, share(b))).fold((0, 100.0f64), |acc, x| if x.1 < acc.1 { x } else { acc });
            ServiceDay {
            service: s.name.clone(),
            slo_ms: s.slo_ms,
            requests: total[i],
            within_slo_pct: if total[i] > 0.0 { 100.0 * within[i] / total[i] } else { 100.0 },
            worst_piece_s: worst[i].0,
            worst_attainment_pct: worst[i].1.min(100.0),
            worst_p99_ms: finite(worst[i].2),
            worst_bucket_s: worst_bucket as f64 * BUCKET_S,
            worst_bucket_pct,
            buckets_below_95: bucket[i].iter().filter(|b| share(b) < 95.0).count(),
        }})
        .collect();
    let requests: f64 = total.iter().sum();
    Ok(PolicyDay {
        policy,
        gpu_hours: gpu_seconds / 3600.0,
        peak_gpus,
        requests,
        within_slo_pct: if requests > 0.0 { 100.0 * within.iter().sum::<f64>() / requests } else { 100.0 },
        worst_service_pct: services.iter().map(|s| s.within_slo_pct).fold(100.0, f64::min),
        worst_bucket_pct: services.iter().map(|s| s.worst_bucket_pct).fold(100.0, f64::min),
        bucket_worst_pct: (0..buckets)
            .map(|k| bucket.iter().map(|b| if b[k].1 > 0.0 { 100.0 * b[k].0 / b[k].1 } else { 100.0 }).fold(100.0, f64::min))
            .collect(),
        replans: stats.replans,
        replans_per_day: stats.replans as f64 * 86_400.0 / c.duration_s,
        refused: stats.refused,
        instances_created: stats.created,
        instances_destroyed: stats.destroyed,
        workers_started: stats.started,
        workers_stopped: stats.stopped,
        transition_seconds,
        goodput_rps: within.iter().sum::<f64>() / c.duration_s,
        job_gpu_hours: job_gpc_s.max(0.0) / gpcs_per_gpu / 3600.0,
        job_samples: job_samples.max(0.0),
        job_starts,
        job_stops,
        idle_gpu_hours: if jobs_on {
            (cluster_gpus.unwrap_or(0) as f64 * gpcs_per_gpu * c.duration_s - serving_gpc_s - job_held_gpc_s).max(0.0) / gpcs_per_gpu / 3600.0
        } else {
            0.0
        },
        services,
        pieces,
        log: stats.log,
    })
}

/// JSON has no infinity: a service with no segment reports a p99 of -1.
fn finite(x: f64) -> f64 {
    if x.is_finite() { x } else { -1.0 }
}
