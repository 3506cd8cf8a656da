//! Admission by deadline and re-dispatch after a worker dies, on `parva serve --backend emulated`
//! over real HTTP on loopback with real worker processes:
//! - a killed worker of a three-process service under steady load fails only the batch it was
//!   running (502); what was queued on it is answered by the other processes, never 503;
//! - a burst that fits the SLO is admitted in full (the old fixed cap of 4 batches refused it);
//! - ParvaGPU's reference scenario 4 (scaled, see `scenario_4`) with tiny tensors: no request is
//!   refused while its service's measured p99 is under half its SLO, and nothing fails with 5xx.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::serve_support::{alive, metric, post_json, serve_tiny, signal, start};
use crate::util::{parva, reference_dir, stderr, stdout};

fn infer_one(addr: SocketAddr, service: &str) -> (u16, Value) {
    post_json(addr, &format!("/v2/models/{service}/infer"), &json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]}))
}

/// Regression (issue 11): after one worker of a service was killed, requests queued on it (and
/// those admitted to it just before it was marked dead) got 503 "not ready" while the service's
/// other processes were ready, and the batch sent ahead to it failed with 502 although it had not
/// started. Now only the batch it was running fails (502, batch size 1 here: one request).
#[test]
fn a_killed_worker_of_a_three_process_service_fails_only_its_running_batch() {
    let dir = tempfile::tempdir().unwrap();
    // Three processes, batch 1, 50 ms a batch, SLO 2 s: nine closed-loop clients keep about three
    // requests on each process (one running, one sent ahead, one queued).
    let s = serve_tiny(dir.path(), &["0,0,svc,tiny,0,1,1,3,,,,50,2000"], &[(3, 1, 0.05)], &[]);
    s.wait_200("/v2/health/ready", Duration::from_secs(60));
    let addr = s.addr;
    let stop = Arc::new(AtomicBool::new(false));
    // Every answer, as it comes: the test waits for counts of answers, not for fixed sleeps
    // (issue 19: 1.5 s before and after the kill, then at least 20 answers, flaked under load).
    let answers: Arc<std::sync::Mutex<Vec<(Instant, u16, Value)>>> = Arc::default();
    let clients: Vec<_> = (0..9)
        .map(|_| {
            let (stop, answers) = (stop.clone(), answers.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let (code, body) = infer_one(addr, "svc");
                    answers.lock().unwrap().push((Instant::now(), code, body));
                }
            })
        })
        .collect();
    let wait_for = |what: &str, cond: &dyn Fn(&[(Instant, u16, Value)]) -> bool| {
        let t0 = Instant::now();
        while !cond(&answers.lock().unwrap()) {
            assert!(t0.elapsed() < Duration::from_secs(90), "{what}: not within 90 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // Steady load first: 30 answers (every process has had work and the queues are full).
    wait_for("30 answers before the kill", &|a| a.len() >= 30);
    let old = s.pid_of("w0");
    assert!(old > 0 && alive(old));
    let killed = Instant::now();
    signal(old, "KILL");
    wait_for("20 answers after the kill", &|a| a.iter().filter(|(t, c, _)| *t > killed && *c == 200).count() >= 20);
    stop.store(true, Ordering::SeqCst);
    for h in clients {
        h.join().expect("client");
    }
    let results: Vec<(Instant, u16, Value)> = std::mem::take(&mut *answers.lock().unwrap());

    let mut by_code: BTreeMap<u16, usize> = BTreeMap::new();
    for (_, code, _) in &results {
        *by_code.entry(*code).or_default() += 1;
    }
    let failures: Vec<String> = results.iter().filter(|(_, c, _)| *c != 200).map(|(_, c, b)| format!("{c}: {b}")).collect();
    // Only the running batch (one request) may fail, with 502 naming the worker; and the batch it
    // had just finished, when the kill lands before the router has read that answer (a known race,
    // left as it was before: see the issue 11 note). Never a queued request, never a 503.
    assert!(failures.len() <= 2, "{by_code:?}: {failures:#?}");
    for (_, code, body) in results.iter().filter(|(_, c, _)| *c != 200) {
        assert_eq!(*code, 502, "{body}");
        assert!(body["error"].as_str().unwrap_or("").contains("worker process w0"), "{body}");
    }
    let after = results.iter().filter(|(t, c, _)| *t > killed && *c == 200).count();
    assert!(after >= 20, "only {after} requests answered after the kill: {by_code:?}");
    let m = s.metrics();
    assert_eq!(metric(&m, "parva_request_errors_total", &[("service", "svc"), ("code", "503")]), 0.0, "{m}");
    assert_eq!(metric(&m, "parva_request_errors_total", &[("service", "svc"), ("code", "502")]), failures.len() as f64, "{m}");
    // And w0 comes back.
    s.wait_200("/v2/health/ready", Duration::from_secs(60));
    let new = s.pid_of("w0");
    assert!(new != old && alive(new), "w0 was not restarted (pid {old} -> {new})");
    eprintln!("requests by status: {by_code:?}; {after} answered after the kill");
}

/// Regression (issue 11): a burst got 429 from a fixed cap of 4 batches per process although the
/// service answers it well within its SLO. 40 one-row requests at once on one process of batch 2
/// (50 ms a batch): 20 batches, about 1 s of work, within a 5 s SLO: all answered (the old cap
/// admitted 8). The hard bound (`--max-queue-batches`, old spelling `--queue-batches`) still
/// refuses beyond it, with its reason.
#[test]
fn a_burst_within_the_slo_is_admitted_in_full_and_the_hard_bound_still_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve_tiny(dir.path(), &["0,0,burst,tiny,0,1,2,1,,,,10,5000"], &[(1, 1, 0.05), (1, 2, 0.05)], &[]);
    s.wait_200("/v2/health/ready", Duration::from_secs(60));
    let burst = |addr: SocketAddr, n: usize| -> Vec<(u16, Value)> {
        let hs: Vec<_> = (0..n).map(|_| std::thread::spawn(move || infer_one(addr, "burst"))).collect();
        hs.into_iter().map(|h| h.join().expect("request")).collect()
    };
    let r = burst(s.addr, 40);
    let refused: Vec<&Value> = r.iter().filter(|(c, _)| *c != 200).map(|(_, b)| b).collect();
    assert!(refused.is_empty(), "{} of 40 refused: {refused:?}", refused.len());
    drop(s);

    // Hard bound of 2 batches (4 rows): the rest of a burst of 12 is refused at once, saying why.
    // Batches of 2 s, so a request of the burst that a loaded machine delays is still refused
    // while the first batch runs (issue 19: 0.5 s batches let late ones in after it).
    let dir = tempfile::tempdir().unwrap();
    let s = serve_tiny(dir.path(), &["0,0,burst,tiny,0,1,2,1,,,,10,20000"], &[(1, 1, 2.0), (1, 2, 2.0)], &["--queue-batches", "2"]);
    s.wait_200("/v2/health/ready", Duration::from_secs(60));
    let r = burst(s.addr, 12);
    let ok = r.iter().filter(|(c, _)| *c == 200).count();
    let refused: Vec<&Value> = r.iter().filter(|(c, _)| *c == 429).map(|(_, b)| b).collect();
    assert_eq!(ok + refused.len(), 12, "{r:?}");
    assert!((4..=6).contains(&ok), "{ok} admitted: {r:?}");
    for b in &refused {
        let e = b["error"].as_str().unwrap_or("");
        assert!(e.contains("\"burst\" is overloaded") && e.contains("hard bound (4 rows or 256 MiB of inputs per process)"), "{e}");
    }
}

/// Rate scale of the scenario-4 test: what a loaded 2-core CI machine serves with a debug build
/// (the test's `parva`) while also generating the load. Full rate, release build:
/// `scripts/bench/admission.sh` (results in scripts/bench/admission-results.md).
const SCENARIO_4_SCALE: &str = "0.1";

/// `models/*.json` with every tensor shape `[-1, 2]`: the emulated workers ignore the values, and
/// tiny requests let one machine send the scenario's rate.
fn tiny_models(dir: &Path) -> String {
    let out = dir.join("models");
    std::fs::create_dir_all(&out).unwrap();
    for entry in std::fs::read_dir(crate::util::repo().join("models")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let mut meta: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for side in ["inputs", "outputs"] {
            for t in meta[side].as_array_mut().unwrap() {
                t["shape"] = json!([-1, 2]);
            }
        }
        std::fs::write(out.join(path.file_name().unwrap()), meta.to_string()).unwrap();
    }
    out.display().to_string()
}

/// Acceptance (issue 11): ParvaGPU's scenario 4 (11 services, about 13,000 req/s at full rate) on
/// its planned node with the emulated backend and tiny tensors: no request of a service is refused
/// (429) while the service's measured p99 is under half its SLO, and nothing fails with 5xx.
#[test]
fn scenario_4_node_refuses_nothing_while_p99_is_under_half_the_slo_and_never_fails_5xx() {
    let Some(reference) = reference_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let prof = reference.join("prof_data").display().to_string();
    let slo_dir = reference.join("SLO").display().to_string();
    let plan = dir.path().join("plan.csv").display().to_string();
    let o = parva(&["plan", "--prof-data", &prof, "--slo-dir", &slo_dir, "--slo", "4", "--gpu", "a100-80gb", "--out", &plan]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = std::fs::read_to_string(&plan).unwrap();
    assert!(text.lines().skip(1).all(|l| l.starts_with("0,")), "scenario 4 was planned on one node:\n{text}");
    let models = tiny_models(dir.path());
    let s = start(&["--plan", &plan, "--backend", "emulated", "--models", &models, "--prof-data", &prof]);
    s.wait_200("/v2/health/ready", Duration::from_secs(120));
    let endpoint = format!("http://{}", s.addr);
    let out = dir.path().join("verify").display().to_string();
    let o = parva(&["verify", "--endpoint", &endpoint, "--plan", &plan, "--duration", "25s", "--warmup", "5s", "--rate-scale", SCENARIO_4_SCALE,
                    "--json", "--out", &out]);
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("no JSON report ({e}): {}", stderr(&o)));
    // 0 (all within SLO) or 3 (some service missed it, which this test tolerates); never an error.
    assert!(matches!(o.status.code(), Some(0 | 3)), "exit {:?}: {}", o.status.code(), stderr(&o));
    let services = report["services"].as_array().expect("services");
    assert_eq!(services.len(), 11, "{report}");
    let mut lines = Vec::new();
    let mut bad = Vec::new();
    for svc in services {
        let name = svc["service"].as_str().unwrap();
        let (p99, slo) = (svc["p99_ms"].as_f64().unwrap_or(f64::INFINITY), svc["slo_ms"].as_f64().unwrap());
        let failed: BTreeMap<String, u64> = serde_json::from_value(svc["failed_by"].clone()).unwrap();
        let refused = failed.get("429").copied().unwrap_or(0);
        let server_errors: u64 = failed.iter().filter(|(k, _)| k.starts_with('5')).map(|(_, v)| v).sum();
        lines.push(format!("{name}: p99 {p99:.1} ms of SLO {slo} ms, 429 x {refused}, failed {failed:?}, lag p99 {} ms", svc["lag_p99_ms"]));
        if server_errors > 0 || (p99 < slo / 2.0 && refused > 0) {
            bad.push(name.to_string());
        }
    }
    assert!(bad.is_empty(), "{bad:?} broke the rule:\n{}", lines.join("\n"));
    let m = s.metrics();
    for code in ["500", "502", "503"] {
        assert_eq!(metric(&m, "parva_request_errors_total", &[("code", code)]), 0.0, "{code} in\n{m}");
    }
    eprintln!("{}", lines.join("\n"));
}
