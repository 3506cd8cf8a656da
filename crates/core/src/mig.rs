//! MIG geometry as data: the catalogue of GPU types, their GPU-instance (GI) profiles with legal
//! placement starts, how a physical GPU is recognised as one of them, and a layout validator.
//!
//! A GPU has 7 compute slices (GPCs) and 8 memory slices (A30: 4 and 4). A GPU instance takes a
//! number of GPCs and a contiguous range of memory slices that begins at one of its profile's
//! legal starts. Placements are written `{start}:size` in memory slices, as NVML reports them. A
//! layout is valid when every start is legal for its profile, no two memory ranges overlap, the
//! GPCs add up to at most the GPU's, there are no more instances than the GPU allows, and at most
//! one instance has the GPU's media extensions (`+me` profiles: the GPU has one set of JPEG/OFA
//! engines, so `nvidia-smi mig -lgip` lists each `+me` profile with `1/1` instances).
//!
//! A physical GPU is recognised by its PCI device id (NVML `nvmlPciInfo_t.pciDeviceId`, e.g.
//! `0x20B210DE`: device id << 16 | vendor 0x10DE; the form NVIDIA's mig-parted uses in its
//! configs' `device-filter`) or by its exact product name (NVML `nvmlDeviceGetName`), never by a
//! substring: an `NVIDIA GH200 480GB` is not an H200. Anything else is refused, naming what was seen.
//!
//! The types are data: catalogue files (format in [`crate::catalogue`]). The built-in ones are
//! `crates/core/src/catalogue/*.toml`, compiled in and read by the same parser as a user's file
//! (`--catalogue FILE`, `PARVA_CATALOGUE`) or one read from a GPU (`parva catalogue --from-gpu`);
//! [`register`] makes a file's types known to every lookup of the process.
//!
//! Sources of the built-in files (each file's `source` names its own):
//! - [mig-parted]: NVIDIA mig-parted `deployments/systemd/config-default.yaml` (device-filter ids
//!   per GPU family, and the `+me` profiles with one instance each).
//! - [driver-560]: the supported-GPU table (product name | PCI device id) of NVIDIA's
//!   open-gpu-kernel-modules README, driver 560.31.02.
//! - [pci.ids]: the PCI ID repository (Debian `pci.ids` 2023.04.10), for ids the driver table lacks.
//! - [mig-guide]: NVIDIA's MIG user guide, "Supported MIG Profiles" (profiles, `+me` counts) and its
//!   `nvidia-smi mig -lgipp` outputs (A100/H100: profile 20 `{0..6}:1` beside profile 19).
//! - [lgip]: published `nvidia-smi mig -lgip` outputs: A30 (driver 535.183.01: ids 14/21/5/6/0,
//!   `-lgipp` 21 `{0,1,2,3}:1`, 6 `{0,2}:2`), H100 PCIe (driver 570.169: SMs 14/14/14/30/46/62/114),
//!   H100 NVL, H200 (mig-parted issue 120) and GH200 (mig-parted PR 139).

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
    /// Memory in GB, as in the profile name (a rounded fraction of the GPU, often more than the
    /// instance has: never used for a fit check).
    pub mem_gb: u32,
    /// The instance's memory in MiB, as NVIDIA reports it (NVML's `memorySizeMB`, or the smallest
    /// published `nvidia-smi mig -lgip` figure), or by [`assumed_mem_mib`] where neither is known
    /// (`mem_source` says which). Every memory fit check uses this.
    pub mem_mib: u32,
    pub mem_source: MemSource,
    /// Streaming multiprocessors of the instance.
    pub sms: u16,
    /// Legal placement starts, in memory slices.
    pub starts: &'static [u8],
    /// Instances of this profile one GPU holds at most (NVML's `instanceCount`).
    pub max_count: u8,
    /// A `+me` or `+me.all` profile: same geometry as its base profile plus the GPU's media
    /// extensions (JPEG, OFA). At most one such instance per GPU.
    pub media_extensions: bool,
    /// A variant of a base profile (`+me`, `+me.all`, `+gfx`, `-me`): the same compute and memory
    /// with other engines. Placed and validated, never chosen by a planner.
    pub variant: bool,
}

/// Where a profile's memory figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemSource {
    /// NVML's `memorySizeMB`, read from a GPU (`parva catalogue --from-gpu`).
    Nvml,
    /// NVIDIA's published figures (`nvidia-smi mig -lgip` outputs; the smallest across drivers).
    Published,
    /// No figure known: [`assumed_mem_mib`], a conservative rule.
    Assumed,
}

impl MemSource {
    pub fn as_str(self) -> &'static str {
        match self {
            MemSource::Nvml => "nvml",
            MemSource::Published => "published",
            MemSource::Assumed => "assumed",
        }
    }
}

/// The memory parva assumes for a profile NVIDIA publishes no figure for: the name's GB at
/// [`MIB_PER_GB`], times 0.919 for a profile of at most an eighth of the GPU's memory, 0.93 for at
/// most a quarter, 1 above. The factors are the smallest ratios of NVIDIA's figure to the
/// name's seen on any published GPU (H100 NVL's 1g.12gb: 10,880 MiB of a name-derived 11,827;
/// its 1g.24gb: 22,016 of 23,654; half a GPU or more was never below its name), so the rule does
/// not overstate a profile like those. A GPU read with `parva catalogue --from-gpu` has NVML's
/// exact figure instead.
pub fn assumed_mem_mib(mem_gb: u32, mem_slices: u8, gpu_mem_slices: u8) -> u32 {
    let fraction = f64::from(mem_slices) / f64::from(gpu_mem_slices.max(1));
    let factor = if fraction <= 0.125 { 0.919 } else if fraction <= 0.25 { 0.93 } else { 1.0 };
    (f64::from(mem_gb) * MIB_PER_GB * factor).floor() as u32
}

impl GiProfile {
    /// The instance's memory in MiB (see [`GiProfile::mem_mib`](#structfield.mem_mib)).
    pub fn mem_mib(&self) -> f64 {
        f64::from(self.mem_mib)
    }

    /// The same profile in every field but its memory figure (which depends on the driver and
    /// on where it was read: NVML on one machine, the smallest published figure in the catalogue).
    pub fn same_geometry(&self, other: &GiProfile) -> bool {
        GiProfile { mem_mib: other.mem_mib, mem_source: other.mem_source, ..*self } == *other
    }

    /// Bit mask of the memory slices this profile occupies when placed at `start` (slices past
    /// the 16th are dropped: callers check the start against the GPU first).
    pub fn mask_at(&self, start: u8) -> u16 {
        slice_mask(start, self.mem_slices)
    }
}

/// MiB per GB of a profile name, before [`assumed_mem_mib`]'s factor (`1g.10gb` at 985.6 is
/// 9,856 MiB, what NVML reports for it on an A100-80GB with recent drivers).
pub const MIB_PER_GB: f64 = 985.6;

/// Bit mask of `size` memory slices from `start` (a placement `{start}:size` as NVML reports
/// it); never panics, slices past the 16th are dropped.
pub fn slice_mask(start: u8, size: u8) -> u16 {
    let width = 1u32.checked_shl(size.into()).map_or(u32::MAX, |b| b - 1);
    width.checked_shl(start.into()).unwrap_or(0) as u16
}

/// One product (board) of a GPU type, as NVML reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuProduct {
    /// Exact product name (`nvmlDeviceGetName`, e.g. `NVIDIA A100-SXM4-80GB`).
    pub name: &'static str,
    /// PCI device id as NVML reports it (`pciDeviceId`: device id << 16 | vendor id 0x10DE).
    pub pci_device_id: u32,
}

/// A GPU type of the catalogue: one MIG geometry (profiles, SM counts), and the products that have it.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuType {
    /// Identifier used on the command line and in files, e.g. `a100-80gb`.
    pub id: &'static str,
    /// The products recognised as this type, by PCI device id or exact product name.
    pub products: &'static [GpuProduct],
    pub gpcs: u8,
    pub mem_slices: u8,
    pub max_instances: u8,
    pub profiles: &'static [GiProfile],
    /// Where the placements come from (NVML, published, assumed from a sibling GPU).
    pub placements_source: PlacementSource,
    /// Where the numbers come from, as the catalogue file says.
    pub source: Option<&'static str>,
    /// The catalogue file the type was read from (`built-in:<file>`, a path, or `nvml:GPU <n>`).
    pub origin: &'static str,
    /// How the GPU is cut into segments: MIG instances, or MPS shares of a whole GPU.
    pub partition: Partition,
}

/// How a GPU type is cut into segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partition {
    /// MIG GPU instances of whole GPCs at legal placements (the profiles are NVIDIA's).
    Mig,
    /// MPS shares of the whole GPU's SMs (`CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`), in steps of
    /// [`MPS_SHARE_STEP`] percent, with memory capped in proportion
    /// (`CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`). The type's "GPCs" are [`MPS_SHARE_UNITS`] share units
    /// and its profiles (`mps-20` = 20 %, ...) are generated; any set of shares summing to at
    /// most 100 % fits, at most `max_instances` of them (gpu-let's "gpu-lets").
    Mps,
}

/// The slowdown assumed for an MPS share beside other shares of its GPU when no measurement says
/// otherwise (`--interference`): 20 %. Shares split the SMs but not memory bandwidth or L2; the
/// worst pair measured on an H200 (resnet50 at 30 % beside resnet50 at 70 %,
/// `reports/gpu/nvidia-h200-2026-11-26/mps-pairs.md`) took 1.21x as long as alone.
pub const DEFAULT_MPS_INTERFERENCE: f64 = 0.20;

/// The id suffix of a MIG GPU's MPS type used with MIG off (`h100-80gb-nomig`).
pub const NOMIG_SUFFIX: &str = "-nomig";

/// Percent of a GPU's SMs one MPS share unit stands for.
pub const MPS_SHARE_STEP: u8 = 10;
/// Share units of a whole MPS GPU (100 % / [`MPS_SHARE_STEP`]).
pub const MPS_SHARE_UNITS: u8 = 100 / MPS_SHARE_STEP;

impl Partition {
    pub fn as_str(self) -> &'static str {
        match self {
            Partition::Mig => "mig",
            Partition::Mps => "mps",
        }
    }
}

/// Where a type's placements come from. `validate` warns on `Assumed` placements: read the GPU's
/// own with `parva catalogue --from-gpu` before trusting them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacementSource {
    /// Read from the GPU through NVML (`nvmlDeviceGetGpuInstancePossiblePlacements`).
    Nvml,
    /// Published by NVIDIA (`nvidia-smi mig -lgipp` in the MIG user guide or a vendor's output).
    Published,
    /// Not published: taken from a GPU of the same family.
    Assumed,
}

impl PlacementSource {
    pub fn as_str(self) -> &'static str {
        match self {
            PlacementSource::Nvml => "nvml",
            PlacementSource::Published => "published",
            PlacementSource::Assumed => "assumed",
        }
    }
}

/// The built-in catalogue files (`crates/core/src/catalogue/`), read by the same parser as a user's.
const BUILT_IN: &[(&str, &str)] = &[
    ("a100-40gb.toml", include_str!("catalogue/a100-40gb.toml")),
    ("a100-80gb.toml", include_str!("catalogue/a100-80gb.toml")),
    ("h100-80gb.toml", include_str!("catalogue/h100-80gb.toml")),
    ("h100-94gb.toml", include_str!("catalogue/h100-94gb.toml")),
    ("h200-141gb.toml", include_str!("catalogue/h200-141gb.toml")),
    ("a30-24gb.toml", include_str!("catalogue/a30-24gb.toml")),
    ("h100-pcie-80gb.toml", include_str!("catalogue/h100-pcie-80gb.toml")),
    ("a800-40gb.toml", include_str!("catalogue/a800-40gb.toml")),
    ("a800-80gb.toml", include_str!("catalogue/a800-80gb.toml")),
    ("h800-80gb.toml", include_str!("catalogue/h800-80gb.toml")),
    ("h800-pcie-80gb.toml", include_str!("catalogue/h800-pcie-80gb.toml")),
    ("b200-180gb.toml", include_str!("catalogue/b200-180gb.toml")),
    ("gh200-144gb.toml", include_str!("catalogue/gh200-144gb.toml")),
    ("gh200-96gb.toml", include_str!("catalogue/gh200-96gb.toml")),
    ("h100-96gb.toml", include_str!("catalogue/h100-96gb.toml")),
    ("h20-96gb.toml", include_str!("catalogue/h20-96gb.toml")),
    ("gb200-186gb.toml", include_str!("catalogue/gb200-186gb.toml")),
    ("b300-269gb.toml", include_str!("catalogue/b300-269gb.toml")),
    ("gb300-278gb.toml", include_str!("catalogue/gb300-278gb.toml")),
    ("rtx-pro-6000-96gb.toml", include_str!("catalogue/rtx-pro-6000-96gb.toml")),
    ("mps.toml", include_str!("catalogue/mps.toml")),
];

fn built_in() -> &'static [&'static GpuType] {
    static TYPES: std::sync::OnceLock<Vec<&'static GpuType>> = std::sync::OnceLock::new();
    TYPES.get_or_init(|| {
        BUILT_IN
            .iter()
            .flat_map(|(name, text)| {
                // The files are part of the source; a test parses every one of them.
                crate::catalogue::parse(text, &format!("built-in:{name}")).unwrap_or_else(|e| panic!("built-in catalogue: {e}"))
            })
            .collect()
    })
}

/// Types registered in this process from catalogue files or read from a GPU (see [`register`]).
static REGISTERED: std::sync::RwLock<Vec<&'static GpuType>> = std::sync::RwLock::new(Vec::new());

/// All GPU types parva knows in this process: the built-in ones, then the registered ones.
pub fn catalogue() -> Vec<&'static GpuType> {
    let mut all = built_in().to_vec();
    all.extend(REGISTERED.read().unwrap_or_else(|e| e.into_inner()).iter().copied());
    all
}

/// A type that cannot be registered beside the ones already known.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegisterError {
    #[error("GPU type `{id}` from {origin} is already defined by {other}, with another MIG geometry")]
    DuplicateId { id: String, origin: String, other: String },
    #[error("GPU type `{id}` from {origin}: product `{name}` ({}) is already `{other}`'s", pci_id_text(*pci_device_id))]
    DuplicateProduct { id: String, origin: String, name: String, pci_device_id: u32, other: String },
}

/// Make `types` known to every lookup of this process ([`GpuType::by_id`], [`GpuType::identify`],
/// [`catalogue`]). A type whose id is already known with another MIG geometry, or whose product
/// (PCI device id) is already another type's, is refused; one with a known id and the same
/// geometry is taken as that type (the same file read twice, a GPU's reading of a built-in type).
pub fn register(types: &[&'static GpuType]) -> Result<(), RegisterError> {
    let mut reg = REGISTERED.write().unwrap_or_else(|e| e.into_inner());
    for &t in types {
        let known: Vec<&'static GpuType> = built_in().iter().copied().chain(reg.iter().copied()).collect();
        if let Some(other) = known.iter().find(|o| o.id == t.id) {
            // The same file read twice, or a GPU's own reading of a built-in type.
            if other.same_mig_geometry(t) {
                continue;
            }
            return Err(RegisterError::DuplicateId { id: t.id.into(), origin: t.origin.into(), other: other.origin.into() });
        }
        for p in t.products {
            if let Some(other) = known.iter().find(|o| o.products.iter().any(|q| q.pci_device_id == p.pci_device_id)) {
                return Err(RegisterError::DuplicateProduct {
                    id: t.id.into(),
                    origin: t.origin.into(),
                    name: p.name.into(),
                    pci_device_id: p.pci_device_id,
                    other: other.id.into(),
                });
            }
        }
        reg.push(t);
    }
    Ok(())
}

/// The GPU type named `id` was not found in the catalogue.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown GPU type `{id}`; known types: {known}")]
pub struct UnknownGpuType {
    pub id: String,
    pub known: String,
}

/// `0x20B210DE`, as mig-parted's `device-filter` and `nvidia-smi -q` write a PCI device id.
pub fn pci_id_text(pci_device_id: u32) -> String {
    format!("{pci_device_id:#010X}").replacen("0X", "0x", 1)
}

fn known_products() -> String {
    catalogue()
        .iter()
        .map(|g| {
            let products: Vec<String> =
                g.products.iter().map(|p| format!("{} {}", p.name, pci_id_text(p.pci_device_id))).collect();
            format!("{} ({})", g.id, products.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A physical GPU that is not (unambiguously) one of the catalogue's types.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UnknownGpu {
    #[error(
        "GPU `{name}` (PCI device id {}) is not a GPU type parva knows (products are matched by PCI \
         device id or exact name); known: {known}",
        pci_device_id.map_or_else(|| "not reported".to_string(), pci_id_text)
    )]
    Unknown { name: String, pci_device_id: Option<u32>, known: String },
    #[error(
        "GPU `{name}` (PCI device id {}): the PCI device id is a {by_id} but the name is a {by_name}; refusing to guess",
        pci_id_text(*pci_device_id)
    )]
    Conflict { name: String, pci_device_id: u32, by_id: &'static str, by_name: &'static str },
}

impl GpuType {
    /// Look a GPU type up by its id (`a100-80gb`, ...), case-insensitively.
    pub fn by_id(id: &str) -> Result<&'static GpuType, UnknownGpuType> {
        let all = catalogue();
        all.iter().copied().find(|g| g.id.eq_ignore_ascii_case(id.trim())).ok_or_else(|| UnknownGpuType {
            id: id.to_string(),
            known: all.iter().map(|g| g.id).collect::<Vec<_>>().join(", "),
        })
    }

    /// The GPU type of the product with this PCI device id (`0x20B210DE`), if any.
    pub fn by_pci_device_id(pci_device_id: u32) -> Option<&'static GpuType> {
        catalogue().into_iter().find(|g| g.products.iter().any(|p| p.pci_device_id == pci_device_id))
    }

    /// The GPU type of the product with exactly this name (e.g. `NVIDIA A100-SXM4-80GB`; the
    /// `NVIDIA ` prefix, which older drivers leave out, is optional; surrounding blanks are
    /// ignored). Never a substring match: `NVIDIA GH200 480GB` is not an `NVIDIA H200`.
    pub fn by_product_name(name: &str) -> Option<&'static GpuType> {
        let bare = |n: &str| {
            let n = n.trim();
            n.strip_prefix("NVIDIA ").unwrap_or(n).trim_start().to_string()
        };
        let want = bare(name);
        catalogue().into_iter().find(|g| g.products.iter().any(|p| bare(p.name) == want))
    }

    /// Recognise a physical GPU from what NVML reports: its PCI device id when it is one of the
    /// catalogue's, else its exact product name. A GPU whose id and name point at two different
    /// types, or at none, is refused, with what was seen and the products parva knows.
    pub fn identify(name: &str, pci_device_id: Option<u32>) -> Result<&'static GpuType, UnknownGpu> {
        let by_id = pci_device_id.and_then(Self::by_pci_device_id);
        let by_name = Self::by_product_name(name);
        let seen = || (name.to_string(), pci_device_id);
        match (by_id, by_name) {
            (Some(a), Some(b)) if a.id != b.id => {
                let (name, pci_device_id) = seen();
                Err(UnknownGpu::Conflict { name, pci_device_id: pci_device_id.unwrap_or(0), by_id: a.id, by_name: b.id })
            }
            (Some(t), _) | (None, Some(t)) => Ok(t),
            (None, None) => {
                let (name, pci_device_id) = seen();
                Err(UnknownGpu::Unknown { name, pci_device_id, known: known_products() })
            }
        }
    }

    /// Whether segments of this type are MPS shares (no MIG).
    pub fn is_mps(&self) -> bool {
        self.partition == Partition::Mps
    }

    /// The MIG type this MPS type is the GPU of, used with MIG off (`h100-80gb` for
    /// `h100-80gb-nomig`): NVML names such a GPU as its MIG type. None for other types.
    pub fn mig_sibling(&self) -> Option<&'static GpuType> {
        let id = self.id.strip_suffix(NOMIG_SUFFIX).filter(|_| self.is_mps())?;
        GpuType::by_id(id).ok().filter(|t| !t.is_mps())
    }

    /// The MPS type of this MIG type's GPU used with MIG off (`h100-80gb-nomig`), if catalogued.
    pub fn nomig(&self) -> Option<&'static GpuType> {
        GpuType::by_id(&format!("{}{NOMIG_SUFFIX}", self.id)).ok().filter(|t| t.is_mps() && !self.is_mps())
    }

    /// The percent of the GPU's SMs an instance of `size` (GPCs, or share units) gets.
    pub fn share_percent(&self, size: u8) -> u32 {
        (size as u32 * 100 + self.gpcs as u32 / 2) / self.gpcs.max(1) as u32
    }

    /// How this type names a segment's size: `3g` (GPCs) or `30%` (MPS share).
    pub fn size_label(&self, size: u8) -> String {
        match self.partition {
            Partition::Mig => format!("{size}g"),
            Partition::Mps => format!("{}%", self.share_percent(size)),
        }
    }

    /// The same type allowing at most `n` segments per GPU (`--max-shares`); `self` when `n` is
    /// not smaller than its own limit. Each profile's count is capped too.
    pub fn with_max_instances(&'static self, n: u8) -> &'static GpuType {
        if n == 0 || n >= self.max_instances {
            return self;
        }
        let profiles: Vec<GiProfile> = self.profiles.iter().map(|p| GiProfile { max_count: p.max_count.min(n), ..*p }).collect();
        Box::leak(Box::new(GpuType { max_instances: n, profiles: Box::leak(profiles.into_boxed_slice()), ..self.clone() }))
    }

    /// Instance sizes (GPC counts) a planner may use, ascending: 1, 2, 3, 4, 7 (A30: 1, 2, 4).
    pub fn sizes(&self) -> Vec<u8> {
        let mut sizes: Vec<u8> = self.profiles.iter().map(|p| p.gpcs).collect();
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    }

    /// The profile a planner uses for an instance of `gpcs` compute slices: the one with the
    /// fewest memory slices (so `1g.10gb`, not `1g.20gb`, on A100-80GB), never a media-extension
    /// (`+me`) profile.
    pub fn profile_for_size(&self, gpcs: u8) -> Option<&'static GiProfile> {
        self.profiles.iter().filter(|p| p.gpcs == gpcs && !p.variant).min_by_key(|p| p.mem_slices)
    }

    pub fn profile_by_name(&self, name: &str) -> Option<&'static GiProfile> {
        let name = name.trim().trim_start_matches("MIG ");
        self.profiles.iter().find(|p| p.name.eq_ignore_ascii_case(name))
    }

    pub fn profile_by_id(&self, id: u32) -> Option<&'static GiProfile> {
        self.profiles.iter().find(|p| p.id == id)
    }

    /// Same geometry and products (the origin and source text aside).
    pub fn same_geometry(&self, other: &GpuType) -> bool {
        (self.id, self.products) == (other.id, other.products) && self.same_mig_geometry(other)
    }

    /// The same MIG geometry (GPCs, memory slices, instances, and the same profiles by id, in any
    /// order: NVML lists them by profile index, catalogue files by size), whatever the types' ids
    /// and products.
    pub fn same_mig_geometry(&self, other: &GpuType) -> bool {
        (self.partition, self.gpcs, self.mem_slices, self.max_instances, self.profiles.len())
            == (other.partition, other.gpcs, other.mem_slices, other.max_instances, other.profiles.len())
            && self.profiles.iter().all(|p| other.profile_by_id(p.id).is_some_and(|o| o.same_geometry(p)))
    }

    fn full_mask(&self) -> u16 {
        slice_mask(0, self.mem_slices)
    }

    /// Check that `layout` fits on one GPU of this type.
    pub fn validate(&self, layout: &[Placement]) -> Result<(), LayoutError> {
        if self.is_mps() {
            let units: u32 = layout.iter().map(|p| u32::from(p.profile.gpcs)).sum();
            if units > u32::from(self.gpcs) {
                return Err(LayoutError::SharesOver100 { percent: units * u32::from(MPS_SHARE_STEP) });
            }
        }
        if layout.len() > self.max_instances as usize {
            return Err(LayoutError::TooManyInstances { count: layout.len(), limit: self.max_instances });
        }
        let mut used: Vec<(u16, &Placement)> = Vec::with_capacity(layout.len());
        let mut gpcs = 0u32;
        let mut media: Option<&Placement> = None;
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
            if p.start as u32 + profile.mem_slices as u32 > self.mem_slices as u32 {
                return Err(LayoutError::OutOfRange { profile: profile.name, start: p.start, slices: self.mem_slices });
            }
            if let Some((_, other)) = used.iter().find(|(m, _)| m & mask != 0) {
                return Err(LayoutError::Overlap { first: **other, second: *p });
            }
            if profile.media_extensions {
                if let Some(first) = media {
                    return Err(LayoutError::MediaExtensionsTaken { first: *first, second: *p });
                }
                media = Some(p);
            }
            let same = used.iter().filter(|(_, q)| q.profile == profile).count();
            if same >= profile.max_count as usize {
                return Err(LayoutError::TooManyOfProfile { profile: profile.name, limit: profile.max_count });
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
                if !self.fits(mask, gpcs, current.len(), profile, start) || !below_max_count(current, profile) {
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
                .any(|p| below_max_count(current, p) && p.starts.iter().any(|&s| self.fits(mask, gpcs, current.len(), p, s)));
            if !can_grow && !current.is_empty() {
                out.push(current.clone());
            }
        }
    }

    /// Whether `profile` at `start` fits beside instances taking `mask`, `gpcs` and `count`.
    /// The planner's layouts never hold a `+me` profile; [`Self::free_starts`] checks that rule.
    fn fits(&self, mask: u16, gpcs: u8, count: usize, profile: &GiProfile, start: u8) -> bool {
        let m = profile.mask_at(start);
        m & mask == 0
            && m & !self.full_mask() == 0
            && gpcs as u32 + profile.gpcs as u32 <= self.gpcs as u32
            && count < self.max_instances as usize
    }

    /// Legal starts for `profile` that are free on a GPU whose current layout is `layout`
    /// (every rule of [`Self::validate`], the one media-extension instance included).
    pub fn free_starts(&self, layout: &[Placement], profile: &GiProfile) -> Vec<u8> {
        if profile.media_extensions && layout.iter().any(|p| p.profile.media_extensions) {
            return Vec::new();
        }
        let mask = layout.iter().fold(0u16, |m, p| m | p.profile.mask_at(p.start));
        let gpcs = layout.iter().map(|p| p.profile.gpcs as u32).sum::<u32>().min(u8::MAX as u32) as u8;
        if layout.iter().filter(|p| p.profile == profile).count() >= profile.max_count as usize {
            return Vec::new();
        }
        profile.starts.iter().copied().filter(|&s| self.fits(mask, gpcs, layout.len(), profile, s)).collect()
    }
}

/// Whether `layout` holds fewer instances of `profile` than its `max_count`.
fn below_max_count(layout: &[Placement], profile: &GiProfile) -> bool {
    layout.iter().filter(|p| p.profile == profile).count() < profile.max_count as usize
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
    #[error("more than {limit} instances of {profile}, the most the GPU holds")]
    TooManyOfProfile { profile: &'static str, limit: u8 },
    #[error("{second} needs the GPU's media extensions, but {first} has them (one per GPU)")]
    MediaExtensionsTaken { first: Placement, second: Placement },
    #[error("MPS shares sum to {percent} % of the GPU's SMs; at most 100 %")]
    SharesOver100 { percent: u32 },
}

#[cfg(test)]
#[path = "mig_tests.rs"]
mod tests;
