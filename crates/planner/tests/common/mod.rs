//! What the solver-free oracles share.

/// Whether `cap` samples/s cover a rate: the planner's own rule (`short_of_capacity`), a relative
/// 1e-9 for floating-point sums (6 x 180.2 is 1081.1999999999998, which covers a rate of 1081.2;
/// a case proptest found, where the oracle counted a seventh segment the planner did not need).
pub fn covers(cap: f64, rate: f64) -> bool {
    cap * (1.0 + 1e-9) >= rate
}
