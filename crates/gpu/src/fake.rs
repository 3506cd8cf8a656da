//! A stateful fake node of GPUs implementing [`MigControl`] with the real placement rules of each
//! catalogue GPU type ([`parva_core::mig`]): it refuses illegal starts, overlapping memory
//! slices, more GPCs or instances than the GPU has, unknown profiles, MIG calls on a GPU whose
//! MIG mode is off, and destroying an instance a process uses. It records every call and can fail
//! any one of them ([`Fault`]). Its state can live in a JSON file so that successive `parva`
//! commands see the same "GPUs" (`PARVA_FAKE_GPUS`, see the README). Each fake GPU reports a
//! product name and PCI device id (by default its type's first catalogue product), so that the
//! identification path ([`GpuInfo::identify`]) is the real one; a test may make it report
//! another product (a GH200, say) to see it refused. A fake GPU may be of a type parva does not
//! know: `PATH.toml:COUNT` in the spec takes the geometry from a catalogue file as the fake's
//! "hardware" (kept in the state file, never registered), so that reading a GPU's geometry
//! (`parva catalogue --from-gpu`) can be tested on a type parva has no entry for.

use std::path::{Path, PathBuf};

use parva_core::mig::{GpuType, Placement};
use serde::{Deserialize, Serialize};

use crate::fault::{CallLog, Fault};
use crate::mig::{GpuInfo, GpuProcess, MigControl, MigError, MigInstance, MigMode};

/// One fake GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FakeGpu {
    /// Catalogue id (`a100-80gb`, ...): the MIG rules the fake enforces.
    pub gpu_type: String,
    /// Product name it reports; absent (state files written before it existed): the type's first
    /// catalogue product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    /// PCI device id it reports (`0x20B210DE`); absent: as for `product_name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_device_id: Option<u32>,
    /// Catalogue text of this GPU's geometry when it is not a type parva knows (the "hardware";
    /// never registered): `gpu_type` is then its type's id in that text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<String>,
    pub uuid: String,
    pub mig: MigMode,
    pub instances: Vec<MigInstance>,
    pub processes: Vec<GpuProcess>,
}

/// The whole fake node (what the state file holds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FakeState {
    pub gpus: Vec<FakeGpu>,
    /// Counter for MIG device UUIDs, so that a re-created instance gets a new UUID as on hardware.
    pub serial: u64,
    /// Whether the "user" may change MIG instances.
    pub privileged: bool,
}

/// Bad `PARVA_FAKE_GPUS`-style spec.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("bad fake GPU spec `{spec}`: {reason} (expected TYPE:COUNT[,TYPE:COUNT...], e.g. a100-80gb:8; TYPE may be a catalogue file FILE.toml)")]
pub struct BadSpec {
    pub spec: String,
    pub reason: String,
}

/// Most GPUs of one type a fake node has.
pub const MAX_FAKE_GPUS: u32 = 64;

impl FakeState {
    /// Fresh GPUs with MIG mode enabled and no instances, e.g. from `a100-80gb:8` or
    /// `a100-80gb:2,h100-80gb:2`.
    pub fn from_spec(spec: &str) -> Result<FakeState, BadSpec> {
        let bad = |reason: String| BadSpec { spec: spec.to_string(), reason };
        let mut gpus = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (ty, count) = match part.rsplit_once(':') {
                Some((ty, count)) if !count.contains('/') && !count.ends_with(".toml") => (ty, count),
                _ => (part, "1"),
            };
            let (gpu_type, hardware) = if ty.ends_with(".toml") {
                let types = parva_core::catalogue::load_file(Path::new(ty)).map_err(|e| bad(e.to_string()))?;
                let text = std::fs::read_to_string(ty).map_err(|e| bad(e.to_string()))?;
                let first = types.first().copied().ok_or_else(|| bad(format!("{ty} has no GPU type")))?;
                (first, Some(text))
            } else {
                (GpuType::by_id(ty).map_err(|e| bad(e.to_string()))?, None)
            };
            // Regression (issue 34): `a100-80gb:0` was a bare "bad spec" and `:99999999999` "not a number".
            let count: u32 = match count.trim().parse::<u64>() {
                Ok(n) if (1..=MAX_FAKE_GPUS as u64).contains(&n) => n as u32,
                Ok(n) => return Err(bad(format!("{n} GPUs of {ty}: a fake node has 1 to {MAX_FAKE_GPUS} GPUs of a type (TYPE:COUNT, e.g. a100-80gb:8)"))),
                Err(_) => return Err(bad(format!("count `{count}` is not a whole number of GPUs (TYPE:COUNT, e.g. a100-80gb:8)"))),
            };
            // An MPS type: a GPU without MIG, or (`-nomig`) a MIG GPU with MIG mode off, which
            // NVML names as its MIG type.
            let sibling = gpu_type.mig_sibling();
            let mig = match (gpu_type.is_mps(), sibling) {
                (false, _) => MigMode::ENABLED,
                (true, Some(_)) => MigMode::DISABLED,
                (true, None) => MigMode::UNSUPPORTED,
            };
            for _ in 0..count {
                let index = gpus.len();
                let product = sibling.unwrap_or(gpu_type).products.first();
                gpus.push(FakeGpu {
                    gpu_type: sibling.unwrap_or(gpu_type).id.to_string(),
                    product_name: product.map(|p| p.name.to_string()),
                    pci_device_id: product.map(|p| p.pci_device_id),
                    hardware: hardware.clone(),
                    uuid: format!("GPU-fa4e0000-0000-4000-8000-{index:012x}"),
                    mig,
                    instances: Vec::new(),
                    processes: Vec::new(),
                });
            }
        }
        if gpus.is_empty() {
            return Err(bad("no GPUs".into()));
        }
        Ok(FakeState { gpus, serial: 0, privileged: true })
    }
}

/// The fake, optionally persisted to a state file after every change.
#[derive(Debug, Clone)]
pub struct FakeGpus {
    state: FakeState,
    log: CallLog,
    file: Option<PathBuf>,
}

impl FakeGpus {
    pub fn new(state: FakeState) -> Self {
        FakeGpus { state, log: CallLog::default(), file: None }
    }

    /// Fresh GPUs from a spec (see [`FakeState::from_spec`]).
    pub fn from_spec(spec: &str) -> Result<Self, BadSpec> {
        FakeState::from_spec(spec).map(Self::new)
    }

    /// Load the state from `path` when it exists, else start from `spec`; keep `path` updated.
    pub fn with_state_file(spec: &str, path: &Path) -> Result<Self, MigError> {
        let err = |message: String| MigError::FakeState { path: path.display().to_string(), message };
        let state = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FakeState::from_spec(spec).map_err(|e| err(e.to_string()))?,
            Err(e) => return Err(err(e.to_string())),
        };
        // Written on the first change only, so that a dry run leaves no file behind.
        Ok(FakeGpus { state, log: CallLog::default(), file: Some(path.to_path_buf()) })
    }

    pub fn state(&self) -> &FakeState {
        &self.state
    }

    pub fn state_mut(&mut self) -> &mut FakeState {
        &mut self.state
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> &[String] {
        &self.log.calls
    }

    pub fn set_fault(&mut self, fault: Option<Fault>) {
        self.log.set_fault(fault);
    }

    /// The GPU's layout as sorted `(profile id, start)` pairs.
    pub fn layout(&self, gpu: u32) -> Vec<(u32, u8)> {
        let mut l: Vec<(u32, u8)> = self.state.gpus.get(gpu as usize).map_or_else(Vec::new, |g| {
            g.instances.iter().map(|i| (i.profile_id, i.start)).collect()
        });
        l.sort_unstable();
        l
    }

    /// Every GPU's layout.
    pub fn layouts(&self) -> Vec<Vec<(u32, u8)>> {
        (0..self.state.gpus.len() as u32).map(|g| self.layout(g)).collect()
    }

    /// Put a process on GI `gi_id` of GPU `gpu` (a "foreign" user of the instance).
    pub fn add_process(&mut self, gpu: u32, gi_id: Option<u32>, pid: u32) {
        if let Some(g) = self.state.gpus.get_mut(gpu as usize) {
            g.processes.push(GpuProcess { pid, gi_id, name: Some("python3".into()) });
        }
    }

    fn save(&self) -> Result<(), MigError> {
        let Some(path) = &self.file else { return Ok(()) };
        let err = |message: String| MigError::FakeState { path: path.display().to_string(), message };
        let bytes = serde_json::to_vec_pretty(&self.state).map_err(|e| err(e.to_string()))?;
        parva_core::files::write_atomic(path, &bytes).map_err(|e| err(format!("{e:#}")))
    }

    fn record(&mut self, call: String) -> Result<(), MigError> {
        match self.log.record(call) {
            Some(n) => Err(MigError::Injected { n, call: self.log.calls[n - 1].clone() }),
            None => Ok(()),
        }
    }

    fn gpu(&self, gpu: u32) -> Result<&FakeGpu, MigError> {
        self.state.gpus.get(gpu as usize).ok_or(MigError::NoSuchGpu { gpu, count: self.state.gpus.len() })
    }

    fn mig_gpu(&self, gpu: u32) -> Result<(&FakeGpu, &'static GpuType), MigError> {
        let g = self.gpu(gpu)?;
        if !g.mig.current {
            return Err(MigError::MigDisabled { gpu, uuid: g.uuid.clone() });
        }
        let ty = g.geometry().map_err(|message| MigError::FakeState {
            path: self.file.as_ref().map_or("<memory>".into(), |p| p.display().to_string()),
            message,
        })?;
        Ok((g, ty))
    }
}

/// Fake hardware geometries parsed so far, by their text (each parsed and leaked once).
static HARDWARE: std::sync::Mutex<Vec<(String, &'static GpuType)>> = std::sync::Mutex::new(Vec::new());

impl FakeGpu {
    /// The product name and PCI device id this fake reports: its own, else its type's first
    /// catalogue product's (else its type id, which no catalogue product is named: refused).
    pub fn product(&self) -> (String, Option<u32>) {
        let first = self.geometry().ok().and_then(|t| t.products.first());
        let name = self.product_name.clone().or_else(|| first.map(|p| p.name.to_string())).unwrap_or_else(|| self.gpu_type.clone());
        let id = if self.product_name.is_some() { self.pci_device_id } else { self.pci_device_id.or(first.map(|p| p.pci_device_id)) };
        (name, id)
    }
}

impl FakeGpu {
    /// The MIG geometry this fake GPU has: its `hardware` text's type, else the catalogue's
    /// `gpu_type`.
    pub fn geometry(&self) -> Result<&'static GpuType, String> {
        let Some(text) = &self.hardware else {
            return GpuType::by_id(&self.gpu_type).map_err(|e| e.to_string());
        };
        let mut cache = HARDWARE.lock().unwrap_or_else(|e| e.into_inner());
        let types = match cache.iter().find(|(t, _)| t == text) {
            Some(_) => cache.iter().filter(|(t, _)| t == text).map(|(_, ty)| *ty).collect::<Vec<_>>(),
            None => {
                let types = parva_core::catalogue::parse(text, "fake GPU hardware").map_err(|e| e.to_string())?;
                cache.extend(types.iter().map(|ty| (text.clone(), *ty)));
                types
            }
        };
        types.into_iter().find(|t| t.id == self.gpu_type).ok_or_else(|| format!("the fake GPU's hardware has no type `{}`", self.gpu_type))
    }
}

impl MigControl for FakeGpus {
    fn gpus(&mut self) -> Result<Vec<GpuInfo>, MigError> {
        self.record("gpus".into())?;
        Ok(self
            .state
            .gpus
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let (name, pci_device_id) = g.product();
                GpuInfo { index: i as u32, uuid: g.uuid.clone(), name, mig: g.mig, pci_device_id }
            })
            .collect())
    }

    fn instances(&mut self, gpu: u32) -> Result<Vec<MigInstance>, MigError> {
        self.record(format!("instances gpu={gpu}"))?;
        let (g, _) = self.mig_gpu(gpu)?;
        let mut v = g.instances.clone();
        v.sort_by_key(|i| i.gi_id);
        Ok(v)
    }

    fn create_instance(&mut self, gpu: u32, profile_id: u32, start: u8) -> Result<MigInstance, MigError> {
        self.record(format!("create_instance gpu={gpu} profile={profile_id} start={start}"))?;
        let (g, ty) = self.mig_gpu(gpu)?;
        let uuid = g.uuid.clone();
        let profile = ty.profile_by_id(profile_id).ok_or_else(|| MigError::UnknownProfile {
            gpu,
            uuid: uuid.clone(),
            profile_id,
            gpu_type: ty.id.to_string(),
        })?;
        let mut layout: Vec<Placement> = g
            .instances
            .iter()
            .filter_map(|i| ty.profile_by_id(i.profile_id).map(|p| Placement { profile: p, start: i.start }))
            .collect();
        layout.push(Placement { profile, start });
        ty.validate(&layout).map_err(|e| MigError::Placement {
            gpu,
            uuid: uuid.clone(),
            profile: profile.name.to_string(),
            start,
            size: profile.mem_slices,
            reason: e.to_string(),
        })?;
        let gi_id = (1..).find(|id| !g.instances.iter().any(|i| i.gi_id == *id)).unwrap_or(1);
        self.state.serial += 1;
        let serial = self.state.serial;
        let inst = MigInstance {
            gi_id,
            profile_id,
            start,
            size: profile.mem_slices,
            ci_ids: vec![0],
            uuid: Some(format!("MIG-{serial:08x}-fa4e-4{gpu:03x}-8{profile_id:03x}-{start:012x}")),
        };
        self.state.gpus[gpu as usize].instances.push(inst.clone());
        self.save()?;
        Ok(inst)
    }

    fn destroy_instance(&mut self, gpu: u32, gi_id: u32) -> Result<(), MigError> {
        self.record(format!("destroy_instance gpu={gpu} gi={gi_id}"))?;
        let (g, ty) = self.mig_gpu(gpu)?;
        let pos = g.instances.iter().position(|i| i.gi_id == gi_id).ok_or_else(|| MigError::NoSuchInstance {
            gpu,
            uuid: g.uuid.clone(),
            gi_id,
        })?;
        let pids: Vec<u32> = g.processes.iter().filter(|p| p.gi_id == Some(gi_id)).map(|p| p.pid).collect();
        if !pids.is_empty() {
            let inst = &g.instances[pos];
            return Err(MigError::InUse {
                gpu,
                uuid: g.uuid.clone(),
                gi_id,
                profile: ty.profile_by_id(inst.profile_id).map_or_else(|| inst.profile_id.to_string(), |p| p.name.to_string()),
                start: inst.start,
                pids,
            });
        }
        self.state.gpus[gpu as usize].instances.remove(pos);
        self.save()
    }

    fn processes(&mut self, gpu: u32) -> Result<Vec<GpuProcess>, MigError> {
        self.record(format!("processes gpu={gpu}"))?;
        Ok(self.gpu(gpu)?.processes.clone())
    }

    fn profile_geometry(&mut self, gpu: u32) -> Result<Vec<parva_core::catalogue::NvmlProfile>, MigError> {
        self.record(format!("profile_geometry gpu={gpu}"))?;
        // As NVML: answered with MIG mode off too.
        let g = self.gpu(gpu)?;
        let ty = g.geometry().map_err(|message| MigError::FakeState {
            path: self.file.as_ref().map_or("<memory>".into(), |p| p.display().to_string()),
            message,
        })?;
        Ok(ty
            .profiles
            .iter()
            .map(|p| parva_core::catalogue::NvmlProfile {
                id: p.id,
                name: format!("MIG {}", p.name),
                slice_count: p.gpcs.into(),
                instance_count: p.max_count.into(),
                multiprocessor_count: p.sms.into(),
                memory_size_mb: u64::from(p.mem_mib),
                placements: p.starts.iter().map(|&s| (u32::from(s), u32::from(p.mem_slices))).collect(),
            })
            .collect())
    }

    fn check_privileges(&mut self) -> Result<(), MigError> {
        self.record("check_privileges".into())?;
        if self.state.privileged { Ok(()) } else { Err(MigError::NoPrivilege { uid: 1000 }) }
    }
}

#[cfg(test)]
#[path = "fake_tests.rs"]
mod tests;
