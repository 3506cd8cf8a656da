//! Service-level objectives: what each service must sustain (request rate) and how fast
//! (latency SLO). Two input forms:
//!
//! - ParvaGPU's pair `SLO_req_rate.csv` + `SLO_latency.csv`: no header; row = scenario (1-based);
//!   column = model, in alphabetical order of the profile files; `N/A` = model absent; latency in
//!   milliseconds. Each present model becomes one service named after it.
//! - A service list `services.csv` with header `service,model,rate,slo_ms`; many services may share
//!   one model.

use std::collections::BTreeSet;
use std::path::Path;

use crate::error::{CsvInput, FormatError, Location};
use crate::profile::ProfileSet;

/// One inference service and its objective.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Service {
    pub name: String,
    pub model: String,
    /// Requests per second the service must sustain.
    pub rate: f64,
    /// Latency objective in milliseconds.
    pub slo_ms: f64,
}

pub const SERVICES_HEADER: [&str; 4] = ["service", "model", "rate", "slo_ms"];
pub const SLO_RATE_FILE: &str = "SLO_req_rate.csv";
pub const SLO_LATENCY_FILE: &str = "SLO_latency.csv";

/// Read a `services.csv` service list, checking every model against `profiles`.
pub fn read_services(path: &Path, profiles: &ProfileSet) -> Result<Vec<Service>, FormatError> {
    read_service_list(path, Some(profiles))
}

/// Read a `services.csv` service list; with `profiles`, every model must have a profile table.
pub fn read_service_list(path: &Path, profiles: Option<&ProfileSet>) -> Result<Vec<Service>, FormatError> {
    let file = std::fs::File::open(path).map_err(|e| FormatError::io(path, "open service list", e))?;
    let input = CsvInput::read(file, path)?;
    let mut rdr = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(input.bytes.as_slice());
    let headers = rdr.headers().map_err(|e| input.error(path, e))?.clone();
    let got: Vec<&str> = headers.iter().collect();
    if got.len() < 4 || !got.iter().zip(SERVICES_HEADER).all(|(g, w)| g.eq_ignore_ascii_case(w)) {
        return Err(FormatError::invalid(
            Location::line(path, 1),
            format!("header must be `{}`; found `{}`", SERVICES_HEADER.join(","), got.join(",")),
        ));
    }
    let mut services = Vec::new();
    let mut names = BTreeSet::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| input.error(path, e))?;
        let line = input.line(rec.position());
        if rec.iter().all(str::is_empty) {
            continue;
        }
        let at = |i: usize| Location::field(path, line, SERVICES_HEADER[i]);
        let name = rec.get(0).unwrap_or("").to_string();
        if name.is_empty() {
            return Err(FormatError::invalid(at(0), "service name is empty"));
        }
        if !names.insert(name.clone()) {
            return Err(FormatError::invalid(at(0), format!("service {name:?} is listed twice")));
        }
        let model = rec.get(1).unwrap_or("").to_string();
        if let Some(profiles) = profiles {
            check_model(profiles, &model, at(1))?;
        } else if model.is_empty() {
            return Err(FormatError::invalid(at(1), "model name is empty"));
        }
        let rate = parse_positive(rec.get(2).unwrap_or(""), at(2))?;
        let slo_ms = parse_positive(rec.get(3).unwrap_or(""), at(3))?;
        services.push(Service { name, model, rate, slo_ms });
    }
    if services.is_empty() {
        return Err(FormatError::invalid(Location::file(path), "lists no services"));
    }
    Ok(services)
}

/// Write a service list.
pub fn write_services(services: &[Service], w: impl std::io::Write) -> Result<(), csv::Error> {
    let mut wtr = csv::Writer::from_writer(w);
    wtr.write_record(SERVICES_HEADER)?;
    for s in services {
        wtr.write_record([
            s.name.as_str(),
            &s.model,
            &crate::profile::fmt_num(s.rate),
            &crate::profile::fmt_num(s.slo_ms),
        ])?;
    }
    wtr.flush()?;
    Ok(())
}

/// Read scenario `scenario` (1-based) of a ParvaGPU SLO pair in `dir`.
pub fn read_slo_pair(dir: &Path, scenario: usize, profiles: &ProfileSet) -> Result<Vec<Service>, FormatError> {
    let models = profiles.model_names();
    let rates = read_slo_row(&dir.join(SLO_RATE_FILE), scenario, models.len())?;
    let lats = read_slo_row(&dir.join(SLO_LATENCY_FILE), scenario, models.len())?;
    let mut services = Vec::new();
    for (i, model) in models.iter().enumerate() {
        match (&rates.values[i], &lats.values[i]) {
            (None, None) => {}
            (Some(rate), Some(slo)) => {
                if *rate > 0.0 {
                    services.push(Service { name: model.to_string(), model: model.to_string(), rate: *rate, slo_ms: *slo });
                }
            }
            (r, _) => {
                let (file, line) = if r.is_none() { (&rates.file, rates.line) } else { (&lats.file, lats.line) };
                let other = if r.is_none() { SLO_LATENCY_FILE } else { SLO_RATE_FILE };
                return Err(FormatError::invalid(
                    Location::field(file, line, format!("column {} ({model})", i + 1)),
                    format!("is N/A here but has a value in {other}; a model is absent in both files or in neither"),
                ));
            }
        }
    }
    if services.is_empty() {
        return Err(FormatError::invalid(
            Location::line(dir.join(SLO_RATE_FILE), rates.line),
            format!("scenario {scenario} has no service"),
        ));
    }
    Ok(services)
}

struct SloRow {
    file: std::path::PathBuf,
    line: u64,
    values: Vec<Option<f64>>,
}

fn read_slo_row(path: &Path, scenario: usize, columns: usize) -> Result<SloRow, FormatError> {
    let file = std::fs::File::open(path).map_err(|e| FormatError::io(path, "open SLO file", e))?;
    let input = CsvInput::read(file, path)?;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input.bytes.as_slice());
    let mut rows = 0usize;
    for rec in rdr.records() {
        let rec = rec.map_err(|e| input.error(path, e))?;
        if rec.iter().all(str::is_empty) {
            continue;
        }
        rows += 1;
        if rows != scenario {
            continue;
        }
        let line = input.line(rec.position());
        if rec.len() != columns {
            return Err(FormatError::invalid(
                Location::line(path, line),
                format!(
                    "has {} columns but the profile directory has {columns} model files; \
                     column j must be the j-th model in alphabetical order",
                    rec.len()
                ),
            ));
        }
        let mut values = Vec::with_capacity(columns);
        for (i, v) in rec.iter().enumerate() {
            if v.eq_ignore_ascii_case("N/A") || v.is_empty() {
                values.push(None);
            } else {
                let x = crate::profile::parse_nonneg(v, Location::field(path, line, format!("column {}", i + 1)))?;
                values.push(Some(x));
            }
        }
        return Ok(SloRow { file: path.to_path_buf(), line, values });
    }
    Err(FormatError::invalid(
        Location::file(path),
        format!("has {rows} scenario rows; scenario {scenario} asked for (scenarios are 1-based)"),
    ))
}

fn check_model(profiles: &ProfileSet, model: &str, at: Location) -> Result<(), FormatError> {
    if profiles.get(model).is_none() {
        return Err(FormatError::invalid(
            at,
            format!(
                "model {model:?} has no profile table in {} (models: {})",
                profiles.dir.display(),
                profiles.model_names().join(", ")
            ),
        ));
    }
    Ok(())
}

fn parse_positive(value: &str, at: Location) -> Result<f64, FormatError> {
    let v = crate::profile::parse_nonneg(value, at.clone())?;
    if v == 0.0 {
        return Err(FormatError::invalid(at, "must be > 0, found \"0\""));
    }
    Ok(v)
}
