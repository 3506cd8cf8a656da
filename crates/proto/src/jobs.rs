//! Best-effort job processes, the job's side: the command line both job binaries parse
//! (`parva-worker --job`, the TorchScript job; `parva worker --job`, the emulated one), their
//! checkpoint state and the emulated job loop. The node starts and stops them with
//! `parva_runner::jobs::JobProcs`.
//!
//! A job process prints one JSON object per line on stdout: `start` (`resumed_step`), `progress`
//! (`step`, `samples`, `samples_per_s`, `loss`), `checkpoint` and `stopped` (`reason`). On SIGTERM
//! or SIGINT it finishes the step under way, checkpoints and exits 0.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
        let text = serde_json::to_string(self).map_err(|e| e.to_string())?;
        parva_core::files::write_atomic(&dir.join(STATE_FILE), (text + "\n").as_bytes()).map_err(|e| format!("{e:#}"))
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
}
