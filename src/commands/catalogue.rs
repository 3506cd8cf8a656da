use std::path::PathBuf;
use std::process::ExitCode;

use parva_core::mig::{GpuType, catalogue, pci_id_text};
use parva_gpu::mig::MigControl;
use parva_gpu::nvml::NvmlMig;

/// The GPU types parva knows: their products (recognised on a node by PCI device id or exact
/// product name, never by a part of the name), MIG profiles (`+me`: with the GPU's media
/// extensions, at most one per GPU, never planned), profile ids and legal placements.
#[derive(clap::Args)]
pub struct CatalogueArgs {
    /// Only this GPU type (e.g. a100-80gb). Each type lists the products recognised as it on a
    /// node, by PCI device id or exact product name (never a part of the name); `+me` profiles
    /// carry the GPU's media extensions (one per GPU) and are never planned.
    #[arg(long = "gpu-type", alias = "gpu", value_name = "TYPE")]
    gpu: Option<String>,
    #[command(flatten)]
    catalogue: super::CatalogueFiles,
    /// Read the MIG geometry of a GPU of this node through NVML (read-only: every GPU-instance
    /// profile and its possible placements; works with MIG mode off) and write it as a catalogue
    /// file (--out), which --catalogue then takes.
    #[arg(long, requires = "out", conflicts_with = "gpu")]
    from_gpu: bool,
    /// With --from-gpu: the GPU's NVML index.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "from_gpu")]
    gpu_index: u32,
    /// With --from-gpu: the type's id in the file (default: from the product name, `NVIDIA B200` -> `b200`).
    #[arg(long, value_name = "ID", requires = "from_gpu")]
    id: Option<String>,
    /// With --from-gpu: the catalogue file to write (refused if it exists).
    #[arg(long, value_name = "FILE", requires = "from_gpu")]
    out: Option<PathBuf>,
    /// For machines without a GPU (tests): fake GPUs instead of NVML (see `parva deploy --help`).
    /// Also PARVA_FAKE_GPUS.
    #[arg(long, value_name = "TYPE:COUNT", requires = "from_gpu")]
    fake_gpus: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `--from-gpu`: read, check (the catalogue parser reads what is written) and write.
fn from_gpu(args: &CatalogueArgs, out: &std::path::Path) -> anyhow::Result<ExitCode> {
    if out.exists() {
        anyhow::bail!("--out {}: exists; refusing to overwrite it", out.display());
    }
    let (mut mig, what): (Box<dyn MigControl>, String) = match super::fake_node(args.fake_gpus.as_deref(), None)? {
        Some(fake) => (Box::new(fake.gpus), format!("FAKE GPUs ({})", fake.spec)),
        None => {
            let nvml = NvmlMig::load()?;
            let (driver, _) = nvml.versions()?;
            (Box::new(nvml), format!("NVML, driver {driver}"))
        }
    };
    let ty = parva_gpu::nvml::read_gpu_type(mig.as_mut(), args.gpu_index, args.id.as_deref())?;
    let known = mig
        .gpus()?
        .into_iter()
        .find(|g| g.index == args.gpu_index)
        .and_then(|g| g.identify().ok())
        .map(|t| (t.id, t.same_mig_geometry(ty)));
    let header = format!(
        "parva GPU catalogue, read from GPU {} through {what} by `parva catalogue --from-gpu`.\n\
         Format: README, \"Catalogue files\". Use it with --catalogue FILE or PARVA_CATALOGUE.",
        args.gpu_index
    );
    let text = parva_core::catalogue::to_text(&[ty], &header);
    // What is written must read back as the same type.
    let back = parva_core::catalogue::parse(&text, &out.display().to_string())?;
    anyhow::ensure!(back.len() == 1 && back[0].same_geometry(ty), "internal: the catalogue text does not read back as the GPU's geometry");
    parva_core::files::write_atomic(out, text.as_bytes())?;
    if args.json {
        super::print_json(&serde_json::json!({
            "out": out, "gpu_index": args.gpu_index, "gpu_type": ty.id, "source": what,
            "profiles": ty.profiles.len(), "known_as": known.map(|(id, _)| id),
            "same_as_known": known.map(|(_, same)| same),
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{}: GPU {} ({}) read through {what}: type `{}`, {} GPCs, {} memory slices, {} profiles",
        out.display(),
        args.gpu_index,
        ty.products.first().map_or("?", |p| p.name),
        ty.id,
        ty.gpcs,
        ty.mem_slices,
        ty.profiles.len()
    )?;
    match known {
        Some((id, true)) => outln!("  the same geometry as the catalogue's `{id}`")?,
        Some((id, false)) => outln!("  NOT the same geometry as the catalogue's `{id}`, which the GPU is recognised as: compare with `parva catalogue --gpu-type {id}`")?,
        None => outln!("  not a GPU type parva knows: pass --catalogue {} to plan, validate, deploy and profile", out.display())?,
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(serde::Serialize)]
struct ProfileJson {
    name: &'static str,
    id: u32,
    max_count: u8,
    gpcs: u8,
    mem_slices: u8,
    mem_gb: u32,
    mem_mib: u32,
    mem_source: &'static str,
    sms: u16,
    placements: Vec<u8>,
    media_extensions: bool,
    variant: bool,
}

#[derive(serde::Serialize)]
struct ProductJson {
    name: &'static str,
    pci_device_id: String,
}

pub fn run(args: CatalogueArgs) -> anyhow::Result<ExitCode> {
    args.catalogue.load()?;
    if let (true, Some(out)) = (args.from_gpu, &args.out) {
        return from_gpu(&args, out);
    }
    let gpus: Vec<&GpuType> = match &args.gpu {
        Some(id) => vec![GpuType::by_id(id)?],
        None => catalogue(),
    };
    if args.json {
        let out: Vec<serde_json::Value> = gpus
            .iter()
            .map(|g| {
                let profiles: Vec<ProfileJson> = g
                    .profiles
                    .iter()
                    .map(|p| ProfileJson {
                        name: p.name,
                        id: p.id,
                        max_count: p.max_count,
                        gpcs: p.gpcs,
                        mem_slices: p.mem_slices,
                        mem_gb: p.mem_gb,
                        mem_mib: p.mem_mib,
                        mem_source: p.mem_source.as_str(),
                        sms: p.sms,
                        placements: p.starts.to_vec(),
                        media_extensions: p.media_extensions,
                        variant: p.variant,
                    })
                    .collect();
                let products: Vec<ProductJson> = g
                    .products
                    .iter()
                    .map(|p| ProductJson { name: p.name, pci_device_id: pci_id_text(p.pci_device_id) })
                    .collect();
                serde_json::json!({
                    "gpu_type": g.id, "products": products, "gpcs": g.gpcs, "mem_slices": g.mem_slices,
                    "max_instances": g.max_instances, "sizes": g.sizes(), "profiles": profiles,
                    "placements_source": g.placements_source.as_str(), "catalogue": g.origin,
                    "partition": g.partition.as_str(),
                })
            })
            .collect();
        super::print_json(&out)?;
        return Ok(ExitCode::SUCCESS);
    }
    for g in gpus {
        let products: Vec<String> = g.products.iter().map(|p| format!("{} [{}]", p.name, pci_id_text(p.pci_device_id))).collect();
        if g.is_mps() {
            outln!("{} (no MIG: MPS shares in {} % steps summing to at most 100 %, up to {} per GPU)", g.id, parva_core::mig::MPS_SHARE_STEP, g.max_instances)?;
            let products = if products.is_empty() { "none listed (a MIG GPU with MIG off: name this type with --gpu-type)".to_string() } else { products.join(", ") };
            outln!("  products: {products}")?;
            outln!("  catalogue: {}", g.origin)?;
            outln!("  {:<11} {:>6} {:>4} {:>8}  memory", "profile", "share", "SMs", "MiB")?;
            for p in g.profiles {
                outln!("  {:<11} {:>5}% {:>4} {:>8}  {}", p.name, g.share_percent(p.gpcs), p.sms, p.mem_mib, p.mem_source.as_str())?;
            }
            continue;
        }
        outln!("{} ({} GPCs, {} memory slices, up to {} instances)", g.id, g.gpcs, g.mem_slices, g.max_instances)?;
        outln!("  products: {}", products.join(", "))?;
        outln!("  catalogue: {}; placements: {}", g.origin, g.placements_source.as_str())?;
        outln!("  {:<14} {:>3} {:>5} {:>4} {:>8} {:<9}  placements {{start}}:slices", "profile", "id", "GPCs", "SMs", "MiB", "memory")?;
        for p in g.profiles {
            let starts: Vec<String> = p.starts.iter().map(|s| s.to_string()).collect();
            let note = match (p.media_extensions, p.variant) {
                (true, _) => "  (media extensions: one per GPU, never planned)",
                (false, true) => "  (a variant of its base profile: never planned)",
                _ => "",
            };
            outln!(
                "  {:<14} {:>3} {:>5} {:>4} {:>8} {:<9}  {{{}}}:{}{note}",
                p.name,
                p.id,
                p.gpcs,
                p.sms,
                p.mem_mib,
                p.mem_source.as_str(),
                starts.join(","),
                p.mem_slices,
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
