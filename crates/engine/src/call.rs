//! What a call works with: the engine's parts every call shares, the targets a call may try, and
//! the call itself as the retry loop and its attempts see it (its request, route, targets and
//! deadlines, computed once).

use std::sync::{Arc, Mutex, OnceLock};

use hourglass_config::{Config, ModelRoute};
use http::HeaderValue;

use crate::deadlines::Deadlines;
use crate::describe::Describer;
use crate::events::Observer;
use crate::health::{Candidate, Health};
use crate::request::CallRequest;
use crate::retry::Budget;
use crate::upstream::Upstreams;

/// The engine's parts every call shares.
pub(crate) struct Shared {
    /// The configuration the engine runs.
    pub config: Arc<Config>,
    /// Every upstream's dialer and connection pool.
    pub upstreams: Arc<Upstreams>,
    /// Every upstream-and-model's health (carried across reloads).
    pub health: Arc<Health>,
    /// The retry budget (carried across reloads).
    pub budget: Arc<Budget>,
    /// Draws for backoff jitter and balancing.
    pub rng: Mutex<fastrand::Rng>,
    /// Who hears about calls, attempts, streams and hedges.
    pub observer: OnceLock<Arc<dyn Observer>>,
    /// Each upstream's name as the `x-hourglass-upstream` value, in configuration order: made
    /// once, where a value per answer cost an allocation and a copy.
    pub upstream_names: Vec<HeaderValue>,
}

impl Shared {
    /// The observer, if one is set.
    pub fn observer(&self) -> Option<&dyn Observer> {
        self.observer.get().map(|o| o.as_ref())
    }

    /// The random draws, locked.
    pub fn rng(&self) -> std::sync::MutexGuard<'_, fastrand::Rng> {
        self.rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Where an attempt goes: an upstream and the model name it is sent.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Index into the configuration's upstreams.
    pub upstream: usize,
    /// The upstream's name.
    pub name: String,
    /// The model name sent to it.
    pub model: String,
    /// Its priority tier (0 first; fallback models come after every tier of the model).
    pub tier: u32,
    /// Its weight within the tier.
    pub weight: u32,
}

/// One call as the loop and its attempts see it.
pub(crate) struct Call<'a> {
    /// The engine's shared parts.
    pub shared: &'a Arc<Shared>,
    /// What the client asked for.
    pub request: &'a CallRequest,
    /// The model's route: its policy and where each value came from.
    pub route: &'a ModelRoute,
    /// The targets it may try: the model's, then each fallback model's.
    pub targets: Vec<Target>,
    /// Every clock of the call.
    pub deadlines: Deadlines,
    /// Whether a whole answer is assembled from a stream of the upstream's, so that
    /// `first_token` and `idle` protect a non-streaming client too (`stream_upstream`).
    pub assemble: bool,
}

impl<'a> Call<'a> {
    /// The call of `request` on `route` with `targets`.
    pub fn new(
        shared: &'a Arc<Shared>,
        request: &'a CallRequest,
        route: &'a ModelRoute,
        targets: Vec<Target>,
    ) -> Call<'a> {
        // A `total` written in the configuration ends streams too; the built-in one does not.
        let configured_total = (route.sources.iter())
            .any(|s| s.key == "timeouts.total" && !s.source.starts_with("built-in"));
        let client = request.client_deadline.as_ref().map(|d| d.0);
        let mut timeouts = route.policy.timeouts;
        // An unattended call's deadline replaces `total` (it is never longer than the deadline).
        if let (true, Some(at)) = (request.unattended, client) {
            timeouts.total = at.saturating_duration_since(request.start);
        }
        let deadlines =
            Deadlines::new(request.start, &timeouts, client).total_ends_streams(configured_total);
        Call {
            shared,
            request,
            route,
            targets,
            deadlines,
            assemble: !request.stream && request.assemblable && route.policy.stream_upstream,
        }
    }

    /// Whether the upstream is asked for a stream (by the client, or to assemble a whole answer).
    pub fn streams_upstream(&self) -> bool {
        self.request.stream || self.assemble
    }

    /// The words of this call's failures.
    pub fn describer(&self) -> Describer {
        Describer::new(
            self.route,
            &self.deadlines,
            self.request.client_deadline.as_ref().map(|d| d.1.as_str()),
        )
    }

    /// The targets as the health ranking sees them.
    pub fn candidates(&self) -> Vec<Candidate<'_>> {
        self.targets
            .iter()
            .map(|t| Candidate {
                upstream: t.upstream,
                model: &t.model,
                tier: t.tier,
                weight: t.weight,
            })
            .collect()
    }
}
