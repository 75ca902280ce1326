//! Whole answers put together from streams, for non-streaming clients whose call the gateway
//! streamed from the upstream (so `first_token` and `idle` protect it): chat completions, legacy
//! completions and responses, each in the shape of the upstream's own non-streaming answer.

mod chat; // choices, content, refusals, tool calls, finish reasons, usage
mod completions; // choices' text, finish reasons, usage
pub(crate) mod fast; // the common chunks, read without serde; a text chunk by comparison with the last
mod responses; // the response object the final event carries

pub use chat::Assembler;
pub use completions::CompletionAssembler;
pub use responses::ResponseAssembler;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// The fields every chunk of a chat or completions stream repeats, kept from the first chunk
/// that has each, and the usage from the chunk that reports it: their text one after another in
/// one buffer, which a recycled assembler keeps (each in its own `String` and `serde_json::Value`,
/// parsed and written out again, they were a whole answer's largest allocations but the text's).
#[derive(Debug, Default)]
struct Common {
    /// The kept fields' text, each at its span below.
    text: String,
    /// The id, unescaped.
    id: Option<Span>,
    /// The JSON text serde writes for each of these values (what the answer says).
    created: Option<Span>,
    model: Option<Span>,
    system_fingerprint: Option<Span>,
    service_tier: Option<Span>,
    /// Kept as the upstream wrote it (JSON checked as it was read): it is only passed on, never
    /// read.
    usage: Option<Span>,
}

/// Where a kept field is in [`Common::text`].
type Span = std::ops::Range<usize>;

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

/// The JSON text serde writes for a raw value (which is valid JSON): the upstream's own text
/// may have spaces, escapes or a number's other forms, which the answer does not repeat.
fn written_as_serde_writes(raw: &RawValue) -> Option<String> {
    let value: Value = serde_json::from_str(raw.get()).ok()?;
    serde_json::to_string(&value).ok()
}

/// Whether a raw JSON value is something: not `null`.
pub(super) fn present(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|v| v.get().trim() != "null")
}

impl Common {
    /// Forgets every field, keeping the buffer's room (up to [`KEPT_TEXT`]).
    fn clear(&mut self) {
        let mut text = std::mem::take(&mut self.text);
        text.clear();
        if text.capacity() > KEPT_TEXT {
            text = String::new();
        }
        *self = Common {
            text,
            ..Common::default()
        };
    }

    /// `value` added to the buffer; where it is.
    fn keep(&mut self, value: &str) -> Span {
        let start = self.text.len();
        self.text.push_str(value);
        start..self.text.len()
    }

    /// Keeps `usage` in place of the one kept: a stream may report one in every chunk, so the
    /// one replaced is taken off the buffer when it is the last there (it is but when a field
    /// came first after it, once).
    fn keep_usage(&mut self, usage: &str) {
        if let Some(replaced) = self.usage.take()
            && replaced.end == self.text.len()
        {
            self.text.truncate(replaced.start);
        }
        self.usage = Some(self.keep(usage));
    }

    /// The text of a kept field.
    fn get(&self, span: &Option<Span>) -> Option<&str> {
        span.clone().map(|span| &self.text[span])
    }

    /// Which common fields are kept already (a later chunk's values for them are not read).
    fn kept(&self) -> fast::Kept {
        fast::Kept {
            id: self.id.is_some(),
            created: self.created.is_some(),
            model: self.model.is_some(),
            system_fingerprint: self.system_fingerprint.is_some(),
            service_tier: self.service_tier.is_some(),
            usage: false,
        }
    }

    /// Takes a chunk's common fields; returns its choices.
    fn push<C>(&mut self, chunk: ChunkIn<'_, C>) -> Vec<C> {
        if self.id.is_none()
            && let Some(id) = chunk.id
        {
            self.id = Some(self.keep(&id));
        }
        self.first(chunk.created, |c| &mut c.created);
        self.first(chunk.model, |c| &mut c.model);
        self.first(chunk.system_fingerprint, |c| &mut c.system_fingerprint);
        self.first(chunk.service_tier, |c| &mut c.service_tier);
        if let Some(usage) = present(chunk.usage) {
            self.keep_usage(usage.get());
        }
        chunk.choices
    }

    /// Keeps the field `slot` names, seen for the first time, as serde writes its value.
    fn first(&mut self, raw: Option<&RawValue>, slot: fn(&mut Self) -> &mut Option<Span>) {
        if slot(self).is_none()
            && let Some(text) = raw.and_then(written_as_serde_writes)
        {
            let span = self.keep(&text);
            *slot(self) = Some(span);
        }
    }

    /// Takes what the hand scanner read: the common fields it met first (their JSON text as
    /// serde writes it), and a usage.
    fn take_first(&mut self, first: fast::FirstFields<'_>, usage: Option<&str>) {
        if let Some(id) = first.id {
            self.id = Some(self.keep(id));
        }
        if let Some(created) = first.created {
            self.created = Some(self.keep(created));
        }
        if let Some(model) = first.model {
            self.model = Some(self.keep(model));
        }
        if let Some(fingerprint) = first.system_fingerprint {
            self.system_fingerprint = Some(self.keep(fingerprint));
        }
        if let Some(tier) = first.service_tier {
            self.service_tier = Some(self.keep(tier));
        }
        if let Some(usage) = usage {
            self.keep_usage(usage);
        }
    }

    /// The whole answer: these fields around `choices`, as `object`, in the order the upstream's
    /// own answer has them. Serialized straight from the assembler's fields: building a
    /// `serde_json::Value` first cost more than the rest of the assembling.
    fn whole<'a, C: Serialize>(&'a self, object: &'a str, choices: C) -> Whole<'a, C> {
        Whole {
            id: self.get(&self.id),
            object,
            created: self.get(&self.created),
            model: self.get(&self.model),
            system_fingerprint: self.get(&self.system_fingerprint),
            service_tier: self.get(&self.service_tier),
            choices,
            usage: self.get(&self.usage),
        }
    }
}

/// Longest buffer of kept fields a cleared [`Common`] keeps for the next answer.
const KEPT_TEXT: usize = 1024;

/// A whole chat or completions answer, borrowed from its assembler.
#[derive(Serialize)]
struct Whole<'a, C> {
    id: Option<&'a str>,
    object: &'a str,
    #[serde(serialize_with = "raw_json")]
    created: Option<&'a str>,
    #[serde(serialize_with = "raw_json")]
    model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "raw_json")]
    system_fingerprint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "raw_json")]
    service_tier: Option<&'a str>,
    choices: C,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "raw_json")]
    usage: Option<&'a str>,
}

/// JSON text serialized as the value it is: it was checked as it was read, so it parses.
fn raw_json<S: serde::Serializer>(text: &Option<&str>, to: S) -> Result<S::Ok, S::Error> {
    let raw: Option<&RawValue> = text
        .map(serde_json::from_str)
        .transpose()
        .map_err(serde::ser::Error::custom)?;
    raw.serialize(to)
}

/// Choices that write their own JSON ([`JsonOut`]), byte for byte what serde writes for them.
trait WriteChoices {
    fn write(&self, out: &mut JsonOut);
}

impl<C: Serialize + WriteChoices> Whole<'_, C> {
    /// The answer's JSON, written into room for `text` bytes of its choices' text and the rest
    /// (growing the buffer on the way cost about a fifth of the writing). Written by hand, byte
    /// for byte what serde writes (the tests hold the two equal): serde escapes every key and
    /// string a byte at a time, which was most of the cost of finishing a whole answer.
    fn to_bytes(&self, text: usize) -> bytes::Bytes {
        let mut out = JsonOut(Vec::with_capacity(text + 512));
        out.raw("{\"id\":");
        out.option_string(self.id);
        out.raw(",\"object\":");
        out.string(self.object);
        out.raw(",\"created\":");
        out.raw(self.created.unwrap_or("null"));
        out.raw(",\"model\":");
        out.raw(self.model.unwrap_or("null"));
        if let Some(fingerprint) = self.system_fingerprint {
            out.raw(",\"system_fingerprint\":");
            out.raw(fingerprint);
        }
        if let Some(tier) = self.service_tier {
            out.raw(",\"service_tier\":");
            out.raw(tier);
        }
        out.raw(",\"choices\":[");
        self.choices.write(&mut out);
        out.raw("]");
        if let Some(usage) = self.usage {
            out.raw(",\"usage\":");
            out.raw(usage);
        }
        out.raw("}");
        bytes::Bytes::from(out.0)
    }

    /// Holds [`Whole::to_bytes`] to what serde writes for the answer, byte for byte (`source`
    /// says what the answer was assembled from).
    #[cfg(test)]
    fn assert_written_as_serde_writes(&self, source: &dyn std::fmt::Debug) {
        let by_serde = serde_json::to_vec(self).expect("an answer serializes");
        assert_eq!(
            String::from_utf8_lossy(&self.to_bytes(0)),
            String::from_utf8_lossy(&by_serde),
            "{source:?}"
        );
    }

    /// The answer as a JSON value (for tests and callers that look inside).
    fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("an answer serializes")
    }
}

/// JSON written by hand: literal keys and punctuation copied, strings escaped as serde escapes
/// them (a string with nothing to escape is copied whole).
struct JsonOut(Vec<u8>);

impl JsonOut {
    /// `text` as it is: keys, punctuation, raw JSON.
    fn raw(&mut self, text: &str) {
        self.0.extend_from_slice(text.as_bytes());
    }

    /// A JSON string. serde escapes `"`, `\` and the control characters and nothing else.
    fn string(&mut self, text: &str) {
        if crate::protocol::json::string_stop(text.as_bytes()).is_some() {
            serde_json::to_writer(&mut self.0, text).expect("a string serializes");
            return;
        }
        self.0.reserve(text.len() + 2);
        self.0.push(b'"');
        self.0.extend_from_slice(text.as_bytes());
        self.0.push(b'"');
    }

    /// A JSON string, or `null`.
    fn option_string(&mut self, text: Option<&str>) {
        match text {
            Some(text) => self.string(text),
            None => self.raw("null"),
        }
    }

    /// A JSON value, or `null`.
    fn value(&mut self, value: Option<&Value>) {
        match value {
            Some(Value::String(text)) => self.string(text),
            Some(value) => serde_json::to_writer(&mut self.0, value).expect("a value serializes"),
            None => self.raw("null"),
        }
    }

    /// An unsigned integer.
    fn number(&mut self, n: usize) {
        serde_json::to_writer(&mut self.0, &n).expect("a number serializes");
    }
}
