//! Which events of a Messages stream are meaningful content (see the module above for why
//! thinking counts), which one finishes the answer and which one ends the stream.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::protocol::{Signal, excerpt};
use crate::sse::Event;

#[derive(Deserialize)]
struct Typed<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    content_block: Option<Block<'a>>,
}

/// A `content_block_delta`'s delta, or a `message_delta`'s.
#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
    #[serde(borrow, default)]
    partial_json: Option<&'a RawValue>,
    #[serde(borrow, default)]
    thinking: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stop_reason: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Block<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
}

/// Whether a JSON value carries something: not absent, null or `""`.
fn filled(value: Option<&RawValue>) -> bool {
    value.is_some_and(|v| !matches!(v.get().trim(), "null" | "\"\""))
}

/// Classifies one event of a Messages stream.
pub fn classify(event: &Event<'_>) -> Signal {
    let Some(data) = event.data.as_deref() else {
        return Signal::Nothing;
    };
    let data = crate::protocol::trimmed(data);
    if data.is_empty() {
        return Signal::Nothing;
    }
    let typed: Typed<'_> = match serde_json::from_str(data) {
        Ok(typed) => typed,
        Err(e) => return Signal::Malformed(format!("a Messages event is not JSON: {e}")),
    };
    let kind = typed.kind.as_deref().or(event.name).unwrap_or_default();
    match kind {
        "content_block_delta" => match typed.delta {
            // An empty first piece (tools often open with `"partial_json": ""`) is not yet content.
            Some(delta) => match delta.kind.as_deref() {
                Some("text_delta") if !filled(delta.text) => Signal::Nothing,
                Some("input_json_delta") if !filled(delta.partial_json) => Signal::Nothing,
                Some("thinking_delta") if !filled(delta.thinking) => Signal::Nothing,
                // Signatures, citations and kinds added later are content of a block.
                _ => Signal::Content,
            },
            None => Signal::Malformed("a content_block_delta without a delta".to_owned()),
        },
        // A redacted thinking block arrives whole in its start event.
        "content_block_start" => match typed.content_block.and_then(|b| b.kind) {
            Some(kind) if kind == "redacted_thinking" => Signal::Content,
            _ => Signal::Nothing,
        },
        "message_delta" if typed.delta.is_some_and(|d| filled(d.stop_reason)) => {
            Signal::Finish { content: false }
        }
        "message_stop" => Signal::End,
        "error" => Signal::UpstreamError(excerpt(data)),
        // message_start, ping, content_block_stop, a message_delta without a stop reason, and
        // event types this gateway does not know: passed on, counted for nothing.
        _ => Signal::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &'static str, data: &'static str) -> Signal {
        classify(&Event {
            name: Some(name),
            data: Some(Cow::Borrowed(data)),
        })
    }

    #[test]
    fn lifecycle_events_and_pings_are_not_content() {
        assert_eq!(
            event(
                "message_start",
                r#"{"type":"message_start","message":{"id":"msg_1","content":[]}}"#
            ),
            Signal::Nothing
        );
        assert_eq!(event("ping", r#"{"type": "ping"}"#), Signal::Nothing);
        assert_eq!(
            event(
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#
            ),
            Signal::Nothing
        );
        assert_eq!(
            event(
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#
            ),
            Signal::Nothing
        );
        assert_eq!(
            event(
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":null},"usage":{"output_tokens":3}}"#
            ),
            Signal::Nothing
        );
        assert_eq!(
            event("future_event", r#"{"type":"future_event","x":1}"#),
            Signal::Nothing,
            "unknown types pass through"
        );
        assert_eq!(classify(&Event::default()), Signal::Nothing);
    }

    #[test]
    fn text_tool_input_thinking_and_signatures_are_content_unless_empty() {
        let delta = |d: &'static str| {
            let data: &'static str = Box::leak(
                format!(r#"{{"type":"content_block_delta","index":0,"delta":{d}}}"#)
                    .into_boxed_str(),
            );
            event("content_block_delta", data)
        };
        assert_eq!(
            delta(r#"{"type":"text_delta","text":"Hi"}"#),
            Signal::Content
        );
        assert_eq!(delta(r#"{"type":"text_delta","text":""}"#), Signal::Nothing);
        assert_eq!(
            delta(r#"{"type":"input_json_delta","partial_json":"{\"a\":"}"#),
            Signal::Content
        );
        assert_eq!(
            delta(r#"{"type":"input_json_delta","partial_json":""}"#),
            Signal::Nothing
        );
        assert_eq!(
            delta(r#"{"type":"thinking_delta","thinking":"Let me see"}"#),
            Signal::Content
        );
        assert_eq!(
            delta(r#"{"type":"signature_delta","signature":"EqQB"}"#),
            Signal::Content
        );
        assert_eq!(
            delta(r#"{"type":"citations_delta","citation":{}}"#),
            Signal::Content
        );
        assert_eq!(
            event(
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"redacted_thinking","data":"abc"}}"#
            ),
            Signal::Content
        );
    }

    #[test]
    fn a_stop_reason_finishes_message_stop_ends_and_error_fails() {
        assert_eq!(
            event(
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":9}}"#
            ),
            Signal::Finish { content: false }
        );
        assert_eq!(
            event("message_stop", r#"{"type":"message_stop"}"#),
            Signal::End
        );
        assert!(matches!(
            event(
                "error",
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            Signal::UpstreamError(text) if text.contains("overloaded_error")
        ));
        assert!(matches!(
            event("content_block_delta", r#"{"type":"content_block_delta","#),
            Signal::Malformed(_)
        ));
    }
}
