//! Predicted vs measured: run `parva simulate`'s discrete-event simulation of the deployment map
//! with the run's settings (duration, warm-up, arrival process, seed, rate scale) and put its p50
//! and p99 beside each measured service. Only for fixed-rate runs: a trace has no simulated counterpart.

use std::collections::BTreeMap;

use parva_core::sim::{self, SimConfig, SimError};
use parva_core::{DeploymentMap, ProfileSet, Service};

use crate::report::Report;
use crate::Spec;

/// What the simulator predicts for one service, ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Predicted {
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The simulator's p50 and p99 (ms) per service for `map` under the settings of `spec` (duration,
/// warm-up, arrival process, seed, rate scale); `services` overrides the map's rates and SLOs;
/// `data_path_s`: seconds each request of a service spends on the data path (see
/// [`parva_core::data_path`]).
pub fn predict(
    map: &DeploymentMap,
    profiles: &ProfileSet,
    services: Option<&[Service]>,
    spec: &Spec,
    data_path_s: BTreeMap<String, f64>,
) -> Result<BTreeMap<String, Predicted>, SimError> {
    let config = SimConfig {
        duration_s: spec.duration_s,
        warmup_s: spec.warmup_s,
        seed: spec.seed,
        distribution: spec.distribution,
        percentile: spec.percentile.min(99.999),
        rate_scale: spec.rate_scale,
        interference: parva_core::deploy::default_interference(map),
        // A table that cannot be read leaves the margin (verify itself does not need it).
        measured: parva_core::interference::for_map(map, &profiles.dir).unwrap_or_default(),
        data_path_s,
    };
    let report = sim::simulate(map, profiles, services, &config)?;
    Ok(report.services.into_iter().map(|s| (s.service, Predicted { p50_ms: s.p50_ms, p99_ms: s.p99_ms })).collect())
}

/// Put `predicted` p50s and p99s into `report`; `how` says where they come from.
pub fn attach(report: &mut Report, predicted: &BTreeMap<String, Predicted>, how: String) {
    for s in &mut report.services {
        let p = predicted.get(&s.service);
        s.predicted_p50_ms = p.map(|p| p.p50_ms);
        s.predicted_p99_ms = p.map(|p| p.p99_ms);
    }
    report.prediction = Some(how);
}

#[cfg(test)]
mod tests {
    use super::*;
    use parva_core::profile::ModelProfile;
    use std::path::Path;

    #[test]
    fn the_simulator_predicts_each_service_of_the_map() {
        let mut text = String::from("Mig instance,Batch size,Workload Number,Throughput,Latency\n");
        for b in [1u32, 2, 4] {
            let lat = 0.010 + 0.002 * b as f64;
            text.push_str(&format!("1,{b},1,{},{lat}\n", b as f64 / lat));
        }
        let t = ModelProfile::read_from(text.as_bytes(), Path::new("m.csv"), "m".into(), None).unwrap();
        let profiles = ProfileSet { dir: "mem".into(), models: [("m".to_string(), t)].into_iter().collect() };
        let map_text = "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n\
                        0,0,a,m,0,1,1,1,,,,20,200\n0,0,b,m,1,1,4,1,,,,50,300\n";
        let (map, _) = DeploymentMap::read_from(map_text.as_bytes(), Path::new("d.csv")).unwrap();
        let spec = Spec {
            endpoint: crate::Endpoint::parse("http://h:1").unwrap(),
            services: Vec::new(),
            trace: None,
            distribution: crate::Distribution::Poisson,
            seed: 1,
            rate_scale: 1.0,
            percentile: 99.0,
            duration_s: 20.0,
            warmup_s: 2.0,
            max_in_flight: 10,
            connections: None,
            timeout: std::time::Duration::from_secs(1),
            wait_ready: std::time::Duration::from_secs(1),
            wire: crate::Wire::Binary,
            tool: String::new(),
        };
        let p99 = |m: BTreeMap<String, Predicted>| -> BTreeMap<String, f64> { m.into_iter().map(|(k, v)| (k, v.p99_ms)).collect() };
        let full = predict(&map, &profiles, None, &spec, BTreeMap::new()).unwrap();
        assert!(full.values().all(|v| v.p50_ms > 0.0 && v.p50_ms <= v.p99_ms), "{full:?}");
        let p = p99(full);
        assert_eq!(p.keys().collect::<Vec<_>>(), ["a", "b"]);
        // Batch 1 runs in 12 ms: a's p99 is at least that and far below its SLO at 24 % load.
        assert!(p["a"] >= 12.0 && p["a"] < 200.0, "{p:?}");
        // The same seed and settings give the same prediction (verify's report is reproducible).
        assert_eq!(p99(predict(&map, &profiles, None, &spec, BTreeMap::new()).unwrap()), p);
        // The run's rate scale reaches the simulation: a at 4x (80/s on 83/s of 12 ms batches)
        // queues far longer than at 1x.
        let busy = p99(predict(&map, &profiles, None, &Spec { rate_scale: 4.0, ..spec.clone() }, BTreeMap::new()).unwrap());
        assert!(busy["a"] > 3.0 * p["a"], "4x {busy:?} vs 1x {p:?}");
        // A service list overrides the map's rates: a at 1/s hardly queues.
        let quiet = [Service { name: "a".into(), model: "m".into(), rate: 1.0, slo_ms: 200.0 }, Service { name: "b".into(), model: "m".into(), rate: 50.0, slo_ms: 300.0 }];
        let q = p99(predict(&map, &profiles, Some(&quiet), &spec, BTreeMap::new()).unwrap());
        assert!(q["a"] <= p["a"] && q["a"] < 13.0, "{q:?} vs {p:?}");
    }

}
