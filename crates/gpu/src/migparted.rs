//! The GPU Operator's MIG manager config for a map: NVIDIA mig-parted's `version: v1` format, one
//! named config per node, one entry per group of its GPUs with the same layout (`devices: [i]`,
//! `mig-enabled: true`, `mig-devices: {profile: count}`), selected on a node by the label
//! `nvidia.com/mig.config=<name>`.
//!
//! A config's name carries a digest of its layout (`<prefix>-node<N>-<8 hex>`): the MIG manager
//! acts when a node's label changes, so a changed layout must be a new name, and an unchanged one
//! keeps its name (no relabel, no reconfiguration).
//!
//! mig-parted takes counts, not placements: it tries orderings of the instances until they fit
//! (and clears a GPU's instances first), so [`check`] asks of every entry only that its counts
//! have some legal layout on the GPU type. The device plugin must run with the `mixed` MIG
//! strategy (several profiles per node), and the MIG manager needs the GPUs free: a node still
//! serving must be drained before it is relabelled.

use std::collections::{BTreeMap, BTreeSet};

use parva_core::deploy::segment_profile;
use parva_core::mig::{GpuType, Placement};
use parva_core::DeploymentMap;
use serde::{Deserialize, Serialize};

/// The label a node selects its config by.
pub const CONFIG_LABEL: &str = "nvidia.com/mig.config";
/// Longest Kubernetes label value.
pub const MAX_LABEL_VALUE: usize = 63;

/// A mig-parted config file (unknown keys are refused, as mig-parted refuses them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigPartedConfig {
    pub version: String,
    #[serde(rename = "mig-configs")]
    pub mig_configs: BTreeMap<String, Vec<MigConfigEntry>>,
}

/// One entry: the GPUs it applies to and their instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigConfigEntry {
    /// NVML indices of the node's GPUs.
    pub devices: Vec<u32>,
    #[serde(rename = "mig-enabled")]
    pub mig_enabled: bool,
    /// Instances per MIG profile name (`1g.10gb`: 2).
    #[serde(rename = "mig-devices")]
    pub mig_devices: BTreeMap<String, u32>,
}

/// Why a map has no MIG manager config, or a config breaks mig-parted's rules.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MigPartedError {
    #[error("node {node} GPU {gpu}: {problem}")]
    Layout { node: u32, gpu: u32, problem: String },
    #[error("config {config:?}: {rule}")]
    Rule { config: String, rule: String },
}

/// The config name of map node `node` with layout `entries` (a valid label value):
/// `<prefix>-node<N>-<digest of the entries>`.
pub fn config_name(prefix: &str, node: u32, entries: &[MigConfigEntry]) -> String {
    // FNV-1a over the entries' YAML: stable across runs and versions of parva.
    let text = serde_yaml_ng::to_string(entries).unwrap_or_default();
    let digest = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let node = format!("{node}-{:08x}", (digest >> 32) as u32 ^ digest as u32);
    let mut name: String = format!("{prefix}-node{node}").chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' }).collect();
    name = name.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string();
    if name.len() > MAX_LABEL_VALUE {
        // Keep the node number, which tells configs apart.
        let tail = format!("-node{node}");
        name = format!("{}{tail}", &name[..MAX_LABEL_VALUE - tail.len()].trim_end_matches(|c: char| !c.is_ascii_alphanumeric()));
    }
    name
}

/// Whether `v` is a valid label value: at most 63 characters, alphanumerics and `-_.`, beginning
/// and ending alphanumeric.
pub fn valid_label_value(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_LABEL_VALUE
        && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The config of every node of `map` (serving segments only: best-effort instances come and go
/// with the load). GPU `g` of the map is NVML index `index_map[g]` (default `g`).
pub fn for_map(map: &DeploymentMap, gpu: &GpuType, prefix: &str, index_map: &BTreeMap<u32, u32>) -> Result<MigPartedConfig, MigPartedError> {
    let mut per_gpu: BTreeMap<(u32, u32), BTreeMap<String, u32>> = BTreeMap::new();
    for s in &map.segments {
        let p = segment_profile(gpu, s).map_err(|problem| MigPartedError::Layout { node: s.node, gpu: s.gpu, problem })?;
        *per_gpu.entry((s.node, s.gpu)).or_default().entry(p.name.to_string()).or_default() += 1;
    }
    let mut per_node: BTreeMap<u32, Vec<MigConfigEntry>> = BTreeMap::new();
    for ((node, g), counts) in per_gpu {
        let entries = per_node.entry(node).or_default();
        let device = index_map.get(&g).copied().unwrap_or(g);
        match entries.iter_mut().find(|e| e.mig_devices == counts) {
            Some(e) => e.devices.push(device),
            None => entries.push(MigConfigEntry { devices: vec![device], mig_enabled: true, mig_devices: counts }),
        }
    }
    let mig_configs = per_node.into_iter().map(|(node, entries)| (config_name(prefix, node, &entries), entries)).collect();
    let config = MigPartedConfig { version: "v1".into(), mig_configs };
    check(&config, gpu)?;
    Ok(config)
}

/// The config of a mixed fleet's map: each node's layouts as its own GPU type's (`types`: node ->
/// type), every part checked against its type, merged into one config (names are per node).
pub fn for_map_by_node(
    map: &DeploymentMap,
    types: &BTreeMap<u32, &'static GpuType>,
    prefix: &str,
    index_map: &BTreeMap<u32, u32>,
) -> Result<MigPartedConfig, MigPartedError> {
    let mut by_type: BTreeMap<&str, (&GpuType, Vec<u32>)> = BTreeMap::new();
    for (node, ty) in types {
        by_type.entry(ty.id).or_insert((ty, Vec::new())).1.push(*node);
    }
    let mut merged = MigPartedConfig { version: "v1".into(), mig_configs: BTreeMap::new() };
    for (ty, nodes) in by_type.values() {
        let part = DeploymentMap { segments: map.segments.iter().filter(|s| nodes.contains(&s.node)).cloned().collect(), jobs: Vec::new() };
        if part.segments.is_empty() {
            continue;
        }
        merged.mig_configs.extend(for_map(&part, ty, prefix, index_map)?.mig_configs);
    }
    if let Some(s) = map.segments.iter().find(|s| !types.contains_key(&s.node)) {
        return Err(MigPartedError::Layout { node: s.node, gpu: s.gpu, problem: "the node has no GPU type".into() });
    }
    Ok(merged)
}

/// mig-parted's v1 rules: version `v1`; config names valid label values; every entry with devices,
/// none listed twice in a config, `mig-devices` only with `mig-enabled`; every profile one of the
/// GPU type's and every entry's counts a legal layout of it.
pub fn check(config: &MigPartedConfig, gpu: &GpuType) -> Result<(), MigPartedError> {
    let rule = |config: &str, rule: String| MigPartedError::Rule { config: config.to_string(), rule };
    if config.version != "v1" {
        return Err(rule("", format!("version must be \"v1\", found {:?}", config.version)));
    }
    if config.mig_configs.is_empty() {
        return Err(rule("", "mig-configs holds no config".into()));
    }
    for (name, entries) in &config.mig_configs {
        if !valid_label_value(name) {
            return Err(rule(name, format!("is not a valid label value for {CONFIG_LABEL} (<= {MAX_LABEL_VALUE} characters: letters, digits, -_., alphanumeric at both ends)")));
        }
        let mut seen = BTreeSet::new();
        for e in entries {
            if e.devices.is_empty() {
                return Err(rule(name, "an entry lists no devices".into()));
            }
            if let Some(d) = e.devices.iter().find(|d| !seen.insert(**d)) {
                return Err(rule(name, format!("device {d} is in two entries")));
            }
            if !e.mig_enabled && !e.mig_devices.is_empty() {
                return Err(rule(name, "mig-devices without mig-enabled".into()));
            }
            let mut want: Vec<&'static parva_core::mig::GiProfile> = Vec::new();
            for (p, n) in &e.mig_devices {
                let profile = gpu.profile_by_name(p).ok_or_else(|| rule(name, format!("{p} is not a MIG profile of {}", gpu.id)))?;
                want.extend(std::iter::repeat_n(profile, *n as usize));
            }
            want.sort_by_key(|p| std::cmp::Reverse(p.gpcs));
            if !fits(gpu, &want, &mut Vec::new()) {
                return Err(rule(name, format!("{:?} has no legal layout on {}", e.mig_devices, gpu.id)));
            }
        }
    }
    Ok(())
}

/// Whether `want` (largest first) can be placed beside `layout`, trying every legal start.
fn fits(gpu: &GpuType, want: &[&'static parva_core::mig::GiProfile], layout: &mut Vec<Placement>) -> bool {
    let Some((first, rest)) = want.split_first() else { return true };
    for start in gpu.free_starts(layout, first) {
        layout.push(Placement { profile: first, start });
        let ok = fits(gpu, rest, layout);
        layout.pop();
        if ok {
            return true;
        }
    }
    false
}

impl MigPartedConfig {
    /// The config name of map node `node` (`<prefix>-node<N>-...`), when the config has one.
    pub fn name_of(&self, prefix: &str, node: u32) -> Option<&str> {
        let head = format!("{prefix}-node{node}-");
        self.mig_configs.keys().find(|k| k.starts_with(&head)).map(String::as_str)
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).unwrap_or_default()
    }

    /// Read a config, refusing unknown keys.
    pub fn from_yaml(text: &str) -> Result<MigPartedConfig, String> {
        serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn map(rows: &str) -> DeploymentMap {
        let head = "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n";
        DeploymentMap::read_from(format!("{head}{rows}").as_bytes(), Path::new("m.csv")).unwrap().0
    }

    fn a100() -> &'static GpuType {
        GpuType::by_id("a100-80gb").unwrap()
    }

    #[test]
    fn one_config_per_node_with_gpus_of_one_layout_grouped() {
        let m = map(
            "0,0,a,m,0,4,8,1,,a100-80gb,,,\n0,0,b,m,4,2,8,1,,a100-80gb,,,\n0,0,c,m,6,1,8,1,,a100-80gb,,,\n\
             0,1,a,m,0,4,8,1,,a100-80gb,,,\n0,1,b,m,4,2,8,1,,a100-80gb,,,\n0,1,c,m,6,1,8,1,,a100-80gb,,,\n\
             0,2,d,m,0,7,8,1,,a100-80gb,,,\n1,0,e,m,0,3,8,1,,a100-80gb,,,\n1,0,e,m,4,3,8,1,,a100-80gb,,,\n",
        );
        let c = for_map(&m, a100(), "parva", &BTreeMap::new()).unwrap();
        let (n0_name, n1_name) = (c.name_of("parva", 0).unwrap().to_string(), c.name_of("parva", 1).unwrap().to_string());
        assert_eq!(c.mig_configs.len(), 2);
        let n0 = &c.mig_configs[&n0_name];
        assert_eq!(n0.len(), 2);
        assert_eq!(n0[0].devices, [0, 1]);
        assert_eq!(n0[0].mig_devices, [("1g.10gb".to_string(), 1), ("2g.20gb".into(), 1), ("4g.40gb".into(), 1)].into_iter().collect());
        assert_eq!(n0[1].devices, [2]);
        assert_eq!(c.mig_configs[&n1_name][0].mig_devices, [("3g.40gb".to_string(), 2)].into_iter().collect());
        // The YAML reads back the same, with mig-parted's key names.
        let y = c.to_yaml();
        assert!(y.starts_with("version: v1\nmig-configs:\n"), "{y}");
        assert!(y.contains("mig-enabled: true") && y.contains("mig-devices:") && y.contains("1g.10gb: 1"), "{y}");
        assert_eq!(MigPartedConfig::from_yaml(&y).unwrap(), c);
        // A GPU index map renumbers the devices.
        let c2 = for_map(&m, a100(), "parva", &[(2, 5)].into_iter().collect()).unwrap();
        assert_eq!(c2.mig_configs[c2.name_of("parva", 0).unwrap()][1].devices, [5]);
        // The name follows the layout: node 0 changed (a device renumbered), node 1 did not.
        assert_ne!(c2.name_of("parva", 0).unwrap(), n0_name);
        assert_eq!(c2.name_of("parva", 1).unwrap(), n1_name);
    }

    #[test]
    fn configs_that_break_mig_parted_rules_are_refused() {
        let good = for_map(&map("0,0,a,m,0,7,8,1,,a100-80gb,,,\n"), a100(), "parva", &BTreeMap::new()).unwrap();
        let bad = |f: &dyn Fn(&mut MigPartedConfig)| {
            let mut c = good.clone();
            f(&mut c);
            check(&c, a100()).unwrap_err().to_string()
        };
        assert!(bad(&|c| c.version = "v2".into()).contains("version must be \"v1\""));
        assert!(bad(&|c| {
            let name = c.name_of("parva", 0).unwrap().to_string();
            let e = c.mig_configs.remove(&name).unwrap();
            c.mig_configs.insert("Bad name!".into(), e);
        })
        .contains("not a valid label value"));
        assert!(bad(&|c| c.mig_configs.values_mut().next().unwrap()[0].devices.clear()).contains("lists no devices"));
        assert!(bad(&|c| {
            let e = c.mig_configs.values().next().unwrap()[0].clone();
            c.mig_configs.values_mut().next().unwrap().push(e);
        })
        .contains("device 0 is in two entries"));
        assert!(bad(&|c| c.mig_configs.values_mut().next().unwrap()[0].mig_devices = [("7g.80gb".into(), 2)].into_iter().collect())
            .contains("has no legal layout"));
        assert!(bad(&|c| c.mig_configs.values_mut().next().unwrap()[0].mig_devices = [("5g.50gb".into(), 1)].into_iter().collect())
            .contains("not a MIG profile of a100-80gb"));
        assert!(MigPartedConfig::from_yaml("version: v1\nmig-configs: {}\nextra: 1\n").unwrap_err().contains("unknown field"));
    }

    #[test]
    fn config_names_are_valid_label_values() {
        let e = [MigConfigEntry { devices: vec![0], mig_enabled: true, mig_devices: [("7g.80gb".to_string(), 1)].into_iter().collect() }];
        let n = config_name("parva", 3, &e);
        assert!(n.starts_with("parva-node3-") && n.len() == "parva-node3-".len() + 8, "{n}");
        assert_eq!(config_name("parva", 3, &e), n, "stable");
        assert!(config_name("My Fleet/A", 0, &e).starts_with("My-Fleet-A-node0-"));
        let long = config_name(&"x".repeat(100), 12, &e);
        assert!(valid_label_value(&long) && long.contains("-node12-") && long.len() <= 63, "{long}");
        assert!(!valid_label_value("-a") && !valid_label_value("") && valid_label_value("a.b_c-d"));
    }
}
