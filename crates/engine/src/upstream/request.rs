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
fn named_by_connection(listed: &[impl AsRef<str>], name: &str) -> bool {
    listed
        .iter()
        .any(|token| token.as_ref().eq_ignore_ascii_case(name))
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
    // Room for every header at once, the ones added below included: growing the map on the way
    // reallocated it on every call.
    *headers = HeaderMap::with_capacity(request.headers.len() + upstream.headers.len() + 6);
    if !h2
        && let Some(host) = host_of(upstream)
        && let Ok(value) = HeaderValue::from_str(host)
    {
        headers.insert(header::HOST, value);
    }
    each_header(request, upstream, |name, value| {
        headers.append(name.clone(), value.clone());
    });
    let request = builder
        .body(body)
        .map_err(|e| FailureKind::Malformed(format!("cannot build the upstream request: {e}")))?;
    Ok((request, written))
}

/// The HTTP/1.1 request line and headers for `request` on `upstream`, written to `out`: the
/// headers [`build`] puts in its map, without building one (the connection adds the framing).
pub fn encode_h1(request: &CallRequest, upstream: &Upstream, out: &mut Vec<u8>) {
    let prefix = upstream.base_url.path().trim_end_matches('/');
    out.reserve(prefix.len() + request.path.len() + 64 + request.headers.len() * 32);
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    if prefix.is_empty() && request.path.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(request.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(host) = host_of(upstream) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    each_header(request, upstream, |name, value| {
        super::h1::header_line(out, name, value);
    });
}

/// The `Host` an HTTP/1.1 request carries: the base URL's authority (an upstream's own headers
/// cannot set one: the configuration refuses it).
fn host_of(upstream: &Upstream) -> Option<&str> {
    (upstream.base_url.authority()).map(|authority| authority.as_str())
}

/// Gives `each` every header of the upstream request but `Host`, each once, already decided:
/// the client's (less hop-by-hop and hourglass-own ones, its keys when the upstream has its own,
/// and the ones the gateway sets itself), the upstream's own headers (the last of a name given
/// twice), its key in its chosen header, the protocol's default headers nobody set (an
/// upstream that speaks only Anthropic's API needs its version header on every request, health
/// checks included), and `accept-encoding: identity`.
fn each_header(
    request: &CallRequest,
    upstream: &Upstream,
    mut each: impl FnMut(&HeaderName, &HeaderValue),
) {
    let listed = connection_names(&request.headers);
    let passed = |name: &str| {
        !(dropped_request_header(name)
            || named_by_connection(&listed, name)
            || (upstream.api_key.is_some() && carries_a_key(name)))
    };
    let key = (upstream.key_value.as_ref()).map(|value| (upstream.key_header.header_name(), value));
    let is_key = |name: &str| key.as_ref().is_some_and(|(k, _)| k.as_str() == name);
    let upstream_sets = |name: &str| upstream.headers.iter().any(|(n, _)| n.as_str() == name);
    for (name, value) in &request.headers {
        let name_text = name.as_str();
        if passed(name_text) && !upstream_sets(name_text) && !is_key(name_text) {
            each(name, value);
        }
    }
    for (at, (name, value)) in upstream.headers.iter().enumerate() {
        let later = upstream.headers[at + 1..].iter().any(|(n, _)| n == name);
        if !later && !is_key(name.as_str()) && name != header::ACCEPT_ENCODING {
            each(name, value);
        }
    }
    if let Some((name, value)) = &key {
        each(name, value);
    }
    let asked = request.endpoint.protocol().format();
    let spoken = if upstream.speaks(asked) {
        asked
    } else {
        upstream.protocols.first().copied().unwrap_or(asked)
    };
    for (name, value) in crate::protocol::of(spoken).default_headers() {
        let sent_by_client = request.headers.contains_key(*name) && passed(name);
        if !sent_by_client && !upstream_sets(name) && !is_key(name) {
            each(
                &HeaderName::from_static(name),
                &HeaderValue::from_static(value),
            );
        }
    }
    each(
        &header::ACCEPT_ENCODING,
        &HeaderValue::from_static("identity"),
    );
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

/// Headers the gateway may add to an upstream's answer: `x-hourglass-upstream`, `server-timing`,
/// `x-hourglass-attempts`, and `x-request-id` (or `x-upstream-request-id` beside it, when the
/// upstream sent its own). A map with room for them never grows (a reallocation of both its
/// tables) on the way to the client.
pub const ADDED_RESPONSE_HEADERS: usize = 4;

/// The upstream's headers as sent to the client: its own map, with the hop-by-hop headers taken
/// out (those HTTP names and those its `Connection` header lists) and `x-hourglass-upstream`
/// put in. Taken out in place, not copied: a usual head has one such header
/// (`transfer-encoding`) among a handful, and rebuilding the map cost three allocations a call.
/// Taking one out may move another name's field into its place; the order of fields of
/// different names is not significant (RFC 9110 §5.3), and the values of one name keep theirs.
pub fn response_headers(mut headers: HeaderMap, upstream: HeaderValue) -> HeaderMap {
    // An HTTP/1.1 head was parsed with this room already; an HTTP/2 one grows here, once.
    headers.reserve(ADDED_RESPONSE_HEADERS);
    let listed: Vec<String> = (connection_names(&headers).into_iter())
        .map(str::to_owned)
        .collect();
    // Found in one pass and then taken out: one look at each name, however many are listed.
    let hop_by_hop: Vec<HeaderName> = (headers.keys())
        .filter(|key| {
            dropped_response_header(key.as_str()) || named_by_connection(&listed, key.as_str())
        })
        .cloned()
        .collect();
    for key in &hop_by_hop {
        headers.remove(key);
    }
    headers.insert(crate::header_names::X_HOURGLASS_UPSTREAM, upstream);
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
    fn an_upstreams_map_loses_its_hop_by_hop_headers_and_keeps_every_other_value() {
        let mut upstream = HeaderMap::new();
        for (name, value) in [
            ("content-type", "text/event-stream"),
            ("connection", "keep-alive, X-Upstream-Hop"),
            ("x-upstream-hop", "internal"),
            ("set-cookie", "a=1"),
            ("transfer-encoding", "chunked"),
            ("keep-alive", "timeout=5"),
            ("set-cookie", "b=2"),
            ("proxy-authenticate", "Basic"),
            ("x-request-id", "req_1"),
        ] {
            upstream.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let sent = response_headers(upstream, HeaderValue::from_static("primary"));
        // Fields of different names may change places (their order is not significant, RFC
        // 9110 §5.3); the values of one name keep theirs.
        let mut names: Vec<&str> = sent.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "content-type",
                "set-cookie",
                "x-hourglass-upstream",
                "x-request-id"
            ]
        );
        let cookies: Vec<&HeaderValue> = sent.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(
            cookies,
            ["a=1", "b=2"],
            "values of one name keep their order"
        );
        assert_eq!(sent["x-hourglass-upstream"], "primary");
    }

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

    /// The call path writes HTTP/1.1 heads by hand; they must carry exactly what the built
    /// request does, for every rule of which header goes.
    #[test]
    fn the_http1_head_written_by_hand_carries_what_the_built_request_does() {
        let config = hourglass_config::Config::from_toml(
            "[upstreams.plain]\nbase_url = \"http://a.example:8080/v1/\"\n\
             [upstreams.keyed]\nbase_url = \"http://k.example/v1\"\napi_key_env = \"K\"\n\
             headers = { x-team = \"blue\", accept-encoding = \"gzip\", x-client = \"ours\" }\n\
             [upstreams.claude]\nbase_url = \"https://c.example\"\nprotocol = \"anthropic\"\n\
             api_key_env = \"K\"\napi_key_header = \"x-api-key\"\n\
             [models.m]\ntargets = [\"plain\"]\n",
            "t.toml",
            &|name| (name == "K").then(|| "sk-1".to_owned()),
        )
        .unwrap();
        let body = Bytes::from_static(br#"{"model":"m","messages":[]}"#);
        let mut requests = Vec::new();
        for (endpoint, path) in [
            (crate::protocol::Endpoint::Chat, "/chat/completions?x=1"),
            (crate::protocol::Endpoint::Messages, "/messages"),
        ] {
            let mut request = CallRequest::new(endpoint, path, body.clone()).unwrap();
            for (name, value) in [
                ("authorization", "Bearer client"),
                ("x-api-key", "client"),
                ("host", "client.example"),
                ("connection", "x-hop, keep-alive"),
                ("x-hop", "1"),
                ("accept-encoding", "br"),
                ("content-length", "99"),
                ("x-hourglass-timeout", "5s"),
                ("x-client", "theirs"),
                ("x-keep", "a"),
                ("x-keep", "b"),
            ] {
                request.headers.append(
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                );
            }
            requests.push(request);
        }
        // A client's own version header is kept over the protocol's default.
        requests[1]
            .headers
            .insert("anthropic-version", HeaderValue::from_static("2099-01-01"));
        for upstream in &config.upstreams {
            for request in &requests {
                let (built, _) = build(request, upstream, body.clone(), false).unwrap();
                let mut expected: Vec<(String, Vec<u8>)> = (built.headers().iter())
                    .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                    .collect();
                let mut out = Vec::new();
                encode_h1(request, upstream, &mut out);
                out.extend_from_slice(b"\r\n");
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut parsed = httparse::Request::new(&mut headers);
                assert!(parsed.parse(&out).unwrap().is_complete());
                assert_eq!(parsed.method, Some(request.method.as_str()));
                assert_eq!(parsed.path, Some(built.uri().to_string().as_str()));
                let mut written: Vec<(String, Vec<u8>)> = (parsed.headers.iter())
                    .map(|h| (h.name.to_owned(), h.value.to_vec()))
                    .collect();
                expected.sort();
                written.sort();
                assert_eq!(written, expected, "{} {}", upstream.name, request.path);
                let text: Vec<String> = (written.iter())
                    .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v)))
                    .collect();
                // The rules themselves, spelled out for two cases.
                let rules: &[&str] = match (upstream.name.as_str(), request.path.as_str()) {
                    ("keyed", "/chat/completions?x=1") => &[
                        "accept-encoding: identity",
                        "authorization: Bearer sk-1",
                        "host: k.example",
                        "x-client: ours",
                        "x-keep: a",
                        "x-keep: b",
                        "x-team: blue",
                    ],
                    ("claude", "/messages") => &[
                        "accept-encoding: identity",
                        "anthropic-version: 2099-01-01",
                        "host: c.example",
                        "x-api-key: sk-1",
                        "x-client: theirs",
                        "x-keep: a",
                        "x-keep: b",
                    ],
                    _ => continue,
                };
                assert_eq!(text, rules, "{} {}", upstream.name, request.path);
            }
        }
    }
}
