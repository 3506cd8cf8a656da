//! `parva plan` on the repository's own fixtures: outputs, golden maps and every bad-input path.

use std::path::Path;

use crate::util::{fixture, parva, parva_in, repo, stderr, stdout};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The golden maps in tests/golden/ and the `parva plan` arguments that make them.
pub const GOLDEN_MAPS: [(&str, &str); 2] = [("example_parvagpu.csv", "parvagpu"), ("example_optimal.csv", "optimal")];

/// `parva plan` of the example services with `algorithm`; exit code 0 asserted; (map, stdout).
pub fn plan_example(algorithm: &str) -> (String, String) {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("deploy.csv");
    let o = parva(&[
        "plan", "--prof-data", "prof_data/example", "--services", "deployment/example/services.csv",
        "--gpu", "a100-80gb", "--algorithm", algorithm, "--out", s(&out),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    (std::fs::read_to_string(&out).unwrap(), stdout(&o))
}

/// The suite only compares: a golden file is rewritten by this helper alone, never by a test run
/// (`cargo test --locked --test integration bless_golden_maps -- --ignored`, then review the diff;
/// see tests/golden/README.md).
#[test]
#[ignore = "rewrites tests/golden/: run on purpose, then review the diff"]
fn bless_golden_maps() {
    for (file, algorithm) in GOLDEN_MAPS {
        let (map, _) = plan_example(algorithm);
        std::fs::write(repo().join("tests/golden").join(file), map).unwrap();
    }
}

#[test]
fn golden_example_plan_is_reproduced() {
    let (got, _) = plan_example("parvagpu");
    let golden = repo().join("tests/golden/example_parvagpu.csv");
    let want = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(got, want, "plan differs from {} (see tests/golden/README.md to re-bless on purpose)", golden.display());
}

#[test]
fn json_summary_has_the_documented_fields() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("m.csv");
    let o = parva(&[
        "plan", "--prof-data", s(&fixture("profiles/good")), "--services", s(&fixture("services/good.csv")),
        "--gpu", "a100-80gb", "--out", s(&out), "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    for key in ["gpus", "nodes", "segments", "gpcs", "plan_seconds", "services", "complete", "out"] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!(v["complete"], true);
    let services = v["services"].as_array().unwrap();
    assert_eq!(services.len(), 3);
    for svc in services {
        assert!(svc["capacity"].as_f64().unwrap() >= svc["rate"].as_f64().unwrap(), "{svc}");
    }
    // The map written holds every service, with the extra columns filled.
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type"));
    for svc in ["front", "back", "batch"] {
        assert!(text.contains(&format!(",{svc},")), "{svc} missing from\n{text}");
    }
}

#[test]
fn slo_pair_default_output_path() {
    let d = tempfile::tempdir().unwrap();
    let o = parva_in(d.path(), &[
        "plan", "--prof-data", s(&fixture("profiles/good")), "--slo-dir", s(&fixture("slo/good")), "--slo", "2",
        "--gpu", "a100-80gb", "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let map = d.path().join("deployment/SLO2/SLO2_deploy.csv");
    let text = std::fs::read_to_string(&map).unwrap();
    // Scenario 2 has only the first model (beta is N/A).
    assert!(text.contains(",alpha,alpha,") && !text.contains(",beta,"), "{text}");
}

#[test]
fn infeasible_service_is_reported_and_exit_code_says_incomplete() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("m.csv");
    let o = parva(&[
        "plan", "--prof-data", s(&fixture("profiles/good")), "--services", s(&fixture("services/infeasible.csv")),
        "--gpu", "a100-80gb", "--out", s(&out), "--json",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["complete"], false);
    let bad = &v["infeasible"][0];
    assert_eq!(bad["service"], "slow");
    assert!(bad["reason"].as_str().unwrap().contains("closest"), "{bad}");
    assert!(stderr(&o).contains("slow"), "{}", stderr(&o));
}

/// Every bad input: exit 1, one message naming what is wrong, and nothing written (an existing
/// output file is left as it was).
#[test]
fn bad_inputs_name_file_line_field_and_write_nothing() {
    let good_profiles = fixture("profiles/good");
    let good_services = fixture("services/good.csv");
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (svc_args(&fixture("profiles/negative"), &good_services), vec!["beta.csv:4", "Throughput", "-12.5"]),
        (svc_args(&fixture("profiles/nan"), &good_services), vec!["alpha.csv:7", "Throughput", "NaN"]),
        (svc_args(&fixture("profiles/size5"), &good_services), vec!["alpha.csv:18", "Mig instance", "size 5", "a100-80gb"]),
        (svc_args(&fixture("profiles/duplicate"), &good_services), vec!["beta.csv:42", "duplicate", "line 3"]),
        (svc_args(&fixture("profiles/header"), &good_services), vec!["alpha.csv:1", "header"]),
        (svc_args(&fixture("profiles/missing"), &good_services), vec!["profiles/missing"]),
        (svc_args(&good_profiles, &fixture("services/unknown_model.csv")), vec!["unknown_model.csv:3", "model", "gamma"]),
        (svc_args(&good_profiles, &fixture("services/negative_rate.csv")), vec!["negative_rate.csv:2", "rate", "-4"]),
        (svc_args(&good_profiles, &fixture("services/duplicate.csv")), vec!["duplicate.csv:3", "front", "twice"]),
        (svc_args(&good_profiles, &fixture("services/empty.csv")), vec!["empty.csv", "no services"]),
        (svc_args(&good_profiles, &fixture("services/absent.csv")), vec!["absent.csv"]),
        (slo_args(&good_profiles, &fixture("slo/columns"), 1), vec!["SLO_req_rate.csv:1", "3 columns", "2 model files"]),
        (slo_args(&good_profiles, &fixture("slo/na-mismatch"), 1), vec!["SLO_latency.csv:1", "column 2", "N/A"]),
        (slo_args(&good_profiles, &fixture("slo/good"), 3), vec!["SLO_req_rate.csv", "scenario 3"]),
        (slo_args(&good_profiles, &fixture("slo/absent"), 1), vec!["slo/absent/SLO_req_rate.csv"]),
    ];
    for (args, wants) in cases {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("deploy.csv");
        std::fs::write(&out, "previous map\n").unwrap();
        let mut full: Vec<&str> = args.iter().map(String::as_str).collect();
        full.extend(["--gpu", "a100-80gb", "--out", s(&out)]);
        let o = parva(&full);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{full:?}\n{err}");
        for w in &wants {
            assert!(err.contains(w), "expected {w:?} in the error of {full:?}:\n{err}");
        }
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "previous map\n", "{full:?} touched the output");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1, "{full:?} left files behind");
    }
}

fn svc_args(profiles: &Path, services: &Path) -> Vec<String> {
    ["plan", "--prof-data", s(profiles), "--services", s(services)].map(String::from).to_vec()
}

fn slo_args(profiles: &Path, dir: &Path, n: usize) -> Vec<String> {
    vec!["plan".into(), "--prof-data".into(), s(profiles).into(), "--slo-dir".into(), s(dir).into(), "--slo".into(), n.to_string()]
}

#[test]
fn usage_errors() {
    let o = parva(&["plan", "--prof-data", "prof_data/example", "--gpu", "a100-80gb"]);
    assert_eq!(o.status.code(), Some(2), "neither --services nor --slo-dir");
    let o = parva(&["plan", "--prof-data", "prof_data/example", "--services", "x.csv", "--gpu", "v100"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unknown GPU type `v100`"), "{}", stderr(&o));
    // A30 has no 3g/7g instances: the example profile set has sizes it cannot use.
    let o = parva(&["plan", "--prof-data", "prof_data/example", "--services", "deployment/example/services.csv", "--gpu", "a30-24gb", "--out", "/dev/null"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not a MIG size of a30-24gb"), "{}", stderr(&o));
}

#[test]
fn catalogue_lists_every_gpu_type() {
    let o = parva(&["catalogue", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let ids: Vec<&str> = v.as_array().unwrap().iter().map(|g| g["gpu_type"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        ["a100-40gb", "a100-80gb", "h100-80gb", "h100-94gb", "h200-141gb", "a30-24gb", "h100-pcie-80gb", "a800-40gb", "a800-80gb", "h800-80gb", "h800-pcie-80gb",
         "b200-180gb", "gh200-144gb", "gh200-96gb", "h100-96gb", "h20-96gb", "gb200-186gb", "b300-269gb", "gb300-278gb",
         "rtx-pro-6000-96gb", "v100-16gb", "v100-32gb", "t4-16gb", "a10-24gb", "l4-24gb", "l40s-48gb",
         "a100-40gb-nomig", "a100-80gb-nomig", "h100-80gb-nomig", "h200-141gb-nomig"]
    );
    // MIG types and types without MIG (MPS shares) say which they are.
    let partition = |id: &str| v.as_array().unwrap().iter().find(|g| g["gpu_type"] == id).unwrap()["partition"].clone();
    assert_eq!((partition("a100-80gb"), partition("l4-24gb")), (serde_json::json!("mig"), serde_json::json!("mps")));
    // Each type lists the products recognised as it, with their PCI device ids.
    assert_eq!(v[0]["products"][0]["pci_device_id"], "0x20B010DE");
    assert_eq!(v[0]["products"][0]["name"], "NVIDIA A100-SXM4-40GB");
}

// ---- issue 11: limits and consistency (plan, simulate, validate, deploy) ----

/// Run `parva` with `args` where `OUT` names a fresh output file holding "previous map"; assert
/// exit code 1, every `wants` in stderr, and the output untouched with nothing else written.
fn refused(args: &[&str], wants: &[&str]) -> String {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("deploy.csv");
    std::fs::write(&out, "previous map\n").unwrap();
    let full: Vec<&str> = args.iter().map(|a| if *a == "OUT" { s(&out) } else { *a }).collect();
    let o = parva(&full);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{full:?}\n{err}");
    for w in wants {
        assert!(err.contains(w), "expected {w:?} in the error of {full:?}:\n{err}");
    }
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "previous map\n", "{full:?} touched the output");
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1, "{full:?} left files behind");
    err
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Issue 11: `parva plan` panicked inside the solver (`invalid problem`) on absurd rates.
#[test]
fn plan_refuses_absurd_rates_naming_file_line_field_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let prof = fixture("profiles/good");
    for (rate, found) in [("1e300", "found 1e300"), ("inf", "found inf"), ("NaN", "found NaN"), ("20000000", "found 2e7")] {
        let list = write(d.path(), "s.csv", &format!("service,model,rate,slo_ms\nfront,alpha,100,50\nhuge,alpha,{rate},50\n"));
        refused(
            &["plan", "--prof-data", s(&prof), "--services", s(&list), "--gpu", "a100-80gb", "--out", "OUT"],
            &["s.csv:3: field `rate`: request rate must be a finite number in (0, 1e7] requests/s", found],
        );
    }
}

/// Issue 11: huge rates ran for minutes or were killed for memory; merely large ones wrote maps
/// of millions of GPUs. Now refused before planning, with the GPUs they would need.
#[test]
fn plan_needing_more_than_max_gpus_is_refused_with_the_number_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let list = write(d.path(), "s.csv", "service,model,rate,slo_ms\nfront,alpha,9000000,50\n");
    let prof = fixture("profiles/good");
    for algorithm in ["optimal", "parvagpu"] {
        let err = refused(
            &["plan", "--prof-data", s(&prof), "--services", s(&list), "--gpu", "a100-80gb", "--algorithm", algorithm, "--out", "OUT"],
            &["the plan would need at least ", " a100-80gb GPUs, more than --max-gpus 4096", "service \"front\"", "(nothing written)"],
        );
        let needed: u64 = err.split("need at least ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        assert!(needed > 4096, "{err}");
    }
    // --max-gpus out of its range is a usage error.
    let o = parva(&["plan", "--prof-data", s(&prof), "--services", s(&list), "--gpu", "a100-80gb", "--max-gpus", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// Issue 11: a service with a tiny positive rate disappeared from the map while the run said
/// `complete: true`.
#[test]
fn plan_gives_a_tiny_rate_service_a_segment() {
    let d = tempfile::tempdir().unwrap();
    let list = write(d.path(), "s.csv", "service,model,rate,slo_ms\nfront,alpha,900,50\ntiny,beta,0.000001,200\n");
    for algorithm in ["optimal", "parvagpu"] {
        let out = d.path().join(format!("{algorithm}.csv"));
        let o = parva(&[
            "plan", "--prof-data", s(&fixture("profiles/good")), "--services", s(&list), "--gpu", "a100-80gb",
            "--algorithm", algorithm, "--out", s(&out), "--json",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v["complete"], true);
        assert_eq!(v["services"][1]["service"], "tiny");
        assert_eq!(v["services"][1]["segments"], 1, "{algorithm}: {v}");
        assert!(std::fs::read_to_string(&out).unwrap().contains(",tiny,beta,"), "{algorithm}");
    }
}

/// A zero rate in an SLO pair was dropped silently; now it is reported (text and --json).
#[test]
fn plan_reports_a_zero_rate_service_instead_of_dropping_it() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "SLO_req_rate.csv", "200,0\n");
    write(d.path(), "SLO_latency.csv", "100,50\n");
    let out = d.path().join("m.csv");
    let prof = fixture("profiles/good");
    let args = ["plan", "--prof-data", s(&prof), "--slo-dir", s(d.path()), "--slo", "1", "--gpu", "a100-80gb", "--out", s(&out)];
    let o = parva(&[&args[..], &["--json"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["zero_rate"], serde_json::json!(["beta"]));
    assert_eq!(v["complete"], true);
    assert!(stderr(&o).contains("note: service beta has a rate of 0 in this scenario: no segment planned for it"), "{}", stderr(&o));
    let o = parva(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("rate 0"), "{}", stdout(&o));
    assert!(!std::fs::read_to_string(&out).unwrap().contains(",beta,"));
}

/// Issue 11: an SLO file with a header line shifted every scenario by one row; SLO files with
/// different row counts were accepted.
#[test]
fn plan_refuses_slo_pairs_with_a_header_or_unequal_rows() {
    let d = tempfile::tempdir().unwrap();
    let prof = fixture("profiles/good");
    write(d.path(), "SLO_req_rate.csv", "alpha,beta\n200,300\n");
    write(d.path(), "SLO_latency.csv", "100,N/A\n50,20\n");
    let args = ["plan", "--prof-data", s(&prof), "--slo-dir", s(d.path()), "--slo", "1", "--gpu", "a100-80gb", "--out", "OUT"];
    refused(&args, &["SLO_req_rate.csv:1: holds `alpha,beta`, not numbers: ParvaGPU SLO files have no header line"]);
    write(d.path(), "SLO_req_rate.csv", "200,300\n100,N/A\n50,N/A\n");
    refused(&args, &["SLO_latency.csv: has 2 scenario rows but SLO_req_rate.csv has 3"]);
}

fn map_with(rows: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "map.csv",
        &format!("node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n{rows}"),
    );
    (d, p)
}

/// Issue 11: a map naming several GPU types was accepted, and `validate` and `deploy` disagreed
/// about it (issue 35: a node of several types); one service with different rates on different rows was accepted; a map whose last
/// row was cut short was read. Every command that reads a map now refuses them alike.
#[test]
fn inconsistent_or_cut_maps_are_refused_by_every_command() {
    let prof = s(&fixture("profiles/good")).to_string();
    let cases = [
        (
            "0,0,a,alpha,0,1,8,1,,a100-80gb,100,50,100\n0,1,b,beta,0,1,8,1,,h100-80gb,100,50,100\n",
            "map.csv:3: field `gpu_type`: is h100-80gb here but a100-80gb on line 2, on the same node 0; a node is one GPU type",
        ),
        (
            "0,0,a,alpha,0,1,8,1,,a100-80gb,100,50,100\n0,1,a,alpha,0,1,8,1,,a100-80gb,100,70,100\n",
            "map.csv:3: field `rate`: service \"a\" has rate 70 here but 50 on line 2",
        ),
        ("0,0,a,alpha,0,1,8,1,,a100-80gb,100,50,100\n0,1,b,alpha,0,1,8,1,,a100-80gb,100,50,1", "map.csv:3: the last row has no line end"),
    ];
    for (rows, want) in cases {
        let (d, map) = map_with(rows);
        let run = d.path().join("run");
        for args in [
            vec!["validate", "--plan", s(&map)],
            vec!["simulate", "--plan", s(&map), "--prof-data", &prof, "--duration", "2s", "--warmup", "1s"],
            vec!["deploy", "--plan", s(&map), "--dry-run", "--fake-gpus", "a100-80gb:2", "--run-dir", s(&run)],
        ] {
            let o = parva(&args);
            assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
            assert!(stderr(&o).contains(want), "{args:?}: expected {want:?} in\n{}", stderr(&o));
        }
    }
}

/// Issue 11: `parva simulate --rate-scale` with a huge value aborted on allocation, and a huge
/// `--duration` ran forever.
#[test]
fn simulate_refuses_huge_rate_scale_and_duration_before_running() {
    let (d, map) = map_with("0,0,a,alpha,0,1,8,1,,a100-80gb,100,50,100\n");
    let prof = s(&fixture("profiles/good")).to_string();
    let out = d.path().join("sim");
    let base = ["simulate", "--plan", s(&map), "--prof-data", &prof, "--out", s(&out)];
    for (extra, code, want) in [
        (vec!["--rate-scale", "1e300"], 1, "--rate-scale: rate scale must be a finite number in (0, 1000] x, found 1e300"),
        (vec!["--rate-scale", "NaN"], 1, "found NaN"),
        (vec!["--duration", "1e300s"], 1, "--duration: duration must be a finite number in (0, 86400] s, found 1e300"),
        (vec!["--duration", "1e308m"], 2, "expected a duration like 60s"),
        (vec!["--duration", "86400s", "--rate-scale", "1000"], 1, "would generate about 4.320e9 arrivals"),
    ] {
        let o = parva(&[&base[..], &extra[..]].concat());
        assert_eq!(o.status.code(), Some(code), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{extra:?}: expected {want:?} in\n{}", stderr(&o));
        assert!(!out.exists(), "{extra:?} wrote {}", out.display());
    }
}

// Issue 18: a plan explains itself (costs by service summing to its GPCs, layouts, bound), and a
// service whose SLO sets its cost gets a sensitivity line whose claim holds when re-planned.
#[test]
fn plan_report_costs_sum_to_the_plan_and_the_sensitivity_claim_holds_when_replanned() {
    let d = tempfile::tempdir().unwrap();
    let services = d.path().join("services.csv");
    std::fs::write(&services, "service,model,rate,slo_ms\nchat,bert,200,40\nthumbs,mobilenetv2,500,60\n").unwrap();
    let out = d.path().join("plan.csv");
    let args = |svc: &std::path::Path| {
        vec![
            "plan".to_string(), "--prof-data".into(), "prof_data/example".into(), "--services".into(), svc.display().to_string(),
            "--gpu".into(), "a100-80gb".into(), "--out".into(), out.display().to_string(), "--json".into(),
        ]
    };
    let run = |svc: &std::path::Path| {
        let a = args(svc);
        let o = crate::util::parva(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(o.status.code(), Some(0), "{}", crate::util::stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let v = run(&services);
    let r = &v["report"];
    let gpcs: u64 = r["services"].as_array().unwrap().iter().map(|s| s["gpcs"].as_u64().unwrap()).sum();
    assert_eq!(gpcs, v["gpcs"].as_u64().unwrap(), "per-service costs must sum to the plan's GPCs");
    assert_eq!(r["services"][0]["service"], "chat", "most costly first");
    assert_eq!(r["layouts"].as_array().unwrap().len() as u64, v["gpus"].as_u64().unwrap());
    assert!(r["headline"].as_str().unwrap().contains("latency model queueing"), "{r}");
    assert!(r["warnings"][0].as_str().unwrap().starts_with("chat: "), "{r}");
    let s = &v["sensitivity"][0];
    assert_eq!(s["service"], "chat");
    let (relaxed_slo, relaxed_gpus) = (s["relaxed_slo_ms"].as_f64().unwrap(), s["relaxed_gpus"].as_u64().unwrap());
    assert!(relaxed_gpus < v["gpus"].as_u64().unwrap());
    // The claim, checked by planning again with the suggested SLO.
    let relaxed = d.path().join("relaxed.csv");
    std::fs::write(&relaxed, format!("service,model,rate,slo_ms\nchat,bert,200,{relaxed_slo}\nthumbs,mobilenetv2,500,60\n")).unwrap();
    assert_eq!(run(&relaxed)["gpus"].as_u64().unwrap(), relaxed_gpus);
}

// Issue 18: a 30-service plan under `--algorithm parvagpu` failed 5 services in simulation and
// nothing said so. Now the plan names them, and they are exactly those `parva simulate` fails.
#[test]
fn parvagpu_plans_name_the_services_the_simulator_says_miss_and_simulate_agrees() {
    let Some(dir) = crate::util::reference_dir() else { return };
    let d = tempfile::tempdir().unwrap();
    let prof = dir.join("prof_data");
    let fleet = std::process::Command::new("python3")
        .args(["scripts/gen_fleet.py", prof.to_str().unwrap(), "30", "3"])
        .current_dir(crate::util::repo())
        .output()
        .unwrap();
    assert!(fleet.status.success());
    let services = d.path().join("services.csv");
    std::fs::write(&services, &fleet.stdout).unwrap();
    let map = d.path().join("plan.csv");
    let o = crate::util::parva(&[
        "plan", "--prof-data", prof.to_str().unwrap(), "--services", services.to_str().unwrap(), "--gpu-type", "a100-80gb",
        "--algorithm", "parvagpu", "--out", map.to_str().unwrap(), "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", crate::util::stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut named: Vec<String> =
        v["simulated_misses"].as_array().unwrap().iter().map(|m| m["service"].as_str().unwrap().to_string()).collect();
    assert!(!named.is_empty(), "this fleet misses under ParvaGPU's rule: {v}");
    let warning = v["report"]["warnings"].as_array().unwrap().iter().find_map(|w| w.as_str().filter(|w| w.starts_with("the simulator says")));
    assert!(warning.is_some_and(|w| named.iter().all(|n| w.contains(n.as_str()))), "{v}");
    let o = crate::util::parva(&[
        "simulate", "--map", map.to_str().unwrap(), "--prof-data", prof.to_str().unwrap(), "--services", services.to_str().unwrap(),
        "--duration", "30s", "--warmup", "5s", "--json",
    ]);
    let sim: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut failing: Vec<String> = sim["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["p99_ms"].as_f64().unwrap() > s["slo_ms"].as_f64().unwrap())
        .map(|s| s["service"].as_str().unwrap().to_string())
        .collect();
    named.sort();
    failing.sort();
    assert_eq!(named, failing);
}

/// Issue 38: planning `a100-80gb` on tables whose metadata records an H100 gave no warning.
#[test]
fn plan_warns_when_the_tables_were_measured_on_another_gpu_type() {
    let d = tempfile::tempdir().unwrap();
    let services = d.path().join("s.csv");
    std::fs::write(&services, "service,model,rate,slo_ms\nqa,bert,50,200\n").unwrap();
    let tables = repo().join("prof_data/h100-80gb-mps");
    let run = |gpu: &str| parva(&["plan", "--prof-data", tables.to_str().unwrap(), "--services", services.to_str().unwrap(), "--gpu-type", gpu, "--out", d.path().join(format!("{gpu}.csv")).to_str().unwrap()]);
    let o = run("a100-80gb");
    assert!(stderr(&o).contains("warning: the table of bert in") && stderr(&o).contains("was measured on h100-80gb (its bert.meta.json), not on a100-80gb"), "{}", stderr(&o));
    for same in ["h100-80gb", "h100-80gb-nomig"] {
        let o = run(same);
        assert!(!stderr(&o).contains("was measured on"), "{same}: {}", stderr(&o));
    }
}

/// Issue 38: `plan --headroom H` plans each service for rate x (1 + H); the map's rate column
/// keeps the rates asked for, and each service's capacity covers the higher rate.
#[test]
fn plan_with_headroom_has_capacity_for_the_higher_rate_and_records_the_rate_asked_for() {
    let d = tempfile::tempdir().unwrap();
    let services = repo().join("deployment/example/services.csv");
    let plan = |extra: &[&str], out: &str| {
        let out = d.path().join(out);
        let args = [&["plan", "--prof-data", "prof_data/example", "--services", services.to_str().unwrap(), "--gpu-type", "a100-80gb", "--gpus-per-node", "16", "--out", out.to_str().unwrap()][..], extra].concat();
        let o = parva(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        (std::fs::read_to_string(&out).unwrap(), stderr(&o))
    };
    let (plain, _) = plan(&[], "plain.csv");
    let (roomy, err) = plan(&["--headroom", "0.5"], "roomy.csv");
    assert!(err.contains("note: planned with --headroom 0.5: each service for 1.50x its rate"), "{err}");
    let rows = |map: &str| -> Vec<(String, f64, f64)> {
        let mut r = csv::Reader::from_reader(map.as_bytes());
        let h = r.headers().unwrap().clone();
        let col = |n: &str| h.iter().position(|c| c == n).unwrap();
        let (sv, tp, rt) = (col("service"), col("throughput"), col("rate"));
        r.records().map(|x| x.unwrap()).map(|x| (x[sv].to_string(), x[tp].parse().unwrap(), x[rt].parse().unwrap())).collect()
    };
    let asked: std::collections::BTreeMap<String, f64> =
        std::fs::read_to_string(&services).unwrap().lines().skip(1).map(|l| { let c: Vec<&str> = l.split(',').collect(); (c[0].to_string(), c[2].parse().unwrap()) }).collect();
    for (service, rate) in &asked {
        let seg: Vec<(String, f64, f64)> = rows(&roomy).into_iter().filter(|r| &r.0 == service).collect();
        assert!(seg.iter().all(|r| r.2 == *rate), "{service}: the map records the rate asked for");
        let capacity: f64 = seg.iter().map(|r| r.1).sum();
        assert!(capacity >= 1.5 * rate * 0.999, "{service}: capacity {capacity} for 1.5 x {rate}");
    }
    assert!(rows(&roomy).len() >= rows(&plain).len());
    let o = parva(&["plan", "--prof-data", "prof_data/example", "--services", services.to_str().unwrap(), "--gpu-type", "a100-80gb", "--headroom", "11"]);
    assert!(!o.status.success() && stderr(&o).contains("--headroom must be a number in [0, 10]"), "{}", stderr(&o));
}

/// Issue 38: `plan --compare` shows every planner and latency rule side by side, each plan
/// simulated; a rule without queueing that misses is named with its misses.
#[test]
fn plan_compare_plans_and_simulates_every_rule_side_by_side_and_writes_no_map() {
    let d = tempfile::tempdir().unwrap();
    let o = parva_in(d.path(), &["plan", "--prof-data", repo().join("prof_data/example").to_str().unwrap(), "--services",
        repo().join("deployment/example/tight-slo.csv").to_str().unwrap(), "--gpu-type", "a100-80gb", "--compare", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let rows = v["compare"].as_array().unwrap();
    let row = |a: &str, l: &str| rows.iter().find(|r| r["algorithm"] == a && r["latency_model"] == l).unwrap_or_else(|| panic!("no {a}/{l} in {v}"));
    assert_eq!(rows.len(), 3, "no gpu-let row on a MIG type: {v}");
    // The default row is the plain plan: 4 GPUs, both services within their SLO.
    let q = row("optimal", "queueing");
    assert_eq!((q["gpus"].as_u64(), q["meeting_slo"].as_u64(), q["services"].as_u64()), (Some(4), Some(2), Some(2)), "{q}");
    // Under ParvaGPU's rule the exact planner needs no more GPUs than ParvaGPU's own planner, and
    // the simulator names chat's miss.
    let (op, pp) = (row("optimal", "parvagpu"), row("parvagpu", "parvagpu"));
    assert!(op["gpus"].as_u64() <= pp["gpus"].as_u64(), "{v}");
    assert_eq!(op["misses"][0]["service"], "chat", "{op}");
    assert!(op["misses"][0]["p99_ms"].as_f64().unwrap() > 40.0);
    assert!(std::fs::read_dir(d.path()).unwrap().next().is_none(), "--compare wrote a file");
    // A type without MIG adds gpu-let's heuristic.
    let o = parva(&["plan", "--prof-data", "prof_data/example-mps", "--services", "scripts/bench/mps-services.csv", "--gpu-type", "l4-24gb", "--compare", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap_or_else(|_| panic!("{}", stderr(&o)));
    assert!(v["compare"].as_array().unwrap().iter().any(|r| r["algorithm"] == "gpulet"), "{v}");
    // It writes no map, so --out makes no sense with it.
    let o = parva(&["plan", "--prof-data", "prof_data/example", "--services", "deployment/example/tight-slo.csv", "--gpu-type", "a100-80gb", "--compare", "--out", "x.csv"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
