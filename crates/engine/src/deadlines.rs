//! Deadlines: every clock of `docs/timeouts.md` turned into instants, once per call and once per
//! attempt. Every phase deadline is `min(phase start + phase timeout, attempt, total)`, and each
//! [`Bound`] remembers which of the three limits it is, so a timeout is reported as the limit that
//! actually fired.

use std::time::Duration;

use hourglass_config::Timeouts;
use tokio::time::Instant;

use crate::vocabulary::Limit;

/// A deadline and the limit it enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// When it fires.
    pub at: Instant,
    /// Which limit it is.
    pub limit: Limit,
}

impl Bound {
    /// The earlier of two bounds; on a tie the narrower limit (the phase) is kept.
    pub fn min(self, other: Bound) -> Bound {
        if other.at < self.at { other } else { self }
    }
}

/// The deadlines of one call.
#[derive(Debug, Clone)]
pub struct Deadlines {
    /// When the client's request arrived.
    pub start: Instant,
    /// The end of the call: `start + timeouts.total`, or earlier when the client's deadline is.
    pub total: Instant,
    /// Whether the client's deadline (less the margin) set `total`.
    pub client_set_total: bool,
    /// Whether `total` also ends a stream after its commit point: when the client set it, or the
    /// configuration did (see [`Deadlines::total_ends_streams`]).
    pub total_ends_streams: bool,
    timeouts: Timeouts,
}

/// The deadlines of one attempt.
#[derive(Debug, Clone, Copy)]
pub struct AttemptDeadlines {
    /// When the attempt began.
    pub start: Instant,
    /// The attempt's own end, capped by the call's.
    pub end: Bound,
    /// The call's end.
    pub total: Bound,
    /// The call's end for a stream after its commit point, when `total` ends streams.
    pub after_commit: Option<Bound>,
    /// The attempt's timeout after growth.
    pub attempt_timeout: Duration,
    timeouts: Timeouts,
}

impl Deadlines {
    /// The deadlines of a call that arrived at `start`; `client` is the client's own deadline,
    /// already less the margin.
    pub fn new(start: Instant, timeouts: &Timeouts, client: Option<Instant>) -> Deadlines {
        let configured = start + timeouts.total;
        let (total, client_set_total) = match client {
            // A client deadline equal to the total set it (an unattended call's replaces it).
            Some(client) if client <= configured => (client, true),
            _ => (configured, false),
        };
        Deadlines {
            start,
            total,
            client_set_total,
            total_ends_streams: true,
            timeouts: *timeouts,
        }
    }

    /// The same deadlines, with `total` ending a committed stream only when the client set it or
    /// `configured` says the configuration did. A built-in `total` is sized for getting an answer
    /// going, not for a long answer still flowing (16k tokens at 90 tokens/s take ~180 s): after
    /// the commit point, `idle` guards such a stream instead.
    pub fn total_ends_streams(mut self, configured: bool) -> Deadlines {
        self.total_ends_streams = self.client_set_total || configured;
        self
    }

    /// Time left at `now`.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.total.saturating_duration_since(now)
    }

    /// The total as a bound.
    pub fn total_bound(&self) -> Bound {
        Bound {
            at: self.total,
            limit: Limit::Total,
        }
    }

    /// The timeout of try `n` (0-based): `attempt × growth^n`.
    pub fn attempt_timeout(&self, n: u32) -> Duration {
        let factor = self.timeouts.attempt_growth.powi(n.min(16) as i32);
        self.timeouts.attempt.mul_f64(factor.min(1000.0))
    }

    /// The deadlines of try `n` (0-based) beginning at `start`.
    pub fn attempt(&self, n: u32, start: Instant) -> AttemptDeadlines {
        let attempt_timeout = self.attempt_timeout(n);
        let total = self.total_bound();
        let end = Bound {
            at: start + attempt_timeout,
            limit: Limit::Attempt,
        }
        .min(total);
        AttemptDeadlines {
            start,
            end,
            total,
            after_commit: self.total_ends_streams.then_some(total),
            attempt_timeout,
            timeouts: self.timeouts,
        }
    }

    /// Whether an attempt may start at `now`. The first always may while time is left; a retry
    /// needs [`Deadlines::retry_needs`].
    pub fn attempt_fits(&self, now: Instant, streaming: bool, first: bool) -> bool {
        let remaining = self.remaining(now);
        if first {
            return !remaining.is_zero();
        }
        remaining >= self.retry_needs(streaming)
    }

    /// What a retry needs left of the call: a tenth of its normal first wait — `first_token`
    /// when the upstream streams (for the client, or to assemble a whole answer), `attempt`
    /// otherwise — and at least 100ms. A try that cannot get that far would only add load.
    pub fn retry_needs(&self, streaming: bool) -> Duration {
        let wait = if streaming {
            self.timeouts.first_token
        } else {
            self.timeouts.attempt
        };
        (wait / 10).max(Duration::from_millis(100))
    }
}

impl AttemptDeadlines {
    fn phase(&self, from: Instant, timeout: Duration, limit: Limit) -> Bound {
        Bound {
            at: from + timeout,
            limit,
        }
        .min(self.end)
    }

    /// Connecting (DNS, TCP, TLS) from the attempt's start.
    pub fn connect(&self) -> Bound {
        self.phase(self.start, self.timeouts.connect, Limit::Connect)
    }

    /// Sending the body, from `connected`.
    pub fn write(&self, connected: Instant) -> Bound {
        self.phase(connected, self.timeouts.write, Limit::Write)
    }

    /// The response headers, from `sent`. A non-streaming upstream sends them only when the whole
    /// answer is ready, so `first_byte` must cover the generation there; a stream's headers come
    /// first, and its first token cannot come before them, so `first_token` caps the wait too.
    pub fn headers(&self, sent: Instant, streaming: bool) -> Bound {
        let first_byte = self.phase(sent, self.timeouts.first_byte, Limit::FirstByte);
        if streaming {
            first_byte.min(self.first_token(sent))
        } else {
            first_byte
        }
    }

    /// The first meaningful content of a stream, from `sent`.
    pub fn first_token(&self, sent: Instant) -> Bound {
        self.phase(sent, self.timeouts.first_token, Limit::FirstToken)
    }

    /// The next content chunk (or body read) before commit, from the last one at `last`.
    pub fn idle(&self, last: Instant) -> Bound {
        self.phase(last, self.timeouts.idle, Limit::Idle)
    }

    /// The next content chunk after commit: only `idle` applies then, and `total` when it ends
    /// streams.
    pub fn idle_committed(&self, last: Instant) -> Bound {
        let idle = Bound {
            at: last + self.timeouts.idle,
            limit: Limit::Idle,
        };
        match self.after_commit {
            Some(total) => idle.min(total),
            None => idle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(5),
            write: Duration::from_secs(10),
            first_byte: Duration::from_secs(15),
            first_token: Duration::from_secs(20),
            idle: Duration::from_secs(30),
            attempt: Duration::from_secs(60),
            attempt_growth: 1.5,
            total: Duration::from_secs(120),
            job: Duration::from_secs(3600),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_phase_is_capped_by_the_attempt_and_the_total() {
        let start = Instant::now();
        let deadlines = Deadlines::new(start, &timeouts(), None);
        assert_eq!(deadlines.total, start + Duration::from_secs(120));
        let first = deadlines.attempt(0, start);
        assert_eq!(
            first.connect(),
            Bound {
                at: start + Duration::from_secs(5),
                limit: Limit::Connect
            }
        );
        assert_eq!(
            first.end,
            Bound {
                at: start + Duration::from_secs(60),
                limit: Limit::Attempt
            }
        );
        // A phase that would outlast the attempt is cut to the attempt, and says so.
        let late = start + Duration::from_secs(50);
        assert_eq!(
            first.first_token(late),
            Bound {
                at: start + Duration::from_secs(60),
                limit: Limit::Attempt
            }
        );
        // A later try grows (×1.5) but never past the total.
        let second = deadlines.attempt(1, start + Duration::from_secs(61));
        assert_eq!(second.attempt_timeout, Duration::from_secs(90));
        assert_eq!(
            second.end,
            Bound {
                at: start + Duration::from_secs(120),
                limit: Limit::Total
            }
        );
        // After commit, only idle and total apply.
        assert_eq!(
            second
                .idle_committed(start + Duration::from_secs(100))
                .limit,
            Limit::Total
        );
        assert_eq!(
            first.idle_committed(start + Duration::from_secs(10)),
            Bound {
                at: start + Duration::from_secs(40),
                limit: Limit::Idle
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_streams_headers_wait_is_capped_by_first_token_too() {
        let start = Instant::now();
        let mut slow_headers = timeouts();
        slow_headers.first_byte = Duration::from_secs(40);
        let attempt = Deadlines::new(start, &slow_headers, None).attempt(0, start);
        assert_eq!(
            attempt.headers(start, false),
            Bound {
                at: start + Duration::from_secs(40),
                limit: Limit::FirstByte
            }
        );
        assert_eq!(
            attempt.headers(start, true),
            Bound {
                at: start + Duration::from_secs(20),
                limit: Limit::FirstToken
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_clients_deadline_shortens_the_total() {
        let start = Instant::now();
        let client = start + Duration::from_secs(3);
        let deadlines = Deadlines::new(start, &timeouts(), Some(client));
        assert_eq!(deadlines.total, client);
        assert!(deadlines.client_set_total);
        let attempt = deadlines.attempt(0, start);
        assert_eq!(
            attempt.first_token(start),
            Bound {
                at: client,
                limit: Limit::Total
            }
        );
        // A later client deadline changes nothing.
        let lenient = Deadlines::new(start, &timeouts(), Some(start + Duration::from_secs(600)));
        assert!(!lenient.client_set_total);
        assert_eq!(lenient.total, start + Duration::from_secs(120));
    }

    #[tokio::test(start_paused = true)]
    async fn no_attempt_starts_that_cannot_get_through_its_first_wait() {
        let start = Instant::now();
        let deadlines = Deadlines::new(start, &timeouts(), None);
        assert!(deadlines.attempt_fits(start, true, false));
        // A retry needs a tenth of first_token (2 s) for a stream, of attempt (6 s) otherwise.
        assert!(deadlines.attempt_fits(start + Duration::from_secs(118), true, false));
        assert!(!deadlines.attempt_fits(start + Duration::from_millis(118_500), true, false));
        assert!(!deadlines.attempt_fits(start + Duration::from_secs(115), false, false));
        // The first attempt goes while any time is left; none at all stops it.
        assert!(deadlines.attempt_fits(start + Duration::from_millis(119_990), false, true));
        assert!(!deadlines.attempt_fits(start + Duration::from_secs(120), false, true));
    }
}
