//! `parva serve --backend torch` on the tiny TorchScript fixtures of `models/fixtures/`, over real
//! HTTP: outputs are checked against values computed here from the fixtures' documented weights.

use std::time::Duration;

use serde_json::{Value, json};

use crate::serve_support::{post_json, request, start, write_plan};
use crate::util::{repo, torch_worker};

/// linear fixture: y = x W^T + b, W[i][j] = (i - j) / 4, b[i] = i - 1 (see scripts/export_models.py).
fn linear_expected(x: &[f32]) -> Vec<f32> {
    x.chunks(4)
        .flat_map(|row| (0..3).map(move |i| row.iter().enumerate().map(|(j, v)| v * (i as f32 - j as f32) / 4.0).sum::<f32>() + (i as f32 - 1.0)))
        .collect()
}

fn as_f32(v: &Value) -> Vec<f32> {
    v.as_array().expect("data array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()))
}

#[test]
fn torch_backend_serves_fixture_models_with_correct_outputs() {
    if torch_worker().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path(), &["0,0,lin,linear,0,4,4,2,,,,100,200", "0,0,pair,two_io,4,3,2,1,,,,100,200"]);
    let models = repo().join("models/fixtures");
    let server = start(&["--plan", plan.to_str().unwrap(), "--backend", "torch", "--models", models.to_str().unwrap(), "--threads", "1"]);
    server.wait_200("/v2/health/ready", Duration::from_secs(120));

    // Metadata as the model's JSON says.
    let (code, meta) = crate::serve_support::get(server.addr, "/v2/models/lin");
    assert_eq!(code, 200);
    let meta: Value = serde_json::from_slice(&meta).unwrap();
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 4]));
    assert_eq!(meta["outputs"][0]["datatype"], "FP32");

    // JSON tensors, batch of 3 (nested data is accepted).
    let x: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
    let rows: Vec<Vec<f32>> = x.chunks(4).map(<[f32]>::to_vec).collect();
    let (code, out) = post_json(server.addr, "/v2/models/lin/infer",
        &json!({"id": "r1", "inputs": [{"name": "input__0", "shape": [3, 4], "datatype": "FP32", "data": rows}]}));
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["id"], "r1");
    assert_eq!(out["outputs"][0]["shape"], json!([3, 3]));
    let got = as_f32(&out["outputs"][0]["data"]);
    assert!(close(&got, &linear_expected(&x)), "{got:?} vs {:?}", linear_expected(&x));

    // Binary tensor data extension both ways (what tritonclient sends with binary_data=True).
    let x2: Vec<f32> = vec![1.0, -1.0, 0.25, 8.0];
    let head = json!({"inputs": [{"name": "input__0", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}],
                      "outputs": [{"name": "output__0", "parameters": {"binary_data": true}}]})
    .to_string();
    let mut body = head.clone().into_bytes();
    body.extend(x2.iter().flat_map(|v| v.to_le_bytes()));
    let hdrs = [("Inference-Header-Content-Length", head.len().to_string()), ("Content-Type", "application/octet-stream".into())];
    let (code, resp_headers, resp) = request(server.addr, "POST", "/v2/models/lin/infer", &hdrs, &body);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&resp));
    let json_len: usize = resp_headers.iter().find(|(k, _)| k == "inference-header-content-length").expect("binary response header").1.parse().unwrap();
    let rjson: Value = serde_json::from_slice(&resp[..json_len]).unwrap();
    assert_eq!(rjson["outputs"][0]["parameters"]["binary_data_size"], 12);
    let got: Vec<f32> = resp[json_len..].chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert!(close(&got, &linear_expected(&x2)), "{got:?}");

    // Two inputs (INT64 and FP32) and two outputs of different types.
    let (code, out) = post_json(server.addr, "/v2/models/pair/infer", &json!({"inputs": [
        {"name": "scale", "shape": [2, 1], "datatype": "FP32", "data": [0.5, -2.0]},
        {"name": "ids", "shape": [2, 3], "datatype": "INT64", "data": [1, 2, 3, 10, 20, 30]}]}));
    assert_eq!(code, 200, "{out}");
    let by_name = |n: &str| out["outputs"].as_array().unwrap().iter().find(|o| o["name"] == n).cloned().unwrap();
    assert_eq!(by_name("total")["data"], json!([6, 60]));
    assert_eq!(by_name("total")["datatype"], "INT64");
    assert_eq!(as_f32(&by_name("scaled")["data"]), vec![3.0, -120.0]);

    // Concurrent single-row requests are batched together and each gets its own row back.
    let addr = server.addr;
    let handles: Vec<_> = (0..12)
        .map(|k| {
            std::thread::spawn(move || {
                let x: Vec<f32> = (0..4).map(|j| (k * 4 + j) as f32).collect();
                let (code, out) = post_json(addr, "/v2/models/lin/infer",
                    &json!({"inputs": [{"name": "input__0", "shape": [1, 4], "datatype": "FP32", "data": x}]}));
                assert_eq!(code, 200, "{out}");
                assert!(close(&as_f32(&out["outputs"][0]["data"]), &linear_expected(&x)), "request {k}: {out}");
            })
        })
        .collect();
    for h in handles {
        h.join().expect("request thread");
    }

    // A shape that does not match the metadata: 400 naming the input and both shapes.
    let (code, out) = post_json(server.addr, "/v2/models/lin/infer",
        &json!({"inputs": [{"name": "input__0", "shape": [1, 5], "datatype": "FP32", "data": [1, 2, 3, 4, 5]}]}));
    assert_eq!(code, 400);
    let msg = out["error"].as_str().unwrap();
    assert!(msg.contains("input__0") && msg.contains("[1, 5]") && msg.contains("[-1, 4]"), "{msg}");
    let text = server.metrics();
    assert!(text.contains("parva_backend_info{backend=\"torch\",device=\"cpu\"} 1"), "{text}");
}
