use super::*;

fn place(gpu: &GpuType, name: &str, start: u8) -> Placement {
    Placement { profile: gpu.profile_by_name(name).unwrap(), start }
}

#[test]
fn every_gpu_type_has_consistent_profiles() {
    for gpu in catalogue() {
        for p in gpu.profiles {
            assert!(p.gpcs <= gpu.gpcs, "{} {}", gpu.id, p.name);
            for &s in p.starts {
                assert!(s + p.mem_slices <= gpu.mem_slices, "{} {} start {s}", gpu.id, p.name);
            }
            if gpu.is_mps() {
                assert_eq!(p.name, format!("mps-{}", gpu.share_percent(p.gpcs)), "{}", gpu.id);
                continue;
            }
            assert!(p.name.starts_with(&format!("{}g.", p.gpcs)), "{} {}", gpu.id, p.name);
            let base = variant_base(p.name);
            assert_eq!(p.variant, base != p.name, "{} {}", gpu.id, p.name);
            assert_eq!(p.media_extensions, p.name.ends_with("+me") || p.name.ends_with("+me.all"), "{} {}", gpu.id, p.name);
            assert!(base.ends_with(&format!(".{}gb", p.mem_gb)), "{} {}", gpu.id, p.name);
        }
        // Every single profile at every legal start is a valid layout on its own.
        for p in gpu.profiles {
            for &s in p.starts {
                gpu.validate(&[Placement { profile: p, start: s }]).unwrap();
            }
        }
    }
}

#[test]
fn sizes_per_gpu_type() {
    assert_eq!(GpuType::by_id("a100-80gb").unwrap().sizes(), vec![1, 2, 3, 4, 7]);
    assert_eq!(GpuType::by_id("A30-24GB").unwrap().sizes(), vec![1, 2, 4]);
    assert_eq!(GpuType::by_id("h200-141gb").unwrap().profile_for_size(1).unwrap().name, "1g.18gb");
    let err = GpuType::by_id("v100").unwrap_err();
    assert!(err.to_string().contains("a100-80gb"), "{err}");
}

#[test]
fn validator_rejects_each_rule_on_every_gpu_type() {
    for gpu in catalogue().into_iter().filter(|g| !g.is_mps()) {
        let big = gpu.profile_for_size(gpu.gpcs).unwrap();
        let one = gpu.profile_for_size(1).unwrap();
        // Illegal start.
        let bad_start = (0..gpu.mem_slices).find(|s| !big.starts.contains(s)).unwrap();
        assert!(matches!(
            gpu.validate(&[Placement { profile: big, start: bad_start }]),
            Err(LayoutError::IllegalStart { .. })
        ), "{}", gpu.id);
        // Overlap: the whole-GPU profile and a 1g at 0.
        assert!(matches!(
            gpu.validate(&[Placement { profile: big, start: 0 }, Placement { profile: one, start: 0 }]),
            Err(LayoutError::Overlap { .. })
        ), "{}", gpu.id);
        // Too many instances: one more 1g than allowed is rejected (for overlap or count).
        let all_ones: Vec<Placement> = one.starts.iter().map(|&s| Placement { profile: one, start: s }).collect();
        gpu.validate(&all_ones).unwrap();
        let mut more = all_ones.clone();
        more.push(all_ones[0]);
        // Refused for the count first (the duplicate also overlaps).
        assert!(matches!(gpu.validate(&more), Err(LayoutError::TooManyInstances { .. })), "{}", gpu.id);
    }
}

#[test]
fn a100_layouts_known_cases() {
    let gpu = GpuType::by_id("a100-80gb").unwrap();
    // 4g + 3g fills the GPU.
    gpu.validate(&[place(gpu, "4g.40gb", 0), place(gpu, "3g.40gb", 4)]).unwrap();
    // 3g + 3g is legal (6 GPCs) but nothing else fits beside it.
    gpu.validate(&[place(gpu, "3g.40gb", 0), place(gpu, "3g.40gb", 4)]).unwrap();
    assert!(gpu.free_starts(&[place(gpu, "3g.40gb", 0), place(gpu, "3g.40gb", 4)], gpu.profile_for_size(1).unwrap()).is_empty());
    // 2g at 0 and a 1g at 1 overlap (ParvaGPU emitted such maps).
    assert!(matches!(
        gpu.validate(&[place(gpu, "2g.20gb", 0), place(gpu, "1g.10gb", 1)]),
        Err(LayoutError::Overlap { .. })
    ));
    // 3g at 4 covers memory slice 6.
    assert!(matches!(gpu.validate(&[place(gpu, "3g.40gb", 4), place(gpu, "1g.10gb", 6)]), Err(LayoutError::Overlap { .. })));
    // Seven 1g instances plus a 1g.20gb would exceed 7 GPCs.
    let mut l: Vec<Placement> = (0..6).map(|s| place(gpu, "1g.10gb", s)).collect();
    l.push(place(gpu, "1g.20gb", 6));
    gpu.validate(&l).unwrap();
    l[0] = place(gpu, "2g.20gb", 0);
    assert!(matches!(gpu.validate(&l), Err(LayoutError::Overlap { .. })));
}

#[test]
fn a30_layouts() {
    let gpu = GpuType::by_id("a30-24gb").unwrap();
    gpu.validate(&[place(gpu, "2g.12gb", 0), place(gpu, "1g.6gb", 2), place(gpu, "1g.6gb", 3)]).unwrap();
    assert!(matches!(
        gpu.validate(&[place(gpu, "2g.12gb", 1)]),
        Err(LayoutError::IllegalStart { .. })
    ));
    assert!(matches!(gpu.validate(&[place(gpu, "4g.24gb", 0), place(gpu, "1g.6gb", 3)]), Err(LayoutError::Overlap { .. })));
}

#[test]
fn maximal_layouts_are_valid_and_maximal() {
    for gpu in catalogue() {
        let layouts = gpu.maximal_layouts();
        assert!(!layouts.is_empty());
        for l in &layouts {
            gpu.validate(l).unwrap();
            for &s in &gpu.sizes() {
                assert!(gpu.free_starts(l, gpu.profile_for_size(s).unwrap()).is_empty(), "{} {:?}", gpu.id, l);
            }
        }
        // No duplicates.
        let mut keys: Vec<Vec<(u8, u8)>> = layouts
            .iter()
            .map(|l| {
                let mut k: Vec<(u8, u8)> = l.iter().map(|p| (p.profile.gpcs, p.start)).collect();
                k.sort();
                k
            })
            .collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n, "{}", gpu.id);
    }
    // A100: the whole-GPU layout and seven 1g instances are among them.
    let a100 = GpuType::by_id("a100-80gb").unwrap();
    let layouts = a100.maximal_layouts();
    assert!(layouts.iter().any(|l| l.len() == 1 && l[0].profile.gpcs == 7));
    assert!(layouts.iter().any(|l| l.len() == 7));
}

// ---- Recognising GPUs -------------------------------------------------------------------

#[test]
fn every_catalogue_product_is_identified_by_pci_id_and_by_exact_name_and_by_both() {
    let mut ids = std::collections::BTreeMap::new();
    for gpu in catalogue() {
        assert!(!gpu.products.is_empty() || gpu.id.ends_with("-nomig"), "{}", gpu.id);
        for p in gpu.products {
            assert_eq!(p.pci_device_id & 0xFFFF, 0x10DE, "{} {}: vendor must be NVIDIA", gpu.id, p.name);
            assert_eq!(GpuType::by_pci_device_id(p.pci_device_id).unwrap().id, gpu.id, "{}", p.name);
            assert_eq!(GpuType::by_product_name(p.name).unwrap().id, gpu.id, "{}", p.name);
            assert_eq!(GpuType::identify(p.name, Some(p.pci_device_id)).unwrap().id, gpu.id);
            assert_eq!(GpuType::identify(p.name, None).unwrap().id, gpu.id, "name alone: {}", p.name);
            assert_eq!(GpuType::identify("", Some(p.pci_device_id)).unwrap().id, gpu.id, "id alone: {}", p.name);
            // Older drivers leave the `NVIDIA ` prefix out.
            let bare = p.name.strip_prefix("NVIDIA ").unwrap_or(p.name);
            assert_eq!(GpuType::identify(&format!(" {bare} "), None).unwrap().id, gpu.id);
            // One id, one type.
            if let Some(other) = ids.insert(p.pci_device_id, gpu.id) {
                assert_eq!(other, gpu.id, "{:#x} in two types", p.pci_device_id);
            }
        }
    }
    // The ids mig-parted's default config lists for the families parva supports.
    for (id, ty) in [
        (0x20B0_10DE, "a100-40gb"), (0x20B1_10DE, "a100-40gb"), (0x20F1_10DE, "a100-40gb"), (0x20F6_10DE, "a800-40gb"),
        (0x20B2_10DE, "a100-80gb"), (0x20B5_10DE, "a100-80gb"), (0x20F3_10DE, "a800-80gb"), (0x20F5_10DE, "a800-80gb"),
        (0x2330_10DE, "h100-80gb"), (0x2331_10DE, "h100-pcie-80gb"), (0x2322_10DE, "h800-pcie-80gb"), (0x2324_10DE, "h800-80gb"),
        (0x2321_10DE, "h100-94gb"), (0x2335_10DE, "h200-141gb"), (0x20B7_10DE, "a30-24gb"),
        (0x2901_10DE, "b200-180gb"), (0x2348_10DE, "gh200-144gb"),
    ] {
        assert_eq!(GpuType::by_pci_device_id(id).map(|t| t.id), Some(ty), "{id:#x}");
    }
}

#[test]
fn gh200_is_never_taken_for_an_h200() {
    // Before: `NVIDIA GH200 480GB`.contains("H200") made it an h200-141gb (wrong memory sizes).
    // Since issue 40 it is its own type, the GH200 96GB of NVIDIA's configs.
    for (name, id) in [("NVIDIA GH200 480GB", Some(0x2342_10DE)), ("NVIDIA GH200 120GB", Some(0x2342_10DE)), ("NVIDIA GH200 480GB", None)] {
        let t = GpuType::identify(name, id).unwrap();
        assert_eq!((t.id, t.profile_for_size(1).unwrap().name, t.profile_for_size(1).unwrap().mem_mib), ("gh200-96gb", "1g.12gb", 11264), "{name}");
    }
    assert_eq!(GpuType::by_product_name("NVIDIA GH200 120GB"), None, "never by substring");
    // The GH200 144G HBM3e is its own type (issue 20), with its own memory sizes.
    let gh = GpuType::identify("NVIDIA GH200 144G HBM3e", Some(0x2348_10DE)).unwrap();
    assert_eq!((gh.id, gh.profile_for_size(1).unwrap().name, gh.profile_for_size(7).unwrap().name), ("gh200-144gb", "1g.18gb", "7g.144gb"));
    assert_eq!(GpuType::identify("NVIDIA GH200 144G HBM3e", None).unwrap().id, "gh200-144gb");
}

#[test]
fn product_names_are_matched_exactly_never_by_substring() {
    for name in [
        "NVIDIA H100",                  // 0x2339, geometry unknown
        "NVIDIA H100 80GB HBM3 (FAKE)", // a longer name containing a known one
        "H100 PCIe 80GB",
        "NVIDIA H200 NV",
        "NVIDIA H2",
        "NVIDIA A100",
        "NVIDIA A100-SXM4-80GBX",
        "NVIDIA A30X",
        "",
    ] {
        assert_eq!(GpuType::by_product_name(name), None, "{name}");
        assert!(matches!(GpuType::identify(name, None), Err(UnknownGpu::Unknown { .. })), "{name}");
    }
    // The H100 PCIe is no longer taken for an SXM5 (114 SMs, not 132).
    let pcie = GpuType::identify("NVIDIA H100 PCIe", Some(0x2331_10DE)).unwrap();
    assert_eq!(pcie.id, "h100-pcie-80gb");
    assert_eq!(pcie.profile_for_size(7).unwrap().sms, 114);
    assert_eq!(pcie.profile_for_size(1).unwrap().sms, 14);
    assert_eq!(GpuType::identify("NVIDIA H100 80GB HBM3", Some(0x2330_10DE)).unwrap().profile_for_size(7).unwrap().sms, 132);
    // A800 and H800 are recognised, with the geometry of the A100 / H100 they derive from.
    let a800 = GpuType::identify("NVIDIA A800-SXM4-80GB", Some(0x20F3_10DE)).unwrap();
    assert_eq!((a800.id, a800.profile_for_size(1).unwrap().name), ("a800-80gb", "1g.10gb"));
    assert_eq!(GpuType::identify("NVIDIA H800", Some(0x2324_10DE)).unwrap().id, "h800-80gb");
    // Issue 40: the types NVIDIA's configs cover, by their PCI ids.
    for (name, id, ty) in [
        ("NVIDIA H200 NVL", 0x233B_10DE, "h200-141gb"),
        ("NVIDIA H800 NVL", 0x233A_10DE, "h100-94gb"),
        ("NVIDIA H20", 0x2329_10DE, "h20-96gb"),
        ("NVIDIA GB200", 0x2941_10DE, "gb200-186gb"),
        ("NVIDIA B300 SXM6 AC", 0x3182_10DE, "b300-269gb"),
        ("NVIDIA GB300", 0x31C2_10DE, "gb300-278gb"),
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", 0x2BB5_10DE, "rtx-pro-6000-96gb"),
    ] {
        assert_eq!(GpuType::identify(name, Some(id)).unwrap().id, ty, "{name}");
        assert_eq!(GpuType::identify(name, None).unwrap().id, ty, "{name}");
    }
}

#[test]
fn unknown_gpu_error_names_the_name_and_pci_id_seen_and_the_known_products() {
    let e = GpuType::identify("NVIDIA H100", Some(0x2339_10DE)).unwrap_err().to_string();
    for want in ["`NVIDIA H100`", "PCI device id 0x233910DE", "a100-80gb (NVIDIA A100-SXM4-80GB 0x20B210DE", "h200-141gb (NVIDIA H200 0x233510DE, NVIDIA H200 NVL 0x233B10DE)"] {
        assert!(e.contains(want), "{want:?} missing from: {e}");
    }
    let e = GpuType::identify("Tesla P100-SXM2-16GB", None).unwrap_err().to_string();
    assert!(e.contains("`Tesla P100-SXM2-16GB` (PCI device id not reported)"), "{e}");
    // An id of one type with the name of another: refused, not guessed.
    let e = GpuType::identify("NVIDIA H200", Some(0x2330_10DE)).unwrap_err();
    assert_eq!(
        e,
        UnknownGpu::Conflict { name: "NVIDIA H200".into(), pci_device_id: 0x2330_10DE, by_id: "h100-80gb", by_name: "h200-141gb" }
    );
    assert!(e.to_string().contains("PCI device id 0x233010DE"), "{e}");
    // A known name with an id parva does not list (another board of the same product): by name.
    assert_eq!(GpuType::identify("NVIDIA A30", Some(0x20B9_10DE)).unwrap().id, "a30-24gb");
    assert_eq!(pci_id_text(0x20B2_10DE), "0x20B210DE");
    assert_eq!(pci_id_text(0x10DE), "0x000010DE");
}

// ---- MPS-share types (no MIG) ------------------------------------------------------------

/// Every multiset of shares on every MPS type: valid exactly when it sums to at most 100 % and
/// has at most `max_instances` shares (MPS has no placement rules; packing from 0 is legal).
#[test]
fn mps_types_take_any_shares_summing_to_at_most_100_percent() {
    let mps: Vec<&GpuType> = catalogue().into_iter().filter(|g| g.is_mps()).collect();
    for id in ["v100-16gb", "v100-32gb", "t4-16gb", "a10-24gb", "l4-24gb", "l40s-48gb", "a100-80gb-nomig", "h100-80gb-nomig"] {
        assert!(mps.iter().any(|g| g.id == id), "{id} missing");
    }
    // Every non-decreasing multiset of sizes 1..=max summing to at most `left`.
    fn all(max: u8, from: u8, left: u8, cur: &mut Vec<u8>, out: &mut Vec<Vec<u8>>) {
        out.push(cur.clone());
        for u in from..=max.min(left) {
            cur.push(u);
            all(max, u, left - u, cur, out);
            cur.pop();
        }
    }
    for gpu in mps {
        assert_eq!((gpu.gpcs, gpu.sizes().len()), (MPS_SHARE_UNITS, MPS_SHARE_UNITS as usize), "{}", gpu.id);
        let capped = gpu.with_max_instances(3);
        for ty in [gpu, capped] {
            // Multisets of sizes 1..=10 with up to 11 units (so over-full ones are tried too).
            let mut sets = Vec::new();
            all(MPS_SHARE_UNITS, 1, MPS_SHARE_UNITS + 1, &mut Vec::new(), &mut sets);
            assert!(sets.len() > 100, "{}", sets.len());
            for set in &sets {
                let mut start = 0u8;
                let layout: Vec<Placement> = set
                    .iter()
                    .map(|&u| {
                        let at = start.min(MPS_SHARE_UNITS - u);
                        start += u;
                        Placement { profile: ty.profile_for_size(u).unwrap(), start: at }
                    })
                    .collect();
                let sum: u8 = set.iter().sum();
                let fits = sum <= MPS_SHARE_UNITS && set.len() <= ty.max_instances as usize;
                assert_eq!(ty.validate(&layout).is_ok(), fits, "{} (max {}) shares {set:?}", ty.id, ty.max_instances);
            }
            for layout in ty.maximal_layouts() {
                assert!(layout.len() <= ty.max_instances as usize);
            }
        }
        assert_eq!(gpu.share_percent(5), 50);
        assert_eq!(gpu.size_label(3), "30%");
        // Memory in proportion to the share; the whole GPU's SMs at 100 %.
        let whole = gpu.profile_for_size(MPS_SHARE_UNITS).unwrap();
        let half = gpu.profile_for_size(5).unwrap();
        assert_eq!((half.name, half.mem_gb, half.sms), ("mps-50", whole.mem_gb / 2, whole.sms / 2), "{}", gpu.id);
    }
    let l4 = GpuType::by_id("l4-24gb").unwrap();
    assert_eq!((l4.profile_for_size(10).unwrap().sms, l4.profile_for_size(10).unwrap().mem_gb), (58, 24));
    assert_eq!(GpuType::identify("NVIDIA L4", Some(0x27B8_10DE)).unwrap().id, "l4-24gb");
    // A MIG GPU is still recognised as its MIG type; `-nomig` is chosen by name only.
    assert_eq!(GpuType::identify("NVIDIA H100 80GB HBM3", Some(0x2330_10DE)).unwrap().id, "h100-80gb");
    assert!(!GpuType::by_id("h100-80gb").unwrap().same_mig_geometry(GpuType::by_id("h100-80gb-nomig").unwrap()));
    // The naming convention, in one place: each -nomig type and its MIG GPU, both ways.
    let (mig, nomig) = (GpuType::by_id("h100-80gb").unwrap(), GpuType::by_id("h100-80gb-nomig").unwrap());
    assert_eq!((mig.nomig().map(|t| t.id), nomig.mig_sibling().map(|t| t.id)), (Some("h100-80gb-nomig"), Some("h100-80gb")));
    assert_eq!((l4.mig_sibling(), l4.nomig(), mig.mig_sibling(), nomig.nomig()), (None, None, None, None));
    assert!(GpuType::by_id("a30-24gb").unwrap().nomig().is_none(), "no a30 without MIG in the catalogue");
}

/// The base profile's name of a variant (`1g.24gb+me.all`, `1g.24gb-me`: `1g.24gb`).
fn variant_base(name: &str) -> &str {
    let base = name.split('+').next().unwrap_or(name);
    base.strip_suffix("-me").unwrap_or(base)
}

// ---- Variant profiles: +me, +me.all, +gfx, -me --------------------------------------------

#[test]
fn variant_profiles_are_catalogued_with_their_base_geometry() {
    for gpu in catalogue().into_iter().filter(|g| !g.is_mps()) {
        let me: Vec<&GiProfile> = gpu.profiles.iter().filter(|p| p.media_extensions).collect();
        assert!(!me.is_empty(), "{}", gpu.id);
        for p in gpu.profiles.iter().filter(|p| p.variant) {
            let base = gpu.profile_by_name(variant_base(p.name)).unwrap();
            assert_eq!(
                (p.gpcs, p.mem_slices, p.mem_gb, p.mem_mib, p.sms, p.starts),
                (base.gpcs, base.mem_slices, base.mem_gb, base.mem_mib, base.sms, base.starts),
                "{} {}",
                gpu.id,
                p.name
            );
            assert_ne!(p.id, base.id);
            assert_eq!(gpu.profile_by_id(p.id).unwrap().name, p.name);
        }
        // Planners never choose one.
        for s in gpu.sizes() {
            assert!(!gpu.profile_for_size(s).unwrap().variant, "{} size {s}", gpu.id);
        }
        assert!(gpu.maximal_layouts().iter().flatten().all(|p| !p.profile.variant), "{}", gpu.id);
    }
    let a100 = GpuType::by_id("a100-80gb").unwrap();
    assert_eq!(a100.profile_by_id(20).unwrap().name, "1g.10gb+me");
    assert_eq!(a100.profile_by_name("MIG 1g.10gb+me").unwrap().id, 20);
    assert_eq!(GpuType::by_id("a100-40gb").unwrap().profile_by_id(20).unwrap().name, "1g.5gb+me");
    assert_eq!(GpuType::by_id("h200-141gb").unwrap().profile_by_id(20).unwrap().name, "1g.18gb+me");
    let a30 = GpuType::by_id("a30-24gb").unwrap();
    assert_eq!(a30.profile_by_id(21).unwrap().name, "1g.6gb+me");
    assert_eq!(a30.profile_by_id(6).unwrap().name, "2g.12gb+me");
    assert_eq!(a30.sizes(), vec![1, 2, 4]);
}

#[test]
fn a_media_extension_instance_takes_its_slices_and_the_gpus_one_media_engine_set() {
    let gpu = GpuType::by_id("a100-80gb").unwrap();
    let me = place(gpu, "1g.10gb+me", 3);
    // Its memory slice is taken.
    assert!(matches!(
        gpu.validate(&[me, place(gpu, "1g.10gb", 3)]),
        Err(LayoutError::Overlap { .. })
    ));
    assert_eq!(gpu.free_starts(&[me], gpu.profile_for_size(1).unwrap()), vec![0, 1, 2, 4, 5, 6]);
    assert_eq!(gpu.free_starts(&[me], gpu.profile_for_size(3).unwrap()), vec![4]);
    // Beside six 1g.10gb it fills the GPU (7 instances, 7 GPCs).
    let mut full: Vec<Placement> = (0..7).filter(|&s| s != 3).map(|s| place(gpu, "1g.10gb", s)).collect();
    full.push(me);
    gpu.validate(&full).unwrap();
    // A second +me is refused wherever it goes.
    let e = gpu.validate(&[me, place(gpu, "1g.10gb+me", 5)]).unwrap_err();
    assert!(matches!(e, LayoutError::MediaExtensionsTaken { .. }), "{e}");
    assert!(e.to_string().contains("1g.10gb+me@{5}:1") && e.to_string().contains("1g.10gb+me@{3}:1"), "{e}");
    assert!(gpu.free_starts(&[me], gpu.profile_by_id(20).unwrap()).is_empty());
    // A30: 1g.6gb+me and 2g.12gb+me share the one set of media engines.
    let a30 = GpuType::by_id("a30-24gb").unwrap();
    assert!(matches!(
        a30.validate(&[place(a30, "1g.6gb+me", 0), place(a30, "2g.12gb+me", 2)]),
        Err(LayoutError::MediaExtensionsTaken { .. })
    ));
    a30.validate(&[place(a30, "1g.6gb+me", 0), place(a30, "1g.6gb", 1), place(a30, "2g.12gb", 2)]).unwrap();
}

#[test]
fn out_of_range_starts_never_panic() {
    let gpu = GpuType::by_id("a100-80gb").unwrap();
    let p = gpu.profile_for_size(7).unwrap();
    assert_eq!(p.mask_at(200), 0);
    assert!(matches!(gpu.validate(&[Placement { profile: p, start: 200 }]), Err(LayoutError::IllegalStart { .. })));
}

// ---- validate against an independent check ---------------------------------------------

/// The layout rules written out plainly (ranges, counts), independent of `validate`'s masks.
fn plainly_valid(gpu: &GpuType, layout: &[Placement]) -> bool {
    let in_range = |p: &Placement| p.profile.starts.contains(&p.start) && p.start as u32 + p.profile.mem_slices as u32 <= gpu.mem_slices as u32;
    let range = |p: &Placement| p.start as u32..p.start as u32 + p.profile.mem_slices as u32;
    let overlap = layout.iter().enumerate().any(|(i, a)| {
        layout[i + 1..].iter().any(|b| range(a).any(|s| range(b).contains(&s)))
    });
    layout.len() <= gpu.max_instances as usize
        && layout.iter().all(in_range)
        && !overlap
        && layout.iter().map(|p| p.profile.gpcs as u32).sum::<u32>() <= gpu.gpcs as u32
        && layout.iter().filter(|p| p.profile.media_extensions).count() <= 1
        && layout.iter().all(|p| layout.iter().filter(|q| q.profile == p.profile).count() <= p.profile.max_count as usize)
}

proptest::proptest! {
    // 256 cases by default; longer: PROPTEST_CASES=100000 cargo test -p parva-core validate_matches
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)))]

    #[test]
    fn validate_matches_a_plain_independent_check(
        gpu_index in 0..catalogue().len(),
        picks in proptest::collection::vec((0usize..16, 0u8..9, proptest::bool::ANY), 0..10),
    ) {
        let gpu = catalogue()[gpu_index];
        // Mostly legal starts (so that valid layouts are common), sometimes any start.
        let layout: Vec<Placement> = picks
            .iter()
            .map(|&(pi, s, legal)| {
                let profile = &gpu.profiles[pi % gpu.profiles.len()];
                let start = if legal { profile.starts[s as usize % profile.starts.len()] } else { s };
                Placement { profile, start }
            })
            .collect();
        let got = gpu.validate(&layout);
        proptest::prop_assert_eq!(got.is_ok(), plainly_valid(gpu, &layout), "{} {:?}: {:?}", gpu.id, layout, got);
        // On a valid layout, free_starts says exactly which additions stay valid.
        if got.is_ok() {
            for profile in gpu.profiles {
                let free = gpu.free_starts(&layout, profile);
                for &start in profile.starts {
                    let mut more = layout.clone();
                    more.push(Placement { profile, start });
                    proptest::prop_assert_eq!(free.contains(&start), plainly_valid(gpu, &more), "{} {:?} + {}@{}", gpu.id, layout, profile.name, start);
                }
            }
        }
    }
}
