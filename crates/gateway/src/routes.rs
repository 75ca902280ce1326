//! Which path does what: the OpenAI routes go through the engine, `GET /v1/models` lists the
//! configured models, other `/v1/*` paths pass through to the first upstream, `/health` answers
//! for the gateway itself, `/metrics` exposes Prometheus metrics and `/status` the recent state
//! (both behind the admin key when one is configured), `/dashboard` a live page over `/status`.
//! Every error is OpenAI-shaped.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use hourglass_engine::{CallError, CallRequest, Endpoint, ResponseBody, request::read_head};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;
use tokio::time::Instant;

use crate::body::GatewayBody;
use crate::deadline;
use crate::server::Gateway;

/// Every request: its id (the client's `x-request-id` when it is a sane one, else a new one),
/// sent upstream and echoed to the client; the upstream's own id moves to `x-upstream-request-id`.
pub(crate) async fn handle(
    gateway: Arc<Gateway>,
    mut request: Request<Incoming>,
) -> Result<Response<GatewayBody>, Infallible> {
    let id = request_id(request.headers());
    let id = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    request.headers_mut().insert("x-request-id", id.clone());
    let mut response = route(gateway, request).await?;
    let headers = response.headers_mut();
    if let Some(upstream) = headers.insert("x-request-id", id.clone())
        && upstream != id
    {
        headers.insert("x-upstream-request-id", upstream);
    }
    Ok(response)
}

/// The client's `x-request-id` if it is 1–128 characters of letters, digits and `._:-`, else a
/// new random one.
fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        })
        .map_or_else(new_request_id, str::to_owned)
}

/// A random UUID (version 4). Not a prefixed id: llama.cpp's Python server (starlette-context)
/// answers a bare 400 to any `x-request-id` that is not a UUID.
fn new_request_id() -> String {
    let bits = fastrand::u128(..) & !(0xf000 << 64) & !(0xc << 60);
    let bits = bits | (0x4000 << 64) | (0x8 << 60);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Counts a client that went away before its answer began: hyper drops the request's future
/// when the connection closes, and this guard sees the drop.
struct Abandoned<'a> {
    metrics: &'a hourglass_observe::Metrics,
    answered: bool,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.metrics.client_disconnect();
        }
    }
}

async fn route(
    gateway: Arc<Gateway>,
    request: Request<Incoming>,
) -> Result<Response<GatewayBody>, Infallible> {
    let metrics = gateway.metrics.clone();
    let mut guard = Abandoned {
        metrics: &metrics,
        answered: false,
    };
    let response = answer(gateway.clone(), request).await;
    guard.answered = true;
    response
}

async fn answer(
    gateway: Arc<Gateway>,
    request: Request<Incoming>,
) -> Result<Response<GatewayBody>, Infallible> {
    let start = Instant::now();
    // One engine for the whole call, even if a reload swaps it meanwhile.
    let engine = gateway.engine();
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let endpoint = match (&parts.method, path.trim_end_matches('/')) {
        (&Method::GET, "/health") => {
            return Ok(json_response(
                StatusCode::OK,
                Bytes::from_static(b"{\"status\":\"ok\"}"),
            ));
        }
        (&Method::GET, "/metrics" | "/status") if !admin_allowed(&gateway, &parts.headers) => {
            let error = CallError::before_attempts(
                "unauthorized",
                StatusCode::UNAUTHORIZED,
                "this endpoint needs the admin key (server.admin_key_env) as `Authorization: Bearer …`"
                    .to_owned(),
            );
            return Ok(error_response(&error));
        }
        (&Method::GET, "/dashboard") => {
            // The page holds no data: it reads /status (with the admin key from its URL fragment).
            let mut response = Response::new(GatewayBody::Full(Some(Bytes::from_static(
                include_bytes!("dashboard.html"),
            ))));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            return Ok(response);
        }
        (&Method::GET, "/status") => {
            let body = serde_json::to_vec(&gateway.metrics.status(&engine)).unwrap_or_default();
            return Ok(json_response(StatusCode::OK, Bytes::from(body)));
        }
        (&Method::GET, "/metrics") => {
            let text = gateway.metrics.render(&engine);
            let mut response = Response::new(GatewayBody::Full(Some(Bytes::from(text))));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            return Ok(response);
        }
        (&Method::POST, "/admin/reload") => {
            if !admin_allowed(&gateway, &parts.headers) {
                return Ok(error_response(&CallError::before_attempts(
                    "unauthorized",
                    StatusCode::UNAUTHORIZED,
                    "this endpoint needs the admin key (server.admin_key_env) as `Authorization: Bearer …`"
                        .to_owned(),
                )));
            }
            return Ok(match gateway.reload() {
                Ok(models) => json_response(
                    StatusCode::OK,
                    Bytes::from(json!({"reloaded": true, "models": models}).to_string()),
                ),
                Err(message) => error_response(&CallError::before_attempts(
                    "bad_config",
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the configuration was not reloaded (the old one keeps serving): {message}"
                    ),
                )),
            });
        }
        (&Method::GET, "/v1/models") if !engine.config().models.is_empty() => {
            return Ok(models(&gateway));
        }
        (&Method::POST, "/v1/chat/completions") => Endpoint::Chat,
        (&Method::POST, "/v1/completions") => Endpoint::Completions,
        (&Method::POST, "/v1/responses") => Endpoint::Responses,
        (&Method::POST, "/v1/embeddings") => Endpoint::Embeddings,
        (&Method::POST, "/v1/images/generations") => Endpoint::Images,
        (_, p) if p.starts_with("/v1/") => Endpoint::Other,
        (method, _) => {
            let error = CallError::before_attempts(
                "not_found",
                StatusCode::NOT_FOUND,
                format!("Invalid URL ({method} {path}); the gateway serves /v1/*"),
            );
            return Ok(error_response(&error));
        }
    };
    // Client keys: checked here and never sent on (an upstream gets its own key, or none).
    if !gateway.settings.client_keys.is_empty() {
        let given = bearer(&parts.headers);
        if !gateway
            .settings
            .client_keys
            .iter()
            .any(|key| same(given, key.expose()))
        {
            return Ok(error_response(&CallError::before_attempts(
                "invalid_api_key",
                StatusCode::UNAUTHORIZED,
                "missing or unknown API key: send one of the gateway's client keys as `Authorization: Bearer …`"
                    .to_owned(),
            )));
        }
    }
    let read = tokio::time::timeout(
        gateway.settings.body_read_timeout,
        Limited::new(body, gateway.settings.max_request_body).collect(),
    );
    let bytes = match read.await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Err(_) => {
            return Ok(error_response(&CallError::before_attempts(
                "request_timeout",
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} (server.body_read_timeout)",
                    hourglass_config::duration::format(gateway.settings.body_read_timeout)
                ),
            )));
        }
        Ok(Err(error)) => {
            let error = if error.is::<http_body_util::LengthLimitError>() {
                CallError::before_attempts(
                    "request_too_large",
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the request body is larger than {} bytes (server.max_request_body)",
                        gateway.settings.max_request_body
                    ),
                )
            } else {
                CallError::before_attempts(
                    "bad_request",
                    StatusCode::BAD_REQUEST,
                    format!("could not read the request body: {error}"),
                )
            };
            return Ok(error_response(&error));
        }
    };
    let (model, model_span, stream) = if endpoint == Endpoint::Other {
        (None, None, false)
    } else {
        match read_head(&bytes) {
            Ok(head) => (head.model, head.model_span, head.stream),
            Err(bad) => {
                return Ok(error_response(&CallError::before_attempts(
                    "bad_request",
                    StatusCode::BAD_REQUEST,
                    bad.message,
                )));
            }
        }
    };
    let stream = stream
        && matches!(
            endpoint,
            Endpoint::Chat | Endpoint::Completions | Endpoint::Responses
        );
    let client_deadline = match deadline::client_timeouts(&parts.headers, stream) {
        Ok(None) => None,
        Ok(Some(declared)) => {
            let margin =
                deadline::margin(declared.timeout, gateway.settings.client_deadline_margin);
            Some((start + declared.timeout - margin, declared.source))
        }
        Err(message) => {
            return Ok(error_response(&CallError::before_attempts(
                "bad_request",
                StatusCode::BAD_REQUEST,
                message,
            )));
        }
    };
    // Heartbeats: asked for per request, or the model's policy for streams (a whole JSON body
    // with leading spaces is only sent when the request asks, since strict parsers reject it).
    let heartbeat = match crate::heartbeat::requested(&parts.headers) {
        Ok(Some(choice)) => choice,
        Ok(None) if stream => model
            .as_deref()
            .and_then(|m| engine.config().route(m))
            .and_then(|route| route.policy.heartbeat),
        Ok(None) => None,
        Err(message) => {
            return Ok(error_response(&CallError::before_attempts(
                "bad_request",
                StatusCode::BAD_REQUEST,
                message,
            )));
        }
    };
    let path_and_query = parts.uri.path_and_query().map_or(path, |p| p.as_str());
    let call = CallRequest {
        endpoint,
        method: parts.method.clone(),
        path: path_and_query
            .strip_prefix("/v1")
            .unwrap_or(path_and_query)
            .to_owned(),
        headers: {
            let mut headers = parts.headers;
            if !gateway.settings.client_keys.is_empty() {
                headers.remove(header::AUTHORIZATION);
            }
            headers
        },
        body: bytes,
        model,
        model_span,
        stream,
        client_deadline,
        start,
    };
    if let Some(interval) = heartbeat {
        let engine = engine.clone();
        let running: crate::heartbeat::Call = Box::pin(async move { engine.call(call).await });
        let body = crate::heartbeat::HeartbeatBody::new(
            running,
            interval,
            stream,
            gateway.metrics.clone(),
        );
        let mut response = Response::new(GatewayBody::Heartbeat(Box::new(body)));
        let content_type = if stream {
            "text/event-stream; charset=utf-8"
        } else {
            "application/json"
        };
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Ok(value) = HeaderValue::from_str(&hourglass_config::duration::format(interval)) {
            response
                .headers_mut()
                .insert("x-hourglass-heartbeat", value);
        }
        return Ok(response);
    }
    Ok(match engine.call(call).await {
        Ok(response) => {
            let mut out = Response::new(match response.body {
                ResponseBody::Full(bytes) => GatewayBody::full(bytes),
                ResponseBody::Stream(stream) => GatewayBody::Stream(stream),
            });
            *out.status_mut() = response.status;
            *out.headers_mut() = response.headers;
            out
        }
        // The engine logs one line per call (hourglass::call), failures with their message.
        Err(error) => error_response(&error),
    })
}

fn json_response(status: StatusCode, body: Bytes) -> Response<GatewayBody> {
    let mut response = Response::new(GatewayBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An error in OpenAI's shape. `x-should-retry: false` tells the OpenAI SDKs not to retry what the
/// gateway already retried (or what no retry can fix), so SDK retries do not multiply ours.
pub(crate) fn error_response(error: &CallError) -> Response<GatewayBody> {
    let mut response = json_response(error.status, error.to_bytes());
    let headers = response.headers_mut();
    headers.insert("x-should-retry", HeaderValue::from_static("false"));
    headers.insert("x-hourglass-attempts", HeaderValue::from(error.trail.len()));
    if let Some(after) = error.retry_after {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(after.as_secs_f64().ceil() as u64),
        );
    }
    response
}

fn models(gateway: &Gateway) -> Response<GatewayBody> {
    let data: Vec<_> = gateway
        .engine()
        .config()
        .models
        .iter()
        .map(|m| json!({"id": m.name, "object": "model", "created": 0, "owned_by": "hourglass"}))
        .collect();
    let body = serde_json::to_vec(&json!({"object": "list", "data": data}))
        .expect("serializing a json value cannot fail");
    json_response(StatusCode::OK, Bytes::from(body))
}

/// Whether the request may use the admin endpoints: it carries the admin key when one is set;
/// else a client key when those are set; else anyone may (a loopback gateway).
fn admin_allowed(gateway: &Gateway, headers: &http::HeaderMap) -> bool {
    let given = bearer(headers);
    match &gateway.settings.admin_key {
        Some(key) => same(given, key.expose()),
        // No admin key but client keys: a gateway that guards its API guards its admin too.
        None => {
            let clients = &gateway.settings.client_keys;
            clients.is_empty() || clients.iter().any(|k| same(given, k.expose()))
        }
    }
}

/// The bearer token of a request, or "".
fn bearer(headers: &http::HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
}

/// Compares a given key with an expected one in time independent of where they differ.
fn same(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}
