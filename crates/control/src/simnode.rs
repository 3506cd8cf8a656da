//! The simulated node the day simulation runs the controller against (`simulate --rates`): the
//! same [`Node`] operations a live node has, each advancing a clock by what it costs (see
//! [`crate::day`]'s module doc), under the real rules.

use std::collections::BTreeMap;

use parva_core::DeploymentMap;
use parva_core::deploy::{JobSlot, Segment};
use parva_planner::replan::Costs;

use crate::node::{Made, Node, NodeError};

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
    fn clock(&self) -> Option<f64> {
        Some(self.clock)
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
    /// A wave as [`Costs::creation`] times it: the i-th instance is begun `i` instance-makings
    /// after the wave's start (and held from then), its workers ready one making and a worker
    /// start later. A slot that holds an instance already fails its segment; the ones after it
    /// are not tried (those before it are made).
    async fn create_all(&mut self, segs: &[Segment]) -> Vec<Made> {
        let mut made = Vec::with_capacity(segs.len());
        let mut wave: Vec<&Segment> = Vec::with_capacity(segs.len());
        for seg in segs {
            let taken = self.instances.contains_key(&(seg.gpu, seg.placement)) || wave.iter().any(|w| (w.gpu, w.placement) == (seg.gpu, seg.placement));
            if made.last().is_some_and(|m| *m != Made::Ready) {
                made.push(Made::NotTried);
            } else if taken {
                made.push(Made::Failed(format!("GPU {} {{{}}} holds an instance already", seg.gpu, seg.placement).into()));
            } else {
                made.push(Made::Ready);
                wave.push(seg);
            }
        }
        // Each instance appears when begun and serves when ready, in time order.
        let t0 = self.clock;
        let mut at: Vec<(f64, bool, &Segment)> = Vec::with_capacity(2 * wave.len());
        for (i, seg) in wave.iter().enumerate() {
            let (begun, ready) = self.costs.creation(i);
            at.push((t0 + begun, false, seg));
            at.push((t0 + ready, true, seg));
        }
        at.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for (t, serves, seg) in at {
            self.clock = t;
            self.instances.insert((seg.gpu, seg.placement), (seg.clone(), serves));
            if serves {
                self.started += seg.num_proc;
            }
            self.record();
        }
        self.clock = t0 + self.costs.wave(wave.len());
        made
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{Executor, block_on};
    use crate::steps::Step;
    use parva_core::GpuType;

    fn seg(gpu: u32, placement: u8, size: u8, service: &str) -> Segment {
        Segment { batch_size: 4, num_proc: 2, throughput: Some(100.0), ..Segment::at(0, gpu, placement, size, service, "m") }
    }

    /// The node's own record, read back: when each segment of a wave is held and when it serves,
    /// against the costs' arithmetic done here by hand (mig 1 + mps 0.5 = 1.5 s an instance,
    /// workers 2 s).
    #[test]
    fn a_wave_holds_each_instance_from_its_making_and_serves_it_once_its_workers_are_up() {
        let gpu = GpuType::by_id("a100-80gb").unwrap();
        let old = DeploymentMap { segments: vec![seg(0, 0, 7, "a")], jobs: Vec::new() };
        let costs = Costs { mig_create: 1.0, mig_destroy: 0.5, worker_start: 2.0, mps_start: 0.5 };
        let mut node = SimNode::new(gpu, &old, costs, BTreeMap::new(), 100.0);
        let steps: Vec<Step> = [seg(1, 0, 4, "a"), seg(1, 4, 3, "b"), seg(2, 0, 7, "b")].into_iter().map(|segment| Step::Create { segment }).collect();
        block_on(Executor::new(&mut node).run(&steps)).unwrap();
        // (time, segments serving, instances held) after each change.
        let seen: Vec<(f64, usize, usize)> = node.events.iter().map(|(t, s, h)| (*t, s.segments.len(), h.segments.len())).collect();
        let want = [(100.0, 1, 2), (101.5, 1, 3), (103.0, 1, 4), (103.5, 2, 4), (105.0, 3, 4), (106.5, 4, 4)];
        assert_eq!(seen, want);
        assert_eq!(node.clock, 106.5, "one after another it would end at {}", 100.0 + 3.0 * 3.5);
        assert_eq!(node.started, 6);
        assert_eq!(node.serving().len(), 4);
    }

    #[test]
    fn a_wave_onto_a_taken_slot_fails_there_and_is_undone() {
        let gpu = GpuType::by_id("a100-80gb").unwrap();
        let old = DeploymentMap { segments: vec![seg(0, 0, 4, "a")], jobs: Vec::new() };
        let mut node = SimNode::new(gpu, &old, Costs::default(), BTreeMap::new(), 0.0);
        let steps: Vec<Step> = [seg(1, 0, 7, "a"), seg(0, 0, 4, "b"), seg(2, 0, 7, "b")].into_iter().map(|segment| Step::Create { segment }).collect();
        let e = block_on(Executor::new(&mut node).run(&steps)).unwrap_err();
        assert_eq!(e.step, 2, "{e}");
        assert!(e.cause.0.contains("holds an instance already"), "{e}");
        assert_eq!(node.held(), old, "the first creation was undone");
    }
}
