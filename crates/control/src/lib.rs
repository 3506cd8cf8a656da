//! parva's follow controller: one library for the day simulation (`parva simulate --rates`) and
//! live nodes (`parva deploy --follow`), so that what the simulation shows is what a node does.
//!
//! - [`settings`]: the one set of settings (flags of both commands).
//! - [`forecast`]: what each service's load will be over the next horizon.
//! - [`controller`]: the decision: when to re-plan and for which rates (safety first: no
//!   scale-down on thin evidence, gradual scale-down, a churn budget, back-off).
//! - [`steps`]: a transition as typed [`steps::Step`]s, make before break, and an independent
//!   replay that checks every service keeps ready capacity for its demand.
//! - [`node`]: the narrow [`node::Node`] trait and the [`node::Executor`] that applies steps with
//!   rollback.
//! - [`driver`]: decide, plan (the best plan that fits the node), apply: the loop body.
//! - [`day`]: the day simulation (static, oracle and the controller on a simulated node).
//! - [`live`]: the live node (MIG, MPS, router, best-effort jobs) and its loop.

pub mod controller;
pub mod day;
pub mod driver;
pub mod forecast;
pub mod live;
pub mod node;
pub mod settings;
pub mod simnode;
pub mod steps;

pub use controller::{Controller, Decision, Direction, Observation};
pub use driver::{Driver, Outcome, PlanContext, Prepared, Refusal};
pub use settings::{Mode, Settings};

/// Seconds of arrivals an alarm measures: between windows, a service whose rate over the last
/// this many seconds is already past its plan is planned up at once.
pub const ALARM_S: f64 = 10.0;

/// What the crate's tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use parva_core::ProfileSet;
    use parva_core::profile::ModelProfile;
    use std::path::Path;

    /// One model on every A100 size: a batch of b takes (2 + b) ms / size^0.8.
    pub fn profiles() -> ProfileSet {
        let mut text = String::from("Mig instance,Batch size,Workload Number,Throughput,Latency\n");
        for size in [1u8, 2, 3, 4, 7] {
            for b in [1u32, 2, 4, 8] {
                let lat = (0.002 + 0.001 * b as f64) / (size as f64).powf(0.8);
                text.push_str(&format!("{size},{b},1,{},{lat}\n", b as f64 / lat));
            }
        }
        let t = ModelProfile::read_from(text.as_bytes(), Path::new("m.csv"), "m".into(), None).unwrap();
        ProfileSet { dir: "mem".into(), models: [("m".to_string(), t)].into_iter().collect() }
    }
}
