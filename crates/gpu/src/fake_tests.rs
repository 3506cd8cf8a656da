//! The fake against the catalogue's MIG rules, mig-parted style: every valid layout of every GPU
//! type can be built (in any order) and nothing else can.

use super::*;
use parva_core::mig::catalogue;

fn one_gpu(ty: &GpuType) -> FakeGpus {
    FakeGpus::from_spec(&format!("{}:1", ty.id)).unwrap()
}

/// On `fake` (GPU 0 holding `layout`), every profile of `ty` at every legal start is accepted
/// exactly when the catalogue says it is free.
fn assert_acceptance_matches_catalogue(fake: &mut FakeGpus, ty: &GpuType, layout: &[Placement]) {
    for profile in ty.profiles {
        let free = ty.free_starts(layout, profile);
        for &start in profile.starts {
            let got = fake.create_instance(0, profile.id, start);
            match got {
                Ok(inst) => {
                    assert!(free.contains(&start), "{}: {} at {start} accepted beside {layout:?}", ty.id, profile.name);
                    fake.destroy_instance(0, inst.gi_id).unwrap();
                }
                Err(e) => {
                    assert!(!free.contains(&start), "{}: {} at {start} refused beside {layout:?}: {e}", ty.id, profile.name);
                    assert!(matches!(e, MigError::Placement { .. }), "{e}");
                }
            }
        }
    }
}

#[test]
fn fake_builds_every_maximal_layout_of_every_gpu_type_in_both_orders() {
    for ty in catalogue().into_iter().filter(|t| !t.is_mps()) {
        let mut fake = one_gpu(ty);
        assert_acceptance_matches_catalogue(&mut fake, ty, &[]);
        let layouts = ty.maximal_layouts();
        assert!(!layouts.is_empty(), "{}", ty.id);
        for layout in &layouts {
            for reverse in [false, true] {
                let mut order = layout.clone();
                if reverse {
                    order.reverse();
                }
                let mut ids = Vec::new();
                for (i, p) in order.iter().enumerate() {
                    let inst = fake
                        .create_instance(0, p.profile.id, p.start)
                        .unwrap_or_else(|e| panic!("{}: {layout:?}: {e}", ty.id));
                    assert_eq!((inst.start, inst.size), (p.start, p.profile.mem_slices));
                    assert!(inst.uuid.as_deref().is_some_and(|u| u.starts_with("MIG-")));
                    ids.push(inst.gi_id);
                    // Every prefix of a maximal layout is a valid layout: check it exhaustively.
                    if !reverse {
                        assert_acceptance_matches_catalogue(&mut fake, ty, &order[..=i]);
                    }
                }
                let mut want: Vec<(u32, u8)> = layout.iter().map(|p| (p.profile.id, p.start)).collect();
                want.sort_unstable();
                assert_eq!(fake.layout(0), want, "{}", ty.id);
                for id in ids {
                    fake.destroy_instance(0, id).unwrap();
                }
                assert!(fake.layout(0).is_empty());
            }
        }
    }
}

#[test]
fn fake_refuses_illegal_start_overlap_unknown_profile_and_mig_off_naming_the_gpu() {
    let ty = GpuType::by_id("a100-80gb").unwrap();
    let mut fake = one_gpu(ty);
    let e = fake.create_instance(0, 9, 2).unwrap_err().to_string();
    assert!(e.contains("GPU 0 (GPU-") && e.contains("3g.40gb") && e.contains("{2}:4") && e.contains("[0, 4]"), "{e}");
    fake.create_instance(0, 14, 0).unwrap();
    let e = fake.create_instance(0, 19, 1).unwrap_err().to_string();
    assert!(e.contains("1g.10gb") && e.contains("overlaps") && e.contains("2g.20gb"), "{e}");
    let e = fake.create_instance(0, 77, 0).unwrap_err().to_string();
    assert!(e.contains("profile id 77") && e.contains("a100-80gb"), "{e}");
    assert!(matches!(fake.destroy_instance(0, 42), Err(MigError::NoSuchInstance { gi_id: 42, .. })));
    assert!(matches!(fake.instances(3), Err(MigError::NoSuchGpu { gpu: 3, count: 1 })));
    fake.state_mut().gpus[0].mig = MigMode::DISABLED;
    assert!(matches!(fake.create_instance(0, 19, 6), Err(MigError::MigDisabled { gpu: 0, .. })));
    fake.state_mut().privileged = false;
    assert!(matches!(fake.check_privileges(), Err(MigError::NoPrivilege { .. })));
}

#[test]
fn fake_refuses_destroying_an_instance_in_use() {
    let mut fake = FakeGpus::from_spec("h100-80gb:2").unwrap();
    let inst = fake.create_instance(1, 9, 4).unwrap();
    fake.add_process(1, Some(inst.gi_id), 4242);
    let e = fake.destroy_instance(1, inst.gi_id).unwrap_err();
    assert!(matches!(&e, MigError::InUse { pids, .. } if pids == &[4242]), "{e}");
    let text = e.to_string();
    assert!(text.contains("GPU 1") && text.contains("3g.40gb") && text.contains("{4}") && text.contains("4242"), "{text}");
    assert_eq!(fake.layout(1), vec![(9, 4)]);
    fake.state_mut().gpus[1].processes.clear();
    fake.destroy_instance(1, inst.gi_id).unwrap();
}

#[test]
fn fake_records_every_call_and_fails_the_chosen_one() {
    let mut fake = FakeGpus::from_spec("a100-80gb:1").unwrap();
    fake.set_fault(Some("create_instance#2".parse().unwrap()));
    fake.gpus().unwrap();
    fake.create_instance(0, 19, 0).unwrap();
    let e = fake.create_instance(0, 19, 1).unwrap_err();
    assert_eq!(e, MigError::Injected { n: 3, call: "create_instance gpu=0 profile=19 start=1".into() });
    assert_eq!(fake.layout(0), vec![(19, 0)], "a failed call changes nothing");
    fake.create_instance(0, 19, 1).unwrap();
    assert_eq!(fake.calls().len(), 4);
    assert_eq!(fake.calls()[0], "gpus");
}

#[test]
fn fake_state_file_persists_between_instances_and_names_map_to_types() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("fake.json");
    let mut a = FakeGpus::with_state_file("a100-80gb:1,h100-94gb:1,a30-24gb:1", &path).unwrap();
    assert!(!path.exists(), "nothing written before the first change");
    let gpus = a.gpus().unwrap();
    let types: Vec<&str> = gpus.iter().map(|g| g.gpu_type().unwrap().id).collect();
    assert_eq!(types, ["a100-80gb", "h100-94gb", "a30-24gb"]);
    for ty in catalogue() {
        let g = FakeGpus::from_spec(ty.id).unwrap().gpus().unwrap();
        // A MIG GPU used without MIG is its MIG hardware with MIG mode off.
        assert_eq!(g[0].gpu_type().unwrap().id, ty.id.strip_suffix("-nomig").unwrap_or(ty.id));
    }
    a.create_instance(2, 5, 0).unwrap();
    let mut b = FakeGpus::with_state_file("ignored:1", &path).unwrap();
    assert_eq!(b.layout(2), vec![(5, 0)]);
    assert_eq!(b.instances(2).unwrap()[0].uuid, a.instances(2).unwrap()[0].uuid);
    std::fs::write(&path, "{").unwrap();
    let e = FakeGpus::with_state_file("a100-80gb:1", &path).unwrap_err().to_string();
    assert!(e.contains("fake.json"), "{e}");
    assert!(FakeState::from_spec("v100:2").unwrap_err().to_string().contains("v100"));
    let e = FakeState::from_spec("a100-80gb:x").unwrap_err();
    assert_eq!((e.spec.as_str(), e.reason.as_str()), ("a100-80gb:x", "count `x` is not a whole number of GPUs (TYPE:COUNT, e.g. a100-80gb:8)"), "{e}");
    // Regression (issue 34): a count of 0 or one too large to parse was a bare "bad spec" / "not a number".
    for (spec, want) in [("a100-80gb:0", "0 GPUs of a100-80gb: a fake node has 1 to 64"), ("a100-80gb:99999999999", "99999999999 GPUs of a100-80gb")] {
        let e = FakeState::from_spec(spec).unwrap_err();
        assert!(e.reason.starts_with(want), "{spec}: {e}");
    }
}

/// Issue 17: an MPS type's fake GPU has no MIG (V100, T4, L4, ...: unsupported; a `-nomig`
/// type: its MIG hardware with MIG mode off, named and identified as the MIG type), and refuses
/// MIG instances as NVML would.
#[test]
fn fake_gpus_of_mps_types_have_no_mig_and_refuse_instances() {
    let mut l4 = FakeGpus::from_spec("l4-24gb:2").unwrap();
    let gpus = l4.gpus().unwrap();
    assert_eq!(gpus.len(), 2);
    assert_eq!((gpus[0].name.as_str(), gpus[0].mig), ("NVIDIA L4", MigMode::UNSUPPORTED));
    assert_eq!(gpus[0].identify().unwrap().id, "l4-24gb");
    assert!(l4.create_instance(0, 1050, 0).is_err());
    let mut h = FakeGpus::from_spec("h100-80gb-nomig:1").unwrap();
    let g = h.gpus().unwrap().remove(0);
    assert_eq!((g.identify().unwrap().id, g.mig), ("h100-80gb", MigMode::DISABLED));
    assert!(h.create_instance(0, 19, 0).is_err(), "MIG mode is off");
}

// ---- Identification and media-extension instances ---------------------------------------------

#[test]
fn every_fake_gpu_type_reports_its_pci_id_and_exact_name_and_is_identified_by_them() {
    for ty in catalogue().into_iter().filter(|t| !t.products.is_empty()) {
        let info = FakeGpus::from_spec(ty.id).unwrap().gpus().unwrap().remove(0);
        let product = ty.products[0];
        assert_eq!((info.name.as_str(), info.pci_device_id), (product.name, Some(product.pci_device_id)), "{}", ty.id);
        assert_eq!(info.identify().unwrap().id, ty.id);
        // By the id alone (a name parva does not list) and by the name alone (no id).
        let by_id = GpuInfo { name: "NVIDIA Some Future Board".into(), ..info.clone() };
        assert_eq!(by_id.identify().unwrap().id, ty.id);
        let by_name = GpuInfo { pci_device_id: None, ..info.clone() };
        assert_eq!(by_name.identify().unwrap().id, ty.id);
    }
}

#[test]
fn fake_state_files_without_product_fields_stay_readable_and_report_the_types_product() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("fake-gpus.json");
    // A state file as written before fake GPUs carried a product name and PCI device id.
    let old = r#"{"gpus": [{"gpu_type": "h100-80gb", "uuid": "GPU-1", "mig": {"supported": true, "current": true, "pending": true},
        "instances": [], "processes": []}], "serial": 0, "privileged": true}"#;
    std::fs::write(&path, old).unwrap();
    let mut fake = FakeGpus::with_state_file("a100-80gb:1", &path).unwrap();
    let info = fake.gpus().unwrap().remove(0);
    assert_eq!((info.name.as_str(), info.pci_device_id), ("NVIDIA H100 80GB HBM3", Some(0x2330_10DE)));
    assert_eq!(info.identify().unwrap().id, "h100-80gb");
    // New files carry them, and read back the same.
    fake.create_instance(0, 19, 0).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("product_name"), "only written when set: {text}");
    let fresh = FakeState::from_spec("a30-24gb:1").unwrap();
    let json = serde_json::to_string(&fresh).unwrap();
    assert!(json.contains(r#""product_name":"NVIDIA A30""#) && json.contains(&format!(r#""pci_device_id":{}"#, 0x20B7_10DEu32)), "{json}");
    assert_eq!(serde_json::from_str::<FakeState>(&json).unwrap(), fresh);
}

#[test]
fn a_fake_gh200_is_its_own_type_never_an_h200_and_an_unknown_gpu_is_refused_by_name_and_pci_id() {
    let mut fake = FakeGpus::from_spec("h200-141gb:3").unwrap();
    fake.state_mut().gpus[1].product_name = Some("NVIDIA GH200 480GB".into());
    fake.state_mut().gpus[1].pci_device_id = Some(0x2342_10DE);
    fake.state_mut().gpus[2].product_name = Some("NVIDIA H100".into());
    fake.state_mut().gpus[2].pci_device_id = Some(0x2339_10DE);
    let gpus = fake.gpus().unwrap();
    assert_eq!(gpus[0].identify().unwrap().id, "h200-141gb");
    // Before: `NVIDIA GH200 480GB`.contains("H200") made it an H200. Since issue 40 it is the
    // GH200 96GB of NVIDIA's configs.
    assert_eq!(gpus[1].identify().unwrap().id, "gh200-96gb");
    let e = gpus[2].identify().unwrap_err().to_string();
    assert!(e.contains("`NVIDIA H100`") && e.contains("0x233910DE") && e.contains("h200-141gb (NVIDIA H200 0x233510DE"), "{e}");
    assert_eq!(gpus[2].gpu_type(), None);
    assert_eq!(gpus[2].product(), "NVIDIA H100 (PCI device id 0x233910DE)");
    // `parva deploy` of an H200 map onto either is refused before anything changes.
    let dir = tempfile::tempdir().unwrap();
    for gpu in [1, 2] {
        let map_text = format!(
            "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n0,{gpu},a,resnet50,0,7,8,1,,h200-141gb,,,\n"
        );
        let map = parva_core::DeploymentMap::read_from(map_text.as_bytes(), std::path::Path::new("m.csv")).unwrap().0;
        let mut mps = crate::mps::FakeMps::default();
        let mut node = crate::exec::Node { mig: &mut fake, mps: &mut mps, run_dir: dir.path().to_path_buf() };
        let e = node.deploy(&map, &crate::plan::DeployOptions::default(), false).unwrap_err();
        assert!(matches!(&e, crate::error::DeployError::TypeMismatch { gpu: g, want, .. } if *g == gpu && want == "h200-141gb"), "{e}");
    }
    assert_eq!(fake.layouts(), vec![vec![], vec![], vec![]], "nothing changed");
}

#[test]
fn a_media_extension_instance_made_by_someone_else_is_named_and_its_slices_counted_as_taken() {
    let ty = GpuType::by_id("a100-80gb").unwrap();
    let mut fake = one_gpu(ty);
    // Someone else (nvidia-smi mig -cgi 20) made a 1g.10gb+me at {6}.
    let me = fake.create_instance(0, 20, 6).unwrap();
    assert_eq!((me.profile_id, me.start, me.size), (20, 6, 1));
    let layout = [Placement { profile: ty.profile_by_id(20).unwrap(), start: 6 }];
    assert_acceptance_matches_catalogue(&mut fake, ty, &layout);
    let e = fake.create_instance(0, 19, 6).unwrap_err().to_string();
    assert!(e.contains("overlaps 1g.10gb+me@{6}:1"), "{e}");
    let e = fake.create_instance(0, 20, 0).unwrap_err().to_string();
    assert!(e.contains("media extensions") && e.contains("1g.10gb+me@{6}:1"), "{e}");
    // Beside it: a 4g, a 2g and... only the 1g slots that are left (7 GPCs, 7 instances at most).
    for (profile, start) in [(5, 0), (14, 4)] {
        fake.create_instance(0, profile, start).unwrap();
    }
    assert!(matches!(fake.create_instance(0, 15, 6), Err(MigError::Placement { .. })));
    // In use: the refusal names it.
    fake.add_process(0, Some(me.gi_id), 77);
    let e = fake.destroy_instance(0, me.gi_id).unwrap_err().to_string();
    assert!(e.contains("1g.10gb+me at placement {6}") && e.contains("77"), "{e}");
    // Deploy with --keep-unchanged leaves it alone and says so by name; without, it is destroyed
    // (once free) and the plan's instances are built around what the map asks.
    fake.state_mut().gpus[0].processes.clear();
    let map_text = "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n\
                    0,0,a,resnet50,0,4,8,1,,a100-80gb,,,\n";
    let map = parva_core::DeploymentMap::read_from(map_text.as_bytes(), std::path::Path::new("m.csv")).unwrap().0;
    let dir = tempfile::tempdir().unwrap();
    let mut mps = crate::mps::FakeMps::default();
    let opts = crate::plan::DeployOptions { keep_unchanged: true, ..Default::default() };
    let mut node = crate::exec::Node { mig: &mut fake, mps: &mut mps, run_dir: dir.path().to_path_buf() };
    let out = node.deploy(&map, &opts, true).unwrap();
    assert!(out.plan.untouched.iter().any(|u| u == "GPU 0: 1g.10gb+me at {6}"), "{:?}", out.plan.untouched);
}

// ---- MIG geometry as NVML reports it (issue 20) ---------------------------------------------

/// A B200-like GPU that no catalogue entry has (see the file's comment).
const B200_TEST: &str = include_str!("../../../tests/fixtures/catalogue/b200-test.toml");

#[test]
fn fake_reports_each_catalogue_types_geometry_as_nvml_does_and_it_reads_back_the_same() {
    for ty in catalogue().into_iter().filter(|t| !t.is_mps()) {
        let mut fake = one_gpu(ty);
        // NVML answers with MIG mode off too.
        fake.state_mut().gpus[0].mig = MigMode::DISABLED;
        let read = crate::nvml::read_gpu_type(&mut fake, 0, Some(ty.id)).unwrap();
        assert!(read.same_mig_geometry(ty), "{}: {read:?}", ty.id);
        assert_eq!((read.id, read.products), (ty.id, &ty.products[..1]));
        assert_eq!(read.placements_source, parva_core::mig::PlacementSource::Nvml);
        assert!(read.origin.starts_with("nvml:GPU 0 ("), "{}", read.origin);
        // Without --id: named after the product.
        let named = crate::nvml::read_gpu_type(&mut fake, 0, None).unwrap();
        assert_eq!(named.id, parva_core::catalogue::id_from_product(ty.products[0].name));
        assert!(fake.calls().iter().any(|c| c == "profile_geometry gpu=0"));
    }
    let mut fake = one_gpu(GpuType::by_id("a100-80gb").unwrap());
    let e = crate::nvml::read_gpu_type(&mut fake, 3, None).unwrap_err();
    assert!(matches!(e, crate::nvml::ReadGeometryError::Mig(MigError::NoSuchGpu { gpu: 3, count: 1 })), "{e}");
}

#[test]
fn a_fake_gpu_of_an_unknown_type_keeps_its_own_geometry_through_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let hw = dir.path().join("b200-test.toml");
    std::fs::write(&hw, B200_TEST).unwrap();
    let state = dir.path().join("fake-gpus.json");
    let mut fake = FakeGpus::with_state_file(&format!("{}:2", hw.display()), &state).unwrap();
    let gpus = fake.gpus().unwrap();
    assert_eq!(gpus.len(), 2);
    assert_eq!((gpus[0].name.as_str(), gpus[0].pci_device_id), ("NVIDIA B200 (TEST)", Some(0xFFF0_10DE)));
    // parva does not know it ...
    assert!(matches!(gpus[0].identify(), Err(parva_core::mig::UnknownGpu::Unknown { .. })));
    assert_eq!(GpuType::by_id("b200-test").unwrap_err().id, "b200-test");
    // ... but the fake enforces its geometry: 1g.45gb (id 15) only at even starts.
    let e = fake.create_instance(0, 15, 1).unwrap_err();
    assert!(matches!(e, MigError::Placement { .. }) && e.to_string().contains("1g.45gb"), "{e}");
    let inst = fake.create_instance(0, 15, 2).unwrap();
    assert_eq!((inst.start, inst.size), (2, 2));
    // Its geometry read as NVML reports it is the file's.
    let read = crate::nvml::read_gpu_type(&mut fake, 1, None).unwrap();
    let want = parva_core::catalogue::parse(B200_TEST, "want").unwrap()[0];
    assert_eq!(read.id, "b200-test");
    assert!(read.same_mig_geometry(want), "{read:?}");
    // A second process reads the state file: same hardware, same instance.
    let mut again = FakeGpus::with_state_file("a100-80gb:1", &state).unwrap();
    assert_eq!(again.layout(0), vec![(15, 2)]);
    assert!(matches!(again.create_instance(0, 15, 3), Err(MigError::Placement { .. })));
    // A spec naming a missing or bad file is refused, naming it.
    let e = FakeState::from_spec(&format!("{}:1", dir.path().join("none.toml").display())).unwrap_err();
    assert!(e.to_string().contains("none.toml") && e.to_string().contains("cannot read"), "{e}");
}
