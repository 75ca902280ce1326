//! Prometheus metrics: counters and histograms fed by the engine's events, gauges read from the
//! engine at scrape time, and the text exposition format (0.0.4). Hand-written: series kept per
//! thread under locks only that thread takes, and a renderer; no registry crate. An attempt's
//! series (and its `/status` record) and a call's are kept together under their first labels,
//! so an event is one lookup. Label values are escaped; models nothing serves never become
//! labels (the engine reports them with an empty model).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hourglass_engine::Engine;
use hourglass_engine::events::{AttemptEvent, CallEvent, HedgeOutcome, Observer, StreamEvent};
use hourglass_engine::slots::{Slots, thread_number};
use hourglass_engine::{Outcome, Phase};

/// Log lines dropped because the log writer's queue was full (the process has one log writer;
/// it counts here so `/metrics` can show it).
pub static LOG_LINES_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Latency buckets, in seconds: from a fast proxy hop to a ten-minute reasoning call.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Tokens-per-second buckets.
pub const RATE_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

/// One histogram series: plain numbers, updated only under its shard's lock (an atomic would
/// add a locked instruction per field to every observation for nothing).
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Histogram {
    /// Adds `other`'s observations (of the same bounds) to these.
    fn add(&mut self, other: &Histogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum += other.sum;
    }

    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: vec![0; bounds.len()],
            count: 0,
            sum: 0.0,
        }
    }

    fn observe(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += value;
    }
}

/// Label values of one series, in the family's label order.
type Labels = Vec<String>;

/// Separates label values in a series key (a control character no label value carries).
pub(crate) const SEP: char = '\u{1f}';

/// Calls `f` with the key of a series, its label values joined, built in a buffer the thread
/// keeps: looking a series up allocates nothing (only a new series' key is copied).
pub(crate) fn with_key<R>(labels: &[&str], f: impl FnOnce(&str) -> R) -> R {
    thread_local! {
        static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    KEY.with(|buffer| {
        let mut key = buffer.borrow_mut();
        key.clear();
        for (i, label) in labels.iter().enumerate() {
            if i > 0 {
                key.push(SEP);
            }
            key.push_str(label);
        }
        f(&key)
    })
}

fn unkey(key: &str) -> Labels {
    key.split(SEP).map(str::to_owned).collect()
}

/// Shards of a family: each thread updates its own, so the serving threads (one per core) never
/// wait on one another's lock or pull one another's cache lines; a scrape adds the shards up.
/// The gateway's stopping signal is sharded the same way.
pub const SHARDS: usize = 16;

/// The shard of the calling thread, below [`SHARDS`] (threads are numbered as they first ask;
/// threads past `SHARDS` share).
pub fn shard() -> usize {
    thread_number() % SHARDS
}

/// One value per shard.
pub(crate) type Sharded<T> = Slots<T, SHARDS>;

/// Hashes series keys: a fast seeded hash, where SipHash cost more than the update. The keys are
/// label values of configured or admitted models, upstreams and fixed names, never an unbounded
/// set a client could grow.
pub(crate) type KeyHash = foldhash::fast::RandomState;

/// Series of one family in one shard, by key.
type SeriesMap<V> = HashMap<String, V, KeyHash>;

/// A family of counters.
#[derive(Debug, Default)]
struct Counters(Sharded<SeriesMap<u64>>);

impl Counters {
    fn add(&self, labels: &[&str], n: u64) {
        with_key(labels, |key| {
            let mut map = self.0.local();
            match map.get_mut(key) {
                Some(count) => *count += n,
                None => {
                    map.insert(key.to_owned(), n);
                }
            }
        });
    }

    fn snapshot(&self) -> Vec<(Labels, u64)> {
        joined_rows(&self.0, usize::MAX, |count, row| row(None, count))
    }
}

/// A family of histograms.
#[derive(Debug)]
struct Histograms {
    bounds: &'static [f64],
    series: Sharded<SeriesMap<Histogram>>,
}

impl Histograms {
    fn new(bounds: &'static [f64]) -> Histograms {
        Histograms {
            bounds,
            series: Sharded::default(),
        }
    }

    fn observe(&self, labels: &[&str], value: f64) {
        with_key(labels, |key| {
            let mut map = self.series.local();
            match map.get_mut(key) {
                Some(histogram) => histogram.observe(value),
                None => {
                    let mut histogram = Histogram::new(self.bounds);
                    histogram.observe(value);
                    map.insert(key.to_owned(), histogram);
                }
            }
        });
    }

    fn snapshot(&self) -> Vec<(Labels, Histogram)> {
        joined_rows(&self.series, usize::MAX, |histogram, row| {
            row(None, histogram)
        })
    }
}

/// What adds up across shards when a scrape joins them.
trait Join: Clone {
    fn join(&mut self, other: &Self);
}

impl Join for u64 {
    fn join(&mut self, other: &u64) {
        *self += other;
    }
}

impl Join for Histogram {
    fn join(&mut self, other: &Histogram) {
        self.add(other);
    }
}

/// The rows of a family, its series of every shard joined, sorted by their labels. `entries`
/// hands the rows a kept value holds: its own (`None`), or, for a group of series under their
/// first labels (see [`AttemptSeries`]), each one's last label and value. `labels` of each key's
/// labels are the row's (the rest, a group's finer labels, are joined over).
fn joined_rows<V, T: Join>(
    shards: &Sharded<SeriesMap<V>>,
    labels: usize,
    entries: impl Fn(&V, &mut dyn FnMut(Option<&str>, &T)),
) -> Vec<(Labels, T)> {
    let mut total: HashMap<String, T> = HashMap::new();
    for map in shards.each() {
        for (key, kept) in map.iter() {
            let key = match key.match_indices(SEP).nth(labels.saturating_sub(1)) {
                Some((end, _)) => &key[..end],
                None => key.as_str(),
            };
            entries(kept, &mut |last, value| {
                let key = match last {
                    Some(last) => format!("{key}{SEP}{last}"),
                    None => key.to_owned(),
                };
                match total.get_mut(&key) {
                    Some(sum) => sum.join(value),
                    None => {
                        total.insert(key, value.clone());
                    }
                }
            });
        }
    }
    let mut rows: Vec<(Labels, T)> = total.into_iter().map(|(k, v)| (unkey(&k), v)).collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

/// The phases of `hourglass_phase_duration_seconds`, in [`AttemptSeries::phases`]' order.
const PHASES: [&str; 3] = ["connect", "first_byte", "first_token"];

/// What one shard keeps for the attempts of one model (its label) at one upstream and upstream
/// model: the attempts by outcome, the phases' histograms (their rows join the upstream models)
/// and the `/status` record, found by one lookup an attempt rather than one a family (issue 19:
/// a key built and hashed once per event, not per update).
#[derive(Debug, Default)]
struct AttemptSeries {
    /// Attempts by outcome: an upstream's attempts end in few ways, so a short list.
    outcomes: Vec<(&'static str, u64)>,
    /// Each of [`PHASES`], from its first observation.
    phases: [Option<Histogram>; 3],
    recent: crate::status::Kept,
}

impl AttemptSeries {
    fn add(&mut self, outcome: &'static str, phases: [Option<f64>; 3]) {
        match self.outcomes.iter_mut().find(|(name, _)| *name == outcome) {
            Some((_, n)) => *n += 1,
            None => self.outcomes.push((outcome, 1)),
        }
        for (histogram, value) in self.phases.iter_mut().zip(phases) {
            if let Some(value) = value {
                (histogram.get_or_insert_with(|| Histogram::new(LATENCY_BUCKETS))).observe(value);
            }
        }
    }
}

/// What one shard keeps for the calls of one model (its label): by outcome, how many and how
/// long they took (`hourglass_calls_total` and `hourglass_call_duration_seconds`, one lookup).
#[derive(Debug, Default)]
struct CallSeries {
    outcomes: Vec<(&'static str, u64, Histogram)>,
}

impl CallSeries {
    fn add(&mut self, outcome: &'static str, seconds: f64) {
        let at = match self.outcomes.iter().position(|(name, ..)| *name == outcome) {
            Some(at) => at,
            None => {
                (self.outcomes).push((outcome, 0, Histogram::new(LATENCY_BUCKETS)));
                self.outcomes.len() - 1
            }
        };
        let (_, count, histogram) = &mut self.outcomes[at];
        *count += 1;
        histogram.observe(seconds);
    }
}

/// Distinct model labels at most; later models are counted under `other`.
pub const MAX_MODELS: usize = 100;

/// Every metric the gateway exposes.
#[derive(Debug)]
pub struct Metrics {
    /// Model names allowed as label values: configured ones, and ones that answered once (up to
    /// [`MAX_MODELS`]); anything else a client sends is `other`, so clients cannot mint series.
    models: Mutex<std::collections::HashSet<String>>,
    /// Per shard, the models `models` admitted that its threads have seen: a call finds its model
    /// here, without the lock every thread shares.
    admitted: Sharded<std::collections::HashSet<String, KeyHash>>,
    /// Recent attempts and failures, for `/status`.
    pub(crate) recent: crate::status::Recent,
    /// Calls by model label.
    calls: Sharded<SeriesMap<CallSeries>>,
    /// Attempts by model label, upstream and upstream model.
    attempts: Sharded<SeriesMap<AttemptSeries>>,
    retries: Counters,
    failovers: Counters,
    hedges: Counters,
    streams: Counters,
    heartbeats: AtomicU64,
    disconnects: AtomicU64,
    connections_open: AtomicU64,
    connections_refused: AtomicU64,
    /// When a refused connection was last logged (seconds since the Unix epoch).
    refusal_logged: AtomicU64,
    gap_seconds: Histograms,
    tokens_per_second: Histograms,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            models: Mutex::new(std::collections::HashSet::new()),
            admitted: Sharded::default(),
            recent: crate::status::Recent::default(),
            calls: Sharded::default(),
            attempts: Sharded::default(),
            retries: Counters::default(),
            failovers: Counters::default(),
            hedges: Counters::default(),
            streams: Counters::default(),
            heartbeats: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            refusal_logged: AtomicU64::new(0),
            gap_seconds: Histograms::new(LATENCY_BUCKETS),
            tokens_per_second: Histograms::new(RATE_BUCKETS),
        }
    }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Metrics {
    /// Metrics that label these (configured) models by name from the start.
    pub fn with_models<'a>(models: impl IntoIterator<Item = &'a str>) -> Metrics {
        let metrics = Metrics::default();
        metrics
            .models
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(models.into_iter().map(str::to_owned));
        metrics
    }

    /// The label for `model`: its name once known (a success admits it, up to [`MAX_MODELS`]),
    /// else `other`.
    fn model<'a>(&self, model: &'a str, succeeded: bool) -> &'a str {
        if model.is_empty() {
            return "other";
        }
        if self.admitted.local().contains(model) {
            return model;
        }
        let mut models = self
            .models
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let admitted = models.contains(model)
            || (succeeded && models.len() < MAX_MODELS && models.insert(model.to_owned()));
        drop(models);
        if !admitted {
            return "other";
        }
        self.admitted.local().insert(model.to_owned());
        model
    }

    /// Updates by `f` the calling thread's group of `labels` (the model's name first) in
    /// `groups`, and returns the model's label. A group is kept under a model's own name only
    /// once the model was admitted, so finding one is the admission check as well: one lookup
    /// for a known model. Else the label is decided ([`Metrics::model`]) and its group found or
    /// made.
    fn update<'a, V: Default, const N: usize>(
        &self,
        groups: &Sharded<SeriesMap<V>>,
        mut labels: [&'a str; N],
        succeeded: bool,
        f: impl FnOnce(&mut V),
    ) -> &'a str {
        {
            let mut map = groups.local();
            let map = &mut *map;
            if let Some(group) = with_key(&labels, move |key| map.get_mut(key)) {
                f(group);
                return labels[0];
            }
        }
        labels[0] = self.model(labels[0], succeeded);
        let mut map = groups.local();
        with_key(&labels, |key| match map.get_mut(key) {
            Some(group) => f(group),
            None => f(map.entry(key.to_owned()).or_default()),
        });
        labels[0]
    }
}

impl Observer for Metrics {
    fn attempt(&self, e: &AttemptEvent<'_>) {
        let mut phases = [None; 3];
        if let Some(t) = e.timeline {
            if let (Some(connected), false) = (t.connected, t.reused) {
                phases[0] = Some(seconds(connected - t.start));
            }
            if let Some(written) = t.written {
                phases[1] = t.headers.map(|headers| seconds(headers - written));
                phases[2] = t.first_token.map(|first| seconds(first - written));
            }
        }
        let outcome = e.outcome.name();
        let labels = [e.model, e.upstream, e.upstream_model];
        let model = self.update(&self.attempts, labels, e.outcome.is_ok(), |series| {
            series.add(outcome, phases);
            series.recent.record(e);
        });
        if let Some(code) = e.outcome.code() {
            self.recent.failure(model, e.upstream, code, e.phase);
        }
    }

    fn call(&self, e: &CallEvent<'_>) {
        let (outcome, elapsed) = (e.outcome.name(), seconds(e.elapsed));
        let model = self.update(&self.calls, [e.model], e.outcome.is_ok(), |series| {
            series.add(outcome, elapsed);
        });
        if e.retries > 0 {
            self.retries.add(&[model], e.retries as u64);
        }
        if e.failovers > 0 {
            self.failovers.add(&[model], e.failovers as u64);
        }
    }

    fn stream(&self, e: &StreamEvent<'_>) {
        let model = self.model(e.model, true);
        let e = &StreamEvent { model, ..*e };
        self.streams
            .add(&[e.model, e.upstream, e.outcome.name()], 1);
        if let Some(gap) = e.max_gap {
            self.gap_seconds
                .observe(&[e.model, e.upstream], seconds(gap));
        }
        if let Some(rate) = e.tokens_per_s {
            self.tokens_per_second.observe(&[e.model, e.upstream], rate);
        }
        if e.outcome == Outcome::ClientGone {
            self.disconnects.fetch_add(1, Ordering::Relaxed);
        }
        // A stream that failed after its first token is a failure of the call: the feed lists it.
        if let Some(code) = e.outcome.code() {
            self.recent.failure(e.model, e.upstream, code, Phase::Body);
        }
    }

    fn hedge(&self, model: &str, outcome: HedgeOutcome) {
        let model = self.model(model, false);
        self.hedges.add(&[model, outcome.name()], 1);
    }
}

impl Metrics {
    /// Counts a heartbeat sent to a client.
    pub fn heartbeat(&self) {
        self.heartbeats.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a client connection in, unless `max` are open already (then `false`).
    pub fn connection_opened(&self, max: usize) -> bool {
        self.connections_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max as u64).then_some(open + 1)
            })
            .is_ok()
    }

    /// Counts a client connection out.
    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::AcqRel);
    }

    /// Counts a connection refused past `server.max_connections`; `true` when it is worth a log
    /// line (at most one a second).
    pub fn connection_refused(&self) -> bool {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
        let now = jiff::Timestamp::now().as_second().max(0) as u64;
        let last = self.refusal_logged.swap(now, Ordering::Relaxed);
        last != now
    }

    /// Counts a client that left before its answer was complete.
    pub fn client_disconnect(&self) {
        self.disconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// The `/status` document (see [`crate::status`]).
    pub fn status(&self, engine: &Engine) -> serde_json::Value {
        let mut status = self.recent.status(engine, self.recent_attempts());
        // Totals since start, per model: what the retry loop did.
        let mut models: std::collections::BTreeMap<String, serde_json::Value> = Default::default();
        let mut add = |rows: Vec<(Labels, u64)>, field: &str| {
            for (labels, n) in rows {
                let entry = models
                    .entry(labels[0].clone())
                    .or_insert_with(|| serde_json::json!({"retries": 0, "failovers": 0, "hedges_started": 0, "hedges_won": 0}));
                let key = match (field, labels.get(1).map(String::as_str)) {
                    ("hedges", Some("started")) => "hedges_started",
                    ("hedges", Some("won")) => "hedges_won",
                    ("hedges", _) => continue,
                    (field, _) => field,
                };
                entry[key] = serde_json::json!(entry[key].as_u64().unwrap_or(0) + n);
            }
        };
        add(self.retries.snapshot(), "retries");
        add(self.failovers.snapshot(), "failovers");
        add(self.hedges.snapshot(), "hedges");
        status["models"] = models
            .into_iter()
            .map(|(model, mut v)| {
                v["model"] = model.into();
                v
            })
            .collect::<Vec<_>>()
            .into();
        status["client_disconnects"] = self.disconnects.load(Ordering::Relaxed).into();
        status
    }

    /// `hourglass_calls_total`'s rows: by model and outcome.
    fn call_rows(&self) -> Vec<(Labels, u64)> {
        joined_rows(&self.calls, 1, |series, row| {
            for (outcome, count, _) in &series.outcomes {
                row(Some(outcome), count);
            }
        })
    }

    /// `hourglass_call_duration_seconds`'s rows: by model and outcome.
    fn duration_rows(&self) -> Vec<(Labels, Histogram)> {
        joined_rows(&self.calls, 1, |series, row| {
            for (outcome, _, histogram) in &series.outcomes {
                row(Some(outcome), histogram);
            }
        })
    }

    /// `hourglass_attempts_total`'s rows: by model, upstream and outcome (upstream models joined).
    fn attempt_rows(&self) -> Vec<(Labels, u64)> {
        joined_rows(&self.attempts, 2, |series, row| {
            for (outcome, count) in &series.outcomes {
                row(Some(outcome), count);
            }
        })
    }

    /// `hourglass_phase_duration_seconds`'s rows: by model, upstream and phase (upstream models
    /// joined).
    fn phase_rows(&self) -> Vec<(Labels, Histogram)> {
        joined_rows(&self.attempts, 2, |series, row| {
            for (phase, histogram) in PHASES.iter().zip(&series.phases) {
                if let Some(histogram) = histogram {
                    row(Some(phase), histogram);
                }
            }
        })
    }

    /// Each target's recent attempts, every thread's record joined (by model label, upstream
    /// and upstream model, joined as a series key is).
    pub(crate) fn recent_attempts(&self) -> HashMap<String, crate::status::Joined> {
        let mut joined: HashMap<String, crate::status::Joined> = HashMap::new();
        for shard in self.attempts.each() {
            for (key, series) in shard.iter() {
                joined.entry(key.clone()).or_default().add(&series.recent);
            }
        }
        joined
    }

    /// The exposition text: every metric, plus the engine's state read now.
    pub fn render(&self, engine: &Engine) -> String {
        let mut out = String::with_capacity(16 * 1024);
        counter(
            &mut out,
            "hourglass_calls_total",
            "Calls by the model asked for and how they ended: ok, the error code (after the first token too) or client_cancel.",
            &["model", "outcome"],
            &self.call_rows(),
        );
        histogram(
            &mut out,
            "hourglass_call_duration_seconds",
            "Time to the answer (a stream's first token) or the error before it, counted when the call ends.",
            &["model", "outcome"],
            &self.duration_rows(),
        );
        counter(
            &mut out,
            "hourglass_attempts_total",
            "Attempts by model, upstream and outcome.",
            &["model", "upstream", "outcome"],
            &self.attempt_rows(),
        );
        histogram(
            &mut out,
            "hourglass_phase_duration_seconds",
            "Successful attempts' phases: connect (new connections), first_byte and first_token (from the request written).",
            &["model", "upstream", "phase"],
            &self.phase_rows(),
        );
        counter(
            &mut out,
            "hourglass_retries_total",
            "Attempts that went back to an upstream already tried.",
            &["model"],
            &self.retries.snapshot(),
        );
        counter(
            &mut out,
            "hourglass_failovers_total",
            "Attempts that moved to another upstream.",
            &["model"],
            &self.failovers.snapshot(),
        );
        counter(
            &mut out,
            "hourglass_hedges_total",
            "Hedged requests: started, won (the hedge answered first) and lost.",
            &["model", "result"],
            &self.hedges.snapshot(),
        );
        counter(
            &mut out,
            "hourglass_streams_total",
            "Committed streams by how they ended (ok, client_gone or the error code).",
            &["model", "upstream", "outcome"],
            &self.streams.snapshot(),
        );
        histogram(
            &mut out,
            "hourglass_stream_max_gap_seconds",
            "The longest silence between content events of each stream.",
            &["model", "upstream"],
            &self.gap_seconds.snapshot(),
        );
        histogram(
            &mut out,
            "hourglass_stream_tokens_per_second",
            "Content events per second of each stream after its first token.",
            &["model", "upstream"],
            &self.tokens_per_second.snapshot(),
        );
        scalar(
            &mut out,
            "hourglass_heartbeats_sent_total",
            "Keep-alive heartbeats sent to clients.",
            "counter",
            self.heartbeats.load(Ordering::Relaxed) as f64,
        );
        scalar(
            &mut out,
            "hourglass_log_lines_dropped_total",
            "Log lines dropped because the log writer's queue was full (stderr read too slowly).",
            "counter",
            LOG_LINES_DROPPED.load(Ordering::Relaxed) as f64,
        );
        scalar(
            &mut out,
            "hourglass_client_disconnects_total",
            "Clients that left before their answer was complete.",
            "counter",
            self.disconnects.load(Ordering::Relaxed) as f64,
        );
        scalar(
            &mut out,
            "hourglass_connections_open",
            "Client connections open now.",
            "gauge",
            self.connections_open.load(Ordering::Relaxed) as f64,
        );
        scalar(
            &mut out,
            "hourglass_connections_refused_total",
            "Client connections refused past server.max_connections (answered 503 at once).",
            "counter",
            self.connections_refused.load(Ordering::Relaxed) as f64,
        );
        scalar(
            &mut out,
            "hourglass_retry_budget_available",
            "Retries the retry budget would allow now.",
            "gauge",
            engine.retry_budget_available(),
        );

        // Targets label by the model sent upstream; one that never answered is left out, so a
        // client sending made-up names through a wildcard upstream mints no series.
        let snapshot: Vec<_> = engine
            .health()
            .snapshot()
            .into_iter()
            .filter(|t| t.answered > 0)
            .collect();
        let state = |s: &str| match s {
            "closed" => 0.0,
            "half_open" => 1.0,
            _ => 2.0,
        };
        let rows =
            |f: &dyn Fn(&hourglass_engine::health::TargetStatus) -> f64| -> Vec<(Labels, f64)> {
                snapshot
                    .iter()
                    .map(|t| (vec![t.upstream.clone(), t.model.clone()], f(t)))
                    .collect()
            };
        series(
            &mut out,
            "hourglass_breaker_state",
            "gauge",
            "Circuit breaker per upstream and model: 0 closed, 1 half-open, 2 open.",
            &["upstream", "model"],
            &rows(&|t| state(t.breaker)),
        );
        series(
            &mut out,
            "hourglass_ejections_total",
            "counter",
            "Times the breaker ejected the upstream for the model.",
            &["upstream", "model"],
            &rows(&|t| f64::from(t.ejections)),
        );
        series(
            &mut out,
            "hourglass_calls_in_flight",
            "gauge",
            "Calls in flight per upstream and model (a stream until its end).",
            &["upstream", "model"],
            &rows(&|t| t.outstanding as f64),
        );
        series(
            &mut out,
            "hourglass_latency_estimate_seconds",
            "gauge",
            "Peak-EWMA first-token latency used by latency-aware balancing.",
            &["upstream", "model"],
            &rows(&|t| t.ewma.as_secs_f64()),
        );
        let up: Vec<(Labels, f64)> = engine
            .health()
            .probes()
            .into_iter()
            .map(|(name, p)| (vec![name], if p.healthy { 1.0 } else { 0.0 }))
            .collect();
        series(
            &mut out,
            "hourglass_upstream_up",
            "gauge",
            "Active health checks: 1 up, 0 down.",
            &["upstream"],
            &up,
        );
        out
    }
}

/// The background jobs' metrics: queue, runners, outcomes, the oldest waiting job, the store's
/// size and webhook deliveries.
pub fn render_jobs(out: &mut String, jobs: &hourglass_jobs::Stats) {
    scalar(
        out,
        "hourglass_jobs_store_up",
        "Whether the job store answered its last use (1) or not (0: background jobs answer 503).",
        "gauge",
        if jobs.reachable { 1.0 } else { 0.0 },
    );
    scalar(
        out,
        "hourglass_jobs_queued",
        "Background jobs waiting for a runner.",
        "gauge",
        jobs.queued as f64,
    );
    scalar(
        out,
        "hourglass_jobs_running",
        "Background jobs running.",
        "gauge",
        jobs.running as f64,
    );
    scalar(
        out,
        "hourglass_jobs_oldest_queued_seconds",
        "Age of the oldest background job waiting for a runner (0 when none waits).",
        "gauge",
        jobs.oldest_queued_s,
    );
    scalar(
        out,
        "hourglass_jobs_submitted_total",
        "Background jobs taken.",
        "counter",
        jobs.submitted as f64,
    );
    let ended: Vec<(Labels, f64)> = jobs
        .ended
        .iter()
        .map(|(state, n)| (vec![(*state).to_owned()], *n as f64))
        .collect();
    series(
        out,
        "hourglass_jobs_ended_total",
        "counter",
        "Background jobs ended, by state: completed, failed, cancelled, incomplete.",
        &["state"],
        &ended,
    );
    scalar(
        out,
        "hourglass_jobs_rerun_total",
        "Background jobs started again from the start after a restart (their answer had not begun).",
        "counter",
        jobs.rerun as f64,
    );
    scalar(
        out,
        "hourglass_jobs_restarted_total",
        "Background jobs ended gateway_restarted (their answer had begun when the gateway stopped).",
        "counter",
        jobs.restarted as f64,
    );
    scalar(
        out,
        "hourglass_jobs_store_bytes",
        "Bytes the job store takes on disk.",
        "gauge",
        jobs.store_file_bytes as f64,
    );
    scalar(
        out,
        "hourglass_jobs_store_used_bytes",
        "Bytes of the job store holding data (the rest is free space it reuses).",
        "gauge",
        jobs.store_used_bytes as f64,
    );
    let webhooks = [
        ("delivered", jobs.webhooks_delivered),
        ("failed_try", jobs.webhook_failures),
        ("given_up", jobs.webhooks_given_up),
    ];
    let rows: Vec<(Labels, f64)> = webhooks
        .iter()
        .map(|(result, n)| (vec![(*result).to_owned()], *n as f64))
        .collect();
    series(
        out,
        "hourglass_webhook_deliveries_total",
        "counter",
        "Webhook tries: delivered, failed_try (tried again later) and given_up (past jobs.webhook_retry_for).",
        &["result"],
        &rows,
    );
    scalar(
        out,
        "hourglass_webhooks_pending",
        "Webhook deliveries waiting for their next try.",
        "gauge",
        jobs.webhooks_pending as f64,
    );
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn label_text(names: &[&str], values: &[String], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect();
    if let Some((n, v)) = extra {
        parts.push(format!("{n}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

/// What a gateway shares with other replicas, and its client limits, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterStats {
    /// Whether Redis answered its last use; `None`: no Redis is configured.
    pub redis_up: Option<bool>,
    /// Cool-downs published, heard and dropped (with Redis).
    pub cooldowns_published: u64,
    /// Cool-downs heard from other replicas.
    pub cooldowns_heard: u64,
    /// Cool-downs not published (queue full, Redis away).
    pub cooldowns_dropped: u64,
    /// Cool-downs in force here now.
    pub cooldowns_active: usize,
    /// Calls refused by each client limit.
    pub limited: Vec<(&'static str, u64)>,
    /// Syncs of client-limit counts with Redis that failed.
    pub limit_sync_failures: u64,
}

/// The cluster's and the client limits' series.
pub fn render_cluster(out: &mut String, stats: &ClusterStats) {
    scalar(
        out,
        "hourglass_cooldowns_active",
        "Cool-downs in force (429/503 Retry-After, rejected keys, upstreams down), learned here or from other replicas.",
        "gauge",
        stats.cooldowns_active as f64,
    );
    let limited: Vec<(Labels, u64)> = stats
        .limited
        .iter()
        .map(|(limit, n)| (vec![(*limit).to_owned()], *n))
        .collect();
    counter(
        out,
        "hourglass_client_limited_total",
        "Calls refused with client_rate_limited, by limit: requests_per_minute, tokens_per_minute, concurrent.",
        &["limit"],
        &limited,
    );
    let Some(up) = stats.redis_up else {
        return;
    };
    scalar(
        out,
        "hourglass_redis_up",
        "Whether Redis answered its last use (1) or not (0: cool-downs and limits are this replica's own meanwhile).",
        "gauge",
        if up { 1.0 } else { 0.0 },
    );
    counter(
        out,
        "hourglass_cooldowns_shared_total",
        "Cool-downs shared through Redis: published (learned here), heard (from other replicas), dropped (not published).",
        &["direction"],
        &[
            (vec!["published".to_owned()], stats.cooldowns_published),
            (vec!["heard".to_owned()], stats.cooldowns_heard),
            (vec!["dropped".to_owned()], stats.cooldowns_dropped),
        ],
    );
    scalar(
        out,
        "hourglass_client_limit_sync_failures_total",
        "Syncs of client-limit counts with Redis that failed (the counts are sent with the next one).",
        "counter",
        stats.limit_sync_failures as f64,
    );
}

fn scalar(out: &mut String, name: &str, help: &str, kind: &str, value: f64) {
    header(out, name, help, kind);
    let _ = writeln!(out, "{name} {}", number(value));
}

fn counter(out: &mut String, name: &str, help: &str, labels: &[&str], rows: &[(Labels, u64)]) {
    let rows: Vec<(Labels, f64)> = rows.iter().map(|(l, v)| (l.clone(), *v as f64)).collect();
    series(out, name, "counter", help, labels, &rows);
}

fn series(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    labels: &[&str],
    rows: &[(Labels, f64)],
) {
    header(out, name, help, kind);
    for (values, v) in rows {
        let _ = writeln!(
            out,
            "{name}{} {}",
            label_text(labels, values, None),
            number(*v)
        );
    }
}

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    labels: &[&str],
    rows: &[(Labels, Histogram)],
) {
    header(out, name, help, "histogram");
    for (values, h) in rows {
        let mut cumulative = 0;
        for (bound, bucket) in h.bounds.iter().zip(&h.buckets) {
            cumulative += bucket;
            let le = number(*bound);
            let _ = writeln!(
                out,
                "{name}_bucket{} {cumulative}",
                label_text(labels, values, Some(("le", &le)))
            );
        }
        let count = h.count;
        let _ = writeln!(
            out,
            "{name}_bucket{} {count}",
            label_text(labels, values, Some(("le", "+Inf")))
        );
        let _ = writeln!(
            out,
            "{name}_sum{} {}",
            label_text(labels, values, None),
            number(h.sum)
        );
        let _ = writeln!(
            out,
            "{name}_count{} {count}",
            label_text(labels, values, None)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labels_escaped() {
        let family = Histograms::new(&[0.1, 1.0]);
        family.observe(&["m\"x", "a"], 0.05);
        family.observe(&["m\"x", "a"], 0.5);
        family.observe(&["m\"x", "a"], 5.0);
        let mut out = String::new();
        histogram(
            &mut out,
            "t_seconds",
            "help",
            &["model", "upstream"],
            &family.snapshot(),
        );
        assert!(
            out.contains("t_seconds_bucket{model=\"m\\\"x\",upstream=\"a\",le=\"0.1\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("le=\"+Inf\"} 3\n"), "{out}");
        assert!(
            out.contains("t_seconds_sum{model=\"m\\\"x\",upstream=\"a\"} 5.55\n"),
            "{out}"
        );
        assert!(
            out.contains("t_seconds_count{model=\"m\\\"x\",upstream=\"a\"} 3\n"),
            "{out}"
        );
    }

    #[test]
    fn clients_cannot_mint_model_labels() {
        let m = Metrics::with_models(["configured"]);
        assert_eq!(m.model("configured", false), "configured");
        assert_eq!(
            m.model("typo-model", false),
            "other",
            "a failure admits nothing"
        );
        assert_eq!(m.model("", true), "other");
        assert_eq!(
            m.model("real-model", true),
            "real-model",
            "a success admits it"
        );
        assert_eq!(m.model("real-model", false), "real-model");
        for i in 0..2 * MAX_MODELS {
            m.model(&format!("m{i}"), true);
        }
        assert_eq!(m.models.lock().unwrap().len(), MAX_MODELS);
        assert_eq!(m.model("one-too-many", true), "other");
    }

    #[test]
    fn counters_add_up_per_label_set() {
        let c = Counters::default();
        c.add(&["a", "ok"], 1);
        c.add(&["a", "ok"], 2);
        c.add(&["b", "idle_timeout"], 1);
        assert_eq!(
            c.snapshot(),
            [
                (vec!["a".to_owned(), "ok".to_owned()], 3),
                (vec!["b".to_owned(), "idle_timeout".to_owned()], 1)
            ]
        );
    }

    /// An attempt's counts and phases, and a call's count and duration, each found by one
    /// lookup of their group: the rows are what a family per metric gave, with a model's label
    /// decided as before (a failure admits nothing, a success admits it) and every thread's
    /// groups joined.
    #[test]
    fn grouped_families_give_the_rows_a_family_each_gave() {
        use hourglass_engine::upstream::Timeline;
        use hourglass_engine::{ErrorCode, Outcome, Phase};
        let metrics = Metrics::with_models(["configured"]);
        let start = tokio::time::Instant::now();
        let ms = |n: u64| Some(start + Duration::from_millis(n));
        let mut fresh = Timeline::new(start);
        (fresh.connected, fresh.written, fresh.headers) = (ms(2), ms(3), ms(20));
        fresh.first_token = ms(30);
        let pooled = Timeline {
            reused: true,
            first_token: None,
            ..fresh
        };
        fn attempt<'a>(
            model: &'a str,
            outcome: Outcome,
            timeline: Option<&'a Timeline>,
        ) -> AttemptEvent<'a> {
            AttemptEvent {
                model,
                upstream: "up",
                upstream_model: "m",
                outcome,
                phase: Phase::Body,
                timeline,
                elapsed: Duration::from_millis(30),
            }
        }
        let call = |model, outcome| CallEvent {
            model,
            outcome,
            attempts: 1,
            retries: 0,
            failovers: 0,
            elapsed: Duration::from_millis(700),
        };
        let timeout = Outcome::Failed(ErrorCode::FirstTokenTimeout);
        std::thread::scope(|scope| {
            // More threads than shards: some share one.
            for _ in 0..(SHARDS + 4) {
                let metrics = &metrics;
                scope.spawn(move || {
                    metrics.attempt(&attempt("configured", Outcome::Ok, Some(&fresh)));
                    metrics.attempt(&attempt("configured", timeout, None));
                    metrics.call(&call("configured", Outcome::Ok));
                });
            }
        });
        // Another upstream model of the same upstream: its own `/status` target, the same rows.
        metrics.attempt(&AttemptEvent {
            upstream_model: "m2",
            ..attempt("configured", Outcome::Ok, None)
        });
        // Not admitted yet: counted as `other`; once it answers, under its own name.
        metrics.attempt(&attempt("new-model", timeout, None));
        metrics.call(&call("new-model", timeout));
        metrics.attempt(&attempt("new-model", Outcome::Ok, Some(&pooled)));
        metrics.call(&call("new-model", Outcome::Ok));
        metrics.attempt(&attempt("new-model", timeout, None));
        let labels = |labels: &[&str]| labels.iter().map(|l| l.to_string()).collect::<Labels>();
        let n = SHARDS as u64 + 4;
        let attempts = metrics.attempt_rows();
        let code = ErrorCode::FirstTokenTimeout.name();
        assert_eq!(
            attempts,
            [
                (labels(&["configured", "up", code]), n),
                (labels(&["configured", "up", "ok"]), n + 1),
                (labels(&["new-model", "up", code]), 1),
                (labels(&["new-model", "up", "ok"]), 1),
                (labels(&["other", "up", code]), 1),
            ]
        );
        let phases = metrics.phase_rows();
        let phases: Vec<(Labels, u64, f64)> = (phases.into_iter())
            .map(|(labels, h)| (labels, h.count, (h.sum * 1e3).round()))
            .collect();
        // A pooled connection has no connect phase, and no first token here.
        let (f, nf) = (n, n as f64);
        assert_eq!(
            phases,
            [
                (labels(&["configured", "up", "connect"]), f, 2.0 * nf),
                (labels(&["configured", "up", "first_byte"]), f, 17.0 * nf),
                (labels(&["configured", "up", "first_token"]), f, 27.0 * nf),
                (labels(&["new-model", "up", "first_byte"]), 1, 17.0),
            ]
        );
        let calls = metrics.call_rows();
        assert_eq!(
            calls,
            [
                (labels(&["configured", "ok"]), n),
                (labels(&["new-model", "ok"]), 1),
                (labels(&["other", code]), 1),
            ]
        );
        let durations = metrics.duration_rows();
        let (_, configured) = &durations[0];
        assert_eq!((configured.count, configured.buckets[6]), (n, 0));
        assert_eq!(configured.buckets[7], n, "0.7 s falls in the 1 s bucket");
        // `/status` keeps the upstream models apart.
        let recent = metrics.recent_attempts();
        let key = |labels: &[&str]| labels.join(&SEP.to_string());
        assert!(recent.contains_key(&key(&["configured", "up", "m2"])));
        assert!(recent.contains_key(&key(&["configured", "up", "m"])));
        assert_eq!(recent.len(), 4, "{:?}", recent.keys());
    }

    #[test]
    fn series_updated_from_many_threads_add_up_in_one_row() {
        let counters = Counters::default();
        let histograms = Histograms::new(&[0.1, 1.0]);
        let metrics = Metrics::default();
        std::thread::scope(|scope| {
            // More threads than shards: some share one.
            for i in 0..(SHARDS + 4) {
                let (counters, histograms, metrics) = (&counters, &histograms, &metrics);
                scope.spawn(move || {
                    counters.add(&["a", "ok"], 1);
                    histograms.observe(&["a"], if i % 2 == 0 { 0.05 } else { 0.5 });
                    assert_eq!(metrics.model("m", true), "m");
                });
            }
        });
        assert_eq!(
            counters.snapshot(),
            [(vec!["a".to_owned(), "ok".to_owned()], SHARDS as u64 + 4)]
        );
        let rows = histograms.snapshot();
        assert_eq!(rows.len(), 1);
        let (labels, h) = &rows[0];
        assert_eq!(labels, &["a".to_owned()]);
        assert_eq!(h.buckets, [10, 10]);
        assert_eq!(h.count, 20);
        let sum = h.sum;
        assert!((sum - 5.5).abs() < 1e-9, "{sum}");
        assert_eq!(metrics.models.lock().unwrap().len(), 1);
    }
}
