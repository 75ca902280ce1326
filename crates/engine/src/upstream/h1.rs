//! HTTP/1.1 to an upstream, spoken by hand: one request at a time on a connection its caller
//! owns, the request written in one write, the response head parsed by `httparse`, and the body
//! framed (by length, chunked, or until the connection closes) straight out of the connection's
//! read buffer by whoever reads it.
//!
//! # Why by hand
//! hyper's client connection hands each request, its response and every body chunk across
//! channels between its dispatcher and the caller (a readiness signal, a oneshot for the head,
//! a channel for the body). A proxied call paid about 14,000 instructions for it, a sixth of its
//! whole. A connection that carries one exchange at a time for the task that owns it needs none
//! of that: the task reads the socket itself. HTTP/2 stays with hyper (see `upstream`).

use std::future::Future;
use std::io;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, header};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

use super::dial::BoxIo;

/// How many headers a response head may carry (hyper's bound too).
const MAX_HEADERS: usize = 100;
/// How much room a read gets at least.
const READ_SIZE: usize = 8 * 1024;
/// The longest chunk-size line accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// The most trailer bytes after a chunked body that are read (and dropped).
const MAX_TRAILERS: usize = 16 * 1024;
/// A request body up to this size is copied behind its head and written with it in one write.
const INLINE_BODY: usize = 64 * 1024;

/// Why an HTTP/1.1 exchange failed.
#[derive(Debug)]
pub enum Error {
    /// What the upstream sent is not HTTP/1.1: a head, a length or a chunk that does not parse,
    /// or a head over the bound.
    Parse(String),
    /// The connection failed or closed before any byte of the response: on a pooled
    /// connection, the server had closed it meanwhile, and the request may be sent again.
    Stale(String),
    /// The connection failed or closed while the response was coming.
    Closed(String),
}

impl Error {
    /// Whether the upstream sent something that is not HTTP.
    pub fn is_parse(&self) -> bool {
        matches!(self, Error::Parse(_))
    }

    /// Whether the connection was found closed before the response began.
    pub fn is_stale(&self) -> bool {
        matches!(self, Error::Stale(_))
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Parse(text) | Error::Stale(text) | Error::Closed(text) => f.write_str(text),
        }
    }
}

impl std::error::Error for Error {}

/// Where a connection stands between and within exchanges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Ready for a request.
    Idle,
    /// A request was written; its response head is awaited.
    Head,
    /// A response body is being read.
    Body(Framing),
    /// Closed, failed, or not to be reused: it takes no more requests.
    Closed,
}

/// How a response body's end is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `content-length`: this many bytes are still to come.
    Length(u64),
    /// `transfer-encoding: chunked`, at this point of a chunk.
    Chunked(Chunk),
    /// Neither: the body ends when the connection closes.
    UntilClose,
}

/// Where a chunked body's reading stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// A chunk-size line is next.
    Size,
    /// This many bytes of the current chunk are still to come.
    Data(u64),
    /// The CRLF after a chunk's data is next.
    DataEnd,
    /// After the last chunk: trailer lines (this many bytes of them so far) up to an empty one.
    Trailers(usize),
}

/// One HTTP/1.1 connection to an upstream.
pub struct H1 {
    io: BoxIo,
    /// What was read and not yet taken: a head in part, or body bytes.
    read: BytesMut,
    state: State,
    /// Whether the response being read lets the connection carry another request.
    keep_alive: bool,
    /// The buffer a request is written from, kept for the next.
    write: Vec<u8>,
}

impl H1 {
    /// A new connection over `io`, ready for a request.
    pub fn new(io: BoxIo) -> H1 {
        H1 {
            io,
            read: BytesMut::new(),
            state: State::Idle,
            keep_alive: false,
            write: Vec::new(),
        }
    }

    /// Writes a request: its request line and headers as `head` writes them (no framing
    /// header: `content-length` is added here, from `body`), then `body`. Every failure is
    /// [`Error::Stale`]: nothing of the response came yet.
    pub async fn write_request(
        &mut self,
        method: &Method,
        head: impl FnOnce(&mut Vec<u8>),
        body: &[u8],
    ) -> Result<(), Error> {
        if self.state != State::Idle {
            return Err(Error::Stale(
                "the connection cannot take another request".to_owned(),
            ));
        }
        self.state = State::Closed;
        let mut out = std::mem::take(&mut self.write);
        out.clear();
        head(&mut out);
        end_head(&mut out, method, body.len());
        let inline = body.len() <= INLINE_BODY;
        if inline {
            out.extend_from_slice(body);
        }
        let written = async {
            self.io.write_all(&out).await?;
            if !inline {
                self.io.write_all(body).await?;
            }
            self.io.flush().await
        }
        .await;
        self.write = out;
        written.map_err(|e| Error::Stale(format!("the request could not be written: {e}")))?;
        self.state = State::Head;
        Ok(())
    }

    /// Reads the response head to the request just written (`head_request`: it was a `HEAD`,
    /// whose response has no body), skipping informational (1xx) ones.
    pub async fn read_head(&mut self, head_request: bool) -> Result<http::response::Parts, Error> {
        // Room for a usual response in one read: a streamed answer of a few kilobytes, which the
        // buffer left by the last response often had only part of, took two. The last
        // response's bytes are usually gone, so this reuses the buffer's own memory.
        if self.read.is_empty() && self.read.capacity() < READ_SIZE {
            self.read.reserve(READ_SIZE);
        }
        let mut began = false;
        loop {
            if !self.read.is_empty() {
                began = true;
                match parse_head(&mut self.read, head_request) {
                    Err(e) => {
                        self.state = State::Closed;
                        return Err(e);
                    }
                    Ok(Some(Parsed::Informational)) => continue,
                    Ok(Some(Parsed::Head {
                        parts,
                        framing,
                        keep_alive,
                    })) => {
                        self.keep_alive = keep_alive;
                        self.state = State::Body(framing);
                        return Ok(parts);
                    }
                    Ok(None) if self.read.len() >= super::MAX_RESPONSE_BUFFER => {
                        self.state = State::Closed;
                        return Err(head_too_large());
                    }
                    Ok(None) => {}
                }
            }
            let read = std::future::poll_fn(|cx| self.poll_fill(cx)).await;
            let failure = match read {
                Ok(0) => "the connection closed".to_owned(),
                Ok(_) => continue,
                Err(e) => e.to_string(),
            };
            self.state = State::Closed;
            return Err(if began {
                Error::Closed(format!("{failure} before the response head was complete"))
            } else {
                Error::Stale(format!("{failure} before the response began"))
            });
        }
    }

    /// The next piece of the response body, `None` at its end.
    pub fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Error>>> {
        loop {
            let State::Body(framing) = &mut self.state else {
                return Poll::Ready(None);
            };
            let read = &mut self.read;
            match framing {
                Framing::Length(0) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(left) if !read.is_empty() => {
                    let n = (*left).min(read.len() as u64);
                    *left -= n;
                    return Poll::Ready(Some(Ok(read.split_to(n as usize).freeze())));
                }
                Framing::UntilClose if !read.is_empty() => {
                    return Poll::Ready(Some(Ok(read.split().freeze())));
                }
                Framing::Chunked(chunk) => match dechunk(chunk, read) {
                    Ok(Dechunked::Data(data)) => return Poll::Ready(Some(Ok(data))),
                    Ok(Dechunked::End) => {
                        self.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Dechunked::More) => {}
                    Err(e) => {
                        self.state = State::Closed;
                        return Poll::Ready(Some(Err(e)));
                    }
                },
                Framing::Length(_) | Framing::UntilClose => {}
            }
            let until_close = matches!(framing, Framing::UntilClose);
            let failure = match ready!(self.poll_fill(cx)) {
                Ok(0) if until_close => {
                    self.state = State::Closed;
                    return Poll::Ready(None);
                }
                Ok(0) => "the connection closed".to_owned(),
                Ok(_) => continue,
                Err(e) => e.to_string(),
            };
            self.state = State::Closed;
            return Poll::Ready(Some(Err(Error::Closed(format!(
                "{failure} before the response body was complete"
            )))));
        }
    }

    /// Whether the response body has been read to its end (or the connection is closed).
    pub fn body_done(&self) -> bool {
        !matches!(self.state, State::Body(_))
    }

    /// Whether the connection can take another request now: its last response was read to its
    /// end, allowed reuse, left nothing unread, and the server has not closed it since (polled
    /// once, without waiting).
    pub fn usable(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // A reader that stopped at its protocol's end marker leaves the body's own end (a
        // stream's last chunk) unread: it is taken now if it is here, never waited for.
        if matches!(self.state, State::Body(_))
            && !matches!(self.poll_body(&mut cx), Poll::Ready(None))
        {
            self.state = State::Closed;
        }
        if self.state != State::Idle {
            return false;
        }
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        if std::pin::Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut probe)
            .is_pending()
        {
            return true;
        }
        // Closed, failed, or sent something unasked for: not to be used again.
        self.state = State::Closed;
        false
    }

    /// A body read to its end: the connection is ready for the next request if the response
    /// allowed it and nothing follows it.
    fn finish(&mut self) {
        self.state = if self.keep_alive && self.read.is_empty() {
            State::Idle
        } else {
            State::Closed
        };
    }

    /// Reads what the socket has into the read buffer: the count read, 0 at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        // Everything read was taken: the next bytes go to the buffer's start again when no piece
        // of it is still held (never allocating), so a slow stream's small pieces keep reusing
        // the memory they already touched instead of walking through all of it: a page less
        // of every held stream's memory (docs/benchmarks-log.md, issue 19's step 30).
        let reclaimed = self.read.is_empty() && self.read.try_reclaim(READ_SIZE);
        if !reclaimed && self.read.capacity() - self.read.len() < READ_SIZE / 4 {
            self.read.reserve(READ_SIZE);
        }
        let read = self.io.read_buf(&mut self.read);
        std::pin::pin!(read).poll(cx)
    }
}

/// Writes `parts`' request line and headers to `out`, less any `content-length` (the
/// connection frames the body it sends).
pub fn encode_parts(out: &mut Vec<u8>, parts: &http::request::Parts) {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.reserve(64 + path.len() + parts.headers.len() * 32);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if name != header::CONTENT_LENGTH {
            header_line(out, name, value);
        }
    }
}

/// Writes one header line to `out`.
pub fn header_line(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Ends a request head: `content-length` for a body, or for an empty one where the method
/// usually carries one, then the blank line.
fn end_head(out: &mut Vec<u8>, method: &Method, body_len: usize) {
    let bodiless = matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
    );
    if body_len > 0 || !bodiless {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// What a complete head in the read buffer was.
enum Parsed {
    /// An informational (1xx) response, taken from the buffer: the real one follows.
    Informational,
    /// The response's head, how its body is framed, and whether the connection may be reused.
    Head {
        parts: http::response::Parts,
        framing: Framing,
        keep_alive: bool,
    },
}

/// Parses the response head at the front of `read` and takes it from there; `None` while it is
/// incomplete. The header values share the read buffer's memory rather than being copied. The
/// framing headers (`transfer-encoding`, `content-length`) are read for the body's framing and
/// left out of the map: they frame this hop's body, and the client's answer is framed anew.
fn parse_head(read: &mut BytesMut, head_request: bool) -> Result<Option<Parsed>, Error> {
    // Each header's name and value as offsets into the head, gathered before the head is
    // taken out of the buffer (the parser borrows it); as many as the head has, not room for
    // the most a head may have zeroed on every call.
    let (len, code, minor, spans) = {
        // Left unfilled: the parser writes the headers it finds, and filling a hundred empty
        // ones first cost more than parsing a usual head.
        let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            read,
            &mut headers,
        );
        let len = match parsed {
            // Over the bound even when its end came in the same read as the bound was passed.
            Ok(httparse::Status::Complete(len)) if len >= super::MAX_RESPONSE_BUFFER => {
                return Err(head_too_large());
            }
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(head_error(e)),
        };
        let base = read.as_ptr() as usize;
        let offset = |part: &[u8]| (part.as_ptr() as usize - base) as u32;
        let spans: Vec<(u32, u32, u32, u32)> = (response.headers.iter())
            .map(|header| {
                let name = offset(header.name.as_bytes());
                let value = offset(header.value);
                (
                    name,
                    name + header.name.len() as u32,
                    value,
                    value + header.value.len() as u32,
                )
            })
            .collect();
        let code = response.code.expect("a complete head has a status code");
        (len, code, response.version, spans)
    };
    let head = read.split_to(len).freeze();
    if (100..200).contains(&code) && code != 101 {
        return Ok(Some(Parsed::Informational));
    }
    let status = StatusCode::from_u16(code)
        .map_err(|_| Error::Parse(format!("the response's status {code} is not one")))?;
    let (headers, framing_headers) = read_headers(&head, spans)?;
    let version = if minor == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let framing = framing_headers.framing(status, head_request)?;
    let keep_alive = version == Version::HTTP_11
        && framing != Framing::UntilClose
        && status != StatusCode::SWITCHING_PROTOCOLS
        && !has_token(&headers, header::CONNECTION, "close");
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(Parsed::Head {
        parts,
        framing,
        keep_alive,
    }))
}

/// The head's headers at `spans` (offsets of each name and value into `head`): the map of all
/// but the framing headers, whose values share the head's memory, and what the framing headers
/// said.
fn read_headers(
    head: &Bytes,
    spans: Vec<(u32, u32, u32, u32)>,
) -> Result<(HeaderMap, FramingHeaders), Error> {
    let mut headers =
        HeaderMap::with_capacity(spans.len() + super::request::ADDED_RESPONSE_HEADERS);
    let mut framing = FramingHeaders::default();
    for (name_at, name_end, value_at, value_end) in spans {
        let (value_at, value_end) = (value_at as usize, value_end as usize);
        let name = header_name(&head[name_at as usize..name_end as usize])?;
        if name == header::TRANSFER_ENCODING {
            framing.transfer_encoding(&head[value_at..value_end]);
            continue;
        }
        if name == header::CONTENT_LENGTH {
            framing.content_length(&head[value_at..value_end]);
            continue;
        }
        let value =
            HeaderValue::from_maybe_shared(head.slice(value_at..value_end)).map_err(|_| {
                Error::Parse(format!(
                    "the response header `{name}` has a byte no header value may hold"
                ))
            })?;
        headers.append(name, value);
    }
    Ok((headers, framing))
}

/// A response header's name: a usual one without parsing it again.
fn header_name(text: &[u8]) -> Result<HeaderName, Error> {
    match crate::header_names::upstream_name(text) {
        Some(name) => Ok(name),
        None => HeaderName::from_bytes(text).map_err(|_| {
            Error::Parse(format!(
                "the response header name `{}` is not one",
                String::from_utf8_lossy(text)
            ))
        }),
    }
}

/// A response head longer than an upstream connection reads.
fn head_too_large() -> Error {
    Error::Parse(format!(
        "the response head is larger than {} KiB",
        super::MAX_RESPONSE_BUFFER >> 10
    ))
}

/// What is wrong with a response head the parser refused.
fn head_error(error: httparse::Error) -> Error {
    Error::Parse(match error {
        httparse::Error::TooManyHeaders => {
            format!("the response head has more than {MAX_HEADERS} headers")
        }
        e => format!("the response head does not parse ({e})"),
    })
}

/// What a head's framing headers said, read as the head is: the last transfer coding named, and
/// the one length its `content-length` values give (or what was wrong with them, told only if
/// the framing comes to the length).
#[derive(Default)]
struct FramingHeaders {
    /// A `transfer-encoding` header came; with the last coding its values name, if any.
    transfer_encoding: Option<Option<TransferCoding>>,
    /// The length the `content-length` values so far agree on.
    length: Option<u64>,
    /// Why the `content-length` values are not one length: the first that is not.
    bad_length: Option<String>,
}

/// The last transfer coding a response names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TransferCoding {
    Chunked,
    Other,
}

impl FramingHeaders {
    /// One `transfer-encoding` value: its codings, in order. A value that is not visible ASCII
    /// names none.
    fn transfer_encoding(&mut self, value: &[u8]) {
        let mut last = self.transfer_encoding.flatten();
        if let Some(text) = visible_ascii(value) {
            for coding in text.split(',').map(str::trim) {
                if !coding.is_empty() {
                    last = Some(if coding.eq_ignore_ascii_case("chunked") {
                        TransferCoding::Chunked
                    } else {
                        TransferCoding::Other
                    });
                }
            }
        }
        self.transfer_encoding = Some(last);
    }

    /// One `content-length` value: one or more comma-separated lengths, each the same as every
    /// one before it.
    fn content_length(&mut self, value: &[u8]) {
        if self.bad_length.is_some() {
            return;
        }
        for part in value.split(|&b| b == b',') {
            let part = part.trim_ascii();
            let parsed =
                (!part.is_empty() && part.len() <= 19 && part.iter().all(u8::is_ascii_digit))
                    .then(|| part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')));
            match (parsed, self.length) {
                (Some(n), None) => self.length = Some(n),
                (Some(n), Some(before)) if n == before => {}
                _ => {
                    let text = String::from_utf8_lossy(value);
                    let text: String = text.chars().take(40).collect();
                    self.bad_length = Some(format!(
                        "the response's content-length `{text}` is not one length"
                    ));
                    return;
                }
            }
        }
    }

    /// How the body is framed (RFC 9112 §6.3): none for a `HEAD`, 1xx, 204 and 304; chunked when
    /// that is the last transfer coding, else until the connection closes; else
    /// `content-length`; else until the connection closes.
    fn framing(self, status: StatusCode, head_request: bool) -> Result<Framing, Error> {
        if head_request
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Ok(Framing::Length(0));
        }
        if let Some(last) = self.transfer_encoding {
            return Ok(match last {
                Some(TransferCoding::Chunked) => Framing::Chunked(Chunk::Size),
                _ => Framing::UntilClose,
            });
        }
        if let Some(bad) = self.bad_length {
            return Err(Error::Parse(bad));
        }
        Ok(self.length.map_or(Framing::UntilClose, Framing::Length))
    }
}

/// `value` as text when every byte of it is visible ASCII, a space or a tab (what
/// `HeaderValue::to_str` accepts).
fn visible_ascii(value: &[u8]) -> Option<&str> {
    if !(value.iter()).all(|&b| b == b'\t' || (b' '..=b'~').contains(&b)) {
        return None;
    }
    std::str::from_utf8(value).ok()
}

/// Whether a header of `name` lists `token` (compared without case).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    (headers.get_all(name).iter())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// What one step of reading a chunked body gave.
enum Dechunked {
    /// Body bytes.
    Data(Bytes),
    /// The body's end (the last chunk and its trailers).
    End,
    /// More must be read first.
    More,
}

/// Takes the next body bytes of a chunked body from `read`, moving `chunk` along.
fn dechunk(chunk: &mut Chunk, read: &mut BytesMut) -> Result<Dechunked, Error> {
    loop {
        match chunk {
            Chunk::Size => {
                // The bound holds whether the line's end came in this read or has yet to.
                let found = memchr::memchr(b'\n', read);
                if found.unwrap_or(read.len()) > MAX_CHUNK_LINE {
                    return Err(Error::Parse(format!(
                        "a chunk-size line is longer than {} KiB",
                        MAX_CHUNK_LINE >> 10
                    )));
                }
                let Some(at) = found else {
                    return Ok(Dechunked::More);
                };
                let size = chunk_size(&read[..at])?;
                read.advance(at + 1);
                *chunk = if size == 0 {
                    Chunk::Trailers(0)
                } else {
                    Chunk::Data(size)
                };
            }
            Chunk::Data(left) => {
                if read.is_empty() {
                    return Ok(Dechunked::More);
                }
                let n = (*left).min(read.len() as u64);
                *left -= n;
                if *left == 0 {
                    *chunk = Chunk::DataEnd;
                }
                return Ok(Dechunked::Data(read.split_to(n as usize).freeze()));
            }
            Chunk::DataEnd => {
                match read.as_ref() {
                    [] | [b'\r'] => return Ok(Dechunked::More),
                    [b'\r', b'\n', ..] => read.advance(2),
                    [b'\n', ..] => read.advance(1),
                    _ => {
                        return Err(Error::Parse(
                            "a chunk's data does not end where its size says".to_owned(),
                        ));
                    }
                }
                *chunk = Chunk::Size;
            }
            Chunk::Trailers(seen) => {
                // Counted to the end of the line, or of what is here of it: the bound holds
                // for many short lines as for one long one, however they arrive.
                let found = memchr::memchr(b'\n', read);
                if *seen + found.map_or(read.len(), |at| at + 1) > MAX_TRAILERS {
                    return Err(Error::Parse(format!(
                        "the trailers are longer than {} KiB",
                        MAX_TRAILERS >> 10
                    )));
                }
                let Some(at) = found else {
                    return Ok(Dechunked::More);
                };
                let empty = at == 0 || (at == 1 && read[0] == b'\r');
                *seen += at + 1;
                read.advance(at + 1);
                if empty {
                    return Ok(Dechunked::End);
                }
            }
        }
    }
}

/// The size a chunk-size line gives (hex digits, then optional extensions after `;`).
fn chunk_size(line: &[u8]) -> Result<u64, Error> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = line[digits..].trim_ascii_start();
    if digits == 0 || digits > 16 || !(rest.is_empty() || rest[0] == b';') {
        let text = String::from_utf8_lossy(line);
        let text: String = text.chars().take(40).collect();
        return Err(Error::Parse(format!(
            "the chunk-size line `{text}` does not give a size"
        )));
    }
    Ok(line[..digits].iter().fold(0u64, |n, &d| {
        let digit = (d as char).to_digit(16).expect("a hex digit, as counted");
        (n << 4) | u64::from(digit)
    }))
}

#[cfg(test)]
mod tests;
