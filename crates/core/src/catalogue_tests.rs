use super::*;
use crate::mig::{GiProfile, GpuType, LayoutError, Placement, catalogue};

/// A small valid file: a B200-like GPU (7 GPCs, 8 memory slices), as `--from-gpu` would write it.
const GOOD: &str = r##"# a comment
version = 1

[[gpu]]
id = "b200-like"
gpcs = 7
mem_slices = 8
max_instances = 7
placements_source = "nvml"

[[gpu.product]]
name = "NVIDIA B200 (test)"   # a comment after a value, with a "#" in the string
pci_device_id = 0x2901_10DE

[[gpu.profile]]
id = 19
name = "1g.23gb"
gpcs = 1
mem_slices = 1
mem_gb = 23
sms = 18
max_count = 7
placements = [0, 1, 2, 3, 4, 5, 6]

[[gpu.profile]]
id = 0
name = "7g.180gb"
gpcs = 7
mem_slices = 8
mem_gb = 180
sms = 148
max_count = 1
placements = [0]
"##;

fn err(text: &str) -> CatalogueError {
    parse(text, "t.toml").unwrap_err()
}

/// GOOD with `old` replaced by `new` (exactly once).
fn edit(old: &str, new: &str) -> String {
    assert_eq!(GOOD.matches(old).count(), 1, "{old}");
    GOOD.replacen(old, new, 1)
}

fn line_of_text(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn a_good_file_is_read_with_every_field() {
    let types = parse(GOOD, "t.toml").unwrap();
    assert_eq!(types.len(), 1);
    let t = types[0];
    assert_eq!((t.id, t.gpcs, t.mem_slices, t.max_instances, t.placements_source), ("b200-like", 7, 8, 7, PlacementSource::Nvml));
    assert_eq!(t.products, &[GpuProduct { name: "NVIDIA B200 (test)", pci_device_id: 0x2901_10DE }]);
    let p = t.profile_by_name("MIG 1g.23gb").unwrap();
    assert_eq!((p.id, p.gpcs, p.mem_slices, p.mem_gb, p.sms, p.max_count, p.starts, p.media_extensions), (19, 1, 1, 23, 18, 7, &[0u8, 1, 2, 3, 4, 5, 6][..], false));
    assert_eq!(t.origin, "t.toml");
    assert_eq!(t.sizes(), vec![1, 7]);
    // Written and read back: the same type.
    let again = parse(&to_text(&[t], "header\n\nline"), "again.toml").unwrap();
    assert!(again[0].same_geometry(t));
    assert_eq!(again[0].placements_source, t.placements_source);
}

#[test]
fn every_built_in_file_parses_and_round_trips() {
    let all = catalogue();
    assert!(all.len() >= 11);
    for t in &all {
        assert!(t.origin.starts_with("built-in:"), "{}", t.origin);
        let text = to_text(&[t], "");
        let back = parse(&text, "x").unwrap();
        assert!(back[0].same_geometry(t), "{}", t.id);
        assert_eq!((back[0].placements_source, back[0].source), (t.placements_source, t.source), "{}", t.id);
        // max_count is what the other rules allow (NVML's instanceCount on the H100), 1 for +me.
        for p in t.profiles {
            let implied = (p.starts.len() as u8).min(t.gpcs / p.gpcs).min(t.max_instances);
            assert_eq!(p.max_count, if p.media_extensions { 1 } else { implied }, "{} {}", t.id, p.name);
        }
    }
}

#[test]
fn version_missing_not_first_or_unknown_is_refused() {
    let e = err(&GOOD.replace("version = 1\n", ""));
    assert_eq!((e.kind, e.field.as_str()), (CatalogueErrorKind::Version, "version"), "{e}");
    let e = err(&edit("version = 1", "version = 2"));
    assert_eq!((e.kind, e.line, e.field.as_str()), (CatalogueErrorKind::Version, 2, "version"), "{e}");
    assert!(e.to_string().starts_with("t.toml:2: version: version 2 is not one this parva reads"), "{e}");
    let e = err(&edit("version = 1", "version = \"1\""));
    assert_eq!(e.kind, CatalogueErrorKind::Version, "{e}");
    let e = err(&format!("{GOOD}\nversion = 1\n"));
    assert_eq!(e.kind, CatalogueErrorKind::UnknownKey, "a version inside [[gpu.profile]]: {e}");
    let e = err("");
    assert_eq!(e.kind, CatalogueErrorKind::Version, "{e}");
}

#[test]
fn unknown_keys_and_tables_are_refused_with_file_line_field() {
    let text = edit("sms = 148", "sms = 148\nsm_count = 148");
    let e = err(&text);
    assert_eq!((e.kind, e.line, e.field.as_str()), (CatalogueErrorKind::UnknownKey, line_of_text(&text, "sm_count"), "gpu.profile.sm_count"), "{e}");
    assert!(e.to_string().starts_with(&format!("t.toml:{}: gpu.profile.sm_count: unknown key", e.line)), "{e}");
    let text = edit("max_instances = 7", "max_instances = 7\nmig = true");
    let e = err(&text);
    assert_eq!((e.kind, e.field.as_str()), (CatalogueErrorKind::UnknownKey, "gpu.mig"), "{e}");
    let text = edit("[[gpu.product]]", "[[gpu.products]]");
    let e = err(&text);
    assert_eq!((e.kind, e.line), (CatalogueErrorKind::UnknownKey, line_of_text(&text, "[[gpu.products]]")), "{e}");
    let e = err(&edit("version = 1", "version = 1\nname = \"x\""));
    assert_eq!((e.kind, e.field.as_str()), (CatalogueErrorKind::UnknownKey, "name"), "{e}");
}

#[test]
fn bad_placements_are_refused_naming_the_line() {
    // 7g at start 1 would run past memory slice 8.
    let text = edit("placements = [0]\n", "placements = [1]\n");
    let e = err(&text);
    assert_eq!((e.kind, e.line, e.field.as_str()), (CatalogueErrorKind::Placement, line_of_text(&text, "placements = [1]"), "gpu.profile.placements"), "{e}");
    assert!(e.message.contains("7g.180gb: start 1 + 8 memory slices runs past the GPU's 8"), "{e}");
    let e = err(&edit("placements = [0, 1, 2, 3, 4, 5, 6]", "placements = [0, 1, 2, 3, 4, 5, 6, 7, 8]"));
    assert_eq!(e.kind, CatalogueErrorKind::Placement, "{e}");
    let e = err(&edit("placements = [0, 1, 2, 3, 4, 5, 6]", "placements = [0, 2, 1]"));
    assert!(e.kind == CatalogueErrorKind::Placement && e.message.contains("ascending"), "{e}");
    let e = err(&edit("placements = [0, 1, 2, 3, 4, 5, 6]", "placements = []"));
    assert_eq!(e.kind, CatalogueErrorKind::Placement, "{e}");
    // More GPCs or memory slices than the GPU has.
    let text = edit("gpcs = 1\n", "gpcs = 8\n");
    let e = err(&text);
    assert_eq!((e.kind, e.line, e.field.as_str()), (CatalogueErrorKind::Invalid, line_of_text(&text, "gpcs = 8"), "gpu.profile.gpcs"), "{e}");
}

#[test]
fn overlapping_profiles_and_duplicate_keys_are_refused() {
    // A second profile with id 19.
    let text = edit("id = 0\n", "id = 19\n");
    let e = err(&text);
    assert_eq!((e.kind, e.line, e.field.as_str()), (CatalogueErrorKind::Overlap, line_of_text(&text, "name = \"7g") - 1, "gpu.profile.id"), "{e}");
    assert!(e.message.contains("profile id 19 is also 1g.23gb"), "{e}");
    // A second profile named 1g.23gb.
    let e = err(&edit("name = \"7g.180gb\"", "name = \"1G.23GB\""));
    assert_eq!((e.kind, e.field.as_str()), (CatalogueErrorKind::Overlap, "gpu.profile.name"), "{e}");
    // The same key twice in one table.
    let text = edit("sms = 18\n", "sms = 18\nsms = 19\n");
    let e = err(&text);
    assert_eq!((e.kind, e.line, e.field.as_str()), (CatalogueErrorKind::DuplicateKey, line_of_text(&text, "sms = 19"), "gpu.profile.sms"), "{e}");
    // Two types with one id in a file.
    let second = &GOOD[GOOD.find("[[gpu]]").unwrap()..];
    let e = err(&format!("{GOOD}\n{second}"));
    assert_eq!(e.kind, CatalogueErrorKind::Overlap, "{e}");
}

#[test]
fn missing_and_mistyped_values_are_refused() {
    let e = err(&edit("mem_gb = 23\n", ""));
    assert_eq!((e.kind, e.field.as_str(), e.line), (CatalogueErrorKind::Missing, "gpu.profile.mem_gb", line_of_text(GOOD, "[[gpu.profile]]")), "{e}");
    let e = err(&edit("sms = 18", "sms = \"18\""));
    assert_eq!((e.kind, e.field.as_str()), (CatalogueErrorKind::Invalid, "gpu.profile.sms"), "{e}");
    let e = err(&edit("sms = 18", "sms = -1"));
    assert_eq!(e.kind, CatalogueErrorKind::Syntax, "{e}");
    let e = err(&edit("id = \"b200-like\"", "id = \"B200 like\""));
    assert_eq!((e.kind, e.field.as_str()), (CatalogueErrorKind::Invalid, "gpu.id"), "{e}");
    let e = err(&edit("placements_source = \"nvml\"", "placements_source = \"guessed\""));
    assert_eq!((e.kind, e.field.as_str()), (CatalogueErrorKind::Invalid, "gpu.placements_source"), "{e}");
    let e = err(&edit("max_count = 7", "max_count = 9"));
    assert_eq!((e.kind, e.field.as_str()), (CatalogueErrorKind::Invalid, "gpu.profile.max_count"), "{e}");
    // No whole-GPU profile: the planner could never use the GPU whole.
    let whole = &GOOD[GOOD.rfind("[[gpu.profile]]").unwrap()..];
    let e = err(&GOOD.replace(whole, ""));
    assert_eq!(e.kind, CatalogueErrorKind::Missing, "{e}");
    let e = err(&GOOD.replace("[[gpu.product]]\nname = \"NVIDIA B200 (test)\"   # a comment after a value, with a \"#\" in the string\npci_device_id = 0x2901_10DE\n", ""));
    assert_eq!((e.kind, e.field.as_str()), (CatalogueErrorKind::Missing, "gpu.product"), "{e}");
    // Syntax: no `=`, an unterminated string, an array over two lines.
    for bad in ["gpcs 7", "id = \"b200", "placements = [0,"] {
        let text = edit("max_instances = 7\n", &format!("{bad}\n"));
        assert_eq!(err(&text).kind, CatalogueErrorKind::Syntax, "{bad}");
    }
}

#[test]
fn a_file_too_large_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.toml");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(MAX_FILE_BYTES + 1).unwrap();
    let e = load_file(&path).unwrap_err();
    assert!(e.kind == CatalogueErrorKind::Syntax && e.message.contains("at most"), "{e}");
    let e = load_file(&dir.path().join("absent.toml")).unwrap_err();
    assert!(e.message.contains("cannot read"), "{e}");
}

#[test]
fn max_count_limits_a_profile_in_layouts() {
    // Only three 1g instances of this GPU, though seven would fit by slices and GPCs.
    let text = edit("max_count = 7", "max_count = 3");
    let t = parse(&text, "t.toml").unwrap()[0];
    let one = t.profile_by_name("1g.23gb").unwrap();
    let l: Vec<Placement> = (0..3).map(|s| Placement { profile: one, start: s }).collect();
    t.validate(&l).unwrap();
    assert!(t.free_starts(&l, one).is_empty());
    let mut more = l.clone();
    more.push(Placement { profile: one, start: 3 });
    assert_eq!(t.validate(&more), Err(LayoutError::TooManyOfProfile { profile: "1g.23gb", limit: 3 }));
    for layout in t.maximal_layouts() {
        t.validate(&layout).unwrap();
    }
}

/// One GPU-instance profile as NVML reports it: id, name, slices, instances at most, SMs, MB and
/// placements (start, size).
fn nvml_profile(id: u32, name: &str, slices: u32, count: u32, sms: u32, mb: u64, pl: &[(u32, u32)]) -> NvmlProfile {
    NvmlProfile {
        id,
        name: name.into(),
        slice_count: slices,
        instance_count: count,
        multiprocessor_count: sms,
        memory_size_mb: mb,
        placements: pl.to_vec(),
    }
}

/// `got`, read from NVML, has the geometry of the built-in type `id`, profile by profile (in any
/// order). Returns the built-in type.
fn assert_same_as_built_in(got: &GpuType, id: &str) -> &'static GpuType {
    let want = GpuType::by_id(id).unwrap();
    assert_eq!((got.gpcs, got.mem_slices, got.max_instances), (want.gpcs, want.mem_slices, want.max_instances));
    // NVML names the product it was read from; the catalogue lists that one and maybe others.
    assert!(got.products.iter().all(|p| want.products.contains(p)), "{:?} not in {:?}", got.products, want.products);
    assert_eq!(got.profiles.len(), want.profiles.len());
    for w in want.profiles {
        let g = got.profile_by_id(w.id).unwrap_or_else(|| panic!("profile {} missing", w.id));
        assert!(g.same_geometry(w), "profile {}: {g:?} vs {w:?}", w.id);
        // NVML's exact figure on this driver, never below what the catalogue plans with.
        assert_eq!(g.mem_source, crate::mig::MemSource::Nvml);
        assert!(w.mem_mib <= g.mem_mib, "profile {}: catalogue {} MiB > NVML {} MiB", w.id, w.mem_mib, g.mem_mib);
    }
    assert_eq!(got.maximal_layouts().len(), want.maximal_layouts().len());
    want
}

/// NVML's answer on a real H100 80GB HBM3 (driver 580.159.04, MIG mode off), copied from
/// reports/gpu/nvidia-h100-80gb-hbm3-2026-11-25/mig-geometry.json, in NVML's profile-index order.
fn h100_nvml() -> Vec<NvmlProfile> {
    let p = nvml_profile;
    vec![
        p(19, "MIG 1g.10gb", 1, 7, 16, 9984, &[(0, 1), (1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1)]),
        p(14, "MIG 2g.20gb", 2, 3, 32, 20096, &[(0, 2), (2, 2), (4, 2)]),
        p(9, "MIG 3g.40gb", 3, 2, 60, 40448, &[(0, 4), (4, 4)]),
        p(5, "MIG 4g.40gb", 4, 1, 64, 40448, &[(0, 4)]),
        p(0, "MIG 7g.80gb", 7, 1, 132, 81152, &[(0, 8)]),
        p(20, "MIG 1g.10gb+me", 1, 1, 16, 9984, &[(0, 1), (1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1)]),
        p(15, "MIG 1g.20gb", 1, 4, 26, 20096, &[(0, 2), (2, 2), (4, 2), (6, 2)]),
    ]
}

#[test]
fn nvml_output_of_a_real_h100_becomes_the_built_in_h100_entry() {
    let got = from_nvml("h100-80gb", "NVIDIA H100 80GB HBM3", 0x2330_10DE, &h100_nvml(), "nvml:GPU 0").unwrap();
    assert_same_as_built_in(got, "h100-80gb");
    assert_eq!(got.placements_source, PlacementSource::Nvml);
    assert_eq!(id_from_product("NVIDIA H100 80GB HBM3"), "h100-80gb-hbm3");
    assert_eq!(id_from_product(" NVIDIA B200 "), "b200");
    assert_eq!(id_from_product("???"), "gpu");
}

/// NVML's answer on a real H200 (driver 580.159.04, MIG mode off), copied from
/// reports/gpu/nvidia-h200-2026-11-26/mig-geometry.json, in NVML's profile-index order. Before that
/// run the built-in h200-141gb placements were assumed equal to the H100's; this is what confirmed them.
fn h200_nvml() -> Vec<NvmlProfile> {
    let p = nvml_profile;
    vec![
        p(19, "MIG 1g.18gb", 1, 7, 16, 16384, &[(0, 1), (1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1)]),
        p(14, "MIG 2g.35gb", 2, 3, 32, 33280, &[(0, 2), (2, 2), (4, 2)]),
        p(9, "MIG 3g.71gb", 3, 2, 60, 71424, &[(0, 4), (4, 4)]),
        p(5, "MIG 4g.71gb", 4, 1, 64, 71424, &[(0, 4)]),
        p(0, "MIG 7g.141gb", 7, 1, 132, 143360, &[(0, 8)]),
        p(20, "MIG 1g.18gb+me", 1, 1, 16, 16384, &[(0, 1), (1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1)]),
        p(15, "MIG 1g.35gb", 1, 4, 26, 33280, &[(0, 2), (2, 2), (4, 2), (6, 2)]),
    ]
}

#[test]
fn nvml_output_of_a_real_h200_becomes_the_built_in_h200_entry() {
    let got = from_nvml("h200-141gb", "NVIDIA H200", 0x2335_10DE, &h200_nvml(), "nvml:GPU 0").unwrap();
    let want = assert_same_as_built_in(got, "h200-141gb");
    assert_eq!(want.placements_source, PlacementSource::Nvml, "the built-in entry says its placements were read from a GPU");
    // Regression (catalogue --from-gpu on the H200 said "NOT the same geometry"): NVML lists the
    // profiles in another order than the catalogue file; the geometry is the same.
    assert!(got.profiles.iter().map(|p| p.id).ne(want.profiles.iter().map(|p| p.id)), "the orders differ");
    assert!(got.same_mig_geometry(want) && want.same_mig_geometry(got));
    let mut other = h200_nvml();
    other[6].placements.pop();
    let changed = from_nvml("h200-141gb", "NVIDIA H200", 0x2335_10DE, &other, "nvml:GPU 0").unwrap();
    assert!(!changed.same_mig_geometry(want), "one placement fewer is another geometry");
}

#[test]
fn nvml_output_that_breaks_a_rule_is_refused() {
    let mut bad = h100_nvml();
    bad[0].placements.clear();
    assert!(from_nvml("x", "X", 1, &bad, "nvml").unwrap_err().message.contains("no possible placement"));
    let mut bad = h100_nvml();
    bad[6].id = 19;
    assert_eq!(from_nvml("x", "X", 1, &bad, "nvml").unwrap_err().kind, CatalogueErrorKind::Overlap);
    let mut bad = h100_nvml();
    bad[1].placements.push((7, 200));
    let e = from_nvml("x", "X", 1, &bad, "nvml").unwrap_err();
    assert!(e.message.contains("placement") && e.message.contains("200"), "{}", e.message);
    assert!(from_nvml("x", "X", 1, &[], "nvml").unwrap_err().message.contains("no GPU-instance profile"));
}

/// A valid layout holding `want` (profile, count) on `gpu`, if one exists (depth-first over the
/// legal starts that stay free).
fn place_all(gpu: &GpuType, want: &[(&'static GiProfile, u32)], layout: &mut Vec<Placement>) -> bool {
    let Some(i) = want.iter().position(|&(p, n)| layout.iter().filter(|l| l.profile == p).count() < n as usize) else {
        return true;
    };
    let profile = want[i].0;
    for start in gpu.free_starts(layout, profile) {
        // Canonical order within one profile: ascending starts.
        if layout.iter().any(|l| l.profile == profile && l.start > start) {
            continue;
        }
        layout.push(Placement { profile, start });
        if place_all(gpu, want, layout) {
            return true;
        }
        layout.pop();
    }
    false
}

#[test]
fn every_mig_parted_shipped_configuration_for_parvas_types_is_placed_and_validated() {
    let text = include_str!("catalogue/mig-parted-configs.txt");
    let mut checked = std::collections::BTreeSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split(" | ").collect();
        assert_eq!(cols.len(), 4, "{line}");
        let counts: Vec<(&str, u32)> = cols[3]
            .split_whitespace()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k, v.parse().unwrap())
            })
            .collect();
        let ids: Vec<u32> = if cols[2] == "all" {
            Vec::new()
        } else {
            cols[2].split(',').map(|h| u32::from_str_radix(h.trim().trim_start_matches("0x"), 16).unwrap()).collect()
        };
        // The Hopper-Blackwell example deployment is for such nodes: its `all` means them.
        let in_scope = |gpu: &GpuType| !cols[0].contains("hopper-blackwell") || ["h1", "h2", "h8", "gh2", "b2", "gb2", "b3", "gb3"].iter().any(|p| gpu.id.starts_with(p));
        for gpu in catalogue().into_iter().filter(|g| in_scope(g)) {
            let named = gpu.products.iter().any(|p| ids.contains(&p.pci_device_id));
            let all_known = counts.iter().all(|(n, _)| gpu.profile_by_name(n).is_some());
            // A filter naming the type: every profile must be the type's; `all`: the types that have them.
            if !(named || (ids.is_empty() && all_known)) {
                continue;
            }
            assert!(all_known, "{line}: {} lacks a profile of {:?}", gpu.id, counts);
            let want: Vec<(&'static GiProfile, u32)> = counts.iter().map(|(n, c)| (gpu.profile_by_name(n).unwrap(), *c)).collect();
            let mut layout = Vec::new();
            assert!(place_all(gpu, &want, &mut layout), "{line}: cannot be placed on {}", gpu.id);
            gpu.validate(&layout).unwrap();
            checked.insert((cols[0], cols[1], cols[3], gpu.id));
        }
    }
    let placed: std::collections::BTreeSet<(&str, &str, &str)> = checked.iter().map(|c| (c.0, c.1, c.2)).collect();
    eprintln!("mig-parted: {} (config, type) pairs placed, {} entries", checked.len(), placed.len());
    // Every entry applies to a parva type (issue 40: GB200, GB300, B300, RTX PRO 6000, H100 96GB,
    // GH200 96GB and H20 were missing), except the pre-production GB200's profile names that
    // config-default.yaml still has (production boards are named 1g.23gb ... 7g.186gb).
    let unplaced: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter(|l| {
            let c: Vec<&str> = l.split(" | ").collect();
            !placed.contains(&(c[0], c[1], c[3]))
        })
        .collect();
    // (In the Hopper-Blackwell example, whose nodes exclude the RTX PRO 6000, 1g.24gb+me is the
    // pre-production GB200's too.)
    let pre_production = ["3g.95gb=2", "4g.95gb=1", "7g.189gb=1", "1g.24gb+me=1"];
    for l in &unplaced {
        assert!(pre_production.iter().any(|p| l.ends_with(&format!("| {p}"))), "applies to no parva type: {l}");
    }
    assert_eq!(unplaced.len(), 7, "{unplaced:#?}");
    assert!(checked.len() >= 350, "{} (config, type) pairs checked", checked.len());
    // And a layout too many is refused: eight 1g on an A100.
    let a100 = crate::mig::GpuType::by_id("a100-80gb").unwrap();
    assert!(!place_all(a100, &[(a100.profile_by_name("1g.10gb").unwrap(), 8)], &mut Vec::new()));
}

const MPS: &str = r##"version = 1

[[gpu]]
id = "l4-like"
partition = "mps"
sms = 58
mem_gb = 24
max_instances = 4

[[gpu.product]]
name = "NVIDIA L4 (test)"
pci_device_id = 0x27B9_10DE
"##;

#[test]
fn an_mps_type_is_its_whole_gpu_and_its_share_profiles_are_generated() {
    let t = parse(MPS, "m.toml").unwrap()[0];
    assert_eq!((t.partition, t.gpcs, t.max_instances), (crate::mig::Partition::Mps, 10, 4));
    let names: Vec<&str> = t.profiles.iter().map(|p| p.name).collect();
    assert_eq!(names, ["mps-10", "mps-20", "mps-30", "mps-40", "mps-50", "mps-60", "mps-70", "mps-80", "mps-90", "mps-100"]);
    let p30 = t.profile_by_name("mps-30").unwrap();
    assert_eq!((p30.sms, p30.mem_gb, p30.max_count, p30.starts.len()), (17, 7, 3, 8));
    let back = parse(&to_text(&[t], ""), "again.toml").unwrap();
    assert!(back[0].same_geometry(t));
    // Without max_instances: up to ten 10 % shares; without a product: chosen by --gpu-type only.
    let open = MPS.replace("max_instances = 4\n", "").replace("[[gpu.product]]\nname = \"NVIDIA L4 (test)\"\npci_device_id = 0x27B9_10DE\n", "");
    let t = parse(&open, "m.toml").unwrap()[0];
    assert_eq!((t.max_instances, t.products.len()), (10, 0));
}

#[test]
fn mps_and_mig_keys_are_not_mixed() {
    let cases = [
        (MPS.replace("sms = 58\n", "sms = 58\ngpcs = 7\n"), "gpu.gpcs", "an MPS type has no `gpcs`"),
        (MPS.replace("mem_gb = 24\n", ""), "gpu.mem_gb", "needs `mem_gb`"),
        (MPS.replace("max_instances = 4", "max_instances = 11"), "gpu.max_instances", "out of range 1..=10"),
        (MPS.replace("partition = \"mps\"", "partition = \"mig-ish\""), "gpu.partition", "one of \"mig\""),
        (format!("{MPS}\n[[gpu.profile]]\nid = 1\n"), "gpu.profile", "generated"),
        (GOOD.replacen("mem_slices = 8\n", "mem_slices = 8\nsms = 4\n", 1), "gpu.sms", "only an MPS type"),
    ];
    for (text, field, want) in cases {
        let e = err(&text);
        assert_eq!(e.field, field, "{e}");
        assert!(e.to_string().contains(want), "{want:?} not in {e}");
        assert!(e.line > 0, "{e}");
    }
}

/// Issue 40: instance memory came from the GB in a profile's name (x 985.6), which on some GPUs is
/// more than the instance has (H200 1g.18gb: 17,741 MiB against NVIDIA's 16,384), so a plan could
/// pass a fit check a real instance fails with out-of-memory. Now: no built-in profile's memory
/// exceeds any figure NVIDIA published or NVML reported for it, every figure the catalogue calls
/// published or read is backed by one, and an assumed one is at or below the rule's.
#[test]
fn no_profile_promises_more_memory_than_nvidia_reports() {
    let table = include_str!("catalogue/nvidia-memory.txt");
    let mut figures: std::collections::BTreeMap<(&str, &str), Vec<u32>> = std::collections::BTreeMap::new();
    for line in table.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let c: Vec<&str> = line.split(" | ").collect();
        assert_eq!(c.len(), 4, "{line}");
        let ty = crate::mig::GpuType::by_id(c[0]).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(ty.profile_by_name(c[1]).is_some(), "{line}: no such profile");
        figures.entry((c[0], c[1])).or_default().push(c[2].parse().unwrap());
    }
    let mut checked = 0;
    for gpu in crate::mig::catalogue().into_iter().filter(|g| !g.is_mps()) {
        for p in gpu.profiles {
            let seen = figures.get(&(gpu.id, p.name));
            if let Some(seen) = seen {
                let min = *seen.iter().min().unwrap();
                assert!(p.mem_mib <= min, "{} {}: {} MiB, NVIDIA reports {min}", gpu.id, p.name, p.mem_mib);
                checked += 1;
            }
            match p.mem_source {
                crate::mig::MemSource::Published | crate::mig::MemSource::Nvml => {
                    assert!(seen.is_some(), "{} {}: `{}` but no figure in nvidia-memory.txt", gpu.id, p.name, p.mem_source.as_str());
                }
                crate::mig::MemSource::Assumed => {
                    // Assumed from what is published for the same memory: a profile of the same
                    // memory slices on this GPU or on the GPU it derives from (A800 from A100,
                    // H800 from H100); else the rule.
                    let sibling = [("a800-40gb", "a100-40gb"), ("a800-80gb", "a100-80gb"), ("h800-80gb", "h100-80gb"), ("h800-pcie-80gb", "h100-pcie-80gb")]
                        .iter()
                        .find(|(a, _)| *a == gpu.id)
                        .map(|(_, b)| *b);
                    let backing: Vec<u32> = figures
                        .iter()
                        .filter(|((t, n), _)| {
                            let same_slices = |ty: &str| crate::mig::GpuType::by_id(ty).ok().and_then(|g| g.profile_by_name(n)).is_some_and(|o| o.mem_slices == p.mem_slices);
                            (*t == gpu.id || Some(*t) == sibling) && same_slices(t)
                        })
                        .flat_map(|(_, v)| v.iter().copied())
                        .collect();
                    let bound = backing.iter().min().copied().unwrap_or_else(|| crate::mig::assumed_mem_mib(p.mem_gb, p.mem_slices, gpu.mem_slices));
                    assert!(p.mem_mib <= bound, "{} {}: assumed {} MiB above {bound}", gpu.id, p.name, p.mem_mib);
                }
            }
        }
    }
    assert!(checked >= 70, "{checked} profiles checked against NVIDIA's figures");
    // The finding itself: H200's 1g.18gb is 16,384 MiB, not the name's 17,741.
    let h200 = crate::mig::GpuType::by_id("h200-141gb").unwrap();
    assert_eq!(h200.profile_by_name("1g.18gb").unwrap().mem_mib(), 16384.0);
    // And the rule stays at or below every published figure of a profile of its kind.
    for ((ty, name), seen) in &figures {
        let gpu = crate::mig::GpuType::by_id(ty).unwrap();
        let p = gpu.profile_by_name(name).unwrap();
        let rule = crate::mig::assumed_mem_mib(p.mem_gb, p.mem_slices, gpu.mem_slices);
        assert!(rule <= *seen.iter().min().unwrap(), "{ty} {name}: the rule's {rule} MiB is above NVIDIA's {seen:?}");
    }
}

