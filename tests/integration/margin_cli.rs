//! Issue 18: `--margin` plans each service to its SLO minus a serving margin, the map carries it,
//! and the simulator (as the router) batches to the same target.

use std::path::Path;

use crate::util::{parva, stderr, stdout};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `parva plan` of the example services with `margin`; (map text, --json summary).
fn plan(dir: &Path, margin: &str) -> (String, serde_json::Value) {
    let out = dir.join(format!("deploy-{}.csv", margin.replace('%', "pct")));
    let o = parva(&[
        "plan", "--prof-data", "prof_data/example", "--services", "deployment/example/services.csv",
        "--gpu-type", "a100-80gb", "--margin", margin, "--out", s(&out), "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    (std::fs::read_to_string(&out).unwrap(), serde_json::from_str(&stdout(&o)).unwrap())
}

fn simulate(map: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["simulate", "--map", s(map), "--prof-data", "prof_data/example", "--duration", "20s", "--warmup", "2s", "--json"];
    args.extend_from_slice(extra);
    let o = parva(&args);
    assert!(matches!(o.status.code(), Some(0) | Some(3)), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

#[test]
fn a_plan_with_a_margin_meets_p99_plus_the_margin_within_the_slo_in_simulation() {
    let d = tempfile::tempdir().unwrap();
    let (map, summary) = plan(d.path(), "15%");
    // The map keeps each SLO and carries the margin; the summary says both.
    assert!(map.lines().next().unwrap().ends_with(",slo_ms,margin_ms"), "{map}");
    for svc in summary["services"].as_array().unwrap() {
        let (slo, margin) = (svc["slo_ms"].as_f64().unwrap(), svc["margin_ms"].as_f64().unwrap());
        assert!((margin - 0.15 * slo).abs() < 1e-9, "{svc}");
    }
    assert!(summary["report"]["headline"].as_str().unwrap().contains("less a serving margin of 15%"), "{summary}");
    let path = d.path().join("deploy-15pct.csv");
    let sim = simulate(&path, &[]);
    for svc in sim["services"].as_array().unwrap() {
        let (p99, slo) = (svc["p99_ms"].as_f64().unwrap(), svc["slo_ms"].as_f64().unwrap());
        assert!(p99 + 0.15 * slo <= slo, "{}: p99 {p99} ms + margin {} ms > SLO {slo} ms", svc["service"], 0.15 * slo);
    }
}

#[test]
fn a_margin_costs_gpus_and_zero_plans_to_the_slo_as_before() {
    let d = tempfile::tempdir().unwrap();
    let (none, s0) = plan(d.path(), "0");
    let (_, s30) = plan(d.path(), "30%");
    // No margin: the map has no margin column (maps read and written as before).
    assert!(!none.contains("margin_ms"), "{none}");
    assert!(s0["services"].as_array().unwrap().iter().all(|v| v["margin_ms"].as_f64() == Some(0.0)));
    assert!(s30["gpus"].as_u64().unwrap() >= s0["gpus"].as_u64().unwrap(), "a margin can only cost GPUs");
    assert!(s30["gpcs"].as_u64().unwrap() > s0["gpcs"].as_u64().unwrap(), "a 30% margin must cost GPCs");
}

#[test]
fn simulating_to_a_margin_batches_earlier_and_lowers_p99() {
    // The router and the simulator hold a partial batch at most until (SLO - margin) - guard -
    // exec(full). Where that deadline binds (a tight SLO: a lone request and a full batch do not
    // both fit, so nothing leaves early; issue 36), a map simulated with a margin shows the
    // earlier dispatch as a lower p50. One service at 1 req/s, batch 4 in 50 ms, a lone request in
    // 40 ms, SLO 90 ms: its lone requests wait 90 - 4.5 - 50 = 35.5 ms, with a 40 % margin 1.3 ms.
    let d = tempfile::tempdir().unwrap();
    let prof = d.path().join("prof");
    std::fs::create_dir_all(&prof).unwrap();
    let mut table = String::from("Mig instance,Batch size,Workload Number,Throughput,Latency\n");
    for (batch, lat) in [(1, 0.040), (2, 0.045), (4, 0.050)] {
        table.push_str(&format!("1,{batch},1,{},{lat}\n", f64::from(batch) / lat));
    }
    std::fs::write(prof.join("m.csv"), table).unwrap();
    let map = d.path().join("map.csv");
    std::fs::write(&map, "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n0,0,a,m,0,1,4,1,,,,1,90\n").unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["simulate", "--map", s(&map), "--prof-data", s(&prof), "--duration", "600s", "--warmup", "2s", "--json"];
        args.extend_from_slice(extra);
        let o = parva(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        v["services"][0]["p50_ms"].as_f64().unwrap()
    };
    let (plain, tight) = (run(&[]), run(&["--margin", "40%"]));
    assert!((plain - 75.5).abs() < 1.0, "p50 {plain} ms without a margin");
    assert!((tight - 41.3).abs() < 1.0, "p50 {tight} ms with a 40 % margin");
}

#[test]
fn a_margin_that_leaves_nothing_or_is_malformed_is_refused_and_nothing_is_written() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("deploy.csv");
    // Exit 2: a usage error caught by the argument parser; 1: refused by the planner.
    for (margin, code, want) in [("60ms", 1, "leaves nothing of its SLO of 60 ms"), ("95%", 2, "0..=90%"), ("5s", 2, "write milliseconds")] {
        let o = parva(&[
            "plan", "--prof-data", "prof_data/example", "--services", "deployment/example/services.csv",
            "--gpu-type", "a100-80gb", "--margin", margin, "--out", s(&out),
        ]);
        assert_eq!(o.status.code(), Some(code), "{margin}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{margin}: {}", stderr(&o));
        assert!(!out.exists(), "{margin}: a map was written");
    }
}
