use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use parva_core::mig::GpuType;
use parva_core::{DeploymentMap, deploy::MapFormat};

#[derive(clap::Args)]
pub struct ValidateArgs {
    /// Deployment map (parva's or ParvaGPU's CSV).
    #[arg(long = "map", alias = "plan", value_name = "FILE")]
    plan: PathBuf,
    /// GPU type the map is for (default: the map's `gpu_type` column).
    #[arg(long = "gpu-type", alias = "gpu", value_name = "TYPE")]
    gpu: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let (map, format) = DeploymentMap::read(&args.plan)?;
    let gpu_id = match (&args.gpu, map.segments.iter().find_map(|s| s.gpu_type.clone())) {
        (Some(g), _) => g.clone(),
        (None, Some(g)) => g,
        (None, None) => anyhow::bail!("{}: the map names no GPU type; pass --gpu-type", args.plan.display()),
    };
    let gpu = GpuType::by_id(&gpu_id).with_context(|| format!("checking {}", args.plan.display()))?;
    let problems = map.check_layouts(gpu);
    if args.json {
        super::print_json(&serde_json::json!({
            "plan": args.plan, "format": if format == MapFormat::Parva { "parva" } else { "parvagpu" },
            "gpu_type": gpu.id, "gpus": map.gpu_count(), "segments": map.segments.len(),
            "valid": problems.is_empty(),
            "problems": problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        }))?;
    } else if problems.is_empty() {
        outln!("{}: {} segments on {} GPUs, every layout is a legal {} MIG layout", args.plan.display(), map.segments.len(), map.gpu_count(), gpu.id)?;
    } else {
        for p in &problems {
            outln!("{}: {p}", args.plan.display())?;
        }
        outln!("{} of {} GPUs have illegal layouts", problems.len(), map.gpu_count())?;
    }
    Ok(super::exit(problems.is_empty()))
}
