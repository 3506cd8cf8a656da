//! What a user meets at the shell before any result: a closed stdout (`| head`), error causes,
//! help text for every flag, colour codes in logs. Each test fails when its fix is removed.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Output, Stdio};

use crate::util::{parva, repo, stderr};

/// Run `parva args` with stdout a stream whose reader is already gone, so that the first write
/// fails with EPIPE, every time: a pipe read by `head -1` would take the whole output into its
/// buffer first for outputs this small, and the test could not fail. (A socket pair rather than
/// `std::io::pipe`, which needs Rust 1.87; the writer sees the same EPIPE either way.)
fn parva_reader_gone(args: &[&str]) -> Output {
    let (ours, theirs) = UnixStream::pair().expect("socket pair");
    drop(ours);
    Command::new(env!("CARGO_BIN_EXE_parva"))
        .args(args)
        .current_dir(repo())
        .stdout(Stdio::from(OwnedFd::from(theirs)))
        .stderr(Stdio::piped())
        .output()
        .expect("run parva")
}

#[test]
fn a_closed_stdout_ends_every_printing_command_quietly_with_0() {
    let d = tempfile::tempdir().unwrap();
    let map = d.path().join("deploy.csv");
    let map = map.to_str().unwrap();
    let plan = ["plan", "--prof-data", "prof_data/example", "--services", "deployment/example/services.csv", "--gpu", "a100-80gb", "--out", map];
    let cases: Vec<Vec<&str>> = vec![
        vec!["catalogue"],
        vec!["catalogue", "--json"],
        plan.to_vec(),
        [&plan[..], &["--json"]].concat(),
        vec!["validate", "--plan", "deployment/example/deploy.csv"],
        vec!["simulate", "--plan", "deployment/example/deploy.csv", "--prof-data", "prof_data/example", "--duration", "2s", "--warmup", "1s"],
        vec!["doctor", "--fake-gpus", "a100-80gb:1", "--json"],
    ];
    for args in cases {
        let o = parva_reader_gone(&args);
        // Before the fix: println! panicked, exit 101, "failed printing to stdout: Broken pipe".
        assert_eq!(o.status.code(), Some(0), "parva {args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o), "", "parva {args:?}");
    }
}

#[test]
fn an_error_prints_its_cause_once() {
    let d = tempfile::tempdir().unwrap();
    let models = d.path().join("no-models");
    let o = parva(&[
        "serve",
        "--plan",
        "deployment/example/deploy.csv",
        "--models",
        models.to_str().unwrap(),
        "--backend",
        "emulated",
        "--prof-data",
        "prof_data/example",
        "--run-dir",
        d.path().join("run").to_str().unwrap(),
    ]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains(&format!("{}: read model metadata: No such file or directory", models.join("bert.json").display())), "{e}");
    assert_eq!(e.matches("No such file or directory").count(), 1, "{e}");

    // The emulated worker's error when its router's socket is not there.
    let sock = d.path().join("none.sock");
    let o = parva(&["worker", "--socket", sock.to_str().unwrap(), "--model-meta", "models/bert.json", "--max-batch", "1", "--exec-ms", "1"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains(&format!("connect to {}: No such file or directory", sock.display())), "{e}");
    assert_eq!(e.matches("No such file or directory").count(), 1, "{e}");
}

/// Every flag of every command says what it is for in `-h` (on its line, or on the next, more
/// indented, when clap puts help below the flag).
#[test]
fn every_flag_has_help() {
    let mut missing = Vec::new();
    for cmd in ["plan", "replan", "simulate", "validate", "catalogue", "serve", "segment", "route", "deploy", "profile", "verify", "worker", "doctor", "export k8s"] {
        let args: Vec<&str> = cmd.split(' ').chain(["-h"]).collect();
        let o = parva(&args);
        assert_eq!(o.status.code(), Some(0), "{cmd}: {}", stderr(&o));
        let text = crate::util::stdout(&o);
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            if !t.starts_with('-') || line.len() == t.len() {
                continue;
            }
            // The flag itself ends at the first run of two spaces.
            let same_line = t.split_once("  ").is_some_and(|(_, help)| !help.trim().is_empty());
            let next = lines.get(i + 1).copied().unwrap_or("");
            let next_line = next.len() - next.trim_start().len() >= 8 && !next.trim().is_empty() && !next.trim_start().starts_with('-');
            if !same_line && !next_line {
                missing.push(format!("{cmd}: {t}"));
            }
        }
    }
    assert!(missing.is_empty(), "flags without help: {missing:#?}");
    // The check sees a flag (it would pass on an empty page too).
    let o = parva(&["simulate", "-h"]);
    assert!(crate::util::stdout(&o).contains("--slo <N>"), "{}", crate::util::stdout(&o));
}

/// `--fake-gpus` is what tests and anyone without a GPU use: it shows in `--help`, saying so.
#[test]
fn fake_gpus_is_in_help_for_machines_without_a_gpu() {
    for cmd in ["deploy", "profile"] {
        for h in ["-h", "--help"] {
            let o = parva(&[cmd, h]);
            let out = crate::util::stdout(&o);
            assert_eq!(o.status.code(), Some(0), "{cmd} {h}");
            let at = out.find("--fake-gpus <TYPE:COUNT>").unwrap_or_else(|| panic!("{cmd} {h}: no --fake-gpus in\n{out}"));
            assert!(out[at..].contains("For machines without a GPU"), "{cmd} {h}:\n{out}");
        }
    }
}

/// Logs on a stderr that is not a terminal (a pipe, a log file) carry no colour codes.
#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let o = Command::new(env!("CARGO_BIN_EXE_parva"))
        .args(["simulate", "--plan", "deployment/example/deploy.csv", "--prof-data", "prof_data/example", "--duration", "2s", "--warmup", "1s"])
        .current_dir(repo())
        .env("RUST_LOG", "parva=info")
        .output()
        .expect("run parva");
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    assert!(e.contains("INFO parva::commands::simulate: simulated"), "a log line to check: {e}");
    assert!(!e.contains("\x1b["), "colour codes in {e:?}");
}

// Issue 12: `--map` names a deployment map everywhere, `--gpu-type` a GPU type and `--gpu-index` an
// NVML index; the old spellings (`--plan`, `--gpu`) still work for existing scripts but are not
// shown in help.
#[test]
fn renamed_flags_keep_their_old_spellings_and_help_shows_only_the_new_ones() {
    let new = parva(&["validate", "--map", "deployment/example/deploy.csv", "--gpu-type", "a100-80gb"]);
    let old = parva(&["validate", "--plan", "deployment/example/deploy.csv", "--gpu", "a100-80gb"]);
    assert_eq!(new.status.code(), Some(0), "{}", stderr(&new));
    assert_eq!(old.status.code(), Some(0), "{}", stderr(&old));
    assert_eq!(new.stdout, old.stdout);
    for (cmd, shown, hidden) in [
        ("simulate", "--map <FILE>", "--plan"),
        ("validate", "--map <FILE>", "--plan"),
        ("serve", "--map <FILE>", "--plan"),
        ("deploy", "--map <FILE>", "--plan"),
        ("verify", "--map <FILE>", "--plan"),
        ("plan", "--gpu-type <TYPE>", "--gpu <"),
        ("validate", "--gpu-type <TYPE>", "--gpu <"),
        ("deploy", "--gpu-type <TYPE>", "--gpu <"),
        ("catalogue", "--gpu-type <TYPE>", "--gpu <"),
        ("profile", "--gpu-index <INDEX>", "--gpu <"),
    ] {
        let help = crate::util::stdout(&parva(&[cmd, "--help"]));
        assert!(help.contains(shown), "parva {cmd} --help lacks {shown}:\n{help}");
        assert!(!help.contains(hidden), "parva {cmd} --help still shows {hidden}:\n{help}");
    }
}
