//! parva-runner: the node runtime (see `runner/README.md`).
//!
//! - [`serve()`] starts the KServe v2 router and the worker processes of one node of a deployment
//!   map ([`ServeOptions`]); `parva serve` and `parva deploy` call it.
//! - [`worker`]: the worker side (shared by the torch worker binary and the emulated backend);
//!   [`worker_args`]: the worker command line both spawners build and both worker binaries parse.
//! - [`proto`]: router <-> worker frames over a Unix socket (no libtorch); [`shm`]: the shared
//!   buffers batches travel in; [`regions`]: the regions clients register (KServe system shared
//!   memory).
//! - [`batcher`], [`supervisor`], [`router`], [`http`], [`kserve`], [`metrics`]: the router.
//! - [`live`]: the node's segments changed while it serves (started, drained, rebatched), for
//!   `parva deploy --follow`.
//! - [`route`]: the router tier (`parva route`), spreading each service over its segments'
//!   processes (`parva segment`) on any node, with health checks and ejection.
//! - [`spawn`]: starting workers, with a real and an in-process fake implementation.

pub mod batcher;
pub mod error;
pub mod http;
pub mod jobs;
pub mod kserve;
pub mod live;
pub mod listen;
pub mod meta;
pub mod metrics;
pub mod proto;
pub mod regions;
pub mod route;
pub mod router;
pub mod serve;
pub mod shm;
pub mod spawn;
pub mod supervisor;
pub mod tensor;
pub mod upstream;
pub mod worker;
pub mod worker_args;

pub use error::{InferError, ServeError};
pub use serve::{BackendKind, Device, ServeEvent, ServeOptions, WorkerCommand, serve};
