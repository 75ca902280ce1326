//! Observation, in one place around the loop: every attempt runs under a lease on its target's
//! health (the verdict given when the attempt ends, or a committed stream's at its end) and is
//! told to the observer; every call ends with one log line and one event; hedges are told to the
//! observer and the health log. The loop itself only decides.

use std::sync::Arc;

use hourglass_config::Hedge;
use tokio::time::Instant;

use crate::attempt::{self, AttemptResult};
use crate::call::{Call, Shared, Target};
use crate::commit::Response;
use crate::error::CallError;
use crate::events::{AttemptEvent, CallEvent, HedgeOutcome, retries_and_failovers};
use crate::health::Event;
use crate::vocabulary::{ErrorCode, Outcome};

/// Makes try `n` of `call` on `target` under a lease on the target's health, and tells the
/// observer how it ended.
pub(crate) async fn attempt(call: &Call<'_>, target: &Target, n: u32) -> AttemptResult {
    let shared = call.shared;
    let adaptive = matches!(call.route.hedge, Hedge::Quantile(_));
    let now = Instant::now();
    let mut lease = Some(
        shared
            .health
            .lease(target.upstream, &target.model, adaptive, now),
    );
    let result = attempt::run(call, target, n, &mut lease).await;
    if let Some(observer) = shared.observer() {
        let (record, timeline) = match &result {
            Ok(response) => (response.trail.last(), response.timeline.as_ref()),
            Err((_, record)) => (Some(record), None),
        };
        if let Some(record) = record {
            observer.attempt(&AttemptEvent {
                model: &call.route.name,
                upstream: &target.name,
                upstream_model: &target.model,
                outcome: record.outcome,
                phase: record.phase,
                timeline,
                elapsed: record.elapsed,
            });
        }
    }
    // A committed stream took its lease: its verdict comes at its end.
    if let Some(lease) = lease {
        match &result {
            Ok(response) => {
                let latency = response.timeline.and_then(|t| t.first_token_latency());
                lease.finish_after(latency, false);
            }
            Err((failure, _)) if failure.blames_upstream() => lease.finish(true),
            Err(_) => lease.finish_client_error(),
        }
    }
    result
}

/// A hedge started, won or lost: told to the observer and to the health log.
pub(crate) fn hedge(shared: &Shared, model: &str, outcome: HedgeOutcome, event: Event) {
    if let Some(observer) = shared.observer() {
        observer.hedge(model, outcome);
    }
    shared.health.hedge_event(event);
}

/// A call ended: one log line (its id, model, outcome, every attempt, the time taken) and one
/// event.
pub(crate) fn call_ended(
    shared: &Arc<Shared>,
    model: &str,
    request_id: &str,
    result: &Result<Response, CallError>,
    start: Instant,
) {
    let (outcome, trail, error) = match result {
        Ok(response) => (Outcome::Ok, &response.trail, ""),
        Err(error) => (
            Outcome::Failed(error.code),
            &error.trail,
            error.message.as_str(),
        ),
    };
    let attempts: Vec<String> = trail
        .iter()
        .map(|a| format!("{}:{}@{}", a.upstream, a.outcome, a.phase))
        .collect();
    tracing::info!(
        target: "hourglass::call",
        request_id,
        model,
        outcome = outcome.name(),
        attempts = attempts.join(","),
        elapsed_ms = (start.elapsed().as_secs_f64() * 1000.0 * 10.0).round() / 10.0,
        error,
        "call"
    );
    let Some(observer) = shared.observer() else {
        return;
    };
    // A model nothing serves is not a label: clients could mint them without end.
    let unrouted = matches!(
        outcome,
        Outcome::Failed(ErrorCode::NoRoute | ErrorCode::BadRequest)
    );
    let (retries, failovers) = retries_and_failovers(
        trail
            .iter()
            .filter(|a| a.outcome != Outcome::HedgeCancelled)
            .map(|a| a.upstream.as_str()),
    );
    observer.call(&CallEvent {
        model: if unrouted { "" } else { model },
        outcome,
        attempts: trail.len(),
        retries,
        failovers,
        elapsed: start.elapsed(),
    });
}
