//! The limits of `parva serve`'s HTTP edge, on the real binary over loopback (issue 11):
//! decoders that never allocate from a declared shape, body limits (413 before buffering),
//! header and idle timeouts, escaped metric labels and counted refusals, `--help`, and a short
//! run of the soak command (`scripts/soak`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::serve_support::{Server, get, metric, post_json, request, start, tiny_setup, write_plan};
use crate::util::{parva, repo, stdout};

/// A node serving `service` (model `tiny`: FP32 [-1, 2] -> FP32 [-1, 3]; batch 4, one process,
/// 5 ms a batch, SLO 1 s) with `extra` flags.
fn serve(dir: &Path, service: &str, extra: &[&str]) -> Server {
    let (models, prof) = tiny_setup(dir, &[(1, 1, 0.005), (1, 4, 0.005)]);
    let field = format!("\"{}\"", service.replace('"', "\"\""));
    let plan = write_plan(dir, &[&format!("0,0,{field},tiny,0,1,4,1,,,,10,1000")]).display().to_string();
    let mut args = vec!["--plan", &plan, "--backend", "emulated", "--models", &models, "--prof-data", &prof];
    args.extend_from_slice(extra);
    let s = start(&args);
    s.wait_200("/v2/health/ready", Duration::from_secs(60));
    s
}

/// Peak resident memory (VmHWM) of a process, MiB.
fn vm_hwm_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
}

fn one_row() -> serde_json::Value {
    json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]})
}

// Issue 11: this one request aborted `parva serve` and all its workers (the JSON decoder
// reserved memory for the declared shape).
#[test]
fn json_shape_larger_than_its_data_is_a_400_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), "svc", &[]);
    let huge = json!({"inputs": [{"name": "x", "shape": [1000000000000i64, 128], "datatype": "FP32", "data": [1]}]});
    let (code, body) = post_json(s.addr, "/v2/models/svc/infer", &huge);
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("shape [1000000000000, 128] does not match the model's [-1, 2]"), "{body}");
    let rows = json!({"inputs": [{"name": "x", "shape": [1000000000000i64, 2], "datatype": "FP32", "data": [1]}]});
    let (code, body) = post_json(s.addr, "/v2/models/svc/infer", &rows);
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("at most 128 rows per request (--max-request-rows)"), "{body}");
    // The binary path, same shape.
    let head = br#"{"inputs":[{"name":"x","shape":[1000000000000,2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
    let mut raw = head.to_vec();
    raw.extend_from_slice(&[0; 8]);
    let (code, _, body) = request(s.addr, "POST", "/v2/models/svc/infer", &[("Inference-Header-Content-Length", head.len().to_string())], &raw);
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
    let (code, body) = post_json(s.addr, "/v2/models/svc/infer", &one_row());
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["outputs"][0]["shape"], json!([1, 3]));
}

// Issue 11: a 300 MB body took the router to 763 MB resident. It is now refused at the model's
// limit: from its Content-Length before a byte is read, or cut off at the limit when it has none.
#[test]
fn a_300_mb_body_is_refused_with_413_without_being_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), "svc", &[]);
    let pid = s.child.id();
    let before = vm_hwm_mib(pid);
    // Declared: 413 at once, naming the limit.
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(b"POST /v2/models/svc/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 300000000\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = c.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    // JSON limit of tiny: 128 rows x 2 elements x 32 bytes + 64 KiB = 73728.
    assert!(text.contains("over the limit of 73728 bytes for model"), "{text}");
    // Chunked, 300 MB offered: the server stops reading at the limit.
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(b"POST /v2/models/svc/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    let chunk = [format!("{:x}\r\n", 1 << 20).into_bytes(), vec![b' '; 1 << 20], b"\r\n".to_vec()].concat();
    let mut sent = 0usize;
    while sent < 300 << 20 {
        if c.write_all(&chunk).is_err() {
            break;
        }
        sent += 1 << 20;
    }
    assert!(sent < 300 << 20, "the server read a 300 MB body to its end");
    let mut raw = Vec::new();
    let _ = c.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 413"), "{text}");
    let after = vm_hwm_mib(pid);
    assert!(after < before + 64.0, "peak resident memory grew from {before:.1} to {after:.1} MiB");
    let m = s.metrics();
    assert!(metric(&m, "parva_request_errors_total", &[("service", "svc"), ("code", "413")]) >= 1.0, "{m}");
    assert_eq!(post_json(s.addr, "/v2/models/svc/infer", &one_row()).0, 200);
}

fn closed_after(s: &mut TcpStream, trickle: bool, give_up: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = [0u8; 256];
    while t0.elapsed() < give_up {
        if trickle && s.write_all(b"X").is_err() {
            return Some(t0.elapsed());
        }
        match s.read(&mut buf) {
            Ok(0) => return Some(t0.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(t0.elapsed()),
        }
    }
    None
}

// Issue 11: header lines trickled for over a minute and thousands of idle sockets stayed open.
#[test]
fn slowloris_and_idle_connections_are_closed_by_their_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), "svc", &["--header-timeout", "1s", "--idle-timeout", "2s"]);
    // Times are taken before each connect: the server's timers cannot start earlier, so a close
    // before the timeout is a bug whatever the load (issue 19: the clock used to start after the
    // connect and the first write, so a busy client thread could see an early close).
    let slow_since = Instant::now();
    let mut slow = TcpStream::connect(s.addr).unwrap();
    slow.write_all(b"GET /v2/health/live HTTP/1.1\r\n").unwrap();
    let idle_since = Instant::now();
    let mut idle = TcpStream::connect(s.addr).unwrap();
    closed_after(&mut slow, true, Duration::from_secs(30)).expect("a trickled head was not cut off within 30 s");
    let t = slow_since.elapsed();
    assert!(t >= Duration::from_millis(990), "cut off before the 1 s header timeout: {t:?}");
    closed_after(&mut idle, false, Duration::from_secs(30)).expect("an idle connection stayed open 30 s");
    let t = idle_since.elapsed();
    assert!(t >= Duration::from_millis(1990), "closed before the 2 s idle timeout: {t:?}");
    // Ordinary requests are unaffected.
    assert_eq!(post_json(s.addr, "/v2/models/svc/infer", &one_row()).0, 200);
}

/// Check every sample line of an exposition: `name{k="v",...} value` with escaped values.
fn unparsable_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| {
            let Some((series, value)) = l.rsplit_once(' ') else { return true };
            if value.parse::<f64>().is_err() {
                return true;
            }
            let Some((_, labels)) = series.split_once('{') else { return false };
            let Some(labels) = labels.strip_suffix('}') else { return true };
            // Walk k="v" pairs, honouring escapes.
            let mut chars = labels.chars().peekable();
            while chars.peek().is_some() {
                let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
                if key.is_empty() || chars.next() != Some('"') {
                    return true;
                }
                loop {
                    match chars.next() {
                        None => return true,
                        Some('"') => break,
                        Some('\\') => {
                            if !matches!(chars.next(), Some('\\' | '"' | 'n')) {
                                return true;
                            }
                        }
                        Some(_) => {}
                    }
                }
                match chars.next() {
                    None => break,
                    Some(',') => {}
                    Some(_) => return true,
                }
            }
            false
        })
        .map(str::to_string)
        .collect()
}

// Issue 11: service names were written into /metrics unescaped, and requests refused before
// decoding were not counted. Issue 34/33: a name with quotes or backslashes is refused where the
// map is read (one rule for names: a Kubernetes label value and a safe file name), so only the
// unknown names of requests reach /metrics, counted as `_unknown`.
#[test]
fn names_outside_the_rule_are_refused_and_every_refusal_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (models, prof) = tiny_setup(dir.path(), &[(1, 1, 0.005), (1, 4, 0.005)]);
    let plan = write_plan(dir.path(), &[r#"0,0,"a""b\c",tiny,0,1,4,1,,,,10,1000"#]);
    let out = parva(&["serve", "--plan", plan.to_str().unwrap(), "--backend", "emulated", "--models", &models, "--prof-data", &prof, "--listen", "127.0.0.1:0"]);
    let err = crate::util::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("plan.csv:2: field `service`") && err.contains("a name is 1 to 63 characters"), "{err}");

    let name = "a.b_c-1";
    let s = serve(dir.path(), name, &[]);
    let path = format!("/v2/models/{name}/infer");
    assert_eq!(post_json(s.addr, &path, &one_row()).0, 200);
    let (code, _, body) = request(s.addr, "POST", &path, &[], b"{broken");
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
    let (code, _, _) = request(s.addr, "POST", &path, &[], &vec![b' '; 100_000]);
    assert_eq!(code, 413);
    assert_eq!(post_json(s.addr, "/v2/models/unknown-1/infer", &one_row()).0, 404);
    assert_eq!(post_json(s.addr, "/v2/models/a%22b%5Cc/infer", &one_row()).0, 404);
    let m = s.metrics();
    assert_eq!(unparsable_lines(&m), Vec::<String>::new(), "{m}");
    assert_eq!(metric(&m, "parva_request_errors_total", &[("service", name), ("code", "400")]), 1.0, "{m}");
    assert_eq!(metric(&m, "parva_request_errors_total", &[("service", name), ("code", "413")]), 1.0, "{m}");
    assert_eq!(metric(&m, "parva_requests_total", &[("service", name)]), 3.0, "{m}");
    assert_eq!(metric(&m, "parva_request_errors_total", &[("service", "_unknown"), ("code", "404")]), 2.0, "{m}");
    assert!(!m.contains("unknown-1") && !m.contains("a\\\"b"), "{m}");
    assert_eq!(get(s.addr, "/v2/health/live").0, 200);
}

#[test]
fn serve_help_documents_every_limit_with_its_default() {
    let out = parva(&["serve", "--help"]);
    assert_eq!(out.status.code(), Some(0), "{}", crate::util::stderr(&out));
    let help = stdout(&out);
    for (flag, default) in [
        ("--max-request-rows", "128"),
        ("--max-body-mib", "256"),
        ("--max-inflight-mib", "2048"),
        ("--max-connections", "65536"),
        ("--header-timeout", "10s"),
        ("--idle-timeout", "60s"),
        ("--body-timeout", "60s"),
    ] {
        let at = help.find(flag).unwrap_or_else(|| panic!("{flag} missing from --help:\n{help}"));
        let rest = &help[at..];
        let end = rest.find("\n  -").unwrap_or(rest.len());
        assert!(rest[..end].contains(&format!("[default: {default}]")), "{flag}: {}", &rest[..end]);
    }
    let out = parva(&["serve", "--plan", "x.csv", "--header-timeout", "0s"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(crate::util::stderr(&out).contains("must be 0.1s to 1h"), "{}", crate::util::stderr(&out));
}

/// The soak command, briefly (the acceptance run is minutes: scripts/bench/soak-results.md).
#[test]
fn soak_command_short_run_passes() {
    if std::process::Command::new("python3").arg("--version").output().is_err() {
        // scripts/test needs python3 for tritonclient's venv and sets PARVA_REQUIRE_TRITONCLIENT:
        // there (CI), a missing python3 is a failure, not a skip.
        let required = ["PARVA_REQUIRE_SOAK", "PARVA_REQUIRE_TRITONCLIENT"].iter().any(|v| std::env::var_os(v).is_some());
        assert!(!required, "python3 is missing (PARVA_REQUIRE_SOAK or PARVA_REQUIRE_TRITONCLIENT is set)");
        eprintln!("skipped: python3 not found");
        return;
    }
    let out = std::process::Command::new("python3")
        .arg(repo().join("scripts/soak"))
        .args(["--duration", "15s", "--rate", "20", "--slow", "4", "--parva", env!("CARGO_BIN_EXE_parva")])
        .output()
        .expect("run scripts/soak");
    let text = format!("{}{}", stdout(&out), crate::util::stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("result: PASS") && text.contains("alive throughout, exit code 0"), "{text}");
}
