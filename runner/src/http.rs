//! The HTTP face of the router: KServe v2 endpoints and `/metrics`, over any [`Backend`].
//! Errors become responses here only, through [`InferError::status`].

use std::sync::Arc;

use axum::Router as Http;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::error::InferError;
use crate::kserve;
use crate::router::Backend;

/// Largest request body accepted, bytes.
pub const MAX_BODY: usize = 512 << 20;

/// A request error as an HTTP response: its status and `{"error": message}`.
pub struct ApiError(pub InferError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, axum::Json(json!({"error": self.0.to_string()}))).into_response()
    }
}

impl From<InferError> for ApiError {
    fn from(e: InferError) -> Self {
        ApiError(e)
    }
}

/// The routes, with `backend` as state.
pub fn app<B: Backend>(backend: Arc<B>) -> Http {
    Http::new()
        .route("/v2", get(server_meta))
        .route("/v2/health/live", get(live::<B>))
        .route("/v2/health/ready", get(ready::<B>))
        .route("/v2/models/{name}", get(model_meta::<B>))
        .route("/v2/models/{name}/versions/{version}", get(model_meta_v::<B>))
        .route("/v2/models/{name}/ready", get(model_ready::<B>))
        .route("/v2/models/{name}/versions/{version}/ready", get(model_ready_v::<B>))
        .route("/v2/models/{name}/infer", post(infer::<B>))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_v::<B>))
        .route("/metrics", get(metrics::<B>))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(backend)
}

async fn server_meta() -> impl IntoResponse {
    axum::Json(json!({"name": "parva", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data"]}))
}

fn up(ok: bool) -> StatusCode {
    if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
}

async fn live<B: Backend>(State(b): State<Arc<B>>) -> impl IntoResponse {
    let ok = b.live();
    (up(ok), axum::Json(json!({"live": ok})))
}

async fn ready<B: Backend>(State(b): State<Arc<B>>) -> impl IntoResponse {
    let ok = b.ready();
    (up(ok), axum::Json(json!({"ready": ok})))
}

async fn model_meta<B: Backend>(State(b): State<Arc<B>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let m = b.model(&name)?;
    Ok(axum::Json(json!({
        "name": name, "versions": ["1"], "platform": m.platform, "inputs": m.inputs, "outputs": m.outputs,
    }))
    .into_response())
}

async fn model_meta_v<B: Backend>(s: State<Arc<B>>, Path((name, _)): Path<(String, String)>) -> Result<Response, ApiError> {
    model_meta(s, Path(name)).await
}

async fn model_ready<B: Backend>(State(b): State<Arc<B>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let ok = b.model_ready(&name)?;
    Ok((up(ok), axum::Json(json!({"name": name, "ready": ok}))).into_response())
}

async fn model_ready_v<B: Backend>(s: State<Arc<B>>, Path((name, _)): Path<(String, String)>) -> Result<Response, ApiError> {
    model_ready(s, Path(name)).await
}

async fn infer<B: Backend>(State(b): State<Arc<B>>, Path(name): Path<String>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let header_len = match headers.get(kserve::HEADER_LEN) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| InferError::BadRequest(format!("{}: {v:?} is not a byte count", kserve::HEADER_LEN)))?,
        ),
    };
    // Unknown models are 404 before the body is even looked at.
    b.model(&name)?;
    let mut req = kserve::decode_request(&body, header_len)?;
    drop(body);
    let inputs = std::mem::take(&mut req.inputs);
    let done = b.infer(&name, inputs).await?;
    let (bytes, json_len) = kserve::encode_response(&name, &req, done.outputs)?;
    let mut resp = Response::new(axum::body::Body::from(bytes));
    let h = resp.headers_mut();
    match json_len {
        Some(n) => {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            h.insert(kserve::HEADER_LEN, HeaderValue::from(n));
        }
        None => {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
    }
    Ok(resp)
}

async fn infer_v<B: Backend>(s: State<Arc<B>>, Path((name, _)): Path<(String, String)>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    infer(s, Path(name), headers, body).await
}

async fn metrics<B: Backend>(State(b): State<Arc<B>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], b.metrics_text())
}
