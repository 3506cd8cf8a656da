//! The subcommands of `parva`: argument parsing and output; the work happens in the libraries.

/// Print a line on stdout, returning the write's error as [`StdoutError`] instead of panicking as
/// `println!` does (e.g. on a closed pipe: `parva catalogue | head -1`); `main` exits quietly
/// with 0 when stdout is a closed pipe, as ripgrep does. Every command prints through this (or
/// [`out!`]) and propagates the error with `?`.
///
/// Why not restore the default SIGPIPE action instead (the other usual fix)? The process would
/// be killed by the signal, exit status 141, which fails a `set -o pipefail` script; and `serve`,
/// `deploy`, `verify` and `profile` write to sockets and worker pipes too, where a peer that went
/// away must be an error the code handles, never a signal that kills the router.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::commands::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// [`outln!`] without the newline.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::commands::write_stdout(format_args!($($arg)*))
    };
}

pub mod catalogue;
pub mod deploy;
pub mod doctor;
pub mod export;
pub mod flags;
pub mod plan;
pub mod profile;
pub mod replan;
pub mod route;
pub mod segment;
pub mod simulate;
pub mod serve;
pub mod validate;
pub mod verify;
pub mod worker;

use std::process::ExitCode;

/// `--catalogue FILE` (repeatable) and `PARVA_CATALOGUE`: GPU types from catalogue files, known
/// to the command exactly like the built-in ones. Every command that takes a GPU type flattens it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CatalogueFiles {
    /// A catalogue file of GPU types (format: README, "Catalogue files"; e.g. written by `parva
    /// catalogue --from-gpu`), known beside the built-in types; repeatable. Also PARVA_CATALOGUE: files or
    /// directories of *.toml files, separated by `:`.
    #[arg(long = "catalogue", value_name = "FILE")]
    pub catalogue: Vec<std::path::PathBuf>,
}

impl CatalogueFiles {
    /// Read `PARVA_CATALOGUE`, then every `--catalogue` file, and register their types for this
    /// process. Returns the types read (in that order).
    pub fn load(&self) -> anyhow::Result<Vec<&'static parva_core::mig::GpuType>> {
        use anyhow::Context as _;
        let mut paths: Vec<std::path::PathBuf> = std::env::var_os("PARVA_CATALOGUE")
            .map(|v| std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()).collect())
            .unwrap_or_default();
        paths.extend(self.catalogue.iter().cloned());
        let mut all = Vec::new();
        for p in paths {
            let types = if p.is_dir() { parva_core::catalogue::load_dir(&p)? } else { parva_core::catalogue::load_file(&p)? };
            parva_core::mig::register(&types).with_context(|| format!("reading catalogue {}", p.display()))?;
            all.extend(types);
        }
        Ok(all)
    }
}

/// For each GPU of the node (or only `gpu`) that is not a type parva knows (neither built in nor
/// from a catalogue file), read its MIG geometry through `mig` (NVML or the fake) and register it
/// for this run. Returns what to tell the user, one line per GPU read. A GPU whose PCI id and
/// name point at two different known types is left alone (that stays an error where it is used).
pub fn learn_unknown_gpus(mig: &mut dyn parva_gpu::mig::MigControl, gpu: Option<u32>) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    for info in mig.gpus()? {
        if gpu.is_some_and(|g| g != info.index) {
            continue;
        }
        if !matches!(info.identify(), Err(parva_core::mig::UnknownGpu::Unknown { .. })) {
            continue;
        }
        let ty = match parva_gpu::nvml::read_gpu_type(mig, info.index, None) {
            Ok(ty) => ty,
            Err(e) => {
                notes.push(format!("GPU {} ({}) is not a GPU type parva knows, and reading its MIG geometry failed: {e}", info.index, info.product()));
                continue;
            }
        };
        if let Err(e) = parva_core::mig::register(&[ty]) {
            notes.push(format!("GPU {} ({}): its MIG geometry read from NVML is not used: {e}", info.index, info.product()));
            continue;
        }
        notes.push(format!(
            "GPU {} ({}) is not a GPU type parva knows: its MIG geometry was read from NVML for this run as type `{}` ({} profiles); keep it with `parva catalogue --from-gpu --gpu-index {} --out FILE` and pass --catalogue FILE",
            info.index,
            info.product(),
            ty.id,
            ty.profiles.len(),
            info.index
        ));
    }
    Ok(notes)
}

/// Exit code of a job that ran but whose result is incomplete.
pub const EXIT_INCOMPLETE: u8 = 3;

/// Print `value` as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// Writing to stdout failed (its cause is the `source()`); a closed pipe is not an error for
/// `parva` (see [`StdoutError::is_closed_pipe`]).
#[derive(Debug)]
pub struct StdoutError(pub std::io::Error);

impl StdoutError {
    /// Whoever read stdout went away (`| head`): `main` exits quietly with status 0.
    pub fn is_closed_pipe(&self) -> bool {
        self.0.kind() == std::io::ErrorKind::BrokenPipe
    }
}

impl std::fmt::Display for StdoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cannot write to stdout")
    }
}

impl std::error::Error for StdoutError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Write `args` to stdout and flush it, so that a failed write is seen here and not lost in a
/// later flush (see [`outln!`]).
pub fn write_stdout(args: std::fmt::Arguments<'_>) -> Result<(), StdoutError> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_fmt(args).and_then(|()| out.flush()).map_err(StdoutError)
}

pub fn exit(ok: bool) -> ExitCode {
    if ok { ExitCode::SUCCESS } else { ExitCode::from(EXIT_INCOMPLETE) }
}

/// `--distribution` of `simulate` and `verify`: the arrival process at a fixed rate.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DistributionArg {
    /// Exponential gaps (a Poisson process), as independent users produce.
    Poisson,
    /// Even gaps of 1/rate, from a random phase per service.
    Constant,
}

impl From<DistributionArg> for parva_core::sim::Distribution {
    fn from(d: DistributionArg) -> Self {
        match d {
            DistributionArg::Poisson => parva_core::sim::Distribution::Poisson,
            DistributionArg::Constant => parva_core::sim::Distribution::Constant,
        }
    }
}

/// `--backend` of `serve`, `deploy` and `profile`: TorchScript workers, or workers that replay
/// profiled latencies (tests and benchmarks; not a measurement).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    Torch,
    Emulated,
}

impl From<BackendArg> for parva_runner::BackendKind {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Torch => parva_runner::BackendKind::Torch,
            BackendArg::Emulated => parva_runner::BackendKind::Emulated,
        }
    }
}

/// `--device` of `serve`, `deploy` and `profile`: where the workers run their model.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
}

impl From<DeviceArg> for parva_runner::Device {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Cpu => parva_runner::Device::Cpu,
            DeviceArg::Cuda => parva_runner::Device::Cuda,
        }
    }
}

/// The fake node a command runs on instead of NVML, when `--fake-gpus` or `PARVA_FAKE_GPUS` names
/// one (`TYPE:COUNT`; machines without a GPU, tests): `None` means the real GPUs. Its state is kept
/// in `state` when given (so that separate commands see one node), and the fault that
/// `PARVA_FAKE_FAIL=PATTERN#N` names is injected, into the MPS fake for `mps_*` patterns and into
/// the GPUs otherwise: one selection for every command, so each honours the same variables.
pub fn fake_node(flag: Option<&str>, state: Option<&std::path::Path>) -> anyhow::Result<Option<FakeNode>> {
    let spec = flag.map(str::to_string).or_else(|| std::env::var("PARVA_FAKE_GPUS").ok().filter(|s| !s.is_empty()));
    let Some(spec) = spec else { return Ok(None) };
    let mut gpus = match state {
        Some(path) => parva_gpu::fake::FakeGpus::with_state_file(&spec, path)?,
        None => parva_gpu::fake::FakeGpus::from_spec(&spec)?,
    };
    let mut mps = parva_gpu::mps::FakeMps::default();
    if let Some(f) = std::env::var("PARVA_FAKE_FAIL").ok().filter(|f| !f.is_empty() && f != "serve_start") {
        let fault: parva_gpu::fault::Fault = f.parse()?;
        if fault.pattern.starts_with("mps_") {
            mps.set_fault(Some(fault));
        } else {
            gpus.set_fault(Some(fault));
        }
    }
    Ok(Some(FakeNode { spec, gpus, mps }))
}

/// A fake node: its spec, GPUs and MPS control (see [`fake_node`]).
pub struct FakeNode {
    pub spec: String,
    pub gpus: parva_gpu::fake::FakeGpus,
    pub mps: parva_gpu::mps::FakeMps,
}

/// A map's best-effort rows are planned and simulated (`plan --jobs`, `simulate --rates --jobs`);
/// `serve` and `deploy` do not start them from the map (`deploy --follow --jobs` places its jobs
/// itself): say so rather than leave them out silently.
pub fn note_best_effort_rows(map: &parva_core::DeploymentMap, placed_by_follow: bool) {
    if !map.jobs.is_empty() {
        let names: std::collections::BTreeSet<&str> = map.jobs.iter().map(|j| j.job.as_str()).collect();
        let then = if placed_by_follow {
            "--follow --jobs places the jobs of its list itself, on what the serving map leaves free"
        } else {
            "the serving segments are deployed and served, and those GPCs stay free (`deploy --follow --jobs` runs jobs)"
        };
        eprintln!(
            "note: the map's {} best-effort instances ({}) are not started from the map: {then}",
            map.jobs.len(),
            names.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
}

/// Which wire's row of `data_path.csv` plan and simulate charge (`--data-path-wire`).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DataPathWire {
    Binary,
    Json,
    Shm,
}

impl DataPathWire {
    pub fn name(self) -> &'static str {
        match self {
            DataPathWire::Binary => "binary",
            DataPathWire::Json => "json",
            DataPathWire::Shm => "shm",
        }
    }
}

/// Each service's data-path cost in seconds, from the `data_path.csv` beside the profile tables in
/// `prof_data` and the model metadata in `models` (bytes of one row of inputs and outputs): empty
/// without the table; with the table but no `--models`, empty and said on stderr.
pub fn data_path_costs<'a>(
    prof_data: &std::path::Path,
    models: Option<&std::path::Path>,
    wire: DataPathWire,
    services: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
    let Some(table) = parva_core::data_path::DataPath::read_dir(prof_data)? else { return Ok(Default::default()) };
    let Some(models) = models else {
        eprintln!(
            "note: {} holds {}; give --models DIR (the model metadata) to count each request's data path",
            prof_data.display(),
            parva_core::data_path::FILE
        );
        return Ok(Default::default());
    };
    // Bytes of one request (one row of every input and output), per model, from its metadata.
    let mut bytes: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    let mut per_service = Vec::new();
    for (service, model) in services {
        let b = match bytes.get(model) {
            Some(b) => *b,
            None => {
                let meta = parva_proto::meta::ModelMeta::read(&parva_proto::meta::meta_path(models, model))?;
                let row = meta.input_row_bytes().zip(meta.output_row_bytes()).map(|(i, o)| i + o).ok_or_else(|| {
                    anyhow::anyhow!("model {model}: a dimension after the batch one is dynamic, so its bytes per request are unknown")
                })?;
                bytes.insert(model, row);
                row
            }
        };
        per_service.push((service, b));
    }
    Ok(table.per_service(wire.name(), per_service))
}

/// Which differences between a map and a `--services` list a command refuses (see
/// [`parva_core::slo::MapDifferences`]).
#[derive(Debug, Clone, Copy)]
pub struct Contradictions {
    pub missing: bool,
    pub extra: bool,
    pub models: bool,
    pub slos: bool,
}

/// Refuse a `--services` list (`file`) that contradicts `map` in the ways `refuse` names, with
/// every difference listed, unless `replace` (`--replace-services`) says the list wins; then the
/// differences are printed as notes.
pub fn check_services_against_map(
    map: &parva_core::DeploymentMap,
    node: Option<u32>,
    services: &[parva_core::slo::Service],
    file: &std::path::Path,
    refuse: Contradictions,
    replace: bool,
) -> anyhow::Result<()> {
    let d = parva_core::slo::MapDifferences::between(map, node, services);
    let found = d.describe(refuse.missing, refuse.extra, refuse.models, refuse.slos);
    if found.is_empty() {
        return Ok(());
    }
    if replace {
        for f in &found {
            eprintln!("note: --replace-services: {f} (the list's is used)");
        }
        return Ok(());
    }
    anyhow::bail!(
        "{} contradicts the map:\n  {}\n(nothing was changed; pass --replace-services to use the list as given)",
        file.display(),
        found.join("\n  ")
    )
}

/// `parva <version> (commit <hash>)`: what a report says measured it.
pub fn tool_version() -> String {
    format!("parva {} (commit {})", env!("CARGO_PKG_VERSION"), env!("PARVA_COMMIT"))
}
