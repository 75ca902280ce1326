//! When to hedge: after a fixed wait, or after a high quantile of the model's recent first-token
//! latencies (a sliding window of the last calls), clamped so a hedge neither fires on every call
//! of a fast model nor waits longer than the first-token timeout would.

use std::collections::VecDeque;
use std::time::Duration;

/// Recent first-token latencies of one model.
#[derive(Debug, Clone, Default)]
pub struct LatencyWindow {
    samples: VecDeque<Duration>,
}

/// Samples kept per model.
const WINDOW: usize = 256;
/// Samples needed before an adaptive threshold is trusted.
pub const MIN_SAMPLES: usize = 20;

impl LatencyWindow {
    /// Adds a first-token latency.
    pub fn observe(&mut self, latency: Duration) {
        if self.samples.len() == WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(latency);
    }

    /// The `quantile` (0–1) of the window, once it holds [`MIN_SAMPLES`].
    pub fn quantile(&self, quantile: f64) -> Option<Duration> {
        if self.samples.len() < MIN_SAMPLES {
            return None;
        }
        let mut sorted: Vec<Duration> = self.samples.iter().copied().collect();
        sorted.sort_unstable();
        let rank = ((quantile.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize)
            .clamp(1, sorted.len());
        Some(sorted[rank - 1])
    }
}

/// The hedge threshold: fixed, or the window's quantile clamped to `[floor, ceiling]`; `None`
/// while an adaptive threshold has too few samples (no hedging on a guess).
pub fn threshold(
    fixed: Option<Duration>,
    quantile: Option<f64>,
    window: &LatencyWindow,
    floor: Duration,
    ceiling: Duration,
) -> Option<Duration> {
    match (fixed, quantile) {
        (Some(fixed), _) => Some(fixed),
        (None, Some(q)) => window
            .quantile(q)
            .map(|t| t.clamp(floor, ceiling.max(floor))),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn an_adaptive_threshold_waits_for_data_then_follows_the_tail() {
        let mut w = LatencyWindow::default();
        for i in 0..19 {
            w.observe(ms(100 + i));
        }
        assert_eq!(threshold(None, Some(0.95), &w, ms(50), ms(5000)), None);
        w.observe(ms(2000));
        // 20 samples: the 95th percentile is the 19th, 118 ms.
        assert_eq!(
            threshold(None, Some(0.95), &w, ms(50), ms(5000)),
            Some(ms(118))
        );
        assert_eq!(
            threshold(None, Some(1.0), &w, ms(50), ms(1000)),
            Some(ms(1000)),
            "clamped"
        );
        assert_eq!(
            threshold(None, Some(0.5), &w, ms(500), ms(1000)),
            Some(ms(500)),
            "floored"
        );
        assert_eq!(
            threshold(Some(ms(300)), None, &w, ms(50), ms(5000)),
            Some(ms(300))
        );
        assert_eq!(threshold(None, None, &w, ms(50), ms(5000)), None);
    }

    #[test]
    fn the_window_keeps_the_latest_samples() {
        let mut w = LatencyWindow::default();
        for _ in 0..WINDOW {
            w.observe(ms(5000));
        }
        for _ in 0..WINDOW {
            w.observe(ms(10));
        }
        assert_eq!(w.quantile(1.0), Some(ms(10)));
    }
}
