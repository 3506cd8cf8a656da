//! The worker processes of one (instance, process count): started together, each on its own
//! Unix socket, and driven in lock-step rounds of `Bench` frames (see `parva_proto::frame`).
//! Workers are kept across the batch sizes of a series, so a model loads once per series.

use std::path::Path;
use std::time::Duration;

use parva_proto::frame::{self as proto, Msg};
use parva_runner::spawn::{Spawner, WorkerChild, WorkerSpec};
use tokio::io::BufReader;
use tokio::net::UnixListener;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// What the first worker said about itself.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct WorkerInfo {
    pub backend: String,
    pub device: String,
    pub runtime: String,
}

/// Why a pool could not start or a round did not complete. Recorded in the table's `note`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PoolError {
    #[error("worker {worker} did not start: {message}")]
    Start { worker: String, message: String },
    #[error("worker {worker} died ({how}){tail}")]
    Died { worker: String, how: String, tail: String },
    #[error("worker {worker}: {message}")]
    Failed { worker: String, message: String },
    #[error("worker {worker}: no answer within {secs} s")]
    Timeout { worker: String, secs: u64 },
}

impl PoolError {
    /// Whether the failure is the device running out of memory (a result, not a fault).
    pub fn is_oom(&self) -> bool {
        match self {
            PoolError::Failed { message, .. } | PoolError::Start { message, .. } => is_oom_message(message),
            _ => false,
        }
    }
}

/// Whether an error message from a worker (libtorch, CUDA, cuBLAS, cuDNN) means out of memory.
pub fn is_oom_message(m: &str) -> bool {
    let m = m.to_ascii_lowercase();
    m.contains("out of memory") || m.contains("cublas_status_alloc_failed") || m.contains("cudnn_status_alloc_failed")
}

struct Worker {
    name: String,
    child: Box<dyn WorkerChild>,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    log: std::path::PathBuf,
}

/// Running workers.
pub struct Pool {
    workers: Vec<Worker>,
    pub info: WorkerInfo,
}

/// The last lines of a worker's log, for messages.
fn log_tail(log: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(log) else { return String::new() };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    if tail.is_empty() { String::new() } else { format!("; log {}: {tail}", log.display()) }
}

impl Pool {
    /// Start one worker per spec and wait until every one is ready (or any fails).
    pub async fn start(spawner: &dyn Spawner, specs: &[WorkerSpec], ready_timeout: Duration) -> Result<Pool, PoolError> {
        let mut pending = Vec::new();
        let mut pool = Pool { workers: Vec::new(), info: WorkerInfo::default() };
        for spec in specs {
            let start_err = |message: String| PoolError::Start { worker: spec.name.clone(), message };
            let _ = std::fs::remove_file(&spec.socket);
            let listener = UnixListener::bind(&spec.socket).map_err(|e| start_err(format!("listen on {}: {e}", spec.socket.display())))?;
            let child = spawner.spawn(spec).map_err(start_err)?;
            pending.push((spec, listener, child));
        }
        let deadline = tokio::time::Instant::now() + ready_timeout;
        for (spec, listener, mut child) in pending {
            let start_err = |message: String| PoolError::Start { worker: spec.name.clone(), message };
            let stream = tokio::select! {
                r = listener.accept() => r.map(|(s, _)| s).map_err(|e| start_err(format!("accept: {e}")))?,
                how = child.wait() => return Err(start_err(format!("exited before connecting ({how}){}", log_tail(&spec.log)))),
                _ = tokio::time::sleep_until(deadline) => {
                    child.kill();
                    return Err(start_err(format!("did not connect within {ready_timeout:?}")));
                }
            };
            let (r, w) = stream.into_split();
            let mut worker = Worker { name: spec.name.clone(), child, reader: BufReader::new(r), writer: w, log: spec.log.clone() };
            loop {
                let frame = tokio::select! {
                    f = proto::read_frame_async(&mut worker.reader, None) => f,
                    _ = tokio::time::sleep_until(deadline) => {
                        worker.child.kill();
                        return Err(start_err(format!("not ready within {ready_timeout:?}")));
                    }
                };
                match frame {
                    Ok(f) => match f.msg {
                        Msg::Hello { backend, device, runtime, .. } => {
                            pool.info = WorkerInfo { backend, device, runtime };
                        }
                        Msg::Ready { .. } => break,
                        Msg::Fatal { message } => return Err(start_err(format!("could not load the model: {message}"))),
                        other => return Err(start_err(format!("unexpected message before ready: {other:?}"))),
                    },
                    Err(e) => {
                        let how = worker.child.wait().await;
                        return Err(start_err(format!("{e} ({how}){}", log_tail(&worker.log))));
                    }
                }
            }
            pool.workers.push(worker);
        }
        Ok(pool)
    }

    /// Process ids of the workers (real processes only).
    pub fn pids(&self) -> Vec<u32> {
        self.workers.iter().filter_map(|w| w.child.pid()).collect()
    }

    /// One round: every worker benches batches of `rows` for `seconds`, all at once. Returns each
    /// worker's batch latencies (us) and wall time (s).
    pub async fn round(&mut self, rows: u32, seconds: f64) -> Result<Vec<(Vec<u64>, f64)>, PoolError> {
        let msg = Msg::Bench { rows: rows as usize, seconds };
        for w in &mut self.workers {
            if let Err(e) = proto::write_frame_async(&mut w.writer, &msg, &[]).await {
                return Err(died(w, e.to_string()).await);
            }
        }
        // A batch may be slow; allow well past the round for the last one to finish.
        let limit = Duration::from_secs_f64(seconds * 2.0 + 600.0);
        let mut out = Vec::with_capacity(self.workers.len());
        for w in &mut self.workers {
            let frame = match tokio::time::timeout(limit, proto::read_frame_async(&mut w.reader, None)).await {
                Err(_) => return Err(PoolError::Timeout { worker: w.name.clone(), secs: limit.as_secs() }),
                Ok(Err(e)) => return Err(died(w, e.to_string()).await),
                Ok(Ok(f)) => f,
            };
            match frame.msg {
                Msg::BenchDone { lat_us, seconds, .. } if !lat_us.is_empty() => out.push((lat_us, seconds)),
                Msg::Failed { message, .. } => return Err(PoolError::Failed { worker: w.name.clone(), message }),
                other => {
                    return Err(PoolError::Failed { worker: w.name.clone(), message: format!("unexpected answer to Bench: {other:?}") });
                }
            }
        }
        Ok(out)
    }

    /// Ask every worker to exit and wait until each has (killing any that take over 5 s).
    pub async fn shutdown(mut self) {
        for w in &mut self.workers {
            let _ = proto::write_frame_async(&mut w.writer, &Msg::Shutdown, &[]).await;
        }
        self.kill_and_wait(Duration::from_secs(5)).await;
    }

    /// Kill every worker now and wait until each has exited.
    pub async fn kill(mut self) {
        self.kill_and_wait(Duration::ZERO).await;
    }

    async fn kill_and_wait(&mut self, grace: Duration) {
        for w in &mut self.workers {
            if tokio::time::timeout(grace, w.child.wait()).await.is_err() {
                w.child.kill();
                let _ = tokio::time::timeout(Duration::from_secs(10), w.child.wait()).await;
            }
        }
        self.workers.clear();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for w in &mut self.workers {
            w.child.kill();
        }
    }
}

/// The error for a worker whose connection broke: how it exited, and its log's last lines.
async fn died(w: &mut Worker, io: String) -> PoolError {
    let how = match tokio::time::timeout(Duration::from_secs(5), w.child.wait()).await {
        Ok(how) => how,
        Err(_) => {
            w.child.kill();
            format!("connection lost: {io}")
        }
    };
    PoolError::Died { worker: w.name.clone(), how, tail: log_tail(&w.log) }
}
