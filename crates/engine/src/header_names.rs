//! The non-standard header names the gateway reads and writes on every call, parsed once: a
//! lookup or insert by `&str` parses and validates the name each time, and these are on every
//! call's path.

use http::HeaderName;

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
