//! Whole answers put together from streams, for non-streaming clients whose call the gateway
//! streamed from the upstream (so `first_token` and `idle` protect it): chat completions, legacy
//! completions and responses, each in the shape of the upstream's own non-streaming answer.

mod chat; // choices, content, refusals, tool calls, finish reasons, usage
mod completions; // choices' text, finish reasons, usage
mod responses; // the response object the final event carries

pub use chat::Assembler;
pub use completions::CompletionAssembler;
pub use responses::ResponseAssembler;

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

/// The fields every chunk of a chat or completions stream repeats, kept from the first chunk
/// that has each, and the usage from the chunk that reports it.
#[derive(Debug, Default)]
struct Common {
    id: Option<String>,
    created: Option<Value>,
    model: Option<Value>,
    system_fingerprint: Option<Value>,
    service_tier: Option<Value>,
    usage: Option<Value>,
}

/// One chunk of a chat or completions stream: the common fields and choices of type `C`. The
/// common fields are borrowed from the chunk's text and parsed only the first time each comes:
/// every chunk repeats them, and allocating them per chunk was most of the assembler's cost.
#[derive(Deserialize)]
struct ChunkIn<'a, C> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    created: Option<&'a RawValue>,
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    system_fingerprint: Option<&'a RawValue>,
    #[serde(borrow)]
    service_tier: Option<&'a RawValue>,
    #[serde(borrow)]
    usage: Option<&'a RawValue>,
    /// An error the upstream reported inside its stream.
    #[serde(borrow)]
    error: Option<&'a RawValue>,
    #[serde(default = "Vec::new")]
    choices: Vec<C>,
}

/// The value of a field seen for the first time, parsed (a raw value is valid JSON).
fn first(kept: &mut Option<Value>, raw: Option<&RawValue>) {
    if kept.is_none()
        && let Some(raw) = raw
    {
        *kept = serde_json::from_str(raw.get()).ok();
    }
}

/// Whether a raw JSON value is something: not `null`.
pub(super) fn present(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|v| v.get().trim() != "null")
}

impl Common {
    /// Takes a chunk's common fields; returns its choices.
    fn push<C>(&mut self, chunk: ChunkIn<'_, C>) -> Vec<C> {
        if self.id.is_none() {
            self.id = chunk.id.map(Cow::into_owned);
        }
        first(&mut self.created, chunk.created);
        first(&mut self.model, chunk.model);
        first(&mut self.system_fingerprint, chunk.system_fingerprint);
        first(&mut self.service_tier, chunk.service_tier);
        if let Some(usage) = present(chunk.usage) {
            self.usage = serde_json::from_str(usage.get()).ok();
        }
        chunk.choices
    }

    /// The whole answer: these fields around `choices`, as `object`.
    fn body(self, object: &str, choices: Vec<Value>) -> Value {
        let mut body = Map::new();
        body.insert("id".into(), json!(self.id));
        body.insert("object".into(), json!(object));
        body.insert("created".into(), self.created.unwrap_or(Value::Null));
        body.insert("model".into(), self.model.unwrap_or(Value::Null));
        if let Some(fingerprint) = self.system_fingerprint {
            body.insert("system_fingerprint".into(), fingerprint);
        }
        if let Some(tier) = self.service_tier {
            body.insert("service_tier".into(), tier);
        }
        body.insert("choices".into(), Value::Array(choices));
        if let Some(usage) = self.usage {
            body.insert("usage".into(), usage);
        }
        Value::Object(body)
    }
}

/// The request body asking for a stream: `stream: true` and, with `usage`,
/// `stream_options.include_usage: true`; everything else kept (values byte for byte).
pub fn streaming_body(body: &[u8], usage: bool) -> Result<Vec<u8>, String> {
    let mut map: std::collections::BTreeMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_slice(body)
            .map_err(|e| format!("the request body is not a JSON object: {e}"))?;
    let raw = |text: &str| {
        serde_json::value::RawValue::from_string(text.to_owned()).expect("literal JSON is valid")
    };
    map.insert("stream".into(), raw("true"));
    if !usage {
        return serde_json::to_vec(&map).map_err(|e| e.to_string());
    }
    let mut options: Map<String, Value> = map
        .get("stream_options")
        .and_then(|o| serde_json::from_str(o.get()).ok())
        .unwrap_or_default();
    options.insert("include_usage".into(), json!(true));
    map.insert(
        "stream_options".into(),
        raw(&Value::Object(options).to_string()),
    );
    serde_json::to_vec(&map).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_asks_for_a_stream_with_usage_and_keeps_the_rest() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":false,"stream_options":{"x":1},"temperature":0.25}"#;
        let out: Value = serde_json::from_slice(&streaming_body(body, true).unwrap()).unwrap();
        assert_eq!(out["stream"], true);
        assert_eq!(
            out["stream_options"],
            json!({"x": 1, "include_usage": true})
        );
        assert_eq!(out["temperature"], 0.25);
        assert_eq!(out["messages"][0]["content"], "hi");
        assert!(streaming_body(b"[1]", true).is_err());
    }

    #[test]
    fn a_responses_request_asks_for_a_stream_without_stream_options() {
        let out: Value = serde_json::from_slice(
            &streaming_body(br#"{"model":"m","input":"hi"}"#, false).unwrap(),
        )
        .unwrap();
        assert_eq!(out, json!({"model": "m", "input": "hi", "stream": true}));
    }
}
