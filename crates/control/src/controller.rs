//! The decision: fed what each service saw over a window, say when to re-plan and for which rates.
//! Pure (no planning, no node): the day simulation feeds it a trace's averages, a live node its
//! router's counts, through the same [`crate::driver::Driver`].
//!
//! Per service, each window:
//! - **up at once** when the forecast ([`crate::forecast`]) passes what the running plan can
//!   serve (its segments' capacity within the SLO; a plan's discrete segments usually give more
//!   than the rate it was made for, so a forecast that creeps up costs no transition until it
//!   needs one), or the measured load with headroom does; the new rate is the forecast plus one
//!   `step_up`, so that one scale-up covers the next stretch of a ramp. An **alarm**
//!   ([`Controller::alarm`]) does the same between windows when a short measurement already
//!   passes that capacity, and takes along the services past 85 % (`NEAR`) of theirs.
//! - **down only when it saves a GPU, on evidence and slowly**: the services whose forecast
//!   plus a step is below 85 % of their capacity (plus 5 % below 95 % while the controller is
//!   calm: [`Controller::calm`], and for a smooth service, one whose burstiness is below 5 %
//!   (`SMOOTH`), while the day's churn budget lasts), each on a window of at least `min_requests`
//!   requests, are lowered to it plus a 5 % margin (at most `max_step_down` of the planned rate
//!   at once, unless the last `down_after_s` of load is further below: then to its highest
//!   window over `1 - max_step_down`; without the margin the next few per cent of load undid it), never below the top
//!   of the service's noise (the forecast's `envelope`: a scale-down to the middle of noisy rows
//!   was undone by the next high row), when the
//!   GPCs that frees (with those no segment holds) are expected to be at least `1 + hysteresis`
//!   GPUs (on a node whose segments hold less than two GPUs, half of what they hold), have been
//!   for `down_after_s`, never within `warmup_s` of the start or of the first traffic, and at
//!   most once per `down_after_s`. A window with too little traffic (a cold start, clients not
//!   connected yet) keeps the service's capacity; such windows for `down_after_s` once the node
//!   is warm mean the service has stopped, and it goes down to its forecast (the floor
//!   `min_rate` where nothing is foreseen) without the `max_step_down` limit. A scale-down whose
//!   plan turns out to need as many GPUs is not applied ([`Controller::saves_nothing`]). A service that has been such a
//!   candidate for `down_after_s` goes down with any scale-up that happens meanwhile, rather
//!   than in a transition of its own later (the same evidence as a scale-down of its own: after
//!   5 minutes, a fifth of those lowered on the noisy trace were raised again within the hour).
//! - a **churn budget**: at most `max_changes_per_hour` transitions in any hour, and at most
//!   24 times it over the last day (that rate times the hours since the start over the first
//!   day), counting every transition; past either, scale-downs and scale-ups ahead of need wait;
//!   a scale-up at need (a measured load, with headroom, past the capacity) never does, nor one
//!   whose forecast is past twice the capacity (`JUMP`: a service that turns on at this hour
//!   every day). The day's count is what lets the scale-ups at need of a noisy day be paid back
//!   by scale-downs that wait (an hourly budget alone let 51-54 re-plans a day through on the
//!   noisy traces, against the 48 it names); past it, a scale-down that frees at least half the
//!   GPUs in use (`BIG_DOWN`: the fall after a day's peak) still goes within the hour's budget.
//! - **back-off**: after a transition failed or was refused, or applied only in part (the node
//!   too small for the rates), no attempt for `backoff_s` (doubled per consecutive one up to
//!   `backoff_max_s`), unless a service's measured load passes what the failed attempt wanted.
//!
//! An **alarm** needs evidence too: at least `min_requests` in its short measurement.

use std::collections::VecDeque;

use crate::forecast::{DAY_S, Forecast, History};
use crate::settings::Settings;

/// A transition raises, besides the services whose forecast passed their capacity, those whose
/// forecast is past this share of it.
const NEAR: f64 = 0.85;

/// A scale-up ahead of need for a forecast past this many times the capacity does not wait
/// for the churn budget (see [`Controller::observe`]).
const JUMP: f64 = 2.0;

/// A scale-down plans this much past the forecast: one lowered to the forecast itself was
/// raised again by the next 10 minutes' few per cent (a flap: two transitions for nothing; 59.7
/// re-plans a day on the 12-service trace of `scripts/bench/day-results.md`, 51 with this).
const DOWN_MARGIN: f64 = 0.05;

/// A controller that has used at most this share of its churn budget (over the last day, or
/// since it started, counting at least an hour) lowers services on a narrower band (see
/// [`Controller::calm`]). The rest is kept for the scale-ups at need that never wait: at 1 (the
/// narrower band up to the day's budget) the noisy trace 4 re-planned 48.3 times a day; at 0.8
/// traces 1 and 2 (40 a day) take 1.1-1.5 % fewer GPU-hours than at 0.5 and the six others the
/// same (`scripts/bench/day-results.md`, tenth pass).
const CALM_SHARE: f64 = 0.8;

/// A service whose burstiness (the median distance of the last hour's windows from the line
/// through them) is below this is lowered on the narrower band (see [`Controller::calm`]) while
/// the day's churn budget lasts, however much of it is spent: its forecast is as good as the
/// band. On the eight traces of `scripts/bench/day-results.md` (eleventh pass): 0.5-3.9 % fewer
/// GPU-hours on six, the same on one, 0.8 % more on one, at most 47.7 re-plans a day (at 8 %:
/// 0.2 % more GPU-hours over the eight).
const SMOOTH: f64 = 0.05;

/// Past the day's churn budget, a scale-down still goes (within the hour's) when it frees at
/// least this share of the GPUs in use: the fall after a day's peak, where the budget the
/// ramp's scale-ups at need spent kept a node at 35 GPUs for 2.3 hours with 12 enough
/// (`scripts/bench/day-results.md`, tenth pass).
const BIG_DOWN: f64 = 0.5;

/// On the narrower band a service is lowered when its forecast plus [`DOWN_MARGIN`] is below
/// this share of what its plan serves (forecast plus `step_up` below [`NEAR`] otherwise).
const CALM_NEAR: f64 = 0.95;

/// Seconds of the alarm's most recent measurement (see [`Controller::alarm`]). One second: a
/// jump that lands between two of the alarm's looks is met at its height the second after it
/// (over 2 s the look averaged it with the second before: an on/off service going from 38 to
/// 2,384 req/s was planned for 1,463 and needed a second transition 46 s later).
pub const RECENT_S: f64 = 1.0;

/// How many Poisson standard deviations the most recent measurement's rate is taken below its
/// count: a second is few requests (100 at 100 req/s may read 80-120), and the alarm sizes on
/// the larger of it and the short period's rate.
const RECENT_SIGMAS: f64 = 2.0;

/// What one service saw over a window.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Observation {
    /// Requests per second over the window.
    pub rate: f64,
    /// Requests counted in the window.
    pub requests: f64,
}

impl Observation {
    /// A window of `seconds` that counted `requests`.
    pub fn of(requests: f64, seconds: f64) -> Observation {
        Observation { rate: if seconds > 0.0 { requests / seconds } else { 0.0 }, requests }
    }

    /// Whether this short measurement is past `capacity`, on at least `min_requests` requests:
    /// what starts an alarm, and what stops a scale-down between its steps.
    pub fn past(&self, capacity: f64, min_requests: f64) -> bool {
        self.rate > capacity * (1.0 + 1e-9) && self.requests >= min_requests
    }

    /// The rate the count supports at [`RECENT_SIGMAS`] Poisson deviations below it (0 for an
    /// empty window).
    fn rate_at_least(&self) -> f64 {
        if !(self.requests > 0.0 && self.rate.is_finite()) {
            return 0.0;
        }
        self.rate * (1.0 - RECENT_SIGMAS / self.requests.sqrt()).max(0.0)
    }
}

/// The load an alarm meets: the short period's rate, or the most recent second's where that is
/// surely higher (a jump inside the short period, met at its height rather than at its average
/// with what came before). The controller sizes on it and the executor orders steps by it.
pub fn alarm_rate(short: &Observation, recent: Option<&Observation>) -> f64 {
    short.rate.max(recent.map_or(0.0, Observation::rate_at_least))
}

/// Which way a decision goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Up,
    Down,
    /// Some services up, others down.
    Both,
}

/// A decision to re-plan: the rates to plan for and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Decision {
    pub target: Vec<f64>,
    pub direction: Direction,
    /// One line per service that changes: `name 120.0 -> 180.0/s (forecast ...)`.
    pub reason: String,
}

/// The decision maker (see the module doc).
#[derive(Debug, Clone)]
pub struct Controller {
    settings: Settings,
    names: Vec<String>,
    /// The rates the running plan was made for.
    planned: Vec<f64>,
    /// What the running plan can serve within the SLO, per service.
    capacity: Vec<f64>,
    history: Vec<History>,
    /// Since when a scale-down has been expected to free a GPU.
    low_since: Option<f64>,
    /// Per service, since when it has been a scale-down candidate without a break.
    low_each: Vec<Option<f64>>,
    /// Per service, since when every window has seen fewer than `min_requests`.
    quiet_since: Vec<Option<f64>>,
    /// GPCs each service's segments hold, and a GPU's GPCs.
    gpcs: Vec<f64>,
    gpcs_per_gpu: f64,
    /// GPUs the running map uses.
    gpus: f64,
    started_s: f64,
    /// When traffic was first seen (the warm-up runs from there too).
    first_traffic_s: Option<f64>,
    last_down_s: f64,
    /// Times of the transitions applied over the last day (the churn budget's window where
    /// that is longer): for the churn budget and [`Controller::calm`].
    changes: VecDeque<f64>,
    backoff_until_s: f64,
    backoff_s: f64,
    /// The rates the attempt that started the back-off wanted.
    blocked: Option<Vec<f64>>,
    last_forecast: Vec<Forecast>,
}

impl Controller {
    /// A controller started at `now_s` for services `names` whose running plan was made for
    /// `planned` (the rates the node was deployed for).
    pub fn new(settings: Settings, names: Vec<String>, planned: Vec<f64>, now_s: f64) -> Self {
        let n = names.len();
        let mut history = vec![History::default(); n];
        for (h, r) in history.iter_mut().zip(&planned) {
            h.seed(r / (1.0 + settings.headroom));
        }
        let zero = Forecast { level: 0.0, trend: 0.0, season: 0.0, burstiness: 0.0, swing: 0.0, value: 0.0, envelope: 0.0 };
        Controller {
            settings,
            names,
            capacity: planned.clone(),
            planned,
            history,
            low_since: None,
            low_each: vec![None; n],
            quiet_since: vec![None; n],
            gpcs: vec![0.0; n],
            gpcs_per_gpu: 7.0,
            gpus: 0.0,
            started_s: now_s,
            first_traffic_s: None,
            last_down_s: f64::NEG_INFINITY,
            changes: VecDeque::new(),
            backoff_until_s: f64::NEG_INFINITY,
            backoff_s: settings.backoff_s,
            blocked: None,
            last_forecast: vec![zero; n],
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The rates the running plan was made for.
    pub fn planned(&self) -> &[f64] {
        &self.planned
    }

    /// What the running plan can serve, per service.
    pub fn capacity(&self) -> &[f64] {
        &self.capacity
    }

    /// The running plan can serve `capacity` (per service, within the SLO; from its segments'
    /// profiled throughput). An entry that is not a positive number keeps the planned rate.
    pub fn set_capacity(&mut self, capacity: &[f64]) {
        self.capacity.resize(self.planned.len(), 0.0);
        for (i, c) in self.capacity.iter_mut().enumerate() {
            *c = capacity.get(i).copied().filter(|c| c.is_finite() && *c > 0.0).unwrap_or(self.planned[i]).max(self.planned[i]);
        }
    }

    /// The running plan holds `gpcs` per service on `gpus` GPUs of `gpcs_per_gpu` GPCs (what a
    /// scale-down may free: the GPCs its services need less, and those no segment holds).
    pub fn set_gpcs(&mut self, gpcs: &[f64], gpcs_per_gpu: f64, gpus: f64) {
        self.gpus = if gpus.is_finite() { gpus.max(0.0) } else { 0.0 };
        self.gpcs = (0..self.planned.len()).map(|i| gpcs.get(i).copied().filter(|g| g.is_finite()).unwrap_or(0.0).max(0.0)).collect();
        if gpcs_per_gpu.is_finite() && gpcs_per_gpu > 0.0 {
            self.gpcs_per_gpu = gpcs_per_gpu;
        }
    }

    /// A scale-down at `now_s` would have freed no GPU: wait `down_after_s` before the next.
    pub fn saves_nothing(&mut self, now_s: f64) {
        self.last_down_s = now_s;
        self.low_since = None;
    }

    /// The last forecast of each service.
    pub fn forecasts(&self) -> &[Forecast] {
        &self.last_forecast
    }

    /// Whether the hour's churn budget allows a change now: at most `n` changes in any
    /// `3600 n / r` seconds, `r` the budget per hour and `n` its whole part (at least 1), so that
    /// a fractional budget means what it says (1.5 an hour: one in any 40 minutes, not two in an
    /// hour).
    fn budget_left(&self, now_s: f64) -> bool {
        let (n, window) = budget_window(self.settings.max_changes_per_hour);
        self.changes_within(now_s, window) < n
    }

    /// The share of the day's churn budget spent at `now_s`: transitions over the last day
    /// against the budget's rate times a day (times the hours since the start where that is
    /// less, counted as at least an hour). From 1, scale-downs and scale-ups ahead of need wait;
    /// at most [`CALM_SHARE`], the controller is calm. Exported live as
    /// `parva_follow_churn_budget_used`.
    pub fn budget_used(&self, now_s: f64) -> f64 {
        let span_h = (now_s - self.started_s).clamp(3600.0, DAY_S) / 3600.0;
        self.changes_within(now_s, DAY_S) as f64 / (self.settings.max_changes_per_hour * span_h)
    }

    /// Transitions applied in the last `seconds` before `now_s` (at most a day, or the churn
    /// budget's window: [`Controller::applied`] forgets older ones).
    fn changes_within(&self, now_s: f64, seconds: f64) -> usize {
        self.changes.iter().filter(|t| now_s - *t < seconds).count()
    }

    /// Whether the controller has re-planned at most [`CALM_SHARE`] of its churn budget's rate
    /// over the last day (since it started where that is less, counted as at least an hour).
    /// A calm fleet (the low-rate one of `scripts/bench/day-results.md`: 14 re-plans a day of
    /// the 48 allowed; the smooth ones: 40) then lowers its services on a narrower band: the
    /// budget it leaves unused buys GPU-hours, and a fleet that re-plans more often keeps the
    /// wider band that spares it transitions.
    fn calm(&self, now_s: f64) -> bool {
        self.budget_used(now_s) <= CALM_SHARE
    }

    /// The window ending at `now_s` saw `seen` (one per service, in `names`' order): the rates
    /// to re-plan for, or `None` to keep the running plan. Call [`Controller::applied`] or
    /// [`Controller::refused`] with the outcome.
    pub fn observe(&mut self, now_s: f64, seen: &[Observation]) -> Option<Decision> {
        let s = self.settings;
        for (h, o) in self.history.iter_mut().zip(seen) {
            h.push(now_s, o.rate, s.ewma);
        }
        if self.first_traffic_s.is_none() && seen.iter().any(|o| o.requests > 0.0) {
            self.first_traffic_s = Some(now_s);
        }
        let forecasts: Vec<Forecast> = self.history.iter().map(|h| h.forecast(now_s, &s)).collect();
        self.last_forecast = forecasts.clone();
        let warm = now_s - self.started_s >= s.warmup_s && self.first_traffic_s.is_some_and(|t| now_s - t >= s.warmup_s);
        // The forecast, and never less than the measured load with headroom (the level lags a
        // rise; the alarm and this meet it).
        let want: Vec<f64> = forecasts
            .iter()
            .zip(seen)
            .map(|(f, o)| f.value.max(o.rate * (1.0 + s.headroom)).max(s.min_rate))
            .collect();
        let mut target = self.planned.clone();
        let (mut up, mut down) = (Vec::new(), Vec::new());
        for i in 0..self.names.len() {
            if want[i] > self.capacity[i] * (1.0 + 1e-9) {
                target[i] = want[i];
                up.push(i);
            }
        }
        // Down: each service with evidence to its forecast (at most max_step_down of its planned
        // rate at once), when that is expected to free a GPU's GPCs with the hysteresis to
        // spare, and has been for down_after_s.
        // The band a service's forecast must fall through before it is lowered.
        // A calm controller lowers every service on the narrower band, a busy one only the smooth
        // services (while the day's budget lasts): their forecast is as good as the band.
        let calm = self.calm(now_s);
        // Whether the day's churn budget lasts (past it, scale-downs wait too).
        let day = self.budget_used(now_s) < 1.0;
        // GPCs no segment holds, then what each lowered service would give back.
        let held: f64 = self.gpcs.iter().sum();
        let mut freed = (self.gpus * self.gpcs_per_gpu - held).max(0.0);
        for (i, w) in want.iter().enumerate() {
            let busy = seen.get(i).is_some_and(|o| o.requests >= s.min_requests);
            if busy {
                self.quiet_since[i] = None;
            } else {
                self.quiet_since[i].get_or_insert(now_s);
            }
            // A quiet window is no evidence (a cold start, clients not connected yet); quiet
            // windows for down_after_s once the node is warm are: the service has stopped (an
            // office's service at night), and it goes down to its forecast at once.
            let stopped = warm && self.quiet_since[i].is_some_and(|t| now_s - t >= s.down_after_s);
            let evidence = busy || stopped;
            let floor = if stopped { 0.0 } else { self.step_down_floor(i, now_s) };
            // No lower than the top of the service's noise (the next high window would undo
            // it), unless it has stopped (the last hour's line still holds its traffic).
            let top = if stopped { 0.0 } else { forecasts[i].envelope };
            let to = w.max(top).max(floor).max(s.min_rate);
            // Below what the last step up planned for by more than the step: a ramp's step is
            // not given back while the load stays where it was.
            let to = (to * (1.0 + DOWN_MARGIN)).min(self.planned[i]);
            let narrow = calm || (day && forecasts[i].burstiness < SMOOTH);
            let (band_step, band_near) = if narrow { (DOWN_MARGIN, CALM_NEAR) } else { (s.step_up, NEAR) };
            if !up.contains(&i) && evidence && to < self.planned[i] * (1.0 - 1e-9) && w * (1.0 + band_step) < self.capacity[i] * band_near {
                down.push((i, to));
                freed += self.gpcs[i] * (1.0 - to / self.capacity[i]);
                self.low_each[i].get_or_insert(now_s);
            } else {
                self.low_each[i] = None;
            }
        }
        // Worth it when it frees a GPU with the hysteresis to spare; on a node whose segments
        // hold less than two GPUs' GPCs, half of what they hold (room for jobs, or for the
        // node's other tenants) with the hysteresis to spare.
        let worth = self.gpcs_per_gpu.min(held / 2.0).max(1.0) * (1.0 + s.hysteresis);
        let down_ready = if freed >= worth {
            let since = *self.low_since.get_or_insert(now_s);
            warm && now_s - since >= s.down_after_s && now_s - self.last_down_s >= s.down_after_s && now_s >= self.backoff_until_s
        } else {
            self.low_since = None;
            false
        };
        let measured: Vec<f64> = seen.iter().map(|o| o.rate).collect();
        let mut go_up = !up.is_empty();
        if go_up && now_s < self.backoff_until_s && !self.past_blocked(&up, &measured) {
            // Backing off: only a service whose measured load passed what the failed attempt
            // wanted is worth another try now.
            go_up = false;
        }
        // A scale-up ahead of need (the forecast, not the measured load with headroom, past the
        // capacity) counts against the churn budget; one at need never waits, nor one for a
        // forecast past JUMP times the capacity (a service that turns on at this hour every day:
        // waiting, the alarm would meet a load its plan cannot serve for a transition's length).
        let needed = up.iter().any(|&i| measured.get(i).is_some_and(|m| m * (1.0 + s.headroom) > self.capacity[i]) || want[i] > self.capacity[i] * JUMP);
        let hour = self.budget_left(now_s);
        if go_up && !needed && !(hour && day) {
            go_up = false;
        }
        // Past the day's budget, only a scale-down that frees half the GPUs in use is worth one.
        let go_down = down_ready && hour && (day || freed >= BIG_DOWN * self.gpus * self.gpcs_per_gpu);
        if !go_up && !go_down {
            return None;
        }
        if go_up {
            // A transition happens anyway: services close to their capacity go up with it,
            // rather than in a transition of their own a few windows later.
            for i in 0..self.names.len() {
                if !up.contains(&i) && !down.iter().any(|d| d.0 == i) && want[i] > self.capacity[i] * NEAR {
                    target[i] = want[i].max(self.planned[i]);
                    up.push(i);
                }
            }
            // One step past the forecast: the next few windows of a ramp need no transition.
            for &i in &up {
                target[i] = target[i].max(want[i] * (1.0 + s.step_up));
            }
        } else {
            up.clear();
        }
        // A scale-up happens anyway: services low for down_after_s go down with it (after the
        // warm-up, on the same evidence as a scale-down of their own), rather than in a
        // transition of their own.
        let down: Vec<usize> = if go_down || (go_up && warm) {
            let low_each = &self.low_each;
            let down: Vec<(usize, f64)> = down.into_iter().filter(|&(i, _)| go_down || low_each[i].is_some_and(|t| now_s - t >= s.down_after_s)).collect();
            down.iter().map(|&(i, to)| {
                target[i] = to;
                i
            }).collect()
        } else {
            Vec::new()
        };
        let direction = match (up.is_empty(), down.is_empty()) {
            (false, true) => Direction::Up,
            (true, _) => Direction::Down,
            _ => Direction::Both,
        };
        let mut reason = up
            .iter()
            .chain(&down)
            .map(|&i| {
                let f = &forecasts[i];
                format!(
                    "{} {:.1} -> {:.1}/s (seen {:.1}/s; level {:.1}, trend {:.1}, season {:.1}, burstiness {:.0} %)",
                    self.names[i],
                    self.planned[i],
                    target[i],
                    seen.get(i).map_or(0.0, |o| o.rate),
                    f.level,
                    f.trend,
                    f.season,
                    f.burstiness * 100.0
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        if go_down {
            let pack = format!("expected to free {:.1} of {} GPUs", freed / self.gpcs_per_gpu, self.gpus);
            reason = if reason.is_empty() { pack } else { format!("{reason}; {pack}") };
        }
        Some(Decision { target, direction, reason })
    }

    /// How low one scale-down may take service `i` at `now_s`: it gives up at most
    /// `max_step_down` of its planned rate at once, or, where the load of the last
    /// `down_after_s` is further below, goes down to that load's highest window with the same
    /// share to spare (`peak / (1 - max_step_down)`: twice it at the default). A service that
    /// turns off at the end of the day (23,000 -> 450 req/s on trace 5) went down in halvings,
    /// one per 20-60 minutes: over four hours at 2-60 times its load.
    fn step_down_floor(&self, i: usize, now_s: f64) -> f64 {
        let kept = 1.0 - self.settings.max_step_down;
        if kept <= 0.0 {
            return 0.0;
        }
        let step = self.planned[i] * kept;
        match self.history[i].max_in(now_s - self.settings.down_after_s, now_s) {
            Some(peak) => step.min(peak / kept),
            None => step,
        }
    }

    /// Whether, while backing off, one of `up` has a measured rate past what the attempt that
    /// started the back-off wanted for it.
    fn past_blocked(&self, up: &[usize], measured: &[f64]) -> bool {
        up.iter().any(|&i| {
            let m = measured.get(i).copied().unwrap_or(0.0);
            m > self.capacity[i] && self.blocked.as_ref().is_none_or(|b| m > b.get(i).copied().unwrap_or(0.0))
        })
    }

    /// Between windows: what each service saw over a short period (`short`, one per service)
    /// and over its last [`RECENT_S`] seconds (`recent`; may be empty). A service already past
    /// what its plan can serve, on at least `min_requests`, is planned up at once, to its
    /// forecast or the measured rate with headroom, whichever is more, plus a step; the measured
    /// rate is [`alarm_rate`]'s (a burst that began inside the short period is met at its
    /// height, not at its average with what came before); `None` otherwise. The
    /// services whose measured load with headroom, or last forecast, is past 85 % (`NEAR`) of their
    /// capacity go up with it (to that plus a step, never below their plan).
    pub fn alarm(&mut self, now_s: f64, short: &[Observation], recent: &[Observation]) -> Option<Decision> {
        let s = self.settings;
        let mut target = self.planned.clone();
        let mut up = Vec::new();
        for (i, o) in short.iter().enumerate().take(self.names.len()) {
            if o.past(self.capacity[i], s.min_requests) {
                let rate = alarm_rate(o, recent.get(i));
                target[i] = (rate * (1.0 + s.headroom)).max(self.last_forecast[i].value).max(s.min_rate) * (1.0 + s.step_up);
                up.push(i);
            }
        }
        if up.is_empty() {
            return None;
        }
        if now_s < self.backoff_until_s && !self.past_blocked(&up, &short.iter().map(|o| o.rate).collect::<Vec<_>>()) {
            return None;
        }
        // A transition happens anyway: services whose short measurement or last forecast is
        // close to their capacity go up with it (the rows of a trace, and a day's traffic, move
        // many services at once: each would otherwise be an alarm of its own seconds later).
        let alarmed = up.len();
        for (i, o) in short.iter().enumerate().take(self.names.len()) {
            let want = (o.rate * (1.0 + s.headroom)).max(self.last_forecast[i].value).max(s.min_rate);
            if !up.contains(&i) && want > self.capacity[i] * NEAR {
                target[i] = want.max(self.planned[i]) * (1.0 + s.step_up);
                up.push(i);
            }
        }
        let reason = up
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let why = if k < alarmed { "alarm" } else { "close to its plan" };
                let over = if k < alarmed { ", over the plan" } else { "" };
                format!("{} {:.1} -> {:.1}/s ({why}: {:.1}/s measured{over})", self.names[i], self.planned[i], target[i], short[i].rate)
            })
            .collect::<Vec<_>>()
            .join("; ");
        Some(Decision { target, direction: Direction::Up, reason })
    }

    /// The plan for `achieved` runs from `now_s`; `changed`: it changed what runs (counted
    /// against the churn budget). `wanted`: the decision's target; where `achieved` is less (the
    /// node is too small), the controller backs off as after a refusal.
    pub fn applied(&mut self, now_s: f64, achieved: Vec<f64>, changed: bool, wanted: &[f64]) {
        let partial = achieved.iter().zip(wanted).any(|(a, w)| *a < w * (1.0 - 1e-9));
        let down = achieved.iter().zip(&self.planned).any(|(a, p)| a < p);
        self.low_since = None;
        self.low_each.iter_mut().for_each(|l| *l = None);
        self.planned = achieved;
        let cap = self.capacity.clone();
        self.set_capacity(&cap);
        if changed {
            // Only the last day (or the budget's window, where longer) counts for anything.
            let keep = budget_window(self.settings.max_changes_per_hour).1.max(DAY_S);
            while self.changes.front().is_some_and(|t| now_s - t >= keep) {
                self.changes.pop_front();
            }
            self.changes.push_back(now_s);
            if down {
                self.last_down_s = now_s;
            }
        }
        if partial {
            self.refused(now_s, wanted);
        } else {
            self.backoff_s = self.settings.backoff_s;
            self.backoff_until_s = f64::NEG_INFINITY;
            self.blocked = None;
        }
    }

    /// The transition for `wanted` failed or was refused at `now_s`: back off. Returns the
    /// seconds until the next try.
    pub fn refused(&mut self, now_s: f64, wanted: &[f64]) -> f64 {
        self.blocked = Some(wanted.to_vec());
        self.backoff_until_s = now_s + self.backoff_s;
        let waited = self.backoff_s;
        self.backoff_s = (self.backoff_s * 2.0).min(self.settings.backoff_max_s);
        waited
    }
}

/// The churn budget `per_hour` as at most `n` changes in any window of the returned seconds
/// (see [`Controller::budget_left`]).
fn budget_window(per_hour: f64) -> (usize, f64) {
    let per_hour = if per_hour.is_finite() && per_hour > 0.0 { per_hour } else { 1.0 };
    let n = per_hour.floor().max(1.0);
    (n as usize, 3600.0 * n / per_hour)
}

#[cfg(test)]
#[path = "controller_tests.rs"]
mod tests;
