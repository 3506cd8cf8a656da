//! The deploy flow on the fake GPUs and fake MPS: fixtures on fresh A100 and H100 nodes,
//! redeploys that touch only what differs, a failure injected at every step (the fake must end
//! exactly in its checkpointed state), dry runs, teardown and restore.

use super::*;
use crate::fake::FakeGpus;
use crate::fault::Fault;
use crate::mps::FakeMps;
use parva_core::mig::GpuType;

pub(crate) fn fixture(name: &str) -> DeploymentMap {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/maps").join(name);
    DeploymentMap::read(&path).unwrap().0
}

struct Bench {
    fake: FakeGpus,
    mps: FakeMps,
    dir: tempfile::TempDir,
}

impl Bench {
    fn new(spec: &str) -> Self {
        Bench { fake: FakeGpus::from_spec(spec).unwrap(), mps: FakeMps::default(), dir: tempfile::tempdir().unwrap() }
    }

    fn node(&mut self) -> Node<'_> {
        Node { mig: &mut self.fake, mps: &mut self.mps, run_dir: self.dir.path().to_path_buf() }
    }

    fn deploy(&mut self, map: &DeploymentMap, opts: &DeployOptions) -> Result<DeployOutcome, DeployError> {
        self.node().deploy(map, opts, false)
    }

    fn running(&self, device: &str) -> bool {
        MpsDirs::under(self.dir.path(), device).pipe.join(crate::mps::FAKE_DAEMON_FILE).exists()
    }

    /// Layouts plus which instances have a daemon: the state a checkpoint must bring back.
    fn snapshot(&self) -> Vec<Vec<(u32, u8, bool)>> {
        self.fake
            .state()
            .gpus
            .iter()
            .map(|g| {
                let mut v: Vec<(u32, u8, bool)> = g
                    .instances
                    .iter()
                    .map(|i| (i.profile_id, i.start, i.uuid.as_deref().is_some_and(|u| self.running(u))))
                    .collect();
                v.sort_unstable();
                v
            })
            .collect()
    }
}

/// The layout `map` asks for on `node`, per plan GPU, as sorted (profile id, start).
fn wanted(map: &DeploymentMap, node: u32, ty: &GpuType) -> BTreeMap<u32, Vec<(u32, u8)>> {
    let mut out: BTreeMap<u32, Vec<(u32, u8)>> = BTreeMap::new();
    for s in map.segments.iter().filter(|s| s.node == node) {
        out.entry(s.gpu).or_default().push((ty.profile_for_size(s.instance_size).unwrap().id, s.placement));
    }
    out.values_mut().for_each(|v| v.sort_unstable());
    out
}

fn opts_for(node: u32, ty: &str) -> DeployOptions {
    DeployOptions { node, gpu_type: Some(ty.into()), ..Default::default() }
}

/// Deploy every node of `map` on fresh fakes of `ty` and check the layouts, daemons and envs.
pub(crate) fn check_deploys_on_fresh_fakes(map: &DeploymentMap, ty_id: &str) {
    let ty = GpuType::by_id(ty_id).unwrap();
    let nodes: BTreeSet<u32> = map.segments.iter().map(|s| s.node).collect();
    for node in nodes {
        let want = wanted(map, node, ty);
        let gpus = want.keys().max().unwrap() + 1;
        let mut b = Bench::new(&format!("{ty_id}:{}", gpus.max(8)));
        let out = b.deploy(map, &opts_for(node, ty_id)).unwrap_or_else(|e| panic!("{ty_id} node {node}: {e}"));
        for (gpu, layout) in &want {
            assert_eq!(&b.fake.layout(*gpu), layout, "{ty_id} node {node} GPU {gpu}");
        }
        assert_eq!(out.segments.len(), map.segments.iter().filter(|s| s.node == node).count());
        for s in &out.segments {
            let inst = b.fake.state().gpus[s.gpu as usize].instances.iter().find(|i| i.start == s.start).unwrap();
            assert_eq!(inst.uuid.as_deref(), Some(s.device.as_str()));
            assert!(b.running(&s.device), "daemon for {}", s.device);
            assert_eq!(s.env[0], ("CUDA_VISIBLE_DEVICES".into(), s.device.clone()));
            assert!(s.env[1].1.ends_with(&format!("mps/{}/pipe", s.device)));
        }
        // Deploying the same plan again changes nothing.
        let before = b.fake.calls().len();
        let again = b.deploy(map, &opts_for(node, ty_id)).unwrap();
        assert!(again.plan.actions.is_empty(), "{:?}", again.plan.actions);
        assert!(b.fake.calls()[before..].iter().all(|c| !c.contains("_instance gpu")));
    }
}

#[test]
fn fixture_maps_deploy_on_fresh_a100_and_h100_fakes() {
    for name in ["a100_mixed.csv", "a100_mixed_v2.csv"] {
        let map = fixture(name);
        check_deploys_on_fresh_fakes(&map, "a100-80gb");
        check_deploys_on_fresh_fakes(&map, "h100-80gb");
    }
}

#[test]
fn redeploy_changes_only_the_differing_instances() {
    let (v1, v2) = (fixture("a100_mixed.csv"), fixture("a100_mixed_v2.csv"));
    let mut b = Bench::new("a100-80gb:8");
    let first = b.deploy(&v1, &opts_for(0, "a100-80gb")).unwrap();
    let uuid_at = |out: &DeployOutcome, gpu: u32, start: u8| {
        out.segments.iter().find(|s| s.gpu == gpu && s.start == start).map(|s| s.device.clone())
    };
    let n = b.fake.calls().len();
    let second = b.deploy(&v2, &opts_for(0, "a100-80gb")).unwrap();
    let mut changes: Vec<String> =
        b.fake.calls()[n..].iter().filter(|c| c.contains("_instance gpu")).cloned().collect();
    changes.sort();
    let mut want: Vec<String> = vec![
        // GPU 0: 2g@4 -> 1g@4 + 1g@5 (4g@0 and 1g@6 kept).
        "destroy_instance gpu=0 gi=2".into(),
        "create_instance gpu=0 profile=19 start=4".into(),
        "create_instance gpu=0 profile=19 start=5".into(),
        // GPU 1: 3g@4 -> 2g@4 + 1g@6 (3g@0 kept).
        "destroy_instance gpu=1 gi=2".into(),
        "create_instance gpu=1 profile=14 start=4".into(),
        "create_instance gpu=1 profile=19 start=6".into(),
        // GPU 2: seven 1g -> one 7g.
        "create_instance gpu=2 profile=0 start=0".into(),
        // GPU 3: new.
        "create_instance gpu=3 profile=14 start=0".into(),
    ];
    want.extend((1..=7).map(|gi| format!("destroy_instance gpu=2 gi={gi}")));
    want.sort();
    assert_eq!(changes, want);
    for (gpu, start) in [(0, 0), (0, 6), (1, 0)] {
        assert_eq!(uuid_at(&first, gpu, start), uuid_at(&second, gpu, start), "kept GPU {gpu} {{{start}}}");
    }
    let stopped: Vec<&String> = b.mps.calls().iter().filter(|c| c.starts_with("mps_stop")).collect();
    assert_eq!(stopped.len(), 9, "daemons of the 9 destroyed instances: {stopped:?}");
    assert!(b.mps.calls().iter().filter(|c| c.starts_with("mps_start")).count() == 12 + 6);
}

/// Deploy v1, then v2 with a fault at the `k`-th call matching `pattern`: the node must end in
/// the state checkpointed before v2.
fn redeploy_with_fault(pattern: &str, k: usize) -> Option<String> {
    let (v1, v2) = (fixture("a100_mixed.csv"), fixture("a100_mixed_v2.csv"));
    let mut b = Bench::new("a100-80gb:8");
    b.deploy(&v1, &opts_for(0, "a100-80gb")).unwrap();
    let before = b.snapshot();
    let fault = Some(Fault::new(pattern, k));
    if pattern.starts_with("mps") { b.mps.set_fault(fault) } else { b.fake.set_fault(fault) }
    match b.deploy(&v2, &opts_for(0, "a100-80gb")) {
        Ok(_) => None,
        Err(e) => {
            let text = e.to_string();
            assert!(matches!(e, DeployError::StepFailed { .. }), "{text}");
            assert!(text.contains("injected failure") && text.contains("restored to checkpoint"), "{text}");
            assert_eq!(b.snapshot(), before, "fault {pattern}#{k}: {text}");
            Some(text)
        }
    }
}

#[test]
fn failure_at_every_step_restores_the_checkpointed_state() {
    for pattern in ["_instance gpu", "mps_st"] {
        let mut k = 1;
        while let Some(text) = redeploy_with_fault(pattern, k) {
            if k == 1 {
                let first = if pattern == "mps_st" { "step 1 of 30" } else { "step 10 of 30" };
                assert!(text.contains(first), "{text}");
            }
            k += 1;
        }
        // 9 destroys + 6 creates, or 9 daemon stops + 6 starts.
        assert_eq!(k - 1, 9 + 6, "every {pattern} step was failed once");
    }
}

#[test]
fn dry_run_changes_nothing() {
    let mut b = Bench::new("a100-80gb:8");
    b.deploy(&fixture("a100_mixed.csv"), &opts_for(0, "a100-80gb")).unwrap();
    let (state, files) = (b.fake.state().clone(), std::fs::read_dir(b.dir.path()).unwrap().count());
    let n = (b.fake.calls().len(), b.mps.calls().len());
    let ck = std::fs::read(b.dir.path().join(CHECKPOINT_FILE)).unwrap();
    let out = b.node().deploy(&fixture("a100_mixed_v2.csv"), &opts_for(0, "a100-80gb"), true).unwrap();
    assert!(!out.applied && out.plan.actions.len() == 9 + 9 + 6 + 6);
    assert_eq!(b.fake.state(), &state);
    assert!(b.fake.calls()[n.0..].iter().all(|c| ["gpus", "instances", "processes"].iter().any(|r| c.starts_with(r))));
    assert_eq!(b.mps.calls().len(), n.1);
    assert_eq!(std::fs::read_dir(b.dir.path()).unwrap().count(), files);
    assert_eq!(std::fs::read(b.dir.path().join(CHECKPOINT_FILE)).unwrap(), ck);
    assert!(out.segments.iter().any(|s| s.device == "<new>"));
}

#[test]
fn checks_refuse_before_any_change() {
    let map = fixture("a100_mixed_v2.csv");
    let mut b = Bench::new("a100-80gb:8");
    b.deploy(&fixture("a100_mixed.csv"), &opts_for(0, "a100-80gb")).unwrap();
    let state = b.fake.state().clone();
    // A foreign process on the 2g at {4} of GPU 0, which v2 replaces.
    let gi = b.fake.state().gpus[0].instances.iter().find(|i| i.start == 4).unwrap().gi_id;
    b.fake.add_process(0, Some(gi), 999);
    let e = b.deploy(&map, &opts_for(0, "a100-80gb")).unwrap_err().to_string();
    assert!(e.contains("GPU 0 (GPU-") && e.contains("2g.20gb at placement {4}") && e.contains("999"), "{e}");
    b.fake.state_mut().gpus[0].processes.clear();
    b.fake.state_mut().privileged = false;
    let e = b.deploy(&map, &opts_for(0, "a100-80gb")).unwrap_err().to_string();
    assert!(e.contains("needs root"), "{e}");
    b.fake.state_mut().privileged = true;
    b.fake.state_mut().gpus[3].mig = crate::mig::MigMode::DISABLED;
    let e = b.deploy(&map, &opts_for(0, "a100-80gb")).unwrap_err().to_string();
    assert!(e.contains("GPU 3") && e.contains("nvidia-smi -i 3 -mig 1"), "{e}");
    b.fake.state_mut().gpus[3].mig = crate::mig::MigMode::ENABLED;
    let e = b.deploy(&map, &opts_for(0, "h100-80gb")).unwrap_err().to_string();
    assert!(e.contains("A100") && e.contains("h100-80gb"), "{e}");
    assert_eq!(b.fake.state(), &state);
}

#[test]
fn teardown_removes_what_parva_created_and_restore_brings_back_the_checkpoint() {
    let mut b = Bench::new("a100-80gb:4");
    // A pre-existing instance parva must not remove: 1g at {6} on GPU 0, kept by the plan.
    let pre = b.fake.create_instance(0, 19, 6).unwrap();
    let ck_state = b.snapshot();
    b.deploy(&fixture("a100_mixed.csv"), &opts_for(0, "a100-80gb")).unwrap();
    assert_eq!(b.fake.state().gpus[0].instances.iter().find(|i| i.start == 6).unwrap().uuid, pre.uuid);
    let done = b.node().teardown().unwrap();
    assert!(done.iter().any(|d| d.contains("stopped the MPS daemon")), "{done:?}");
    // Every line names the deployed node, and instances by their profile names.
    assert!(done.iter().all(|d| d.starts_with("node 0: ")), "{done:?}");
    assert!(done.iter().any(|d| d.starts_with("node 0: GPU 1: destroyed ") && d.contains("g.") && d.contains("(profile ")), "{done:?}");
    assert_eq!(b.fake.layout(0), vec![(19, 6)], "the pre-existing instance stays");
    assert!(b.fake.layout(1).is_empty() && b.fake.layout(2).is_empty());
    // Exactly the node as it was before the deploy: its instance, without a daemon parva started.
    assert_eq!(b.snapshot(), ck_state, "teardown leaves the node as it found it");
    assert!(matches!(b.node().teardown(), Err(DeployError::NoRecord { .. })));
    // Restore: back to the checkpoint taken before the latest deploy (v1's layout and daemons).
    b.deploy(&fixture("a100_mixed.csv"), &opts_for(0, "a100-80gb")).unwrap();
    let before_v2 = b.snapshot();
    b.deploy(&fixture("a100_mixed_v2.csv"), &opts_for(0, "a100-80gb")).unwrap();
    assert_ne!(b.snapshot(), before_v2, "v2 changes the node");
    b.node().restore().unwrap();
    assert_eq!(b.fake.layout(2).len(), 7, "state before the v2 deploy");
    assert_eq!(b.snapshot(), before_v2, "restore brings back every instance and daemon of the checkpoint");
    assert!(b.node().restore().unwrap().is_empty(), "already there");
    assert_eq!(b.snapshot(), before_v2);
}

#[test]
fn no_mig_runs_segments_on_whole_gpus_with_thread_percentages() {
    let mut b = Bench::new("a100-80gb:8");
    for g in &mut b.fake.state_mut().gpus {
        g.mig = crate::mig::MigMode::DISABLED;
    }
    let opts = DeployOptions { no_mig: true, ..opts_for(0, "a100-80gb") };
    let out = b.deploy(&fixture("a100_mixed.csv"), &opts).unwrap();
    assert!(b.fake.calls().iter().all(|c| !c.contains("_instance gpu")));
    let seg = out.segments.iter().find(|s| s.gpu == 1 && s.start == 4).unwrap();
    assert_eq!(seg.device, "GPU-fa4e0000-0000-4000-8000-000000000001");
    assert!(seg.env.contains(&("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE".into(), "43".into())), "{:?}", seg.env);
    assert!(seg.profile.contains("share of the whole GPU"));
    assert!(b.running(&seg.device));
    assert_eq!(b.mps.calls().len(), 3, "one daemon per GPU: {:?}", b.mps.calls());
    b.node().teardown().unwrap();
    assert!(!b.running(&seg.device));
}

#[test]
fn a_second_deploy_is_refused_while_an_earlier_one_serves() {
    let mut b = Bench::new("a100-80gb:4");
    b.deploy(&fixture("a100_mixed.csv"), &opts_for(0, "a100-80gb")).unwrap();
    // Pretend the record belongs to another serving `parva` process: a copy of `sleep` named
    // `parva`.
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("parva");
    std::fs::copy("/bin/sleep", &exe).unwrap();
    let mut child = std::process::Command::new(&exe).arg("30").spawn().unwrap();
    // Wait until the child's command line shows the copied name (the check reads it), so a
    // loaded machine cannot make the refusal race the child's start.
    let cmdline = format!("/proc/{}/cmdline", child.id());
    let shows_parva = || std::fs::read(&cmdline).is_ok_and(|c| c.split(|b| *b == 0).next().is_some_and(|e| e.ends_with(b"parva")));
    for _ in 0..500 {
        if shows_parva() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(shows_parva(), "the stand-in `parva` process {} never showed in {cmdline}", child.id());
    let path = b.dir.path().join(RECORD_FILE);
    let mut record = load_record(&path).unwrap();
    record.pid = child.id();
    std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
    let e = b.deploy(&fixture("a100_mixed_v2.csv"), &opts_for(0, "a100-80gb")).unwrap_err();
    let _ = child.kill();
    let _ = child.wait();
    assert!(matches!(e, DeployError::AlreadyServing { .. }), "{e}");
    assert!(e.to_string().contains(&format!("pid {}", record.pid)), "{e}");
    // Once it has stopped, deploying works again.
    b.deploy(&fixture("a100_mixed_v2.csv"), &opts_for(0, "a100-80gb")).unwrap();
}

#[test]
fn remove_instance_stops_its_daemon_and_destroys_only_that_instance() {
    let map = fixture("a100_mixed.csv");
    let mut b = Bench::new("a100-80gb:8");
    let out = b.deploy(&map, &opts_for(0, "a100-80gb")).unwrap();
    let seg = out.segments.iter().find(|s| s.gpu == 0).unwrap().clone();
    let before = b.snapshot();
    assert!(b.running(&seg.device));
    let done = b.node().remove_instance(0, seg.start).unwrap();
    assert_eq!(done.len(), 2, "{done:?}");
    assert!(!b.running(&seg.device), "its MPS daemon stopped");
    let after = b.snapshot();
    assert_eq!(after[0].len() + 1, before[0].len(), "one instance fewer on GPU 0");
    assert!(after[0].iter().all(|i| i.1 != seg.start));
    assert_eq!(after[1..], before[1..], "other GPUs untouched");
    // Nothing starts there any more: nothing to do.
    assert!(b.node().remove_instance(0, seg.start).unwrap().is_empty());
}
