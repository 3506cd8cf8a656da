//! `parva doctor` and `scripts/gpu-check --dry-run` end to end (issue 13): what a newcomer sees on
//! a machine without a GPU, on fake GPUs with a map, with a missing worker or model, and the GPU
//! check's whole pipeline on the CPU so it cannot rot between GPU runs.

use crate::util::{parva, repo, stderr, stdout, torch_worker};
use std::path::Path;
use std::process::Command;

/// Whether this machine has an NVIDIA driver (the no-driver test means nothing there).
fn has_driver() -> bool {
    ["/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1", "/usr/lib64/libnvidia-ml.so.1", "/usr/lib/libnvidia-ml.so.1"]
        .iter()
        .any(|p| Path::new(p).exists())
}

fn doctor_json(args: &[&str], env: &[(&str, &str)]) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_parva"))
        .arg("doctor")
        .args(args)
        .arg("--json")
        .envs(env.iter().copied())
        .current_dir(repo())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap(), v)
}

fn check<'a>(v: &'a serde_json::Value, item: &str) -> &'a serde_json::Value {
    v["checks"].as_array().unwrap().iter().find(|c| c["item"] == item).unwrap_or_else(|| panic!("no {item:?} in {v:#}"))
}

#[test]
fn doctor_without_a_driver_says_so_plainly_and_exits_not_ready() {
    if has_driver() {
        eprintln!("skipped: this machine has an NVIDIA driver");
        return;
    }
    let out = parva(&["doctor"]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    let text = stdout(&out);
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("FAIL  nvidia driver") && first.contains("libnvidia-ml.so.1"), "{text}");
    assert!(text.contains("fix: install the NVIDIA driver"), "{text}");
    assert!(text.contains("\nskip  cuda ") && text.contains("no NVIDIA driver"), "{text}");
    assert!(text.trim_end().lines().last().unwrap().starts_with("this machine is NOT ready: "), "{text}");
    // No error chain, no panic: the report is the whole output.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("error:"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn doctor_on_fake_gpus_names_each_missing_model_and_worker_with_its_fix() {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("map.csv");
    std::fs::write(
        &map,
        "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n\
         0,0,lin,linear,0,7,4,1,7g.80gb,a100-80gb,1000,10,50\n\
         0,0,io,two_io,0,7,4,1,7g.80gb,a100-80gb,1000,10,50\n",
    )
    .unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir(&models).unwrap();
    for f in ["linear.pt", "linear.json"] {
        std::fs::copy(repo().join("models/fixtures").join(f), models.join(f)).unwrap();
    }
    let (code, v) = doctor_json(
        &["--fake-gpus", "a100-80gb:1", "--map", map.to_str().unwrap(), "--models", models.to_str().unwrap()],
        &[("PARVA_WORKER", "/nonexistent/parva-worker")],
    );
    assert_eq!(code, 3, "{v:#}");
    assert_eq!(v["ready"], false);
    assert_eq!(check(&v, "gpu 0")["status"], "ok");
    assert_eq!(check(&v, "map")["status"], "ok");
    assert_eq!(check(&v, "model linear")["status"], "ok");
    let io = check(&v, "model two_io");
    assert_eq!(io["status"], "fail");
    assert_eq!(io["fix"], format!("python3 scripts/export_models.py --out {} two_io", models.display()));
    let w = check(&v, "worker");
    assert_eq!(w["status"], "fail");
    assert!(w["detail"].as_str().unwrap().contains("PARVA_WORKER=/nonexistent/parva-worker is not an executable file"), "{w}");
    assert!(w["fix"].as_str().unwrap().contains("cargo build --release --locked -p parva-worker"), "{w}");
    let failures: Vec<&str> =
        v["checks"].as_array().unwrap().iter().filter(|c| c["status"] == "fail").map(|c| c["item"].as_str().unwrap()).collect();
    assert_eq!(failures, ["worker", "model two_io"]);
}

#[test]
fn doctor_refuses_a_map_node_that_does_not_exist() {
    let out = parva(&["doctor", "--fake-gpus", "a100-80gb:1", "--map", "deployment/example/deploy.csv", "--node", "9"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("no segment on node 9 (nodes in the map: [0"), "{err}");
}

#[test]
fn serve_with_the_torch_backend_and_no_worker_fails_at_once_with_the_build_command() {
    let out = Command::new(env!("CARGO_BIN_EXE_parva"))
        .args(["serve", "--plan", "deployment/example/deploy.csv", "--backend", "torch", "--listen", "127.0.0.1:0"])
        .env("PARVA_WORKER", "/nonexistent/parva-worker")
        .current_dir(repo())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("the torch worker `parva-worker` was not found") && err.contains("scripts/parva --torch"), "{err}");
}

#[test]
fn gpu_check_dry_run_runs_the_whole_pipeline_on_the_cpu() {
    let Some(worker) = torch_worker() else { return };
    let out_dir = tempfile::tempdir().unwrap();
    let report = out_dir.path().join("report");
    let bin = worker.parent().unwrap();
    let out = Command::new(repo().join("scripts/gpu-check"))
        .args(["--dry-run", "--bin", bin.to_str().unwrap(), "--out", report.to_str().unwrap()])
        .current_dir(repo())
        .output()
        .unwrap();
    let summary = std::fs::read_to_string(report.join("summary.md")).unwrap_or_default();
    assert!(out.status.success(), "gpu-check --dry-run failed:\n{}\n{summary}", String::from_utf8_lossy(&out.stderr));
    for step in ["doctor", "export", "profile-linear", "profile-two_io", "shares-linear", "shares-two_io", "pairs-linear", "plan", "serve", "overhead", "startup"] {
        assert!(summary.contains(&format!("| {step} |")), "step {step} missing from the summary:\n{summary}");
    }
    assert!(!summary.contains("FAILED"), "{summary}");
    for table in ["linear.csv", "two_io.csv"] {
        assert!(report.join("prof_data").join(table).is_file(), "no {table} in the dry run's tables");
    }
    let pairs = std::fs::read_to_string(report.join("prof_data-shares").join("interference.csv")).unwrap_or_default();
    assert!(pairs.contains("linear,20,two_io,") && pairs.contains("linear,50,two_io,"), "interference.csv of the dry run:\n{pairs}");
    assert!(summary.contains("## Verify") && summary.contains("| svc-linear |"), "{summary}");
    // Issue 21: the same load through system shared memory, in its own table.
    let shm = summary.split("verify --wire shm").nth(1).unwrap_or_default();
    assert!(shm.contains("| svc-linear |"), "no shared-memory verify in the summary:\n{summary}");
    // The MPS-share sweep (issue 17): tables keyed by share, for the fake H100 without MIG.
    let shares = std::fs::read_to_string(report.join("prof_data-shares").join("linear.csv")).unwrap();
    assert!(shares.starts_with("MPS share,") && shares.lines().count() == 7, "{shares}");
    assert!(summary.contains("MPS-share tables (no MIG)"), "{summary}");
    assert!(summary.contains("worker start-up 1:"), "{summary}");
}

/// Issue 38: the doctor had no way to check an emulated deployment and FAILed on the torch worker
/// and `.pt` files it would not need. With `--backend emulated` those are skipped; what it needs
/// is checked: missing metadata and profile points fail, with their fixes.
#[test]
fn doctor_for_the_emulated_backend_checks_metadata_and_profiles_not_gpus() {
    let d = tempfile::tempdir().unwrap();
    let models = d.path().join("models");
    std::fs::create_dir(&models).unwrap();
    for m in ["bert", "mobilenetv2", "resnet50"] {
        std::fs::copy(repo().join("models").join(format!("{m}.json")), models.join(format!("{m}.json"))).unwrap();
    }
    let models = models.to_str().unwrap();
    let map = "deployment/example/deploy.csv";
    // No worker binary at all: not the emulated backend's business.
    let env = [("PARVA_WORKER", "/nonexistent/parva-worker"), ("PATH", "/usr/bin:/bin")];
    let (code, v) = doctor_json(&["--backend", "emulated", "--map", map, "--models", models, "--prof-data", "prof_data/example"], &env);
    assert_eq!(code, 3, "{v:#}");
    for item in ["nvidia driver", "cuda", "mps", "worker"] {
        assert_eq!(check(&v, item)["status"], "skip", "{v:#}");
    }
    assert_eq!(check(&v, "model bert")["status"], "ok");
    let vgg = check(&v, "model vgg16");
    assert_eq!(vgg["status"], "fail", "{v:#}");
    assert!(vgg["fix"].as_str().unwrap().contains("--meta-only"), "{vgg}");
    // The preflight is serve's own: it names the missing metadata too.
    assert_eq!(check(&v, "serve")["status"], "fail");
    // With every model's metadata it is ready.
    let (code, v) = doctor_json(&["--backend", "emulated", "--map", map, "--prof-data", "prof_data/example"], &env);
    assert_eq!((code, &v["ready"]), (0, &serde_json::json!(true)), "{v:#}");
    // Tables that lack a model the map serves: serve would refuse, so the doctor fails.
    let prof = d.path().join("prof");
    std::fs::create_dir(&prof).unwrap();
    std::fs::copy(repo().join("prof_data/example/bert.csv"), prof.join("bert.csv")).unwrap();
    let (code, v) = doctor_json(&["--backend", "emulated", "--map", map, "--prof-data", prof.to_str().unwrap()], &env);
    assert_eq!(code, 3, "{v:#}");
    assert_eq!(check(&v, "serve")["status"], "fail", "{v:#}");
    // Without --prof-data the serve check says what to add; without --map there is nothing to check.
    let (_, v) = doctor_json(&["--backend", "emulated", "--map", map], &env);
    assert!(check(&v, "serve")["detail"].as_str().unwrap().contains("no --prof-data"), "{v:#}");
    let o = parva(&["doctor", "--backend", "emulated"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("give --map FILE"), "{}", stderr(&o));
}
