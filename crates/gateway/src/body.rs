//! The body of a gateway response: whole bytes, the chunks of a committed stream (ended with a
//! `gateway_shutdown` error event if the shutdown grace period runs out first), heartbeats
//! while a call runs, or a background job's events.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hourglass_engine::commit::CommittedStream;

use crate::stopping::StoppingSoon;
use http_body::{Body, Frame, SizeHint};

/// A response body.
pub enum GatewayBody {
    /// Whole bytes (taken when sent).
    Full(Option<Bytes>),
    /// A committed stream from the engine.
    Stream {
        /// The stream.
        stream: Box<CommittedStream>,
        /// The end of the shutdown grace period.
        stopping: StoppingSoon,
    },
    /// A call still running, with heartbeats while it waits.
    Heartbeat(Box<crate::heartbeat::HeartbeatBody>),
    /// A background job's events, as its follower reads them from the store.
    Events(tokio::sync::mpsc::Receiver<Bytes>),
    /// An answer under a client limit: it counts as running until it ends, and the tokens its
    /// usage reports are counted then.
    Counted {
        /// The answer.
        inner: Box<GatewayBody>,
        /// The call's place under the limits.
        permit: hourglass_cluster::limits::Permit,
    },
}

impl GatewayBody {
    /// A whole body.
    pub fn full(bytes: impl Into<Bytes>) -> GatewayBody {
        GatewayBody::Full(Some(bytes.into()))
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut *self {
            GatewayBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            GatewayBody::Stream { stream, stopping } => {
                if Pin::new(stopping).poll(cx).is_ready()
                    && let Some(event) = stream.stop()
                {
                    return Poll::Ready(Some(Ok(Frame::data(event))));
                }
                Pin::new(stream.as_mut()).poll_frame(cx)
            }
            GatewayBody::Heartbeat(body) => Pin::new(body.as_mut()).poll_frame(cx),
            GatewayBody::Events(events) => {
                events.poll_recv(cx).map(|e| e.map(|b| Ok(Frame::data(b))))
            }
            GatewayBody::Counted { inner, permit } => {
                let polled = Pin::new(inner.as_mut()).poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &polled
                    && let Some(data) = frame.data_ref()
                    && let Some(tokens) = hourglass_cluster::limits::total_tokens(data)
                {
                    permit.used(tokens);
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Counted { inner, .. } => inner.is_end_stream(),
            other => matches!(other, GatewayBody::Full(None)),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GatewayBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            GatewayBody::Full(None) => SizeHint::with_exact(0),
            GatewayBody::Counted { inner, .. } => inner.size_hint(),
            GatewayBody::Stream { .. } | GatewayBody::Heartbeat(_) | GatewayBody::Events(_) => {
                SizeHint::default()
            }
        }
    }
}
