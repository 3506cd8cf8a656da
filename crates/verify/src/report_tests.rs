use super::*;
use crate::client::Outcome;
use std::time::Duration;

fn settings() -> RunSettings {
    RunSettings {
        endpoint: "http://h:1".into(),
        server: ServerInfo { name: Some("parva".into()), version: Some("0.1.0".into()), backend: Some("emulated".into()), device: Some("none".into()) },
        tool: "parva 0.1.0 (abc1234)".into(),
        started_at: utc_timestamp(0),
        duration_s: 12.0,
        warmup_s: 2.0,
        window_s: 10.0,
        distribution: Some(Distribution::Poisson),
        trace: None,
        seed: 1,
        rate_scale: 1.0,
        percentile: 99.0,
        max_in_flight: 100,
        connections: None,
        timeout_s: 30.0,
        wire: Wire::Binary,
    }
}

pub(crate) fn sample() -> Report {
    let mut good = ServiceStats::new(100.0).with_timeline(2.0, 12.0);
    for i in 0..200 {
        good.record(2.0 + i as f64 * 0.05, Duration::from_micros(300), Duration::from_millis(10 + i % 20), &Outcome::Ok);
    }
    let mut bad = ServiceStats::new(50.0).with_timeline(2.0, 12.0);
    for _ in 0..90 {
        bad.record(3.0, Duration::from_millis(30), Duration::from_millis(80), &Outcome::Ok);
    }
    for _ in 0..10 {
        bad.record(11.0, Duration::ZERO, Duration::from_millis(1), &Outcome::Status(429));
    }
    bad.record_drop(11.5);
    let a = ServiceInfo { name: "good", model: Some("m"), slo_ms: 100.0, target_rate: Some(20.0) };
    let b = ServiceInfo { name: "bad", model: None, slo_ms: 50.0, target_rate: Some(10.0) };
    build(settings(), &[(a, &good), (b, &bad)])
}

#[test]
fn rates_verdicts_and_reasons() {
    let r = sample();
    assert!(!r.all_pass);
    let (g, b) = (&r.services[0], &r.services[1]);
    assert!(g.pass && g.reason.is_none());
    assert_eq!((g.offered_rate, g.achieved_rate), (20.0, 20.0));
    assert_eq!((b.scheduled, b.sent, b.succeeded, b.failed, b.dropped), (101, 100, 90, 10, 1));
    assert!((b.offered_rate - 10.1).abs() < 1e-9 && (b.achieved_rate - 9.0).abs() < 1e-9);
    let why = b.reason.as_deref().unwrap();
    assert!(why.contains("0.00 % within") && why.contains("p99 80.0 ms > SLO 50 ms") && why.contains("429 x10") && why.contains("1 dropped"), "{why}");
    // The bad service's lag (30 ms) is over 10 % of its 50 ms SLO: a warning names it.
    assert!(r.generator_warning.as_deref().is_some_and(|w| w.contains("bad (lag p99 30.0 ms")), "{:?}", r.generator_warning);
    let t = table(&r);
    assert!(t.contains("FAIL") && t.contains("pass") && t.contains("1 of 2 services meet their SLO at p99"), "{t}");
    assert!(t.contains("warning: the load generator sent requests late"), "{t}");
    assert!(t.contains("bad: p99 80.0 ms from the scheduled send time, 50.0 ms from the actual send"), "{t}");
}

/// Issue 38: a report says whether it measured a GPU or the emulated backend.
#[test]
fn the_report_says_what_answered_and_what_measured() {
    let mut info = ServerInfo { name: Some("parva".into()), version: Some("0.1.0".into()), ..Default::default() };
    info.read_metrics("# HELP parva_backend_info x\nparva_backend_info{backend=\"torch\",device=\"cuda\"} 1\nparva_requests_total 3\n");
    assert_eq!((info.backend.as_deref(), info.device.as_deref()), (Some("torch"), Some("cuda")));
    assert_eq!(info.describe(), "parva 0.1.0, backend torch on cuda");
    // Triton, or any server without the metric: said so, never guessed.
    let triton = ServerInfo { name: Some("triton".into()), version: Some("2.50.0".into()), ..Default::default() };
    assert_eq!(triton.describe(), "triton 2.50.0, backend not reported");
    let text = table(&sample());
    assert!(text.ends_with("measured: parva 0.1.0, backend emulated (no GPU: workers sleep for the profiled latencies; not a measurement of a GPU), wire binary, by parva 0.1.0 (abc1234)\n"), "{text}");
    let json = serde_json::to_value(sample()).unwrap();
    assert_eq!(json["settings"]["server"]["backend"], "emulated");
    assert_eq!(json["settings"]["tool"], "parva 0.1.0 (abc1234)");
}

#[test]
fn csv_and_json_carry_every_service() {
    let r = sample();
    let text = String::from_utf8(csv(&r).unwrap()).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("service,model,slo_ms,target_rate,offered_rate"), "{header}");
    assert!(header.contains("failed_by") && header.contains("attainment_pct,pass"));
    // Issue 38: every row says what was measured.
    assert!(header.ends_with("predicted_p50_ms,predicted_p99_ms,backend,device,wire,tool"), "{header}");
    assert!(text.lines().nth(1).unwrap().ends_with(",emulated,none,binary,parva 0.1.0 (abc1234)"), "{text}");
    assert!(lines.nth(1).unwrap().contains("429:10"), "{text}");
    let v: serde_json::Value = serde_json::to_value(&r).unwrap();
    assert_eq!(v["services"][1]["failed_by"]["429"], 10);
    assert_eq!(v["settings"]["distribution"], "poisson");
    assert_eq!(v["all_pass"], false);
}

/// Issue 36: `--rate-scale 0.1,...,1` puts each load's measured and predicted latencies side
/// by side, and says when a service answers slower at low load than at full load.
#[test]
fn the_loads_summary_has_a_row_per_load_and_service_and_flags_a_slow_low_load() {
    let mut low = sample();
    low.settings.rate_scale = 0.1;
    let mut full = sample();
    full.settings.rate_scale = 1.0;
    for s in &mut full.services {
        s.predicted_p50_ms = s.p50_ms;
        s.predicted_p99_ms = s.p99_ms.map(|p| p / 1.25);
        s.p50_ms = s.p50_ms.map(|p| p / 2.0);
    }
    let text = String::from_utf8(loads_csv(&[low.clone(), full.clone()]).unwrap()).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows[0], "rate_scale,service,slo_ms,offered_rate,achieved_rate,p50_ms,predicted_p50_ms,p99_ms,predicted_p99_ms,p99_vs_predicted_pct,attainment_pct,pass");
    assert_eq!(rows.len(), 1 + 2 * 2);
    assert!(rows[1].starts_with("0.1,good,") && rows[3].starts_with("1.0,good,"), "{text}");
    assert!(rows[3].contains(",25.0") || rows[3].contains(",25.00"), "{}", rows[3]);
    let table = loads_table(&[low, full]);
    assert!(table.contains("x0.1") && table.contains("x1 ") && table.contains("+25.0 %"), "{table}");
    assert!(table.contains("good: p50 at x0.1") && table.contains("is above p50 at x1"), "{table}");
    assert!(table.ends_with("0 of 2 loads: every service meets its SLO"), "{table}");
}

/// Issue 38: a run at changing rates says when its requests missed, per interval.
#[test]
fn the_over_time_table_has_a_row_per_service_and_interval() {
    let r = sample();
    assert_eq!(r.services[0].timeline.len(), 10, "10 s window in 1 s intervals");
    let text = String::from_utf8(timeline_csv(&r).unwrap()).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("service,from_s,to_s,scheduled,succeeded,within_slo,offered_rate,attainment_pct,p99_ms"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 20);
    assert!(rows[0].starts_with("good,2.0,3.0,20,20,20,20.0,100.0,"), "{}", rows[0]);
    // bad: 90 late at 3 s; 10 refused and 1 dropped at 11 s; nothing else.
    assert!(rows[11].starts_with("bad,3.0,4.0,90,90,0,90.0,0.0,80"), "{}", rows[11]);
    assert_eq!(rows[19], "bad,11.0,12.0,11,0,0,11.0,0.0,");
    assert_eq!(rows[12], "bad,4.0,5.0,0,0,0,0.0,,");
    let v: serde_json::Value = serde_json::to_value(&r).unwrap();
    assert_eq!(v["services"][1]["timeline"][9]["scheduled"], 11);
}

#[test]
fn files_are_written_whole_into_a_new_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a/b");
    let files = write_files(&out, &sample(), &[(SVG_FILE, "<svg/>".into()), (TIMELINE_SVG_FILE, "<svg/>".into())]).unwrap();
    assert_eq!(files.len(), 5);
    let mut names: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, vec![SVG_FILE, TIMELINE_SVG_FILE, CSV_FILE, JSON_FILE, TIMELINE_CSV_FILE]);
    // A file where the directory should be: an error naming the path.
    let blocked = dir.path().join("file");
    std::fs::write(&blocked, "x").unwrap();
    let e = write_files(&blocked, &sample(), &[]).unwrap_err().to_string();
    assert!(e.contains("file") && e.contains("create report directory"), "{e}");
}
