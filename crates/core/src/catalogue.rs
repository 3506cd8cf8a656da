//! Catalogue files: MIG geometry of GPU types as data a user can read, write and extend.
//!
//! The built-in types are such files too (`crates/core/src/catalogue/*.toml`, compiled in with
//! `include_str!` and read by the same parser), so a type from a user's file and a built-in one
//! take the same path through every command. `parva catalogue --from-gpu` writes one from what
//! NVML reports.
//!
//! The format is a small subset of TOML (hand-editable; every value on its own line, so an error
//! names `file:line: field`):
//!
//! ```toml
//! version = 1                      # first key of the file; other versions are refused
//!
//! [[gpu]]
//! id = "h100-80gb"                 # the name --gpu-type takes: [a-z0-9.-], at most 64 characters
//! gpcs = 7                         # compute slices of the whole GPU
//! mem_slices = 8                   # memory slices of the whole GPU (at most 16)
//! max_instances = 7                # GPU instances at most
//! placements_source = "nvml"       # "nvml" | "published" | "assumed": where the placements come from
//! source = "..."                   # optional: where the numbers come from
//!
//! [[gpu.product]]                  # how a physical GPU is recognised as this type (one or more)
//! name = "NVIDIA H100 80GB HBM3"   # exact product name (nvmlDeviceGetName)
//! pci_device_id = 0x233010DE       # nvmlPciInfo_t.pciDeviceId
//!
//! [[gpu.profile]]                  # one GPU-instance profile (one or more)
//! id = 19                          # GI profile id (nvidia-smi mig -lgip "ID")
//! name = "1g.10gb"                 # as nvidia-smi shows it, without "MIG "
//! gpcs = 1                         # compute slices
//! mem_slices = 1                   # memory slices it takes from its start
//! mem_gb = 10                      # memory in GB, as in the name
//! mem_mib = 9856                   # optional: the instance's memory as NVIDIA reports it
//! mem_source = "published"         # with mem_mib: "nvml" (memorySizeMB) | "published" (-lgip)
//! sms = 16                         # streaming multiprocessors
//! max_count = 7                    # instances of this profile at most
//! placements = [0, 1, 2, 3, 4, 5, 6]   # legal starts, in memory slices, ascending
//! media_extensions = false         # optional: a "+me" profile (one per GPU, never planned)
//! ```
//!
//! Memory checks use `mem_mib`, never the name's GB (which is a rounded fraction of the GPU and
//! often more than the instance has). Without `mem_mib` a profile's memory is assumed by a
//! conservative rule ([`crate::mig::assumed_mem_mib`]) and marked so; the plan report says when a
//! fit check rested on such a value. A profile named with a suffix (`+me`, `+me.all`, `+gfx`,
//! `-me`) is a variant of its base profile: placed and validated, never chosen by a planner.
//!
//! An MPS type gives its whole GPU's `mem_gb` (data sheet) and optionally `mem_mib` (as
//! `nvidia-smi` reports it); without `mem_mib` the data sheet's decimal GB are counted
//! (10^9 bytes each, 953.7 MiB: below what every listed GPU reports).
//!
//! Unknown keys, tables and versions are refused, as are duplicate keys, profiles sharing an id
//! or a name, placements past the GPU's memory slices, more GPCs than the GPU has, and a type
//! without a whole-GPU profile. Integers may be written in hex (`0x...`) and with `_`.

use std::fmt;
use std::path::Path;

use crate::mig::{GiProfile, GpuProduct, GpuType, MemSource, Partition, PlacementSource, MPS_SHARE_STEP, MPS_SHARE_UNITS, assumed_mem_mib};

/// The catalogue file format version this parva reads and writes.
pub const VERSION: u32 = 1;
/// Largest catalogue file read (checked before reading it).
pub const MAX_FILE_BYTES: u64 = 1 << 20;
const MAX_GPUS: usize = 256;
const MAX_PROFILES: usize = 64;
const MAX_PRODUCTS: usize = 64;
const MAX_SLICES: u8 = 16;
const MAX_TEXT: usize = 1000;

/// What is wrong with a catalogue file, and where: `file:line: field: message`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}: {field}: {message}")]
pub struct CatalogueError {
    /// The file (or `built-in:<name>`).
    pub file: String,
    /// 1-based line; 0 when the error is about the whole file.
    pub line: usize,
    /// The field (`gpu.profile.placements`, `version`, ...), or the table for a table-wide rule.
    pub field: String,
    pub kind: CatalogueErrorKind,
    pub message: String,
}

/// Which rule a catalogue file broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogueErrorKind {
    /// Not readable, too large, or not the TOML subset.
    Syntax,
    /// `version` missing, not first, or not one this parva reads.
    Version,
    /// A key or table this format does not have.
    UnknownKey,
    /// A key given twice in one table.
    DuplicateKey,
    /// A required key is missing.
    Missing,
    /// A value of the wrong type or out of range.
    Invalid,
    /// A placement start that is not ascending or runs past the GPU's memory slices.
    Placement,
    /// Two profiles (or types, or products) with the same id or name.
    Overlap,
}

/// A parsed value.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int(u64),
    Str(String),
    Bool(bool),
    Ints(Vec<u64>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Int(_) => "an integer",
            Value::Str(_) => "a string",
            Value::Bool(_) => "a boolean",
            Value::Ints(_) => "an array of integers",
        }
    }
}

/// One `[[...]]` table with its keys and the lines they are on.
#[derive(Debug, Default)]
struct Table {
    line: usize,
    keys: Vec<(String, Value, usize)>,
}

#[derive(Debug, Default)]
struct GpuTables {
    gpu: Table,
    products: Vec<Table>,
    profiles: Vec<Table>,
}

struct Ctx<'a> {
    file: &'a str,
}

impl Ctx<'_> {
    fn err(&self, line: usize, field: &str, kind: CatalogueErrorKind, message: impl Into<String>) -> CatalogueError {
        CatalogueError { file: self.file.to_string(), line, field: field.to_string(), kind, message: message.into() }
    }
}

/// Read and check the catalogue file at `path` (at most [`MAX_FILE_BYTES`]). The types are not
/// registered (see [`crate::mig::register`]).
pub fn load_file(path: &Path) -> Result<Vec<&'static GpuType>, CatalogueError> {
    let file = path.display().to_string();
    let ctx = Ctx { file: &file };
    let io = |e: std::io::Error| ctx.err(0, "file", CatalogueErrorKind::Syntax, format!("cannot read: {e}"));
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_FILE_BYTES {
        return Err(ctx.err(0, "file", CatalogueErrorKind::Syntax, format!("{len} bytes; a catalogue file has at most {MAX_FILE_BYTES}")));
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    parse(&text, &file)
}

/// The catalogue files of `dir` (`*.toml`, by name), each read with [`load_file`].
pub fn load_dir(dir: &Path) -> Result<Vec<&'static GpuType>, CatalogueError> {
    let file = dir.display().to_string();
    let io = |e: std::io::Error| CatalogueError {
        file: file.clone(),
        line: 0,
        field: "directory".into(),
        kind: CatalogueErrorKind::Syntax,
        message: format!("cannot read: {e}"),
    };
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        out.extend(load_file(&p)?);
    }
    Ok(out)
}

/// Parse and check catalogue text (`file` names it in errors). The types are leaked (a process
/// reads a few small files once) and not registered.
pub fn parse(text: &str, file: &str) -> Result<Vec<&'static GpuType>, CatalogueError> {
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(Ctx { file }.err(0, "file", CatalogueErrorKind::Syntax, format!("{} bytes; at most {MAX_FILE_BYTES}", text.len())));
    }
    let ctx = Ctx { file };
    let gpus = tables(&ctx, text)?;
    let origin: &'static str = Box::leak(file.to_string().into_boxed_str());
    let mut out: Vec<&'static GpuType> = Vec::new();
    for t in gpus {
        let ty = build(&ctx, &t, origin)?;
        if let Some(other) = out.iter().find(|o| o.id == ty.id) {
            return Err(ctx.err(line_of(&t.gpu, "id"), "gpu.id", CatalogueErrorKind::Overlap, format!("`{}` is defined twice in this file", other.id)));
        }
        out.push(Box::leak(Box::new(ty)));
    }
    Ok(out)
}

fn line_of(t: &Table, key: &str) -> usize {
    t.keys.iter().find(|(k, _, _)| k == key).map_or(t.line, |(_, _, l)| *l)
}

/// Split the text into `[[gpu]]` tables with their products and profiles; check `version`.
fn tables(ctx: &Ctx, text: &str) -> Result<Vec<GpuTables>, CatalogueError> {
    use CatalogueErrorKind as K;
    #[derive(PartialEq)]
    enum At {
        Top,
        Gpu,
        Product,
        Profile,
    }
    let mut at = At::Top;
    let mut version_seen = false;
    let mut gpus: Vec<GpuTables> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            if !version_seen {
                return Err(ctx.err(n, "version", K::Version, format!("the file must begin with `version = {VERSION}`")));
            }
            let header = line.replace(' ', "");
            at = match header.as_str() {
                "[[gpu]]" => {
                    if gpus.len() >= MAX_GPUS {
                        return Err(ctx.err(n, "gpu", K::Invalid, format!("more than {MAX_GPUS} GPU types in one file")));
                    }
                    gpus.push(GpuTables { gpu: Table { line: n, keys: Vec::new() }, ..Default::default() });
                    At::Gpu
                }
                "[[gpu.product]]" | "[[gpu.profile]]" => {
                    let Some(g) = gpus.last_mut() else {
                        return Err(ctx.err(n, header.trim_matches(['[', ']']), K::Syntax, "comes before any [[gpu]]"));
                    };
                    if header == "[[gpu.product]]" {
                        if g.products.len() >= MAX_PRODUCTS {
                            return Err(ctx.err(n, "gpu.product", K::Invalid, format!("more than {MAX_PRODUCTS} products")));
                        }
                        g.products.push(Table { line: n, keys: Vec::new() });
                        At::Product
                    } else {
                        if g.profiles.len() >= MAX_PROFILES {
                            return Err(ctx.err(n, "gpu.profile", K::Invalid, format!("more than {MAX_PROFILES} profiles")));
                        }
                        g.profiles.push(Table { line: n, keys: Vec::new() });
                        At::Profile
                    }
                }
                _ => {
                    return Err(ctx.err(n, line, K::UnknownKey, "unknown table; a catalogue has [[gpu]], [[gpu.product]] and [[gpu.profile]]"));
                }
            };
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(ctx.err(n, line, K::Syntax, "expected `key = value`"));
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ctx.err(n, key, K::Syntax, "a key is letters, digits and `_`"));
        }
        let (prefix, table) = match at {
            At::Top => ("", None),
            At::Gpu => ("gpu.", gpus.last_mut().map(|g| &mut g.gpu)),
            At::Product => ("gpu.product.", gpus.last_mut().and_then(|g| g.products.last_mut())),
            At::Profile => ("gpu.profile.", gpus.last_mut().and_then(|g| g.profiles.last_mut())),
        };
        let field = format!("{prefix}{key}");
        let value = parse_value(value.trim()).map_err(|m| ctx.err(n, &field, K::Syntax, m))?;
        match table {
            None => {
                if key != "version" {
                    return Err(ctx.err(n, &field, K::UnknownKey, "unknown key; before the first [[gpu]] only `version` is allowed"));
                }
                if version_seen {
                    return Err(ctx.err(n, "version", K::DuplicateKey, "given twice"));
                }
                match value {
                    Value::Int(v) if v == VERSION as u64 => version_seen = true,
                    Value::Int(v) => {
                        return Err(ctx.err(n, "version", K::Version, format!("version {v} is not one this parva reads (it reads {VERSION})")));
                    }
                    v => return Err(ctx.err(n, "version", K::Version, format!("must be an integer, not {}", v.kind()))),
                }
            }
            Some(t) => {
                if let Some((_, _, l)) = t.keys.iter().find(|(k, _, _)| k == key) {
                    return Err(ctx.err(n, &field, K::DuplicateKey, format!("given twice (also line {l})")));
                }
                t.keys.push((key.to_string(), value, n));
            }
        }
    }
    if !version_seen {
        return Err(ctx.err(0, "version", K::Version, format!("missing: the file must begin with `version = {VERSION}`")));
    }
    if gpus.is_empty() {
        return Err(ctx.err(0, "gpu", K::Missing, "no [[gpu]] table"));
    }
    Ok(gpus)
}

/// The line without a `#` comment (a `#` inside a string is kept).
fn strip_comment(line: &str) -> &str {
    let mut in_str = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            '\\' if in_str && !escaped => {
                escaped = true;
                continue;
            }
            '"' if !escaped => in_str = !in_str,
            '#' if !in_str => return &line[..i],
            _ => {}
        }
        escaped = false;
    }
    line
}

fn parse_int(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let clean = s.replace('_', "");
    let parsed = match clean.strip_prefix("0x").or_else(|| clean.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => clean.parse::<u64>(),
    };
    parsed.map_err(|_| format!("`{s}` is not a non-negative integer"))
}

fn parse_value(s: &str) -> Result<Value, String> {
    if let Some(body) = s.strip_prefix('"') {
        let Some(body) = body.strip_suffix('"') else { return Err(format!("unterminated string `{s}`")) };
        let mut out = String::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    other => return Err(format!("unsupported escape `\\{}` in a string", other.map_or(String::new(), String::from))),
                },
                '"' => return Err(format!("a `\"` inside a string must be written `\\\"`: `{s}`")),
                c => out.push(c),
            }
            if out.len() > MAX_TEXT {
                return Err(format!("a string has at most {MAX_TEXT} bytes"));
            }
        }
        return Ok(Value::Str(out));
    }
    if let Some(body) = s.strip_prefix('[') {
        let Some(body) = body.strip_suffix(']') else { return Err(format!("an array is written on one line: `{s}`")) };
        let body = body.trim().trim_end_matches(',');
        if body.trim().is_empty() {
            return Ok(Value::Ints(Vec::new()));
        }
        let items: Vec<&str> = body.split(',').collect();
        if items.len() > MAX_SLICES as usize {
            return Err(format!("an array has at most {MAX_SLICES} items"));
        }
        return items.iter().map(|i| parse_int(i)).collect::<Result<Vec<_>, _>>().map(Value::Ints);
    }
    match s {
        "true" => Ok(Value::Bool(true)),
        "false" => Ok(Value::Bool(false)),
        "" => Err("a value is missing".into()),
        _ => parse_int(s).map(Value::Int).map_err(|_| format!("`{s}` is not an integer, a \"string\", true/false or [integers]")),
    }
}

/// Typed access to one table's keys, refusing unknown ones.
struct Fields<'a> {
    ctx: &'a Ctx<'a>,
    table: &'a Table,
    prefix: &'static str,
}

impl<'a> Fields<'a> {
    fn new(ctx: &'a Ctx<'a>, table: &'a Table, prefix: &'static str, known: &[&str]) -> Result<Self, CatalogueError> {
        if let Some((k, _, l)) = table.keys.iter().find(|(k, _, _)| !known.contains(&k.as_str())) {
            return Err(ctx.err(*l, &format!("{prefix}.{k}"), CatalogueErrorKind::UnknownKey, format!("unknown key; [[{prefix}]] has {}", known.join(", "))));
        }
        Ok(Fields { ctx, table, prefix })
    }

    fn field(&self, key: &str) -> String {
        format!("{}.{key}", self.prefix)
    }

    fn get(&self, key: &str) -> Option<(&'a Value, usize)> {
        self.table.keys.iter().find(|(k, _, _)| k == key).map(|(_, v, l)| (v, *l))
    }

    fn line(&self, key: &str) -> usize {
        self.get(key).map_or(self.table.line, |(_, l)| l)
    }

    fn required(&self, key: &str) -> Result<(&'a Value, usize), CatalogueError> {
        self.get(key).ok_or_else(|| {
            self.ctx.err(self.table.line, &self.field(key), CatalogueErrorKind::Missing, format!("[[{}]] needs `{key}`", self.prefix))
        })
    }

    fn wrong(&self, key: &str, line: usize, want: &str, v: &Value) -> CatalogueError {
        self.ctx.err(line, &self.field(key), CatalogueErrorKind::Invalid, format!("must be {want}, not {}", v.kind()))
    }

    fn int(&self, key: &str, lo: u64, hi: u64) -> Result<u64, CatalogueError> {
        let (v, l) = self.required(key)?;
        match v {
            Value::Int(i) if (lo..=hi).contains(i) => Ok(*i),
            Value::Int(i) => Err(self.ctx.err(l, &self.field(key), CatalogueErrorKind::Invalid, format!("{i} is out of range {lo}..={hi}"))),
            v => Err(self.wrong(key, l, "an integer", v)),
        }
    }

    fn text(&self, key: &str) -> Result<String, CatalogueError> {
        let (v, l) = self.required(key)?;
        match v {
            Value::Str(s) if !s.trim().is_empty() => Ok(s.clone()),
            Value::Str(_) => Err(self.ctx.err(l, &self.field(key), CatalogueErrorKind::Invalid, "must not be empty")),
            v => Err(self.wrong(key, l, "a string", v)),
        }
    }

    fn opt_text(&self, key: &str) -> Result<Option<String>, CatalogueError> {
        if self.get(key).is_none() {
            return Ok(None);
        }
        self.text(key).map(Some)
    }

    fn opt_bool(&self, key: &str) -> Result<bool, CatalogueError> {
        match self.get(key) {
            None => Ok(false),
            Some((Value::Bool(b), _)) => Ok(*b),
            Some((v, l)) => Err(self.wrong(key, l, "true or false", v)),
        }
    }

    fn ints(&self, key: &str) -> Result<(Vec<u64>, usize), CatalogueError> {
        let (v, l) = self.required(key)?;
        match v {
            Value::Ints(i) => Ok((i.clone(), l)),
            v => Err(self.wrong(key, l, "an array of integers", v)),
        }
    }
}

fn leak_str(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn build(ctx: &Ctx, t: &GpuTables, origin: &'static str) -> Result<GpuType, CatalogueError> {
    use CatalogueErrorKind as K;
    let keys = ["id", "partition", "gpcs", "mem_slices", "max_instances", "placements_source", "source", "sms", "mem_gb", "mem_mib"];
    let g = Fields::new(ctx, &t.gpu, "gpu", &keys)?;
    let id = g.text("id")?;
    if id.len() > 64 || !id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.') {
        return Err(ctx.err(g.line("id"), "gpu.id", K::Invalid, format!("`{id}`: an id is lowercase letters, digits, `-` and `.`, at most 64")));
    }
    match g.opt_text("partition")?.as_deref() {
        None | Some("mig") => {}
        Some("mps") => return build_mps(ctx, t, &g, id, origin),
        Some(other) => {
            return Err(ctx.err(g.line("partition"), "gpu.partition", K::Invalid, format!("`{other}`: one of \"mig\" (the default), \"mps\"")));
        }
    }
    for key in ["sms", "mem_gb", "mem_mib"] {
        if g.get(key).is_some() {
            return Err(ctx.err(g.line(key), &g.field(key), K::UnknownKey, "only an MPS type (partition = \"mps\") has it; a MIG type gives them per [[gpu.profile]]"));
        }
    }
    let gpcs = g.int("gpcs", 1, MAX_SLICES as u64)? as u8;
    let mem_slices = g.int("mem_slices", 1, MAX_SLICES as u64)? as u8;
    let max_instances = g.int("max_instances", 1, MAX_SLICES as u64)? as u8;
    let placements_source = match g.text("placements_source")?.as_str() {
        "nvml" => PlacementSource::Nvml,
        "published" => PlacementSource::Published,
        "assumed" => PlacementSource::Assumed,
        other => {
            return Err(ctx.err(g.line("placements_source"), "gpu.placements_source", K::Invalid, format!("`{other}`: one of \"nvml\", \"published\", \"assumed\"")));
        }
    };
    let source = g.opt_text("source")?.map(leak_str);
    let products = build_products(ctx, t)?;
    if products.is_empty() {
        return Err(ctx.err(t.gpu.line, "gpu.product", K::Missing, format!("`{id}` has no [[gpu.product]] (how a GPU is recognised as it)")));
    }
    build_mig(ctx, t, id, gpcs, mem_slices, max_instances, placements_source, source, products, origin)
}

fn build_products(ctx: &Ctx, t: &GpuTables) -> Result<Vec<GpuProduct>, CatalogueError> {
    use CatalogueErrorKind as K;
    let mut products: Vec<GpuProduct> = Vec::new();
    for pt in &t.products {
        let p = Fields::new(ctx, pt, "gpu.product", &["name", "pci_device_id"])?;
        let name = p.text("name")?;
        let pci = p.int("pci_device_id", 0, u32::MAX as u64)? as u32;
        if products.iter().any(|o| o.name == name && o.pci_device_id == pci) {
            return Err(ctx.err(pt.line, "gpu.product", K::Overlap, format!("`{name}` {} is listed twice", crate::mig::pci_id_text(pci))));
        }
        products.push(GpuProduct { name: leak_str(name), pci_device_id: pci });
    }
    Ok(products)
}

/// An MPS type (`partition = "mps"`): the whole GPU's `sms` and `mem_gb`, at most
/// `max_instances` shares (default [`MPS_SHARE_UNITS`]); its share profiles are generated. It may
/// have no product: a MIG GPU used without MIG (`h100-80gb-nomig`) is recognised as its MIG type.
fn build_mps(ctx: &Ctx, t: &GpuTables, g: &Fields, id: String, origin: &'static str) -> Result<GpuType, CatalogueError> {
    use CatalogueErrorKind as K;
    for key in ["gpcs", "mem_slices", "placements_source"] {
        if g.get(key).is_some() {
            return Err(ctx.err(g.line(key), &g.field(key), K::UnknownKey, format!("an MPS type has no `{key}`: its shares are {MPS_SHARE_STEP} % steps of the whole GPU")));
        }
    }
    if let Some(p) = t.profiles.first() {
        return Err(ctx.err(p.line, "gpu.profile", K::UnknownKey, "an MPS type has no [[gpu.profile]]: its share profiles (mps-10 .. mps-100) are generated"));
    }
    let sms = g.int("sms", 1, u16::MAX as u64)? as u16;
    let mem_gb = g.int("mem_gb", 1, 1 << 20)? as u32;
    let whole = match g.get("mem_mib") {
        Some(_) => (g.int("mem_mib", 1, u32::MAX as u64)? as u32, MemSource::Published),
        None => ((f64::from(mem_gb) * DECIMAL_GB_MIB).floor() as u32, MemSource::Assumed),
    };
    let max_instances = if g.get("max_instances").is_some() { g.int("max_instances", 1, MPS_SHARE_UNITS as u64)? as u8 } else { MPS_SHARE_UNITS };
    let source = g.opt_text("source")?.map(leak_str);
    let products = build_products(ctx, t)?;
    let profiles: Vec<GiProfile> = (1..=MPS_SHARE_UNITS).map(|u| mps_profile(u, sms, mem_gb, whole, max_instances)).collect();
    Ok(GpuType {
        id: leak_str(id),
        products: Box::leak(products.into_boxed_slice()),
        gpcs: MPS_SHARE_UNITS,
        mem_slices: MPS_SHARE_UNITS,
        max_instances,
        profiles: Box::leak(profiles.into_boxed_slice()),
        placements_source: PlacementSource::Published,
        source,
        origin,
        partition: Partition::Mps,
    })
}

/// MiB in a data sheet's decimal GB (10^9 bytes).
const DECIMAL_GB_MIB: f64 = 1e9 / 1048576.0;

/// The share profile of `units` share units: `mps-<percent>`, that fraction of the SMs and of the
/// memory (rounded down, at least 1), at any start where it fits. The share's memory is what
/// `parva deploy` pins for it (CUDA_MPS_PINNED_DEVICE_MEM_LIMIT).
fn mps_profile(units: u8, sms: u16, mem_gb: u32, whole: (u32, MemSource), max_instances: u8) -> GiProfile {
    let pct = units as u32 * MPS_SHARE_STEP as u32;
    let starts: Vec<u8> = (0..=MPS_SHARE_UNITS - units).collect();
    GiProfile {
        name: leak_str(format!("mps-{pct}")),
        id: 1000 + pct,
        gpcs: units,
        mem_slices: units,
        mem_gb: (mem_gb * units as u32 / MPS_SHARE_UNITS as u32).max(1),
        mem_mib: ((u64::from(whole.0) * u64::from(units) / u64::from(MPS_SHARE_UNITS)) as u32).max(1),
        mem_source: whole.1,
        variant: false,
        sms: ((sms as u32 * units as u32 / MPS_SHARE_UNITS as u32).max(1)) as u16,
        starts: Box::leak(starts.into_boxed_slice()),
        max_count: (MPS_SHARE_UNITS / units).min(max_instances),
        media_extensions: false,
    }
}

#[allow(clippy::too_many_arguments)]
fn build_mig(ctx: &Ctx, t: &GpuTables, id: String, gpcs: u8, mem_slices: u8, max_instances: u8, placements_source: PlacementSource, source: Option<&'static str>, products: Vec<GpuProduct>, origin: &'static str) -> Result<GpuType, CatalogueError> {
    use CatalogueErrorKind as K;
    let mut profiles: Vec<GiProfile> = Vec::new();
    let mut lines: Vec<usize> = Vec::new();
    for pt in &t.profiles {
        let p = Fields::new(ctx, pt, "gpu.profile", &["id", "name", "gpcs", "mem_slices", "mem_gb", "mem_mib", "mem_source", "sms", "max_count", "placements", "media_extensions"])?;
        let pid = p.int("id", 0, u32::MAX as u64)? as u32;
        let name = p.text("name")?;
        let name = name.trim().trim_start_matches("MIG ").to_string();
        if name.chars().any(char::is_whitespace) {
            return Err(ctx.err(p.line("name"), "gpu.profile.name", K::Invalid, format!("`{name}`: a profile name has no blanks")));
        }
        let pg = p.int("gpcs", 1, MAX_SLICES as u64)? as u8;
        if pg > gpcs {
            return Err(ctx.err(p.line("gpcs"), "gpu.profile.gpcs", K::Invalid, format!("{name}: {pg} GPCs, more than the GPU's {gpcs}")));
        }
        let ms = p.int("mem_slices", 1, MAX_SLICES as u64)? as u8;
        if ms > mem_slices {
            return Err(ctx.err(p.line("mem_slices"), "gpu.profile.mem_slices", K::Invalid, format!("{name}: {ms} memory slices, more than the GPU's {mem_slices}")));
        }
        let mem_gb = p.int("mem_gb", 1, 1 << 20)? as u32;
        let (mem_mib, mem_source) = profile_memory(ctx, &p, &name, mem_gb, ms, mem_slices)?;
        let sms = p.int("sms", 1, u16::MAX as u64)? as u16;
        let max_count = p.int("max_count", 1, max_instances as u64)? as u8;
        let (starts, pl) = p.ints("placements")?;
        if starts.is_empty() {
            return Err(ctx.err(pl, "gpu.profile.placements", K::Placement, format!("{name}: no placement")));
        }
        let mut prev: Option<u64> = None;
        for &s in &starts {
            if s + ms as u64 > mem_slices as u64 {
                return Err(ctx.err(pl, "gpu.profile.placements", K::Placement, format!("{name}: start {s} + {ms} memory slices runs past the GPU's {mem_slices}")));
            }
            if prev.is_some_and(|p| p >= s) {
                return Err(ctx.err(pl, "gpu.profile.placements", K::Placement, format!("{name}: starts must be ascending, without repeats ({starts:?})")));
            }
            prev = Some(s);
        }
        let media_extensions = p.opt_bool("media_extensions")?;
        let variant = is_variant(&name);
        if media_extensions && !variant {
            return Err(ctx.err(p.line("media_extensions"), "gpu.profile.media_extensions", K::Invalid, format!("`{name}`: a media-extension profile is named `<base>+me` or `<base>+me.all`")));
        }
        if let Some(i) = profiles.iter().position(|o| o.id == pid) {
            return Err(ctx.err(p.line("id"), "gpu.profile.id", K::Overlap, format!("profile id {pid} is also {} (line {})", profiles[i].name, lines[i])));
        }
        if let Some(i) = profiles.iter().position(|o| o.name.eq_ignore_ascii_case(&name)) {
            return Err(ctx.err(p.line("name"), "gpu.profile.name", K::Overlap, format!("`{name}` is also profile id {} (line {})", profiles[i].id, lines[i])));
        }
        let starts: Vec<u8> = starts.iter().map(|&s| s as u8).collect();
        profiles.push(GiProfile {
            name: leak_str(name),
            id: pid,
            gpcs: pg,
            mem_slices: ms,
            mem_gb,
            mem_mib,
            mem_source,
            sms,
            starts: Box::leak(starts.into_boxed_slice()),
            max_count,
            media_extensions,
            variant,
        });
        lines.push(pt.line);
    }
    if !profiles.iter().any(|p| p.gpcs == gpcs && !p.variant && p.starts.contains(&0)) {
        return Err(ctx.err(t.gpu.line, "gpu.profile", K::Missing, format!("`{id}` has no whole-GPU profile ({gpcs} GPCs at start 0)")));
    }
    Ok(GpuType {
        id: leak_str(id),
        products: Box::leak(products.into_boxed_slice()),
        gpcs,
        mem_slices,
        max_instances,
        profiles: Box::leak(profiles.into_boxed_slice()),
        placements_source,
        source,
        origin,
        partition: Partition::Mig,
    })
}

/// A profile named `<base>+<engines>` or `<base>-me` is a variant of `<base>`.
pub fn is_variant(name: &str) -> bool {
    name.contains('+') || name.ends_with("-me")
}

/// A profile's memory: `mem_mib` with its `mem_source` (default "published"), or the assumed rule.
fn profile_memory(ctx: &Ctx, p: &Fields, name: &str, mem_gb: u32, ms: u8, gpu_slices: u8) -> Result<(u32, MemSource), CatalogueError> {
    use CatalogueErrorKind as K;
    let source = match p.opt_text("mem_source")?.as_deref() {
        None => None,
        Some("nvml") => Some(MemSource::Nvml),
        Some("published") => Some(MemSource::Published),
        Some("assumed") => Some(MemSource::Assumed),
        Some(other) => {
            return Err(ctx.err(p.line("mem_source"), "gpu.profile.mem_source", K::Invalid, format!("`{other}`: one of \"nvml\", \"published\", \"assumed\"")));
        }
    };
    if p.get("mem_mib").is_none() {
        if let Some(s) = source {
            return Err(ctx.err(p.line("mem_source"), "gpu.profile.mem_source", K::Missing, format!("{name}: mem_source \"{}\" without mem_mib", s.as_str())));
        }
        return Ok((assumed_mem_mib(mem_gb, ms, gpu_slices), MemSource::Assumed));
    }
    let mib = p.int("mem_mib", 1, u32::MAX as u64)? as u32;
    // A figure far above the name is a typo (the name is itself a rounded-up fraction).
    let named = f64::from(mem_gb) * 1024.0;
    if f64::from(mib) > named * 1.1 {
        return Err(ctx.err(p.line("mem_mib"), "gpu.profile.mem_mib", K::Invalid, format!("{name}: {mib} MiB is more than its name's {mem_gb} GB (+10 %)")));
    }
    Ok((mib, source.unwrap_or(MemSource::Published)))
}

/// One GPU-instance profile as NVML reports it (`nvmlDeviceGetGpuInstanceProfileInfoV` and
/// `nvmlDeviceGetGpuInstancePossiblePlacements`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NvmlProfile {
    /// GI profile id (`id`, e.g. 19).
    pub id: u32,
    /// `name` (`MIG 1g.10gb`).
    pub name: String,
    /// `sliceCount`: compute slices.
    pub slice_count: u32,
    /// `instanceCount`: instances at most.
    pub instance_count: u32,
    /// `multiprocessorCount`.
    pub multiprocessor_count: u32,
    /// `memorySizeMB`.
    pub memory_size_mb: u64,
    /// Possible placements, `(start, size)` in memory slices.
    pub placements: Vec<(u32, u32)>,
}

/// A GPU type from what NVML reports about a GPU: its product name, PCI device id and profiles
/// (in NVML's profile-index order). The type is named `id`; each profile's memory is NVML's exact
/// `memorySizeMB` (`mem_source = "nvml"`), its GB the name's (`1g.10gb`: 10; from `memorySizeMB`
/// when the name has none). Checked like a file (the same parser reads the text it makes), so
/// NVML output that breaks a rule is refused the same way.
pub fn from_nvml(id: &str, product: &str, pci_device_id: u32, profiles: &[NvmlProfile], origin: &str) -> Result<&'static GpuType, CatalogueError> {
    let ctx = Ctx { file: origin };
    let bad = |field: &str, m: String| ctx.err(0, field, CatalogueErrorKind::Invalid, m);
    let small = |v: u64, what: &str, name: &str| u8::try_from(v).ok().filter(|&x| x <= MAX_SLICES).ok_or_else(|| bad("gpu.profile", format!("{name}: {what} {v} is more than {MAX_SLICES}")));
    if profiles.is_empty() {
        return Err(bad("gpu.profile", format!("NVML reported no GPU-instance profile for `{product}`")));
    }
    let mut built: Vec<GiProfile> = Vec::new();
    let (mut gpcs, mut mem_slices, mut max_instances) = (0u8, 0u8, 0u8);
    for p in profiles {
        let name = p.name.trim().trim_start_matches("MIG ").to_string();
        let Some(&(_, size)) = p.placements.first() else {
            return Err(bad("gpu.profile.placements", format!("{name} (profile id {}): NVML reported no possible placement", p.id)));
        };
        if p.placements.iter().any(|&(_, s)| s != size) {
            return Err(bad("gpu.profile.placements", format!("{name}: placements of different sizes {:?}", p.placements)));
        }
        let mut starts: Vec<u8> = Vec::new();
        for &(start, size) in &p.placements {
            let end = small(start as u64 + size as u64, "placement end", &name)?;
            mem_slices = mem_slices.max(end);
            starts.push(start as u8);
        }
        starts.sort_unstable();
        starts.dedup();
        let pg = small(p.slice_count.into(), "slice count", &name)?;
        let count = small(p.instance_count.into(), "instance count", &name)?;
        gpcs = gpcs.max(pg);
        max_instances = max_instances.max(count);
        let mem_gb = name
            .split_once('.')
            .and_then(|(_, rest)| rest.split_once("gb"))
            .and_then(|(n, _)| n.parse::<u32>().ok())
            .unwrap_or_else(|| ((p.memory_size_mb as f64) / 1024.0).round() as u32);
        built.push(GiProfile {
            name: leak_str(name.clone()),
            id: p.id,
            gpcs: pg,
            mem_slices: small(size.into(), "placement size", &name)?,
            mem_gb,
            mem_mib: u32::try_from(p.memory_size_mb).map_err(|_| bad("gpu.profile.mem_mib", format!("{name}: {} MB", p.memory_size_mb)))?,
            mem_source: MemSource::Nvml,
            sms: u16::try_from(p.multiprocessor_count).map_err(|_| bad("gpu.profile.sms", format!("{name}: {} SMs", p.multiprocessor_count)))?,
            starts: Box::leak(starts.into_boxed_slice()),
            max_count: count,
            media_extensions: name.contains("+me"),
            variant: is_variant(&name),
        });
    }
    let ty = GpuType {
        id: leak_str(id.to_string()),
        products: Box::leak(vec![GpuProduct { name: leak_str(product.to_string()), pci_device_id }].into_boxed_slice()),
        gpcs,
        mem_slices,
        max_instances,
        profiles: Box::leak(built.into_boxed_slice()),
        placements_source: PlacementSource::Nvml,
        source: Some(leak_str(format!("read from NVML: {origin}"))),
        origin: leak_str(origin.to_string()),
        partition: Partition::Mig,
    };
    let mut types = parse(&to_text(&[&ty], ""), origin)?;
    types.pop().ok_or_else(|| bad("gpu", "no type".into()))
}

/// A type id from a product name: `NVIDIA B200` -> `b200`, `NVIDIA H100 80GB HBM3` ->
/// `h100-80gb-hbm3`.
pub fn id_from_product(name: &str) -> String {
    let name = name.trim();
    let name = name.strip_prefix("NVIDIA ").unwrap_or(name);
    let mut id = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '.' {
            id.push(c.to_ascii_lowercase());
        } else if !id.ends_with('-') && !id.is_empty() {
            id.push('-');
        }
    }
    let id: String = id.trim_end_matches('-').chars().take(64).collect();
    if id.is_empty() { "gpu".into() } else { id }
}

/// `s` as a TOML basic string.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Catalogue text for `types` (what [`parse`] reads back to the same types), after `header`
/// (written as `#` comment lines).
pub fn to_text(types: &[&GpuType], header: &str) -> String {
    use fmt::Write as _;
    let mut s = String::new();
    for l in header.lines() {
        let _ = if l.trim().is_empty() { writeln!(s, "#") } else { writeln!(s, "# {}", l.trim_end()) };
    }
    let _ = writeln!(s, "version = {VERSION}");
    for g in types {
        let _ = writeln!(s, "\n[[gpu]]");
        let _ = writeln!(s, "id = {}", quoted(g.id));
        if g.is_mps() {
            let whole = g.profile_for_size(g.gpcs);
            let _ = writeln!(s, "partition = \"mps\"");
            let _ = writeln!(s, "sms = {}", whole.map_or(0, |p| p.sms));
            let _ = writeln!(s, "mem_gb = {}", whole.map_or(0, |p| p.mem_gb));
            if let Some(w) = whole.filter(|w| w.mem_source != MemSource::Assumed) {
                let _ = writeln!(s, "mem_mib = {}", w.mem_mib);
            }
            let _ = writeln!(s, "max_instances = {}", g.max_instances);
            if let Some(src) = g.source {
                let _ = writeln!(s, "source = {}", quoted(src));
            }
            write_products(&mut s, g);
            continue;
        }
        let _ = writeln!(s, "gpcs = {}", g.gpcs);
        let _ = writeln!(s, "mem_slices = {}", g.mem_slices);
        let _ = writeln!(s, "max_instances = {}", g.max_instances);
        let _ = writeln!(s, "placements_source = {}", quoted(g.placements_source.as_str()));
        if let Some(src) = g.source {
            let _ = writeln!(s, "source = {}", quoted(src));
        }
        write_products(&mut s, g);
        for p in g.profiles {
            let starts: Vec<String> = p.starts.iter().map(u8::to_string).collect();
            let _ = writeln!(s, "\n[[gpu.profile]]");
            let _ = writeln!(s, "id = {}", p.id);
            let _ = writeln!(s, "name = {}", quoted(p.name));
            let _ = writeln!(s, "gpcs = {}", p.gpcs);
            let _ = writeln!(s, "mem_slices = {}", p.mem_slices);
            let _ = writeln!(s, "mem_gb = {}", p.mem_gb);
            let _ = writeln!(s, "mem_mib = {}", p.mem_mib);
            let _ = writeln!(s, "mem_source = {}", quoted(p.mem_source.as_str()));
            let _ = writeln!(s, "sms = {}", p.sms);
            let _ = writeln!(s, "max_count = {}", p.max_count);
            let _ = writeln!(s, "placements = [{}]", starts.join(", "));
            if p.media_extensions {
                let _ = writeln!(s, "media_extensions = true");
            }
        }
    }
    s
}

fn write_products(s: &mut String, g: &GpuType) {
    use fmt::Write as _;
    for p in g.products {
        let _ = writeln!(s, "\n[[gpu.product]]");
        let _ = writeln!(s, "name = {}", quoted(p.name));
        let _ = writeln!(s, "pci_device_id = {}", crate::mig::pci_id_text(p.pci_device_id));
    }
}

#[cfg(test)]
#[path = "catalogue_tests.rs"]
mod tests;
