//! From the model a call names to what it may try: the model's route (its policy, or for a
//! pass-through path the first upstream's), and its targets — the model's own, then each
//! fallback model's, in tiers after them.

use std::borrow::Cow;

use hourglass_config::{Config, ModelRoute};
use http::StatusCode;

use crate::call::Target;
use crate::error::CallError;
use crate::protocol::Endpoint;
use crate::request::CallRequest;
use crate::vocabulary::ErrorCode;

/// The route of `request`, or why it has none: no model named (400) or none served (404).
pub(crate) fn route<'a>(
    config: &'a Config,
    request: &CallRequest,
) -> Result<Cow<'a, ModelRoute>, CallError> {
    let model = match (&request.model, request.endpoint) {
        (Some(model), _) => model.as_str(),
        // Pass-through paths name no model: the first upstream's chat policy applies.
        (None, Endpoint::Other) => return Ok(Cow::Owned(config.passthrough_route())),
        (None, _) => {
            return Err(CallError::before_attempts(
                ErrorCode::BadRequest,
                StatusCode::BAD_REQUEST,
                "you must provide a model parameter".to_owned(),
            ));
        }
    };
    if model.is_empty() {
        return Ok(Cow::Owned(config.passthrough_route()));
    }
    config.route(model).ok_or_else(|| {
        let known: Vec<&str> = config
            .models
            .iter()
            .map(|m| m.name.as_str())
            .take(20)
            .collect();
        let configured = if known.is_empty() {
            String::new()
        } else {
            format!("; configured: {}", known.join(", "))
        };
        CallError::before_attempts(
            ErrorCode::NoRoute,
            StatusCode::NOT_FOUND,
            format!("no upstream serves model `{model}`{configured}"),
        )
    })
}

/// The route's targets, then each fallback model's, after every tier of the model itself.
pub(crate) fn targets(config: &Config, route: &ModelRoute) -> Vec<Target> {
    let target = |t: &hourglass_config::Target, tier: u32| Target {
        upstream: t.upstream,
        name: config.upstreams[t.upstream].name.clone(),
        model: t.model.clone(),
        tier,
        weight: t.weight,
    };
    let mut targets: Vec<Target> = route.targets.iter().map(|t| target(t, t.tier)).collect();
    let mut base = targets.iter().map(|t| t.tier + 1).max().unwrap_or(0);
    for fallback in &route.fallbacks {
        if let Some(other) = config.route(fallback) {
            targets.extend(other.targets.iter().map(|t| target(t, base + t.tier)));
            base += other.targets.iter().map(|t| t.tier + 1).max().unwrap_or(0);
        }
    }
    targets
}

/// The targets `request` may try: the route's, or only those on the upstream it is pinned to
/// (where a stored response it refers to lives); when the route has none there (a pass-through
/// path, a model that upstream serves by wildcard), that upstream with the model as asked.
pub(crate) fn targets_of(
    config: &Config,
    route: &ModelRoute,
    request: &CallRequest,
) -> Result<Vec<Target>, CallError> {
    let targets = targets(config, route);
    let Some(name) = &request.pinned else {
        return Ok(targets);
    };
    let on: Vec<Target> = targets.into_iter().filter(|t| &t.name == name).collect();
    if !on.is_empty() {
        return Ok(on);
    }
    match config.upstreams.iter().position(|u| &u.name == name) {
        Some(upstream) => Ok(vec![Target {
            upstream,
            name: name.clone(),
            model: request.model.clone().unwrap_or_default(),
            tier: 0,
            weight: 1,
        }]),
        None => Err(CallError::before_attempts(
            ErrorCode::NoRoute,
            StatusCode::NOT_FOUND,
            format!(
                "the response asked for lives on upstream `{name}`, which is no longer configured"
            ),
        )),
    }
}
