//! The GPU Operator's MIG manager config for a map: NVIDIA mig-parted's `version: v1` format, one
//! named config per node, one entry per group of its GPUs with the same layout (`devices: [i]`,
//! `mig-enabled: true`, `mig-devices: {profile: count}`), selected on a node by the label
//! `nvidia.com/mig.config=<name>`.
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

/// The config name of map node `node` (a valid label value): `<prefix>-node<N>`.
pub fn config_name(prefix: &str, node: u32) -> String {
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
    let mut mig_configs: BTreeMap<String, Vec<MigConfigEntry>> = BTreeMap::new();
    for ((node, g), counts) in per_gpu {
        let entries = mig_configs.entry(config_name(prefix, node)).or_default();
        let device = index_map.get(&g).copied().unwrap_or(g);
        match entries.iter_mut().find(|e| e.mig_devices == counts) {
            Some(e) => e.devices.push(device),
            None => entries.push(MigConfigEntry { devices: vec![device], mig_enabled: true, mig_devices: counts }),
        }
    }
    let config = MigPartedConfig { version: "v1".into(), mig_configs };
    check(&config, gpu)?;
    Ok(config)
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
            want.sort_by(|a, b| b.gpcs.cmp(&a.gpcs));
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
        assert_eq!(c.mig_configs.keys().collect::<Vec<_>>(), ["parva-node0", "parva-node1"]);
        let n0 = &c.mig_configs["parva-node0"];
        assert_eq!(n0.len(), 2);
        assert_eq!(n0[0].devices, [0, 1]);
        assert_eq!(n0[0].mig_devices, [("1g.10gb".to_string(), 1), ("2g.20gb".into(), 1), ("4g.40gb".into(), 1)].into_iter().collect());
        assert_eq!(n0[1].devices, [2]);
        assert_eq!(c.mig_configs["parva-node1"][0].mig_devices, [("3g.40gb".to_string(), 2)].into_iter().collect());
        // The YAML reads back the same, with mig-parted's key names.
        let y = c.to_yaml();
        assert!(y.starts_with("version: v1\nmig-configs:\n"), "{y}");
        assert!(y.contains("mig-enabled: true") && y.contains("mig-devices:") && y.contains("1g.10gb: 1"), "{y}");
        assert_eq!(MigPartedConfig::from_yaml(&y).unwrap(), c);
        // A GPU index map renumbers the devices.
        let c = for_map(&m, a100(), "parva", &[(2, 5)].into_iter().collect()).unwrap();
        assert_eq!(c.mig_configs["parva-node0"][1].devices, [5]);
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
            let e = c.mig_configs.remove("parva-node0").unwrap();
            c.mig_configs.insert("Bad name!".into(), e);
        })
        .contains("not a valid label value"));
        assert!(bad(&|c| c.mig_configs.get_mut("parva-node0").unwrap()[0].devices.clear()).contains("lists no devices"));
        assert!(bad(&|c| {
            let e = c.mig_configs["parva-node0"][0].clone();
            c.mig_configs.get_mut("parva-node0").unwrap().push(e);
        })
        .contains("device 0 is in two entries"));
        assert!(bad(&|c| c.mig_configs.get_mut("parva-node0").unwrap()[0].mig_devices = [("7g.80gb".into(), 2)].into_iter().collect())
            .contains("has no legal layout"));
        assert!(bad(&|c| c.mig_configs.get_mut("parva-node0").unwrap()[0].mig_devices = [("5g.50gb".into(), 1)].into_iter().collect())
            .contains("not a MIG profile of a100-80gb"));
        assert!(MigPartedConfig::from_yaml("version: v1\nmig-configs: {}\nextra: 1\n").unwrap_err().contains("unknown field"));
    }

    #[test]
    fn config_names_are_valid_label_values() {
        assert_eq!(config_name("parva", 3), "parva-node3");
        assert_eq!(config_name("My Fleet/A", 0), "My-Fleet-A-node0");
        let long = config_name(&"x".repeat(100), 12);
        assert!(valid_label_value(&long) && long.ends_with("-node12") && long.len() <= 63, "{long}");
        assert!(!valid_label_value("-a") && !valid_label_value("") && valid_label_value("a.b_c-d"));
    }
}
