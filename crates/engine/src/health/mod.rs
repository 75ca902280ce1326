//! Which upstream, and when: per upstream-and-model health (a circuit breaker, a peak-EWMA of
//! first-token latency, calls in flight), the ranking of a call's targets from it (ordered or
//! latency-aware power of two choices), the hedge threshold per model, and a status snapshot and
//! event log for the observability work. The state machines take `now` as an argument; only
//! [`Health`] touches shared state.

pub mod active;
pub mod breaker;
pub mod ewma;
pub mod hedge;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hourglass_config::{Balance, BreakerConfig};
use tokio::time::Instant;

use breaker::{Breaker, BreakerSettings, Transition};
use ewma::PeakEwma;
use hedge::LatencyWindow;

/// The decay time of the latency estimate.
const EWMA_TAU: Duration = Duration::from_secs(10);
/// The estimate of a target nothing is known about yet.
const EWMA_PRIOR: Duration = Duration::from_millis(500);
/// Models tracked per upstream; later ones share [`OVERFLOW_MODEL`].
const MAX_MODELS_PER_UPSTREAM: usize = 256;
/// The entry models past [`MAX_MODELS_PER_UPSTREAM`] share.
const OVERFLOW_MODEL: &str = "(other)";
/// The highest latency a failure can push an estimate to.
const MAX_PENALTY: Duration = Duration::from_secs(60);
/// Events kept for the status snapshot.
const EVENTS: usize = 256;

/// One upstream-and-model's state.
#[derive(Debug)]
struct TargetHealth {
    breaker: Breaker,
    ewma: PeakEwma,
    outstanding: usize,
    calls: u64,
    failures: u64,
    /// Calls it answered successfully (not its failures, not the clients' own 4xx errors).
    answered: u64,
}

/// Something that happened to a target or a call, for logs and the status page.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A breaker tripped.
    Ejected {
        /// Upstream name.
        upstream: String,
        /// Model.
        model: String,
        /// For how long.
        duration: Duration,
        /// The nth ejection.
        count: u32,
    },
    /// An ejection ended; trial calls may go.
    HalfOpened {
        /// Upstream name.
        upstream: String,
        /// Model.
        model: String,
    },
    /// Trials succeeded: the target is back.
    Readmitted {
        /// Upstream name.
        upstream: String,
        /// Model.
        model: String,
    },
    /// Every target of a model was ejected: the call tried them anyway.
    Panic {
        /// Model.
        model: String,
    },
    /// A hedge started on another upstream.
    HedgeStarted {
        /// Model.
        model: String,
        /// The hedge's upstream.
        upstream: String,
        /// The wait before it.
        after: Duration,
    },
    /// The hedge produced the answer; the first attempt was cancelled.
    HedgeWon {
        /// Model.
        model: String,
    },
    /// The first attempt answered first; the hedge was cancelled.
    HedgeLost {
        /// Model.
        model: String,
    },
    /// Active checks found an upstream down.
    UpstreamDown {
        /// Upstream name.
        upstream: String,
        /// The last check's error.
        error: String,
    },
    /// Active checks found it up again.
    UpstreamUp {
        /// Upstream name.
        upstream: String,
    },
}

/// A target's state as the status page shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetStatus {
    /// Upstream name.
    pub upstream: String,
    /// Model.
    pub model: String,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// The latency estimate.
    pub ewma: Duration,
    /// Calls in flight.
    pub outstanding: usize,
    /// Ejections so far.
    pub ejections: u32,
    /// Calls ended.
    pub calls: u64,
    /// Of which failed.
    pub failures: u64,
    /// Of which were answered successfully.
    pub answered: u64,
}

/// Every target's health, shared by all calls of an engine.
pub struct Health {
    settings: BreakerSettings,
    max_ejected_share: f64,
    names: Vec<String>,
    /// Per upstream (by index), per model: looked up by `&str`, so a call allocates nothing here.
    targets: Mutex<Vec<HashMap<String, TargetHealth>>>,
    /// Whether active checks find each upstream up (read on every call without a lock).
    up: Vec<std::sync::atomic::AtomicBool>,
    latencies: Mutex<HashMap<String, LatencyWindow>>,
    events: Mutex<VecDeque<(Instant, Event)>>,
    probes: Mutex<Vec<active::ProbeState>>,
}

/// A candidate target as the ranking sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Index into the configuration's upstreams.
    pub upstream: usize,
    /// The model sent upstream.
    pub model: &'a str,
    /// Its priority tier (0 first).
    pub tier: u32,
    /// Its weight within the tier.
    pub weight: u32,
}

impl Health {
    /// The health table for upstreams named `names`.
    pub fn new(config: &BreakerConfig, names: Vec<String>) -> Health {
        Health {
            settings: BreakerSettings {
                consecutive_failures: config.consecutive_failures,
                failure_rate: config.failure_rate,
                min_calls: config.min_calls,
                window: config.window,
                ejection: config.ejection,
                max_ejection: config.max_ejection,
                half_open_calls: config.half_open_calls,
            },
            max_ejected_share: config.max_ejected_share,
            targets: Mutex::new((0..names.len()).map(|_| HashMap::new()).collect()),
            up: (0..names.len())
                .map(|_| std::sync::atomic::AtomicBool::new(true))
                .collect(),
            latencies: Mutex::new(HashMap::new()),
            events: Mutex::new(VecDeque::new()),
            probes: Mutex::new(vec![active::ProbeState::default(); names.len()]),
            names,
        }
    }

    fn with<R>(
        &self,
        upstream: usize,
        model: &str,
        now: Instant,
        f: impl FnOnce(&mut TargetHealth) -> R,
    ) -> R {
        let (result, pending) = {
            let mut targets = self
                .targets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let models = &mut targets[upstream];
            // Clients can send any model name to an upstream serving `*`: past a bound, new
            // names share one entry instead of growing the table without end.
            let model = if models.contains_key(model) || models.len() < MAX_MODELS_PER_UPSTREAM {
                model
            } else {
                OVERFLOW_MODEL
            };
            if !models.contains_key(model) {
                models.insert(
                    model.to_owned(),
                    TargetHealth {
                        breaker: Breaker::new(self.settings),
                        ewma: PeakEwma::new(EWMA_PRIOR, EWMA_TAU, now),
                        outstanding: 0,
                        calls: 0,
                        failures: 0,
                        answered: 0,
                    },
                );
            }
            let entry = models.get_mut(model).expect("inserted above");
            let result = f(entry);
            (result, entry.breaker.take_pending())
        };
        // An ejection that ended while the state was read is told here, outside the lock.
        if let Some(t) = pending {
            self.transition(now, upstream, model, t);
        }
        result
    }

    fn event(&self, now: Instant, event: Event) {
        match &event {
            Event::Ejected { .. }
            | Event::Readmitted { .. }
            | Event::UpstreamDown { .. }
            | Event::UpstreamUp { .. } => tracing::info!(?event, "health"),
            _ => tracing::debug!(?event, "health"),
        }
        let mut events = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if events.len() == EVENTS {
            events.pop_front();
        }
        events.push_back((now, event));
    }

    fn transition(&self, now: Instant, upstream: usize, model: &str, t: Transition) {
        let (upstream, model) = (self.names[upstream].clone(), model.to_owned());
        self.event(
            now,
            match t {
                Transition::Ejected { duration, count } => Event::Ejected {
                    upstream,
                    model,
                    duration,
                    count,
                },
                Transition::HalfOpened => Event::HalfOpened { upstream, model },
                Transition::Readmitted => Event::Readmitted { upstream, model },
            },
        );
    }

    /// The order in which to try `candidates` (indices into it), untried ones only: the lowest
    /// tier first; within a tier, in order (`Ordered`) or by power of two choices over the
    /// peak-EWMA cost (`Latency`). Ejected targets go last — unless more than the allowed share
    /// of the model's targets is ejected, when ejection is ignored (panic mode, an event).
    pub fn rank(
        &self,
        model: &str,
        candidates: &[Candidate<'_>],
        tried: &[bool],
        balance: Balance,
        rng: &mut fastrand::Rng,
        now: Instant,
    ) -> Vec<usize> {
        let available: Vec<bool> = candidates.iter().map(|c| self.available(c, now)).collect();
        let ejected = available.iter().filter(|a| !**a).count();
        let panic =
            ejected > 0 && ejected as f64 > self.max_ejected_share * candidates.len() as f64;
        if panic && ejected == candidates.len() {
            self.event(
                now,
                Event::Panic {
                    model: model.to_owned(),
                },
            );
        }
        let usable = |i: usize| panic || available[i];
        let mut order: Vec<usize> = Vec::with_capacity(candidates.len());
        let mut tiers: Vec<u32> = candidates.iter().map(|c| c.tier).collect();
        tiers.sort_unstable();
        tiers.dedup();
        for tier in tiers {
            let mut pool: Vec<usize> = (0..candidates.len())
                .filter(|&i| candidates[i].tier == tier && !tried[i] && usable(i))
                .collect();
            while !pool.is_empty() {
                let pick = match balance {
                    Balance::Ordered => 0,
                    _ if pool.len() == 1 => 0,
                    Balance::Weighted => {
                        let total: u64 =
                            pool.iter().map(|&i| u64::from(candidates[i].weight)).sum();
                        let mut ticket = rng.u64(0..total.max(1));
                        pool.iter()
                            .position(|&i| {
                                let w = u64::from(candidates[i].weight);
                                if ticket < w {
                                    true
                                } else {
                                    ticket -= w;
                                    false
                                }
                            })
                            .unwrap_or(0)
                    }
                    Balance::Latency => {
                        let a = rng.usize(0..pool.len());
                        let mut b = rng.usize(0..pool.len() - 1);
                        if b >= a {
                            b += 1;
                        }
                        let cost = |i: usize| {
                            let c = candidates[pool[i]];
                            self.with(c.upstream, c.model, now, |t| t.ewma.cost(t.outstanding))
                                / f64::from(c.weight.max(1))
                        };
                        if cost(b) < cost(a) { b } else { a }
                    }
                };
                order.push(pool.remove(pick));
            }
        }
        // Ejected (and, when nothing else is left, already tried) targets come last.
        order.extend((0..candidates.len()).filter(|&i| !tried[i] && !usable(i)));
        order
    }

    /// Whether a target may take a call now: its breaker admits one and active checks have not
    /// found its upstream down.
    fn available(&self, c: &Candidate<'_>, now: Instant) -> bool {
        let up = self
            .up
            .get(c.upstream)
            .is_none_or(|up| up.load(std::sync::atomic::Ordering::Relaxed));
        up && self.with(c.upstream, c.model, now, |t| t.breaker.available(now))
    }

    /// Records an active check of upstream `index`; a completion check's latency also feeds the
    /// model's latency estimate.
    pub fn probe_result(
        &self,
        index: usize,
        mode: &hourglass_config::CheckMode,
        result: Result<Duration, String>,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) {
        let now = Instant::now();
        if let (hourglass_config::CheckMode::Completion(model), Ok(latency)) = (mode, &result) {
            self.with(index, model, now, |t| t.ewma.observe(*latency, now));
        }
        let error = result.as_ref().err().cloned().unwrap_or_default();
        let flipped = self
            .probes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(index)
            .and_then(|p| p.record(result, healthy_threshold, unhealthy_threshold));
        if let (Some(healthy), Some(up)) = (flipped, self.up.get(index)) {
            up.store(healthy, std::sync::atomic::Ordering::Relaxed);
        }
        let upstream = self.names[index].clone();
        match flipped {
            Some(false) => self.event(now, Event::UpstreamDown { upstream, error }),
            Some(true) => self.event(now, Event::UpstreamUp { upstream }),
            None => {}
        }
    }

    /// Each upstream's active-check state, in configuration order.
    pub fn probes(&self) -> Vec<(String, active::ProbeState)> {
        let probes = self
            .probes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.names
            .iter()
            .cloned()
            .zip(probes.iter().cloned())
            .collect()
    }

    /// Whether every one of `candidates` is ejected now (the call goes on anyway; its error says so).
    pub fn all_ejected(&self, candidates: &[Candidate<'_>], now: Instant) -> bool {
        !candidates.is_empty() && candidates.iter().all(|c| !self.available(c, now))
    }

    /// Starts a call on a target: counts it in flight and, when the breaker is half-open, as a
    /// trial. The lease ends it.
    /// `window` keeps the model's recent first-token latencies (for an adaptive hedge threshold).
    pub fn lease(
        self: &Arc<Self>,
        upstream: usize,
        model: &str,
        window: bool,
        now: Instant,
    ) -> Lease {
        self.with(upstream, model, now, |t| {
            t.outstanding += 1;
            t.breaker.admit(now);
        });
        Lease {
            health: self.clone(),
            upstream,
            model: model.to_owned(),
            window,
            done: false,
        }
    }

    /// The hedge threshold of `model` now (see [`hedge::threshold`]).
    pub fn hedge_threshold(
        &self,
        model: &str,
        fixed: Option<Duration>,
        quantile: Option<f64>,
        floor: Duration,
        ceiling: Duration,
    ) -> Option<Duration> {
        let latencies = self
            .latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let empty = LatencyWindow::default();
        hedge::threshold(
            fixed,
            quantile,
            latencies.get(model).unwrap_or(&empty),
            floor,
            ceiling,
        )
    }

    /// Records a hedge event.
    pub fn hedge_event(&self, event: Event) {
        self.event(Instant::now(), event);
    }

    /// Every known target's state.
    pub fn snapshot(&self) -> Vec<TargetStatus> {
        let now = Instant::now();
        let mut targets = self
            .targets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<TargetStatus> = targets
            .iter_mut()
            .enumerate()
            .flat_map(|(upstream, models)| models.iter_mut().map(move |(m, t)| (upstream, m, t)))
            .map(|(upstream, model, t)| TargetStatus {
                upstream: self.names[upstream].clone(),
                model: model.clone(),
                breaker: t.breaker.state(now).name(),
                ewma: t.ewma.estimate(),
                outstanding: t.outstanding,
                ejections: t.breaker.ejections(),
                calls: t.calls,
                failures: t.failures,
                answered: t.answered,
            })
            .collect();
        out.sort_by(|a, b| (&a.upstream, &a.model).cmp(&(&b.upstream, &b.model)));
        out
    }

    /// The most recent events, oldest first.
    pub fn events(&self) -> Vec<(Instant, Event)> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

/// One call on one target, in flight until finished or dropped.
pub struct Lease {
    health: Arc<Health>,
    upstream: usize,
    model: String,
    /// Whether the model's latency window is kept (adaptive hedging).
    window: bool,
    done: bool,
}

impl Lease {
    /// The first meaningful token (or a whole answer) came after `latency`.
    pub fn first_token(&self, latency: Duration) {
        let now = Instant::now();
        self.health.with(self.upstream, &self.model, now, |t| {
            t.ewma.observe(latency, now)
        });
        self.observe_window(latency);
    }

    fn observe_window(&self, latency: Duration) {
        if !self.window {
            return;
        }
        let mut latencies = self
            .health
            .latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match latencies.get_mut(&self.model) {
            Some(window) => window.observe(latency),
            None => latencies
                .entry(self.model.clone())
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
        let now = Instant::now();
        self.health.with(self.upstream, &self.model, now, |t| {
            t.outstanding = t.outstanding.saturating_sub(1);
            t.calls += 1;
            t.breaker.abandon();
        });
    }

    /// The call ended, its first token (or whole answer) having come after `latency`.
    pub fn finish_after(mut self, latency: Option<Duration>, failed: bool) {
        self.done = true;
        let now = Instant::now();
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

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.done {
            // Cancelled (a lost hedge, a client gone): no verdict on the upstream.
            let now = Instant::now();
            self.health.with(self.upstream, &self.model, now, |t| {
                t.outstanding = t.outstanding.saturating_sub(1);
                t.breaker.abandon();
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(share: f64) -> Arc<Health> {
        let config = BreakerConfig {
            consecutive_failures: 2,
            max_ejected_share: share,
            ..BreakerConfig::default()
        };
        Arc::new(Health::new(
            &config,
            vec!["a".into(), "b".into(), "c".into()],
        ))
    }

    fn candidates() -> Vec<Candidate<'static>> {
        (0..3)
            .map(|upstream| Candidate {
                upstream,
                model: "m",
                tier: 0,
                weight: 1,
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn an_ejected_target_goes_last_until_too_many_are_ejected() {
        let h = health(0.5);
        let mut rng = fastrand::Rng::with_seed(1);
        let now = Instant::now();
        for _ in 0..2 {
            h.lease(0, "m", false, now).finish(true);
        }
        let order = h.rank(
            "m",
            &candidates(),
            &[false; 3],
            Balance::Ordered,
            &mut rng,
            now,
        );
        assert_eq!(order, [1, 2, 0]);
        for _ in 0..2 {
            h.lease(1, "m", false, now).finish(true);
        }
        // Two of three ejected is above half: ejection is ignored rather than overload one.
        let order = h.rank(
            "m",
            &candidates(),
            &[false; 3],
            Balance::Ordered,
            &mut rng,
            now,
        );
        assert_eq!(order, [0, 1, 2]);
        assert!(h.events().iter().any(
            |(_, e)| matches!(e, Event::Ejected { upstream, count: 1, .. } if upstream == "a")
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn latency_balancing_prefers_the_cheaper_target() {
        let h = health(0.5);
        let mut rng = fastrand::Rng::with_seed(7);
        let now = Instant::now();
        h.lease(0, "m", false, now)
            .first_token(Duration::from_millis(900));
        h.lease(1, "m", false, now)
            .first_token(Duration::from_millis(100));
        h.lease(2, "m", false, now)
            .first_token(Duration::from_millis(400));
        let two: Vec<Candidate<'_>> = candidates().into_iter().take(2).collect();
        let mut firsts = [0usize; 2];
        for _ in 0..100 {
            firsts[h.rank("m", &two, &[false; 2], Balance::Latency, &mut rng, now)[0]] += 1;
        }
        assert_eq!(firsts, [0, 100], "of two, the cheaper always wins");
        let mut firsts = [0usize; 3];
        for _ in 0..300 {
            firsts[h.rank(
                "m",
                &candidates(),
                &[false; 3],
                Balance::Latency,
                &mut rng,
                now,
            )[0]] += 1;
        }
        assert_eq!(firsts[0], 0, "the slowest never wins a pair: {firsts:?}");
        assert!(firsts[1] > firsts[2], "{firsts:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn endless_failures_saturate_the_estimate_instead_of_overflowing() {
        let h = health(0.5);
        let now = Instant::now();
        for _ in 0..200 {
            h.lease(0, "m", false, now).finish(true);
        }
        assert_eq!(h.snapshot()[0].ewma, MAX_PENALTY);
    }

    #[tokio::test(start_paused = true)]
    async fn made_up_model_names_do_not_grow_the_table_without_end() {
        let h = health(0.5);
        let now = Instant::now();
        for i in 0..1000 {
            h.lease(0, &format!("made-up-{i}"), false, now).finish(true);
        }
        let snapshot = h.snapshot();
        assert_eq!(snapshot.len(), MAX_MODELS_PER_UPSTREAM + 1);
        let overflow = snapshot.iter().find(|t| t.model == OVERFLOW_MODEL).unwrap();
        assert_eq!(overflow.calls, 1000 - MAX_MODELS_PER_UPSTREAM as u64);
    }

    #[tokio::test(start_paused = true)]
    async fn weights_share_calls_within_a_tier() {
        let h = health(0.5);
        let mut rng = fastrand::Rng::with_seed(3);
        let now = Instant::now();
        let mut c = candidates();
        c.truncate(2);
        c[0].weight = 3;
        let mut firsts = [0usize; 2];
        for _ in 0..4000 {
            firsts[h.rank("m", &c, &[false; 2], Balance::Weighted, &mut rng, now)[0]] += 1;
        }
        assert!((2850..3150).contains(&firsts[0]), "3:1 → {firsts:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn tiers_come_in_order_and_a_dropped_lease_frees_its_slot() {
        let h = health(0.5);
        let mut rng = fastrand::Rng::with_seed(1);
        let now = Instant::now();
        let c = [
            Candidate {
                upstream: 0,
                model: "m",
                tier: 1,
                weight: 1,
            },
            Candidate {
                upstream: 1,
                model: "m",
                tier: 0,
                weight: 1,
            },
            Candidate {
                upstream: 2,
                model: "m",
                tier: 1,
                weight: 1,
            },
        ];
        assert_eq!(
            h.rank("m", &c, &[false; 3], Balance::Ordered, &mut rng, now),
            [1, 0, 2]
        );
        assert_eq!(
            h.rank(
                "m",
                &c,
                &[false, true, false],
                Balance::Ordered,
                &mut rng,
                now
            ),
            [0, 2]
        );
        let lease = h.lease(1, "m", false, now);
        assert_eq!(h.snapshot()[1].outstanding, 1);
        drop(lease);
        assert_eq!(h.snapshot()[1].outstanding, 0);
    }
}
