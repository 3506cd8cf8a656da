//! Per-service counters and HDR histograms (microseconds, 3 significant digits, 1 µs to 1 hour):
//! memory stays bounded however long the run. Only requests *scheduled* inside the measured window
//! (from the warm-up to the duration) are recorded; every one of them ends in exactly one of
//! dropped, succeeded or failed.
//!
//! Beside the totals, a [`Timeline`] keeps the same counts and a coarser latency histogram per
//! interval of scheduled time (at most [`MAX_INTERVALS`] of them), for the plot over time that a
//! run at changing rates (`verify --rates`) needs: when the misses happened, not only how many.

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
    /// The same requests by interval of their scheduled time.
    pub timeline: Timeline,
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
            timeline: Timeline::default(),
        }
    }

    /// Counts by interval of scheduled time over `[from_s, to_s)` too (see [`Timeline::new`]).
    pub fn with_timeline(mut self, from_s: f64, to_s: f64) -> ServiceStats {
        self.timeline = Timeline::new(from_s, to_s);
        self
    }

    /// A request scheduled at `at_s` that was not sent (the in-flight cap).
    pub fn record_drop(&mut self, at_s: f64) {
        self.scheduled += 1;
        self.dropped += 1;
        self.timeline.record(at_s, None, self.slo_us);
    }

    /// A request scheduled at `at_s` that was sent `lag` after that and ended with `outcome`,
    /// `latency` after its scheduled time.
    pub fn record(&mut self, at_s: f64, lag: Duration, latency: Duration, outcome: &Outcome) {
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
                self.timeline.record(at_s, Some(l), self.slo_us);
                return;
            }
            Outcome::Status(code) => self.fail(code.to_string()),
            Outcome::Connection => self.fail("connection".into()),
            Outcome::BadResponse => self.fail("bad_response".into()),
        }
        self.timeline.record(at_s, None, self.slo_us);
    }

    /// A request scheduled at `at_s` that did not finish within the timeout.
    pub fn record_timeout(&mut self, at_s: f64, lag: Option<Duration>) {
        self.scheduled += 1;
        if let Some(lag) = lag {
            let _ = self.lag.record(us(lag));
        }
        self.fail("timeout".into());
        self.timeline.record(at_s, None, self.slo_us);
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

/// Most intervals a timeline has, whatever the window: memory stays bounded (each interval's
/// histogram, allocated at its first success, is about 13 KB).
pub const MAX_INTERVALS: usize = 60;

/// Interval widths a timeline picks from, seconds: round numbers an operator reads at a glance.
const STEPS_S: [f64; 16] = [1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0];

/// Requests by interval of their scheduled time: counts, and a latency histogram with 2
/// significant digits (the p99 per interval).
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Scheduled time of the first interval's start, s from the start of the load.
    pub from_s: f64,
    /// Interval width, s (0: no timeline).
    pub step_s: f64,
    intervals: Vec<Interval>,
}

#[derive(Debug, Clone, Default)]
struct Interval {
    scheduled: u64,
    succeeded: u64,
    within_slo: u64,
    latency: Option<Box<Histogram<u32>>>,
}

/// One interval of a timeline, for the report and the plot over time.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TimePoint {
    /// Scheduled times covered, `[from_s, to_s)`, s from the start of the load (warm-up included).
    pub from_s: f64,
    pub to_s: f64,
    pub scheduled: u64,
    pub succeeded: u64,
    pub within_slo: u64,
    /// Requests/s scheduled in the interval (the offered load).
    pub offered_rate: f64,
    /// Share of the interval's scheduled requests done within the SLO, percent (`None`: none
    /// scheduled).
    pub attainment_pct: Option<f64>,
    /// p99 of the interval's successful requests, ms, within 1 % (`None`: none
    /// succeeded).
    pub p99_ms: Option<f64>,
}

impl Timeline {
    /// A timeline over `[from_s, to_s)`: the smallest round interval width (1 s, 2 s, 5 s, 10 s,
    /// 15 s, 30 s, 1 min, ...) that needs at most [`MAX_INTERVALS`] intervals. An empty or
    /// invalid span gives no timeline.
    pub fn new(from_s: f64, to_s: f64) -> Timeline {
        let span = to_s - from_s;
        if !(span > 0.0 && span.is_finite() && from_s.is_finite()) {
            return Timeline::default();
        }
        let step_s = STEPS_S.iter().copied().find(|w| span / w <= MAX_INTERVALS as f64).unwrap_or(span / MAX_INTERVALS as f64);
        let n = ((span / step_s).ceil() as usize).clamp(1, MAX_INTERVALS);
        Timeline { from_s, step_s, intervals: vec![Interval::default(); n] }
    }

    /// A request scheduled at `at_s`: `Some(latency)` in µs when it succeeded. Times outside the
    /// span are not counted.
    fn record(&mut self, at_s: f64, latency_us: Option<u64>, slo_us: u64) {
        if self.step_s <= 0.0 || at_s.is_nan() || at_s < self.from_s {
            return;
        }
        let Some(iv) = self.intervals.get_mut(((at_s - self.from_s) / self.step_s) as usize) else { return };
        iv.scheduled += 1;
        if let Some(l) = latency_us {
            iv.succeeded += 1;
            if l <= slo_us {
                iv.within_slo += 1;
            }
            // Bounds are constants that the library accepts; a failed allocation leaves no p99.
            if iv.latency.is_none() {
                iv.latency = Histogram::new_with_bounds(1, MAX_US, 2).ok().map(Box::new);
            }
            if let Some(h) = iv.latency.as_mut() {
                let _ = h.record(l);
            }
        }
    }

    /// Every interval, in time order.
    pub fn points(&self) -> Vec<TimePoint> {
        self.intervals
            .iter()
            .enumerate()
            .map(|(i, iv)| {
                let from_s = self.from_s + i as f64 * self.step_s;
                TimePoint {
                    from_s,
                    to_s: from_s + self.step_s,
                    scheduled: iv.scheduled,
                    succeeded: iv.succeeded,
                    within_slo: iv.within_slo,
                    offered_rate: iv.scheduled as f64 / self.step_s,
                    attainment_pct: (iv.scheduled > 0).then(|| 100.0 * iv.within_slo as f64 / iv.scheduled as f64),
                    p99_ms: iv.latency.as_ref().filter(|h| !h.is_empty()).map(|h| h.median_equivalent(h.value_at_quantile(0.99)) as f64 / 1000.0),
                }
            })
            .collect()
    }
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
            s.record(0.0, ms(1), ms(i), &Outcome::Ok);
        }
        assert_eq!((s.scheduled, s.succeeded, s.within_slo), (100, 100, 100));
        let p50 = s.latency_ms(0.5).unwrap();
        assert!((p50 - 50.0).abs() < 0.1, "{p50}");
        assert!((s.latency_ms(1.0).unwrap() - 100.0).abs() < 0.1);
        assert!(s.passes(99.0) && s.passes(100.0));
        // One late request out of 101: 99.0 % within the SLO, still a p99 pass, not a p99.5 one.
        s.record(0.0, ms(1), ms(250), &Outcome::Ok);
        assert!(s.passes(99.0) && !s.passes(99.5), "{}", s.attainment_pct());
        // Latency from the actual send excludes the lag.
        let mut t = ServiceStats::new(100.0);
        t.record(0.0, ms(300), ms(350), &Outcome::Ok);
        assert!((quantile_ms(&t.latency_from_send, 0.5).unwrap() - 50.0).abs() < 0.1);
        assert!((quantile_ms(&t.lag, 0.5).unwrap() - 300.0).abs() < 0.5);
        assert!(!t.passes(99.0));
    }

    #[test]
    fn failures_and_drops_count_as_misses_but_not_as_latency() {
        let mut s = ServiceStats::new(100.0);
        for _ in 0..97 {
            s.record(0.0, ms(0), ms(10), &Outcome::Ok);
        }
        s.record(0.0, ms(0), ms(1), &Outcome::Status(429));
        s.record_timeout(0.0, Some(ms(0)));
        s.record_drop(0.0);
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
            s.record(0.0, ms(0), Duration::from_micros(1000 + (i * 7919) % 500_000), &Outcome::Ok);
        }
        let cdf = s.cdf();
        assert!(cdf.len() <= 1100, "{}", cdf.len());
        assert!(cdf.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert!((cdf.last().unwrap().1 - 1.0).abs() < 1e-9);
    }

    /// Issue 38: `verify --rates` had no plot over time; the timeline says when requests missed.
    #[test]
    fn the_timeline_puts_each_request_in_the_interval_it_was_scheduled_in() {
        // A 300 s window after a 10 s warm-up: 5 s intervals, 60 of them.
        let mut s = ServiceStats::new(100.0).with_timeline(10.0, 310.0);
        assert_eq!((s.timeline.step_s, s.timeline.points().len()), (5.0, 60));
        for i in 0..500u64 {
            // 100/s from 10 s to 15 s, all fast; then 20/s for 5 s, every other one late.
            let at = 10.0 + i as f64 * 0.01;
            s.record(at, ms(0), ms(20), &Outcome::Ok);
        }
        for i in 0..100u64 {
            let at = 15.0 + i as f64 * 0.05;
            let late = if i % 2 == 0 { ms(400) } else { ms(30) };
            s.record(at, ms(0), late, &Outcome::Ok);
        }
        s.record_drop(16.0);
        s.record_timeout(17.0, None);
        s.record(18.0, ms(0), ms(1), &Outcome::Status(429));
        s.record(400.0, ms(0), ms(1), &Outcome::Ok); // after the span: counted in the totals only
        let p = s.timeline.points();
        assert_eq!((p[0].from_s, p[0].to_s, p[0].scheduled, p[0].within_slo), (10.0, 15.0, 500, 500));
        assert!((p[0].offered_rate - 100.0).abs() < 1e-9 && p[0].attainment_pct == Some(100.0));
        assert!((p[0].p99_ms.unwrap() - 20.0).abs() < 0.2, "{:?}", p[0].p99_ms);
        assert_eq!((p[1].scheduled, p[1].succeeded, p[1].within_slo), (103, 100, 50));
        assert!((p[1].attainment_pct.unwrap() - 100.0 * 50.0 / 103.0).abs() < 1e-9);
        assert!((p[1].p99_ms.unwrap() - 400.0).abs() < 4.0, "{:?}", p[1].p99_ms);
        assert!(p[2..].iter().all(|q| q.scheduled == 0 && q.attainment_pct.is_none() && q.p99_ms.is_none()));
        // The intervals add up to the totals of the span.
        assert_eq!(p.iter().map(|q| q.scheduled).sum::<u64>() + 1, s.scheduled);
    }

    #[test]
    fn a_timeline_never_has_more_than_sixty_intervals_and_a_bad_span_has_none() {
        for (from, to, step) in [(0.0, 60.0, 1.0), (0.0, 61.0, 2.0), (5.0, 3605.0, 60.0), (0.0, 86_400.0, 1800.0), (0.0, 1e9, 1e9 / 60.0)] {
            let t = Timeline::new(from, to);
            assert_eq!(t.step_s, step, "{from}..{to}");
            assert!(!t.points().is_empty() && t.points().len() <= MAX_INTERVALS);
        }
        for (from, to) in [(5.0, 5.0), (5.0, 1.0), (0.0, f64::INFINITY), (f64::NAN, 1.0)] {
            let mut t = Timeline::new(from, to);
            assert!(t.points().is_empty());
            t.record(1.0, Some(5), 10);
        }
    }
}
