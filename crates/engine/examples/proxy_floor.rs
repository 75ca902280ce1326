//! The least proxy hop on hourglass's stack, for `FLOOR=on bench/plain-check` and
//! `FLOOR=on bench/instructions`: what a call costs with the gateway's runtime and HTTP server
//! and nothing of the gateway's own — one tokio current-thread runtime per core, hyper's HTTP/1.1
//! server, a kept-alive upstream connection per call taken from the thread's pool, the request
//! forwarded in one write and the answer read by `httparse`, with jemalloc as the gateway has it.
//! No policy, no timeouts, no retries, no metrics, no log line, no streamed upstream answer: a
//! measure of how much of a call's cost the stack itself sets, never a thing to deploy. It
//! forwards a request's method, path and body, and answers framed by `Content-Length` only
//! (anything else is a 502).
//!
//!     cargo build --release --example proxy_floor -p hourglass-engine
//!     target/release/examples/proxy_floor 127.0.0.1:8081 127.0.0.1:8080
//!
//! Arguments: LISTEN and UPSTREAM (socket addresses), and an optional number of threads (one
//! per core by default).

use std::cell::RefCell;
use std::io::Write as _;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

thread_local! {
    /// The thread's idle upstream connections.
    static IDLE: RefCell<Vec<TcpStream>> = const { RefCell::new(Vec::new()) };
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: proxy_floor LISTEN UPSTREAM [THREADS]";
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let upstream: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let threads = match args.next() {
        Some(n) => n.parse::<usize>()?.max(1),
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let mut lanes = Vec::with_capacity(threads);
    for _ in 0..threads {
        let listener = listener.try_clone()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        lanes.push(std::thread::spawn(move || {
            runtime.block_on(serve(listener, upstream))
        }));
    }
    for lane in lanes {
        lane.join().map_err(|_| "a serving thread panicked")??;
    }
    Ok(())
}

/// Accepts connections on this thread and serves each with hyper's HTTP/1.1 server.
async fn serve(listener: std::net::TcpListener, upstream: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    loop {
        let (client, _) = listener.accept().await?;
        client.set_nodelay(true)?;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| forward(request, upstream));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(client), service)
                .await;
        });
    }
}

/// One call: the request to the upstream, its answer back.
async fn forward(
    request: Request<Incoming>,
    upstream: SocketAddr,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => return Ok(bad_gateway(&format!("the request body: {error}"))),
    };
    let mut out = Vec::with_capacity(160 + body.len());
    write!(
        out,
        "{} {} HTTP/1.1\r\nhost: {upstream}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        parts.method,
        parts.uri.path(),
        body.len()
    )?;
    out.extend_from_slice(&body);
    // A kept connection the upstream closed meanwhile fails before the answer's first byte: the
    // request goes again on a new connection, as any proxy's does. A new one's failure is the
    // call's.
    let mut read = BytesMut::with_capacity(8192);
    let mut connection = loop {
        let kept = IDLE.with(|idle| idle.borrow_mut().pop());
        let reused = kept.is_some();
        let mut connection = match kept {
            Some(kept) => kept,
            None => {
                let fresh = TcpStream::connect(upstream).await?;
                fresh.set_nodelay(true)?;
                fresh
            }
        };
        let first = match connection.write_all(&out).await {
            Ok(()) => connection.read_buf(&mut read).await,
            Err(error) => Err(error),
        };
        match first {
            Ok(n) if n > 0 => break connection,
            _ if reused => continue,
            Ok(_) => return Ok(bad_gateway("the upstream closed before its answer")),
            Err(error) => return Err(error),
        }
    };
    let (head_len, status, content_type, length) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut head = httparse::Response::new(&mut headers);
        match head.parse(&read) {
            Ok(httparse::Status::Partial) => {}
            Err(error) => return Ok(bad_gateway(&format!("the upstream's head: {error}"))),
            Ok(httparse::Status::Complete(len)) => {
                let value = |name: &str| {
                    (head.headers.iter())
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| h.value)
                };
                let Some(length) = value("content-length")
                    .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok())
                else {
                    return Ok(bad_gateway("the upstream's answer has no Content-Length"));
                };
                let content_type = value("content-type").map(Bytes::copy_from_slice);
                break (len, head.code.unwrap_or(502), content_type, length);
            }
        }
        if connection.read_buf(&mut read).await? == 0 {
            return Ok(bad_gateway("the upstream closed inside its answer's head"));
        }
    };
    while read.len() < head_len + length {
        if connection.read_buf(&mut read).await? == 0 {
            return Ok(bad_gateway("the upstream closed inside its answer"));
        }
    }
    let mut rest = read.split_off(head_len);
    let answer = rest.split_to(length).freeze();
    // Kept for the next call only when nothing came after the answer.
    if rest.is_empty() {
        IDLE.with(|idle| idle.borrow_mut().push(connection));
    }
    let mut response = Response::new(Full::new(answer));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    if let Some(value) = content_type.and_then(|v| http::HeaderValue::from_maybe_shared(v).ok()) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    Ok(response)
}

/// A 502 saying what was wrong.
fn bad_gateway(what: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("proxy_floor: {what}\n"))));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}
