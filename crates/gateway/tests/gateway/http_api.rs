//! The gateway's HTTP face: routes, headers, errors, client deadlines, limits and shutdown.

use hourglass_sim::content;

use crate::support::*;

/// Model `m` on `a` then `b` with short timeouts for a real clock.
const POLICY: &str = r#"
[models.m]
targets = ["a:sim-instant", "b:sim-instant"]
timeouts = { connect = "500ms", first_byte = "500ms", first_token = "800ms", idle = "500ms", attempt = "3s", total = "10s" }
retry = { max_attempts = 3, backoff_base = "50ms", backoff_max = "200ms" }

[models.fast]
targets = ["b:gpt-4o-mini"]

[models.slow]
targets = ["a:sim-instant", "b:sim-instant"]
timeouts = { first_token = "5s", idle = "5s", total = "20s" }
"#;

#[tokio::test]
async fn a_completion_carries_the_attempt_upstream_and_phase_headers() {
    let gateway = start(POLICY).await;
    let reply = chat(gateway.addr, "m", false, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("x-hourglass-attempts"), Some("1"));
    assert_eq!(reply.header("x-hourglass-upstream"), Some("a"));
    // Assembled from the upstream's stream, it has a whole answer's headers, not the stream's.
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.header("cache-control"),
        None,
        "an event stream's no-cache"
    );
    let timing = reply.header("server-timing").unwrap();
    assert!(
        timing.contains("connect;dur=") && timing.contains("first_byte;dur="),
        "{timing}"
    );
    content::check(
        reply.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
}

#[tokio::test]
async fn a_stream_passes_through_intact() {
    let gateway = start(POLICY).await;
    let reply = chat(gateway.addr, "m", true, &[]).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(reply.header("cache-control"), Some("no-cache"), "passed on");
    assert!(reply.body.ends_with("data: [DONE]\n\n"));
    assert_eq!(
        content::check(&stream_text(&reply.body)).unwrap().tokens,
        16
    );
    assert!(
        reply
            .header("server-timing")
            .unwrap()
            .contains("first_token;dur=")
    );
}

#[tokio::test]
async fn with_a_hanging_the_call_succeeds_via_b_after_as_first_byte_timeout() {
    let gateway = start(POLICY).await;
    for stream in [true, false] {
        let reply = chat(
            gateway.addr,
            "m",
            stream,
            &[("x-sim-fault", "hang;upstream=a")],
        )
        .await;
        assert_eq!(reply.status, 200, "stream={stream}: {}", reply.body);
        assert_eq!(reply.header("x-hourglass-upstream"), Some("b"));
        assert_eq!(reply.header("x-hourglass-attempts"), Some("2"));
        assert!(
            reply.elapsed >= ms(500) && reply.elapsed < ms(800),
            "stream={stream}: {:?}",
            reply.elapsed
        );
        let text = if stream {
            stream_text(&reply.body)
        } else {
            reply.json()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(content::check(&text).unwrap().tokens, 16);
    }
}

#[tokio::test]
async fn exhausted_failures_answer_in_openai_shape_and_forbid_sdk_retries() {
    let gateway = start(POLICY).await;
    let reply = chat(
        gateway.addr,
        "m",
        false,
        &[("x-sim-fault", "status;code=503")],
    )
    .await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.header("x-should-retry"), Some("false"));
    assert_eq!(reply.header("x-hourglass-attempts"), Some("3"));
    let error = &reply.json()["error"];
    assert_eq!(error["code"], "upstream_status");
    assert_eq!(error["type"], "upstream_error");
    assert_eq!(error["hourglass"]["attempts"].as_array().unwrap().len(), 3);
    assert!(error["hourglass"]["diagnosis"].as_str().unwrap().len() > 20);
    assert_eq!(gateway.requests("a") + gateway.requests("b"), 3);

    let limited = chat(
        gateway.addr,
        "m",
        false,
        &[("x-sim-fault", "rate_limit;retry_after=30")],
    )
    .await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("30"));
    assert_eq!(limited.json()["error"]["code"], "rate_limited");
}

#[tokio::test]
async fn the_clients_deadline_is_answered_just_before_it() {
    let gateway = start(POLICY).await;
    // 500ms less a tenth: the answer comes at 450ms, before first_token (800ms) would fire.
    let reply = chat(
        gateway.addr,
        "m",
        true,
        &[
            ("x-sim-fault", "first_token;after=30s"),
            ("x-hourglass-timeout", "500ms"),
        ],
    )
    .await;
    assert_eq!(reply.status, 504);
    assert_eq!(reply.json()["error"]["code"], "deadline_exceeded");
    assert!(
        reply.elapsed >= ms(450) && reply.elapsed < ms(550),
        "{:?}",
        reply.elapsed
    );
    // The Node SDK's header, in whole seconds.
    let sdk = chat(
        gateway.addr,
        "m",
        false,
        &[("x-sim-fault", "hang"), ("x-stainless-timeout", "1")],
    )
    .await;
    assert_eq!(sdk.status, 504);
    assert!(
        sdk.elapsed >= ms(900) && sdk.elapsed < ms(1000),
        "{:?}",
        sdk.elapsed
    );
    assert!(
        sdk.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-stainless-timeout")
    );

    let bad = chat(gateway.addr, "m", false, &[("x-hourglass-timeout", "2500")]).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["code"], "bad_request");
    assert!(
        bad.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-hourglass-timeout")
    );
}

#[tokio::test]
async fn aliases_models_and_other_paths_are_routed() {
    let gateway = start(POLICY).await;
    let aliased = chat(gateway.addr, "fast", false, &[]).await;
    assert_eq!(aliased.json()["model"], "gpt-4o-mini");
    let models = send(gateway.addr, "GET", "/v1/models", &[], "")
        .await
        .json();
    let ids: Vec<_> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["m", "fast", "slow"]);
    // Another /v1 path goes to the first upstream as it is.
    let passthrough = send(gateway.addr, "GET", "/v1/files", &[], "").await;
    assert_eq!(passthrough.status, 404);
    assert!(
        passthrough.body.contains("Invalid URL (GET /v1/files)"),
        "{}",
        passthrough.body
    );
    assert_eq!(gateway.requests("a"), 1, "only the passthrough went to a");
    let outside = send(gateway.addr, "GET", "/admin", &[], "").await;
    assert_eq!(outside.status, 404);
    assert_eq!(
        send(gateway.addr, "GET", "/health", &[], "").await.json()["status"],
        "ok"
    );
}

#[tokio::test]
async fn bad_requests_are_refused_before_any_attempt() {
    let gateway = start(&format!("{POLICY}\n[server]\nmax_request_body = \"1KB\"\n")).await;
    let large = send(
        gateway.addr,
        "POST",
        "/v1/chat/completions",
        &[],
        "x".repeat(2000),
    )
    .await;
    assert_eq!(large.status, 413);
    assert_eq!(large.json()["error"]["code"], "request_too_large");
    let broken = send(
        gateway.addr,
        "POST",
        "/v1/chat/completions",
        &[],
        "{\"model\":",
    )
    .await;
    assert_eq!(broken.status, 400);
    assert!(
        broken.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    let no_model = send(
        gateway.addr,
        "POST",
        "/v1/chat/completions",
        &[],
        "{\"messages\":[]}",
    )
    .await;
    assert_eq!(no_model.status, 400);
    assert_eq!(gateway.requests("a") + gateway.requests("b"), 0);
}

#[tokio::test]
async fn shutdown_lets_an_inflight_stream_finish() {
    let gateway = start(POLICY).await;
    let addr = gateway.addr;
    let inflight = tokio::spawn(async move {
        chat(
            addr,
            "m",
            true,
            &[("x-sim-fault", "stall;after_chunks=2;for=300ms")],
        )
        .await
    });
    tokio::time::sleep(ms(100)).await;
    let still_open = gateway.shutdown().await;
    assert_eq!(still_open, 0);
    let reply = inflight.await.unwrap();
    assert!(reply.body.ends_with("data: [DONE]\n\n"), "{}", reply.body);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

/// Found by a deploy: streams still running when `shutdown_grace` ran out got a bare close. They
/// end with a `gateway_shutdown` error in their protocol's shape, and a call still waiting for
/// its answer gets a 503 with that code.
#[tokio::test]
async fn calls_still_running_when_the_grace_period_ends_get_a_shutdown_error() {
    let gateway = start(&format!("{POLICY}\n[server]\nshutdown_grace = \"300ms\"\n")).await;
    let addr = gateway.addr;
    let stream = tokio::spawn(async move {
        let stall = [("x-sim-fault", "stall;after_chunks=2;for=30s")];
        chat(addr, "slow", true, &stall).await
    });
    let waiting = tokio::spawn(async move {
        let body =
            serde_json::json!({"model": "slow", "messages": [], "stream": false}).to_string();
        let hang = [("x-sim-fault", "first_token;after=30s")];
        send(addr, "POST", "/v1/chat/completions", &hang, body).await
    });
    tokio::time::sleep(ms(200)).await;
    let started = tokio::time::Instant::now();
    let still_open = gateway.shutdown().await;
    assert_eq!(still_open, 2);
    assert!(started.elapsed() < ms(1500), "{:?}", started.elapsed());

    let stream = stream.await.unwrap();
    let last = stream.body.trim_end().rsplit("\n\n").next().unwrap();
    let error: serde_json::Value =
        serde_json::from_str(last.strip_prefix("data: ").expect(last)).unwrap();
    assert_eq!(
        error["error"]["code"], "gateway_shutdown",
        "{}",
        stream.body
    );
    let waiting = waiting.await.unwrap();
    assert_eq!(waiting.status, 503, "{}", waiting.body);
    assert_eq!(waiting.json()["error"]["code"], "gateway_shutdown");
}

/// Open connections the simulators hold, polled until they reach `want` or a second passes.
async fn settle(gateway: &Running, want: u64) -> u64 {
    let mut open = u64::MAX;
    for _ in 0..50 {
        open = gateway
            .sims
            .values()
            .map(|s| s.stats().open_connections)
            .sum();
        if open == want {
            break;
        }
        tokio::time::sleep(ms(20)).await;
    }
    open
}

#[tokio::test]
async fn a_client_that_leaves_cancels_the_upstream_call_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gateway = start(POLICY).await;
    for (stream, fault) in [
        (true, "first_token;after=30s"),
        (false, "hang"),
        (true, "stall;after_chunks=3;for=30s"),
    ] {
        let body = chat_body("m", stream);
        let mut client = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             x-sim-fault: {fault}\r\nx-hourglass-timeout: 20s\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        client.write_all(request.as_bytes()).await.unwrap();
        if fault.starts_with("stall") {
            // Wait until the stream has begun (committed), then leave in the middle of it.
            let mut first = [0u8; 64];
            let _ = client.read(&mut first).await.unwrap();
        } else {
            tokio::time::sleep(ms(150)).await;
        }
        assert_eq!(
            settle(&gateway, 1).await,
            1,
            "{fault}: the upstream call is in flight"
        );
        drop(client);
        assert_eq!(
            settle(&gateway, 0).await,
            0,
            "{fault}: the upstream connection closes when the client leaves"
        );
    }
}

/// Found with the Python SDK: `OpenAI(timeout=3)` sends `x-stainless-read-timeout: 3`, a timer
/// between bytes. With heartbeats the bytes flow, so it must not end the call as a total
/// deadline (the call ended at 2.7 s with `deadline_exceeded` where it would succeed later).
#[tokio::test]
async fn a_read_timeout_bounds_nothing_while_heartbeats_flow() {
    let gateway = start(POLICY).await;
    let whole = chat(
        gateway.addr,
        "slow",
        false,
        &[
            ("x-sim-fault", "first_token;after=1500ms"),
            ("x-hourglass-heartbeat", "200ms"),
            ("x-stainless-read-timeout", "1"),
        ],
    )
    .await;
    assert_eq!(whole.status, 200);
    let answer = whole.json();
    assert!(
        answer["choices"][0]["message"]["content"].is_string(),
        "{}",
        whole.body
    );
    // Without heartbeats it is what it was: the whole wait is silent, so the deadline holds.
    let silent = chat(
        gateway.addr,
        "slow",
        false,
        &[
            ("x-sim-fault", "first_token;after=1500ms"),
            ("x-stainless-read-timeout", "1"),
        ],
    )
    .await;
    assert_eq!(silent.status, 504, "{}", silent.body);
    assert_eq!(silent.json()["error"]["code"], "deadline_exceeded");
}

#[tokio::test]
async fn heartbeats_keep_a_silent_call_alive_and_never_count_as_content() {
    let gateway = start(POLICY).await;
    // Before the first token (1 s late), then between tokens (a 1 s stall).
    let reply = chat(
        gateway.addr,
        "slow",
        true,
        &[
            ("x-sim-fault", "first_token;after=1s"),
            ("x-hourglass-heartbeat", "200ms"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-hourglass-heartbeat"), Some("200ms"));
    assert!(
        reply.body.contains(": x-hourglass-upstream: ")
            && reply.body.contains(": x-hourglass-attempts: 1\n"),
        "the answer's headers, in a comment before its first event:\n{}",
        reply.body
    );
    let comments = reply.body.matches(": keep-alive\n\n").count();
    assert!(
        comments >= 4,
        "a comment every 200ms for 1 s: {comments}\n{}",
        reply.body
    );
    assert!(reply.body.ends_with("data: [DONE]\n\n"));
    assert_eq!(
        content::check(&stream_text(&reply.body)).unwrap().tokens,
        16
    );

    let between = chat(
        gateway.addr,
        "slow",
        true,
        &[
            ("x-sim-fault", "stall;after_chunks=3;for=1s"),
            ("x-hourglass-heartbeat", "200ms"),
        ],
    )
    .await;
    let after_content = &between.body[between.body.find("\"content\":\"").unwrap()..];
    assert!(
        after_content.matches(": keep-alive").count() >= 3,
        "{}",
        between.body
    );
    assert_eq!(
        content::check(&stream_text(&between.body)).unwrap().tokens,
        16
    );

    // A whole answer: spaces first, then the JSON (which parsers read past the spaces).
    let whole = chat(
        gateway.addr,
        "slow",
        false,
        &[
            ("x-sim-fault", "first_token;after=1s"),
            ("x-hourglass-heartbeat", "200ms"),
        ],
    )
    .await;
    assert!(whole.body.starts_with("    "), "{:?}", &whole.body[..20]);
    // The 200 went out with the first space: the answer's own headers travel in the body.
    assert!(
        whole.json()["hourglass"]["upstream"].is_string(),
        "{}",
        whole.body
    );
    assert_eq!(whole.json()["hourglass"]["attempts"], "1");
    content::check(
        whole.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap(),
    )
    .unwrap();

    // After the first heartbeat the status is sent: an error arrives in the body.
    let failed = chat(
        gateway.addr,
        "m",
        true,
        &[
            ("x-sim-fault", "first_token;after=30s"),
            ("x-hourglass-heartbeat", "200ms"),
        ],
    )
    .await;
    assert_eq!(failed.status, 200);
    let event = failed
        .body
        .rsplit("\n\n")
        .find(|e| e.starts_with("data: "))
        .unwrap();
    let error: serde_json::Value = serde_json::from_str(&event[6..]).unwrap();
    assert_eq!(error["error"]["code"], "first_token_timeout");

    let bad = chat(
        gateway.addr,
        "m",
        true,
        &[("x-hourglass-heartbeat", "often")],
    )
    .await;
    assert_eq!(bad.status, 400);
}

/// Found by the Vercel AI SDK (which uses the Responses API by default): after commit a Responses
/// stream ended with a bare `data: {"error": …}` — no `event: error`, no `type`, no
/// `sequence_number` — so the SDK threw a type-validation error and the code was lost. It ends
/// with the Responses API's own error event, numbered after the last event, `code` kept; a legacy
/// completions stream ends like a chat one.
#[tokio::test]
async fn a_failed_stream_ends_with_the_error_event_of_its_own_api() {
    let gateway = start("[models.m]\ntargets = [\"a:gpt-4o-mini\"]\n").await;
    let cut = [("x-sim-fault", "cut;after_chunks=3")];
    let body = serde_json::json!({"model": "m", "input": "hi", "stream": true}).to_string();
    let reply = send(gateway.addr, "POST", "/v1/responses", &cut, body).await;
    assert_eq!(reply.status, 200);
    let events: Vec<&str> = reply.body.split("\n\n").filter(|e| !e.is_empty()).collect();
    let (last, before) = events.split_last().unwrap();
    let data = last.strip_prefix("event: error\ndata: ").expect(last);
    let error: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "upstream_cut");
    assert!(error["message"].as_str().unwrap().contains("not retried"));
    let previous: serde_json::Value =
        serde_json::from_str(before.last().unwrap().split("data: ").nth(1).unwrap()).unwrap();
    let next = previous["sequence_number"].as_u64().unwrap() + 1;
    assert_eq!(
        error["sequence_number"], next,
        "numbered after the last event"
    );

    let body = serde_json::json!({"model": "m", "prompt": "hi", "stream": true}).to_string();
    let reply = send(gateway.addr, "POST", "/v1/completions", &cut, body).await;
    let last = reply.body.trim_end().rsplit("\n\n").next().unwrap();
    let error: serde_json::Value =
        serde_json::from_str(last.strip_prefix("data: ").expect(last)).unwrap();
    assert_eq!(error["error"]["code"], "upstream_cut");
}
