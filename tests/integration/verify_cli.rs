//! `parva verify` end to end against `parva serve --backend emulated` on the three-service node of
//! `tests/fixtures/verify/` (see its README): passes at the plan's rates, fails exactly the
//! over-capacity services at 3x, shows a generator that cannot keep up as lag and latency (not as a
//! lower rate), replays a trace, and refuses bad input before sending anything or writing a report.
//! Also `tritonclient`'s HTTP client against `parva serve` (wire compatibility).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::serve_support::{Server, start};
use crate::util::{fixture, parva, repo, stderr, stdout};

fn fx(name: &str) -> String {
    fixture("verify").join(name).display().to_string()
}

/// `parva serve --backend emulated` of the fixture plan, ready.
fn serve_fixture() -> Server {
    let s = start(&["--plan", &fx("plan.csv"), "--backend", "emulated", "--models", &fx("models"), "--prof-data", &fx("prof")]);
    s.wait_200("/v2/health/ready", Duration::from_secs(60));
    s
}

/// Run `parva verify --endpoint <server> --out <out> ARGS`; the exit code and the JSON report
/// that --json printed (Null when it printed none).
fn verify(s: &Server, out: &Path, args: &[&str]) -> (Option<i32>, Value, Output) {
    let endpoint = format!("http://{}", s.addr);
    let out_s = out.display().to_string();
    let o = parva(&[&["verify", "--endpoint", &endpoint, "--out", &out_s, "--json"][..], args].concat());
    let v = serde_json::from_str(&stdout(&o)).unwrap_or(Value::Null);
    (o.status.code(), v, o)
}

fn service<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["services"].as_array().and_then(|a| a.iter().find(|s| s["service"] == name)).unwrap_or_else(|| panic!("no {name} in {report}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn summary(report: &Value) -> String {
    report["services"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| format!("{} offered {} achieved {} p99 {} failed {} dropped {} pass {}", s["service"], s["offered_rate"], s["achieved_rate"], s["p99_ms"], s["failed_by"], s["dropped"], s["pass"]))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

#[test]
fn verify_passes_at_the_plans_rates_and_fails_the_over_capacity_services_at_3x() {
    let s = serve_fixture();
    let dir = tempfile::tempdir().unwrap();
    let base = ["--plan", &fx("plan.csv"), "--prof-data", &fx("prof"), "--duration", "5s", "--warmup", "1s"];

    // 1x: every service passes, gets what it asked for, and the simulator's p99 is beside it.
    let out1 = dir.path().join("1x");
    let (code, r, o) = verify(&s, &out1, &base);
    assert_eq!(code, Some(0), "{}\n{}", summary(&r), stderr(&o));
    assert_eq!(r["all_pass"], true);
    for (name, rate, slo) in [("roomy", 15.0, 200.0), ("tight", 10.0, 400.0), ("wide", 40.0, 300.0)] {
        let svc = service(&r, name);
        assert_eq!((f(&svc["target_rate"]), f(&svc["slo_ms"])), (rate, slo), "{svc}");
        // Poisson over a 4 s window: the offered rate is near the target; nothing fails or drops.
        assert!((f(&svc["offered_rate"]) - rate).abs() < 0.5 * rate, "{svc}");
        assert_eq!(svc["achieved_rate"], svc["offered_rate"], "{svc}");
        assert_eq!((svc["failed"].as_u64(), svc["dropped"].as_u64()), (Some(0), Some(0)), "{svc}");
        assert!(f(&svc["p99_ms"]) <= slo && f(&svc["attainment_pct"]) >= 99.0, "{svc}");
        for key in ["p50_ms", "p90_ms", "p95_ms", "max_ms", "lag_p99_ms", "p99_from_send_ms"] {
            assert!(svc[key].is_number(), "{key} in {svc}");
        }
    }
    // The emulated workers sleep 10, 40 and 50 ms: latency cannot be below that.
    assert!(f(&service(&r, "roomy")["p50_ms"]) >= 10.0 && f(&service(&r, "wide")["p50_ms"]) >= 50.0, "{}", summary(&r));
    predicted_p99_agrees_with_the_measurement(&r);
    // A test of the check, on this run's report: a missing, zero, 2.5x too high, 4x too low or
    // swapped prediction fails it.
    let mutated = |change: &dyn Fn(&str, f64) -> Value| {
        let mut m = r.clone();
        for svc in m["services"].as_array_mut().unwrap() {
            let name = svc["service"].as_str().unwrap().to_string();
            svc["predicted_p99_ms"] = change(&name, f(&svc["predicted_p99_ms"]));
        }
        m
    };
    let tight = f(&service(&r, "tight")["predicted_p99_ms"]);
    let roomy = f(&service(&r, "roomy")["predicted_p99_ms"]);
    let wrong: [(&str, Value); 5] = [
        ("missing", mutated(&|_, _| Value::Null)),
        ("zero", mutated(&|_, _| 0.0.into())),
        // Too high against this run's measurement, not the prediction: on a loaded machine the
        // measured p99 grows (roomy 116 ms, tight 210 ms in one fresh clone's suite) and 2.5x
        // the prediction then passed the check.
        ("2.5x too high", mutated(&|n, _| (f(&service(&r, n)["p99_ms"]) * 2.5).into())),
        ("4x too low", mutated(&|_, p| (p / 4.0).into())),
        ("roomy and tight swapped", mutated(&|n, p| match n { "roomy" => tight.into(), "tight" => roomy.into(), _ => p.into() })),
    ];
    for (what, report) in wrong {
        let caught = std::panic::catch_unwind(|| predicted_p99_agrees_with_the_measurement(&report)).is_err();
        assert!(caught, "a {what} prediction passed the check");
    }
    let files: Vec<String> = ["verify.json", "verify.csv", "latency_cdf.svg"].iter().map(|n| std::fs::read_to_string(out1.join(n)).unwrap()).collect();
    let saved: Value = serde_json::from_str(&files[0]).unwrap();
    assert_eq!(saved, r, "verify.json is what --json printed");
    assert_eq!(files[1].lines().count(), 4, "{}", files[1]);
    assert!(files[1].starts_with("service,model,slo_ms,") && files[1].contains("\nwide,slow,300"), "{}", files[1]);
    for want in ["roomy (SLO 200 ms): pass", "tight (SLO 400 ms): pass", "wide (SLO 300 ms): pass"] {
        assert!(files[2].contains(want), "{want} not in the SVG");
    }

    // 3x: tight (30/s on 25/s) and wide (120/s on 80/s) fail, roomy (45/s on 200/s) passes.
    let out3 = dir.path().join("3x");
    let (code, r, o) = verify(&s, &out3, &[&base[..], &["--rate-scale", "3"]].concat());
    assert_eq!(code, Some(3), "{}\n{}", summary(&r), stderr(&o));
    assert_eq!(r["all_pass"], false);
    let failing: Vec<&str> = r["services"].as_array().unwrap().iter().filter(|s| s["pass"] == false).map(|s| s["service"].as_str().unwrap()).collect();
    // tight and wide are over capacity and must fail. roomy (45/s on 200/s) passes unless the
    // machine itself is loaded, which the generator reports as lag (issue 34: a 3 s run beside a
    // build saw roomy's p99 at 553 ms); then it may fail too.
    let loaded = !r["generator_warning"].is_null();
    if loaded {
        assert!(failing.contains(&"tight") && failing.contains(&"wide"), "{}", summary(&r));
    } else {
        assert_eq!(failing, ["tight", "wide"], "{}", summary(&r));
    }
    for name in ["tight", "wide"] {
        let svc = service(&r, name);
        // The server refuses what it cannot queue (429) or serves it late; either is a miss.
        assert!(f(&svc["achieved_rate"]) < 0.95 * f(&svc["offered_rate"]) || f(&svc["p99_ms"]) > f(&svc["slo_ms"]), "{svc}");
        assert!(svc["reason"].as_str().unwrap().contains("within the SLO, needs 99 %"), "{svc}");
    }
    assert_eq!(f(&service(&r, "wide")["target_rate"]), 120.0);
    assert!(out3.join("latency_cdf.svg").is_file());

    // The table names the failing services and why.
    let endpoint = format!("http://{}", s.addr);
    let o = parva(&["verify", "--endpoint", &endpoint, "--services", &fx("services.csv"), "--duration", "3s", "--warmup", "1s", "--rate-scale", "3",
                    "--out", &dir.path().join("table").display().to_string()]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let table = stdout(&o);
    // 1 of 3 on a quiet machine; 0 of 3 when load makes roomy late too (the generator says so).
    assert!(table.contains("FAIL"), "{table}");
    assert!(table.contains("1 of 3 services meet their SLO at p99") || (table.contains("0 of 3 services meet their SLO at p99") && table.contains("the load generator sent requests late")), "{table}");
    assert!(table.lines().any(|l| l.starts_with("tight:") && l.contains("failed")), "{table}");
}

/// The simulator's predicted p99 beside each service against what was measured at 1x (issue 19).
///
/// The fixture's predictions are about 10 ms (roomy: 2 x 10 ms at 15/s, almost no queueing),
/// 102 ms (tight: 1 x 40 ms at 10/s) and 87 ms (wide: 4 x 50 ms at 40/s); measured on an idle
/// 2-core machine (debug build, the same arrivals each run) 16-29, 107-109 and 90-92 ms: the
/// emulated path adds ~4 ms at p50 and a p99 of 40-160 samples is nearly their maximum. The
/// bounds hold on a loaded machine and fail when the prediction is missing or wrong:
/// - every prediction is at least the service's batch latency (it cannot be faster than the
///   sleep) and within its SLO (the plan passes): a missing (null or 0) or unit-confused one fails;
/// - measured >= 0.5 x predicted: load only adds latency, so a prediction 2x too high fails;
/// - measured <= 2 x predicted + 100 ms (load headroom: tight measured 210 ms against 102
///   predicted in one fresh clone's suite, at 213 the old bound of 1.5 x + 60) where queueing
///   dominates (tight, wide): a prediction several times too low fails (below the batch
///   latency, the first rule catches it as well);
/// - services whose predictions differ >= 5x (roomy vs tight and wide) measure in the same order:
///   predictions swapped between services fail.
fn predicted_p99_agrees_with_the_measurement(r: &Value) {
    let p99 = |name: &str| (f(&service(r, name)["predicted_p99_ms"]), f(&service(r, name)["p99_ms"]));
    for (name, batch_ms, slo) in [("roomy", 10.0, 200.0), ("tight", 40.0, 400.0), ("wide", 50.0, 300.0)] {
        let (predicted, measured) = p99(name);
        assert!(predicted >= batch_ms && predicted <= slo, "{name}: predicted p99 {predicted} ms outside [{batch_ms}, {slo}]\n{}", summary(r));
        assert!(measured >= 0.5 * predicted, "{name}: measured p99 {measured} ms < half the predicted {predicted} ms\n{}", summary(r));
    }
    for name in ["tight", "wide"] {
        let (predicted, measured) = p99(name);
        assert!(measured <= 2.0 * predicted + 100.0, "{name}: measured p99 {measured} ms > 2 x predicted {predicted} + 100 ms\n{}", summary(r));
    }
    let (roomy, _) = p99("roomy");
    for name in ["tight", "wide"] {
        let (predicted, measured) = p99(name);
        assert!(predicted >= 5.0 * roomy, "{name}: predicted {predicted} ms not >= 5 x roomy's {roomy} ms");
        assert!(measured > p99("roomy").1, "{name} measured {measured} ms <= roomy's, predicted {predicted} vs {roomy}\n{}", summary(r));
    }
}

#[test]
fn a_generator_that_cannot_keep_up_shows_latency_and_lag_not_a_lower_rate() {
    let s = serve_fixture();
    let dir = tempfile::tempdir().unwrap();
    // wide: 40/s on 4 x 50 ms processes passes at 1x (test above). Here the generator gets one
    // connection (at most ~20 requests/s of 50 ms) and at most 10 requests waiting.
    let args = ["--services", &fx("lag_services.csv"), "--duration", "5s", "--warmup", "1s", "--distribution", "constant", "--connections", "1", "--max-in-flight", "10"];
    let (code, r, o) = verify(&s, &dir.path().join("lag"), &args);
    assert_eq!(code, Some(3), "{}\n{}", summary(&r), stderr(&o));
    let w = service(&r, "wide");
    // The schedule is kept: 40/s x 4 s are due, whatever the generator manages to send.
    assert_eq!((w["scheduled"].as_u64(), f(&w["offered_rate"])), (Some(160), 40.0), "{w}");
    assert!(f(&w["sent_rate"]) < 0.8 * 40.0 && w["dropped"].as_u64().unwrap() > 0, "{w}");
    assert_eq!(w["sent"].as_u64().unwrap() + w["dropped"].as_u64().unwrap(), 160, "{w}");
    // Requests wait behind up to 9 others of >= 50 ms: the lag and the latency show it.
    assert!(f(&w["lag_p99_ms"]) > 300.0 && f(&w["p99_ms"]) > 300.0, "{w}");
    // Timed from the actual send instead, as perf_analyzer does, the slip would be hidden.
    assert!(f(&w["p99_from_send_ms"]) * 3.0 < f(&w["p99_ms"]), "{w}");
    assert!(r["generator_warning"].as_str().is_some_and(|m| m.contains("wide")), "{r}");
}

#[test]
fn verify_replays_a_trace() {
    let s = serve_fixture();
    let dir = tempfile::tempdir().unwrap();
    // burst.csv: roomy 20 + 5, tight 10 + 5, wide 5 requests, the last at 1.6 s; replayed 2x faster.
    let args = ["--services", &fx("services.csv"), "--trace", &fx("burst.csv"), "--warmup", "0", "--rate-scale", "2"];
    let (code, r, o) = verify(&s, &dir.path().join("trace"), &args);
    assert_eq!(code, Some(0), "{}\n{}", summary(&r), stderr(&o));
    assert!(r["settings"]["trace"].as_str().unwrap().ends_with("burst.csv"));
    assert!(r["settings"]["distribution"].is_null());
    assert!((f(&r["settings"]["duration_s"]) - 0.801).abs() < 1e-9, "{}", r["settings"]);
    for (name, n) in [("roomy", 25), ("tight", 15), ("wide", 5)] {
        let svc = service(&r, name);
        assert_eq!((svc["scheduled"].as_u64(), svc["succeeded"].as_u64()), (Some(n), Some(n)), "{svc}");
        assert!(svc["target_rate"].is_null());
    }
}

/// Issue 36: several loads in one command, each with its own report, then measured and predicted
/// p50/p99 side by side by load; an idle process does not hold a lone request, so the median at a
/// quarter of the load is no higher than at full load.
#[test]
fn verify_runs_several_loads_in_one_command_and_puts_measured_beside_predicted() {
    let s = serve_fixture();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("loads");
    let args = ["--plan", &fx("plan.csv"), "--prof-data", &fx("prof"), "--duration", "3s", "--warmup", "1s", "--rate-scale", "0.25,1"];
    let (code, r, o) = verify(&s, &out, &args);
    assert_eq!(code, Some(0), "{r}\n{}", stderr(&o));
    let reports = r.as_array().unwrap_or_else(|| panic!("--json prints an array of reports: {r}"));
    assert_eq!(reports.iter().map(|r| f(&r["settings"]["rate_scale"])).collect::<Vec<_>>(), [0.25, 1.0]);
    for (r, scale) in reports.iter().zip(["x0.25", "x1"]) {
        let saved: Value = serde_json::from_str(&std::fs::read_to_string(out.join(scale).join("verify.json")).unwrap()).unwrap();
        assert_eq!(&saved, r, "{scale}/verify.json is what --json printed");
        for svc in r["services"].as_array().unwrap() {
            assert!(f(&svc["predicted_p50_ms"]) > 0.0 && f(&svc["predicted_p50_ms"]) <= f(&svc["predicted_p99_ms"]), "{svc}");
        }
    }
    let p50 = |i: usize, name: &str| f(&service(&reports[i], name)["p50_ms"]);
    for name in ["roomy", "tight", "wide"] {
        assert!(p50(0, name) <= p50(1, name) + 2.0, "{name}: p50 {} ms at x0.25, {} ms at x1", p50(0, name), p50(1, name));
    }
    let table = std::fs::read_to_string(out.join("loads.csv")).unwrap();
    assert_eq!(table.lines().count(), 1 + 2 * 3, "{table}");
    assert!(table.starts_with("rate_scale,service,") && table.lines().nth(1).unwrap().starts_with("0.25,roomy,"), "{table}");
    // Several loads need fixed rates.
    let (code, _, o) = verify(&s, &dir.path().join("trace"), &["--services", &fx("services.csv"), "--trace", &fx("burst.csv"), "--rate-scale", "0.5,1"]);
    assert_ne!(code, Some(0));
    assert!(stderr(&o).contains("several loads need fixed rates"), "{}", stderr(&o));
}

/// Issue 36: `--equal-requests` measures a lower load for longer, so that each load's p99 is
/// taken from as many requests; a load that would run past a day is refused before any request.
#[test]
fn verify_measures_each_load_on_as_many_requests_with_equal_requests() {
    let s = serve_fixture();
    let dir = tempfile::tempdir().unwrap();
    let args = ["--services", &fx("services.csv"), "--duration", "2s", "--warmup", "1s", "--rate-scale", "0.5,1", "--equal-requests"];
    let (code, r, o) = verify(&s, &dir.path().join("equal"), &args);
    assert_eq!(code, Some(0), "{r}\n{}", stderr(&o));
    let reports = r.as_array().unwrap_or_else(|| panic!("an array of reports: {r}"));
    let seconds: Vec<(f64, f64)> = reports.iter().map(|r| (f(&r["settings"]["duration_s"]), f(&r["settings"]["window_s"]))).collect();
    // x0.5 measures 2 s after its 1 s warm-up, x1 1 s: both schedule about the same requests.
    assert_eq!(seconds, [(3.0, 2.0), (2.0, 1.0)], "{}", stderr(&o));
    assert!(stderr(&o).contains("load x0.5: 3 s"), "{}", stderr(&o));
    let sched = |i: usize| -> f64 { reports[i]["services"].as_array().unwrap().iter().map(|s| f(&s["scheduled"])).sum() };
    assert!((sched(0) / sched(1) - 1.0).abs() < 0.3, "scheduled {} at x0.5, {} at x1", sched(0), sched(1));
    // x0.00001 would measure 100,000 s: refused, nothing sent, no report written.
    let out = dir.path().join("long");
    let args = ["--services", &fx("services.csv"), "--duration", "2s", "--warmup", "1s", "--rate-scale", "0.00001,1", "--equal-requests"];
    let (code, _, o) = verify(&s, &out, &args);
    assert_eq!(code, Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--equal-requests: load x0.00001 would run 100001 s"), "{}", stderr(&o));
    assert!(!out.exists(), "no report for a refused run");
}

/// Issue 14: `--rates` loads at rates that change over time (a rate trace): roomy steps from
/// 20/s to 80/s and back, the others keep their list rates; every scheduled request is answered.
#[test]
fn verify_loads_at_rates_that_change_over_time() {
    let s = serve_fixture();
    let dir = tempfile::tempdir().unwrap();
    let rates = dir.path().join("rates.csv");
    std::fs::write(&rates, "time_s,service,rate\n0,roomy,20\n1,roomy,80\n2,roomy,20\n").unwrap();
    let args = ["--services", &fx("services.csv"), "--rates", rates.to_str().unwrap(), "--duration", "3s", "--warmup", "0"];
    let (code, r, o) = verify(&s, &dir.path().join("rates"), &args);
    assert_eq!(code, Some(0), "{}\n{}", summary(&r), stderr(&o));
    assert!(r["settings"]["trace"].as_str().unwrap().ends_with("rates.csv"), "{}", r["settings"]);
    let roomy = service(&r, "roomy");
    // 20 + 80 + 20 expected over the three seconds (Poisson: a wide band).
    let n = roomy["scheduled"].as_u64().unwrap();
    assert!((80..=170).contains(&n), "{roomy}");
    for name in ["roomy", "tight", "wide"] {
        let svc = service(&r, name);
        assert_eq!(svc["scheduled"], svc["succeeded"], "{svc}");
        assert_eq!(svc["dropped"].as_u64(), Some(0), "{svc}");
    }
    // Issue 38: the report says when: 1 s intervals, roomy's step to 80/s in the second one, and
    // the plot over time and its table beside the CDF.
    let timeline = roomy["timeline"].as_array().unwrap();
    let rates_at: Vec<f64> = timeline.iter().map(|p| f(&p["offered_rate"])).collect();
    assert_eq!(timeline.len(), 3, "{roomy}");
    assert!(rates_at[1] > 2.0 * rates_at[0].max(rates_at[2]), "{rates_at:?}");
    assert_eq!(timeline.iter().map(|p| p["scheduled"].as_u64().unwrap()).sum::<u64>(), n);
    let out = dir.path().join("rates");
    let table = std::fs::read_to_string(out.join("verify_over_time.csv")).unwrap();
    assert_eq!(table.lines().count(), 1 + 3 * 3, "{table}");
    assert!(table.lines().any(|l| l.starts_with("roomy,1.0,2.0,")), "{table}");
    let plot = std::fs::read_to_string(out.join("over_time.svg")).unwrap();
    assert!(plot.contains("the times of rates.csv") && plot.contains("roomy (SLO 200 ms): pass"), "over_time.svg");
    // --rates and --trace exclude each other.
    let (code, _, o) = verify(&s, &dir.path().join("both"), &["--services", &fx("services.csv"), "--rates", rates.to_str().unwrap(), "--trace", &fx("burst.csv")]);
    assert_eq!(code, Some(2), "{}", stderr(&o));
}

#[test]
fn bad_input_is_refused_before_any_request_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on: input errors must come before any connection attempt.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let endpoint = format!("http://{free}");
    let out = dir.path().join("out");
    let out_s = out.display().to_string();
    let services = fx("services.csv");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let bad_time = write("bad_time.csv", "# day\ntime_s,service\n0.5,roomy\nlater,tight\n");
    let bad_service = write("bad_service.csv", "time_s,service\n0.5,roomy\n0.6,nope\n");
    let bad_header = write("bad_header.csv", "t,service\n0.5,roomy\n");
    let negative = write("negative.csv", "time_s\n-2\n");
    let missing = write("missing.csv", "time_s,service\n0.5,roomy\n0.6,tight\n");
    let cases: Vec<(Vec<&str>, i32, Vec<String>)> = vec![
        (vec!["--services", &services, "--trace", &bad_time], 1, vec![format!("{bad_time}:4: field `time_s`"), "\"later\"".into()]),
        (vec!["--services", &services, "--trace", &bad_service], 1, vec![format!("{bad_service}:3: field `service`"), "\"nope\"".into(), "roomy, tight, wide".into()]),
        (vec!["--services", &services, "--trace", &bad_header], 1, vec![format!("{bad_header}:1:"), "`t,service`".into()]),
        (vec!["--services", &services, "--trace", &negative], 1, vec![format!("{negative}:2: field `time_s`"), "\"-2\"".into()]),
        (vec!["--services", &services, "--trace", &missing], 1, vec![missing.clone(), "\"wide\"".into()]),
        (vec!["--services", &services, "--trace", "/nonexistent/t.csv"], 1, vec!["/nonexistent/t.csv".into()]),
        (vec!["--services", &services, "--duration", "5x"], 2, vec!["--duration".into(), "\"5x\"".into()]),
        (vec!["--services", &services, "--warmup=-1s"], 2, vec!["--warmup".into(), "\"-1s\"".into()]),
        (vec!["--services", &services, "--duration", "2s", "--warmup", "2s"], 1, vec!["--warmup (2 s) must be shorter than --duration (2 s)".into()]),
        (vec!["--services", &services, "--rate-scale", "0"], 1, vec!["--rate-scale".into()]),
        (vec!["--services", &services, "--rate-scale", "0.5,0,1"], 1, vec!["--rate-scale".into(), "got 0".into()]),
        (vec!["--services", &services, "--rate-scale", "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1"], 1, vec!["at most 16 loads".into()]),
        (vec!["--services", &services, "--percentile", "101"], 1, vec!["--percentile".into(), "101".into()]),
        (vec!["--services", &services, "--max-in-flight", "0"], 1, vec!["--max-in-flight".into()]),
        (vec!["--services", &services, "--connections", "0"], 1, vec!["--connections".into()]),
        (vec!["--services", "/nonexistent/s.csv"], 1, vec!["/nonexistent/s.csv".into()]),
        (vec!["--slo-dir", "x", "--slo", "1"], 2, vec!["--prof-data".into()]),
        (vec![], 2, vec!["--services".into()]),
        (vec!["--services", &services, "--distribution", "bursty"], 2, vec!["bursty".into()]),
    ];
    for (args, want, needles) in cases {
        let o = parva(&[&["verify", "--endpoint", &endpoint, "--out", &out_s][..], &args].concat());
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(want), "{args:?}: {err}");
        for n in &needles {
            assert!(err.contains(n.as_str()), "{args:?}: {n:?} not in {err}");
        }
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }

    // A bad endpoint, a dead one, and a report directory that is a file.
    let o = parva(&["verify", "--endpoint", "https://127.0.0.1:1", "--services", &services, "--out", &out_s]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("https is not supported"), "{}", stderr(&o));
    let o = parva(&["verify", "--endpoint", &endpoint, "--services", &services, "--wait-ready", "0.3s", "--out", &out_s]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&endpoint) && stderr(&o).contains("is the server running"), "{}", stderr(&o));
    assert!(!out.exists());
    let file = write("a_file", "x");
    let o = parva(&["verify", "--endpoint", &endpoint, "--services", &services, "--out", &file]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is not a directory"), "{}", stderr(&o));
}

#[test]
fn unknown_services_at_the_endpoint_are_named_and_nothing_is_written() {
    let s = serve_fixture();
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("services.csv");
    std::fs::write(&list, "service,model,rate,slo_ms\nroomy,fast,5,200\nghost,fast,5,200\n").unwrap();
    let out = dir.path().join("out");
    let (code, _, o) = verify(&s, &out, &["--services", &list.display().to_string(), "--duration", "2s", "--warmup", "0"]);
    assert_eq!(code, Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("\"ghost\"") && err.contains("/v2/models/ghost/ready") && err.contains("404"), "{err}");
    assert!(!out.exists());
}

/// The Python to run tritonclient with: `$PARVA_PYTHON`, `.tools/venv/bin/python` (scripts/bootstrap's
/// venv), or `python3`; `None` (with a message) when none of them imports `tritonclient.http`.
fn tritonclient_python() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("PARVA_PYTHON") {
        candidates.push(p.into());
    } else {
        let venv = repo().join(".tools/venv/bin/python");
        if venv.exists() {
            candidates.push(venv);
        }
        candidates.push("python3".into());
    }
    for py in &candidates {
        let ok = Command::new(py).args(["-c", "import tritonclient.http"]).output().is_ok_and(|o| o.status.success());
        if ok {
            return Some(py.clone());
        }
    }
    let msg = format!(
        "tritonclient[http] is not importable by {} (pip install \"tritonclient[http]\", or set PARVA_PYTHON)",
        candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" or ")
    );
    if std::env::var("PARVA_REQUIRE_TRITONCLIENT").is_ok_and(|v| v == "1") {
        panic!("PARVA_REQUIRE_TRITONCLIENT=1: {msg}");
    }
    eprintln!("skipped: {msg}");
    None
}

#[test]
fn tritonclient_speaks_to_parva_serve() {
    let Some(python) = tritonclient_python() else { return };
    let s = serve_fixture();
    let o = Command::new(&python)
        .arg(repo().join("scripts/verify/tritonclient_check.py"))
        .arg(s.addr.to_string())
        .args(["roomy", "tight"])
        .output()
        .expect("run the tritonclient check");
    let text = format!("{}{}", stdout(&o), stderr(&o));
    assert!(o.status.success(), "{text}");
    // Both encodings of both services came back with the metadata's shapes.
    for want in ["roomy (binary in, binary out): output scores ([1, 10], 'float32')", "tight (JSON in, JSON out): output logits ([1, 2], 'float32')", "unknown model raises", "tritonclient wire check passed"] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
}

/// Issue 21: tritonclient's system shared-memory flow (Triton's `simple_http_shm_client.py`
/// steps, plus refusals) against `parva serve`: inputs read from a registered region, outputs
/// written to one, bounds and sizes checked, regions listed and unregistered.
#[test]
fn tritonclient_shared_memory_flow_works_against_parva_serve() {
    let Some(python) = tritonclient_python() else { return };
    let s = serve_fixture();
    let o = Command::new(&python)
        .arg(repo().join("scripts/verify/tritonclient_shm_check.py"))
        .arg(s.addr.to_string())
        .args(["roomy", "tight"])
        .output()
        .expect("run the tritonclient shared-memory check");
    let text = format!("{}{}", stdout(&o), stderr(&o));
    assert!(o.status.success(), "{text}");
    for want in [
        "roomy: output scores read from shared memory equals the HTTP answer ([1, 10], float32)",
        "tight: an input larger than its region raises",
        "tight: an output region too small raises",
        "unregistering all leaves none",
        "tritonclient shared-memory check passed",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
}

/// Issue 21: `verify --wire shm` loads the server through system shared memory: it passes at the
/// plan's rates like the binary wire, and leaves no region registered and no object behind.
#[test]
fn verify_over_shared_memory_passes_and_cleans_up() {
    let s = serve_fixture();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (code, report, o) = verify(&s, &out, &["--map", &fx("plan.csv"), "--duration", "3s", "--warmup", "0.5s", "--wire", "shm"]);
    assert_eq!(code, Some(0), "{}\n{}", stderr(&o), summary(&report));
    assert_eq!(report["settings"]["wire"], "shm");
    for svc in ["roomy", "tight", "wide"] {
        assert_eq!(service(&report, svc)["failed"], 0, "{}", summary(&report));
    }
    let (code, status) = crate::serve_support::get(s.addr, "/v2/systemsharedmemory/status");
    assert_eq!((code, String::from_utf8_lossy(&status).to_string()), (200, "[]".to_string()));
    // Objects of a verify that has ended (another test's verify may be running beside this one:
    // its objects are named after its live pid).
    let ended = |name: &str| name.strip_prefix("parva-verify-").and_then(|r| r.split('-').next()).is_some_and(|pid| !Path::new("/proc").join(pid).exists());
    let left: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().to_string()).filter(|n| ended(n)).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// `parva verify ARGS` started in the background (for a signal), its output piped.
fn spawn_verify(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_parva"))
        .arg("verify")
        .args(args)
        .current_dir(repo())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start parva verify")
}

/// Regression (found while benchmarking issue 36: a `verify --wire shm` killed mid-run left its
/// /dev/shm objects behind and its regions registered with the server). SIGTERM now stops the
/// load, unregisters the regions, removes the files and writes no report.
#[test]
fn verify_stopped_by_sigterm_leaves_no_shared_memory_behind() {
    let s = serve_fixture();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let endpoint = format!("http://{}", s.addr);
    let mut child = spawn_verify(&["--endpoint", &endpoint, "--map", &fx("plan.csv"), "--duration", "600s", "--warmup", "0", "--wire", "shm", "--out", out.to_str().unwrap()]);
    let pid = child.id();
    let mine = || -> Vec<String> {
        std::fs::read_dir("/dev/shm")
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().to_string()).filter(|n| n.starts_with(&format!("parva-verify-{pid}-"))).collect())
            .unwrap_or_default()
    };
    // Wait (an event, not a time) until every service's regions are registered and load flows.
    let mut registered = false;
    for _ in 0..6000 {
        let (_, status) = crate::serve_support::get(s.addr, "/v2/systemsharedmemory/status");
        let n = serde_json::from_slice::<Value>(&status).ok().and_then(|v| v.as_array().map(Vec::len)).unwrap_or(0);
        if n >= 6 && s.metrics().contains("parva_requests_total{") {
            registered = true;
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "verify ended before it was stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(registered, "verify never registered its regions");
    assert!(!mine().is_empty(), "verify's shared-memory files exist while it runs");
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("interrupted") && stderr(&o).contains("no report written"), "{}", stderr(&o));
    assert!(mine().is_empty(), "left behind: {:?}", mine());
    let (code, status) = crate::serve_support::get(s.addr, "/v2/systemsharedmemory/status");
    assert_eq!((code, String::from_utf8_lossy(&status).to_string()), (200, "[]".to_string()));
    assert!(!out.join("verify.json").exists());
}

/// SIGTERM also ends the wait for readiness (an endpoint that accepts and never answers): no
/// report, exit 1, at once rather than after `--wait-ready`.
#[test]
fn verify_stopped_while_waiting_for_readiness_ends_at_once() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut child = spawn_verify(&["--endpoint", &endpoint, "--services", &fx("services.csv"), "--wait-ready", "600s", "--duration", "1s", "--warmup", "0", "--out", out.to_str().unwrap()]);
    // verify asks for readiness (the event: its connection), which never comes. A verify that
    // ended before connecting fails the test instead of leaving it waiting.
    listener.set_nonblocking(true).unwrap();
    let _conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(status) = child.try_wait().unwrap() {
                    let mut err = String::new();
                    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                    panic!("verify ended ({status}) before asking for readiness: {err}");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("interrupted"), "{}", stderr(&o));
    assert!(!out.exists());
}

/// Issue 16: `verify --map MAP --node N` verifies one node of a multi-node map at that node's share
/// of each service's rate (its planned capacity over the service's), not the whole rate, and only
/// the services it serves; the prediction simulates that node alone.
#[test]
fn verify_of_one_node_loads_it_with_its_share_of_each_service() {
    let d = tempfile::tempdir().unwrap();
    // roomy runs on both nodes (capacity 1 : 3), wide only on node 1; node 1 is served.
    let map = d.path().join("two-nodes.csv");
    std::fs::write(
        &map,
        "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n\
         0,0,roomy,fast,0,1,1,2,,,100,40,200\n\
         1,0,roomy,fast,0,1,1,2,,,300,40,200\n\
         1,0,wide,slow,2,1,1,4,,,60,40,300\n\
         0,0,tight,slow,1,1,1,1,,,20,10,400\n",
    )
    .unwrap();
    let s = start(&["--plan", map.to_str().unwrap(), "--node", "1", "--backend", "emulated", "--models", &fx("models"), "--prof-data", &fx("prof")]);
    s.wait_200("/v2/health/ready", Duration::from_secs(60));
    let out = d.path().join("out");
    let (code, r, o) = verify(&s, &out, &["--map", map.to_str().unwrap(), "--node", "1", "--prof-data", &fx("prof"), "--duration", "4s", "--warmup", "1s"]);
    assert!(code.is_some(), "{}", stderr(&o));
    let names: Vec<&str> = r["services"].as_array().unwrap().iter().map(|s| s["service"].as_str().unwrap()).collect();
    assert_eq!(names, ["roomy", "wide"], "only node 1's services: {r}");
    assert!((f(&service(&r, "roomy")["target_rate"]) - 30.0).abs() < 1e-9, "3/4 of roomy's 40/s: {r}");
    assert!((f(&service(&r, "wide")["target_rate"]) - 40.0).abs() < 1e-9, "all of wide's: {r}");
    assert!(stderr(&o).contains("node 1 serves 75.0 % of service roomy's capacity"), "{}", stderr(&o));
    // A node the map does not have is refused before any request.
    let (code, _, o) = verify(&s, &d.path().join("none"), &["--map", map.to_str().unwrap(), "--node", "5"]);
    assert_eq!(code, Some(1));
    assert!(stderr(&o).contains("--node 5: ") && stderr(&o).contains("has no segment on node 5 (its nodes: {0, 1})"), "{}", stderr(&o));
    assert!(!d.path().join("none").exists());
}
