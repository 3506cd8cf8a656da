//! How each instance size is made: `mig` creates a real MIG instance of that size (and its own
//! MPS daemon), `mps` keeps the whole GPU under one MPS daemon and caps each worker's SMs with
//! `CUDA_MPS_ACTIVE_THREAD_PERCENTAGE` = size / GPCs (for GPUs whose MIG layout may not be
//! changed; memory is not partitioned), and `none` runs on the device as it is (a CPU, or a GPU
//! without MPS). All GPU changes go through `parva-gpu`'s [`MigControl`] and [`MpsControl`], so
//! the fakes test them. Only instances and daemons this run created are ever removed.

use std::path::PathBuf;

use parva_core::mig::{GpuType, Placement};
use parva_gpu::mig::{MigControl, MigError, mig_device_name};
use parva_gpu::mps::{MpsControl, MpsDirs};

use crate::error::ProfileError;

/// The `--partition` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Mig,
    Mps,
    None,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Mig => "mig",
            Mode::Mps => "mps",
            Mode::None => "none",
        }
    }
}

/// One instance size, made: a MIG instance, an MPS share of the SMs or the device as it is; the
/// workers' environment and what to report about it. (A deployment map's `Segment` is another thing:
/// a service's instance on a node.)
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Instance {
    pub size: u8,
    /// `CUDA_VISIBLE_DEVICES`, `CUDA_MPS_PIPE_DIRECTORY`, ... for the workers.
    pub env: Vec<(String, String)>,
    /// The device whose memory use is measured (`MIG-...` or `GPU-...`), when on a GPU.
    pub device: Option<String>,
    /// How the size was made, for the metadata (`MIG 3g.40gb at {4} (MIG-...)`).
    pub how: String,
}

/// Makes instance sizes, one at a time.
pub trait Partitioner {
    fn mode(&self) -> Mode;
    /// Make an instance of `size` GPCs.
    fn enter(&mut self, size: u8) -> Result<Instance, ProfileError>;
    /// Undo [`Partitioner::enter`] (its workers have exited).
    fn leave(&mut self) -> Result<(), ProfileError>;
    /// Undo everything still made (end of run, error or Ctrl-C); idempotent.
    fn finish(&mut self) -> Result<(), ProfileError>;
}

fn mps_env(device: &str, dirs: &MpsDirs) -> Vec<(String, String)> {
    vec![
        ("CUDA_VISIBLE_DEVICES".to_string(), device.to_string()),
        ("CUDA_MPS_PIPE_DIRECTORY".to_string(), dirs.pipe.display().to_string()),
    ]
}

/// Retries (250 ms apart) of destroying an instance still in use by exiting workers.
const DESTROY_RETRIES: usize = 20;

/// `--partition mig`: a MIG instance per size on GPU `gpu`, at the first free legal placement.
pub struct MigPartitioner<'a> {
    pub mig: &'a mut dyn MigControl,
    pub mps: &'a mut dyn MpsControl,
    pub gpu: u32,
    pub gpu_type: &'static GpuType,
    /// MPS pipe and log directories go under here.
    pub run_dir: PathBuf,
    /// The instance this run created and not yet destroyed: (GI id, device, MPS dirs).
    current: Option<(u32, String, MpsDirs)>,
}

impl<'a> MigPartitioner<'a> {
    /// Check that GPU `gpu` exists, has MIG mode on (this tool never changes it) and that this
    /// process may create instances.
    pub fn new(mig: &'a mut dyn MigControl, mps: &'a mut dyn MpsControl, gpu: u32, run_dir: PathBuf) -> Result<Self, ProfileError> {
        let gpus = mig.gpus()?;
        let info = gpus.iter().find(|g| g.index == gpu).ok_or_else(|| {
            ProfileError::Config(format!("--gpu-index {gpu}: no such GPU on this node (it has {})", gpus.len()))
        })?;
        let gpu_type = info.identify().map_err(|e| {
            ProfileError::Config(format!("GPU {gpu}: {e}; see `parva catalogue`"))
        })?;
        if !info.mig.current {
            return Err(ProfileError::Config(format!(
                "GPU {gpu} ({}): MIG mode is off. parva never changes MIG mode; enable it yourself (nvidia-smi -i {gpu} -mig 1) or use --partition mps",
                info.uuid
            )));
        }
        mig.check_privileges()?;
        Ok(MigPartitioner { mig, mps, gpu, gpu_type, run_dir, current: None })
    }
}

impl Partitioner for MigPartitioner<'_> {
    fn mode(&self) -> Mode {
        Mode::Mig
    }

    fn enter(&mut self, size: u8) -> Result<Instance, ProfileError> {
        self.leave()?;
        let ty = self.gpu_type;
        let profile = ty.profile_for_size(size).ok_or_else(|| {
            ProfileError::Config(format!("instance size {size} is not a MIG size of {} (sizes: {:?})", ty.id, ty.sizes()))
        })?;
        let layout: Vec<Placement> = self
            .mig
            .instances(self.gpu)?
            .iter()
            .filter_map(|i| ty.profile_by_id(i.profile_id).map(|p| Placement { profile: p, start: i.start }))
            .collect();
        let Some(&start) = ty.free_starts(&layout, profile).first() else {
            let used: Vec<String> = layout.iter().map(|p| p.to_string()).collect();
            return Err(ProfileError::Config(format!(
                "GPU {}: no free placement for {} (instances present: {}); parva profile only uses free space: destroy some, or use --partition mps",
                self.gpu,
                profile.name,
                if used.is_empty() { "none".to_string() } else { used.join(", ") }
            )));
        };
        let inst = self.mig.create_instance(self.gpu, profile.id, start)?;
        let Some(uuid) = inst.uuid.clone() else {
            let _ = self.mig.destroy_instance(self.gpu, inst.gi_id);
            return Err(ProfileError::Config(format!("GPU {}: {} at {{{start}}} has no MIG device UUID", self.gpu, profile.name)));
        };
        let device = mig_device_name(&uuid);
        let dirs = MpsDirs::under(&self.run_dir, &device);
        self.current = Some((inst.gi_id, device.clone(), dirs.clone()));
        self.mps.start(&device, &dirs)?;
        Ok(Instance {
            size,
            env: mps_env(&device, &dirs),
            device: Some(device.clone()),
            how: format!("MIG {} at {{{start}}} ({device}) with its own MPS daemon", profile.name),
        })
    }

    fn leave(&mut self) -> Result<(), ProfileError> {
        let Some((gi_id, device, dirs)) = self.current.take() else { return Ok(()) };
        let stopped = self.mps.stop(&device, &dirs);
        // Killed workers may take a moment to release the instance.
        let mut destroyed = self.mig.destroy_instance(self.gpu, gi_id);
        for _ in 0..DESTROY_RETRIES {
            if !matches!(destroyed, Err(MigError::InUse { .. })) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
            destroyed = self.mig.destroy_instance(self.gpu, gi_id);
        }
        stopped?;
        destroyed?;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ProfileError> {
        self.leave()
    }
}

/// `--partition mps`: the whole GPU under one MPS daemon, each size an SM share.
pub struct MpsPartitioner<'a> {
    pub mps: &'a mut dyn MpsControl,
    /// `GPU-...` UUID.
    pub gpu_uuid: String,
    /// GPCs of the whole GPU (7 on A100/H100): a size's share is size / gpcs.
    pub gpcs: u8,
    pub run_dir: PathBuf,
    started: Option<MpsDirs>,
}

impl<'a> MpsPartitioner<'a> {
    pub fn new(mps: &'a mut dyn MpsControl, gpu_uuid: String, gpcs: u8, run_dir: PathBuf) -> Self {
        MpsPartitioner { mps, gpu_uuid, gpcs, run_dir, started: None }
    }

    /// `CUDA_MPS_ACTIVE_THREAD_PERCENTAGE` of a size.
    pub fn percentage(&self, size: u8) -> u8 {
        ((size as f64 / self.gpcs.max(1) as f64) * 100.0).round().clamp(1.0, 100.0) as u8
    }
}

impl Partitioner for MpsPartitioner<'_> {
    fn mode(&self) -> Mode {
        Mode::Mps
    }

    fn enter(&mut self, size: u8) -> Result<Instance, ProfileError> {
        if size > self.gpcs {
            return Err(ProfileError::Config(format!("instance size {size} exceeds the GPU's {} GPCs", self.gpcs)));
        }
        let dirs = MpsDirs::under(&self.run_dir, &self.gpu_uuid);
        if self.started.is_none() {
            self.mps.start(&self.gpu_uuid, &dirs)?;
            self.started = Some(dirs.clone());
        }
        let pct = self.percentage(size);
        let mut env = mps_env(&self.gpu_uuid, &dirs);
        env.push(("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE".to_string(), pct.to_string()));
        Ok(Instance {
            size,
            env,
            device: Some(self.gpu_uuid.clone()),
            how: format!("whole GPU {} under MPS, CUDA_MPS_ACTIVE_THREAD_PERCENTAGE={pct} ({size} of {} slices); memory not partitioned", self.gpu_uuid, self.gpcs),
        })
    }

    fn leave(&mut self) -> Result<(), ProfileError> {
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ProfileError> {
        if let Some(dirs) = self.started.take() {
            self.mps.stop(&self.gpu_uuid, &dirs)?;
        }
        Ok(())
    }
}

/// `--partition none`: the device as it is; `env` (e.g. `CUDA_VISIBLE_DEVICES=0`) for every size.
pub struct AsIs {
    pub env: Vec<(String, String)>,
    pub device: Option<String>,
    pub what: String,
}

impl Partitioner for AsIs {
    fn mode(&self) -> Mode {
        Mode::None
    }
    fn enter(&mut self, size: u8) -> Result<Instance, ProfileError> {
        Ok(Instance { size, env: self.env.clone(), device: self.device.clone(), how: format!("{} as it is (no partitioning)", self.what) })
    }
    fn leave(&mut self) -> Result<(), ProfileError> {
        Ok(())
    }
    fn finish(&mut self) -> Result<(), ProfileError> {
        Ok(())
    }
}
