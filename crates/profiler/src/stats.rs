//! When a point's measurement is good enough. Each round runs every process of the point for a
//! fixed time; its segment throughput (rows/s over all processes) is one sample. The throughput
//! estimate is the mean over rounds with a Student-t 95% confidence interval; measuring stops when
//! the interval's half-width is within `target_ci` of the mean (and `min_seconds` have passed, with
//! at least [`MIN_ROUNDS`] rounds), or at the `max_seconds` cap. Batch latencies go to an HDR
//! histogram (bounded memory however many batches run).

use hdrhistogram::Histogram;

/// Fewest rounds a confidence interval is computed from.
pub const MIN_ROUNDS: usize = 3;

/// How long and how precisely to measure each point.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MeasureSettings {
    /// Warm-up per point, seconds (not measured).
    pub warmup_seconds: f64,
    /// Least measuring time per point, seconds.
    pub min_seconds: f64,
    /// Time cap per point, seconds: past it the point is recorded with the interval reached.
    pub max_seconds: f64,
    /// Target relative half-width of the throughput's 95% confidence interval.
    pub target_ci: f64,
}

impl MeasureSettings {
    /// Length of one round: a fifth of the minimum time, within [0.05 s, 2 s].
    pub fn round_seconds(&self) -> f64 {
        (self.min_seconds / 5.0).clamp(0.05, 2.0)
    }
}

/// Two-sided 95% Student-t quantile for `df` degrees of freedom.
pub fn t_975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120,
        2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        d if d <= 30 => T[d - 1],
        d if d <= 60 => 2.000 + 0.042 * (60 - d) as f64 / 30.0,
        _ => 1.960,
    }
}

/// The running estimate of one point.
#[derive(Debug)]
pub struct Estimate {
    /// Segment throughput of each round, rows/s.
    rounds: Vec<f64>,
    hist: Histogram<u64>,
    lat_sum_us: f64,
    batches: u64,
    seconds: f64,
}

impl Default for Estimate {
    fn default() -> Self {
        Estimate::new()
    }
}

impl Estimate {
    pub fn new() -> Self {
        // 1 us to 1 hour at 3 significant digits.
        let hist = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant, valid histogram bounds");
        Estimate { rounds: Vec::new(), hist, lat_sum_us: 0.0, batches: 0, seconds: 0.0 }
    }

    /// Add a round: each process's batch latencies (us) and wall time (s), batches of `rows`.
    pub fn push_round(&mut self, rows: u32, per_process: &[(Vec<u64>, f64)]) {
        let mut throughput = 0.0;
        let mut wall: f64 = 0.0;
        for (lat, secs) in per_process {
            throughput += rows as f64 * lat.len() as f64 / secs.max(1e-9);
            wall = wall.max(*secs);
            for &l in lat {
                self.hist.saturating_record(l.max(1));
                self.lat_sum_us += l as f64;
            }
            self.batches += lat.len() as u64;
        }
        self.rounds.push(throughput);
        self.seconds += wall;
    }

    pub fn rounds(&self) -> usize {
        self.rounds.len()
    }

    pub fn seconds(&self) -> f64 {
        self.seconds
    }

    /// Mean segment throughput, rows/s.
    pub fn throughput(&self) -> f64 {
        if self.rounds.is_empty() { 0.0 } else { self.rounds.iter().sum::<f64>() / self.rounds.len() as f64 }
    }

    /// Relative half-width of the throughput's 95% confidence interval (infinite below 2 rounds).
    pub fn relative_ci(&self) -> f64 {
        let n = self.rounds.len();
        let mean = self.throughput();
        if n < 2 || mean <= 0.0 {
            return f64::INFINITY;
        }
        let var = self.rounds.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        t_975(n - 1) * (var / n as f64).sqrt() / mean
    }

    /// Mean batch latency, seconds.
    pub fn mean_latency_s(&self) -> f64 {
        if self.batches == 0 { 0.0 } else { self.lat_sum_us / self.batches as f64 / 1e6 }
    }

    /// Batch latency percentile `q` (0-100), ms.
    pub fn percentile_ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q / 100.0) as f64 / 1e3
    }

    /// Whether to stop measuring, and whether the target was met.
    pub fn verdict(&self, s: &MeasureSettings) -> Option<bool> {
        if self.rounds.len() >= MIN_ROUNDS && self.seconds >= s.min_seconds && self.relative_ci() <= s.target_ci {
            return Some(true);
        }
        (self.seconds >= s.max_seconds && !self.rounds.is_empty()).then_some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: MeasureSettings = MeasureSettings { warmup_seconds: 0.0, min_seconds: 1.0, max_seconds: 10.0, target_ci: 0.02 };

    #[test]
    fn steady_rounds_converge_once_the_minimum_time_is_reached() {
        let mut e = Estimate::new();
        // Two processes, each 10 batches of 4 rows in 0.125 s at 12.5 ms: 640 rows/s together.
        let proc_round = (vec![12_500u64; 10], 0.125);
        for i in 0..7 {
            e.push_round(4, &[proc_round.clone(), proc_round.clone()]);
            assert_eq!(e.verdict(&S), None, "round {i}: only {} s measured", e.seconds());
        }
        e.push_round(4, &[proc_round.clone(), proc_round]);
        assert_eq!(e.verdict(&S), Some(true));
        assert!((e.throughput() - 640.0).abs() < 1e-6);
        assert!((e.mean_latency_s() - 0.0125).abs() < 1e-9);
        assert!((e.percentile_ms(99.0) - 12.5).abs() < 0.05);
    }

    /// Throughput comes from the round's wall time, not from the latencies: with idle time
    /// between batches (a worker slower to take the next batch than to run it) the two differ,
    /// and latency percentiles come from the histogram, not the mean.
    #[test]
    fn throughput_counts_wall_time_and_percentiles_come_from_the_histogram() {
        let mut e = Estimate::new();
        // One process: 10 batches of 4 rows of 12.5 ms each, but the round took 0.25 s (half idle).
        // Another: 5 batches of 4 rows of 10 ms, then one of 100 ms, in 0.25 s.
        let mut slow_tail = vec![10_000u64; 5];
        slow_tail.push(100_000);
        e.push_round(4, &[(vec![12_500u64; 10], 0.25), (slow_tail, 0.25)]);
        // 40 rows / 0.25 s + 24 rows / 0.25 s = 160 + 96 rows/s; batch / mean latency would say 320 + 400.
        assert!((e.throughput() - 256.0).abs() < 1e-9, "{}", e.throughput());
        // Mean over the 16 batches: (10 x 12.5 + 5 x 10 + 100) / 16 ms.
        assert!((e.mean_latency_s() - 0.275 / 16.0).abs() < 1e-12, "{}", e.mean_latency_s());
        // p50 is a 12.5 ms batch, p99 the 100 ms one (3 significant digits in the histogram).
        assert!((e.percentile_ms(50.0) - 12.5).abs() < 0.05, "{}", e.percentile_ms(50.0));
        assert!((e.percentile_ms(99.0) - 100.0).abs() < 0.1, "{}", e.percentile_ms(99.0));
        assert!((e.seconds() - 0.25).abs() < 1e-12, "the slowest process's wall time, once per round");
    }

    #[test]
    fn noisy_rounds_stop_at_the_cap_without_meeting_the_target() {
        let mut e = Estimate::new();
        let mut k = 0;
        while e.verdict(&S).is_none() {
            let n = if k % 2 == 0 { 5 } else { 15 };
            e.push_round(1, &[(vec![1_000u64; n], 0.5)]);
            k += 1;
        }
        assert_eq!(e.verdict(&S), Some(false));
        assert!(e.seconds() >= S.max_seconds);
        assert!(e.relative_ci() > 0.02 && e.relative_ci().is_finite());
    }

    #[test]
    fn t_quantiles_fall_towards_the_normal_one() {
        assert!((t_975(1) - 12.706).abs() < 1e-9);
        assert!((t_975(30) - 2.042).abs() < 1e-9);
        assert!(t_975(45) < t_975(30) && t_975(45) > t_975(61));
        assert_eq!(t_975(1000), 1.96);
        assert_eq!(Estimate::new().relative_ci(), f64::INFINITY);
    }
}
