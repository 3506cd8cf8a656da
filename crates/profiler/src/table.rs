//! The profile table being written: ParvaGPU's five columns, then parva's extra columns
//! ([`EXTRA_HEADERS`]). Every point's row is written as soon as it is decided, by rewriting the
//! file atomically, so the table on disk is always whole and a re-run resumes from it.
//!
//! Rows that hold no measurement (out of memory, pruned, failed) have throughput and latency 0,
//! the convention planners already skip, and say why in `status` and `note`. On a re-run,
//! measured and out-of-memory points are kept; failed and pruned ones are decided again.

use std::path::{Path, PathBuf};

use parva_core::profile::{ModelProfile, PROFILE_HEADER, ProfilePoint};

use crate::error::ProfileError;
use crate::grid::Point;

/// parva's columns after ParvaGPU's five.
pub const EXTRA_HEADERS: [&str; 9] = ["status", "p50_ms", "p99_ms", "mem_mib", "measure_s", "rounds", "ci", "partition", "note"];

/// A measured point.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// Samples/s of one process (ParvaGPU's `Throughput`).
    pub throughput: f64,
    /// Mean batch latency, seconds (ParvaGPU's `Latency`).
    pub latency_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// GPU memory in use on the instance (or the workers' peak RSS on a CPU), MiB.
    pub mem_mib: Option<f64>,
    /// Seconds measured (warm-up excluded).
    pub seconds: f64,
    pub rounds: usize,
    /// Relative half-width of the 95% confidence interval of the throughput.
    pub ci: f64,
    /// Empty, or why the measurement is weaker than asked (the time cap was hit first).
    pub note: String,
}

/// What became of a point.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Measured(Measurement),
    /// The workers ran out of memory at this batch (a result: larger batches are pruned).
    Oom(String),
    /// A worker crashed or failed otherwise; retried on the next run.
    Failed(String),
    /// Not measured, and why.
    Pruned(String),
}

impl Outcome {
    pub fn status(&self) -> PointStatus {
        match self {
            Outcome::Measured(_) => PointStatus::Measured,
            Outcome::Oom(_) => PointStatus::Oom,
            Outcome::Failed(_) => PointStatus::Failed,
            Outcome::Pruned(_) => PointStatus::Pruned,
        }
    }
}

/// A point's `status` column: the one spelling the profiler writes and every reader parses
/// (an unknown or empty status reads as `None`, never as one of these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PointStatus {
    Measured,
    /// Out of memory at this batch (a result).
    Oom,
    /// A worker failed; retried by the next run.
    Failed,
    /// Not measured by a pruning rule (the note says which).
    Pruned,
}

impl PointStatus {
    pub const ALL: [PointStatus; 4] = [PointStatus::Measured, PointStatus::Oom, PointStatus::Failed, PointStatus::Pruned];

    pub fn as_str(self) -> &'static str {
        match self {
            PointStatus::Measured => "measured",
            PointStatus::Oom => "oom",
            PointStatus::Failed => "failed",
            PointStatus::Pruned => "pruned",
        }
    }

    /// The status of a row of a profiler table (its first extra column).
    pub fn of(point: &parva_core::profile::ProfilePoint) -> Option<PointStatus> {
        point.extra.first().and_then(|s| s.parse().ok())
    }
}

impl std::fmt::Display for PointStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PointStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PointStatus::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| format!("unknown point status {s:?}"))
    }
}

/// What a resumed table already holds for a point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Done {
    Measured { throughput: f64, latency_s: f64 },
    Oom,
}

/// A model's table on disk and in memory.
#[derive(Debug)]
pub struct Table {
    path: PathBuf,
    partition: String,
    profile: ModelProfile,
}

fn ms(v: f64) -> String {
    format!("{v:.4}")
}

impl Table {
    /// Open `path` for `model`, resuming its rows when it exists. Refuses a table with other
    /// columns, or points measured under another partition mode.
    pub fn open(path: &Path, model: &str, partition: &str) -> Result<Table, ProfileError> {
        Self::open_keyed(path, model, partition, false)
    }

    /// [`Table::open`] for a table keyed by MPS share (`share_keyed`: `parva profile --shares`)
    /// or by MIG size; an existing table keyed the other way is refused.
    pub fn open_keyed(path: &Path, model: &str, partition: &str, share_keyed: bool) -> Result<Table, ProfileError> {
        let extra_headers: Vec<String> = EXTRA_HEADERS.iter().map(|s| s.to_string()).collect();
        if !path.exists() {
            let profile = ModelProfile { model: model.to_string(), share_keyed, points: Vec::new(), extra_headers };
            return Ok(Table { path: path.to_path_buf(), partition: partition.to_string(), profile });
        }
        let profile = ModelProfile::read(path, None)?;
        if profile.share_keyed != share_keyed {
            let key = |s: bool| if s { "MPS share (--shares)" } else { "MIG instance size (--sizes)" };
            return Err(ProfileError::Config(format!(
                "{}: this table is keyed by {}; this run is keyed by {}: profile into another --out directory",
                path.display(),
                key(profile.share_keyed),
                key(share_keyed)
            )));
        }
        if profile.extra_headers != extra_headers {
            return Err(ProfileError::ForeignTable {
                path: path.display().to_string(),
                found: profile.extra_headers.join(","),
                expected: EXTRA_HEADERS.join(","),
            });
        }
        let col = EXTRA_HEADERS.iter().position(|h| *h == "partition").unwrap_or(0);
        for (i, p) in profile.points.iter().enumerate() {
            let found = p.extra.get(col).map(String::as_str).unwrap_or("");
            if found != partition {
                return Err(ProfileError::PartitionMismatch {
                    path: path.display().to_string(),
                    // Rows are in file order after the header line.
                    line: i + 2,
                    found: found.to_string(),
                    want: partition.to_string(),
                });
            }
        }
        Ok(Table { path: path.to_path_buf(), partition: partition.to_string(), profile })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn profile(&self) -> &ModelProfile {
        &self.profile
    }

    /// What the table already holds for `p` that a re-run keeps.
    pub fn done(&self, p: Point) -> Option<Done> {
        let row = self.profile.point(p.size, p.batch, p.procs)?;
        match PointStatus::of(row) {
            Some(PointStatus::Measured) if row.is_measured() => Some(Done::Measured { throughput: row.throughput, latency_s: row.latency_s }),
            Some(PointStatus::Oom) => Some(Done::Oom),
            _ => None,
        }
    }

    /// Set `p`'s row to `outcome` and rewrite the file atomically.
    pub fn record(&mut self, p: Point, outcome: &Outcome) -> Result<(), ProfileError> {
        let (throughput, latency_s, mut extra) = match outcome {
            // Samples/s to 0.001, seconds to 0.1 us: far below the noise, and short rows.
            Outcome::Measured(m) => (
                (m.throughput * 1e3).round() / 1e3,
                (m.latency_s * 1e7).round() / 1e7,
                vec![
                    ms(m.p50_ms),
                    ms(m.p99_ms),
                    m.mem_mib.map(|v| format!("{v:.0}")).unwrap_or_default(),
                    format!("{:.2}", m.seconds),
                    m.rounds.to_string(),
                    format!("{:.4}", m.ci),
                    self.partition.clone(),
                    m.note.clone(),
                ],
            ),
            Outcome::Oom(note) | Outcome::Failed(note) | Outcome::Pruned(note) => {
                let mut v = vec![String::new(); 6];
                v.push(self.partition.clone());
                v.push(note.clone());
                (0.0, 0.0, v)
            }
        };
        extra.insert(0, outcome.status().as_str().to_string());
        let row = ProfilePoint { size: p.size, batch: p.batch, procs: p.procs, throughput, latency_s, extra };
        match self.profile.points.iter_mut().find(|r| r.size == p.size && r.batch == p.batch && r.procs == p.procs) {
            Some(r) => *r = row,
            None => self.profile.points.push(row),
        }
        self.profile.points.sort_by_key(|r| (r.size, r.batch, r.procs));
        let mut bytes = Vec::new();
        self.profile.write_to(&mut bytes).map_err(|e| ProfileError::Config(format!("{}: encode the table: {e}", self.path.display())))?;
        parva_core::files::write_atomic(&self.path, &bytes)?;
        Ok(())
    }
}

/// The header line of a table this module writes.
pub fn header_line() -> String {
    let mut h: Vec<&str> = PROFILE_HEADER.to_vec();
    h.extend(EXTRA_HEADERS);
    h.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(tp: f64, lat: f64) -> Outcome {
        Outcome::Measured(Measurement {
            throughput: tp,
            latency_s: lat,
            p50_ms: lat * 1e3,
            p99_ms: lat * 1.2e3,
            mem_mib: Some(812.0),
            seconds: 2.0,
            rounds: 5,
            ci: 0.01,
            note: String::new(),
        })
    }

    #[test]
    fn rows_are_written_at_once_and_read_back_by_the_planners_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        let mut t = Table::open(&path, "m", "none").unwrap();
        let p1 = Point { size: 7, procs: 1, batch: 1 };
        let p2 = Point { size: 7, procs: 1, batch: 2 };
        let p3 = Point { size: 7, procs: 1, batch: 4 };
        t.record(p2, &Outcome::Oom("CUDA out of memory".into())).unwrap();
        t.record(p1, &measured(100.0, 0.01)).unwrap();
        t.record(p3, &Outcome::Pruned("batch 2 ran out of memory".into())).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&header_line()), "{text}");
        let back = ModelProfile::read(&path, None).unwrap();
        assert_eq!(back.points.len(), 3);
        assert_eq!(back.batch_latency(7, 1, 1), Some(0.01));
        assert!(!back.point(7, 2, 1).unwrap().is_measured(), "an OOM row is skipped by planners");
        let t = Table::open(&path, "m", "none").unwrap();
        assert_eq!(t.done(p1), Some(Done::Measured { throughput: 100.0, latency_s: 0.01 }));
        assert_eq!(t.done(p2), Some(Done::Oom));
        assert_eq!(t.done(p3), None, "pruned points are decided again");
    }

    #[test]
    fn a_foreign_table_or_another_partition_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        std::fs::write(&path, "Mig instance,Batch size,Workload Number,Throughput,Latency\n1,1,1,10,0.1\n").unwrap();
        let e = Table::open(&path, "m", "mig").unwrap_err().to_string();
        assert!(e.contains("was not written by `parva profile`") && e.contains("m.csv"), "{e}");
        let path2 = dir.path().join("n.csv");
        let mut t = Table::open(&path2, "n", "mps").unwrap();
        t.record(Point { size: 1, procs: 1, batch: 1 }, &measured(10.0, 0.1)).unwrap();
        let before = std::fs::read(&path2).unwrap();
        let e = Table::open(&path2, "n", "mig").unwrap_err().to_string();
        assert!(e.contains("n.csv:2") && e.contains("--partition mps") && e.contains("--partition mig"), "{e}");
        assert_eq!(std::fs::read(&path2).unwrap(), before);
    }
}

#[cfg(test)]
mod status_tests {
    use super::*;

    /// Issue 12: the status column was matched as strings in several places, and any unknown
    /// string counted as "failed". One type now writes and reads it.
    #[test]
    fn a_point_status_reads_back_as_written_and_an_unknown_one_is_none() {
        for s in PointStatus::ALL {
            assert_eq!(s.to_string().parse::<PointStatus>(), Ok(s));
        }
        let mut p = parva_core::profile::ProfilePoint { size: 1, batch: 1, procs: 1, throughput: 1.0, latency_s: 1.0, extra: vec!["oom".into()] };
        assert_eq!(PointStatus::of(&p), Some(PointStatus::Oom));
        p.extra = vec!["Measured".into()];
        assert_eq!(PointStatus::of(&p), None, "statuses are written in lower case only");
        p.extra = vec![];
        assert_eq!(PointStatus::of(&p), None);
        assert_eq!(Outcome::Pruned("past the plateau".into()).status(), PointStatus::Pruned);
    }
}
