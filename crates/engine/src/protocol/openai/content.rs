//! Which events of an OpenAI stream are meaningful content. The commit point and the `first_token` and `idle` clocks
//! only move on content: SSE comments, role-only deltas, empty deltas and lifecycle events are not
//! content, so a dead upstream hiding behind keep-alives times out like a silent one.
//!
//! It also tells a finished stream from an interrupted one: a chat or completions stream is
//! complete only when a choice carried a `finish_reason` before `[DONE]`. llama.cpp's server,
//! interrupted by a newer request, ends with a bare `[DONE]`: that answer is truncated.

use std::cell::Cell;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::assemble::fast::{FastChunk, Kept, Memo};
use crate::protocol::{Endpoint, Signal, excerpt};
use crate::sse::Event;

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default)]
    choices: Option<Choices>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

/// Whether any element of `choices` carries content, and any a `finish_reason`, read without
/// allocating a list.
struct Choices {
    content: bool,
    finished: bool,
}

impl<'de> Deserialize<'de> for Choices {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Choices;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of choices")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Choices, A::Error> {
                let mut choices = Choices {
                    content: false,
                    finished: false,
                };
                while let Some(choice) = seq.next_element::<Choice<'de>>()? {
                    choices.content |= choice.has_content();
                    choices.finished |= filled(choice.finish_reason);
                }
                Ok(choices)
            }
        }
        deserializer.deserialize_seq(Visitor)
    }
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
    #[serde(borrow, default)]
    finish_reason: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reasoning_content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reasoning: Option<&'a RawValue>,
    #[serde(borrow, default)]
    refusal: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_calls: Option<&'a RawValue>,
    #[serde(borrow, default)]
    function_call: Option<&'a RawValue>,
    #[serde(borrow, default)]
    audio: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct TypedEvent<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<std::borrow::Cow<'a, str>>,
}

impl Choice<'_> {
    fn has_content(&self) -> bool {
        filled(self.text)
            || self.delta.as_ref().is_some_and(|d| {
                filled(d.content)
                    || filled(d.reasoning_content)
                    || filled(d.reasoning)
                    || filled(d.refusal)
                    || filled(d.tool_calls)
                    || filled(d.function_call)
                    || filled(d.audio)
            })
    }
}

/// Whether a JSON value carries something: not null, not `""`, not `[]`, not `{}`.
pub(crate) fn filled(value: Option<&RawValue>) -> bool {
    value.is_some_and(|v| !matches!(v.get().trim(), "null" | "\"\"" | "[]" | "{}"))
}

/// Classifies the events of one chat stream as [`classify`] does, faster: the common chunk
/// shapes are read by the assembler's hand scanner, and a chunk that differs from the last text
/// chunk only in its text by comparison with it (see `assemble::fast`). Anything else, serde.
pub struct ChatClassifier {
    memo: Memo,
}

thread_local! {
    /// The memo of the last classifier dropped on this thread, cleared, for the thread's next
    /// stream: its buffers were allocated again for every one.
    static SPARE_MEMO: Cell<Option<Memo>> = const { Cell::new(None) };
}

impl Default for ChatClassifier {
    /// A classifier that has read nothing, with the thread's spare memo when it has one.
    fn default() -> ChatClassifier {
        ChatClassifier {
            memo: (SPARE_MEMO.try_with(Cell::take).ok().flatten()).unwrap_or_default(),
        }
    }
}

impl Drop for ChatClassifier {
    fn drop(&mut self) {
        let mut memo = std::mem::take(&mut self.memo);
        memo.clear();
        // Not kept when the thread is being torn down.
        let _ = SPARE_MEMO.try_with(|spare| spare.set(Some(memo)));
    }
}

impl crate::protocol::Classify for ChatClassifier {
    fn classify(&mut self, event: &Event<'_>) -> Signal {
        let Some(data) = event.data.as_deref() else {
            return Signal::Nothing;
        };
        let data = crate::protocol::trimmed(data);
        // The end marker first: every stream has one, and the scanner and its shapes would each
        // have looked at it before serde said what it is.
        if data == "[DONE]" {
            return Signal::End;
        }
        if let Some(choice) = self.memo.recall(data, Kept::ALL) {
            return choice.signal();
        }
        let mut chunk = FastChunk::default();
        if self.memo.chunk_into(data, Kept::ALL, &mut chunk) {
            return chunk
                .choice
                .as_ref()
                .map_or(Signal::Nothing, |c| c.signal());
        }
        classify(Endpoint::Chat, event)
    }

    fn classify_run(&mut self, text: &str) -> usize {
        self.memo.run(text, Kept::ALL, |_, _| {})
    }
}

/// Classifies one event of a stream from `endpoint`.
pub fn classify(endpoint: Endpoint, event: &Event<'_>) -> Signal {
    let Some(data) = event.data.as_deref() else {
        return Signal::Nothing;
    };
    let data = crate::protocol::trimmed(data);
    if data == "[DONE]" {
        return Signal::End;
    }
    if data.is_empty() {
        return Signal::Nothing;
    }
    match endpoint {
        Endpoint::Responses => {
            let typed: TypedEvent<'_> = match serde_json::from_str(data) {
                Ok(typed) => typed,
                Err(e) => return Signal::Malformed(format!("a Responses event is not JSON: {e}")),
            };
            let kind = typed.kind.as_deref().or(event.name).unwrap_or_default();
            match kind {
                "response.completed" | "response.incomplete" => Signal::End,
                "response.failed" | "error" => Signal::UpstreamError(excerpt(data)),
                k if k.ends_with(".delta") => Signal::Content,
                _ => Signal::Nothing,
            }
        }
        _ => {
            let chunk: Chunk<'_> = match serde_json::from_str(data) {
                Ok(chunk) => chunk,
                Err(e) => return Signal::Malformed(format!("a stream chunk is not JSON: {e}")),
            };
            if filled(chunk.error) {
                return Signal::UpstreamError(excerpt(data));
            }
            match chunk.choices {
                Some(Choices {
                    content,
                    finished: true,
                }) => Signal::Finish { content },
                Some(Choices { content: true, .. }) => Signal::Content,
                _ => Signal::Nothing,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(text: &str) -> Event<'_> {
        Event {
            name: None,
            data: Some(std::borrow::Cow::Borrowed(text)),
        }
    }

    #[test]
    fn only_real_content_counts() {
        let chat = |json: &str| classify(Endpoint::Chat, &data(json));
        assert_eq!(
            chat(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#),
            Signal::Nothing
        );
        assert_eq!(
            chat(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}"#),
            Signal::Nothing
        );
        assert_eq!(
            chat(r#"{"choices":[{"index":0,"delta":{}, "finish_reason":"stop"}]}"#),
            Signal::Finish { content: false }
        );
        assert_eq!(
            chat(r#"{"choices":[{"index":0,"delta":{"content":"."}, "finish_reason":"length"}]}"#),
            Signal::Finish { content: true }
        );
        assert_eq!(
            chat(r#"{"choices":[{"index":0,"delta":{"content":"a"}, "finish_reason":null}]}"#),
            Signal::Content
        );
        assert_eq!(
            chat(r#"{"choices":[],"usage":{"total_tokens":3}}"#),
            Signal::Nothing
        );
        assert_eq!(
            chat(r#"{"choices":[{"delta":{"content":"Hi"}}]}"#),
            Signal::Content
        );
        assert_eq!(
            chat(r#"{"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}"#),
            Signal::Content
        );
        assert_eq!(
            chat(r#"{"choices":[{"delta":{"reasoning_content":"hmm"}}]}"#),
            Signal::Content
        );
        assert_eq!(
            classify(Endpoint::Chat, &Event::default()),
            Signal::Nothing,
            "a comment"
        );
        assert_eq!(chat("[DONE]"), Signal::End);
        assert!(matches!(
            chat(r#"{"error":{"message":"overloaded"}}"#),
            Signal::UpstreamError(_)
        ));
        assert!(matches!(
            chat(r#"{"choices":[{"delta":{"content":"#),
            Signal::Malformed(_)
        ));
        let completion = |json: &str| classify(Endpoint::Completions, &data(json));
        assert_eq!(completion(r#"{"choices":[{"text":""}]}"#), Signal::Nothing);
        assert_eq!(completion(r#"{"choices":[{"text":"a"}]}"#), Signal::Content);
        assert_eq!(
            completion(r#"{"choices":[{"text":"","finish_reason":"stop"}]}"#),
            Signal::Finish { content: false }
        );
    }

    #[test]
    fn responses_events_count_by_type() {
        let event = |kind: &str| {
            classify(
                Endpoint::Responses,
                &data(&format!(r#"{{"type":"{kind}","sequence_number":1}}"#)),
            )
        };
        assert_eq!(event("response.created"), Signal::Nothing);
        assert_eq!(event("response.output_item.added"), Signal::Nothing);
        assert_eq!(event("response.output_text.delta"), Signal::Content);
        assert_eq!(
            event("response.function_call_arguments.delta"),
            Signal::Content
        );
        assert_eq!(event("response.completed"), Signal::End);
        assert!(matches!(event("response.failed"), Signal::UpstreamError(_)));
    }
}
