//! A serving node's worker processes, changeable while it serves: the router takes a new map
//! segment by segment (`parva deploy --follow`).
//!
//! - [`LiveNode::start_segment`]: start a segment's processes, wait until every one is ready,
//!   then add them to their service's route. Until then no request reaches them; a segment whose
//!   processes are not ready in time is stopped again and the route is unchanged. Several at once:
//!   [`LiveNode::spawn_segment`] for each (the processes start loading side by side), then
//!   [`LiveNode::route_when_ready`], which routes each segment the moment all its processes are
//!   ready.
//! - [`LiveNode::stop_segment`]: take a segment's processes out of the route, let them finish
//!   what they hold (every admitted request has its rows counted on its process, see
//!   [`crate::router::ServiceRoute::set_procs`]), then stop them. Nothing in flight is lost.
//! - [`LiveNode::rebatch`]: the same segment at another batch size: new processes up and ready,
//!   swapped into the route in one step, the old ones drained and stopped.
//!
//! The set of services is the one the node started with: a segment of another service is refused.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parva_core::Segment;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::batcher::ProcShared;
use crate::error::ServeError;
use crate::router::{ProcRoute, Router};
use crate::serve::{Planned, WorkerTemplate};
use crate::supervisor::{self, ProcessConfig, ProcessHandles};

/// One running worker process.
struct LiveProc {
    route: ProcRoute,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// One running segment: its map row, its workers' environment and its processes.
struct LiveSegment {
    segment: Segment,
    env: Vec<(String, String)>,
    procs: Vec<LiveProc>,
}

struct LiveState {
    /// Workers are named `w<N>` in start order, never reused (sockets and logs stay apart).
    next_worker: usize,
    segments: Vec<LiveSegment>,
    /// Slots of segments spawned and not yet routed or stopped ([`Starting`]).
    starting: std::collections::BTreeSet<(u32, u8)>,
}

/// A segment whose processes [`LiveNode::spawn_segment`] started and no route has yet: hand it
/// to [`LiveNode::route_when_ready`] (dropped instead, its processes would run unrouted and its
/// slot stay taken).
#[must_use = "hand it to LiveNode::route_when_ready"]
pub struct Starting {
    seg: LiveSegment,
}

impl Starting {
    /// The segment's map row.
    pub fn segment(&self) -> &Segment {
        &self.seg.segment
    }
}

impl LiveState {
    /// Index of the segment running at (`gpu`, `placement`).
    fn find(&self, gpu: u32, placement: u8) -> Option<usize> {
        self.segments.iter().position(|s| (s.segment.gpu, s.segment.placement) == (gpu, placement))
    }
}

/// The node's router and processes (see the module doc).
pub struct LiveNode {
    pub router: Arc<Router>,
    template: WorkerTemplate,
    epoch: Instant,
    state: tokio::sync::Mutex<LiveState>,
}

/// How long a drained process may take to finish what it holds before it is stopped anyway
/// (its jobs then get 503): far above any SLO a map carries.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

impl LiveNode {
    /// Start every segment's processes (not waiting for them: requests get 503 until one of a
    /// service's processes is ready) and build the router over them.
    pub(crate) fn launch(
        template: WorkerTemplate,
        segments: Vec<(Segment, Vec<(String, String)>)>,
        metas: &BTreeMap<String, parva_proto::meta::ModelMeta>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<LiveNode, ServeError> {
        let epoch = Instant::now();
        let mut state = LiveState { next_worker: 0, segments: Vec::new(), starting: Default::default() };
        let mut routes: BTreeMap<String, Vec<ProcRoute>> = BTreeMap::new();
        for (seg, env) in segments {
            let planned = template.segment_workers(&seg, &env, &mut state.next_worker)?;
            let procs = spawn_all(&template, planned, &metrics, epoch)?;
            routes.entry(seg.service.clone()).or_default().extend(procs.iter().map(|p| p.route.clone()));
            state.segments.push(LiveSegment { segment: seg, env, procs });
        }
        let services = routes
            .into_iter()
            .map(|(name, procs)| {
                let seg = &state.segments.iter().find(|s| s.segment.service == name).expect("a route has a segment").segment;
                let (meta, slo_ms) = (metas[&seg.model].clone(), seg.slo_ms);
                (name.clone(), crate::router::ServiceRoute::new(name, meta, procs).with_slo_ms(slo_ms))
            })
            .collect();
        let router = Arc::new(Router { services, metrics });
        Ok(LiveNode { router, template, epoch, state: tokio::sync::Mutex::new(state) })
    }

    /// Every process's shared state (readiness), in start order.
    pub(crate) async fn shared(&self) -> Vec<Arc<ProcShared>> {
        self.state.lock().await.segments.iter().flat_map(|s| s.procs.iter().map(|p| p.route.shared.clone())).collect()
    }

    /// The segments running now, in the order they were started.
    pub async fn segments(&self) -> Vec<Segment> {
        self.state.lock().await.segments.iter().map(|s| s.segment.clone()).collect()
    }

    /// Requests that reached each service so far (see [`crate::router::ServiceRoute::arrivals`]).
    pub fn arrivals(&self) -> BTreeMap<String, u64> {
        self.router.services.iter().map(|(n, s)| (n.clone(), s.arrivals())).collect()
    }

    /// Start `seg` with its workers' environment `env`, wait for every process to be ready (at
    /// most the template's ready timeout), then route to it. On failure nothing is left running.
    pub async fn start_segment(&self, seg: Segment, env: Vec<(String, String)>) -> Result<(), ServeError> {
        let starting = self.spawn_segment(seg, env).await?;
        self.route_when_ready(vec![starting]).await.pop().unwrap_or_else(|| Err(ServeError::Config("the segment was neither routed nor stopped".into())))
    }

    /// Start `seg`'s processes with its workers' environment `env`, not waiting for them; no
    /// request reaches them until [`LiveNode::route_when_ready`].
    pub async fn spawn_segment(&self, seg: Segment, env: Vec<(String, String)>) -> Result<Starting, ServeError> {
        self.service(&seg)?;
        let slot = (seg.gpu, seg.placement);
        let mut st = self.state.lock().await;
        if st.find(seg.gpu, seg.placement).is_some() || st.starting.contains(&slot) {
            return Err(ServeError::Config(format!("GPU {} placement {{{}}} already runs a segment", seg.gpu, seg.placement)));
        }
        let planned = self.template.segment_workers(&seg, &env, &mut st.next_worker)?;
        let procs = spawn_all(&self.template, planned, &self.router.metrics, self.epoch)?;
        st.starting.insert(slot);
        Ok(Starting { seg: LiveSegment { segment: seg, env, procs } })
    }

    /// Route each of `starting` as soon as all its processes are ready; those not ready within the
    /// template's ready timeout (from now) are stopped again, their routes unchanged. One result
    /// per segment, in order.
    pub async fn route_when_ready(&self, starting: Vec<Starting>) -> Vec<Result<(), ServeError>> {
        let t0 = Instant::now();
        let timeout = self.template.ready_timeout;
        let mut out: Vec<Option<Result<(), ServeError>>> = starting.iter().map(|_| None).collect();
        let mut waiting: Vec<(usize, LiveSegment)> = starting.into_iter().map(|s| s.seg).enumerate().collect();
        while !waiting.is_empty() {
            let late = t0.elapsed() >= timeout;
            let mut still = Vec::with_capacity(waiting.len());
            for (i, s) in waiting {
                let ready = ready_count(&s.procs);
                if ready < s.procs.len() && !late {
                    still.push((i, s));
                    continue;
                }
                let slot = (s.segment.gpu, s.segment.placement);
                let svc = if ready == s.procs.len() { Some(self.service(&s.segment)) } else { None };
                let mut st = self.state.lock().await;
                st.starting.remove(&slot);
                out[i] = Some(match svc {
                    Some(Ok(svc)) => {
                        reroute(svc, &[], &s.procs);
                        tracing::info!(service = %s.segment.service, gpu = slot.0, placement = slot.1, procs = s.procs.len(), "segment started and routed");
                        st.segments.push(s);
                        Ok(())
                    }
                    Some(Err(e)) => {
                        drop(st);
                        stop_all(s.procs).await;
                        Err(e)
                    }
                    None => {
                        drop(st);
                        let why = format!(
                            "{} on GPU {} {{{}}}: {ready} of {} worker processes ready after {:.0} s",
                            s.segment.service,
                            slot.0,
                            slot.1,
                            s.procs.len(),
                            timeout.as_secs_f64()
                        );
                        stop_all(s.procs).await;
                        Err(ServeError::Config(why))
                    }
                });
            }
            waiting = still;
            if !waiting.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        out.into_iter().map(|r| r.unwrap_or_else(|| Err(ServeError::Config("a segment was neither routed nor stopped".into())))).collect()
    }

    /// Take the segment at (`gpu`, `placement`) out of its route, drain it and stop it.
    /// Returns its map row and environment.
    pub async fn stop_segment(&self, gpu: u32, placement: u8) -> Result<(Segment, Vec<(String, String)>), ServeError> {
        let mut st = self.state.lock().await;
        let i = st.find(gpu, placement).ok_or_else(|| ServeError::Config(format!("no segment runs on GPU {gpu} placement {{{placement}}}")))?;
        let seg = st.segments.remove(i);
        drop(st);
        let svc = self.service(&seg.segment)?;
        reroute(svc, &seg.procs, &[]);
        drain(&seg.procs, DRAIN_TIMEOUT).await;
        stop_all(seg.procs).await;
        tracing::info!(service = %seg.segment.service, gpu, placement, "segment drained and stopped");
        Ok((seg.segment, seg.env))
    }

    /// Run the segment at (`gpu`, `placement`) at batch size `batch`: new processes up and
    /// ready, swapped into the route for the old ones, which are drained and stopped.
    pub async fn rebatch(&self, gpu: u32, placement: u8, batch: u32) -> Result<(), ServeError> {
        let mut st = self.state.lock().await;
        let i = st.find(gpu, placement).ok_or_else(|| ServeError::Config(format!("no segment runs on GPU {gpu} placement {{{placement}}}")))?;
        let mut seg = st.segments[i].segment.clone();
        if seg.batch_size == batch {
            return Ok(());
        }
        seg.batch_size = batch;
        let env = st.segments[i].env.clone();
        let svc = self.service(&seg)?;
        let planned = self.template.segment_workers(&seg, &env, &mut st.next_worker)?;
        let procs = spawn_all(&self.template, planned, &self.router.metrics, self.epoch)?;
        if let Err(e) = wait_ready(&procs, self.template.ready_timeout).await {
            stop_all(procs).await;
            return Err(ServeError::Config(format!("{} on GPU {gpu} {{{placement}}} at batch {batch}: {e}", seg.service)));
        }
        let old = std::mem::replace(&mut st.segments[i], LiveSegment { segment: seg, env, procs });
        reroute(svc, &old.procs, &st.segments[i].procs);
        drop(st);
        drain(&old.procs, DRAIN_TIMEOUT).await;
        stop_all(old.procs).await;
        Ok(())
    }

    /// Stop every process (shutdown: the HTTP server has finished its requests).
    pub(crate) async fn stop_everything(&self) {
        let segments = std::mem::take(&mut self.state.lock().await.segments);
        let procs: Vec<LiveProc> = segments.into_iter().flat_map(|s| s.procs).collect();
        for p in &procs {
            let _ = p.stop.send(true);
        }
        let all = async {
            for p in procs {
                let _ = p.task.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(30), all).await.is_err() {
            tracing::warn!("some workers did not stop within 30 s");
        }
    }

    fn service(&self, seg: &Segment) -> Result<&crate::router::ServiceRoute, ServeError> {
        self.router.services.get(&seg.service).ok_or_else(|| {
            ServeError::Config(format!("service {:?} is not served by this node (a live change keeps the services it started with)", seg.service))
        })
    }
}

/// Bind each planned worker's socket and start its supervisor.
fn spawn_all(t: &WorkerTemplate, planned: Vec<Planned>, metrics: &Arc<crate::metrics::Metrics>, epoch: Instant) -> Result<Vec<LiveProc>, ServeError> {
    let mut out = Vec::with_capacity(planned.len());
    for p in planned {
        let _ = std::fs::remove_file(&p.spec.socket);
        let listener = match tokio::net::UnixListener::bind(&p.spec.socket) {
            Ok(l) => l,
            Err(e) => {
                for started in out {
                    let LiveProc { stop, task, .. } = started;
                    let _ = stop.send(true);
                    task.abort();
                }
                return Err(ServeError::io(&p.spec.socket, "listen on worker socket", e));
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(ProcShared::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let route = ProcRoute { tx, shared: shared.clone(), worker: p.spec.name.clone(), weight: p.weight, policy: p.policy, limits: p.limits };
        let cfg = ProcessConfig {
            service: p.service,
            spec: p.spec,
            policy: p.policy,
            exec_profile: p.exec_profile,
            ready_timeout: t.ready_timeout,
            worker_timeout: t.worker_timeout,
            backoff: t.backoff,
            epoch,
            slab: p.slab,
        };
        let handles = ProcessHandles { listener, spawner: t.spawner.clone(), rx, shared, metrics: metrics.clone(), stop: stop_rx };
        let task = tokio::spawn(supervisor::supervise(cfg, handles));
        out.push(LiveProc { route, stop: stop_tx, task });
    }
    Ok(out)
}

/// How many of `procs` are ready.
fn ready_count(procs: &[LiveProc]) -> usize {
    procs.iter().filter(|p| p.route.shared.ready.load(Ordering::SeqCst)).count()
}

/// Wait until every process is ready; an error once `timeout` passes.
async fn wait_ready(procs: &[LiveProc], timeout: Duration) -> Result<(), String> {
    let t0 = Instant::now();
    loop {
        let ready = ready_count(procs);
        if ready == procs.len() {
            return Ok(());
        }
        if t0.elapsed() >= timeout {
            return Err(format!("{ready} of {} worker processes ready after {:.0} s", procs.len(), timeout.as_secs_f64()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Route `svc` to its processes less `out` and plus `add`, in one step.
fn reroute(svc: &crate::router::ServiceRoute, out: &[LiveProc], add: &[LiveProc]) {
    let names: Vec<&str> = out.iter().map(|p| p.route.worker.as_str()).collect();
    let mut routed: Vec<ProcRoute> = svc.procs().iter().filter(|p| !names.contains(&p.worker.as_str())).cloned().collect();
    routed.extend(add.iter().map(|p| p.route.clone()));
    svc.set_procs(routed);
}

/// Wait until `procs` hold no admitted request (or `timeout` passes).
async fn drain(procs: &[LiveProc], timeout: Duration) {
    let t0 = Instant::now();
    while procs.iter().any(|p| p.route.shared.queued_rows.load(Ordering::SeqCst) > 0) {
        if t0.elapsed() >= timeout {
            tracing::warn!("drained processes still hold requests after {:.0} s; stopping them anyway", timeout.as_secs_f64());
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn stop_all(procs: Vec<LiveProc>) {
    for p in &procs {
        let _ = p.stop.send(true);
    }
    for p in procs {
        if tokio::time::timeout(Duration::from_secs(30), p.task).await.is_err() {
            tracing::warn!(worker = %p.route.worker, "worker did not stop within 30 s");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parva_proto::meta::ModelMeta;
    use crate::router::Backend;
    use crate::serve::{BackendKind, Device, WorkerCommand};
    use crate::spawn::{FakeSpawner, Faults};
    use parva_proto::tensor::{DataType, Tensor};

    fn meta() -> ModelMeta {
        serde_json::from_str(
            r#"{"name":"m","inputs":[{"name":"x","datatype":"FP32","shape":[-1,1]}],"outputs":[{"name":"y","datatype":"FP32","shape":[-1,1]}]}"#,
        )
        .unwrap()
    }

    fn segment(gpu: u32, placement: u8, batch: u32, procs: u32) -> Segment {
        Segment {
            node: 0,
            gpu,
            service: "s".into(),
            model: "m".into(),
            placement,
            instance_size: 1,
            batch_size: batch,
            num_proc: procs,
            profile: None,
            gpu_type: None,
            throughput: Some(400.0 * procs as f64),
            rate: None,
            slo_ms: Some(2000.0),
            margin_ms: None,
        }
    }

    fn template(dir: &std::path::Path, spawner: FakeSpawner, ready_timeout: Duration) -> WorkerTemplate {
        WorkerTemplate {
            models_dir: dir.to_path_buf(),
            // The fake spawner ignores the worker's arguments; torch needs no profile tables.
            backend: BackendKind::Torch,
            device: Device::Cpu,
            run_dir: dir.to_path_buf(),
            slo_ms: BTreeMap::new(),
            cmd: WorkerCommand { program: "fake".into(), args: vec![] },
            threads: 1,
            queue_batches: crate::router::DEFAULT_QUEUE_BATCHES,
            queue_bytes: crate::router::DEFAULT_QUEUE_BYTES,
            prof: None,
            ready_timeout,
            worker_timeout: Duration::from_secs(60),
            backoff: crate::supervisor::Backoff { initial: Duration::from_millis(10), max: Duration::from_millis(20), reset_after: Duration::from_secs(60) },
            spawner: Arc::new(spawner),
            transport: crate::serve::WorkerTransport::Shm,
        }
    }

    fn input() -> Vec<Tensor> {
        vec![Tensor { name: "x".into(), datatype: DataType::Fp32, shape: vec![1, 1], data: vec![0; 4].into() }]
    }

    async fn ready(node: &LiveNode) {
        let t0 = Instant::now();
        while !node.router.ready() {
            assert!(t0.elapsed() < Duration::from_secs(10), "never ready");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn launch(dir: &std::path::Path, spawner: FakeSpawner, ready_timeout: Duration) -> Arc<LiveNode> {
        let metas = [("m".to_string(), meta())].into_iter().collect();
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let env = vec![("CUDA_VISIBLE_DEVICES".to_string(), "MIG-a".to_string())];
        Arc::new(LiveNode::launch(template(dir, spawner, ready_timeout), vec![(segment(0, 0, 4, 2), env)], &metas, metrics).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn segments_are_added_removed_and_rebatched_while_requests_flow_and_none_fails() {
        let dir = tempfile::tempdir().unwrap();
        let spawner = FakeSpawner::new(meta(), vec![0.004; 8], Faults::default());
        let node = launch(dir.path(), spawner.clone(), Duration::from_secs(5));
        ready(&node).await;
        // Four clients send back to back all through the changes.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut clients = Vec::new();
        for _ in 0..4 {
            let (node, stop) = (node.clone(), stop.clone());
            clients.push(tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !stop.load(Ordering::SeqCst) {
                    match node.router.infer("s", input()).await {
                        Ok(_) => ok += 1,
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed)
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let env = vec![("CUDA_VISIBLE_DEVICES".to_string(), "MIG-b".to_string())];
        node.start_segment(segment(0, 1, 4, 1), env.clone()).await.unwrap();
        assert_eq!(node.router.services["s"].procs().len(), 3, "the new process is routed once ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (gone, gone_env) = node.stop_segment(0, 0).await.unwrap();
        assert_eq!((gone.placement, gone_env[0].1.as_str()), (0, "MIG-a"));
        assert_eq!(node.router.services["s"].procs().len(), 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        node.rebatch(0, 1, 8).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.store(true, Ordering::SeqCst);
        let mut total = 0;
        for c in clients {
            let (ok, failed) = c.await.unwrap();
            assert!(failed.is_empty(), "requests failed during the changes: {failed:?}");
            total += ok;
        }
        assert!(total > 20, "requests flowed: {total}");
        let now = node.segments().await;
        assert_eq!(now.len(), 1);
        assert_eq!((now[0].placement, now[0].batch_size), (1, 8));
        // Two processes, one added, one more for the new batch size; the new ones got the new
        // segment's environment.
        let calls = spawner.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 4);
        assert!(calls[2..].iter().all(|c| c.env == env), "{:?}", calls.iter().map(|c| &c.env).collect::<Vec<_>>());
        assert_eq!(node.arrivals()["s"], total as u64);
        node.stop_everything().await;
    }

    /// A wave on a live node (issue 32): segments spawned side by side load at once, hold their
    /// slots meanwhile, reach no request until routed, and each is routed or stopped on its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn segments_spawned_side_by_side_are_routed_each_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let spawner = FakeSpawner::new(meta(), vec![0.004; 8], Faults::default());
        let node = launch(dir.path(), spawner.clone(), Duration::from_secs(3));
        ready(&node).await;
        let a = node.spawn_segment(segment(1, 0, 4, 1), vec![]).await.unwrap();
        let b = node.spawn_segment(segment(2, 0, 4, 2), vec![]).await.unwrap();
        assert_eq!(a.segment().gpu, 1);
        let e = node.spawn_segment(segment(1, 0, 4, 1), vec![]).await.err().unwrap().to_string();
        assert!(e.contains("already runs a segment"), "a slot under way is taken: {e}");
        assert_eq!(node.router.services["s"].procs().len(), 2, "nothing is routed before route_when_ready");
        let routed = node.route_when_ready(vec![a, b]).await;
        assert!(routed.iter().all(Result::is_ok), "{routed:?}");
        assert_eq!(node.router.services["s"].procs().len(), 5);
        assert_eq!(node.segments().await.len(), 3);
        // One whose workers never come up is stopped; the one beside it is routed.
        let c = node.spawn_segment(segment(3, 0, 4, 1), vec![]).await.unwrap();
        while spawner.calls.lock().unwrap().len() < 6 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        spawner.faults.lock().unwrap().fail_spawns = 1000;
        let d = node.spawn_segment(segment(4, 0, 4, 2), vec![]).await.unwrap();
        let routed = node.route_when_ready(vec![c, d]).await;
        assert!(routed[0].is_ok(), "{routed:?}");
        let e = routed[1].as_ref().unwrap_err().to_string();
        assert!(e.contains("GPU 4 {0}: 0 of 2 worker processes ready"), "{e}");
        assert_eq!(node.router.services["s"].procs().len(), 6);
        let slots: Vec<u32> = node.segments().await.iter().map(|s| s.gpu).collect();
        assert_eq!(slots, vec![0, 1, 2, 3]);
        // The failed one's slot is free again.
        spawner.faults.lock().unwrap().fail_spawns = 0;
        let e = node.spawn_segment(segment(4, 0, 4, 1), vec![]).await.unwrap();
        assert!(node.route_when_ready(vec![e]).await[0].is_ok());
        assert!(node.router.infer("s", input()).await.is_ok());
        node.stop_everything().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_segment_that_never_gets_ready_is_stopped_and_the_route_stays_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let spawner = FakeSpawner::new(meta(), vec![0.004; 8], Faults::default());
        let node = launch(dir.path(), spawner.clone(), Duration::from_millis(300));
        ready(&node).await;
        spawner.faults.lock().unwrap().fail_spawns = 1000;
        let e = node.start_segment(segment(1, 0, 4, 1), vec![]).await.unwrap_err().to_string();
        assert!(e.contains("0 of 1 worker processes ready"), "{e}");
        assert_eq!(node.router.services["s"].procs().len(), 2);
        assert_eq!(node.segments().await.len(), 1);
        assert!(node.router.infer("s", input()).await.is_ok());
        // A service the node does not serve, and a place already taken, are refused.
        let mut other = segment(1, 0, 4, 1);
        other.service = "t".into();
        assert!(node.start_segment(other, vec![]).await.unwrap_err().to_string().contains("not served by this node"));
        assert!(node.start_segment(segment(0, 0, 4, 1), vec![]).await.unwrap_err().to_string().contains("already runs a segment"));
        assert!(node.stop_segment(5, 0).await.unwrap_err().to_string().contains("no segment runs on GPU 5"));
        node.stop_everything().await;
    }
}
