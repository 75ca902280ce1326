//! Unmodified clients pointed at the gateway — the official Python and Node SDKs and LangChain —
//! over every endpoint: completions and streams work, failures raise the SDK's matching error
//! class, and the requests the simulators saw are counted, so the SDKs' own retries cannot hide.

use std::path::PathBuf;
use std::process::Command;

use crate::support::*;

/// Runs an SDK script against `gateway`; returns its output after checking it succeeded.
async fn run_script(program: PathBuf, script: PathBuf, gateway: &Running) -> String {
    run_script_with(program, script, vec![gateway.base_url()]).await
}

/// Runs an SDK script with `args`; returns its output after checking it succeeded.
pub(crate) async fn run_script_with(
    program: PathBuf,
    script: PathBuf,
    args: Vec<String>,
) -> String {
    let mut command = Command::new(program);
    command.arg(script).args(args);
    run_command(command).await
}

/// Runs `command` off the runtime; returns its output after checking it succeeded.
pub(crate) async fn run_command(mut command: Command) -> String {
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_streams_completes_and_gets_unretried_errors() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let gateway = start(MODEL_M_ON_A_AND_B).await;
    let script = root.join("tests/sdk/python/gateway_roundtrip.py");
    let stdout = run_script(python(), script, &gateway).await;
    assert!(stdout.contains("6 passed, 0 failed"), "{stdout}");
    // Successful calls: 3 plain, 1 failed over (2 requests). Failing calls, with the SDK's
    // max_retries=2: 503 on both (2 attempts), 400 (1, not retried), 429 (2). The unknown model
    // reaches one simulator, which answers 404. Had the SDK retried, the count would be higher.
    // Three more calls with heartbeats, one request each.
    let expected = (3 + 2) + 3 + (2 + 1 + 2) + 1;
    assert_eq!(
        gateway.requests("a") + gateway.requests("b"),
        expected,
        "SDK retries did not multiply the gateway's"
    );
}

/// Models for every endpoint beside `m`, each on both upstreams, and one that waits longer than
/// the SDK.
const ENDPOINT_MODELS: &str = r#"
[models.emb]
targets = ["a:text-embedding-3-small", "b:text-embedding-3-small"]
timeouts = { first_byte = "500ms", total = "10s" }

[models.img]
targets = ["a:dall-e-3", "b:dall-e-3"]
timeouts = { first_byte = "2s", total = "10s" }

[models.slow]
targets = ["a:sim-instant", "b:sim-instant"]
timeouts = { first_byte = "5s", total = "10s" }
"#;

/// A gateway with `m` and the endpoint models.
async fn endpoints_gateway() -> Running {
    start(&format!("{MODEL_M_ON_A_AND_B}{ENDPOINT_MODELS}")).await
}

pub fn python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = std::env::var_os("HOURGLASS_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("tests/sdk/python/.venv/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: run `scripts/test` once to install the SDKs",
        python.display()
    );
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_reaches_every_endpoint_through_the_gateway() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let gateway = endpoints_gateway().await;
    let script = root.join("tests/sdk/python/gateway_endpoints.py");
    let stdout = run_script(python(), script, &gateway).await;
    assert!(stdout.contains("8 passed, 0 failed"), "{stdout}");
    // Requests the simulators saw: tool calls 1 + 2 (failover), completions 2, embeddings 1 + 2
    // (failover from a 503), images 2, responses 1 + 2, the cut stream 1 (never retried after
    // its first tokens), the SDK-deadline call 1 (one hang outlives the 1.8 s the SDK leaves),
    // the gateway's own errors 0 (bad header) + 2 (no first token on either upstream).
    // The SDK's max_retries=2 added none.
    let expected = 3 + 2 + 3 + 2 + 3 + 1 + 1 + 2;
    assert_eq!(
        gateway.requests("a") + gateway.requests("b"),
        expected,
        "requests seen by the simulators"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_sdk_parses_heartbeats_in_streams_and_whole_answers() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    assert!(
        root.join("tests/sdk/node/node_modules/openai/package.json")
            .exists(),
        "the openai npm package is missing: run `scripts/test` once to install it"
    );
    let gateway = start(MODEL_M_ON_A_AND_B).await;
    let script = root.join("tests/sdk/node/gateway_roundtrip.mjs");
    let stdout = run_script(PathBuf::from("node"), script, &gateway).await;
    assert!(stdout.contains("3 passed, 0 failed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_sdk_reaches_every_endpoint_through_the_gateway() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let gateway = endpoints_gateway().await;
    let script = root.join("tests/sdk/node/gateway_endpoints.mjs");
    let stdout = run_script(PathBuf::from("node"), script, &gateway).await;
    assert!(stdout.contains("8 passed, 0 failed"), "{stdout}");
    // Chat 1 + 2 (failover), tools 1, embeddings 2 (failover from a 503), images 1, responses
    // 1 + 2, failures 2 (503 on both) + 1 (400, the client's own) + 2 (429 on both), the cut
    // stream 1, the SDK-deadline call 1. The SDK's maxRetries=2 added none.
    let expected = 3 + 1 + 2 + 1 + 3 + 5 + 1 + 1;
    assert_eq!(
        gateway.requests("a") + gateway.requests("b"),
        expected,
        "requests seen by the simulators"
    );
}

/// Found with the Vercel AI SDK (Responses API by default): its calls go through a failover,
/// and an error after the first tokens reaches `onError` with hourglass's code (it threw a
/// type-validation error before the Responses error event had its API's shape).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vercel_ai_sdk_fails_over_and_hears_errors_after_commit() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    assert!(
        root.join("tests/sdk/node/node_modules/ai/package.json")
            .exists(),
        "the ai npm package is missing: run `scripts/test` once to install it"
    );
    let gateway = start(MODEL_M_ON_A_AND_B).await;
    let script = root.join("tests/sdk/node/ai_sdk.mjs");
    let stdout = run_script(PathBuf::from("node"), script, &gateway).await;
    assert!(stdout.contains("ai sdk: 4 passed, 0 failed"), "{stdout}");
    // generateText and streamText over responses: 2 each (failover); over chat: 2 each; the two
    // cut streams: 1 each. maxRetries: 0, and nothing else retried.
    let expected = 2 + 2 + 2 + 2 + 1 + 1;
    assert_eq!(
        gateway.requests("a") + gateway.requests("b"),
        expected,
        "requests seen by the simulators"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn langchain_works_unmodified_through_the_gateway() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let gateway = endpoints_gateway().await;
    let script = root.join("tests/sdk/python/langchain_roundtrip.py");
    let stdout = run_script(python(), script, &gateway).await;
    assert!(stdout.contains("6 passed, 0 failed"), "{stdout}");
    // invoke 1, stream 2 (failover), tools 1, batch 3, embeddings 2, the 400 once: LangChain's
    // own retries (max_retries=2 by default) added none.
    let expected = 1 + 2 + 1 + 3 + 2 + 1;
    assert_eq!(
        gateway.requests("a") + gateway.requests("b"),
        expected,
        "requests seen by the simulators"
    );
}

/// Models for the background tests: `think` answers its first token after ~3 s (a reasoning
/// model at a tenth of its real time), longer than the SDK clients' 2 s timeout, on both
/// upstreams; `m` answers at once.
const BACKGROUND_MODELS: &str = r#"
[models.think]
targets = ["a:deepseek-r1", "b:deepseek-r1"]
timeouts = { first_byte = "8s", first_token = "8s", idle = "5s", attempt = "30s", total = "60s" }
retry = { max_attempts = 2, backoff_base = "50ms", backoff_max = "100ms" }

[models.m]
targets = ["a:sim-instant", "b:sim-instant"]
timeouts = { first_byte = "2s", first_token = "2s", total = "20s" }
retry = { max_attempts = 2, backoff_base = "50ms", backoff_max = "100ms" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_runs_background_responses_for_an_upstream_without_them() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let gateway = start_jobs(BACKGROUND_MODELS, 0.1).await;
    let script = root.join("tests/sdk/python/background.py");
    let stdout = run_script(python(), script, &gateway).await;
    assert!(
        stdout.contains("background: 4 passed, 0 failed"),
        "{stdout}"
    );
    // Upstream calls: the background call and its synchronous twin (2), the failover (a hangs,
    // then b: 2), two streams (2), and the cancelled call (1, or none when the cancel came
    // before its request was sent). None more: polls and resumes never reach an upstream.
    let seen = gateway.requests("a") + gateway.requests("b");
    assert!((6..=7).contains(&seen), "{seen} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_sdk_runs_background_responses_for_an_upstream_without_them() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let gateway = start_jobs(BACKGROUND_MODELS, 0.1).await;
    let script = root.join("tests/sdk/node/background.mjs");
    let stdout = run_script(PathBuf::from("node"), script, &gateway).await;
    assert!(stdout.contains("3 passed, 0 failed"), "{stdout}");
}
