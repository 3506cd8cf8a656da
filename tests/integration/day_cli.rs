//! Issue 14: `parva simulate --rates TRACE` replays a day of changing load under each policy.

use std::path::Path;

use crate::util::{parva, stderr, stdout};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A two-hour trace of the example services: photo-tags doubles for the middle 40 minutes.
fn trace(dir: &Path) -> std::path::PathBuf {
    let mut text = String::from("time_s,service,rate\n");
    text.push_str("0,photo-tags,1500\n2400,photo-tags,3000\n4800,photo-tags,1500\n");
    text.push_str("0,thumbnails,3000\n3600,thumbnails,1500\n");
    let path = dir.join("trace.csv");
    std::fs::write(&path, text).unwrap();
    path
}

fn day(trace: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "simulate", "--rates", s(trace), "--services", "deployment/example/services.csv", "--prof-data", "prof_data/example",
        "--gpu-type", "a100-80gb", "--duration", "2h", "--sample", "2s", "--warmup", "1s",
    ];
    args.extend_from_slice(extra);
    parva(&args)
}

#[test]
fn a_day_under_three_policies_reports_gpu_hours_slos_and_reconfigurations_and_writes_its_files() {
    let d = tempfile::tempdir().unwrap();
    let t = trace(d.path());
    let out = d.path().join("out");
    let o = day(&t, &["--json", "--out", s(&out)]);
    assert!(matches!(o.status.code(), Some(0) | Some(3)), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let pol = |name: &str| v["policies"].as_array().unwrap().iter().find(|p| p["policy"] == name).unwrap().clone();
    // The default policies: static, oracle and the forecasting controller.
    let (st, or, fo) = (pol("static"), pol("oracle"), pol("forecast"));
    let hours = |p: &serde_json::Value| p["gpu_hours"].as_f64().unwrap();
    assert!(hours(&or) <= hours(&fo) + 1e-9 && hours(&or) <= hours(&st) + 1e-9, "{v}");
    assert_eq!(st["replans"].as_u64(), Some(0));
    assert!(fo["replans"].as_u64().unwrap() >= 1, "photo-tags doubles: the controller must re-plan: {fo}");
    // Every re-plan is in the log with its reason.
    let log = fo["log"].as_array().unwrap();
    assert!(log.iter().any(|l| l["line"].as_str().unwrap().starts_with("scale-up: applied") && l["line"].as_str().unwrap().contains("photo-tags")), "{log:?}");
    // Every service of the list is reported with its share within the SLO.
    for p in [&st, &or, &fo] {
        let names: Vec<&str> = p["services"].as_array().unwrap().iter().map(|x| x["service"].as_str().unwrap()).collect();
        assert_eq!(names.len(), 6, "{names:?}");
        for x in p["services"].as_array().unwrap() {
            let pct = x["within_slo_pct"].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&pct), "{x}");
            // The worst 10 minutes are never better than the day.
            let worst = x["worst_bucket_pct"].as_f64().unwrap();
            assert!(worst <= pct + 1e-9, "{x}");
        }
    }
    // The files: everything as JSON, a row per policy, piece and service, and the plot.
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("day.json")).unwrap()).unwrap();
    assert_eq!(json["policies"].as_array().unwrap().len(), 3);
    let csv = std::fs::read_to_string(out.join("day-pieces.csv")).unwrap();
    assert!(csv.starts_with("policy,start_s,end_s,gpus,transition,service,rate,attainment_pct,p99_ms\n"), "{csv}");
    assert!(csv.lines().any(|l| l.starts_with("forecast,") && l.contains(",photo-tags,3000.000,")), "{csv}");
    let svg = std::fs::read_to_string(out.join("day.svg")).unwrap();
    assert!(svg.contains("forecast GPUs") && svg.contains("static GPUs"));
    // Text: one row per policy and the ratios.
    let o = day(&t, &["--policy", "static,follow"]);
    let text = stdout(&o);
    assert!(text.contains("follow uses") && text.contains("x the GPU-hours of static") && !text.contains("\noracle "), "{text}");
    assert!(text.contains("worst 10 minutes"), "{text}");
}

#[test]
fn a_bad_trace_is_refused_with_file_line_and_field_and_the_flags_are_checked() {
    let d = tempfile::tempdir().unwrap();
    let t = d.path().join("bad.csv");
    std::fs::write(&t, "time_s,service,rate\n0,photo-tags,100\n60,nobody,5\n").unwrap();
    let o = day(&t, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("bad.csv:3: field `service`: service \"nobody\" is not in the service list"), "{e}");
    // --rates needs a GPU type; --map and --rates exclude each other; a window under 10 s is refused.
    let o = parva(&["simulate", "--rates", s(&t), "--services", "deployment/example/services.csv", "--prof-data", "prof_data/example"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--gpu-type"), "{}", stderr(&o));
    let o = parva(&["simulate", "--rates", s(&t), "--map", "deployment/example/deploy.csv", "--prof-data", "prof_data/example", "--gpu-type", "a100-80gb"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let good = trace(d.path());
    let o = day(&good, &["--window", "5s"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--window: must be at least 10 s in a simulation, found 5"), "{}", stderr(&o));
}

/// `scripts/bench/replan_bound.py`, the clairvoyant bound the day results compare the controller
/// with, against a case worked by hand: two services over four 10-minute rows (a: 1, 1, 2, 2;
/// b: 2, 1, 1, 2 req/s; b costs half a's GPCs per request/s). The oracle costs 2 + 1.5 + 2.5 + 3
/// = 9; one plan for all rows 4 x 3 = 12; one re-plan at best 2 x 2 + 2 x 3 = 10 (after row 2);
/// two 2 + 1.5 + 2 x 3 = 9.5; three are the oracle.
#[test]
fn the_replan_bound_matches_a_case_worked_by_hand_and_names_a_bad_row() {
    let d = tempfile::tempdir().unwrap();
    let trace = d.path().join("trace.csv");
    let rows = [(0, 1, 2), (600, 1, 1), (1200, 2, 1), (1800, 2, 2)];
    let mut text = String::from("time_s,service,rate\n");
    for (t, a, b) in rows {
        text.push_str(&format!("{t},a,{a}\n"));
        // b's rate holds until its next row, as `simulate --rates` reads it: no row at 1200.
        if t != 1200 {
            text.push_str(&format!("{t},b,{b}\n"));
        }
    }
    std::fs::write(&trace, text).unwrap();
    let map = d.path().join("plan.csv");
    std::fs::write(&map, "node,gpu,service,instance_size,throughput\n0,0,a,1,1\n0,0,b,1,2\n").unwrap();
    // Four rows of 600 s are 1/36 of a day: k re-plans are 36 k a day.
    let run = |trace: &Path| {
        std::process::Command::new("python3")
            .args(["scripts/bench/replan_bound.py", s(trace), s(&map), "--per-day", "0,36,72,108"])
            .current_dir(crate::util::repo())
            .output()
            .unwrap()
    };
    let o = run(&trace);
    assert!(o.status.success(), "{}", stderr(&o));
    let ratios: Vec<String> = stdout(&o)
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect();
    assert_eq!(ratios, ["1.333x", "1.111x", "1.056x", "1.000x"], "{}", stdout(&o));
    std::fs::write(&trace, "time_s,service,rate\n0,a,1\n600,a,-3\n").unwrap();
    let o = run(&trace);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("trace.csv:3: rate -3.0 is not a finite number >= 0"), "{}", stderr(&o));
}
