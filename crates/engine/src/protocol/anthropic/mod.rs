//! Anthropic's Messages API: `/v1/messages` (whole and streamed) and `/v1/messages/count_tokens`.
//! A request names `model` and may ask for `stream`; a stream is SSE with named, typed events
//! from `message_start` to `message_stop`, `ping`s between them, and an `error` event when the
//! server fails mid-answer; errors are `{"type": "error", "error": {"type", "message"}}`.
//!
//! The phase protocol, read the Anthropic way: `message_start`, `content_block_start`, `ping`
//! and `content_block_stop` are not content; the first non-empty `content_block_delta` — text,
//! tool input JSON, thinking or its signature — is the first token and the commit point, and
//! every later one resets `idle`. Thinking counts: it is what the model streams while it
//! reasons, the client shows it, and a reasoning model may think for minutes — holding the
//! answer back until its text would turn every long thought into a first-token timeout. A
//! stream is complete only when a `message_delta` carried a `stop_reason` before
//! `message_stop`. Event types it does not know pass through and count for nothing.

pub mod assemble; // one Message put together from a stream
pub mod content; // which events of a stream are meaningful content

use bytes::Bytes;
use hourglass_config::WireFormat;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::{
    Assemble, BadBody, Endpoint, Protocol, RequestHead, Signal, json_object, model_and_span,
    read_fields,
};
use crate::error::CallError;
use crate::sse::Event;

/// The API version an upstream is told when the client did not say (health checks, clients
/// that leave it out): the one every current Messages feature is served under.
pub const DEFAULT_VERSION: &str = "2023-06-01";

/// Anthropic's keep-alive event, which its SDKs and Claude Code skip.
pub const PING: &[u8] = b"event: ping\ndata: {\"type\": \"ping\"}\n\n";

/// The error types Anthropic's API documents.
pub const ERROR_TYPES: [&str; 10] = [
    "invalid_request_error",
    "authentication_error",
    "billing_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "timeout_error",
    "overloaded_error",
];

/// Anthropic's wire format.
#[derive(Debug, Clone, Copy, Default)]
pub struct Anthropic;

/// What the engine reads of a Messages request body: the routing fields.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<bool>,
}

impl Anthropic {
    /// Anthropic's error `type`: the upstream's own when it sent one Anthropic documents (every
    /// upstream overloaded stays `overloaded_error` behind the gateway's 502), else the one of
    /// the error's status, so its SDKs raise the matching class.
    pub fn error_type(error: &CallError) -> &'static str {
        let upstream = error
            .upstream_error
            .as_ref()
            .and_then(|e| e.get("type"))
            .and_then(|t| t.as_str());
        if let Some(known) = upstream.and_then(|t| ERROR_TYPES.iter().find(|k| **k == t)) {
            return known;
        }
        match error.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            503 | 529 => "overloaded_error",
            504 => "timeout_error",
            _ => "api_error",
        }
    }

    /// The error in Anthropic's shape, with hourglass's `code` and an `hourglass` object (the
    /// trail and the diagnosis) beside Anthropic's own fields.
    pub fn error_json(error: &CallError) -> serde_json::Value {
        let hourglass = super::hourglass_details(error);
        json!({"type": "error",
               "error": {"type": Anthropic::error_type(error), "message": error.message,
                         "code": error.code, "hourglass": hourglass}})
    }
}

impl Protocol for Anthropic {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn format(&self) -> WireFormat {
        WireFormat::Anthropic
    }

    fn read_request(&self, endpoint: Endpoint, body: &[u8]) -> Result<RequestHead, BadBody> {
        let (head, fields): (Head<'_>, _) = read_fields(json_object(body)?)?;
        let (model, model_span) = model_and_span(head.model, body)?;
        let messages = endpoint == Endpoint::Messages;
        Ok(RequestHead {
            model,
            model_span,
            stream: head.stream.unwrap_or(false) && messages,
            // The assembler rebuilds every block the API streams.
            assemblable: messages,
            background: false,
            continues: None,
            fields,
        })
    }

    fn stream_asks_usage(&self, _endpoint: Endpoint) -> bool {
        // A Messages stream carries its usage without being asked.
        false
    }

    fn assembler(&self, _endpoint: Endpoint) -> Box<dyn Assemble> {
        Box::new(assemble::MessageAssembler::default())
    }

    fn classify(&self, _endpoint: Endpoint, event: &Event<'_>) -> Signal {
        content::classify(event)
    }

    fn classifier(&self, endpoint: Endpoint) -> Box<dyn super::Classify> {
        Box::new(super::Stateless {
            protocol: &Anthropic,
            endpoint,
        })
    }

    fn needs_finish_reason(&self, endpoint: Endpoint) -> bool {
        endpoint == Endpoint::Messages
    }

    fn check_answer(
        &self,
        endpoint: Endpoint,
        stream: bool,
        content_type: Option<&str>,
    ) -> Result<(), String> {
        super::check_content_type(endpoint == Endpoint::AnthropicOther, stream, content_type)
    }

    fn error_body(&self, error: &CallError) -> Bytes {
        Bytes::from(
            serde_json::to_vec(&Anthropic::error_json(error)).expect("a json value serializes"),
        )
    }

    fn error_event(&self, _endpoint: Endpoint, error: &CallError, _sequence: u64) -> Bytes {
        super::error_sse(&self.error_body(error))
    }

    fn sequence_number(&self, _endpoint: Endpoint, _event: &Event<'_>) -> Option<u64> {
        None
    }

    fn numbers_events(&self, _endpoint: Endpoint) -> bool {
        false
    }

    fn keepalive(&self) -> &'static [u8] {
        PING
    }

    fn default_headers(&self) -> &'static [(&'static str, &'static str)] {
        &[("anthropic-version", DEFAULT_VERSION)]
    }

    fn check_request(&self, model: &str) -> (Endpoint, &'static str, Bytes) {
        let body = json!({
            "model": model,
            "max_tokens": 1,
            "messages": [{"role": "user", "content": "ping"}],
            "stream": true,
        });
        (
            Endpoint::Messages,
            "/messages",
            Bytes::from(body.to_string()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocabulary::ErrorCode;
    use http::StatusCode;

    #[test]
    fn a_request_names_its_model_and_stream_flag() {
        let body = br#"{"max_tokens":64,"messages":[{"role":"user","content":"hi"}],"model":"claude-sonnet-4-5","stream":true}"#;
        let head = Anthropic.read_request(Endpoint::Messages, body).unwrap();
        assert_eq!(head.model.as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!(&body[head.model_span.unwrap()], br#""claude-sonnet-4-5""#);
        assert!(head.stream && head.assemblable);
        let count = Anthropic.read_request(Endpoint::CountTokens, body).unwrap();
        assert!(
            !count.stream && !count.assemblable,
            "count_tokens does not stream"
        );
        let bad = Anthropic
            .read_request(Endpoint::Messages, br#"{"model":7}"#)
            .unwrap_err();
        assert_eq!(bad.param, Some("model"));
    }

    #[test]
    fn errors_take_anthropics_shape_with_hourglasss_code_and_types_by_status() {
        for (status, kind) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (502, "api_error"),
            (503, "overloaded_error"),
            (529, "overloaded_error"),
            (504, "timeout_error"),
        ] {
            let error = CallError::before_attempts(
                ErrorCode::UpstreamStatus,
                StatusCode::from_u16(status).unwrap(),
                "why".to_owned(),
            );
            let body: serde_json::Value =
                serde_json::from_slice(&Anthropic.error_body(&error)).unwrap();
            assert_eq!(body["type"], "error");
            assert_eq!(body["error"]["type"], kind, "{status}");
            assert_eq!(body["error"]["message"], "why");
            assert_eq!(body["error"]["code"], "upstream_status");
            assert!(body["error"]["hourglass"]["diagnosis"].is_string());
        }
    }

    #[test]
    fn a_stream_ends_with_anthropics_own_error_event() {
        let error = CallError::before_attempts(
            ErrorCode::UpstreamCut,
            StatusCode::BAD_GATEWAY,
            "cut after 12 chunks".to_owned(),
        );
        let text = String::from_utf8(
            Anthropic
                .error_event(Endpoint::Messages, &error, 3)
                .to_vec(),
        )
        .unwrap();
        let data = text.strip_prefix("event: error\ndata: ").unwrap();
        assert!(data.ends_with("\n\n"));
        let value: serde_json::Value = serde_json::from_str(data.trim_end()).unwrap();
        assert_eq!(value["type"], "error");
        assert_eq!(value["error"]["type"], "api_error");
        assert_eq!(value["error"]["message"], "cut after 12 chunks");
        assert_eq!(value["error"]["code"], "upstream_cut");
    }
}
