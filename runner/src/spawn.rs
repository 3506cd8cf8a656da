//! Starting worker processes, behind a trait: [`ProcessSpawner`] starts real OS processes;
//! [`FakeSpawner`] runs an emulated worker on a thread of this process, records every spawn, and
//! injects faults (failed starts, crashes after N batches) for the supervisor's tests.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// How to start one worker process.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSpec {
    /// Short, unique name (`w3`), used in file names and messages.
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Extra environment (CUDA_VISIBLE_DEVICES, CUDA_MPS_PIPE_DIRECTORY, ...).
    pub env: Vec<(String, String)>,
    /// The socket the router listens on for this worker (also in `args`).
    pub socket: PathBuf,
    /// Where the process's stdout and stderr go.
    pub log: PathBuf,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A started worker.
pub trait WorkerChild: Send {
    fn pid(&self) -> Option<u32>;
    /// Resolves when the process has exited, with a description of how.
    fn wait(&mut self) -> BoxFuture<'_, String>;
    /// Ask the process to end now (SIGKILL for a real process).
    fn kill(&mut self);
}

/// Starts workers.
pub trait Spawner: Send + Sync + 'static {
    fn spawn(&self, spec: &WorkerSpec) -> Result<Box<dyn WorkerChild>, String>;
}

/// Starts real processes with tokio; output goes to the spec's log file (appended).
#[derive(Debug, Default, Clone)]
pub struct ProcessSpawner;

struct ProcessChild(tokio::process::Child);

impl WorkerChild for ProcessChild {
    fn pid(&self) -> Option<u32> {
        self.0.id()
    }
    fn wait(&mut self) -> BoxFuture<'_, String> {
        Box::pin(async move {
            match self.0.wait().await {
                Ok(status) => status.to_string(),
                Err(e) => format!("wait failed: {e}"),
            }
        })
    }
    fn kill(&mut self) {
        let _ = self.0.start_kill();
    }
}

impl Spawner for ProcessSpawner {
    fn spawn(&self, spec: &WorkerSpec) -> Result<Box<dyn WorkerChild>, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .map_err(|e| format!("open log {}: {e}", spec.log.display()))?;
        let log2 = log.try_clone().map_err(|e| format!("open log {}: {e}", spec.log.display()))?;
        let mut cmd = tokio::process::Command::new(&spec.program);
        cmd.args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| format!("start {}: {e}", spec.program.display()))?;
        Ok(Box::new(ProcessChild(child)))
    }
}

/// Faults a [`FakeSpawner`] injects.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// The first N spawns fail.
    pub fail_spawns: usize,
    /// Each fake worker exits abruptly (closing its socket) when asked to run its N+1-th batch.
    pub crash_after_batches: Option<usize>,
}

/// In-process fake: each "process" is a thread running an emulated worker with fixed latencies.
#[derive(Clone)]
pub struct FakeSpawner {
    pub meta: crate::meta::ModelMeta,
    /// Seconds per batch of 1, 2, ... rows.
    pub exec_s: Vec<f64>,
    pub faults: Arc<Mutex<Faults>>,
    /// Every spawn asked for, in order (including the failed ones).
    pub calls: Arc<Mutex<Vec<WorkerSpec>>>,
}

impl FakeSpawner {
    pub fn new(meta: crate::meta::ModelMeta, exec_s: Vec<f64>, faults: Faults) -> Self {
        FakeSpawner { meta, exec_s, faults: Arc::new(Mutex::new(faults)), calls: Arc::new(Mutex::new(Vec::new())) }
    }

    pub fn spawn_count(&self) -> usize {
        self.calls.lock().map(|c| c.len()).unwrap_or(0)
    }
}

struct FakeChild {
    done: Option<tokio::sync::oneshot::Receiver<String>>,
    /// How it ended, once it has.
    exited: Option<String>,
    /// A clone of the fake worker's socket: shutting it down is how the fake "dies".
    stream: Option<std::os::unix::net::UnixStream>,
}

impl WorkerChild for FakeChild {
    fn pid(&self) -> Option<u32> {
        None
    }
    fn wait(&mut self) -> BoxFuture<'_, String> {
        Box::pin(async move {
            if let Some(rx) = self.done.as_mut() {
                let r = rx.await.unwrap_or_else(|_| "fake worker thread ended".into());
                self.done = None;
                self.exited = Some(r);
            }
            self.exited.clone().unwrap_or_default()
        })
    }
    fn kill(&mut self) {
        if let Some(s) = &self.stream {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// An executor that counts batches and "crashes" the fake process past a limit by closing its
/// socket, as a dying process would.
struct FaultyExec {
    inner: crate::worker::EmulatedExecutor,
    crash_after: Option<usize>,
    runs: usize,
    stream: Option<std::os::unix::net::UnixStream>,
}

impl crate::worker::Executor for FaultyExec {
    fn execute(&mut self, inputs: Vec<crate::tensor::Tensor>) -> Result<Vec<crate::tensor::Tensor>, String> {
        // Warm-up runs two batches before any real one.
        self.runs += 1;
        if self.crash_after.is_some_and(|c| self.runs > c + 2) {
            if let Some(s) = &self.stream {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            return Err("crashed (injected)".into());
        }
        self.inner.execute(inputs)
    }
}

impl Spawner for FakeSpawner {
    fn spawn(&self, spec: &WorkerSpec) -> Result<Box<dyn WorkerChild>, String> {
        if let Ok(mut c) = self.calls.lock() {
            c.push(spec.clone());
        }
        let faults = self.faults.lock().map(|f| f.clone()).unwrap_or_default();
        if faults.fail_spawns > 0 {
            if let Ok(mut f) = self.faults.lock() {
                f.fail_spawns -= 1;
            }
            return Err("injected spawn failure".into());
        }
        let stream = std::os::unix::net::UnixStream::connect(&spec.socket)
            .map_err(|e| format!("connect {}: {e}", spec.socket.display()))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let exec = FaultyExec {
            inner: crate::worker::EmulatedExecutor::new(self.meta.clone(), self.exec_s.clone()),
            crash_after: faults.crash_after_batches,
            runs: 0,
            stream: stream.try_clone().ok(),
        };
        let child_stream = stream.try_clone().ok();
        let meta = self.meta.clone();
        std::thread::spawn(move || {
            let id = crate::worker::WorkerIdentity { backend: "fake".into(), device: "none".into(), runtime: "fake".into() };
            let r = crate::worker::serve_stream(stream, &id, &meta, 1, || Ok(exec));
            let _ = tx.send(format!("fake worker ended: {r:?}"));
        });
        Ok(Box::new(FakeChild { done: Some(rx), exited: None, stream: child_stream }))
    }
}
