//! # parva-gpu
//!
//! GPU control for `parva deploy`: MIG instances at exact placements, one MPS control daemon per
//! instance, and the deploy flow (check, checkpoint, diff, apply, roll back). Read top-down:
//!
//! - [`mig`]: the narrow [`mig::MigControl`] trait and its types.
//! - [`nvml`]: the real implementation on NVML, loaded at run time (no CUDA/NVML to build or test).
//! - [`fake`]: a stateful fake node with the catalogue's placement rules, a call log and faults.
//! - [`mps`]: the [`mps::MpsControl`] trait, the real `nvidia-cuda-mps-control` driver and a fake.
//! - [`checkpoint`]: the node's MIG state by GPU UUID, saved before a change and restored on failure.
//! - [`plan`]: pure: deployment map + observed node state -> ordered list of typed actions.
//! - [`exec`]: pre-flight checks, the executor with rollback, teardown and restore.
//! - [`cuda`]: CUDA's own view of each device (driver API via `cudarc`, loaded at run time).
//! - [`doctor`]: `parva doctor`: every check of a node's readiness, read-only, over the traits above.

pub mod fake;
pub mod fault;
pub mod mig;
pub mod migparted;
pub mod nvml;
pub mod mps;
pub mod error;
pub mod plan;
pub mod segment;
pub mod checkpoint;
pub mod exec;
pub mod cuda;
pub mod doctor;
