//! Failover, retries, budgets and deadlines: which upstream answers, after how long, and what the
//! trail says.

use hourglass_sim::content;

use crate::support::*;

/// Model `m` on `a` then `b` (both `sim-instant`: no simulated latency), with round timeouts.
pub const POLICY: &str = r#"
[models.m]
targets = ["a:sim-instant", "b:sim-instant"]
timeouts = { connect = "2s", write = "2s", first_byte = "3s", first_token = "5s", idle = "4s", attempt = "10s", attempt_growth = 1.0, total = "60s" }
retry = { max_attempts = 3, backoff_base = "100ms", backoff_max = "1s" }
stream_upstream = false
"#;

#[tokio::test(start_paused = true)]
async fn a_hanging_upstream_fails_over_after_its_first_byte_timeout_streaming_or_not() {
    for stream in [true, false] {
        let setup = setup(POLICY);
        let outcome = call(&setup, chat("m", stream, Some("hang;upstream=a"))).await;
        let done = outcome.ok();
        assert_eq!(done.upstream, "b", "stream={stream}");
        assert_eq!(
            outcome.trail(),
            [
                ("a".to_owned(), "first_byte_timeout"),
                ("b".to_owned(), "ok")
            ]
        );
        assert!(
            outcome.elapsed >= 3 * SECOND && outcome.elapsed < 3 * SECOND + ms(20),
            "stream={stream}: {:?}",
            outcome.elapsed
        );
        let text = if stream {
            stream_text(&done.body).0
        } else {
            whole_text(&done.body)
        };
        assert_eq!(content::check(&text).unwrap().tokens, 16, "content intact");
        assert_eq!((setup.requests("a"), setup.requests("b")), (1, 1));
    }
}

#[tokio::test(start_paused = true)]
async fn a_model_alias_is_sent_upstream_under_its_own_name() {
    let setup = setup(POLICY);
    let done = call(&setup, chat("m", false, None)).await;
    let body: serde_json::Value = serde_json::from_str(&done.ok().body).unwrap();
    assert_eq!(
        body["model"], "sim-instant",
        "the simulator echoes the model it was asked for"
    );
}

#[tokio::test(start_paused = true)]
async fn fallbacks_are_tried_after_every_target_of_the_model() {
    let setup = setup(
        r#"
[models.big]
targets = ["a:gpt-4o"]
fallbacks = ["small"]
[models.small]
targets = ["b:sim-instant"]
"#,
    );
    let outcome = call(
        &setup,
        chat("big", false, Some("status;code=503;upstream=a")),
    )
    .await;
    assert_eq!(outcome.ok().upstream, "b");
    assert_eq!(
        outcome.trail(),
        [("a".to_owned(), "upstream_status"), ("b".to_owned(), "ok")]
    );
}

#[tokio::test(start_paused = true)]
async fn a_single_upstream_is_retried_after_a_jittered_backoff() {
    let setup = setup_with(&["a"], &POLICY.replace(r#", "b:sim-instant""#, ""));
    let outcome = call(&setup, chat("m", false, Some("status;code=502"))).await;
    let error = outcome.err();
    assert_eq!(error.code, "upstream_status");
    assert_eq!(error.status, 502);
    assert_eq!(error.trail.len(), 3, "max_attempts");
    assert!(
        outcome.elapsed <= ms(100 + 200),
        "two backoffs of at most 100ms and 200ms: {:?}",
        outcome.elapsed
    );
    assert!(
        error.message.contains("3 attempts on 1 of 1 upstream"),
        "{}",
        error.message
    );
    assert_eq!(
        error.upstream_error.as_ref().unwrap()["type"],
        "server_error"
    );
}

#[tokio::test(start_paused = true)]
async fn the_clients_own_errors_are_not_retried() {
    let setup = setup(POLICY);
    let outcome = call(&setup, chat("m", false, Some("status;code=400"))).await;
    let error = outcome.err();
    assert_eq!(
        (error.code.name(), error.status.as_u16()),
        ("upstream_status", 400)
    );
    assert_eq!(error.trail.len(), 1);
    assert_eq!(setup.requests("b"), 0);
}

#[tokio::test(start_paused = true)]
async fn retry_after_fails_over_at_once_when_another_upstream_is_there() {
    let setup = setup(POLICY);
    let outcome = call(
        &setup,
        chat("m", true, Some("rate_limit;retry_after=30;upstream=a")),
    )
    .await;
    assert_eq!(outcome.ok().upstream, "b");
    assert!(
        outcome.elapsed < ms(10),
        "no waiting for a's Retry-After: {:?}",
        outcome.elapsed
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_waited_out_when_it_fits_and_reported_when_it_does_not() {
    let single = POLICY.replace(r#", "b:sim-instant""#, "");
    let setup = setup_with(&["a"], &single);
    let outcome = call(
        &setup,
        chat("m", false, Some("rate_limit;retry_after=2;p=1")),
    )
    .await;
    let error = outcome.err();
    assert_eq!(error.code, "rate_limited");
    assert_eq!(error.status, 429);
    assert_eq!(error.retry_after, Some(2 * SECOND));
    assert!(
        outcome.elapsed >= 4 * SECOND,
        "two waits of Retry-After: {:?}",
        outcome.elapsed
    );

    let short = single.replace(r#"total = "60s""#, r#"total = "1s""#);
    let setup = setup_with(&["a"], &short);
    let outcome = call(&setup, chat("m", false, Some("rate_limit;retry_after=5"))).await;
    assert_eq!(
        outcome.err().trail.len(),
        1,
        "a 5 s wait does not fit in 1 s"
    );
    assert!(outcome.elapsed < ms(10));
}

#[tokio::test(start_paused = true)]
async fn the_clients_deadline_fires_exactly_and_is_named() {
    let setup = setup(POLICY);
    let mut request = chat("m", true, Some("first_token;after=30s"));
    request.client_deadline = Some((
        tokio::time::Instant::now() + ms(2_250),
        "x-hourglass-timeout: 2.5s".to_owned(),
    ));
    let outcome = call(&setup, request).await;
    let error = outcome.err();
    assert_eq!(error.code, "deadline_exceeded");
    assert_eq!(error.status, 504);
    assert_eq!(outcome.elapsed, ms(2_250));
    assert!(
        error.message.contains("x-hourglass-timeout: 2.5s"),
        "{}",
        error.message
    );
}

#[tokio::test(start_paused = true)]
async fn an_empty_retry_budget_stops_retries() {
    let setup = setup(&format!(
        "{POLICY}\n[retry_budget]\nratio = 0.0\nmin_per_s = 0.0\n"
    ));
    let outcome = call(&setup, chat("m", false, Some("status;code=503;upstream=a"))).await;
    let error = outcome.err();
    assert_eq!(error.code, "retry_budget_exhausted");
    assert_eq!(error.status, 503);
    assert_eq!(error.trail.len(), 1);
    assert!(error.message.contains("retry budget"), "{}", error.message);
}

#[tokio::test(start_paused = true)]
async fn errors_name_the_limit_its_value_and_its_key() {
    let setup = setup(POLICY);
    let error = call(&setup, chat("m", true, Some("first_token;after=60s")))
        .await
        .err()
        .clone();
    assert_eq!(error.code, "first_token_timeout");
    assert!(error.message.starts_with("upstream `"), "{}", error.message);
    assert!(
        error
            .message
            .contains("sent no first token within 5s (models.m.timeouts.first_token)"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("3 attempts on 2 of 2 upstreams"),
        "{}",
        error.message
    );
    let json = hourglass_engine::protocol::openai::OpenAi::error_json(&error);
    assert_eq!(json["error"]["code"], "first_token_timeout");
    assert_eq!(
        json["error"]["hourglass"]["attempts"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        json["error"]["hourglass"]["attempts"][0]["phase"],
        "first_token"
    );
    assert!(
        json["error"]["hourglass"]["diagnosis"]
            .as_str()
            .unwrap()
            .contains("first_token")
    );

    let listed = setup_raw(
        &["a"],
        "[upstreams.a]\nbase_url = \"http://a.invalid/v1\"\nmodels = [\"sim-instant\"]\n",
    );
    let unknown = call(&listed, chat("nope", false, None)).await;
    assert_eq!(unknown.err().code, "no_route");
    assert_eq!(unknown.err().status, 404);
}

/// Model `m` as a chat model is by default: streamed from the upstream for non-streaming clients,
/// `attempt` far longer than `first_token`.
const STREAMED_UPSTREAM: &str = r#"
[models.m]
targets = ["a:sim-instant", "b:sim-instant"]
timeouts = { first_byte = "30s", first_token = "5s", attempt = "60s", total = "120s" }
retry = { max_attempts = 3, backoff_base = "100ms", backoff_max = "1s" }
stream_upstream = true
"#;

/// A non-streaming call with the client's own short deadline (what `OpenAI(timeout=5)` sends),
/// streamed from the upstream: a retry needs a tenth of `first_token`, not of `attempt`.
#[tokio::test(start_paused = true)]
async fn a_non_streaming_call_with_a_short_client_deadline_fails_over() {
    for fault in [
        "status;code=503;upstream=a",
        "reset;upstream=a",
        "rate_limit;upstream=a",
    ] {
        let setup = setup(STREAMED_UPSTREAM);
        let mut request = chat("m", false, Some(fault));
        request.client_deadline = Some((
            tokio::time::Instant::now() + std::time::Duration::from_secs(4),
            "x-stainless-read-timeout".to_owned(),
        ));
        let outcome = call(&setup, request).await;
        assert_eq!(outcome.ok().upstream, "b", "{fault}");
        assert_eq!(setup.requests("b"), 1, "{fault}");
    }
}

/// When the time left is less than a retry needs, the error says that is why there was none.
#[tokio::test(start_paused = true)]
async fn a_retry_skipped_for_lack_of_time_is_named_in_the_error() {
    let setup = setup(STREAMED_UPSTREAM);
    let mut request = chat("m", false, Some("status;code=503;upstream=a"));
    request.client_deadline = Some((
        tokio::time::Instant::now() + std::time::Duration::from_millis(300),
        "x-hourglass-timeout".to_owned(),
    ));
    let outcome = call(&setup, request).await;
    let error = outcome.err();
    assert_eq!(error.trail.len(), 1);
    assert!(
        error.message.contains("no retry: ")
            && error.message.contains("left of the call's deadline")
            && error.message.contains("x-hourglass-timeout")
            && error.message.contains("a try needs 500ms"),
        "{}",
        error.message
    );
}

/// A 429 with `Retry-After` for the upstream's own key keeps later calls off that upstream
/// until it ends; for a client's key passed through (no key of the upstream's), it does not.
#[tokio::test(start_paused = true)]
async fn a_429_with_retry_after_for_the_upstreams_key_keeps_later_calls_off_it() {
    let key = std::env::temp_dir().join(format!("hourglass-key-{}", std::process::id()));
    std::fs::write(&key, "sk-test").unwrap();
    let keyed = format!(
        "[upstreams.a]\nbase_url = \"http://a.invalid/v1\"\napi_key_file = \"{}\"\n\
         [upstreams.b]\nbase_url = \"http://b.invalid/v1\"\napi_key_file = \"{}\"\n{POLICY}",
        key.display(),
        key.display()
    );
    let keyed = setup_raw(&["a", "b"], &keyed);
    let first = call(
        &keyed,
        chat("m", false, Some("rate_limit;retry_after=30;upstream=a")),
    )
    .await;
    assert_eq!(first.ok().upstream, "b");
    assert_eq!(keyed.requests("a"), 1);
    let cooling = keyed.engine.health().cooldowns();
    assert_eq!(cooling.len(), 1, "{cooling:?}");
    assert_eq!(
        (cooling[0].0.as_str(), cooling[0].1.as_deref()),
        ("a", Some("sim-instant"))
    );
    for _ in 0..5 {
        let later = call(&keyed, chat("m", false, None)).await;
        assert_eq!(later.trail(), [("b".to_owned(), "ok")], "straight to b");
    }
    assert_eq!(keyed.requests("a"), 1, "a was left alone for its 30 s");
    tokio::time::advance(31 * SECOND).await;
    assert_eq!(
        call(&keyed, chat("m", false, None)).await.ok().upstream,
        "a"
    );

    let passed_through = setup(POLICY);
    let first = call(
        &passed_through,
        chat("m", false, Some("rate_limit;retry_after=30;upstream=a")),
    )
    .await;
    assert_eq!(first.ok().upstream, "b");
    assert!(passed_through.engine.health().cooldowns().is_empty());
    assert_eq!(
        call(&passed_through, chat("m", false, None))
            .await
            .ok()
            .upstream,
        "a"
    );
    std::fs::remove_file(key).unwrap();
}
