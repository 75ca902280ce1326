//! The client's own deadline. `x-hourglass-timeout` (e.g. `2.5s`, `2500ms`) sets it; the OpenAI
//! SDKs' `x-stainless-timeout` (whole seconds, Node) and `x-stainless-read-timeout` (seconds,
//! Python) are honoured as upper bounds. The gateway answers a margin before it — a tenth of the
//! timeout at most — so the client reads a timeout error instead of dying on a bare disconnect.
//! Every declared timeout is capped at [`MAX_CLIENT_TIMEOUT`]: a client cannot push a deadline
//! past what the clock can hold.

use std::time::Duration;

use hourglass_engine::header_names as names;
use http::HeaderMap;

/// The longest timeout a client may declare; a longer one counts as this (a day: longer than any
/// configured `total`).
pub const MAX_CLIENT_TIMEOUT: Duration = Duration::from_secs(86_400);

/// The timeouts a client declared.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientTimeouts {
    /// The shortest declared timeout.
    pub timeout: Duration,
    /// Where it came from, for messages (e.g. `x-hourglass-timeout: 2.5s`).
    pub source: String,
}

/// Reads the client's timeout headers; `Err` names a malformed `x-hourglass-timeout`. `flowing`:
/// the client hears bytes while the call runs (a stream, or heartbeats), so the SDK's read
/// timeout — a timer between bytes — is kept alive and bounds nothing.
pub fn client_timeouts(
    headers: &HeaderMap,
    flowing: bool,
) -> Result<Option<ClientTimeouts>, String> {
    let mut best: Option<ClientTimeouts> = None;
    let mut offer = |timeout: Duration, source: String| {
        if best.as_ref().is_none_or(|b| timeout < b.timeout) {
            best = Some(ClientTimeouts { timeout, source });
        }
    };
    if let Some(value) = headers.get(names::X_HOURGLASS_TIMEOUT) {
        let text = value
            .to_str()
            .map_err(|_| "x-hourglass-timeout is not visible ASCII".to_owned())?
            .trim();
        match hourglass_config::duration::parse(text) {
            Ok(d) if !d.is_zero() => offer(
                d.min(MAX_CLIENT_TIMEOUT),
                format!("x-hourglass-timeout: {text}"),
            ),
            Ok(_) => return Err("x-hourglass-timeout must be more than 0s".to_owned()),
            Err(e) => return Err(format!("x-hourglass-timeout: {e}")),
        }
    }
    let seconds = |name: http::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|t| t.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|s| {
                (
                    Duration::from_secs_f64(s.min(MAX_CLIENT_TIMEOUT.as_secs_f64())),
                    s,
                )
            })
            // Below a nanosecond it rounds to nothing: a deadline already past, not a timeout.
            .filter(|(d, _)| !d.is_zero())
    };
    if let Some((d, s)) = seconds(names::X_STAINLESS_TIMEOUT) {
        offer(d, format!("x-stainless-timeout: {s}"));
    }
    // A read timeout bounds silence: a non-streaming client hears nothing until the whole answer.
    if !flowing && let Some((d, s)) = seconds(names::X_STAINLESS_READ_TIMEOUT) {
        offer(d, format!("x-stainless-read-timeout: {s}"));
    }
    Ok(best)
}

/// How long before the client's deadline the gateway answers: the configured margin, at most a
/// tenth of the client's timeout.
pub(crate) fn margin(timeout: Duration, configured: Duration) -> Duration {
    configured.min(timeout / 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn the_shortest_declared_timeout_wins() {
        assert_eq!(client_timeouts(&headers(&[]), false), Ok(None));
        let ours = client_timeouts(&headers(&[("x-hourglass-timeout", "2.5s")]), false)
            .unwrap()
            .unwrap();
        assert_eq!(ours.timeout, Duration::from_millis(2500));
        assert_eq!(ours.source, "x-hourglass-timeout: 2.5s");
        let sdk = client_timeouts(
            &headers(&[
                ("x-hourglass-timeout", "30s"),
                ("x-stainless-timeout", "10"),
            ]),
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(sdk.timeout, Duration::from_secs(10));
        let read = client_timeouts(&headers(&[("x-stainless-read-timeout", "0.5")]), false)
            .unwrap()
            .unwrap();
        assert_eq!(read.timeout, Duration::from_millis(500));
        assert_eq!(
            client_timeouts(&headers(&[("x-stainless-read-timeout", "0.5")]), true),
            Ok(None),
            "a stream is not silent"
        );
        assert_eq!(
            client_timeouts(&headers(&[("x-stainless-timeout", "abc")]), false),
            Ok(None),
            "an SDK header we cannot read is ignored"
        );
        // Found by fuzzing: a positive value that rounds to zero was a zero deadline.
        assert_eq!(
            client_timeouts(
                &headers(&[("x-stainless-timeout", ".0000000000083")]),
                false
            ),
            Ok(None)
        );
    }

    /// Found by a hostile client: a timeout this large overflowed the deadline's instant and
    /// panicked the request's task.
    #[test]
    fn an_enormous_timeout_is_capped_at_a_day() {
        for (name, value) in [
            ("x-hourglass-timeout", "9223372036854775807s"),
            ("x-stainless-timeout", "9223372036854775807"),
            ("x-stainless-read-timeout", "1e300"),
        ] {
            let declared = client_timeouts(&headers(&[(name, value)]), false)
                .unwrap()
                .unwrap();
            assert_eq!(declared.timeout, MAX_CLIENT_TIMEOUT, "{name}");
            assert!(
                tokio::time::Instant::now()
                    .checked_add(declared.timeout)
                    .is_some()
            );
        }
    }

    #[test]
    fn a_malformed_hourglass_timeout_is_refused_with_the_fix() {
        let error =
            client_timeouts(&headers(&[("x-hourglass-timeout", "2500")]), false).unwrap_err();
        assert!(
            error.contains("x-hourglass-timeout") && error.contains("unit"),
            "{error}"
        );
        assert!(client_timeouts(&headers(&[("x-hourglass-timeout", "0s")]), false).is_err());
    }

    #[test]
    fn the_margin_is_at_most_a_tenth_of_the_timeout() {
        assert_eq!(
            margin(Duration::from_secs(60), Duration::from_millis(500)),
            Duration::from_millis(500)
        );
        assert_eq!(
            margin(Duration::from_secs(2), Duration::from_millis(500)),
            Duration::from_millis(200)
        );
    }
}
