//! Which profile points a service may use, and how much rate a segment may take.
//!
//! Two latency models:
//!
//! - [`LatencyModel::ParvaGpu`]: ParvaGPU's rule. A point is admissible when its profiled batch
//!   latency is below `budget` x SLO; a segment may take its whole profiled throughput.
//! - [`LatencyModel::Queueing`]: a point is admissible at a per-process arrival rate `λ` when the
//!   predicted tail latency of a request (at the chosen percentile) stays within the SLO, under the
//!   batching policy of [`crate::batching`]. The planner counts on each segment for the largest such
//!   rate (its *planned capacity*), and the router splits a service's requests over its segments in
//!   proportion to it.
//!
//! ## The queueing model
//!
//! Per worker process: Poisson arrivals at rate `λ`, batches of at most `b`, batch latency `L(k)`
//! interpolated from the profile (same size and process count), SLO `S`, guard `g` (see
//! [`crate::batching::BatchPolicy`]). The predicted `q`-quantile of a request's latency is
//!
//! ```text
//! T_q = W_form + W_queue + L(k)
//! ```
//!
//! - `k`, the typical batch: the policy dispatches a partial batch at `S - g - L(k)` after its
//!   oldest request arrived, so `k = min(b, 1 + λ (S - g - L(k)))` (a fixed point, solved by
//!   iteration).
//! - `W_form`, the wait of a batch's oldest request for the batch to form: the `q`-quantile of the
//!   time for `k - 1` more arrivals (Erlang, Wilson–Hilferty approximation), capped by the policy at
//!   `S - g - L(k)`. Using the oldest request's wait for every request is conservative.
//! - `W_queue`, the wait for the process to become free: batches arrive with squared coefficient of
//!   variation `1/k` (every k-th Poisson arrival) and are served in `L(k)` (squared CV
//!   [`SERVICE_SCV`] for jitter); Kingman's approximation gives the mean
//!   `ρ/(1-ρ) · (1/k + SERVICE_SCV)/2 · L(k)` with `ρ = λ L(k) / k`, and an exponential tail,
//!   `P(W > t) = ρ e^{-tρ/E[W]}`, gives the quantile.
//!
//! A point is admissible at `λ` when `T_q ≤ S`. Its per-process capacity is the largest `λ` such
//! that every rate up to it is admissible (found on a grid, refined by bisection). At low rates the
//! policy dispatches partial batches in time, so every point whose single-request latency fits
//! (`L(1) + g < S`) is admissible at some rate; at high rates queueing decides. `parva simulate`
//! runs the same policy event by event, and is what plans are checked against.

use crate::batching::BatchPolicy;
use crate::profile::{ModelProfile, ProfilePoint};

/// Squared coefficient of variation assumed for batch execution times (timing jitter).
pub const SERVICE_SCV: f64 = 0.02;

/// How admissibility and segment capacity are decided.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "model", rename_all = "lowercase")]
pub enum LatencyModel {
    /// ParvaGPU's rule: profiled batch latency < budget x SLO.
    ParvaGpu { budget: f64 },
    /// Predicted tail latency (at `percentile`, e.g. 99.0) within the SLO, batching and queueing included.
    Queueing { percentile: f64 },
}

impl LatencyModel {
    /// The capacity (samples/s, whole segment) a planner may count on for `point` of `profile`
    /// serving a service with an SLO of `slo_ms`; `None` when the point is not admissible.
    pub fn capacity(&self, profile: &ModelProfile, point: &ProfilePoint, slo_ms: f64) -> Option<f64> {
        if !point.is_measured() {
            return None;
        }
        match *self {
            LatencyModel::ParvaGpu { budget } => {
                (point.latency_s * 1000.0 < budget * slo_ms).then(|| point.segment_throughput())
            }
            LatencyModel::Queueing { percentile } => {
                let latency = |k: u32| {
                    profile.batch_latency(point.size, point.procs, k).unwrap_or(point.latency_s * k as f64 / point.batch as f64)
                };
                let q = QueueModel { policy: BatchPolicy::new(point.batch, slo_ms), quantile: percentile / 100.0 };
                q.max_rate(&latency).map(|per_proc| per_proc * point.procs as f64)
            }
        }
    }
}

/// The queueing predictor for one worker process.
#[derive(Debug, Clone, Copy)]
pub struct QueueModel {
    pub policy: BatchPolicy,
    /// Quantile in (0, 1), e.g. 0.99.
    pub quantile: f64,
}

/// Grid steps when searching the largest admissible rate.
const RATE_GRID: usize = 64;

impl QueueModel {
    /// Predicted `quantile` latency (s) of a request at per-process rate `lambda` (req/s);
    /// infinite when the process cannot keep up.
    pub fn tail_latency(&self, lambda: f64, latency: &dyn Fn(u32) -> f64) -> f64 {
        let BatchPolicy { max_batch: b, slo, guard } = self.policy;
        if lambda <= 0.0 {
            return latency(1);
        }
        // Typical batch size under the policy (fixed point of k = min(b, 1 + λ·window(k))).
        let mut k = b as f64;
        for _ in 0..32 {
            let window = (slo - guard - latency(k.ceil() as u32)).max(0.0);
            let next = (1.0 + lambda * window).clamp(1.0, b as f64);
            if (next - k).abs() < 1e-9 {
                break;
            }
            k = next;
        }
        let kb = k.ceil().max(1.0) as u32;
        let exec = latency(kb);
        let rho = lambda * exec / kb as f64;
        if rho >= 1.0 {
            return f64::INFINITY;
        }
        let window = (slo - guard - exec).max(0.0);
        let form = if kb <= 1 { 0.0 } else { erlang_quantile((kb - 1) as f64, lambda, self.quantile).min(window) };
        let mean_wait = rho / (1.0 - rho) * (1.0 / kb as f64 + SERVICE_SCV) / 2.0 * exec;
        let p_tail = 1.0 - self.quantile;
        let queue = if rho > p_tail && mean_wait > 0.0 { mean_wait / rho * (rho / p_tail).ln() } else { 0.0 };
        form + queue + exec
    }

    /// Whether the predicted tail latency at `lambda` is within the SLO.
    pub fn admissible(&self, lambda: f64, latency: &dyn Fn(u32) -> f64) -> bool {
        self.tail_latency(lambda, latency) <= self.policy.slo
    }

    /// The largest per-process rate such that every rate up to it is admissible; `None` when even
    /// a lone request cannot meet the SLO.
    pub fn max_rate(&self, latency: &dyn Fn(u32) -> f64) -> Option<f64> {
        let b = self.policy.max_batch;
        if latency(1) + self.policy.guard >= self.policy.slo {
            return None;
        }
        let ceiling = b as f64 / latency(b);
        let mut ok = 0.0;
        let mut bad = ceiling;
        for i in 1..RATE_GRID {
            let lambda = ceiling * i as f64 / RATE_GRID as f64;
            if self.admissible(lambda, latency) {
                ok = lambda;
            } else {
                bad = lambda;
                break;
            }
        }
        if ok == 0.0 {
            // Even the first grid step fails: search below it.
            bad = ceiling / RATE_GRID as f64;
        }
        for _ in 0..30 {
            let mid = 0.5 * (ok + bad);
            if self.admissible(mid, latency) {
                ok = mid;
            } else {
                bad = mid;
            }
        }
        (ok > 0.0).then_some(ok)
    }
}

/// `q`-quantile of the time until `n` Poisson arrivals at rate `lambda` (Erlang(n, λ)), by the
/// Wilson–Hilferty approximation of the gamma quantile (exact for n = 1).
pub fn erlang_quantile(n: f64, lambda: f64, q: f64) -> f64 {
    if n <= 0.0 {
        return 0.0;
    }
    if (n - 1.0).abs() < 1e-12 {
        return -(1.0 - q).ln() / lambda;
    }
    let z = normal_quantile(q);
    let c = 1.0 / (9.0 * n);
    let x = n * (1.0 - c + z * c.sqrt()).powi(3);
    x.max(0.0) / lambda
}

/// Standard normal quantile (Acklam's rational approximation, |error| < 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [-3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2, 1.383577518672690e2, -3.066479806614716e1, 2.506628277459239];
    const B: [f64; 5] = [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [-7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let tail = |q: f64| (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5]) / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0);
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear(fixed: f64, per: f64) -> impl Fn(u32) -> f64 {
        move |k| fixed + per * k as f64
    }

    #[test]
    fn normal_and_erlang_quantiles() {
        assert!((normal_quantile(0.99) - 2.326347874).abs() < 1e-6);
        assert!((normal_quantile(0.5)).abs() < 1e-9);
        // Exponential: the 99th percentile of one arrival at 10/s is ln(100)/10.
        assert!((erlang_quantile(1.0, 10.0, 0.99) - 100f64.ln() / 10.0).abs() < 1e-12);
        // Erlang(10, 1): 99th percentile is about 18.78.
        assert!((erlang_quantile(10.0, 1.0, 0.99) - 18.78).abs() < 0.1);
    }

    #[test]
    fn tail_latency_grows_with_load_and_stays_in_slo_at_low_rates() {
        let lat = linear(0.004, 0.002); // 6 ms for 1, 20 ms for 8
        let q = QueueModel { policy: BatchPolicy::new(8, 100.0), quantile: 0.99 };
        // Very low rate: partial batches leave at the deadline; latency about SLO - guard.
        let low = q.tail_latency(0.5, &lat);
        assert!(low <= 0.1 && low > 0.05, "{low}");
        let cap = 8.0 / lat(8);
        let mid = q.tail_latency(0.5 * cap, &lat);
        let high = q.tail_latency(0.97 * cap, &lat);
        assert!(mid < high, "{mid} {high}");
        assert!(q.tail_latency(1.01 * cap, &lat).is_infinite());
        let max = q.max_rate(&lat).unwrap();
        assert!(max > 0.3 * cap && max < cap, "{max} vs {cap}");
        assert!(q.admissible(max, &lat) && !q.admissible(max * 1.05, &lat));
    }

    #[test]
    fn no_rate_when_a_lone_request_misses() {
        let q = QueueModel { policy: BatchPolicy::new(4, 10.0), quantile: 0.99 };
        assert_eq!(q.max_rate(&linear(0.009, 0.001)), None);
    }

    #[test]
    fn tighter_slo_means_less_capacity() {
        let lat = linear(0.004, 0.002);
        let loose = QueueModel { policy: BatchPolicy::new(8, 200.0), quantile: 0.99 }.max_rate(&lat).unwrap();
        let tight = QueueModel { policy: BatchPolicy::new(8, 50.0), quantile: 0.99 }.max_rate(&lat).unwrap();
        assert!(tight < loose, "{tight} {loose}");
    }
}
