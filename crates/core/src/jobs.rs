//! Best-effort jobs: training and offline batch inference that run on the GPCs inference leaves
//! idle, and give them back the moment inference needs them.
//!
//! A job list is a CSV with header `job,model,kind,min_gpcs,max_gpcs,priority`:
//!
//! - `job`: the job's name, unique in the list (it names the map rows and metrics of its instances);
//! - `model`: the model it runs (a profile table for it must exist when planning);
//! - `kind`: `train` (SGD steps on synthetic data of the model's input shape) or `batch` (offline
//!   inference at the largest batch its instance holds);
//! - `min_gpcs`, `max_gpcs`: the smallest and largest MIG instance (in GPCs, 1..=7) one of its
//!   instances may take; a job runs as many independent instances as the idle GPCs allow (MIG
//!   instances share no memory, so a train job's instances train independently, e.g. a sweep);
//! - `priority`: an integer in 0..=1000; higher is served first, ties in file order.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{CsvInput, FormatError, Location};
use crate::profile::{ProfileSet, parse_int};

pub const JOBS_HEADER: [&str; 6] = ["job", "model", "kind", "min_gpcs", "max_gpcs", "priority"];

/// Highest job priority.
pub const MAX_PRIORITY: u32 = 1000;

/// Most jobs in one list (each is placed on every idle slot it may take, so the placement is
/// O(jobs x GPUs)).
pub const MAX_JOBS: usize = 10_000;

/// What a best-effort job does with its instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Forward, loss, backward and an optimizer step on synthetic data; checkpoints and resumes.
    Train,
    /// Offline inference at the largest batch the instance holds.
    Batch,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Train => "train",
            JobKind::Batch => "batch",
        }
    }

    pub fn parse(v: &str) -> Option<JobKind> {
        match v.to_ascii_lowercase().as_str() {
            "train" => Some(JobKind::Train),
            "batch" => Some(JobKind::Batch),
            _ => None,
        }
    }
}

/// One best-effort job of a job list.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Job {
    pub name: String,
    pub model: String,
    pub kind: JobKind,
    pub min_gpcs: u8,
    pub max_gpcs: u8,
    pub priority: u32,
}

/// Refuse a job named like one of `services` (of the list `path`): a map names a job instance in
/// its `service` column, so the two would be confused (issue 34: `plan --jobs` wrote a map that
/// `validate` and `simulate` then refused).
pub fn check_names_apart(jobs: &[Job], services: &[crate::slo::Service], path: &Path) -> Result<(), FormatError> {
    for j in jobs {
        if services.iter().any(|s| s.name == j.name) {
            return Err(FormatError::invalid(
                Location::file(path),
                format!("job {:?} has the name of a service; a map names jobs and services in one column: rename the job", j.name),
            ));
        }
    }
    Ok(())
}

/// Read a job list; with `profiles`, every model must have a profile table.
pub fn read_jobs(path: &Path, profiles: Option<&ProfileSet>) -> Result<Vec<Job>, FormatError> {
    let file = std::fs::File::open(path).map_err(|e| FormatError::io(path, "open job list", e))?;
    read_jobs_from(file, path, profiles)
}

pub fn read_jobs_from(reader: impl std::io::Read, path: &Path, profiles: Option<&ProfileSet>) -> Result<Vec<Job>, FormatError> {
    let input = CsvInput::read(reader, path)?;
    let mut rdr = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(input.bytes.as_slice());
    let headers = rdr.headers().map_err(|e| input.error(path, e))?.clone();
    let got: Vec<&str> = headers.iter().collect();
    if got.len() != JOBS_HEADER.len() || !got.iter().zip(JOBS_HEADER).all(|(g, w)| g.eq_ignore_ascii_case(w)) {
        return Err(FormatError::invalid(
            Location::line(path, 1),
            format!("header must be `{}`; found `{}`", JOBS_HEADER.join(","), got.join(",")),
        ));
    }
    let mut jobs = Vec::new();
    let mut names = BTreeMap::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| input.error(path, e))?;
        let line = input.line(rec.position());
        if rec.iter().all(str::is_empty) {
            continue;
        }
        if jobs.len() == MAX_JOBS {
            return Err(FormatError::invalid(Location::line(path, line), format!("more than {MAX_JOBS} jobs; split the list")));
        }
        let at = |i: usize| Location::field(path, line, JOBS_HEADER[i]);
        let f = |i: usize| rec.get(i).unwrap_or("");
        let name = f(0).to_string();
        crate::names::check_at("job name", &name, at(0))?;
        if let Some(first) = names.insert(name.clone(), line) {
            return Err(FormatError::invalid(at(0), format!("job {name:?} is listed twice (first on line {first})")));
        }
        let model = f(1).to_string();
        crate::names::check_at("model name", &model, at(1))?;
        match profiles {
            Some(p) if p.get(&model).is_none() => {
                return Err(FormatError::invalid(
                    at(1),
                    format!("model {model:?} has no profile table in {} (models: {})", p.dir.display(), p.model_names().join(", ")),
                ));
            }
            _ => {}
        }
        let kind = JobKind::parse(f(2))
            .ok_or_else(|| FormatError::invalid(at(2), format!("kind must be `train` or `batch`; found {:?}", f(2))))?;
        let min_gpcs = parse_int(f(3), at(3), 1, 7)? as u8;
        let max_gpcs = parse_int(f(4), at(4), 1, 7)? as u8;
        if max_gpcs < min_gpcs {
            return Err(FormatError::invalid(at(4), format!("max_gpcs {max_gpcs} is below min_gpcs {min_gpcs}")));
        }
        let priority = parse_int(f(5), at(5), 0, MAX_PRIORITY as i64)? as u32;
        jobs.push(Job { name, model, kind, min_gpcs, max_gpcs, priority });
    }
    if jobs.is_empty() {
        return Err(FormatError::invalid(Location::file(path), "lists no jobs"));
    }
    if !input.ends_with_newline() {
        return Err(FormatError::invalid(
            Location::line(path, input.last_line()),
            "the last row has no line end, so the file may have been cut short inside it; check the row and end it with a newline",
        ));
    }
    Ok(jobs)
}

/// Write a job list.
pub fn write_jobs(jobs: &[Job], w: impl std::io::Write) -> Result<(), csv::Error> {
    let mut wtr = csv::Writer::from_writer(w);
    wtr.write_record(JOBS_HEADER)?;
    for j in jobs {
        wtr.write_record([
            j.name.as_str(),
            &j.model,
            j.kind.as_str(),
            &j.min_gpcs.to_string(),
            &j.max_gpcs.to_string(),
            &j.priority.to_string(),
        ])?;
    }
    wtr.flush()?;
    Ok(())
}

/// The jobs in the order they are served: priority, highest first, then file order.
pub fn by_priority(jobs: &[Job]) -> Vec<&Job> {
    let mut order: Vec<&Job> = jobs.iter().collect();
    order.sort_by_key(|j| std::cmp::Reverse(j.priority));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<Job>, FormatError> {
        read_jobs_from(text.as_bytes(), Path::new("jobs.csv"), None)
    }

    const HEAD: &str = "job,model,kind,min_gpcs,max_gpcs,priority\n";

    #[test]
    fn reads_a_job_list_and_orders_it_by_priority() {
        let jobs = read(&format!("{HEAD}ft,bert,train,1,7,10\nscore, resnet50 ,BATCH,2,4,20\nsweep,bert,train,1,1,10\n")).unwrap();
        assert_eq!(jobs.len(), 3);
        assert_eq!(jobs[1], Job { name: "score".into(), model: "resnet50".into(), kind: JobKind::Batch, min_gpcs: 2, max_gpcs: 4, priority: 20 });
        let order: Vec<&str> = by_priority(&jobs).iter().map(|j| j.name.as_str()).collect();
        assert_eq!(order, ["score", "ft", "sweep"]);
    }

    #[test]
    fn every_bad_row_is_named_by_line_and_field() {
        for (row, want) in [
            (",bert,train,1,7,1", "jobs.csv:2: field `job`: job name \"\" is empty"),
            ("a,,train,1,7,1", "jobs.csv:2: field `model`: model name \"\" is empty"),
            ("a,bert,serve,1,7,1", "jobs.csv:2: field `kind`: kind must be `train` or `batch`; found \"serve\""),
            ("a,bert,train,0,7,1", "jobs.csv:2: field `min_gpcs`"),
            ("a,bert,train,1,8,1", "jobs.csv:2: field `max_gpcs`"),
            ("a,bert,train,4,2,1", "jobs.csv:2: field `max_gpcs`: max_gpcs 2 is below min_gpcs 4"),
            ("a,bert,train,1,7,1001", "jobs.csv:2: field `priority`"),
            ("a,bert,train,1,7,x", "jobs.csv:2: field `priority`"),
        ] {
            let e = read(&format!("{HEAD}{row}\n")).unwrap_err().to_string();
            assert!(e.starts_with(want), "{row}: {e}");
        }
        let e = read(&format!("{HEAD}a,bert,train,1,7,1\na,bert,batch,1,7,1\n")).unwrap_err().to_string();
        assert_eq!(e, "jobs.csv:3: field `job`: job \"a\" is listed twice (first on line 2)");
        let e = read("job,model,kind\n").unwrap_err().to_string();
        assert!(e.starts_with("jobs.csv:1: header must be `job,model,kind,min_gpcs,max_gpcs,priority`"), "{e}");
        assert_eq!(read(HEAD).unwrap_err().to_string(), "jobs.csv: lists no jobs");
        let e = read(&format!("{HEAD}a,bert,train,1,7,1")).unwrap_err().to_string();
        assert!(e.contains("no line end"), "{e}");
    }

    #[test]
    fn a_model_without_a_profile_table_is_refused() {
        let profiles = ProfileSet { dir: "prof".into(), models: BTreeMap::new() };
        let e = read_jobs_from(format!("{HEAD}a,bert,train,1,7,1\n").as_bytes(), Path::new("jobs.csv"), Some(&profiles)).unwrap_err();
        assert!(e.to_string().starts_with("jobs.csv:2: field `model`: model \"bert\" has no profile table in prof"), "{e}");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn job() -> impl Strategy<Value = (String, bool, u8, u8, u32)> {
            ("[a-z][a-z0-9]{0,8}", any::<bool>(), 1u8..=7, 0u8..=6, 0u32..=MAX_PRIORITY)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            /// Any bytes, with or without the header: an answer, never a panic.
            #[test]
            fn arbitrary_bytes_never_panic(a in proptest::collection::vec(any::<u8>(), 0..400)) {
                let _ = read_jobs_from(a.as_slice(), Path::new("j.csv"), None);
                let mut with_header = HEAD.as_bytes().to_vec();
                with_header.extend(&a);
                let _ = read_jobs_from(with_header.as_slice(), Path::new("j.csv"), None);
            }

            /// A generated job list, written and read back, is the same list.
            #[test]
            fn written_job_lists_read_back_the_same(raw in proptest::collection::btree_map("[a-z]([a-z0-9_-]{0,9}[a-z0-9])?", job(), 1..20)) {
                let jobs: Vec<Job> = raw
                    .into_iter()
                    .map(|(name, (model, train, min, extra, priority))| Job {
                        name,
                        model,
                        kind: if train { JobKind::Train } else { JobKind::Batch },
                        min_gpcs: min,
                        max_gpcs: (min + extra).min(7),
                        priority,
                    })
                    .collect();
                let mut out = Vec::new();
                write_jobs(&jobs, &mut out).unwrap();
                prop_assert_eq!(read_jobs_from(out.as_slice(), Path::new("j.csv"), None).unwrap(), jobs);
            }
        }
    }
}
