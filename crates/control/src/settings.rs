//! The controller's settings: one set, used by the day simulation and by live nodes alike.

use std::fmt;

/// How the controller forecasts the load it plans for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only the past windows: `max(last, EWMA) x (1 + headroom)` (parva's first controller).
    Reactive,
    /// The past windows, their trend, the same time of day on earlier days and the recent
    /// burstiness: plans for the highest load expected over the next `horizon` (see
    /// [`crate::forecast`]). The default.
    Forecast,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Reactive => "reactive",
            Mode::Forecast => "forecast",
        }
    }
}

/// The controller's settings (see [`crate::controller`] for how each is used).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Settings {
    pub mode: Mode,
    /// Seconds between the controller's looks at the measured rates.
    pub window_s: f64,
    /// Plans carry this much more rate than forecast (0.1 = 10 %).
    pub headroom: f64,
    /// A scale-down is made only when it is expected to free a GPU with this much to spare
    /// (0.25: the GPCs of 1.25 GPUs), and has been for `down_after_s`.
    pub hysteresis: f64,
    /// A scale-up plans this much above the forecast (0.2 = 20 %), so that a ramp costs one
    /// transition per step rather than one per window; the scale-down rule gives it back when
    /// the load does not follow.
    pub step_up: f64,
    /// Seconds of sustained low load before a scale-down; also the least time between two
    /// scale-downs. Scale-ups never wait.
    pub down_after_s: f64,
    /// At most this fraction of a service's planned rate is given up in one scale-down, unless
    /// the load of the last `down_after_s` is further below: then down to its highest window
    /// with this share to spare (`peak / (1 - max_step_down)`).
    pub max_step_down: f64,
    /// Weight of the newest window in the rate EWMA.
    pub ewma: f64,
    /// Seconds ahead a plan must cover (Forecast mode).
    pub horizon_s: f64,
    /// Headroom per unit of measured burstiness (the median relative distance of the last
    /// hour's windows from the line through them, Forecast mode).
    pub burst_factor: f64,
    /// A window in which a service got fewer requests than this is no evidence for a
    /// scale-down (a quiet window right after start-up, clients not connected yet).
    pub min_requests: f64,
    /// Seconds after the controller starts (and after its first traffic) in which it never
    /// scales down.
    pub warmup_s: f64,
    /// Transitions allowed per hour, and 24 times it over the last day (counting the scale-ups
    /// at need, which never wait); scale-downs and scale-ups ahead of need past either wait (past
    /// the day's, a scale-down that frees half the GPUs in use does not). With at most 80 % of
    /// it spent over the last day the controller is calm and lowers services on a narrower band
    /// (see `Controller::calm`).
    pub max_changes_per_hour: f64,
    /// Seconds to wait after a transition failed or was refused before the next try, doubled
    /// after each consecutive failure up to `backoff_max_s`.
    pub backoff_s: f64,
    pub backoff_max_s: f64,
    /// Each service is planned for at least this many requests/s, so that a quiet service keeps
    /// a ready process.
    pub min_rate: f64,
}

impl Default for Settings {
    /// The defaults and why (tuned on the four 3-day traces of 12-16 services of
    /// `scripts/bench/day.sh`, see `scripts/bench/day-results.md`): a 60 s window sees a change
    /// within a minute and the 10 s alarm a burst within seconds; 5 % headroom plus half the
    /// burstiness (the noise the last hour showed: at 0 the noisy fourth trace re-planned 77
    /// times a day, at 0.5 76 and 3 fewer a day on the bursty and the sine traces, 1 more on the
    /// first; at 1 the sine trace took 0.65x static's GPU-hours instead of 0.62x; the discrete
    /// segments add their own slack, and the up rule compares with what they can serve); a step
    /// up of 15 % over the forecast, so that a ramp costs a transition per step (at 0 % the
    /// controller re-planned every window of a ramp, ~83 times a day; at 20 % it kept 8 % more
    /// GPU-hours); a 10-minute horizon for the trend (at 30 minutes a ramp's first hour was
    /// over-provisioned by its extrapolation); 15 minutes of sustained low load before a
    /// scale-down, at most half a service's rate given up at once (or down to twice the last
    /// 15 minutes' peak where that is lower), and only when it frees 1.25 GPUs, so that a dip
    /// costs no two transitions; no scale-down in the first 5 minutes or on
    /// a window of fewer than 50 requests (a cold start); 2 changes an hour (since a
    /// transition's creations run as waves: 3 gave 46-52 re-plans a day on the three smoother
    /// traces and 77 on the noisy one, 2 gives 38-42 and 57 for 0.6-1.6 % more GPU-hours on
    /// three of them and 0.9 % fewer on the fourth; 1.5 gave 32-38 and 54 for 0.3-1.2 % more
    /// again), and 48 a day counting the scale-ups at need (the hour's budget alone let 51-54 a
    /// day through on the noisy traces; the day's holds them to 46-48 for -0.7 to +2.0 %
    /// GPU-hours).
    fn default() -> Self {
        Settings {
            mode: Mode::Forecast,
            window_s: 60.0,
            headroom: 0.05,
            hysteresis: 0.25,
            step_up: 0.15,
            down_after_s: 900.0,
            max_step_down: 0.5,
            ewma: 0.5,
            horizon_s: 600.0,
            burst_factor: 0.5,
            min_requests: 50.0,
            warmup_s: 300.0,
            max_changes_per_hour: 2.0,
            backoff_s: 30.0,
            backoff_max_s: 900.0,
            min_rate: 1.0,
        }
    }
}

/// A setting out of its range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{flag}: {rule}")]
pub struct BadSetting {
    pub flag: &'static str,
    pub rule: String,
}

impl Settings {
    /// The reactive controller of earlier releases, with these settings' window and headroom.
    pub fn reactive(self) -> Settings {
        Settings { mode: Mode::Reactive, ..self }
    }

    /// Check every setting's range; the error names the flag that sets it.
    pub fn check(&self) -> Result<(), BadSetting> {
        let bad = |flag: &'static str, rule: String| Err(BadSetting { flag, rule });
        let range = |v: f64, lo: f64, hi: f64| v.is_finite() && v >= lo && v <= hi;
        if !range(self.window_s, 1.0, 86_400.0) {
            return bad("--window", format!("must be 1 s to 1 day, found {}", self.window_s));
        }
        if !range(self.headroom, 0.0, 4.0) {
            return bad("--headroom", format!("must be in [0, 4] (a fraction), found {}", self.headroom));
        }
        if !(self.hysteresis.is_finite() && (0.0..1.0).contains(&self.hysteresis)) {
            return bad("--hysteresis", format!("must be in [0, 1) (a fraction), found {}", self.hysteresis));
        }
        if !range(self.step_up, 0.0, 4.0) {
            return bad("--step-up", format!("must be in [0, 4] (a fraction), found {}", self.step_up));
        }
        if !range(self.down_after_s, 0.0, 86_400.0) {
            return bad("--down-after", format!("must be 0 to 1 day, found {} s", self.down_after_s));
        }
        if !(self.max_step_down.is_finite() && self.max_step_down > 0.0 && self.max_step_down <= 1.0) {
            return bad("--max-step-down", format!("must be in (0, 1], found {}", self.max_step_down));
        }
        if !(self.ewma.is_finite() && self.ewma > 0.0 && self.ewma <= 1.0) {
            return bad("--ewma", format!("must be in (0, 1], found {}", self.ewma));
        }
        if !range(self.horizon_s, 0.0, 86_400.0) {
            return bad("--horizon", format!("must be 0 to 1 day, found {} s", self.horizon_s));
        }
        if !range(self.burst_factor, 0.0, 10.0) {
            return bad("--burst-factor", format!("must be in [0, 10], found {}", self.burst_factor));
        }
        if !range(self.min_requests, 0.0, 1e9) {
            return bad("--min-requests", format!("must be 0 or more, found {}", self.min_requests));
        }
        if !range(self.warmup_s, 0.0, 86_400.0) {
            return bad("--warmup-window", format!("must be 0 to 1 day, found {} s", self.warmup_s));
        }
        if !(self.max_changes_per_hour.is_finite() && self.max_changes_per_hour > 0.0 && self.max_changes_per_hour <= 3600.0) {
            return bad("--max-changes-per-hour", format!("must be in (0, 3600], found {}", self.max_changes_per_hour));
        }
        if !(range(self.backoff_s, 0.0, 86_400.0) && range(self.backoff_max_s, self.backoff_s, 86_400.0)) {
            return bad("--backoff", format!("must be 0 to 1 day, at most its maximum; found {} s (max {} s)", self.backoff_s, self.backoff_max_s));
        }
        if !(self.min_rate.is_finite() && self.min_rate > 0.0) {
            return bad("--min-rate", format!("must be a positive number of requests/s, found {}", self.min_rate));
        }
        Ok(())
    }
}

impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} controller: window {} s, headroom {} %, up in steps of {} %, down after {} s of freeing {} GPUs (at most {} % at once), {} changes/h",
            self.mode.name(),
            self.window_s,
            self.headroom * 100.0,
            self.step_up * 100.0,
            self.down_after_s,
            1.0 + self.hysteresis,
            self.max_step_down * 100.0,
            self.max_changes_per_hour
        )?;
        if self.mode == Mode::Forecast {
            write!(f, ", horizon {} s, burst factor {}", self.horizon_s, self.burst_factor)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_pass_their_own_check_and_each_range_names_its_flag() {
        Settings::default().check().unwrap();
        for (s, flag) in [
            (Settings { window_s: 0.5, ..Settings::default() }, "--window"),
            (Settings { hysteresis: 1.0, ..Settings::default() }, "--hysteresis"),
            (Settings { max_step_down: 0.0, ..Settings::default() }, "--max-step-down"),
            (Settings { ewma: 0.0, ..Settings::default() }, "--ewma"),
            (Settings { max_changes_per_hour: 0.0, ..Settings::default() }, "--max-changes-per-hour"),
            (Settings { min_rate: f64::NAN, ..Settings::default() }, "--min-rate"),
            (Settings { backoff_s: 100.0, backoff_max_s: 10.0, ..Settings::default() }, "--backoff"),
        ] {
            assert_eq!(s.check().unwrap_err().flag, flag);
        }
        assert!(Settings::default().to_string().starts_with("forecast controller: window 60 s, headroom 5 %, up in steps of 15 %"), "{}", Settings::default());
    }
}
