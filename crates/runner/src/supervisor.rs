//! Supervision of one worker process: start it, wait for it to connect and report ready, hand it
//! to the batcher, and when it dies count a restart and start it again after an exponential
//! back-off. One tokio task per worker process runs [`supervise`].
//!
//! When the worker dies, only the batch it was running fails (502, see the batcher); every job
//! queued on the process, and every job that reaches it while it restarts (admitted just before it
//! was marked not ready), goes back to the router, which sends it to another ready process of the
//! service ([`crate::batcher::Outcome::Returned`]). A client gets 503 only when no process of the
//! service is ready.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parva_core::batching::BatchPolicy;
use tokio::io::BufReader;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};

use crate::batcher::{self, BatcherCtx, BatcherExit, Conn, ExecEstimate, Job, ProcShared};
use crate::error::InferError;
use crate::metrics::Metrics;
use parva_proto::frame::{self as proto, Msg};
use parva_proto::shm::{SHM_DIR, Slab, SlabLayout};
use crate::spawn::{Spawner, WorkerChild, WorkerSpec};

/// Restart delays: `initial`, doubled after each failure up to `max`; back to `initial` once a
/// worker has served for `reset_after`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { initial: Duration::from_millis(200), max: Duration::from_secs(10), reset_after: Duration::from_secs(30) }
    }
}

/// Everything one process's supervisor needs.
pub struct ProcessConfig {
    pub service: String,
    pub spec: WorkerSpec,
    pub policy: BatchPolicy,
    /// Profiled seconds per batch of 1, 2, ... rows (may be empty).
    pub exec_profile: Vec<f64>,
    /// How long a worker may take to connect, load and warm up.
    pub ready_timeout: Duration,
    /// How much longer than expected a batch may run before the worker counts as stalled.
    pub worker_timeout: Duration,
    pub backoff: Backoff,
    pub epoch: Instant,
    /// The worker's shared buffers, made anew for each process it starts (`None`: the socket).
    pub slab: Option<SlabLayout>,
}

/// Handles for one supervised process.
pub struct ProcessHandles {
    pub listener: UnixListener,
    pub spawner: Arc<dyn Spawner>,
    pub rx: mpsc::UnboundedReceiver<Job>,
    pub shared: Arc<ProcShared>,
    pub metrics: Arc<Metrics>,
    pub stop: watch::Receiver<bool>,
}

enum StartError {
    Stop,
    Failed(String),
}

/// Run one worker process for as long as the router runs.
pub async fn supervise(cfg: ProcessConfig, mut h: ProcessHandles) {
    let mut queue: VecDeque<Job> = VecDeque::new();
    let mut est = ExecEstimate::new(cfg.exec_profile.clone(), cfg.policy.max_batch as usize);
    h.shared.set_estimates(est.exec(1), est.full_exec(cfg.policy.max_batch as usize), est.overhead());
    let mut delay = cfg.backoff.initial;
    let label = Metrics::service(&cfg.service);
    let mut started_once = false;
    loop {
        if *h.stop.borrow() {
            break;
        }
        if started_once {
            h.metrics.restarts.get_or_create(&label).inc();
        }
        started_once = true;
        match start(&cfg, &mut h).await {
            Ok((mut child, conn)) => {
                h.shared.start_failures.store(0, Ordering::SeqCst);
                h.shared.ready.store(true, Ordering::SeqCst);
                h.metrics.workers_ready.get_or_create(&label).inc();
                let up = Instant::now();
                let ctx = BatcherCtx {
                    service: &cfg.service,
                    worker: &cfg.spec.name,
                    policy: cfg.policy,
                    shared: &h.shared,
                    metrics: &h.metrics,
                    epoch: cfg.epoch,
                    worker_timeout: cfg.worker_timeout,
                };
                est.new_process();
                let exit = batcher::run_batcher(&ctx, conn, &mut child, &mut queue, &mut h.rx, &mut h.stop, &mut est).await;
                h.shared.ready.store(false, Ordering::SeqCst);
                h.metrics.workers_ready.get_or_create(&label).dec();
                match exit {
                    BatcherExit::Stopped(writer) => {
                        stop_worker(child, writer).await;
                        break;
                    }
                    BatcherExit::Crashed(why) => {
                        child.kill();
                        let status = child.wait().await;
                        // Ended by SIGTERM or SIGINT: most likely the whole node is being stopped
                        // (systemd signals every process of its cgroup at once). If the stop comes
                        // within a second, this is a shutdown, not a crash to restart.
                        if (status.contains("SIGTERM") || status.contains("SIGINT"))
                            && tokio::time::timeout(Duration::from_secs(1), wait_stop(&mut h.stop)).await.is_ok()
                        {
                            tracing::info!(service = %cfg.service, worker = %cfg.spec.name, "worker ended by {status} as the node stops");
                            break;
                        }
                        // `why` is often the exit status itself (the worker died): say it once.
                        let why = if why.contains(&status) { why } else { format!("{why}; exit status {status}") };
                        tracing::warn!(service = %cfg.service, worker = %cfg.spec.name, log = %cfg.spec.log.display(), "worker died ({why}); restarting");
                        if up.elapsed() >= cfg.backoff.reset_after {
                            delay = cfg.backoff.initial;
                        }
                    }
                }
            }
            Err(StartError::Stop) => break,
            Err(StartError::Failed(why)) => {
                h.shared.start_failures.fetch_add(1, Ordering::SeqCst);
                tracing::warn!(service = %cfg.service, worker = %cfg.spec.name, %why, log = %cfg.spec.log.display(), "worker failed to start");
            }
        }
        let why = format!("worker process {} is restarting", cfg.spec.name);
        give_back_queue(&mut h, &mut queue, &why);
        // Back-off, sending whatever arrives meanwhile to the service's other processes.
        let until = tokio::time::Instant::now() + delay;
        delay = (delay * 2).min(cfg.backoff.max);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                job = h.rx.recv() => match job {
                    Some(j) => queue.push_back(j),
                    None => break,
                },
                r = h.stop.changed() => { if r.is_err() || *h.stop.borrow() { break; } }
            }
            give_back_queue(&mut h, &mut queue, &why);
        }
        give_back_queue(&mut h, &mut queue, &why);
    }
    h.rx.close();
    while let Ok(j) = h.rx.try_recv() {
        queue.push_back(j);
    }
    for j in queue.drain(..) {
        h.shared.answer(j, Err(InferError::ShuttingDown));
    }
    let _ = std::fs::remove_file(&cfg.spec.socket);
}

/// Give every job of `queue`, and those waiting in the channel, back to the router.
fn give_back_queue(h: &mut ProcessHandles, queue: &mut VecDeque<Job>, why: &str) {
    while let Ok(j) = h.rx.try_recv() {
        queue.push_back(j);
    }
    for j in queue.drain(..) {
        h.shared.give_back(j, why);
    }
}

enum Step<T> {
    Got(T),
    Exited(String),
    TimedOut,
    Stop,
}

/// Spawn the worker and wait for `Hello` and `Ready` on its connection.
async fn start(cfg: &ProcessConfig, h: &mut ProcessHandles) -> Result<(Box<dyn WorkerChild>, Conn), StartError> {
    let mut child = h.spawner.spawn(&cfg.spec).map_err(StartError::Failed)?;
    let pid = child.pid().unwrap_or(0);
    h.shared.pid.store(pid, Ordering::SeqCst);
    if pid != 0 {
        let _ = std::fs::write(cfg.spec.socket.with_extension("pid"), format!("{pid}\n"));
    }
    let deadline = tokio::time::Instant::now() + cfg.ready_timeout;
    let fail = |child: &mut Box<dyn WorkerChild>, why: String| {
        child.kill();
        StartError::Failed(why)
    };
    let log = cfg.spec.log.display().to_string();
    let stream = match step(&mut child, &mut h.stop, deadline, h.listener.accept()).await {
        Step::Got(Ok((s, _))) => s,
        Step::Got(Err(e)) => return Err(fail(&mut child, format!("accept: {e}"))),
        Step::Exited(why) => return Err(StartError::Failed(format!("exited before connecting ({why}); see {log}"))),
        Step::TimedOut => return Err(fail(&mut child, format!("did not connect within {:?}; see {log}", cfg.ready_timeout))),
        Step::Stop => {
            child.kill();
            return Err(StartError::Stop);
        }
    };
    let (r, w) = stream.into_split();
    let mut conn = Conn { reader: BufReader::with_capacity(1 << 16, r), writer: w, slab: None };
    loop {
        let frame = match step(&mut child, &mut h.stop, deadline, proto::read_frame_async(&mut conn.reader, None)).await {
            Step::Got(Ok(f)) => f,
            Step::Got(Err(e)) => return Err(fail(&mut child, format!("before ready: {e}; see {log}"))),
            Step::Exited(why) => return Err(StartError::Failed(format!("exited before ready ({why}); see {log}"))),
            Step::TimedOut => return Err(fail(&mut child, format!("not ready within {:?}; see {log}", cfg.ready_timeout))),
            Step::Stop => {
                child.kill();
                return Err(StartError::Stop);
            }
        };
        match frame.msg {
            Msg::Hello { pid, backend, device, .. } => {
                tracing::debug!(worker = %cfg.spec.name, pid, %backend, %device, "worker connected");
            }
            Msg::Ready { load_ms } => {
                tracing::info!(service = %cfg.service, worker = %cfg.spec.name, load_ms, "worker ready");
                if let Some(layout) = cfg.slab {
                    match step(&mut child, &mut h.stop, deadline, give_slab(cfg, layout, &mut conn)).await {
                        Step::Got(Ok(slab)) => conn.slab = slab,
                        Step::Got(Err(e)) => return Err(fail(&mut child, format!("sharing buffers: {e}; see {log}"))),
                        Step::Exited(why) => return Err(StartError::Failed(format!("exited while mapping its buffers ({why}); see {log}"))),
                        Step::TimedOut => return Err(fail(&mut child, format!("did not map its buffers within {:?}; see {log}", cfg.ready_timeout))),
                        Step::Stop => {
                            child.kill();
                            return Err(StartError::Stop);
                        }
                    }
                }
                return Ok((child, conn));
            }
            Msg::Fatal { message } => return Err(fail(&mut child, format!("could not load the model: {message}"))),
            other => return Err(fail(&mut child, format!("unexpected message before ready: {other:?}"))),
        }
    }
}

/// Make the worker's slab, have the worker map it and unlink its file. `Ok(None)` when the slab
/// cannot be made or mapped (the batches then go over the socket; logged); `Err` when the worker
/// broke the protocol.
async fn give_slab(cfg: &ProcessConfig, layout: SlabLayout, conn: &mut Conn) -> Result<Option<Arc<Slab>>, proto::ProtoError> {
    let dir = if std::path::Path::new(SHM_DIR).is_dir() { std::path::PathBuf::from(SHM_DIR) } else { std::env::temp_dir() };
    let mut slab = match Slab::create(&dir, &format!("{}-{}", cfg.service, cfg.spec.name), layout) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(worker = %cfg.spec.name, error = %e, "no shared buffers for this worker; its batches go over the socket");
            return Ok(None);
        }
    };
    let path = slab.path().map(|p| p.display().to_string()).unwrap_or_default();
    proto::write_frame_async(&mut conn.writer, &Msg::Slab { path, bytes: slab.map.len() }, &[]).await?;
    let answer = proto::read_frame_async(&mut conn.reader, None).await?;
    slab.unlink();
    match answer.msg {
        Msg::SlabMapped { error: None } => Ok(Some(Arc::new(slab))),
        Msg::SlabMapped { error: Some(e) } => {
            tracing::warn!(worker = %cfg.spec.name, error = %e, "the worker could not map its shared buffers; its batches go over the socket");
            Ok(None)
        }
        other => Err(proto::ProtoError::BadHeader(format!("expected SlabMapped, got {other:?}"))),
    }
}

/// Wait for `fut`, unless the child exits, the deadline passes or a stop is asked for.
async fn step<T>(
    child: &mut Box<dyn WorkerChild>,
    stop: &mut watch::Receiver<bool>,
    deadline: tokio::time::Instant,
    fut: impl std::future::Future<Output = T>,
) -> Step<T> {
    if *stop.borrow() {
        return Step::Stop;
    }
    tokio::select! {
        v = fut => Step::Got(v),
        why = child.wait() => Step::Exited(why),
        _ = tokio::time::sleep_until(deadline) => Step::TimedOut,
        _ = stop.changed() => Step::Stop,
    }
}

/// Ask a worker to exit, then make sure it does.
/// Resolves once `stop` says stop (never when its sender is gone without saying so).
async fn wait_stop(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn stop_worker(mut child: Box<dyn WorkerChild>, mut writer: tokio::net::unix::OwnedWriteHalf) {
    let _ = proto::write_frame_async(&mut writer, &Msg::Shutdown, &[]).await;
    if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
        child.kill();
        let _ = child.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parva_proto::meta::ModelMeta;
    use crate::router::{Backend, ProcRoute, QueueLimits, Router, ServiceRoute};
    use crate::spawn::{FakeSpawner, Faults};
    use parva_proto::tensor::{DataType, Tensor};

    async fn wait_ready(shared: &ProcShared, ready: bool) {
        let t0 = Instant::now();
        while shared.ready.load(Ordering::SeqCst) != ready {
            assert!(t0.elapsed() < Duration::from_secs(10), "process never became ready={ready}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_starts_are_retried_and_a_crash_fails_in_flight_jobs_then_restarts() {
        let meta: ModelMeta = serde_json::from_str(
            r#"{"name":"m","inputs":[{"name":"x","datatype":"FP32","shape":[-1,1]}],"outputs":[{"name":"y","datatype":"FP32","shape":[-1,2]}]}"#,
        )
        .unwrap();
        // Two failed starts, and every worker dies on its second batch.
        let faults = Faults { fail_spawns: 2, crash_after_batches: Some(1), ..Faults::default() };
        let spawner = FakeSpawner::new(meta.clone(), vec![0.02, 0.02], faults);
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("w0.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let env = vec![("CUDA_VISIBLE_DEVICES".to_string(), "MIG-test".to_string())];
        let spec = WorkerSpec { name: "w0".into(), program: "fake".into(), args: vec![], env, socket, log: dir.path().join("w0.log") };
        let cfg = ProcessConfig {
            service: "s".into(),
            spec,
            policy: BatchPolicy::new(2, 1000.0),
            exec_profile: vec![0.02, 0.02],
            ready_timeout: Duration::from_secs(5),
            worker_timeout: Duration::from_secs(60),
            backoff: Backoff { initial: Duration::from_millis(10), max: Duration::from_millis(40), reset_after: Duration::from_secs(60) },
            epoch: Instant::now(),
            slab: None,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop_tx, stop) = watch::channel(false);
        let shared = Arc::new(ProcShared::default());
        let metrics = Arc::new(Metrics::new());
        let handles = ProcessHandles { listener, spawner: Arc::new(spawner.clone()), rx, shared: shared.clone(), metrics: metrics.clone(), stop };
        let task = tokio::spawn(supervise(cfg, handles));
        let limits = QueueLimits::new(4, 2, 1 << 20);
        let route = ProcRoute { tx, shared: shared.clone(), worker: "w0".into(), weight: 1.0, policy: BatchPolicy::new(2, 1000.0), limits };
        let services = [("s".to_string(), ServiceRoute::new("s".into(), meta, vec![route]))].into_iter().collect();
        let router = Router { services, metrics: metrics.clone() };
        let input = || vec![Tensor { name: "x".into(), datatype: DataType::Fp32, shape: vec![2, 1], data: vec![0; 8].into() }];

        wait_ready(&shared, true).await;
        assert_eq!(spawner.spawn_count(), 3, "two failed starts, then one that worked");
        let calls = spawner.calls.lock().unwrap().clone();
        assert!(calls.iter().all(|c| c.env == vec![("CUDA_VISIBLE_DEVICES".into(), "MIG-test".into())]));

        let done = router.infer("s", input()).await.unwrap();
        assert_eq!((done.batch_rows, done.outputs[0].shape.clone()), (2, vec![2, 2]));
        let err = router.infer("s", input()).await.unwrap_err();
        assert_eq!(err.status(), 502, "{err}");

        let t0 = Instant::now();
        while spawner.spawn_count() < 4 {
            assert!(t0.elapsed() < Duration::from_secs(10), "not restarted after the crash");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        wait_ready(&shared, true).await;
        assert_eq!(spawner.spawn_count(), 4, "restarted once after the crash");
        assert!(router.infer("s", input()).await.is_ok());
        let text = metrics.encode();
        assert!(text.contains("parva_worker_restarts_total{service=\"s\"} 3"), "{text}");

        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("supervisor stops").unwrap();
        assert!(!shared.ready.load(Ordering::SeqCst));
    }

    /// Regression (issue 34): a worker that stopped answering (`kill -STOP`) was never detected:
    /// requests sent to it got no answer and readiness stayed true. The watchdog treats it like
    /// a crashed one: the request is answered at once (504, no other process here), the worker is
    /// killed, counted and restarted, and the service serves again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_worker_is_killed_restarted_and_its_request_answered_at_once() {
        let meta: ModelMeta = serde_json::from_str(
            r#"{"name":"m","inputs":[{"name":"x","datatype":"FP32","shape":[-1,1]}],"outputs":[{"name":"y","datatype":"FP32","shape":[-1,2]}]}"#,
        )
        .unwrap();
        let faults = Faults { stall_spawns: 1, ..Faults::default() };
        let spawner = FakeSpawner::new(meta.clone(), vec![0.01, 0.01], faults);
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("w0.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let spec = WorkerSpec { name: "w0".into(), program: "fake".into(), args: vec![], env: vec![], socket, log: dir.path().join("w0.log") };
        let cfg = ProcessConfig {
            service: "s".into(),
            spec,
            policy: BatchPolicy::new(2, 60_000.0),
            exec_profile: vec![0.01, 0.01],
            ready_timeout: Duration::from_secs(30),
            worker_timeout: Duration::from_millis(50),
            backoff: Backoff { initial: Duration::from_millis(10), max: Duration::from_millis(40), reset_after: Duration::from_secs(60) },
            epoch: Instant::now(),
            slab: None,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop_tx, stop) = watch::channel(false);
        let shared = Arc::new(ProcShared::default());
        let metrics = Arc::new(Metrics::new());
        let handles = ProcessHandles { listener, spawner: Arc::new(spawner.clone()), rx, shared: shared.clone(), metrics: metrics.clone(), stop };
        let task = tokio::spawn(supervise(cfg, handles));
        let limits = QueueLimits::new(4, 2, 1 << 20);
        let route = ProcRoute { tx, shared: shared.clone(), worker: "w0".into(), weight: 1.0, policy: BatchPolicy::new(2, 60_000.0), limits };
        let services = [("s".to_string(), ServiceRoute::new("s".into(), meta, vec![route]))].into_iter().collect();
        let router = Router { services, metrics: metrics.clone() };
        let input = || vec![Tensor { name: "x".into(), datatype: DataType::Fp32, shape: vec![2, 1], data: vec![0; 8].into() }];

        wait_ready(&shared, true).await;
        // The full batch goes at once to the worker, which never answers: 504, not a hang (the
        // SLO is a minute, so nothing else could end the wait).
        let err = router.infer("s", input()).await.unwrap_err();
        assert_eq!(err.status(), 504, "{err}");
        assert!(err.to_string().contains("stalled") && err.to_string().contains("--worker-timeout"), "{err}");
        let text = metrics.encode();
        assert!(text.contains("parva_worker_stalls_total{service=\"s\"} 1"), "{text}");
        // Killed and restarted; the new worker answers.
        wait_ready(&shared, true).await;
        assert_eq!(spawner.spawn_count(), 2);
        let done = router.infer("s", input()).await.unwrap();
        assert_eq!(done.batch_rows, 2);
        assert!(metrics.encode().contains("parva_worker_restarts_total{service=\"s\"} 1"));
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(30), task).await.expect("supervisor stops").unwrap();
    }
}
