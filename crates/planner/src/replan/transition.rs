//! The transition from a running map to a replan's map, as ordered steps (make before break).
//!
//! [`transition`] creates and makes ready every new segment whose slot is free first (of those,
//! the one whose service has the least of its new rate ready goes first); an old segment is
//! drained and destroyed only when no pending segment fits, and then the one chosen blocks a
//! pending segment and its service keeps the largest share of its new rate without it (all of it
//! counts the same; then one whose own service's new segment waits on that GPU); the remaining old
//! segments go last. Every intermediate layout is legal by the GPU type's rules (the same check as
//! [`parva_core::mig::GpuType::free_starts`]). The timeline comes from [`Costs`]: a run of
//! creations with no drain between them is one wave ([`Costs::creation`]: the node makes their
//! instances one after another and each one's workers start as soon as its instance exists, side by
//! side with the next instance), drains and destroys run one after another. Per service the report
//! gives the lowest capacity during the transition and how long it stays below the new rate, and
//! says when a service has no ready process at all, and why.

use std::collections::BTreeMap;

use parva_core::mig::{GpuType, Placement};

use super::{ChangedSegment, Replan};
use crate::gpus::profile;

/// Seconds each kind of change takes, for the transition's timeline.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Costs {
    /// Creating a MIG GPU instance and its compute instance.
    pub mig_create: f64,
    /// Destroying them.
    pub mig_destroy: f64,
    /// Starting a worker process until it is ready (model loaded, first batch run).
    pub worker_start: f64,
    /// Starting an MPS control daemon for an instance.
    pub mps_start: f64,
}

impl Default for Costs {
    /// Worker start 2.0 s and MPS start 0.02 s: measured on an H100 by `scripts/gpu-check`
    /// (worker start-up 1.7-2.0 s, MPS daemon 18-22 ms; `reports/gpu/nvidia-h100-80gb-hbm3-2026-11-25`).
    /// MIG create 1.0 s and destroy 0.5 s are assumptions: no node whose MIG layout may be changed
    /// has measured them yet.
    fn default() -> Self {
        Costs { mig_create: 1.0, mig_destroy: 0.5, worker_start: 2.0, mps_start: 0.02 }
    }
}

impl Costs {
    /// The `i`-th creation (from 0) of a wave: when its instance is begun and when its workers are
    /// ready, seconds from the wave's start. A node makes MIG instances (and their MPS daemons)
    /// one after another; each instance's workers start as soon as it exists, while the next
    /// instance is made, so a wave of `n` takes `n × (mig_create + mps_start) + worker_start`
    /// ([`Costs::wave`]), not `n` times a whole creation.
    pub fn creation(&self, i: usize) -> (f64, f64) {
        let made = self.mig_create + self.mps_start;
        (i as f64 * made, (i + 1) as f64 * made + self.worker_start)
    }

    /// Seconds a wave of `n` creations takes (0 for none).
    pub fn wave(&self, n: usize) -> f64 {
        if n == 0 { 0.0 } else { self.creation(n - 1).1 }
    }
}

impl std::str::FromStr for Costs {
    type Err = String;

    /// `mig-create=S,mig-destroy=S,worker-start=S,mps-start=S`, any subset, the rest default.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut c = Costs::default();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected KEY=SECONDS (keys: mig-create, mig-destroy, worker-start, mps-start)"))?;
            let v: f64 = value
                .trim()
                .trim_end_matches('s')
                .parse()
                .map_err(|_| format!("{key}: {value:?} is not a number of seconds"))?;
            if !(v.is_finite() && (0.0..=3600.0).contains(&v)) {
                return Err(format!("{key}: {v} s is outside 0..=3600 s"));
            }
            match key.trim() {
                "mig-create" => c.mig_create = v,
                "mig-destroy" => c.mig_destroy = v,
                "worker-start" => c.worker_start = v,
                "mps-start" => c.mps_start = v,
                other => return Err(format!("unknown cost {other:?} (keys: mig-create, mig-destroy, worker-start, mps-start)")),
            }
        }
        Ok(c)
    }
}


#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Step {
    /// `create` (MIG instance, MPS daemon, workers up and ready), `drain` (the router stops
    /// sending to the segment, which finishes what it holds), `destroy` (workers and MPS stopped,
    /// instance destroyed), `rebatch` (a kept segment's batch size, a router setting).
    pub action: &'static str,
    pub node: u32,
    pub gpu: u32,
    pub placement: u8,
    pub size: u8,
    pub service: String,
    pub procs: u32,
    pub batch: u32,
    /// When the step starts and ends on the transition's timeline, seconds.
    pub start_s: f64,
    pub end_s: f64,
}

/// How a service fares during a transition.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ServiceDip {
    pub service: String,
    /// The new rate, requests/s.
    pub rate: f64,
    /// Ready capacity at the start, at its lowest, and at the end, samples/s.
    pub capacity_before: f64,
    pub capacity_min: f64,
    pub capacity_after: f64,
    /// Seconds with ready capacity below the new rate.
    pub seconds_below_rate: f64,
    /// Seconds with no ready process at all while the service has a rate.
    pub seconds_unserved: f64,
    /// Why, when `seconds_unserved > 0`.
    pub why: Option<String>,
}

/// A transition: the steps in order and what each service goes through.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Transition {
    pub costs: Costs,
    pub steps: Vec<Step>,
    pub seconds: f64,
    pub services: Vec<ServiceDip>,
}

#[derive(Debug, Clone)]
struct Live {
    place: Placement,
    /// Index into the transition's service names.
    service: usize,
    capacity: f64,
    /// Whether it is to be destroyed.
    doomed: bool,
}

/// The fleet during a transition: what runs on each GPU and each service's ready capacity.
struct Fleet {
    gpus: BTreeMap<u32, Vec<Live>>,
    capacity: Vec<f64>,
}

impl Fleet {
    fn layout(&self, id: u32) -> Vec<Placement> {
        self.gpus.get(&id).map(|l| l.iter().map(|x| x.place).collect()).unwrap_or_default()
    }
}

/// Order the changes of `r` as steps (see the module doc). `drain_s(service)`: seconds a drained
/// segment of the service needs to finish what it holds (its SLO is a bound).
pub fn transition(r: &Replan, gpu: &GpuType, per_node: u32, costs: Costs, drain_s: &dyn Fn(&str) -> f64) -> Transition {
    let mut s = Scheduler::new(r, gpu, per_node, costs, drain_s);
    s.rebatches();
    // Make every pending segment whose slot is free; when none is, break one old segment that
    // blocks one.
    while s.make_next() || s.break_blocking() {}
    s.break_the_rest();
    s.finish()
}

/// A transition being scheduled: the fleet as it stands at time `t`, the steps so far, the
/// segments still to create, and each span of the timeline with every service's ready capacity.
struct Scheduler<'a> {
    r: &'a Replan,
    gpu: &'a GpuType,
    per_node: u32,
    costs: Costs,
    drain_s: &'a dyn Fn(&str) -> f64,
    /// Services: the plan's, then those that only lose segments.
    names: Vec<String>,
    index: BTreeMap<String, usize>,
    /// Each service's new rate.
    rates: Vec<f64>,
    fleet: Fleet,
    /// Segments to create, per GPU id.
    pending: BTreeMap<u32, Vec<&'a ChangedSegment>>,
    steps: Vec<Step>,
    t: f64,
    /// (from, to, ready capacity per service during that span)
    timeline: Vec<(f64, f64, Vec<f64>)>,
    /// Why a service had no ready process, per service.
    blocked_why: BTreeMap<usize, String>,
    doomed_left: usize,
    /// The wave of creations under way (see the module doc): each one's service, capacity and
    /// when it is ready; and every service's ready capacity when the wave began.
    wave: Vec<(usize, f64, f64)>,
    wave_base: Vec<f64>,
}

impl<'a> Scheduler<'a> {
    fn new(r: &'a Replan, gpu: &'a GpuType, per_node: u32, costs: Costs, drain_s: &'a dyn Fn(&str) -> f64) -> Self {
        // MPS shares are no GPU configuration: creating or removing one is starting or stopping its
        // workers, so a type without MIG has no MIG create or destroy time.
        let costs = if gpu.is_mps() { Costs { mig_create: 0.0, mig_destroy: 0.0, ..costs } } else { costs };
        let per_node = per_node.max(1);
        let id = |node: u32, g: u32| node * per_node + g;
        let mut names: Vec<String> = r.plan.services.iter().map(|s| s.name.clone()).collect();
        for d in &r.destroyed {
            if !names.contains(&d.service) {
                names.push(d.service.clone());
            }
        }
        let index: BTreeMap<String, usize> = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        let rates: Vec<f64> = names.iter().map(|n| r.plan.services.iter().find(|s| &s.name == n).map_or(0.0, |s| s.rate)).collect();
        let cap_of: BTreeMap<(u32, u8), f64> = r
            .gpu_ids
            .iter()
            .zip(&r.plan.gpus)
            .flat_map(|(gid, g)| g.placed.iter().map(move |p| ((*gid, p.start), p.segment.capacity)))
            .collect();
        // Everything running now: kept segments (at their new capacity) and the ones to destroy.
        let mut fleet = Fleet { gpus: BTreeMap::new(), capacity: vec![0.0; names.len()] };
        for k in &r.kept {
            let gid = id(k.node, k.gpu);
            let capacity = cap_of.get(&(gid, k.placement)).copied().unwrap_or(0.0);
            let si = index[k.service.as_str()];
            fleet.capacity[si] += capacity;
            let place = Placement { profile: profile(gpu, k.size), start: k.placement };
            fleet.gpus.entry(gid).or_default().push(Live { place, service: si, capacity, doomed: false });
        }
        let mut doomed_left = 0usize;
        for d in &r.destroyed {
            let si = index[d.service.as_str()];
            fleet.capacity[si] += d.capacity;
            let place = Placement { profile: profile(gpu, d.size), start: d.placement };
            fleet.gpus.entry(id(d.node, d.gpu)).or_default().push(Live { place, service: si, capacity: d.capacity, doomed: true });
            doomed_left += 1;
        }
        let mut pending: BTreeMap<u32, Vec<&ChangedSegment>> = BTreeMap::new();
        for c in &r.created {
            pending.entry(id(c.node, c.gpu)).or_default().push(c);
        }
        Scheduler {
            r,
            gpu,
            per_node,
            costs,
            drain_s,
            names,
            index,
            rates,
            fleet,
            pending,
            steps: Vec::new(),
            t: 0.0,
            timeline: Vec::new(),
            blocked_why: BTreeMap::new(),
            doomed_left,
            wave: Vec::new(),
            wave_base: Vec::new(),
        }
    }

    fn id(&self, node: u32, g: u32) -> u32 {
        node * self.per_node + g
    }

    /// A step of `seconds` from now on segment `place` of GPU `gid` (with its `(procs, batch)`).
    fn push_step(&mut self, action: &'static str, gid: u32, place: Placement, service: usize, pb: (u32, u32), seconds: f64) {
        self.timeline.push((self.t, self.t + seconds, self.fleet.capacity.clone()));
        let step = self.step(action, gid, place, service, pb, (self.t, self.t + seconds));
        self.steps.push(step);
        self.t += seconds;
    }

    /// The step `action` on segment `place` of GPU `gid` (with its `(procs, batch)`) from
    /// `start_s` to `end_s`.
    fn step(&self, action: &'static str, gid: u32, place: Placement, service: usize, (procs, batch): (u32, u32), (start_s, end_s): (f64, f64)) -> Step {
        Step {
            action,
            node: gid / self.per_node,
            gpu: gid % self.per_node,
            placement: place.start,
            size: place.profile.gpcs,
            service: self.names[service].clone(),
            procs,
            batch,
            start_s,
            end_s,
        }
    }

    /// Kept segments with a new batch size: a router setting, at time 0, taking no time.
    fn rebatches(&mut self) {
        for k in self.r.kept.iter().filter(|k| k.old_batch != k.new_batch) {
            self.steps.push(Step {
                action: "rebatch",
                node: k.node,
                gpu: k.gpu,
                placement: k.placement,
                size: k.size,
                service: k.service.clone(),
                procs: k.procs,
                batch: k.new_batch,
                start_s: self.t,
                end_s: self.t,
            });
        }
    }

    /// The share of its new rate a service has ready (infinite without a rate).
    fn share(&self, si: usize) -> f64 {
        if self.rates[si] > 0.0 { self.fleet.capacity[si] / self.rates[si] } else { f64::INFINITY }
    }

    /// Make: of the pending segments whose slot is free now, the one whose service has the least
    /// of its new rate ready goes first (a starved service is served again soonest). False when
    /// none can be made now.
    fn make_next(&mut self) -> bool {
        let next = self
            .pending
            .iter()
            .flat_map(|(&gid, list)| list.iter().enumerate().map(move |(i, c)| (gid, i, *c)))
            .filter(|(gid, _, c)| self.gpu.free_starts(&self.fleet.layout(*gid), profile(self.gpu, c.size)).contains(&c.placement))
            .min_by(|a, b| self.share(self.index[a.2.service.as_str()]).total_cmp(&self.share(self.index[b.2.service.as_str()])))
            .map(|(gid, i, _)| (gid, i));
        let Some((gid, i)) = next else { return false };
        let Some(c) = self.pending.get_mut(&gid).map(|l| l.swap_remove(i)) else { return false };
        self.pending.retain(|_, l| !l.is_empty());
        let place = Placement { profile: profile(self.gpu, c.size), start: c.placement };
        let si = self.index[c.service.as_str()];
        // One more creation of the wave under way (or the first of a new one).
        if self.wave.is_empty() {
            self.wave_base = self.fleet.capacity.clone();
        }
        let (begun, ready) = self.costs.creation(self.wave.len());
        let step = self.step("create", gid, place, si, (c.procs, c.batch), (self.t + begun, self.t + ready));
        self.steps.push(step);
        self.wave.push((si, c.capacity, self.t + ready));
        self.fleet.capacity[si] += c.capacity;
        self.fleet.gpus.entry(gid).or_default().push(Live { place, service: si, capacity: c.capacity, doomed: false });
        true
    }

    /// Break: an old segment on a GPU with a pending one: the one whose service keeps the largest
    /// share of its new rate without it (all of it counts the same), then one whose own service's
    /// new segment waits on that GPU (its gap is then one destroy and create). False when nothing
    /// is pending, or (which a legal target layout never gives) nothing blocks what is.
    fn break_blocking(&mut self) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        let own = |gid: u32, x: &Live| self.pending.get(&gid).is_some_and(|l| l.iter().any(|c| self.index[c.service.as_str()] == x.service));
        let left = |x: &Live| {
            let rate = self.rates[x.service];
            if rate > 0.0 { ((self.fleet.capacity[x.service] - x.capacity) / rate).min(1.0) } else { 1.0 }
        };
        let victim = self
            .pending
            .keys()
            .filter_map(|gid| self.fleet.gpus.get(gid).map(|l| (gid, l)))
            .flat_map(|(gid, l)| l.iter().enumerate().filter(|(_, x)| x.doomed).map(move |(at, x)| (*gid, at, x)))
            .max_by(|a, b| left(a.2).total_cmp(&left(b.2)).then(own(a.0, a.2).cmp(&own(b.0, b.2))))
            .map(|(gid, at, x)| (gid, at, x.clone()));
        let Some((gid, at, v)) = victim else { return false };
        if self.fleet.capacity[v.service] - v.capacity <= 0.0 && self.rates[v.service] > 0.0 {
            self.blocked_why.entry(v.service).or_insert(format!(
                "node {} GPU {} has no free slot for the service's new segments until its {} at {} is destroyed, \
                 and no other segment of the service is ready",
                gid / self.per_node,
                gid % self.per_node,
                v.place.profile.name,
                v.place.start
            ));
        }
        self.break_one(gid, at);
        self.doomed_left -= 1;
        true
    }

    /// Break what is left, now that every new segment is ready.
    fn break_the_rest(&mut self) {
        let rest: Vec<(u32, Placement)> =
            self.fleet.gpus.iter().flat_map(|(gid, l)| l.iter().filter(|x| x.doomed).map(move |x| (*gid, x.place))).collect();
        for (gid, place) in rest {
            if let Some(at) = self.fleet.gpus.get(&gid).and_then(|l| l.iter().position(|x| x.doomed && x.place == place)) {
                self.break_one(gid, at);
                self.doomed_left = self.doomed_left.saturating_sub(1);
            }
        }
        debug_assert_eq!(self.doomed_left, 0);
    }

    /// End the wave of creations under way: its spans on the timeline, each creation's capacity
    /// counted from when it is ready; the clock at its last one.
    fn end_wave(&mut self) {
        let mut capacity = std::mem::take(&mut self.wave_base);
        for (si, add, ready) in std::mem::take(&mut self.wave) {
            self.timeline.push((self.t, ready, capacity.clone()));
            capacity[si] += add;
            self.t = ready;
        }
    }

    /// Drain and destroy the doomed segment `at` of GPU `gid` (after the wave under way).
    fn break_one(&mut self, gid: u32, at: usize) {
        self.end_wave();
        let Some(v) = self.fleet.gpus.get_mut(&gid).map(|l| l.remove(at)) else { return };
        let pb = self
            .r
            .destroyed
            .iter()
            .find(|d| self.id(d.node, d.gpu) == gid && d.placement == v.place.start && d.size == v.place.profile.gpcs)
            .map_or((0, 0), |d| (d.procs, d.batch));
        let drain = (self.drain_s)(&self.names[v.service]).max(0.0);
        self.push_step("drain", gid, v.place, v.service, pb, drain);
        self.fleet.capacity[v.service] -= v.capacity;
        self.push_step("destroy", gid, v.place, v.service, pb, self.costs.mig_destroy);
    }

    /// Each service's dip over the timeline.
    fn finish(mut self) -> Transition {
        self.end_wave();
        let Scheduler { names, rates, fleet, timeline, blocked_why, costs, steps, t, .. } = self;
        let end = fleet.capacity;
        let start = timeline.first().map(|x| x.2.clone()).unwrap_or_else(|| end.clone());
        let services = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let rate = rates[i];
                let min = timeline.iter().map(|x| x.2[i]).chain([end[i]]).fold(f64::INFINITY, f64::min);
                let below = timeline.iter().filter(|x| x.2[i] + 1e-9 < rate).map(|x| x.1 - x.0).sum::<f64>() + 0.0;
                let unserved = timeline.iter().filter(|x| rate > 0.0 && x.2[i] <= 1e-9).map(|x| x.1 - x.0).sum::<f64>() + 0.0;
                ServiceDip {
                    service: n.clone(),
                    rate,
                    capacity_before: start[i],
                    capacity_min: if min.is_finite() { min.max(0.0) } else { 0.0 },
                    capacity_after: end[i],
                    seconds_below_rate: below,
                    seconds_unserved: unserved,
                    why: (unserved > 0.0).then(|| {
                        blocked_why.get(&i).cloned().unwrap_or_else(|| "the service has no running segment before its new ones are ready".into())
                    }),
                }
            })
            .collect();
        Transition { costs, steps, seconds: t, services }
    }
}

