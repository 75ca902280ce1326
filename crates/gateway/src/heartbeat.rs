//! Keep-alive heartbeats to the client while no content flows, so that proxies and load
//! balancers between the client and the gateway (60 s at nginx and most cloud LBs, 100 s at
//! Cloudflare, 29–30 s at API gateways) do not cut a long call.
//!
//! For a stream, heartbeats are the protocol's keep-alive — SSE comments (`: keep-alive`), which
//! the OpenAI SDKs skip, or Anthropic's `event: ping`, which its SDKs and Claude Code skip; for a
//! non-streaming answer (opt-in, per request), single spaces before the JSON body, which JSON
//! parsers skip. The trade-off: the first heartbeat commits the HTTP status (200), so an error
//! after it arrives in the body — an SSE error event, or an OpenAI-shaped error JSON.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hourglass_engine::commit::CommittedStream;
use hourglass_engine::{CallError, Endpoint, Response, ResponseBody};

use crate::stopping::StoppingSoon;
use http_body::{Body, Frame};
use tokio::time::Sleep;

/// The answer once the call answered: whole (taken when sent), or a committed stream.
enum Answer {
    Whole(Option<Bytes>),
    Stream(Box<CommittedStream>),
}

/// A call still running, as the heartbeat body polls it.
pub type Call = Pin<Box<dyn Future<Output = Result<Response, CallError>> + Send>>;

/// The body of a call that sends heartbeats while it waits.
pub struct HeartbeatBody {
    state: State,
    interval: Duration,
    tick: Pin<Box<Sleep>>,
    endpoint: Endpoint,
    stream: bool,
    metrics: std::sync::Arc<hourglass_observe::Metrics>,
    stopping: StoppingSoon,
}

enum State {
    Waiting(Call),
    Answering(Answer),
    Done,
}

impl HeartbeatBody {
    /// Heartbeats every `interval` until `call` (to `endpoint`) answers; `stream` picks SSE
    /// comments or spaces.
    pub fn new(
        call: Call,
        interval: Duration,
        endpoint: Endpoint,
        stream: bool,
        metrics: std::sync::Arc<hourglass_observe::Metrics>,
        stopping: StoppingSoon,
    ) -> HeartbeatBody {
        HeartbeatBody {
            state: State::Waiting(call),
            interval,
            tick: Box::pin(tokio::time::sleep(interval)),
            endpoint,
            stream,
            metrics,
            stopping,
        }
    }

    fn heartbeat(&self) -> Bytes {
        self.metrics.heartbeat();
        Bytes::from_static(if self.stream {
            self.endpoint.protocol().keepalive()
        } else {
            b" "
        })
    }

    fn error(&self, error: &CallError) -> Bytes {
        let protocol = self.endpoint.protocol();
        if self.stream {
            protocol.error_event(self.endpoint, error, 0)
        } else {
            protocol.error_body(error)
        }
    }
}

impl HeartbeatBody {
    /// When the shutdown grace period has run out: the `gateway_shutdown` error that ends the
    /// body now (a stream's numbered after its last event), once.
    fn stop(&mut self, cx: &mut Context<'_>) -> Option<Bytes> {
        if matches!(self.state, State::Done) || Pin::new(&mut self.stopping).poll(cx).is_pending() {
            return None;
        }
        match std::mem::replace(&mut self.state, State::Done) {
            State::Waiting(_) => Some(self.error(&crate::stopping::error())),
            State::Answering(Answer::Stream(mut stream)) => stream.stop(),
            // A whole answer goes out at once: let it.
            answering @ State::Answering(Answer::Whole(_)) => {
                self.state = answering;
                None
            }
            State::Done => None,
        }
    }
}

impl Body for HeartbeatBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(frame) = this.stop(cx) {
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
        loop {
            let inner: Poll<()> = match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Waiting(call) => match call.as_mut().poll(cx) {
                    Poll::Ready(Ok(response)) => {
                        // The status and headers went out with the first heartbeat: what the
                        // answer's headers say travels in the body instead.
                        let told = told(&response.headers);
                        let (answer, first) = match response.body {
                            ResponseBody::Full(bytes) => {
                                (Answer::Whole(Some(with_metadata(bytes, &told))), None)
                            }
                            ResponseBody::Stream(stream) => {
                                (Answer::Stream(stream), Some(sse_comment(&told)))
                            }
                        };
                        this.state = State::Answering(answer);
                        if let Some(comment) = first {
                            return Poll::Ready(Some(Ok(Frame::data(comment))));
                        }
                        continue;
                    }
                    Poll::Ready(Err(error)) => {
                        tracing::info!(
                            code = %error.code,
                            "call failed after heartbeats: {}",
                            error.message
                        );
                        let bytes = this.error(&error);
                        this.state = State::Done;
                        return Poll::Ready(Some(Ok(Frame::data(bytes))));
                    }
                    Poll::Pending => Poll::Pending,
                },
                State::Answering(Answer::Whole(bytes)) => {
                    let Some(bytes) = bytes.take() else {
                        this.state = State::Done;
                        return Poll::Ready(None);
                    };
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                State::Answering(Answer::Stream(body)) => {
                    match Pin::new(body.as_mut()).poll_frame(cx) {
                        Poll::Ready(Some(frame)) => {
                            // Content is flowing: the next heartbeat is due an interval from now.
                            this.tick
                                .as_mut()
                                .reset(hourglass_engine::clock::now() + this.interval);
                            return Poll::Ready(Some(frame));
                        }
                        Poll::Ready(None) => {
                            this.state = State::Done;
                            return Poll::Ready(None);
                        }
                        Poll::Pending => Poll::Pending,
                    }
                }
            };
            debug_assert!(inner.is_pending());
            if this.tick.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.tick
                .as_mut()
                .reset(hourglass_engine::clock::now() + this.interval);
            // A whole JSON body cannot take spaces once it has begun.
            if matches!(this.state, State::Answering(_)) && !this.stream {
                continue;
            }
            return Poll::Ready(Some(Ok(Frame::data(this.heartbeat()))));
        }
    }
}

/// The answer's own headers that the early status could not carry: `x-hourglass-upstream`,
/// `x-hourglass-attempts` and `server-timing`, as (name, value).
fn told(headers: &http::HeaderMap) -> Vec<(&'static str, String)> {
    [
        "x-hourglass-upstream",
        "x-hourglass-attempts",
        "server-timing",
    ]
    .into_iter()
    .filter_map(|name| {
        let value = headers.get(name)?.to_str().ok()?;
        Some((name, value.to_owned()))
    })
    .collect()
}

/// Those headers as an SSE comment, sent before a stream's first event (comments are skipped by
/// every SSE client).
fn sse_comment(told: &[(&'static str, String)]) -> Bytes {
    let mut out = String::new();
    for (name, value) in told {
        out.push_str(&format!(": {name}: {value}\n"));
    }
    out.push('\n');
    Bytes::from(out)
}

/// A whole JSON answer with those headers in an `hourglass` object of its own (extra fields are
/// ignored by the SDKs); a body that is not a JSON object is left as it is.
fn with_metadata(body: Bytes, told: &[(&'static str, String)]) -> Bytes {
    let text = std::str::from_utf8(&body).unwrap_or_default().trim_end();
    let Some(open) = text
        .trim_start()
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
    else {
        return body;
    };
    let meta: serde_json::Map<String, serde_json::Value> = told
        .iter()
        .map(|(name, value)| {
            let key = name.trim_start_matches("x-hourglass-").replace('-', "_");
            (key, serde_json::Value::from(value.as_str()))
        })
        .collect();
    let meta = serde_json::Value::Object(meta);
    let separator = if open.trim().is_empty() { "" } else { "," };
    Bytes::from(format!("{{{open}{separator}\"hourglass\":{meta}}}"))
}

/// The longest heartbeat interval a request may ask for: proxies cut silences of 60–350 s, so a
/// longer interval keeps nothing alive.
pub const MAX_HEARTBEAT: Duration = Duration::from_secs(600);

/// The heartbeat interval a request asks for: `x-hourglass-heartbeat: 5s` (100ms to 10m) or
/// `off`; `Err` names a malformed or out-of-range value.
pub fn requested(headers: &http::HeaderMap) -> Result<Option<Option<Duration>>, String> {
    let Some(value) = headers.get(hourglass_engine::header_names::X_HOURGLASS_HEARTBEAT) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| "x-hourglass-heartbeat is not visible ASCII".to_owned())?
        .trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(Some(None));
    }
    match hourglass_config::duration::parse(text) {
        Ok(d) if (Duration::from_millis(100)..=MAX_HEARTBEAT).contains(&d) => Ok(Some(Some(d))),
        Ok(_) => Err(format!(
            "x-hourglass-heartbeat must be between 100ms and 10m (or `off`), not {text}"
        )),
        Err(e) => Err(format!("x-hourglass-heartbeat: {e}; or `off`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(value: &'static str) -> Result<Option<Option<Duration>>, String> {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-hourglass-heartbeat", value.parse().unwrap());
        requested(&headers)
    }

    #[test]
    fn the_answers_headers_travel_in_its_body_once_the_status_is_gone() {
        let told = vec![
            ("x-hourglass-upstream", "east".to_owned()),
            ("x-hourglass-attempts", "2".to_owned()),
        ];
        let whole = with_metadata(Bytes::from_static(br#" {"id":"c","choices":[]}"#), &told);
        let value: serde_json::Value = serde_json::from_slice(&whole).unwrap();
        assert_eq!(value["id"], "c");
        assert_eq!(value["hourglass"]["upstream"], "east");
        assert_eq!(value["hourglass"]["attempts"], "2");
        let empty: serde_json::Value =
            serde_json::from_slice(&with_metadata(Bytes::from_static(b"{}"), &told)).unwrap();
        assert_eq!(empty["hourglass"]["upstream"], "east");
        assert_eq!(
            &with_metadata(Bytes::from_static(b"[1]"), &told)[..],
            b"[1]"
        );
        assert_eq!(
            &sse_comment(&told)[..],
            b": x-hourglass-upstream: east\n: x-hourglass-attempts: 2\n\n"
        );
    }

    /// Found by a hostile client: an interval this large panicked the stream after its 200.
    #[test]
    fn an_interval_out_of_range_is_refused_not_scheduled() {
        assert_eq!(asked("15s"), Ok(Some(Some(Duration::from_secs(15)))));
        assert_eq!(asked("off"), Ok(Some(None)));
        for value in ["9223372036854775807s", "11m", "50ms"] {
            let error = asked(value).unwrap_err();
            assert!(error.contains("between 100ms and 10m"), "{value}: {error}");
        }
        assert!(asked("soon").unwrap_err().contains("not a duration"));
    }
}
