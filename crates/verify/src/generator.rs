//! The open-loop load generator.
//!
//! One pacer thread walks every service's send times ([`crate::schedule`]), merged, sleeping with
//! the operating system's timer (the runtime's ticks are 1 ms) and, at each one, hands the request
//! to a task of its own: requests go out on schedule whether or not earlier ones have returned. Latency is measured from the
//! *scheduled* time to the end of the response, so a generator that falls behind (CPU starved,
//! out of connections) shows as latency and as *lag* (actual send time minus scheduled time), never
//! as a silently lower rate.
//!
//! Bounded resources, per service:
//! - `max_in_flight`: requests that are due but not finished (waiting for a connection or on the
//!   wire). A request that falls due while the cap is reached is **dropped**: not sent, counted
//!   in `dropped`, and a miss for the SLO.
//! - `connections` (optional): requests on the wire at once. A due request waits for a free one;
//!   the wait counts in its lag and its latency.
//! - `timeout`: a request not finished this long after its scheduled time fails as `timeout`.
//!
//! Requests due during the warm-up are sent but not recorded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::client::Client;
use crate::client::PreparedRequest;
use crate::schedule::Arrivals;
use crate::stats::ServiceStats;

/// One service to load.
#[derive(Debug, Clone)]
pub struct ServiceLoad {
    pub name: String,
    pub slo_ms: f64,
    pub arrivals: Arrivals,
    pub request: PreparedRequest,
}

/// Settings of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadConfig {
    /// Seconds of arrivals, warm-up included.
    pub duration_s: f64,
    /// Leading seconds whose requests are not recorded.
    pub warmup_s: f64,
    /// Cap on requests due but unfinished, per service; beyond it requests are dropped.
    pub max_in_flight: usize,
    /// Cap on requests on the wire at once, per service (`None`: up to `max_in_flight`).
    pub connections: Option<usize>,
    /// A request fails as `timeout` when unfinished this long after its scheduled time.
    pub timeout: Duration,
}

/// Counters a progress display can read while the run goes (all services, warm-up included).
#[derive(Debug, Default)]
pub struct Live {
    /// When the load started (after the readiness checks and metadata).
    pub started: std::sync::OnceLock<std::time::Instant>,
    pub due: AtomicU64,
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
    /// Set (then [`Live::stop`] notified) to end the run early: no request is sent after it, and
    /// the run returns without waiting for those in flight (an interrupted `parva verify`).
    pub stopping: std::sync::atomic::AtomicBool,
    pub stopped: tokio::sync::Notify,
}

impl Live {
    /// End the run early (SIGINT, SIGTERM): see [`Live::stopping`].
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stopped.notify_waiters();
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// What the pacer needs of one service.
struct Target {
    request: Arc<PreparedRequest>,
    in_flight: Arc<Semaphore>,
    wire: Option<Arc<Semaphore>>,
    stats: Arc<Mutex<ServiceStats>>,
}

/// Run the load; returns each target's statistics, in order. Returns after every request has
/// finished or timed out (at most `timeout` after the duration).
pub async fn run(client: &Client, targets: &[ServiceLoad], config: &LoadConfig, live: Arc<Live>) -> Vec<ServiceStats> {
    let start = Instant::now() + Duration::from_millis(20);
    let _ = live.started.set(start.into_std());
    let cap = config.max_in_flight.max(1);
    let state: Vec<Target> = targets
        .iter()
        .map(|t| Target {
            request: Arc::new(t.request.clone()),
            in_flight: Arc::new(Semaphore::new(cap)),
            wire: config.connections.map(|n| Arc::new(Semaphore::new(n.max(1)))),
            stats: Arc::new(Mutex::new(ServiceStats::new(t.slo_ms).with_timeline(config.warmup_s, config.duration_s))),
        })
        .collect();
    let shared: Vec<(Arc<Semaphore>, Arc<Mutex<ServiceStats>>)> = state.iter().map(|t| (t.in_flight.clone(), t.stats.clone())).collect();
    let arrivals: Vec<Arrivals> = targets.iter().map(|t| t.arrivals.clone()).collect();
    let (client, config2, handle) = (client.clone(), config.clone(), tokio::runtime::Handle::current());
    let watch = live.clone();
    let pacer = tokio::task::spawn_blocking(move || pace(&client, &state, &arrivals, &config2, start, &live, &handle));
    if let Err(e) = pacer.await {
        tracing::error!(error = %e, "the load schedule's thread failed");
    }
    let mut out = Vec::with_capacity(shared.len());
    for (in_flight, stats) in shared {
        // Every request holds a slot until it ends: taking all of them waits for the last one
        // (not when the run is stopped).
        let stopped = watch.stopped.notified();
        if !watch.is_stopping() {
            tokio::select! {
                _ = in_flight.acquire_many(cap as u32) => {}
                _ = stopped => {}
            }
        }
        let s = stats.lock().map(|s| s.clone()).unwrap_or_else(|p| p.into_inner().clone());
        out.push(s);
    }
    out
}

fn lock(stats: &Mutex<ServiceStats>) -> std::sync::MutexGuard<'_, ServiceStats> {
    stats.lock().unwrap_or_else(|p| p.into_inner())
}

/// The schedule of every service, merged, on one thread that sleeps with the operating system's
/// timer (tens of µs late) rather than the runtime's, whose 1 ms ticks sent every request about
/// 1 ms late (issue 36: a constant millisecond in every latency, 15 % of a 7 ms one). At each
/// send time the request is handed to a task of its own on the runtime.
fn pace(client: &Client, targets: &[Target], arrivals: &[Arrivals], config: &LoadConfig, start: Instant, live: &Arc<Live>, handle: &tokio::runtime::Handle) {
    use std::cmp::Reverse;
    let start_std = start.into_std();
    let mut times: Vec<_> = arrivals.iter().map(Arrivals::times).collect();
    // (next send time in ns, service, the time's bits), earliest first.
    type Next = std::collections::BinaryHeap<Reverse<(u64, usize, u64)>>;
    let mut next: Next = std::collections::BinaryHeap::new();
    let advance = |i: usize, times: &mut Vec<crate::schedule::Times<'_>>, next: &mut Next| {
        if let Some(t) = times[i].next().filter(|t| *t < config.duration_s && t.is_finite()) {
            next.push(Reverse(((t.max(0.0) * 1e9) as u64, i, t.to_bits())));
        }
    };
    for i in 0..targets.len() {
        advance(i, &mut times, &mut next);
    }
    while let Some(Reverse((_, i, bits))) = next.pop() {
        let t = f64::from_bits(bits);
        advance(i, &mut times, &mut next);
        let due_std = start_std + Duration::from_secs_f64(t);
        // Sleep in steps of at most 50 ms, so that a stop is seen within that.
        loop {
            if live.is_stopping() {
                return;
            }
            let now = std::time::Instant::now();
            if due_std <= now {
                break;
            }
            std::thread::sleep((due_std - now).min(Duration::from_millis(50)));
        }
        let target = &targets[i];
        let due = Instant::from_std(due_std);
        let counted = t >= config.warmup_s;
        live.due.fetch_add(1, Ordering::Relaxed);
        let Ok(slot) = target.in_flight.clone().try_acquire_owned() else {
            live.dropped.fetch_add(1, Ordering::Relaxed);
            if counted {
                lock(&target.stats).record_drop(t);
            }
            continue;
        };
        let (client, request, wire, stats, live) = (client.clone(), target.request.clone(), target.wire.clone(), target.stats.clone(), live.clone());
        let deadline = due + config.timeout;
        handle.spawn(async move {
            let mut sent_at: Option<Instant> = None;
            let work = async {
                let _conn = match &wire {
                    Some(w) => w.acquire().await.ok(),
                    None => None,
                };
                sent_at = Some(Instant::now());
                client.infer(&request).await
            };
            let result = tokio::time::timeout_at(deadline, work).await;
            let lag = sent_at.map(|s| s.saturating_duration_since(due));
            match &result {
                Ok(crate::client::Outcome::Ok) => live.succeeded.fetch_add(1, Ordering::Relaxed),
                _ => live.failed.fetch_add(1, Ordering::Relaxed),
            };
            if counted {
                let mut s = lock(&stats);
                match result {
                    Ok(outcome) => s.record(t, lag.unwrap_or_default(), due.elapsed(), &outcome),
                    Err(_) => s.record_timeout(t, lag),
                }
            }
            drop(slot);
        });
    }
}
