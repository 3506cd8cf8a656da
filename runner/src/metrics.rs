//! Prometheus metrics of the router, in one `prometheus_client` [`Registry`] (no global recorder).
//!
//! Per service: `parva_requests_total`, `parva_request_errors_total{code}`,
//! `parva_queue_seconds`, `parva_exec_seconds`, `parva_request_seconds` (end to end) and
//! `parva_batch_size` histograms, `parva_batches_total{size}` (exact batch sizes),
//! `parva_worker_restarts_total` and `parva_workers_ready`. `parva_backend_info{backend}` says
//! which backend runs the node (`emulated` results are not measurements).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    pub service: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub service: String,
    pub code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BatchLabel {
    pub service: String,
    pub size: u32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    pub backend: String,
    pub device: String,
}

type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
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
    pub workers_ready: Family<ServiceLabel, Gauge>,
    pub backend: Family<BackendLabel, Gauge>,
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
            workers_ready: Family::default(),
            backend: Family::default(),
            registry: Registry::default(),
        };
        registry.register("parva_requests", "Inference requests received, per service", m.requests.clone());
        registry.register("parva_request_errors", "Inference requests answered with an error, per service and HTTP code", m.errors.clone());
        registry.register("parva_queue_seconds", "Time a request waited in its process's queue", m.queue_seconds.clone());
        registry.register("parva_exec_seconds", "Execution time of the batches a request ran in, as the worker measured it", m.exec_seconds.clone());
        registry.register("parva_request_seconds", "End-to-end latency of successful requests inside the router", m.request_seconds.clone());
        registry.register("parva_batch_size", "Rows per executed batch", m.batch_size.clone());
        registry.register("parva_batches", "Executed batches, per service and exact batch size", m.batches.clone());
        registry.register("parva_worker_restarts", "Worker processes restarted after they exited", m.restarts.clone());
        registry.register("parva_workers_ready", "Worker processes ready to serve", m.workers_ready.clone());
        registry.register("parva_backend_info", "Backend running the workers (emulated = sleeps for profiled latencies)", m.backend.clone());
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
