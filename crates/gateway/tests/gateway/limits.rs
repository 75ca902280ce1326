//! Client limits on one gateway, counted in memory: a key past its requests per minute, its
//! tokens per minute (its answers' usage, whole or streamed) or its calls at once gets 429
//! `client_rate_limited` with `Retry-After` and `x-hourglass-limit`, in the caller's protocol's
//! shape; other keys are not held back; and every word of it is in the docs.

use std::time::Duration;

use crate::support::*;

fn limits(table: &str) -> String {
    format!("{MODEL_M_ON_A_AND_B}\n[client_limits]\n{table}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_past_its_requests_per_minute_gets_429_and_others_do_not() {
    let gateway = start(&limits("requests_per_minute = 3")).await;
    let one = [("authorization", "Bearer client-one")];
    for _ in 0..3 {
        assert_eq!(chat(gateway.addr, "m", false, &one).await.status, 200);
    }
    let refused = chat(gateway.addr, "m", false, &one).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.json()["error"]["code"], "client_rate_limited");
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("client_limits.requests_per_minute = 3"),
        "{}",
        refused.body
    );
    assert_eq!(
        refused.header("x-hourglass-limit"),
        Some("requests_per_minute")
    );
    let after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&after), "{after}");
    assert_eq!(refused.header("x-should-retry"), Some("false"));
    let other = [("authorization", "Bearer client-two")];
    assert_eq!(chat(gateway.addr, "m", false, &other).await.status, 200);
    let metrics = send(gateway.addr, "GET", "/metrics", &[], "").await.body;
    assert!(
        metrics.contains("hourglass_client_limited_total{limit=\"requests_per_minute\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("hourglass_redis_up"),
        "no Redis, no series"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_counted_from_the_usage_of_whole_and_streamed_answers() {
    for stream in [false, true] {
        let gateway = start(&limits("tokens_per_minute = 5")).await;
        let key = [("authorization", "Bearer client-one")];
        let mut body = chat_body("m", stream);
        if stream {
            body = body.replace(
                r#""stream":true"#,
                r#""stream":true,"stream_options":{"include_usage":true}"#,
            );
        }
        let first = send(
            gateway.addr,
            "POST",
            "/v1/chat/completions",
            &key,
            body.clone(),
        )
        .await;
        assert_eq!(first.status, 200);
        assert!(first.body.contains("total_tokens"), "{}", first.body);
        let refused = send(
            gateway.addr,
            "POST",
            "/v1/chat/completions",
            &key,
            body.clone(),
        )
        .await;
        assert_eq!(refused.status, 429, "stream {stream}: {}", refused.body);
        assert_eq!(
            refused.header("x-hourglass-limit"),
            Some("tokens_per_minute")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_at_its_calls_at_once_is_refused_until_one_ends() {
    let gateway = start(&limits("concurrent = 1")).await;
    let key = [("authorization", "Bearer client-one")];
    let addr = gateway.addr;
    let slow = tokio::spawn(async move {
        let headers = [
            ("authorization", "Bearer client-one"),
            ("x-sim-fault", "slow;tokens_per_s=20"),
        ];
        chat(addr, "m", true, &headers).await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let refused = chat(addr, "m", false, &key).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.header("x-hourglass-limit"), Some("concurrent"));
    assert_eq!(slow.await.unwrap().status, 200);
    assert_eq!(
        chat(addr, "m", false, &key).await.status,
        200,
        "the stream ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limits_and_their_words_are_documented() {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/cluster.md"
    ))
    .unwrap();
    let config =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/config.md"))
            .unwrap();
    for word in hourglass_cluster::limits::LIMITS {
        assert!(docs.contains(&format!("`{word}`")), "{word} in cluster.md");
        assert!(config.contains(&format!("`{word}`")), "{word} in config.md");
    }
    for word in ["x-hourglass-limit", "client_rate_limited", "Retry-After"] {
        assert!(docs.contains(word), "{word} in cluster.md");
    }
    let metrics = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/metrics.md"
    ))
    .unwrap();
    for series in [
        "hourglass_client_limited_total",
        "hourglass_cooldowns_active",
        "hourglass_redis_up",
        "hourglass_cooldowns_shared_total",
        "hourglass_client_limit_sync_failures_total",
    ] {
        assert!(
            metrics.contains(&format!("`{series}`")),
            "{series} in metrics.md"
        );
    }
}
