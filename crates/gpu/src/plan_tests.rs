use super::*;
use crate::mig::MigMode;
use std::path::Path;

fn map(text: &str) -> DeploymentMap {
    let head = "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n";
    DeploymentMap::read_from(format!("{head}{text}").as_bytes(), Path::new("m.csv")).unwrap().0
}

fn gpu(index: u32, name: &str, instances: Vec<MigInstance>) -> ObservedGpu {
    ObservedGpu {
        info: GpuInfo { index, uuid: format!("GPU-{index}"), name: name.into(), mig: MigMode::ENABLED, pci_device_id: None },
        instances,
        processes: Vec::new(),
        daemons: BTreeSet::new(),
    }
}

fn inst(gi_id: u32, profile_id: u32, start: u8, size: u8) -> MigInstance {
    MigInstance { gi_id, profile_id, start, size, ci_ids: vec![0], uuid: Some(format!("MIG-{gi_id}")) }
}

fn a100(instances: Vec<MigInstance>) -> ObservedNode {
    ObservedNode { gpus: vec![gpu(0, "NVIDIA A100-SXM4-80GB", instances)], orphan_daemons: Vec::new() }
}

const TWO: &str = "0,0,a,resnet50,0,4,8,2,4g.40gb,a100-80gb,,,\n0,0,b,bert,4,3,8,1,,a100-80gb,,,\n";

fn texts(p: &DeployPlan) -> Vec<String> {
    p.actions.iter().map(|a| a.to_string()).collect()
}

#[test]
fn fresh_gpu_creates_largest_first_then_starts_daemons() {
    let p = changes(&map(TWO), &DeployOptions::default(), &a100(vec![])).unwrap();
    assert_eq!(
        p.actions,
        vec![
            Action::CreateInstance { gpu: 0, profile_id: 5, profile: "4g.40gb".into(), start: 0 },
            Action::CreateInstance { gpu: 0, profile_id: 9, profile: "3g.40gb".into(), start: 4 },
            Action::StartDaemon { gpu: 0, start: Some(0), device: None },
            Action::StartDaemon { gpu: 0, start: Some(4), device: None },
        ]
    );
    assert_eq!(p.targets.len(), 2);
    assert!(texts(&p)[0].contains("create 4g.40gb (profile id 5) at placement {0}"));
}

#[test]
fn matching_instances_are_kept_with_their_daemon_and_the_rest_replaced() {
    let mut node = a100(vec![inst(1, 5, 0, 4), inst(2, 14, 4, 2), inst(3, 19, 6, 1)]);
    node.gpus[0].daemons.insert("MIG-1".into());
    node.gpus[0].daemons.insert("MIG-2".into());
    let p = changes(&map(TWO), &DeployOptions::default(), &node).unwrap();
    assert_eq!(
        p.actions,
        vec![
            Action::StopDaemon { gpu: Some(0), device: "MIG-2".into() },
            Action::DestroyInstance { gpu: 0, gi_id: 2, profile_id: 14, profile: "2g.20gb".into(), start: 4 },
            Action::DestroyInstance { gpu: 0, gi_id: 3, profile_id: 19, profile: "1g.10gb".into(), start: 6 },
            Action::CreateInstance { gpu: 0, profile_id: 9, profile: "3g.40gb".into(), start: 4 },
            Action::StartDaemon { gpu: 0, start: Some(4), device: None },
        ]
    );
    assert_eq!(p.targets[0].kept_device.as_deref(), Some("MIG-1"));
    // Same state with the plan already applied: nothing to do.
    let mut node = a100(vec![inst(1, 5, 0, 4), inst(4, 9, 4, 4)]);
    node.gpus[0].daemons.insert("MIG-1".into());
    let p = changes(&map(TWO), &DeployOptions::default(), &node).unwrap();
    assert_eq!(p.actions, vec![Action::StartDaemon { gpu: 0, start: Some(4), device: Some("MIG-4".into()) }]);
}

#[test]
fn keep_unchanged_leaves_non_overlapping_instances_alone() {
    let one = "0,0,a,resnet50,0,4,8,2,4g.40gb,a100-80gb,,,\n";
    let node = a100(vec![inst(7, 19, 6, 1), inst(8, 19, 0, 1)]);
    let opts = DeployOptions { keep_unchanged: true, ..Default::default() };
    let p = changes(&map(one), &opts, &node).unwrap();
    assert_eq!(p.untouched, vec!["GPU 0: 1g.10gb at {6}".to_string()]);
    assert!(matches!(p.actions[0], Action::DestroyInstance { gi_id: 8, .. }));
    let p = changes(&map(one), &DeployOptions::default(), &node).unwrap();
    assert_eq!(p.actions.iter().filter(|a| matches!(a, Action::DestroyInstance { .. })).count(), 2);
}

#[test]
fn checks_refuse_with_the_admin_command_and_the_gpu() {
    let mut node = a100(vec![]);
    node.gpus[0].info.mig = MigMode::DISABLED;
    let e = changes(&map(TWO), &DeployOptions::default(), &node).unwrap_err().to_string();
    assert!(e.contains("GPU 0 (GPU-0)") && e.contains("sudo nvidia-smi -i 0 -mig 1") && e.contains("never"), "{e}");
    node.gpus[0].info.mig = MigMode { supported: true, current: false, pending: true };
    let e = changes(&map(TWO), &DeployOptions::default(), &node).unwrap_err().to_string();
    assert!(e.contains("pending a GPU reset") && e.contains("nvidia-smi -i 0 -r"), "{e}");
    let e = changes(&map(TWO), &DeployOptions { no_mig: true, ..Default::default() }, &a100(vec![])).unwrap_err().to_string();
    assert!(e.contains("-mig 0"), "{e}");
    let mut h100 = a100(vec![]);
    h100.gpus[0].info.name = "NVIDIA H100 80GB HBM3".into();
    let e = changes(&map(TWO), &DeployOptions::default(), &h100).unwrap_err().to_string();
    assert!(e.contains("GPU 0 (GPU-0) is a `NVIDIA H100 80GB HBM3`") && e.contains("a100-80gb"), "{e}");
    let opts = DeployOptions { gpu_index_map: parse_index_map("0=3").unwrap(), ..Default::default() };
    let e = changes(&map(TWO), &opts, &a100(vec![])).unwrap_err().to_string();
    assert!(e.contains("plan GPU 0 maps to GPU 3") && e.contains("1 GPU"), "{e}");
    let e = changes(&map(TWO), &DeployOptions { node: 4, ..Default::default() }, &a100(vec![])).unwrap_err().to_string();
    assert!(e.contains("node 4") && e.contains("[0]"), "{e}");
    let bad = "0,0,a,resnet50,0,4,8,2,,a100-80gb,,,\n0,0,b,bert,2,2,8,1,,a100-80gb,,,\n";
    let e = changes(&map(bad), &DeployOptions::default(), &a100(vec![])).unwrap_err().to_string();
    assert!(e.contains("overlaps"), "{e}");
}

#[test]
fn foreign_processes_block_changes_but_our_mps_server_does_not() {
    let mut node = a100(vec![inst(2, 14, 4, 2)]);
    node.gpus[0].processes.push(GpuProcess { pid: 77, gi_id: Some(2), name: Some("python3".into()) });
    let e = changes(&map(TWO), &DeployOptions::default(), &node).unwrap_err().to_string();
    assert!(e.contains("GPU 0 (GPU-0): 2g.20gb at placement {4}") && e.contains("77 (python3)"), "{e}");
    let mut node = a100(vec![inst(2, 14, 4, 2)]);
    node.gpus[0].daemons.insert("MIG-2".into());
    node.gpus[0].processes.push(GpuProcess { pid: 78, gi_id: Some(2), name: Some("nvidia-cuda-mps-server".into()) });
    node.gpus[0].processes.push(GpuProcess { pid: 79, gi_id: Some(9), name: Some("python3".into()) });
    let p = changes(&map(TWO), &DeployOptions::default(), &node).unwrap();
    assert_eq!(p.actions[0], Action::StopDaemon { gpu: Some(0), device: "MIG-2".into() });
}

#[test]
fn no_mig_starts_one_daemon_per_gpu_with_gpc_shares() {
    let mut node = a100(vec![]);
    node.gpus[0].info.mig = MigMode::DISABLED;
    let p = changes(&map(TWO), &DeployOptions { no_mig: true, ..Default::default() }, &node).unwrap();
    assert_eq!(p.actions, vec![Action::StartDaemon { gpu: 0, start: None, device: Some("GPU-0".into()) }]);
    let pct: Vec<Option<u8>> = p.targets.iter().map(|t| t.active_thread_percentage).collect();
    assert_eq!(pct, vec![Some(57), Some(43)]);
    assert!(!p.changes_mig());
}

/// Best-effort instances are deployed as segments are; beside MPS shares (`--no-mig`) each is also
/// capped to the memory of the MIG profile it stands for, so it cannot take the shares' memory.
#[test]
fn best_effort_instances_get_instances_and_without_mig_a_pinned_memory_cap() {
    let mut m = map("0,0,a,resnet50,0,4,8,2,4g.40gb,a100-80gb,,,\n");
    m.jobs.push(parva_core::deploy::JobSlot {
        node: 0,
        gpu: 0,
        job: "ft".into(),
        model: "bert".into(),
        kind: parva_core::jobs::JobKind::Train,
        placement: 4,
        instance_size: 3,
        batch_size: 16,
        priority: 1,
        profile: Some("3g.40gb".into()),
        gpu_type: Some("a100-80gb".into()),
        throughput: None,
    });
    let p = changes(&m, &DeployOptions::default(), &a100(vec![])).unwrap();
    assert!(p.actions.contains(&Action::CreateInstance { gpu: 0, profile_id: 9, profile: "3g.40gb".into(), start: 4 }), "{:?}", p.actions);
    assert!(p.targets.iter().all(|t| t.pinned_mem_limit_mb.is_none()), "MIG isolates memory already");
    let mut node = a100(vec![]);
    node.gpus[0].info.mig = MigMode::DISABLED;
    let p = changes(&m, &DeployOptions { no_mig: true, ..Default::default() }, &node).unwrap();
    let caps: Vec<(&str, Option<u8>, Option<u64>)> =
        p.targets.iter().map(|t| (t.service.as_str(), t.active_thread_percentage, t.pinned_mem_limit_mb)).collect();
    // The pinned limit is the 3g.40gb instance's memory as the fit checks count it (NVIDIA's
    // 40,192 MiB, not the name's 40 GB).
    assert_eq!(caps, vec![("a", Some(57), None), ("ft", Some(43), Some(40192))]);
    let envs = crate::exec::segment_envs(&p, &BTreeMap::new(), Path::new("/run"));
    let ft = envs.iter().find(|e| e.service == "ft").unwrap();
    assert!(ft.env.contains(&("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT".to_string(), "0=40192M".to_string())), "{:?}", ft.env);
    assert!(ft.env.contains(&("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE".to_string(), "43".to_string())));
}

#[test]
fn orphan_daemons_are_stopped_first() {
    let mut node = a100(vec![inst(1, 5, 0, 4), inst(4, 9, 4, 4)]);
    node.gpus[0].daemons.extend(["MIG-1".to_string(), "MIG-4".to_string()]);
    node.orphan_daemons.push("MIG-gone".into());
    let p = changes(&map(TWO), &DeployOptions::default(), &node).unwrap();
    assert_eq!(p.actions, vec![Action::StopDaemon { gpu: None, device: "MIG-gone".into() }]);
    assert_eq!(p.actions[0].to_string(), "stop the MPS daemon of MIG-gone, whose device no longer exists");
}

#[test]
fn gpu_index_map_parses_and_refuses_duplicates() {
    let m = parse_index_map("0=2, 1=3").unwrap();
    assert_eq!(m.get(&1), Some(&3));
    assert!(parse_index_map("0=2,0=3").unwrap_err().to_string().contains("twice"));
    match parse_index_map("0:2").unwrap_err() {
        DeployError::BadIndexMap { spec, reason } => assert_eq!((spec.as_str(), reason.as_str()), ("0:2", "`0:2` has no `=`")),
        e => panic!("expected BadIndexMap, got {e:?}"),
    }
    let two_gpus = "0,0,a,resnet50,0,7,8,2,,a100-80gb,,,\n0,1,b,bert,0,7,8,1,,a100-80gb,,,\n";
    let mut node = a100(vec![]);
    node.gpus.push(gpu(1, "NVIDIA A100-SXM4-80GB", vec![]));
    let opts = DeployOptions { gpu_index_map: parse_index_map("0=1").unwrap(), ..Default::default() };
    let e = changes(&map(two_gpus), &opts, &node).unwrap_err().to_string();
    // Regression (issue 34): the map was printed as Rust's `{0: 1}`; it reads as it was given,
    // and the message says how to fix it.
    assert!(e.contains("bad --gpu-index-map `0=1`") && e.contains("both map to NVML GPU 1") && e.contains("e.g. 0=1,1=0"), "{e}");
    let opts = DeployOptions { gpu_index_map: parse_index_map("0=1,1=0").unwrap(), ..Default::default() };
    let p = changes(&map(two_gpus), &opts, &node).unwrap();
    assert_eq!((p.targets[0].plan_gpu, p.targets[0].gpu), (0, 1));
}
