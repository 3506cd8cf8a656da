//! The commit `parva` was built from, for `parva --version` and the reports that say what
//! measured (`PARVA_COMMIT`: the short hash, `+dirty` with uncommitted changes, or `unknown`
//! outside a git checkout, e.g. a source tarball).
use std::process::Command;

fn main() {
    let git = |args: &[&str]| Command::new("git").args(args).output().ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let commit = match git(&["rev-parse", "--short=10", "HEAD"]) {
        Some(hash) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            if dirty { format!("{hash}+dirty") } else { hash }
        }
        None => "unknown".into(),
    };
    println!("cargo:rustc-env=PARVA_COMMIT={commit}");
    // Re-run when HEAD moves (a commit, a checkout), the index changes, or any source does (dirty
    // or clean again).
    for path in [".git/HEAD", ".git/index", "src", "crates", "Cargo.toml"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        let path = format!(".git/{r}");
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
