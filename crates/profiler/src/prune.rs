//! Which points not to measure. Within one (size, processes) series, batches go up, and:
//! - once a batch's mean latency exceeds `--max-latency-ms`, or a batch runs out of memory, the
//!   larger batches are skipped (they would be slower still, or need more memory);
//! - with `--fast`, also: once two batches in a row add less than [`GAIN`] to the best segment
//!   throughput so far, the larger ones are skipped as dominated (more latency, no more
//!   throughput: a planner never picks them); and an out-of-memory batch with p processes skips
//!   that batch and larger ones with more processes (each gets less of the instance's memory).
//!
//! Every skip carries its reason, written in the table's `note` column.

use std::collections::BTreeMap;

use crate::grid::Point;

/// Least relative throughput gain that keeps `--fast` going up in batch size.
pub const GAIN: f64 = 0.02;

/// What pruning decides from.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PruneRules {
    pub max_latency_s: Option<f64>,
    pub fast: bool,
}

/// What was learnt about a point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Observation {
    /// Mean batch latency and segment throughput (all processes), rows/s.
    Measured { latency_s: f64, segment_throughput: f64 },
    Oom,
    Failed,
}

#[derive(Debug, Default)]
struct Series {
    stopped: Option<String>,
    best: Option<(u32, f64)>,
    flat: u32,
}

/// Pruning state over a sweep.
#[derive(Debug)]
pub struct Pruner {
    rules: PruneRules,
    series: BTreeMap<(u8, u32), Series>,
    /// `--fast`: per size, (processes, batch) that ran out of memory.
    oom: BTreeMap<u8, Vec<(u32, u32)>>,
}

impl Pruner {
    pub fn new(rules: PruneRules) -> Self {
        Pruner { rules, series: BTreeMap::new(), oom: BTreeMap::new() }
    }

    /// Why `p` is skipped, if it is.
    pub fn skip_reason(&self, p: Point) -> Option<String> {
        if let Some(reason) = self.series.get(&(p.size, p.procs)).and_then(|s| s.stopped.clone()) {
            return Some(reason);
        }
        if self.rules.fast {
            let hit = self.oom.get(&p.size).and_then(|v| v.iter().find(|(procs, batch)| *procs < p.procs && *batch <= p.batch));
            if let Some((procs, batch)) = hit {
                return Some(format!(
                    "--fast: batch {batch} ran out of memory with {procs} process(es); {} processes have less memory each",
                    p.procs
                ));
            }
        }
        None
    }

    /// Learn from `p`'s result (points of a series must come in ascending batch order).
    pub fn observe(&mut self, p: Point, obs: Observation) {
        let rules = self.rules;
        let s = self.series.entry((p.size, p.procs)).or_default();
        if s.stopped.is_some() {
            return;
        }
        match obs {
            Observation::Oom => {
                s.stopped = Some(format!("batch {} ran out of memory", p.batch));
                if rules.fast {
                    self.oom.entry(p.size).or_default().push((p.procs, p.batch));
                }
            }
            Observation::Failed => {}
            Observation::Measured { latency_s, segment_throughput } => {
                if let Some(limit) = rules.max_latency_s.filter(|l| latency_s > *l) {
                    s.stopped = Some(format!(
                        "batch {} took {:.2} ms > --max-latency-ms {}",
                        p.batch,
                        latency_s * 1e3,
                        limit * 1e3
                    ));
                    return;
                }
                if !rules.fast {
                    return;
                }
                match s.best {
                    Some((_, best)) if segment_throughput < best * (1.0 + GAIN) => {
                        s.flat += 1;
                        if s.flat >= 2 {
                            let (b, t) = s.best.unwrap_or((p.batch, segment_throughput));
                            s.stopped = Some(format!(
                                "--fast: dominated: two larger batches added under {:.0}% to batch {b}'s {t:.1} samples/s",
                                GAIN * 100.0
                            ));
                        }
                    }
                    _ => {
                        s.best = Some((p.batch, segment_throughput));
                        s.flat = 0;
                    }
                }
                if s.best.is_some_and(|(_, best)| segment_throughput > best) {
                    s.best = Some((p.batch, segment_throughput));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(size: u8, procs: u32, batch: u32) -> Point {
        Point { size, procs, batch }
    }

    fn measured(latency_s: f64, segment_throughput: f64) -> Observation {
        Observation::Measured { latency_s, segment_throughput }
    }

    #[test]
    fn latency_over_the_limit_skips_larger_batches_of_that_series_only() {
        let mut p = Pruner::new(PruneRules { max_latency_s: Some(0.05), fast: false });
        p.observe(pt(1, 1, 8), measured(0.04, 200.0));
        assert_eq!(p.skip_reason(pt(1, 1, 16)), None);
        p.observe(pt(1, 1, 16), measured(0.08, 200.0));
        let r = p.skip_reason(pt(1, 1, 32)).unwrap();
        assert!(r.contains("batch 16 took 80.00 ms > --max-latency-ms 50"), "{r}");
        assert_eq!(p.skip_reason(pt(1, 2, 32)), None);
        assert_eq!(p.skip_reason(pt(2, 1, 32)), None);
    }

    #[test]
    fn out_of_memory_skips_larger_batches_and_with_fast_more_processes() {
        let mut p = Pruner::new(PruneRules { max_latency_s: None, fast: false });
        p.observe(pt(1, 1, 64), Observation::Oom);
        assert_eq!(p.skip_reason(pt(1, 1, 128)).as_deref(), Some("batch 64 ran out of memory"));
        assert_eq!(p.skip_reason(pt(1, 2, 64)), None, "without --fast only the series is pruned");
        let mut p = Pruner::new(PruneRules { max_latency_s: None, fast: true });
        p.observe(pt(1, 1, 64), Observation::Oom);
        assert!(p.skip_reason(pt(1, 2, 64)).unwrap().contains("--fast: batch 64 ran out of memory with 1 process"));
        assert_eq!(p.skip_reason(pt(1, 2, 32)), None);
        assert_eq!(p.skip_reason(pt(2, 2, 64)), None, "a larger instance has more memory");
    }

    #[test]
    fn fast_skips_batches_after_two_that_add_no_throughput() {
        let mut p = Pruner::new(PruneRules { max_latency_s: None, fast: true });
        p.observe(pt(1, 1, 1), measured(0.01, 100.0));
        p.observe(pt(1, 1, 2), measured(0.015, 133.0));
        p.observe(pt(1, 1, 4), measured(0.03, 134.0));
        assert_eq!(p.skip_reason(pt(1, 1, 8)), None, "one flat batch is not enough");
        p.observe(pt(1, 1, 8), measured(0.06, 133.5));
        let r = p.skip_reason(pt(1, 1, 16)).unwrap();
        assert!(r.contains("dominated") && r.contains("batch 4"), "{r}");
        let mut p = Pruner::new(PruneRules { max_latency_s: None, fast: false });
        for (b, t) in [(1, 100.0), (2, 100.0), (4, 100.0)] {
            p.observe(pt(1, 1, b), measured(0.01 * b as f64, t));
        }
        assert_eq!(p.skip_reason(pt(1, 1, 8)), None, "dominance pruning needs --fast");
        p.observe(pt(1, 1, 8), Observation::Failed);
        assert_eq!(p.skip_reason(pt(1, 1, 16)), None, "a failure prunes nothing");
    }
}
