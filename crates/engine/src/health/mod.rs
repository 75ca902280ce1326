//! Which upstream, and when: per upstream-and-model health (a circuit breaker, a peak-EWMA of
//! first-token latency, calls in flight), the ranking of a call's targets from it (ordered or
//! latency-aware power of two choices), the hedge threshold per model, and a status snapshot and
//! event log for the observability work. The state machines take `now` as an argument; only
//! [`Health`] touches shared state.

pub mod active; // checks of every upstream over the pool
pub mod cooldown; // 429/503 Retry-After, rejected keys, upstreams down: shared by replicas
pub mod breaker; // ejection after failures, half-open trials
pub mod ewma; // the peak-EWMA latency estimate
pub mod hedge; // the hedge threshold from recent first-token latencies
mod lease; // one call on one target, and its verdict

pub use lease::Lease;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hourglass_config::{Balance, BreakerConfig};
use tokio::time::Instant;

use crate::slots::lock;

use breaker::{Breaker, BreakerSettings, Transition};
use ewma::PeakEwma;
use hedge::LatencyWindow;

/// How the health tables hash a model's name: looked up several times a call, where SipHash
/// cost ~70 instructions each. Seeded per table; both are bounded (`MAX_MODELS_PER_UPSTREAM`,
/// `MAX_LATENCY_WINDOWS`), so names a client mints cannot grow them.
type FastHash = foldhash::fast::RandomState;

/// The decay time of the latency estimate.
const EWMA_TAU: Duration = Duration::from_secs(10);
/// The estimate of a target nothing is known about yet.
const EWMA_PRIOR: Duration = Duration::from_millis(500);
/// Models tracked per upstream; later ones share [`OVERFLOW_MODEL`].
const MAX_MODELS_PER_UPSTREAM: usize = 256;
/// The entry models past [`MAX_MODELS_PER_UPSTREAM`] share.
const OVERFLOW_MODEL: &str = "(other)";
/// Models whose first-token latencies are kept for a quantile hedge; later ones share the
/// window of [`OVERFLOW_MODEL`].
const MAX_LATENCY_WINDOWS: usize = 256;

/// The window `model`'s latencies go to and are read from: its own, unless the table is full
/// and it has none (then the shared one).
fn window_of<'a>(latencies: &HashMap<String, LatencyWindow, FastHash>, model: &'a str) -> &'a str {
    if latencies.len() < MAX_LATENCY_WINDOWS || latencies.contains_key(model) {
        model
    } else {
        OVERFLOW_MODEL
    }
}
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
    /// An open breaker: how long until it lets trial calls through (half-open).
    pub half_open_in: Option<Duration>,
    /// A half-open breaker: trial calls that must still succeed to close it.
    pub trials_to_close: Option<u32>,
}

/// Every target's health, shared by all calls of an engine — and by the engines that follow it
/// after a reload, for the upstreams that are still the same.
pub struct Health {
    settings: BreakerSettings,
    max_ejected_share: f64,
    /// Per upstream, in configuration order.
    upstreams: Vec<Arc<UpstreamHealth>>,
    /// The recent first-token latencies of each model (adaptive hedge thresholds).
    latencies: Arc<Mutex<HashMap<String, LatencyWindow, FastHash>>>,
    events: Arc<Mutex<VecDeque<(Instant, Event)>>>,
    /// Where cool-downs learned here go (the gateway's shared state), if anywhere.
    sink: Arc<Mutex<Option<cooldown::Sink>>>,
}

/// One upstream's health: its targets (one per model), whether active checks find it up, and
/// the checks' run of results.
struct UpstreamHealth {
    name: String,
    /// Per model: looked up by `&str`, so a call allocates nothing here.
    targets: Mutex<HashMap<String, TargetHealth, FastHash>>,
    /// Whether active checks find it up (read on every call without a lock).
    up: std::sync::atomic::AtomicBool,
    /// How many of its targets' breakers are not closed (open or half-open): while none is, a
    /// call finds its target available without the lock (read on every call; written only when
    /// a breaker opens or closes).
    unclosed: std::sync::atomic::AtomicUsize,
    probe: Mutex<active::ProbeState>,
    /// Its cool-downs, by model.
    cooldowns: cooldown::Table,
}

impl UpstreamHealth {
    fn new(name: String) -> Arc<UpstreamHealth> {
        Arc::new(UpstreamHealth {
            name,
            targets: Mutex::new(HashMap::default()),
            up: std::sync::atomic::AtomicBool::new(true),
            unclosed: std::sync::atomic::AtomicUsize::new(0),
            probe: Mutex::new(active::ProbeState::default()),
            cooldowns: cooldown::Table::default(),
        })
    }

    /// Counts a breaker that opened (`was_closed`, not `closed` now) or closed again, under the
    /// targets' lock.
    fn closed_or_not(&self, was_closed: bool, closed: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        match (was_closed, closed) {
            (true, false) => self.unclosed.fetch_add(1, Relaxed),
            (false, true) => self.unclosed.fetch_sub(1, Relaxed),
            _ => return,
        };
    }
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
    /// The health table for upstreams named `names`, nothing known yet.
    pub fn new(config: &BreakerConfig, names: Vec<String>) -> Health {
        Health {
            settings: settings(config),
            max_ejected_share: config.max_ejected_share,
            upstreams: names.into_iter().map(UpstreamHealth::new).collect(),
            latencies: Arc::new(Mutex::new(HashMap::default())),
            events: Arc::new(Mutex::new(VecDeque::new())),
            sink: Arc::new(Mutex::new(None)),
        }
    }

    /// Sends every cool-down learned from now on to `sink` too (it must not block).
    pub fn set_cooldown_sink(&self, sink: cooldown::Sink) {
        *lock(&self.sink) = Some(sink);
    }

    /// A cool-down learned by this process's calls or checks: kept, and sent to the sink.
    pub fn learned(
        &self,
        upstream: usize,
        model: Option<&str>,
        remaining: Duration,
        reason: cooldown::Reason,
    ) {
        let Some(entry) = self.upstreams.get(upstream) else {
            return;
        };
        let remaining = remaining.min(cooldown::MAX_COOLDOWN);
        entry
            .cooldowns
            .set(model, remaining, reason, crate::clock::now());
        let sink = lock(&self.sink).clone();
        if let Some(sink) = sink {
            sink(&cooldown::Cooldown {
                upstream: entry.name.clone(),
                model: model.map(str::to_owned),
                remaining_ms: remaining.as_millis() as u64,
                reason,
            });
        }
    }

    /// A cool-down another replica learned; `false` when no upstream here has its name.
    pub fn cool(&self, shared: &cooldown::Cooldown) -> bool {
        let Some(entry) = self.upstreams.iter().find(|u| u.name == shared.upstream) else {
            return false;
        };
        entry.cooldowns.set(
            shared.model.as_deref(),
            Duration::from_millis(shared.remaining_ms),
            shared.reason,
            crate::clock::now(),
        );
        true
    }

    /// The cool-downs in force: `(upstream, model, remaining, reason)`.
    pub fn cooldowns(&self) -> Vec<(String, Option<String>, Duration, cooldown::Reason)> {
        let now = crate::clock::now();
        self.upstreams
            .iter()
            .flat_map(|u| {
                u.cooldowns
                    .active(now)
                    .into_iter()
                    .map(|(model, left, reason)| (u.name.clone(), model, left, reason))
            })
            .collect()
    }

    /// The health table for a reloaded configuration: the upstreams `same` names (still
    /// configured, and the same server) keep their state — breakers, ejections, estimates,
    /// checks — shared with this table so calls still in flight on the old engine report into
    /// it; the others start afresh. Hedge windows and the event log carry over. New breaker
    /// settings apply to the kept breakers at once.
    pub fn carried_over(
        &self,
        config: &BreakerConfig,
        names: Vec<String>,
        same: impl Fn(&str) -> bool,
    ) -> Health {
        let settings = settings(config);
        let upstreams = names
            .into_iter()
            .map(|name| {
                let kept = same(&name)
                    .then(|| self.upstreams.iter().find(|u| u.name == name))
                    .flatten();
                match kept {
                    Some(kept) => {
                        for target in lock(&kept.targets).values_mut() {
                            target.breaker.reconfigure(settings);
                        }
                        kept.clone()
                    }
                    None => UpstreamHealth::new(name),
                }
            })
            .collect();
        Health {
            settings,
            max_ejected_share: config.max_ejected_share,
            upstreams,
            latencies: self.latencies.clone(),
            events: self.events.clone(),
            sink: self.sink.clone(),
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
            let mut models = lock(&self.upstreams[upstream].targets);
            // A known target (nearly every call) is found with one hash of its name.
            if let Some(entry) = models.get_mut(model) {
                let was_closed = entry.breaker.is_closed();
                let result = f(entry);
                let pending = entry.breaker.take_pending();
                self.upstreams[upstream].closed_or_not(was_closed, entry.breaker.is_closed());
                drop(models);
                return self.told(now, upstream, model, result, pending);
            }
            // Clients can send any model name to an upstream serving `*`: past a bound, new
            // names share one entry instead of growing the table without end.
            let model = if models.len() < MAX_MODELS_PER_UPSTREAM {
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
            let was_closed = entry.breaker.is_closed();
            let result = f(entry);
            let pending = entry.breaker.take_pending();
            self.upstreams[upstream].closed_or_not(was_closed, entry.breaker.is_closed());
            (result, pending)
        };
        self.told(now, upstream, model, result, pending)
    }

    /// `result`, after telling an ejection that ended while the state was read (outside the
    /// lock).
    fn told<R>(
        &self,
        now: Instant,
        upstream: usize,
        model: &str,
        result: R,
        pending: Option<breaker::Transition>,
    ) -> R {
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
        let mut events = lock(&self.events);
        if events.len() == EVENTS {
            events.pop_front();
        }
        events.push_back((now, event));
    }

    fn transition(&self, now: Instant, upstream: usize, model: &str, t: Transition) {
        let (upstream, model) = (self.upstreams[upstream].name.clone(), model.to_owned());
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

    /// Whether a target may take a call now: its breaker admits one, active checks have not
    /// found its upstream down, and it is not cooling down.
    fn available(&self, c: &Candidate<'_>, now: Instant) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let upstream = self.upstreams.get(c.upstream);
        let up = upstream.is_none_or(|u| u.up.load(Relaxed) && !u.cooldowns.cooling(c.model, now));
        // Every breaker of the upstream closed (nearly always): the target's admits a call, and
        // the lock, which every serving thread takes, is not taken to read it.
        let all_closed = upstream.is_some_and(|u| u.unclosed.load(Relaxed) == 0);
        up && (all_closed || self.with(c.upstream, c.model, now, |t| t.breaker.available(now)))
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
        down_for: Duration,
    ) {
        let now = crate::clock::now();
        if let (hourglass_config::CheckMode::Completion(model), Ok(latency)) = (mode, &result) {
            self.with(index, model, now, |t| t.ewma.observe(*latency, now));
        }
        let error = result.as_ref().err().cloned().unwrap_or_default();
        let Some(entry) = self.upstreams.get(index) else {
            return;
        };
        let failed = result.is_err();
        let flipped = lock(&entry.probe).record(result, healthy_threshold, unhealthy_threshold);
        if let Some(healthy) = flipped {
            entry
                .up
                .store(healthy, std::sync::atomic::Ordering::Relaxed);
        }
        // Other replicas hear that it is down (again at each failed check, so it stays fresh
        // there), and that it is up again.
        let down = !entry.up.load(std::sync::atomic::Ordering::Relaxed);
        if down && failed {
            self.learned(index, None, down_for, cooldown::Reason::Down);
        } else if flipped == Some(true) {
            self.learned(index, None, Duration::ZERO, cooldown::Reason::Down);
        }
        let upstream = entry.name.clone();
        match flipped {
            Some(false) => self.event(now, Event::UpstreamDown { upstream, error }),
            Some(true) => self.event(now, Event::UpstreamUp { upstream }),
            None => {}
        }
    }

    /// Notes when an upstream's next active check runs (the status page shows it).
    pub fn probe_scheduled(&self, index: usize, at: Instant) {
        if let Some(entry) = self.upstreams.get(index) {
            lock(&entry.probe).next_check = Some(at);
        }
    }

    /// Each upstream's active-check state, in configuration order.
    pub fn probes(&self) -> Vec<(String, active::ProbeState)> {
        self.upstreams
            .iter()
            .map(|u| (u.name.clone(), lock(&u.probe).clone()))
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
    ) -> Lease<'_> {
        self.with(upstream, model, now, |t| {
            t.outstanding += 1;
            t.breaker.admit(now);
        });
        Lease {
            health: crate::held::Held::Call(self),
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
        let latencies = lock(&self.latencies);
        let empty = LatencyWindow::default();
        hedge::threshold(
            fixed,
            quantile,
            latencies
                .get(window_of(&latencies, model))
                .unwrap_or(&empty),
            floor,
            ceiling,
        )
    }

    /// Records a hedge event.
    pub fn hedge_event(&self, event: Event) {
        self.event(crate::clock::now(), event);
    }

    /// Every known target's state.
    pub fn snapshot(&self) -> Vec<TargetStatus> {
        let now = crate::clock::now();
        let mut out: Vec<TargetStatus> = Vec::new();
        for upstream in &self.upstreams {
            for (model, t) in lock(&upstream.targets).iter_mut() {
                let (until, trials_to_close) = t.breaker.next_change(now);
                out.push(TargetStatus {
                    upstream: upstream.name.clone(),
                    model: model.clone(),
                    breaker: t.breaker.state(now).name(),
                    ewma: t.ewma.estimate(),
                    outstanding: t.outstanding,
                    ejections: t.breaker.ejections(),
                    calls: t.calls,
                    failures: t.failures,
                    answered: t.answered,
                    half_open_in: until.map(|u| u.saturating_duration_since(now)),
                    trials_to_close,
                });
            }
        }
        out.sort_by(|a, b| (&a.upstream, &a.model).cmp(&(&b.upstream, &b.model)));
        out
    }

    /// The most recent events, oldest first.
    pub fn events(&self) -> Vec<(Instant, Event)> {
        lock(&self.events).iter().cloned().collect()
    }
}

/// The breaker settings of a `[breaker]` table.
fn settings(config: &BreakerConfig) -> BreakerSettings {
    BreakerSettings {
        consecutive_failures: config.consecutive_failures,
        failure_rate: config.failure_rate,
        min_calls: config.min_calls,
        window: config.window,
        ejection: config.ejection,
        max_ejection: config.max_ejection,
        half_open_calls: config.half_open_calls,
    }
}

#[cfg(test)]
mod tests;
