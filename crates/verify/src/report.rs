//! The report of a run: per-service results, the verdict, and its forms: a terminal table, JSON
//! (`verify.json`), CSV (`verify.csv`), the same per interval of time (`verify_over_time.csv`)
//! and the plots (`latency_cdf.svg`, `over_time.svg`, see [`crate::plot`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::client::Wire;
use crate::error::VerifyError;
use crate::schedule::Distribution;
use crate::stats::{ServiceStats, TimePoint, quantile_ms};

pub const JSON_FILE: &str = "verify.json";
pub const CSV_FILE: &str = "verify.csv";
pub const SVG_FILE: &str = "latency_cdf.svg";
pub const TIMELINE_CSV_FILE: &str = "verify_over_time.csv";
pub const TIMELINE_SVG_FILE: &str = "over_time.svg";
pub const LOADS_CSV_FILE: &str = "loads.csv";

/// A request counts as sent late when it left more than this after its scheduled time.
pub const LATE_MS: f64 = 10.0;
/// Above this share of a service's SLO, the generator's lag is reported as a warning.
pub const LAG_WARN_FRACTION: f64 = 0.1;

/// The settings a run used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSettings {
    pub endpoint: String,
    /// What answered at the endpoint (issue 38: a report says whether it measured a GPU or an
    /// emulation).
    pub server: ServerInfo,
    /// What measured: `parva <version> (<commit>)`.
    pub tool: String,
    /// UTC start time, `YYYY-MM-DDTHH:MM:SSZ`.
    pub started_at: String,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// Seconds measured: duration minus warm-up.
    pub window_s: f64,
    /// The fixed-rate arrival process (`None` with a trace).
    pub distribution: Option<Distribution>,
    pub trace: Option<PathBuf>,
    pub seed: u64,
    pub rate_scale: f64,
    pub percentile: f64,
    pub max_in_flight: usize,
    pub connections: Option<usize>,
    pub timeout_s: f64,
    pub wire: Wire,
}

/// What the endpoint says of itself: KServe's server metadata (`GET /v2`) and, from a parva
/// server, its `parva_backend_info{backend,device}` metric. `None` where it does not say.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerInfo {
    pub name: Option<String>,
    pub version: Option<String>,
    /// `torch` or `emulated` (workers that sleep for the profiled latencies).
    pub backend: Option<String>,
    /// `cuda`, `cpu`, or `none` (emulated).
    pub device: Option<String>,
}

impl ServerInfo {
    /// Reads the backend and device from a Prometheus text exposition, if it has
    /// `parva_backend_info{backend="...",device="..."} 1`.
    pub fn read_metrics(&mut self, text: &str) {
        for line in text.lines().filter(|l| l.starts_with("parva_backend_info{")) {
            let label = |key: &str| {
                let start = line.find(&format!("{key}=\""))? + key.len() + 2;
                let end = line[start..].find('"')? + start;
                Some(line[start..end].to_string())
            };
            if line.trim_end().ends_with(" 1") {
                self.backend = label("backend");
                self.device = label("device");
            }
        }
    }

    /// One line for the table and the plot: what was measured.
    pub fn describe(&self) -> String {
        let server = match (&self.name, &self.version) {
            (Some(n), Some(v)) => format!("{n} {v}"),
            (Some(n), None) => n.clone(),
            _ => "a server that does not name itself".into(),
        };
        match (self.backend.as_deref(), self.device.as_deref()) {
            (Some("emulated"), _) => format!("{server}, backend emulated (no GPU: workers sleep for the profiled latencies; not a measurement of a GPU)"),
            (Some(b), Some(d)) => format!("{server}, backend {b} on {d}"),
            _ => format!("{server}, backend not reported"),
        }
    }
}

/// One service's results. Counts cover requests scheduled inside the measured window; latencies
/// are of successful requests, in ms from the scheduled send time (`None` when none succeeded).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceReport {
    pub service: String,
    pub model: Option<String>,
    pub slo_ms: f64,
    /// The configured rate (after --rate-scale); `None` with a trace.
    pub target_rate: Option<f64>,
    /// Requests/s scheduled in the window (the offered load).
    pub offered_rate: f64,
    /// Requests/s actually sent (offered minus drops).
    pub sent_rate: f64,
    /// Successful responses/s.
    pub achieved_rate: f64,
    pub scheduled: u64,
    pub sent: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Failures by cause: HTTP status (`"429"`), `"timeout"`, `"connection"`, `"bad_response"`.
    pub failed_by: BTreeMap<String, u64>,
    /// Not sent because the in-flight cap was reached when they were due.
    pub dropped: u64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Latency at the chosen percentile (successful requests).
    pub percentile_ms: Option<f64>,
    /// p99 measured from the actual send instead of the schedule (what perf_analyzer reports).
    pub p99_from_send_ms: Option<f64>,
    /// Generator lag (actual minus scheduled send time) of sent requests.
    pub lag_p50_ms: Option<f64>,
    pub lag_p99_ms: Option<f64>,
    pub lag_max_ms: Option<f64>,
    /// Share of scheduled requests that succeeded within the SLO, percent.
    pub attainment_pct: f64,
    /// At least `percentile` % of scheduled requests succeeded within the SLO (failed and dropped
    /// requests count as misses).
    pub pass: bool,
    /// Why the service failed, in words.
    pub reason: Option<String>,
    /// `parva simulate`'s p50 and p99 for the same plan and rates, when asked for.
    pub predicted_p50_ms: Option<f64>,
    pub predicted_p99_ms: Option<f64>,
    /// The window by interval of scheduled time (at most 60 intervals): offered rate, SLO
    /// attainment and p99 in each.
    pub timeline: Vec<TimePoint>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub settings: RunSettings,
    pub services: Vec<ServiceReport>,
    pub all_pass: bool,
    /// Largest generator lag p99 over the services, ms.
    pub generator_lag_p99_ms: Option<f64>,
    /// Set when the generator itself fell behind enough to matter.
    pub generator_warning: Option<String>,
    /// How the prediction was made, when there is one.
    pub prediction: Option<String>,
}

/// Inputs of one service's report row besides its statistics.
pub struct ServiceInfo<'a> {
    pub name: &'a str,
    pub model: Option<&'a str>,
    pub slo_ms: f64,
    pub target_rate: Option<f64>,
}

/// Turn statistics into the report.
pub fn build(settings: RunSettings, services: &[(ServiceInfo<'_>, &ServiceStats)]) -> Report {
    let window = settings.window_s;
    let p = settings.percentile;
    let rows: Vec<ServiceReport> = services
        .iter()
        .map(|(info, s)| {
            let pass = s.passes(p);
            let percentile_ms = s.latency_ms(p / 100.0);
            ServiceReport {
                service: info.name.to_string(),
                model: info.model.map(str::to_string),
                slo_ms: info.slo_ms,
                target_rate: info.target_rate,
                offered_rate: s.scheduled as f64 / window,
                sent_rate: s.sent() as f64 / window,
                achieved_rate: s.succeeded as f64 / window,
                scheduled: s.scheduled,
                sent: s.sent(),
                succeeded: s.succeeded,
                failed: s.failed_total(),
                failed_by: s.failed.clone(),
                dropped: s.dropped,
                p50_ms: s.latency_ms(0.50),
                p90_ms: s.latency_ms(0.90),
                p95_ms: s.latency_ms(0.95),
                p99_ms: s.latency_ms(0.99),
                max_ms: s.latency_ms(1.0),
                percentile_ms,
                p99_from_send_ms: quantile_ms(&s.latency_from_send, 0.99),
                lag_p50_ms: quantile_ms(&s.lag, 0.50),
                lag_p99_ms: quantile_ms(&s.lag, 0.99),
                lag_max_ms: quantile_ms(&s.lag, 1.0),
                attainment_pct: s.attainment_pct(),
                pass,
                reason: (!pass).then(|| reason(s, info.slo_ms, p, percentile_ms)),
                predicted_p50_ms: None,
                predicted_p99_ms: None,
                timeline: s.timeline.points(),
            }
        })
        .collect();
    let lag = rows.iter().filter_map(|r| r.lag_p99_ms).fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    let lagging: Vec<String> = rows
        .iter()
        .filter(|r| r.lag_p99_ms.is_some_and(|l| l > LATE_MS.max(LAG_WARN_FRACTION * r.slo_ms)))
        .map(|r| format!("{} (lag p99 {:.1} ms, SLO {} ms)", r.service, r.lag_p99_ms.unwrap_or(0.0), r.slo_ms))
        .collect();
    let warning = (!lagging.is_empty()).then(|| {
        format!(
            "the load generator sent requests late: {}. Latency counts from the scheduled time, so this lag is part of \
             the measured latency: failures may be the generator's (too few --connections, --max-in-flight reached, or \
             a busy machine), not the server's",
            lagging.join(", ")
        )
    });
    Report {
        all_pass: rows.iter().all(|r| r.pass),
        services: rows,
        generator_lag_p99_ms: lag,
        generator_warning: warning,
        prediction: None,
        settings,
    }
}

fn reason(s: &ServiceStats, slo_ms: f64, p: f64, percentile_ms: Option<f64>) -> String {
    if s.scheduled == 0 {
        return "no request was due in the measured window".into();
    }
    let mut parts = vec![format!("{:.2} % within the SLO, needs {p} %", s.attainment_pct())];
    if let Some(l) = percentile_ms.filter(|l| *l > slo_ms) {
        parts.push(format!("p{p} {l:.1} ms > SLO {slo_ms} ms"));
    }
    if s.failed_total() > 0 {
        parts.push(format!("{} failed ({})", s.failed_total(), failures(&s.failed)));
    }
    if s.dropped > 0 {
        parts.push(format!("{} dropped at the in-flight cap", s.dropped));
    }
    parts.join("; ")
}

/// `429 x12, timeout x1`.
pub fn failures(by: &BTreeMap<String, u64>) -> String {
    by.iter().map(|(k, v)| format!("{k} x{v}")).collect::<Vec<_>>().join(", ")
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

/// The terminal table and summary lines.
pub fn table(r: &Report) -> String {
    let p = r.settings.percentile;
    let predicted = r.services.iter().any(|s| s.predicted_p99_ms.is_some());
    let mut out = String::new();
    let _ = write!(
        out,
        "{:<20} {:>9} {:>9} {:>7} {:>7} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "service", "offered/s", "achieved/s", "sent", "ok", "failed", "drop", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "max ms", "lag p99", "SLO ms", "in SLO %"
    );
    if predicted {
        let _ = write!(out, " {:>9} {:>9}", "sim p50", "sim p99");
    }
    out.push_str("  result\n");
    for s in &r.services {
        let _ = write!(
            out,
            "{:<20} {:>9.1} {:>10.1} {:>7} {:>7} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8.2}",
            s.service,
            s.offered_rate,
            s.achieved_rate,
            s.sent,
            s.succeeded,
            s.failed,
            s.dropped,
            ms(s.p50_ms),
            ms(s.p90_ms),
            ms(s.p95_ms),
            ms(s.p99_ms),
            ms(s.max_ms),
            ms(s.lag_p99_ms),
            s.slo_ms,
            s.attainment_pct
        );
        if predicted {
            let _ = write!(out, " {:>9} {:>9}", ms(s.predicted_p50_ms), ms(s.predicted_p99_ms));
        }
        out.push_str(if s.pass { "  pass\n" } else { "  FAIL\n" });
    }
    for s in r.services.iter().filter(|s| !s.pass) {
        let _ = writeln!(out, "{}: {}", s.service, s.reason.as_deref().unwrap_or("failed"));
    }
    if predicted {
        for s in &r.services {
            if let (Some(pred), Some(meas)) = (s.predicted_p99_ms, s.p99_ms) {
                let _ = write!(out, "{}: p99 predicted {pred:.1} ms, measured {meas:.1} ms ({:+.1} ms)", s.service, meas - pred);
                let missing = s.failed + s.dropped;
                if missing > 0 {
                    // The simulator has no queue bound: it serves everything, late; the server refuses.
                    let _ = write!(out, "; the measurement leaves out {missing} failed or dropped requests, which the simulator serves late");
                }
                out.push('\n');
            }
        }
    }
    if let Some(w) = &r.generator_warning {
        let _ = writeln!(out, "warning: {w}");
        for s in r.services.iter().filter(|s| s.lag_p99_ms.is_some_and(|l| l > LATE_MS.max(LAG_WARN_FRACTION * s.slo_ms))) {
            if let (Some(a), Some(b)) = (s.p99_ms, s.p99_from_send_ms) {
                let _ = writeln!(
                    out,
                    "{}: p99 {a:.1} ms from the scheduled send time, {b:.1} ms from the actual send (what a tool timing from the send would report)",
                    s.service
                );
            }
        }
    }
    let failed = r.services.iter().filter(|s| !s.pass).count();
    let how = match (&r.settings.trace, r.settings.distribution) {
        (Some(t), _) => format!("trace {}", t.display()),
        (None, Some(d)) => format!("{d:?} arrivals").to_lowercase(),
        (None, None) => String::new(),
    };
    let _ = writeln!(
        out,
        "{} of {} services meet their SLO at p{p} ({} s measured after {} s warm-up, {how}, rate x{}, generator lag p99 {} ms)",
        r.services.len() - failed,
        r.services.len(),
        r.settings.window_s,
        r.settings.warmup_s,
        r.settings.rate_scale,
        ms(r.generator_lag_p99_ms),
    );
    let _ = writeln!(out, "measured: {}, wire {}, by {}", r.settings.server.describe(), r.settings.wire.name(), r.settings.tool);
    out
}

/// One CSV row (flat: failures as `429:12;timeout:1`).
#[derive(Serialize)]
struct CsvRow<'a> {
    service: &'a str,
    model: Option<&'a str>,
    slo_ms: f64,
    target_rate: Option<f64>,
    offered_rate: f64,
    sent_rate: f64,
    achieved_rate: f64,
    scheduled: u64,
    sent: u64,
    succeeded: u64,
    failed: u64,
    failed_by: String,
    dropped: u64,
    p50_ms: Option<f64>,
    p90_ms: Option<f64>,
    p95_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    percentile_ms: Option<f64>,
    p99_from_send_ms: Option<f64>,
    lag_p50_ms: Option<f64>,
    lag_p99_ms: Option<f64>,
    lag_max_ms: Option<f64>,
    attainment_pct: f64,
    pass: bool,
    predicted_p50_ms: Option<f64>,
    predicted_p99_ms: Option<f64>,
    /// What was measured, on every row (a CSV travels without its JSON).
    backend: Option<&'a str>,
    device: Option<&'a str>,
    wire: &'static str,
    tool: &'a str,
}

/// The CSV form: one row per service.
pub fn csv(r: &Report) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for s in &r.services {
        w.serialize(CsvRow {
            service: &s.service,
            model: s.model.as_deref(),
            slo_ms: s.slo_ms,
            target_rate: s.target_rate,
            offered_rate: s.offered_rate,
            sent_rate: s.sent_rate,
            achieved_rate: s.achieved_rate,
            scheduled: s.scheduled,
            sent: s.sent,
            succeeded: s.succeeded,
            failed: s.failed,
            failed_by: s.failed_by.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(";"),
            dropped: s.dropped,
            p50_ms: s.p50_ms,
            p90_ms: s.p90_ms,
            p95_ms: s.p95_ms,
            p99_ms: s.p99_ms,
            max_ms: s.max_ms,
            percentile_ms: s.percentile_ms,
            p99_from_send_ms: s.p99_from_send_ms,
            lag_p50_ms: s.lag_p50_ms,
            lag_p99_ms: s.lag_p99_ms,
            lag_max_ms: s.lag_max_ms,
            attainment_pct: s.attainment_pct,
            pass: s.pass,
            predicted_p50_ms: s.predicted_p50_ms,
            predicted_p99_ms: s.predicted_p99_ms,
            backend: r.settings.server.backend.as_deref(),
            device: r.settings.server.device.as_deref(),
            wire: r.settings.wire.name(),
            tool: &r.settings.tool,
        })?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

#[derive(Serialize)]
struct LoadRow<'a> {
    rate_scale: f64,
    service: &'a str,
    slo_ms: f64,
    offered_rate: f64,
    achieved_rate: f64,
    p50_ms: Option<f64>,
    predicted_p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    predicted_p99_ms: Option<f64>,
    /// Measured p99 over predicted, minus 1, percent.
    p99_vs_predicted_pct: Option<f64>,
    attainment_pct: f64,
    pass: bool,
}

fn vs_pct(measured: Option<f64>, predicted: Option<f64>) -> Option<f64> {
    match (measured, predicted) {
        (Some(m), Some(p)) if p > 0.0 => Some(100.0 * (m / p - 1.0)),
        _ => None,
    }
}

/// `loads.csv` of `verify --rate-scale A,B,...`: one row per load and service, measured and
/// predicted p50/p99 side by side.
pub fn loads_csv(reports: &[Report]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in reports {
        for s in &r.services {
            w.serialize(LoadRow {
                rate_scale: r.settings.rate_scale,
                service: &s.service,
                slo_ms: s.slo_ms,
                offered_rate: s.offered_rate,
                achieved_rate: s.achieved_rate,
                p50_ms: s.p50_ms,
                predicted_p50_ms: s.predicted_p50_ms,
                p99_ms: s.p99_ms,
                predicted_p99_ms: s.predicted_p99_ms,
                p99_vs_predicted_pct: vs_pct(s.p99_ms, s.predicted_p99_ms),
                attainment_pct: s.attainment_pct,
                pass: s.pass,
            })?;
        }
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// The summary of `verify --rate-scale A,B,...`: per service and load, measured and predicted
/// p50/p99, and whether the median at the lowest load is above the one at the highest (a
/// batcher that holds lone requests).
pub fn loads_table(reports: &[Report]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}  result",
        "service", "load", "offered/s", "p50 ms", "sim p50", "p99 ms", "sim p99", "p99 vs", "SLO ms", "in SLO %"
    );
    let names: Vec<&str> = reports.first().map(|r| r.services.iter().map(|s| s.service.as_str()).collect()).unwrap_or_default();
    for name in &names {
        for r in reports {
            let Some(s) = r.services.iter().find(|s| s.service == *name) else { continue };
            let vs = vs_pct(s.p99_ms, s.predicted_p99_ms).map(|v| format!("{v:+.1} %")).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "{:<20} {:>7} {:>9.1} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8.2}  {}",
                s.service,
                format!("x{}", r.settings.rate_scale),
                s.offered_rate,
                ms(s.p50_ms),
                ms(s.predicted_p50_ms),
                ms(s.p99_ms),
                ms(s.predicted_p99_ms),
                vs,
                s.slo_ms,
                s.attainment_pct,
                if s.pass { "pass" } else { "FAIL" }
            );
        }
    }
    let scale = |a: &&Report, b: &&Report| a.settings.rate_scale.total_cmp(&b.settings.rate_scale);
    if let (Some(lo), Some(hi)) = (reports.iter().min_by(scale), reports.iter().max_by(scale))
        && lo.settings.rate_scale < hi.settings.rate_scale
    {
        for name in &names {
            let p50 = |r: &Report| r.services.iter().find(|s| s.service == *name).and_then(|s| s.p50_ms);
            if let (Some(a), Some(b)) = (p50(lo), p50(hi))
                && a > b
            {
                let _ = writeln!(out, "{name}: p50 at x{} ({a:.1} ms) is above p50 at x{} ({b:.1} ms)", lo.settings.rate_scale, hi.settings.rate_scale);
            }
        }
    }
    let passed = reports.iter().filter(|r| r.all_pass).count();
    let _ = write!(out, "{passed} of {} loads: every service meets its SLO", reports.len());
    out
}

#[derive(Serialize)]
struct TimelineRow<'a> {
    service: &'a str,
    from_s: f64,
    to_s: f64,
    scheduled: u64,
    succeeded: u64,
    within_slo: u64,
    offered_rate: f64,
    attainment_pct: Option<f64>,
    p99_ms: Option<f64>,
}

/// `verify_over_time.csv`: one row per service and interval of scheduled time (a long table, as
/// Grafana's CSV source and pandas read it).
pub fn timeline_csv(r: &Report) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for s in &r.services {
        for p in &s.timeline {
            w.serialize(TimelineRow {
                service: &s.service,
                from_s: p.from_s,
                to_s: p.to_s,
                scheduled: p.scheduled,
                succeeded: p.succeeded,
                within_slo: p.within_slo,
                offered_rate: p.offered_rate,
                attainment_pct: p.attainment_pct,
                p99_ms: p.p99_ms,
            })?;
        }
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// Write `verify.json`, `verify.csv`, `verify_over_time.csv` and the plots (`(file name, SVG)`) into `dir` (created if needed). Every
/// file is rendered before the directory is touched, and each is written under a temporary name
/// and renamed, so an error leaves no partial report.
pub fn write_files(dir: &Path, report: &Report, plots: &[(&str, String)]) -> Result<Vec<PathBuf>, VerifyError> {
    let json = serde_json::to_vec_pretty(report).map_err(|e| VerifyError::io(dir.join(JSON_FILE), "encode report", std::io::Error::other(e)))?;
    let csv = csv(report).map_err(|e| VerifyError::io(dir.join(CSV_FILE), "encode report", std::io::Error::other(e)))?;
    let over_time = timeline_csv(report).map_err(|e| VerifyError::io(dir.join(TIMELINE_CSV_FILE), "encode report", std::io::Error::other(e)))?;
    std::fs::create_dir_all(dir).map_err(|e| VerifyError::io(dir, "create report directory", e))?;
    let mut written = Vec::new();
    let tables = [(JSON_FILE, json.as_slice()), (CSV_FILE, csv.as_slice()), (TIMELINE_CSV_FILE, over_time.as_slice())];
    for (name, bytes) in tables.into_iter().chain(plots.iter().map(|(n, svg)| (*n, svg.as_bytes()))) {
        let path = dir.join(name);
        parva_core::files::write_atomic(&path, bytes).map_err(|e| VerifyError::io(&path, "write report", std::io::Error::other(format!("{e:#}"))))?;
        written.push(path);
    }
    Ok(written)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time in seconds (kept here for the report's callers).
pub use parva_core::utc::utc_timestamp;

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
