//! `hourglass probe`: a health check and latency profile of endpoints, made with the engine's own
//! client and timeline, so it measures each phase exactly as the gateway's timers measure it.
//!
//! # What is measured (our definitions; the LLM benchmarks disagree on ITL and TPOT)
//! - `connect`: attempt start → connection ready (DNS + TCP + TLS); only calls that dialed.
//! - `first_byte`: request written → response headers (the engine's `first_byte` timer).
//! - `first_token`: request written → first meaningful content of a stream (`first_token` timer).
//! - `gap` (inter-token latency): time between consecutive content events of a stream, pooled
//!   over all calls; the first token is not a gap. `max_gap` per call is kept for `tune`'s idle.
//! - `total`: call start → last byte.
//! - `tokens/s`: `usage.completion_tokens` ÷ (last byte − first token) for streams (the decode
//!   rate), ÷ `total` for whole answers; absent when the server reports no usage.
//!
//! Each call is one attempt (no retries), so a timeout is counted in the phase where it fired.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hourglass_config::{Config, Family, ModelRoute, Policy, Target as RouteTarget, WireFormat};
use hourglass_engine::protocol::Signal;
use hourglass_engine::sse::Scanner;
use hourglass_engine::{CallRequest, Dial, Endpoint, Engine, ErrorCode, Phase, ResponseBody};
use http::HeaderMap;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::stats::Summary;

/// The version of the results file format.
pub const RESULTS_VERSION: u32 = 1;

/// What to send and how often.
#[derive(Debug, Clone)]
pub struct Options {
    /// Calls per endpoint and model.
    pub n: usize,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// Stream the answers (measures first token and gaps).
    pub stream: bool,
    /// `max_tokens` of each call.
    pub max_tokens: u32,
    /// The user message.
    pub prompt: String,
    /// Extra headers sent with every call.
    pub headers: HeaderMap,
    /// Overrides the total (and attempt) timeout of each call.
    pub timeout: Option<Duration>,
    /// The API to call: OpenAI's chat completions or Anthropic's Messages. `None`: what the
    /// upstream speaks (a URL on anthropic.com speaks Anthropic's, any other OpenAI's).
    pub api: Option<WireFormat>,
}

/// The API a URL speaks when nothing says: Anthropic's on anthropic.com, else OpenAI's.
pub fn api_of_url(url: &str) -> WireFormat {
    let host = url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_ascii_lowercase))
        .unwrap_or_default();
    if host == "anthropic.com" || host.ends_with(".anthropic.com") {
        WireFormat::Anthropic
    } else {
        WireFormat::OpenAi
    }
}

/// One endpoint and model to probe.
pub struct Target {
    /// The endpoint's label: the upstream's name, or the URL.
    pub endpoint: String,
    /// Its base URL.
    pub base_url: String,
    /// The model asked for.
    pub model: String,
    /// The timeouts and family the call runs with.
    pub policy: Policy,
    /// The model's family.
    pub family: Family,
    /// The API it is called with.
    pub api: WireFormat,
    engine: Arc<Engine>,
}

/// The endpoint at `url` for each of `models`; `api_key` is sent as a bearer token; `dial`
/// replaces the network (tests).
pub fn targets_for_url(
    url: &str,
    api_key: Option<String>,
    models: &[String],
    options: &Options,
    dial: Option<Arc<dyn Dial>>,
) -> Result<Vec<Target>, String> {
    let key_line = if api_key.is_some() {
        "api_key_env = \"HOURGLASS_PROBE_KEY\"\n"
    } else {
        ""
    };
    let quoted = serde_json::to_string(url).map_err(|e| e.to_string())?;
    let api = options.api.unwrap_or_else(|| api_of_url(url));
    let text = format!(
        "[upstreams.probe]\nbase_url = {quoted}\nprotocol = \"{}\"\n{key_line}",
        api.name()
    );
    let key = api_key.clone();
    let config = Config::from_toml(&text, "the URL", &move |name: &str| {
        (name == "HOURGLASS_PROBE_KEY")
            .then(|| key.clone())
            .flatten()
    })
    .map_err(|e| {
        e.to_string()
            .replace("the URL: upstreams.probe.base_url: ", "")
    })?;
    let mut dials = HashMap::new();
    if let Some(dial) = dial {
        dials.insert("probe".to_owned(), dial);
    }
    targets(&config, 0, url, models, options, dials)
}

/// Every upstream of a configuration, each with `models` or else the models the configuration
/// routes to it; `dials` replace the network for the upstreams they name.
pub fn targets_for_config(
    config: &Config,
    models: &[String],
    options: &Options,
    mut dials: HashMap<String, Arc<dyn Dial>>,
) -> Result<Vec<Target>, String> {
    let mut all = Vec::new();
    for (index, upstream) in config.upstreams.iter().enumerate() {
        let mut wanted: Vec<String> = models.to_vec();
        if wanted.is_empty() {
            for route in &config.models {
                for target in route.targets.iter().filter(|t| t.upstream == index) {
                    if !wanted.contains(&target.model) {
                        wanted.push(target.model.clone());
                    }
                }
            }
        }
        if wanted.is_empty() {
            return Err(format!(
                "upstream `{}` serves any model and the configuration routes none to it: name models with --model",
                upstream.name
            ));
        }
        let mut own = HashMap::new();
        if let Some(dial) = dials.remove(&upstream.name) {
            own.insert(upstream.name.clone(), dial);
        }
        all.extend(targets(
            config,
            index,
            &upstream.name,
            &wanted,
            options,
            own,
        )?);
    }
    Ok(all)
}

fn targets(
    config: &Config,
    index: usize,
    label: &str,
    models: &[String],
    options: &Options,
    dials: HashMap<String, Arc<dyn Dial>>,
) -> Result<Vec<Target>, String> {
    if models.is_empty() {
        return Err("name at least one model with --model".to_owned());
    }
    let upstream = &config.upstreams[index];
    let mut out = Vec::with_capacity(models.len());
    for model in models {
        // The policy the gateway would run this model with: configured, or the family's prior.
        let route = config
            .models
            .iter()
            .find(|r| {
                r.targets
                    .iter()
                    .any(|t| t.upstream == index && &t.model == model)
            })
            .cloned()
            .or_else(|| config.route(model).map(|r| r.into_owned()));
        let family = route.as_ref().map_or(Family::infer(model), |r| r.family);
        let scenario = route
            .as_ref()
            .map_or(family.default_scenario(), |r| r.scenario);
        let mut policy = route.as_ref().map_or_else(
            || hourglass_config::policy::prior(family, scenario),
            |r| r.policy,
        );
        policy.retry.max_attempts = 1;
        policy.stream_upstream = false;
        policy.heartbeat = None;
        if let Some(timeout) = options.timeout {
            policy.timeouts.total = timeout;
            policy.timeouts.attempt = timeout;
        }
        let mut probe_config = Config::single_upstream(&upstream.name, "http://unused.invalid/v1");
        probe_config.upstreams = vec![upstream.clone()];
        probe_config.models = vec![ModelRoute {
            name: model.clone(),
            family,
            scenario,
            targets: vec![RouteTarget {
                upstream: 0,
                model: model.clone(),
                tier: 0,
                weight: 1,
            }],
            fallbacks: Vec::new(),
            balance: hourglass_config::Balance::Ordered,
            hedge: hourglass_config::Hedge::Off,
            policy,
            sources: Vec::new().into(),
            configured: true,
        }];
        let engine = Engine::new(probe_config, dials.clone())?;
        // Asked for, or what the upstream speaks (OpenAI's when it speaks both).
        let api = options
            .api
            .unwrap_or(if upstream.speaks(WireFormat::OpenAi) {
                WireFormat::OpenAi
            } else {
                WireFormat::Anthropic
            });
        out.push(Target {
            endpoint: label.to_owned(),
            base_url: upstream.base_url.to_string(),
            model: model.clone(),
            policy,
            family,
            api,
            engine,
        });
    }
    Ok(out)
}

/// One call's measurements (milliseconds).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Whether the call succeeded end to end.
    pub ok: bool,
    /// The hourglass error code of a failure (`first_byte_timeout`, `connect_refused`, …; see
    /// docs/errors.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    /// Where a failure happened (`connect`, `write`, `first_byte`, `first_token`, `body`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The HTTP status, when one came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Connecting, when the call dialed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<f64>,
    /// Written → headers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_byte_ms: Option<f64>,
    /// Written → first token (streams).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<f64>,
    /// The longest gap between tokens (streams).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_gap_ms: Option<f64>,
    /// Start → last byte (or failure).
    pub total_ms: f64,
    /// `usage.completion_tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    /// Output tokens per second (see the module's definitions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<f64>,
    /// Every gap between tokens (not saved: pooled into the report's `gap` summary).
    #[serde(skip)]
    pub gaps_ms: Vec<f64>,
}

/// The verdict of one endpoint and model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Fast and reliable with room to spare.
    Excellent,
    /// Works within its timeouts.
    Good,
    /// Fails too often or runs into its timeouts.
    Poor,
}

/// What one endpoint and model did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetReport {
    /// The endpoint's label.
    pub endpoint: String,
    /// Its base URL.
    pub base_url: String,
    /// The model.
    pub model: String,
    /// The model's family.
    pub family: String,
    /// Whether the calls streamed.
    pub stream: bool,
    /// Calls made.
    pub requests: usize,
    /// Calls that succeeded.
    pub ok: usize,
    /// `ok / requests`.
    pub success_rate: f64,
    /// Timeouts by the phase where they fired.
    pub timeouts: BTreeMap<String, usize>,
    /// Failures by error code.
    pub errors: BTreeMap<String, usize>,
    /// Latency summaries (ms) by metric: connect, first_byte, first_token, gap, max_gap, total.
    pub latency_ms: BTreeMap<String, Summary>,
    /// Output tokens per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<Summary>,
    /// The timeouts the calls ran with (ms), for `tune` and the verdict.
    pub timeouts_ms: BTreeMap<String, f64>,
    /// The verdict.
    pub verdict: Verdict,
    /// The thresholds behind it, in words.
    pub thresholds: String,
    /// Every call.
    pub samples: Vec<Sample>,
}

/// The results of one probe run: what `--json` prints and `--save` writes for `tune`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The file format's version.
    pub version: u32,
    /// One entry per endpoint and model.
    pub results: Vec<TargetReport>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

/// The endpoint, path and body of one call in `api`.
fn request_for(api: WireFormat, model: &str, options: &Options) -> (Endpoint, &'static str, Bytes) {
    let mut body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": options.prompt}],
        "max_tokens": options.max_tokens,
    });
    if options.stream {
        body["stream"] = true.into();
        if api == WireFormat::OpenAi {
            body["stream_options"] = serde_json::json!({"include_usage": true});
        }
    }
    let (endpoint, path) = match api {
        WireFormat::OpenAi => (Endpoint::Chat, "/chat/completions"),
        WireFormat::Anthropic => (Endpoint::Messages, "/messages"),
    };
    (endpoint, path, Bytes::from(body.to_string()))
}

/// Makes one call and measures it.
pub async fn measure(target: &Target, options: &Options) -> Sample {
    let start = Instant::now();
    let (endpoint, path, body) = request_for(target.api, &target.model, options);
    let mut request = match CallRequest::new(endpoint, path, body) {
        Ok(request) => request,
        Err(_) => {
            return Sample {
                code: Some(ErrorCode::BadRequest),
                ..Sample::default()
            };
        }
    };
    // The engine adds `anthropic-version` for Anthropic's API when the headers do not say one.
    request.headers = options.headers.clone();
    let response = match target.engine.call(request).await {
        Ok(response) => response,
        Err(error) => {
            let last = error.trail.last();
            return Sample {
                code: Some(error.code),
                phase: last.map(|a| a.phase),
                status: last.and_then(|a| a.status),
                total_ms: ms(start.elapsed()),
                ..Sample::default()
            };
        }
    };
    let mut sample = Sample {
        ok: true,
        status: Some(response.status.as_u16()),
        ..Sample::default()
    };
    let timeline = response.timeline;
    let written = timeline.and_then(|t| t.written);
    if let Some(t) = timeline {
        if !t.reused {
            sample.connect_ms = t.connected.map(|c| ms(c - t.start));
        }
        if let (Some(w), Some(h)) = (t.written, t.headers) {
            sample.first_byte_ms = Some(ms(h - w));
        }
    }
    match response.body {
        ResponseBody::Full(body) => {
            sample.total_ms = ms(start.elapsed());
            sample.completion_tokens = completion_tokens(&body);
            sample.tokens_per_s = sample
                .completion_tokens
                .map(|n| n as f64 / (sample.total_ms / 1000.0).max(1e-6));
        }
        ResponseBody::Stream(mut stream) => {
            let first = timeline.and_then(|t| t.first_token);
            if let (Some(w), Some(f)) = (written, first) {
                sample.first_token_ms = Some(ms(f - w));
            }
            let mut scanner = Scanner::new();
            let mut last_token = first;
            let mut seen_first = false;
            let mut failure: Option<ErrorCode> = None;
            let mut ended = false;
            while let Some(frame) = stream.frame().await {
                let now = Instant::now();
                // Failures after commit arrive in band, as an SSE error event.
                let Ok(frame) = frame;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let result = scanner.push(&data, |event| {
                    match endpoint.protocol().classify(endpoint, event) {
                        Signal::Content | Signal::Finish { content: true } => {
                            if seen_first {
                                if let Some(previous) = last_token {
                                    sample
                                        .gaps_ms
                                        .push(ms(now.saturating_duration_since(previous)));
                                }
                                last_token = Some(now);
                            }
                            seen_first = true;
                        }
                        Signal::End => ended = true,
                        // hourglass's own error event names its code; an upstream's own error
                        // event is an error status in the stream.
                        Signal::UpstreamError(_) => {
                            failure = Some(
                                event
                                    .data
                                    .as_deref()
                                    .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
                                    .and_then(|v| {
                                        v["error"]["code"].as_str().and_then(ErrorCode::from_name)
                                    })
                                    .unwrap_or(ErrorCode::UpstreamStatus),
                            );
                        }
                        Signal::Malformed(_) => failure = Some(ErrorCode::UpstreamMalformed),
                        Signal::Nothing | Signal::Finish { content: false } => {
                            if let Some(data) = event.data.as_deref()
                                && let Some(n) = completion_tokens(data.as_bytes())
                            {
                                sample.completion_tokens = Some(n);
                            }
                        }
                    }
                });
                if result.is_err() {
                    failure = Some(ErrorCode::UpstreamMalformed);
                }
                if failure.is_some() {
                    break;
                }
            }
            let end = Instant::now();
            sample.total_ms = ms(end - start);
            if failure.is_none() && !ended {
                failure = Some(ErrorCode::UpstreamCut);
            }
            if let Some(code) = failure {
                sample.ok = false;
                sample.phase = Some(Phase::Body);
                sample.code = Some(code);
            }
            sample.max_gap_ms = sample.gaps_ms.iter().copied().reduce(f64::max);
            if let (Some(n), Some(f)) = (sample.completion_tokens, first) {
                let decode = end.saturating_duration_since(f).as_secs_f64();
                if decode > 0.0 {
                    sample.tokens_per_s = Some(n as f64 / decode);
                }
            }
        }
    }
    sample
}

/// The answer's output tokens: OpenAI's `usage.completion_tokens`, Anthropic's
/// `usage.output_tokens` (in a whole message, and in a stream's `message_delta`).
fn completion_tokens(body: &[u8]) -> Option<u64> {
    // Most stream events carry no usage: skip the JSON parse unless the word is there.
    if memchr::memmem::find(body, b"completion_tokens").is_none()
        && memchr::memmem::find(body, b"output_tokens").is_none()
    {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let usage = &value["usage"];
    usage["completion_tokens"]
        .as_u64()
        .or_else(|| usage["output_tokens"].as_u64())
}

/// Probes one target `options.n` times, `options.concurrency` at once; `tick` is called after
/// every call (the progress bar).
pub async fn probe(target: &Target, options: &Options, tick: &(dyn Fn() + Sync)) -> TargetReport {
    let next = AtomicUsize::new(0);
    let workers = options.concurrency.clamp(1, options.n.max(1));
    let results = std::sync::Mutex::new(Vec::with_capacity(options.n));
    let worker = || async {
        while next.fetch_add(1, Ordering::Relaxed) < options.n {
            let sample = measure(target, options).await;
            results.lock().expect("never poisoned").push(sample);
            tick();
        }
    };
    let mut all = Vec::with_capacity(workers);
    for _ in 0..workers {
        all.push(worker());
    }
    join_all(all).await;
    let samples = results.into_inner().expect("never poisoned");
    report(target, options, samples)
}

/// Runs futures concurrently on the current task (the probe has no need for threads).
async fn join_all<F: std::future::Future<Output = ()>>(futures: Vec<F>) {
    let mut futures: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        futures.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if futures.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

/// A failure's key in a report's `errors`: its code, or `http_NNN` for an error status (503 and
/// 404 call for different fixes), or `unknown`.
pub fn error_key(code: Option<ErrorCode>, status: Option<u16>) -> String {
    match (code, status) {
        (Some(ErrorCode::UpstreamStatus), Some(status)) => format!("http_{status}"),
        (Some(code), _) => code.name().to_owned(),
        (None, _) => "unknown".to_owned(),
    }
}

fn report(target: &Target, options: &Options, samples: Vec<Sample>) -> TargetReport {
    let requests = samples.len();
    let ok = samples.iter().filter(|s| s.ok).count();
    let mut timeouts = BTreeMap::new();
    let mut errors = BTreeMap::new();
    for s in samples.iter().filter(|s| !s.ok) {
        *errors.entry(error_key(s.code, s.status)).or_insert(0) += 1;
        if s.code.is_some_and(ErrorCode::is_timeout) {
            let phase = s.phase.map_or("unknown", Phase::name);
            *timeouts.entry(phase.to_owned()).or_insert(0) += 1;
        }
    }
    let collect = |f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<f64> {
        samples.iter().filter(|s| s.ok).filter_map(f).collect()
    };
    let mut latency_ms = BTreeMap::new();
    let metrics: [(&str, Vec<f64>); 5] = [
        (
            "connect",
            samples.iter().filter_map(|s| s.connect_ms).collect(),
        ),
        ("first_byte", collect(&|s| s.first_byte_ms)),
        ("first_token", collect(&|s| s.first_token_ms)),
        ("max_gap", collect(&|s| s.max_gap_ms)),
        ("total", collect(&|s| Some(s.total_ms))),
    ];
    for (name, values) in metrics {
        if let Some(summary) = Summary::of(&values) {
            latency_ms.insert(name.to_owned(), summary);
        }
    }
    let gaps: Vec<f64> = samples
        .iter()
        .filter(|s| s.ok)
        .flat_map(|s| s.gaps_ms.iter().copied())
        .collect();
    if let Some(summary) = Summary::of(&gaps) {
        latency_ms.insert("gap".to_owned(), summary);
    }
    let tokens_per_s = Summary::of(&collect(&|s| s.tokens_per_s));
    let t = &target.policy.timeouts;
    let timeouts_ms: BTreeMap<String, f64> = [
        ("connect", t.connect),
        ("write", t.write),
        ("first_byte", t.first_byte),
        ("first_token", t.first_token),
        ("idle", t.idle),
        ("attempt", t.attempt),
        ("total", t.total),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), ms(v)))
    .collect();
    let success_rate = if requests == 0 {
        0.0
    } else {
        ok as f64 / requests as f64
    };
    let (verdict, thresholds) = verdict(success_rate, &latency_ms, &timeouts_ms, options.stream);
    TargetReport {
        endpoint: target.endpoint.clone(),
        base_url: target.base_url.clone(),
        model: target.model.clone(),
        family: target.family.name().to_owned(),
        stream: options.stream,
        requests,
        ok,
        success_rate,
        timeouts,
        errors,
        latency_ms,
        tokens_per_s,
        timeouts_ms,
        verdict,
        thresholds,
        samples,
    }
}

/// The verdict: the success rate, and how the p99 of the wait that matters (first token for a
/// stream, first byte for a whole answer) compares with the timeout that guards it. A p99 above
/// half the timeout leaves too little margin for a slow day; above the timeout, calls fail.
pub fn verdict(
    success_rate: f64,
    latency_ms: &BTreeMap<String, Summary>,
    timeouts_ms: &BTreeMap<String, f64>,
    stream: bool,
) -> (Verdict, String) {
    let phase = if stream { "first_token" } else { "first_byte" };
    let limit = timeouts_ms.get(phase).copied().unwrap_or(f64::INFINITY);
    let p99 = latency_ms.get(phase).map_or(f64::INFINITY, |s| s.p99);
    let thresholds = format!(
        "excellent: success ≥ 99% and p99 {phase} ≤ {} (half of timeouts.{phase}); good: success ≥ 95% and p99 {phase} ≤ {}; else poor",
        human_ms(limit / 2.0),
        human_ms(limit)
    );
    let verdict = if success_rate >= 0.99 && p99 <= limit / 2.0 {
        Verdict::Excellent
    } else if success_rate >= 0.95 && p99 <= limit {
        Verdict::Good
    } else {
        Verdict::Poor
    };
    (verdict, thresholds)
}

/// A duration in milliseconds, written for people: `850ms`, `2.4s`.
pub fn human_ms(value: f64) -> String {
    if !value.is_finite() {
        "-".to_owned()
    } else if value < 1000.0 {
        format!("{value:.0}ms")
    } else if value < 100_000.0 {
        format!("{:.2}s", value / 1000.0)
    } else {
        format!("{:.0}s", value / 1000.0)
    }
}

/// The side-by-side table: one column per endpoint and model.
pub fn render_table(report: &Report) -> String {
    let columns: Vec<&TargetReport> = report.results.iter().collect();
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, f: &dyn Fn(&TargetReport) -> String| {
        rows.push((name.to_owned(), columns.iter().map(|r| f(r)).collect()));
    };
    row("endpoint", &|r| r.endpoint.clone());
    row("model", &|r| r.model.clone());
    row("mode", &|r| {
        if r.stream {
            "stream".into()
        } else {
            "whole".into()
        }
    });
    row("requests", &|r| r.requests.to_string());
    row("success", &|r| format!("{:.1}%", r.success_rate * 100.0));
    row("timeouts", &|r| {
        if r.timeouts.is_empty() {
            "0".into()
        } else {
            r.timeouts
                .iter()
                .map(|(p, n)| format!("{p}:{n}"))
                .collect::<Vec<_>>()
                .join(" ")
        }
    });
    row("errors", &|r| {
        if r.errors.is_empty() {
            "-".into()
        } else {
            r.errors
                .iter()
                .map(|(c, n)| format!("{c}:{n}"))
                .collect::<Vec<_>>()
                .join(" ")
        }
    });
    for metric in ["connect", "first_byte", "first_token", "gap", "total"] {
        for (p, pick) in [("p50", 0), ("p90", 1), ("p99", 2)] {
            row(&format!("{metric} {p}"), &|r| {
                r.latency_ms
                    .get(metric)
                    .map_or("-".into(), |s| human_ms([s.p50, s.p90, s.p99][pick]))
            });
        }
    }
    row("tokens/s p50", &|r| {
        r.tokens_per_s
            .map_or("-".into(), |s| format!("{:.1}", s.p50))
    });
    row("verdict", &|r| format!("{:?}", r.verdict).to_lowercase());
    let name_width = rows
        .iter()
        .map(|(n, _)| n.chars().count())
        .max()
        .unwrap_or(0);
    let widths: Vec<usize> = (0..columns.len())
        .map(|c| {
            rows.iter()
                .map(|(_, v)| v[c].chars().count())
                .max()
                .unwrap_or(0)
                .max(6)
        })
        .collect();
    let mut out = String::new();
    for (name, values) in &rows {
        out.push_str(&format!("{name:<name_width$}"));
        for (value, width) in values.iter().zip(&widths) {
            out.push_str(&format!("  {value:>width$}"));
        }
        out.push('\n');
    }
    let mut seen = Vec::new();
    for r in &report.results {
        if !seen.contains(&&r.thresholds) {
            out.push_str(&format!(
                "\nverdict thresholds ({}): {}",
                r.model, r.thresholds
            ));
            seen.push(&r.thresholds);
        }
    }
    out.push('\n');
    out
}

/// One CSV row per endpoint and model.
pub fn render_csv(report: &Report) -> String {
    let metrics = ["connect", "first_byte", "first_token", "gap", "total"];
    let mut header = vec![
        "endpoint",
        "base_url",
        "model",
        "stream",
        "requests",
        "ok",
        "success_rate",
        "timeouts",
        "errors",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    for m in metrics {
        for p in ["p50", "p90", "p99"] {
            header.push(format!("{m}_{p}_ms"));
        }
    }
    header.extend(["tokens_per_s_p50".to_owned(), "verdict".to_owned()]);
    let mut out = header.join(",");
    out.push('\n');
    let field = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    for r in &report.results {
        let mut cells = vec![
            field(&r.endpoint),
            field(&r.base_url),
            field(&r.model),
            r.stream.to_string(),
            r.requests.to_string(),
            r.ok.to_string(),
            format!("{:.4}", r.success_rate),
            field(
                &r.timeouts
                    .iter()
                    .map(|(p, n)| format!("{p}:{n}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            field(
                &r.errors
                    .iter()
                    .map(|(c, n)| format!("{c}:{n}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        ];
        for m in metrics {
            let s = r.latency_ms.get(m);
            for pick in 0..3 {
                cells.push(s.map_or(String::new(), |s| {
                    format!("{:.1}", [s.p50, s.p90, s.p99][pick])
                }));
            }
        }
        cells.push(
            r.tokens_per_s
                .map_or(String::new(), |s| format!("{:.1}", s.p50)),
        );
        cells.push(format!("{:?}", r.verdict).to_lowercase());
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}
