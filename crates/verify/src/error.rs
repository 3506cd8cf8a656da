//! Errors of the load generator. Input errors name the file, line, field and value (through
//! [`parva_core::FormatError`]); endpoint errors name the URL and the service.

use std::path::PathBuf;

/// Why a verification could not run or could not write its report.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A trace or service file is unreadable or invalid.
    #[error(transparent)]
    Format(#[from] parva_core::FormatError),
    /// A setting out of range (`--rate-scale 0`, a warm-up as long as the run, ...).
    #[error("{0}")]
    Config(String),
    /// The endpoint is not an `http://host:port[/prefix]` URL.
    #[error("endpoint {endpoint:?}: {problem}")]
    Endpoint { endpoint: String, problem: String },
    /// The endpoint did not answer (connection refused, reset, timed out).
    #[error("{url}: no answer from the endpoint ({why}); is the server running there?")]
    Unreachable { url: String, why: String },
    /// The endpoint does not serve a service, or it stayed not ready.
    #[error("service {service:?} at {url}: {problem}")]
    Service { service: String, url: String, problem: String },
    /// The model metadata of a service cannot be turned into a request.
    #[error("service {service:?}: model metadata from {url}: {problem}")]
    Metadata { service: String, url: String, problem: String },
    /// `parva simulate`'s prediction for the plan failed.
    #[error("predicting with the simulator")]
    Sim(#[from] parva_core::sim::SimError),
    /// Writing a report file failed.
    #[error("{path}: cannot {action}")]
    Io { path: PathBuf, action: &'static str, source: std::io::Error },
    /// The run was stopped (SIGINT, SIGTERM) before its end: no report.
    #[error("interrupted after {0:.1} s of load; no report written (shared-memory regions released)")]
    Interrupted(f64),
    /// Drawing the SVG plot failed.
    #[error("drawing the latency plot: {0}")]
    Plot(String),
}

impl VerifyError {
    pub fn io(path: impl Into<PathBuf>, action: &'static str, source: std::io::Error) -> Self {
        VerifyError::Io { path: path.into(), action, source }
    }
}
