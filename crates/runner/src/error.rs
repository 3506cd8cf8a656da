//! Errors of the runtime, and the one place that maps request errors to HTTP status codes.

use std::path::PathBuf;

/// At most this many service names in a 404's message; the rest are counted.
pub const SERVED_LIST_MAX: usize = 20;

/// `a, b, c` (sorted), or `a, ..., t and 12 more` past [`SERVED_LIST_MAX`]; `no service` when empty.
pub fn served_list<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    let mut names: Vec<&str> = names.into_iter().map(String::as_str).collect();
    names.sort_unstable();
    match names.len() {
        0 => "no service".to_string(),
        n if n <= SERVED_LIST_MAX => names.join(", "),
        n => format!("{} and {} more", names[..SERVED_LIST_MAX].join(", "), n - SERVED_LIST_MAX),
    }
}

/// Why one inference request failed. [`InferError::status`] is the only mapping to HTTP codes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InferError {
    /// No such service on this node; `served` lists the ones that are (see [`served_list`]).
    #[error("unknown model {name:?}: this node serves {served}")]
    UnknownModel { name: String, served: String },
    /// A versioned route named a version other than the one served.
    #[error("model {name:?} has no version {version:?}: only version 1 is served (or leave the version out of the path)")]
    UnknownVersion { name: String, version: String },
    #[error("{0}")]
    BadRequest(String),
    /// Refused at admission (429): the request could not finish within the service's SLO on any
    /// ready process, or every ready process's queue is at its hard bound; `why` says which.
    #[error("service {service:?} is overloaded: {why}; retry later")]
    Overloaded { service: String, why: String },
    #[error("service {service:?} is not ready: {why}")]
    NotReady { service: String, why: String },
    #[error("worker process {worker} of service {service:?} crashed while running this request: {why}")]
    WorkerCrashed { service: String, worker: String, why: String },
    #[error("worker process {worker} of service {service:?} failed to run the batch: {why}")]
    ExecFailed { service: String, worker: String, why: String },
    /// The request's worker stopped answering (the watchdog, 504), and no other process of the
    /// service could take it in time.
    #[error("service {service:?}: {why}")]
    WorkerStalled { service: String, why: String },
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The body is larger than the model's limit (413; nothing past the limit was read).
    #[error("{what} is over the limit of {limit} bytes for model {model:?} ({why})")]
    TooLarge { model: String, what: String, limit: u64, why: String },
    /// The body did not arrive in time (408).
    #[error("the request body did not arrive within {seconds} s (--body-timeout)")]
    BodyTimeout { seconds: f64 },
    /// The bodies being decoded or served already hold the memory bound (429).
    #[error(
        "the server is at its memory bound: request bodies in flight hold {in_flight} of {limit} bytes \
         (--max-inflight-mib) and this one needs {need}; retry later"
    )]
    MemoryBound { in_flight: u64, limit: u64, need: u64 },
    /// The router tier's segment failed this request (`status` 502: connection broken after
    /// the request went out; 504: no answer in time). The request may have run.
    #[error("segment {segment} of service {service:?} failed this request: {why}")]
    SegmentFailed { service: String, segment: String, why: String, status: u16 },
}

impl InferError {
    /// The HTTP status code of this error.
    pub fn status(&self) -> u16 {
        match self {
            InferError::UnknownModel { .. } | InferError::UnknownVersion { .. } => 404,
            InferError::BadRequest(_) => 400,
            InferError::Overloaded { .. } => 429,
            InferError::NotReady { .. } | InferError::ShuttingDown => 503,
            InferError::WorkerCrashed { .. } => 502,
            InferError::ExecFailed { .. } => 500,
            InferError::WorkerStalled { .. } => 504,
            InferError::MemoryBound { .. } => 429,
            InferError::TooLarge { .. } => 413,
            InferError::BodyTimeout { .. } => 408,
            InferError::SegmentFailed { status, .. } => *status,
        }
    }
}

/// Why `serve` could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Format(#[from] parva_core::FormatError),
    /// The cause is the error's `source()`, printed once after it by `{:#}` (not in the message too).
    #[error("{path}: {action}")]
    Io { path: PathBuf, action: &'static str, source: std::io::Error },
    #[error(transparent)]
    Meta(#[from] parva_proto::meta::MetaError),
    #[error("the deployment map has no segment on node {node} (nodes in the map: {nodes:?})")]
    NoSegments { node: u32, nodes: Vec<u32> },
    #[error(
        "service {service:?} has no latency SLO: the map lacks the `slo_ms` column (a ParvaGPU map?); \
         pass --services FILE with `service,model,rate,slo_ms`"
    )]
    MissingSlo { service: String },
    #[error("{0}")]
    Config(String),
    /// The node's workers did not become ready (see `ServeOptions::startup`).
    #[error("the node's workers did not become ready: {0}")]
    NotReady(String),
    #[error("socket path {path} is {len} bytes long; Unix sockets allow at most {limit}: use a shorter --run-dir")]
    SocketPath { path: PathBuf, len: usize, limit: usize },
    #[error("listen on {addr}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    #[error(
        "the torch worker `parva-worker` was not found ({looked}); build it with \
         `eval \"$(scripts/bootstrap --torch)\" && cargo build --release --locked -p parva-worker` \
         (or run through `scripts/parva --torch ...`, which builds it), or set PARVA_WORKER=/path/to/parva-worker"
    )]
    NoWorker { looked: String },
}

impl ServeError {
    pub fn io(path: impl Into<PathBuf>, action: &'static str, source: std::io::Error) -> Self {
        ServeError::Io { path: path.into(), action, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_404_names_the_services_this_node_serves_sorted_and_capped() {
        let few: Vec<String> = ["vgg16", "bert", "resnet50"].map(String::from).to_vec();
        let e = InferError::UnknownModel { name: "resnet5".into(), served: served_list(&few) };
        assert_eq!(e.to_string(), "unknown model \"resnet5\": this node serves bert, resnet50, vgg16");
        assert_eq!(e.status(), 404);
        let many: Vec<String> = (0..25).map(|i| format!("s{i:02}")).collect();
        let text = served_list(&many);
        assert!(text.starts_with("s00, s01,") && text.ends_with("s19 and 5 more"), "{text}");
        assert_eq!(served_list(&Vec::<String>::new()), "no service");
    }
}
