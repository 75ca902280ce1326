//! curl, the client every runbook starts with, against the gateway: streams arrive whole with
//! `-N`, failures exit 22 under `--fail-with-body` with the error body kept, the gateway answers
//! a declared timeout before curl's own `--max-time` would fire (exit 22, not 28), and a stream
//! broken after its first tokens ends with an error event, never with `[DONE]`.

use std::process::{Command, Output};

use crate::support::*;

/// Runs curl with `args` against `path` on the gateway, posting a chat body.
async fn curl(gateway: &Running, stream: bool, args: &[&str]) -> (Output, String) {
    let url = format!("{}/chat/completions", gateway.base_url());
    let body = chat_body("m", stream);
    let mut command = Command::new("curl");
    command
        .args([
            "-sS",
            "-N",
            "--fail-with-body",
            "-H",
            "content-type: application/json",
        ])
        .args(["-d", &body])
        .args(args)
        .arg(url);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("curl runs (Debian's curl package)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    (output, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_streams_fails_loudly_and_hears_the_deadline_first() {
    let gateway = start(MODEL_M_ON_A_AND_B).await;

    let (out, body) = curl(&gateway, true, &["-H", "x-sim-fault: hang;upstream=a"]).await;
    assert_eq!(out.status.code(), Some(0), "{body}");
    assert_eq!(stream_text(&body).split_whitespace().count(), 16);
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");

    let (out, body) = curl(&gateway, false, &["-H", "x-sim-fault: status;code=503"]).await;
    assert_eq!(out.status.code(), Some(22), "--fail-with-body: {body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "upstream_status");
    assert_eq!(
        error["error"]["hourglass"]["attempts"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // curl's own --max-time 3 would exit 28 with nothing; the gateway, told 1s, answers first.
    let started = tokio::time::Instant::now();
    let (out, body) = curl(
        &gateway,
        false,
        &[
            "--max-time",
            "3",
            "-H",
            "x-hourglass-timeout: 1s",
            "-H",
            "x-sim-fault: hang",
        ],
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(22), "{body}");
    assert!(
        body.contains("first_byte_timeout") || body.contains("deadline_exceeded"),
        "{body}"
    );
    assert!(elapsed < std::time::Duration::from_secs(2), "{elapsed:?}");

    // Tokens 50 ms apart: the first reaches curl before the failure, so it comes in band.
    for (fault, expected) in [
        ("cut;after_chunks=3", "upstream_cut"),
        ("interrupt;after_chunks=3", "upstream_truncated"),
    ] {
        let header = format!("x-sim-fault: slow;tokens_per_s=20, {fault}");
        let (out, body) = curl(&gateway, true, &["-H", &header]).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "the 200 stream ends in band: {body}"
        );
        assert!(
            !body.contains("data: [DONE]"),
            "{fault}: a clean end after a failure: {body}"
        );
        let last = body.trim_end().rsplit("\n\n").next().unwrap();
        let event: serde_json::Value =
            serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(event["error"]["code"], expected, "{fault}");
        assert_eq!(stream_text(&body).split_whitespace().count(), 3, "{fault}");
    }
}
