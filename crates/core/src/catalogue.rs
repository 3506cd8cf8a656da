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

mod build;
mod lexer;
mod nvml;
mod write;

pub use build::is_variant;
use build::build;
use lexer::{line_of, tables};
pub use nvml::{NvmlProfile, from_nvml, id_from_product};
pub use write::to_text;

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


#[cfg(test)]
#[path = "catalogue_tests.rs"]
mod tests;
