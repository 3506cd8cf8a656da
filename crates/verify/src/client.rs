//! A KServe v2 (Open Inference Protocol) HTTP client for load: readiness, model metadata, and
//! inference requests whose inputs are shaped from the metadata.
//!
//! One [`Client`] holds one HTTP/1.1 keep-alive connection pool (hyper-util's); a request takes an
//! idle connection or opens one, so concurrent requests use as many connections as they need and
//! later ones reuse them. TCP_NODELAY is set: a load generator must not add Nagle delays.
//!
//! Requests carry one row (batch dimension 1) of zeros per input. With [`Wire::Binary`] (the
//! default, as `tritonclient` and `perf_analyzer` send) the inputs go as raw bytes after a JSON
//! header (`Inference-Header-Content-Length`) and the outputs are asked back as binary; with
//! [`Wire::Json`] everything is JSON. With [`Wire::Shm`] (KServe/Triton system shared memory, for
//! a server on this machine) the row of zeros is written once to a shared-memory object that
//! every request of the service names, and the outputs are asked into a second one, so the
//! HTTP bodies are a few hundred bytes of JSON whatever the tensors' size: the generator moves no
//! tensor bytes. All requests of a service share one output region (verify never reads it).

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::{Value, json};

use crate::error::VerifyError;

/// The binary tensor extension's header.
pub const HEADER_LEN: &str = "inference-header-content-length";

/// How request bodies are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Wire {
    /// Binary tensor data extension for inputs and outputs.
    Binary,
    /// Plain JSON tensors.
    Json,
    /// Inputs and outputs in system shared memory registered with the server (same machine).
    Shm,
}

impl Wire {
    /// The flag's spelling: `binary`, `json`, `shm`.
    pub fn name(self) -> &'static str {
        match self {
            Wire::Binary => "binary",
            Wire::Json => "json",
            Wire::Shm => "shm",
        }
    }
}

/// An `http://host:port[/prefix]` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http://host:port`.
    pub base: String,
    /// Path prefix before `/v2`, without a trailing slash (usually empty).
    pub prefix: String,
}

impl Endpoint {
    pub fn parse(text: &str) -> Result<Endpoint, VerifyError> {
        let bad = |problem: &str| VerifyError::Endpoint { endpoint: text.to_string(), problem: problem.to_string() };
        let uri: Uri = text.trim().parse().map_err(|e| bad(&format!("not a URL ({e})")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(bad("https is not supported; give the plain http:// address of the server")),
            Some(other) => return Err(bad(&format!("scheme {other:?} is not supported; use http://host:port"))),
            None => return Err(bad("needs a scheme and a host, like http://127.0.0.1:8000")),
        }
        let auth = uri.authority().ok_or_else(|| bad("has no host"))?;
        if uri.query().is_some() {
            return Err(bad("must not have a query string"));
        }
        Ok(Endpoint { base: format!("http://{auth}"), prefix: uri.path().trim_end_matches('/').to_string() })
    }

    /// The URL of `/v2/...` `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}{path}", self.base, self.prefix)
    }

    pub fn model_url(&self, model: &str, rest: &str) -> String {
        self.url(&format!("/v2/models/{}{rest}", escape(model)))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.base, self.prefix)
    }
}

/// Percent-encode a path segment (model names are usually plain, but need not be).
fn escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One input of a model, as its metadata gives it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct InputMeta {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

#[derive(Debug, serde::Deserialize)]
struct ModelMetadata {
    inputs: Vec<InputMeta>,
    #[serde(default)]
    outputs: Vec<InputMeta>,
}

/// Where POSIX shared-memory objects live on Linux.
const SHM_DIR: &str = "/dev/shm";

/// The shared-memory objects of one service's requests ([`Wire::Shm`]): registered with the
/// server under `regions`; their files are removed when this is dropped.
#[derive(Debug)]
pub struct ShmObjects {
    /// (region name, file) per object.
    pub regions: Vec<(String, std::path::PathBuf)>,
}

impl Drop for ShmObjects {
    fn drop(&mut self) {
        for (_, path) in &self.regions {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A ready-to-send inference request of one service: the body is built once and shared by every
/// request (cloning [`Bytes`] is a reference count).
#[derive(Debug, Clone)]
pub struct PreparedRequest {
    pub service: String,
    pub url: Uri,
    pub body: Bytes,
    /// `Inference-Header-Content-Length`, for binary bodies.
    pub json_len: Option<usize>,
    /// The input shapes sent (batch dimension 1), for the report.
    pub shapes: Vec<(String, String, Vec<i64>)>,
    /// [`Wire::Shm`]: the shared-memory objects the body names.
    pub shm: Option<std::sync::Arc<ShmObjects>>,
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// An HTTP status other than 200.
    Status(u16),
    /// Connection refused, reset, or the request could not be written.
    Connection,
    /// 200 with a body that is not an inference response.
    BadResponse,
}

/// The KServe v2 HTTP client.
#[derive(Clone)]
pub struct Client {
    http: HyperClient<HttpConnector, Full<Bytes>>,
    pub endpoint: Endpoint,
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Client {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(Duration::from_secs(10)));
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(conn);
        Client { http, endpoint }
    }

    async fn get(&self, url: &str) -> Result<(StatusCode, Bytes), String> {
        let uri: Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
        let req = Request::get(uri).body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
        let resp = self.http.request(req).await.map_err(|e| describe(&e))?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, body))
    }

    /// What the endpoint says of itself (`GET /v2`, and a parva server's `/metrics`); empty
    /// fields where it says nothing. Never fails: a report without it is still a report.
    pub async fn server_info(&self) -> crate::report::ServerInfo {
        let mut info = crate::report::ServerInfo::default();
        if let Ok((s, body)) = self.get(&self.endpoint.url("/v2")).await
            && s.is_success()
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
        {
            info.name = v["name"].as_str().map(str::to_string);
            info.version = v["version"].as_str().map(str::to_string);
        }
        if let Ok((s, body)) = self.get(&self.endpoint.url("/metrics")).await
            && s.is_success()
        {
            info.read_metrics(&String::from_utf8_lossy(&body));
        }
        info
    }

    /// Wait until `/v2/models/{service}/ready` answers 200, for at most `wait`. A 4xx other than
    /// 408/429 (the server does not know the service) fails at once.
    pub async fn wait_ready(&self, service: &str, wait: Duration) -> Result<(), VerifyError> {
        let url = self.endpoint.model_url(service, "/ready");
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let last = match self.get(&url).await {
                Ok((s, _)) if s == StatusCode::OK => return Ok(()),
                Ok((s, body)) if s.is_client_error() && s != StatusCode::REQUEST_TIMEOUT && s != StatusCode::TOO_MANY_REQUESTS => {
                    return Err(VerifyError::Service {
                        service: service.to_string(),
                        url,
                        problem: format!("the endpoint does not serve it (HTTP {}: {})", s.as_u16(), snippet(&body)),
                    });
                }
                Ok((s, body)) => Err(format!("HTTP {}: {}", s.as_u16(), snippet(&body))),
                Err(why) => Err(why),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(match last {
                    Err(why) if why.starts_with("HTTP") => VerifyError::Service {
                        service: service.to_string(),
                        url,
                        problem: format!("not ready after {:.0} s (last answer {why}); raise --wait-ready", wait.as_secs_f64()),
                    },
                    Err(why) | Ok(why) => VerifyError::Unreachable { url, why },
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// GET `/v2/models/{service}` and build the service's request from it.
    pub async fn prepare(&self, service: &str, wire: Wire) -> Result<PreparedRequest, VerifyError> {
        let url = self.endpoint.model_url(service, "");
        let (status, body) = self.get(&url).await.map_err(|why| VerifyError::Unreachable { url: url.clone(), why })?;
        let meta_err = |problem: String| VerifyError::Metadata { service: service.to_string(), url: url.clone(), problem };
        if status != StatusCode::OK {
            return Err(meta_err(format!("HTTP {}: {}", status.as_u16(), snippet(&body))));
        }
        let meta: ModelMetadata = serde_json::from_slice(&body).map_err(|e| meta_err(format!("not KServe v2 model metadata ({e})")))?;
        let infer = self.endpoint.model_url(service, "/infer");
        let uri: Uri = infer.parse().map_err(|e| meta_err(format!("bad URL {infer}: {e}")))?;
        if wire != Wire::Shm {
            return build_request(service, uri, &meta.inputs, wire).map_err(meta_err);
        }
        let (req, files) = build_shm_request(service, uri, &meta.inputs, &meta.outputs, std::path::Path::new(SHM_DIR)).map_err(meta_err)?;
        for (name, path, bytes) in &files {
            let key = format!("/{}", path.file_name().and_then(|n| n.to_str()).unwrap_or_default());
            let body = json!({"key": key, "offset": 0, "byte_size": bytes});
            let url = self.endpoint.url(&format!("/v2/systemsharedmemory/region/{name}/register"));
            let (status, answer) = self.post_json(&url, &body).await.map_err(|why| VerifyError::Unreachable { url: url.clone(), why })?;
            if status != StatusCode::OK {
                return Err(VerifyError::Service {
                    service: service.to_string(),
                    url,
                    problem: format!(
                        "registering shared memory {key} failed (HTTP {}: {}); --wire shm needs the server on this machine, serving the system shared-memory extension",
                        status.as_u16(),
                        snippet(&answer)
                    ),
                });
            }
        }
        Ok(req)
    }

    /// Unregister a service's shared-memory regions (the files go when the request is dropped).
    pub async fn release(&self, req: &PreparedRequest) {
        for (name, _) in req.shm.iter().flat_map(|s| s.regions.iter()) {
            let url = self.endpoint.url(&format!("/v2/systemsharedmemory/region/{name}/unregister"));
            if let Err(why) = self.post_json(&url, &json!({})).await {
                tracing::warn!(region = %name, %why, "could not unregister a shared-memory region");
            }
        }
    }

    async fn post_json(&self, url: &str, body: &Value) -> Result<(StatusCode, Bytes), String> {
        let uri: Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
        let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let req = Request::post(uri).header(header::CONTENT_TYPE, "application/json").body(Full::new(Bytes::from(bytes))).map_err(|e| e.to_string())?;
        let resp = self.http.request(req).await.map_err(|e| describe(&e))?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, body))
    }

    /// Send one prepared request and read the whole answer.
    pub async fn infer(&self, req: &PreparedRequest) -> Outcome {
        let mut b = Request::builder().method(Method::POST).uri(req.url.clone());
        b = match req.json_len {
            Some(n) => b.header(header::CONTENT_TYPE, "application/octet-stream").header(HEADER_LEN, n),
            None => b.header(header::CONTENT_TYPE, "application/json"),
        };
        let Ok(r) = b.body(Full::new(req.body.clone())) else { return Outcome::Connection };
        let resp = match self.http.request(r).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::debug!(service = %req.service, error = %describe(&e), "request failed");
                return Outcome::Connection;
            }
        };
        let status = resp.status();
        let json_len = resp.headers().get(HEADER_LEN).and_then(|v| v.to_str().ok()?.trim().parse::<usize>().ok());
        let body = match resp.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return Outcome::Connection,
        };
        if status != StatusCode::OK {
            return Outcome::Status(status.as_u16());
        }
        if is_inference_response(&body, json_len) { Outcome::Ok } else { Outcome::BadResponse }
    }
}

/// The error and its causes in one line (hyper's top-level message alone says little).
fn describe(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let t = text.trim();
    if t.chars().count() > 200 { format!("{}...", t.chars().take(200).collect::<String>()) } else { t.to_string() }
}

/// Whether a 200 body is an inference response: its JSON part has an `outputs` array.
fn is_inference_response(body: &[u8], json_len: Option<usize>) -> bool {
    let head = match json_len {
        Some(n) if n <= body.len() => &body[..n],
        Some(_) => return false,
        None => body,
    };
    serde_json::from_slice::<Value>(head).is_ok_and(|v| v.get("outputs").is_some_and(Value::is_array))
}

/// Bytes per element of a fixed-size KServe v2 datatype (`BYTES` is handled apart).
fn element_size(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "BOOL" | "UINT8" | "INT8" => 1,
        "UINT16" | "INT16" | "FP16" | "BF16" => 2,
        "UINT32" | "INT32" | "FP32" => 4,
        "UINT64" | "INT64" | "FP64" => 8,
        _ => return None,
    })
}

/// The request of `service` for `inputs`: one row of zeros each (`BYTES` elements are the
/// one-character string "0"). A leading `-1` is the batch dimension and becomes 1; any other `-1`
/// (a dynamic dimension) also becomes 1, with a warning.
pub fn build_request(service: &str, url: Uri, inputs: &[InputMeta], wire: Wire) -> Result<PreparedRequest, String> {
    if inputs.is_empty() {
        return Err("lists no inputs".into());
    }
    let mut json_inputs = Vec::with_capacity(inputs.len());
    let mut tail = Vec::new();
    let mut shapes = Vec::with_capacity(inputs.len());
    for inp in inputs {
        let shape = row_shape(service, inp)?;
        let n: usize = shape.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d as usize)).filter(|n| *n <= 1 << 28).ok_or_else(|| {
            format!("input {:?} has shape {:?}: over 2^28 elements in one row", inp.name, inp.shape)
        })?;
        let (bytes, data): (Vec<u8>, Value) = match (inp.datatype.as_str(), element_size(&inp.datatype)) {
            ("BYTES", _) => {
                let one = [1u8, 0, 0, 0, b'0'];
                (one.repeat(n), Value::Array(vec![json!("0"); n]))
            }
            ("BOOL", _) => (vec![0u8; n], Value::Array(vec![json!(false); n])),
            (dt, Some(size)) => {
                let zero = if dt.starts_with("FP") || dt == "BF16" { json!(0.0) } else { json!(0) };
                (vec![0u8; n * size], Value::Array(vec![zero; n]))
            }
            (dt, None) => return Err(format!("input {:?} has datatype {dt:?}, which is not a KServe v2 datatype", inp.name)),
        };
        let mut j = json!({"name": inp.name, "shape": shape, "datatype": inp.datatype});
        match wire {
            // (Shared-memory requests are built by `build_shm_request`; here they fall back to binary.)
            Wire::Binary | Wire::Shm => {
                j["parameters"] = json!({"binary_data_size": bytes.len()});
                tail.extend_from_slice(&bytes);
            }
            Wire::Json => j["data"] = data,
        }
        json_inputs.push(j);
        shapes.push((inp.name.clone(), inp.datatype.clone(), shape));
    }
    let mut body = json!({"inputs": json_inputs});
    if wire != Wire::Json {
        body["parameters"] = json!({"binary_data_output": true});
    }
    let mut bytes = serde_json::to_vec(&body).map_err(|e| format!("encode request: {e}"))?;
    let json_len = bytes.len();
    let binary = wire != Wire::Json;
    bytes.extend_from_slice(&tail);
    Ok(PreparedRequest { service: service.to_string(), url, body: Bytes::from(bytes), json_len: binary.then_some(json_len), shapes, shm: None })
}

/// One row's shape of a metadata shape: the batch dimension (and, with a warning, any other
/// dynamic one) becomes 1.
fn row_shape(service: &str, t: &InputMeta) -> Result<Vec<i64>, String> {
    let mut shape = t.shape.clone();
    for (i, d) in shape.iter_mut().enumerate() {
        if *d == -1 {
            if i > 0 {
                tracing::warn!(service, tensor = %t.name, dim = i, "dynamic dimension sent as 1");
            }
            *d = 1;
        } else if *d < 0 {
            return Err(format!("tensor {:?} has shape {:?}: dimension {d} is neither -1 nor a size", t.name, t.shape));
        }
    }
    Ok(shape)
}

/// One row's shape and bytes (fixed-size datatypes only, at most 1 GiB), for shared memory.
fn one_row(service: &str, t: &InputMeta) -> Result<(Vec<i64>, usize), String> {
    let shape = row_shape(service, t)?;
    let size = element_size(&t.datatype).ok_or_else(|| format!("tensor {:?}: datatype {:?} cannot go through shared memory here", t.name, t.datatype))?;
    let n = shape.iter().try_fold(size, |acc, d| acc.checked_mul(*d as usize)).filter(|n| *n <= 1 << 30).ok_or_else(|| {
        format!("tensor {:?} has shape {:?}: over 1 GiB in one row", t.name, t.shape)
    })?;
    Ok((shape, n))
}

/// The [`Wire::Shm`] request of `service`: one row of zeros per input in a shared-memory object
/// in `dir`, the outputs asked into a second one. Returns the request and, per object, its
/// region name, file and size, for registering.
pub fn build_shm_request(service: &str, url: Uri, inputs: &[InputMeta], outputs: &[InputMeta], dir: &std::path::Path) -> Result<(PreparedRequest, Vec<(String, std::path::PathBuf, usize)>), String> {
    if inputs.is_empty() {
        return Err("lists no inputs".into());
    }
    if outputs.is_empty() {
        return Err("lists no outputs, so --wire shm cannot size its output region".into());
    }
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tag = format!("parva-verify-{}-{}", std::process::id(), SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let (in_name, out_name) = (format!("{tag}-in"), format!("{tag}-out"));
    let (mut json_inputs, mut shapes, mut in_bytes) = (Vec::new(), Vec::new(), 0usize);
    for inp in inputs {
        let (shape, n) = one_row(service, inp)?;
        json_inputs.push(json!({"name": inp.name, "shape": shape, "datatype": inp.datatype,
            "parameters": {"shared_memory_region": in_name, "shared_memory_byte_size": n, "shared_memory_offset": in_bytes}}));
        shapes.push((inp.name.clone(), inp.datatype.clone(), shape));
        in_bytes += n;
    }
    let (mut json_outputs, mut out_bytes) = (Vec::new(), 0usize);
    for out in outputs {
        let (_, n) = one_row(service, out)?;
        json_outputs.push(json!({"name": out.name,
            "parameters": {"shared_memory_region": out_name, "shared_memory_byte_size": n, "shared_memory_offset": out_bytes}}));
        out_bytes += n;
    }
    let objects = ShmObjects { regions: vec![(in_name, dir.join(format!("{tag}-in"))), (out_name, dir.join(format!("{tag}-out")))] };
    let create = |path: &std::path::Path, len: usize| std::fs::write(path, vec![0u8; len]).map_err(|e| format!("creating shared memory {}: {e}", path.display()));
    create(&objects.regions[0].1, in_bytes)?;
    create(&objects.regions[1].1, out_bytes)?;
    let files = vec![
        (objects.regions[0].0.clone(), objects.regions[0].1.clone(), in_bytes),
        (objects.regions[1].0.clone(), objects.regions[1].1.clone(), out_bytes),
    ];
    let body = serde_json::to_vec(&json!({"inputs": json_inputs, "outputs": json_outputs})).map_err(|e| format!("encode request: {e}"))?;
    let req = PreparedRequest { service: service.to_string(), url, body: Bytes::from(body), json_len: None, shapes, shm: Some(std::sync::Arc::new(objects)) };
    Ok((req, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Vec<InputMeta> {
        serde_json::from_value(json!([
            {"name": "x", "datatype": "FP32", "shape": [-1, 2, 3]},
            {"name": "ids", "datatype": "INT64", "shape": [-1, 4]},
        ]))
        .unwrap()
    }

    #[test]
    fn endpoints_parse_and_name_their_problem() {
        let e = Endpoint::parse("http://127.0.0.1:8000/").unwrap();
        assert_eq!(e.model_url("a b/c", "/infer"), "http://127.0.0.1:8000/v2/models/a%20b%2Fc/infer");
        let e = Endpoint::parse("http://host:9/kserve").unwrap();
        assert_eq!(e.url("/v2"), "http://host:9/kserve/v2");
        for (bad, why) in [("https://h:1", "https"), ("127.0.0.1:8000", "scheme"), ("ftp://h", "ftp"), ("http://h:1/?q=1", "query"), ("http://", "URL")] {
            let m = Endpoint::parse(bad).unwrap_err().to_string();
            assert!(m.contains(bad) && m.contains(why), "{bad}: {m}");
        }
    }

    #[test]
    fn binary_requests_carry_one_row_of_zeros_after_the_json_header() {
        let r = build_request("svc", "http://h/v2/models/svc/infer".parse().unwrap(), &inputs(), Wire::Binary).unwrap();
        let n = r.json_len.unwrap();
        let head: Value = serde_json::from_slice(&r.body[..n]).unwrap();
        assert_eq!(head["inputs"][0]["shape"], json!([1, 2, 3]));
        assert_eq!(head["inputs"][0]["parameters"]["binary_data_size"], 24);
        assert_eq!(head["inputs"][1]["parameters"]["binary_data_size"], 32);
        assert_eq!(head["parameters"]["binary_data_output"], true);
        assert_eq!(r.body.len() - n, 56);
        assert!(r.body[n..].iter().all(|b| *b == 0));
    }

    #[test]
    fn json_requests_carry_flat_zeros_of_the_datatype() {
        let r = build_request("svc", "http://h/x".parse().unwrap(), &inputs(), Wire::Json).unwrap();
        assert!(r.json_len.is_none());
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["inputs"][0]["data"], json!([0.0, 0.0, 0.0, 0.0, 0.0, 0.0]));
        assert_eq!(v["inputs"][1]["data"], json!([0, 0, 0, 0]));
        assert!(v.get("parameters").is_none());
    }

    #[test]
    fn unusable_metadata_is_refused_with_the_input_named() {
        let url: Uri = "http://h/x".parse().unwrap();
        let m = |v: Value| serde_json::from_value::<Vec<InputMeta>>(v).unwrap();
        let e = build_request("s", url.clone(), &m(json!([{"name": "x", "datatype": "FP8", "shape": [-1]}])), Wire::Binary).unwrap_err();
        assert!(e.contains("\"x\"") && e.contains("FP8"), "{e}");
        let e = build_request("s", url.clone(), &m(json!([{"name": "y", "datatype": "FP32", "shape": [-1, -3]}])), Wire::Binary).unwrap_err();
        assert!(e.contains("\"y\"") && e.contains("-3"), "{e}");
        assert!(build_request("s", url.clone(), &[], Wire::Json).unwrap_err().contains("no inputs"));
        // BYTES: a 4-byte length then the string, per element.
        let r = build_request("s", url, &m(json!([{"name": "t", "datatype": "BYTES", "shape": [-1, 2]}])), Wire::Binary).unwrap();
        assert_eq!(&r.body[r.json_len.unwrap()..], &[1, 0, 0, 0, b'0', 1, 0, 0, 0, b'0']);
    }

    #[test]
    fn responses_are_recognised_by_their_outputs() {
        assert!(is_inference_response(br#"{"model_name":"m","outputs":[]}"#, None));
        let mut b = br#"{"outputs":[{"name":"y"}]}"#.to_vec();
        let n = b.len();
        b.extend_from_slice(&[0, 0, 0, 0]);
        assert!(is_inference_response(&b, Some(n)));
        assert!(!is_inference_response(&b, Some(n + 10)));
        assert!(!is_inference_response(b"<html>", None));
        assert!(!is_inference_response(br#"{"error":"x"}"#, None));
    }
}
