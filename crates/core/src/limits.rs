//! Physical ranges of every quantity parva reads, in one place, with why each bound is where it
//! is. Every reader (profile tables, SLO pairs, service lists, deployment maps) and every CLI flag
//! of `plan`, `simulate` and `validate` refuses a value outside its range, naming the file, line
//! and field (or the flag) and the rule, before anything is allocated from it. NaN and infinities
//! are refused everywhere.
//!
//! The bounds are generous on purpose: they are there to refuse typos and hostile input (a rate of
//! `1e300`, a batch of a million) that would make the planner's solver reject its problem, the
//! simulator allocate or run without end, or a map name millions of GPUs; never a real deployment.

/// A closed range `[min, max]` of a quantity, with its unit and the reason for the bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    /// What the quantity is, for messages (e.g. `request rate`).
    pub what: &'static str,
    pub min: f64,
    pub max: f64,
    /// Unit, for messages (e.g. `requests/s`).
    pub unit: &'static str,
    /// Whether `min` itself is allowed (false: the range is `(min, max]`).
    pub min_inclusive: bool,
}

impl Range {
    /// Check `v`; on failure, the rule broken, worded for a message after the location.
    pub fn check(&self, v: f64) -> Result<f64, String> {
        let low_ok = if self.min_inclusive { v >= self.min } else { v > self.min };
        if v.is_finite() && low_ok && v <= self.max {
            Ok(v)
        } else {
            Err(format!("{} must be a finite number in {}, found {}", self.what, self.describe(), fmt(v)))
        }
    }

    /// The range as `[min, max] unit` or `(min, max] unit`.
    pub fn describe(&self) -> String {
        let open = if self.min_inclusive { '[' } else { '(' };
        format!("{open}{}, {}] {}", fmt(self.min), fmt(self.max), self.unit)
    }
}

fn fmt(v: f64) -> String {
    if v.is_finite() && v != 0.0 && (v.abs() >= 1e6 || v.abs() < 1e-3) { format!("{v:e}") } else { format!("{v}") }
}

/// A service's request rate, requests/s. Ten million a second is far beyond any single inference
/// service (thousands of A100s of the fastest model), and keeps every planner quantity well inside
/// the solver's numeric range. A rate of 0 is allowed only in ParvaGPU SLO files, where it means
/// "no traffic in this scenario" and is reported, never planned.
pub const RATE: Range = Range { what: "request rate", min: 0.0, max: 1e7, unit: "requests/s", min_inclusive: false };
/// A service's latency SLO, milliseconds: from 10 µs (below any network round trip) to one hour
/// (the longest latency the simulator's histograms record).
pub const SLO_MS: Range = Range { what: "latency SLO", min: 0.01, max: 3_600_000.0, unit: "ms", min_inclusive: true };
/// A service's planning margin in a map, milliseconds (below its SLO, checked with the SLO).
pub const MARGIN_MS: Range = Range { what: "planning margin", min: 0.0, max: 3_600_000.0, unit: "ms", min_inclusive: true };
/// The measured throughput of ONE process of a profile point, samples/s (0 marks an unmeasured
/// point). A measured point runs at least one sample per 10,000 s and at most ten million a second.
pub const THROUGHPUT: Range = Range { what: "throughput", min: 1e-4, max: 1e7, unit: "samples/s", min_inclusive: true };
/// The latency of one batch of a profile point, seconds (0 only on an unmeasured point): from one
/// microsecond (no kernel launch is faster) to one hour.
pub const BATCH_LATENCY_S: Range = Range { what: "batch latency", min: 1e-6, max: 3600.0, unit: "s", min_inclusive: true };
/// A segment's planned capacity in a deployment map, samples/s: at most [`MAX_PROCS`] processes of
/// the largest [`THROUGHPUT`].
pub const SEGMENT_THROUGHPUT: Range =
    Range { what: "segment throughput", min: 0.0, max: 1e7 * MAX_PROCS as f64, unit: "samples/s", min_inclusive: true };
/// Largest batch size anywhere (profile tables, maps). Inference batches stop well below it; the
/// simulator and the queueing model keep a table of one entry per batch size per process.
pub const MAX_BATCH: u32 = 4096;
/// Largest MPS process count of a segment: the MPS server's client limit per device (48).
pub const MAX_PROCS: u32 = 48;
/// `parva simulate --duration`, seconds: up to one day.
pub const DURATION_S: Range = Range { what: "duration", min: 0.0, max: 86_400.0, unit: "s", min_inclusive: false };
/// `parva simulate --rate-scale`: a factor up to 1000 on every service's rate.
pub const RATE_SCALE: Range = Range { what: "rate scale", min: 0.0, max: 1000.0, unit: "x", min_inclusive: false };
/// Most arrivals one simulation may expect (Σ rate x rate scale x duration), checked before it
/// starts. The simulator handles about 10 million events a second (release build; measured 12.5
/// million events in 1.1 s, and an overloaded run holding 24 million queued requests in 200 MB),
/// so this bounds a run to about a minute and its memory to about 2 GB even when every request
/// queues.
pub const MAX_SIM_ARRIVALS: f64 = 200e6;
/// Default of `parva plan --max-gpus`: a plan that would need more GPUs is refused before it is
/// attempted, with the number it would need.
pub const DEFAULT_MAX_GPUS: u32 = 4096;
/// Largest `--max-gpus` accepted (the planner keeps a few hundred bytes per GPU and slot).
pub const MAX_GPUS_LIMIT: u32 = 100_000;
/// Largest CSV input file (profile table, SLO file, service list, map) read, bytes; checked while
/// reading, so a larger file is refused without being held in memory.
pub const MAX_INPUT_BYTES: u64 = 256 << 20;

/// Largest interference slowdown accepted (`--interference`): 10 = batches take 11x as long.
pub const MAX_INTERFERENCE: f64 = 10.0;

/// A GPU's price in a fleet file, per GPU-hour in the fleet's currency. The dearest cloud GPUs cost
/// tens of dollars an hour on demand; a thousand leaves room for any currency of similar size and
/// keeps costs times GPU counts well inside the solver's numeric range. 0 is allowed (GPUs already
/// paid for: plan them first).
pub const COST_PER_HOUR: Range = Range { what: "cost per GPU-hour", min: 0.0, max: 1000.0, unit: "per GPU-hour", min_inclusive: true };

/// Most GPU types (rows) in a fleet file: each adds a full set of planning variables.
pub const MAX_FLEET_TYPES: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_refuse_non_finite_and_out_of_range_values() {
        assert_eq!(RATE.check(5.0), Ok(5.0));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1.5e7] {
            let e = RATE.check(bad).unwrap_err();
            assert!(e.contains("request rate must be a finite number in (0, 1e7] requests/s"), "{e}");
        }
        assert_eq!(SLO_MS.check(0.01), Ok(0.01));
        assert!(SLO_MS.check(0.009).unwrap_err().contains("[0.01, 3.6e6] ms"), "{}", SLO_MS.check(0.009).unwrap_err());
        assert!(DURATION_S.check(1e308).unwrap_err().contains("found 1e308"));
    }
}
