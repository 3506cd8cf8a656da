//! Issue 21: the serving data path as a measured input. A `data_path.csv` beside the profile
//! tables and `--models` make `plan` plan each service short of its SLO by its requests' cost
//! (bytes from the model metadata) and `simulate` add that cost to every request; a bad table is
//! refused with its line and field before anything is written.

use std::path::Path;

use crate::util::{parva, repo, stderr, stdout};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A profile directory with resnet50's example table and `data_path` as its data_path.csv.
fn prof(dir: &Path, data_path: Option<&str>) -> std::path::PathBuf {
    let p = dir.join("prof");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::copy(repo().join("prof_data/example/resnet50.csv"), p.join("resnet50.csv")).unwrap();
    if let Some(text) = data_path {
        std::fs::write(p.join("data_path.csv"), text).unwrap();
    }
    p
}

const SERVICES: &str = "service,model,rate,slo_ms\nimages,resnet50,300,200\n";
/// 4 ms per request plus 10 ms per MiB: a resnet50 request (602,112 + 4,000 bytes) costs 9.78 ms
/// over binary; 1 ms + 1 ms/MiB over shm.
const TABLE: &str = "wire,per_request_us,per_mib_us\nbinary,4000,10000\nshm,1000,1000\n";

fn binary_cost_ms() -> f64 {
    4.0 + 10.0 * (602_112.0 + 4_000.0) / 1_048_576.0
}

fn plan(dir: &Path, prof: &Path, extra: &[&str]) -> (std::process::Output, std::path::PathBuf) {
    let services = dir.join("services.csv");
    std::fs::write(&services, SERVICES).unwrap();
    let out = dir.join(format!("map-{}.csv", extra.len()));
    let mut args = vec!["plan", "--prof-data", s(prof), "--services", s(&services), "--gpu-type", "a100-80gb", "--out", s(&out), "--json"];
    args.extend_from_slice(extra);
    (parva(&args), out)
}

#[test]
fn the_data_path_is_planned_for_like_a_margin_and_simulated_on_every_request() {
    let d = tempfile::tempdir().unwrap();
    let p = prof(d.path(), Some(TABLE));
    let models = repo().join("models");
    let (o, map) = plan(d.path(), &p, &["--models", s(&models)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let svc = &summary["services"][0];
    let want = 0.05 * 200.0 + binary_cost_ms();
    assert!((svc["margin_ms"].as_f64().unwrap() - want).abs() < 1e-6, "margin = 5 % + data path = {want}: {svc}");
    assert!(summary["report"]["headline"].as_str().unwrap().contains("data path"), "{summary}");
    // The map carries it for the router (`margin_ms`, the last column).
    let text = std::fs::read_to_string(&map).unwrap();
    assert!(text.lines().next().unwrap().ends_with(",margin_ms"), "{text}");
    for row in text.lines().skip(1) {
        let m: f64 = row.rsplit(',').next().unwrap().parse().unwrap();
        assert!((m - want).abs() < 1e-3, "{row} vs {want}");
    }

    // Without --models the table cannot be used: said, and the plan is the margin's alone.
    let (o2, _) = plan(d.path(), &p, &[]);
    assert_eq!(o2.status.code(), Some(0), "{}", stderr(&o2));
    assert!(stderr(&o2).contains("give --models DIR"), "{}", stderr(&o2));
    let plain: serde_json::Value = serde_json::from_str(&stdout(&o2)).unwrap();
    assert!((plain["services"][0]["margin_ms"].as_f64().unwrap() - 10.0).abs() < 1e-9, "{plain}");

    // The simulator adds each request's cost: p50 moves by the cost of the wire asked for.
    let sim = |wire: &str, with_models: bool| {
        let mut args = vec!["simulate", "--map", s(&map), "--prof-data", s(&p), "--duration", "10s", "--warmup", "1s", "--json", "--data-path-wire", wire];
        if with_models {
            args.extend_from_slice(&["--models", s(&models)]);
        }
        let o = parva(&args);
        assert!(matches!(o.status.code(), Some(0) | Some(3)), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        v["services"][0]["p50_ms"].as_f64().unwrap()
    };
    let base = sim("binary", false);
    assert!((sim("binary", true) - base - binary_cost_ms()).abs() < 0.05, "binary");
    assert!((sim("shm", true) - base - (1.0 + (602_112.0 + 4_000.0) / 1_048_576.0)).abs() < 0.05, "shm");
    // A wire the table has no row for adds nothing.
    assert!((sim("json", true) - base).abs() < 1e-9);
}

#[test]
fn a_bad_data_path_table_is_refused_with_its_line_and_field_and_no_map_is_written() {
    let d = tempfile::tempdir().unwrap();
    let p = prof(d.path(), Some("wire,per_request_us,per_mib_us\nbinary,4000,10000\nshm,1000,-5\n"));
    let (o, map) = plan(d.path(), &p, &["--models", s(&repo().join("models"))]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("data_path.csv:3: field `per_mib_us`: -5 is outside"), "{err}");
    assert!(!map.exists());
    // A cost that leaves nothing of the SLO is refused, naming the service.
    let p2 = prof(&d.path().join("two"), Some("wire,per_request_us,per_mib_us\nbinary,250000,0\n"));
    let (o, map) = plan(d.path(), &p2, &["--models", s(&repo().join("models"))]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("service \"images\": its data path takes 250.000 ms"), "{}", stderr(&o));
    assert!(!map.exists());
}
