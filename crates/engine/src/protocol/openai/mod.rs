//! OpenAI's wire format: chat completions, legacy completions, responses, embeddings and images.
//! A request names `model` and may ask for `stream`; a stream is SSE with `data:` JSON chunks
//! ending in `[DONE]` (or, for responses, typed events ending in `response.completed`); errors
//! are `{"error": {"message", "type", "param", "code"}}`; the key travels as a bearer token.

pub mod assemble; // one chat completion body put together from a stream
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

/// OpenAI's wire format.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAi;

/// What the engine reads of an OpenAI request body: the routing fields, and the ones that decide
/// whether a whole answer can be assembled from a stream.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(borrow, default)]
    logprobs: Option<&'a RawValue>,
    #[serde(borrow, default)]
    top_logprobs: Option<&'a RawValue>,
    #[serde(borrow, default)]
    audio: Option<&'a RawValue>,
    #[serde(borrow, default)]
    modalities: Option<&'a RawValue>,
    #[serde(borrow, default)]
    echo: Option<&'a RawValue>,
    #[serde(borrow, default)]
    best_of: Option<&'a RawValue>,
    #[serde(borrow, default)]
    background: Option<&'a RawValue>,
    #[serde(borrow, default)]
    previous_response_id: Option<&'a RawValue>,
}

/// Whether a request field asks for something: present and not `null` or `false`.
fn asks(value: Option<&RawValue>) -> bool {
    value.is_some_and(|v| !matches!(v.get().trim(), "null" | "false"))
}

impl Head<'_> {
    /// Whether a whole answer to this request can be assembled from a stream: the assembler
    /// rebuilds everything asked for, and the request can stream at all.
    fn assemblable(&self, endpoint: Endpoint) -> bool {
        match endpoint {
            // Not log probabilities or audio: they come in chunks the assembler does not rebuild.
            Endpoint::Chat => {
                let audio_output = self.modalities.is_some_and(|m| {
                    serde_json::from_str::<Vec<&str>>(m.get())
                        .is_ok_and(|list| list.contains(&"audio"))
                });
                !asks(self.logprobs)
                    && !asks(self.top_logprobs)
                    && !asks(self.audio)
                    && !audio_output
            }
            // Not log probabilities, not the prompt echoed back, not `best_of` (which cannot
            // stream).
            Endpoint::Completions => {
                let best_of = self
                    .best_of
                    .is_some_and(|b| !matches!(b.get().trim(), "null" | "1"));
                !asks(self.logprobs) && !asks(self.echo) && !best_of
            }
            // The final event carries the whole response; a background response answers at once.
            Endpoint::Responses => !asks(self.background),
            _ => false,
        }
    }
}

impl OpenAi {
    /// OpenAI's error `type` for an error's status.
    pub fn error_type(error: &CallError) -> &'static str {
        match error.status.as_u16() {
            429 => "rate_limit_error",
            504 => "timeout_error",
            400..=499 => "invalid_request_error",
            _ => "upstream_error",
        }
    }

    /// The error in OpenAI's shape with an `hourglass` object (the trail and the diagnosis).
    pub fn error_json(error: &CallError) -> serde_json::Value {
        let hourglass = super::hourglass_details(error);
        json!({"error": {"message": error.message, "type": OpenAi::error_type(error), "param": null,
                         "code": error.code, "hourglass": hourglass}})
    }
}

impl Protocol for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn format(&self) -> WireFormat {
        WireFormat::OpenAi
    }

    fn read_request(&self, endpoint: Endpoint, body: &[u8]) -> Result<RequestHead, BadBody> {
        let (head, fields): (Head<'_>, _) = read_fields(json_object(body)?)?;
        let (model, model_span) = model_and_span(head.model, body)?;
        let responses = endpoint == Endpoint::Responses;
        let continues = match head.previous_response_id.filter(|_| responses) {
            Some(raw) if raw.get().trim() != "null" => Some(
                serde_json::from_str::<String>(raw.get()).map_err(|_| BadBody {
                    message: format!("`previous_response_id` must be a string, not {}", raw.get()),
                    param: Some("previous_response_id"),
                })?,
            ),
            _ => None,
        };
        Ok(RequestHead {
            model,
            model_span,
            stream: head.stream.unwrap_or(false) && endpoint.streams(),
            assemblable: head.assemblable(endpoint),
            background: responses && asks(head.background),
            continues,
            fields,
        })
    }

    fn stream_asks_usage(&self, endpoint: Endpoint) -> bool {
        // Chat and completions streams report usage only when asked; a response's final event
        // carries it anyway.
        endpoint != Endpoint::Responses
    }

    fn assembler(&self, endpoint: Endpoint) -> Box<dyn Assemble> {
        match endpoint {
            Endpoint::Completions => Box::new(assemble::CompletionAssembler::default()),
            Endpoint::Responses => Box::new(assemble::ResponseAssembler::default()),
            _ => assemble::Assembler::boxed(),
        }
    }

    fn classify(&self, endpoint: Endpoint, event: &Event<'_>) -> Signal {
        content::classify(endpoint, event)
    }

    fn classifier(&self, endpoint: Endpoint) -> Box<dyn super::Classify> {
        match endpoint {
            Endpoint::Chat => Box::new(content::ChatClassifier::default()),
            _ => Box::new(super::Stateless {
                protocol: &OpenAi,
                endpoint,
            }),
        }
    }

    fn needs_finish_reason(&self, endpoint: Endpoint) -> bool {
        matches!(endpoint, Endpoint::Chat | Endpoint::Completions)
    }

    fn check_answer(
        &self,
        endpoint: Endpoint,
        stream: bool,
        content_type: Option<&str>,
    ) -> Result<(), String> {
        super::check_content_type(endpoint == Endpoint::Other, stream, content_type)
    }

    fn error_body(&self, error: &CallError) -> Bytes {
        Bytes::from(
            serde_json::to_vec(&OpenAi::error_json(error))
                .expect("serializing a json value cannot fail"),
        )
    }

    fn error_event(&self, endpoint: Endpoint, error: &CallError, sequence: u64) -> Bytes {
        let data = match endpoint {
            // The Responses API's own error event: typed, numbered, `code` and message kept.
            Endpoint::Responses => {
                let mut event = OpenAi::error_json(error)["error"].take();
                event["type"] = json!("error");
                event["sequence_number"] = json!(sequence);
                let data = serde_json::to_vec(&event).expect("a json value serializes");
                return super::error_sse(&data);
            }
            // Chat and legacy completions: a `data:` line carrying the error object, as
            // OpenAI's own streams end when they fail.
            _ => self.error_body(error),
        };
        let mut event = b"data: ".to_vec();
        event.extend_from_slice(&data);
        event.extend_from_slice(b"\n\n");
        Bytes::from(event)
    }

    fn sequence_number(&self, endpoint: Endpoint, event: &Event<'_>) -> Option<u64> {
        if endpoint != Endpoint::Responses {
            return None;
        }
        #[derive(Deserialize)]
        struct Numbered {
            sequence_number: Option<u64>,
        }
        let data = event.data.as_deref()?;
        serde_json::from_str::<Numbered>(data).ok()?.sequence_number
    }

    fn numbers_events(&self, endpoint: Endpoint) -> bool {
        endpoint == Endpoint::Responses
    }

    fn check_request(&self, model: &str) -> (Endpoint, &'static str, Bytes) {
        let body = json!({
            "model": model,
            "messages": [{"role": "user", "content": "ping"}],
            "max_tokens": 1,
            "stream": true,
        });
        (
            Endpoint::Chat,
            "/chat/completions",
            Bytes::from(body.to_string()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(endpoint: Endpoint, body: &[u8]) -> RequestHead {
        OpenAi.read_request(endpoint, body).unwrap()
    }

    #[test]
    fn the_model_and_stream_flag_are_read_without_parsing_the_rest() {
        let body = br#"{"messages":[{"role":"user","content":"\"model\": x"}],"model" : "gpt-4o","stream":true}"#;
        let head = read(Endpoint::Chat, body);
        assert_eq!(head.model.as_deref(), Some("gpt-4o"));
        assert_eq!(&body[head.model_span.unwrap()], br#""gpt-4o""#);
        assert!(head.stream);
        assert!(
            !read(Endpoint::Embeddings, body).stream,
            "embeddings do not stream"
        );
    }

    #[test]
    fn whether_a_whole_answer_can_be_assembled_is_read_from_the_fields_not_the_text() {
        let chat = |body: &str| read(Endpoint::Chat, body.as_bytes()).assemblable;
        assert!(chat(r#"{"model":"m","messages":[]}"#));
        assert!(
            chat(r#"{"model":"m","messages":[{"role":"user","content":"what are logprobs?"}]}"#),
            "a message that mentions logprobs asks for none"
        );
        assert!(chat(r#"{"model":"m","logprobs":false,"audio":null}"#));
        assert!(!chat(r#"{"model":"m","logprobs":true}"#));
        assert!(!chat(r#"{"model":"m","top_logprobs":2}"#));
        assert!(!chat(
            r#"{"model":"m","audio":{"voice":"alloy","format":"wav"}}"#
        ));
        assert!(!chat(r#"{"model":"m","modalities":["text","audio"]}"#));
        assert!(chat(r#"{"model":"m","modalities":["text"]}"#));
        let completions = |body: &str| read(Endpoint::Completions, body.as_bytes()).assemblable;
        assert!(completions(r#"{"model":"m","prompt":"hi","best_of":1}"#));
        assert!(!completions(r#"{"model":"m","prompt":"hi","logprobs":2}"#));
        assert!(!completions(r#"{"model":"m","prompt":"hi","echo":true}"#));
        assert!(!completions(r#"{"model":"m","prompt":"hi","best_of":3}"#));
        assert!(read(Endpoint::Responses, br#"{"model":"m","input":"hi"}"#).assemblable);
        assert!(!read(Endpoint::Responses, br#"{"model":"m","background":true}"#).assemblable);
        assert!(!read(Endpoint::Embeddings, br#"{"model":"m"}"#).assemblable);
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        let message = |body: &[u8]| {
            OpenAi
                .read_request(Endpoint::Chat, body)
                .unwrap_err()
                .message
        };
        assert!(message(b"{\"model\":").contains("not valid JSON"));
        assert_eq!(
            OpenAi
                .read_request(Endpoint::Chat, br#"{"model":3}"#)
                .unwrap_err()
                .param,
            Some("model")
        );
        assert!(message(br#"{"stream":"yes"}"#).contains("invalid request body"));
        assert!(message(br#"{"model":""}"#).contains("`model` is empty"));
        assert!(message(br#"{"model":"  "}"#).contains("`model` is empty"));
        let long = format!(r#"{{"model":"{}"}}"#, "m".repeat(257));
        assert!(message(long.as_bytes()).contains("longer than 256"));
        assert!(
            OpenAi
                .read_request(
                    Endpoint::Chat,
                    format!(r#"{{"model":"{}"}}"#, "m".repeat(256)).as_bytes()
                )
                .is_ok()
        );
        assert_eq!(read(Endpoint::Chat, br#"{"input":"x"}"#).model, None);
        assert!(OpenAi.read_request(Endpoint::Chat, b"[1,2]").is_err());
        // Found by fuzzing: an array was read field by field, as if it were an object.
        let array = message(br#"["gpt-4o", true]"#);
        assert!(array.contains("must be a JSON object"), "{array}");
        // Found by fuzzing: a broken byte in a field the gateway does not read.
        let broken = message(b"{\"model\":\"m\",\"con\xabent\":1}");
        assert!(broken.contains("not valid UTF-8 (byte 17)"), "{broken}");
    }

    #[test]
    fn an_answer_must_be_what_the_endpoint_answers_with() {
        let check = |endpoint, stream, kind| OpenAi.check_answer(endpoint, stream, kind);
        assert!(
            check(
                Endpoint::Chat,
                false,
                Some("application/json; charset=utf-8")
            )
            .is_ok()
        );
        assert!(
            check(
                Endpoint::Chat,
                true,
                Some("text/event-stream; charset=utf-8")
            )
            .is_ok()
        );
        assert!(check(Endpoint::Chat, false, Some("text/event-stream")).is_ok());
        assert!(check(Endpoint::Chat, false, None).is_ok());
        let page = check(Endpoint::Chat, false, Some("text/html; charset=utf-8")).unwrap_err();
        assert!(
            page.contains("`text/html`") && page.contains("captive portal"),
            "{page}"
        );
        let whole = check(Endpoint::Responses, true, Some("application/json")).unwrap_err();
        assert!(whole.contains("a stream was asked for"), "{whole}");
        assert!(check(Endpoint::Other, true, Some("audio/mpeg")).is_ok());
    }

    #[test]
    fn a_responses_stream_ends_with_the_responses_apis_own_error_event() {
        let error = CallError::before_attempts(
            crate::vocabulary::ErrorCode::UpstreamCut,
            http::StatusCode::BAD_GATEWAY,
            "cut".to_owned(),
        );
        let event = OpenAi.error_event(Endpoint::Responses, &error, 7);
        let text = String::from_utf8(event.to_vec()).unwrap();
        let data = text.strip_prefix("event: error\ndata: ").unwrap();
        let value: serde_json::Value = serde_json::from_str(data.trim_end()).unwrap();
        assert_eq!(value["type"], "error");
        assert_eq!(value["code"], "upstream_cut");
        assert_eq!(value["message"], "cut");
        assert_eq!(value["sequence_number"], 7);
        assert!(value["param"].is_null());
        for endpoint in [Endpoint::Chat, Endpoint::Completions] {
            let text = String::from_utf8(OpenAi.error_event(endpoint, &error, 7).to_vec()).unwrap();
            let data = text.strip_prefix("data: ").unwrap();
            let value: serde_json::Value = serde_json::from_str(data.trim_end()).unwrap();
            assert_eq!(value["error"]["code"], "upstream_cut", "{endpoint:?}");
        }
    }
}
