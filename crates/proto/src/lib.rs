//! parva-proto: what the router and its worker processes share, and nothing that serves HTTP.
//!
//! - [`frame`]: router <-> worker frames over a Unix socket; [`shm`]: the shared buffers
//!   batches travel in (and the regions clients register); [`tensor`] and [`meta`]: tensors and
//!   a model's metadata.
//! - [`worker`]: the worker side of the protocol, shared by the torch worker binary and the
//!   emulated backend; [`worker_args`]: the worker command line both spawners build and both
//!   worker binaries parse.
//! - [`jobs`]: the best-effort job process's side (its arguments, checkpoint state, the emulated
//!   job loop).
//!
//! The torch worker (`parva-worker`) depends on this crate and `parva-core` only, so it builds
//! without axum, hyper or prometheus.

pub mod frame;
pub mod jobs;
pub mod log;
pub mod meta;
pub mod shm;
pub mod tensor;
pub mod worker;
pub mod worker_args;

pub use log::log_filter;

/// Where a worker runs its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda,
}

impl Device {
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }
}
