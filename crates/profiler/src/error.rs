//! The profiler's errors. A point's own failure (out of memory, a crashed worker) is a result
//! recorded in the table, never one of these; these stop the run.

use parva_core::FormatError;
use parva_gpu::mig::MigError;
use parva_gpu::mps::MpsError;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(
        "{path}: was not written by `parva profile`: its columns after the five ParvaGPU ones are `{found}`, not `{expected}`; choose another --out directory"
    )]
    ForeignTable { path: String, found: String, expected: String },
    #[error(
        "{path}:{line}: this point was measured with --partition {found}; this run uses --partition {want}; profile into another --out directory"
    )]
    PartitionMismatch { path: String, line: usize, found: String, want: String },
    #[error(transparent)]
    Mig(#[from] MigError),
    #[error(transparent)]
    Mps(#[from] MpsError),
    #[error("{0}")]
    Config(String),
}
