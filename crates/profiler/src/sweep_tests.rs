//! The sweep against the stateful fakes: fake MIG GPUs that enforce the placement rules, fake MPS
//! daemons, and in-process emulated workers (`parva_runner::spawn::FakeSpawner`).

use std::path::Path;
use std::time::Duration;

use parva_core::ModelProfile;
use parva_core::mig::GpuType;
use parva_gpu::fake::FakeGpus;
use parva_gpu::fault::Fault;
use parva_gpu::mig::MigControl;
use parva_gpu::mps::FakeMps;
use parva_proto::meta::ModelMeta;
use parva_runner::spawn::{FakeSpawner, Faults};
use tokio::sync::watch;

use crate::grid::{Grid, Point};
use crate::partition::{AsIs, MigPartitioner, MpsPartitioner, Partitioner};
use crate::prune::PruneRules;
use crate::stats::MeasureSettings;
use crate::sweep::{Observer, Quiet, Summary, Sweep};
use crate::table::{Done, Outcome, Table};
use crate::workers::{NoProbe, TorchWorkers};

const FAST: MeasureSettings = MeasureSettings { warmup_seconds: 0.0, min_seconds: 0.02, max_seconds: 0.1, target_ci: 0.5 };

fn meta() -> ModelMeta {
    serde_json::from_str(r#"{"name":"m","inputs":[{"name":"x","datatype":"FP32","shape":[-1,2]}],"outputs":[{"name":"y","datatype":"FP32","shape":[-1,1]}]}"#)
        .unwrap()
}

fn spawner(faults: Faults) -> FakeSpawner {
    // 1 ms per batch of 1 row, 2 ms per batch of 2.
    FakeSpawner::new(meta(), vec![0.001, 0.002], faults)
}

/// The factory's program is never run by the fake spawner; its specs' env and sockets are used.
fn factory() -> TorchWorkers {
    TorchWorkers {
        program: "parva-worker".into(),
        leading_args: vec![],
        model: "m.pt".into(),
        model_meta: "m.json".into(),
        device: parva_runner::Device::Cuda,
        threads: None,
    }
}

struct Run<'a> {
    dir: &'a Path,
    grid: Grid,
    rules: PruneRules,
    spawner: &'a FakeSpawner,
    cancel_after: Option<usize>,
}

/// Cancels the sweep after `n` decided points.
struct CancelAfter {
    n: usize,
    seen: usize,
    tx: watch::Sender<bool>,
}

impl Observer for CancelAfter {
    fn started(&mut self, _: usize, _: usize) {}
    fn measuring(&mut self, _: Point) {}
    fn decided(&mut self, _: Point, _: &Outcome) {
        self.seen += 1;
        if self.seen == self.n {
            let _ = self.tx.send(true);
        }
    }
    fn resumed(&mut self, _: Point, _: Done) {}
}

impl Run<'_> {
    fn go(&self, partitioner: &mut dyn Partitioner) -> (Summary, Table) {
        let mut table = Table::open(&self.dir.join("m.csv"), "m", partitioner.mode().name()).unwrap();
        let (tx, rx) = watch::channel(false);
        let mut quiet = Quiet;
        let mut cancel = CancelAfter { n: self.cancel_after.unwrap_or(usize::MAX), seen: 0, tx };
        let observer: &mut dyn Observer = if self.cancel_after.is_some() { &mut cancel } else { &mut quiet };
        let run_dir = self.dir.join("run");
        std::fs::create_dir_all(&run_dir).unwrap();
        let sweep = Sweep {
            background: None,
            grid: self.grid.clone(),
            measure: FAST,
            rules: self.rules,
            ready_timeout: Duration::from_secs(10),
            run_dir,
            table: &mut table,
            partitioner,
            workers: &factory(),
            spawner: self.spawner,
            probe: &mut NoProbe,
            observer,
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let summary = rt.block_on(sweep.run(rx)).unwrap();
        (summary, table)
    }
}

fn statuses(t: &Table) -> Vec<(u8, u32, u32, String)> {
    t.profile().points.iter().map(|p| (p.size, p.procs, p.batch, p.extra[0].clone())).collect()
}

const NO_PRUNE: PruneRules = PruneRules { max_latency_s: None, fast: false };

#[test]
fn mig_sweep_makes_each_size_at_a_legal_free_placement_and_leaves_the_gpu_as_it_was() {
    for ty in ["a100-80gb", "h100-80gb", "a30-24gb"] {
        let gpu_type = GpuType::by_id(ty).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut gpus = FakeGpus::from_spec(&format!("{ty}:1")).unwrap();
        let mut mps = FakeMps::default();
        let sp = spawner(Faults::default());
        let grid = Grid::new(gpu_type.sizes(), vec![1, 2], vec![1, 2]).unwrap();
        let run = Run { dir: dir.path(), grid: grid.clone(), rules: NO_PRUNE, spawner: &sp, cancel_after: None };
        let mut part = MigPartitioner::new(&mut gpus, &mut mps, 0, dir.path().join("run")).unwrap();
        let (summary, table) = run.go(&mut part);
        assert_eq!(summary.counts.measured, grid.len(), "{ty}: {:?}", statuses(&table));
        assert!(gpus.layout(0).is_empty(), "{ty}: instances left: {:?}", gpus.layout(0));
        let creates: Vec<&String> = gpus.calls().iter().filter(|c| c.starts_with("create_instance")).collect();
        assert_eq!(creates.len(), gpu_type.sizes().len(), "{ty}: one instance per size: {creates:?}");
        let starts = mps.calls().iter().filter(|c| c.starts_with("mps_start")).count();
        let stops = mps.calls().iter().filter(|c| c.starts_with("mps_stop")).count();
        assert_eq!((starts, stops), (gpu_type.sizes().len(), gpu_type.sizes().len()), "{ty}: {:?}", mps.calls());
        // Every worker ran inside its instance's MIG device, under its MPS daemon.
        let specs = sp.calls.lock().unwrap().clone();
        assert_eq!(specs.len(), gpu_type.sizes().len() * 3, "{ty}: 1 + 2 workers per size");
        for s in &specs {
            let env: std::collections::BTreeMap<_, _> = s.env.iter().cloned().collect();
            assert!(env["CUDA_VISIBLE_DEVICES"].starts_with("MIG-"), "{env:?}");
            assert!(env["CUDA_MPS_PIPE_DIRECTORY"].contains(&env["CUDA_VISIBLE_DEVICES"]), "{env:?}");
        }
        // The table is the planner's, and holds what the workers did: each batch sleeps at least
        // the fake's 1 ms (1 row) or 2 ms (2 rows), so the mean latency is never below that, and
        // a process runs one batch at a time, so its throughput (per process, not per segment)
        // is at most batch / latency. Both bounds are causal: a loaded machine only adds time
        // (issue 19: the old lower bound 0.8 on the ratio flaked under load).
        let back = ModelProfile::read(&dir.path().join("m.csv"), Some(gpu_type)).unwrap();
        assert_eq!(back.points.len(), grid.len(), "{ty}");
        for p in &back.points {
            let exec_s = [0.001, 0.002][p.batch as usize - 1];
            assert!(p.latency_s >= exec_s && p.latency_s < 2.0, "{ty} {p:?}: latency below the {exec_s} s sleep, or absurd");
            // Each batch sleeps exec_s, so no process exceeds batch / exec_s rows/s in any round.
            assert!(p.throughput > 0.0 && p.throughput <= p.batch as f64 / exec_s * (1.0 + 1e-6), "{ty} {p:?}");
            // Within a round, throughput <= batch / that round's mean latency; averaging rounds of
            // different latencies (mean of rates vs rate of the mean) lifts it a little, never by
            // a quarter in these 0.1 s points. A segment figure for 2 processes would be ~2x.
            let ratio = p.throughput * p.latency_s / p.batch as f64;
            assert!(ratio <= 1.25, "{ty} {p:?}: per-process throughput above batch / latency ({ratio})");
        }
    }
}

#[test]
fn instances_of_other_tenants_are_left_alone_and_sizes_that_do_not_fit_are_recorded_failed() {
    let dir = tempfile::tempdir().unwrap();
    let mut gpus = FakeGpus::from_spec("a100-80gb:1").unwrap();
    // Someone else's 3g.40gb at slices 4-7.
    let tenant = gpus.create_instance(0, 9, 4).unwrap();
    let mut mps = FakeMps::default();
    let sp = spawner(Faults::default());
    let grid = Grid::new(vec![1, 4, 7], vec![1], vec![1]).unwrap();
    let run = Run { dir: dir.path(), grid, rules: NO_PRUNE, spawner: &sp, cancel_after: None };
    let mut part = MigPartitioner::new(&mut gpus, &mut mps, 0, dir.path().join("run")).unwrap();
    let (summary, table) = run.go(&mut part);
    assert_eq!((summary.counts.measured, summary.counts.failed), (2, 1), "{:?}", statuses(&table));
    let seven = table.profile().point(7, 1, 1).unwrap();
    assert!(seven.extra[8].contains("no free placement for 7g.80gb") && seven.extra[8].contains("3g.40gb@{4}"), "{:?}", seven.extra);
    assert_eq!(gpus.layout(0), vec![(tenant.profile_id, 4)], "the tenant's instance stays, nothing else");
}

#[test]
fn a_failed_instance_creation_fails_that_size_only_and_everything_is_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut gpus = FakeGpus::from_spec("a100-80gb:1").unwrap();
    gpus.set_fault(Some(Fault::new("create_instance", 2)));
    let mut mps = FakeMps::default();
    let sp = spawner(Faults::default());
    let grid = Grid::new(vec![1, 2, 3], vec![1], vec![1, 2]).unwrap();
    let run = Run { dir: dir.path(), grid, rules: NO_PRUNE, spawner: &sp, cancel_after: None };
    let mut part = MigPartitioner::new(&mut gpus, &mut mps, 0, dir.path().join("run")).unwrap();
    let (summary, table) = run.go(&mut part);
    assert_eq!((summary.counts.measured, summary.counts.failed), (4, 2), "{:?}", statuses(&table));
    assert!(table.profile().point(2, 2, 1).unwrap().extra[8].contains("injected failure"), "{:?}", statuses(&table));
    assert!(gpus.layout(0).is_empty());
    // The failed size is tried again on the next run; the measured points are kept.
    let sp2 = spawner(Faults::default());
    let run = Run { dir: dir.path(), grid: Grid::new(vec![1, 2, 3], vec![1], vec![1, 2]).unwrap(), rules: NO_PRUNE, spawner: &sp2, cancel_after: None };
    let mut part = MigPartitioner::new(&mut gpus, &mut mps, 0, dir.path().join("run")).unwrap();
    let (summary, _) = run.go(&mut part);
    assert_eq!((summary.counts.resumed, summary.counts.measured), (4, 2));
    let creates = gpus.calls().iter().filter(|c| c.starts_with("create_instance")).count();
    assert_eq!(creates, 3 + 1, "the re-run made only the size that failed");
}

#[test]
fn a_crashed_worker_is_recorded_failed_not_fatal_and_the_next_batch_gets_new_workers() {
    let dir = tempfile::tempdir().unwrap();
    // Each worker dies on its 2nd batch after warm-up: the first point's rounds kill it.
    let sp = spawner(Faults { crash_after_batches: Some(1), ..Faults::default() });
    let grid = Grid::new(vec![7], vec![1], vec![1, 2]).unwrap();
    let run = Run { dir: dir.path(), grid, rules: NO_PRUNE, spawner: &sp, cancel_after: None };
    let mut part = AsIs { env: vec![], device: None, what: "the CPU".into() };
    let (summary, table) = run.go(&mut part);
    assert_eq!(summary.counts.failed, 2, "{:?}", statuses(&table));
    let note = &table.profile().point(7, 1, 1).unwrap().extra[8];
    assert!(note.contains("worker s7p1w0"), "{note}");
    assert_eq!(sp.spawn_count(), 2, "a fresh worker for the second batch");
}

#[test]
fn mps_partition_caps_each_size_at_its_gpc_share_under_one_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let mut mps = FakeMps::default();
    let sp = spawner(Faults::default());
    let grid = Grid::new(vec![1, 2, 3, 4, 7], vec![1], vec![1]).unwrap();
    let run = Run { dir: dir.path(), grid, rules: NO_PRUNE, spawner: &sp, cancel_after: None };
    let mut part = MpsPartitioner::new(&mut mps, "GPU-0000".into(), 7, dir.path().join("run"));
    let (summary, _) = run.go(&mut part);
    assert_eq!(summary.counts.measured, 5);
    let pcts: Vec<String> = sp
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.env.iter().find(|(k, _)| k == "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE").unwrap().1.clone())
        .collect();
    assert_eq!(pcts, ["14", "29", "43", "57", "100"]);
    assert_eq!(mps.calls().iter().filter(|c| c.starts_with("mps_start")).count(), 1);
    assert_eq!(mps.calls().iter().filter(|c| c.starts_with("mps_stop")).count(), 1, "{:?}", mps.calls());
}

#[test]
fn ctrl_c_stops_keeps_what_is_measured_cleans_up_and_a_rerun_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut gpus = FakeGpus::from_spec("a100-80gb:1").unwrap();
    let mut mps = FakeMps::default();
    let sp = spawner(Faults::default());
    let grid = Grid::new(vec![1, 2], vec![1], vec![1, 2]).unwrap();
    let run = Run { dir: dir.path(), grid: grid.clone(), rules: NO_PRUNE, spawner: &sp, cancel_after: Some(1) };
    let mut part = MigPartitioner::new(&mut gpus, &mut mps, 0, dir.path().join("run")).unwrap();
    let (summary, table) = run.go(&mut part);
    assert!(summary.interrupted);
    assert_eq!(table.profile().points.len(), 1, "{:?}", statuses(&table));
    assert!(gpus.layout(0).is_empty(), "the instance is destroyed on Ctrl-C");
    assert_eq!(mps.calls().iter().filter(|c| c.starts_with("mps_stop")).count(), 1);
    let run = Run { dir: dir.path(), grid, rules: NO_PRUNE, spawner: &sp, cancel_after: None };
    let mut part = MigPartitioner::new(&mut gpus, &mut mps, 0, dir.path().join("run")).unwrap();
    let (summary, table) = run.go(&mut part);
    assert!(!summary.interrupted);
    assert_eq!((summary.counts.resumed, summary.counts.measured), (1, 3), "{:?}", statuses(&table));
}

#[test]
fn a_complete_table_reruns_without_touching_the_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let mut gpus = FakeGpus::from_spec("a100-80gb:1").unwrap();
    let mut mps = FakeMps::default();
    let sp = spawner(Faults::default());
    let grid = Grid::new(vec![1, 7], vec![1, 2], vec![1, 2]).unwrap();
    let run = Run { dir: dir.path(), grid: grid.clone(), rules: NO_PRUNE, spawner: &sp, cancel_after: None };
    let mut part = MigPartitioner::new(&mut gpus, &mut mps, 0, dir.path().join("run")).unwrap();
    run.go(&mut part);
    let before = std::fs::read(dir.path().join("m.csv")).unwrap();
    let (calls, spawns) = (gpus.calls().len(), sp.spawn_count());
    let mut part = MigPartitioner::new(&mut gpus, &mut mps, 0, dir.path().join("run")).unwrap();
    let (summary, _) = run.go(&mut part);
    assert_eq!(summary.counts.resumed, grid.len());
    assert_eq!(sp.spawn_count(), spawns, "no worker started");
    let new_calls: Vec<&String> = gpus.calls()[calls..].iter().filter(|c| !c.starts_with("gpus") && !c.starts_with("check_priv")).collect();
    assert!(new_calls.is_empty(), "no MIG change: {new_calls:?}");
    assert_eq!(std::fs::read(dir.path().join("m.csv")).unwrap(), before);
}

#[test]
fn mig_mode_off_is_refused_without_touching_the_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let mut gpus = FakeGpus::from_spec("a100-80gb:1").unwrap();
    gpus.state_mut().gpus[0].mig = parva_gpu::mig::MigMode::DISABLED;
    let mut mps = FakeMps::default();
    let e = MigPartitioner::new(&mut gpus, &mut mps, 0, dir.path().to_path_buf()).err().unwrap().to_string();
    assert!(e.contains("MIG mode is off") && e.contains("--partition mps"), "{e}");
    let e = MigPartitioner::new(&mut gpus, &mut mps, 3, dir.path().to_path_buf()).err().unwrap().to_string();
    assert!(e.contains("--gpu-index 3") && e.contains("has 1"), "{e}");
}
