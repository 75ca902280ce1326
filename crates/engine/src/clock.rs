//! The call path's clock: one reading of the monotonic clock (and one of the wall clock) per
//! turn of a client connection, shared by everything that turn does.
//!
//! A call reads the time at each of its moments — its start, the attempt's phases, the lease,
//! the health table, the dashboard's record, the log line — about twenty readings, most of them
//! microseconds apart in the same poll of the connection. Each reading is a `clock_gettime`
//! through the vDSO, about 20 ns on the project's virtual machine (the TSC read is the cost):
//! some 4 % of a lane's own time at full load (docs/benchmarks-log.md, issue 19's step 35). While a
//! [`Turn`] is alive on a thread — the gateway keeps one around each poll of a client
//! connection — the first reading is kept and every later one in the turn is that reading. A
//! moment is then the time its turn began reading, not the instant the line ran: the
//! difference is the CPU time of one poll (microseconds), and in the other direction a moment
//! is never later than it would have been. Outside a turn (background jobs, active checks,
//! tests) every reading is a fresh one.
//!
//! Monotonic readings come from `tokio::time::Instant::now` (ARCHITECTURE invariant 7), so a
//! test's paused clock is what they see, in a turn or out of it; [`wall`] is `SystemTime`'s.
//!
//! A deadline made from a turn's reading is early by what the turn had done before it was made
//! (microseconds): where a limit must never cut early (hyper's header-read timeout) or a check
//! re-arms a timer until time has passed (a stream's idle watchdog), the code reads tokio's clock
//! itself. A turn is begun and ended within one synchronous poll and never held across an
//! `.await`: held across one, its reading would stand for the time the task slept.

use std::cell::Cell;
use std::marker::PhantomData;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// This thread's turn: whether one is under way, and what it has read so far.
#[derive(Clone, Copy)]
enum Readings {
    /// No turn: every reading is fresh.
    Fresh,
    /// In a turn: the readings taken so far, kept for the rest of it.
    Kept {
        now: Option<Instant>,
        wall: Option<SystemTime>,
    },
}

thread_local! {
    static READINGS: Cell<Readings> = const { Cell::new(Readings::Fresh) };
}

/// The monotonic time: the turn's reading when a turn is under way on this thread, else a fresh
/// one.
pub fn now() -> Instant {
    READINGS.with(|readings| match readings.get() {
        Readings::Fresh => Instant::now(),
        Readings::Kept { now: Some(now), .. } => now,
        Readings::Kept { now: None, wall } => {
            let now = Instant::now();
            readings.set(Readings::Kept {
                now: Some(now),
                wall,
            });
            now
        }
    })
}

/// How long ago `earlier` was, by [`now`] (zero for a moment not yet come).
pub fn since(earlier: Instant) -> Duration {
    now().saturating_duration_since(earlier)
}

/// The wall-clock time, kept for the turn as [`now`] is.
pub fn wall() -> SystemTime {
    READINGS.with(|readings| match readings.get() {
        Readings::Fresh => SystemTime::now(),
        Readings::Kept {
            wall: Some(wall), ..
        } => wall,
        Readings::Kept { now, wall: None } => {
            let wall = SystemTime::now();
            readings.set(Readings::Kept {
                now,
                wall: Some(wall),
            });
            wall
        }
    })
}

/// While alive, this thread's readings are kept: the first of each clock is every later one.
/// Dropped, the thread reads as it did before (a turn inside a turn starts its own readings and
/// gives the outer one back its own).
#[must_use = "the turn ends when this is dropped"]
pub struct Turn {
    before: Readings,
    /// Bound to its thread: the readings are the thread's.
    _thread: PhantomData<*const ()>,
}

impl Turn {
    /// Starts a turn on this thread.
    pub fn begin() -> Turn {
        let before = READINGS.replace(Readings::Kept {
            now: None,
            wall: None,
        });
        Turn {
            before,
            _thread: PhantomData,
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        READINGS.set(self.before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_turn_keeps_its_first_reading_and_fresh_readings_follow_it() {
        let before = now();
        tokio::time::advance(Duration::from_millis(5)).await;
        assert_eq!(
            since(before),
            Duration::from_millis(5),
            "fresh outside a turn"
        );
        {
            let _turn = Turn::begin();
            let first = now();
            let first_wall = wall();
            tokio::time::advance(Duration::from_millis(7)).await;
            assert_eq!(now(), first, "kept within the turn");
            assert_eq!(since(first), Duration::ZERO);
            assert_eq!(wall(), first_wall);
            {
                let _inner = Turn::begin();
                assert_eq!(
                    now(),
                    first + Duration::from_millis(7),
                    "an inner turn reads anew"
                );
                tokio::time::advance(Duration::from_millis(1)).await;
            }
            assert_eq!(now(), first, "the outer turn's reading is back");
        }
        // The turn is over: a fresh reading, 13 ms after `before`.
        assert_eq!(since(before), Duration::from_millis(13));
        tokio::time::advance(Duration::from_millis(2)).await;
        assert_eq!(since(before), Duration::from_millis(15));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_reading_of_a_turn_is_taken_when_asked_for_not_when_the_turn_begins() {
        let turn = Turn::begin();
        let begun = Instant::now();
        tokio::time::advance(Duration::from_millis(3)).await;
        assert_eq!(now(), begun + Duration::from_millis(3));
        drop(turn);
    }

    #[test]
    fn a_turn_ends_when_its_thread_unwinds() {
        let result = std::panic::catch_unwind(|| {
            let _turn = Turn::begin();
            let _ = wall();
            panic!("a poll panics");
        });
        assert!(result.is_err());
        assert!(matches!(READINGS.get(), Readings::Fresh));
    }
}
