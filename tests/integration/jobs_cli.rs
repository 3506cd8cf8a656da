//! Issue 15: best-effort jobs. `parva plan --jobs` puts them on the GPCs the plan leaves idle,
//! never changing the plan; `parva simulate --rates --jobs` reports what they get over a day;
//! `parva-worker --job train|batch` runs them, checkpoints and resumes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use parva_core::DeploymentMap;
use serde_json::Value;

use crate::util::{parva, repo, stderr, stdout, torch_worker};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const JOBS: &str = "job,model,kind,min_gpcs,max_gpcs,priority\nfinetune,bert,train,1,7,10\nscore,resnet50,batch,1,3,5\n";

fn plan(dir: &Path, name: &str, extra: &[&str]) -> std::process::Output {
    let out = dir.join(name);
    let mut args = vec![
        "plan", "--prof-data", "prof_data/example", "--services", "deployment/example/services.csv", "--gpu-type", "a100-80gb",
        "--out", s(&out),
    ];
    args.extend_from_slice(extra);
    parva(&args)
}

#[test]
fn plan_with_jobs_fills_idle_gpcs_legally_and_leaves_the_plan_as_it_was() {
    let d = tempfile::tempdir().unwrap();
    let jobs = d.path().join("jobs.csv");
    std::fs::write(&jobs, JOBS).unwrap();
    let o = plan(d.path(), "plain.csv", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Three more GPUs than the plan's 8: the jobs get them whole.
    let o = plan(d.path(), "jobs.csv.map", &["--jobs", s(&jobs), "--cluster-gpus", "11", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let (plain, _) = DeploymentMap::read(&d.path().join("plain.csv")).unwrap();
    let (with, _) = DeploymentMap::read(&d.path().join("jobs.csv.map")).unwrap();
    assert_eq!(with.segments, plain.segments, "jobs never change the plan");
    assert!(with.check_layouts(parva_core::GpuType::by_id("a100-80gb").unwrap()).is_empty());
    let j = &v["jobs"];
    assert_eq!(j["cluster_gpus"], 11);
    // Every GPC of the 11 GPUs serves or runs a job (the holes of the plan and the 3 idle GPUs).
    let gpcs = |k: &str| j[k].as_u64().unwrap();
    assert_eq!(gpcs("serving_gpcs") + gpcs("job_gpcs") + gpcs("idle_gpcs"), 77);
    assert!(gpcs("job_gpcs") >= 21, "{j}");
    let slots: Vec<_> = with.jobs.iter().filter(|s| s.node * 8 + s.gpu >= 8).collect();
    assert_eq!(slots.iter().map(|s| s.instance_size as u32).sum::<u32>(), 21, "the idle GPUs go to jobs whole");
    // Sizes stay within each job's bounds, and the higher priority gets the most.
    assert!(with.jobs.iter().all(|s| s.job != "score" || s.instance_size <= 3));
    let of = |job: &str| with.jobs.iter().filter(|s| s.job == job).map(|s| s.instance_size as u32).sum::<u32>();
    assert!(of("finetune") > of("score") && of("score") > 0, "{} {}", of("finetune"), of("score"));
    // ParvaGPU's format has no place for them.
    let o = plan(d.path(), "pg.csv", &["--jobs", s(&jobs), "--format", "parvagpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("ParvaGPU's format has no best-effort rows"), "{}", stderr(&o));
    let text = std::fs::read_to_string(d.path().join("pg.csv")).unwrap();
    assert!(text.starts_with("Num instance,Num GPU,Model,") && !text.contains("finetune"));
    assert_eq!(text.lines().count(), plain.segments.len() + 1);
}

#[test]
fn a_bad_job_list_is_refused_naming_its_line_and_nothing_is_written() {
    let d = tempfile::tempdir().unwrap();
    let jobs = d.path().join("jobs.csv");
    for (text, want) in [
        ("job,model,kind,min_gpcs,max_gpcs,priority\nft,gpt9,train,1,7,1\n", "jobs.csv:2: field `model`: model \"gpt9\" has no profile table"),
        ("job,model,kind,min_gpcs,max_gpcs,priority\nft,bert,train,5,3,1\n", "jobs.csv:2: field `max_gpcs`: max_gpcs 3 is below min_gpcs 5"),
    ] {
        std::fs::write(&jobs, text).unwrap();
        let o = plan(d.path(), "map.csv", &["--jobs", s(&jobs)]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains(want), "{}", stderr(&o));
        assert!(!d.path().join("map.csv").exists());
    }
}

#[test]
fn a_day_with_jobs_gives_them_what_follow_frees_and_serves_static_as_without_them() {
    let d = tempfile::tempdir().unwrap();
    let jobs = d.path().join("jobs.csv");
    std::fs::write(&jobs, JOBS).unwrap();
    let trace = d.path().join("trace.csv");
    // A deep trough (a tenth of the peak): at 1,500 req/s the plan for 1,650 (10 % headroom)
    // still needs the static plan's 8 GPUs, at 300 it frees GPCs for the jobs.
    std::fs::write(&trace, "time_s,service,rate\n0,photo-tags,300\n2400,photo-tags,3000\n4800,photo-tags,300\n").unwrap();
    let day = |extra: &[&str]| {
        let mut args = vec![
            "simulate", "--rates", s(&trace), "--services", "deployment/example/services.csv", "--prof-data", "prof_data/example",
            "--gpu-type", "a100-80gb", "--duration", "2h", "--sample", "2s", "--warmup", "1s", "--json",
        ];
        args.extend_from_slice(extra);
        let o = parva(&args);
        assert!(matches!(o.status.code(), Some(0) | Some(3)), "{}", stderr(&o));
        serde_json::from_str::<Value>(&stdout(&o)).unwrap()
    };
    let with = day(&["--jobs", s(&jobs)]);
    let without = day(&[]);
    let pol = |v: &Value, name: &str| v["policies"].as_array().unwrap().iter().find(|p| p["policy"] == name).unwrap().clone();
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap();
    let (st, fo) = (pol(&with, "static"), pol(&with, "forecast"));
    assert!(with["cluster_gpus"].as_u64().unwrap() >= 1);
    assert_eq!(st["services"], pol(&without, "static")["services"], "jobs on MIG leave serving as it was");
    assert!(f(&fo, "job_gpu_hours") > f(&st, "job_gpu_hours"), "{} {}", fo["job_gpu_hours"], st["job_gpu_hours"]);
    assert!(f(&fo, "job_samples") > 0.0 && f(&fo, "goodput_rps") > 0.0);
    assert!(without["cluster_gpus"].is_null());
}

/// Progress lines of a job worker on the linear fixture.
fn job_lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn job_cmd(bin: &Path, ckpt: &Path, steps: Option<u64>) -> Command {
    let fixtures = repo().join("models/fixtures");
    let mut c = Command::new(bin);
    c.args(["--job", "train", "--checkpoint", s(ckpt), "--model", s(&fixtures.join("linear.pt")), "--model-meta"])
        .arg(fixtures.join("linear.json"))
        .args(["--max-batch", "16", "--lr", "0.05", "--report-every", "0.000001", "--threads", "1"]);
    if let Some(n) = steps {
        c.args(["--steps", &n.to_string()]);
    }
    c
}

#[test]
fn a_train_job_lowers_its_loss_checkpoints_and_resumes_where_it_stopped() {
    let Some(bin) = torch_worker() else { return };
    let d = tempfile::tempdir().unwrap();
    let ckpt = d.path().join("ckpt");
    let o = job_cmd(&bin, &ckpt, Some(200)).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = job_lines(&o.stdout);
    let losses: Vec<f64> = lines.iter().filter(|l| l["event"] == "progress").filter_map(|l| l["loss"].as_f64()).collect();
    assert!(losses.len() >= 2, "{lines:?}");
    assert!(losses[losses.len() - 1] < 0.6 * losses[0], "the loss goes down: {} -> {}", losses[0], losses[losses.len() - 1]);
    let last = lines.last().unwrap();
    assert_eq!((last["event"].as_str(), last["step"].as_u64()), (Some("stopped"), Some(200)));
    // Resumed: starts at step 200 with the trained weights (its loss where it left off).
    let o = job_cmd(&bin, &ckpt, Some(250)).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = job_lines(&o.stdout);
    assert_eq!(lines[0]["resumed_step"], 200);
    let first = lines.iter().find(|l| l["event"] == "progress").unwrap()["loss"].as_f64().unwrap();
    assert!(first < 0.8 * losses[0], "resumed from the trained weights: {first} vs {}", losses[0]);
    assert_eq!(lines.last().unwrap()["step"], 250);
    // A checkpoint of another kind of job is not resumed by mistake.
    let fixtures = repo().join("models/fixtures");
    let o = Command::new(&bin)
        .args(["--job", "batch", "--checkpoint", s(&ckpt), "--model", s(&fixtures.join("linear.pt")), "--model-meta"])
        .arg(fixtures.join("linear.json"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("holds a checkpoint of a train job of model linear, not of a batch job"), "{}", stderr(&o));
}

#[test]
fn sigterm_stops_a_job_with_a_checkpoint_within_its_grace() {
    let Some(bin) = torch_worker() else { return };
    let d = tempfile::tempdir().unwrap();
    let ckpt = d.path().join("ckpt");
    let mut child = job_cmd(&bin, &ckpt, None).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // Wait until it trains.
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the job ended before training");
        if line.contains("\"progress\"") {
            break;
        }
    }
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let asked = Instant::now();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(asked.elapsed() < Duration::from_secs(5), "stopped in {:?}", asked.elapsed());
    assert!(status.success(), "{status:?}");
    let last: Value = serde_json::from_str(rest.lines().last().unwrap()).unwrap();
    assert_eq!(last["reason"], "signal");
    let state: Value = serde_json::from_str(&std::fs::read_to_string(ckpt.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["step"], last["step"], "the checkpoint holds every step made");
    assert!(ckpt.join("model.pt").is_file());
}

#[test]
fn replan_with_jobs_keeps_the_jobs_that_fit_and_reclaims_first_what_new_segments_need() {
    let d = tempfile::tempdir().unwrap();
    let jobs = d.path().join("jobs.csv");
    std::fs::write(&jobs, JOBS).unwrap();
    let o = plan(d.path(), "m1.csv", &["--jobs", s(&jobs), "--cluster-gpus", "10"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let services = std::fs::read_to_string(repo().join("deployment/example/services.csv")).unwrap();
    let grown = d.path().join("s2.csv");
    std::fs::write(&grown, services.replace("photo-tags,resnet50,3000", "photo-tags,resnet50,6000")).unwrap();
    let from = d.path().join("m1.csv");
    let replan = |out: &str, extra: &[&str]| {
        let o = d.path().join(out);
        let mut args = vec![
            "replan", "--from", s(&from), "--prof-data", "prof_data/example", "--services", s(&grown),
            "--gpu-type", "a100-80gb", "--out", s(&o), "--json",
        ];
        args.extend_from_slice(extra);
        let o = parva(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        o
    };
    let o = replan("m2.csv", &["--jobs", s(&jobs), "--cluster-gpus", "10"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let plain = replan("plain.csv", &[]);
    assert!(stderr(&plain).contains("best-effort instances; without --jobs the new map has none"), "{}", stderr(&plain));
    let (m1, _) = DeploymentMap::read(&d.path().join("m1.csv")).unwrap();
    let (m2, _) = DeploymentMap::read(&d.path().join("m2.csv")).unwrap();
    let (p2, _) = DeploymentMap::read(&d.path().join("plain.csv")).unwrap();
    assert_eq!(m2.segments, p2.segments, "jobs never change the serving plan");
    assert!(p2.jobs.is_empty());
    assert!(m2.check_layouts(parva_core::GpuType::by_id("a100-80gb").unwrap()).is_empty());
    let j = &v["jobs"];
    let n = |k: &str| j[k].as_array().unwrap().len();
    assert!(n("reclaimed") > 0, "the grown service needs GPCs the jobs held: {j}");
    assert_eq!(j["kept"].as_u64().unwrap() as usize + n("reclaimed") + n("stopped"), m1.jobs.len());
    // Every reclaimed instance overlaps a segment the new map has and the old one had not.
    for r in j["reclaimed"].as_array().unwrap() {
        let (g, node) = (r["gpu"].as_u64().unwrap() as u32, r["node"].as_u64().unwrap() as u32);
        assert!(m2.segments.iter().any(|s| (s.node, s.gpu) == (node, g) && !m1.segments.contains(s)), "{r}");
    }
}
