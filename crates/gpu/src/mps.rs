//! MPS control daemons, one per device (a MIG device `MIG-...`, or a whole GPU `GPU-...` with
//! `--no-mig`), each with its own pipe and log directory under the run directory:
//! `<run_dir>/mps/<device>/{pipe,log}`. Started as
//! `CUDA_VISIBLE_DEVICES=<device> CUDA_MPS_PIPE_DIRECTORY=.. CUDA_MPS_LOG_DIRECTORY=.. nvidia-cuda-mps-control -d`
//! and stopped with `quit` on its control pipe. A daemon left by an earlier run is found again
//! from its pipe directory, so a redeploy keeps it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::fault::CallLog;

/// Where a device's daemon keeps its pipes and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpsDirs {
    pub pipe: PathBuf,
    pub log: PathBuf,
}

impl MpsDirs {
    /// `<run_dir>/mps/<device>/{pipe,log}`.
    pub fn under(run_dir: &Path, device: &str) -> MpsDirs {
        let base = run_dir.join("mps").join(device);
        MpsDirs { pipe: base.join("pipe"), log: base.join("log") }
    }
}

/// Devices that have a daemon directory under `run_dir` (running or not).
pub fn daemon_devices(run_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(run_dir.join("mps")) else { return Vec::new() };
    let mut out: Vec<String> =
        entries.filter_map(|e| e.ok()).filter_map(|e| e.file_name().to_str().map(str::to_string)).collect();
    out.sort();
    out
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MpsError {
    #[error("MPS daemon for {device}: cannot {what} {path}: {message}")]
    Io { device: String, what: &'static str, path: String, message: String },
    #[error("MPS daemon for {device}: `{command}` failed: {message}")]
    Command { device: String, command: String, message: String },
    #[error("MPS daemon for {device} did not {what} within {secs} s (pipe directory {pipe})")]
    Timeout { device: String, what: &'static str, secs: u64, pipe: String },
    #[error("MPS daemon for {device} is already running (pipe directory {pipe})")]
    AlreadyRunning { device: String, pipe: String },
    #[error("injected failure at MPS call #{n} `{call}`")]
    Injected { n: usize, call: String },
}

/// Start, stop and find MPS control daemons.
pub trait MpsControl {
    /// Start a control daemon for `device` (`MIG-...` or `GPU-...`) using `dirs`.
    fn start(&mut self, device: &str, dirs: &MpsDirs) -> Result<(), MpsError>;
    /// Ask the daemon using `dirs` to quit and wait until it has; `Ok` when none runs.
    fn stop(&mut self, device: &str, dirs: &MpsDirs) -> Result<(), MpsError>;
    /// Whether a daemon is running on `dirs` (one left by an earlier run included).
    fn running(&mut self, dirs: &MpsDirs) -> Result<bool, MpsError>;
}

/// The real `nvidia-cuda-mps-control`.
#[derive(Debug, Clone)]
pub struct RealMps {
    /// The control binary (default: `nvidia-cuda-mps-control` on `PATH`).
    pub binary: PathBuf,
    pub timeout: Duration,
}

impl Default for RealMps {
    fn default() -> Self {
        RealMps { binary: PathBuf::from("nvidia-cuda-mps-control"), timeout: Duration::from_secs(10) }
    }
}

fn io_err(device: &str, what: &'static str, path: &Path, e: std::io::Error) -> MpsError {
    MpsError::Io { device: device.into(), what, path: path.display().to_string(), message: e.to_string() }
}

impl RealMps {
    fn command(&self, device: &str, dirs: &MpsDirs) -> Command {
        let mut c = Command::new(&self.binary);
        c.env("CUDA_VISIBLE_DEVICES", device)
            .env("CUDA_MPS_PIPE_DIRECTORY", &dirs.pipe)
            .env("CUDA_MPS_LOG_DIRECTORY", &dirs.log);
        c
    }

    fn wait_for(&mut self, device: &str, dirs: &MpsDirs, want: bool, what: &'static str) -> Result<(), MpsError> {
        let begin = Instant::now();
        while begin.elapsed() < self.timeout {
            if self.running(dirs)? == want {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(MpsError::Timeout {
            device: device.into(),
            what,
            secs: self.timeout.as_secs(),
            pipe: dirs.pipe.display().to_string(),
        })
    }
}

/// Pid of the control daemon serving `pipe`: from a pid file in the pipe directory when the
/// driver writes one, else by scanning `/proc` for `nvidia-cuda-mps-control` processes whose
/// environment names this pipe directory.
pub fn find_daemon(pipe: &Path) -> Option<u32> {
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.contains("nvidia-cuda-mps-control"))
    };
    if let Ok(text) = std::fs::read_to_string(pipe.join("nvidia-cuda-mps-control.pid"))
        && let Ok(pid) = text.trim().parse::<u32>()
        && alive(pid)
    {
        return Some(pid);
    }
    let want = format!("CUDA_MPS_PIPE_DIRECTORY={}", pipe.display());
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.filter_map(|e| e.ok()).filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()).find(|&pid| {
        alive(pid)
            && std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()))
    })
}

impl MpsControl for RealMps {
    fn start(&mut self, device: &str, dirs: &MpsDirs) -> Result<(), MpsError> {
        for dir in [&dirs.pipe, &dirs.log] {
            std::fs::create_dir_all(dir).map_err(|e| io_err(device, "create", dir, e))?;
        }
        if self.running(dirs)? {
            return Err(MpsError::AlreadyRunning { device: device.into(), pipe: dirs.pipe.display().to_string() });
        }
        let command = format!("{} -d", self.binary.display());
        let status = self.command(device, dirs).arg("-d").stdin(Stdio::null()).status().map_err(|e| {
            MpsError::Command { device: device.into(), command: command.clone(), message: e.to_string() }
        })?;
        if !status.success() {
            return Err(MpsError::Command {
                device: device.into(),
                command,
                message: format!("{status}; see {}", dirs.log.join("control.log").display()),
            });
        }
        self.wait_for(device, dirs, true, "start")
    }

    fn stop(&mut self, device: &str, dirs: &MpsDirs) -> Result<(), MpsError> {
        if !self.running(dirs)? {
            return Ok(());
        }
        let command = format!("echo quit | {}", self.binary.display());
        let fail = |message: String| MpsError::Command { device: device.into(), command: command.clone(), message };
        let mut child = self
            .command(device, dirs)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| fail(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(b"quit\n").map_err(|e| fail(e.to_string()))?;
        }
        let status = child.wait().map_err(|e| fail(e.to_string()))?;
        if !status.success() {
            return Err(fail(status.to_string()));
        }
        self.wait_for(device, dirs, false, "quit")
    }

    fn running(&mut self, dirs: &MpsDirs) -> Result<bool, MpsError> {
        Ok(find_daemon(&dirs.pipe).is_some())
    }
}

/// A fake MPS: a daemon is a marker file in its pipe directory, so it survives between `parva`
/// commands like a real daemon would. Records calls; can fail any one ([`crate::fault`]).
#[derive(Debug, Clone, Default)]
pub struct FakeMps {
    log: CallLog,
}

/// The marker file standing for a running fake daemon.
pub const FAKE_DAEMON_FILE: &str = "fake-mps-control";

impl FakeMps {
    pub fn calls(&self) -> &[String] {
        &self.log.calls
    }

    pub fn set_fault(&mut self, fault: Option<crate::fault::Fault>) {
        self.log.set_fault(fault);
    }

    fn record(&mut self, call: String) -> Result<(), MpsError> {
        match self.log.record(call) {
            Some(n) => Err(MpsError::Injected { n, call: self.log.calls[n - 1].clone() }),
            None => Ok(()),
        }
    }
}

impl MpsControl for FakeMps {
    fn start(&mut self, device: &str, dirs: &MpsDirs) -> Result<(), MpsError> {
        self.record(format!("mps_start {device}"))?;
        for dir in [&dirs.pipe, &dirs.log] {
            std::fs::create_dir_all(dir).map_err(|e| io_err(device, "create", dir, e))?;
        }
        let marker = dirs.pipe.join(FAKE_DAEMON_FILE);
        if marker.exists() {
            return Err(MpsError::AlreadyRunning { device: device.into(), pipe: dirs.pipe.display().to_string() });
        }
        std::fs::write(&marker, device).map_err(|e| io_err(device, "write", &marker, e))
    }

    fn stop(&mut self, device: &str, dirs: &MpsDirs) -> Result<(), MpsError> {
        self.record(format!("mps_stop {device}"))?;
        let marker = dirs.pipe.join(FAKE_DAEMON_FILE);
        match std::fs::remove_file(&marker) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(device, "remove", &marker, e)),
        }
    }

    fn running(&mut self, dirs: &MpsDirs) -> Result<bool, MpsError> {
        Ok(dirs.pipe.join(FAKE_DAEMON_FILE).exists())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_daemon_is_found_again_by_a_new_controller_and_stops() {
        let d = tempfile::tempdir().unwrap();
        let dirs = MpsDirs::under(d.path(), "MIG-abc");
        assert_eq!(dirs.pipe, d.path().join("mps/MIG-abc/pipe"));
        let mut a = FakeMps::default();
        assert!(!a.running(&dirs).unwrap());
        a.start("MIG-abc", &dirs).unwrap();
        assert!(dirs.log.is_dir());
        assert!(matches!(a.start("MIG-abc", &dirs), Err(MpsError::AlreadyRunning { .. })));
        let mut b = FakeMps::default();
        assert!(b.running(&dirs).unwrap(), "a later run detects the daemon");
        assert_eq!(daemon_devices(d.path()), vec!["MIG-abc".to_string()]);
        b.stop("MIG-abc", &dirs).unwrap();
        assert!(!a.running(&dirs).unwrap());
        b.stop("MIG-abc", &dirs).unwrap();
        assert_eq!(b.calls(), ["mps_stop MIG-abc", "mps_stop MIG-abc"]);
    }

    #[test]
    fn real_mps_reports_a_missing_binary_naming_the_device() {
        let d = tempfile::tempdir().unwrap();
        let dirs = MpsDirs::under(d.path(), "GPU-x");
        let mut mps = RealMps { binary: d.path().join("no-such-mps-control"), timeout: Duration::from_millis(200) };
        assert!(!mps.running(&dirs).unwrap());
        let e = mps.start("GPU-x", &dirs).unwrap_err().to_string();
        assert!(e.contains("GPU-x") && e.contains("no-such-mps-control"), "{e}");
        mps.stop("GPU-x", &dirs).unwrap();
    }

    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn real_mps_daemon_starts_and_quits_on_gpu0() {
        let d = tempfile::tempdir().unwrap();
        let dirs = MpsDirs::under(d.path(), "0");
        let mut mps = RealMps::default();
        mps.start("0", &dirs).unwrap();
        assert!(mps.running(&dirs).unwrap());
        mps.stop("0", &dirs).unwrap();
        assert!(!mps.running(&dirs).unwrap());
    }
}
