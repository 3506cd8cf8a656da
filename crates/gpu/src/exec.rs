//! Carry a deploy out through the traits: observe (read-only), plan ([`crate::plan`]), check
//! privileges, save a checkpoint, apply the actions in order, roll back to the checkpoint on the
//! first failure, then compute each segment's worker environment and record what this tool
//! created (for `--teardown`). Files in the run directory:
//!
//! - `checkpoint.json`: the node before the latest deploy that changed something (`--restore`);
//! - `deploy.json`: the latest deploy's record (pid, instances parva created, daemons, segments);
//! - `mps/<device>/{pipe,log}`: one MPS control daemon per device.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parva_core::DeploymentMap;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, Ctl};
use crate::error::DeployError;
use crate::mig::{MigControl, mig_device_name};
use crate::mps::{MpsControl, MpsDirs, daemon_devices};
use crate::plan::{Action, DeployOptions, DeployPlan, ObservedGpu, ObservedNode, PlannedInstance, changes};

pub const CHECKPOINT_FILE: &str = "checkpoint.json";
pub const RECORD_FILE: &str = "deploy.json";

/// The environment of one segment's worker processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentEnv {
    /// GPU index in the plan (the map's `gpu` column).
    pub plan_gpu: u32,
    /// NVML index on the node.
    pub gpu: u32,
    pub start: u8,
    pub service: String,
    pub model: String,
    pub profile: String,
    /// `MIG-...` (or `GPU-...` with `--no-mig`).
    pub device: String,
    pub env: Vec<(String, String)>,
}

/// An instance parva created, found again by GPU UUID and placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedInstance {
    pub gpu_uuid: String,
    pub profile_id: u32,
    pub start: u8,
}

/// What `deploy.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployRecord {
    pub node: u32,
    /// The `parva deploy` process that serves (stopped by `--teardown`).
    pub pid: u32,
    pub no_mig: bool,
    pub created: Vec<CreatedInstance>,
    pub daemons: Vec<String>,
    pub segments: Vec<SegmentEnv>,
    /// NVML indexes of the node's GPUs that no segment of the map uses: free for other work
    /// (`deploy --follow` rewrites the record after each transition).
    #[serde(default)]
    pub free_gpus: Vec<u32>,
}

/// The outcome of a deploy (or of a dry run: nothing applied, devices of new instances unknown).
#[derive(Debug, Clone, Serialize)]
pub struct DeployOutcome {
    pub plan: DeployPlan,
    pub applied: bool,
    pub segments: Vec<SegmentEnv>,
    pub checkpoint: Option<PathBuf>,
}

/// The node's controllers and the run directory.
pub struct Node<'a> {
    pub mig: &'a mut dyn MigControl,
    pub mps: &'a mut dyn MpsControl,
    pub run_dir: PathBuf,
}

impl Node<'_> {
    fn ctl(&mut self) -> Ctl<'_> {
        Ctl { mig: &mut *self.mig, mps: &mut *self.mps, run_dir: &self.run_dir }
    }

    fn dirs(&self, device: &str) -> MpsDirs {
        MpsDirs::under(&self.run_dir, device)
    }

    /// Read-only look at every GPU, its instances, processes and our daemons.
    pub fn observe(&mut self) -> Result<ObservedNode, DeployError> {
        let mut gpus = Vec::new();
        let mut devices = BTreeSet::new();
        for info in self.mig.gpus()? {
            let instances = if info.mig.current { self.mig.instances(info.index)? } else { Vec::new() };
            let processes = self.mig.processes(info.index)?;
            let mut daemons = BTreeSet::new();
            let candidates = instances.iter().filter_map(|i| i.uuid.clone()).chain([info.uuid.clone()]);
            for device in candidates {
                devices.insert(device.clone());
                if self.mps.running(&self.dirs(&device))? {
                    daemons.insert(device);
                }
            }
            gpus.push(ObservedGpu { info, instances, processes, daemons });
        }
        let mut orphan_daemons = Vec::new();
        for device in daemon_devices(&self.run_dir) {
            if !devices.contains(&device) && self.mps.running(&self.dirs(&device))? {
                orphan_daemons.push(device);
            }
        }
        Ok(ObservedNode { gpus, orphan_daemons })
    }

    /// Plan and (unless `dry_run`) apply `map` on this node.
    pub fn deploy(&mut self, map: &DeploymentMap, opts: &DeployOptions, dry_run: bool) -> Result<DeployOutcome, DeployError> {
        let observed = self.observe()?;
        let plan = changes(map, opts, &observed)?;
        if dry_run {
            let segments = segment_envs(&plan, &BTreeMap::new(), &self.run_dir);
            return Ok(DeployOutcome { plan, applied: false, segments, checkpoint: None });
        }
        let record = self.run_dir.join(RECORD_FILE);
        if let Ok(r) = load_record(&record)
            && r.pid != std::process::id()
            && is_parva(r.pid)
        {
            return Err(DeployError::AlreadyServing { pid: r.pid, path: record.display().to_string() });
        }
        let mut checkpoint_path = None;
        if !plan.actions.is_empty() {
            if plan.changes_mig() {
                self.mig.check_privileges()?;
            }
            let path = self.run_dir.join(CHECKPOINT_FILE);
            let ck = Checkpoint::take(&mut self.ctl(), opts.node)?;
            ck.save(&path)?;
            self.apply(&plan.actions, &ck, &path)?;
            checkpoint_path = Some(path);
        }
        let devices = self.devices(&plan)?;
        let segments = segment_envs(&plan, &devices, &self.run_dir);
        self.write_record(&plan, &observed, &segments)?;
        Ok(DeployOutcome { plan, applied: true, segments, checkpoint: checkpoint_path })
    }

    fn apply(&mut self, actions: &[Action], ck: &Checkpoint, ck_path: &Path) -> Result<(), DeployError> {
        let mut created: BTreeMap<(u32, u8), String> = BTreeMap::new();
        for (i, action) in actions.iter().enumerate() {
            tracing::info!(step = i + 1, total = actions.len(), "{action}");
            if let Err(cause) = self.apply_one(action, &mut created) {
                tracing::error!("step {} failed: {cause}; restoring {}", i + 1, ck_path.display());
                let rollback = match ck.restore(&mut self.ctl(), ck_path) {
                    Ok(done) => format!(
                        "the node was restored to checkpoint {} ({} change(s) undone)",
                        ck_path.display(),
                        done.len()
                    ),
                    Err(e) => format!(
                        "restoring checkpoint {} ALSO failed: {e}; fix that, then run `parva deploy --restore`",
                        ck_path.display()
                    ),
                };
                return Err(DeployError::StepFailed {
                    step: i + 1,
                    total: actions.len(),
                    action: action.to_string(),
                    cause: cause.to_string(),
                    rollback,
                });
            }
        }
        Ok(())
    }

    fn apply_one(&mut self, action: &Action, created: &mut BTreeMap<(u32, u8), String>) -> Result<(), DeployError> {
        match action {
            Action::StopDaemon { device, .. } => self.ctl().stop_daemon(device),
            Action::DestroyInstance { gpu, gi_id, .. } => Ok(self.mig.destroy_instance(*gpu, *gi_id)?),
            Action::CreateInstance { gpu, profile_id, start, profile } => {
                let inst = self.mig.create_instance(*gpu, *profile_id, *start)?;
                let uuid = inst.uuid.ok_or_else(|| DeployError::Inconsistent {
                    gpu: *gpu,
                    uuid: String::new(),
                    what: format!("{profile} created at {{{start}}} has no MIG device UUID"),
                })?;
                created.insert((*gpu, *start), mig_device_name(&uuid));
                Ok(())
            }
            Action::StartDaemon { gpu, start, device } => {
                let device = match (device, start) {
                    (Some(d), _) => d.clone(),
                    (None, Some(s)) => created.get(&(*gpu, *s)).cloned().ok_or_else(|| DeployError::Inconsistent {
                        gpu: *gpu,
                        uuid: String::new(),
                        what: format!("no instance was created at {{{s}}} for its MPS daemon"),
                    })?,
                    (None, None) => return Ok(()),
                };
                self.ctl().start_daemon(&device)
            }
        }
    }

    /// Device of every target after applying: (NVML index, start) -> `MIG-...`/`GPU-...`.
    fn devices(&mut self, plan: &DeployPlan) -> Result<BTreeMap<(u32, u8), String>, DeployError> {
        let mut out = BTreeMap::new();
        let gpus: BTreeSet<u32> = plan.targets.iter().map(|t| t.gpu).collect();
        for gpu in gpus {
            if plan.no_mig {
                continue;
            }
            for inst in self.mig.instances(gpu)? {
                if let Some(u) = inst.uuid {
                    out.insert((gpu, inst.start), mig_device_name(&u));
                }
            }
        }
        Ok(out)
    }

    fn write_record(&mut self, plan: &DeployPlan, before: &ObservedNode, segments: &[SegmentEnv]) -> Result<(), DeployError> {
        let path = self.run_dir.join(RECORD_FILE);
        let previous = load_record(&path).ok();
        let existed = |gpu_uuid: &str, profile_id: u32, start: u8| {
            before.gpus.iter().any(|g| {
                g.info.uuid == gpu_uuid && g.instances.iter().any(|i| i.profile_id == profile_id && i.start == start)
            })
        };
        let previously_ours = |t: &PlannedInstance| {
            previous.as_ref().is_some_and(|r| {
                r.created.iter().any(|c| c.gpu_uuid == t.gpu_uuid && c.profile_id == t.profile_id && c.start == t.start)
            })
        };
        let created = if plan.no_mig {
            Vec::new()
        } else {
            plan.targets
                .iter()
                .filter(|t| !existed(&t.gpu_uuid, t.profile_id, t.start) || previously_ours(t))
                .map(|t| CreatedInstance { gpu_uuid: t.gpu_uuid.clone(), profile_id: t.profile_id, start: t.start })
                .collect()
        };
        let mut daemons: Vec<String> = segments.iter().map(|s| s.device.clone()).collect();
        daemons.dedup();
        let used: BTreeSet<u32> = plan.targets.iter().map(|t| t.gpu).collect();
        let free_gpus = before.gpus.iter().map(|g| g.info.index).filter(|i| !used.contains(i)).collect();
        let record =
            DeployRecord { node: plan.node, pid: std::process::id(), no_mig: plan.no_mig, created, daemons, segments: segments.to_vec(), free_gpus };
        let bytes = serde_json::to_vec_pretty(&record).map_err(|e| DeployError::file("encode", &path, e))?;
        parva_core::files::write_atomic(&path, &bytes).map_err(|e| DeployError::file("write deploy record", &path, e))
    }

    /// Stop the MPS daemon of the instance at placement `start` of GPU `gpu` (NVML index) and
    /// destroy the instance (a live transition's `destroy` step, whose workers have stopped).
    /// Nothing to do when no instance starts there. Returns what was done.
    pub fn remove_instance(&mut self, gpu: u32, start: u8) -> Result<Vec<String>, DeployError> {
        let Some(inst) = self.mig.instances(gpu)?.into_iter().find(|i| i.start == start) else {
            return Ok(Vec::new());
        };
        let mut done = Vec::new();
        if let Some(uuid) = &inst.uuid {
            let device = mig_device_name(uuid);
            if self.mps.running(&self.dirs(&device))? {
                self.ctl().stop_daemon(&device)?;
                done.push(format!("GPU {gpu}: stopped the MPS daemon of {device}"));
            }
        }
        self.mig.check_privileges()?;
        self.mig.destroy_instance(gpu, inst.gi_id)?;
        done.push(format!("GPU {gpu}: destroyed GI {} at {{{start}}}", inst.gi_id));
        Ok(done)
    }

    /// Restore `checkpoint.json` of the run directory.
    pub fn restore(&mut self) -> Result<Vec<String>, DeployError> {
        let path = self.run_dir.join(CHECKPOINT_FILE);
        let ck = Checkpoint::load(&path)?;
        if ck.differences(&mut self.ctl())?.is_empty() {
            return Ok(Vec::new());
        }
        self.mig.check_privileges()?;
        ck.restore(&mut self.ctl(), &path)
    }

    /// Stop the serving `parva deploy` (its workers), every daemon of the run directory, and
    /// destroy the instances this tool created. Returns what was done.
    pub fn teardown(&mut self) -> Result<Vec<String>, DeployError> {
        let path = self.run_dir.join(RECORD_FILE);
        let record = load_record(&path)?;
        let mut done = Vec::new();
        // The serving process sees this when it stops, and says a teardown is under way rather
        // than to run one.
        let marker = self.run_dir.join(TEARDOWN_MARKER);
        let _ = parva_core::files::write_atomic(&marker, format!("{}\n", std::process::id()).as_bytes());
        if record.pid != std::process::id() && stop_process(record.pid) {
            done.push(format!("stopped parva deploy (pid {}) and its workers", record.pid));
        }
        for device in daemon_devices(&self.run_dir) {
            if self.mps.running(&self.dirs(&device))? {
                self.ctl().stop_daemon(&device)?;
                done.push(format!("stopped the MPS daemon of {device}"));
            }
        }
        if !record.created.is_empty() {
            self.mig.check_privileges()?;
        }
        let gpus = self.mig.gpus()?;
        for c in &record.created {
            let Some(g) = gpus.iter().find(|g| g.uuid == c.gpu_uuid && g.mig.current) else { continue };
            let found = self.mig.instances(g.index)?.into_iter().find(|i| i.profile_id == c.profile_id && i.start == c.start);
            if let Some(inst) = found {
                self.mig.destroy_instance(g.index, inst.gi_id)?;
                done.push(format!("GPU {}: destroyed {} at {{{}}}", g.index, crate::mig::profile_label(Some(g), c.profile_id), c.start));
            }
        }
        std::fs::remove_file(&path).map_err(|e| DeployError::file("remove", &path, e))?;
        let _ = std::fs::remove_file(&marker);
        // Each line names the node the run directory deployed (not whatever --node says).
        Ok(done.into_iter().map(|l| format!("node {}: {l}", record.node)).collect())
    }
}

/// Present in the run directory while `parva deploy --teardown` runs.
pub const TEARDOWN_MARKER: &str = "teardown.pid";

pub fn load_record(path: &Path) -> Result<DeployRecord, DeployError> {
    crate::checkpoint::load_json(path, "tear down", "deploy record")
}

/// Whether `pid` runs a `parva` executable.
fn is_parva(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.split(|b| *b == 0).next().is_some_and(|exe| exe.ends_with(b"parva")))
}

/// SIGTERM `pid` if it runs `parva` (then SIGKILL after 10 s); true when it was running.
fn stop_process(pid: u32) -> bool {
    let alive = || Path::new(&format!("/proc/{pid}")).exists();
    // A stale record's pid may belong to another program by now: only stop a `parva`.
    if pid == 0 || !is_parva(pid) {
        return false;
    }
    let signal = |sig: &str| std::process::Command::new("kill").args([sig, &pid.to_string()]).status();
    if signal("-TERM").is_err() {
        return false;
    }
    let begin = Instant::now();
    while alive() && begin.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    if alive() {
        let _ = signal("-KILL");
    }
    true
}

/// Each target's worker environment; devices not yet known (dry run) print as `<new>`.
pub fn segment_envs(plan: &DeployPlan, devices: &BTreeMap<(u32, u8), String>, run_dir: &Path) -> Vec<SegmentEnv> {
    plan.targets
        .iter()
        .map(|t| {
            let device = if plan.no_mig {
                t.gpu_uuid.clone()
            } else {
                devices.get(&(t.gpu, t.start)).cloned().or_else(|| t.kept_device.clone()).unwrap_or_else(|| "<new>".into())
            };
            let dirs = MpsDirs::under(run_dir, &device);
            let mut env = vec![
                ("CUDA_VISIBLE_DEVICES".to_string(), device.clone()),
                ("CUDA_MPS_PIPE_DIRECTORY".to_string(), dirs.pipe.display().to_string()),
            ];
            if let Some(p) = t.active_thread_percentage {
                env.push(("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE".to_string(), p.to_string()));
            }
            if let Some(mb) = t.pinned_mem_limit_mb {
                // Device 0 of the devices the process sees (CUDA_VISIBLE_DEVICES names one).
                env.push(("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT".to_string(), format!("0={mb}M")));
            }
            SegmentEnv {
                plan_gpu: t.plan_gpu,
                gpu: t.gpu,
                start: t.start,
                service: t.service.clone(),
                model: t.model.clone(),
                profile: if plan.no_mig { format!("{} share of the whole GPU", t.profile) } else { t.profile.clone() },
                device,
                env,
            }
        })
        .collect()
}

#[cfg(test)]
#[path = "exec_tests.rs"]
mod tests;
