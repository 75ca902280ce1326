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
        let ms = |a: Instant, b: Option<Instant>| {
            b.map(|b| b.saturating_duration_since(a).as_secs_f64() * 1000.0)
        };
        let mut parts = Vec::with_capacity(4);
        if let Some(d) = ms(self.start, self.connected) {
            parts.push(format!(
                "connect;dur={d:.1}{}",
                if self.reused { ";desc=\"reused\"" } else { "" }
            ));
        }
        if let Some(connected) = self.connected
            && let Some(d) = ms(connected, self.written)
        {
            parts.push(format!("write;dur={d:.1}"));
        }
        if let (Some(w), h) = (self.written, self.headers) {
            if let Some(d) = ms(w, h) {
                parts.push(format!("first_byte;dur={d:.1}"));
            }
            if let Some(d) = ms(w, self.first_token) {
                parts.push(format!("first_token;dur={d:.1}"));
            }
        }
        parts.join(", ")
    }
}
