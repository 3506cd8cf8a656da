//! The router between HTTP and execution: per service, admission by deadline, the choice of a
//! process in proportion to profiled throughput (smooth weighted round-robin over the ready
//! processes that can take the request), and the hand-off to that process's batcher.
//!
//! Admission: a request goes to a ready process when the work in front of it there lets it
//! finish by its deadline, `arrival + SLO - guard` (the batching policy's): the expected rest of
//! the batches in flight, the queued rows in full batches, and its own batch with the rows
//! expected to join it, each timed by the batcher's own estimate (the profiled execution
//! corrected by the measured one), plus the measured overhead of one round trip (see
//! [`crate::batcher::finish_estimate`]); an idle process always takes it. It is refused with 429 only
//! when no ready process can finish it in time, or when every ready process's queue is at its hard
//! bound ([`QueueLimits`]: rows and input bytes per process, a memory bound). A request whose
//! process dies before running it comes back ([`Outcome::Returned`]) and is admitted again, with
//! the time it already waited counted, to the service's other ready processes.
//!
//! [`Backend`] is the interface the HTTP layer uses; [`Router`] implements it over worker
//! processes, and tests can implement it with anything.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use parva_core::batching::BatchPolicy;
use tokio::sync::{mpsc, oneshot};

use crate::batcher::{Job, JobDone, Outcome, ProcShared};
use crate::error::InferError;
use parva_proto::meta::ModelMeta;
use crate::metrics::{ErrorLabel, Metrics};
use parva_proto::tensor::Tensor;

/// What the HTTP layer needs from the execution side.
pub trait Backend: Send + Sync + 'static {
    /// The server is up.
    fn live(&self) -> bool;
    /// Every worker process of the node is ready.
    fn ready(&self) -> bool;
    /// Metadata of a model (service) served here.
    fn model(&self, name: &str) -> Result<&ModelMeta, InferError>;
    /// The model can take requests: at least one of its processes is ready.
    fn model_ready(&self, name: &str) -> Result<bool, InferError>;
    /// Run one request (inputs in any order; checked against the metadata).
    fn infer(&self, name: &str, inputs: Vec<Tensor>) -> impl Future<Output = Result<JobDone, InferError>> + Send;
    /// Prometheus text.
    fn metrics_text(&self) -> String;
}

/// Default hard bound on the rows one process may hold (queued or running), in batches of its
/// segment's size: far above what any deadline admits, a bound on the jobs' bookkeeping.
pub const DEFAULT_QUEUE_BATCHES: usize = 1024;
/// Default hard bound on the input bytes one process may hold queued or running: 256 MiB.
pub const DEFAULT_QUEUE_BYTES: usize = 256 << 20;

/// Hard bounds on what one process holds, queued or running. An idle process always takes one
/// request, whatever its size (the HTTP body limit bounds that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub rows: usize,
    pub bytes: usize,
}

impl QueueLimits {
    /// `batches` batches of `batch_size` rows and `bytes` bytes.
    pub fn new(batches: usize, batch_size: usize, bytes: usize) -> Self {
        QueueLimits { rows: batches.max(1).saturating_mul(batch_size.max(1)), bytes: bytes.max(1) }
    }
}

/// One worker process as the router sees it.
#[derive(Clone)]
pub struct ProcRoute {
    pub tx: mpsc::UnboundedSender<Job>,
    pub shared: Arc<ProcShared>,
    /// Worker name (`w3`), for messages.
    pub worker: String,
    /// Profiled throughput of this process, samples/s.
    pub weight: f64,
    /// The batching policy of the process: its batch size and its service's SLO and guard.
    pub policy: BatchPolicy,
    pub limits: QueueLimits,
}

/// One service: its model metadata and its processes. The processes can be replaced while it
/// serves ([`ServiceRoute::set_procs`]): a request is admitted against one snapshot of them.
pub struct ServiceRoute {
    pub name: String,
    pub meta: ModelMeta,
    state: Mutex<RouteState>,
    /// Requests that reached this service (known and well-formed or not), for rate measurement.
    arrivals: AtomicU64,
    /// The service's latency SLO in seconds (f64 bits; 0: unknown), for the goodput counter.
    slo_s: AtomicU64,
}

/// The processes a service routes to now and the round-robin state over them.
struct RouteState {
    procs: Arc<Vec<ProcRoute>>,
    /// Smooth weighted round-robin state, one entry per process.
    current: Vec<f64>,
}

/// The closest a refused request came: the smallest estimated finish among the processes tried.
struct Closest {
    secs: f64,
    proc: usize,
    rows: usize,
}

impl ServiceRoute {
    pub fn new(name: String, meta: ModelMeta, procs: Vec<ProcRoute>) -> Self {
        let current = vec![0.0; procs.len()];
        ServiceRoute {
            name,
            meta,
            state: Mutex::new(RouteState { procs: Arc::new(procs), current }),
            arrivals: AtomicU64::new(0),
            slo_s: AtomicU64::new(0),
        }
    }

    /// The service's SLO (the map's `slo_ms`, not the planning target): successful requests
    /// answered within it count in `parva_requests_within_slo_total` (goodput).
    pub fn with_slo_ms(self, slo_ms: Option<f64>) -> Self {
        self.slo_s.store(slo_ms.map_or(0.0, |ms| ms / 1000.0).to_bits(), Ordering::Relaxed);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RouteState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The processes requests go to now.
    pub fn procs(&self) -> Arc<Vec<ProcRoute>> {
        self.lock().procs.clone()
    }

    /// Route to `procs` from now on. A request admitted before has its rows counted on its
    /// process already (admission reserves them under the same lock), so a process taken out
    /// is drained once its `queued_rows` reach 0.
    pub fn set_procs(&self, procs: Vec<ProcRoute>) {
        let mut st = self.lock();
        st.current = vec![0.0; procs.len()];
        st.procs = Arc::new(procs);
    }

    /// Requests that reached this service so far.
    pub fn arrivals(&self) -> u64 {
        self.arrivals.load(Ordering::Relaxed)
    }

    pub fn any_ready(&self) -> bool {
        self.procs().iter().any(|p| p.shared.ready.load(Ordering::SeqCst))
    }

    /// Pick a process for a request of `rows` rows and `bytes` input bytes that has waited
    /// `waited` seconds already, and reserve them there (see the module's doc). Returns the
    /// snapshot of processes admitted against and the index chosen in it.
    fn admit(&self, rows: usize, bytes: usize, waited: f64) -> Result<(Arc<Vec<ProcRoute>>, usize), InferError> {
        self.admit_at(rows, bytes, waited, Instant::now())
    }

    /// [`ServiceRoute::admit`] as of `now` (tests pass a fixed instant: no wall-clock race).
    fn admit_at(&self, rows: usize, bytes: usize, waited: f64, now: Instant) -> Result<(Arc<Vec<ProcRoute>>, usize), InferError> {
        let mut st = self.lock();
        let procs = st.procs.clone();
        let ready: Vec<bool> = procs.iter().map(|p| p.shared.ready.load(Ordering::SeqCst)).collect();
        if !ready.iter().any(|&r| r) {
            return Err(InferError::NotReady { service: self.name.clone(), why: "no worker process is ready".into() });
        }
        let current = &mut st.current;
        let mut candidates: Vec<usize> = (0..procs.len()).filter(|&i| ready[i]).collect();
        let n_ready = candidates.len();
        let mut closest: Option<Closest> = None;
        while !candidates.is_empty() {
            let i = swrr_pick(current, |i| procs[i].weight, &candidates);
            candidates.retain(|&c| c != i);
            let p = &procs[i];
            let ahead = p.shared.queued_rows.fetch_add(rows, Ordering::SeqCst);
            let ahead_bytes = p.shared.queued_bytes.fetch_add(bytes, Ordering::SeqCst);
            // An idle process always takes a request: nothing can do better.
            if ahead == 0 {
                return Ok((procs, i));
            }
            if ahead.saturating_add(rows) > p.limits.rows || ahead_bytes.saturating_add(bytes) > p.limits.bytes {
                p.shared.release(rows, bytes);
                continue;
            }
            let finish = waited + p.shared.finish_estimate(now, ahead, rows, p.policy.max_batch as usize);
            if finish <= p.policy.slo - p.policy.guard {
                return Ok((procs, i));
            }
            p.shared.release(rows, bytes);
            if closest.as_ref().is_none_or(|c| finish < c.secs) {
                closest = Some(Closest { secs: finish, proc: i, rows: ahead });
            }
        }
        let why = match closest {
            Some(c) => {
                let p = &procs[c.proc];
                format!(
                    "no ready process can answer this request within the SLO of {} ms (deadline: SLO - {} ms guard): \
                     the earliest finish among its {n_ready} ready processes is about {:.0} ms ({} with {} rows ahead, \
                     full batches of {} executing in about {:.1} ms each, plus {:.1} ms of overhead)",
                    fmt_ms(p.policy.slo),
                    fmt_ms(p.policy.guard),
                    c.secs * 1e3,
                    p.worker,
                    c.rows,
                    p.policy.max_batch,
                    p.shared.exec_full() * 1e3,
                    p.shared.overhead() * 1e3
                )
            }
            None => {
                let l = procs[0].limits;
                format!(
                    "the queues of all {n_ready} ready processes are at their hard bound ({} rows or {} MiB of inputs per process)",
                    l.rows,
                    l.bytes >> 20
                )
            }
        };
        Err(InferError::Overloaded { service: self.name.clone(), why })
    }
}

/// Seconds as milliseconds, without trailing zeros.
fn fmt_ms(secs: f64) -> String {
    let ms = format!("{:.3}", secs * 1e3);
    ms.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Smooth weighted round-robin (as in nginx): every candidate gains its weight, the richest is
/// chosen and pays the candidates' total. Over time each is chosen in proportion to its weight.
/// `candidates` must not be empty. The router tier ([`crate::route`]) spreads over segments
/// with it too.
pub(crate) fn swrr_pick(current: &mut [f64], weight: impl Fn(usize) -> f64, candidates: &[usize]) -> usize {
    let total: f64 = candidates.iter().map(|&i| weight(i)).sum();
    let mut best = candidates[0];
    for &i in candidates {
        current[i] += weight(i);
        if current[i] > current[best] {
            best = i;
        }
    }
    current[best] -= total;
    best
}

/// The router over worker processes.
pub struct Router {
    pub services: BTreeMap<String, ServiceRoute>,
    pub metrics: Arc<Metrics>,
}

impl Router {
    fn service(&self, name: &str) -> Result<&ServiceRoute, InferError> {
        self.services.get(name).ok_or_else(|| InferError::UnknownModel {
            name: name.to_string(),
            served: crate::error::served_list(self.services.keys()),
        })
    }

    async fn run(&self, name: &str, inputs: Vec<Tensor>) -> Result<JobDone, InferError> {
        let svc = self.service(name)?;
        svc.arrivals.fetch_add(1, Ordering::Relaxed);
        let (mut inputs, rows) = svc.meta.check_inputs(inputs).map_err(InferError::BadRequest)?;
        let bytes: usize = inputs.iter().map(|t| t.data.len()).sum();
        let arrival = Instant::now();
        // A request comes back when its process dies before running it; each process can do
        // that once, then the service is treated as not ready.
        let mut returns = 0;
        // Why the request came back from a stalled worker: if no process can take it in time
        // now, it gets 504 at once (a 5xx: the server failed it, not the client's load).
        let mut stalled_on: Option<String> = None;
        loop {
            let (procs, i) = match (svc.admit(rows, bytes, arrival.elapsed().as_secs_f64()), stalled_on.take()) {
                (Ok(p), _) => p,
                (Err(e), Some(why)) => {
                    return Err(InferError::WorkerStalled { service: svc.name.clone(), why: format!("{why}; no other process could take the request in time ({e})") });
                }
                (Err(e), None) => return Err(e),
            };
            let (tx, rx) = oneshot::channel();
            let job = Job { inputs, rows, bytes, arrival, reply: tx };
            if let Err(e) = procs[i].tx.send(job) {
                procs[i].shared.release(rows, bytes);
                drop(e);
                return Err(InferError::ShuttingDown);
            }
            match rx.await {
                Ok(Outcome::Answered(r)) => return r,
                Ok(Outcome::Returned { inputs: back, why, stalled }) => {
                    returns += 1;
                    if returns > procs.len() {
                        return Err(if stalled {
                            InferError::WorkerStalled { service: svc.name.clone(), why }
                        } else {
                            InferError::NotReady { service: svc.name.clone(), why }
                        });
                    }
                    tracing::debug!(service = %svc.name, %why, "request sent to another process");
                    inputs = back;
                    if stalled {
                        stalled_on = Some(why);
                    }
                }
                Err(_) => return Err(InferError::ShuttingDown),
            }
        }
    }
}

impl Backend for Router {
    fn live(&self) -> bool {
        true
    }

    fn ready(&self) -> bool {
        self.services.values().all(|s| s.procs().iter().all(|p| p.shared.ready.load(Ordering::SeqCst)))
    }

    fn model(&self, name: &str) -> Result<&ModelMeta, InferError> {
        Ok(&self.service(name)?.meta)
    }

    fn model_ready(&self, name: &str) -> Result<bool, InferError> {
        Ok(self.service(name)?.any_ready())
    }

    async fn infer(&self, name: &str, inputs: Vec<Tensor>) -> Result<JobDone, InferError> {
        let t0 = Instant::now();
        let known = self.services.contains_key(name);
        let label = Metrics::service(name);
        if known {
            self.metrics.requests.get_or_create(&label).inc();
        }
        let res = self.run(name, inputs).await;
        match &res {
            Ok(done) => {
                let secs = t0.elapsed().as_secs_f64();
                self.metrics.queue_seconds.get_or_create(&label).observe(done.queue_s);
                self.metrics.request_seconds.get_or_create(&label).observe(secs);
                let slo = self.services.get(name).map_or(0.0, |s| f64::from_bits(s.slo_s.load(Ordering::Relaxed)));
                if slo > 0.0 && secs <= slo {
                    self.metrics.within_slo.get_or_create(&label).inc();
                }
            }
            Err(e) if known => {
                self.metrics.errors.get_or_create(&ErrorLabel { service: name.to_string(), code: e.status() }).inc();
            }
            Err(_) => {}
        }
        res
    }

    fn metrics_text(&self) -> String {
        self.metrics.encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ready process of batch size `batch`, SLO `slo_ms`, whose full batch takes `exec_s`, with
    /// the default hard bounds; the receiver of its jobs.
    fn proc_route(i: usize, weight: f64, batch: u32, slo_ms: f64, exec_s: f64) -> (ProcRoute, mpsc::UnboundedReceiver<Job>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(ProcShared::default());
        shared.ready.store(true, Ordering::SeqCst);
        shared.set_estimates(exec_s, exec_s, 0.0);
        let limits = QueueLimits::new(DEFAULT_QUEUE_BATCHES, batch as usize, DEFAULT_QUEUE_BYTES);
        (ProcRoute { tx, shared, worker: format!("w{i}"), weight, policy: BatchPolicy::new(batch, slo_ms), limits }, rx)
    }

    fn route(weight: f64) -> ProcRoute {
        proc_route(0, weight, 1, 1000.0, 0.001).0
    }

    fn meta() -> ModelMeta {
        serde_json::from_str(
            r#"{"name":"m","inputs":[{"name":"x","datatype":"FP32","shape":[-1,1]}],"outputs":[{"name":"y","datatype":"FP32","shape":[-1,1]}]}"#,
        )
        .unwrap()
    }

    fn service(procs: Vec<ProcRoute>) -> ServiceRoute {
        ServiceRoute::new("s".into(), meta(), procs)
    }

    fn overloaded_why(e: InferError) -> String {
        assert_eq!(e.status(), 429, "{e}");
        match e {
            InferError::Overloaded { service, why } => {
                assert_eq!(service, "s");
                why
            }
            other => panic!("expected Overloaded, got {other:?}"),
        }
    }

    #[test]
    fn smooth_weighted_round_robin_follows_the_weights() {
        let procs = [route(3.0), route(1.0), route(2.0)];
        let mut cur = vec![0.0; 3];
        let mut counts = [0; 3];
        let mut seq = Vec::new();
        for _ in 0..60 {
            let i = swrr_pick(&mut cur, |i| procs[i].weight, &[0, 1, 2]);
            counts[i] += 1;
            seq.push(i);
        }
        assert_eq!(counts, [30, 10, 20]);
        // Smooth: the heaviest is never picked three times in a row.
        assert!(!seq.windows(3).any(|w| w.iter().all(|&i| i == 0)), "{seq:?}");
    }

    /// Regression (issue 11): a burst got 429 from a fixed cap of 4 batches per process while the
    /// service's p99 was a fraction of its SLO. 200 one-row requests on two processes of batch 4
    /// whose batches take 10 ms: 25 batches = 250 ms each, within a 1000 ms SLO, all admitted
    /// (the old cap took 32), and in proportion to the weights.
    #[test]
    fn a_burst_that_fits_the_slo_is_admitted_in_full() {
        let svc = service(vec![proc_route(0, 1.0, 4, 1000.0, 0.010).0, proc_route(1, 1.0, 4, 1000.0, 0.010).0]);
        let mut per_proc = [0; 2];
        for n in 0..200 {
            let i = svc.admit(1, 4, 0.0).unwrap_or_else(|e| panic!("request {n} refused: {e}")).1;
            per_proc[i] += 1;
        }
        assert_eq!(per_proc, [100, 100]);
        assert_eq!(svc.procs()[0].shared.queued_rows.load(Ordering::SeqCst), 100);
        assert_eq!(svc.procs()[0].shared.queued_bytes.load(Ordering::SeqCst), 400);
    }

    /// One process, batch 4, 10 ms per batch, SLO 100 ms (guard 5 ms): a request finishes in time
    /// while it is in the first 9 batches (90 ms <= 95 ms), so 36 rows are admitted and the 37th is
    /// refused at once with the reason and the numbers.
    #[test]
    fn a_burst_that_cannot_meet_the_slo_is_refused_with_the_reason() {
        let svc = service(vec![proc_route(0, 1.0, 4, 100.0, 0.010).0]);
        for n in 0..36 {
            svc.admit(1, 4, 0.0).unwrap_or_else(|e| panic!("request {n} refused: {e}"));
        }
        let why = overloaded_why(svc.admit(1, 4, 0.0).map(|(_, i)| i).unwrap_err());
        for want in ["within the SLO of 100 ms", "5 ms guard", "about 100 ms", "w0 with 36 rows ahead", "full batches of 4 executing in about 10.0 ms each, plus 0.0 ms of overhead"] {
            assert!(why.contains(want), "{want:?} not in {why:?}");
        }
        // Refused requests reserve nothing.
        assert_eq!(svc.procs()[0].shared.queued_rows.load(Ordering::SeqCst), 36);
        assert_eq!(svc.procs()[0].shared.queued_bytes.load(Ordering::SeqCst), 144);
        // A batch in flight counts for what is left of it: one running batch of 1 row expected to
        // end in 8 ms, ahead of 35 queued rows (8 full batches, then the request's own with 4
        // rows): 8 + 80 + 10 = 98 ms > 95 ms, refused; at 4 ms left, 94 ms, admitted.
        let svc = service(vec![proc_route(0, 1.0, 4, 100.0, 0.010).0]);
        let sh = &svc.procs()[0].shared;
        sh.queued_rows.store(36, Ordering::SeqCst);
        sh.inflight_batches.store(1, Ordering::SeqCst);
        sh.inflight_rows.store(1, Ordering::SeqCst);
        // Regression (issue 34): admission read the clock itself, so a test that lost more than
        // 3 ms between setting the busy time and admitting (a loaded machine) saw a request
        // admitted. Admission as of a fixed instant is exact.
        let now = Instant::now();
        sh.set_busy_until(Some(now + std::time::Duration::from_millis(8)));
        assert!((sh.finish_estimate(now, 36, 1, 4) - 0.098).abs() < 1e-6, "{}", sh.finish_estimate(now, 36, 1, 4));
        overloaded_why(svc.admit_at(1, 4, 0.0, now).map(|(_, i)| i).unwrap_err());
        sh.set_busy_until(Some(now + std::time::Duration::from_millis(4)));
        assert_eq!(svc.admit_at(1, 4, 0.0, now).unwrap().1, 0);
    }

    /// Regression (issue 18, found by `scripts/bench/admission.sh` with scenario 3): vgg19's
    /// segment (batch 128, a full batch 189 ms, SLO 265 ms, guard 13.25 ms) ran batches of about
    /// 50 rows; a request arriving while one ran was timed as waiting for a full running batch and
    /// a full batch of its own (378 ms) and refused: 8,140 of 16,630 requests got 429 while the
    /// admitted ones had a p99 of 134 ms. Now: 50 rows running with 60 ms left, 10 queued, rows
    /// arriving at 673/s: its own batch holds about 11 + 40 rows (~76 ms), done in ~136 ms.
    #[test]
    fn a_request_behind_a_partial_batch_is_not_timed_as_two_full_batches() {
        let (p, _rx) = proc_route(0, 1.0, 128, 265.0, 0.189);
        p.shared.set_estimates(0.003, 0.189, 0.0);
        p.shared.set_arrival_rate(673.0);
        let svc = service(vec![p]);
        let sh = &svc.procs()[0].shared;
        sh.queued_rows.store(60, Ordering::SeqCst);
        sh.inflight_batches.store(1, Ordering::SeqCst);
        sh.inflight_rows.store(50, Ordering::SeqCst);
        let now = Instant::now();
        sh.set_busy_until(Some(now + std::time::Duration::from_millis(60)));
        let t = sh.finish_estimate(now, 60, 1, 128);
        assert!((0.130..0.140).contains(&t), "{t}");
        assert_eq!(svc.admit_at(1, 4, 0.0, now).unwrap().1, 0);
        // A real backlog still refuses: 300 rows queued are two full batches ahead.
        sh.queued_rows.store(350, Ordering::SeqCst);
        let why = overloaded_why(svc.admit(1, 4, 0.0).map(|(_, i)| i).unwrap_err());
        assert!(why.contains("full batches of 128 executing in about 189.0 ms each"), "{why}");
    }

    #[test]
    fn a_request_goes_to_any_ready_process_that_can_finish_it_in_time() {
        // w0 is deep in work; w1 (a tenth of the weight) is idle: the request goes to w1.
        let svc = service(vec![proc_route(0, 10.0, 4, 100.0, 0.010).0, proc_route(1, 1.0, 4, 100.0, 0.010).0]);
        svc.procs()[0].shared.queued_rows.store(36, Ordering::SeqCst);
        assert_eq!(svc.admit(1, 4, 0.0).unwrap().1, 1);
        // A request that already waited 50 ms (sent back from a dead process) has less room.
        let svc = service(vec![proc_route(0, 1.0, 4, 100.0, 0.010).0]);
        svc.procs()[0].shared.queued_rows.store(16, Ordering::SeqCst);
        assert!(svc.admit(1, 4, 0.040).is_ok(), "5 batches + 40 ms = 90 ms <= 95 ms");
        let why = overloaded_why(svc.admit(1, 4, 0.050).map(|(_, i)| i).unwrap_err());
        assert!(why.contains("about 100 ms"), "{why}");
    }

    #[test]
    fn the_hard_bound_still_applies_to_rows_and_to_bytes() {
        // A huge SLO: only the hard bound refuses. 2 batches of 4 rows per process.
        let (mut p, _rx) = proc_route(0, 1.0, 4, 1e9, 0.010);
        p.limits = QueueLimits::new(2, 4, 1 << 20);
        let svc = service(vec![p]);
        for _ in 0..8 {
            svc.admit(1, 4, 0.0).unwrap();
        }
        let why = overloaded_why(svc.admit(1, 4, 0.0).map(|(_, i)| i).unwrap_err());
        assert!(why.contains("hard bound (8 rows or 1 MiB of inputs per process)"), "{why}");
        // Bytes: 1 MiB per process; an idle process takes even a larger request, then nothing more.
        let (mut p, _rx) = proc_route(0, 1.0, 4, 1e9, 0.010);
        p.limits = QueueLimits::new(1000, 4, 1 << 20);
        let svc = service(vec![p]);
        svc.admit(1, 3 << 20, 0.0).unwrap();
        overloaded_why(svc.admit(1, 1, 0.0).map(|(_, i)| i).unwrap_err());
        svc.procs()[0].shared.release(1, 3 << 20);
        svc.admit(1, (1 << 20) - 1, 0.0).unwrap();
        svc.admit(1, 1, 0.0).unwrap();
        overloaded_why(svc.admit(1, 1, 0.0).map(|(_, i)| i).unwrap_err());
    }

    #[test]
    fn admission_skips_unready_processes_and_without_any_answers_503() {
        let svc = service(vec![proc_route(0, 1.0, 4, 100.0, 0.010).0, proc_route(1, 1.0, 4, 100.0, 0.010).0]);
        svc.procs()[1].shared.ready.store(false, Ordering::SeqCst);
        for _ in 0..36 {
            assert_eq!(svc.admit(1, 4, 0.0).unwrap().1, 0);
        }
        let why = overloaded_why(svc.admit(1, 4, 0.0).map(|(_, i)| i).unwrap_err());
        assert!(why.contains("among its 1 ready processes"), "{why}");
        svc.procs()[0].shared.ready.store(false, Ordering::SeqCst);
        let e = svc.admit(1, 4, 0.0).map(|(_, i)| i).unwrap_err();
        assert_eq!(e.status(), 503);
        assert!(matches!(&e, InferError::NotReady { why, .. } if why == "no worker process is ready"), "{e:?}");
    }

    /// Regression (issue 11): jobs queued on a process that died were answered 503 "not ready"
    /// while the service's other processes were ready. A job given back goes to another process.
    #[tokio::test]
    async fn a_request_given_back_by_a_dead_process_is_answered_by_another() {
        let (p0, mut rx0) = proc_route(0, 1.0, 4, 1000.0, 0.010);
        let (p1, mut rx1) = proc_route(1, 1.0, 4, 1000.0, 0.010);
        let sh0 = p0.shared.clone();
        let sh1 = p1.shared.clone();
        let services = [("s".to_string(), service(vec![p0, p1]))].into_iter().collect();
        let router = Arc::new(Router { services, metrics: Arc::new(Metrics::new()) });
        // w0 "dies" with the job queued: not ready, the job given back.
        let dead = tokio::spawn(async move {
            let j = rx0.recv().await.unwrap();
            sh0.ready.store(false, Ordering::SeqCst);
            sh0.give_back(j, "worker process w0 is restarting");
        });
        let alive = tokio::spawn(async move {
            let j = rx1.recv().await.unwrap();
            let outputs = j.inputs.clone();
            let rows = j.rows;
            sh1.answer(j, Ok(JobDone { outputs, queue_s: 0.0, exec_s: 0.0, batch_rows: rows }));
            sh1
        });
        let x = Tensor { name: "x".into(), datatype: parva_proto::tensor::DataType::Fp32, shape: vec![1, 1], data: vec![1, 2, 3, 4].into() };
        // Smooth weighted round-robin picks w0 first.
        let done = router.infer("s", vec![x.clone()]).await.expect("answered by w1");
        assert_eq!(done.outputs, vec![x]);
        dead.await.unwrap();
        let sh1 = alive.await.unwrap();
        assert_eq!(sh1.queued_rows.load(Ordering::SeqCst), 0);
        assert_eq!(router.services["s"].procs()[0].shared.queued_rows.load(Ordering::SeqCst), 0);
        assert!(!router.metrics_text().contains("code=\"503\""));
    }
}
