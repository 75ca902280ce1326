//! The `[cluster]` table: several gateways acting as one — the instance's name, the PostgreSQL
//! database that keeps background jobs for every replica, the Redis server through which they
//! share cool-downs and client limits (both URLs from secrets), and the lease by which a replica
//! holds the jobs it runs. Without it a gateway is one instance with its embedded store, as
//! before. Also `[client_limits]`: requests, tokens and calls at once per client key.

use std::time::Duration;

use serde::Deserialize;

use crate::Secret;
use crate::policy::Positive;
use crate::secrets::Source;

/// The settings of a gateway that is one of several (`[cluster]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSettings {
    /// This instance's name, in logs, `/status` and the jobs it holds (`cluster.instance`);
    /// `None`: the host's name.
    pub instance: Option<String>,
    /// The PostgreSQL URL that keeps background jobs (`cluster.postgres_url_env` / `_file`);
    /// `None`: the embedded store.
    pub postgres_url: Option<Secret>,
    /// The Redis URL through which replicas share cool-downs and client limits
    /// (`cluster.redis_url_env` / `_file`); `None`: each instance keeps them to itself.
    pub redis_url: Option<Secret>,
    /// Connections to PostgreSQL at most (`cluster.postgres_pool`).
    pub postgres_pool: usize,
    /// How long a replica holds a job it runs without renewing it (`cluster.job_lease`); a
    /// replica that dies lets go of its jobs after this long, and another takes them.
    pub job_lease: Duration,
    /// How long a starting replica waits for its stores before it runs without them
    /// (`cluster.wait_for_stores`): it is not ready meanwhile.
    pub wait_for_stores: Duration,
}

impl Default for ClusterSettings {
    fn default() -> ClusterSettings {
        ClusterSettings {
            instance: None,
            postgres_url: None,
            redis_url: None,
            postgres_pool: 8,
            job_lease: Duration::from_secs(15),
            wait_for_stores: Duration::from_secs(30),
        }
    }
}

impl ClusterSettings {
    /// Whether this gateway shares anything with others.
    pub fn is_shared(&self) -> bool {
        self.postgres_url.is_some() || self.redis_url.is_some()
    }
}

/// `[cluster]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub instance: Option<String>,
    pub postgres_url_env: Option<String>,
    pub postgres_url_file: Option<String>,
    pub redis_url_env: Option<String>,
    pub redis_url_file: Option<String>,
    pub postgres_pool: Option<usize>,
    pub job_lease: Option<Positive>,
    pub wait_for_stores: Option<Positive>,
}

/// A failed check: the key path and what was wrong.
type Fault = (String, String);

/// Checks `[cluster]`; `secret` reads a secret from its source.
pub(crate) fn validate(
    raw: RawCluster,
    secret: &dyn Fn(Source<'_>) -> Result<Option<String>, Fault>,
) -> Result<ClusterSettings, Fault> {
    let defaults = ClusterSettings::default();
    let fault = |key: &str, message: String| (format!("cluster.{key}"), message);
    if let Some(name) = &raw.instance
        && (name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(fault(
            "instance",
            "must be 1 to 64 letters, digits, `-`, `_` or `.`".to_owned(),
        ));
    }
    let postgres_url = secret(Source {
        key: "cluster.postgres_url",
        env_var: raw.postgres_url_env.as_deref(),
        file: raw.postgres_url_file.as_deref(),
        without: "to keep jobs in the embedded store",
    })?;
    if let Some(url) = &postgres_url
        && !is_postgres_url(url)
    {
        let key = if raw.postgres_url_env.is_some() {
            "postgres_url_env"
        } else {
            "postgres_url_file"
        };
        // The value may hold a password: it is not repeated.
        return Err(fault(
            key,
            "does not hold a PostgreSQL URL (postgres://user@host:port/database) or key=value settings (host=… dbname=…)".to_owned(),
        ));
    }
    let redis_url = secret(Source {
        key: "cluster.redis_url",
        env_var: raw.redis_url_env.as_deref(),
        file: raw.redis_url_file.as_deref(),
        without: "to keep cool-downs and client limits to this instance",
    })?;
    if let Some(url) = &redis_url
        && !(url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("redis+unix://")
            || url.starts_with("unix://"))
    {
        let key = if raw.redis_url_env.is_some() {
            "redis_url_env"
        } else {
            "redis_url_file"
        };
        return Err(fault(
            key,
            "does not hold a Redis URL (redis://[:password@]host:port/db, or rediss:// for TLS)"
                .to_owned(),
        ));
    }
    let postgres_pool = match raw.postgres_pool {
        None => defaults.postgres_pool,
        Some(n @ 1..=256) => n,
        Some(_) => return Err(fault("postgres_pool", "must be 1 to 256".to_owned())),
    };
    let job_lease = raw.job_lease.map_or(defaults.job_lease, |p| p.0);
    if job_lease < Duration::from_millis(500) {
        return Err(fault(
            "job_lease",
            "must be at least 500ms (the lease is renewed every third of it)".to_owned(),
        ));
    }
    Ok(ClusterSettings {
        instance: raw.instance,
        postgres_url: postgres_url.map(Secret::new),
        redis_url: redis_url.map(Secret::new),
        postgres_pool,
        job_lease,
        wait_for_stores: raw
            .wait_for_stores
            .map_or(defaults.wait_for_stores, |p| p.0),
    })
}

/// Whether `text` reads as a PostgreSQL connection string: a URL, or libpq's key=value form.
fn is_postgres_url(text: &str) -> bool {
    text.starts_with("postgres://")
        || text.starts_with("postgresql://")
        || text
            .split_whitespace()
            .next()
            .is_some_and(|pair| pair.contains('=') && !pair.contains("://"))
}

/// Limits per client key (`[client_limits]`): in memory on one instance, across replicas through
/// Redis. `None` in a field: no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientLimits {
    /// Requests a key may start per minute (`client_limits.requests_per_minute`).
    pub requests_per_minute: Option<u64>,
    /// Tokens (the answers' `usage.total_tokens`) a key may use per minute
    /// (`client_limits.tokens_per_minute`).
    pub tokens_per_minute: Option<u64>,
    /// Calls a key may have running at once (`client_limits.concurrent`).
    pub concurrent: Option<u64>,
}

impl ClientLimits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.requests_per_minute.is_some()
            || self.tokens_per_minute.is_some()
            || self.concurrent.is_some()
    }
}

/// `[client_limits]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClientLimits {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub concurrent: Option<u64>,
}

/// Checks `[client_limits]`: every limit given is at least 1.
pub(crate) fn client_limits(raw: RawClientLimits) -> Result<ClientLimits, Fault> {
    for (key, value) in [
        ("requests_per_minute", raw.requests_per_minute),
        ("tokens_per_minute", raw.tokens_per_minute),
        ("concurrent", raw.concurrent),
    ] {
        if value == Some(0) {
            return Err((
                format!("client_limits.{key}"),
                "must be at least 1 (leave it out for no limit)".to_owned(),
            ));
        }
    }
    Ok(ClientLimits {
        requests_per_minute: raw.requests_per_minute,
        tokens_per_minute: raw.tokens_per_minute,
        concurrent: raw.concurrent,
    })
}
