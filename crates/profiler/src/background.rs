//! `parva profile --background KIND:MODEL`: a best-effort job running beside every instance size
//! measured, so that a table says what a model does with a job next to it under MPS (the rest of
//! the GPU's SMs, `100 - share` percent, for the job), measured rather than assumed. With `mig`
//! partitions the instances are isolated and the option is refused.

use std::time::Duration;

use parva_core::deploy::JobSlot;
use parva_core::jobs::JobKind;
use parva_runner::jobs::JobProcs;

use crate::ProfileError;
use crate::partition::Instance;

const SHARE: &str = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE";

/// The job run beside each instance size, and its process while one runs.
pub struct Background {
    procs: JobProcs,
    slot: JobSlot,
    grace: Duration,
    /// Instance sizes the job ran beside.
    pub sizes: Vec<u8>,
}

impl Background {
    /// `kind` job of `model` at `batch` rows a step, started with `procs`' command.
    pub fn new(procs: JobProcs, kind: JobKind, model: &str, batch: u32, grace: Duration) -> Self {
        let slot = JobSlot {
            node: 0,
            gpu: 0,
            job: format!("background-{}-{model}", kind.as_str()),
            model: model.to_string(),
            kind,
            placement: 0,
            instance_size: 0,
            batch_size: batch,
            priority: 0,
            profile: None,
            gpu_type: None,
            throughput: None,
        };
        Background { procs, slot, grace, sizes: Vec::new() }
    }

    /// What the metadata says about it.
    pub fn describe(&self) -> String {
        format!("a {} job of {} (batch {}) beside every point, on the SMs the point leaves (MPS)", self.slot.kind.as_str(), self.slot.model, self.slot.batch_size)
    }

    /// The job's environment beside `instance`: the same device and MPS daemon, the rest of the SMs.
    pub fn env(instance: &Instance) -> Vec<(String, String)> {
        instance
            .env
            .iter()
            .map(|(k, v)| match (k.as_str(), v.parse::<u8>()) {
                (SHARE, Ok(p)) => (k.clone(), 100u8.saturating_sub(p).max(1).to_string()),
                _ => (k.clone(), v.clone()),
            })
            .collect()
    }

    /// Start the job beside `instance` (before its workers).
    pub fn start(&mut self, instance: &Instance) -> Result<(), ProfileError> {
        self.slot.instance_size = instance.size;
        self.procs
            .start(self.slot.clone(), &Self::env(instance))
            .map_err(|e| ProfileError::Config(format!("starting the background job: {e}")))?;
        self.sizes.push(instance.size);
        Ok(())
    }

    /// Stop it (its checkpoint kept: the next size resumes it).
    pub fn stop(&mut self) {
        self.procs.stop_all(self.grace);
    }

    /// Samples the job made so far.
    pub fn samples(&self) -> u64 {
        self.procs.samples().values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_gets_the_rest_of_the_sms_on_the_same_device() {
        let inst = Instance {
            size: 2,
            env: vec![("CUDA_VISIBLE_DEVICES".into(), "GPU-1".into()), (SHARE.into(), "29".into()), ("CUDA_MPS_PIPE_DIRECTORY".into(), "/p".into())],
            device: None,
            how: String::new(),
        };
        let env = Background::env(&inst);
        assert_eq!(env[0], ("CUDA_VISIBLE_DEVICES".into(), "GPU-1".into()));
        assert_eq!(env[1], (SHARE.into(), "71".into()));
        assert_eq!(env[2], ("CUDA_MPS_PIPE_DIRECTORY".into(), "/p".into()));
        let whole = Instance { size: 7, env: vec![(SHARE.into(), "100".into())], device: None, how: String::new() };
        assert_eq!(Background::env(&whole)[0].1, "1", "never 0 %: MPS needs at least 1");
    }
}
