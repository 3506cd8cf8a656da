//! parva-runner: the node runtime (see `runner/README.md`).
//!
//! - [`serve()`] starts the KServe v2 router and the worker processes of one node of a deployment
//!   map ([`ServeOptions`]); `parva serve` and `parva deploy` call it.
//! - What the router shares with its workers (frames, slabs, tensors, metadata, worker
//!   arguments) is in `parva-proto`; [`regions`]: the regions clients register (KServe system
//!   shared memory).
//! - [`batcher`], [`supervisor`], [`router`], [`http`], [`kserve`], [`metrics`]: the router;
//!   [`front`]: the KServe v2 routes and body admission `serve` and `route` share.
//! - [`live`]: the node's segments changed while it serves (started, drained, rebatched), for
//!   `parva deploy --follow`.
//! - [`route`]: the router tier (`parva route`), spreading each service over its segments'
//!   processes (`parva segment`) on any node, with health checks and ejection.
//! - [`spawn`]: starting workers, with a real and an in-process fake implementation;
//!   [`jobs`]: starting and stopping best-effort job instances.

pub mod batcher;
pub mod error;
pub mod estimate;
pub mod front;
pub mod http;
pub mod jobs;
pub mod kserve;
pub mod live;
pub mod listen;
pub mod metrics;
pub mod regions;
pub mod route;
pub mod router;
pub mod serve;
pub mod spawn;
pub mod supervisor;
pub mod upstream;

pub use error::{InferError, ServeError};
pub use serve::{BackendKind, Device, ServeEvent, ServeOptions, WorkerCommand, serve};
