//! `parva serve --backend emulated` on small plans, over real HTTP with real worker processes:
//! deadline-aware batching, 429 under overload, 404, readiness, a killed worker's in-flight
//! request failing with 5xx and the worker coming back, graceful shutdown.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::serve_support::{alive, get, metric, post_json, serve_tiny as serve, signal, start, tiny_setup as setup};

fn infer_rows(addr: std::net::SocketAddr, service: &str, rows: usize) -> (u16, Value) {
    let data: Vec<f32> = (0..rows * 2).map(|i| i as f32).collect();
    post_json(addr, &format!("/v2/models/{service}/infer"), &json!({"inputs": [{"name": "x", "shape": [rows, 2], "datatype": "FP32", "data": data}]}))
}

/// Send `n` requests of `rows` rows at once; their (status, seconds taken).
fn burst(addr: std::net::SocketAddr, service: &'static str, n: usize, rows: usize) -> Vec<(u16, f64)> {
    let handles: Vec<_> = (0..n)
        .map(|_| {
            std::thread::spawn(move || {
                let t0 = Instant::now();
                let (code, _) = infer_rows(addr, service, rows);
                (code, t0.elapsed().as_secs_f64())
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("request thread")).collect()
}

#[test]
fn emulated_batches_full_batches_at_once_and_partial_ones_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    // Batch 4, one process, SLO 1000 ms: guard 50 ms; exec 10/15/20 ms for 1/2/4 rows.
    let s = serve(dir.path(), &["0,0,batchy,tiny,0,1,4,1,,,,100,1000"], &[(1, 1, 0.010), (1, 2, 0.015), (1, 4, 0.020)], &[]);
    s.wait_200("/v2/health/ready", Duration::from_secs(60));

    // Zeros of the output shape, and the report says the backend is emulated.
    let (code, out) = infer_rows(s.addr, "batchy", 2);
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["outputs"][0]["shape"], json!([2, 3]));
    assert_eq!(out["outputs"][0]["data"], json!([0.0, 0.0, 0.0, 0.0, 0.0, 0.0]));
    assert!(s.metrics().contains("parva_backend_info{backend=\"emulated\",device=\"none\"} 1"));

    // Four requests fill a batch: they go together, long before the oldest one's deadline.
    let r = burst(s.addr, "batchy", 4, 1);
    assert!(r.iter().all(|(c, t)| *c == 200 && *t < 0.7), "{r:?}");
    // A lone request waits until the last safe moment: 1000 - 50 - exec(4) = 930 ms after it arrived.
    let t0 = Instant::now();
    assert_eq!(infer_rows(s.addr, "batchy", 1).0, 200);
    let waited = t0.elapsed().as_secs_f64();
    assert!((0.8..1.5).contains(&waited), "a lone request took {waited} s");
    // Six at once: a full batch of 4 now, the other 2 together at their deadline.
    let r = burst(s.addr, "batchy", 6, 1);
    assert!(r.iter().all(|(c, _)| *c == 200), "{r:?}");
    assert_eq!(r.iter().filter(|(_, t)| *t < 0.7).count(), 4, "{r:?}");

    let m = s.metrics();
    let batches = |size: &str| metric(&m, "parva_batches_total", &[("service", "batchy"), ("size", size)]);
    assert_eq!((batches("1"), batches("2"), batches("4")), (1.0, 2.0, 2.0), "{m}");
    assert_eq!(metric(&m, "parva_requests_total", &[("service", "batchy")]), 12.0);
    assert_eq!(metric(&m, "parva_batch_size_count", &[("service", "batchy")]), 5.0);
    assert_eq!(metric(&m, "parva_request_seconds_count", &[("service", "batchy")]), 12.0);
}

#[test]
fn emulated_overload_is_refused_with_429_at_once_and_unknown_models_get_404() {
    let dir = tempfile::tempdir().unwrap();
    // Batch 2, one process, queue bound 1 batch: at most 2 rows admitted; a batch takes 0.5 s.
    let s = serve(dir.path(), &["0,0,slow,tiny,0,1,2,1,,,,10,5000"], &[(1, 1, 0.5), (1, 2, 0.5)], &["--queue-batches", "1"]);
    s.wait_200("/v2/health/ready", Duration::from_secs(60));
    let r = burst(s.addr, "slow", 10, 1);
    let ok = r.iter().filter(|(c, _)| *c == 200).count();
    let refused: Vec<f64> = r.iter().filter(|(c, _)| *c == 429).map(|(_, t)| *t).collect();
    assert_eq!(ok + refused.len(), 10, "{r:?}");
    assert!(ok >= 2 && refused.len() >= 5, "{r:?}");
    assert!(refused.iter().all(|t| *t < 0.4), "429s must come at once: {r:?}");
    let (code, body) = infer_rows(s.addr, "slow", 1);
    assert_eq!(code, 200, "{body}");
    let m = s.metrics();
    assert_eq!(metric(&m, "parva_request_errors_total", &[("service", "slow"), ("code", "429")]), refused.len() as f64);

    let (code, body) = infer_rows(s.addr, "nope", 1);
    assert_eq!(code, 404);
    assert!(body["error"].as_str().unwrap().contains("nope"), "{body}");
    assert_eq!(get(s.addr, "/v2/models/nope").0, 404);
    assert_eq!(get(s.addr, "/v2/models/nope/ready").0, 404);
}

#[test]
fn emulated_readiness_worker_crash_restart_and_graceful_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    // Two processes; a one-row batch takes 1 s, so each worker's warm-up (2 batches) takes 2 s.
    let mut s = serve(dir.path(), &["0,0,svc,tiny,0,1,2,2,,,,100,5000"], &[(2, 1, 1.0), (2, 2, 1.2)], &[]);
    // Starting: live, not ready; requests get 503.
    assert_eq!(get(s.addr, "/v2/health/live").0, 200);
    assert_eq!(get(s.addr, "/v2/health/ready").0, 503);
    assert_eq!(get(s.addr, "/v2/models/svc/ready").0, 503);
    let (code, body) = infer_rows(s.addr, "svc", 1);
    assert_eq!(code, 503, "{body}");
    s.wait_200("/v2/health/ready", Duration::from_secs(60));
    assert_eq!(get(s.addr, "/v2/models/svc/ready").0, 200);

    // Two full batches go one to each process; killing w0 fails its in-flight request with a 5xx.
    let old = s.pid_of("w0");
    assert!(old > 0 && alive(old));
    let addr = s.addr;
    let reqs: Vec<_> = (0..2).map(|_| std::thread::spawn(move || infer_rows(addr, "svc", 2).0)).collect();
    std::thread::sleep(Duration::from_millis(400));
    signal(old, "KILL");
    let mut codes: Vec<u16> = reqs.into_iter().map(|h| h.join().unwrap()).collect();
    codes.sort();
    assert_eq!(codes, vec![200, 502]);

    // While w0 restarts the node is not ready, but the service keeps serving on w1.
    assert_eq!(get(s.addr, "/v2/health/ready").0, 503);
    assert_eq!(get(s.addr, "/v2/models/svc/ready").0, 200);
    assert_eq!(infer_rows(s.addr, "svc", 2).0, 200);
    s.wait_200("/v2/health/ready", Duration::from_secs(60));
    let new = s.pid_of("w0");
    assert!(new != old && alive(new), "w0 was not restarted (pid {old} -> {new})");
    let m = s.metrics();
    assert_eq!(metric(&m, "parva_worker_restarts_total", &[("service", "svc")]), 1.0, "{m}");
    assert_eq!(metric(&m, "parva_request_errors_total", &[("service", "svc"), ("code", "502")]), 1.0);
    assert_eq!(metric(&m, "parva_workers_ready", &[("service", "svc")]), 2.0);

    // SIGTERM drains: the request in flight still succeeds, then everything stops.
    let pids = [s.pid_of("w0"), s.pid_of("w1")];
    let pending = std::thread::spawn(move || infer_rows(addr, "svc", 2).0);
    std::thread::sleep(Duration::from_millis(300));
    let status = s.terminate();
    assert!(status.success(), "{status}");
    assert_eq!(pending.join().unwrap(), 200);
    assert!(pids.iter().all(|p| !alive(*p)), "workers left running: {pids:?}");
    assert!(std::net::TcpStream::connect(addr).is_err(), "still accepting connections after shutdown");
}

#[test]
fn parvagpu_maps_take_their_slos_from_a_service_list() {
    let dir = tempfile::tempdir().unwrap();
    let (models, prof) = setup(dir.path(), &[(1, 1, 0.01), (1, 2, 0.02)]);
    let plan = dir.path().join("SLO1_deploy.csv");
    std::fs::write(&plan, "Num instance,Num GPU,Model,Placement,Instance size,Batch size,Num proc\n0,0,tiny,0,1,2,1\n").unwrap();
    let base = ["serve", "--plan", plan.to_str().unwrap(), "--backend", "emulated", "--models", &models, "--prof-data", &prof];
    let out = crate::util::parva(&[&base[..], &["--listen", "127.0.0.1:0"]].concat());
    assert_eq!(out.status.code(), Some(1));
    let err = crate::util::stderr(&out);
    assert!(err.contains("\"tiny\"") && err.contains("--services"), "{err}");

    let services = dir.path().join("services.csv");
    std::fs::write(&services, "service,model,rate,slo_ms\ntiny,tiny,10,500\n").unwrap();
    let s = start(&[&base[1..], &["--services", services.to_str().unwrap()]].concat());
    s.wait_200("/v2/health/ready", Duration::from_secs(60));
    assert_eq!(infer_rows(s.addr, "tiny", 1).0, 200);
}
