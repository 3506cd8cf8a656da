//! The simulated node the day simulation runs the controller against (`simulate --rates`): the
//! same [`Node`] operations a live node has, each advancing a clock by what it costs (see
//! [`crate::day`]'s module doc), under the real rules.

use std::collections::BTreeMap;

use parva_core::DeploymentMap;
use parva_core::deploy::{JobSlot, Segment};
use parva_planner::replan::Costs;

use crate::node::{Node, NodeError};

/// A simulated node: a clock, the instances that exist and whether their workers run, and the
/// time each operation takes (see the module doc). It enforces the real rules (one instance per
/// slot, workers only on an instance, destroy only when stopped) and records every change.
#[derive(Debug, Clone)]
pub struct SimNode {
    /// Seconds since the start of the trace.
    pub clock: f64,
    instances: BTreeMap<(u32, u8), (Segment, bool)>,
    costs: Costs,
    /// Seconds a drained segment of each service takes to finish what it holds.
    drain_s: BTreeMap<String, f64>,
    /// Best-effort instances running (a creation over one waits `grace_s` first).
    pub jobs: Vec<JobSlot>,
    pub grace_s: f64,
    gpu: &'static parva_core::GpuType,
    /// Every change: when, what serves, what exists.
    pub events: Vec<(f64, DeploymentMap, DeploymentMap)>,
    pub started: u32,
    pub stopped: u32,
}

impl SimNode {
    /// A node serving `map` at `clock`.
    pub fn new(gpu: &'static parva_core::GpuType, map: &DeploymentMap, costs: Costs, drain_s: BTreeMap<String, f64>, clock: f64) -> SimNode {
        // MPS shares are no GPU configuration: no MIG time (as the planner's transition has it).
        let costs = if gpu.is_mps() { Costs { mig_create: 0.0, mig_destroy: 0.0, ..costs } } else { costs };
        SimNode {
            clock,
            instances: map.segments.iter().map(|s| ((s.gpu, s.placement), (s.clone(), true))).collect(),
            costs,
            drain_s,
            jobs: Vec::new(),
            grace_s: 0.0,
            gpu,
            events: Vec::new(),
            started: 0,
            stopped: 0,
        }
    }

    /// What exists (serving or not).
    pub fn held(&self) -> DeploymentMap {
        DeploymentMap { segments: self.instances.values().map(|(s, _)| s.clone()).collect(), jobs: Vec::new() }
    }

    fn record(&mut self) {
        let serving = DeploymentMap { segments: self.serving(), jobs: Vec::new() };
        let held = self.held();
        self.events.push((self.clock, serving, held));
    }
}

impl Node for SimNode {
    fn serving(&self) -> Vec<Segment> {
        self.instances.values().filter(|(_, on)| *on).map(|(s, _)| s.clone()).collect()
    }
    async fn create_instance(&mut self, seg: &Segment) -> Result<(), NodeError> {
        if self.instances.contains_key(&(seg.gpu, seg.placement)) {
            return Err(format!("GPU {} {{{}}} holds an instance already", seg.gpu, seg.placement).into());
        }
        self.instances.insert((seg.gpu, seg.placement), (seg.clone(), false));
        self.record();
        self.clock += self.costs.mig_create + self.costs.mps_start;
        Ok(())
    }
    async fn start(&mut self, seg: &Segment) -> Result<(), NodeError> {
        match self.instances.get(&(seg.gpu, seg.placement)) {
            Some((_, false)) => {}
            _ => return Err(format!("no stopped instance on GPU {} {{{}}}", seg.gpu, seg.placement).into()),
        }
        self.clock += self.costs.worker_start;
        self.instances.insert((seg.gpu, seg.placement), (seg.clone(), true));
        self.started += seg.num_proc;
        self.record();
        Ok(())
    }
    async fn stop(&mut self, gpu: u32, placement: u8) -> Result<Segment, NodeError> {
        let seg = match self.instances.get_mut(&(gpu, placement)) {
            Some((s, on)) if *on => {
                *on = false;
                s.clone()
            }
            _ => return Err(format!("nothing serves on GPU {gpu} {{{placement}}}").into()),
        };
        self.stopped += seg.num_proc;
        self.record();
        self.clock += self.drain_s.get(&seg.service).copied().unwrap_or(0.0).max(0.0);
        Ok(seg)
    }
    async fn destroy_instance(&mut self, gpu: u32, placement: u8) -> Result<(), NodeError> {
        match self.instances.get(&(gpu, placement)) {
            Some((_, false)) => {}
            Some((_, true)) => return Err(format!("the workers on GPU {gpu} {{{placement}}} still run").into()),
            None => return Err(format!("no instance on GPU {gpu} {{{placement}}}").into()),
        }
        self.clock += self.costs.mig_destroy;
        self.instances.remove(&(gpu, placement));
        self.record();
        Ok(())
    }
    async fn rebatch(&mut self, gpu: u32, placement: u8, batch: u32) -> Result<(), NodeError> {
        match self.instances.get_mut(&(gpu, placement)) {
            Some((s, true)) => s.batch_size = batch,
            _ => return Err(format!("nothing serves on GPU {gpu} {{{placement}}}").into()),
        }
        self.record();
        Ok(())
    }
    async fn before(&mut self, created: &[Segment]) -> Result<(), NodeError> {
        let over = created.iter().any(|s| self.jobs.iter().any(|j| parva_planner::jobs::job_overlaps(self.gpu, j, s)));
        if over && self.grace_s > 0.0 {
            // The jobs checkpoint; the instances to be created count as inference's already.
            let serving = DeploymentMap { segments: self.serving(), jobs: Vec::new() };
            let mut held = self.held();
            held.segments.extend(created.iter().cloned());
            self.events.push((self.clock, serving, held));
            self.clock += self.grace_s;
        }
        Ok(())
    }
}
