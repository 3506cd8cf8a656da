use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use parva_core::mig::{GpuType, PlacementSource};
use parva_core::{DeploymentMap, deploy::MapFormat};

#[derive(clap::Args)]
pub struct ValidateArgs {
    /// Deployment map (parva's or ParvaGPU's CSV).
    #[arg(long = "map", alias = "plan", value_name = "FILE")]
    plan: PathBuf,
    /// GPU type the map is for (default: the map's `gpu_type` column).
    #[arg(long = "gpu-type", alias = "gpu", value_name = "TYPE")]
    gpu: Option<String>,
    /// Profile tables the map was planned on: also check that each segment's processes fit its
    /// instance's (or MPS share's) memory, by the tables' `mem_mib` column.
    #[arg(long, value_name = "DIR")]
    prof_data: Option<PathBuf>,
    #[command(flatten)]
    catalogue: super::CatalogueFiles,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    args.catalogue.load()?;
    let (map, format) = DeploymentMap::read(&args.plan)?;
    let gpu_id = match (&args.gpu, map.segments.iter().find_map(|s| s.gpu_type.clone())) {
        (Some(g), _) => g.clone(),
        (None, Some(g)) => g,
        (None, None) => anyhow::bail!("{}: the map names no GPU type; pass --gpu-type", args.plan.display()),
    };
    let gpu = GpuType::by_id(&gpu_id).with_context(|| format!("checking {}", args.plan.display()))?;
    let mut problems = map.check_layouts(gpu);
    if let Some(dir) = &args.prof_data {
        let profiles = parva_core::ProfileSet::read_dir(dir, Some(gpu))?;
        problems.extend(map.check_memory(gpu, &profiles));
    }
    // Placements taken from a sibling GPU are checked, but not known to be the GPU's own.
    let assumed = (gpu.placements_source == PlacementSource::Assumed).then(|| {
        format!(
            "{}'s placements are not published (assumed from a GPU of the same family, {}): before trusting them, read the GPU's own with `parva catalogue --from-gpu --out FILE` and validate with --catalogue FILE",
            gpu.id,
            gpu.origin
        )
    });
    if let Some(w) = &assumed {
        eprintln!("warning: {w}");
    }
    if args.json {
        super::print_json(&serde_json::json!({
            "plan": args.plan, "format": if format == MapFormat::Parva { "parva" } else { "parvagpu" },
            "gpu_type": gpu.id, "gpus": map.gpu_count(), "gpus_with_jobs": map.gpu_count_with_jobs(), "segments": map.segments.len(), "best_effort": map.jobs.len(),
            "valid": problems.is_empty(), "placements_source": gpu.placements_source.as_str(),
            "catalogue": gpu.origin, "warning": assumed,
            "problems": problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        }))?;
    } else if problems.is_empty() {
        // Jobs may occupy GPUs no segment uses (a cluster plan's other nodes): counted too.
        let jobs = if map.jobs.is_empty() {
            String::new()
        } else {
            format!(" and {} best-effort instances, {} GPUs in all", map.jobs.len(), map.gpu_count_with_jobs())
        };
        outln!("{}: {} segments on {} GPUs{jobs}, every layout is a legal {} {} layout", args.plan.display(), map.segments.len(), map.gpu_count(), gpu.id, if gpu.is_mps() { "MPS-share" } else { "MIG" })?;
    } else {
        for p in &problems {
            outln!("{}: {p}", args.plan.display())?;
        }
        outln!("{} problem(s) on {} GPUs", problems.len(), map.gpu_count())?;
    }
    Ok(super::exit(problems.is_empty()))
}
