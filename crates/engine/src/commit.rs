//! After the commit point: the committed [`Response`], and the rest of an upstream stream pumped
//! to the client by the client connection's own task (a `Body` polled by hyper — no extra task,
//! no channel), watching `idle` (moved only by meaningful content) and `total`. Nothing is retried
//! here. A stall, a cut or a broken chunk ends the client's stream with its protocol's error
//! event — never a clean close, never a fake end marker. A stream read to its end returns its
//! connection to the pool.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame};
use tokio::time::{Instant, Sleep};

use crate::call::{Shared, Target};
use crate::deadlines::AttemptDeadlines;
use crate::describe::Describer;
use crate::error::{AttemptRecord, CallError, FailureKind};
use crate::health::Lease;
use crate::observation::CallEnding;
use crate::protocol::{Classify, Endpoint, Protocol, Signal};
use crate::sse::Scanner;
use crate::upstream::{Timeline, UpstreamBody};
use crate::vocabulary::{ErrorCode, Outcome};

/// A successful call's response, committed to the client.
pub struct Response {
    /// The upstream's status.
    pub status: StatusCode,
    /// The upstream's headers (hop-by-hop ones removed) and `x-hourglass-attempts`,
    /// `x-hourglass-upstream` and `server-timing`.
    pub headers: HeaderMap,
    /// The body: whole, or a stream that ends with an error event if it fails after commit.
    pub body: ResponseBody,
    /// Every attempt made, the successful one last.
    pub trail: Vec<AttemptRecord>,
    /// The moments of the successful attempt (connected, written, headers, first token).
    pub timeline: Option<Timeline>,
}

/// The body of a committed response.
pub enum ResponseBody {
    /// A complete body.
    Full(Bytes),
    /// A committed stream, read on as the client reads it.
    Stream(Box<CommittedStream>),
}

/// The body of a committed stream.
pub struct CommittedStream {
    shared: Arc<Shared>,
    /// The upstream's body with its connection, returned to the pool once the stream ends
    /// cleanly.
    body: Option<UpstreamBody>,
    scanner: Scanner,
    /// Reads what each event means, carrying on from the reading before the commit point.
    classifier: Box<dyn Classify>,
    /// Bytes read before the commit point, sent first.
    held: Option<Bytes>,
    deadlines: AttemptDeadlines,
    endpoint: Endpoint,
    protocol: &'static dyn Protocol,
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
    lease: Option<Lease<'static>>,
    /// Content events since the commit point, and when it was: a stream that drips below the
    /// breaker's tokens-per-second floor counts against the upstream.
    content_events: u32,
    committed: Instant,
    /// The model the client asked for, and the longest silence between content events.
    model: String,
    max_gap: std::time::Duration,
    /// The call this stream answers: it ends when the stream does.
    ending: Option<CallEnding<'static>>,
    /// The number of the last event passed on, in a protocol that numbers them (an error event
    /// takes the next).
    last_sequence: Option<u64>,
    /// Whether the stream numbers its events.
    numbered: bool,
    /// How the stream failed after the commit point, once its error event was sent.
    failure: Option<(ErrorCode, StatusCode, String)>,
}

/// What the commit point hands over.
pub(crate) struct Handover {
    /// The model the client asked for (for observers).
    pub model: String,
    pub lease: Option<Lease<'static>>,
    pub shared: Arc<Shared>,
    pub body: UpstreamBody,
    pub scanner: Scanner,
    pub classifier: Box<dyn Classify>,
    pub held: Vec<Bytes>,
    pub deadlines: AttemptDeadlines,
    pub endpoint: Endpoint,
    pub ended: bool,
    pub finish_seen: bool,
    pub last_sequence: Option<u64>,
    pub upstream: Target,
    pub describer: Describer,
}

impl CommittedStream {
    pub(crate) fn new(h: Handover) -> CommittedStream {
        // The frames read before the commit point, as one (usually it is one: no copy).
        let held = match <[Bytes; 1]>::try_from(h.held) {
            Ok([one]) => one,
            Err(frames) => Bytes::from(frames.concat()),
        };
        let now = crate::clock::now();
        let protocol = h.endpoint.protocol();
        CommittedStream {
            watchdog: Box::pin(tokio::time::sleep_until(h.deadlines.idle_committed(now).at)),
            shared: h.shared,
            body: Some(h.body),
            scanner: h.scanner,
            classifier: h.classifier,
            held: (!held.is_empty()).then_some(held),
            deadlines: h.deadlines,
            endpoint: h.endpoint,
            protocol,
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
            ending: None,
            last_sequence: h.last_sequence,
            numbered: protocol.numbers_events(h.endpoint),
            failure: None,
        }
    }

    /// The call ends when this stream does (dropped unfinished: the client left).
    pub(crate) fn ends(&mut self, ending: CallEnding<'static>) {
        self.ending = Some(ending);
    }

    /// The SSE error event that ends the client's stream.
    fn fail(
        &mut self,
        kind: FailureKind,
    ) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        if let Some(lease) = self.lease.take() {
            lease.finish(true);
        }
        tracing::debug!(upstream = %self.upstream.name, code = %kind.code(), "stream failed after commit");
        let message = format!(
            "{}; after the response had begun, so it was not retried",
            self.describer.describe(&kind, &self.upstream.name)
        );
        let upstream_error = match &kind {
            FailureKind::Status { body, .. } => serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .map(|v| v.get("error").cloned().unwrap_or(v)),
            _ => None,
        };
        let event = self.end_with(kind.code(), kind.status(), message, upstream_error);
        Poll::Ready(Some(Ok(Frame::data(event))))
    }

    /// Ends the stream now because the gateway is stopping (`server.shutdown_grace` ran out):
    /// the protocol's error event with `gateway_shutdown`, numbered after the last event; no
    /// verdict on the upstream. `None` when the stream had ended already.
    pub fn stop(&mut self) -> Option<Bytes> {
        if self.finished {
            return None;
        }
        drop(self.lease.take());
        let message = "the gateway stopped before the answer ended (server.shutdown_grace ran out); retry the call";
        let status = StatusCode::SERVICE_UNAVAILABLE;
        Some(self.end_with(ErrorCode::GatewayShutdown, status, message.to_owned(), None))
    }

    /// The bytes read before the commit point and not yet passed on (the stream's opening
    /// events), for a caller that wants to look at them first.
    pub fn opening(&self) -> Option<&[u8]> {
        self.held.as_deref()
    }

    /// How the stream failed after the commit point (its code, the status a whole answer would
    /// have had, and the message of its error event); `None` while it has not, or when it ended
    /// complete. A reader that keeps the answer (a background job) records its end from this.
    pub fn failure(&self) -> Option<(ErrorCode, StatusCode, &str)> {
        let (code, status, message) = self.failure.as_ref()?;
        Some((*code, *status, message))
    }

    /// The error event that ends the stream with `code`: observed, and the call told.
    fn end_with(
        &mut self,
        code: ErrorCode,
        status: StatusCode,
        message: String,
        upstream_error: Option<serde_json::Value>,
    ) -> Bytes {
        self.finished = true;
        self.failure = Some((code, status, message.clone()));
        self.observe(Outcome::Failed(code));
        let trail = self.ending.as_ref().map(|e| e.trail.clone());
        let error = CallError {
            code,
            status,
            message,
            trail: trail.unwrap_or_default(),
            elapsed: crate::clock::since(self.deadlines.start),
            retry_after: None,
            upstream_error,
        };
        let sequence = self.last_sequence.map_or(0, |n| n + 1);
        let event = self.protocol.error_event(self.endpoint, &error, sequence);
        if let Some(ending) = self.ending.take() {
            ending.ended(Outcome::Failed(code), &error.message, None);
        }
        event
    }

    fn end(&mut self) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        self.finished = true;
        if let Some(lease) = self.lease.take() {
            lease.finish(self.too_slow());
        }
        self.observe(Outcome::Ok);
        if let Some(body) = self.body.take() {
            body.release();
        }
        if let Some(ending) = self.ending.take() {
            ending.ended(Outcome::Ok, "", None);
        }
        Poll::Ready(None)
    }
}

impl CommittedStream {
    /// Tells the engine's observer how the stream ended.
    fn observe(&self, outcome: Outcome) {
        if let Some(observer) = self.shared.observer() {
            let duration = crate::clock::since(self.committed);
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
        let floor = self.shared.config.breaker.min_tokens_per_s;
        let seconds = crate::clock::since(self.committed).as_secs_f64();
        floor > 0.0
            && self.content_events >= 16
            && seconds >= 2.0
            && f64::from(self.content_events) / seconds < floor
    }
}

impl CommittedStream {
    /// Passes a frame on to the client, after reading its events: content moves the watchdog;
    /// a malformed event, or an end marker before any finish reason, ends the stream with an
    /// error event instead (what came before the end marker still goes first).
    fn forward(
        &mut self,
        data: Bytes,
    ) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        let (mut content, mut malformed, mut upstream_error) = (false, None, None);
        // Where the end event starts and ends in `data`, once one came.
        let (mut end, mut last) = (None::<(usize, usize)>, 0);
        let (protocol, endpoint) = (self.protocol, self.endpoint);
        let (finish_seen, last_sequence) = (&mut self.finish_seen, &mut self.last_sequence);
        let numbered = self.numbered;
        let classifier = &mut self.classifier;
        let scanned = self.scanner.push_at(&data, |event, at| {
            if numbered && let Some(n) = protocol.sequence_number(endpoint, event) {
                *last_sequence = Some(n);
            }
            match classifier.classify(event) {
                Signal::Content => content = true,
                Signal::Finish { content: with } => {
                    content |= with;
                    *finish_seen = true;
                }
                Signal::End => {
                    end.get_or_insert((last, at));
                }
                Signal::Nothing => {}
                // The upstream's own error event: the stream ends with one error event, the
                // gateway's, which carries it (so a client never reads two).
                Signal::UpstreamError(message) => {
                    upstream_error.get_or_insert((last, message));
                }
                Signal::Malformed(message) => {
                    malformed.get_or_insert(message);
                }
            }
            last = at;
        });
        if let Some(message) = scanned.err().or(malformed) {
            return self.fail(FailureKind::Malformed(message));
        }
        if content {
            let now = crate::clock::now();
            self.max_gap = self.max_gap.max(now - self.last_content);
            self.last_content = now;
            self.content_events += 1;
        }
        if let Some((start, message)) = upstream_error {
            let failure = FailureKind::Status {
                status: 500,
                retry_after: None,
                body: Bytes::from(message),
            };
            if start == 0 {
                return self.fail(failure);
            }
            self.pending = Some(failure);
            return Poll::Ready(Some(Ok(Frame::data(data.slice(..start)))));
        }
        match end {
            // Interrupted: pass on what came before the end marker, then the error event in its
            // place — never a clean end for a truncated answer.
            Some((start, _)) if !self.finish_seen => {
                if start == 0 {
                    return self.fail(FailureKind::Truncated);
                }
                self.pending = Some(FailureKind::Truncated);
                Poll::Ready(Some(Ok(Frame::data(data.slice(..start)))))
            }
            // Complete: the stream ends with its end event; nothing after it goes on.
            Some((_, stop)) => {
                self.ended = true;
                Poll::Ready(Some(Ok(Frame::data(data.slice(..stop)))))
            }
            None => Poll::Ready(Some(Ok(Frame::data(data)))),
        }
    }

    /// After the end event: the upstream's own end is taken if it is already here (the
    /// connection then goes back to the pool), never waited for — an upstream that holds the
    /// connection open after its end marker does not hold the client's stream, and nothing it
    /// sends after the end marker goes on.
    fn close(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        let clean = self
            .body
            .as_mut()
            .is_some_and(|body| matches!(Pin::new(body).poll_frame(cx), Poll::Ready(None)));
        if !clean {
            self.body = None;
        }
        self.end()
    }
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
        if this.ended {
            return this.close(cx);
        }
        loop {
            // The body drives its own connection, on the client's task (see `upstream`).
            let Some(body) = this.body.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(body).poll_frame(cx) {
                Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                    return this.fail(FailureKind::Cut);
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return this.forward(data);
                    }
                    continue;
                }
                Poll::Pending => {}
            }
            // Nothing from upstream now: has the watchdog fired, and is it still due?
            if this.watchdog.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = this.deadlines.idle_committed(this.last_content);
            // A fresh reading, not the turn's: the timer fired, so this is never a reading from
            // before its deadline — and a loop re-armed at a passed deadline cannot spin.
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
            self.observe(Outcome::ClientGone);
        }
    }
}
