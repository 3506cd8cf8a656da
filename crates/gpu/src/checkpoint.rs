//! The node's MIG state (by GPU UUID, with placements, and which devices had an MPS daemon in our
//! run directory), saved before `parva deploy` changes anything and restored mig-parted style:
//! assert the current state against it, destroy what it lacks, re-create what it has at the
//! same placements, then assert again. MIG mode is recorded but never changed.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::DeployError;
use crate::mig::{MigControl, MigInstance, MigMode};
use crate::mps::{MpsControl, MpsDirs};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub node: u32,
    /// Seconds since the Unix epoch.
    pub taken_unix: u64,
    pub gpus: Vec<GpuCheckpoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuCheckpoint {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub mig: MigMode,
    /// Whether a whole-GPU MPS daemon (`--no-mig`) ran in our run directory.
    pub gpu_daemon: bool,
    pub instances: Vec<InstanceCheckpoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceCheckpoint {
    pub profile_id: u32,
    pub start: u8,
    pub size: u8,
    /// Whether its MPS daemon ran in our run directory.
    pub mps: bool,
}

/// Controllers and run directory, as the checkpoint functions need them.
pub struct Ctl<'a> {
    pub mig: &'a mut dyn MigControl,
    pub mps: &'a mut dyn MpsControl,
    pub run_dir: &'a Path,
}

impl Ctl<'_> {
    pub fn daemon_running(&mut self, device: &str) -> Result<bool, DeployError> {
        Ok(self.mps.running(&MpsDirs::under(self.run_dir, device))?)
    }

    pub fn stop_daemon(&mut self, device: &str) -> Result<(), DeployError> {
        Ok(self.mps.stop(device, &MpsDirs::under(self.run_dir, device))?)
    }

    pub fn start_daemon(&mut self, device: &str) -> Result<(), DeployError> {
        Ok(self.mps.start(device, &MpsDirs::under(self.run_dir, device))?)
    }

    /// Index of the GPU with `uuid` now.
    fn index_of(&mut self, uuid: &str) -> Result<Option<u32>, DeployError> {
        Ok(self.mig.gpus()?.into_iter().find(|g| g.uuid == uuid).map(|g| g.index))
    }
}

impl Checkpoint {
    /// Read the state of every GPU of the node.
    pub fn take(ctl: &mut Ctl<'_>, node: u32) -> Result<Checkpoint, DeployError> {
        let mut gpus = Vec::new();
        for g in ctl.mig.gpus()? {
            let mut instances = Vec::new();
            if g.mig.current {
                for i in ctl.mig.instances(g.index)? {
                    let mps = match &i.uuid {
                        Some(u) => ctl.daemon_running(u)?,
                        None => false,
                    };
                    instances.push(InstanceCheckpoint { profile_id: i.profile_id, start: i.start, size: i.size, mps });
                }
            }
            instances.sort_by_key(|i| (i.start, i.profile_id));
            let gpu_daemon = ctl.daemon_running(&g.uuid)?;
            gpus.push(GpuCheckpoint { index: g.index, uuid: g.uuid, name: g.name, mig: g.mig, gpu_daemon, instances });
        }
        let taken_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Ok(Checkpoint { node, taken_unix, gpus })
    }

    pub fn save(&self, path: &Path) -> Result<(), DeployError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| DeployError::file("encode checkpoint", path, e))?;
        parva_core::files::write_atomic(path, &bytes).map_err(|e| DeployError::file("write checkpoint", path, e))
    }

    pub fn load(path: &Path) -> Result<Checkpoint, DeployError> {
        load_json(path, "restore", "checkpoint")
    }

    /// How the node differs from this checkpoint (empty: it matches). Assert step of a restore.
    pub fn differences(&self, ctl: &mut Ctl<'_>) -> Result<Vec<String>, DeployError> {
        let now = Checkpoint::take(ctl, self.node)?;
        let mut out = Vec::new();
        for want in &self.gpus {
            let Some(have) = now.gpus.iter().find(|g| g.uuid == want.uuid) else {
                out.push(format!("GPU {} ({}) is gone", want.index, want.uuid));
                continue;
            };
            if have.mig.current != want.mig.current {
                out.push(format!("GPU {} ({}): MIG mode is {} (was {})", have.index, have.uuid, have.mig.current, want.mig.current));
            }
            if have.instances != want.instances || have.gpu_daemon != want.gpu_daemon {
                out.push(format!(
                    "GPU {} ({}): instances {} (checkpoint: {})",
                    have.index,
                    have.uuid,
                    describe(&have.instances),
                    describe(&want.instances)
                ));
            }
        }
        Ok(out)
    }

    /// Bring the node back to this checkpoint; returns what was done.
    pub fn restore(&self, ctl: &mut Ctl<'_>, path: &Path) -> Result<Vec<String>, DeployError> {
        let mut done = Vec::new();
        for want in &self.gpus {
            let Some(gpu) = ctl.index_of(&want.uuid)? else { continue };
            if want.mig.current {
                restore_instances(ctl, gpu, want, &mut done)?;
            }
            let running = ctl.daemon_running(&want.uuid)?;
            if running && !want.gpu_daemon {
                ctl.stop_daemon(&want.uuid)?;
                done.push(format!("GPU {gpu}: stopped the whole-GPU MPS daemon"));
            } else if !running && want.gpu_daemon {
                ctl.start_daemon(&want.uuid)?;
                done.push(format!("GPU {gpu}: started the whole-GPU MPS daemon"));
            }
        }
        let diff = self.differences(ctl)?;
        if !diff.is_empty() {
            return Err(DeployError::RestoreMismatch { path: path.display().to_string(), differences: diff.join("; ") });
        }
        Ok(done)
    }
}

fn restore_instances(ctl: &mut Ctl<'_>, gpu: u32, want: &GpuCheckpoint, done: &mut Vec<String>) -> Result<(), DeployError> {
    let have: Vec<MigInstance> = ctl.mig.instances(gpu)?;
    let info = ctl.mig.gpus()?.into_iter().find(|g| g.index == gpu);
    let label = |id: u32| crate::mig::profile_label(info.as_ref(), id);
    let wanted = |i: &MigInstance| want.instances.iter().any(|w| w.profile_id == i.profile_id && w.start == i.start);
    for i in have.iter().filter(|i| !wanted(i)) {
        if let Some(u) = &i.uuid
            && ctl.daemon_running(u)?
        {
            ctl.stop_daemon(u)?;
        }
        ctl.mig.destroy_instance(gpu, i.gi_id)?;
        done.push(format!("GPU {gpu}: destroyed {} at {{{}}}", label(i.profile_id), i.start));
    }
    for w in &want.instances {
        let existing = have.iter().find(|i| i.profile_id == w.profile_id && i.start == w.start).cloned();
        let inst = match existing {
            Some(i) => i,
            None => {
                let i = ctl.mig.create_instance(gpu, w.profile_id, w.start)?;
                done.push(format!("GPU {gpu}: re-created {} at {{{}}}", label(w.profile_id), w.start));
                i
            }
        };
        let Some(device) = inst.uuid else { continue };
        let running = ctl.daemon_running(&device)?;
        if running && !w.mps {
            ctl.stop_daemon(&device)?;
            done.push(format!("GPU {gpu}: stopped the MPS daemon of {device}"));
        } else if !running && w.mps {
            ctl.start_daemon(&device)?;
            done.push(format!("GPU {gpu}: restarted the MPS daemon of {device}"));
        }
    }
    Ok(())
}

fn describe(instances: &[InstanceCheckpoint]) -> String {
    if instances.is_empty() {
        return "none".into();
    }
    instances
        .iter()
        .map(|i| format!("{}@{{{}}}:{}{}", i.profile_id, i.start, i.size, if i.mps { "+mps" } else { "" }))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Read a JSON state file; a missing file is `NoRecord` (nothing to `action`), other failures name
/// the file and whether reading or parsing failed.
pub(crate) fn load_json<T: serde::de::DeserializeOwned>(path: &Path, action: &'static str, kind: &'static str) -> Result<T, DeployError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DeployError::NoRecord { what: action, path: path.display().to_string() });
        }
        Err(e) => return Err(DeployError::File { what: "read", path: path.display().to_string(), message: format!("{kind}: {e}") }),
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| DeployError::File { what: "parse", path: path.display().to_string(), message: format!("{kind}: {e}") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeGpus;
    use crate::mps::FakeMps;

    #[test]
    fn checkpoint_round_trips_and_names_what_differs() {
        let d = tempfile::tempdir().unwrap();
        let (mut fake, mut mps) = (FakeGpus::from_spec("h100-80gb:2").unwrap(), FakeMps::default());
        let inst = fake.create_instance(1, 9, 4).unwrap();
        let mut ctl = Ctl { mig: &mut fake, mps: &mut mps, run_dir: d.path() };
        ctl.start_daemon(inst.uuid.as_deref().unwrap()).unwrap();
        let ck = Checkpoint::take(&mut ctl, 0).unwrap();
        assert_eq!(ck.gpus[1].instances, vec![InstanceCheckpoint { profile_id: 9, start: 4, size: 4, mps: true }]);
        let path = d.path().join("ck.json");
        ck.save(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap(), ck);
        assert!(ck.differences(&mut ctl).unwrap().is_empty());
        ctl.mig.create_instance(0, 0, 0).unwrap();
        let diff = ck.differences(&mut ctl).unwrap();
        assert_eq!(diff.len(), 1);
        assert!(diff[0].starts_with("GPU 0 (GPU-") && diff[0].contains("instances 0@{0}:8") && diff[0].contains("checkpoint: none"), "{diff:?}");
        let done = ck.restore(&mut ctl, &path).unwrap();
        assert_eq!(done, vec!["GPU 0: destroyed 7g.80gb (profile 0) at {0}".to_string()]);
        assert!(matches!(Checkpoint::load(&d.path().join("none.json")), Err(DeployError::NoRecord { .. })));
    }
}
