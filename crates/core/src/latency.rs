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
//! Per worker process: arrivals at rate `λ`, batches of at most `b`, batch latency `L(k)`
//! interpolated from the profile (same size and process count), SLO `S`, guard `g` (see
//! [`crate::batching::BatchPolicy`]); the policy sends a partial batch `w = S - g - L(b)` after
//! its oldest request arrived. A point whose full batch cannot meet the SLO (`L(b) + g >= S`) is
//! never admissible.
//!
//! - **Arrivals.** The router gives each process every n-th request of its service (smooth
//!   weighted round robin), so a process's gaps are sums of n exponential gaps (Erlang). n is at
//!   least `splits` = ⌊service rate / the most any one process of the model can take⌋, however
//!   the planner covers the service; the model uses that bound (1: Poisson, the most variable).
//! - **Batches.** The typical batch holds the arrivals of one window, `k = min(b, 1 + λw)`, taken
//!   as a mixture of batches of ⌊k⌋ and ⌈k⌉ requests. A batch of one waits for its deadline.
//! - **A request's delay** (arrival to the start of its batch) at position `i` of a batch of `k`
//!   is `D = max(F, V - G)`: `F`, the wait for the `k - i` requests after it (at most `w`);
//!   `G`, the time since the previous batch's last request; `V = W + L(k)`, when the previous
//!   batch ends after its last request, `W` being how long that batch waited for the process.
//!   F and G are sums of exponential gaps, independent of each other and of `W`; the max is what
//!   makes the two waits overlap instead of add (a batch that took long to form finds the
//!   process free). This is exact for batches that fill (the Lindley recursion of batches).
//! - **W**, the waiting time of batches arriving every k requests and served in `L(k)`: tail
//!   `P(W > t) = p e^{-θt}`, `θ` the root of `θL + θ²σ²/2 = k ln(1 + θ/λ)` (Kingman's
//!   exponential bound; σ² the variance of a batch's execution time: batch sizes vary with the
//!   arrivals in a window, plus [`SERVICE_SCV`] of jitter) and `p = min(1, BUSY_FACTOR · ρ)`,
//!   `ρ = λ L(k) / k`. Utilisation above [`MAX_UTILIZATION`] is not admitted.
//! - `P(latency > S) = avg over positions of P(D > S - L(k))`, in closed form (Poisson sums).
//!
//! A point is admissible at `λ` when `P(latency > S) ≤ 1 - q`. Its per-process capacity is the
//! largest `λ` such that every rate up to it is admissible (bisection, then a check of rates
//! below).
//!
//! **Two dispatch rules.** The policy as it runs (issue 36) also sends the *keep-up batch* at
//! once (see [`BatchPolicy::keep_up_batch`]): one request at low load, where a lone request used
//! to wait for its deadline. [`QueueModel::latency_at`] predicts that rule at any rate, p50 as
//! well as p99: the typical batch is at most the keep-up batch, a batch of one waits for its
//! deadline only when the keep-up batch is larger, and a batch that leaves by count finds the
//! process busy only when its requests came before the previous batch ended. Admissibility and
//! capacity are still computed for the deadline-only rule: at every rate it holds every batch at
//! least as long as the running policy, and `parva simulate` (which runs the policy as it runs)
//! serves as much as before, or more, at every point of the calibration grid but one (6.6 % less,
//! where the model plans 38 % of it; `scripts/bench/lowload-results.md`), so plans are unchanged
//! and stay safe. `parva simulate` runs the same policy event by event, and is what plans are checked
//! against: `cargo test -p parva-core --release calibration -- --ignored --nocapture` prints the
//! model's capacity against the simulator's over a grid of latency curves, batch sizes and SLOs
//! (`crates/core/src/latency_calibration.rs`); a smaller grid is a test.

use crate::batching::BatchPolicy;
use crate::profile::{ModelProfile, ProfilePoint, interpolate};

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
        self.capacity_on_curve(&profile.latency_curve(point.size, point.procs), point, slo_ms, 1)
    }

    /// As [`LatencyModel::capacity`], with the (batch, latency) curve of the point's size and
    /// process count already computed ([`ModelProfile::latency_curve`]), for a service whose
    /// requests the router spreads over at least `splits` processes (see [`QueueModel::splits`]).
    pub fn capacity_on_curve(&self, curve: &[(u32, f64)], point: &ProfilePoint, slo_ms: f64, splits: u32) -> Option<f64> {
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
                let q = QueueModel { policy: BatchPolicy::new(point.batch, slo_ms), quantile: percentile / 100.0, splits };
                // Never more than the profiled throughput, whatever the interpolation says.
                q.max_rate(&latency).map(|per_proc| (per_proc * point.procs as f64).min(point.segment_throughput()))
            }
        }
    }
}

/// Which dispatch rule the model assumes (see [`crate::batching`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dispatch {
    /// The policy as it runs: the keep-up batch goes at once, else full batches or the deadline.
    KeepUp,
    /// Full batches or the deadline only (the policy before issue 36). Capacity is planned on
    /// it: at every rate it waits at least as long as the running policy, and the simulator
    /// serves at least as much under the running policy (the calibration table).
    Deadline,
}

/// The queueing predictor for one worker process.
#[derive(Debug, Clone, Copy)]
pub struct QueueModel {
    pub policy: BatchPolicy,
    /// Quantile in (0, 1), e.g. 0.99.
    pub quantile: f64,
    /// A lower bound on the number of processes the service's requests are spread over (1: the
    /// process sees Poisson arrivals). The router's (and the simulator's) smooth weighted round
    /// robin gives each process every n-th request, n >= `splits`, so its gaps are sums of at
    /// least `splits` exponential gaps: smoother than Poisson. At most [`MAX_SPLITS`] is used.
    pub splits: u32,
}

/// Largest `splits` the model uses (the cost of a prediction grows with it).
pub const MAX_SPLITS: u32 = 16;

/// Bisection steps when searching the largest admissible rate.
const RATE_STEPS: usize = 18;
/// Rates below the result that are checked too.
const RATE_GRID: usize = 8;

/// The state of one process at a given rate, as the model sees it.
#[derive(Debug, Clone, Copy)]
struct Regime {
    lambda: f64,
    /// Typical batch size.
    kb: u32,
    /// Its execution time, `L(kb)`.
    exec: f64,
    /// Longest wait for a batch to form (`S - g - L(b)`).
    window: f64,
    /// Decay rate of the batches' waiting-time tail.
    theta: f64,
    /// Probability that a batch waits for the process.
    busy: f64,
    /// A batch of one that waits for its deadline (the policy allows larger batches).
    lone_waits: bool,
    /// Arrivals are every `phases`-th event of a Poisson process of rate `phases · λ` (Erlang
    /// gaps): the router's round robin gives each process every n-th request of its service.
    phases: u32,
}

impl Regime {
    /// `P(delay > t)`: probability that a request waits longer than `t` between its arrival and
    /// its batch's start, over the positions of a batch.
    fn delay_tail(&self, t: f64) -> f64 {
        let Regime { lambda, kb, exec, window, theta, busy, lone_waits, phases: m } = *self;
        let mu = lambda * m as f64;
        if t < 0.0 {
            return 1.0;
        }
        // Batch formation: P(F_i <= t) = P(Poisson(μt) >= m (kb - i)), capped by the window.
        let formed = if t >= window {
            None
        } else if kb == 1 && lone_waits {
            return 1.0;
        } else {
            Some(poisson_tails(mu * t, m * kb))
        };
        // The previous batch: P(W - G_i > t - L) with G_i ~ Erlang(m i, μ), W ~ busy · Exp(θ).
        let s = t - exec;
        let ratio = (mu / (mu + theta)).powi(m as i32);
        let (gap, gap_tilted) = if s < 0.0 {
            (Some(poisson_tails(mu * -s, m * kb)), Some(poisson_tails((mu + theta) * -s, m * kb)))
        } else {
            (None, None)
        };
        let mut sum = 0.0;
        let mut ratio_i = 1.0;
        for i in 1..=kb {
            ratio_i *= ratio;
            let p_formed = match &formed {
                Some(tails) => tails[(m * (kb - i)) as usize],
                None => 1.0,
            };
            let p_late = match (&gap, &gap_tilted) {
                (Some(g), Some(gt)) => {
                    // P(G < u) + busy e^{θu} E[e^{-θG}; G >= u], u = -s.
                    g[(m * i) as usize] + busy * (theta * -s).exp() * ratio_i * (1.0 - gt[(m * i) as usize])
                }
                _ => busy * (-theta * s).exp() * ratio_i,
            };
            sum += 1.0 - p_formed * (1.0 - p_late.clamp(0.0, 1.0));
        }
        sum / kb as f64
    }
}

/// `P(latency > t)` over the mixture of batch sizes: each part's delay beyond `t - L(k)`.
fn latency_tail(parts: &[(f64, Regime); 2], t: f64) -> f64 {
    parts.iter().filter(|(w, _)| *w > 0.0).map(|(w, r)| w * r.delay_tail(t - r.exec)).sum()
}

/// `P(Poisson(mean) >= j)` for `j` in `0..=n`.
fn poisson_tails(mean: f64, n: u32) -> Vec<f64> {
    let mut tails = Vec::with_capacity(n as usize + 1);
    tails.push(1.0);
    if mean <= 0.0 {
        tails.resize(n as usize + 1, 0.0);
        return tails;
    }
    let (ln_m, mut ln_pmf, mut below) = (mean.ln(), -mean, 0.0);
    for j in 0..n {
        if j > 0 {
            ln_pmf += ln_m - (j as f64).ln();
        }
        below += ln_pmf.exp();
        tails.push((1.0 - below).max(0.0));
    }
    tails
}

/// The decay rate `θ > 0` of the waiting time of batches of `k` arriving every `k` Poisson
/// arrivals at rate `λ` and served in `exec`: the root of `θ·exec = k ln(1 + θ/λ)` (Kingman's
/// exponential bound, exact for M/M/1). `None` when `λ·exec >= k` (the process cannot keep up).
fn decay_rate(lambda: f64, k: u32, phases: u32, exec: f64, var: f64) -> Option<f64> {
    if lambda * exec >= k as f64 || exec <= 0.0 {
        return None;
    }
    let (n, mu) = ((k * phases) as f64, lambda * phases as f64);
    let f = |theta: f64| theta * exec + 0.5 * theta * theta * var - n * (theta / mu).ln_1p();
    let mut hi = 1.0 / exec;
    while f(hi) <= 0.0 {
        hi *= 2.0;
        if !hi.is_finite() {
            return None;
        }
    }
    // f is convex with f(0) = 0 and f'(0) < 0: Newton's method from a point right of the root
    // stays right of it and converges to it monotonically (a few steps instead of a bisection's 60).
    let df = |theta: f64| exec + theta * var - n / (mu + theta);
    for _ in 0..100 {
        let (fx, dx) = (f(hi), df(hi));
        if dx <= 0.0 {
            break;
        }
        let next = hi - fx / dx;
        if !(next > 0.0 && next < hi) || hi - next <= 1e-12 * hi {
            break;
        }
        hi = next;
    }
    Some(hi)
}

impl QueueModel {
    /// The model's view of the process at rate `lambda`: the typical batch holds
    /// `k = 1 + λ·window` requests (at most b), taken as a mixture of batches of `floor(k)` and
    /// `ceil(k)`. `None` when the process cannot keep up.
    fn regimes(&self, lambda: f64, latency: &dyn Fn(u32) -> f64, dispatch: Dispatch) -> Option<[(f64, Regime); 2]> {
        let BatchPolicy { max_batch: b, slo, guard } = self.policy;
        // The policy sends a partial batch `window` after its oldest request arrived (timed as a
        // full batch), so the typical batch holds the arrivals of that window, at most b.
        let window = (slo - guard - latency(b)).max(0.0);
        // A free process takes the keep-up batch as soon as it is queued (one request at low
        // load: a lone request does not wait for its deadline then).
        let keep_up = match dispatch {
            Dispatch::KeepUp => self.policy.keep_up_batch(lambda, |k| latency(k as u32)) as u32,
            Dispatch::Deadline => b,
        };
        let k = (1.0 + lambda * window).clamp(1.0, keep_up as f64);
        let by_count = keep_up < b && (keep_up as f64) < 1.0 + lambda * window;
        let m = self.splits.clamp(1, MAX_SPLITS);
        let lo = (k.floor() as u32).clamp(1, b);
        let hi = (k.ceil() as u32).clamp(1, b);
        let w_hi = if hi > lo { k - lo as f64 } else { 1.0 };
        let one = |kb: u32| -> Option<Regime> {
            let exec = latency(kb);
            let rho = lambda * exec / kb as f64;
            if rho > MAX_UTILIZATION {
                return None;
            }
            // Batch sizes vary (Poisson arrivals in the window) and so do their execution times.
            let per = if kb > 1 { (exec - latency(1)) / (kb - 1) as f64 } else { 0.0 };
            let var_k = if k < b as f64 { lambda * window / m as f64 } else { 0.0 };
            let var = per * per * var_k + SERVICE_SCV * exec * exec;
            let theta = decay_rate(lambda, kb, m, exec, var)?;
            // A batch that leaves as soon as it holds kb finds the process busy only when its kb
            // requests came before the previous batch ended; one that waits grows instead of
            // queueing behind it, so the busy share is that chance, not the utilisation's.
            let busy = if by_count { poisson_tails(lambda * m as f64 * exec, m * kb)[(m * kb) as usize] } else { (rho * BUSY_FACTOR).min(1.0) };
            Some(Regime { lambda, kb, exec, window, theta, busy, lone_waits: keep_up > 1, phases: m })
        };
        let r_hi = one(hi)?;
        let r_lo = if hi > lo { one(lo)? } else { r_hi };
        Some([(1.0 - w_hi, r_lo), (w_hi, r_hi)])
    }

    /// Predicted `quantile` latency (s) of a request at per-process rate `lambda` (req/s);
    /// infinite when the process cannot keep up.
    pub fn tail_latency(&self, lambda: f64, latency: &dyn Fn(u32) -> f64) -> f64 {
        self.latency_at(lambda, self.quantile, latency)
    }

    /// Predicted latency (s) at any `quantile` in (0, 1) (0.5: the median) of a request at
    /// per-process rate `lambda`; infinite when the process cannot keep up.
    pub fn latency_at(&self, lambda: f64, quantile: f64, latency: &dyn Fn(u32) -> f64) -> f64 {
        if lambda <= 0.0 {
            return latency(1);
        }
        let Some(parts) = self.regimes(lambda, latency, Dispatch::KeepUp) else {
            return f64::INFINITY;
        };
        // The quantile of the latency, delay + L(batch), over the mixture.
        let tail = |t: f64| latency_tail(&parts, t);
        let target = 1.0 - quantile.clamp(1e-9, 1.0 - 1e-9);
        let mut hi = parts[1].1.window.max(parts[1].1.exec) + 2.0 * parts[1].1.exec;
        while tail(hi) > target {
            hi *= 2.0;
            if hi > 1e6 {
                return f64::INFINITY;
            }
        }
        let mut lo = 0.0;
        for _ in 0..50 {
            let mid = 0.5 * (lo + hi);
            if tail(mid) > target { lo = mid } else { hi = mid }
        }
        hi
    }

    /// Whether the predicted tail latency at `lambda` is within the SLO.
    pub fn admissible(&self, lambda: f64, latency: &dyn Fn(u32) -> f64) -> bool {
        if lambda <= 0.0 {
            return latency(1) <= self.policy.slo;
        }
        match self.regimes(lambda, latency, Dispatch::Deadline) {
            Some(parts) => latency_tail(&parts, self.policy.slo) <= 1.0 - self.quantile,
            None => false,
        }
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

/// The probability that a batch finds the process busy, as a multiple of the utilisation `ρ`
/// (capped at 1). `ρ` is exact for Poisson arrivals; the tail of a deterministic service is
/// heavier than an exponential with that weight (for M/D/1 the asymptotic weight is 1.2-3.3 ρ
/// at ρ = 0.6-0.1), so the model takes 2 ρ. Checked against `parva simulate`
/// (`cargo test -p parva-core --release calibration -- --ignored --nocapture`).
pub const BUSY_FACTOR: f64 = 2.0;
/// Highest utilisation `λ·L(k)/k` the model admits: near saturation the tail depends on noise
/// (timing jitter, a burst) more than on any model, and a plan needs headroom.
pub const MAX_UTILIZATION: f64 = 0.95;


#[cfg(test)]
#[path = "latency_calibration.rs"]
mod calibration;

#[cfg(test)]
mod tests {
    use super::*;

    fn linear(fixed: f64, per: f64) -> impl Fn(u32) -> f64 {
        move |k| fixed + per * k as f64
    }

    #[test]
    fn poisson_sums_and_the_decay_rate() {
        let t = poisson_tails(2.0, 3);
        assert_eq!(t.len(), 4);
        assert!((t[1] - (1.0 - (-2.0f64).exp())).abs() < 1e-12);
        assert!((t[3] - (1.0 - 5.0 * (-2.0f64).exp())).abs() < 1e-12);
        assert_eq!(t[0], 1.0);
        // M/M/1-like check: k = 1, no variance, θ = μ - λ solves θL = ln(1 + θ/λ) only for
        // exponential service; for deterministic service θ solves λ(e^{θL} - 1) = θ.
        let (lambda, l) = (0.5, 1.0);
        let theta = decay_rate(lambda, 1, 1, l, 0.0).unwrap();
        assert!((lambda * ((theta * l).exp() - 1.0) - theta).abs() < 1e-9, "{theta}");
        // Smoother arrivals (Erlang phases), or less variable service, decay faster.
        assert!(decay_rate(lambda, 1, 4, l, 0.0).unwrap() > theta);
        assert!(decay_rate(lambda, 1, 1, l, 0.1).unwrap() < theta);
        // Overload has no decay rate.
        assert_eq!(decay_rate(1.0, 1, 1, 1.0, 0.0), None);
    }

    #[test]
    fn requests_spread_over_more_processes_allow_more_rate_per_process() {
        let lat = linear(0.004, 0.009); // bert-like: 13 ms for 1, 40 ms for 4
        let cap = |splits| QueueModel { policy: BatchPolicy::new(4, 106.0), quantile: 0.99, splits }.max_rate(&lat).unwrap();
        let (one, four, many) = (cap(1), cap(4), cap(1000));
        assert!(one < four, "{one} {four}");
        // Capped at MAX_SPLITS, and never above the utilisation cap.
        assert_eq!(many, cap(MAX_SPLITS));
        assert!(many <= MAX_UTILIZATION * 4.0 / lat(4) + 1e-9, "{many}");
    }

    #[test]
    fn tail_latency_grows_with_load_and_stays_in_slo_at_low_rates() {
        let lat = linear(0.004, 0.002); // 6 ms for 1, 20 ms for 8
        let q = QueueModel { policy: BatchPolicy::new(8, 100.0), quantile: 0.99, splits: 1 };
        // Very low rate: a lone request goes at once (issue 36; it used to wait for its
        // deadline, about SLO - guard): about one batch of one, rarely behind another.
        let low = q.tail_latency(0.5, &lat);
        assert!(low >= lat(1) && low <= 2.0 * lat(1) + 1e-9, "{low}");
        let median = q.latency_at(0.5, 0.5, &lat);
        assert!(median >= lat(1) - 1e-9 && median <= low, "{median} {low}");
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
        let q = QueueModel { policy: BatchPolicy::new(4, 10.0), quantile: 0.99, splits: 1 };
        assert_eq!(q.max_rate(&linear(0.009, 0.001)), None);
        // Batches of 1 take 5 ms: fine at low rates.
        let q1 = QueueModel { policy: BatchPolicy::new(1, 10.0), quantile: 0.99, splits: 1 };
        assert!(q1.max_rate(&linear(0.004, 0.001)).is_some());
    }

    #[test]
    fn tighter_slo_means_less_capacity() {
        let lat = linear(0.004, 0.002);
        let loose = QueueModel { policy: BatchPolicy::new(8, 200.0), quantile: 0.99, splits: 1 }.max_rate(&lat).unwrap();
        let tight = QueueModel { policy: BatchPolicy::new(8, 50.0), quantile: 0.99, splits: 1 }.max_rate(&lat).unwrap();
        assert!(tight < loose, "{tight} {loose}");
    }
}
