//! Errors of the core: every one names the file, and where it applies the line, the field, the
//! value found and the limit it broke, so that a user can fix the input without reading code.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where in an input file a problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based line number, when the problem is on one line.
    pub line: Option<u64>,
    /// Column name (or 1-based column number for header-less files).
    pub field: Option<String>,
}

impl Location {
    pub fn file(file: impl AsRef<Path>) -> Self {
        Location { file: file.as_ref().to_path_buf(), line: None, field: None }
    }
    pub fn line(file: impl AsRef<Path>, line: u64) -> Self {
        Location { file: file.as_ref().to_path_buf(), line: Some(line), field: None }
    }
    pub fn field(file: impl AsRef<Path>, line: u64, field: impl Into<String>) -> Self {
        Location { file: file.as_ref().to_path_buf(), line: Some(line), field: Some(field.into()) }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        Ok(())
    }
}

/// A problem with an input or output file of parva (profile tables, SLOs, service lists,
/// deployment maps).
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The cause is the error's `source()` (printed after it by `{:#}` / error chains).
    #[error("{path}: cannot {action}")]
    Io { path: PathBuf, action: &'static str, source: std::io::Error },
    #[error("{at}: {problem}")]
    Invalid { at: Location, problem: String },
}

impl FormatError {
    pub fn io(path: impl AsRef<Path>, action: &'static str, source: std::io::Error) -> Self {
        FormatError::Io { path: path.as_ref().to_path_buf(), action, source }
    }
    pub fn invalid(at: Location, problem: impl Into<String>) -> Self {
        FormatError::Invalid { at, problem: problem.into() }
    }
    /// The location the error refers to, when it has one (used by tests and by `--json`).
    pub fn location(&self) -> Option<&Location> {
        match self {
            FormatError::Invalid { at, .. } => Some(at),
            FormatError::Io { .. } => None,
        }
    }
}

/// Convert a `csv` crate error into ours, keeping the position it reports.
pub(crate) fn from_csv(path: &Path, err: csv::Error) -> FormatError {
    let line = err.position().map(|p| p.line());
    match err.into_kind() {
        csv::ErrorKind::Io(e) => FormatError::io(path, "read", e),
        csv::ErrorKind::UnequalLengths { expected_len, len, pos } => FormatError::invalid(
            Location { file: path.to_path_buf(), line: pos.map(|p| p.line()).or(line), field: None },
            format!("has {len} fields, expected {expected_len} like the header"),
        ),
        csv::ErrorKind::Utf8 { err, .. } => FormatError::invalid(
            Location { file: path.to_path_buf(), line, field: None },
            format!("is not valid UTF-8 ({err})"),
        ),
        other => FormatError::invalid(
            Location { file: path.to_path_buf(), line, field: None },
            format!("is not valid CSV ({other:?})"),
        ),
    }
}
