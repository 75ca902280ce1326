//! Active health checks: at start and then every `interval` (plus up to 10 % jitter, so a fleet
//! does not probe in step) each upstream gets a cheap check over the engine's own pool — `GET /models` by default,
//! never billed, or a streamed one-token completion that also measures first-token latency. Any
//! HTTP answer below 500 counts as up (a 401 or 404 proves the server is there); a refusal, a
//! timeout or a 5xx counts as down. Thresholds of consecutive results flip an upstream between
//! healthy and unhealthy; an unhealthy upstream is ranked like an ejected one. The checks reuse
//! pooled connections and return them, so they also keep a warm connection ready for calls.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use hourglass_config::CheckMode;
use http::Method;
use http_body_util::BodyExt;
use tokio::time::{Instant, timeout_at};

use crate::Engine;
use crate::request::CallRequest;
use crate::stream::content::{self, Endpoint};
use crate::stream::sse::Scanner;
use crate::upstream::drive;

/// One upstream's run of check results.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeState {
    /// Whether it is considered healthy (it starts so: no traffic is held back on a guess).
    pub healthy: bool,
    ok_streak: u32,
    fail_streak: u32,
    /// The last check's latency, or why it failed.
    pub last: Option<Result<Duration, String>>,
}

impl Default for ProbeState {
    fn default() -> Self {
        ProbeState {
            healthy: true,
            ok_streak: 0,
            fail_streak: 0,
            last: None,
        }
    }
}

impl ProbeState {
    /// Adds a check's result; returns the new health when it flipped.
    pub fn record(
        &mut self,
        result: Result<Duration, String>,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) -> Option<bool> {
        let ok = result.is_ok();
        self.last = Some(result);
        if ok {
            self.ok_streak += 1;
            self.fail_streak = 0;
            if !self.healthy && self.ok_streak >= healthy_threshold {
                self.healthy = true;
                return Some(true);
            }
        } else {
            self.fail_streak += 1;
            self.ok_streak = 0;
            if self.healthy && self.fail_streak >= unhealthy_threshold {
                self.healthy = false;
                return Some(false);
            }
        }
        None
    }
}

/// Starts one checking task per upstream; they end when the engine is dropped. Nothing starts
/// when checks are off.
pub fn spawn(engine: &Arc<Engine>) -> Vec<tokio::task::JoinHandle<()>> {
    let settings = engine.config.health_check.clone();
    if settings.mode == CheckMode::Off {
        return Vec::new();
    }
    (0..engine.config.upstreams.len())
        .map(|index| {
            let weak: Weak<Engine> = Arc::downgrade(engine);
            let settings = settings.clone();
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::new();
                // The first check runs at once: it resolves, dials and handshakes before the
                // first call needs a connection.
                loop {
                    let Some(engine) = weak.upgrade() else { return };
                    let result = check(&engine, index, &settings.mode, settings.timeout).await;
                    engine.health.probe_result(
                        index,
                        &settings.mode,
                        result,
                        settings.healthy_threshold,
                        settings.unhealthy_threshold,
                    );
                    drop(engine);
                    let jitter = settings.interval.mul_f64(rng.f64() * 0.1);
                    tokio::time::sleep(settings.interval + jitter).await;
                }
            })
        })
        .collect()
}

/// Checks upstream `index` once: the latency to its answer (or to the first token), or why not.
pub async fn check(
    engine: &Engine,
    index: usize,
    mode: &CheckMode,
    limit: Duration,
) -> Result<Duration, String> {
    let upstream = &engine.config.upstreams[index];
    let request = match mode {
        CheckMode::Off | CheckMode::Models => CallRequest {
            endpoint: Endpoint::Other,
            method: Method::GET,
            path: "/models".to_owned(),
            headers: http::HeaderMap::new(),
            body: Bytes::new(),
            model: None,
            model_span: None,
            stream: false,
            client_deadline: None,
            start: Instant::now(),
        },
        CheckMode::Completion(model) => {
            let body = serde_json::json!({
                "model": model,
                "messages": [{"role": "user", "content": "ping"}],
                "max_tokens": 1,
                "stream": true,
            });
            CallRequest::new(
                Endpoint::Chat,
                "/chat/completions",
                Bytes::from(body.to_string()),
            )
            .map_err(|e| e.message)?
        }
    };
    let start = Instant::now();
    let deadline = start + limit;
    let run = async {
        let mut connection = engine
            .upstreams
            .connect(index)
            .await
            .map_err(|kind| format!("{}: {kind:?}", kind.code()))?;
        let (http_request, _written) =
            crate::attempt::build(&request, upstream, request.body.clone(), connection.is_h2())
                .map_err(|kind| kind.code().to_owned())?;
        let response = connection
            .send(http_request)
            .await
            .map_err(|e| format!("upstream_closed: {e}"))?;
        let status = response.status();
        let mut latency = start.elapsed();
        let mut body = response.into_body();
        let mut scanner = Scanner::new();
        let mut first_token = None;
        let mut read = 0usize;
        while let Some(frame) = drive(&mut connection.driver(), body.frame()).await {
            let frame = frame.map_err(|e| format!("upstream_cut: {e}"))?;
            if let Ok(data) = frame.into_data() {
                read += data.len();
                if matches!(mode, CheckMode::Completion(_)) && first_token.is_none() {
                    let _ = scanner.push(&data, |event| {
                        if first_token.is_none()
                            && content::classify(Endpoint::Chat, event).is_content()
                        {
                            first_token = Some(start.elapsed());
                        }
                    });
                }
                if read > 1 << 20 {
                    break; // a model list is small; stop reading and drop the connection
                }
            }
        }
        if read <= 1 << 20 {
            engine.upstreams.release(connection);
        }
        if status.is_server_error() {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        if let Some(first) = first_token {
            latency = first;
        }
        Ok(latency)
    };
    match timeout_at(deadline, run).await {
        Err(_) => Err(format!(
            "no answer within {}",
            hourglass_config::duration::format(limit)
        )),
        Ok(result) => result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_flip_health_both_ways() {
        let mut p = ProbeState::default();
        let ok = || Ok(Duration::from_millis(5));
        let bad = || Err("refused".to_owned());
        assert_eq!(p.record(bad(), 2, 3), None);
        assert_eq!(p.record(bad(), 2, 3), None);
        assert_eq!(p.record(ok(), 2, 3), None, "a success breaks the streak");
        assert_eq!(p.record(bad(), 2, 3), None);
        assert_eq!(p.record(bad(), 2, 3), None);
        assert_eq!(p.record(bad(), 2, 3), Some(false));
        assert!(!p.healthy);
        assert_eq!(p.record(bad(), 2, 3), None, "no repeated flip");
        assert_eq!(p.record(ok(), 2, 3), None);
        assert_eq!(p.record(ok(), 2, 3), Some(true));
        assert!(p.healthy);
    }
}
