//! Cool-downs: hard facts about an upstream that hold for a while and that every call — and,
//! with a shared store, every replica — should respect at once: a 429 or 503 with `Retry-After`
//! (that upstream and model, for that long), a 401/403 for the upstream's own key (the whole
//! upstream), an upstream found down by active checks (the whole upstream, until a check finds it
//! up). A target cooling down is ranked like an ejected one: last, and tried anyway when every
//! target is (panic mode). Learned here, they go to a sink (the gateway's shared state) and
//! come back from other replicas through [`super::Health::cool`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// The longest cool-down kept, whatever an upstream asks.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(600);

/// How long a rejected key keeps an upstream off (a 401/403 has no `Retry-After`).
pub const KEY_REJECTED_FOR: Duration = Duration::from_secs(30);

/// Why a target cools down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A 429 with `Retry-After`.
    RateLimited,
    /// A 503 (or 529) with `Retry-After`.
    Overloaded,
    /// A 401 or 403 for the upstream's own key.
    KeyRejected,
    /// Active checks found the upstream down.
    Down,
}

impl Reason {
    /// Its documented name.
    pub fn name(self) -> &'static str {
        match self {
            Reason::RateLimited => "rate_limited",
            Reason::Overloaded => "overloaded",
            Reason::KeyRejected => "key_rejected",
            Reason::Down => "down",
        }
    }
}

/// One cool-down, as learned and as shared: relative, so replicas' clocks need not agree.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cooldown {
    /// The upstream's name.
    pub upstream: String,
    /// The model sent upstream; `None`: every model of the upstream.
    pub model: Option<String>,
    /// For how long from now (zero lifts it).
    pub remaining_ms: u64,
    /// Why.
    pub reason: Reason,
}

/// Where learned cool-downs go (the gateway's shared state); it must not block.
pub type Sink = Arc<dyn Fn(&Cooldown) + Send + Sync>;

/// One upstream's cool-downs, by model (`None`: all of them).
#[derive(Default, Debug)]
pub(super) struct Table {
    /// Whether any is set: read on every call without the lock.
    any: AtomicBool,
    until: Mutex<HashMap<Option<String>, (Instant, Reason)>>,
}

impl Table {
    /// Sets (or, with zero, lifts) a cool-down; a shorter one never shortens a longer one of the
    /// same scope, except a lift.
    pub fn set(&self, model: Option<&str>, remaining: Duration, reason: Reason, now: Instant) {
        let mut until = super::lock(&self.until);
        let key = model.map(str::to_owned);
        if remaining.is_zero() {
            until.remove(&key);
        } else {
            let end = now + remaining.min(MAX_COOLDOWN);
            let entry = until.entry(key).or_insert((end, reason));
            if entry.0 < end {
                *entry = (end, reason);
            }
        }
        self.any.store(!until.is_empty(), Ordering::Release);
    }

    /// Whether `model` is cooling down now.
    pub fn cooling(&self, model: &str, now: Instant) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let mut until = super::lock(&self.until);
        until.retain(|_, (end, _)| *end > now);
        self.any.store(!until.is_empty(), Ordering::Release);
        until.contains_key(&None) || until.contains_key(&Some(model.to_owned()))
    }

    /// The cool-downs in force, for `/status`: `(model, remaining, reason)`.
    pub fn active(&self, now: Instant) -> Vec<(Option<String>, Duration, Reason)> {
        if !self.any.load(Ordering::Acquire) {
            return Vec::new();
        }
        let until = super::lock(&self.until);
        let mut out: Vec<_> = until
            .iter()
            .filter(|(_, (end, _))| *end > now)
            .map(|(model, (end, reason))| (model.clone(), *end - now, *reason))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}
