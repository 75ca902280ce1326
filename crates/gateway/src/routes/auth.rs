//! Who may call what: the API needs one of the client keys when the gateway has them (and never
//! sends it on); the admin endpoints need the admin key, or a client key when only those are set.
//! Keys are compared in time independent of where they differ.

use hourglass_engine::{CallError, ErrorCode};
use http::{HeaderMap, StatusCode, header};

use hourglass_config::ServerSettings;

/// Whether the request may call the API: it carries a client key — as a bearer token, or in
/// `x-api-key` as Anthropic's clients send keys — or the gateway has none.
pub(super) fn client(settings: &ServerSettings, headers: &HeaderMap) -> Result<(), CallError> {
    let keys = &settings.client_keys;
    let given = [bearer(headers), x_api_key(headers)];
    if keys.is_empty()
        || keys
            .iter()
            .any(|key| given.iter().any(|g| same(g, key.expose())))
    {
        return Ok(());
    }
    Err(CallError::before_attempts(
        ErrorCode::InvalidApiKey,
        StatusCode::UNAUTHORIZED,
        "missing or unknown API key: send one of the gateway's client keys as `Authorization: Bearer …` or `x-api-key: …`"
            .to_owned(),
    ))
}

/// The `x-api-key` a request carries, or "" (an empty key matches no client key).
fn x_api_key(headers: &HeaderMap) -> &str {
    headers
        .get(hourglass_engine::header_names::X_API_KEY)
        .and_then(|v| v.to_str().ok())
        .map_or("", str::trim)
}

/// Whether the request may use the admin endpoints: it carries the admin key when one is set;
/// else a client key when those are set; else anyone may (a loopback gateway).
pub(super) fn admin(settings: &ServerSettings, headers: &HeaderMap) -> Result<(), CallError> {
    let given = bearer(headers);
    let allowed = match &settings.admin_key {
        Some(key) => same(given, key.expose()),
        // No admin key but client keys: a gateway that guards its API guards its admin too.
        None => {
            let clients = &settings.client_keys;
            clients.is_empty() || clients.iter().any(|k| same(given, k.expose()))
        }
    };
    if allowed {
        return Ok(());
    }
    Err(CallError::before_attempts(
        ErrorCode::Unauthorized,
        StatusCode::UNAUTHORIZED,
        "this endpoint needs the admin key (server.admin_key_env) as `Authorization: Bearer …`"
            .to_owned(),
    ))
}

/// The bearer token of a request, or "". The scheme is case-insensitive (RFC 9110 §11.1):
/// `bearer sk-…` is a bearer token too.
fn bearer(headers: &HeaderMap) -> &str {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => "",
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by a client library that writes `bearer`: its key was refused.
    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        for value in ["Bearer ck-1", "bearer ck-1", "BEARER ck-1"] {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            assert_eq!(bearer(&headers), "ck-1", "{value}");
        }
        let mut basic = HeaderMap::new();
        basic.insert(header::AUTHORIZATION, "Basic ck-1".parse().unwrap());
        assert_eq!(bearer(&basic), "");
    }
}
