//! Configuration: TOML read once into validated types, and the per-model timeout and retry policy
//! built from layered profiles — built-in priors per model family and scenario, then the file's
//! `defaults`, `families.<family>`, `scenarios.<scenario>` and `models.<name>` tables. Every error
//! names its key path and the fix. Pure: no runtime and no I/O beyond reading the file, so it is
//! tested (and can be fuzzed) alone. See `docs/config.md`.

pub mod duration; // "250ms", "1m 30s"
mod raw; // the file as written
mod secrets; // keys from environment variables or files
mod validate; // raw → Config, errors with key paths
pub mod policy; // priors, layers, provenance
mod check; // `hourglass config check`: the effective policy of every model
pub mod jobs; // [jobs]: the store of background calls, its limits, webhooks
pub mod cluster; // [cluster]: several gateways as one (PostgreSQL, Redis); [client_limits]

use std::net::SocketAddr;
use std::time::Duration;

pub use cluster::{ClientLimits, ClusterSettings};
pub use jobs::{JobsSettings, WebhookEndpoint};
pub use policy::{Family, Policy, Retry, Scenario, Sourced, Timeouts};

pub use validate::ConfigError;

/// The address the gateway listens on when nothing says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from: a file path, or `zero configuration`.
    pub origin: String,
    /// The HTTP server's own settings.
    pub server: ServerSettings,
    /// The retry budget shared by every call.
    pub retry_budget: RetryBudget,
    /// The circuit breaker settings.
    pub breaker: BreakerConfig,
    /// The active health checks.
    pub health_check: HealthCheckConfig,
    /// Background calls: their store, limits and webhooks.
    pub jobs: JobsSettings,
    /// Several gateways as one: the shared job store and this instance's name.
    pub cluster: ClusterSettings,
    /// Limits per client key.
    pub client_limits: ClientLimits,
    /// The upstreams, in file order.
    pub upstreams: Vec<Upstream>,
    /// The models clients can ask for by name (configured ones and those upstreams list).
    pub models: Vec<ModelRoute>,
    /// Layers that make the policy of a model an upstream serves by wildcard.
    layers: validate::Layers,
}

/// Settings of the gateway's HTTP server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// Listen address (`server.listen`).
    pub listen: SocketAddr,
    /// Largest request body accepted (`server.max_request_body`).
    pub max_request_body: usize,
    /// Time a client has to send its request headers, and the longest an idle keep-alive
    /// connection waits for its next request (`server.header_read_timeout`).
    pub header_read_timeout: Duration,
    /// Time a client has to send its whole request body (`server.body_read_timeout`).
    pub body_read_timeout: Duration,
    /// Largest request head (request line and headers) accepted (`server.max_header_bytes`).
    pub max_header_bytes: usize,
    /// Time in-flight calls get to finish on shutdown (`server.shutdown_grace`).
    pub shutdown_grace: Duration,
    /// Client connections open at once; more are answered 503 at once and closed
    /// (`server.max_connections`).
    pub max_connections: usize,
    /// Serving threads, each with its own connections to the upstreams (`server.threads`); `None`:
    /// one per CPU the process may use. A change needs a restart.
    pub threads: Option<usize>,
    /// How long before a client's own deadline the gateway answers with a timeout error
    /// (`server.client_deadline_margin`).
    pub client_deadline_margin: Duration,
    /// The key `/metrics`, `/status` and `/dashboard` require as a bearer token, when set
    /// (`server.admin_key_env` names the environment variable holding it).
    pub admin_key: Option<Secret>,
    /// Keys clients must present as `Authorization: Bearer …` on `/v1/*` (`server.client_keys_env`
    /// names an environment variable holding them, comma-separated); none: no client auth.
    pub client_keys: Vec<Secret>,
    /// Serve on a non-loopback address without client keys (`server.allow_unauthenticated`).
    pub allow_unauthenticated: bool,
}

/// The retry budget: retries (and hedges) may be at most `ratio` of calls, plus `min_per_s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    /// Share of calls that may be retried (`retry_budget.ratio`).
    pub ratio: f64,
    /// Retries per second always allowed, so a quiet gateway can still retry (`retry_budget.min_per_s`).
    pub min_per_s: f64,
}

/// An API key; its value never appears in `Debug` output, logs or errors.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The value, for the one place that sends it upstream.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One upstream API.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Its name (`upstreams.<name>`), used in errors, headers and metrics.
    pub name: String,
    /// Base URL; a client's `/v1/chat/completions` goes to `<base_url>/chat/completions`.
    pub base_url: http::Uri,
    /// The key sent in [`Upstream::key_header`]; without one, the client's own header is passed on.
    pub api_key: Option<Secret>,
    /// The header the key travels in (`api_key_header`).
    pub key_header: KeyHeader,
    /// [`Upstream::api_key`] as the value of [`Upstream::key_header`] (`Bearer …` for
    /// `authorization`), built and checked once at load and marked sensitive.
    pub key_value: Option<http::HeaderValue>,
    /// The wire formats it speaks (`protocol`), in the order written.
    pub protocols: Vec<WireFormat>,
    /// Where the key was read from, for `config check`: `$VAR` or `file PATH`.
    pub api_key_from: Option<String>,
    /// Extra headers sent on every request.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// The models it serves.
    pub models: Served,
    /// Which HTTP versions it is spoken to in (`http`).
    pub http: HttpVersion,
    /// How many calls share one HTTP/2 connection before another is opened (`http2_max_streams`).
    pub http2_max_streams: u32,
}

/// Calls in flight on one HTTP/2 connection before another is opened, unless configured: the
/// least a server should allow (RFC 9113 §6.5.2), so calls do not queue behind a server's limit.
pub const DEFAULT_HTTP2_MAX_STREAMS: u32 = 100;

/// The HTTP versions an upstream is spoken to in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HttpVersion {
    /// HTTP/2 when TLS negotiates it (ALPN), else HTTP/1.1 (`"auto"`, the default).
    #[default]
    Auto,
    /// HTTP/1.1 only (`"1.1"`): ALPN offers nothing else.
    Http1,
    /// HTTP/2 only (`"2"`): negotiated over TLS, or with prior knowledge (h2c) over `http://`.
    Http2,
}

impl HttpVersion {
    /// Every choice.
    pub const ALL: [HttpVersion; 3] = [HttpVersion::Auto, HttpVersion::Http1, HttpVersion::Http2];

    /// Its name in configuration.
    pub fn name(self) -> &'static str {
        match self {
            HttpVersion::Auto => "auto",
            HttpVersion::Http1 => "1.1",
            HttpVersion::Http2 => "2",
        }
    }

    /// The choice of that name.
    pub fn from_name(name: &str) -> Option<HttpVersion> {
        HttpVersion::ALL.into_iter().find(|v| v.name() == name)
    }
}

impl Upstream {
    /// Whether it speaks `format`.
    pub fn speaks(&self, format: WireFormat) -> bool {
        self.protocols.contains(&format)
    }
}

/// A wire format an upstream speaks and a client calls in. hourglass does not translate between
/// them: a call goes only to upstreams that speak its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireFormat {
    /// OpenAI's: `/chat/completions`, `/responses`, … (and every OpenAI-compatible server).
    OpenAi,
    /// Anthropic's Messages API: `/messages`, `/messages/count_tokens`.
    Anthropic,
}

impl WireFormat {
    /// Every format.
    pub const ALL: [WireFormat; 2] = [WireFormat::OpenAi, WireFormat::Anthropic];

    /// Its name in configuration: `openai`, `anthropic`.
    pub fn name(self) -> &'static str {
        match self {
            WireFormat::OpenAi => "openai",
            WireFormat::Anthropic => "anthropic",
        }
    }

    /// The format of that name.
    pub fn from_name(name: &str) -> Option<WireFormat> {
        WireFormat::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The header its own API takes keys in.
    pub fn key_header(self) -> KeyHeader {
        match self {
            WireFormat::OpenAi => KeyHeader::Authorization,
            WireFormat::Anthropic => KeyHeader::XApiKey,
        }
    }
}

/// The header an upstream's key travels in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyHeader {
    /// `Authorization: Bearer KEY` (OpenAI and most compatible servers).
    Authorization,
    /// `x-api-key: KEY` (Anthropic).
    XApiKey,
    /// `api-key: KEY` (Azure OpenAI).
    ApiKey,
}

impl KeyHeader {
    /// Every placement.
    pub const ALL: [KeyHeader; 3] = [
        KeyHeader::Authorization,
        KeyHeader::XApiKey,
        KeyHeader::ApiKey,
    ];

    /// Its name in configuration: the header's own name.
    pub fn name(self) -> &'static str {
        match self {
            KeyHeader::Authorization => "authorization",
            KeyHeader::XApiKey => "x-api-key",
            KeyHeader::ApiKey => "api-key",
        }
    }

    /// The header itself.
    pub fn header_name(self) -> http::HeaderName {
        const X_API_KEY: http::HeaderName = http::HeaderName::from_static("x-api-key");
        const API_KEY: http::HeaderName = http::HeaderName::from_static("api-key");
        match self {
            KeyHeader::Authorization => http::header::AUTHORIZATION,
            KeyHeader::XApiKey => X_API_KEY,
            KeyHeader::ApiKey => API_KEY,
        }
    }

    /// The placement of that name.
    pub fn from_name(name: &str) -> Option<KeyHeader> {
        KeyHeader::ALL
            .into_iter()
            .find(|h| h.name().eq_ignore_ascii_case(name))
    }

    /// The header value carrying `key` here (`Bearer KEY` for `authorization`), marked sensitive
    /// so that hyper and h2 never log it or compress it into a shared table; `None` when the key
    /// holds something no header value can (a control character).
    pub fn value_for(self, key: &str) -> Option<http::HeaderValue> {
        let mut value = match self {
            KeyHeader::Authorization => http::HeaderValue::from_str(&format!("Bearer {key}")),
            KeyHeader::XApiKey | KeyHeader::ApiKey => http::HeaderValue::from_str(key),
        }
        .ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

/// Which models an upstream serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// Whatever a client asks for (`models = ["*"]`, the default).
    Any,
    /// Only these.
    Only(Vec<String>),
}

/// One place a model is served: an upstream, and the model name it knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// The model name sent upstream (differs from the client's when aliased).
    pub model: String,
    /// Its priority tier: every target of tier 0 is tried before any of tier 1. With
    /// `balance = "ordered"` each target is its own tier, in the order written.
    pub tier: u32,
    /// Its share of calls within its tier (`weighted`), or how much cheaper it counts (`latency`).
    pub weight: u32,
}

/// How a model's targets within one tier are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    /// In the order written: the first healthy target, then the next (the default).
    #[default]
    Ordered,
    /// Power of two choices over the peak-EWMA of first-token latency times calls in flight
    /// (divided by the target's weight).
    Latency,
    /// At random, in proportion to the targets' weights.
    Weighted,
}

/// When to start a second attempt on another upstream while the first has no first token yet.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Hedge {
    /// Never (the default).
    #[default]
    Off,
    /// After a fixed wait.
    After(std::time::Duration),
    /// After this quantile (0–1) of the model's recent first-token latencies.
    Quantile(f64),
}

/// What an active health check sends.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CheckMode {
    /// No active checks.
    Off,
    /// `GET /models`: free, never billed (the default).
    #[default]
    Models,
    /// A streamed one-token completion of this model: measures first-token latency, and is billed.
    Completion(String),
}

/// Active health checks of every upstream (`[health_check]`).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckConfig {
    /// What is sent.
    pub mode: CheckMode,
    /// Time between checks of one upstream (each waits a random 0–10 % more).
    pub interval: std::time::Duration,
    /// A check slower than this failed.
    pub timeout: std::time::Duration,
    /// Consecutive good checks that mark an unhealthy upstream healthy.
    pub healthy_threshold: u32,
    /// Consecutive failed checks that mark an upstream unhealthy.
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            mode: CheckMode::Models,
            interval: std::time::Duration::from_secs(15),
            timeout: std::time::Duration::from_secs(5),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

/// The circuit breaker of every upstream-and-model (`[breaker]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures that eject a target.
    pub consecutive_failures: u32,
    /// Failure share over `window` that ejects it…
    pub failure_rate: f64,
    /// …once at least this many calls ended in the window.
    pub min_calls: u32,
    /// The window of the failure rate.
    pub window: std::time::Duration,
    /// The first ejection's length; each repeated ejection doubles it.
    pub ejection: std::time::Duration,
    /// The longest ejection.
    pub max_ejection: std::time::Duration,
    /// Trial calls let through when an ejection ends; this many successes readmit.
    pub half_open_calls: u32,
    /// The largest share of a model's targets that may be ejected at once; beyond it, ejection
    /// is ignored for that model (better a sick upstream than none).
    pub max_ejected_share: f64,
    /// A stream that completes below this many content chunks per second (after its first
    /// token; at least 16 chunks over 2 s) counts as a failure; 0 turns the floor off.
    pub min_tokens_per_s: f64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_calls: 10,
            window: std::time::Duration::from_secs(30),
            ejection: std::time::Duration::from_secs(10),
            max_ejection: std::time::Duration::from_secs(300),
            half_open_calls: 2,
            max_ejected_share: 0.5,
            min_tokens_per_s: 1.0,
        }
    }
}

/// A model clients ask for: where it is served and its effective policy.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRoute {
    /// The name clients ask for.
    pub name: String,
    /// Its family.
    pub family: Family,
    /// Its scenario.
    pub scenario: Scenario,
    /// Where it is served, in order of preference.
    pub targets: Vec<Target>,
    /// Other models tried, in order, when every target failed.
    pub fallbacks: Vec<String>,
    /// How targets within a tier are chosen.
    pub balance: Balance,
    /// When to hedge.
    pub hedge: Hedge,
    /// The effective policy.
    pub policy: Policy,
    /// Where each policy value came from (shared: every call's error messages may name them).
    pub sources: std::sync::Arc<[Sourced]>,
    /// Whether a `models.<name>` table configures it.
    pub configured: bool,
}

impl Config {
    /// Reads and validates a configuration file; `env` looks up environment variables.
    pub fn load(
        path: &std::path::Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            origin: origin.clone(),
            message: e.to_string(),
        })?;
        Config::from_toml(&text, &origin, env)
    }

    /// Reads and validates configuration text; `origin` names it in errors.
    pub fn from_toml(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        validate::from_toml(text, origin, env)
    }

    /// The zero configuration: an `openai` upstream from `OPENAI_API_KEY` / `OPENAI_BASE_URL`
    /// serving every model, or `None` when neither is set; an error when `OPENAI_BASE_URL` is
    /// not a URL.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Config>, ConfigError> {
        validate::from_env(env)
    }

    /// A configuration with one upstream named `name` at `base_url` serving every model, for the
    /// embedded simulator.
    pub fn single_upstream(name: &str, base_url: &str) -> Config {
        validate::single_upstream(name, base_url)
    }

    /// The route of a model a client asks for: a configured or listed model, else one an
    /// upstream serves by wildcard; `None` when nothing serves it.
    pub fn route(&self, model: &str) -> Option<std::borrow::Cow<'_, ModelRoute>> {
        if let Some(route) = self.models.iter().find(|m| m.name == model) {
            return Some(std::borrow::Cow::Borrowed(route));
        }
        validate::wildcard_route(self, model).map(std::borrow::Cow::Owned)
    }

    /// The route of a request that names no model (another `/v1/*` path): the first upstream
    /// that speaks `format`, once, with the chat policy; `None` when none does.
    pub fn passthrough_route(&self, format: WireFormat) -> Option<ModelRoute> {
        validate::passthrough_route(self, format)
    }

    /// The upstream of that name.
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    /// The text `hourglass config check` prints: every model's targets and effective policy,
    /// each value with where it came from.
    pub fn render_check(&self) -> String {
        check::render(self)
    }
}

#[cfg(test)]
mod tests;
