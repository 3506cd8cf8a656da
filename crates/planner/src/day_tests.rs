use super::*;
use crate::PlanOptions;
use parva_core::profile::ModelProfile;
use parva_core::{GpuType, ProfileSet};
use std::path::Path;

/// One model on every A100 size: a batch of b takes (2 + b) ms / size^0.8.
fn profiles() -> ProfileSet {
    let mut text = String::from("Mig instance,Batch size,Workload Number,Throughput,Latency\n");
    for size in [1u8, 2, 3, 4, 7] {
        for b in [1u32, 2, 4, 8] {
            let lat = (0.002 + 0.001 * b as f64) / (size as f64).powf(0.8);
            text.push_str(&format!("{size},{b},1,{},{lat}\n", b as f64 / lat));
        }
    }
    let t = ModelProfile::read_from(text.as_bytes(), Path::new("m.csv"), "m".into(), None).unwrap();
    ProfileSet { dir: "mem".into(), models: [("m".to_string(), t)].into_iter().collect() }
}

fn services() -> Vec<Service> {
    ["a", "b"].iter().map(|n| Service { name: n.to_string(), model: "m".into(), rate: 5000.0, slo_ms: 50.0 }).collect()
}

/// `a` and `b` at 5000/s, `a` at 15000/s from 1800 s to 3600 s, back to 5000/s until 7200 s.
fn trace(s: &[Service]) -> RateTrace {
    let text = "time_s,service,rate\n0,a,5000\n0,b,5000\n1800,a,15000\n3600,a,5000\n";
    RateTrace::read_from(text.as_bytes(), Path::new("t.csv"), s).unwrap()
}

fn config() -> DayConfig {
    DayConfig {
        duration_s: 7200.0,
        sample_s: 2.0,
        warmup_s: 0.5,
        seed: 1,
        percentile: 99.0,
        follow: FollowSettings { window_s: 300.0, min_interval_s: 600.0, ..FollowSettings::default() },
        costs: Costs::default(),
        jobs: None,
    }
}

fn run(policies: &[Policy], config: &DayConfig) -> DayReport {
    let (p, s) = (profiles(), services());
    let options = PlanOptions::default();
    let input = PlanInput { gpu: GpuType::by_id("a100-80gb").unwrap(), profiles: &p, services: &s, options: &options };
    simulate_day(input, &trace(&s), config, policies, &mut |_, _, _| {}).unwrap()
}

#[test]
fn static_plans_for_the_peak_oracle_for_each_piece_and_follow_in_between() {
    let r = run(&[Policy::Static, Policy::Oracle, Policy::Follow], &config());
    let [st, or, fo] = [0, 1, 2].map(|i| &r.policies[i]);
    // Static: one plan, its GPUs all day.
    assert!((st.gpu_hours - st.peak_gpus as f64 * 2.0).abs() < 1e-9, "{}", st.gpu_hours);
    assert_eq!(st.replans, 0);
    // Oracle: fewer GPU-hours (the peak lasts half an hour of two), never more GPUs.
    assert!(or.gpu_hours < st.gpu_hours && or.peak_gpus <= st.peak_gpus, "{} {}", or.gpu_hours, st.gpu_hours);
    // Follow: reconfigures up and back down, sits between the two, keeps the SLOs but for the
    // window it takes to see the rise.
    assert!(fo.replans >= 2 && fo.instances_created > 0 && fo.instances_destroyed > 0, "{fo:?}");
    assert!(fo.gpu_hours < st.gpu_hours && fo.gpu_hours >= or.gpu_hours, "{} {} {}", fo.gpu_hours, or.gpu_hours, st.gpu_hours);
    for p in [st, or] {
        assert!(p.worst_service_pct >= 99.0, "{:?}: {}", p.policy, p.worst_service_pct);
    }
    assert!(fo.services.iter().find(|s| s.service == "b").unwrap().within_slo_pct >= 99.0);
    // Requests: the trace integrated (a: 5000 x 5400 + 15000 x 1800, b: 5000 x 7200).
    for p in [st, or, fo] {
        assert!((p.requests - (27e6 + 27e6 + 36e6)).abs() < 1.0, "{}", p.requests);
    }
    // Pieces cover the day without gaps, in order.
    for p in [st, or, fo] {
        let mut at = 0.0;
        for x in &p.pieces {
            assert!((x.start_s - at).abs() < 1e-6 && x.end_s > x.start_s, "{:?} {x:?}", p.policy);
            at = x.end_s;
        }
        assert!((at - 7200.0).abs() < 1e-6);
    }
    assert!(fo.transition_seconds > 0.0 && fo.pieces.iter().any(|x| x.transition));
}

#[test]
fn follow_sees_only_the_past_the_rise_is_missed_for_one_window_at_most() {
    let r = run(&[Policy::Follow], &config());
    let fo = &r.policies[0];
    let a = |at: f64| fo.pieces.iter().find(|x| x.start_s <= at && at < x.end_s).unwrap().services.iter().find(|s| s.service == "a").unwrap().clone();
    // The first window of the rise runs on the old plan; a window later the new one serves.
    assert_eq!(a(1800.0).rate, 15000.0);
    assert!(a(1900.0).attainment_pct < 99.0, "{:?}", a(1900.0));
    assert!(a(2500.0).attainment_pct >= 99.0, "{:?}", a(2500.0));
    // Scale-down waits for --min-interval after the last change: GPUs stay up right after the drop.
    let gpus = |at: f64| fo.pieces.iter().find(|x| x.start_s <= at && at < x.end_s).unwrap().gpus;
    assert!(gpus(3700.0) >= gpus(7100.0), "{} {}", gpus(3700.0), gpus(7100.0));
}

#[test]
fn the_controller_scales_up_at_once_and_down_past_its_band_and_interval() {
    let f = FollowSettings { window_s: 60.0, headroom: 0.1, hysteresis: 0.25, min_interval_s: 600.0, ewma: 1.0 };
    let mut c = Controller::new(f, &[100.0, 100.0]);
    let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
    assert!(c.planned().iter().all(|p| near(*p, 110.0)), "{:?}", c.planned());
    // Within the band: nothing to do.
    assert_eq!(c.observe(60.0, &[95.0, 90.0]), None);
    // a rises past its planned rate: re-plan a for 200 x 1.1, b keeps its planned rate.
    let t = c.observe(120.0, &[200.0, 90.0]).unwrap();
    assert!(near(t[0], 220.0) && near(t[1], 110.0), "{t:?}");
    c.applied(120.0, t, true);
    // b falls far below its band, but the last change was 60 s ago: it waits...
    assert_eq!(c.observe(180.0, &[200.0, 20.0]), None);
    // ...until 600 s have passed; then b goes down to its forecast.
    let t = c.observe(720.0, &[200.0, 20.0]).unwrap();
    assert!((t[1] - 22.0).abs() < 1e-9 && (t[0] - 220.0).abs() < 1e-9, "{t:?}");
    // With an EWMA weight below 1 the forecast falls more slowly than the measurement.
    let mut slow = Controller::new(FollowSettings { ewma: 0.5, min_interval_s: 0.0, ..f }, &[100.0]);
    let t = slow.observe(60.0, &[20.0]).unwrap();
    assert!((t[0] - 60.0 * 1.1).abs() < 1e-9, "{t:?}");
}

fn with_jobs(grace_s: f64) -> DayConfig {
    use parva_core::jobs::JobKind;
    let job = |name: &str, kind, min, priority| Job { name: name.into(), model: "m".into(), kind, min_gpcs: min, max_gpcs: 7, priority };
    DayConfig {
        jobs: Some(DayJobs { jobs: vec![job("train", JobKind::Train, 2, 9), job("score", JobKind::Batch, 1, 1)], grace_s, start_s: 10.0 }),
        ..config()
    }
}

#[test]
fn jobs_take_only_idle_gpcs_of_legal_layouts_and_what_follow_frees() {
    let (p, s) = (profiles(), services());
    let options = PlanOptions::default();
    let gpu = GpuType::by_id("a100-80gb").unwrap();
    let input = PlanInput { gpu, profiles: &p, services: &s, options: &options };
    let c = with_jobs(30.0);
    let peak = at_rates(&s, &|x| trace(&s).peak(&x.name, 0.0, c.duration_s));
    let cluster = Cluster { gpu, gpus: plan_map(&input, &peak, 0.0).unwrap().gpu_count() as u32, gpus_per_node: 8, first_node: 0 };
    let jobs = c.jobs.as_ref().unwrap().jobs.clone();
    let mut track = JobTrack { ctx: Some((cluster, &p, &jobs)), prev: Vec::new() };
    let (spans, _) = follow_spans(&input, &trace(&s), &c, &mut track).unwrap();
    assert!(spans.iter().any(|sp| !sp.jobs.is_empty()), "jobs ran at some time");
    for sp in &spans {
        // Every job instance sits beside what inference holds (both maps in a transition),
        // on the cluster's GPUs, in a legal layout.
        let held = sp.held.clone().unwrap_or_else(|| sp.map.clone());
        let all = DeploymentMap { segments: held.segments.clone(), jobs: sp.jobs.clone() };
        assert!(all.check_layouts(gpu).is_empty(), "{:?} at {}", all.check_layouts(gpu), sp.start);
        assert!(sp.jobs.iter().all(|j| j.node * 8 + j.gpu < cluster.gpus));
    }
    let r = run(&[Policy::Static, Policy::Follow], &c);
    let plain = run(&[Policy::Static, Policy::Follow], &config());
    let [st, fo] = [&r.policies[0], &r.policies[1]];
    assert_eq!(r.cluster_gpus, Some(st.peak_gpus as u32));
    // Static's serving is the same with jobs (MIG isolates them); follow frees GPUs at low
    // load, which go to the jobs.
    assert_eq!(st.services, plain.policies[0].services);
    assert!(fo.job_gpu_hours > st.job_gpu_hours && fo.job_samples > st.job_samples, "{} {}", fo.job_gpu_hours, st.job_gpu_hours);
    assert!(fo.job_starts > 0 && fo.job_stops > 0);
    // Serving, jobs and idle never add up to more than the cluster.
    for p in [st, fo] {
        let cluster_h = st.peak_gpus as f64 * 2.0;
        assert!(p.job_gpu_hours + p.idle_gpu_hours <= cluster_h + 1e-9, "{p:?}");
        assert!(p.goodput_rps > 0.0 && p.goodput_rps <= p.requests / 7200.0 + 1e-9);
    }
    for p in &plain.policies {
        assert_eq!((p.job_gpu_hours, p.job_starts, p.idle_gpu_hours), (0.0, 0, 0.0), "no jobs, no job figures");
    }
}

#[test]
fn a_segment_created_over_a_job_waits_for_its_grace_and_no_longer() {
    let grace = 100.0;
    let r = run(&[Policy::Follow], &with_jobs(grace));
    let fo = &r.policies[0];
    let none = run(&[Policy::Follow], &with_jobs(0.0));
    // The rise at 1800 s is seen at the tick after it; the scale-up's first piece is the
    // grace (the old map serving), then the transition proper.
    let extra = fo.transition_seconds - none.policies[0].transition_seconds;
    assert!(extra >= grace - 1e-9, "the grace adds {extra} s of transition");
    assert!(extra <= grace * fo.replans as f64 + 1e-9, "{extra} s for {} re-plans", fo.replans);
}

#[test]
fn settings_out_of_range_are_refused() {
    let (p, s) = (profiles(), services());
    let options = PlanOptions::default();
    let input = PlanInput { gpu: GpuType::by_id("a100-80gb").unwrap(), profiles: &p, services: &s, options: &options };
    for (c, want) in [
        (DayConfig { sample_s: 0.5, ..config() }, "--sample: must be in [1, 3600] s, found 0.5"),
        (DayConfig { duration_s: -1.0, ..config() }, "--duration: must be in (0, 31622400] s, found -1"),
        (DayConfig { follow: FollowSettings { window_s: 1.0, ..FollowSettings::default() }, ..config() }, "--window: must be in [10, 86400] s, found 1"),
        (DayConfig { follow: FollowSettings { hysteresis: 1.0, ..FollowSettings::default() }, ..config() }, "--hysteresis: must be in [0, 1) (a fraction), found 1"),
        (DayConfig { follow: FollowSettings { ewma: 0.0, ..FollowSettings::default() }, ..config() }, "--ewma: must be in (0, 1], found 0"),
        (DayConfig { duration_s: 1e7, ..config() }, "the rate trace: 3 rate changes and 33333 controller windows in 10000000 s make about 33336 pieces to plan and simulate, more than 20000; use a coarser trace (e.g. one row per service per minute), a longer --window or a shorter --duration"),
    ] {
        let e = simulate_day(input, &trace(&s), &c, &[Policy::Static], &mut |_, _, _| {}).unwrap_err();
        assert_eq!(e.to_string(), want);
    }
}
