//! # parva-profiler
//!
//! The sweep behind `parva profile`: a model's profile table (instance size x batch x MPS
//! processes, ParvaGPU's columns plus parva's) measured on a GPU or a CPU. Read top-down:
//!
//! - [`background`]: a best-effort job run beside every point (`--background`).
//! - [`grid`]: the points and the order they are measured in.
//! - [`table`]: the table on disk, written row by row, resumed on re-run.
//! - [`stats`]: rounds, the throughput's confidence interval, when to stop.
//! - [`prune`]: which points to skip, and why (latency cap, out of memory, `--fast` dominance).
//! - [`partition`]: how an instance size is made (`mig`, `mps`, `none`) through `parva-gpu`.
//! - [`workers`]: the worker processes (torch, or emulated from a table) and memory readings.
//! - [`pool`]: a point's worker processes driven in lock-step rounds over `parva_proto::frame`.
//! - [`sweep`]: the loop tying them together, with clean-up on every exit.
//! - [`meta`]: the metadata file written beside the tables.
//! - [`request`]: a run as a request (settings checked, model files, output directory, grid,
//!   workers, the finished table's summary): what `parva profile` fills from its flags.

pub mod background;
pub mod error;
pub mod grid;
pub mod meta;
pub mod partition;
pub mod pool;
pub mod prune;
pub mod request;
pub mod stats;
pub mod sweep;
pub mod table;
pub mod workers;

pub use error::ProfileError;
pub use grid::{Grid, Point};
pub use sweep::{Observer, Summary, Sweep};

#[cfg(test)]
mod sweep_tests;
