use super::*;
use parva_core::deploy::Segment;

fn seg(node: u32, gpu: u32, placement: u8, size: u8, service: &str) -> Segment {
    Segment {
        node,
        gpu,
        service: service.into(),
        model: "resnet50".into(),
        placement,
        instance_size: size,
        batch_size: 8,
        num_proc: 2,
        profile: None,
        gpu_type: Some("a100-80gb".into()),
        throughput: Some(100.0),
        rate: Some(50.0),
        slo_ms: Some(100.0),
        margin_ms: None,
    }
}

fn opts() -> Options {
    Options { prefix: "parva".into(), namespace: "parva".into(), image: "parva:0.1.0".into(), router_replicas: 2, node_names: BTreeMap::new(), memory_per_process_mib: 4096, shm_mib_per_process: 256, image_pull_secret: None, models: Models::Image }
}

/// Issue 33: there was no models volume; the image had to bake the models in.
#[test]
fn the_models_come_from_the_image_a_claim_or_a_node_directory_mounted_read_only() {
    let map = DeploymentMap { segments: vec![seg(0, 1, 4, 3, "svc")], jobs: vec![] };
    let gpu = GpuType::by_id("a100-80gb").unwrap();
    let pod = |models: Models| {
        let w = workloads(&map, "text", gpu, &Options { models, ..opts() }).unwrap();
        let d = w.segments.values().next().unwrap().deployment.clone();
        d.spec.unwrap().template.spec.unwrap()
    };
    let volume = |p: &PodSpec| p.volumes.as_ref().unwrap().iter().find(|v| v.name == "models").cloned();
    let mount = |p: &PodSpec| p.containers[0].volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "models").cloned();
    let image = pod(Models::Image);
    assert!(volume(&image).is_none() && mount(&image).is_none());
    let claim = pod(Models::Claim("parva-models".into()));
    let pvc = volume(&claim).unwrap().persistent_volume_claim.unwrap();
    assert_eq!((pvc.claim_name.as_str(), pvc.read_only), ("parva-models", Some(true)));
    let m = mount(&claim).unwrap();
    assert_eq!((m.mount_path.as_str(), m.read_only), (MODELS_DIR, Some(true)));
    let host = pod(Models::HostPath("/srv/parva/models".into()));
    assert_eq!(volume(&host).unwrap().host_path.unwrap().path, "/srv/parva/models");
    assert!(mount(&host).is_some());
    // The command reads the models where they are mounted.
    assert!(host.containers[0].command.as_ref().unwrap().join(" ").contains(&format!("--models {MODELS_DIR}")));
    for (bad, rule) in [(Models::Claim("Models_1".into()), "--models-pvc"), (Models::HostPath("srv/models".into()), "--models-host-path"), (Models::HostPath("/srv/../etc".into()), "--models-host-path")] {
        let e = workloads(&map, "text", gpu, &Options { models: bad, ..opts() }).unwrap_err().to_string();
        assert!(e.contains(rule), "{e}");
    }
}

#[test]
fn a_segment_pod_requests_its_mig_profile_on_its_node_and_runs_parva_segment() {
    let map = DeploymentMap { segments: vec![seg(0, 1, 4, 3, "svc")], jobs: vec![] };
    let gpu = GpuType::by_id("a100-80gb").unwrap();
    let mut o = opts();
    o.node_names.insert(0, "gpu-a".into());
    let w = workloads(&map, "text", gpu, &o).unwrap();
    let id: SegmentId = "n0-g1-p4".parse().unwrap();
    let d = &w.segments[&id].deployment;
    assert_eq!(d.metadata.name.as_deref(), Some("parva-n0-g1-p4"));
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.strategy.as_ref().unwrap().type_.as_deref(), Some("Recreate"));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.node_selector.as_ref().unwrap()["kubernetes.io/hostname"], "gpu-a");
    let c = &pod.containers[0];
    let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(limits["nvidia.com/mig-3g.40gb"].0, "1");
    // 2 worker processes: 2 x 4096 MiB, and their 2 x 256 MiB of memory-backed /dev/shm.
    assert_eq!((limits["cpu"].0.as_str(), limits["memory"].0.as_str()), ("3", "8704Mi"));
    let shm = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "shm").unwrap().empty_dir.clone().unwrap();
    assert_eq!((shm.medium.as_deref(), shm.size_limit.map(|q| q.0)), (Some("Memory"), Some("512Mi".to_string())));
    assert!(c.volume_mounts.as_ref().unwrap().iter().any(|m| m.name == "shm" && m.mount_path == "/dev/shm"));
    // One PodDisruptionBudget per service, at most one of its segment pods evicted at once.
    assert_eq!(w.pdbs.len(), map.segments.iter().map(|s| s.service.as_str()).collect::<BTreeSet<_>>().len());
    let cmd = c.command.as_ref().unwrap().join(" ");
    assert!(cmd.starts_with("parva segment --map /etc/parva/map.csv --segment n0-g1-p4 --backend torch --device cuda"), "{cmd}");
    assert_eq!(c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(), Some("/v2/health/ready"));
    let router_cmd = w.router.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].command.as_ref().unwrap().join(" ");
    assert!(router_cmd.contains("--segments http://parva-{segment}.parva.svc:8000"), "{router_cmd}");
    assert_eq!(w.router.spec.as_ref().unwrap().replicas, Some(2));
    assert_eq!(mig_resource("1g.10gb+me"), "nvidia.com/mig-1g.10gb.me");
    // Bad names are refused with the rule.
    let mut bad = opts();
    bad.prefix = "Parva".into();
    assert!(workloads(&map, "", gpu, &bad).unwrap_err().to_string().contains("must be a DNS label"));
}

/// Over many random map pairs: every new segment is exactly one of added, changed, restarted
/// or unchanged; removed is exactly the old ones gone; a map against itself changes nothing.
#[test]
fn changes_partition_the_segments_of_random_map_pairs() {
    let gpu = GpuType::by_id("a100-80gb").unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let sizes = [1u8, 2, 3, 4, 7];
    for _ in 0..200 {
        let mut maps = Vec::new();
        for _ in 0..2 {
            let mut segs = Vec::new();
            let mut seen = BTreeSet::new();
            for _ in 0..next(8) {
                let (node, g, p) = (next(3) as u32, next(2) as u32, next(7) as u8);
                if seen.insert((node, g, p)) {
                    let mut sg = seg(node, g, p, sizes[next(5) as usize], ["a", "b"][next(2) as usize]);
                    sg.batch_size = 1 << next(3);
                    segs.push(sg);
                }
            }
            maps.push(DeploymentMap { segments: segs, jobs: vec![] });
        }
        let text = |m: &DeploymentMap| format!("{:?}", m.segment_ids());
        let old = workloads(&maps[0], &text(&maps[0]), gpu, &opts()).unwrap();
        let new = workloads(&maps[1], &text(&maps[1]), gpu, &opts()).unwrap();
        let relabelled: BTreeSet<u32> = (0..3).filter(|_| next(2) == 0).collect();
        let c = Changes::between(&old, &new, &relabelled);
        let mut all: Vec<SegmentId> = c.added.iter().chain(&c.changed).chain(&c.restarted).chain(&c.unchanged).copied().collect();
        all.sort();
        assert_eq!(all, new.segments.keys().copied().collect::<Vec<_>>());
        assert!(c.removed.iter().all(|id| old.segments.contains_key(id) && !new.segments.contains_key(id)));
        assert_eq!(c.removed.len(), old.segments.keys().filter(|id| !new.segments.contains_key(id)).count());
        assert!(c.unchanged.iter().all(|id| !relabelled.contains(&id.node)));
        let same = Changes::between(&new, &new, &BTreeSet::new());
        assert!(same.to_apply().is_empty() && same.removed.is_empty() && !same.map_changed);
    }
}

#[test]
fn a_changed_map_reapplies_only_changed_segments_and_restarts_those_on_relabelled_nodes() {
    let gpu = GpuType::by_id("a100-80gb").unwrap();
    let old_map = DeploymentMap { segments: vec![seg(0, 0, 0, 4, "a"), seg(0, 0, 4, 3, "b"), seg(1, 0, 0, 7, "c"), seg(2, 0, 0, 7, "d")], jobs: vec![] };
    let mut new_map = old_map.clone();
    new_map.segments[1].batch_size = 16; // b changed in place
    new_map.segments.remove(3); // d gone (node 2)
    new_map.segments.push(seg(1, 1, 0, 7, "e")); // e added on node 1
    let old = workloads(&old_map, "old", gpu, &opts()).unwrap();
    let new = workloads(&new_map, "new", gpu, &opts()).unwrap();
    let relabelled: BTreeSet<u32> = [1, 2].into();
    let c = Changes::between(&old, &new, &relabelled);
    let ids = |v: &[SegmentId]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(ids(&c.added), ["n1-g1-p0"]);
    assert_eq!(ids(&c.changed), ["n0-g0-p4"]);
    assert_eq!(ids(&c.removed), ["n2-g0-p0"]);
    assert_eq!(ids(&c.restarted), ["n1-g0-p0"], "c is unchanged but its node is relabelled");
    assert_eq!(ids(&c.unchanged), ["n0-g0-p0"]);
    assert!(c.map_changed);
    let script = apply_script(&new, &c, &[(1, "node-1".into()), (2, "node-2".into())], false, "parva");
    let at = |needle: &str| script.find(needle).unwrap_or_else(|| panic!("{needle} not in {script}"));
    assert!(at("kubectl apply -f map.yaml") < at("-l parva.io/node=1,app.kubernetes.io/component=segment --wait=true"));
    assert!(at("sh node-labels.sh") < at("kubectl wait node/node-1"));
    assert!(at("kubectl wait node/node-2") < at("kubectl apply -f segments/n0-g0-p4.yaml"));
    assert!(at("rollout status -n parva deployment/parva-n1-g1-p0") < at("kubectl apply -f router.yaml"));
    assert!(at("kubectl apply -f router.yaml") < at("-l parva.io/segment=n2-g0-p0 --ignore-not-found"));
    assert!(!script.contains("segments/n0-g0-p0.yaml"), "an unchanged segment on an unchanged node is left alone");
    assert!(!script.contains("namespace.yaml"));
}
