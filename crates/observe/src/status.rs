//! What `GET /status` answers: per model and upstream, the recent attempts' success and timeout
//! rates and latency percentiles over the last minute and five minutes, fifteen minutes of them
//! in ten-second steps ([`crate::series`]), joined with the engine's health (breaker and when it
//! changes next, in flight, latency estimate, checks), and the last failures with their
//! one-line diagnoses. Kept in bounded rings fed by the engine's attempt events; a thread's
//! record of a target sits in the metrics' group of the target's attempts (`crate::metrics`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use hourglass_engine::events::AttemptEvent;
use hourglass_engine::{Engine, ErrorCode, Phase};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::series::Series;

/// The longest window reported.
const LONGEST: Duration = Duration::from_secs(300);
/// Attempts kept per model and upstream by each serving thread (the oldest go first past this).
const PER_TARGET: usize = 4096;
/// Failures kept for the feed.
const FAILURES: usize = 50;
/// The windows reported.
const WINDOWS: [(&str, Duration); 2] = [("1m", Duration::from_secs(60)), ("5m", LONGEST)];

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    ok: bool,
    timeout: bool,
    first_token_ms: Option<f64>,
    total_ms: f64,
}

/// One failure in the feed.
#[derive(Debug, Clone)]
struct Failure {
    at: jiff::Timestamp,
    model: String,
    upstream: String,
    code: ErrorCode,
    phase: Phase,
}

/// One target's recent attempts on one thread, kept in the metrics' group of the target's
/// attempts (`crate::metrics`), so an attempt finds both with one lookup.
#[derive(Debug, Default)]
pub(crate) struct Kept {
    /// The last five minutes' attempts, for the windows.
    ring: VecDeque<Sample>,
    /// The last fifteen minutes in steps, for the charts.
    series: Series,
}

impl Kept {
    /// Records an attempt of this target (its failure goes to the feed: [`Recent::failure`]).
    pub(crate) fn record(&mut self, e: &AttemptEvent<'_>) {
        let now = hourglass_engine::clock::now();
        let first_token_ms = e
            .timeline
            .and_then(|t| t.first_token_latency())
            .map(|latency| latency.as_secs_f64() * 1000.0);
        let sample = Sample {
            at: now,
            ok: e.outcome.is_ok(),
            timeout: e.outcome.code().is_some_and(|code| code.is_timeout()),
            first_token_ms,
            total_ms: e.elapsed.as_secs_f64() * 1000.0,
        };
        self.series.record(
            wall_second(),
            sample.ok,
            e.outcome.code().map(|_| e.phase),
            first_token_ms,
        );
        let ring = &mut self.ring;
        while ring.len() >= PER_TARGET
            || ring
                .front()
                .is_some_and(|s| now.saturating_duration_since(s.at) > LONGEST)
        {
            ring.pop_front();
        }
        ring.push_back(sample);
    }
}

/// One target's attempts as `/status` reads them: every shard's, joined.
#[derive(Debug, Default)]
pub(crate) struct Joined {
    ring: Vec<Sample>,
    series: Series,
}

impl Joined {
    /// Adds one thread's record of the target.
    pub(crate) fn add(&mut self, kept: &Kept) {
        self.ring.extend(kept.ring.iter().copied());
        self.series.add(&kept.series);
    }
}

/// Recent failures, and `/status` from them and the targets' records.
#[derive(Debug, Default)]
pub struct Recent {
    failures: Mutex<VecDeque<Failure>>,
}

impl Recent {
    /// Records a failure for the feed: an attempt's, or a committed stream's after its start.
    pub fn failure(&self, model: &str, upstream: &str, code: ErrorCode, phase: Phase) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if failures.len() == FAILURES {
            failures.pop_front();
        }
        failures.push_back(Failure {
            at: jiff::Timestamp::now(),
            model: model.to_owned(),
            upstream: upstream.to_owned(),
            code,
            phase,
        });
    }

    /// The `/status` document, with `joined`, each target's attempts (by model, upstream and
    /// upstream model, joined as a metric series key is) from every thread's record.
    pub(crate) fn status(&self, engine: &Engine, joined: HashMap<String, Joined>) -> Value {
        let now = Instant::now();
        let now_s = jiff::Timestamp::now().as_second();
        let health = engine.health().snapshot();
        let mut targets: Vec<Value> = {
            joined
                .iter()
                .map(|(key, kept)| {
                    let mut parts = key.split(crate::metrics::SEP);
                    let mut part = || parts.next().unwrap_or_default();
                    let (model, upstream, upstream_model) = (part(), part(), part());
                    let ring = &kept.ring;
                    let state = health
                        .iter()
                        .find(|t| t.upstream == upstream && t.model == upstream_model);
                    let mut windows = serde_json::Map::new();
                    for (name, width) in WINDOWS {
                        let recent: Vec<&Sample> = ring
                            .iter()
                            .filter(|s| now.saturating_duration_since(s.at) <= width)
                            .collect();
                        windows.insert(name.to_owned(), window(&recent));
                    }
                    json!({
                        "model": model,
                        "upstream": upstream,
                        "upstream_model": upstream_model,
                        "breaker": state.map(|t| t.breaker),
                        "in_flight": state.map(|t| t.outstanding),
                        "ejections": state.map(|t| t.ejections),
                        "latency_estimate_ms": state.map(|t| round(t.ewma.as_secs_f64() * 1000.0)),
                        "half_open_in_s": state.and_then(|t| t.half_open_in).map(|d| round(d.as_secs_f64())),
                        "trials_to_close": state.and_then(|t| t.trials_to_close),
                        "windows": windows,
                        "series": kept.series.render(now_s),
                    })
                })
                .collect()
        };
        targets.sort_by_key(|t| (t["model"].to_string(), t["upstream"].to_string()));
        let checks = &engine.config().health_check;
        let checked = checks.mode != hourglass_config::CheckMode::Off;
        let upstreams: Vec<Value> = engine
            .health()
            .probes()
            .into_iter()
            .map(|(name, p)| {
                json!({
                    "name": name,
                    "up": p.healthy,
                    "next_check_in_s": p.next_check.filter(|_| checked).map(|at| round(at.saturating_duration_since(now).as_secs_f64())),
                    "checks_to_flip": checked.then(|| p.results_to_flip(checks.healthy_threshold, checks.unhealthy_threshold)),
                    "last_check": match &p.last {
                        None => Value::Null,
                        Some(Ok(latency)) => json!({"ok": true, "latency_ms": round(latency.as_secs_f64() * 1000.0)}),
                        Some(Err(error)) => json!({"ok": false, "error": error}),
                    },
                })
            })
            .collect();
        let failures: Vec<Value> = {
            let failures = self
                .failures
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            failures
                .iter()
                .rev()
                .map(|f| {
                    json!({
                        "at": f.at.to_string(),
                        "model": f.model,
                        "upstream": f.upstream,
                        "code": f.code,
                        "phase": f.phase,
                        "diagnosis": f.code.diagnosis(),
                    })
                })
                .collect()
        };
        json!({
            "generated_at": jiff::Timestamp::now().to_string(),
            "retry_budget_available": round(engine.retry_budget_available()),
            "upstreams": upstreams,
            "targets": targets,
            "recent_failures": failures,
        })
    }
}

/// This second on the wall clock, as the call's turn read it.
fn wall_second() -> i64 {
    jiff::Timestamp::try_from(hourglass_engine::clock::wall())
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .as_second()
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn percentiles(mut values: Vec<f64>) -> Value {
    if values.is_empty() {
        return Value::Null;
    }
    values.sort_by(f64::total_cmp);
    let at = |p: f64| {
        let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
        round(values[rank.clamp(1, values.len()) - 1])
    };
    json!({"p50": at(50.0), "p90": at(90.0), "p99": at(99.0)})
}

fn window(samples: &[&Sample]) -> Value {
    let n = samples.len();
    let ok = samples.iter().filter(|s| s.ok).count();
    let timeouts = samples.iter().filter(|s| s.timeout).count();
    let rate = |k: usize| {
        if n == 0 {
            Value::Null
        } else {
            json!(round(1000.0 * k as f64 / n as f64) / 1000.0)
        }
    };
    json!({
        "attempts": n,
        "success_rate": rate(ok),
        "timeout_rate": rate(timeouts),
        "first_token_ms": percentiles(samples.iter().filter(|s| s.ok).filter_map(|s| s.first_token_ms).collect()),
        "total_ms": percentiles(samples.iter().filter(|s| s.ok).map(|s| s.total_ms).collect()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hourglass_engine::Outcome;

    #[test]
    fn every_threads_attempts_are_joined_per_target() {
        use hourglass_engine::events::Observer;
        let metrics = crate::metrics::Metrics::with_models(["m"]);
        let attempt = |upstream: &str, ok: bool| {
            metrics.attempt(&AttemptEvent {
                model: "m",
                upstream,
                upstream_model: "um",
                outcome: if ok {
                    Outcome::Ok
                } else {
                    Outcome::Failed(ErrorCode::ConnectTimeout)
                },
                phase: Phase::Connect,
                timeline: None,
                elapsed: Duration::from_millis(5),
            });
        };
        std::thread::scope(|scope| {
            for i in 0..4 {
                let attempt = &attempt;
                scope.spawn(move || {
                    for _ in 0..10 {
                        attempt("a", i != 0);
                    }
                    attempt("b", true);
                });
            }
        });
        let joined = metrics.recent_attempts();
        assert_eq!(joined.len(), 2, "{:?}", joined.keys());
        let a = &joined[&["m", "a", "um"].join(&crate::metrics::SEP.to_string())];
        assert_eq!(a.ring.len(), 40);
        assert_eq!(a.ring.iter().filter(|s| s.ok).count(), 30);
        assert_eq!(a.ring.iter().filter(|s| s.timeout).count(), 10);
        let b = &joined[&["m", "b", "um"].join(&crate::metrics::SEP.to_string())];
        assert_eq!(b.ring.len(), 4);
        let series = a.series.render(wall_second());
        let steps = series["attempts"].as_array().unwrap();
        assert_eq!(steps.iter().filter_map(Value::as_u64).sum::<u64>(), 40);
        assert_eq!(metrics.recent.failures.lock().unwrap().len(), 10);
    }
}
