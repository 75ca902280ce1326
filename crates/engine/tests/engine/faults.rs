//! Every simulator fault, streaming and not: the outcome, the code, the trail, and when the
//! deadline fired.

use hourglass_sim::content;

use crate::failover::POLICY;
use crate::support::*;

/// The fault on `a`; `b` is healthy, so a retryable failure ends on `b`.
async fn on_a(fault: &str, stream: bool) -> (Outcome, Setup) {
    let setup = setup(POLICY);
    let outcome = call(
        &setup,
        chat("m", stream, Some(&format!("{fault};upstream=a"))),
    )
    .await;
    (outcome, setup)
}

async fn fails_over(fault: &str, stream: bool, code: &'static str, after: std::time::Duration) {
    let (outcome, _) = on_a(fault, stream).await;
    let done = outcome.ok();
    assert_eq!(done.upstream, "b", "{fault} stream={stream}");
    assert_eq!(
        outcome.trail(),
        [("a".to_owned(), code), ("b".to_owned(), "ok")],
        "{fault} stream={stream}"
    );
    assert!(
        outcome.elapsed >= after && outcome.elapsed < after + ms(20),
        "{fault} stream={stream}: {:?} vs {after:?}",
        outcome.elapsed
    );
    let text = if stream {
        stream_text(&done.body).0
    } else {
        whole_text(&done.body)
    };
    assert_eq!(
        content::check(&text).unwrap().tokens,
        16,
        "{fault}: one answer, nothing spliced"
    );
}

#[tokio::test(start_paused = true)]
async fn blackhole_is_a_connect_timeout() {
    for stream in [true, false] {
        let setup = setup(POLICY);
        setup.sims["a"].set_blackhole(true);
        let outcome = call(&setup, chat("m", stream, None)).await;
        assert_eq!(
            outcome.trail(),
            [("a".to_owned(), "connect_timeout"), ("b".to_owned(), "ok")]
        );
        assert_eq!(outcome.elapsed, 2 * SECOND);
    }
}

#[tokio::test(start_paused = true)]
async fn reset_and_status_fail_over_at_once() {
    for stream in [true, false] {
        fails_over("reset", stream, "upstream_closed", ms(0)).await;
        fails_over("status;code=503", stream, "upstream_status", ms(0)).await;
        fails_over(
            "status;code=524;body=html",
            stream,
            "upstream_status",
            ms(0),
        )
        .await;
        fails_over("rate_limit", stream, "rate_limited", ms(0)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn hang_and_late_headers_are_first_byte_timeouts() {
    for stream in [true, false] {
        fails_over("hang", stream, "first_byte_timeout", 3 * SECOND).await;
        fails_over(
            "delay_headers;for=10s",
            stream,
            "first_byte_timeout",
            3 * SECOND,
        )
        .await;
    }
    // Headers a little late but within first_byte: no failover.
    let (outcome, _) = on_a("delay_headers;for=2s", true).await;
    assert_eq!(outcome.ok().upstream, "a");
}

#[tokio::test(start_paused = true)]
async fn keepalives_and_role_chunks_do_not_count_as_a_first_token() {
    fails_over(
        "first_token;after=30s;keepalive=1s",
        true,
        "first_token_timeout",
        5 * SECOND,
    )
    .await;
    fails_over(
        "stall;after_chunks=0;for=60s",
        true,
        "first_token_timeout",
        5 * SECOND,
    )
    .await;
    // Non-streaming: the upstream's headers wait for the whole answer, so first_byte fires.
    fails_over(
        "first_token;after=30s",
        false,
        "first_byte_timeout",
        3 * SECOND,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn failures_before_the_first_token_fail_over_invisibly() {
    fails_over("cut;after_chunks=0", true, "upstream_cut", ms(0)).await;
    fails_over(
        "malformed;after_chunks=0",
        true,
        "upstream_malformed",
        ms(0),
    )
    .await;
    fails_over("cut", false, "upstream_cut", ms(0)).await;
    fails_over("malformed", false, "upstream_malformed", ms(0)).await;
    // A bare [DONE] before any content (llama.cpp interrupted by a newer request).
    fails_over(
        "interrupt;after_chunks=0",
        true,
        "upstream_truncated",
        ms(0),
    )
    .await;
    fails_over("stall;for=60s", false, "idle_timeout", 4 * SECOND).await;
}

#[tokio::test(start_paused = true)]
async fn after_commit_a_cut_ends_the_stream_with_an_error_event_not_done() {
    let (outcome, setup) = on_a("cut;after_chunks=3", true).await;
    let done = outcome.ok();
    assert_eq!(
        done.upstream, "a",
        "committed on a: no failover after content reached the client"
    );
    let (text, error) = stream_text(&done.body);
    assert_eq!(content::check(&text).unwrap().tokens, 3);
    assert!(!done.body.contains("data: [DONE]"), "never a fake [DONE]");
    let error = error.expect("an SSE error event");
    assert_eq!(error["code"], "upstream_cut");
    assert!(error["message"].as_str().unwrap().contains("not retried"));
    assert_eq!(setup.requests("b"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_done_without_a_finish_reason_is_a_truncated_answer_not_a_success() {
    // After commit (tokens 100 ms apart, so the first one is passed on before the [DONE]
    // arrives): the tokens so far, then an error event in place of the upstream's [DONE].
    let (outcome, setup) = on_a("slow;tokens_per_s=10, interrupt;after_chunks=5", true).await;
    let done = outcome.ok();
    assert_eq!(done.upstream, "a");
    let (text, error) = stream_text(&done.body);
    assert_eq!(content::check(&text).unwrap().tokens, 5);
    assert!(
        !done.body.contains("data: [DONE]"),
        "the upstream's [DONE] is not passed on: {}",
        done.body
    );
    let error = error.expect("an SSE error event");
    assert_eq!(error["code"], "upstream_truncated");
    assert!(
        error["message"].as_str().unwrap().contains("finish_reason"),
        "{error}"
    );
    assert_eq!(setup.requests("b"), 0);
    // When the [DONE] comes in the same read as the first tokens, nothing has reached the
    // client yet: the call fails over invisibly.
    fails_over(
        "interrupt;after_chunks=5",
        true,
        "upstream_truncated",
        ms(0),
    )
    .await;
    // A whole answer the client asked for is assembled from a stream only when configured;
    // the simulator's whole answers are never interrupted, so nothing fails over.
    let (outcome, _) = on_a("interrupt;after_chunks=5", false).await;
    assert_eq!(outcome.ok().upstream, "a");
}

#[tokio::test(start_paused = true)]
async fn after_commit_a_stall_or_a_drip_ends_at_exactly_the_idle_timeout() {
    let (outcome, _) = on_a("stall;after_chunks=3;for=60s", true).await;
    let done = outcome.ok();
    let (text, error) = stream_text(&done.body);
    assert_eq!(content::check(&text).unwrap().tokens, 3);
    assert_eq!(error.unwrap()["code"], "idle_timeout");
    assert_eq!(done.finished, 4 * SECOND, "idle = 4s after the third token");

    // Non-streaming, a drip means a late answer: the headers wait for all of it.
    fails_over(
        "slow;tokens_per_s=0.1",
        false,
        "first_byte_timeout",
        3 * SECOND,
    )
    .await;

    let (outcome, _) = on_a("slow;tokens_per_s=0.1", true).await;
    let done = outcome.ok();
    let (text, error) = stream_text(&done.body);
    assert_eq!(
        content::check(&text).unwrap().tokens,
        1,
        "one token, then a 10 s gap"
    );
    assert_eq!(error.unwrap()["code"], "idle_timeout");
    assert_eq!(done.finished, 4 * SECOND);
}

#[tokio::test(start_paused = true)]
async fn a_stall_shorter_than_idle_is_waited_out() {
    let (outcome, _) = on_a("stall;after_chunks=3;for=3s", true).await;
    let done = outcome.ok();
    let (text, error) = stream_text(&done.body);
    assert!(error.is_none());
    assert_eq!(content::check(&text).unwrap().tokens, 16);
    assert!(done.body.ends_with("data: [DONE]\n\n"));
    assert_eq!(done.finished, 3 * SECOND);
}

#[tokio::test(start_paused = true)]
async fn when_every_upstream_fails_the_trail_lists_every_attempt() {
    let setup = setup(POLICY);
    let outcome = call(&setup, chat("m", true, Some("cut;after_chunks=0"))).await;
    let error = outcome.err();
    assert_eq!(error.code, "upstream_cut");
    assert_eq!(error.status, 502);
    let upstreams: Vec<_> = error.trail.iter().map(|a| a.upstream.as_str()).collect();
    assert_eq!(
        upstreams,
        ["a", "b", "a"],
        "failover first, then back to a after a backoff"
    );
}

/// Found by a hostile upstream: after `[DONE]` it kept the connection open, and the gateway
/// waited `idle` and then sent an `idle_timeout` error event after the `[DONE]` (counting a
/// healthy upstream's stream as a failure); what it sent after `[DONE]` was passed on too.
#[tokio::test(start_paused = true)]
async fn a_stream_ends_at_its_done_event_even_when_the_upstream_holds_the_connection() {
    const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n\
        B8\r\n\
        data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n\
        data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
        data: [DONE]\n\n\
        data: {\"after\":\"done\"}\n\n\r\n";
    let engine = setup_scripted(
        "[models.m]\ntargets = [\"x:m\"]\ntimeouts = { idle = \"5s\" }\n",
        RESPONSE,
    );
    let start = tokio::time::Instant::now();
    let response = engine.call(chat("m", true, None)).await.unwrap();
    let hourglass_engine::ResponseBody::Stream(stream) = response.body else {
        panic!("a stream was asked for");
    };
    let body = http_body_util::BodyExt::collect(stream)
        .await
        .unwrap()
        .to_bytes();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    assert!(
        !body.contains("after") && !body.contains("idle_timeout"),
        "{body}"
    );
    assert_eq!(
        start.elapsed(),
        std::time::Duration::ZERO,
        "nothing was waited for"
    );
    let status = engine.health().snapshot();
    assert_eq!((status[0].failures, status[0].answered), (0, 1));
}

/// Found by a user whose base_url pointed at a web UI: a 200 `text/html` page was passed to the
/// client as the answer, counted `ok` and never failed over. It is malformed, and retried.
#[tokio::test(start_paused = true)]
async fn a_web_page_answered_with_200_is_malformed_and_retried() {
    const PAGE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: 31\r\n\r\n<html><body>Login</body></html>";
    let engine = setup_scripted(
        "[models.m]\ntargets = [\"x:m\"]\nretry = { max_attempts = 2 }\nstream_upstream = false\n",
        PAGE,
    );
    let error = engine.call(chat("m", false, None)).await.err().unwrap();
    assert_eq!(error.code, "upstream_malformed");
    assert_eq!(error.trail.len(), 2, "retried");
    assert!(error.message.contains("`text/html`"), "{}", error.message);
    assert_eq!(engine.health().snapshot()[0].failures, 2);
}

/// A stream asked for and a whole JSON body answered: it must not reach an SSE client as if it
/// were a stream.
#[tokio::test(start_paused = true)]
async fn a_whole_json_body_answering_a_stream_request_is_malformed() {
    const WHOLE: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
    let engine = setup_scripted(
        "[models.m]\ntargets = [\"x:m\"]\nretry = { max_attempts = 1 }\n",
        WHOLE,
    );
    let error = engine.call(chat("m", true, None)).await.err().unwrap();
    assert_eq!(error.code, "upstream_malformed");
    assert!(
        error.message.contains("a stream was asked for"),
        "{}",
        error.message
    );
}

/// Found by a user: an upstream that echoes the key in its error ("Incorrect API key provided:
/// sk-…") passed it to the client in `upstream_error` and the message, and to the log.
#[tokio::test(start_paused = true)]
async fn an_upstream_echoing_the_key_in_its_error_has_it_scrubbed() {
    const ECHO: &[u8] = b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: 73\r\n\r\n{\"error\":{\"message\":\"Incorrect API key provided: sk-echo-5150\",\"code\":1}}";
    let text = "[upstreams.x]\nbase_url = \"http://x.invalid/v1\"\napi_key_env = \"KEY\"\n\
                [models.m]\ntargets = [\"x:m\"]\n";
    let env = |name: &str| (name == "KEY").then(|| "sk-echo-5150".to_owned());
    let config = hourglass_config::Config::from_toml(text, "test.toml", &env).unwrap();
    let dials = std::collections::HashMap::from([("x".to_owned(), scripted(ECHO))]);
    let engine = hourglass_engine::Engine::new(config, dials).unwrap();
    let error = engine.call(chat("m", false, None)).await.err().unwrap();
    let body = hourglass_engine::protocol::openai::OpenAi::error_json(&error).to_string();
    assert!(
        body.contains("Incorrect API key provided: [redacted]"),
        "{body}"
    );
    assert!(!body.contains("sk-echo-5150") && !error.message.contains("sk-echo-5150"));
}

/// Decided with issue 15: the built-in `total` (120 s for chat) bounds getting an answer going;
/// a long answer still flowing is guarded by `idle`, not cut at 120 s. A `total` written in the
/// configuration, or the client's own deadline, still ends a stream.
#[tokio::test(start_paused = true)]
async fn a_flowing_stream_outlives_the_built_in_total_but_not_a_configured_one() {
    // 16 tokens at 0.1/s: 150 s of answer, a token every 10 s (idle is 30 s).
    let slow = Some("slow;tokens_per_s=0.1");
    let built_in = setup("[models.m]\ntargets = [\"a:sim-instant\"]\n");
    let outcome = call(&built_in, chat("m", true, slow)).await;
    let done = outcome.ok();
    assert!(
        done.finished >= 150 * SECOND,
        "past the built-in 120 s: {:?}",
        done.finished
    );
    let (text, error) = stream_text(&done.body);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(content::check(&text).unwrap().tokens, 16);

    let configured =
        setup("[models.m]\ntargets = [\"a:sim-instant\"]\ntimeouts = { total = \"60s\" }\n");
    let outcome = call(&configured, chat("m", true, slow)).await;
    let (_, error) = stream_text(&outcome.ok().body);
    assert_eq!(error.unwrap()["code"], "deadline_exceeded");

    let mut request = chat("m", true, slow);
    request.client_deadline = Some((
        tokio::time::Instant::now() + 50 * SECOND,
        "x-hourglass-timeout".to_owned(),
    ));
    let outcome = call(&built_in, request).await;
    let (_, error) = stream_text(&outcome.ok().body);
    assert_eq!(
        error.unwrap()["code"],
        "deadline_exceeded",
        "the client's deadline holds"
    );
}

/// Found by a hostile upstream: huge response headers were relayed to the client (hyper bounds a
/// head at ~408 KB by default); the bound is 256 KiB.
#[tokio::test(start_paused = true)]
async fn a_response_head_larger_than_the_bound_is_malformed_not_relayed() {
    static RESPONSE: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
        let big = "h".repeat(300 * 1024);
        format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-huge: {big}\r\ncontent-length: 2\r\n\r\n{{}}")
            .into_bytes()
    });
    let engine = setup_scripted(
        "[models.m]\ntargets = [\"x:m\"]\nretry = { max_attempts = 1 }\nstream_upstream = false\n",
        RESPONSE.as_slice(),
    );
    let error = engine.call(chat("m", false, None)).await.err().unwrap();
    assert_eq!(error.code, "upstream_malformed", "{}", error.message);
}

/// A body whose framing does not parse (a chunk size that is not hex, a length that is not a
/// number) is malformed — the upstream broke HTTP — not a cut connection, and is retried.
#[tokio::test(start_paused = true)]
async fn a_body_whose_framing_does_not_parse_is_malformed() {
    for response in [
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\nzz\r\ndata: [DONE]\n\n\r\n0\r\n\r\n".as_slice(),
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 5, 6\r\n\r\ndata:",
    ] {
        let engine = setup_scripted(
            "[models.m]\ntargets = [\"x:m\"]\nretry = { max_attempts = 2 }\n",
            response,
        );
        let error = engine.call(chat("m", false, None)).await.err().unwrap();
        assert_eq!(error.code, "upstream_malformed", "{}", error.message);
        assert_eq!(error.trail.len(), 2, "retried: {:?}", error.trail);
    }
}

/// A pooled connection the server closed a moment after answering (a keep-alive timeout, a
/// restart) is taken from the pool without being polled again; writing to it fails, and the
/// call is sent once more on a new connection — uncounted, no failure for the client.
#[tokio::test(start_paused = true)]
async fn a_pooled_connection_the_server_closed_is_redialed_not_failed() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use hourglass_engine::DialFn;
    use tokio::io::AsyncWriteExt;

    const ANSWER: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n\
                          data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
                          data: [DONE]\n\n";
    let upstream = hand_written(|mut server| async move {
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n",
            ANSWER.len()
        );
        let _ = server.write_all(head.as_bytes()).await;
        let _ = server.write_all(ANSWER.as_bytes()).await;
        // Keep-alive, then the server closes it 10 ms later.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        drop(server);
    });
    // Every connection opened is counted, whether or not a request reaches it.
    let dialed = Arc::new(AtomicUsize::new(0));
    let count = dialed.clone();
    let dial = Arc::new(DialFn(move || {
        count.fetch_add(1, Ordering::SeqCst);
        upstream.dial()
    }));
    let engine = setup_dialed("[models.m]\ntargets = [\"x\"]\n", dial);
    let first = engine.call(chat("m", false, None)).await.unwrap();
    assert!(!first.timeline.unwrap().reused);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let second = engine
        .call(chat("m", false, None))
        .await
        .expect("the closed connection is redialed, not failed");
    assert_eq!(second.trail.len(), 1, "one attempt: {:?}", second.trail);
    assert!(!second.timeline.unwrap().reused, "on a new connection");
    assert_eq!(dialed.load(Ordering::SeqCst), 2);
}

/// An upstream that answers with `head` and `first`, then sends SSE comments without end
/// (until the gateway lets go of the connection).
fn endless(
    head: &'static [u8],
    first: &'static [u8],
) -> std::sync::Arc<dyn hourglass_engine::Dial> {
    hand_written(move |mut server| async move {
        use tokio::io::AsyncWriteExt;
        // A comment of 64 KiB and the blank line that ends its event.
        let mut line = vec![b'x'; 64 * 1024];
        line[0] = b':';
        let end = line.len() - 2;
        line[end..].copy_from_slice(b"\n\n");
        let lines = line.repeat(64);
        let mut sent = server
            .write_all(head)
            .await
            .and(server.write_all(first).await);
        while sent.is_ok() {
            sent = server.write_all(&lines).await;
        }
    })
}

/// Found by reading the code after a fuzz target found the HTTP/1.1 reader's bounds: a whole
/// answer assembled from a stream, and what a stream sends before its first token, were kept
/// in memory without bound, where a whole body read as one stops at 256 MiB. An upstream that
/// streams without end now meets the same bound, not the call's deadline with memory full.
#[tokio::test(start_paused = true)]
async fn a_stream_without_end_is_refused_at_the_whole_bodys_bound() {
    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n";
    const FIRST: &[u8] =
        b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n";
    let model = "[models.m]\ntargets = [\"x:m\"]\nretry = { max_attempts = 1 }\n\
                 timeouts = { first_token = \"600s\", idle = \"600s\", total = \"900s\" }\n";
    // A whole answer assembled from the stream: its first token came, then no end.
    // And a stream that never sends a token: all it sends is held until one comes.
    for (first, stream, says) in [
        (FIRST, false, "the response is larger than 256 MiB"),
        (
            &b""[..],
            true,
            "the stream sent more than 256 MiB before its first token",
        ),
    ] {
        let engine = setup_dialed(model, endless(HEAD, first));
        let error = engine.call(chat("m", stream, None)).await.err().unwrap();
        assert_eq!(error.code, "upstream_malformed", "{}", error.message);
        assert!(error.message.contains(says), "{}", error.message);
        assert_eq!(error.trail.len(), 1);
    }
}
