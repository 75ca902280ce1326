//! A small HTTP/1.1 client for the tests: it records when the head and each body frame arrived
//! (on tokio's clock) and how the body ended.

use std::time::Duration;

use bytes::Bytes;
use hourglass_sim::{Server, ServerConfig};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

/// What a client saw of one response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// From sending the request to receiving the head.
    pub head_after: Duration,
    /// Each body frame and when it arrived, from sending the request.
    pub frames: Vec<(Duration, Bytes)>,
    /// `None` if the body ended cleanly, else the error that ended it.
    pub body_error: Option<String>,
}

impl Reply {
    pub fn body(&self) -> Vec<u8> {
        self.frames
            .iter()
            .flat_map(|(_, b)| b.iter().copied())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body()).expect("the simulator sends UTF-8")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// SSE events as (arrival, raw event text without the blank line).
    pub fn events(&self) -> Vec<(Duration, String)> {
        let mut events = Vec::new();
        let mut pending = String::new();
        for (at, frame) in &self.frames {
            pending.push_str(std::str::from_utf8(frame).expect("UTF-8 frames"));
            while let Some(end) = pending.find("\n\n") {
                events.push((*at, pending[..end].to_owned()));
                pending.drain(..end + 2);
            }
        }
        events
    }

    /// The JSON payloads of `data:` events, skipping comments and `[DONE]`.
    pub fn data(&self) -> Vec<serde_json::Value> {
        self.events()
            .iter()
            .filter_map(|(_, e)| {
                e.lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .map(str::to_owned)
            })
            .filter(|d| d != "[DONE]")
            .map(|d| serde_json::from_str(&d).unwrap_or_else(|err| panic!("bad chunk {d}: {err}")))
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A request to send.
pub struct Call<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: Vec<(&'a str, String)>,
    pub body: String,
}

pub fn post(path: &str, body: serde_json::Value) -> Call<'_> {
    Call {
        method: "POST",
        path,
        headers: Vec::new(),
        body: body.to_string(),
    }
}

pub fn get(path: &str) -> Call<'_> {
    Call {
        method: "GET",
        path,
        headers: Vec::new(),
        body: String::new(),
    }
}

impl<'a> Call<'a> {
    pub fn header(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn fault(self, fault: &str) -> Self {
        self.header("x-sim-fault", fault)
    }

    /// Sends the request over `io` and reads the whole reply; `Err` if no head arrived.
    pub async fn send<I>(self, io: I) -> Result<Reply, hyper::Error>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(self.method)
            .uri(self.path)
            .header("host", "sim.test")
            .header("content-type", "application/json");
        for (name, value) in self.headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(self.body)))
            .expect("a valid test request");
        let started = Instant::now();
        let response = sender.send_request(request).await?;
        let head_after = started.elapsed();
        let (parts, mut body) = response.into_parts();
        let mut frames = Vec::new();
        let mut body_error = None;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        frames.push((started.elapsed(), data));
                    }
                }
                Err(error) => {
                    body_error = Some(error.to_string());
                    break;
                }
            }
        }
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            head_after,
            frames,
            body_error,
        })
    }

    /// Sends the request to an in-memory server.
    pub async fn to(self, server: &Server) -> Reply {
        let io = server.connect_in_memory().await;
        self.send(io)
            .await
            .expect("the simulator sent a response head")
    }
}

/// An in-memory server with the built-in models and the given seed.
pub fn memory_server() -> Server {
    Server::in_memory(ServerConfig::default())
}

/// The text of a streamed chat answer, choice by choice.
pub fn streamed_chat_text(reply: &Reply, choices: usize) -> Vec<String> {
    let mut texts = vec![String::new(); choices];
    for chunk in reply.data() {
        for choice in chunk["choices"].as_array().unwrap() {
            if let Some(content) = choice["delta"]["content"].as_str() {
                texts[choice["index"].as_u64().unwrap() as usize].push_str(content);
            }
        }
    }
    texts
}

pub fn chat(model: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut body =
        serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}
