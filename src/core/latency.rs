//! Which profile points a service may use, and how much rate a segment may take.
//!
//! Three latency models:
//!
//! - [`LatencyModel::ParvaGpu`]: ParvaGPU's rule. A point is admissible when its profiled batch
//!   latency is below `budget` x SLO; a segment may take its whole profiled throughput.
//! - [`LatencyModel::GpuLet`]: gpu-let's rule (ATC'22), for comparing planners on GPUs without
//!   MIG: a point is admissible when two of its batches, each taken as 1.1x its profiled latency,
//!   fit in the SLO (`2 x 1.1 L <= S`: a request may wait for the batch in progress); a segment
//!   may take its profiled throughput / 1.1; and every rate is planned at its Poisson 99th
//!   percentile ([`gpulet_rate`]).
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
//! T_q = E[W_form] + E[W_queue] + sqrt(d_f² + d_q² + 2 c d_f d_q) + L(k)
//!   with d_f = W_form,q - E[W_form], d_q = W_queue,q - E[W_queue], c = CORRELATION
//! ```
//!
//! - `k`, the typical batch: the policy dispatches a partial batch `S - g - L(b)` after its
//!   oldest request arrived (partial batches are timed as full ones), so
//!   `k = min(b, 1 + λ (S - g - L(b)))`. A point whose full batch cannot meet the SLO
//!   (`L(b) + g >= S`) is never admissible.
//! - `W_form`, the wait for the batch to form: a request at position `j` of a batch of `k` waits
//!   for `k - j` more Poisson arrivals; its distribution over all positions is exact (a mixture of
//!   Erlangs, see [`formation_quantile`]), capped by the policy at `S - g - L(b)`.
//! - `W_queue`, the wait for the process to become free. When batches leave on their deadline
//!   (a batch fills within the window with probability below `1 - q`) and `2 L(b) + g <= S`, the
//!   previous batch always ends before the next is due, so there is none. Otherwise batches arrive with squared coefficient of variation `1/k` (every
//!   k-th Poisson arrival) and are served in `L(k)` (squared CV [`SERVICE_SCV`] for jitter);
//!   Kingman's approximation gives the mean `ρ/(1-ρ) · (1/k + SERVICE_SCV)/2 · L(k)` with
//!   `ρ = λ L(k) / k`, and an exponential tail, `P(W > t) = ρ e^{-tρ/E[W]}`, the quantile.
//! - The two waits are combined: their means plus their quantiles' distances from the means,
//!   added as if correlated at [`CORRELATION`] (between root-sum-square and a plain sum).
//!
//! A point is admissible at `λ` when `T_q ≤ S`. Its per-process capacity is the largest `λ` such
//! that every rate up to it is admissible (bisection, then a check of rates below). At low rates
//! the policy dispatches partial batches in time, so every point whose full batch fits
//! (`L(b) + g < S`) is admissible at some rate; at high rates queueing decides. `parva simulate`
//! runs the same policy event by event, and is what plans are checked against.

use crate::batching::BatchPolicy;
use crate::profile::{ModelProfile, ProfilePoint, interpolate};

/// Squared coefficient of variation assumed for batch execution times (timing jitter).
pub const SERVICE_SCV: f64 = 0.02;
/// Correlation assumed between the batch-formation and queueing deviations when combining their
/// quantiles (0: root-sum-square; 1: plain sum); checked against `parva simulate` on generated
/// fleets (see `scripts/bench/plan-results.md`).
pub const CORRELATION: f64 = 0.0;

/// How admissibility and segment capacity are decided.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "model", rename_all = "lowercase")]
pub enum LatencyModel {
    /// ParvaGPU's rule: profiled batch latency < budget x SLO.
    ParvaGpu { budget: f64 },
    /// Predicted tail latency (at `percentile`, e.g. 99.0) within the SLO, batching and queueing included.
    Queueing { percentile: f64 },
    /// gpu-let's rule: `2 x 1.1 x latency <= SLO`, capacity throughput / 1.1, rates at their
    /// Poisson p99 ([`gpulet_rate`]).
    #[serde(rename = "gpulet")]
    GpuLet,
}

/// gpu-let's safety factor on profiled latency.
pub const GPULET_LATENCY_FACTOR: f64 = 1.1;

/// The rate gpu-let plans a service at: the 99th percentile of a Poisson count with mean `rate`
/// (normal approximation, `rate + 2.326 sqrt(rate)`), x1.1 above 550 requests/s.
pub fn gpulet_rate(rate: f64) -> f64 {
    let p99 = rate + 2.326 * rate.max(0.0).sqrt();
    if rate > 550.0 { p99 * 1.1 } else { p99 }
}

impl LatencyModel {
    /// The capacity (samples/s, whole segment) a planner may count on for `point` of `profile`
    /// serving a service with an SLO of `slo_ms`; `None` when the point is not admissible.
    pub fn capacity(&self, profile: &ModelProfile, point: &ProfilePoint, slo_ms: f64) -> Option<f64> {
        self.capacity_on_curve(&profile.latency_curve(point.size, point.procs), point, slo_ms)
    }

    /// As [`LatencyModel::capacity`], with the (batch, latency) curve of the point's size and
    /// process count already computed ([`ModelProfile::latency_curve`]).
    pub fn capacity_on_curve(&self, curve: &[(u32, f64)], point: &ProfilePoint, slo_ms: f64) -> Option<f64> {
        if !point.is_measured() {
            return None;
        }
        match *self {
            LatencyModel::ParvaGpu { budget } => {
                (point.latency_s * 1000.0 < budget * slo_ms).then(|| point.segment_throughput())
            }
            LatencyModel::GpuLet => (2.0 * GPULET_LATENCY_FACTOR * point.latency_s * 1000.0 <= slo_ms)
                .then(|| point.segment_throughput() / GPULET_LATENCY_FACTOR),
            LatencyModel::Queueing { percentile } => {
                let table: Vec<f64> = (0..=point.batch)
                    .map(|k| interpolate(curve, k.max(1)).unwrap_or(point.latency_s * k as f64 / point.batch as f64))
                    .collect();
                let latency = |k: u32| table[(k as usize).min(table.len() - 1)];
                let q = QueueModel { policy: BatchPolicy::new(point.batch, slo_ms), quantile: percentile / 100.0 };
                // Never more than the profiled throughput, whatever the interpolation says.
                q.max_rate(&latency).map(|per_proc| (per_proc * point.procs as f64).min(point.segment_throughput()))
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

/// Bisection steps when searching the largest admissible rate.
const RATE_STEPS: usize = 18;
/// Rates below the result that are checked too.
const RATE_GRID: usize = 8;

impl QueueModel {
    /// Predicted `quantile` latency (s) of a request at per-process rate `lambda` (req/s);
    /// infinite when the process cannot keep up.
    pub fn tail_latency(&self, lambda: f64, latency: &dyn Fn(u32) -> f64) -> f64 {
        let BatchPolicy { max_batch: b, slo, guard } = self.policy;
        if lambda <= 0.0 {
            return latency(1);
        }
        // The policy sends a partial batch `window` after its oldest request arrived (timed as a
        // full batch), so the typical batch holds the arrivals of that window, at most b.
        let window = (slo - guard - latency(b)).max(0.0);
        let k = (1.0 + lambda * window).clamp(1.0, b as f64);
        let kb = k.ceil().max(1.0) as u32;
        let exec = latency(kb);
        let rho = lambda * exec / kb as f64;
        if rho >= 1.0 {
            return f64::INFINITY;
        }
        // Batch formation: a request at position j of a batch of k waits for k - j more arrivals.
        let (form_mean, form_q) = if kb <= 1 {
            (0.0, 0.0)
        } else {
            let mean = ((kb - 1) as f64 / (2.0 * lambda)).min(window);
            (mean, formation_quantile(kb, lambda, self.quantile).min(window))
        };
        // Waiting for the process. In the timeout regime, when two full batches fit in the
        // deadline, the previous batch always ends before the next one is due: no wait.
        // Batches must also rarely fill: a full batch leaves early, and back-to-back full batches
        // queue. Probability that b - 1 more requests arrive within the window:
        let p_fill = poisson_tail(lambda * window, b.saturating_sub(1));
        let deadline_safe = 2.0 * latency(b) + guard <= slo && p_fill <= 1.0 - self.quantile;
        let (wait_mean, wait_q) = if deadline_safe {
            (0.0, 0.0)
        } else {
            let mean = rho / (1.0 - rho) * (1.0 / kb as f64 + SERVICE_SCV) / 2.0 * exec;
            let p_tail = 1.0 - self.quantile;
            let q = if rho > p_tail && mean > 0.0 { mean / rho * (rho / p_tail).ln() } else { 0.0 };
            (mean, q)
        };
        // Quantile of the sum of the two waits: their means plus the deviations of their quantiles
        // combined as if correlated at CORRELATION (0 would be root-sum-square, 1 their sum).
        let (df, dw) = (form_q - form_mean, wait_q - wait_mean);
        let dev = (df * df + dw * dw + 2.0 * CORRELATION * df * dw).max(0.0).sqrt();
        form_mean + wait_mean + dev + exec
    }

    /// Whether the predicted tail latency at `lambda` is within the SLO.
    pub fn admissible(&self, lambda: f64, latency: &dyn Fn(u32) -> f64) -> bool {
        self.tail_latency(lambda, latency) <= self.policy.slo
    }

    /// The largest per-process rate such that every rate up to it is admissible (bisection, then a
    /// check of a grid below the result); `None` when even a lone request cannot meet the SLO.
    pub fn max_rate(&self, latency: &dyn Fn(u32) -> f64) -> Option<f64> {
        let b = self.policy.max_batch;
        if latency(b) + self.policy.guard >= self.policy.slo {
            return None; // the policy could not keep even a lone request within the SLO
        }
        // No process can take more than its best k / L(k).
        let ceiling = (1..=b).map(|k| k as f64 / latency(k)).fold(0.0, f64::max);
        let (mut ok, mut bad) = (0.0, ceiling);
        for _ in 0..RATE_STEPS {
            let mid = 0.5 * (ok + bad);
            if self.admissible(mid, latency) {
                ok = mid;
            } else {
                bad = mid;
            }
        }
        // The predicted latency is not strictly monotone in the rate: make sure no lower rate fails.
        for i in 1..RATE_GRID {
            let lambda = ok * i as f64 / RATE_GRID as f64;
            if !self.admissible(lambda, latency) {
                ok = ok * (i - 1) as f64 / RATE_GRID as f64;
                break;
            }
        }
        (ok > 0.0).then_some(ok)
    }
}

/// `P(Poisson(mean) >= n)`.
pub fn poisson_tail(mean: f64, n: u32) -> f64 {
    if n == 0 {
        return 1.0;
    }
    if mean <= 0.0 {
        return 0.0;
    }
    let (ln_m, mut ln_pmf, mut below) = (mean.ln(), -mean, 0.0);
    for i in 0..n {
        if i > 0 {
            ln_pmf += ln_m - (i as f64).ln();
        }
        below += ln_pmf.exp();
    }
    (1.0 - below).max(0.0)
}

/// `q`-quantile of the wait for a batch of `k` to form at rate `lambda`, over all positions: the
/// request at position j (1-based) waits for `k - j` more arrivals, so with `u = λt`,
/// `P(wait > t) = (1/k) Σ_{i=0}^{k-2} (k-1-i) · P(Poisson(u) = i)`. The solution `u(k, q)` does
/// not depend on `λ`; it is found by bisection once per (k, q) and remembered.
pub fn formation_quantile(k: u32, lambda: f64, q: f64) -> f64 {
    if k <= 1 {
        return 0.0;
    }
    formation_u(k, q) / lambda
}

fn formation_u(k: u32, q: f64) -> f64 {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static MEMO: OnceLock<Mutex<HashMap<(u32, u64), f64>>> = OnceLock::new();
    let memo = MEMO.get_or_init(|| Mutex::new(HashMap::new()));
    let key = (k, q.to_bits());
    if let Some(u) = memo.lock().ok().and_then(|m| m.get(&key).copied()) {
        return u;
    }
    let u = solve_formation_u(k, q);
    if let Ok(mut m) = memo.lock() {
        m.insert(key, u);
    }
    u
}

fn solve_formation_u(k: u32, q: f64) -> f64 {
    let tail = |u: f64| {
        if u <= 0.0 {
            return (k - 1) as f64 / k as f64; // no arrival yet: every request but the last waits
        }
        let ln_u = u.ln();
        let mut ln_pmf = -u;
        let mut sum = 0.0;
        for i in 0..k - 1 {
            if i > 0 {
                ln_pmf += ln_u - (i as f64).ln();
            }
            sum += (k - 1 - i) as f64 * ln_pmf.exp();
        }
        sum / k as f64
    };
    let target = 1.0 - q;
    if tail(0.0) <= target {
        return 0.0;
    }
    // The oldest request's quantile bounds the mixture's from above.
    let (mut lo, mut hi) = (0.0, erlang_quantile((k - 1) as f64, 1.0, q) * 1.2 + 1.0);
    while tail(hi) > target {
        hi *= 2.0;
    }
    for _ in 0..40 {
        let mid = 0.5 * (lo + hi);
        if tail(mid) > target { lo = mid } else { hi = mid }
    }
    hi
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
        // A batch of 2: half the requests wait for one arrival (exponential), half do not.
        let t = formation_quantile(2, 10.0, 0.99);
        assert!((t - 50f64.ln() / 10.0).abs() < 1e-6, "{t}");
        assert!((poisson_tail(2.0, 1) - (1.0 - (-2.0f64).exp())).abs() < 1e-12);
        assert!((poisson_tail(2.0, 3) - (1.0 - 5.0 * (-2.0f64).exp())).abs() < 1e-12);
        assert_eq!(formation_quantile(1, 10.0, 0.99), 0.0);
        // Over all positions the tail is lighter than the oldest request's alone.
        assert!(formation_quantile(16, 1.0, 0.99) < erlang_quantile(15.0, 1.0, 0.99));
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
    fn no_rate_when_a_full_batch_cannot_meet_the_slo() {
        // A full batch of 4 takes 13 ms: with a 10 ms SLO no batch of 4 can ever be on time.
        let q = QueueModel { policy: BatchPolicy::new(4, 10.0), quantile: 0.99 };
        assert_eq!(q.max_rate(&linear(0.009, 0.001)), None);
        // Batches of 1 take 5 ms: fine at low rates.
        let q1 = QueueModel { policy: BatchPolicy::new(1, 10.0), quantile: 0.99 };
        assert!(q1.max_rate(&linear(0.004, 0.001)).is_some());
    }

    #[test]
    fn tighter_slo_means_less_capacity() {
        let lat = linear(0.004, 0.002);
        let loose = QueueModel { policy: BatchPolicy::new(8, 200.0), quantile: 0.99 }.max_rate(&lat).unwrap();
        let tight = QueueModel { policy: BatchPolicy::new(8, 50.0), quantile: 0.99 }.max_rate(&lat).unwrap();
        assert!(tight < loose, "{tight} {loose}");
    }
}
