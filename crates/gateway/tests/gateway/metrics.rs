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
    // Fifteen minutes in ten-second steps: the four attempts (one failed at first_byte) sit in
    // the last step or two.
    let series = &a["series"];
    assert_eq!(series["step_s"], 10);
    let attempts: Vec<u64> = series["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    assert_eq!(attempts.len(), 90);
    assert_eq!(attempts.iter().sum::<u64>(), 4, "{series}");
    assert_eq!(
        series["failures"]["first_byte"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap())
            .sum::<u64>(),
        1,
        "{series}"
    );
    assert!(
        series["first_token_p99_ms"][89].as_f64().is_some()
            || series["first_token_p99_ms"][88].as_f64().is_some()
    );
    // Every field of a target and an upstream is documented.
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/metrics.md"
    ))
    .unwrap();
    let upstream = &status["upstreams"][0];
    for field in a
        .as_object()
        .unwrap()
        .keys()
        .chain(series.as_object().unwrap().keys())
        .chain(upstream.as_object().unwrap().keys())
    {
        assert!(
            docs.contains(&format!("`{field}`")),
            "/status field `{field}` is not in docs/metrics.md"
        );
    }
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

/// The metric names a deploy file uses (`hourglass_…`, histogram suffixes stripped).
fn names_in(text: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("hourglass_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        if !names.iter().any(|n| n == base) {
            names.push(base.to_owned());
        }
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn the_deploy_files_are_valid_use_real_metrics_and_prometheus_scrapes_the_gateway() {
    let gateway = start("[models.m]\ntargets = [\"a:gpt-4o-mini\"]\n").await;
    for _ in 0..3 {
        assert_eq!(chat(gateway.addr, "m", true, &[]).await.status, 200);
    }
    let exposed = send(gateway.addr, "GET", "/metrics", &[], "").await.body;
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy");
    for file in ["alerts.yml", "grafana/hourglass.json"] {
        let text = std::fs::read_to_string(format!("{deploy}/{file}")).unwrap();
        let names = names_in(&text);
        assert!(names.len() >= 5, "{file}: {names:?}");
        for name in names {
            assert!(
                exposed.contains(&format!("# TYPE {name} ")),
                "{file} uses {name}, which /metrics does not expose"
            );
        }
    }
    serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(format!("{deploy}/grafana/hourglass.json")).unwrap(),
    )
    .expect("the Grafana dashboard is JSON");
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["check", "config", "prometheus.yml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(&args)
            .current_dir(deploy)
            .output()
            .expect("promtool is installed");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // A real Prometheus server scrapes the gateway every second.
    let dir = std::env::temp_dir().join(format!("hourglass-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: hourglass\n    static_configs:\n      - targets: [\"{}\"]\n",
            gateway.addr
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut prometheus = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus is installed (Debian package `prometheus`)");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut found = None;
    for _ in 0..60 {
        tokio::time::sleep(ms(500)).await;
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            continue;
        }
        let reply = send(
            addr,
            "GET",
            "/api/v1/query?query=hourglass_calls_total%7Bmodel%3D%22m%22%2Coutcome%3D%22ok%22%7D",
            &[],
            "",
        )
        .await;
        let json = reply.json();
        if let Some(value) = json["data"]["result"][0]["value"][1].as_str() {
            found = Some(value.to_owned());
            break;
        }
    }
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        found.as_deref(),
        Some("3"),
        "Prometheus scraped hourglass_calls_total"
    );
}

#[tokio::test]
async fn a_client_that_leaves_before_its_answer_is_counted() {
    let gateway = start("[models.m]\ntargets = [\"a:gpt-4o-mini\"]\n").await;
    let addr = gateway.addr;
    let waiting = tokio::spawn(async move {
        chat(addr, "m", false, &[("x-sim-fault", "hang")]).await;
    });
    tokio::time::sleep(ms(300)).await;
    waiting.abort(); // the client goes away: its connection closes
    let mut count = 0.0;
    for _ in 0..20 {
        tokio::time::sleep(ms(50)).await;
        let text = send(addr, "GET", "/metrics", &[], "").await.body;
        count = value(&text, "hourglass_client_disconnects_total");
        if count > 0.0 {
            break;
        }
    }
    assert_eq!(count, 1.0);
    // ...and its call ends then, as `client_cancel`, not never.
    let text = send(addr, "GET", "/metrics", &[], "").await.body;
    assert_eq!(
        value(
            &text,
            "hourglass_calls_total{model=\"m\",outcome=\"client_cancel\"}"
        ),
        1.0
    );
}

/// Found by a real load run: a stream cut after its first tokens was counted `ok` (the call was
/// told at its commit point), was missing from `/status`, and its error event had no trail.
#[tokio::test]
async fn a_stream_that_fails_after_its_first_token_is_counted_and_listed_as_that_failure() {
    let gateway = start("[models.m]\ntargets = [\"a:gpt-4o-mini\"]\n").await;
    let addr = gateway.addr;
    let cut = chat(addr, "m", true, &[("x-sim-fault", "cut;after_chunks=3")]).await;
    assert_eq!(cut.status, 200);
    let event = cut
        .body
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let error: serde_json::Value = serde_json::from_str(event).unwrap();
    assert_eq!(error["error"]["code"], "upstream_cut");
    let trail = error["error"]["hourglass"]["attempts"].as_array().unwrap();
    assert_eq!(trail.len(), 1, "the error event carries the trail");
    assert_eq!(trail[0]["upstream"], "a");

    let text = send(addr, "GET", "/metrics", &[], "").await.body;
    assert_eq!(
        value(
            &text,
            "hourglass_calls_total{model=\"m\",outcome=\"upstream_cut\"}"
        ),
        1.0
    );
    assert!(
        !text.contains("hourglass_calls_total{model=\"m\",outcome=\"ok\"}"),
        "counted ok as well:\n{text}"
    );
    let status = send(addr, "GET", "/status", &[], "").await.json();
    let failures = status["recent_failures"].as_array().unwrap();
    assert!(
        failures
            .iter()
            .any(|f| f["code"] == "upstream_cut" && f["phase"] == "body"),
        "{failures:?}"
    );
}

#[tokio::test]
async fn client_keys_guard_the_api_and_are_not_sent_upstream() {
    let gateway = start(
        "[server]\nclient_keys_env = \"HOURGLASS_TEST_CLIENT_KEYS\"\n\
         [models.m]\ntargets = [\"a:gpt-4o-mini\"]\n",
    )
    .await;
    let addr = gateway.addr;
    let refused = chat(addr, "m", false, &[]).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["error"]["code"], "invalid_api_key");
    let wrong = chat(
        addr,
        "m",
        false,
        &[("authorization", "Bearer ck-first-1a2")],
    )
    .await;
    assert_eq!(wrong.status, 401);
    for key in ["ck-first-1a2b", "ck-second-3c4d"] {
        let bearer = format!("Bearer {key}");
        let ok = chat(addr, "m", false, &[("authorization", &bearer)]).await;
        assert_eq!(ok.status, 200, "{key}: {}", ok.body);
        assert!(!ok.body.contains(key));
    }
    assert_eq!(
        gateway.requests("a"),
        2,
        "refused calls never reached the upstream"
    );
    // The gateway's own health endpoint stays open; its admin endpoints need a client key when
    // no admin key is configured.
    assert_eq!(send(addr, "GET", "/health", &[], "").await.status, 200);
    assert_eq!(send(addr, "GET", "/status", &[], "").await.status, 401);
    let bearer = "Bearer ck-second-3c4d";
    let status = send(addr, "GET", "/status", &[("authorization", bearer)], "").await;
    assert_eq!(status.status, 200);
    // The configured models are the gateway's own answer, and an API answer: a key is needed
    // (found by a real client: it answered without one, as no other /v1 path does).
    let models = send(addr, "GET", "/v1/models", &[], "").await;
    assert_eq!(models.status, 401, "{}", models.body);
    assert_eq!(models.json()["error"]["code"], "invalid_api_key");
    let models = send(addr, "GET", "/v1/models", &[("authorization", bearer)], "").await;
    assert_eq!(models.status, 200);
    assert_eq!(models.json()["data"][0]["id"], "m");
}
