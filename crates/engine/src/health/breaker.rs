//! The circuit breaker of one upstream and model: passive outlier ejection. It trips on
//! consecutive failures or on a failure rate over a sliding window — where a failure is any
//! timeout phase, a stall, a cut, a closed connection, a 5xx or 429, or a stream that drips below
//! the tokens-per-second floor — stays open for an ejection time that doubles with each repeated
//! ejection up to a cap, then admits a bounded number of trial calls (half-open) and closes again
//! when enough of them succeed. Time is passed in, so every transition is tested without a clock.

use std::collections::VecDeque;
use std::time::Duration;

/// Slots the failure-rate window is cut into.
const SLOTS: u32 = 10;

/// Calls and failures over a sliding window, in slots of `window / SLOTS`: a call leaves the
/// window with its slot, at most a tenth of the window late.
#[derive(Debug, Clone, Default)]
struct Window {
    /// (slot start, calls, failures), oldest first.
    slots: VecDeque<(Instant, u64, u64)>,
}

impl Window {
    fn add(&mut self, now: Instant, failed: bool, window: Duration) {
        while self
            .slots
            .front()
            .is_some_and(|(start, _, _)| now.saturating_duration_since(*start) > window)
        {
            self.slots.pop_front();
        }
        let width = window / SLOTS;
        match self.slots.back_mut() {
            Some((start, calls, failures)) if now.saturating_duration_since(*start) < width => {
                *calls += 1;
                *failures += u64::from(failed);
            }
            _ => self.slots.push_back((now, 1, u64::from(failed))),
        }
    }

    fn totals(&self) -> (u64, u64) {
        self.slots
            .iter()
            .fold((0, 0), |(c, f), (_, calls, failures)| {
                (c + calls, f + failures)
            })
    }

    fn clear(&mut self) {
        self.slots.clear();
    }
}

use tokio::time::Instant;

/// The breaker's settings (`[breaker]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    /// Consecutive failures that trip it.
    pub consecutive_failures: u32,
    /// Failure share over `window` that trips it (0–1)…
    pub failure_rate: f64,
    /// …once at least this many calls ended in the window.
    pub min_calls: u32,
    /// The sliding window of the failure rate.
    pub window: Duration,
    /// The first ejection's length.
    pub ejection: Duration,
    /// The longest ejection (each repeated ejection doubles, up to this).
    pub max_ejection: Duration,
    /// Trial calls admitted at once when half-open; this many successes close it.
    pub half_open_calls: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_calls: 10,
            window: Duration::from_secs(30),
            ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            half_open_calls: 2,
        }
    }
}

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls flow.
    Closed,
    /// Ejected until the instant.
    Open {
        /// When trial calls may start.
        until: Instant,
    },
    /// Trial calls decide.
    HalfOpen {
        /// Trials in flight.
        in_flight: u32,
        /// Trials that succeeded.
        succeeded: u32,
    },
}

impl State {
    /// `closed`, `open` or `half_open`.
    pub fn name(&self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open { .. } => "open",
            State::HalfOpen { .. } => "half_open",
        }
    }
}

/// What a state change was, for events and the status snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Tripped open for this long (the nth ejection).
    Ejected {
        /// The ejection's length.
        duration: Duration,
        /// How many ejections so far, this one included.
        count: u32,
    },
    /// The ejection ended: trial calls may go.
    HalfOpened,
    /// Enough trials succeeded: closed again.
    Readmitted,
}

/// One upstream-and-model breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    settings: BreakerSettings,
    state: State,
    consecutive: u32,
    /// Calls and failures of the recent window, in slots of a tenth of it (constant memory and
    /// time at any call rate).
    window: Window,
    ejections: u32,
    /// When the last ejection ended by readmission; a quiet period resets the growth.
    last_readmitted: Option<Instant>,
    /// A transition that happened while reading the state (an ejection ending), not yet told.
    pending: Option<Transition>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(settings: BreakerSettings) -> Breaker {
        Breaker {
            settings,
            state: State::Closed,
            consecutive: 0,
            window: Window::default(),
            ejections: 0,
            last_readmitted: None,
            pending: None,
        }
    }

    /// Applies new settings (a reload), keeping the state, the window and the ejection count.
    pub fn reconfigure(&mut self, settings: BreakerSettings) {
        self.settings = settings;
    }

    /// The state at `now` (an ejection that has ended reads as half-open).
    pub fn state(&mut self, now: Instant) -> State {
        self.tick(now);
        self.state
    }

    /// When it changes next without a call: an open breaker's end of ejection. For a half-open
    /// one, the trial calls that must still succeed to close it.
    pub fn next_change(&mut self, now: Instant) -> (Option<Instant>, Option<u32>) {
        match self.state(now) {
            State::Open { until } => (Some(until), None),
            State::HalfOpen { succeeded, .. } => (
                None,
                Some(self.settings.half_open_calls.saturating_sub(succeeded)),
            ),
            State::Closed => (None, None),
        }
    }

    /// Whether it is closed (neither ejected nor on trial).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// How many times it has been ejected.
    pub fn ejections(&self) -> u32 {
        self.ejections
    }

    fn tick(&mut self, now: Instant) -> Option<Transition> {
        if let State::Open { until } = self.state
            && now >= until
        {
            self.state = State::HalfOpen {
                in_flight: 0,
                succeeded: 0,
            };
            self.pending = Some(Transition::HalfOpened);
            return Some(Transition::HalfOpened);
        }
        None
    }

    /// The transition that reading the state caused (an ejection that ended), once.
    pub fn take_pending(&mut self) -> Option<Transition> {
        self.pending.take()
    }

    /// Whether a call may go now; a half-open breaker counts the trial it admits.
    pub fn admit(&mut self, now: Instant) -> bool {
        self.tick(now);
        match &mut self.state {
            State::Closed => true,
            State::Open { .. } => false,
            State::HalfOpen {
                in_flight,
                succeeded,
            } => {
                if *in_flight + *succeeded < self.settings.half_open_calls {
                    *in_flight += 1;
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Whether a call could go now, without admitting it (for ranking targets).
    pub fn available(&mut self, now: Instant) -> bool {
        self.tick(now);
        match self.state {
            State::Closed => true,
            State::Open { .. } => false,
            State::HalfOpen {
                in_flight,
                succeeded,
            } => in_flight + succeeded < self.settings.half_open_calls,
        }
    }

    /// Records a call's end; returns the transition it caused, if any.
    pub fn record(&mut self, now: Instant, failed: bool) -> Option<Transition> {
        self.tick(now);
        self.window.add(now, failed, self.settings.window);
        self.consecutive = if failed { self.consecutive + 1 } else { 0 };
        match &mut self.state {
            State::HalfOpen {
                in_flight,
                succeeded,
            } => {
                *in_flight = in_flight.saturating_sub(1);
                if failed {
                    return Some(self.trip(now));
                }
                *succeeded += 1;
                if *succeeded >= self.settings.half_open_calls {
                    self.state = State::Closed;
                    self.consecutive = 0;
                    self.window.clear();
                    self.last_readmitted = Some(now);
                    return Some(Transition::Readmitted);
                }
                None
            }
            State::Open { .. } => None,
            State::Closed => {
                let (calls, failures) = self.window.totals();
                let by_rate = calls >= u64::from(self.settings.min_calls)
                    && failures as f64 / calls as f64 >= self.settings.failure_rate;
                if failed && (self.consecutive >= self.settings.consecutive_failures || by_rate) {
                    Some(self.trip(now))
                } else {
                    None
                }
            }
        }
    }

    fn trip(&mut self, now: Instant) -> Transition {
        // A long healthy spell since the last readmission forgets the earlier ejections.
        if self
            .last_readmitted
            .is_some_and(|at| now.saturating_duration_since(at) > self.settings.max_ejection * 2)
        {
            self.ejections = 0;
        }
        self.ejections += 1;
        let growth = 2u32.saturating_pow(self.ejections.saturating_sub(1).min(16));
        let duration = self
            .settings
            .ejection
            .saturating_mul(growth)
            .min(self.settings.max_ejection);
        self.state = State::Open {
            until: now + duration,
        };
        self.consecutive = 0;
        self.window.clear();
        Transition::Ejected {
            duration,
            count: self.ejections,
        }
    }

    /// Releases a half-open trial that ended without an outcome (cancelled by its client).
    pub fn abandon(&mut self) {
        if let State::HalfOpen { in_flight, .. } = &mut self.state {
            *in_flight = in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            consecutive_failures: 3,
            failure_rate: 0.5,
            min_calls: 6,
            window: Duration::from_secs(10),
            ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(15),
            half_open_calls: 2,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn consecutive_failures_eject_and_half_open_readmits() {
        let t0 = Instant::now();
        let mut b = Breaker::new(settings());
        assert_eq!(b.record(t0, true), None);
        assert_eq!(b.record(t0, true), None);
        assert_eq!(
            b.record(t0, true),
            Some(Transition::Ejected {
                duration: secs(5),
                count: 1
            })
        );
        assert!(!b.admit(t0 + secs(4)));
        assert_eq!(b.state(t0 + secs(4)).name(), "open");
        // The ejection ends: two trials at most, a third waits.
        assert!(b.admit(t0 + secs(5)));
        assert!(b.admit(t0 + secs(5)));
        assert!(!b.admit(t0 + secs(5)));
        assert_eq!(b.record(t0 + secs(6), false), None);
        assert_eq!(b.record(t0 + secs(6), false), Some(Transition::Readmitted));
        assert_eq!(b.state(t0 + secs(6)), State::Closed);
    }

    #[test]
    fn a_failed_trial_ejects_again_for_twice_as_long_up_to_the_cap() {
        let t0 = Instant::now();
        let mut b = Breaker::new(settings());
        for _ in 0..3 {
            b.record(t0, true);
        }
        let mut at = t0 + secs(5);
        for (count, expected) in [(2, 10), (3, 15), (4, 15)] {
            assert!(b.admit(at));
            assert_eq!(
                b.record(at, true),
                Some(Transition::Ejected {
                    duration: secs(expected),
                    count
                })
            );
            at += secs(expected);
        }
        assert_eq!(b.ejections(), 4);
    }

    #[test]
    fn a_high_failure_rate_ejects_without_a_streak() {
        let t0 = Instant::now();
        let mut b = Breaker::new(settings());
        // fail, ok, fail, ok, fail: 3 of 5, below min_calls.
        for (i, failed) in [true, false, true, false, true].into_iter().enumerate() {
            assert_eq!(b.record(t0 + secs(i as u64), failed), None);
        }
        // The sixth call, a failure: 4 of 6 ≥ 50 %.
        assert!(matches!(
            b.record(t0 + secs(5), true),
            Some(Transition::Ejected { .. })
        ));
    }

    #[test]
    fn old_calls_leave_the_window() {
        let t0 = Instant::now();
        let mut b = Breaker::new(settings());
        for i in 0..5 {
            b.record(t0 + secs(i), i % 2 == 0);
        }
        // 20 s later the earlier failures no longer count: one failure of one call is no rate.
        assert_eq!(b.record(t0 + secs(25), true), None);
        assert_eq!(b.state(t0 + secs(25)), State::Closed);
    }

    #[test]
    fn the_next_change_is_when_an_ejection_ends_or_how_many_trials_close_it() {
        let t0 = Instant::now();
        let mut b = Breaker::new(settings());
        assert_eq!(b.next_change(t0), (None, None));
        for _ in 0..3 {
            b.record(t0, true);
        }
        assert_eq!(b.next_change(t0 + secs(2)), (Some(t0 + secs(5)), None));
        // Half-open: two trials must succeed; after one, one more.
        assert_eq!(b.next_change(t0 + secs(5)), (None, Some(2)));
        assert!(b.admit(t0 + secs(5)));
        b.record(t0 + secs(6), false);
        assert_eq!(b.next_change(t0 + secs(6)), (None, Some(1)));
    }

    #[test]
    fn an_abandoned_trial_frees_its_slot() {
        let t0 = Instant::now();
        let mut b = Breaker::new(settings());
        for _ in 0..3 {
            b.record(t0, true);
        }
        let at = t0 + secs(5);
        assert!(b.admit(at) && b.admit(at) && !b.admit(at));
        b.abandon();
        assert!(b.available(at));
    }
}
