//! The only user of the HTTP client: one attempt's connection, taken from a per-upstream pool or
//! dialed anew, and the request sent over it with the moments of each phase recorded in a
//! [`Timeline`].
//!
//! # Why our own pool
//! hyper-util's pooled client hides whether a connection was reused and when the request body was
//! handed over; the connect and write clocks need both. A pool of HTTP/1.1 connections per
//! upstream is a few lines and makes every phase measurable.

pub mod dial;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::FailureKind;
use dial::Dial;

/// Idle connections kept per upstream.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed rather than reused (servers close theirs too).
const IDLE_EXPIRY: Duration = Duration::from_secs(60);

/// The moments of one attempt.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    /// The attempt began.
    pub start: Instant,
    /// A connection was ready (at once for a pooled one).
    pub connected: Option<Instant>,
    /// The connection came from the pool.
    pub reused: bool,
    /// The request body was handed to the connection.
    pub written: Option<Instant>,
    /// The response headers arrived.
    pub headers: Option<Instant>,
    /// The first meaningful content arrived.
    pub first_token: Option<Instant>,
}

impl Timeline {
    /// A timeline starting now.
    pub fn new(start: Instant) -> Timeline {
        Timeline {
            start,
            connected: None,
            reused: false,
            written: None,
            headers: None,
            first_token: None,
        }
    }

    /// A `Server-Timing` header value: `connect;dur=…, write;dur=…, first_byte;dur=…, first_token;dur=…`.
    pub fn server_timing(&self) -> String {
        let ms = |a: Instant, b: Option<Instant>| {
            b.map(|b| b.saturating_duration_since(a).as_secs_f64() * 1000.0)
        };
        let mut parts = Vec::with_capacity(4);
        if let Some(d) = ms(self.start, self.connected) {
            parts.push(format!(
                "connect;dur={d:.1}{}",
                if self.reused { ";desc=\"reused\"" } else { "" }
            ));
        }
        if let Some(connected) = self.connected
            && let Some(d) = ms(connected, self.written)
        {
            parts.push(format!("write;dur={d:.1}"));
        }
        if let (Some(w), h) = (self.written, self.headers) {
            if let Some(d) = ms(w, h) {
                parts.push(format!("first_byte;dur={d:.1}"));
            }
            if let Some(d) = ms(w, self.first_token) {
                parts.push(format!("first_token;dur={d:.1}"));
            }
        }
        parts.join(", ")
    }
}

/// The future that runs an HTTP/1.1 connection: it reads and writes the socket.
type Driver = hyper::client::conn::http1::Connection<TokioIo<dial::BoxIo>, RequestBody>;

/// A connection ready for one request.
///
/// # Why the caller drives it
/// hyper's client connection is a future that moves bytes; spawned as its own task, every
/// request and every chunk would cross two tasks (and often two threads). Here the task that
/// makes the call polls it while it waits ([`Connection::drive`], [`Connection::poll_driver`]),
/// so a proxied call stays on one task.
pub struct Connection {
    /// The HTTP/1.1 sender.
    pub sender: SendRequest<RequestBody>,
    driver: Pin<Box<Driver>>,
    /// The driver has finished: the connection is closed.
    closed: bool,
    /// Whether it came from the pool.
    pub reused: bool,
    upstream: usize,
}

impl Connection {
    /// Polls the connection so its socket makes progress; returns `Ready` once it has closed.
    pub fn poll_driver(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.closed && self.driver.as_mut().poll(cx).is_ready() {
            self.closed = true;
        }
        if self.closed {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Whether the connection can take another request now (polled once, without waiting).
    fn usable(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.poll_driver(&mut cx).is_pending() && self.sender.is_ready()
    }
}

/// Awaits `future` (a request or a body read on `driver`'s connection) while driving the
/// connection; `driver` and the future borrow disjoint parts of a [`Connection`].
pub async fn drive<F: Future>(driver: &mut DriverRef<'_>, future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        if !*driver.closed && driver.driver.as_mut().poll(cx).is_ready() {
            *driver.closed = true;
        }
        future.as_mut().poll(cx)
    })
    .await
}

/// The driving half of a [`Connection`], borrowed apart from its sender.
pub struct DriverRef<'a> {
    driver: &'a mut Pin<Box<Driver>>,
    closed: &'a mut bool,
}

impl Connection {
    /// Splits the connection into its sender and its driver, to send while driving.
    pub fn split(&mut self) -> (&mut SendRequest<RequestBody>, DriverRef<'_>) {
        (
            &mut self.sender,
            DriverRef {
                driver: &mut self.driver,
                closed: &mut self.closed,
            },
        )
    }

    /// The driver alone, to read a response body while driving.
    pub fn driver(&mut self) -> DriverRef<'_> {
        DriverRef {
            driver: &mut self.driver,
            closed: &mut self.closed,
        }
    }
}

struct Idle {
    connection: Connection,
    since: Instant,
}

struct Entry {
    dial: Arc<dyn Dial>,
    idle: Mutex<Vec<Idle>>,
}

/// Every upstream's dialer and pool of idle connections.
pub struct Upstreams {
    entries: Vec<Entry>,
}

impl Upstreams {
    /// One dialer per upstream, in configuration order.
    pub fn new(dials: Vec<Arc<dyn Dial>>) -> Upstreams {
        Upstreams {
            entries: dials
                .into_iter()
                .map(|dial| Entry {
                    dial,
                    idle: Mutex::new(Vec::new()),
                })
                .collect(),
        }
    }

    /// A connection to upstream `index`: an idle pooled one, or a new one (not bounded here: the
    /// caller puts the connect deadline around this).
    pub async fn connect(&self, index: usize) -> Result<Connection, FailureKind> {
        let entry = &self.entries[index];
        let now = Instant::now();
        loop {
            let candidate = entry
                .idle
                .lock()
                .expect("the pool lock is never poisoned")
                .pop();
            let Some(mut idle) = candidate else { break };
            if now.duration_since(idle.since) < IDLE_EXPIRY && idle.connection.usable() {
                idle.connection.reused = true;
                return Ok(idle.connection);
            }
        }
        let io = entry.dial.dial().await?;
        let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| FailureKind::Closed(format!("the HTTP handshake failed: {e}")))?;
        Ok(Connection {
            sender,
            driver: Box::pin(driver),
            closed: false,
            reused: false,
            upstream: index,
        })
    }

    /// Returns a connection whose response was read to the end, for reuse.
    pub fn release(&self, mut connection: Connection) {
        if !connection.usable() {
            return;
        }
        let mut idle = self.entries[connection.upstream]
            .idle
            .lock()
            .expect("the pool lock is never poisoned");
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                connection,
                since: Instant::now(),
            });
        }
    }
}

/// A request body that says when the connection has taken all of it (the end of `write`).
pub struct RequestBody {
    data: Option<Bytes>,
    len: u64,
    written: Option<oneshot::Sender<()>>,
}

impl RequestBody {
    /// A body of `data`, and the signal that fires once it has been handed over.
    pub fn new(data: Bytes) -> (RequestBody, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let len = data.len() as u64;
        (
            RequestBody {
                data: (!data.is_empty()).then_some(data),
                len,
                written: Some(tx),
            },
            rx,
        )
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.data.take() {
            Some(data) => std::task::Poll::Ready(Some(Ok(Frame::data(data)))),
            None => {
                if let Some(written) = self.written.take() {
                    let _ = written.send(());
                }
                std::task::Poll::Ready(None)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}
