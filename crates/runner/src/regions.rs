//! The KServe/Triton system shared-memory extension's registry: the regions local clients
//! registered (`/v2/systemsharedmemory/region/NAME/register`), by name, each a mapping of a POSIX
//! shared-memory object ([`parva_proto::shm::Region`]), and the checks of a tensor's reference into one.
//! The HTTP side ([`crate::http`]) serves the endpoints; [`crate::kserve`] resolves references.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::error::InferError;
use parva_proto::shm::{Region, SHM_DIR};

fn bad(msg: impl Into<String>) -> InferError {
    InferError::BadRequest(msg.into())
}

/// The shared-memory regions clients registered, by name.
#[derive(Debug)]
pub struct Regions {
    dir: PathBuf,
    by_name: Mutex<BTreeMap<String, Region>>,
}

/// Most regions registered at once.
pub const MAX_REGIONS: usize = 4096;

impl Default for Regions {
    fn default() -> Self {
        Regions::in_dir(PathBuf::from(SHM_DIR))
    }
}

impl Regions {
    /// Regions whose keys name files in `dir` (tests; normally [`SHM_DIR`]).
    pub fn in_dir(dir: PathBuf) -> Self {
        Regions { dir, by_name: Mutex::new(BTreeMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Region>> {
        self.by_name.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Map `byte_size` bytes of `key` from `offset` as region `name`.
    pub fn register(&self, name: &str, key: &str, offset: u64, byte_size: u64) -> Result<(), InferError> {
        if name.is_empty() {
            return Err(bad("a shared-memory region needs a name"));
        }
        if self.lock().contains_key(name) {
            return Err(bad(format!("shared memory region {name:?} is already registered; unregister it first")));
        }
        let region = Region::open(&self.dir, name, key, offset, byte_size).map_err(|e| bad(format!("registering shared memory region {name:?}: {e}")))?;
        let mut by_name = self.lock();
        if by_name.len() >= MAX_REGIONS {
            return Err(bad(format!("{MAX_REGIONS} shared-memory regions are registered, the most this server keeps; unregister some")));
        }
        if by_name.contains_key(name) {
            return Err(bad(format!("shared memory region {name:?} is already registered; unregister it first")));
        }
        by_name.insert(name.to_string(), region);
        Ok(())
    }

    /// Forget region `name` (`None`: all). Requests in flight keep their mapping until answered.
    pub fn unregister(&self, name: Option<&str>) {
        let mut by_name = self.lock();
        match name {
            Some(n) => {
                by_name.remove(n);
            }
            None => by_name.clear(),
        }
    }

    /// The status entries of region `name` (`None`: all), as Triton writes them.
    pub fn status(&self, name: Option<&str>) -> Result<Value, InferError> {
        let by_name = self.lock();
        let entry = |r: &Region| json!({"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size});
        match name {
            None => Ok(Value::Array(by_name.values().map(entry).collect())),
            Some(n) => by_name
                .get(n)
                .map(|r| Value::Array(vec![entry(r)]))
                .ok_or_else(|| bad(format!("Unable to find system shared memory region: {n:?}"))),
        }
    }

    /// Region `name`, or a 400 naming it.
    pub fn get(&self, name: &str) -> Result<Region, InferError> {
        self.lock().get(name).cloned().ok_or_else(|| bad(format!("Unable to find system shared memory region: {name:?}")))
    }

    /// The place a tensor's parameters name (`shared_memory_region`, `shared_memory_byte_size`,
    /// `shared_memory_offset`; `None`: not in shared memory), checked against the region's bounds.
    pub fn place(&self, what: &str, region: Option<&str>, size: Option<u64>, offset: Option<u64>) -> Result<Option<ShmPlace>, InferError> {
        let Some(name) = region else {
            if size.is_some() || offset.is_some() {
                return Err(bad(format!("{what}: shared_memory_byte_size or shared_memory_offset without shared_memory_region")));
            }
            return Ok(None);
        };
        let size = size.ok_or_else(|| bad(format!("{what}: shared_memory_region {name:?} without shared_memory_byte_size")))?;
        let offset = offset.unwrap_or(0);
        let region = self.get(name)?;
        if offset.checked_add(size).is_none_or(|end| end > region.byte_size) {
            return Err(bad(format!(
                "{what}: {size} bytes at offset {offset} do not fit shared memory region {name:?} of {} bytes",
                region.byte_size
            )));
        }
        Ok(Some(ShmPlace { region, offset, size }))
    }
}

/// Where in a registered region a tensor is read from or written to.
#[derive(Debug, Clone)]
pub struct ShmPlace {
    pub region: Region,
    pub offset: u64,
    pub size: u64,
}
