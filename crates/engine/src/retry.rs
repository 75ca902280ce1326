//! When to try again: exponential backoff with full jitter, `Retry-After` as upstreams send it,
//! and the retry budget that keeps retries from storming.
//!
//! # Why a budget
//! A fixed "3 retries" multiplies load by 4 exactly when an upstream is already failing. The
//! budget (after Finagle's `RetryBudget` and tower's `TpsBudget`) lets retries be at most a share
//! of recent calls plus a small floor, over a 10-second window: a blip is retried, an outage is not
//! amplified.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use http::HeaderMap;
use tokio::time::Instant;

use crate::slots::{Slots, lock};

/// Backoff before try `n` (1 = the first retry): uniform in `[0, min(cap, base × 2^(n-1))]`.
pub fn backoff(n: u32, base: Duration, cap: Duration, rng: &mut fastrand::Rng) -> Duration {
    let exponent = n.saturating_sub(1).min(20);
    let ceiling = base.saturating_mul(1 << exponent).min(cap);
    ceiling.mul_f64(rng.f64())
}

/// The wait an upstream asked for: `retry-after-ms` (OpenAI's, fractional milliseconds) or
/// `retry-after` in seconds. HTTP dates are not honoured (they need a trusted wall clock).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|t| t.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64((ms / 1000.0).min(86_400.0)));
    }
    let seconds = text("retry-after")?.parse::<f64>().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(86_400.0)))
}

/// Seconds in the budget's window.
const WINDOW: usize = 10;

/// Retries allowed as a share of recent calls plus a floor per second, over a sliding window.
/// A pure state machine: the caller passes `now`.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    ratio: f64,
    min_per_s: f64,
    origin: Instant,
    /// Per second of the window: (calls, retries), indexed by second modulo the window.
    slots: [(u64, u64); WINDOW],
    /// The second the newest slot belongs to.
    second: u64,
}

impl RetryBudget {
    /// A budget allowing `ratio` of calls plus `min_per_s` retries per second.
    pub fn new(ratio: f64, min_per_s: f64, now: Instant) -> RetryBudget {
        RetryBudget {
            ratio,
            min_per_s,
            origin: now,
            slots: [(0, 0); WINDOW],
            second: 0,
        }
    }

    /// Applies new settings (a reload) and keeps the calls and retries counted so far.
    pub fn reconfigure(&mut self, ratio: f64, min_per_s: f64) {
        self.ratio = ratio;
        self.min_per_s = min_per_s;
    }

    /// The second of the budget's clock `now` falls in.
    fn second_of(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs()
    }

    fn advance(&mut self, now: Instant) {
        self.advance_to(self.second_of(now));
    }

    fn advance_to(&mut self, second: u64) {
        if second > self.second {
            let stale = (second - self.second).min(WINDOW as u64);
            for offset in 1..=stale {
                self.slots[((self.second + offset) % WINDOW as u64) as usize] = (0, 0);
            }
            self.second = second;
        }
    }

    /// Records a call (each call deposits `ratio` of a retry).
    pub fn deposit(&mut self, now: Instant) {
        self.deposit_at(self.second_of(now), 1);
    }

    /// Records `calls` calls made in second `second` of the budget's clock (counted elsewhere
    /// first); calls older than the window count for nothing.
    fn deposit_at(&mut self, second: u64, calls: u64) {
        self.advance_to(second);
        if second + WINDOW as u64 > self.second {
            self.slots[(second % WINDOW as u64) as usize].0 += calls;
        }
    }

    /// Takes one retry if the budget allows it.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        self.advance(now);
        let (calls, retries) = self
            .slots
            .iter()
            .fold((0, 0), |(c, r), (sc, sr)| (c + sc, r + sr));
        let allowed = self.min_per_s * WINDOW as f64 + self.ratio * calls as f64;
        if (retries as f64) + 1.0 <= allowed {
            self.slots[(self.second % WINDOW as u64) as usize].1 += 1;
            true
        } else {
            false
        }
    }

    /// Retries still allowed now (for the status API and error messages).
    pub fn available(&mut self, now: Instant) -> f64 {
        self.advance(now);
        let (calls, retries) = self
            .slots
            .iter()
            .fold((0, 0), |(c, r), (sc, sr)| (c + sc, r + sr));
        (self.min_per_s * WINDOW as f64 + self.ratio * calls as f64 - retries as f64).max(0.0)
    }
}

/// Slots the calls are counted in before they reach the budget: more than the serving threads
/// there usually are, so each thread nearly always has one of its own.
const CALL_SLOTS: usize = 8;

/// The retry budget that the calls of an engine, and the engines that follow it, share. Each
/// serving thread counts its calls in a slot of its own, a second's worth at a time, and folds
/// them into the budget when the second turns; a retry, or a read of what is left, folds every
/// slot in first. Counted in the budget itself, every call of every thread wrote its lines:
/// they moved between the cores call after call.
pub struct Budget {
    budget: Mutex<RetryBudget>,
    /// The budget's clock (its `origin`), to tell a call's second without its lock.
    origin: Instant,
    /// Calls counted on some thread and not yet in the budget: the second of the budget's
    /// clock they were made in, and how many.
    calls: Slots<(u64, u64), CALL_SLOTS>,
}

impl Budget {
    /// Shares `budget`.
    pub fn new(budget: RetryBudget) -> Budget {
        Budget {
            origin: budget.origin,
            budget: Mutex::new(budget),
            calls: Slots::default(),
        }
    }

    /// Records a call.
    pub fn deposit(&self, now: Instant) {
        let second = now.saturating_duration_since(self.origin).as_secs();
        let earlier = {
            let mut counted = self.calls.local();
            let (at, calls) = *counted;
            *counted = if at == second {
                (second, calls + 1)
            } else {
                (second, 1)
            };
            (at != second && calls > 0).then_some((at, calls))
        };
        // Once a second a thread: the second before goes into the budget (the slot's lock is
        // not held meanwhile, so the budget's lock is never waited for under it).
        if let Some((at, calls)) = earlier {
            lock(&self.budget).deposit_at(at, calls);
        }
    }

    /// The budget, with every call counted so far in it.
    fn folded(&self) -> MutexGuard<'_, RetryBudget> {
        let mut budget = lock(&self.budget);
        for mut slot in self.calls.each() {
            let (at, calls) = std::mem::take(&mut *slot);
            if calls > 0 {
                budget.deposit_at(at, calls);
            }
        }
        budget
    }

    /// Takes one retry if the budget allows it.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        self.folded().try_withdraw(now)
    }

    /// Retries still allowed now (for the status API and error messages).
    pub fn available(&self, now: Instant) -> f64 {
        self.folded().available(now)
    }

    /// Applies new settings (a reload) and keeps the calls and retries counted so far.
    pub fn reconfigure(&self, ratio: f64, min_per_s: f64) {
        lock(&self.budget).reconfigure(ratio, min_per_s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_counted_on_many_threads_reach_the_shared_budget_in_their_own_seconds() {
        let start = Instant::now();
        let at = move |seconds: u64| start + Duration::from_secs(seconds);
        let budget = std::sync::Arc::new(Budget::new(RetryBudget::new(0.5, 0.0, start)));
        let on_a_thread = |calls: usize, second: u64| {
            let budget = budget.clone();
            std::thread::spawn(move || {
                for _ in 0..calls {
                    budget.deposit(at(second));
                }
            })
            .join()
            .unwrap();
        };
        for _ in 0..4 {
            on_a_thread(20, 0);
        }
        assert_eq!(budget.available(at(0)), 40.0, "half of 80 calls");
        let taken = (0..100).take_while(|_| budget.try_withdraw(at(0))).count();
        assert_eq!(taken, 40);

        // A thread whose slot still holds calls of second 5 when it counts one of second 11:
        // those reach the budget in their own second, and leave the window with it.
        let budget_of_one_thread = budget.clone();
        std::thread::spawn(move || {
            for _ in 0..10 {
                budget_of_one_thread.deposit(at(5));
            }
            budget_of_one_thread.deposit(at(11));
            // Second 0 (80 calls, 40 retries) has left the window; 5 and 11 are in it.
            assert_eq!(budget_of_one_thread.available(at(11)), 5.5);
            assert_eq!(
                budget_of_one_thread.available(at(15)),
                0.5,
                "second 5 left too"
            );
        })
        .join()
        .unwrap();
    }

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_ceiling() {
        let mut rng = fastrand::Rng::with_seed(1);
        let base = Duration::from_millis(250);
        let cap = Duration::from_secs(4);
        for n in 1..=8u32 {
            let ceiling = (base * (1 << (n - 1))).min(cap);
            let draws: Vec<_> = (0..2000).map(|_| backoff(n, base, cap, &mut rng)).collect();
            assert!(draws.iter().all(|d| *d <= ceiling), "try {n}");
            let mean = draws.iter().map(Duration::as_secs_f64).sum::<f64>() / draws.len() as f64;
            assert!(
                (mean / ceiling.as_secs_f64() - 0.5).abs() < 0.05,
                "try {n}: mean {mean}"
            );
        }
    }

    #[test]
    fn retry_after_reads_milliseconds_first_then_seconds() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", "1500".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
        headers.insert("retry-after-ms", "soon".parse().unwrap());
        assert_eq!(
            retry_after(&headers),
            Some(Duration::from_secs(2)),
            "a bad ms value falls back"
        );
        headers.insert(
            "retry-after",
            "Wed, 21 Oct 2026 07:28:00 GMT".parse().unwrap(),
        );
        headers.remove("retry-after-ms");
        assert_eq!(retry_after(&headers), None, "dates are not honoured");
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_allows_a_share_of_calls_plus_a_floor() {
        let start = Instant::now();
        let mut budget = RetryBudget::new(0.2, 0.0, start);
        for _ in 0..100 {
            budget.deposit(start);
        }
        let granted = (0..100).filter(|_| budget.try_withdraw(start)).count();
        assert_eq!(granted, 20, "20% of 100 calls");

        let mut floor = RetryBudget::new(0.0, 1.0, start);
        let granted = (0..100).filter(|_| floor.try_withdraw(start)).count();
        assert_eq!(granted, 10, "1 per second over a 10 s window");
    }

    #[tokio::test(start_paused = true)]
    async fn spent_retries_come_back_as_the_window_slides() {
        let start = Instant::now();
        let mut budget = RetryBudget::new(0.5, 0.0, start);
        for _ in 0..10 {
            budget.deposit(start);
        }
        assert_eq!((0..10).filter(|_| budget.try_withdraw(start)).count(), 5);
        assert!(!budget.try_withdraw(start + Duration::from_secs(5)));
        // Eleven seconds later both the calls and the retries have left the window.
        let later = start + Duration::from_secs(11);
        assert_eq!(budget.available(later), 0.0);
        for _ in 0..4 {
            budget.deposit(later);
        }
        assert_eq!((0..10).filter(|_| budget.try_withdraw(later)).count(), 2);
    }
}
