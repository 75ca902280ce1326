//! Whole answers put together from streams, for non-streaming clients whose call the gateway
//! streamed from the upstream (so `first_token` and `idle` protect it): chat completions, legacy
//! completions and responses, each in the shape of the upstream's own non-streaming answer.

mod chat; // choices, content, refusals, tool calls, finish reasons, usage
mod completions; // choices' text, finish reasons, usage
mod responses; // the response object the final event carries

pub use chat::Assembler;
pub use completions::CompletionAssembler;
pub use responses::ResponseAssembler;

use serde::Deserialize;
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

/// One chunk of a chat or completions stream: the common fields and choices of type `C`.
#[derive(Deserialize)]
struct ChunkIn<C> {
    id: Option<String>,
    created: Option<Value>,
    model: Option<Value>,
    system_fingerprint: Option<Value>,
    service_tier: Option<Value>,
    usage: Option<Value>,
    #[serde(default = "Vec::new")]
    choices: Vec<C>,
}

impl Common {
    /// Takes a chunk's common fields; returns its choices.
    fn push<C>(&mut self, chunk: ChunkIn<C>) -> Vec<C> {
        self.id = self.id.take().or(chunk.id);
        self.created = self.created.take().or(chunk.created);
        self.model = self.model.take().or(chunk.model);
        self.system_fingerprint = self.system_fingerprint.take().or(chunk.system_fingerprint);
        self.service_tier = self.service_tier.take().or(chunk.service_tier);
        if chunk.usage.as_ref().is_some_and(|u| !u.is_null()) {
            self.usage = chunk.usage;
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
