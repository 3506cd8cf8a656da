//! Issue 12: one fake-node selection for every command (`--fake-gpus` / `PARVA_FAKE_GPUS`), so each
//! honours the fault-injection variable `PARVA_FAKE_FAIL` (only `deploy` did).

use std::process::Command;

use crate::util::{repo, stderr, stdout};

/// Regression: `parva profile` on fake GPUs ignored PARVA_FAKE_FAIL, so a failing MIG call could
/// not be tested through it. Now the injected create_instance failure marks the size's points
/// failed, naming the call, and the exit code says the table is incomplete.
#[test]
fn profile_on_fake_gpus_honours_the_injected_mig_failure() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("linear.csv"),
        "Mig instance,Batch size,Workload Number,Throughput,Latency\n1,1,1,250,0.004\n1,2,1,250,0.008\n",
    )
    .unwrap();
    let out = d.path().join("out");
    let run = |fail: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_parva"));
        c.current_dir(repo()).env_remove("PARVA_FAKE_FAIL").env_remove("PARVA_FAKE_GPUS");
        if let Some(f) = fail {
            c.env("PARVA_FAKE_FAIL", f);
        }
        c.args(["profile", "--model", "models/fixtures/linear.json", "--backend", "emulated", "--emulate-from"])
            .arg(&src)
            .args(["--fake-gpus", "a100-80gb:1", "--partition", "mig", "--sizes", "1", "--procs", "1", "--batches", "1,2"])
            .args(["--min-seconds", "0.1", "--max-seconds", "0.3", "--json", "--out"])
            .arg(&out)
            .output()
            .unwrap()
    };
    let o = run(Some("create_instance"));
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    let table = std::fs::read_to_string(out.join("linear.csv")).unwrap();
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{table}");
    for row in rows {
        assert!(row.contains(",failed,") && row.contains("injected failure") && row.contains("create_instance gpu=0 profile=19"), "{row}");
    }
    // Without the fault the same sweep measures both points (re-running resumes and retries them).
    let o = run(None);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let table = std::fs::read_to_string(out.join("linear.csv")).unwrap();
    assert_eq!(table.lines().skip(1).filter(|r| r.contains(",measured,")).count(), 2, "{table}");
}
