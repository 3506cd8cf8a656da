//! # parva-core
//!
//! The pure core of parva: data formats, MIG geometry, the batching policy, latency models and
//! the simulator. Nothing here touches a GPU, spawns a process, links libtorch or a solver; the
//! only I/O is reading and writing parva's own files. The planners, with their solver, live in
//! `parva-planner` (`crates/planner/src/`), which only the CLI depends on. Read it top-down:
//!
//! - [`error`]: one error type for every file format, naming file, line, field and value.
//! - [`mig`]: the catalogue of GPU types and their MIG profiles, and the layout validator.
//! - [`profile`]: profile tables (instance size x batch x processes -> throughput, latency).
//! - [`slo`]: services and their objectives (ParvaGPU SLO pairs, `services.csv`).
//! - [`deploy`]: deployment maps (parva's and ParvaGPU's CSVs).
//! - [`nodes`]: node-name lists (map node -> cluster node), for Kubernetes exports.
//! - [`jobs`]: best-effort job lists (training and batch jobs for idle GPCs).
//! - [`batching`]: the dynamic batching policy the router applies and the planner models.
//! - [`limits`]: the physical range of every quantity parva reads, and why.
//! - [`latency`]: latency models: which points a service may use and how much rate a segment takes.
//! - [`sim`]: a discrete-event simulation of a map under the batching policy.
//! - [`trace`]: rate traces (`time_s,service,rate`), for load that changes over time.
//! - [`utc`]: UTC timestamps for metadata and report names.

pub mod batching;
pub mod catalogue;
pub mod deploy;
pub mod error;
pub mod files;
pub mod fleet;
pub mod data_path;
pub mod interference;
pub mod jobs;
pub mod latency;
pub mod limits;
pub mod mig;
pub mod names;
pub mod nodes;
pub mod profile;
pub mod segments;
pub mod sim;
pub mod slo;
pub mod trace;
pub mod utc;

pub use deploy::{DeploymentMap, Segment};
pub use error::FormatError;
pub use mig::{GpuType, Placement};
pub use profile::{ModelProfile, ProfilePoint, ProfileSet};
pub use slo::Service;
