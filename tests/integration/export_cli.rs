//! Issue 16: `parva export k8s` writes the GPU Operator's MIG manager config for a map: a
//! ConfigMap (key `config.yaml`) that passes `kubernetes-validate --strict`, a mig-parted v1
//! config whose per-GPU counts are the map's layouts, and the node labels that select it.

use std::collections::BTreeMap;
use std::path::Path;

use parva_core::DeploymentMap;
use parva_gpu::migparted::MigPartedConfig;

use crate::util::{install_script, parva, stderr, stdout};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `kubernetes-validate` (PyPI; schemas inside, no cluster): PARVA_KUBERNETES_VALIDATE, or
/// skipped with a message. scripts/test installs it and sets the variable.
fn validator() -> Option<String> {
    match std::env::var("PARVA_KUBERNETES_VALIDATE") {
        Ok(v) if Path::new(&v).is_file() => Some(v),
        Ok(v) => panic!("PARVA_KUBERNETES_VALIDATE={v} is not a file"),
        Err(_) => {
            eprintln!("skipped: kubernetes-validate not found (set PARVA_KUBERNETES_VALIDATE; scripts/test installs it)");
            None
        }
    }
}

/// Export `map` and check: the manifest validates, the config follows mig-parted's rules and
/// holds, per node and GPU, the map's instance counts.
fn export_and_check(map: &Path, out: &Path, extra: &[&str]) -> (MigPartedConfig, String) {
    let mut args = vec!["export", "k8s", "--map", s(map), "--out", s(out)];
    args.extend_from_slice(extra);
    let o = parva(&args);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let manifest = std::fs::read_to_string(out.join("mig-config.yaml")).unwrap();
    assert!(manifest.starts_with("apiVersion: v1\nkind: ConfigMap\n"), "{manifest}");
    // Every manifest written: the MIG manager's ConfigMap, and the serving workloads.
    let mut manifests: Vec<std::path::PathBuf> =
        ["mig-config.yaml", "namespace.yaml", "map.yaml", "router.yaml", "pdb.yaml"].iter().map(|f| out.join(f)).filter(|p| p.exists()).collect();
    let mut segment_files: Vec<std::path::PathBuf> = std::fs::read_dir(out.join("segments")).unwrap().map(|e| e.unwrap().path()).collect();
    segment_files.sort();
    manifests.extend(segment_files);
    // A rollout's per-wave maps and routers.
    if let Ok(waves) = std::fs::read_dir(out.join("waves")) {
        for w in waves {
            manifests.extend(std::fs::read_dir(w.unwrap().path()).unwrap().map(|e| e.unwrap().path()));
        }
    }
    // Every object parses as YAML with a kind and a name ...
    for p in &manifests {
        let text = std::fs::read_to_string(p).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v = <serde_yaml_ng::Value as serde::Deserialize>::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(v.get("kind").and_then(|k| k.as_str()).is_some(), "{}: no kind", p.display());
            assert!(v.get("metadata").and_then(|m| m.get("name")).and_then(|n| n.as_str()).is_some(), "{}: no name", p.display());
        }
    }
    // ... and passes the schemas: every file but the segments' (one file per segment, all written
    // by one function) when there are more than 200, of which 200 spread evenly from the first to
    // the last (a 1,000-service fleet has ~1,500 segment files, ~3,000 objects: a minute of the
    // validator's CPU for the same few shapes).
    const SAMPLE: usize = 200;
    let segments: Vec<usize> = (0..manifests.len()).filter(|&i| manifests[i].parent() == Some(&out.join("segments"))).collect();
    if segments.len() > SAMPLE {
        let keep: std::collections::BTreeSet<usize> = (0..SAMPLE).map(|k| segments[k * (segments.len() - 1) / (SAMPLE - 1)]).collect();
        let drop: std::collections::BTreeSet<usize> = segments.iter().copied().filter(|i| !keep.contains(i)).collect();
        manifests = manifests.into_iter().enumerate().filter(|(i, _)| !drop.contains(i)).map(|(_, p)| p).collect();
    }
    if let Some(v) = validator() {
        // One multi-document file: the validator's start-up and schema loading once, not per file.
        let all = out.with_extension("all.yaml");
        let text: Vec<String> = manifests.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
        std::fs::write(&all, text.join("---\n")).unwrap();
        let o = std::process::Command::new(v).args(["--strict", "-k", "1.33.0", s(&all)]).output().unwrap();
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        let passed = String::from_utf8_lossy(&o.stdout).matches(" passed for resource ").count() + String::from_utf8_lossy(&o.stderr).matches(" passed for resource ").count();
        let docs: usize = manifests.iter().map(|p| std::fs::read_to_string(p).unwrap().matches("\napiVersion: ").count() + 1).sum();
        assert_eq!(passed, docs, "every object validated");
    }
    let config = MigPartedConfig::from_yaml(&std::fs::read_to_string(out.join("config.yaml")).unwrap()).unwrap();
    let (m, _) = DeploymentMap::read(map).unwrap();
    let gpu = parva_core::GpuType::by_id(m.segments[0].gpu_type.as_deref().unwrap()).unwrap();
    parva_gpu::migparted::check(&config, gpu).unwrap();
    let mut want: BTreeMap<(String, u32), BTreeMap<String, u32>> = BTreeMap::new();
    for seg in &m.segments {
        let p = parva_core::deploy::segment_profile(gpu, seg).unwrap();
        let name = config.name_of("parva", seg.node).unwrap().to_string();
        *want.entry((name, seg.gpu)).or_default().entry(p.name.to_string()).or_default() += 1;
    }
    let mut got: BTreeMap<(String, u32), BTreeMap<String, u32>> = BTreeMap::new();
    for (name, entries) in &config.mig_configs {
        for e in entries {
            assert!(e.mig_enabled);
            for d in &e.devices {
                assert!(got.insert((name.clone(), *d), e.mig_devices.clone()).is_none(), "GPU {d} twice in {name}");
            }
        }
    }
    assert_eq!(got, want, "the config's counts are the map's layouts");
    (config, std::fs::read_to_string(out.join("node-labels.sh")).unwrap())
}

/// Run `DIR/apply.sh` with a `kubectl` on PATH that logs its arguments and answers every query
/// with nothing; the logged calls, in order.
fn run_apply_with_stub_kubectl(dir: &Path) -> Vec<String> {
    let bin = dir.join("stub-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("kubectl.log");
    let stub = bin.join("kubectl");
    install_script(&format!("#!/bin/sh\necho \"$*\" >> '{}'\n", log.display()), &stub);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let o = std::process::Command::new("sh").arg(dir.join("apply.sh")).env("PATH", path).output().unwrap();
    assert!(o.status.success(), "apply.sh failed: {}{}", stdout(&o), stderr(&o));
    std::fs::read_to_string(&log).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn the_example_plan_on_two_nodes_exports_a_valid_mig_manager_config_and_its_labels() {
    let d = tempfile::tempdir().unwrap();
    let map = d.path().join("map.csv");
    let o = parva(&[
        "plan", "--prof-data", "prof_data/example", "--services", "deployment/example/services.csv", "--gpu-type", "a100-80gb",
        "--gpus-per-node", "4", "--out", s(&map),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let nodes = d.path().join("nodes.csv");
    std::fs::write(&nodes, "node,name\n0,gpu-a.example\n1,gpu-b.example\n").unwrap();
    let (config, labels) = export_and_check(&map, &d.path().join("k8s"), &["--nodes", s(&nodes)]);
    assert_eq!(config.mig_configs.len(), 2);
    let n0 = config.name_of("parva", 0).unwrap().to_string();
    assert!(labels.contains(&format!("kubectl label node gpu-a.example nvidia.com/mig.config={n0} --overwrite\n")), "{labels}");
    assert!(labels.contains(&format!("gpu-b.example nvidia.com/mig.config={}", config.name_of("parva", 1).unwrap())), "{labels}");
    assert!(labels.contains("mixed MIG strategy") && labels.contains("still runs parva pods"), "{labels}");
    // apply.sh runs to its end against a kubectl that finds nothing (a first export: no pods yet),
    // in order: layouts and map, nodes relabelled and waited for, segments, then the router.
    let log = run_apply_with_stub_kubectl(&d.path().join("k8s"));
    let at = |needle: &str| log.iter().position(|l| l.starts_with(needle)).unwrap_or_else(|| panic!("{needle} not in {log:#?}"));
    assert!(at("apply -f namespace.yaml") < at("apply -f mig-config.yaml"));
    assert!(at("apply -f map.yaml") < at("delete deployment -n parva -l parva.io/node=0"));
    assert!(at("label node gpu-a.example nvidia.com/mig.config=") < at("wait node/gpu-a.example"));
    assert!(at("wait node/gpu-b.example") < at("apply -f segments/n0-"));
    assert!(at("rollout status -n parva deployment/parva-n1-") < at("apply -f router.yaml"));
    assert_eq!(log.iter().filter(|l| l.starts_with("apply -f segments/")).count(), std::fs::read_dir(d.path().join("k8s").join("segments")).unwrap().count());
    // A changed map relabels only the nodes whose layout changed; the others keep their label.
    let text = std::fs::read_to_string(&map).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let last = lines.iter().rposition(|l| l.starts_with("1,")).unwrap();
    lines.remove(last);
    let changed = d.path().join("changed.csv");
    std::fs::write(&changed, lines.join("\n") + "\n").unwrap();
    // Issue 33: node 1's layout changes, so its segments all stop while it is relabelled; the
    // services only it serves would be down. At the default floor (all of each service's
    // capacity) that is refused before anything is written, naming the spare node that would
    // make it safe.
    let o = parva(&["export", "k8s", "--map", s(&changed), "--out", s(&d.path().join("refused")), "--nodes", s(&nodes), "--from", s(&map)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("no order of the node changes keeps every service at its floor"), "{}", stderr(&o));
    assert!(stderr(&o).contains("1 spare node(s) of the same GPUs, each holding a copy of the current segments of node(s) 1"), "{}", stderr(&o));
    assert!(!d.path().join("refused").exists());
    // Accepting an outage of what node 1 serves (--min-available 0), the rollout is one wave.
    let (new, labels) =
        export_and_check(&changed, &d.path().join("k8s2"), &["--nodes", s(&nodes), "--from", s(&map), "--min-available", "0"]);
    assert_eq!(new.name_of("parva", 0).unwrap(), n0, "node 0 is unchanged");
    assert_ne!(new.name_of("parva", 1), config.name_of("parva", 1));
    assert!(labels.contains(&format!("# gpu-a.example: layout unchanged (nvidia.com/mig.config={n0})")), "{labels}");
    assert_eq!(labels.matches("kubectl label node").count(), 1, "{labels}");
    assert!(labels.contains("--field-selector spec.nodeName=gpu-b.example"), "{labels}");
    // Only node 1's segments are re-applied (its layout changed: all of them restart); node 0's
    // are left alone; the segment gone from the map is deleted after the router moved on.
    let k2 = d.path().join("k8s2");
    let files: Vec<String> = std::fs::read_dir(k2.join("segments")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    let (old_m, _) = DeploymentMap::read(&map).unwrap();
    let (new_m, _) = DeploymentMap::read(&changed).unwrap();
    let mut want: Vec<String> = new_m.segments.iter().filter(|s| s.node == 1).map(|s| format!("n1-g{}-p{}.yaml", s.gpu, s.placement)).collect();
    let mut got = files.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    let gone: Vec<String> = old_m.segment_ids().iter().filter(|id| !new_m.segment_ids().contains(id)).map(ToString::to_string).collect();
    assert_eq!(gone.len(), 1);
    let apply = std::fs::read_to_string(k2.join("apply.sh")).unwrap();
    assert!(!apply.contains("namespace.yaml") && !apply.contains("parva.io/node=0"), "{apply}");
    let at = |needle: &str| apply.find(needle).unwrap_or_else(|| panic!("{needle} not in {apply}"));
    assert!(at(&format!("parva.io/segment={} --ignore-not-found", gone[0])) < at("kubectl label node gpu-b.example"));
    assert!(at("parva.io/node=1,app.kubernetes.io/component=segment --wait=true") < at("kubectl label node gpu-b.example"));
    assert!(at("kubectl wait node/gpu-b.example") < at("kubectl apply -f waves/0/map.yaml"));
    assert!(at("kubectl apply -f waves/0/map.yaml") < at("kubectl apply -f segments/n1-"));
    assert!(at("kubectl apply -f segments/n1-") < at("kubectl apply -f waves/0/router.yaml"));
    let rollout: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(k2.join("rollout.json")).unwrap()).unwrap();
    assert_eq!(rollout["waves"].as_array().unwrap().len(), 1, "{rollout}");
    assert_eq!(rollout["waves"][0]["nodes"][0], serde_json::json!([1, "relayout"]), "{rollout}");
    assert_eq!(rollout["unchanged"], serde_json::json!([0]), "{rollout}");
    // The wave's map is the new map (the last wave's), so the router ends on it.
    assert_eq!(std::fs::read_to_string(k2.join("waves/0/map.yaml")).unwrap(), std::fs::read_to_string(k2.join("map.yaml")).unwrap());
    // apply.sh runs to its end against a kubectl that finds nothing.
    run_apply_with_stub_kubectl(&k2);
    let router = std::fs::read_to_string(k2.join("router.yaml")).unwrap();
    assert!(router.contains("http://parva-{segment}.parva.svc:8000"), "{router}");
    // The first export's router rolls to the new map (its digest annotation changed).
    let digest = |t: &str| t.lines().find(|l| l.contains("parva.io/map-digest")).unwrap().to_string();
    assert_ne!(digest(&router), digest(&std::fs::read_to_string(d.path().join("k8s").join("router.yaml")).unwrap()));
    // Issue 33: objects that run as exported. Each segment pod mounts a memory-backed /dev/shm
    // sized for its workers' slabs (and counted in its memory); each service has a
    // PodDisruptionBudget; the ServiceMonitor and the ClusterPolicy patch are written.
    let seg_yaml = std::fs::read_to_string(k2.join("segments").join(&files[0])).unwrap();
    assert!(seg_yaml.contains("mountPath: /dev/shm") && seg_yaml.contains("medium: Memory"), "{seg_yaml}");
    let pdb = std::fs::read_to_string(k2.join("pdb.yaml")).unwrap();
    let services: std::collections::BTreeSet<&str> = new_m.segments.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(pdb.matches("kind: PodDisruptionBudget").count(), services.len(), "{pdb}");
    assert!(pdb.contains("maxUnavailable: 1") && pdb.contains("parva.io/service: "), "{pdb}");
    assert!(std::fs::read_to_string(k2.join("monitoring/servicemonitor.yaml")).unwrap().contains("kind: ServiceMonitor"));
    let patch = std::fs::read_to_string(k2.join("cluster-policy-patch.yaml")).unwrap();
    assert!(patch.contains("strategy: mixed") && patch.contains("name: parva-mig-config"), "{patch}");
    // --image-pull-secret reaches every pod; --models-pvc mounts the model set read-only where
    // the segments read it (the objects still validate).
    let (_, _) = export_and_check(&map, &d.path().join("k8s3"), &["--nodes", s(&nodes), "--image-pull-secret", "registry-creds", "--models-pvc", "parva-models"]);
    let router3 = std::fs::read_to_string(d.path().join("k8s3").join("router.yaml")).unwrap();
    assert!(router3.contains("imagePullSecrets:\n") && router3.contains("name: registry-creds"), "{router3}");
    let segs3: Vec<String> = std::fs::read_dir(d.path().join("k8s3/segments")).unwrap().map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap()).collect();
    assert!(segs3.iter().all(|y| y.contains("claimName: parva-models") && y.contains("mountPath: /opt/parva/models")), "{}", segs3[0]);
    let (_, _) = export_and_check(&map, &d.path().join("k8s4"), &["--nodes", s(&nodes), "--models-host-path", "/srv/parva/models"]);
    let seg4 = std::fs::read_dir(d.path().join("k8s4/segments")).unwrap().next().unwrap().unwrap().path();
    assert!(std::fs::read_to_string(seg4).unwrap().contains("path: /srv/parva/models"));
    // Bad object names are refused before anything is written.
    for (flag, value) in [("--namespace", "Bad_NS!"), ("--serving-namespace", "Bad_NS!"), ("--image-pull-secret", "Bad Secret")] {
        let o = parva(&["export", "k8s", "--map", s(&map), "--out", s(&d.path().join("bad")), flag, value]);
        assert_eq!(o.status.code(), Some(1), "{flag}: {}", stderr(&o));
        assert!(stderr(&o).contains(flag) && stderr(&o).contains("Bad"), "{flag}: {}", stderr(&o));
        assert!(!d.path().join("bad").exists(), "{flag}");
    }
    // A map whose segments are the same and whose figures differ (a rate): no wave; apply.sh
    // still rolls the router to the new map.
    let text = std::fs::read_to_string(&map).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let rate_col = header.iter().position(|h| *h == "rate").unwrap();
    let bumped: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                return l.to_string();
            }
            let mut f: Vec<String> = l.split(',').map(str::to_string).collect();
            f[rate_col] = format!("{}", f[rate_col].parse::<f64>().unwrap() * 0.9);
            f.join(",")
        })
        .collect();
    let rates_only = d.path().join("rates-only.csv");
    std::fs::write(&rates_only, bumped.join("\n") + "\n").unwrap();
    export_and_check(&rates_only, &d.path().join("k8s4"), &["--nodes", s(&nodes), "--from", s(&map)]);
    let apply4 = std::fs::read_to_string(d.path().join("k8s4").join("apply.sh")).unwrap();
    assert!(apply4.contains("kubectl apply -f map.yaml") && apply4.contains("kubectl apply -f router.yaml"), "{apply4}");
    assert!(!apply4.contains("waves/"), "{apply4}");
    // A node the map has and --nodes does not name is refused, and nothing is written.
    std::fs::write(&nodes, "node,name\n0,gpu-a\n").unwrap();
    let o = parva(&["export", "k8s", "--map", s(&map), "--out", s(&d.path().join("none")), "--nodes", s(&nodes)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("map node 1 has no name in --nodes"), "{}", stderr(&o));
    assert!(!d.path().join("none").exists());
}

#[test]
fn a_thousand_service_fleet_exports_a_valid_config_for_every_node() {
    let Some(reference) = crate::util::reference_dir() else { return };
    let d = tempfile::tempdir().unwrap();
    let services = d.path().join("fleet.csv");
    let o = std::process::Command::new("python3")
        .args(["scripts/gen_fleet.py", s(&reference.join("prof_data")), "1000", "1"])
        .current_dir(crate::util::repo())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(&services, &o.stdout).unwrap();
    let map = d.path().join("fleet.map.csv");
    let o = parva(&["plan", "--prof-data", s(&reference.join("prof_data")), "--services", s(&services), "--gpu-type", "a100-80gb", "--out", s(&map)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (config, labels) = export_and_check(&map, &d.path().join("k8s"), &[]);
    let (m, _) = DeploymentMap::read(&map).unwrap();
    let nodes: std::collections::BTreeSet<u32> = m.segments.iter().map(|s| s.node).collect();
    assert_eq!(config.mig_configs.len(), nodes.len());
    assert_eq!(labels.matches("kubectl label node").count(), nodes.len());
}
