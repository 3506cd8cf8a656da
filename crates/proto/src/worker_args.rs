//! The command line of a worker process: one type that both spawners build (the router in
//! [`crate::serve`], the profiler's sweep) and both worker binaries parse (`parva worker`, the
//! emulated backend; `parva-worker`, TorchScript), so the two sides cannot drift apart.
//!
//! A spawner fills [`WorkerArgs`] and one of [`TorchArgs`] / [`EmulatedArgs`] and calls
//! [`WorkerArgs::to_args`]; a worker binary flattens the same structs into its clap parser.

use std::path::PathBuf;

use crate::Device;

/// What every worker takes.
#[derive(Debug, Clone, PartialEq, clap::Args)]
#[group(skip)]
pub struct WorkerArgs {
    /// The router's socket for this worker (every mode but a worker binary's own `--bench` and
    /// `--probe`, which say so when it is missing).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Model metadata (`models/<name>.json`).
    #[arg(long)]
    pub model_meta: Option<PathBuf>,
    /// Largest batch the worker accepts; it warms up with a batch of this many rows.
    #[arg(long, default_value_t = 1)]
    pub max_batch: usize,
}

/// What a TorchScript worker takes besides [`WorkerArgs`].
#[derive(Debug, Clone, PartialEq, clap::Args)]
#[group(skip)]
pub struct TorchArgs {
    /// TorchScript file (`models/<name>.pt`).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Where the model runs.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Intra-op threads (CPU).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// What an emulated worker takes besides [`WorkerArgs`].
#[derive(Debug, Clone, PartialEq, clap::Args)]
#[group(skip)]
pub struct EmulatedArgs {
    /// Milliseconds per batch of 1, 2, ... rows.
    #[arg(long, value_delimiter = ',', required = true)]
    pub exec_ms: Vec<f64>,
}

/// `--device` of the TorchScript worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
}

impl From<Device> for DeviceArg {
    fn from(d: Device) -> Self {
        match d {
            Device::Cpu => DeviceArg::Cpu,
            Device::Cuda => DeviceArg::Cuda,
        }
    }
}

/// The backend-specific part of a worker's command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    Torch(TorchArgs),
    Emulated(EmulatedArgs),
}

/// A required part of a worker's command line is missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is required")]
pub struct Missing(pub &'static str);

impl WorkerArgs {
    /// The socket and metadata a serving worker needs.
    pub fn serving(&self) -> Result<(&PathBuf, &PathBuf), Missing> {
        Ok((self.socket.as_ref().ok_or(Missing("--socket"))?, self.model_meta.as_ref().ok_or(Missing("--model-meta"))?))
    }

    pub fn new(socket: PathBuf, model_meta: PathBuf, max_batch: usize) -> Self {
        WorkerArgs { socket: Some(socket), model_meta: Some(model_meta), max_batch }
    }

    /// The arguments that a worker binary parses back into `self` and `backend`.
    pub fn to_args(&self, backend: &Backend) -> Vec<String> {
        let path = |p: &PathBuf| p.display().to_string();
        let mut a = Vec::new();
        if let Some(s) = &self.socket {
            a.extend(["--socket".to_string(), path(s)]);
        }
        if let Some(m) = &self.model_meta {
            a.extend(["--model-meta".to_string(), path(m)]);
        }
        a.extend(["--max-batch".to_string(), self.max_batch.to_string()]);
        match backend {
            Backend::Torch(t) => {
                if let Some(m) = &t.model {
                    a.extend(["--model".to_string(), path(m)]);
                }
                let device = match t.device {
                    DeviceArg::Cpu => "cpu",
                    DeviceArg::Cuda => "cuda",
                };
                a.extend(["--device".to_string(), device.to_string()]);
                if let Some(n) = t.threads {
                    a.extend(["--threads".to_string(), n.to_string()]);
                }
            }
            Backend::Emulated(e) => {
                // `{:?}` of an f64 is its shortest exact decimal, so the parse gives the same value.
                let ms: Vec<String> = e.exec_ms.iter().map(|v| format!("{v:?}")).collect();
                a.extend(["--exec-ms".to_string(), ms.join(",")]);
            }
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The two worker binaries' parsers, as they flatten these types (plus the torch worker's
    /// own modes).
    #[derive(Debug, Parser)]
    struct TorchCli {
        #[command(flatten)]
        worker: WorkerArgs,
        #[command(flatten)]
        torch: TorchArgs,
        #[arg(long)]
        bench: Option<usize>,
        #[arg(long, exclusive = true)]
        probe: bool,
    }

    #[derive(Debug, Parser)]
    struct EmulatedCli {
        #[command(flatten)]
        worker: WorkerArgs,
        #[command(flatten)]
        emulated: EmulatedArgs,
    }

    fn parse<P: Parser>(args: Vec<String>) -> P {
        P::try_parse_from(std::iter::once("worker".to_string()).chain(args)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn what_a_spawner_builds_each_worker_binary_parses_back() {
        let w = WorkerArgs::new("/run/w0.sock".into(), "/models/a b.json".into(), 16);
        for torch in [
            TorchArgs { model: Some("/models/a b.pt".into()), device: DeviceArg::Cuda, threads: None },
            TorchArgs { model: Some("m.pt".into()), device: DeviceArg::Cpu, threads: Some(3) },
        ] {
            let cli: TorchCli = parse(w.to_args(&Backend::Torch(torch.clone())));
            assert_eq!((cli.worker, cli.torch), (w.clone(), torch));
        }
        let e = EmulatedArgs { exec_ms: vec![0.1, 2.0 / 3.0, 1e-7, 12.5] };
        let cli: EmulatedCli = parse(w.to_args(&Backend::Emulated(e.clone())));
        assert_eq!((cli.worker, cli.emulated), (w, e));
    }

    #[test]
    fn a_worker_without_its_socket_model_or_latencies_is_refused() {
        let w = WorkerArgs { socket: None, ..WorkerArgs::new("s".into(), "m.json".into(), 1) };
        let args = w.to_args(&Backend::Torch(TorchArgs { model: Some("m.pt".into()), device: DeviceArg::Cpu, threads: None }));
        let cli: TorchCli = parse(args);
        assert_eq!(cli.worker.serving(), Err(Missing("--socket")));
        let cli = TorchCli::try_parse_from(["w", "--socket", "s"]).unwrap();
        assert_eq!(cli.worker.serving(), Err(Missing("--model-meta")));
        // The torch worker's own modes need no socket.
        let cli = TorchCli::try_parse_from(["w", "--bench", "3", "--model-meta", "m.json", "--model", "m.pt"]).unwrap();
        assert_eq!((cli.bench, cli.worker.socket), (Some(3), None));
        assert!(TorchCli::try_parse_from(["w", "--probe"]).unwrap().probe);
        let e = EmulatedCli::try_parse_from(["w", "--socket", "s", "--model-meta", "m.json"]).unwrap_err();
        assert!(e.to_string().contains("--exec-ms"), "{e}");
    }
}
