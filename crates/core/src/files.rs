//! Writing parva's outputs. Every file parva writes (maps, reports, tables, records, checkpoints)
//! goes through [`write_atomic`]: a temporary file beside the target, created new (never through
//! a link), then renamed into place, so that a reader sees the old file or the new one, never half
//! of one, and an error leaves the old file as it was.
//!
//! Only regular files are written: an existing target that is anything else (a symbolic link, a
//! FIFO, a device such as `/dev/full`, a directory) is refused, never replaced. Regression (issue
//! 34): `plan --out /dev/full` exited 0 and left a regular file in place of the device; a FIFO or a
//! symbolic link at the path was replaced the same way.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::FormatError;

/// What a non-regular file is, for messages.
fn kind(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() || ft.is_block_device() {
        "a device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// `Err` when `path` exists and is not a regular file (checked without following a link).
pub fn check_output(path: &Path) -> Result<(), FormatError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_file() => Err(FormatError::io(
            path,
            "write output",
            std::io::Error::other(format!(
                "it exists and is {}: parva writes outputs only as regular files and replaces nothing else; give another path",
                kind(m.file_type())
            )),
        )),
        _ => Ok(()),
    }
}

/// Write `bytes` to `path`: a new temporary file in the same directory, then renamed over it.
/// The directory is created if needed; an existing non-regular target is refused.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FormatError> {
    check_output(path)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| FormatError::io(dir, "create directory", e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    // A stale temporary file of a crashed run of this pid: ours to remove (never followed).
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.flush()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(FormatError::io(&tmp, "write", e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        FormatError::io(path, "rename into place", e)
    })
}

/// `Ok` when directory `path` exists or can be made: its nearest existing ancestor is a
/// directory in which a directory can be created (tried with a probe that is removed at once).
pub fn check_creatable_dir(path: &Path) -> Result<(), FormatError> {
    if path.is_dir() {
        return Ok(());
    }
    let mut existing = path;
    while std::fs::symlink_metadata(existing).is_err() {
        existing = match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if existing == Path::new(".") || existing == Path::new("/") {
            break;
        }
    }
    let refuse = |why: String| FormatError::io(path, "create directory", std::io::Error::other(why));
    if !existing.is_dir() {
        return Err(refuse(format!("{} is not a directory", existing.display())));
    }
    let probe = existing.join(format!(".parva-probe-{}", std::process::id()));
    match std::fs::create_dir(&probe) {
        Ok(()) => {
            let _ = std::fs::remove_dir(&probe);
            Ok(())
        }
        Err(e) => Err(refuse(format!("no directory can be made in {}: {e}", existing.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_replaces_a_regular_file_and_refuses_anything_else() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/out.csv");
        write_atomic(&p, b"one\n").unwrap();
        write_atomic(&p, b"two\n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two\n");
        assert_eq!(std::fs::read_dir(d.path().join("sub")).unwrap().count(), 1, "no temporary file left");

        // A symbolic link: refused, and its target untouched.
        let target = d.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = d.path().join("link.csv");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = write_atomic(&link, b"x").unwrap_err();
        assert!(format!("{e:#}").contains("link.csv") && std::error::Error::source(&e).unwrap().to_string().contains("a symbolic link"), "{e:?}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());

        // A directory, a device.
        let e = write_atomic(d.path(), b"x").unwrap_err();
        assert!(std::error::Error::source(&e).unwrap().to_string().contains("a directory"), "{e:?}");
        let e = write_atomic(Path::new("/dev/null"), b"x").unwrap_err();
        assert!(std::error::Error::source(&e).unwrap().to_string().contains("a device"), "{e:?}");
    }

    #[test]
    fn an_error_leaves_the_old_file_whole_and_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/map.csv");
        write_atomic(&p, b"one").unwrap();
        // A directory stands where the temporary file goes: the write fails, the old file stays
        // whole (a write straight to the path would have replaced it).
        let tmp = d.path().join(format!("sub/.map.csv.tmp{}", std::process::id()));
        std::fs::create_dir_all(tmp.join("x")).unwrap();
        let e = write_atomic(&p, b"two").unwrap_err().to_string();
        assert!(e.contains(&tmp.display().to_string()) && e.contains("write"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        std::fs::remove_dir_all(&tmp).unwrap();
        assert_eq!(std::fs::read_dir(d.path().join("sub")).unwrap().count(), 1, "no temporary file left");
    }

    #[test]
    fn a_directory_that_cannot_be_made_is_found_before_anything_is_done() {
        let d = tempfile::tempdir().unwrap();
        assert!(check_creatable_dir(&d.path().join("a/b/c")).is_ok());
        assert!(!d.path().join("a").exists(), "the probe leaves nothing");
        std::fs::write(d.path().join("f"), b"").unwrap();
        let e = check_creatable_dir(&d.path().join("f/x")).unwrap_err();
        assert!(std::error::Error::source(&e).unwrap().to_string().contains("is not a directory"), "{e:?}");
        let e = check_creatable_dir(Path::new("/proc/parva-x/run")).unwrap_err();
        assert!(std::error::Error::source(&e).unwrap().to_string().contains("no directory can be made in /proc"), "{e:?}");
    }
}
