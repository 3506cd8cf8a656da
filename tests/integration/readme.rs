//! The README's examples, run (issue 38): what a newcomer reads is what runs.
//!
//! Every fenced block in the README and the READMEs it links says what it is in its info string:
//!
//! - ` ```console `: commands (`$ ...`) each followed by the output it shows. The command is run and
//!   its output (stdout, then stderr) must match the lines shown, in order: `...` on a line of its
//!   own skips any lines, `[..]` inside a line matches any text. Changing an expected line fails.
//! - ` ```sh `: commands run as one script (`set -e`), in order; their output is not compared.
//!   ` ```sh exit:0,3 ` accepts those exit codes (`parva verify` exits 3 when a service misses,
//!   which a loaded test machine can make happen).
//! - ` ```sh gpu `: needs an NVIDIA GPU; run by [`readme_gpu_examples_run`] (ignored here,
//!   run by `scripts/gpu-check`).
//! - ` ```sh no-run: REASON `: shown, never run (a cluster, docker, the tests themselves); the
//!   reason is required.
//! - ` ```text synopsis `: command synopses; every `--flag` shown must be in that command's `--help`.
//! - ` ```text `, ` ```toml `, ` ```rust `, ` ```csv `: not commands.
//!
//! A block without an info string fails the test, so a new example has to say which it is.
//! Examples run in a temporary copy of the repository's data (`prof_data/`, `deployment/`,
//! `models/`, `scripts/`), with `parva`, `scripts/parva` and `target/release/parva` all the binary
//! under test, and `127.0.0.1:8000` replaced by a free loopback port.

use super::util::{copy_out_of_process, install_script, repo};
use std::path::PathBuf;
use std::process::Command;

/// The documents whose examples are run: the README and the READMEs it sends readers to.
const DOCS: &[&str] = &["README.md", "runner/README.md", "crates/verify/README.md", "profiler/README.md", "models/README.md", "tests/golden/README.md"];

#[derive(Debug, Clone)]
struct Block {
    doc: String,
    /// Line of the opening fence (1-based).
    line: usize,
    info: String,
    body: Vec<String>,
}

impl Block {
    fn at(&self) -> String {
        format!("{}:{}", self.doc, self.line)
    }
}

fn blocks(doc: &str, text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(rest) = line.strip_prefix("```") {
            match open.take() {
                Some(b) => out.push(b),
                None => open = Some(Block { doc: doc.to_string(), line: i + 1, info: rest.trim().to_string(), body: Vec::new() }),
            }
        } else if let Some(b) = open.as_mut() {
            b.body.push(line.to_string());
        }
    }
    assert!(open.is_none(), "{doc}: a fenced block is not closed");
    out
}

fn all_blocks() -> Vec<Block> {
    DOCS.iter()
        .flat_map(|d| {
            let text = std::fs::read_to_string(repo().join(d)).unwrap_or_else(|e| panic!("{d}: {e}"));
            blocks(d, &text)
        })
        .collect()
}

#[derive(Debug, PartialEq)]
enum Kind {
    Console,
    Sh,
    Gpu,
    NoRun,
    Synopsis,
    Other,
}

fn kind(b: &Block) -> Result<Kind, String> {
    let info = b.info.as_str();
    Ok(match info {
        "console" => Kind::Console,
        "sh" => Kind::Sh,
        _ if info.starts_with("sh exit:") && exit_codes(info).is_some() => Kind::Sh,
        "sh gpu" => Kind::Gpu,
        "text synopsis" => Kind::Synopsis,
        "text" | "toml" | "rust" | "csv" => Kind::Other,
        _ if info.starts_with("sh no-run:") && info.len() > "sh no-run:".len() + 3 => Kind::NoRun,
        "" => return Err(format!("{}: a fenced block without an info string (console, sh, sh gpu, sh no-run: REASON, text synopsis, text, toml, rust, csv)", b.at())),
        _ => return Err(format!("{}: unknown info string {info:?}", b.at())),
    })
}

/// The exit codes an `sh exit:0,3` block accepts; `[0]` for a plain `sh`.
fn exit_codes(info: &str) -> Option<Vec<i32>> {
    match info.strip_prefix("sh exit:") {
        None => Some(vec![0]),
        Some(list) => list.split(',').map(|c| c.trim().parse().ok()).collect::<Option<Vec<i32>>>().filter(|v| v.contains(&0)),
    }
}

/// A temporary copy of the repository's data, with `parva` (by every name the docs use) the
/// binary under test.
struct Sandbox {
    dir: tempfile::TempDir,
    port: u16,
}

fn parva_bin() -> PathBuf {
    std::env::var_os("PARVA_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_parva")))
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let root = std::env::var_os("PARVA_REPO").map(PathBuf::from).unwrap_or_else(repo);
        for d in ["prof_data", "deployment", "models", "scripts"] {
            copy_out_of_process(&root.join(d), &dir.path().join(d));
        }
        let bin = parva_bin();
        let shim = "#!/bin/sh\n# scripts/parva's own --torch (bootstrap libtorch) is the build's business, not the binary's\n[ \"$1\" = --torch ] && shift\nexec \"$PARVA_BIN\" \"$@\"\n";
        // Scripts the examples run, and the tree's scripts, are written by `cp` (see
        // install_script: a file written here failed to run with "Text file busy").
        for p in ["bin/parva", "scripts/parva", "target/release/parva"] {
            install_script(shim, &dir.path().join(p));
        }
        // The worker binary beside parva (the torch backend), when there is one.
        let worker = bin.with_file_name("parva-worker");
        if worker.is_file() {
            std::os::unix::fs::symlink(&worker, dir.path().join("target/release/parva-worker")).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Sandbox { dir, port }
    }

    /// Runs `script` with bash in the sandbox; background jobs are killed when it ends.
    fn run(&self, script: &str) -> (i32, String) {
        let script = script.replace("127.0.0.1:8000", &format!("127.0.0.1:{}", self.port));
        let full = format!("set -euo pipefail\ntrap 'st=$?; kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; exit $st' EXIT\n{script}\n");
        let path = std::env::var("PATH").unwrap_or_default();
        let out = Command::new("bash")
            .arg("-c")
            .arg(full)
            .current_dir(self.dir.path())
            .env("PATH", format!("{}:{path}", self.dir.path().join("bin").display()))
            .env("PARVA_BIN", parva_bin())
            .env("PARVA_WORKER", parva_bin().with_file_name("parva-worker"))
            .env_remove("RUST_LOG")
            .output()
            .expect("run bash");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    }
}

/// Joins `\`-continued lines and drops comments and blank lines.
fn commands(body: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in body {
        let line = line.trim_end();
        if let Some(part) = line.strip_suffix('\\') {
            cur.push_str(part);
            continue;
        }
        // A trailing comment (` # ...`) explains; it is not part of the command.
        cur.push_str(line.split(" #").next().unwrap_or(line));
        let cmd = std::mem::take(&mut cur);
        let t = cmd.trim();
        if !t.is_empty() && !t.starts_with('#') {
            out.push(cmd);
        }
    }
    out
}

/// One `$ command` of a console block and the lines it shows.
#[derive(Debug)]
struct Shown {
    command: String,
    expect: Vec<String>,
}

fn console_steps(body: &[String]) -> Result<Vec<Shown>, String> {
    let mut out: Vec<Shown> = Vec::new();
    let mut pending_continuation = false;
    for line in body {
        if let Some(cmd) = line.strip_prefix("$ ") {
            out.push(Shown { command: cmd.trim_end_matches('\\').to_string(), expect: Vec::new() });
            pending_continuation = line.ends_with('\\');
        } else if pending_continuation {
            let last = out.last_mut().unwrap();
            last.command.push_str(line.trim_end_matches('\\'));
            pending_continuation = line.ends_with('\\');
        } else {
            match out.last_mut() {
                Some(last) => last.expect.push(line.clone()),
                None => return Err(format!("output line {line:?} before any `$ ` command")),
            }
        }
    }
    if out.is_empty() {
        return Err("no `$ ` command".into());
    }
    Ok(out)
}

/// Whether `got` matches the pattern line `want` (`[..]` matches any text).
fn line_matches(want: &str, got: &str) -> bool {
    let want = want.trim_end();
    let got = got.trim_end();
    let parts: Vec<&str> = want.split("[..]").collect();
    if parts.len() == 1 {
        return want == got;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !got.starts_with(first) || got.len() < first.len() + last.len() || !got.ends_with(last) {
        return false;
    }
    let mut rest = &got[first.len()..got.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Checks `got` against the shown lines: in order, `...` skipping any lines; every output line
/// accounted for unless the last shown line is `...`. `Err` names the first line that differs.
fn output_matches(expect: &[String], got: &str) -> Result<(), String> {
    let got: Vec<&str> = got.lines().collect();
    let mut at = 0;
    let mut skipping = false;
    for want in expect {
        if want.trim() == "..." {
            skipping = true;
            continue;
        }
        if skipping {
            match (at..got.len()).find(|&i| line_matches(want, got[i])) {
                Some(i) => at = i + 1,
                None => return Err(format!("shown line {want:?} not found after line {at} of the output")),
            }
            skipping = false;
        } else {
            match got.get(at) {
                Some(g) if line_matches(want, g) => at += 1,
                Some(g) => return Err(format!("line {}: shown {want:?}, got {g:?}", at + 1)),
                None => return Err(format!("shown {want:?}, but the output ended")),
            }
        }
    }
    if !skipping && at < got.len() {
        return Err(format!("output goes on past what is shown: {:?} (end the example with `...` if that is meant)", got[at]));
    }
    Ok(())
}

fn run_block(b: &Block, sandbox: &Sandbox) -> Result<(), String> {
    match kind(b)? {
        Kind::Console => {
            let steps = console_steps(&b.body).map_err(|e| format!("{}: {e}", b.at()))?;
            for s in steps {
                let (code, out) = sandbox.run(&s.command);
                if code != 0 {
                    return Err(format!("{}: `{}` failed:\n{out}", b.at(), s.command));
                }
                output_matches(&s.expect, &out).map_err(|e| format!("{}: `{}`: {e}\nthe whole output:\n{out}", b.at(), s.command))?;
            }
            Ok(())
        }
        Kind::Sh | Kind::Gpu => {
            let cmds = commands(&b.body);
            if let Some(c) = cmds.iter().find(|c| c.contains(" ... ") || c.contains("[--") || c.contains('<')) {
                return Err(format!("{}: `{c}` has a placeholder; a runnable example must run as shown (or say `sh no-run: REASON`)", b.at()));
            }
            let (code, out) = sandbox.run(&cmds.join("\n"));
            let codes = exit_codes(&b.info).unwrap_or_default();
            if codes.contains(&code) { Ok(()) } else { Err(format!("{}: the example exited {code} (accepted: {codes:?}):\n{out}", b.at())) }
        }
        _ => Ok(()),
    }
}

#[test]
fn every_fenced_block_says_what_it_is() {
    let errors: Vec<String> = all_blocks().iter().filter_map(|b| kind(b).err()).collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// The GPU-free examples, each in a fresh copy of the data, as a newcomer would run them.
#[test]
fn readme_examples_run_as_shown() {
    let runnable: Vec<Block> = all_blocks().into_iter().filter(|b| matches!(kind(b), Ok(Kind::Console | Kind::Sh))).collect();
    assert!(runnable.len() >= 6, "only {} runnable examples found", runnable.len());
    let errors: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = runnable.iter().map(|b| s.spawn(move || run_block(b, &Sandbox::new()).err())).collect();
        handles.into_iter().filter_map(|h| h.join().unwrap()).collect()
    });
    assert!(errors.is_empty(), "{} of {} examples differ from what they show:\n{}", errors.len(), runnable.len(), errors.join("\n\n"));
}

/// The examples that need a GPU: run by `scripts/gpu-check` (with `PARVA_BIN` and `PARVA_REPO`
/// when the binary was built elsewhere).
#[test]
#[ignore = "needs a CUDA GPU"]
fn readme_gpu_examples_run() {
    let sandbox = Sandbox::new();
    for b in all_blocks().iter().filter(|b| kind(b) == Ok(Kind::Gpu)) {
        if let Err(e) = run_block(b, &sandbox) {
            panic!("{e}");
        }
    }
}

/// Every `--flag` a synopsis shows for `parva CMD` is one `parva CMD --help` knows.
#[test]
fn synopses_name_only_flags_that_exist() {
    let mut errors = Vec::new();
    let mut checked = 0;
    for b in all_blocks().iter().filter(|b| kind(b) == Ok(Kind::Synopsis)) {
        // Group lines: a line starting `parva ` opens a command, indented lines continue it.
        let mut groups: Vec<(Vec<String>, String)> = Vec::new();
        for line in &b.body {
            let text = line.split(" # ").next().unwrap_or("");
            if let Some(rest) = line.strip_prefix("parva ") {
                let words: Vec<String> = rest.split_whitespace().take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '8')).map(str::to_string).collect();
                groups.push((words, text.to_string()));
            } else if line.starts_with(' ') {
                if let Some(g) = groups.last_mut() {
                    g.1.push(' ');
                    g.1.push_str(text);
                }
            }
        }
        for (cmd, text) in groups {
            let help = Command::new(parva_bin()).args(&cmd).arg("--help").output().unwrap();
            let help = String::from_utf8_lossy(&help.stdout).into_owned();
            for flag in flags(&text) {
                checked += 1;
                if !help.contains(&format!("{flag} ")) && !help.contains(&format!("{flag},")) && !help.contains(&format!("{flag}\n")) && !help.contains(&format!("{flag}=")) {
                    errors.push(format!("{}: `parva {}` shows {flag}, which its --help does not know", b.at(), cmd.join(" ")));
                }
            }
        }
    }
    assert!(checked > 100, "only {checked} flags checked");
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

fn flags(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i + 2 < bytes.len() {
        if bytes[i] == '-' && bytes[i + 1] == '-' && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric() && bytes[i - 1] != '-') && bytes[i + 2].is_ascii_lowercase() {
            let mut j = i + 2;
            while j < bytes.len() && (bytes[j].is_ascii_lowercase() || bytes[j].is_ascii_digit() || bytes[j] == '-') {
                j += 1;
            }
            out.push(bytes[i..j].iter().collect::<String>().trim_end_matches('-').to_string());
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// Every repository path the documents name in backticks exists, and the README's layout table
/// lists every top-level directory and every crate there is.
#[test]
fn named_paths_exist_and_the_layout_table_matches_the_tree() {
    let root = repo();
    let tops = ["src/", "crates/", "runner/", "profiler/", "models/", "prof_data/", "deployment/", "scripts/", "tests/", "reports/gpu/", ".ci/"];
    let mut errors = Vec::new();
    for d in DOCS {
        let text = std::fs::read_to_string(root.join(d)).unwrap();
        let mut in_block = false;
        for (n, line) in text.lines().enumerate() {
            if line.starts_with("```") {
                in_block = !in_block;
                continue;
            }
            // Lines about `--out` name paths a command will write, which need not exist yet.
            if in_block || line.contains("--out") {
                continue;
            }
            for (k, part) in line.split('`').enumerate() {
                let candidate = part.split(' ').next().unwrap_or("");
                if k % 2 == 0 || candidate != part || !tops.iter().any(|t| candidate.starts_with(t)) {
                    continue;
                }
                if candidate.contains(['<', '{', '*', '[', '$']) || candidate.contains(",") {
                    continue;
                }
                let path = candidate.trim_end_matches([':', '.', ')']);
                let beside = root.join(d).parent().map(|p| p.join(path)).is_some_and(|p| p.exists());
                if !beside && !root.join(path).exists() {
                    errors.push(format!("{d}:{}: `{part}` does not exist", n + 1));
                }
            }
        }
    }
    // The layout table.
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let layout = readme.split("## Layout").nth(1).expect("README has a Layout section");
    let rows: Vec<String> = layout
        .lines()
        .take_while(|l| l.starts_with('|') || l.trim().is_empty())
        .filter_map(|l| l.strip_prefix("| `"))
        .flat_map(|l| l.split(" |").next().unwrap_or("").split(", ").map(|p| p.trim_matches('`').to_string()).collect::<Vec<_>>())
        .collect();
    for p in &rows {
        if !root.join(p).exists() {
            errors.push(format!("README layout: `{p}` does not exist"));
        }
    }
    let listed = |p: &str| rows.iter().any(|r| r.trim_end_matches('/') == p.trim_end_matches('/') || r.starts_with(&format!("{p}/")));
    let tracked = Command::new("git").args(["ls-files"]).current_dir(&root).output().unwrap();
    let tracked = String::from_utf8_lossy(&tracked.stdout).into_owned();
    let mut dirs: Vec<String> = tracked.lines().filter_map(|f| f.split_once('/').map(|(d, _)| d.to_string())).filter(|d| !d.starts_with('.')).collect();
    dirs.extend(tracked.lines().filter_map(|f| f.strip_prefix("crates/")).filter_map(|f| f.split_once('/')).map(|(c, _)| format!("crates/{c}")));
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        if !listed(&d) {
            errors.push(format!("README layout: `{d}/` is in the tree but not in the table"));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// The harness itself: a changed expected line fails, `...` and `[..]` match what they say.
#[test]
fn the_output_check_fails_on_a_changed_line() {
    let shown = |s: &str| s.lines().map(str::to_string).collect::<Vec<_>>();
    let got = "plan: 4 GPUs, 25 of 28 GPCs used\ncost by service\nchat 4\nthumbs 1\nsensitivity: x\n";
    assert!(output_matches(&shown("plan: 4 GPUs, 25 of 28 GPCs used\ncost by service\nchat 4\nthumbs 1\nsensitivity: x"), got).is_ok());
    assert!(output_matches(&shown("plan: 5 GPUs, 25 of 28 GPCs used\n..."), got).is_err());
    assert!(output_matches(&shown("plan: 4 GPUs, [..] GPCs used\n...\nthumbs 1\n..."), got).is_ok());
    assert!(output_matches(&shown("plan: 4 GPUs, [..] GPCs used\n...\nthumbs 2\n..."), got).is_err());
    // Lines past what is shown fail unless the example ends with `...`.
    assert!(output_matches(&shown("plan: 4 GPUs, 25 of 28 GPCs used"), got).is_err());
    // A shown line the output lacks fails.
    assert!(output_matches(&shown("...\nwarning: y"), got).is_err());
    assert!(line_matches("a [..] c [..] e", "a b c d e") && !line_matches("a [..] c", "a b d"));
    // Blocks: the info string decides, and a bare fence is refused.
    let bs = blocks("X.md", "```console\n$ parva --version\nparva [..]\n```\n\n```\nplain\n```\n```sh no-run: needs a cluster\nkubectl apply\n```\n");
    assert_eq!(bs.len(), 3);
    assert_eq!(kind(&bs[0]), Ok(Kind::Console));
    assert!(kind(&bs[1]).unwrap_err().contains("X.md:6"));
    assert_eq!(kind(&bs[2]), Ok(Kind::NoRun));
    assert!(kind(&Block { info: "sh no-run:".into(), ..bs[2].clone() }).is_err(), "a no-run needs its reason");
    assert_eq!(exit_codes("sh exit:0,3"), Some(vec![0, 3]));
    assert_eq!(exit_codes("sh exit:3"), None, "success must stay accepted");
    assert!(kind(&Block { info: "sh exit:x".into(), ..bs[2].clone() }).is_err());
    let steps = console_steps(&bs[0].body).unwrap();
    assert_eq!(steps[0].command, "parva --version");
    assert_eq!(flags("[--prof-data DIR] (--a | --b-c) x--y --z-"), vec!["--prof-data", "--a", "--b-c", "--z"]);
}
