//! Issue 14: `parva replan` re-plans a running map for new rates with the fewest GPUs, then the
//! fewest changes, and writes the transition.

use std::path::Path;

use crate::util::{parva, stderr, stdout};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The example services with the rate of `service` multiplied by `k`, written to `dir`.
fn services(dir: &Path, service: &str, k: f64) -> std::path::PathBuf {
    let text = std::fs::read_to_string("deployment/example/services.csv").unwrap();
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        if i > 0 && f[0] == service {
            let rate: f64 = f[2].parse().unwrap();
            out.push_str(&format!("{},{},{},{}\n", f[0], f[1], rate * k, f[3]));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    let path = dir.join(format!("services-{service}-{k}.csv"));
    std::fs::write(&path, out).unwrap();
    path
}

fn plan(services: &Path, out: &Path) -> serde_json::Value {
    let o = parva(&[
        "plan", "--prof-data", "prof_data/example", "--services", s(services), "--gpu-type", "a100-80gb", "--out", s(out), "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

fn replan(from: &Path, services: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["replan", "--from", s(from), "--prof-data", "prof_data/example", "--services", s(services), "--gpu-type", "a100-80gb"];
    args.extend_from_slice(extra);
    parva(&args)
}

#[test]
fn a_replan_for_the_same_rates_keeps_every_segment_and_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let svc = Path::new("deployment/example/services.csv");
    let old = d.path().join("old.csv");
    plan(svc, &old);
    let new = d.path().join("new.csv");
    let o = replan(&old, svc, &["--out", s(&new), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!((v["destroyed"].as_u64(), v["created"].as_u64()), (Some(0), Some(0)), "{v}");
    assert!(v["transition"]["steps"].as_array().unwrap().is_empty(), "{v}");
    let sorted = |p: &Path| {
        let mut l: Vec<String> = std::fs::read_to_string(p).unwrap().lines().map(String::from).collect();
        l.sort();
        l
    };
    assert_eq!(sorted(&old), sorted(&new));
}

#[test]
fn a_replan_for_a_higher_rate_is_the_fewest_gpus_keeps_the_rest_in_place_and_writes_a_legal_map_and_transition() {
    let d = tempfile::tempdir().unwrap();
    let old = d.path().join("old.csv");
    plan(Path::new("deployment/example/services.csv"), &old);
    // search-ranking at twice its rate: the fewest GPUs move some of the other services' segments,
    // one more GPU keeps every one of them (the plans of 2026-11-26's latency model).
    let svc = services(d.path(), "search-ranking", 2.0);
    let fresh = plan(&svc, &d.path().join("fresh.csv"));
    let (new, tr) = (d.path().join("new.csv"), d.path().join("transition.json"));
    let o = replan(&old, &svc, &["--out", s(&new), "--transition", s(&tr)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with(&format!("replan: {} GPUs (was ", fresh["gpus"])), "{text}");
    assert!(text.contains("steps written to") && text.contains(&format!("wrote {}", new.display())), "{text}");
    let o = parva(&["validate", "--map", s(&new), "--gpu-type", "a100-80gb"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    // At the fewest GPUs most segments stay; with two more GPUs allowed, every segment of the
    // services whose rates did not change stays where it was, and the report shows both choices.
    let v: serde_json::Value = serde_json::from_str(&stdout(&replan(&old, &svc, &["--json"]))).unwrap();
    assert!(v["kept"].as_array().unwrap().len() > v["destroyed"].as_u64().unwrap() as usize, "{v}");
    assert_eq!((&v["gpus"], &v["fewest_gpus"]), (&fresh["gpus"], &fresh["gpus"]), "{v}");
    assert!(v["freed_gpus"].as_array().unwrap().is_empty() && v["idle_gpcs"].is_u64(), "the load rose: nothing freed: {v}");
    let (new2, tr2) = (d.path().join("new2.csv"), d.path().join("t2.json"));
    let o = replan(&old, &svc, &["--out", s(&new2), "--transition", s(&tr2), "--max-extra-gpus", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("(chosen)") && text.contains(&format!("\n{:<8}", fresh["gpus"])), "{text}");
    assert!(text.contains(&format!("more than the fewest, {} (", fresh["gpus"])), "{text}");
    let old_text = std::fs::read_to_string(&old).unwrap();
    let new_text = std::fs::read_to_string(&new2).unwrap();
    for line in old_text.lines().skip(1).filter(|l| !l.contains(",search-ranking,")) {
        assert!(new_text.lines().any(|n| n == line), "moved or changed: {line}\nnew map:\n{new_text}");
    }
    // The transition: creates before the drains they do not need, every service served, the new rate met at the end.
    let t: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&tr).unwrap()).unwrap();
    let steps = t["steps"].as_array().unwrap();
    assert!(steps.iter().any(|s| s["action"] == "create"), "{t}");
    for svc in t["services"].as_array().unwrap() {
        assert_eq!(svc["seconds_unserved"].as_f64(), Some(0.0), "{svc}");
        assert!(svc["capacity_after"].as_f64().unwrap() >= svc["rate"].as_f64().unwrap(), "{svc}");
    }
    assert!(t["seconds"].as_f64().unwrap() > 0.0 && t["costs"]["worker_start"].as_f64() == Some(2.0), "{t}");
}

#[test]
fn a_replan_refuses_a_map_for_another_gpu_type_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let svc = Path::new("deployment/example/services.csv");
    let old = d.path().join("old.csv");
    plan(svc, &old);
    let other = d.path().join("other.csv");
    std::fs::write(&other, std::fs::read_to_string(&old).unwrap().replace(",a100-80gb,", ",h100-80gb,")).unwrap();
    let (new, tr) = (d.path().join("new.csv"), d.path().join("t.json"));
    let o = replan(&other, svc, &["--out", s(&new), "--transition", s(&tr)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("segment 1") && e.contains("the map is for GPU type h100-80gb, the replan for a100-80gb") && e.contains("nothing written"), "{e}");
    assert!(!new.exists() && !tr.exists());
    // A bad cost is a usage error naming the key.
    let o = replan(&old, svc, &["--cost", "mig-create=soon"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("mig-create: \"soon\" is not a number of seconds"), "{}", stderr(&o));
}
