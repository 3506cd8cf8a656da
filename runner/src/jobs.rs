//! Best-effort job processes: the command line both job binaries parse (`parva-worker --job`, the
//! TorchScript job; `parva worker --job`, the emulated one), their checkpoint state, the emulated
//! job loop, and [`JobProcs`], which starts job instances and stops them within a grace period.
//!
//! A job process prints one JSON object per line on stdout: `start` (`resumed_step`), `progress`
//! (`step`, `samples`, `samples_per_s`, `loss`), `checkpoint` and `stopped` (`reason`). On SIGTERM
//! or SIGINT it finishes the step under way, checkpoints and exits 0; [`JobProcs::stop`] sends
//! SIGTERM and SIGKILLs a job that has not exited within its grace period.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parva_core::deploy::JobSlot;
use parva_core::jobs::JobKind;

/// What a job process takes besides the model (flattened into both job binaries' parsers).
#[derive(Debug, Clone, PartialEq, clap::Args)]
#[group(skip)]
pub struct JobArgs {
    /// Run a best-effort job instead of serving: `train` (SGD steps on synthetic data) or `batch`
    /// (offline inference at --max-batch). Needs --checkpoint.
    #[arg(long, value_enum, requires = "checkpoint", conflicts_with = "socket")]
    pub job: Option<JobKindArg>,
    /// Directory of the job's checkpoint: resumed from when it holds one, written atomically.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: Option<PathBuf>,
    /// Seconds between checkpoints.
    #[arg(long, default_value_t = 60.0, value_parser = positive_seconds)]
    pub checkpoint_every: f64,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 10.0, value_parser = positive_seconds)]
    pub report_every: f64,
    /// Stop (with a checkpoint) once the job has made this many steps in all, resumed ones included.
    #[arg(long)]
    pub steps: Option<u64>,
    /// SGD learning rate (train).
    #[arg(long, default_value_t = 0.01)]
    pub lr: f64,
    /// Seed of the synthetic data set.
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JobKindArg {
    Train,
    Batch,
}

impl From<JobKindArg> for JobKind {
    fn from(k: JobKindArg) -> JobKind {
        match k {
            JobKindArg::Train => JobKind::Train,
            JobKindArg::Batch => JobKind::Batch,
        }
    }
}

fn positive_seconds(v: &str) -> Result<f64, String> {
    match v.trim_end_matches('s').parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && x <= 86_400.0 => Ok(x),
        _ => Err(format!("must be seconds in (0, 86400]; got {v:?}")),
    }
}

/// What a checkpoint records (`state.json`; a train job saves its module beside it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobState {
    pub model: String,
    pub mode: String,
    pub step: u64,
    pub samples: u64,
    pub loss: Option<f64>,
}

pub const STATE_FILE: &str = "state.json";
/// Largest `state.json` a job resumes from, bytes (a real one is under 200): a bigger file is refused
/// before it is parsed.
pub const STATE_MAX_BYTES: u64 = 64 << 10;

impl JobState {
    /// The checkpoint in `dir` of a `kind` job of `model`: a fresh state when there is none, an
    /// error when it belongs to another model or kind.
    pub fn resume(dir: &Path, model: &str, kind: JobKind) -> Result<JobState, String> {
        let path = dir.join(STATE_FILE);
        let found: Option<JobState> = match std::fs::File::open(&path) {
            Ok(f) => {
                // Read at most the limit and one byte more, before parsing anything.
                let mut text = Vec::new();
                std::io::Read::read_to_end(&mut std::io::Read::take(f, STATE_MAX_BYTES + 1), &mut text).map_err(|e| format!("{}: {e}", path.display()))?;
                if text.len() as u64 > STATE_MAX_BYTES {
                    return Err(format!("{}: over {STATE_MAX_BYTES} bytes: not a job checkpoint state", path.display()));
                }
                Some(serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        match found {
            Some(s) if s.model != model || s.mode != kind.as_str() => Err(format!(
                "{} holds a checkpoint of a {} job of model {}, not of a {} job of {model}; give another --checkpoint",
                dir.display(),
                s.mode,
                s.model,
                kind.as_str()
            )),
            Some(s) => Ok(s),
            None => Ok(JobState { model: model.to_string(), mode: kind.as_str().into(), step: 0, samples: 0, loss: None }),
        }
    }

    /// Write `state.json` atomically (a temporary file renamed into place).
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        let text = serde_json::to_string(self).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, text + "\n").map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join(STATE_FILE)).map_err(|e| format!("{}: {e}", dir.display()))
    }
}

static STOP: AtomicBool = AtomicBool::new(false);
/// The parent process when the job started (0: not recorded).
static PARENT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Make SIGTERM and SIGINT ask the job loop to stop (see [`stop_requested`]), and note the
/// parent process: a job outlives no parent (a node killed without stopping its jobs).
pub fn install_stop_handler() {
    // SAFETY: getppid has no preconditions.
    PARENT.store(unsafe { libc::getppid() }, Ordering::SeqCst);
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
}

/// A signal asked the job to stop, or the process that started it has gone (it would hold its
/// GPCs forever otherwise): checkpoint and exit.
pub fn stop_requested() -> Option<&'static str> {
    let parent = PARENT.load(Ordering::SeqCst);
    if STOP.load(Ordering::SeqCst) {
        return Some("signal");
    }
    // SAFETY: getppid has no preconditions.
    (parent > 1 && unsafe { libc::getppid() } != parent).then_some("parent exited")
}

/// Print one JSON line on stdout (flushed: a parent reads it as it comes).
pub fn emit(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// The emulated job (`parva worker --job`): each step sleeps `step_ms` (a train step three
/// times the batch's execution time) and counts `rows` samples; the checkpoint is the state.
pub fn run_emulated_job(args: &JobArgs, model: &str, rows: usize, step_ms: f64) -> Result<(), String> {
    let kind: JobKind = args.job.ok_or("--job is required")?.into();
    let dir = args.checkpoint.as_deref().ok_or("--checkpoint DIR is required with --job")?;
    install_stop_handler();
    let mut state = JobState::resume(dir, model, kind)?;
    let step = Duration::from_secs_f64((step_ms * if kind == JobKind::Train { 3.0 } else { 1.0 }).max(0.01) / 1000.0);
    emit(serde_json::json!({"event": "start", "job": kind.as_str(), "model": model, "resumed_step": state.step, "samples": state.samples, "resumed": state.step > 0, "batch": rows}));
    let (mut last_report, mut last_ckpt, mut window) = (Instant::now(), Instant::now(), 0u64);
    let started = Instant::now();
    let reason = loop {
        if let Some(why) = stop_requested() {
            break why;
        }
        if args.steps.is_some_and(|n| state.step >= n) {
            break "steps";
        }
        std::thread::sleep(step);
        state.step += 1;
        state.samples += rows as u64;
        window += rows as u64;
        if kind == JobKind::Train {
            // A loss that falls as 1 / sqrt(step): what a training curve looks like.
            state.loss = Some(1.0 / (state.step as f64).sqrt());
        }
        let now = Instant::now();
        if now.duration_since(last_report).as_secs_f64() >= args.report_every {
            let secs = now.duration_since(last_report).as_secs_f64();
            emit(serde_json::json!({"event": "progress", "step": state.step, "samples": state.samples, "samples_per_s": window as f64 / secs, "loss": state.loss}));
            (last_report, window) = (now, 0);
        }
        if now.duration_since(last_ckpt).as_secs_f64() >= args.checkpoint_every {
            state.save(dir)?;
            emit(serde_json::json!({"event": "checkpoint", "step": state.step, "dir": dir}));
            last_ckpt = now;
        }
    };
    state.save(dir)?;
    emit(serde_json::json!({"event": "checkpoint", "step": state.step, "dir": dir}));
    emit(serde_json::json!({"event": "stopped", "reason": reason, "step": state.step, "samples": state.samples, "loss": state.loss, "seconds": started.elapsed().as_secs_f64()}));
    Ok(())
}

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

    #[test]
    fn a_checkpoint_resumes_its_own_job_only() {
        let d = tempfile::tempdir().unwrap();
        let fresh = JobState::resume(d.path(), "bert", JobKind::Train).unwrap();
        assert_eq!((fresh.step, fresh.samples), (0, 0));
        let state = JobState { step: 42, samples: 420, loss: Some(0.5), ..fresh };
        state.save(d.path()).unwrap();
        assert!(!d.path().join("state.json.tmp").exists());
        assert_eq!(JobState::resume(d.path(), "bert", JobKind::Train).unwrap(), state);
        let e = JobState::resume(d.path(), "bert", JobKind::Batch).unwrap_err();
        assert!(e.contains("holds a checkpoint of a train job of model bert, not of a batch job of bert"), "{e}");
        assert!(JobState::resume(d.path(), "resnet50", JobKind::Train).is_err());
        std::fs::write(d.path().join(STATE_FILE), "{not json").unwrap();
        assert!(JobState::resume(d.path(), "bert", JobKind::Train).unwrap_err().contains("state.json"));
        // A huge file is refused before it is parsed (regression: it was read whole).
        std::fs::write(d.path().join(STATE_FILE), vec![b' '; STATE_MAX_BYTES as usize + 1]).unwrap();
        let e = JobState::resume(d.path(), "bert", JobKind::Train).unwrap_err();
        assert!(e.contains("over 65536 bytes: not a job checkpoint state"), "{e}");
    }

    fn slot(job: &str, gpu: u32, placement: u8) -> JobSlot {
        JobSlot {
            node: 0,
            gpu,
            job: job.into(),
            model: "m".into(),
            kind: JobKind::Train,
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
