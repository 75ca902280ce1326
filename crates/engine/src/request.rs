//! What a call asks for: the endpoint, the body as the client sent it, the model it names (and
//! where in the body, so an alias can be spliced in without re-serializing), whether it streams,
//! and the client's own deadline.

use std::ops::Range;

use bytes::Bytes;
use http::{HeaderMap, Method};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::stream::content::Endpoint;

/// One call to make.
#[derive(Debug, Clone)]
pub struct CallRequest {
    /// The API called.
    pub endpoint: Endpoint,
    /// The method.
    pub method: Method,
    /// Path and query after the `/v1` prefix, e.g. `/chat/completions`.
    pub path: String,
    /// The client's headers (the engine drops hop-by-hop and hourglass-own ones).
    pub headers: HeaderMap,
    /// The body, forwarded untouched except an aliased `model`.
    pub body: Bytes,
    /// The model the client asked for, when the body names one.
    pub model: Option<String>,
    /// Where the `model` value (with its quotes) sits in the body.
    pub model_span: Option<Range<usize>>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The client's own deadline less the margin, and where it came from (for messages).
    pub client_deadline: Option<(Instant, String)>,
    /// When the request arrived.
    pub start: Instant,
}

/// Why a request body cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadBody {
    /// What was wrong.
    pub message: String,
    /// The field at fault.
    pub param: Option<&'static str>,
}

/// What the gateway reads of a body before routing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The model asked for.
    pub model: Option<String>,
    /// Where its value (with quotes) sits in the body.
    pub model_span: Option<Range<usize>>,
    /// Whether a stream is asked for.
    pub stream: bool,
}

#[derive(Deserialize)]
struct RawHead<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<bool>,
}

impl CallRequest {
    /// A POST to an OpenAI route with `body`, reading `model` and `stream` from it.
    pub fn new(endpoint: Endpoint, path: &str, body: Bytes) -> Result<CallRequest, BadBody> {
        let Head {
            model,
            model_span,
            stream,
        } = read_head(&body)?;
        Ok(CallRequest {
            endpoint,
            method: Method::POST,
            path: path.to_owned(),
            headers: HeaderMap::new(),
            body,
            model,
            model_span,
            stream: stream
                && matches!(
                    endpoint,
                    Endpoint::Chat | Endpoint::Completions | Endpoint::Responses
                ),
            client_deadline: None,
            start: Instant::now(),
        })
    }

    /// The body with the `model` value replaced by `model` (only that span changes).
    pub fn body_for(&self, model: &str) -> Bytes {
        match (&self.model_span, &self.model) {
            (Some(span), Some(asked)) if asked != model => {
                let quoted = serde_json::to_string(model).expect("a string serializes");
                let mut out = Vec::with_capacity(self.body.len() + quoted.len());
                out.extend_from_slice(&self.body[..span.start]);
                out.extend_from_slice(quoted.as_bytes());
                out.extend_from_slice(&self.body[span.end..]);
                Bytes::from(out)
            }
            _ => self.body.clone(),
        }
    }
}

/// Reads `model` (its value and span) and `stream` from a JSON body without building it.
pub fn read_head(body: &[u8]) -> Result<Head, BadBody> {
    // JSON is UTF-8 (RFC 8259); serde skips the fields it ignores without checking them, so a
    // broken byte there would go upstream and come back as someone else's confusing error.
    let text = std::str::from_utf8(body).map_err(|e| BadBody {
        message: format!(
            "the request body is not valid UTF-8 (byte {}); JSON must be UTF-8",
            e.valid_up_to()
        ),
        param: None,
    })?;
    // serde's derived struct reading also takes a JSON array (`["gpt-4o", true]`) field by field.
    if !text.trim_start().starts_with('{') {
        return Err(BadBody {
            message: "the request body must be a JSON object (`{\"model\": …}`)".to_owned(),
            param: None,
        });
    }
    let head: RawHead<'_> = serde_json::from_str(text).map_err(|e| BadBody {
        message: if e.is_data() {
            format!("invalid request body: {e}")
        } else {
            format!("the request body is not valid JSON: {e}")
        },
        param: None,
    })?;
    let (model, span) = match head.model {
        None => (None, None),
        Some(raw) => {
            let text = raw.get();
            let model: String = serde_json::from_str(text).map_err(|_| BadBody {
                message: format!("`model` must be a string, not {text}"),
                param: Some("model"),
            })?;
            // The raw value borrows from `body`: its offset is where the value starts.
            let start = text.as_ptr() as usize - body.as_ptr() as usize;
            (Some(model), Some(start..start + text.len()))
        }
    };
    Ok(Head {
        model,
        model_span: span,
        stream: head.stream.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_and_stream_flag_are_read_without_parsing_the_rest() {
        let body = br#"{"messages":[{"role":"user","content":"\"model\": x"}],"model" : "gpt-4o","stream":true}"#;
        let head = read_head(body).unwrap();
        assert_eq!(head.model.as_deref(), Some("gpt-4o"));
        assert_eq!(&body[head.model_span.unwrap()], br#""gpt-4o""#);
        assert!(head.stream);
    }

    #[test]
    fn an_alias_is_spliced_in_and_nothing_else_changes() {
        let body = Bytes::from_static(br#"{ "model":"fast",  "messages":[],"temperature":0.25 }"#);
        let request = CallRequest::new(Endpoint::Chat, "/chat/completions", body.clone()).unwrap();
        assert_eq!(
            &request.body_for("gpt-4o-mini")[..],
            br#"{ "model":"gpt-4o-mini",  "messages":[],"temperature":0.25 }"#
        );
        assert_eq!(request.body_for("fast"), body, "no alias, no copy");
        let escaped = request.body_for("we\"ird");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&escaped).unwrap()["model"],
            "we\"ird"
        );
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        assert!(
            read_head(b"{\"model\":")
                .unwrap_err()
                .message
                .contains("not valid JSON")
        );
        assert_eq!(
            read_head(br#"{"model":3}"#).unwrap_err().param,
            Some("model")
        );
        assert!(
            read_head(br#"{"stream":"yes"}"#)
                .unwrap_err()
                .message
                .contains("invalid request body")
        );
        assert_eq!(read_head(br#"{"input":"x"}"#).unwrap().model, None);
        assert!(read_head(b"[1,2]").is_err());
        // Found by fuzzing: an array was read field by field, as if it were an object.
        let array = read_head(br#"["gpt-4o", true]"#).unwrap_err();
        assert!(
            array.message.contains("must be a JSON object"),
            "{}",
            array.message
        );
        // Found by fuzzing: a broken byte in a field the gateway does not read.
        let broken = read_head(b"{\"model\":\"m\",\"con\xabent\":1}").unwrap_err();
        assert!(
            broken.message.contains("not valid UTF-8 (byte 17)"),
            "{}",
            broken.message
        );
    }
}
