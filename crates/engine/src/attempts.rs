//! The one loop that owns "try again". It picks targets by rank (tiers — the model's, then its
//! fallbacks' — then breakers and the balance strategy, see `health`), hedges the first attempt
//! when the model asks for it, fails over at once to an untried upstream, backs off (full jitter)
//! only before returning to one already tried, honours `Retry-After` by failing over or waiting
//! when the wait fits, asks the retry budget before every retry, and never starts an attempt that
//! cannot get through its first wait before the call's deadline.

use std::time::Duration;

use hourglass_config::Hedge;
use http::StatusCode;
use tokio::time::Instant;

use crate::attempt::{self, AttemptResult};
use crate::call::Call;
use crate::commit::Response;
use crate::error::{AttemptRecord, CallError, FailureKind};
use crate::events::HedgeOutcome;
use crate::health::Event;
use crate::observation;
use crate::vocabulary::{ErrorCode, Outcome, Phase};

/// Makes `call`: attempts until one commits, or the error to send.
pub(crate) async fn run(call: &Call<'_>) -> Result<Response, CallError> {
    let shared = call.shared;
    let all_ejected = shared
        .health
        .all_ejected(&call.candidates(), crate::clock::now());
    shared.budget.deposit(crate::clock::now());
    let mut error = match Attempts::new(call).run().await {
        Ok(response) => return Ok(response),
        Err(error) => error,
    };
    if all_ejected {
        error.message.push_str(&format!(
            "; every upstream serving `{}` was ejected by its circuit breaker (see [breaker] in docs/config.md) and was tried anyway",
            call.route.name
        ));
    }
    Err(error)
}

/// What one attempt came to, and on which target (an index into the call's targets).
type Tried = (usize, AttemptResult);

/// What the loop does after an attempt (or a hedged pair).
enum Next {
    /// One committed: the call is answered.
    Answered(Box<Response>),
    /// Every one failed, and trying again may help.
    TryAgain,
    /// A failure no retry can help.
    Stop,
}

/// The loop's state: what was tried, what is cooling down, and what failed.
struct Attempts<'a> {
    call: &'a Call<'a>,
    /// Every attempt made so far.
    trail: Vec<AttemptRecord>,
    /// The last failure, and its target.
    last: Option<(FailureKind, usize)>,
    /// Per target: whether it was tried.
    tried: Vec<bool>,
    /// Per target: until when it asked not to be called (`Retry-After`).
    cooling: Vec<Option<Instant>>,
    /// Where the round-robin over tried targets goes on.
    next: usize,
    /// A retry was due but the budget refused it.
    budget_spent: bool,
    /// A retry was due but the time left (this much) was less than a try needs.
    no_time_for_retry: Option<Duration>,
}

impl<'a> Attempts<'a> {
    fn new(call: &'a Call<'a>) -> Attempts<'a> {
        Attempts {
            call,
            trail: Vec::new(),
            last: None,
            tried: vec![false; call.targets.len()],
            cooling: vec![None; call.targets.len()],
            next: 0,
            budget_spent: false,
            no_time_for_retry: None,
        }
    }

    async fn run(&mut self) -> Result<Response, CallError> {
        let call = self.call;
        for n in 0..call.route.policy.retry.max_attempts {
            let Some(pick) = self.next_target(n).await else {
                break;
            };
            self.tried[pick] = true;
            // The first attempt may be hedged once: after the threshold without a first token,
            // a second attempt starts on another upstream and the first to commit wins.
            // Hedged boxed: two attempts' room, which every call's future would otherwise
            // carry (4,352 bytes against one attempt's 2,064) while hedging is off by default.
            let tried = match self.hedge_threshold(n) {
                Some(after) => Box::pin(self.hedged(pick, after, n)).await,
                None => vec![(pick, one(call, pick, n).await)],
            };
            match self.settle(tried) {
                Next::Answered(response) => return Ok(*response),
                Next::TryAgain => {}
                Next::Stop => break,
            }
        }
        Err(self.report())
    }

    /// The target of try `n`, after the budget, the backoff or cool-down and the deadline have
    /// had their say; `None` ends the loop.
    async fn next_target(&mut self, n: u32) -> Option<usize> {
        let (call, now) = (self.call, crate::clock::now());
        let pick = self.pick(now);
        // The upstream streams for a non-streaming client too when a whole answer is assembled:
        // then `first_token`, not `attempt`, is what a retry must get through.
        let stream = call.streams_upstream();
        if n > 0 {
            if !call.shared.budget.try_withdraw(now) {
                self.budget_spent = true;
                return None;
            }
            let cooling = self.cooling[pick].map(|until| until.saturating_duration_since(now));
            let mut wait = cooling.unwrap_or_default();
            if self.tried[pick] {
                let retry = &call.route.policy.retry;
                let backoff = crate::retry::backoff(
                    n,
                    retry.backoff_base,
                    retry.backoff_max,
                    &mut call.shared.rng(),
                );
                wait = wait.max(backoff);
            }
            if !call.deadlines.attempt_fits(now + wait, stream, false) {
                self.no_time_for_retry = Some(call.deadlines.remaining(now + wait));
                return None;
            }
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        call.deadlines
            .attempt_fits(crate::clock::now(), stream, n == 0)
            .then_some(pick)
    }

    /// Takes what the attempts came to: the answer, or each failure into the trail.
    fn settle(&mut self, tried: Vec<Tried>) -> Next {
        let mut next = Next::TryAgain;
        for (pick, result) in tried {
            match result {
                Ok(mut response) => {
                    // The first try answered (nearly every call): its own trail is the whole.
                    if !self.trail.is_empty() {
                        self.trail.append(&mut response.trail);
                        response.trail = std::mem::take(&mut self.trail);
                    }
                    let attempts = attempts_value(response.trail.len());
                    response
                        .headers
                        .insert(crate::header_names::X_HOURGLASS_ATTEMPTS, attempts);
                    return Next::Answered(Box::new(response));
                }
                Err((failure, record)) => {
                    self.trail.push(record);
                    if let FailureKind::Status {
                        retry_after: Some(after),
                        ..
                    } = &failure
                    {
                        self.cooling[pick] = Some(crate::clock::now() + *after);
                    }
                    if !failure.retryable() {
                        next = Next::Stop;
                    }
                    self.last = Some((failure, pick));
                    self.next = pick + 1;
                }
            }
        }
        next
    }

    /// The next target: the best-ranked untried one (tiers, breakers, balance) that is not
    /// cooling down; when every target was tried, the next in turn (see [`choose`]).
    fn pick(&self, now: Instant) -> usize {
        let call = self.call;
        // One target: nothing to rank (the common case; it keeps the health locks off the path).
        if call.targets.len() == 1 {
            return 0;
        }
        self.rank(now)
            .into_iter()
            .find(|&i| self.cooling[i].is_none_or(|until| until <= now))
            .unwrap_or_else(|| choose(&self.tried, &self.cooling, self.next, now))
    }

    /// The untried targets in the order to try them (see `health::Health::rank`).
    fn rank(&self, now: Instant) -> Vec<usize> {
        let call = self.call;
        let candidates = call.candidates();
        let mut rng = call.shared.rng();
        let (model, balance) = (&call.route.name, call.route.balance);
        call.shared
            .health
            .rank(model, &candidates, &self.tried, balance, &mut rng, now)
    }

    /// The model's hedge threshold for try `n`: the first try only, when the model hedges.
    fn hedge_threshold(&self, n: u32) -> Option<Duration> {
        let route = self.call.route;
        let (fixed, quantile) = match route.hedge {
            _ if n > 0 => return None,
            Hedge::Off => return None,
            Hedge::After(d) => (Some(d), None),
            Hedge::Quantile(q) => (None, Some(q)),
        };
        let ceiling = route.policy.timeouts.first_token / 2;
        let floor = Duration::from_millis(20);
        let health = &self.call.shared.health;
        health.hedge_threshold(&route.name, fixed, quantile, floor, ceiling)
    }

    /// The hedge's target: the best-ranked untried one on another upstream, not cooling down,
    /// when the retry budget allows a hedge.
    fn hedge_target(&self, pick: usize) -> Option<usize> {
        let (call, now) = (self.call, crate::clock::now());
        let second = self.rank(now).into_iter().find(|&i| {
            call.targets[i].upstream != call.targets[pick].upstream
                && self.cooling[i].is_none_or(|until| until <= now)
        })?;
        call.shared.budget.try_withdraw(now).then_some(second)
    }

    /// Runs try `n` on `pick`; if it has not committed after `after`, starts a hedge on another
    /// target and returns the winner. The loser is dropped — its connection closed at once — and
    /// recorded as `hedge_cancelled`. When one fails the other goes on alone; both failures are
    /// returned.
    async fn hedged(&mut self, pick: usize, after: Duration, n: u32) -> Vec<Tried> {
        let call = self.call;
        let primary = one(call, pick, n);
        tokio::pin!(primary);
        let started = crate::clock::now();
        tokio::select! {
            biased;
            result = &mut primary => return vec![(pick, result)],
            _ = tokio::time::sleep(after) => {}
        }
        let Some(second) = self.hedge_target(pick) else {
            return vec![(pick, primary.await)];
        };
        self.tried[second] = true;
        let (shared, model) = (call.shared, call.route.name.clone());
        let upstream = call.targets[second].name.clone();
        let event = Event::HedgeStarted {
            model: model.clone(),
            upstream,
            after,
        };
        observation::hedge(shared, &model, HedgeOutcome::Started, event);
        let hedge = one(call, second, n);
        tokio::pin!(hedge);
        let mut failed: Vec<Tried> = Vec::new();
        let (mut primary_done, mut hedge_done) = (false, false);
        while !(primary_done && hedge_done) {
            let (index, other, other_done, result) = tokio::select! {
                result = &mut primary, if !primary_done => {
                    primary_done = true;
                    (pick, second, hedge_done, result)
                }
                result = &mut hedge, if !hedge_done => {
                    hedge_done = true;
                    (second, pick, primary_done, result)
                }
            };
            let Ok(mut response) = result else {
                failed.push((index, result));
                continue;
            };
            if !other_done {
                let (outcome, event) = if index == pick {
                    (HedgeOutcome::Lost, Event::HedgeLost { model })
                } else {
                    (HedgeOutcome::Won, Event::HedgeWon { model })
                };
                observation::hedge(shared, &call.route.name, outcome, event);
                response.trail.insert(0, self.cancelled(other, started));
            }
            return vec![(index, Ok(response))];
        }
        failed
    }

    /// The record of a hedged attempt cancelled because the other one committed first.
    fn cancelled(&self, index: usize, started: Instant) -> AttemptRecord {
        let target = &self.call.targets[index];
        AttemptRecord {
            upstream: target.name.clone(),
            model: target.model.clone(),
            phase: Phase::FirstToken,
            elapsed: crate::clock::since(started),
            outcome: Outcome::HedgeCancelled,
            status: None,
        }
    }

    /// The error of a call that got no answer: the last failure's, with the tally of attempts.
    fn report(&mut self) -> CallError {
        let call = self.call;
        let trail = std::mem::take(&mut self.trail);
        let elapsed = crate::clock::since(call.request.start);
        let tally = tally(&trail, call);
        let describer = call.describer();
        let Some((failure, pick)) = self.last.take() else {
            // No attempt could start: the deadline was already too close.
            let message = format!(
                "the call's deadline ({}) left no time for an attempt; {tally}",
                describer.total_source()
            );
            let code = ErrorCode::DeadlineExceeded;
            let mut error = CallError::before_attempts(code, StatusCode::GATEWAY_TIMEOUT, message);
            error.trail = trail;
            error.elapsed = elapsed;
            return error;
        };
        let mut message = describer.describe(&failure, &call.targets[pick].name);
        let (mut code, mut status) = (failure.code(), failure.status());
        if let Some(left) = self.no_time_for_retry {
            let needs = call.deadlines.retry_needs(call.streams_upstream());
            message.push_str(&format!(
                "; no retry: {} left of the call's deadline ({}), and a try needs {}",
                hourglass_config::duration::format(left),
                describer.total_source(),
                hourglass_config::duration::format(needs)
            ));
        }
        if self.budget_spent {
            message.push_str("; no retry: the retry budget (retry_budget.ratio) is spent");
            code = ErrorCode::RetryBudgetExhausted;
            status = StatusCode::SERVICE_UNAVAILABLE;
        }
        let (upstream_error, retry_after) = match &failure {
            FailureKind::Status {
                body, retry_after, ..
            } => (
                serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .map(|v| v.get("error").cloned().unwrap_or(v)),
                *retry_after,
            ),
            _ => (None, None),
        };
        CallError {
            code,
            status,
            message: format!("{message}; {tally}"),
            trail,
            elapsed,
            retry_after,
            upstream_error,
        }
    }
}

/// Try `n` of `call` on target `pick`, observed: under a lease on the target's health, and told
/// when it ends.
async fn one(call: &Call<'_>, pick: usize, n: u32) -> AttemptResult {
    let target = &call.targets[pick];
    let mut lease = Some(observation::lease(call, target));
    let result = attempt::run(call, target, n, &mut lease).await;
    let (record, timeline, failure) = match &result {
        Ok(response) => (response.trail.last(), response.timeline.as_ref(), None),
        Err((failure, record)) => (Some(record), None, Some(failure)),
    };
    if let Some(record) = record {
        observation::attempt_ended(call, target, record, timeline, failure, lease);
    }
    result
}

/// "N attempts on M of K upstreams".
fn tally(trail: &[AttemptRecord], call: &Call<'_>) -> String {
    let distinct = |names: &mut Vec<&str>| {
        names.sort_unstable();
        names.dedup();
        names.len()
    };
    let tried = distinct(&mut trail.iter().map(|a| a.upstream.as_str()).collect());
    let targets = distinct(&mut call.targets.iter().map(|t| t.name.as_str()).collect());
    format!(
        "{} attempt{} on {tried} of {targets} upstream{}",
        trail.len(),
        if trail.len() == 1 { "" } else { "s" },
        if targets == 1 { "" } else { "s" }
    )
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

/// The `x-hourglass-attempts` value: a count up to nine is a value made at compile time, where
/// `HeaderValue::from` allocates twice (a buffer, then its frozen share).
fn attempts_value(count: usize) -> http::HeaderValue {
    static COUNTS: [http::HeaderValue; 10] = [
        http::HeaderValue::from_static("0"),
        http::HeaderValue::from_static("1"),
        http::HeaderValue::from_static("2"),
        http::HeaderValue::from_static("3"),
        http::HeaderValue::from_static("4"),
        http::HeaderValue::from_static("5"),
        http::HeaderValue::from_static("6"),
        http::HeaderValue::from_static("7"),
        http::HeaderValue::from_static("8"),
        http::HeaderValue::from_static("9"),
    ];
    match COUNTS.get(count) {
        Some(value) => value.clone(),
        None => http::HeaderValue::from(count),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attempts_header_says_the_count() {
        for count in 0..=12 {
            assert_eq!(
                attempts_value(count),
                http::HeaderValue::from(count),
                "{count}"
            );
        }
    }

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
