//! Deployment maps: which segment (MIG instance running one service's model in `num_proc` MPS
//! processes at one batch size) goes on which node, GPU and placement.
//!
//! parva writes `node,gpu,service,model,placement,instance_size,batch_size,num_proc` followed by
//! `profile,gpu_type,throughput,rate,slo_ms` (the MIG profile name, the catalogue GPU type, the
//! segment's profiled capacity in samples/s, and the service's request rate and latency SLO, so
//! that a map alone is enough to serve, simulate and verify). It also reads ParvaGPU's deploy CSVs
//! (`Num instance,Num GPU,Model,Placement,Instance size,Batch size,Num proc`, "Num instance" being
//! the node), where the service is the model.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{CsvInput, FormatError, Location};
use crate::limits::{self, Range};
use crate::mig::{GiProfile, GpuType, Placement};
use crate::profile::{fmt_num, parse_in, parse_int};

pub const MAP_HEADER: [&str; 8] =
    ["node", "gpu", "service", "model", "placement", "instance_size", "batch_size", "num_proc"];
pub const MAP_EXTRA_HEADER: [&str; 5] = ["profile", "gpu_type", "throughput", "rate", "slo_ms"];
/// The optional last column of maps planned with a serving margin.
pub const MAP_MARGIN_COLUMN: &str = "margin_ms";
/// The optional columns of maps with best-effort rows (see [`JobSlot`]): `role` is `serve` or
/// `best-effort`; a best-effort row's `job_kind` is `train` or `batch` and `priority` its job's.
pub const MAP_ROLE_COLUMNS: [&str; 3] = ["role", "job_kind", "priority"];
pub const ROLE_SERVE: &str = "serve";
pub const ROLE_BEST_EFFORT: &str = "best-effort";
pub const PARVAGPU_HEADER: [&str; 7] =
    ["Num instance", "Num GPU", "Model", "Placement", "Instance size", "Batch size", "Num proc"];

/// One segment of a deployment map.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Segment {
    pub node: u32,
    pub gpu: u32,
    pub service: String,
    pub model: String,
    /// MIG placement start in memory slices.
    pub placement: u8,
    /// Instance size in GPCs.
    pub instance_size: u8,
    pub batch_size: u32,
    pub num_proc: u32,
    /// MIG profile name (e.g. `3g.40gb`), when known.
    pub profile: Option<String>,
    /// Catalogue GPU type, when known.
    pub gpu_type: Option<String>,
    /// Profiled capacity of the whole segment, samples/s.
    pub throughput: Option<f64>,
    /// The service's request rate (whole service, not this segment's share).
    pub rate: Option<f64>,
    /// The service's latency SLO in ms.
    pub slo_ms: Option<f64>,
    /// The serving margin the service was planned with, ms (see [`crate::slo::Margin`]): the
    /// router batches and admits against `slo_ms - margin_ms`; verify checks `slo_ms`. Written only
    /// by maps planned with a margin (column `margin_ms`, after the others); empty means none.
    pub margin_ms: Option<f64>,
}

impl Segment {
    /// The latency the router batches and admits against: the SLO `slo_ms` less this segment's
    /// planning margin (never below a tenth of the SLO, whatever a hand-edited map says).
    pub fn target_ms(&self, slo_ms: f64) -> f64 {
        (slo_ms - self.margin_ms.unwrap_or(0.0)).max(slo_ms / 10.0)
    }
}

/// A best-effort instance of a map: a MIG instance lent to a job (training or batch inference) on
/// GPCs inference does not use; inference takes it back first when it needs capacity. In the file
/// it is a row with `role` `best-effort`: `service` is the job's name, `batch_size` its batch,
/// `num_proc` 1, `throughput` its expected samples/s, `rate` and `slo_ms` empty.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct JobSlot {
    pub node: u32,
    pub gpu: u32,
    pub job: String,
    pub model: String,
    pub kind: crate::jobs::JobKind,
    pub placement: u8,
    pub instance_size: u8,
    pub batch_size: u32,
    pub priority: u32,
    pub profile: Option<String>,
    pub gpu_type: Option<String>,
    /// Expected samples/s of the instance (an estimate for training, see the planner).
    pub throughput: Option<f64>,
}

impl JobSlot {
    /// The instance as a map row a node deploys (one process; no rate, SLO or capacity), so that
    /// MIG instances and MPS daemons are made for jobs as for serving segments.
    pub fn as_segment(&self) -> Segment {
        Segment {
            node: self.node,
            gpu: self.gpu,
            service: self.job.clone(),
            model: self.model.clone(),
            placement: self.placement,
            instance_size: self.instance_size,
            batch_size: self.batch_size,
            num_proc: 1,
            profile: self.profile.clone(),
            gpu_type: self.gpu_type.clone(),
            throughput: None,
            rate: None,
            slo_ms: None,
            margin_ms: None,
        }
    }
}

/// Which file format a map was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapFormat {
    Parva,
    ParvaGpu,
}

/// A whole deployment map.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeploymentMap {
    /// The serving segments (role `serve`).
    pub segments: Vec<Segment>,
    /// Best-effort instances (role `best-effort`); never routed to.
    pub jobs: Vec<JobSlot>,
}

impl DeploymentMap {
    /// Read a map in either format (recognised by its header).
    pub fn read(path: &Path) -> Result<(DeploymentMap, MapFormat), FormatError> {
        let file = std::fs::File::open(path).map_err(|e| FormatError::io(path, "open deployment map", e))?;
        Self::read_from(file, path)
    }

    pub fn read_from(reader: impl std::io::Read, path: &Path) -> Result<(DeploymentMap, MapFormat), FormatError> {
        let input = CsvInput::read(reader, path)?;
        let mut rdr = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(input.bytes.as_slice());
        let headers: Vec<String> = rdr.headers().map_err(|e| input.error(path, e))?.iter().map(str::to_string).collect();
        let starts_with = |want: &[&str]| {
            headers.len() >= want.len() && headers.iter().zip(want).all(|(h, w)| h.eq_ignore_ascii_case(w))
        };
        let format = if starts_with(&MAP_HEADER) {
            MapFormat::Parva
        } else if starts_with(&PARVAGPU_HEADER) {
            MapFormat::ParvaGpu
        } else {
            return Err(FormatError::invalid(
                Location::line(path, 1),
                format!(
                    "header must start with `{}` (parva) or `{}` (ParvaGPU); found `{}`",
                    MAP_HEADER.join(","),
                    PARVAGPU_HEADER.join(","),
                    headers.join(",")
                ),
            ));
        };
        let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
        let extra: Vec<Option<usize>> = MAP_EXTRA_HEADER.iter().map(|h| col(h)).collect();
        let margin_col = col(MAP_MARGIN_COLUMN);
        let role_cols: Vec<Option<usize>> = MAP_ROLE_COLUMNS.iter().map(|h| col(h)).collect();
        let mut segments = Vec::new();
        let mut jobs: Vec<JobSlot> = Vec::new();
        let mut job_lines: BTreeMap<String, u64> = BTreeMap::new();
        let mut consistency = Consistency::default();
        for rec in rdr.records() {
            let rec = rec.map_err(|e| input.error(path, e))?;
            let line = input.line(rec.position());
            if rec.iter().all(str::is_empty) {
                continue;
            }
            let names: &[&str] = match format {
                MapFormat::Parva => &MAP_HEADER,
                MapFormat::ParvaGpu => &PARVAGPU_HEADER,
            };
            let f = |i: usize| rec.get(i).unwrap_or("");
            let at = |i: usize| Location::field(path, line, names[i]);
            let int = |i: usize, min: i64, max: i64| parse_int(f(i), at(i), min, max);
            let opt_num = |name: usize, range: &Range| -> Result<Option<f64>, FormatError> {
                match extra[name].map(|i| rec.get(i).unwrap_or("")) {
                    None | Some("") => Ok(None),
                    Some(v) => parse_in(v, Location::field(path, line, MAP_EXTRA_HEADER[name]), range).map(Some),
                }
            };
            let opt_str = |name: usize| extra[name].and_then(|i| rec.get(i)).filter(|s| !s.is_empty()).map(str::to_string);
            let seg = match format {
                MapFormat::Parva => Segment {
                    node: int(0, 0, u32::MAX as i64)? as u32,
                    gpu: int(1, 0, u32::MAX as i64)? as u32,
                    service: non_empty(f(2), at(2))?,
                    model: non_empty(f(3), at(3))?,
                    placement: int(4, 0, 7)? as u8,
                    instance_size: int(5, 1, 7)? as u8,
                    batch_size: int(6, 1, limits::MAX_BATCH as i64)? as u32,
                    num_proc: int(7, 1, limits::MAX_PROCS as i64)? as u32,
                    profile: opt_str(0),
                    gpu_type: opt_str(1),
                    throughput: opt_num(2, &limits::SEGMENT_THROUGHPUT)?,
                    rate: opt_num(3, &limits::RATE)?,
                    slo_ms: opt_num(4, &limits::SLO_MS)?,
                    margin_ms: match margin_col.map(|i| rec.get(i).unwrap_or("")) {
                        None | Some("") => None,
                        Some(v) => Some(parse_in(v, Location::field(path, line, MAP_MARGIN_COLUMN), &limits::MARGIN_MS)?),
                    },
                },
                MapFormat::ParvaGpu => {
                    let model = non_empty(f(2), at(2))?;
                    Segment {
                        node: int(0, 0, u32::MAX as i64)? as u32,
                        gpu: int(1, 0, u32::MAX as i64)? as u32,
                        service: model.clone(),
                        model,
                        placement: int(3, 0, 7)? as u8,
                        instance_size: int(4, 1, 7)? as u8,
                        batch_size: int(5, 1, limits::MAX_BATCH as i64)? as u32,
                        num_proc: int(6, 1, limits::MAX_PROCS as i64)? as u32,
                        profile: None,
                        gpu_type: None,
                        throughput: None,
                        rate: None,
                        slo_ms: None,
                        margin_ms: None,
                    }
                }
            };
            let role_field = |i: usize| role_cols[i].and_then(|c| rec.get(c)).unwrap_or("");
            let best_effort = match role_field(0) {
                "" | ROLE_SERVE => false,
                ROLE_BEST_EFFORT => true,
                other => {
                    return Err(FormatError::invalid(
                        Location::field(path, line, "role"),
                        format!("must be `{ROLE_SERVE}` or `{ROLE_BEST_EFFORT}`; found {other:?}"),
                    ));
                }
            };
            if best_effort {
                let kind = crate::jobs::JobKind::parse(role_field(1)).ok_or_else(|| {
                    FormatError::invalid(
                        Location::field(path, line, "job_kind"),
                        format!("a best-effort row's job_kind must be `train` or `batch`; found {:?}", role_field(1)),
                    )
                })?;
                let priority =
                    parse_int(role_field(2), Location::field(path, line, "priority"), 0, crate::jobs::MAX_PRIORITY as i64)? as u32;
                if seg.num_proc != 1 || seg.rate.is_some() || seg.slo_ms.is_some() {
                    return Err(FormatError::invalid(
                        Location::line(path, line),
                        "a best-effort row has num_proc 1 and no rate or slo_ms (it serves no requests)",
                    ));
                }
                consistency.check_gpu_type(seg.gpu_type.clone(), line, path)?;
                job_lines.entry(seg.service.clone()).or_insert(line);
                jobs.push(JobSlot {
                    node: seg.node,
                    gpu: seg.gpu,
                    job: seg.service,
                    model: seg.model,
                    kind,
                    placement: seg.placement,
                    instance_size: seg.instance_size,
                    batch_size: seg.batch_size,
                    priority,
                    profile: seg.profile,
                    gpu_type: seg.gpu_type,
                    throughput: seg.throughput,
                });
                continue;
            }
            consistency.check(&seg, line, path)?;
            segments.push(seg);
        }
        if let Some((job, line)) = job_lines.iter().find(|(j, _)| consistency.services.contains_key(*j)) {
            return Err(FormatError::invalid(
                Location::field(path, *line, "service"),
                format!("{job:?} names both a best-effort job and a service (line {}); give the job another name", consistency.services[job].0),
            ));
        }
        if segments.is_empty() {
            return Err(FormatError::invalid(Location::file(path), "holds no segments"));
        }
        if !input.ends_with_newline() {
            return Err(FormatError::invalid(
                Location::line(path, input.last_line()),
                "the last row has no line end, so the file may have been cut short inside it (parva and \
                 ParvaGPU end every row with one); check the row and end it with a newline",
            ));
        }
        Ok((DeploymentMap { segments, jobs }, format))
    }

    /// Write the map in parva's format.
    pub fn write_to(&self, w: impl std::io::Write) -> Result<(), csv::Error> {
        let mut wtr = csv::Writer::from_writer(w);
        let with_margin = self.segments.iter().any(|s| s.margin_ms.is_some_and(|m| m > 0.0));
        let mut header: Vec<&str> = MAP_HEADER.iter().chain(MAP_EXTRA_HEADER.iter()).copied().collect();
        if with_margin {
            header.push(MAP_MARGIN_COLUMN);
        }
        let with_roles = !self.jobs.is_empty();
        if with_roles {
            header.extend(MAP_ROLE_COLUMNS);
        }
        wtr.write_record(&header)?;
        let opt = |v: Option<f64>| v.map(fmt_num).unwrap_or_default();
        for s in &self.segments {
            let mut row = vec![
                s.node.to_string(),
                s.gpu.to_string(),
                s.service.clone(),
                s.model.clone(),
                s.placement.to_string(),
                s.instance_size.to_string(),
                s.batch_size.to_string(),
                s.num_proc.to_string(),
                s.profile.clone().unwrap_or_default(),
                s.gpu_type.clone().unwrap_or_default(),
                opt(s.throughput.map(round3)),
                opt(s.rate),
                opt(s.slo_ms),
            ];
            if with_margin {
                row.push(opt(s.margin_ms.map(round3)));
            }
            if with_roles {
                row.extend([ROLE_SERVE.to_string(), String::new(), String::new()]);
            }
            wtr.write_record(&row)?;
        }
        for j in &self.jobs {
            let mut row = vec![
                j.node.to_string(),
                j.gpu.to_string(),
                j.job.clone(),
                j.model.clone(),
                j.placement.to_string(),
                j.instance_size.to_string(),
                j.batch_size.to_string(),
                "1".to_string(),
                j.profile.clone().unwrap_or_default(),
                j.gpu_type.clone().unwrap_or_default(),
                opt(j.throughput.map(round3)),
                String::new(),
                String::new(),
            ];
            if with_margin {
                row.push(String::new());
            }
            row.extend([ROLE_BEST_EFFORT.to_string(), j.kind.as_str().to_string(), j.priority.to_string()]);
            wtr.write_record(&row)?;
        }
        wtr.flush()?;
        Ok(())
    }

    /// Write the serving segments in ParvaGPU's format (`Num instance` is the node); best-effort
    /// rows, service names, profiles and rates have no place in it and are left out.
    pub fn write_parvagpu_to(&self, w: impl std::io::Write) -> Result<(), csv::Error> {
        let mut wtr = csv::Writer::from_writer(w);
        wtr.write_record(PARVAGPU_HEADER)?;
        for s in &self.segments {
            wtr.write_record([
                s.node.to_string(),
                s.gpu.to_string(),
                s.model.clone(),
                s.placement.to_string(),
                s.instance_size.to_string(),
                s.batch_size.to_string(),
                s.num_proc.to_string(),
            ])?;
        }
        wtr.flush()?;
        Ok(())
    }

    /// Write the map to `path` atomically (a temporary file renamed into place), creating the
    /// directory if needed; on error the previous file, if any, is untouched.
    pub fn write_file(&self, path: &Path) -> Result<(), FormatError> {
        let mut buf = Vec::new();
        self.write_to(&mut buf).map_err(|e| FormatError::io(path, "encode deployment map", std::io::Error::other(e)))?;
        write_atomic(path, &buf)
    }

    /// Each service's share of its whole rate that node `node` serves: its segments' planned
    /// capacity (`throughput`) over the service's in the whole map, as a router tier spreading the
    /// service over every node splits it (GPCs x processes where a map has no capacities). Only
    /// the services with a segment on the node.
    pub fn node_shares(&self, node: u32) -> BTreeMap<String, f64> {
        let weight = |s: &Segment| s.throughput.unwrap_or(s.instance_size as f64 * s.num_proc as f64);
        let all_have = self.segments.iter().all(|s| s.throughput.is_some());
        let w = |s: &Segment| if all_have { weight(s) } else { s.instance_size as f64 * s.num_proc as f64 };
        let mut total: BTreeMap<&str, f64> = BTreeMap::new();
        let mut here: BTreeMap<&str, f64> = BTreeMap::new();
        for s in &self.segments {
            *total.entry(&s.service).or_default() += w(s);
            if s.node == node {
                *here.entry(&s.service).or_default() += w(s);
            }
        }
        here.into_iter().map(|(name, h)| (name.to_string(), if total[name] > 0.0 { h / total[name] } else { 0.0 })).collect()
    }

    /// Node `node`'s part of the map, on its own: its segments (and best-effort rows), each
    /// service's `rate` scaled to the node's share of it ([`DeploymentMap::node_shares`]), so that
    /// serving, simulating and verifying the node load it with its share, not the whole rate.
    pub fn for_node(&self, node: u32) -> DeploymentMap {
        let shares = self.node_shares(node);
        DeploymentMap {
            segments: self
                .segments
                .iter()
                .filter(|s| s.node == node)
                .map(|s| Segment { rate: s.rate.map(|r| r * shares.get(&s.service).copied().unwrap_or(1.0)), ..s.clone() })
                .collect(),
            jobs: self.jobs.iter().filter(|j| j.node == node).cloned().collect(),
        }
    }

    /// Segments grouped by (node, gpu), in order.
    pub fn by_gpu(&self) -> BTreeMap<(u32, u32), Vec<&Segment>> {
        let mut out: BTreeMap<(u32, u32), Vec<&Segment>> = BTreeMap::new();
        for s in &self.segments {
            out.entry((s.node, s.gpu)).or_default().push(s);
        }
        out
    }

    /// Number of distinct GPUs the map uses.
    pub fn gpu_count(&self) -> usize {
        self.by_gpu().len()
    }

    /// Check every GPU's layout against `gpu` type's MIG rules. Returns every problem found.
    /// Best-effort instances count with the serving ones: they hold their GPCs until reclaimed.
    pub fn check_layouts(&self, gpu: &GpuType) -> Vec<MapLayoutError> {
        let mut problems = Vec::new();
        let mut layouts: BTreeMap<(u32, u32), Vec<Placement>> = BTreeMap::new();
        let rows = self
            .segments
            .iter()
            .map(|s| (s.node, s.gpu, s.profile.as_deref(), s.instance_size, s.placement, s.service.as_str(), "service"))
            .chain(self.jobs.iter().map(|j| (j.node, j.gpu, j.profile.as_deref(), j.instance_size, j.placement, j.job.as_str(), "job")));
        for (node, gpu_idx, profile, size, start, name, what) in rows {
            let layout = layouts.entry((node, gpu_idx)).or_default();
            match instance_profile(gpu, profile, size, name, what) {
                Ok(profile) => layout.push(Placement { profile, start }),
                Err(problem) => problems.push(MapLayoutError { node, gpu: gpu_idx, problem }),
            }
        }
        for ((node, gpu_idx), layout) in layouts {
            if let Err(e) = gpu.validate(&layout) {
                problems.push(MapLayoutError { node, gpu: gpu_idx, problem: e.to_string() });
            }
        }
        problems
    }
}

/// The MIG profile of a segment: its `profile` column when present (e.g. `1g.20gb`), else the
/// planner's profile for its instance size.
pub fn segment_profile(gpu: &GpuType, s: &Segment) -> Result<&'static GiProfile, String> {
    instance_profile(gpu, s.profile.as_deref(), s.instance_size, &s.service, "service")
}

/// The MIG profile of a map row of `what` (`service` or `job`) `name`.
fn instance_profile(gpu: &GpuType, profile: Option<&str>, size: u8, name: &str, what: &str) -> Result<&'static GiProfile, String> {
    match profile {
        Some(pname) => {
            let p = gpu
                .profile_by_name(pname)
                .ok_or_else(|| format!("profile {pname} of {what} {name} is not a MIG profile of {}", gpu.id))?;
            if p.gpcs != size {
                return Err(format!("profile {pname} of {what} {name} has {} GPCs but its instance_size is {size}", p.gpcs));
            }
            Ok(p)
        }
        None => gpu.profile_for_size(size).ok_or_else(|| format!("instance size {size} is not a MIG size of {}", gpu.id)),
    }
}

/// A GPU of a map whose layout is not a legal MIG layout.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("node {node} GPU {gpu}: {problem}")]
pub struct MapLayoutError {
    pub node: u32,
    pub gpu: u32,
    pub problem: String,
}

/// What the rows read so far said about each service and about the GPU type: a map holds one
/// model, rate and SLO per service and one GPU type, whatever row a reader happens to use.
#[derive(Default)]
struct Consistency {
    /// Service -> (first line, model, rate, slo_ms, margin_ms).
    services: BTreeMap<String, (u64, String, Option<f64>, Option<f64>, Option<f64>)>,
    /// (first line, GPU type) of the first row.
    gpu_type: Option<(u64, Option<String>)>,
}

impl Consistency {
    fn check(&mut self, seg: &Segment, line: u64, path: &Path) -> Result<(), FormatError> {
        let show = |v: &Option<f64>| v.map_or_else(|| "empty".to_string(), fmt_num);
        match self.services.get(&seg.service) {
            None => {
                if let (Some(m), Some(slo)) = (seg.margin_ms, seg.slo_ms) {
                    if m >= slo {
                        return Err(FormatError::invalid(
                            Location::field(path, line, MAP_MARGIN_COLUMN),
                            format!("{} is not below the service's slo_ms {}: nothing would be left to plan to", fmt_num(m), fmt_num(slo)),
                        ));
                    }
                }
                self.services.insert(seg.service.clone(), (line, seg.model.clone(), seg.rate, seg.slo_ms, seg.margin_ms));
            }
            Some((first, model, rate, slo, margin)) => {
                let differs = if *model != seg.model {
                    Some(("model", model.clone(), seg.model.clone()))
                } else if *rate != seg.rate {
                    Some(("rate", show(rate), show(&seg.rate)))
                } else if *slo != seg.slo_ms {
                    Some(("slo_ms", show(slo), show(&seg.slo_ms)))
                } else if *margin != seg.margin_ms {
                    Some((MAP_MARGIN_COLUMN, show(margin), show(&seg.margin_ms)))
                } else {
                    None
                };
                if let Some((field, was, now)) = differs {
                    return Err(FormatError::invalid(
                        Location::field(path, line, field),
                        format!(
                            "service {:?} has {field} {now} here but {was} on line {first}; a service has one \
                             model, rate, SLO and margin on every row of a map",
                            seg.service
                        ),
                    ));
                }
            }
        }
        self.check_gpu_type(seg.gpu_type.clone(), line, path)
    }

    fn check_gpu_type(&mut self, gpu_type: Option<String>, line: u64, path: &Path) -> Result<(), FormatError> {
        match &self.gpu_type {
            None => self.gpu_type = Some((line, gpu_type)),
            Some((first, ty)) if *ty != gpu_type => {
                let name = |t: &Option<String>| t.clone().unwrap_or_else(|| "empty".into());
                return Err(FormatError::invalid(
                    Location::field(path, line, "gpu_type"),
                    format!(
                        "is {} here but {} on line {first}; a map is for one GPU type (plan one map per type)",
                        name(&gpu_type),
                        name(ty)
                    ),
                ));
            }
            Some(_) => {}
        }
        Ok(())
    }
}

fn non_empty(v: &str, at: Location) -> Result<String, FormatError> {
    if v.is_empty() {
        return Err(FormatError::invalid(at, "is empty"));
    }
    Ok(v.to_string())
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Write `bytes` to `path` through a temporary file in the same directory, then rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FormatError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| FormatError::io(dir, "create directory", e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| FormatError::io(&tmp, "write", e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        FormatError::io(path, "rename into place", e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_parva_format() {
        let text = "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n\
                    0,0,svc-a,resnet50,0,4,16,2,4g.40gb,a100-80gb,900.5,1000,100\n\
                    0,0,svc-b,bert,4,3,8,1,,a100-80gb,,,\n";
        let (map, fmt) = DeploymentMap::read_from(text.as_bytes(), Path::new("d.csv")).unwrap();
        assert_eq!(fmt, MapFormat::Parva);
        assert_eq!(map.segments.len(), 2);
        assert_eq!(map.segments[0].throughput, Some(900.5));
        assert_eq!(map.segments[1].profile, None);
        let mut out = Vec::new();
        map.write_to(&mut out).unwrap();
        let (again, _) = DeploymentMap::read_from(out.as_slice(), Path::new("d.csv")).unwrap();
        assert_eq!(again, map);
        let gpu = GpuType::by_id("a100-80gb").unwrap();
        assert!(map.check_layouts(gpu).is_empty());
    }

    const JOBS_MAP: &str = "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms,role,job_kind,priority\n\
                    0,0,svc-a,resnet50,0,4,16,2,4g.40gb,a100-80gb,900.5,1000,100,serve,,\n\
                    0,0,ft,bert,4,2,32,1,2g.20gb,a100-80gb,120,,,best-effort,train,5\n\
                    0,0,score,resnet50,6,1,64,1,1g.10gb,a100-80gb,300,,,best-effort,batch,1\n";

    #[test]
    fn best_effort_rows_round_trip_apart_from_the_serving_segments() {
        let (map, _) = DeploymentMap::read_from(JOBS_MAP.as_bytes(), Path::new("d.csv")).unwrap();
        assert_eq!(map.segments.len(), 1, "a job is never a serving segment");
        assert_eq!(map.jobs.len(), 2);
        assert_eq!((map.jobs[0].job.as_str(), map.jobs[0].kind, map.jobs[0].priority), ("ft", crate::jobs::JobKind::Train, 5));
        let mut out = Vec::new();
        map.write_to(&mut out).unwrap();
        assert_eq!(String::from_utf8(out.clone()).unwrap(), JOBS_MAP);
        let gpu = GpuType::by_id("a100-80gb").unwrap();
        assert!(map.check_layouts(gpu).is_empty());
        // Maps without jobs keep their columns (and bytes) as before.
        let plain = DeploymentMap { segments: map.segments.clone(), jobs: Vec::new() };
        let mut out = Vec::new();
        plain.write_to(&mut out).unwrap();
        assert!(!String::from_utf8(out).unwrap().contains("role"));
    }

    #[test]
    fn the_parvagpu_writer_leaves_best_effort_rows_out() {
        let (map, _) = DeploymentMap::read_from(JOBS_MAP.as_bytes(), Path::new("d.csv")).unwrap();
        let mut out = Vec::new();
        map.write_parvagpu_to(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "Num instance,Num GPU,Model,Placement,Instance size,Batch size,Num proc\n0,0,resnet50,0,4,16,2\n");
        let (back, fmt) = DeploymentMap::read_from(text.as_bytes(), Path::new("p.csv")).unwrap();
        assert_eq!((fmt, back.segments.len(), back.jobs.len()), (MapFormat::ParvaGpu, 1, 0));
    }

    #[test]
    fn a_job_overlapping_a_segment_or_a_bad_best_effort_row_is_refused() {
        // The job's 3g at 4 overlaps nothing, but a 4g at 0 plus a 4g job at 0 do.
        let overlap = JOBS_MAP.replace("0,0,ft,bert,4,2,32,1,2g.20gb", "0,0,ft,bert,0,4,32,1,4g.40gb");
        let (map, _) = DeploymentMap::read_from(overlap.as_bytes(), Path::new("d.csv")).unwrap();
        assert!(!map.check_layouts(GpuType::by_id("a100-80gb").unwrap()).is_empty());
        for (from, to, want) in [
            ("best-effort,train,5", "spare,train,5", "d.csv:3: field `role`: must be `serve` or `best-effort`; found \"spare\""),
            ("best-effort,train,5", "best-effort,tune,5", "d.csv:3: field `job_kind`: a best-effort row's job_kind must be `train` or `batch`; found \"tune\""),
            ("best-effort,train,5", "best-effort,train,1001", "d.csv:3: field `priority`"),
            ("2g.20gb,a100-80gb,120,,,", "2g.20gb,a100-80gb,120,5,,", "d.csv:3: a best-effort row has num_proc 1 and no rate or slo_ms"),
            ("0,0,ft,bert", "0,0,svc-a,bert", "d.csv:3: field `service`: \"svc-a\" names both a best-effort job and a service (line 2)"),
            ("2g.20gb,a100-80gb,120", "2g.20gb,h100-80gb,120", "d.csv:3: field `gpu_type`: is h100-80gb here but a100-80gb on line 2"),
        ] {
            let text = JOBS_MAP.replacen(from, to, 1);
            let e = DeploymentMap::read_from(text.as_bytes(), Path::new("d.csv")).unwrap_err().to_string();
            assert!(e.starts_with(want), "{to}: {e}");
        }
    }

    #[test]
    fn a_node_of_a_multi_node_map_gets_its_share_of_each_service_by_capacity() {
        let text = "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n\
                    0,0,a,m,0,4,8,1,,a100-80gb,300,400,100\n\
                    1,0,a,m,0,4,8,1,,a100-80gb,100,400,100\n\
                    1,0,b,m,4,3,8,1,,a100-80gb,50,20,100\n";
        let (map, _) = DeploymentMap::read_from(text.as_bytes(), Path::new("d.csv")).unwrap();
        let shares = map.node_shares(1);
        assert_eq!(shares.len(), 2);
        assert!((shares["a"] - 0.25).abs() < 1e-12 && (shares["b"] - 1.0).abs() < 1e-12, "{shares:?}");
        assert_eq!(map.node_shares(0).keys().collect::<Vec<_>>(), ["a"]);
        let one = map.for_node(1);
        assert_eq!(one.segments.len(), 2);
        assert_eq!(one.segments[0].rate, Some(100.0), "a: 400/s x 1/4");
        assert_eq!(one.segments[1].rate, Some(20.0));
        assert!(map.for_node(7).segments.is_empty());
        // Without capacities, GPCs x processes weigh the split.
        let bare = text.replace(",300,", ",,").replace(",100,400", ",,400").replace(",50,", ",,");
        let (bare, _) = DeploymentMap::read_from(bare.as_bytes(), Path::new("d.csv")).unwrap();
        assert!((bare.node_shares(0)["a"] - 0.5).abs() < 1e-12);
    }

    #[test]
    fn reads_parvagpu_format_and_finds_its_overlaps() {
        let text = "Num instance,Num GPU,Model,Placement,Instance size,Batch size,Num proc\n\
                    0,4,densenet121,4,3,16,3\n0,4,bert,6,1,128,3\n1,0,vgg19,0,7,32,1\n";
        let (map, fmt) = DeploymentMap::read_from(text.as_bytes(), Path::new("p.csv")).unwrap();
        assert_eq!(fmt, MapFormat::ParvaGpu);
        assert_eq!(map.segments[1].service, "bert");
        assert_eq!(map.gpu_count(), 2);
        let problems = map.check_layouts(GpuType::by_id("a100-80gb").unwrap());
        assert_eq!(problems.len(), 1);
        assert!(problems[0].to_string().contains("node 0 GPU 4") && problems[0].to_string().contains("overlaps"));
    }

    #[test]
    fn check_layouts_honours_the_profile_column() {
        let gpu = GpuType::by_id("a100-80gb").unwrap();
        let head = "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile\n";
        // 1g.20gb takes two memory slices: at 0 it overlaps a 1g.10gb at 1.
        let text = format!("{head}0,0,a,m,0,1,1,1,1g.20gb\n0,0,b,m,1,1,1,1,1g.10gb\n");
        let (map, _) = DeploymentMap::read_from(text.as_bytes(), Path::new("d.csv")).unwrap();
        let problems = map.check_layouts(gpu);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].problem.contains("overlaps"), "{problems:?}");
        // A profile that contradicts instance_size, and one the GPU does not have.
        let text = format!("{head}0,0,a,m,0,2,1,1,1g.20gb\n0,1,b,m,0,1,1,1,1g.6gb\n");
        let (map, _) = DeploymentMap::read_from(text.as_bytes(), Path::new("d.csv")).unwrap();
        let problems: Vec<String> = map.check_layouts(gpu).iter().map(|p| p.to_string()).collect();
        assert!(problems.iter().any(|p| p.contains("1g.20gb") && p.contains("instance_size is 2")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("1g.6gb") && p.contains("not a MIG profile")), "{problems:?}");
    }

    #[test]
    fn map_error_paths() {
        let bad = |t: &str| DeploymentMap::read_from(t.as_bytes(), Path::new("d.csv")).unwrap_err().to_string();
        let e = bad("a,b,c\n1,2,3\n");
        assert!(e.contains("d.csv:1") && e.contains("header"), "{e}");
        let e = bad("node,gpu,service,model,placement,instance_size,batch_size,num_proc\n0,0,s,m,9,1,1,1\n");
        assert!(e.contains("d.csv:2: field `placement`") && e.contains("9"), "{e}");
        let e = bad("node,gpu,service,model,placement,instance_size,batch_size,num_proc\n0,0,,m,0,1,1,1\n");
        assert!(e.contains("field `service`"), "{e}");
        let e = bad("node,gpu,service,model,placement,instance_size,batch_size,num_proc\n");
        assert!(e.contains("no segments"), "{e}");
        let e = bad("node,gpu,service,model,placement,instance_size,batch_size,num_proc,throughput\n0,0,s,m,0,1,1,1,-2\n");
        assert!(e.contains("field `throughput`"), "{e}");
    }

    #[test]
    fn atomic_write_leaves_old_file_on_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/map.csv");
        write_atomic(&p, b"one").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        // Writing the same path fails (a directory stands where its temporary file goes): the old
        // file stays whole. A write straight to the path would have replaced it.
        let tmp = d.path().join(format!("sub/.map.csv.tmp{}", std::process::id()));
        std::fs::create_dir_all(tmp.join("x")).unwrap();
        let e = write_atomic(&p, b"two").unwrap_err().to_string();
        assert!(e.contains(&tmp.display().to_string()) && e.contains("write"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        std::fs::remove_dir_all(&tmp).unwrap();
        // A directory in the way of the rename target makes the rename fail; the temporary file goes.
        let blocked = d.path().join("sub/blocked");
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        let e = write_atomic(&blocked, b"two").unwrap_err().to_string();
        assert!(e.contains("blocked") && e.contains("rename into place"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        assert_eq!(std::fs::read_dir(d.path().join("sub")).unwrap().count(), 2, "no temporary file left");
    }

    const HEAD: &str = "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n";

    fn err(text: &str) -> FormatError {
        DeploymentMap::read_from(text.as_bytes(), Path::new("d.csv")).unwrap_err()
    }

    fn at(e: &FormatError) -> (u64, String) {
        let l = e.location().expect("an error with a location");
        (l.line.unwrap_or(0), l.field.clone().unwrap_or_default())
    }

    /// Issue 11: one service with different rates on different rows was accepted (the first or
    /// last row silently won, depending on the reader).
    #[test]
    fn map_service_with_two_rates_is_refused_naming_both_lines() {
        let e = err(&format!("{HEAD}0,0,a,m,0,1,1,1,,a100-80gb,10,100,50\n0,0,b,m,1,1,1,1,,a100-80gb,10,7,50\n0,1,a,m,0,1,1,1,,a100-80gb,10,200,50\n"));
        assert_eq!(at(&e), (4, "rate".to_string()));
        let m = e.to_string();
        assert!(m.contains("service \"a\" has rate 200 here but 100 on line 2"), "{m}");
    }

    #[test]
    fn map_service_with_two_slos_or_models_is_refused() {
        let e = err(&format!("{HEAD}0,0,a,m,0,1,1,1,,a100-80gb,10,100,50\n0,1,a,m,0,1,1,1,,a100-80gb,10,100,60\n"));
        assert_eq!(at(&e), (3, "slo_ms".to_string()));
        assert!(e.to_string().contains("slo_ms 60 here but 50 on line 2"), "{e}");
        let e = err(&format!("{HEAD}0,0,a,m,0,1,1,1,,a100-80gb,10,100,50\n0,1,a,other,0,1,1,1,,a100-80gb,10,100,50\n"));
        assert_eq!(at(&e), (3, "model".to_string()));
        assert!(e.to_string().contains("model other here but m on line 2"), "{e}");
        // A row that leaves the rate empty contradicts one that gives it.
        let e = err(&format!("{HEAD}0,0,a,m,0,1,1,1,,a100-80gb,10,100,50\n0,1,a,m,0,1,1,1,,a100-80gb,10,,50\n"));
        assert!(e.to_string().contains("rate empty here but 100 on line 2"), "{e}");
    }

    /// Issue 11: a map naming several GPU types was accepted (`validate` took the first row's,
    /// `deploy` the first row of the node being deployed).
    #[test]
    fn map_with_two_gpu_types_is_refused() {
        let e = err(&format!("{HEAD}0,0,a,m,0,1,1,1,,a100-80gb,,,\n1,0,b,m,0,1,1,1,,h100-80gb,,,\n"));
        assert_eq!(at(&e), (3, "gpu_type".to_string()));
        assert!(e.to_string().contains("is h100-80gb here but a100-80gb on line 2; a map is for one GPU type"), "{e}");
        let e = err(&format!("{HEAD}0,0,a,m,0,1,1,1,,a100-80gb,,,\n1,0,b,m,0,1,1,1,,,,,\n"));
        assert!(e.to_string().contains("is empty here but a100-80gb on line 2"), "{e}");
    }

    /// Issue 11: a map whose last row was cut short inside its last field (`...,100` cut to
    /// `...,1`) read as a valid, wrong SLO.
    #[test]
    fn map_whose_last_row_was_cut_short_is_refused() {
        let whole = format!("{HEAD}0,0,a,m,0,1,1,1,,a100-80gb,10,100,50\n0,1,b,m,0,1,1,1,,a100-80gb,10,100,50\n");
        assert!(DeploymentMap::read_from(whole.as_bytes(), Path::new("d.csv")).is_ok());
        let cut = &whole[..whole.len() - 2]; // "...,5"
        let e = err(cut);
        assert_eq!(at(&e), (3, String::new()));
        assert!(e.to_string().contains("d.csv:3: the last row has no line end"), "{e}");
        // Cut before the last fields: fewer fields than the header.
        let e = err(&whole[..whole.len() - 7]);
        assert!(e.to_string().contains("d.csv:3: has 12 fields, expected 13"), "{e}");
        // Trailing blank lines after a complete row are fine.
        assert!(DeploymentMap::read_from(format!("{whole}\n\n").as_bytes(), Path::new("d.csv")).is_ok());
    }

    #[test]
    fn map_values_outside_their_ranges_are_refused() {
        let cases = [
            ("0,0,a,m,0,1,4097,1,,,,,", "batch_size", "4097 is out of range (allowed 1..=4096)"),
            ("0,0,a,m,0,1,1,49,,,,,", "num_proc", "49 is out of range"),
            ("0,0,a,m,0,1,1,1,,,NaN,,", "throughput", "segment throughput must be a finite number in [0, 4.8e8] samples/s, found NaN"),
            ("0,0,a,m,0,1,1,1,,,,inf,", "rate", "request rate must be a finite number in (0, 1e7] requests/s, found inf"),
            ("0,0,a,m,0,1,1,1,,,,1e300,", "rate", "found 1e300"),
            ("0,0,a,m,0,1,1,1,,,,0,", "rate", "found 0"),
            ("0,0,a,m,0,1,1,1,,,,1,0", "slo_ms", "latency SLO must be a finite number in [0.01, 3.6e6] ms, found 0"),
        ];
        for (row, field, want) in cases {
            let e = err(&format!("{HEAD}{row}\n"));
            assert_eq!(at(&e), (2, field.to_string()), "{row}: {e}");
            assert!(e.to_string().contains(want), "{row}: {e}");
        }
    }

    #[test]
    fn a_planning_margin_round_trips_and_is_checked_against_the_slo() {
        let csv = "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms,margin_ms\n\
                   0,0,a,m,0,4,8,1,4g.40gb,a100-80gb,100,10,50,2.5\n\
                   0,0,b,m,4,3,8,1,3g.40gb,a100-80gb,100,10,40,\n";
        let (map, _) = DeploymentMap::read_from(csv.as_bytes(), Path::new("d.csv")).unwrap();
        assert_eq!((map.segments[0].margin_ms, map.segments[1].margin_ms), (Some(2.5), None));
        assert_eq!((map.segments[0].target_ms(50.0), map.segments[1].target_ms(40.0)), (47.5, 40.0));
        let mut out = Vec::new();
        map.write_to(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), csv);
        // Without a margin the column is not written: maps planned with --margin 0 read as before.
        let mut plain = map.clone();
        plain.segments.iter_mut().for_each(|s| s.margin_ms = None);
        let mut out = Vec::new();
        plain.write_to(&mut out).unwrap();
        assert!(!String::from_utf8(out).unwrap().contains("margin_ms"));
        // A margin that leaves nothing of the SLO, and two margins for one service, are refused.
        let bad = csv.replace(",50,2.5", ",50,50");
        let e = DeploymentMap::read_from(bad.as_bytes(), Path::new("d.csv")).unwrap_err();
        assert_eq!(e.location().and_then(|l| l.field.clone()).as_deref(), Some("margin_ms"), "{e}");
        assert!(e.to_string().contains("not below the service's slo_ms 50"), "{e}");
        let two = format!("{csv}0,1,a,m,0,4,8,1,4g.40gb,a100-80gb,100,10,50,3\n");
        let e = DeploymentMap::read_from(two.as_bytes(), Path::new("d.csv")).unwrap_err();
        assert!(e.to_string().contains("has margin_ms 3 here but 2.5 on line 2"), "{e}");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn segment() -> impl Strategy<Value = Segment> {
            (0u32..3, 0u32..8, 0usize..4, 0u8..8, 1u8..8, 1u32..=4096, 1u32..=48, 0.0f64..1e6).prop_map(
                |(node, gpu, svc, placement, instance_size, batch_size, num_proc, throughput)| Segment {
                    node,
                    gpu,
                    service: format!("svc-{svc}"),
                    model: format!("model-{svc}"),
                    placement,
                    instance_size,
                    batch_size,
                    num_proc,
                    profile: None,
                    gpu_type: Some("a100-80gb".into()),
                    throughput: Some(round3(throughput)),
                    rate: Some(100.0 + svc as f64 * 0.25),
                    slo_ms: Some(20.0 + svc as f64),
                    margin_ms: None,
                },
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            /// Any bytes: an answer, never a panic (run longer with PROPTEST_CASES=100000).
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = DeploymentMap::read_from(bytes.as_slice(), Path::new("d.csv"));
                let mut text = HEAD.as_bytes().to_vec();
                text.extend(&bytes);
                let _ = DeploymentMap::read_from(text.as_slice(), Path::new("d.csv"));
            }

            /// A generated map, written and read back, is the same map.
            #[test]
            fn written_maps_read_back_the_same(segments in proptest::collection::vec(segment(), 1..20)) {
                let map = DeploymentMap { segments, jobs: Vec::new() };
                let mut out = Vec::new();
                map.write_to(&mut out).unwrap();
                let (again, format) = DeploymentMap::read_from(out.as_slice(), Path::new("d.csv")).unwrap();
                prop_assert_eq!(format, MapFormat::Parva);
                prop_assert_eq!(again, map);
            }

            /// One field of one row made invalid: the error names that line and field.
            #[test]
            fn a_bad_field_is_named_by_line_and_field(
                segments in proptest::collection::vec(segment(), 1..10),
                row in any::<prop::sample::Index>(),
                field in 0usize..13,
                bad in prop::sample::select(vec!["x", "-1", "NaN", "inf", "1e400", "99999"]),
            ) {
                let map = DeploymentMap { segments, jobs: Vec::new() };
                let mut out = Vec::new();
                map.write_to(&mut out).unwrap();
                let text = String::from_utf8(out).unwrap();
                let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
                let r = 1 + row.index(lines.len() - 1);
                let mut fields: Vec<String> = lines[r].split(',').map(str::to_string).collect();
                // Fields that take any text (names, profile) are skipped; gpu_type only by a type clash.
                prop_assume!(![2, 3, 8].contains(&field));
                let value = if field == 9 { "h100-80gb".to_string() } else { bad.to_string() };
                // Values still valid for that field (e.g. 99999 as a node) are no mutation.
                prop_assume!(!(matches!(field, 0 | 1) && value == "99999"));
                prop_assume!(!(matches!(field, 10..=12) && value == "99999"));
                prop_assume!(!(field == 9 && lines.len() == 2)); // one row cannot clash with another
                fields[field] = value;
                lines[r] = fields.join(",");
                let e = DeploymentMap::read_from(format!("{}\n", lines.join("\n")).as_bytes(), Path::new("d.csv")).unwrap_err();
                let names: Vec<&str> = MAP_HEADER.iter().chain(MAP_EXTRA_HEADER.iter()).copied().collect();
                let loc = e.location().expect("a located error").clone();
                if field == 9 {
                    // The clash is named on the later of the two rows.
                    prop_assert_eq!(loc.field.as_deref(), Some("gpu_type"));
                } else {
                    prop_assert_eq!(loc.line, Some(r as u64 + 1), "{}", e);
                    prop_assert_eq!(loc.field.as_deref(), Some(names[field]), "{}", e);
                }
            }
        }
    }
}
