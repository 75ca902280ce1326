//! The request id every call carries upstream and every answer echoes: the client's own
//! `x-request-id` when it is a sane one, else a new random UUID.

use http::{HeaderMap, HeaderValue};

/// The id of a request with `headers`: the client's `x-request-id` if it is 1–128 characters of
/// letters, digits and `._:-`, else a new one.
pub(super) fn of(headers: &HeaderMap) -> HeaderValue {
    let sane = |id: &[u8]| {
        (1..=128).contains(&id.len())
            && (id.iter())
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    };
    match headers.get(hourglass_engine::header_names::X_REQUEST_ID) {
        Some(id) if sane(id.as_bytes()) => id.clone(),
        _ => new(),
    }
}

/// A random UUID (version 4). Not a prefixed id: llama.cpp's Python server (starlette-context)
/// answers a bare 400 to any `x-request-id` that is not a UUID. Written byte by byte, two digits
/// each: this is on every call's path, where two `format!`s cost more than the rest of the id,
/// and a digit at a time (a 128-bit shift each) cost ~380 instructions a call (issue 19).
fn new() -> HeaderValue {
    let bits = fastrand::u128(..) & !(0xf000 << 64) & !(0xc << 60);
    let id = text(bits | (0x4000 << 64) | (0x8 << 60));
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// `bits` as a UUID's text: 32 lowercase hex digits in the bits' order, dashed 8-4-4-4-12.
fn text(bits: u128) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Where each byte's two hex digits go, around the dashes at 8, 13, 18 and 23.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut id = [b'-'; 36];
    for (byte, at) in bits.to_be_bytes().into_iter().zip(AT) {
        id[at] = HEX[usize::from(byte >> 4)];
        id[at + 1] = HEX[usize::from(byte & 0xf)];
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_id_is_a_version_4_uuid() {
        let ids: Vec<String> = (0..200)
            .map(|_| new().to_str().unwrap().to_owned())
            .collect();
        for id in &ids {
            let bytes = id.as_bytes();
            assert_eq!(bytes.len(), 36, "{id}");
            for (at, b) in bytes.iter().enumerate() {
                match at {
                    8 | 13 | 18 | 23 => assert_eq!(*b, b'-', "{id}"),
                    14 => assert_eq!(*b, b'4', "version 4: {id}"),
                    19 => assert!(b"89ab".contains(b), "the RFC 4122 variant: {id}"),
                    _ => assert!(b.is_ascii_hexdigit() && !b.is_ascii_uppercase(), "{id}"),
                }
            }
        }
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        // Every hex digit appears in every free position over 200 ids (none is stuck).
        for at in (0..36).filter(|at| ![8, 13, 14, 18, 19, 23].contains(at)) {
            let seen: std::collections::HashSet<u8> =
                ids.iter().map(|id| id.as_bytes()[at]).collect();
            assert!(seen.len() >= 12, "position {at} took only {seen:?}");
        }
    }

    /// The digits are the bits in order, as a UUID writes its 16 bytes, whatever the bits.
    #[test]
    fn an_ids_text_is_its_bits_in_order() {
        for bits in [
            0,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
            1 << 127,
            1,
        ] {
            let hex = format!("{bits:032x}");
            let dashed = [
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..],
            ];
            assert_eq!(text(bits), dashed.join("-").as_bytes(), "{hex}");
        }
    }

    #[test]
    fn a_sane_client_id_is_kept_and_any_other_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("req_1.a:b-c"));
        assert_eq!(of(&headers), "req_1.a:b-c");
        headers.insert("x-request-id", HeaderValue::from_static("bad id"));
        assert_eq!(of(&headers).len(), 36);
        assert_eq!(of(&HeaderMap::new()).len(), 36);
    }
}
