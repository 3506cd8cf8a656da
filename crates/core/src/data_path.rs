//! The serving data path's cost: `data_path.csv` in a profile set's directory, measured by
//! `scripts/bench/wire.sh` on the machine that serves.
//!
//! Between the client and the GPU a request's tensors are received, decoded, written into the
//! worker's buffers and its outputs sent back; that takes time the profile tables (which time the
//! model alone) do not hold. One row per wire (how clients send tensors):
//!
//! ```text
//! wire,per_request_us,per_mib_us
//! binary,180,210
//! shm,150,12
//! ```
//!
//! - `wire`: `binary` (binary tensor data over HTTP, tritonclient's and perf_analyzer's default),
//!   `json`, or `shm` (system shared memory);
//! - `per_request_us`: the time a request spends on the data path whatever its size, microseconds;
//! - `per_mib_us`: its time per MiB of the request's tensors (inputs and outputs), microseconds.
//!
//! `scripts/bench/wire.sh` measures both twice and writes the larger: the router's and workers'
//! CPU per request at a high rate, and the latency a lone request spends outside the model at a
//! low one (its median against the simulator's median without a data path: thread wake-ups and
//! hand-offs cost latency that no CPU counter shows; on the 2-core VM about 1 ms a request
//! against 0.14 ms of CPU).
//!
//! A request of `b` bytes on wire `w` costs `per_request_us + per_mib_us * b / 2^20`. The planner
//! plans each service to its SLO less that cost (as with a margin), and the simulator adds it to
//! every request's latency, so predicted p99 includes the data path. Without the file nothing is
//! added.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{CsvInput, FormatError, Location};

/// The file's name in a profile set's directory (not a profile table: `ProfileSet::read_dir`
/// skips it).
pub const FILE: &str = "data_path.csv";
/// Its header.
pub const HEADER: [&str; 3] = ["wire", "per_request_us", "per_mib_us"];
/// The wires a row may name.
pub const WIRES: [&str; 3] = ["binary", "json", "shm"];
/// Largest cost accepted per request and per MiB, microseconds (one second: far above any data
/// path, a bound against unit mistakes).
pub const MAX_COST_US: f64 = 1e6;

/// One wire's cost.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Cost {
    pub per_request_us: f64,
    pub per_mib_us: f64,
}

impl Cost {
    /// Seconds a request of `bytes` bytes of tensors spends on the data path.
    pub fn seconds(&self, bytes: u64) -> f64 {
        (self.per_request_us + self.per_mib_us * bytes as f64 / (1u64 << 20) as f64) / 1e6
    }
}

/// The rows of a `data_path.csv`, by wire.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DataPath {
    pub costs: BTreeMap<String, Cost>,
}

impl DataPath {
    /// Read `path` (bounded as every CSV parva reads; the header exactly [`HEADER`]).
    pub fn read(path: &Path) -> Result<DataPath, FormatError> {
        let file = std::fs::File::open(path).map_err(|e| FormatError::io(path, "open data-path table", e))?;
        Self::read_from(file, path)
    }

    /// As [`DataPath::read`], from any reader (`path` names it in messages).
    pub fn read_from(reader: impl std::io::Read, path: &Path) -> Result<DataPath, FormatError> {
        let mut out = DataPath::default();
        CsvInput::for_each_row(reader, path, &HEADER, |line, rec| {
            let field = |i: usize| rec.get(i).unwrap_or("");
            let bad = |i: usize, problem: String| FormatError::invalid(Location::field(path, line, HEADER[i]), problem);
            let wire = field(0).to_ascii_lowercase();
            if !WIRES.contains(&wire.as_str()) {
                return Err(bad(0, format!("{:?} is not a wire (one of {})", field(0), WIRES.join(", "))));
            }
            let us = |i: usize| -> Result<f64, FormatError> {
                let v: f64 = field(i).parse().map_err(|_| bad(i, format!("{:?} is not a number of microseconds", field(i))))?;
                if !(v.is_finite() && (0.0..=MAX_COST_US).contains(&v)) {
                    return Err(bad(i, format!("{v} is outside [0, {MAX_COST_US}] microseconds")));
                }
                Ok(v)
            };
            let cost = Cost { per_request_us: us(1)?, per_mib_us: us(2)? };
            if out.costs.insert(wire.clone(), cost).is_some() {
                return Err(FormatError::invalid(Location::line(path, line), format!("wire {wire} appears twice")));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The table of profile set `dir`, if it has one.
    pub fn read_dir(dir: &Path) -> Result<Option<DataPath>, FormatError> {
        let path = dir.join(FILE);
        if !path.exists() {
            return Ok(None);
        }
        Self::read(&path).map(Some)
    }

    /// Seconds a request of `bytes` bytes spends on the data path over `wire` (`None`: the table
    /// has no row for it).
    pub fn seconds(&self, wire: &str, bytes: u64) -> Option<f64> {
        self.costs.get(wire).map(|c| c.seconds(bytes))
    }

    /// The cost per service of `services` (service, bytes per request) over `wire`, seconds;
    /// empty when the table has no row for the wire.
    pub fn per_service<'a>(&self, wire: &str, services: impl IntoIterator<Item = (&'a str, u64)>) -> BTreeMap<String, f64> {
        services.into_iter().filter_map(|(s, bytes)| Some((s.to_string(), self.seconds(wire, bytes)?))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read(text: &str) -> Result<DataPath, FormatError> {
        DataPath::read_from(text.as_bytes(), Path::new("data_path.csv"))
    }

    #[test]
    fn a_request_costs_its_fixed_part_plus_its_bytes() {
        let d = read("wire,per_request_us,per_mib_us\nbinary,100,200\nSHM,50,10\n").unwrap();
        // 602,112 bytes (a resnet50 image) = 0.574 MiB.
        let s = d.seconds("binary", 602_112).unwrap();
        assert!((s - (100.0 + 200.0 * 602_112.0 / 1_048_576.0) / 1e6).abs() < 1e-12, "{s}");
        assert_eq!(d.seconds("shm", 0), Some(50e-6));
        assert_eq!(d.seconds("json", 10), None);
        let per = d.per_service("shm", [("a", 1 << 20), ("b", 0)]);
        assert_eq!(per.get("a"), Some(&60e-6));
        assert!(d.per_service("json", [("a", 1)]).is_empty());
    }

    #[test]
    fn bad_rows_are_refused_with_their_line_and_field() {
        for (text, want) in [
            ("wire,cost\n", "header must be `wire,per_request_us,per_mib_us`"),
            ("wire,per_request_us,per_mib_us\ngrpc,1,1\n", "data_path.csv:2: field `wire`: \"grpc\" is not a wire"),
            ("wire,per_request_us,per_mib_us\nshm,x,1\n", ":2: field `per_request_us`"),
            ("wire,per_request_us,per_mib_us\nshm,1,-1\n", ":2: field `per_mib_us`: -1 is outside"),
            ("wire,per_request_us,per_mib_us\nshm,1,NaN\n", "field `per_mib_us`"),
            ("wire,per_request_us,per_mib_us\nshm,1,1\nshm,2,2\n", ":3: wire shm appears twice"),
        ] {
            let e = read(text).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        }
        assert_eq!(DataPath::read_dir(Path::new("/nonexistent-parva-dir")).unwrap(), None);
    }

    proptest! {
        /// Whatever the bytes, the reader returns a table or an error, and every cost it returns
        /// is in range.
        #[test]
        fn the_reader_never_panics_and_keeps_costs_in_range(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut text = b"wire,per_request_us,per_mib_us\n".to_vec();
            text.extend(body);
            if let Ok(d) = DataPath::read_from(text.as_slice(), Path::new("d.csv")) {
                for c in d.costs.values() {
                    prop_assert!((0.0..=MAX_COST_US).contains(&c.per_request_us) && (0.0..=MAX_COST_US).contains(&c.per_mib_us));
                }
            }
        }

        #[test]
        fn rows_written_as_numbers_read_back(req in 0.0f64..1e6, mib in 0.0f64..1e6) {
            let d = read(&format!("wire,per_request_us,per_mib_us\nbinary,{req},{mib}\n")).unwrap();
            prop_assert_eq!(d.costs["binary"], Cost { per_request_us: req, per_mib_us: mib });
        }
    }
}
