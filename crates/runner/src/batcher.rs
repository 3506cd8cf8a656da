//! The batcher of one worker process: an actor that owns the process's queue and its connection,
//! forms batches with the planner's policy ([`parva_core::batching::BatchPolicy`]) and runs them on
//! the worker, which executes them one at a time (a full batch may be sent while the previous runs).
//!
//! A free process dispatches what is queued (up to `max_batch` rows) as soon as it holds the
//! keep-up batch for the process's measured arrival rate (one row at low load: an idle process
//! does not hold a lone request; `max_batch` at high load), or once waiting longer would make the
//! oldest request miss its deadline `arrival + slo - guard - exec(max_batch)` (partial batches
//! are timed as full ones), as the core policy says. `exec(k)` is the time measured for batches of `k` rows on this
//! process, from the moment the worker could start them to their answer (a moving average), or,
//! before any was measured, the profile table's latency.
//!
//! When the worker dies, only the batch it was running fails (502); batches sent ahead and not
//! started yet go back to the router ([`Outcome::Returned`]), which sends them to another ready
//! process of the service, as the supervisor does with the queue.
//!
//! **Watchdog.** A worker can also stop answering without dying (stopped, deadlocked, a hung
//! driver call): the running batch has a deadline, its expected execution plus the worker
//! timeout. A worker that misses it is treated like a crashed one (marked not ready, killed and
//! restarted by the supervisor, counted in `parva_worker_stalls_total`), and every request it
//! held goes back to the router at once: another ready process takes it if it can still answer
//! in time, else it gets 504. No request waits on a stalled worker longer than its batch's
//! expected time plus the timeout.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use parva_core::batching::{ArrivalRate, BatchPolicy};
use tokio::io::BufReader;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::InferError;
use crate::metrics::Metrics;
use parva_proto::frame::{self as proto, Area, Msg, ProtoError, TensorHeader};
use parva_proto::shm::Slab;
use crate::spawn::WorkerChild;
use parva_proto::tensor::Tensor;

/// One request waiting for a process.
#[derive(Debug)]
pub struct Job {
    /// Inputs in the model metadata's order, all with `rows` rows.
    pub inputs: Vec<Tensor>,
    pub rows: usize,
    /// Bytes of its input tensors (what it holds while queued).
    pub bytes: usize,
    /// When the router first received it (kept when it is sent to another process).
    pub arrival: Instant,
    pub reply: oneshot::Sender<Outcome>,
}

/// How a job ends, as its process tells the router.
#[derive(Debug)]
pub enum Outcome {
    /// Run (outputs) or failed (the error the client gets).
    Answered(Result<JobDone, InferError>),
    /// Not run: its process died or was restarting before the job started, or stalled while
    /// running it (`stalled`). The router sends the inputs to another ready process of the
    /// service; a stalled job that none can take in time gets 504.
    Returned { inputs: Vec<Tensor>, why: String, stalled: bool },
}

/// A request's outputs and how it went.
#[derive(Debug)]
pub struct JobDone {
    pub outputs: Vec<Tensor>,
    pub queue_s: f64,
    pub exec_s: f64,
    pub batch_rows: usize,
}

/// State of a process that the router reads without talking to the actor.
#[derive(Debug, Default)]
pub struct ProcShared {
    pub ready: AtomicBool,
    /// Rows admitted to this process and not answered yet (queued or running).
    pub queued_rows: AtomicUsize,
    /// Input bytes of those rows.
    pub queued_bytes: AtomicUsize,
    /// Batches sent to the worker and not answered yet, and their rows (part of `queued_rows`).
    pub inflight_batches: AtomicUsize,
    pub inflight_rows: AtomicUsize,
    /// The batcher's estimates, seconds (f64 bits; 0: unknown): the execution of a one-row and of
    /// a full batch, and the overhead around a batch (see [`ExecEstimate`]).
    exec_one_bits: AtomicU64,
    exec_full_bits: AtomicU64,
    overhead_bits: AtomicU64,
    /// When the batches in flight are expected to be done, nanoseconds on [`clock_ns`]'s clock
    /// (0: nothing in flight).
    busy_until_ns: AtomicU64,
    /// Rows per second sent to this process lately (f64 bits), the batcher's measurement.
    arrival_rate_bits: AtomicU64,
    pub pid: AtomicU32,
    /// Starts of its worker that failed in a row (0 once one is ready).
    pub start_failures: AtomicU32,
}

/// `at` in nanoseconds on the clock of [`ProcShared`]'s times: a process-wide origin (the first
/// call) at 2^62, so that instants before it count too.
pub fn clock_ns(at: Instant) -> u64 {
    const ORIGIN_NS: u64 = 1 << 62;
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    let ns = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    match at.checked_duration_since(origin) {
        Some(after) => ORIGIN_NS.saturating_add(ns(after)),
        None => ORIGIN_NS.saturating_sub(ns(origin.saturating_duration_since(at))),
    }
}

impl ProcShared {
    /// Answer a job and release its rows.
    pub fn answer(&self, job: Job, result: Result<JobDone, InferError>) {
        self.release(job.rows, job.bytes);
        let _ = job.reply.send(Outcome::Answered(result));
    }

    /// Give a job that did not run back to the router, to be sent to another process.
    pub fn give_back(&self, job: Job, why: &str) {
        self.release(job.rows, job.bytes);
        let _ = job.reply.send(Outcome::Returned { inputs: job.inputs, why: why.to_string(), stalled: false });
    }

    /// Give back a job whose worker stalled while running it (see the module's doc).
    pub fn give_back_stalled(&self, job: Job, why: &str) {
        self.release(job.rows, job.bytes);
        let _ = job.reply.send(Outcome::Returned { inputs: job.inputs, why: why.to_string(), stalled: true });
    }

    /// Take `rows` rows and `bytes` bytes off this process's account.
    pub fn release(&self, rows: usize, bytes: usize) {
        self.queued_rows.fetch_sub(rows, Ordering::SeqCst);
        self.queued_bytes.fetch_sub(bytes, Ordering::SeqCst);
    }

    /// Seconds a full batch is expected to take on this process (0 when nothing is known).
    pub fn exec_full(&self) -> f64 {
        f64::from_bits(self.exec_full_bits.load(Ordering::Relaxed))
    }

    /// Seconds around each batch's execution (0 when nothing is known).
    pub fn overhead(&self) -> f64 {
        f64::from_bits(self.overhead_bits.load(Ordering::Relaxed))
    }

    /// Seconds a one-row batch is expected to take on this process (0 when nothing is known).
    pub fn exec_one(&self) -> f64 {
        f64::from_bits(self.exec_one_bits.load(Ordering::Relaxed))
    }

    /// Publish the execution of a one-row and of a full batch and the overhead per batch, seconds.
    pub fn set_estimates(&self, exec_one: f64, exec_full: f64, overhead: f64) {
        let clean = |s: f64| if s.is_finite() && s > 0.0 { s } else { 0.0 };
        self.exec_one_bits.store(clean(exec_one).to_bits(), Ordering::Relaxed);
        self.exec_full_bits.store(clean(exec_full).to_bits(), Ordering::Relaxed);
        self.overhead_bits.store(clean(overhead).to_bits(), Ordering::Relaxed);
    }

    /// Publish when the batches in flight are expected to be done (`None`: nothing in flight).
    pub fn set_busy_until(&self, until: Option<Instant>) {
        self.busy_until_ns.store(until.map_or(0, |t| clock_ns(t).max(1)), Ordering::SeqCst);
    }

    /// Seconds until the batches in flight are expected to be done (0 when idle or overdue).
    pub fn busy_remaining(&self, now: Instant) -> f64 {
        let until = self.busy_until_ns.load(Ordering::SeqCst);
        if until == 0 {
            return 0.0;
        }
        until.saturating_sub(clock_ns(now)) as f64 / 1e9
    }

    /// Rows per second sent to this process lately.
    pub fn arrival_rate(&self) -> f64 {
        f64::from_bits(self.arrival_rate_bits.load(Ordering::Relaxed))
    }

    /// Publish the rows per second sent to this process lately.
    pub fn set_arrival_rate(&self, rows_per_s: f64) {
        let r = if rows_per_s.is_finite() && rows_per_s > 0.0 { rows_per_s } else { 0.0 };
        self.arrival_rate_bits.store(r.to_bits(), Ordering::Relaxed);
    }

    /// Estimated seconds from `now` until a request of `rows` rows admitted now would be answered,
    /// when `ahead` rows are admitted already (running or queued): see [`finish_estimate`].
    pub fn finish_estimate(&self, now: Instant, ahead: usize, rows: usize, max_batch: usize) -> f64 {
        let waiting = ahead.saturating_sub(self.inflight_rows.load(Ordering::SeqCst)).saturating_add(rows);
        let work = Work {
            busy: self.busy_remaining(now),
            waiting,
            max_batch,
            exec_one: self.exec_one(),
            exec_full: self.exec_full(),
            overhead: self.overhead(),
            arrival_rate: self.arrival_rate(),
        };
        finish_estimate(&work)
    }
}

pub use crate::estimate::{ExecEstimate, Work, finish_estimate};

/// The worker connection: the batcher writes batches; a reader task forwards the answers.
pub struct Conn {
    pub reader: BufReader<OwnedReadHalf>,
    pub writer: OwnedWriteHalf,
    /// The worker's shared buffers, when it mapped them.
    pub slab: Option<Arc<Slab>>,
}

enum CallError {
    Proto(ProtoError),
    Failed(String),
}

/// Most batches sent to one worker and not answered yet: the one running and, when a full batch
/// is waiting, the next one, so that the worker starts it without waiting for the router.
const PIPELINE_DEPTH: usize = 2;

/// What the batcher needs to know about its process.
pub struct BatcherCtx<'a> {
    pub service: &'a str,
    pub worker: &'a str,
    pub policy: BatchPolicy,
    pub shared: &'a ProcShared,
    pub metrics: &'a Metrics,
    /// Common time origin for the policy's clock.
    pub epoch: Instant,
    /// How much longer than expected the running batch may take (see the module's doc).
    pub worker_timeout: std::time::Duration,
}

/// Why the batcher stopped serving on a connection.
pub enum BatcherExit {
    /// Told to stop (or the router went away); the queue is empty and nothing is in flight.
    Stopped(OwnedWriteHalf),
    /// The worker died or broke the protocol; its jobs have been answered.
    Crashed(String),
}

/// A batch sent to the worker.
struct InFlight {
    id: u64,
    jobs: Vec<Job>,
    rows: usize,
    /// When it was sent, and when the worker could start it (the previous batch's end).
    sent: Instant,
    started: Instant,
    /// The slab slot it occupies (inputs and outputs), free again once it is answered.
    slot: Option<usize>,
}

/// Take the jobs of the next batch from the front of `queue`: at least one, at most `max` rows.
fn take_batch(queue: &mut VecDeque<Job>, max: usize) -> (Vec<Job>, usize) {
    let mut jobs = Vec::new();
    let mut rows = 0;
    while let Some(j) = queue.front() {
        if !jobs.is_empty() && rows + j.rows > max {
            break;
        }
        rows += j.rows;
        jobs.extend(queue.pop_front());
    }
    (jobs, rows)
}

/// Rows the next batch would hold.
#[cfg(test)]
fn next_batch_rows(queue: &VecDeque<Job>, max: usize) -> usize {
    let mut rows = 0;
    for (i, j) in queue.iter().enumerate() {
        if i > 0 && rows + j.rows > max {
            break;
        }
        rows += j.rows;
    }
    rows
}

/// Form the next batch from the front of `queue` and send it: into a free slot of the worker's
/// slab when it fits there (each job's rows written once, straight into place; the socket
/// carries offsets), else over the socket. The jobs keep their inputs until they are answered,
/// so that a batch the worker never started can go to another process whole. `Err` when the
/// worker is gone: the batch was not delivered, and comes back whole.
async fn send_batch(writer: &mut OwnedWriteHalf, queue: &mut VecDeque<Job>, max: usize, id: u64, slab: Option<(&Slab, &mut Vec<usize>)>) -> Result<InFlight, (InFlight, String)> {
    let (jobs, rows) = take_batch(queue, max);
    let n_inputs = jobs.first().map(|j| j.inputs.len()).unwrap_or(0);
    let bytes: u64 = jobs.iter().map(|j| j.bytes as u64).sum();
    let now = Instant::now();
    let mut batch = InFlight { id, jobs, rows, sent: now, started: now, slot: None };
    let slot = match slab {
        Some((slab, free)) if bytes <= slab.layout.in_bytes => free.pop().map(|slot| (slab, slot)),
        _ => None,
    };
    let written = match slot {
        Some((slab, slot)) => {
            batch.slot = Some(slot);
            match write_to_slot(slab, slot, &batch.jobs, n_inputs) {
                Ok(tensors) => {
                    let out = Area { at: slab.layout.output_at(slot), bytes: slab.layout.out_bytes };
                    proto::write_frame_async(writer, &Msg::Batch { id, tensors, out: Some(out) }, &[]).await
                }
                Err(e) => Err(e),
            }
        }
        None => {
            let inputs: Vec<Tensor> = (0..n_inputs)
                .filter_map(|i| Tensor::concat_rows(batch.jobs.iter().filter_map(|j| j.inputs.get(i).cloned()).collect()))
                .collect();
            let msg = Msg::Batch { id, tensors: proto::headers_of(&inputs), out: None };
            proto::write_frame_async(writer, &msg, &inputs).await
        }
    };
    match written {
        Ok(()) => Ok(batch),
        Err(e) => Err((batch, e.to_string())),
    }
}

/// Write the jobs' inputs into `slot`: input after input, each the jobs' rows back to back.
fn write_to_slot(slab: &Slab, slot: usize, jobs: &[Job], n_inputs: usize) -> Result<Vec<TensorHeader>, ProtoError> {
    let mut at = slab.layout.input_at(slot);
    let mut heads = Vec::with_capacity(n_inputs);
    for i in 0..n_inputs {
        let first = jobs.first().and_then(|j| j.inputs.get(i)).ok_or_else(|| ProtoError::BadHeader(format!("a job lacks input {i}")))?;
        let start = at;
        let mut rows = 0i64;
        for j in jobs {
            let t = j.inputs.get(i).ok_or_else(|| ProtoError::BadHeader(format!("a job lacks input {i}")))?;
            slab.map.write(at, &t.data).map_err(|e| ProtoError::BadHeader(e.to_string()))?;
            at += t.data.len() as u64;
            rows += t.shape.first().copied().unwrap_or(1);
        }
        let mut shape = first.shape.clone();
        if let Some(d) = shape.first_mut() {
            *d = rows;
        }
        heads.push(TensorHeader { name: first.name.clone(), datatype: first.datatype, shape, bytes: at - start, at: Some(start) });
    }
    Ok(heads)
}

/// Publish what is in flight, for admission: its batches, rows and expected end (the running
/// batch from when it could start, each one sent ahead after it).
fn publish_inflight(shared: &ProcShared, inflight: &VecDeque<InFlight>, est: &ExecEstimate) {
    shared.inflight_batches.store(inflight.len(), Ordering::SeqCst);
    shared.inflight_rows.store(inflight.iter().map(|b| b.rows).sum(), Ordering::SeqCst);
    let until = inflight.front().map(|front| {
        let after: f64 = inflight.iter().skip(1).map(|b| est.exec(b.rows)).sum();
        front.started + std::time::Duration::from_secs_f64((est.get(front.rows) + after).clamp(0.0, 1e6))
    });
    shared.set_busy_until(until);
}

/// Serve `queue` and new jobs from `rx` on `conn` until stopped or the worker dies.
pub async fn run_batcher(
    ctx: &BatcherCtx<'_>,
    conn: Conn,
    child: &mut Box<dyn WorkerChild>,
    queue: &mut VecDeque<Job>,
    rx: &mut mpsc::UnboundedReceiver<Job>,
    stop: &mut watch::Receiver<bool>,
    est: &mut ExecEstimate,
) -> BatcherExit {
    let max = ctx.policy.max_batch as usize;
    let secs = |t: Instant| t.saturating_duration_since(ctx.epoch).as_secs_f64();
    let Conn { mut reader, mut writer, slab } = conn;
    let mut free_slots: Vec<usize> = (0..parva_proto::shm::SLOTS).rev().collect();
    let (ans_tx, mut answers) = mpsc::unbounded_channel();
    let slab_map = slab.as_ref().map(|s| s.map.clone());
    let reader_task = tokio::spawn(async move {
        loop {
            let r = proto::read_frame_async(&mut reader, slab_map.as_ref()).await;
            let end = r.is_err();
            if ans_tx.send(r).is_err() || end {
                break;
            }
        }
    });
    let exit = 'serve: {
        let mut inflight: VecDeque<InFlight> = VecDeque::new();
        let mut stopping = *stop.borrow();
        let mut next_id: u64 = 0;
        // The process's arrival rate, measured as the simulator measures it (the policy's
        // keep-up batch depends on it).
        let mut meter = ArrivalRate::new(secs(Instant::now()));
        loop {
            let mut deadline = None;
            if !queue.is_empty() && inflight.len() < PIPELINE_DEPTH {
                let queued: usize = queue.iter().map(|j| j.rows).sum();
                let oldest = secs(queue[0].arrival);
                // Partial batches are timed as full ones (see BatchPolicy): late joiners cannot push
                // the oldest request past its deadline.
                let exec = est.get(max);
                let go = if inflight.is_empty() {
                    // Execution time, as the simulator and the latency model count it: the round trip's
                    // overhead overlaps the next batch and would tip the choice near the boundary.
                    let keep_up = ctx.policy.keep_up_batch(meter.rate(), |k| est.exec(k));
                    stopping || ctx.policy.should_dispatch(secs(Instant::now()), queued, oldest, exec, keep_up)
                } else {
                    // Busy: only a full batch is sent ahead; it starts the moment the worker is free.
                    queued >= max
                };
                if go {
                    next_id += 1;
                    let shm = slab.as_deref().map(|s| (s, &mut free_slots));
                    match send_batch(&mut writer, queue, max, next_id, shm).await {
                        Ok(b) => {
                            inflight.push_back(b);
                            publish_inflight(ctx.shared, &inflight, est);
                        }
                        Err((b, why)) => {
                            // Not delivered: it goes back with the batches that did not start.
                            inflight.push_back(b);
                            let running = inflight.len() > 1;
                            break 'serve crash(ctx, inflight, why, running);
                        }
                    }
                    continue;
                }
                if inflight.is_empty() {
                    let at = ctx.policy.latest_dispatch(oldest, exec);
                    deadline = Some(ctx.epoch + std::time::Duration::from_secs_f64(at.max(0.0)));
                }
            }
            if stopping && inflight.is_empty() && queue.is_empty() {
                break 'serve BatcherExit::Stopped(writer);
            }
            let watchdog = inflight.front().map(|b| watchdog_deadline(b.started, est.get(b.rows), ctx.worker_timeout));
            tokio::select! {
                job = rx.recv(), if !stopping => match job {
                    Some(j) => {
                        if let Some(rate) = meter.arrived(secs(j.arrival), j.rows as u64) {
                            ctx.shared.set_arrival_rate(rate);
                        }
                        queue.push_back(j)
                    }
                    None => stopping = true,
                },
                frame = answers.recv() => {
                    let res = match frame {
                        Some(Ok(f)) => match (f.msg, inflight.front()) {
                            (Msg::Done { id, exec_us, .. }, Some(b)) if b.id == id => Ok((f.tensors, exec_us)),
                            (Msg::Failed { id, message }, Some(b)) if b.id == id => Err(CallError::Failed(message)),
                            (other, _) => Err(CallError::Proto(ProtoError::BadHeader(format!("unexpected answer from the worker: {other:?}")))),
                        },
                        Some(Err(e)) => Err(CallError::Proto(e)),
                        None => Err(CallError::Proto(ProtoError::Closed)),
                    };
                    let Some(done) = inflight.pop_front() else {
                        let why = match res { Err(CallError::Proto(e)) => e.to_string(), _ => "unexpected answer".into() };
                        break 'serve crash(ctx, inflight, why, false);
                    };
                    if let Some(next) = inflight.front_mut() {
                        next.started = next.sent.max(Instant::now());
                    }
                    publish_inflight(ctx.shared, &inflight, est);
                    // The answer's outputs are copied out of the slot before it is reused.
                    let slot = done.slot;
                    let result = finish(ctx, done, res, est);
                    free_slots.extend(slot);
                    ctx.shared.set_estimates(est.exec(1), est.full_exec(max), est.overhead());
                    if let Err(why) = result {
                        // The worker broke while answering the running batch: the next one never started.
                        break 'serve crash(ctx, inflight, why, false);
                    }
                }
                _ = sleep_until_opt(deadline), if deadline.is_some() => {}
                _ = sleep_until_opt(watchdog), if watchdog.is_some() => break 'serve stalled(ctx, inflight, est),
                why = child.wait() => break 'serve crash(ctx, inflight, why, true),
                _ = stop.changed(), if !stopping => stopping = true,
            }
        }
    };
    reader_task.abort();
    ctx.shared.inflight_batches.store(0, Ordering::SeqCst);
    ctx.shared.inflight_rows.store(0, Ordering::SeqCst);
    ctx.shared.set_busy_until(None);
    exit
}

/// The worker is gone: mark the process not ready (so that nothing returned comes back to it),
/// fail the batch it was running (`running`: the front one) with 502 and give the jobs of the
/// batches that had not started back to the router.
fn crash(ctx: &BatcherCtx<'_>, mut inflight: VecDeque<InFlight>, why: String, running: bool) -> BatcherExit {
    ctx.shared.ready.store(false, Ordering::SeqCst);
    if running {
        if let Some(b) = inflight.pop_front() {
            fail_all(ctx, b.jobs, &why);
        }
    }
    let back = format!("worker process {} died before running it ({why})", ctx.worker);
    for b in inflight {
        give_back_batch(ctx, b, &why, &back);
    }
    BatcherExit::Crashed(why)
}

/// When the running batch's worker counts as stalled: its expected end (from when it could
/// start) plus the worker timeout.
pub fn watchdog_deadline(started: Instant, expected_s: f64, timeout: std::time::Duration) -> Instant {
    started + std::time::Duration::from_secs_f64(expected_s.clamp(0.0, 1e6)) + timeout
}

/// The worker missed the running batch's deadline: like a crash (not ready; the supervisor kills
/// and restarts it), except that the running batch's jobs go back to the router too, marked
/// stalled, so that another process answers them if it can in time (else 504), at once.
fn stalled(ctx: &BatcherCtx<'_>, mut inflight: VecDeque<InFlight>, est: &ExecEstimate) -> BatcherExit {
    ctx.shared.ready.store(false, Ordering::SeqCst);
    ctx.metrics.worker_stalls.get_or_create(&Metrics::service(ctx.service)).inc();
    let why = match inflight.front() {
        Some(b) => format!(
            "stalled: no answer to a batch of {} rows {:.2} s after it could start (expected {:.3} s, --worker-timeout {:.1} s)",
            b.rows,
            b.started.elapsed().as_secs_f64(),
            est.get(b.rows),
            ctx.worker_timeout.as_secs_f64()
        ),
        None => "stalled".to_string(),
    };
    tracing::warn!(service = %ctx.service, worker = %ctx.worker, "worker {why}; killing it, its requests go to the service's other processes");
    let back = format!("worker process {} {why}", ctx.worker);
    if let Some(b) = inflight.pop_front() {
        for j in b.jobs.into_iter().rev() {
            ctx.shared.give_back_stalled(j, &back);
        }
    }
    for b in inflight {
        give_back_batch(ctx, b, &why, &back);
    }
    BatcherExit::Crashed(why)
}

/// Give the jobs of a batch that did not start back to the router, each with its own inputs.
fn give_back_batch(ctx: &BatcherCtx<'_>, b: InFlight, _why: &str, back: &str) {
    for j in b.jobs.into_iter().rev() {
        ctx.shared.give_back(j, back);
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

fn fail_all(ctx: &BatcherCtx<'_>, jobs: Vec<Job>, why: &str) {
    for j in jobs {
        let e = InferError::WorkerCrashed { service: ctx.service.into(), worker: ctx.worker.into(), why: why.into() };
        ctx.shared.answer(j, Err(e));
    }
}

/// Answer the jobs of a finished batch. `Err` when the worker is unusable.
fn finish(ctx: &BatcherCtx<'_>, done: InFlight, res: Result<(Vec<Tensor>, u64), CallError>, est: &mut ExecEstimate) -> Result<(), String> {
    let round_trip = done.started.elapsed().as_secs_f64();
    let counts: Vec<usize> = done.jobs.iter().map(|j| j.rows).collect();
    let (outputs, exec_us) = match res {
        Ok(ok) => ok,
        Err(CallError::Failed(why)) => {
            for j in done.jobs {
                let e = InferError::ExecFailed { service: ctx.service.into(), worker: ctx.worker.into(), why: why.clone() };
                ctx.shared.answer(j, Err(e));
            }
            return Ok(());
        }
        Err(CallError::Proto(e)) => {
            let why = e.to_string();
            fail_all(ctx, done.jobs, &why);
            return Err(why);
        }
    };
    let split: Option<Vec<Vec<Tensor>>> = outputs.iter().map(|t| t.split_rows(&counts)).collect();
    let Some(mut split) = split else {
        let why = format!("the worker returned outputs whose first dimension is not the batch's {} rows", done.rows);
        for j in done.jobs {
            let e = InferError::ExecFailed { service: ctx.service.into(), worker: ctx.worker.into(), why: why.clone() };
            ctx.shared.answer(j, Err(e));
        }
        return Ok(());
    };
    let exec_s = exec_us as f64 / 1e6;
    est.record(done.rows, round_trip, exec_s);
    ctx.metrics.observe_batch(ctx.service, done.rows, exec_s);
    for (i, j) in done.jobs.into_iter().enumerate().rev() {
        let mut outs: Vec<Tensor> = split.iter_mut().map(|per_output| per_output.swap_remove(i)).collect();
        if done.slot.is_some() {
            // Views of the worker's slot, which the next batch reuses: each job takes a copy.
            for t in &mut outs {
                t.data = bytes::Bytes::copy_from_slice(&t.data);
            }
        }
        let queue_s = done.started.saturating_duration_since(j.arrival).as_secs_f64();
        ctx.shared.answer(j, Ok(JobDone { outputs: outs, queue_s, exec_s, batch_rows: done.rows }));
    }
    Ok(())
}

#[cfg(test)]
#[path = "batcher_tests.rs"]
mod tests;
