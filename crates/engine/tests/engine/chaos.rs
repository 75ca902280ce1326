//! Chaos: three upstreams with a random mix of every fault and one healthy upstream, thousands of
//! mixed streaming and non-streaming calls at concurrency, on the paused clock. For every call:
//! it succeeded with intact content (the simulator's `TAG:SEQ` tokens — nothing lost, repeated or
//! spliced from two attempts), or it failed with a typed error after its stream had begun (the
//! only failure a healthy path cannot save); and it ended within its deadline plus a small bound.
//! The same chaos runs on OpenAI's chat completions and on Anthropic's Messages API (upstreams
//! that speak it, its typed events and error event). `HOURGLASS_CHAOS_CALLS` runs a longer
//! chaos (the default is a short run for `.ci/run`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hourglass_config::Config;
use hourglass_engine::{CallRequest, Dial, Endpoint, Engine, ResponseBody};
use hourglass_sim::fault::FaultList;
use hourglass_sim::server::WeightedFaults;
use hourglass_sim::{Server, ServerConfig};
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::support::{memory_dial, stream_text};

/// Every fault kind the simulator has, on a third of a faulty upstream's calls.
const MIX: &[(&str, f64)] = &[
    ("hang", 0.03),
    ("delay_headers;for=2s", 0.03),
    ("status;code=503", 0.05),
    ("status;code=500;body=html", 0.02),
    ("rate_limit;retry_after=1", 0.03),
    ("reset", 0.03),
    ("cut;after_chunks=4", 0.03),
    ("interrupt;after_chunks=5", 0.02),
    ("stall;after_chunks=3;for=120s", 0.03),
    ("first_token;after=60s;keepalive=2s", 0.03),
    ("malformed", 0.02),
    ("slow;tokens_per_s=0.5", 0.02),
];

fn sim(name: &str, seed: u64, faulty: bool) -> Arc<Server> {
    let fault_mix = if faulty {
        MIX.iter()
            .map(|(f, p)| WeightedFaults {
                faults: FaultList::parse(f).unwrap(),
                probability: *p,
            })
            .collect()
    } else {
        Vec::new()
    };
    Arc::new(Server::in_memory(ServerConfig {
        name: name.to_owned(),
        seed,
        fault_mix,
        ..ServerConfig::default()
    }))
}

#[derive(Debug)]
enum Outcome {
    Ok {
        attempts: usize,
    },
    /// A typed error after the stream began (its content so far intact).
    FailedAfterCommit {
        code: String,
    },
    /// A typed error before any content: a healthy path existed, so this is a loss.
    FailedBeforeCommit {
        code: String,
        trail: Vec<(String, &'static str)>,
    },
}

/// The text of a stream (chat chunks' content, or Messages' text deltas) and its error, if it
/// ended with one.
fn streamed(endpoint: Endpoint, body: &str) -> (String, Option<serde_json::Value>) {
    if endpoint == Endpoint::Chat {
        return stream_text(body);
    }
    let mut text = String::new();
    let mut error = None;
    for event in body.split("\n\n") {
        let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
            continue;
        };
        let value: serde_json::Value = serde_json::from_str(data).unwrap();
        match value["type"].as_str() {
            Some("error") => error = Some(value["error"].clone()),
            Some("content_block_delta") => {
                text.push_str(value["delta"]["text"].as_str().unwrap_or_default());
            }
            _ => {}
        }
    }
    (text, error)
}

/// The text of a whole answer: a chat completion's message, or a Message's text block.
fn whole(endpoint: Endpoint, value: &serde_json::Value) -> Option<&str> {
    match endpoint {
        Endpoint::Chat => value["choices"][0]["message"]["content"].as_str(),
        _ => value["content"][0]["text"].as_str(),
    }
}

async fn one(engine: Arc<Engine>, endpoint: Endpoint, i: u64, stream: bool) -> (Outcome, Duration) {
    let body = serde_json::json!({
        "model": "m",
        "messages": [{"role": "user", "content": format!("call {i}")}],
        "stream": stream,
        "max_tokens": 30,
    });
    let path = match endpoint {
        Endpoint::Chat => "/chat/completions",
        _ => "/messages",
    };
    let request = CallRequest::new(endpoint, path, Bytes::from(body.to_string())).unwrap();
    let start = Instant::now();
    let outcome = match engine.call(request).await {
        Err(e) => Outcome::FailedBeforeCommit {
            code: e.code.to_string(),
            trail: e
                .trail
                .iter()
                .map(|a| (a.upstream.clone(), a.outcome.name()))
                .collect(),
        },
        Ok(response) => {
            let attempts = response.trail.len();
            let text = match response.body {
                ResponseBody::Full(bytes) => String::from_utf8(bytes.to_vec()).unwrap(),
                ResponseBody::Stream(s) => {
                    String::from_utf8(s.collect().await.unwrap().to_bytes().to_vec()).unwrap()
                }
            };
            if stream {
                let (content, error) = streamed(endpoint, &text);
                hourglass_sim::content::check(&content)
                    .unwrap_or_else(|e| panic!("call {i}: streamed content broken: {e}\n{text}"));
                match error {
                    None => Outcome::Ok { attempts },
                    Some(e) => Outcome::FailedAfterCommit {
                        code: e["code"].as_str().unwrap_or("?").to_owned(),
                    },
                }
            } else {
                let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                let content = whole(endpoint, &value)
                    .unwrap_or_else(|| panic!("call {i}: no text in the whole answer: {text}"));
                let checked = hourglass_sim::content::check(content)
                    .unwrap_or_else(|e| panic!("call {i}: whole answer broken: {e}\n{text}"));
                assert!(checked.tokens > 0, "call {i}: an empty answer");
                Outcome::Ok { attempts }
            }
        }
    };
    (outcome, start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn chaos_no_call_is_lost_broken_or_late() {
    chaos(Endpoint::Chat, 1500).await;
}

#[tokio::test(start_paused = true)]
async fn chaos_on_anthropic_messages_no_call_is_lost_broken_or_late() {
    chaos(Endpoint::Messages, 1000).await;
}

async fn chaos(endpoint: Endpoint, default_calls: u64) {
    let calls: u64 = std::env::var("HOURGLASS_CHAOS_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default_calls);
    let speaks = match endpoint {
        Endpoint::Chat => "",
        _ => "protocol = \"anthropic\"\n",
    };
    let upstream = |name: &str| {
        format!("[upstreams.{name}]\nbase_url = \"http://{name}.invalid/v1\"\n{speaks}")
    };
    let text = format!(
        "[retry_budget]\nratio = 1.0\nmin_per_s = 1000\n{}{}{}{}{MODEL}",
        upstream("f1"),
        upstream("f2"),
        upstream("f3"),
        upstream("ok")
    );
    chaos_with(&text, endpoint, calls).await;
}

/// Model `m` on three faulty upstreams and a healthy one, balanced by latency.
const MODEL: &str = "[models.m]\ntargets = [\"f1:gpt-4o-mini\", \"f2:gpt-4o-mini\", \"f3:gpt-4o-mini\", \"ok:gpt-4o-mini\"]\n\
                balance = \"latency\"\n\
                timeouts = { connect = \"1s\", first_byte = \"8s\", first_token = \"5s\", idle = \"5s\", attempt = \"10s\", total = \"60s\" }\n\
                retry = { max_attempts = 5 }\n";

async fn chaos_with(text: &str, endpoint: Endpoint, calls: u64) {
    let config = Config::from_toml(text, "chaos.toml", &|_| None).unwrap();
    let mut dials: HashMap<String, Arc<dyn Dial>> = HashMap::new();
    for (i, name) in ["f1", "f2", "f3", "ok"].iter().enumerate() {
        dials.insert(
            (*name).to_owned(),
            memory_dial(sim(name, 7 + i as u64, *name != "ok")),
        );
    }
    let engine = Engine::new(config, dials).unwrap();
    let deadline = Duration::from_secs(60);

    let concurrency = 32;
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(calls as usize);
    for i in 0..calls {
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let result = one(engine, endpoint, i, i % 3 != 0).await;
            drop(permit);
            result
        }));
    }
    let (mut ok, mut after_commit, mut lost) =
        (0usize, HashMap::<String, usize>::new(), Vec::new());
    let mut attempts: Vec<usize> = Vec::new();
    let mut elapsed: Vec<Duration> = Vec::new();
    for task in tasks {
        let (outcome, took) = task.await.unwrap();
        assert!(
            took <= deadline + Duration::from_millis(50),
            "a call overran its deadline: {took:?}"
        );
        elapsed.push(took);
        match outcome {
            Outcome::Ok { attempts: n } => {
                ok += 1;
                attempts.push(n);
            }
            Outcome::FailedAfterCommit { code } => *after_commit.entry(code).or_default() += 1,
            Outcome::FailedBeforeCommit { code, trail } => lost.push((code, trail)),
        }
    }
    elapsed.sort_unstable();
    attempts.sort_unstable();
    let pct =
        |v: &[Duration], p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    let mean_attempts = attempts.iter().sum::<usize>() as f64 / attempts.len().max(1) as f64;
    println!(
        "chaos ({}): {calls} calls at concurrency {concurrency}; ok {ok} ({:.2}%), failed after commit {after_commit:?}, \
         lost before commit {}; elapsed p50 {:?} p99 {:?} max {:?}; attempts per successful call mean {mean_attempts:.2}, max {}",
        endpoint.name(),
        100.0 * ok as f64 / calls as f64,
        lost.len(),
        pct(&elapsed, 0.5),
        pct(&elapsed, 0.99),
        elapsed.last().unwrap(),
        attempts.last().copied().unwrap_or(0),
    );
    assert!(
        lost.is_empty(),
        "calls lost though a healthy upstream existed: {lost:?}"
    );
    // Only streams can fail after commit, and only by faults that strike mid-stream (an
    // interrupted Messages stream ends with the upstream's own error event: upstream_status).
    for code in after_commit.keys() {
        assert!(
            matches!(
                code.as_str(),
                "idle_timeout"
                    | "upstream_cut"
                    | "upstream_truncated"
                    | "upstream_malformed"
                    | "deadline_exceeded"
            ) || (endpoint == Endpoint::Messages && code == "upstream_status"),
            "{code}"
        );
    }
}
