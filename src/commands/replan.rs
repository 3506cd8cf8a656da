use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use parva_core::DeploymentMap;
use parva_planner::replan::{self, Costs};

use super::plan::PlanInputArgs;

#[derive(clap::Args)]
pub struct ReplanArgs {
    /// The map that runs now (parva's CSV).
    #[arg(long = "from", value_name = "MAP")]
    from: PathBuf,
    #[command(flatten)]
    input: PlanInputArgs,
    /// GPUs the new map may use beyond the fewest, when they save changes (the report lists what
    /// each count costs).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=64))]
    max_extra_gpus: u32,
    /// Seconds each change takes, for the transition's timeline: any of mig-create, mig-destroy,
    /// worker-start, mps-start as KEY=SECONDS, comma-separated. Defaults: worker-start=2 and
    /// mps-start=0.02 (measured on an H100 by scripts/gpu-check), mig-create=1 and mig-destroy=0.5
    /// (assumed: not measured yet on a node whose MIG layout may be changed).
    #[arg(long, value_name = "KEY=S,...", default_value = "")]
    cost: Costs,
    /// Where to write the new map (nothing is written without it).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Where to write the transition, JSON (it is printed otherwise).
    #[arg(long, value_name = "FILE")]
    transition: Option<PathBuf>,
    /// Best-effort jobs for the new map's idle GPCs (as `plan --jobs`): running job instances
    /// that still fit stay; those a new segment needs are reclaimed first.
    #[arg(long, value_name = "FILE")]
    jobs: Option<PathBuf>,
    /// GPUs the cluster has for jobs [default: the nodes of both maps, whole].
    #[arg(long, value_name = "N", requires = "jobs",
          value_parser = clap::value_parser!(u32).range(1..=parva_core::limits::MAX_GPUS_LIMIT as i64))]
    cluster_gpus: Option<u32>,
    /// The --services list replaces the map's services: services the map serves and the list
    /// lacks are removed (their segments destroyed), and a service whose model differs is
    /// re-planned with the list's. Without it such a list is refused, the differences named.
    #[arg(long)]
    replace_services: bool,
    /// Free whole nodes: gather the new map onto the fewest nodes that hold it (moving whole GPUs,
    /// make before break), so that what it frees is nodes a cluster autoscaler can remove; the
    /// report names them.
    #[arg(long)]
    free_nodes: bool,
    /// Print a JSON summary (the replan, its alternatives and the transition) on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ReplanArgs) -> anyhow::Result<ExitCode> {
    let prepared = super::plan::prepare(&args.input)?;
    let (current, _) = DeploymentMap::read(&args.from)?;
    if current.gpu_type_ids().len() > 1 {
        anyhow::bail!(
            "{}: the map mixes GPU types ({}); replan re-plans one type: plan the fleet again with `parva plan --fleet` (nothing written)",
            args.from.display(),
            current.gpu_type_ids().join(", ")
        );
    }
    if let Some(file) = &args.input.services {
        let refuse = super::Contradictions { missing: true, extra: false, models: true, slos: false };
        super::check_services_against_map(&current, None, &prepared.services, file, refuse, args.replace_services)?;
    }
    if let Some(out) = &args.out {
        parva_core::files::check_output(out)?;
    }
    let jobs = match &args.jobs {
        Some(path) => Some(parva_core::jobs::read_jobs(path, Some(&prepared.profiles))?),
        None => None,
    };
    let r = replan::replan(prepared.input(), &current, args.max_extra_gpus, args.free_nodes)
        .map_err(|e| anyhow::anyhow!("{e} (nothing written)"))?;
    let mut map = r.to_map();
    prepared.restore_asked_rates(&mut map);
    let per_node = prepared.options.gpus_per_node.max(1);
    let job_changes = jobs.as_ref().map(|jobs| {
        let nodes = current.segments.iter().chain(&map.segments).map(|s| s.node + 1).chain(current.jobs.iter().map(|j| j.node + 1)).max().unwrap_or(1);
        let cluster = parva_planner::jobs::Cluster { gpu: prepared.gpu, gpus: args.cluster_gpus.unwrap_or(nodes * per_node), gpus_per_node: per_node, first_node: 0 };
        map.jobs = parva_planner::jobs::place_jobs(&cluster, &prepared.profiles, jobs, &[&map], &current.jobs);
        let running: std::collections::BTreeSet<(u32, u32, u8)> = current.segments.iter().map(|s| (s.node, s.gpu, s.placement)).collect();
        let created: Vec<&parva_core::Segment> = map.segments.iter().filter(|s| !running.contains(&(s.node, s.gpu, s.placement))).collect();
        parva_planner::jobs::job_changes(prepared.gpu, &current.jobs, &map.jobs, &created)
    });
    if job_changes.is_none() && !current.jobs.is_empty() {
        eprintln!(
            "note: {} holds {} best-effort instances; without --jobs the new map has none (give --jobs to keep them where they fit)",
            args.from.display(),
            current.jobs.len()
        );
    }
    let problems = map.check_layouts(prepared.gpu);
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        anyhow::bail!("internal error: the replan produced illegal MIG layouts (nothing written):\n  {}", list.join("\n  "));
    }
    let slo_s = |name: &str| prepared.services.iter().find(|s| s.name == name).map_or(0.0, |s| s.slo_ms / 1000.0);
    let per_node = prepared.options.gpus_per_node;
    let t = replan::transition(&r, prepared.gpu, per_node, args.cost, &|name| slo_s(name));
    let summary = r.summary();
    let complete = r.plan.summary().complete;
    if let Some(out) = &args.out {
        map.write_file(out).with_context(|| format!("writing the deployment map {}", out.display()))?;
    }
    if let Some(path) = &args.transition {
        let text = serde_json::to_string_pretty(&t)? + "\n";
        parva_core::files::write_atomic(path, text.as_bytes()).with_context(|| format!("writing the transition {}", path.display()))?;
    }
    if args.json {
        let mut v = serde_json::to_value(&summary)?;
        v["out"] = serde_json::json!(args.out);
        v["kept"] = serde_json::to_value(&r.kept)?;
        v["destroyed_segments"] = serde_json::to_value(&r.destroyed)?;
        v["created_segments"] = serde_json::to_value(&r.created)?;
        v["transition"] = serde_json::to_value(&t)?;
        v["plan"] = serde_json::to_value(r.plan.summary())?;
        if let Some(c) = &job_changes {
            v["jobs"] = serde_json::to_value(c)?;
        }
        super::print_json(&v)?;
    } else {
        if let Some(c) = &job_changes {
            outln!(
                "jobs: kept {}, reclaimed first (checkpoint, stop, destroy) {}, stopped {}, started {} (resuming from their checkpoints) after the transition",
                c.kept, c.reclaimed.len(), c.stopped.len(), c.started.len()
            )?;
            for j in &c.reclaimed {
                outln!("  reclaim node {} gpu {} [{} @{}] {} before the transition", j.node, j.gpu, prepared.gpu.size_label(j.instance_size), j.placement, j.job)?;
            }
        }
        print(&summary, &t, &args, prepared.gpu)?;
    }
    for bad in &r.plan.infeasible {
        eprintln!("warning: service {} ({}) is not planned: {}", bad.service, bad.model, bad.reason);
    }
    Ok(super::exit(complete))
}

fn print(s: &replan::ReplanSummary, t: &replan::Transition, args: &ReplanArgs, gpu: &parva_core::GpuType) -> Result<(), super::StdoutError> {
    let bound = match (s.lower_bound_gpus, s.proven_optimal) {
        (Some(lb), true) => format!("lower bound {lb}, proven optimal"),
        (Some(lb), false) => format!("lower bound {lb}, not proven optimal"),
        (None, _) => "no lower bound computed".into(),
    };
    let fewest = if s.gpus > s.fewest_gpus {
        format!("{} more than the fewest, {} ({bound}), for fewer changes", s.gpus - s.fewest_gpus, s.fewest_gpus)
    } else {
        format!("the fewest: {bound}")
    };
    outln!("replan: {} GPUs (was {}; {fewest}), {} changes", s.gpus, s.old_gpus, s.destroyed + s.created)?;
    outln!(
        "  kept {} segments in place ({} with a new batch size), destroyed {}, created {}; workers started {}, stopped {}",
        s.kept, s.rebatched, s.destroyed, s.created, s.workers_started, s.workers_stopped
    )?;
    if !s.freed_gpus.is_empty() || s.idle_gpcs > 0 {
        const SHOWN: usize = 16;
        let list: Vec<String> = s.freed_gpus.iter().take(SHOWN).map(|g| format!("node {} GPU {}", g.node, g.gpu)).collect();
        let more = if s.freed_gpus.len() > SHOWN { format!(", ... ({} in all, every one in --json)", s.freed_gpus.len()) } else { String::new() };
        outln!(
            "  free for other work: {} GPU{}{}{}{more}; {} idle GPCs on the GPUs in use",
            s.freed_gpus.len(),
            if s.freed_gpus.len() == 1 { "" } else { "s" },
            if list.is_empty() { "" } else { ": " },
            list.join(", "),
            s.idle_gpcs
        )?;
    }
    if !s.freed_nodes.is_empty() || args.free_nodes {
        let nodes: Vec<String> = s.freed_nodes.iter().map(u32::to_string).collect();
        outln!(
            "  whole nodes free: {}{}",
            if nodes.is_empty() { "none".to_string() } else { format!("node {}", nodes.join(", node ")) },
            if s.moved_gpus > 0 { format!(" ({} GPU{} moved whole to other nodes to free them)", s.moved_gpus, if s.moved_gpus == 1 { "" } else { "s" }) } else { String::new() }
        )?;
    }
    if s.alternatives.len() > 1 {
        outln!("{:<8} {:>6} {:>10} {:>8} {:>8}", "GPUs", "kept", "destroyed", "created", "changes")?;
        for (i, a) in s.alternatives.iter().enumerate() {
            let mark = if i == 0 { " (chosen)" } else { "" };
            outln!("{:<8} {:>6} {:>10} {:>8} {:>8}{mark}", a.gpus, a.kept, a.destroyed, a.created, a.changes)?;
        }
    }
    let c = &t.costs;
    outln!(
        "transition: {} steps, {:.1} s one after another (mig-create {} s, mig-destroy {} s, worker-start {} s, mps-start {} s; a drain lasts the service's SLO)",
        t.steps.len(), t.seconds, c.mig_create, c.mig_destroy, c.worker_start, c.mps_start
    )?;
    if args.transition.is_none() {
        for st in &t.steps {
            outln!(
                "  {:>7.1}-{:<7.1} {:<8} node {} gpu {} [{} @{}] {} b{}x{}",
                st.start_s, st.end_s, st.action, st.node, st.gpu, gpu.size_label(st.size), st.placement, st.service, st.batch, st.procs
            )?;
        }
    } else if let Some(p) = &args.transition {
        outln!("  steps written to {}", p.display())?;
    }
    let dips: Vec<_> = t.services.iter().filter(|d| d.seconds_below_rate > 0.0).collect();
    if !dips.is_empty() {
        outln!("{:<24} {:>10} {:>10} {:>10} {:>10} {:>14}", "capacity during it", "rate/s", "before/s", "lowest/s", "after/s", "below rate s")?;
        for d in dips {
            outln!(
                "{:<24} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>14.1}",
                d.service, d.rate, d.capacity_before, d.capacity_min, d.capacity_after, d.seconds_below_rate
            )?;
        }
    }
    for d in t.services.iter().filter(|d| d.seconds_unserved > 0.0) {
        outln!(
            "warning: service {} has no ready process for {:.1} s of the transition: {}",
            d.service,
            d.seconds_unserved,
            d.why.as_deref().unwrap_or("")
        )?;
    }
    match &args.out {
        Some(out) => outln!("wrote {}", out.display())?,
        None => outln!("no --out: the new map was not written")?,
    }
    Ok(())
}
