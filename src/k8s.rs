//! Kubernetes workloads of a map (`parva export k8s`), as typed `k8s-openapi` objects:
//!
//! - the map as a ConfigMap (`<prefix>-map`, key `map.csv`);
//! - per segment `<prefix>-<segment id>` (e.g. `parva-n0-g1-p4`): a Deployment of one pod pinned
//!   to its node (`kubernetes.io/hostname`), requesting `nvidia.com/mig-<profile>: 1` (the GPU
//!   Operator's `mixed` strategy), running `parva segment` with its own MPS daemon (the device
//!   plugin refuses MPS on MIG devices), readiness on `/v2/health/ready`, liveness on
//!   `/v2/health/live`, CPU and memory requests and limits; `Recreate`, because a pod's MIG
//!   device cannot be held by two pods during a rolling update; and a Service of the same name;
//! - the router: a Deployment of `parva route` replicas (rolling, stateless) reaching the
//!   segments through their Services' DNS names, and its Service `<prefix>-router`;
//! - the namespace.
//!
//! [`Changes`] compares two exports segment by segment (their rendered objects), so that a
//! changed map re-applies only what changed; [`apply_script`] writes the order that keeps
//! serving segments undisturbed.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction, LocalObjectReference, Namespace, PodSpec, PodTemplateSpec, Probe,
    HostPathVolumeSource, PersistentVolumeClaimVolumeSource, ResourceRequirements, Service, ServicePort, ServiceSpec, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use parva_core::DeploymentMap;
use parva_core::mig::GpuType;
use parva_core::segments::SegmentId;

/// The label naming a segment pod's service (PodDisruptionBudgets select on it).
pub const SERVICE_LABEL: &str = "parva.io/service";

/// An object name for `name` (a service name: any case, `_` and `.`): `<prefix>-<name, lower
/// case, '-' for the rest>-<digest>`, at most 63 characters, distinct for distinct names.
pub fn object_name(prefix: &str, name: &str) -> String {
    let clean: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let d = digest(name);
    let short = &d[..d.len().min(8)];
    let room = 63usize.saturating_sub(prefix.len() + short.len() + 2);
    let mut middle: String = clean.chars().take(room).collect();
    while middle.ends_with('-') {
        middle.pop();
    }
    format!("{prefix}-{middle}-{short}").replace("--", "-")
}

/// The ServiceMonitor (Prometheus Operator) for the router's and the segments' `/metrics`:
/// YAML text, since its kind is a CustomResourceDefinition's.
pub fn service_monitor(prefix: &str, ns: &str) -> String {
    format!(
        "# Prometheus Operator: scrape /metrics of the parva router and segments (parva export k8s).\n\
         # A CustomResourceDefinition's kind: needs the Prometheus Operator's CRDs in the cluster.\n\
         apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata:\n  name: {prefix}\n  namespace: {ns}\n  labels:\n    \
         app.kubernetes.io/part-of: parva\n    app.kubernetes.io/managed-by: parva\nspec:\n  selector:\n    matchLabels:\n      \
         app.kubernetes.io/part-of: parva\n  namespaceSelector:\n    matchNames:\n    - {ns}\n  endpoints:\n  - port: http\n    path: /metrics\n    interval: 15s\n"
    )
}

/// The GPU Operator's ClusterPolicy settings parva needs, as a merge patch
/// (`kubectl patch clusterpolicies.nvidia.com/cluster-policy --type merge --patch-file ...`).
pub fn cluster_policy_patch(config_map: &str) -> String {
    format!(
        "# The GPU Operator settings parva's MIG layouts need (parva export k8s). Apply with:\n\
         #   kubectl patch clusterpolicies.nvidia.com/cluster-policy --type merge --patch-file cluster-policy-patch.yaml\n\
         spec:\n  mig:\n    strategy: mixed\n  migManager:\n    enabled: true\n    config:\n      name: {config_map}\n      default: all-disabled\n"
    )
}

/// The port every parva container serves KServe v2 on.
pub const PORT: i32 = 8000;
/// Where the map ConfigMap is mounted.
pub const MAP_DIR: &str = "/etc/parva";
/// Where the image keeps the model set (`<model>.json` and `<model>.pt`; see the Dockerfile).
pub const MODELS_DIR: &str = "/opt/parva/models";
/// Label of segment objects with their map node.
pub const NODE_LABEL: &str = "parva.io/node";
/// Label of segment objects with their id.
pub const SEGMENT_LABEL: &str = "parva.io/segment";
/// The selector of a node's serving pods (what the MIG manager must not find on a node it changes).
pub const SEGMENT_PODS: &str = "app.kubernetes.io/part-of=parva,app.kubernetes.io/component=segment";

/// Settings of the workloads.
#[derive(Debug, Clone)]
pub struct Options {
    /// Names are `<prefix>-<segment id>`, `<prefix>-router`, `<prefix>-map`.
    pub prefix: String,
    pub namespace: String,
    pub image: String,
    pub router_replicas: i32,
    /// Kubernetes node name of each map node (default `node-<N>`).
    pub node_names: BTreeMap<u32, String>,
    /// Memory limit of a segment pod per worker process, MiB.
    pub memory_per_process_mib: u64,
    /// Size of the memory-backed `/dev/shm` of a segment pod per worker process, MiB (the
    /// workers' shared-memory slabs; counted in the pod's memory too).
    pub shm_mib_per_process: u64,
    /// An image pull secret for every pod.
    pub image_pull_secret: Option<String>,
    /// Where segment pods find the model set.
    pub models: Models,
}

/// Where segment pods find the model set, mounted at [`MODELS_DIR`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Models {
    /// Baked into the image (the Dockerfile's `models/` copy): nothing to mount.
    Image,
    /// A PersistentVolumeClaim in the serving namespace, mounted read-only.
    Claim(String),
    /// A directory on every GPU node, mounted read-only.
    HostPath(String),
}

impl Models {
    /// The volume and its mount, when the models are not in the image.
    fn volume(&self) -> Option<(Volume, VolumeMount)> {
        let volume = match self {
            Models::Image => return None,
            Models::Claim(claim) => Volume {
                name: "models".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource { claim_name: claim.clone(), read_only: Some(true) }),
                ..Volume::default()
            },
            Models::HostPath(dir) => Volume {
                name: "models".into(),
                host_path: Some(HostPathVolumeSource { path: dir.clone(), type_: Some("Directory".into()) }),
                ..Volume::default()
            },
        };
        Some((volume, VolumeMount { name: "models".into(), mount_path: MODELS_DIR.into(), read_only: Some(true), ..VolumeMount::default() }))
    }
}

/// Why workloads cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error("--prefix {0:?}: must be a DNS label of at most 40 characters (lower-case letters, digits and '-', starting with a letter)")]
    Prefix(String),
    #[error("--serving-namespace {0:?}: must be a DNS label (lower-case letters, digits and '-', at most 63)")]
    Namespace(String),
    #[error("--image-pull-secret {0:?}: must be a Secret name (lower-case letters, digits and '-')")]
    PullSecret(String),
    #[error("--models-pvc {0:?}: must be a PersistentVolumeClaim name (lower-case letters, digits and '-')")]
    ModelsClaim(String),
    #[error("--models-host-path {0:?}: must be an absolute directory path without '..'")]
    ModelsHostPath(String),
    #[error("segment {segment} (service {service:?}): {problem}")]
    Segment { segment: SegmentId, service: String, problem: String },
    #[error("YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
}

fn dns_label(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
}

/// A segment's objects.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentObjects {
    pub node: u32,
    pub deployment: Deployment,
    pub service: Service,
}

/// Everything a map runs as in the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Workloads {
    pub namespace: Namespace,
    pub map: ConfigMap,
    pub segments: BTreeMap<SegmentId, SegmentObjects>,
    pub router: Deployment,
    pub router_service: Service,
    /// Per service: at most one of its segment pods evicted at a time (a node drain).
    pub pdbs: BTreeMap<String, PodDisruptionBudget>,
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn meta(name: &str, ns: &str, l: &BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta { name: Some(name.to_string()), namespace: Some(ns.to_string()), labels: Some(l.clone()), ..ObjectMeta::default() }
}

fn quantities(pairs: &[(&str, String)]) -> BTreeMap<String, Quantity> {
    pairs.iter().map(|(k, v)| (k.to_string(), Quantity(v.clone()))).collect()
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction { path: Some(path.to_string()), port: IntOrString::Int(PORT), ..HTTPGetAction::default() }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

fn map_volume(prefix: &str) -> (Volume, VolumeMount) {
    (
        Volume { name: "map".into(), config_map: Some(ConfigMapVolumeSource { name: format!("{prefix}-map"), ..ConfigMapVolumeSource::default() }), ..Volume::default() },
        VolumeMount { name: "map".into(), mount_path: MAP_DIR.into(), read_only: Some(true), ..VolumeMount::default() },
    )
}

fn service_for(name: &str, ns: &str, l: &BTreeMap<String, String>, selector: BTreeMap<String, String>) -> Service {
    Service {
        metadata: meta(name, ns, l),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort { name: Some("http".into()), port: PORT, target_port: Some(IntOrString::Int(PORT)), ..ServicePort::default() }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The device plugin's resource for a MIG profile under the `mixed` strategy: `nvidia.com/mig-<profile>`,
/// a `+` (media extensions, `1g.10gb+me`) turned into `.` as the plugin advertises it.
pub fn mig_resource(profile: &str) -> String {
    format!("nvidia.com/mig-{}", profile.replace('+', "."))
}

/// FNV-1a of `text`, 8 hex digits: stable across runs and versions.
pub fn digest(text: &str) -> String {
    let h = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("{:08x}", (h >> 32) as u32 ^ h as u32)
}

/// The workloads of `map` (whose file text is `map_text`) on GPUs of type `gpu` (a segment whose
/// row names its node's type, as a mixed fleet's do, on that type).
pub fn workloads(map: &DeploymentMap, map_text: &str, gpu: &GpuType, o: &Options) -> Result<Workloads, K8sError> {
    if !dns_label(&o.prefix, 40) {
        return Err(K8sError::Prefix(o.prefix.clone()));
    }
    if !dns_label(&o.namespace, 63) {
        return Err(K8sError::Namespace(o.namespace.clone()));
    }
    let ns = o.namespace.as_str();
    if let Some(secret) = &o.image_pull_secret {
        if !dns_label(secret, 253) {
            return Err(K8sError::PullSecret(secret.clone()));
        }
    }
    match &o.models {
        Models::Claim(claim) if !dns_label(claim, 253) => return Err(K8sError::ModelsClaim(claim.clone())),
        Models::HostPath(dir) if !dir.starts_with('/') || dir.split('/').any(|c| c == "..") || dir.contains('\0') => {
            return Err(K8sError::ModelsHostPath(dir.clone()));
        }
        _ => {}
    }
    let models = o.models.volume();
    let pull_secrets = o.image_pull_secret.as_ref().map(|n| vec![LocalObjectReference { name: n.clone() }]);
    let common = [("app.kubernetes.io/part-of", "parva"), ("app.kubernetes.io/managed-by", "parva")];
    let (map_vol, map_mount) = map_volume(&o.prefix);
    let map_path = format!("{MAP_DIR}/map.csv");
    let mut segments = BTreeMap::new();
    for seg in &map.segments {
        let id = SegmentId::of(seg);
        let name = format!("{}-{id}", o.prefix);
        let err = |problem: String| K8sError::Segment { segment: id, service: seg.service.clone(), problem };
        // A mixed fleet's map names each node's type: its segments take that type's profiles.
        let ty = seg.gpu_type.as_deref().and_then(|t| GpuType::by_id(t).ok()).unwrap_or(gpu);
        let profile = parva_core::deploy::segment_profile(ty, seg).map_err(err)?;
        let node_name = o.node_names.get(&seg.node).cloned().unwrap_or_else(|| format!("node-{}", seg.node));
        let node_text = seg.node.to_string();
        let id_text = id.to_string();
        let mut l = labels(&common);
        l.extend(labels(&[
            ("app.kubernetes.io/name", "parva-segment"),
            ("app.kubernetes.io/component", "segment"),
            (SEGMENT_LABEL, &id_text),
            (NODE_LABEL, &node_text),
            (SERVICE_LABEL, &seg.service),
        ]));
        let selector = labels(&[(SEGMENT_LABEL, &id_text)]);
        let procs = u64::from(seg.num_proc.max(1));
        let cpu = procs.to_string();
        let shm_mib = procs.saturating_mul(o.shm_mib_per_process);
        let memory = format!("{}Mi", procs.saturating_mul(o.memory_per_process_mib).saturating_add(shm_mib));
        let mig = mig_resource(profile.name);
        let container = Container {
            name: "segment".into(),
            image: Some(o.image.clone()),
            command: Some(
                [
                    "parva", "segment", "--map", &map_path, "--segment", &id_text, "--backend", "torch", "--device", "cuda", "--models", MODELS_DIR, "--listen",
                    &format!("0.0.0.0:{PORT}"), "--run-dir", "/run/parva",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ),
            ports: Some(vec![ContainerPort { name: Some("http".into()), container_port: PORT, ..ContainerPort::default() }]),
            resources: Some(ResourceRequirements {
                requests: Some(quantities(&[("cpu", cpu.clone()), ("memory", memory.clone()), (&mig, "1".into())])),
                limits: Some(quantities(&[("cpu", (procs + 1).to_string()), ("memory", memory), (&mig, "1".into())])),
                ..ResourceRequirements::default()
            }),
            // Loading and warming the model may take minutes: liveness waits for the startup probe.
            startup_probe: Some(http_probe("/v2/health/live", 5, 120)),
            readiness_probe: Some(http_probe("/v2/health/ready", 2, 2)),
            liveness_probe: Some(http_probe("/v2/health/live", 10, 3)),
            volume_mounts: Some([
                map_mount.clone(),
                VolumeMount { name: "run".into(), mount_path: "/run/parva".into(), ..VolumeMount::default() },
                // The workers' slabs: a container's /dev/shm is 64 MiB unless mounted.
                VolumeMount { name: "shm".into(), mount_path: "/dev/shm".into(), ..VolumeMount::default() },
            ]
            .into_iter()
            .chain(models.as_ref().map(|(_, m)| m.clone()))
            .collect()),
            ..Container::default()
        };
        let mut pod_meta = ObjectMeta { labels: Some(l.clone()), ..ObjectMeta::default() };
        // What the segment process reads from the map: a change rolls the pod, anything else
        // (another segment, a rate) leaves it running.
        let row = format!("{:?}", (&seg.service, &seg.model, seg.instance_size, seg.batch_size, seg.num_proc, profile.name, seg.slo_ms, seg.margin_ms));
        pod_meta.annotations = Some(labels(&[
            ("parva.io/service", &seg.service),
            ("parva.io/model", &seg.model),
            ("parva.io/mig-profile", profile.name),
            ("parva.io/segment-digest", &digest(&row)),
        ]));
        let deployment = Deployment {
            metadata: meta(&name, ns, &l),
            spec: Some(DeploymentSpec {
                replicas: Some(1),
                selector: LabelSelector { match_labels: Some(selector.clone()), ..LabelSelector::default() },
                strategy: Some(DeploymentStrategy { type_: Some("Recreate".into()), ..DeploymentStrategy::default() }),
                template: PodTemplateSpec {
                    metadata: Some(pod_meta),
                    spec: Some(PodSpec {
                        node_selector: Some(labels(&[("kubernetes.io/hostname", &node_name)])),
                        tolerations: Some(vec![Toleration { key: Some("nvidia.com/gpu".into()), operator: Some("Exists".into()), effect: Some("NoSchedule".into()), ..Toleration::default() }]),
                        containers: vec![container],
                        volumes: Some([
                            map_vol.clone(),
                            Volume { name: "run".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() },
                            Volume {
                                name: "shm".into(),
                                empty_dir: Some(EmptyDirVolumeSource { medium: Some("Memory".into()), size_limit: Some(Quantity(format!("{shm_mib}Mi"))) }),
                                ..Volume::default()
                            },
                        ]
                        .into_iter()
                        .chain(models.as_ref().map(|(v, _)| v.clone()))
                        .collect()),
                        image_pull_secrets: pull_secrets.clone(),
                        // Draining lets in-flight requests finish (the router has ejected it by then).
                        termination_grace_period_seconds: Some(30),
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        };
        let service = service_for(&name, ns, &l, selector);
        segments.insert(id, SegmentObjects { node: seg.node, deployment, service });
    }
    let map_cm = ConfigMap {
        metadata: meta(&format!("{}-map", o.prefix), ns, &labels(&common)),
        data: Some([("map.csv".to_string(), map_text.to_string())].into_iter().collect()),
        ..ConfigMap::default()
    };
    let mut rl = labels(&common);
    rl.extend(labels(&[("app.kubernetes.io/name", "parva-router"), ("app.kubernetes.io/component", "router")]));
    let router_name = format!("{}-router", o.prefix);
    let template = format!("http://{}-{{segment}}.{ns}.svc:{PORT}", o.prefix);
    let router_selector = labels(&[("app.kubernetes.io/name", "parva-router"), ("app.kubernetes.io/part-of", "parva")]);
    let router = Deployment {
        metadata: meta(&router_name, ns, &rl),
        spec: Some(DeploymentSpec {
            replicas: Some(o.router_replicas),
            selector: LabelSelector { match_labels: Some(router_selector.clone()), ..LabelSelector::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(rl.clone()),
                    // A new map rolls the router replicas (one at a time); segments are untouched.
                    annotations: Some(labels(&[("parva.io/map-digest", &digest(map_text))])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "router".into(),
                        image: Some(o.image.clone()),
                        command: Some(
                            ["parva", "route", "--map", &map_path, "--segments", &template, "--listen", &format!("0.0.0.0:{PORT}")].iter().map(|s| s.to_string()).collect(),
                        ),
                        ports: Some(vec![ContainerPort { name: Some("http".into()), container_port: PORT, ..ContainerPort::default() }]),
                        resources: Some(ResourceRequirements {
                            requests: Some(quantities(&[("cpu", "1".into()), ("memory", "256Mi".into())])),
                            limits: Some(quantities(&[("cpu", "2".into()), ("memory", "2Gi".into())])),
                            ..ResourceRequirements::default()
                        }),
                        // Live, not ready: a router with one service down must keep serving the rest.
                        readiness_probe: Some(http_probe("/v2/health/live", 2, 2)),
                        liveness_probe: Some(http_probe("/v2/health/live", 10, 3)),
                        volume_mounts: Some(vec![map_mount]),
                        ..Container::default()
                    }],
                    volumes: Some(vec![map_vol]),
                    image_pull_secrets: pull_secrets.clone(),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    let router_service = service_for(&router_name, ns, &rl, router_selector);
    let namespace = Namespace { metadata: ObjectMeta { name: Some(ns.to_string()), labels: Some(labels(&common)), ..ObjectMeta::default() }, ..Namespace::default() };
    let services: BTreeSet<&str> = map.segments.iter().map(|s| s.service.as_str()).collect();
    let pdbs = services
        .into_iter()
        .map(|svc| {
            let mut l = labels(&common);
            l.insert(SERVICE_LABEL.into(), svc.into());
            let pdb = PodDisruptionBudget {
                metadata: meta(&object_name(&o.prefix, svc), ns, &l),
                spec: Some(PodDisruptionBudgetSpec {
                    max_unavailable: Some(IntOrString::Int(1)),
                    selector: Some(LabelSelector { match_labels: Some(labels(&[(SERVICE_LABEL, svc), ("app.kubernetes.io/component", "segment")])), ..LabelSelector::default() }),
                    ..PodDisruptionBudgetSpec::default()
                }),
                ..PodDisruptionBudget::default()
            };
            (svc.to_string(), pdb)
        })
        .collect();
    Ok(Workloads { namespace, map: map_cm, segments, router, router_service, pdbs })
}

/// Objects as one multi-document YAML text.
pub fn yaml_docs(docs: &[&dyn erased::Yaml]) -> Result<String, K8sError> {
    let mut out = String::new();
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&d.yaml()?);
    }
    Ok(out)
}

/// Serialize any object to YAML behind one trait object.
pub mod erased {
    pub trait Yaml {
        fn yaml(&self) -> Result<String, serde_yaml_ng::Error>;
    }
    impl<T: serde::Serialize> Yaml for T {
        fn yaml(&self) -> Result<String, serde_yaml_ng::Error> {
            serde_yaml_ng::to_string(self)
        }
    }
}

/// What a new export changes against the one the cluster runs.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Changes {
    pub added: Vec<SegmentId>,
    pub changed: Vec<SegmentId>,
    pub removed: Vec<SegmentId>,
    pub unchanged: Vec<SegmentId>,
    /// Segments the MIG manager's reconfiguration of their node stops, to start again after.
    pub restarted: Vec<SegmentId>,
    pub map_changed: bool,
}

impl Changes {
    /// Compare segment objects; `relabelled` nodes get new MIG layouts, which stop every segment
    /// on them (the MIG manager needs the GPUs free).
    pub fn between(old: &Workloads, new: &Workloads, relabelled: &BTreeSet<u32>) -> Changes {
        let mut c = Changes { map_changed: old.map != new.map, ..Changes::default() };
        for (id, s) in &new.segments {
            match old.segments.get(id) {
                None => c.added.push(*id),
                Some(o) if o != s => c.changed.push(*id),
                Some(_) if relabelled.contains(&s.node) => c.restarted.push(*id),
                Some(_) => c.unchanged.push(*id),
            }
        }
        c.removed = old.segments.keys().filter(|id| !new.segments.contains_key(id)).copied().collect();
        c
    }

    /// Everything is new (no earlier export).
    pub fn all_new(new: &Workloads) -> Changes {
        Changes { added: new.segments.keys().copied().collect(), map_changed: true, ..Changes::default() }
    }

    /// The segments whose objects must be (re)applied.
    pub fn to_apply(&self) -> Vec<SegmentId> {
        let mut v: Vec<SegmentId> = self.added.iter().chain(&self.changed).chain(&self.restarted).copied().collect();
        v.sort();
        v
    }
}

/// The order that keeps serving segments undisturbed: layouts and map first; the segments on
/// nodes whose MIG layout changes stopped (the MIG manager needs their GPUs free), the nodes
/// relabelled and waited for; new and changed segments applied and waited for; then the router
/// (which starts sending to them); segments gone from the map deleted last, after the router
/// stopped sending to them.
pub fn apply_script(new: &Workloads, changes: &Changes, relabelled: &[(u32, String)], first: bool, ns: &str) -> String {
    let mut s = String::from(
        "#!/bin/sh\n# Apply a parva export in the order that keeps serving segments undisturbed (parva export k8s).\n\
         # Run from this directory with kubectl pointing at the cluster.\nset -e\ncd \"$(dirname \"$0\")\"\n",
    );
    if first {
        s.push_str("kubectl apply -f namespace.yaml\n");
    }
    s.push_str("# 1. The MIG manager's layouts (every node's; only relabelled nodes act on them) and the map.\nkubectl apply -f mig-config.yaml\n");
    s.push_str("kubectl apply -f pdb.yaml\n");
    if changes.map_changed {
        s.push_str("kubectl apply -f map.yaml\n");
    }
    if !relabelled.is_empty() {
        s.push_str("# 2. Nodes whose MIG layout changes: stop their segments (the router ejects them), relabel, wait for the MIG manager.\n");
        for (n, name) in relabelled {
            s.push_str(&format!("kubectl delete deployment -n {ns} -l {NODE_LABEL}={n},app.kubernetes.io/component=segment --wait=true\n"));
            // `kubectl wait` fails when nothing matches (the first export): wait only for pods that exist.
            s.push_str(&format!(
                "if kubectl get pods -n {ns} -l {NODE_LABEL}={n},app.kubernetes.io/component=segment -o name | grep -q .; then\n  \
                 kubectl wait pod -n {ns} -l {NODE_LABEL}={n},app.kubernetes.io/component=segment --for=delete --timeout=5m\nfi\n"
            ));
            let _ = name;
        }
        s.push_str("sh node-labels.sh\n");
        for (_, name) in relabelled {
            s.push_str(&format!("kubectl wait node/{name} --for=jsonpath='{{.metadata.labels.nvidia\\.com/mig\\.config\\.state}}'=success --timeout=15m\n"));
        }
    }
    let apply = changes.to_apply();
    if !apply.is_empty() {
        s.push_str("# 3. New and changed segments, each waited for until ready.\n");
        for id in &apply {
            s.push_str(&format!("kubectl apply -f segments/{id}.yaml\n"));
        }
        for id in &apply {
            if let Some(name) = new.segments.get(id).and_then(|o| o.deployment.metadata.name.clone()) {
                s.push_str(&format!("kubectl rollout status -n {ns} deployment/{name} --timeout=15m\n"));
            }
        }
    }
    if changes.map_changed || first {
        s.push_str("# 4. The router with the new map (rolling, one replica at a time).\nkubectl apply -f router.yaml\n");
        if let Some(name) = &new.router.metadata.name {
            s.push_str(&format!("kubectl rollout status -n {ns} deployment/{name} --timeout=10m\n"));
        }
    }
    let removed: Vec<&SegmentId> = changes.removed.iter().collect();
    if !removed.is_empty() {
        s.push_str("# 5. Segments gone from the map, now that the router no longer sends to them.\n");
        for id in removed {
            s.push_str(&format!("kubectl delete -n {ns} deployment,service -l {SEGMENT_LABEL}={id} --ignore-not-found\n"));
        }
    }
    s
}

/// One wave of a rollout as `apply.sh` runs it (see [`rollout_script`]).
#[derive(Debug, Clone, PartialEq)]
pub struct WaveScript {
    /// The wave's nodes: number, Kubernetes name, and the MIG config to label it with when its
    /// layout changes (`None`: same layout, only its changed segments are replaced).
    pub nodes: Vec<(u32, String, Option<String>)>,
    /// Segments stopped first (old ones the wave replaces or removes).
    pub delete: Vec<SegmentId>,
    /// Segments started once the nodes are ready (`segments/<id>.yaml`).
    pub apply: Vec<SegmentId>,
    /// A comment line: each service's ready capacity during the wave against its floor.
    pub comment: String,
}

/// `apply.sh` for a rollout from a running export (`export k8s --from OLD`): the MIG layouts'
/// ConfigMap first; then per wave, the wave's changed segments stopped (and, for a node whose
/// layout changes, all its segments, the node relabelled and the MIG manager waited for), the
/// wave's map (`waves/<k>/map.yaml`: the old map with the nodes changed so far serving their new
/// segments), its new segments started and waited for, and the router rolled to that map; the
/// next wave starts only when this one is serving. `set -e` stops the script at the first
/// failure, with the cluster serving what the waves so far left (each keeps every service at its
/// floor; see `rollout.json`).
pub fn rollout_script(new: &Workloads, waves: &[WaveScript], map_changed: bool, ns: &str) -> String {
    let mut s = String::from(
        "#!/bin/sh\n# Roll a new parva map out wave by wave (parva export k8s --from): every service keeps ready capacity\n\
         # for its floor throughout (rollout.json). Run from this directory with kubectl pointing at the cluster.\n\
         # Stops at the first failure; the cluster then serves what the finished waves left.\nset -e\ncd \"$(dirname \"$0\")\"\n\
         kubectl apply -f mig-config.yaml\nkubectl apply -f pdb.yaml\n",
    );
    let router = new.router.metadata.name.clone().unwrap_or_default();
    for (k, w) in waves.iter().enumerate() {
        let names: Vec<&str> = w.nodes.iter().map(|n| n.1.as_str()).collect();
        s.push_str(&format!("\n# Wave {k}: {} ({})\necho \"wave {k}: {}\"\n", names.join(", "), w.comment, names.join(", ")));
        for id in &w.delete {
            s.push_str(&format!("kubectl delete -n {ns} deployment,service -l {SEGMENT_LABEL}={id} --ignore-not-found --wait=true\n"));
        }
        for (n, name, config) in &w.nodes {
            let pods = format!("{NODE_LABEL}={n},app.kubernetes.io/component=segment");
            if let Some(config) = config {
                s.push_str(&format!(
                    "kubectl delete deployment -n {ns} -l {pods} --wait=true\n\
                     if kubectl get pods -n {ns} -l {pods} -o name | grep -q .; then\n  kubectl wait pod -n {ns} -l {pods} --for=delete --timeout=5m\nfi\n\
                     kubectl label node {name} {CONFIG_LABEL}={config} --overwrite\n\
                     kubectl wait node/{name} --for=jsonpath='{{.metadata.labels.nvidia\\.com/mig\\.config\\.state}}'=success --timeout=15m\n",
                    CONFIG_LABEL = parva_gpu::migparted::CONFIG_LABEL
                ));
            }
        }
        s.push_str(&format!("kubectl apply -f waves/{k}/map.yaml\n"));
        for id in &w.apply {
            s.push_str(&format!("kubectl apply -f segments/{id}.yaml\n"));
        }
        for id in &w.apply {
            if let Some(name) = new.segments.get(id).and_then(|o| o.deployment.metadata.name.clone()) {
                s.push_str(&format!("kubectl rollout status -n {ns} deployment/{name} --timeout=15m\n"));
            }
        }
        s.push_str(&format!("kubectl apply -f waves/{k}/router.yaml\nkubectl rollout status -n {ns} deployment/{router} --timeout=10m\n"));
    }
    if waves.is_empty() && map_changed {
        // No segment changes, only the map's figures (rates, capacities): the map and the router.
        s.push_str(&format!(
            "\n# No node changes; the map's figures did.\nkubectl apply -f map.yaml\nkubectl apply -f router.yaml\nkubectl rollout status -n {ns} deployment/{router} --timeout=10m\n"
        ));
    }
    s
}

#[cfg(test)]
#[path = "k8s_tests.rs"]
mod tests;
