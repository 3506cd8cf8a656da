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

/// The metadata of one model's profile.
#[derive(Debug, Clone, Serialize)]
pub struct Metadata {
    pub model: String,
    /// The model file profiled (`models/resnet50.pt`), or the table emulated.
    pub model_file: PathBuf,
    /// `torch`, or `emulated` (a replay of an existing table: not a measurement).
    pub backend: String,
    pub parva_version: String,
    /// The command line, as run.
    pub command: Vec<String>,
    /// `running`, `complete`, `incomplete` (failed points) or `interrupted`.
    pub status: String,
    pub started_utc: String,
    pub finished_utc: Option<String>,
    pub partition: String,
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
        parva_core::deploy::write_atomic(path, &bytes)?;
        Ok(())
    }
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    utc(secs)
}

/// Seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian calendar).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
