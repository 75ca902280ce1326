//! Bodies have OpenAI's shapes, and generated content is intact and verifiable.

use hourglass_sim::content;
use serde_json::json;

use crate::support::*;

#[tokio::test(start_paused = true)]
async fn chat_answer_has_openai_shape_and_intact_content() {
    let server = memory_server();
    let reply = post(
        "/v1/chat/completions",
        chat("gpt-4o-mini", json!({"max_tokens": 12})),
    )
    .to(&server)
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["model"], "gpt-4o-mini");
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    let text = choice["message"]["content"].as_str().unwrap();
    let checked = content::check(text).unwrap();
    let usage = &body["usage"];
    assert_eq!(
        usage["completion_tokens"].as_u64().unwrap(),
        u64::from(checked.tokens)
    );
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    assert!(checked.tokens <= 12);
    let finish = choice["finish_reason"].as_str().unwrap();
    assert!(
        finish == "stop" || (finish == "length" && checked.tokens == 12),
        "{finish}"
    );
}

#[tokio::test(start_paused = true)]
async fn chat_stream_opens_with_a_role_chunk_and_ends_with_usage_then_done() {
    let server = memory_server();
    let body = chat(
        "gpt-4o",
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    );
    let reply = post("/v1/chat/completions", body).to(&server).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    assert!(reply.body_error.is_none());
    let events = reply.events();
    assert_eq!(events.last().unwrap().1, "data: [DONE]");
    let chunks = reply.data();
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"])
    );
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    let finish = &chunks[chunks.len() - 2]["choices"][0];
    assert_eq!(finish["finish_reason"], "stop");
    assert_eq!(finish["delta"], json!({}));
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .all(|c| c["usage"].is_null())
    );
    let text = &streamed_chat_text(&reply, 1)[0];
    let checked = content::check(text).unwrap();
    assert_eq!(
        usage_chunk["usage"]["completion_tokens"].as_u64().unwrap(),
        u64::from(checked.tokens)
    );
    // Every content chunk carries exactly one token.
    assert_eq!(chunks.len(), checked.tokens as usize + 3);
}

#[tokio::test(start_paused = true)]
async fn without_include_usage_no_usage_field_is_sent() {
    let server = memory_server();
    let reply = post(
        "/v1/chat/completions",
        chat("sim-instant", json!({"stream": true})),
    )
    .to(&server)
    .await;
    assert!(reply.data().iter().all(|c| c.get("usage").is_none()));
}

#[tokio::test(start_paused = true)]
async fn tool_calls_stream_as_deltas_that_assemble_into_json_arguments() {
    let server = memory_server();
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let body = chat("sim-instant", json!({"stream": true, "tools": tools}));
    let reply = post("/v1/chat/completions", body.clone()).to(&server).await;
    let chunks = reply.data();
    let mut arguments = String::new();
    let mut name = None;
    for chunk in &chunks {
        if let Some(call) = chunk["choices"][0]["delta"]["tool_calls"].get(0) {
            assert_eq!(call["index"], 0);
            if let Some(n) = call["function"]["name"].as_str() {
                assert!(name.is_none(), "the name comes once, in the first delta");
                name = Some(n.to_owned());
                assert!(call["id"].as_str().unwrap().starts_with("call_"));
                assert_eq!(call["type"], "function");
            }
            arguments.push_str(call["function"]["arguments"].as_str().unwrap());
        }
    }
    assert_eq!(name.as_deref(), Some("get_weather"));
    let arguments: serde_json::Value = serde_json::from_str(&arguments).unwrap();
    content::check(arguments["city"].as_str().unwrap()).unwrap();
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );

    let whole = post("/v1/chat/completions", {
        let mut b = body;
        b["stream"] = json!(false);
        b
    })
    .to(&server)
    .await
    .json();
    let message = &whole["choices"][0]["message"];
    assert!(message["content"].is_null());
    let call = &message["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: serde_json::Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    content::check(arguments["city"].as_str().unwrap()).unwrap();
    assert_eq!(whole["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test(start_paused = true)]
async fn several_choices_interleave_each_intact_with_its_own_tag() {
    let server = memory_server();
    let reply = post(
        "/v1/chat/completions",
        chat("sim-instant", json!({"stream": true, "n": 3})),
    )
    .to(&server)
    .await;
    let texts = streamed_chat_text(&reply, 3);
    let tags: Vec<_> = texts
        .iter()
        .map(|t| content::check(t).unwrap().tag)
        .collect();
    assert!(
        tags[0] != tags[1] && tags[1] != tags[2] && tags[0] != tags[2],
        "{tags:?}"
    );
    let whole = post("/v1/chat/completions", chat("sim-instant", json!({"n": 3})))
        .to(&server)
        .await
        .json();
    assert_eq!(whole["choices"].as_array().unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn same_seed_header_gives_the_same_answer_streamed_or_whole() {
    let server = memory_server();
    let streamed = post(
        "/v1/chat/completions",
        chat("gpt-4o-mini", json!({"stream": true})),
    )
    .header("x-sim-seed", "1234")
    .to(&server)
    .await;
    let whole = post("/v1/chat/completions", chat("gpt-4o-mini", json!({})))
        .header("x-sim-seed", "1234")
        .to(&server)
        .await
        .json();
    assert_eq!(streamed.data()[0]["id"], whole["id"]);
    assert_eq!(
        streamed_chat_text(&streamed, 1)[0],
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    // Without the header, each request (each retry) is a different answer with its own tag.
    let a = post("/v1/chat/completions", chat("gpt-4o-mini", json!({})))
        .to(&server)
        .await
        .json();
    let b = post("/v1/chat/completions", chat("gpt-4o-mini", json!({})))
        .to(&server)
        .await
        .json();
    assert_ne!(
        a["choices"][0]["message"]["content"],
        b["choices"][0]["message"]["content"]
    );
}

#[tokio::test(start_paused = true)]
async fn completions_stream_and_whole() {
    let server = memory_server();
    let body = json!({"model": "sim-instant", "prompt": "Say hi", "stream": true, "stream_options": {"include_usage": true}});
    let reply = post("/v1/completions", body).to(&server).await;
    let chunks = reply.data();
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["text"].as_str())
        .collect();
    assert_eq!(content::check(&text).unwrap().tokens, 16);
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 16);
    assert_eq!(reply.events().last().unwrap().1, "data: [DONE]");

    let whole = post(
        "/v1/completions",
        json!({"model": "sim-instant", "prompt": "x"}),
    )
    .to(&server)
    .await
    .json();
    assert_eq!(whole["object"], "text_completion");
    content::check(whole["choices"][0]["text"].as_str().unwrap()).unwrap();
}

#[tokio::test(start_paused = true)]
async fn responses_stream_typed_events_in_order_and_whole_body() {
    let server = memory_server();
    let reply = post(
        "/v1/responses",
        json!({"model": "sim-instant", "input": "hi", "stream": true}),
    )
    .to(&server)
    .await;
    let events = reply.events();
    let kinds: Vec<String> = events
        .iter()
        .map(|(_, e)| {
            e.lines()
                .next()
                .unwrap()
                .strip_prefix("event: ")
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        &kinds[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "response.output_text.delta")
            .count(),
        16
    );
    assert_eq!(
        &kinds[kinds.len() - 4..],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let data = reply.data();
    for (i, event) in data.iter().enumerate() {
        assert_eq!(
            event["sequence_number"], i,
            "sequence numbers count every event"
        );
        assert_eq!(event["type"], kinds[i]);
    }
    let deltas: String = data
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    let completed = &data.last().unwrap()["response"];
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["output"][0]["content"][0]["text"], deltas);
    assert_eq!(completed["usage"]["output_tokens"], 16);

    let whole = post(
        "/v1/responses",
        json!({"model": "sim-instant", "input": "hi"}),
    )
    .to(&server)
    .await
    .json();
    assert_eq!(whole["object"], "response");
    assert!(whole["id"].as_str().unwrap().starts_with("resp_"));
    content::check(whole["output"][0]["content"][0]["text"].as_str().unwrap()).unwrap();
}

#[tokio::test(start_paused = true)]
async fn embeddings_as_floats_and_as_base64() {
    let server = memory_server();
    let floats = post(
        "/v1/embeddings",
        json!({"model": "text-embedding-3-small", "input": ["a", "b"]}),
    )
    .to(&server)
    .await
    .json();
    assert_eq!(floats["object"], "list");
    assert_eq!(floats["data"].as_array().unwrap().len(), 2);
    let vector = floats["data"][0]["embedding"].as_array().unwrap();
    assert_eq!(vector.len(), 1536);
    assert_eq!(floats["data"][1]["index"], 1);

    let encoded = post("/v1/embeddings", json!({"model": "text-embedding-3-small", "input": "a", "encoding_format": "base64", "dimensions": 4}))
        .to(&server)
        .await
        .json();
    let text = encoded["data"][0]["embedding"].as_str().unwrap();
    assert_eq!(
        text.len(),
        24,
        "4 float32 values are 16 bytes, 24 base64 characters"
    );
    let same = post(
        "/v1/embeddings",
        json!({"model": "text-embedding-3-small", "input": "a", "dimensions": 4}),
    )
    .to(&server)
    .await
    .json();
    assert_eq!(same["data"][0]["embedding"].as_array().unwrap().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn images_as_base64_or_as_urls_the_simulator_serves() {
    let server = memory_server();
    let b64 = post(
        "/v1/images/generations",
        json!({"model": "gpt-image-1", "prompt": "a cat", "response_format": "b64_json", "n": 2}),
    )
    .to(&server)
    .await;
    assert!(
        b64.head_after >= std::time::Duration::from_secs(5),
        "image models take seconds: {:?}",
        b64.head_after
    );
    let body = b64.json();
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert!(
        body["data"][0]["b64_json"]
            .as_str()
            .unwrap()
            .starts_with("iVBORw0KGgo"),
        "a PNG"
    );

    let url = post(
        "/v1/images/generations",
        json!({"model": "dall-e-3", "prompt": "a cat"}),
    )
    .to(&server)
    .await
    .json();
    let url = url["data"][0]["url"].as_str().unwrap();
    assert!(url.ends_with("/sim/image.png"), "{url}");
    let png = get("/sim/image.png").to(&server).await;
    assert_eq!(png.header("content-type"), Some("image/png"));
    assert!(png.body().starts_with(b"\x89PNG"));
}

#[tokio::test(start_paused = true)]
async fn models_and_health() {
    let server = memory_server();
    let models = get("/v1/models").to(&server).await.json();
    let ids: Vec<_> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    for expected in [
        "gpt-4o-mini",
        "o1-mini",
        "gpt-image-1",
        "text-embedding-3-small",
        "sim-instant",
    ] {
        assert!(ids.iter().any(|id| id == expected), "{expected} in {ids:?}");
    }
    assert_eq!(
        get("/health").to(&server).await.json(),
        json!({"status": "ok"})
    );
}

#[tokio::test(start_paused = true)]
async fn bad_requests_get_openai_errors_that_say_what_was_wrong() {
    let server = memory_server();
    let not_json = post("/v1/chat/completions", json!(null));
    let not_json = crate::support::Call {
        body: "{\"model\":".into(),
        ..not_json
    }
    .to(&server)
    .await;
    assert_eq!(not_json.status, 400);
    assert!(
        not_json.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );

    let wrong_type = post(
        "/v1/chat/completions",
        chat("gpt-4o", json!({"stream": "yes"})),
    )
    .to(&server)
    .await;
    assert_eq!(wrong_type.status, 400);
    assert_eq!(wrong_type.json()["error"]["param"], "stream");

    let unknown = post("/v1/chat/completions", chat("gpt-5-ultra", json!({})))
        .to(&server)
        .await;
    assert_eq!(unknown.status, 404);
    let error = &unknown.json()["error"];
    assert_eq!(error["code"], "model_not_found");
    assert!(
        error["message"].as_str().unwrap().contains("gpt-4o-mini"),
        "lists what is served"
    );

    let wrong_endpoint = post("/v1/embeddings", json!({"model": "gpt-4o", "input": "x"}))
        .to(&server)
        .await;
    assert_eq!(wrong_endpoint.status, 400);
    assert_eq!(
        wrong_endpoint.json()["error"]["code"],
        "model_not_supported"
    );

    let no_route = post("/v1/nothing", json!({})).to(&server).await;
    assert_eq!(no_route.status, 404);
    assert_eq!(
        no_route.json()["error"]["message"],
        "Invalid URL (POST /v1/nothing)"
    );

    let wrong_method = get("/v1/chat/completions").to(&server).await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("POST"));

    let bad_seed = post("/v1/chat/completions", chat("gpt-4o", json!({})))
        .header("x-sim-seed", "-1")
        .to(&server)
        .await;
    assert_eq!(bad_seed.status, 400);
    assert_eq!(bad_seed.json()["error"]["param"], "x-sim-seed");
}
