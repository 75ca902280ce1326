//! The gateway's own endpoints: `/health` for the gateway itself, `/health/live` and
//! `/health/ready` for orchestrators, `/metrics` (Prometheus) and
//! `/status` (recent state) behind the admin key when one is configured, `/dashboard` (a live page
//! over `/status`), `POST /admin/reload`, and `GET /v1/models` when models are configured (behind
//! the client keys, like the rest of the API).

use bytes::Bytes;
use hourglass_config::WireFormat;
use hourglass_engine::{CallError, ErrorCode};
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
            auth::client(&gateway.settings(), &parts.headers)
                .map(|()| models(gateway, super::api::anthropic_client(&parts.headers)))
        }
        _ => return None,
    };
    let protocol = super::client_protocol(&parts.headers);
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
    let redis = gateway
        .cluster
        .as_ref()
        .map(|c| json!({ "at": c.link.describe(), "reachable": c.link.is_up() }));
    let body = json!({
        "status": if ready { "ready" } else { "starting" },
        "why": why,
        "jobs": jobs,
        "redis": redis,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, Bytes::from(body.to_string()))
}

/// What `/status` shows under `cluster`: the instance, Redis (where, whether it answers — never
/// its URL), the cool-downs in force and what was shared, and the client limits' refusals.
fn cluster_status(gateway: &Gateway, engine: &hourglass_engine::Engine) -> serde_json::Value {
    let stats = cluster_stats(gateway, engine);
    let cooldowns: Vec<serde_json::Value> = engine
        .health()
        .cooldowns()
        .into_iter()
        .map(|(upstream, model, left, reason)| {
            json!({"upstream": upstream, "model": model, "remaining_s": left.as_secs_f64(), "reason": reason.name()})
        })
        .collect();
    let limited: serde_json::Map<String, serde_json::Value> = stats
        .limited
        .iter()
        .map(|(limit, n)| ((*limit).to_owned(), json!(n)))
        .collect();
    let redis = gateway.cluster.as_ref().map(|c| {
        json!({
            "at": c.link.describe(),
            "up": c.link.is_up(),
            "failures": c.link.failures(),
            "last_error": c.link.last_error(),
            "cooldowns_published": stats.cooldowns_published,
            "cooldowns_heard": stats.cooldowns_heard,
            "cooldowns_dropped": stats.cooldowns_dropped,
            "limit_sync_failures": stats.limit_sync_failures,
        })
    });
    json!({
        "instance": gateway.cluster.as_ref().map(|c| c.instance.clone()),
        "redis": redis,
        "cooldowns": cooldowns,
        "client_limits": {"keys": gateway.limits.keys(), "refused": limited},
    })
}

fn cluster_stats(
    gateway: &Gateway,
    engine: &hourglass_engine::Engine,
) -> hourglass_observe::metrics::ClusterStats {
    use std::sync::atomic::Ordering::Relaxed;
    let counts = gateway.limits.counts();
    let limited = hourglass_cluster::limits::LIMITS
        .iter()
        .zip(&counts.refused)
        .map(|(limit, n)| (*limit, n.load(Relaxed)))
        .collect();
    let shared = gateway.cluster.as_ref();
    let count = |f: fn(&hourglass_cluster::cooldowns::Counts) -> u64| {
        shared.map_or(0, |c| f(&c.cooldowns.counts))
    };
    hourglass_observe::metrics::ClusterStats {
        redis_up: shared.map(|c| c.link.is_up()),
        cooldowns_published: count(|c| c.published.load(Relaxed)),
        cooldowns_heard: count(|c| c.heard.load(Relaxed)),
        cooldowns_dropped: count(|c| c.dropped.load(Relaxed)),
        cooldowns_active: engine.health().cooldowns().len(),
        limited,
        limit_sync_failures: counts.sync_failures.load(Relaxed),
    }
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
            status["cluster"] = cluster_status(gateway, &engine);
            let body = serde_json::to_vec(&status).unwrap_or_default();
            Ok(json_response(StatusCode::OK, Bytes::from(body)))
        }
        (&Method::GET, "/metrics") => {
            let mut text = gateway.metrics.render(&engine);
            if let Some(jobs) = &gateway.jobs {
                hourglass_observe::metrics::render_jobs(&mut text, &jobs.stats());
            }
            hourglass_observe::metrics::render_cluster(&mut text, &cluster_stats(gateway, &engine));
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

/// `GET /v1/models`: the configured models a client can call in its own protocol — in
/// Anthropic's list shape for an Anthropic client (it sends `anthropic-version`), else OpenAI's.
fn models(gateway: &Gateway, anthropic: bool) -> Response<GatewayBody> {
    let engine = gateway.engine();
    let config = engine.config();
    let format = if anthropic {
        WireFormat::Anthropic
    } else {
        WireFormat::OpenAi
    };
    let names: Vec<&str> = config
        .models
        .iter()
        .filter(|m| {
            m.targets
                .iter()
                .any(|t| config.upstreams[t.upstream].speaks(format))
        })
        .map(|m| m.name.as_str())
        .collect();
    let body = if anthropic {
        let data: Vec<_> = names
            .iter()
            .map(|name| {
                json!({"type": "model", "id": name, "display_name": name,
                               "created_at": "1970-01-01T00:00:00Z"})
            })
            .collect();
        json!({"data": data, "has_more": false, "first_id": names.first(),
               "last_id": names.last()})
    } else {
        let data: Vec<_> = names
            .iter()
            .map(|name| json!({"id": name, "object": "model", "created": 0, "owned_by": "hourglass"}))
            .collect();
        json!({"object": "list", "data": data})
    };
    let body = serde_json::to_vec(&body).expect("serializing a json value cannot fail");
    json_response(StatusCode::OK, Bytes::from(body))
}
