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
//! - **down only when it saves a GPU, on evidence and slowly**: the services whose forecast is
//!   more than a step below their capacity, each on a window of at least `min_requests`
//!   requests, are lowered to it plus a 5 % margin (at most `max_step_down` of the planned rate
//!   at once; without the margin the next few per cent of load undid it) when the
//!   GPCs that frees (with those no segment holds) are expected to be at least `1 + hysteresis`
//!   GPUs (on a node whose segments hold less than two GPUs, half of what they hold), have been
//!   for `down_after_s`, never within `warmup_s` of the start or of the first traffic, and at
//!   most once per `down_after_s`. A window with too little traffic (a cold start, clients not
//!   connected yet) keeps the service's capacity; such windows for `down_after_s` once the node
//!   is warm mean the service has stopped, and it goes down to its forecast (the floor
//!   `min_rate` where nothing is foreseen) without the `max_step_down` limit. A scale-down whose plan turns out to need as
//!   many GPUs is not applied ([`Controller::saves_nothing`]). A service that has been such a
//!   candidate for 5 minutes goes down with any scale-up that happens meanwhile, rather than in
//!   a transition of its own later.
//! - a **churn budget**: at most `max_changes_per_hour` transitions; past it, scale-downs and
//!   scale-ups ahead of need wait; a scale-up at need (a measured load, with headroom, past the
//!   capacity) never does, nor one whose forecast is past twice the capacity (`JUMP`: a
//!   service that turns on at this hour every day).
//! - **back-off**: after a transition failed or was refused, or applied only in part (the node
//!   too small for the rates), no attempt for `backoff_s` (doubled per consecutive one up to
//!   `backoff_max_s`), unless a service's measured load passes what the failed attempt wanted.
//!
//! An **alarm** needs evidence too: at least `min_requests` in its short measurement.

use std::collections::VecDeque;

use crate::forecast::{Forecast, History};
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

/// A service that has been a scale-down candidate for this long is lowered with any transition
/// that happens anyway (a scale-up of another service), rather than in one of its own later.
const PIGGYBACK_S: f64 = 300.0;

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
    /// Times of the transitions applied, for the churn budget.
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
        let zero = Forecast { level: 0.0, trend: 0.0, season: 0.0, burstiness: 0.0, value: 0.0 };
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

    /// Whether the churn budget allows a change now: at most `n` changes in any `3600 n / r`
    /// seconds, `r` the budget per hour and `n` its whole part (at least 1), so that a fractional
    /// budget means what it says (1.5 an hour: one in any 40 minutes, not two in an hour).
    fn budget_left(&mut self, now_s: f64) -> bool {
        let (n, window) = budget_window(self.settings.max_changes_per_hour);
        while self.changes.front().is_some_and(|t| now_s - t >= window) {
            self.changes.pop_front();
        }
        self.changes.len() < n
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
            let floor = if stopped { 0.0 } else { self.planned[i] * (1.0 - s.max_step_down) };
            let to = w.max(floor).max(s.min_rate);
            // Below what the last step up planned for by more than the step: a ramp's step is
            // not given back while the load stays where it was.
            let to = (to * (1.0 + DOWN_MARGIN)).min(self.planned[i]);
            if !up.contains(&i) && evidence && to < self.planned[i] * (1.0 - 1e-9) && w * (1.0 + s.step_up) < self.capacity[i] * NEAR {
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
        let budget = self.budget_left(now_s);
        if go_up && !needed && !budget {
            go_up = false;
        }
        let go_down = down_ready && budget;
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
        // A scale-up happens anyway: services low for PIGGYBACK_S go down with it (after the
        // warm-up, on the same evidence), rather than in a transition of their own.
        let down: Vec<usize> = if go_down || (go_up && warm) {
            let low_each = &self.low_each;
            let down: Vec<(usize, f64)> = down.into_iter().filter(|&(i, _)| go_down || low_each[i].is_some_and(|t| now_s - t >= PIGGYBACK_S)).collect();
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
    /// rate is the larger of the two periods' (a burst that began inside the short period is
    /// met at its height, not at its average with what came before); `None` otherwise. The
    /// services whose measured load with headroom, or last forecast, is past 85 % (`NEAR`) of their
    /// capacity go up with it (to that plus a step, never below their plan).
    pub fn alarm(&mut self, now_s: f64, short: &[Observation], recent: &[Observation]) -> Option<Decision> {
        let s = self.settings;
        let mut target = self.planned.clone();
        let mut up = Vec::new();
        for (i, o) in short.iter().enumerate().take(self.names.len()) {
            if o.rate > self.capacity[i] * (1.0 + 1e-9) && o.requests >= s.min_requests {
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
mod tests {
    use super::*;

    use crate::forecast::DAY_S;

    fn obs(rates: &[f64], window: f64) -> Vec<Observation> {
        rates.iter().map(|r| Observation { rate: *r, requests: r * window }).collect()
    }

    fn ctl(settings: Settings, planned: &[f64]) -> Controller {
        let mut c = Controller::new(settings, planned.iter().enumerate().map(|(i, _)| format!("s{i}")).collect(), planned.to_vec(), 0.0);
        // Each service fills 4 GPUs of 7 GPCs: halving one frees 2 GPUs.
        c.set_gpcs(&vec![28.0; planned.len()], 7.0, 4.0 * planned.len() as f64);
        c
    }

    /// Regression (issue 32, live): load started 23 s after the node was ready; the first window
    /// saw about 1 s of traffic and the controller scaled every service down at once.
    #[test]
    fn a_nearly_empty_first_window_keeps_the_capacity() {
        let s = Settings { window_s: 120.0, ..Settings::default() };
        let mut c = ctl(s, &[100.0, 200.0]);
        // 1 s of traffic in a 120 s window.
        let first = vec![Observation::of(100.0, 120.0), Observation::of(200.0, 120.0)];
        assert_eq!(c.observe(120.0, &first), None, "no scale-down on a nearly empty window");
        // Then the planned rates: nothing to do.
        for k in 2..40 {
            assert_eq!(c.observe(120.0 * k as f64, &obs(&[90.0, 180.0], 120.0)), None, "window {k}");
        }
        // Even a truly quiet start waits out the warm-up and the sustained-low period.
        let mut c = ctl(s, &[100.0]);
        let mut first_down = None;
        for k in 1..30 {
            if let Some(d) = c.observe(60.0 * k as f64, &obs(&[10.0], 60.0)) {
                first_down = Some((60.0 * k as f64, d));
                break;
            }
        }
        let (at, d) = first_down.expect("a sustained quiet period scales down");
        assert!(at >= s.warmup_s.max(s.down_after_s), "scaled down at {at} s");
        assert_eq!(d.direction, Direction::Down);
        assert!((d.target[0] - 50.0 * 1.05).abs() < 1e-9, "at most half at once, and the 5 % margin: {:?}", d.target);
    }

    #[test]
    fn a_rise_is_planned_for_at_once_and_a_fall_only_when_sustained() {
        let s = Settings { headroom: 0.1, burst_factor: 0.0, ..Settings::default() };
        let mut c = ctl(s, &[110.0]);
        for k in 1..=10 {
            assert_eq!(c.observe(60.0 * k as f64, &obs(&[100.0], 60.0)), None);
        }
        let d = c.observe(660.0, &obs(&[200.0], 60.0)).expect("up at once");
        assert_eq!(d.direction, Direction::Up);
        assert!(d.target[0] >= 220.0 - 1e-9, "{d:?}");
        c.applied(660.0, d.target.clone(), true, &d.target);
        // A one-window dip does nothing.
        assert_eq!(c.observe(720.0, &obs(&[50.0], 60.0)), None);
        assert_eq!(c.observe(780.0, &obs(&[200.0], 60.0)), None);
    }

    #[test]
    fn the_churn_budget_holds_scale_downs_and_never_scale_ups() {
        let s = Settings { max_changes_per_hour: 1.0, down_after_s: 0.0, warmup_s: 0.0, burst_factor: 0.0, ..Settings::default() };
        let mut c = ctl(s, &[100.0]);
        c.observe(60.0, &obs(&[100.0], 60.0));
        let d = c.observe(120.0, &obs(&[300.0], 60.0)).unwrap();
        c.applied(120.0, d.target.clone(), true, &d.target);
        // The budget is spent: a scale-down waits...
        let mut t = 180.0;
        while t < 3700.0 {
            if let Some(d) = c.observe(t, &obs(&[20.0], 60.0)) {
                assert!(t - 120.0 >= 3600.0, "a scale-down {t} s into the hour: {d:?}");
                break;
            }
            t += 60.0;
        }
        // ...a scale-up does not.
        let mut c = ctl(s, &[100.0]);
        let d = c.observe(60.0, &obs(&[300.0], 60.0)).unwrap();
        c.applied(60.0, d.target.clone(), true, &d.target);
        assert!(c.observe(120.0, &obs(&[900.0], 60.0)).is_some());
    }

    /// A service that turns on at 07:10 every day (40 -> 2,400 req/s) is planned up before it
    /// does on the second day, even with the hour's budget spent: waiting, the jump would be met
    /// by an alarm after it, on a plan for 40 req/s.
    #[test]
    fn a_forecast_jump_does_not_wait_for_the_churn_budget() {
        let s = Settings { max_changes_per_hour: 1.0, burst_factor: 0.0, ..Settings::default() };
        let on = 7.0 * 3600.0 + 600.0;
        let rate = |t: f64| if (t % DAY_S) < on { 40.0 } else { 2400.0 };
        let mut c = ctl(s, &[50.0]);
        let mut t = 60.0;
        while t < DAY_S + on - 600.0 {
            if let Some(d) = c.observe(t, &obs(&[rate(t)], 60.0)) {
                c.applied(t, d.target.clone(), true, &d.target);
                c.set_capacity(&d.target);
            }
            t += 60.0;
        }
        assert!(c.planned()[0] < 200.0, "down for the night: {:?}", c.planned());
        // The hour's one change is spent just before.
        let p = c.planned().to_vec();
        c.applied(t - 60.0, p.clone(), true, &p);
        let mut up = None;
        while t < DAY_S + on {
            if let Some(d) = c.observe(t, &obs(&[rate(t)], 60.0)) {
                up = Some((t, d));
                break;
            }
            t += 60.0;
        }
        let (at, d) = up.unwrap_or_else(|| panic!("planned up before the jump: {:?} {:?} {:?}", c.forecasts(), c.planned(), c.capacity()));
        assert!(at < DAY_S + on && d.target[0] >= 2400.0, "{at}: {d:?}");
    }

    /// Regression (trace 5 with its business-hours services at no load at night): a service
    /// with no traffic kept the capacity of its day all night (a quiet window is no evidence),
    /// 2,113 GPU-hours where it was 1,558 with 2 % at night. Quiet for `down_after_s` once
    /// warm, it goes down to the floor; one quiet window alone still keeps the capacity.
    #[test]
    fn a_service_quiet_for_down_after_goes_down_to_the_floor() {
        let s = Settings { down_after_s: 600.0, warmup_s: 0.0, burst_factor: 0.0, ..Settings::default() };
        let mut c = ctl(s, &[1000.0, 1000.0]);
        let mut t = 60.0;
        while t <= 600.0 {
            assert_eq!(c.observe(t, &obs(&[800.0, 800.0], 60.0)), None, "{t}");
            t += 60.0;
        }
        let mut down = None;
        while t <= 3600.0 {
            if let Some(d) = c.observe(t, &obs(&[800.0, 0.0], 60.0)) {
                down = Some((t, d));
                break;
            }
            t += 60.0;
        }
        let (at, d) = down.expect("down once quiet");
        // Quiet for down_after_s (the evidence), then a candidate for down_after_s.
        assert!(at >= 660.0 + 2.0 * 600.0 - 60.0, "{at}: {d:?}");
        assert!((d.target[1] - s.min_rate * (1.0 + DOWN_MARGIN)).abs() < 1e-9 && d.target[0] == 1000.0, "{d:?}");
    }

    /// A fractional budget means what it says: 1.5 an hour is one change in any 40 minutes (it
    /// was two an hour, the same as 2: the count of the last hour was compared with 1.5).
    #[test]
    fn a_fractional_churn_budget_spaces_changes_evenly() {
        assert_eq!(budget_window(3.0), (3, 3600.0));
        assert_eq!(budget_window(1.5), (1, 2400.0));
        assert_eq!(budget_window(0.5), (1, 7200.0));
        assert_eq!(budget_window(2.5), (2, 2880.0));
        let s = Settings { max_changes_per_hour: 1.5, ..Settings::default() };
        let mut c = ctl(s, &[100.0]);
        c.changes.push_back(0.0);
        assert!(!c.budget_left(2399.0), "one change in the last 40 minutes");
        assert!(c.budget_left(2400.0));
        // And a scale-up at need still never waits for it.
        let mut c = ctl(s, &[100.0]);
        let d = c.observe(60.0, &obs(&[300.0], 60.0)).unwrap();
        c.applied(60.0, d.target.clone(), true, &d.target);
        assert!(c.observe(120.0, &obs(&[900.0], 60.0)).is_some());
    }

    /// Regression (a 3-day trace of 10-minute rows, +-20 % noise): every row moved all services
    /// at once, and each that crossed its plan was an alarm of its own seconds after the last
    /// (88 alarms in 3 days). An alarm now takes the services close to their plan along.
    #[test]
    fn an_alarm_takes_the_services_close_to_their_plan_along() {
        let s = Settings { headroom: 0.0, burst_factor: 0.0, ..Settings::default() };
        let mut c = ctl(s, &[100.0, 100.0, 100.0]);
        // s0 over its plan, s1 at 90 % of it, s2 at half.
        let d = c.alarm(30.0, &obs(&[120.0, 90.0, 50.0], 10.0), &[]).expect("s0 is over its plan");
        assert_eq!(d.direction, Direction::Up);
        assert!((d.target[0] - 120.0 * (1.0 + s.step_up)).abs() < 1e-9, "{d:?}");
        assert!((d.target[1] - 100.0 * (1.0 + s.step_up)).abs() < 1e-9, "s1 goes along: {d:?}");
        assert_eq!(d.target[2], 100.0, "s2 keeps its plan: {d:?}");
        assert!(d.reason.contains("s0 100.0 -> 138.0/s (alarm") && d.reason.contains("s1 100.0 -> 115.0/s (close to its plan"), "{}", d.reason);
        // Nobody over the plan: no alarm, however close.
        assert_eq!(c.alarm(40.0, &obs(&[99.0, 99.0, 99.0], 10.0), &[]), None);
    }

    #[test]
    fn a_refusal_backs_off_exponentially_and_an_alarm_still_scales_up() {
        let s = Settings { backoff_s: 30.0, backoff_max_s: 100.0, burst_factor: 0.0, headroom: 0.1, ..Settings::default() };
        let mut c = ctl(s, &[100.0]);
        let d = c.observe(60.0, &obs(&[95.0], 60.0)).expect("forecast above plan");
        assert_eq!(c.refused(60.0, &d.target), 30.0);
        assert_eq!(c.refused(61.0, &d.target), 60.0);
        assert_eq!(c.refused(62.0, &[200.0]), 100.0);
        // While backing off, a rise up to what failed waits; past it, it does not.
        assert_eq!(c.observe(70.0, &obs(&[96.0], 60.0)), None);
        assert_eq!(c.observe(80.0, &obs(&[150.0], 60.0)), None);
        assert!(c.observe(90.0, &obs(&[250.0], 60.0)).is_some());
        assert_eq!(c.alarm(85.0, &obs(&[180.0], 10.0), &[]), None, "backing off, below what failed");
        let a = c.alarm(85.0, &obs(&[300.0], 10.0), &[]).unwrap();
        assert!(a.target[0] >= 330.0 - 1e-9 && a.reason.contains("alarm"), "{a:?}");
        // After the back-off, any overload counts again; but not on thin evidence.
        assert!(c.alarm(200.0, &obs(&[120.0], 10.0), &[]).is_some());
        assert_eq!(c.alarm(200.0, &[Observation { rate: 120.0, requests: 3.0 }], &[]), None, "3 requests are no evidence");
        assert_eq!(c.alarm(200.0, &obs(&[50.0], 10.0), &[]), None);
        // A burst that began 3 s into the short period: planned for at its height.
        let short = [Observation { rate: 0.7 * 100.0 + 0.3 * 400.0, requests: 1900.0 }];
        let a = c.alarm(300.0, &short, &obs(&[400.0], RECENT_S)).unwrap();
        assert!(a.target[0] >= 400.0 * 1.1, "{a:?}");
    }

    /// Regression (an on/off service, 38 -> 2,384 req/s between two looks): the alarm sized on
    /// the last 2 s, half of them before the jump, planned for 1,463 req/s, and a second
    /// transition had to follow the first. The last second meets the jump at its height; a
    /// small service's noisy second is taken two deviations below its count.
    #[test]
    fn regression_a_jump_between_two_looks_is_met_at_its_height() {
        let s = Settings { burst_factor: 0.0, headroom: 0.05, ..Settings::default() };
        let mut c = ctl(s, &[40.0, 100.0]);
        let short = [Observation::of(9.0 * 38.0 + 2384.0, 10.0), Observation::of(1000.0, 10.0)];
        let d = c.alarm(90_601.0, &short, &obs(&[2384.0, 100.0], RECENT_S)).expect("over the plan");
        let at_least = 2384.0 * (1.0 - 2.0 / 2384f64.sqrt());
        assert!(d.target[0] >= at_least * 1.05 * 1.15 - 1e-6 && d.target[0] > 2384.0, "{d:?}");
        // A noisy second of a service at 120/s (150 counted) is not taken at its count.
        let mut c = ctl(s, &[100.0]);
        let d = c.alarm(60.0, &[Observation::of(1200.0, 10.0)], &[Observation::of(150.0, 1.0)]).expect("over the plan");
        let lcb = 150.0 * (1.0 - 2.0 / 150f64.sqrt());
        assert!((d.target[0] - lcb * 1.05 * 1.15).abs() < 1e-6 && d.target[0] < 150.0 * 1.05 * 1.15, "{d:?}");
        assert_eq!(alarm_rate(&Observation::of(0.0, 1.0), None), 0.0);
        assert_eq!(alarm_rate(&Observation::of(50.0, 10.0), Some(&Observation::of(0.0, 1.0))), 5.0);
    }

    #[test]
    fn a_service_low_for_five_minutes_goes_down_with_a_scale_up_that_happens_anyway() {
        let s = Settings { warmup_s: 0.0, burst_factor: 0.0, headroom: 0.1, ..Settings::default() };
        let run = |rise_at: f64| {
            let mut c = ctl(s, &[110.0, 110.0]);
            let mut t = 0.0;
            // s0 falls to 40/s, s1 stays: too short for a scale-down of its own (15 minutes).
            while t + 60.0 < rise_at {
                t += 60.0;
                assert_eq!(c.observe(t, &obs(&[40.0, 100.0], 60.0)), None, "at {t} s");
            }
            c.observe(rise_at, &obs(&[40.0, 200.0], 60.0)).expect("s1 goes up at once")
        };
        // Low for 6 minutes when s1 rises: one transition for both.
        let d = run(420.0);
        assert_eq!(d.direction, Direction::Both, "{d:?}");
        assert!(d.target[1] >= 200.0 * 1.1 * 1.15 - 1e-9, "{d:?}");
        // At most half at once, and 5 % past it.
        assert!((d.target[0] - 55.0 * 1.05).abs() < 1e-9, "{d:?}");
        // Low for 2 minutes only: s0 keeps its plan.
        let d = run(180.0);
        assert_eq!(d.direction, Direction::Up, "{d:?}");
        assert_eq!(d.target[0], 110.0);
    }
}
