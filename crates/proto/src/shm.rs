//! Shared memory, for the two places where tensor bytes cross a process boundary on one node.
//!
//! - [`Slab`]: the buffers of one worker process. The router creates a file in `/dev/shm`
//!   (reserved in full with `posix_fallocate`, so a full tmpfs is an error at start-up and never a
//!   `SIGBUS` later), the worker maps it, the router unlinks it: from then on it exists only as the
//!   two mappings and is freed when both processes have let go of it (a worker that dies takes its
//!   mapping with it; the router drops its own with the connection and gives the restarted worker
//!   a new slab). It holds [`SLOTS`] slots, one per batch in flight, each an input area and an
//!   output area; the socket carries only offsets ([`crate::frame`]). A worker maps only its own
//!   slab, so a worker dying mid-batch cannot touch another worker's buffers.
//! - [`Region`]: a region a client registered with the KServe v2 system shared-memory extension
//!   (`/v2/systemsharedmemory/region/NAME/register`, as Triton implements it): the POSIX shared
//!   memory object `key` (`/dev/shm/KEY`), from `offset`, `byte_size` bytes.
//!
//! Every access is bounds-checked ([`ShmError::OutOfBounds`]); no slice of a mapping is ever
//! handed out past its end. A client's region is never mapped (see [`Region`]): a client that
//! shrinks its object after registering it gets a 400, and the server lives (Triton maps it and
//! dies with `SIGBUS`).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use memmap2::{MmapOptions, MmapRaw};

/// Batches one worker's slab holds at once: the pipeline depth of the batcher (one running, one
/// sent ahead).
pub const SLOTS: usize = 2;
/// Largest slab the router creates for one worker, bytes (4 GiB); a bigger one falls back to the
/// socket.
pub const MAX_SLAB: u64 = 4 << 30;
/// Largest region a client may register, bytes (16 GiB); the mapping is address space, not memory.
pub const MAX_REGION: u64 = 16 << 30;
/// Where POSIX shared-memory objects live on Linux (`shm_open` opens files here).
pub const SHM_DIR: &str = "/dev/shm";

#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: String, source: std::io::Error },
    #[error("{path} holds {len} bytes; {need} are needed (offset {offset} + byte size {size})")]
    TooSmall { path: String, len: u64, need: u64, offset: u64, size: u64 },
    #[error("{bytes} bytes at offset {at} are past the end of {what} ({len} bytes)")]
    OutOfBounds { what: String, at: u64, bytes: u64, len: u64 },
    #[error("key {key:?}: {why}")]
    BadKey { key: String, why: &'static str },
    #[error("{path}: a byte size of 0 cannot be mapped")]
    Empty { path: String },
    #[error("{what} of {size} bytes exceeds the limit of {limit}")]
    TooLarge { what: &'static str, size: u64, limit: u64 },
    /// The client shrank its object after registering it.
    #[error("{what} now holds {len} bytes of the {need} it was registered with: the object shrank after it was registered; register it again at its new size")]
    Shrunk { what: String, len: u64, need: u64 },
}

/// A shared mapping of a file, read and written through bounds-checked copies.
#[derive(Debug)]
pub struct Mapping {
    map: MmapRaw,
    path: PathBuf,
}

// The mapping is plain memory shared with another process; every access copies through a
// bounds-checked raw pointer, so sharing it between threads is as safe as sharing the pointer.
// Concurrent writers to one range are the protocol's to prevent (a slot belongs to one side at a
// time; a client must not rewrite a region while a request that uses it is in flight).
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    fn map(file: &File, path: &Path, offset: u64, len: u64) -> Result<Mapping, ShmError> {
        let len_us = usize::try_from(len).map_err(|_| ShmError::TooLarge { what: "mapping", size: len, limit: usize::MAX as u64 })?;
        if len_us == 0 {
            return Err(ShmError::Empty { path: path.display().to_string() });
        }
        let map = MmapOptions::new()
            .offset(offset)
            .len(len_us)
            .map_raw(file)
            .map_err(|e| ShmError::Io { what: "map", path: path.display().to_string(), source: e })?;
        Ok(Mapping { map, path: path.to_path_buf() })
    }

    /// Bytes mapped.
    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check(&self, at: u64, bytes: u64) -> Result<usize, ShmError> {
        let len = self.map.len() as u64;
        match at.checked_add(bytes) {
            Some(end) if end <= len => Ok(at as usize),
            _ => Err(ShmError::OutOfBounds { what: self.path.display().to_string(), at, bytes, len }),
        }
    }

    /// Copy `data` into the mapping at `at`.
    pub fn write(&self, at: u64, data: &[u8]) -> Result<(), ShmError> {
        let at = self.check(at, data.len() as u64)?;
        // SAFETY: `check` keeps the range inside the mapping, which lives as long as `self`;
        // `data` is process-private memory, so the ranges cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.map.as_mut_ptr().add(at), data.len()) };
        Ok(())
    }

    /// A copy of `bytes` bytes at `at`.
    pub fn read(&self, at: u64, bytes: u64) -> Result<Vec<u8>, ShmError> {
        let start = self.check(at, bytes)?;
        let mut out = vec![0u8; bytes as usize];
        // SAFETY: as in `write`.
        unsafe { std::ptr::copy_nonoverlapping(self.map.as_ptr().add(start), out.as_mut_ptr(), out.len()) };
        Ok(out)
    }

    /// The bytes at `at` without a copy: a [`Bytes`] that keeps the mapping alive. The bytes are
    /// whatever the range holds while they are read, so the protocol must keep the range unchanged
    /// for as long as the view is used (a worker's input slot until it answers the batch; a
    /// client's region until its request is answered).
    pub fn view(self: &Arc<Self>, at: u64, bytes: u64) -> Result<Bytes, ShmError> {
        let start = self.check(at, bytes)?;
        Ok(Bytes::from_owner(View { map: self.clone(), start, len: bytes as usize }))
    }
}

/// A range of a mapping, as the owner of a [`Bytes`].
struct View {
    map: Arc<Mapping>,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the range was checked against the mapping, which `self.map` keeps alive.
        unsafe { std::slice::from_raw_parts(self.map.map.as_ptr().add(self.start), self.len) }
    }
}

/// The layout of one worker's slab: [`SLOTS`] slots of an input area then an output area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SlabLayout {
    pub in_bytes: u64,
    pub out_bytes: u64,
}

impl SlabLayout {
    /// The slab of a process that runs batches of up to `max_batch` rows of `in_row` input bytes
    /// and `out_row` output bytes per row; `None` when it would be over [`MAX_SLAB`].
    pub fn for_batches(max_batch: usize, in_row: u64, out_row: u64) -> Option<SlabLayout> {
        let rows = max_batch.max(1) as u64;
        let l = SlabLayout { in_bytes: in_row.checked_mul(rows)?, out_bytes: out_row.checked_mul(rows)? };
        l.total().filter(|&t| t <= MAX_SLAB && t > 0).map(|_| l)
    }

    fn slot_bytes(&self) -> Option<u64> {
        self.in_bytes.checked_add(self.out_bytes)
    }

    /// Bytes of the whole slab.
    pub fn total(&self) -> Option<u64> {
        self.slot_bytes()?.checked_mul(SLOTS as u64)
    }

    /// Offset of slot `i`'s input area.
    pub fn input_at(&self, slot: usize) -> u64 {
        self.slot_bytes().unwrap_or(0) * slot as u64
    }

    /// Offset of slot `i`'s output area.
    pub fn output_at(&self, slot: usize) -> u64 {
        self.input_at(slot) + self.in_bytes
    }
}

/// A worker's buffers, on the router's side.
#[derive(Debug)]
pub struct Slab {
    pub map: Arc<Mapping>,
    pub layout: SlabLayout,
    /// The file, until the worker has mapped it and it is unlinked.
    file: Option<PathBuf>,
}

static SLAB_SEQ: AtomicU64 = AtomicU64::new(0);

impl Slab {
    /// Create a slab for `worker` in `dir` (normally [`SHM_DIR`]), reserving all its memory.
    pub fn create(dir: &Path, worker: &str, layout: SlabLayout) -> Result<Slab, ShmError> {
        let total = layout.total().filter(|&t| t <= MAX_SLAB).ok_or(ShmError::TooLarge {
            what: "slab",
            size: layout.total().unwrap_or(u64::MAX),
            limit: MAX_SLAB,
        })?;
        let safe: String = worker.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).take(64).collect();
        let path = dir.join(format!("parva-{}-{}-{safe}", std::process::id(), SLAB_SEQ.fetch_add(1, Ordering::Relaxed)));
        let io = |what| {
            let p = path.display().to_string();
            move |e| ShmError::Io { what, path: p, source: e }
        };
        let file = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path).map_err(io("create"))?;
        // SAFETY: plain FFI call on an open descriptor.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, total as libc::off_t) };
        let mapped = if rc != 0 {
            Err(io("reserve memory for")(std::io::Error::from_raw_os_error(rc)))
        } else {
            Mapping::map(&file, &path, 0, total)
        };
        match mapped {
            Ok(map) => Ok(Slab { map: Arc::new(map), layout, file: Some(path) }),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// The file the worker maps, while it exists.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Remove the file once the worker has mapped it; the memory lives on in the mappings.
    pub fn unlink(&mut self) {
        if let Some(p) = self.file.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for Slab {
    fn drop(&mut self) {
        self.unlink();
    }
}

/// Map a slab the router created (the worker's side).
pub fn open_slab(path: &Path, bytes: u64) -> Result<Arc<Mapping>, ShmError> {
    if bytes > MAX_SLAB {
        return Err(ShmError::TooLarge { what: "slab", size: bytes, limit: MAX_SLAB });
    }
    let file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| ShmError::Io { what: "open", path: path.display().to_string(), source: e })?;
    let len = file.metadata().map_err(|e| ShmError::Io { what: "stat", path: path.display().to_string(), source: e })?.len();
    if len < bytes {
        return Err(ShmError::TooSmall { path: path.display().to_string(), len, need: bytes, offset: 0, size: bytes });
    }
    Ok(Arc::new(Mapping::map(&file, path, 0, bytes)?))
}

/// A client's registered system shared-memory region.
///
/// Client memory is untrusted: the client can shrink its object at any moment, and a read or a
/// write through a mapping of the part that is gone kills the whole server with `SIGBUS`. So a
/// region is never mapped: its bytes are copied with `pread`/`pwrite` on the open object, where
/// a shrunk object is an error for that one request ([`ShmError::Shrunk`]).
#[derive(Debug, Clone)]
pub struct Region {
    pub name: String,
    pub key: String,
    pub offset: u64,
    pub byte_size: u64,
    file: Arc<File>,
}

/// The file of a POSIX shared-memory key (`/name` or `name`: `/dev/shm/name`). A key names one
/// object: no further `/`, no `..`, not empty.
pub fn key_path(dir: &Path, key: &str) -> Result<PathBuf, ShmError> {
    let bad = |why| ShmError::BadKey { key: key.to_string(), why };
    let name = key.strip_prefix('/').unwrap_or(key);
    if name.is_empty() {
        return Err(bad("is empty"));
    }
    if name.len() > 255 {
        return Err(bad("is longer than 255 bytes"));
    }
    if name.contains('/') || name == "." || name == ".." || name.contains('\0') {
        return Err(bad("must name one shared-memory object (like /input0): no '/' after the first, no '.' or '..'"));
    }
    if name.starts_with(&format!("parva-{}-", std::process::id())) {
        return Err(bad("names this server's own worker buffers"));
    }
    Ok(dir.join(name))
}

impl Region {
    /// Open `byte_size` bytes of the object `key` (in `dir`, normally [`SHM_DIR`]) from `offset`;
    /// the object must be a regular file there (a symbolic link is refused, never followed) and
    /// hold them.
    pub fn open(dir: &Path, name: &str, key: &str, offset: u64, byte_size: u64) -> Result<Region, ShmError> {
        if byte_size > MAX_REGION {
            return Err(ShmError::TooLarge { what: "region", size: byte_size, limit: MAX_REGION });
        }
        if byte_size == 0 {
            return Err(ShmError::Empty { path: key.to_string() });
        }
        let path = key_path(dir, key)?;
        let io = |what| {
            let p = path.display().to_string();
            move |e| ShmError::Io { what, path: p, source: e }
        };
        // O_NOFOLLOW: a symbolic link planted in /dev/shm must not let a client write to the file
        // it points at; O_NONBLOCK: opening a FIFO must not wait for a writer.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => ShmError::BadKey { key: key.to_string(), why: "is a symbolic link, not a shared-memory object" },
                _ => io("open")(e),
            })?;
        let meta = file.metadata().map_err(io("stat"))?;
        if !meta.is_file() {
            return Err(ShmError::BadKey { key: key.to_string(), why: "is not a shared-memory object (not a regular file)" });
        }
        let need = offset.saturating_add(byte_size);
        if meta.len() < need {
            return Err(ShmError::TooSmall { path: path.display().to_string(), len: meta.len(), need, offset, size: byte_size });
        }
        Ok(Region { name: name.to_string(), key: key.to_string(), offset, byte_size, file: Arc::new(file) })
    }

    fn check(&self, at: u64, bytes: u64) -> Result<u64, ShmError> {
        match at.checked_add(bytes) {
            Some(end) if end <= self.byte_size => Ok(self.offset + at),
            _ => Err(ShmError::OutOfBounds { what: self.what(), at, bytes, len: self.byte_size }),
        }
    }

    fn what(&self) -> String {
        format!("shared-memory region {:?} (key {:?})", self.name, self.key)
    }

    /// The object's size now, or the error that it shrank below `need` bytes.
    fn still_holds(&self, need: u64) -> Result<(), ShmError> {
        let len = self.file.metadata().map_err(|e| ShmError::Io { what: "stat", path: self.key.clone(), source: e })?.len();
        if len < need {
            return Err(ShmError::Shrunk { what: self.what(), len, need });
        }
        Ok(())
    }

    /// A copy of `bytes` bytes at `offset` within the region. `bytes` is the caller's to bound
    /// (a tensor checked against its model) before it asks.
    pub fn read(&self, offset: u64, bytes: u64) -> Result<Bytes, ShmError> {
        use std::os::unix::fs::FileExt;
        let at = self.check(offset, bytes)?;
        let len = usize::try_from(bytes).map_err(|_| ShmError::TooLarge { what: "read", size: bytes, limit: usize::MAX as u64 })?;
        let mut out = vec![0u8; len];
        match self.file.read_exact_at(&mut out, at) {
            Ok(()) => Ok(Bytes::from(out)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(self.still_holds(at + bytes).err().unwrap_or(ShmError::Shrunk { what: self.what(), len: 0, need: at + bytes }))
            }
            Err(e) => Err(ShmError::Io { what: "read", path: self.key.clone(), source: e }),
        }
    }

    /// Copy `data` into the region at `offset`; an object that shrank below the region is an
    /// error, never extended.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), ShmError> {
        use std::os::unix::fs::FileExt;
        let at = self.check(offset, data.len() as u64)?;
        self.still_holds(self.offset + self.byte_size)?;
        self.file.write_all_at(data, at).map_err(|e| ShmError::Io { what: "write", path: self.key.clone(), source: e })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slab_is_reserved_mapped_by_both_sides_and_gone_from_the_directory_once_unlinked() {
        let dir = tempfile::tempdir().unwrap();
        let layout = SlabLayout::for_batches(4, 16, 8).unwrap();
        assert_eq!(layout.total(), Some(2 * (64 + 32)));
        let mut slab = Slab::create(dir.path(), "svc/p0", layout).unwrap();
        let path = slab.path().unwrap().to_path_buf();
        assert!(path.file_name().unwrap().to_str().unwrap().ends_with("svc_p0"));
        let worker = open_slab(&path, layout.total().unwrap()).unwrap();
        slab.map.write(layout.input_at(1), b"abc").unwrap();
        assert_eq!(&worker.view(layout.input_at(1), 3).unwrap()[..], b"abc");
        worker.write(layout.output_at(1), b"xyz").unwrap();
        assert_eq!(slab.map.read(layout.output_at(1), 3).unwrap(), b"xyz");
        slab.unlink();
        assert!(!path.exists());
        // The memory outlives the file.
        assert_eq!(slab.map.read(layout.input_at(1), 3).unwrap(), b"abc");
        // Past the end: an error, never a read or write there.
        let end = layout.total().unwrap();
        assert!(matches!(slab.map.read(end - 2, 3), Err(ShmError::OutOfBounds { .. })));
        assert!(matches!(worker.write(u64::MAX, b"x"), Err(ShmError::OutOfBounds { .. })));
        assert!(matches!(worker.view(end, 1), Err(ShmError::OutOfBounds { .. })));
        assert!(open_slab(&path, 8).is_err());
    }

    #[test]
    fn a_dropped_slab_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let slab = Slab::create(dir.path(), "w", SlabLayout { in_bytes: 8, out_bytes: 8 }).unwrap();
        let path = slab.path().unwrap().to_path_buf();
        assert!(path.exists());
        drop(slab);
        assert!(!path.exists());
        assert!(SlabLayout::for_batches(1 << 20, 1 << 20, 0).is_none(), "over MAX_SLAB");
    }

    #[test]
    fn a_region_must_hold_what_it_declares_and_reads_stay_inside_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("in0"), (0u8..64).collect::<Vec<u8>>()).unwrap();
        let r = Region::open(dir.path(), "r", "/in0", 16, 32).unwrap();
        assert_eq!(&r.read(0, 4).unwrap()[..], &[16, 17, 18, 19]);
        assert!(matches!(r.read(30, 4), Err(ShmError::OutOfBounds { .. })));
        let e = r.read(30, 4).unwrap_err().to_string();
        assert!(e.contains("region \"r\"") && e.contains("32 bytes"), "{e}");
        r.write(28, &[9; 4]).unwrap();
        assert!(r.write(29, &[9; 4]).is_err());
        assert_eq!(std::fs::read(dir.path().join("in0")).unwrap()[44..48], [9; 4]);
        let e = Region::open(dir.path(), "r", "in0", 40, 32).unwrap_err().to_string();
        assert!(e.contains("holds 64 bytes; 72 are needed"), "{e}");
        let own = format!("/parva-{}-0-w0", std::process::id());
        for key in ["", "/", "/a/b", "..", "/..", own.as_str()] {
            assert!(matches!(Region::open(dir.path(), "r", key, 0, 1), Err(ShmError::BadKey { .. })), "{key}");
        }
        assert!(matches!(Region::open(dir.path(), "r", "/missing", 0, 1), Err(ShmError::Io { .. })));
        assert!(matches!(Region::open(dir.path(), "r", "/in0", 0, MAX_REGION + 1), Err(ShmError::TooLarge { .. })));
    }

    /// Regression (issue 34): a client that truncated its object after registering it killed the
    /// whole server with SIGBUS on the next read (input) or write (output) through the mapping.
    #[test]
    fn a_region_whose_object_shrank_is_an_error_for_the_request_and_is_never_extended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in0");
        std::fs::write(&path, [7u8; 8192]).unwrap();
        let r = Region::open(dir.path(), "r", "/in0", 0, 8192).unwrap();
        assert_eq!(r.read(4096, 4).unwrap()[..], [7; 4]);
        std::fs::File::options().write(true).open(&path).unwrap().set_len(100).unwrap();
        let e = r.read(4096, 4).unwrap_err();
        assert!(matches!(e, ShmError::Shrunk { len: 100, need: 4100, .. }), "{e:?}");
        assert!(e.to_string().contains("now holds 100 bytes") && e.to_string().contains("register it again"), "{e}");
        // A read that ends inside what is left still works.
        assert_eq!(r.read(0, 4).unwrap()[..], [7; 4]);
        let e = r.write(4096, &[1; 4]).unwrap_err();
        assert!(matches!(e, ShmError::Shrunk { .. }), "{e:?}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 100, "a write must not grow the client's object back");
    }

    /// Regression (issue 34): a symbolic link in /dev/shm registered as a region let a client
    /// overwrite any file the server could open.
    #[test]
    fn a_symbolic_link_or_a_non_regular_file_is_never_a_region() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, [5u8; 64]).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("link")).unwrap();
        let e = Region::open(dir.path(), "r", "/link", 0, 64).unwrap_err();
        assert!(matches!(e, ShmError::BadKey { why, .. } if why.contains("symbolic link")), "{e:?}");
        assert_eq!(std::fs::read(&victim).unwrap(), vec![5u8; 64]);
        std::fs::create_dir(dir.path().join("d")).unwrap();
        assert!(matches!(Region::open(dir.path(), "r", "/d", 0, 1), Err(ShmError::BadKey { .. } | ShmError::Io { .. })));
        let fifo = std::ffi::CString::new(dir.path().join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: plain FFI call with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let e = Region::open(dir.path(), "r", "/fifo", 0, 1).unwrap_err();
        assert!(matches!(e, ShmError::BadKey { why, .. } if why.contains("not a regular file")), "{e:?}");
    }
}
