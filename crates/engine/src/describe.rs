//! The messages of failed calls: what happened, on which upstream, which limit fired, its value
//! and the configuration key (or client header) that set it — the words of `docs/errors.md`.

use std::time::Duration;

use hourglass_config::Timeouts;

use crate::attempts::Context;
use crate::deadlines::Limit;
use crate::error::FailureKind;

/// Writes the messages of failures: what happened, which limit, its value and where it is set.
#[derive(Debug, Clone)]
pub(crate) struct Describer {
    timeouts: Timeouts,
    sources: Vec<hourglass_config::Sourced>,
    total: Duration,
    client_source: Option<String>,
}

impl Describer {
    pub(crate) fn new(ctx: &Context<'_>) -> Describer {
        Describer {
            timeouts: ctx.route.policy.timeouts,
            sources: ctx.route.sources.clone(),
            total: ctx
                .deadlines
                .total
                .saturating_duration_since(ctx.deadlines.start),
            client_source: ctx.deadlines.client_set_total.then(|| {
                ctx.client_source
                    .unwrap_or("the client's timeout")
                    .to_owned()
            }),
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

    fn total_source(&self) -> String {
        match &self.client_source {
            Some(source) => format!("{} from {source}", crate_fmt(self.total)),
            None => format!("{} ({})", crate_fmt(self.total), self.key("timeouts.total")),
        }
    }

    /// The message of one failure on `upstream`.
    pub(crate) fn describe(&self, kind: &FailureKind, upstream: &str) -> String {
        let t = &self.timeouts;
        let limit = |what: &str, value: Duration, key: &str| {
            format!(
                "upstream `{upstream}` {what} within {} ({})",
                crate_fmt(value),
                self.key(key)
            )
        };
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
            FailureKind::Timeout(Limit::Connect) => limit(
                "did not complete a connection",
                t.connect,
                "timeouts.connect",
            ),
            FailureKind::Timeout(Limit::Write) => {
                limit("did not take the request body", t.write, "timeouts.write")
            }
            FailureKind::Timeout(Limit::FirstByte) => limit(
                "sent no response headers",
                t.first_byte,
                "timeouts.first_byte",
            ),
            FailureKind::Timeout(Limit::FirstToken) => {
                limit("sent no first token", t.first_token, "timeouts.first_token")
            }
            FailureKind::Timeout(Limit::Idle) => format!(
                "upstream `{upstream}` stalled: no content for {} ({})",
                crate_fmt(t.idle),
                self.key("timeouts.idle")
            ),
            FailureKind::Timeout(Limit::Attempt) => {
                limit("did not finish an attempt", t.attempt, "timeouts.attempt")
            }
            FailureKind::Timeout(Limit::Total) => format!(
                "the call's deadline of {} passed while waiting on upstream `{upstream}`",
                self.total_source()
            ),
            FailureKind::Closed(detail) => {
                format!("upstream `{upstream}` closed the connection before answering ({detail})")
            }
            FailureKind::Status {
                status: 429,
                retry_after,
                ..
            } => match retry_after {
                Some(after) => format!(
                    "upstream `{upstream}` is rate limiting (429, retry after {})",
                    crate_fmt(*after)
                ),
                None => format!("upstream `{upstream}` is rate limiting (429)"),
            },
            FailureKind::Status { status, body, .. } => {
                let detail = serde_json::from_slice::<serde_json::Value>(body)
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
                    });
                if detail.is_empty() {
                    format!("upstream `{upstream}` answered {status}")
                } else {
                    format!("upstream `{upstream}` answered {status}: {detail}")
                }
            }
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
}

/// The total deadline's value and source, for a call that could not start an attempt.
pub(crate) fn total_source(ctx: &Context<'_>) -> String {
    Describer::new(ctx).total_source()
}

/// Durations in messages: `8s`, `250ms`, `1.5s`.
fn crate_fmt(duration: Duration) -> String {
    hourglass_config::duration::format(duration)
}
