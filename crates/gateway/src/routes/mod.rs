//! Which path does what, split by concern: the gateway's own endpoints (`admin`), the API calls
//! that go through the engine (`api`), who may call what (`auth`) and the request id every
//! answer carries. Every error is in the shape of the caller's protocol, with
//! `x-should-retry: false`.

mod admin; // /health, /metrics, /status, /dashboard, /admin/reload, GET /v1/models
mod api; // /v1/*: the body within limits, what it asks for, the client's deadline, heartbeats
mod background; // background calls: Responses' background mode, Prefer: respond-async, jobs
mod auth; // client keys, the admin key, bearer tokens compared in constant time
mod framing; // the head's size, no Content-Length with Transfer-Encoding, a declared body's size
mod request_id; // x-request-id: the client's when it is a sane one, else a new UUID

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use hourglass_engine::header_names as names;
use hourglass_engine::protocol::Protocol;
use hourglass_engine::{CallError, ErrorCode};
use http::request::Parts;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::body::GatewayBody;
use crate::gateway::{Connected, Gateway};

/// Every request: its id (the client's `x-request-id` when it is a sane one, else a new one),
/// sent upstream and echoed to the client; the upstream's own id moves to `x-upstream-request-id`.
///
/// The id is set before the future is made, and the future is an `async` block that owns the
/// request's head: the futures under it borrow the head rather than take it, since a future
/// that takes a value keeps room for it beside its caller's (moved-from) own, and copies it in.
pub(crate) fn handle(
    connected: Arc<Connected>,
    request: Request<Incoming>,
) -> impl Future<Output = Result<Response<GatewayBody>, Infallible>> {
    let (mut parts, body) = request.into_parts();
    let id = request_id::of(&parts.headers);
    parts.headers.insert(names::X_REQUEST_ID, id.clone());
    async move {
        let mut guard = Abandoned {
            gateway: &connected.gateway,
            answered: false,
        };
        let mut response = route(&connected, &mut parts, body).await;
        guard.answered = true;
        let headers = response.headers_mut();
        if let Some(upstream) = headers.insert(names::X_REQUEST_ID, id.clone())
            && upstream != id
        {
            headers.insert(names::X_UPSTREAM_REQUEST_ID, upstream);
        }
        Ok(response)
    }
}

/// Counts a client that went away before its answer began: hyper drops the request's future
/// when the connection closes, and this guard sees the drop.
struct Abandoned<'a> {
    gateway: &'a Gateway,
    answered: bool,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.gateway.metrics.client_disconnect();
        }
    }
}

/// The gateway's own endpoints first, then the API; anything else is `not_found`.
async fn route(connected: &Connected, parts: &mut Parts, body: Incoming) -> Response<GatewayBody> {
    let gateway = &connected.gateway;
    // One engine for the whole call, even if a reload swaps it meanwhile: read once, here.
    let engine = connected.engine();
    let settings = &engine.config().server;
    if let Err(error) = framing::check(parts, settings) {
        return error_response(client_protocol(&parts.headers), &error);
    }
    if let Some(response) = admin::answer(gateway, parts) {
        return response;
    }
    // Boxed, and only for the paths it may answer: the job store's futures are larger than
    // everything else a call holds, and every future above this one would carry (and copy)
    // their room on every call.
    let routed = if background::may_answer(parts.uri.path()) {
        Box::pin(background::route(gateway, parts)).await
    } else {
        background::Routed::PassThrough {
            pinned: None,
            path: None,
        }
    };
    let pinned = match routed {
        background::Routed::Answered(response) => return response,
        background::Routed::PassThrough { pinned, path } => {
            if let Some(uri) = path.and_then(|p| p.parse().ok()) {
                parts.uri = uri;
            }
            pinned
        }
    };
    let path = parts.uri.path().trim_end_matches('/');
    match api::endpoint(&parts.method, path, &parts.headers) {
        Some(endpoint) => api::call(gateway, engine, endpoint, parts, body, pinned).await,
        None => {
            let message = format!(
                "Invalid URL ({} {}); the gateway serves /v1/*",
                parts.method,
                parts.uri.path()
            );
            let code = ErrorCode::NotFound;
            let error = CallError::before_attempts(code, StatusCode::NOT_FOUND, message);
            error_response(client_protocol(&parts.headers), &error)
        }
    }
}

/// The protocol whose error shape a client reads: Anthropic's when it names an Anthropic API
/// version, else OpenAI's.
pub(crate) fn client_protocol(headers: &http::HeaderMap) -> &'static dyn Protocol {
    if api::anthropic_client(headers) {
        hourglass_engine::Endpoint::AnthropicOther.protocol()
    } else {
        hourglass_engine::Endpoint::Other.protocol()
    }
}

/// A JSON body with its status.
fn json_response(status: StatusCode, body: Bytes) -> Response<GatewayBody> {
    let mut response = Response::new(GatewayBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An error in `protocol`'s shape. `x-should-retry: false` tells the SDKs not to retry what the
/// gateway already retried (or what no retry can fix), so SDK retries do not multiply ours.
pub(crate) fn error_response(protocol: &dyn Protocol, error: &CallError) -> Response<GatewayBody> {
    let mut response = json_response(error.status, protocol.error_body(error));
    let headers = response.headers_mut();
    headers.insert("x-should-retry", HeaderValue::from_static("false"));
    headers.insert(
        names::X_HOURGLASS_ATTEMPTS,
        HeaderValue::from(error.trail.len()),
    );
    if let Some(after) = error.retry_after {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(after.as_secs_f64().ceil() as u64),
        );
    }
    response
}
