//! Client limits (`[client_limits]`), per client key: requests started and tokens used per
//! minute, by a sliding window (the previous minute's count weighted by how much of it still
//! falls in the last sixty seconds, plus this minute's), and calls running at once. A call is
//! admitted or refused from memory, never waiting on anything; tokens are counted when its
//! answer ends (its `usage.total_tokens`), so a key past its tokens is refused from its next call.
//!
//! Across replicas (with Redis), each replica adds what it counted to per-minute keys every
//! 100 ms and reads back the totals, so its next decisions count every replica's calls; between
//! two syncs a key can go past its limit by what other replicas admit in 100 ms. When Redis is
//! away, what other replicas counted is forgotten after 5 s and each replica enforces the limits
//! on its own share of the traffic alone: failing open, never refusing for a store's sake.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hourglass_config::ClientLimits;

use crate::link::Link;

/// How often counts go to Redis and come back.
pub const SYNC_EVERY: Duration = Duration::from_millis(100);
/// How long other replicas' counts are trusted without a sync.
const OTHERS_FRESH_MS: u64 = 5_000;
/// Keys not used for this long are forgotten.
const IDLE_MS: u64 = 180_000;
/// Keys counted at most (each is a client key's fingerprint); past it the idlest go.
const MAX_KEYS: usize = 100_000;
/// The prefix of the Redis keys that hold counts.
pub const KEY_PREFIX: &str = "hourglass:limit:";

/// Wall-clock milliseconds (windows are minutes of the wall clock, shared by replicas).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system's wall clock, in Unix milliseconds.
pub fn wall_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    })
}

/// A minute's counts and the one before.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Window {
    minute: u64,
    previous: u64,
    current: u64,
}

impl Window {
    fn roll(&mut self, minute: u64) {
        if minute == self.minute {
            return;
        }
        self.previous = if minute == self.minute + 1 {
            self.current
        } else {
            0
        };
        self.current = 0;
        self.minute = minute;
    }
}

/// One key's counts.
#[derive(Debug, Default)]
struct KeyState {
    requests: Window,
    tokens: Window,
    in_flight: u64,
    /// Counted here and not yet added to Redis.
    unsynced_requests: u64,
    unsynced_tokens: u64,
    /// What the other replicas counted, as of `others_at`.
    others_requests: Window,
    others_tokens: Window,
    others_in_flight: u64,
    others_at: u64,
    used_at: u64,
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// Which limit: `requests_per_minute`, `tokens_per_minute` or `concurrent`.
    pub limit: &'static str,
    /// When the key may come back.
    pub retry_after: Duration,
    /// What was counted, against which limit.
    pub message: String,
}

/// Counts for `/status` and `/metrics`.
#[derive(Debug, Default)]
pub struct Counts {
    /// Calls refused, by limit: requests, tokens, concurrent.
    pub refused: [AtomicU64; 3],
    /// Syncs with Redis that failed.
    pub sync_failures: AtomicU64,
}

/// The limit names, in the order of [`Counts::refused`].
pub const LIMITS: [&str; 3] = ["requests_per_minute", "tokens_per_minute", "concurrent"];

struct Inner {
    keys: Mutex<HashMap<String, KeyState>>,
    clock: Clock,
    counts: Counts,
}

/// The client limits' counters.
pub struct Limits {
    inner: Arc<Inner>,
    sync: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Limits {
    fn drop(&mut self) {
        if let Some(sync) = &self.sync {
            sync.abort();
        }
    }
}

/// A call admitted: it counts as running until dropped; its tokens are added then.
pub struct Permit {
    inner: Arc<Inner>,
    key: String,
    tokens: AtomicU64,
}

impl Permit {
    /// Records the tokens the call used (the last `usage.total_tokens` seen wins).
    pub fn used(&self, tokens: u64) {
        self.tokens.store(tokens, Ordering::Relaxed);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let now = (self.inner.clock)();
        let tokens = self.tokens.load(Ordering::Relaxed);
        let mut keys = lock(&self.inner.keys);
        if let Some(state) = keys.get_mut(&self.key) {
            state.in_flight = state.in_flight.saturating_sub(1);
            if tokens > 0 {
                state.tokens.roll(now / 60_000);
                state.tokens.current += tokens;
                state.unsynced_tokens += tokens;
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The sliding estimate of the last sixty seconds at `fraction` of the current minute.
fn estimate(previous: u64, current: u64, fraction: f64) -> f64 {
    previous as f64 * (1.0 - fraction) + current as f64
}

/// How long until the estimate is at most `room` (what a new call may find), at `fraction` of
/// the minute: first the previous minute's share fades, then this minute's becomes the
/// previous. At least a second, at most a minute.
fn wait_for(previous: u64, current: u64, room: f64, fraction: f64) -> Duration {
    let room = room.max(0.0);
    let seconds = if (current as f64) <= room && previous > 0 {
        // previous·(1 − f') + current ≤ room  ⇔  f' ≥ 1 − (room − current)/previous
        let f = 1.0 - (room - current as f64) / previous as f64;
        (f - fraction) * 60.0
    } else if current > 0 {
        // After the minute turns: current·(1 − f'') ≤ room.
        let f = (1.0 - room / current as f64).max(0.0);
        (1.0 - fraction + f) * 60.0
    } else {
        0.0
    };
    Duration::from_secs_f64(seconds.ceil().clamp(1.0, 60.0))
}

impl Limits {
    /// Counters kept in this process alone.
    pub fn local(clock: Clock) -> Limits {
        Limits {
            inner: Arc::new(Inner {
                keys: Mutex::new(HashMap::new()),
                clock,
                counts: Counts::default(),
            }),
            sync: None,
        }
    }

    /// Counters shared with other replicas through `link`, as `holder`.
    pub fn shared(clock: Clock, link: Arc<Link>, holder: String) -> Limits {
        let mut limits = Limits::local(clock);
        limits.sync = Some(tokio::spawn(sync(limits.inner.clone(), link, holder)));
        limits
    }

    /// Its counts.
    pub fn counts(&self) -> &Counts {
        &self.inner.counts
    }

    /// Keys counted now.
    pub fn keys(&self) -> usize {
        lock(&self.inner.keys).len()
    }

    /// Admits a call of the client key whose fingerprint is `key` under `limits`, or says why
    /// not.
    pub fn admit(&self, key: &str, limits: &ClientLimits) -> Result<Permit, Refused> {
        let now = (self.inner.clock)();
        let (minute, fraction) = (now / 60_000, (now % 60_000) as f64 / 60_000.0);
        let mut keys = lock(&self.inner.keys);
        if keys.len() >= MAX_KEYS && !keys.contains_key(key) {
            forget_idle(&mut keys, now);
        }
        let state = keys.entry(key.to_owned()).or_default();
        state.used_at = now;
        state.requests.roll(minute);
        state.tokens.roll(minute);
        let fresh = now.saturating_sub(state.others_at) < OTHERS_FRESH_MS;
        let mut others_requests = if fresh {
            state.others_requests
        } else {
            Window::default()
        };
        let mut others_tokens = if fresh {
            state.others_tokens
        } else {
            Window::default()
        };
        others_requests.roll(minute);
        others_tokens.roll(minute);
        let others_in_flight = if fresh { state.others_in_flight } else { 0 };
        let refuse = |which: usize, retry_after: Duration, message: String| {
            self.inner.counts.refused[which].fetch_add(1, Ordering::Relaxed);
            Err(Refused {
                limit: LIMITS[which],
                retry_after,
                message,
            })
        };
        if let Some(limit) = limits.concurrent {
            let running = state.in_flight + others_in_flight;
            if running >= limit {
                return refuse(
                    2,
                    Duration::from_secs(1),
                    format!(
                        "this key has {running} calls running (client_limits.concurrent = {limit}); retry when one ends"
                    ),
                );
            }
        }
        if let Some(limit) = limits.requests_per_minute {
            let previous = state.requests.previous + others_requests.previous;
            let current = state.requests.current + others_requests.current;
            let started = estimate(previous, current, fraction);
            if started + 1.0 > limit as f64 {
                let wait = wait_for(previous, current, limit as f64 - 1.0, fraction);
                return refuse(
                    0,
                    wait,
                    format!(
                        "this key started {} requests in the last minute (client_limits.requests_per_minute = {limit})",
                        started.round()
                    ),
                );
            }
        }
        if let Some(limit) = limits.tokens_per_minute {
            let previous = state.tokens.previous + others_tokens.previous;
            let current = state.tokens.current + others_tokens.current;
            let used = estimate(previous, current, fraction);
            if used >= limit as f64 {
                let wait = wait_for(previous, current, limit as f64 - 1.0, fraction);
                return refuse(
                    1,
                    wait,
                    format!(
                        "this key used {} tokens in the last minute (client_limits.tokens_per_minute = {limit})",
                        used.round()
                    ),
                );
            }
        }
        state.requests.current += 1;
        state.unsynced_requests += 1;
        state.in_flight += 1;
        Ok(Permit {
            inner: self.inner.clone(),
            key: key.to_owned(),
            tokens: AtomicU64::new(0),
        })
    }
}

/// Drops keys idle for [`IDLE_MS`], or the idlest tenth when none is.
fn forget_idle(keys: &mut HashMap<String, KeyState>, now: u64) {
    keys.retain(|_, s| s.in_flight > 0 || now.saturating_sub(s.used_at) < IDLE_MS);
    if keys.len() >= MAX_KEYS {
        let mut ages: Vec<u64> = keys.values().map(|s| s.used_at).collect();
        ages.sort_unstable();
        let cut = ages[ages.len() / 10];
        keys.retain(|_, s| s.in_flight > 0 || s.used_at > cut);
    }
}

/// What one key sends to Redis in a sync.
struct Outgoing {
    key: String,
    minute: u64,
    requests: u64,
    tokens: u64,
    in_flight: u64,
}

/// Every [`SYNC_EVERY`]: adds each active key's new counts to Redis and reads back every
/// replica's totals.
async fn sync(inner: Arc<Inner>, link: Arc<Link>, holder: String) {
    loop {
        tokio::time::sleep(SYNC_EVERY).await;
        let now = (inner.clock)();
        let minute = now / 60_000;
        let outgoing: Vec<Outgoing> = {
            let mut keys = lock(&inner.keys);
            keys.retain(|_, s| s.in_flight > 0 || now.saturating_sub(s.used_at) < IDLE_MS);
            keys.iter_mut()
                .filter(|(_, s)| now.saturating_sub(s.used_at) < 60_000 || s.in_flight > 0)
                .map(|(key, s)| {
                    s.requests.roll(minute);
                    s.tokens.roll(minute);
                    Outgoing {
                        key: key.clone(),
                        minute,
                        requests: std::mem::take(&mut s.unsynced_requests),
                        tokens: std::mem::take(&mut s.unsynced_tokens),
                        in_flight: s.in_flight,
                    }
                })
                .collect()
        };
        if outgoing.is_empty() {
            continue;
        }
        let mut pipe = redis::pipe();
        for out in &outgoing {
            let base = format!("{KEY_PREFIX}{}", out.key);
            let (requests, tokens) = (
                format!("{base}:{}:r", out.minute),
                format!("{base}:{}:t", out.minute),
            );
            let running = format!("{base}:running");
            pipe.cmd("INCRBY").arg(&requests).arg(out.requests);
            pipe.cmd("PEXPIRE").arg(&requests).arg(150_000).ignore();
            pipe.cmd("INCRBY").arg(&tokens).arg(out.tokens);
            pipe.cmd("PEXPIRE").arg(&tokens).arg(150_000).ignore();
            pipe.cmd("GET")
                .arg(format!("{base}:{}:r", out.minute.saturating_sub(1)));
            pipe.cmd("GET")
                .arg(format!("{base}:{}:t", out.minute.saturating_sub(1)));
            pipe.cmd("HSET")
                .arg(&running)
                .arg(&holder)
                .arg(format!("{}:{now}", out.in_flight))
                .ignore();
            pipe.cmd("PEXPIRE").arg(&running).arg(60_000).ignore();
            pipe.cmd("HGETALL").arg(&running);
        }
        match link.run::<Vec<redis::Value>>(&pipe).await {
            Ok(values) => settle(&inner, &holder, &outgoing, &values, now),
            Err(_) => {
                inner.counts.sync_failures.fetch_add(1, Ordering::Relaxed);
                // Not lost: added again to the next sync.
                let mut keys = lock(&inner.keys);
                for out in outgoing {
                    if let Some(s) = keys.get_mut(&out.key)
                        && s.requests.minute == out.minute
                    {
                        s.unsynced_requests += out.requests;
                        s.unsynced_tokens += out.tokens;
                    }
                }
            }
        }
    }
}

/// Takes every replica's totals from a sync's answers (five per key).
fn settle(inner: &Inner, holder: &str, outgoing: &[Outgoing], values: &[redis::Value], now: u64) {
    let mut keys = lock(&inner.keys);
    for (out, answers) in outgoing.iter().zip(values.chunks(5)) {
        let [
            requests,
            tokens,
            previous_requests,
            previous_tokens,
            running,
        ] = answers
        else {
            continue;
        };
        let number = |v: &redis::Value| -> u64 {
            redis::from_redis_value_ref::<Option<u64>>(v)
                .ok()
                .flatten()
                .unwrap_or(0)
        };
        let running: HashMap<String, String> =
            redis::from_redis_value_ref(running).unwrap_or_default();
        let others_in_flight: u64 = running
            .iter()
            .filter(|(who, _)| who.as_str() != holder)
            .filter_map(|(_, value)| {
                let (count, at) = value.split_once(':')?;
                let at: u64 = at.parse().ok()?;
                (now.saturating_sub(at) < OTHERS_FRESH_MS).then(|| count.parse::<u64>().ok())?
            })
            .sum();
        let Some(state) = keys.get_mut(&out.key) else {
            continue;
        };
        if state.requests.minute != out.minute {
            continue;
        }
        // What this replica had added to Redis: all it counted but what came since.
        let synced_requests =
            state.requests.current - state.unsynced_requests.min(state.requests.current);
        let synced_tokens = state.tokens.current - state.unsynced_tokens.min(state.tokens.current);
        state.others_requests = Window {
            minute: out.minute,
            previous: number(previous_requests).saturating_sub(state.requests.previous),
            current: number(requests).saturating_sub(synced_requests),
        };
        state.others_tokens = Window {
            minute: out.minute,
            previous: number(previous_tokens).saturating_sub(state.tokens.previous),
            current: number(tokens).saturating_sub(synced_tokens),
        };
        state.others_in_flight = others_in_flight;
        state.others_at = now;
    }
}

/// The last `"total_tokens": N` in `bytes` (an answer's usage, whole or in a stream's last
/// events), if any.
pub fn total_tokens(bytes: &[u8]) -> Option<u64> {
    let needle = b"\"total_tokens\"";
    let at = memchr::memmem::rfind(bytes, needle)?;
    let rest = &bytes[at + needle.len()..];
    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
    let rest = rest.strip_prefix(b":")?;
    let digits: Vec<u8> = rest
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: Arc<AtomicU64>) -> Limits {
        Limits::local(Arc::new(move || ms.load(Ordering::Relaxed)))
    }

    #[test]
    fn requests_per_minute_slide_and_say_when_to_come_back() {
        let now = Arc::new(AtomicU64::new(10 * 60_000));
        let limits = at(now.clone());
        let rule = ClientLimits {
            requests_per_minute: Some(10),
            ..ClientLimits::default()
        };
        let permits: Vec<Permit> = (0..10).map(|_| limits.admit("k", &rule).unwrap()).collect();
        drop(permits);
        let refused = limits.admit("k", &rule).err().unwrap();
        assert_eq!(refused.limit, "requests_per_minute");
        assert!(
            refused.message.contains("started 10 requests"),
            "{}",
            refused.message
        );
        assert_eq!(
            refused.retry_after,
            Duration::from_secs(60),
            "all ten were this minute"
        );
        assert!(limits.admit("other", &rule).is_ok(), "per key");
        // Half-way through the next minute, half of the ten still count: five may start.
        now.store(11 * 60_000 + 30_000, Ordering::Relaxed);
        for _ in 0..5 {
            drop(limits.admit("k", &rule).unwrap());
        }
        let refused = limits.admit("k", &rule).err().unwrap();
        assert!(
            refused.retry_after <= Duration::from_secs(30),
            "{refused:?}"
        );
        now.store(13 * 60_000, Ordering::Relaxed);
        assert!(
            limits.admit("k", &rule).is_ok(),
            "two minutes on, nothing counts"
        );
        assert_eq!(limits.counts().refused[0].load(Ordering::Relaxed), 2);
    }

    #[test]
    fn calls_at_once_and_tokens_are_counted_when_calls_end() {
        let now = Arc::new(AtomicU64::new(60_000));
        let limits = at(now.clone());
        let rule = ClientLimits {
            concurrent: Some(2),
            tokens_per_minute: Some(100),
            ..ClientLimits::default()
        };
        let a = limits.admit("k", &rule).unwrap();
        let b = limits.admit("k", &rule).unwrap();
        let refused = limits.admit("k", &rule).err().unwrap();
        assert_eq!(refused.limit, "concurrent");
        a.used(60);
        drop(a);
        b.used(50);
        drop(b);
        let refused = limits.admit("k", &rule).err().unwrap();
        assert_eq!(refused.limit, "tokens_per_minute");
        assert!(
            refused.message.contains("used 110 tokens"),
            "{}",
            refused.message
        );
        now.store(3 * 60_000, Ordering::Relaxed);
        assert!(limits.admit("k", &rule).is_ok());
    }

    #[test]
    fn no_limit_set_admits_everything() {
        let limits = at(Arc::new(AtomicU64::new(0)));
        for _ in 0..10_000 {
            drop(limits.admit("k", &ClientLimits::default()).unwrap());
        }
    }

    #[test]
    fn the_usage_of_an_answer_is_found_whole_or_streamed() {
        assert_eq!(
            total_tokens(br#"{"usage":{"prompt_tokens":3,"total_tokens":17}}"#),
            Some(17)
        );
        assert_eq!(
            total_tokens(b"data: {\"usage\": {\"total_tokens\": 42}}\n\ndata: [DONE]\n\n"),
            Some(42)
        );
        assert_eq!(total_tokens(b"data: {\"choices\":[]}\n\n"), None);
        assert_eq!(total_tokens(b"\"total_tokens\":"), None);
    }

    #[test]
    fn the_wait_is_between_a_second_and_a_minute() {
        assert_eq!(wait_for(0, 10, 9.0, 0.0), Duration::from_secs(60));
        assert_eq!(wait_for(10, 0, 9.0, 0.5), Duration::from_secs(1));
        assert_eq!(wait_for(10, 4, 9.0, 0.5), Duration::from_secs(1));
        assert_eq!(wait_for(10, 0, 4.0, 0.0), Duration::from_secs(36));
    }
}
