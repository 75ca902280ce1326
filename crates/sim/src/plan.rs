//! One response decided in advance: request + model + faults + seeded randomness become a timed
//! script — how long before the headers, then a sequence of waits, data frames and perhaps a cut.
//!
//! Streams are scripted lazily (a reasoning model's thousands of tokens are rendered one at a
//! time as they fall due), so ten thousand slow streams cost little memory.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;

use crate::content;
use crate::fault::FaultSet;
use crate::model::{Draw, ModelProfile};
use crate::render::{self, Answer, Usage};
use crate::request::{Endpoint, Parsed};

/// Upper bound on output tokens per choice, whatever a latency model draws.
const MAX_OUTPUT_TOKENS: u32 = 100_000;

/// One step of a response body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    /// Send nothing for this long.
    Wait(Duration),
    /// Send these bytes.
    Data(Bytes),
    /// Close the connection abruptly: the body ends incomplete.
    Cut,
}

/// The steps of a body: fixed in advance, or rendered as a stream plays.
pub(crate) enum Steps {
    /// A short, fully known body (non-streaming answers and errors).
    Fixed(VecDeque<Step>),
    /// A stream rendered step by step.
    Stream(Box<StreamScript>),
}

/// A response decided in advance.
pub(crate) struct Plan {
    /// Delay before the response headers for generating the answer (a `delay_headers` fault is
    /// served before planning and comes on top).
    pub head_delay: Duration,
    /// `text/event-stream` or `application/json`.
    pub streaming: bool,
    /// Declared body length for non-streaming bodies (kept whole even when the body is cut).
    pub content_length: Option<u64>,
    /// The body.
    pub body: Steps,
}

/// The lazily rendered script of a stream.
pub(crate) struct StreamScript {
    answer: Answer,
    rng: fastrand::Rng,
    draw: Draw,
    slow_gap: Option<Duration>,
    keepalive: Option<Duration>,
    stall: Option<(u32, Duration)>,
    cut: Option<u32>,
    interrupt: Option<u32>,
    malformed: Option<u32>,
    next_token: u32,
    event_seq: u32,
    stage: Stage,
    queue: VecDeque<Step>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Preamble,
    /// Waiting for the first token, this long still to go (sent in keep-alive slices).
    FirstToken(Duration),
    Tokens,
    Finish,
    Done,
}

/// Inputs to planning that come from the server rather than the request.
pub(crate) struct Context<'a> {
    pub endpoint: Endpoint,
    pub model: &'a ModelProfile,
    pub time_scale: f64,
    /// Seed of this response: fixes ids, tags, latency draws.
    pub seed: u64,
    pub prompt_tokens: u32,
    /// `http://host:port`, for image URLs.
    pub base_url: &'a str,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Decides the response to a valid request.
pub(crate) fn plan(request: &Parsed, faults: &FaultSet, ctx: &Context<'_>) -> Plan {
    let mut rng = fastrand::Rng::with_seed(ctx.seed);
    let mut draw = ctx.model.latency.draw(&mut rng, ctx.time_scale);
    if let Some((after, _)) = faults.first_token {
        draw.first_token = after;
    }
    let created = now_unix();

    match ctx.endpoint {
        Endpoint::Embeddings | Endpoint::Images => {
            let body = if ctx.endpoint == Endpoint::Embeddings {
                let dimensions = request.dimensions.unwrap_or(ctx.model.dimensions);
                render::embeddings(
                    &request.model,
                    &request.inputs,
                    dimensions,
                    request.base64,
                    ctx.prompt_tokens,
                )
            } else {
                render::images(request.n, request.b64_json, ctx.base_url, created)
            };
            whole(draw.first_token, body, faults)
        }
        Endpoint::Chat | Endpoint::Completions | Endpoint::Responses | Endpoint::Messages => {
            let answer = answer(request, ctx, &mut rng, &draw, created);
            let slow_gap = faults
                .slow
                .map(|rate| Duration::from_secs_f64((1.0 / rate).min(86_400.0)));
            if request.stream {
                let script = StreamScript {
                    answer,
                    rng,
                    draw,
                    slow_gap,
                    keepalive: faults.first_token.and_then(|(_, keepalive)| keepalive),
                    stall: faults.stall,
                    cut: faults.cut,
                    interrupt: faults.interrupt,
                    malformed: faults.malformed,
                    next_token: 0,
                    event_seq: 0,
                    stage: Stage::Preamble,
                    queue: VecDeque::new(),
                };
                Plan {
                    head_delay: Duration::ZERO,
                    streaming: true,
                    content_length: None,
                    body: Steps::Stream(Box::new(script)),
                }
            } else {
                let mut generation = draw.first_token;
                for _ in 1..answer.tokens {
                    generation += slow_gap.unwrap_or_else(|| draw.gap(&mut rng));
                }
                whole(generation, answer.whole(), faults)
            }
        }
    }
}

fn answer(
    request: &Parsed,
    ctx: &Context<'_>,
    rng: &mut fastrand::Rng,
    draw: &Draw,
    created: u64,
) -> Answer {
    let drawn = draw.output_tokens.min(MAX_OUTPUT_TOKENS);
    let tokens = request
        .max_tokens
        .map_or(drawn, |max| drawn.min(max))
        .max(1);
    let finish_reason = if request.tool.is_some() {
        "tool_calls"
    } else if tokens < drawn {
        "length"
    } else {
        "stop"
    };
    let choices = if matches!(ctx.endpoint, Endpoint::Responses | Endpoint::Messages) {
        1
    } else {
        request.n
    };
    let hex = |rng: &mut fastrand::Rng| format!("{:016x}", rng.u64(..));
    let id = match ctx.endpoint {
        Endpoint::Chat => format!("chatcmpl-sim{}", hex(rng)),
        Endpoint::Completions => format!("cmpl-sim{}", hex(rng)),
        Endpoint::Messages => format!("msg_sim{}", hex(rng)),
        _ => format!("resp_sim{}", hex(rng)),
    };
    let item_id = if request.tool.is_some() {
        format!("fc_sim{}", hex(rng))
    } else {
        format!("msg_sim{}", hex(rng))
    };
    let call_prefix = if ctx.endpoint == Endpoint::Messages {
        "toolu_sim"
    } else {
        "call_sim"
    };
    let tool = request
        .tool
        .clone()
        .map(|tool| (format!("{call_prefix}{}", hex(rng)), tool));
    let reasoning = if ctx.model.kind == crate::ModelKind::Reasoning {
        let thinking = draw.first_token.as_secs_f64() / ctx.time_scale;
        (thinking * ctx.model.latency.tokens_per_s).round() as u32
    } else {
        0
    };
    Answer {
        endpoint: ctx.endpoint,
        id,
        created,
        model: request.model.clone(),
        tags: (0..choices).map(|c| content::tag(ctx.seed, c)).collect(),
        tokens,
        finish_reason,
        tool,
        include_usage: request.include_usage,
        usage: Usage {
            prompt: ctx.prompt_tokens,
            completion: (tokens + reasoning) * choices,
            reasoning,
        },
        item_id,
        thinking: request.thinking,
        chat_frame: std::sync::OnceLock::new(),
    }
}

/// A whole (non-streaming) body after `head_delay`, shaped by the body faults: `malformed` sends
/// broken JSON, `stall` pauses after half the body, `cut` closes after half of it.
fn whole(head_delay: Duration, body: Bytes, faults: &FaultSet) -> Plan {
    let declared = body.len() as u64;
    let half = body.len() / 2;
    let steps: VecDeque<Step> = if faults.malformed.is_some() {
        let broken = body.slice(..half);
        return Plan {
            head_delay,
            streaming: false,
            content_length: Some(broken.len() as u64),
            body: Steps::Fixed(VecDeque::from([Step::Data(broken)])),
        };
    } else if faults.cut.is_some() {
        VecDeque::from([Step::Data(body.slice(..half)), Step::Cut])
    } else if let Some((_, stall)) = faults.stall {
        VecDeque::from([
            Step::Data(body.slice(..half)),
            Step::Wait(stall),
            Step::Data(body.slice(half..)),
        ])
    } else {
        VecDeque::from([Step::Data(body)])
    };
    Plan {
        head_delay,
        streaming: false,
        content_length: Some(declared),
        body: Steps::Fixed(steps),
    }
}

impl StreamScript {
    /// The next step of the stream, or `None` when it has ended.
    pub(crate) fn next_step(&mut self) -> Option<Step> {
        loop {
            if let Some(step) = self.queue.pop_front() {
                return Some(step);
            }
            match self.stage {
                Stage::Preamble => {
                    let frames = self.answer.preamble(&mut self.event_seq);
                    self.queue.extend(frames.into_iter().map(Step::Data));
                    self.stage = Stage::FirstToken(self.draw.first_token);
                }
                Stage::FirstToken(remaining) => self.wait_first_token(remaining),
                Stage::Tokens => self.script_token(),
                Stage::Finish => {
                    let mut frames = self.answer.finish(&mut self.event_seq);
                    if self
                        .malformed
                        .is_some_and(|after| after >= self.answer.tokens)
                    {
                        frames[0] = render::malformed(&frames[0]);
                    }
                    self.queue.extend(frames.into_iter().map(Step::Data));
                    self.stage = Stage::Done;
                }
                Stage::Done => return None,
            }
        }
    }

    /// Queues the waits and frames of the next content chunks, or of the end of the content.
    /// Chunks that fall due together (no wait between them, as with an instant model) are
    /// written into one frame, up to [`MAX_BURST`] bytes: rendering and queueing each on its own
    /// was most of the simulator's cost of a stream.
    fn script_token(&mut self) {
        let mut burst = Vec::new();
        loop {
            let seq = self.next_token;
            let tokens = self.answer.tokens;
            let at_end = seq == tokens;
            let due = |after: u32| {
                if at_end {
                    after >= tokens
                } else {
                    after == seq
                }
            };
            let mut waited = false;
            let mut wait = |queue: &mut VecDeque<Step>, burst: &mut Vec<u8>, wait: Duration| {
                if !wait.is_zero() {
                    flush(queue, burst);
                    queue.push_back(Step::Wait(wait));
                    waited = true;
                }
            };
            if !at_end && seq > 0 {
                let gap = self
                    .slow_gap
                    .unwrap_or_else(|| self.draw.gap(&mut self.rng));
                wait(&mut self.queue, &mut burst, gap);
            }
            if let Some((_, stall)) = self.stall.filter(|(after, _)| due(*after)) {
                wait(&mut self.queue, &mut burst, stall);
            }
            if self.cut.is_some_and(due) {
                flush(&mut self.queue, &mut burst);
                self.queue.push_back(Step::Cut);
                self.stage = Stage::Done;
                return;
            }
            if self.interrupt.is_some_and(due) {
                // A clean end without the finish chunk: `[DONE]` where the API has one.
                if let Some(done) = self.answer.interrupted_end() {
                    burst.extend_from_slice(&done);
                }
                flush(&mut self.queue, &mut burst);
                self.stage = Stage::Done;
                return;
            }
            if at_end {
                flush(&mut self.queue, &mut burst);
                self.stage = Stage::Finish;
                return;
            }
            if self.malformed == Some(seq) {
                let mut frames = self.answer.content(seq, &mut self.event_seq);
                frames[0] = render::malformed(&frames[0]);
                for frame in frames {
                    burst.extend_from_slice(&frame);
                }
            } else {
                self.answer
                    .content_into(seq, &mut self.event_seq, &mut burst);
            }
            self.next_token += 1;
            // After a wait the next chunks are due later: queue what is due now.
            if waited || burst.len() >= MAX_BURST {
                flush(&mut self.queue, &mut burst);
                return;
            }
        }
    }

    /// The wait before the first content token, one keep-alive interval at a time (so a long
    /// wait with short intervals never queues more than one comment).
    fn wait_first_token(&mut self, remaining: Duration) {
        match self.keepalive {
            Some(interval) if remaining > interval => {
                self.queue.push_back(Step::Wait(interval));
                self.queue.push_back(Step::Data(self.answer.keepalive()));
                self.stage = Stage::FirstToken(remaining - interval);
            }
            _ => {
                self.queue.push_back(Step::Wait(remaining));
                self.stage = Stage::Tokens;
            }
        }
    }
}

/// Largest frame of chunks that fall due together.
const MAX_BURST: usize = 32 * 1024;

/// Queues the chunks written into `burst` as one frame, if there are any.
fn flush(queue: &mut VecDeque<Step>, burst: &mut Vec<u8>) {
    if !burst.is_empty() {
        queue.push_back(Step::Data(Bytes::from(std::mem::take(burst))));
    }
}

#[cfg(test)]
mod tests;
