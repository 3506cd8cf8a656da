//! The router tier (`parva route`): one stateless KServe v2 front for every service of a map,
//! spreading each service's requests over its segments (`parva segment` processes, on any node)
//! in proportion to their planned capacity.
//!
//! - Spreading: smooth weighted round robin over the service's healthy segments, weights from
//!   [`DeploymentMap::segment_shares`] (profiled throughput): over any window each segment gets
//!   its share, interleaved, whatever the load.
//! - Health: every segment's `/v2/health/ready` is polled every `health_interval`; a segment
//!   that fails a check, refuses a connection or breaks one mid-request is *ejected* (gets no
//!   requests) until a check passes again. A request whose connection was refused (nothing was
//!   sent) is tried on the next healthy segment, so only requests a segment held when it died
//!   fail. With no healthy segment a service answers 503 at once, never hangs.
//! - Admission and batching stay in the segments (the same code as `parva serve`): their 429s
//!   and 503s pass through unchanged, as do all their responses (bodies are forwarded as bytes,
//!   binary tensor extension included, never decoded here).
//! - Limits: the body cap (413 on `Content-Length` before reading), the memory bound of bodies
//!   in flight (429), the body timeout (408), the connection limits of [`crate::listen`], and a
//!   per-request upstream timeout (504).
//! - `/metrics`: `parva_route_requests_total{service,segment,code}`,
//!   `parva_route_request_seconds{service}`, `parva_route_segment_up{service,segment}` and
//!   `parva_route_ejections_total{service,segment}`.
//!
//! Replicas share nothing: run as many side by side as the request rate needs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router as Http;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use parva_core::DeploymentMap;
use parva_core::segments::{SegmentId, SegmentUrls};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::error::{InferError, ServeError, served_list};
use crate::front::{ApiError, BodyGate, BodyLimit, Front};
use crate::http::HttpLimits;
use crate::kserve::HEADER_LEN;
use crate::metrics::{ServiceLabel, label_set, seconds_histogram};
use crate::upstream::{ConnPool, ExchangeError};

/// Everything [`route`] needs.
#[derive(Debug, Clone)]
pub struct RouteOptions {
    pub map: DeploymentMap,
    /// Where each segment listens.
    pub urls: SegmentUrls,
    pub listen: SocketAddr,
    /// Body cap, memory bound, timeouts and connection limits of the HTTP edge (the per-model
    /// row limits do not apply: bodies are not decoded here).
    pub http: HttpLimits,
    /// How often each segment's readiness is checked.
    pub health_interval: Duration,
    /// A check that takes longer fails.
    pub health_timeout: Duration,
    /// Longest a segment may take to answer one request (504 after).
    pub upstream_timeout: Duration,
    /// Most connections to one segment (requests past it wait for one to be free).
    pub max_segment_connections: usize,
}

impl RouteOptions {
    /// Options with defaults: 127.0.0.1:8000, checks every 250 ms (500 ms timeout), 30 s upstream
    /// timeout, the default HTTP limits.
    pub fn new(map: DeploymentMap, urls: SegmentUrls) -> RouteOptions {
        RouteOptions {
            map,
            urls,
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            http: HttpLimits::default(),
            health_interval: Duration::from_millis(250),
            health_timeout: Duration::from_millis(500),
            upstream_timeout: Duration::from_secs(30),
            max_segment_connections: 256,
        }
    }
}

label_set!(SegmentLabel { service: String, segment: String });
label_set!(RouteCodeLabel { service: String, segment: String, code: u16 });

/// The router tier's metrics.
pub struct RouteMetrics {
    registry: Registry,
    pub requests: Family<RouteCodeLabel, Counter>,
    pub seconds: Family<ServiceLabel, Histogram, fn() -> Histogram>,
    pub up: Family<SegmentLabel, Gauge>,
    pub ejections: Family<SegmentLabel, Counter>,
}

impl RouteMetrics {
    fn new() -> RouteMetrics {
        let mut registry = Registry::default();
        let requests = Family::<RouteCodeLabel, Counter>::default();
        let seconds = Family::<ServiceLabel, Histogram, fn() -> Histogram>::new_with_constructor(seconds_histogram);
        let up = Family::<SegmentLabel, Gauge>::default();
        let ejections = Family::<SegmentLabel, Counter>::default();
        registry.register("parva_route_requests", "Requests by service, the segment that answered (empty: none) and HTTP status", requests.clone());
        registry.register("parva_route_request_seconds", "Time from a request's arrival at the router to its answer", seconds.clone());
        registry.register("parva_route_segment_up", "1 while the segment gets requests, 0 while it is ejected", up.clone());
        registry.register("parva_route_ejections", "Times the segment was ejected (failed check, refused or broken connection)", ejections.clone());
        RouteMetrics { registry, requests, seconds, up, ejections }
    }

    /// The OpenMetrics text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// One segment as the router sees it.
pub struct Upstream {
    pub id: SegmentId,
    pub service: String,
    /// `http://host:port`.
    pub base: String,
    /// Share of its service's capacity.
    pub weight: f64,
    up: AtomicBool,
    pool: ConnPool,
    /// The id as a response header value, made once.
    header: HeaderValue,
    /// `parva_route_requests_total{code="200"}` of this segment, looked up once.
    ok: std::sync::OnceLock<Counter>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("id", &self.id).field("base", &self.base).field("weight", &self.weight).field("up", &self.is_up()).finish()
    }
}

impl Upstream {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }
}

/// A service's segments and the smooth weighted round robin's state over them.
#[derive(Debug)]
struct ServiceRoutes {
    upstreams: Vec<Arc<Upstream>>,
    /// `parva_route_request_seconds` of the service, looked up once.
    seconds: std::sync::OnceLock<Histogram>,
    /// Current weights of the round robin, one per upstream.
    current: Mutex<Vec<f64>>,
}

impl ServiceRoutes {
    /// The next healthy segment not in `skip` (smooth weighted round robin: each segment's
    /// current weight grows by its weight, the largest is picked and pays the total back).
    fn pick(&self, skip: &[usize]) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.upstreams.len()).filter(|i| self.upstreams[*i].is_up() && !skip.contains(i)).collect();
        if candidates.is_empty() {
            return None;
        }
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        Some(crate::router::swrr_pick(&mut cur, |i| self.upstreams[i].weight, &candidates))
    }
}

/// Every service's routes: built once from the map and the segment URLs.
#[derive(Debug)]
pub struct RouteTable {
    services: BTreeMap<String, ServiceRoutes>,
}

impl RouteTable {
    /// Each segment of `map` with its URL and weight; a segment without a URL is an error.
    /// `max_connections` per segment, answers of at most `max_response` bytes.
    pub fn new(map: &DeploymentMap, urls: &SegmentUrls, max_connections: usize, max_response: u64) -> Result<RouteTable, ServeError> {
        if map.segments.is_empty() {
            return Err(ServeError::Config("the deployment map has no segment to route to".into()));
        }
        // Regression (issue 34): rows for segments the map lacks were ignored without a word.
        if let SegmentUrls::List(list) = urls {
            let ids = map.segment_ids();
            let unknown: Vec<String> = list.keys().filter(|id| !ids.contains(id)).map(ToString::to_string).collect();
            if !unknown.is_empty() {
                return Err(ServeError::Config(format!(
                    "--segments lists {} segment(s) the map does not have: {} (the map's: {}); a stale list? regenerate it for this map",
                    unknown.len(),
                    unknown.iter().take(10).cloned().collect::<Vec<_>>().join(", "),
                    ids.iter().take(10).map(ToString::to_string).collect::<Vec<_>>().join(", ")
                )));
            }
        }
        let shares = map.segment_shares();
        let mut services: BTreeMap<String, Vec<Arc<Upstream>>> = BTreeMap::new();
        for seg in &map.segments {
            let id = SegmentId::of(seg);
            let base = urls.url(id).ok_or_else(|| ServeError::Config(format!("--segments gives no URL for segment {id} (service {:?})", seg.service)))?;
            // A segment with no capacity on record still gets a little traffic when others fail.
            let weight = shares.get(&id).copied().filter(|w| *w > 0.0).unwrap_or(1e-6);
            let pool = ConnPool::new(&base, max_connections, Duration::from_secs(1), max_response).map_err(|e| ServeError::Config(format!("segment {id}: {e}")))?;
            services.entry(seg.service.clone()).or_default().push(Arc::new(Upstream {
                id,
                service: seg.service.clone(),
                base,
                weight,
                up: AtomicBool::new(false),
                pool,
                header: HeaderValue::from_str(&id.to_string()).unwrap_or(HeaderValue::from_static("?")),
                ok: std::sync::OnceLock::new(),
            }));
        }
        Ok(RouteTable {
            services: services.into_iter().map(|(name, ups)| (name, ServiceRoutes { current: Mutex::new(vec![0.0; ups.len()]), upstreams: ups, seconds: std::sync::OnceLock::new() })).collect(),
        })
    }

    /// Every upstream, service by service.
    pub fn upstreams(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.services.values().flat_map(|s| s.upstreams.iter())
    }

    /// Every service has a healthy segment.
    pub fn ready(&self) -> bool {
        self.services.values().all(|s| s.upstreams.iter().any(|u| u.is_up()))
    }

    fn service(&self, name: &str) -> Result<&ServiceRoutes, InferError> {
        self.services.get(name).ok_or_else(|| InferError::UnknownModel { name: name.to_string(), served: served_list(&self.services.keys().cloned().collect::<Vec<_>>()) })
    }
}

/// Shared state of the router tier.
struct RouteState {
    table: RouteTable,
    metrics: RouteMetrics,
    limits: HttpLimits,
    upstream_timeout: Duration,
    /// Request bodies in flight.
    gate: BodyGate,
}

impl RouteState {
    /// Mark `u` up or down (ejected); only a change is logged and counted.
    fn set_up(&self, u: &Upstream, up: bool, why: &str) {
        let was = u.up.swap(up, Ordering::SeqCst);
        if !up {
            u.pool.clear();
        }
        if was == up {
            return;
        }
        let label = SegmentLabel { service: u.service.clone(), segment: u.id.to_string() };
        self.metrics.up.get_or_create(&label).set(i64::from(up));
        if was && !up {
            self.metrics.ejections.get_or_create(&label).inc();
            tracing::warn!(segment = %u.id, service = %u.service, url = %u.base, "segment ejected: {why}");
        } else if !was && up {
            tracing::info!(segment = %u.id, service = %u.service, url = %u.base, "segment ready: routing to it");
        }
    }
}

/// Route until `shutdown`, reporting the bound address on `listening`.
pub async fn route(
    opts: RouteOptions,
    listening: impl FnOnce(SocketAddr) + Send,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // A segment's answer is held whole, like a request body: the same cap.
    let table = RouteTable::new(&opts.map, &opts.urls, opts.max_segment_connections, opts.http.max_body_bytes)?;
    let mut http = opts.http.clone();
    if http.max_body_bytes > http.max_inflight_bytes {
        return Err(ServeError::Config(format!(
            "the body cap ({} bytes, --max-body-mib) is over the bound on bodies in flight ({} bytes, --max-inflight-mib): \
             the largest request could never be admitted; raise --max-inflight-mib or lower --max-body-mib",
            http.max_body_bytes, http.max_inflight_bytes
        )));
    }
    let allowed = crate::listen::ensure_fd_room(http.conn.max_connections, 64 + 2 * table.upstreams().count());
    http.conn.max_connections = http.conn.max_connections.min(allowed);
    let listener = tokio::net::TcpListener::bind(opts.listen).await.map_err(|e| ServeError::Bind { addr: opts.listen, source: e })?;
    let addr = listener.local_addr().map_err(ServeError::Http)?;
    let state = Arc::new(RouteState {
        table,
        metrics: RouteMetrics::new(),
        limits: http.clone(),
        upstream_timeout: opts.upstream_timeout,
        gate: BodyGate::new(http.max_inflight_bytes, http.body_timeout),
    });
    for u in state.table.upstreams() {
        state.metrics.up.get_or_create(&SegmentLabel { service: u.service.clone(), segment: u.id.to_string() }).set(0);
    }
    let checker = tokio::spawn(check_health(state.clone(), opts.health_interval, opts.health_timeout));
    listening(addr);
    let app = app(state.clone());
    let listener = crate::listen::LimitedListener::new(listener, http.conn);
    let app = app.into_make_service_with_connect_info::<crate::listen::ConnHandle>();
    let result = axum::serve(listener, app).with_graceful_shutdown(shutdown).await.map_err(ServeError::Http);
    checker.abort();
    result
}

/// Check every segment's readiness every `interval`, all at once, until aborted.
async fn check_health(state: Arc<RouteState>, interval: Duration, timeout: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let checks = state.table.upstreams().cloned().map(|u| {
            let state = state.clone();
            async move {
                let verdict = check_one(&u.pool, timeout).await;
                match verdict {
                    Ok(()) => state.set_up(&u, true, ""),
                    Err(why) => state.set_up(&u, false, &why),
                }
            }
        });
        futures_join_all(checks).await;
    }
}

/// Run futures concurrently and wait for all (a small `join_all` over tokio tasks' worth of
/// futures, without another dependency).
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(futs: impl Iterator<Item = F>) {
    let mut set = tokio::task::JoinSet::new();
    for f in futs {
        set.spawn(f);
    }
    while set.join_next().await.is_some() {}
}

/// One readiness check: `GET /v2/health/ready` answers 200 within `timeout`.
async fn check_one(pool: &ConnPool, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, pool.exchange(hyper::Method::GET, "/v2/health/ready", &[], Bytes::new())).await {
        Err(_) => Err(format!("readiness check took over {} ms", timeout.as_millis())),
        Ok(Err(ExchangeError::Connect(why) | ExchangeError::Sent(why))) => Err(format!("readiness check failed: {why}")),
        Ok(Ok((parts, _))) if parts.status == StatusCode::OK => Ok(()),
        Ok(Ok((parts, _))) => Err(format!("not ready ({})", parts.status)),
    }
}

/// The router tier's state, as the KServe front it is.
#[derive(Clone)]
struct RouteFront(Arc<RouteState>);

fn app(state: Arc<RouteState>) -> Http {
    let max_body = usize::try_from(state.limits.max_body_bytes).unwrap_or(usize::MAX);
    let routes = crate::front::kserve_routes::<RouteFront>()
        .route("/v2/route/segments", get(segments_page))
        .layer(DefaultBodyLimit::max(max_body));
    crate::front::finish(routes, RouteFront(state))
}

impl Front for RouteFront {
    fn server_meta(&self) -> serde_json::Value {
        json!({"name": "parva-route", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data"]})
    }

    fn ready(&self) -> bool {
        self.0.table.ready()
    }

    fn model_ready(&self, name: &str) -> Result<bool, InferError> {
        Ok(self.0.table.service(name)?.upstreams.iter().any(|u| u.is_up()))
    }

    /// Model metadata, from one of the service's healthy segments.
    async fn model_meta(&self, name: String) -> Response {
        forward(&self.0, &name, hyper::Method::GET, format!("/v2/models/{name}"), HeaderMap::new(), Bytes::new()).await
    }

    /// The whole request is taken apart rather than extracted piecewise: axum's `HeaderMap`
    /// extractor would copy every header of every request.
    async fn infer(&self, name: String, req: axum::extract::Request) -> Response {
        let s = &self.0;
        let started = Instant::now();
        let (parts, body) = req.into_parts();
        let headers = parts.headers;
        let resp = match read_body(s, &name, &headers, body).await {
            Ok((bytes, _permit)) => forward(s, &name, hyper::Method::POST, format!("/v2/models/{name}/infer"), headers, bytes).await,
            Err(e) => {
                let known = s.table.services.contains_key(&name);
                let label = RouteCodeLabel { service: if known { name.clone() } else { crate::metrics::UNKNOWN_SERVICE.into() }, segment: String::new(), code: e.status() };
                s.metrics.requests.get_or_create(&label).inc();
                return ApiError(e).into_response();
            }
        };
        if let Some(routes) = s.table.services.get(&name) {
            routes.seconds.get_or_init(|| s.metrics.seconds.get_or_create(&ServiceLabel { service: name.clone() }).clone()).observe(started.elapsed().as_secs_f64());
        }
        resp
    }

    fn metrics_text(&self) -> String {
        self.0.metrics.text()
    }
}

/// Every segment, its URL, weight and whether it gets requests.
async fn segments_page(State(s): State<RouteFront>) -> impl IntoResponse {
    let rows: Vec<_> = s
        .0
        .table
        .upstreams()
        .map(|u| json!({"segment": u.id.to_string(), "service": u.service, "url": u.base, "weight": u.weight, "up": u.is_up()}))
        .collect();
    axum::Json(json!({ "segments": rows }))
}

/// The whole body, within the body cap, memory bound and body timeout.
async fn read_body(s: &RouteState, name: &str, headers: &HeaderMap, body: Body) -> Result<(Bytes, tokio::sync::OwnedSemaphorePermit), InferError> {
    s.table.service(name)?;
    let limit = BodyLimit { model: name.to_string(), limit: s.limits.max_body_bytes, why: "--max-body-mib".into() };
    // The body is held once (forwarded as it is).
    s.gate.read(&limit, headers, body, |len| len).await
}

/// Send the request to the service's next healthy segment and return its answer as it is. A
/// refused connection ejects the segment and tries the next; a connection broken after the
/// request went out ejects it and answers 502 (the request may have run: never sent twice).
async fn forward(s: &RouteState, name: &str, method: hyper::Method, path: String, headers: HeaderMap, body: Bytes) -> Response {
    let routes = match s.table.service(name) {
        Ok(r) => r,
        Err(e) => {
            s.metrics.requests.get_or_create(&RouteCodeLabel { service: crate::metrics::UNKNOWN_SERVICE.into(), segment: String::new(), code: e.status() }).inc();
            return ApiError(e).into_response();
        }
    };
    let mut tried: Vec<usize> = Vec::new();
    let count = |segment: String, code: u16| s.metrics.requests.get_or_create(&RouteCodeLabel { service: name.to_string(), segment, code }).inc();
    loop {
        let Some(i) = routes.pick(&tried) else {
            let down = routes.upstreams.len();
            let e = InferError::NotReady { service: name.to_string(), why: format!("none of its {down} segment(s) is ready (ejected: failed checks or connections)") };
            count(String::new(), e.status());
            return ApiError(e).into_response();
        };
        tried.push(i);
        let u = &routes.upstreams[i];
        let mut send_headers = Vec::with_capacity(3);
        for h in [header::CONTENT_TYPE, header::ACCEPT] {
            if let Some(v) = headers.get(&h) {
                send_headers.push((h, v.clone()));
            }
        }
        if let Some(v) = headers.get(HEADER_LEN) {
            send_headers.push((header::HeaderName::from_static(HEADER_LEN), v.clone()));
        }
        let answer = tokio::time::timeout(s.upstream_timeout, u.pool.exchange(method.clone(), &path, &send_headers, body.clone())).await;
        match answer {
            Err(_) => {
                let e = InferError::SegmentFailed {
                    service: name.to_string(),
                    segment: u.id.to_string(),
                    why: format!("no answer within {} s (--upstream-timeout)", s.upstream_timeout.as_secs_f64()),
                    status: 504,
                };
                count(u.id.to_string(), e.status());
                return ApiError(e).into_response();
            }
            Ok(Err(ExchangeError::Connect(why))) => {
                // Nothing was sent: eject and try the next segment.
                s.set_up(u, false, &format!("connection failed: {why}"));
                continue;
            }
            Ok(Err(ExchangeError::Sent(why))) => {
                s.set_up(u, false, &format!("request failed: {why}"));
                let e = InferError::SegmentFailed { service: name.to_string(), segment: u.id.to_string(), why, status: 502 };
                count(u.id.to_string(), e.status());
                return ApiError(e).into_response();
            }
            Ok(Ok((parts, bytes))) => {
                if parts.status == StatusCode::OK {
                    u.ok.get_or_init(|| s.metrics.requests.get_or_create(&RouteCodeLabel { service: name.to_string(), segment: u.id.to_string(), code: 200 }).clone()).inc();
                } else {
                    count(u.id.to_string(), parts.status.as_u16());
                }
                let mut resp = Response::new(Body::from(bytes));
                *resp.status_mut() = parts.status;
                let h = resp.headers_mut();
                for name in [header::CONTENT_TYPE, header::RETRY_AFTER] {
                    if let Some(v) = parts.headers.get(&name) {
                        h.insert(name, v.clone());
                    }
                }
                if let Some(v) = parts.headers.get(HEADER_LEN) {
                    h.insert(HEADER_LEN, v.clone());
                }
                h.insert("x-parva-segment", u.header.clone());
                return resp;
            }
        }
    }
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
