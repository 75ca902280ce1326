//! One legacy completion body (`text_completion`) assembled from a completions stream: each
//! choice's text and finish reason, and the usage, in the shape of the non-streaming answer.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::{ChunkIn, Common, present};

/// Collects the chunks of one completions stream.
#[derive(Debug, Default)]
pub struct CompletionAssembler {
    common: Common,
    choices: Vec<Choice>,
}

#[derive(Debug, Default)]
struct Choice {
    text: String,
    finish_reason: Option<Value>,
}

#[derive(Deserialize)]
struct ChoiceIn<'a> {
    #[serde(default)]
    index: usize,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    finish_reason: Option<&'a RawValue>,
}

/// Most choices an assembled answer may have (guards memory).
const MAX_CHOICES: usize = 128;

impl CompletionAssembler {
    /// Adds the JSON data of one chunk (`[DONE]` adds nothing).
    pub fn push(&mut self, data: &str) -> Result<(), String> {
        if data.trim() == "[DONE]" {
            return Ok(());
        }
        let chunk: ChunkIn<ChoiceIn> = serde_json::from_str(data)
            .map_err(|e| format!("a stream chunk is not a completion chunk: {e}"))?;
        for c in self.common.push(chunk) {
            if c.index >= MAX_CHOICES {
                return Err(format!("choice index {} is out of range", c.index));
            }
            if self.choices.len() <= c.index {
                self.choices.resize_with(c.index + 1, Choice::default);
            }
            let choice = &mut self.choices[c.index];
            choice.text.push_str(c.text.as_deref().unwrap_or_default());
            if let Some(reason) = present(c.finish_reason) {
                choice.finish_reason = serde_json::from_str(reason.get()).ok();
            }
        }
        Ok(())
    }

    /// The non-streaming body: `text_completion` with every choice's text.
    pub fn finish(self) -> Value {
        self.answer().to_value()
    }

    fn answer(&self) -> super::Whole<'_, Vec<ChoiceOut<'_>>> {
        let choices = (self.choices.iter().enumerate())
            .map(|(index, c)| ChoiceOut {
                text: &c.text,
                index,
                logprobs: (),
                finish_reason: c.finish_reason.as_ref(),
            })
            .collect();
        self.common.whole("text_completion", choices)
    }
}

/// One choice of the whole answer.
#[derive(Serialize)]
struct ChoiceOut<'a> {
    text: &'a str,
    index: usize,
    logprobs: (),
    finish_reason: Option<&'a Value>,
}

impl super::WriteChoices for Vec<ChoiceOut<'_>> {
    fn write(&self, out: &mut super::JsonOut) {
        for (i, choice) in self.iter().enumerate() {
            out.raw(if i == 0 { "{\"text\":" } else { ",{\"text\":" });
            out.string(choice.text);
            out.raw(",\"index\":");
            out.number(choice.index);
            out.raw(",\"logprobs\":null,\"finish_reason\":");
            out.value(choice.finish_reason);
            out.raw("}");
        }
    }
}

impl crate::protocol::Assemble for CompletionAssembler {
    fn push(&mut self, data: &str) -> Result<(), String> {
        CompletionAssembler::push(self, data)
    }

    fn finish(self: Box<Self>) -> bytes::Bytes {
        let text = (self.choices.iter()).map(|c| c.text.len() + 96).sum();
        self.answer().to_bytes(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_choices_text_and_the_usage_are_put_back_together() {
        let mut a = CompletionAssembler::default();
        for chunk in [
            r#"{"id":"c1","object":"text_completion","created":5,"model":"m","choices":[{"text":"Hel","index":0,"logprobs":null,"finish_reason":null}]}"#,
            r#"{"id":"c1","choices":[{"text":"lo","index":0,"finish_reason":"stop"},{"text":"Yo","index":1,"finish_reason":"length"}]}"#,
            r#"{"id":"c1","choices":[],"usage":{"total_tokens":4}}"#,
            "[DONE]",
        ] {
            a.push(chunk).unwrap();
        }
        let body = a.finish();
        assert_eq!(body["object"], "text_completion");
        assert_eq!(body["choices"][0]["text"], "Hello");
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        assert_eq!(body["choices"][1]["text"], "Yo");
        assert_eq!(body["usage"]["total_tokens"], 4);
        assert!(CompletionAssembler::default().push("{").is_err());
    }

    /// The answer written by hand is byte for byte serde's.
    #[test]
    fn the_hand_written_answer_is_serdes() {
        let streams: &[&[&str]] = &[
            &[],
            &[
                r#"{"id":"c1","created":5,"model":"m","system_fingerprint":null,"choices":[{"text":"a\"b\u0002\n","index":0,"finish_reason":null},{"text":"x","index":1,"finish_reason":"stop"}]}"#,
                r#"{"id":"c1","choices":[],"usage":{"total_tokens":4}}"#,
            ],
        ];
        for chunks in streams {
            let mut a = CompletionAssembler::default();
            for chunk in *chunks {
                a.push(chunk).unwrap();
            }
            a.answer().assert_written_as_serde_writes(chunks);
        }
    }
}
