//! Catalogue files end to end (issue 20): a fake GPU of a type parva does not know (a B200-like
//! geometry, `tests/fixtures/catalogue/b200-test.toml`) is read into a catalogue file with
//! `parva catalogue --from-gpu`, then planned, validated, deployed (fake) and profiled (emulated)
//! on; bad catalogue files are refused with file:line: field.

use std::path::Path;
use std::process::{Command, Output};

use parva_gpu::fake::FakeState;

use crate::util::{fixture, repo, stderr, stdout};

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_parva"))
        .args(args)
        .env_remove("PARVA_CATALOGUE")
        .env_remove("PARVA_FAKE_GPUS")
        .envs(env.iter().copied())
        .current_dir(repo())
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "stdout: {}\nstderr: {}", stdout(o), stderr(o));
    stdout(o)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The fake node's hardware: `b200-test.toml:COUNT`.
fn b200_gpus(count: u32) -> String {
    format!("{}:{count}", s(&fixture("catalogue/b200-test.toml")))
}

/// `parva catalogue --from-gpu` on a fake B200-like GPU, written to `dir/b200.toml`.
fn read_b200(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("b200.toml");
    let text = ok(&run(&["catalogue", "--from-gpu", "--gpu-index", "0", "--fake-gpus", &b200_gpus(1), "--out", s(&out)], &[]));
    assert!(text.contains("type `b200-test`, 7 GPCs, 8 memory slices, 7 profiles"), "{text}");
    assert!(text.contains("not a GPU type parva knows"), "{text}");
    out
}

fn plan_b200(dir: &Path, catalogue: &Path) -> std::path::PathBuf {
    let map = dir.join("map.csv");
    let o = run(
        &[
            "plan", "--catalogue", s(catalogue), "--gpu-type", "b200-test", "--prof-data", s(&fixture("profiles/good")),
            "--services", s(&fixture("services/good.csv")), "--out", s(&map),
        ],
        &[],
    );
    ok(&o);
    map
}

#[test]
fn an_unknown_gpu_is_read_into_a_catalogue_file_that_plan_validate_and_deploy_use() {
    let d = tempfile::tempdir().unwrap();
    let cat = read_b200(d.path());
    let text = std::fs::read_to_string(&cat).unwrap();
    assert!(text.contains("version = 1") && text.contains("placements_source = \"nvml\""), "{text}");
    assert!(text.contains("name = \"1g.45gb\"") && text.contains("placements = [0, 2, 4, 6]"), "{text}");
    // --out never overwrites.
    let again = run(&["catalogue", "--from-gpu", "--fake-gpus", &b200_gpus(1), "--out", s(&cat)], &[]);
    assert!(!again.status.success() && stderr(&again).contains("exists"), "{}", stderr(&again));

    // Listed like a built-in type, from its file.
    let listed: serde_json::Value = serde_json::from_str(&ok(&run(&["catalogue", "--catalogue", s(&cat), "--gpu-type", "b200-test", "--json"], &[]))).unwrap();
    assert_eq!(listed[0]["sizes"], serde_json::json!([1, 2, 3, 4, 7]));
    assert_eq!(listed[0]["catalogue"], s(&cat));

    // Without the file, the type is unknown to plan.
    let o = run(&["plan", "--gpu-type", "b200-test", "--prof-data", s(&fixture("profiles/good")), "--services", s(&fixture("services/good.csv"))], &[]);
    assert!(!o.status.success() && stderr(&o).contains("unknown GPU type `b200-test`"), "{}", stderr(&o));

    // plan -> validate: the map is laid out with the file's profiles.
    let map = plan_b200(d.path(), &cat);
    let csv = std::fs::read_to_string(&map).unwrap();
    // Every row is laid out on a profile of the file (name and gpu_type columns).
    let names = ["1g.23gb", "1g.45gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb"];
    let rows: Vec<&str> = csv.lines().skip(1).filter(|l| !l.is_empty()).collect();
    assert!(!rows.is_empty(), "{csv}");
    for r in &rows {
        let cols: Vec<&str> = r.split(',').collect();
        assert!(names.contains(&cols[8]) && cols[9] == "b200-test", "{r}");
    }
    let v: serde_json::Value = serde_json::from_str(&ok(&run(&["validate", "--map", s(&map), "--catalogue", s(&cat), "--json"], &[]))).unwrap();
    assert_eq!((v["valid"].as_bool(), v["gpu_type"].as_str(), v["placements_source"].as_str()), (Some(true), Some("b200-test"), Some("nvml")), "{v}");
    assert!(v["warning"].is_null(), "{v}");
    // PARVA_CATALOGUE, a directory, does the same.
    let v = ok(&run(&["validate", "--map", s(&map)], &[("PARVA_CATALOGUE", s(d.path()))]));
    assert!(v.contains("every layout is a legal b200-test MIG layout"), "{v}");

    // doctor: the GPU is unknown (a warning) until the file names it.
    let o = run(&["doctor", "--fake-gpus", &b200_gpus(1)], &[]);
    assert!(stdout(&o).contains("is not a GPU type parva knows"), "{}", stdout(&o));
    let o = run(&["doctor", "--fake-gpus", &b200_gpus(1), "--catalogue", s(&cat)], &[]);
    assert!(stdout(&o).contains("ok    gpu 0          NVIDIA B200 (TEST) (PCI device id 0xFFF010DE) [b200-test]"), "{}", stdout(&o));

    // deploy (fake): the fake GPUs are B200-like hardware; the file makes the type known.
    let gpus = b200_gpus(2);
    let run_dir = d.path().join("run");
    let o = run(&["deploy", "--fake-gpus", &gpus, "--run-dir", s(&run_dir), "--map", s(&map), "--catalogue", s(&cat), "--no-serve", "--json"], &[]);
    ok(&o);
    assert!(!stderr(&o).contains("read from NVML for this run"), "{}", stderr(&o));
    let state: FakeState = serde_json::from_slice(&std::fs::read(run_dir.join("fake-gpus.json")).unwrap()).unwrap();
    let placed: usize = state.gpus.iter().map(|g| g.instances.len()).sum();
    // One MIG instance per segment of the map (rows sharing a placement share an instance).
    let segments: std::collections::BTreeSet<(&str, &str, &str)> = rows.iter().map(|r| { let c: Vec<&str> = r.split(',').collect(); (c[0], c[1], c[4]) }).collect();
    assert_eq!(placed, segments.len(), "{state:?}");
    for g in &state.gpus {
        for i in &g.instances {
            assert!([19, 15, 14, 9, 5, 0].contains(&i.profile_id), "{i:?}");
        }
    }

    // deploy without the file: the GPU's geometry is read from NVML for the run, and said so.
    let run2 = d.path().join("run2");
    let o = run(&["deploy", "--fake-gpus", &gpus, "--run-dir", s(&run2), "--map", s(&map), "--no-serve"], &[]);
    ok(&o);
    assert!(stderr(&o).contains("GPU 0 (NVIDIA B200 (TEST) (PCI device id 0xFFF010DE)) is not a GPU type parva knows: its MIG geometry was read from NVML for this run as type `b200-test`"), "{}", stderr(&o));
    let state2: FakeState = serde_json::from_slice(&std::fs::read(run2.join("fake-gpus.json")).unwrap()).unwrap();
    let layout = |s: &FakeState| s.gpus.iter().map(|g| g.instances.iter().map(|i| (i.profile_id, i.start)).collect::<Vec<_>>()).collect::<Vec<_>>();
    assert_eq!(layout(&state2), layout(&state));
}

#[test]
fn profile_on_an_unknown_gpu_reads_its_geometry_and_sweeps_its_profiles() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("source");
    std::fs::create_dir_all(&src).unwrap();
    let mut table = String::from("Mig instance,Batch size,Workload Number,Throughput,Latency\n");
    for size in [1, 7] {
        for batch in [1, 2] {
            let lat = 0.002 * batch as f64 / size as f64;
            table.push_str(&format!("{size},{batch},1,{},{lat}\n", batch as f64 / lat));
        }
    }
    std::fs::write(src.join("linear.csv"), table).unwrap();
    let out = d.path().join("out");
    let o = run(
        &[
            "profile", "--model", "models/fixtures/linear.json", "--backend", "emulated", "--emulate-from", s(&src),
            "--fake-gpus", &b200_gpus(1), "--partition", "mig", "--sizes", "1,7", "--procs", "1", "--batches", "1,2",
            "--min-seconds", "0.2", "--max-seconds", "2", "--warmup-seconds", "0.05", "--target-ci", "0.25", "--run-dir", s(&d.path().join("run")), "--out", s(&out), "--json",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("is not a GPU type parva knows: its MIG geometry was read from NVML for this run as type `b200-test`"), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let segments = report["summary"]["segments"].as_array().unwrap();
    assert!(segments[0]["how"].as_str().unwrap().starts_with("MIG 1g.23gb at {0}"), "{segments:?}");
    assert!(segments[1]["how"].as_str().unwrap().starts_with("MIG 7g.180gb at {0}"), "{segments:?}");
}

#[test]
fn bad_catalogue_files_are_refused_with_file_line_and_field() {
    let d = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(fixture("catalogue/b200-test.toml")).unwrap();
    // The line of the `n`-th (0-based) line equal to `l`.
    let line = |text: &str, l: &str, n: usize| text.lines().enumerate().filter(|(_, x)| x.trim() == l).nth(n).unwrap().0 + 1;
    let cases: Vec<(&str, String, (&str, usize), &str)> = vec![
        // A 3g (4 memory slices) placed at 6 runs past the GPU's 8.
        ("placement", good.replacen("placements = [0, 4]", "placements = [0, 6]", 1), ("placements = [0, 6]", 0), "gpu.profile.placements: 3g.90gb: start 6 + 4 memory slices runs past"),
        // A second profile with id 19.
        ("overlap", good.replacen("id = 15", "id = 19", 1), ("id = 19", 1), "gpu.profile.id: profile id 19 is also 1g.23gb"),
        ("unknown-key", good.replacen("sms = 148", "sms = 148\nnvlink = true", 1), ("nvlink = true", 0), "gpu.profile.nvlink: unknown key"),
        ("version", good.replacen("version = 1", "version = 2", 1), ("version = 2", 0), "version: version 2 is not one this parva reads"),
    ];
    for (what, text, (at, nth), want) in cases {
        let path = d.path().join(format!("{what}.toml"));
        std::fs::write(&path, &text).unwrap();
        let want = format!("{}:{}: {want}", s(&path), line(&text, at, nth));
        for args in [
            vec!["catalogue", "--catalogue", s(&path)],
            vec!["validate", "--map", s(&fixture("maps/a100_mixed.csv")), "--catalogue", s(&path)],
        ] {
            let o = run(&args, &[]);
            assert_eq!(o.status.code(), Some(1), "{what}: {}", stderr(&o));
            assert!(stderr(&o).contains(&want), "{what}: want {want}\n got: {}", stderr(&o));
        }
        // Through PARVA_CATALOGUE too.
        let o = run(&["catalogue"], &[("PARVA_CATALOGUE", s(&path))]);
        assert!(!o.status.success() && stderr(&o).contains(&want), "{what}: {}", stderr(&o));
    }
    // A type that redefines a built-in one with another geometry is refused, naming both.
    let clash = d.path().join("clash.toml");
    std::fs::write(&clash, good.replacen("id = \"b200-test\"", "id = \"a100-80gb\"", 1)).unwrap();
    let o = run(&["catalogue", "--catalogue", s(&clash)], &[]);
    assert!(stderr(&o).contains("GPU type `a100-80gb` from") && stderr(&o).contains("already defined by built-in:a100-80gb.toml"), "{}", stderr(&o));
}

#[test]
fn a_built_in_type_with_assumed_placements_is_validated_with_a_warning_asking_for_the_gpus_own() {
    let d = tempfile::tempdir().unwrap();
    let map = d.path().join("b200.csv");
    ok(&run(
        &[
            "plan", "--gpu-type", "b200-180gb", "--prof-data", s(&fixture("profiles/good")), "--services",
            s(&fixture("services/good.csv")), "--out", s(&map),
        ],
        &[],
    ));
    let o = run(&["validate", "--map", s(&map), "--json"], &[]);
    let v: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!((v["valid"].as_bool(), v["placements_source"].as_str()), (Some(true), Some("assumed")), "{v}");
    let w = v["warning"].as_str().unwrap();
    assert!(w.contains("b200-180gb's placements are not published") && w.contains("parva catalogue --from-gpu"), "{w}");
    assert!(stderr(&o).contains("warning: b200-180gb's placements are not published"), "{}", stderr(&o));
    // The H100 80GB's were read from a real GPU: no warning.
    let h100 = d.path().join("h100.csv");
    ok(&run(&["plan", "--gpu-type", "h100-80gb", "--prof-data", s(&fixture("profiles/good")), "--services", s(&fixture("services/good.csv")), "--out", s(&h100)], &[]));
    let o = run(&["validate", "--map", s(&h100)], &[]);
    ok(&o);
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
}

#[test]
fn a_known_gpu_read_from_nvml_is_the_same_type_under_its_id_and_refused_under_another() {
    let d = tempfile::tempdir().unwrap();
    // Under the catalogue's id: the same geometry, so the file is taken as that type.
    let same = d.path().join("a100.toml");
    let text = ok(&run(&["catalogue", "--from-gpu", "--fake-gpus", "a100-80gb:1", "--id", "a100-80gb", "--out", s(&same)], &[]));
    assert!(text.contains("the same geometry as the catalogue's `a100-80gb`"), "{text}");
    let listed: serde_json::Value = serde_json::from_str(&ok(&run(&["catalogue", "--catalogue", s(&same), "--json"], &[]))).unwrap();
    let ids: Vec<&str> = listed.as_array().unwrap().iter().filter_map(|t| t["gpu_type"].as_str()).collect();
    assert_eq!(ids.iter().filter(|i| **i == "a100-80gb").count(), 1, "{ids:?}");
    // Under the product's name: another type claiming the A100's PCI device id is refused.
    let other = d.path().join("other.toml");
    ok(&run(&["catalogue", "--from-gpu", "--fake-gpus", "a100-80gb:1", "--out", s(&other)], &[]));
    let o = run(&["catalogue", "--catalogue", s(&other)], &[]);
    assert!(
        !o.status.success() && stderr(&o).contains("GPU type `a100-sxm4-80gb` from") && stderr(&o).contains("product `NVIDIA A100-SXM4-80GB` (0x20B210DE) is already `a100-80gb`'s"),
        "{}",
        stderr(&o)
    );
}

/// A profile set for `gpu_type` with one model `m` whose only points are at `size` GPCs, each
/// process needing `mem_mib` MiB.
fn memory_tables(dir: &Path, size: u8, mem_mib: u32) -> std::path::PathBuf {
    let prof = dir.join("prof");
    std::fs::create_dir_all(&prof).unwrap();
    let mut t = String::from("Mig instance,Batch size,Workload Number,Throughput,Latency,mem_mib\n");
    for b in [1, 2, 4] {
        t.push_str(&format!("{size},{b},1,{},{},{mem_mib}\n", 200.0 * f64::from(b), 0.005));
    }
    std::fs::write(prof.join("m.csv"), t).unwrap();
    prof
}

/// Issue 40: H200's 1g.18gb has 16,384 MiB (NVML; NVIDIA's published -lgip says the same), not the
/// 17,741 the name's GB made of it. A process of 17,000 MiB passed the fit check and would have
/// run out of memory on a real instance; now it is refused at plan time and at deploy time.
#[test]
fn a_process_that_does_not_fit_a_real_h200_1g_18gb_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let prof = memory_tables(d.path(), 1, 17_000);
    let services = d.path().join("services.csv");
    std::fs::write(&services, "service,model,rate,slo_ms\nsvc,m,100,200\n").unwrap();
    let out = d.path().join("map.csv");
    let o = run(&["plan", "--gpu-type", "h200-141gb", "--prof-data", s(&prof), "--services", s(&services), "--out", s(&out)], &[]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("service svc (m) is not planned"), "{}", stderr(&o));
    assert!(!out.exists());
    // At 16,000 MiB it fits, and the plan uses the 1g.18gb.
    let prof = memory_tables(&d.path().join("fits"), 1, 16_000);
    let o = run(&["plan", "--gpu-type", "h200-141gb", "--prof-data", s(&prof), "--services", s(&services), "--out", s(&out)], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("[1g svc b"), "{}", stdout(&o));
    // A map that puts the 17,000 MiB process on a 1g.18gb anyway is refused before any change.
    let map = d.path().join("forced.csv");
    std::fs::write(&map, "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n0,0,svc,m,0,1,1,1,1g.18gb,h200-141gb,200,100,200\n").unwrap();
    let prof = memory_tables(&d.path().join("big"), 1, 17_000);
    let o = run(&["validate", "--map", s(&map), "--prof-data", s(&prof)], &[]);
    assert!(!o.status.success(), "{}", stdout(&o));
    let text = format!("{}{}", stdout(&o), stderr(&o));
    assert!(text.contains("17000") && text.contains("16384"), "{text}");
}

/// Issue 40: where NVIDIA publishes no figure, the memory is assumed by a conservative rule and
/// the plan report says a fit check rested on it; a GPU read with --from-gpu has NVML's exact one.
#[test]
fn a_fit_check_on_assumed_memory_is_named_and_from_gpu_records_the_exact_figure() {
    let d = tempfile::tempdir().unwrap();
    let prof = memory_tables(d.path(), 1, 8_000);
    let services = d.path().join("services.csv");
    std::fs::write(&services, "service,model,rate,slo_ms\nsvc,m,100,200\n").unwrap();
    let o = run(&["plan", "--gpu-type", "b300-269gb", "--prof-data", s(&prof), "--services", s(&services), "--out", s(&d.path().join("m.csv"))], &[]);
    let text = ok(&o);
    assert!(text.contains("memory: memory fit checks on b300-269gb used assumed instance memory (1g.34gb:"), "{text}");
    // On a type with published figures there is no such line.
    let o = run(&["plan", "--gpu-type", "h200-141gb", "--prof-data", s(&prof), "--services", s(&services), "--out", s(&d.path().join("m.csv"))], &[]);
    assert!(!ok(&o).contains("memory:"));
    // --from-gpu writes NVML's figure and says so.
    let out = d.path().join("h200.toml");
    ok(&run(&["catalogue", "--from-gpu", "--fake-gpus", "h200-141gb:1", "--id", "h200-141gb", "--out", s(&out)], &[]));
    let written = std::fs::read_to_string(&out).unwrap();
    assert!(written.contains("name = \"1g.18gb\"") && written.contains("mem_mib = 16384\nmem_source = \"nvml\""), "{written}");
}
