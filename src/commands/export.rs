//! `parva export k8s`: what a Kubernetes cluster with the NVIDIA GPU Operator needs to lay out a
//! map's MIG instances: the MIG manager's config (mig-parted `version: v1`, one named config per
//! node) in a ConfigMap with key `config.yaml`, and the node labels that select the configs.
//! The segment and router workloads are not exported yet.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use parva_core::DeploymentMap;
use parva_gpu::migparted::{self, CONFIG_LABEL};

#[derive(clap::Args)]
pub struct ExportArgs {
    #[command(subcommand)]
    target: ExportTarget,
}

#[derive(clap::Subcommand)]
enum ExportTarget {
    /// The GPU Operator's MIG manager config for a map (a ConfigMap with key `config.yaml`) and the
    /// node labels that select it.
    K8s(K8sArgs),
}

#[derive(clap::Args)]
struct K8sArgs {
    /// The deployment map.
    #[arg(long, value_name = "FILE")]
    map: PathBuf,
    /// Where to write `mig-config.yaml` (the ConfigMap), `config.yaml` (the mig-parted config
    /// alone) and `node-labels.sh`; created if missing.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Kubernetes node names: `node,name` (the map's node number, the cluster's node name)
    /// [default: node-<N>].
    #[arg(long, value_name = "FILE")]
    nodes: Option<PathBuf>,
    /// Namespace of the ConfigMap (the GPU Operator's).
    #[arg(long, default_value = "gpu-operator")]
    namespace: String,
    /// Name of the ConfigMap (point the ClusterPolicy's migManager.config.name at it).
    #[arg(long, default_value = "parva-mig-config")]
    name: String,
    /// Prefix of the per-node config names (`<prefix>-node<N>`, label values).
    #[arg(long, default_value = "parva")]
    prefix: String,
    /// GPU type, when the map does not name it.
    #[arg(long = "gpu-type", value_name = "TYPE")]
    gpu_type: Option<String>,
    /// The map the cluster runs now: `node-labels.sh` then relabels only the nodes whose layout
    /// changes (each config's name carries a digest of its layout, so unchanged nodes keep theirs).
    #[arg(long = "from", value_name = "OLD_MAP")]
    from: Option<PathBuf>,
    /// Map GPU -> NVML index on every node, as `deploy --gpu-index-map` (e.g. 0=2,1=3).
    #[arg(long, value_name = "SPEC")]
    gpu_index_map: Option<String>,
    #[command(flatten)]
    catalogue: super::CatalogueFiles,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    match args.target {
        ExportTarget::K8s(a) => k8s(a),
    }
}

fn k8s(args: K8sArgs) -> anyhow::Result<ExitCode> {
    args.catalogue.load()?;
    let (map, _) = DeploymentMap::read(&args.map)?;
    let gpu_id = args.gpu_type.clone().or_else(|| map.segments.iter().find_map(|s| s.gpu_type.clone()));
    let gpu = parva_core::GpuType::by_id(gpu_id.as_deref().context("the map names no GPU type; pass --gpu-type")?)?;
    let index_map = args.gpu_index_map.as_deref().map(parva_gpu::plan::parse_index_map).transpose()?.unwrap_or_default();
    let names = match &args.nodes {
        Some(p) => parva_core::nodes::read_node_names(p)?,
        None => BTreeMap::new(),
    };
    let config = migparted::for_map(&map, gpu, &args.prefix, &index_map).with_context(|| format!("{}", args.map.display()))?;
    let old = match &args.from {
        Some(p) => {
            let (old, _) = DeploymentMap::read(p)?;
            Some(migparted::for_map(&old, gpu, &args.prefix, &index_map).with_context(|| format!("{}", p.display()))?)
        }
        None => None,
    };
    let nodes: std::collections::BTreeSet<u32> = map.segments.iter().map(|s| s.node).collect();
    if let Some(n) = nodes.iter().find(|n| args.nodes.is_some() && !names.contains_key(n)) {
        anyhow::bail!("{}: map node {n} has no name in --nodes", args.nodes.as_deref().unwrap_or(Path::new("")).display());
    }
    let yaml = config.to_yaml();
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(args.name.clone()),
            namespace: Some(args.namespace.clone()),
            labels: Some([("app.kubernetes.io/managed-by".to_string(), "parva".to_string())].into_iter().collect()),
            ..ObjectMeta::default()
        },
        data: Some([("config.yaml".to_string(), yaml.clone())].into_iter().collect()),
        ..ConfigMap::default()
    };
    let manifest = serde_yaml_ng::to_string(&cm)?;
    let mut labels = String::from(
        "#!/bin/sh\n# Select each node's MIG layout (parva export k8s). The GPU Operator must run the device plugin\n\
         # with the mixed MIG strategy and migManager.config.name pointing at the ConfigMap. Apply the\n\
         # ConfigMap first. The MIG manager needs a node's GPUs free: a node that still runs parva pods is\n\
         # refused below; drain it (kubectl drain NODE --pod-selector app.kubernetes.io/part-of=parva) first.\nset -e\n",
    );
    let mut changed = Vec::new();
    for n in &nodes {
        let node_name = names.get(n).cloned().unwrap_or_else(|| format!("node-{n}"));
        let name = config.name_of(&args.prefix, *n).unwrap_or_default();
        if old.as_ref().and_then(|o| o.name_of(&args.prefix, *n)) == Some(name) {
            labels.push_str(&format!("# {node_name}: layout unchanged ({CONFIG_LABEL}={name})\n"));
            continue;
        }
        changed.push(*n);
        labels.push_str(&format!(
            "if kubectl get pods --all-namespaces -l app.kubernetes.io/part-of=parva --field-selector spec.nodeName={node_name} -o name | grep -q .; then\n  \
             echo \"refused: {node_name} still runs parva pods and the MIG manager needs its GPUs free; drain them, then run this again\" >&2; exit 1\nfi\n\
             kubectl label node {node_name} {CONFIG_LABEL}={name} --overwrite\n"
        ));
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    for (file, text) in [("mig-config.yaml", &manifest), ("config.yaml", &yaml), ("node-labels.sh", &labels)] {
        parva_core::deploy::write_atomic(&args.out.join(file), text.as_bytes())?;
    }
    if args.json {
        super::print_json(&serde_json::json!({
            "out": args.out, "configmap": args.name, "namespace": args.namespace,
            "configs": config.mig_configs.keys().collect::<Vec<_>>(), "nodes": nodes.len(), "relabelled": changed,
        }))?;
    } else {
        outln!(
            "{} node configs in ConfigMap {}/{} ({}), config.yaml and node-labels.sh in {}",
            config.mig_configs.len(), args.namespace, args.name, args.out.join("mig-config.yaml").display(), args.out.display()
        )?;
        outln!("the GPU Operator needs mig.strategy=mixed and migManager.config.name={}; drain a serving node before relabelling it", args.name)?;
        outln!("node-labels.sh relabels {} of {} nodes (a node whose layout is unchanged keeps its label)", changed.len(), nodes.len())?;
    }
    Ok(ExitCode::SUCCESS)
}
