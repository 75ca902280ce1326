//! One chat completion body assembled from a chat completion stream, for non-streaming clients
//! whose call the gateway streamed from the upstream (so `first_token` and `idle` protect it):
//! content, refusals, annotations (a search model's citations), tool calls, a legacy
//! `function_call`, the reasoning text servers of reasoning models stream (`reasoning_content`,
//! `reasoning`), finish reasons and usage, choice by choice, in the shape of the upstream's own
//! non-streaming answer.

use std::borrow::Cow;
use std::cell::Cell;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::fast::FastChunk;
use super::{ChunkIn, Common, present};
use crate::protocol::openai::content::filled;
use crate::protocol::{Signal, excerpt};

/// Collects the chunks of one chat completion stream.
#[derive(Debug)]
pub struct Assembler {
    common: Common,
    choices: Vec<Choice>,
    /// Whether plain text chunks are read by the hand scanner (`fast`); off only to check it.
    fast: bool,
    /// The last text chunk the scanner read, which the next is compared with.
    memo: super::fast::Memo,
}

impl Default for Assembler {
    fn default() -> Assembler {
        Assembler {
            common: Common::default(),
            choices: Vec::new(),
            fast: true,
            memo: super::fast::Memo::default(),
        }
    }
}

#[derive(Debug, Default)]
struct Choice {
    role: Option<String>,
    content: Option<String>,
    refusal: Option<String>,
    /// What a search model cites (`url_citation`s), as the deltas listed them.
    annotations: Vec<Box<RawValue>>,
    /// The reasoning text DeepSeek, vLLM and llama.cpp stream (and put in a whole answer's
    /// message under the same name).
    reasoning_content: Option<String>,
    /// The same, under the name OpenRouter, Ollama and newer vLLM give it.
    reasoning: Option<String>,
    tool_calls: Vec<ToolCall>,
    /// The legacy (`functions`) call, in pieces as tool calls are.
    function_call: Option<FunctionCall>,
    finish_reason: Option<Value>,
}

impl Choice {
    /// Adds what one delta of this choice carries.
    fn apply(&mut self, delta: DeltaIn<'_>) -> Result<(), String> {
        if let Some(role) = delta.role {
            self.role = Some(role.into_owned());
        }
        if let Some(text) = delta.content {
            self.content.get_or_insert_with(String::new).push_str(&text);
        }
        if let Some(text) = delta.refusal {
            self.refusal.get_or_insert_with(String::new).push_str(&text);
        }
        if let Some(raw) = present(delta.annotations) {
            let listed: Vec<Box<RawValue>> = serde_json::from_str(raw.get())
                .map_err(|_| "a delta's `annotations` is not a list".to_owned())?;
            self.annotations.extend(listed);
        }
        for (field, raw, kept) in [
            (
                "reasoning_content",
                delta.reasoning_content,
                &mut self.reasoning_content,
            ),
            ("reasoning", delta.reasoning, &mut self.reasoning),
        ] {
            if let Some(raw) = present(raw) {
                let text: Cow<'_, str> = serde_json::from_str(raw.get())
                    .map_err(|_| format!("a delta's `{field}` is not a string"))?;
                kept.get_or_insert_with(String::new).push_str(&text);
            }
        }
        if let Some(raw) = present(delta.function_call) {
            let function: FunctionIn<'_> = serde_json::from_str(raw.get()).map_err(|_| {
                "a delta's `function_call` is not a function call's name and arguments".to_owned()
            })?;
            let call = self.function_call.get_or_insert_with(FunctionCall::default);
            call.name = call.name.take().or(function.name.map(Cow::into_owned));
            if let Some(arguments) = function.arguments {
                call.arguments.push_str(&arguments);
            }
        }
        for call in delta.tool_calls {
            if call.index >= MAX_INDEX {
                return Err(format!("tool call index {} is out of range", call.index));
            }
            if self.tool_calls.len() <= call.index {
                self.tool_calls
                    .resize_with(call.index + 1, ToolCall::default);
            }
            let slot = &mut self.tool_calls[call.index];
            slot.id = slot.id.take().or(call.id.map(Cow::into_owned));
            slot.kind = slot.kind.take().or(call.kind.map(Cow::into_owned));
            if let Some(function) = call.function {
                slot.name = slot.name.take().or(function.name.map(Cow::into_owned));
                if let Some(arguments) = function.arguments {
                    slot.arguments.push_str(&arguments);
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct FunctionCall {
    name: Option<String>,
    arguments: String,
}

#[derive(Debug, Default)]
struct ToolCall {
    id: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    arguments: String,
}

#[derive(Deserialize)]
struct ChoiceIn<'a> {
    #[serde(default)]
    index: usize,
    #[serde(borrow)]
    delta: Option<DeltaIn<'a>>,
    #[serde(borrow)]
    finish_reason: Option<&'a RawValue>,
}

/// A delta's fields, borrowed from the chunk's text where JSON escapes allow.
#[derive(Deserialize)]
struct DeltaIn<'a> {
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_calls: Vec<ToolCallIn<'a>>,
    // Read as raw values first: content for the clocks whatever their shape (as
    // `content::classify` counts it); then assembled when they have the shape they should.
    #[serde(borrow)]
    reasoning_content: Option<&'a RawValue>,
    #[serde(borrow)]
    reasoning: Option<&'a RawValue>,
    #[serde(borrow)]
    function_call: Option<&'a RawValue>,
    // A search model's citations: not content, but kept.
    #[serde(borrow)]
    annotations: Option<&'a RawValue>,
    // Not assembled: a request that asks for audio is not assembled either.
    #[serde(borrow)]
    audio: Option<&'a RawValue>,
}

impl DeltaIn<'_> {
    /// Whether it carries meaningful content, by `content::classify`'s rules.
    fn has_content(&self) -> bool {
        let text = |t: &Option<Cow<'_, str>>| t.as_deref().is_some_and(|t| !t.is_empty());
        text(&self.content)
            || text(&self.refusal)
            || !self.tool_calls.is_empty()
            || filled(self.reasoning_content)
            || filled(self.reasoning)
            || filled(self.function_call)
            || filled(self.audio)
    }
}

#[derive(Deserialize)]
struct ToolCallIn<'a> {
    #[serde(default)]
    index: usize,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    function: Option<FunctionIn<'a>>,
}

#[derive(Deserialize)]
struct FunctionIn<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
}

/// Most choices and tool calls per choice an assembled answer may have (guards memory).
const MAX_INDEX: usize = 128;
/// The bytes a choice's content starts with room for.
const FIRST_CONTENT: usize = 256;

/// Most choices a recycled assembler keeps room for.
const KEPT_CHOICES: usize = 8;

thread_local! {
    /// The last assembler to finish on this thread, emptied, for the thread's next whole answer:
    /// its box, its list of choices and its memo's buffers were allocated again for every one.
    static SPARE: Cell<Option<Box<Assembler>>> = const { Cell::new(None) };
}

impl Assembler {
    /// A new, empty answer.
    pub fn new() -> Assembler {
        Assembler::default()
    }

    /// A new, empty answer, in the thread's spare assembler when it has one.
    pub fn boxed() -> Box<Assembler> {
        SPARE
            .try_with(Cell::take)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Empties a finished assembler, as new but for the room it has, and keeps it as the thread's
    /// spare.
    fn recycle(mut self: Box<Self>) {
        let Assembler {
            common,
            choices,
            fast,
            memo,
        } = &mut *self;
        common.clear();
        choices.clear();
        if choices.capacity() > KEPT_CHOICES {
            *choices = Vec::new();
        }
        *fast = true;
        memo.clear();
        // Not kept when the thread is being torn down.
        let _ = SPARE.try_with(|spare| spare.set(Some(self)));
    }

    /// An assembler that parses every chunk with serde, never with the hand scanner: what the
    /// scanner's answers are checked against (tests, the fuzz target).
    pub fn without_fast_path() -> Assembler {
        Assembler {
            fast: false,
            ..Assembler::default()
        }
    }

    /// Adds the JSON data of one chunk (`[DONE]` adds nothing).
    pub fn push(&mut self, data: &str) -> Result<(), String> {
        match self.push_classified(data) {
            Signal::Malformed(message) | Signal::UpstreamError(message) => Err(message),
            _ => Ok(()),
        }
    }

    /// Adds the JSON data of one chunk and says what it means: what `content::classify` says of
    /// it, from one parse where classifying and then assembling took two.
    pub fn push_classified(&mut self, data: &str) -> Signal {
        let data = crate::protocol::trimmed(data);
        if data == "[DONE]" {
            return Signal::End;
        }
        if data.is_empty() {
            return Signal::Nothing;
        }
        if self.fast {
            let kept = self.common.kept();
            if let Some(choice) = self.memo.recall(data, kept) {
                return self.add_text(choice);
            }
            let mut chunk = FastChunk::default();
            if self.memo.chunk_into(data, kept, &mut chunk) {
                self.common.take_first(chunk.first, chunk.usage);
                return match chunk.choice {
                    Some(choice) => self.add_text(choice),
                    None => Signal::Nothing,
                };
            }
        }
        let chunk: ChunkIn<ChoiceIn> = match serde_json::from_str(data) {
            Ok(chunk) => chunk,
            Err(e) => return Signal::Malformed(format!("a stream chunk is not a chat chunk: {e}")),
        };
        if filled(chunk.error) {
            return Signal::UpstreamError(excerpt(data));
        }
        let (mut content, mut finished) = (false, false);
        for c in &chunk.choices {
            content |= c.delta.as_ref().is_some_and(DeltaIn::has_content);
            finished |= filled(c.finish_reason);
        }
        if let Err(message) = self.add(chunk) {
            return Signal::Malformed(message);
        }
        match (content, finished) {
            (content, true) => Signal::Finish { content },
            (true, false) => Signal::Content,
            (false, false) => Signal::Nothing,
        }
    }

    /// Adds the choice of a chunk read by the hand scanner: what `add` does with the same chunk.
    fn add_text(&mut self, text: super::fast::TextChunk<'_>) -> Signal {
        if text.index >= MAX_INDEX {
            return Signal::Malformed(format!("choice index {} is out of range", text.index));
        }
        if self.choices.len() <= text.index {
            self.choices.resize_with(text.index + 1, Choice::default);
        }
        let signal = text.signal();
        let choice = &mut self.choices[text.index];
        if let Some(reason) = text.finish_reason {
            choice.finish_reason = Some(Value::from(reason));
        }
        if let Some(role) = text.role {
            choice.role = Some(role.into_owned());
        }
        if let Some(text) = text.content {
            // Room for a short answer at once: a token or two per chunk grew it 8 bytes at first.
            choice
                .content
                .get_or_insert_with(|| String::with_capacity(FIRST_CONTENT))
                .push_str(&text);
        }
        signal
    }

    /// Adds a parsed chunk's choices.
    fn add(&mut self, chunk: ChunkIn<'_, ChoiceIn<'_>>) -> Result<(), String> {
        for c in self.common.push(chunk) {
            if c.index >= MAX_INDEX {
                return Err(format!("choice index {} is out of range", c.index));
            }
            if self.choices.len() <= c.index {
                self.choices.resize_with(c.index + 1, Choice::default);
            }
            let choice = &mut self.choices[c.index];
            if let Some(reason) = present(c.finish_reason) {
                choice.finish_reason = serde_json::from_str(reason.get()).ok();
            }
            if let Some(delta) = c.delta {
                choice.apply(delta)?;
            }
        }
        Ok(())
    }

    /// The non-streaming body: `chat.completion` with every choice's message.
    pub fn finish(self) -> Value {
        self.answer().to_value()
    }

    fn answer(&self) -> super::Whole<'_, Vec<ChoiceOut<'_>>> {
        let choices = (self.choices.iter().enumerate())
            .map(|(index, c)| ChoiceOut {
                index,
                message: MessageOut {
                    role: c.role.as_deref().unwrap_or("assistant"),
                    content: c.content.as_deref(),
                    refusal: c.refusal.as_deref(),
                    annotations: &c.annotations,
                    reasoning_content: c.reasoning_content.as_deref(),
                    reasoning: c.reasoning.as_deref(),
                    function_call: c.function_call.as_ref().map(|f| FunctionOut {
                        name: f.name.as_deref(),
                        arguments: &f.arguments,
                    }),
                    tool_calls: (c.tool_calls.iter())
                        .map(|t| ToolCallOut {
                            id: t.id.as_deref(),
                            kind: t.kind.as_deref().unwrap_or("function"),
                            function: FunctionOut {
                                name: t.name.as_deref(),
                                arguments: &t.arguments,
                            },
                        })
                        .collect(),
                },
                logprobs: (),
                finish_reason: c.finish_reason.as_ref(),
            })
            .collect();
        self.common.whole("chat.completion", choices)
    }
}

/// One choice of the whole answer.
#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: usize,
    message: MessageOut<'a>,
    logprobs: (),
    finish_reason: Option<&'a Value>,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'a str,
    content: Option<&'a str>,
    refusal: Option<&'a str>,
    annotations: &'a [Box<RawValue>],
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<FunctionOut<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    id: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'a str,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: Option<&'a str>,
    arguments: &'a str,
}

impl super::WriteChoices for Vec<ChoiceOut<'_>> {
    fn write(&self, out: &mut super::JsonOut) {
        for (i, choice) in self.iter().enumerate() {
            out.raw(if i == 0 {
                "{\"index\":"
            } else {
                ",{\"index\":"
            });
            out.number(choice.index);
            let message = &choice.message;
            out.raw(",\"message\":{\"role\":");
            out.string(message.role);
            out.raw(",\"content\":");
            out.option_string(message.content);
            out.raw(",\"refusal\":");
            out.option_string(message.refusal);
            out.raw(",\"annotations\":[");
            for (k, annotation) in message.annotations.iter().enumerate() {
                if k > 0 {
                    out.raw(",");
                }
                out.raw(annotation.get());
            }
            out.raw("]");
            if let Some(text) = message.reasoning_content {
                out.raw(",\"reasoning_content\":");
                out.string(text);
            }
            if let Some(text) = message.reasoning {
                out.raw(",\"reasoning\":");
                out.string(text);
            }
            if let Some(call) = &message.function_call {
                out.raw(",\"function_call\":{\"name\":");
                out.option_string(call.name);
                out.raw(",\"arguments\":");
                out.string(call.arguments);
                out.raw("}");
            }
            for (j, call) in message.tool_calls.iter().enumerate() {
                out.raw(if j == 0 {
                    ",\"tool_calls\":[{\"id\":"
                } else {
                    ",{\"id\":"
                });
                out.option_string(call.id);
                out.raw(",\"type\":");
                out.string(call.kind);
                out.raw(",\"function\":{\"name\":");
                out.option_string(call.function.name);
                out.raw(",\"arguments\":");
                out.string(call.function.arguments);
                out.raw("}}");
            }
            if !message.tool_calls.is_empty() {
                out.raw("]");
            }
            out.raw("},\"logprobs\":null,\"finish_reason\":");
            out.value(choice.finish_reason);
            out.raw("}");
        }
    }
}

/// Adds `text` to the content of choice `index`: what `Assembler::add_text` does with a chunk that
/// has nothing else.
fn add_content(choices: &mut Vec<Choice>, index: usize, text: &str) {
    if index >= MAX_INDEX {
        return;
    }
    if choices.len() <= index {
        choices.resize_with(index + 1, Choice::default);
    }
    (choices[index].content)
        .get_or_insert_with(|| String::with_capacity(FIRST_CONTENT))
        .push_str(text);
}

impl crate::protocol::Assemble for Assembler {
    fn push(&mut self, data: &str) -> Result<(), String> {
        Assembler::push(self, data)
    }

    fn push_classified(&mut self, data: &str) -> Option<Signal> {
        Some(Assembler::push_classified(self, data))
    }

    fn push_run(&mut self, text: &str) -> usize {
        if !self.fast {
            return 0;
        }
        let (memo, choices) = (&self.memo, &mut self.choices);
        memo.run(text, self.common.kept(), |index, content| {
            add_content(choices, index, content)
        })
    }

    fn finish(self: Box<Self>) -> bytes::Bytes {
        let text = (self.choices.iter())
            .map(|c| {
                let kept = [
                    &c.role,
                    &c.content,
                    &c.refusal,
                    &c.reasoning_content,
                    &c.reasoning,
                ];
                let kept: usize = kept.iter().map(|t| t.as_ref().map_or(0, String::len)).sum();
                let calls: usize = (c.tool_calls.iter()).map(|t| t.arguments.len() + 128).sum();
                let legacy = (c.function_call.as_ref()).map_or(0, |f| f.arguments.len() + 64);
                let cited: usize = (c.annotations.iter()).map(|a| a.get().len() + 1).sum();
                kept + calls + legacy + cited + 160
            })
            .sum();
        let answer = self.answer().to_bytes(text);
        self.recycle();
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One parse must say what two said: for every kind of chunk, the signal is classify's.
    #[test]
    fn the_signal_of_one_parse_is_classifys() {
        use crate::protocol::Endpoint;
        use crate::protocol::openai::content::classify;
        for data in [
            r#"{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}"#,
            r#"{"choices":[{"index":0,"delta":{}, "finish_reason":"stop"}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"."}, "finish_reason":"length"}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"}, "finish_reason":null}]}"#,
            r#"{"choices":[],"usage":{"total_tokens":3}}"#,
            r#"{"choices":[{"delta":{"content":"Hi"}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[]}}]}"#,
            r#"{"choices":[{"delta":{"reasoning_content":"hmm"}}]}"#,
            r#"{"choices":[{"delta":{"reasoning":"hmm"}}]}"#,
            r#"{"choices":[{"delta":{"reasoning_content":""}}]}"#,
            r#"{"choices":[{"delta":{"refusal":"no"}}]}"#,
            r#"{"choices":[{"delta":{"function_call":{"name":"f"}}}]}"#,
            r#"{"choices":[{"delta":{"audio":{"id":"a"}}}]}"#,
            r#"{"choices":[{"index":1,"delta":{"content":"x"}},{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"object":"chat.completion.chunk"}"#,
            "[DONE]",
            " [DONE] ",
            "",
        ] {
            let event = crate::sse::Event {
                name: None,
                data: Some(std::borrow::Cow::Borrowed(data)),
            };
            assert_eq!(
                Assembler::new().push_classified(data),
                classify(Endpoint::Chat, &event),
                "{data}"
            );
        }
        assert!(matches!(
            Assembler::new().push_classified(r#"{"error":{"message":"overloaded"}}"#),
            Signal::UpstreamError(_)
        ));
        assert!(matches!(
            Assembler::new().push_classified(r#"{"choices":[{"delta":{"content":"#),
            Signal::Malformed(_)
        ));
    }

    #[test]
    fn content_tool_calls_and_usage_are_put_back_together() {
        let mut a = Assembler::new();
        for chunk in [
            r#"{"id":"c1","created":5,"model":"m","system_fingerprint":"fp","choices":[{"index":0,"delta":{"role":"assistant","content":""}},{"index":1,"delta":{"role":"assistant"}}]}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"}}]}"#,
            r#"{"id":"c1","choices":[{"index":1,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":"}}]}}]}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"lo"}},{"index":1,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}}]}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"},{"index":1,"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"{"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
        ] {
            a.push(chunk).unwrap();
        }
        let body = a.finish();
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["id"], "c1");
        assert_eq!(body["choices"][0]["message"]["content"], "Hello");
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        assert!(body["choices"][1]["message"]["content"].is_null());
        assert_eq!(
            body["choices"][1]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(
            body["choices"][1]["message"]["tool_calls"][0]["id"],
            "call_1"
        );
        assert_eq!(body["usage"]["total_tokens"], 7);
        assert!(Assembler::new().push("not json").is_err());
        assert!(
            Assembler::new()
                .push(r#"{"choices":[{"index":100000}]}"#)
                .is_err()
        );
    }

    /// What servers of reasoning models stream beside the answer (DeepSeek, vLLM and llama.cpp
    /// as `reasoning_content`, OpenRouter and Ollama as `reasoning`), a search model's citations
    /// (OpenAI's search models list them in a delta of their own) and a legacy `functions` call
    /// reach a whole answer's message as their own non-streaming answers put them; a value of
    /// the wrong shape fails the answer, naming the field, rather than being dropped.
    #[test]
    fn reasoning_citations_and_a_legacy_function_call_are_put_back_together() {
        let assembled = |chunks: &[&str]| {
            let mut a = Assembler::new();
            for chunk in chunks {
                a.push(chunk)?;
            }
            Ok::<_, String>(a.finish())
        };
        let body = assembled(&[
            r#"{"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":null,"reasoning_content":"Two "}}]}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":null,"reasoning_content":"steps."}}]}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Done"}}]}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"annotations":[{"type":"url_citation","url_citation":{"start_index":0,"end_index":4,"url":"https://a.example/"}}]}}]}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        ])
        .unwrap();
        let message = &body["choices"][0]["message"];
        assert_eq!(message["reasoning_content"], "Two steps.");
        assert_eq!(message["content"], "Done");
        assert_eq!(
            message["annotations"],
            serde_json::json!([{"type": "url_citation", "url_citation": {"start_index": 0, "end_index": 4, "url": "https://a.example/"}}])
        );
        assert!(message.get("reasoning").is_none() && message.get("function_call").is_none());

        let body = assembled(&[
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","reasoning":"Hm"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"function_call":{"name":"get_weather","arguments":""}}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"function_call":{"arguments":"{\"city\":"}}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"function_call":{"arguments":"\"Paris\"}"}}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"function_call"}]}"#,
        ])
        .unwrap();
        let message = &body["choices"][0]["message"];
        assert_eq!(message["reasoning"], "Hm");
        assert_eq!(
            message["function_call"],
            serde_json::json!({"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"})
        );
        assert_eq!(body["choices"][0]["finish_reason"], "function_call");

        for (chunk, field) in [
            (
                r#"{"choices":[{"index":0,"delta":{"reasoning_content":{"text":"x"}}}]}"#,
                "`reasoning_content`",
            ),
            (
                r#"{"choices":[{"index":0,"delta":{"function_call":"auto"}}]}"#,
                "`function_call`",
            ),
            (
                r#"{"choices":[{"index":0,"delta":{"annotations":{"type":"url_citation"}}}]}"#,
                "`annotations`",
            ),
        ] {
            let refused = assembled(&[chunk]).unwrap_err();
            assert!(refused.contains(field), "{refused}");
        }
    }

    /// The answer written by hand is byte for byte serde's, whatever the chunks held.
    #[test]
    fn the_hand_written_answer_is_serdes() {
        let streams: &[&[&str]] = &[
            &[],
            &[r#"{"choices":[]}"#],
            &[
                r#"{"id":"c1","object":"chat.completion.chunk","created":5,"model":"m","system_fingerprint":"fp","service_tier":"default","choices":[{"index":0,"delta":{"role":"assistant","content":""}},{"index":1,"delta":{"role":"assistant"}}]}"#,
                r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hel\"lo\\ \n\t\u0001 \u00e9\u2028 \ud83d\ude00 \u007f"}}]}"#,
                r#"{"id":"c1","choices":[{"index":1,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":"}},{"index":1,"function":{"arguments":"x"}}]}}]}"#,
                r#"{"id":"c1","choices":[{"index":1,"delta":{"refusal":"no\u0000"}},{"index":0,"delta":{},"finish_reason":"stop"},{"index":1,"delta":{},"finish_reason":{"odd":[1, 2]}}]}"#,
                r#"{"id":"c1","choices":[],"usage":{ "prompt_tokens" : 3, "total_tokens":7 }}"#,
            ],
            &[
                r#"{"id":"a\"b","created":null,"model":{"x":1},"system_fingerprint":7,"choices":[{"index":2,"delta":{"role":"tool\n","content":"x"},"finish_reason":"length"}]}"#,
            ],
            &[
                r#"{"model":"m","created":1.5e3,"choices":[{"index":0,"delta":{"content":"plain text that is long enough to span a few words"}}]}"#,
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0}]}}]}"#,
            ],
            &[
                r#"{"choices":[{"index":0,"delta":{"role":"assistant","reasoning_content":"Let \"me\"\n"}}]}"#,
                r#"{"choices":[{"index":0,"delta":{"reasoning":"think"}},{"index":1,"delta":{"function_call":{"name":"f","arguments":"{\"a\""}}}]}"#,
                r#"{"choices":[{"index":1,"delta":{"function_call":{"arguments":":1}"}}}]}"#,
                r#"{"choices":[{"index":0,"delta":{"annotations":[{ "type" : "url_citation", "url_citation":{"url":"https://a.example/\u00e9"}}]}}]}"#,
                r#"{"choices":[{"index":0,"delta":{"annotations":[{"type":"url_citation"},{"type":"x"}]}}]}"#,
            ],
        ];
        for chunks in streams {
            let mut a = Assembler::new();
            for chunk in *chunks {
                a.push(chunk).unwrap();
            }
            a.answer().assert_written_as_serde_writes(chunks);
        }
    }

    /// The common fields are written as serde writes their values however the upstream wrote
    /// them: as written when the scanner reads them (it takes only what serde would write so),
    /// and with spaces, escapes and a number's other forms made plain when serde reads them.
    #[test]
    fn the_common_fields_are_written_as_serde_writes_their_values() {
        let cases = [
            (
                r#"{"id":"c1","object":"chat.completion.chunk","created":5,"model":"m","system_fingerprint":"fp","service_tier":"default","choices":[]}"#,
                r#"{"id":"c1","object":"chat.completion","created":5,"model":"m","system_fingerprint":"fp","service_tier":"default","choices":[]}"#,
            ),
            (
                r#"{"id":"c\u0031","created": 1.5e3 ,"model":"m\u00e9","system_fingerprint":{ "a" : [1, 2] },"service_tier":"\/t","choices":[]}"#,
                r#"{"id":"c1","object":"chat.completion","created":1500.0,"model":"mé","system_fingerprint":{"a":[1,2]},"service_tier":"/t","choices":[]}"#,
            ),
        ];
        for (chunk, answer) in cases {
            for mut assembler in [Assembler::new(), Assembler::without_fast_path()] {
                assembler.push(chunk).unwrap();
                let written = assembler.answer().to_bytes(0);
                assert_eq!(String::from_utf8_lossy(&written), answer, "{chunk}");
            }
        }
    }

    /// A usage in every chunk (as some servers send one) is kept in room for one: the last.
    #[test]
    fn a_usage_in_every_chunk_is_kept_in_room_for_one() {
        for mut assembler in [Assembler::new(), Assembler::without_fast_path()] {
            let first = r#"{"id":"c1","created":5,"model":"m","choices":[]}"#;
            assembler.push(first).unwrap();
            for n in 0..1000 {
                let chunk = format!(
                    r#"{{"id":"c1","created":5,"model":"m","choices":[{{"index":0,"delta":{{"content":"x"}}}}],"usage":{{"total_tokens":{n}}}}}"#
                );
                assembler.push(&chunk).unwrap();
            }
            let kept = assembler.common.text.len();
            assert!(kept < 64, "{kept} bytes kept");
            let answer = assembler.answer().to_bytes(0);
            let answer = String::from_utf8_lossy(&answer);
            assert!(
                answer.ends_with(r#""usage":{"total_tokens":999}}"#),
                "{answer}"
            );
        }
    }

    /// Assembles `reads` through the SSE scanner as a stream's reader does: with `runs`, text
    /// chunks the memo recalls are taken in place; the answer, whether content came, and how
    /// many bytes went by runs.
    fn assembled(reads: &[&[u8]], runs: bool) -> (bytes::Bytes, bool, usize) {
        assembled_in(Box::new(Assembler::new()), reads, runs)
    }

    /// [`assembled`] by `assembler`.
    fn assembled_in(
        assembler: Box<Assembler>,
        reads: &[&[u8]],
        runs: bool,
    ) -> (bytes::Bytes, bool, usize) {
        use crate::protocol::Assemble;
        use crate::sse::{Event, Events};
        struct Reader {
            assembler: Box<Assembler>,
            runs: bool,
            content: bool,
            ran: usize,
        }
        impl Events for Reader {
            fn event(&mut self, event: &Event<'_>, _: usize) {
                if let Some(data) = event.data.as_deref() {
                    let signal = Assemble::push_classified(&mut *self.assembler, data);
                    self.content |= signal == Some(Signal::Content);
                }
            }
            fn takes_runs(&self) -> bool {
                self.runs
            }
            fn take_run(&mut self, text: &str) -> usize {
                let taken = self.assembler.push_run(text);
                self.content |= taken > 0;
                self.ran += taken;
                taken
            }
        }
        let mut reader = Reader {
            assembler,
            runs,
            content: false,
            ran: 0,
        };
        feed(reads, &mut reader);
        let Reader {
            assembler,
            content,
            ran,
            ..
        } = reader;
        (assembler.finish(), content, ran)
    }

    /// Classifies `reads` through the SSE scanner as a stream's reader does: with `runs`, text
    /// chunks the classifier recalls are read in place. Whether content came, and every other
    /// signal in order.
    fn classified(reads: &[&[u8]], runs: bool) -> (bool, Vec<Signal>) {
        use crate::protocol::Classify;
        use crate::protocol::openai::content::ChatClassifier;
        use crate::sse::{Event, Events};
        struct Reader {
            classifier: ChatClassifier,
            runs: bool,
            content: bool,
            signals: Vec<Signal>,
        }
        impl Events for Reader {
            fn event(&mut self, event: &Event<'_>, _: usize) {
                match self.classifier.classify(event) {
                    Signal::Content => self.content = true,
                    other => self.signals.push(other),
                }
            }
            fn takes_runs(&self) -> bool {
                self.runs
            }
            fn take_run(&mut self, text: &str) -> usize {
                let taken = self.classifier.classify_run(text);
                self.content |= taken > 0;
                taken
            }
        }
        let mut reader = Reader {
            classifier: ChatClassifier::default(),
            runs,
            content: false,
            signals: Vec::new(),
        };
        feed(reads, &mut reader);
        (reader.content, reader.signals)
    }

    /// Hands `reads`, in order, to one scanner feeding `events`.
    fn feed(reads: &[&[u8]], events: &mut impl crate::sse::Events) {
        let mut scanner = crate::sse::Scanner::new();
        for read in reads {
            scanner.push_to(read, events).unwrap();
        }
    }

    /// A stream of `contents` as the simulator and most upstreams send it; `padded` adds the
    /// random `obfuscation` string OpenAI ends each chunk with.
    fn text_stream(contents: &[&str], padded: bool) -> String {
        let chunk = |delta: &str, tail: &str, i: usize| {
            let padding = match padded {
                true => format!(r#","obfuscation":"{}""#, &"pQ8xZ2mW4kR7"[..1 + i % 11]),
                false => String::new(),
            };
            format!(
                "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{tail}}}]{padding}}}\n\n"
            )
        };
        let mut stream = chunk(r#"{"role":"assistant","content":""}"#, "null", 0);
        for (i, content) in contents.iter().enumerate() {
            stream.push_str(&chunk(&format!(r#"{{"content":"{content}"}}"#), "null", i));
        }
        stream.push_str(&chunk("{}", "\"stop\"", 0));
        stream.push_str("data: [DONE]\n\n");
        stream
    }

    /// A finished assembler is its thread's spare, and answers the next stream as a new one
    /// does: nothing of the stream it read before (its common fields, its choices, the chunks
    /// it remembered) carries over, whatever the two streams had.
    #[test]
    fn a_recycled_assembler_answers_as_a_new_one_does() {
        let plain: Vec<String> = (0..6).map(|i| format!("tok{i} ")).collect();
        let plain: Vec<&str> = plain.iter().map(String::as_str).collect();
        let two_choices = concat!(
            "data: {\"id\":\"c2\",\"model\":\"other\",\"system_fingerprint\":\"fp\",\"choices\":",
            "[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"a\"}},",
            "{\"index\":1,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":1,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let without_common_fields = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok0 \"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok1 \"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let streams = [
            text_stream(&plain, true),
            two_choices.to_owned(),
            text_stream(&plain, false),
            without_common_fields.to_owned(),
            text_stream(&plain, true),
        ];
        for (at, stream) in streams.iter().enumerate() {
            let recycled = Assembler::boxed();
            if at > 0 {
                assert!(
                    recycled.choices.capacity() > 0,
                    "stream {at} is read by the last stream's assembler"
                );
            }
            let by_recycled = assembled_in(recycled, &[stream.as_bytes()], true);
            let by_new = assembled(&[stream.as_bytes()], true);
            assert_eq!(by_recycled.0, by_new.0, "stream {at}");
            assert_eq!(by_recycled.1, by_new.1, "stream {at}");
        }
    }

    /// Text chunks taken in place assemble byte for byte what reading each event does, and are
    /// classified as it classifies them, however the stream is split into reads, and whatever
    /// breaks a run: escapes, other characters, an empty content, an event of another shape, a
    /// comment, a line end inside an event.
    #[test]
    fn text_chunks_taken_in_place_assemble_what_each_event_does() {
        let plain: Vec<String> = (0..12).map(|i| format!("tok{i} ")).collect();
        let plain: Vec<&str> = plain.iter().map(String::as_str).collect();
        let mixed = [
            "Hel",
            "lo",
            r#" \"quoted\""#,
            " caf\u{e9}",
            " \u{1f600}",
            "",
            " \\n",
            "x",
            "y",
        ];
        let mut streams = vec![
            text_stream(&plain, false),
            text_stream(&plain, true),
            text_stream(&mixed, false),
            text_stream(&mixed, true),
        ];
        // An event of another kind, a comment, a data line split in two and an event field in
        // the middle of a run.
        let mut broken = text_stream(&plain, false);
        let third = broken
            .match_indices("data: ")
            .nth(4)
            .map(|(at, _)| at)
            .unwrap();
        broken.insert_str(
            third,
            ": keep-alive\n\nevent: note\ndata: {\"id\":\"chatcmpl-1\",\n",
        );
        streams.push(broken);
        for stream in &streams {
            let bytes = stream.as_bytes();
            let (whole, content, _) = assembled(&[bytes], false);
            assert!(content, "{stream}");
            let signals = classified(&[bytes], false);
            assert!(signals.0, "{stream}");
            for at in 0..=bytes.len() {
                let (first, second) = bytes.split_at(at);
                let (answer, with_content, _) = assembled(&[first, second], true);
                assert_eq!(answer, whole, "split at {at} of {stream}");
                assert_eq!(with_content, content, "split at {at} of {stream}");
                let read_in_place = classified(&[first, second], true);
                assert_eq!(read_in_place, signals, "split at {at} of {stream}");
            }
        }
        // The plain stream's text chunks after the first are all taken in place (the first too
        // when a stream of this shape came before: shapes are remembered across streams).
        let (_, _, ran) = assembled(&[streams[0].as_bytes()], true);
        let starts: Vec<usize> = streams[0]
            .match_indices("data: ")
            .map(|(at, _)| at)
            .collect();
        assert!(
            ran == starts[13] - starts[2] || ran == starts[13] - starts[1],
            "{ran} bytes taken in place"
        );
    }

    /// A remembered chunk that was several data lines is never compared in place: its line end
    /// would be read as a line of the event's own.
    #[test]
    fn a_chunk_of_several_lines_is_not_taken_in_place() {
        let two_lines = "data: {\"id\":\"c\",\ndata: \"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n";
        // Read in place, the second event's continuation line would be taken as data; it is a
        // field named `"choices"` (ignored), so the event is `{"id":"c",` and malformed.
        let stream = format!(
            "{two_lines}{two_lines}data: {{\"id\":\"c\",\n\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"b\"}}}}]}}\n\n"
        );
        let reads = [stream.as_bytes()];
        assert_eq!(assembled(&reads, true), assembled(&reads, false));
        assert_eq!(assembled(&reads, true).2, 0);
        assert_eq!(classified(&reads, true), classified(&reads, false));
    }
}
