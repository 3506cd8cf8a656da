//! Profile tables: one CSV per model, ParvaGPU-compatible.
//!
//! Header: `Mig instance,Batch size,Workload Number,Throughput,Latency` — instance size in GPCs,
//! batch size, MPS process count, throughput of ONE process in samples/s, latency of one batch
//! in seconds. Extra columns after these five are allowed and kept. A directory of such files is
//! a profile set for one GPU type; the model name is the file stem.
//!
//! A row with throughput 0 is a point that was not measured (out of memory, pruned, failed): it is
//! kept but a planner never uses it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{CsvInput, FormatError, Location};
use crate::limits::{self, Range};
use crate::mig::{GiProfile, GpuType, MPS_SHARE_STEP};

/// The five columns every profile table starts with.
pub const PROFILE_HEADER: [&str; 5] = ["Mig instance", "Batch size", "Workload Number", "Throughput", "Latency"];
/// The first column of a table keyed by MPS share (percent of the GPU's SMs, in steps of
/// [`MPS_SHARE_STEP`]) instead of MIG instance size: what `parva profile --shares` writes, for
/// GPU types without MIG (`partition = "mps"` in the catalogue).
pub const SHARE_COLUMN: &str = "MPS share";

/// One measured (instance size, batch, processes) point.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfilePoint {
    /// Instance size in GPCs.
    pub size: u8,
    pub batch: u32,
    /// MPS processes running the model in the instance.
    pub procs: u32,
    /// Samples per second of ONE process.
    pub throughput: f64,
    /// Seconds for one batch of one process.
    pub latency_s: f64,
    /// Values of the extra columns, aligned with [`ModelProfile::extra_headers`].
    pub extra: Vec<String>,
}

impl ProfilePoint {
    /// Throughput of the whole segment (all processes), samples/s.
    pub fn segment_throughput(&self) -> f64 {
        self.throughput * self.procs as f64
    }
    /// Whether this point holds a usable measurement.
    pub fn is_measured(&self) -> bool {
        self.throughput > 0.0 && self.latency_s > 0.0
    }
}

/// The profile table of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelProfile {
    pub model: String,
    /// Point sizes are MPS share units ([`SHARE_COLUMN`] in the file, percent / 10), not GPCs.
    pub share_keyed: bool,
    pub points: Vec<ProfilePoint>,
    pub extra_headers: Vec<String>,
}

impl ModelProfile {
    /// The point at exactly (size, batch, procs), if measured.
    pub fn point(&self, size: u8, batch: u32, procs: u32) -> Option<&ProfilePoint> {
        self.points.iter().find(|p| p.size == size && p.batch == batch && p.procs == procs)
    }

    /// Batch latency in seconds of `batch` samples on an instance of `size` GPCs running `procs`
    /// processes: the profiled value, or a linear interpolation between the profiled batch sizes of
    /// the same (size, procs) that surround it. Below the smallest profiled batch the smallest's
    /// latency is used; above the largest, the line through the two largest is extended. `None`
    /// when (size, procs) has no measured point.
    pub fn batch_latency(&self, size: u8, procs: u32, batch: u32) -> Option<f64> {
        interpolate(&self.latency_curve(size, procs), batch)
    }

    /// The measured (batch, latency) points of (size, procs), by batch: what
    /// [`ModelProfile::batch_latency`] interpolates; compute it once for many look-ups.
    pub fn latency_curve(&self, size: u8, procs: u32) -> Vec<(u32, f64)> {
        let mut pts: Vec<(u32, f64)> = self
            .points
            .iter()
            .filter(|p| p.size == size && p.procs == procs && p.is_measured())
            .map(|p| (p.batch, p.latency_s))
            .collect();
        pts.sort_by_key(|p| p.0);
        pts
    }

    /// Read one table. `gpu`, when given, restricts instance sizes to the GPU type's.
    pub fn read(path: &Path, gpu: Option<&GpuType>) -> Result<ModelProfile, FormatError> {
        let model = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| FormatError::invalid(Location::file(path), "file name is not valid UTF-8"))?
            .to_string();
        let file = std::fs::File::open(path).map_err(|e| FormatError::io(path, "open profile table", e))?;
        Self::read_from(file, path, model, gpu)
    }

    /// Read a table from any reader; `path` is used in messages only.
    pub fn read_from(
        reader: impl std::io::Read,
        path: &Path,
        model: String,
        gpu: Option<&GpuType>,
    ) -> Result<ModelProfile, FormatError> {
        let input = CsvInput::read(reader, path)?;
        let mut rdr = csv::ReaderBuilder::new().has_headers(true).trim(csv::Trim::All).from_reader(input.bytes.as_slice());
        let headers = rdr.headers().map_err(|e| input.error(path, e))?.clone();
        let share_keyed = headers.get(0).is_some_and(|h| h.eq_ignore_ascii_case(SHARE_COLUMN));
        let first = if share_keyed { SHARE_COLUMN } else { PROFILE_HEADER[0] };
        for (i, want) in PROFILE_HEADER.iter().enumerate().skip(usize::from(share_keyed)) {
            let got = headers.get(i).unwrap_or("");
            if !got.eq_ignore_ascii_case(want) {
                return Err(FormatError::invalid(
                    Location::field(path, 1, format!("column {}", i + 1)),
                    format!(
                        "header must start with `{}` (or `{SHARE_COLUMN}` first, for a table keyed by MPS share); found `{got}` where `{want}` belongs",
                        PROFILE_HEADER.join(",")
                    ),
                ));
            }
        }
        if let Some(gpu) = gpu {
            let at = Location::field(path, 1, first);
            if gpu.is_mps() && !share_keyed {
                return Err(FormatError::invalid(
                    at,
                    format!(
                        "this table is keyed by MIG instance size (GPCs), but {} is cut into MPS shares (no MIG): profile it with `parva profile --partition mps --shares 20,40,50,60,80,100 --gpu-type {}`",
                        gpu.id, gpu.id
                    ),
                ));
            }
            if !gpu.is_mps() && share_keyed {
                return Err(FormatError::invalid(
                    at,
                    format!(
                        "this table is keyed by MPS share, but {} is cut by MIG: plan it for an MPS type (`--gpu-type {}-nomig` or another `parva catalogue` type with partition mps), or profile MIG sizes with --sizes",
                        gpu.id, gpu.id
                    ),
                ));
            }
        }
        let extra_headers: Vec<String> = headers.iter().skip(5).map(str::to_string).collect();
        let mut points = Vec::new();
        let mut seen: BTreeMap<(u8, u32, u32), u64> = BTreeMap::new();
        for rec in rdr.records() {
            let rec = rec.map_err(|e| input.error(path, e))?;
            let line = input.line(rec.position());
            if rec.iter().all(|f| f.is_empty()) {
                continue;
            }
            let field = |i: usize| rec.get(i).unwrap_or("");
            let at = |i: usize| Location::field(path, line, if i == 0 { first } else { PROFILE_HEADER[i] });
            let size: u8 = if share_keyed {
                let pct = parse_int(field(0), at(0), 1, 100)?;
                if pct % MPS_SHARE_STEP as i64 != 0 {
                    return Err(FormatError::invalid(at(0), format!("{pct} % is not a multiple of {MPS_SHARE_STEP} % (shares go in {MPS_SHARE_STEP} % steps)")));
                }
                (pct / MPS_SHARE_STEP as i64) as u8
            } else {
                parse_int(field(0), at(0), 1, 255)? as u8
            };
            if let Some(gpu) = gpu.filter(|_| !share_keyed) {
                if gpu.profile_for_size(size).is_none() {
                    return Err(FormatError::invalid(
                        at(0),
                        format!("instance size {size} is not a MIG size of {} (sizes: {:?})", gpu.id, gpu.sizes()),
                    ));
                }
            }
            let batch = parse_int(field(1), at(1), 1, limits::MAX_BATCH as i64)? as u32;
            let procs = parse_int(field(2), at(2), 1, limits::MAX_PROCS as i64)? as u32;
            let throughput = parse_nonneg(field(3), at(3))?;
            if throughput > 0.0 {
                parse_in(field(3), at(3), &limits::THROUGHPUT)?;
            }
            let latency_s = parse_nonneg(field(4), at(4))?;
            if throughput > 0.0 && latency_s == 0.0 {
                return Err(FormatError::invalid(at(4), "latency must be > 0 when throughput is > 0 (value: \"0\")"));
            }
            if latency_s > 0.0 {
                parse_in(field(4), at(4), &limits::BATCH_LATENCY_S)?;
            }
            if let Some(first) = seen.insert((size, batch, procs), line) {
                return Err(FormatError::invalid(
                    Location::line(path, line),
                    format!("duplicate grid point (size {size}, batch {batch}, procs {procs}); first at line {first}"),
                ));
            }
            points.push(ProfilePoint {
                size,
                batch,
                procs,
                throughput,
                latency_s,
                extra: rec.iter().skip(5).map(str::to_string).collect(),
            });
        }
        Ok(ModelProfile { model, share_keyed, points, extra_headers })
    }

    /// A point's device memory per process in MiB: its `mem_mib` column (what `parva profile`
    /// writes), when the table has one and the value is a positive number.
    pub fn mem_mib(&self, p: &ProfilePoint) -> Option<f64> {
        let col = self.extra_headers.iter().position(|h| h == "mem_mib")?;
        p.extra.get(col)?.parse::<f64>().ok().filter(|v| v.is_finite() && *v > 0.0)
    }

    /// Whether point `p`'s processes (`mem_mib` x processes) fit `inst`'s memory (an MPS share's:
    /// its part of the GPU's); true when the table says nothing of memory. The one memory rule of
    /// the planners and `validate`.
    pub fn point_fits(&self, p: &ProfilePoint, inst: &GiProfile) -> bool {
        self.mem_mib(p).is_none_or(|m| m * f64::from(p.procs) <= inst.mem_mib())
    }

    /// Write the table (header, then points in grid order).
    pub fn write_to(&self, w: impl std::io::Write) -> Result<(), csv::Error> {
        let mut wtr = csv::Writer::from_writer(w);
        let mut header: Vec<&str> = PROFILE_HEADER.to_vec();
        if self.share_keyed {
            header[0] = SHARE_COLUMN;
        }
        header.extend(self.extra_headers.iter().map(String::as_str));
        wtr.write_record(&header)?;
        let mut points: Vec<&ProfilePoint> = self.points.iter().collect();
        points.sort_by_key(|p| (p.size, p.batch, p.procs));
        for p in points {
            let mut row = vec![
                if self.share_keyed { (p.size as u32 * MPS_SHARE_STEP as u32).to_string() } else { p.size.to_string() },
                p.batch.to_string(),
                p.procs.to_string(),
                fmt_num(p.throughput),
                fmt_num(p.latency_s),
            ];
            row.extend(p.extra.iter().cloned());
            row.resize(header.len(), String::new());
            wtr.write_record(&row)?;
        }
        wtr.flush()?;
        Ok(())
    }
}

/// A profile set: every model's table for one GPU type, keyed (and ordered) by model name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProfileSet {
    pub dir: PathBuf,
    pub models: BTreeMap<String, ModelProfile>,
}

impl ProfileSet {
    /// Read every `*.csv` of `dir`. Files are taken in byte order of their names, as ParvaGPU does.
    pub fn read_dir(dir: &Path, gpu: Option<&GpuType>) -> Result<ProfileSet, FormatError> {
        let entries = std::fs::read_dir(dir).map_err(|e| FormatError::io(dir, "read profile directory", e))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| FormatError::io(dir, "read profile directory", e))?;
            let path = entry.path();
            let reserved = path.file_name().is_some_and(|n| n == crate::interference::FILE || n == crate::data_path::FILE);
            if path.extension().is_some_and(|e| e == "csv") && path.is_file() && !reserved {
                files.push(path);
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(FormatError::invalid(Location::file(dir), "holds no profile tables (*.csv)"));
        }
        let mut models = BTreeMap::new();
        for f in files {
            let table = ModelProfile::read(&f, gpu)?;
            models.insert(table.model.clone(), table);
        }
        Ok(ProfileSet { dir: dir.to_path_buf(), models })
    }

    /// The same tables with every measured batch of model m on an instance of size s
    /// `factor(m, s)` times as slow (latency x factor, throughput / factor): how the planner
    /// accounts for interference between MPS shares.
    pub fn slowed_by(&self, factor: impl Fn(&str, u8) -> f64) -> ProfileSet {
        let mut out = self.clone();
        for t in out.models.values_mut() {
            for p in t.points.iter_mut().filter(|p| p.is_measured()) {
                let factor = factor(&t.model, p.size);
                p.latency_s *= factor;
                p.throughput /= factor;
            }
        }
        out
    }

    /// Model names in the order SLO files' columns refer to them (alphabetical by file name).
    pub fn model_names(&self) -> Vec<&str> {
        self.models.keys().map(String::as_str).collect()
    }

    pub fn get(&self, model: &str) -> Option<&ModelProfile> {
        self.models.get(model)
    }
}

/// Piecewise-linear latency over sorted (batch, latency) points; see [`ModelProfile::batch_latency`].
pub fn interpolate(pts: &[(u32, f64)], batch: u32) -> Option<f64> {
    let (first, last) = (pts.first()?, pts.last()?);
    if batch <= first.0 {
        return Some(first.1);
    }
    let i = pts.partition_point(|p| p.0 < batch);
    let (a, b) = if i < pts.len() {
        if pts[i].0 == batch {
            return Some(pts[i].1);
        }
        (pts[i - 1], pts[i])
    } else if pts.len() >= 2 {
        (pts[pts.len() - 2], *last)
    } else {
        return Some(last.1 * batch as f64 / last.0 as f64);
    };
    let t = (batch as f64 - a.0 as f64) / (b.0 as f64 - a.0 as f64);
    Some((a.1 + t * (b.1 - a.1)).max(first.1))
}

pub(crate) fn parse_int(value: &str, at: Location, min: i64, max: i64) -> Result<i64, FormatError> {
    let v: i64 = value.parse().map_err(|_| {
        FormatError::invalid(at.clone(), format!("expected a whole number, found {value:?}"))
    })?;
    if v < min || v > max {
        return Err(FormatError::invalid(at, format!("{v} is out of range (allowed {min}..={max})")));
    }
    Ok(v)
}

pub(crate) fn parse_nonneg(value: &str, at: Location) -> Result<f64, FormatError> {
    let v: f64 = value
        .parse()
        .map_err(|_| FormatError::invalid(at.clone(), format!("expected a number, found {value:?}")))?;
    if !v.is_finite() || v < 0.0 {
        return Err(FormatError::invalid(at, format!("must be a finite number >= 0, found {value:?}")));
    }
    Ok(v)
}

/// A number within `range` (finite; NaN and infinities refused), or an error naming the range.
pub(crate) fn parse_in(value: &str, at: Location, range: &Range) -> Result<f64, FormatError> {
    let v: f64 = value
        .parse()
        .map_err(|_| FormatError::invalid(at.clone(), format!("expected a number, found {value:?}")))?;
    range.check(v).map_err(|rule| FormatError::invalid(at, rule))
}

/// Shortest decimal form that reads back to the same value.
pub(crate) fn fmt_num(v: f64) -> String {
    let s = format!("{v}");
    if s.contains('e') { format!("{v:.9}") } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CsvInput;

    /// Read for an A100 (MIG), or for an H100 without MIG when the table is keyed by share.
    fn read(text: &str) -> Result<ModelProfile, FormatError> {
        let id = if text.starts_with(SHARE_COLUMN) { "h100-80gb-nomig" } else { "a100-80gb" };
        let gpu = GpuType::by_id(id).unwrap();
        ModelProfile::read_from(text.as_bytes(), Path::new("m.csv"), "m".into(), Some(gpu))
    }

    const HEADER: &str = "Mig instance,Batch size,Workload Number,Throughput,Latency";

    /// Regression: the csv crate does not count the blank lines it skips, so an error after a
    /// blank line named the line before the real one.
    #[test]
    fn errors_after_blank_lines_name_the_physical_line() {
        let e = read(&format!("{HEADER}\n1,1,1,10,0.1\n\n\n1,2,1,-5,0.1\n")).unwrap_err().to_string();
        assert!(e.contains("m.csv:5"), "{e}");
        let e = read(&format!("{HEADER}\r\n\r\n1,1,1,10\r\n")).unwrap_err().to_string();
        assert!(e.contains("m.csv:3") && e.contains("has 4 fields"), "{e}");
    }

    #[test]
    fn reads_and_keeps_extra_columns() {
        let t = read(&format!("{HEADER},p99_latency,mem_mb\n1,4,2,100.5,0.04,0.05,900\n7,8,1,1000,0.008,0.009,\n")).unwrap();
        assert_eq!(t.extra_headers, vec!["p99_latency", "mem_mb"]);
        assert_eq!(t.points.len(), 2);
        assert_eq!(t.points[0].segment_throughput(), 201.0);
        assert_eq!(t.points[1].extra, vec!["0.009", ""]);
        let mut out = Vec::new();
        t.write_to(&mut out).unwrap();
        let again = ModelProfile::read_from(out.as_slice(), Path::new("m.csv"), "m".into(), None).unwrap();
        assert_eq!(again, t);
    }

    fn err_of(text: &str) -> String {
        read(text).unwrap_err().to_string()
    }

    #[test]
    fn error_paths_name_file_line_field_and_value() {
        let e = err_of("size,batch\n1,2\n");
        assert!(e.contains("m.csv:1") && e.contains("header"), "{e}");
        let e = err_of(&format!("{HEADER}\n1,1,1,-3,0.1\n"));
        assert!(e.contains("m.csv:2: field `Throughput`") && e.contains("\"-3\""), "{e}");
        let e = err_of(&format!("{HEADER}\n1,1,1,NaN,0.1\n"));
        assert!(e.contains("Throughput") && e.contains("NaN"), "{e}");
        let e = err_of(&format!("{HEADER}\n1,1,1,inf,0.1\n"));
        assert!(e.contains("finite"), "{e}");
        let e = err_of(&format!("{HEADER}\n5,1,1,3,0.1\n"));
        assert!(e.contains("field `Mig instance`") && e.contains("size 5") && e.contains("a100-80gb"), "{e}");
        let e = err_of(&format!("{HEADER}\n1,1,1,3,0.1\n2,1,1,3,0.1\n1,1,1,4,0.1\n"));
        assert!(e.contains("m.csv:4") && e.contains("duplicate") && e.contains("line 2"), "{e}");
        let e = err_of(&format!("{HEADER}\n1,x,1,3,0.1\n"));
        assert!(e.contains("Batch size") && e.contains("\"x\""), "{e}");
        let e = err_of(&format!("{HEADER}\n1,0,1,3,0.1\n"));
        assert!(e.contains("Batch size") && e.contains("out of range"), "{e}");
        let e = err_of(&format!("{HEADER}\n1,1,1,3\n"));
        assert!(e.contains("m.csv:2") && e.contains("fields"), "{e}");
        let e = err_of(&format!("{HEADER}\n1,1,1,3,0\n"));
        assert!(e.contains("Latency"), "{e}");
    }

    #[test]
    fn batch_latency_interpolates_between_profiled_batches() {
        let t = read(&format!("{HEADER}\n2,1,1,100,0.010\n2,4,1,200,0.020\n2,8,1,250,0.032\n2,2,2,50,0.040\n")).unwrap();
        assert_eq!(t.batch_latency(2, 1, 1), Some(0.010));
        assert_eq!(t.batch_latency(2, 1, 4), Some(0.020));
        let l3 = t.batch_latency(2, 1, 3).unwrap();
        assert!((l3 - (0.010 + 2.0 / 3.0 * 0.010)).abs() < 1e-12, "{l3}");
        let l6 = t.batch_latency(2, 1, 6).unwrap();
        assert!((l6 - 0.026).abs() < 1e-12, "{l6}");
        // Beyond the largest batch: the line through the two largest.
        let l12 = t.batch_latency(2, 1, 12).unwrap();
        assert!((l12 - 0.044).abs() < 1e-12, "{l12}");
        // Below the smallest profiled batch of (2, 2 procs): its latency.
        assert_eq!(t.batch_latency(2, 2, 1), Some(0.040));
        assert_eq!(t.batch_latency(3, 1, 1), None);
    }

    #[test]
    fn missing_directory_and_empty_directory() {
        let e = ProfileSet::read_dir(Path::new("/nonexistent/parva"), None).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/parva"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let e = ProfileSet::read_dir(d.path(), None).unwrap_err().to_string();
        assert!(e.contains("no profile tables"), "{e}");
    }

    #[test]
    fn profile_values_outside_their_ranges_are_refused() {
        for (row, field, want) in [
            ("1,4097,1,3,0.1", "Batch size", "4097 is out of range (allowed 1..=4096)"),
            ("1,1,49,3,0.1", "Workload Number", "49 is out of range"),
            ("1,1,1,1e300,0.1", "Throughput", "throughput must be a finite number in [1e-4, 1e7] samples/s, found 1e300"),
            ("1,1,1,1e-9,0.1", "Throughput", "found 1e-9"),
            ("1,1,1,3,1e-9", "Latency", "batch latency must be a finite number in [1e-6, 3600] s, found 1e-9"),
            ("1,1,1,3,7200", "Latency", "found 7200"),
        ] {
            let e = read(&format!("{HEADER}\n{row}\n")).unwrap_err();
            let loc = e.location().unwrap();
            assert_eq!((loc.line, loc.field.as_deref()), (Some(2), Some(field)), "{row}: {e}");
            assert!(e.to_string().contains(want), "{row}: {e}");
        }
        // Unmeasured points (throughput 0) keep any latency in range, or 0.
        assert!(read(&format!("{HEADER}\n1,1,1,0,0\n1,2,1,0,0.5\n")).is_ok());
    }

    #[test]
    fn a_share_keyed_table_is_read_for_mps_types_only_and_round_trips() {
        let text = "MPS share,Batch size,Workload Number,Throughput,Latency,note\n20,4,1,100,0.04,a\n50,4,1,250,0.016,\n100,4,2,240,0.0167,\n";
        let l4 = GpuType::by_id("l4-24gb").unwrap();
        let t = ModelProfile::read_from(text.as_bytes(), Path::new("m.csv"), "m".into(), Some(l4)).unwrap();
        assert!(t.share_keyed);
        assert_eq!(t.points.iter().map(|p| p.size).collect::<Vec<_>>(), [2, 5, 10]);
        let mut out = Vec::new();
        t.write_to(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), text);
        // A share table for a MIG type, a GPC table for an MPS type: refused, naming the way out.
        let a100 = GpuType::by_id("a100-80gb").unwrap();
        let e = ModelProfile::read_from(text.as_bytes(), Path::new("m.csv"), "m".into(), Some(a100)).unwrap_err().to_string();
        assert!(e.starts_with("m.csv:1: field `MPS share`:") && e.contains("a100-80gb-nomig"), "{e}");
        let gpcs = format!("{HEADER}\n1,4,1,100,0.04\n");
        let e = ModelProfile::read_from(gpcs.as_bytes(), Path::new("g.csv"), "g".into(), Some(l4)).unwrap_err().to_string();
        assert!(e.starts_with("g.csv:1: field `Mig instance`:") && e.contains("--shares"), "{e}");
        // Shares go in 10 % steps, up to 100 %.
        for (bad, want) in [("25", "not a multiple of 10"), ("110", "out of range"), ("0", "out of range")] {
            let t = format!("MPS share,Batch size,Workload Number,Throughput,Latency\n{bad},4,1,100,0.04\n");
            let e = ModelProfile::read_from(t.as_bytes(), Path::new("s.csv"), "s".into(), Some(l4)).unwrap_err().to_string();
            assert!(e.starts_with("s.csv:2: field `MPS share`:") && e.contains(want), "{e}");
        }
    }

    #[test]
    fn interference_slows_shares_but_not_a_whole_gpu() {
        let text = "MPS share,Batch size,Workload Number,Throughput,Latency\n50,4,1,250,0.016\n100,4,1,400,0.01\n";
        let l4 = GpuType::by_id("l4-24gb").unwrap();
        let t = ModelProfile::read_from(text.as_bytes(), Path::new("m.csv"), "m".into(), Some(l4)).unwrap();
        let set = ProfileSet { dir: "mem".into(), models: [("m".to_string(), t)].into_iter().collect() };
        let slowed = set.slowed_by(|m, s| crate::interference::plan_factor(None, 0.25, m, s, 10));
        let p = &slowed.get("m").unwrap().points;
        assert!((p[0].latency_s - 0.02).abs() < 1e-12 && (p[0].throughput - 200.0).abs() < 1e-9, "{:?}", p[0]);
        assert_eq!((p[1].latency_s, p[1].throughput), (0.01, 400.0), "the whole GPU has no neighbours");
    }

    #[test]
    fn an_input_larger_than_the_limit_is_refused_without_reading_it_whole() {
        // An endless reader: refused once the limit is passed.
        let e = CsvInput::read_limited(std::io::repeat(b'1'), Path::new("big.csv"), 1000).err().unwrap();
        assert_eq!(e.to_string(), "big.csv: is larger than 1000 bytes, the most parva reads from one input file");
        assert!(CsvInput::read_limited(&b"12345"[..], Path::new("ok.csv"), 5).is_ok());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn table() -> impl Strategy<Value = ModelProfile> {
            (proptest::collection::btree_map(
                (prop::sample::select(vec![1u8, 2, 3, 4, 7]), 1u32..=4096, 1u32..=48),
                (prop::option::weighted(0.9, (1u32..10_000_000, 1u32..3_600_000)), "[a-z0-9.]{0,6}"),
                1..40,
            ), any::<bool>())
            .prop_map(|(points, share_keyed)| ModelProfile {
                model: "m".into(),
                share_keyed,
                extra_headers: vec!["note".into()],
                points: points
                    .into_iter()
                    .map(|((size, batch, procs), (m, note))| {
                        let (throughput, latency_s) = m.map_or((0.0, 0.0), |(t, l)| (t as f64 / 1000.0 + 1.0, l as f64 / 1000.0 + 0.001));
                        ProfilePoint { size, batch, procs, throughput, latency_s, extra: vec![note] }
                    })
                    .collect(),
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            /// Any bytes: an answer, never a panic (run longer with PROPTEST_CASES=100000).
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = read(&String::from_utf8_lossy(&bytes));
                let mut text = format!("{HEADER}\n").into_bytes();
                text.extend(&bytes);
                let _ = ModelProfile::read_from(text.as_slice(), Path::new("m.csv"), "m".into(), None);
            }

            /// A generated table, written and read back, is the same table.
            #[test]
            fn written_tables_read_back_the_same(t in table()) {
                let mut out = Vec::new();
                t.write_to(&mut out).unwrap();
                let again = read(std::str::from_utf8(&out).unwrap()).unwrap();
                prop_assert_eq!(again, t);
            }

            /// One of the five fields made invalid: the error names its line and field.
            #[test]
            fn a_bad_field_is_named_by_line_and_field(
                t in table(),
                row in any::<prop::sample::Index>(),
                field in 0usize..5,
                bad in prop::sample::select(vec!["x", "-1", "NaN", "inf", "1e400", "5000", "1.5"]),
            ) {
                let mut out = Vec::new();
                t.write_to(&mut out).unwrap();
                let mut lines: Vec<String> = String::from_utf8(out).unwrap().lines().map(str::to_string).collect();
                let r = 1 + row.index(lines.len() - 1);
                let mut fields: Vec<String> = lines[r].split(',').map(str::to_string).collect();
                // Values that stay valid for the field are no mutation.
                prop_assume!(!(field == 3 && (bad == "5000" || bad == "1.5")));
                prop_assume!(!(field == 4 && bad == "1.5"));
                fields[field] = bad.to_string();
                lines[r] = fields.join(",");
                // A changed grid point may collide with another row: then the duplicate is named.
                let e = read(&lines.join("\n")).unwrap_err();
                let loc = e.location().unwrap();
                prop_assert_eq!(loc.line, Some(r as u64 + 1), "{}", e);
                if !e.to_string().contains("duplicate") {
                    let name = if field == 0 && t.share_keyed { SHARE_COLUMN } else { PROFILE_HEADER[field] };
                    prop_assert_eq!(loc.field.as_deref(), Some(name), "{}", e);
                }
            }
        }
    }
}
