//! `parva simulate`: a discrete-event simulation of a deployment map.
//!
//! Every service gets Poisson (or evenly spaced) arrivals at its request rate. The router picks a
//! worker process for each request by smooth weighted round-robin over all processes of the
//! service's segments, weighted by each segment's planned capacity (the map's `throughput`
//! column, split evenly over its processes). Each process applies the batching policy of
//! [`crate::batching`] and runs a batch of `k` requests in the profiled latency for its instance
//! size and process count, interpolated at `k`. A request's latency runs from its arrival to the
//! end of its batch. Requests arriving during the warm-up are served but not counted. The same
//! seed gives the same result.

mod engine;

use std::collections::BTreeMap;

use crate::deploy::DeploymentMap;
use crate::limits;
use crate::profile::ProfileSet;
use crate::slo::Service;

/// The arrival process of every service at a fixed rate: the one type `simulate` and `verify`
/// (and their `--distribution` flags) share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Exponential gaps (a Poisson process), as independent users produce.
    Poisson,
    /// Even gaps of 1/rate, starting at a random phase so that services do not fire together.
    Constant,
}

/// Simulation settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SimConfig {
    /// Seconds of arrivals.
    pub duration_s: f64,
    /// Leading seconds whose requests are not counted.
    pub warmup_s: f64,
    pub seed: u64,
    pub distribution: Distribution,
    /// Percentile that decides pass/fail (e.g. 99.0).
    pub percentile: f64,
    /// Multiplier applied to every service's rate.
    pub rate_scale: f64,
    /// Slowdown of a segment that shares its GPU with other segments under MPS (0.2: its batches
    /// take 20 % longer): MPS shares split the SMs but not memory bandwidth or L2. 0 for MIG,
    /// whose instances are isolated (see [`crate::mig::DEFAULT_MPS_INTERFERENCE`]).
    pub interference: f64,
    /// Measured slowdowns of (model, share size) beside a neighbour (`interference.csv`, see
    /// [`crate::interference`]), used instead of `interference` where present.
    #[serde(skip)]
    pub measured: BTreeMap<(String, u8), f64>,
    /// Seconds each request of a service spends on the serving data path, added to its latency
    /// (see [`crate::data_path`]); services not listed add nothing.
    #[serde(skip)]
    pub data_path_s: BTreeMap<String, f64>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig { duration_s: 60.0, warmup_s: 5.0, seed: 1, distribution: Distribution::Poisson, percentile: 99.0, rate_scale: 1.0, interference: 0.0, measured: BTreeMap::new(), data_path_s: BTreeMap::new() }
    }
}

/// Why a map cannot be simulated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    #[error("service {service}: no rate and SLO (the map has no `rate`/`slo_ms` columns for it; give a service list)")]
    MissingSlo { service: String },
    #[error("segment of service {service}: model {model} has no profile table in the profile set")]
    MissingModel { service: String, model: String },
    #[error("segment of service {service}: {model} has no profiled point for size {size} with {procs} processes")]
    MissingPoint { service: String, model: String, size: u8, procs: u32 },
    /// A setting or a service value outside its range (see [`crate::limits`]).
    #[error("{what}: {rule}")]
    OutOfRange { what: String, rule: String },
    /// The run would exceed [`limits::MAX_SIM_ARRIVALS`] arrivals (refused before it starts).
    #[error(
        "the simulation would generate about {expected:.3e} arrivals (Σ rate x rate scale x duration), more than the \
         limit of {limit:.0e}; shorten --duration (at most {max_duration:.1} s at these rates) or lower --rate-scale"
    )]
    TooManyArrivals { expected: f64, limit: f64, max_duration: f64 },
}

/// Results for one service.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ServiceResult {
    pub service: String,
    pub model: String,
    pub segments: usize,
    pub processes: usize,
    pub slo_ms: f64,
    /// Requests/s that arrived in the measured window: the offered load, as `parva verify`
    /// counts it (its scheduled requests over the window); Poisson arrivals make it differ from
    /// `target_rate` by chance.
    pub offered_rate: f64,
    /// Requests/s completed inside the measured window (from warm-up to duration).
    pub served_rate: f64,
    /// The service's rate after `rate_scale`: what the arrivals were drawn at (verify's
    /// `target_rate`).
    pub target_rate: f64,
    /// Requests that arrived inside the window; all are served (the simulation drains), and the
    /// latency figures are theirs.
    pub requests: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Latency at the configured percentile.
    pub percentile_ms: f64,
    pub max_ms: f64,
    /// Share of requests within the SLO, percent.
    pub attainment_pct: f64,
    /// Whether latency at the configured percentile is within the SLO.
    pub pass: bool,
}

/// A finished simulation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SimReport {
    pub config: SimConfig,
    pub services: Vec<ServiceResult>,
    pub all_pass: bool,
    /// Events processed (arrivals, timers, batch completions).
    pub events: u64,
}

/// Per-service objective lookup: from the map's own columns, overridden by `services` when given.
pub fn service_slos(map: &DeploymentMap, services: Option<&[Service]>) -> Result<BTreeMap<String, (f64, f64)>, SimError> {
    let mut out = BTreeMap::new();
    if let Some(list) = services {
        for s in list {
            out.insert(s.name.clone(), (s.rate, s.slo_ms));
        }
    }
    for seg in &map.segments {
        if out.contains_key(&seg.service) {
            continue;
        }
        match (seg.rate, seg.slo_ms) {
            (Some(r), Some(l)) => {
                out.insert(seg.service.clone(), (r, l));
            }
            _ => return Err(SimError::MissingSlo { service: seg.service.clone() }),
        }
    }
    Ok(out)
}

/// Simulate `map` with execution times from `profiles`; `services` overrides rates and SLOs.
pub fn simulate(
    map: &DeploymentMap,
    profiles: &ProfileSet,
    services: Option<&[Service]>,
    config: &SimConfig,
) -> Result<SimReport, SimError> {
    simulate_with(map, &|_| Some(profiles), services, config)
}

/// Simulate a mixed fleet's map: each segment's execution times from the tables of its node's
/// GPU type (`by_type`, keyed by catalogue id). A segment whose type has no tables is an error.
pub fn simulate_fleet(
    map: &DeploymentMap,
    by_type: &std::collections::BTreeMap<String, ProfileSet>,
    services: Option<&[Service]>,
    config: &SimConfig,
) -> Result<SimReport, SimError> {
    simulate_with(map, &|seg| seg.gpu_type.as_deref().and_then(|t| by_type.get(t)), services, config)
}

fn simulate_with<'p>(
    map: &DeploymentMap,
    profiles: &dyn Fn(&crate::deploy::Segment) -> Option<&'p ProfileSet>,
    services: Option<&[Service]>,
    config: &SimConfig,
) -> Result<SimReport, SimError> {
    let range = |what: &str, r: &limits::Range, v: f64| {
        r.check(v).map(|_| ()).map_err(|rule| SimError::OutOfRange { what: what.to_string(), rule })
    };
    range("--duration", &limits::DURATION_S, config.duration_s)?;
    range("--rate-scale", &limits::RATE_SCALE, config.rate_scale)?;
    if !(config.interference.is_finite() && (0.0..=limits::MAX_INTERFERENCE).contains(&config.interference)) {
        return Err(SimError::OutOfRange {
            what: "--interference".into(),
            rule: format!("must be a number in [0, {}], found {}", limits::MAX_INTERFERENCE, config.interference),
        });
    }
    if !(config.warmup_s >= 0.0 && config.warmup_s < config.duration_s) {
        return Err(SimError::OutOfRange {
            what: "--warmup".into(),
            rule: format!("must be >= 0 and shorter than the duration ({} s), found {}", config.duration_s, config.warmup_s),
        });
    }
    if !(config.percentile > 0.0 && config.percentile < 100.0) {
        return Err(SimError::OutOfRange { what: "--percentile".into(), rule: format!("must be in (0, 100), found {}", config.percentile) });
    }
    let slos = service_slos(map, services)?;
    for (name, (rate, slo_ms)) in &slos {
        range(&format!("service {name:?}"), &limits::RATE, *rate)?;
        range(&format!("service {name:?}"), &limits::SLO_MS, *slo_ms)?;
    }
    for seg in &map.segments {
        if seg.batch_size == 0 || seg.batch_size > limits::MAX_BATCH || seg.num_proc == 0 || seg.num_proc > limits::MAX_PROCS {
            return Err(SimError::OutOfRange {
                what: format!("segment of service {:?}", seg.service),
                rule: format!(
                    "batch size must be in 1..={} and processes in 1..={}, found {} and {}",
                    limits::MAX_BATCH,
                    limits::MAX_PROCS,
                    seg.batch_size,
                    seg.num_proc
                ),
            });
        }
    }
    // Only services with segments get arrivals; bound their expected number before anything runs.
    let served: std::collections::BTreeSet<&str> = map.segments.iter().map(|s| s.service.as_str()).collect();
    let total_rate: f64 = slos.iter().filter(|(n, _)| served.contains(n.as_str())).map(|(_, (r, _))| r * config.rate_scale).sum();
    let expected = total_rate * config.duration_s;
    if expected > limits::MAX_SIM_ARRIVALS {
        return Err(SimError::TooManyArrivals {
            expected,
            limit: limits::MAX_SIM_ARRIVALS,
            max_duration: limits::MAX_SIM_ARRIVALS / total_rate,
        });
    }
    let model = engine::Model::build(map, profiles, &slos, config)?;
    Ok(model.run(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::ModelProfile;
    use std::path::Path;

    /// One model whose batch of k takes 2 ms + 1 ms per request on any instance.
    fn profiles() -> ProfileSet {
        let mut text = String::from("Mig instance,Batch size,Workload Number,Throughput,Latency\n");
        for b in [1u32, 2, 4, 8] {
            let lat = 0.002 + 0.001 * b as f64;
            text.push_str(&format!("1,{b},1,{},{lat}\n", b as f64 / lat));
        }
        let t = ModelProfile::read_from(text.as_bytes(), Path::new("m.csv"), "m".into(), None).unwrap();
        ProfileSet { dir: "mem".into(), models: [("m".to_string(), t)].into_iter().collect() }
    }

    fn map(rows: &[(&str, u32, f64, f64)]) -> DeploymentMap {
        let mut text = String::from("node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n");
        for (i, (svc, batch, rate, slo)) in rows.iter().enumerate() {
            text.push_str(&format!("0,0,{svc},m,{i},1,{batch},1,,,,{rate},{slo}\n"));
        }
        DeploymentMap::read_from(text.as_bytes(), Path::new("d.csv")).unwrap().0
    }

    fn cfg(seed: u64) -> SimConfig {
        SimConfig { duration_s: 20.0, warmup_s: 2.0, seed, ..SimConfig::default() }
    }

    #[test]
    fn light_load_meets_slo_and_serves_offered_rate() {
        let r = simulate(&map(&[("a", 8, 200.0, 50.0)]), &profiles(), None, &cfg(1)).unwrap();
        let s = &r.services[0];
        assert!(s.pass && r.all_pass, "{s:?}");
        assert!((s.served_rate - 200.0).abs() < 15.0, "{s:?}");
        // Offered is what arrived in the window (as verify counts it), target what was asked.
        assert_eq!(s.target_rate, 200.0);
        assert!((s.offered_rate - s.requests as f64 / 18.0).abs() < 1e-9 && (s.offered_rate - 200.0).abs() < 15.0, "{s:?}");
        assert!(s.p99_ms <= 50.0 && s.max_ms < 60.0, "{s:?}");
        assert!(s.attainment_pct > 99.0);
    }

    #[test]
    fn overload_fails_and_latency_grows() {
        // Capacity is 8 / 10 ms = 800/s; offer 1000/s.
        let r = simulate(&map(&[("a", 8, 1000.0, 50.0)]), &profiles(), None, &cfg(1)).unwrap();
        let s = &r.services[0];
        assert!(!s.pass && !r.all_pass, "{s:?}");
        assert!(s.served_rate < 850.0 && s.max_ms > 1000.0, "{s:?}");
        assert!(s.offered_rate > 950.0 && s.target_rate == 1000.0, "offered is the arrivals, not what was served: {s:?}");
    }

    #[test]
    fn same_seed_same_result_other_seed_differs() {
        let m = map(&[("a", 4, 300.0, 30.0), ("b", 8, 500.0, 40.0)]);
        let a = simulate(&m, &profiles(), None, &cfg(7)).unwrap();
        let b = simulate(&m, &profiles(), None, &cfg(7)).unwrap();
        let c = simulate(&m, &profiles(), None, &cfg(8)).unwrap();
        assert_eq!(a, b);
        let key = |r: &SimReport| (r.services[0].requests, r.services[1].requests, r.services[0].p50_ms.to_bits());
        assert_ne!(key(&a), key(&c));
    }

    /// Issue 17: a segment beside another on its GPU runs `1 + interference` times as slow; one
    /// alone on its GPU does not; out-of-range values are refused.
    #[test]
    fn interference_slows_only_segments_that_share_their_gpu() {
        // Batch 1 at 20/s: no queueing, so p50 is close to one batch's latency (3 ms).
        let shared = map(&[("a", 1, 20.0, 100.0), ("b", 1, 20.0, 100.0)]);
        let mut apart = shared.clone();
        apart.segments[1].gpu = 1;
        let slow = SimConfig { interference: 1.0, ..cfg(5) };
        let p50 = |m: &DeploymentMap, c: &SimConfig| simulate(m, &profiles(), None, c).unwrap().services.iter().map(|s| s.p50_ms).collect::<Vec<_>>();
        let base = p50(&shared, &cfg(5));
        let doubled = p50(&shared, &slow);
        for (b, d) in base.iter().zip(&doubled) {
            assert!((d / b - 2.0).abs() < 0.15, "{base:?} -> {doubled:?}");
        }
        assert_eq!(p50(&apart, &slow), p50(&apart, &cfg(5)), "alone on its GPU: no interference");
        for bad in [-0.1, f64::NAN, 11.0] {
            let e = simulate(&shared, &profiles(), None, &SimConfig { interference: bad, ..cfg(1) }).unwrap_err().to_string();
            assert!(e.starts_with("--interference: must be a number in [0, 10]"), "{e}");
        }
    }

    /// Issue 21: each request of a service with a data-path cost takes that much longer; the
    /// batching (which the data path does not change) and other services are untouched.
    #[test]
    fn the_data_path_adds_its_cost_to_every_request_of_its_service() {
        let m = map(&[("a", 1, 20.0, 100.0), ("b", 1, 20.0, 100.0)]);
        let with = SimConfig { data_path_s: [("a".to_string(), 0.004)].into_iter().collect(), ..cfg(5) };
        let run = |c: &SimConfig| simulate(&m, &profiles(), None, c).unwrap().services;
        let (base, slow) = (run(&cfg(5)), run(&with));
        assert!((slow[0].p50_ms - base[0].p50_ms - 4.0).abs() < 0.01, "{:?} -> {:?}", base[0], slow[0]);
        assert!((slow[0].p99_ms - base[0].p99_ms - 4.0).abs() < 0.05, "{:?} -> {:?}", base[0], slow[0]);
        assert_eq!(slow[1].p99_ms, base[1].p99_ms);
    }

    #[test]
    fn lone_requests_go_at_once_at_low_load_and_none_waits_past_its_deadline() {
        // Issue 36: 5 req/s with batch 8 and a 100 ms SLO: an idle process takes a lone request
        // at once (a batch of 1 takes 3 ms) instead of holding it to its deadline (~92 ms).
        let r = simulate(&map(&[("a", 8, 5.0, 100.0)]), &profiles(), None, &cfg(3)).unwrap();
        let s = &r.services[0];
        assert!(s.p50_ms < 3.5 && s.max_ms <= 10.0, "{s:?}");
        // 700 req/s on a process whose full batch serves 800/s: no smaller batch keeps up, so
        // batches fill (or leave at the deadline); every request is within the SLO.
        let r = simulate(&map(&[("a", 8, 700.0, 100.0)]), &profiles(), None, &cfg(3)).unwrap();
        let s = &r.services[0];
        assert!(s.max_ms <= 100.0 && s.p50_ms > 10.0, "{s:?}");
    }

    #[test]
    fn weighted_round_robin_splits_by_capacity() {
        let mut m = map(&[("a", 8, 600.0, 50.0), ("a", 8, 600.0, 50.0)]);
        m.segments[0].throughput = Some(300.0);
        m.segments[1].throughput = Some(100.0);
        let p = profiles();
        let model = engine::Model::build(&m, &|_| Some(&p), &service_slos(&m, None).unwrap(), &cfg(1)).unwrap();
        assert_eq!(model.picks(0, 400), vec![300, 100]);
    }

    #[test]
    fn missing_slo_and_point_are_errors() {
        let mut m = map(&[("a", 8, 200.0, 50.0)]);
        m.segments[0].rate = None;
        assert!(matches!(simulate(&m, &profiles(), None, &cfg(1)), Err(SimError::MissingSlo { .. })));
        let mut m = map(&[("a", 8, 200.0, 50.0)]);
        m.segments[0].instance_size = 2;
        assert!(matches!(simulate(&m, &profiles(), None, &cfg(1)), Err(SimError::MissingPoint { .. })));
    }

    /// Issue 11: `--rate-scale` with a huge value aborted on allocation, and a huge `--duration`
    /// ran forever; both are refused before the run, with the limit.
    #[test]
    fn huge_rate_scale_and_duration_are_refused_before_the_run() {
        let m = map(&[("a", 8, 200.0, 50.0)]);
        for (config, want) in [
            (SimConfig { rate_scale: 1e300, ..cfg(1) }, "--rate-scale: rate scale must be a finite number in (0, 1000] x, found 1e300"),
            (SimConfig { rate_scale: f64::NAN, ..cfg(1) }, "--rate-scale: rate scale must be a finite number in (0, 1000] x, found NaN"),
            (SimConfig { duration_s: 1e300, ..cfg(1) }, "--duration: duration must be a finite number in (0, 86400] s, found 1e300"),
            (SimConfig { duration_s: f64::INFINITY, ..cfg(1) }, "--duration: duration must be a finite number in (0, 86400] s, found inf"),
            (SimConfig { warmup_s: 30.0, ..cfg(1) }, "--warmup: must be >= 0 and shorter than the duration (20 s), found 30"),
        ] {
            assert_eq!(simulate(&m, &profiles(), None, &config).unwrap_err().to_string(), want);
        }
    }

    /// Within every range, but too many arrivals in all: refused with the duration that fits.
    #[test]
    fn runs_over_the_arrival_limit_are_refused_with_the_duration_that_fits() {
        // 2 services x 1e6/s x 1000 x 86400 s is far past 2e8 arrivals.
        let m = map(&[("a", 8, 1e6, 50.0), ("b", 8, 1e6, 50.0)]);
        let config = SimConfig { duration_s: 86_400.0, rate_scale: 1000.0, ..cfg(1) };
        let e = simulate(&m, &profiles(), None, &config).unwrap_err();
        let SimError::TooManyArrivals { expected, max_duration, .. } = e else { panic!("{e}") };
        assert_eq!(expected, 2e9 * 86_400.0);
        assert_eq!(max_duration, 0.1);
        assert!(e.to_string().contains("at most 0.1 s at these rates"), "{e}");
    }

    #[test]
    fn segments_and_services_outside_their_ranges_are_refused() {
        let mut m = map(&[("a", 8, 200.0, 50.0)]);
        m.segments[0].batch_size = 1 << 20;
        let e = simulate(&m, &profiles(), None, &cfg(1)).unwrap_err();
        assert_eq!(e.to_string(), "segment of service \"a\": batch size must be in 1..=4096 and processes in 1..=48, found 1048576 and 1");
        let m = map(&[("a", 8, 200.0, 50.0)]);
        let list = [Service { name: "a".into(), model: "m".into(), rate: f64::INFINITY, slo_ms: 50.0 }];
        let e = simulate(&m, &profiles(), Some(&list), &cfg(1)).unwrap_err();
        assert!(e.to_string().starts_with("service \"a\": request rate must be a finite number"), "{e}");
    }
}
