//! The link to Redis: one multiplexed connection made when first needed and again after a
//! failure (at most one try every half second), with tight timeouts — a command that takes more
//! than 500 ms counts as a failure. Whether Redis answered its last use is kept for `/status`,
//! `/metrics` and readiness, and each change is logged once. The URL is a secret: only
//! `host:port/db` is ever shown.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::time::Instant;

/// The longest a command may take.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// The longest connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The pause between tries to connect.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// A link to one Redis server.
pub struct Link {
    client: redis::Client,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    next_try: Mutex<Option<Instant>>,
    up: AtomicBool,
    answered: AtomicBool,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
    where_: String,
}

impl Link {
    /// A link to the server `url` names (nothing is connected yet). The error never repeats the
    /// URL.
    pub fn open(url: &str) -> Result<Link, String> {
        let client = redis::Client::open(url)
            .map_err(|e| format!("cluster.redis_url does not parse: {}", e))?;
        Ok(Link {
            client,
            connection: tokio::sync::Mutex::new(None),
            next_try: Mutex::new(None),
            up: AtomicBool::new(false),
            answered: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
            where_: describe(url),
        })
    }

    /// Where it goes: `host:port/db`, never a password.
    pub fn describe(&self) -> &str {
        &self.where_
    }

    /// Whether Redis answered its last use.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Whether Redis has answered at least once since start.
    pub fn answered_once(&self) -> bool {
        self.answered.load(Ordering::Relaxed)
    }

    /// Failed uses since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The last failure, if any.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    /// The client, for a connection of its own (subscriptions).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The shared connection, made now if there is none (unless a try failed less than half a
    /// second ago).
    pub async fn connection(&self) -> Result<MultiplexedConnection, String> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        if let Some(at) = *lock(&self.next_try)
            && Instant::now() < at
        {
            return Err(self
                .last_error()
                .unwrap_or_else(|| "not connected".to_owned()));
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let connecting = self
            .client
            .get_multiplexed_async_connection_with_config(&config);
        match tokio::time::timeout(CONNECT_TIMEOUT * 2, connecting).await {
            Ok(Ok(connection)) => {
                *slot = Some(connection.clone());
                Ok(connection)
            }
            Ok(Err(error)) => {
                *lock(&self.next_try) = Some(Instant::now() + RETRY_PAUSE);
                Err(self.failed_now(&error.to_string()))
            }
            Err(_) => {
                *lock(&self.next_try) = Some(Instant::now() + RETRY_PAUSE);
                Err(self.failed_now("no connection within 2 s"))
            }
        }
    }

    /// Runs `pipe` and reads its answers as `T`; a failure drops the connection.
    pub async fn run<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, String> {
        let mut connection = self.connection().await?;
        match tokio::time::timeout(RESPONSE_TIMEOUT, pipe.query_async(&mut connection)).await {
            Ok(Ok(value)) => {
                self.succeeded();
                Ok(value)
            }
            Ok(Err(error)) => Err(self.failed(&error.to_string()).await),
            Err(_) => Err(self.failed("no answer within 500 ms").await),
        }
    }

    /// Records a use that worked.
    pub fn succeeded(&self) {
        self.answered.store(true, Ordering::Relaxed);
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!(target: "hourglass::cluster", redis = %self.where_, "Redis answers: cool-downs and client limits are shared");
        }
    }

    /// Records a failure and drops the connection; the error's text.
    pub async fn failed(&self, error: &str) -> String {
        *self.connection.lock().await = None;
        self.failed_now(error)
    }

    fn failed_now(&self, error: &str) -> String {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let message = format!("Redis at {}: {error}", self.where_);
        if self.up.swap(false, Ordering::Relaxed) || lock(&self.last_error).is_none() {
            tracing::warn!(target: "hourglass::cluster", redis = %self.where_, %error, "Redis does not answer: calls go on with this replica's own cool-downs and limits");
        }
        *lock(&self.last_error) = Some(message.clone());
        message
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `host:port/db` of a Redis URL, without its user and password.
pub fn describe(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    if rest.is_empty() {
        "localhost:6379".to_owned()
    } else {
        rest.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_without_its_password() {
        assert_eq!(describe("redis://:s3cret@cache:6380/2"), "cache:6380/2");
        assert_eq!(describe("rediss://user:s3cret@cache/0?x=1"), "cache/0");
        assert_eq!(describe("redis://127.0.0.1:6379"), "127.0.0.1:6379");
        let error = Link::open("redis://:s3cret@[::1").err().unwrap_or_default();
        assert!(!error.contains("s3cret"), "{error}");
    }
}
