//! One attempt, told in the phases of `docs/timeouts.md`: connect, write, first byte, first
//! token — the commit point — and then one of three endings: commit a stream to the client,
//! assemble a whole answer from a stream, or read a whole body. Every wait is bounded by its
//! phase's deadline (capped by the attempt's and the call's). A failure before the commit point
//! goes back to the loop with how far the attempt got; the loop may try again.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::call::{Call, Target};
use crate::commit::{CommittedStream, Handover, Response, ResponseBody};
use crate::deadlines::AttemptDeadlines;
use crate::error::{AttemptRecord, FailureKind};
use crate::health::Lease;
use crate::protocol::{Assemble, Classify, Endpoint, Protocol, Signal, json};
use crate::sse::Scanner;
use crate::upstream::request::{self, response_headers};
use crate::upstream::{Connection, ExchangeError, Timeline, UpstreamBody};
use crate::vocabulary::{Outcome, Phase};

/// Largest body read into memory before it is sent on: a non-streaming one, a stream assembled
/// into a whole answer, or what a stream sends before its first token (held until then).
const MAX_WHOLE_BODY: usize = 256 * 1024 * 1024;
/// Largest error body kept from an upstream.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// What one attempt came to: the committed response, or the failure and its record.
pub(crate) type AttemptResult = Result<Response, (FailureKind, AttemptRecord)>;

/// Makes try `n` (0-based) of `call` on `target`. A committed stream takes the lease with it
/// (its verdict comes at the stream's end); otherwise the lease stays with the caller.
pub(crate) async fn run(
    call: &Call<'_>,
    target: &Target,
    n: u32,
    lease: &mut Option<Lease<'_>>,
) -> AttemptResult {
    let start = crate::clock::now();
    let mut attempt = Attempt {
        call,
        target,
        deadlines: call.deadlines.attempt(n, start),
        phase: Phase::Connect,
        timeline: Timeline::new(start),
        status: None,
    };
    let result = attempt.go(lease).await;
    let record = |outcome| AttemptRecord {
        upstream: target.name.clone(),
        model: target.model.clone(),
        phase: attempt.phase,
        elapsed: crate::clock::since(start),
        outcome,
        status: attempt.status,
    };
    match result {
        Ok(mut response) => {
            response.trail = vec![record(Outcome::Ok)];
            response.timeline = Some(attempt.timeline);
            Ok(response)
        }
        Err(kind) => {
            let code = kind.code();
            tracing::debug!(upstream = %target.name, %code, phase = %attempt.phase, "attempt failed");
            Err((kind, record(Outcome::Failed(code))))
        }
    }
}

/// One attempt in progress: how far it got and its moments so far.
struct Attempt<'a> {
    call: &'a Call<'a>,
    target: &'a Target,
    deadlines: AttemptDeadlines,
    phase: Phase,
    timeline: Timeline,
    status: Option<u16>,
}

impl Attempt<'_> {
    /// The phases in order, then the ending the response calls for.
    async fn go(&mut self, lease: &mut Option<Lease<'_>>) -> Result<Response, FailureKind> {
        let body = self.request_body()?;
        let (parts, mut body) = self.exchange(body).await?;
        self.status = Some(parts.status.as_u16());
        if !parts.status.is_success() {
            return Err(self.error_status(&parts.headers, parts.status, body).await);
        }
        let request = self.call.request;
        let content_type = parts.headers.get(header::CONTENT_TYPE);
        let content_type = content_type.and_then(|v| v.to_str().ok());
        (request.endpoint.protocol())
            .check_answer(request.endpoint, request.stream, content_type)
            .map_err(FailureKind::Malformed)?;
        let event_stream = is_event_stream(&parts.headers);
        let upstream = &self.call.shared.upstream_names[self.target.upstream];
        let headers = response_headers(parts.headers, upstream.clone());
        if !(self.call.streams_upstream() && event_stream) {
            return self.read_whole(parts.status, headers, body).await;
        }
        if self.call.assemble {
            return self.assemble_whole(parts.status, headers, body).await;
        }
        let mut reader = StreamReader::new(self.call.request.endpoint, None);
        let held = self.first_token(&mut body, &mut reader, false).await?;
        Ok(self.commit_stream(parts.status, headers, body, reader, held, lease))
    }

    /// The body to send: the target's model spliced in, and asking for a stream when a whole
    /// answer is to be assembled from one.
    fn request_body(&self) -> Result<Bytes, FailureKind> {
        let request = self.call.request;
        if self.call.assemble {
            return request
                .streaming_body_for(&self.target.model)
                .map_err(FailureKind::Malformed);
        }
        Ok(if self.target.model.is_empty() {
            request.body.clone()
        } else {
            request.body_for(&self.target.model)
        })
    }

    /// Connect, write and first byte. A pooled connection the server had already closed before
    /// answering is dialed afresh, once, uncounted.
    async fn exchange(
        &mut self,
        body: Bytes,
    ) -> Result<(http::response::Parts, UpstreamBody), FailureKind> {
        let mut redialed = false;
        loop {
            let connection = self.connect().await?;
            let reused = connection.reused;
            match self.write_and_first_byte(connection, body.clone()).await? {
                Ok(exchange) => return Ok(exchange),
                Err(e) if reused && !redialed && e.is_stale() => {
                    redialed = true;
                }
                Err(e) => return Err(exchange_failure(&e)),
            }
        }
    }

    /// Connect: a pooled connection at once, or DNS, TCP and TLS within `connect`.
    async fn connect(&mut self) -> Result<Connection, FailureKind> {
        self.phase = Phase::Connect;
        let upstreams = &self.call.shared.upstreams;
        let connection = match upstreams.ready(self.target.upstream) {
            Some(connection) => connection,
            // Dialing boxed, and only when taken: its future (DNS, TCP, TLS, the HTTP/2
            // handshake) is larger than the rest of an attempt's, and every future above this
            // one would carry its room, and copy it, on every call.
            None => {
                let connect = self.deadlines.connect();
                timeout_at(
                    connect.at,
                    Box::pin(upstreams.connect(self.target.upstream)),
                )
                .await
                .map_err(|_| FailureKind::Timeout(connect.limit))??
            }
        };
        self.timeline.connected = Some(crate::clock::now());
        self.timeline.reused = connection.reused;
        Ok(connection)
    }

    /// Write, then first byte: the request handed over within `write`, then its response head
    /// awaited within `first_byte` (for a stream, `first_token` caps that wait too).
    async fn write_and_first_byte(
        &mut self,
        mut connection: Connection,
        body: Bytes,
    ) -> Result<Result<(http::response::Parts, UpstreamBody), ExchangeError>, FailureKind> {
        self.phase = Phase::Write;
        let upstream = &self.call.shared.config.upstreams[self.target.upstream];
        let connected = self.timeline.connected.unwrap_or(self.timeline.start);
        let write = self.deadlines.write(connected);
        // HTTP/1.1: the request is written straight from the call, and the head read on this
        // task, with no `http::Request` built in between.
        if let Some(h1) = connection.h1() {
            let call = self.call.request;
            let head = |out: &mut Vec<u8>| request::encode_h1(call, upstream, out);
            match timeout_at(write.at, h1.write_request(&call.method, head, &body)).await {
                Err(_) => return Err(FailureKind::Timeout(write.limit)),
                Ok(Err(e)) => return Ok(Err(ExchangeError::H1(e))),
                Ok(Ok(())) => {}
            }
            let sent = crate::clock::now();
            self.timeline.written = Some(sent);
            self.phase = Phase::FirstByte;
            let head = self.deadlines.headers(sent, self.call.streams_upstream());
            let read = timeout_at(head.at, h1.read_head(call.method == http::Method::HEAD))
                .await
                .map_err(|_| FailureKind::Timeout(head.limit))?;
            return Ok(match read {
                Ok(parts) => {
                    self.timeline.headers = Some(crate::clock::now());
                    Ok((parts, connection.into_body()))
                }
                Err(e) => Err(ExchangeError::H1(e)),
            });
        }
        // HTTP/2 boxed, as dialing is: its futures would double the room of every attempt's.
        Box::pin(self.write_and_first_byte_h2(connection, body, write)).await
    }

    /// [`Attempt::write_and_first_byte`] on an HTTP/2 connection: the request handed to the
    /// connection within `write`, then its response head awaited within `first_byte`.
    async fn write_and_first_byte_h2(
        &mut self,
        connection: Connection,
        body: Bytes,
        write: crate::deadlines::Bound,
    ) -> Result<Result<(http::response::Parts, UpstreamBody), ExchangeError>, FailureKind> {
        let upstream = &self.call.shared.config.upstreams[self.target.upstream];
        let (request, mut written) = request::build(self.call.request, upstream, body, true)?;
        let send = connection.send(request);
        tokio::pin!(send);
        let early = tokio::select! {
            biased;
            result = &mut send => Some(result),
            _ = &mut written => None,
            _ = sleep_until(write.at) => return Err(FailureKind::Timeout(write.limit)),
        };
        let sent = crate::clock::now();
        self.timeline.written = Some(sent);
        self.phase = Phase::FirstByte;
        let result = match early {
            Some(result) => result,
            None => {
                let head = self.deadlines.headers(sent, self.call.streams_upstream());
                timeout_at(head.at, &mut send)
                    .await
                    .map_err(|_| FailureKind::Timeout(head.limit))?
            }
        };
        if result.is_ok() {
            self.timeline.headers = Some(crate::clock::now());
        }
        Ok(result)
    }

    /// An error status: its `Retry-After` and the start of its body, for the message and the
    /// client.
    async fn error_status(
        &mut self,
        headers: &HeaderMap,
        status: StatusCode,
        mut body: UpstreamBody,
    ) -> FailureKind {
        let retry_after = crate::retry::retry_after(headers);
        let mut kept = BytesMut::new();
        while kept.len() < MAX_ERROR_BODY {
            match timeout_at(self.deadlines.end.at, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        let room = MAX_ERROR_BODY - kept.len();
                        kept.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
                _ => break,
            }
        }
        FailureKind::Status {
            status: status.as_u16(),
            retry_after,
            body: self.scrubbed(kept.freeze()),
        }
    }

    /// `body` without the upstream's own key, should the upstream echo it in an error ("Incorrect
    /// API key provided: sk-…"): the body reaches the client and the log.
    fn scrubbed(&self, body: Bytes) -> Bytes {
        let upstream = &self.call.shared.config.upstreams[self.target.upstream];
        let Some(key) = upstream.api_key.as_ref().map(|k| k.expose().as_bytes()) else {
            return body;
        };
        if key.is_empty() || memchr::memmem::find(&body, key).is_none() {
            return body;
        }
        let mut out = Vec::with_capacity(body.len());
        let mut rest = &body[..];
        while let Some(at) = memchr::memmem::find(rest, key) {
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(b"[redacted]");
            rest = &rest[at + key.len()..];
        }
        out.extend_from_slice(rest);
        Bytes::from(out)
    }

    /// First token: reads the stream until its first meaningful content (the commit point) or,
    /// with `to_end`, to its end. Returns the frames read, to be sent first (none when an
    /// assembler takes them).
    async fn first_token(
        &mut self,
        body: &mut UpstreamBody,
        reader: &mut StreamReader,
        to_end: bool,
    ) -> Result<Vec<Bytes>, FailureKind> {
        self.phase = Phase::FirstToken;
        let sent = self.timeline.written.or(self.timeline.headers);
        let sent = sent.unwrap_or(self.timeline.start);
        let mut held = Vec::new();
        let mut read = 0;
        while let Some(mut data) = reader.next(body, &self.deadlines, sent).await? {
            // What is read here is kept (assembled, or held to be sent first), so it is bounded
            // as a whole body is: an upstream that streams without end would otherwise fill
            // memory until the call's deadline.
            read += data.len();
            if read > MAX_WHOLE_BODY {
                return Err(FailureKind::Malformed(if to_end {
                    too_large()
                } else {
                    format!(
                        "the stream sent more than {} MiB before its first token",
                        MAX_WHOLE_BODY >> 20
                    )
                }));
            }
            let ScanResult { content, end } =
                reader.scan(&data).map_err(|failure| match failure {
                    FailureKind::Status {
                        status,
                        retry_after,
                        body,
                    } => FailureKind::Status {
                        status,
                        retry_after,
                        body: self.scrubbed(body),
                    },
                    other => other,
                })?;
            if let Some(end) = end {
                data.truncate(end);
            }
            if content && self.timeline.first_token.is_none() {
                self.timeline.first_token = reader.last_content;
                self.phase = Phase::Body;
            }
            if reader.assembler.is_none() {
                held.push(data);
            }
            if reader.ended || (content && !to_end) {
                break;
            }
        }
        Ok(held)
    }

    /// Commit a stream: the rest of it goes to the client as it comes, watched by `idle`, with
    /// the lease (the health verdict comes at its end).
    fn commit_stream(
        &mut self,
        status: StatusCode,
        mut headers: HeaderMap,
        body: UpstreamBody,
        reader: StreamReader,
        held: Vec<Bytes>,
        lease: &mut Option<Lease<'_>>,
    ) -> Response {
        let first = *self.timeline.first_token.get_or_insert_with(Instant::now);
        self.phase = Phase::Body;
        headers.insert(
            crate::header_names::SERVER_TIMING,
            self.timeline.server_timing(),
        );
        if let (Some(lease), Some(written)) = (lease.as_ref(), self.timeline.written) {
            lease.first_token(first.saturating_duration_since(written));
        }
        let stream = CommittedStream::new(Handover {
            model: self.call.route.name.clone(),
            lease: lease.take().map(Lease::for_stream),
            shared: self.call.shared.clone(),
            body,
            scanner: reader.scanner,
            classifier: (reader.classifier)
                .unwrap_or_else(|| reader.protocol.classifier(reader.endpoint)),
            held,
            deadlines: self.deadlines,
            endpoint: reader.endpoint,
            ended: reader.ended,
            finish_seen: reader.finished,
            last_sequence: reader.last_sequence,
            upstream: self.target.clone(),
            describer: self.call.describer(),
        });
        Response {
            status,
            headers,
            body: ResponseBody::Stream(Box::new(stream)),
            trail: Vec::new(),
            timeline: None,
        }
    }

    /// Assemble a whole answer: the stream is read to its end (so every failure up to it can
    /// still be retried) and put together in the shape of a non-streaming answer.
    ///
    /// An `async` block, not an `async fn`: an `async fn` keeps its arguments twice in its
    /// future (as given, and as moved into its body), here the head's headers and the body.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would hold its arguments twice in its future"
    )]
    fn assemble_whole(
        &mut self,
        status: StatusCode,
        mut headers: HeaderMap,
        mut body: UpstreamBody,
    ) -> impl Future<Output = Result<Response, FailureKind>> {
        async move {
            let endpoint = self.call.request.endpoint;
            let assembler = endpoint.protocol().assembler(endpoint);
            let mut reader = StreamReader::new(endpoint, Some(assembler));
            self.first_token(&mut body, &mut reader, true).await?;
            self.phase = Phase::Done;
            let upstreams = &self.call.shared.upstreams;
            upstreams.release(self.target.upstream, body);
            let whole = reader
                .assembler
                .expect("assemble_whole made its reader with an assembler")
                .finish();
            // The headers of a whole answer, not of the stream it was assembled from: its content
            // type, and without the `no-cache` an event stream is sent with (any other caching
            // directive the upstream gave is kept).
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if (headers.get(header::CACHE_CONTROL))
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"))
            {
                headers.remove(header::CACHE_CONTROL);
            }
            Ok(self.whole(status, headers, whole))
        }
    }

    /// Read a whole body, each read within `idle`; a JSON body must parse. An `async` block,
    /// as [`Attempt::assemble_whole`] is.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would hold its arguments twice in its future"
    )]
    fn read_whole(
        &mut self,
        status: StatusCode,
        headers: HeaderMap,
        mut body: UpstreamBody,
    ) -> impl Future<Output = Result<Response, FailureKind>> {
        async move {
            self.phase = Phase::Body;
            let mut whole = BytesMut::new();
            let mut last = crate::clock::now();
            loop {
                let idle = self.deadlines.idle(last);
                let frame = timeout_at(idle.at, body.frame())
                    .await
                    .map_err(|_| FailureKind::Timeout(idle.limit))?;
                let data = match frame {
                    None => break,
                    Some(Err(e)) => return Err(body_failure(&e)),
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => data,
                        Err(_) => continue,
                    },
                };
                if whole.len() + data.len() > MAX_WHOLE_BODY {
                    return Err(FailureKind::Malformed(too_large()));
                }
                whole.extend_from_slice(&data);
                last = crate::clock::now();
            }
            let whole = whole.freeze();
            // Checked by the scan, which reads as much as serde but without its reader's set-up
            // and allocation (a fifth less for a usual answer); serde only for what the scan
            // does not take, for its verdict and message.
            if is_json(&headers)
                && !json::one_value(&whole)
                && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&whole)
            {
                return Err(FailureKind::Malformed(format!(
                    "the response body is not valid JSON: {e}"
                )));
            }
            self.phase = Phase::Done;
            let upstreams = &self.call.shared.upstreams;
            upstreams.release(self.target.upstream, body);
            Ok(self.whole(status, headers, whole))
        }
    }

    /// A whole answer, with its phases in `server-timing`.
    fn whole(&self, status: StatusCode, mut headers: HeaderMap, body: Bytes) -> Response {
        headers.insert(
            crate::header_names::SERVER_TIMING,
            self.timeline.server_timing(),
        );
        Response {
            status,
            headers,
            body: ResponseBody::Full(body),
            trail: Vec::new(),
            timeline: None,
        }
    }
}

/// What one frame of a stream held.
struct ScanResult {
    /// Some event carried meaningful content.
    content: bool,
    /// The end event ended at this offset: nothing after it goes on.
    end: Option<usize>,
}

/// A stream read before the commit point: its events classified by the protocol, each frame
/// waited for within `first_token` until content came and within `idle` after it.
struct StreamReader {
    endpoint: Endpoint,
    protocol: &'static dyn Protocol,
    scanner: Scanner,
    /// Reads what each event means (handed on to the committed stream). Made when first needed
    /// while an assembler reads the events, which reads nearly every one itself.
    classifier: Option<Box<dyn Classify>>,
    /// The end marker was seen.
    ended: bool,
    /// A finish reason was seen (or the endpoint needs none).
    finished: bool,
    /// When content last came.
    last_content: Option<Instant>,
    /// Takes every event when a whole answer is assembled.
    assembler: Option<Box<dyn Assemble>>,
    /// The number of the last event, in a protocol that numbers them.
    last_sequence: Option<u64>,
    /// Whether the stream numbers its events.
    numbered: bool,
}

impl StreamReader {
    fn new(endpoint: Endpoint, assembler: Option<Box<dyn Assemble>>) -> StreamReader {
        let protocol = endpoint.protocol();
        StreamReader {
            endpoint,
            protocol,
            scanner: Scanner::new(),
            classifier: assembler.is_none().then(|| protocol.classifier(endpoint)),
            ended: false,
            finished: !protocol.needs_finish_reason(endpoint),
            last_content: None,
            assembler,
            last_sequence: None,
            numbered: protocol.numbers_events(endpoint),
        }
    }

    /// The next frame's data, or `None` when the stream closed after its end marker.
    async fn next(
        &mut self,
        body: &mut UpstreamBody,
        deadlines: &AttemptDeadlines,
        sent: Instant,
    ) -> Result<Option<Bytes>, FailureKind> {
        loop {
            let wait = match self.last_content {
                None => deadlines.first_token(sent),
                Some(last) => deadlines.idle(last),
            };
            let frame = timeout_at(wait.at, body.frame())
                .await
                .map_err(|_| FailureKind::Timeout(wait.limit))?;
            match frame {
                None if self.ended => return Ok(None),
                None => return Err(FailureKind::Cut),
                Some(Err(_)) if self.ended => return Err(FailureKind::Cut),
                Some(Err(e)) => return Err(body_failure(&e)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// Scans `data`'s events: whether any carried content and where the end event ends, or the
    /// failure one reveals (an error event, a malformed chunk, an end marker before any finish
    /// reason).
    fn scan(&mut self, data: &Bytes) -> Result<ScanResult, FailureKind> {
        let mut reading = Reading {
            protocol: self.protocol,
            endpoint: self.endpoint,
            classifier: &mut self.classifier,
            assembler: self.assembler.as_deref_mut(),
            ended: &mut self.ended,
            finished: &mut self.finished,
            last_sequence: &mut self.last_sequence,
            numbered: self.numbered,
            content: false,
            failure: None,
            end: None,
        };
        self.scanner
            .push_to(data, &mut reading)
            .map_err(FailureKind::Malformed)?;
        let Reading {
            content,
            failure,
            end,
            ..
        } = reading;
        if let Some(failure) = failure {
            return Err(failure);
        }
        if content {
            self.last_content = Some(crate::clock::now());
        }
        Ok(ScanResult { content, end })
    }
}

/// One read's events, as [`StreamReader::scan`] takes them: what each means, handed to the
/// assembler when one takes them, and what they came to.
struct Reading<'a> {
    protocol: &'static dyn Protocol,
    endpoint: Endpoint,
    classifier: &'a mut Option<Box<dyn Classify>>,
    assembler: Option<&'a mut (dyn Assemble + 'static)>,
    ended: &'a mut bool,
    finished: &'a mut bool,
    last_sequence: &'a mut Option<u64>,
    numbered: bool,
    /// An event carried content.
    content: bool,
    /// The first failure an event revealed.
    failure: Option<FailureKind>,
    /// Where the end event ends in the read.
    end: Option<usize>,
}

impl Reading<'_> {
    /// The reader's classifier, made now if it was not yet.
    fn classifier(&mut self) -> &mut dyn Classify {
        let (protocol, endpoint) = (self.protocol, self.endpoint);
        &mut **(self.classifier).get_or_insert_with(|| protocol.classifier(endpoint))
    }
}

impl crate::sse::Events for Reading<'_> {
    fn event(&mut self, event: &crate::sse::Event<'_>, at: usize) {
        // An assembler that reads an event once for both jobs does; otherwise the event is
        // classified, then pushed.
        let once = match (self.assembler.as_mut(), event.data.as_deref()) {
            (Some(assembler), Some(data)) => assembler.push_classified(data),
            _ => None,
        };
        let pushed = once.is_some();
        let signal = once.unwrap_or_else(|| self.classifier().classify(event));
        if self.numbered
            && let Some(n) = self.protocol.sequence_number(self.endpoint, event)
        {
            *self.last_sequence = Some(n);
        }
        if let (
            false,
            Some(assembler),
            Signal::Nothing | Signal::Content | Signal::Finish { .. } | Signal::End,
        ) = (pushed, self.assembler.as_mut(), &signal)
            && let Err(message) = assembler.push_event(event)
        {
            self.failure.get_or_insert(FailureKind::Malformed(message));
        }
        match signal {
            Signal::Nothing => {}
            Signal::Content => self.content = true,
            Signal::Finish { content: with } => {
                self.content |= with;
                *self.finished = true;
            }
            Signal::End if *self.finished => {
                *self.ended = true;
                self.end.get_or_insert(at);
            }
            Signal::End => {
                self.failure.get_or_insert(FailureKind::Truncated);
            }
            Signal::UpstreamError(message) => {
                self.failure.get_or_insert(FailureKind::Status {
                    status: 500,
                    retry_after: None,
                    body: Bytes::from(message),
                });
            }
            Signal::Malformed(message) => {
                self.failure.get_or_insert(FailureKind::Malformed(message));
            }
        }
    }

    /// A numbered stream's events are each read for their number.
    fn takes_runs(&self) -> bool {
        !self.numbered
    }

    /// Runs of text chunks go straight to the assembler, or the classifier, that reads them in
    /// place (each is content).
    fn take_run(&mut self, text: &str) -> usize {
        let taken = match &mut self.assembler {
            Some(assembler) => assembler.push_run(text),
            None => self.classifier().classify_run(text),
        };
        self.content |= taken > 0;
        taken
    }
}

/// Whether a response is an SSE stream.
fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// Why a body over [`MAX_WHOLE_BODY`] was refused.
fn too_large() -> String {
    format!("the response is larger than {} MiB", MAX_WHOLE_BODY >> 20)
}

/// Whether a response says it is JSON.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"))
}

fn exchange_failure(error: &ExchangeError) -> FailureKind {
    if error.is_parse() {
        FailureKind::Malformed(format!("the response is not valid HTTP: {error}"))
    } else {
        FailureKind::Closed(source_text(error))
    }
}

fn body_failure(error: &ExchangeError) -> FailureKind {
    if error.is_parse() {
        FailureKind::Malformed(source_text(error))
    } else {
        FailureKind::Cut
    }
}

fn source_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
