//! The messages of failed calls: what happened, on which upstream, which limit fired, its value
//! and the configuration key (or client header) that set it — the words of `docs/errors.md`.

use std::time::Duration;

use hourglass_config::Timeouts;

use crate::deadlines::Deadlines;
use crate::error::FailureKind;
use crate::vocabulary::Limit;

/// Writes the messages of failures: what happened, which limit, its value and where it is set.
#[derive(Debug, Clone)]
pub(crate) struct Describer {
    timeouts: Timeouts,
    sources: std::sync::Arc<[hourglass_config::Sourced]>,
    total: Duration,
    client_source: Option<String>,
}

impl Describer {
    /// The messages of a call on `route` with `deadlines`; `client_source` names the header
    /// that set the client's deadline, if one did.
    pub(crate) fn new(
        route: &hourglass_config::ModelRoute,
        deadlines: &Deadlines,
        client_source: Option<&str>,
    ) -> Describer {
        Describer {
            timeouts: route.policy.timeouts,
            sources: route.sources.clone(),
            total: deadlines.total.saturating_duration_since(deadlines.start),
            client_source: deadlines
                .client_set_total
                .then(|| client_source.unwrap_or("the client's timeout").to_owned()),
        }
    }

    fn key(&self, key: &str) -> String {
        let source = self
            .sources
            .iter()
            .find(|s| s.key == key)
            .map(|s| s.source.as_str())
            .unwrap_or("built-in");
        if source.starts_with("built-in") {
            format!("{key}, {source}")
        } else {
            source.to_owned()
        }
    }

    /// The total deadline's value and where it was set.
    pub(crate) fn total_source(&self) -> String {
        match &self.client_source {
            Some(source) => format!("{} from {source}", crate_fmt(self.total)),
            None => format!("{} ({})", crate_fmt(self.total), self.key("timeouts.total")),
        }
    }

    /// The message of one failure on `upstream`.
    pub(crate) fn describe(&self, kind: &FailureKind, upstream: &str) -> String {
        match kind {
            FailureKind::Dns(detail) => {
                format!("cannot resolve the host of upstream `{upstream}`: {detail}")
            }
            FailureKind::Refused(detail) => {
                format!("upstream `{upstream}` refused the connection ({detail})")
            }
            FailureKind::ConnectFailed(detail) => {
                format!("cannot connect to upstream `{upstream}`: {detail}")
            }
            FailureKind::Tls(detail) => {
                format!("the TLS handshake with upstream `{upstream}` failed: {detail}")
            }
            FailureKind::Timeout(limit) => self.timeout(*limit, upstream),
            FailureKind::Closed(detail) => {
                format!("upstream `{upstream}` closed the connection before answering ({detail})")
            }
            FailureKind::Status {
                status: 429,
                retry_after: Some(after),
                ..
            } => format!(
                "upstream `{upstream}` is rate limiting (429, retry after {})",
                crate_fmt(*after)
            ),
            FailureKind::Status { status: 429, .. } => {
                format!("upstream `{upstream}` is rate limiting (429)")
            }
            FailureKind::Status { status, body, .. } => match status_detail(body) {
                detail if detail.is_empty() => format!("upstream `{upstream}` answered {status}"),
                detail => format!("upstream `{upstream}` answered {status}: {detail}"),
            },
            FailureKind::Cut => {
                format!("upstream `{upstream}` ended the response before it was complete")
            }
            FailureKind::Truncated => format!(
                "upstream `{upstream}` ended the stream with [DONE] before any finish_reason: the server interrupted the answer"
            ),
            FailureKind::Malformed(detail) => {
                format!("upstream `{upstream}` sent a malformed response: {detail}")
            }
        }
    }

    /// The message of a timeout at `limit`: what did not happen, within which value, set where.
    fn timeout(&self, limit: Limit, upstream: &str) -> String {
        let t = &self.timeouts;
        let (what, value) = match limit {
            Limit::Connect => ("did not complete a connection", t.connect),
            Limit::Write => ("did not take the request body", t.write),
            Limit::FirstByte => ("sent no response headers", t.first_byte),
            Limit::FirstToken => ("sent no first token", t.first_token),
            Limit::Attempt => ("did not finish an attempt", t.attempt),
            Limit::Idle => {
                return format!(
                    "upstream `{upstream}` stalled: no content for {} ({})",
                    crate_fmt(t.idle),
                    self.key(limit.key())
                );
            }
            Limit::Total => {
                return format!(
                    "the call's deadline of {} passed while waiting on upstream `{upstream}`",
                    self.total_source()
                );
            }
        };
        format!(
            "upstream `{upstream}` {what} within {} ({})",
            crate_fmt(value),
            self.key(limit.key())
        )
    }
}

/// The upstream's own message in an error body (`error.message`), or the body's start.
fn status_detail(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| {
            String::from_utf8_lossy(&body[..body.len().min(200)])
                .trim()
                .to_owned()
        })
}

/// Durations in messages: `8s`, `250ms`, `1.5s`.
fn crate_fmt(duration: Duration) -> String {
    hourglass_config::duration::format(duration)
}
