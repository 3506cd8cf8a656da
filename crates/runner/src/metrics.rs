//! Prometheus metrics of the router, in one `prometheus_client` [`Registry`] (no global recorder).
//!
//! Per service: `parva_requests_total`, `parva_request_errors_total{code}`,
//! `parva_queue_seconds`, `parva_exec_seconds`, `parva_request_seconds` (end to end) and
//! `parva_batch_size` histograms, `parva_batches_total{size}` (exact batch sizes),
//! `parva_worker_restarts_total` and `parva_workers_ready`. `parva_backend_info{backend}` says
//! which backend runs the node (`emulated` results are not measurements).
//!
//! Label values are escaped as the exposition formats require (`\` as `\\`, `"` as `\"`, a
//! newline as `\n`), so any service name keeps `/metrics` parsable. Requests refused before
//! they reach a service (unknown model, body too large, malformed) are counted under
//! `parva_request_errors_total{service="_unknown"}` when the name is not a served service (never
//! the raw name: clients must not be able to grow the label set).

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `service` label value of requests whose model is not served here.
pub const UNKNOWN_SERVICE: &str = "_unknown";

/// A label value written with the escapes of the Prometheus text and OpenMetrics formats.
struct Escaped<'a>(&'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&escape_label_value(self.0))
    }
}

/// `v` escaped for a label value: `\` -> `\\`, `"` -> `\"`, newline -> `\n`.
pub fn escape_label_value(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return v.into();
    }
    let mut out = String::with_capacity(v.len() + 8);
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.into()
}

/// One label of a label set: string values escaped, numbers as they are.
pub(crate) trait LabelPart {
    fn put(&self, key: &str, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error>;
}

impl LabelPart for String {
    fn put(&self, key: &str, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        (key, Escaped(self)).encode(encoder.encode_label())
    }
}

macro_rules! number_label {
    ($($t:ty),*) => {$(
        impl LabelPart for $t {
            fn put(&self, key: &str, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
                (key, *self as u64).encode(encoder.encode_label())
            }
        }
    )*};
}
number_label!(u16, u32);

/// Label sets whose string values are escaped (the derive writes them raw).
macro_rules! label_set {
    ($name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        #[derive(Debug, Clone, Hash, PartialEq, Eq)]
        pub struct $name {
            $(pub $field: $ty,)*
        }
        impl prometheus_client::encoding::EncodeLabelSet for $name {
            fn encode(&self, mut encoder: prometheus_client::encoding::LabelSetEncoder) -> Result<(), std::fmt::Error> {
                $( $crate::metrics::LabelPart::put(&self.$field, stringify!($field), &mut encoder)?; )*
                Ok(())
            }
        }
    };
}

pub(crate) use label_set;

label_set!(ServiceLabel { service: String });
label_set!(ErrorLabel { service: String, code: u16 });
label_set!(BatchLabel { service: String, size: u32 });
label_set!(BackendLabel { backend: String, device: String });

type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub(crate) fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 11))
}

/// All the router's metrics and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<ServiceLabel, Counter>,
    pub errors: Family<ErrorLabel, Counter>,
    pub queue_seconds: HistFamily<ServiceLabel>,
    pub exec_seconds: HistFamily<ServiceLabel>,
    pub request_seconds: HistFamily<ServiceLabel>,
    pub batch_size: HistFamily<ServiceLabel>,
    pub batches: Family<BatchLabel, Counter>,
    pub restarts: Family<ServiceLabel, Counter>,
    /// Worker processes killed by the watchdog for not answering a batch in time.
    pub worker_stalls: Family<ServiceLabel, Counter>,
    pub workers_ready: Family<ServiceLabel, Gauge>,
    pub backend: Family<BackendLabel, Gauge>,
    /// `deploy --follow`: transitions applied, transitions that failed and were rolled back,
    /// GPUs of the node the serving map no longer uses (free for other work), and the rate each
    /// service's running plan was made for.
    pub follow_transitions: Counter,
    pub follow_failures: Counter,
    pub free_gpus: Gauge,
    /// Successful requests answered within their service's SLO (goodput).
    pub within_slo: Family<ServiceLabel, Counter>,
    /// Best-effort job instances running, reclaimed for inference, and their samples.
    pub job_instances: Gauge,
    pub job_reclaims: Counter,
    pub job_samples: Gauge,
    pub planned_rate: Family<ServiceLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// `deploy --follow`: requests/s the controller wanted for a service and the node's GPUs
    /// could not fit (0 when the running plan covers the forecast).
    pub follow_shortfall: Family<ServiceLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// `deploy --follow`: the controller's forecast per service, requests/s.
    pub follow_forecast: Family<ServiceLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// `deploy --follow`: the share of the day's churn budget spent (from 1, scale-downs wait).
    pub follow_budget_used: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            requests: Family::default(),
            errors: Family::default(),
            queue_seconds: Family::new_with_constructor(seconds_histogram),
            exec_seconds: Family::new_with_constructor(seconds_histogram),
            request_seconds: Family::new_with_constructor(seconds_histogram),
            batch_size: Family::new_with_constructor(batch_histogram),
            batches: Family::default(),
            restarts: Family::default(),
            worker_stalls: Family::default(),
            workers_ready: Family::default(),
            backend: Family::default(),
            follow_transitions: Counter::default(),
            follow_failures: Counter::default(),
            free_gpus: Gauge::default(),
            within_slo: Family::default(),
            job_instances: Gauge::default(),
            job_reclaims: Counter::default(),
            job_samples: Gauge::default(),
            planned_rate: Family::default(),
            follow_shortfall: Family::default(),
            follow_forecast: Family::default(),
            follow_budget_used: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("parva_requests", "Inference requests received, per service", m.requests.clone());
        registry.register("parva_requests_within_slo", "Successful requests answered within the service's SLO inside the router (goodput), per service", m.within_slo.clone());
        registry.register("parva_request_errors", "Inference requests answered with an error, per service and HTTP code", m.errors.clone());
        registry.register("parva_queue_seconds", "Time a request waited in its process's queue", m.queue_seconds.clone());
        registry.register("parva_exec_seconds", "Execution time of the batches a request ran in, as the worker measured it", m.exec_seconds.clone());
        registry.register("parva_request_seconds", "End-to-end latency of successful requests inside the router", m.request_seconds.clone());
        registry.register("parva_batch_size", "Rows per executed batch", m.batch_size.clone());
        registry.register("parva_batches", "Executed batches, per service and exact batch size", m.batches.clone());
        registry.register("parva_worker_restarts", "Worker processes restarted after they exited", m.restarts.clone());
        registry.register(
            "parva_worker_stalls",
            "Worker processes killed because a batch ran past its expected time plus --worker-timeout",
            m.worker_stalls.clone(),
        );
        registry.register("parva_workers_ready", "Worker processes ready to serve", m.workers_ready.clone());
        registry.register("parva_backend_info", "Backend running the workers (emulated = sleeps for profiled latencies)", m.backend.clone());
        registry.register("parva_follow_transitions", "Live transitions to a new plan applied by deploy --follow", m.follow_transitions.clone());
        registry.register("parva_follow_failures", "Live transitions that failed and were rolled back to the running plan", m.follow_failures.clone());
        registry.register("parva_free_gpus", "GPUs of this node the serving plan does not use (free for other work)", m.free_gpus.clone());
        registry.register("parva_job_instances", "Best-effort job instances running on GPCs inference leaves idle", m.job_instances.clone());
        registry.register("parva_job_reclaims", "Best-effort job instances stopped (checkpoint, grace) because inference needed their GPCs", m.job_reclaims.clone());
        registry.register("parva_job_samples", "Samples made by the best-effort jobs of this node since it started", m.job_samples.clone());
        registry.register("parva_planned_rate", "Requests/s the running plan was made for, per service", m.planned_rate.clone());
        registry.register(
            "parva_follow_shortfall",
            "Requests/s the follow controller wanted for a service beyond what fits this node's GPUs (0: the plan covers the forecast)",
            m.follow_shortfall.clone(),
        );
        registry.register("parva_follow_forecast", "The follow controller's forecast of a service's load over its horizon, requests/s", m.follow_forecast.clone());
        registry.register(
            "parva_follow_churn_budget_used",
            "Transitions over the last day as a share of the follow controller's day budget (--max-changes-per-hour x 24, pro-rated over its first day); from 1, scale-downs and scale-ups ahead of need wait",
            m.follow_budget_used.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn service(service: &str) -> ServiceLabel {
        ServiceLabel { service: service.to_string() }
    }

    /// Record one executed batch of `rows` rows.
    pub fn observe_batch(&self, service: &str, rows: usize, exec_s: f64) {
        let l = Metrics::service(service);
        self.batch_size.get_or_create(&l).observe(rows as f64);
        self.batches.get_or_create(&BatchLabel { service: service.to_string(), size: rows as u32 }).inc();
        self.exec_seconds.get_or_create(&l).observe(exec_s);
    }

    /// Count a request answered with `code` before it reached the router: `service` is the
    /// requested name when it is served here (`known`), else [`UNKNOWN_SERVICE`]. A known
    /// service's request also counts in `parva_requests_total`, as if the router had seen it.
    pub fn count_rejected(&self, service: &str, known: bool, code: u16) {
        if known {
            self.requests.get_or_create(&Metrics::service(service)).inc();
            self.count_error(service, code);
        } else {
            self.count_error(UNKNOWN_SERVICE, code);
        }
    }

    /// Count an error answer of a request already counted in `parva_requests_total`.
    pub fn count_error(&self, service: &str, code: u16) {
        self.errors.get_or_create(&ErrorLabel { service: service.to_string(), code }).inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("encoding metrics: {e}");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse one sample line of the text exposition format: (name, labels, value); `None` when
    /// it is not well formed.
    type Sample = (String, Vec<(String, String)>, f64);

    fn parse_sample(line: &str) -> Option<Sample> {
        let name_end = line.find(['{', ' '])?;
        let name = &line[..name_end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            return None;
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            loop {
                let (start, c) = chars.next()?;
                if c == '}' {
                    rest = &r[start + 1..];
                    break;
                }
                let eq = r[start..].find("=\"")? + start;
                let key = r[start..eq].trim_start_matches(',').to_string();
                while chars.peek().is_some_and(|&(i, _)| i <= eq + 1) {
                    chars.next();
                }
                let mut value = String::new();
                loop {
                    match chars.next()?.1 {
                        '"' => break,
                        '\\' => match chars.next()?.1 {
                            '\\' => value.push('\\'),
                            '"' => value.push('"'),
                            'n' => value.push('\n'),
                            _ => return None,
                        },
                        '\n' => return None,
                        c => value.push(c),
                    }
                }
                labels.push((key, value));
                if chars.peek().is_some_and(|&(_, c)| c == ',') {
                    chars.next();
                }
            }
        }
        let value = rest.strip_prefix(' ')?.parse().ok()?;
        Some((name.to_string(), labels, value))
    }

    /// Issue 33: the Grafana dashboard in the repository (`deployment/grafana/parva-dashboard.json`)
    /// queries only metrics this registry exports (a renamed metric fails here, not on a
    /// blank panel).
    #[test]
    fn the_grafana_dashboard_queries_only_metrics_parva_exports() {
        let text = Metrics::new().encode();
        let mut exported = std::collections::BTreeSet::new();
        for l in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let name = l.split_whitespace().next().unwrap_or_default();
            for suffix in ["", "_total", "_bucket", "_sum", "_count", "_created"] {
                exported.insert(format!("{name}{suffix}"));
            }
        }
        assert!(exported.contains("parva_requests_total") && exported.contains("parva_free_gpus"), "{exported:?}");
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deployment/grafana/parva-dashboard.json");
        let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut used = 0;
        for panel in dash["panels"].as_array().unwrap() {
            for t in panel["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                let names: Vec<&str> = expr
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| w.starts_with("parva_"))
                    .collect();
                assert!(!names.is_empty(), "{expr}");
                for n in names {
                    assert!(exported.contains(n), "panel {:?} queries {n}, which parva does not export", panel["title"]);
                    used += 1;
                }
            }
        }
        // The issue's list: request rate, p99 against SLO, refusals, free GPUs, follow transitions.
        let all = serde_json::to_string(&dash).unwrap();
        for want in ["parva_requests_total", "parva_request_seconds_bucket", "parva_request_errors_total", "parva_free_gpus", "parva_follow_transitions_total"] {
            assert!(all.contains(want), "{want} has no panel");
        }
        assert!(used >= 10);
    }

    // Issue 11: a service name with a quote, backslash or newline made /metrics unparsable.
    #[test]
    fn label_values_with_quotes_backslashes_and_newlines_keep_the_exposition_parsable() {
        let m = Metrics::new();
        let nasty = "a\"b\\c\nd} 1\ne{";
        m.requests.get_or_create(&Metrics::service(nasty)).inc();
        m.count_error(nasty, 429);
        m.observe_batch(nasty, 3, 0.01);
        m.workers_ready.get_or_create(&Metrics::service(nasty)).set(2);
        m.planned_rate.get_or_create(&Metrics::service(nasty)).set(12.5);
        let text = m.encode();
        let mut seen = 0;
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let (name, labels, value) = parse_sample(line).unwrap_or_else(|| panic!("unparsable line {line:?} in\n{text}"));
            // The node-level metrics have no labels.
            if ["parva_follow_transitions_total", "parva_follow_failures_total", "parva_follow_churn_budget_used", "parva_free_gpus", "parva_job_instances", "parva_job_reclaims_total", "parva_job_samples"]
                .contains(&name.as_str())
            {
                assert!(labels.is_empty(), "{line}");
                continue;
            }
            let service = labels.iter().find(|(k, _)| k == "service").map(|(_, v)| v.as_str());
            assert_eq!(service, Some(nasty), "{line}");
            if name == "parva_request_errors_total" {
                assert_eq!(labels[1], ("code".to_string(), "429".to_string()));
                assert_eq!(value, 1.0);
            }
            seen += 1;
        }
        assert!(seen >= 7, "{text}");
        assert!(text.contains(r#"service="a\"b\\c\nd} 1\ne{""#), "{text}");
        assert_eq!(escape_label_value("plain"), "plain");
    }

    #[test]
    fn requests_refused_before_the_router_are_counted_under_a_fixed_label_when_unknown() {
        let m = Metrics::new();
        m.count_rejected("svc", true, 413);
        m.count_rejected("whatever-a-client-sends-1", false, 404);
        m.count_rejected("whatever-a-client-sends-2", false, 404);
        let text = m.encode();
        assert!(text.contains("parva_request_errors_total{service=\"svc\",code=\"413\"} 1"), "{text}");
        assert!(text.contains("parva_requests_total{service=\"svc\"} 1"), "{text}");
        assert!(text.contains("parva_request_errors_total{service=\"_unknown\",code=\"404\"} 2"), "{text}");
        assert!(!text.contains("whatever"), "{text}");
        assert!(!text.contains("parva_requests_total{service=\"_unknown\""), "{text}");
    }

    /// `observe_batch` counts a batch per exact size and feeds both histograms; `count_error`
    /// counts an error without counting the request again; every metric is declared with its type.
    #[test]
    fn batches_are_counted_by_exact_size_and_errors_do_not_count_requests_twice() {
        let m = Metrics::new();
        m.observe_batch("svc", 3, 0.25);
        m.observe_batch("svc", 3, 0.5);
        m.observe_batch("svc", 8, 1.0);
        m.requests.get_or_create(&Metrics::service("svc")).inc();
        m.count_error("svc", 502);
        let text = m.encode();
        let value = |sample: &str| -> Option<f64> {
            text.lines().find_map(|l| l.strip_prefix(sample).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.parse().ok()))
        };
        assert_eq!(value("parva_batches_total{service=\"svc\",size=\"3\"}"), Some(2.0), "{text}");
        assert_eq!(value("parva_batches_total{service=\"svc\",size=\"8\"}"), Some(1.0), "{text}");
        assert_eq!(value("parva_batch_size_count{service=\"svc\"}"), Some(3.0), "{text}");
        assert_eq!(value("parva_batch_size_sum{service=\"svc\"}"), Some(14.0), "{text}");
        // Buckets 1, 2, 4, 8, ...: the two 3-row batches are above 2 and within 4.
        assert_eq!(value("parva_batch_size_bucket{le=\"2.0\",service=\"svc\"}"), Some(0.0), "{text}");
        assert_eq!(value("parva_batch_size_bucket{le=\"4.0\",service=\"svc\"}"), Some(2.0), "{text}");
        assert_eq!(value("parva_exec_seconds_sum{service=\"svc\"}"), Some(1.75), "{text}");
        assert_eq!(value("parva_requests_total{service=\"svc\"}"), Some(1.0), "{text}");
        assert_eq!(value("parva_request_errors_total{service=\"svc\",code=\"502\"}"), Some(1.0), "{text}");
        for (name, kind) in [("parva_requests", "counter"), ("parva_batch_size", "histogram"), ("parva_workers_ready", "gauge"), ("parva_backend_info", "gauge")] {
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name} {kind} in\n{text}");
        }
    }
}
