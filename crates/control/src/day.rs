//! Load that changes over time, in simulation: `parva simulate --rates TRACE --policy ...`.
//!
//! Each policy makes its own plans for a [`RateTrace`] and the simulator replays Poisson arrivals
//! at the trace's rates against them:
//!
//! - [`Policy::Static`]: one plan for every service's peak rate over the whole trace (ParvaGPU).
//! - [`Policy::Oracle`]: the fewest-GPU plan of each piece of the trace, known in advance and
//!   reconfigured for free: a lower bound on GPU-hours.
//! - [`Policy::Forecast`] and [`Policy::Follow`]: parva's controller ([`crate::controller`]) in
//!   its forecasting and its reactive mode, driven through the same [`Driver`] a live node uses
//!   (`deploy --follow`), against a [`SimNode`]: every `window` it sees each service's average
//!   rate over the window that just ended (only the past), and between windows an alarm sees the
//!   rate over the last [`ALARM_S`] seconds after each change of the trace. A transition's steps
//!   run on the simulated node one after another, each taking its time under the given costs
//!   (an instance `mig-create + mps-start`, workers `worker-start`, a drain the service's SLO,
//!   a destroy `mig-destroy`); at every moment only the segments whose workers run take
//!   requests, and every GPU holding an instance counts.
//!
//! **Sampling.** A day at thousands of requests a second is hundreds of millions of arrivals; the
//! day is cut into *pieces* (between the trace's change points and the moments a serving set
//! changes), and each piece is simulated for at most `sample` seconds (after `warmup` seconds
//! of the same load, not counted) at its constant rates, starting from empty queues. Every
//! figure is then weighted by the piece's length: a service's share of requests within its SLO
//! is `Σ attainment x rate x length / Σ rate x length`. A piece with rate but no segment for a
//! service counts all its requests as missed. Each service's worst [`BUCKET_S`] (10 minutes) is
//! reported beside its day total, so a bad moment cannot hide in a good day.
//!
//! **Best-effort jobs** ([`DayJobs`]). The cluster is the GPUs static needs for the peak. At every
//! moment the jobs hold what inference leaves free of it, placed by
//! [`parva_planner::jobs::place_jobs`] (running instances stay where they still fit): under
//! static the holes of its layouts, under the oracle and the controller also the GPUs they free.
//! During a transition every instance that exists is inference's. When the controller creates a
//! segment over a job's instance, the job is given `grace_s` to checkpoint first and the
//! transition starts that much later (inference waits no longer); every instance (re)started
//! spends `start_s` loading and resuming before it makes progress. MIG isolates the jobs'
//! instances, so serving is simulated as without them.

use std::collections::BTreeMap;

use parva_core::DeploymentMap;
use parva_core::deploy::JobSlot;
use parva_core::jobs::Job;
use parva_core::sim::{self, SimConfig};
use parva_core::slo::Service;
use parva_core::trace::RateTrace;
use parva_planner::jobs::{Cluster, job_gpcs, place_jobs};
use parva_planner::replan::Costs;
use parva_planner::{PlanError, PlanInput, PlanOptions};

use crate::ALARM_S;
use crate::controller::{Controller, Observation, RECENT_S};
use crate::driver::{Driver, Outcome, PlanContext, prepare_here};
use crate::node::{Node, block_on};
pub use crate::simnode::SimNode;
use crate::settings::{Mode, Settings};

mod pieces;
mod report;
use pieces::{Day, serve};
pub use report::{DayReport, LogLine, Piece, PieceService, PolicyDay, ServiceDay};

/// Most pieces a day simulation may cut its trace into (trace changes plus controller windows):
/// each is planned (oracle) and simulated, at roughly 0.1 s apiece in a release build.
pub const MAX_PIECES: usize = 40_000;

/// The length of the pieces each service's worst moment is reported over, seconds.
pub const BUCKET_S: f64 = 600.0;

/// The simulated cluster is one node of this many GPUs (as many as any plan needs).
pub const SIM_GPUS: u32 = 4096;

/// Which plans a day is served with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Static,
    Oracle,
    /// The controller in its reactive mode (parva's first controller).
    Follow,
    /// The controller in its forecasting mode (the default of `deploy --follow`).
    Forecast,
}

impl Policy {
    /// The policy's name, as `--policy` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Static => "static",
            Policy::Oracle => "oracle",
            Policy::Follow => "follow",
            Policy::Forecast => "forecast",
        }
    }

    /// Every policy, in report order.
    pub const ALL: [Policy; 4] = [Policy::Static, Policy::Oracle, Policy::Follow, Policy::Forecast];

    /// The controller mode a policy runs, if it is the controller.
    pub fn mode(self) -> Option<Mode> {
        match self {
            Policy::Follow => Some(Mode::Reactive),
            Policy::Forecast => Some(Mode::Forecast),
            _ => None,
        }
    }
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Policy::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown policy {s:?} (policies: static, oracle, follow, forecast)"))
    }
}

/// Best-effort jobs in a day simulation (see the module doc).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DayJobs {
    pub jobs: Vec<Job>,
    /// Seconds a job whose instance inference takes back has to checkpoint and stop.
    pub grace_s: f64,
    /// Seconds a job instance spends starting and resuming from its checkpoint.
    pub start_s: f64,
}

/// Settings of a day simulation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DayConfig {
    /// Seconds of the trace simulated, from 0.
    pub duration_s: f64,
    /// Most seconds simulated per piece, and the uncounted warm-up before them.
    pub sample_s: f64,
    pub warmup_s: f64,
    pub seed: u64,
    pub percentile: f64,
    /// The controller's settings (its mode is the policy's).
    pub follow: Settings,
    pub costs: Costs,
    /// Best-effort jobs on the idle GPCs, if any.
    pub jobs: Option<DayJobs>,
}

/// Why a day cannot be simulated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DayError {
    #[error("planning for the rates at {at_s} s: {source}")]
    Plan { at_s: f64, source: PlanError },
    #[error("the controller at {at_s} s: {why}")]
    Control { at_s: f64, why: String },
    #[error("simulating the piece at {at_s} s: {source}")]
    Sim { at_s: f64, source: sim::SimError },
    #[error("{what}: {rule}")]
    Invalid { what: String, rule: String },
}

/// What a day simulation is doing, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub policy: Policy,
    /// `planning` (the controller's run over the trace) or `serving` (simulating the pieces).
    pub stage: &'static str,
    pub done: u64,
    pub total: u64,
}
/// A map in effect over `[start, end)`, with the GPUs it counts and whether it is a transition.
#[derive(Debug, Clone, PartialEq)]
struct Span {
    start: f64,
    end: f64,
    /// The segments serving.
    map: DeploymentMap,
    gpus: usize,
    transition: bool,
    /// During a transition, every instance that exists (their GPCs are inference's).
    held: Option<DeploymentMap>,
    /// Best-effort instances running over the span.
    jobs: Vec<JobSlot>,
}

impl Span {
    fn new(start: f64, end: f64, map: DeploymentMap, transition: bool) -> Span {
        Span { start, end, gpus: map.gpu_count(), map, transition, held: None, jobs: Vec::new() }
    }

    /// Whether `next` continues this span unchanged.
    fn continued_by(&self, next: &Span) -> bool {
        (self.end - next.start).abs() < 1e-9
            && self.map == next.map
            && self.gpus == next.gpus
            && self.transition == next.transition
            && self.held == next.held
            && self.jobs == next.jobs
    }
}

/// Places the jobs of each span as spans are made, keeping running instances where they fit,
/// and merges a span into the one before when nothing changed.
struct JobTrack<'a> {
    ctx: Option<(Cluster, &'a parva_core::ProfileSet, &'a [Job])>,
    prev: Vec<JobSlot>,
}

impl JobTrack<'_> {
    fn push(&mut self, spans: &mut Vec<Span>, mut sp: Span) {
        if sp.end <= sp.start {
            return;
        }
        if let Some((cluster, profiles, jobs)) = &self.ctx {
            let held = sp.held.as_ref().unwrap_or(&sp.map);
            sp.jobs = place_jobs(cluster, profiles, jobs, &[held], &self.prev);
            self.prev = sp.jobs.clone();
        }
        match spans.last_mut() {
            Some(last) if last.continued_by(&sp) => last.end = sp.end,
            _ => spans.push(sp),
        }
    }
}

/// Simulate the trace under each policy. `input.services` gives every service's model and SLO
/// (its rate is the trace's); `progress` is called as the work goes.
pub fn simulate_day(
    input: PlanInput<'_>,
    trace: &RateTrace,
    config: &DayConfig,
    policies: &[Policy],
    progress: &mut dyn FnMut(Progress),
) -> Result<DayReport, DayError> {
    check(config)?;
    // Bound the work before any plan is made: each piece is planned (oracle) and simulated.
    let changes = trace.breakpoints().iter().filter(|t| **t < config.duration_s).count();
    let pieces = changes as f64 + config.duration_s / config.follow.window_s;
    if pieces > MAX_PIECES as f64 {
        return Err(DayError::Invalid {
            what: "the rate trace".into(),
            rule: format!(
                "{changes} rate changes and {:.0} controller windows in {} s make about {pieces:.0} pieces to plan and \
                 simulate, more than {MAX_PIECES}; use a coarser trace (e.g. one row per service per minute), a longer \
                 --window or a shorter --duration",
                config.duration_s / config.follow.window_s,
                config.duration_s
            ),
        });
    }
    // The simulated cluster is one node with as many GPUs as any plan needs.
    let options = PlanOptions { gpus_per_node: SIM_GPUS, ..input.options.clone() };
    let input = PlanInput { options: &options, ..input };
    let mut out = Vec::new();
    let (mut pieces_simulated, mut seconds_simulated) = (0usize, 0.0f64);
    // With jobs, the cluster is what static needs for the peak.
    let cluster = match &config.jobs {
        Some(_) => {
            let peak = at_rates(input.services, &|s| trace.peak(&s.name, 0.0, config.duration_s));
            Some(Cluster { gpu: input.gpu, gpus: plan_map(&input, &peak, 0.0)?.gpu_count() as u32, gpus_per_node: SIM_GPUS, first_node: 0 })
        }
        None => None,
    };
    // The policies are independent: each runs on a thread of its own, their progress sent here.
    let (tx, rx) = std::sync::mpsc::channel::<Progress>();
    let input = &input;
    let results: Vec<Result<PolicyDay, DayError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = policies
            .iter()
            .map(|&policy| {
                let tx = tx.clone();
                scope.spawn(move || -> Result<PolicyDay, DayError> {
                    let mut track = JobTrack {
                        ctx: cluster.zip(config.jobs.as_ref()).map(|(c, j)| (c, input.profiles, j.jobs.as_slice())),
                        prev: Vec::new(),
                    };
                    let (spans, stats) = match policy.mode() {
                        None if policy == Policy::Static => static_spans(input, trace, config, &mut track)?,
                        None => oracle_spans(input, trace, config, &mut track)?,
                        Some(mode) => follow_spans(input, trace, config, mode, &mut track, &mut |done, total| {
                            let _ = tx.send(Progress { policy, stage: "planning", done, total });
                        })?,
                    };
                    serve(Day { input, trace, config }, policy, cluster.map(|c| c.gpus), &spans, stats, &mut |done, total| {
                        let _ = tx.send(Progress { policy, stage: "serving", done, total });
                    })
                })
            })
            .collect();
        drop(tx);
        for p in rx {
            progress(p);
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(DayError::Invalid { what: "the simulation".into(), rule: "a policy's thread panicked".into() })))
            .collect()
    });
    for day in results {
        let day = day?;
        pieces_simulated += day.pieces.len();
        seconds_simulated += day.pieces.iter().map(|p| (p.end_s - p.start_s).min(config.sample_s)).sum::<f64>();
        out.push(day);
    }
    Ok(DayReport { config: config.clone(), policies: out, cluster_gpus: cluster.map(|c| c.gpus), pieces_simulated, seconds_simulated })
}

fn check(c: &DayConfig) -> Result<(), DayError> {
    let bad = |what: &str, rule: String| Err(DayError::Invalid { what: what.into(), rule });
    if !(c.duration_s.is_finite() && c.duration_s > 0.0 && c.duration_s <= parva_core::trace::TRACE_TIME_S.max) {
        return bad("--duration", format!("must be in (0, {}] s, found {}", parva_core::trace::TRACE_TIME_S.max, c.duration_s));
    }
    if !(c.sample_s.is_finite() && c.sample_s >= 1.0 && c.sample_s <= 3600.0) {
        return bad("--sample", format!("must be in [1, 3600] s, found {}", c.sample_s));
    }
    if !(c.warmup_s.is_finite() && c.warmup_s >= 0.0 && c.warmup_s <= 600.0) {
        return bad("--warmup", format!("must be in [0, 600] s, found {}", c.warmup_s));
    }
    c.follow.check().map_err(|e| DayError::Invalid { what: e.flag.into(), rule: e.rule })?;
    if c.follow.window_s < 10.0 {
        return bad("--window", format!("must be at least 10 s in a simulation, found {}", c.follow.window_s));
    }
    if let Some(j) = &c.jobs {
        if !(j.grace_s.is_finite() && (0.0..=3600.0).contains(&j.grace_s)) {
            return bad("--job-grace", format!("must be in [0, 3600] s, found {}", j.grace_s));
        }
        if !(j.start_s.is_finite() && (0.0..=3600.0).contains(&j.start_s)) {
            return bad("--job-start", format!("must be in [0, 3600] s, found {}", j.start_s));
        }
    }
    Ok(())
}

/// Counts of a policy's reconfigurations.
#[derive(Debug, Default, Clone)]
struct Stats {
    replans: usize,
    refused: usize,
    created: usize,
    destroyed: usize,
    started: u32,
    stopped: u32,
    log: Vec<LogLine>,
}

fn at_rates(services: &[Service], rate: &dyn Fn(&Service) -> f64) -> Vec<Service> {
    services.iter().map(|s| Service { rate: rate(s), ..s.clone() }).collect()
}

fn plan_map(input: &PlanInput<'_>, services: &[Service], at_s: f64) -> Result<DeploymentMap, DayError> {
    let plan = parva_planner::plan(PlanInput { services, ..*input }).map_err(|source| DayError::Plan { at_s, source })?;
    Ok(plan.to_map())
}

fn static_spans(input: &PlanInput<'_>, trace: &RateTrace, c: &DayConfig, track: &mut JobTrack<'_>) -> Result<(Vec<Span>, Stats), DayError> {
    let peak = at_rates(input.services, &|s| trace.peak(&s.name, 0.0, c.duration_s));
    let map = plan_map(input, &peak, 0.0)?;
    let mut spans = Vec::new();
    track.push(&mut spans, Span::new(0.0, c.duration_s, map, false));
    Ok((spans, Stats::default()))
}

fn oracle_spans(input: &PlanInput<'_>, trace: &RateTrace, c: &DayConfig, track: &mut JobTrack<'_>) -> Result<(Vec<Span>, Stats), DayError> {
    let mut cuts: Vec<f64> = trace.breakpoints().into_iter().filter(|t| *t < c.duration_s).collect();
    cuts.push(c.duration_s);
    let mut cache: BTreeMap<Vec<u64>, DeploymentMap> = BTreeMap::new();
    let mut spans = Vec::new();
    for w in cuts.windows(2) {
        let rates = at_rates(input.services, &|s| trace.rate(&s.name, w[0]));
        let key: Vec<u64> = rates.iter().map(|s| s.rate.to_bits()).collect();
        let map = match cache.get(&key) {
            Some(m) => m.clone(),
            None => {
                let m = plan_map(input, &rates, w[0])?;
                cache.insert(key, m.clone());
                m
            }
        };
        track.push(&mut spans, Span::new(w[0], w[1], map, false));
    }
    Ok((spans, Stats::default()))
}

/// The node a controller run starts from (the simulation's, and its equivalence test's live
/// loop): deployed for the trace's first rates with headroom, and its driver.
pub(crate) fn start_node<'a>(
    input: &PlanInput<'a>,
    trace: &RateTrace,
    c: &DayConfig,
    settings: Settings,
) -> Result<(DeploymentMap, SimNode, Driver<'a>), DayError> {
    let names: Vec<String> = input.services.iter().map(|s| s.name.clone()).collect();
    let planned: Vec<f64> = names.iter().map(|n| (trace.rate(n, 0.0) * (1.0 + settings.headroom)).max(settings.min_rate)).collect();
    let first: Vec<Service> = input.services.iter().zip(&planned).map(|(s, r)| Service { rate: *r, ..s.clone() }).collect();
    let map = plan_map(input, &first, 0.0)?;
    let drain_s: BTreeMap<String, f64> = input.services.iter().map(|s| (s.name.clone(), s.slo_ms / 1000.0)).collect();
    let node = SimNode::new(input.gpu, &map, c.costs, drain_s, 0.0);
    let ctx = PlanContext {
        gpu: input.gpu,
        profiles: input.profiles,
        services: input.services,
        options: input.options.clone(),
        costs: c.costs,
        node: 0,
        node_gpus: SIM_GPUS,
    };
    let driver = Driver::new(Controller::new(settings, names, planned, 0.0), ctx, &map.segments);
    Ok((map, node, driver))
}

/// The controller's run over the trace on a [`SimNode`] (see the module doc).
fn follow_spans(
    input: &PlanInput<'_>,
    trace: &RateTrace,
    c: &DayConfig,
    mode: Mode,
    track: &mut JobTrack<'_>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Vec<Span>, Stats), DayError> {
    let settings = Settings { mode, ..c.follow };
    let (map, mut node, mut driver) = start_node(input, trace, c, settings)?;
    node.grace_s = c.jobs.as_ref().map_or(0.0, |j| j.grace_s);
    let names: Vec<String> = driver.controller.names().to_vec();
    let mut stats = Stats::default();
    let mut spans = Vec::new();
    // When the controller looks, as a live node's loop does (`live::follow_loop`, every whole
    // second) but only where a look can decide something new: every window, and an alarm at
    // each of the ALARM_S seconds after a change of the trace (the seconds whose last ALARM_S
    // seconds see it); a second with a window look has no alarm.
    let mut looks: Vec<(f64, bool)> = Vec::new();
    let mut k = 1.0;
    while k * settings.window_s < c.duration_s {
        looks.push((k * settings.window_s, true));
        k += 1.0;
    }
    let is_window = |t: f64| (t / settings.window_s).fract() == 0.0;
    for b in trace.breakpoints() {
        for k in 1..=ALARM_S as u32 {
            let at = b.ceil() + f64::from(k);
            if b > 0.0 && at >= ALARM_S && at < c.duration_s && !is_window(at) {
                looks.push((at, false));
            }
        }
    }
    looks.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
    looks.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    // Looks added as the run goes: an alarm at the first second after a transition (the live
    // loop's next alarm, over the 10 s before it) and after a back-off; in order, popped
    // from the back.
    let mut later: Vec<f64> = Vec::new();
    let add_later = |later: &mut Vec<f64>, t: f64| {
        let t = t.ceil();
        if t < c.duration_s && t >= ALARM_S && !later.contains(&t) && !is_window(t) {
            let at = later.partition_point(|x| *x > t);
            later.insert(at, t);
        }
    };
    // The serving set from `at` on (the node's last change).
    let mut at = 0.0f64;
    let mut serving = map.clone();
    let mut held: Option<DeploymentMap> = None;
    let total = looks.len() as u64;
    let mut fixed = looks.into_iter().enumerate().peekable();
    loop {
        // The next look: a fixed one, or an added alarm before it (a fixed look at the same
        // second is the one taken).
        let (now, window) = match (fixed.peek(), later.last()) {
            (Some(&(_, (t, _))), Some(&l)) if l < t => {
                later.pop();
                (l, false)
            }
            (Some(_), _) => {
                let Some((i, look)) = fixed.next() else { break };
                progress(i as u64 + 1, total);
                if later.last() == Some(&look.0) {
                    later.pop();
                }
                look
            }
            (None, Some(_)) => (later.pop().unwrap_or(f64::INFINITY), false),
            (None, None) => break,
        };
        if now < node.clock {
            continue; // the node is busy with a transition: this look is skipped
        }
        // What served until now (its jobs placed: a creation over one waits for its grace).
        track.push(&mut spans, Span::new(at, now, serving.clone(), false));
        at = now;
        node.jobs = track.prev.clone();
        node.clock = now;
        let outcome = if window {
            let seen: Vec<Observation> =
                names.iter().map(|n| Observation::of(trace.average(n, now - settings.window_s, now) * settings.window_s, settings.window_s)).collect();
            // A scale-down stops where the short period an alarm looks at passes what it leaves
            // a service (the live loop asks its router's counts the same).
            let min_requests = settings.min_requests;
            let mut stop = |clock: Option<f64>, capacity: &[f64]| {
                // As a live loop sees it: its counts as of the last whole second sampled during
                // the transition (none before the second after the look's).
                let t = clock.unwrap_or(now).ceil() - 1.0;
                if t < now + 1.0 {
                    return false;
                }
                names.iter().zip(capacity).any(|(n, c)| Observation::of(trace.average(n, t - ALARM_S, t) * ALARM_S, ALARM_S).past(*c, min_requests))
            };
            block_on(driver.tick(now, &seen, &mut node, &prepare_here, &mut stop))
        } else {
            let over = |s: f64| -> Vec<Observation> { names.iter().map(|n| Observation::of(trace.average(n, now - s, now) * s, s)).collect() };
            block_on(driver.alarm(now, &over(ALARM_S), &over(RECENT_S), &mut node, &prepare_here))
        };
        match &outcome {
            Outcome::Kept => continue,
            Outcome::Unchanged { .. } | Outcome::NoSaving { .. } => {}
            Outcome::Applied { prepared, .. } => {
                stats.replans += 1;
                stats.created += prepared.created;
                stats.destroyed += prepared.destroyed;
                add_later(&mut later, node.clock.max(now + 1.0));
            }
            Outcome::Stopped { prepared, done, .. } => {
                stats.replans += 1;
                let done = &prepared.steps[..(*done).min(prepared.steps.len())];
                stats.created += done.iter().filter(|s| matches!(s, crate::steps::Step::Create { .. })).count();
                stats.destroyed += done.iter().filter(|s| matches!(s, crate::steps::Step::Destroy { .. })).count();
                add_later(&mut later, node.clock.max(now + 1.0));
            }
            Outcome::Refused { backoff_s, .. } => {
                stats.refused += 1;
                add_later(&mut later, node.clock.max(now + 1.0));
                add_later(&mut later, now + backoff_s);
            }
        }
        if let Some(line) = outcome.log_line() {
            tracing::debug!(at_s = now, "{line}");
            stats.log.push(LogLine { at_s: now, line });
        }
        // The node's changes since `now`, as spans.
        let events = std::mem::take(&mut node.events);
        let mut cut = now;
        for (t, s, h) in events {
            let t = t.min(c.duration_s);
            track.push(&mut spans, with_held(Span::new(cut, t, serving.clone(), held.is_some()), held.clone()));
            (cut, serving, held) = (t.max(cut), s, Some(h));
        }
        let end = node.clock.max(cut).min(c.duration_s);
        track.push(&mut spans, with_held(Span::new(cut, end, serving.clone(), held.is_some()), held.clone()));
        at = end;
        held = None;
        serving = DeploymentMap { segments: node.serving(), jobs: Vec::new() };
    }
    track.push(&mut spans, Span::new(at, c.duration_s, serving, false));
    stats.started = node.started;
    stats.stopped = node.stopped;
    Ok((spans, stats))
}

/// `sp` with what exists during it (a transition's instances; its GPUs are those).
fn with_held(mut sp: Span, held: Option<DeploymentMap>) -> Span {
    if let Some(h) = &held {
        sp.gpus = h.gpu_count();
    }
    sp.held = held;
    sp
}

#[cfg(test)]
#[path = "day_tests.rs"]
mod tests;
