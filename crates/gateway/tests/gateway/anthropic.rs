//! Anthropic's Messages API through the gateway, against simulators that speak it: failover
//! before the first content delta is invisible (a hang, a 529, a 429), a cut after it ends the
//! stream with Anthropic's own `error` event and never a `message_stop`, a non-streaming client
//! gets one Message assembled from a protected stream (thinking signatures byte for byte),
//! heartbeats are `ping` events, and errors, client keys, `/v1/models` and `count_tokens` take
//! Anthropic's shapes.

use base64::Engine as _;
use hourglass_sim::content;
use serde_json::json;

use crate::support::*;

/// Model `claude` on `a` then `b`. Without heartbeats (Claude models get them every 15 s by
/// default), so the status and headers of an answer are its own and can be checked.
const CLAUDE: &str = r#"
[models.claude]
targets = ["a:sim-instant", "b:sim-instant"]
timeouts = { first_byte = "500ms", first_token = "800ms", total = "10s" }
retry = { max_attempts = 2, backoff_base = "50ms", backoff_max = "100ms" }
heartbeat = "off"
"#;

fn message(stream: bool, extra: serde_json::Value) -> String {
    let mut body = json!({
        "model": "claude",
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
    });
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    body.to_string()
}

const VERSION: (&str, &str) = ("anthropic-version", "2023-06-01");

async fn messages(gateway: &Running, stream: bool, headers: &[(&str, &str)]) -> Reply {
    let mut all = vec![VERSION];
    all.extend_from_slice(headers);
    send(
        gateway.addr,
        "POST",
        "/v1/messages",
        &all,
        message(stream, json!({})),
    )
    .await
}

/// The `(event name, data)` pairs of an SSE body.
fn events(body: &str) -> Vec<(String, serde_json::Value)> {
    body.split("\n\n")
        .filter_map(|frame| {
            let name = frame.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = frame.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((name.to_owned(), serde_json::from_str(data).unwrap()))
        })
        .collect()
}

/// The text a Messages stream's `text_delta`s make.
fn streamed_text(body: &str) -> String {
    events(body)
        .iter()
        .filter(|(name, data)| {
            name == "content_block_delta" && data["delta"]["type"] == "text_delta"
        })
        .map(|(_, data)| data["delta"]["text"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_stream_fails_over_invisibly_from_a_hang_a_529_and_a_429() {
    let gateway = start_anthropic(CLAUDE).await;
    for fault in [
        "hang;upstream=a",
        "status;code=529;upstream=a",
        "rate_limit;retry_after=1;upstream=a",
        "reset;upstream=a",
        "first_token;after=5s;keepalive=100ms;upstream=a",
    ] {
        let reply = messages(&gateway, true, &[("x-sim-fault", fault)]).await;
        assert_eq!(reply.status, 200, "{fault}: {}", reply.body);
        assert_eq!(reply.header("x-hourglass-upstream"), Some("b"), "{fault}");
        let names: Vec<String> = events(&reply.body).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names[0], "message_start",
            "{fault}: one answer, from b: {names:?}"
        );
        assert_eq!(
            names.iter().filter(|n| *n == "message_start").count(),
            1,
            "{fault}"
        );
        assert_eq!(
            names.last().map(String::as_str),
            Some("message_stop"),
            "{fault}"
        );
        content::check(&streamed_text(&reply.body)).unwrap();
    }
}

#[tokio::test]
async fn a_cut_after_the_first_delta_ends_with_anthropics_error_event_never_message_stop() {
    let gateway = start_anthropic(CLAUDE).await;
    let reply = messages(&gateway, true, &[("x-sim-fault", "cut;after_chunks=4")]).await;
    assert_eq!(reply.status, 200, "the stream had begun");
    let all = events(&reply.body);
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert!(!names.contains(&"message_stop"), "{names:?}");
    let (name, error) = all.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "api_error");
    assert_eq!(error["error"]["code"], "upstream_cut");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ended the response before it was complete"),
        "{error}"
    );
    // What reached the client before the cut is intact, in order.
    let text = streamed_text(&reply.body);
    assert_eq!(text.split_whitespace().count(), 4, "{text}");

    // An upstream's own mid-stream error event (an overload) after the answer had begun ends
    // the stream the same way. (A pause after the first token, so it is sent on before the
    // error event arrives; together they would fail over unseen.)
    let interrupted = messages(
        &gateway,
        true,
        &[(
            "x-sim-fault",
            "stall;after_chunks=1;for=300ms, interrupt;after_chunks=1",
        )],
    )
    .await;
    let (name, error) = events(&interrupted.body)
        .pop()
        .unwrap_or_else(|| panic!("{} {}", interrupted.status, interrupted.body));
    assert_eq!(name, "error", "{}", interrupted.body);
    assert!(!interrupted.body.contains("event: message_stop"));
    assert_eq!(
        interrupted.body.matches("event: error").count(),
        1,
        "one error event, the gateway's, carrying the upstream's: {}",
        interrupted.body
    );
    assert_eq!(error["error"]["type"], "overloaded_error");
    assert_eq!(error["error"]["code"], "upstream_status");
    assert_eq!(
        error["error"]["hourglass"]["upstream_error"]["type"],
        "overloaded_error"
    );
    assert_eq!(
        streamed_text(&interrupted.body).split_whitespace().count(),
        1
    );
}

#[tokio::test]
async fn a_whole_message_is_assembled_from_a_protected_stream_with_signatures_kept() {
    let gateway = start_anthropic(CLAUDE).await;
    let body = message(
        false,
        json!({"thinking": {"type": "enabled", "budget_tokens": 1024},
               "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]}),
    );
    let reply = send(
        gateway.addr,
        "POST",
        "/v1/messages",
        &[VERSION, ("x-sim-fault", "hang;upstream=a")],
        body,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("x-hourglass-upstream"), Some("b"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let whole = reply.json();
    assert_eq!(whole["type"], "message");
    assert!(whole["id"].as_str().unwrap().starts_with("msg_sim"));
    assert_eq!(whole["stop_reason"], "tool_use");
    let blocks = whole["content"].as_array().unwrap();
    assert_eq!(blocks.len(), 2, "{whole}");
    assert_eq!(blocks[0]["type"], "thinking");
    assert_eq!(blocks[1]["type"], "tool_use");
    assert_eq!(blocks[1]["name"], "get_weather");
    let argument = blocks[1]["input"]["city"].as_str().unwrap();
    let checked = content::check(argument).unwrap();
    // The simulator signs with base64 of its answer's id and tag: decoding it proves every byte
    // arrived, through the stream and the assembler.
    let signature = blocks[0]["signature"].as_str().unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(signature)
        .unwrap();
    let expected = format!(
        "hourglass-sim/{}/{}/signature",
        whole["id"].as_str().unwrap(),
        checked.tag
    )
    .repeat(3);
    assert_eq!(String::from_utf8(decoded).unwrap(), expected);
    assert_eq!(
        whole["usage"]["output_tokens"].as_u64().unwrap(),
        u64::from(checked.tokens)
    );
    assert!(whole["usage"]["input_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_slow_first_token_is_kept_alive_with_ping_events() {
    let gateway = start_anthropic(CLAUDE.replace("800ms", "5s").as_str()).await;
    let reply = messages(
        &gateway,
        true,
        &[
            ("x-sim-fault", "first_token;after=1s"),
            ("x-hourglass-heartbeat", "200ms"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let names: Vec<String> = events(&reply.body).into_iter().map(|(n, _)| n).collect();
    let first_start = names.iter().position(|n| n == "message_start").unwrap();
    assert!(
        first_start >= 3 && names[..first_start].iter().all(|n| n == "ping"),
        "pings while the first token is awaited: {names:?}"
    );
    assert!(!reply.body.contains(": keep-alive"), "{}", reply.body);
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    content::check(&streamed_text(&reply.body)).unwrap();
}

#[tokio::test]
async fn errors_before_the_answer_take_anthropics_shape_with_hourglasss_code() {
    let gateway = start_anthropic(CLAUDE).await;
    let reply = messages(&gateway, true, &[("x-sim-fault", "status;code=529")]).await;
    assert_eq!(reply.status, 502, "every upstream failed: {}", reply.body);
    assert_eq!(reply.header("x-should-retry"), Some("false"));
    let error = reply.json();
    assert_eq!(error["type"], "error");
    assert_eq!(
        error["error"]["type"], "overloaded_error",
        "the upstreams' own kind of failure"
    );
    assert_eq!(error["error"]["code"], "upstream_status");
    assert!(
        error["error"]["hourglass"]["attempts"]
            .as_array()
            .unwrap()
            .len()
            == 2
    );
    let bad = send(
        gateway.addr,
        "POST",
        "/v1/messages",
        &[VERSION],
        "{\"model\":",
    )
    .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["type"], "invalid_request_error");
    // The client's own deadline (Anthropic's SDKs send x-stainless-timeout; Claude Code 600):
    // answered before it, as a timeout_error, never a bare disconnect.
    let late = messages(
        &gateway,
        false,
        &[("x-sim-fault", "hang"), ("x-stainless-timeout", "1")],
    )
    .await;
    assert_eq!(late.status, 504, "{}", late.body);
    assert!(late.elapsed < ms(1000), "{:?}", late.elapsed);
    assert_eq!(late.json()["error"]["type"], "timeout_error");
    assert_eq!(late.json()["error"]["code"], "deadline_exceeded");
    // An Anthropic call to a model only OpenAI-speaking upstreams serve is refused plainly.
    let openai = start(CLAUDE).await;
    let refused = messages(&openai, false, &[]).await;
    assert_eq!(refused.status, 404, "{}", refused.body);
    let text = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        text.contains("does not translate") && text.contains("protocol = \"anthropic\""),
        "{text}"
    );
    assert_eq!(refused.json()["type"], "error", "in the caller's shape");
    // …and an OpenAI call to an Anthropic model the same way round.
    let chat = chat(gateway.addr, "claude", false, &[]).await;
    assert_eq!(chat.status, 404);
    assert!(
        chat.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("only by upstreams that speak anthropic")
    );
}

#[tokio::test]
async fn client_keys_count_tokens_and_models_take_anthropics_forms() {
    let gateway = start_anthropic(&format!(
        "[server]\nclient_keys_env = \"HOURGLASS_TEST_CLIENT_KEYS\"\n{CLAUDE}"
    ))
    .await;
    let refused = messages(&gateway, false, &[]).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["error"]["type"], "authentication_error");
    let by_x_api_key = messages(&gateway, false, &[("x-api-key", "ck-second-3c4d")]).await;
    assert_eq!(by_x_api_key.status, 200, "{}", by_x_api_key.body);
    let by_bearer = messages(
        &gateway,
        false,
        &[("authorization", "Bearer ck-first-1a2b")],
    )
    .await;
    assert_eq!(by_bearer.status, 200, "{}", by_bearer.body);

    let count = send(
        gateway.addr,
        "POST",
        "/v1/messages/count_tokens",
        &[VERSION, ("x-api-key", "ck-first-1a2b")],
        json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
    )
    .await;
    assert_eq!(count.status, 200, "{}", count.body);
    assert!(count.json()["input_tokens"].as_u64().unwrap() > 0);

    let models = send(
        gateway.addr,
        "GET",
        "/v1/models",
        &[VERSION, ("x-api-key", "ck-first-1a2b")],
        "",
    )
    .await;
    let list = models.json();
    assert_eq!(list["data"][0]["type"], "model", "{list}");
    assert_eq!(list["data"][0]["id"], "claude");
    assert_eq!(list["has_more"], false);
    assert_eq!(list["first_id"], "claude");
    let openai = send(
        gateway.addr,
        "GET",
        "/v1/models",
        &[("authorization", "Bearer ck-first-1a2b")],
        "",
    )
    .await;
    assert_eq!(
        openai.json(),
        json!({"object": "list", "data": []}),
        "an OpenAI client sees only the models it can call"
    );
}

/// `claude` as above, and `claude-slow`, whose streams get `ping` heartbeats every 300 ms.
const CLAUDE_AND_SLOW: &str = r#"
[models.claude-slow]
targets = ["a:sim-instant", "b:sim-instant"]
timeouts = { first_byte = "5s", first_token = "10s", total = "20s" }
heartbeat = "300ms"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_python_sdk_fails_over_is_told_of_cuts_and_is_kept_alive_through_nginx() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let gateway = start_anthropic(&format!("{CLAUDE}{CLAUDE_AND_SLOW}")).await;
    let nginx = crate::middlebox::nginx_in_front_of(gateway.addr, "1s").await;
    let script = root.join("tests/sdk/python/anthropic_gateway.py");
    let proxied = format!("http://127.0.0.1:{}/v1", nginx.port);
    let args = vec![gateway.base_url(), proxied];
    let stdout = crate::sdk::run_script_with(crate::sdk::python(), script, args).await;
    assert!(stdout.contains("6 passed, 0 failed"), "{stdout}");
    // Each failover call (2 faults × whole and streamed) reached `a` once and `b` once; every
    // other call (tools 2, thinking 2, the cut 1, the slow one 1) reached `a` once: neither the
    // SDK nor the gateway retried anything else.
    assert_eq!(
        (gateway.requests("a"), gateway.requests("b")),
        (4 + 2 + 2 + 1 + 1, 4)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_typescript_sdk_fails_over_and_is_told_of_cuts() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let gateway = start_anthropic(CLAUDE).await;
    let script = root.join("tests/sdk/node/anthropic_gateway.mjs");
    let stdout = crate::sdk::run_script_with("node".into(), script, vec![gateway.base_url()]).await;
    assert!(stdout.contains("4 passed, 0 failed"), "{stdout}");
    // Two failover checks × (whole, streamed): `a` then `b` once each; tools 2 and the cut 1 on
    // `a` alone.
    assert_eq!(
        (gateway.requests("a"), gateway.requests("b")),
        (4 + 2 + 1, 4)
    );
}

/// Claude Code's models, as it names them, on the simulators.
const CLAUDE_CODE: &str = r#"
[models.claude-sonnet-4-5]
targets = ["a:sim-instant", "b:sim-instant"]
timeouts = { first_byte = "1s", first_token = "2s", total = "30s" }
"#;

/// Runs `claude -p PROMPT` (non-interactive, no tools) against `gateway`, with `headers` added to
/// every request it sends; returns its output after checking it succeeded.
async fn claude_code(gateway: &Running, prompt: &str, headers: &str) -> String {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let claude = root.join("tests/claude-code/node_modules/.bin/claude");
    assert!(
        claude.exists(),
        "{} is missing: run `scripts/test` once to install Claude Code",
        claude.display()
    );
    let home = std::env::temp_dir().join(format!(
        "hourglass-claude-home-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&home).unwrap();
    let mut command = std::process::Command::new(claude);
    command
        .args(["-p", prompt, "--model", "claude-sonnet-4-5", "--tools", ""])
        .current_dir(&home)
        .env("HOME", &home)
        .env("ANTHROPIC_BASE_URL", format!("http://{}", gateway.addr))
        .env("ANTHROPIC_API_KEY", "sk-ant-claude-code-test")
        .env("ANTHROPIC_DEFAULT_HAIKU_MODEL", "claude-sonnet-4-5")
        .env("ANTHROPIC_CUSTOM_HEADERS", headers)
        .env("API_TIMEOUT_MS", "600000")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1");
    let stdout = crate::sdk::run_command(command).await;
    let _ = std::fs::remove_dir_all(&home);
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_completes_a_prompt_and_fails_over_from_a_hanging_upstream() {
    let gateway = start_anthropic(CLAUDE_CODE).await;
    let answer = claude_code(&gateway, "Say hello.", "").await;
    let tokens = content::check(answer.trim()).unwrap().tokens;
    assert!(tokens > 0);
    assert_eq!(gateway.requests("b"), 0, "a answered");
    let asked_a = gateway.requests("a");

    let answer = claude_code(&gateway, "Say hello again.", "x-sim-fault: hang;upstream=a").await;
    content::check(answer.trim()).unwrap();
    assert!(gateway.requests("a") > asked_a, "a was tried");
    assert_eq!(
        gateway.requests("b"),
        gateway.requests("a") - asked_a,
        "each call that hung on a was answered by b, once"
    );
}
