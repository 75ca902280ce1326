use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWrite;

use super::*;

/// A connection whose server side is scripted: each read gives the next piece (never joined
/// with the next), then the end of the stream or nothing ever; writes are kept.
struct Scripted {
    pieces: VecDeque<Vec<u8>>,
    hang: bool,
    written: Arc<Mutex<Vec<u8>>>,
    fail_writes: bool,
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(mut piece) = self.pieces.pop_front() else {
            return if self.hang {
                Poll::Pending
            } else {
                Poll::Ready(Ok(()))
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
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.fail_writes {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        self.written.lock().unwrap().extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A connection answering with `pieces`, then holding the connection open (`hang`) or closing it.
fn connection(pieces: &[&[u8]], hang: bool) -> (H1, Arc<Mutex<Vec<u8>>>) {
    let written = Arc::new(Mutex::new(Vec::new()));
    let io = Scripted {
        pieces: pieces.iter().map(|p| p.to_vec()).collect(),
        hang,
        written: written.clone(),
        fail_writes: false,
    };
    (H1::new(Box::new(io)), written)
}

fn post(path: &str) -> http::request::Parts {
    let (mut parts, ()) = http::Request::post(path)
        .header("host", "up.example")
        .header("content-type", "application/json")
        .body(())
        .unwrap()
        .into_parts();
    parts
        .headers
        .append("x-many", HeaderValue::from_static("b"));
    parts
}

/// Sends a POST and reads the head.
async fn exchange(h1: &mut H1) -> Result<http::response::Parts, Error> {
    let parts = post("/v1/chat/completions");
    (h1.write_request(&parts.method, |out| encode_parts(out, &parts), b"{}")).await?;
    h1.read_head(false).await
}

/// The whole body, or the error that ended it.
async fn body(h1: &mut H1) -> Result<Vec<u8>, Error> {
    let mut all = Vec::new();
    while let Some(piece) = std::future::poll_fn(|cx| h1.poll_body(cx)).await {
        all.extend_from_slice(&piece?);
    }
    Ok(all)
}

#[tokio::test]
async fn a_request_goes_out_whole_and_a_kept_connection_carries_the_next() {
    let (mut h1, written) = connection(
        &[
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Two: a\r\nx-two: b\r\nContent-Length: 5\r\n\r\nhel",
            b"lo",
            b"HTTP/1.1 429 Too Many\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n",
        ],
        true,
    );
    let head = exchange(&mut h1).await.unwrap();
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.version, Version::HTTP_11);
    assert_eq!(head.headers["content-type"], "text/plain");
    let twos: Vec<_> = head.headers.get_all("x-two").iter().collect();
    assert_eq!(twos, ["a", "b"]);
    // The framing header is read for the body and left out of the map: it frames this hop's
    // body, and the client's answer is framed anew.
    assert!(!head.headers.contains_key("content-length"));
    // Room for what the gateway adds on the way to the client, so that the map never grows.
    let capacity = head.headers.capacity();
    let mut answer =
        crate::upstream::request::response_headers(head.headers, HeaderValue::from_static("a"));
    for name in [
        "server-timing",
        "x-hourglass-attempts",
        "x-upstream-request-id",
    ] {
        answer.insert(name, HeaderValue::from_static("1"));
    }
    assert_eq!(
        answer.capacity(),
        capacity,
        "the head's map had room for every added header"
    );
    assert_eq!(body(&mut h1).await.unwrap(), b"hello");
    assert_eq!(
        String::from_utf8(written.lock().unwrap().clone()).unwrap(),
        "POST /v1/chat/completions HTTP/1.1\r\nhost: up.example\r\ncontent-type: application/json\r\n\
         x-many: b\r\ncontent-length: 2\r\n\r\n{}"
    );
    let head = exchange(&mut h1).await.unwrap();
    assert_eq!(head.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body(&mut h1).await.unwrap(), b"");
    assert!(
        h1.usable(),
        "read to its end, kept alive, the server still there"
    );
    // A GET with no body gets no content-length.
    let (get, ()) = http::Request::get("/health").body(()).unwrap().into_parts();
    let (mut h1, written) = connection(&[], true);
    (h1.write_request(&get.method, |out| encode_parts(out, &get), b""))
        .await
        .unwrap();
    assert_eq!(
        written.lock().unwrap().as_slice(),
        b"GET /health HTTP/1.1\r\n\r\n"
    );
}

#[tokio::test]
async fn a_chunked_body_reads_the_same_wherever_the_reads_split_it() {
    let response: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n\
        5\r\nhello\r\n7;name=value\r\n, world\r\nA \r\n0123456789\r\n0\r\nx-trailer: t\r\n\r\n";
    let whole = b"hello, world0123456789";
    let head_len = memchr::memmem::find(response, b"\r\n\r\n").unwrap() + 4;
    for split in 1..response.len() {
        let (mut h1, _) = connection(&[&response[..split], &response[split..]], true);
        exchange(&mut h1).await.unwrap();
        assert_eq!(body(&mut h1).await.unwrap(), whole, "split at {split}");
        assert!(h1.usable(), "split at {split}");
    }
    let bytes: Vec<&[u8]> = response.chunks(1).collect();
    let (mut h1, _) = connection(&bytes, true);
    let head = exchange(&mut h1).await.unwrap();
    assert!(!head.headers.contains_key("transfer-encoding"));
    assert_eq!(body(&mut h1).await.unwrap(), whole, "a byte at a time");
    // A body cut anywhere is an error that is not the upstream's grammar.
    for cut in head_len..response.len() {
        let (mut h1, _) = connection(&[&response[..cut]], false);
        exchange(&mut h1).await.unwrap();
        let error = body(&mut h1).await.unwrap_err();
        assert!(matches!(error, Error::Closed(_)), "cut at {cut}: {error}");
        assert!(!h1.usable());
    }
}

#[tokio::test]
async fn bodies_end_by_length_by_close_or_not_at_all() {
    // No body for a 204 (whatever it says) or a HEAD; informational heads are skipped.
    let (mut h1, _) = connection(
        &[b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"],
        true,
    );
    assert_eq!(
        exchange(&mut h1).await.unwrap().status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(body(&mut h1).await.unwrap(), b"");
    assert!(h1.usable());
    let (mut h1, _) = connection(&[b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n"], true);
    let (head, ()) = http::Request::head("/").body(()).unwrap().into_parts();
    (h1.write_request(&head.method, |out| encode_parts(out, &head), b""))
        .await
        .unwrap();
    h1.read_head(true).await.unwrap();
    assert_eq!(body(&mut h1).await.unwrap(), b"");
    assert!(h1.usable());
    // Neither length nor chunks, an HTTP/1.0 answer, or a transfer coding that is not chunked
    // last: the body runs to the close, and the connection is not reused.
    for head in [
        "HTTP/1.1 200 OK\r\n\r\n",
        "HTTP/1.0 200 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\ncontent-length: 2\r\n\r\n",
    ] {
        let (mut h1, _) = connection(&[head.as_bytes(), b"to the ", b"end"], false);
        exchange(&mut h1).await.unwrap();
        assert_eq!(body(&mut h1).await.unwrap(), b"to the end", "{head}");
        assert!(!h1.usable(), "{head}");
    }
    // Read to its end, but not to be reused: the server said close, spoke HTTP/1.0, or sent
    // more than the length.
    for response in [
        "HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\ncontent-length: 2\r\n\r\nok",
        "HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA",
    ] {
        let (mut h1, _) = connection(&[response.as_bytes()], true);
        exchange(&mut h1).await.unwrap();
        assert_eq!(body(&mut h1).await.unwrap(), b"ok", "{response}");
        assert!(!h1.usable(), "{response}");
    }
    // Equal lengths repeated are one length.
    let (mut h1, _) = connection(
        &[b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\ncontent-length: 2\r\n\r\nok"],
        true,
    );
    exchange(&mut h1).await.unwrap();
    assert_eq!(body(&mut h1).await.unwrap(), b"ok");
}

#[tokio::test]
async fn what_is_not_http_is_a_parse_error_that_says_what() {
    let too_many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    let too_many = format!("HTTP/1.1 200 OK\r\n{too_many}\r\n");
    let huge = format!(
        "HTTP/1.1 200 OK\r\nx-huge: {}",
        "h".repeat(super::super::MAX_RESPONSE_BUFFER)
    );
    for (response, says) in [
        ("SSH-2.0-OpenSSH_9.2\r\n\r\n", "does not parse"),
        ("HTTP/1.1 200 OK\r\nbad header\r\n\r\n", "does not parse"),
        (too_many.as_str(), "more than 100 headers"),
        (huge.as_str(), "larger than 256 KiB"),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 12, 13\r\n\r\n",
            "content-length `12, 13`",
        ),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "content-length `-1`",
        ),
    ] {
        let (mut h1, _) = connection(&[response.as_bytes()], true);
        let error = exchange(&mut h1).await.unwrap_err();
        assert!(error.is_parse(), "{error}");
        assert!(error.to_string().contains(says), "{error}");
        assert!(!h1.usable());
    }
    for (body_text, says) in [
        ("zz\r\nhello\r\n0\r\n\r\n", "`zz` does not give a size"),
        ("5\r\nhelloXX0\r\n\r\n", "does not end where its size says"),
        ("11111111111111111\r\n", "does not give a size"),
    ] {
        let response = format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{body_text}");
        let (mut h1, _) = connection(&[response.as_bytes()], true);
        exchange(&mut h1).await.unwrap();
        let error = body(&mut h1).await.unwrap_err();
        assert!(error.is_parse(), "{error}");
        assert!(error.to_string().contains(says), "{error}");
        assert!(!h1.usable());
    }
}

#[tokio::test]
async fn a_connection_closed_before_the_response_began_is_stale_after_that_it_is_not() {
    let (mut h1, _) = connection(&[], false);
    let error = exchange(&mut h1).await.unwrap_err();
    assert!(error.is_stale() && !error.is_parse(), "{error}");
    assert_eq!(
        error.to_string(),
        "the connection closed before the response began"
    );
    let (mut h1, _) = connection(&[b"HTTP/1.1 200 OK\r\ncontent-le"], false);
    let error = exchange(&mut h1).await.unwrap_err();
    assert!(!error.is_stale() && !error.is_parse(), "{error}");
    let written = Arc::new(Mutex::new(Vec::new()));
    let io = Scripted {
        pieces: VecDeque::new(),
        hang: true,
        written,
        fail_writes: true,
    };
    let mut h1 = H1::new(Box::new(io));
    let error = exchange(&mut h1).await.unwrap_err();
    assert!(error.is_stale(), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("the request could not be written")
    );
    // A connection whose body has not come to its end takes no other request.
    let (mut h1, _) = connection(&[b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"], true);
    exchange(&mut h1).await.unwrap();
    assert!(!h1.usable());
    assert!(exchange(&mut h1).await.unwrap_err().is_stale());
}

#[tokio::test]
async fn a_body_left_at_its_end_marker_is_finished_if_its_end_is_already_here() {
    // A stream reader stops at `[DONE]`; the last chunk behind it is in the buffer already.
    let response = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
        E\r\ndata: [DONE]\n\n\r\n0\r\n\r\n";
    let (mut h1, _) = connection(&[response], true);
    exchange(&mut h1).await.unwrap();
    let first = std::future::poll_fn(|cx| h1.poll_body(cx)).await;
    assert_eq!(&first.unwrap().unwrap()[..], b"data: [DONE]\n\n");
    assert!(h1.usable(), "the last chunk was here: reused");
    // Not yet here, or more than the end: not reused, and nothing is waited for.
    for (pieces, why) in [
        (
            &[&response[..response.len() - 5]][..],
            "the last chunk is late",
        ),
        (
            &[&response[..response.len() - 5], b"5\r\nextra\r\n0\r\n\r\n"][..],
            "more came",
        ),
    ] {
        let (mut h1, _) = connection(pieces, true);
        exchange(&mut h1).await.unwrap();
        let _ = std::future::poll_fn(|cx| h1.poll_body(cx)).await;
        assert!(!h1.usable(), "{why}");
    }
}

#[tokio::test]
async fn a_slow_body_reuses_the_memory_its_taken_pieces_left() {
    let head: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\n";
    let (mut h1, _) = connection(&[head, b"hello", b"world", b"again"], true);
    exchange(&mut h1).await.unwrap();
    let mut next = async || {
        (std::future::poll_fn(|cx| h1.poll_body(cx)).await)
            .unwrap()
            .unwrap()
    };
    let hello = next().await;
    let start = hello.as_ptr();
    drop(hello);
    // Taken and dropped: the next piece is read to the same memory, not past it.
    let world = next().await;
    assert_eq!(&world[..], b"world");
    assert_eq!(world.as_ptr(), start, "the buffer started again");
    // Still held: its bytes are left alone, and the next piece goes elsewhere.
    let again = next().await;
    assert_eq!(&again[..], b"again");
    assert_ne!(again.as_ptr(), start);
    assert_eq!(&world[..], b"world");
}

#[tokio::test]
async fn a_length_that_does_not_frame_the_body_is_not_read() {
    // Chunks frame the first body, and a 204 has none: their `content-length` is never
    // consulted, so one that is not a length is no error.
    let responses: [(&[u8], &[u8]); 2] = [
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: nope\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            b"ok",
        ),
        (b"HTTP/1.1 204 No Content\r\ncontent-length: nope\r\n\r\n", b""),
    ];
    for (response, expected) in responses {
        let (mut h1, _) = connection(&[response], true);
        exchange(&mut h1).await.unwrap();
        assert_eq!(body(&mut h1).await.unwrap(), expected);
        assert!(h1.usable());
    }
}

#[tokio::test]
async fn a_chunk_line_or_trailers_over_their_bound_are_refused_however_they_arrive() {
    // A chunk-size line (with an extension) longer than the bound, and trailers of many short
    // lines adding up to more than theirs: each refused whether it comes in one read, where
    // every line's end is already there, or a byte at a time.
    let long_line = format!("2;x={}\r\nok\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_LINE));
    let many_trailers = format!(
        "2\r\nok\r\n0\r\n{}\r\n",
        "x-t: 1\r\n".repeat(MAX_TRAILERS / 8 + 1)
    );
    for (body_text, says) in [
        (long_line.as_str(), "a chunk-size line is longer than 4 KiB"),
        (
            many_trailers.as_str(),
            "the trailers are longer than 16 KiB",
        ),
    ] {
        let response = format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{body_text}");
        let bytes: Vec<&[u8]> = response.as_bytes().chunks(1).collect();
        for pieces in [vec![response.as_bytes()], bytes] {
            let (mut h1, _) = connection(&pieces, true);
            exchange(&mut h1).await.unwrap();
            let error = body(&mut h1).await.unwrap_err();
            assert!(error.is_parse(), "{error}");
            assert_eq!(error.to_string(), says);
            assert!(!h1.usable());
        }
    }
    // At the bounds, both are read.
    let at_bounds = format!(
        "{:x};{}\r\nok\r\n0\r\n{}\r\n",
        2,
        "e".repeat(MAX_CHUNK_LINE - 3),
        "x-t: 1\r\n".repeat(MAX_TRAILERS / 8 - 1)
    );
    let response = format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{at_bounds}");
    let (mut h1, _) = connection(&[response.as_bytes()], true);
    exchange(&mut h1).await.unwrap();
    assert_eq!(body(&mut h1).await.unwrap(), b"ok");
    assert!(h1.usable());
}

#[tokio::test]
async fn a_head_over_its_bound_is_refused_however_it_arrives() {
    let bound = super::super::MAX_RESPONSE_BUFFER;
    let response = format!(
        "HTTP/1.1 200 OK\r\nx-huge: {}\r\ncontent-length: 2\r\n\r\nok",
        "h".repeat(bound + bound / 2)
    );
    let response = response.as_bytes();
    for size in [response.len(), bound - 100, 64 * 1024, 4096] {
        let pieces: Vec<&[u8]> = response.chunks(size).collect();
        let (mut h1, _) = connection(&pieces, true);
        let error = exchange(&mut h1).await.unwrap_err();
        assert!(error.is_parse(), "pieces of {size}: {error}");
        assert!(error.to_string().contains("larger than 256 KiB"), "{error}");
    }
}
