//! `parva deploy --follow`: the live controller of a serving node.
//!
//! Every `--window` it reads each service's arrivals from the router (requests that reached the
//! service, admitted or not), feeds the rates to the same [`Controller`] the day simulation uses
//! (EWMA forecast plus headroom; up at once, down past the hysteresis band and the minimum
//! interval), and when that asks for new rates it re-plans with `replan`'s minimal-change
//! objective inside the node's GPUs and applies the transition step by step:
//!
//! - `create`: the new segment joins the node's map and the deploy executor (diff, checkpoint,
//!   rollback) creates its MIG instance and MPS daemon; its workers start, and the router sends
//!   it requests once all are ready;
//! - `drain`: the router stops sending to the segment, which finishes what it holds, then its
//!   workers stop;
//! - `destroy`: its MPS daemon stops and its MIG instance is destroyed;
//! - `rebatch`: new workers at the new batch size, swapped in, the old ones drained.
//!
//! With `--jobs`, best-effort jobs hold the GPCs the serving map leaves free of the node's GPUs
//! (placed by `parva_planner::jobs::place_jobs`; running instances stay where they still fit).
//! Before a transition's steps, every job instance a new segment needs is reclaimed first: the job
//! gets SIGTERM, at most `--job-grace` to checkpoint and exit (then SIGKILL), and its MIG instance
//! is destroyed; after the transition (applied or rolled back) the jobs are placed again on what
//! is free and restarted from their checkpoints. A job never delays a transition by more than its
//! grace period, and a job that fails to start is logged and left out (it never fails a change).
//!
//! A step that fails undoes the steps before it in reverse order (instances re-created, workers
//! restarted, batch sizes put back), so the node serves the map it served before; the failure is
//! logged and counted (`parva_follow_failures_total`) and the next window tries again. A plan that
//! would need more GPUs than the node has is not applied (logged; the node keeps its map).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use parva_core::mig::GpuType;
use parva_core::slo::{Margin, Service};
use parva_core::deploy::JobSlot;
use parva_core::jobs::Job;
use parva_core::{DeploymentMap, ProfileSet, Segment};
use parva_gpu::exec::Node;
use parva_gpu::mig::MigControl;
use parva_gpu::mps::MpsControl;
use parva_gpu::plan::DeployOptions;
use parva_planner::day::{Controller, FollowSettings};
use parva_planner::replan::{self, Costs};
use parva_planner::{PlanInput, PlanOptions};
use parva_runner::serve::LiveNode;

/// Opens the node's MIG and MPS controllers (NVML and real daemons, or the fakes) for one change.
pub type OpenNode = Arc<dyn Fn() -> anyhow::Result<(Box<dyn MigControl>, Box<dyn MpsControl>)> + Send + Sync>;

/// What the controller needs besides the live node.
pub struct Follow {
    pub settings: FollowSettings,
    /// The services with the rates the node was deployed for.
    pub services: Vec<Service>,
    pub profiles: ProfileSet,
    pub gpu: &'static GpuType,
    /// GPUs of this node (the map's GPUs 0..this).
    pub node_gpus: u32,
    pub costs: Costs,
    pub max_procs: u32,
    /// Each service is planned for at least this many requests/s, so that a quiet service keeps
    /// a ready process (a plan for rate 0 would give it none).
    pub min_rate: f64,
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

/// Run the controller until the server stops (the task is aborted then).
pub async fn run(f: Arc<Follow>, live: Arc<LiveNode>) {
    let names: Vec<String> = f.services.iter().map(|s| s.name.clone()).collect();
    let rates: Vec<f64> = f.services.iter().map(|s| s.rate).collect();
    let mut ctl = Controller::new(f.settings, &rates);
    if f.jobs.is_some() {
        let running = live.segments().await;
        let mut exec = Executor { f: &f, live: &live, cur: running, jobs: Vec::new(), undo: Vec::new() };
        exec.place_jobs().await;
    }
    publish(&f, &live, &names, &rates).await;
    let t0 = Instant::now();
    let mut last = live.arrivals();
    let mut last_t = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs_f64(f.settings.window_s)).await;
        let now = live.arrivals();
        let dt = last_t.elapsed().as_secs_f64().max(1e-3);
        let seen: Vec<f64> =
            names.iter().map(|n| now.get(n).copied().unwrap_or(0).saturating_sub(last.get(n).copied().unwrap_or(0)) as f64 / dt).collect();
        last = now;
        last_t = Instant::now();
        let now_s = t0.elapsed().as_secs_f64();
        let Some(target) = ctl.observe(now_s, &seen) else {
            publish(&f, &live, &names, ctl.planned()).await;
            continue;
        };
        let shown: Vec<String> = names.iter().zip(&seen).zip(&target).map(|((n, s), t)| format!("{n} {s:.1}->{t:.1}/s")).collect();
        tracing::debug!("follow: measured rates leave the planned band; re-planning for {}", shown.join(", "));
        let started = Instant::now();
        match transition_to(&f, &live, &target).await {
            Ok(changed) => {
                ctl.applied(now_s, target.clone(), changed);
                publish(&f, &live, &names, &target).await;
                if changed {
                    live.router.metrics.follow_transitions.inc();
                    tracing::info!("follow: transition applied in {:.1} s", started.elapsed().as_secs_f64());
                }
            }
            Err(e) => {
                live.router.metrics.follow_failures.inc();
                tracing::warn!("follow: {e:#}; the node keeps serving its map");
            }
        }
        // The rates measured during a transition are not held against the next window.
        last = live.arrivals();
        last_t = Instant::now();
    }
}

/// Gauges: the rate each service is planned for, and the node's free GPUs.
async fn publish(f: &Follow, live: &LiveNode, names: &[String], planned: &[f64]) {
    let m = &live.router.metrics;
    for (n, r) in names.iter().zip(planned) {
        m.planned_rate.get_or_create(&parva_runner::metrics::Metrics::service(n)).set(*r);
    }
    m.free_gpus.set(i64::from(free_gpus(f.node_gpus, &live.segments().await).len() as u32));
    if let Some(j) = &f.jobs {
        if let Ok(p) = j.procs.lock() {
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
    }
}

/// The best-effort jobs' record in the run directory: instances running, samples by job, reclaims.
pub const JOBS_RECORD: &str = "jobs.json";

/// The node's GPUs (map numbering) no segment uses.
pub fn free_gpus(node_gpus: u32, segments: &[Segment]) -> Vec<u32> {
    (0..node_gpus).filter(|g| !segments.iter().any(|s| s.gpu == *g)).collect()
}

/// Re-plan for `target` and apply the transition. `Ok(false)`: nothing to change.
async fn transition_to(f: &Follow, live: &LiveNode, target: &[f64]) -> anyhow::Result<bool> {
    let running = live.segments().await;
    let node = f.deploy.node;
    let current = DeploymentMap { segments: running.clone(), jobs: Vec::new() };
    let services: Vec<Service> = f.services.iter().zip(target).map(|(s, r)| Service { rate: r.max(f.min_rate), ..s.clone() }).collect();
    let options = PlanOptions { gpus_per_node: f.node_gpus, max_procs: f.max_procs, margin: Margin::DEFAULT, ..PlanOptions::default() };
    let input = PlanInput { gpu: f.gpu, profiles: &f.profiles, services: &services, options: &options };
    let r = tokio::task::block_in_place(|| replan::replan(input, &current, 0)).map_err(|e| anyhow::anyhow!("re-planning: {e}"))?;
    if let Some(bad) = r.plan.infeasible.first() {
        anyhow::bail!("re-planning: service {} cannot be planned: {}", bad.service, bad.reason);
    }
    let new_map = r.to_map();
    if new_map.segments.iter().any(|s| s.node != node) {
        anyhow::bail!("the new rates need {} GPUs and node {node} has {}: not applied", r.plan.gpus.len(), f.node_gpus);
    }
    let rebatched = r.kept.iter().any(|k| k.old_batch != k.new_batch);
    if r.created.is_empty() && r.destroyed.is_empty() && !rebatched {
        return Ok(false);
    }
    let slo_s: BTreeMap<&str, f64> = f.services.iter().map(|s| (s.name.as_str(), s.slo_ms / 1000.0)).collect();
    let t = replan::transition(&r, f.gpu, f.node_gpus, f.costs, &|n| slo_s.get(n).copied().unwrap_or(1.0));
    let planned: Vec<String> = services.iter().map(|s| format!("{} {:.1}/s", s.name, s.rate)).collect();
    tracing::info!(
        "follow: re-planned for {}: {} -> {} GPUs; kept {}, destroyed {}, created {}; {} steps",
        planned.join(", "), r.old_gpus, r.plan.gpus.len(), r.kept.len(), r.destroyed.len(), r.created.len(), t.steps.len()
    );
    let jobs = f.jobs.as_ref().map(FollowJobs::running).unwrap_or_default();
    let mut exec = Executor { f, live, cur: running, jobs, undo: Vec::new() };
    // Reclaim first: the job instances a new segment needs.
    let created: Vec<Segment> = new_map
        .segments
        .iter()
        .filter(|s| !exec.cur.iter().any(|c| (c.gpu, c.placement, c.instance_size) == (s.gpu, s.placement, s.instance_size)))
        .cloned()
        .collect();
    let reclaim: Vec<JobSlot> = exec.jobs.iter().filter(|j| created.iter().any(|s| parva_planner::jobs::job_overlaps(f.gpu, j, s))).cloned().collect();
    for j in &reclaim {
        if let Err(e) = exec.stop_job(j, true).await {
            // Nothing of the serving map changed yet: the jobs go back on what is free.
            exec.place_jobs().await;
            return Err(e.context("reclaiming GPCs from a best-effort job before the transition (nothing changed)"));
        }
    }
    for (i, step) in t.steps.iter().enumerate() {
        let res = exec.apply(step, &new_map).await;
        if let Err(e) = res {
            let what = format!("step {} of {} ({} {} on GPU {} {{{}}})", i + 1, t.steps.len(), step.action, step.service, step.gpu, step.placement);
            let rolled = exec.roll_back().await;
            exec.place_jobs().await;
            return Err(match rolled {
                Ok(()) => e.context(format!("{what} failed; the steps before it were undone")),
                Err(r) => e.context(format!("{what} failed, and undoing the steps before it ALSO failed: {r:#}")),
            });
        }
    }
    exec.place_jobs().await;
    // The deploy record names the map that runs now (the transition is done either way).
    let cur = exec.map();
    if let Err(e) = exec.with_node(|n| n.deploy(&cur, &f.deploy, false).map(|_| ())) {
        tracing::warn!("follow: the transition is applied but the deploy record was not rewritten: {e:#}");
    }
    Ok(true)
}

/// What a completed step changed, to undo it.
enum Undo {
    Created { gpu: u32, placement: u8 },
    Stopped { seg: Segment, env: Vec<(String, String)> },
    Destroyed { seg: Segment },
    Rebatched { gpu: u32, placement: u8, old: u32 },
}

struct Executor<'a> {
    f: &'a Follow,
    live: &'a LiveNode,
    /// The node's map as the steps so far left it (instances that exist).
    cur: Vec<Segment>,
    /// Best-effort instances that exist (and run).
    jobs: Vec<JobSlot>,
    undo: Vec<Undo>,
}


impl Executor<'_> {
    fn with_node<R>(&self, op: impl FnOnce(&mut Node<'_>) -> Result<R, parva_gpu::error::DeployError>) -> anyhow::Result<R> {
        tokio::task::block_in_place(|| {
            let (mut mig, mut mps) = (self.f.open)()?;
            let mut node = Node { mig: mig.as_mut(), mps: mps.as_mut(), run_dir: self.f.run_dir.clone() };
            Ok(op(&mut node)?)
        })
    }

    fn nvml_index(&self, gpu: u32) -> u32 {
        self.f.deploy.gpu_index_map.get(&gpu).copied().unwrap_or(gpu)
    }

    /// The node's map now: its segments and best-effort instances.
    fn map(&self) -> DeploymentMap {
        DeploymentMap { segments: self.cur.clone(), jobs: self.jobs.clone() }
    }

    /// Stop a job instance (SIGTERM, its grace, SIGKILL) and destroy its MIG instance.
    async fn stop_job(&mut self, j: &JobSlot, reclaimed: bool) -> anyhow::Result<()> {
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
                j.gpu, j.placement, j.instance_size, j.job,
                match stopped { Some(s) if s.graceful => format!("checkpointed and stopped in {:.2} s", s.seconds), Some(_) => "killed after its grace".into(), None => "not running".into() }
            );
        }
        Ok(())
    }

    /// Place the jobs on what the serving map leaves free (running ones stay where they fit),
    /// stop those that lost their place and start the new ones. Best effort: a failure is logged.
    async fn place_jobs(&mut self) {
        let Some(fj) = self.f.jobs.as_ref() else { return };
        let cluster = parva_planner::jobs::Cluster { gpu: self.f.gpu, gpus: self.f.node_gpus, gpus_per_node: self.f.node_gpus.max(1), first_node: self.f.deploy.node };
        let serving = DeploymentMap { segments: self.cur.clone(), jobs: Vec::new() };
        let want = parva_planner::jobs::place_jobs(&cluster, &self.f.profiles, &fj.jobs, &[&serving], &self.jobs);
        let key = |j: &JobSlot| (j.gpu, j.placement, j.instance_size, j.job.clone());
        for j in self.jobs.clone().iter().filter(|j| !want.iter().any(|w| key(w) == key(j))) {
            if let Err(e) = self.stop_job(j, false).await {
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
    /// environment of the segment at (`gpu`, `placement`).
    fn realise(&self, gpu: u32, placement: u8) -> anyhow::Result<Vec<(String, String)>> {
        let map = self.map();
        let out = self.with_node(|n| n.deploy(&map, &self.f.deploy, false))?;
        out.segments
            .into_iter()
            .find(|s| s.plan_gpu == gpu && s.start == placement)
            .map(|s| s.env)
            .with_context(|| format!("the deploy has no segment on GPU {gpu} {{{placement}}}"))
    }

    fn remove(&mut self, gpu: u32, placement: u8) -> anyhow::Result<()> {
        self.cur.retain(|s| (s.gpu, s.placement) != (gpu, placement));
        if !self.f.deploy.no_mig {
            let idx = self.nvml_index(gpu);
            self.with_node(|n| n.remove_instance(idx, placement))?;
        }
        Ok(())
    }

    async fn apply(&mut self, step: &replan::Step, new_map: &DeploymentMap) -> anyhow::Result<()> {
        let (gpu, placement) = (step.gpu, step.placement);
        match step.action {
            "create" => {
                let seg = new_map
                    .segments
                    .iter()
                    .find(|s| (s.gpu, s.placement) == (gpu, placement))
                    .cloned()
                    .with_context(|| format!("the new map has no segment on GPU {gpu} {{{placement}}}"))?;
                self.cur.push(seg.clone());
                let env = match self.realise(gpu, placement) {
                    Ok(env) => env,
                    Err(e) => {
                        self.cur.pop();
                        return Err(e);
                    }
                };
                if let Err(e) = self.live.start_segment(seg, env).await {
                    let _ = self.remove(gpu, placement);
                    return Err(e.into());
                }
                self.undo.push(Undo::Created { gpu, placement });
            }
            "drain" => {
                let (seg, env) = self.live.stop_segment(gpu, placement).await?;
                self.undo.push(Undo::Stopped { seg, env });
            }
            "destroy" => {
                if self.live.segments().await.iter().any(|s| (s.gpu, s.placement) == (gpu, placement)) {
                    let (seg, env) = self.live.stop_segment(gpu, placement).await?;
                    self.undo.push(Undo::Stopped { seg, env });
                }
                let seg = self.cur.iter().find(|s| (s.gpu, s.placement) == (gpu, placement)).cloned();
                self.remove(gpu, placement)?;
                if let Some(seg) = seg {
                    self.undo.push(Undo::Destroyed { seg });
                }
            }
            "rebatch" => {
                let old = self.cur.iter().find(|s| (s.gpu, s.placement) == (gpu, placement)).map(|s| s.batch_size);
                let old = old.with_context(|| format!("no segment on GPU {gpu} {{{placement}}} to rebatch"))?;
                self.live.rebatch(gpu, placement, step.batch).await?;
                if let Some(s) = self.cur.iter_mut().find(|s| (s.gpu, s.placement) == (gpu, placement)) {
                    s.batch_size = step.batch;
                }
                self.undo.push(Undo::Rebatched { gpu, placement, old });
            }
            other => anyhow::bail!("unknown transition step {other:?}"),
        }
        Ok(())
    }

    /// Undo the completed steps, newest first.
    async fn roll_back(&mut self) -> anyhow::Result<()> {
        // Instances re-created while undoing get new devices: their workers need the new env.
        let mut recreated: BTreeMap<(u32, u8), Vec<(String, String)>> = BTreeMap::new();
        while let Some(u) = self.undo.pop() {
            match u {
                Undo::Created { gpu, placement } => {
                    self.live.stop_segment(gpu, placement).await?;
                    self.remove(gpu, placement)?;
                }
                Undo::Destroyed { seg } => {
                    let key = (seg.gpu, seg.placement);
                    self.cur.push(seg);
                    let env = self.realise(key.0, key.1)?;
                    recreated.insert(key, env);
                }
                Undo::Stopped { seg, env } => {
                    let env = recreated.remove(&(seg.gpu, seg.placement)).unwrap_or(env);
                    self.live.start_segment(seg, env).await?;
                }
                Undo::Rebatched { gpu, placement, old } => {
                    self.live.rebatch(gpu, placement, old).await?;
                    if let Some(s) = self.cur.iter_mut().find(|s| (s.gpu, s.placement) == (gpu, placement)) {
                        s.batch_size = old;
                    }
                }
            }
        }
        Ok(())
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
