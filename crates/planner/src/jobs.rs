//! Best-effort jobs on the GPCs a plan leaves idle (`parva plan --jobs`, and the day simulation's
//! goodput).
//!
//! Inference is planned first and never changes for jobs: the jobs get what is left of the
//! cluster's GPUs, as legal MIG instances next to the serving ones (a 4g + 2g layout's free 1g, a
//! GPU the plan leaves empty as one 7g or as smaller instances). The rules:
//!
//! 1. **Keep.** A job instance already running whose GPCs are still free stays where it is (a
//!    re-plan moves no job it does not have to; a moved job pays a checkpoint and a restart).
//! 2. **One each.** Jobs in priority order (highest first, ties in list order) get one instance
//!    each, best fit: on the GPU with the fewest free GPCs that holds one of its sizes
//!    (`min_gpcs..=max_gpcs`), the largest that fits there; so small jobs take the holes of busy
//!    GPUs before they break up an idle one.
//! 3. **Fill.** Then each job in priority order takes further instances, by the same rule, until
//!    none fits, so that no GPC a job could use stays idle.
//!
//! A size is offered to a job only when its model's profile table has a point at that size (a
//! model that does not fit in a 1g's memory gets no 1g). A batch job runs its table's largest
//! batch at the size and its expected samples/s is that point's throughput; a train job runs the
//! same batch and is expected to make [`TRAIN_COST_FACTOR`] times fewer samples/s (forward,
//! backward and the update cost about three forwards), an estimate until trained throughput is
//! profiled.

use std::collections::BTreeMap;

use parva_core::deploy::{DeploymentMap, JobSlot, segment_profile};
use parva_core::jobs::{Job, JobKind, by_priority};
use parva_core::mig::{GpuType, Placement};
use parva_core::profile::ProfileSet;

/// A training step is counted as this many forward passes when a train job's samples/s is
/// estimated from an inference profile.
pub const TRAIN_COST_FACTOR: f64 = 3.0;

/// Where jobs may go: the cluster's GPUs, numbered as maps number them.
#[derive(Debug, Clone, Copy)]
pub struct Cluster {
    pub gpu: &'static GpuType,
    /// GPUs in the cluster: GPU i is node first_node + i / gpus_per_node, GPU i % gpus_per_node.
    pub gpus: u32,
    pub gpus_per_node: u32,
    /// The first node's number (0 for a cluster plan; a node's own number for one node).
    pub first_node: u32,
}

impl Cluster {
    fn ids(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let per = self.gpus_per_node.max(1);
        (0..self.gpus).map(move |i| (self.first_node + i / per, i % per))
    }
}

/// What one job instance of `size` GPCs runs: its batch and expected samples/s, or `None` when
/// the model's profile has no point at that size.
pub fn job_point(profiles: &ProfileSet, job: &Job, size: u8) -> Option<(u32, f64)> {
    let table = profiles.get(&job.model)?;
    let best = table
        .points
        .iter()
        .filter(|p| p.size == size && p.procs == 1)
        .max_by(|a, b| a.batch.cmp(&b.batch).then(a.throughput.total_cmp(&b.throughput)))?;
    let rate = match job.kind {
        JobKind::Batch => best.throughput,
        JobKind::Train => best.throughput / TRAIN_COST_FACTOR,
    };
    Some((best.batch, rate))
}

/// Place `jobs` on what `serving` (and every map in `also_held`, e.g. the other side of a
/// transition) leaves free of `cluster`, keeping the instances of `keep` that still fit. See the
/// module doc for the rules. Serving GPUs outside the cluster get no jobs.
pub fn place_jobs(
    cluster: &Cluster,
    profiles: &ProfileSet,
    jobs: &[Job],
    held: &[&DeploymentMap],
    keep: &[JobSlot],
) -> Vec<JobSlot> {
    let gpu = cluster.gpu;
    let mut layouts: BTreeMap<(u32, u32), Vec<Placement>> = cluster.ids().map(|id| (id, Vec::new())).collect();
    for map in held {
        for s in &map.segments {
            if let (Some(layout), Ok(profile)) = (layouts.get_mut(&(s.node, s.gpu)), segment_profile(gpu, s)) {
                layout.push(Placement { profile, start: s.placement });
            }
        }
    }
    let by_name: BTreeMap<&str, &Job> = jobs.iter().map(|j| (j.name.as_str(), j)).collect();
    let mut out: Vec<JobSlot> = Vec::new();
    // 1. Keep what still fits.
    for k in keep {
        let (Some(job), Some(layout), Some(profile)) =
            (by_name.get(k.job.as_str()), layouts.get_mut(&(k.node, k.gpu)), gpu.profile_for_size(k.instance_size))
        else {
            continue;
        };
        if job.model == k.model && gpu.free_starts(layout, profile).contains(&k.placement) {
            layout.push(Placement { profile, start: k.placement });
            out.push(k.clone());
        }
    }
    let order = by_priority(jobs);
    let place_one = |job: &Job, layouts: &mut BTreeMap<(u32, u32), Vec<Placement>>, out: &mut Vec<JobSlot>| -> bool {
        let mut sizes: Vec<u8> = gpu.sizes().into_iter().filter(|s| (job.min_gpcs..=job.max_gpcs).contains(s)).collect();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        // Best fit: the GPU with the fewest free GPCs that holds an instance, so that small jobs
        // take the holes of busy GPUs before they break up an idle one.
        let mut order: Vec<((u32, u32), u8)> = layouts
            .iter()
            .map(|(id, l)| (*id, gpu.gpcs.saturating_sub(l.iter().map(|p| p.profile.gpcs).sum::<u8>())))
            .filter(|(_, free)| *free > 0)
            .collect();
        order.sort_by_key(|(id, free)| (*free, *id));
        for ((node, g), _) in order {
            let Some(layout) = layouts.get_mut(&(node, g)) else { continue };
            for &size in &sizes {
                let (Some(profile), Some((batch, rate))) = (gpu.profile_for_size(size), job_point(profiles, job, size)) else { continue };
                if let Some(start) = roomiest_start(gpu, layout, profile) {
                    layout.push(Placement { profile, start });
                    out.push(JobSlot {
                        node,
                        gpu: g,
                        job: job.name.clone(),
                        model: job.model.clone(),
                        kind: job.kind,
                        placement: start,
                        instance_size: size,
                        batch_size: batch,
                        priority: job.priority,
                        profile: Some(profile.name.to_string()),
                        gpu_type: Some(gpu.id.to_string()),
                        throughput: Some(rate),
                    });
                    return true;
                }
            }
        }
        false
    };
    // 2. One each.
    for job in &order {
        if !out.iter().any(|s| s.job == job.name) {
            place_one(job, &mut layouts, &mut out);
        }
    }
    // 3. Fill. Each placement takes at least one GPC, so this ends.
    for job in &order {
        while place_one(job, &mut layouts, &mut out) {}
    }
    out.sort_by_key(|a| (a.node, a.gpu, a.placement));
    out
}

/// The legal start for `profile` in `layout` that leaves the largest instance still placeable
/// (a 3g at 4 leaves a 4g at 0; at 0 it would leave only a 3g); ties go to the first start.
fn roomiest_start(gpu: &GpuType, layout: &[Placement], profile: &'static parva_core::mig::GiProfile) -> Option<u8> {
    let starts = gpu.free_starts(layout, profile);
    let room = |start: u8| -> u8 {
        let mut after = layout.to_vec();
        after.push(Placement { profile, start });
        gpu.profiles.iter().filter(|p| !gpu.free_starts(&after, p).is_empty()).map(|p| p.gpcs).max().unwrap_or(0)
    };
    let mut best: Option<(u8, u8)> = None;
    for s in starts {
        let r = room(s);
        if best.is_none_or(|(_, br)| r > br) {
            best = Some((s, r));
        }
    }
    best.map(|(s, _)| s)
}

/// How the job instances change from one map to the next (`parva replan --jobs`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct JobChanges {
    /// Instances that stay where they are.
    pub kept: usize,
    /// Instances stopped (checkpoint, then their MIG instance destroyed) because a new serving
    /// segment needs their GPCs: these go first, before the serving transition's steps.
    pub reclaimed: Vec<JobSlot>,
    /// Instances stopped for another reason (their job left the list, or the GPCs went to
    /// another job's instance), after the serving transition.
    pub stopped: Vec<JobSlot>,
    /// Instances started (resuming from their job's checkpoint) after the serving transition.
    pub started: Vec<JobSlot>,
}

/// Whether a job instance and a serving segment share a memory slice of one GPU (the segment
/// cannot be created while the job's instance exists).
pub fn job_overlaps(gpu: &GpuType, j: &JobSlot, s: &parva_core::Segment) -> bool {
    let mask = |size: u8, start: u8| gpu.profile_for_size(size).map_or(0, |p| p.mask_at(start));
    (j.node, j.gpu) == (s.node, s.gpu) && mask(j.instance_size, j.placement) & mask(s.instance_size, s.placement) != 0
}

/// The job changes from `old` to `new` when `created` (the new map's segments that are not
/// running now) are created.
pub fn job_changes(gpu: &GpuType, old: &[JobSlot], new: &[JobSlot], created: &[&parva_core::Segment]) -> JobChanges {
    let key = |j: &JobSlot| (j.node, j.gpu, j.placement, j.instance_size, j.job.clone());
    let new_keys: std::collections::BTreeSet<_> = new.iter().map(key).collect();
    let old_keys: std::collections::BTreeSet<_> = old.iter().map(key).collect();
    let (mut reclaimed, mut stopped) = (Vec::new(), Vec::new());
    for j in old.iter().filter(|j| !new_keys.contains(&key(j))) {
        if created.iter().any(|s| job_overlaps(gpu, j, s)) {
            reclaimed.push(j.clone());
        } else {
            stopped.push(j.clone());
        }
    }
    JobChanges {
        kept: old.iter().filter(|j| new_keys.contains(&key(j))).count(),
        reclaimed,
        stopped,
        started: new.iter().filter(|j| !old_keys.contains(&key(j))).cloned().collect(),
    }
}

/// GPCs held by `slots`.
pub fn job_gpcs(slots: &[JobSlot]) -> u32 {
    slots.iter().map(|s| s.instance_size as u32).sum()
}

/// What the jobs of a map got, as `parva plan --jobs` reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct JobsSummary {
    /// GPUs of the cluster and its GPCs.
    pub cluster_gpus: u32,
    pub cluster_gpcs: u32,
    /// GPCs the serving segments hold (on the cluster's GPUs).
    pub serving_gpcs: u32,
    /// GPCs given to jobs, and those left idle (free GPCs no legal instance of any job fits).
    pub job_gpcs: u32,
    pub idle_gpcs: u32,
    /// Expected best-effort samples/s of all jobs (train estimated, see [`TRAIN_COST_FACTOR`]).
    pub samples_per_s: f64,
    pub jobs: Vec<JobSummary>,
}

/// One job's share.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct JobSummary {
    pub job: String,
    pub model: String,
    pub kind: JobKind,
    pub priority: u32,
    pub instances: usize,
    pub gpcs: u32,
    pub samples_per_s: f64,
}

/// Summarise the jobs of `map` (its `jobs` placed by [`place_jobs`]) on `cluster`.
pub fn summarize(cluster: &Cluster, jobs: &[Job], map: &DeploymentMap) -> JobsSummary {
    let ids: std::collections::BTreeSet<(u32, u32)> = cluster.ids().collect();
    let serving_gpcs: u32 =
        map.segments.iter().filter(|s| ids.contains(&(s.node, s.gpu))).map(|s| s.instance_size as u32).sum();
    let cluster_gpcs = cluster.gpus * cluster.gpu.gpcs as u32;
    let job_gpcs = job_gpcs(&map.jobs);
    let per_job: Vec<JobSummary> = by_priority(jobs)
        .into_iter()
        .map(|j| {
            let mine: Vec<&JobSlot> = map.jobs.iter().filter(|s| s.job == j.name).collect();
            JobSummary {
                job: j.name.clone(),
                model: j.model.clone(),
                kind: j.kind,
                priority: j.priority,
                instances: mine.len(),
                gpcs: mine.iter().map(|s| s.instance_size as u32).sum(),
                samples_per_s: mine.iter().filter_map(|s| s.throughput).sum::<f64>() + 0.0,
            }
        })
        .collect();
    JobsSummary {
        cluster_gpus: cluster.gpus,
        cluster_gpcs,
        serving_gpcs,
        job_gpcs,
        idle_gpcs: cluster_gpcs.saturating_sub(serving_gpcs + job_gpcs),
        samples_per_s: per_job.iter().map(|j| j.samples_per_s).sum(),
        jobs: per_job,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parva_core::ModelProfile;
    use parva_core::jobs::JobKind;
    use std::path::Path;

    fn profiles() -> ProfileSet {
        // "big" has no 1g point (too large for its memory); "m" has every size.
        let mut m = String::from("Mig instance,Batch size,Workload Number,Throughput,Latency\n");
        let mut big = m.clone();
        for size in [1u8, 2, 3, 4, 7] {
            for b in [8u32, 32] {
                let lat = 0.001 * b as f64 / size as f64;
                m.push_str(&format!("{size},{b},1,{},{lat}\n", b as f64 / lat));
                if size > 1 {
                    big.push_str(&format!("{size},{b},1,{},{lat}\n", b as f64 / lat));
                }
            }
        }
        let read = |t: &str, n: &str| ModelProfile::read_from(t.as_bytes(), Path::new("x.csv"), n.into(), None).unwrap();
        ProfileSet { dir: "mem".into(), models: [("m".to_string(), read(&m, "m")), ("big".to_string(), read(&big, "big"))].into_iter().collect() }
    }

    fn job(name: &str, model: &str, kind: JobKind, min: u8, max: u8, priority: u32) -> Job {
        Job { name: name.into(), model: model.into(), kind, min_gpcs: min, max_gpcs: max, priority }
    }

    /// A map with a 4g at 0 and a 2g at 4 on GPU 0 of node 0.
    fn serving() -> DeploymentMap {
        let text = "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n\
                    0,0,a,m,0,4,8,1,4g.40gb,a100-80gb,100,50,100\n\
                    0,0,b,m,4,2,8,1,2g.20gb,a100-80gb,100,50,100\n";
        DeploymentMap::read_from(text.as_bytes(), Path::new("d.csv")).unwrap().0
    }

    fn cluster(gpus: u32) -> Cluster {
        Cluster { gpu: GpuType::by_id("a100-80gb").unwrap(), gpus, gpus_per_node: 8, first_node: 0 }
    }

    fn all(map: &DeploymentMap, slots: &[JobSlot]) -> DeploymentMap {
        DeploymentMap { segments: map.segments.clone(), jobs: slots.to_vec() }
    }

    #[test]
    fn jobs_fill_the_holes_of_a_layout_and_the_idle_gpus_legally() {
        let (p, map) = (profiles(), serving());
        let jobs = [job("ft", "m", JobKind::Train, 1, 7, 10)];
        let slots = place_jobs(&cluster(2), &p, &jobs, &[&map], &[]);
        // GPU 0 has one GPC free (slice 6): a 1g; GPU 1 is idle: one 7g.
        let got: Vec<(u32, u8, u8)> = slots.iter().map(|s| (s.gpu, s.placement, s.instance_size)).collect();
        assert_eq!(got, [(0, 6, 1), (1, 0, 7)]);
        assert!(all(&map, &slots).check_layouts(cluster(2).gpu).is_empty());
        assert_eq!(job_gpcs(&slots), 8);
        // The serving segments are untouched: the plan never pays for its jobs.
        assert_eq!(all(&map, &slots).segments, map.segments);
        // A train instance is expected at a third of the inference throughput at its largest batch.
        let (batch, rate) = job_point(&p, &jobs[0], 7).unwrap();
        assert_eq!(batch, 32);
        assert!((slots[1].throughput.unwrap() - rate).abs() < 1e-9);
        assert!((rate - job_point(&p, &job("x", "m", JobKind::Batch, 1, 7, 1), 7).unwrap().1 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn higher_priority_goes_first_and_sizes_stay_within_min_and_max() {
        let (p, map) = (profiles(), serving());
        let jobs = [
            job("low", "m", JobKind::Batch, 1, 1, 1),
            job("high", "big", JobKind::Train, 2, 3, 9),
        ];
        let slots = place_jobs(&cluster(2), &p, &jobs, &[&map], &[]);
        for s in &slots {
            let j = jobs.iter().find(|j| j.name == s.job).unwrap();
            assert!((j.min_gpcs..=j.max_gpcs).contains(&s.instance_size), "{s:?}");
        }
        // "high" (no 1g point for its model, at most 3 GPCs) takes the idle GPU as 3g + 3g.
        let high: Vec<(u32, u8)> = slots.iter().filter(|s| s.job == "high").map(|s| (s.gpu, s.instance_size)).collect();
        assert_eq!(high, [(1, 3), (1, 3)]);
        let low: Vec<(u32, u8)> = slots.iter().filter(|s| s.job == "low").map(|s| (s.gpu, s.placement)).collect();
        assert_eq!(low, [(0, 6)], "the 1g hole beside the 4g + 2g goes to the lower priority (a 3g + 3g leaves no memory slice)");
        assert!(all(&map, &slots).check_layouts(cluster(2).gpu).is_empty());
    }

    #[test]
    fn a_small_instance_on_an_idle_gpu_leaves_the_most_room_beside_it() {
        let p = profiles();
        let jobs = [job("small", "m", JobKind::Batch, 3, 3, 9), job("rest", "m", JobKind::Train, 1, 7, 1)];
        let slots = place_jobs(&cluster(1), &p, &jobs, &[], &[]);
        // A 3g at 0 would leave a 3g; at 4 it leaves a 4g: all 7 GPCs work.
        let got: Vec<(&str, u8, u8)> = slots.iter().map(|s| (s.job.as_str(), s.placement, s.instance_size)).collect();
        assert_eq!(got, [("rest", 0, 4), ("small", 4, 3)]);
    }

    #[test]
    fn running_jobs_that_still_fit_stay_where_they_are() {
        let (p, map) = (profiles(), serving());
        let jobs = [job("a", "m", JobKind::Train, 1, 7, 1), job("b", "m", JobKind::Batch, 1, 7, 5)];
        // "a" runs as a 3g at 4 on GPU 1; a fresh placement would give GPU 1 to "b" whole.
        let mut running = place_jobs(&cluster(2), &p, &jobs[..1], &[&map], &[]);
        running.retain(|s| s.gpu == 1);
        running[0].placement = 4;
        running[0].instance_size = 3;
        running[0].profile = Some("3g.40gb".into());
        let slots = place_jobs(&cluster(2), &p, &jobs, &[&map], &running);
        assert!(slots.contains(&running[0]), "{slots:?}");
        assert!(all(&map, &slots).check_layouts(cluster(2).gpu).is_empty());
        // One that no longer fits (inference took its GPU) is not kept.
        let mut grown = map.clone();
        let mut seg = map.segments[0].clone();
        (seg.gpu, seg.instance_size, seg.profile) = (1, 7, Some("7g.80gb".into()));
        grown.segments.push(seg);
        let slots = place_jobs(&cluster(2), &p, &jobs, &[&grown], &running);
        assert!(!slots.contains(&running[0]));
        assert!(all(&grown, &slots).check_layouts(cluster(2).gpu).is_empty());
    }

    #[test]
    fn job_changes_reclaim_first_what_a_new_segment_needs() {
        let (p, map) = (profiles(), serving());
        let jobs = [job("ft", "m", JobKind::Train, 1, 7, 1)];
        let old = place_jobs(&cluster(2), &p, &jobs, &[&map], &[]);
        // Inference grows onto GPU 1 with a 4g at 0: the 7g job there is reclaimed, a 3g restarts.
        let mut grown = map.clone();
        let mut seg = map.segments[0].clone();
        seg.gpu = 1;
        grown.segments.push(seg);
        let new = place_jobs(&cluster(2), &p, &jobs, &[&grown], &old);
        let created: Vec<&parva_core::Segment> = grown.segments.iter().filter(|s| s.gpu == 1).collect();
        let c = job_changes(cluster(2).gpu, &old, &new, &created);
        assert_eq!(c.kept, 1, "the 1g on GPU 0 stays");
        assert_eq!(c.reclaimed.iter().map(|j| (j.gpu, j.instance_size)).collect::<Vec<_>>(), [(1, 7)]);
        assert!(c.stopped.is_empty());
        assert_eq!(c.started.iter().map(|j| (j.gpu, j.placement, j.instance_size)).collect::<Vec<_>>(), [(1, 4, 3)]);
    }

    #[test]
    fn gpus_outside_the_cluster_and_gpcs_held_by_either_side_of_a_transition_get_no_job() {
        let (p, map) = (profiles(), serving());
        let jobs = [job("ft", "m", JobKind::Train, 1, 7, 1)];
        let mut other = map.clone();
        other.segments[1].placement = 6;
        other.segments[1].instance_size = 1;
        other.segments[1].profile = Some("1g.10gb".into());
        // Old: 4g@0 + 2g@4; new: 4g@0 + 1g@6: nothing of GPU 0 is free during the change.
        let slots = place_jobs(&cluster(1), &p, &jobs, &[&map, &other], &[]);
        assert!(slots.is_empty(), "{slots:?}");
        // Afterwards the new map leaves a 2g at 4 free.
        let slots = place_jobs(&cluster(1), &p, &jobs, &[&other], &[]);
        assert_eq!(slots.iter().map(|s| (s.placement, s.instance_size)).collect::<Vec<_>>(), [(4, 2)]);
    }
}
