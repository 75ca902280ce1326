//! The response body that plays a script: it sleeps on tokio's clock between steps (so tests on a
//! paused clock run a two-minute stream instantly), sends data frames, and ends in an error on a
//! cut so that the connection closes with the body incomplete.
//!
//! Waits are scheduled against absolute deadlines, so timer granularity does not accumulate over
//! a long stream.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::plan::{Step, Steps};

/// The error that ends a cut body; hyper then closes the connection without finishing it.
#[derive(Debug, thiserror::Error)]
#[error("the simulator cut the response (fault `cut`)")]
pub struct Cut;

/// A response body played from a script.
pub struct SimBody {
    steps: Steps,
    sleep: Option<Pin<Box<Sleep>>>,
    /// When the previous step fell due; the next wait counts from here.
    clock: Option<Instant>,
    remaining_hint: Option<u64>,
    /// A cut is due: the next poll ends the body with an error.
    cut_due: bool,
    /// A step read ahead while joining frames that fall due together.
    held: Option<Step>,
}

impl SimBody {
    pub(crate) fn new(steps: Steps, content_length: Option<u64>) -> SimBody {
        SimBody {
            steps,
            sleep: None,
            clock: None,
            remaining_hint: content_length,
            cut_due: false,
            held: None,
        }
    }

    /// A body of fixed bytes, sent at once.
    pub(crate) fn full(bytes: Bytes) -> SimBody {
        let len = bytes.len() as u64;
        SimBody::new(
            Steps::Fixed(std::collections::VecDeque::from([Step::Data(bytes)])),
            Some(len),
        )
    }

    fn next_step(&mut self) -> Option<Step> {
        if let Some(step) = self.held.take() {
            return Some(step);
        }
        match &mut self.steps {
            Steps::Fixed(queue) => queue.pop_front(),
            Steps::Stream(script) => script.next_step(),
        }
    }
}

impl SimBody {
    /// Joins the frames that fall due at the same instant into one, so a burst of chunks costs
    /// one write (up to 64 KiB); the first step that is not such a frame is held for later.
    fn join_due_frames(&mut self, first: Bytes) -> Bytes {
        let mut joined: Option<BytesMut> = None;
        loop {
            match self.next_step() {
                Some(Step::Wait(wait)) if wait.is_zero() => continue,
                Some(Step::Data(more))
                    if joined.as_ref().map_or(first.len(), BytesMut::len) < MAX_JOINED =>
                {
                    joined
                        .get_or_insert_with(|| {
                            // Room for a typical burst (a whole short answer) without regrowing.
                            let mut buffer =
                                BytesMut::with_capacity(JOIN_START.max(2 * first.len()));
                            buffer.extend_from_slice(&first);
                            buffer
                        })
                        .extend_from_slice(&more);
                }
                other => {
                    self.held = other;
                    return joined.map_or(first, BytesMut::freeze);
                }
            }
        }
    }
}

/// Largest frame made by joining frames that fall due together.
const MAX_JOINED: usize = 64 * 1024;
/// The first buffer a joined frame gets.
const JOIN_START: usize = 8 * 1024;

impl Body for SimBody {
    type Data = Bytes;
    type Error = Cut;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Cut>>> {
        let this = &mut *self;
        if this.cut_due {
            return Poll::Ready(Some(Err(Cut)));
        }
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
            }
            match this.next_step() {
                None => return Poll::Ready(None),
                Some(Step::Cut) => {
                    // Yield once first: hyper flushes what it has buffered when the body is
                    // pending, so the client receives every frame before the cut.
                    this.cut_due = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Some(Step::Data(first)) => {
                    let bytes = this.join_due_frames(first);
                    if let Some(hint) = this.remaining_hint.as_mut() {
                        *hint = hint.saturating_sub(bytes.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Some(Step::Wait(wait)) => {
                    if wait.is_zero() {
                        continue;
                    }
                    let due = this.clock.unwrap_or_else(Instant::now) + wait;
                    this.clock = Some(due);
                    match this.sleep.as_mut() {
                        Some(sleep) => sleep.as_mut().reset(due),
                        None => this.sleep = Some(Box::pin(tokio::time::sleep_until(due))),
                    }
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining_hint {
            Some(len) => SizeHint::with_exact(len),
            None => SizeHint::default(),
        }
    }
}
