//! From the file as written to a [`Config`]: every check in one place, every error with the file,
//! the key path and the fix.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::policy::{self, Family, Layer, PolicyPatch, Scenario};
use crate::raw::{Ordered, RawConfig, RawModel, RawTarget, RawUpstream};
use crate::secrets::{self, Source};
use crate::{
    Config, DEFAULT_HTTP2_MAX_STREAMS, DEFAULT_LISTEN, HttpVersion, KeyHeader, ModelRoute,
    RetryBudget, Secret, Served, ServerSettings, Target, Upstream, WireFormat,
};

/// What was wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{origin}: cannot read the configuration: {message}")]
    Read {
        /// The file.
        origin: String,
        /// The I/O error.
        message: String,
    },
    /// Malformed TOML, a wrong type or an unknown key.
    #[error("{origin}:{line}:{column}: {key}: {message}")]
    Parse {
        /// The file.
        origin: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The key path.
        key: String,
        /// What was wrong.
        message: String,
    },
    /// A well-formed value that cannot be used.
    #[error("{origin}: {key}: {message}")]
    Invalid {
        /// The file.
        origin: String,
        /// The key path, e.g. `models.gpt-4o.targets[1]`.
        key: String,
        /// What was wrong and the fix.
        message: String,
    },
}

/// The policy layers between the priors and a model's own table.
#[derive(Debug, Clone, Default)]
pub(crate) struct Layers {
    defaults: PolicyPatch,
    families: HashMap<Family, PolicyPatch>,
    scenarios: HashMap<Scenario, PolicyPatch>,
    /// The policy these layers give a model without a table of its own, per family and
    /// scenario, resolved on first use: every call to a model served by wildcard (the zero
    /// configuration's case) needs one, and resolving writes a value and a source per key.
    unowned:
        [OnceLock<(crate::Policy, Arc<[crate::Sourced]>)>; Family::ALL.len() * Scenario::ALL.len()],
}

impl Layers {
    /// The policy of a model of `family` in `scenario` that has no table of its own, and where
    /// each value came from.
    fn unowned(
        &self,
        family: Family,
        scenario: Scenario,
    ) -> (crate::Policy, Arc<[crate::Sourced]>) {
        // Matched in full, so a new family or scenario cannot share another's slot.
        let row = match family {
            Family::Chat => 0,
            Family::Reasoning => 1,
            Family::Image => 2,
            Family::Embedding => 3,
        };
        let column = match scenario {
            Scenario::Realtime => 0,
            Scenario::Content => 1,
            Scenario::Reasoning => 2,
            Scenario::Image => 3,
        };
        let slot = row * Scenario::ALL.len() + column;
        let (policy, sources) = self.unowned[slot].get_or_init(|| {
            let (policy, sources) = resolve(self, family, scenario, None);
            (policy, sources.into())
        });
        (*policy, sources.clone())
    }
}

struct Check<'a> {
    origin: &'a str,
    /// The configuration file's directory: relative `…_file` paths are read from it.
    dir: &'a std::path::Path,
}

impl Check<'_> {
    /// Reads a secret from its environment variable or file.
    fn secret(
        &self,
        source: Source<'_>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, ConfigError> {
        source
            .read(self.dir, env)
            .or_else(|(key, message)| self.fail(key, message))
    }

    fn fail<T>(
        &self,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Result<T, ConfigError> {
        Err(ConfigError::Invalid {
            origin: self.origin.to_owned(),
            key: key.into(),
            message: message.into(),
        })
    }
}

pub(crate) fn from_toml(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let raw = parse(text, origin)?;
    let dir = std::path::Path::new(origin)
        .parent()
        .unwrap_or(std::path::Path::new(""));
    let check = Check { origin, dir };
    let server = server(&check, &raw, env)?;
    let retry_budget = budget(&check, &raw)?;
    let breaker = breaker(&check, &raw)?;
    let health_check = health_check(&check, &raw)?;
    let jobs = crate::jobs::validate(raw.jobs, dir, &|source| source.read(dir, env))
        .or_else(|(key, message)| check.fail(key, message))?;
    let cluster = crate::cluster::validate(raw.cluster, &|source| source.read(dir, env))
        .or_else(|(key, message)| check.fail(key, message))?;
    let client_limits = crate::cluster::client_limits(raw.client_limits)
        .or_else(|(key, message)| check.fail(key, message))?;
    if raw.upstreams.0.is_empty() {
        return check.fail("upstreams", "no upstream is configured; add a table such as [upstreams.openai] with base_url = \"https://api.openai.com/v1\"");
    }
    let mut upstreams = Vec::with_capacity(raw.upstreams.0.len());
    for (name, upstream) in raw.upstreams.0 {
        upstreams.push(upstream_of(&check, name, upstream, env)?);
    }
    let layers = Layers {
        defaults: raw.defaults,
        families: named_layers(&check, "family", raw.families, &Family::ALL, Family::name)?,
        scenarios: named_layers(
            &check,
            "scenario",
            raw.scenarios,
            &Scenario::ALL,
            Scenario::name,
        )?,
        unowned: Default::default(),
    };
    let mut config = Config {
        origin: origin.to_owned(),
        server,
        retry_budget,
        breaker,
        health_check,
        jobs,
        cluster,
        client_limits,
        upstreams,
        models: Vec::new(),
        layers,
    };
    let configured: Vec<String> = raw.models.0.iter().map(|(name, _)| name.clone()).collect();
    for (name, model) in raw.models.0 {
        let route = configured_route(&check, &config, &configured, name, model)?;
        config.models.push(route);
    }
    for route in &config.models {
        fallbacks_speak_alike(&check, &config, route)?;
    }
    // Models the upstreams list by name are routable and shown by `config check` too.
    let listed: Vec<String> = config
        .upstreams
        .iter()
        .filter_map(|u| match &u.models {
            Served::Only(list) => Some(list.clone()),
            Served::Any => None,
        })
        .flatten()
        .collect();
    for name in listed {
        if config.models.iter().all(|m| m.name != name) {
            let route = implicit_route(&config, &name)
                .expect("a listed model has the upstream that lists it");
            config.models.push(route);
        }
    }
    Ok(config)
}

fn parse(text: &str, origin: &str) -> Result<RawConfig, ConfigError> {
    let located = |key: String, error: toml::de::Error| {
        let offset = error.span().map_or(0, |s| s.start).min(text.len());
        let before = &text[..offset];
        ConfigError::Parse {
            origin: origin.to_owned(),
            line: before.matches('\n').count() + 1,
            column: before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1,
            key,
            message: error.message().trim().to_owned(),
        }
    };
    let deserializer =
        toml::de::Deserializer::parse(text).map_err(|e| located("(document)".to_owned(), e))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        located(key, e.into_inner())
    })
}

fn server(
    check: &Check<'_>,
    raw: &RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ServerSettings, ConfigError> {
    let s = &raw.server;
    let listen = match s.listen.as_deref() {
        None => DEFAULT_LISTEN
            .parse()
            .expect("the default listen address is valid"),
        Some(text) => match text.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                return check.fail(
                    "server.listen",
                    format!("`{text}` is not an address; write IP:PORT such as 127.0.0.1:8787"),
                );
            }
        },
    };
    let max_request_body = match s.max_request_body.as_deref() {
        None => 32 * 1024 * 1024,
        Some(text) => match parse_size(text) {
            Some(size) if size > 0 => size,
            Some(_) => {
                return check.fail(
                    "server.max_request_body",
                    format!("`{text}` is zero: no request would fit; write e.g. \"32MiB\""),
                );
            }
            None => {
                return check.fail(
                    "server.max_request_body",
                    format!("`{text}` is not a size; write e.g. \"32MiB\" or \"500KB\""),
                );
            }
        },
    };
    // hyper's read buffer bounds the head; it cannot be smaller than 8 KiB.
    let max_header_bytes = match s.max_header_bytes.as_deref() {
        None => 64 * 1024,
        Some(text) => match parse_size(text) {
            Some(size) if (8 * 1024..=1024 * 1024).contains(&size) => size,
            Some(_) => {
                return check.fail("server.max_header_bytes", "must be between 8KiB and 1MiB");
            }
            None => {
                return check.fail(
                    "server.max_header_bytes",
                    format!("`{text}` is not a size; write e.g. \"64KiB\""),
                );
            }
        },
    };
    let margin = match s.client_deadline_margin.as_deref() {
        None => Duration::from_millis(500),
        Some(text) => match crate::duration::parse(text) {
            Ok(d) if d <= Duration::from_secs(60) => d,
            Ok(_) => return check.fail("server.client_deadline_margin", "must be at most 60s"),
            Err(e) => return check.fail("server.client_deadline_margin", e),
        },
    };
    let client_keys: Vec<Secret> = check
        .secret(
            Source {
                key: "server.client_keys",
                env_var: s.client_keys_env.as_deref(),
                file: s.client_keys_file.as_deref(),
                without: "to let clients in without a key",
            },
            env,
        )?
        .map_or_else(Vec::new, |text| {
            secrets::key_list(&text)
                .into_iter()
                .map(Secret::new)
                .collect()
        });
    // Only separators or comments would leave the gateway open while the file says it is not.
    if client_keys.is_empty() && (s.client_keys_env.is_some() || s.client_keys_file.is_some()) {
        let key = if s.client_keys_file.is_some() {
            "server.client_keys_file"
        } else {
            "server.client_keys_env"
        };
        return check.fail(
            key,
            "holds no key, only separators or comments; give at least one key",
        );
    }
    let max_connections = match s.max_connections {
        None => DEFAULT_MAX_CONNECTIONS,
        Some(n) if n >= 1 => n,
        Some(_) => {
            return check.fail(
                "server.max_connections",
                "must be at least 1; write e.g. 16384",
            );
        }
    };
    let threads = match s.threads {
        None => None,
        Some(n) if (1..=MAX_THREADS).contains(&n) => Some(n),
        Some(_) => {
            return check.fail(
                "server.threads",
                format!("must be 1 to {MAX_THREADS}; leave it out for one per CPU"),
            );
        }
    };
    Ok(ServerSettings {
        listen,
        max_request_body,
        max_connections,
        threads,
        header_read_timeout: s
            .header_read_timeout
            .map_or(Duration::from_secs(10), |p| p.0),
        body_read_timeout: s.body_read_timeout.map_or(Duration::from_secs(30), |p| p.0),
        max_header_bytes,
        shutdown_grace: s.shutdown_grace.map_or(Duration::from_secs(30), |p| p.0),
        client_deadline_margin: margin,
        admin_key: check
            .secret(
                Source {
                    key: "server.admin_key",
                    env_var: s.admin_key_env.as_deref(),
                    file: s.admin_key_file.as_deref(),
                    without: "to leave /metrics, /status and /dashboard open",
                },
                env,
            )?
            .map(Secret::new),
        client_keys,
        allow_unauthenticated: s.allow_unauthenticated.unwrap_or(false),
    })
}

/// Client connections open at once by default: room for ten thousand slow streams and more.
const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// The most serving threads `server.threads` allows: past the cores of any host, each thread
/// costs a stack, a runtime and its own upstream connections.
const MAX_THREADS: usize = 1024;

/// Reads "32MiB", "500KB", "1048576" (bytes).
pub(crate) fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number.parse().ok()?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" => 1024,
        "mb" => 1000 * 1000,
        "mib" => 1024 * 1024,
        "gb" => 1000 * 1000 * 1000,
        "gib" => 1024 * 1024 * 1024,
        _ => return None,
    };
    number.checked_mul(factor)
}

fn breaker(check: &Check<'_>, raw: &RawConfig) -> Result<crate::BreakerConfig, ConfigError> {
    let b = &raw.breaker;
    let d = crate::BreakerConfig::default();
    let count = |key: &str, value: Option<u32>, default: u32| {
        at_least_one(check, &format!("breaker.{key}"), value, default)
    };
    let share = |key: &str, value: Option<f64>, default: f64| -> Result<f64, ConfigError> {
        match value {
            Some(v) if !(v > 0.0 && v <= 1.0) => check.fail(
                format!("breaker.{key}"),
                format!("is {v}; write a share above 0 and at most 1, e.g. 0.5"),
            ),
            Some(v) => Ok(v),
            None => Ok(default),
        }
    };
    let config = crate::BreakerConfig {
        consecutive_failures: count(
            "consecutive_failures",
            b.consecutive_failures,
            d.consecutive_failures,
        )?,
        failure_rate: share("failure_rate", b.failure_rate, d.failure_rate)?,
        min_calls: count("min_calls", b.min_calls, d.min_calls)?,
        window: b.window.map_or(d.window, |p| p.0),
        ejection: b.ejection.map_or(d.ejection, |p| p.0),
        max_ejection: b.max_ejection.map_or(d.max_ejection, |p| p.0),
        half_open_calls: count("half_open_calls", b.half_open_calls, d.half_open_calls)?,
        max_ejected_share: share(
            "max_ejected_share",
            b.max_ejected_share,
            d.max_ejected_share,
        )?,
        min_tokens_per_s: match b.min_tokens_per_s {
            Some(v) if !(0.0..=100_000.0).contains(&v) => {
                return check.fail(
                    "breaker.min_tokens_per_s",
                    format!("is {v}; write chunks per second from 0 (off) to 100000"),
                );
            }
            Some(v) => v,
            None => d.min_tokens_per_s,
        },
    };
    if config.ejection > config.max_ejection {
        return check.fail(
            "breaker.ejection",
            format!(
                "({}) is above breaker.max_ejection ({})",
                crate::duration::format(config.ejection),
                crate::duration::format(config.max_ejection)
            ),
        );
    }
    Ok(config)
}

fn health_check(
    check: &Check<'_>,
    raw: &RawConfig,
) -> Result<crate::HealthCheckConfig, ConfigError> {
    use crate::raw::RawCheckMode;
    let h = &raw.health_check;
    let d = crate::HealthCheckConfig::default();
    let mode = match (h.mode, &h.model) {
        (Some(RawCheckMode::Off), _) => crate::CheckMode::Off,
        (Some(RawCheckMode::Completion), Some(model)) if !model.is_empty() => {
            crate::CheckMode::Completion(model.clone())
        }
        (Some(RawCheckMode::Completion), _) => {
            return check.fail(
                "health_check.model",
                "mode = \"completion\" needs the model to send a one-token completion to (it is billed)",
            );
        }
        (Some(RawCheckMode::Models) | None, Some(_)) => {
            return check.fail(
                "health_check.model",
                "is only used with mode = \"completion\"",
            );
        }
        (Some(RawCheckMode::Models) | None, None) => crate::CheckMode::Models,
    };
    let threshold = |key: &str, value: Option<u32>, default: u32| {
        at_least_one(check, &format!("health_check.{key}"), value, default)
    };
    let config = crate::HealthCheckConfig {
        mode,
        interval: h.interval.map_or(d.interval, |p| p.0),
        timeout: h.timeout.map_or(d.timeout, |p| p.0),
        healthy_threshold: threshold(
            "healthy_threshold",
            h.healthy_threshold,
            d.healthy_threshold,
        )?,
        unhealthy_threshold: threshold(
            "unhealthy_threshold",
            h.unhealthy_threshold,
            d.unhealthy_threshold,
        )?,
    };
    if config.timeout > config.interval {
        return check.fail(
            "health_check.timeout",
            format!(
                "({}) is longer than health_check.interval ({}); checks would overlap",
                crate::duration::format(config.timeout),
                crate::duration::format(config.interval)
            ),
        );
    }
    Ok(config)
}

/// A count of at least one, or its default.
fn at_least_one(
    check: &Check<'_>,
    key: &str,
    value: Option<u32>,
    default: u32,
) -> Result<u32, ConfigError> {
    match value {
        Some(0) => check.fail(key, "is 0; write at least 1"),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

/// `off`, a percentile such as `p95`, or a duration such as `2s`.
fn hedge(text: &str) -> Result<crate::Hedge, String> {
    let text = text.trim();
    if text == "off" {
        return Ok(crate::Hedge::Off);
    }
    if let Some(p) = text.strip_prefix('p') {
        return match p.parse::<f64>() {
            Ok(p) if p > 0.0 && p < 100.0 => Ok(crate::Hedge::Quantile(p / 100.0)),
            _ => Err(format!("`{text}` is not a percentile from p1 to p99.9")),
        };
    }
    match crate::duration::parse(text) {
        Ok(d) if !d.is_zero() => Ok(crate::Hedge::After(d)),
        _ => Err(format!(
            "`{text}` is not `off`, a percentile such as `p95`, or a duration such as `2s`"
        )),
    }
}

fn budget(check: &Check<'_>, raw: &RawConfig) -> Result<RetryBudget, ConfigError> {
    let ratio = raw.retry_budget.ratio.unwrap_or(0.2);
    if !(0.0..=1.0).contains(&ratio) {
        return check.fail(
            "retry_budget.ratio",
            format!("is {ratio}; write a share of calls from 0 to 1, e.g. 0.2"),
        );
    }
    let min_per_s = raw.retry_budget.min_per_s.unwrap_or(5.0);
    if !(0.0..=10_000.0).contains(&min_per_s) {
        return check.fail(
            "retry_budget.min_per_s",
            format!("is {min_per_s}; write retries per second from 0 to 10000"),
        );
    }
    Ok(RetryBudget { ratio, min_per_s })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn upstream_of(
    check: &Check<'_>,
    name: String,
    raw: RawUpstream,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Upstream, ConfigError> {
    let key = format!("upstreams.{name}");
    if !valid_name(&name) {
        return check.fail(
            &key,
            "an upstream name is letters, digits, `-`, `_` and `.`",
        );
    }
    let base_url = parse_base_url(&raw.base_url).map_err(|message| ConfigError::Invalid {
        origin: check.origin.to_owned(),
        key: format!("{key}.base_url"),
        message,
    })?;
    let api_key = check
        .secret(
            Source {
                key: &format!("{key}.api_key"),
                env_var: raw.api_key_env.as_deref(),
                file: raw.api_key_file.as_deref(),
                without: "to pass on each client's own Authorization header",
            },
            env,
        )?
        .map(Secret::new);
    let api_key_from = match (&raw.api_key_env, &raw.api_key_file) {
        (Some(var), _) => Some(format!("${var}")),
        (None, Some(file)) => Some(format!("file {file}")),
        (None, None) => None,
    };
    let protocols = match raw.protocol {
        None => vec![WireFormat::OpenAi],
        Some(value) => protocols_of(check, &format!("{key}.protocol"), value)?,
    };
    let key_header = match raw.api_key_header.as_deref() {
        None => protocols[0].key_header(),
        Some(name) => KeyHeader::from_name(name.trim()).ok_or_else(|| ConfigError::Invalid {
            origin: check.origin.to_owned(),
            key: format!("{key}.api_key_header"),
            message: format!(
                "`{name}` is not a key header; write \"authorization\" (Bearer), \"x-api-key\" (Anthropic) or \"api-key\" (Azure OpenAI)"
            ),
        })?,
    };
    let key_value = key_value(
        key_header,
        api_key.as_ref(),
        api_key_from.as_deref().unwrap_or("its source"),
        || {
            let source = if raw.api_key_env.is_some() {
                "api_key_env"
            } else {
                "api_key_file"
            };
            (check.origin.to_owned(), format!("{key}.{source}"))
        },
    )?;
    let http = match raw.http.as_deref() {
        None => HttpVersion::Auto,
        Some(name) => HttpVersion::from_name(name.trim()).ok_or_else(|| ConfigError::Invalid {
            origin: check.origin.to_owned(),
            key: format!("{key}.http"),
            message: format!(
                "`{name}` is not an HTTP choice; write \"auto\" (HTTP/2 when TLS negotiates it), \"1.1\" or \"2\" (over http:// with prior knowledge)"
            ),
        })?,
    };
    let http2_max_streams = match raw.http2_max_streams {
        None => DEFAULT_HTTP2_MAX_STREAMS,
        Some(n) if (1..=10_000).contains(&n) => n as u32,
        Some(n) => {
            return check.fail(
                format!("{key}.http2_max_streams"),
                format!("is {n}; calls per HTTP/2 connection are 1 to 10000"),
            );
        }
    };
    let mut headers = Vec::with_capacity(raw.headers.0.len());
    for (header, value) in raw.headers.0 {
        let header_key = format!("{key}.headers.{header}");
        let Ok(header_name) = http::HeaderName::from_bytes(header.as_bytes()) else {
            return check.fail(header_key, "is not a valid header name");
        };
        if matches!(
            header_name.as_str(),
            "host" | "content-length" | "transfer-encoding" | "connection"
        ) {
            return check.fail(
                header_key,
                "is set by the gateway itself and cannot be configured",
            );
        }
        if header_name.as_str() == key_header.name() && api_key.is_some() {
            return check.fail(
                header_key,
                format!(
                    "conflicts with the upstream's api_key, which already sets {}",
                    key_header.name()
                ),
            );
        }
        let Ok(header_value) = http::HeaderValue::from_str(&value) else {
            return check.fail(
                header_key,
                "the value holds a control character (a line break, NUL or DEL; a tab is fine), which no header can carry",
            );
        };
        headers.push((header_name, header_value));
    }
    let models = match raw.models {
        None => Served::Any,
        Some(list) if list.iter().any(|m| m == "*") => Served::Any,
        Some(list) if list.is_empty() => {
            return check.fail(
                format!("{key}.models"),
                "is empty; list the models it serves, or [\"*\"] for every model",
            );
        }
        Some(list) => Served::Only(list),
    };
    Ok(Upstream {
        name,
        base_url,
        api_key,
        key_header,
        key_value,
        protocols,
        api_key_from,
        headers,
        models,
        http,
        http2_max_streams,
    })
}

/// The wire formats of `upstreams.NAME.protocol`: one name or a list of them, each known, none
/// twice.
fn protocols_of(
    check: &Check<'_>,
    key: &str,
    value: toml::Value,
) -> Result<Vec<WireFormat>, ConfigError> {
    let known =
        "write \"openai\", \"anthropic\", or a list of both for an upstream that speaks each";
    let names: Vec<toml::Value> = match value {
        toml::Value::Array(list) => list,
        one => vec![one],
    };
    if names.is_empty() {
        return check.fail(key, format!("is empty; {known}"));
    }
    let mut formats = Vec::with_capacity(names.len());
    for name in names {
        let Some(format) = name.as_str().and_then(WireFormat::from_name) else {
            let written = match name.as_str() {
                Some(text) => format!("`{text}`"),
                None => format!("a {}", name.type_str()),
            };
            return check.fail(key, format!("{written} is not a protocol; {known}"));
        };
        if formats.contains(&format) {
            return check.fail(key, format!("lists `{}` twice", format.name()));
        }
        formats.push(format);
    }
    Ok(formats)
}

/// The `[families.NAME]` or `[scenarios.NAME]` layers (`kind`: `family` or `scenario`) by their
/// enum; an unknown name is refused with its key path and the names there are.
fn named_layers<K: Copy + Eq + std::hash::Hash>(
    check: &Check<'_>,
    kind: &str,
    layers: Ordered<PolicyPatch>,
    all: &[K],
    name: fn(K) -> &'static str,
) -> Result<HashMap<K, PolicyPatch>, ConfigError> {
    let mut out = HashMap::new();
    for (written, patch) in layers.0 {
        let Some(key) = all.iter().copied().find(|k| name(*k) == written) else {
            let names: Vec<&str> = all.iter().map(|k| name(*k)).collect();
            let table = if kind == "family" {
                "families"
            } else {
                "scenarios"
            };
            return check.fail(
                format!("{table}.{written}"),
                format!("there is no such {kind}; write one of {}", names.join(", ")),
            );
        };
        out.insert(key, patch);
    }
    Ok(out)
}

fn parse_base_url(text: &str) -> Result<http::Uri, String> {
    // Never echo credentials written into the URL: messages show it with them hidden.
    let shown = hide_userinfo(text);
    let uri: http::Uri = text
        .parse()
        .map_err(|_| format!("`{shown}` is not a URL; write e.g. https://api.openai.com/v1"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("`{shown}` must start with http:// or https://")),
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!(
            "`{shown}` has credentials before its host: they would travel in the Host header and show in logs; \
             put the key in api_key_env or api_key_file (or a header in `headers`) and remove it from the URL"
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{shown}` has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("`{shown}` has a query string; a base URL cannot"));
    }
    let trimmed = text.trim_end_matches('/');
    trimmed
        .parse()
        .map_err(|_| format!("`{shown}` is not a URL"))
}

/// `text` with anything between `//` and an `@` before the path replaced by `***`.
fn hide_userinfo(text: &str) -> String {
    let Some(start) = text.find("//").map(|at| at + 2) else {
        return text.to_owned();
    };
    let authority_end = text[start..]
        .find(['/', '?', '#'])
        .map_or(text.len(), |at| start + at);
    match text[start..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &text[..start], &text[start + at..]),
        None => text.to_owned(),
    }
}

fn configured_route(
    check: &Check<'_>,
    config: &Config,
    configured: &[String],
    name: String,
    raw: RawModel,
) -> Result<ModelRoute, ConfigError> {
    let key = format!("models.{name}");
    let balance = raw.balance.unwrap_or_default();
    let hedge = match raw.hedge.as_deref() {
        None => crate::Hedge::Off,
        Some(text) => hedge(text).map_err(|message| ConfigError::Invalid {
            origin: check.origin.to_owned(),
            key: format!("{key}.hedge"),
            message,
        })?,
    };
    let mut explicit_tiers = false;
    let mut targets = match &raw.targets {
        None => {
            let implicit = serving(config, &name);
            if implicit.is_empty() {
                return check.fail(format!("{key}.targets"), format!("no upstream lists `{name}` among its models; add targets = [\"UPSTREAM\"] or [\"UPSTREAM:MODEL\"]"));
            }
            implicit
        }
        Some(list) if list.is_empty() => {
            return check.fail(
                format!("{key}.targets"),
                "is empty; name at least one upstream",
            );
        }
        Some(list) => {
            let mut targets = Vec::with_capacity(list.len());
            for (i, target) in list.iter().enumerate() {
                let (upstream, model, tier, weight) = match target {
                    RawTarget::Name(text) => {
                        let (upstream, model) = text
                            .split_once(':')
                            .unwrap_or((text.as_str(), name.as_str()));
                        (upstream, model, None, None)
                    }
                    RawTarget::Table(t) => (
                        t.upstream.as_str(),
                        t.model.as_deref().unwrap_or(name.as_str()),
                        t.tier,
                        t.weight,
                    ),
                };
                let Some(index) = config.upstreams.iter().position(|u| u.name == upstream) else {
                    let known: Vec<&str> =
                        config.upstreams.iter().map(|u| u.name.as_str()).collect();
                    return check.fail(
                        format!("{key}.targets[{i}]"),
                        format!("unknown upstream `{upstream}`; known: {}", known.join(", ")),
                    );
                };
                if model.is_empty() {
                    return check.fail(
                        format!("{key}.targets[{i}]"),
                        "the model after `:` is empty; write UPSTREAM:MODEL",
                    );
                }
                if weight == Some(0) {
                    return check.fail(
                        format!("{key}.targets[{i}].weight"),
                        "is 0; write at least 1 (remove the target to send it nothing)",
                    );
                }
                explicit_tiers |= tier.is_some();
                targets.push(Target {
                    upstream: index,
                    model: model.to_owned(),
                    tier: tier.unwrap_or(0),
                    weight: weight.unwrap_or(1),
                });
            }
            targets
        }
    };
    if formats_of(config, &targets).is_empty() {
        let spoken: Vec<String> = targets
            .iter()
            .map(|t| {
                let upstream = &config.upstreams[t.upstream];
                let formats: Vec<&str> = upstream.protocols.iter().map(|f| f.name()).collect();
                format!("`{}` speaks {}", upstream.name, formats.join(" and "))
            })
            .collect();
        return check.fail(
            format!("{key}.targets"),
            format!(
                "its targets speak no protocol in common ({}); a model's targets must all speak its protocol, since hourglass does not translate between OpenAI's and Anthropic's — make one model per protocol",
                spoken.join(", ")
            ),
        );
    }
    // Ordered targets without written tiers are tiers of one, in the order written; balanced
    // ones share tier 0 unless tiers are written.
    if balance == crate::Balance::Ordered && !explicit_tiers {
        for (tier, target) in targets.iter_mut().enumerate() {
            target.tier = tier as u32;
        }
    }
    for (i, fallback) in raw.fallbacks.iter().enumerate() {
        if *fallback == name {
            return check.fail(
                format!("{key}.fallbacks[{i}]"),
                "a model cannot fall back to itself",
            );
        }
        if !configured.contains(fallback) && serving(config, fallback).is_empty() {
            return check.fail(
                format!("{key}.fallbacks[{i}]"),
                format!("`{fallback}` is neither a configured model nor served by any upstream"),
            );
        }
    }
    let family = raw.family.unwrap_or_else(|| Family::infer(&name));
    let scenario = raw.scenario.unwrap_or_else(|| family.default_scenario());
    let own = PolicyPatch {
        timeouts: raw.timeouts,
        retry: raw.retry,
        stream_upstream: raw.stream_upstream,
        heartbeat: raw.heartbeat,
    };
    let (policy, sources) = resolve(&config.layers, family, scenario, Some((&key, &own)));
    if policy.retry.backoff_base > policy.retry.backoff_max {
        return check.fail(format!("{key}.retry"), format!("backoff_base ({}) is above backoff_max ({}); raise backoff_max or lower backoff_base", crate::duration::format(policy.retry.backoff_base), crate::duration::format(policy.retry.backoff_max)));
    }
    Ok(ModelRoute {
        name,
        family,
        scenario,
        targets,
        fallbacks: raw.fallbacks,
        balance,
        hedge,
        policy,
        sources: sources.into(),
        configured: true,
    })
}

/// The wire formats every one of `targets` speaks.
fn formats_of(config: &Config, targets: &[Target]) -> Vec<WireFormat> {
    WireFormat::ALL
        .into_iter()
        .filter(|&f| {
            targets
                .iter()
                .all(|t| config.upstreams[t.upstream].speaks(f))
        })
        .collect()
}

/// A configured model's fallbacks must speak a protocol the model speaks: a call falls back only
/// to targets in its own protocol.
fn fallbacks_speak_alike(
    check: &Check<'_>,
    config: &Config,
    route: &ModelRoute,
) -> Result<(), ConfigError> {
    if !route.configured {
        return Ok(());
    }
    let own = formats_of(config, &route.targets);
    for (i, fallback) in route.fallbacks.iter().enumerate() {
        let Some(other) = config.route(fallback) else {
            continue;
        };
        let theirs: Vec<WireFormat> = WireFormat::ALL
            .into_iter()
            .filter(|&f| {
                other
                    .targets
                    .iter()
                    .any(|t| config.upstreams[t.upstream].speaks(f))
            })
            .collect();
        if !own.iter().any(|f| theirs.contains(f)) {
            let names = |list: &[WireFormat]| {
                list.iter()
                    .map(|f| f.name())
                    .collect::<Vec<_>>()
                    .join(" and ")
            };
            return check.fail(
                format!("models.{}.fallbacks[{i}]", route.name),
                format!(
                    "`{fallback}` is served over {} and `{}` over {}: a call falls back only within its protocol (hourglass does not translate between them)",
                    names(&theirs),
                    route.name,
                    names(&own)
                ),
            );
        }
    }
    Ok(())
}

/// The upstreams that serve `model` by name or by wildcard, in file order.
fn serving(config: &Config, model: &str) -> Vec<Target> {
    config
        .upstreams
        .iter()
        .enumerate()
        .filter(|(_, u)| match &u.models {
            Served::Any => true,
            Served::Only(list) => list.iter().any(|m| m == model),
        })
        .enumerate()
        .map(|(tier, (upstream, _))| Target {
            upstream,
            model: model.to_owned(),
            tier: tier as u32,
            weight: 1,
        })
        .collect()
}

fn implicit_route(config: &Config, model: &str) -> Option<ModelRoute> {
    let targets = serving(config, model);
    if targets.is_empty() {
        return None;
    }
    let family = Family::infer(model);
    let scenario = family.default_scenario();
    let (policy, sources) = config.layers.unowned(family, scenario);
    Some(ModelRoute {
        name: model.to_owned(),
        family,
        scenario,
        targets,
        fallbacks: Vec::new(),
        balance: crate::Balance::Ordered,
        hedge: crate::Hedge::Off,
        policy,
        sources,
        configured: false,
    })
}

pub(crate) fn passthrough_route(config: &Config, format: WireFormat) -> Option<ModelRoute> {
    let upstream = config.upstreams.iter().position(|u| u.speaks(format))?;
    let (policy, sources) = config.layers.unowned(Family::Chat, Scenario::Content);
    Some(ModelRoute {
        name: String::new(),
        family: Family::Chat,
        scenario: Scenario::Content,
        targets: vec![Target {
            upstream,
            model: String::new(),
            tier: 0,
            weight: 1,
        }],
        fallbacks: Vec::new(),
        balance: crate::Balance::Ordered,
        hedge: crate::Hedge::Off,
        policy,
        sources,
        configured: false,
    })
}

pub(crate) fn wildcard_route(config: &Config, model: &str) -> Option<ModelRoute> {
    if model.is_empty() || model.len() > 256 {
        return None;
    }
    implicit_route(config, model)
}

fn resolve(
    layers: &Layers,
    family: Family,
    scenario: Scenario,
    own: Option<(&str, &PolicyPatch)>,
) -> (crate::Policy, Vec<crate::Sourced>) {
    let family_key = format!("families.{}", family.name());
    let scenario_key = format!("scenarios.{}", scenario.name());
    let mut stack = vec![Layer {
        source: "defaults",
        patch: &layers.defaults,
    }];
    if let Some(patch) = layers.families.get(&family) {
        stack.push(Layer {
            source: &family_key,
            patch,
        });
    }
    if let Some(patch) = layers.scenarios.get(&scenario) {
        stack.push(Layer {
            source: &scenario_key,
            patch,
        });
    }
    if let Some((source, patch)) = own {
        stack.push(Layer { source, patch });
    }
    let prior_source = format!("built-in {} × {}", family.name(), scenario.name());
    policy::resolve(policy::prior(family, scenario), &prior_source, &stack)
}

fn plain_config(origin: &str, upstreams: Vec<Upstream>) -> Config {
    Config {
        origin: origin.to_owned(),
        server: server(
            &Check {
                origin,
                dir: std::path::Path::new(""),
            },
            &RawConfig::default(),
            &|_| None,
        )
        .expect("the default server settings are valid"),
        retry_budget: RetryBudget {
            ratio: 0.2,
            min_per_s: 5.0,
        },
        breaker: crate::BreakerConfig::default(),
        health_check: crate::HealthCheckConfig::default(),
        jobs: crate::JobsSettings::default(),
        cluster: crate::ClusterSettings::default(),
        client_limits: crate::ClientLimits::default(),
        upstreams,
        models: Vec::new(),
        layers: Layers::default(),
    }
}

pub(crate) fn from_env(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Config>, ConfigError> {
    let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let mut upstreams = Vec::new();
    let mut origins = Vec::new();
    let key = set("OPENAI_API_KEY");
    let base = set("OPENAI_BASE_URL");
    if key.is_some() || base.is_some() {
        let base_url = match base.as_deref() {
            None => http::Uri::from_static("https://api.openai.com/v1"),
            Some(text) => parse_base_url(text.trim()).map_err(|message| ConfigError::Invalid {
                origin: "the environment".to_owned(),
                key: "OPENAI_BASE_URL".to_owned(),
                message,
            })?,
        };
        upstreams.push(from_env_key(
            "openai",
            base_url,
            WireFormat::OpenAi,
            key,
            "$OPENAI_API_KEY",
        )?);
        origins.push("OPENAI_API_KEY / OPENAI_BASE_URL");
    }
    // Only the key: ANTHROPIC_BASE_URL is what points Claude Code at this gateway, so reading it
    // would make the gateway call itself.
    if let Some(key) = set("ANTHROPIC_API_KEY") {
        let base_url = http::Uri::from_static("https://api.anthropic.com/v1");
        upstreams.push(from_env_key(
            "anthropic",
            base_url,
            WireFormat::Anthropic,
            Some(key),
            "$ANTHROPIC_API_KEY",
        )?);
        origins.push("ANTHROPIC_API_KEY");
    }
    if upstreams.is_empty() {
        return Ok(None);
    }
    Ok(Some(plain_config(
        &format!("zero configuration ({})", origins.join("; ")),
        upstreams,
    )))
}

/// `key` (read from `from`: `$VAR` or `file PATH`) as the value of `header`, built once at load;
/// an error at `at()` (origin, key path) when no header can carry it, which never shows the key.
fn key_value(
    header: KeyHeader,
    key: Option<&Secret>,
    from: &str,
    at: impl FnOnce() -> (String, String),
) -> Result<Option<http::HeaderValue>, ConfigError> {
    let Some(key) = key else {
        return Ok(None);
    };
    let value = header.value_for(key.expose()).ok_or_else(|| {
        let (origin, key) = at();
        ConfigError::Invalid {
            origin,
            key,
            message: format!(
                "the key read from {from} holds a character no HTTP header can carry (a control character, such as a line break inside it); every call would fail, so fix the key (it is not shown here)"
            ),
        }
    })?;
    Ok(Some(value))
}

/// An upstream of the zero configuration, serving every model in `format`; fails when the key
/// (read from `from`) cannot be sent in a header.
fn from_env_key(
    name: &str,
    base_url: http::Uri,
    format: WireFormat,
    key: Option<String>,
    from: &str,
) -> Result<Upstream, ConfigError> {
    let api_key = key.map(|k| Secret::new(k.trim().to_owned()));
    let key_value = key_value(format.key_header(), api_key.as_ref(), from, || {
        let variable = from.trim_start_matches('$').to_owned();
        ("the environment".to_owned(), variable)
    })?;
    Ok(Upstream {
        name: name.to_owned(),
        base_url,
        api_key_from: api_key.as_ref().map(|_| from.to_owned()),
        api_key,
        key_header: format.key_header(),
        key_value,
        protocols: vec![format],
        headers: Vec::new(),
        models: Served::Any,
        http: HttpVersion::Auto,
        http2_max_streams: DEFAULT_HTTP2_MAX_STREAMS,
    })
}

pub(crate) fn single_upstream(name: &str, base_url: &str) -> Config {
    let upstream = Upstream {
        name: name.to_owned(),
        base_url: parse_base_url(base_url)
            .unwrap_or_else(|_| http::Uri::from_static("http://127.0.0.1/v1")),
        api_key: None,
        // The embedded simulator speaks both.
        key_header: KeyHeader::Authorization,
        key_value: None,
        protocols: WireFormat::ALL.to_vec(),
        api_key_from: None,
        headers: Vec::new(),
        models: Served::Any,
        http: HttpVersion::Auto,
        http2_max_streams: DEFAULT_HTTP2_MAX_STREAMS,
    };
    plain_config(
        &format!("zero configuration (upstream `{name}`)"),
        vec![upstream],
    )
}
