use std::process::ExitCode;

use parva_core::mig::{GpuType, catalogue};

#[derive(clap::Args)]
pub struct CatalogueArgs {
    /// Only this GPU type (e.g. a100-80gb).
    #[arg(long)]
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
                    })
                    .collect();
                serde_json::json!({
                    "gpu_type": g.id, "gpcs": g.gpcs, "mem_slices": g.mem_slices,
                    "max_instances": g.max_instances, "sizes": g.sizes(), "profiles": profiles,
                })
            })
            .collect();
        super::print_json(&out)?;
        return Ok(ExitCode::SUCCESS);
    }
    for g in gpus {
        println!("{} ({} GPCs, {} memory slices, up to {} instances)", g.id, g.gpcs, g.mem_slices, g.max_instances);
        println!("  {:<10} {:>3} {:>5} {:>4} {:>7}  placements {{start}}:slices", "profile", "id", "GPCs", "SMs", "mem GB");
        for p in g.profiles {
            let starts: Vec<String> = p.starts.iter().map(|s| s.to_string()).collect();
            println!(
                "  {:<10} {:>3} {:>5} {:>4} {:>7}  {{{}}}:{}",
                p.name, p.id, p.gpcs, p.sms, p.mem_gb, starts.join(","), p.mem_slices
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
