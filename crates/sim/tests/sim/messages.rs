//! The simulator speaks Anthropic's Messages API: a whole Message, a stream from `message_start`
//! to `message_stop` with `ping`s, tool use as `tool_use` blocks and `input_json_delta`s, errors
//! in Anthropic's shape (529 `overloaded_error`, a missing `max_tokens`), a mid-stream `error`
//! event for an interrupted stream, and the same verifiable content as every other route.

use hourglass_sim::content;
use serde_json::json;

use crate::support::*;

fn messages(extra: serde_json::Value) -> serde_json::Value {
    let mut body = json!({
        "model": "gpt-4o-mini",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
    });
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    body
}

/// The event names of a stream, in order (pings included).
fn names(reply: &Reply) -> Vec<String> {
    reply
        .events()
        .iter()
        .filter_map(|(_, e)| {
            e.lines()
                .find_map(|l| l.strip_prefix("event: "))
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_whole_message_has_anthropics_shape_and_intact_content() {
    let server = memory_server();
    let reply = post("/v1/messages", messages(json!({}))).to(&server).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert!(body["id"].as_str().unwrap().starts_with("msg_sim"));
    assert_eq!(body["content"][0]["type"], "text");
    let checked = content::check(body["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(
        body["usage"]["output_tokens"].as_u64().unwrap(),
        u64::from(checked.tokens)
    );
    assert!(body["usage"]["input_tokens"].as_u64().unwrap() > 0);
    let stop = body["stop_reason"].as_str().unwrap();
    assert!(stop == "end_turn" || stop == "max_tokens", "{stop}");
}

#[tokio::test(start_paused = true)]
async fn a_stream_runs_from_message_start_to_message_stop_and_its_deltas_make_the_text() {
    let server = memory_server();
    let reply = post("/v1/messages", messages(json!({"stream": true})))
        .to(&server)
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    let seen = names(&reply);
    assert_eq!(
        seen[..3],
        ["message_start", "content_block_start", "ping"],
        "{seen:?}"
    );
    assert_eq!(
        seen[seen.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let data = reply.data();
    for event in &data {
        assert!(event["type"].is_string(), "{event}");
    }
    let text: String = data
        .iter()
        .filter(|e| e["type"] == "content_block_delta")
        .map(|e| {
            assert_eq!(e["delta"]["type"], "text_delta");
            e["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    let checked = content::check(&text).unwrap();
    let delta = data.iter().find(|e| e["type"] == "message_delta").unwrap();
    assert_eq!(
        delta["usage"]["output_tokens"].as_u64().unwrap(),
        u64::from(checked.tokens)
    );
    assert_eq!(data[0]["message"]["content"], json!([]));
    assert_eq!(data[0]["message"]["stop_reason"], json!(null));
}

#[tokio::test(start_paused = true)]
async fn tools_are_called_as_tool_use_blocks() {
    let server = memory_server();
    let tools = json!([{"name": "get_weather", "description": "d",
                        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let whole = post("/v1/messages", messages(json!({"tools": tools})))
        .to(&server)
        .await
        .json();
    assert_eq!(whole["stop_reason"], "tool_use");
    let block = &whole["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "get_weather");
    assert!(block["id"].as_str().unwrap().starts_with("toolu_sim"));
    assert!(block["input"]["city"].is_string(), "{block}");

    let streamed = post(
        "/v1/messages",
        messages(json!({"tools": tools, "stream": true})),
    )
    .to(&server)
    .await;
    let data = streamed.data();
    assert_eq!(data[1]["content_block"]["type"], "tool_use");
    let json: String = data
        .iter()
        .filter(|e| e["type"] == "content_block_delta")
        .map(|e| e["delta"]["partial_json"].as_str().unwrap().to_owned())
        .collect();
    let input: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(input["city"].is_string());
    let none = json!({"type": "none"});
    let plain = post(
        "/v1/messages",
        messages(json!({"tools": tools, "tool_choice": none})),
    )
    .to(&server)
    .await
    .json();
    assert_eq!(plain["content"][0]["type"], "text");
}

#[tokio::test(start_paused = true)]
async fn errors_and_faults_take_anthropics_shape() {
    let server = memory_server();
    let overloaded = post("/v1/messages", messages(json!({})))
        .fault("status;code=529")
        .to(&server)
        .await;
    assert_eq!(overloaded.status.as_u16(), 529);
    let body = overloaded.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "overloaded_error");
    let limited = post("/v1/messages", messages(json!({})))
        .fault("rate_limit;retry_after=3")
        .to(&server)
        .await;
    assert_eq!(limited.json()["error"]["type"], "rate_limit_error");
    assert_eq!(limited.header("retry-after"), Some("3"));
    let no_max = json!({"model": "gpt-4o-mini", "messages": []});
    let refused = post("/v1/messages", no_max).to(&server).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["error"]["type"], "invalid_request_error");
    assert!(refused.text().contains("max_tokens"), "{}", refused.text());
    // The OpenAI routes keep OpenAI's shape.
    let openai = post("/v1/chat/completions", chat("gpt-4o-mini", json!({})))
        .fault("status;code=529")
        .to(&server)
        .await;
    assert!(openai.json()["error"]["message"].is_string());
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_stream_ends_with_an_error_event_and_a_slow_first_token_with_pings() {
    let server = memory_server();
    let cut = post("/v1/messages", messages(json!({"stream": true})))
        .fault("interrupt;after_chunks=2")
        .to(&server)
        .await;
    let seen = names(&cut);
    assert_eq!(seen.last().map(String::as_str), Some("error"), "{seen:?}");
    assert!(!seen.contains(&"message_stop".to_owned()));
    let last = cut.data().pop().unwrap();
    assert_eq!(last["error"]["type"], "overloaded_error");

    let slow = post("/v1/messages", messages(json!({"stream": true})))
        .fault("first_token;after=10s;keepalive=2s")
        .to(&server)
        .await;
    let pings = names(&slow).iter().filter(|n| *n == "ping").count();
    assert!(pings >= 4, "{:?}", names(&slow));
    assert!(!slow.text().contains(": keep-alive"));
}

#[tokio::test(start_paused = true)]
async fn extended_thinking_opens_with_a_signed_thinking_block_in_streams_and_whole_answers() {
    let server = memory_server();
    let thinking = json!({"thinking": {"type": "enabled", "budget_tokens": 1024}});
    let whole = post("/v1/messages", messages(thinking.clone()))
        .to(&server)
        .await
        .json();
    assert_eq!(whole["content"][0]["type"], "thinking");
    assert_eq!(whole["content"][1]["type"], "text");
    let checked = content::check(whole["content"][1]["text"].as_str().unwrap()).unwrap();
    let thought = whole["content"][0]["thinking"].as_str().unwrap();
    assert!(thought.contains(&checked.tag), "{thought}");
    assert!(
        !whole["content"][0]["signature"]
            .as_str()
            .unwrap()
            .is_empty()
    );

    let mut streamed = thinking;
    streamed["stream"] = json!(true);
    let data = post("/v1/messages", messages(streamed))
        .to(&server)
        .await
        .data();
    let start = data
        .iter()
        .find(|e| e["type"] == "content_block_start")
        .unwrap();
    assert_eq!(
        start["content_block"],
        json!({"type": "thinking", "thinking": "", "signature": ""})
    );
    let deltas: Vec<&serde_json::Value> = data
        .iter()
        .filter(|e| e["type"] == "content_block_delta")
        .collect();
    assert_eq!(deltas[0]["delta"]["type"], "thinking_delta");
    assert_eq!(deltas[1]["delta"]["type"], "signature_delta");
    assert!(!deltas[1]["delta"]["signature"].as_str().unwrap().is_empty());
    let text: String = deltas[2..]
        .iter()
        .map(|e| {
            assert_eq!(e["index"], 1, "the answer is the second block");
            e["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    let checked = content::check(&text).unwrap();
    assert!(
        deltas[0]["delta"]["thinking"]
            .as_str()
            .unwrap()
            .contains(&checked.tag)
    );
    let stops: Vec<&serde_json::Value> = data
        .iter()
        .filter(|e| e["type"] == "content_block_stop")
        .collect();
    assert_eq!(stops.len(), 2);
    assert_eq!(stops[1]["index"], 1);
}

#[tokio::test(start_paused = true)]
async fn count_tokens_counts_the_prompt_as_a_message_would() {
    let server = memory_server();
    let body =
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]});
    let count = post("/v1/messages/count_tokens", body.clone())
        .to(&server)
        .await;
    assert_eq!(count.status, 200, "{}", count.text());
    let mut whole = body;
    whole["max_tokens"] = json!(8);
    let message = post("/v1/messages", whole).to(&server).await.json();
    assert_eq!(
        count.json()["input_tokens"],
        message["usage"]["input_tokens"]
    );
    let bad = post("/v1/messages/count_tokens", json!({"model": "gpt-4o-mini"}))
        .to(&server)
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["type"], "error");
}
