//! The open-loop load generator.
//!
//! Each service has its own dispatcher task that walks the service's send times
//! ([`crate::schedule`]) and, at each one, hands the request to a task of its own: requests go out
//! on schedule whether or not earlier ones have returned. Latency is measured from the
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

use crate::client::{Client, PreparedRequest};
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
}

/// Run the load; returns each target's statistics, in order. Returns after every request has
/// finished or timed out (at most `timeout` after the duration).
pub async fn run(client: &Client, targets: &[ServiceLoad], config: &LoadConfig, live: Arc<Live>) -> Vec<ServiceStats> {
    let start = Instant::now() + Duration::from_millis(20);
    let _ = live.started.set(start.into_std());
    let mut handles = Vec::with_capacity(targets.len());
    for t in targets {
        let stats = Arc::new(Mutex::new(ServiceStats::new(t.slo_ms).with_timeline(config.warmup_s, config.duration_s)));
        let h = tokio::spawn(dispatch(client.clone(), t.clone(), config.clone(), start, stats.clone(), live.clone()));
        handles.push((h, stats));
    }
    let mut out = Vec::with_capacity(handles.len());
    for ((h, stats), t) in handles.into_iter().zip(targets) {
        if let Err(e) = h.await {
            tracing::error!(service = %t.name, error = %e, "dispatcher task failed");
        }
        let s = stats.lock().map(|s| s.clone()).unwrap_or_else(|p| p.into_inner().clone());
        out.push(s);
    }
    out
}

fn lock(stats: &Mutex<ServiceStats>) -> std::sync::MutexGuard<'_, ServiceStats> {
    stats.lock().unwrap_or_else(|p| p.into_inner())
}

async fn dispatch(client: Client, target: ServiceLoad, config: LoadConfig, start: Instant, stats: Arc<Mutex<ServiceStats>>, live: Arc<Live>) {
    let cap = config.max_in_flight.max(1);
    let in_flight = Arc::new(Semaphore::new(cap));
    let wire = config.connections.map(|n| Arc::new(Semaphore::new(n.max(1))));
    let request = Arc::new(target.request);
    for t in target.arrivals.times() {
        if t >= config.duration_s {
            break;
        }
        let due = start + Duration::from_secs_f64(t);
        tokio::time::sleep_until(due).await;
        let counted = t >= config.warmup_s;
        live.due.fetch_add(1, Ordering::Relaxed);
        let Ok(slot) = in_flight.clone().try_acquire_owned() else {
            live.dropped.fetch_add(1, Ordering::Relaxed);
            if counted {
                lock(&stats).record_drop(t);
            }
            continue;
        };
        let (client, request, wire, stats, live) = (client.clone(), request.clone(), wire.clone(), stats.clone(), live.clone());
        let deadline = due + config.timeout;
        tokio::spawn(async move {
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
    // Every request holds a slot until it ends: taking all of them waits for the last one.
    let _ = in_flight.acquire_many(cap as u32).await;
}
