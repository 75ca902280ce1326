//! The error taxonomy: what went wrong in one attempt ([`Failure`]), whether trying again can help
//! (one exhaustive match, no catch-all), and how a failed call is reported to the client
//! ([`CallError`]: a stable code, a status, a message naming the limit and its configuration key,
//! the attempt trail and a one-line diagnosis).

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use serde_json::json;

use crate::deadlines::Limit;

/// How far an attempt got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connecting (DNS, TCP, TLS).
    Connect,
    /// Sending the request.
    Write,
    /// Waiting for the response headers.
    FirstByte,
    /// Headers received, waiting for the first meaningful content.
    FirstToken,
    /// Reading the body.
    Body,
    /// The response is complete.
    Done,
}

impl Phase {
    /// The word used in errors and headers.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Write => "write",
            Phase::FirstByte => "first_byte",
            Phase::FirstToken => "first_token",
            Phase::Body => "body",
            Phase::Done => "done",
        }
    }
}

/// What went wrong in one attempt.
#[derive(Debug, Clone)]
pub enum FailureKind {
    /// The upstream's host name did not resolve.
    Dns(String),
    /// The upstream refused the TCP connection.
    Refused(String),
    /// The TCP connection failed otherwise (unreachable, reset during connect).
    ConnectFailed(String),
    /// The TLS handshake failed.
    Tls(String),
    /// A deadline fired.
    Timeout(Limit),
    /// The connection closed (or was reset) before a complete response head.
    Closed(String),
    /// The upstream answered with an error status.
    Status {
        /// The status code.
        status: u16,
        /// Its `Retry-After`, when given.
        retry_after: Option<Duration>,
        /// The start of its body (for the client, when the error is the client's own).
        body: Bytes,
    },
    /// The stream (or body) ended before it was complete.
    Cut,
    /// A chat or completions stream ended with `[DONE]` but no choice had a `finish_reason`:
    /// the server interrupted it.
    Truncated,
    /// The response could not be parsed.
    Malformed(String),
}

/// One failed attempt.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What went wrong.
    pub kind: FailureKind,
    /// How far the attempt got.
    pub phase: Phase,
}

impl FailureKind {
    /// The stable error code clients and metrics see.
    pub fn code(&self) -> &'static str {
        match self {
            FailureKind::Dns(_) => "dns_failure",
            FailureKind::Refused(_) => "connect_refused",
            FailureKind::ConnectFailed(_) => "connect_failed",
            FailureKind::Tls(_) => "tls_failure",
            FailureKind::Timeout(limit) => match limit {
                Limit::Connect => "connect_timeout",
                Limit::Write => "write_timeout",
                Limit::FirstByte => "first_byte_timeout",
                Limit::FirstToken => "first_token_timeout",
                Limit::Idle => "idle_timeout",
                Limit::Attempt => "attempt_timeout",
                Limit::Total => "deadline_exceeded",
            },
            FailureKind::Closed(_) => "upstream_closed",
            FailureKind::Status { status: 429, .. } => "rate_limited",
            FailureKind::Status { .. } => "upstream_status",
            FailureKind::Cut => "upstream_cut",
            FailureKind::Truncated => "upstream_truncated",
            FailureKind::Malformed(_) => "upstream_malformed",
        }
    }

    /// Whether another attempt (here or on another upstream) can help. Exhaustive on purpose:
    /// a new kind must decide.
    pub fn retryable(&self) -> bool {
        match self {
            FailureKind::Dns(_)
            | FailureKind::Refused(_)
            | FailureKind::ConnectFailed(_)
            | FailureKind::Tls(_)
            | FailureKind::Closed(_)
            | FailureKind::Cut
            | FailureKind::Truncated
            | FailureKind::Malformed(_) => true,
            FailureKind::Timeout(limit) => match limit {
                Limit::Connect
                | Limit::Write
                | Limit::FirstByte
                | Limit::FirstToken
                | Limit::Idle
                | Limit::Attempt => true,
                Limit::Total => false,
            },
            FailureKind::Status { status, .. } => retryable_status(*status),
        }
    }
}

/// Statuses worth another try: timeouts, rate limits, server errors and the CDN/LB family
/// (520–524 Cloudflare, 529 overloaded). Never another 4xx: the request itself is wrong.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504 | 520..=524 | 529)
}

/// One attempt as the trail reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// The upstream tried.
    pub upstream: String,
    /// The model name sent to it.
    pub model: String,
    /// How far it got.
    pub phase: Phase,
    /// Its duration.
    pub elapsed: Duration,
    /// `ok` or the failure's code.
    pub outcome: &'static str,
    /// The upstream's status, when one came.
    pub status: Option<u16>,
}

/// A call that failed, as the client is told.
#[derive(Debug, Clone)]
pub struct CallError {
    /// Stable code (`first_token_timeout`, `no_route`, …).
    pub code: &'static str,
    /// HTTP status for the client.
    pub status: StatusCode,
    /// What happened, which limit, and where it is configured.
    pub message: String,
    /// The likely cause and the fix, in one line.
    pub diagnosis: &'static str,
    /// Every attempt made.
    pub trail: Vec<AttemptRecord>,
    /// How long the call took.
    pub elapsed: Duration,
    /// `Retry-After` to send (rate limits).
    pub retry_after: Option<Duration>,
    /// The upstream's own error object, when the failure is its answer.
    pub upstream_error: Option<serde_json::Value>,
}

impl CallError {
    /// An error decided before any attempt (bad request, unknown model).
    pub fn before_attempts(code: &'static str, status: StatusCode, message: String) -> CallError {
        CallError {
            code,
            status,
            message,
            diagnosis: diagnosis(code),
            trail: Vec::new(),
            elapsed: Duration::ZERO,
            retry_after: None,
            upstream_error: None,
        }
    }

    /// OpenAI's error type for this error.
    pub fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            429 => "rate_limit_error",
            504 => "timeout_error",
            400..=499 => "invalid_request_error",
            _ => "upstream_error",
        }
    }

    /// The body in OpenAI's error shape with an `hourglass` object (trail and diagnosis).
    pub fn to_json(&self) -> serde_json::Value {
        let attempts: Vec<_> = self
            .trail
            .iter()
            .map(|a| {
                json!({"upstream": a.upstream, "model": a.model, "phase": a.phase.name(),
                       "elapsed_ms": a.elapsed.as_millis() as u64, "outcome": a.outcome, "status": a.status})
            })
            .collect();
        let mut hourglass = json!({"diagnosis": self.diagnosis, "attempts": attempts,
                                   "elapsed_ms": self.elapsed.as_millis() as u64});
        if let Some(upstream) = &self.upstream_error {
            hourglass["upstream_error"] = upstream.clone();
        }
        json!({"error": {"message": self.message, "type": self.kind(), "param": null,
                         "code": self.code, "hourglass": hourglass}})
    }

    /// The error as an SSE event, `data: {"error": …}`, the way a stream that already began ends.
    pub fn to_sse_event(&self) -> Bytes {
        let mut event = b"data: ".to_vec();
        event.extend_from_slice(&self.to_bytes());
        event.extend_from_slice(b"\n\n");
        Bytes::from(event)
    }

    /// The body as bytes.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(
            serde_json::to_vec(&self.to_json()).expect("serializing a json value cannot fail"),
        )
    }
}

/// The HTTP status a failure kind is reported with when it ends the call.
pub fn status_of(kind: &FailureKind) -> StatusCode {
    match kind {
        FailureKind::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        FailureKind::Status { status: 429, .. } => StatusCode::TOO_MANY_REQUESTS,
        FailureKind::Status { status, .. } if (400..500).contains(status) => {
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
        }
        FailureKind::Dns(_)
        | FailureKind::Refused(_)
        | FailureKind::ConnectFailed(_)
        | FailureKind::Tls(_)
        | FailureKind::Closed(_)
        | FailureKind::Status { .. }
        | FailureKind::Cut
        | FailureKind::Truncated
        | FailureKind::Malformed(_) => StatusCode::BAD_GATEWAY,
    }
}

/// The one-line diagnosis of an error code.
pub fn diagnosis(code: &str) -> &'static str {
    match code {
        "dns_failure" => {
            "the upstream's host name does not resolve: check base_url and this machine's DNS; the network, not the API"
        }
        "connect_refused" => {
            "nothing listens at the upstream's address, or a firewall rejects it: check base_url and that the service is up"
        }
        "connect_failed" => {
            "the network cannot reach the upstream (unreachable or reset during connect): check routes, proxies and firewalls"
        }
        "tls_failure" => {
            "the TLS handshake failed: check the URL scheme and port, the certificate, and any intercepting proxy"
        }
        "connect_timeout" => {
            "no TCP/TLS handshake completed in time: the host is unreachable or dropping packets (network, not the API); raise timeouts.connect only for slow links"
        }
        "write_timeout" => {
            "the request body could not be sent in time: a large upload on a slow link; raise timeouts.write or shrink the request"
        }
        "first_byte_timeout" => {
            "the upstream accepted the request but sent no response headers in time: overloaded or hung server, or a proxy waiting on it"
        }
        "first_token_timeout" => {
            "the upstream answered but produced no content in time: overloaded, or a reasoning model thinking longer than timeouts.first_token allows"
        }
        "idle_timeout" => {
            "the stream stalled between tokens for longer than timeouts.idle: an overloaded or stuck upstream; keep-alive comments do not count as progress"
        }
        "attempt_timeout" => {
            "one try took longer than timeouts.attempt: a slow generation; raise it (or attempt_growth) for long outputs, or stream"
        }
        "deadline_exceeded" => {
            "the call's total deadline passed (timeouts.total or the client's own timeout) before any upstream answered in full"
        }
        "upstream_closed" => {
            "the upstream closed or reset the connection before answering: a crashing server, an idle-timeout on a proxy, or a load balancer cutting it"
        }
        "rate_limited" => {
            "the upstream is rate limiting: spread load over more upstreams or keys, or lower the request rate"
        }
        "upstream_status" => {
            "the upstream answered with an error status; its own message is included"
        }
        "upstream_cut" => {
            "the upstream ended the response before it was complete (no [DONE]): a crash or a proxy cutting long responses"
        }
        "upstream_truncated" => {
            "the upstream ended the stream with [DONE] but no finish_reason: it interrupted the answer (llama.cpp's server does when a newer request arrives); the text is incomplete"
        }
        "upstream_malformed" => {
            "the upstream sent a response that is not valid JSON or SSE: a proxy's error page or a broken server"
        }
        "retry_budget_exhausted" => {
            "retries are capped at a share of recent calls (retry_budget) and that share is spent: upstreams are failing broadly, so retrying would only add load"
        }
        "no_route" => {
            "no upstream serves this model: add it to an upstream's models or a [models.NAME] table"
        }
        "bad_request" => {
            "the request itself is not valid: fix it on the client side; retrying cannot help"
        }
        "request_too_large" => "the request body is larger than server.max_request_body",
        "request_timeout" => {
            "the client sent its request body too slowly (server.body_read_timeout): a slow or stalled client, or a slowloris"
        }
        _ => "see docs/errors.md",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds() -> Vec<FailureKind> {
        let mut kinds = vec![
            FailureKind::Dns("x".into()),
            FailureKind::Refused("x".into()),
            FailureKind::ConnectFailed("x".into()),
            FailureKind::Tls("x".into()),
            FailureKind::Closed("x".into()),
            FailureKind::Status {
                status: 503,
                retry_after: None,
                body: Bytes::new(),
            },
            FailureKind::Status {
                status: 429,
                retry_after: None,
                body: Bytes::new(),
            },
            FailureKind::Cut,
            FailureKind::Truncated,
            FailureKind::Malformed("x".into()),
        ];
        for limit in [
            Limit::Connect,
            Limit::Write,
            Limit::FirstByte,
            Limit::FirstToken,
            Limit::Idle,
            Limit::Attempt,
            Limit::Total,
        ] {
            kinds.push(FailureKind::Timeout(limit));
        }
        kinds
    }

    #[test]
    fn every_kind_has_its_own_code_and_diagnosis() {
        let kinds = kinds();
        let codes: std::collections::HashSet<_> = kinds.iter().map(FailureKind::code).collect();
        assert_eq!(codes.len(), kinds.len(), "codes differ");
        let diagnoses: std::collections::HashSet<_> = codes.iter().map(|c| diagnosis(c)).collect();
        assert_eq!(diagnoses.len(), codes.len(), "diagnoses differ");
        assert!(diagnoses.iter().all(|d| *d != "see docs/errors.md"));
    }

    #[test]
    fn only_the_right_statuses_are_retried() {
        for status in [408, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529] {
            assert!(retryable_status(status), "{status}");
        }
        for status in [400, 401, 403, 404, 409, 413, 422, 501, 505, 525] {
            assert!(!retryable_status(status), "{status}");
        }
        assert!(
            !FailureKind::Timeout(Limit::Total).retryable(),
            "no time is left"
        );
        assert!(FailureKind::Timeout(Limit::FirstToken).retryable());
    }

    #[test]
    fn statuses_follow_the_kind_of_failure() {
        assert_eq!(
            status_of(&FailureKind::Timeout(Limit::Idle)),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(status_of(&FailureKind::Cut), StatusCode::BAD_GATEWAY);
        let limited = FailureKind::Status {
            status: 429,
            retry_after: None,
            body: Bytes::new(),
        };
        assert_eq!(status_of(&limited), StatusCode::TOO_MANY_REQUESTS);
        let own = FailureKind::Status {
            status: 400,
            retry_after: None,
            body: Bytes::new(),
        };
        assert_eq!(
            status_of(&own),
            StatusCode::BAD_REQUEST,
            "the client's own error keeps its status"
        );
        let server = FailureKind::Status {
            status: 503,
            retry_after: None,
            body: Bytes::new(),
        };
        assert_eq!(status_of(&server), StatusCode::BAD_GATEWAY);
    }
}
