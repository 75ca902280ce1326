//! Wire formats, behind one seam. Everything specific to a protocol lives in its own module: what
//! a request asks for (read from its parsed body), what counts as content in its stream, how a
//! whole answer is assembled from a stream, its error body and in-stream error event, and how an
//! upstream's key travels. The engine's phases, deadlines, retry loop and health know none of it.
//!
//! A second protocol is one new module implementing [`Protocol`], its endpoints in [`Endpoint`],
//! and a route in the gateway.

pub mod anthropic; // Anthropic's Messages API
pub mod json; // a request body's top-level fields read by hand, and the string scan chunks share
pub mod openai; // OpenAI's chat, completions, responses, embeddings and images APIs

use std::borrow::Cow;
use std::ops::Range;

use bytes::Bytes;
use hourglass_config::WireFormat;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::CallError;
use crate::sse::Event;

/// The API a call is made to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// OpenAI's `/v1/chat/completions`
    Chat,
    /// OpenAI's `/v1/completions`
    Completions,
    /// OpenAI's `/v1/responses`
    Responses,
    /// OpenAI's `/v1/embeddings`
    Embeddings,
    /// OpenAI's `/v1/images/generations`
    Images,
    /// Any other path, passed through.
    Other,
    /// Anthropic's `/v1/messages`
    Messages,
    /// Anthropic's `/v1/messages/count_tokens`
    CountTokens,
    /// Any other path asked by an Anthropic client (it sends `anthropic-version`), passed through
    /// to an upstream that speaks Anthropic's API.
    AnthropicOther,
}

impl Endpoint {
    /// The protocol that speaks it.
    pub fn protocol(self) -> &'static dyn Protocol {
        match self {
            Endpoint::Chat
            | Endpoint::Completions
            | Endpoint::Responses
            | Endpoint::Embeddings
            | Endpoint::Images
            | Endpoint::Other => &openai::OpenAi,
            Endpoint::Messages | Endpoint::CountTokens | Endpoint::AnthropicOther => {
                &anthropic::Anthropic
            }
        }
    }

    /// Every endpoint.
    pub const ALL: [Endpoint; 9] = [
        Endpoint::Chat,
        Endpoint::Completions,
        Endpoint::Responses,
        Endpoint::Embeddings,
        Endpoint::Images,
        Endpoint::Other,
        Endpoint::Messages,
        Endpoint::CountTokens,
        Endpoint::AnthropicOther,
    ];

    /// Whether it is a pass-through path that names no model.
    pub fn passes_through(self) -> bool {
        matches!(self, Endpoint::Other | Endpoint::AnthropicOther)
    }

    /// Its name in logs, metrics and stored jobs: `chat`, `completions`, `responses`,
    /// `embeddings`, `images`, `other`, `messages`, `count_tokens`, `anthropic_other`.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Completions => "completions",
            Endpoint::Responses => "responses",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Images => "images",
            Endpoint::Other => "other",
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "count_tokens",
            Endpoint::AnthropicOther => "anthropic_other",
        }
    }

    /// The endpoint of that name.
    pub fn from_name(name: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.name() == name)
    }

    /// Whether a client may ask it for a stream.
    pub fn streams(self) -> bool {
        matches!(
            self,
            Endpoint::Chat | Endpoint::Completions | Endpoint::Responses | Endpoint::Messages
        )
    }
}

/// The protocol of a wire format.
pub fn of(format: WireFormat) -> &'static dyn Protocol {
    match format {
        WireFormat::OpenAi => &openai::OpenAi,
        WireFormat::Anthropic => &anthropic::Anthropic,
    }
}

/// What one event of a stream means for the clocks and the commit point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// Not content: a comment, a role-only or empty delta, a lifecycle event.
    Nothing,
    /// Meaningful content: text, a tool call, reasoning text, a refusal.
    Content,
    /// A chunk with a finish reason (and content, or not): the answer is complete.
    Finish {
        /// Whether the same chunk also carried content.
        content: bool,
    },
    /// The end of a complete stream (`[DONE]`, `response.completed`).
    End,
    /// The upstream reported an error inside the stream.
    UpstreamError(String),
    /// The event's data is not what the protocol says it should be.
    Malformed(String),
}

impl Signal {
    /// Whether the event carried meaningful content.
    pub fn is_content(&self) -> bool {
        matches!(self, Signal::Content | Signal::Finish { content: true })
    }
}

/// What a request asks for, read from its body before it is routed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestHead {
    /// The model asked for.
    pub model: Option<String>,
    /// Where its value (with quotes) sits in the body, so an alias is spliced in without
    /// re-serializing.
    pub model_span: Option<Range<usize>>,
    /// Whether a stream is asked for (and the endpoint streams).
    pub stream: bool,
    /// Whether a whole answer to it can be assembled from a stream of the upstream's (the
    /// assembler rebuilds everything it asks for).
    pub assemblable: bool,
    /// Whether it asks to run in the background and be fetched later (OpenAI Responses'
    /// `background: true`).
    pub background: bool,
    /// The stored response it continues (OpenAI Responses' `previous_response_id`), which
    /// lives on the upstream that made it.
    pub continues: Option<String>,
    /// Where each top-level field is in the body, when it was read by the hand scanner: a body
    /// rewritten to ask for a stream is written from these without being read again.
    pub fields: Option<Vec<json::Field>>,
}

/// Why a request body cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadBody {
    /// What was wrong.
    pub message: String,
    /// The field at fault.
    pub param: Option<&'static str>,
}

/// Puts a whole answer together from the events of a stream.
pub trait Assemble: Send {
    /// Adds the data of one event.
    fn push(&mut self, data: &str) -> Result<(), String>;
    /// Adds one event: its data, read with its name by a protocol whose events say their type
    /// in the name when their data does not (as its `classify` reads them), so the assembler
    /// and the classifier agree on which event ends the answer.
    fn push_event(&mut self, event: &Event<'_>) -> Result<(), String> {
        event.data.as_deref().map_or(Ok(()), |data| self.push(data))
    }
    /// Reads one event's data once for both jobs: adds it to the answer and says what it means
    /// (the same [`Signal`] the protocol's `classify` gives), for an assembler that can; `None`
    /// when it cannot, and then the caller classifies the event and pushes it.
    fn push_classified(&mut self, _data: &str) -> Option<Signal> {
        None
    }
    /// Offered the text of an SSE stream at an event's start (a stream without `\r`): adds the
    /// whole events at its front that carry text and that it reads without the SSE scanner —
    /// each one a [`Signal::Content`] — and says how many bytes they were; 0 takes none.
    fn push_run(&mut self, _text: &str) -> usize {
        0
    }
    /// The whole answer's body, in the shape of the upstream's own non-streaming answer.
    fn finish(self: Box<Self>) -> Bytes;
}

/// Reads what each event of one stream means (as [`Protocol::classify`] does), and may keep
/// what it learned from one event to read the next faster.
pub trait Classify: Send {
    /// What `event` means.
    fn classify(&mut self, event: &Event<'_>) -> Signal;
    /// Offered the text of an SSE stream at an event's start (a stream without `\r`): reads the
    /// whole events at its front that it can read without the SSE scanner — each one a
    /// [`Signal::Content`] — and says how many bytes they were; 0 reads none.
    fn classify_run(&mut self, _text: &str) -> usize {
        0
    }
}

/// A classifier that keeps nothing: the protocol's `classify`, event by event.
pub(crate) struct Stateless {
    pub protocol: &'static dyn Protocol,
    pub endpoint: Endpoint,
}

impl Classify for Stateless {
    fn classify(&mut self, event: &Event<'_>) -> Signal {
        self.protocol.classify(self.endpoint, event)
    }
}

/// A wire format: everything the engine and the gateway need to know of one.
pub trait Protocol: Send + Sync + 'static {
    /// Its name, as configuration and logs write it.
    fn name(&self) -> &'static str;

    /// The wire format upstreams must speak to take its calls.
    fn format(&self) -> WireFormat;

    /// What a request body for `endpoint` asks for.
    fn read_request(&self, endpoint: Endpoint, body: &[u8]) -> Result<RequestHead, BadBody>;

    /// Whether a request the gateway rewrites to ask for a stream (for a whole answer to be
    /// assembled) asks for the usage in it too ([`streaming_body`]'s `usage`).
    fn stream_asks_usage(&self, endpoint: Endpoint) -> bool;

    /// A new assembler of a whole answer from a stream of `endpoint`.
    fn assembler(&self, endpoint: Endpoint) -> Box<dyn Assemble>;

    /// What one event of a stream from `endpoint` means.
    fn classify(&self, endpoint: Endpoint, event: &Event<'_>) -> Signal;

    /// A classifier for one stream from `endpoint`: what `classify` says of each event.
    fn classifier(&self, endpoint: Endpoint) -> Box<dyn Classify>;

    /// Whether a stream of `endpoint` is complete only once a finish reason was seen (a bare
    /// end marker before it means the server interrupted the answer).
    fn needs_finish_reason(&self, endpoint: Endpoint) -> bool;

    /// Whether a successful answer's content type is what `endpoint` answers with (`stream`:
    /// the client asked for a stream); `Err` says what came instead. A 200 web page (a captive
    /// portal, an SSO login, a `base_url` pointing at a web UI) is not an answer.
    fn check_answer(
        &self,
        endpoint: Endpoint,
        stream: bool,
        content_type: Option<&str>,
    ) -> Result<(), String>;

    /// The body of a failed call, in the protocol's error shape.
    fn error_body(&self, error: &CallError) -> Bytes;

    /// The event that ends a stream of `endpoint` that already began, in its stream's shape;
    /// `sequence` is the number it takes in a protocol that numbers its events.
    fn error_event(&self, endpoint: Endpoint, error: &CallError, sequence: u64) -> Bytes;

    /// An event's number in its stream, for a protocol that numbers them (OpenAI's Responses
    /// `sequence_number`); `None` otherwise.
    fn sequence_number(&self, endpoint: Endpoint, event: &Event<'_>) -> Option<u64>;

    /// Whether streams of `endpoint` number their events: readers that are told no never ask
    /// [`Protocol::sequence_number`], a call per event.
    fn numbers_events(&self, endpoint: Endpoint) -> bool;

    /// What keeps a stream of it alive while no content flows (heartbeats), which its clients
    /// skip.
    fn keepalive(&self) -> &'static [u8] {
        b": keep-alive\n\n"
    }

    /// Headers an upstream speaking it gets when the client did not send them.
    fn default_headers(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// A cheap request that checks an upstream serves `model` and measures its first token:
    /// the endpoint, the path under the base URL and the body.
    fn check_request(&self, model: &str) -> (Endpoint, &'static str, Bytes);
}

/// Whether a successful answer's content type is what the endpoint answers with (`stream`: the
/// client asked for a stream; `passes_through`: a path that answers whatever it answers); `Err`
/// says what came instead. A 200 web page (a captive portal, an SSO login, a `base_url` pointing
/// at a web UI) is not an answer.
pub(crate) fn check_content_type(
    passes_through: bool,
    stream: bool,
    content_type: Option<&str>,
) -> Result<(), String> {
    // Compared without case and without lowering a copy: this runs on every answer.
    let kind = content_type.map(|t| t.split(';').next().unwrap_or(t).trim());
    let is = |kind: &str, expected: &str| kind.eq_ignore_ascii_case(expected);
    let json = |kind: &str| (kind.as_bytes().windows(4)).any(|w| w.eq_ignore_ascii_case(b"json"));
    match kind {
        // A pass-through path answers whatever it answers (audio, files, …).
        _ if passes_through => Ok(()),
        Some(kind) if is(kind, "text/event-stream") => Ok(()),
        kind if stream => Err(format!(
            "a stream was asked for and the upstream answered {} instead of text/event-stream",
            kind.map_or("without a content type".to_owned(), |k| format!(
                "`{}`",
                k.to_ascii_lowercase()
            ))
        )),
        None => Ok(()),
        Some(kind) if json(kind) => Ok(()),
        Some(kind) => Err(format!(
            "the upstream answered with `{}`, not JSON: a web page (a captive portal, an SSO login, or a base_url that points at a web UI rather than the API?)",
            kind.to_ascii_lowercase()
        )),
    }
}

/// An upstream's error text, cut to its first 512 bytes (at a character boundary) for messages.
pub(crate) fn excerpt(text: &str) -> String {
    let mut end = text.len().min(512);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The `hourglass` object every protocol's error body carries: the diagnosis, the attempts, the
/// time taken, and the upstream's own error when it sent one.
pub(crate) fn hourglass_details(error: &CallError) -> serde_json::Value {
    let mut details = serde_json::json!({"diagnosis": error.code.diagnosis(), "attempts": error.trail,
                                         "elapsed_ms": error.elapsed.as_millis() as u64});
    if let Some(upstream) = &error.upstream_error {
        details["upstream_error"] = upstream.clone();
    }
    details
}

/// An SSE event named `error` with `data` (JSON on one line).
pub(crate) fn error_sse(data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 24);
    out.extend_from_slice(b"event: error\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// The request body asking for a stream (both protocols take `stream: true`): `stream: true` and, with `usage`,
/// `stream_options.include_usage: true`; everything else kept (values byte for byte, fields in
/// their order).
pub fn streaming_body(body: &[u8], usage: bool) -> Result<Vec<u8>, String> {
    // The common body is read once, borrowed, and written back field by field; a body with an
    // escaped or repeated key takes the general path.
    let scanned = std::str::from_utf8(body).ok().and_then(json::fields);
    if let Some(fields) = scanned
        && let Some(out) = streaming_body_from(body, &fields, usage, None)
    {
        return Ok(out);
    }
    match borrowed_fields(body) {
        Some(fields) => Ok(write_streaming(fields.into_iter(), usage, None)),
        None => streaming_body_general(body, usage),
    }
}

/// [`streaming_body`] for a body whose fields were found already ([`json::fields`]), with
/// `model` (a JSON string, quotes included) in place of the body's own when given. `None` when
/// a key comes twice: the caller takes the general path. The fields' places are used as found,
/// so the body is neither parsed nor checked for UTF-8 again.
pub fn streaming_body_from(
    body: &[u8],
    fields: &[json::Field],
    usage: bool,
    model: Option<&str>,
) -> Option<Vec<u8>> {
    let pairs = (fields.iter()).map(|field| (&body[field.key.clone()], &body[field.value.clone()]));
    (!repeats_a_key(pairs.clone().map(|(key, _)| key)))
        .then(|| write_streaming(pairs, usage, model))
}

/// The streaming body from a body's fields (keys unique and without escapes), `model` in place
/// of the `model` field's value when given. Sized exactly before it is written: a buffer as long
/// as its contents becomes `Bytes` without the second allocation a spare capacity costs.
fn write_streaming<'a>(
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    usage: bool,
    model: Option<&'a str>,
) -> Vec<u8> {
    let value_of = |key: &[u8], value: &'a [u8]| match key {
        b"model" => model.map_or(value, str::as_bytes),
        _ => value,
    };
    let mut options = None;
    let mut size = r#"{"stream":true}"#.len();
    for (key, value) in fields.clone() {
        match key {
            b"stream" => {}
            b"stream_options" if usage => options = Some(value),
            _ => size += key.len() + value_of(key, value).len() + r#""":,"#.len(),
        }
    }
    let options = usage.then(|| stream_options_with_usage(options));
    if let Some(options) = &options {
        size += r#","stream_options":"#.len() + options.len();
    }
    let mut out = Vec::with_capacity(size);
    out.push(b'{');
    for (key, value) in fields {
        if key == b"stream" || (usage && key == b"stream_options") {
            continue;
        }
        for part in [b"\"", key, b"\":", value_of(key, value), b","] {
            out.extend_from_slice(part);
        }
    }
    out.extend_from_slice(br#""stream":true"#);
    if let Some(options) = options {
        out.extend_from_slice(br#","stream_options":"#);
        out.extend_from_slice(options.as_bytes());
    }
    out.push(b'}');
    debug_assert_eq!(out.len(), size);
    out
}

/// A JSON object's fields in order (each key and its value as written), borrowed from `body` and
/// read by serde: `None` when it is not an object, or a key has an escape or comes twice.
fn borrowed_fields(body: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    struct Fields<'a>(Vec<(&'a str, &'a serde_json::value::RawValue)>);
    impl<'de> Deserialize<'de> for Fields<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Fields<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<M: serde::de::MapAccess<'de>>(
                    self,
                    mut map: M,
                ) -> Result<Fields<'de>, M::Error> {
                    // Room for a request's usual fields at once: growing from empty cost more
                    // than the rest of the rewrite.
                    let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(16).min(64));
                    while let Some(key) = map.next_key::<&'de str>()? {
                        fields.push((key, map.next_value()?));
                    }
                    Ok(Fields(fields))
                }
            }
            d.deserialize_map(Visit)
        }
    }
    let fields = serde_json::from_slice::<Fields>(body).ok()?.0;
    let fields: Vec<(&[u8], &[u8])> = (fields.into_iter())
        .map(|(key, value)| (key.as_bytes(), value.get().as_bytes()))
        .collect();
    (!repeats_a_key(fields.iter().map(|(key, _)| *key))).then_some(fields)
}

/// Whether a key comes twice. A usual body's handful of keys are compared pairwise, in place;
/// more are sorted, not compared pairwise: the client chooses how many keys there are.
fn repeats_a_key<'a>(keys: impl ExactSizeIterator<Item = &'a [u8]> + Clone) -> bool {
    if keys.len() <= 16 {
        let mut rest = keys;
        while let Some(key) = rest.next() {
            if rest.clone().any(|other| other == key) {
                return true;
            }
        }
        return false;
    }
    let mut sorted: Vec<&[u8]> = keys.collect();
    sorted.sort_unstable();
    sorted.windows(2).any(|pair| pair[0] == pair[1])
}

/// `stream_options` (an object, else nothing kept) with `include_usage: true`.
fn stream_options_with_usage(options: Option<&[u8]>) -> Cow<'static, str> {
    if options.is_none() {
        return Cow::Borrowed(r#"{"include_usage":true}"#);
    }
    let mut options: serde_json::Map<String, serde_json::Value> = options
        .and_then(|o| serde_json::from_slice(o).ok())
        .unwrap_or_default();
    options.insert("include_usage".into(), serde_json::json!(true));
    Cow::Owned(serde_json::Value::Object(options).to_string())
}

/// [`streaming_body`] for any JSON object: escaped and repeated keys (the last one counts), and
/// what is wrong with a body that is not an object.
fn streaming_body_general(body: &[u8], usage: bool) -> Result<Vec<u8>, String> {
    let mut map: std::collections::BTreeMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_slice(body)
            .map_err(|e| format!("the request body is not a JSON object: {e}"))?;
    let raw = |text: &str| {
        serde_json::value::RawValue::from_string(text.to_owned()).expect("literal JSON is valid")
    };
    map.insert("stream".into(), raw("true"));
    if usage {
        let options = map.get("stream_options").map(|o| o.get().as_bytes());
        let options = stream_options_with_usage(options);
        map.insert("stream_options".into(), raw(&options));
    }
    serde_json::to_vec(&map).map_err(|e| e.to_string())
}

/// The longest model name a request may give.
pub const MAX_MODEL_NAME: usize = 256;

/// The text of a JSON object body, or what is wrong with it.
pub(crate) fn json_object(body: &[u8]) -> Result<&str, BadBody> {
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
    Ok(text)
}

/// Reads the fields a protocol's `T` names from a JSON object body, skipping the rest unbuilt,
/// and where every top-level field is when the body was scanned by hand. The common body is
/// scanned by hand and only the named fields' values are read by serde; any other (or one serde
/// refuses) is read whole by serde, which says what is wrong.
pub(crate) fn read_fields<'a, T: Deserialize<'a>>(
    text: &'a str,
) -> Result<(T, Option<Vec<json::Field>>), BadBody> {
    if let Some(fields) = json::fields(text)
        && let Some(read) = json::read_from(text, &fields)
    {
        return Ok((read, Some(fields)));
    }
    let read = serde_json::from_str(text).map_err(|e| BadBody {
        message: if e.is_data() {
            format!("invalid request body: {e}")
        } else {
            format!("the request body is not valid JSON: {e}")
        },
        param: None,
    })?;
    Ok((read, None))
}

/// An event's data without the whitespace around it. Nearly every chunk is a bare object: only
/// another takes `trim`'s walk from both ends (Unicode whitespace, as before).
pub(crate) fn trimmed(data: &str) -> &str {
    match data.as_bytes() {
        [b'{', .., b'}'] => data,
        _ => data.trim(),
    }
}

/// The `model` a body names, and where its value (with quotes) sits in `body`.
pub(crate) fn model_and_span(
    raw: Option<&RawValue>,
    body: &[u8],
) -> Result<(Option<String>, Option<Range<usize>>), BadBody> {
    let Some(raw) = raw else {
        return Ok((None, None));
    };
    let value = raw.get();
    let model: String = serde_json::from_str(value).map_err(|_| BadBody {
        message: format!("`model` must be a string, not {value}"),
        param: Some("model"),
    })?;
    // Found by hostile input: an empty name was routed as a pass-through, and any length went on
    // to logs and upstreams.
    if model.trim().is_empty() {
        return Err(BadBody {
            message: "`model` is empty; name the model to call".to_owned(),
            param: Some("model"),
        });
    }
    if model.chars().count() > MAX_MODEL_NAME {
        return Err(BadBody {
            message: format!("`model` is longer than {MAX_MODEL_NAME} characters"),
            param: Some("model"),
        });
    }
    // The raw value borrows from `body`: its offset is where the value starts.
    let start = value.as_ptr() as usize - body.as_ptr() as usize;
    Ok((Some(model), Some(start..start + value.len())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// A reader asks for event numbers only where `numbers_events` says so: every endpoint that
    /// says no must have none to give, or an error event would take a wrong number.
    #[test]
    fn only_endpoints_that_number_their_events_have_numbers() {
        let data = r#"{"type":"response.output_text.delta","sequence_number":7,"delta":"a"}"#;
        let event = Event {
            name: Some("response.output_text.delta"),
            data: Some(data.into()),
        };
        for endpoint in Endpoint::ALL {
            let protocol = endpoint.protocol();
            let number = protocol.sequence_number(endpoint, &event);
            assert_eq!(
                protocol.numbers_events(endpoint),
                number.is_some(),
                "{endpoint:?}"
            );
        }
        assert!(
            Endpoint::Responses
                .protocol()
                .numbers_events(Endpoint::Responses)
        );
    }

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
    fn the_stream_request_keeps_every_field_and_value_as_written_in_order() {
        let body = br#"{"model":"m", "stream" : false,"messages":[{"role":"user","content":"h\u00e9"}],"n":1.50}"#;
        assert_eq!(
            String::from_utf8(streaming_body(body, true).unwrap()).unwrap(),
            r#"{"model":"m","messages":[{"role":"user","content":"h\u00e9"}],"n":1.50,"stream":true,"stream_options":{"include_usage":true}}"#
        );
        // Escaped or repeated keys, and every other shape, read as the general path reads them.
        for body in [
            &br#"{"m\u006fdel":"m","stream_options":{"include_usage":false}}"#[..],
            br#"{"model":"a","model":"b"}"#,
            br#"{"stream_options":[1],"stream_options":{"x":2}}"#,
            br#"{"stream_options":"no"}"#,
            br#"{}"#,
            br#" { "a" : 1 } "#,
        ] {
            for usage in [true, false] {
                let fast: Value =
                    serde_json::from_slice(&streaming_body(body, usage).unwrap()).unwrap();
                let general: Value =
                    serde_json::from_slice(&streaming_body_general(body, usage).unwrap()).unwrap();
                assert_eq!(fast, general, "{}", String::from_utf8_lossy(body));
            }
        }
        // A usual body's buffer is exactly as long as what is written in it (no second
        // allocation when it becomes `Bytes`), with its options in place or added.
        for body in [
            &br#"{"model":"m","stream":false,"messages":[]}"#[..],
            br#"{"model":"m","stream_options":{"x":1},"messages":[]}"#,
        ] {
            for usage in [true, false] {
                let out = streaming_body(body, usage).unwrap();
                assert_eq!(
                    out.capacity(),
                    out.len(),
                    "{}",
                    String::from_utf8_lossy(&out)
                );
            }
        }
        // Around the count where repeated keys are sought by sorting instead of pairwise.
        for count in [15, 16, 17] {
            let keys: String = (0..count).map(|i| format!("\"k{i}\":{i},")).collect();
            let unique = format!("{{{}}}", keys.trim_end_matches(','));
            let repeated = format!("{{{keys}\"k0\":9}}");
            let fast: Value =
                serde_json::from_slice(&streaming_body(unique.as_bytes(), true).unwrap()).unwrap();
            assert_eq!(fast[format!("k{}", count - 1)], count - 1);
            let fast: Value =
                serde_json::from_slice(&streaming_body(repeated.as_bytes(), true).unwrap())
                    .unwrap();
            assert_eq!(
                fast["k0"], 9,
                "{count} keys: the last of a repeated key counts"
            );
        }
        // Many keys, one of them repeated at the very end.
        let mut many: String = (0..20_000).map(|i| format!("\"k{i}\":{i},")).collect();
        many = format!("{{{many}\"k7\":0}}");
        let fast: Value =
            serde_json::from_slice(&streaming_body(many.as_bytes(), true).unwrap()).unwrap();
        let general: Value =
            serde_json::from_slice(&streaming_body_general(many.as_bytes(), true).unwrap())
                .unwrap();
        assert_eq!(fast, general);
        assert_eq!(fast["k7"], 0, "the last of a repeated key counts");
        for bad in [&b"[1]"[..], b"{", b"{\"a\":1}x", b"", b"\"s\""] {
            assert_eq!(streaming_body(bad, true), streaming_body_general(bad, true));
            assert!(streaming_body(bad, true).is_err());
        }
    }

    #[test]
    fn a_responses_request_asks_for_a_stream_without_stream_options() {
        let out: Value = serde_json::from_slice(
            &streaming_body(br#"{"model":"m","input":"hi"}"#, false).unwrap(),
        )
        .unwrap();
        assert_eq!(out, json!({"model": "m", "input": "hi", "stream": true}));
    }

    #[test]
    fn an_answers_content_type_is_read_without_case_and_named_lowered_when_refused() {
        for kind in [
            "text/event-stream",
            "Text/Event-Stream; charset=utf-8",
            " TEXT/EVENT-STREAM ",
        ] {
            assert_eq!(
                check_content_type(false, true, Some(kind)),
                Ok(()),
                "{kind}"
            );
            assert_eq!(
                check_content_type(false, false, Some(kind)),
                Ok(()),
                "{kind}"
            );
        }
        for kind in [
            "application/json",
            "Application/JSON; charset=UTF-8",
            "application/problem+Json",
        ] {
            assert_eq!(
                check_content_type(false, false, Some(kind)),
                Ok(()),
                "{kind}"
            );
        }
        assert_eq!(check_content_type(false, false, None), Ok(()));
        assert_eq!(check_content_type(true, true, Some("audio/mpeg")), Ok(()));
        let refused = check_content_type(false, false, Some("Text/HTML; charset=utf-8"));
        assert!(
            refused
                .unwrap_err()
                .starts_with("the upstream answered with `text/html`, not JSON")
        );
        let refused = check_content_type(false, true, Some("Application/JSON"));
        assert!(
            refused
                .unwrap_err()
                .contains("answered `application/json` instead of text/event-stream")
        );
        let refused = check_content_type(false, true, None).unwrap_err();
        assert!(refused.contains("without a content type"), "{refused}");
        // Not a panic at a character boundary: the search for "json" goes by bytes.
        assert!(check_content_type(false, false, Some("téxt/jsön")).is_err());
    }
}
