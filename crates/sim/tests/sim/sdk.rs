//! The official OpenAI SDKs (Python in a venv, Node from npm) parse everything the simulator
//! sends, and the official Anthropic Python SDK its Messages API. `scripts/test` installs them;
//! these tests fail, saying so, when they are missing.

use std::path::PathBuf;
use std::process::Command;

use hourglass_sim::{Server, ServerConfig};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs an SDK script against a fresh simulator on loopback and returns its output.
async fn run_against_sim(program: PathBuf, script: &str) -> String {
    assert!(
        program.exists() || program.components().count() == 1,
        "{} is missing: run `scripts/test` once to install the SDKs",
        program.display()
    );
    // Image models take 10-40 s: a small time scale keeps the run short.
    let config = ServerConfig {
        time_scale: 0.001,
        ..ServerConfig::default()
    };
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let script = workspace().join(script);
    let base_url = server.base_url();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&program).arg(&script).arg(base_url).output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("cannot run the SDK script: {e}; run `scripts/test` to install it"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the SDK script failed\n{stdout}\n{stderr}"
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_parses_every_route_and_error() {
    let python = std::env::var_os("HOURGLASS_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("tests/sdk/python/.venv/bin/python"));
    let out = run_against_sim(python, "tests/sdk/python/sim_roundtrip.py").await;
    assert!(out.contains("13 passed, 0 failed"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_node_sdk_parses_streams_tools_and_errors() {
    assert!(
        workspace()
            .join("tests/sdk/node/node_modules/openai/package.json")
            .exists(),
        "the openai npm package is missing: run `scripts/test` once to install it"
    );
    let out = run_against_sim(PathBuf::from("node"), "tests/sdk/node/sim_roundtrip.mjs").await;
    assert!(out.contains("8 passed, 0 failed"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_anthropic_python_sdk_parses_messages_streams_tools_and_errors() {
    let python = std::env::var_os("HOURGLASS_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("tests/sdk/python/.venv/bin/python"));
    let out = run_against_sim(python, "tests/sdk/python/anthropic_sim.py").await;
    assert!(out.contains("5 passed, 0 failed"), "{out}");
}
