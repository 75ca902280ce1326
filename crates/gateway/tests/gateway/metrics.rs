//! `GET /metrics` and `GET /status`: the calls a client made, counted by model, upstream, outcome
//! and phase, in a text the real `promtool check metrics` accepts; recent windows and failures;
//! the admin key guarding both and never showing in them.

use crate::support::*;

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_count_calls_attempts_phases_and_state() {
    let gateway = start("[models.m]\ntargets = [\"a:gpt-4o-mini\", \"b:gpt-4o-mini\"]\n").await;
    let addr = gateway.addr;
    for _ in 0..3 {
        assert_eq!(chat(addr, "m", false, &[]).await.status, 200);
    }
    for _ in 0..2 {
        let reply = chat(addr, "m", true, &[]).await;
        assert!(reply.body.ends_with("data: [DONE]\n\n"));
    }
    let failover = chat(
        addr,
        "m",
        false,
        &[("x-sim-fault", "status;code=503;upstream=a")],
    )
    .await;
    assert_eq!(failover.header("x-hourglass-upstream"), Some("b"));
    assert_eq!(
        chat(addr, "nobody-serves-this", false, &[]).await.status,
        404
    );

    let reply = send(addr, "GET", "/metrics", &[], "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = reply.body;
    assert_eq!(
        value(&text, "hourglass_calls_total{model=\"m\",outcome=\"ok\"}"),
        6.0
    );
    assert_eq!(
        value(
            &text,
            "hourglass_calls_total{model=\"other\",outcome=\"upstream_status\"}"
        ),
        1.0,
        "a model that never answered is not a label"
    );
    assert!(!text.contains("nobody-serves-this"));
    assert_eq!(
        value(
            &text,
            "hourglass_attempts_total{model=\"m\",upstream=\"a\",outcome=\"upstream_status\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "hourglass_attempts_total{model=\"m\",upstream=\"a\",outcome=\"ok\"}"
        ),
        5.0
    );
    assert_eq!(value(&text, "hourglass_failovers_total{model=\"m\"}"), 1.0);
    assert_eq!(
        value(
            &text,
            "hourglass_streams_total{model=\"m\",upstream=\"a\",outcome=\"ok\"}"
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            "hourglass_phase_duration_seconds_count{model=\"m\",upstream=\"a\",phase=\"first_token\"}"
        ),
        5.0,
        "streamed and assembled calls both have a first token"
    );
    assert_eq!(
        value(
            &text,
            "hourglass_phase_duration_seconds_bucket{model=\"m\",upstream=\"a\",phase=\"first_token\",le=\"+Inf\"}"
        ),
        5.0
    );
    assert_eq!(
        value(
            &text,
            "hourglass_breaker_state{upstream=\"a\",model=\"gpt-4o-mini\"}"
        ),
        0.0
    );
    assert_eq!(
        value(
            &text,
            "hourglass_calls_in_flight{upstream=\"a\",model=\"gpt-4o-mini\"}"
        ),
        0.0
    );
    assert!(value(&text, "hourglass_retry_budget_available") > 0.0);

    // The real promtool accepts the exposition (scripts/test installs Debian's prometheus).
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian package `prometheus`; scripts/test installs it)");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn status_shows_recent_windows_and_failures_behind_the_admin_key() {
    let gateway = start(
        "[server]\nadmin_key_env = \"HOURGLASS_TEST_ADMIN_KEY\"\n\
         [models.m]\ntargets = [\"a:gpt-4o-mini\", \"b:gpt-4o-mini\"]\n",
    )
    .await;
    let addr = gateway.addr;
    for _ in 0..3 {
        assert_eq!(chat(addr, "m", true, &[]).await.status, 200);
    }
    let failover = chat(
        addr,
        "m",
        false,
        &[("x-sim-fault", "status;code=503;upstream=a")],
    )
    .await;
    assert_eq!(failover.status, 200);

    for path in ["/status", "/metrics"] {
        let refused = send(addr, "GET", path, &[], "").await;
        assert_eq!(refused.status, 401, "{path}");
        assert!(refused.body.contains("admin_key_env"), "{}", refused.body);
        let wrong = send(addr, "GET", path, &[("authorization", "Bearer nope")], "").await;
        assert_eq!(wrong.status, 401);
    }
    let bearer = format!("Bearer {ADMIN_KEY}");
    let reply = send(addr, "GET", "/status", &[("authorization", &bearer)], "").await;
    assert_eq!(reply.status, 200);
    let status = reply.json();
    let targets = status["targets"].as_array().unwrap();
    let a = targets
        .iter()
        .find(|t| t["model"] == "m" && t["upstream"] == "a")
        .unwrap_or_else(|| panic!("{status:#}"));
    let minute = &a["windows"]["1m"];
    assert_eq!(minute["attempts"], 4);
    assert_eq!(minute["success_rate"], 0.75);
    assert_eq!(minute["timeout_rate"], 0.0);
    assert!(minute["first_token_ms"]["p50"].as_f64().unwrap() > 0.0);
    assert_eq!(a["breaker"], "closed");
    assert_eq!(a["upstream_model"], "gpt-4o-mini");
    let failure = &status["recent_failures"][0];
    assert_eq!(
        (failure["upstream"].as_str(), failure["code"].as_str()),
        (Some("a"), Some("upstream_status"))
    );
    assert!(
        failure["diagnosis"]
            .as_str()
            .unwrap()
            .contains("error status")
    );
    assert!(
        status["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["up"] == true)
    );

    let metrics = send(addr, "GET", "/metrics", &[("authorization", &bearer)], "").await;
    assert_eq!(metrics.status, 200);
    for body in [&reply.body, &metrics.body] {
        assert!(!body.contains(ADMIN_KEY), "the admin key leaked");
    }
}
