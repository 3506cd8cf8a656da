//! The day report's types: per policy, per service, per piece (`simulate --rates --json`,
//! `day.json`).

use super::{DayConfig, Policy};

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
