//! The request id every call carries upstream and every answer echoes: the client's own
//! `x-request-id` when it is a sane one, else a new random UUID.

use http::{HeaderMap, HeaderValue};

/// The id of a request with `headers`: the client's `x-request-id` if it is 1–128 characters of
/// letters, digits and `._:-`, else a new one.
pub(super) fn of(headers: &HeaderMap) -> HeaderValue {
    let id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        })
        .map_or_else(new, str::to_owned);
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// A random UUID (version 4). Not a prefixed id: llama.cpp's Python server (starlette-context)
/// answers a bare 400 to any `x-request-id` that is not a UUID.
fn new() -> String {
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
