//! A GPU type from what NVML reports of a GPU (`parva catalogue --from-gpu`).

use super::*;
use super::build::{is_variant, leak_str};

/// One GPU-instance profile as NVML reports it (`nvmlDeviceGetGpuInstanceProfileInfoV` and
/// `nvmlDeviceGetGpuInstancePossiblePlacements`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NvmlProfile {
    /// GI profile id (`id`, e.g. 19).
    pub id: u32,
    /// `name` (`MIG 1g.10gb`).
    pub name: String,
    /// `sliceCount`: compute slices.
    pub slice_count: u32,
    /// `instanceCount`: instances at most.
    pub instance_count: u32,
    /// `multiprocessorCount`.
    pub multiprocessor_count: u32,
    /// `memorySizeMB`.
    pub memory_size_mb: u64,
    /// Possible placements, `(start, size)` in memory slices.
    pub placements: Vec<(u32, u32)>,
}

/// A GPU type from what NVML reports about a GPU: its product name, PCI device id and profiles
/// (in NVML's profile-index order). The type is named `id`; each profile's memory is NVML's exact
/// `memorySizeMB` (`mem_source = "nvml"`), its GB the name's (`1g.10gb`: 10; from `memorySizeMB`
/// when the name has none). Checked like a file (the same parser reads the text it makes), so
/// NVML output that breaks a rule is refused the same way.
pub fn from_nvml(id: &str, product: &str, pci_device_id: u32, profiles: &[NvmlProfile], origin: &str) -> Result<&'static GpuType, CatalogueError> {
    let ctx = Ctx { file: origin };
    let bad = |field: &str, m: String| ctx.err(0, field, CatalogueErrorKind::Invalid, m);
    let small = |v: u64, what: &str, name: &str| u8::try_from(v).ok().filter(|&x| x <= MAX_SLICES).ok_or_else(|| bad("gpu.profile", format!("{name}: {what} {v} is more than {MAX_SLICES}")));
    if profiles.is_empty() {
        return Err(bad("gpu.profile", format!("NVML reported no GPU-instance profile for `{product}`")));
    }
    let mut built: Vec<GiProfile> = Vec::new();
    let (mut gpcs, mut mem_slices, mut max_instances) = (0u8, 0u8, 0u8);
    for p in profiles {
        let name = p.name.trim().trim_start_matches("MIG ").to_string();
        let Some(&(_, size)) = p.placements.first() else {
            return Err(bad("gpu.profile.placements", format!("{name} (profile id {}): NVML reported no possible placement", p.id)));
        };
        if p.placements.iter().any(|&(_, s)| s != size) {
            return Err(bad("gpu.profile.placements", format!("{name}: placements of different sizes {:?}", p.placements)));
        }
        let mut starts: Vec<u8> = Vec::new();
        for &(start, size) in &p.placements {
            let end = small(start as u64 + size as u64, "placement end", &name)?;
            mem_slices = mem_slices.max(end);
            starts.push(start as u8);
        }
        starts.sort_unstable();
        starts.dedup();
        let pg = small(p.slice_count.into(), "slice count", &name)?;
        let count = small(p.instance_count.into(), "instance count", &name)?;
        gpcs = gpcs.max(pg);
        max_instances = max_instances.max(count);
        let mem_gb = name
            .split_once('.')
            .and_then(|(_, rest)| rest.split_once("gb"))
            .and_then(|(n, _)| n.parse::<u32>().ok())
            .unwrap_or_else(|| ((p.memory_size_mb as f64) / 1024.0).round() as u32);
        built.push(GiProfile {
            name: leak_str(name.clone()),
            id: p.id,
            gpcs: pg,
            mem_slices: small(size.into(), "placement size", &name)?,
            mem_gb,
            mem_mib: u32::try_from(p.memory_size_mb).map_err(|_| bad("gpu.profile.mem_mib", format!("{name}: {} MB", p.memory_size_mb)))?,
            mem_source: MemSource::Nvml,
            sms: u16::try_from(p.multiprocessor_count).map_err(|_| bad("gpu.profile.sms", format!("{name}: {} SMs", p.multiprocessor_count)))?,
            starts: Box::leak(starts.into_boxed_slice()),
            max_count: count,
            media_extensions: name.contains("+me"),
            variant: is_variant(&name),
        });
    }
    let ty = GpuType {
        id: leak_str(id.to_string()),
        products: Box::leak(vec![GpuProduct { name: leak_str(product.to_string()), pci_device_id }].into_boxed_slice()),
        gpcs,
        mem_slices,
        max_instances,
        profiles: Box::leak(built.into_boxed_slice()),
        placements_source: PlacementSource::Nvml,
        source: Some(leak_str(format!("read from NVML: {origin}"))),
        origin: leak_str(origin.to_string()),
        partition: Partition::Mig,
    };
    let mut types = parse(&to_text(&[&ty], ""), origin)?;
    types.pop().ok_or_else(|| bad("gpu", "no type".into()))
}

/// A type id from a product name: `NVIDIA B200` -> `b200`, `NVIDIA H100 80GB HBM3` ->
/// `h100-80gb-hbm3`.
pub fn id_from_product(name: &str) -> String {
    let name = name.trim();
    let name = name.strip_prefix("NVIDIA ").unwrap_or(name);
    let mut id = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '.' {
            id.push(c.to_ascii_lowercase());
        } else if !id.ends_with('-') && !id.is_empty() {
            id.push('-');
        }
    }
    let id: String = id.trim_end_matches('-').chars().take(64).collect();
    if id.is_empty() { "gpu".into() } else { id }
}

