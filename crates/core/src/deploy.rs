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

mod consistency;
use consistency::Consistency;

pub const MAP_HEADER: [&str; 8] =
    ["node", "gpu", "service", "model", "placement", "instance_size", "batch_size", "num_proc"];
/// Largest placement start a map may name: slice 15, the 16th of the widest GPU parva models
/// (MIG GPUs have 8 memory slices, MPS types 10 share units); the GPU type's rules check the rest.
const MAX_SLICE_INDEX: i64 = 15;
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
    /// A segment of `service` (model `model`) on an instance of `instance_size` GPCs at
    /// `placement` of GPU `gpu` of node `node`: batch 1, one process, and no profile, GPU type,
    /// throughput, rate, SLO or margin yet (set them with struct update syntax).
    pub fn at(node: u32, gpu: u32, placement: u8, instance_size: u8, service: &str, model: &str) -> Segment {
        Segment {
            node,
            gpu,
            service: service.into(),
            model: model.into(),
            placement,
            instance_size,
            batch_size: 1,
            num_proc: 1,
            profile: None,
            gpu_type: None,
            throughput: None,
            rate: None,
            slo_ms: None,
            margin_ms: None,
        }
    }

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
            let role_is_job = best_effort;
            let seg = match format {
                MapFormat::Parva => Segment {
                    node: int(0, 0, u32::MAX as i64)? as u32,
                    gpu: int(1, 0, u32::MAX as i64)? as u32,
                    service: name(if role_is_job { "job name" } else { "service name" }, f(2), at(2))?,
                    model: name("model name", f(3), at(3))?,
                    placement: int(4, 0, MAX_SLICE_INDEX)? as u8,
                    instance_size: int(5, 1, MAX_SLICE_INDEX + 1)? as u8,
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
                    let model = name("model name", f(2), at(2))?;
                    Segment {
                        node: int(0, 0, u32::MAX as i64)? as u32,
                        gpu: int(1, 0, u32::MAX as i64)? as u32,
                        service: model.clone(),
                        model,
                        placement: int(3, 0, MAX_SLICE_INDEX)? as u8,
                        instance_size: int(4, 1, MAX_SLICE_INDEX + 1)? as u8,
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
                consistency.check_gpu_type(seg.node, seg.gpu_type.clone(), line, path)?;
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
        crate::files::write_atomic(path, &buf)
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

    /// Number of distinct GPUs the map's segments use.
    pub fn gpu_count(&self) -> usize {
        self.by_gpu().len()
    }

    /// Number of distinct GPUs the map's segments and best-effort instances use together (a
    /// cluster plan's jobs may fill GPUs no segment uses).
    pub fn gpu_count_with_jobs(&self) -> usize {
        let gpus: std::collections::BTreeSet<(u32, u32)> =
            self.segments.iter().map(|s| (s.node, s.gpu)).chain(self.jobs.iter().map(|j| (j.node, j.gpu))).collect();
        gpus.len()
    }

    /// Each node's GPU type as its rows name it (`None`: the map names none); a map's reader
    /// guarantees one per node.
    pub fn node_gpu_types(&self) -> BTreeMap<u32, Option<String>> {
        self.segments
            .iter()
            .map(|s| (s.node, s.gpu_type.clone()))
            .chain(self.jobs.iter().map(|j| (j.node, j.gpu_type.clone())))
            .collect()
    }

    /// The GPU types the map's rows name, each once, in order.
    pub fn gpu_type_ids(&self) -> Vec<String> {
        let set: std::collections::BTreeSet<String> = self.node_gpu_types().into_values().flatten().collect();
        set.into_iter().collect()
    }

    /// The map's GPU type when it has one only: the type its rows name, else `fallback` (a
    /// `--gpu-type` flag). An error in words when the map names several (a mixed fleet's map, to
    /// be taken node by node) or none and there is no fallback.
    pub fn single_gpu_type(&self, fallback: Option<&str>) -> Result<String, String> {
        let ids = self.gpu_type_ids();
        match (ids.as_slice(), fallback) {
            ([], Some(f)) => Ok(f.to_string()),
            ([], None) => Err("the map names no GPU type (its gpu_type column is empty): give --gpu-type".into()),
            ([one], Some(f)) if one != f => Err(format!("the map is for {one}, not {f} (--gpu-type)")),
            ([one], _) => Ok(one.clone()),
            (many, _) => Err(format!("the map mixes GPU types ({}), one per node", many.join(", "))),
        }
    }

    /// Check every GPU's layout against its node's GPU type: the type its rows name, else
    /// `fallback`. A node whose type is unknown to the catalogue, or that names none without a
    /// fallback, is a problem of its own.
    pub fn check_layouts_by_node(&self, fallback: Option<&GpuType>) -> Vec<MapLayoutError> {
        let mut problems = Vec::new();
        for (node, ty) in self.node_gpu_types() {
            let gpu = match (ty, fallback) {
                (Some(id), _) => match GpuType::by_id(&id) {
                    Ok(g) => g,
                    Err(e) => {
                        problems.push(MapLayoutError { node, gpu: 0, problem: e.to_string() });
                        continue;
                    }
                },
                (None, Some(g)) => g,
                (None, None) => {
                    problems.push(MapLayoutError { node, gpu: 0, problem: "names no GPU type (give --gpu-type)".into() });
                    continue;
                }
            };
            problems.extend(self.for_node(node).check_layouts(gpu));
        }
        problems
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

impl DeploymentMap {
    /// Segments whose processes do not fit their instance's (or MPS share's) memory, by the
    /// profile tables' `mem_mib` column ([`crate::ModelProfile::point_fits`], the planner's rule);
    /// segments whose table or point has no memory figure are not judged. One problem per
    /// segment, in map order.
    pub fn check_memory(&self, gpu: &GpuType, profiles: &crate::ProfileSet) -> Vec<MapLayoutError> {
        let mut out = Vec::new();
        for s in &self.segments {
            let Some(inst) = gpu.profile_for_size(s.instance_size) else { continue };
            let Some(table) = profiles.get(&s.model) else { continue };
            let Some(p) = table.point(s.instance_size, s.batch_size, s.num_proc) else { continue };
            let Some(mib) = table.mem_mib(p).filter(|_| !table.point_fits(p, inst)) else { continue };
            let (need, have) = (mib * f64::from(s.num_proc), inst.mem_mib());
            out.push(MapLayoutError {
                node: s.node,
                gpu: s.gpu,
                problem: format!(
                    "{} ({} at {}, batch {}): {} process(es) x {mib:.0} MiB = {need:.0} MiB, more than the {:.0} MiB of its {}",
                    s.service,
                    s.model,
                    gpu.size_label(s.instance_size),
                    s.batch_size,
                    s.num_proc,
                    have,
                    inst.name
                ),
            });
        }
        out
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

/// A name column: the one rule of [`crate::names`].
fn name(what: &str, v: &str, at: Location) -> Result<String, FormatError> {
    crate::names::check_at(what, v, at)?;
    Ok(v.to_string())
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The interference slowdown to simulate `map` with: [`crate::mig::DEFAULT_MPS_INTERFERENCE`] when
/// its segments are MPS shares (their `gpu_type` is a type without MIG), else 0 (MIG instances are
/// isolated).
pub fn default_interference(map: &DeploymentMap) -> f64 {
    let mps = map.segments.iter().filter_map(|s| s.gpu_type.as_deref()).any(|t| crate::mig::GpuType::by_id(t).is_ok_and(|t| t.is_mps()));
    if mps { crate::mig::DEFAULT_MPS_INTERFERENCE } else { 0.0 }
}

#[cfg(test)]
#[path = "deploy_tests.rs"]
mod tests;

