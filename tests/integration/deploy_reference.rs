//! `parva deploy` on fake GPUs with the plans `parva plan --algorithm parvagpu` makes from
//! ParvaGPU's published A100 scenarios (skipped when the reference data is absent) and with the
//! repository's fixture maps: every node on a fresh A100 and a fresh H100 fake must end with
//! exactly the map's layout and one MPS daemon per instance.

use std::collections::{BTreeMap, BTreeSet};

use parva_core::DeploymentMap;
use parva_core::mig::GpuType;
use parva_gpu::exec::Node;
use parva_gpu::fake::FakeGpus;
use parva_gpu::mps::{FakeMps, MpsControl, MpsDirs};
use parva_gpu::plan::DeployOptions;

use crate::util::{fixture, parva, reference_dir, stderr, stdout};

/// Deploy every node of `map` on fresh fakes of `ty_id`; assert layouts, daemons and envs.
fn deploy_every_node(map: &DeploymentMap, ty_id: &str, label: &str) {
    let ty = GpuType::by_id(ty_id).unwrap();
    let nodes: BTreeSet<u32> = map.segments.iter().map(|s| s.node).collect();
    for node in nodes {
        let mut want: BTreeMap<u32, Vec<(u32, u8)>> = BTreeMap::new();
        for s in map.segments.iter().filter(|s| s.node == node) {
            want.entry(s.gpu).or_default().push((ty.profile_for_size(s.instance_size).unwrap().id, s.placement));
        }
        let gpus = want.keys().max().unwrap() + 1;
        let mut fake = FakeGpus::from_spec(&format!("{ty_id}:{gpus}")).unwrap();
        let mut mps = FakeMps::default();
        let dir = tempfile::tempdir().unwrap();
        let opts = DeployOptions { node, gpu_type: Some(ty_id.into()), ..Default::default() };
        let out = Node { mig: &mut fake, mps: &mut mps, run_dir: dir.path().to_path_buf() }
            .deploy(map, &opts, false)
            .unwrap_or_else(|e| panic!("{label} on {ty_id}, node {node}: {e}"));
        for (gpu, layout) in &mut want {
            layout.sort_unstable();
            assert_eq!(&fake.layout(*gpu), layout, "{label} on {ty_id}, node {node}, GPU {gpu}");
        }
        assert_eq!(out.segments.len(), map.segments.iter().filter(|s| s.node == node).count());
        for s in &out.segments {
            assert!(s.device.starts_with("MIG-"), "{label}: {s:?}");
            assert!(mps.running(&MpsDirs::under(dir.path(), &s.device)).unwrap(), "{label}: no daemon for {}", s.device);
        }
    }
}

#[test]
fn deploy_reference_plans_on_fresh_a100_and_h100_fakes() {
    let Some(dir) = reference_dir() else { return };
    let out_dir = tempfile::tempdir().unwrap();
    for n in 1..=6 {
        let out = out_dir.path().join(format!("SLO{n}.csv"));
        let o = parva(&[
            "plan", "--prof-data", dir.join("prof_data").to_str().unwrap(),
            "--slo-dir", dir.join("SLO").to_str().unwrap(), "--slo", &n.to_string(),
            "--gpu", "a100-80gb", "--algorithm", "parvagpu", "--out", out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "plan scenario {n}: {}", stderr(&o));
        let (map, _) = DeploymentMap::read(&out).unwrap();
        deploy_every_node(&map, "a100-80gb", &format!("SLO{n}"));
        deploy_every_node(&map, "h100-80gb", &format!("SLO{n}"));
        // And through the CLI, node 0, as a dry run and for real.
        let run = out_dir.path().join(format!("run{n}"));
        // (--no-serve: the reference models are not exported here; serving is checked elsewhere.)
        for extra in [&["--dry-run", "--no-serve"][..], &["--no-serve"][..]] {
            let mut args = vec![
                "deploy", "--plan", out.to_str().unwrap(), "--node", "0", "--fake-gpus", "a100-80gb:8",
                "--run-dir", run.to_str().unwrap(), "--json",
            ];
            args.extend_from_slice(extra);
            let o = parva(&args);
            assert!(o.status.success(), "deploy scenario {n} {extra:?}: {}", stderr(&o));
            let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
            let segs = map.segments.iter().filter(|s| s.node == 0).count();
            assert_eq!(v["segments"].as_array().unwrap().len(), segs, "scenario {n}");
        }
    }
}

#[test]
fn deploy_fixture_maps_on_fresh_a100_and_h100_fakes() {
    for name in ["maps/a100_mixed.csv", "maps/a100_mixed_v2.csv"] {
        let (map, _) = DeploymentMap::read(&fixture(name)).unwrap();
        deploy_every_node(&map, "a100-80gb", name);
        deploy_every_node(&map, "h100-80gb", name);
    }
}
