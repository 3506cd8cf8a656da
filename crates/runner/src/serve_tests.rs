use super::*;
use std::os::unix::fs::PermissionsExt;

fn exe(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn node_opts(models: &Path, run_dir: &Path) -> ServeOptions {
    let csv = "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n\
                   0,0,lin,linear,0,4,8,2,4g.40gb,a100-80gb,100,10,50\n\
                   0,0,io,two_io,4,3,4,1,3g.40gb,a100-80gb,100,10,50\n";
    let (map, _) = DeploymentMap::read_from(csv.as_bytes(), Path::new("map.csv")).unwrap();
    let mut o = ServeOptions::new(map, 0, models.to_path_buf(), BackendKind::Torch);
    o.worker_command = Some(WorkerCommand { program: "/bin/true".into(), args: vec![] });
    o.run_dir = run_dir.to_path_buf();
    o.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    o
}

fn fixture_models(with_pt: &[&str]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/fixtures");
    for m in ["linear", "two_io"] {
        std::fs::copy(src.join(format!("{m}.json")), d.path().join(format!("{m}.json"))).unwrap();
    }
    for m in with_pt {
        std::fs::copy(src.join(format!("{m}.pt")), d.path().join(format!("{m}.pt"))).unwrap();
    }
    d
}

/// Regression (found by `scripts/gpu-check` on an H100): `serve --backend torch` without
/// --prof-data started every segment with no latency at all, and batching deadlines were set
/// by whatever size had run so far. The map's throughput now gives the start.
#[test]
fn without_profile_tables_the_torch_backend_starts_from_the_maps_throughput() {
    let models = fixture_models(&["linear", "two_io"]);
    let o = node_opts(models.path(), Path::new("/nonexistent/run"));
    let lin = &o.map.segments[0];
    let (lat, _) = segment_profile(lin, None, BackendKind::Torch).unwrap();
    // 8 rows x 2 processes / 100 samples/s = 0.16 s for a full batch, in proportion below it.
    assert_eq!(lat.len(), 8);
    assert!((lat[7] - 0.16).abs() < 1e-12 && (lat[0] - 0.02).abs() < 1e-12, "{lat:?}");
    let mut no_tp = lin.clone();
    no_tp.throughput = None;
    assert_eq!(segment_profile(&no_tp, None, BackendKind::Torch).unwrap().0, Vec::<f64>::new());
    // The emulated backend replays profiled latencies only.
    assert!(matches!(segment_profile(lin, None, BackendKind::Emulated), Err(ServeError::Config(m)) if m.contains("--prof-data")));
}

#[test]
fn preflight_lists_every_worker_and_creates_nothing() {
    let models = fixture_models(&["linear", "two_io"]);
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run/serve");
    let mut o = node_opts(models.path(), &run_dir);
    let p = preflight(&mut o).unwrap();
    let got: Vec<(&str, &str, u32)> = p.workers.iter().map(|w| (w.name.as_str(), w.service.as_str(), w.max_batch)).collect();
    assert_eq!(got, [("w0", "lin", 8), ("w1", "lin", 8), ("w2", "io", 4)]);
    assert_eq!((p.backend, p.device, p.worker_program.as_path()), ("torch", "cpu", Path::new("/bin/true")));
    assert!(!tmp.path().join("run").exists(), "preflight created the run directory");
}

#[test]
fn preflight_refuses_a_missing_torchscript_file_or_a_busy_port_before_anything_starts() {
    let models = fixture_models(&["linear"]);
    let tmp = tempfile::tempdir().unwrap();
    let mut o = node_opts(models.path(), tmp.path());
    let e = preflight(&mut o).unwrap_err();
    assert!(matches!(&e, ServeError::Config(m) if m.contains("two_io.pt: no TorchScript file for model \"two_io\"")), "{e}");
    let models = fixture_models(&["linear", "two_io"]);
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut o = node_opts(models.path(), tmp.path());
    o.listen = busy.local_addr().unwrap();
    assert!(matches!(preflight(&mut o), Err(ServeError::Bind { addr, .. }) if addr == o.listen));
}

#[test]
fn the_torch_worker_is_found_by_env_then_beside_parva_then_on_path() {
    let bin = tempfile::tempdir().unwrap();
    let path_dir = tempfile::tempdir().unwrap();
    let on_path = exe(path_dir.path(), "parva-worker");
    let path_var = std::env::join_paths([path_dir.path()]).unwrap();
    let parva = bin.path().join("parva");
    assert_eq!(locate_torch_worker(None, Some(&parva), Some(&path_var)).unwrap(), on_path);
    let beside = exe(bin.path(), "parva-worker");
    assert_eq!(locate_torch_worker(None, Some(&parva), Some(&path_var)).unwrap(), beside);
    let custom = exe(path_dir.path(), "my-worker");
    assert_eq!(locate_torch_worker(Some(custom.clone().into()), Some(&parva), Some(&path_var)).unwrap(), custom);
}

#[test]
fn a_missing_torch_worker_fails_at_once_with_the_command_that_builds_it() {
    let bin = tempfile::tempdir().unwrap();
    let parva = bin.path().join("parva");
    let e = locate_torch_worker(None, Some(&parva), Some(std::ffi::OsStr::new(""))).unwrap_err();
    assert!(matches!(&e, ServeError::NoWorker { looked } if looked.contains(&format!("not at {}", bin.path().join("parva-worker").display()))), "{e}");
    let text = e.to_string();
    assert!(text.contains("cargo build --release --locked -p parva-worker") && text.contains("scripts/parva --torch"), "{text}");
    // PARVA_WORKER pointing nowhere is an error, not a silent fallback to another binary.
    exe(bin.path(), "parva-worker");
    let e = locate_torch_worker(Some("/nonexistent/parva-worker".into()), Some(&parva), None).unwrap_err();
    assert!(e.to_string().contains("PARVA_WORKER=/nonexistent/parva-worker is not an executable file"), "{e}");
}
