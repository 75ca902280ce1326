//! One call on one target, in flight until it ends: a lease counts it (and, half-open, its trial)
//! and gives the health verdict when the call ends — a stream's at its end. A dropped lease (a
//! lost hedge, a client gone) gives none.

use std::time::Duration;

use super::{Health, MAX_PENALTY, lock};
use crate::held::Held;

/// One call on one target, in flight until finished or dropped.
pub struct Lease<'a> {
    pub(super) health: Held<'a, Health>,
    pub(super) upstream: usize,
    pub(super) model: String,
    /// Whether the model's latency window is kept (adaptive hedging).
    pub(super) window: bool,
    pub(super) done: bool,
}

impl Lease<'_> {
    /// The same lease, for a committed stream to hold past the call (its verdict comes at the
    /// stream's end).
    pub fn for_stream(mut self) -> Lease<'static> {
        // This one is the stream's now: dropped here, it ends nothing.
        self.done = true;
        Lease {
            health: self.health.for_stream(),
            upstream: self.upstream,
            model: std::mem::take(&mut self.model),
            window: self.window,
            done: false,
        }
    }

    /// The first meaningful token (or a whole answer) came after `latency`.
    pub fn first_token(&self, latency: Duration) {
        let now = crate::clock::now();
        self.health.with(self.upstream, &self.model, now, |t| {
            t.ewma.observe(latency, now)
        });
        self.observe_window(latency);
    }

    fn observe_window(&self, latency: Duration) {
        if !self.window {
            return;
        }
        let mut latencies = lock(&self.health.latencies);
        // Past the bound, a model not yet known shares one window: names a client mints on a
        // wildcard route cannot grow the table.
        let model = super::window_of(&latencies, &self.model);
        match latencies.get_mut(model) {
            Some(window) => window.observe(latency),
            None => latencies
                .entry(model.to_owned())
                .or_default()
                .observe(latency),
        }
    }

    /// The call ended: a success, or a failure the upstream is to blame for.
    pub fn finish(self, failed: bool) {
        self.finish_after(None, failed);
    }

    /// The call ended with the client's own error (a 4xx): no verdict on the upstream.
    pub fn finish_client_error(mut self) {
        self.done = true;
        let now = crate::clock::now();
        self.health.with(self.upstream, &self.model, now, |t| {
            t.outstanding = t.outstanding.saturating_sub(1);
            t.calls += 1;
            t.breaker.abandon();
        });
    }

    /// The call ended, its first token (or whole answer) having come after `latency`.
    pub fn finish_after(mut self, latency: Option<Duration>, failed: bool) {
        self.done = true;
        let now = crate::clock::now();
        if let Some(latency) = latency {
            self.observe_window(latency);
        }
        let transition = self.health.with(self.upstream, &self.model, now, |t| {
            if let Some(latency) = latency {
                t.ewma.observe(latency, now);
            }
            t.outstanding = t.outstanding.saturating_sub(1);
            t.calls += 1;
            if !failed {
                t.answered += 1;
            }
            if failed {
                t.failures += 1;
                // A failure counts as a slow call: the estimate doubles (at least to a second),
                // up to a minute, so repeated failures push the target back without overflow.
                let penalty = t
                    .ewma
                    .estimate()
                    .max(Duration::from_secs(1))
                    .saturating_mul(2)
                    .min(MAX_PENALTY);
                t.ewma.observe(penalty, now);
            }
            t.breaker.record(now, failed)
        });
        if let Some(t) = transition {
            self.health.transition(now, self.upstream, &self.model, t);
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if !self.done {
            // Cancelled (a lost hedge, a client gone): no verdict on the upstream.
            let now = crate::clock::now();
            self.health.with(self.upstream, &self.model, now, |t| {
                t.outstanding = t.outstanding.saturating_sub(1);
                t.breaker.abandon();
            });
        }
    }
}
