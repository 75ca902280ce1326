//! The call path, usable as a library by Rust programs that call AI APIs directly: deadlines, the
//! one attempt loop (retry and failover), the upstream client timed by phase, the stream watchdog
//! and the error taxonomy. `docs/timeouts.md` defines the phases this crate enforces.
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

// Modules in the order a call meets them.
pub mod request; // what a call asks for: endpoint, body, model, stream, client deadline
pub mod deadlines; // every clock as an instant: min(phase, attempt, total)
pub mod retry; // backoff, Retry-After, the retry budget
mod attempts; // the one loop that owns "try again": retry and failover
mod attempt; // one attempt: connect, write, first byte, first token, the commit point
pub mod upstream; // the only user of the HTTP client: pool, dial, timeline
pub mod stream; // SSE scanning and what counts as content
pub mod commit; // after the commit point: the body that pumps a stream, with its watchdog
pub mod error; // failures, retryability, the error the client sees
pub mod events; // what observers hear: attempts, calls, streams, hedges
pub mod health; // breakers, latency estimates, target ranking, hedge thresholds
mod describe; // the words of a failure: which limit, its value, where it is set

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hourglass_config::Config;
use http::{HeaderMap, StatusCode};

pub use error::{AttemptRecord, CallError};
pub use request::CallRequest;
pub use stream::content::Endpoint;
pub use upstream::dial::{BoxFuture, BoxIo, Dial, DialFn};

/// The engine: configuration, upstream connections and the retry budget, shared by every call.
pub struct Engine {
    config: Arc<Config>,
    upstreams: upstream::Upstreams,
    budget: Mutex<retry::RetryBudget>,
    rng: Mutex<fastrand::Rng>,
    health: Arc<health::Health>,
    observer: std::sync::OnceLock<Arc<dyn events::Observer>>,
}

/// A successful call's response, committed to the client.
pub struct Response {
    /// The upstream's status.
    pub status: StatusCode,
    /// The upstream's headers (hop-by-hop ones removed) and `x-hourglass-attempts`,
    /// `x-hourglass-upstream` and `server-timing`.
    pub headers: HeaderMap,
    /// The body: whole, or a stream that ends with an SSE error event if it fails after commit.
    pub body: ResponseBody,
    /// Every attempt made, the successful one last.
    pub trail: Vec<AttemptRecord>,
    /// The moments of the successful attempt (connected, written, headers, first token).
    pub timeline: Option<upstream::Timeline>,
}

/// The body of a committed response.
pub enum ResponseBody {
    /// A complete body.
    Full(Bytes),
    /// A committed stream, read on as the client reads it.
    Stream(Box<commit::CommittedStream>),
}

impl Engine {
    /// An engine for `config`; `dials` replaces the network dialer of the upstreams it names
    /// (the embedded simulator, tests).
    pub fn new(
        config: Config,
        mut dials: HashMap<String, Arc<dyn Dial>>,
    ) -> Result<Arc<Engine>, String> {
        let tls = upstream::dial::tls_config();
        let mut dialers: Vec<Arc<dyn Dial>> = Vec::with_capacity(config.upstreams.len());
        for upstream in &config.upstreams {
            let dial = match dials.remove(&upstream.name) {
                Some(dial) => dial,
                None => Arc::new(
                    upstream::dial::NetworkDial::new(&upstream.base_url, &tls)
                        .map_err(|e| format!("upstream `{}`: {e}", upstream.name))?,
                ),
            };
            dialers.push(dial);
        }
        let now = tokio::time::Instant::now();
        Ok(Arc::new(Engine {
            budget: Mutex::new(retry::RetryBudget::new(
                config.retry_budget.ratio,
                config.retry_budget.min_per_s,
                now,
            )),
            upstreams: upstream::Upstreams::new(dialers),
            health: Arc::new(health::Health::new(
                &config.breaker,
                config.upstreams.iter().map(|u| u.name.clone()).collect(),
            )),
            config: Arc::new(config),
            rng: Mutex::new(fastrand::Rng::new()),
            observer: std::sync::OnceLock::new(),
        }))
    }

    /// The configuration it runs.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every upstream-and-model's health: breaker, latency estimate, calls in flight, events.
    pub fn health(&self) -> &health::Health {
        &self.health
    }

    /// Sets the observer of calls (once; a second observer is refused and returned).
    pub fn set_observer(
        &self,
        observer: Arc<dyn events::Observer>,
    ) -> Result<(), Arc<dyn events::Observer>> {
        self.observer.set(observer)
    }

    /// The observer, if one is set.
    pub(crate) fn observer(&self) -> Option<&dyn events::Observer> {
        self.observer.get().map(|o| o.as_ref())
    }

    /// How many retries the retry budget would allow now.
    pub fn retry_budget_available(&self) -> f64 {
        self.budget
            .lock()
            .expect("the budget lock is never poisoned")
            .available(tokio::time::Instant::now())
    }

    /// Starts the active health checks of every upstream (`[health_check]`); they stop when the
    /// engine is dropped.
    pub fn spawn_health_checks(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        health::active::spawn(self)
    }

    /// Makes one call: picks targets, tries them within the deadlines, and returns the committed
    /// response or the error to send.
    pub async fn call(self: &Arc<Self>, request: CallRequest) -> Result<Response, CallError> {
        attempts::run(self, request).await
    }
}
