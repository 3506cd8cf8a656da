//! What the two KServe v2 HTTP fronts share: `parva serve` and `parva segment` over their router
//! ([`crate::http`]) and `parva route` over segments ([`crate::route`]).
//!
//! - [`Front`] and [`kserve_routes`]: the route table of the Open Inference Protocol (server and
//!   model metadata, liveness and readiness, inference, `/metrics`) and its trivial handlers,
//!   once. A version other than `1` (the only one served) is a 404 on every versioned route.
//! - [`BodyGate`]: a request body's admission: its cap (413, judged on `Content-Length` before a
//!   byte is read and enforced while reading when there is none), the memory bound of bodies in
//!   flight (429), and the body timeout (408).
//! - [`ApiError`]: a request error as an HTTP response, through [`InferError::status`] only.

use std::sync::Arc;
use std::time::Duration;

use axum::Router as Http;
use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::InferError;
use crate::listen::ConnHandle;

/// The one model version parva serves.
pub const VERSION: &str = "1";

/// A KServe v2 front: what [`kserve_routes`] asks of `parva serve`'s and `parva route`'s state.
pub trait Front: Clone + Send + Sync + 'static {
    /// The server metadata (`GET /v2`).
    fn server_meta(&self) -> serde_json::Value;
    /// Every service can take requests.
    fn ready(&self) -> bool;
    /// Service `name` can take requests (404 when unknown).
    fn model_ready(&self, name: &str) -> Result<bool, InferError>;
    /// The model metadata of service `name`.
    fn model_meta(&self, name: String) -> impl Future<Output = Response> + Send;
    /// Run an inference request of service `name`.
    fn infer(&self, name: String, req: Request) -> impl Future<Output = Response> + Send;
    /// The OpenMetrics text of `/metrics`.
    fn metrics_text(&self) -> String;
}

/// 404 unless `version` is the one served. Regression (issue 34): `/v2/models/m/versions/99/infer`
/// answered 200 for a model that has only version 1.
pub fn check_version(name: &str, version: &str) -> Result<(), InferError> {
    if version == VERSION {
        Ok(())
    } else {
        Err(InferError::UnknownVersion { name: name.to_string(), version: version.to_string() })
    }
}

fn up(ok: bool) -> StatusCode {
    if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
}

async fn ready_page<F: Front>(State(f): State<F>) -> Response {
    let ok = f.ready();
    (up(ok), axum::Json(json!({"ready": ok}))).into_response()
}

async fn model_ready<F: Front>(State(f): State<F>, Path(name): Path<String>) -> Response {
    match f.model_ready(&name) {
        Ok(ok) => (up(ok), axum::Json(json!({"name": name, "ready": ok}))).into_response(),
        Err(e) => ApiError(e).into_response(),
    }
}

async fn model_ready_v<F: Front>(f: State<F>, Path((name, version)): Path<(String, String)>) -> Response {
    match check_version(&name, &version) {
        Ok(()) => model_ready(f, Path(name)).await,
        Err(e) => ApiError(e).into_response(),
    }
}

async fn model_meta<F: Front>(State(f): State<F>, Path(name): Path<String>) -> Response {
    f.model_meta(name).await
}

async fn model_meta_v<F: Front>(State(f): State<F>, Path((name, version)): Path<(String, String)>) -> Response {
    match check_version(&name, &version) {
        Ok(()) => f.model_meta(name).await,
        Err(e) => ApiError(e).into_response(),
    }
}

async fn infer<F: Front>(State(f): State<F>, Path(name): Path<String>, req: Request) -> Response {
    f.infer(name, req).await
}

async fn infer_v<F: Front>(State(f): State<F>, Path((name, version)): Path<(String, String)>, req: Request) -> Response {
    match check_version(&name, &version) {
        Ok(()) => f.infer(name, req).await,
        Err(e) => ApiError(e).into_response(),
    }
}

async fn metrics_page<F: Front>(State(f): State<F>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], f.metrics_text()).into_response()
}

/// The Open Inference Protocol's routes over `F`: add a front's own routes, then [`finish`].
pub fn kserve_routes<F: Front>() -> Http<F> {
    Http::new()
        .route("/v2", get(|State(f): State<F>| async move { axum::Json(f.server_meta()) }))
        .route("/v2/health/live", get(|| async { axum::Json(json!({"live": true})) }))
        .route("/v2/health/ready", get(ready_page::<F>))
        .route("/v2/models/{name}", get(model_meta::<F>))
        .route("/v2/models/{name}/versions/{version}", get(model_meta_v::<F>))
        .route("/v2/models/{name}/ready", get(model_ready::<F>))
        .route("/v2/models/{name}/versions/{version}/ready", get(model_ready_v::<F>))
        .route("/v2/models/{name}/infer", post(infer::<F>))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_v::<F>))
        .route("/metrics", get(metrics_page::<F>))
}

/// The layers every front has (connections marked busy while a request is served), with its
/// state.
pub fn finish<F: Front>(routes: Http<F>, front: F) -> Http {
    routes.layer(axum::middleware::from_fn(mark_busy)).with_state(front)
}

/// While a request is served its connection is busy: the listener's idle and head deadlines
/// do not apply (the body has `--body-timeout`, the model its SLO).
async fn mark_busy(req: Request, next: Next) -> Response {
    let _guard = req.extensions().get::<ConnectInfo<ConnHandle>>().map(|c| c.0.busy());
    next.run(req).await
}

/// A request error as an HTTP response: its status and `{"error": message}`.
pub struct ApiError(pub InferError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (code, axum::Json(json!({"error": self.0.to_string()}))).into_response();
        if matches!(self.0, InferError::TooLarge { .. } | InferError::BodyTimeout { .. }) {
            // The body was not read (whole): the connection cannot carry another request.
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

impl From<InferError> for ApiError {
    fn from(e: InferError) -> Self {
        ApiError(e)
    }
}

/// Bytes per permit of the memory bound's semaphore: a request may reserve up to 2^32 permits,
/// 256 GiB.
const PERMIT_BYTES: u64 = 64;

/// The admission of request bodies of one front (see the module's doc).
#[derive(Debug, Clone)]
pub struct BodyGate {
    /// Bound on the memory bodies in flight may hold, bytes.
    max_inflight: u64,
    body_timeout: Duration,
    inflight: Arc<Semaphore>,
}

/// How one body is admitted: its cap, and why (for the 413's message).
#[derive(Debug, Clone)]
pub struct BodyLimit {
    pub model: String,
    pub limit: u64,
    pub why: String,
}

impl BodyGate {
    pub fn new(max_inflight: u64, body_timeout: Duration) -> BodyGate {
        let permits = (max_inflight / PERMIT_BYTES).clamp(1, Semaphore::MAX_PERMITS as u64) as usize;
        BodyGate { max_inflight, body_timeout, inflight: Arc::new(Semaphore::new(permits)) }
    }

    /// Reserve `bytes` of the memory bound, or 429.
    pub fn reserve(&self, bytes: u64) -> Result<OwnedSemaphorePermit, InferError> {
        let units = u32::try_from(bytes.div_ceil(PERMIT_BYTES).max(1)).unwrap_or(u32::MAX);
        self.inflight.clone().try_acquire_many_owned(units).map_err(|_| {
            let total = (self.max_inflight / PERMIT_BYTES).clamp(1, Semaphore::MAX_PERMITS as u64);
            InferError::MemoryBound {
                in_flight: total.saturating_sub(self.inflight.available_permits() as u64) * PERMIT_BYTES,
                limit: self.max_inflight,
                need: bytes,
            }
        })
    }

    /// Read a body of at most `limit.limit` bytes, having reserved `reservation(declared or
    /// limit)` bytes of the memory bound first; the permit holds them until it is dropped.
    pub async fn read(&self, limit: &BodyLimit, headers: &HeaderMap, body: Body, reservation: impl FnOnce(u64) -> u64) -> Result<(Bytes, OwnedSemaphorePermit), InferError> {
        let too_large = |what: String| InferError::TooLarge { model: limit.model.clone(), what, limit: limit.limit, why: limit.why.clone() };
        // hyper has already refused a malformed Content-Length; a present one is the body's length.
        let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(n) = declared.filter(|&n| n > limit.limit) {
            return Err(too_large(format!("the request body ({n} bytes by its Content-Length)")));
        }
        let permit = self.reserve(reservation(declared.unwrap_or(limit.limit)))?;
        let cap = usize::try_from(limit.limit).unwrap_or(usize::MAX);
        let read = http_body_util::Limited::new(body, cap).collect();
        match tokio::time::timeout(self.body_timeout, read).await {
            Err(_) => Err(InferError::BodyTimeout { seconds: self.body_timeout.as_secs_f64() }),
            Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                Err(too_large("the request body (sent without Content-Length)".into()))
            }
            Ok(Err(e)) => Err(InferError::BadRequest(format!("reading the request body: {e}"))),
            Ok(Ok(collected)) => Ok((collected.to_bytes(), permit)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_version_1_is_served() {
        assert!(check_version("m", "1").is_ok());
        for v in ["99", "", "01", "latest"] {
            let e = check_version("m", v).unwrap_err();
            assert_eq!(e.status(), 404, "{v}");
            assert!(e.to_string().contains("version"), "{e}");
        }
    }

    #[tokio::test]
    async fn the_memory_bound_is_reserved_in_permits_and_given_back_with_them() {
        let gate = BodyGate::new(1024, Duration::from_secs(1));
        let a = gate.reserve(1000).unwrap();
        let e = gate.reserve(100).unwrap_err();
        assert_eq!(e.status(), 429, "{e}");
        drop(a);
        assert!(gate.reserve(1024).is_ok());
        // A declared body over the cap is refused before anything is reserved or read.
        let limit = BodyLimit { model: "m".into(), limit: 10, why: "test".into() };
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("11"));
        let e = gate.read(&limit, &h, Body::from("x".repeat(11)), |n| n).await.unwrap_err();
        assert_eq!(e.status(), 413);
        // Without Content-Length: cut off at the cap.
        let e = gate.read(&limit, &HeaderMap::new(), Body::from("x".repeat(11)), |n| n).await.unwrap_err();
        assert!(matches!(e, InferError::TooLarge { ref what, .. } if what.contains("without Content-Length")), "{e:?}");
        let (b, _p) = gate.read(&limit, &HeaderMap::new(), Body::from("x".repeat(10)), |n| n).await.unwrap();
        assert_eq!(b.len(), 10);
    }
}
