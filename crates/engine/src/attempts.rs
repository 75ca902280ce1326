//! The one loop that owns "try again". It picks targets by rank (tiers — the model's, then its
//! fallbacks' — then breakers and the balance strategy, see `health`), hedges the first attempt
//! when the model asks for it, fails over at once to an untried upstream, backs off (full jitter) only before
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
use crate::health::Candidate;
use crate::request::CallRequest;
use crate::{Engine, Response};

/// Everything the messages of a failed call need to name limits and their sources.
pub(crate) struct Context<'a> {
    pub route: &'a hourglass_config::ModelRoute,
    pub deadlines: &'a Deadlines,
    pub client_source: Option<&'a str>,
}

pub(crate) async fn run(engine: &Arc<Engine>, request: CallRequest) -> Result<Response, CallError> {
    let start = request.start;
    let asked = request.model.clone().unwrap_or_default();
    let request_id = request
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let result = call(engine, request).await;
    log_call(&request_id, &asked, &result, start);
    if let Some(observer) = engine.observer() {
        let (outcome, trail) = match &result {
            Ok(response) => ("ok", &response.trail),
            Err(error) => (error.code, &error.trail),
        };
        // A model nothing serves is not a label: clients could mint them without end.
        let model = if matches!(outcome, "no_route" | "bad_request") {
            ""
        } else {
            asked.as_str()
        };
        let (retries, failovers) = crate::events::retries_and_failovers(
            trail
                .iter()
                .filter(|a| a.outcome != "hedge_cancelled")
                .map(|a| a.upstream.as_str()),
        );
        observer.call(&crate::events::CallEvent {
            model,
            outcome,
            attempts: trail.len(),
            retries,
            failovers,
            elapsed: start.elapsed(),
        });
    }
    result
}

/// One log line per finished call: its id, model, outcome, every attempt, and the time taken.
fn log_call(request_id: &str, model: &str, result: &Result<Response, CallError>, start: Instant) {
    let (outcome, trail, error) = match result {
        Ok(response) => ("ok", &response.trail, ""),
        Err(error) => (error.code, &error.trail, error.message.as_str()),
    };
    let attempts: Vec<String> = trail
        .iter()
        .map(|a| format!("{}:{}@{}", a.upstream, a.outcome, a.phase.name()))
        .collect();
    tracing::info!(
        target: "hourglass::call",
        request_id,
        model,
        outcome,
        attempts = attempts.join(","),
        elapsed_ms = (start.elapsed().as_secs_f64() * 1000.0 * 10.0).round() / 10.0,
        error,
        "call"
    );
}

async fn call(engine: &Arc<Engine>, request: CallRequest) -> Result<Response, CallError> {
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
    let all_ejected = engine
        .health
        .all_ejected(&candidates(&targets), Instant::now());
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
    let mut hedged = false;
    for n in 0..policy.retry.max_attempts {
        let now = Instant::now();
        let pick = pick(engine, &route, &targets, &tried, &cooling, next, now);
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
        // The first attempt may be hedged once: after the threshold without a first token, a
        // second attempt starts on another upstream and the first to commit wins.
        let hedge_after = if n == 0 && !hedged {
            hedge_threshold(engine, &route)
        } else {
            None
        };
        let outcomes = match hedge_after {
            None => vec![(pick, one(engine, &request, &targets[pick], n, &ctx).await)],
            Some(after) => {
                hedged = true;
                hedge(
                    engine, &request, &targets, pick, after, n, &ctx, &mut tried, &cooling,
                )
                .await
            }
        };
        let mut stop = false;
        for (pick, outcome) in outcomes {
            match outcome {
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
                    stop |= !retryable;
                    next = pick + 1;
                }
            }
        }
        if stop {
            break;
        }
    }
    let mut error = report(&ctx, &targets, trail, last, budget_spent, request.start);
    if all_ejected {
        error.message.push_str(&format!(
            "; every upstream serving `{model}` was ejected by its circuit breaker (see [breaker] in docs/config.md) and was tried anyway"
        ));
    }
    Err(error)
}

/// What one attempt came to, and on which target (an index into the call's targets).
type Outcome = (usize, Result<Response, (Failure, AttemptRecord)>);

/// One attempt with its lease on the target's health: a success or a failure the upstream is to
/// blame for is recorded (a stream's verdict comes at its end, from the committed stream).
async fn one(
    engine: &Arc<Engine>,
    request: &CallRequest,
    target: &Target,
    n: u32,
    ctx: &Context<'_>,
) -> Result<Response, (Failure, AttemptRecord)> {
    let adaptive = matches!(ctx.route.hedge, hourglass_config::Hedge::Quantile(_));
    let mut lease = Some(engine.health.lease(
        target.upstream,
        &target.model,
        adaptive,
        Instant::now(),
    ));
    let outcome = attempt::run(engine, request, target, n, ctx, &mut lease).await;
    if let Some(observer) = engine.observer() {
        let (status, record, timeline) = match &outcome {
            Ok(response) => ("ok", response.trail.last(), response.timeline.as_ref()),
            Err((_, record)) => (record.outcome, Some(record), None),
        };
        if let Some(record) = record {
            observer.attempt(&crate::events::AttemptEvent {
                model: &ctx.route.name,
                upstream: &target.name,
                upstream_model: &target.model,
                outcome: status,
                phase: record.phase.name(),
                timeline,
                elapsed: record.elapsed,
            });
        }
    }
    if let Some(lease) = lease {
        match &outcome {
            Ok(response) => {
                let latency = response.timeline.and_then(|t| {
                    let at = t.first_token.or(t.headers)?;
                    Some(at.saturating_duration_since(t.written?))
                });
                lease.finish_after(latency, false);
            }
            Err((failure, _)) if blames_upstream(&failure.kind) => lease.finish(true),
            Err(_) => lease.finish_client_error(),
        }
    }
    outcome
}

/// Whether a failure counts against the upstream's health: every timeout, refusal, close, cut,
/// malformed answer, 429 and 5xx does; the client's own 4xx errors do not.
fn blames_upstream(kind: &FailureKind) -> bool {
    match kind {
        FailureKind::Status { status, .. } => error::retryable_status(*status),
        _ => true,
    }
}

/// The model's hedge threshold now, if it hedges and has another target to hedge on.
fn hedge_threshold(engine: &Engine, route: &hourglass_config::ModelRoute) -> Option<Duration> {
    let (fixed, quantile) = match route.hedge {
        hourglass_config::Hedge::Off => return None,
        hourglass_config::Hedge::After(d) => (Some(d), None),
        hourglass_config::Hedge::Quantile(q) => (None, Some(q)),
    };
    let ceiling = route.policy.timeouts.first_token / 2;
    engine.health.hedge_threshold(
        &route.name,
        fixed,
        quantile,
        Duration::from_millis(20),
        ceiling,
    )
}

/// Runs the first attempt on `pick`; if it has not committed after `after`, starts a hedge on
/// the next-ranked other target (when the retry budget allows) and returns the winner. The loser
/// is dropped — its connection closed at once — and recorded as `hedge_cancelled`. When one
/// fails the other goes on alone; both failures are returned.
#[allow(clippy::too_many_arguments)]
async fn hedge(
    engine: &Arc<Engine>,
    request: &CallRequest,
    targets: &[Target],
    pick: usize,
    after: Duration,
    n: u32,
    ctx: &Context<'_>,
    tried: &mut [bool],
    cooling: &[Option<Instant>],
) -> Vec<Outcome> {
    let model = ctx.route.name.clone();
    let primary = one(engine, request, &targets[pick], n, ctx);
    tokio::pin!(primary);
    let started = Instant::now();
    tokio::select! {
        biased;
        outcome = &mut primary => return vec![(pick, outcome)],
        _ = tokio::time::sleep(after) => {}
    }
    let now = Instant::now();
    let second = {
        let mut rng = engine.rng.lock().expect("the rng lock is never poisoned");
        engine
            .health
            .rank(
                &model,
                &candidates(targets),
                tried,
                ctx.route.balance,
                &mut rng,
                now,
            )
            .into_iter()
            .find(|&i| {
                targets[i].upstream != targets[pick].upstream && cooling[i].is_none_or(|u| u <= now)
            })
    };
    let allowed = second.is_some()
        && engine
            .budget
            .lock()
            .expect("the budget lock is never poisoned")
            .try_withdraw(now);
    let Some(second) = second.filter(|_| allowed) else {
        return vec![(pick, primary.await)];
    };
    tried[second] = true;
    if let Some(observer) = engine.observer() {
        observer.hedge(&model, crate::events::HedgeOutcome::Started);
    }
    engine
        .health
        .hedge_event(crate::health::Event::HedgeStarted {
            model: model.clone(),
            upstream: targets[second].name.clone(),
            after,
        });
    let hedge = one(engine, request, &targets[second], n, ctx);
    tokio::pin!(hedge);
    let cancelled = |i: usize| AttemptRecord {
        upstream: targets[i].name.clone(),
        model: targets[i].model.clone(),
        phase: error::Phase::FirstToken,
        elapsed: started.elapsed(),
        outcome: "hedge_cancelled",
        status: None,
    };
    let mut failed: Vec<Outcome> = Vec::new();
    let (mut primary_done, mut hedge_done) = (false, false);
    while !(primary_done && hedge_done) {
        let (index, other, other_done, outcome) = tokio::select! {
            outcome = &mut primary, if !primary_done => {
                primary_done = true;
                (pick, second, hedge_done, outcome)
            }
            outcome = &mut hedge, if !hedge_done => {
                hedge_done = true;
                (second, pick, primary_done, outcome)
            }
        };
        match outcome {
            Ok(mut response) => {
                if !other_done {
                    let model = model.clone();
                    if let Some(observer) = engine.observer() {
                        let outcome = if index == pick {
                            crate::events::HedgeOutcome::Lost
                        } else {
                            crate::events::HedgeOutcome::Won
                        };
                        observer.hedge(&model, outcome);
                    }
                    engine.health.hedge_event(if index == pick {
                        crate::health::Event::HedgeLost { model }
                    } else {
                        crate::health::Event::HedgeWon { model }
                    });
                    response.trail.insert(0, cancelled(other));
                }
                return vec![(index, Ok(response))];
            }
            Err(e) => failed.push((index, Err(e))),
        }
    }
    failed
}

/// The next target: the best-ranked untried one (tiers, breakers, balance) that is not cooling
/// down; when every target was tried, the next in turn (see [`choose`]).
fn pick(
    engine: &Engine,
    route: &hourglass_config::ModelRoute,
    targets: &[Target],
    tried: &[bool],
    cooling: &[Option<Instant>],
    next: usize,
    now: Instant,
) -> usize {
    // One target: nothing to rank (the common case; it keeps the health lock off the path).
    if targets.len() == 1 {
        return 0;
    }
    let order = {
        let mut rng = engine.rng.lock().expect("the rng lock is never poisoned");
        engine.health.rank(
            &route.name,
            &candidates(targets),
            tried,
            route.balance,
            &mut rng,
            now,
        )
    };
    order
        .into_iter()
        .find(|&i| cooling[i].is_none_or(|until| until <= now))
        .unwrap_or_else(|| choose(tried, cooling, next, now))
}

/// The targets as the health ranking sees them.
fn candidates(targets: &[Target]) -> Vec<Candidate<'_>> {
    targets
        .iter()
        .map(|t| Candidate {
            upstream: t.upstream,
            model: &t.model,
            tier: t.tier,
            weight: t.weight,
        })
        .collect()
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
            tier: t.tier,
            weight: t.weight,
        })
        .collect();
    // Fallback models come after every tier of the model itself.
    let mut base = targets.iter().map(|t| t.tier + 1).max().unwrap_or(0);
    for fallback in &route.fallbacks {
        if let Some(other) = engine.config.route(fallback) {
            let tiers = other.targets.iter().map(|t| t.tier + 1).max().unwrap_or(0);
            for t in &other.targets {
                targets.push(Target {
                    upstream: t.upstream,
                    name: engine.config.upstreams[t.upstream].name.clone(),
                    model: t.model.clone(),
                    tier: base + t.tier,
                    weight: t.weight,
                });
            }
            base += tiers;
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
