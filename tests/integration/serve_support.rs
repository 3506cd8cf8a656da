//! Helpers of the `parva serve` tests: a served node as a child process, a minimal HTTP/1.1
//! client, and readers for /metrics.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::util::repo;

/// A running `parva serve`; stopped with SIGTERM (then SIGKILL) when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub run_dir: tempfile::TempDir,
    pub stderr: mpsc::Receiver<String>,
}

/// Start `parva serve --listen 127.0.0.1:0 --run-dir <temp> ARGS` and wait until it listens.
pub fn start(args: &[&str]) -> Server {
    start_command("serve", args)
}

/// Start `parva SUB ARGS --listen 127.0.0.1:0` (`serve` and `segment` with `--run-dir <temp>`)
/// and wait until it listens.
pub fn start_command(sub: &str, args: &[&str]) -> Server {
    let run_dir = tempfile::Builder::new().prefix("pv").tempdir_in("/tmp").expect("temp dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_parva"));
    cmd.arg(sub).args(args).args(["--listen", "127.0.0.1:0"]);
    if sub != "route" {
        cmd.arg("--run-dir").arg(run_dir.path());
    }
    let mut child = cmd
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start parva {sub}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let (err_tx, err_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = err_tx.send(line);
        }
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
        let _ = child.kill();
        let err: Vec<String> = err_rx.try_iter().collect();
        panic!("parva {sub} printed no address; stderr:\n{}", err.join("\n"))
    });
    let addr = line
        .strip_prefix("listening on http://")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));
    Server { child, addr, run_dir, stderr: err_rx }
}

impl Server {
    /// Wait until GET `path` answers 200.
    pub fn wait_200(&self, path: &str, timeout: Duration) {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if get(self.addr, path).0 == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{path} not 200 within {timeout:?}; stderr: {}", self.stderr.try_iter().collect::<Vec<_>>().join("\n"));
    }

    pub fn pid_of(&self, worker: &str) -> u32 {
        read_pid(&self.run_dir.path().join(format!("{worker}.pid")))
    }

    pub fn metrics(&self) -> String {
        let (code, body) = get(self.addr, "/metrics");
        assert_eq!(code, 200);
        String::from_utf8(body).expect("metrics are text")
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(t0.elapsed() < Duration::from_secs(40), "parva serve did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), "TERM");
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn read_pid(path: &Path) -> u32 {
    std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

pub fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().expect("run kill");
    assert!(st.success(), "kill -{sig} {pid}");
}

pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

/// One HTTP/1.1 request on a fresh connection: (status, headers lower-cased, body).
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("send");
    s.write_all(body).expect("send body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers");
    let text = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = text.lines();
    let status: u16 = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).expect("status");
    let hdrs: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())))
        .collect();
    let body = raw[split + 4..].to_vec();
    assert!(!hdrs.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")), "chunked responses are not expected");
    (status, hdrs, body)
}

pub fn get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let (c, _, b) = request(addr, "GET", path, &[], b"");
    (c, b)
}

pub fn post_json(addr: SocketAddr, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let (c, _, b) = request(addr, "POST", path, &[("Content-Type", "application/json".into())], body.to_string().as_bytes());
    (c, serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null))
}

/// Sum of the samples of metric `name` whose labels include every `labels` pair.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// Write a deployment map (parva format) with the given rows after the header.
pub fn write_plan(dir: &Path, rows: &[&str]) -> PathBuf {
    let path = dir.join("plan.csv");
    let mut text = "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n".to_string();
    for r in rows {
        text.push_str(r);
        text.push('\n');
    }
    std::fs::write(&path, text).expect("write plan");
    path
}

/// A models dir with `tiny` (FP32 [-1, 2] -> FP32 [-1, 3]) and a profile set whose `tiny.csv`
/// gives `latencies` = [(procs, batch, seconds)] on 1-GPC instances; returns (models, prof_data).
pub fn tiny_setup(dir: &Path, latencies: &[(u32, u32, f64)]) -> (String, String) {
    let models = dir.join("models");
    let prof = dir.join("prof");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::create_dir_all(&prof).unwrap();
    let meta = serde_json::json!({"name": "tiny", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
                                  "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]});
    std::fs::write(models.join("tiny.json"), meta.to_string()).unwrap();
    let mut csv = "Mig instance,Batch size,Workload Number,Throughput,Latency\n".to_string();
    for (procs, batch, lat) in latencies {
        csv.push_str(&format!("1,{batch},{procs},{},{lat}\n", *batch as f64 / lat));
    }
    std::fs::write(prof.join("tiny.csv"), csv).unwrap();
    (models.display().to_string(), prof.display().to_string())
}

/// `parva serve --backend emulated` of the map `rows` on the [`tiny_setup`] model, with `extra` flags.
pub fn serve_tiny(dir: &Path, rows: &[&str], latencies: &[(u32, u32, f64)], extra: &[&str]) -> Server {
    let (models, prof) = tiny_setup(dir, latencies);
    let plan = write_plan(dir, rows);
    let mut args = vec!["--plan", plan.to_str().unwrap(), "--backend", "emulated", "--models", &models, "--prof-data", &prof];
    args.extend_from_slice(extra);
    start(&args)
}
