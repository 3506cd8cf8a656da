//! Per-service counters and HDR histograms (microseconds, 3 significant digits, 1 µs to 1 hour):
//! memory stays bounded however long the run. Only requests *scheduled* inside the measured window
//! (from the warm-up to the duration) are recorded; every one of them ends in exactly one of
//! dropped, succeeded or failed.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::client::Outcome;

const MAX_US: u64 = 3_600_000_000;

fn histogram() -> Histogram<u64> {
    // Bounds are constants that the library accepts (low >= 1, high >= 2 * low, sigfig <= 5).
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

fn us(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_US)
}

/// What one service's requests did.
#[derive(Debug, Clone)]
pub struct ServiceStats {
    pub slo_us: u64,
    /// Requests due inside the window.
    pub scheduled: u64,
    /// Not sent: the in-flight cap was hit when they were due.
    pub dropped: u64,
    pub succeeded: u64,
    /// Failures by cause: the HTTP status (`"429"`), `"timeout"`, `"connection"`, `"bad_response"`.
    pub failed: BTreeMap<String, u64>,
    /// Succeeded within the SLO (latency from the scheduled time).
    pub within_slo: u64,
    /// Latency of successful requests from their scheduled send time.
    pub latency: Histogram<u64>,
    /// Latency of successful requests from the moment they were actually sent (what a closed
    /// loop or perf_analyzer's request-rate mode reports).
    pub latency_from_send: Histogram<u64>,
    /// How late each sent request left: actual send time minus scheduled time.
    pub lag: Histogram<u64>,
}

impl ServiceStats {
    pub fn new(slo_ms: f64) -> ServiceStats {
        ServiceStats {
            slo_us: (slo_ms * 1000.0).round() as u64,
            scheduled: 0,
            dropped: 0,
            succeeded: 0,
            failed: BTreeMap::new(),
            within_slo: 0,
            latency: histogram(),
            latency_from_send: histogram(),
            lag: histogram(),
        }
    }

    pub fn record_drop(&mut self) {
        self.scheduled += 1;
        self.dropped += 1;
    }

    /// A request that was sent `lag` after its scheduled time and ended with `outcome`, `latency`
    /// after its scheduled time.
    pub fn record(&mut self, lag: Duration, latency: Duration, outcome: &Outcome) {
        self.scheduled += 1;
        let _ = self.lag.record(us(lag));
        match outcome {
            Outcome::Ok => {
                self.succeeded += 1;
                let l = us(latency);
                let _ = self.latency.record(l);
                let _ = self.latency_from_send.record(us(latency.saturating_sub(lag)));
                if l <= self.slo_us {
                    self.within_slo += 1;
                }
            }
            Outcome::Status(code) => self.fail(code.to_string()),
            Outcome::Connection => self.fail("connection".into()),
            Outcome::BadResponse => self.fail("bad_response".into()),
        }
    }

    /// A request that did not finish within the timeout of its scheduled time.
    pub fn record_timeout(&mut self, lag: Option<Duration>) {
        self.scheduled += 1;
        if let Some(lag) = lag {
            let _ = self.lag.record(us(lag));
        }
        self.fail("timeout".into());
    }

    fn fail(&mut self, why: String) {
        *self.failed.entry(why).or_default() += 1;
    }

    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    pub fn sent(&self) -> u64 {
        self.scheduled - self.dropped
    }

    /// Share of scheduled requests that succeeded within the SLO, percent (failures and drops
    /// count as misses). 0 when nothing was scheduled.
    pub fn attainment_pct(&self) -> f64 {
        if self.scheduled == 0 { 0.0 } else { 100.0 * self.within_slo as f64 / self.scheduled as f64 }
    }

    /// Whether at least `percentile` % of the scheduled requests succeeded within the SLO: the
    /// `percentile`-th latency, counting failed and dropped requests as infinitely late, is within
    /// the SLO. A service with no request in the window does not pass.
    pub fn passes(&self, percentile: f64) -> bool {
        self.scheduled > 0 && self.within_slo as f64 >= percentile / 100.0 * self.scheduled as f64 - 1e-9
    }

    /// Latency quantile of successful requests in ms (`None` when none succeeded).
    pub fn latency_ms(&self, quantile: f64) -> Option<f64> {
        quantile_ms(&self.latency, quantile)
    }

    /// Points of the latency CDF: (ms, fraction of the *scheduled* requests that succeeded within
    /// it). The curve ends at the success share, below 1 when requests failed or were dropped.
    /// At most ~1000 points.
    pub fn cdf(&self) -> Vec<(f64, f64)> {
        let mut out = Vec::new();
        if self.scheduled == 0 {
            return out;
        }
        let total = self.scheduled as f64;
        let mut last = -1.0;
        let mut cum = 0u64;
        let mut values = self.latency.iter_recorded().peekable();
        while let Some(v) = values.next() {
            cum += v.count_at_value();
            let frac = cum as f64 / total;
            if frac - last >= 0.001 || values.peek().is_none() {
                out.push((self.latency.median_equivalent(v.value_iterated_to()) as f64 / 1000.0, frac));
                last = frac;
            }
        }
        out
    }
}

/// A quantile of `h` in ms (`None` when empty); quantile 1 is the maximum. Values are the middle
/// of their histogram bucket (within 0.05 % of the recorded value).
pub fn quantile_ms(h: &Histogram<u64>, quantile: f64) -> Option<f64> {
    if h.is_empty() {
        return None;
    }
    let v = if quantile >= 1.0 { h.max() } else { h.value_at_quantile(quantile) };
    Some(h.median_equivalent(v) as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn percentiles_attainment_and_verdict() {
        let mut s = ServiceStats::new(100.0);
        for i in 1..=100 {
            s.record(ms(1), ms(i), &Outcome::Ok);
        }
        assert_eq!((s.scheduled, s.succeeded, s.within_slo), (100, 100, 100));
        let p50 = s.latency_ms(0.5).unwrap();
        assert!((p50 - 50.0).abs() < 0.1, "{p50}");
        assert!((s.latency_ms(1.0).unwrap() - 100.0).abs() < 0.1);
        assert!(s.passes(99.0) && s.passes(100.0));
        // One late request out of 101: 99.0 % within the SLO, still a p99 pass, not a p99.5 one.
        s.record(ms(1), ms(250), &Outcome::Ok);
        assert!(s.passes(99.0) && !s.passes(99.5), "{}", s.attainment_pct());
        // Latency from the actual send excludes the lag.
        let mut t = ServiceStats::new(100.0);
        t.record(ms(300), ms(350), &Outcome::Ok);
        assert!((quantile_ms(&t.latency_from_send, 0.5).unwrap() - 50.0).abs() < 0.1);
        assert!((quantile_ms(&t.lag, 0.5).unwrap() - 300.0).abs() < 0.5);
        assert!(!t.passes(99.0));
    }

    #[test]
    fn failures_and_drops_count_as_misses_but_not_as_latency() {
        let mut s = ServiceStats::new(100.0);
        for _ in 0..97 {
            s.record(ms(0), ms(10), &Outcome::Ok);
        }
        s.record(ms(0), ms(1), &Outcome::Status(429));
        s.record_timeout(Some(ms(0)));
        s.record_drop();
        assert_eq!((s.scheduled, s.sent(), s.dropped, s.failed_total()), (100, 99, 1, 2));
        assert_eq!(s.failed.get("429"), Some(&1));
        assert_eq!(s.failed.get("timeout"), Some(&1));
        assert!((s.latency_ms(0.99).unwrap() - 10.0).abs() < 0.1, "fast successes, p99 10 ms");
        assert!(!s.passes(99.0), "3 % missed");
        assert!(s.passes(97.0));
        let cdf = s.cdf();
        assert!((cdf.last().unwrap().1 - 0.97).abs() < 1e-9, "{cdf:?}");
        assert!(!ServiceStats::new(1.0).passes(50.0), "no requests, no pass");
        assert!(ServiceStats::new(1.0).latency_ms(0.5).is_none());
    }

    #[test]
    fn the_cdf_is_monotone_and_bounded_in_size() {
        let mut s = ServiceStats::new(1000.0);
        for i in 0..100_000u64 {
            s.record(ms(0), Duration::from_micros(1000 + (i * 7919) % 500_000), &Outcome::Ok);
        }
        let cdf = s.cdf();
        assert!(cdf.len() <= 1100, "{}", cdf.len());
        assert!(cdf.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert!((cdf.last().unwrap().1 - 1.0).abs() < 1e-9);
    }
}
