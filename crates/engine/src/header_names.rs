//! The non-standard header names the gateway reads and writes on every call, and the names
//! upstreams usually answer with, parsed once: a lookup or insert by `&str` parses and validates
//! the name each time, and these are on every call's path.

use http::{HeaderName, header};

/// The client's (or the gateway's own) request id.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The upstream's own request id, kept beside the gateway's.
pub const X_UPSTREAM_REQUEST_ID: HeaderName = HeaderName::from_static("x-upstream-request-id");
/// Which upstream answered.
pub const X_HOURGLASS_UPSTREAM: HeaderName = HeaderName::from_static("x-hourglass-upstream");
/// How many attempts a call took.
pub const X_HOURGLASS_ATTEMPTS: HeaderName = HeaderName::from_static("x-hourglass-attempts");
/// The client's own deadline for a call.
pub const X_HOURGLASS_TIMEOUT: HeaderName = HeaderName::from_static("x-hourglass-timeout");
/// The client's heartbeat interval (or `off`).
pub const X_HOURGLASS_HEARTBEAT: HeaderName = HeaderName::from_static("x-hourglass-heartbeat");
/// The OpenAI SDKs' whole-call timeout, in seconds.
pub const X_STAINLESS_TIMEOUT: HeaderName = HeaderName::from_static("x-stainless-timeout");
/// The OpenAI SDKs' read timeout, in seconds.
pub const X_STAINLESS_READ_TIMEOUT: HeaderName =
    HeaderName::from_static("x-stainless-read-timeout");
/// Anthropic's key header.
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// Azure OpenAI's key header.
pub const API_KEY: HeaderName = HeaderName::from_static("api-key");
/// Anthropic's API version, which marks an Anthropic client.
pub const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
/// RFC 7240's preferences (`respond-async`).
pub const PREFER: HeaderName = HeaderName::from_static("prefer");
/// An answer's phases, in tenths of a millisecond.
pub const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// Header names upstreams send on nearly every answer (any HTTP server's, OpenAI's and
/// Anthropic's), each beside its text, shortest first. [`upstream_name`] finds one without
/// `HeaderName::from_bytes`, which lowers the name into a buffer and walks its table of standard
/// names, and for any other name copies it into an allocation of its own: that cost about 120
/// instructions a header on every answer's head.
static UPSTREAM_NAMES: [(&str, HeaderName); 46] = [
    ("via", header::VIA),
    ("date", header::DATE),
    ("etag", header::ETAG),
    ("vary", header::VARY),
    ("cf-ray", HeaderName::from_static("cf-ray")),
    ("server", header::SERVER),
    ("alt-svc", header::ALT_SVC),
    ("connection", header::CONNECTION),
    ("keep-alive", HeaderName::from_static("keep-alive")),
    ("request-id", HeaderName::from_static("request-id")),
    ("set-cookie", header::SET_COOKIE),
    ("retry-after", header::RETRY_AFTER),
    ("content-type", header::CONTENT_TYPE),
    ("x-request-id", X_REQUEST_ID),
    ("cache-control", header::CACHE_CONTROL),
    ("content-length", header::CONTENT_LENGTH),
    ("openai-project", HeaderName::from_static("openai-project")),
    ("openai-version", HeaderName::from_static("openai-version")),
    (
        "cf-cache-status",
        HeaderName::from_static("cf-cache-status"),
    ),
    ("content-encoding", header::CONTENT_ENCODING),
    ("transfer-encoding", header::TRANSFER_ENCODING),
    (
        "openai-organization",
        HeaderName::from_static("openai-organization"),
    ),
    (
        "openai-processing-ms",
        HeaderName::from_static("openai-processing-ms"),
    ),
    ("x-content-type-options", header::X_CONTENT_TYPE_OPTIONS),
    (
        "x-ratelimit-limit-tokens",
        HeaderName::from_static("x-ratelimit-limit-tokens"),
    ),
    (
        "x-ratelimit-reset-tokens",
        HeaderName::from_static("x-ratelimit-reset-tokens"),
    ),
    (
        "anthropic-organization-id",
        HeaderName::from_static("anthropic-organization-id"),
    ),
    (
        "strict-transport-security",
        header::STRICT_TRANSPORT_SECURITY,
    ),
    (
        "x-ratelimit-limit-requests",
        HeaderName::from_static("x-ratelimit-limit-requests"),
    ),
    (
        "x-ratelimit-reset-requests",
        HeaderName::from_static("x-ratelimit-reset-requests"),
    ),
    (
        "access-control-allow-origin",
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
    ),
    (
        "x-ratelimit-remaining-tokens",
        HeaderName::from_static("x-ratelimit-remaining-tokens"),
    ),
    (
        "x-envoy-upstream-service-time",
        HeaderName::from_static("x-envoy-upstream-service-time"),
    ),
    (
        "x-ratelimit-remaining-requests",
        HeaderName::from_static("x-ratelimit-remaining-requests"),
    ),
    (
        "anthropic-ratelimit-tokens-limit",
        HeaderName::from_static("anthropic-ratelimit-tokens-limit"),
    ),
    (
        "anthropic-ratelimit-tokens-reset",
        HeaderName::from_static("anthropic-ratelimit-tokens-reset"),
    ),
    (
        "anthropic-ratelimit-requests-limit",
        HeaderName::from_static("anthropic-ratelimit-requests-limit"),
    ),
    (
        "anthropic-ratelimit-requests-reset",
        HeaderName::from_static("anthropic-ratelimit-requests-reset"),
    ),
    (
        "anthropic-ratelimit-tokens-remaining",
        HeaderName::from_static("anthropic-ratelimit-tokens-remaining"),
    ),
    (
        "anthropic-ratelimit-input-tokens-limit",
        HeaderName::from_static("anthropic-ratelimit-input-tokens-limit"),
    ),
    (
        "anthropic-ratelimit-input-tokens-reset",
        HeaderName::from_static("anthropic-ratelimit-input-tokens-reset"),
    ),
    (
        "anthropic-ratelimit-requests-remaining",
        HeaderName::from_static("anthropic-ratelimit-requests-remaining"),
    ),
    (
        "anthropic-ratelimit-output-tokens-limit",
        HeaderName::from_static("anthropic-ratelimit-output-tokens-limit"),
    ),
    (
        "anthropic-ratelimit-output-tokens-reset",
        HeaderName::from_static("anthropic-ratelimit-output-tokens-reset"),
    ),
    (
        "anthropic-ratelimit-input-tokens-remaining",
        HeaderName::from_static("anthropic-ratelimit-input-tokens-remaining"),
    ),
    (
        "anthropic-ratelimit-output-tokens-remaining",
        HeaderName::from_static("anthropic-ratelimit-output-tokens-remaining"),
    ),
];

/// The name of an upstream's header, when it is a usual one (compared without case).
pub fn upstream_name(name: &[u8]) -> Option<HeaderName> {
    let from = UPSTREAM_NAMES.partition_point(|(text, _)| text.len() < name.len());
    (UPSTREAM_NAMES[from..].iter())
        .take_while(|(text, _)| text.len() == name.len())
        .find(|(text, _)| text.as_bytes() == name || text.as_bytes().eq_ignore_ascii_case(name))
        .map(|(_, known)| known.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usual_upstream_name_is_found_in_any_case_and_others_are_not() {
        assert!(UPSTREAM_NAMES.is_sorted_by_key(|(text, _)| text.len()));
        for (text, name) in &UPSTREAM_NAMES {
            assert_eq!(*text, name.as_str());
            assert_eq!(upstream_name(text.as_bytes()).as_ref(), Some(name));
            let shouted = text.to_ascii_uppercase();
            assert_eq!(
                upstream_name(shouted.as_bytes()).as_ref(),
                Some(name),
                "{shouted}"
            );
        }
        for other in [
            "",
            "x",
            "content-typf",
            "x-request-ids",
            "openai-model",
            "daté",
        ] {
            assert_eq!(upstream_name(other.as_bytes()), None, "{other}");
        }
    }
}
