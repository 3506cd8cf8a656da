//! Issue 34: no client, worker or file can take a node down, hang a request, or write outside its
//! place. One regression test per finding, each named after it, on the real binary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::serve_support::{alive, get, metric, post_json, serve_tiny, signal};
use crate::util::{fixture, parva, parva_in, repo, stderr, stdout};

/// A fresh POSIX shared-memory object of `bytes` bytes in /dev/shm, removed when dropped.
struct ShmObject(PathBuf);

impl ShmObject {
    fn new(tag: &str, bytes: &[u8]) -> ShmObject {
        let p = PathBuf::from(format!("/dev/shm/parva-test-{}-{tag}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        ShmObject(p)
    }
    fn key(&self) -> String {
        format!("/{}", self.0.file_name().unwrap().to_str().unwrap())
    }
}

impl Drop for ShmObject {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn register(addr: std::net::SocketAddr, name: &str, key: &str, bytes: u64) -> (u16, Value) {
    post_json(addr, &format!("/v2/systemsharedmemory/region/{name}/register"), &json!({"key": key, "offset": 0, "byte_size": bytes}))
}

fn infer_through(addr: std::net::SocketAddr, input: &str, output: &str) -> (u16, Value) {
    post_json(
        addr,
        "/v2/models/svc/infer",
        &json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32",
                            "parameters": {"shared_memory_region": input, "shared_memory_byte_size": 8}}],
                "outputs": [{"name": "y", "parameters": {"shared_memory_region": output, "shared_memory_byte_size": 12}}]}),
    )
}

fn tiny_node(dir: &Path, extra: &[&str]) -> crate::serve_support::Server {
    let s = serve_tiny(dir, &["0,0,svc,tiny,0,1,2,2,,,,10,60000"], &[(2, 1, 0.005), (2, 2, 0.005)], extra);
    s.wait_200("/v2/health/ready", Duration::from_secs(60));
    s
}

/// Finding 1: a client's region truncated after registration killed the whole server (SIGBUS,
/// exit 135), for input and output regions alike.
#[test]
fn a_region_truncated_after_registration_is_a_400_and_the_server_lives() {
    if !Path::new("/dev/shm").is_dir() {
        eprintln!("skipped: no /dev/shm");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = tiny_node(dir.path(), &[]);
    let mut floats = Vec::new();
    for v in [1.0f32, 2.0] {
        floats.extend_from_slice(&v.to_le_bytes());
    }
    floats.resize(8192, 0);
    let (input, output) = (ShmObject::new("in", &floats), ShmObject::new("out", &[0u8; 8192]));
    assert_eq!(register(s.addr, "in", &input.key(), 8192).0, 200);
    assert_eq!(register(s.addr, "out", &output.key(), 8192).0, 200);
    let (code, body) = infer_through(s.addr, "in", "out");
    assert_eq!(code, 200, "{body}");
    // The input shrinks under the server: a 400 naming the region, not a dead server.
    std::fs::File::options().write(true).open(&input.0).unwrap().set_len(0).unwrap();
    let (code, body) = infer_through(s.addr, "in", "out");
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("shrank after it was registered"), "{body}");
    // The output too (the request runs, its answer cannot be written).
    std::fs::write(&input.0, &floats).unwrap();
    std::fs::File::options().write(true).open(&output.0).unwrap().set_len(4).unwrap();
    let (code, body) = infer_through(s.addr, "in", "out");
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("output"), "{body}");
    assert_eq!(std::fs::metadata(&output.0).unwrap().len(), 4, "the client's object is never grown back");
    assert!(alive(s.child.id()));
    assert_eq!(get(s.addr, "/v2/health/live").0, 200);
}

/// Finding 2: a symbolic link in /dev/shm registered as a region let a client overwrite any file
/// the server could open.
#[test]
fn a_symbolic_link_is_never_registered_as_a_region() {
    if !Path::new("/dev/shm").is_dir() {
        eprintln!("skipped: no /dev/shm");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = tiny_node(dir.path(), &[]);
    let victim = dir.path().join("victim");
    std::fs::write(&victim, vec![7u8; 4096]).unwrap();
    let link = PathBuf::from(format!("/dev/shm/parva-test-{}-link", std::process::id()));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let _cleanup = ShmObject(link.clone());
    let (code, body) = register(s.addr, "evil", &format!("/{}", link.file_name().unwrap().to_str().unwrap()), 4096);
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("symbolic link"), "{body}");
    assert_eq!(std::fs::read(&victim).unwrap(), vec![7u8; 4096]);
}

/// Finding 3: `--out` replaced whatever was at the path (`/dev/full` exited 0 and left a regular
/// file in place of the device; a FIFO or a symbolic link likewise).
#[test]
fn outputs_are_written_only_as_regular_files() {
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("target.csv");
    std::fs::write(&target, "keep\n").unwrap();
    let link = d.path().join("link.csv");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let fifo = d.path().join("fifo.csv");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    for (out, kind) in [(link.as_path(), "a symbolic link"), (fifo.as_path(), "a FIFO"), (Path::new("/dev/full"), "a device"), (d.path(), "a directory")] {
        let o = parva(&[
            "plan", "--prof-data", "prof_data/example", "--services", "deployment/example/services.csv", "--gpu-type", "a100-80gb",
            "--out", out.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(1), "{out:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(kind) && stderr(&o).contains("replaces nothing else"), "{out:?}: {}", stderr(&o));
    }
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep\n");
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(std::fs::symlink_metadata("/dev/full").unwrap().file_type().is_char_device());
}

/// Finding 4: a job named `../../../escaped_job` made `deploy --follow --jobs` write checkpoints
/// outside `<run-dir>/jobs`. Names are checked where they are read, with one rule.
#[test]
fn a_job_or_service_name_that_is_not_path_safe_is_refused_where_it_is_read() {
    let d = tempfile::tempdir().unwrap();
    let jobs = d.path().join("jobs.csv");
    std::fs::write(&jobs, "job,model,kind,min_gpcs,max_gpcs,priority\n../../../escaped_job,bert,train,1,7,1\n").unwrap();
    let o = parva(&[
        "plan", "--prof-data", "prof_data/example", "--services", "deployment/example/services.csv", "--gpu-type", "a100-80gb",
        "--jobs", jobs.to_str().unwrap(), "--out", d.path().join("m.csv").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("jobs.csv:2: field `job`: job name \"../../../escaped_job\" has '/'"), "{}", stderr(&o));
    assert!(!d.path().join("m.csv").exists());
    let services = d.path().join("services.csv");
    std::fs::write(&services, format!("service,model,rate,slo_ms\n{},bert,10,100\n", "x".repeat(100))).unwrap();
    let o = parva(&["plan", "--prof-data", "prof_data/example", "--services", services.to_str().unwrap(), "--gpu-type", "a100-80gb"]);
    assert!(stderr(&o).contains("services.csv:2: field `service`") && stderr(&o).contains("is 100 bytes long"), "{}", stderr(&o));
}

/// Finding 5: a worker that stopped responding (`kill -STOP`) was never detected: requests sent
/// to it got no answer and readiness stayed true. Now the watchdog kills and restarts it, and
/// every request is answered: by the other process, or 504.
#[test]
fn a_stopped_worker_is_killed_and_restarted_and_no_request_hangs() {
    let dir = tempfile::tempdir().unwrap();
    // Two processes; the SLO is a minute, so only the watchdog can end a wait on the stopped one.
    let s = tiny_node(dir.path(), &["--worker-timeout", "500ms"]);
    let old = s.pid_of("w0");
    signal(old, "STOP");
    let addr = s.addr;
    let reqs: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || post_json(addr, "/v2/models/svc/infer", &json!({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]}))))
        .collect();
    let codes: Vec<u16> = reqs.into_iter().map(|h| h.join().unwrap().0).collect();
    assert!(codes.iter().all(|c| *c == 200 || *c == 504), "{codes:?}");
    // The stopped worker was killed (it is gone, not stopped forever) and replaced.
    let t0 = Instant::now();
    while alive(old) || s.pid_of("w0") == old || get(s.addr, "/v2/health/ready").0 != 200 {
        assert!(t0.elapsed() < Duration::from_secs(60), "the stopped worker was not replaced");
        std::thread::sleep(Duration::from_millis(50));
    }
    let m = s.metrics();
    assert_eq!(metric(&m, "parva_worker_stalls_total", &[("service", "svc")]), 1.0, "{m}");
    assert!(metric(&m, "parva_worker_restarts_total", &[("service", "svc")]) >= 1.0, "{m}");
    let log: Vec<String> = s.stderr.try_iter().collect();
    let line = log.iter().find(|l| l.contains("stalled")).unwrap_or_else(|| panic!("{log:?}"));
    assert!(line.contains("--worker-timeout"), "{line}");
}

/// Finding 6: a deploy whose workers can never start (`PARVA_WORKER=/bin/false`) printed
/// `listening`, kept its MIG instances and restarted the workers forever. Now it gives up after
/// 5 failed starts in a row and rolls the node back to its checkpoint.
#[test]
fn a_deploy_whose_workers_never_start_is_rolled_back() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    let plan = d.path().join("plan.csv");
    std::fs::write(
        &plan,
        "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n\
         0,0,lin,linear,0,1,4,1,1g.10gb,a100-80gb,100,10,500\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_parva"))
        .args(["deploy", "--plan", plan.to_str().unwrap(), "--fake-gpus", "a100-80gb:1", "--run-dir", run.to_str().unwrap()])
        .args(["--backend", "torch", "--device", "cpu", "--models", "models/fixtures", "--listen", "127.0.0.1:0"])
        .env("PARVA_WORKER", "/bin/false")
        .current_dir(repo())
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("failed to start 5 times in a row") && err.contains("restored to its checkpoint"), "{err}");
    let state: Value = serde_json::from_slice(&std::fs::read(run.join("fake-gpus.json")).unwrap()).unwrap();
    assert_eq!(state["gpus"][0]["instances"], json!([]), "the instance was not rolled back: {state}");
}

/// Finding 7: `plan --jobs` with a job named like a service wrote a map that `validate` and
/// `simulate` then refused.
#[test]
fn a_job_named_like_a_service_is_refused_at_plan_time() {
    let d = tempfile::tempdir().unwrap();
    let jobs = d.path().join("jobs.csv");
    std::fs::write(&jobs, "job,model,kind,min_gpcs,max_gpcs,priority\nsearch-ranking,bert,train,1,7,1\n").unwrap();
    let out = d.path().join("m.csv");
    let o = parva(&[
        "plan", "--prof-data", "prof_data/example", "--services", "deployment/example/services.csv", "--gpu-type", "a100-80gb",
        "--jobs", jobs.to_str().unwrap(), "--out", out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("job \"search-ranking\" has the name of a service"), "{}", stderr(&o));
    assert!(!out.exists());
}

/// Finding 8: `--services` lists that contradict the map were obeyed or ignored without a word.
#[test]
fn a_service_list_that_contradicts_the_map_is_refused_unless_it_replaces() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base.csv");
    let common = ["--prof-data", "prof_data/example", "--gpu-type", "a100-80gb"];
    let o = parva(&[&["plan", "--services", "deployment/example/services.csv", "--out", base.to_str().unwrap()][..], &common].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    // replan with a subset: the missing services would lose every segment.
    let subset = d.path().join("subset.csv");
    let all = std::fs::read_to_string(repo().join("deployment/example/services.csv")).unwrap();
    std::fs::write(&subset, all.lines().take(3).collect::<Vec<_>>().join("\n") + "\n").unwrap();
    let out = d.path().join("new.csv");
    let replan = |extra: &[&str]| {
        parva(&[&["replan", "--from", base.to_str().unwrap(), "--services", subset.to_str().unwrap(), "--out", out.to_str().unwrap()][..], &common, extra].concat())
    };
    let o = replan(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("the map serves 4 service(s) the list lacks") && stderr(&o).contains("--replace-services"), "{}", stderr(&o));
    assert!(!out.exists());
    let o = replan(&["--replace-services"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // simulate with another SLO for a service: refused, the difference named.
    let changed = d.path().join("changed.csv");
    std::fs::write(&changed, all.replacen(",40\n", ",1\n", 1).replacen(",60\n", ",1\n", 1)).unwrap();
    let o = parva(&["simulate", "--map", base.to_str().unwrap(), "--prof-data", "prof_data/example", "--services", changed.to_str().unwrap(), "--duration", "10s"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("in the map, 1 ms in the list"), "{err}");
}

/// Finding 9: `.../versions/99/infer` answered 200 for a model that has only version 1.
#[test]
fn an_unknown_model_version_is_404_on_every_versioned_route() {
    let dir = tempfile::tempdir().unwrap();
    let s = tiny_node(dir.path(), &[]);
    let one = json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]});
    assert_eq!(post_json(s.addr, "/v2/models/svc/versions/1/infer", &one).0, 200);
    let (code, body) = post_json(s.addr, "/v2/models/svc/versions/99/infer", &one);
    assert_eq!(code, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("no version \"99\""), "{body}");
    assert_eq!(get(s.addr, "/v2/models/svc/versions/99").0, 404);
    assert_eq!(get(s.addr, "/v2/models/svc/versions/99/ready").0, 404);
    assert_eq!(get(s.addr, "/v2/models/svc/versions/1/ready").0, 200);
}

/// The unclear messages of issue 34, each now saying what is wrong and what to do.
#[test]
fn unclear_messages_say_what_is_wrong_and_what_to_do() {
    let d = tempfile::tempdir().unwrap();
    let map = fixture("maps/a100_mixed.csv");
    let map = map.to_str().unwrap();
    let run = d.path().join("run");
    let run_s = run.to_str().unwrap();
    // --fake-gpus counts.
    for (spec, want) in [("a100-80gb:0", "0 GPUs of a100-80gb: a fake node has 1 to 64 GPUs"), ("a100-80gb:99999999999", "99999999999 GPUs of a100-80gb")] {
        let o = parva(&["deploy", "--plan", map, "--fake-gpus", spec, "--run-dir", run_s, "--no-serve", "--dry-run"]);
        assert!(stderr(&o).contains(want), "{spec}: {}", stderr(&o));
    }
    // --gpu-index-map as it was spelled, and how to fix it.
    let o = parva(&["deploy", "--plan", map, "--fake-gpus", "a100-80gb:4", "--run-dir", run_s, "--no-serve", "--dry-run", "--gpu-index-map", "0=1"]);
    let err = stderr(&o);
    assert!(err.contains("bad --gpu-index-map `0=1`") && err.contains("both map to NVML GPU 1") && !err.contains("{0: 1}"), "{err}");
    // A dry run checks that the run directory can be made.
    let o = parva(&["deploy", "--plan", map, "--fake-gpus", "a100-80gb:4", "--run-dir", "/proc/parva-x", "--no-serve", "--dry-run"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("no directory can be made in /proc"), "{}", stderr(&o));
    // A plan with no segment writes no header-only map.
    let services = d.path().join("s.csv");
    std::fs::write(&services, "service,model,rate,slo_ms\nimpossible,bert,100,1\n").unwrap();
    let out = d.path().join("empty.csv");
    let o = parva(&["plan", "--prof-data", "prof_data/example", "--services", services.to_str().unwrap(), "--gpu-type", "a100-80gb", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("no service could be planned, so no map was written"), "{}", stderr(&o));
    assert!(!out.exists());
    // Teardown of a fake deploy without --fake-gpus uses the recorded fake node.
    let o = parva(&["deploy", "--plan", map, "--fake-gpus", "a100-80gb:4", "--run-dir", run_s, "--no-serve"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = parva(&["deploy", "--teardown", "--run-dir", run_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("was deployed on fake GPUs: using their recorded state"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("NVML"), "{}", stderr(&o));
    // route --segments: rows for segments the map lacks, and a malformed URL.
    let segs = d.path().join("segments.csv");
    std::fs::write(&segs, "segment,url\nn0-g0-p0,http://[::1:18577\n").unwrap();
    let o = parva(&["route", "--map", map, "--segments", segs.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert!(stderr(&o).contains("is not an http://host:port URL"), "{}", stderr(&o));
    std::fs::write(&segs, "segment,url\nn9-g0-p0,http://127.0.0.1:1\n").unwrap();
    let o = parva(&["route", "--map", map, "--segments", segs.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert!(stderr(&o).contains("--segments lists 1 segment(s) the map does not have: n9-g0-p0"), "{}", stderr(&o));
}

/// The worker-death log said the signal twice; after a teardown the serving deploy's log still
/// said to run `--teardown`.
#[test]
fn the_death_of_a_worker_and_a_teardown_are_logged_once_and_right() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    let plan = d.path().join("plan.csv");
    std::fs::write(
        &plan,
        "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n\
         0,0,intent,bert,0,2,2,1,2g.20gb,a100-80gb,70,50,400\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_parva"))
        .args(["deploy", "--plan", plan.to_str().unwrap(), "--fake-gpus", "a100-80gb:1", "--run-dir", run.to_str().unwrap()])
        .args(["--backend", "emulated", "--prof-data", "prof_data/example", "--models", "models", "--listen", "127.0.0.1:0"])
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("deploy ended before listening").unwrap();
        if let Some(rest) = line.strip_prefix("listening on http://") {
            break rest.split_whitespace().next().unwrap().parse::<std::net::SocketAddr>().unwrap();
        }
    };
    let t0 = Instant::now();
    while get(addr, "/v2/health/ready").0 != 200 {
        assert!(t0.elapsed() < Duration::from_secs(60), "not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let w0 = crate::serve_support::read_pid(&run.join("serve/w0.pid"));
    signal(w0, "KILL");
    while get(addr, "/v2/health/ready").0 == 200 && alive(w0) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = parva_in(&repo(), &["deploy", "--teardown", "--run-dir", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = child.wait();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let died: Vec<&str> = err.lines().filter(|l| l.contains("worker died")).collect();
    assert!(!died.is_empty(), "{err}");
    for l in died {
        assert_eq!(l.matches("SIGKILL").count(), 1, "{l}");
    }
    assert!(err.contains("`parva deploy --teardown` is removing"), "{err}");
    assert!(!err.contains("removes them"), "{err}");
    let _ = stdout;
}
