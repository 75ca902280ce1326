//! What went wrong: in one attempt ([`FailureKind`], and whether trying again can help — one
//! exhaustive match, no catch-all), and for the whole call ([`CallError`]: a code, a status, a
//! message naming the limit and its configuration key, and the attempt trail). How an error is
//! written on the wire belongs to the call's protocol (`protocol`).

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use serde::{Serialize, Serializer};

use crate::vocabulary::{ErrorCode, Limit, Outcome, Phase};

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

impl FailureKind {
    /// The stable error code clients and metrics see.
    pub fn code(&self) -> ErrorCode {
        match self {
            FailureKind::Dns(_) => ErrorCode::DnsFailure,
            FailureKind::Refused(_) => ErrorCode::ConnectRefused,
            FailureKind::ConnectFailed(_) => ErrorCode::ConnectFailed,
            FailureKind::Tls(_) => ErrorCode::TlsFailure,
            FailureKind::Timeout(limit) => limit.code(),
            FailureKind::Closed(_) => ErrorCode::UpstreamClosed,
            FailureKind::Status { status: 429, .. } => ErrorCode::RateLimited,
            FailureKind::Status { .. } => ErrorCode::UpstreamStatus,
            FailureKind::Cut => ErrorCode::UpstreamCut,
            FailureKind::Truncated => ErrorCode::UpstreamTruncated,
            FailureKind::Malformed(_) => ErrorCode::UpstreamMalformed,
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

    /// Whether the failure counts against the upstream's health: every timeout, refusal, close,
    /// cut, malformed answer, 429 and 5xx does; the client's own 4xx errors do not.
    pub fn blames_upstream(&self) -> bool {
        match self {
            FailureKind::Status { status, .. } => retryable_status(*status),
            _ => true,
        }
    }

    /// The HTTP status the failure is reported with when it ends the call.
    pub fn status(&self) -> StatusCode {
        match self {
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
}

/// Statuses worth another try: timeouts, rate limits, server errors and the CDN/LB family
/// (520–524 Cloudflare, 529 overloaded). Never another 4xx: the request itself is wrong.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504 | 520..=524 | 529)
}

/// One attempt as the trail reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptRecord {
    /// The upstream tried.
    pub upstream: String,
    /// The model name sent to it.
    pub model: String,
    /// How far it got.
    pub phase: Phase,
    /// Its duration (`elapsed_ms` on the wire).
    #[serde(rename = "elapsed_ms", serialize_with = "milliseconds")]
    pub elapsed: Duration,
    /// `ok`, `hedge_cancelled` or the failure's code.
    pub outcome: Outcome,
    /// The upstream's status, when one came.
    pub status: Option<u16>,
}

fn milliseconds<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(duration.as_millis() as u64)
}

/// A call that failed, as the client is told.
#[derive(Debug, Clone)]
pub struct CallError {
    /// Stable code (`first_token_timeout`, `no_route`, …).
    pub code: ErrorCode,
    /// HTTP status for the client.
    pub status: StatusCode,
    /// What happened, which limit, and where it is configured.
    pub message: String,
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
    /// An error decided before any attempt (bad request, unknown model, a missing key).
    pub fn before_attempts(code: ErrorCode, status: StatusCode, message: String) -> CallError {
        CallError {
            code,
            status,
            message,
            trail: Vec::new(),
            elapsed: Duration::ZERO,
            retry_after: None,
            upstream_error: None,
        }
    }

    /// The likely cause and the fix, in one line.
    pub fn diagnosis(&self) -> &'static str {
        self.code.diagnosis()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds() -> Vec<FailureKind> {
        let status = |status| FailureKind::Status {
            status,
            retry_after: None,
            body: Bytes::new(),
        };
        let mut kinds = vec![
            FailureKind::Dns("x".into()),
            FailureKind::Refused("x".into()),
            FailureKind::ConnectFailed("x".into()),
            FailureKind::Tls("x".into()),
            FailureKind::Closed("x".into()),
            status(503),
            status(429),
            FailureKind::Cut,
            FailureKind::Truncated,
            FailureKind::Malformed("x".into()),
        ];
        kinds.extend(Limit::ALL.iter().map(|limit| FailureKind::Timeout(*limit)));
        kinds
    }

    #[test]
    fn every_kind_has_its_own_code() {
        let kinds = kinds();
        let codes: std::collections::HashSet<_> = kinds.iter().map(FailureKind::code).collect();
        assert_eq!(codes.len(), kinds.len(), "codes differ");
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
        let status = |status| FailureKind::Status {
            status,
            retry_after: None,
            body: Bytes::new(),
        };
        assert_eq!(
            FailureKind::Timeout(Limit::Idle).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(FailureKind::Cut.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(status(429).status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            status(400).status(),
            StatusCode::BAD_REQUEST,
            "the client's own error keeps its status"
        );
        assert_eq!(status(503).status(), StatusCode::BAD_GATEWAY);
        assert!(!status(400).blames_upstream());
        assert!(status(503).blames_upstream());
    }
}
