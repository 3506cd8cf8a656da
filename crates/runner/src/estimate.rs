//! What a process's batches take and when a request would finish there: the execution
//! estimate per batch size the batcher keeps from its answered batches ([`ExecEstimate`]), and
//! admission's arithmetic over it ([`finish_estimate`]). Moved out of `batcher.rs` unchanged.

/// What admission knows of a process's work, for [`finish_estimate`].
#[derive(Debug, Clone, Copy)]
pub struct Work {
    /// Seconds until the batches in flight are done.
    pub busy: f64,
    /// Rows waiting for a batch, the request's own last.
    pub waiting: usize,
    pub max_batch: usize,
    /// Execution of a one-row and of a full batch, and the overhead once, seconds.
    pub exec_one: f64,
    pub exec_full: f64,
    pub overhead: f64,
    /// Rows per second arriving at the process.
    pub arrival_rate: f64,
}

/// Estimated seconds until the last of `waiting` rows is answered: the batches in flight end
/// (their expected remaining time, not their full length), the waiting rows run in full batches
/// ahead of the request's own, and its own batch holds the rest of them plus the rows expected to
/// join it before it starts (the arrival rate times its wait, up to a full batch), executing for
/// the chord between the one-row and the full batch's times; plus one overhead.
///
/// Regression (issue 18, `scripts/bench/admission.sh` with scenario 3): every batch in flight and
/// the request's own were counted as full ones. vgg19's segment (batch 128, 189 ms, SLO 265 ms)
/// ran batches of about 50 rows, yet a request arriving during one was estimated to finish after
/// 2 x 189 ms and refused: 8,140 of 16,630 requests got 429 while the admitted ones had a p99 of
/// 134 ms.
pub fn finish_estimate(w: &Work) -> f64 {
    let max = w.max_batch.max(1);
    let waiting = w.waiting.max(1);
    let full_ahead = (waiting - 1) / max;
    let own = waiting - full_ahead * max;
    let wait = w.busy.max(0.0) + full_ahead as f64 * w.exec_full;
    let joining = (w.arrival_rate.max(0.0) * wait).min(max as f64);
    let own = (own as f64 + joining).min(max as f64);
    let own_exec = if max > 1 {
        let one = if w.exec_one > 0.0 { w.exec_one.min(w.exec_full) } else { w.exec_full };
        one + (own - 1.0) / (max - 1) as f64 * (w.exec_full - one)
    } else {
        w.exec_full
    };
    wait + own_exec + w.overhead
}

/// Time estimates per batch size, seconds, in two parts: the worker's **execution** of a batch
/// (the time the worker reports, `exec_us`) and the **overhead** around it (round trip minus
/// execution: IPC, and the router's and the worker's scheduling on a busy host), an EWMA.
/// [`ExecEstimate::get`] (dispatch to answer) is their sum; admission counts the execution once
/// per batch in front and the overhead once, since the worker runs batches sent ahead back to back.
///
/// Execution: the profile's latencies corrected by every answered batch, so that a batch of any
/// size refreshes the estimate of every size. The correction compares EWMAs of the measured and
/// the profiled execution times (`m` and `q`): a size of profiled time `p` is estimated
/// `p x m / q` when the worker is faster than profiled, and `min(p x m / q, p + (m - q))` when
/// slower (the excess extrapolates as the smaller of a proportional and a constant one).
/// Regression (issue 11, found by scripts/bench/admission.sh): the round trip of one-row batches
/// on a busy host, 10x their profile, was scaled into the full-batch estimate, and admission by
/// deadline refused nearly everything. Without a profile, each size keeps its own EWMA of its
/// measured execution.
///
/// The first batch of each size a worker process runs is not counted: on a GPU it includes
/// one-time work for the new input shape (kernels loaded and chosen, memory allocated).
/// Regression (found by `scripts/gpu-check` on an H100): first batches of a size took 0.5-1 s
/// against 5 ms for the next ones; counted, one of them made the full-batch estimate ~100x too
/// large, admission then refused every request but those reaching an idle process, only
/// one-row batches ran, and the estimate never recovered (19 of 200 req/s served).
#[derive(Debug, Clone)]
pub struct ExecEstimate {
    /// Profiled seconds per batch of 1, 2, ... rows.
    profile: Vec<f64>,
    /// EWMAs of the measured and of the profiled execution seconds of the answered batches.
    measured_avg: Option<f64>,
    profiled_avg: Option<f64>,
    /// EWMA of round trip minus execution, seconds.
    overhead: Option<f64>,
    /// Per size (index = rows - 1), when there is no profile.
    measured: Vec<Option<f64>>,
    /// Sizes the current worker process has run at least once (index = rows - 1; sizes past
    /// `max_batch`, which run alone, are not tracked and always count).
    warmed: Vec<bool>,
}

const EWMA_WEIGHT: f64 = 0.3;

fn ewma(old: Option<f64>, new: f64) -> f64 {
    old.map_or(new, |m| m + EWMA_WEIGHT * (new - m))
}

impl ExecEstimate {
    pub fn new(profile: Vec<f64>, max_batch: usize) -> Self {
        let n = max_batch.max(1);
        ExecEstimate { profile, measured_avg: None, profiled_avg: None, overhead: None, measured: vec![None; n], warmed: vec![false; n] }
    }

    /// A new worker process starts: its first batch of each size is one-time work again.
    pub fn new_process(&mut self) {
        self.warmed.iter_mut().for_each(|w| *w = false);
    }

    /// The profile's latency of `rows` rows (past the table, in proportion to the rows).
    fn profiled(&self, rows: usize) -> Option<f64> {
        let i = rows.max(1) - 1;
        match self.profile.len() {
            0 => None,
            n if i < n => Some(self.profile[i]),
            n => Some(self.profile[n - 1] * rows as f64 / n as f64),
        }
        .filter(|s| *s > 0.0)
    }

    /// Seconds from dispatching a batch of `rows` rows to a free worker to its answer.
    pub fn get(&self, rows: usize) -> f64 {
        self.exec(rows) + self.overhead()
    }

    /// Seconds around each batch's execution (0 before anything was measured).
    pub fn overhead(&self) -> f64 {
        self.overhead.unwrap_or(0.0)
    }

    /// Seconds the worker executes a batch of `rows` rows.
    pub fn exec(&self, rows: usize) -> f64 {
        match self.profiled(rows) {
            Some(p) => match (self.measured_avg, self.profiled_avg) {
                (Some(m), Some(q)) if m <= q => p * m / q,
                (Some(m), Some(q)) => (p * m / q).min(p + (m - q)),
                _ => p,
            },
            None => self.measured.get(rows.max(1) - 1).copied().flatten().unwrap_or(0.0),
        }
    }

    /// The execution of a full batch of `max_batch` rows, for admission. Without a profile and
    /// before a full batch was measured: the largest size measured so far (a lower bound, so that
    /// admission errs towards accepting); 0 when nothing is known.
    pub fn full_exec(&self, max_batch: usize) -> f64 {
        let e = self.exec(max_batch);
        if e > 0.0 {
            return e;
        }
        self.measured.iter().rev().find_map(|m| *m).unwrap_or(0.0)
    }

    /// A batch of `rows` rows was answered `round_trip` seconds after the worker could start it,
    /// and the worker says it executed for `exec` seconds (0: unknown, all of it counts). Returns
    /// false, changing nothing, for the process's first batch of that size (see the type's doc).
    pub fn record(&mut self, rows: usize, round_trip: f64, exec: f64) -> bool {
        if let Some(w) = self.warmed.get_mut(rows.max(1) - 1) {
            if !*w {
                *w = true;
                return false;
            }
        }
        let round_trip = round_trip.max(0.0);
        let exec = if exec > 0.0 { exec.min(round_trip) } else { round_trip };
        self.overhead = Some(ewma(self.overhead, round_trip - exec));
        match self.profiled(rows) {
            Some(p) => {
                self.measured_avg = Some(ewma(self.measured_avg, exec));
                self.profiled_avg = Some(ewma(self.profiled_avg, p));
            }
            None => {
                if let Some(slot) = self.measured.get_mut(rows.max(1) - 1) {
                    *slot = Some(ewma(*slot, exec));
                }
            }
        }
        true
    }
}

#[cfg(test)]
#[path = "estimate_tests.rs"]
mod tests;
