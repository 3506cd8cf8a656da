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

/// A CSV input read whole, with where each physical line starts: the `csv` crate's
/// `Position::line` does not count the blank lines it skips, so messages would name the wrong
/// line after one; positions are mapped through their byte offsets instead.
pub(crate) struct CsvInput {
    pub bytes: Vec<u8>,
    /// Byte offset of the start of each line.
    starts: Vec<u64>,
}

impl CsvInput {
    /// Read all of `reader` (`path` names it in messages).
    /// Read all of `reader` (`path` names it in messages), at most
    /// [`crate::limits::MAX_INPUT_BYTES`]: a larger input is refused once that much was read, never
    /// held whole.
    pub fn read(reader: impl std::io::Read, path: &Path) -> Result<CsvInput, FormatError> {
        Self::read_limited(reader, path, crate::limits::MAX_INPUT_BYTES)
    }

    pub fn read_limited(reader: impl std::io::Read, path: &Path, limit: u64) -> Result<CsvInput, FormatError> {
        use std::io::Read;
        let mut bytes = Vec::new();
        reader.take(limit.saturating_add(1)).read_to_end(&mut bytes).map_err(|e| FormatError::io(path, "read", e))?;
        if bytes.len() as u64 > limit {
            return Err(FormatError::invalid(
                Location::file(path),
                format!("is larger than {limit} bytes, the most parva reads from one input file"),
            ));
        }
        Ok(CsvInput::new(bytes))
    }

    /// Read a two-column CSV with header `header` (case-insensitive): opened as `action`, bounded
    /// as every CSV parva reads, empty rows skipped, `row(line, first, second)` called for each
    /// other row in order. Node-name lists and segment URL lists read through it.
    pub(crate) fn for_each_pair(
        path: &Path,
        action: &'static str,
        header: [&str; 2],
        mut row: impl FnMut(u64, &str, &str) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        let file = std::fs::File::open(path).map_err(|e| FormatError::io(path, action, e))?;
        Self::for_each_row(file, path, &header, |line, rec| row(line, rec.get(0).unwrap_or(""), rec.get(1).unwrap_or("")))
    }

    /// Read a CSV whose header is exactly `header` (case-insensitive) from `reader`, bounded as
    /// every CSV parva reads (`path` names it in messages): empty rows skipped, `row(line, record)`
    /// called for each other row in order.
    pub(crate) fn for_each_row(
        reader: impl std::io::Read,
        path: &Path,
        header: &[&str],
        mut row: impl FnMut(u64, &csv::StringRecord) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        let input = CsvInput::read(reader, path)?;
        let mut rdr = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(input.bytes.as_slice());
        let headers = rdr.headers().map_err(|e| input.error(path, e))?.clone();
        if headers.len() != header.len() || !headers.iter().zip(header).all(|(h, want)| h.eq_ignore_ascii_case(want)) {
            return Err(FormatError::invalid(
                Location::line(path, 1),
                format!("header must be `{}`; found `{}`", header.join(","), headers.iter().collect::<Vec<_>>().join(",")),
            ));
        }
        for rec in rdr.records() {
            let rec = rec.map_err(|e| input.error(path, e))?;
            if rec.iter().all(str::is_empty) {
                continue;
            }
            row(input.line(rec.position()), &rec)?;
        }
        Ok(())
    }

    /// Whether the input's last line ends with a line end (a file cut short mid-row does not).
    pub fn ends_with_newline(&self) -> bool {
        self.bytes.iter().rev().find(|b| !matches!(b, b' ' | b'\t')).is_none_or(|b| *b == b'\n')
    }

    /// The 1-based number of the last line holding anything.
    pub fn last_line(&self) -> u64 {
        let end = self.bytes.iter().rposition(|b| !matches!(b, b'\n' | b'\r' | b' ' | b'\t')).map_or(0, |i| i + 1);
        self.starts.partition_point(|s| (*s as usize) < end).max(1) as u64
    }

    pub fn new(bytes: Vec<u8>) -> CsvInput {
        let mut starts = vec![0u64];
        starts.extend(bytes.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i as u64 + 1));
        CsvInput { bytes, starts }
    }

    /// The 1-based physical line of a record at `pos` (0 when there is none). The crate puts a
    /// record's position before the empty lines it skips, so those are skipped here too.
    pub fn line(&self, pos: Option<&csv::Position>) -> u64 {
        let Some(p) = pos else { return 0 };
        let at = p.byte() as usize;
        let skip = self.bytes.get(at..).map_or(0, |rest| rest.iter().take_while(|b| matches!(b, b'\n' | b'\r')).count());
        self.starts.partition_point(|s| *s <= (at + skip) as u64) as u64
    }

    /// Convert a `csv` crate error into ours, at the physical line it happened.
    pub fn error(&self, path: &Path, err: csv::Error) -> FormatError {
        let line = err.position().map(|p| self.line(Some(p)));
        match err.into_kind() {
            csv::ErrorKind::Io(e) => FormatError::io(path, "read", e),
            csv::ErrorKind::UnequalLengths { expected_len, len, pos } => FormatError::invalid(
                Location { file: path.to_path_buf(), line: pos.map(|p| self.line(Some(&p))).or(line), field: None },
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
}
