//! A node the controller changes, and the executor that applies a transition's steps to it with
//! rollback.
//!
//! [`Node`] is the narrow interface: create or destroy an instance, start or stop a segment's
//! workers, change a batch size, and (for best-effort jobs) make room before a transition and
//! fill it after. The live node ([`crate::live`]) does it with MIG, MPS daemons and the router;
//! the simulated node ([`crate::simnode::SimNode`]) with a clock and costs; tests with a recording
//! fake that fails where told.
//!
//! [`Executor::run`] applies the steps in order and records how to undo each completed one. A
//! run of creations is one wave ([`Node::create_all`]): a node that can make several segments at
//! once does (the live and simulated nodes make the instances one after another and start each
//! one's workers as soon as its instance exists, as [`parva_planner::replan::Costs::creation`]
//! times it). When a step fails, the completed ones are undone newest first, so the node is back to what it
//! served before (an instance destroyed is created again, workers stopped are started again,
//! batch sizes are put back); when an undo fails too, the error says both.
//! [`Executor::run_until`] can also stop between steps when asked (a scale-down that a burst
//! overtakes), keeping what it did: never between a drain and its destroy, so no instance is
//! left drained and held.

use std::future::Future;

use parva_core::deploy::Segment;

use crate::steps::Step;

/// Why a node operation failed (the node's own words).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct NodeError(pub String);

impl From<String> for NodeError {
    fn from(s: String) -> Self {
        NodeError(s)
    }
}

impl From<&str> for NodeError {
    fn from(s: &str) -> Self {
        NodeError(s.into())
    }
}

/// How far one segment of a wave ([`Node::create_all`]) got.
#[derive(Debug, Clone, PartialEq)]
pub enum Made {
    /// Its instance exists and its workers are ready and routed.
    Ready,
    /// Its instance exists; its workers did not come up (why).
    Created(NodeError),
    /// Its instance was not created (why).
    Failed(NodeError),
    /// Not tried: an earlier one of the wave failed.
    NotTried,
}

/// A node the controller changes (see the module doc). Operations run one at a time; a wave of
/// creations is one operation.
pub trait Node {
    /// The segments serving now.
    fn serving(&self) -> Vec<Segment>;
    /// Create `seg`'s instance (and its MPS daemon); its workers are not started.
    fn create_instance(&mut self, seg: &Segment) -> impl Future<Output = Result<(), NodeError>>;
    /// Start `seg`'s workers on its existing instance; once ready, the router sends it requests.
    fn start(&mut self, seg: &Segment) -> impl Future<Output = Result<(), NodeError>>;
    /// Stop sending to the segment at (`gpu`, `placement`), let it finish, stop its workers;
    /// returns the segment (as [`Node::start`] takes it back).
    fn stop(&mut self, gpu: u32, placement: u8) -> impl Future<Output = Result<Segment, NodeError>>;
    /// Destroy the instance at (`gpu`, `placement`) (its workers stopped).
    fn destroy_instance(&mut self, gpu: u32, placement: u8) -> impl Future<Output = Result<(), NodeError>>;
    /// Change the batch size of the serving segment at (`gpu`, `placement`).
    fn rebatch(&mut self, gpu: u32, placement: u8, batch: u32) -> impl Future<Output = Result<(), NodeError>>;
    /// Create and start a wave of segments; one [`Made`] per segment, in order. This default makes
    /// them one after another and stops at the first failure; a node that can make them side by
    /// side overrides it (and may then report several failures).
    fn create_all(&mut self, segs: &[Segment]) -> impl Future<Output = Vec<Made>> {
        one_after_another(self, segs)
    }
    /// Before the steps: make room for `created` (reclaim best-effort jobs from their slots).
    fn before(&mut self, _created: &[Segment]) -> impl Future<Output = Result<(), NodeError>> {
        async { Ok(()) }
    }
    /// After the steps, applied or undone: fill what is free again (best-effort jobs).
    fn after(&mut self) -> impl Future<Output = ()> {
        async {}
    }
    /// The node's own clock, where it keeps one (the simulated node: a transition's steps move
    /// it); `None` for a node on the wall clock.
    fn clock(&self) -> Option<f64> {
        None
    }
}

/// A wave made one segment after another (instance, then workers), stopping at the first
/// failure: [`Node::create_all`]'s default.
pub async fn one_after_another<N: Node + ?Sized>(node: &mut N, segs: &[Segment]) -> Vec<Made> {
    let mut made = Vec::with_capacity(segs.len());
    for seg in segs {
        if made.last().is_some_and(|m| *m != Made::Ready) {
            made.push(Made::NotTried);
            continue;
        }
        made.push(match node.create_instance(seg).await {
            Err(e) => Made::Failed(e),
            Ok(()) => match node.start(seg).await {
                Ok(()) => Made::Ready,
                Err(e) => Made::Created(e),
            },
        });
    }
    made
}

/// How to undo a completed operation.
#[derive(Debug, Clone, PartialEq)]
enum Undo {
    /// An instance was created: destroy it.
    Created { gpu: u32, placement: u8 },
    /// Workers were started: stop them.
    Started { gpu: u32, placement: u8 },
    /// Workers were stopped: start them again.
    Stopped { seg: Segment },
    /// An instance was destroyed: create it again.
    Destroyed { seg: Segment },
    /// A batch size was changed from `old`.
    Rebatched { gpu: u32, placement: u8, old: u32 },
}

/// A transition that did not complete.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("step {step} of {total} ({what}) failed: {cause}; {}", match rollback { Ok(n) => format!("the {n} operation(s) before it were undone, the node serves what it served before"), Err(e) => format!("undoing the operations before it ALSO failed: {e}") })]
pub struct StepFailed {
    pub step: usize,
    pub total: usize,
    pub what: String,
    pub cause: NodeError,
    /// The operations undone, or why undoing failed.
    pub rollback: Result<usize, String>,
}

/// Applies steps to a node, undoing them all when one fails (see the module doc).
pub struct Executor<'a, N: Node> {
    node: &'a mut N,
    undo: Vec<Undo>,
}

impl<'a, N: Node> Executor<'a, N> {
    pub fn new(node: &'a mut N) -> Self {
        Executor { node, undo: Vec::new() }
    }

    /// Apply `steps` in order (a run of creations as one wave); on a failure, undo what was done
    /// and say so.
    pub async fn run(self, steps: &[Step]) -> Result<(), StepFailed> {
        self.run_until(steps, &mut |_| false).await.map(|_| ())
    }

    /// [`Executor::run`], asking `stop` (with the node's [`Node::clock`]) before each step after
    /// the first where the node may be left (no instance drained and not yet destroyed): when it
    /// says so, the steps done stay done (every prefix of a make-before-break order keeps each
    /// service's capacity) and `Ok(Some(n))` says how many. `Ok(None)`: all applied.
    pub async fn run_until(mut self, steps: &[Step], stop: &mut (dyn FnMut(Option<f64>) -> bool + Send)) -> Result<Option<usize>, StepFailed> {
        let mut i = 0;
        let mut drained: Vec<(u32, u8)> = Vec::new();
        while i < steps.len() {
            if i > 0 && drained.is_empty() && stop(self.node.clock()) {
                return Ok(Some(i));
            }
            match &steps[i] {
                Step::Drain { gpu, placement, .. } => drained.push((*gpu, *placement)),
                Step::Destroy { gpu, placement, .. } => drained.retain(|d| *d != (*gpu, *placement)),
                _ => {}
            }
            let wave: Vec<Segment> = steps[i..]
                .iter()
                .map_while(|s| match s {
                    Step::Create { segment } => Some(segment.clone()),
                    _ => None,
                })
                .collect();
            let (done, failed) = if wave.is_empty() {
                (1, self.apply(&steps[i]).await.err().map(|e| (0, e)))
            } else {
                (wave.len(), self.create_all(&wave).await)
            };
            if let Some((k, cause)) = failed {
                let rollback = self.roll_back().await;
                return Err(StepFailed { step: i + k + 1, total: steps.len(), what: steps[i + k].describe(), cause, rollback });
            }
            i += done;
        }
        Ok(None)
    }

    /// A wave of creations; the first failure (its index in the wave and why), if any. Everything
    /// the wave did is on the undo stack either way.
    async fn create_all(&mut self, wave: &[Segment]) -> Option<(usize, NodeError)> {
        let made = self.node.create_all(wave).await;
        let mut failed = None;
        for (k, seg) in wave.iter().enumerate() {
            let (gpu, placement) = (seg.gpu, seg.placement);
            let why = match made.get(k).cloned().unwrap_or(Made::NotTried) {
                Made::Ready => {
                    self.undo.push(Undo::Created { gpu, placement });
                    self.undo.push(Undo::Started { gpu, placement });
                    continue;
                }
                Made::Created(e) => {
                    self.undo.push(Undo::Created { gpu, placement });
                    e
                }
                Made::Failed(e) => e,
                Made::NotTried => NodeError("not tried: an earlier creation of its wave failed".into()),
            };
            failed = failed.or(Some((k, why)));
        }
        failed
    }

    async fn apply(&mut self, step: &Step) -> Result<(), NodeError> {
        match step {
            Step::Create { segment } => {
                if let Some((_, e)) = self.create_all(std::slice::from_ref(segment)).await {
                    return Err(e);
                }
            }
            Step::Drain { gpu, placement, .. } => {
                let seg = self.node.stop(*gpu, *placement).await?;
                self.undo.push(Undo::Stopped { seg });
            }
            Step::Destroy { gpu, placement, .. } => {
                let serving = self.node.serving().into_iter().find(|s| (s.gpu, s.placement) == (*gpu, *placement));
                let seg = match serving {
                    Some(_) => {
                        let seg = self.node.stop(*gpu, *placement).await?;
                        self.undo.push(Undo::Stopped { seg: seg.clone() });
                        Some(seg)
                    }
                    None => self.stopped(*gpu, *placement),
                };
                self.node.destroy_instance(*gpu, *placement).await?;
                let seg = seg.ok_or_else(|| NodeError(format!("no segment known on GPU {gpu} {{{placement}}} to destroy")))?;
                self.undo.push(Undo::Destroyed { seg });
            }
            Step::Rebatch { gpu, placement, batch, .. } => {
                let old = self
                    .node
                    .serving()
                    .into_iter()
                    .find(|s| (s.gpu, s.placement) == (*gpu, *placement))
                    .map(|s| s.batch_size)
                    .ok_or_else(|| NodeError(format!("no segment serving on GPU {gpu} {{{placement}}} to rebatch")))?;
                self.node.rebatch(*gpu, *placement, *batch).await?;
                self.undo.push(Undo::Rebatched { gpu: *gpu, placement: *placement, old });
            }
        }
        Ok(())
    }

    /// The segment a completed drain of (`gpu`, `placement`) stopped, if any.
    fn stopped(&self, gpu: u32, placement: u8) -> Option<Segment> {
        self.undo.iter().rev().find_map(|u| match u {
            Undo::Stopped { seg } if (seg.gpu, seg.placement) == (gpu, placement) => Some(seg.clone()),
            _ => None,
        })
    }

    /// Undo the completed operations, newest first. `Ok(n)`: n undone.
    async fn roll_back(&mut self) -> Result<usize, String> {
        let mut n = 0;
        while let Some(u) = self.undo.pop() {
            let done = match &u {
                Undo::Created { gpu, placement } => self.node.destroy_instance(*gpu, *placement).await,
                Undo::Started { gpu, placement } => self.node.stop(*gpu, *placement).await.map(|_| ()),
                Undo::Stopped { seg } => self.node.start(seg).await,
                Undo::Destroyed { seg } => self.node.create_instance(seg).await,
                Undo::Rebatched { gpu, placement, old } => self.node.rebatch(*gpu, *placement, *old).await,
            };
            if let Err(e) = done {
                return Err(format!("undoing {u:?}: {e} ({n} undone before it; {} left)", self.undo.len()));
            }
            n += 1;
        }
        Ok(n)
    }
}

/// Run a future that never waits (the simulated node's operations) to completion.
pub fn block_on<F: Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
    fn noop(_: *const ()) {}
    fn clone(p: *const ()) -> RawWaker {
        RawWaker::new(p, &VTABLE)
    }
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
    // SAFETY: the vtable's functions do nothing with the (null) data pointer.
    let waker = unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) };
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        // A simulated operation is always ready; anything else is a bug in the caller.
        std::thread::yield_now();
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A recording node that enforces the real rules (one instance per slot, workers only on an
    //! instance, destroy only when stopped) and fails the operations it is told to.

    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct FakeNode {
        /// Instances by slot, and whether their workers run.
        pub instances: BTreeMap<(u32, u8), (Segment, bool)>,
        pub calls: Vec<String>,
        /// Fail the n-th call (1-based) whose text starts with the prefix.
        pub fail: Vec<(String, usize)>,
        seen: BTreeMap<String, usize>,
        /// Make a wave side by side: every instance, then every segment's workers, each
        /// attempted whatever the others did (as a node that starts workers at once may fail
        /// several); otherwise one after another.
        pub side_by_side: bool,
    }

    impl FakeNode {
        pub fn with(segments: &[Segment]) -> Self {
            FakeNode { instances: segments.iter().map(|s| ((s.gpu, s.placement), (s.clone(), true))).collect(), ..Default::default() }
        }

        fn call(&mut self, text: String) -> Result<(), NodeError> {
            self.calls.push(text.clone());
            for (prefix, nth) in &self.fail {
                if text.starts_with(prefix.as_str()) {
                    let c = self.seen.entry(prefix.clone()).or_default();
                    *c += 1;
                    if c == nth {
                        return Err(NodeError(format!("injected failure of {text}")));
                    }
                }
            }
            Ok(())
        }
    }

    impl Node for FakeNode {
        fn serving(&self) -> Vec<Segment> {
            self.instances.values().filter(|(_, on)| *on).map(|(s, _)| s.clone()).collect()
        }
        async fn create_instance(&mut self, seg: &Segment) -> Result<(), NodeError> {
            self.call(format!("create_instance {} {}", seg.gpu, seg.placement))?;
            if self.instances.contains_key(&(seg.gpu, seg.placement)) {
                return Err("an instance is there already".into());
            }
            self.instances.insert((seg.gpu, seg.placement), (seg.clone(), false));
            Ok(())
        }
        async fn start(&mut self, seg: &Segment) -> Result<(), NodeError> {
            self.call(format!("start {} {}", seg.gpu, seg.placement))?;
            match self.instances.get_mut(&(seg.gpu, seg.placement)) {
                Some((s, on)) if !*on => {
                    *s = seg.clone();
                    *on = true;
                    Ok(())
                }
                _ => Err("no stopped instance there".into()),
            }
        }
        async fn stop(&mut self, gpu: u32, placement: u8) -> Result<Segment, NodeError> {
            self.call(format!("stop {gpu} {placement}"))?;
            match self.instances.get_mut(&(gpu, placement)) {
                Some((s, on)) if *on => {
                    *on = false;
                    Ok(s.clone())
                }
                _ => Err("nothing serving there".into()),
            }
        }
        async fn destroy_instance(&mut self, gpu: u32, placement: u8) -> Result<(), NodeError> {
            self.call(format!("destroy_instance {gpu} {placement}"))?;
            match self.instances.get(&(gpu, placement)) {
                Some((_, false)) => {
                    self.instances.remove(&(gpu, placement));
                    Ok(())
                }
                Some((_, true)) => Err("its workers still run".into()),
                None => Err("no instance there".into()),
            }
        }
        async fn rebatch(&mut self, gpu: u32, placement: u8, batch: u32) -> Result<(), NodeError> {
            self.call(format!("rebatch {gpu} {placement} {batch}"))?;
            match self.instances.get_mut(&(gpu, placement)) {
                Some((s, true)) => {
                    s.batch_size = batch;
                    Ok(())
                }
                _ => Err("nothing serving there".into()),
            }
        }
        async fn create_all(&mut self, segs: &[Segment]) -> Vec<Made> {
            if !self.side_by_side {
                return one_after_another(self, segs).await;
            }
            let mut made = Vec::with_capacity(segs.len());
            for seg in segs {
                made.push(match self.create_instance(seg).await {
                    Ok(()) => Made::Ready,
                    Err(e) => Made::Failed(e),
                });
            }
            for (seg, m) in segs.iter().zip(made.iter_mut()) {
                if *m == Made::Ready
                    && let Err(e) = self.start(seg).await
                {
                    *m = Made::Created(e);
                }
            }
            made
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeNode;
    use super::*;

    fn seg(gpu: u32, placement: u8, size: u8, service: &str) -> Segment {
        Segment { batch_size: 4, throughput: Some(100.0), rate: Some(50.0), slo_ms: Some(100.0), ..Segment::at(0, gpu, placement, size, service, "m") }
    }

    fn transition() -> Vec<Step> {
        vec![
            Step::Rebatch { gpu: 0, placement: 4, service: "b".into(), batch: 8 },
            Step::Create { segment: seg(1, 0, 7, "a") },
            Step::Drain { gpu: 0, placement: 0, service: "a".into() },
            Step::Destroy { gpu: 0, placement: 0, service: "a".into() },
        ]
    }

    /// A run asked to stop stops before the next step, keeps what it did (no undo), and is
    /// never asked between a drain and the destroy of the same instance.
    #[test]
    fn a_run_stops_where_told_and_never_between_a_drain_and_its_destroy() {
        let start = FakeNode::with(&[seg(0, 0, 4, "a"), seg(0, 4, 3, "b")]);
        for stop_at in 1..=3 {
            let mut node = start.clone();
            let mut asked = Vec::new();
            let done = block_on(Executor::new(&mut node).run_until(&transition(), &mut |_| {
                asked.push(());
                asked.len() >= stop_at
            }))
            .unwrap();
            // Asked before steps 2 and 3 (step 4 follows the drain of step 3): at most twice.
            let expect = [Some(1), Some(2), None][stop_at - 1];
            assert_eq!(done, expect, "stop at question {stop_at}");
            assert!(asked.len() <= 2);
            let mut whole = start.clone();
            let steps = transition();
            block_on(Executor::new(&mut whole).run(&steps[..done.unwrap_or(steps.len())])).unwrap();
            assert_eq!(node.instances, whole.instances, "the node holds what the steps done made");
        }
    }

    #[test]
    fn a_transition_applies_in_order() {
        let start = FakeNode::with(&[seg(0, 0, 4, "a"), seg(0, 4, 3, "b")]);
        let mut node = start.clone();
        block_on(Executor::new(&mut node).run(&transition())).unwrap();
        let serving: Vec<(u32, u8, u32)> = node.serving().iter().map(|s| (s.gpu, s.placement, s.batch_size)).collect();
        assert_eq!(serving, vec![(0, 4, 8), (1, 0, 4)]);
    }

    /// Regression (issue 32): the rollback test injected its failure at the first step, so the
    /// undo stack was always empty. Here the 2nd, 3rd and 4th steps fail in turn: every completed
    /// operation is undone newest first and the node is exactly its checkpoint again.
    #[test]
    fn a_failure_at_a_later_step_undoes_the_completed_ones_in_reverse() {
        let start = FakeNode::with(&[seg(0, 0, 4, "a"), seg(0, 4, 3, "b")]);
        for (fail, step, undone) in [("start 1 0", 2, 2), ("stop 0 0", 3, 3), ("destroy_instance 0 0", 4, 4)] {
            let mut node = start.clone();
            node.fail = vec![(fail.to_string(), 1)];
            let e = block_on(Executor::new(&mut node).run(&transition())).unwrap_err();
            assert_eq!((e.step, e.rollback.clone()), (step, Ok(undone)), "{e}");
            assert!(e.to_string().contains("the node serves what it served before"), "{e}");
            assert_eq!(node.instances, start.instances, "failing at {fail}: {:#?}", node.calls);
            // The undo calls are the completed ones in reverse.
            let after: Vec<&String> = node.calls.iter().skip_while(|c| !c.starts_with(fail)).skip(1).collect();
            assert_eq!(after.last().map(|c| c.as_str()), Some("rebatch 0 4 4"), "the first step is undone last: {after:?}");
        }
    }

    /// A wave whose middle segment's workers fail while the others come up: everything the wave
    /// made is undone (the others' workers stopped, all three instances destroyed), and so is the
    /// step before it.
    #[test]
    fn a_wave_made_side_by_side_is_undone_whole_when_one_of_it_fails() {
        let start = FakeNode::with(&[seg(0, 0, 4, "a"), seg(0, 4, 3, "b")]);
        let steps = vec![
            Step::Rebatch { gpu: 0, placement: 4, service: "b".into(), batch: 8 },
            Step::Create { segment: seg(1, 0, 4, "a") },
            Step::Create { segment: seg(1, 4, 3, "a") },
            Step::Create { segment: seg(2, 0, 7, "b") },
            Step::Drain { gpu: 0, placement: 0, service: "a".into() },
        ];
        let mut node = start.clone();
        node.side_by_side = true;
        node.fail = vec![("start 1 4".into(), 1)];
        let e = block_on(Executor::new(&mut node).run(&steps)).unwrap_err();
        // The wave is steps 2-4; its second creation failed, the others were made.
        assert_eq!((e.step, e.rollback.clone()), (3, Ok(1 + 3 + 2)), "{e}");
        assert!(node.calls.contains(&"start 2 0".to_string()), "the wave went on beside the failure: {:?}", node.calls);
        assert!(!node.calls.iter().any(|c| c.starts_with("stop 0 0")), "the step after the wave never ran: {:?}", node.calls);
        assert_eq!(node.instances, start.instances, "{:#?}", node.calls);
    }

    #[test]
    fn a_wave_made_one_after_another_stops_at_its_first_failure() {
        let start = FakeNode::with(&[seg(0, 0, 4, "a")]);
        let steps: Vec<Step> = [seg(1, 0, 4, "a"), seg(1, 4, 3, "a"), seg(2, 0, 7, "a")].into_iter().map(|segment| Step::Create { segment }).collect();
        let mut node = start.clone();
        node.fail = vec![("create_instance 1 4".into(), 1)];
        let e = block_on(Executor::new(&mut node).run(&steps)).unwrap_err();
        assert_eq!((e.step, e.rollback.clone()), (2, Ok(2)), "{e}");
        assert!(!node.calls.iter().any(|c| c.ends_with(" 2 0")), "the third was not tried: {:?}", node.calls);
        assert_eq!(node.instances, start.instances);
    }

    #[test]
    fn an_undo_that_fails_says_so() {
        let mut node = FakeNode::with(&[seg(0, 0, 4, "a"), seg(0, 4, 3, "b")]);
        // Destroying a fails; undoing its drain (starting a again) fails too.
        node.fail = vec![("destroy_instance 0 0".into(), 1), ("start 0 0".into(), 1)];
        let e = block_on(Executor::new(&mut node).run(&transition())).unwrap_err();
        assert_eq!(e.step, 4);
        let why = e.rollback.clone().unwrap_err();
        assert!(why.contains("undoing Stopped") && why.contains("injected failure of start 0 0"), "{why}");
        assert!(e.to_string().contains("ALSO failed"), "{e}");
    }
}
