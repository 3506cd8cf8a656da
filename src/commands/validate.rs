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
    /// A mixed fleet's map (one GPU type per node): the fleet file whose profile tables the
    /// memory check reads, per node's type (what --prof-data is for one type).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["prof_data", "gpu"])]
    fleet: Option<PathBuf>,
    #[command(flatten)]
    catalogue: super::CatalogueFiles,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    args.catalogue.load()?;
    let (map, format) = DeploymentMap::read(&args.plan)?;
    if args.gpu.is_none() && (map.gpu_type_ids().len() > 1 || args.fleet.is_some()) {
        return mixed(&args, &map);
    }
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

/// A map of several GPU types, one per node: every node's layouts against its own type, and with
/// --fleet each segment's memory against its type's tables.
fn mixed(args: &ValidateArgs, map: &DeploymentMap) -> anyhow::Result<ExitCode> {
    if args.prof_data.is_some() {
        anyhow::bail!("{}: the map mixes GPU types ({}); give --fleet for the memory check", args.plan.display(), map.gpu_type_ids().join(", "));
    }
    let mut problems = map.check_layouts_by_node(None);
    let mut by_type: std::collections::BTreeMap<String, Vec<u32>> = std::collections::BTreeMap::new();
    for (node, ty) in map.node_gpu_types() {
        by_type.entry(ty.unwrap_or_default()).or_default().push(node);
    }
    if let Some(file) = &args.fleet {
        let fleet = parva_core::fleet::Fleet::read(file)?;
        for (ty, nodes) in &by_type {
            let Some(row) = fleet.types.iter().find(|t| t.gpu.id == ty) else {
                anyhow::bail!("{}: the map has {ty} nodes but the fleet {} lists no {ty}", args.plan.display(), file.display());
            };
            let profiles = parva_core::ProfileSet::read_dir(&row.prof_data, Some(row.gpu))?;
            for node in nodes {
                problems.extend(map.for_node(*node).check_memory(row.gpu, &profiles));
            }
        }
    }
    let nodes_of = |nodes: &[u32]| {
        let list: Vec<String> = nodes.iter().map(u32::to_string).collect();
        format!("{} {}", if nodes.len() == 1 { "node" } else { "nodes" }, list.join(", "))
    };
    if args.json {
        super::print_json(&serde_json::json!({
            "plan": args.plan, "format": "parva", "gpu_type": null,
            "gpu_types": by_type, "gpus": map.gpu_count(), "gpus_with_jobs": map.gpu_count_with_jobs(),
            "segments": map.segments.len(), "best_effort": map.jobs.len(), "valid": problems.is_empty(),
            "problems": problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        }))?;
    } else if problems.is_empty() {
        let types: Vec<String> = by_type.iter().map(|(t, n)| format!("{t} on {}", nodes_of(n))).collect();
        outln!(
            "{}: {} segments on {} GPUs of {} types ({}), every layout legal for its node's type",
            args.plan.display(),
            map.segments.len(),
            map.gpu_count(),
            by_type.len(),
            types.join("; ")
        )?;
    } else {
        for p in &problems {
            outln!("{}: {p}", args.plan.display())?;
        }
        outln!("{} problem(s) on {} GPUs", problems.len(), map.gpu_count())?;
    }
    Ok(super::exit(problems.is_empty()))
}
