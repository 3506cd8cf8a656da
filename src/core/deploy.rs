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
use crate::mig::{GiProfile, GpuType, Placement};
use crate::profile::{fmt_num, parse_int, parse_nonneg};

pub const MAP_HEADER: [&str; 8] =
    ["node", "gpu", "service", "model", "placement", "instance_size", "batch_size", "num_proc"];
pub const MAP_EXTRA_HEADER: [&str; 5] = ["profile", "gpu_type", "throughput", "rate", "slo_ms"];
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
    pub segments: Vec<Segment>,
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
        let mut segments = Vec::new();
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
            let opt_num = |name: usize| -> Result<Option<f64>, FormatError> {
                match extra[name].map(|i| rec.get(i).unwrap_or("")) {
                    None | Some("") => Ok(None),
                    Some(v) => parse_nonneg(v, Location::field(path, line, MAP_EXTRA_HEADER[name])).map(Some),
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
                    batch_size: int(6, 1, 1 << 20)? as u32,
                    num_proc: int(7, 1, 48)? as u32,
                    profile: opt_str(0),
                    gpu_type: opt_str(1),
                    throughput: opt_num(2)?,
                    rate: opt_num(3)?,
                    slo_ms: opt_num(4)?,
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
                        batch_size: int(5, 1, 1 << 20)? as u32,
                        num_proc: int(6, 1, 48)? as u32,
                        profile: None,
                        gpu_type: None,
                        throughput: None,
                        rate: None,
                        slo_ms: None,
                    }
                }
            };
            segments.push(seg);
        }
        if segments.is_empty() {
            return Err(FormatError::invalid(Location::file(path), "holds no segments"));
        }
        Ok((DeploymentMap { segments }, format))
    }

    /// Write the map in parva's format.
    pub fn write_to(&self, w: impl std::io::Write) -> Result<(), csv::Error> {
        let mut wtr = csv::Writer::from_writer(w);
        let header: Vec<&str> = MAP_HEADER.iter().chain(MAP_EXTRA_HEADER.iter()).copied().collect();
        wtr.write_record(&header)?;
        let opt = |v: Option<f64>| v.map(fmt_num).unwrap_or_default();
        for s in &self.segments {
            wtr.write_record([
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
    pub fn check_layouts(&self, gpu: &GpuType) -> Vec<MapLayoutError> {
        let mut problems = Vec::new();
        for ((node, gpu_idx), segs) in self.by_gpu() {
            let mut layout = Vec::new();
            for s in segs {
                match segment_profile(gpu, s) {
                    Ok(profile) => layout.push(Placement { profile, start: s.placement }),
                    Err(problem) => problems.push(MapLayoutError { node, gpu: gpu_idx, problem }),
                }
            }
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
    match &s.profile {
        Some(name) => {
            let p = gpu
                .profile_by_name(name)
                .ok_or_else(|| format!("profile {name} of service {} is not a MIG profile of {}", s.service, gpu.id))?;
            if p.gpcs != s.instance_size {
                return Err(format!(
                    "profile {name} of service {} has {} GPCs but its instance_size is {}",
                    s.service, p.gpcs, s.instance_size
                ));
            }
            Ok(p)
        }
        None => gpu
            .profile_for_size(s.instance_size)
            .ok_or_else(|| format!("instance size {} is not a MIG size of {}", s.instance_size, gpu.id)),
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
                    0,0,svc-b,bert,4,3,8,1,,,,,\n";
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
        // A directory in the way of the rename target makes the write fail; the old file stays.
        let blocked = d.path().join("sub/blocked");
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        assert!(write_atomic(&blocked, b"two").is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        assert_eq!(std::fs::read_dir(d.path().join("sub")).unwrap().count(), 2, "no temporary file left");
    }
}
