//! What the gateway reads of a request before routing it, on arbitrary input: the body's head
//! (`model`, its span, `stream`), the client's timeout headers and its heartbeat interval. No
//! panic; a model's span points at exactly its JSON string, so the alias splice cannot corrupt a
//! body; the hand scan of a body's fields takes nothing serde refuses; and a body rewritten to
//! ask for a stream is the client's with the alias, `stream` and `stream_options` changed; the
//! whole-answer check takes nothing serde refuses either.

#![no_main]

use bytes::Bytes;
use hourglass_engine::request::read_head;
use hourglass_engine::{CallRequest, Endpoint};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

const TIMEOUT_HEADERS: [&str; 4] = [
    "x-hourglass-timeout",
    "x-stainless-timeout",
    "x-stainless-read-timeout",
    "x-hourglass-heartbeat",
];

fuzz_target!(|input: &[u8]| {
    // Before the first 0xff byte: timeout header values separated by NUL bytes; after it, the body.
    let (headers, body) = match input.iter().position(|&b| b == 0xff) {
        Some(at) => (&input[..at], &input[at + 1..]),
        None => (&[][..], input),
    };
    let mut map = HeaderMap::new();
    for (name, value) in TIMEOUT_HEADERS.iter().zip(headers.split(|&b| b == 0)) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            map.insert(HeaderName::from_static(name), value);
        }
    }
    // Whatever a client declares is capped, so a deadline or an interval cannot overflow the
    // clock (found by a hostile client: `x-hourglass-timeout: 9223372036854775807s` panicked).
    for streaming in [false, true] {
        if let Ok(Some(declared)) = hourglass_gateway::client_timeouts(&map, streaming) {
            assert!(!declared.timeout.is_zero(), "a zero deadline was accepted");
            assert!(declared.timeout <= hourglass_gateway::MAX_CLIENT_TIMEOUT);
        }
    }
    if let Ok(Some(Some(interval))) = hourglass_gateway::requested_heartbeat(&map) {
        assert!(interval <= hourglass_gateway::MAX_HEARTBEAT);
    }

    // serde reads a raw value as it skips one: what it refuses here, it would refuse to skip.
    let refused = |json: &str| serde_json::from_str::<&serde_json::value::RawValue>(json).is_err();
    // A whole upstream answer taken by the scan is one serde would skip too (its check).
    if let Ok(text) = std::str::from_utf8(body)
        && hourglass_engine::protocol::json::one_value(body)
    {
        assert!(
            !refused(text),
            "the whole-answer scan took a body serde refuses"
        );
    }

    if let Ok(text) = std::str::from_utf8(body)
        && let Some(fields) = hourglass_engine::protocol::json::fields(text)
    {
        assert!(!refused(text), "the scan took a body serde refuses");
        for field in &fields {
            let (key, value) = field.in_text(text);
            assert!(!refused(value), "the scan took a value serde refuses");
            assert!(!key.contains(['"', '\\']), "a key with an escape or quote");
        }
    }

    if let Ok(head) = read_head(Endpoint::Chat, body) {
        if let (Some(model), Some(span)) = (&head.model, &head.model_span) {
            let raw = &body[span.clone()];
            let parsed: String = serde_json::from_slice(raw).expect("the span is a JSON string");
            assert_eq!(&parsed, model);
        }
        // The splice of an alias changes the model and nothing else.
        if let (Ok(request), Ok(mut expected)) = (
            CallRequest::new(
                Endpoint::Chat,
                "/chat/completions",
                Bytes::copy_from_slice(body),
            ),
            serde_json::from_slice::<serde_json::Value>(body),
        ) && request.model.is_some()
        {
            let spliced: serde_json::Value =
                serde_json::from_slice(&request.body_for("alias-model"))
                    .expect("a spliced body is JSON");
            expected["model"] = "alias-model".into();
            assert_eq!(spliced, expected);
            // Asked for a stream (a whole answer assembled from one): only `stream` and
            // `stream_options` change besides the alias.
            let streaming: serde_json::Value = serde_json::from_slice(
                &request
                    .streaming_body_for("alias-model")
                    .expect("a body that was read can be rewritten"),
            )
            .expect("a streaming body is JSON");
            expected["stream"] = true.into();
            match expected["stream_options"].as_object_mut() {
                Some(options) => {
                    options.insert("include_usage".into(), true.into());
                }
                None => expected["stream_options"] = serde_json::json!({"include_usage": true}),
            }
            assert_eq!(streaming, expected);
        }
    }
});
