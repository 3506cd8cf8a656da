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

/// One piece of the day as a policy served it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Piece {
    pub start_s: f64,
    pub end_s: f64,
    /// GPUs holding an instance (during a transition, also those being created or drained).
    pub gpus: usize,
    /// Whether a transition was under way.
    pub transition: bool,
    /// Total offered rate, requests/s.
    pub demand: f64,
    /// Share of the piece's requests within their SLO, percent (all services).
    pub attainment_pct: f64,
    /// The service with the lowest attainment in the piece, and its attainment and p99.
    pub worst_service: String,
    pub worst_attainment_pct: f64,
    pub worst_p99_ms: f64,
    /// Every service with a rate in the piece.
    pub services: Vec<PieceService>,
}

/// One service in one piece.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PieceService {
    pub service: String,
    pub rate: f64,
    /// Share of its requests within the SLO, percent (0 with no segment serving it).
    pub attainment_pct: f64,
    /// p99 latency, ms (-1 with no segment serving it).
    pub p99_ms: f64,
}

/// One service over the day.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ServiceDay {
    pub service: String,
    pub slo_ms: f64,
    /// Requests over the day (the trace's rate integrated).
    pub requests: f64,
    /// Share of them within the SLO, percent.
    pub within_slo_pct: f64,
    /// The piece where it fared worst: its start, attainment and p99.
    pub worst_piece_s: f64,
    pub worst_attainment_pct: f64,
    pub worst_p99_ms: f64,
    /// Its worst [`BUCKET_S`]-second bucket of the day (`[k x 600, (k + 1) x 600)`): its start and
    /// the share of the bucket's requests within the SLO.
    pub worst_bucket_s: f64,
    pub worst_bucket_pct: f64,
    /// Its buckets below 95 % within the SLO.
    pub buckets_below_95: usize,
}

/// A policy's day.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PolicyDay {
    pub policy: Policy,
    pub gpu_hours: f64,
    /// Most GPUs at any time.
    pub peak_gpus: usize,
    pub requests: f64,
    pub within_slo_pct: f64,
    /// The lowest share within the SLO of any service over the day.
    pub worst_service_pct: f64,
    /// The lowest share within the SLO of any service in any 10-minute bucket.
    pub worst_bucket_pct: f64,
    /// Per 10-minute bucket of the day, in order: the worst service's share within the SLO
    /// (`day.svg`'s attainment curve).
    pub bucket_worst_pct: Vec<f64>,
    /// Transitions applied, and per day of the trace.
    pub replans: usize,
    pub replans_per_day: f64,
    /// Decisions the node could not apply (backed off).
    pub refused: usize,
    pub instances_created: usize,
    pub instances_destroyed: usize,
    pub workers_started: u32,
    pub workers_stopped: u32,
    /// Seconds during transitions.
    pub transition_seconds: f64,
    /// Requests within their SLO per second, averaged over the day.
    pub goodput_rps: f64,
    /// With jobs: best-effort GPU-hours (GPC-hours / GPCs per GPU) spent making progress (held,
    /// less each start's `start_s`), their samples, and instances started and stopped.
    pub job_gpu_hours: f64,
    pub job_samples: f64,
    pub job_starts: usize,
    pub job_stops: usize,
    /// With jobs: the cluster's GPU-hours neither inference nor a job holds.
    pub idle_gpu_hours: f64,
    pub services: Vec<ServiceDay>,
    pub pieces: Vec<Piece>,
    /// The controller's log: what it did at each moment and why (as a live node logs it).
    pub log: Vec<LogLine>,
}

/// One line of the controller's log.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LogLine {
    pub at_s: f64,
    pub line: String,
}

/// The report of a day simulation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DayReport {
    pub config: DayConfig,
    pub policies: Vec<PolicyDay>,
    /// With jobs: the cluster's GPUs (static's, for the peak).
    pub cluster_gpus: Option<u32>,
    /// Pieces simulated and seconds simulated, over all policies.
    pub pieces_simulated: usize,
    pub seconds_simulated: f64,
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
            block_on(driver.tick(now, &seen, &mut node, &prepare_here))
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

/// What a day is simulated on: the services and their tables, the rates over time, the settings.
#[derive(Clone, Copy)]
struct Day<'a> {
    input: &'a PlanInput<'a>,
    trace: &'a RateTrace,
    config: &'a DayConfig,
}

/// Simulate every piece of `spans` (cut further at the trace's change points).
fn serve(
    day: Day<'_>,
    policy: Policy,
    cluster_gpus: Option<u32>,
    spans: &[Span],
    stats: Stats,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<PolicyDay, DayError> {
    let Day { input, trace, config: c } = day;
    let breaks = trace.breakpoints();
    let mut jobs: Vec<(usize, f64, f64)> = Vec::new();
    for (i, sp) in spans.iter().enumerate() {
        let mut cuts: Vec<f64> = breaks.iter().copied().filter(|b| *b > sp.start && *b < sp.end).collect();
        cuts.insert(0, sp.start);
        cuts.push(sp.end);
        for w in cuts.windows(2) {
            if w[1] > w[0] {
                jobs.push((i, w[0], w[1]));
            }
        }
    }
    let n = input.services.len();
    let (mut within, mut total) = (vec![0.0; n], vec![0.0; n]);
    let mut worst: Vec<(f64, f64, f64)> = vec![(0.0, f64::INFINITY, 0.0); n]; // (start, attainment, p99)
    // Per service and BUCKET_S bucket: (requests within the SLO, requests).
    let buckets = (c.duration_s / BUCKET_S).ceil().max(1.0) as usize;
    let mut bucket: Vec<Vec<(f64, f64)>> = vec![vec![(0.0, 0.0); buckets]; n];
    let mut pieces = Vec::with_capacity(jobs.len());
    let (mut gpu_seconds, mut peak_gpus, mut transition_seconds) = (0.0, 0usize, 0.0);
    let jobs_on = c.jobs.is_some();
    let gpcs_per_gpu = input.gpu.gpcs as f64;
    // Jobs: GPC-seconds held, samples, and the GPC-seconds serving holds on the cluster.
    let (mut job_gpc_s, mut job_samples, mut serving_gpc_s) = (0.0f64, 0.0f64, 0.0f64);
    let mut job_held_gpc_s = 0.0f64;
    // Each piece's simulation is independent of the others: run them on every core, a chunk at
    // a time (the report is the same as one after another: each piece has its own seed).
    let simulate_piece = |done: usize, &(i, a, b): &(usize, f64, f64)| -> Result<Option<sim::SimReport>, DayError> {
        let sp = &spans[i];
        if sp.map.segments.is_empty() {
            return Ok(None);
        }
        let rates = at_rates(input.services, &|s| trace.rate(&s.name, a));
        let sample = (b - a).min(c.sample_s);
        // The simulator needs a positive rate per served service; a rate of 0 gets no arrivals.
        let list: Vec<Service> = rates.iter().map(|s| Service { rate: s.rate.max(1e-6), ..s.clone() }).collect();
        let seed = c.seed ^ (done as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let cfg = SimConfig { duration_s: c.warmup_s + sample, warmup_s: c.warmup_s, seed, percentile: c.percentile, ..SimConfig::default() };
        sim::simulate(&sp.map, input.profiles, Some(&list), &cfg).map(Some).map_err(|source| DayError::Sim { at_s: a, source })
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 64);
    let chunk = (threads * 8).max(1);
    let mut reports: Vec<Option<sim::SimReport>> = Vec::with_capacity(jobs.len());
    for (k, part) in jobs.chunks(chunk).enumerate() {
        let base = k * chunk;
        let per = part.len().div_ceil(threads).max(1);
        let results: Vec<Result<Vec<Option<sim::SimReport>>, DayError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = part
                .chunks(per)
                .enumerate()
                .map(|(t, sub)| {
                    let simulate_piece = &simulate_piece;
                    scope.spawn(move || sub.iter().enumerate().map(|(j, job)| simulate_piece(base + t * per + j, job)).collect())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(DayError::Invalid { what: "the simulation".into(), rule: "a simulation thread panicked".into() }))).collect()
        });
        for r in results {
            reports.extend(r?);
        }
        progress(base as u64 + part.len() as u64, jobs.len() as u64);
    }
    for (&(i, a, b), report) in jobs.iter().zip(reports) {
        let sp = &spans[i];
        let len = b - a;
        let rates = at_rates(input.services, &|s| trace.rate(&s.name, a));
        let (mut p_within, mut p_total) = (0.0, 0.0);
        let mut p_worst = (String::new(), 100.0f64, 0.0f64);
        let mut p_services = Vec::new();
        for (si, s) in rates.iter().enumerate() {
            if s.rate <= 0.0 {
                continue;
            }
            let (att, p99) = match report.as_ref().and_then(|r| r.services.iter().find(|x| x.service == s.name)) {
                Some(x) => (x.attainment_pct, x.p99_ms),
                None => (0.0, f64::INFINITY),
            };
            p_services.push(PieceService { service: s.name.clone(), rate: s.rate, attainment_pct: att, p99_ms: finite(p99) });
            let req = s.rate * len;
            // Share the piece's requests out to the buckets it overlaps.
            let mut from = a;
            while from < b {
                let k = ((from / BUCKET_S).floor() as usize).min(buckets - 1);
                let to = (((k + 1) as f64) * BUCKET_S).min(b).max(from);
                let r = s.rate * (to - from);
                bucket[si][k].0 += att / 100.0 * r;
                bucket[si][k].1 += r;
                if to <= from {
                    break;
                }
                from = to;
            }
            within[si] += att / 100.0 * req;
            total[si] += req;
            p_within += att / 100.0 * req;
            p_total += req;
            if att < worst[si].1 {
                worst[si] = (a, att, p99);
            }
            if att < p_worst.1 || p_worst.0.is_empty() {
                p_worst = (s.name.clone(), att, p99);
            }
        }
        gpu_seconds += sp.gpus as f64 * len;
        peak_gpus = peak_gpus.max(sp.gpus);
        if jobs_on {
            job_gpc_s += job_gpcs(&sp.jobs) as f64 * len;
            job_held_gpc_s += job_gpcs(&sp.jobs) as f64 * len;
            job_samples += sp.jobs.iter().filter_map(|j| j.throughput).sum::<f64>() * len;
            let cluster = cluster_gpus.unwrap_or(0);
            let per = input.options.gpus_per_node.max(1);
            serving_gpc_s += sp.held.as_ref().unwrap_or(&sp.map).segments.iter()
                .filter(|s| s.node * per + s.gpu < cluster)
                .map(|s| s.instance_size as f64)
                .sum::<f64>() * len;
        }
        if sp.transition {
            transition_seconds += len;
        }
        pieces.push(Piece {
            start_s: a,
            end_s: b,
            gpus: sp.gpus,
            transition: sp.transition,
            demand: rates.iter().map(|s| s.rate).sum(),
            attainment_pct: if p_total > 0.0 { 100.0 * p_within / p_total } else { 100.0 },
            worst_service: p_worst.0,
            worst_attainment_pct: p_worst.1,
            worst_p99_ms: finite(p_worst.2),
            services: p_services,
        });
    }
    let (mut job_starts, mut job_stops) = (0usize, 0usize);
    if jobs_on {
        let key = |j: &JobSlot| (j.node, j.gpu, j.placement, j.instance_size, j.job.clone());
        let mut prev: std::collections::BTreeSet<_> = std::collections::BTreeSet::new();
        let start_s = c.jobs.as_ref().map_or(0.0, |j| j.start_s);
        for sp in spans {
            let now: std::collections::BTreeSet<_> = sp.jobs.iter().map(key).collect();
            for j in sp.jobs.iter().filter(|j| !prev.contains(&key(j))) {
                job_starts += 1;
                // The instance makes no progress while it starts (at most the span's length).
                let lost = start_s.min(sp.end - sp.start);
                job_gpc_s -= j.instance_size as f64 * lost;
                job_samples -= j.throughput.unwrap_or(0.0) * lost;
            }
            job_stops += prev.difference(&now).count();
            prev = now;
        }
    }
    let services: Vec<ServiceDay> = input
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let share = |b: &(f64, f64)| if b.1 > 0.0 { 100.0 * b.0 / b.1 } else { 100.0 };
            let (worst_bucket, worst_bucket_pct) =
                bucket[i].iter().enumerate().map(|(k, b)| (k, share(b))).fold((0, 100.0f64), |acc, x| if x.1 < acc.1 { x } else { acc });
            ServiceDay {
            service: s.name.clone(),
            slo_ms: s.slo_ms,
            requests: total[i],
            within_slo_pct: if total[i] > 0.0 { 100.0 * within[i] / total[i] } else { 100.0 },
            worst_piece_s: worst[i].0,
            worst_attainment_pct: worst[i].1.min(100.0),
            worst_p99_ms: finite(worst[i].2),
            worst_bucket_s: worst_bucket as f64 * BUCKET_S,
            worst_bucket_pct,
            buckets_below_95: bucket[i].iter().filter(|b| share(b) < 95.0).count(),
        }})
        .collect();
    let requests: f64 = total.iter().sum();
    Ok(PolicyDay {
        policy,
        gpu_hours: gpu_seconds / 3600.0,
        peak_gpus,
        requests,
        within_slo_pct: if requests > 0.0 { 100.0 * within.iter().sum::<f64>() / requests } else { 100.0 },
        worst_service_pct: services.iter().map(|s| s.within_slo_pct).fold(100.0, f64::min),
        worst_bucket_pct: services.iter().map(|s| s.worst_bucket_pct).fold(100.0, f64::min),
        bucket_worst_pct: (0..buckets)
            .map(|k| bucket.iter().map(|b| if b[k].1 > 0.0 { 100.0 * b[k].0 / b[k].1 } else { 100.0 }).fold(100.0, f64::min))
            .collect(),
        replans: stats.replans,
        replans_per_day: stats.replans as f64 * 86_400.0 / c.duration_s,
        refused: stats.refused,
        instances_created: stats.created,
        instances_destroyed: stats.destroyed,
        workers_started: stats.started,
        workers_stopped: stats.stopped,
        transition_seconds,
        goodput_rps: within.iter().sum::<f64>() / c.duration_s,
        job_gpu_hours: job_gpc_s.max(0.0) / gpcs_per_gpu / 3600.0,
        job_samples: job_samples.max(0.0),
        job_starts,
        job_stops,
        idle_gpu_hours: if jobs_on {
            (cluster_gpus.unwrap_or(0) as f64 * gpcs_per_gpu * c.duration_s - serving_gpc_s - job_held_gpc_s).max(0.0) / gpcs_per_gpu / 3600.0
        } else {
            0.0
        },
        services,
        pieces,
        log: stats.log,
    })
}

/// JSON has no infinity: a service with no segment reports a p99 of -1.
fn finite(x: f64) -> f64 {
    if x.is_finite() { x } else { -1.0 }
}

#[cfg(test)]
#[path = "day_tests.rs"]
mod tests;
