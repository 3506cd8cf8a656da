//! Load that changes over time, in simulation: `parva simulate --rates TRACE --policy ...`.
//!
//! Each policy makes its own plans for a [`RateTrace`] and the simulator replays Poisson arrivals
//! at the trace's rates against them:
//!
//! - [`Policy::Static`]: one plan for every service's peak rate over the whole trace (ParvaGPU).
//! - [`Policy::Oracle`]: the fewest-GPU plan of each piece of the trace, known in advance and
//!   reconfigured for free: a lower bound on GPU-hours.
//! - [`Policy::Follow`]: parva's controller. Every `window` seconds it sees the average rate of
//!   each service over the window that just ended (only the past), keeps an EWMA, and forecasts
//!   `max(last, EWMA) x (1 + headroom)`. A service whose forecast exceeds the rate the running
//!   plan was made for it is planned for its forecast at once; one whose forecast falls below
//!   `(1 - hysteresis)` times it is, no sooner than `min_interval` after the last change; the
//!   others keep their planned rate. When any changes, it re-plans with [`crate::replan::replan`]
//!   (fewest GPUs, then fewest changes) and pays the transition: for its length
//!   ([`crate::replan::transition`] under the given costs) only the segments that serve
//!   moment of it take requests (the kept ones, the old ones not drained yet and the new ones
//!   ready, as its steps say), and the GPUs of both maps count.
//!
//! **Sampling.** A day at thousands of requests a second is hundreds of millions of arrivals; the
//! day is cut into *pieces* (between the trace's change points, the controller's ticks and the
//! transitions' ends), and each piece is simulated for at most `sample` seconds (after `warmup`
//! seconds of the same load, not counted) at its constant rates, starting from empty queues. Every
//! figure is then weighted by the piece's length: a service's share of requests within its SLO is
//! `Σ attainment x rate x length / Σ rate x length`. A piece with rate but no segment for a
//! service counts all its requests as missed.
//!
//! **Best-effort jobs** ([`DayJobs`]). The cluster is the GPUs static needs for the peak. At every
//! moment the jobs hold what inference leaves free of it, placed by [`crate::jobs::place_jobs`]
//! (running instances stay where they still fit): under static the holes of its layouts, under
//! oracle and follow also the GPUs they free. During a transition the GPCs of both maps count as
//! inference's. When follow creates a segment over a job's instance, the job is given `grace_s`
//! to checkpoint first and the transition starts that much later (inference waits no longer);
//! every instance (re)started spends `start_s` loading and resuming before it makes progress.
//! MIG isolates the jobs' instances, so serving is simulated as without them.

use std::collections::BTreeMap;

use parva_core::DeploymentMap;
use parva_core::deploy::JobSlot;
use parva_core::jobs::Job;
use parva_core::sim::{self, SimConfig};
use parva_core::slo::Service;
use parva_core::trace::RateTrace;

use crate::jobs::{Cluster, job_gpcs, place_jobs};
use crate::replan::{self, Costs};
use crate::{PlanError, PlanInput};

/// Most pieces a day simulation may cut its trace into (trace changes plus controller windows):
/// each is planned (oracle) and simulated, at roughly 0.1 s apiece in a release build.
pub const MAX_PIECES: usize = 20_000;

/// Which plans a day is served with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Static,
    Oracle,
    Follow,
}

impl Policy {
    /// The policy's name, as `--policy` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Static => "static",
            Policy::Oracle => "oracle",
            Policy::Follow => "follow",
        }
    }
}

/// The follow controller's settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct FollowSettings {
    /// Seconds between the controller's looks at the measured rates.
    pub window_s: f64,
    /// Forecasts are planned with this much more rate (0.1 = 10 %).
    pub headroom: f64,
    /// Scale down only when every forecast is below `(1 - hysteresis)` x the planned rate.
    pub hysteresis: f64,
    /// Seconds after a change before the next scale-down (scale-ups never wait).
    pub min_interval_s: f64,
    /// Weight of the newest window in the rate EWMA.
    pub ewma: f64,
}

impl Default for FollowSettings {
    fn default() -> Self {
        FollowSettings { window_s: 120.0, headroom: 0.10, hysteresis: 0.25, min_interval_s: 900.0, ewma: 0.5 }
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
    pub follow: FollowSettings,
    pub costs: Costs,
    /// Best-effort jobs on the idle GPCs, if any.
    pub jobs: Option<DayJobs>,
}

/// Why a day cannot be simulated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DayError {
    #[error("planning for the rates at {at_s} s: {source}")]
    Plan { at_s: f64, source: PlanError },
    #[error("re-planning at {at_s} s: {source}")]
    Replan { at_s: f64, source: replan::ReplanError },
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
    /// GPUs in use (during a transition, those of both maps).
    pub gpus: usize,
    /// Whether a transition was under way (fewer segments serving).
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
    pub replans: usize,
    pub instances_created: usize,
    pub instances_destroyed: usize,
    pub workers_started: u32,
    pub workers_stopped: u32,
    /// Seconds during transitions (fewer segments serving).
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

/// A map in effect over `[start, end)`, with the GPUs it counts and whether it is a transition.
struct Span {
    start: f64,
    end: f64,
    map: DeploymentMap,
    gpus: usize,
    transition: bool,
    /// During a transition, every segment of both maps (their GPCs are inference's).
    held: Option<DeploymentMap>,
    /// Best-effort instances running over the span.
    jobs: Vec<JobSlot>,
}

impl Span {
    fn new(start: f64, end: f64, map: DeploymentMap, transition: bool) -> Span {
        Span { start, end, gpus: map.gpu_count(), map, transition, held: None, jobs: Vec::new() }
    }
}

/// Places the jobs of each span as spans are made, keeping running instances where they fit.
struct JobTrack<'a> {
    ctx: Option<(Cluster, &'a parva_core::ProfileSet, &'a [Job])>,
    prev: Vec<JobSlot>,
}

impl JobTrack<'_> {
    fn push(&mut self, spans: &mut Vec<Span>, mut sp: Span) {
        if let Some((cluster, profiles, jobs)) = &self.ctx {
            let held = sp.held.as_ref().unwrap_or(&sp.map);
            sp.jobs = place_jobs(cluster, profiles, jobs, &[held], &self.prev);
            self.prev = sp.jobs.clone();
        }
        spans.push(sp);
    }
}

/// Segments of `a` and `b`, each instance once.
fn union(a: &DeploymentMap, b: &DeploymentMap) -> DeploymentMap {
    let mut seen = std::collections::BTreeSet::new();
    let segments = a
        .segments
        .iter()
        .chain(&b.segments)
        .filter(|s| seen.insert((s.node, s.gpu, s.placement, s.instance_size)))
        .cloned()
        .collect();
    DeploymentMap { segments, jobs: Vec::new() }
}

/// Whether a segment of `created` overlaps (shares a memory slice with) a job instance.
fn takes_from_jobs(gpu: &parva_core::GpuType, created: &[&parva_core::Segment], jobs: &[JobSlot]) -> bool {
    created.iter().any(|s| jobs.iter().any(|j| crate::jobs::job_overlaps(gpu, j, s)))
}

/// Simulate the trace under each policy. `input.services` gives every service's model and SLO
/// (its rate is the trace's); `progress` is called after each piece with (done, total) of the
/// current policy.
pub fn simulate_day(
    input: PlanInput<'_>,
    trace: &RateTrace,
    config: &DayConfig,
    policies: &[Policy],
    progress: &mut dyn FnMut(Policy, usize, usize),
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
    let mut out = Vec::new();
    let (mut pieces_simulated, mut seconds_simulated) = (0usize, 0.0f64);
    // With jobs, the cluster is what static needs for the peak.
    let cluster = match &config.jobs {
        Some(_) => {
            let peak = at_rates(input.services, &|s| trace.peak(&s.name, 0.0, config.duration_s));
            Some(Cluster { gpu: input.gpu, gpus: plan_map(&input, &peak, 0.0)?.gpu_count() as u32, gpus_per_node: input.options.gpus_per_node, first_node: 0 })
        }
        None => None,
    };
    for &policy in policies {
        let mut track = JobTrack {
            ctx: cluster.zip(config.jobs.as_ref()).map(|(c, j)| (c, input.profiles, j.jobs.as_slice())),
            prev: Vec::new(),
        };
        let (spans, stats) = match policy {
            Policy::Static => static_spans(&input, trace, config, &mut track)?,
            Policy::Oracle => oracle_spans(&input, trace, config, &mut track)?,
            Policy::Follow => follow_spans(&input, trace, config, &mut track)?,
        };
        let day = serve(policy, cluster.map(|c| c.gpus), &input, trace, config, &spans, stats, &mut |d, t| progress(policy, d, t))?;
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
    let f = &c.follow;
    if !(f.window_s.is_finite() && f.window_s >= 10.0 && f.window_s <= 86_400.0) {
        return bad("--window", format!("must be in [10, 86400] s, found {}", f.window_s));
    }
    if !(f.headroom.is_finite() && (0.0..=4.0).contains(&f.headroom)) {
        return bad("--headroom", format!("must be in [0, 4] (a fraction), found {}", f.headroom));
    }
    if !(f.hysteresis.is_finite() && (0.0..1.0).contains(&f.hysteresis)) {
        return bad("--hysteresis", format!("must be in [0, 1) (a fraction), found {}", f.hysteresis));
    }
    if !(f.min_interval_s.is_finite() && (0.0..=86_400.0).contains(&f.min_interval_s)) {
        return bad("--min-interval", format!("must be in [0, 86400] s, found {}", f.min_interval_s));
    }
    if !(f.ewma.is_finite() && f.ewma > 0.0 && f.ewma <= 1.0) {
        return bad("--ewma", format!("must be in (0, 1], found {}", f.ewma));
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
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    replans: usize,
    created: usize,
    destroyed: usize,
    started: u32,
    stopped: u32,
}

/// The services with the given rates.
/// The services with `rates` (in the list's order).
fn with_rates(services: &[Service], rates: &[f64]) -> Vec<Service> {
    services.iter().zip(rates).map(|(s, r)| Service { rate: *r, ..s.clone() }).collect()
}

fn at_rates(services: &[Service], rate: &dyn Fn(&Service) -> f64) -> Vec<Service> {
    services.iter().map(|s| Service { rate: rate(s), ..s.clone() }).collect()
}

fn plan_map(input: &PlanInput<'_>, services: &[Service], at_s: f64) -> Result<DeploymentMap, DayError> {
    let plan = crate::plan(PlanInput { services, ..*input }).map_err(|source| DayError::Plan { at_s, source })?;
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

/// The follow controller's decisions, apart from what it acts on: fed the rates measured over
/// each window, it says when to re-plan and for which rates (see the module doc). Pure: the day
/// simulation drives it with a trace's averages; a live controller would with a router's counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Controller {
    settings: FollowSettings,
    ewma: Vec<f64>,
    planned: Vec<f64>,
    last_change_s: f64,
}

impl Controller {
    /// A controller whose services run now at `rates` (in the service list's order); the first
    /// plan is for [`Controller::planned`]: those rates with the headroom.
    pub fn new(settings: FollowSettings, rates: &[f64]) -> Self {
        let planned = rates.iter().map(|r| r * (1.0 + settings.headroom)).collect();
        Controller { settings, ewma: rates.to_vec(), planned, last_change_s: f64::NEG_INFINITY }
    }

    /// The rates the running plan was made for.
    pub fn planned(&self) -> &[f64] {
        &self.planned
    }

    /// The window ending at `now_s` saw `seen` (each service's average rate over it): the rates
    /// to re-plan for, or `None` to keep the running plan. Call [`Controller::applied`] once a
    /// re-plan for them runs.
    pub fn observe(&mut self, now_s: f64, seen: &[f64]) -> Option<Vec<f64>> {
        let f = self.settings;
        for (e, s) in self.ewma.iter_mut().zip(seen) {
            *e += f.ewma * (s - *e);
        }
        let forecast: Vec<f64> = seen.iter().zip(&self.ewma).map(|(s, e)| s.max(*e) * (1.0 + f.headroom)).collect();
        // Per service: up at once when the forecast passes the planned rate; down only past the
        // hysteresis band and the minimum interval; otherwise the planned rate stays.
        let may_down = now_s - self.last_change_s >= f.min_interval_s;
        let target: Vec<f64> = forecast
            .iter()
            .zip(&self.planned)
            .map(|(fc, p)| if *fc > *p || (may_down && *fc < p * (1.0 - f.hysteresis)) { *fc } else { *p })
            .collect();
        (target != self.planned).then_some(target)
    }

    /// The plan for `target` runs from `now_s` (`changed`: it changed what runs, which restarts
    /// the wait before the next scale-down).
    pub fn applied(&mut self, now_s: f64, target: Vec<f64>, changed: bool) {
        self.planned = target;
        if changed {
            self.last_change_s = now_s;
        }
    }
}

fn follow_spans(input: &PlanInput<'_>, trace: &RateTrace, c: &DayConfig, track: &mut JobTrack<'_>) -> Result<(Vec<Span>, Stats), DayError> {
    let f = c.follow;
    let names: Vec<&str> = input.services.iter().map(|s| s.name.as_str()).collect();
    // Start: planned for the first rates with headroom (a node deployed for what it serves now).
    let mut ctl = Controller::new(f, &names.iter().map(|n| trace.rate(n, 0.0)).collect::<Vec<_>>());
    let first = with_rates(input.services, ctl.planned());
    let mut map = plan_map(input, &first, 0.0)?;
    let mut stats = Stats::default();
    let mut spans = Vec::new();
    let mut t = 0.0f64;
    let per_node = input.options.gpus_per_node.max(1);
    let slo_s: BTreeMap<&str, f64> = input.services.iter().map(|s| (s.name.as_str(), s.slo_ms / 1000.0)).collect();
    while t < c.duration_s {
        let tick = (t + f.window_s).min(c.duration_s);
        track.push(&mut spans, Span::new(t, tick, map.clone(), false));
        t = tick;
        if t >= c.duration_s {
            break;
        }
        // What the controller saw over the window that ended.
        let seen: Vec<f64> = names.iter().map(|n| trace.average(n, t - f.window_s, t)).collect();
        let Some(target) = ctl.observe(t, &seen) else { continue };
        let services = with_rates(input.services, &target);
        let r = replan::replan(PlanInput { services: &services, ..*input }, &map, 0)
            .map_err(|source| DayError::Replan { at_s: t, source })?;
        let new_map = r.to_map();
        if r.created.is_empty() && r.destroyed.is_empty() {
            ctl.applied(t, target, false);
            if r.kept.iter().any(|k| k.old_batch != k.new_batch) {
                map = new_map;
            }
            continue;
        }
        let tr = replan::transition(&r, input.gpu, per_node, c.costs, &|n| slo_s.get(n).copied().unwrap_or(0.0));
        let both_maps = union(&map, &new_map);
        // A new segment over a job's instance waits while the job checkpoints (at most its grace).
        if let Some(grace) = c.jobs.as_ref().map(|j| j.grace_s).filter(|g| *g > 0.0) {
            let created: Vec<&parva_core::Segment> = new_map
                .segments
                .iter()
                .filter(|s| !r.kept.iter().any(|k| (k.node, k.gpu, k.placement) == (s.node, s.gpu, s.placement)))
                .collect();
            if takes_from_jobs(input.gpu, &created, &track.prev) {
                let end = (t + grace).min(c.duration_s);
                let mut sp = Span::new(t, end, map.clone(), true);
                sp.held = Some(both_maps.clone());
                track.push(&mut spans, sp);
                t = end;
                if t >= c.duration_s {
                    break;
                }
            }
        }
        for d in tr.services.iter().filter(|d| d.seconds_unserved > 0.0) {
            tracing::debug!(at_s = t, service = %d.service, seconds = d.seconds_unserved, why = ?d.why, "a service has no ready process during a transition");
        }
        tracing::debug!(at_s = t, created = r.created.len(), destroyed = r.destroyed.len(), seconds = tr.seconds, "re-planned");
        let (started, stopped) = r.workers();
        stats.replans += 1;
        stats.created += r.created.len();
        stats.destroyed += r.destroyed.len();
        stats.started += started;
        stats.stopped += stopped;
        // During the transition: at each moment, the kept segments, the old ones not drained
        // yet and the new ones ready; a span per change of that set.
        let key = |n: u32, g: u32, p: u8| (n, g, p);
        let kept: std::collections::BTreeSet<(u32, u32, u8)> = r.kept.iter().map(|k| key(k.node, k.gpu, k.placement)).collect();
        let drain_at: BTreeMap<(u32, u32, u8), f64> =
            tr.steps.iter().filter(|s| s.action == "drain").map(|s| (key(s.node, s.gpu, s.placement), s.start_s)).collect();
        let ready_at: BTreeMap<(u32, u32, u8), f64> =
            tr.steps.iter().filter(|s| s.action == "create").map(|s| (key(s.node, s.gpu, s.placement), s.end_s)).collect();
        let mut cuts: Vec<f64> = drain_at.values().chain(ready_at.values()).copied().filter(|x| *x > 0.0 && *x < tr.seconds).collect();
        cuts.push(0.0);
        cuts.push(tr.seconds);
        cuts.sort_by(f64::total_cmp);
        cuts.dedup();
        let both: std::collections::BTreeSet<(u32, u32)> =
            map.segments.iter().chain(&new_map.segments).map(|s| (s.node, s.gpu)).collect();
        for w in cuts.windows(2) {
            let (from, to) = ((t + w[0]).min(c.duration_s), (t + w[1]).min(c.duration_s));
            if to <= from {
                continue;
            }
            let mid = 0.5 * (w[0] + w[1]);
            let mut during = DeploymentMap { segments: Vec::new(), jobs: Vec::new() };
            for seg in &new_map.segments {
                let k = key(seg.node, seg.gpu, seg.placement);
                if kept.contains(&k) || ready_at.get(&k).is_some_and(|at| *at <= mid) {
                    during.segments.push(seg.clone());
                }
            }
            for seg in &map.segments {
                let k = key(seg.node, seg.gpu, seg.placement);
                if !kept.contains(&k) && drain_at.get(&k).is_none_or(|at| *at > mid) {
                    during.segments.push(seg.clone());
                }
            }
            let mut sp = Span::new(from, to, during, true);
            (sp.gpus, sp.held) = (both.len(), Some(both_maps.clone()));
            track.push(&mut spans, sp);
        }
        let end = (t + tr.seconds).min(c.duration_s);
        t = end;
        map = new_map;
        ctl.applied(t, target, true);
    }
    Ok((spans, stats))
}

/// Simulate every piece of `spans` (cut further at the trace's change points).
#[allow(clippy::too_many_arguments)]
fn serve(
    policy: Policy,
    cluster_gpus: Option<u32>,
    input: &PlanInput<'_>,
    trace: &RateTrace,
    c: &DayConfig,
    spans: &[Span],
    stats: Stats,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PolicyDay, DayError> {
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
    let mut pieces = Vec::with_capacity(jobs.len());
    let (mut gpu_seconds, mut peak_gpus, mut transition_seconds) = (0.0, 0usize, 0.0);
    let jobs_on = c.jobs.is_some();
    let gpcs_per_gpu = input.gpu.gpcs as f64;
    // Jobs: GPC-seconds held, samples, and the GPC-seconds serving holds on the cluster.
    let (mut job_gpc_s, mut job_samples, mut serving_gpc_s) = (0.0f64, 0.0f64, 0.0f64);
    let mut job_held_gpc_s = 0.0f64;
    for (done, &(i, a, b)) in jobs.iter().enumerate() {
        let sp = &spans[i];
        let len = b - a;
        let rates = at_rates(input.services, &|s| trace.rate(&s.name, a));
        let served: std::collections::BTreeSet<&str> = sp.map.segments.iter().map(|s| s.service.as_str()).collect();
        let sample = len.min(c.sample_s);
        // The simulator needs a positive rate per served service; a rate of 0 gets no arrivals.
        let list: Vec<Service> = rates.iter().map(|s| Service { rate: s.rate.max(1e-6), ..s.clone() }).collect();
        let seed = c.seed ^ (done as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let cfg = SimConfig { duration_s: c.warmup_s + sample, warmup_s: c.warmup_s, seed, percentile: c.percentile, ..SimConfig::default() };
        let report = if served.is_empty() {
            None
        } else {
            Some(sim::simulate(&sp.map, input.profiles, Some(&list), &cfg).map_err(|source| DayError::Sim { at_s: a, source })?)
        };
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
        progress(done + 1, jobs.len());
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
        .map(|(i, s)| ServiceDay {
            service: s.name.clone(),
            slo_ms: s.slo_ms,
            requests: total[i],
            within_slo_pct: if total[i] > 0.0 { 100.0 * within[i] / total[i] } else { 100.0 },
            worst_piece_s: worst[i].0,
            worst_attainment_pct: worst[i].1.min(100.0),
            worst_p99_ms: finite(worst[i].2),
        })
        .collect();
    let requests: f64 = total.iter().sum();
    Ok(PolicyDay {
        policy,
        gpu_hours: gpu_seconds / 3600.0,
        peak_gpus,
        requests,
        within_slo_pct: if requests > 0.0 { 100.0 * within.iter().sum::<f64>() / requests } else { 100.0 },
        worst_service_pct: services.iter().map(|s| s.within_slo_pct).fold(100.0, f64::min),
        replans: stats.replans,
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
    })
}

/// JSON has no infinity: a service with no segment reports a p99 of -1.
fn finite(x: f64) -> f64 {
    if x.is_finite() { x } else { -1.0 }
}

#[cfg(test)]
#[path = "day_tests.rs"]
mod tests;
