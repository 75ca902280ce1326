//! The moments of one attempt, as the phase clocks see them, and the `Server-Timing` header
//! that reports them to the client.

use std::io::Write;

use http::HeaderValue;
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

    /// The `Server-Timing` header value:
    /// `connect;dur=…, write;dur=…, first_byte;dur=…, first_token;dur=…`.
    pub fn server_timing(&self) -> HeaderValue {
        // Tenths of a millisecond, rounded: integers, which format far faster than floats.
        let ms = |a: Instant, b: Option<Instant>| {
            b.map(|b| (b.saturating_duration_since(a).as_micros() as u64).saturating_add(50) / 100)
        };
        // Written on the stack and copied once into the value: this is on every answer's path,
        // where `write!` cost ten times as much and a `String` first cost a second allocation.
        // Four parts of at most 54 bytes each (a 20-digit number) always fit.
        let mut line = [0u8; 256];
        let mut out: &mut [u8] = &mut line;
        let mut first = true;
        let mut digits = itoa::Buffer::new();
        // `label` is `, name;dur=`: its comma is skipped for the first part. Four pieces a part,
        // each one copy.
        let mut part = |label: &str, tenths: u64, desc: &str| {
            let label = if std::mem::take(&mut first) {
                &label[", ".len()..]
            } else {
                label
            };
            let tenth = [b'.', b'0' + (tenths % 10) as u8];
            for piece in [
                label.as_bytes(),
                digits.format(tenths / 10).as_bytes(),
                &tenth,
                desc.as_bytes(),
            ] {
                // Cannot fail (see above); a full buffer would cut the value, not panic.
                let _ = out.write_all(piece);
            }
        };
        if let Some(d) = ms(self.start, self.connected) {
            part(
                ", connect;dur=",
                d,
                if self.reused { ";desc=\"reused\"" } else { "" },
            );
        }
        if let Some(connected) = self.connected
            && let Some(d) = ms(connected, self.written)
        {
            part(", write;dur=", d, "");
        }
        if let (Some(w), h) = (self.written, self.headers) {
            if let Some(d) = ms(w, h) {
                part(", first_byte;dur=", d, "");
            }
            if let Some(d) = ms(w, self.first_token) {
                part(", first_token;dur=", d, "");
            }
        }
        let left = out.len();
        let written = line.len() - left;
        // Names and digits are visible ASCII: never the fallback.
        HeaderValue::from_bytes(&line[..written]).unwrap_or(HeaderValue::from_static(""))
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
        assert_eq!(timeline.server_timing().to_str().unwrap(), "");
        timeline.connected = at(0);
        timeline.reused = true;
        timeline.written = at(149);
        timeline.headers = at(1_149 + 12_345_600);
        timeline.first_token = at(1_149 + 12_345_650);
        assert_eq!(
            timeline.server_timing().to_str().unwrap(),
            "connect;dur=0.0;desc=\"reused\", write;dur=0.1, first_byte;dur=12346.6, \
             first_token;dur=12346.7"
        );
        timeline.reused = false;
        timeline.headers = None;
        assert_eq!(
            timeline.server_timing().to_str().unwrap(),
            "connect;dur=0.0, write;dur=0.1, first_token;dur=12346.7"
        );
        // Without a connect phase, the first part written has no comma before it.
        timeline.connected = None;
        assert_eq!(
            timeline.server_timing().to_str().unwrap(),
            "first_token;dur=12346.7"
        );
        // A value as long as one can be (each phase near the most microseconds a u64 holds)
        // fits whole: every part is there, the last one complete.
        let phase = Duration::from_secs(15_000_000_000_000);
        let longest = Timeline {
            start,
            connected: Some(start + phase),
            reused: true,
            written: Some(start + phase * 2),
            headers: Some(start + phase * 3),
            first_token: Some(start + phase * 3),
        };
        let value = longest.server_timing();
        let value = value.to_str().unwrap();
        assert!(value.len() > 140, "{value}");
        assert!(
            value.ends_with(", first_token;dur=15000000000000000.0"),
            "{value}"
        );
        assert_eq!(value.matches(";dur=").count(), 4, "{value}");
    }
}
