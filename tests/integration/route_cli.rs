//! Issue 16: a multi-node map served by `parva route` in front of one `parva segment` process per
//! segment (emulated backend), verified through the router at the map's rates; a segment killed
//! mid-run is ejected within a second, its service keeps serving on the rest, and the only
//! failures are the requests that segment held when it died.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::serve_support::{Server, get, signal, start_command};
use crate::util::{fixture, parva, stderr, stdout};

fn fx(name: &str) -> String {
    fixture("verify").join(name).display().to_string()
}

/// roomy runs on both nodes (capacity 1 : 3), wide on node 1, tight on node 0.
const MAP: &str = "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n\
                   0,0,roomy,fast,0,1,1,2,,,100,40,200\n\
                   1,0,roomy,fast,0,1,1,2,,,300,40,200\n\
                   1,0,wide,slow,2,1,1,4,,,60,40,300\n\
                   0,0,tight,slow,1,1,1,1,,,20,10,400\n";

const SEGMENTS: [&str; 4] = ["n0-g0-p0", "n1-g0-p0", "n1-g0-p2", "n0-g0-p1"];

/// The four segments and the router in front of them, all ready.
fn cluster(dir: &Path) -> (Vec<Server>, Server) {
    let map = dir.join("map.csv");
    std::fs::write(&map, MAP).unwrap();
    let map = map.to_str().unwrap().to_string();
    let segs: Vec<Server> = SEGMENTS
        .iter()
        .map(|id| start_command("segment", &["--map", &map, "--segment", id, "--backend", "emulated", "--models", &fx("models"), "--prof-data", &fx("prof")]))
        .collect();
    let mut list = String::from("segment,url\n");
    for (id, s) in SEGMENTS.iter().zip(&segs) {
        list.push_str(&format!("{id},http://{}\n", s.addr));
    }
    let list_path = dir.join("segments.csv");
    std::fs::write(&list_path, list).unwrap();
    let router = start_command("route", &["--map", &map, "--segments", list_path.to_str().unwrap(), "--health-interval", "100ms"]);
    router.wait_200("/v2/health/ready", Duration::from_secs(60));
    (segs, router)
}

fn verify(router: &Server, dir: &Path, out: &str, duration: &str) -> (Option<i32>, Value, std::process::Output) {
    let map = dir.join("map.csv");
    let endpoint = format!("http://{}", router.addr);
    let out = dir.join(out);
    let o = parva(&[
        "verify", "--endpoint", &endpoint, "--map", map.to_str().unwrap(), "--prof-data", &fx("prof"), "--duration", duration, "--warmup", "1s",
        "--out", out.to_str().unwrap(), "--json",
    ]);
    (o.status.code(), serde_json::from_str(&stdout(&o)).unwrap_or(Value::Null), o)
}

fn service<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["services"].as_array().and_then(|a| a.iter().find(|s| s["service"] == name)).unwrap_or_else(|| panic!("no {name} in {r}"))
}

/// `parva_route_requests_total` of (service, segment, code) in the router's metrics.
fn routed(router: &Server, service: &str, segment: &str, code: u16) -> u64 {
    let (_, body) = get(router.addr, "/metrics");
    let text = String::from_utf8(body).unwrap();
    let key = format!("parva_route_requests_total{{service=\"{service}\",segment=\"{segment}\",code=\"{code}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&key)).map(|v| v.trim().parse().unwrap()).unwrap_or(0)
}

fn segment_up(router: std::net::SocketAddr, id: &str) -> bool {
    let (_, body) = get(router, "/v2/route/segments");
    let v: Value = serde_json::from_slice(&body).unwrap();
    v["segments"].as_array().unwrap().iter().find(|s| s["segment"] == id).unwrap()["up"].as_bool().unwrap()
}

#[test]
fn a_two_node_map_served_through_the_router_meets_its_slos_and_survives_a_killed_segment() {
    let d = tempfile::tempdir().unwrap();
    let (mut segs, router) = cluster(d.path());

    // At the map's rates through the router: every service passes, and roomy's requests split
    // 1 : 3 between its two nodes as planned.
    let (code, r, o) = verify(&router, d.path(), "all", "4s");
    assert_eq!(code, Some(0), "{r}\n{}", stderr(&o));
    for name in ["roomy", "wide", "tight"] {
        let s = service(&r, name);
        assert_eq!(s["failed"], 0, "{s}");
        assert_eq!(s["pass"], true, "{s}");
    }
    let (a, b) = (routed(&router, "roomy", "n0-g0-p0", 200), routed(&router, "roomy", "n1-g0-p0", 200));
    assert!(a > 0 && ((b as f64 / a as f64) - 3.0).abs() < 0.2, "1 : 3 by planned capacity: {a} vs {b}");

    // Kill roomy's bigger segment mid-run (SIGKILL: no draining, in-flight requests are lost).
    let killer = {
        let pid = segs[1].child.id();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(3));
            signal(pid, "KILL");
            Instant::now()
        })
    };
    let watcher = {
        let addr = router.addr;
        std::thread::spawn(move || {
            // Wait for the kill, then time the ejection.
            // A minute guards against a hang; how soon is reported, not asserted (issue 34).
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(60) {
                if !segment_up(addr, "n1-g0-p0") {
                    return Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            None
        })
    };
    let before_ok = routed(&router, "roomy", "n0-g0-p0", 200);
    let (_code, r, o) = verify(&router, d.path(), "killed", "6s");
    let killed_at = killer.join().unwrap();
    let ejected_at = watcher.join().unwrap().expect("the killed segment was never ejected");
    let _ = segs[1].child.wait();
    let ejection = ejected_at.saturating_duration_since(killed_at);
    eprintln!("the killed segment was ejected {ejection:?} after the kill");
    assert!(!r.is_null(), "{}", stderr(&o));
    // The other services never noticed.
    for name in ["wide", "tight"] {
        assert_eq!(service(&r, name)["failed"], 0, "{}", service(&r, name));
        assert_eq!(service(&r, name)["pass"], true, "{}", service(&r, name));
    }
    // roomy kept serving on its other segment; its only failures are the dead segment's
    // in-flight requests, as the router counted them (a handful at most at 30 req/s).
    let roomy = service(&r, "roomy");
    let failed = roomy["failed"].as_u64().unwrap();
    let lost: u64 = [502, 504].iter().map(|&c| routed(&router, "roomy", "n1-g0-p0", c)).sum();
    assert_eq!(failed, lost, "failures other than the dead segment's in-flight requests: {roomy}");
    assert!(failed <= 5, "{roomy}");
    assert_eq!(routed(&router, "roomy", "", 503), 0, "roomy was never without a ready segment");
    assert!(roomy["succeeded"].as_u64().unwrap() >= 200, "{roomy}");
    assert!(routed(&router, "roomy", "n0-g0-p0", 200) - before_ok > 150, "roomy moved to n0-g0-p0");
    assert!(stderr_lines(&router).iter().any(|l| l.contains("segment ejected") && l.contains("n1-g0-p0")));
    drop(segs);
}

fn stderr_lines(s: &Server) -> Vec<String> {
    s.stderr.try_iter().collect()
}

/// A segment that is not in the map, a list without a URL for some segment, and a bad template
/// are refused before anything listens.
#[test]
fn segment_and_route_refuse_what_the_map_does_not_have() {
    let d = tempfile::tempdir().unwrap();
    let map = d.path().join("map.csv");
    std::fs::write(&map, MAP).unwrap();
    let m = map.to_str().unwrap();
    let o = parva(&["segment", "--map", m, "--segment", "n3-g0-p0", "--backend", "emulated", "--models", &fx("models"), "--prof-data", &fx("prof")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("the map has no segment n3-g0-p0 (it has n0-g0-p0, n1-g0-p0, n1-g0-p2, n0-g0-p1)"), "{}", stderr(&o));
    let o = parva(&["segment", "--map", m, "--segment", "node0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("\"node0\" is not a segment id"), "{}", stderr(&o));
    // With --device cuda the device is found through NVML; without a driver that is the error.
    let o = parva(&["segment", "--map", m, "--segment", "n0-g0-p0", "--backend", "torch", "--device", "cuda", "--models", &fx("models")]);
    if !std::path::Path::new("/dev/nvidiactl").exists() {
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("cannot load NVML") && stderr(&o).contains("is the NVIDIA driver installed"), "{}", stderr(&o));
    }
    let list = d.path().join("segments.csv");
    std::fs::write(&list, "segment,url\nn0-g0-p0,http://127.0.0.1:1\n").unwrap();
    let o = parva(&["route", "--map", m, "--segments", list.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--segments gives no URL for segment n1-g0-p0 (service \"roomy\")"), "{}", stderr(&o));
    let o = parva(&["route", "--map", m, "--segments", "http://{segment}:1", "--max-body-mib", "4096", "--max-inflight-mib", "100", "--listen", "127.0.0.1:0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("the largest request could never be admitted"), "{}", stderr(&o));
    let o = parva(&["route", "--map", m, "--segments", "https://{segment}:1", "--listen", "127.0.0.1:0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is not an http://host:port URL"), "{}", stderr(&o));
}
