//! The one loop that owns "try again". It picks targets in order (the model's, then its
//! fallbacks'), fails over at once to an untried upstream, backs off (full jitter) only before
//! returning to one already tried, honours `Retry-After` by failing over or waiting when the wait
//! fits, asks the retry budget before every retry, and never starts an attempt that cannot get
//! through its first wait before the call's deadline.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;

use crate::attempt::{self, Target};
use crate::deadlines::Deadlines;
use crate::error::{self, AttemptRecord, CallError, Failure, FailureKind};
use crate::request::CallRequest;
use crate::{Engine, Response};

/// Everything the messages of a failed call need to name limits and their sources.
pub(crate) struct Context<'a> {
    pub route: &'a hourglass_config::ModelRoute,
    pub deadlines: &'a Deadlines,
    pub client_source: Option<&'a str>,
}

pub(crate) async fn run(engine: &Arc<Engine>, request: CallRequest) -> Result<Response, CallError> {
    let model = request
        .model
        .clone()
        .or_else(|| (request.endpoint == crate::Endpoint::Other).then(String::new));
    let Some(model) = model else {
        return Err(CallError::before_attempts(
            "bad_request",
            StatusCode::BAD_REQUEST,
            "you must provide a model parameter".to_owned(),
        ));
    };
    let route = match passthrough_or_route(engine, &model) {
        Some(route) => route,
        None => {
            let known: Vec<&str> = engine
                .config
                .models
                .iter()
                .map(|m| m.name.as_str())
                .take(20)
                .collect();
            let message = format!(
                "no upstream serves model `{model}`{}",
                if known.is_empty() {
                    String::new()
                } else {
                    format!("; configured: {}", known.join(", "))
                }
            );
            return Err(CallError::before_attempts(
                "no_route",
                StatusCode::NOT_FOUND,
                message,
            ));
        }
    };
    let targets = targets(engine, &route);
    let policy = route.policy;
    let deadlines = Deadlines::new(
        request.start,
        &policy.timeouts,
        request.client_deadline.as_ref().map(|d| d.0),
    );
    let ctx = Context {
        route: &route,
        deadlines: &deadlines,
        client_source: request.client_deadline.as_ref().map(|d| d.1.as_str()),
    };
    engine
        .budget
        .lock()
        .expect("the budget lock is never poisoned")
        .deposit(Instant::now());

    let mut trail: Vec<AttemptRecord> = Vec::new();
    let mut last: Option<(Failure, usize)> = None;
    let mut tried = vec![false; targets.len()];
    let mut cooling: Vec<Option<Instant>> = vec![None; targets.len()];
    let mut next = 0;
    let mut budget_spent = false;
    for n in 0..policy.retry.max_attempts {
        let now = Instant::now();
        let pick = choose(&tried, &cooling, next, now);
        if n > 0 {
            if !engine
                .budget
                .lock()
                .expect("the budget lock is never poisoned")
                .try_withdraw(now)
            {
                budget_spent = true;
                break;
            }
            let mut wait =
                cooling[pick].map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
            if tried[pick] {
                let mut rng = engine.rng.lock().expect("the rng lock is never poisoned");
                wait = wait.max(crate::retry::backoff(
                    n,
                    policy.retry.backoff_base,
                    policy.retry.backoff_max,
                    &mut rng,
                ));
            }
            if !deadlines.attempt_fits(now + wait, request.stream, false) {
                break;
            }
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        if !deadlines.attempt_fits(Instant::now(), request.stream, n == 0) {
            break;
        }
        tried[pick] = true;
        match attempt::run(engine, &request, &targets[pick], n, &ctx).await {
            Ok(mut response) => {
                trail.append(&mut response.trail);
                response.trail = trail;
                let attempts = response.trail.len().to_string();
                if let Ok(value) = attempts.parse() {
                    response.headers.insert("x-hourglass-attempts", value);
                }
                return Ok(response);
            }
            Err((failure, record)) => {
                trail.push(record);
                let retryable = failure.kind.retryable();
                if let FailureKind::Status {
                    retry_after: Some(after),
                    ..
                } = &failure.kind
                {
                    cooling[pick] = Some(Instant::now() + *after);
                }
                last = Some((failure, pick));
                if !retryable {
                    break;
                }
                next = pick + 1;
            }
        }
    }
    Err(report(
        &ctx,
        &targets,
        trail,
        last,
        budget_spent,
        request.start,
    ))
}

/// A model's route, or for passthrough paths (no model) the first upstream with a chat policy.
fn passthrough_or_route<'a>(
    engine: &'a Engine,
    model: &str,
) -> Option<std::borrow::Cow<'a, hourglass_config::ModelRoute>> {
    if model.is_empty() {
        Some(std::borrow::Cow::Owned(engine.config.passthrough_route()))
    } else {
        engine.config.route(model)
    }
}

/// The model's targets, then each fallback model's.
fn targets(engine: &Engine, route: &hourglass_config::ModelRoute) -> Vec<Target> {
    let mut targets: Vec<Target> = route
        .targets
        .iter()
        .map(|t| Target {
            upstream: t.upstream,
            name: engine.config.upstreams[t.upstream].name.clone(),
            model: t.model.clone(),
        })
        .collect();
    for fallback in &route.fallbacks {
        if let Some(other) = engine.config.route(fallback) {
            for t in &other.targets {
                targets.push(Target {
                    upstream: t.upstream,
                    name: engine.config.upstreams[t.upstream].name.clone(),
                    model: t.model.clone(),
                });
            }
        }
    }
    targets
}

/// The next target: the first untried one from `next` on that is not cooling down, else the
/// first not cooling, else the one whose cool-down ends first.
fn choose(tried: &[bool], cooling: &[Option<Instant>], next: usize, now: Instant) -> usize {
    let len = tried.len();
    let order = (0..len).map(|i| (next + i) % len);
    let ready = |i: &usize| cooling[*i].is_none_or(|until| until <= now);
    if let Some(i) = order.clone().find(|i| !tried[*i] && ready(i)) {
        return i;
    }
    if let Some(i) = order.clone().find(ready) {
        return i;
    }
    (0..len).min_by_key(|i| cooling[*i]).unwrap_or(0)
}

fn report(
    ctx: &Context<'_>,
    targets: &[Target],
    trail: Vec<AttemptRecord>,
    last: Option<(Failure, usize)>,
    budget_spent: bool,
    start: Instant,
) -> CallError {
    let elapsed = start.elapsed();
    let upstreams_tried = {
        let mut names: Vec<&str> = trail.iter().map(|a| a.upstream.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names.len()
    };
    let distinct_targets = {
        let mut names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names.len()
    };
    let tally = format!(
        "{} attempt{} on {upstreams_tried} of {distinct_targets} upstream{}",
        trail.len(),
        if trail.len() == 1 { "" } else { "s" },
        if distinct_targets == 1 { "" } else { "s" }
    );
    let Some((failure, pick)) = last else {
        // No attempt could start: the deadline was already too close.
        let message = format!(
            "the call's deadline ({}) left no time for an attempt; {tally}",
            crate::describe::total_source(ctx)
        );
        let mut error =
            CallError::before_attempts("deadline_exceeded", StatusCode::GATEWAY_TIMEOUT, message);
        error.trail = trail;
        error.elapsed = elapsed;
        return error;
    };
    let target = &targets[pick];
    let mut message = crate::describe::Describer::new(ctx).describe(&failure.kind, &target.name);
    let (mut code, mut status) = (failure.kind.code(), error::status_of(&failure.kind));
    if budget_spent {
        message = format!("{message}; no retry: the retry budget (retry_budget.ratio) is spent");
        code = "retry_budget_exhausted";
        status = StatusCode::SERVICE_UNAVAILABLE;
    }
    let upstream_error = match &failure.kind {
        FailureKind::Status { body, .. } => serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .map(|v| v.get("error").cloned().unwrap_or(v)),
        _ => None,
    };
    let retry_after = match &failure.kind {
        FailureKind::Status { retry_after, .. } => *retry_after,
        _ => None,
    };
    CallError {
        code,
        status,
        message: format!("{message}; {tally}"),
        diagnosis: error::diagnosis(code),
        trail,
        elapsed,
        retry_after,
        upstream_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn untried_targets_come_first_then_the_earliest_to_cool_down() {
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        assert_eq!(
            choose(&[false, false, false], &[None, None, None], 0, now),
            0
        );
        assert_eq!(
            choose(&[true, false, false], &[None, None, None], 1, now),
            1
        );
        assert_eq!(
            choose(&[true, false, false], &[None, Some(later), None], 1, now),
            2,
            "skip one cooling down"
        );
        assert_eq!(
            choose(&[true, true, true], &[None, None, None], 3, now),
            0,
            "wrap around"
        );
        assert_eq!(
            choose(
                &[true, true],
                &[Some(later + Duration::from_secs(1)), Some(later)],
                0,
                now
            ),
            1
        );
    }
}
