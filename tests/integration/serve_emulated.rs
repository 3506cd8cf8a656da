//! `parva serve --backend emulated` on small plans, over real HTTP with real worker processes:
//! work-conserving batching with the deadline as the bound, 429 under overload, 404, readiness, a killed worker's in-flight
//! request failing with 5xx and the worker coming back, graceful shutdown.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::serve_support::{alive, get, metric, post_json, serve_tiny as serve, signal, start, tiny_setup as setup};

fn infer_rows(addr: std::net::SocketAddr, service: &str, rows: usize) -> (u16, Value) {
    let data: Vec<f32> = (0..rows * 2).map(|i| i as f32).collect();
    post_json(addr, &format!("/v2/models/{service}/infer"), &json!({"inputs": [{"name": "x", "shape": [rows, 2], "datatype": "FP32", "data": data}]}))
}

/// Send `n` requests of `rows` rows at once; their (status, seconds taken).
fn burst(addr: std::net::SocketAddr, service: &'static str, n: usize, rows: usize) -> Vec<(u16, f64)> {
    burst_at(addr, service, n, rows).into_iter().map(|(c, t, _)| (c, t)).collect()
}

/// As [`burst`], with the instant each answer came.
fn burst_at(addr: std::net::SocketAddr, service: &'static str, n: usize, rows: usize) -> Vec<(u16, f64, Instant)> {
    let handles: Vec<_> = (0..n)
        .map(|_| {
            std::thread::spawn(move || {
                let t0 = Instant::now();
                let (code, _) = infer_rows(addr, service, rows);
                (code, t0.elapsed().as_secs_f64(), Instant::now())
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("request thread")).collect()
}

/// A full batch is answered long before a partial one's deadline: this much room for load.
const AT_ONCE_S: f64 = 2.5;

/// Issue 36: an idle process takes what is queued at once (a lone request at low load does not
/// wait for its batch's deadline), and where the SLO is tight (a request arriving as an early
/// batch leaves could not wait for it and a full batch) a partial batch still waits for its
/// deadline, `arrival + SLO - guard - exec(full)`, and a full one goes at once.
#[test]
fn emulated_takes_lone_requests_at_once_and_holds_partial_batches_to_the_deadline_only_where_the_slo_is_tight() {
    let dir = tempfile::tempdir().unwrap();
    // batchy: batch 4, SLO 3000 ms, exec 10/15/20 ms for 1/2/4 rows (its partial-batch deadline
    // would be 3000 - 150 - 20 = 2830 ms). tight: batch 4, SLO 6000 ms, exec 2.8/2.9/3.0 s for
    // 1/2/4 rows: 2.8 + 3.0 + 0.3 s of guard > 6 s, so nothing leaves early; a partial batch goes
    // at 6000 - 300 - 3000 = 2700 ms after its request arrived.
    let (models, prof) = setup(dir.path(), &[]);
    let mut table = String::from("Mig instance,Batch size,Workload Number,Throughput,Latency\n");
    for (size, batch, lat) in [(1, 1, 0.010), (1, 2, 0.015), (1, 4, 0.020), (2, 1, 2.8), (2, 2, 2.9), (2, 4, 3.0)] {
        table.push_str(&format!("{size},{batch},1,{},{lat}\n", f64::from(batch) / lat));
    }
    std::fs::write(Path::new(&prof).join("tiny.csv"), table).unwrap();
    let plan = crate::serve_support::write_plan(dir.path(), &["0,0,batchy,tiny,0,1,4,1,,,,100,3000", "0,0,tight,tiny,2,2,4,1,,,,1,6000"]);
    let s = start(&["--plan", plan.to_str().unwrap(), "--backend", "emulated", "--models", &models, "--prof-data", &prof]);
    s.wait_200("/v2/health/ready", Duration::from_secs(60));
    // Zeros of the output shape, and the report says the backend is emulated.
    let (code, out) = infer_rows(s.addr, "batchy", 2);
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["outputs"][0]["shape"], json!([2, 3]));
    assert_eq!(out["outputs"][0]["data"], json!([0.0, 0.0, 0.0, 0.0, 0.0, 0.0]));
    assert!(s.metrics().contains("parva_backend_info{backend=\"emulated\",device=\"none\"} 1"));
    let batches = |svc: &str, size: &str| metric(&s.metrics(), "parva_batches_total", &[("service", svc), ("size", size)]);
    assert_eq!(batches("batchy", "2"), 1.0, "the 2-row request went alone, at once");
    // A lone request goes at once, not at its deadline (2.83 s).
    let t0 = Instant::now();
    assert_eq!(infer_rows(s.addr, "batchy", 1).0, 200);
    let waited = t0.elapsed().as_secs_f64();
    assert!(waited < AT_ONCE_S, "a lone request took {waited} s");
    assert_eq!(batches("batchy", "1"), 1.0);
    // Six at once at an idle process: all answered, none held to a deadline.
    let r = burst(s.addr, "batchy", 6, 1);
    assert!(r.iter().all(|(c, t)| *c == 200 && *t < AT_ONCE_S), "{r:?}");
    let m = s.metrics();
    assert_eq!(metric(&m, "parva_requests_total", &[("service", "batchy")]), 8.0);
    assert_eq!(metric(&m, "parva_request_seconds_count", &[("service", "batchy")]), 8.0);

    // tight: four fill a batch and go together (one batch of 4, not four held ones).
    let r = burst(s.addr, "tight", 4, 1);
    assert!(r.iter().all(|(c, _)| *c == 200), "{r:?}");
    assert_eq!(batches("tight", "4"), 1.0);
    // A lone request waits for its deadline (2.7 s), then runs 2.8 s: the server cannot answer
    // it sooner (its clock starts after ours), whatever the load.
    let t0 = Instant::now();
    assert_eq!(infer_rows(s.addr, "tight", 1).0, 200);
    let waited = t0.elapsed().as_secs_f64();
    assert!(waited >= 5.5, "a lone request on a tight SLO took {waited} s: it did not wait for its deadline");
    assert_eq!(batches("tight", "1"), 1.0);
}

#[test]
fn emulated_overload_is_refused_with_429_at_once_and_unknown_models_get_404() {
    let dir = tempfile::tempdir().unwrap();
    // Batch 2, one process, queue bound 1 batch: at most 2 rows admitted; a batch takes 2 s, so
    // an admitted request takes at least 2 s and a refusal that waited for any work would too
    // (issue 19: 0.5 s batches and 429s within 0.4 s flaked on a loaded machine).
    let s = serve(dir.path(), &["0,0,slow,tiny,0,1,2,1,,,,10,20000"], &[(1, 1, 2.0), (1, 2, 2.0)], &["--queue-batches", "1"]);
    s.wait_200("/v2/health/ready", Duration::from_secs(60));
    let r = burst_at(s.addr, "slow", 10, 1);
    let ok: Vec<(f64, Instant)> = r.iter().filter(|(c, _, _)| *c == 200).map(|(_, t, at)| (*t, *at)).collect();
    let refused: Vec<Instant> = r.iter().filter(|(c, _, _)| *c == 429).map(|(_, _, at)| *at).collect();
    assert_eq!(ok.len() + refused.len(), 10, "{r:?}");
    assert!(ok.len() >= 2 && refused.len() >= 5, "{r:?}");
    assert!(ok.iter().all(|(t, _)| *t >= 2.0), "an admitted request ran a 2 s batch: {r:?}");
    // 429s come at once, not after a batch: every refusal is answered before the first batch is
    // (an order of events, not a time bound: issue 34, the 1.5 s bound flaked under load).
    let first_ok = ok.iter().map(|(_, at)| *at).min().expect("an admitted request");
    assert!(refused.iter().all(|at| *at < first_ok), "a 429 came after the first batch was answered: {r:?}");
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
    // Two processes; a one-row batch takes 2 s, so each worker's warm-up (2 batches) takes 4 s
    // (a restarted w0 stays unready well past w1's 2 s batch); a full batch (2 rows) takes 2 s.
    let mut s = serve(dir.path(), &["0,0,svc,tiny,0,1,2,2,,,,100,8000"], &[(2, 1, 2.0), (2, 2, 2.0)], &[]);
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
    // Issue 21: each worker maps its own slab of shared buffers, and so does the router; the
    // files are already unlinked (the memory lives only in the mappings).
    let router = s.child.id();
    assert_eq!(slabs_mapped(old, router).len(), 1, "w0 maps its slab");
    assert_eq!(slabs_mapped(router, router).len(), 2, "the router maps one slab per worker");
    assert!(slab_files(router).is_empty(), "slab files left in /dev/shm: {:?}", slab_files(router));
    let addr = s.addr;
    let received = |s: &crate::serve_support::Server| metric(&s.metrics(), "parva_requests_total", &[("service", "svc")]);
    let before = received(&s);
    let reqs: Vec<_> = (0..2).map(|_| std::thread::spawn(move || infer_rows(addr, "svc", 2).0)).collect();
    // Kill once the router has both (each a full batch, sent at once to an idle process), not
    // after a fixed sleep (issue 19: a kill 400 ms after the clients started could come before
    // the request reached w0); the batch then runs 2 s, so the kill lands inside it.
    wait_until("both requests received", || received(&s) >= before + 2.0);
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
    // The dead worker's slab is reclaimed: the router maps two (w1's and the new w0's), the new
    // w0 maps a fresh one, and no file is left.
    let now = slabs_mapped(router, router);
    assert_eq!(now.len(), 2, "{now:?}");
    assert_eq!(slabs_mapped(new, router).len(), 1);
    assert!(slab_files(router).is_empty(), "{:?}", slab_files(router));
    let m = s.metrics();
    assert_eq!(metric(&m, "parva_worker_restarts_total", &[("service", "svc")]), 1.0, "{m}");
    assert_eq!(metric(&m, "parva_request_errors_total", &[("service", "svc"), ("code", "502")]), 1.0);
    assert_eq!(metric(&m, "parva_workers_ready", &[("service", "svc")]), 2.0);

    // SIGTERM drains: the request in flight still succeeds, then everything stops.
    let pids = [s.pid_of("w0"), s.pid_of("w1")];
    let before = received(&s);
    let pending = std::thread::spawn(move || infer_rows(addr, "svc", 2).0);
    wait_until("the last request received", || received(&s) >= before + 1.0);
    let status = s.terminate();
    assert!(status.success(), "{status}");
    assert_eq!(pending.join().unwrap(), 200);
    assert!(pids.iter().all(|p| !alive(*p)), "workers left running: {pids:?}");
    assert!(std::net::TcpStream::connect(addr).is_err(), "still accepting connections after shutdown");
}

/// The slabs of router `router` that process `pid` maps (lines of its `/proc/PID/maps`).
fn slabs_mapped(pid: u32, router: u32) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let tag = format!("/dev/shm/parva-{router}-");
    let mut names: Vec<String> = maps.lines().filter_map(|l| l.find(&tag).map(|i| l[i..].to_string())).collect();
    names.dedup();
    names
}

/// Slab files of router `router` still in /dev/shm.
fn slab_files(router: u32) -> Vec<String> {
    let prefix = format!("parva-{router}-");
    std::fs::read_dir("/dev/shm")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().to_string()).filter(|n| n.starts_with(&prefix)).collect())
        .unwrap_or_default()
}

/// Poll `cond` every 20 ms until it holds; fail after a minute (a generous bound: the condition
/// is what the test waits for, not the time).
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(60), "{what}: not within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
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

// Issue 18: `parva serve` without --run-dir left a directory in /tmp behind every run.
#[test]
fn serve_removes_its_temporary_run_directory_on_a_clean_stop() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let (models, prof) = crate::serve_support::tiny_setup(dir.path(), &[(1, 1, 0.001)]);
    let plan = crate::serve_support::write_plan(dir.path(), &["0,0,svc,tiny,0,1,1,1,,,,10,1000"]);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_parva"))
        .args(["serve", "--map", plan.to_str().unwrap(), "--backend", "emulated", "--models", &models, "--prof-data", &prof])
        .args(["--listen", "127.0.0.1:0"])
        .env("TMPDIR", &tmp)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.next().and_then(|l| l.ok()).is_some_and(|l| l.starts_with("listening on")));
    // SIGTERM at once, while the server may still be starting: its handler is installed before the
    // "listening" line (a first version installed it later, and this test died of the signal).
    let run_dir = tmp.join(format!("parva-{}", child.id()));
    assert!(run_dir.is_dir(), "serve made no run directory under TMPDIR");
    crate::serve_support::signal(child.id(), "TERM");
    assert!(child.wait().unwrap().success());
    assert!(!run_dir.exists(), "the temporary run directory was left behind");
}

/// Issue 21: a request larger than the slab's slots (more rows than the segment's batch) still
/// goes through, over the socket; `--worker-transport socket` makes no slab at all and serves the
/// same answers.
#[test]
fn oversized_batches_and_the_socket_transport_serve_the_same_answers() {
    for transport in ["shm", "socket"] {
        let dir = tempfile::tempdir().unwrap();
        let s = serve(dir.path(), &["0,0,svc,tiny,0,1,2,1,,,,10,2000"], &[(1, 1, 0.001), (1, 2, 0.001)], &["--worker-transport", transport]);
        s.wait_200("/v2/health/ready", Duration::from_secs(60));
        let router = s.child.id();
        let slabs = slabs_mapped(router, router).len();
        assert_eq!(slabs, usize::from(transport == "shm"), "{transport}: slabs mapped by the router");
        for rows in [1usize, 2, 5] {
            let (code, body) = infer_rows(s.addr, "svc", rows);
            assert_eq!(code, 200, "{transport}, {rows} rows: {body}");
            assert_eq!(body["outputs"][0]["shape"], json!([rows, 3]), "{transport}: {body}");
            assert_eq!(body["outputs"][0]["data"].as_array().map(Vec::len), Some(rows * 3));
        }
    }
}

/// Issue 38: a SIGTERM to the whole process group (what `timeout` and a terminal's Ctrl-C send)
/// logged one "worker died; restarting" warning per worker. Workers now have their own process
/// group, so the group signal reaches parva alone, which stops them in order, quietly.
#[test]
fn a_sigterm_to_the_process_group_stops_the_node_without_a_crash_per_worker() {
    use std::io::BufRead as _;
    use std::os::unix::process::CommandExt as _;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_parva"))
        .args(["serve", "--map", "deployment/example/deploy.csv", "--backend", "emulated", "--prof-data", "prof_data/example", "--listen", "127.0.0.1:0", "--run-dir"])
        .arg(dir.path())
        .current_dir(crate::util::repo())
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = |r: Box<dyn std::io::Read + Send>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(r).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        rx
    };
    let out = lines(Box::new(child.stdout.take().unwrap()));
    let err = lines(Box::new(child.stderr.take().unwrap()));
    // Wait until every worker is ready (the event, not a time): `ready: 50/50 workers` on stderr.
    let mut seen = Vec::new();
    loop {
        let line = err.recv().expect("parva ended before its workers were ready");
        seen.push(line.clone());
        if let Some((a, b)) = line.strip_prefix("ready: ").and_then(|r| r.split_whitespace().next()).and_then(|r| r.split_once('/'))
            && a == b
        {
            break;
        }
    }
    // The whole group, as `timeout` and a terminal do (procps `kill -TERM -PGID` does not).
    let pgid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
    assert_eq!(unsafe { libc::kill(-pgid, libc::SIGTERM) }, 0, "{}", std::io::Error::last_os_error());
    let status = child.wait().unwrap();
    let all: Vec<String> = seen.into_iter().chain(out.iter()).chain(err.iter()).collect();
    let all = all.join("\n");
    assert!(status.success(), "{status}\n{all}");
    assert!(all.contains("stopped"), "{all}");
    assert!(!all.contains("worker died") && !all.contains("restarting"), "{all}");
}
