use std::sync::atomic::AtomicUsize;

use super::*;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use axum::routing::post;
use parva_core::deploy::Segment;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The tests' client (a general-purpose pooled one).
fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

fn seg(node: u32, placement: u8, service: &str, throughput: f64) -> Segment {
    Segment {
        node,
        gpu: 0,
        service: service.into(),
        model: "tiny".into(),
        placement,
        instance_size: 1,
        batch_size: 1,
        num_proc: 1,
        profile: None,
        gpu_type: None,
        throughput: Some(throughput),
        rate: Some(100.0),
        slo_ms: Some(100.0),
        margin_ms: None,
    }
}

fn urls(pairs: &[(&str, String)]) -> SegmentUrls {
    SegmentUrls::List(pairs.iter().map(|(id, u)| (id.parse().unwrap(), u.clone())).collect())
}

#[test]
fn weighted_round_robin_spreads_by_capacity_and_skips_ejected_segments() {
    let map = DeploymentMap { segments: vec![seg(0, 0, "a", 300.0), seg(1, 0, "a", 100.0), seg(1, 1, "b", 10.0)], jobs: vec![] };
    let table = RouteTable::new(&map, &urls(&[("n0-g0-p0", "http://x:1".into()), ("n1-g0-p0", "http://y:1".into()), ("n1-g0-p1", "http://z:1".into())]), 4, 1 << 20).unwrap();
    let a = table.service("a").unwrap();
    assert_eq!(a.pick(&[]), None, "nothing is up before its first check");
    assert!(!table.ready());
    for u in table.upstreams() {
        u.up.store(true, Ordering::SeqCst);
    }
    assert!(table.ready());
    let mut counts = [0usize; 2];
    let mut picks = Vec::new();
    for _ in 0..400 {
        let i = a.pick(&[]).unwrap();
        counts[i] += 1;
        picks.push(i);
    }
    assert_eq!(counts, [300, 100], "in proportion to planned capacity");
    assert!(picks.windows(4).all(|w| w.contains(&0)), "interleaved, not in runs: {:?}", &picks[..12]);
    // An ejected segment gets nothing; a skipped one (just failed) neither.
    a.upstreams[0].up.store(false, Ordering::SeqCst);
    assert!((0..50).all(|_| a.pick(&[]) == Some(1)));
    assert_eq!(a.pick(&[1]), None);
    let e = table.service("c").unwrap_err().to_string();
    assert_eq!(e, "unknown model \"c\": this node serves a, b");
    let missing = RouteTable::new(&map, &urls(&[("n0-g0-p0", "http://x:1".into())]), 4, 1 << 20).unwrap_err().to_string();
    assert!(missing.contains("--segments gives no URL for segment n1-g0-p0 (service \"a\")"), "{missing}");
}

/// A stand-in segment: ready while `ready` holds, answers inference with its own name.
async fn fake_segment(name: &'static str, ready: Arc<AtomicBool>, served: Arc<AtomicUsize>) -> String {
    let app = Http::new()
        .route(
            "/v2/health/ready",
            get({
                let ready = ready.clone();
                move || async move { if ready.load(Ordering::SeqCst) { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE } }
            }),
        )
        .route(
            "/v2/models/{m}/infer",
            post(move |headers: HeaderMap, body: Bytes| async move {
                served.fetch_add(1, Ordering::SeqCst);
                let len = headers.get(HEADER_LEN).cloned();
                let mut resp = Response::new(Body::from([name.as_bytes(), b"|", &body[..]].concat()));
                if let Some(v) = len {
                    resp.headers_mut().insert(HEADER_LEN, v);
                }
                *resp.status_mut() = if body.as_ref() == b"overload" { StatusCode::TOO_MANY_REQUESTS } else { StatusCode::OK };
                resp
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}")
}

/// Start the router with `opts` (until the test ends); its base URL once it listens.
async fn start_route(opts: RouteOptions) -> String {
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(route(opts, move |a| {
        let _ = tx.send(a);
    }, std::future::pending()));
    format!("http://{}", rx.await.unwrap())
}

async fn post_infer(c: &HttpClient, base: &str, service: &str, body: &'static [u8]) -> (u16, String, Option<String>) {
    let req = hyper::Request::post(format!("{base}/v2/models/{service}/infer")).header(HEADER_LEN, "3").body(Full::new(Bytes::from_static(body))).unwrap();
    let resp = c.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let len = resp.headers().get(HEADER_LEN).map(|v| v.to_str().unwrap().to_string());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned(), len)
}

/// Wait until segment `i` of the route table's page is up (`up`) or down: an event, not a
/// wall-clock bound (issue 34). A minute guards against a hang only.
async fn wait_segment(c: &HttpClient, base: &str, i: usize, up: bool) {
    let guard = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, segs) = get_json(c, format!("{base}/v2/route/segments")).await;
        if segs["segments"][i]["up"] == up {
            return;
        }
        assert!(Instant::now() < guard, "segment {i} never became up={up}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn get_json(c: &HttpClient, url: String) -> (u16, serde_json::Value) {
    let resp = c.request(hyper::Request::get(url).body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn router_spreads_forwards_as_is_ejects_a_failing_segment_and_sheds_when_none_is_left() {
    let (ready_a, ready_b) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicBool::new(true)));
    let (served_a, served_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let url_a = fake_segment("A", ready_a.clone(), served_a.clone()).await;
    let url_b = fake_segment("B", ready_b.clone(), served_b.clone()).await;
    // A third segment of the service where nothing listens: refused connections eject it and
    // its requests go to the others, so no request fails for it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url_dead = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let map = DeploymentMap { segments: vec![seg(0, 0, "svc", 200.0), seg(1, 0, "svc", 100.0), seg(1, 4, "svc", 100.0)], jobs: vec![] };
    let mut opts = RouteOptions::new(map, urls(&[("n0-g0-p0", url_a), ("n1-g0-p0", url_b), ("n1-g0-p4", url_dead)]));
    opts.listen = "127.0.0.1:0".parse().unwrap();
    opts.health_interval = Duration::from_millis(100);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(route(opts, move |a| {
        let _ = tx.send(a);
    }, async move { drop(stop_rx.await) }));
    let base = format!("http://{}", rx.await.unwrap());
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(5);
    while get_json(&c, format!("{base}/v2/health/ready")).await.0 != 200 {
        assert!(Instant::now() < deadline, "router never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Forwarded as is: body, binary-extension header, status; 429s pass through.
    let (status, body, len) = post_infer(&c, &base, "svc", b"abc").await;
    assert_eq!(status, 200);
    assert!(body == "A|abc" || body == "B|abc", "{body}");
    assert_eq!(len.as_deref(), Some("3"));
    assert_eq!(post_infer(&c, &base, "svc", b"overload").await.0, 429);
    for _ in 0..298 {
        assert_eq!(post_infer(&c, &base, "svc", b"xyz").await.0, 200, "the dead segment costs no request");
    }
    let (a, b) = (served_a.load(Ordering::SeqCst), served_b.load(Ordering::SeqCst));
    assert_eq!(a + b, 300);
    assert!((a as f64 / b as f64 - 2.0).abs() < 0.1, "2:1 by capacity among live segments: {a} vs {b}");
    let (_, segs) = get_json(&c, format!("{base}/v2/route/segments")).await;
    let up: Vec<bool> = segs["segments"].as_array().unwrap().iter().map(|s| s["up"].as_bool().unwrap()).collect();
    assert_eq!(up, [true, true, false]);
    // A segment that stops being ready is ejected (at its next check) and gets nothing after.
    ready_a.store(false, Ordering::SeqCst);
    wait_segment(&c, &base, 0, false).await;
    let before = served_a.load(Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(post_infer(&c, &base, "svc", b"xyz").await.1, "B|xyz");
    }
    assert_eq!(served_a.load(Ordering::SeqCst), before);
    // None left: 503 (answered by the router, never sent to a segment); not ready.
    ready_b.store(false, Ordering::SeqCst);
    wait_segment(&c, &base, 1, false).await;
    let (sent_a, sent_b) = (served_a.load(Ordering::SeqCst), served_b.load(Ordering::SeqCst));
    let (status, body, _) = post_infer(&c, &base, "svc", b"xyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("none of its 3 segment(s) is ready"), "{body}");
    assert_eq!((served_a.load(Ordering::SeqCst), served_b.load(Ordering::SeqCst)), (sent_a, sent_b));
    assert_eq!(get_json(&c, format!("{base}/v2/health/ready")).await.0, 503);
    // Unknown services are 404 and counted without their name.
    assert_eq!(post_infer(&c, &base, "nope", b"xyz").await.0, 404);
    let metrics = {
        let resp = c.request(hyper::Request::get(format!("{base}/metrics")).body(Full::new(Bytes::new())).unwrap()).await.unwrap();
        String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    };
    assert!(metrics.contains("parva_route_segment_up{service=\"svc\",segment=\"n0-g0-p0\"} 0"), "{metrics}");
    assert!(metrics.contains("parva_route_ejections_total{service=\"svc\",segment=\"n0-g0-p0\"} 1"), "{metrics}");
    assert!(metrics.contains("parva_route_segment_up{service=\"svc\",segment=\"n1-g0-p4\"} 0"), "never up: {metrics}");
    assert!(metrics.contains("parva_route_requests_total{service=\"svc\",segment=\"\",code=\"503\"} 1"), "{metrics}");
    assert!(metrics.contains("parva_route_requests_total{service=\"_unknown\",segment=\"\",code=\"404\"} 1"), "{metrics}");
    // Back when ready again.
    ready_a.store(true, Ordering::SeqCst);
    wait_segment(&c, &base, 0, true).await;
    assert_eq!(post_infer(&c, &base, "svc", b"xyz").await.1, "A|xyz");
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn bodies_over_the_cap_are_refused_before_reading_and_counted() {
    let map = DeploymentMap { segments: vec![seg(0, 0, "svc", 1.0)], jobs: vec![] };
    let url = fake_segment("A", Arc::new(AtomicBool::new(true)), Arc::new(AtomicUsize::new(0))).await;
    let mut opts = RouteOptions::new(map, urls(&[("n0-g0-p0", url)]));
    opts.listen = "127.0.0.1:0".parse().unwrap();
    opts.http.max_body_bytes = 2;
    let base = start_route(opts).await;
    let c = client();
    let (status, body, _) = post_infer(&c, &base, "svc", b"abc").await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("over the limit of 2 bytes"), "{body}");
}

/// A segment slower than --upstream-timeout: 504 for that request, counted, and the segment is not
/// ejected (slow is not dead: its readiness still answers).
#[tokio::test]
async fn a_request_past_the_upstream_timeout_is_a_504_and_the_segment_stays() {
    let checks = Arc::new(AtomicUsize::new(0));
    let counted = checks.clone();
    let app = Http::new()
        .route(
            "/v2/health/ready",
            get(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { StatusCode::OK }
            }),
        )
        .route(
        "/v2/models/{m}/infer",
        post(|| async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            StatusCode::OK
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    let map = DeploymentMap { segments: vec![seg(0, 0, "svc", 1.0)], jobs: vec![] };
    let mut opts = RouteOptions::new(map, urls(&[("n0-g0-p0", url)]));
    opts.listen = "127.0.0.1:0".parse().unwrap();
    opts.upstream_timeout = Duration::from_millis(100);
    opts.health_interval = Duration::from_millis(50);
    let base = start_route(opts).await;
    let c = client();
    while get_json(&c, format!("{base}/v2/health/ready")).await.0 != 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body, _) = post_infer(&c, &base, "svc", b"abc").await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("segment n0-g0-p0 of service") && body.contains("no answer within 0.1 s (--upstream-timeout)"), "{body}");
    // Two more health checks answered after the 504 (events, not a sleep): still up.
    let after = checks.load(Ordering::SeqCst);
    while checks.load(Ordering::SeqCst) < after + 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, segs) = get_json(&c, format!("{base}/v2/route/segments")).await;
    assert_eq!(segs["segments"][0]["up"], true);
}
