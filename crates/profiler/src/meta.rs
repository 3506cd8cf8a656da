//! The metadata file written beside the tables, `<out>/<model>.meta.json`: how the table was
//! measured (command, partition mode and how each size was made, settings, grid), on what
//! (host, GPU, driver, CUDA, inference runtime) and how far it got. Written when the sweep starts
//! (`status: running`) and rewritten at its end (`complete`, `incomplete` or `interrupted`).

use std::path::{Path, PathBuf};

use parva_gpu::nvml::GpuDescription;
use serde::Serialize;

use crate::error::ProfileError;
use crate::grid::Grid;
use crate::prune::PruneRules;
use crate::stats::MeasureSettings;
use crate::sweep::Summary;

/// The host the profile ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub hostname: String,
    /// CPU model (`/proc/cpuinfo`).
    pub cpu: String,
    pub cores: usize,
    pub os: String,
}

impl Host {
    pub fn detect() -> Host {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        Host {
            hostname: read("/proc/sys/kernel/hostname").trim().to_string(),
            cpu,
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            os: read("/proc/sys/kernel/osrelease").trim().to_string(),
        }
    }
}

/// Where a profiling run stands, as the metadata file says it (`status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Complete,
    /// Finished with failed points (a re-run retries them).
    Incomplete,
    Interrupted,
    /// Stopped by an error, named.
    Failed(String),
}

impl RunStatus {
    /// The status a finished sweep ends in.
    pub fn of_sweep(interrupted: bool, failed_points: usize) -> RunStatus {
        match (interrupted, failed_points) {
            (true, _) => RunStatus::Interrupted,
            (false, 0) => RunStatus::Complete,
            _ => RunStatus::Incomplete,
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunStatus::Running => f.write_str("running"),
            RunStatus::Complete => f.write_str("complete"),
            RunStatus::Incomplete => f.write_str("incomplete"),
            RunStatus::Interrupted => f.write_str("interrupted"),
            RunStatus::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

impl Serialize for RunStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn backend_name<S: serde::Serializer>(b: &parva_runner::BackendKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(b.name())
}

/// The metadata of one model's profile.
#[derive(Debug, Clone, Serialize)]
pub struct Metadata {
    pub model: String,
    /// The model file profiled (`models/resnet50.pt`), or the table emulated.
    pub model_file: PathBuf,
    /// `torch`, or `emulated` (a replay of an existing table: not a measurement).
    #[serde(serialize_with = "backend_name")]
    pub backend: parva_runner::BackendKind,
    pub parva_version: String,
    /// The command line, as run.
    pub command: Vec<String>,
    /// `running`, `complete`, `incomplete` (failed points), `interrupted` or `failed: <error>`.
    pub status: RunStatus,
    pub started_utc: String,
    pub finished_utc: Option<String>,
    /// How instance sizes were made: `mig`, `mps` or `none`.
    pub partition: crate::partition::Mode,
    /// Catalogue GPU type, when on a known GPU.
    pub gpu_type: Option<String>,
    pub gpu: Option<GpuDescription>,
    pub host: Host,
    /// What the `mem_mib` column holds.
    pub memory_column: String,
    pub grid: Grid,
    pub measure: MeasureSettings,
    pub prune: PruneRules,
    /// How each instance size was made, what the workers reported, counts, wall time.
    pub summary: Option<Summary>,
    /// The best-effort job run beside every point (`--background`), when one was: the table's
    /// latencies are then under its interference.
    pub background: Option<String>,
}

/// The tables of `dir` measured beside a background job (`parva profile --background`): (model,
/// what ran beside it), from their `<model>.meta.json`. Tables without metadata, or whose metadata
/// cannot be read, are left out.
pub fn measured_beside_jobs(dir: &Path) -> Vec<(String, String)> {
    metadata_field(dir, "background")
}

/// The GPU type each table of `dir` was measured on, from its `<model>.meta.json` (`gpu_type`):
/// (model, type). Tables without metadata (hand-made or illustrative ones) are left out.
pub fn measured_gpu_types(dir: &Path) -> Vec<(String, String)> {
    metadata_field(dir, "gpu_type")
}

/// (model, the string `field` of its `<model>.meta.json`) for each table of `dir` whose metadata
/// reads and has that field, sorted.
fn metadata_field(dir: &Path, field: &str) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<(String, String)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().strip_suffix(".meta.json")?.to_string();
            let text = std::fs::read_to_string(e.path()).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            Some((name, v.get(field)?.as_str()?.to_string()))
        })
        .collect();
    out.sort();
    out
}

/// Whether tables measured on `measured` describe GPUs of type `planned`: the same type, with or
/// without MIG (`h100-80gb` tables measured with MIG off serve `h100-80gb-nomig` and back).
pub fn same_gpu(measured: &str, planned: &str) -> bool {
    let base = |t: &str| t.strip_suffix("-nomig").unwrap_or(t).to_string();
    base(measured) == base(planned)
}

impl Metadata {
    /// `<dir>/<model>.meta.json`.
    pub fn path(dir: &Path, model: &str) -> PathBuf {
        dir.join(format!("{model}.meta.json"))
    }

    /// Write it atomically.
    pub fn write(&self, path: &Path) -> Result<(), ProfileError> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| ProfileError::Config(format!("{}: encode: {e}", path.display())))?;
        bytes.push(b'\n');
        parva_core::files::write_atomic(path, &bytes)?;
        Ok(())
    }
}

pub use parva_core::utc::utc_now;


#[cfg(test)]
mod status_tests {
    use super::*;

    #[test]
    fn a_run_status_is_written_as_the_metadata_documents() {
        assert_eq!(serde_json::to_value(RunStatus::Running).unwrap(), "running");
        assert_eq!(serde_json::to_value(RunStatus::Failed("no GPU 3".into())).unwrap(), "failed: no GPU 3");
        assert_eq!(RunStatus::of_sweep(false, 0), RunStatus::Complete);
        assert_eq!(RunStatus::of_sweep(false, 2), RunStatus::Incomplete);
        assert_eq!(RunStatus::of_sweep(true, 0), RunStatus::Interrupted);
        assert_eq!(RunStatus::of_sweep(true, 5), RunStatus::Interrupted, "an interrupted run says so first");
    }
}

#[cfg(test)]
mod background_tests {
    #[test]
    fn tables_measured_beside_a_job_are_found_by_their_metadata() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.meta.json"), r#"{"model":"a","background":"a train job of bert"}"#).unwrap();
        std::fs::write(d.path().join("b.meta.json"), r#"{"model":"b","background":null}"#).unwrap();
        std::fs::write(d.path().join("c.meta.json"), "not json").unwrap();
        std::fs::write(d.path().join("a.csv"), "").unwrap();
        assert_eq!(super::measured_beside_jobs(d.path()), vec![("a".to_string(), "a train job of bert".to_string())]);
        assert!(super::measured_beside_jobs(&d.path().join("missing")).is_empty());
    }
}

#[cfg(test)]
mod gpu_type_tests {
    use super::*;

    /// Issue 38: planning a100-80gb on tables measured on an H100 said nothing.
    #[test]
    fn tables_say_which_gpu_measured_them() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("bert.meta.json"), r#"{"model":"bert","gpu_type":"h100-80gb"}"#).unwrap();
        std::fs::write(d.path().join("vgg16.meta.json"), r#"{"model":"vgg16"}"#).unwrap();
        std::fs::write(d.path().join("bad.meta.json"), "not json").unwrap();
        assert_eq!(measured_gpu_types(d.path()), vec![("bert".to_string(), "h100-80gb".to_string())]);
        assert!(measured_gpu_types(&d.path().join("missing")).is_empty());
        assert!(same_gpu("h100-80gb", "h100-80gb-nomig") && same_gpu("h100-80gb-nomig", "h100-80gb") && same_gpu("a100-80gb", "a100-80gb"));
        assert!(!same_gpu("h100-80gb", "a100-80gb") && !same_gpu("h100-80gb", "h100-94gb"));
    }
}
