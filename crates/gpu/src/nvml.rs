//! [`MigControl`] on the NVIDIA driver through NVML (`nvml-wrapper`, which loads
//! `libnvidia-ml.so` at run time: nothing NVIDIA is needed to build). The MIG calls that
//! `nvml-wrapper` 0.13 does not wrap go through its raw [`nvml_wrapper::Nvml::lib`] table:
//! `nvmlDeviceCreateGpuInstanceWithPlacement`, `nvmlDeviceGetGpuInstances`,
//! `nvmlGpuInstanceGetInfo`, `nvmlGpuInstanceCreateComputeInstance`, the destroy calls, ...
//! Exercised only by an ignored test that needs a CUDA GPU.

use std::collections::BTreeMap;
use std::mem::MaybeUninit;

use nvml_wrapper::Nvml;
use nvml_wrapper::error::{NvmlError, nvml_try};
use nvml_wrapper_sys::bindings as sys;

use parva_core::catalogue::NvmlProfile;
use parva_core::mig::GpuType;

use crate::mig::{GpuInfo, GpuProcess, MigControl, MigError, MigInstance, MigMode, effective_uid};

/// The real driver.
pub struct NvmlMig {
    nvml: Nvml,
}

const MIB: f64 = 1024.0 * 1024.0;

/// A GPU and its driver, as NVML reports them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GpuDescription {
    pub index: u32,
    pub uuid: String,
    /// Product name (`NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// Driver version (`570.124.06`).
    pub driver: String,
    /// Highest CUDA version the driver supports (`12.8`).
    pub cuda_driver: String,
    pub memory_total_mib: f64,
}

/// GI profile facts NVML reports for one profile id.
#[derive(Debug, Clone, Copy)]
struct GiProfileInfo {
    slices: u32,
    max_count: u32,
}

impl NvmlMig {
    /// Load and initialise NVML.
    pub fn load() -> Result<Self, MigError> {
        Nvml::init().map(|nvml| NvmlMig { nvml }).map_err(|e| MigError::Load(e.to_string()))
    }

    /// (driver version `570.124.06`, highest CUDA version it supports `12.8`).
    pub fn versions(&self) -> Result<(String, String), MigError> {
        let driver = self.nvml.sys_driver_version().map_err(|e| MigError::Load(format!("nvmlSystemGetDriverVersion failed: {e}")))?;
        let cuda = self.nvml.sys_cuda_driver_version().map_err(|e| MigError::Load(format!("nvmlSystemGetCudaDriverVersion failed: {e}")))?;
        Ok((driver, format!("{}.{}", cuda / 1000, (cuda % 1000) / 10)))
    }

    /// The GPU and driver facts a profile's metadata records.
    pub fn describe(&self, gpu: u32) -> Result<GpuDescription, MigError> {
        let dev = self.device(gpu)?;
        let uuid = dev.uuid().map_err(|e| nvml_err(gpu, "", "nvmlDeviceGetUUID", e))?;
        let name = dev.name().map_err(|e| nvml_err(gpu, &uuid, "nvmlDeviceGetName", e))?;
        let driver = self.nvml.sys_driver_version().map_err(|e| nvml_err(gpu, &uuid, "nvmlSystemGetDriverVersion", e))?;
        let cuda = self.nvml.sys_cuda_driver_version().map_err(|e| nvml_err(gpu, &uuid, "nvmlSystemGetCudaDriverVersion", e))?;
        let memory_total_mib = dev.memory_info().map(|m| m.total as f64 / MIB).unwrap_or(0.0);
        Ok(GpuDescription {
            index: gpu,
            uuid,
            name,
            driver,
            cuda_driver: format!("{}.{}", cuda / 1000, (cuda % 1000) / 10),
            memory_total_mib,
        })
    }

    /// Memory in use on a device (`GPU-...` or a MIG device's `MIG-...` UUID), MiB.
    pub fn memory_used_mib(&self, device_uuid: &str) -> Option<f64> {
        let dev = self.nvml.device_by_uuid(device_uuid).ok()?;
        dev.memory_info().ok().map(|m| m.used as f64 / MIB)
    }

    fn device(&self, gpu: u32) -> Result<nvml_wrapper::Device<'_>, MigError> {
        self.nvml.device_by_index(gpu).map_err(|e| match e {
            NvmlError::InvalidArg | NvmlError::NotFound => {
                MigError::NoSuchGpu { gpu, count: self.nvml.device_count().unwrap_or(0) as usize }
            }
            e => nvml_err(gpu, "", "nvmlDeviceGetHandleByIndex", e),
        })
    }

    /// Catalogue name of GI profile `profile_id` on this GPU (`GI profile <id>` when unknown).
    fn profile_name(&self, gpu: u32, profile_id: u32) -> String {
        self.device(gpu)
            .ok()
            .and_then(|d| {
                let name = d.name().ok()?;
                parva_core::mig::GpuType::identify(&name, d.pci_info().ok().map(|p| p.pci_device_id)).ok()
            })
            .and_then(|t| t.profile_by_id(profile_id))
            .map_or_else(|| format!("GI profile {profile_id}"), |p| p.name.to_string())
    }

    fn uuid(&self, gpu: u32) -> String {
        self.device(gpu).ok().and_then(|d| d.uuid().ok()).unwrap_or_else(|| "uuid unknown".into())
    }

    /// GI profile id -> facts, for every profile this GPU supports.
    fn gi_profiles(&self, gpu: u32) -> Result<BTreeMap<u32, GiProfileInfo>, MigError> {
        let dev = self.device(gpu)?;
        let lib = self.nvml.lib();
        let mut out = BTreeMap::new();
        for index in 0..sys::NVML_GPU_INSTANCE_PROFILE_COUNT {
            let mut info = MaybeUninit::<sys::nvmlGpuInstanceProfileInfo_t>::zeroed();
            // SAFETY: valid device handle and a properly sized out-parameter.
            let ret = unsafe { lib.nvmlDeviceGetGpuInstanceProfileInfo(dev.handle(), index, info.as_mut_ptr()) };
            if nvml_try(ret).is_ok() {
                // SAFETY: NVML filled it on success.
                let info = unsafe { info.assume_init() };
                out.insert(info.id, GiProfileInfo { slices: info.sliceCount, max_count: info.instanceCount });
            }
        }
        Ok(out)
    }

    /// Raw GI handles of every profile, with their info.
    fn gi_handles(&self, gpu: u32) -> Result<Vec<(sys::nvmlGpuInstance_t, sys::nvmlGpuInstanceInfo_t)>, MigError> {
        let uuid = self.uuid(gpu);
        let dev = self.device(gpu)?;
        let lib = self.nvml.lib();
        let mut out = Vec::new();
        for (id, p) in self.gi_profiles(gpu)? {
            let mut handles: Vec<sys::nvmlGpuInstance_t> = vec![std::ptr::null_mut(); p.max_count.max(1) as usize];
            let mut count: u32 = 0;
            // SAFETY: the buffer holds max_count handles, as NVML requires.
            let ret = unsafe { lib.nvmlDeviceGetGpuInstances(dev.handle(), id, handles.as_mut_ptr(), &mut count) };
            nvml_try(ret).map_err(|e| nvml_err(gpu, &uuid, "nvmlDeviceGetGpuInstances", e))?;
            for &h in handles.iter().take(count as usize) {
                let mut info = MaybeUninit::<sys::nvmlGpuInstanceInfo_t>::zeroed();
                // SAFETY: h is a GI handle NVML just returned.
                let ret = unsafe { lib.nvmlGpuInstanceGetInfo(h, info.as_mut_ptr()) };
                nvml_try(ret).map_err(|e| nvml_err(gpu, &uuid, "nvmlGpuInstanceGetInfo", e))?;
                // SAFETY: filled on success.
                out.push((h, unsafe { info.assume_init() }));
            }
        }
        Ok(out)
    }

    /// Compute instance handles of a GI (every CI profile).
    fn ci_handles(&self, gi: sys::nvmlGpuInstance_t) -> Vec<(sys::nvmlComputeInstance_t, u32)> {
        let lib = self.nvml.lib();
        let mut out = Vec::new();
        for index in 0..sys::NVML_COMPUTE_INSTANCE_PROFILE_COUNT {
            let mut info = MaybeUninit::<sys::nvmlComputeInstanceProfileInfo_t>::zeroed();
            // SAFETY: valid GI handle, sized out-parameter.
            let ret = unsafe {
                lib.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                    gi,
                    index,
                    sys::NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED,
                    info.as_mut_ptr(),
                )
            };
            if nvml_try(ret).is_err() {
                continue;
            }
            // SAFETY: filled on success.
            let info = unsafe { info.assume_init() };
            let mut handles: Vec<sys::nvmlComputeInstance_t> = vec![std::ptr::null_mut(); info.instanceCount.max(1) as usize];
            let mut count = 0u32;
            // SAFETY: buffer of instanceCount handles.
            let ret = unsafe { lib.nvmlGpuInstanceGetComputeInstances(gi, info.id, handles.as_mut_ptr(), &mut count) };
            if nvml_try(ret).is_ok() {
                out.extend(handles.iter().take(count as usize).map(|&h| (h, info.id)));
            }
        }
        out
    }

    /// (GI id, CI id) -> MIG device UUID, from the GPU's MIG device handles.
    fn mig_uuids(&self, gpu: u32) -> BTreeMap<(u32, u32), String> {
        let mut out = BTreeMap::new();
        let Ok(dev) = self.device(gpu) else { return out };
        let lib = self.nvml.lib();
        let max = dev.mig_device_count().unwrap_or(0);
        for i in 0..max {
            let Ok(mig) = dev.mig_device_by_index(i) else { continue };
            let (mut gi, mut ci) = (0u32, 0u32);
            // SAFETY: a MIG device handle NVML returned; u32 out-parameters.
            let ok = unsafe {
                nvml_try(lib.nvmlDeviceGetGpuInstanceId(mig.handle(), &mut gi)).is_ok()
                    && nvml_try(lib.nvmlDeviceGetComputeInstanceId(mig.handle(), &mut ci)).is_ok()
            };
            if let (true, Ok(uuid)) = (ok, mig.uuid()) {
                out.insert((gi, ci), uuid);
            }
        }
        out
    }

    /// `(start, size)` of every placement NVML allows for `profile_id` on this GPU.
    fn possible_placements(&self, gpu: u32, profile_id: u32, max_count: u32) -> Result<Vec<(u32, u32)>, MigError> {
        let dev = self.device(gpu)?;
        let mut buf = vec![sys::nvmlGpuInstancePlacement_t { start: 0, size: 0 }; (max_count.max(1) as usize) * 8];
        let mut count = buf.len() as u32;
        // SAFETY: buffer of `count` placements.
        let ret = unsafe {
            self.nvml.lib().nvmlDeviceGetGpuInstancePossiblePlacements_v2(dev.handle(), profile_id, buf.as_mut_ptr(), &mut count)
        };
        nvml_try(ret).map_err(|e| nvml_err(gpu, &self.uuid(gpu), "nvmlDeviceGetGpuInstancePossiblePlacements_v2", e))?;
        Ok(buf.iter().take(count as usize).map(|p| (p.start, p.size)).collect())
    }

    /// Every GI profile NVML reports for this GPU (`nvmlDeviceGetGpuInstanceProfileInfoV`, for
    /// the name), each with its possible placements, in NVML's profile-index order. Read-only.
    fn read_profile_geometry(&self, gpu: u32) -> Result<Vec<NvmlProfile>, MigError> {
        let uuid = self.uuid(gpu);
        let dev = self.device(gpu)?;
        let lib = self.nvml.lib();
        // NVML_STRUCT_VERSION(GpuInstanceProfileInfo, 2): the struct's size | version << 24.
        let version = std::mem::size_of::<sys::nvmlGpuInstanceProfileInfo_v2_t>() as u32 | (2 << 24);
        let mut out = Vec::new();
        for index in 0..sys::NVML_GPU_INSTANCE_PROFILE_COUNT {
            let mut info = MaybeUninit::<sys::nvmlGpuInstanceProfileInfo_v2_t>::zeroed();
            // SAFETY: a zeroed, properly sized out-parameter whose version field is set next.
            unsafe { (*info.as_mut_ptr()).version = version };
            // SAFETY: valid device handle and out-parameter.
            let ret = unsafe { lib.nvmlDeviceGetGpuInstanceProfileInfoV(dev.handle(), index, info.as_mut_ptr()) };
            match nvml_try(ret) {
                Ok(()) => {}
                // Profiles this GPU does not have.
                Err(NvmlError::NotSupported | NvmlError::InvalidArg) => continue,
                Err(e) => return Err(nvml_err(gpu, &uuid, "nvmlDeviceGetGpuInstanceProfileInfoV", e)),
            }
            // SAFETY: NVML filled it on success.
            let info = unsafe { info.assume_init() };
            let bytes: Vec<u8> = info.name.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
            let placements = self.possible_placements(gpu, info.id, info.instanceCount)?;
            out.push(NvmlProfile {
                id: info.id,
                name: String::from_utf8_lossy(&bytes).into_owned(),
                slice_count: info.sliceCount,
                instance_count: info.instanceCount,
                multiprocessor_count: info.multiprocessorCount,
                memory_size_mb: info.memorySizeMB,
                placements,
            });
        }
        Ok(out)
    }

    fn gi_by_id(&self, gpu: u32, gi_id: u32) -> Result<(sys::nvmlGpuInstance_t, sys::nvmlGpuInstanceInfo_t), MigError> {
        self.gi_handles(gpu)?
            .into_iter()
            .find(|(_, info)| info.id == gi_id)
            .ok_or_else(|| MigError::NoSuchInstance { gpu, uuid: self.uuid(gpu), gi_id })
    }
}

/// GPU `gpu`'s MIG geometry read through `ctl` (NVML or the fake), as a GPU type named `id`
/// (default: from its product name, `NVIDIA B200` -> `b200`), not registered. Read-only.
pub fn read_gpu_type(ctl: &mut dyn MigControl, gpu: u32, id: Option<&str>) -> Result<&'static GpuType, ReadGeometryError> {
    let gpus = ctl.gpus()?;
    let info = gpus.iter().find(|g| g.index == gpu).ok_or(MigError::NoSuchGpu { gpu, count: gpus.len() })?;
    let profiles = ctl.profile_geometry(gpu)?;
    let id = id.map_or_else(|| parva_core::catalogue::id_from_product(&info.name), str::to_string);
    let origin = format!("nvml:GPU {gpu} ({})", info.product());
    Ok(parva_core::catalogue::from_nvml(&id, &info.name, info.pci_device_id.unwrap_or(0), &profiles, &origin)?)
}

/// Reading a GPU's MIG geometry failed: NVML refused, or what it reported breaks a catalogue rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadGeometryError {
    #[error(transparent)]
    Mig(#[from] MigError),
    #[error("the GPU's MIG geometry breaks a catalogue rule: {0}")]
    Catalogue(#[from] parva_core::catalogue::CatalogueError),
}

fn nvml_err(gpu: u32, uuid: &str, call: &'static str, e: NvmlError) -> MigError {
    MigError::Nvml { gpu, uuid: uuid.to_string(), call, message: e.to_string() }
}

/// The compute-instance profile index spanning a GI of `slices` compute slices.
fn full_ci_profile(slices: u32) -> Option<u32> {
    Some(match slices {
        1 => sys::NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE,
        2 => sys::NVML_COMPUTE_INSTANCE_PROFILE_2_SLICE,
        3 => sys::NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE,
        4 => sys::NVML_COMPUTE_INSTANCE_PROFILE_4_SLICE,
        6 => sys::NVML_COMPUTE_INSTANCE_PROFILE_6_SLICE,
        7 => sys::NVML_COMPUTE_INSTANCE_PROFILE_7_SLICE,
        8 => sys::NVML_COMPUTE_INSTANCE_PROFILE_8_SLICE,
        _ => return None,
    })
}

impl MigControl for NvmlMig {
    fn gpus(&mut self) -> Result<Vec<GpuInfo>, MigError> {
        let count = self.nvml.device_count().map_err(|e| nvml_err(0, "", "nvmlDeviceGetCount", e))?;
        let mut out = Vec::new();
        for index in 0..count {
            let dev = self.device(index)?;
            let uuid = dev.uuid().map_err(|e| nvml_err(index, "", "nvmlDeviceGetUUID", e))?;
            let name = dev.name().map_err(|e| nvml_err(index, &uuid, "nvmlDeviceGetName", e))?;
            // The PCI device id identifies the GPU type (see parva_core::mig::GpuType::identify).
            let pci_device_id = dev.pci_info().ok().map(|p| p.pci_device_id);
            let mig = match dev.mig_mode() {
                Ok(m) => MigMode { supported: true, current: m.current == 1, pending: m.pending == 1 },
                Err(NvmlError::NotSupported) => MigMode { supported: false, current: false, pending: false },
                Err(e) => return Err(nvml_err(index, &uuid, "nvmlDeviceGetMigMode", e)),
            };
            out.push(GpuInfo { index, uuid, name, mig, pci_device_id });
        }
        Ok(out)
    }

    fn instances(&mut self, gpu: u32) -> Result<Vec<MigInstance>, MigError> {
        let uuids = self.mig_uuids(gpu);
        let mut out: Vec<MigInstance> = self
            .gi_handles(gpu)?
            .into_iter()
            .map(|(h, info)| {
                let ci_ids: Vec<u32> = self
                    .ci_handles(h)
                    .into_iter()
                    .filter_map(|(ci, _)| {
                        let mut cinfo = MaybeUninit::<sys::nvmlComputeInstanceInfo_t>::zeroed();
                        // SAFETY: a CI handle NVML returned.
                        let ret = unsafe { self.nvml.lib().nvmlComputeInstanceGetInfo_v2(ci, cinfo.as_mut_ptr()) };
                        // SAFETY: filled on success.
                        nvml_try(ret).ok().map(|_| unsafe { cinfo.assume_init() }.id)
                    })
                    .collect();
                let uuid = ci_ids.first().and_then(|ci| uuids.get(&(info.id, *ci)).cloned());
                MigInstance {
                    gi_id: info.id,
                    profile_id: info.profileId,
                    start: info.placement.start as u8,
                    size: info.placement.size as u8,
                    ci_ids,
                    uuid,
                }
            })
            .collect();
        out.sort_by_key(|i| i.gi_id);
        Ok(out)
    }

    fn create_instance(&mut self, gpu: u32, profile_id: u32, start: u8) -> Result<MigInstance, MigError> {
        let uuid = self.uuid(gpu);
        let profiles = self.gi_profiles(gpu)?;
        let profile = profiles.get(&profile_id).copied().ok_or_else(|| MigError::UnknownProfile {
            gpu,
            uuid: uuid.clone(),
            profile_id,
            gpu_type: self.device(gpu).ok().and_then(|d| d.name().ok()).unwrap_or_default(),
        })?;
        let possible = self.possible_placements(gpu, profile_id, profile.max_count)?;
        let size = match possible.iter().find(|(s, _)| *s == start as u32) {
            Some((_, size)) => *size as u8,
            None => {
                return Err(MigError::Placement {
                    gpu,
                    uuid,
                    profile: self.profile_name(gpu, profile_id),
                    start,
                    size: possible.first().map_or(0, |p| p.1 as u8),
                    reason: format!("NVML's possible placements are {possible:?} (start, size)"),
                });
            }
        };
        let dev = self.device(gpu)?;
        let lib = self.nvml.lib();
        let placement = sys::nvmlGpuInstancePlacement_t { start: start as u32, size: size as u32 };
        let mut gi: sys::nvmlGpuInstance_t = std::ptr::null_mut();
        // SAFETY: valid device handle, placement and out-parameter.
        let ret = unsafe { lib.nvmlDeviceCreateGpuInstanceWithPlacement(dev.handle(), profile_id, &placement, &mut gi) };
        nvml_try(ret).map_err(|e| MigError::Placement {
            gpu,
            uuid: uuid.clone(),
            profile: self.profile_name(gpu, profile_id),
            start,
            size,
            reason: format!("nvmlDeviceCreateGpuInstanceWithPlacement: {e}"),
        })?;
        let ci_result = (|| {
            let index = full_ci_profile(profile.slices).ok_or(NvmlError::NotSupported)?;
            let mut info = MaybeUninit::<sys::nvmlComputeInstanceProfileInfo_t>::zeroed();
            // SAFETY: the GI just created; sized out-parameter.
            nvml_try(unsafe {
                lib.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, index, sys::NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED, info.as_mut_ptr())
            })?;
            // SAFETY: filled on success.
            let info = unsafe { info.assume_init() };
            let mut ci: sys::nvmlComputeInstance_t = std::ptr::null_mut();
            // SAFETY: the GI just created; out-parameter.
            nvml_try(unsafe { lib.nvmlGpuInstanceCreateComputeInstance(gi, info.id, &mut ci) })
        })();
        if let Err(e) = ci_result {
            // SAFETY: the GI just created, with no compute instance.
            let _ = unsafe { lib.nvmlGpuInstanceDestroy(gi) };
            return Err(nvml_err(gpu, &uuid, "nvmlGpuInstanceCreateComputeInstance", e));
        }
        let mut info = MaybeUninit::<sys::nvmlGpuInstanceInfo_t>::zeroed();
        // SAFETY: the GI just created.
        nvml_try(unsafe { lib.nvmlGpuInstanceGetInfo(gi, info.as_mut_ptr()) })
            .map_err(|e| nvml_err(gpu, &uuid, "nvmlGpuInstanceGetInfo", e))?;
        // SAFETY: filled on success.
        let gi_id = unsafe { info.assume_init() }.id;
        self.instances(gpu)?
            .into_iter()
            .find(|i| i.gi_id == gi_id)
            .ok_or(MigError::NoSuchInstance { gpu, uuid, gi_id })
    }

    fn destroy_instance(&mut self, gpu: u32, gi_id: u32) -> Result<(), MigError> {
        let uuid = self.uuid(gpu);
        let (gi, info) = self.gi_by_id(gpu, gi_id)?;
        let lib = self.nvml.lib();
        let profile = self.profile_name(gpu, info.profileId);
        let in_use = |call: &'static str, e: NvmlError| match e {
            NvmlError::InUse => MigError::InUse {
                gpu,
                uuid: uuid.clone(),
                gi_id,
                profile: profile.clone(),
                start: info.placement.start as u8,
                pids: Vec::new(),
            },
            e => nvml_err(gpu, &uuid, call, e),
        };
        for (ci, _) in self.ci_handles(gi) {
            // SAFETY: a CI handle of this GI.
            nvml_try(unsafe { lib.nvmlComputeInstanceDestroy(ci) }).map_err(|e| in_use("nvmlComputeInstanceDestroy", e))?;
        }
        // SAFETY: the GI handle, its CIs destroyed.
        nvml_try(unsafe { lib.nvmlGpuInstanceDestroy(gi) }).map_err(|e| in_use("nvmlGpuInstanceDestroy", e))
    }

    fn processes(&mut self, gpu: u32) -> Result<Vec<GpuProcess>, MigError> {
        let uuid = self.uuid(gpu);
        let dev = self.device(gpu)?;
        let procs = dev
            .running_compute_processes()
            .map_err(|e| nvml_err(gpu, &uuid, "nvmlDeviceGetComputeRunningProcesses", e))?;
        Ok(procs
            .into_iter()
            .map(|p| GpuProcess {
                pid: p.pid,
                gi_id: p.gpu_instance_id,
                name: std::fs::read_to_string(format!("/proc/{}/comm", p.pid)).ok().map(|s| s.trim().to_string()),
            })
            .collect())
    }

    fn profile_geometry(&mut self, gpu: u32) -> Result<Vec<NvmlProfile>, MigError> {
        self.read_profile_geometry(gpu)
    }

    fn check_privileges(&mut self) -> Result<(), MigError> {
        match effective_uid() {
            Some(0) => Ok(()),
            Some(uid) => Err(MigError::NoPrivilege { uid }),
            // Unknown: let NVML answer with NO_PERMISSION if it must.
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read-only: lists GPUs, MIG mode and instances on a real GPU. Never changes anything.
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn nvml_lists_gpus_and_instances_read_only() {
        let mut nvml = NvmlMig::load().expect("NVML");
        let gpus = nvml.gpus().expect("gpus");
        assert!(!gpus.is_empty());
        for g in &gpus {
            eprintln!("GPU {} {} {} {:?} type {:?}", g.index, g.uuid, g.product(), g.mig, g.identify().map(|t| t.id));
            if g.mig.current {
                for i in nvml.instances(g.index).expect("instances") {
                    eprintln!("  {i:?}");
                }
                eprintln!("  profiles {:?}", nvml.gi_profiles(g.index).expect("profiles"));
            }
            eprintln!("  processes {:?}", nvml.processes(g.index));
        }
    }

    /// Read-only: GPU 0's MIG geometry through NVML (MIG mode on or off) is a valid catalogue
    /// type, and equal, profile by profile, to the catalogue's entry when the GPU is a known type.
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn nvml_reads_the_mig_geometry_of_gpu0_read_only() {
        let mut nvml = NvmlMig::load().expect("NVML");
        let read = read_gpu_type(&mut nvml, 0, None).expect("geometry");
        eprintln!("{}", parva_core::catalogue::to_text(&[read], "GPU 0"));
        let info = nvml.gpus().expect("gpus").remove(0);
        if let Ok(known) = info.identify() {
            assert_eq!((read.gpcs, read.mem_slices, read.max_instances), (known.gpcs, known.mem_slices, known.max_instances), "{}", known.id);
            assert_eq!(read.profiles.len(), known.profiles.len(), "{}", known.id);
            for p in known.profiles {
                assert_eq!(read.profile_by_id(p.id), Some(p), "{} profile {}", known.id, p.id);
            }
        }
    }

    #[test]
    fn ci_profile_for_every_gi_size() {
        for s in [1, 2, 3, 4, 7] {
            assert!(full_ci_profile(s).is_some());
        }
        assert!(full_ci_profile(5).is_none());
    }
}
