//! OpenAI- and Anthropic-shaped bodies: whole JSON answers, SSE chunks and events, and errors.
//!
//! Shapes follow OpenAI's API closely enough that the official Python and Node SDKs parse them,
//! including the Responses API's typed events, and Anthropic's Messages API (`message_start` …
//! `message_stop`, `ping`, its `error` event and error bodies) as its SDKs read it. Streams and whole answers of one [`Answer`] carry
//! the same ids, text and usage, so a body assembled from a stream can be compared field by field.

use bytes::Bytes;
use serde::Serialize;
use serde_json::json;

use crate::content;
use crate::request::{Endpoint, ToolChoice};

/// Everything decided about one generated answer before it is sent.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: String,
    /// One tag per choice (see [`content`]).
    pub tags: Vec<String>,
    /// Output tokens per choice.
    pub tokens: u32,
    /// `stop`, `length` or `tool_calls`.
    pub finish_reason: &'static str,
    /// The tool called, and the call's id.
    pub tool: Option<(String, ToolChoice)>,
    pub include_usage: bool,
    pub usage: Usage,
    /// Responses API: the output item's id.
    pub item_id: String,
    /// Messages API: the answer opens with a thinking block (extended thinking was asked for).
    pub thinking: bool,
    /// The constant parts of this answer's chat content chunks, rendered at the first one.
    pub chat_frame: std::sync::OnceLock<ChatFrame>,
}

/// The parts of a chat content chunk that every chunk of one answer repeats, rendered once: a
/// chunk is then `head`, the choice's index, the delta and `tail` — the bytes serde gives for
/// [`ChatChunk`] (a test compares them), for a tenth of the work per chunk.
#[derive(Debug, Clone)]
pub(crate) struct ChatFrame {
    /// `data: {"id":…,"choices":[{"index":`
    head: String,
    /// `}]…}` and the blank line, after the choice's finish reason.
    tail: String,
}

impl ChatFrame {
    fn new(answer: &Answer) -> ChatFrame {
        let json = |text: &str| serde_json::to_string(text).expect("a string serializes");
        let head = format!(
            "data: {{\"id\":{},\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":{},\"system_fingerprint\":\"fp_hourglass_sim\",\"choices\":[{{\"index\":",
            json(&answer.id),
            answer.created,
            json(&answer.model),
        );
        let usage = if answer.include_usage {
            ",\"usage\":null"
        } else {
            ""
        };
        let tail = format!("}}]{usage}}}\n\n");
        ChatFrame { head, tail }
    }

    /// Appends to `out` the chunk of `choice` with `delta` (what [`Answer::chat_chunk`] writes
    /// for them).
    fn write_chunk(&self, choice: u32, delta: &Delta<'_>, finish: Option<&str>, out: &mut Vec<u8>) {
        self.write(
            choice,
            |out| serde_json::to_writer(out, delta).expect("a delta serializes"),
            finish,
            out,
        );
    }

    /// Appends to `out` the chunk of `choice` whose delta is what `delta` writes.
    fn write(
        &self,
        choice: u32,
        delta: impl FnOnce(&mut Vec<u8>),
        finish: Option<&str>,
        out: &mut Vec<u8>,
    ) {
        out.reserve(self.head.len() + self.tail.len() + 96);
        out.extend_from_slice(self.head.as_bytes());
        push_number(out, choice);
        out.extend_from_slice(b",\"delta\":");
        delta(out);
        out.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":");
        match finish {
            Some(reason) => serde_json::to_writer(&mut *out, reason).expect("a string serializes"),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(self.tail.as_bytes());
    }

    /// Appends to `out` the content chunk of `choice` carrying token `seq` of `tag`: a token is
    /// letters of the tag alphabet, digits, `:` and a space, so its JSON string is itself in
    /// quotes, written without a serializer.
    fn write_token(&self, choice: u32, tag: &str, seq: u32, out: &mut Vec<u8>) {
        debug_assert!(!tag.contains(['"', '\\']) && tag.bytes().all(|b| b >= 0x20));
        self.write(
            choice,
            |out| {
                out.extend_from_slice(b"{\"content\":\"");
                out.extend_from_slice(tag.as_bytes());
                out.push(b':');
                push_number(out, seq);
                out.extend_from_slice(b" \"}");
            },
            None,
            out,
        );
    }
}

/// Appends `n` in decimal.
fn push_number(out: &mut Vec<u8>, n: u32) {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Token counts of one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    pub prompt: u32,
    pub completion: u32,
    pub reasoning: u32,
}

/// An SSE comment that keeps a connection alive; clients must ignore it.
pub(crate) const KEEPALIVE: &[u8] = b": keep-alive\n\n";
/// Anthropic's keep-alive: a `ping` event, which its clients ignore.
pub(crate) const PING: &[u8] = b"event: ping\ndata: {\"type\": \"ping\"}\n\n";
/// The end of a chat or completions stream.
pub(crate) const DONE: &[u8] = b"data: [DONE]\n\n";

#[derive(Serialize)]
struct UsageJson {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<Details>,
}

#[derive(Serialize)]
struct Details {
    reasoning_tokens: u32,
}

impl Usage {
    fn json(&self) -> UsageJson {
        UsageJson {
            prompt_tokens: self.prompt,
            completion_tokens: self.completion,
            total_tokens: self.prompt + self.completion,
            completion_tokens_details: Some(Details {
                reasoning_tokens: self.reasoning,
            }),
        }
    }
}

#[derive(Serialize)]
struct ChatChunk<'a, C: Serialize> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: C,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<UsageJson>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

fn sse_data<T: Serialize>(value: &T) -> Bytes {
    let mut out = Vec::with_capacity(320);
    out.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut out, value).expect("serializing plain structs cannot fail");
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn sse_event(kind: &str, value: &serde_json::Value) -> Bytes {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    serde_json::to_writer(&mut out, value).expect("serializing a json value cannot fail");
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// A broken copy of an SSE frame: its JSON cut in the middle, the framing kept.
pub(crate) fn malformed(frame: &Bytes) -> Bytes {
    let body = frame.strip_suffix(b"\n\n").unwrap_or(frame);
    let mut out = body[..body.len() / 2].to_vec();
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

impl Answer {
    /// The text of token `seq` of `choice`, as it appears in the content or tool arguments.
    fn fragment(&self, choice: u32, seq: u32) -> String {
        let token = content::token(&self.tags[choice as usize], seq);
        match &self.tool {
            None => token,
            Some((_, tool)) => {
                let mut out = String::new();
                if seq == 0 {
                    out.push_str(&format!("{{\"{}\":\"", tool.argument));
                }
                out.push_str(&token);
                if seq + 1 == self.tokens {
                    out.push_str("\"}");
                }
                out
            }
        }
    }

    /// The whole text (or tool arguments) of `choice`.
    fn full_text(&self, choice: u32) -> String {
        (0..self.tokens)
            .map(|seq| self.fragment(choice, seq))
            .collect()
    }

    fn chat_chunk(&self, choice: u32, delta: Delta<'_>, finish: Option<&str>) -> Bytes {
        sse_data(&ChatChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            system_fingerprint: "fp_hourglass_sim",
            choices: [ChunkChoice {
                index: choice,
                delta,
                logprobs: None,
                finish_reason: finish,
            }],
            usage: self.include_usage.then_some(None),
        })
    }

    /// [`Answer::chat_chunk`] for a delta without tool calls, written around the answer's
    /// rendered [`ChatFrame`] rather than serialized whole.
    fn framed_chat_chunk(&self, choice: u32, delta: &Delta<'_>, finish: Option<&str>) -> Bytes {
        let frame = self.chat_frame.get_or_init(|| ChatFrame::new(self));
        let mut out = Vec::new();
        frame.write_chunk(choice, delta, finish, &mut out);
        Bytes::from(out)
    }

    fn text_chunk(&self, choice: u32, text: &str, finish: Option<&str>) -> Bytes {
        sse_data(&ChatChunk {
            id: &self.id,
            object: "text_completion",
            created: self.created,
            model: &self.model,
            system_fingerprint: "fp_hourglass_sim",
            choices: [TextChoice {
                text,
                index: choice,
                logprobs: None,
                finish_reason: finish,
            }],
            usage: self.include_usage.then_some(None),
        })
    }

    fn usage_chunk(&self, object: &'static str) -> Bytes {
        sse_data(&ChatChunk {
            id: &self.id,
            object,
            created: self.created,
            model: &self.model,
            system_fingerprint: "fp_hourglass_sim",
            choices: [(); 0],
            usage: Some(Some(self.usage.json())),
        })
    }

    /// Frames sent right after the headers, before any content (not counted as content chunks).
    pub(crate) fn preamble(&self, seq: &mut u32) -> Vec<Bytes> {
        match self.endpoint {
            Endpoint::Chat => (0..self.tags.len() as u32)
                .map(|choice| {
                    let delta = Delta {
                        role: Some("assistant"),
                        content: if self.tool.is_some() { None } else { Some("") },
                        tool_calls: None,
                    };
                    self.framed_chat_chunk(choice, &delta, None)
                })
                .collect(),
            Endpoint::Responses => {
                let in_progress = self.response_json("in_progress", false);
                let mut frames = vec![
                    self.event(seq, "response.created", json!({"response": in_progress})),
                    self.event(seq, "response.in_progress", json!({"response": in_progress})),
                    self.event(
                        seq,
                        "response.output_item.added",
                        json!({"output_index": 0, "item": self.response_item("in_progress", false)}),
                    ),
                ];
                if self.tool.is_none() {
                    frames.push(self.event(
                        seq,
                        "response.content_part.added",
                        json!({"item_id": self.item_id, "output_index": 0, "content_index": 0,
                               "part": {"type": "output_text", "text": "", "annotations": []}}),
                    ));
                }
                frames
            }
            Endpoint::Messages => {
                let first = if self.thinking {
                    json!({"type": "thinking", "thinking": "", "signature": ""})
                } else {
                    self.open_block()
                };
                vec![
                    anthropic_event(
                        "message_start",
                        json!({"message": self.message_json(json!([]), None, 1)}),
                    ),
                    anthropic_event(
                        "content_block_start",
                        json!({"index": 0, "content_block": first}),
                    ),
                    Bytes::from_static(PING),
                ]
            }
            _ => Vec::new(),
        }
    }

    /// What keeps the stream alive while the first token is awaited: a comment, or Anthropic's
    /// `ping` event.
    pub(crate) fn keepalive(&self) -> Bytes {
        match self.endpoint {
            Endpoint::Messages => Bytes::from_static(PING),
            _ => Bytes::from_static(KEEPALIVE),
        }
    }

    /// Content chunk `seq`: one frame per choice. A Messages answer with thinking streams its
    /// thinking block (text, then signature) before its first answer token.
    pub(crate) fn content(&self, seq: u32, event_seq: &mut u32) -> Vec<Bytes> {
        let mut frames = Vec::new();
        if self.endpoint == Endpoint::Messages && self.thinking && seq == 0 {
            frames.extend([
                anthropic_event(
                    "content_block_delta",
                    json!({"index": 0, "delta": {"type": "thinking_delta", "thinking": self.thinking_text()}}),
                ),
                anthropic_event(
                    "content_block_delta",
                    json!({"index": 0, "delta": {"type": "signature_delta", "signature": self.signature()}}),
                ),
                anthropic_event("content_block_stop", json!({"index": 0})),
                anthropic_event(
                    "content_block_start",
                    json!({"index": 1, "content_block": self.open_block()}),
                ),
            ]);
        }
        frames.extend(self.content_frames(seq, event_seq));
        frames
    }

    /// Appends content chunk `seq` to `out`: what [`Answer::content`] gives, its frames one after
    /// another. A chat answer's text chunks are written in place, the rest rendered as frames.
    pub(crate) fn content_into(&self, seq: u32, event_seq: &mut u32, out: &mut Vec<u8>) {
        if self.endpoint != Endpoint::Chat || self.tool.is_some() {
            for frame in self.content(seq, event_seq) {
                out.extend_from_slice(&frame);
            }
            return;
        }
        let frame = self.chat_frame.get_or_init(|| ChatFrame::new(self));
        for (choice, tag) in self.tags.iter().enumerate() {
            frame.write_token(choice as u32, tag, seq, out);
        }
    }

    fn content_frames(&self, seq: u32, event_seq: &mut u32) -> Vec<Bytes> {
        (0..self.tags.len() as u32)
            .map(|choice| {
                // Made only where it is needed: a chat text chunk writes its token in place.
                let fragment = || self.fragment(choice, seq);
                match self.endpoint {
                    Endpoint::Chat => {
                        let arguments;
                        let delta = match &self.tool {
                            None => {
                                let frame = self.chat_frame.get_or_init(|| ChatFrame::new(self));
                                let tag = &self.tags[choice as usize];
                                let mut out = Vec::new();
                                frame.write_token(choice, tag, seq, &mut out);
                                return Bytes::from(out);
                            }
                            Some((call_id, tool)) => {
                                arguments = fragment();
                                Delta {
                                    tool_calls: Some([ToolCallDelta {
                                        index: 0,
                                        id: (seq == 0).then_some(call_id.as_str()),
                                        kind: (seq == 0).then_some("function"),
                                        function: FunctionDelta {
                                            name: (seq == 0).then_some(tool.name.as_str()),
                                            arguments: &arguments,
                                        },
                                    }]),
                                    ..Delta::default()
                                }
                            }
                        };
                        self.chat_chunk(choice, delta, None)
                    }
                    Endpoint::Completions => self.text_chunk(choice, &fragment(), None),
                    Endpoint::Messages => {
                        let delta = match &self.tool {
                            None => json!({"type": "text_delta", "text": fragment()}),
                            Some(_) => {
                                json!({"type": "input_json_delta", "partial_json": fragment()})
                            }
                        };
                        let index = self.answer_block_index();
                        anthropic_event(
                            "content_block_delta",
                            json!({"index": index, "delta": delta}),
                        )
                    }
                    _ => {
                        let kind = if self.tool.is_some() {
                            "response.function_call_arguments.delta"
                        } else {
                            "response.output_text.delta"
                        };
                        self.event(
                            event_seq,
                            kind,
                            json!({"item_id": self.item_id, "output_index": 0, "content_index": 0,
                                   "delta": fragment(), "logprobs": []}),
                        )
                    }
                }
            })
            .collect()
    }

    /// Frames that end a complete stream, after the last content chunk.
    /// What ends a stream the server interrupted: a bare `[DONE]` for chat and completions (no
    /// finish chunk, no usage), nothing for the Responses API (no `response.completed`).
    /// Anthropic's Messages API ends it with its mid-stream `error` event (`overloaded_error`).
    pub(crate) fn interrupted_end(&self) -> Option<Bytes> {
        match self.endpoint {
            Endpoint::Chat | Endpoint::Completions => Some(Bytes::from_static(DONE)),
            Endpoint::Messages => Some(anthropic_event(
                "error",
                json!({"error": {"type": "overloaded_error", "message": "Overloaded"}}),
            )),
            _ => None,
        }
    }

    pub(crate) fn finish(&self, seq: &mut u32) -> Vec<Bytes> {
        let choices = 0..self.tags.len() as u32;
        let mut frames: Vec<Bytes> = match self.endpoint {
            Endpoint::Chat => choices
                .map(|c| self.framed_chat_chunk(c, &Delta::default(), Some(self.finish_reason)))
                .collect(),
            Endpoint::Completions => choices
                .map(|c| self.text_chunk(c, "", Some(self.finish_reason)))
                .collect(),
            Endpoint::Messages => return self.messages_finish(),
            _ => return self.responses_finish(seq),
        };
        if self.include_usage {
            let object = match self.endpoint {
                Endpoint::Chat => "chat.completion.chunk",
                _ => "text_completion",
            };
            frames.push(self.usage_chunk(object));
        }
        frames.push(Bytes::from_static(DONE));
        frames
    }

    /// Anthropic's `stop_reason` for the answer's finish.
    fn stop_reason(&self) -> &'static str {
        match self.finish_reason {
            "tool_calls" => "tool_use",
            "length" => "max_tokens",
            _ => "end_turn",
        }
    }

    /// A Message object: its content blocks, `stop_reason` (`None` while it streams) and usage.
    fn message_json(
        &self,
        content: serde_json::Value,
        stop_reason: Option<&str>,
        output_tokens: u32,
    ) -> serde_json::Value {
        json!({
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": null,
            "usage": {"input_tokens": self.usage.prompt, "output_tokens": output_tokens,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        })
    }

    /// The answer's one content block, whole.
    fn message_block(&self) -> serde_json::Value {
        let text = self.full_text(0);
        match &self.tool {
            None => json!({"type": "text", "text": text}),
            Some((call_id, tool)) => {
                let input: serde_json::Value =
                    serde_json::from_str(&text).unwrap_or_else(|_| json!({}));
                json!({"type": "tool_use", "id": call_id, "name": tool.name, "input": input})
            }
        }
    }

    /// The answer's block as `content_block_start` opens it: empty text, or the tool call.
    fn open_block(&self) -> serde_json::Value {
        match &self.tool {
            None => json!({"type": "text", "text": ""}),
            Some((call_id, tool)) => {
                json!({"type": "tool_use", "id": call_id, "name": tool.name, "input": {}})
            }
        }
    }

    /// The index of the answer's text or tool block: after the thinking block when there is one.
    fn answer_block_index(&self) -> u32 {
        u32::from(self.thinking)
    }

    /// The thinking block's text: names the answer's tag, so it can be checked end to end.
    fn thinking_text(&self) -> String {
        format!("Thinking about {} before answering.", self.tags[0])
    }

    /// The thinking block's signature: opaque base64, as Anthropic's are, and the same in a
    /// stream and a whole answer, so a client can check it arrived byte for byte.
    fn signature(&self) -> String {
        let seed = format!("hourglass-sim/{}/{}/signature", self.id, self.tags[0]);
        base64_encode(seed.repeat(3).as_bytes())
    }

    /// The whole thinking block.
    fn thinking_block(&self) -> serde_json::Value {
        json!({"type": "thinking", "thinking": self.thinking_text(), "signature": self.signature()})
    }

    fn messages_finish(&self) -> Vec<Bytes> {
        vec![
            anthropic_event(
                "content_block_stop",
                json!({"index": self.answer_block_index()}),
            ),
            anthropic_event(
                "message_delta",
                json!({"delta": {"stop_reason": self.stop_reason(), "stop_sequence": null},
                       "usage": {"output_tokens": self.usage.completion}}),
            ),
            anthropic_event("message_stop", json!({})),
        ]
    }

    fn responses_finish(&self, seq: &mut u32) -> Vec<Bytes> {
        let text = self.full_text(0);
        let mut frames = Vec::with_capacity(4);
        if self.tool.is_some() {
            frames.push(self.event(
                seq,
                "response.function_call_arguments.done",
                json!({"item_id": self.item_id, "output_index": 0, "arguments": text}),
            ));
        } else {
            frames.push(self.event(
                seq,
                "response.output_text.done",
                json!({"item_id": self.item_id, "output_index": 0, "content_index": 0,
                       "text": text, "logprobs": []}),
            ));
            frames.push(self.event(
                seq,
                "response.content_part.done",
                json!({"item_id": self.item_id, "output_index": 0, "content_index": 0,
                       "part": {"type": "output_text", "text": text, "annotations": []}}),
            ));
        }
        frames.push(self.event(
            seq,
            "response.output_item.done",
            json!({"output_index": 0, "item": self.response_item("completed", true)}),
        ));
        frames.push(self.event(
            seq,
            "response.completed",
            json!({"response": self.response_json("completed", true)}),
        ));
        frames
    }

    fn event(&self, seq: &mut u32, kind: &str, mut value: serde_json::Value) -> Bytes {
        value["type"] = json!(kind);
        value["sequence_number"] = json!(*seq);
        *seq += 1;
        sse_event(kind, &value)
    }

    fn response_item(&self, status: &str, complete: bool) -> serde_json::Value {
        match &self.tool {
            Some((call_id, tool)) => json!({
                "type": "function_call", "id": self.item_id, "call_id": call_id,
                "name": tool.name, "arguments": if complete { self.full_text(0) } else { String::new() },
                "status": status,
            }),
            None => {
                let content = if complete {
                    json!([{"type": "output_text", "text": self.full_text(0), "annotations": []}])
                } else {
                    json!([])
                };
                json!({"type": "message", "id": self.item_id, "status": status,
                       "role": "assistant", "content": content})
            }
        }
    }

    fn response_json(&self, status: &str, complete: bool) -> serde_json::Value {
        let output = if complete {
            json!([self.response_item("completed", true)])
        } else {
            json!([])
        };
        let usage = complete.then(|| {
            json!({
                "input_tokens": self.usage.prompt,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.usage.completion,
                "output_tokens_details": {"reasoning_tokens": self.usage.reasoning},
                "total_tokens": self.usage.prompt + self.usage.completion,
            })
        });
        json!({
            "id": self.id, "object": "response", "created_at": self.created, "status": status,
            "error": null, "incomplete_details": null, "instructions": null,
            "max_output_tokens": null, "model": self.model, "output": output,
            "parallel_tool_calls": true, "previous_response_id": null,
            "reasoning": {"effort": null, "summary": null}, "store": false,
            "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
            "tools": [], "top_p": 1.0, "truncation": "disabled", "usage": usage,
            "metadata": {},
        })
    }

    /// The whole answer as one JSON body (a non-streaming response).
    pub(crate) fn whole(&self) -> Bytes {
        let choices = 0..self.tags.len() as u32;
        let texts: Vec<String> = choices.clone().map(|c| self.full_text(c)).collect();
        let body = match self.endpoint {
            Endpoint::Chat => {
                let choices: Vec<_> = choices
                    .map(|c| {
                        let text = texts[c as usize].as_str();
                        let message = match &self.tool {
                            None => Message {
                                content: Some(text),
                                ..Message::default()
                            },
                            Some((call_id, tool)) => Message {
                                tool_calls: Some([ToolCall {
                                    id: call_id,
                                    kind: "function",
                                    function: FunctionCall {
                                        name: &tool.name,
                                        arguments: text,
                                    },
                                }]),
                                ..Message::default()
                            },
                        };
                        WholeChoice {
                            index: c,
                            message,
                            logprobs: None,
                            finish_reason: self.finish_reason,
                        }
                    })
                    .collect();
                self.whole_json("chat.completion", choices)
            }
            Endpoint::Completions => {
                let choices: Vec<_> = choices
                    .map(|c| TextChoice {
                        text: &texts[c as usize],
                        index: c,
                        logprobs: None,
                        finish_reason: Some(self.finish_reason),
                    })
                    .collect();
                self.whole_json("text_completion", choices)
            }
            Endpoint::Messages => serde_json::to_vec(&self.message_json(
                if self.thinking {
                    json!([self.thinking_block(), self.message_block()])
                } else {
                    json!([self.message_block()])
                },
                Some(self.stop_reason()),
                self.usage.completion,
            )),
            _ => serde_json::to_vec(&self.response_json("completed", true)),
        };
        Bytes::from(body.expect("serializing plain structs cannot fail"))
    }

    fn whole_json<C: Serialize>(
        &self,
        object: &'static str,
        choices: C,
    ) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&ChatChunk {
            id: &self.id,
            object,
            created: self.created,
            model: &self.model,
            system_fingerprint: "fp_hourglass_sim",
            choices,
            usage: Some(Some(self.usage.json())),
        })
    }
}

#[derive(Serialize)]
struct WholeChoice<'a> {
    index: u32,
    message: Message<'a>,
    logprobs: Option<()>,
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: Option<()>,
    annotations: [(); 0],
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCall<'a>; 1]>,
}

impl Default for Message<'_> {
    fn default() -> Self {
        Message {
            role: "assistant",
            content: None,
            refusal: None,
            annotations: [],
            tool_calls: None,
        }
    }
}

#[derive(Serialize)]
struct ToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionCall<'a>,
}

#[derive(Serialize)]
struct FunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// An embeddings response: one deterministic unit vector per input.
pub(crate) fn embeddings(
    model: &str,
    inputs: &[String],
    dimensions: u32,
    base64: bool,
    prompt_tokens: u32,
) -> Bytes {
    let data: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = unit_vector(input, dimensions);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                json!(base64_encode(&bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let value = json!({"object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}});
    Bytes::from(serde_json::to_vec(&value).expect("serializing a json value cannot fail"))
}

/// The same input always embeds to the same vector, whatever the seed.
fn unit_vector(input: &str, dimensions: u32) -> Vec<f32> {
    let hash = input.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut rng = fastrand::Rng::with_seed(hash);
    let mut vector: Vec<f32> = (0..dimensions).map(|_| rng.f32() * 2.0 - 1.0).collect();
    let norm = vector
        .iter()
        .map(|v| v * v)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    vector.iter_mut().for_each(|v| *v /= norm);
    vector
}

/// A 1×1 PNG, the picture every simulated image generation returns.
pub(crate) const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x04, 0x00, 0x00, 0x00, 0xb5, 0x1c, 0x0c,
    0x02, 0x00, 0x00, 0x00, 0x0b, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0x64, 0x60, 0x00, 0x00,
    0x00, 0x06, 0x00, 0x02, 0x30, 0x81, 0xd0, 0x2f, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44,
    0xae, 0x42, 0x60, 0x82,
];

/// An images response of `n` pictures, as base64 data or as URLs served by the simulator.
pub(crate) fn images(n: u32, b64_json: bool, base_url: &str, created: u64) -> Bytes {
    let data: Vec<_> = (0..n)
        .map(|_| {
            if b64_json {
                json!({"b64_json": base64_encode(PNG), "revised_prompt": null})
            } else {
                json!({"url": format!("{base_url}/sim/image.png"), "revised_prompt": null})
            }
        })
        .collect();
    let value = json!({"created": created, "data": data});
    Bytes::from(serde_json::to_vec(&value).expect("serializing a json value cannot fail"))
}

/// The model list of `GET /v1/models`.
pub(crate) fn models<'a>(names: impl Iterator<Item = &'a str>) -> Bytes {
    let data: Vec<_> = names
        .map(|id| {
            json!({"id": id, "object": "model", "created": 1_700_000_000u64,
                         "owned_by": "hourglass-sim"})
        })
        .collect();
    Bytes::from(
        serde_json::to_vec(&json!({"object": "list", "data": data}))
            .expect("serializing a json value cannot fail"),
    )
}

/// An Anthropic event: `event: kind` with `{"type": kind, …}`.
fn anthropic_event(kind: &str, mut value: serde_json::Value) -> Bytes {
    value["type"] = json!(kind);
    sse_event(kind, &value)
}

/// Anthropic's error shape: `{"type": "error", "error": {"type", "message"}}`, its `type` from
/// the status as Anthropic's API sets it (529 `overloaded_error`, 429 `rate_limit_error`, …).
pub(crate) fn anthropic_error(status: u16, message: &str) -> Bytes {
    let kind = match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 | 503 => "overloaded_error",
        _ => "api_error",
    };
    let value = json!({"type": "error", "error": {"type": kind, "message": message}});
    Bytes::from(serde_json::to_vec(&value).expect("serializing a json value cannot fail"))
}

/// OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}`.
pub(crate) fn error(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Bytes {
    let value = json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    Bytes::from(serde_json::to_vec(&value).expect("serializing a json value cannot fail"))
}

/// OpenAI's error `type` and `code` for a status, and the reason phrase.
pub(crate) fn error_kind(status: u16) -> (&'static str, Option<&'static str>) {
    match status {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        403 => ("permission_error", None),
        404 => ("invalid_request_error", Some("not_found")),
        408 => ("timeout", Some("request_timeout")),
        429 => ("requests", Some("rate_limit_exceeded")),
        400..=499 => ("invalid_request_error", None),
        _ => ("server_error", None),
    }
}

/// An HTML error page like those of nginx and CDNs in front of an API.
pub(crate) fn html_page(status: u16, reason: &str) -> Bytes {
    Bytes::from(format!(
        "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n<center><h1>{status} \
         {reason}</h1></center>\r\n<hr><center>hourglass-sim</center>\r\n</body>\r\n</html>\r\n"
    ))
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648), as OpenAI encodes embeddings and images.
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn embeddings_are_unit_length_and_stable_per_input() {
        let a = unit_vector("hello", 64);
        assert_eq!(a, unit_vector("hello", 64));
        assert_ne!(a, unit_vector("world", 64));
        let norm: f32 = a.iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }

    fn chat_answer(id: &str, model: &str, include_usage: bool) -> Answer {
        Answer {
            endpoint: Endpoint::Chat,
            id: id.to_owned(),
            created: 1_700_000_123,
            model: model.to_owned(),
            tags: vec!["t0".into(), "t1".into()],
            tokens: 3,
            finish_reason: "stop",
            tool: None,
            include_usage,
            usage: Usage {
                prompt: 1,
                completion: 3,
                reasoning: 0,
            },
            item_id: "msg_sim0".into(),
            thinking: false,
            chat_frame: std::sync::OnceLock::new(),
        }
    }

    #[test]
    fn a_chunk_from_the_rendered_frame_is_the_chunk_serde_writes() {
        for (id, model, usage) in [
            ("chatcmpl-sim0123456789abcdef", "sim-instant", false),
            ("chatcmpl-sim0123456789abcdef", "gpt-4o-mini", true),
            ("id \"quoted\" \\ \u{1}", "model/\u{e9}\n", true),
        ] {
            let answer = chat_answer(id, model, usage);
            let same = |framed: &[u8], by_serde: &[u8], what: &str| {
                assert_eq!(
                    String::from_utf8_lossy(framed),
                    String::from_utf8_lossy(by_serde),
                    "{what}, usage {usage}"
                );
            };
            for choice in [0, 1, 12] {
                let frame = answer.chat_frame.get_or_init(|| ChatFrame::new(&answer));
                for text in ["t0:0 ", "", "a \"b\" \\ \n \u{7f} \u{1f600}"] {
                    let delta = Delta {
                        content: Some(text),
                        ..Delta::default()
                    };
                    let mut framed = Vec::new();
                    frame.write_chunk(choice, &delta, None, &mut framed);
                    let by_serde = answer.chat_chunk(choice, delta, None);
                    same(
                        &framed,
                        &by_serde,
                        &format!("choice {choice}, text {text:?}"),
                    );
                }
                for (tag, seq) in [
                    ("t0", 0),
                    ("k3xq", 7),
                    ("abcd", 1_000_000),
                    ("t1", u32::MAX),
                ] {
                    let text = content::token(tag, seq);
                    let by_serde = answer.chat_chunk(
                        choice,
                        Delta {
                            content: Some(&text),
                            ..Delta::default()
                        },
                        None,
                    );
                    let mut framed = Vec::new();
                    frame.write_token(choice, tag, seq, &mut framed);
                    same(
                        &framed,
                        &by_serde,
                        &format!("choice {choice}, token {text:?}"),
                    );
                }
                let role = Delta {
                    role: Some("assistant"),
                    content: Some(""),
                    tool_calls: None,
                };
                let by_serde = answer.chat_chunk(choice, role, None);
                let role = Delta {
                    role: Some("assistant"),
                    content: Some(""),
                    tool_calls: None,
                };
                same(
                    &answer.framed_chat_chunk(choice, &role, None),
                    &by_serde,
                    "role",
                );
                for reason in ["stop", "length", "tool_calls"] {
                    let by_serde = answer.chat_chunk(choice, Delta::default(), Some(reason));
                    let framed = answer.framed_chat_chunk(choice, &Delta::default(), Some(reason));
                    same(&framed, &by_serde, reason);
                }
            }
        }
    }

    /// An answer's content chunks written in place are the frames rendered one by one.
    #[test]
    fn content_written_in_place_is_the_content_frames() {
        let answer = chat_answer("chatcmpl-sim0", "sim-instant", true);
        for seq in [0, 1, 2, 9, 10, 123] {
            let (mut at, mut in_place) = (0, Vec::new());
            answer.content_into(seq, &mut at, &mut in_place);
            let frames = answer.content(seq, &mut 0).concat();
            assert_eq!(in_place, frames, "token {seq}");
            assert!(in_place.ends_with(b"\n\n"));
            let text = String::from_utf8(frames).unwrap();
            assert_eq!(text.matches("data: ").count(), 2, "one chunk per choice");
        }
    }

    #[test]
    fn malformed_keeps_framing_and_breaks_json() {
        let frame = Bytes::from_static(b"data: {\"a\":1,\"b\":2}\n\n");
        let broken = malformed(&frame);
        assert!(broken.starts_with(b"data: {") && broken.ends_with(b"\n\n"));
        let json = &broken[6..broken.len() - 2];
        assert!(serde_json::from_slice::<serde_json::Value>(json).is_err());
    }
}
