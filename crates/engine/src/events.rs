//! What the engine tells the outside about its calls, as they finish: attempts, calls, streams
//! after commit and hedges. An [`Observer`] (metrics, logs, a dashboard) receives them on the
//! calling task, so it must be quick and must not block; the engine never depends on one.

use std::time::Duration;

use crate::upstream::Timeline;
use crate::vocabulary::{Outcome, Phase};

/// One attempt that ended (for a stream: at its commit point or failure before it).
#[derive(Debug, Clone, Copy)]
pub struct AttemptEvent<'a> {
    /// The model the client asked for.
    pub model: &'a str,
    /// The upstream tried.
    pub upstream: &'a str,
    /// The model name sent to it.
    pub upstream_model: &'a str,
    /// `ok`, `hedge_cancelled` or the failure's code.
    pub outcome: Outcome,
    /// How far it got.
    pub phase: Phase,
    /// Its phase moments (successful attempts).
    pub timeline: Option<&'a Timeline>,
    /// How long it ran.
    pub elapsed: Duration,
}

/// One call that ended: answered (committed) or failed.
#[derive(Debug, Clone, Copy)]
pub struct CallEvent<'a> {
    /// The model the client asked for (empty for pass-through paths).
    pub model: &'a str,
    /// `ok`, or the error code the client got.
    pub outcome: Outcome,
    /// Attempts made, hedges included.
    pub attempts: usize,
    /// Attempts that went back to an upstream already tried.
    pub retries: usize,
    /// Attempts that moved to another upstream.
    pub failovers: usize,
    /// Time to the answer (a stream's commit point) or to the error.
    pub elapsed: Duration,
}

/// A committed stream that ended.
#[derive(Debug, Clone, Copy)]
pub struct StreamEvent<'a> {
    /// The model the client asked for.
    pub model: &'a str,
    /// The upstream that served it.
    pub upstream: &'a str,
    /// `ok`, `client_gone`, or the failure's code.
    pub outcome: Outcome,
    /// The longest silence between two content events.
    pub max_gap: Option<Duration>,
    /// Content events per second after the first.
    pub tokens_per_s: Option<f64>,
    /// Commit point to end.
    pub duration: Duration,
}

/// How a hedge ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeOutcome {
    /// A hedge started.
    Started,
    /// The hedge answered first.
    Won,
    /// The first attempt answered first.
    Lost,
}

impl HedgeOutcome {
    /// `started`, `won` or `lost`.
    pub fn name(self) -> &'static str {
        match self {
            HedgeOutcome::Started => "started",
            HedgeOutcome::Won => "won",
            HedgeOutcome::Lost => "lost",
        }
    }
}

/// Receives the engine's events. Every method has a no-op default.
pub trait Observer: Send + Sync + 'static {
    /// An attempt ended.
    fn attempt(&self, _event: &AttemptEvent<'_>) {}
    /// A call ended.
    fn call(&self, _event: &CallEvent<'_>) {}
    /// A committed stream ended.
    fn stream(&self, _event: &StreamEvent<'_>) {}
    /// A hedge started, won or lost.
    fn hedge(&self, _model: &str, _outcome: HedgeOutcome) {}
}

/// Counts retries and failovers in a trail of upstream names: a step to another upstream is a
/// failover, a step back to the same one a retry; cancelled hedges are not steps.
pub fn retries_and_failovers<'a>(upstreams: impl IntoIterator<Item = &'a str>) -> (usize, usize) {
    let mut previous: Option<&str> = None;
    let (mut retries, mut failovers) = (0, 0);
    for upstream in upstreams {
        match previous {
            Some(p) if p == upstream => retries += 1,
            Some(_) => failovers += 1,
            None => {}
        }
        previous = Some(upstream);
    }
    (retries, failovers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_to_another_upstream_are_failovers() {
        assert_eq!(retries_and_failovers(["a"]), (0, 0));
        assert_eq!(retries_and_failovers(["a", "a", "b", "b", "a"]), (2, 2));
        assert_eq!(retries_and_failovers([]), (0, 0));
    }
}
