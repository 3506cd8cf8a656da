//! `parva export k8s`: what a Kubernetes cluster with the NVIDIA GPU Operator needs to lay out a
//! map's MIG instances: the MIG manager's config (mig-parted `version: v1`, one named config per
//! node) in a ConfigMap with key `config.yaml`, and the node labels that select the configs.
//! And the serving workloads (see [`crate::k8s`]): the map as a ConfigMap, a Deployment and a
//! Service per segment, the router's, the namespace, and `apply.sh` in the order that keeps serving
//! segments undisturbed; with `--from OLD_MAP` only what changed.

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
    /// A map for Kubernetes with the GPU Operator: the MIG manager's config and node labels, the
    /// segment and router workloads, and the order to apply them.
    K8s(K8sArgs),
}

#[derive(clap::Args)]
struct K8sArgs {
    /// The deployment map.
    #[arg(long, value_name = "FILE")]
    map: PathBuf,
    /// Where to write `mig-config.yaml` (the ConfigMap), `config.yaml` (the mig-parted config
    /// alone), `node-labels.sh`, the workloads (`namespace.yaml`, `map.yaml`, `router.yaml`,
    /// `segments/<id>.yaml`) and `apply.sh`; created if missing. parva owns `segments/`: YAML files
    /// an earlier export left there are removed.
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
    /// Container image of `parva` and `parva-worker` with the model set (see the Dockerfile).
    #[arg(long, default_value = concat!("parva:", env!("CARGO_PKG_VERSION")))]
    image: String,
    /// Namespace of the serving workloads (segments, router, map).
    #[arg(long, default_value = "parva")]
    serving_namespace: String,
    /// Router replicas (stateless; each spreads every service over all its segments).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(i32).range(1..=1000))]
    router_replicas: i32,
    /// Memory limit of a segment pod per worker process, MiB.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(64..=1_048_576))]
    memory_per_process_mib: u64,
    /// Size of each segment pod's memory-backed /dev/shm per worker process, MiB: the workers'
    /// shared-memory slabs (a container's default /dev/shm is 64 MiB). Counted in the pod's
    /// memory request and limit.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
    shm_mib_per_process: u64,
    /// Image pull secret (in the serving namespace) for every pod.
    #[arg(long, value_name = "SECRET")]
    image_pull_secret: Option<String>,
    /// Mount the model set (`<model>.json` and `<model>.pt`) from this PersistentVolumeClaim (in
    /// the serving namespace, read-only; ReadOnlyMany to serve several nodes) instead of the
    /// image's copy.
    #[arg(long, value_name = "CLAIM", conflicts_with = "models_host_path")]
    models_pvc: Option<String>,
    /// Mount the model set from this directory on every GPU node (hostPath, read-only) instead of
    /// the image's copy: copy `models/` there on each node first.
    #[arg(long, value_name = "DIR")]
    models_host_path: Option<String>,
    /// With --from: the share of each service's capacity (the lesser of the old map's and the
    /// new one's) that stays ready at every moment of the rollout (1: all of it).
    #[arg(long, default_value_t = 1.0)]
    min_available: f64,
    /// With --from: at most this many nodes change at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    max_unavailable_nodes: u32,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
}

/// The map's text as parva writes it (the ConfigMap's `map.csv`).
fn map_text(map: &DeploymentMap) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    map.write_to(&mut buf)?;
    Ok(String::from_utf8(buf)?)
}

pub fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    match args.target {
        ExportTarget::K8s(a) => k8s(a),
    }
}

fn k8s(args: K8sArgs) -> anyhow::Result<ExitCode> {
    args.catalogue.load()?;
    let (map, _) = DeploymentMap::read(&args.map)?;
    // Each node's GPU type (a mixed fleet's map has several, one per node); --gpu-type names the
    // type of a map that names none.
    let types = node_types(&map, args.gpu_type.as_deref()).with_context(|| format!("{} (nothing written)", args.map.display()))?;
    if let Some(mps) = types.values().find(|t| t.is_mps()) {
        anyhow::bail!(
            "{} has no MIG: export k8s writes MIG manager configs and `nvidia.com/mig-*` requests; a map of MPS shares is \
             not exported yet (deploy it with `parva deploy` on each node; nothing written)",
            mps.id
        );
    }
    let Some(gpu) = types.values().next().copied() else { anyhow::bail!("{}: the map has no segment (nothing written)", args.map.display()) };
    // The GPU Operator's namespace and the ConfigMap's name are object names: checked before
    // anything is written.
    let dns = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
            && s.bytes().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && s.bytes().last().is_some_and(|c| c.is_ascii_alphanumeric())
    };
    if !dns(&args.namespace, 63) || args.namespace.contains('.') {
        anyhow::bail!("--namespace {:?}: must be a DNS label (lower-case letters, digits and '-', at most 63; nothing written)", args.namespace);
    }
    if !dns(&args.name, 253) {
        anyhow::bail!("--name {:?}: must be a ConfigMap name (lower-case letters, digits, '-' and '.'; nothing written)", args.name);
    }
    let index_map = args.gpu_index_map.as_deref().map(parva_gpu::plan::parse_index_map).transpose()?.unwrap_or_default();
    let names = match &args.nodes {
        Some(p) => parva_core::nodes::read_node_names(p)?,
        None => BTreeMap::new(),
    };
    let config = migparted::for_map_by_node(&map, &types, &args.prefix, &index_map).with_context(|| format!("{}", args.map.display()))?;
    // The map the cluster runs now, read once: its MIG configs and its workloads are compared.
    let old_map = match &args.from {
        Some(p) => Some((p, DeploymentMap::read(p)?.0)),
        None => None,
    };
    let old = match &old_map {
        Some((p, m)) => {
            let old_types = node_types(m, args.gpu_type.as_deref()).with_context(|| format!("{}", p.display()))?;
            Some(migparted::for_map_by_node(m, &old_types, &args.prefix, &index_map).with_context(|| format!("{}", p.display()))?)
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
            "if kubectl get pods --all-namespaces -l {segment_pods} --field-selector spec.nodeName={node_name} -o name | grep -q .; then\n  \
             echo \"refused: {node_name} still runs parva pods and the MIG manager needs its GPUs free; drain them, then run this again\" >&2; exit 1\nfi\n\
             kubectl label node {node_name} {CONFIG_LABEL}={name} --overwrite\n",
            segment_pods = crate::k8s::SEGMENT_PODS
        ));
    }
    // The serving workloads, and what changed against --from.
    let opts = crate::k8s::Options {
        prefix: args.prefix.clone(),
        namespace: args.serving_namespace.clone(),
        image: args.image.clone(),
        router_replicas: args.router_replicas,
        node_names: names.clone(),
        memory_per_process_mib: args.memory_per_process_mib,
        shm_mib_per_process: args.shm_mib_per_process,
        image_pull_secret: args.image_pull_secret.clone(),
        models: match (&args.models_pvc, &args.models_host_path) {
            (Some(claim), _) => crate::k8s::Models::Claim(claim.clone()),
            (None, Some(dir)) => crate::k8s::Models::HostPath(dir.clone()),
            (None, None) => crate::k8s::Models::Image,
        },
    };
    let new = crate::k8s::workloads(&map, &map_text(&map)?, gpu, &opts)?;
    let changes = match &old_map {
        Some((p, old_map)) => {
            let old = crate::k8s::workloads(old_map, &map_text(old_map)?, gpu, &opts).with_context(|| format!("{}", p.display()))?;
            crate::k8s::Changes::between(&old, &new, &changed.iter().copied().collect())
        }
        None => crate::k8s::Changes::all_new(&new),
    };
    let relabelled: Vec<(u32, String)> = changed.iter().map(|n| (*n, names.get(n).cloned().unwrap_or_else(|| format!("node-{n}")))).collect();
    // From a running export: a rollout in waves that keeps every service at its floor, refused
    // (nothing written) when no order can.
    let mut wave_files: Vec<(PathBuf, String)> = Vec::new();
    let mut rollout = None;
    let script = match &old_map {
        Some((p, old_map)) => {
            let r = parva_planner::rollout::plan_rollout(old_map, &map, args.min_available, args.max_unavailable_nodes as usize)
                .with_context(|| format!("rolling out {} after {}", args.map.display(), p.display()))?;
            let old_objects = crate::k8s::workloads(old_map, &map_text(old_map)?, gpu, &opts)?;
            let mut flipped: std::collections::BTreeSet<u32> = std::collections::BTreeSet::new();
            let mut waves = Vec::new();
            for (k, w) in r.waves.iter().enumerate() {
                flipped.extend(w.nodes.iter().map(|n| n.0));
                let last = k + 1 == r.waves.len();
                let state = if last {
                    map.clone()
                } else {
                    let mut segments: Vec<parva_core::deploy::Segment> =
                        old_map.segments.iter().filter(|s| !flipped.contains(&s.node)).cloned().collect();
                    segments.extend(map.segments.iter().filter(|s| flipped.contains(&s.node)).cloned());
                    DeploymentMap { segments, jobs: Vec::new() }
                };
                let objects = crate::k8s::workloads(&state, &map_text(&state)?, gpu, &opts)?;
                wave_files.push((Path::new("waves").join(k.to_string()).join("map.yaml"), crate::k8s::yaml_docs(&[&objects.map])?));
                wave_files.push((
                    Path::new("waves").join(k.to_string()).join("router.yaml"),
                    crate::k8s::yaml_docs(&[&objects.router, &objects.router_service])?,
                ));
                let on = |id: &parva_core::segments::SegmentId| w.nodes.iter().any(|n| n.0 == id.node);
                let relabel = |n: u32| changed.contains(&n);
                let delete: Vec<_> = old_objects
                    .segments
                    .keys()
                    .filter(|id| on(id) && (relabel(id.node) || changes.changed.contains(id) || changes.removed.contains(id)))
                    .copied()
                    .collect();
                let apply: Vec<_> = changes.to_apply().into_iter().filter(|id| on(id)).collect();
                let low: Vec<String> = w
                    .during
                    .iter()
                    .filter(|(s, c)| **c + 1e-9 < r.before.get(*s).copied().unwrap_or(0.0))
                    .map(|(s, c)| format!("{s} {c:.1}/s of {:.1}, floor {:.1}", r.before.get(s).copied().unwrap_or(0.0), r.floors.get(s).copied().unwrap_or(0.0)))
                    .collect();
                let comment = if low.is_empty() { "every service at its full capacity".to_string() } else { format!("ready meanwhile: {}", low.join("; ")) };
                waves.push(crate::k8s::WaveScript {
                    nodes: w
                        .nodes
                        .iter()
                        .map(|(n, _)| {
                            let name = names.get(n).cloned().unwrap_or_else(|| format!("node-{n}"));
                            (*n, name, relabel(*n).then(|| config.name_of(&args.prefix, *n).unwrap_or_default().to_string()))
                        })
                        .collect(),
                    delete,
                    apply,
                    comment,
                });
            }
            let script = crate::k8s::rollout_script(&new, &waves, changes.map_changed, &args.serving_namespace);
            rollout = Some(r);
            script
        }
        None => crate::k8s::apply_script(&new, &changes, &relabelled, true, &args.serving_namespace),
    };
    let mut files: Vec<(PathBuf, String)> = vec![
        ("mig-config.yaml".into(), manifest),
        ("config.yaml".into(), yaml),
        ("node-labels.sh".into(), labels),
        ("apply.sh".into(), script),
    ];
    if let Some(r) = &rollout {
        files.push(("rollout.json".into(), serde_json::to_string_pretty(r)? + "\n"));
    }
    // Node drains evict at most one segment of a service at a time; Prometheus scrapes every
    // pod; the GPU Operator's settings as a patch.
    files.push(("pdb.yaml".into(), crate::k8s::yaml_docs(&new.pdbs.values().map(|p| p as &dyn crate::k8s::erased::Yaml).collect::<Vec<_>>())?));
    files.push(("monitoring/servicemonitor.yaml".into(), crate::k8s::service_monitor(&args.prefix, &args.serving_namespace)));
    files.push(("cluster-policy-patch.yaml".into(), crate::k8s::cluster_policy_patch(&args.name)));
    files.extend(wave_files);
    if args.from.is_none() {
        files.push(("namespace.yaml".into(), crate::k8s::yaml_docs(&[&new.namespace])?));
    }
    if changes.map_changed {
        files.push(("map.yaml".into(), crate::k8s::yaml_docs(&[&new.map])?));
        files.push(("router.yaml".into(), crate::k8s::yaml_docs(&[&new.router, &new.router_service])?));
    }
    for id in changes.to_apply() {
        let o = &new.segments[&id];
        files.push((Path::new("segments").join(format!("{id}.yaml")), crate::k8s::yaml_docs(&[&o.deployment, &o.service])?));
    }
    std::fs::create_dir_all(args.out.join("segments")).with_context(|| format!("creating {}", args.out.join("segments").display()))?;
    // parva owns waves/ too: an earlier rollout's waves are removed.
    let waves_dir = args.out.join("waves");
    if std::fs::symlink_metadata(&waves_dir).is_ok_and(|m| m.is_dir()) {
        std::fs::remove_dir_all(&waves_dir).with_context(|| format!("removing {}", waves_dir.display()))?;
    }
    let _ = std::fs::remove_file(args.out.join("rollout.json"));
    for (file, _) in &files {
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(args.out.join(dir)).with_context(|| format!("creating {}", args.out.join(dir).display()))?;
        }
    }
    // Only this export's segment files: an earlier export's would be applied by `kubectl apply -f segments/`.
    for e in std::fs::read_dir(args.out.join("segments"))?.flatten() {
        if e.path().extension().is_some_and(|x| x == "yaml") {
            std::fs::remove_file(e.path()).with_context(|| format!("removing {}", e.path().display()))?;
        }
    }
    for file in ["namespace.yaml", "map.yaml", "router.yaml"] {
        if !files.iter().any(|(p, _)| p == Path::new(file)) {
            let _ = std::fs::remove_file(args.out.join(file));
        }
    }
    for (file, text) in &files {
        parva_core::files::write_atomic(&args.out.join(file), text.as_bytes())?;
    }
    if args.json {
        super::print_json(&serde_json::json!({
            "out": args.out, "configmap": args.name, "namespace": args.namespace,
            "configs": config.mig_configs.keys().collect::<Vec<_>>(), "nodes": nodes.len(), "relabelled": changed,
            "serving_namespace": args.serving_namespace, "image": args.image, "segments": changes, "rollout": rollout,
            "files": files.iter().map(|(p, _)| p.display().to_string()).collect::<Vec<_>>(),
        }))?;
    } else {
        outln!(
            "{} node configs in ConfigMap {}/{} ({}), config.yaml and node-labels.sh in {}",
            config.mig_configs.len(), args.namespace, args.name, args.out.join("mig-config.yaml").display(), args.out.display()
        )?;
        outln!("the GPU Operator needs mig.strategy=mixed and migManager.config.name={}; drain a serving node before relabelling it", args.name)?;
        outln!("node-labels.sh relabels {} of {} nodes (a node whose layout is unchanged keeps its label)", changed.len(), nodes.len())?;
        outln!(
            "serving workloads in namespace {}: {} segment(s) to apply ({} new, {} changed, {} restarted by relabelling), {} removed, {} unchanged{}",
            args.serving_namespace,
            changes.to_apply().len(),
            changes.added.len(),
            changes.changed.len(),
            changes.restarted.len(),
            changes.removed.len(),
            changes.unchanged.len(),
            if changes.map_changed { "; map and router updated" } else { "" }
        )?;
        if let Some(r) = &rollout {
            outln!(
                "rollout: {} wave(s) of at most {} node(s); every service keeps at least {} x its capacity ready (rollout.json)",
                r.waves.len(),
                r.max_nodes,
                r.min_available
            )?;
            // Each wave: its nodes, and the service closest to its floor while it runs.
            const SHOWN: usize = 16;
            for (k, w) in r.waves.iter().enumerate().take(SHOWN) {
                let nodes: Vec<String> = w
                    .nodes
                    .iter()
                    .map(|(n, c)| format!("node {n} ({})", match c { parva_planner::rollout::NodeChange::Relayout => "new MIG layout", parva_planner::rollout::NodeChange::Pods => "pods only" }))
                    .collect();
                let tightest = w
                    .during
                    .iter()
                    .filter_map(|(svc, ready)| r.floors.get(svc).filter(|f| **f > 0.0).map(|f| (svc, *ready, *f)))
                    .min_by(|a, b| (a.1 / a.2).total_cmp(&(b.1 / b.2)));
                let tight = tightest.map(|(svc, ready, floor)| format!("; closest to its floor: {svc}, {ready:.1} req/s ready for a floor of {floor:.1}")).unwrap_or_default();
                outln!("  wave {}: {}{tight}", k + 1, nodes.join(", "))?;
            }
            if r.waves.len() > SHOWN {
                outln!("  ... and {} more waves (rollout.json)", r.waves.len() - SHOWN)?;
            }
        }
        outln!("apply in order with: sh {}", args.out.join("apply.sh").display())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Each node's GPU type: the one its rows name, else `fallback` (--gpu-type, for a map naming
/// none). A map naming a type other than --gpu-type is refused.
fn node_types(map: &DeploymentMap, fallback: Option<&str>) -> anyhow::Result<BTreeMap<u32, &'static parva_core::GpuType>> {
    let ids = map.gpu_type_ids();
    if let (Some(f), false) = (fallback, ids.is_empty()) {
        if ids.iter().any(|id| id != f) {
            anyhow::bail!("the map is for {}, not {f} (--gpu-type)", ids.join(", "));
        }
    }
    let mut out = BTreeMap::new();
    for (node, ty) in map.node_gpu_types() {
        let id = ty.as_deref().or(fallback).context("the map names no GPU type; pass --gpu-type")?;
        out.insert(node, parva_core::GpuType::by_id(id)?);
    }
    Ok(out)
}
