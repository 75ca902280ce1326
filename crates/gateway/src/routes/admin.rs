//! The gateway's own endpoints: `/health` for the gateway itself, `/health/live` and
//! `/health/ready` for orchestrators, `/metrics` (Prometheus) and
//! `/status` (recent state) behind the admin key when one is configured, `/dashboard` (a live page
//! over `/status`), `POST /admin/reload`, and `GET /v1/models` when models are configured (behind
//! the client keys, like the rest of the API).

use bytes::Bytes;
use hourglass_engine::{CallError, Endpoint, ErrorCode};
use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode, header};
use serde_json::json;

use super::{auth, error_response, json_response};
use crate::body::GatewayBody;
use crate::gateway::Gateway;

/// The answer of one of the gateway's own endpoints, or `None` when `parts` asks for another path.
pub(super) fn answer(gateway: &Gateway, parts: &Parts) -> Option<Response<GatewayBody>> {
    let path = parts.uri.path().trim_end_matches('/');
    let result = match (&parts.method, path) {
        (&Method::GET, "/health") => Ok(json_response(
            StatusCode::OK,
            Bytes::from_static(b"{\"status\":\"ok\"}"),
        )),
        (&Method::GET, "/health/live") => Ok(json_response(
            StatusCode::OK,
            Bytes::from_static(b"{\"status\":\"live\"}"),
        )),
        (&Method::GET, "/health/ready") => Ok(ready(gateway)),
        (&Method::GET, "/dashboard") => Ok(dashboard()),
        (&Method::GET, "/status" | "/metrics") | (&Method::POST, "/admin/reload") => {
            auth::admin(&gateway.settings(), &parts.headers)
                .and_then(|()| admin(gateway, &parts.method, path))
        }
        // An API answer like any other `/v1` path: it needs a client key when those are set.
        (&Method::GET, "/v1/models") if !gateway.engine().config().models.is_empty() => {
            auth::client(&gateway.settings(), &parts.headers).map(|()| models(gateway))
        }
        _ => return None,
    };
    let protocol = Endpoint::Other.protocol();
    Some(result.unwrap_or_else(|error| error_response(protocol, &error)))
}

/// `/health/ready`: 200 when it may take traffic, else 503; the body says why and how its job
/// store is (never its URL).
fn ready(gateway: &Gateway) -> Response<GatewayBody> {
    let (ready, why) = gateway.readiness();
    let jobs = gateway.jobs.as_ref().map(|jobs| {
        let stats = jobs.stats();
        json!({ "store": stats.store, "reachable": jobs.reachable() })
    });
    let body = json!({
        "status": if ready { "ready" } else { "starting" },
        "why": why,
        "jobs": jobs,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, Bytes::from(body.to_string()))
}

/// `/status`, `/metrics` and `/admin/reload`, once the caller is allowed.
fn admin(
    gateway: &Gateway,
    method: &Method,
    path: &str,
) -> Result<Response<GatewayBody>, CallError> {
    let engine = gateway.engine();
    match (method, path) {
        (&Method::GET, "/status") => {
            let mut status = gateway.metrics.status(&engine);
            if let Some(jobs) = &gateway.jobs {
                status["jobs"] = serde_json::to_value(jobs.stats()).unwrap_or_default();
            }
            let body = serde_json::to_vec(&status).unwrap_or_default();
            Ok(json_response(StatusCode::OK, Bytes::from(body)))
        }
        (&Method::GET, "/metrics") => {
            let mut text = gateway.metrics.render(&engine);
            if let Some(jobs) = &gateway.jobs {
                hourglass_observe::metrics::render_jobs(&mut text, &jobs.stats());
            }
            let mut response = Response::new(GatewayBody::full(text));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(response)
        }
        _ => match gateway.reload() {
            Ok(reloaded) => Ok(json_response(
                StatusCode::OK,
                Bytes::from(
                    json!({"reloaded": true, "models": reloaded.models,
                           "not_applied": reloaded.not_applied})
                    .to_string(),
                ),
            )),
            Err(message) => Err(CallError::before_attempts(
                ErrorCode::BadConfig,
                StatusCode::BAD_REQUEST,
                format!(
                    "the configuration was not reloaded (the old one keeps serving): {message}"
                ),
            )),
        },
    }
}

/// The live page. It holds no data: it reads `/status` (with the admin key from its URL fragment).
fn dashboard() -> Response<GatewayBody> {
    let mut response = Response::new(GatewayBody::full(Bytes::from_static(include_bytes!(
        "dashboard.html"
    ))));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// `GET /v1/models`: the configured models, in OpenAI's list shape.
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
