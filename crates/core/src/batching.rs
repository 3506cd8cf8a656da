//! The dynamic batching policy, shared by the router (which applies it) and by the planner's
//! latency model and the simulator (which predict it).
//!
//! Each worker process of a segment keeps a FIFO queue. When the process is free it dispatches
//! - what is queued (at most `max_batch`) as soon as it holds the *keep-up batch*: the smallest
//!   batch `k` that, repeated, keeps up with the process's arrival rate `λ` with room to spare
//!   (`λ·exec(k) <= KEEP_UP_UTILIZATION · k`, see [`BatchPolicy::keep_up_batch`]). At low load
//!   that is one request: an idle process takes a lone request at once, as Triton's dynamic
//!   batcher does, instead of holding it to its deadline. At high load it is `max_batch`: full
//!   batches are what keeps up, and waiting for them is what serves the queue best; or
//! - everything queued (at most `max_batch`) once waiting longer could make the oldest request
//!   miss its deadline: at `oldest_arrival + slo - guard - exec(max_batch)`, where `exec(b)` is
//!   the profiled latency of a full batch and `guard` keeps room for IPC and timer jitter. The
//!   deadline stays the bound on waiting whatever the rate estimate says.
//!
//! The arrival rate is measured the same way by the router and the simulator ([`ArrivalRate`]:
//! windows of at least 0.1 s, smoothed), and the latency model predicts the same rule at a given
//! rate, so the three agree on what the policy does at every load.
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
/// Largest utilisation `λ·exec(k)/k` a batch dispatched before it is full may leave the process
/// at: below it an idle process takes what is queued at once; above it the process waits for a
/// larger batch (or the deadline). Room under 1 absorbs bursts and the rate estimate's lag.
pub const KEEP_UP_UTILIZATION: f64 = 0.8;

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

    /// The keep-up batch at an arrival rate of `rate` requests/s: the smallest `k` in
    /// `1..=max_batch` with `rate · exec(k) <= KEEP_UP_UTILIZATION · k`, where `exec(k)` is the
    /// execution time of a batch of `k`; `max_batch` when none keeps up (or `rate` is not a
    /// number), and when a request arriving as that batch leaves could not wait for it and still
    /// be served in time (`exec(k) + exec(max_batch) + guard > slo`: a tight SLO). 1 at any rate
    /// low enough that a lone request keeps up, where the SLO leaves room for it.
    pub fn keep_up_batch(&self, rate: f64, exec: impl Fn(usize) -> f64) -> usize {
        let b = self.max_batch as usize;
        if rate.is_nan() {
            return b;
        }
        // A request that arrives just as an early batch leaves waits for it; where it could not
        // then still be served in time (the batch, a full one and the guard overrun the SLO),
        // nothing leaves early: full batches or the deadline, as ParvaGPU's policy.
        let full = exec(b);
        (1..=b)
            .find(|&k| rate * exec(k) <= KEEP_UP_UTILIZATION * k as f64)
            .filter(|&k| k == b || exec(k) + full + self.guard <= self.slo)
            .unwrap_or(b)
    }

    /// Whether a free process holding `queued` requests, the oldest of which arrived at
    /// `oldest_arrival`, dispatches at `now`: when it holds the keep-up batch `keep_up` (see
    /// [`BatchPolicy::keep_up_batch`]; at most `max_batch` is asked) or at the deadline, `full_exec`
    /// being the execution time of a full batch.
    pub fn should_dispatch(&self, now: f64, queued: usize, oldest_arrival: f64, full_exec: f64, keep_up: usize) -> bool {
        queued > 0 && (queued >= keep_up.clamp(1, self.max_batch as usize) || now >= self.latest_dispatch(oldest_arrival, full_exec))
    }
}

/// A process's arrival rate, as the router and the simulator both measure it: requests (rows)
/// counted over windows of at least [`ArrivalRate::WINDOW_S`], each window closed by the first
/// arrival after it and folded into an exponentially weighted average (weight
/// [`ArrivalRate::WEIGHT`]). 0 until the first window closes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArrivalRate {
    since: f64,
    count: u64,
    rate: Option<f64>,
}

impl ArrivalRate {
    pub const WINDOW_S: f64 = 0.1;
    pub const WEIGHT: f64 = 0.3;

    /// Counting from `now` (seconds on the policy's clock).
    pub fn new(now: f64) -> Self {
        ArrivalRate { since: now, count: 0, rate: None }
    }

    /// `n` requests arrived at `now`; the new estimate when this closed a window.
    pub fn arrived(&mut self, now: f64, n: u64) -> Option<f64> {
        self.count = self.count.saturating_add(n);
        let elapsed = now - self.since;
        if elapsed.is_nan() || elapsed < Self::WINDOW_S {
            return None;
        }
        let new = self.count as f64 / elapsed;
        let rate = self.rate.map_or(new, |r| r + Self::WEIGHT * (new - r));
        *self = ArrivalRate { since: now, count: 0, rate: Some(rate) };
        Some(rate)
    }

    /// The estimate, requests/s (0 before the first window closed).
    pub fn rate(&self) -> f64 {
        self.rate.unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_batches_go_at_once_partial_ones_at_the_last_safe_moment() {
        let p = BatchPolicy::new(4, 100.0);
        assert!((p.guard - 0.005).abs() < 1e-12);
        assert!(p.should_dispatch(0.0, 4, 0.0, 0.03, 4));
        assert!(!p.should_dispatch(0.0, 0, 0.0, 0.03, 1));
        // Oldest arrived at t=0, a full batch takes 30 ms: latest start 0.1 - 0.005 - 0.03 = 0.065.
        assert!(!p.should_dispatch(0.064, 2, 0.0, 0.03, 4));
        assert!(p.should_dispatch(0.065, 2, 0.0, 0.03, 4));
        // Tiny SLOs keep at least 1 ms of guard.
        assert_eq!(BatchPolicy::new(1, 10.0).guard, MIN_GUARD_S);
    }

    /// Issue 36: a lone request at a tenth of the load waited for its batch's deadline while the
    /// process sat idle.
    #[test]
    fn an_idle_process_takes_what_keeps_up_at_once_and_waits_for_full_batches_only_at_high_load() {
        let p = BatchPolicy::new(8, 200.0);
        let exec = |k: usize| 0.010 + 0.005 * k as f64; // 15 ms for 1, 50 ms for 8 (160/s)
        // Low load: one request keeps up (10/s x 15 ms = 0.15 <= 0.8): it goes at once.
        assert_eq!(p.keep_up_batch(10.0, exec), 1);
        assert_eq!(p.keep_up_batch(0.0, exec), 1);
        assert!(p.should_dispatch(0.0, 1, 0.0, exec(8), p.keep_up_batch(10.0, exec)));
        // 100/s: k with 100 (0.010 + 0.005 k) <= 0.8 k, i.e. k >= 1/0.3 = 3.33: 4.
        assert_eq!(p.keep_up_batch(100.0, exec), 4);
        assert!(!p.should_dispatch(0.0, 3, 0.0, exec(8), 4) && p.should_dispatch(0.0, 4, 0.0, exec(8), 4));
        // At the deadline (0.2 - 0.01 - 0.05 = 0.14 s) whatever the rate says.
        assert!(p.should_dispatch(0.14, 1, 0.0, exec(8), 8));
        // Near the full batch's throughput nothing smaller keeps up: wait for full batches.
        assert_eq!(p.keep_up_batch(150.0, exec), 8);
        assert_eq!(p.keep_up_batch(f64::NAN, exec), 8);
        assert_eq!(p.keep_up_batch(f64::INFINITY, exec), 8);
        // The keep-up batch never shrinks as the rate grows.
        let ks: Vec<usize> = (0..200).map(|r| p.keep_up_batch(r as f64, exec)).collect();
        assert!(ks.windows(2).all(|w| w[0] <= w[1]), "{ks:?}");
        // A tight SLO: nothing leaves early where a request arriving as it leaves could not wait
        // for it (a batch of 1, a full one and the guard: 15 + 50 + 3.5 = 68.5 ms fits 70 ms;
        // 15 + 50 + 3.3 = 68.3 ms does not fit 66 ms).
        assert_eq!(BatchPolicy::new(8, 70.0).keep_up_batch(10.0, exec), 1);
        assert_eq!(BatchPolicy::new(8, 66.0).keep_up_batch(10.0, exec), 8);
    }

    #[test]
    fn the_arrival_rate_is_counted_over_windows_and_smoothed() {
        let mut r = ArrivalRate::new(0.0);
        assert_eq!(r.rate(), 0.0);
        // 100/s for a second: windows close every 0.1 s.
        let mut closed = 0;
        for i in 1..=100 {
            closed += r.arrived(i as f64 * 0.01, 1).is_some() as usize;
        }
        assert!((9..=10).contains(&closed), "{closed}");
        assert!((r.rate() - 100.0).abs() < 12.0, "{}", r.rate());
        // The rate drops to 9/s: each arrival closes a window; the estimate follows within a
        // few of them (weight 0.3), and never jumps below what was measured.
        let mut t = 1.0;
        let mut seen = Vec::new();
        for _ in 0..12 {
            t += 0.11;
            seen.push(r.arrived(t, 1).unwrap());
        }
        assert!(seen.windows(2).all(|w| w[1] <= w[0] && w[1] >= 1.0 / 0.11 - 1e-9), "{seen:?}");
        assert!((seen[11] - 1.0 / 0.11).abs() < 2.0, "{seen:?}");
        // A burst of rows at once counts each row.
        let mut b = ArrivalRate::new(0.0);
        assert_eq!(b.arrived(0.2, 40), Some(200.0));
        // Time going backwards (another clock) never closes a window nor panics.
        assert_eq!(b.arrived(0.1, 1), None);
        assert_eq!(b.arrived(f64::NAN, 1), None);
    }
}
