//! An upstream's HTTP/1.1 response, read by hand (`upstream::h1`), on arbitrary bytes: no panic,
//! and the same head, body, error and reuse whether the bytes arrive in one read, split at any
//! point, or a byte at a time (a network may split anywhere).
//!
//! The input's first byte chooses the exchange (bit 0: the request was a `HEAD`; bit 1: the
//! connection closes after the bytes rather than staying open), its second where the split
//! falls; the rest is what the upstream sends.

#![no_main]

use std::collections::VecDeque;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use hourglass_engine::upstream::h1::{Error, H1};
use http::Method;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An upstream that answers with `pieces`, one read each (cut to the room the reader gives),
/// then closes the connection (`close`) or holds it open for ever.
struct Scripted {
    pieces: VecDeque<Vec<u8>>,
    close: bool,
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(mut piece) = self.pieces.pop_front() else {
            return if self.close {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            };
        };
        let n = piece.len().min(buf.remaining());
        buf.put_slice(&piece[..n]);
        if n < piece.len() {
            self.pieces.push_front(piece.split_off(n));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// How an error ended the exchange: its kind and what it says.
#[derive(Debug, PartialEq)]
enum Failure {
    Parse(String),
    Stale(String),
    Closed(String),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        let text = error.to_string();
        assert!(
            !text.is_empty() && text.len() < 200,
            "an error says what, briefly: {text}"
        );
        match error {
            Error::Parse(_) => Failure::Parse(text),
            Error::Stale(_) => Failure::Stale(text),
            Error::Closed(_) => Failure::Closed(text),
        }
    }
}

/// What one exchange came to.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The head did not come whole, and the connection stays open.
    HeadWaits,
    HeadFailed(Failure),
    Head {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
        /// How the body ended: `None` when it waits for more.
        end: Option<Result<(), Failure>>,
        usable: bool,
    },
}

/// Polls `future` once: every read of a scripted connection is ready or never will be.
fn now<F: Future>(future: F) -> Option<F::Output> {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// Sends a request over a connection that answers with `pieces`, and reads what comes back.
fn exchange(pieces: Vec<Vec<u8>>, head_request: bool, close: bool) -> Outcome {
    // An empty read is the connection's end: only the script's own end may say that.
    let pieces = pieces.into_iter().filter(|piece| !piece.is_empty());
    let io = Scripted {
        pieces: pieces.collect(),
        close,
    };
    let mut h1 = H1::new(Box::new(io));
    let method = if head_request {
        Method::HEAD
    } else {
        Method::POST
    };
    let request = h1.write_request(
        &method,
        |out| out.extend_from_slice(b"POST /v1/chat/completions HTTP/1.1\r\nhost: up\r\n"),
        b"{}",
    );
    now(request)
        .expect("a scripted write is ready")
        .expect("a scripted write succeeds");
    let parts = match now(h1.read_head(head_request)) {
        None => return Outcome::HeadWaits,
        Some(Err(error)) => return Outcome::HeadFailed(error.into()),
        Some(Ok(parts)) => parts,
    };
    let headers = (parts.headers.iter())
        .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
        .collect();
    let mut body = Vec::new();
    let mut cx = Context::from_waker(Waker::noop());
    let end = loop {
        match h1.poll_body(&mut cx) {
            Poll::Pending => break None,
            Poll::Ready(None) => break Some(Ok(())),
            Poll::Ready(Some(Ok(piece))) => body.extend_from_slice(&piece),
            Poll::Ready(Some(Err(error))) => break Some(Err(error.into())),
        }
    };
    Outcome::Head {
        status: parts.status.as_u16(),
        headers,
        body,
        end,
        usable: h1.usable(),
    }
}

fuzz_target!(|input: &[u8]| {
    let [flags, split, response @ ..] = input else {
        return;
    };
    let (head_request, close) = (flags & 1 == 1, flags & 2 == 2);
    let whole = exchange(vec![response.to_vec()], head_request, close);
    let at = usize::from(*split) * response.len() / 255;
    let (first, second) = response.split_at(at);
    let split = exchange(vec![first.to_vec(), second.to_vec()], head_request, close);
    assert_eq!(whole, split, "split at {at}");
    if response.len() <= 2048 {
        let bytes = response.iter().map(|&b| vec![b]).collect();
        assert_eq!(
            whole,
            exchange(bytes, head_request, close),
            "a byte at a time"
        );
    }
});
