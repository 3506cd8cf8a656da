//! Rate traces: how each service's request rate changes over time.
//!
//! A trace is a CSV file with the header `time_s,service,rate`: from `time_s` seconds on, the
//! service's rate is `rate` requests/s, until its next row (piecewise constant). Rows may come in
//! any order; a service may not have two rows at the same time. Before a service's first row, and
//! for a listed service with no row at all, its rate is the service list's. A rate of 0 means no
//! traffic. Times are in `[0, 366 days]`; a trace exported from a gateway's logs (requests per
//! service per minute, say) is written as one row per service per minute with the rate of that
//! minute.
//!
//! ```text
//! time_s,service,rate
//! 0,photo-tags,1200
//! 0,ocr-detect,300
//! 3600,photo-tags,1800
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{CsvInput, FormatError, Location};
use crate::limits::{self, Range};
use crate::slo::Service;

/// The header of a rate trace.
pub const TRACE_HEADER: [&str; 3] = ["time_s", "service", "rate"];

/// Times in a trace, seconds: up to a year (and never negative).
pub const TRACE_TIME_S: Range = Range { what: "trace time", min: 0.0, max: 366.0 * 86_400.0, unit: "s", min_inclusive: true };
/// A rate in a trace, requests/s: 0 (no traffic) up to the largest service rate.
pub const TRACE_RATE: Range = Range { what: "request rate", min: 0.0, max: limits::RATE.max, unit: "requests/s", min_inclusive: true };

/// A rate trace over a service list.
#[derive(Debug, Clone, PartialEq)]
pub struct RateTrace {
    /// Per listed service, its steps `(from time_s, rate)` sorted by time; the first at 0 (the
    /// list's rate when the trace starts later).
    pub steps: BTreeMap<String, Vec<(f64, f64)>>,
}

impl RateTrace {
    /// Read a trace for `services` (every service of the trace must be listed).
    pub fn read(path: &Path, services: &[Service]) -> Result<RateTrace, FormatError> {
        let file = std::fs::File::open(path).map_err(|e| FormatError::io(path, "open rate trace", e))?;
        Self::read_from(file, path, services)
    }

    /// As [`RateTrace::read`], from any reader (`path` names it in messages).
    pub fn read_from(reader: impl std::io::Read, path: &Path, services: &[Service]) -> Result<RateTrace, FormatError> {
        let input = CsvInput::read(reader, path)?;
        let mut rdr = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(input.bytes.as_slice());
        let headers = rdr.headers().map_err(|e| input.error(path, e))?.clone();
        let got: Vec<&str> = headers.iter().collect();
        if got.len() != 3 || !got.iter().zip(TRACE_HEADER).all(|(g, w)| g.eq_ignore_ascii_case(w)) {
            return Err(FormatError::invalid(
                Location::line(path, 1),
                format!("header must be `{}`; found `{}`", TRACE_HEADER.join(","), got.join(",")),
            ));
        }
        let listed: BTreeMap<&str, f64> = services.iter().map(|s| (s.name.as_str(), s.rate)).collect();
        let mut rows: BTreeMap<String, BTreeMap<u64, (f64, f64, u64)>> = BTreeMap::new();
        for rec in rdr.records() {
            let rec = rec.map_err(|e| input.error(path, e))?;
            let line = input.line(rec.position());
            if rec.iter().all(str::is_empty) {
                continue;
            }
            let at = |i: usize| Location::field(path, line, TRACE_HEADER[i]);
            let time = crate::profile::parse_in(rec.get(0).unwrap_or(""), at(0), &TRACE_TIME_S)?;
            let name = rec.get(1).unwrap_or("");
            if !listed.contains_key(name) {
                let known: Vec<&str> = listed.keys().copied().take(8).collect();
                return Err(FormatError::invalid(
                    at(1),
                    format!("service {name:?} is not in the service list (it has {}: {}{})", listed.len(), known.join(", "), if listed.len() > 8 { ", ..." } else { "" }),
                ));
            }
            let rate = crate::profile::parse_in(rec.get(2).unwrap_or(""), at(2), &TRACE_RATE)?;
            let steps = rows.entry(name.to_string()).or_default();
            if let Some((_, _, first)) = steps.insert(time.to_bits(), (time, rate, line)) {
                return Err(FormatError::invalid(at(0), format!("service {name:?} has two rates at {time} s (the other on line {first})")));
            }
        }
        if rows.is_empty() {
            return Err(FormatError::invalid(Location::file(path), "has no rows"));
        }
        let mut steps = BTreeMap::new();
        for s in services {
            let mut v: Vec<(f64, f64)> = rows.remove(&s.name).map(|m| m.into_values().map(|(t, r, _)| (t, r)).collect()).unwrap_or_default();
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            if v.first().is_none_or(|f| f.0 > 0.0) {
                v.insert(0, (0.0, s.rate));
            }
            steps.insert(s.name.clone(), v);
        }
        Ok(RateTrace { steps })
    }

    /// The latest time a rate changes, seconds.
    pub fn last_change_s(&self) -> f64 {
        self.steps.values().filter_map(|v| v.last()).map(|s| s.0).fold(0.0, f64::max)
    }

    /// Every time some rate changes, sorted, without duplicates.
    pub fn breakpoints(&self) -> Vec<f64> {
        let mut t: Vec<f64> = self.steps.values().flatten().map(|s| s.0).collect();
        t.sort_by(f64::total_cmp);
        t.dedup();
        t
    }

    /// The rate of `service` at time `t` (0 for a service the trace does not know).
    pub fn rate(&self, service: &str, t: f64) -> f64 {
        let Some(v) = self.steps.get(service) else { return 0.0 };
        let i = v.partition_point(|s| s.0 <= t);
        v.get(i.saturating_sub(1)).map_or(0.0, |s| s.1)
    }

    /// The time-average rate of `service` over `[from, to)` (its rate at `from` when empty).
    pub fn average(&self, service: &str, from: f64, to: f64) -> f64 {
        if to <= from {
            return self.rate(service, from);
        }
        self.pieces(service, from, to).iter().map(|(a, b, r)| (b - a) * r).sum::<f64>() / (to - from)
    }

    /// The highest rate of `service` over `[from, to)`.
    pub fn peak(&self, service: &str, from: f64, to: f64) -> f64 {
        self.pieces(service, from, to).iter().map(|p| p.2).fold(self.rate(service, from), f64::max)
    }

    /// The constant pieces `(from, to, rate)` of `service` within `[from, to)`.
    fn pieces(&self, service: &str, from: f64, to: f64) -> Vec<(f64, f64, f64)> {
        let Some(v) = self.steps.get(service) else { return Vec::new() };
        let mut out = Vec::new();
        for (i, &(t, r)) in v.iter().enumerate() {
            let end = v.get(i + 1).map_or(f64::INFINITY, |n| n.0);
            let (a, b) = (t.max(from), end.min(to));
            if b > a {
                out.push((a, b, r));
            }
        }
        out
    }

    /// Write the trace (one row per step).
    pub fn write_to(&self, w: impl std::io::Write) -> Result<(), csv::Error> {
        let mut wtr = csv::Writer::from_writer(w);
        wtr.write_record(TRACE_HEADER)?;
        for (name, v) in &self.steps {
            for (t, r) in v {
                wtr.write_record([crate::profile::fmt_num(*t).as_str(), name, &crate::profile::fmt_num(*r)])?;
            }
        }
        wtr.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn services() -> Vec<Service> {
        ["a", "b"].iter().map(|n| Service { name: n.to_string(), model: "m".into(), rate: 10.0, slo_ms: 100.0 }).collect()
    }

    fn read(text: &str) -> Result<RateTrace, FormatError> {
        RateTrace::read_from(text.as_bytes(), Path::new("t.csv"), &services())
    }

    #[test]
    fn rates_are_piecewise_constant_from_each_row_on_and_the_list_rate_before() {
        let t = read("time_s,service,rate\n60,a,100\n0,b,5\n120,a,0\n\n30,b,7.5\n").unwrap();
        assert_eq!(t.rate("a", 0.0), 10.0, "the list's rate before the first row");
        assert_eq!(t.rate("a", 60.0), 100.0);
        assert_eq!(t.rate("a", 119.9), 100.0);
        assert_eq!(t.rate("a", 1e6), 0.0);
        assert_eq!(t.rate("b", 29.0), 5.0);
        assert_eq!(t.rate("b", 30.0), 7.5);
        assert_eq!(t.breakpoints(), vec![0.0, 30.0, 60.0, 120.0]);
        assert_eq!(t.last_change_s(), 120.0);
        assert!((t.average("a", 0.0, 120.0) - (60.0 * 10.0 + 60.0 * 100.0) / 120.0).abs() < 1e-9);
        assert_eq!(t.peak("a", 0.0, 61.0), 100.0);
        assert_eq!(t.peak("a", 0.0, 60.0), 10.0);
    }

    #[test]
    fn bad_rows_name_file_line_field_and_rule() {
        for (text, want) in [
            ("time,service,rate\n", "t.csv:1: header must be `time_s,service,rate`; found `time,service,rate`"),
            ("time_s,service,rate\n", "t.csv: has no rows"),
            ("time_s,service,rate\n0,a,1\n-1,a,2\n", "t.csv:3: field `time_s`: trace time must be a finite number in [0, 3.16224e7] s, found -1"),
            ("time_s,service,rate\n0,zz,1\n", "t.csv:2: field `service`: service \"zz\" is not in the service list (it has 2: a, b)"),
            ("time_s,service,rate\n0,a,nan\n", "t.csv:2: field `rate`: request rate must be a finite number in [0, 1e7] requests/s, found NaN"),
            ("time_s,service,rate\n0,a,1\n\n0,a,2\n", "t.csv:4: field `time_s`: service \"a\" has two rates at 0 s (the other on line 2)"),
            ("time_s,service,rate\n0,a\n", "t.csv:2: has 2 fields, expected 3 like the header"),
        ] {
            assert_eq!(read(text).unwrap_err().to_string(), want, "{text:?}");
        }
    }

    #[test]
    fn a_trace_written_reads_back_the_same() {
        let t = read("time_s,service,rate\n60,a,100\n0,b,5\n120,a,0.25\n").unwrap();
        let mut out = Vec::new();
        t.write_to(&mut out).unwrap();
        assert_eq!(RateTrace::read_from(out.as_slice(), Path::new("w.csv"), &services()).unwrap(), t);
    }

    proptest! {
        #[test]
        fn any_bytes_are_read_or_refused_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = RateTrace::read_from(bytes.as_slice(), Path::new("f.csv"), &services());
        }

        #[test]
        fn any_valid_rows_read_back_at_every_time(rows in proptest::collection::vec((0u32..1000, 0usize..2, 0u32..5000), 1..40)) {
            let mut text = String::from("time_s,service,rate\n");
            let mut seen = std::collections::BTreeSet::new();
            for (t, s, r) in &rows {
                if seen.insert((*t, *s)) {
                    text.push_str(&format!("{t},{},{r}\n", ["a", "b"][*s]));
                }
            }
            let tr = read(&text).unwrap();
            for (t, s, _) in &rows {
                let name = ["a", "b"][*s];
                // The rate at a row's time is the last row at or before it.
                let want = seen.iter().filter(|(tt, ss)| ss == s && tt <= t).max().map(|(tt, _)| {
                    rows.iter().find(|(t2, s2, _)| t2 == tt && s2 == s).unwrap().2 as f64
                });
                prop_assert_eq!(tr.rate(name, *t as f64), want.unwrap());
            }
        }
    }
}
