//! After the commit point: a task pumps the rest of an upstream stream to the client, watching
//! `idle` (reset only by meaningful content) and `total`. Nothing is retried here. A stall, a cut
//! or a broken chunk ends the client's stream with an OpenAI-shaped SSE error event — never a
//! clean close, never a fake `[DONE]`. A stream read to its end returns its connection to the pool.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::Engine;
use crate::attempt::Target;
use crate::deadlines::AttemptDeadlines;
use crate::describe::Describer;
use crate::error::{self, CallError, FailureKind};
use crate::stream::content::{self, Endpoint, Signal};
use crate::stream::sse::Scanner;
use crate::upstream::Connection;

/// Chunks buffered between the pump and a slow client.
const BUFFERED_CHUNKS: usize = 32;

/// A committed stream and everything the pump needs.
pub(crate) struct Stream {
    pub engine: Arc<Engine>,
    pub connection: Connection,
    pub body: Incoming,
    pub scanner: Scanner,
    /// Bytes read before the commit point, sent first.
    pub held: Vec<Bytes>,
    pub deadlines: AttemptDeadlines,
    pub endpoint: Endpoint,
    /// Whether the end of the stream (`[DONE]`) was already seen.
    pub ended: bool,
    pub upstream: Target,
    pub describer: Describer,
}

/// Starts the pump; the receiver yields the client's chunks.
pub(crate) fn spawn(stream: Stream) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(BUFFERED_CHUNKS);
    tokio::spawn(pump(stream, tx));
    rx
}

async fn pump(mut s: Stream, tx: mpsc::Sender<Bytes>) {
    let mut first = BytesMut::new();
    for chunk in s.held.drain(..) {
        first.extend_from_slice(&chunk);
    }
    if !first.is_empty() && tx.send(first.freeze()).await.is_err() {
        return;
    }
    let mut last_content = Instant::now();
    loop {
        let idle = s.deadlines.idle_committed(last_content);
        let frame = tokio::select! {
            frame = s.body.frame() => frame,
            _ = sleep_until(idle.at) => {
                fail(&s, &tx, FailureKind::Timeout(idle.limit)).await;
                return;
            }
        };
        let data = match frame {
            None if s.ended => {
                s.engine.upstreams.release(s.connection);
                return;
            }
            None => return fail(&s, &tx, FailureKind::Cut).await,
            Some(Err(_)) if s.ended => return,
            Some(Err(_)) => return fail(&s, &tx, FailureKind::Cut).await,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
        };
        let events = match s.scanner.push(&data) {
            Ok(events) => events,
            Err(message) => return fail(&s, &tx, FailureKind::Malformed(message)).await,
        };
        for event in &events {
            match content::classify(s.endpoint, event) {
                Signal::Content => last_content = Instant::now(),
                Signal::End => s.ended = true,
                // The upstream's own error event goes on to the client as it is.
                Signal::Nothing | Signal::UpstreamError(_) => {}
                Signal::Malformed(message) => {
                    return fail(&s, &tx, FailureKind::Malformed(message)).await;
                }
            }
        }
        if tx.send(data).await.is_err() {
            // The client went away; dropping the body closes the upstream connection.
            return;
        }
    }
}

/// Ends the client's stream with an SSE error event in OpenAI's shape.
async fn fail(s: &Stream, tx: &mpsc::Sender<Bytes>, kind: FailureKind) {
    let code = kind.code();
    tracing::debug!(upstream = %s.upstream.name, code, "stream failed after commit");
    let error = CallError {
        code,
        status: error::status_of(&kind),
        message: format!(
            "{}; after the response had begun, so it was not retried",
            s.describer.describe(&kind, &s.upstream.name)
        ),
        diagnosis: error::diagnosis(code),
        trail: Vec::new(),
        elapsed: s.deadlines.start.elapsed(),
        retry_after: None,
        upstream_error: None,
    };
    let mut event = b"data: ".to_vec();
    event.extend_from_slice(&error.to_bytes());
    event.extend_from_slice(b"\n\n");
    let _ = tx.send(Bytes::from(event)).await;
}
