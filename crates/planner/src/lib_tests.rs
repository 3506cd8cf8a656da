use super::*;
use parva_core::profile::ModelProfile;
use std::path::Path;

/// One model on every A100 size: a batch of b takes (2 + b) ms / size^0.8; `scale` multiplies
/// every throughput (and divides every latency).
fn profiles(scale: f64) -> ProfileSet {
    let mut text = String::from("Mig instance,Batch size,Workload Number,Throughput,Latency\n");
    for size in [1u8, 2, 3, 4, 7] {
        for b in [1u32, 2, 4, 8] {
            let lat = (0.002 + 0.001 * b as f64) / (size as f64).powf(0.8) / scale;
            text.push_str(&format!("{size},{b},1,{},{lat}\n", b as f64 / lat));
        }
    }
    let t = ModelProfile::read_from(text.as_bytes(), Path::new("m.csv"), "m".into(), None).unwrap();
    ProfileSet { dir: "mem".into(), models: [("m".to_string(), t)].into_iter().collect() }
}

fn svc(name: &str, rate: f64) -> Service {
    Service { name: name.into(), model: "m".into(), rate, slo_ms: 100.0 }
}

fn run(services: &[Service], profiles: &ProfileSet, algorithm: Algorithm, max_gpus: u32) -> Result<Plan, PlanError> {
    let options = PlanOptions { algorithm, max_gpus, ..PlanOptions::default() };
    let gpu = GpuType::by_id("a100-80gb").unwrap();
    plan(PlanInput { gpu, profiles, services, options: &options })
}

/// The error of a plan that must fail (without printing a whole plan when it does not).
fn err(r: Result<Plan, PlanError>) -> PlanError {
    match r {
        Ok(p) => panic!("planned {} GPUs instead of failing", p.gpus.len()),
        Err(e) => e,
    }
}

const BOTH: [Algorithm; 2] = [Algorithm::Optimal, Algorithm::ParvaGpu];

/// Issue 18: a plan with a margin is the plan of the targets (SLO - margin), and its map keeps
/// the SLOs and carries the margin for the router.
#[test]
fn a_margin_plans_to_the_target_and_the_map_keeps_the_slo() {
    let gpu = GpuType::by_id("a100-80gb").unwrap();
    let services = [svc("a", 3000.0), Service { slo_ms: 40.0, ..svc("b", 5000.0) }];
    let targets = [Service { slo_ms: 80.0, ..services[0].clone() }, Service { slo_ms: 32.0, ..services[1].clone() }];
    for algorithm in BOTH {
        let with = PlanOptions { algorithm, margin: Margin::Percent(20.0), ..PlanOptions::default() };
        let without = PlanOptions { algorithm, ..PlanOptions::default() };
        let p = plan(PlanInput { gpu, profiles: &profiles(1.0), services: &services, options: &with }).unwrap();
        let t = plan(PlanInput { gpu, profiles: &profiles(1.0), services: &targets, options: &without }).unwrap();
        let shape = |p: &Plan| p.to_map().segments.iter().map(|s| (s.gpu, s.placement, s.instance_size, s.batch_size, s.num_proc)).collect::<Vec<_>>();
        assert_eq!(shape(&p), shape(&t), "{algorithm:?}");
        let map = p.to_map();
        for seg in &map.segments {
            let slo = if seg.service == "a" { 100.0 } else { 40.0 };
            assert_eq!((seg.slo_ms, seg.margin_ms), (Some(slo), Some(slo * 0.2)), "{algorithm:?} {seg:?}");
        }
        let sum = p.summary();
        assert_eq!(sum.services.iter().map(|s| (s.slo_ms, s.margin_ms)).collect::<Vec<_>>(), [(100.0, 20.0), (40.0, 8.0)]);
        // A tighter target costs at least as much.
        let none = plan(PlanInput { gpu, profiles: &profiles(1.0), services: &services, options: &without }).unwrap();
        assert!(p.gpcs() >= none.gpcs(), "{algorithm:?}");
        assert!(none.to_map().segments.iter().all(|s| s.margin_ms.is_none()));
    }
    // A margin that leaves nothing is refused, naming the service.
    let o = PlanOptions { margin: Margin::Ms(40.0), ..PlanOptions::default() };
    let e = err(plan(PlanInput { gpu, profiles: &profiles(1.0), services: &services, options: &o }));
    assert!(e.to_string().contains("service \"b\": a margin of 40 ms leaves nothing of its SLO of 40 ms"), "{e}");
}

/// Issue 11: absurd rates reached HiGHS, which panicked (`invalid problem`).
#[test]
fn absurd_rates_are_refused_before_the_solver_sees_them() {
    for algorithm in BOTH {
        for rate in [1e300, f64::INFINITY, f64::NAN, -1.0, 2e7] {
            let e = err(run(&[svc("a", 100.0), svc("huge", rate)], &profiles(1.0), algorithm, 4096));
            let PlanError::Invalid { what, rule } = &e else { panic!("{algorithm:?} {rate}: {e}") };
            assert_eq!(what, "service \"huge\"");
            assert!(rule.contains("request rate must be a finite number in (0, 1e7] requests/s"), "{rule}");
        }
    }
}

/// Issue 11: huge rates ran for minutes, were killed for memory, or wrote a map of millions
/// of GPUs; now refused before planning, with the number of GPUs they need.
#[test]
fn plan_needing_more_than_max_gpus_is_refused_with_the_number_it_needs() {
    for algorithm in BOTH {
        // 1e7 requests/s need about 1860 GPUs here.
        let e = err(run(&[svc("a", 100.0), svc("big", 1e7)], &profiles(1.0), algorithm, 1000));
        let PlanError::TooManyGpus { needed, at_least, max, service, .. } = &e else { panic!("{e}") };
        assert!(*at_least && *needed > 1700 && *max == 1000 && service == "big", "{e}");
        let m = e.to_string();
        assert!(m.starts_with(&format!("the plan would need at least {needed} a100-80gb GPUs, more than --max-gpus 1000")), "{m}");
    }
    // Just over a small cap: refused with the exact bound; at the bound it plans.
    let ok = run(&[svc("a", 30000.0)], &profiles(1.0), Algorithm::Optimal, 64).unwrap();
    let need = ok.gpus.len() as u32;
    assert!(need >= 2, "{need}");
    let e = err(run(&[svc("a", 30000.0)], &profiles(1.0), Algorithm::Optimal, need - 1));
    assert!(matches!(e, PlanError::TooManyGpus { needed, max, .. } if needed == need as u64 && max == need - 1), "{e}");
    assert!(run(&[svc("a", 30000.0)], &profiles(1.0), Algorithm::Optimal, need).is_ok());
}

/// Issue 11: a service with a tiny positive rate got no segment (the solver's feasibility
/// tolerance covered it with none) while the plan said complete.
#[test]
fn service_with_a_tiny_positive_rate_gets_a_segment() {
    for algorithm in BOTH {
        for scale in [1.0, 500.0] {
            let services = [svc("big", 900.0), svc("tiny", 1e-6)];
            let p = run(&services, &profiles(scale), algorithm, 4096).unwrap();
            let s = p.summary();
            assert!(s.complete, "{algorithm:?}: {s:?}");
            assert_eq!(s.services[1].segments, 1, "{algorithm:?} x{scale}: {s:?}");
            assert!(p.to_map().segments.iter().any(|seg| seg.service == "tiny"));
        }
    }
}

/// A rate of 0 is reported, never silently dropped; it does not make the plan incomplete.
#[test]
fn zero_rate_service_is_reported_and_gets_no_segment() {
    for algorithm in BOTH {
        let p = run(&[svc("a", 100.0), svc("idle", 0.0)], &profiles(1.0), algorithm, 4096).unwrap();
        let s = p.summary();
        assert_eq!(s.zero_rate, vec!["idle".to_string()], "{algorithm:?}");
        assert_eq!(s.services[1].segments, 0);
        assert!(s.complete && s.infeasible.is_empty(), "{s:?}");
        assert!(p.to_map().segments.iter().all(|seg| seg.service != "idle"));
    }
}

/// Throughputs and rates at both ends of their ranges plan without a solver failure.
#[test]
fn extreme_but_valid_throughputs_and_rates_plan() {
    for algorithm in BOTH {
        let p = run(&[svc("a", 1e7), svc("b", 1e-3)], &profiles(500.0), algorithm, 4096).unwrap();
        let s = p.summary();
        assert!(s.complete, "{algorithm:?}: {s:?}");
        for svc in &s.services {
            assert!(svc.capacity >= svc.rate && svc.segments >= 1, "{algorithm:?}: {svc:?}");
        }
    }
}

#[test]
fn options_outside_their_ranges_are_refused() {
    let gpu = GpuType::by_id("a100-80gb").unwrap();
    let profiles = profiles(1.0);
    let services = [svc("a", 10.0)];
    for (options, want) in [
        (PlanOptions { max_gpus: 0, ..PlanOptions::default() }, "--max-gpus: must be in 1..=100000, found 0"),
        (PlanOptions { latency_budget: f64::NAN, ..PlanOptions::default() }, "--latency-budget: must be in (0, 1], found NaN"),
        (PlanOptions { max_procs: 49, ..PlanOptions::default() }, "--max-procs: must be in 1..=48, found 49"),
        (
            PlanOptions { latency_model: LatencyModel::Queueing { percentile: 100.0 }, ..PlanOptions::default() },
            "--percentile: must be in (50, 100), found 100",
        ),
    ] {
        let e = plan(PlanInput { gpu, profiles: &profiles, services: &services, options: &options }).unwrap_err();
        assert_eq!(e.to_string(), want);
    }
}
