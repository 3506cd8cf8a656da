//! # parva-verify
//!
//! The open-loop load generator and SLO report behind `parva verify`: it proves (or disproves)
//! that a KServe v2 endpoint (a `parva serve` node, Triton, KServe, ...) meets each service's
//! latency SLO at its request rate. Read it top-down:
//!
//! - [`schedule`]: when requests are due (Poisson or constant at a rate, or a trace), lazily.
//! - [`trace`]: the trace file format (`time_s[,service]`) and its reader.
//! - [`client`]: the KServe v2 HTTP client (readiness, metadata, requests shaped from it).
//! - [`generator`]: the open-loop run: on-schedule sends, latency from the scheduled time, the
//!   in-flight cap (drops), the connection cap (lag), timeouts.
//! - [`stats`]: per-service counters and HDR histograms.
//! - [`report`]: the verdict and its table, JSON and CSV forms; [`plot`]: the latency CDF and
//!   the plot over time (SVG).
//! - [`predict`]: the simulator's prediction for the same plan, to compare with the measurement.
//!
//! [`verify`] ties them together; the settings are checked by [`Spec::check`] before anything
//! touches the network.

pub mod client;
pub mod error;
pub mod generator;
pub mod plot;
pub mod predict;
pub mod report;
pub mod schedule;
pub mod stats;
pub mod trace;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use client::{Endpoint, Wire};
pub use error::VerifyError;
pub use generator::Live;
pub use report::Report;
pub use schedule::Distribution;

use crate::generator::{LoadConfig, ServiceLoad};
use crate::report::{RunSettings, ServiceInfo};
use crate::schedule::{Arrivals, service_seed};

/// Largest accepted `max_in_flight` / `connections` per service.
pub const MAX_IN_FLIGHT_LIMIT: usize = 1_000_000;

/// One service to verify: its name at the endpoint (`/v2/models/{name}`), rate and SLO.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub name: String,
    /// The model behind it, when the service list says (report only).
    pub model: Option<String>,
    /// Requests/s before the rate scale.
    pub rate: f64,
    pub slo_ms: f64,
}

/// Everything a verification run needs.
#[derive(Debug, Clone)]
pub struct Spec {
    pub endpoint: Endpoint,
    pub services: Vec<ServiceSpec>,
    /// A trace file and its send times per service (already divided by the rate scale); replaces
    /// the fixed rates.
    pub trace: Option<(PathBuf, BTreeMap<String, Vec<f64>>)>,
    pub distribution: Distribution,
    pub seed: u64,
    pub rate_scale: f64,
    pub percentile: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub max_in_flight: usize,
    pub connections: Option<usize>,
    pub timeout: Duration,
    /// How long to wait for every service to be ready before loading.
    pub wait_ready: Duration,
    pub wire: Wire,
    /// What measures, for the report: `parva <version> (<commit>)`.
    pub tool: String,
}

/// The longest one load of `verify --rate-scale ... --equal-requests` may run, seconds.
pub const MAX_LOAD_S: f64 = 86_400.0;

impl Spec {
    /// This spec at load `scale`, one of `scales` (`verify --rate-scale A,B,...`); with
    /// `equal_requests`, measured for as long as it takes to send as many requests as the highest
    /// of `scales`: the seconds after the warm-up times the highest scale over `scale` (the
    /// warm-up stays). At most a day ([`MAX_LOAD_S`]).
    pub fn at_load(&self, scale: f64, scales: &[f64], equal_requests: bool) -> Result<Spec, VerifyError> {
        let highest = scales.iter().copied().fold(scale, f64::max);
        let duration_s = if equal_requests { self.warmup_s + (self.duration_s - self.warmup_s) * highest / scale } else { self.duration_s };
        if !(duration_s <= MAX_LOAD_S) {
            return Err(VerifyError::Config(format!(
                "--equal-requests: load x{scale} would run {duration_s:.0} s to send as many requests as x{highest}; at most {MAX_LOAD_S} s (a day): shorten --duration or raise the lowest --rate-scale"
            )));
        }
        Ok(Spec { rate_scale: scale, duration_s, ..self.clone() })
    }

    /// Check the settings; the message names the flag and the value.
    pub fn check(&self) -> Result<(), VerifyError> {
        let bad = |m: String| Err(VerifyError::Config(m));
        if !(self.duration_s > 0.0 && self.duration_s.is_finite()) {
            return bad(format!("--duration must be > 0; got {} s", self.duration_s));
        }
        if !(self.warmup_s >= 0.0 && self.warmup_s < self.duration_s) {
            return bad(format!("--warmup ({} s) must be shorter than --duration ({} s)", self.warmup_s, self.duration_s));
        }
        if !(self.rate_scale > 0.0 && self.rate_scale.is_finite()) {
            return bad(format!("--rate-scale must be a number > 0; got {}", self.rate_scale));
        }
        if !(self.percentile > 0.0 && self.percentile <= 100.0) {
            return bad(format!("--percentile must be in (0, 100]; got {}", self.percentile));
        }
        if !(1..=MAX_IN_FLIGHT_LIMIT).contains(&self.max_in_flight) {
            return bad(format!("--max-in-flight must be 1 to {MAX_IN_FLIGHT_LIMIT}; got {}", self.max_in_flight));
        }
        if let Some(c) = self.connections.filter(|c| !(1..=MAX_IN_FLIGHT_LIMIT).contains(c)) {
            return bad(format!("--connections must be 1 to {MAX_IN_FLIGHT_LIMIT}; got {c}"));
        }
        if self.timeout.is_zero() {
            return bad("--timeout must be > 0".into());
        }
        if self.services.is_empty() {
            return bad("no service to verify".into());
        }
        if let Some((path, times)) = &self.trace
            && let Some(s) = self.services.iter().find(|s| !times.contains_key(&s.name))
        {
            return bad(format!("trace {}: no times for service {:?}", path.display(), s.name));
        }
        Ok(())
    }

    /// Seconds measured: duration minus warm-up.
    pub fn window_s(&self) -> f64 {
        self.duration_s - self.warmup_s
    }
}

/// A finished run: the report and the latency CDF of each service (for the plot).
#[derive(Debug, Clone)]
pub struct Verification {
    pub report: Report,
    pub cdfs: Vec<Vec<(f64, f64)>>,
}

impl Verification {
    /// What the plots' titles say of the run: endpoint, window, rate, wire, verdict, backend.
    fn title(&self) -> String {
        let r = &self.report.settings;
        format!(
            "parva verify {}: {} s at {}, wire {} ({}); {}",
            r.endpoint,
            r.window_s,
            match &r.trace {
                Some(p) => format!("the times of {}", p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()),
                None => format!("rate x{}", r.rate_scale),
            },
            r.wire.name(),
            if self.report.all_pass { "all pass" } else { "SLO missed" },
            match (r.server.backend.as_deref(), r.server.device.as_deref()) {
                (Some("emulated"), _) => "EMULATED backend, no GPU".to_string(),
                (Some(b), Some(d)) => format!("backend {b} on {d}"),
                _ => "backend not reported".to_string(),
            }
        )
    }

    /// The latency CDF plot as SVG.
    pub fn svg(&self) -> Result<String, VerifyError> {
        let curves: Vec<plot::Curve<'_>> = self
            .report
            .services
            .iter()
            .zip(&self.cdfs)
            .map(|(s, points)| plot::Curve { name: &s.service, slo_ms: s.slo_ms, pass: s.pass, points: points.clone() })
            .collect();
        plot::cdf_svg(&self.title(), &curves, self.report.settings.percentile)
    }

    /// The plot over time as SVG: offered rate, p99 and SLO attainment per interval.
    pub fn over_time_svg(&self) -> Result<String, VerifyError> {
        let series: Vec<plot::TimeSeries<'_>> = self
            .report
            .services
            .iter()
            .map(|s| plot::TimeSeries { name: &s.service, slo_ms: s.slo_ms, pass: s.pass, points: &s.timeline })
            .collect();
        plot::over_time_svg(&self.title(), &series, self.report.settings.percentile)
    }

    /// Every plot with its file name, for [`report::write_files`].
    pub fn plots(&self) -> Result<Vec<(&'static str, String)>, VerifyError> {
        Ok(vec![(report::SVG_FILE, self.svg()?), (report::TIMELINE_SVG_FILE, self.over_time_svg()?)])
    }
}

/// Wait for the endpoint, prepare each service's request from its metadata, run the load and
/// build the report. `live` is updated as requests go, for a progress display.
pub async fn verify(spec: &Spec, live: Arc<Live>) -> Result<Verification, VerifyError> {
    spec.check()?;
    let client = client::Client::new(spec.endpoint.clone());
    for s in &spec.services {
        // A stop (SIGINT, SIGTERM) ends the wait too: nothing has been registered yet.
        let stopped = live.stopped.notified();
        if live.is_stopping() {
            return Err(VerifyError::Interrupted(0.0));
        }
        tokio::select! {
            r = client.wait_ready(&s.name, spec.wait_ready) => r?,
            _ = stopped => return Err(VerifyError::Interrupted(0.0)),
        }
    }
    let server = client.server_info().await;
    if server.backend.as_deref() == Some("emulated") {
        tracing::warn!("the server runs the emulated backend: its latencies are the profiles' sleeps, not a GPU's");
    }
    let mut targets: Vec<ServiceLoad> = Vec::with_capacity(spec.services.len());
    for (i, s) in spec.services.iter().enumerate() {
        let request = match client.prepare(&s.name, spec.wire).await {
            Ok(r) => r,
            Err(e) => {
                // Shared memory registered for the services before this one is given back.
                for t in &targets {
                    client.release(&t.request).await;
                }
                return Err(e);
            }
        };
        tracing::info!(service = %s.name, inputs = ?request.shapes, bytes = request.body.len(), "request prepared");
        let arrivals = match &spec.trace {
            Some((_, times)) => Arrivals::Trace(times.get(&s.name).cloned().unwrap_or_default()),
            None => Arrivals::Rate { rate: s.rate * spec.rate_scale, distribution: spec.distribution, seed: service_seed(spec.seed, i) },
        };
        targets.push(ServiceLoad { name: s.name.clone(), slo_ms: s.slo_ms, arrivals, request });
    }
    let config = LoadConfig {
        duration_s: spec.duration_s,
        warmup_s: spec.warmup_s,
        max_in_flight: spec.max_in_flight,
        connections: spec.connections,
        timeout: spec.timeout,
    };
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let stats = generator::run(&client, &targets, &config, live.clone()).await;
    for t in &targets {
        client.release(&t.request).await;
    }
    if live.is_stopping() {
        let ran = live.started.get().map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0);
        return Err(VerifyError::Interrupted(ran));
    }
    let settings = RunSettings {
        endpoint: spec.endpoint.to_string(),
        server,
        tool: spec.tool.clone(),
        started_at: report::utc_timestamp(started),
        duration_s: spec.duration_s,
        warmup_s: spec.warmup_s,
        window_s: spec.window_s(),
        distribution: spec.trace.is_none().then_some(spec.distribution),
        trace: spec.trace.as_ref().map(|(p, _)| p.clone()),
        seed: spec.seed,
        rate_scale: spec.rate_scale,
        percentile: spec.percentile,
        max_in_flight: spec.max_in_flight,
        connections: spec.connections,
        timeout_s: spec.timeout.as_secs_f64(),
        wire: spec.wire,
    };
    let infos: Vec<(ServiceInfo<'_>, &stats::ServiceStats)> = spec
        .services
        .iter()
        .zip(&stats)
        .map(|(s, st)| {
            let target_rate = spec.trace.is_none().then_some(s.rate * spec.rate_scale);
            (ServiceInfo { name: &s.name, model: s.model.as_deref(), slo_ms: s.slo_ms, target_rate }, st)
        })
        .collect();
    let report = report::build(settings, &infos);
    Ok(Verification { report, cdfs: stats.iter().map(stats::ServiceStats::cdf).collect() })
}
