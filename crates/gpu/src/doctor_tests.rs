//! The doctor on fakes: no driver, a ready fake node, and each way a node is not ready for a map,
//! each failure with the fix it names.

use super::*;
use crate::fake::FakeGpus;
use crate::mps::FakeMps;

struct Worker(Result<WorkerFacts, String>);

impl WorkerProbe for Worker {
    fn probe(&mut self) -> Result<WorkerFacts, String> {
        self.0.clone()
    }
}

fn cuda_worker() -> Worker {
    Worker(Ok(WorkerFacts {
        path: "/opt/parva/parva-worker".into(),
        version: "0.1.0".into(),
        libtorch: "libtorch 2.11 (tch 0.24)".into(),
        cuda_registered: true,
        cuda_devices: 1,
    }))
}

/// A fake A100 node with `gpus` GPUs, GPU 0 holding a 4g and a 3g instance.
fn node(gpus: u32) -> FakeGpus {
    let mut f = FakeGpus::from_spec(&format!("a100-80gb:{gpus}")).unwrap();
    f.create_instance(0, 5, 0).unwrap(); // 4g.40gb at 0
    f.create_instance(0, 9, 4).unwrap(); // 3g.40gb at 4
    f
}

fn needs(gpus: Vec<u32>, models: &[&str]) -> MapNeeds {
    MapNeeds {
        path: "deploy.csv".into(),
        gpu_type: Some("a100-80gb".into()),
        node: 0,
        gpus,
        models: models.iter().map(|m| m.to_string()).collect(),
    }
}

struct Run {
    report: DoctorReport,
    cuda_calls: Vec<String>,
    mps_calls: Vec<String>,
}

fn run(
    node: Option<&mut FakeGpus>,
    mps_binary: Result<PathBuf, String>,
    worker: &mut Worker,
    needs: Option<MapNeeds>,
    models: Vec<ModelFiles>,
) -> Run {
    let mut cuda = match node {
        Some(ref n) => fake_cuda_for(&mut (*n).clone()),
        None => FakeCuda::default(),
    };
    let mut mps = FakeMps::default();
    let scratch = tempfile::tempdir().unwrap();
    let node: Result<&mut dyn NodeInfo, MigError> = match node {
        Some(n) => Ok(n),
        None => Err(MigError::Load("libnvidia-ml.so.1: cannot open shared object file".into())),
    };
    let report = Doctor {
        node,
        cuda: &mut cuda,
        mps: &mut mps,
        mps_binary,
        worker,
        scratch: scratch.path().to_path_buf(),
        needs,
        models,
        fake: false,
    }
    .run();
    Run { report, cuda_calls: cuda.calls, mps_calls: mps.calls().to_vec() }
}

fn check<'a>(r: &'a DoctorReport, item: &str) -> &'a Check {
    r.checks.iter().find(|c| c.item == item).unwrap_or_else(|| panic!("no check {item:?} in {:#?}", r.checks))
}

fn mps_bin() -> Result<PathBuf, String> {
    Ok(PathBuf::from("/usr/bin/nvidia-cuda-mps-control"))
}

#[test]
fn without_a_driver_the_doctor_says_so_once_and_skips_what_needs_it() {
    let mut worker = Worker(Err("parva-worker not found (looked beside parva and on PATH)".into()));
    let r = run(None, Err("nvidia-cuda-mps-control is not on PATH".into()), &mut worker, None, vec![]);
    assert!(!r.report.ready);
    let driver = check(&r.report, "nvidia driver");
    assert_eq!(driver.status, Status::Fail);
    assert!(driver.detail.contains("libnvidia-ml.so.1"), "{driver:?}");
    assert!(driver.fix.as_deref().unwrap().contains("install the NVIDIA driver"), "{driver:?}");
    assert_eq!(check(&r.report, "cuda").status, Status::Skip);
    assert!(r.cuda_calls.is_empty(), "CUDA probed without a driver: {:?}", r.cuda_calls);
    assert!(r.mps_calls.is_empty());
    let w = check(&r.report, "worker");
    assert_eq!((w.status, w.fix.as_deref()), (Status::Fail, Some(BUILD_WORKER)));
}

#[test]
fn a_fake_node_with_everything_is_ready_and_every_mig_device_gets_a_context() {
    let mut n = node(2);
    let dir = tempfile::tempdir().unwrap();
    for f in ["resnet50.pt", "resnet50.json"] {
        std::fs::write(dir.path().join(f), "x").unwrap();
    }
    let models = vec![ModelFiles {
        model: "resnet50".into(),
        torchscript: dir.path().join("resnet50.pt"),
        meta: dir.path().join("resnet50.json"),
        meta_problem: None,
    }];
    let r = run(Some(&mut n), mps_bin(), &mut cuda_worker(), Some(needs(vec![0, 1], &["resnet50"])), models);
    assert!(r.report.ready, "{:#?}", r.report.checks);
    let migs: Vec<String> = n.instances(0).unwrap().iter().map(|i| mig_device_name(i.uuid.as_deref().unwrap())).collect();
    // GPU 0's two MIG devices, GPU 1 (MIG on, no instance) none.
    assert_eq!(r.cuda_calls, migs);
    let c = check(&r.report, &format!("cuda {}", migs[0]));
    assert!(c.detail.contains("4g.40gb") && c.detail.contains("56 SMs"), "{c:?}");
    let g0 = &check(&r.report, "gpu 0").detail;
    // The fake's memory is its largest instance's as the catalogue counts it (7g.80gb: 80,896 MiB).
    assert!(g0.contains("[a100-80gb]") && g0.contains(", 79 GiB, MIG on, 2 instance(s): 4g.40gb@0 3g.40gb@4"), "{g0}");
    assert_eq!(r.mps_calls.len(), 2, "one daemon started and stopped: {:?}", r.mps_calls);
    assert_eq!(r.mps_calls, [format!("mps_start {}", migs[0]), format!("mps_stop {}", migs[0])]);
    assert_eq!(check(&r.report, "map").status, Status::Ok);
    assert_eq!(check(&r.report, "model resnet50").status, Status::Ok);
}

#[test]
fn a_map_gpu_without_mig_fails_with_the_command_that_enables_it() {
    let mut n = node(2);
    n.state_mut().gpus[1].mig = crate::mig::MigMode::DISABLED;
    let r = run(Some(&mut n), mps_bin(), &mut cuda_worker(), Some(needs(vec![0, 1], &[])), vec![]);
    assert!(!r.report.ready);
    let g1 = check(&r.report, "gpu 1");
    assert_eq!(g1.status, Status::Fail);
    assert!(g1.fix.as_deref().unwrap().contains("nvidia-smi -i 1 -mig 1"), "{g1:?}");
    // Without MIG, CUDA opens the whole GPU.
    assert!(r.cuda_calls.contains(&n.gpus().unwrap()[1].uuid), "{:?}", r.cuda_calls);
    // The same GPU unused by the map is fine.
    let r = run(Some(&mut n), mps_bin(), &mut cuda_worker(), Some(needs(vec![0], &[])), vec![]);
    assert!(r.report.ready, "{:#?}", r.report.checks);
}

#[test]
fn a_map_for_another_gpu_type_or_more_gpus_is_not_ready_and_says_why() {
    let mut n = node(1);
    let mut want = needs(vec![0], &[]);
    want.gpu_type = Some("h100-80gb".into());
    let r = run(Some(&mut n), mps_bin(), &mut cuda_worker(), Some(want), vec![]);
    let g0 = check(&r.report, "gpu 0");
    assert_eq!(g0.status, Status::Fail);
    assert!(g0.fix.as_deref().unwrap().contains("planned for h100-80gb: re-plan for a100-80gb"), "{g0:?}");

    let r = run(Some(&mut n), mps_bin(), &mut cuda_worker(), Some(needs(vec![0, 3], &[])), vec![]);
    let m = check(&r.report, "map");
    assert_eq!(m.status, Status::Fail);
    assert!(m.detail.contains("this machine has 1 GPU(s), missing [3]"), "{m:?}");
    assert!(!r.report.ready);
}

#[test]
fn missing_or_unreadable_model_files_fail_with_the_export_command() {
    let mut n = node(1);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bert.json"), "{").unwrap();
    std::fs::write(dir.path().join("vgg16.json"), "{}").unwrap();
    let files = |m: &str, problem: Option<&str>| ModelFiles {
        model: m.into(),
        torchscript: dir.path().join(format!("{m}.pt")),
        meta: dir.path().join(format!("{m}.json")),
        meta_problem: problem.map(str::to_string),
    };
    let models = vec![files("resnet50", None), files("bert", Some("EOF while parsing")), files("vgg16", None)];
    let r = run(Some(&mut n), mps_bin(), &mut cuda_worker(), None, models);
    assert!(!r.report.ready);
    let export = |m: &str| export_command(m, dir.path());
    let c = check(&r.report, "model resnet50");
    assert!(c.detail.starts_with("no metadata"), "{c:?}");
    assert_eq!(c.fix, Some(export("resnet50")));
    let c = check(&r.report, "model bert");
    assert!(c.detail.ends_with("EOF while parsing"), "{c:?}");
    let c = check(&r.report, "model vgg16");
    assert!(c.detail.starts_with("no TorchScript file"), "{c:?}");
    assert_eq!(c.fix, Some(export("vgg16")));
    assert_eq!(r.report.failures().count(), 3);
}

#[test]
fn a_worker_without_cuda_fails_on_a_gpu_machine_and_only_warns_without_one() {
    let mut cpu_worker = cuda_worker();
    if let Ok(w) = &mut cpu_worker.0 {
        w.cuda_registered = false;
        w.cuda_devices = 0;
    }
    let mut n = node(1);
    let r = run(Some(&mut n), mps_bin(), &mut cpu_worker, None, vec![]);
    let w = check(&r.report, "worker");
    assert_eq!(w.status, Status::Fail);
    assert!(w.fix.as_deref().unwrap().contains("CUDA libtorch"), "{w:?}");
    let r = run(None, mps_bin(), &mut cpu_worker, None, vec![]);
    assert_eq!(check(&r.report, "worker").status, Status::Warn);
}

#[test]
fn a_missing_mps_binary_or_a_daemon_that_fails_is_named() {
    let mut n = node(1);
    let r = run(Some(&mut n), Err("nvidia-cuda-mps-control is not on PATH".into()), &mut cuda_worker(), None, vec![]);
    let m = check(&r.report, "mps");
    assert_eq!(m.status, Status::Fail);
    assert!(m.fix.as_deref().unwrap().contains("nvidia-cuda-mps-control"), "{m:?}");
    assert!(r.mps_calls.is_empty());
}

#[test]
fn find_on_path_takes_the_first_executable_file_only() {
    use std::os::unix::fs::PermissionsExt;
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    std::fs::write(a.path().join("tool"), "not executable").unwrap();
    std::fs::create_dir(a.path().join("dir-tool")).unwrap();
    let exe = b.path().join("tool");
    std::fs::write(&exe, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = std::env::join_paths([a.path(), b.path()]).unwrap();
    assert_eq!(find_on_path("tool", Some(&path)), Some(exe));
    assert_eq!(find_on_path("dir-tool", Some(&path)), None);
    assert_eq!(find_on_path("tool", None), None);
}

#[test]
fn the_report_serialises_with_lowercase_statuses_for_json_users() {
    let r = run(None, mps_bin(), &mut cuda_worker(), None, vec![]);
    let v = serde_json::to_value(&r.report).unwrap();
    assert_eq!(v["ready"], false);
    assert_eq!(v["checks"][0]["status"], "fail");
    assert_eq!(v["checks"][0]["item"], "nvidia driver");
}

/// Issue 38: an emulated deployment needs no driver, CUDA, MPS, worker or TorchScript file: those
/// are skipped, never failed; missing metadata and a failing preflight are failures with fixes.
#[test]
fn the_emulated_doctor_skips_the_gpu_and_fails_only_on_what_emulation_needs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.json"), "{}").unwrap();
    let files = |m: &str| ModelFiles { model: m.into(), torchscript: dir.path().join(format!("{m}.pt")), meta: dir.path().join(format!("{m}.json")), meta_problem: None };
    let r = crate::doctor::emulated_report(None, &[files("a")], Some(Ok("node 0: 2 worker(s) would start".into())));
    assert!(r.ready, "{r:#?}");
    for item in ["nvidia driver", "cuda", "mps", "worker"] {
        assert_eq!(check(&r, item).status, Status::Skip);
    }
    assert_eq!(check(&r, "model a").status, Status::Ok, "no .pt file is needed");
    let r = crate::doctor::emulated_report(None, &[files("a"), files("b")], Some(Err("no measured latency for model \"b\"".into())));
    assert!(!r.ready);
    let b = check(&r, "model b");
    assert_eq!(b.status, Status::Fail);
    assert!(b.fix.as_deref().unwrap().contains("--meta-only"), "{b:?}");
    assert_eq!(check(&r, "serve").status, Status::Fail);
}
