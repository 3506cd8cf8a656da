//! MIG geometry as data: the catalogue of GPU types, their GPU-instance (GI) profiles with legal
//! placement starts, and a layout validator.
//!
//! A GPU has 7 compute slices (GPCs) and 8 memory slices (A30: 4 and 4). A GPU instance takes a
//! number of GPCs and a contiguous range of memory slices that begins at one of its profile's
//! legal starts. Placements are written `{start}:size` in memory slices, as NVML reports them. A
//! layout is valid when every start is legal for its profile, no two memory ranges overlap, the
//! GPCs add up to at most the GPU's, and there are no more instances than the GPU allows.
//! Sources: NVIDIA's MIG user guide, published `nvidia-smi mig -lgip/-lgipp` outputs, NVML headers
//! (see `notes/mig.md` in the project's shared notes).

use std::fmt;

/// One GPU-instance profile (e.g. `3g.40gb`, profile id 9 on A100-80GB).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GiProfile {
    /// Name as `nvidia-smi mig -lgip` prints it, without the `MIG ` prefix.
    pub name: &'static str,
    /// GI profile id as NVML and `nvidia-smi mig -cgi` use it.
    pub id: u32,
    /// Compute slices (GPCs): the "instance size" of the profile tables.
    pub gpcs: u8,
    /// Memory slices the instance occupies from its start.
    pub mem_slices: u8,
    /// Memory in GB, as in the profile name.
    pub mem_gb: u32,
    /// Streaming multiprocessors of the instance.
    pub sms: u16,
    /// Legal placement starts, in memory slices.
    pub starts: &'static [u8],
}

impl GiProfile {
    /// Bit mask of the memory slices this profile occupies when placed at `start`.
    pub fn mask_at(&self, start: u8) -> u16 {
        (((1u32 << self.mem_slices) - 1) << start) as u16
    }
}

/// A GPU type of the catalogue.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuType {
    /// Identifier used on the command line and in files, e.g. `a100-80gb`.
    pub id: &'static str,
    /// Substrings of the product name NVML reports, used to recognise the GPU on a node.
    pub product_names: &'static [&'static str],
    pub gpcs: u8,
    pub mem_slices: u8,
    pub max_instances: u8,
    pub profiles: &'static [GiProfile],
}

const STARTS_1G: &[u8] = &[0, 1, 2, 3, 4, 5, 6];
const STARTS_1G_2S: &[u8] = &[0, 2, 4, 6];
const STARTS_2G: &[u8] = &[0, 2, 4];
const STARTS_3G: &[u8] = &[0, 4];
const STARTS_0: &[u8] = &[0];

/// The profiles of a 7-GPC / 8-memory-slice GPU; only names, memory and SM counts differ
/// between A100, H100 and H200 (H200 placements are believed equal to H100's: no published
/// `-lgipp` confirms them yet).
macro_rules! seven_slice_profiles {
    ($m1:literal, $m1x2:literal, $m2:literal, $m3:literal, $m4:literal, $m7:literal,
     [$s1:literal, $s1x2:literal, $s2:literal, $s3:literal, $s4:literal, $s7:literal]) => {
        &[
            GiProfile { name: concat!("1g.", $m1, "gb"), id: 19, gpcs: 1, mem_slices: 1, mem_gb: $m1, sms: $s1, starts: STARTS_1G },
            GiProfile { name: concat!("1g.", $m1x2, "gb"), id: 15, gpcs: 1, mem_slices: 2, mem_gb: $m1x2, sms: $s1x2, starts: STARTS_1G_2S },
            GiProfile { name: concat!("2g.", $m2, "gb"), id: 14, gpcs: 2, mem_slices: 2, mem_gb: $m2, sms: $s2, starts: STARTS_2G },
            GiProfile { name: concat!("3g.", $m3, "gb"), id: 9, gpcs: 3, mem_slices: 4, mem_gb: $m3, sms: $s3, starts: STARTS_3G },
            GiProfile { name: concat!("4g.", $m4, "gb"), id: 5, gpcs: 4, mem_slices: 4, mem_gb: $m4, sms: $s4, starts: STARTS_0 },
            GiProfile { name: concat!("7g.", $m7, "gb"), id: 0, gpcs: 7, mem_slices: 8, mem_gb: $m7, sms: $s7, starts: STARTS_0 },
        ]
    };
}

static CATALOGUE: &[GpuType] = &[
    GpuType {
        id: "a100-40gb",
        product_names: &["A100-SXM4-40GB", "A100-PCIE-40GB", "A100 40GB"],
        gpcs: 7,
        mem_slices: 8,
        max_instances: 7,
        profiles: seven_slice_profiles!(5, 10, 10, 20, 20, 40, [14, 14, 28, 42, 56, 98]),
    },
    GpuType {
        id: "a100-80gb",
        product_names: &["A100-SXM4-80GB", "A100 80GB", "A100-PCIE-80GB"],
        gpcs: 7,
        mem_slices: 8,
        max_instances: 7,
        profiles: seven_slice_profiles!(10, 20, 20, 40, 40, 80, [14, 14, 28, 42, 56, 98]),
    },
    GpuType {
        id: "h100-80gb",
        product_names: &["H100 80GB", "H100-SXM5-80GB", "H100 PCIe"],
        gpcs: 7,
        mem_slices: 8,
        max_instances: 7,
        profiles: seven_slice_profiles!(10, 20, 20, 40, 40, 80, [16, 26, 32, 60, 64, 132]),
    },
    GpuType {
        id: "h100-94gb",
        product_names: &["H100 NVL"],
        gpcs: 7,
        mem_slices: 8,
        max_instances: 7,
        profiles: seven_slice_profiles!(12, 24, 24, 47, 47, 94, [16, 26, 32, 60, 64, 132]),
    },
    GpuType {
        id: "h200-141gb",
        product_names: &["H200"],
        gpcs: 7,
        mem_slices: 8,
        max_instances: 7,
        profiles: seven_slice_profiles!(18, 35, 35, 71, 71, 141, [16, 26, 32, 60, 64, 132]),
    },
    GpuType {
        id: "a30-24gb",
        product_names: &["A30"],
        gpcs: 4,
        mem_slices: 4,
        max_instances: 4,
        profiles: &[
            GiProfile { name: "1g.6gb", id: 14, gpcs: 1, mem_slices: 1, mem_gb: 6, sms: 14, starts: &[0, 1, 2, 3] },
            GiProfile { name: "2g.12gb", id: 5, gpcs: 2, mem_slices: 2, mem_gb: 12, sms: 28, starts: &[0, 2] },
            GiProfile { name: "4g.24gb", id: 0, gpcs: 4, mem_slices: 4, mem_gb: 24, sms: 56, starts: STARTS_0 },
        ],
    },
];

/// All GPU types parva knows.
pub fn catalogue() -> &'static [GpuType] {
    CATALOGUE
}

/// The GPU type named `id` was not found in the catalogue.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown GPU type `{id}`; known types: {known}")]
pub struct UnknownGpuType {
    pub id: String,
    pub known: String,
}

impl GpuType {
    /// Look a GPU type up by its id (`a100-80gb`, ...), case-insensitively.
    pub fn by_id(id: &str) -> Result<&'static GpuType, UnknownGpuType> {
        CATALOGUE.iter().find(|g| g.id.eq_ignore_ascii_case(id.trim())).ok_or_else(|| UnknownGpuType {
            id: id.to_string(),
            known: CATALOGUE.iter().map(|g| g.id).collect::<Vec<_>>().join(", "),
        })
    }

    /// Recognise a GPU type from the product name NVML reports (e.g. `NVIDIA A100-SXM4-80GB`).
    pub fn by_product_name(name: &str) -> Option<&'static GpuType> {
        CATALOGUE.iter().find(|g| g.product_names.iter().any(|p| name.contains(p)))
    }

    /// Instance sizes (GPC counts) a planner may use, ascending: 1, 2, 3, 4, 7 (A30: 1, 2, 4).
    pub fn sizes(&self) -> Vec<u8> {
        let mut sizes: Vec<u8> = self.profiles.iter().map(|p| p.gpcs).collect();
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    }

    /// The profile a planner uses for an instance of `gpcs` compute slices: the one with the
    /// fewest memory slices (so `1g.10gb`, not `1g.20gb`, on A100-80GB).
    pub fn profile_for_size(&self, gpcs: u8) -> Option<&'static GiProfile> {
        self.profiles.iter().filter(|p| p.gpcs == gpcs).min_by_key(|p| p.mem_slices)
    }

    pub fn profile_by_name(&self, name: &str) -> Option<&'static GiProfile> {
        let name = name.trim().trim_start_matches("MIG ");
        self.profiles.iter().find(|p| p.name.eq_ignore_ascii_case(name))
    }

    pub fn profile_by_id(&self, id: u32) -> Option<&'static GiProfile> {
        self.profiles.iter().find(|p| p.id == id)
    }

    fn full_mask(&self) -> u16 {
        ((1u32 << self.mem_slices) - 1) as u16
    }

    /// Check that `layout` fits on one GPU of this type.
    pub fn validate(&self, layout: &[Placement]) -> Result<(), LayoutError> {
        if layout.len() > self.max_instances as usize {
            return Err(LayoutError::TooManyInstances { count: layout.len(), limit: self.max_instances });
        }
        let mut used: Vec<(u16, &Placement)> = Vec::with_capacity(layout.len());
        let mut gpcs = 0u32;
        for p in layout {
            let profile = p.profile;
            if !profile.starts.contains(&p.start) {
                return Err(LayoutError::IllegalStart {
                    profile: profile.name,
                    start: p.start,
                    legal: profile.starts.to_vec(),
                });
            }
            let mask = profile.mask_at(p.start);
            if mask & !self.full_mask() != 0 {
                return Err(LayoutError::OutOfRange { profile: profile.name, start: p.start, slices: self.mem_slices });
            }
            if let Some((_, other)) = used.iter().find(|(m, _)| m & mask != 0) {
                return Err(LayoutError::Overlap { first: **other, second: *p });
            }
            used.push((mask, p));
            gpcs += profile.gpcs as u32;
        }
        if gpcs > self.gpcs as u32 {
            return Err(LayoutError::TooManyGpcs { total: gpcs, limit: self.gpcs });
        }
        Ok(())
    }

    /// Every maximal layout of the planner's profiles (one per GPC count): sets of placements to
    /// which no further instance can be added. Sub-layouts of these are exactly the legal layouts.
    /// Ordered deterministically.
    pub fn maximal_layouts(&self) -> Vec<Vec<Placement>> {
        let profiles: Vec<&'static GiProfile> =
            self.sizes().iter().rev().filter_map(|&s| self.profile_for_size(s)).collect();
        let mut out = Vec::new();
        let mut current = Vec::new();
        self.extend_layouts(&profiles, 0, 0, 0, &mut current, &mut out);
        out
    }

    fn extend_layouts(
        &self,
        profiles: &[&'static GiProfile],
        first: usize,
        mask: u16,
        gpcs: u8,
        current: &mut Vec<Placement>,
        out: &mut Vec<Vec<Placement>>,
    ) {
        // Candidates are enumerated in a canonical order (profile index, then start) to visit
        // each set once; maximality is checked against every profile and start.
        let mut extended = false;
        for (pi, profile) in profiles.iter().enumerate().skip(first) {
            for &start in profile.starts {
                let m = profile.mask_at(start);
                if !self.fits(mask, gpcs, current.len(), profile, start) {
                    continue;
                }
                if pi == first && current.last().is_some_and(|l| *l.profile == **profile && l.start >= start) {
                    continue;
                }
                extended = true;
                current.push(Placement { profile, start });
                self.extend_layouts(profiles, pi, mask | m, gpcs + profile.gpcs, current, out);
                current.pop();
            }
        }
        if !extended {
            let can_grow = profiles
                .iter()
                .any(|p| p.starts.iter().any(|&s| self.fits(mask, gpcs, current.len(), p, s)));
            if !can_grow && !current.is_empty() {
                out.push(current.clone());
            }
        }
    }

    fn fits(&self, mask: u16, gpcs: u8, count: usize, profile: &GiProfile, start: u8) -> bool {
        let m = profile.mask_at(start);
        m & mask == 0
            && m & !self.full_mask() == 0
            && gpcs + profile.gpcs <= self.gpcs
            && count < self.max_instances as usize
    }

    /// Legal starts for `profile` that are free on a GPU whose current layout is `layout`.
    pub fn free_starts(&self, layout: &[Placement], profile: &GiProfile) -> Vec<u8> {
        let mask = layout.iter().fold(0u16, |m, p| m | p.profile.mask_at(p.start));
        let gpcs: u8 = layout.iter().map(|p| p.profile.gpcs).sum();
        profile.starts.iter().copied().filter(|&s| self.fits(mask, gpcs, layout.len(), profile, s)).collect()
    }
}

impl fmt::Display for GpuType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id)
    }
}

/// A profile placed at a start (in memory slices).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    pub profile: &'static GiProfile,
    pub start: u8,
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{{{}}}:{}", self.profile.name, self.start, self.profile.mem_slices)
    }
}

/// Why a layout does not fit on one GPU.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LayoutError {
    #[error("{profile} cannot start at memory slice {start}; legal starts are {legal:?}")]
    IllegalStart { profile: &'static str, start: u8, legal: Vec<u8> },
    #[error("{profile} at memory slice {start} runs past the GPU's {slices} memory slices")]
    OutOfRange { profile: &'static str, start: u8, slices: u8 },
    #[error("{second} overlaps {first} on memory slices")]
    Overlap { first: Placement, second: Placement },
    #[error("instances use {total} GPCs; the GPU has {limit}")]
    TooManyGpcs { total: u32, limit: u8 },
    #[error("{count} instances; the GPU allows at most {limit}")]
    TooManyInstances { count: usize, limit: u8 },
}

#[cfg(test)]
mod tests {
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
                assert!(p.name.starts_with(&format!("{}g.", p.gpcs)), "{} {}", gpu.id, p.name);
                assert!(p.name.ends_with(&format!(".{}gb", p.mem_gb)), "{} {}", gpu.id, p.name);
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
        for gpu in catalogue() {
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
            assert!(gpu.validate(&more).is_err(), "{}", gpu.id);
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
        assert!(gpu.validate(&[place(gpu, "3g.40gb", 4), place(gpu, "1g.10gb", 6)]).is_err());
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
        assert!(gpu.validate(&[place(gpu, "4g.24gb", 0), place(gpu, "1g.6gb", 3)]).is_err());
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
}
