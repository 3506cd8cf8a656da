//! The worker side: one OS process per worker, serving batches over the router's socket.
//!
//! [`run_worker`] is the loop every backend shares (the torch worker binary and the emulated one):
//! connect, `Hello`, load + warm up, `Ready`, map the slab the router sends (`Slab`), then execute
//! `Batch` frames one at a time. Inputs that came in the slab are read in place (each input tensor
//! is a view of it), and outputs go back through it when they fit. An [`Executor`] runs one
//! batch; [`EmulatedExecutor`] sleeps for the profiled latency and returns zero outputs of the
//! model's shape. [`bench_round`] answers the profiler's `Bench` frames.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::meta::ModelMeta;
use crate::frame::{self as proto, Msg, ProtoError};
use crate::shm::Mapping;
use crate::tensor::Tensor;

/// Runs batches of one model.
pub trait Executor {
    /// Execute one batch: the inputs in the metadata's order, all with the same number of rows.
    fn execute(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String>;

    /// Execute one batch the profiler keeps reusing, results discarded. The default copies the
    /// inputs; an executor that can read them in place should, so that the copy is not timed.
    fn execute_ref(&mut self, inputs: &[Tensor]) -> Result<(), String> {
        self.execute(inputs.to_vec()).map(|_| ())
    }

    /// For an executor that models its time (the emulated backend): the seconds a batch of
    /// `rows` rows takes by its model. The profiler's rounds report these instead of the wall
    /// clock, so a replayed table comes back exactly, whatever the machine's load (issue 34: a
    /// profile test's point counts depended on sleeps not overshooting by 6 ms). `None`: time is
    /// measured.
    fn modelled_seconds(&self, _rows: usize) -> Option<f64> {
        None
    }
}

/// What a worker says about itself in `Hello`.
#[derive(Debug, Clone)]
pub struct WorkerIdentity {
    pub backend: String,
    pub device: String,
    /// Inference library and version (`libtorch 2.11 (tch 0.24)`), recorded by the profiler.
    pub runtime: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The cause is the `source()`, printed once after it by `{:#}`.
    #[error("connect to {path}")]
    Connect { path: String, source: std::io::Error },
    /// The protocol error is in the message and not a `source()` (its own cause would print twice:
    /// [`ProtoError`] shows its cause inline, as the router's logs need).
    #[error("router connection: {0}")]
    Proto(ProtoError),
    #[error("loading the model: {0}")]
    Load(String),
}

impl From<ProtoError> for WorkerError {
    fn from(e: ProtoError) -> Self {
        WorkerError::Proto(e)
    }
}

/// Connect to `socket`, load the executor with `load` (given the connection is up, so a slow load
/// is visible to the router as a connected, not-ready worker), warm it up with `warmup_rows`
/// rows of zeros of `meta`'s inputs, report ready and serve until told to stop.
pub fn run_worker<E: Executor>(
    socket: &Path,
    identity: &WorkerIdentity,
    meta: &ModelMeta,
    warmup_rows: usize,
    load: impl FnOnce() -> Result<E, String>,
) -> Result<(), WorkerError> {
    let stream = UnixStream::connect(socket)
        .map_err(|e| WorkerError::Connect { path: socket.display().to_string(), source: e })?;
    serve_stream(stream, identity, meta, warmup_rows, load)
}

/// [`run_worker`] on an existing connection.
pub fn serve_stream<E: Executor>(
    stream: UnixStream,
    identity: &WorkerIdentity,
    meta: &ModelMeta,
    warmup_rows: usize,
    load: impl FnOnce() -> Result<E, String>,
) -> Result<(), WorkerError> {
    let mut reader = std::io::BufReader::with_capacity(1 << 16, stream.try_clone().map_err(ProtoError::Io)?);
    let mut writer = stream;
    let hello = Msg::Hello {
        pid: std::process::id(),
        backend: identity.backend.clone(),
        device: identity.device.clone(),
        runtime: identity.runtime.clone(),
    };
    proto::write_frame(&mut writer, &hello, &[])?;
    let started = Instant::now();
    let loaded = load().and_then(|mut exec| {
        for _ in 0..2 {
            exec.execute(meta.zero_inputs(warmup_rows.max(1))).map_err(|e| format!("warm-up batch of {warmup_rows}: {e}"))?;
        }
        Ok(exec)
    });
    let mut exec = match loaded {
        Ok(e) => e,
        Err(message) => {
            proto::write_frame(&mut writer, &Msg::Fatal { message: message.clone() }, &[])?;
            return Err(WorkerError::Load(message));
        }
    };
    proto::write_frame(&mut writer, &Msg::Ready { load_ms: started.elapsed().as_secs_f64() * 1e3 }, &[])?;
    tracing::info!(model = %meta.name, backend = %identity.backend, "worker ready");
    // Frames are read on their own thread, so the next batch arrives while this one runs. That
    // thread also maps the slab when the router sends one: batches after it may point into it.
    let (tx, frames) = std::sync::mpsc::sync_channel::<Result<proto::Frame, ProtoError>>(1);
    let (slab_tx, slab_rx) = std::sync::mpsc::sync_channel::<Result<Arc<Mapping>, String>>(1);
    std::thread::spawn(move || {
        let mut slab: Option<Arc<Mapping>> = None;
        loop {
            let f = proto::read_frame(&mut reader, slab.as_ref());
            if let Ok(proto::Frame { msg: Msg::Slab { path, bytes }, .. }) = &f {
                let mapped = crate::shm::open_slab(Path::new(path), *bytes).map_err(|e| e.to_string());
                slab = mapped.as_ref().ok().cloned();
                if slab_tx.send(mapped).is_err() {
                    break;
                }
            }
            let end = f.is_err();
            if tx.send(f).is_err() || end {
                break;
            }
        }
    });
    let faults = InjectedFaults::from_env();
    let mut bench_inputs: Option<(usize, Vec<Tensor>)> = None;
    let mut slab: Option<Arc<Mapping>> = None;
    loop {
        let frame = match frames.recv() {
            Ok(Ok(f)) => f,
            Ok(Err(ProtoError::Closed)) | Err(_) => return Ok(()),
            Ok(Err(e)) => return Err(e.into()),
        };
        match frame.msg {
            Msg::Slab { path, .. } => {
                let mapped = slab_rx.recv().unwrap_or_else(|_| Err("the reader thread ended".into()));
                let error = mapped.as_ref().err().map(|e| format!("mapping {path}: {e}"));
                if let Some(e) = &error {
                    tracing::warn!(error = %e, "no shared buffers; batches come over the socket");
                }
                slab = mapped.ok();
                proto::write_frame(&mut writer, &Msg::SlabMapped { error }, &[])?;
            }
            Msg::Batch { id, out, .. } => {
                let t0 = Instant::now();
                match exec.execute(frame.tensors) {
                    Ok(outputs) => {
                        let exec_us = t0.elapsed().as_micros() as u64;
                        let mut tensors = proto::headers_of(&outputs);
                        let inline = match (&slab, out) {
                            (Some(map), Some(area)) if outputs.iter().map(|t| t.data.len() as u64).sum::<u64>() <= area.bytes => {
                                // The outputs fit the batch's output area: written there, only
                                // their headers go over the socket.
                                let mut at = area.at;
                                for (h, t) in tensors.iter_mut().zip(&outputs) {
                                    map.write(at, &t.data).map_err(|e| WorkerError::Proto(ProtoError::BadHeader(e.to_string())))?;
                                    h.at = Some(at);
                                    at += t.data.len() as u64;
                                }
                                Vec::new()
                            }
                            _ => outputs,
                        };
                        proto::write_frame(&mut writer, &Msg::Done { id, exec_us, tensors }, &inline)?;
                    }
                    Err(message) => proto::write_frame(&mut writer, &Msg::Failed { id, message }, &[])?,
                }
            }
            Msg::Bench { rows, seconds } => {
                let inputs = match bench_inputs.take() {
                    Some((r, inputs)) if r == rows => inputs,
                    _ => meta.synthetic_inputs(rows),
                };
                let reply = match bench_round(&mut exec, &inputs, seconds, &faults) {
                    Ok((lat_us, seconds)) => Msg::BenchDone { rows, seconds, lat_us },
                    Err(message) => Msg::Failed { id: 0, message },
                };
                bench_inputs = Some((rows, inputs));
                proto::write_frame(&mut writer, &reply, &[])?;
            }
            Msg::Shutdown => return Ok(()),
            other => tracing::warn!(?other, "worker ignored an unexpected message"),
        }
    }
}

/// Faults the profiler's tests inject into real worker processes through the environment:
/// `PARVA_INJECT_WORKER_CRASH_ROWS=N` makes the process exit abruptly (status 86) when asked to
/// bench batches of N rows; `PARVA_INJECT_WORKER_OOM_ROWS=N` makes batches of N or more rows fail
/// with an out-of-memory message, as CUDA's allocator does. Serving (`Batch`) is never affected.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct InjectedFaults {
    pub crash_rows: Option<usize>,
    pub oom_rows: Option<usize>,
}

impl InjectedFaults {
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().and_then(|v| v.trim().parse().ok());
        InjectedFaults { crash_rows: var("PARVA_INJECT_WORKER_CRASH_ROWS"), oom_rows: var("PARVA_INJECT_WORKER_OOM_ROWS") }
    }
}

/// One profiling round: run `inputs` back to back until `seconds` have passed (at least one
/// batch); return each batch's latency in microseconds and the round's wall time in seconds.
pub fn bench_round<E: Executor>(
    exec: &mut E,
    inputs: &[Tensor],
    seconds: f64,
    faults: &InjectedFaults,
) -> Result<(Vec<u64>, f64), String> {
    let rows = inputs.first().map(Tensor::rows).unwrap_or(1);
    if faults.crash_rows == Some(rows) {
        eprintln!("parva worker: injected crash at a bench batch of {rows} rows (PARVA_INJECT_WORKER_CRASH_ROWS)");
        std::process::exit(86);
    }
    if faults.oom_rows.is_some_and(|n| rows >= n) {
        return Err(format!("CUDA out of memory (injected by PARVA_INJECT_WORKER_OOM_ROWS at {rows} rows)"));
    }
    let budget = Duration::from_secs_f64(seconds.max(0.0));
    let start = Instant::now();
    let mut lat_us = Vec::new();
    let modelled = exec.modelled_seconds(rows);
    let mut modelled_total = 0.0;
    loop {
        let t0 = Instant::now();
        exec.execute_ref(inputs)?;
        let took = t0.elapsed();
        match modelled {
            Some(s) => {
                lat_us.push((s * 1e6).round() as u64);
                modelled_total += s;
            }
            None => lat_us.push(took.as_micros() as u64),
        }
        let elapsed = start.elapsed();
        if elapsed >= budget {
            let round_s = if modelled.is_some() { modelled_total } else { elapsed.as_secs_f64() };
            return Ok((lat_us, round_s));
        }
    }
}

/// Sleeps for the profiled latency of each batch and returns zeros of the outputs' shapes.
#[derive(Debug, Clone)]
pub struct EmulatedExecutor {
    meta: ModelMeta,
    /// Seconds per batch of 1, 2, ... rows (index = rows - 1).
    exec_s: Vec<f64>,
}

impl EmulatedExecutor {
    pub fn new(meta: ModelMeta, exec_s: Vec<f64>) -> Self {
        EmulatedExecutor { meta, exec_s }
    }

    /// Latency of `rows` rows; past the table, extended in proportion to the rows.
    pub fn latency(&self, rows: usize) -> f64 {
        match self.exec_s.len() {
            0 => 0.0,
            n if rows <= n => self.exec_s[rows.max(1) - 1],
            n => self.exec_s[n - 1] * rows as f64 / n as f64,
        }
    }
}

impl Executor for EmulatedExecutor {
    fn execute(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        let rows = inputs.first().map(Tensor::rows).unwrap_or(1);
        std::thread::sleep(Duration::from_secs_f64(self.latency(rows)));
        Ok(self.meta.zero_outputs(rows))
    }

    fn modelled_seconds(&self, rows: usize) -> Option<f64> {
        Some(self.latency(rows))
    }
}

/// Options of the emulated worker process (`parva worker`).
#[derive(Debug, Clone)]
pub struct EmulatedWorkerOptions {
    pub socket: std::path::PathBuf,
    pub model_meta: std::path::PathBuf,
    pub max_batch: usize,
    /// Milliseconds per batch of 1, 2, ... rows.
    pub exec_ms: Vec<f64>,
}

/// Main of the emulated worker process.
pub fn run_emulated_worker(opts: &EmulatedWorkerOptions) -> Result<(), WorkerError> {
    let meta = ModelMeta::read(&opts.model_meta).map_err(|e| {
        // The message and its cause (an I/O error is the `source()`, not in the message).
        let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
        WorkerError::Load(format!("{e}{cause}"))
    })?;
    let identity = WorkerIdentity { backend: "emulated".into(), device: "none".into(), runtime: "emulated (sleeps for profiled latencies)".into() };
    let exec_s: Vec<f64> = opts.exec_ms.iter().map(|ms| ms / 1e3).collect();
    run_worker(&opts.socket, &identity, &meta.clone(), 1, || Ok(EmulatedExecutor::new(meta, exec_s)))
}
