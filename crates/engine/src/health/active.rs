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
use hourglass_config::{CheckMode, Config, Upstream};
use http::Method;
use tokio::time::{Instant, timeout_at};

use super::Health;
use crate::protocol::{Endpoint, RequestHead};
use crate::request::CallRequest;
use crate::sse::Scanner;
use crate::upstream::{Upstreams, request};

/// One upstream's run of check results.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeState {
    /// Whether it is considered healthy (it starts so: no traffic is held back on a guess).
    pub healthy: bool,
    ok_streak: u32,
    fail_streak: u32,
    /// The last check's latency, or why it failed.
    pub last: Option<Result<Duration, String>>,
    /// When the next check runs.
    pub next_check: Option<Instant>,
}

impl Default for ProbeState {
    fn default() -> Self {
        ProbeState {
            healthy: true,
            ok_streak: 0,
            fail_streak: 0,
            last: None,
            next_check: None,
        }
    }
}

impl ProbeState {
    /// How many results in a row of the other kind flip it (healthy: failed checks to go down;
    /// unhealthy: good checks to come back).
    pub fn results_to_flip(&self, healthy_threshold: u32, unhealthy_threshold: u32) -> u32 {
        if self.healthy {
            unhealthy_threshold.saturating_sub(self.fail_streak).max(1)
        } else {
            healthy_threshold.saturating_sub(self.ok_streak).max(1)
        }
    }

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

/// Starts one checking task per upstream; they end when `upstreams` (the engine's pools) is
/// dropped. Nothing starts when checks are off.
pub fn spawn(
    config: &Arc<Config>,
    upstreams: &Arc<Upstreams>,
    health: &Arc<Health>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let settings = config.health_check.clone();
    if settings.mode == CheckMode::Off {
        return Vec::new();
    }
    (0..config.upstreams.len())
        .map(|index| {
            let pools: Weak<Upstreams> = Arc::downgrade(upstreams);
            let (config, health, settings) = (config.clone(), health.clone(), settings.clone());
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::new();
                // The first check runs at once: it resolves, dials and handshakes before the
                // first call needs a connection.
                loop {
                    let Some(pools) = pools.upgrade() else { return };
                    let upstream = &config.upstreams[index];
                    let result = check(&pools, upstream, index, &settings.mode, settings.timeout);
                    health.probe_result(
                        index,
                        &settings.mode,
                        result.await,
                        settings.healthy_threshold,
                        settings.unhealthy_threshold,
                        (settings.interval * 3).max(Duration::from_secs(10)),
                    );
                    drop(pools);
                    let jitter = settings.interval.mul_f64(rng.f64() * 0.1);
                    let next = crate::clock::now() + settings.interval + jitter;
                    health.probe_scheduled(index, next);
                    tokio::time::sleep_until(next).await;
                }
            })
        })
        .collect()
}

/// The request a check sends: `GET /models`, or a one-token completion in the upstream's own
/// protocol (its first, when it speaks several).
fn check_request(mode: &CheckMode, upstream: &Upstream) -> Result<CallRequest, String> {
    let protocol = crate::protocol::of(upstream.protocols[0]);
    match mode {
        CheckMode::Off | CheckMode::Models => Ok(CallRequest::with_head(
            match protocol.format() {
                hourglass_config::WireFormat::OpenAi => Endpoint::Other,
                hourglass_config::WireFormat::Anthropic => Endpoint::AnthropicOther,
            },
            Method::GET,
            "/models",
            Bytes::new(),
            RequestHead::default(),
        )),
        CheckMode::Completion(model) => {
            let (endpoint, path, body) = protocol.check_request(model);
            CallRequest::new(endpoint, path, body).map_err(|e| e.message)
        }
    }
}

/// Checks `upstream` (number `index`) once: the latency to its answer (or to the first token),
/// or why not.
pub async fn check(
    upstreams: &Upstreams,
    upstream: &Upstream,
    index: usize,
    mode: &CheckMode,
    limit: Duration,
) -> Result<Duration, String> {
    let request = check_request(mode, upstream)?;
    let start = crate::clock::now();
    let run = async {
        let connection = upstreams
            .connect(index)
            .await
            .map_err(|kind| format!("{}: {kind:?}", kind.code()))?;
        let (http_request, _written) =
            request::build(&request, upstream, request.body.clone(), connection.is_h2())
                .map_err(|kind| kind.code().to_string())?;
        let (parts, mut body) = connection
            .send(http_request)
            .await
            .map_err(|e| format!("upstream_closed: {e}"))?;
        let headers_latency = crate::clock::since(start);
        let protocol = request.endpoint.protocol();
        let mut scanner = Scanner::new();
        let mut first_token = None;
        let mut read = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("upstream_cut: {e}"))?;
            if let Ok(data) = frame.into_data() {
                read += data.len();
                if matches!(mode, CheckMode::Completion(_)) && first_token.is_none() {
                    let _ = scanner.push(&data, |event| {
                        if first_token.is_none()
                            && protocol.classify(request.endpoint, event).is_content()
                        {
                            first_token = Some(crate::clock::since(start));
                        }
                    });
                }
                if read > 1 << 20 {
                    break; // a model list is small; stop reading and drop the connection
                }
            }
        }
        if read <= 1 << 20 {
            body.release();
        }
        if parts.status.is_server_error() {
            return Err(format!("HTTP {}", parts.status.as_u16()));
        }
        Ok(first_token.unwrap_or(headers_latency))
    };
    match timeout_at(start + limit, run).await {
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
        assert_eq!(p.results_to_flip(2, 3), 3);
        assert_eq!(p.record(bad(), 2, 3), None);
        assert_eq!(p.record(bad(), 2, 3), None);
        assert_eq!(
            p.results_to_flip(2, 3),
            1,
            "one more failed check takes it down"
        );
        assert_eq!(p.record(ok(), 2, 3), None, "a success breaks the streak");
        assert_eq!(p.record(bad(), 2, 3), None);
        assert_eq!(p.record(bad(), 2, 3), None);
        assert_eq!(p.record(bad(), 2, 3), Some(false));
        assert!(!p.healthy);
        assert_eq!(p.record(bad(), 2, 3), None, "no repeated flip");
        assert_eq!(p.results_to_flip(2, 3), 2, "two good checks bring it back");
        assert_eq!(p.record(ok(), 2, 3), None);
        assert_eq!(p.record(ok(), 2, 3), Some(true));
        assert!(p.healthy);
    }
}
