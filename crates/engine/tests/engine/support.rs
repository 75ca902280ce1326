//! Engines over in-memory simulators, and calls with their outcome read to the end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hourglass_config::Config;
use hourglass_engine::error::FailureKind;
use hourglass_engine::{
    BoxFuture, BoxIo, CallError, CallRequest, Dial, DialFn, Endpoint, Engine, ResponseBody,
};
use hourglass_sim::{Server, ServerConfig};
use tokio::time::Instant;

/// A dialer that opens in-memory connections to a simulator.
pub fn memory_dial(server: Arc<Server>) -> Arc<dyn Dial> {
    Arc::new(DialFn(move || -> BoxFuture<Result<BoxIo, FailureKind>> {
        let server = server.clone();
        Box::pin(async move { Ok(Box::new(server.connect_in_memory().await) as BoxIo) })
    }))
}

/// Simulated upstreams `a` and `b` (every built-in model) behind an engine configured by `extra`.
pub struct Setup {
    pub engine: Arc<Engine>,
    pub sims: HashMap<String, Arc<Server>>,
}

pub fn setup(extra: &str) -> Setup {
    setup_with(&["a", "b"], extra)
}

pub fn setup_with(names: &[&str], extra: &str) -> Setup {
    build(names, &upstream_tables(names, extra), false)
}

fn upstream_tables(names: &[&str], extra: &str) -> String {
    let mut text = String::new();
    for name in names {
        text.push_str(&format!(
            "[upstreams.{name}]\nbase_url = \"http://{name}.invalid/v1\"\n"
        ));
    }
    text.push_str(extra);
    text
}

/// Simulated upstreams `names` behind an engine configured by the whole `text`.
pub fn setup_raw(names: &[&str], text: &str) -> Setup {
    build(names, text, false)
}

fn build(names: &[&str], text: &str, seeded: bool) -> Setup {
    let config = Config::from_toml(text, "test.toml", &|_| None).unwrap();
    let mut sims = HashMap::new();
    let mut dials = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        let server = Arc::new(Server::in_memory(ServerConfig {
            name: (*name).to_owned(),
            seed: if seeded { 1000 * (i as u64 + 1) } else { 0 },
            ..ServerConfig::default()
        }));
        dials.insert((*name).to_owned(), memory_dial(server.clone()));
        sims.insert((*name).to_owned(), server);
    }
    Setup {
        engine: Engine::new(config, dials).unwrap(),
        sims,
    }
}

impl Setup {
    pub fn requests(&self, name: &str) -> u64 {
        self.sims[name].stats().requests
    }
}

/// A chat request for `model`, streaming or not, with an `x-sim-fault` header when given.
pub fn chat(model: &str, stream: bool, fault: Option<&str>) -> CallRequest {
    let body = serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream});
    let mut request = CallRequest::new(
        Endpoint::Chat,
        "/chat/completions",
        Bytes::from(body.to_string()),
    )
    .unwrap();
    if let Some(fault) = fault {
        request
            .headers
            .insert("x-sim-fault", fault.parse().unwrap());
    }
    request
}

/// What a call produced, read to the end.
#[derive(Debug)]
pub struct Outcome {
    pub elapsed: Duration,
    pub result: Result<Done, CallError>,
}

#[derive(Debug)]
pub struct Done {
    pub upstream: String,
    pub attempts: Vec<(String, &'static str)>,
    pub body: String,
    /// When the stream's last chunk arrived, from the call's start.
    pub finished: Duration,
}

impl Outcome {
    pub fn ok(&self) -> &Done {
        match &self.result {
            Ok(done) => done,
            Err(error) => panic!("the call failed: {} {}", error.code, error.message),
        }
    }

    pub fn err(&self) -> &CallError {
        match &self.result {
            Ok(done) => panic!("the call succeeded via {}: {}", done.upstream, done.body),
            Err(error) => error,
        }
    }

    pub fn trail(&self) -> Vec<(String, &'static str)> {
        match &self.result {
            Ok(done) => done.attempts.clone(),
            Err(error) => error
                .trail
                .iter()
                .map(|a| (a.upstream.clone(), a.outcome.name()))
                .collect(),
        }
    }
}

pub async fn call(setup: &Setup, mut request: CallRequest) -> Outcome {
    let start = Instant::now();
    request.start = start;
    let result = setup.engine.call(request).await;
    let elapsed = start.elapsed();
    let result = match result {
        Err(error) => Err(error),
        Ok(response) => {
            let upstream = response
                .headers
                .get("x-hourglass-upstream")
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            let attempts = response
                .trail
                .iter()
                .map(|a| (a.upstream.clone(), a.outcome.name()))
                .collect();
            let body = match response.body {
                ResponseBody::Full(bytes) => String::from_utf8(bytes.to_vec()).unwrap(),
                ResponseBody::Stream(stream) => {
                    let bytes = http_body_util::BodyExt::collect(stream)
                        .await
                        .unwrap()
                        .to_bytes();
                    String::from_utf8(bytes.to_vec()).unwrap()
                }
            };
            Ok(Done {
                upstream,
                attempts,
                body,
                finished: start.elapsed(),
            })
        }
    };
    Outcome { elapsed, result }
}

/// The content of a streamed chat body, and the error event that ended it, if any.
pub fn stream_text(body: &str) -> (String, Option<serde_json::Value>) {
    let mut text = String::new();
    let mut error = None;
    for event in body.split("\n\n") {
        let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
            continue;
        };
        if data == "[DONE]" {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(data).unwrap();
        if let Some(e) = value.get("error") {
            error = Some(e.clone());
            continue;
        }
        for choice in value["choices"].as_array().into_iter().flatten() {
            text.push_str(choice["delta"]["content"].as_str().unwrap_or_default());
        }
    }
    (text, error)
}

pub fn whole_text(body: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(body).unwrap();
    value["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub const SECOND: Duration = Duration::from_secs(1);

pub fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Like [`setup_with`], but each simulator draws from its own seed (independent fault draws).
pub fn setup_seeded(names: &[&str], extra: &str) -> Setup {
    build(names, &upstream_tables(names, extra), true)
}

/// A hand-written upstream over in-memory pipes: every connection reads one request, then `serve`
/// answers on the server's end of the pipe (the connection ends when it lets go of it).
pub fn hand_written<F, Fut>(serve: F) -> Arc<dyn Dial>
where
    F: Fn(tokio::io::DuplexStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let serve = Arc::new(serve);
    Arc::new(DialFn(move || -> BoxFuture<Result<BoxIo, FailureKind>> {
        let serve = serve.clone();
        Box::pin(async move {
            let (client, mut server) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut request = vec![0u8; 64 * 1024];
                let _ = server.read(&mut request).await;
                serve(server).await;
            });
            Ok(Box::new(client) as BoxIo)
        })
    }))
}

/// A [`hand_written`] upstream that writes `response` (raw HTTP/1.1) and then holds the
/// connection open without another byte.
pub fn scripted(response: &'static [u8]) -> Arc<dyn Dial> {
    hand_written(move |mut server| async move {
        use tokio::io::AsyncWriteExt;
        let _ = server.write_all(response).await;
        std::future::pending::<()>().await;
        drop(server);
    })
}

/// An engine whose one upstream `x` is [`scripted`] with `response`, configured by `extra`.
pub fn setup_scripted(extra: &str, response: &'static [u8]) -> Arc<Engine> {
    setup_dialed(extra, scripted(response))
}

/// An engine whose one upstream `x` is reached through `dial` (a hand-written upstream),
/// configured by `extra` (its models and policies).
pub fn setup_dialed(extra: &str, dial: Arc<dyn Dial>) -> Arc<Engine> {
    let text = format!("[upstreams.x]\nbase_url = \"http://x.invalid/v1\"\n{extra}");
    let config = Config::from_toml(&text, "test.toml", &|_| None).unwrap();
    Engine::new(config, HashMap::from([("x".to_owned(), dial)])).unwrap()
}
