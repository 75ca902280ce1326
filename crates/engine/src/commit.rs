//! After the commit point: the rest of an upstream stream, pumped to the client by the client
//! connection's own task (a `Body` polled by hyper — no extra task, no channel), watching `idle`
//! (moved only by meaningful content) and `total`. Nothing is retried here. A stall, a cut or a
//! broken chunk ends the client's stream with an OpenAI-shaped SSE error event — never a clean
//! close, never a fake `[DONE]`. A stream read to its end returns its connection to the pool.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::Engine;
use crate::attempt::Target;
use crate::deadlines::AttemptDeadlines;
use crate::describe::Describer;
use crate::error::{self, CallError, FailureKind};
use crate::health::Lease;
use crate::stream::content::{self, Endpoint, Signal};
use crate::stream::sse::Scanner;
use crate::upstream::Connection;

/// The body of a committed stream.
pub struct CommittedStream {
    engine: Arc<Engine>,
    /// The connection, returned to the pool once the stream ends cleanly.
    connection: Option<Connection>,
    body: Incoming,
    scanner: Scanner,
    /// Bytes read before the commit point, sent first.
    held: Option<Bytes>,
    deadlines: AttemptDeadlines,
    endpoint: Endpoint,
    /// The end of the stream (`[DONE]`) was seen.
    ended: bool,
    /// A choice's `finish_reason` was seen (or the endpoint needs none): a `[DONE]` before it
    /// means the server interrupted the answer.
    finish_seen: bool,
    /// A failure found in a frame whose earlier part was passed on first.
    pending: Option<FailureKind>,
    upstream: Target,
    describer: Describer,
    last_content: Instant,
    /// Fires at `idle` (or `total`) after `last_content`; re-armed lazily when content came since.
    watchdog: Pin<Box<Sleep>>,
    finished: bool,
    /// The upstream's health verdict, given when the stream ends (dropped unfinished when the
    /// client leaves: no verdict).
    lease: Option<Lease>,
    /// Content events since the commit point, and when it was: a stream that drips below the
    /// breaker's tokens-per-second floor counts against the upstream.
    content_events: u32,
    committed: Instant,
    /// The model the client asked for, and the longest silence between content events.
    model: String,
    max_gap: std::time::Duration,
}

/// What the commit point hands over.
pub(crate) struct Handover {
    /// The model the client asked for (for observers).
    pub model: String,
    pub lease: Option<Lease>,
    pub engine: Arc<Engine>,
    pub connection: Connection,
    pub body: Incoming,
    pub scanner: Scanner,
    pub held: Vec<Bytes>,
    pub deadlines: AttemptDeadlines,
    pub endpoint: Endpoint,
    pub ended: bool,
    pub finish_seen: bool,
    pub upstream: Target,
    pub describer: Describer,
}

impl CommittedStream {
    pub(crate) fn new(h: Handover) -> CommittedStream {
        let held: Vec<u8> = h.held.iter().flat_map(|b| b.iter().copied()).collect();
        let now = Instant::now();
        CommittedStream {
            watchdog: Box::pin(tokio::time::sleep_until(h.deadlines.idle_committed(now).at)),
            engine: h.engine,
            connection: Some(h.connection),
            body: h.body,
            scanner: h.scanner,
            held: (!held.is_empty()).then(|| Bytes::from(held)),
            deadlines: h.deadlines,
            endpoint: h.endpoint,
            ended: h.ended,
            finish_seen: h.finish_seen,
            pending: None,
            upstream: h.upstream,
            describer: h.describer,
            last_content: now,
            finished: false,
            lease: h.lease,
            content_events: 0,
            committed: now,
            model: h.model,
            max_gap: std::time::Duration::ZERO,
        }
    }

    /// The SSE error event that ends the client's stream.
    fn fail(
        &mut self,
        kind: FailureKind,
    ) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        self.finished = true;
        if let Some(lease) = self.lease.take() {
            lease.finish(true);
        }
        let code = kind.code();
        self.observe(code);
        tracing::debug!(upstream = %self.upstream.name, code, "stream failed after commit");
        let error = CallError {
            code,
            status: error::status_of(&kind),
            message: format!(
                "{}; after the response had begun, so it was not retried",
                self.describer.describe(&kind, &self.upstream.name)
            ),
            diagnosis: error::diagnosis(code),
            trail: Vec::new(),
            elapsed: self.deadlines.start.elapsed(),
            retry_after: None,
            upstream_error: None,
        };
        Poll::Ready(Some(Ok(Frame::data(error.to_sse_event()))))
    }

    fn end(&mut self) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        self.finished = true;
        if let Some(lease) = self.lease.take() {
            lease.finish(self.too_slow());
        }
        self.observe("ok");
        if let Some(connection) = self.connection.take() {
            self.engine.upstreams.release(connection);
        }
        Poll::Ready(None)
    }
}

impl CommittedStream {
    /// Tells the engine's observer how the stream ended.
    fn observe(&self, outcome: &str) {
        if let Some(observer) = self.engine.observer() {
            let duration = self.committed.elapsed();
            let seconds = duration.as_secs_f64();
            observer.stream(&crate::events::StreamEvent {
                model: &self.model,
                upstream: &self.upstream.name,
                outcome,
                max_gap: (self.content_events > 0).then_some(self.max_gap),
                tokens_per_s: (self.content_events > 1 && seconds > 0.0)
                    .then(|| f64::from(self.content_events) / seconds),
                duration,
            });
        }
    }

    /// Whether the stream dripped below the breaker's floor (enough of it to judge).
    fn too_slow(&self) -> bool {
        let floor = self.engine.config().breaker.min_tokens_per_s;
        let seconds = self.committed.elapsed().as_secs_f64();
        floor > 0.0
            && self.content_events >= 16
            && seconds >= 2.0
            && f64::from(self.content_events) / seconds < floor
    }
}

/// Where the `[DONE]` event starts in `data`: the last `data: [DONE]` at the start of a line (a
/// JSON string cannot hold a raw line break, so content quoting it is never mistaken for it), or
/// 0 when the frame holds none.
fn done_event_start(data: &[u8]) -> usize {
    [&b"\ndata: [DONE]"[..], b"\ndata:[DONE]"]
        .iter()
        .filter_map(|marker| memchr::memmem::rfind(data, marker))
        .max()
        .map_or(0, |at| at + 1)
}

impl Body for CommittedStream {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        if let Some(held) = this.held.take() {
            return Poll::Ready(Some(Ok(Frame::data(held))));
        }
        if let Some(kind) = this.pending.take() {
            return this.fail(kind);
        }
        loop {
            // The upstream connection is driven here, by the client's task (see `upstream`).
            if let Some(connection) = this.connection.as_mut() {
                let _ = connection.poll_driver(cx);
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(None) if this.ended => return this.end(),
                Poll::Ready(None) => return this.fail(FailureKind::Cut),
                Poll::Ready(Some(Err(_))) if this.ended => return this.end(),
                Poll::Ready(Some(Err(_))) => return this.fail(FailureKind::Cut),
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let (mut content, mut ended, mut malformed) = (false, false, None);
                    let endpoint = this.endpoint;
                    let finish_seen = &mut this.finish_seen;
                    let scanned = this.scanner.push(&data, |event| {
                        match content::classify(endpoint, event) {
                            Signal::Content => content = true,
                            Signal::Finish { content: with } => {
                                content |= with;
                                *finish_seen = true;
                            }
                            Signal::End => ended = true,
                            // The upstream's own error event goes on to the client as it is.
                            Signal::Nothing | Signal::UpstreamError(_) => {}
                            Signal::Malformed(message) => {
                                malformed.get_or_insert(message);
                            }
                        }
                    });
                    if let Some(message) = scanned.err().or(malformed) {
                        return this.fail(FailureKind::Malformed(message));
                    }
                    if content {
                        let now = Instant::now();
                        this.max_gap = this.max_gap.max(now - this.last_content);
                        this.last_content = now;
                        this.content_events += 1;
                    }
                    if ended && !this.finish_seen {
                        // Interrupted: pass on what came before the `[DONE]`, then the error
                        // event in its place — never a clean end for a truncated answer.
                        let before = done_event_start(&data);
                        if before == 0 {
                            return this.fail(FailureKind::Truncated);
                        }
                        this.pending = Some(FailureKind::Truncated);
                        return Poll::Ready(Some(Ok(Frame::data(data.slice(..before)))));
                    }
                    this.ended |= ended;
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Pending => {}
            }
            // Nothing from upstream now: has the watchdog fired, and is it still due?
            if this.watchdog.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = this.deadlines.idle_committed(this.last_content);
            if due.at <= Instant::now() {
                return this.fail(FailureKind::Timeout(due.limit));
            }
            // Content came since it was armed: re-arm for the new deadline and poll again.
            this.watchdog.as_mut().reset(due.at);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }
}

impl Drop for CommittedStream {
    fn drop(&mut self) {
        if !self.finished {
            self.observe("client_gone");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::done_event_start;

    #[test]
    fn the_done_event_is_found_at_a_line_start_never_inside_content() {
        let quoted =
            b"data: {\"choices\":[{\"delta\":{\"content\":\"data: [DONE]\"}}]}\n\ndata: [DONE]\n\n";
        let at = done_event_start(quoted);
        assert_eq!(&quoted[at..], b"data: [DONE]\n\n");
        assert_eq!(
            done_event_start(b"data: [DONE]\n\n"),
            0,
            "at the frame's start"
        );
        assert_eq!(done_event_start(b"data: {}\n\ndata:[DONE]\n\n"), 10);
        assert_eq!(
            done_event_start(b"data: {\"a\":1}\n\n"),
            0,
            "none in this frame"
        );
    }
}
