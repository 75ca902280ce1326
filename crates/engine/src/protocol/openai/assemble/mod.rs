//! Whole answers put together from streams, for non-streaming clients whose call the gateway
//! streamed from the upstream (so `first_token` and `idle` protect it): chat completions, legacy
//! completions and responses, each in the shape of the upstream's own non-streaming answer.

mod chat; // choices, content, refusals, tool calls, finish reasons, usage
mod completions; // choices' text, finish reasons, usage
mod fast; // the common one-choice text chunk, read without serde
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
    /// Which common fields are kept already (a later chunk's values for them are not read).
    fn kept(&self) -> fast::Kept {
        fast::Kept {
            id: self.id.is_some(),
            created: self.created.is_some(),
            model: self.model.is_some(),
            system_fingerprint: self.system_fingerprint.is_some(),
            service_tier: self.service_tier.is_some(),
        }
    }

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
