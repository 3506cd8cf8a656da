//! Service-level objectives: what each service must sustain (request rate) and how fast
//! (latency SLO). Two input forms:
//!
//! - ParvaGPU's pair `SLO_req_rate.csv` + `SLO_latency.csv`: no header; row = scenario (1-based);
//!   column = model, in alphabetical order of the profile files; `N/A` = model absent; latency in
//!   milliseconds. Each present model becomes one service named after it.
//! - A service list `services.csv` with header `service,model,rate,slo_ms`; many services may share
//!   one model.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{CsvInput, FormatError, Location};
use crate::limits;
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

/// The serving margin: how much of each SLO the plan keeps for what its latency model does not
/// see (HTTP, the client, IPC and scheduling on the host; on a shared GPU, interference between
/// processes). A service is planned, batched and admitted against its *target*, SLO − margin,
/// and verified against the SLO itself. Written `5` or `5ms` (milliseconds) or `5%` (of each SLO).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Margin {
    Ms(f64),
    Percent(f64),
}

/// Why a margin is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MarginError {
    #[error("margin {0:?}: write milliseconds (`5`, `5ms`) or a percentage of the SLO (`5%`)")]
    Syntax(String),
    #[error("margin {value}: {rule}")]
    Range { value: String, rule: String },
    #[error("service {service:?}: a margin of {margin_ms} ms leaves nothing of its SLO of {slo_ms} ms (the target must be positive)")]
    NoTarget { service: String, slo_ms: f64, margin_ms: f64 },
}

/// Largest margin in milliseconds (one hour, the largest SLO) and in percent (below 100 %, so a
/// target is left).
pub const MAX_MARGIN_MS: f64 = 3_600_000.0;
pub const MAX_MARGIN_PERCENT: f64 = 90.0;

impl Margin {
    /// No margin: plan to the SLO itself (ParvaGPU's rule).
    pub const NONE: Margin = Margin::Ms(0.0);
    /// parva's default, 5 % of each SLO: measured through the real router with emulated workers,
    /// p99 ran 2-6 ms (2-5 %) above the simulator's at SLOs of 100-300 ms (README, "Planning
    /// margin"). Shared-GPU interference is larger and needs a larger margin or MIG isolation.
    pub const DEFAULT: Margin = Margin::Percent(5.0);

    /// The margin of a service with an SLO of `slo_ms`, milliseconds.
    pub fn of(&self, slo_ms: f64) -> f64 {
        match *self {
            Margin::Ms(ms) => ms,
            Margin::Percent(p) => slo_ms * p / 100.0,
        }
    }

    pub fn is_none(&self) -> bool {
        self.of(1.0) == 0.0
    }

    /// The target a service is planned to: its SLO minus the margin, refused when nothing is left.
    pub fn target(&self, service: &str, slo_ms: f64) -> Result<f64, MarginError> {
        let m = self.of(slo_ms);
        if m >= slo_ms {
            return Err(MarginError::NoTarget { service: service.to_string(), slo_ms, margin_ms: m });
        }
        Ok(slo_ms - m)
    }
}

impl std::str::FromStr for Margin {
    type Err = MarginError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let (num, pct) = match t.strip_suffix('%') {
            Some(n) => (n, true),
            None => (t.strip_suffix("ms").unwrap_or(t), false),
        };
        let v: f64 = num.trim().parse().map_err(|_| MarginError::Syntax(s.to_string()))?;
        let (max, unit) = if pct { (MAX_MARGIN_PERCENT, "%") } else { (MAX_MARGIN_MS, " ms") };
        if !(v.is_finite() && (0.0..=max).contains(&v)) {
            return Err(MarginError::Range { value: s.to_string(), rule: format!("must be in 0..={max}{unit}") });
        }
        Ok(if pct { Margin::Percent(v) } else { Margin::Ms(v) })
    }
}

impl std::fmt::Display for Margin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Margin::Ms(ms) => write!(f, "{ms} ms"),
            Margin::Percent(p) => write!(f, "{p}%"),
        }
    }
}

#[cfg(test)]
mod margin_tests {
    use super::*;

    #[test]
    fn a_margin_is_milliseconds_or_a_percentage_of_each_slo() {
        assert_eq!("5".parse::<Margin>(), Ok(Margin::Ms(5.0)));
        assert_eq!(" 2.5ms".parse::<Margin>(), Ok(Margin::Ms(2.5)));
        assert_eq!("5%".parse::<Margin>(), Ok(Margin::Percent(5.0)));
        assert_eq!(Margin::Percent(5.0).of(200.0), 10.0);
        assert_eq!(Margin::Ms(3.0).of(200.0), 3.0);
        assert_eq!(Margin::Percent(5.0).target("a", 200.0), Ok(190.0));
        assert!(Margin::NONE.is_none() && !Margin::DEFAULT.is_none());
        assert_eq!(Margin::DEFAULT.to_string(), "5%");
        assert_eq!(Margin::Ms(3.0).to_string().parse::<Margin>(), Ok(Margin::Ms(3.0)));
    }

    #[test]
    fn a_margin_that_leaves_no_target_or_is_out_of_range_is_refused() {
        assert!(matches!("5s".parse::<Margin>(), Err(MarginError::Syntax(v)) if v == "5s"));
        assert!(matches!("-1".parse::<Margin>(), Err(MarginError::Range { rule, .. }) if rule.contains("0..=3600000 ms")));
        assert!(matches!("95%".parse::<Margin>(), Err(MarginError::Range { rule, .. }) if rule.contains("0..=90%")));
        assert!(matches!("NaN".parse::<Margin>(), Err(MarginError::Range { .. })));
        assert_eq!(
            Margin::Ms(10.0).target("ocr", 10.0),
            Err(MarginError::NoTarget { service: "ocr".into(), slo_ms: 10.0, margin_ms: 10.0 })
        );
    }
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
    let mut names = BTreeMap::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| input.error(path, e))?;
        let line = input.line(rec.position());
        if rec.iter().all(str::is_empty) {
            continue;
        }
        let at = |i: usize| Location::field(path, line, SERVICES_HEADER[i]);
        let name = rec.get(0).unwrap_or("").to_string();
        crate::names::check_at("service name", &name, at(0))?;
        if let Some(first) = names.insert(name.clone(), line) {
            return Err(FormatError::invalid(
                at(0),
                format!("service {name:?} is listed twice (first on line {first}); a service has one model, rate and SLO"),
            ));
        }
        let model = rec.get(1).unwrap_or("").to_string();
        if let Some(profiles) = profiles {
            check_model(profiles, &model, at(1))?;
        }
        crate::names::check_at("model name", &model, at(1))?;
        let rate = crate::profile::parse_in(rec.get(2).unwrap_or(""), at(2), &limits::RATE)?;
        let slo_ms = crate::profile::parse_in(rec.get(3).unwrap_or(""), at(3), &limits::SLO_MS)?;
        services.push(Service { name, model, rate, slo_ms });
    }
    if services.is_empty() {
        return Err(FormatError::invalid(Location::file(path), "lists no services"));
    }
    Ok(services)
}

/// How a service list differs from a deployment map, service by service (rates are not
/// compared: a list gives new rates by design). Regression (issue 34): `replan --from base.csv
/// --services subset.csv` destroyed every segment of the services missing from the list, and
/// `simulate`, `serve` and `deploy --follow` took another model or a 1 ms SLO without a word.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MapDifferences {
    /// Services the map serves that the list lacks.
    pub missing: Vec<String>,
    /// Services the list has that the map does not serve.
    pub extra: Vec<String>,
    /// (service, map's model, list's model).
    pub models: Vec<(String, String, String)>,
    /// (service, map's SLO ms, list's SLO ms), where the map records one.
    pub slos: Vec<(String, f64, f64)>,
}

impl MapDifferences {
    /// Compare `services` with the serving segments of `map` (of node `node` only, when given).
    pub fn between(map: &crate::DeploymentMap, node: Option<u32>, services: &[Service]) -> MapDifferences {
        let mut served: BTreeMap<&str, (&str, Option<f64>)> = BTreeMap::new();
        for seg in map.segments.iter().filter(|s| node.is_none_or(|n| s.node == n)) {
            served.entry(seg.service.as_str()).or_insert((seg.model.as_str(), seg.slo_ms));
        }
        let mut d = MapDifferences::default();
        for (name, (model, slo)) in &served {
            match services.iter().find(|s| s.name == *name) {
                None => d.missing.push(name.to_string()),
                Some(s) => {
                    if s.model != *model {
                        d.models.push((name.to_string(), model.to_string(), s.model.clone()));
                    }
                    if let Some(m) = slo.filter(|m| (m - s.slo_ms).abs() > 1e-9 * m.abs().max(1.0)) {
                        d.slos.push((name.to_string(), m, s.slo_ms));
                    }
                }
            }
        }
        d.extra = services.iter().filter(|s| !served.contains_key(s.name.as_str())).map(|s| s.name.clone()).collect();
        d
    }

    /// The differences of the kinds asked for, one phrase each; empty when there are none.
    pub fn describe(&self, missing: bool, extra: bool, models: bool, slos: bool) -> Vec<String> {
        let list = |v: &[String]| {
            let shown: Vec<&str> = v.iter().take(10).map(String::as_str).collect();
            let more = if v.len() > 10 { format!(" and {} more", v.len() - 10) } else { String::new() };
            format!("{}{more}", shown.join(", "))
        };
        let mut out = Vec::new();
        if missing && !self.missing.is_empty() {
            out.push(format!("the map serves {} service(s) the list lacks: {}", self.missing.len(), list(&self.missing)));
        }
        if extra && !self.extra.is_empty() {
            out.push(format!("the list has {} service(s) the map does not serve: {}", self.extra.len(), list(&self.extra)));
        }
        if models {
            out.extend(self.models.iter().take(10).map(|(s, m, l)| format!("service {s}: model {m} in the map, {l} in the list")));
        }
        if slos {
            out.extend(self.slos.iter().take(10).map(|(s, m, l)| format!("service {s}: SLO {m} ms in the map, {l} ms in the list")));
        }
        out
    }
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

/// Read scenario `scenario` (1-based) of a ParvaGPU SLO pair in `dir`: the services with a
/// positive rate (see [`read_slo_scenario`] for those with a rate of 0).
pub fn read_slo_pair(dir: &Path, scenario: usize, profiles: &ProfileSet) -> Result<Vec<Service>, FormatError> {
    Ok(read_slo_scenario(dir, scenario, profiles)?.services)
}

/// One scenario of a ParvaGPU SLO pair.
#[derive(Debug, Clone, PartialEq)]
pub struct SloScenario {
    /// Models present with a positive rate, one service each.
    pub services: Vec<Service>,
    /// Models present (an SLO given) with a rate of 0: no traffic in this scenario; a planner
    /// reports them and plans nothing for them.
    pub zero_rate: Vec<Service>,
}

/// Read scenario `scenario` (1-based) of a ParvaGPU SLO pair in `dir`. Both files are checked
/// whole, not just the row used: no header line, every row with one column per model file, the
/// same number of rows in both, `N/A` in the same cells of both, every rate in
/// [`limits::RATE`] (or 0) and every SLO in [`limits::SLO_MS`].
pub fn read_slo_scenario(dir: &Path, scenario: usize, profiles: &ProfileSet) -> Result<SloScenario, FormatError> {
    let models = profiles.model_names();
    let rate_path = dir.join(SLO_RATE_FILE);
    let lat_path = dir.join(SLO_LATENCY_FILE);
    let rates = read_slo_file(&rate_path, models.len(), Cell::Rate)?;
    let lats = read_slo_file(&lat_path, models.len(), Cell::Latency)?;
    if rates.len() != lats.len() {
        let (short, long) = if rates.len() < lats.len() { (&rate_path, &lats) } else { (&lat_path, &rates) };
        return Err(FormatError::invalid(
            Location::file(short),
            format!(
                "has {} scenario rows but {} has {} (line {} is the first without a partner); the two files of \
                 an SLO pair have one row per scenario each",
                rates.len().min(lats.len()),
                if rates.len() < lats.len() { SLO_LATENCY_FILE } else { SLO_RATE_FILE },
                rates.len().max(lats.len()),
                long[rates.len().min(lats.len())].line,
            ),
        ));
    }
    for (r, l) in rates.iter().zip(&lats) {
        for (i, model) in models.iter().enumerate() {
            if r.values[i].is_none() != l.values[i].is_none() {
                let (path, line, other) =
                    if r.values[i].is_none() { (&rate_path, r.line, SLO_LATENCY_FILE) } else { (&lat_path, l.line, SLO_RATE_FILE) };
                return Err(FormatError::invalid(
                    Location::field(path, line, format!("column {} ({model})", i + 1)),
                    format!("is N/A here but has a value in {other}; a model is absent in both files or in neither"),
                ));
            }
        }
    }
    let Some(index) = scenario.checked_sub(1).filter(|i| *i < rates.len()) else {
        return Err(FormatError::invalid(
            Location::file(&rate_path),
            format!("has {} scenario rows; scenario {scenario} asked for (scenarios are 1-based)", rates.len()),
        ));
    };
    let (r, l) = (&rates[index], &lats[index]);
    let mut out = SloScenario { services: Vec::new(), zero_rate: Vec::new() };
    for (i, model) in models.iter().enumerate() {
        if let (Some(rate), Some(slo_ms)) = (r.values[i], l.values[i]) {
            let svc = Service { name: model.to_string(), model: model.to_string(), rate, slo_ms };
            if rate > 0.0 { out.services.push(svc) } else { out.zero_rate.push(svc) }
        }
    }
    if out.services.is_empty() {
        let zero = if out.zero_rate.is_empty() { String::new() } else { " with a rate above 0".to_string() };
        return Err(FormatError::invalid(
            Location::line(&rate_path, r.line),
            format!("scenario {scenario} has no service{zero}"),
        ));
    }
    Ok(out)
}

struct SloRow {
    line: u64,
    values: Vec<Option<f64>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Cell {
    Rate,
    Latency,
}

/// Every row of one SLO file, checked.
fn read_slo_file(path: &Path, columns: usize, cell: Cell) -> Result<Vec<SloRow>, FormatError> {
    let file = std::fs::File::open(path).map_err(|e| FormatError::io(path, "open SLO file", e))?;
    let input = CsvInput::read(file, path)?;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input.bytes.as_slice());
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| input.error(path, e))?;
        if rec.iter().all(str::is_empty) {
            continue;
        }
        let line = input.line(rec.position());
        let number = |v: &str| v.is_empty() || v.eq_ignore_ascii_case("N/A") || v.parse::<f64>().is_ok();
        if rows.is_empty() && !rec.iter().all(number) {
            return Err(FormatError::invalid(
                Location::line(path, line),
                format!(
                    "holds `{}`, not numbers: ParvaGPU SLO files have no header line (row i is scenario i, column j \
                     the j-th model file in alphabetical order); remove this line",
                    rec.iter().collect::<Vec<_>>().join(",")
                ),
            ));
        }
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
                continue;
            }
            let at = Location::field(path, line, format!("column {}", i + 1));
            let x = match cell {
                Cell::Rate => {
                    let x = crate::profile::parse_nonneg(v, at.clone())?;
                    if x > 0.0 {
                        crate::profile::parse_in(v, at, &limits::RATE)?;
                    }
                    x
                }
                Cell::Latency => crate::profile::parse_in(v, at, &limits::SLO_MS)?,
            };
            values.push(Some(x));
        }
        rows.push(SloRow { line, values });
    }
    if rows.is_empty() {
        return Err(FormatError::invalid(Location::file(path), "holds no scenario rows"));
    }
    Ok(rows)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::ModelProfile;

    /// A profile set of `n` models `m0..`, empty tables (only the names matter here).
    fn profiles(n: usize) -> ProfileSet {
        let models = (0..n)
            .map(|i| {
                let name = format!("m{i}");
                (name.clone(), ModelProfile { model: name, share_keyed: false, points: Vec::new(), extra_headers: Vec::new() })
            })
            .collect();
        ProfileSet { dir: "mem".into(), models }
    }

    fn pair(rates: &str, lats: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(SLO_RATE_FILE), rates).unwrap();
        std::fs::write(d.path().join(SLO_LATENCY_FILE), lats).unwrap();
        d
    }

    fn pair_err(rates: &str, lats: &str, n: usize) -> (FormatError, tempfile::TempDir) {
        let d = pair(rates, lats);
        (read_slo_scenario(d.path(), n, &profiles(2)).unwrap_err(), d)
    }

    #[test]
    fn reads_a_scenario_and_keeps_zero_rates_apart() {
        // No trailing newline, as ParvaGPU's own files.
        let d = pair("10,N/A\n0,20", "50,N/A\n60,70");
        let s = read_slo_scenario(d.path(), 2, &profiles(2)).unwrap();
        assert_eq!(s.services, vec![Service { name: "m1".into(), model: "m1".into(), rate: 20.0, slo_ms: 70.0 }]);
        assert_eq!(s.zero_rate, vec![Service { name: "m0".into(), model: "m0".into(), rate: 0.0, slo_ms: 60.0 }]);
        assert_eq!(read_slo_pair(d.path(), 2, &profiles(2)).unwrap(), s.services);
    }

    /// Issue 11: an SLO file with a header line shifted every scenario by one row.
    #[test]
    fn slo_file_with_a_header_line_is_refused() {
        let (e, _d) = pair_err("m0,m1\n10,20\n", "50,60\n", 1);
        let m = e.to_string();
        assert!(m.contains("SLO_req_rate.csv:1: holds `m0,m1`, not numbers: ParvaGPU SLO files have no header line"), "{m}");
        let (e, _d) = pair_err("10,20\n", "lat_a,lat_b\n50,60\n", 1);
        assert!(e.to_string().contains("SLO_latency.csv:1: holds `lat_a,lat_b`"), "{e}");
    }

    /// Issue 11: SLO files whose row counts differ were read row by row, so the shorter one was
    /// only noticed (if ever) for a scenario past its end.
    #[test]
    fn slo_files_with_different_row_counts_are_refused() {
        let (e, _d) = pair_err("10,20\n11,21\n12,22\n", "50,60\n51,61\n", 1);
        let m = e.to_string();
        assert!(m.contains("SLO_latency.csv: has 2 scenario rows but SLO_req_rate.csv has 3 (line 3 is the first without a partner)"), "{m}");
    }

    #[test]
    fn slo_rows_with_other_column_counts_are_refused_even_when_not_used() {
        let (e, _d) = pair_err("10,20\n11,21,5\n", "50,60\n51,61\n", 1);
        assert!(e.to_string().contains("SLO_req_rate.csv:2: has 3 columns but the profile directory has 2 model files"), "{e}");
        // N/A in one file only, on a row other than the one asked for.
        let (e, _d) = pair_err("10,20\n11,N/A\n", "50,60\n51,61\n", 1);
        assert!(e.to_string().contains("SLO_req_rate.csv:2: field `column 2 (m1)`: is N/A here"), "{e}");
    }

    #[test]
    fn slo_values_outside_their_ranges_are_refused() {
        let (e, _d) = pair_err("10,1e300\n", "50,60\n", 1);
        assert!(e.to_string().contains("SLO_req_rate.csv:1: field `column 2`: request rate must be a finite number in (0, 1e7]"), "{e}");
        let (e, _d) = pair_err("10,20\n", "50,inf\n", 1);
        assert!(e.to_string().contains("SLO_latency.csv:1: field `column 2`: latency SLO must be a finite number"), "{e}");
        let (e, _d) = pair_err("10,-2\n", "50,60\n", 1);
        assert!(e.to_string().contains("column 2") && e.to_string().contains("\"-2\""), "{e}");
        let (e, _d) = pair_err("0,0\n", "50,60\n", 1);
        assert!(e.to_string().contains("scenario 1 has no service with a rate above 0"), "{e}");
        let (e, _d) = pair_err("10,20\n", "50,60\n", 0);
        assert!(e.to_string().contains("has 1 scenario rows; scenario 0 asked for"), "{e}");
    }

    fn list(text: &str) -> Result<Vec<Service>, FormatError> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.csv");
        std::fs::write(&p, text).unwrap();
        read_service_list(&p, None)
    }

    #[test]
    fn service_list_refuses_duplicates_and_values_outside_their_ranges() {
        let e = list("service,model,rate,slo_ms\na,m,1,10\nb,m,1,10\na,m,1,10\n").unwrap_err();
        assert!(e.to_string().contains("s.csv:4: field `service`: service \"a\" is listed twice (first on line 2)"), "{e}");
        for (row, field, want) in [
            ("a,m,0,10", "rate", "found 0"),
            ("a,m,NaN,10", "rate", "found NaN"),
            ("a,m,2e7,10", "rate", "(0, 1e7] requests/s, found 2e7"),
            ("a,m,1,inf", "slo_ms", "found inf"),
            ("a,m,1,0.001", "slo_ms", "[0.01, 3.6e6] ms, found 0.001"),
        ] {
            let e = list(&format!("service,model,rate,slo_ms\n{row}\n")).unwrap_err();
            let loc = e.location().unwrap();
            assert_eq!((loc.line, loc.field.as_deref()), (Some(2), Some(field)), "{row}: {e}");
            assert!(e.to_string().contains(want), "{row}: {e}");
        }
    }

    /// A services.csv naming a model without a profile table is refused at that row's `model`,
    /// naming the model and the ones there are; a wrong header, an empty list and an empty model
    /// (without profiles) are refused too, and what `write_services` writes reads back equal.
    #[test]
    fn service_list_models_are_checked_against_the_profiles_and_the_list_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.csv");
        std::fs::write(&p, "service,model,rate,slo_ms\na,m0,1,10\nb,m7,2,20\n").unwrap();
        let e = read_services(&p, &profiles(2)).unwrap_err();
        let loc = e.location().unwrap();
        assert_eq!((loc.line, loc.field.as_deref()), (Some(3), Some("model")), "{e}");
        assert!(e.to_string().contains("\"m7\"") && e.to_string().contains("m0, m1"), "{e}");
        // Without profiles any model name is taken.
        assert_eq!(read_service_list(&p, None).unwrap()[1], Service { name: "b".into(), model: "m7".into(), rate: 2.0, slo_ms: 20.0 });
        let e = list("name,model,rate,slo_ms\na,m,1,10\n").unwrap_err();
        assert!(e.to_string().contains("header must be `service,model,rate,slo_ms`; found `name,model,rate,slo_ms`"), "{e}");
        assert!(list("service,model,rate,slo_ms\n").unwrap_err().to_string().contains("lists no services"));
        let e = list("service,model,rate,slo_ms\na,,1,10\n").unwrap_err();
        assert_eq!(e.location().and_then(|l| l.field.clone()).as_deref(), Some("model"), "{e}");
        let services = vec![
            Service { name: "a.b".into(), model: "m0".into(), rate: 0.5, slo_ms: 12.25 },
            Service { name: "c_d-2".into(), model: "m1".into(), rate: 1e6, slo_ms: 3.6e6 },
        ];
        let mut out = Vec::new();
        write_services(&services, &mut out).unwrap();
        std::fs::write(&p, &out).unwrap();
        assert_eq!(read_services(&p, &profiles(2)).unwrap(), services);
        // Names that are no label value or file name are refused where they are read (issue 33).
        for bad in ["\"a b\"", "\"c,d\"", "../x", &"n".repeat(64)] {
            let e = list(&format!("service,model,rate,slo_ms\n{bad},m0,1,10\n")).unwrap_err();
            assert_eq!(e.location().and_then(|l| l.field.clone()).as_deref(), Some("service"), "{e}");
            assert!(e.to_string().contains("a name is 1 to 63 characters"), "{e}");
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn service() -> impl Strategy<Value = (String, String, f64, f64)> {
            ("[a-z]([a-z0-9_.-]{0,11}[a-z0-9])?", "[a-z][a-z0-9]{0,8}", 0.001f64..1e7, 0.01f64..3.6e6)
                .prop_map(|(n, m, r, s)| (n, m, (r * 1000.0).round().max(1.0) / 1000.0, (s * 100.0).round().max(1.0) / 100.0))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            /// Any bytes, as a service list or as either file of an SLO pair: an answer, never a
            /// panic (run longer with PROPTEST_CASES=100000).
            #[test]
            fn arbitrary_bytes_never_panic(a in proptest::collection::vec(any::<u8>(), 0..400), b in proptest::collection::vec(any::<u8>(), 0..400)) {
                let d = tempfile::tempdir().unwrap();
                let p = d.path().join("s.csv");
                std::fs::write(&p, &a).unwrap();
                let _ = read_service_list(&p, None);
                let mut with_header = b"service,model,rate,slo_ms\n".to_vec();
                with_header.extend(&a);
                std::fs::write(&p, &with_header).unwrap();
                let _ = read_service_list(&p, None);
                std::fs::write(d.path().join(SLO_RATE_FILE), &a).unwrap();
                std::fs::write(d.path().join(SLO_LATENCY_FILE), &b).unwrap();
                for n in 0..3 {
                    let _ = read_slo_scenario(d.path(), n, &profiles(2));
                }
            }

            /// A generated service list, written and read back, is the same list.
            #[test]
            fn written_service_lists_read_back_the_same(raw in proptest::collection::btree_map("[a-z]([a-z0-9_-]{0,9}[a-z0-9])?", service(), 1..20)) {
                let services: Vec<Service> = raw.into_iter().map(|(name, (_, model, rate, slo_ms))| Service { name, model, rate, slo_ms }).collect();
                let mut out = Vec::new();
                write_services(&services, &mut out).unwrap();
                let d = tempfile::tempdir().unwrap();
                let p = d.path().join("s.csv");
                std::fs::write(&p, &out).unwrap();
                prop_assert_eq!(read_service_list(&p, None).unwrap(), services);
            }

            /// One numeric field made invalid: the error names its line and field.
            #[test]
            fn a_bad_field_is_named_by_line_and_field(
                raw in proptest::collection::btree_map("[a-z]([a-z0-9_-]{0,9}[a-z0-9])?", service(), 1..10),
                row in any::<prop::sample::Index>(),
                field in 2usize..4,
                bad in prop::sample::select(vec!["x", "-1", "0", "NaN", "inf", "1e400", "1e9"]),
            ) {
                let services: Vec<Service> = raw.into_iter().map(|(name, (_, model, rate, slo_ms))| Service { name, model, rate, slo_ms }).collect();
                let mut out = Vec::new();
                write_services(&services, &mut out).unwrap();
                let text = String::from_utf8(out).unwrap();
                let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
                let r = 1 + row.index(lines.len() - 1);
                let mut fields: Vec<String> = lines[r].split(',').map(str::to_string).collect();
                fields[field] = bad.to_string();
                lines[r] = fields.join(",");
                let d = tempfile::tempdir().unwrap();
                let p = d.path().join("s.csv");
                std::fs::write(&p, lines.join("\n")).unwrap();
                let e = read_service_list(&p, None).unwrap_err();
                let loc = e.location().unwrap();
                prop_assert_eq!(loc.line, Some(r as u64 + 1), "{}", e);
                prop_assert_eq!(loc.field.as_deref(), Some(SERVICES_HEADER[field]), "{}", e);
            }

            /// SLO pairs: a generated pair reads back every scenario; one cell made invalid is named.
            #[test]
            fn slo_pairs_read_back_and_bad_cells_are_named(
                rows in proptest::collection::vec(proptest::collection::vec(prop::option::of((1u32..100_000, 1u32..100_000)), 3), 1..6),
                pick in any::<prop::sample::Index>(),
                col in 0usize..3,
                bad in prop::sample::select(vec!["x", "-1", "NaN", "inf", "1e400"]),
                in_rates in any::<bool>(),
            ) {
                let show = |f: &dyn Fn(&(u32, u32)) -> u32| rows.iter().map(|r| r.iter().map(|c| c.as_ref().map_or("N/A".to_string(), |c| f(c).to_string())).collect::<Vec<_>>()).collect::<Vec<_>>();
                let mut rates = show(&|c| c.0);
                let mut lats = show(&|c| c.1);
                let join = |t: &Vec<Vec<String>>| t.iter().map(|r| r.join(",")).collect::<Vec<_>>().join("\n");
                let d = pair(&join(&rates), &join(&lats));
                for (i, r) in rows.iter().enumerate() {
                    let got = read_slo_scenario(d.path(), i + 1, &profiles(3));
                    let want: Vec<Service> = r.iter().enumerate().filter_map(|(j, c)| c.map(|(rate, slo)| Service {
                        name: format!("m{j}"), model: format!("m{j}"), rate: rate as f64, slo_ms: slo as f64,
                    })).collect();
                    if want.is_empty() {
                        prop_assert!(got.unwrap_err().to_string().contains("has no service"));
                    } else {
                        prop_assert_eq!(got.unwrap().services, want);
                    }
                }
                let r = pick.index(rows.len());
                let (t, file) = if in_rates { (&mut rates, SLO_RATE_FILE) } else { (&mut lats, SLO_LATENCY_FILE) };
                t[r][col] = bad.to_string();
                let d = pair(&join(&rates), &join(&lats));
                let e = read_slo_scenario(d.path(), 1, &profiles(3)).unwrap_err();
                let loc = e.location().unwrap();
                prop_assert!(loc.file.ends_with(file), "{}", e);
                prop_assert_eq!(loc.line, Some(r as u64 + 1), "{}", e);
                if r == 0 && bad == "x" {
                    // Text on the first line reads as a header, and is refused as one.
                    prop_assert!(e.to_string().contains("no header line"), "{}", e);
                    return Ok(());
                }
                prop_assert!(loc.field.as_deref().is_some_and(|f| f.starts_with(&format!("column {}", col + 1))), "{}", e);
            }
        }
    }
}
