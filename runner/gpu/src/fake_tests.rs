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
    for ty in catalogue() {
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
        assert_eq!(g[0].gpu_type().unwrap().id, ty.id);
    }
    a.create_instance(2, 5, 0).unwrap();
    let mut b = FakeGpus::with_state_file("ignored:1", &path).unwrap();
    assert_eq!(b.layout(2), vec![(5, 0)]);
    assert_eq!(b.instances(2).unwrap()[0].uuid, a.instances(2).unwrap()[0].uuid);
    std::fs::write(&path, "{").unwrap();
    let e = FakeGpus::with_state_file("a100-80gb:1", &path).unwrap_err().to_string();
    assert!(e.contains("fake.json"), "{e}");
    assert!(FakeState::from_spec("v100:2").unwrap_err().to_string().contains("v100"));
    assert!(FakeState::from_spec("a100-80gb:x").is_err());
}
