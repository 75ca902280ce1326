//! The only user of the HTTP client: one attempt's connection, taken from a per-upstream pool or
//! dialed anew, the request sent over it, and the response body — which drives its own
//! connection while it is read and goes back to the pool when read to its end.
//!
//! # Why our own pool
//! hyper-util's pooled client hides whether a connection was reused and when the request body was
//! handed over; the connect and write clocks need both. A pool of HTTP/1.1 connections per
//! upstream is a few lines and makes every phase measurable. HTTP/1.1 itself is spoken by
//! [`h1`], by hand. An upstream that speaks HTTP/2 (by
//! ALPN, or configured with `http = "2"`) gets shared, multiplexed connections instead: each
//! carries up to `http2_max_streams` calls, and another is opened when all are full, so calls
//! never queue behind a server's stream limit. Those are kept per runtime too, like the idle
//! HTTP/1.1 ones: a connection's task runs on the runtime that opened it, and a call from another
//! serving thread has its every frame handed across threads, so it borrows another runtime's
//! only while its own are full (or it has none) and opens one of its own beside it.
//!
//! # Why the body reads an HTTP/1.1 connection
//! A connection spawned as its own task would have every request and every chunk cross two
//! tasks (and often two threads). Here whoever waits on the connection reads it: the call (or
//! [`Connection::send`]) while the head is awaited, then the [`UpstreamBody`] on every read, so
//! a proxied call stays on one task. An HTTP/2 connection is shared by calls, so it runs as its
//! own task.

pub mod dial; // DNS, TCP, TLS, or a caller's own transport
pub mod h1; // HTTP/1.1 by hand: the request written, the head parsed, the body framed
pub mod request; // the upstream request: path under the base URL, headers in and out, the key
pub mod timeline; // the moments of one attempt

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::FailureKind;
use crate::slots::Slots;
use dial::Dial;
use hourglass_config::HttpVersion;
pub use timeline::Timeline;

/// Idle connections kept per upstream.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed rather than reused (servers close theirs too).
pub const IDLE_EXPIRY: Duration = Duration::from_secs(60);
/// The largest response head an upstream connection reads: an upstream (or a proxy) sending
/// headers larger than this gets `upstream_malformed`, not relayed.
const MAX_RESPONSE_BUFFER: usize = 256 * 1024;
/// An idle connection returned to its pool less than this long ago is taken without polling it
/// again: it was checked as it went back.
const CHECKED_RECENTLY: Duration = Duration::from_millis(500);
/// How long a runtime's own connection, opened beside a call that borrowed one, may take.
const OPEN_BESIDE_LIMIT: Duration = Duration::from_secs(10);
/// How often the idle pools are swept of expired connections and ones the server closed.
pub const SWEEP_EVERY: Duration = Duration::from_secs(15);
/// How long an HTTP/2 connection without calls is kept when another idle one is open too: the
/// extra connections a burst opened are closed soon after it, so a flood's memory goes back.
pub const SPARE_H2_EXPIRY: Duration = Duration::from_secs(10);

/// How often an HTTP/2 connection is pinged, and how long an answer may take before it is
/// closed: a connection that died silently (a NAT or a load balancer forgot it) must not keep
/// being handed to calls.
const H2_PING_EVERY: Duration = Duration::from_secs(15);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// The two kinds of upstream connection.
enum Link {
    /// HTTP/1.1: one request at a time, read by whoever waits on it. Boxed (once per
    /// connection, not per call): a connection is held across many of a call's awaits, and
    /// every byte of it is paid again in each future that holds it.
    H1(Box<h1::H1>),
    /// HTTP/2: many requests over one connection, driven by a task of its own since no single
    /// call owns it. The slot counts this call among the connection's streams until dropped.
    H2 {
        sender: hyper::client::conn::http2::SendRequest<RequestBody>,
        _slot: StreamSlot,
    },
}

/// Why an exchange with an upstream failed, from either HTTP version's client.
#[derive(Debug)]
pub enum ExchangeError {
    /// From the HTTP/1.1 client.
    H1(h1::Error),
    /// From hyper's HTTP/2 client.
    H2(hyper::Error),
}

impl ExchangeError {
    /// Whether the upstream sent something that is not HTTP.
    pub fn is_parse(&self) -> bool {
        match self {
            ExchangeError::H1(e) => e.is_parse(),
            ExchangeError::H2(e) => e.is_parse() || e.is_parse_status(),
        }
    }

    /// Whether the connection was found closed before the response began: a pooled one the
    /// server closed meanwhile, to which the request may be sent again on a new one.
    pub fn is_stale(&self) -> bool {
        match self {
            ExchangeError::H1(e) => e.is_stale(),
            ExchangeError::H2(e) => e.is_closed() || e.is_canceled() || e.is_incomplete_message(),
        }
    }
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExchangeError::H1(e) => e.fmt(f),
            ExchangeError::H2(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ExchangeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ExchangeError::H1(_) => None,
            ExchangeError::H2(e) => std::error::Error::source(e),
        }
    }
}

/// One call's place on a shared HTTP/2 connection, given back when the call lets go of it.
struct StreamSlot(Arc<H2Load>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self
                .0
                .idle_since
                .lock()
                .expect("the pool lock is never poisoned") = crate::clock::now();
        }
    }
}

/// The calls in flight on one HTTP/2 connection, and since when it has had none.
struct H2Load {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
}

/// An open HTTP/2 connection, shared by calls.
struct SharedH2 {
    sender: hyper::client::conn::http2::SendRequest<RequestBody>,
    load: Arc<H2Load>,
    /// The runtime its task runs on (the one that opened it).
    runtime: Option<tokio::runtime::Id>,
}

/// Which of the open HTTP/2 connections (each given as its runtime and calls in flight) a call
/// on runtime `here` takes, and whether it borrows another runtime's: the least loaded of `here`'s
/// own with room; when none of its own has room (or it has opened none yet), the least loaded of
/// any with room, borrowed, so that no call waits for a dial while a connection has room. `None`
/// when all are full: then it opens one.
fn pick_h2<R: PartialEq>(
    open: impl Iterator<Item = (R, usize)> + Clone,
    here: &R,
    max_streams: usize,
) -> Option<(usize, bool)> {
    let with_room = open
        .enumerate()
        .filter(|(_, (_, in_flight))| *in_flight < max_streams);
    let own = (with_room.clone())
        .filter(|(_, (runtime, _))| runtime == here)
        .min_by_key(|(_, (_, in_flight))| *in_flight);
    if let Some((at, _)) = own {
        return Some((at, false));
    }
    let (at, _) = with_room.min_by_key(|(_, (_, in_flight))| *in_flight)?;
    Some((at, true))
}

/// After an HTTP/2 connection opened beside borrowing calls failed, how long the runtime goes on
/// borrowing before it tries again: an upstream that refuses new connections is not dialed once
/// per call.
const BESIDE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Whether runtime `id` may start opening an HTTP/2 connection of its own at `now`, given each
/// runtime's attempt (`None`: one is under way; `Some(t)`: the last failed, none before `t`);
/// when it may, its attempt is marked under way.
fn may_open_beside<R: PartialEq>(
    attempts: &mut Vec<(R, Option<Instant>)>,
    id: R,
    now: Instant,
) -> bool {
    match attempts.iter_mut().find(|(runtime, _)| *runtime == id) {
        Some((_, None)) => false,
        Some((_, Some(after))) if now < *after => false,
        Some((_, state)) => {
            *state = None;
            true
        }
        None => {
            attempts.push((id, None));
            true
        }
    }
}

/// A connection ready for one request.
pub struct Connection {
    link: Link,
    /// The runtime whose reactor its socket is registered with (the one that opened it).
    runtime: Option<tokio::runtime::Id>,
    /// Whether it came from the pool (or is a shared HTTP/2 connection already open).
    pub reused: bool,
    pool: Arc<Pool>,
}

impl Connection {
    /// Whether the connection speaks HTTP/2.
    pub fn is_h2(&self) -> bool {
        matches!(self.link, Link::H2 { .. })
    }

    /// Whether the connection can take another request now (polled once, without waiting).
    fn usable(&mut self) -> bool {
        match &mut self.link {
            Link::H1(h1) => h1.usable(),
            Link::H2 { sender, .. } => !sender.is_closed(),
        }
    }

    /// The HTTP/1.1 connection, for a request written and its head read by hand (a call does,
    /// without building an `http::Request`; then [`Connection::into_body`]); `None` over HTTP/2.
    pub fn h1(&mut self) -> Option<&mut h1::H1> {
        match &mut self.link {
            Link::H1(h1) => Some(h1),
            Link::H2 { .. } => None,
        }
    }

    /// The body of the response whose head was read from [`Connection::h1`].
    pub fn into_body(self) -> UpstreamBody {
        UpstreamBody {
            connection: self,
            h2: None,
        }
    }

    /// Sends a request and waits for its response head. The response's body takes the
    /// connection with it. A call's HTTP/1.1 request is written by hand instead (see
    /// [`Connection::h1`]); here HTTP/1.1 serves health checks.
    pub async fn send(
        mut self,
        request: http::Request<RequestBody>,
    ) -> Result<(http::response::Parts, UpstreamBody), ExchangeError> {
        match &mut self.link {
            Link::H1(h1) => {
                // Boxed: the request's parts held across its awaits would otherwise grow every
                // call's future (which holds this one for HTTP/2) by some 400 bytes.
                let head = Box::pin(async {
                    let (parts, mut body) = request.into_parts();
                    let data = body.data.take().unwrap_or_default();
                    let head = |out: &mut Vec<u8>| h1::encode_parts(out, &parts);
                    h1.write_request(&parts.method, head, &data).await?;
                    if let Some(written) = body.written.take() {
                        let _ = written.send(());
                    }
                    h1.read_head(parts.method == http::Method::HEAD).await
                })
                .await
                .map_err(ExchangeError::H1)?;
                Ok((head, self.into_body()))
            }
            Link::H2 { sender, .. } => {
                let response = (sender.send_request(request).await).map_err(ExchangeError::H2)?;
                let (parts, body) = response.into_parts();
                Ok((
                    parts,
                    UpstreamBody {
                        connection: self,
                        h2: Some(body),
                    },
                ))
            }
        }
    }
}

/// A response body from an upstream, with the connection it arrives on: reading it reads the
/// connection, and a body read to its end gives the connection back to the pool.
pub struct UpstreamBody {
    connection: Connection,
    /// An HTTP/2 body; an HTTP/1.1 one is read from the connection itself.
    h2: Option<Incoming>,
}

impl UpstreamBody {
    /// The next frame (`None` at the end), reading the connection while it waits.
    pub async fn frame(&mut self) -> Option<Result<Frame<Bytes>, ExchangeError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_frame(cx)).await
    }

    /// Returns the connection to its pool: for a body read to its end (an HTTP/2 one stays
    /// shared in any case; one that cannot take another request is closed). Where the caller
    /// holds the pool's upstreams, [`Upstreams::release`] does the same without counting the
    /// pool up and down.
    pub fn release(self) {
        let pool = self.connection.pool.clone();
        self.release_to(&pool);
    }

    /// [`UpstreamBody::release`] into `pool`, the one the connection came from.
    fn release_to(self, pool: &Pool) {
        let mut connection = self.connection;
        if connection.is_h2() || !connection.usable() {
            return;
        }
        pool.idle.put(Idle {
            connection,
            since: crate::clock::now(),
        });
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = ExchangeError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        let this = &mut *self;
        match (&mut this.connection.link, &mut this.h2) {
            (Link::H1(h1), _) => h1
                .poll_body(cx)
                .map(|read| read.map(|r| r.map(Frame::data).map_err(ExchangeError::H1))),
            (Link::H2 { .. }, Some(body)) => {
                Pin::new(body).poll_frame(cx).map_err(ExchangeError::H2)
            }
            (Link::H2 { .. }, None) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match (&self.connection.link, &self.h2) {
            (Link::H1(h1), _) => h1.body_done(),
            (Link::H2 { .. }, Some(body)) => body.is_end_stream(),
            (Link::H2 { .. }, None) => true,
        }
    }
}

struct Idle {
    connection: Connection,
    since: Instant,
}

/// The runtime the caller runs on, if any.
fn current_runtime() -> Option<tokio::runtime::Id> {
    tokio::runtime::Handle::try_current()
        .ok()
        .map(|handle| handle.id())
}

/// Idle HTTP/1.1 connections, kept per runtime. A socket is registered with the reactor of the
/// runtime that opened it, and the gateway serves on single-threaded runtimes (one per CPU by
/// default): a connection another runtime opened would have every read woken from that other
/// thread. So a runtime that has opened connections to the upstream takes only its own, and
/// dials when none is idle (nginx's workers keep their pools apart the same way); one that has
/// not (a serving thread's first call) takes another runtime's, such as the warm connection a
/// health check left.
#[derive(Default)]
struct IdleConnections(Vec<(Option<tokio::runtime::Id>, Vec<Idle>)>);

impl IdleConnections {
    /// The connections kept for `runtime`, made room for when it has none yet.
    fn of(&mut self, runtime: Option<tokio::runtime::Id>) -> &mut Vec<Idle> {
        let at = match self.0.iter().position(|(r, _)| *r == runtime) {
            Some(at) => at,
            None => {
                self.0.push((runtime, Vec::new()));
                self.0.len() - 1
            }
        };
        &mut self.0[at].1
    }

    /// Keeps `idle` for its runtime's calls, unless that runtime keeps [`MAX_IDLE`] already.
    fn put(&mut self, idle: Idle) {
        let kept = self.of(idle.connection.runtime);
        if kept.len() < MAX_IDLE {
            kept.push(idle);
        }
    }

    /// For a runtime that has opened connections (`None` if it has not): the one it returned
    /// last, if one is idle.
    fn take_own(&mut self, runtime: Option<tokio::runtime::Id>) -> Option<Option<Idle>> {
        let (_, kept) = self.0.iter_mut().find(|(r, _)| *r == runtime)?;
        Some(kept.pop())
    }

    /// How many the runtime keeping the most keeps.
    fn most(&self) -> usize {
        self.0.iter().map(|(_, kept)| kept.len()).max().unwrap_or(0)
    }

    /// One of the runtime keeping the most.
    fn take_most(&mut self) -> Option<Idle> {
        let (_, most) = self.0.iter_mut().max_by_key(|(_, kept)| kept.len())?;
        most.pop()
    }

    /// Keeps only the connections `keep` says to, over every runtime; a runtime left with none
    /// may borrow again.
    fn retain(&mut self, mut keep: impl FnMut(&mut Idle) -> bool) {
        for (_, kept) in &mut self.0 {
            kept.retain_mut(&mut keep);
        }
        self.0.retain(|(_, kept)| !kept.is_empty());
    }

    /// How many are kept, over every runtime.
    fn len(&self) -> usize {
        self.0.iter().map(|(_, kept)| kept.len()).sum()
    }
}

/// Slots the idle connections are kept in, by runtime: more than the serving threads there
/// usually are, so each serving thread's runtime nearly always has a slot of its own.
const IDLE_SLOTS: usize = 8;

/// Idle HTTP/1.1 connections, kept per runtime in slots that each have their own lock. A call
/// takes its connection from its runtime's slot and gives it back there: under one lock, every
/// call of every serving thread took it twice, and its cache line moved between the cores call
/// after call.
#[derive(Default)]
struct IdleSlots(Slots<IdleConnections, IDLE_SLOTS>);

impl IdleSlots {
    /// The slot of `runtime`, locked.
    fn of(
        &self,
        runtime: Option<tokio::runtime::Id>,
    ) -> std::sync::MutexGuard<'_, IdleConnections> {
        use std::hash::BuildHasher as _;
        let at = runtime.map_or(0, |id| {
            foldhash::fast::FixedState::default().hash_one(id) as usize
        });
        self.0.at(at)
    }

    /// Keeps `idle` for its runtime's calls (see [`IdleConnections::put`]).
    fn put(&self, idle: Idle) {
        self.of(idle.connection.runtime).put(idle);
    }

    /// Makes `runtime` one that takes only its own connections from now on.
    fn open_for(&self, runtime: Option<tokio::runtime::Id>) {
        let _ = self.of(runtime).of(runtime);
    }

    /// A connection for a call on `runtime`: the one it returned last, or, for a runtime that
    /// has opened none, one from the runtime keeping the most — then `borrowed` is true.
    fn take(&self, runtime: Option<tokio::runtime::Id>) -> Option<(Idle, bool)> {
        if let Some(own) = self.of(runtime).take_own(runtime) {
            return own.map(|idle| (idle, false));
        }
        let fullest = (0..IDLE_SLOTS).max_by_key(|&at| self.0.at(at).most())?;
        self.0.at(fullest).take_most().map(|idle| (idle, true))
    }

    /// Keeps only the connections `keep` says to (see [`IdleConnections::retain`]).
    fn retain(&self, mut keep: impl FnMut(&mut Idle) -> bool) {
        for mut slot in self.0.each() {
            slot.retain(&mut keep);
        }
    }

    /// How many are kept, over every runtime.
    fn len(&self) -> usize {
        self.0.each().map(|slot| slot.len()).sum()
    }
}

/// One upstream's dialer, idle HTTP/1.1 connections and shared HTTP/2 connections.
struct Pool {
    dial: Arc<dyn Dial>,
    http: HttpVersion,
    h2_max_streams: usize,
    idle: IdleSlots,
    /// The open HTTP/2 connections, once the upstream speaks it.
    h2: Mutex<Vec<SharedH2>>,
    /// Set once the upstream negotiated HTTP/2 (or is configured for it): from then on a call
    /// that finds every connection full waits for the one being opened instead of dialing its own.
    speaks_h2: AtomicBool,
    /// Set when the first HTTP/2 connection opens, never cleared: until then a call does not
    /// take `h2`'s lock to find it empty (every call on an HTTP/1.1 upstream would, and the
    /// serving threads would pass that lock's cache line back and forth).
    opened_h2: AtomicBool,
    /// Held while an HTTP/2 connection is opened: a burst of calls opens one, not one each.
    h2_dialing: tokio::sync::Mutex<()>,
    /// The runtimes opening an HTTP/2 connection of their own beside calls that borrowed
    /// another's (one each, however many calls borrow meanwhile), or whose last such attempt
    /// failed (see [`may_open_beside`]).
    h2_opening_beside: Mutex<Vec<(tokio::runtime::Id, Option<Instant>)>>,
}

impl Pool {
    /// Opens a connection of this runtime's own beside the call that borrowed another runtime's
    /// (`h2`: an HTTP/2 one), and keeps it: every read on a borrowed connection is woken from
    /// the thread that opened it (a hop that cost a sequential call ~0.05 ms), so only the first
    /// calls of a serving thread pay that, not every one after them while one connection
    /// suffices. HTTP/1.1: from the moment it starts, this runtime's calls take only its own
    /// connections. HTTP/2: they go on borrowing until it is open, and take their own then.
    fn open_own_beside(self: &Arc<Self>, h2: bool) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let id = runtime.id();
        if h2 {
            let mut attempts =
                (self.h2_opening_beside.lock()).expect("the pool lock is never poisoned");
            if !may_open_beside(&mut attempts, id, crate::clock::now()) {
                return;
            }
        } else {
            self.idle.open_for(Some(id));
        }
        let pool = self.clone();
        runtime.spawn(async move {
            let opened = tokio::time::timeout(OPEN_BESIDE_LIMIT, async {
                let io = pool.dial.dial().await?;
                pool.open(io).await
            });
            // A failure is no call's: the next call dials for itself and reports its own (over
            // HTTP/2, the runtime goes on borrowing and tries again after BESIDE_RETRY_AFTER). An
            // HTTP/2 connection is kept shared by `open`; an HTTP/1.1 one is kept idle here.
            let opened = opened.await;
            if h2 {
                let mut attempts =
                    (pool.h2_opening_beside.lock()).expect("the pool lock is never poisoned");
                match &opened {
                    Ok(Ok(_)) => attempts.retain(|(runtime, _)| *runtime != id),
                    _ => {
                        let retry = Some(crate::clock::now() + BESIDE_RETRY_AFTER);
                        for (_, state) in attempts.iter_mut().filter(|(runtime, _)| *runtime == id)
                        {
                            *state = retry;
                        }
                    }
                }
            }
            if let Ok(Ok(connection)) = opened
                && !connection.is_h2()
            {
                pool.idle.put(Idle {
                    connection,
                    since: crate::clock::now(),
                });
            }
        });
    }

    /// A stream on an open HTTP/2 connection with room for one more (see [`pick_h2`]), and
    /// whether it is another runtime's.
    fn take_h2(
        self: &Arc<Self>,
        runtime: Option<tokio::runtime::Id>,
    ) -> Option<(Connection, bool)> {
        if !self.opened_h2.load(Ordering::Acquire) {
            return None;
        }
        let mut shared = self.h2.lock().expect("the pool lock is never poisoned");
        shared.retain(|c| !c.sender.is_closed());
        let open = (shared.iter()).map(|c| (c.runtime, c.load.in_flight.load(Ordering::Acquire)));
        let (at, borrowed) = pick_h2(open, &runtime, self.h2_max_streams)?;
        let chosen = &shared[at];
        chosen.load.in_flight.fetch_add(1, Ordering::AcqRel);
        let connection = Connection {
            link: Link::H2 {
                sender: chosen.sender.clone(),
                _slot: StreamSlot(chosen.load.clone()),
            },
            runtime: chosen.runtime,
            reused: true,
            pool: self.clone(),
        };
        Some((connection, borrowed))
    }

    /// [`Pool::take_h2`] for a call on `runtime`, opening this runtime's own beside a borrowed
    /// one, unless the upstream no longer speaks HTTP/2 (a new deployment that negotiates
    /// HTTP/1.1: the old connection serves until it closes, and a dial would bring HTTP/1.1).
    fn take_h2_or_borrow(
        self: &Arc<Self>,
        runtime: Option<tokio::runtime::Id>,
    ) -> Option<Connection> {
        let (connection, borrowed) = self.take_h2(runtime)?;
        if borrowed && self.speaks_h2.load(Ordering::Acquire) {
            self.open_own_beside(true);
        }
        Some(connection)
    }

    /// Speaks HTTP over a new connection: HTTP/2 when configured or negotiated, else HTTP/1.1.
    async fn open(self: &Arc<Self>, io: dial::BoxIo) -> Result<Connection, FailureKind> {
        let alpn = dial::alpn(&io);
        let h2 = match (self.http, &alpn) {
            (HttpVersion::Http1, _) => false,
            (HttpVersion::Auto, alpn) => alpn.as_deref() == Some(b"h2".as_slice()),
            (HttpVersion::Http2, None) => true,
            (HttpVersion::Http2, Some(chosen)) if chosen.as_slice() == b"h2" => true,
            (HttpVersion::Http2, Some(chosen)) => {
                return Err(FailureKind::Tls(format!(
                    "the server did not agree to HTTP/2 (ALPN chose `{}`), and the upstream is configured with http = \"2\"",
                    String::from_utf8_lossy(chosen)
                )));
            }
        };
        if !h2 {
            // An upstream that negotiated HTTP/2 before and now does not (a new deployment):
            // its calls go back to the HTTP/1.1 pool instead of dialing one at a time.
            self.speaks_h2.store(false, Ordering::Release);
            // From now on this runtime's calls wait for its own connections.
            let runtime = current_runtime();
            self.idle.open_for(runtime);
            return Ok(Connection {
                link: Link::H1(Box::new(h1::H1::new(io))),
                runtime,
                reused: false,
                pool: self.clone(),
            });
        }
        let (sender, driver) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .timer(hyper_util::rt::TokioTimer::new())
                .keep_alive_interval(H2_PING_EVERY)
                .keep_alive_timeout(H2_PING_TIMEOUT)
                .handshake(TokioIo::new(io))
                .await
                .map_err(|e| FailureKind::Closed(format!("the HTTP/2 handshake failed: {e}")))?;
        tokio::spawn(async move {
            let _ = driver.await;
        });
        let runtime = current_runtime();
        self.speaks_h2.store(true, Ordering::Release);
        let load = Arc::new(H2Load {
            in_flight: AtomicUsize::new(1),
            idle_since: Mutex::new(crate::clock::now()),
        });
        let mut shared = self.h2.lock().expect("the pool lock is never poisoned");
        self.opened_h2.store(true, Ordering::Release);
        shared.push(SharedH2 {
            sender: sender.clone(),
            load: load.clone(),
            runtime,
        });
        drop(shared);
        Ok(Connection {
            link: Link::H2 {
                sender,
                _slot: StreamSlot(load),
            },
            runtime,
            reused: false,
            pool: self.clone(),
        })
    }
}

/// Which HTTP/2 connections (each given as its runtime and, when it has no call, for how long)
/// the sweep keeps: every busy one; per runtime, the one idle the shortest while under `expiry`;
/// every other idle one while under `spare_expiry`.
fn spare_h2_kept<R: PartialEq>(
    open: &[(R, Option<Duration>)],
    expiry: Duration,
    spare_expiry: Duration,
) -> Vec<bool> {
    let freshest_of = |here: &R| {
        (open.iter())
            .enumerate()
            .filter_map(|(at, (runtime, idle))| Some((at, (*idle)?)).filter(|_| runtime == here))
            .min_by_key(|(_, idle)| *idle)
            .map(|(at, _)| at)
    };
    (open.iter().enumerate())
        .map(|(at, (runtime, idle))| match idle {
            None => true,
            Some(idle) if freshest_of(runtime) == Some(at) => *idle < expiry,
            Some(idle) => *idle < spare_expiry,
        })
        .collect()
}

/// How each upstream is spoken to: its dialer and HTTP choices.
pub struct PoolSettings {
    /// Opens its connections.
    pub dial: Arc<dyn Dial>,
    /// HTTP/1.1, HTTP/2 or whichever TLS negotiates.
    pub http: HttpVersion,
    /// Calls in flight on one HTTP/2 connection before another is opened.
    pub h2_max_streams: usize,
}

/// Every upstream's dialer and pool of idle connections.
pub struct Upstreams {
    pools: Vec<Arc<Pool>>,
}

impl Upstreams {
    /// One pool per upstream, in configuration order.
    pub fn new(settings: Vec<PoolSettings>) -> Upstreams {
        Upstreams {
            pools: settings
                .into_iter()
                .map(|settings| {
                    Arc::new(Pool {
                        dial: settings.dial,
                        http: settings.http,
                        h2_max_streams: settings.h2_max_streams.max(1),
                        idle: IdleSlots::default(),
                        h2: Mutex::new(Vec::new()),
                        speaks_h2: AtomicBool::new(settings.http == HttpVersion::Http2),
                        opened_h2: AtomicBool::new(false),
                        h2_dialing: tokio::sync::Mutex::new(()),
                        h2_opening_beside: Mutex::new(Vec::new()),
                    })
                })
                .collect(),
        }
    }

    /// Closes the idle connections that expired or that the server has closed (a socket left in
    /// CLOSE-WAIT otherwise), and HTTP/2 connections without a call for as long; the pools keep
    /// the rest. [`Upstreams::sweep_until_dropped`] runs it every [`SWEEP_EVERY`].
    pub fn sweep(&self) {
        let now = crate::clock::now();
        for pool in &self.pools {
            (pool.idle)
                .retain(|i| now.duration_since(i.since) < IDLE_EXPIRY && i.connection.usable());
            // HTTP/2: a connection without calls is kept IDLE_EXPIRY if it is its runtime's
            // only one idle, SPARE_H2_EXPIRY if another idle one of that runtime could take its
            // calls (what a burst opened).
            let mut shared = pool.h2.lock().expect("the pool lock is never poisoned");
            shared.retain(|c| !c.sender.is_closed());
            let idle_for = |c: &SharedH2| {
                (c.load.in_flight.load(Ordering::Acquire) == 0).then(|| {
                    now.duration_since(
                        *c.load
                            .idle_since
                            .lock()
                            .expect("the pool lock is never poisoned"),
                    )
                })
            };
            let idle: Vec<_> = shared.iter().map(|c| (c.runtime, idle_for(c))).collect();
            let keep = spare_h2_kept(&idle, IDLE_EXPIRY, SPARE_H2_EXPIRY);
            let mut at = 0;
            shared.retain(|_| {
                at += 1;
                keep[at - 1]
            });
        }
    }

    /// Sweeps the pools of `upstreams` every [`SWEEP_EVERY`] until they are dropped.
    pub async fn sweep_until_dropped(upstreams: std::sync::Weak<Upstreams>) {
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            let Some(upstreams) = upstreams.upgrade() else {
                return;
            };
            upstreams.sweep();
        }
    }

    /// How many idle connections each upstream's pool holds, in configuration order.
    pub fn idle(&self) -> Vec<usize> {
        (self.pools.iter()).map(|pool| pool.idle.len()).collect()
    }

    /// How many HTTP/2 connections each upstream has open, in configuration order.
    pub fn h2_connections(&self) -> Vec<usize> {
        (self.pools.iter())
            .map(|pool| {
                let shared = pool.h2.lock().expect("the pool lock is never poisoned");
                shared.iter().filter(|c| !c.sender.is_closed()).count()
            })
            .collect()
    }

    /// [`UpstreamBody::release`] for a body of upstream `index`'s, given back through the pool
    /// these upstreams hold: the pool's count, which both serving threads write, is not taken
    /// and dropped again for it. A body from another set of pools (a reload's) goes back to its
    /// own.
    pub fn release(&self, index: usize, body: UpstreamBody) {
        match self.pools.get(index) {
            Some(pool) if Arc::ptr_eq(pool, &body.connection.pool) => body.release_to(pool),
            _ => body.release(),
        }
    }

    /// A connection to upstream `index` that needs no waiting: a stream on a shared HTTP/2 one
    /// with room, or an idle pooled HTTP/1.1 one. Most calls find one, and so never build the
    /// future of [`Upstreams::connect`] (DNS, TCP and TLS: a kilobyte, moved into its timeout).
    pub fn ready(&self, index: usize) -> Option<Connection> {
        let pool = &self.pools[index];
        let runtime = current_runtime();
        if let Some(connection) = pool.take_h2_or_borrow(runtime) {
            return Some(connection);
        }
        if pool.speaks_h2.load(Ordering::Acquire) {
            return None;
        }
        let now = crate::clock::now();
        loop {
            let (mut idle, borrowed) = pool.idle.take(runtime)?;
            // One that went back to the pool a moment ago was found usable then; the server
            // closing it since is rare and costs one uncounted redial (`Attempt::exchange`).
            let idle_for = now.duration_since(idle.since);
            if idle_for < IDLE_EXPIRY && (idle_for < CHECKED_RECENTLY || idle.connection.usable()) {
                if borrowed {
                    pool.open_own_beside(false);
                }
                idle.connection.reused = true;
                return Some(idle.connection);
            }
        }
    }

    /// A connection to upstream `index`: one [`Upstreams::ready`] finds, or a new one (not
    /// bounded here: the caller puts the connect deadline around this).
    pub async fn connect(&self, index: usize) -> Result<Connection, FailureKind> {
        if let Some(connection) = self.ready(index) {
            return Ok(connection);
        }
        let pool = &self.pools[index];
        if pool.speaks_h2.load(Ordering::Acquire) {
            // One opener at a time; whoever waited finds room on the connection just opened.
            let _opening = pool.h2_dialing.lock().await;
            if let Some(connection) = pool.take_h2_or_borrow(current_runtime()) {
                return Ok(connection);
            }
            let io = pool.dial.dial().await?;
            return pool.open(io).await;
        }
        let io = pool.dial.dial().await?;
        pool.open(io).await
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
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.data.take() {
            Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
            None => {
                if let Some(written) = self.written.take() {
                    let _ = written.send(());
                }
                Poll::Ready(None)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_takes_its_own_runtimes_http2_connection_and_borrows_only_while_none_has_room() {
        // Runtimes 1 and 2; each connection as (its runtime, calls in flight); 10 streams each.
        assert_eq!(
            pick_h2::<u8>([].into_iter(), &1, 10),
            None,
            "nothing open: open one"
        );
        // Runtime 2 has none of its own: it borrows the least loaded with room of any runtime's.
        assert_eq!(
            pick_h2([(1, 4), (1, 2)].into_iter(), &2, 10),
            Some((1, true))
        );
        assert_eq!(
            pick_h2([(1, 10), (1, 10)].into_iter(), &2, 10),
            None,
            "all full"
        );
        // Runtime 1 takes its own, the least loaded with room, even when another runtime's has
        // more room; with its own all full it borrows rather than wait for a dial.
        assert_eq!(
            pick_h2([(2, 0), (1, 7), (1, 3)].into_iter(), &1, 10),
            Some((2, false))
        );
        assert_eq!(
            pick_h2([(2, 3), (1, 10), (2, 1)].into_iter(), &1, 10),
            Some((2, true))
        );
        assert_eq!(pick_h2([(2, 10), (1, 10)].into_iter(), &1, 10), None);
    }

    #[test]
    fn a_runtime_opens_one_http2_connection_beside_at_a_time_and_waits_after_a_failure() {
        let now = Instant::now();
        let mut attempts = Vec::new();
        assert!(may_open_beside(&mut attempts, 1, now));
        assert!(!may_open_beside(&mut attempts, 1, now), "one under way");
        assert!(
            may_open_beside(&mut attempts, 2, now),
            "another runtime's own"
        );
        // Runtime 1's attempt failed: none again before the retry time, one at it.
        attempts[0].1 = Some(now + BESIDE_RETRY_AFTER);
        let almost = now + BESIDE_RETRY_AFTER - Duration::from_millis(1);
        assert!(!may_open_beside(&mut attempts, 1, almost));
        assert!(may_open_beside(&mut attempts, 1, now + BESIDE_RETRY_AFTER));
        assert!(
            !may_open_beside(&mut attempts, 1, now + BESIDE_RETRY_AFTER),
            "under way"
        );
    }

    #[test]
    fn the_sweep_keeps_each_runtimes_freshest_idle_http2_connection_longer() {
        let s = Duration::from_secs;
        let (expiry, spare) = (s(60), s(10));
        // Busy ones stay; per runtime the freshest idle stays under `expiry`, the rest only
        // under `spare`.
        let open = [
            (1, None),
            (1, Some(s(30))),
            (1, Some(s(20))),
            (2, Some(s(40))),
            (2, Some(s(5))),
        ];
        assert_eq!(
            spare_h2_kept(&open, expiry, spare),
            vec![true, false, true, false, true]
        );
        // A runtime's only idle one goes after `expiry`, not before.
        assert_eq!(
            spare_h2_kept(&[(1, Some(s(59))), (2, Some(s(61)))], expiry, spare),
            vec![true, false]
        );
        // Two idle equally long: the first is the one kept.
        assert_eq!(
            spare_h2_kept(&[(1, Some(s(15))), (1, Some(s(15)))], expiry, spare),
            vec![true, false]
        );
    }
}
