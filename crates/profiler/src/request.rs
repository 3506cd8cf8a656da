//! A profiling run as a request: what `parva profile` fills from its flags and the sweep needs,
//! with the decisions that do not depend on a command line (the pattern ripgrep uses between its
//! flags and its searcher): checking the settings, finding the model's files, the default output
//! directory, the grid for a GPU type, the workers, how memory is read, and the per-series summary
//! of a finished table. The command keeps the flags, opening the GPU, progress and printing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use parva_core::mig::GpuType;
use parva_runner::{BackendKind, Device, WorkerCommand};
use serde::Serialize;

use crate::error::ProfileError;
use crate::grid::{Grid, default_batches};
use crate::partition::Mode;
use crate::prune::PruneRules;
use crate::stats::MeasureSettings;
use crate::table::{PointStatus, Table};
use crate::workers::{EmulatedWorkers, TorchWorkers, WorkerFactory};

/// Everything a profiling run is asked to do. Empty `sizes` / `batches` mean the defaults (every
/// MIG size of the GPU type, or `7` for `Mode::None`; batches 1, 2, 4, ..., 128).
#[derive(Debug, Clone)]
pub struct Request {
    /// The TorchScript file (`models/resnet50.pt`) or its metadata (`.json`); both sit side by side.
    pub model: PathBuf,
    pub mode: Mode,
    /// Where workers run with `Mode::None` (`None`: CUDA when a GPU is seen, else the CPU).
    pub device: Option<Device>,
    pub sizes: Vec<u8>,
    pub batches: Vec<u32>,
    pub procs: Vec<u32>,
    /// Output directory (`None`: [`default_out`]).
    pub out: Option<PathBuf>,
    pub measure: MeasureSettings,
    pub rules: PruneRules,
    pub backend: BackendKind,
    /// Tables the emulated backend replays.
    pub emulate_from: Option<PathBuf>,
    /// Intra-op threads per worker on a CPU (`None`: the cores shared among the workers).
    pub threads: Option<usize>,
    pub ready_timeout: Duration,
}

/// A setting out of its range: the field (named as the request's field; the command maps it to
/// its flag), the value and the rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field} {value}: {rule}")]
pub struct Invalid {
    pub field: &'static str,
    pub value: String,
    pub rule: String,
}

fn invalid(field: &'static str, value: impl ToString, rule: impl Into<String>) -> Invalid {
    Invalid { field, value: value.to_string(), rule: rule.into() }
}

impl Request {
    /// Every setting in its range and the combination allowed, before any GPU is looked at.
    pub fn check(&self) -> Result<(), Invalid> {
        let m = &self.measure;
        for (field, v) in [("min_seconds", m.min_seconds), ("max_seconds", m.max_seconds), ("target_ci", m.target_ci)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(invalid(field, v, "must be a positive number"));
            }
        }
        if !(m.warmup_seconds.is_finite() && m.warmup_seconds >= 0.0) {
            return Err(invalid("warmup_seconds", m.warmup_seconds, "must be 0 or more"));
        }
        if m.max_seconds < m.min_seconds {
            return Err(invalid("max_seconds", m.max_seconds, format!("is below min_seconds {}", m.min_seconds)));
        }
        if let Some(s) = self.rules.max_latency_s.filter(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(invalid("max_latency_ms", s * 1e3, "must be a positive number"));
        }
        if self.device == Some(Device::Cpu) && self.mode != Mode::None {
            return Err(invalid("device", "cpu", "needs partition none (mig and mps partition a GPU)"));
        }
        // The grid's own limits (sizes are checked against the GPU type later).
        let sizes = if self.sizes.is_empty() { vec![1] } else { self.sizes.clone() };
        Grid::new(sizes, self.procs.clone(), self.batches_or_default()).map_err(|e| invalid("grid", "", e.to_string()))?;
        match (self.backend, &self.emulate_from, &self.out) {
            (BackendKind::Emulated, None, _) => Err(invalid("emulate_from", "(none)", "backend emulated needs the tables it replays")),
            (BackendKind::Emulated, _, None) => Err(invalid("out", "(none)", "backend emulated needs an output directory: an emulated table is not a measurement")),
            (BackendKind::Torch, Some(d), _) => Err(invalid("emulate_from", d.display(), "is for backend emulated")),
            _ => Ok(()),
        }
    }

    fn batches_or_default(&self) -> Vec<u32> {
        if self.batches.is_empty() { default_batches() } else { self.batches.clone() }
    }

    /// The grid on `gpu_type`: the default sizes are its MIG sizes (7 without partitioning or a
    /// known type); a size it has no profile for is refused under mig and mps.
    pub fn grid(&self, gpu_type: Option<&GpuType>) -> Result<Grid, Invalid> {
        let sizes = match (self.sizes.is_empty(), self.mode, gpu_type) {
            (false, _, _) => self.sizes.clone(),
            (true, Mode::None, _) | (true, _, None) => vec![7],
            // gpu-let's shares: 20, 40, 50, 60, 80 and 100 %.
            (true, _, Some(t)) if t.is_mps() => vec![2, 4, 5, 6, 8, 10],
            (true, _, Some(t)) => t.sizes(),
        };
        let grid = Grid::new(sizes, self.procs.clone(), self.batches_or_default()).map_err(|e| invalid("grid", "", e.to_string()))?;
        if let (Mode::Mig, Some(t)) = (self.mode, gpu_type) {
            if t.is_mps() {
                return Err(invalid("partition", "mig", format!("{} has no MIG (an MPS type): use --partition mps --shares", t.id)));
            }
        }
        if let (Mode::Mig | Mode::Mps, Some(t)) = (self.mode, gpu_type) {
            if let Some(bad) = grid.sizes.iter().find(|s| t.profile_for_size(**s).is_none()) {
                return Err(invalid("sizes", bad, format!("is not a MIG instance size of {} (sizes: {:?})", t.id, t.sizes())));
            }
        }
        Ok(grid)
    }

    /// The model's files; for the torch backend the TorchScript file must exist too.
    pub fn model_files(&self) -> Result<ModelFiles, ProfileError> {
        let model = &self.model;
        let name = model
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| ProfileError::Config(format!("model {}: no file name", model.display())))?
            .to_string();
        let meta = model.with_extension("json");
        if !meta.is_file() {
            return Err(ProfileError::Config(format!(
                "model {}: its metadata {} does not exist (see models/README.md)",
                model.display(),
                meta.display()
            )));
        }
        let pt = model.with_extension("pt");
        if self.backend == BackendKind::Torch && !pt.is_file() {
            return Err(ProfileError::Config(format!(
                "model {}: TorchScript file {} does not exist (export it with scripts/export_models.py)",
                model.display(),
                pt.display()
            )));
        }
        Ok(ModelFiles { pt, meta, name })
    }

    /// The workers: the torch worker (`torch_worker`, its program and leading arguments) on the
    /// TorchScript file on `device`, or emulated workers (the running `parva` executable
    /// `emulator`) replaying the model's table from `emulate_from`.
    pub fn workers(
        &self,
        files: &ModelFiles,
        device: Device,
        max_batch: u32,
        torch_worker: impl FnOnce() -> Result<WorkerCommand, ProfileError>,
        emulator: &Path,
    ) -> Result<Box<dyn WorkerFactory>, ProfileError> {
        Ok(match self.backend {
            BackendKind::Torch => {
                let cmd = torch_worker()?;
                Box::new(TorchWorkers {
                    program: cmd.program,
                    leading_args: cmd.args,
                    model: files.pt.clone(),
                    model_meta: files.meta.clone(),
                    device,
                    threads: self.threads,
                })
            }
            BackendKind::Emulated => {
                let dir = self.emulate_from.clone().ok_or_else(|| ProfileError::Config("emulate_from: (none)".into()))?;
                let table = parva_core::ModelProfile::read(&dir.join(format!("{}.csv", files.name)), None)?;
                Box::new(EmulatedWorkers { program: emulator.to_path_buf(), model_meta: files.meta.clone(), table, max_batch })
            }
        })
    }

    /// The output directory: as asked, else [`default_out`].
    pub fn out_dir(&self, gpu_type: Option<&GpuType>, device: Device) -> PathBuf {
        self.out.clone().unwrap_or_else(|| default_out(self.mode, gpu_type, device))
    }
}

/// The model's TorchScript file, metadata file and table name.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFiles {
    pub pt: PathBuf,
    pub meta: PathBuf,
    pub name: String,
}

/// `prof_data/<gpu-type>` (mig), `prof_data/<gpu-type>-mps`, `prof_data/<gpu-type>-none` (the
/// GPU as it is) or `prof_data/cpu`.
pub fn default_out(mode: Mode, gpu_type: Option<&GpuType>, device: Device) -> PathBuf {
    let base = PathBuf::from("prof_data");
    match (mode, gpu_type) {
        (Mode::Mig, Some(t)) => base.join(t.id),
        // A type without MIG: its share tables are the type's own set, as MIG tables are.
        (Mode::Mps, Some(t)) if t.is_mps() => base.join(t.id),
        (Mode::Mps, Some(t)) => base.join(format!("{}-mps", t.id)),
        (Mode::None, Some(t)) if device == Device::Cuda => base.join(format!("{}-none", t.id)),
        _ => base.join("cpu"),
    }
}

/// One (instance size, processes) series of a finished table, as `parva profile` summarises it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Series {
    pub size: u8,
    pub procs: u32,
    pub measured: usize,
    /// The batch with the most samples/s over the segment's processes.
    pub best_batch: Option<u32>,
    pub best_segment_throughput: f64,
    pub min_latency_ms: Option<f64>,
    pub max_latency_ms: Option<f64>,
    pub oom: usize,
    pub pruned: usize,
    /// Failed points, and rows with no status the profiler writes.
    pub failed: usize,
}

/// The table's series, by size then processes.
pub fn series(table: &Table) -> Vec<Series> {
    let mut out: std::collections::BTreeMap<(u8, u32), Series> = std::collections::BTreeMap::new();
    for p in &table.profile().points {
        let s = out.entry((p.size, p.procs)).or_insert_with(|| Series { size: p.size, procs: p.procs, ..Default::default() });
        match PointStatus::of(p) {
            Some(PointStatus::Measured) => {
                s.measured += 1;
                let seg = p.segment_throughput();
                if seg > s.best_segment_throughput {
                    s.best_segment_throughput = seg;
                    s.best_batch = Some(p.batch);
                }
                let ms = p.latency_s * 1e3;
                s.min_latency_ms = Some(s.min_latency_ms.map_or(ms, |m: f64| m.min(ms)));
                s.max_latency_ms = Some(s.max_latency_ms.map_or(ms, |m: f64| m.max(ms)));
            }
            Some(PointStatus::Oom) => s.oom += 1,
            Some(PointStatus::Pruned) => s.pruned += 1,
            Some(PointStatus::Failed) | None => s.failed += 1,
        }
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> Request {
        Request {
            model: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/fixtures/linear.pt"),
            mode: Mode::Mig,
            device: None,
            sizes: vec![],
            batches: vec![],
            procs: vec![1, 2],
            out: None,
            measure: MeasureSettings { warmup_seconds: 0.5, min_seconds: 1.0, max_seconds: 5.0, target_ci: 0.02 },
            rules: PruneRules { max_latency_s: None, fast: false },
            backend: BackendKind::Torch,
            emulate_from: None,
            threads: None,
            ready_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn settings_out_of_range_or_contradicting_each_other_are_refused_naming_the_field() {
        assert_eq!(req().check(), Ok(()));
        let cases: Vec<(Request, &str, &str)> = vec![
            (Request { measure: MeasureSettings { target_ci: 0.0, ..req().measure }, ..req() }, "target_ci", "must be a positive number"),
            (Request { measure: MeasureSettings { min_seconds: f64::NAN, ..req().measure }, ..req() }, "min_seconds", "positive"),
            (Request { measure: MeasureSettings { warmup_seconds: -1.0, ..req().measure }, ..req() }, "warmup_seconds", "0 or more"),
            (Request { measure: MeasureSettings { min_seconds: 3.0, max_seconds: 1.0, ..req().measure }, ..req() }, "max_seconds", "is below min_seconds 3"),
            (Request { rules: PruneRules { max_latency_s: Some(-0.001), fast: false }, ..req() }, "max_latency_ms", "positive"),
            (Request { device: Some(Device::Cpu), ..req() }, "device", "needs partition none"),
            (Request { procs: vec![0], ..req() }, "grid", "procs"),
            (Request { backend: BackendKind::Emulated, ..req() }, "emulate_from", "needs the tables"),
            (Request { backend: BackendKind::Emulated, emulate_from: Some("t".into()), ..req() }, "out", "not a measurement"),
            (Request { emulate_from: Some("t".into()), ..req() }, "emulate_from", "is for backend emulated"),
        ];
        for (r, field, rule) in cases {
            let e = r.check().unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.rule.contains(rule), "{field}: {e}");
        }
    }

    #[test]
    fn the_grid_takes_the_gpu_types_sizes_and_refuses_one_it_lacks() {
        let a100 = GpuType::by_id("a100-80gb").unwrap();
        assert_eq!(req().grid(Some(a100)).unwrap().sizes, a100.sizes());
        assert_eq!(req().grid(None).unwrap().sizes, vec![7], "an unknown type: the whole GPU");
        assert_eq!(Request { mode: Mode::None, ..req() }.grid(Some(a100)).unwrap().sizes, vec![7]);
        assert_eq!(req().grid(None).unwrap().batches, default_batches());
        let e = Request { sizes: vec![5], ..req() }.grid(Some(a100)).unwrap_err();
        assert_eq!((e.field, e.value.as_str()), ("sizes", "5"));
        assert!(e.rule.contains("is not a MIG instance size of a100-80gb"), "{e}");
        // Without partitioning a size is only a label.
        assert!(Request { sizes: vec![5], mode: Mode::None, ..req() }.grid(Some(a100)).is_ok());
    }

    #[test]
    fn the_default_output_directory_names_the_gpu_type_and_partition() {
        let a100 = GpuType::by_id("a100-80gb").unwrap();
        assert_eq!(default_out(Mode::Mig, Some(a100), Device::Cuda), PathBuf::from("prof_data/a100-80gb"));
        assert_eq!(default_out(Mode::Mps, Some(a100), Device::Cuda), PathBuf::from("prof_data/a100-80gb-mps"));
        assert_eq!(default_out(Mode::None, Some(a100), Device::Cuda), PathBuf::from("prof_data/a100-80gb-none"));
        assert_eq!(default_out(Mode::None, Some(a100), Device::Cpu), PathBuf::from("prof_data/cpu"));
        assert_eq!(default_out(Mode::Mig, None, Device::Cuda), PathBuf::from("prof_data/cpu"));
        assert_eq!(Request { out: Some("x".into()), ..req() }.out_dir(Some(a100), Device::Cuda), PathBuf::from("x"));
    }

    #[test]
    fn model_files_sit_side_by_side_and_a_missing_one_is_named() {
        let f = req().model_files().unwrap();
        assert_eq!((f.name.as_str(), f.meta.extension().unwrap(), f.pt.extension().unwrap()), ("linear", "json".as_ref(), "pt".as_ref()));
        let dir = tempfile::tempdir().unwrap();
        let e = Request { model: dir.path().join("m.pt"), ..req() }.model_files().unwrap_err();
        assert!(e.to_string().contains("m.json does not exist"), "{e}");
        std::fs::write(dir.path().join("m.json"), "{}").unwrap();
        let e = Request { model: dir.path().join("m.pt"), ..req() }.model_files().unwrap_err();
        assert!(e.to_string().contains("TorchScript file") && e.to_string().contains("m.pt"), "{e}");
        // The emulated backend needs no TorchScript file.
        assert!(Request { model: dir.path().join("m.json"), backend: BackendKind::Emulated, ..req() }.model_files().is_ok());
    }

    #[test]
    fn series_count_each_status_and_find_the_best_batch_per_segment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        std::fs::write(
            &path,
            "Mig instance,Batch size,Workload Number,Throughput,Latency,status,p50_ms,p99_ms,mem_mib,measure_s,rounds,ci,partition,note\n\
             1,1,2,100,0.01,measured,,,,,,,mig,\n\
             1,2,2,150,0.0133,measured,,,,,,,mig,\n\
             1,4,2,0,0,oom,,,,,,,mig,\n\
             1,8,2,0,0,pruned,,,,,,,mig,\n\
             7,1,1,0,0,failed,,,,,,,mig,\n\
             7,2,1,0,0,bogus,,,,,,,mig,\n",
        )
        .unwrap();
        let t = Table::open(&path, "m", "mig").unwrap();
        let s = series(&t);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].size, s[0].procs, s[0].measured, s[0].oom, s[0].pruned, s[0].failed), (1, 2, 2, 1, 1, 0));
        assert_eq!(s[0].best_batch, Some(2));
        assert!((s[0].best_segment_throughput - 300.0).abs() < 1e-9, "two processes: 2 x 150");
        let (lo, hi) = (s[0].min_latency_ms.unwrap(), s[0].max_latency_ms.unwrap());
        assert!((lo - 10.0).abs() < 1e-9 && (hi - 13.3).abs() < 1e-9, "{lo} {hi}");
        assert_eq!((s[1].measured, s[1].failed), (0, 2), "a failed row and one with an unknown status");
    }
}
