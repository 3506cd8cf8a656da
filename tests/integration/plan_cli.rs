//! `parva plan` on the repository's own fixtures: outputs, golden maps and every bad-input path.

use std::path::Path;

use crate::util::{fixture, parva, parva_in, repo, stderr, stdout};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn golden_example_plan_is_reproduced() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("deploy.csv");
    let o = parva(&[
        "plan", "--prof-data", "prof_data/example", "--services", "deployment/example/services.csv",
        "--gpu", "a100-80gb", "--algorithm", "parvagpu", "--out", s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = std::fs::read_to_string(&out).unwrap();
    let golden = repo().join("tests/golden/example_parvagpu.csv");
    if std::env::var_os("PARVA_BLESS").is_some() {
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(got, want, "plan differs from {} (PARVA_BLESS=1 rewrites it)", golden.display());
}

#[test]
fn json_summary_has_the_documented_fields() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("m.csv");
    let o = parva(&[
        "plan", "--prof-data", s(&fixture("profiles/good")), "--services", s(&fixture("services/good.csv")),
        "--gpu", "a100-80gb", "--out", s(&out), "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
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
    assert!(o.status.success(), "{}", stderr(&o));
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
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let ids: Vec<&str> = v.as_array().unwrap().iter().map(|g| g["gpu_type"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        ["a100-40gb", "a100-80gb", "h100-80gb", "h100-94gb", "h200-141gb", "a30-24gb", "h100-pcie-80gb", "a800-40gb", "a800-80gb", "h800-80gb", "h800-pcie-80gb"]
    );
    // Each type lists the products recognised as it, with their PCI device ids.
    assert_eq!(v[0]["products"][0]["pci_device_id"], "0x20B010DE");
    assert_eq!(v[0]["products"][0]["name"], "NVIDIA A100-SXM4-40GB");
}
