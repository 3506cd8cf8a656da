//! `parva deploy` end to end on fake GPUs (`--fake-gpus`, state in `<run-dir>/fake-gpus.json`):
//! dry run, redeploy, injected failures, checks, `--no-mig`, teardown, restore, and serving KServe
//! v2 requests with the emulated backend.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use parva_gpu::fake::FakeState;
use parva_gpu::mig::{MigInstance, MigMode};

use crate::util::{KillOnDrop, fixture, parva, repo, stderr, stdout};

fn deploy(run: &Path, args: &[&str]) -> Output {
    deploy_env(run, args, &[])
}

fn deploy_env(run: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all = vec!["deploy", "--fake-gpus", "a100-80gb:4", "--run-dir", run.to_str().unwrap()];
    all.extend_from_slice(args);
    Command::new(env!("CARGO_BIN_EXE_parva")).args(&all).envs(env.iter().copied()).current_dir(repo()).output().unwrap()
}

fn map(name: &str) -> String {
    fixture(&format!("maps/{name}")).to_str().unwrap().to_string()
}

/// Sorted (profile id, start) per GPU, from the fake's state file.
fn layouts(run: &Path) -> Vec<Vec<(u32, u8)>> {
    let state: FakeState = serde_json::from_slice(&std::fs::read(run.join("fake-gpus.json")).unwrap()).unwrap();
    state
        .gpus
        .iter()
        .map(|g| {
            let mut l: Vec<(u32, u8)> = g.instances.iter().map(|i| (i.profile_id, i.start)).collect();
            l.sort_unstable();
            l
        })
        .collect()
}

fn ok(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "stdout: {}\nstderr: {}", stdout(o), stderr(o));
    serde_json::from_str(&stdout(o)).unwrap_or(serde_json::Value::Null)
}

#[test]
fn deploy_dry_run_prints_the_ordered_actions_and_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path();
    ok(&deploy(run, &["--plan", &map("a100_mixed.csv"), "--no-serve"]));
    let state = std::fs::read(run.join("fake-gpus.json")).unwrap();
    let ck = std::fs::read(run.join("checkpoint.json")).unwrap();
    let o = deploy(run, &["--plan", &map("a100_mixed_v2.csv"), "--dry-run", "--no-serve"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with("dry run (nothing changed)"), "{text}");
    assert!(text.contains("keep: GPU 0: 4g.40gb at {0}"), "{text}");
    assert!(text.contains("actions (30):"), "{text}");
    assert!(text.contains("  1. GPU 0: stop the MPS daemon of MIG-"), "{text}");
    assert!(text.contains("  10. GPU 0: destroy 2g.20gb at placement {4}"), "{text}");
    assert!(text.contains("  23. GPU 2: create 7g.80gb (profile id 0) at placement {0}"), "{text}");
    assert_eq!(std::fs::read(run.join("fake-gpus.json")).unwrap(), state, "fake GPUs unchanged");
    assert_eq!(std::fs::read(run.join("checkpoint.json")).unwrap(), ck, "checkpoint unchanged");
    // On a fresh node a dry run does not even create the run directory.
    let fresh = d.path().join("fresh");
    let o = deploy(&fresh, &["--plan", &map("a100_mixed.csv"), "--dry-run", "--no-serve", "--json"]);
    assert_eq!(ok(&o)["applied"], false);
    assert!(!fresh.exists());
}

#[test]
fn deploy_redeploy_changes_only_differing_instances_then_teardown_keeps_foreign_ones() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path();
    // An instance made by someone else, which the v2 plan happens to use as it is.
    write_state(run, |s| {
        s.gpus[3].instances.push(MigInstance {
            gi_id: 1,
            profile_id: 14,
            start: 0,
            size: 2,
            ci_ids: vec![0],
            uuid: Some("MIG-made-by-someone-else".into()),
        })
    });
    let first = ok(&deploy(run, &["--plan", &map("a100_mixed.csv"), "--no-serve", "--json"]));
    assert_eq!(first["applied"], true);
    assert_eq!(layouts(run)[1], vec![(9, 0), (9, 4)]);
    let dev = |v: &serde_json::Value, gpu: u64, start: u64| {
        v["segments"].as_array().unwrap().iter().find(|s| s["gpu"] == gpu && s["start"] == start).unwrap()["device"].clone()
    };
    let second = ok(&deploy(run, &["--plan", &map("a100_mixed_v2.csv"), "--no-serve", "--json"]));
    let kinds: Vec<&str> = second["actions"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "destroy_instance").count(), 9);
    assert_eq!(kinds.iter().filter(|k| **k == "create_instance").count(), 5, "GPU 3 {{0}} exists already");
    assert_eq!(dev(&first, 0, 0), dev(&second, 0, 0), "4g at {{0}} kept with its UUID");
    assert_eq!(dev(&first, 1, 0), dev(&second, 1, 0), "3g at {{0}} kept with its UUID");
    assert_eq!(layouts(run)[1], vec![(9, 0), (14, 4), (19, 6)]);
    assert_eq!(layouts(run)[2], vec![(0, 0)]);
    assert_eq!(dev(&second, 3, 0), "MIG-made-by-someone-else", "kept, not re-created");
    // The same plan again: nothing to do.
    let third = ok(&deploy(run, &["--plan", &map("a100_mixed_v2.csv"), "--no-serve", "--json"]));
    assert!(third["actions"].as_array().unwrap().is_empty());
    let o = deploy(run, &["--teardown"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let after = layouts(run);
    assert!(after[..3].iter().all(|l| l.is_empty()), "{after:?}");
    assert_eq!(after[3], vec![(14, 0)], "the instance parva did not create stays");
    let o = deploy(run, &["--teardown"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing to tear down"), "{}", stderr(&o));
}

#[test]
fn deploy_failure_at_a_step_restores_the_checkpoint_and_names_the_step() {
    for fault in ["create_instance#2", "destroy_instance#3", "mps_start#4", "mps_stop#1"] {
        let d = tempfile::tempdir().unwrap();
        let run = d.path();
        ok(&deploy(run, &["--plan", &map("a100_mixed.csv"), "--no-serve"]));
        let before = layouts(run);
        let o = deploy_env(run, &["--plan", &map("a100_mixed_v2.csv"), "--no-serve"], &[("PARVA_FAKE_FAIL", fault)]);
        assert_eq!(o.status.code(), Some(1), "{fault}");
        let err = stderr(&o);
        assert!(err.contains("deploy failed at step") && err.contains("injected failure"), "{fault}: {err}");
        assert!(err.contains("restored to checkpoint") && err.contains("checkpoint.json"), "{fault}: {err}");
        assert_eq!(layouts(run), before, "{fault}");
    }
}

#[test]
fn deploy_restore_brings_back_the_state_before_the_latest_deploy() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path();
    ok(&deploy(run, &["--plan", &map("a100_mixed.csv"), "--no-serve"]));
    let before = layouts(run);
    ok(&deploy(run, &["--plan", &map("a100_mixed_v2.csv"), "--no-serve"]));
    assert_ne!(layouts(run), before);
    let o = deploy(run, &["--restore"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(layouts(run), before);
}

/// A one-node map of bert on a 2g (2 processes) and a 3g (1 process), with SLOs, servable by the
/// emulated backend from prof_data/example.
fn bert_map(dir: &Path) -> PathBuf {
    let plan = dir.join("plan.csv");
    std::fs::write(
        &plan,
        "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n\
         0,0,intent,bert,0,2,2,2,2g.20gb,a100-80gb,70,50,400\n0,0,intent,bert,4,3,4,1,3g.40gb,a100-80gb,110,50,400\n",
    )
    .unwrap();
    plan
}

// Issue 18: `--dry-run` did not notice a missing TorchScript file; the real deploy then created
// every instance and failed to serve.
#[test]
fn deploy_dry_run_reports_a_missing_model_and_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    std::fs::create_dir(&run).unwrap();
    write_state(&run, |_| {});
    let before = std::fs::read(run.join("fake-gpus.json")).unwrap();
    let plan = bert_map(d.path());
    let empty_models = d.path().join("models");
    std::fs::create_dir(&empty_models).unwrap();
    std::fs::copy(repo().join("models/bert.json"), empty_models.join("bert.json")).unwrap();
    for dry in [true, false] {
        let mut args = vec!["--plan", plan.to_str().unwrap(), "--models", empty_models.to_str().unwrap(), "--backend", "torch"];
        if dry {
            args.push("--dry-run");
        }
        let o = deploy_env(&run, &args, &[("PARVA_WORKER", "/bin/true")]);
        assert_eq!(o.status.code(), Some(1), "dry run {dry}: {}", stdout(&o));
        let err = stderr(&o);
        assert!(err.contains("node 0 could not serve") && err.contains("(nothing changed)"), "{err}");
        assert!(err.contains("bert.pt: no TorchScript file for model \"bert\""), "{err}");
        assert_eq!(std::fs::read(run.join("fake-gpus.json")).unwrap(), before, "the fake node changed (dry run {dry})");
        assert!(!run.join("checkpoint.json").exists() && !run.join("deploy.json").exists());
    }
    // With everything present the dry run prints the serving step too.
    let o = deploy(&run, &["--plan", plan.to_str().unwrap(), "--dry-run", "--backend", "emulated", "--prof-data", "prof_data/example"]);
    let text = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(text.contains("would serve: 3 worker(s), backend emulated"), "{text}");
    assert!(text.contains("  plan GPU 0 {0} intent (bert): 2 worker(s), batch 2"), "{text}");
}

#[test]
fn deploy_whose_serving_cannot_start_leaves_the_fake_node_exactly_as_its_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    std::fs::create_dir(&run).unwrap();
    // Someone else's 1g instance at {6}, in the way of the plan's 3g at {4}: the deploy destroys
    // it, and the rollback must bring it back.
    write_state(&run, |s| {
        s.gpus[0].instances.push(MigInstance { gi_id: 9, profile_id: 19, start: 6, size: 1, ci_ids: vec![0], uuid: Some("MIG-foreign".into()) })
    });
    let before = layouts(&run);
    let plan = bert_map(d.path());
    let o = deploy_env(
        &run,
        &["--plan", plan.to_str().unwrap(), "--backend", "emulated", "--prof-data", "prof_data/example", "--listen", "127.0.0.1:0"],
        &[("PARVA_FAKE_FAIL", "serve_start")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("serving failed; node 0 restored to its checkpoint (3 change(s) undone)"), "{err}");
    assert!(err.contains("rolled back: GPU 0: re-created 1g.10gb (profile 19) at {6}"), "{err}");
    assert!(stdout(&o).contains("deployed: node 0"), "the MIG changes were made first");
    assert_eq!(layouts(&run), before, "the node is not as its checkpoint");
    let state: FakeState = serde_json::from_slice(&std::fs::read(run.join("fake-gpus.json")).unwrap()).unwrap();
    assert_eq!(state.gpus[0].instances.len(), 1);
    assert!(!run.join("deploy.json").exists(), "a rolled-back deploy left a record to tear down");
    let o = deploy(&run, &["--teardown"]);
    assert_eq!(o.status.code(), Some(1), "nothing to tear down: {}", stdout(&o));
}

fn write_state(run: &Path, edit: impl FnOnce(&mut FakeState)) {
    let mut state = FakeState::from_spec("a100-80gb:4").unwrap();
    edit(&mut state);
    std::fs::write(run.join("fake-gpus.json"), serde_json::to_vec(&state).unwrap()).unwrap();
}

#[test]
fn deploy_refuses_a_gpu_without_mig_and_prints_the_admin_command() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path();
    write_state(run, |s| s.gpus[1].mig = MigMode::DISABLED);
    let o = deploy(run, &["--plan", &map("a100_mixed.csv"), "--no-serve"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("GPU 1 (GPU-") && err.contains("`sudo nvidia-smi -i 1 -mig 1`") && err.contains("never changes it"), "{err}");
    assert!(layouts(run).iter().all(|l| l.is_empty()), "nothing changed");
    // A plan for another GPU type.
    let o = deploy(run, &["--plan", &map("a100_mixed.csv"), "--gpu", "h100-80gb", "--no-serve"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("but the plan is for h100-80gb"), "{}", stderr(&o));
}

#[test]
fn deploy_no_mig_shares_whole_gpus_and_says_so() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path();
    write_state(run, |s| s.gpus.iter_mut().for_each(|g| g.mig = MigMode::DISABLED));
    let v = ok(&deploy(run, &["--plan", &map("a100_mixed.csv"), "--no-mig", "--no-serve", "--json"]));
    assert!(v["mode"].as_str().unwrap().starts_with("no-mig"), "{v}");
    let seg = v["segments"].as_array().unwrap().iter().find(|s| s["gpu"] == 0 && s["start"] == 0).unwrap();
    let env: Vec<(String, String)> = serde_json::from_value(seg["env"].clone()).unwrap();
    assert!(env.contains(&("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE".into(), "57".into())), "{env:?}");
    assert!(env[0].1.starts_with("GPU-"), "{env:?}");
    assert_eq!(v["actions"].as_array().unwrap().len(), 3, "one daemon per GPU");
    let o = deploy(run, &["--plan", &map("a100_mixed.csv"), "--no-mig", "--no-serve"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("mode no-mig"), "{}", stdout(&o));
}

/// A one-line HTTP/1.1 exchange (no client crate in the tree).
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, out.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

/// Environment variables of running processes whose environment mentions `needle`.
fn worker_envs(needle: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(env) = std::fs::read(e.path().join("environ")) else { continue };
        let vars: Vec<String> = env.split(|b| *b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect();
        if vars.iter().any(|v| v.starts_with("CUDA_MPS_PIPE_DIRECTORY=") && v.contains(needle)) {
            out.push(vars);
        }
    }
    out
}

#[test]
fn deploy_serves_kserve_requests_on_fake_gpus_with_the_emulated_backend() {
    let d = tempfile::tempdir().unwrap();
    let run: PathBuf = d.path().join("run");
    let plan = d.path().join("plan.csv");
    std::fs::write(
        &plan,
        "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n\
         0,0,intent,bert,0,2,2,2,2g.20gb,a100-80gb,70,50,400\n0,0,intent,bert,4,3,4,1,3g.40gb,a100-80gb,110,50,400\n",
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_parva"))
        .args(["deploy", "--plan", plan.to_str().unwrap(), "--node", "0", "--fake-gpus", "a100-80gb:1"])
        .args(["--run-dir", run.to_str().unwrap(), "--backend", "emulated", "--prof-data", "prof_data/example"])
        .args(["--models", "models", "--listen", "127.0.0.1:0"])
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed if the test fails before teardown: a failed run left `parva deploy` and its workers
    // running (found when a broken worker made every later benchmark on the machine slower).
    let mut child = KillOnDrop(child);
    let child = &mut child.0;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("deploy ended before listening: {err}");
        };
        if let Some(rest) = line.strip_prefix("listening on http://") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let begin = Instant::now();
    while http(&addr, "GET", "/v2/health/ready", "").0 != 200 {
        assert!(begin.elapsed() < Duration::from_secs(60), "workers not ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    let ids = vec![1; 128];
    let body = serde_json::json!({"inputs": [
        {"name": "input_ids", "datatype": "INT64", "shape": [1, 128], "data": ids},
        {"name": "attention_mask", "datatype": "INT64", "shape": [1, 128], "data": ids},
    ]})
    .to_string();
    let (code, reply) = http(&addr, "POST", "/v2/models/intent/infer", &body);
    assert_eq!(code, 200, "{reply}");
    assert!(reply.contains("outputs"), "{reply}");
    // Each of the 3 workers runs with its segment's MIG device and MPS pipe directory.
    let envs = worker_envs(run.to_str().unwrap());
    assert_eq!(envs.len(), 3, "{envs:?}");
    for env in &envs {
        let dev = env.iter().find_map(|v| v.strip_prefix("CUDA_VISIBLE_DEVICES=")).unwrap();
        assert!(dev.starts_with("MIG-"), "{env:?}");
        assert!(env.iter().any(|v| v == &format!("CUDA_MPS_PIPE_DIRECTORY={}/mps/{dev}/pipe", run.display())));
    }
    // Teardown stops the serving deploy (and its workers), the daemons and the instances.
    let o = parva(&["deploy", "--teardown", "--fake-gpus", "a100-80gb:1", "--run-dir", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("stopped parva deploy"), "{}", stdout(&o));
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(layouts(&run).iter().all(|l| l.is_empty()));
    assert!(worker_envs(run.to_str().unwrap()).is_empty(), "workers stopped");
}

