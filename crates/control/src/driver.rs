//! The controller's loop body, one for the day simulation and live nodes: decide
//! ([`crate::controller`]), plan the transition ([`Driver::prepare`]: a replan with the fewest
//! changes inside the node, the best plan that fits when the node is too small, make before
//! break checked by [`crate::steps::replay`]) and apply it ([`crate::node::Executor`]).

use std::collections::BTreeMap;

use parva_core::deploy::{DeploymentMap, Segment};
use parva_core::mig::GpuType;
use parva_core::profile::ProfileSet;
use parva_core::slo::Service;
use parva_planner::replan::{self, Costs};
use parva_planner::{PlanInput, PlanOptions};

use crate::controller::{Controller, Decision, Direction, Observation};
use crate::node::{Executor, Node};
use crate::steps::{self, Step};

/// What the driver plans with.
#[derive(Debug, Clone)]
pub struct PlanContext<'a> {
    pub gpu: &'static GpuType,
    pub profiles: &'a ProfileSet,
    /// Every service (its model and SLO; the rate is the controller's).
    pub services: &'a [Service],
    pub options: PlanOptions,
    pub costs: Costs,
    /// The node's number and how many GPUs it has (the map's GPUs 0..this).
    pub node: u32,
    pub node_gpus: u32,
}

/// A transition ready to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The rates the new map was planned for (the decision's, or what of them fit the node).
    pub achieved: Vec<f64>,
    /// Per service, the rate the decision wanted and the node could not fit (0: none).
    pub shortfall: Vec<f64>,
    pub steps: Vec<Step>,
    pub new_map: DeploymentMap,
    pub old_gpus: usize,
    pub new_gpus: usize,
    pub created: usize,
    pub destroyed: usize,
    pub rebatched: usize,
    /// The planner's estimate of the transition's length, seconds.
    pub seconds: f64,
    /// GPUs the new map uses past the fewest its plan needs (segments moved to free GPUs so that
    /// they are made before what they replace is broken); a later scale-down packs them.
    pub spread_gpus: usize,
    /// Segments added beside the running ones, nothing moved: the re-plan had no order that
    /// keeps every service's ready capacity (see [`Driver::prepare`]).
    pub added_only: bool,
}

impl Prepared {
    /// No segment changes (possibly a new planned rate with the same map).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// `2 -> 3 GPUs; 1 created, 1 destroyed, 0 rebatched; 4 steps`.
    pub fn summary(&self) -> String {
        let added = if self.added_only { ", added beside the running segments (the re-plan had no safe order)" } else { "" };
        format!(
            "{} -> {} GPUs; {} created, {} destroyed, {} rebatched; {} steps (~{:.1} s){added}",
            self.old_gpus, self.new_gpus, self.created, self.destroyed, self.rebatched, self.steps.len(), self.seconds
        )
    }
}

/// Why no transition was applied for a decision.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("re-planning: {0}")]
    Plan(String),
    #[error("no order of the changes keeps every service's ready capacity for its demand on this node ({0}); the node keeps its map")]
    NoSafeOrder(String),
    #[error("{0}")]
    Failed(String),
}

/// What one look of the controller did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Nothing to decide.
    Kept,
    /// A decision whose plan is the running map (new planned rates only).
    Unchanged { decision: Decision, prepared: Prepared },
    /// A transition applied.
    Applied { decision: Decision, prepared: Prepared },
    /// A scale-down whose plan frees no GPU: not applied (the next waits `down_after_s`).
    NoSaving { decision: Decision, prepared: Prepared },
    /// Not applied (planning refused it, or a step failed and was rolled back); backing off.
    Refused { decision: Decision, why: Refusal, backoff_s: f64 },
    /// A scale-down stopped after `done` of its steps, because a service's load passed what
    /// the scale-down leaves it (an alarm waits for no saving); the node serves what those
    /// steps made.
    Stopped { decision: Decision, prepared: Prepared, done: usize },
}

/// Asked between a scale-down's steps, with the node's clock and what the scale-down leaves
/// each service (the lesser of its capacity before and in the new map): whether a service's
/// load now passes it (see [`Driver::tick`]).
pub type StopFn<'s> = dyn FnMut(Option<f64>, &[f64]) -> bool + Send + 's;

/// What plans a transition: [`prepare_here`], or a live node's wrapper that runs it off the
/// async threads.
pub type PlanFn = dyn Fn(&Driver<'_>, &DeploymentMap, &Decision, &[f64]) -> Result<Prepared, Refusal> + Sync;

/// The controller and what it plans with (see the module doc).
pub struct Driver<'a> {
    pub controller: Controller,
    pub ctx: PlanContext<'a>,
}

impl<'a> Driver<'a> {
    /// A driver for a node serving `serving` now.
    pub fn new(controller: Controller, ctx: PlanContext<'a>, serving: &[Segment]) -> Self {
        let mut d = Driver { controller, ctx };
        d.sync(serving);
        d
    }

    /// Tell the controller what `serving` can serve (per service, its segments' capacity).
    pub fn sync(&mut self, serving: &[Segment]) {
        let capacity = self.capacity_of(serving);
        self.controller.set_capacity(&capacity);
        let gpcs: Vec<f64> = self
            .ctx
            .services
            .iter()
            .map(|s| serving.iter().filter(|x| x.service == s.name).map(|x| f64::from(x.instance_size)).sum())
            .collect();
        let gpus = serving.iter().map(|x| (x.node, x.gpu)).collect::<std::collections::BTreeSet<_>>().len();
        self.controller.set_gpcs(&gpcs, f64::from(self.ctx.gpu.gpcs), gpus as f64);
    }

    /// What `serving` can serve, per service (its segments' profiled throughput).
    fn capacity_of(&self, serving: &[Segment]) -> Vec<f64> {
        self.ctx.services.iter().map(|s| serving.iter().filter(|x| x.service == s.name).map(|x| x.throughput.unwrap_or(0.0).max(0.0)).sum()).collect()
    }

    /// The services at `rates` (each at least the settings' `min_rate`).
    fn at_rates(&self, rates: &[f64]) -> Vec<Service> {
        let min = self.controller.settings().min_rate;
        self.ctx.services.iter().zip(rates).map(|(s, r)| Service { rate: r.max(min), ..s.clone() }).collect()
    }

    /// Re-plan `current` for `rates` with the fewest changes within `extra` GPUs more than the
    /// fewest; `Ok(None)` when the new map does not fit the node. A scale-up (or a re-balance,
    /// which holds one) allows one (it is made in a hurry, and every change is a moment of less
    /// capacity); a scale-down none (the fewest GPUs, then the fewest changes, which also packs
    /// what scale-ups spread) unless that has no safe order.
    fn replan_for(&self, current: &DeploymentMap, rates: &[f64], extra: u32) -> Result<Option<replan::Replan>, String> {
        let services = self.at_rates(rates);
        let input = PlanInput { gpu: self.ctx.gpu, profiles: self.ctx.profiles, services: &services, options: &self.ctx.options };
        let r = replan::replan(input, current, extra, false).map_err(|e| e.to_string())?;
        if let Some(bad) = r.plan.infeasible.first() {
            return Err(format!("service {} cannot be planned: {}", bad.service, bad.reason));
        }
        let fits = r.to_map().segments.iter().all(|s| s.node == self.ctx.node && s.gpu < self.ctx.node_gpus);
        Ok(fits.then_some(r))
    }

    /// Plan the transition from `current` for `decision`, with `demand` (each service's measured
    /// rate) to keep ready during it. When the decided rates need more GPUs than the node has,
    /// the best plan that fits: each service's increase scaled by the largest common factor that
    /// fits (never less than the plan running now). When a scale-up's re-plan has no order of
    /// its changes that keeps every service's ready capacity, the services that need more get
    /// segments beside what runs, on the node's free GPUs, and nothing moves
    /// ([`Driver::prepare_added`]): a refused scale-up would leave them starved while it backs off.
    pub fn prepare(&self, current: &DeploymentMap, decision: &Decision, demand: &[f64]) -> Result<Prepared, Refusal> {
        if decision.direction == Direction::Down {
            // The fewest GPUs; where that has no safe order, one or two GPUs more, which keep more
            // segments where they are (worth it while they still free a GPU: `act` checks).
            let mut tried = self.prepare_replan(current, decision, demand, 0);
            for extra in 1..=2 {
                match tried {
                    Err(Refusal::NoSafeOrder(_)) => tried = self.prepare_replan(current, decision, demand, extra),
                    _ => break,
                }
            }
            return tried;
        }
        match self.prepare_replan(current, decision, demand, 1) {
            Err(Refusal::NoSafeOrder(why)) => {
                self.prepare_added(current, decision).map_err(|e| Refusal::NoSafeOrder(format!("{why}; adding beside the running segments: {e}")))
            }
            other => other,
        }
    }

    /// Segments for each service whose target passes what runs now, covering the difference (or
    /// the largest common share of it that fits), on the node's GPUs that hold no segment;
    /// nothing else changes. A later scale-down packs them.
    pub fn prepare_added(&self, current: &DeploymentMap, decision: &Decision) -> Result<Prepared, String> {
        let capacity = self.controller.capacity();
        let planned = self.controller.planned();
        let min = self.controller.settings().min_rate;
        let more: Vec<(usize, f64)> = decision
            .target
            .iter()
            .zip(capacity)
            .enumerate()
            .filter(|(_, (t, c))| **t > **c * (1.0 + 1e-9))
            .map(|(i, (t, c))| (i, t - c))
            .collect();
        if more.is_empty() {
            return Err("no service needs more than runs".into());
        }
        let per_node = self.ctx.options.gpus_per_node.max(1);
        let used: std::collections::BTreeSet<u32> = current.segments.iter().filter(|s| s.node == self.ctx.node).map(|s| s.gpu).collect();
        let free: Vec<u32> = (0..self.ctx.node_gpus.min(per_node)).filter(|g| !used.contains(g)).collect();
        if free.is_empty() {
            return Err(format!("the node's {} GPUs all hold segments", self.ctx.node_gpus));
        }
        let ids: Vec<u32> = free.iter().map(|g| self.ctx.node * per_node + g).collect();
        let plan_at = |f: f64| -> Result<Option<DeploymentMap>, String> {
            let services: Vec<Service> = more.iter().map(|&(i, d)| Service { rate: (d * f).max(min), ..self.ctx.services[i].clone() }).collect();
            let input = PlanInput { gpu: self.ctx.gpu, profiles: self.ctx.profiles, services: &services, options: &self.ctx.options };
            let plan = parva_planner::plan(input).map_err(|e| e.to_string())?;
            if let Some(bad) = plan.infeasible.first() {
                return Err(format!("service {} cannot be planned: {}", bad.service, bad.reason));
            }
            Ok((plan.gpus.len() <= ids.len()).then(|| plan.to_map_on(&ids)))
        };
        // All of the difference, or the largest common share of it that fits.
        let (share, added) = match plan_at(1.0)? {
            Some(m) => (1.0, m),
            None => largest_fit(plan_at)?.ok_or_else(|| format!("not even a share of the increase fits the node's {} free GPUs", free.len()))?,
        };
        let mut achieved = planned.to_vec();
        for &(i, d) in &more {
            achieved[i] = achieved[i].max(capacity[i] + share * d);
        }
        let shortfall: Vec<f64> = decision.target.iter().zip(&achieved).map(|(t, a)| (t - a).max(0.0)).collect();
        let steps: Vec<Step> = added.segments.iter().map(|s| Step::Create { segment: s.clone() }).collect();
        let seconds = self.ctx.costs.wave(added.segments.len());
        let mut new_map = current.clone();
        new_map.segments.extend(added.segments.iter().cloned());
        Ok(Prepared {
            achieved,
            shortfall,
            old_gpus: current.gpu_count(),
            new_gpus: new_map.gpu_count(),
            created: steps.len(),
            destroyed: 0,
            rebatched: 0,
            seconds,
            spread_gpus: added.gpu_count(),
            added_only: true,
            steps,
            new_map,
        })
    }

    /// The re-plan's transition, its plan allowed `extra` GPUs past the fewest to save changes.
    fn prepare_replan(&self, current: &DeploymentMap, decision: &Decision, demand: &[f64], extra: u32) -> Result<Prepared, Refusal> {
        let planned = self.controller.planned().to_vec();
        let mut achieved = decision.target.clone();
        let mut r = self.replan_for(current, &achieved, extra).map_err(Refusal::Plan)?;
        if r.is_none() {
            // Scale the increases back until the plan fits: bisection on their common factor.
            let mix = |f: f64| -> Vec<f64> {
                decision.target.iter().zip(&planned).map(|(t, p)| if t > p { p + f * (t - p) } else { *t }).collect()
            };
            let best = largest_fit(|f| self.replan_for(current, &mix(f), extra)).map_err(Refusal::Plan)?;
            let (f, fit) = match best {
                Some(b) => b,
                None => match self.replan_for(current, &mix(0.0), extra).map_err(Refusal::Plan)? {
                    Some(fit) => (0.0, fit),
                    None => return Err(Refusal::Plan(format!("even the rates the node runs for do not fit its {} GPUs", self.ctx.node_gpus))),
                },
            };
            achieved = mix(f);
            r = Some(fit);
        }
        let r = r.expect("set above");
        let shortfall: Vec<f64> = decision.target.iter().zip(&achieved).map(|(t, a)| (t - a).max(0.0)).collect();
        let mut new_map = r.to_map();
        let slo_s: BTreeMap<&str, f64> = self.ctx.services.iter().map(|s| (s.name.as_str(), s.slo_ms / 1000.0)).collect();
        let per_node = self.ctx.options.gpus_per_node.max(1);
        let t = replan::transition(&r, self.ctx.gpu, per_node, self.ctx.costs, &|n| slo_s.get(n).copied().unwrap_or(1.0));
        let steps = steps::from_transition(&t, &new_map, self.ctx.node).map_err(Refusal::Plan)?;
        // Services whose measured load is past what runs now get their new segments first.
        let urgent: std::collections::BTreeSet<String> = self
            .ctx
            .services
            .iter()
            .zip(demand)
            .zip(self.controller.capacity())
            .filter(|((_, d), c)| **d > **c)
            .map(|((s, _), _)| s.name.clone())
            .collect();
        let demand: BTreeMap<String, f64> = self.ctx.services.iter().zip(demand).map(|(s, d)| (s.name.clone(), *d)).collect();
        let capacity = steps::replan_capacity(&r);
        let steps = steps::make_before_break(self.ctx.gpu, self.ctx.node_gpus, &current.segments, steps, &mut new_map, &demand, &capacity)
            .map_err(|v| Refusal::NoSafeOrder(v.to_string()))?;
        // Checked again by the replay (it only brings creations forward into free slots).
        let mut hoisted_map = new_map.clone();
        let hoisted = steps::urgent_first(self.ctx.gpu, self.ctx.node_gpus, &current.segments, steps.clone(), &mut hoisted_map, &urgent);
        let steps = if hoisted != steps && steps::replay(self.ctx.gpu, &current.segments, &hoisted, &demand, &capacity).is_ok() {
            new_map = hoisted_map;
            hoisted
        } else {
            steps
        };
        let new_gpus = new_map.gpu_count();
        Ok(Prepared {
            spread_gpus: new_gpus.saturating_sub(r.plan.gpus.len()),
            added_only: false,
            achieved,
            shortfall,
            old_gpus: current.gpu_count(),
            new_gpus,
            created: r.created.len(),
            destroyed: r.destroyed.len(),
            rebatched: r.kept.iter().filter(|k| k.old_batch != k.new_batch).count(),
            seconds: t.seconds,
            steps,
            new_map,
        })
    }

    /// Apply `decision` at `now_s` on `node`: prepare, run the steps (rolled back on a
    /// failure), tell the controller. `plan` runs the CPU-heavy [`Driver::prepare`] (a live node
    /// runs it off its async threads).
    pub async fn act<N: Node>(
        &mut self,
        now_s: f64,
        decision: Decision,
        demand: &[f64],
        node: &mut N,
        plan: &PlanFn,
        stop: &mut StopFn<'_>,
    ) -> Outcome {
        let current = DeploymentMap { segments: node.serving(), jobs: Vec::new() };
        let prepared = match plan(self, &current, &decision, demand) {
            Ok(p) => p,
            Err(why) => {
                let backoff_s = self.controller.refused(now_s, &decision.target);
                return Outcome::Refused { decision, why, backoff_s };
            }
        };
        // A scale-down must free a GPU; on a node whose segments hold less than two GPUs' GPCs,
        // GPCs (room for jobs and the node's other tenants; the controller's rule too).
        let gpcs = |m: &[Segment]| m.iter().map(|s| u32::from(s.instance_size)).sum::<u32>();
        let (old_gpcs, new_gpcs) = (gpcs(&current.segments), gpcs(&prepared.new_map.segments));
        let small = old_gpcs < 2 * u32::from(self.ctx.gpu.gpcs);
        let saves = prepared.new_gpus < prepared.old_gpus || (small && new_gpcs < old_gpcs);
        if decision.direction == Direction::Down && !saves {
            self.controller.saves_nothing(now_s);
            return Outcome::NoSaving { decision, prepared };
        }
        if prepared.is_empty() {
            self.controller.applied(now_s, prepared.achieved.clone(), false, &decision.target);
            self.sync(&node.serving());
            return Outcome::Unchanged { decision, prepared };
        }
        let created: Vec<Segment> = prepared.steps.iter().filter_map(|s| if let Step::Create { segment } = s { Some(segment.clone()) } else { None }).collect();
        if let Err(e) = node.before(&created).await {
            node.after().await;
            let backoff_s = self.controller.refused(now_s, &decision.target);
            return Outcome::Refused { decision, why: Refusal::Failed(format!("making room before the transition (nothing changed): {e}")), backoff_s };
        }
        // A scale-down is a saving, not a need: it stops where a service's load passes what it
        // leaves that service (the lesser of what ran before and what the new map serves), so
        // that the alarm meets the load now rather than after the last step.
        let after = self.capacity_of(&prepared.new_map.segments);
        let bound: Vec<f64> = self.controller.capacity().iter().zip(&after).map(|(b, a)| b.min(*a)).collect();
        let mut stop_down = |clock: Option<f64>| decision.direction == Direction::Down && stop(clock, &bound);
        let run = Executor::new(node).run_until(&prepared.steps, &mut stop_down).await;
        node.after().await;
        let serving = node.serving();
        match run {
            Ok(Some(done)) => {
                // The rates planned stay, at most what the steps done left can serve.
                let left = self.capacity_of(&serving);
                let planned: Vec<f64> = self.controller.planned().iter().zip(&left).map(|(p, c)| if *c > 0.0 { p.min(*c) } else { *p }).collect();
                self.controller.applied(now_s, planned.clone(), true, &planned);
                self.sync(&serving);
                Outcome::Stopped { decision, prepared, done }
            }
            Ok(None) => {
                self.controller.applied(now_s, prepared.achieved.clone(), true, &decision.target);
                self.sync(&serving);
                Outcome::Applied { decision, prepared }
            }
            Err(e) => {
                let backoff_s = self.controller.refused(now_s, &decision.target);
                Outcome::Refused { decision, why: Refusal::Failed(e.to_string()), backoff_s }
            }
        }
    }

    /// One look at the window ending at `now_s` (see [`Driver::act`]).
    /// `stop` is asked between a scale-down's steps (see [`Outcome::Stopped`]).
    pub async fn tick<N: Node>(
        &mut self,
        now_s: f64,
        seen: &[Observation],
        node: &mut N,
        plan: &PlanFn,
        stop: &mut StopFn<'_>,
    ) -> Outcome {
        let Some(decision) = self.controller.observe(now_s, seen) else { return Outcome::Kept };
        let demand: Vec<f64> = seen.iter().map(|o| o.rate).collect();
        self.act(now_s, decision, &demand, node, plan, stop).await
    }

    /// Between windows: `short` (what each service saw over a short period) and `recent` (over
    /// its last [`crate::controller::RECENT_S`] seconds) against the plan.
    pub async fn alarm<N: Node>(
        &mut self,
        now_s: f64,
        short: &[Observation],
        recent: &[Observation],
        node: &mut N,
        plan: &PlanFn,
    ) -> Outcome {
        let Some(decision) = self.controller.alarm(now_s, short, recent) else { return Outcome::Kept };
        let demand: Vec<f64> = short.iter().enumerate().map(|(i, o)| crate::controller::alarm_rate(o, recent.get(i))).collect();
        self.act(now_s, decision, &demand, node, plan, &mut |_, _| false).await
    }
}

/// [`Driver::prepare`] as it is (the simulation's planner).
pub fn prepare_here(d: &Driver<'_>, current: &DeploymentMap, decision: &Decision, demand: &[f64]) -> Result<Prepared, Refusal> {
    d.prepare(current, decision, demand)
}

/// How loud an outcome is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
}

impl Outcome {
    /// How loud to log it: a transition (or a plan short of the forecast) at info, a refusal at
    /// warn, new planned rates with the same map at debug.
    pub fn level(&self) -> Level {
        match self {
            Outcome::Kept | Outcome::NoSaving { .. } => Level::Debug,
            Outcome::Unchanged { prepared, .. } if prepared.shortfall.iter().all(|s| *s <= 0.0) => Level::Debug,
            Outcome::Unchanged { .. } | Outcome::Applied { .. } | Outcome::Stopped { .. } => Level::Info,
            Outcome::Refused { .. } => Level::Warn,
        }
    }

    /// Per service, the rate wanted that the node could not fit (empty unless planned).
    pub fn shortfall(&self) -> Option<&[f64]> {
        match self {
            Outcome::Unchanged { prepared, .. } | Outcome::Applied { prepared, .. } => Some(&prepared.shortfall),
            _ => None,
        }
    }

    /// The line a node logs, with the reason; `None` for [`Outcome::Kept`].
    pub fn log_line(&self) -> Option<String> {
        match self {
            Outcome::Kept => None,
            Outcome::NoSaving { decision, prepared } => Some(format!(
                "{}: not worth a transition: the plan for the new rates needs {} GPUs, as the running one does ({})",
                direction(decision.direction),
                prepared.new_gpus,
                decision.reason
            )),
            Outcome::Unchanged { decision, prepared } => {
                let short = if prepared.shortfall.iter().any(|s| *s > 0.0) { "; the node is too small for more: it keeps the best plan that fits" } else { "" };
                Some(format!("{}: plan unchanged{short} ({})", direction(decision.direction), decision.reason))
            }
            Outcome::Applied { decision, prepared } => {
                let short = if prepared.shortfall.iter().any(|s| *s > 0.0) { "; the node is too small for all of it: the best plan that fits" } else { "" };
                Some(format!("{}: applied {}{short} ({})", direction(decision.direction), prepared.summary(), decision.reason))
            }
            Outcome::Stopped { decision, prepared, done } => Some(format!(
                "{}: stopped after {done} of its {} steps: a service's load passed what it would leave it (the node serves what those steps made; the planned rates stay) ({})",
                direction(decision.direction),
                prepared.steps.len(),
                decision.reason
            )),
            Outcome::Refused { decision, why, backoff_s } => {
                Some(format!("{}: not applied: {why}; next try in {backoff_s:.0} s at the earliest ({})", direction(decision.direction), decision.reason))
            }
        }
    }
}

fn direction(d: Direction) -> &'static str {
    match d {
        Direction::Up => "scale-up",
        Direction::Down => "scale-down",
        Direction::Both => "re-balance",
    }
}

/// The largest share in (0, 1) for which `at` gives a plan that fits, to 1/256 (bisection;
/// `at(f)` is `None` where share `f` does not fit, and fitting is taken to shrink as `f` grows).
fn largest_fit<T, E>(at: impl Fn(f64) -> Result<Option<T>, E>) -> Result<Option<(f64, T)>, E> {
    let (mut lo, mut hi, mut best) = (0.0f64, 1.0f64, None);
    for _ in 0..8 {
        let mid = 0.5 * (lo + hi);
        match at(mid)? {
            Some(fit) => {
                best = Some((mid, fit));
                lo = mid;
            }
            None => hi = mid,
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    use crate::node::block_on;
    use crate::simnode::SimNode;
    use crate::test_support::profiles;

    fn ab() -> Vec<Service> {
        ["a", "b"].iter().map(|n| Service { name: n.to_string(), model: "m".into(), rate: 3000.0, slo_ms: 50.0 }).collect()
    }

    /// `services` planned on a node of `gpus` A100s, and the context to re-plan them there.
    fn on_node<'a>(p: &'a ProfileSet, services: &'a [Service], gpus: u32) -> (DeploymentMap, PlanContext<'a>) {
        let gpu = GpuType::by_id("a100-80gb").unwrap();
        let options = PlanOptions { gpus_per_node: gpus, ..PlanOptions::default() };
        let first = parva_planner::plan(PlanInput { gpu, profiles: p, services, options: &options }).unwrap().to_map();
        (first, PlanContext { gpu, profiles: p, services, options, costs: Costs::default(), node: 0, node_gpus: gpus })
    }

    /// Regression (issue 32, live): the new rates needed 9 GPUs on a node of 8, and the node
    /// kept serving the shrunken map it had. Now the node gets the best plan that fits: each
    /// service's increase scaled back by one common factor, never below what runs.
    #[test]
    fn a_node_too_small_for_the_new_rates_gets_the_best_plan_that_fits() {
        let (p, services) = (profiles(), ab());
        let (first, ctx) = on_node(&p, &services, 2);
        assert!(first.gpu_count() <= 2, "{first:?}");
        let ctl = Controller::new(Settings::default(), vec!["a".into(), "b".into()], vec![3000.0, 3000.0], 0.0);
        let d = Driver::new(ctl, ctx, &first.segments);
        // `a` wants ten times its rate: far past two GPUs.
        let decision = Decision { target: vec![30000.0, 3000.0], direction: Direction::Up, reason: "test".into() };
        let p2 = d.prepare(&first, &decision, &[3000.0, 3000.0]).unwrap();
        assert!(p2.achieved[0] > 3000.0 && p2.achieved[0] < 30000.0, "{:?}", p2.achieved);
        assert_eq!(p2.achieved[1], 3000.0);
        assert!((p2.shortfall[0] - (30000.0 - p2.achieved[0])).abs() < 1e-9 && p2.shortfall[1] == 0.0, "{:?}", p2.shortfall);
        // Within the node, serving at least what it achieved for each service.
        assert!(p2.new_map.segments.iter().all(|s| s.node == 0 && s.gpu < 2), "{:?}", p2.new_map);
        for (i, name) in ["a", "b"].iter().enumerate() {
            let cap: f64 = p2.new_map.segments.iter().filter(|s| s.service == *name).map(|s| s.throughput.unwrap_or(0.0)).sum();
            assert!(cap >= p2.achieved[i] * (1.0 - 1e-6), "{name}: {cap} < {}", p2.achieved[i]);
        }
        // The best that fits: a little more for `a` (a tenth of the increase past what was
        // achieved) does not fit two GPUs.
        let more = vec![p2.achieved[0] + 0.1 * (30000.0 - p2.achieved[0]), 3000.0];
        assert!(d.replan_for(&first, &more, 1).unwrap().is_none(), "{more:?} fits too");
    }
    /// Regression (a 3-day trace of 12 services): a burst's scale-up had no safe order (a third
    /// service dipped while it moved), was refused, and backed off 30, 60, ... 480 s while the
    /// bursting service served 0 % within its SLO. Its fallback adds segments beside what runs.
    #[test]
    fn a_scale_up_with_no_safe_order_adds_beside_the_running_segments() {
        let (p, services) = (profiles(), ab());
        let (first, ctx) = on_node(&p, &services, 8);
        let gpu = ctx.gpu;
        let ctl = Controller::new(Settings::default(), vec!["a".into(), "b".into()], vec![3000.0, 3000.0], 0.0);
        let d = Driver::new(ctl, ctx, &first.segments);
        let cap = |m: &DeploymentMap, name: &str| -> f64 { m.segments.iter().filter(|s| s.service == name).map(|s| s.throughput.unwrap_or(0.0)).sum() };
        let decision = Decision { target: vec![9000.0, 3000.0], direction: Direction::Up, reason: "test".into() };
        let added = d.prepare_added(&first, &decision).unwrap();
        assert!(added.added_only && added.destroyed == 0 && added.rebatched == 0);
        assert!(added.steps.iter().all(|s| matches!(s, Step::Create { segment } if segment.service == "a")), "{:?}", added.steps);
        // Everything that ran still runs where it ran; the new segments are on GPUs that held none.
        for s in &first.segments {
            assert!(added.new_map.segments.contains(s), "{s:?} moved");
        }
        let old_gpus: std::collections::BTreeSet<u32> = first.segments.iter().map(|s| s.gpu).collect();
        assert!(added.steps.iter().all(|s| matches!(s, Step::Create { segment } if !old_gpus.contains(&segment.gpu) && segment.gpu < 8)));
        // `a` can serve its target, `b` what it had; the steps replay legally with no dip.
        assert!(cap(&added.new_map, "a") >= 9000.0 * (1.0 - 1e-6), "{}", cap(&added.new_map, "a"));
        assert_eq!(cap(&added.new_map, "b"), cap(&first, "b"));
        assert_eq!(added.achieved[1], 3000.0);
        assert!(added.achieved[0] >= 9000.0 - 1e-6 && added.shortfall.iter().all(|s| *s == 0.0), "{:?}", added.achieved);
        let demand: BTreeMap<String, f64> = [("a".to_string(), 9000.0), ("b".to_string(), 3000.0)].into();
        steps::replay(gpu, &first.segments, &added.steps, &demand, &|s, _| s.throughput.unwrap_or(0.0)).unwrap();
        // A node with no free GPU: nothing to add on, said so.
        let ctx = PlanContext { node_gpus: first.gpu_count() as u32, ..d.ctx.clone() };
        let full = Driver::new(d.controller.clone(), ctx, &first.segments);
        assert!(full.prepare_added(&first, &decision).unwrap_err().contains("all hold segments"));
    }

    /// A burst that arrives while a scale-down runs waited for its last step (trace 2 of
    /// `scripts/bench/day-results.md`: a 71.6 s scale-down begun the second a service went from
    /// 689 to 1,118 req/s, which it served at 11-40 % within its SLO until the alarm could act).
    /// Now the scale-down stops between steps where a service's load passes what it leaves it:
    /// the node serves what the steps done made, with no instance drained and left, and the
    /// planned rates stay. A scale-up is never stopped.
    #[test]
    fn a_scale_down_stops_where_a_load_passes_what_it_leaves() {
        let (p, services) = (profiles(), ab());
        let (first, ctx) = on_node(&p, &services, 8);
        let gpu = ctx.gpu;
        let drain_s: BTreeMap<String, f64> = [("a".to_string(), 0.05), ("b".to_string(), 0.05)].into();
        let cap = |m: &[Segment], name: &str| -> f64 { m.iter().filter(|s| s.service == name).map(|s| s.throughput.unwrap_or(0.0)).sum() };
        let down = Decision { target: vec![600.0, 600.0], direction: Direction::Down, reason: "test".into() };
        let demand = [500.0, 500.0];
        let run = |stop_at: Option<usize>| {
            let ctl = Controller::new(Settings::default(), vec!["a".into(), "b".into()], vec![3000.0, 3000.0], 0.0);
            let mut d = Driver::new(ctl, ctx.clone(), &first.segments);
            let mut node = SimNode::new(gpu, &first, Costs::default(), drain_s.clone(), 0.0);
            let mut asked = Vec::new();
            let mut stop = |clock: Option<f64>, before: &[f64]| {
                asked.push((clock, before.to_vec()));
                stop_at.is_some_and(|k| asked.len() >= k)
            };
            let out = block_on(d.act(10.0, down.clone(), &demand, &mut node, &prepare_here, &mut stop));
            (out, node, d, asked)
        };
        // Never stopped: all of it applied, asked between steps with the node's clock.
        let (out, node, _, asked) = run(None);
        let Outcome::Applied { prepared, .. } = out else { panic!("{out:?}") };
        assert!(prepared.steps.len() >= 3 && !asked.is_empty(), "{:?}", prepared.steps);
        let left: Vec<f64> = ["a", "b"].iter().map(|n| cap(&first.segments, n).min(cap(&prepared.new_map.segments, n))).collect();
        assert!(asked.windows(2).all(|w| w[0].0 <= w[1].0) && asked.iter().all(|a| a.0.is_some() && a.1 == left), "{asked:?} {left:?}");
        assert!(left.iter().all(|c| *c >= 600.0 && *c < 3000.0), "{left:?}");
        assert!(node.serving().len() < first.segments.len());
        // Stopped at the second question: fewer steps done, every service still above its demand.
        let (out, node, d, asked) = run(Some(2));
        let Outcome::Stopped { prepared, done, .. } = out else { panic!("{out:?}") };
        assert!(done >= 1 && done < prepared.steps.len() && asked.len() == 2, "{done} of {}", prepared.steps.len());
        let serving = node.serving();
        assert_eq!(node.held().segments.len(), serving.len(), "an instance drained and left");
        for (i, n) in ["a", "b"].iter().enumerate() {
            assert!(cap(&serving, n) >= demand[i], "{n}: {}", cap(&serving, n));
            assert!(d.controller.planned()[i] <= 3000.0 && d.controller.planned()[i] > 600.0, "{:?}", d.controller.planned());
            assert!((d.controller.capacity()[i] - cap(&serving, n).max(d.controller.planned()[i])).abs() < 1e-6);
        }
        assert!(Outcome::Stopped { decision: down.clone(), prepared, done }.log_line().unwrap().contains("stopped after"));
        // A scale-up is not asked.
        let ctl = Controller::new(Settings::default(), vec!["a".into(), "b".into()], vec![3000.0, 3000.0], 0.0);
        let mut d = Driver::new(ctl, ctx.clone(), &first.segments);
        let mut node = SimNode::new(gpu, &first, Costs::default(), drain_s.clone(), 0.0);
        let up = Decision { target: vec![6000.0, 3000.0], direction: Direction::Up, reason: "test".into() };
        let out = block_on(d.act(10.0, up, &[5000.0, 2500.0], &mut node, &prepare_here, &mut |_, _| panic!("a scale-up asked")));
        assert!(matches!(out, Outcome::Applied { .. }), "{out:?}");
    }
}
