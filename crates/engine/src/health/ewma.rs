//! Peak-EWMA latency, the cost behind latency-aware balancing (after Finagle's `PeakEwma` and
//! tower's `peak_ewma` balancer): an exponentially weighted moving average of the first-token
//! latency that jumps up at once to a slower observation (the peak) and decays slowly back down,
//! so a target that just turned slow is avoided at once and trusted again only gradually. The
//! cost of sending one more call is the estimate times (outstanding calls + 1).

use std::time::Duration;

use tokio::time::Instant;

/// A peak-sensitive moving average of latency.
#[derive(Debug, Clone, Copy)]
pub struct PeakEwma {
    /// The estimate, in seconds.
    estimate: f64,
    /// When it was last updated.
    stamp: Instant,
    /// The decay time constant, in seconds.
    tau: f64,
    /// Whether anything was observed (the first observation replaces the prior).
    observed: bool,
}

impl PeakEwma {
    /// An estimate starting at `initial` (a prior: with no data every target costs the same).
    pub fn new(initial: Duration, tau: Duration, now: Instant) -> PeakEwma {
        PeakEwma {
            estimate: initial.as_secs_f64(),
            stamp: now,
            tau: tau.as_secs_f64().max(1e-3),
            observed: false,
        }
    }

    /// Adds an observed latency at `now`.
    pub fn observe(&mut self, latency: Duration, now: Instant) {
        let rtt = latency.as_secs_f64();
        if !self.observed || rtt > self.estimate {
            self.observed = true;
            self.estimate = rtt;
        } else {
            let elapsed = now.saturating_duration_since(self.stamp).as_secs_f64();
            let w = (-elapsed / self.tau).exp();
            self.estimate = self.estimate * w + rtt * (1.0 - w);
        }
        self.stamp = now;
    }

    /// The latency estimate.
    pub fn estimate(&self) -> Duration {
        Duration::try_from_secs_f64(self.estimate.clamp(0.0, 86_400.0)).unwrap_or_default()
    }

    /// The cost of one more call with `outstanding` already in flight.
    pub fn cost(&self, outstanding: usize) -> f64 {
        self.estimate * (outstanding as f64 + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_slow_sample_is_taken_at_once_and_forgotten_slowly() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(ms(100), Duration::from_secs(10), t0);
        e.observe(ms(1000), t0 + ms(10));
        assert_eq!(e.estimate(), ms(1000), "the peak is taken at once");
        // One tau later, a fast sample moves it about 63 % of the way down.
        e.observe(ms(100), t0 + ms(10) + Duration::from_secs(10));
        let est = e.estimate().as_secs_f64();
        assert!((0.42..0.44).contains(&est), "{est}");
        // Samples in quick succession barely move it.
        e.observe(ms(100), t0 + ms(20) + Duration::from_secs(10));
        assert!(e.estimate().as_secs_f64() > 0.42);
    }

    #[test]
    fn the_first_observation_replaces_the_prior() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(ms(500), Duration::from_secs(10), t0);
        e.observe(ms(100), t0);
        assert_eq!(e.estimate(), ms(100));
    }

    #[test]
    fn outstanding_calls_raise_the_cost() {
        let t0 = Instant::now();
        let fast = PeakEwma::new(ms(100), Duration::from_secs(10), t0);
        let slow = PeakEwma::new(ms(250), Duration::from_secs(10), t0);
        assert!(fast.cost(0) < slow.cost(0));
        assert!(
            fast.cost(3) > slow.cost(0),
            "a busy fast target can cost more than an idle slow one"
        );
    }
}
