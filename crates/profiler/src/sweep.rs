//! The sweep: for each instance size make the instance, for each process count start the
//! workers once, for each batch warm up and measure until the estimate is stable, writing each
//! point's row as soon as it is decided. Resumes from the table, prunes (see [`crate::prune`]),
//! and always undoes what it made (instances, daemons, workers), on errors and Ctrl-C included.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use parva_runner::spawn::Spawner;
use tokio::sync::watch;

use crate::error::ProfileError;
use crate::grid::{Grid, Point};
use crate::partition::{Partitioner, Instance};
use crate::pool::{Pool, PoolError, WorkerInfo};
use crate::prune::{Observation, PruneRules, Pruner};
use crate::stats::{Estimate, MeasureSettings};
use crate::table::{Done, Measurement, Outcome, Table};
use crate::workers::{MemoryProbe, WorkerFactory};

/// Hears about the sweep's progress (the CLI's progress bar).
pub trait Observer {
    /// The sweep starts: `total` grid points, `resumed` of them already in the table.
    fn started(&mut self, total: usize, resumed: usize);
    /// `point` is about to be measured.
    fn measuring(&mut self, point: Point);
    /// `point` is decided in this run.
    fn decided(&mut self, point: Point, outcome: &Outcome);
    /// `point` was already in the table and is kept.
    fn resumed(&mut self, point: Point, done: Done);
}

/// An observer that ignores everything.
pub struct Quiet;

impl Observer for Quiet {
    fn started(&mut self, _: usize, _: usize) {}
    fn measuring(&mut self, _: Point) {}
    fn decided(&mut self, _: Point, _: &Outcome) {}
    fn resumed(&mut self, _: Point, _: Done) {}
}

/// Counts of points by what became of them in this run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub measured: usize,
    pub resumed: usize,
    pub oom: usize,
    pub failed: usize,
    pub pruned: usize,
}

/// What a sweep did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    pub counts: Counts,
    /// How each instance size was made.
    pub segments: Vec<Instance>,
    /// What the workers reported about themselves.
    pub worker: Option<WorkerInfo>,
    /// Stopped by Ctrl-C (or SIGTERM) before the end.
    pub interrupted: bool,
    /// Wall time of the sweep, seconds.
    pub seconds: f64,
}

/// Everything a sweep works with.
pub struct Sweep<'a> {
    pub grid: Grid,
    pub measure: MeasureSettings,
    pub rules: PruneRules,
    /// How long workers may take to start and load the model.
    pub ready_timeout: Duration,
    /// Worker sockets and logs.
    pub run_dir: PathBuf,
    pub table: &'a mut Table,
    pub partitioner: &'a mut dyn Partitioner,
    pub workers: &'a dyn WorkerFactory,
    pub spawner: &'a dyn Spawner,
    pub probe: &'a mut dyn MemoryProbe,
    pub observer: &'a mut dyn Observer,
    /// A job run beside every instance size (`--background`), started after the instance is
    /// made and stopped before it is undone.
    pub background: Option<&'a mut crate::background::Background>,
}

/// Stop request seen (Ctrl-C).
struct Cancelled;

/// Wait for `fut` unless a stop is asked for.
async fn or_cancel<T>(cancel: &mut watch::Receiver<bool>, fut: impl std::future::Future<Output = T>) -> Result<T, Cancelled> {
    if *cancel.borrow() {
        return Err(Cancelled);
    }
    tokio::select! {
        v = fut => Ok(v),
        _ = async { while cancel.changed().await.is_ok() { if *cancel.borrow() { return; } } std::future::pending::<()>().await } => Err(Cancelled),
    }
}

impl Sweep<'_> {
    /// Run the sweep; `cancel` turning true stops it (what is measured stays in the table).
    pub async fn run(mut self, mut cancel: watch::Receiver<bool>) -> Result<Summary, ProfileError> {
        let started = Instant::now();
        let mut summary = Summary::default();
        let mut pool: Option<Pool> = None;
        let result = self.points(&mut summary, &mut pool, &mut cancel).await;
        if let Some(p) = pool.take() {
            p.kill().await;
        }
        if let Some(b) = self.background.as_mut() {
            b.stop();
        }
        let finished = self.partitioner.finish();
        summary.seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(()) => {}
            Err(SweepStop::Cancelled) => summary.interrupted = true,
            Err(SweepStop::Error(e)) => return Err(e),
        }
        finished?;
        Ok(summary)
    }

    async fn points(&mut self, summary: &mut Summary, pool: &mut Option<Pool>, cancel: &mut watch::Receiver<bool>) -> Result<(), SweepStop> {
        let points = self.grid.points();
        let resumed = points.iter().filter(|p| self.table.done(**p).is_some()).count();
        self.observer.started(points.len(), resumed);
        let mut pruner = Pruner::new(self.rules);
        let mut segment: Option<Instance> = None;
        // A failure that dooms the rest of a size or series: (scope, message).
        let mut doomed: Option<((u8, Option<u32>), String)> = None;
        for (i, &p) in points.iter().enumerate() {
            let next = points.get(i + 1);
            if let Some(done) = self.table.done(p) {
                let obs = match done {
                    Done::Measured { throughput, latency_s } => {
                        Observation::Measured { latency_s, segment_throughput: throughput * p.procs as f64 }
                    }
                    Done::Oom => Observation::Oom,
                };
                pruner.observe(p, obs);
                summary.counts.resumed += 1;
                self.observer.resumed(p, done);
            } else {
                let outcome = match (pruner.skip_reason(p), &doomed) {
                    (Some(reason), _) => Outcome::Pruned(reason),
                    (None, Some(((size, procs), why))) if *size == p.size && procs.is_none_or(|n| n == p.procs) => {
                        Outcome::Failed(why.clone())
                    }
                    _ => {
                        self.observer.measuring(p);
                        self.measure_point(p, &mut segment, pool, summary, &mut doomed, cancel).await?
                    }
                };
                pruner.observe(
                    p,
                    match &outcome {
                        Outcome::Measured(m) => Observation::Measured { latency_s: m.latency_s, segment_throughput: m.throughput * p.procs as f64 },
                        Outcome::Oom(_) => Observation::Oom,
                        _ => Observation::Failed,
                    },
                );
                match &outcome {
                    Outcome::Measured(_) => summary.counts.measured += 1,
                    Outcome::Oom(_) => summary.counts.oom += 1,
                    Outcome::Failed(_) => summary.counts.failed += 1,
                    Outcome::Pruned(_) => summary.counts.pruned += 1,
                }
                self.table.record(p, &outcome).map_err(SweepStop::Error)?;
                self.observer.decided(p, &outcome);
            }
            // End of a series: stop its workers. End of a size: undo its instance.
            if next.is_none_or(|n| n.size != p.size || n.procs != p.procs) {
                if let Some(pl) = pool.take() {
                    pl.shutdown().await;
                }
            }
            if next.is_none_or(|n| n.size != p.size) {
                if segment.take().is_some() {
                    if let Some(b) = self.background.as_mut() {
                        b.stop();
                    }
                    self.partitioner.leave().map_err(SweepStop::Error)?;
                }
                doomed = None;
            }
        }
        Ok(())
    }

    /// Measure one point, making its instance and starting its workers first when needed.
    async fn measure_point(
        &mut self,
        p: Point,
        segment: &mut Option<Instance>,
        pool: &mut Option<Pool>,
        summary: &mut Summary,
        doomed: &mut Option<((u8, Option<u32>), String)>,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<Outcome, SweepStop> {
        if segment.is_none() {
            match self.partitioner.enter(p.size) {
                Ok(s) => {
                    summary.segments.push(s.clone());
                    if let Some(b) = self.background.as_mut() {
                        if let Err(e) = b.start(&s) {
                            self.partitioner.leave().map_err(SweepStop::Error)?;
                            return Err(SweepStop::Error(e));
                        }
                    }
                    *segment = Some(s);
                }
                Err(e) => {
                    // Undo whatever part was made; this size is failed, the next is tried.
                    self.partitioner.leave().map_err(SweepStop::Error)?;
                    let why = format!("instance size {} could not be made: {e}", p.size);
                    *doomed = Some(((p.size, None), why.clone()));
                    return Ok(Outcome::Failed(why));
                }
            }
        }
        let Some(seg) = segment.as_ref() else { return Ok(Outcome::Failed("no instance".into())) };
        if pool.is_none() {
            let specs = match self.workers.specs(seg, p.procs, &self.run_dir) {
                Ok(s) => s,
                Err(why) => {
                    *doomed = Some(((p.size, Some(p.procs)), why.clone()));
                    return Ok(Outcome::Failed(why));
                }
            };
            match or_cancel(cancel, Pool::start(self.spawner, &specs, self.ready_timeout)).await? {
                Ok(pl) => {
                    summary.worker.get_or_insert_with(|| pl.info.clone());
                    *pool = Some(pl);
                }
                Err(e) if e.is_oom() => return Ok(Outcome::Oom(e.to_string())),
                Err(e) => {
                    let why = e.to_string();
                    *doomed = Some(((p.size, Some(p.procs)), why.clone()));
                    return Ok(Outcome::Failed(why));
                }
            }
        }
        let Some(pl) = pool.as_mut() else { return Ok(Outcome::Failed("no workers".into())) };
        let measured = or_cancel(cancel, measure(pl, p, &self.measure, &mut *self.probe, seg)).await?;
        match measured {
            Ok(m) => Ok(Outcome::Measured(m)),
            Err(e) => {
                // Workers that failed a round are not trusted with the next batch.
                if let Some(pl) = pool.take() {
                    pl.kill().await;
                }
                Ok(if e.is_oom() { Outcome::Oom(e.to_string()) } else { Outcome::Failed(e.to_string()) })
            }
        }
    }
}

enum SweepStop {
    Cancelled,
    Error(ProfileError),
}

impl From<Cancelled> for SweepStop {
    fn from(_: Cancelled) -> Self {
        SweepStop::Cancelled
    }
}

/// Warm up, then measure rounds until the estimate is stable or the time cap is hit.
async fn measure(
    pool: &mut Pool,
    p: Point,
    s: &MeasureSettings,
    probe: &mut dyn MemoryProbe,
    seg: &Instance,
) -> Result<Measurement, PoolError> {
    pool.round(p.batch, s.warmup_seconds).await?;
    let mut est = Estimate::new();
    let mut mem: Option<f64> = None;
    let converged = loop {
        let r = pool.round(p.batch, s.round_seconds()).await?;
        est.push_round(p.batch, &r);
        if let Some(m) = probe.used_mib(seg, &pool.pids()) {
            mem = Some(mem.map_or(m, |old| old.max(m)));
        }
        if let Some(converged) = est.verdict(s) {
            break converged;
        }
    };
    let ci = est.relative_ci();
    Ok(Measurement {
        throughput: est.throughput() / p.procs as f64,
        latency_s: est.mean_latency_s(),
        p50_ms: est.percentile_ms(50.0),
        p99_ms: est.percentile_ms(99.0),
        mem_mib: mem,
        seconds: est.seconds(),
        rounds: est.rounds(),
        ci: if ci.is_finite() { ci } else { 0.0 },
        note: if converged {
            String::new()
        } else {
            format!("ci {:.1}% above the {:.1}% target at the {} s cap", ci * 100.0, s.target_ci * 100.0, s.max_seconds)
        },
    })
}
