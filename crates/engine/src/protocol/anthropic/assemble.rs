//! One Message body assembled from a Messages stream, for non-streaming clients whose call the
//! gateway streamed from the upstream (so `first_token` and `idle` protect it): the message from
//! `message_start`, each content block from its start event and deltas — text, tool input JSON
//! (parsed once whole), thinking with its signature kept byte for byte, citations — and the stop
//! reason and usage from `message_delta`.

use serde::Deserialize;
use serde_json::{Map, Value};

/// Collects the events of one Messages stream.
#[derive(Debug, Default)]
pub struct MessageAssembler {
    message: Option<Map<String, Value>>,
    blocks: Vec<Option<Block>>,
}

#[derive(Debug)]
struct Block {
    value: Map<String, Value>,
    /// Tool input JSON, in pieces until the block stops.
    partial_json: String,
}

#[derive(Deserialize)]
struct EventIn {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    message: Option<Map<String, Value>>,
    #[serde(default)]
    content_block: Option<Map<String, Value>>,
    #[serde(default)]
    delta: Option<Map<String, Value>>,
    #[serde(default)]
    usage: Option<Map<String, Value>>,
}

/// Most content blocks an assembled Message may have (guards memory).
const MAX_BLOCKS: usize = 1024;

impl MessageAssembler {
    /// Adds the JSON data of one event.
    pub fn push(&mut self, data: &str) -> Result<(), String> {
        let event: EventIn = serde_json::from_str(data)
            .map_err(|e| format!("a Messages event is not one the API sends: {e}"))?;
        match event.kind.as_str() {
            "message_start" => {
                let message = event
                    .message
                    .ok_or("a message_start event without its message")?;
                self.message = Some(message);
            }
            "content_block_start" => {
                let index = index_of(event.index)?;
                let value = event
                    .content_block
                    .ok_or("a content_block_start event without its content_block")?;
                if self.blocks.len() <= index {
                    self.blocks.resize_with(index + 1, || None);
                }
                self.blocks[index] = Some(Block {
                    value,
                    partial_json: String::new(),
                });
            }
            "content_block_delta" => {
                let index = index_of(event.index)?;
                let delta = event
                    .delta
                    .ok_or("a content_block_delta without its delta")?;
                let block = self
                    .blocks
                    .get_mut(index)
                    .and_then(Option::as_mut)
                    .ok_or_else(|| format!("a delta for block {index}, which never started"))?;
                block.apply(delta)?;
            }
            "content_block_stop" => {
                let index = index_of(event.index)?;
                if let Some(Some(block)) = self.blocks.get_mut(index) {
                    block.close()?;
                }
            }
            "message_delta" => {
                let message = self
                    .message
                    .as_mut()
                    .ok_or("a message_delta before message_start")?;
                for (key, value) in event.delta.unwrap_or_default() {
                    message.insert(key, value);
                }
                if let Some(usage) = event.usage {
                    let total = message
                        .entry("usage")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(total) = total {
                        total.extend(usage);
                    }
                }
            }
            // The message is complete: a block whose stop never came (a proxy or a server that
            // drops it) is closed now, so its tool input, sent in pieces, is not lost.
            "message_stop" => {
                for block in self.blocks.iter_mut().flatten() {
                    block.close()?;
                }
            }
            // ping and kinds this gateway does not know add nothing.
            _ => {}
        }
        Ok(())
    }

    /// The non-streaming body: the Message with every block in order.
    pub fn finish(self) -> Value {
        let mut message = self.message.unwrap_or_default();
        let content: Vec<Value> = self
            .blocks
            .into_iter()
            .flatten()
            .map(|b| Value::Object(b.value))
            .collect();
        message.insert("content".into(), Value::Array(content));
        Value::Object(message)
    }
}

fn index_of(index: Option<usize>) -> Result<usize, String> {
    match index {
        Some(index) if index < MAX_BLOCKS => Ok(index),
        Some(index) => Err(format!("content block index {index} is out of range")),
        None => Err("a content block event without its index".to_owned()),
    }
}

impl Block {
    /// Adds one delta to the block.
    fn apply(&mut self, mut delta: Map<String, Value>) -> Result<(), String> {
        let kind = delta
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let mut append = |field: &str, piece: Option<Value>| -> Result<(), String> {
            let Some(Value::String(piece)) = piece else {
                return Err(format!("a {kind} without its `{field}` text"));
            };
            match self.value.get_mut(field) {
                Some(Value::String(text)) => text.push_str(&piece),
                _ => {
                    self.value.insert(field.to_owned(), Value::String(piece));
                }
            }
            Ok(())
        };
        match kind.as_str() {
            "text_delta" => append("text", delta.remove("text")),
            "thinking_delta" => append("thinking", delta.remove("thinking")),
            // A signature is one opaque string: kept exactly as sent.
            "signature_delta" => match delta.remove("signature") {
                Some(signature @ Value::String(_)) => {
                    self.value.insert("signature".into(), signature);
                    Ok(())
                }
                _ => Err("a signature_delta without its signature".to_owned()),
            },
            "input_json_delta" => match delta.remove("partial_json") {
                Some(Value::String(piece)) => {
                    self.partial_json.push_str(&piece);
                    Ok(())
                }
                _ => Err("an input_json_delta without its partial_json".to_owned()),
            },
            "citations_delta" => {
                let citation = delta
                    .remove("citation")
                    .ok_or("a citations_delta without its citation")?;
                let list = self
                    .value
                    .entry("citations")
                    .or_insert_with(|| Value::Array(Vec::new()));
                match list {
                    Value::Array(list) => list.push(citation),
                    other => *other = Value::Array(vec![citation]),
                }
                Ok(())
            }
            other => Err(format!(
                "a content_block_delta of type `{other}` cannot be put into a whole Message; ask for a stream (`\"stream\": true`)"
            )),
        }
    }

    /// The block is complete: its tool input, sent in pieces, is parsed whole.
    fn close(&mut self) -> Result<(), String> {
        if self.partial_json.trim().is_empty() {
            return Ok(());
        }
        let input: Value = serde_json::from_str(&self.partial_json)
            .map_err(|e| format!("a tool's input JSON did not parse once whole: {e}"))?;
        self.value.insert("input".into(), input);
        self.partial_json.clear();
        Ok(())
    }
}

impl crate::protocol::Assemble for MessageAssembler {
    fn push(&mut self, data: &str) -> Result<(), String> {
        MessageAssembler::push(self, data)
    }

    fn finish(self: Box<Self>) -> bytes::Bytes {
        bytes::Bytes::from(
            serde_json::to_vec(&MessageAssembler::finish(*self)).expect("a json value serializes"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn thinking_text_tool_use_stop_reason_and_usage_are_put_back_together() {
        let signature = "EqQBCkgIARABGAIiQL+/x9z==";
        let events = [
            json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":1}}}),
            json!({"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me "}}),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"think."}}),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":signature}}),
            json!({"type":"content_block_stop","index":0}),
            json!({"type":"ping"}),
            json!({"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}),
            json!({"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hel"}}),
            json!({"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"lo"}}),
            json!({"type":"content_block_stop","index":1}),
            json!({"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}),
            json!({"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}}),
            json!({"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Par"}}),
            json!({"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"is\"}"}}),
            json!({"type":"content_block_stop","index":2}),
            json!({"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":42}}),
            json!({"type":"message_stop"}),
        ];
        let mut assembler = MessageAssembler::default();
        for event in events {
            assembler.push(&event.to_string()).unwrap();
        }
        let message = assembler.finish();
        assert_eq!(
            message["content"],
            json!([
                {"type": "thinking", "thinking": "Let me think.", "signature": signature},
                {"type": "text", "text": "Hello"},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            ])
        );
        assert_eq!(message["stop_reason"], "tool_use");
        assert_eq!(
            message["usage"],
            json!({"input_tokens": 12, "output_tokens": 42})
        );
        assert_eq!(message["id"], "msg_1");
    }

    /// A stream whose tool block never got its `content_block_stop` (a proxy or a server that
    /// drops it): the input sent in pieces is not lost when the message stops, and pieces that
    /// do not parse fail the answer as they would at the block's stop.
    #[test]
    fn a_tool_block_left_open_is_closed_by_the_message_stop() {
        let stream = |pieces: &[&str]| {
            let mut events = vec![
                json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[],"stop_reason":null,"usage":{"input_tokens":3}}}),
                json!({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}),
            ];
            for piece in pieces {
                events.push(json!({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":piece}}));
            }
            events.push(json!({"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":9}}));
            events.push(json!({"type":"message_stop"}));
            let mut assembler = MessageAssembler::default();
            let pushed: Result<(), String> =
                (events.iter()).try_for_each(|event| assembler.push(&event.to_string()));
            pushed.map(|()| assembler.finish())
        };
        let message = stream(&["{\"city\": \"Par", "is\"}"]).unwrap();
        assert_eq!(
            message["content"],
            json!([{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}])
        );
        let broken = stream(&["{\"city\": \"Par"]).unwrap_err();
        assert!(broken.contains("did not parse once whole"), "{broken}");
    }

    #[test]
    fn what_cannot_be_assembled_is_refused_with_the_reason() {
        let mut assembler = MessageAssembler::default();
        assert!(assembler.push("not json").is_err());
        let orphan = assembler
            .push(r#"{"type":"content_block_delta","index":3,"delta":{"type":"text_delta","text":"x"}}"#)
            .unwrap_err();
        assert!(orphan.contains("never started"), "{orphan}");
        assembler
            .push(r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#)
            .unwrap();
        let unknown = assembler
            .push(r#"{"type":"content_block_delta","index":0,"delta":{"type":"audio_delta","data":"x"}}"#)
            .unwrap_err();
        assert!(
            unknown.contains("`audio_delta`") && unknown.contains("stream"),
            "{unknown}"
        );
        let far = assembler
            .push(
                r#"{"type":"content_block_start","index":100000,"content_block":{"type":"text"}}"#,
            )
            .unwrap_err();
        assert!(far.contains("out of range"), "{far}");
    }
}
