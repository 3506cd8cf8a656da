use std::process::ExitCode;

use parva_core::mig::{GpuType, catalogue, pci_id_text};

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
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct ProfileJson {
    name: &'static str,
    id: u32,
    gpcs: u8,
    mem_slices: u8,
    mem_gb: u32,
    sms: u16,
    placements: Vec<u8>,
    media_extensions: bool,
}

#[derive(serde::Serialize)]
struct ProductJson {
    name: &'static str,
    pci_device_id: String,
}

pub fn run(args: CatalogueArgs) -> anyhow::Result<ExitCode> {
    let gpus: Vec<&GpuType> = match &args.gpu {
        Some(id) => vec![GpuType::by_id(id)?],
        None => catalogue().iter().collect(),
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
                        gpcs: p.gpcs,
                        mem_slices: p.mem_slices,
                        mem_gb: p.mem_gb,
                        sms: p.sms,
                        placements: p.starts.to_vec(),
                        media_extensions: p.media_extensions,
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
                })
            })
            .collect();
        super::print_json(&out)?;
        return Ok(ExitCode::SUCCESS);
    }
    for g in gpus {
        outln!("{} ({} GPCs, {} memory slices, up to {} instances)", g.id, g.gpcs, g.mem_slices, g.max_instances)?;
        let products: Vec<String> = g.products.iter().map(|p| format!("{} [{}]", p.name, pci_id_text(p.pci_device_id))).collect();
        outln!("  products: {}", products.join(", "))?;
        outln!("  {:<11} {:>3} {:>5} {:>4} {:>7}  placements {{start}}:slices", "profile", "id", "GPCs", "SMs", "mem GB")?;
        for p in g.profiles {
            let starts: Vec<String> = p.starts.iter().map(|s| s.to_string()).collect();
            outln!(
                "  {:<11} {:>3} {:>5} {:>4} {:>7}  {{{}}}:{}{}",
                p.name,
                p.id,
                p.gpcs,
                p.sms,
                p.mem_gb,
                starts.join(","),
                p.mem_slices,
                if p.media_extensions { "  (media extensions: one per GPU, never planned)" } else { "" }
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
