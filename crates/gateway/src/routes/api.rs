//! The API calls that go through the engine: the client key checked (and never sent on), the
//! body read within `server.max_request_body` and `server.body_read_timeout`, what it asks for
//! read by the endpoint's protocol, the client's own deadline, heartbeats, and the answer — whole,
//! a committed stream, or an error in the protocol's shape.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hourglass_config::ServerSettings;
use hourglass_engine::{CallError, CallRequest, Endpoint, Engine, ErrorCode, ResponseBody};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::{auth, background, error_response, framing};
use crate::body::GatewayBody;
use crate::deadline;
use crate::gateway::{Gateway, HeldEngine};
use crate::heartbeat::{self, HeartbeatBody};

/// The API a path is, or `None` when it is not under `/v1/`. Another `/v1/*` path is passed
/// through in Anthropic's protocol when the client is one (it sends `anthropic-version`, as
/// Anthropic's SDKs and Claude Code always do), else in OpenAI's.
pub(super) fn endpoint(method: &Method, path: &str, headers: &HeaderMap) -> Option<Endpoint> {
    Some(match (method, path) {
        (&Method::POST, "/v1/chat/completions") => Endpoint::Chat,
        (&Method::POST, "/v1/completions") => Endpoint::Completions,
        (&Method::POST, "/v1/responses") => Endpoint::Responses,
        (&Method::POST, "/v1/embeddings") => Endpoint::Embeddings,
        (&Method::POST, "/v1/images/generations") => Endpoint::Images,
        (&Method::POST, "/v1/messages") => Endpoint::Messages,
        (&Method::POST, "/v1/messages/count_tokens") => Endpoint::CountTokens,
        (_, p) if p.starts_with("/v1/") && anthropic_client(headers) => Endpoint::AnthropicOther,
        (_, p) if p.starts_with("/v1/") => Endpoint::Other,
        _ => return None,
    })
}

/// Whether the client speaks Anthropic's API: it names the version it speaks.
pub(super) fn anthropic_client(headers: &HeaderMap) -> bool {
    headers.contains_key(hourglass_engine::header_names::ANTHROPIC_VERSION)
}

/// One API call: the request prepared, then answered (with heartbeats while it runs when asked).
/// The request's head is borrowed, and the call's request is made here and borrowed by the
/// engine: held once across the upstream's wait, and never copied from future to future.
pub(super) async fn call(
    gateway: &Arc<Gateway>,
    engine: HeldEngine,
    endpoint: Endpoint,
    parts: &mut Parts,
    body: Incoming,
    pinned: Option<String>,
) -> Response<GatewayBody> {
    let start = hourglass_engine::clock::now();
    let protocol = endpoint.protocol();
    // Whose jobs and stored responses these are: read before the gateway's key is removed.
    let key = background::Key::of(&parts.headers);
    let (mut request, heartbeat) = match prepare(&engine, endpoint, parts, body, start).await {
        Ok(prepared) => prepared,
        Err(error) => return error_response(protocol, &error),
    };
    request.pinned = pinned;
    // Past the client key check: the key's limits, decided from memory.
    let limits = engine.config().client_limits;
    let permit = if limits.any() {
        match gateway.limits.admit(&key.owner(), &limits) {
            Ok(permit) => Some(permit),
            Err(refused) => return limited(protocol, refused),
        }
    } else {
        None
    };
    // The usual call here; the rest — continuing a stored response, a background call,
    // heartbeats — boxed, and only when taken, so its room is not in every call's future.
    let asks = Asks {
        continues: request.continues.is_some(),
        background: background::form(gateway, &request),
        heartbeat,
    };
    let response = if asks.only_the_call() {
        let result = call_until_stopping(gateway, &engine, &request).await;
        answered(gateway, &engine, endpoint, result)
    } else {
        Box::pin(answer(gateway, engine, endpoint, request, key, asks)).await
    };
    match permit {
        Some(permit) => response.map(|inner| GatewayBody::Counted {
            inner: Box::new(inner),
            permit,
        }),
        None => response,
    }
}

/// A refusal by a client limit: 429 `client_rate_limited` with `Retry-After` and the limit's
/// name in `x-hourglass-limit`.
fn limited(
    protocol: &dyn hourglass_engine::protocol::Protocol,
    refused: hourglass_cluster::limits::Refused,
) -> Response<GatewayBody> {
    let mut error = CallError::before_attempts(
        ErrorCode::ClientRateLimited,
        StatusCode::TOO_MANY_REQUESTS,
        refused.message,
    );
    error.retry_after = Some(refused.retry_after);
    let mut response = error_response(protocol, &error);
    response
        .headers_mut()
        .insert("x-hourglass-limit", HeaderValue::from_static(refused.limit));
    response
}

/// What a prepared call asks for beyond the call itself, decided once: the usual path takes the
/// call when it asks for nothing more, and `answer` does what it asks, so the two cannot
/// disagree on which calls are usual.
struct Asks {
    /// It continues a stored response (`previous_response_id`).
    continues: bool,
    /// It is to run in the background, in this form.
    background: Option<background::Form>,
    /// It is to be sent heartbeats at this interval while it runs.
    heartbeat: Option<Duration>,
}

impl Asks {
    /// Whether the call is all it asks for.
    fn only_the_call(&self) -> bool {
        !self.continues && self.background.is_none() && self.heartbeat.is_none()
    }
}

/// The call made and answered as it asks: continued from a stored response, submitted as a
/// job, with heartbeats, or plainly (a continuation that asks nothing more).
async fn answer(
    gateway: &Arc<Gateway>,
    engine: HeldEngine,
    endpoint: Endpoint,
    mut request: CallRequest,
    key: background::Key,
    asks: Asks,
) -> Response<GatewayBody> {
    let protocol = endpoint.protocol();
    // Boxed: the job store's future is larger than everything else a call holds.
    if asks.continues
        && let Err(error) = Box::pin(background::continuation(gateway, &mut request, &key)).await
    {
        return error_response(protocol, &error);
    }
    if let Some(form) = asks.background {
        return Box::pin(background::submit(gateway, &engine, request, key, form)).await;
    }
    if let Some(interval) = asks.heartbeat {
        return with_heartbeats(gateway, Arc::clone(&*engine), request, interval);
    }
    let result = call_until_stopping(gateway, &engine, &request).await;
    answered(gateway, &engine, endpoint, result)
}

/// The engine's call of `request`, or the stop's error when the gateway stops first.
async fn call_until_stopping(
    gateway: &Gateway,
    engine: &Engine,
    request: &CallRequest,
) -> Result<hourglass_engine::Response, CallError> {
    // Biased: the call first, with no random draw a poll (the stop is rarely there).
    tokio::select! {
        biased;
        result = engine.call_borrowed(request) => result,
        () = gateway.stopping.arrived() => Err(crate::stopping::error()),
    }
}

/// The client's answer of a call's result.
fn answered(
    gateway: &Arc<Gateway>,
    engine: &Engine,
    endpoint: Endpoint,
    result: Result<hourglass_engine::Response, CallError>,
) -> Response<GatewayBody> {
    match result {
        Ok(response) => {
            if endpoint == Endpoint::Responses {
                let opening = match &response.body {
                    ResponseBody::Full(bytes) => Some(bytes.as_ref()),
                    ResponseBody::Stream(stream) => stream.opening(),
                };
                background::remember(gateway, engine, &response.headers, opening);
            }
            let mut out = Response::new(match response.body {
                ResponseBody::Full(bytes) => GatewayBody::full(bytes),
                ResponseBody::Stream(stream) => GatewayBody::Stream {
                    stream,
                    stopping: gateway.stopping.wait(),
                },
            });
            *out.status_mut() = response.status;
            *out.headers_mut() = response.headers;
            out
        }
        // The engine logs one line per call (hourglass::call), failures with their message.
        Err(error) => error_response(endpoint.protocol(), &error),
    }
}

/// The call to make, and its heartbeat interval when it has one.
async fn prepare(
    engine: &Engine,
    endpoint: Endpoint,
    parts: &mut Parts,
    body: Incoming,
    start: Instant,
) -> Result<(CallRequest, Option<Duration>), CallError> {
    // The settings of the engine this call runs on: a reload applies to whole calls.
    let settings = &engine.config().server;
    auth::client(settings, &parts.headers)?;
    refuse_dot_segments(parts.uri.path())?;
    framing::declared_body(parts, settings)?;
    let bytes = read_body(settings, body).await?;
    let head = if endpoint.passes_through() {
        Default::default()
    } else {
        hourglass_engine::request::read_head(endpoint, &bytes)
            .map_err(|bad| bad_request(bad.message))?
    };
    let heartbeat = heartbeat_interval(engine, &parts.headers, head.stream, head.model.as_deref())?;
    // A read timeout bounds silence: with heartbeats there is none, so it bounds nothing.
    let silent = !head.stream && heartbeat.is_none();
    let client_deadline = match deadline::client_timeouts(&parts.headers, !silent) {
        Ok(None) => None,
        Ok(Some(declared)) => {
            let margin = deadline::margin(declared.timeout, settings.client_deadline_margin);
            // Capped at a day, so this cannot overflow; checked all the same.
            let at = start.checked_add(declared.timeout - margin);
            at.map(|at| (at, declared.source))
        }
        Err(message) => return Err(bad_request(message)),
    };
    let uri = &parts.uri;
    let path_and_query = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let path = path_and_query.strip_prefix("/v1").unwrap_or(path_and_query);
    let method = std::mem::take(&mut parts.method);
    let mut request = CallRequest::with_head(endpoint, method, path, bytes, head);
    request.headers = std::mem::take(&mut parts.headers);
    if !settings.client_keys.is_empty() {
        // The gateway's client key, in whichever header the client sent it: never passed on.
        request.headers.remove(header::AUTHORIZATION);
        request
            .headers
            .remove(hourglass_engine::header_names::X_API_KEY);
    }
    request.client_deadline = client_deadline;
    request.start = start;
    Ok((request, heartbeat))
}

/// Refuses a path with a dot-segment (`.` or `..`), written plainly or percent-encoded (`%2e`,
/// `..%2f`, backslashes too): an upstream or a proxy that normalises paths would resolve it
/// outside the base path the gateway's key is meant for.
fn refuse_dot_segments(path: &str) -> Result<(), CallError> {
    let decoded = percent_decoded_separators(path);
    let dotted = decoded
        .split(['/', '\\'])
        .any(|segment| segment == "." || segment == "..");
    if dotted {
        return Err(bad_request(format!(
            "the path `{path}` has a dot-segment (`.` or `..`, perhaps percent-encoded): refused, so nothing resolves outside the API's base path"
        )));
    }
    Ok(())
}

/// `path` with `%2e`, `%2f` and `%5c` (any case) decoded: the characters that make dot-segments.
fn percent_decoded_separators(path: &str) -> Cow<'_, str> {
    // Nearly every path has no escape at all: it is itself, not a copy.
    if !path.contains('%') {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3).map(str::to_ascii_lowercase);
        match code.as_deref() {
            Some("2e") => out.push('.'),
            Some("2f") => out.push('/'),
            Some("5c") => out.push('\\'),
            _ => {
                out.push('%');
                rest = &rest[at + 1..];
                continue;
            }
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The request body, read whole within the size and time limits.
async fn read_body(settings: &ServerSettings, body: Incoming) -> Result<Bytes, CallError> {
    let read = Limited::new(body, settings.max_request_body).collect();
    // On the turn's clock (one reading fewer than `timeout`'s own); a timeout past any clock
    // is one that does not end, as `timeout`'s is.
    let now = hourglass_engine::clock::now();
    let deadline = (now.checked_add(settings.body_read_timeout))
        .unwrap_or_else(|| now + std::time::Duration::from_secs(86_400 * 365 * 30));
    match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Err(_) => Err(CallError::before_attempts(
            ErrorCode::RequestTimeout,
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} (server.body_read_timeout)",
                hourglass_config::duration::format(settings.body_read_timeout)
            ),
        )),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            Err(CallError::before_attempts(
                ErrorCode::RequestTooLarge,
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than {} bytes (server.max_request_body)",
                    settings.max_request_body
                ),
            ))
        }
        Ok(Err(error)) => Err(bad_request(format!(
            "could not read the request body: {error}"
        ))),
    }
}

/// Heartbeats: asked for per request, or the model's policy for streams (a whole JSON body with
/// leading spaces is only sent when the request asks, since strict parsers reject it).
fn heartbeat_interval(
    engine: &Engine,
    headers: &HeaderMap,
    stream: bool,
    model: Option<&str>,
) -> Result<Option<Duration>, CallError> {
    Ok(match heartbeat::requested(headers).map_err(bad_request)? {
        Some(choice) => choice,
        None if stream => model
            .and_then(|m| engine.config().route(m))
            .and_then(|route| route.policy.heartbeat),
        None => None,
    })
}

/// The answer of a call that sends heartbeats every `interval` while it runs.
fn with_heartbeats(
    gateway: &Gateway,
    engine: Arc<Engine>,
    request: CallRequest,
    interval: Duration,
) -> Response<GatewayBody> {
    let (endpoint, stream) = (request.endpoint, request.stream);
    let running: heartbeat::Call = Box::pin(async move { engine.call(request).await });
    let metrics = gateway.metrics.clone();
    let stopping = gateway.stopping.wait();
    let body = HeartbeatBody::new(running, interval, endpoint, stream, metrics, stopping);
    let mut response = Response::new(GatewayBody::Heartbeat(Box::new(body)));
    let content_type = if stream {
        "text/event-stream; charset=utf-8"
    } else {
        "application/json"
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&hourglass_config::duration::format(interval)) {
        headers.insert(hourglass_engine::header_names::X_HOURGLASS_HEARTBEAT, value);
    }
    response
}

fn bad_request(message: String) -> CallError {
    CallError::before_attempts(ErrorCode::BadRequest, StatusCode::BAD_REQUEST, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_found_however_they_are_written() {
        for path in [
            "/v1/../../admin/x",
            "/v1/%2e%2e/admin",
            "/v1/%2E%2e/admin",
            "/v1/chat/..%2fadmin",
            "/v1/chat/..%2F..%2Fadmin",
            "/v1/./models",
            "/v1/files/..\\admin",
            "/v1/files/%2e%2e%5cadmin",
        ] {
            assert!(refuse_dot_segments(path).is_err(), "{path}");
        }
        for path in [
            "/v1/chat/completions",
            "/v1/files/a..b",
            "/v1/models/gpt-4.1",
            "/v1/x%20y",
        ] {
            assert!(refuse_dot_segments(path).is_ok(), "{path}");
        }
    }
}
