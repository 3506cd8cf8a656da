//! Trace files for `parva verify --trace`: exact send times to replay instead of a fixed rate
//! (e.g. a recorded day, compressed).
//!
//! CSV with a header, `#` comment lines allowed:
//!
//! ```text
//! # a burst for photo-tags, then both services together
//! time_s,service
//! 0.000,photo-tags
//! 0.010,photo-tags
//! 0.500,
//! ```
//!
//! - `time_s`: when the request is due, seconds from the start of the run (a finite number
//!   >= 0). Rows need not be sorted.
//! - `service` (optional column): which service the request goes to; an empty value, or no
//!   `service` column at all, sends the request to every service.
//!
//! Fields are separated by commas and trimmed; there is no quoting (service names with commas
//! cannot be named). `--rate-scale k` replays the trace k times faster (every time is divided by k). Every service
//! being verified must get at least one request, and every named service must be one of them.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use parva_core::FormatError;
use parva_core::error::Location;

pub const TIME_COLUMN: &str = "time_s";
pub const SERVICE_COLUMN: &str = "service";

/// Read `path` for `services`; returns each service's send times in seconds, ascending, divided
/// by `rate_scale` (> 0).
pub fn read_trace(path: &Path, services: &[&str], rate_scale: f64) -> Result<BTreeMap<String, Vec<f64>>, FormatError> {
    let file = std::fs::File::open(path).map_err(|e| FormatError::io(path, "open trace", e))?;
    read_trace_from(file, path, services, rate_scale)
}

/// [`read_trace`] from any reader; `path` names it in errors.
pub fn read_trace_from(
    reader: impl std::io::Read,
    path: &Path,
    services: &[&str],
    rate_scale: f64,
) -> Result<BTreeMap<String, Vec<f64>>, FormatError> {
    let mut out: BTreeMap<String, Vec<f64>> = services.iter().map(|s| (s.to_string(), Vec::new())).collect();
    // Lines are read one at a time (a long trace need not fit in memory twice) and numbered here:
    // the `csv` crate's record positions do not count comment or blank lines.
    let mut with_service: Option<bool> = None;
    let mut rows = 0usize;
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let n = i as u64 + 1;
        let line = line.map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => FormatError::invalid(Location::line(path, n), "is not valid UTF-8"),
            _ => FormatError::io(path, "read trace", e),
        })?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let Some(with_service) = with_service else {
            let names: Vec<String> = fields.iter().map(|f| f.to_ascii_lowercase()).collect();
            with_service = Some(match names.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                [TIME_COLUMN] => false,
                [TIME_COLUMN, SERVICE_COLUMN] => true,
                _ => {
                    return Err(FormatError::invalid(
                        Location::line(path, n),
                        format!("header must be `{TIME_COLUMN}` or `{TIME_COLUMN},{SERVICE_COLUMN}`; found `{line}`"),
                    ));
                }
            });
            continue;
        };
        let want = if with_service { 2 } else { 1 };
        if fields.len() != want {
            return Err(FormatError::invalid(
                Location::line(path, n),
                format!("has {} fields, expected {want} like the header", fields.len()),
            ));
        }
        let value = fields[0];
        let at = || Location::field(path, n, TIME_COLUMN);
        let t: f64 = value.parse().map_err(|_| FormatError::invalid(at(), format!("expected seconds as a number, found {value:?}")))?;
        if !t.is_finite() || t < 0.0 {
            return Err(FormatError::invalid(at(), format!("must be a finite number of seconds >= 0, found {value:?}")));
        }
        let t = t / rate_scale;
        let service = if with_service { fields[1] } else { "" };
        if service.is_empty() {
            out.values_mut().for_each(|v| v.push(t));
        } else {
            let times = out.get_mut(service).ok_or_else(|| {
                FormatError::invalid(
                    Location::field(path, n, SERVICE_COLUMN),
                    format!("service {service:?} is not one of the services being verified ({})", services.join(", ")),
                )
            })?;
            times.push(t);
        }
        rows += 1;
    }
    if with_service.is_none() {
        return Err(FormatError::invalid(
            Location::file(path),
            format!("is empty; it needs the header `{TIME_COLUMN}` or `{TIME_COLUMN},{SERVICE_COLUMN}` and one row per request"),
        ));
    }
    if rows == 0 {
        return Err(FormatError::invalid(Location::file(path), "holds no requests (no rows after the header)"));
    }
    if let Some((name, _)) = out.iter().find(|(_, v)| v.is_empty()) {
        return Err(FormatError::invalid(
            Location::file(path),
            format!("has no request for service {name:?}; give it rows (or rows with an empty service, which go to every service), or leave it out of the service list"),
        ));
    }
    for v in out.values_mut() {
        v.sort_by(f64::total_cmp);
    }
    Ok(out)
}

#[cfg(test)]
mod rate_tests {
    use super::*;
    use parva_core::slo::Service;

    #[test]
    fn send_times_follow_the_rate_of_each_moment() {
        let list: Vec<Service> = ["a", "b"].iter().map(|n| Service { name: n.to_string(), model: "m".into(), rate: 100.0, slo_ms: 50.0 }).collect();
        let text = "time_s,service,rate\n0,a,100\n10,a,1000\n20,a,0\n";
        let trace = parva_core::trace::RateTrace::read_from(text.as_bytes(), Path::new("r.csv"), &list).unwrap();
        let t = times_from_rates(&trace, &["a", "b"], 30.0, 1.0, 7).unwrap();
        let count = |v: &[f64], a: f64, b: f64| v.iter().filter(|x| **x >= a && **x < b).count() as f64;
        let a = &t["a"];
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
        assert!((count(a, 0.0, 10.0) - 1000.0).abs() < 150.0, "{}", count(a, 0.0, 10.0));
        assert!((count(a, 10.0, 20.0) - 10_000.0).abs() < 500.0, "{}", count(a, 10.0, 20.0));
        assert_eq!(count(a, 20.0, 30.0), 0.0);
        // b has no row: the list's 100/s all along.
        assert!((t["b"].len() as f64 - 3000.0).abs() < 250.0);
        assert_eq!(times_from_rates(&trace, &["a", "b"], 30.0, 1.0, 7).unwrap(), t, "same seed, same times");
        let e = times_from_rates(&trace, &["a"], 30.0, 1e6, 7).unwrap_err();
        assert!(e.contains("more than the 5e7 verify holds"), "{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<BTreeMap<String, Vec<f64>>, FormatError> {
        read_trace_from(text.as_bytes(), Path::new("day.csv"), &["a", "b"], 1.0)
    }

    fn err(text: &str) -> String {
        read(text).unwrap_err().to_string()
    }

    #[test]
    fn rows_go_to_their_service_or_to_every_service_sorted_and_scaled() {
        let t = read("# comment\ntime_s,service\n0.5,a\n0.25,b\n0.1,\n\n1,a\n").unwrap();
        assert_eq!(t["a"], vec![0.1, 0.5, 1.0]);
        assert_eq!(t["b"], vec![0.1, 0.25]);
        let t = read_trace_from("TIME_S\n2\n4\n".as_bytes(), Path::new("x"), &["a", "b"], 2.0).unwrap();
        assert_eq!((t["a"].clone(), t["b"].clone()), (vec![1.0, 2.0], vec![1.0, 2.0]));
    }

    #[test]
    fn every_bad_input_is_named_by_file_line_field_and_value() {
        let e = err("when,service\n1,a\n");
        assert!(e.starts_with("day.csv:1:") && e.contains("time_s,service") && e.contains("`when,service`"), "{e}");
        let e = err("# header on line 2\ntime_s,svc\n1,a\n");
        assert!(e.starts_with("day.csv:2:") && e.contains("`time_s,svc`"), "{e}");
        let e = err("time_s,service\n0.1,a\nsoon,b\n");
        assert!(e.starts_with("day.csv:3: field `time_s`") && e.contains("\"soon\""), "{e}");
        let e = err("time_s,service\n-1,a\n");
        assert!(e.starts_with("day.csv:2: field `time_s`") && e.contains(">= 0") && e.contains("\"-1\""), "{e}");
        let e = err("time_s,service\nNaN,a\n");
        assert!(e.starts_with("day.csv:2: field `time_s`") && e.contains("\"NaN\""), "{e}");
        let e = err("time_s,service\ninf,a\n");
        assert!(e.contains("finite") && e.contains("\"inf\""), "{e}");
        let e = err("time_s,service\n1,a\n2,c\n");
        assert!(e.starts_with("day.csv:3: field `service`") && e.contains("\"c\"") && e.contains("a, b"), "{e}");
        let e = err("time_s,service\n1,a,extra\n");
        assert!(e.starts_with("day.csv:2:") && e.contains("3 fields, expected 2"), "{e}");
        let e = err("time_s,service\n");
        assert!(e.starts_with("day.csv:") && e.contains("no requests"), "{e}");
        let e = err("# only a comment\n\n");
        assert!(e.starts_with("day.csv: is empty") && e.contains("header"), "{e}");
        let e = read_trace_from(&b"time_s\n1\n\xff\n"[..], Path::new("day.csv"), &["a"], 1.0).unwrap_err().to_string();
        assert!(e.starts_with("day.csv:3:") && e.contains("UTF-8"), "{e}");
        // Line numbers count comment and blank lines.
        let e = err("# c\n\ntime_s,service\n# c\n\n1,a\nx,b\n");
        assert!(e.starts_with("day.csv:7: field `time_s`"), "{e}");
        let e = err("time_s,service\n1,a\n");
        assert!(e.contains("no request for service \"b\""), "{e}");
        let e = read_trace(Path::new("/nonexistent/trace.csv"), &["a"], 1.0).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/trace.csv") && e.contains("open trace"), "{e}");
    }
}

/// Most send times `parva verify --rates` draws (they are held in memory, 8 bytes each): 50
/// million, about 400 MB. A longer run at those rates is refused before anything is drawn.
pub const MAX_RATE_TRACE_REQUESTS: f64 = 50e6;

/// Send times drawn from a rate trace (`parva verify --rates`): per service, Poisson arrivals at
/// the trace's rate of each moment (x `rate_scale`) over `[0, duration_s)`, ascending. Each
/// service draws from its own seed ([`crate::schedule::service_seed`]); the same seed gives the
/// same times. Refused when more than [`MAX_RATE_TRACE_REQUESTS`] are expected.
pub fn times_from_rates(
    trace: &parva_core::trace::RateTrace,
    services: &[&str],
    duration_s: f64,
    rate_scale: f64,
    seed: u64,
) -> Result<BTreeMap<String, Vec<f64>>, String> {
    let expected: f64 = services.iter().map(|s| trace.average(s, 0.0, duration_s) * duration_s * rate_scale).sum();
    if expected.is_nan() || expected > MAX_RATE_TRACE_REQUESTS {
        return Err(format!(
            "the rate trace asks for about {expected:.3e} requests over {duration_s} s, more than the {MAX_RATE_TRACE_REQUESTS:.0e} \
             verify holds; shorten --duration or lower --rate-scale"
        ));
    }
    let mut out = BTreeMap::new();
    for (i, name) in services.iter().enumerate() {
        let mut rng = crate::schedule::SplitMix64(crate::schedule::service_seed(seed, i));
        let mut times = Vec::with_capacity(trace.average(name, 0.0, duration_s).mul_add(duration_s * rate_scale, 16.0) as usize);
        let steps = trace.steps.get(*name).cloned().unwrap_or_default();
        for (k, &(from, rate)) in steps.iter().enumerate() {
            let to = steps.get(k + 1).map_or(duration_s, |n| n.0).min(duration_s);
            let r = rate * rate_scale;
            if r <= 0.0 || to <= from {
                continue;
            }
            // Poisson arrivals are memoryless: each piece starts its own gaps at its start.
            let mut t = from + rng.exp(r);
            while t < to {
                times.push(t);
                t += rng.exp(r);
            }
        }
        out.insert(name.to_string(), times);
    }
    Ok(out)
}
