//! The queueing model against the simulator: one segment of one process, linear batch latency
//! curves over a grid of fixed/per-request cost ratios, batch sizes and SLOs.

use super::*;
use crate::deploy::DeploymentMap;
use crate::profile::{ModelProfile, ProfileSet};
use crate::sim::{SimConfig, simulate};
use std::path::Path;

/// A batch of k takes `fixed + per * k` seconds.
fn profiles(fixed: f64, per: f64, b: u32) -> ProfileSet {
    let mut text = String::from("Mig instance,Batch size,Workload Number,Throughput,Latency\n");
    let mut k = 1;
    while k <= b {
        let lat = fixed + per * k as f64;
        text.push_str(&format!("1,{k},1,{},{lat}\n", k as f64 / lat));
        k *= 2;
    }
    let t = ModelProfile::read_from(text.as_bytes(), Path::new("m.csv"), "m".into(), None).unwrap();
    ProfileSet { dir: "mem".into(), models: [("m".to_string(), t)].into_iter().collect() }
}

fn sim_p99(p: &ProfileSet, b: u32, rate: f64, slo_ms: f64, seed: u64) -> f64 {
    sim_p50_p99(p, b, rate, slo_ms, seed).1
}

/// Simulated (p50, p99) in ms.
fn sim_p50_p99(p: &ProfileSet, b: u32, rate: f64, slo_ms: f64, seed: u64) -> (f64, f64) {
    let text = format!(
        "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n\
         0,0,a,m,0,1,{b},1,,,,{rate},{slo_ms}\n"
    );
    let map = DeploymentMap::read_from(text.as_bytes(), Path::new("d.csv")).unwrap().0;
    let duration = (200_000.0 / rate).clamp(60.0, 3000.0);
    let cfg = SimConfig { duration_s: duration, warmup_s: 5.0, seed, ..SimConfig::default() };
    let s = &simulate(&map, p, None, &cfg).unwrap().services[0];
    (s.p50_ms, s.p99_ms)
}

/// The largest rate whose simulated p99 is within the SLO (bisection).
fn sim_capacity(p: &ProfileSet, b: u32, slo_ms: f64, ceiling: f64) -> f64 {
    let (mut ok, mut bad) = (0.0, ceiling);
    for _ in 0..12 {
        let mid = 0.5 * (ok + bad);
        if sim_p99(p, b, mid, slo_ms, 1) <= slo_ms { ok = mid } else { bad = mid }
    }
    ok
}

pub(super) struct Case {
    pub fixed: f64,
    pub per: f64,
    pub b: u32,
    pub slo_ms: f64,
}

pub(super) fn grid() -> Vec<Case> {
    let mut cases = Vec::new();
    for (fixed, per) in [(0.0005, 0.001), (0.004, 0.009), (0.004, 0.001), (0.010, 0.0005)] {
        for b in [1u32, 2, 4, 8, 16, 32] {
            let full = fixed + per * b as f64;
            for m in [1.3, 1.7, 2.2, 3.0, 5.0, 10.0] {
                let slo_ms = (m * full * 1000.0 / (1.0 - GUARD)).max(full * 1000.0 + 2.0);
                cases.push(Case { fixed, per, b, slo_ms });
            }
        }
    }
    cases
}
const GUARD: f64 = crate::batching::GUARD_FRACTION;

/// (model capacity, simulated capacity, simulated p99 at the model's capacity) per case.
pub(super) fn compare(c: &Case) -> (f64, f64, f64) {
    let lat = |k: u32| c.fixed + c.per * k as f64;
    let q = QueueModel { policy: BatchPolicy::new(c.b, c.slo_ms), quantile: 0.99, splits: 1 };
    let model = q.max_rate(&lat).unwrap_or(0.0);
    let p = profiles(c.fixed, c.per, c.b);
    let ceiling = c.b as f64 / lat(c.b);
    let sim = sim_capacity(&p, c.b, c.slo_ms, ceiling);
    let at_model = if model > 0.0 { sim_p99(&p, c.b, model, c.slo_ms, 2) } else { 0.0 };
    (model, sim, at_model)
}

/// The model never promises a segment clearly more than the simulator measures (it may promise
/// less); checked on a few cases of each kind: deadline-safe, tight, loose, batch of one.
#[test]
fn the_model_is_safe_against_the_simulator() {
    let cases = [
        Case { fixed: 0.004, per: 0.009, b: 4, slo_ms: 126.3 },
        Case { fixed: 0.004, per: 0.009, b: 8, slo_ms: 136.0 },
        Case { fixed: 0.0005, per: 0.001, b: 16, slo_ms: 52.1 },
        Case { fixed: 0.004, per: 0.001, b: 1, slo_ms: 26.3 },
        Case { fixed: 0.010, per: 0.0005, b: 32, slo_ms: 60.2 },
    ];
    for c in cases {
        let (model, sim, at_model) = compare(&c);
        assert!(model > 0.0 && model <= 1.03 * sim, "b {} slo {}: model {model} vs simulated {sim}", c.b, c.slo_ms);
        assert!(at_model <= 1.03 * c.slo_ms, "b {} slo {}: p99 {at_model} ms at the model's capacity", c.b, c.slo_ms);
        // And it is not uselessly timid there.
        assert!(model >= 0.6 * sim, "b {} slo {}: model {model} vs simulated {sim}", c.b, c.slo_ms);
    }
}

#[test]
#[ignore = "calibration table: cargo test -p parva-core --release calibration -- --ignored --nocapture"]
fn calibration_table() {
    println!("fixed_ms per_ms b slo_ms | model sim ratio | p99@model/slo");
    let mut ratios = Vec::new();
    for c in grid() {
        let (model, sim, at) = compare(&c);
        let ratio = if sim > 0.0 { model / sim } else { f64::NAN };
        ratios.push(ratio);
        println!(
            "{:.1} {:.1} {} {:.1} | {:.1} {:.1} {:.3} | {:.3}",
            c.fixed * 1e3, c.per * 1e3, c.b, c.slo_ms, model, sim, ratio, at / c.slo_ms
        );
    }
    let ok: Vec<f64> = ratios.iter().copied().filter(|r| r.is_finite()).collect();
    let mean = ok.iter().sum::<f64>() / ok.len() as f64;
    let max = ok.iter().copied().fold(0.0, f64::max);
    let min = ok.iter().copied().fold(f64::INFINITY, f64::min);
    println!("ratio model/sim: mean {mean:.3} min {min:.3} max {max:.3}");
}

/// Loads at which the model's predictions are compared with the simulator, as shares of the
/// planned capacity.
pub(super) const LOADS: [f64; 4] = [0.1, 0.25, 0.5, 1.0];

/// Per load of [`LOADS`]: (model p50, sim p50, model p99, sim p99), ms, at that share of the
/// model's capacity.
pub(super) fn compare_loads(c: &Case) -> Vec<(f64, f64, f64, f64)> {
    let lat = |k: u32| c.fixed + c.per * k as f64;
    let q = QueueModel { policy: BatchPolicy::new(c.b, c.slo_ms), quantile: 0.99, splits: 1 };
    let Some(cap) = q.max_rate(&lat) else { return Vec::new() };
    let p = profiles(c.fixed, c.per, c.b);
    LOADS
        .iter()
        .map(|share| {
            let lambda = share * cap;
            let (s50, s99) = sim_p50_p99(&p, c.b, lambda, c.slo_ms, 3);
            (1000.0 * q.latency_at(lambda, 0.5, &lat), s50, 1000.0 * q.latency_at(lambda, 0.99, &lat), s99)
        })
        .collect()
}

/// Issue 36: the model predicts the running policy at low load too (a lone request goes at
/// once): p50 and p99 at 10 % and 25 % of the planned capacity against the simulator.
#[test]
fn predictions_at_low_load_follow_the_simulator() {
    let cases = [
        Case { fixed: 0.004, per: 0.009, b: 8, slo_ms: 136.0 },
        Case { fixed: 0.0005, per: 0.001, b: 16, slo_ms: 52.1 },
        Case { fixed: 0.010, per: 0.0005, b: 32, slo_ms: 60.2 },
    ];
    for c in cases {
        let rows = compare_loads(&c);
        assert_eq!(rows.len(), LOADS.len());
        for (i, (m50, s50, m99, s99)) in rows.iter().take(2).enumerate() {
            let at = format!("b {} slo {} at {} of capacity", c.b, c.slo_ms, LOADS[i]);
            assert!((m50 / s50 - 1.0).abs() <= 0.08, "{at}: p50 model {m50} vs simulated {s50}");
            assert!((m99 / s99 - 1.0).abs() <= 0.20, "{at}: p99 model {m99} vs simulated {s99}");
            // Far below the SLO: nothing waits for a deadline at low load any more.
            assert!(*s50 < 0.5 * c.slo_ms, "{at}: p50 {s50}");
        }
    }
}

#[test]
#[ignore = "prediction table: cargo test -p parva-core --release prediction_table -- --ignored --nocapture"]
fn prediction_table() {
    println!("fixed_ms per_ms b slo_ms | per load: model p50 / sim p50, model p99 / sim p99 (ms)");
    let mut errs: Vec<Vec<f64>> = vec![Vec::new(); LOADS.len()];
    for c in grid() {
        let rows = compare_loads(&c);
        let cells: Vec<String> = rows
            .iter()
            .enumerate()
            .map(|(i, (m50, s50, m99, s99))| {
                errs[i].push(m99 / s99 - 1.0);
                format!("{m50:.1}/{s50:.1} {m99:.1}/{s99:.1}")
            })
            .collect();
        println!("{:.1} {:.1} {} {:.1} | {}", c.fixed * 1e3, c.per * 1e3, c.b, c.slo_ms, cells.join(" | "));
    }
    for (i, e) in errs.iter().enumerate() {
        let mut e = e.clone();
        e.sort_by(f64::total_cmp);
        let within = e.iter().filter(|x| x.abs() <= 0.10).count();
        println!("load {:.2}: p99 model/sim - 1: median {:+.3}, min {:+.3}, max {:+.3}, within 10 %: {within} of {}", LOADS[i], e[e.len() / 2], e[0], e[e.len() - 1], e.len());
    }
}
