//! Checked GPU types from a file's tables: MIG types (profiles, placements, memory) and MPS types
//! (share profiles).

use super::*;
use super::lexer::{Fields, GpuTables};

pub(super) fn leak_str(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

pub(super) fn build(ctx: &Ctx, t: &GpuTables, origin: &'static str) -> Result<GpuType, CatalogueError> {
    use CatalogueErrorKind as K;
    let keys = ["id", "partition", "gpcs", "mem_slices", "max_instances", "placements_source", "source", "sms", "mem_gb", "mem_mib"];
    let g = Fields::new(ctx, &t.gpu, "gpu", &keys)?;
    let id = g.text("id")?;
    if id.len() > 64 || !id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.') {
        return Err(ctx.err(g.line("id"), "gpu.id", K::Invalid, format!("`{id}`: an id is lowercase letters, digits, `-` and `.`, at most 64")));
    }
    match g.opt_text("partition")?.as_deref() {
        None | Some("mig") => {}
        Some("mps") => return build_mps(ctx, t, &g, id, origin),
        Some(other) => {
            return Err(ctx.err(g.line("partition"), "gpu.partition", K::Invalid, format!("`{other}`: one of \"mig\" (the default), \"mps\"")));
        }
    }
    for key in ["sms", "mem_gb", "mem_mib"] {
        if g.get(key).is_some() {
            return Err(ctx.err(g.line(key), &g.field(key), K::UnknownKey, "only an MPS type (partition = \"mps\") has it; a MIG type gives them per [[gpu.profile]]"));
        }
    }
    let gpcs = g.int("gpcs", 1, MAX_SLICES as u64)? as u8;
    let mem_slices = g.int("mem_slices", 1, MAX_SLICES as u64)? as u8;
    let max_instances = g.int("max_instances", 1, MAX_SLICES as u64)? as u8;
    let placements_source = match g.text("placements_source")?.as_str() {
        "nvml" => PlacementSource::Nvml,
        "published" => PlacementSource::Published,
        "assumed" => PlacementSource::Assumed,
        other => {
            return Err(ctx.err(g.line("placements_source"), "gpu.placements_source", K::Invalid, format!("`{other}`: one of \"nvml\", \"published\", \"assumed\"")));
        }
    };
    let source = g.opt_text("source")?.map(leak_str);
    let products = build_products(ctx, t)?;
    if products.is_empty() {
        return Err(ctx.err(t.gpu.line, "gpu.product", K::Missing, format!("`{id}` has no [[gpu.product]] (how a GPU is recognised as it)")));
    }
    build_mig(ctx, t, MigHeader { id, gpcs, mem_slices, max_instances, placements_source, source, products, origin })
}

/// A MIG type's `[[gpu]]` keys and products, checked, before its profiles are.
struct MigHeader {
    id: String,
    gpcs: u8,
    mem_slices: u8,
    max_instances: u8,
    placements_source: PlacementSource,
    source: Option<&'static str>,
    products: Vec<GpuProduct>,
    origin: &'static str,
}

pub(super) fn build_products(ctx: &Ctx, t: &GpuTables) -> Result<Vec<GpuProduct>, CatalogueError> {
    use CatalogueErrorKind as K;
    let mut products: Vec<GpuProduct> = Vec::new();
    for pt in &t.products {
        let p = Fields::new(ctx, pt, "gpu.product", &["name", "pci_device_id"])?;
        let name = p.text("name")?;
        let pci = p.int("pci_device_id", 0, u32::MAX as u64)? as u32;
        if products.iter().any(|o| o.name == name && o.pci_device_id == pci) {
            return Err(ctx.err(pt.line, "gpu.product", K::Overlap, format!("`{name}` {} is listed twice", crate::mig::pci_id_text(pci))));
        }
        products.push(GpuProduct { name: leak_str(name), pci_device_id: pci });
    }
    Ok(products)
}

/// An MPS type (`partition = "mps"`): the whole GPU's `sms` and `mem_gb`, at most
/// `max_instances` shares (default [`MPS_SHARE_UNITS`]); its share profiles are generated. It may
/// have no product: a MIG GPU used without MIG (`h100-80gb-nomig`) is recognised as its MIG type.
pub(super) fn build_mps(ctx: &Ctx, t: &GpuTables, g: &Fields, id: String, origin: &'static str) -> Result<GpuType, CatalogueError> {
    use CatalogueErrorKind as K;
    for key in ["gpcs", "mem_slices", "placements_source"] {
        if g.get(key).is_some() {
            return Err(ctx.err(g.line(key), &g.field(key), K::UnknownKey, format!("an MPS type has no `{key}`: its shares are {MPS_SHARE_STEP} % steps of the whole GPU")));
        }
    }
    if let Some(p) = t.profiles.first() {
        return Err(ctx.err(p.line, "gpu.profile", K::UnknownKey, "an MPS type has no [[gpu.profile]]: its share profiles (mps-10 .. mps-100) are generated"));
    }
    let sms = g.int("sms", 1, u16::MAX as u64)? as u16;
    let mem_gb = g.int("mem_gb", 1, 1 << 20)? as u32;
    let whole = match g.get("mem_mib") {
        Some(_) => (g.int("mem_mib", 1, u32::MAX as u64)? as u32, MemSource::Published),
        None => ((f64::from(mem_gb) * DECIMAL_GB_MIB).floor() as u32, MemSource::Assumed),
    };
    let max_instances = if g.get("max_instances").is_some() { g.int("max_instances", 1, MPS_SHARE_UNITS as u64)? as u8 } else { MPS_SHARE_UNITS };
    let source = g.opt_text("source")?.map(leak_str);
    let products = build_products(ctx, t)?;
    let profiles: Vec<GiProfile> = (1..=MPS_SHARE_UNITS).map(|u| mps_profile(u, sms, mem_gb, whole, max_instances)).collect();
    Ok(GpuType {
        id: leak_str(id),
        products: Box::leak(products.into_boxed_slice()),
        gpcs: MPS_SHARE_UNITS,
        mem_slices: MPS_SHARE_UNITS,
        max_instances,
        profiles: Box::leak(profiles.into_boxed_slice()),
        placements_source: PlacementSource::Published,
        source,
        origin,
        partition: Partition::Mps,
    })
}

/// MiB in a data sheet's decimal GB (10^9 bytes).
pub(super) const DECIMAL_GB_MIB: f64 = 1e9 / 1048576.0;

/// The share profile of `units` share units: `mps-<percent>`, that fraction of the SMs and of the
/// memory (rounded down, at least 1), at any start where it fits. The share's memory is what
/// `parva deploy` pins for it (CUDA_MPS_PINNED_DEVICE_MEM_LIMIT).
pub(super) fn mps_profile(units: u8, sms: u16, mem_gb: u32, whole: (u32, MemSource), max_instances: u8) -> GiProfile {
    let pct = units as u32 * MPS_SHARE_STEP as u32;
    let starts: Vec<u8> = (0..=MPS_SHARE_UNITS - units).collect();
    GiProfile {
        name: leak_str(format!("mps-{pct}")),
        id: 1000 + pct,
        gpcs: units,
        mem_slices: units,
        mem_gb: (mem_gb * units as u32 / MPS_SHARE_UNITS as u32).max(1),
        mem_mib: ((u64::from(whole.0) * u64::from(units) / u64::from(MPS_SHARE_UNITS)) as u32).max(1),
        mem_source: whole.1,
        variant: false,
        sms: ((sms as u32 * units as u32 / MPS_SHARE_UNITS as u32).max(1)) as u16,
        starts: Box::leak(starts.into_boxed_slice()),
        max_count: (MPS_SHARE_UNITS / units).min(max_instances),
        media_extensions: false,
    }
}

fn build_mig(ctx: &Ctx, t: &GpuTables, h: MigHeader) -> Result<GpuType, CatalogueError> {
    use CatalogueErrorKind as K;
    let MigHeader { id, gpcs, mem_slices, max_instances, placements_source, source, products, origin } = h;
    let mut profiles: Vec<GiProfile> = Vec::new();
    let mut lines: Vec<usize> = Vec::new();
    for pt in &t.profiles {
        let p = Fields::new(ctx, pt, "gpu.profile", &["id", "name", "gpcs", "mem_slices", "mem_gb", "mem_mib", "mem_source", "sms", "max_count", "placements", "media_extensions"])?;
        let pid = p.int("id", 0, u32::MAX as u64)? as u32;
        let name = p.text("name")?;
        let name = name.trim().trim_start_matches("MIG ").to_string();
        if name.chars().any(char::is_whitespace) {
            return Err(ctx.err(p.line("name"), "gpu.profile.name", K::Invalid, format!("`{name}`: a profile name has no blanks")));
        }
        let pg = p.int("gpcs", 1, MAX_SLICES as u64)? as u8;
        if pg > gpcs {
            return Err(ctx.err(p.line("gpcs"), "gpu.profile.gpcs", K::Invalid, format!("{name}: {pg} GPCs, more than the GPU's {gpcs}")));
        }
        let ms = p.int("mem_slices", 1, MAX_SLICES as u64)? as u8;
        if ms > mem_slices {
            return Err(ctx.err(p.line("mem_slices"), "gpu.profile.mem_slices", K::Invalid, format!("{name}: {ms} memory slices, more than the GPU's {mem_slices}")));
        }
        let mem_gb = p.int("mem_gb", 1, 1 << 20)? as u32;
        let (mem_mib, mem_source) = profile_memory(ctx, &p, &name, mem_gb, ms, mem_slices)?;
        let sms = p.int("sms", 1, u16::MAX as u64)? as u16;
        let max_count = p.int("max_count", 1, max_instances as u64)? as u8;
        let (starts, pl) = p.ints("placements")?;
        if starts.is_empty() {
            return Err(ctx.err(pl, "gpu.profile.placements", K::Placement, format!("{name}: no placement")));
        }
        let mut prev: Option<u64> = None;
        for &s in &starts {
            if s + ms as u64 > mem_slices as u64 {
                return Err(ctx.err(pl, "gpu.profile.placements", K::Placement, format!("{name}: start {s} + {ms} memory slices runs past the GPU's {mem_slices}")));
            }
            if prev.is_some_and(|p| p >= s) {
                return Err(ctx.err(pl, "gpu.profile.placements", K::Placement, format!("{name}: starts must be ascending, without repeats ({starts:?})")));
            }
            prev = Some(s);
        }
        let media_extensions = p.opt_bool("media_extensions")?;
        let variant = is_variant(&name);
        if media_extensions && !variant {
            return Err(ctx.err(p.line("media_extensions"), "gpu.profile.media_extensions", K::Invalid, format!("`{name}`: a media-extension profile is named `<base>+me` or `<base>+me.all`")));
        }
        if let Some(i) = profiles.iter().position(|o| o.id == pid) {
            return Err(ctx.err(p.line("id"), "gpu.profile.id", K::Overlap, format!("profile id {pid} is also {} (line {})", profiles[i].name, lines[i])));
        }
        if let Some(i) = profiles.iter().position(|o| o.name.eq_ignore_ascii_case(&name)) {
            return Err(ctx.err(p.line("name"), "gpu.profile.name", K::Overlap, format!("`{name}` is also profile id {} (line {})", profiles[i].id, lines[i])));
        }
        let starts: Vec<u8> = starts.iter().map(|&s| s as u8).collect();
        profiles.push(GiProfile {
            name: leak_str(name),
            id: pid,
            gpcs: pg,
            mem_slices: ms,
            mem_gb,
            mem_mib,
            mem_source,
            sms,
            starts: Box::leak(starts.into_boxed_slice()),
            max_count,
            media_extensions,
            variant,
        });
        lines.push(pt.line);
    }
    if !profiles.iter().any(|p| p.gpcs == gpcs && !p.variant && p.starts.contains(&0)) {
        return Err(ctx.err(t.gpu.line, "gpu.profile", K::Missing, format!("`{id}` has no whole-GPU profile ({gpcs} GPCs at start 0)")));
    }
    Ok(GpuType {
        id: leak_str(id),
        products: Box::leak(products.into_boxed_slice()),
        gpcs,
        mem_slices,
        max_instances,
        profiles: Box::leak(profiles.into_boxed_slice()),
        placements_source,
        source,
        origin,
        partition: Partition::Mig,
    })
}

/// A profile named `<base>+<engines>` or `<base>-me` is a variant of `<base>`.
pub fn is_variant(name: &str) -> bool {
    name.contains('+') || name.ends_with("-me")
}

/// A profile's memory: `mem_mib` with its `mem_source` (default "published"), or the assumed rule.
pub(super) fn profile_memory(ctx: &Ctx, p: &Fields, name: &str, mem_gb: u32, ms: u8, gpu_slices: u8) -> Result<(u32, MemSource), CatalogueError> {
    use CatalogueErrorKind as K;
    let source = match p.opt_text("mem_source")?.as_deref() {
        None => None,
        Some("nvml") => Some(MemSource::Nvml),
        Some("published") => Some(MemSource::Published),
        Some("assumed") => Some(MemSource::Assumed),
        Some(other) => {
            return Err(ctx.err(p.line("mem_source"), "gpu.profile.mem_source", K::Invalid, format!("`{other}`: one of \"nvml\", \"published\", \"assumed\"")));
        }
    };
    if p.get("mem_mib").is_none() {
        if let Some(s) = source {
            return Err(ctx.err(p.line("mem_source"), "gpu.profile.mem_source", K::Missing, format!("{name}: mem_source \"{}\" without mem_mib", s.as_str())));
        }
        return Ok((assumed_mem_mib(mem_gb, ms, gpu_slices), MemSource::Assumed));
    }
    let mib = p.int("mem_mib", 1, u32::MAX as u64)? as u32;
    // A figure far above the name is a typo (the name is itself a rounded-up fraction).
    let named = f64::from(mem_gb) * 1024.0;
    if f64::from(mib) > named * 1.1 {
        return Err(ctx.err(p.line("mem_mib"), "gpu.profile.mem_mib", K::Invalid, format!("{name}: {mib} MiB is more than its name's {mem_gb} GB (+10 %)")));
    }
    Ok((mib, source.unwrap_or(MemSource::Published)))
}

