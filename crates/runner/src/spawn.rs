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
            .kill_on_drop(true)
            // Its own process group: a signal to parva's group (Ctrl-C, `timeout`, a supervisor
            // signalling the group) reaches parva alone, which then stops its workers in order;
            // before, every worker died with it and each was logged as a crash to restart (issue
            // 38). A worker still ends with parva: it exits when its socket closes.
            .process_group(0);
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
    /// The first N fake workers started stop answering (as after `kill -STOP`) when asked to run
    /// their first batch, until they are killed.
    pub stall_spawns: usize,
}

/// In-process fake: each "process" is a thread running an emulated worker with fixed latencies.
#[derive(Clone)]
pub struct FakeSpawner {
    pub meta: parva_proto::meta::ModelMeta,
    /// Seconds per batch of 1, 2, ... rows.
    pub exec_s: Vec<f64>,
    pub faults: Arc<Mutex<Faults>>,
    /// Every spawn asked for, in order (including the failed ones).
    pub calls: Arc<Mutex<Vec<WorkerSpec>>>,
}

impl FakeSpawner {
    pub fn new(meta: parva_proto::meta::ModelMeta, exec_s: Vec<f64>, faults: Faults) -> Self {
        FakeSpawner { meta, exec_s, faults: Arc::new(Mutex::new(faults)), calls: Arc::new(Mutex::new(Vec::new())) }
    }

    pub fn spawn_count(&self) -> usize {
        self.calls.lock().map(|c| c.len()).unwrap_or(0)
    }
}

struct FakeChild {
    done: Option<tokio::sync::oneshot::Receiver<String>>,
    /// Set by `kill`: a stalled fake worker wakes up and ends.
    killed: Arc<std::sync::atomic::AtomicBool>,
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
        self.killed.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(s) = &self.stream {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// An executor that counts batches and "crashes" the fake process past a limit by closing its
/// socket, as a dying process would.
struct FaultyExec {
    inner: parva_proto::worker::EmulatedExecutor,
    crash_after: Option<usize>,
    /// Stop answering at the first batch after warm-up, until killed.
    stall: bool,
    killed: Arc<std::sync::atomic::AtomicBool>,
    runs: usize,
    stream: Option<std::os::unix::net::UnixStream>,
}

impl parva_proto::worker::Executor for FaultyExec {
    fn execute(&mut self, inputs: Vec<parva_proto::tensor::Tensor>) -> Result<Vec<parva_proto::tensor::Tensor>, String> {
        // Warm-up runs two batches before any real one.
        self.runs += 1;
        if self.stall && self.runs > 2 {
            while !self.killed.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            return Err("killed while stalled (injected)".into());
        }
        if self.crash_after.is_some_and(|c| self.runs > c + 2) {
            if let Some(s) = &self.stream {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            return Err("crashed (injected)".into());
        }
        self.inner.execute(inputs)
    }

    fn modelled_seconds(&self, rows: usize) -> Option<f64> {
        self.inner.modelled_seconds(rows)
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
        let stall = faults.stall_spawns > 0;
        if stall {
            if let Ok(mut f) = self.faults.lock() {
                f.stall_spawns -= 1;
            }
        }
        let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stream = std::os::unix::net::UnixStream::connect(&spec.socket)
            .map_err(|e| format!("connect {}: {e}", spec.socket.display()))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let exec = FaultyExec {
            inner: parva_proto::worker::EmulatedExecutor::new(self.meta.clone(), self.exec_s.clone()),
            crash_after: faults.crash_after_batches,
            stall,
            killed: killed.clone(),
            runs: 0,
            stream: stream.try_clone().ok(),
        };
        let child_stream = stream.try_clone().ok();
        let meta = self.meta.clone();
        std::thread::spawn(move || {
            let id = parva_proto::worker::WorkerIdentity { backend: "fake".into(), device: "none".into(), runtime: "fake".into() };
            let r = parva_proto::worker::serve_stream(stream, &id, &meta, 1, || Ok(exec));
            let _ = tx.send(format!("fake worker ended: {r:?}"));
        });
        Ok(Box::new(FakeChild { done: Some(rx), killed, exited: None, stream: child_stream }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &std::path::Path, program: &str, args: &[&str]) -> WorkerSpec {
        WorkerSpec {
            name: "w0".into(),
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: vec![("PARVA_SPAWN_TEST".into(), "from-the-spec".into())],
            socket: dir.join("w0.sock"),
            log: dir.join("w0.log"),
        }
    }

    /// The process gets the spec's arguments and environment, no stdin, and both its output
    /// streams go to the log, appended (a restarted worker keeps its predecessor's lines).
    #[tokio::test]
    async fn a_real_process_gets_args_env_and_appends_both_streams_to_its_log() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("w0.log"), "earlier run\n").unwrap();
        let script = "echo \"out $1 $PARVA_SPAWN_TEST\"; echo err >&2; read -r line && echo \"stdin: $line\"; exit 3";
        let s = spec(d.path(), "/bin/sh", &["-c", script, "sh", "arg-one"]);
        let mut child = ProcessSpawner.spawn(&s).unwrap();
        assert!(child.pid().is_some_and(|p| p > 0));
        let how = child.wait().await;
        assert!(how.contains("exit status: 3"), "{how}");
        let log = std::fs::read_to_string(&s.log).unwrap();
        assert!(log.starts_with("earlier run\n"), "{log}");
        assert!(log.contains("out arg-one from-the-spec\n") && log.contains("err\n"), "{log}");
        assert!(!log.contains("stdin:"), "stdin is not /dev/null: {log}");
    }

    #[tokio::test]
    async fn kill_ends_a_running_process_and_wait_says_by_which_signal() {
        let d = tempfile::tempdir().unwrap();
        let mut child = ProcessSpawner.spawn(&spec(d.path(), "/bin/sleep", &["600"])).unwrap();
        child.kill();
        let how = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait()).await.expect("killed child never exited");
        assert!(how.contains("signal: 9"), "{how}");
    }

    #[test]
    fn failures_to_start_name_the_program_or_the_log() {
        let d = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _g = rt.enter();
        let e = ProcessSpawner.spawn(&spec(d.path(), "/nonexistent/parva-worker", &[])).err().unwrap();
        assert!(e.starts_with("start /nonexistent/parva-worker: "), "{e}");
        let mut s = spec(d.path(), "/bin/true", &[]);
        s.log = d.path().join("no/such/dir/w0.log");
        let e = ProcessSpawner.spawn(&s).err().unwrap();
        assert!(e.starts_with(&format!("open log {}: ", s.log.display())), "{e}");
    }

    #[test]
    fn the_fake_fails_the_first_n_spawns_and_records_every_call() {
        let d = tempfile::tempdir().unwrap();
        let meta: parva_proto::meta::ModelMeta =
            serde_json::from_str(r#"{"name":"m","inputs":[{"name":"x","datatype":"FP32","shape":[-1,2]}],"outputs":[{"name":"y","datatype":"FP32","shape":[-1,1]}]}"#)
                .unwrap();
        let fake = FakeSpawner::new(meta, vec![0.001], Faults { fail_spawns: 2, ..Faults::default() });
        let s = spec(d.path(), "parva-worker", &[]);
        for _ in 0..2 {
            assert_eq!(fake.spawn(&s).err().as_deref(), Some("injected spawn failure"));
        }
        // The third is attempted for real: no router listens on the socket, so it cannot connect.
        let e = fake.spawn(&s).err().unwrap();
        assert!(e.starts_with(&format!("connect {}: ", s.socket.display())), "{e}");
        assert_eq!(fake.spawn_count(), 3);
        assert_eq!(fake.calls.lock().unwrap().iter().map(|c| &c.name).collect::<Vec<_>>(), ["w0", "w0", "w0"]);
    }
}
