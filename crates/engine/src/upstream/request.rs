//! The request an upstream gets, and the headers that come back: the path under the upstream's
//! base URL, the client's headers less hop-by-hop and hourglass-own ones, the upstream's own
//! headers, and its key as the call's protocol sends keys. Hop-by-hop headers stop here both ways.

use bytes::Bytes;
use hourglass_config::{KeyHeader, Upstream};
use http::{HeaderMap, HeaderName, HeaderValue, header};

use super::RequestBody;
use crate::error::FailureKind;
use crate::request::CallRequest;

/// The names a message's `Connection` header lists: such headers are hop-by-hop by declaration
/// (RFC 9110 §7.6.1) and stop at the gateway. Read once per message rather than once per header
/// (a client that closes its connections sends `Connection: close` on every call); empty, with
/// nothing allocated, when there is no such header.
fn connection_names(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .collect()
}

/// Whether `name` is among the `Connection` header's `listed` names.
fn named_by_connection(listed: &[&str], name: &str) -> bool {
    listed.iter().any(|token| token.eq_ignore_ascii_case(name))
}

/// Headers a client sends that are not passed upstream.
fn dropped_request_header(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "accept-encoding"
            | "expect"
    ) || name.starts_with("x-hourglass-")
}

/// Headers an upstream sends that are not passed to the client.
fn dropped_response_header(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "content-length"
            | "trailer"
            | "upgrade"
            | "proxy-connection"
            | "proxy-authenticate"
    )
}

/// The upstream request for `request` with `body`, and the signal that the body was handed over.
/// `h2` asks for the absolute URI HTTP/2 carries as pseudo-headers.
pub fn build(
    request: &CallRequest,
    upstream: &Upstream,
    body: Bytes,
    h2: bool,
) -> Result<
    (
        http::Request<RequestBody>,
        tokio::sync::oneshot::Receiver<()>,
    ),
    FailureKind,
> {
    let (body, written) = RequestBody::new(body);
    let mut builder = http::Request::builder()
        .method(request.method.clone())
        .uri(uri_of(upstream, &request.path, h2));
    let headers = builder.headers_mut().expect("a fresh builder has headers");
    // Room for every header at once, the ones added below and hyper's `content-length`
    // included: growing the map on the way reallocated it on every call.
    *headers = HeaderMap::with_capacity(request.headers.len() + upstream.headers.len() + 6);
    let listed = connection_names(&request.headers);
    for (name, value) in &request.headers {
        if dropped_request_header(name.as_str())
            || named_by_connection(&listed, name.as_str())
            || (upstream.api_key.is_some() && carries_a_key(name.as_str()))
        {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    if let Some(authority) = upstream.base_url.authority()
        && !h2
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, value);
    }
    for (name, value) in &upstream.headers {
        headers.insert(name.clone(), value.clone());
    }
    if let Some(value) = &upstream.key_value {
        headers.insert(upstream.key_header.header_name(), value.clone());
    }
    // An upstream that speaks only Anthropic's API needs its version header on every request,
    // health checks included; a client's own is kept.
    let asked = request.endpoint.protocol().format();
    let spoken = if upstream.speaks(asked) {
        asked
    } else {
        upstream.protocols.first().copied().unwrap_or(asked)
    };
    for (name, value) in crate::protocol::of(spoken).default_headers() {
        if !headers.contains_key(*name) {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
    }
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    let request = builder
        .body(body)
        .map_err(|e| FailureKind::Malformed(format!("cannot build the upstream request: {e}")))?;
    Ok((request, written))
}

/// The URI of `path` on `upstream`: absolute over HTTP/2 (`h2`), else the path alone. Pushed into
/// a string of its exact size, not `format!`ed: this is on every attempt's path, and the URI
/// keeps the string's buffer.
fn uri_of(upstream: &Upstream, path: &str, h2: bool) -> String {
    let prefix = upstream.base_url.path().trim_end_matches('/');
    let origin = match (
        h2,
        upstream.base_url.scheme_str(),
        upstream.base_url.authority(),
    ) {
        (true, Some(scheme), Some(authority)) => Some((scheme, authority.as_str())),
        _ => None,
    };
    let origin_len = origin.map_or(0, |(scheme, authority)| scheme.len() + 3 + authority.len());
    let mut uri = String::with_capacity(origin_len + prefix.len() + path.len());
    if let Some((scheme, authority)) = origin {
        uri.push_str(scheme);
        uri.push_str("://");
        uri.push_str(authority);
    }
    uri.push_str(prefix);
    uri.push_str(path);
    uri
}

/// Whether a client's header carries an API key: dropped when the upstream has its own, so a
/// client's key never reaches it beside the gateway's.
fn carries_a_key(name: &str) -> bool {
    KeyHeader::ALL.iter().any(|h| h.name() == name)
}

/// The upstream's headers as sent to the client, less hop-by-hop ones, plus `x-hourglass-upstream`.
pub fn response_headers(upstream: &HeaderMap, name: &str) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(upstream.len() + 3);
    let listed = connection_names(upstream);
    for (key, value) in upstream {
        if dropped_response_header(key.as_str()) || named_by_connection(&listed, key.as_str()) {
            continue;
        }
        headers.append(key.clone(), value.clone());
    }
    headers.insert(
        crate::header_names::X_HOURGLASS_UPSTREAM,
        header_value(name),
    );
    headers
}

/// A header value from text, or `-` when the text cannot be one.
pub fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_connection_header_is_read_for_the_names_it_lists() {
        let mut headers = HeaderMap::new();
        assert!(connection_names(&headers).is_empty());
        headers.append(header::CONNECTION, HeaderValue::from_static("close"));
        headers.append(
            header::CONNECTION,
            HeaderValue::from_static(" X-Hop ,, keep-alive"),
        );
        let listed = connection_names(&headers);
        assert_eq!(listed, ["close", "X-Hop", "keep-alive"]);
        assert!(named_by_connection(&listed, "x-hop"));
        assert!(named_by_connection(&listed, "keep-alive"));
        assert!(!named_by_connection(&listed, "x-end-to-end"));
        assert!(!named_by_connection(&listed, ""));
    }

    #[test]
    fn a_key_travels_sensitive_in_the_upstreams_chosen_header_and_replaces_the_clients() {
        let config = hourglass_config::Config::from_toml(
            "[upstreams.a]\nbase_url = \"http://a.example/v1\"\napi_key_env = \"K\"\n[upstreams.z]\nbase_url = \"http://z.example/v1\"\napi_key_env = \"K\"\napi_key_header = \"x-api-key\"\n[models.m]\ntargets = [\"a\"]\n",
            "t.toml",
            &|name| (name == "K").then(|| "sk-1".to_owned()),
        )
        .unwrap();
        let body = Bytes::from_static(br#"{"model":"m","messages":[]}"#);
        let mut request =
            CallRequest::new(crate::protocol::Endpoint::Chat, "/chat/completions", body).unwrap();
        request.headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer client"),
        );
        request
            .headers
            .insert("x-api-key", HeaderValue::from_static("client"));
        for (upstream, name, value) in [
            (&config.upstreams[0], "authorization", "Bearer sk-1"),
            (&config.upstreams[1], "x-api-key", "sk-1"),
        ] {
            let (sent, _) = build(&request, upstream, Bytes::new(), false).unwrap();
            let keys: Vec<_> = sent.headers().get_all(name).iter().collect();
            assert_eq!(keys.len(), 1, "{name}: the upstream's key only");
            assert_eq!(keys[0].to_str().unwrap(), value);
            assert!(keys[0].is_sensitive());
        }
        assert!(carries_a_key("x-api-key") && carries_a_key("authorization"));
        assert!(!carries_a_key("anthropic-version"));
    }
}
