//! `parva deploy --follow`: the controller on a serving node.
//!
//! The same [`Driver`] as the day simulation (`parva simulate --rates`): every `--window` it reads
//! each service's arrivals at the router (requests that reached the service, admitted or not)
//! over the last window, and every second the arrivals of the last [`ALARM_S`] seconds for the
//! alarm; it decides ([`crate::controller`]), plans the transition inside the node's GPUs (the
//! best plan that fits when the node is too small; make before break checked by an independent
//! replay) and applies its steps with rollback ([`crate::node::Executor`]) to [`LiveNodeOps`]:
//!
//! - create: the new segment joins the node's map and the deploy executor (diff, checkpoint,
//!   rollback) creates its MIG instance and MPS daemon; start: its workers start, and the router
//!   sends it requests once all are ready;
//! - drain: the router stops sending to the segment, which finishes what it holds, then its
//!   workers stop; destroy: its MPS daemon stops and its MIG instance is destroyed;
//! - rebatch: new workers at the new batch size, swapped in, the old ones drained.
//!
//! Every decision is logged at default verbosity with its reason (`scale-up: applied ...`), a
//! refusal as a warning with the back-off before the next try; `parva_follow_transitions_total`,
//! `parva_follow_failures_total`, `parva_planned_rate`, `parva_follow_forecast`,
//! `parva_follow_shortfall` (what the node is too small for) and
//! `parva_follow_churn_budget_used` (from 1, scale-downs wait) are exported.
//!
//! With `--jobs`, best-effort jobs hold the GPCs the serving map leaves free of the node's GPUs
//! (placed by `parva_planner::jobs::place_jobs`; running instances stay where they still fit).
//! Before a transition's steps, every job instance a new segment needs is reclaimed first: the job
//! gets SIGTERM, at most `--job-grace` to checkpoint and exit (then SIGKILL), and its MIG instance
//! is destroyed; after the transition (applied or rolled back) the jobs are placed again on what
//! is free and restarted from their checkpoints. A job never delays a transition by more than its
//! grace period, and a job that fails to start is logged and left out (it never fails a change).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use parva_core::deploy::JobSlot;
use parva_core::jobs::Job;
use parva_core::mig::GpuType;
use parva_core::slo::{Margin, Service};
use parva_core::{DeploymentMap, ProfileSet, Segment};
use parva_gpu::mig::MigControl;
use parva_gpu::mps::MpsControl;
use parva_gpu::plan::DeployOptions;
use parva_planner::PlanOptions;
use parva_planner::replan::Costs;
use parva_runner::serve::LiveNode;

use crate::ALARM_S;
use crate::controller::{Controller, Decision, Observation, RECENT_S};
use crate::driver::{Driver, Level, Outcome, PlanContext, Prepared, Refusal};
use crate::node::{Made, Node, NodeError};
use crate::settings::Settings;

/// Opens the node's MIG and MPS controllers (NVML and real daemons, or the fakes) for one change.
pub type OpenNode = Arc<dyn Fn() -> anyhow::Result<(Box<dyn MigControl>, Box<dyn MpsControl>)> + Send + Sync>;

/// What the controller needs besides the live node.
pub struct Follow {
    pub settings: Settings,
    /// The services with the rates the node was deployed for.
    pub services: Vec<Service>,
    pub profiles: ProfileSet,
    pub gpu: &'static GpuType,
    /// GPUs of this node (the map's GPUs 0..this).
    pub node_gpus: u32,
    pub costs: Costs,
    pub max_procs: u32,
    pub deploy: DeployOptions,
    pub run_dir: std::path::PathBuf,
    pub open: OpenNode,
    /// Best-effort jobs for the node's idle GPCs (`--jobs`).
    pub jobs: Option<FollowJobs>,
}

/// The best-effort side of the controller.
pub struct FollowJobs {
    pub jobs: Vec<Job>,
    /// How long a reclaimed job has to checkpoint and exit before it is killed.
    pub grace: Duration,
    pub procs: std::sync::Mutex<parva_runner::jobs::JobProcs>,
}

impl FollowJobs {
    fn running(&self) -> Vec<JobSlot> {
        self.procs.lock().map(|p| p.running()).unwrap_or_default()
    }
}

/// The best-effort jobs' record in the run directory: instances running, samples by job, reclaims.
pub const JOBS_RECORD: &str = "jobs.json";

/// The node's GPUs (map numbering) no segment uses.
pub fn free_gpus(node_gpus: u32, segments: &[Segment]) -> Vec<u32> {
    (0..node_gpus).filter(|g| !segments.iter().any(|s| s.gpu == *g)).collect()
}

/// The plan function of a live node: [`Driver::prepare`] off the async threads.
pub fn prepare_blocking(d: &Driver<'_>, current: &DeploymentMap, decision: &Decision, demand: &[f64]) -> Result<Prepared, Refusal> {
    tokio::task::block_in_place(|| d.prepare(current, decision, demand))
}

/// Run the controller until the server stops (the task is aborted then).
pub async fn run(f: Arc<Follow>, live: Arc<LiveNode>) {
    let names: Vec<String> = f.services.iter().map(|s| s.name.clone()).collect();
    // The map was planned for the listed rates: the controller starts there.
    let planned: Vec<f64> = f.services.iter().map(|s| s.rate.max(f.settings.min_rate)).collect();
    let options = PlanOptions { gpus_per_node: f.node_gpus, max_procs: f.max_procs, margin: Margin::DEFAULT, ..PlanOptions::default() };
    let ctx = PlanContext {
        gpu: f.gpu,
        profiles: &f.profiles,
        services: &f.services,
        options,
        costs: f.costs,
        node: f.deploy.node,
        node_gpus: f.node_gpus,
    };
    let mut node = LiveNodeOps::new(&f, &live).await;
    let mut driver = Driver::new(Controller::new(f.settings, names.clone(), planned, 0.0), ctx, &node.serving());
    if f.jobs.is_some() {
        node.after().await;
    }
    publish(&f, &live, &node, &driver.controller, None, 0.0);
    let arrivals = {
        let live = live.clone();
        let names = names.clone();
        move || {
            let a = live.arrivals();
            names.iter().map(|n| a.get(n).copied().unwrap_or(0)).collect::<Vec<u64>>()
        }
    };
    let (f2, live2) = (f.clone(), live.clone());
    let mut on = move |now: f64, outcome: &Outcome, node: &LiveNodeOps<'_>, ctl: &Controller| {
        let m = &live2.router.metrics;
        match outcome {
            Outcome::Applied { .. } | Outcome::Stopped { .. } => m.follow_transitions.inc(),
            Outcome::Refused { .. } => m.follow_failures.inc(),
            _ => 0,
        };
        publish(&f2, &live2, node, ctl, outcome.shortfall(), now);
    };
    // The jobs' samples between windows.
    // Stopped with this task, also when it is aborted (the server stopping).
    let _ticker = f.jobs.is_some().then(|| {
        let (f, live) = (f.clone(), live.clone());
        AbortOnDrop(tokio::spawn(async move {
            let mut every = tokio::time::interval(JOBS_PUBLISH_EVERY);
            loop {
                every.tick().await;
                publish_jobs(&f, &live.router.metrics);
            }
        }))
    });
    follow_loop(&mut driver, &mut node, &arrivals, &prepare_blocking, &mut on, None).await;
}

/// A task that ends when its handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Log an outcome at its level (see [`Outcome::level`]).
fn log(outcome: &Outcome) {
    let Some(line) = outcome.log_line() else { return };
    match outcome.level() {
        Level::Debug => tracing::debug!("follow: {line}"),
        Level::Info => tracing::info!("follow: {line}"),
        Level::Warn => tracing::warn!("follow: {line}"),
    }
}

/// The plan function the loop calls.
pub use crate::driver::PlanFn;

/// The loop of a node: on tokio's clock (tests run it paused), every second it samples the
/// cumulative `arrivals` (one count per service), while a transition runs too; at each multiple
/// of the window it looks at the last window ([`Driver::tick`]), at the other seconds at the last
/// [`ALARM_S`] seconds ([`Driver::alarm`]). A look whose second passes while a transition runs is
/// skipped (as the day simulation skips it); meanwhile a scale-down stops between its steps once
/// a service's last [`ALARM_S`] seconds pass what the scale-down leaves it
/// ([`Outcome::Stopped`]). `on` sees every window's outcome (a kept one too) and every other that
/// is not [`Outcome::Kept`]; `until_s` ends the loop (tests).
pub async fn follow_loop<N: Node + Send>(
    driver: &mut Driver<'_>,
    node: &mut N,
    arrivals: &(dyn Fn() -> Vec<u64> + Sync),
    plan: &PlanFn,
    on: &mut (dyn FnMut(f64, &Outcome, &N, &Controller) + Send),
    until_s: Option<f64>,
) {
    let window = driver.controller.settings().window_s;
    let t0 = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval_at(t0 + Duration::from_secs(1), Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // (second, cumulative arrivals), the last window's worth.
    let mut samples: VecDeque<(f64, Vec<u64>)> = VecDeque::new();
    samples.push_back((0.0, arrivals()));
    let sample = |samples: &mut VecDeque<(f64, Vec<u64>)>, at: tokio::time::Instant| -> f64 {
        let now = (at - t0).as_secs_f64().round();
        samples.push_back((now, arrivals()));
        while samples.len() > 2 && samples.get(1).is_some_and(|s| now - s.0 >= window) {
            samples.pop_front();
        }
        now
    };
    let mut next_window = window;
    loop {
        let now = sample(&mut samples, ticker.tick().await);
        if until_s.is_some_and(|u| now > u) {
            return;
        }
        let since = |back: f64| counts_since(&samples, now, back);
        let is_window = now >= next_window - 1e-9;
        if is_window {
            while next_window <= now + 1e-9 {
                next_window += window;
            }
        }
        let Some(seen) = since(if is_window { window } else { ALARM_S }) else { continue };
        let recent = if is_window { Vec::new() } else { since(RECENT_S).unwrap_or_default() };
        let outcome = {
            // What the alarm's short period saw at the last second sampled, for a scale-down's
            // stop (as the day simulation asks its trace).
            let short_now: std::sync::Mutex<Option<Vec<Observation>>> = std::sync::Mutex::new(None);
            let min_requests = driver.controller.settings().min_requests;
            let mut stop = |_: Option<f64>, capacity: &[f64]| {
                let short = short_now.lock().ok().and_then(|g| g.clone()).unwrap_or_default();
                short.iter().zip(capacity).any(|(o, c)| o.past(*c, min_requests))
            };
            let look = async {
                if is_window {
                    driver.tick(now, &seen, node, plan, &mut stop).await
                } else {
                    driver.alarm(now, &seen, &recent, node, plan).await
                }
            };
            tokio::pin!(look);
            // Keep sampling while the look (and a transition) runs; the looks whose second
            // passes meanwhile are skipped.
            loop {
                tokio::select! {
                    biased;
                    outcome = &mut look => break outcome,
                    at = ticker.tick() => {
                        let t = sample(&mut samples, at);
                        if let Ok(mut g) = short_now.lock() {
                            *g = counts_since(&samples, t, ALARM_S);
                        }
                        while next_window <= t + 1e-9 {
                            next_window += window;
                        }
                    }
                }
            }
        };
        // A kept look between windows (every second) is nothing to report; a kept window still
        // goes to `on`, which refreshes the gauges (the forecast, the churn budget used).
        if matches!(outcome, Outcome::Kept) && !is_window {
            continue;
        }
        log(&outcome);
        on(now, &outcome, node, &driver.controller);
    }
}

/// What each service saw from the newest sample at least `back` seconds before `now` (the
/// samples' `(second, cumulative arrivals)`) to the last one.
fn counts_since(samples: &VecDeque<(f64, Vec<u64>)>, now: f64, back: f64) -> Option<Vec<Observation>> {
    let (_, counts) = samples.back()?;
    let (t, c) = samples.iter().rev().find(|(t, _)| now - t >= back - 1e-9)?;
    let dt = now - t;
    Some(counts.iter().zip(c).map(|(n, o)| Observation::of(n.saturating_sub(*o) as f64, dt)).collect())
}

/// Gauges at `now` (the controller's clock): the rate each service is planned for, its forecast
/// and shortfall, the churn budget used, the node's free GPUs, and the jobs' record.
fn publish(f: &Follow, live: &LiveNode, node: &LiveNodeOps<'_>, ctl: &Controller, shortfall: Option<&[f64]>, now: f64) {
    let m = &live.router.metrics;
    let label = parva_runner::metrics::Metrics::service;
    for (i, n) in ctl.names().iter().enumerate() {
        m.planned_rate.get_or_create(&label(n)).set(ctl.planned()[i]);
        if let Some(fc) = ctl.forecasts().get(i) {
            m.follow_forecast.get_or_create(&label(n)).set(fc.value);
        }
        if let Some(s) = shortfall.and_then(|s| s.get(i)) {
            m.follow_shortfall.get_or_create(&label(n)).set(*s);
        } else {
            let _ = m.follow_shortfall.get_or_create(&label(n));
        }
    }
    m.follow_budget_used.set(ctl.budget_used(now));
    m.free_gpus.set(i64::from(free_gpus(f.node_gpus, &node.cur).len() as u32));
    publish_jobs(f, m);
}

/// How often the jobs' samples are published between the controller's windows.
pub const JOBS_PUBLISH_EVERY: Duration = Duration::from_secs(5);

/// The jobs' gauges and record (`jobs.json`): instances, samples as the jobs report them, reclaims.
/// Called after every controller outcome and every [`JOBS_PUBLISH_EVERY`] (issue 38: samples read
/// 0 for a whole window while the jobs' logs counted tens of thousands).
fn publish_jobs(f: &Follow, m: &parva_runner::metrics::Metrics) {
    let Some(j) = &f.jobs else { return };
    let Ok(p) = j.procs.lock() else { return };
    let (running, samples) = (p.running(), p.samples());
    m.job_instances.set(running.len() as i64);
    m.job_samples.set(samples.values().sum::<u64>().min(i64::MAX as u64) as i64);
    // The best-effort part of the deploy record, beside deploy.json.
    let record = serde_json::json!({
        "instances": running,
        "samples": samples,
        "reclaims": m.job_reclaims.get(),
        "gpcs": running.iter().map(|s| u32::from(s.instance_size)).sum::<u32>(),
    });
    let text = serde_json::to_string_pretty(&record).unwrap_or_default() + "\n";
    if let Err(e) = parva_core::files::write_atomic(&f.run_dir.join(JOBS_RECORD), text.as_bytes()) {
        tracing::warn!("follow: writing the jobs record: {e}");
    }
}

/// The live node as the controller's [`Node`]: MIG and MPS through the deploy executor, workers
/// and routes through the router's [`LiveNode`], best-effort jobs around transitions.
pub struct LiveNodeOps<'a> {
    f: &'a Follow,
    live: &'a LiveNode,
    /// Instances that exist (serving or drained).
    cur: Vec<Segment>,
    /// Segments whose workers serve.
    serving: Vec<Segment>,
    /// Each instance's workers' environment (its devices).
    env: BTreeMap<(u32, u8), Vec<(String, String)>>,
    /// Best-effort instances that exist (and run).
    jobs: Vec<JobSlot>,
}

impl<'a> LiveNodeOps<'a> {
    pub async fn new(f: &'a Follow, live: &'a LiveNode) -> LiveNodeOps<'a> {
        let serving = live.segments().await;
        let jobs = f.jobs.as_ref().map(FollowJobs::running).unwrap_or_default();
        LiveNodeOps { f, live, cur: serving.clone(), serving, env: BTreeMap::new(), jobs }
    }

    fn with_node<R>(&self, op: impl FnOnce(&mut parva_gpu::exec::Node<'_>) -> Result<R, parva_gpu::error::DeployError>) -> anyhow::Result<R> {
        tokio::task::block_in_place(|| {
            let (mut mig, mut mps) = (self.f.open)()?;
            let mut node = parva_gpu::exec::Node { mig: mig.as_mut(), mps: mps.as_mut(), run_dir: self.f.run_dir.clone() };
            Ok(op(&mut node)?)
        })
    }

    fn nvml_index(&self, gpu: u32) -> u32 {
        self.f.deploy.gpu_index_map.get(&gpu).copied().unwrap_or(gpu)
    }

    /// The workers' environment of `seg`'s instance (created by [`Node::create_instance`]).
    fn env_of(&self, seg: &Segment) -> Result<Vec<(String, String)>, NodeError> {
        self.env
            .get(&(seg.gpu, seg.placement))
            .cloned()
            .ok_or_else(|| NodeError(format!("no instance created on GPU {} {{{}}} to start workers on", seg.gpu, seg.placement)))
    }

    /// `seg`'s workers serve: it joins what serves, and its instance's row takes its batch size.
    fn started(&mut self, seg: &Segment) {
        self.serving.push(seg.clone());
        if let Some(c) = self.cur.iter_mut().find(|s| (s.gpu, s.placement) == (seg.gpu, seg.placement)) {
            *c = seg.clone();
        }
    }

    /// The node's map now: its instances and best-effort instances.
    fn map(&self) -> DeploymentMap {
        DeploymentMap { segments: self.cur.clone(), jobs: self.jobs.clone() }
    }

    /// Stop a job instance (SIGTERM, its grace, SIGKILL) and destroy its MIG instance.
    fn stop_job(&mut self, j: &JobSlot, reclaimed: bool) -> anyhow::Result<()> {
        let Some(fj) = self.f.jobs.as_ref() else { return Ok(()) };
        let stopped = tokio::task::block_in_place(|| fj.procs.lock().ok().and_then(|mut p| p.stop(j.gpu, j.placement, fj.grace)));
        self.jobs.retain(|x| (x.gpu, x.placement) != (j.gpu, j.placement));
        if !self.f.deploy.no_mig {
            let idx = self.nvml_index(j.gpu);
            self.with_node(|n| n.remove_instance(idx, j.placement))
                .with_context(|| format!("destroying the instance of best-effort job {} on GPU {} {{{}}}", j.job, j.gpu, j.placement))?;
        }
        if reclaimed {
            self.live.router.metrics.job_reclaims.inc();
            tracing::info!(
                "follow: reclaimed GPU {} {{{}}} ({}g) from best-effort job {} ({})",
                j.gpu,
                j.placement,
                j.instance_size,
                j.job,
                match stopped {
                    Some(s) if s.graceful => format!("checkpointed and stopped in {:.2} s", s.seconds),
                    Some(_) => "killed after its grace".into(),
                    None => "not running".into(),
                }
            );
        }
        Ok(())
    }

    /// Place the jobs on what the serving map leaves free (running ones stay where they fit),
    /// stop those that lost their place and start the new ones. Best effort: a failure is logged.
    fn place_jobs(&mut self) {
        let Some(fj) = self.f.jobs.as_ref() else { return };
        let cluster = parva_planner::jobs::Cluster { gpu: self.f.gpu, gpus: self.f.node_gpus, gpus_per_node: self.f.node_gpus.max(1), first_node: self.f.deploy.node };
        let serving = DeploymentMap { segments: self.cur.clone(), jobs: Vec::new() };
        let want = parva_planner::jobs::place_jobs(&cluster, &self.f.profiles, &fj.jobs, &[&serving], &self.jobs);
        let key = |j: &JobSlot| (j.gpu, j.placement, j.instance_size, j.job.clone());
        for j in self.jobs.clone().iter().filter(|j| !want.iter().any(|w| key(w) == key(j))) {
            if let Err(e) = self.stop_job(j, false) {
                tracing::warn!("follow: stopping best-effort job {}: {e:#}", j.job);
            }
        }
        let new: Vec<JobSlot> = want.iter().filter(|w| !self.jobs.iter().any(|j| key(j) == key(w))).cloned().collect();
        for j in &new {
            self.jobs.push(j.clone());
            let started = self.realise(j.gpu, j.placement).and_then(|env| {
                tokio::task::block_in_place(|| fj.procs.lock().map_err(|_| anyhow::anyhow!("job table poisoned"))?.start(j.clone(), &env).map_err(anyhow::Error::from))
            });
            if let Err(e) = started {
                tracing::warn!("follow: best-effort job {} on GPU {} {{{}}} did not start: {e:#}", j.job, j.gpu, j.placement);
                self.jobs.retain(|x| key(x) != key(j));
            }
        }
    }

    /// Deploy the current map (creating what it has and the node lacks); the workers'
    /// environment of the instance at (`gpu`, `placement`).
    fn realise(&self, gpu: u32, placement: u8) -> anyhow::Result<Vec<(String, String)>> {
        let map = self.map();
        let out = self.with_node(|n| n.deploy(&map, &self.f.deploy, false))?;
        out.segments
            .into_iter()
            .find(|s| s.plan_gpu == gpu && s.start == placement)
            .map(|s| s.env)
            .with_context(|| format!("the deploy has no segment on GPU {gpu} {{{placement}}}"))
    }
}

fn node_error(e: impl std::fmt::Display) -> NodeError {
    NodeError(format!("{e:#}"))
}

impl Node for LiveNodeOps<'_> {
    fn serving(&self) -> Vec<Segment> {
        self.serving.clone()
    }

    async fn create_instance(&mut self, seg: &Segment) -> Result<(), NodeError> {
        if self.cur.iter().any(|s| (s.gpu, s.placement) == (seg.gpu, seg.placement)) {
            return Err(NodeError(format!("GPU {} {{{}}} holds an instance already", seg.gpu, seg.placement)));
        }
        self.cur.push(seg.clone());
        match self.realise(seg.gpu, seg.placement) {
            Ok(env) => {
                self.env.insert((seg.gpu, seg.placement), env);
                Ok(())
            }
            Err(e) => {
                self.cur.pop();
                Err(node_error(e))
            }
        }
    }

    async fn start(&mut self, seg: &Segment) -> Result<(), NodeError> {
        let env = self.env_of(seg)?;
        self.live.start_segment(seg.clone(), env).await.map_err(node_error)?;
        self.started(seg);
        Ok(())
    }

    async fn stop(&mut self, gpu: u32, placement: u8) -> Result<Segment, NodeError> {
        let (seg, env) = self.live.stop_segment(gpu, placement).await.map_err(node_error)?;
        self.env.insert((gpu, placement), env);
        self.serving.retain(|s| (s.gpu, s.placement) != (gpu, placement));
        Ok(seg)
    }

    async fn destroy_instance(&mut self, gpu: u32, placement: u8) -> Result<(), NodeError> {
        let i = self
            .cur
            .iter()
            .position(|s| (s.gpu, s.placement) == (gpu, placement))
            .ok_or_else(|| NodeError(format!("no instance on GPU {gpu} {{{placement}}}")))?;
        let seg = self.cur.remove(i);
        if !self.f.deploy.no_mig {
            let idx = self.nvml_index(gpu);
            if let Err(e) = self.with_node(|n| n.remove_instance(idx, placement)) {
                self.cur.insert(i, seg);
                return Err(node_error(e));
            }
        }
        self.env.remove(&(gpu, placement));
        Ok(())
    }

    async fn rebatch(&mut self, gpu: u32, placement: u8, batch: u32) -> Result<(), NodeError> {
        self.live.rebatch(gpu, placement, batch).await.map_err(node_error)?;
        for s in self.cur.iter_mut().chain(self.serving.iter_mut()).filter(|s| (s.gpu, s.placement) == (gpu, placement)) {
            s.batch_size = batch;
        }
        Ok(())
    }

    /// A wave: each instance made in turn (the deploy executor, as [`Node::create_instance`]) and
    /// its workers started at once, loading while the next instance is made; each segment is
    /// routed as soon as all its workers are ready. After a failure to make an instance or start
    /// its workers the rest are not tried; those under way are still awaited.
    async fn create_all(&mut self, segs: &[Segment]) -> Vec<Made> {
        let mut made = Vec::with_capacity(segs.len());
        let mut starting = Vec::with_capacity(segs.len());
        for (i, seg) in segs.iter().enumerate() {
            if made.last().is_some_and(|m| *m != Made::Ready) {
                made.push(Made::NotTried);
                continue;
            }
            if let Err(e) = self.create_instance(seg).await {
                made.push(Made::Failed(e));
                continue;
            }
            let spawned = match self.env_of(seg) {
                Ok(env) => self.live.spawn_segment(seg.clone(), env).await.map_err(node_error),
                Err(e) => Err(e),
            };
            match spawned {
                Ok(s) => {
                    starting.push((i, s));
                    made.push(Made::Ready);
                }
                Err(e) => made.push(Made::Created(e)),
            }
        }
        let (at, starting): (Vec<usize>, Vec<_>) = starting.into_iter().unzip();
        for (i, routed) in at.into_iter().zip(self.live.route_when_ready(starting).await) {
            let seg = &segs[i];
            match routed {
                Ok(()) => self.started(seg),
                Err(e) => made[i] = Made::Created(node_error(e)),
            }
        }
        made
    }

    async fn before(&mut self, created: &[Segment]) -> Result<(), NodeError> {
        let reclaim: Vec<JobSlot> =
            self.jobs.iter().filter(|j| created.iter().any(|s| parva_planner::jobs::job_overlaps(self.f.gpu, j, s))).cloned().collect();
        for j in &reclaim {
            self.stop_job(j, true).map_err(|e| NodeError(format!("reclaiming GPCs from a best-effort job: {e:#}")))?;
        }
        Ok(())
    }

    async fn after(&mut self) {
        self.place_jobs();
        // The deploy record names the map that runs now (the transition is done either way).
        let cur = self.map();
        if let Err(e) = self.with_node(|n| n.deploy(&cur, &self.f.deploy, false).map(|_| ())) {
            tracing::warn!("follow: the deploy record was not rewritten: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_gpus_are_the_nodes_gpus_without_a_segment() {
        let csv = "node,gpu,service,model,placement,instance_size,batch_size,num_proc\n0,0,a,m,0,1,4,1\n0,2,b,m,0,1,4,1\n";
        let (map, _) = DeploymentMap::read_from(csv.as_bytes(), std::path::Path::new("m.csv")).unwrap();
        assert_eq!(free_gpus(4, &map.segments), vec![1, 3]);
        assert_eq!(free_gpus(2, &map.segments), vec![1]);
        assert!(free_gpus(0, &map.segments).is_empty());
    }
}
