//! Value parsers shared by the commands' flags (one place, so that every duration flag reads
//! `60s`, `500ms`, `2m` or `3h` the same way).

/// Parse `60`, `60s`, `1.5s`, `500ms`, `2m`, `3h` into seconds.
pub fn parse_seconds(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (num, scale) = if let Some(v) = t.strip_suffix("ms") {
        (v, 0.001)
    } else if let Some(v) = t.strip_suffix('s') {
        (v, 1.0)
    } else if let Some(v) = t.strip_suffix('m') {
        (v, 60.0)
    } else if let Some(v) = t.strip_suffix('h') {
        (v, 3600.0)
    } else {
        (t, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if (v * scale).is_finite() && v >= 0.0 => Ok(v * scale),
        _ => Err(format!("expected a duration like 60s, 500ms, 2m or 3h; got {text:?}")),
    }
}

/// A timeout between 0.1 s and 1 h (`10s`, `500ms`, `2m`).
pub fn parse_timeout(text: &str) -> Result<f64, String> {
    let s = parse_seconds(text)?;
    if (0.1..=3600.0).contains(&s) { Ok(s) } else { Err(format!("must be 0.1s to 1h; got {text:?}")) }
}

/// The follow controller's settings, one flag group for `simulate --rates` and `deploy --follow`
/// (so that a simulated day and a live node run the same controller; see `parva_control`).
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Follow controller (simulate --rates, deploy --follow)")]
pub struct ControllerFlags {
    /// Seconds between the controller's looks at the measured rates (between them, an alarm
    /// plans a service up within 10 s of its rate passing its plan).
    #[arg(long, default_value = "60s", value_parser = parse_seconds)]
    pub window: f64,
    /// Plans carry this much more rate than forecast (0.1 = 10 %).
    #[arg(long, default_value_t = parva_control::Settings::default().headroom)]
    pub headroom: f64,
    /// A scale-down is made only when it is expected to free a GPU with this much to spare
    /// (0.25: the GPCs of 1.25 GPUs), and has been for --down-after.
    #[arg(long, default_value_t = parva_control::Settings::default().hysteresis)]
    pub hysteresis: f64,
    /// A scale-up plans this much above the forecast (0.2 = 20 %): a ramp then costs one
    /// transition per step, not one per window.
    #[arg(long, default_value_t = parva_control::Settings::default().step_up)]
    pub step_up: f64,
    /// Seconds a scale-down must have been worth it (services lowered only on windows with at
    /// least --min-requests) before it is made; also the least time between two scale-downs.
    /// Scale-ups never wait.
    #[arg(long, alias = "min-interval", default_value = "15m", value_parser = parse_seconds)]
    pub down_after: f64,
    /// At most this fraction of a service's planned rate is given up in one scale-down, unless
    /// the load of the last --down-after is further below (then down to its highest window
    /// with this share to spare).
    #[arg(long, default_value_t = parva_control::Settings::default().max_step_down)]
    pub max_step_down: f64,
    /// Weight of the newest window in the rate EWMA (1: only the last window counts).
    #[arg(long, default_value_t = parva_control::Settings::default().ewma)]
    pub ewma: f64,
    /// Forecast controller: seconds ahead a plan must cover (trend and time of day).
    #[arg(long, default_value = "10m", value_parser = parse_seconds)]
    pub horizon: f64,
    /// Forecast controller: extra headroom per unit of a service's measured burstiness.
    #[arg(long, default_value_t = parva_control::Settings::default().burst_factor)]
    pub burst_factor: f64,
    /// A window in which a service got fewer requests than this is no evidence for scaling it
    /// down (a cold start, clients not connected yet).
    #[arg(long, default_value_t = parva_control::Settings::default().min_requests)]
    pub min_requests: f64,
    /// Seconds after the start (and after the first traffic) in which nothing is scaled down.
    #[arg(long, default_value = "5m", value_parser = parse_seconds)]
    pub warmup_window: f64,
    /// Transitions allowed per hour, and 24 times it a day; scale-downs past either wait,
    /// scale-ups at need never do. With at most 80 % of it spent over the last day, services are
    /// lowered on a narrower band.
    #[arg(long, default_value_t = parva_control::Settings::default().max_changes_per_hour)]
    pub max_changes_per_hour: f64,
    /// Seconds to wait after a transition failed or was refused, doubled after each consecutive
    /// one up to 15 minutes.
    #[arg(long, default_value = "30s", value_parser = parse_seconds)]
    pub backoff: f64,
    /// Each service is planned for at least this many requests/s, so that a quiet service keeps
    /// a ready process.
    #[arg(long, default_value_t = parva_control::Settings::default().min_rate)]
    pub min_rate: f64,
}

impl ControllerFlags {
    /// The settings these flags give, in `mode`, checked (the error names the flag).
    pub fn settings(&self, mode: parva_control::Mode) -> anyhow::Result<parva_control::Settings> {
        let d = parva_control::Settings::default();
        let s = parva_control::Settings {
            mode,
            window_s: self.window,
            headroom: self.headroom,
            hysteresis: self.hysteresis,
            step_up: self.step_up,
            down_after_s: self.down_after,
            max_step_down: self.max_step_down,
            ewma: self.ewma,
            horizon_s: self.horizon,
            burst_factor: self.burst_factor,
            min_requests: self.min_requests,
            warmup_s: self.warmup_window,
            max_changes_per_hour: self.max_changes_per_hour,
            backoff_s: self.backoff,
            backoff_max_s: d.backoff_max_s.max(self.backoff),
            min_rate: self.min_rate,
        };
        s.check()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_their_unit_and_timeouts_stay_in_range() {
        assert_eq!(parse_seconds("60").unwrap(), 60.0);
        assert_eq!(parse_seconds(" 1.5s ").unwrap(), 1.5);
        assert_eq!(parse_seconds("500ms").unwrap(), 0.5);
        assert_eq!(parse_seconds("2m").unwrap(), 120.0);
        assert_eq!(parse_seconds("3h").unwrap(), 10800.0);
        for bad in ["", "-1s", "abc", "1e400s", "NaN"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_timeout("250ms").unwrap(), 0.25);
        assert!(parse_timeout("50ms").unwrap_err().contains("0.1s to 1h"));
        assert!(parse_timeout("2h").is_err());
    }
}
