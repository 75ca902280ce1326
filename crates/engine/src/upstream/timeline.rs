//! The moments of one attempt, as the phase clocks see them, and the `Server-Timing` header
//! that reports them to the client.

use tokio::time::Instant;

/// The moments of one attempt.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    /// The attempt began.
    pub start: Instant,
    /// A connection was ready (at once for a pooled one).
    pub connected: Option<Instant>,
    /// The connection came from the pool.
    pub reused: bool,
    /// The request body was handed to the connection.
    pub written: Option<Instant>,
    /// The response headers arrived.
    pub headers: Option<Instant>,
    /// The first meaningful content arrived.
    pub first_token: Option<Instant>,
}

impl Timeline {
    /// A timeline starting now.
    pub fn new(start: Instant) -> Timeline {
        Timeline {
            start,
            connected: None,
            reused: false,
            written: None,
            headers: None,
            first_token: None,
        }
    }

    /// The wait from the request written to the first token (or, without one, the headers).
    pub fn first_token_latency(&self) -> Option<std::time::Duration> {
        let at = self.first_token.or(self.headers)?;
        Some(at.saturating_duration_since(self.written?))
    }

    /// A `Server-Timing` header value: `connect;dur=…, write;dur=…, first_byte;dur=…, first_token;dur=…`.
    pub fn server_timing(&self) -> String {
        // Tenths of a millisecond, rounded: integers, which format far faster than floats.
        let ms = |a: Instant, b: Option<Instant>| {
            b.map(|b| (b.saturating_duration_since(a).as_micros() as u64).saturating_add(50) / 100)
        };
        // One buffer written in place, the numbers by `itoa`: this is on every answer's path,
        // where `write!` cost ten times as much.
        let mut out = String::with_capacity(96);
        let mut digits = itoa::Buffer::new();
        let mut part = |name: &str, tenths: u64, desc: &str| {
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(name);
            out.push_str(";dur=");
            out.push_str(digits.format(tenths / 10));
            out.push('.');
            out.push_str(digits.format(tenths % 10));
            out.push_str(desc);
        };
        if let Some(d) = ms(self.start, self.connected) {
            part(
                "connect",
                d,
                if self.reused { ";desc=\"reused\"" } else { "" },
            );
        }
        if let Some(connected) = self.connected
            && let Some(d) = ms(connected, self.written)
        {
            part("write", d, "");
        }
        if let (Some(w), h) = (self.written, self.headers) {
            if let Some(d) = ms(w, h) {
                part("first_byte", d, "");
            }
            if let Some(d) = ms(w, self.first_token) {
                part("first_token", d, "");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn server_timing_names_each_phase_in_tenths_of_a_millisecond() {
        let start = Instant::now();
        let at = |micros: u64| Some(start + Duration::from_micros(micros));
        let mut timeline = Timeline::new(start);
        assert_eq!(timeline.server_timing(), "");
        timeline.connected = at(0);
        timeline.reused = true;
        timeline.written = at(149);
        timeline.headers = at(1_149 + 12_345_600);
        timeline.first_token = at(1_149 + 12_345_650);
        assert_eq!(
            timeline.server_timing(),
            "connect;dur=0.0;desc=\"reused\", write;dur=0.1, first_byte;dur=12346.6, \
             first_token;dur=12346.7"
        );
        timeline.reused = false;
        timeline.headers = None;
        assert_eq!(
            timeline.server_timing(),
            "connect;dur=0.0, write;dur=0.1, first_token;dur=12346.7"
        );
    }
}
