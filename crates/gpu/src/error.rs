//! Errors of the deploy flow. Each names the GPU (index and UUID), the profile and placement,
//! and what an operator can do about it.

use crate::mig::MigError;
use crate::mps::MpsError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeployError {
    #[error("the plan has no segment on node {node} (its nodes: {nodes:?})")]
    NoSegments { node: u32, nodes: Vec<u32> },
    #[error("the plan names no GPU type (no `gpu_type` column); pass --gpu-type TYPE")]
    NoGpuType,
    #[error("{0}")]
    UnknownGpuType(String),
    #[error("plan GPU {plan_gpu} of node {node}: {problem}")]
    BadLayout { node: u32, plan_gpu: u32, problem: String },
    #[error("plan GPU {plan_gpu} maps to GPU {gpu}, but this node has {count} GPU(s); see --gpu-index-map")]
    GpuMissing { plan_gpu: u32, gpu: u32, count: usize },
    #[error("bad --gpu-index-map `{spec}`: {reason} (expected PLAN=NODE pairs, e.g. 0=2,1=3)")]
    BadIndexMap { spec: String, reason: String },
    #[error("GPU {gpu} ({uuid}) is a `{found}` ({seen}), but the plan is for {want}")]
    TypeMismatch { gpu: u32, uuid: String, found: String, seen: String, want: String },
    #[error(
        "GPU {gpu} ({uuid}): MIG mode is {state}; parva never changes it. An administrator must run \
         `{command}` (with no process on the GPU; it may need a GPU reset or reboot), or deploy with --no-mig"
    )]
    MigDisabled { gpu: u32, uuid: String, state: String, command: String },
    #[error(
        "GPU {gpu} ({uuid}): --no-mig needs MIG mode off, but it is on; an administrator must run `{command}`, \
         or deploy without --no-mig"
    )]
    MigEnabled { gpu: u32, uuid: String, command: String },
    #[error("GPU {gpu} ({uuid}): MIG is not supported by this GPU; deploy with --no-mig")]
    MigUnsupported { gpu: u32, uuid: String },
    #[error(
        "GPU {gpu} ({uuid}): {profile} at placement {{{start}}} must change, but process(es) {pids} use it; \
         stop them (or an earlier `parva deploy`: `parva deploy --teardown`) and retry"
    )]
    ForeignProcesses { gpu: u32, uuid: String, profile: String, start: u8, pids: String },
    #[error("GPU {gpu} ({uuid}): {what}")]
    Inconsistent { gpu: u32, uuid: String, what: String },
    #[error(transparent)]
    Mig(#[from] MigError),
    #[error(transparent)]
    Mps(#[from] MpsError),
    #[error("{what} {path}: {message}")]
    File { what: &'static str, path: String, message: String },
    #[error(
        "deploy failed at step {step} of {total} ({action}): {cause}; {rollback}"
    )]
    StepFailed { step: usize, total: usize, action: String, cause: String, rollback: String },
    #[error("the node does not match checkpoint {path} after restoring it: {differences}")]
    RestoreMismatch { path: String, differences: String },
    #[error(
        "`parva deploy` (pid {pid}) still serves from this run directory ({path}); stop it (Ctrl-C, or \
         `parva deploy --teardown`) before deploying again"
    )]
    AlreadyServing { pid: u32, path: String },
    #[error("nothing to {what}: {path} does not exist (no earlier `parva deploy` in this run directory)")]
    NoRecord { what: &'static str, path: String },
}

impl DeployError {
    pub fn file(what: &'static str, path: &std::path::Path, message: impl std::fmt::Display) -> Self {
        DeployError::File { what, path: path.display().to_string(), message: message.to_string() }
    }
}
