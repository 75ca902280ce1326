//! What a request's framing must be before anything else is looked at: a head within
//! `server.max_header_bytes` (hyper's read buffer bounds it only loosely), and a declared body
//! within `server.max_request_body` — refused at once, before `Expect: 100-continue` invites the
//! upload. (A request with both `Content-Length` and `Transfer-Encoding` never arrives here with
//! both: hyper reads it by its chunked framing and drops the length, as RFC 9112 §6.3 says.)

use hourglass_config::ServerSettings;
use hourglass_engine::{CallError, ErrorCode};
use http::request::Parts;
use http::{StatusCode, header};

/// Refuses a request whose head or framing is not acceptable.
pub(super) fn check(parts: &Parts, settings: &ServerSettings) -> Result<(), CallError> {
    let head = head_size(parts);
    if head > settings.max_header_bytes {
        return Err(CallError::before_attempts(
            ErrorCode::HeadersTooLarge,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request line and headers take {head} bytes, more than {} (server.max_header_bytes)",
                settings.max_header_bytes
            ),
        ));
    }
    Ok(())
}

/// Refuses a body declared larger than `server.max_request_body`, before any of it is read.
pub(super) fn declared_body(parts: &Parts, settings: &ServerSettings) -> Result<(), CallError> {
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(length) if length > settings.max_request_body as u64 => {
            Err(CallError::before_attempts(
                ErrorCode::RequestTooLarge,
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is declared as {length} bytes, larger than {} bytes (server.max_request_body)",
                    settings.max_request_body
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// The size of the request line and headers as written on the wire.
fn head_size(parts: &Parts) -> usize {
    let line = parts.method.as_str().len() + uri_len(&parts.uri) + "  HTTP/1.1\r\n".len();
    let headers: usize = (parts.headers.iter())
        .map(|(name, value)| name.as_str().len() + value.len() + ": \r\n".len())
        .sum();
    line + headers + "\r\n".len()
}

/// How long `uri` is as written (its `Display`), counted without writing it: this runs on every
/// call, and formatting the URI into a string cost an allocation and the formatter's walk.
fn uri_len(uri: &http::Uri) -> usize {
    let scheme = uri
        .scheme_str()
        .map_or(0, |scheme| scheme.len() + "://".len());
    let authority = uri
        .authority()
        .map_or(0, |authority| authority.as_str().len());
    let query = uri.query().map_or(0, |query| query.len() + 1);
    scheme + authority + uri.path().len() + query
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, String)]) -> Parts {
        let mut request = http::Request::post("/v1/chat/completions");
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        request.body(()).unwrap().into_parts().0
    }

    fn settings() -> ServerSettings {
        let mut config = hourglass_config::Config::single_upstream("a", "http://127.0.0.1:9/v1");
        config.server.max_header_bytes = 16 * 1024;
        config.server.max_request_body = 1024;
        config.server
    }

    #[test]
    fn a_uri_is_counted_as_long_as_it_is_written() {
        for uri in [
            "/v1/chat/completions",
            "/v1/models?limit=2&after=x",
            "/?",
            "*",
            "example.com:443",
            "http://example.com",
            "https://user@example.com:8443/v1/a%2Fb?q=1#frag",
            "http://[::1]:9/v1/chat/completions?",
        ] {
            let parsed: http::Uri = uri.parse().unwrap();
            assert_eq!(uri_len(&parsed), parsed.to_string().len(), "{uri}");
        }
    }

    #[test]
    fn the_head_is_measured_as_written_and_held_to_the_limit() {
        let settings = settings();
        let small = parts(&[("x-a", "1".repeat(1000))]);
        assert!(head_size(&small) > 1000 && head_size(&small) < 1100);
        assert!(check(&small, &settings).is_ok());
        let big = parts(&[("x-a", "1".repeat(10_000)), ("x-b", "2".repeat(7_000))]);
        let error = check(&big, &settings).unwrap_err();
        assert_eq!(error.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(error.code, ErrorCode::HeadersTooLarge);
    }

    #[test]
    fn a_body_declared_too_large_is_refused() {
        let settings = settings();
        let declared = parts(&[("content-length", "1025".to_owned())]);
        let error = declared_body(&declared, &settings).unwrap_err();
        assert_eq!(error.status, StatusCode::PAYLOAD_TOO_LARGE);
        let fits = parts(&[("content-length", "1024".to_owned())]);
        assert!(declared_body(&fits, &settings).is_ok());
    }
}
