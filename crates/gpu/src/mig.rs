//! The narrow MIG-control interface parva needs, and the types it speaks.
//!
//! GPUs are addressed by their NVML index on the node; a GPU instance (GI) by its GI id on that
//! GPU. Every GI parva creates gets exactly one compute instance (CI) spanning it, so a GI is one
//! MIG device with one UUID (`MIG-...`), the value of `CUDA_VISIBLE_DEVICES` for its processes.
//! Implementations: [`crate::nvml::NvmlMig`] (the real driver) and [`crate::fake::FakeGpus`].

use parva_core::mig::{GiProfile, GpuType, UnknownGpu};
use serde::{Deserialize, Serialize};

/// A physical GPU of the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// NVML index on the node.
    pub index: u32,
    /// `GPU-...` UUID.
    pub uuid: String,
    /// Product name as NVML reports it (e.g. `NVIDIA A100-SXM4-80GB`).
    pub name: String,
    pub mig: MigMode,
    /// PCI device id as NVML reports it (`nvmlPciInfo_t.pciDeviceId`, e.g. `0x20B210DE`), when
    /// known (absent from files written before parva read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_device_id: Option<u32>,
}

impl GpuInfo {
    /// The catalogue type of this GPU, from its PCI device id or exact product name; the error
    /// names both and the products parva knows (see [`GpuType::identify`]).
    pub fn identify(&self) -> Result<&'static GpuType, UnknownGpu> {
        GpuType::identify(&self.name, self.pci_device_id)
    }

    /// [`Self::identify`], without the reason.
    pub fn gpu_type(&self) -> Option<&'static GpuType> {
        self.identify().ok()
    }

    /// `NVIDIA H100 PCIe (PCI device id 0x233110DE)`, or the name alone when the id is unknown.
    pub fn product(&self) -> String {
        match self.pci_device_id {
            Some(id) => format!("{} (PCI device id {})", self.name, parva_core::mig::pci_id_text(id)),
            None => self.name.clone(),
        }
    }
}

/// MIG mode of a GPU: what is active now and what applies after the next GPU reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigMode {
    pub supported: bool,
    pub current: bool,
    pub pending: bool,
}

impl MigMode {
    pub const ENABLED: MigMode = MigMode { supported: true, current: true, pending: true };
    pub const DISABLED: MigMode = MigMode { supported: true, current: false, pending: false };
    /// A GPU without MIG (V100, T4, A10, L4, L40S, ...).
    pub const UNSUPPORTED: MigMode = MigMode { supported: false, current: false, pending: false };
}

/// A GPU instance with its compute instances and MIG device UUID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigInstance {
    /// GI id on its GPU (NVML's `nvmlGpuInstanceInfo_t.id`).
    pub gi_id: u32,
    /// GI profile id (19, 15, 14, 9, 5, 0 on A100).
    pub profile_id: u32,
    /// Placement start in memory slices.
    pub start: u8,
    /// Placement size in memory slices.
    pub size: u8,
    /// Compute instance ids inside the GI.
    pub ci_ids: Vec<u32>,
    /// UUID of the MIG device (`MIG-...`), when the GI has a compute instance.
    pub uuid: Option<String>,
}

/// A process holding a context on a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuProcess {
    pub pid: u32,
    /// GI it runs in (MIG mode), if any.
    pub gi_id: Option<u32>,
    /// Executable name (`/proc/<pid>/comm`), when readable.
    pub name: Option<String>,
}

/// What can go wrong controlling MIG. Messages name the GPU (index and UUID), the profile, the
/// placement and the limit broken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MigError {
    #[error("cannot load NVML ({0}); is the NVIDIA driver installed on this node?")]
    Load(String),
    #[error("GPU {gpu} ({uuid}): NVML {call} failed: {message}")]
    Nvml { gpu: u32, uuid: String, call: &'static str, message: String },
    #[error("GPU {gpu}: no such GPU on this node (it has {count})")]
    NoSuchGpu { gpu: u32, count: usize },
    #[error("GPU {gpu} ({uuid}): MIG profile id {profile_id} is not a GPU-instance profile of {gpu_type}")]
    UnknownProfile { gpu: u32, uuid: String, profile_id: u32, gpu_type: String },
    #[error("GPU {gpu} ({uuid}): cannot create {profile} at placement {{{start}}}:{size}: {reason}")]
    Placement { gpu: u32, uuid: String, profile: String, start: u8, size: u8, reason: String },
    #[error("GPU {gpu} ({uuid}): no GPU instance with id {gi_id}")]
    NoSuchInstance { gpu: u32, uuid: String, gi_id: u32 },
    #[error("GPU {gpu} ({uuid}): {profile} at placement {{{start}}} (GI {gi_id}) is in use by process(es) {pids:?}")]
    InUse { gpu: u32, uuid: String, gi_id: u32, profile: String, start: u8, pids: Vec<u32> },
    #[error("GPU {gpu} ({uuid}): MIG mode is disabled")]
    MigDisabled { gpu: u32, uuid: String },
    #[error("changing MIG instances needs root (this process runs with effective uid {uid}); run it as root")]
    NoPrivilege { uid: u32 },
    #[error("injected failure at call #{n} `{call}`")]
    Injected { n: usize, call: String },
    #[error("fake GPU state file {path}: {message}")]
    FakeState { path: String, message: String },
}

/// The MIG operations parva needs. Mutating calls take `&mut self` so that fakes can record.
pub trait MigControl {
    /// The node's GPUs, by NVML index.
    fn gpus(&mut self) -> Result<Vec<GpuInfo>, MigError>;
    /// GPU instances of GPU `gpu`, each with its compute instances and MIG device UUID.
    fn instances(&mut self, gpu: u32) -> Result<Vec<MigInstance>, MigError>;
    /// Create a GI of `profile_id` at placement `start` and one compute instance spanning it.
    /// On a failure after the GI exists, the GI is destroyed again.
    fn create_instance(&mut self, gpu: u32, profile_id: u32, start: u8) -> Result<MigInstance, MigError>;
    /// Destroy the compute instances of GI `gi_id`, then the GI.
    fn destroy_instance(&mut self, gpu: u32, gi_id: u32) -> Result<(), MigError>;
    /// Processes with a context on GPU `gpu` (with their GI in MIG mode).
    fn processes(&mut self, gpu: u32) -> Result<Vec<GpuProcess>, MigError>;
    /// `Ok` when this process may create and destroy MIG instances.
    fn check_privileges(&mut self) -> Result<(), MigError>;
    /// Every GPU-instance profile GPU `gpu` reports, with its possible placements: its MIG
    /// geometry, read-only (NVML answers with MIG mode off too). See
    /// [`parva_core::catalogue::from_nvml`] and [`crate::nvml::read_gpu_type`].
    fn profile_geometry(&mut self, gpu: u32) -> Result<Vec<parva_core::catalogue::NvmlProfile>, MigError>;
}

/// Effective uid of this process, from `/proc/self/status` (`None` when unreadable).
pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// `MIG-<uuid>` as `CUDA_VISIBLE_DEVICES` takes it (NVML may or may not include the prefix).
pub fn mig_device_name(uuid: &str) -> String {
    if uuid.starts_with("MIG-") { uuid.to_string() } else { format!("MIG-{uuid}") }
}

/// The profile of `gpu_type` with GI profile id `profile_id`.
pub fn profile_of(gpu_type: &GpuType, profile_id: u32) -> Option<&'static GiProfile> {
    gpu_type.profile_by_id(profile_id)
}

/// `3g.40gb (profile 9)` when the GPU's type knows the profile id, else `GI profile 9`: what
/// teardown and restore print, so users read the names nvidia-smi shows.
pub fn profile_label(gpu: Option<&GpuInfo>, profile_id: u32) -> String {
    match gpu.and_then(GpuInfo::gpu_type).and_then(|t| t.profile_by_id(profile_id)) {
        Some(p) => format!("{} (profile {profile_id})", p.name),
        None => format!("GI profile {profile_id}"),
    }
}
