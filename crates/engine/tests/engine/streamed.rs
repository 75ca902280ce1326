//! Non-streaming clients protected like streaming ones: the call is streamed from the upstream
//! (`stream_upstream`), watched by `first_token` and `idle`, retried on any failure before its
//! end, and answered with one JSON body identical to the upstream's own non-streaming answer.

use hourglass_sim::content;

use crate::support::*;

const STREAMED: &str = r#"
[models.m]
targets = ["a:sim-instant", "b:sim-instant"]
timeouts = { connect = "2s", first_byte = "60s", first_token = "5s", idle = "4s", attempt = "90s", attempt_growth = 1.0, total = "120s" }
retry = { max_attempts = 3, backoff_base = "100ms", backoff_max = "1s" }
stream_upstream = true
"#;

/// The simulator's own non-streaming chat answer and the engine's assembled one, for the same
/// seed, the request's fields extended by `extra`.
async fn both(extra: serde_json::Value) -> (serde_json::Value, serde_json::Value) {
    let mut body = serde_json::json!({"model": "sim-instant", "messages": [{"role": "user", "content": "hi"}]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    both_on(hourglass_engine::Endpoint::Chat, "/chat/completions", body).await
}

fn without_created(mut value: serde_json::Value) -> serde_json::Value {
    value.as_object_mut().unwrap().remove("created");
    value
}

#[tokio::test(start_paused = true)]
async fn the_assembled_answer_equals_the_upstreams_own_field_by_field() {
    let (direct, assembled) = both(serde_json::json!({})).await;
    assert_eq!(without_created(assembled), without_created(direct));
}

#[tokio::test(start_paused = true)]
async fn several_choices_and_tool_calls_are_assembled_too() {
    let tools = serde_json::json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let (direct, assembled) = both(serde_json::json!({"n": 3, "tools": tools})).await;
    assert_eq!(assembled["choices"].as_array().unwrap().len(), 3);
    assert_eq!(assembled["choices"][2]["finish_reason"], "tool_calls");
    assert_eq!(without_created(assembled), without_created(direct));
}

#[tokio::test(start_paused = true)]
async fn a_silent_upstream_is_caught_by_first_token_and_failed_over() {
    let setup = setup(STREAMED);
    let outcome = call(
        &setup,
        chat(
            "m",
            false,
            Some("first_token;after=60s;keepalive=1s;upstream=a"),
        ),
    )
    .await;
    caught_by_first_token_and_failed_over(&outcome);
    assert_eq!(
        content::check(&whole_text(&outcome.ok().body))
            .unwrap()
            .tokens,
        16
    );
}

/// `a` was silent: its attempt ended at `first_token` (5 s), not the 60 s `first_byte`, and `b`
/// answered.
fn caught_by_first_token_and_failed_over(outcome: &Outcome) {
    assert_eq!(
        outcome.trail(),
        [
            ("a".to_owned(), "first_token_timeout"),
            ("b".to_owned(), "ok")
        ]
    );
    assert_eq!(
        outcome.elapsed,
        5 * SECOND,
        "first_token, not the 60 s first_byte"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stall_in_the_middle_of_the_answer_is_retried_whole() {
    let setup = setup(STREAMED);
    let outcome = call(
        &setup,
        chat("m", false, Some("stall;after_chunks=8;for=60s;upstream=a")),
    )
    .await;
    let done = outcome.ok();
    assert_eq!(
        outcome.trail(),
        [("a".to_owned(), "idle_timeout"), ("b".to_owned(), "ok")]
    );
    assert_eq!(outcome.elapsed, 4 * SECOND);
    let text = whole_text(&done.body);
    assert_eq!(
        content::check(&text).unwrap().tokens,
        16,
        "b's answer alone: nothing of a's spliced in"
    );
    let cut = call(
        &setup,
        chat("m", false, Some("cut;after_chunks=8;upstream=a")),
    )
    .await;
    assert_eq!(
        cut.trail(),
        [("a".to_owned(), "upstream_cut"), ("b".to_owned(), "ok")]
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_for_logprobs_keeps_the_plain_path() {
    let setup = setup(STREAMED);
    let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "logprobs": true});
    let mut request = hourglass_engine::CallRequest::new(
        hourglass_engine::Endpoint::Chat,
        "/chat/completions",
        bytes::Bytes::from(body.to_string()),
    )
    .unwrap();
    request.headers.insert(
        "x-sim-fault",
        "first_token;after=70s;upstream=a".parse().unwrap(),
    );
    let outcome = call(&setup, request).await;
    // Not streamed from the upstream: only first_byte (60 s) can end the silent attempt.
    assert_eq!(
        outcome.trail(),
        [
            ("a".to_owned(), "first_byte_timeout"),
            ("b".to_owned(), "ok")
        ]
    );
    assert_eq!(outcome.elapsed, 60 * SECOND);
}

/// The simulator's own non-streaming answer on `path` and the engine's, assembled from a stream,
/// for the same seed.
async fn both_on(
    endpoint: hourglass_engine::Endpoint,
    path: &str,
    body: serde_json::Value,
) -> (serde_json::Value, serde_json::Value) {
    let setup = setup(STREAMED);
    let direct = {
        let io = setup.sims["a"].connect_in_memory().await;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                .await
                .unwrap();
        tokio::spawn(conn);
        let request = http::Request::post(format!("/v1{path}"))
            .header("host", "a")
            .header("x-sim-seed", "77")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
    };
    let routed = body.to_string().replace("sim-instant", "m");
    let mut request =
        hourglass_engine::CallRequest::new(endpoint, path, bytes::Bytes::from(routed)).unwrap();
    assert!(request.assemblable, "{path} is assembled from a stream");
    request.headers.insert("x-sim-seed", "77".parse().unwrap());
    let outcome = call(&setup, request).await;
    assert_eq!(setup.requests("a"), 2, "one direct, one streamed");
    let assembled: serde_json::Value = serde_json::from_str(&outcome.ok().body).unwrap();
    (direct, assembled)
}

fn without(mut value: serde_json::Value, key: &str) -> serde_json::Value {
    value.as_object_mut().unwrap().remove(key);
    value
}

/// Found with the Vercel AI SDK: non-streaming responses and legacy completions were not
/// streamed from the upstream, so they waited out the plain timeouts where chat calls did not.
#[tokio::test(start_paused = true)]
async fn whole_completions_and_responses_are_assembled_equal_to_the_upstreams_own() {
    let completion = serde_json::json!({"model": "sim-instant", "prompt": "hi", "n": 2});
    let (direct, assembled) = both_on(
        hourglass_engine::Endpoint::Completions,
        "/completions",
        completion,
    )
    .await;
    assert_eq!(assembled["object"], "text_completion");
    assert_eq!(assembled["choices"].as_array().unwrap().len(), 2);
    assert_eq!(without(assembled, "created"), without(direct, "created"));

    let response = serde_json::json!({"model": "sim-instant", "input": "hi"});
    let (direct, assembled) = both_on(
        hourglass_engine::Endpoint::Responses,
        "/responses",
        response,
    )
    .await;
    assert_eq!(assembled["object"], "response");
    assert_eq!(assembled["status"], "completed");
    assert_eq!(
        without(assembled, "created_at"),
        without(direct, "created_at")
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_upstream_of_a_whole_response_is_caught_by_first_token_and_failed_over() {
    let setup = setup(STREAMED);
    let body = serde_json::json!({"model": "m", "input": "hi"}).to_string();
    let mut request = hourglass_engine::CallRequest::new(
        hourglass_engine::Endpoint::Responses,
        "/responses",
        bytes::Bytes::from(body),
    )
    .unwrap();
    let fault = "first_token;after=60s;keepalive=1s;upstream=a";
    request
        .headers
        .insert("x-sim-fault", fault.parse().unwrap());
    let outcome = call(&setup, request).await;
    caught_by_first_token_and_failed_over(&outcome);
    let answer: serde_json::Value = serde_json::from_str(&outcome.ok().body).unwrap();
    assert_eq!(answer["status"], "completed");
}

/// `events` as a chunked HTTP/1.1 event stream (one chunk each), the upstream's whole response.
fn event_stream(events: &[&str]) -> &'static [u8] {
    let mut response = String::from(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
    );
    for event in events {
        let event = format!("data: {event}\n\n");
        response.push_str(&format!("{:x}\r\n{event}\r\n", event.len()));
    }
    response.push_str("0\r\n\r\n");
    Box::leak(response.into_bytes().into_boxed_slice())
}

/// What a reasoning model's server streams beside the answer (`reasoning_content`) and a search
/// model's citations reach the client's whole answer, as the upstream's own whole answer carries
/// them; they were dropped.
#[tokio::test(start_paused = true)]
async fn reasoning_text_and_citations_reach_a_whole_answer() {
    let engine = setup_scripted(
        "[models.m]\ntargets = [\"x:m\"]\nretry = { max_attempts = 1 }\n",
        event_stream(&[
            r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":null,"reasoning_content":"First, "},"finish_reason":null}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":null,"reasoning_content":"think."},"finish_reason":null}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"Paris."},"finish_reason":null}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"annotations":[{"type":"url_citation","url_citation":{"url":"https://a.example/"}}]},"finish_reason":null}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            "[DONE]",
        ]),
    );
    let response = engine.call(chat("m", false, None)).await.unwrap();
    let hourglass_engine::ResponseBody::Full(body) = response.body else {
        panic!("a whole answer");
    };
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], "Paris.");
    assert_eq!(message["reasoning_content"], "First, think.");
    assert_eq!(
        message["annotations"],
        serde_json::json!([{"type": "url_citation", "url_citation": {"url": "https://a.example/"}}])
    );
}
