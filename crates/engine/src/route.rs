//! From the model a call names to what it may try: the model's route (its policy, or for a
//! pass-through path the first upstream's), and its targets — the model's own, then each
//! fallback model's, in tiers after them.

use std::borrow::Cow;

use hourglass_config::{Config, ModelRoute, WireFormat};
use http::StatusCode;

use crate::call::Target;
use crate::error::CallError;
use crate::request::CallRequest;
use crate::vocabulary::ErrorCode;

/// The route of `request`, or why it has none: no model named (400) or none served (404).
pub(crate) fn route<'a>(
    config: &'a Config,
    request: &CallRequest,
) -> Result<Cow<'a, ModelRoute>, CallError> {
    let format = request.endpoint.protocol().format();
    let model = match request.model.as_deref() {
        Some(model) if !model.is_empty() => model,
        // Pass-through paths name no model: the first upstream that speaks the client's protocol,
        // with the chat policy.
        _ if request.endpoint.passes_through() || request.model.is_some() => {
            return config
                .passthrough_route(format)
                .map(Cow::Owned)
                .ok_or_else(|| unspoken(format, None));
        }
        _ => {
            return Err(CallError::before_attempts(
                ErrorCode::BadRequest,
                StatusCode::BAD_REQUEST,
                "you must provide a model parameter".to_owned(),
            ));
        }
    };
    let route = config.route(model).ok_or_else(|| {
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
    })?;
    if route
        .targets
        .iter()
        .any(|t| config.upstreams[t.upstream].speaks(format))
    {
        Ok(route)
    } else {
        Err(unspoken(format, Some(model)))
    }
}

/// Why a call has nowhere to go in its own protocol: the model (or, for a pass-through path,
/// every upstream) is served only in the other one, and hourglass does not translate.
fn unspoken(format: WireFormat, model: Option<&str>) -> CallError {
    let (path, other) = match format {
        WireFormat::OpenAi => ("OpenAI's API (/v1/chat/completions, …)", "anthropic"),
        WireFormat::Anthropic => ("Anthropic's Messages API (/v1/messages)", "openai"),
    };
    let what = match model {
        Some(model) => format!("model `{model}` is served only by upstreams that speak {other}"),
        None => format!("no upstream speaks {}", format.name()),
    };
    CallError::before_attempts(
        ErrorCode::NoRoute,
        StatusCode::NOT_FOUND,
        format!(
            "{what}: this call is in {path}, and hourglass does not translate between protocols; call it in its own, or add an upstream with protocol = \"{}\"",
            format.name()
        ),
    )
}

/// The route's targets in the call's protocol, then each fallback model's, after every tier of
/// the model itself.
pub(crate) fn targets(config: &Config, route: &ModelRoute, format: WireFormat) -> Vec<Target> {
    let target = |t: &hourglass_config::Target, tier: u32| Target {
        upstream: t.upstream,
        name: config.upstreams[t.upstream].name.clone(),
        model: t.model.clone(),
        tier,
        weight: t.weight,
    };
    let speaks = |t: &&hourglass_config::Target| config.upstreams[t.upstream].speaks(format);
    let mut targets: Vec<Target> = route
        .targets
        .iter()
        .filter(speaks)
        .map(|t| target(t, t.tier))
        .collect();
    let mut base = targets.iter().map(|t| t.tier + 1).max().unwrap_or(0);
    for fallback in &route.fallbacks {
        if let Some(other) = config.route(fallback) {
            let theirs: Vec<&hourglass_config::Target> =
                other.targets.iter().filter(speaks).collect();
            targets.extend(theirs.iter().map(|t| target(t, base + t.tier)));
            base += theirs.iter().map(|t| t.tier + 1).max().unwrap_or(0);
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
    let targets = targets(config, route, request.endpoint.protocol().format());
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
