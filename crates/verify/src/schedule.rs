//! When each request is due: the open-loop arrival process of one service.
//!
//! Times are seconds from the start of the run. A fixed-rate process draws them lazily (no list of
//! a long run's arrivals is kept in memory); a trace replays a list read by [`crate::trace`]. The
//! generator sends each request at its time whether or not earlier ones have returned, and
//! measures its latency from that time.

/// The arrival process at a fixed rate: the simulator's own type, so that a prediction and a
/// measurement name the same process.
pub use parva_core::sim::Distribution;

/// Where a service's send times come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Arrivals {
    /// `rate` requests/s (already multiplied by the rate scale) from `distribution`.
    Rate { rate: f64, distribution: Distribution, seed: u64 },
    /// Exact send times, ascending (already divided by the rate scale).
    Trace(Vec<f64>),
}

impl Arrivals {
    /// The send times, ascending, lazily.
    pub fn times(&self) -> Times<'_> {
        match self {
            Arrivals::Rate { rate, distribution, seed } => {
                let mut rng = SplitMix64(*seed);
                // Constant: a random phase in [0, 1/rate); Poisson: the first exponential gap.
                let first = match distribution {
                    Distribution::Poisson => rng.exp(*rate),
                    Distribution::Constant => (1.0 - rng.unit()) / rate,
                };
                Times::Rate { rate: *rate, distribution: *distribution, rng, next: first, k: 0, phase: first }
            }
            Arrivals::Trace(times) => Times::Trace(times.iter()),
        }
    }
}

/// Iterator over one service's send times (seconds from the start, ascending, unbounded for a
/// fixed rate: the caller stops at the run's duration).
pub enum Times<'a> {
    Rate { rate: f64, distribution: Distribution, rng: SplitMix64, next: f64, k: u64, phase: f64 },
    Trace(std::slice::Iter<'a, f64>),
}

impl Iterator for Times<'_> {
    type Item = f64;
    fn next(&mut self) -> Option<f64> {
        match self {
            Times::Rate { rate, distribution, rng, next, k, phase } => {
                let t = *next;
                *k += 1;
                *next = match distribution {
                    Distribution::Poisson => t + rng.exp(*rate),
                    // Computed from the index, so that no rounding error accumulates over a long run.
                    Distribution::Constant => *phase + *k as f64 / *rate,
                };
                Some(t)
            }
            Times::Trace(it) => it.next().copied(),
        }
    }
}

/// The seed of service number `index` (in the order of the service list) for run seed `seed`:
/// services draw independent sequences, and the same seed gives the same schedule.
pub fn service_seed(seed: u64, index: usize) -> u64 {
    seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// SplitMix64: a tiny PRNG whose sequence never changes with library versions, so a seed
/// reproduces a schedule exactly.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
    /// An exponential gap of mean 1/rate.
    pub fn exp(&mut self, rate: f64) -> f64 {
        -self.unit().ln() / rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(a: &Arrivals, end: f64) -> Vec<f64> {
        a.times().take_while(|t| *t < end).collect()
    }

    #[test]
    fn poisson_averages_the_rate_and_is_reproducible() {
        let a = Arrivals::Rate { rate: 200.0, distribution: Distribution::Poisson, seed: service_seed(1, 0) };
        let t = within(&a, 100.0);
        // 20,000 expected; the standard deviation is ~141.
        assert!((t.len() as f64 - 20_000.0).abs() < 700.0, "{}", t.len());
        assert!(t.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(t, within(&a, 100.0));
        let b = Arrivals::Rate { rate: 200.0, distribution: Distribution::Poisson, seed: service_seed(1, 1) };
        assert_ne!(t[..10], within(&b, 100.0)[..10]);
        // Exponential gaps: about 1 - e^-1 = 63 % of them are shorter than the mean.
        let short = t.windows(2).filter(|w| w[1] - w[0] < 1.0 / 200.0).count() as f64 / t.len() as f64;
        assert!((short - 0.632).abs() < 0.03, "{short}");
    }

    #[test]
    fn constant_is_evenly_spaced_after_a_phase() {
        let a = Arrivals::Rate { rate: 4.0, distribution: Distribution::Constant, seed: 9 };
        let t = within(&a, 10.0);
        assert_eq!(t.len(), 40);
        assert!(t[0] >= 0.0 && t[0] < 0.25, "{}", t[0]);
        assert!(t.windows(2).all(|w| ((w[1] - w[0]) - 0.25).abs() < 1e-9), "{t:?}");
    }

    #[test]
    fn a_trace_replays_its_times() {
        let a = Arrivals::Trace(vec![0.0, 0.5, 0.5, 2.0]);
        assert_eq!(within(&a, 1.0), vec![0.0, 0.5, 0.5]);
        assert_eq!(a.times().count(), 4);
    }
}
