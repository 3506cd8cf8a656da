//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(rel: &str) -> PathBuf {
    repo().join("tests/fixtures").join(rel)
}

/// Run `parva` with `args` in `cwd`.
pub fn parva_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_parva")).args(args).current_dir(cwd).output().expect("run parva")
}

pub fn parva(args: &[&str]) -> Output {
    parva_in(&repo(), args)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// ParvaGPU's published A100 data, beside the checkout (`../shared/reference/parvagpu-a100`) or
/// where `PARVA_REFERENCE_DIR` points. `None` (and a message) when absent: a user's clone lacks it.
/// With `PARVA_REQUIRE_REFERENCE` set (scripts/test sets it, so CI does) its absence is a failure.
pub fn reference_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("PARVA_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/reference/parvagpu-a100"));
    if dir.join("prof_data").is_dir() && dir.join("SLO").is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("PARVA_REQUIRE_REFERENCE").is_none(),
        "ParvaGPU reference data not found at {} (set PARVA_REFERENCE_DIR, or unset PARVA_REQUIRE_REFERENCE)",
        dir.display()
    );
    eprintln!("skipped: ParvaGPU reference data not found at {} (set PARVA_REFERENCE_DIR)", dir.display());
    None
}

/// The torch worker binary beside `parva`; `None` (and a message) when it was not built, unless
/// PARVA_REQUIRE_TORCH is set (scripts/test sets it), which makes its absence a failure.
pub fn torch_worker() -> Option<std::path::PathBuf> {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_parva")).with_file_name("parva-worker");
    if bin.is_file() {
        return Some(bin);
    }
    assert!(std::env::var_os("PARVA_REQUIRE_TORCH").is_none(), "{} is missing: build it with `cargo build -p parva-worker`", bin.display());
    eprintln!("skipped: {} not built (cargo build -p parva-worker; needs libtorch, see scripts/bootstrap)", bin.display());
    None
}

/// A child process killed (and reaped) when the test that started it ends, passing or not: a
/// failed run once left `parva deploy` and its workers running, slowing every later benchmark.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Puts an executable script with `text` at `path`, written by a `cp` process of its own.
/// Regression (CI at 286d71b: "bin/parva: /bin/sh: bad interpreter: Text file busy"): a file this
/// process opens for writing is inherited, until it execs, by every child that another test's
/// thread forks meanwhile, and running the file then fails with ETXTBSY. Here only a text that
/// nothing runs (`path` with `.txt` added) is ever open in this process.
pub fn install_script(text: &str, path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut src = path.as_os_str().to_owned();
    src.push(".txt");
    let src = PathBuf::from(src);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&src, text).unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _ = std::fs::remove_file(path);
    copy_out_of_process(&src, path);
}

/// Copies `from` to `to` (a file or a tree) in a `cp` process of its own (see
/// [`install_script`]): no file it writes is open in this process.
pub fn copy_out_of_process(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    let out = std::process::Command::new("cp").arg("-R").arg(from).arg(to).output().expect("run cp");
    assert!(out.status.success(), "cp -R {} {}: {}", from.display(), to.display(), String::from_utf8_lossy(&out.stderr));
}
