//! The call path, usable as a library by Rust programs that call AI APIs directly: deadlines, the
//! one attempt loop (retry, failover and hedging), one attempt timed by phase, the stream
//! watchdog after the commit point, and the error taxonomy. `docs/timeouts.md` defines the phases
//! this crate enforces.
//!
//! ```no_run
//! # async fn run() {
//! use hourglass_engine::{Engine, CallRequest, Endpoint};
//! let config = hourglass_config::Config::single_upstream("local", "http://127.0.0.1:8700/v1");
//! let engine = Engine::new(config, Default::default()).expect("valid upstreams");
//! let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
//! let request = CallRequest::new(Endpoint::Chat, "/chat/completions", bytes::Bytes::from_static(body))
//!     .expect("the body names a model");
//! match engine.call(request).await {
//!     Ok(response) => println!("{} via {:?}", response.status, response.headers.get("x-hourglass-upstream")),
//!     Err(error) => eprintln!("{}: {}", error.code, error.message),
//! }
//! # }
//! ```

// Modules top-down, in the order a call meets them: each uses only modules listed after it
// (a test reads this list and every `crate::` path to keep it so).
mod attempts; // the one loop that owns "try again": ranking, budget, backoff, Retry-After, hedging
mod attempt; // one attempt in phases: connect, write, first byte, first token, then its ending
pub mod commit; // the committed response, and a stream's rest with its watchdog
mod observation; // leases and events per attempt; a call's log line and event when it really ends
mod route; // a model's route and targets, then its fallbacks'
mod call; // what a call works with: the engine's shared parts, targets, deadlines
pub mod health; // breakers, latency estimates, target ranking, hedge thresholds, active checks
mod held; // shared state borrowed by a call, counted only by a stream that outlives it
pub mod events; // what observers hear: attempts, calls, streams, hedges
pub mod retry; // backoff, Retry-After, the retry budget
mod describe; // the words of a failure: which limit, its value, where it is set
pub mod deadlines; // every clock as an instant: min(phase, attempt, total)
pub mod upstream; // the only user of the HTTP client: pool, dial, request, timeline
pub mod request; // what a call asks for: endpoint, body, model, stream, client deadline
pub mod protocol; // wire formats: what a request asks, what is content, error shapes, keys
pub mod sse; // event boundaries in a byte stream (the one SSE parser)
pub mod error; // failures, retryability, the error of a call
pub mod vocabulary; // the documented words: error codes, phases, limits, outcomes
pub mod header_names; // the gateway's own header names, parsed once
pub mod clock; // the call path's clock: one reading per turn of a client connection
pub mod slots; // per-thread slots on cache lines of their own, and the engine's lock

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use hourglass_config::{CheckMode, Config};

pub use commit::{Response, ResponseBody};
pub use error::{AttemptRecord, CallError};
pub use observation::{
    CALL_LINE_TARGET, CallLineFields, CallLineWriter, LinesAfterPoll, write_call_lines_with,
};
pub use protocol::Endpoint;
pub use request::CallRequest;
pub use upstream::dial::{BoxFuture, BoxIo, Dial, DialFn};
pub use vocabulary::{ErrorCode, Outcome, Phase};

/// The engine: configuration, upstream connections, health and the retry budget, shared by
/// every call.
pub struct Engine {
    shared: Arc<call::Shared>,
}

impl Engine {
    /// An engine for `config`; `dials` replaces the network dialer of the upstreams it names
    /// (the embedded simulator, tests).
    pub fn new(
        config: Config,
        dials: HashMap<String, Arc<dyn Dial>>,
    ) -> Result<Arc<Engine>, String> {
        let now = crate::clock::now();
        let names = config.upstreams.iter().map(|u| u.name.clone()).collect();
        let health = health::Health::new(&config.breaker, names);
        let budget = retry::RetryBudget::new(
            config.retry_budget.ratio,
            config.retry_budget.min_per_s,
            now,
        );
        Engine::assemble(config, dials, health, Arc::new(retry::Budget::new(budget)))
    }

    /// An engine for a reloaded `config` that carries this one's state: the health of every
    /// upstream still configured with the same name and base URL (breakers, ejections, latency
    /// estimates, checks — shared, so calls still in flight here report into it), the hedge
    /// windows, the health log, the retry budget (with the new settings) and the observer.
    pub fn reload(
        &self,
        config: Config,
        dials: HashMap<String, Arc<dyn Dial>>,
    ) -> Result<Arc<Engine>, String> {
        let old = &self.shared.config;
        let same = |name: &str| {
            let before = old.upstreams.iter().find(|u| u.name == name);
            let after = config.upstreams.iter().find(|u| u.name == name);
            matches!((before, after), (Some(b), Some(a)) if b.base_url == a.base_url)
        };
        let names = config.upstreams.iter().map(|u| u.name.clone()).collect();
        let health = self
            .shared
            .health
            .carried_over(&config.breaker, names, same);
        self.shared
            .budget
            .reconfigure(config.retry_budget.ratio, config.retry_budget.min_per_s);
        let engine = Engine::assemble(config, dials, health, self.shared.budget.clone())?;
        if let Some(observer) = self.shared.observer.get() {
            let _ = engine.set_observer(observer.clone());
        }
        Ok(engine)
    }

    fn assemble(
        config: Config,
        mut dials: HashMap<String, Arc<dyn Dial>>,
        health: health::Health,
        budget: Arc<retry::Budget>,
    ) -> Result<Arc<Engine>, String> {
        let mut tls = HashMap::new();
        let mut pools = Vec::with_capacity(config.upstreams.len());
        for upstream in &config.upstreams {
            let dial = match dials.remove(&upstream.name) {
                Some(dial) => dial,
                None => {
                    let tls = tls
                        .entry(upstream.http)
                        .or_insert_with(|| upstream::dial::tls_config_for(upstream.http));
                    Arc::new(
                        upstream::dial::NetworkDial::new(&upstream.base_url, tls)
                            .map_err(|e| format!("upstream `{}`: {e}", upstream.name))?,
                    )
                }
            };
            pools.push(upstream::PoolSettings {
                dial,
                http: upstream.http,
                h2_max_streams: upstream.http2_max_streams as usize,
            });
        }
        Ok(Arc::new(Engine {
            shared: Arc::new(call::Shared {
                upstream_names: (config.upstreams.iter())
                    .map(|upstream| upstream::request::header_value(&upstream.name))
                    .collect(),
                config: Arc::new(config),
                upstreams: Arc::new(upstream::Upstreams::new(pools)),
                health: Arc::new(health),
                budget,
                rng: Mutex::new(fastrand::Rng::new()),
                observer: OnceLock::new(),
            }),
        }))
    }

    /// The configuration it runs.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Every upstream-and-model's health: breaker, latency estimate, calls in flight, events.
    pub fn health(&self) -> &health::Health {
        &self.shared.health
    }

    /// Sets the observer of calls (once; a second observer is refused and returned).
    pub fn set_observer(
        &self,
        observer: Arc<dyn events::Observer>,
    ) -> Result<(), Arc<dyn events::Observer>> {
        self.shared.observer.set(observer)
    }

    /// How many retries the retry budget would allow now.
    pub fn retry_budget_available(&self) -> f64 {
        self.shared.budget.available(crate::clock::now())
    }

    /// Starts the engine's background work: the active health checks of every upstream
    /// (`[health_check]`), and the sweep of idle pooled connections (expired ones, and ones the
    /// server closed). Both stop when the engine is dropped.
    pub fn spawn_background(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let shared = &self.shared;
        let mut tasks = health::active::spawn(&shared.config, &shared.upstreams, &shared.health);
        let pools = Arc::downgrade(&shared.upstreams);
        tasks.push(tokio::spawn(upstream::Upstreams::sweep_until_dropped(
            pools,
        )));
        tasks
    }

    /// How many idle connections each upstream's pool holds now, in configuration order.
    pub fn idle_connections(&self) -> Vec<usize> {
        self.shared.upstreams.idle()
    }

    /// How many HTTP/2 connections each upstream has open now, in configuration order.
    pub fn h2_connections(&self) -> Vec<usize> {
        self.shared.upstreams.h2_connections()
    }

    /// Checks upstream number `index` once, as an active check would (`[health_check]`): the
    /// latency to its answer (or first token), or why it failed.
    pub async fn check_upstream(
        &self,
        index: usize,
        mode: &CheckMode,
        limit: std::time::Duration,
    ) -> Result<std::time::Duration, String> {
        let shared = &self.shared;
        let upstream = shared
            .config
            .upstreams
            .get(index)
            .ok_or_else(|| format!("there is no upstream number {index}"))?;
        health::active::check(&shared.upstreams, upstream, index, mode, limit).await
    }

    /// Makes one call: picks targets, tries them within the deadlines, and returns the committed
    /// response or the error to send. The call's log line and event come when it really ends:
    /// now for a whole answer or an error, at the end of a committed stream, or when the client
    /// leaves (`client_cancel`).
    ///
    /// An `async` block rather than an `async fn`: an `async fn` moves its arguments into its
    /// body, so the future keeps the request twice (392 bytes more, in every call waiting).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would hold the request twice in its future"
    )]
    pub fn call(
        &self,
        request: CallRequest,
    ) -> impl Future<Output = Result<Response, CallError>> + '_ {
        async move { self.call_borrowed(&request).await }
    }

    /// [`Engine::call`] of a request the caller keeps: its future holds a reference, where one
    /// that took the request would copy its 392 bytes in and keep them, beside the caller's.
    pub async fn call_borrowed(&self, request: &CallRequest) -> Result<Response, CallError> {
        let shared = &self.shared;
        let request_id = request
            .headers
            .get(header_names::X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let model = request.model.as_deref().unwrap_or_default();
        let endpoint = request.endpoint.name();
        let ending =
            observation::CallEnding::new(shared, model, endpoint, request_id, request.start);
        // Taken out of a temporary, which ends with this statement: a match that held the
        // result while the call waits would keep the route and targets twice.
        let (route, targets) = match route::route(&shared.config, request).and_then(|route| {
            route::targets_of(&shared.config, &route, request).map(|targets| (route, targets))
        }) {
            Ok(routed) => routed,
            Err(error) => {
                let mut result = Err(error);
                tell_end(ending, &mut result);
                return result;
            }
        };
        let mut result = attempts::run(&call::Call::new(shared, request, &route, targets)).await;
        tell_end(ending, &mut result);
        result
    }
}

/// Tells how a call ended: now for a whole answer or an error, at its end for a committed stream.
fn tell_end(ending: observation::CallEnding<'_>, result: &mut Result<Response, CallError>) {
    match result {
        Ok(response) => match &mut response.body {
            ResponseBody::Stream(stream) => stream.ends(ending.committed(&response.trail)),
            ResponseBody::Full(_) => ending.answered(&response.trail),
        },
        Err(error) => ending.ended(
            Outcome::Failed(error.code),
            &error.message,
            Some(&error.trail),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    /// A guard on the shape of a call: what its future holds across the upstream's wait is
    /// touched on every call, and a value held twice (an `async fn`'s moved argument, a matched
    /// result kept beside its bindings) or a rare path's room kept inline grows it by hundreds of
    /// bytes at once (docs/benchmarks-log.md, step 45: 3,904 bytes before that step, 2,696 after).
    #[tokio::test]
    async fn a_call_future_holds_no_value_twice_and_no_rare_paths_room() {
        let engine = Engine::new(
            Config::single_upstream("local", "http://127.0.0.1:9/v1"),
            HashMap::new(),
        )
        .unwrap();
        let body = bytes::Bytes::from_static(br#"{"model":"m","messages":[]}"#);
        let request = CallRequest::new(Endpoint::Chat, "/chat/completions", body).unwrap();
        let borrowed = std::mem::size_of_val(&engine.call_borrowed(&request));
        let owned = std::mem::size_of_val(&engine.call(request));
        assert!(
            borrowed <= 2_400,
            "the borrowing call's future is {borrowed} bytes"
        );
        assert!(
            owned <= borrowed + std::mem::size_of::<CallRequest>() + 16,
            "the owning call's future ({owned} bytes) holds more than the request beside the borrowing one's ({borrowed})"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_carries_the_retry_budget_and_the_health_of_the_same_upstreams() {
        let config = || Config::single_upstream("local", "http://127.0.0.1:9/v1");
        let engine = Engine::new(config(), HashMap::new()).unwrap();
        let health = &engine.shared.health;
        for _ in 0..5 {
            health.lease(0, "m", false, Instant::now()).finish(true);
        }
        while engine.shared.budget.try_withdraw(Instant::now()) {}
        assert_eq!(engine.retry_budget_available(), 0.0);
        assert_eq!(engine.health().snapshot()[0].breaker, "open");

        let same = engine.reload(config(), HashMap::new()).unwrap();
        assert_eq!(same.retry_budget_available(), 0.0, "the budget was carried");
        assert_eq!(
            same.health().snapshot()[0].breaker,
            "open",
            "so was the ejection"
        );

        // The same name at another address is another server: it starts afresh.
        let moved = Config::single_upstream("local", "http://127.0.0.1:10/v1");
        let moved = same.reload(moved, HashMap::new()).unwrap();
        assert!(moved.health().snapshot().is_empty());
    }
}
