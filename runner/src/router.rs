//! The router between HTTP and execution: per service, admission (bounded queues), the choice of
//! a process in proportion to profiled throughput (smooth weighted round-robin over the ready
//! processes with room), and the hand-off to that process's batcher.
//!
//! [`Backend`] is the interface the HTTP layer uses; [`Router`] implements it over worker
//! processes, and tests can implement it with anything.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::batcher::{Job, JobDone, ProcShared};
use crate::error::InferError;
use crate::meta::ModelMeta;
use crate::metrics::{ErrorLabel, Metrics};
use crate::tensor::Tensor;

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

/// One worker process as the router sees it.
pub struct ProcRoute {
    pub tx: mpsc::UnboundedSender<Job>,
    pub shared: Arc<ProcShared>,
    /// Profiled throughput of this process, samples/s.
    pub weight: f64,
    /// Most rows it may hold queued or running.
    pub capacity_rows: usize,
}

/// One service: its model metadata and its processes.
pub struct ServiceRoute {
    pub name: String,
    pub meta: ModelMeta,
    pub procs: Vec<ProcRoute>,
    /// Smooth weighted round-robin state, one entry per process.
    current: Mutex<Vec<f64>>,
}

impl ServiceRoute {
    pub fn new(name: String, meta: ModelMeta, procs: Vec<ProcRoute>) -> Self {
        let current = Mutex::new(vec![0.0; procs.len()]);
        ServiceRoute { name, meta, procs, current }
    }

    pub fn any_ready(&self) -> bool {
        self.procs.iter().any(|p| p.shared.ready.load(Ordering::SeqCst))
    }

    /// Pick a process for `rows` rows and reserve them there.
    fn admit(&self, rows: usize) -> Result<usize, InferError> {
        let ready: Vec<bool> = self.procs.iter().map(|p| p.shared.ready.load(Ordering::SeqCst)).collect();
        if !ready.iter().any(|&r| r) {
            return Err(InferError::NotReady { service: self.name.clone(), why: "no worker process is ready".into() });
        }
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let mut candidates: Vec<usize> = (0..self.procs.len()).filter(|&i| ready[i]).collect();
        while !candidates.is_empty() {
            let i = swrr_pick(&mut current, &self.procs, &candidates);
            let p = &self.procs[i];
            let before = p.shared.queued_rows.fetch_add(rows, Ordering::SeqCst);
            // An empty process always takes a request, even one larger than its capacity.
            if before == 0 || before + rows <= p.capacity_rows {
                return Ok(i);
            }
            p.shared.queued_rows.fetch_sub(rows, Ordering::SeqCst);
            candidates.retain(|&c| c != i);
        }
        let limit = self.procs.iter().zip(&ready).filter(|(_, r)| **r).map(|(p, _)| p.capacity_rows).sum();
        Err(InferError::QueueFull { service: self.name.clone(), limit })
    }
}

/// Smooth weighted round-robin (as in nginx): every candidate gains its weight, the richest is
/// chosen and pays the candidates' total. Over time each is chosen in proportion to its weight.
fn swrr_pick(current: &mut [f64], procs: &[ProcRoute], candidates: &[usize]) -> usize {
    let total: f64 = candidates.iter().map(|&i| procs[i].weight).sum();
    let mut best = candidates[0];
    for &i in candidates {
        current[i] += procs[i].weight;
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
        self.services.get(name).ok_or_else(|| InferError::UnknownModel(name.to_string()))
    }

    async fn run(&self, name: &str, inputs: Vec<Tensor>) -> Result<JobDone, InferError> {
        let svc = self.service(name)?;
        let (inputs, rows) = svc.meta.check_inputs(inputs).map_err(InferError::BadRequest)?;
        let i = svc.admit(rows)?;
        let (tx, rx) = oneshot::channel();
        let job = Job { inputs, rows, arrival: Instant::now(), reply: tx };
        if let Err(e) = svc.procs[i].tx.send(job) {
            svc.procs[i].shared.queued_rows.fetch_sub(rows, Ordering::SeqCst);
            drop(e);
            return Err(InferError::ShuttingDown);
        }
        rx.await.unwrap_or(Err(InferError::ShuttingDown))
    }
}

impl Backend for Router {
    fn live(&self) -> bool {
        true
    }

    fn ready(&self) -> bool {
        self.services.values().all(|s| s.procs.iter().all(|p| p.shared.ready.load(Ordering::SeqCst)))
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
                self.metrics.queue_seconds.get_or_create(&label).observe(done.queue_s);
                self.metrics.request_seconds.get_or_create(&label).observe(t0.elapsed().as_secs_f64());
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

    fn route(weight: f64) -> ProcRoute {
        let (tx, _rx) = mpsc::unbounded_channel();
        let shared = Arc::new(ProcShared::default());
        shared.ready.store(true, Ordering::SeqCst);
        ProcRoute { tx, shared, weight, capacity_rows: 4 }
    }

    #[test]
    fn smooth_weighted_round_robin_follows_the_weights() {
        let procs = vec![route(3.0), route(1.0), route(2.0)];
        let mut cur = vec![0.0; 3];
        let mut counts = [0; 3];
        let mut seq = Vec::new();
        for _ in 0..60 {
            let i = swrr_pick(&mut cur, &procs, &[0, 1, 2]);
            counts[i] += 1;
            seq.push(i);
        }
        assert_eq!(counts, [30, 10, 20]);
        // Smooth: the heaviest is never picked three times in a row.
        assert!(!seq.windows(3).any(|w| w.iter().all(|&i| i == 0)), "{seq:?}");
    }

    #[test]
    fn admission_skips_full_and_unready_processes() {
        let meta: ModelMeta = serde_json::from_str(
            r#"{"name":"m","inputs":[{"name":"x","datatype":"FP32","shape":[-1,1]}],"outputs":[{"name":"y","datatype":"FP32","shape":[-1,1]}]}"#,
        )
        .unwrap();
        let svc = ServiceRoute::new("s".into(), meta, vec![route(1.0), route(1.0)]);
        svc.procs[1].shared.ready.store(false, Ordering::SeqCst);
        for _ in 0..4 {
            assert_eq!(svc.admit(1).unwrap(), 0);
        }
        assert_eq!(svc.admit(1).unwrap_err().status(), 429);
        svc.procs[0].shared.ready.store(false, Ordering::SeqCst);
        assert_eq!(svc.admit(1).unwrap_err().status(), 503);
    }
}
