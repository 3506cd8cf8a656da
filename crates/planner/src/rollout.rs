//! A new map across a cluster without an outage: the order in which nodes change so that every
//! service keeps ready capacity for its floor at every moment (`parva export k8s --from OLD`).
//!
//! A node **changes** when its segments differ between the maps. Where its MIG layout (each GPU's
//! instances, placement and size) changes, the MIG manager needs its GPUs free: all its segments
//! stop, the node is relabelled, then its new segments start (a **relayout**). Where the layout
//! stays, only the segments that differ stop and their replacements start on the same instances
//! (a **pod change**); identical segments keep serving. A node that does not change is left alone.
//!
//! The rollout is a list of **waves**, each at most `max_nodes` nodes changing together: while a
//! wave runs, a service has the ready capacity of every node not in it plus what the wave's nodes
//! keep; after it, the wave's nodes serve their new segments. A service's **floor** is
//! `min_available` x the lesser of its capacity under the old map and under the new one (so a
//! service that shrinks is held to its new size, one that grows to its old one).
//!
//! The order is found by a search over the sets of changed nodes (exact up to [`EXACT_NODES`]
//! changing nodes, greedy past that), nodes that only add capacity first. Where no order keeps
//! every floor, [`plan_rollout`] says so and names **spare nodes**: each holds a copy of one
//! changing node's current segments for the length of the rollout (the fewest found, greedily),
//! with which an order exists. [`replay`] checks a rollout independently: it rebuilds each moment's
//! segments from the two maps and the waves alone.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use parva_core::deploy::{DeploymentMap, Segment};

/// Up to this many changing nodes the order is searched exactly (every reachable set of changed
/// nodes, 2^n at most); past it, greedily.
pub const EXACT_NODES: usize = 16;

/// How one node changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeChange {
    /// Its MIG layout changes: all its segments stop, then it is relabelled.
    Relayout,
    /// Same layout: the segments that differ are replaced on their instances.
    Pods,
}

/// One wave of the rollout.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Wave {
    /// The nodes that change in this wave, and how.
    pub nodes: Vec<(u32, NodeChange)>,
    /// Each service's ready capacity (requests/s) while the wave runs.
    pub during: BTreeMap<String, f64>,
    /// And once the wave's nodes serve their new segments.
    pub after: BTreeMap<String, f64>,
}

/// A rollout plan (see the module doc).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Rollout {
    pub min_available: f64,
    pub max_nodes: usize,
    /// Each service's floor, requests/s.
    pub floors: BTreeMap<String, f64>,
    /// Each service's capacity under the old map (before the first wave).
    pub before: BTreeMap<String, f64>,
    pub waves: Vec<Wave>,
    /// Nodes whose segments do not change.
    pub unchanged: Vec<u32>,
}

/// Why no rollout is offered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RolloutError {
    #[error("--min-available must be in [0, 1], found {0}")]
    MinAvailable(f64),
    #[error("--max-unavailable-nodes must be at least 1")]
    MaxNodes,
    #[error(
        "no order of the node changes keeps every service at its floor ({min_available} x its capacity): {blocked}; \
         nothing was written. With {} spare node(s) of the same GPUs, each holding a copy of the current segments of \
         node(s) {} for the length of the rollout, an order exists; or lower --min-available",
        spares.len(),
        spares.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    NoSafeOrder { min_available: f64, blocked: String, spares: Vec<u32> },
}

/// Capacity per service (segments' profiled throughput; a segment without one counts 0).
fn capacity<'a>(segments: impl Iterator<Item = &'a Segment>) -> BTreeMap<String, f64> {
    let mut c = BTreeMap::new();
    for s in segments {
        *c.entry(s.service.clone()).or_insert(0.0) += s.throughput.unwrap_or(0.0).max(0.0);
    }
    c
}

/// What identifies a segment's workload on its node: its instance and what runs on it.
fn key(s: &Segment) -> (u32, u8, u8, &str, &str, u32, u32) {
    (s.gpu, s.placement, s.instance_size, s.service.as_str(), s.model.as_str(), s.batch_size, s.num_proc)
}

fn layout(segs: &[&Segment]) -> BTreeSet<(u32, u8, u8)> {
    segs.iter().map(|s| (s.gpu, s.placement, s.instance_size)).collect()
}

/// The nodes that change between `old` and `new`, how, and the segments each keeps.
pub fn node_changes(old: &DeploymentMap, new: &DeploymentMap) -> BTreeMap<u32, (NodeChange, Vec<Segment>)> {
    let nodes: BTreeSet<u32> = old.segments.iter().chain(&new.segments).map(|s| s.node).collect();
    let mut out = BTreeMap::new();
    for n in nodes {
        let o: Vec<&Segment> = old.segments.iter().filter(|s| s.node == n).collect();
        let w: Vec<&Segment> = new.segments.iter().filter(|s| s.node == n).collect();
        let ok: BTreeSet<_> = o.iter().map(|s| key(s)).collect();
        let nk: BTreeSet<_> = w.iter().map(|s| key(s)).collect();
        if ok == nk {
            continue;
        }
        if layout(&o) != layout(&w) {
            out.insert(n, (NodeChange::Relayout, Vec::new()));
        } else {
            let kept = o.iter().filter(|s| nk.contains(&key(s))).map(|s| (*s).clone()).collect();
            out.insert(n, (NodeChange::Pods, kept));
        }
    }
    out
}

/// Per node: capacity under the old map, under the new one, and what it keeps while changing.
struct Node {
    id: u32,
    change: NodeChange,
    old: BTreeMap<String, f64>,
    new: BTreeMap<String, f64>,
    kept: BTreeMap<String, f64>,
}

fn get(m: &BTreeMap<String, f64>, s: &str) -> f64 {
    m.get(s).copied().unwrap_or(0.0)
}

struct Search<'a> {
    nodes: &'a [Node],
    services: &'a [String],
    floors: &'a BTreeMap<String, f64>,
    /// Capacity of the nodes that never change, plus the spares'.
    base: BTreeMap<String, f64>,
}

impl Search<'_> {
    /// Ready capacity of `s` when the nodes in `done` serve their new segments and those in
    /// `now` are changing.
    fn cap(&self, s: &str, done: u64, now: u64) -> f64 {
        let mut c = get(&self.base, s);
        for (i, n) in self.nodes.iter().enumerate() {
            let bit = 1u64 << i;
            c += if now & bit != 0 {
                get(&n.kept, s)
            } else if done & bit != 0 {
                get(&n.new, s)
            } else {
                get(&n.old, s)
            };
        }
        c
    }

    fn safe(&self, done: u64, now: u64) -> bool {
        self.services.iter().all(|s| self.cap(s, done, now) + 1e-9 >= get(self.floors, s))
    }

    /// Nodes in the order to try: those that lose nothing first, then by what they add.
    fn order(&self) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.nodes.len()).collect();
        let loss = |n: &Node| n.old.iter().map(|(s, c)| (c - get(&n.kept, s)).max(0.0)).sum::<f64>();
        let gain = |n: &Node| n.new.values().sum::<f64>() - n.old.values().sum::<f64>();
        v.sort_by(|&a, &b| {
            let (na, nb) = (&self.nodes[a], &self.nodes[b]);
            (loss(na) > 1e-9).cmp(&(loss(nb) > 1e-9)).then(gain(nb).total_cmp(&gain(na))).then(na.id.cmp(&nb.id))
        });
        v
    }

    /// An order of single node changes that keeps every floor, if one exists.
    fn find(&self) -> Option<Vec<usize>> {
        let all = if self.nodes.is_empty() { 0 } else { u64::MAX >> (64 - self.nodes.len()) };
        let order = self.order();
        let mut path = Vec::new();
        if self.nodes.len() <= EXACT_NODES {
            let mut dead = HashSet::new();
            return self.dfs(0, all, &order, &mut dead, &mut path).then_some(path);
        }
        // Greedy: the first node (in order) whose change is safe, until none is.
        let mut done = 0u64;
        while done != all {
            let next = order.iter().copied().find(|&i| done & (1 << i) == 0 && self.safe(done, 1 << i))?;
            done |= 1 << next;
            path.push(next);
        }
        Some(path)
    }

    fn dfs(&self, done: u64, all: u64, order: &[usize], dead: &mut HashSet<u64>, path: &mut Vec<usize>) -> bool {
        if done == all {
            return true;
        }
        if dead.contains(&done) {
            return false;
        }
        for &i in order {
            let bit = 1u64 << i;
            if done & bit == 0 && self.safe(done, bit) {
                path.push(i);
                if self.dfs(done | bit, all, order, dead, path) {
                    return true;
                }
                path.pop();
            }
        }
        dead.insert(done);
        false
    }

    /// The services below their floor when `i` changes next after `done` (for the message).
    fn shortfall(&self, done: u64, i: usize) -> Vec<(String, f64, f64)> {
        self.services
            .iter()
            .filter_map(|s| {
                let c = self.cap(s, done, 1 << i);
                (c + 1e-9 < get(self.floors, s)).then(|| (s.clone(), c, get(self.floors, s)))
            })
            .collect()
    }
}

/// Plan the rollout from `old` to `new` (see the module doc): waves of at most `max_nodes`
/// nodes, every service at least `min_available` x min(old, new capacity) throughout.
pub fn plan_rollout(old: &DeploymentMap, new: &DeploymentMap, min_available: f64, max_nodes: usize) -> Result<Rollout, RolloutError> {
    if !(min_available.is_finite() && (0.0..=1.0).contains(&min_available)) {
        return Err(RolloutError::MinAvailable(min_available));
    }
    if max_nodes == 0 {
        return Err(RolloutError::MaxNodes);
    }
    let before = capacity(old.segments.iter());
    let after = capacity(new.segments.iter());
    let services: Vec<String> = before.keys().chain(after.keys()).cloned().collect::<BTreeSet<_>>().into_iter().collect();
    let floors: BTreeMap<String, f64> =
        services.iter().map(|s| (s.clone(), min_available * get(&before, s).min(get(&after, s)))).collect();
    let changes = node_changes(old, new);
    let nodes: Vec<Node> = changes
        .iter()
        .map(|(&id, (change, kept))| Node {
            id,
            change: *change,
            old: capacity(old.segments.iter().filter(|s| s.node == id)),
            new: capacity(new.segments.iter().filter(|s| s.node == id)),
            kept: capacity(kept.iter()),
        })
        .collect();
    let unchanged: Vec<u32> = old.segments.iter().chain(&new.segments).map(|s| s.node).filter(|n| !changes.contains_key(n)).collect::<BTreeSet<_>>().into_iter().collect();
    let base = capacity(old.segments.iter().filter(|s| !changes.contains_key(&s.node)));
    if nodes.len() > 63 {
        // The search's sets are 64-bit; a rollout of more nodes goes in parts (export the maps
        // node group by node group).
        return Err(RolloutError::NoSafeOrder {
            min_available,
            blocked: format!("{} nodes change; at most 63 are planned at once: roll out in parts", nodes.len()),
            spares: Vec::new(),
        });
    }
    let search = Search { nodes: &nodes, services: &services, floors: &floors, base: base.clone() };
    let Some(path) = search.find() else {
        // Why, and the spares that would make it safe.
        let blocked = blocked_text(&search);
        let spares = spares_needed(&nodes, &services, &floors, &base);
        return Err(RolloutError::NoSafeOrder { min_available, blocked, spares });
    };
    // Pack consecutive changes into waves of at most max_nodes that stay safe together.
    let mut waves = Vec::new();
    let mut done = 0u64;
    let mut k = 0;
    while k < path.len() {
        let mut now = 1u64 << path[k];
        let mut members = vec![path[k]];
        k += 1;
        while k < path.len() && members.len() < max_nodes && search.safe(done, now | (1 << path[k])) {
            now |= 1 << path[k];
            members.push(path[k]);
            k += 1;
        }
        let during = services.iter().map(|s| (s.clone(), search.cap(s, done, now))).collect();
        done |= now;
        let after = services.iter().map(|s| (s.clone(), search.cap(s, done, 0))).collect();
        waves.push(Wave { nodes: members.iter().map(|&i| (nodes[i].id, nodes[i].change)).collect(), during, after });
    }
    Ok(Rollout { min_available, max_nodes, floors, before, waves, unchanged })
}

fn blocked_text(search: &Search<'_>) -> String {
    // From the largest set of changes reachable safely, what the next change of each node costs.
    let mut done = 0u64;
    let order = search.order();
    while let Some(i) = order.iter().copied().find(|&i| done & (1 << i) == 0 && search.safe(done, 1 << i)) {
        done |= 1 << i;
    }
    let mut parts = Vec::new();
    for &i in &order {
        if done & (1 << i) != 0 {
            continue;
        }
        let short = search.shortfall(done, i);
        if let Some((s, c, f)) = short.first() {
            parts.push(format!("changing node {} leaves {s} at {c:.1} of its {f:.1} requests/s", search.nodes[i].id));
        }
        if parts.len() == 3 {
            break;
        }
    }
    parts.join("; ")
}

/// The fewest spare nodes found greedily: each takes a copy of one changing node's old
/// segments; add the copy that lets the most nodes change, until an order exists.
fn spares_needed(nodes: &[Node], services: &[String], floors: &BTreeMap<String, f64>, base: &BTreeMap<String, f64>) -> Vec<u32> {
    let mut extra = base.clone();
    let mut spares: Vec<u32> = Vec::new();
    loop {
        let search = Search { nodes, services, floors, base: extra.clone() };
        if search.find().is_some() || spares.len() == nodes.len() {
            return spares;
        }
        let reach = |base: &BTreeMap<String, f64>| -> usize {
            let s = Search { nodes, services, floors, base: base.clone() };
            let order = s.order();
            let mut done = 0u64;
            let mut n = 0;
            while let Some(i) = order.iter().copied().find(|&i| done & (1 << i) == 0 && s.safe(done, 1 << i)) {
                done |= 1 << i;
                n += 1;
            }
            n
        };
        let with = |n: &Node| -> BTreeMap<String, f64> {
            let mut b = extra.clone();
            for (s, c) in &n.old {
                *b.entry(s.clone()).or_insert(0.0) += c;
            }
            b
        };
        let best = nodes
            .iter()
            .filter(|n| !spares.contains(&n.id))
            .max_by(|a, b| reach(&with(a)).cmp(&reach(&with(b))).then(b.id.cmp(&a.id)));
        let Some(best) = best else { return spares };
        extra = with(best);
        spares.push(best.id);
    }
}

/// An independent check of `rollout` from `old` to `new`: each moment's segments rebuilt from the
/// maps and the waves alone (a relayout node serves nothing while it changes, a pod-change node
/// the segments both maps give it; `spares` add copies of those nodes' old segments), each
/// service at or above its floor (`min_available` x min(old, new capacity)), and at the end the
/// new map. Returns the first violation.
pub fn replay(old: &DeploymentMap, new: &DeploymentMap, rollout: &Rollout, spares: &[u32]) -> Result<(), String> {
    let cap = |segs: &[Segment]| {
        let mut c: BTreeMap<&str, f64> = BTreeMap::new();
        for s in segs {
            *c.entry(s.service.as_str()).or_insert(0.0) += s.throughput.unwrap_or(0.0);
        }
        c.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<BTreeMap<String, f64>>()
    };
    let (c_old, c_new) = (cap(&old.segments), cap(&new.segments));
    let spare_segs: Vec<Segment> = old.segments.iter().filter(|s| spares.contains(&s.node)).cloned().collect();
    let mut running: Vec<Segment> = old.segments.clone();
    let check = |segs: &[Segment], when: &str| -> Result<(), String> {
        let mut all = segs.to_vec();
        all.extend(spare_segs.iter().cloned());
        let c = cap(&all);
        for (s, o) in &c_old {
            let floor = rollout.min_available * o.min(c_new.get(s).copied().unwrap_or(0.0));
            let have = c.get(s).copied().unwrap_or(0.0);
            if have + 1e-6 < floor {
                return Err(format!("{when}: {s} has {have:.3} requests/s, below its floor {floor:.3}"));
            }
        }
        Ok(())
    };
    let mut changed: BTreeSet<u32> = BTreeSet::new();
    for (k, w) in rollout.waves.iter().enumerate() {
        for (n, _) in &w.nodes {
            if !changed.insert(*n) {
                return Err(format!("wave {k}: node {n} changes twice"));
            }
        }
        if w.nodes.len() > rollout.max_nodes {
            return Err(format!("wave {k}: {} nodes at once, more than {}", w.nodes.len(), rollout.max_nodes));
        }
        let wave: BTreeSet<u32> = w.nodes.iter().map(|n| n.0).collect();
        // While it runs: a wave node keeps a segment only where both maps have the same one on
        // a node whose layout does not change.
        let during: Vec<Segment> = running
            .iter()
            .filter(|s| {
                if !wave.contains(&s.node) {
                    return true;
                }
                let same_layout = {
                    let lay = |m: &DeploymentMap| m.segments.iter().filter(|x| x.node == s.node).map(|x| (x.gpu, x.placement, x.instance_size)).collect::<BTreeSet<_>>();
                    lay(old) == lay(new)
                };
                same_layout && new.segments.iter().any(|x| x.node == s.node && key(x) == key(s))
            })
            .cloned()
            .collect();
        check(&during, &format!("wave {k} running"))?;
        running = during;
        // After it: the wave's nodes run the new map's segments (a kept one with the new map's
        // figures).
        running.retain(|s| !wave.contains(&s.node));
        running.extend(new.segments.iter().filter(|s| wave.contains(&s.node)).cloned());
        check(&running, &format!("after wave {k}"))?;
    }
    let norm = |segs: &[Segment]| segs.iter().map(|s| (s.node, key(s).0, key(s).1, key(s).2, s.service.clone(), s.batch_size, s.num_proc)).collect::<BTreeSet<_>>();
    if norm(&running) != norm(&new.segments) {
        return Err("after the last wave the cluster does not run the new map".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seg(node: u32, gpu: u32, placement: u8, size: u8, service: &str, throughput: f64) -> Segment {
        Segment {
            batch_size: 4,
            gpu_type: Some("a100-80gb".into()),
            throughput: Some(throughput),
            slo_ms: Some(100.0),
            ..Segment::at(node, gpu, placement, size, service, "m")
        }
    }

    fn map(segments: Vec<Segment>) -> DeploymentMap {
        DeploymentMap { segments, jobs: Vec::new() }
    }

    /// Regression (issue 33): a re-plan in which every node's layout changes was applied by
    /// deleting every segment on all nodes at once. Here: 3 nodes, each service on two of them;
    /// one node at a time keeps every service serving.
    #[test]
    fn every_node_changing_is_rolled_out_one_node_at_a_time_and_every_service_keeps_serving() {
        let old = map(vec![
            seg(0, 0, 0, 7, "a", 100.0),
            seg(1, 0, 0, 7, "a", 100.0),
            seg(1, 1, 0, 7, "b", 100.0),
            seg(2, 0, 0, 7, "b", 100.0),
        ]);
        // Every node's layout changes (7g -> 4g + 3g); the same capacity spread differently.
        let new = map(vec![
            seg(0, 0, 0, 4, "a", 60.0),
            seg(0, 0, 4, 3, "b", 50.0),
            seg(1, 0, 0, 4, "a", 80.0),
            seg(1, 1, 0, 4, "b", 60.0),
            seg(2, 0, 0, 4, "a", 60.0),
            seg(2, 0, 4, 3, "b", 50.0),
        ]);
        let r = plan_rollout(&old, &new, 0.5, 1).unwrap();
        assert_eq!(r.waves.len(), 3, "{r:#?}");
        assert!(r.waves.iter().all(|w| w.nodes.len() == 1 && w.nodes[0].1 == NodeChange::Relayout));
        for w in &r.waves {
            for (s, c) in &w.during {
                assert!(*c >= r.floors[s] - 1e-9, "{s} at {c} below {}", r.floors[s]);
                assert!(*c > 0.0, "{s} down during {w:?}");
            }
        }
        replay(&old, &new, &r, &[]).unwrap();
        // All at once would take a service to zero: refused at 100 %, with the spares named.
        let e = plan_rollout(&old, &new, 1.0, 3).unwrap_err();
        let RolloutError::NoSafeOrder { spares, .. } = &e else { panic!("{e}") };
        assert!(!spares.is_empty() && e.to_string().contains("spare node"), "{e}");
    }

    #[test]
    fn a_node_that_only_gains_goes_first_and_unchanged_nodes_are_left_alone() {
        let old = map(vec![seg(0, 0, 0, 7, "a", 100.0), seg(1, 0, 0, 7, "b", 100.0)]);
        // Node 2 is new; node 0 moves `a` to node 2 and takes `b`; node 1 is unchanged.
        let new = map(vec![seg(0, 0, 0, 7, "b", 100.0), seg(1, 0, 0, 7, "b", 100.0), seg(2, 0, 0, 7, "a", 100.0)]);
        let r = plan_rollout(&old, &new, 1.0, 1).unwrap();
        assert_eq!(r.unchanged, vec![1]);
        assert_eq!(r.waves[0].nodes[0].0, 2, "{r:#?}");
        replay(&old, &new, &r, &[]).unwrap();
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        let m = map(vec![seg(0, 0, 0, 7, "a", 1.0)]);
        assert_eq!(plan_rollout(&m, &m, 1.5, 1), Err(RolloutError::MinAvailable(1.5)));
        assert_eq!(plan_rollout(&m, &m, 1.0, 0), Err(RolloutError::MaxNodes));
        let r = plan_rollout(&m, &m, 1.0, 1).unwrap();
        assert!(r.waves.is_empty() && r.unchanged == vec![0]);
    }

    /// A random map on `nodes` nodes of 2 GPUs: each GPU one of a few A100 layouts, each
    /// instance a random service of 4 with a random capacity.
    fn arb_map(nodes: u32) -> impl Strategy<Value = DeploymentMap> {
        let layouts: Vec<Vec<(u8, u8)>> = vec![vec![(0, 7)], vec![(0, 4), (4, 3)], vec![(0, 3), (4, 3)], vec![], vec![(0, 2), (2, 2), (4, 3)]];
        let n = (nodes * 2) as usize;
        proptest::collection::vec((0..layouts.len(), proptest::collection::vec((0usize..4, 10u32..100), 3)), n).prop_map(move |gpus| {
            let mut segs = Vec::new();
            for (g, (l, picks)) in gpus.iter().enumerate() {
                for (k, &(p, size)) in layouts[*l].iter().enumerate() {
                    let (svc, tp) = picks[k];
                    segs.push(seg(g as u32 / 2, g as u32 % 2, p, size, ["a", "b", "c", "d"][svc], f64::from(tp)));
                }
            }
            map(segs)
        })
    }

    /// An independent oracle: is there an order of single node changes keeping every floor?
    /// (Every permutation, capacities recomputed from the segments.)
    fn some_order_is_safe(old: &DeploymentMap, new: &DeploymentMap, min_available: f64, spares: &[u32]) -> bool {
        let changing: Vec<u32> = node_changes(old, new).keys().copied().collect();
        fn perms(v: &[u32]) -> Vec<Vec<u32>> {
            if v.len() <= 1 {
                return vec![v.to_vec()];
            }
            let mut out = Vec::new();
            for i in 0..v.len() {
                let mut rest = v.to_vec();
                let x = rest.remove(i);
                for mut p in perms(&rest) {
                    p.insert(0, x);
                    out.push(p);
                }
            }
            out
        }
        let changes = node_changes(old, new);
        perms(&changing).into_iter().any(|order| {
            let r = Rollout {
                min_available,
                max_nodes: 1,
                floors: BTreeMap::new(),
                before: BTreeMap::new(),
                waves: order.iter().map(|n| Wave { nodes: vec![(*n, changes[n].0)], during: BTreeMap::new(), after: BTreeMap::new() }).collect(),
                unchanged: Vec::new(),
            };
            replay(old, new, &r, spares).is_ok()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        /// Issue 33's acceptance: random pairs of maps on 2-6 nodes. A rollout offered replays
        /// safely (independently); one refused has no safe order (every permutation tried), and
        /// with the spares it names one exists.
        #[test]
        fn a_rollout_replays_safely_or_none_exists(
            (old, new) in (2u32..=6).prop_flat_map(|n| (arb_map(n), arb_map(n))),
            min_available in prop_oneof![Just(1.0), Just(0.8), Just(0.5)],
            max_nodes in 1usize..=3,
        ) {
            match plan_rollout(&old, &new, min_available, max_nodes) {
                Ok(r) => {
                    prop_assert!(replay(&old, &new, &r, &[]).is_ok(), "{:?}", replay(&old, &new, &r, &[]));
                    for w in &r.waves {
                        prop_assert!(w.nodes.len() <= max_nodes);
                    }
                }
                Err(RolloutError::NoSafeOrder { spares, blocked, .. }) => {
                    prop_assert!(!some_order_is_safe(&old, &new, min_available, &[]), "refused ({}) but an order exists", blocked);
                    prop_assert!(some_order_is_safe(&old, &new, min_available, &spares), "spares {:?}", spares);
                }
                Err(e) => prop_assert!(false, "{}", e),
            }
        }
    }
}
