//! The dynamic batching policy, shared by the router (which applies it) and by the planner's
//! latency model and the simulator (which predict it).
//!
//! Each worker process of a segment keeps a FIFO queue. When the process is free it dispatches
//! - the first `max_batch` requests as soon as that many are queued, or
//! - everything queued (at most `max_batch`) once waiting longer could make the oldest request
//!   miss its deadline: at `oldest_arrival + slo - guard - exec(max_batch)`, where `exec(b)` is
//!   the profiled latency of a full batch and `guard` keeps room for IPC and timer jitter.
//!
//! Partial batches are timed as full ones on purpose: requests that join a partial batch just
//! before it leaves make it longer, and timing it by its size at one moment lets such late
//! arrivals push the oldest request past its deadline (measured: up to 4 % of the SLO at p99).
//! When the process is busy at that moment, the batch goes as soon as the process is free.
//! Times are seconds on any common clock.

/// Parameters of the batching policy for one worker process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchPolicy {
    /// Largest batch the segment runs (its profiled batch size).
    pub max_batch: u32,
    /// The service's latency SLO, seconds.
    pub slo: f64,
    /// Time kept free before the deadline for IPC, scheduling and timer jitter, seconds.
    pub guard: f64,
}

/// Smallest guard, seconds.
pub const MIN_GUARD_S: f64 = 0.001;
/// Guard as a fraction of the SLO.
pub const GUARD_FRACTION: f64 = 0.05;

impl BatchPolicy {
    /// The policy for a segment running batches of up to `max_batch` for a service with an SLO of
    /// `slo_ms` milliseconds; guard = max(1 ms, 5 % of the SLO).
    pub fn new(max_batch: u32, slo_ms: f64) -> Self {
        let slo = slo_ms / 1000.0;
        BatchPolicy { max_batch: max_batch.max(1), slo, guard: (GUARD_FRACTION * slo).max(MIN_GUARD_S) }
    }

    /// Latest time a partial batch whose oldest request arrived at `oldest_arrival` may start;
    /// `full_exec` is the execution time of a full batch (`max_batch` requests).
    pub fn latest_dispatch(&self, oldest_arrival: f64, full_exec: f64) -> f64 {
        oldest_arrival + self.slo - self.guard - full_exec
    }

    /// Whether a free process holding `queued` requests, the oldest of which arrived at
    /// `oldest_arrival`, dispatches at `now`; `full_exec` is the execution time of a full batch.
    pub fn should_dispatch(&self, now: f64, queued: usize, oldest_arrival: f64, full_exec: f64) -> bool {
        queued > 0 && (queued >= self.max_batch as usize || now >= self.latest_dispatch(oldest_arrival, full_exec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_batches_go_at_once_partial_ones_at_the_last_safe_moment() {
        let p = BatchPolicy::new(4, 100.0);
        assert!((p.guard - 0.005).abs() < 1e-12);
        assert!(p.should_dispatch(0.0, 4, 0.0, 0.03));
        assert!(!p.should_dispatch(0.0, 0, 0.0, 0.03));
        // Oldest arrived at t=0, a full batch takes 30 ms: latest start 0.1 - 0.005 - 0.03 = 0.065.
        assert!(!p.should_dispatch(0.064, 2, 0.0, 0.03));
        assert!(p.should_dispatch(0.065, 2, 0.0, 0.03));
        // Tiny SLOs keep at least 1 ms of guard.
        assert_eq!(BatchPolicy::new(1, 10.0).guard, MIN_GUARD_S);
    }
}
