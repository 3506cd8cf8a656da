//! `parva profile` end to end, as real processes: the torch worker on the tiny TorchScript
//! fixture on the CPU (`--partition none`), and the emulated backend on fake MIG GPUs.

use std::path::Path;

use parva_core::profile::ProfileSet;
use serde_json::Value;

use crate::util::{parva, stderr, stdout, torch_worker};

const QUICK: [&str; 8] = ["--min-seconds", "0.2", "--max-seconds", "2", "--warmup-seconds", "0.05", "--target-ci", "0.25"];

fn profile(out: &Path, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_parva"));
    cmd.current_dir(crate::util::repo()).arg("profile").args(QUICK).arg("--out").arg(out).args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run parva profile")
}

fn rows(out: &Path, model: &str) -> Vec<Vec<String>> {
    let mut r = csv::Reader::from_path(out.join(format!("{model}.csv"))).unwrap();
    r.records().map(|rec| rec.unwrap().iter().map(str::to_string).collect()).collect()
}

/// (size, batch, procs, status, note) of every row.
fn statuses(out: &Path, model: &str) -> Vec<(String, String, String, String, String)> {
    rows(out, model).into_iter().map(|r| (r[0].clone(), r[1].clone(), r[2].clone(), r[5].clone(), r[13].clone())).collect()
}

fn metadata(out: &Path, model: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join(format!("{model}.meta.json"))).unwrap()).unwrap()
}

#[test]
fn torch_on_cpu_writes_a_table_the_planner_reads_resumes_and_records_a_crashed_worker() {
    if torch_worker().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cpu");
    let grid = ["--model", "models/fixtures/linear.pt", "--partition", "none", "--device", "cpu", "--batches", "1,4", "--procs", "1,2"];
    let o = profile(&out, &grid, &[]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("4 points: 4 measured, 0 resumed"), "{}", stdout(&o));
    // The planner's reader takes the directory as a profile set.
    let set = ProfileSet::read_dir(&out, None).unwrap();
    let t = set.get("linear").unwrap();
    assert_eq!(t.points.len(), 4);
    for p in &t.points {
        assert!(p.is_measured(), "{p:?}");
        // Closed loop: a process runs one batch at a time, so its throughput is at most batch /
        // mean latency. The loop's own overhead only lowers it, by how much depends on the
        // machine's load: no lower bound here (issue 19). Room above 1: the throughput is a mean
        // of per-round rates and the latency a mean over batches, which part at ~0.1 ms batches
        // on a loaded machine (1.002 and 1.022 seen in loaded suite runs). A segment figure
        // (x processes: 2 on the 2-process points) would be far above. A point the profiler
        // marks as not converged (its note: "ci N% above the target at the cap") parts further
        // (1.38 seen in a clean clone's CI run, a 2-process point of ~0.16 ms batches): it keeps
        // only the bound that still tells a process's figure from a segment's.
        let ratio = p.throughput * p.latency_s / p.batch as f64;
        let converged = p.extra.iter().all(|e| !e.contains("above the"));
        let bound = if converged { 1.25 } else { 1.75 };
        assert!(p.throughput > 0.0 && ratio <= bound, "{p:?}: throughput x latency / batch = {ratio} (bound {bound})");
        assert_eq!(p.extra[0], "measured");
        assert!(p.extra[3].parse::<f64>().unwrap() > 10.0, "peak RSS of the workers in MiB: {:?}", p.extra);
    }
    let meta = metadata(&out, "linear");
    assert_eq!(meta["status"], "complete");
    assert_eq!(meta["partition"], "none");
    assert!(meta["summary"]["worker"]["runtime"].as_str().unwrap().contains("libtorch"), "{meta}");
    assert!(meta["host"]["cores"].as_u64().unwrap() >= 1);

    // A re-run measures nothing and leaves the table as it was.
    let before = std::fs::read(out.join("linear.csv")).unwrap();
    let o = profile(&out, &grid, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("0 measured, 4 resumed"), "{}", stdout(&o));
    assert_eq!(std::fs::read(out.join("linear.csv")).unwrap(), before);

    // A worker that dies at batch 4 is a recorded failure, not the end of the run.
    let out2 = dir.path().join("crash");
    let o = profile(&out2, &grid, &[("PARVA_INJECT_WORKER_CRASH_ROWS", "4")]);
    assert_eq!(o.status.code(), Some(3), "incomplete: {}{}", stdout(&o), stderr(&o));
    let st = statuses(&out2, "linear");
    for (size, batch, procs, status, note) in &st {
        match batch.as_str() {
            "4" => assert!(status == "failed" && note.contains("died") && note.contains("injected crash"), "{size} {procs}: {status} {note}"),
            _ => assert_eq!(status, "measured", "{st:?}"),
        }
    }
    assert_eq!(metadata(&out2, "linear")["status"], "incomplete");
    // Without the fault, a re-run measures just the failed points.
    let o = profile(&out2, &grid, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("2 measured, 2 resumed"), "{}", stdout(&o));
}

/// A table for the emulated backend to replay: size 1 runs out of memory at batch 4 with one
/// process; size 7 is fast. Latency = base x batch x processes, so against --max-latency-ms 14
/// every kept point is at most 8 ms and every point that prunes the next is 16 ms. The emulated
/// workers report their modelled time, so the counts do not depend on how a loaded machine's
/// sleeps overshoot (issue 34: they had 6 ms of room).
fn source_table(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("source");
    std::fs::create_dir_all(&src).unwrap();
    let mut csv = String::from("Mig instance,Batch size,Workload Number,Throughput,Latency\n");
    for (size, base) in [(1u8, 0.004), (7, 0.002)] {
        for procs in [1u32, 2] {
            for batch in [1u32, 2, 4, 8] {
                let lat = base * batch as f64 * procs as f64;
                let tp = if size == 1 && procs == 1 && batch >= 4 { 0.0 } else { batch as f64 / lat };
                let lat = if tp == 0.0 { 0.0 } else { lat };
                csv.push_str(&format!("{size},{batch},{procs},{tp},{lat}\n"));
            }
        }
    }
    std::fs::write(src.join("linear.csv"), csv).unwrap();
    src
}

#[test]
fn mig_sweep_on_fake_gpus_replays_a_table_prunes_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let src = source_table(dir.path());
    let out = dir.path().join("out");
    let run_dir = dir.path().join("run");
    let args = [
        "--model", "models/fixtures/linear.json", "--backend", "emulated", "--emulate-from", src.to_str().unwrap(),
        "--fake-gpus", "a100-80gb:1", "--partition", "mig", "--sizes", "1,7", "--procs", "1,2", "--batches", "1,2,4,8",
        "--max-latency-ms", "14", "--run-dir", run_dir.to_str().unwrap(), "--json",
    ];
    let o = profile(&out, &args, &[]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let c = &report["summary"]["counts"];
    let st = statuses(&out, "linear");
    let find = |size: &str, batch: &str, procs: &str| st.iter().find(|r| r.0 == size && r.1 == batch && r.2 == procs).unwrap().clone();
    // Size 1, one process: out of memory at 4, so 8 is pruned with the reason.
    assert_eq!(find("1", "4", "1").3, "oom", "{st:?}");
    let pruned = find("1", "8", "1");
    assert_eq!((pruned.3.as_str(), pruned.4.as_str()), ("pruned", "batch 4 ran out of memory"));
    // Size 1, two processes: batch 2 takes 4 ms x 2 x 2 = 16 ms > 14 ms, so 4 and 8 are pruned;
    // size 7, two processes: batch 4 takes 2 ms x 4 x 2 = 16 ms, so 8 is. The note gives the
    // measured figure: at least the replayed 16 ms (how much more depends on the machine's load).
    let took = |note: &str, batch: u32| -> f64 {
        let rest = note.strip_prefix(&format!("batch {batch} took ")).unwrap_or_else(|| panic!("{note}"));
        assert!(rest.ends_with(" ms > --max-latency-ms 14"), "{note}");
        rest.split(' ').next().unwrap().parse().unwrap_or_else(|_| panic!("{note}"))
    };
    assert_eq!(find("1", "4", "2").3, "pruned");
    assert_eq!(took(&find("1", "4", "2").4, 2), 16.0, "{st:?}");
    assert_eq!(find("1", "8", "2").3, "pruned");
    assert_eq!(find("7", "8", "2").3, "pruned");
    assert_eq!(took(&find("7", "8", "2").4, 4), 16.0, "{st:?}");
    assert_eq!((c["measured"].as_u64(), c["oom"].as_u64(), c["pruned"].as_u64()), (Some(11), Some(1), Some(4)), "{c}");
    // The replayed latencies come back exactly (the emulated clock is the table's).
    let set = ProfileSet::read_dir(&out, None).unwrap();
    let t = set.get("linear").unwrap();
    for (size, batch, procs, replayed) in [(7u8, 2u32, 1u32, 0.004), (7, 8, 1, 0.016), (1, 2, 1, 0.008), (7, 4, 2, 0.016)] {
        let l = t.point(size, batch, procs).unwrap().latency_s;
        assert!((l - replayed).abs() < 1e-6, "size {size} batch {batch} x{procs}: {l} s, replayed {replayed} s");
    }
    // Each size was a real (fake) MIG instance, and none is left.
    let segments = report["summary"]["segments"].as_array().unwrap();
    assert!(segments[0]["how"].as_str().unwrap().starts_with("MIG 1g.10gb at {0}"), "{segments:?}");
    assert!(segments[1]["how"].as_str().unwrap().starts_with("MIG 7g.80gb at {0}"), "{segments:?}");
    let state: Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("fake-gpus.json")).unwrap()).unwrap();
    assert_eq!(state["gpus"][0]["instances"], serde_json::json!([]), "{state}");
    assert_eq!(metadata(&out, "linear")["backend"], "emulated");
}

#[test]
fn bad_arguments_and_foreign_tables_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o_str = out.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--model", "models/fixtures/linear.pt", "--min-seconds", "3", "--max-seconds", "1"], "--max-seconds 1 is below --min-seconds 3"),
        (vec!["--model", "models/fixtures/linear.json", "--backend", "emulated"], "--backend emulated needs --emulate-from"),
        (vec!["--model", "models/nope.pt"], "models/nope.json does not exist"),
        (vec!["--model", "models/fixtures/linear.pt", "--procs", "0"], "--procs [0]"),
        (vec!["--model", "models/fixtures/linear.pt", "--partition", "mig", "--device", "cpu"], "--device cpu needs --partition none"),
        (vec!["--model", "models/fixtures/linear.pt", "--target-ci", "0"], "--target-ci 0: must be a positive number"),
        (
            vec!["--model", "models/fixtures/linear.pt", "--fake-gpus", "a100-80gb:1", "--sizes", "5", "--run-dir", dir.path().to_str().unwrap()],
            "--sizes: 5 is not a MIG instance size of a100-80gb",
        ),
    ];
    for (args, want) in cases {
        let o = parva(&[&["profile", "--out", o_str][..], &args[..]].concat());
        assert_eq!(o.status.code(), Some(1), "{args:?} should fail: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: wanted {want:?} in: {}", stderr(&o));
        assert!(!out.exists(), "{args:?}: nothing may be written");
    }
    // A GPU whose MIG mode is off is refused before anything is written (and MIG mode is never
    // changed): the fake node's state says so.
    let run_dir = dir.path().join("off");
    std::fs::create_dir_all(&run_dir).unwrap();
    let state = serde_json::json!({"gpus": [{"gpu_type": "a100-80gb", "uuid": "GPU-1", "mig": {"supported": true, "current": false, "pending": false},
        "instances": [], "processes": []}], "serial": 0, "privileged": true});
    std::fs::write(run_dir.join("fake-gpus.json"), state.to_string()).unwrap();
    let o = parva(&["profile", "--out", o_str, "--model", "models/fixtures/linear.pt", "--fake-gpus", "a100-80gb:1", "--run-dir", run_dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("MIG mode is off") && stderr(&o).contains("--partition mps"), "{}", stderr(&o));
    assert!(!out.exists(), "nothing may be written");
    let after: Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("fake-gpus.json")).unwrap()).unwrap();
    assert_eq!(after, state);
    // A table parva did not write is never appended to.
    std::fs::create_dir_all(&out).unwrap();
    let foreign = "Mig instance,Batch size,Workload Number,Throughput,Latency\n1,1,1,10,0.1\n";
    std::fs::write(out.join("linear.csv"), foreign).unwrap();
    let o = parva(&["profile", "--out", o_str, "--model", "models/fixtures/linear.pt", "--partition", "none", "--device", "cpu"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("was not written by `parva profile`"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(out.join("linear.csv")).unwrap(), foreign);
    assert!(!out.join("linear.meta.json").exists());
}

// Issue 18: `parva profile` without --run-dir left a directory in /tmp behind every run.
#[test]
fn a_complete_profile_removes_its_temporary_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let src = source_table(dir.path());
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let args = [
        "--model", "models/fixtures/linear.json", "--backend", "emulated", "--emulate-from", src.to_str().unwrap(),
        "--partition", "none", "--device", "cpu", "--sizes", "7", "--procs", "1", "--batches", "1,2", "--json",
    ];
    let tmp_s = tmp.to_str().unwrap();
    let o = profile(&dir.path().join("out"), &args, &[("TMPDIR", tmp_s)]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "left behind in TMPDIR: {left:?}");
}

/// Issue 15: `--background KIND:MODEL` runs a best-effort job beside every instance size of an
/// MPS sweep (on fake GPUs, the emulated backend and the emulated job): the job gets the SMs the
/// point leaves, runs while the size is measured, stops (with its checkpoint) before the size is
/// undone, and the metadata says the table was measured beside it. MIG partitions refuse it.
#[test]
fn an_mps_sweep_with_a_background_job_runs_it_beside_every_size_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let src = source_table(dir.path());
    let out = dir.path().join("out");
    let run_dir = dir.path().join("run");
    let args = [
        "--model", "models/fixtures/linear.json", "--backend", "emulated", "--emulate-from", src.to_str().unwrap(),
        "--fake-gpus", "a100-80gb:1", "--partition", "mps", "--sizes", "1,7", "--procs", "1", "--batches", "1,2",
        "--background", "train:two_io", "--background-batch", "4", "--run-dir", run_dir.to_str().unwrap(), "--json",
    ];
    let o = profile(&out, &args, &[]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let bg = metadata(&out, "linear")["background"].as_str().unwrap().to_string();
    assert!(bg.starts_with("a train job of two_io (batch 4) beside every point"), "{bg}");
    assert!(bg.ends_with("beside sizes [1, 7]"), "{bg}");
    // One checkpoint, resumed across the sizes: two starts, the second resumed; two SIGTERM stops.
    let log = std::fs::read_to_string(run_dir.join("background/background-train-two_io/0/log.jsonl")).unwrap();
    assert_eq!(log.matches("\"event\":\"start\"").count(), 2, "{log}");
    assert!(log.contains("\"resumed\":true") && log.matches("\"reason\":\"signal\"").count() == 2, "{log}");
    let o = profile(&dir.path().join("mig"), &[
        "--model", "models/fixtures/linear.json", "--backend", "emulated", "--emulate-from", src.to_str().unwrap(),
        "--fake-gpus", "a100-80gb:1", "--partition", "mig", "--background", "train:two_io",
    ], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--background needs --partition mps or none"), "{}", stderr(&o));
}

/// Issue 17: `--partition mps --shares` on a MIG GPU used without MIG (fake H100, emulated
/// backend replaying a share-keyed table) writes a table keyed by share, each worker capped at
/// its share; shares out of 10 % steps, --shares with --sizes or without mps, and --sizes for an
/// MPS type are refused before anything runs.
/// A share-keyed table for `linear` at 20, 50 and 100 % (batches 1, 2) in `dir/source`, for
/// `--backend emulated --emulate-from`.
fn linear_share_source(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("source");
    std::fs::create_dir_all(&src).unwrap();
    let mut csv = String::from("MPS share,Batch size,Workload Number,Throughput,Latency\n");
    for (share, base) in [(20u32, 0.004), (50, 0.002), (100, 0.001)] {
        for batch in [1u32, 2] {
            let lat = base * batch as f64;
            csv.push_str(&format!("{share},{batch},1,{},{lat}\n", batch as f64 / lat));
        }
    }
    std::fs::write(src.join("linear.csv"), csv).unwrap();
    src
}

#[test]
fn an_mps_share_sweep_writes_a_share_keyed_table_for_the_nomig_type() {
    let dir = tempfile::tempdir().unwrap();
    let src = linear_share_source(dir.path());
    let out = dir.path().join("out");
    let run_dir = dir.path().join("run");
    let base = [
        "--model", "models/fixtures/linear.json", "--backend", "emulated", "--emulate-from", src.to_str().unwrap(),
        "--fake-gpus", "h100-80gb:1", "--procs", "1", "--batches", "1,2", "--run-dir", run_dir.to_str().unwrap(),
    ];
    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [base, extra].concat()
    }
    let o = profile(&out, &with(&base, &["--partition", "mps", "--shares", "20,50,100", "--json"]), &[]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let text = std::fs::read_to_string(out.join("linear.csv")).unwrap();
    assert!(text.starts_with("MPS share,Batch size,"), "{text}");
    let shares: std::collections::BTreeSet<String> = rows(&out, "linear").iter().map(|r| r[0].clone()).collect();
    assert_eq!(shares.into_iter().collect::<Vec<_>>(), ["100", "20", "50"]);
    assert_eq!(metadata(&out, "linear")["gpu_type"], "h100-80gb-nomig");
    // The table reads back for the MPS type, and is refused for the MIG one.
    let nomig = parva_core::mig::GpuType::by_id("h100-80gb-nomig").unwrap();
    let t = parva_core::profile::ModelProfile::read(&out.join("linear.csv"), Some(nomig)).unwrap();
    assert!(t.share_keyed && t.points.iter().all(|p| [2, 5, 10].contains(&p.size)));
    let mig = parva_core::mig::GpuType::by_id("h100-80gb").unwrap();
    assert!(parva_core::profile::ModelProfile::read(&out.join("linear.csv"), Some(mig)).is_err());
    // Beside a neighbour on the SMs each share leaves (measured interference), said in percent.
    let beside = dir.path().join("beside");
    let o = profile(&beside, &with(&base, &["--partition", "mps", "--shares", "50", "--background", "train:two_io"]), &[]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let bg = metadata(&beside, "linear")["background"].as_str().unwrap().to_string();
    assert!(bg.ends_with("beside shares [50%]"), "{bg}");
    // A sweep keyed by MIG size into the same directory is refused, the table left alone.
    let o = profile(&out, &with(&base, &["--partition", "mps", "--sizes", "1", "--gpu-type", "h100-80gb"]), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("keyed by MPS share (--shares)"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(out.join("linear.csv")).unwrap(), text);
    for (extra, want) in [
        (&["--partition", "mps", "--shares", "25"][..], "--shares: 25 is not a share parva plans"),
        (&["--partition", "mig", "--shares", "50"][..], "--shares needs --partition mps"),
        (&["--partition", "mps", "--shares", "50", "--sizes", "1"][..], "cannot be used with"),
        (&["--partition", "mps", "--shares", "50", "--gpu-type", "h100-80gb"][..], "--shares: h100-80gb is cut by MIG"),
        (&["--partition", "mps", "--sizes", "5", "--gpu-type", "h100-80gb-nomig"][..], "--sizes: h100-80gb-nomig has no MIG"),
    ] {
        let o = profile(&dir.path().join("bad"), &with(&base, extra), &[]);
        assert_ne!(o.status.code(), Some(0), "{extra:?}");
        assert!(stderr(&o).contains(want), "{extra:?}: {}", stderr(&o));
        assert!(!dir.path().join("bad/linear.csv").exists(), "{extra:?}");
    }
}

/// Issue 17: `--pairs` sweeps each share below 100 % again beside each neighbour and records the
/// slowdowns in `interference.csv` (merged across runs); the emulated backend has no
/// interference, so they are about 1.
#[test]
fn pairs_record_each_shares_slowdown_beside_each_neighbour() {
    let dir = tempfile::tempdir().unwrap();
    let src = linear_share_source(dir.path());
    let (out, run_dir) = (dir.path().join("out"), dir.path().join("run"));
    let args = |pairs: &str| -> Vec<String> {
        [
            "--model", "models/fixtures/linear.json", "--backend", "emulated", "--emulate-from", src.to_str().unwrap(), "--fake-gpus",
            "h100-80gb:1", "--procs", "1", "--batches", "1,2", "--run-dir", run_dir.to_str().unwrap(), "--partition", "mps", "--shares",
            "20,50,100", "--pairs", pairs, "--json",
        ]
        .map(String::from)
        .to_vec()
    };
    let o = profile(&out, &args("two_io").iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["pairs"].as_array().unwrap().len(), 2, "{v}");
    let read = || parva_core::interference::Interference::read(&out.join("interference.csv")).unwrap();
    let t = read();
    let got: Vec<(u32, String)> = t.pairs().map(|p| (p.share, p.neighbour.clone())).collect();
    assert_eq!(got, [(20, "two_io".to_string()), (50, "two_io".to_string())], "a 100 % share has no neighbour");
    assert!(t.pairs().all(|p| p.model == "linear" && p.batches == 2 && (0.8..1.25).contains(&p.slowdown)), "{:?}", t.pairs().collect::<Vec<_>>());
    // The table alone is the usual sweep; the planner reads the set, interference.csv beside it.
    assert_eq!(rows(&out, "linear").len(), 6);
    let nomig = parva_core::mig::GpuType::by_id("h100-80gb-nomig").unwrap();
    assert_eq!(parva_core::ProfileSet::read_dir(&out, Some(nomig)).unwrap().models.len(), 1);
    // Another neighbour later: its rows join the others.
    let o = profile(&out, &args("linear").iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(read().pairs().count(), 4);
    // Refused before anything runs: MIG instances do not interfere; only a 100 % share; a
    // neighbour without its files (found before the first sweep, not after it).
    for (extra, want) in [
        (&["--partition", "mig"][..], "--pairs needs --partition mps"),
        (&["--shares", "100"][..], "no share below 100 %"),
        (&["--pairs", "nosuch"][..], "--pairs nosuch: no metadata"),
    ] {
        let mut a = args("two_io");
        for pair in extra.chunks(2) {
            let i = a.iter().position(|x| x == pair[0]).unwrap();
            a[i + 1] = pair[1].to_string();
        }
        let bad = dir.path().join("bad");
        let o = profile(&bad, &a.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
        assert_eq!(o.status.code(), Some(1), "{extra:?}");
        assert!(stderr(&o).contains(want), "{extra:?}: {}", stderr(&o));
        assert!(!bad.exists(), "{extra:?}");
    }
}
