//! Best-effort job instances on a node: [`JobProcs`] starts them (the command line both job
//! binaries parse is [`parva_proto::jobs::JobArgs`]) into their own directories and stops them
//! within a grace period (SIGTERM, then SIGKILL).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parva_core::deploy::JobSlot;

/// How to start one job instance: the program and its leading arguments, then the job's own.
#[derive(Debug, Clone, PartialEq)]
pub struct JobCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Models directory (`<model>.json`, and `<model>.pt` for the TorchScript job).
    pub models_dir: PathBuf,
    /// `Some(ms per row)` for the emulated job: each batch takes `ms x batch`.
    pub emulated_ms_per_row: Option<f64>,
    /// `--device` of the TorchScript job.
    pub device: Option<String>,
    pub checkpoint_every_s: f64,
}

/// A running job instance.
struct JobProc {
    slot: JobSlot,
    child: Child,
    checkpoint: PathBuf,
    samples: Arc<AtomicU64>,
}

/// How a job instance stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Stopped {
    pub slot: JobSlot,
    /// It exited by itself within the grace period (after its checkpoint); false: SIGKILLed.
    pub graceful: bool,
    pub seconds: f64,
}

/// The job instances of a node: started into `dir/<job>/<replica>/` (checkpoint and `log.jsonl`),
/// a replica being the lowest number no running instance of the job uses, so an instance
/// restarted after a reclaim resumes a checkpoint of its job.
pub struct JobProcs {
    dir: PathBuf,
    command: JobCommand,
    procs: Vec<JobProc>,
    /// Samples of instances that have stopped, by job.
    done: std::collections::BTreeMap<String, u64>,
}

impl JobProcs {
    pub fn new(dir: PathBuf, command: JobCommand) -> Self {
        JobProcs { dir, command, procs: Vec::new(), done: Default::default() }
    }

    /// The instances running now.
    pub fn running(&self) -> Vec<JobSlot> {
        self.procs.iter().map(|p| p.slot.clone()).collect()
    }

    /// Samples made by each job so far (running and stopped instances).
    pub fn samples(&self) -> std::collections::BTreeMap<String, u64> {
        let mut out = self.done.clone();
        for p in &self.procs {
            *out.entry(p.slot.job.clone()).or_default() += p.samples.load(Ordering::Relaxed);
        }
        out
    }

    /// Start `slot` with `env` (its MIG device and MPS settings), resuming its replica's checkpoint.
    pub fn start(&mut self, slot: JobSlot, env: &[(String, String)]) -> std::io::Result<()> {
        let used: Vec<&Path> = self.procs.iter().filter(|p| p.slot.job == slot.job).map(|p| p.checkpoint.as_path()).collect();
        let checkpoint = (0u32..)
            .map(|r| self.dir.join(&slot.job).join(r.to_string()))
            .find(|d| !used.contains(&d.as_path()))
            .unwrap_or_else(|| self.dir.join(&slot.job).join("0"));
        std::fs::create_dir_all(&checkpoint)?;
        let c = &self.command;
        let mut cmd = Command::new(&c.program);
        cmd.args(&c.args)
            .arg("--job")
            .arg(slot.kind.as_str())
            .arg("--checkpoint")
            .arg(&checkpoint)
            .arg("--checkpoint-every")
            .arg(c.checkpoint_every_s.to_string())
            .arg("--report-every")
            .arg("1")
            .arg("--model-meta")
            .arg(c.models_dir.join(format!("{}.json", slot.model)))
            .arg("--max-batch")
            .arg(slot.batch_size.to_string());
        match c.emulated_ms_per_row {
            Some(ms) => {
                cmd.arg("--exec-ms").arg(format!("{}", ms * slot.batch_size as f64));
            }
            None => {
                cmd.arg("--model").arg(c.models_dir.join(format!("{}.pt", slot.model)));
                if let Some(d) = &c.device {
                    cmd.arg("--device").arg(d);
                }
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn()?;
        let samples = Arc::new(AtomicU64::new(0));
        if let Some(out) = child.stdout.take() {
            let (samples, log) = (samples.clone(), checkpoint.join("log.jsonl"));
            std::thread::spawn(move || {
                let mut log = std::fs::OpenOptions::new().create(true).append(true).open(log).ok();
                // `samples` counts from the job's first start; the `start` line gives the count resumed from.
                let mut base = 0u64;
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Some(f) = log.as_mut() {
                        let _ = writeln!(f, "{line}");
                    }
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                    match (v["event"].as_str(), v["samples"].as_u64()) {
                        (Some("start"), Some(n)) => base = n,
                        (_, Some(n)) => samples.store(n.saturating_sub(base), Ordering::Relaxed),
                        _ => {}
                    }
                }
            });
        }
        tracing::info!(job = %slot.job, gpu = slot.gpu, placement = slot.placement, size = slot.instance_size, checkpoint = %checkpoint.display(), "best-effort job started");
        self.procs.push(JobProc { slot, child, checkpoint, samples });
        Ok(())
    }

    /// Stop the instance at (`gpu`, `placement`): SIGTERM, then SIGKILL after `grace`. `None`
    /// when no job runs there.
    pub fn stop(&mut self, gpu: u32, placement: u8, grace: Duration) -> Option<Stopped> {
        let i = self.procs.iter().position(|p| (p.slot.gpu, p.slot.placement) == (gpu, placement))?;
        let mut p = self.procs.remove(i);
        let t0 = Instant::now();
        // SAFETY: kill(2) of a child we started and have not reaped.
        unsafe { libc::kill(p.child.id() as libc::pid_t, libc::SIGTERM) };
        let graceful = loop {
            if let Ok(Some(_)) = p.child.try_wait() {
                break true;
            }
            if t0.elapsed() >= grace {
                break false;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if !graceful {
            let _ = p.child.kill();
            let _ = p.child.wait();
            tracing::warn!(job = %p.slot.job, gpu, placement, grace_s = grace.as_secs_f64(), "a best-effort job did not stop within its grace period: killed");
        }
        *self.done.entry(p.slot.job.clone()).or_default() += p.samples.load(Ordering::Relaxed);
        tracing::info!(job = %p.slot.job, gpu, placement, graceful, seconds = t0.elapsed().as_secs_f64(), "best-effort job stopped");
        Some(Stopped { slot: p.slot, graceful, seconds: t0.elapsed().as_secs_f64() })
    }

    /// Stop every instance: SIGTERM to all at once, then each gets what is left of `grace`.
    pub fn stop_all(&mut self, grace: Duration) -> Vec<Stopped> {
        for p in &self.procs {
            // SAFETY: kill(2) of a child we started and have not reaped.
            unsafe { libc::kill(p.child.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + grace;
        let keys: Vec<(u32, u8)> = self.procs.iter().map(|p| (p.slot.gpu, p.slot.placement)).collect();
        keys.into_iter().filter_map(|(g, p)| self.stop(g, p, deadline.saturating_duration_since(Instant::now()))).collect()
    }
}

impl Drop for JobProcs {
    fn drop(&mut self) {
        self.stop_all(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(job: &str, gpu: u32, placement: u8) -> JobSlot {
        JobSlot {
            node: 0,
            gpu,
            job: job.into(),
            model: "m".into(),
            kind: parva_core::jobs::JobKind::Train,
            placement,
            instance_size: 1,
            batch_size: 4,
            priority: 0,
            profile: None,
            gpu_type: None,
            throughput: None,
        }
    }

    /// A shell standing in for a job binary: reports 40 samples, then waits; on SIGTERM it exits
    /// (`stops`) or ignores it.
    fn procs(dir: &Path, stops: bool) -> JobProcs {
        let trap = if stops { "trap 'echo {\"event\":\"stopped\"}; exit 0' TERM" } else { "trap '' TERM" };
        let script = format!("{trap}; echo '{{\"event\":\"start\",\"samples\":100}}'; echo '{{\"event\":\"progress\",\"samples\":140}}'; while true; do sleep 0.05; done");
        let command = JobCommand {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script, "job".into()],
            models_dir: dir.to_path_buf(),
            emulated_ms_per_row: Some(1.0),
            device: None,
            checkpoint_every_s: 60.0,
        };
        JobProcs::new(dir.join("jobs"), command)
    }

    fn wait_for(mut f: impl FnMut() -> bool) {
        let t0 = Instant::now();
        while !f() {
            assert!(t0.elapsed() < Duration::from_secs(10), "timed out");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn instances_count_their_own_samples_use_free_replicas_and_stop_within_their_grace() {
        let d = tempfile::tempdir().unwrap();
        let mut p = procs(d.path(), true);
        p.start(slot("ft", 0, 0), &[]).unwrap();
        p.start(slot("ft", 1, 0), &[]).unwrap();
        // Samples past the count each instance resumed from: 2 x (140 - 100).
        wait_for(|| p.samples().get("ft") == Some(&80));
        assert!(d.path().join("jobs/ft/0/log.jsonl").is_file() && d.path().join("jobs/ft/1").is_dir());
        let stopped = p.stop(0, 0, Duration::from_secs(5)).unwrap();
        assert!(stopped.graceful && stopped.seconds < 5.0, "{stopped:?}");
        assert_eq!(p.samples().get("ft"), Some(&80), "a stopped instance's samples still count");
        // Replica 0 is free again: the next instance resumes its checkpoint directory.
        p.start(slot("ft", 0, 2), &[]).unwrap();
        wait_for(|| p.samples().get("ft") == Some(&120));
        assert_eq!(p.running().len(), 2);
        assert!(p.stop(5, 5, Duration::from_secs(1)).is_none(), "no job there");
        assert_eq!(p.stop_all(Duration::from_secs(5)).len(), 2);
        assert!(p.running().is_empty());
    }

    #[test]
    fn a_job_that_ignores_sigterm_is_killed_after_its_grace() {
        let d = tempfile::tempdir().unwrap();
        let mut p = procs(d.path(), false);
        p.start(slot("stubborn", 0, 0), &[]).unwrap();
        wait_for(|| p.samples().get("stubborn") == Some(&40));
        let stopped = p.stop(0, 0, Duration::from_millis(300)).unwrap();
        assert!(!stopped.graceful, "{stopped:?}");
        assert!(stopped.seconds >= 0.3 && stopped.seconds < 3.0, "{stopped:?}");
    }
}
