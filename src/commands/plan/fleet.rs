//! `parva plan --fleet`: one plan over several GPU types (see `parva_planner::fleet`).

use std::process::ExitCode;

use anyhow::Context;
use parva_planner::fleet::{self, FleetInput, FleetType, Objective};

use super::{MapFormatArg, ObjectiveArg, PlanArgs, TypeTables, options_for, type_tables};

pub fn run(args: &PlanArgs, fleet_file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let input = &args.input;
    if !(input.latency_budget > 0.0 && input.latency_budget <= 1.0) {
        anyhow::bail!("--latency-budget must be in (0, 1]; got {}", input.latency_budget);
    }
    if args.compare || args.jobs.is_some() || args.format == MapFormatArg::Parvagpu {
        anyhow::bail!("--fleet writes parva's map (one GPU type per node): --compare, --jobs and --format parvagpu plan one type");
    }
    input.catalogue.load()?;
    let fleet_rows = parva_core::fleet::Fleet::read(fleet_file)?;
    let mut tables: Vec<TypeTables> = Vec::with_capacity(fleet_rows.types.len());
    for t in &fleet_rows.types {
        let tt = type_tables(input, t.gpu.id, &t.prof_data)
            .with_context(|| format!("{} line {}: the profile tables of {}", fleet_file.display(), t.line, t.gpu.id))?;
        tables.push(tt);
    }
    let file = input.services.as_deref().context("--fleet needs --services")?;
    let services = parva_core::slo::read_service_list(file, None)?;
    for s in &services {
        if !tables.iter().any(|t| t.profiles.get(&s.model).is_some()) {
            let dirs: Vec<String> = fleet_rows.types.iter().map(|t| t.prof_data.display().to_string()).collect();
            anyhow::bail!(
                "{}: service {:?}'s model {} has no profile table for any type of the fleet ({})",
                file.display(), s.name, s.model, dirs.join(", ")
            );
        }
    }
    let (services, asked, options) = options_for(input, services, Default::default())?;
    let out = args.out.clone().unwrap_or_else(|| super::default_out(None));
    parva_core::files::check_output(&out)?;
    let types: Vec<FleetType<'_>> = fleet_rows
        .types
        .iter()
        .zip(&tables)
        .map(|(row, t)| FleetType {
            gpu: t.gpu,
            profiles: &t.profiles,
            cost_per_hour: row.cost_per_hour,
            max_gpus: row.max_gpus,
            gpus_per_node: row.gpus_per_node,
        })
        .collect();
    let objective = match input.objective {
        ObjectiveArg::Cost => Objective::Cost,
        ObjectiveArg::Gpus => Objective::Gpus,
    };
    let fi = FleetInput { types: &types, services: &services, options: &options, objective };
    let plan = fleet::plan_fleet(fi).map_err(|e| anyhow::anyhow!("{e} (nothing written)"))?;
    let mut map = plan.to_map();
    for seg in &mut map.segments {
        if let Some(rate) = asked.get(&seg.service) {
            seg.rate = Some(*rate);
        }
    }
    if map.segments.is_empty() {
        for bad in &plan.infeasible {
            eprintln!("warning: service {} ({}) is not planned: {}", bad.service, bad.model, bad.reason);
        }
        eprintln!("error: no service could be planned, so no map was written ({} left as it was)", out.display());
        return Ok(crate::commands::exit(false));
    }
    // Assert, then write: a map with an illegal layout is a planner bug and must never reach a node.
    let problems = map.check_layouts_by_node(None);
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        anyhow::bail!("internal error: the planner produced illegal layouts (nothing written):\n  {}", list.join("\n  "));
    }
    map.write_file(&out).with_context(|| format!("writing the deployment map {}", out.display()))?;
    let limits: Vec<Option<u32>> = fleet_rows.types.iter().map(|t| t.max_gpus).collect();
    let summary = plan.summary(&limits);
    if args.json {
        let mut v = serde_json::to_value(&summary)?;
        v["out"] = serde_json::json!(out);
        crate::commands::print_json(&v)?;
    } else {
        print(&summary, &out)?;
    }
    for bad in &summary.infeasible {
        eprintln!("warning: service {} ({}) is not planned: {}", bad.service, bad.model, bad.reason);
    }
    for name in &summary.zero_rate {
        eprintln!("note: service {name} has a rate of 0: no segment planned for it");
    }
    Ok(crate::commands::exit(summary.complete))
}

fn print(s: &fleet::FleetSummary, out: &std::path::Path) -> Result<(), crate::commands::StdoutError> {
    let value = |v: f64| fleet::fmt_value(s.objective, v);
    let nodes = if s.nodes == 1 { "1 node".to_string() } else { format!("{} nodes", s.nodes) };
    outln!(
        "fleet plan: {} on {nodes}, {} segments, {:.2}/h (objective: {}), {}",
        if s.gpus == 1 { "1 GPU".to_string() } else { format!("{} GPUs", s.gpus) },
        s.segments,
        s.cost_per_hour,
        match s.objective {
            Objective::Cost => "cost",
            Objective::Gpus => "GPUs",
        },
        if s.proven_optimal { "proven optimal" } else { "NOT proven optimal" }
    )?;
    outln!("lower bound: {}: {}", value(s.lower_bound), s.lower_bound_why)?;
    outln!("by type:")?;
    outln!("  {:<18} {:>5} {:>9} {:>10} {:>9} {:>8}", "gpu_type", "GPUs", "max_gpus", "price/GPU-h", "cost/h", "nodes")?;
    for t in &s.types {
        let nodes = t.nodes.map_or("-".to_string(), |(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") });
        let max = t.max_gpus.map_or("any".to_string(), |m| m.to_string());
        outln!("  {:<18} {:>5} {:>9} {:>10.2} {:>9.2} {:>8}", t.gpu_type, t.gpus, max, t.price_per_gpu_hour, t.cost_per_hour, nodes)?;
    }
    outln!("by service (each GPU's price shared among its segments by GPCs):")?;
    outln!("  {:<16} {:<12} {:>9} {:>8} {:>10} {:>5} {:>8}  types", "service", "model", "rate", "slo_ms", "capacity", "segs", "cost/h")?;
    for v in &s.services {
        let types: Vec<String> = v.by_type.iter().map(|(t, c)| format!("{t} {c:.2}")).collect();
        outln!(
            "  {:<16} {:<12} {:>9} {:>8} {:>10.1} {:>5} {:>8.2}  {}",
            v.service, v.model, v.rate, v.slo_ms, v.capacity, v.segments, v.cost_per_hour, types.join(", ")
        )?;
    }
    outln!("each type alone (the one-type planner, within its max_gpus):")?;
    for a in &s.alone {
        match (a.gpus, a.cost_per_hour, &a.why_not) {
            (Some(g), Some(c), _) => outln!("  {:<18} {g} GPUs, {c:.2}/h{}", a.gpu_type, if a.proven_optimal { "" } else { " (not proven optimal)" })?,
            (_, _, Some(why)) => outln!("  {:<18} cannot serve every service alone: {why}", a.gpu_type)?,
            _ => {}
        }
    }
    match (&s.cheapest_alone, s.saving_per_hour) {
        (Some((ty, c)), Some(saving)) if saving > 1e-9 => outln!(
            "mixing saves {saving:.2}/h ({:.1} %) against the cheapest single type, {ty} at {c:.2}/h",
            100.0 * saving / c.max(1e-9)
        )?,
        (Some((ty, c)), Some(_)) => outln!("one type is best: {ty} alone costs {c:.2}/h, as much as the mixed plan")?,
        _ => outln!("no single type serves every service alone: mixing is what serves them")?,
    }
    for n in &s.notes {
        outln!("note: {n}")?;
    }
    outln!("map written to {}", out.display())?;
    Ok(())
}
