//! The generator against an in-process fake KServe v2 server (axum): open-loop sends, latency
//! from the scheduled time, the connection cap showing as lag and latency, the in-flight cap as
//! drops, timeouts and HTTP failures counted by cause, and endpoint errors.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parva_verify::{Distribution, Endpoint, Live, ServiceSpec, Spec, VerifyError, Wire, verify};
use serde_json::json;

/// Per model: (delay before answering, status). Unknown models get 404.
#[derive(Default)]
struct Fake {
    models: BTreeMap<String, (Duration, u16)>,
    requests: AtomicU64,
}

async fn ready(State(f): State<Arc<Fake>>, Path(m): Path<String>) -> StatusCode {
    if f.models.contains_key(&m) { StatusCode::OK } else { StatusCode::NOT_FOUND }
}

async fn meta(State(f): State<Arc<Fake>>, Path(m): Path<String>) -> Response {
    if !f.models.contains_key(&m) {
        return (StatusCode::NOT_FOUND, axum::Json(json!({"error": format!("unknown model {m}")}))).into_response();
    }
    axum::Json(json!({"name": m, "platform": "fake", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
                      "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}]}))
    .into_response()
}

/// Checks the body like a real server (binary sizes or JSON data), then answers after the delay.
async fn infer(State(f): State<Arc<Fake>>, Path(m): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    f.requests.fetch_add(1, Ordering::Relaxed);
    let Some(&(delay, status)) = f.models.get(&m) else { return StatusCode::NOT_FOUND.into_response() };
    let json_len = headers.get("inference-header-content-length").and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let head: serde_json::Value = match serde_json::from_slice(&body[..json_len.unwrap_or(body.len())]) {
        Ok(v) => v,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    let input = &head["inputs"][0];
    let well_formed = input["shape"] == json!([1, 4])
        && match json_len {
            Some(n) => input["parameters"]["binary_data_size"] == 16 && body.len() == n + 16,
            None => input["data"] == json!([0.0, 0.0, 0.0, 0.0]),
        };
    if !well_formed {
        return StatusCode::BAD_REQUEST.into_response();
    }
    tokio::time::sleep(delay).await;
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(json!({"model_name": m, "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 1], "data": [0.0]}]}))).into_response()
}

async fn serve(models: &[(&str, u64, u16)]) -> (SocketAddr, Arc<Fake>) {
    let fake = Arc::new(Fake {
        models: models.iter().map(|(m, ms, s)| (m.to_string(), (Duration::from_millis(*ms), *s))).collect(),
        requests: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/v2/models/{m}/ready", get(ready))
        .route("/v2/models/{m}", get(meta))
        .route("/v2/models/{m}/infer", post(infer))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, fake)
}

fn spec(addr: SocketAddr, services: &[(&str, f64, f64)]) -> Spec {
    Spec {
        endpoint: Endpoint::parse(&format!("http://{addr}")).unwrap(),
        services: services.iter().map(|(n, rate, slo)| ServiceSpec { name: n.to_string(), model: None, rate: *rate, slo_ms: *slo }).collect(),
        trace: None,
        distribution: Distribution::Constant,
        seed: 1,
        rate_scale: 1.0,
        percentile: 99.0,
        duration_s: 2.5,
        warmup_s: 0.5,
        max_in_flight: 1000,
        connections: None,
        timeout: Duration::from_secs(10),
        wait_ready: Duration::from_secs(5),
        wire: Wire::Binary,
        tool: "test".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_on_schedule_and_latency_includes_the_server_time() {
    let (addr, fake) = serve(&[("slow", 100, 200), ("fast", 0, 200)]).await;
    for wire in [Wire::Binary, Wire::Json] {
        let mut s = spec(addr, &[("slow", 40.0, 1000.0), ("fast", 20.0, 1000.0)]);
        s.wire = wire;
        let v = verify(&s, Arc::new(Live::default())).await.unwrap();
        let (slow, fast) = (&v.report.services[0], &v.report.services[1]);
        // Constant arrivals: exactly rate x window requests are due in the 2 s window.
        assert_eq!((slow.scheduled, fast.scheduled), (80, 40), "{wire:?}");
        // Open loop: 100 ms answers do not slow the sending; all are sent and succeed.
        assert_eq!((slow.sent, slow.succeeded, slow.failed, slow.dropped), (80, 80, 0, 0), "{slow:?}");
        assert_eq!(fast.succeeded, 40, "{fast:?}");
        assert!((slow.offered_rate - 40.0).abs() < 1e-9 && (slow.achieved_rate - 40.0).abs() < 1e-9);
        assert!(slow.p50_ms.unwrap() >= 100.0, "{slow:?}");
        assert!(v.report.all_pass, "{}", parva_verify::report::table(&v.report));
    }
    // Warm-up requests were sent too: 2.5 s of 60/s over both wires.
    assert!(fake.requests.load(Ordering::Relaxed) >= 2 * 145, "{}", fake.requests.load(Ordering::Relaxed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generator_that_falls_behind_shows_lag_latency_and_drops_not_a_lower_rate() {
    let (addr, _) = serve(&[("svc", 100, 200)]).await;
    // One connection serves at most 10 requests/s; 30/s are due. At most 10 wait at once.
    let mut s = spec(addr, &[("svc", 30.0, 500.0)]);
    s.connections = Some(1);
    s.max_in_flight = 10;
    let v = verify(&s, Arc::new(Live::default())).await.unwrap();
    let r = &v.report.services[0];
    let table = parva_verify::report::table(&v.report);
    // The offered rate is the schedule's, not what the generator managed to send.
    assert_eq!(r.scheduled, 60, "{table}");
    assert!((r.offered_rate - 30.0).abs() < 1e-9);
    assert!(r.dropped > 0 && r.sent < r.scheduled, "{table}");
    assert_eq!(r.sent, r.succeeded + r.failed);
    assert!(r.sent_rate < 0.8 * r.offered_rate, "{table}");
    // Requests queued behind up to 9 others on the one connection: lag and latency near a second.
    assert!(r.lag_p99_ms.unwrap() > 500.0 && r.p99_ms.unwrap() > 500.0, "{table}");
    // Measured from the actual send, as perf_analyzer does, everything looks fine.
    assert!(r.p99_from_send_ms.unwrap() * 3.0 < r.p99_ms.unwrap(), "{table}");
    assert!(!r.pass && !v.report.all_pass);
    assert!(v.report.generator_warning.as_deref().is_some_and(|w| w.contains("svc")), "{table}");
    assert!(table.contains("warning: the load generator sent requests late"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_http_errors_are_failures_by_cause() {
    let (addr, _) = serve(&[("stuck", 3000, 200), ("busy", 0, 429)]).await;
    let mut s = spec(addr, &[("stuck", 5.0, 1000.0), ("busy", 10.0, 1000.0)]);
    s.timeout = Duration::from_millis(300);
    let v = verify(&s, Arc::new(Live::default())).await.unwrap();
    let (stuck, busy) = (&v.report.services[0], &v.report.services[1]);
    assert_eq!(stuck.failed_by.get("timeout"), Some(&10), "{stuck:?}");
    assert_eq!((stuck.succeeded, stuck.p99_ms), (0, None));
    assert_eq!(busy.failed_by.get("429"), Some(&20), "{busy:?}");
    assert_eq!(busy.attainment_pct, 0.0);
    assert!(!stuck.pass && !busy.pass);
    assert!(busy.reason.as_deref().unwrap().contains("429 x20"), "{busy:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_problems_name_the_service_and_the_url() {
    let (addr, fake) = serve(&[("known", 0, 200)]).await;
    let e = verify(&spec(addr, &[("known", 1.0, 100.0), ("missing", 1.0, 100.0)]), Arc::new(Live::default())).await.unwrap_err();
    assert!(matches!(e, VerifyError::Service { .. }), "{e}");
    let m = e.to_string();
    assert!(m.contains("\"missing\"") && m.contains(&format!("http://{addr}/v2/models/missing/ready")) && m.contains("404"), "{m}");
    assert_eq!(fake.requests.load(Ordering::Relaxed), 0, "no load before every service checks out");

    // Nobody listens: a clear error once the wait is over.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut s = spec(free, &[("known", 1.0, 100.0)]);
    s.wait_ready = Duration::from_millis(300);
    let e = verify(&s, Arc::new(Live::default())).await.unwrap_err();
    assert!(matches!(e, VerifyError::Unreachable { .. }), "{e}");
    assert!(e.to_string().contains(&free.to_string()), "{e}");
}

/// Issue 36: `--equal-requests` gives every load the requests of the highest: the measured
/// seconds times the load are the same at each, the warm-up stays; past a day is refused.
#[test]
fn each_load_at_equal_requests_is_measured_on_as_many_requests() {
    let s = spec("127.0.0.1:1".parse().unwrap(), &[("a", 100.0, 200.0)]);
    let scales = [0.1, 0.25, 0.5, 1.0];
    for &x in &scales {
        let at = s.at_load(x, &scales, true).unwrap();
        assert_eq!((at.rate_scale, at.warmup_s), (x, s.warmup_s));
        // 2 s measured at x1: 100 x 2 = 200 requests at every load.
        let requests = 100.0 * x * (at.duration_s - at.warmup_s);
        assert!((requests - 200.0).abs() < 1e-9, "x{x}: {} s, {requests} requests", at.duration_s);
        // Without it, every load runs --duration.
        assert_eq!(s.at_load(x, &scales, false).unwrap().duration_s, s.duration_s);
    }
    let err = s.at_load(1e-5, &[1e-5, 1.0], true).unwrap_err().to_string();
    assert!(err.contains("--equal-requests: load x0.00001 would run 200000 s"), "{err}");
}
