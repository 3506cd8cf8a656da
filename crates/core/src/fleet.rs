//! Fleet files: the GPU types a cluster can plan on, with their profile tables and prices.
//!
//! `fleet.csv` has the header `gpu_type,prof_data,cost_per_hour,max_gpus,gpus_per_node`, one row
//! per GPU type: the catalogue type (see `parva catalogue`), the directory of its profile tables
//! (relative paths are read from the fleet file's own directory), its price per GPU-hour, the most
//! GPUs of the type the cluster has (empty: as many as needed) and how many sit in one of its
//! nodes (empty: 8). Lines starting with `#` are comments. A type is listed once: a map keeps one
//! GPU type per node and names it, so two rows of one type could not be told apart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{CsvInput, FormatError, Location};
use crate::limits;
use crate::mig::GpuType;

pub const FLEET_HEADER: [&str; 5] = ["gpu_type", "prof_data", "cost_per_hour", "max_gpus", "gpus_per_node"];
/// GPUs per node when the fleet file leaves `gpus_per_node` empty.
pub const DEFAULT_GPUS_PER_NODE: u32 = 8;
/// Most GPUs in one node: NVIDIA's largest nodes (NVL72 racks aside, counted per tray) hold 8-16.
pub const MAX_GPUS_PER_NODE: u32 = 64;

/// One GPU type of a fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetType {
    pub gpu: &'static GpuType,
    /// Directory of the type's profile tables (resolved against the fleet file's directory).
    pub prof_data: PathBuf,
    pub cost_per_hour: f64,
    /// Most GPUs of this type; `None`: as many as needed.
    pub max_gpus: Option<u32>,
    pub gpus_per_node: u32,
    /// Line of the fleet file the type is on (for messages).
    pub line: u64,
}

/// A fleet: its GPU types in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    pub types: Vec<FleetType>,
}

impl Fleet {
    pub fn read(path: &Path) -> Result<Fleet, FormatError> {
        let file = std::fs::File::open(path).map_err(|e| FormatError::io(path, "open fleet file", e))?;
        let input = CsvInput::read(file, path)?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Fleet::parse(input, path, &dir)
    }

    /// Parse a fleet file's bytes; relative `prof_data` paths are joined to `dir`.
    pub(crate) fn parse(input: CsvInput, path: &Path, dir: &Path) -> Result<Fleet, FormatError> {
        let mut rdr = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .comment(Some(b'#'))
            .flexible(true)
            .from_reader(input.bytes.as_slice());
        let headers = rdr.headers().map_err(|e| input.error(path, e))?.clone();
        let got: Vec<&str> = headers.iter().collect();
        if got.len() != FLEET_HEADER.len() || !got.iter().zip(FLEET_HEADER).all(|(g, w)| g.eq_ignore_ascii_case(w)) {
            return Err(FormatError::invalid(
                Location::line(path, input.line(headers.position())),
                format!("header must be `{}`; found `{}`", FLEET_HEADER.join(","), got.join(",")),
            ));
        }
        let mut types: Vec<FleetType> = Vec::new();
        let mut seen: BTreeMap<&'static str, u64> = BTreeMap::new();
        for rec in rdr.records() {
            let rec = rec.map_err(|e| input.error(path, e))?;
            let line = past_comments(&input.bytes, input.line(rec.position()));
            if rec.iter().all(str::is_empty) {
                continue;
            }
            if rec.len() != FLEET_HEADER.len() {
                return Err(FormatError::invalid(
                    Location::line(path, line),
                    format!("has {} fields; a fleet row has {} ({})", rec.len(), FLEET_HEADER.len(), FLEET_HEADER.join(",")),
                ));
            }
            if types.len() == limits::MAX_FLEET_TYPES {
                return Err(FormatError::invalid(
                    Location::line(path, line),
                    format!("a fleet has at most {} GPU types", limits::MAX_FLEET_TYPES),
                ));
            }
            let at = |i: usize| Location::field(path, line, FLEET_HEADER[i]);
            let field = |i: usize| rec.get(i).unwrap_or("");
            let gpu = GpuType::by_id(field(0)).map_err(|e| FormatError::invalid(at(0), e.to_string()))?;
            if let Some(first) = seen.insert(gpu.id, line) {
                return Err(FormatError::invalid(
                    at(0),
                    format!("{} is listed twice (first on line {first}); a fleet lists each GPU type once", gpu.id),
                ));
            }
            if field(1).is_empty() {
                return Err(FormatError::invalid(at(1), "is empty; give the directory of the type's profile tables"));
            }
            let prof = PathBuf::from(field(1));
            let prof_data = if prof.is_absolute() { prof } else { dir.join(prof) };
            let cost_per_hour = crate::profile::parse_in(field(2), at(2), &limits::COST_PER_HOUR)?;
            let max_gpus = match field(3) {
                "" => None,
                v => Some(crate::profile::parse_int(v, at(3), 1, limits::MAX_GPUS_LIMIT as i64)? as u32),
            };
            let gpus_per_node = match field(4) {
                "" => DEFAULT_GPUS_PER_NODE,
                v => crate::profile::parse_int(v, at(4), 1, MAX_GPUS_PER_NODE as i64)? as u32,
            };
            types.push(FleetType { gpu, prof_data, cost_per_hour, max_gpus, gpus_per_node, line });
        }
        if types.is_empty() {
            return Err(FormatError::invalid(Location::file(path), "lists no GPU types"));
        }
        Ok(Fleet { types })
    }
}

/// The csv crate places a record after comment lines at the first of them: the record's own line.
fn past_comments(bytes: &[u8], line: u64) -> u64 {
    let mut line = line;
    let mut lines = bytes.split(|b| *b == b'\n').skip(line.saturating_sub(1) as usize);
    while lines.next().is_some_and(|l| l.trim_ascii_start().starts_with(b"#")) {
        line += 1;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<Fleet, FormatError> {
        Fleet::parse(CsvInput::new(text.as_bytes().to_vec()), Path::new("fleet.csv"), Path::new("/data"))
    }

    #[test]
    fn reads_types_prices_limits_and_resolves_paths_from_the_files_directory() {
        let f = parse(
            "gpu_type,prof_data,cost_per_hour,max_gpus,gpus_per_node\n\
             # A100s we own\n\
             a100-80gb,a100,0,16,8\n\
             l4-24gb,/abs/l4,0.8,,\n",
        )
        .unwrap();
        assert_eq!(f.types.len(), 2);
        let (a, l) = (&f.types[0], &f.types[1]);
        assert_eq!((a.gpu.id, a.prof_data.as_path(), a.cost_per_hour, a.max_gpus, a.gpus_per_node, a.line), ("a100-80gb", Path::new("/data/a100"), 0.0, Some(16), 8, 3));
        assert_eq!((l.gpu.id, l.prof_data.as_path(), l.cost_per_hour, l.max_gpus, l.gpus_per_node), ("l4-24gb", Path::new("/abs/l4"), 0.8, None, 8));
    }

    #[test]
    fn names_file_line_field_and_rule_of_a_bad_row() {
        let cases = [
            ("gpu_type,prof_data,cost\n", "fleet.csv:1", "header must be"),
            ("gpu_type,prof_data,cost_per_hour,max_gpus,gpus_per_node\na100-80gb,d,-1,,\n", "fleet.csv:2: field `cost_per_hour`", "cost per GPU-hour must be"),
            ("gpu_type,prof_data,cost_per_hour,max_gpus,gpus_per_node\nnot-a-gpu,d,1,,\n", "fleet.csv:2: field `gpu_type`", "not-a-gpu"),
            ("gpu_type,prof_data,cost_per_hour,max_gpus,gpus_per_node\na100-80gb,d,1,0,\n", "fleet.csv:2: field `max_gpus`", "out of range"),
            ("gpu_type,prof_data,cost_per_hour,max_gpus,gpus_per_node\na100-80gb,d,1,,65\n", "fleet.csv:2: field `gpus_per_node`", "out of range"),
            ("gpu_type,prof_data,cost_per_hour,max_gpus,gpus_per_node\na100-80gb,,1,,\n", "fleet.csv:2: field `prof_data`", "is empty"),
            ("gpu_type,prof_data,cost_per_hour,max_gpus,gpus_per_node\na100-80gb,d,1\n", "fleet.csv:2", "has 3 fields"),
            ("gpu_type,prof_data,cost_per_hour,max_gpus,gpus_per_node\na100-80gb,d,1,,\na100-80gb,e,2,,\n", "fleet.csv:3: field `gpu_type`", "listed twice (first on line 2)"),
            ("gpu_type,prof_data,cost_per_hour,max_gpus,gpus_per_node\n", "fleet.csv", "lists no GPU types"),
        ];
        for (text, at, rule) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(at) && e.contains(rule), "{text:?}: {e}");
        }
    }

    #[test]
    fn more_types_than_the_limit_are_refused_at_the_first_extra_row() {
        let ids: Vec<&str> = crate::mig::catalogue().into_iter().map(|g| g.id).take(limits::MAX_FLEET_TYPES + 1).collect();
        assert_eq!(ids.len(), limits::MAX_FLEET_TYPES + 1, "the catalogue has enough types for this test");
        let mut text = FLEET_HEADER.join(",") + "\n";
        for id in &ids {
            text.push_str(&format!("{id},d,1,,\n"));
        }
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains(&format!("fleet.csv:{}", limits::MAX_FLEET_TYPES + 2)) && e.contains("at most 16 GPU types"), "{e}");
    }

    proptest! {
        /// Any bytes: a fleet or an error, never a panic; a fleet read is within every limit.
        #[test]
        fn any_input_reads_or_fails_cleanly(body in proptest::collection::vec(any::<u8>(), 0..400), header in any::<bool>()) {
            let mut bytes = if header { (FLEET_HEADER.join(",") + "\n").into_bytes() } else { Vec::new() };
            bytes.extend(body);
            if let Ok(f) = Fleet::parse(CsvInput::new(bytes), Path::new("f.csv"), Path::new("d")) {
                prop_assert!(!f.types.is_empty() && f.types.len() <= limits::MAX_FLEET_TYPES);
                for t in &f.types {
                    prop_assert!(limits::COST_PER_HOUR.check(t.cost_per_hour).is_ok());
                    prop_assert!((1..=MAX_GPUS_PER_NODE).contains(&t.gpus_per_node));
                    prop_assert!(t.max_gpus.is_none_or(|m| (1..=limits::MAX_GPUS_LIMIT).contains(&m)));
                }
            }
        }

        /// Rows written from values read back to the same values.
        #[test]
        fn written_rows_read_back(cost in 0.0f64..1000.0, max in proptest::option::of(1u32..100_000), per_node in 1u32..=64) {
            let text = format!(
                "{}\na100-80gb,p,{cost},{},{per_node}\n",
                FLEET_HEADER.join(","),
                max.map(|m| m.to_string()).unwrap_or_default()
            );
            let f = parse(&text).unwrap();
            prop_assert_eq!(f.types[0].cost_per_hour, cost);
            prop_assert_eq!(f.types[0].max_gpus, max);
            prop_assert_eq!(f.types[0].gpus_per_node, per_node);
        }
    }
}
