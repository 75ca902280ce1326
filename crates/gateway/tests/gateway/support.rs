//! A gateway on a free port in front of simulated upstreams on free ports, and a small client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hourglass_config::Config;
use hourglass_engine::Engine;
use hourglass_gateway::Gateway;
use hourglass_sim::{Server, ServerConfig};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// The admin key of gateways configured with `admin_key_env = "HOURGLASS_TEST_ADMIN_KEY"`.
pub const ADMIN_KEY: &str = "test-admin-secret-7f3a";

/// The client keys of gateways configured with `client_keys_env = "HOURGLASS_TEST_CLIENT_KEYS"`.
pub const CLIENT_KEYS: &str = "ck-first-1a2b, ck-second-3c4d";

/// The webhook secret of gateways configured with `secret_env = "HOURGLASS_TEST_WEBHOOK_SECRET"`
/// (the Standard Webhooks specification's example secret).
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Model `m` on simulators `a` then `b`, with short timeouts and two attempts: what the client
/// tests (SDKs, curl) call through.
pub const MODEL_M_ON_A_AND_B: &str = r#"
[models.m]
targets = ["a:sim-instant", "b:sim-instant"]
timeouts = { first_byte = "500ms", first_token = "800ms", total = "10s" }
retry = { max_attempts = 2, backoff_base = "50ms", backoff_max = "100ms" }
"#;

/// A running gateway; dropping it shuts it down.
pub struct Running {
    pub addr: SocketAddr,
    pub sims: HashMap<String, Server>,
    stop: Option<oneshot::Sender<()>>,
    pub done: Option<tokio::task::JoinHandle<std::io::Result<usize>>>,
    /// The job store's directory, removed when the gateway is dropped.
    pub data_dir: Option<std::path::PathBuf>,
}

impl Running {
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn requests(&self, name: &str) -> u64 {
        self.sims[name].stats().requests
    }

    /// Starts the graceful shutdown and waits for it.
    pub async fn shutdown(mut self) -> usize {
        let _ = self.stop.take().unwrap().send(());
        self.done.take().unwrap().await.unwrap().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(dir) = self.data_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Simulators `a` and `b` on free ports, and a gateway configured with them plus `extra`.
pub async fn start(extra: &str) -> Running {
    start_with(extra, 0.01, None).await
}

/// As [`start`], with `a` and `b` configured as upstreams that speak Anthropic's Messages API.
pub async fn start_anthropic(extra: &str) -> Running {
    start_with(&format!("{SPEAK_ANTHROPIC}{extra}"), 0.01, None).await
}

/// A first line of `extra` that makes `start_with` configure the simulators as Anthropic
/// upstreams.
const SPEAK_ANTHROPIC: &str = "# the simulators speak anthropic\n";

/// As [`start`], with simulators at `time_scale`, and taking background jobs into a store in a
/// fresh directory.
pub async fn start_jobs(extra: &str, time_scale: f64) -> Running {
    let dir = std::env::temp_dir().join(format!(
        "hourglass-jobs-test-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    start_with(extra, time_scale, Some(dir)).await
}

/// As [`start_jobs`], with the store in `dir` (which the test owns).
pub async fn start_jobs_in(extra: &str, dir: std::path::PathBuf) -> Running {
    let mut running = start_with(extra, 0.01, Some(dir)).await;
    running.data_dir = None;
    running
}

async fn start_with(extra: &str, time_scale: f64, jobs: Option<std::path::PathBuf>) -> Running {
    let mut sims = HashMap::new();
    let mut text = String::new();
    for name in ["a", "b"] {
        let config = ServerConfig {
            name: name.to_owned(),
            time_scale,
            ..ServerConfig::default()
        };
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), config)
            .await
            .unwrap();
        text.push_str(&format!(
            "[upstreams.{name}]\nbase_url = \"{}\"\n",
            server.base_url()
        ));
        if extra.starts_with(SPEAK_ANTHROPIC) {
            text.push_str("protocol = \"anthropic\"\n");
        }
        sims.insert(name.to_owned(), server);
    }
    text.push_str(extra);
    // The one secret tests may configure: the admin key (never to show in any output).
    let env = |name: &str| match name {
        "HOURGLASS_TEST_ADMIN_KEY" => Some(ADMIN_KEY.to_owned()),
        "HOURGLASS_TEST_CLIENT_KEYS" => Some(CLIENT_KEYS.to_owned()),
        "HOURGLASS_TEST_WEBHOOK_SECRET" => Some(WEBHOOK_SECRET.to_owned()),
        _ => None,
    };
    let config = Config::from_toml(&text, "test.toml", &env).unwrap();
    let engine = Engine::new(config, HashMap::new()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let mut gateway = Gateway::new(engine);
    let mut data_dir = None;
    if let Some(dir) = jobs {
        let settings = gateway.engine().config().jobs.clone();
        let clock = hourglass_jobs::ids::wall_clock();
        let service =
            hourglass_jobs::Jobs::new(settings, dir.clone(), gateway.engine_source(), clock);
        gateway = gateway.with_jobs(service);
        data_dir = Some(dir);
    }
    let gateway = Arc::new(gateway);
    let done = tokio::spawn(hourglass_gateway::serve(listener, gateway, async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        sims,
        stop: Some(stop),
        done: Some(done),
        data_dir,
    }
}

/// A response as a client saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
    pub elapsed: Duration,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let start = Instant::now();
    let response = sender
        .send_request(request.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        elapsed: start.elapsed(),
    }
}

pub fn chat_body(model: &str, stream: bool) -> String {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}).to_string()
}

pub async fn chat(addr: SocketAddr, model: &str, stream: bool, headers: &[(&str, &str)]) -> Reply {
    send(
        addr,
        "POST",
        "/v1/chat/completions",
        headers,
        chat_body(model, stream),
    )
    .await
}

pub fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// The content of a streamed chat body.
pub fn stream_text(body: &str) -> String {
    body.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v["choices"]
                .get(0)
                .and_then(|c| c["delta"]["content"].as_str())
                .map(str::to_owned)
        })
        .collect()
}
