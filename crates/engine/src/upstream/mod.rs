//! The only user of the HTTP client: one attempt's connection, taken from a per-upstream pool or
//! dialed anew, and the request sent over it with the moments of each phase recorded in a
//! [`Timeline`].
//!
//! # Why our own pool
//! hyper-util's pooled client hides whether a connection was reused and when the request body was
//! handed over; the connect and write clocks need both. A pool of HTTP/1.1 connections per
//! upstream is a few lines and makes every phase measurable. An upstream that offers HTTP/2 by
//! ALPN gets one shared, multiplexed connection instead.

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

/// The two kinds of upstream connection.
enum Link {
    /// HTTP/1.1: one request at a time, driven by the task that makes the call.
    H1 {
        sender: SendRequest<RequestBody>,
        driver: Pin<Box<Driver>>,
        /// The driver has finished: the connection is closed.
        closed: bool,
    },
    /// HTTP/2 (negotiated by ALPN): many requests over one connection, driven by a task of its
    /// own since no single call owns it.
    H2 {
        sender: hyper::client::conn::http2::SendRequest<RequestBody>,
    },
}

/// A connection ready for one request.
///
/// # Why the caller drives an HTTP/1.1 connection
/// hyper's client connection is a future that moves bytes; spawned as its own task, every
/// request and every chunk would cross two tasks (and often two threads). Here the task that
/// makes the call polls it while it waits ([`drive`], [`Connection::poll_driver`]), so a proxied
/// call stays on one task. An HTTP/2 connection is shared by calls, so it runs as its own task.
pub struct Connection {
    link: Link,
    /// Whether it came from the pool (or is a shared HTTP/2 connection already open).
    pub reused: bool,
    upstream: usize,
}

impl Connection {
    /// Polls an HTTP/1.1 connection so its socket makes progress; returns `Ready` once it has
    /// closed. An HTTP/2 connection runs on its own task: always `Pending` here.
    pub fn poll_driver(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.link {
            Link::H1 { driver, closed, .. } => {
                if !*closed && driver.as_mut().poll(cx).is_ready() {
                    *closed = true;
                }
                if *closed {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }
            Link::H2 { .. } => Poll::Pending,
        }
    }

    /// Whether the connection speaks HTTP/2.
    pub fn is_h2(&self) -> bool {
        matches!(self.link, Link::H2 { .. })
    }

    /// Whether an HTTP/1.1 connection can take another request now (polled once, without waiting).
    fn usable(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let open = self.poll_driver(&mut cx).is_pending();
        match &self.link {
            Link::H1 { sender, .. } => open && sender.is_ready(),
            Link::H2 { sender } => !sender.is_closed(),
        }
    }

    /// Sends a request and waits for its response head, driving the connection meanwhile.
    pub async fn send(
        &mut self,
        request: http::Request<RequestBody>,
    ) -> hyper::Result<http::Response<hyper::body::Incoming>> {
        match &mut self.link {
            Link::H1 {
                sender,
                driver,
                closed,
            } => {
                let mut driver = DriverRef {
                    inner: Some((driver, closed)),
                };
                drive(&mut driver, sender.send_request(request)).await
            }
            Link::H2 { sender } => sender.send_request(request).await,
        }
    }

    /// The driver alone, to read a response body while driving.
    pub fn driver(&mut self) -> DriverRef<'_> {
        match &mut self.link {
            Link::H1 { driver, closed, .. } => DriverRef {
                inner: Some((driver, closed)),
            },
            Link::H2 { .. } => DriverRef { inner: None },
        }
    }
}

/// Awaits `future` (a body read on `driver`'s connection) while driving the connection.
pub async fn drive<F: Future>(driver: &mut DriverRef<'_>, future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        if let Some((driver, closed)) = driver.inner.as_mut()
            && !**closed
            && driver.as_mut().poll(cx).is_ready()
        {
            **closed = true;
        }
        future.as_mut().poll(cx)
    })
    .await
}

/// The driving half of an HTTP/1.1 [`Connection`] (nothing for HTTP/2, which drives itself).
pub struct DriverRef<'a> {
    inner: Option<(&'a mut Pin<Box<Driver>>, &'a mut bool)>,
}

struct Idle {
    connection: Connection,
    since: Instant,
}

struct Entry {
    dial: Arc<dyn Dial>,
    idle: Mutex<Vec<Idle>>,
    /// The shared HTTP/2 connection, once the upstream negotiated it.
    h2: Mutex<Option<hyper::client::conn::http2::SendRequest<RequestBody>>>,
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
                    h2: Mutex::new(None),
                })
                .collect(),
        }
    }

    /// A connection to upstream `index`: the shared HTTP/2 one, an idle pooled HTTP/1.1 one, or a
    /// new one (not bounded here: the caller puts the connect deadline around this).
    pub async fn connect(&self, index: usize) -> Result<Connection, FailureKind> {
        let entry = &self.entries[index];
        let shared = entry
            .h2
            .lock()
            .expect("the pool lock is never poisoned")
            .clone();
        if let Some(sender) = shared
            && !sender.is_closed()
        {
            return Ok(Connection {
                link: Link::H2 { sender },
                reused: true,
                upstream: index,
            });
        }
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
        if dial::negotiated_h2(&io) {
            let (sender, driver) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                TokioIo::new(io),
            )
            .await
            .map_err(|e| FailureKind::Closed(format!("the HTTP/2 handshake failed: {e}")))?;
            tokio::spawn(async move {
                let _ = driver.await;
            });
            *entry.h2.lock().expect("the pool lock is never poisoned") = Some(sender.clone());
            return Ok(Connection {
                link: Link::H2 { sender },
                reused: false,
                upstream: index,
            });
        }
        let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| FailureKind::Closed(format!("the HTTP handshake failed: {e}")))?;
        Ok(Connection {
            link: Link::H1 {
                sender,
                driver: Box::pin(driver),
                closed: false,
            },
            reused: false,
            upstream: index,
        })
    }

    /// Returns a connection whose response was read to the end, for reuse (an HTTP/2 one stays
    /// shared in any case).
    pub fn release(&self, mut connection: Connection) {
        if connection.is_h2() || !connection.usable() {
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
