//! `tune` closes the loop: a simulator is probed, the derived TOML is loaded into an engine in
//! front of a fresh simulator, and that engine must pass a normal workload with no false timeouts
//! while catching injected stalls and hangs far sooner than the built-in priors would.

#![allow(clippy::unwrap_used)] // test helpers may panic on what a test does not expect

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hourglass_engine::error::FailureKind;
use hourglass_engine::{
    BoxFuture, BoxIo, CallRequest, Dial, DialFn, Endpoint, Engine, ResponseBody,
};
use hourglass_sim::{Server, ServerConfig};
use hourglass_toolkit::probe::{self, Options, Report};
use hourglass_toolkit::tune::{self, TuneOptions};
use http_body_util::BodyExt;

fn memory_dial(seed: u64) -> Arc<dyn Dial> {
    let server = Arc::new(Server::in_memory(ServerConfig {
        name: "sim".to_owned(),
        seed,
        ..ServerConfig::default()
    }));
    Arc::new(DialFn(move || -> BoxFuture<Result<BoxIo, FailureKind>> {
        let server = server.clone();
        Box::pin(async move { Ok(Box::new(server.connect_in_memory().await) as BoxIo) })
    }))
}

async fn measured(model: &str) -> Report {
    let mut results = Vec::new();
    for stream in [true, false] {
        let options = Options {
            n: 100,
            concurrency: 8,
            stream,
            max_tokens: 64,
            prompt: "hi".to_owned(),
            headers: http::HeaderMap::new(),
            timeout: None,
            api: None,
        };
        let targets = probe::targets_for_url(
            "http://sim.invalid/v1",
            None,
            &[model.to_owned()],
            &options,
            Some(memory_dial(1)),
        )
        .unwrap();
        results.push(probe::probe(&targets[0], &options, &|| {}).await);
    }
    Report {
        version: probe::RESULTS_VERSION,
        results,
    }
}

fn call(model: &str, stream: bool, fault: Option<&str>) -> CallRequest {
    let body = serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream, "max_tokens": 64});
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

/// Reads a call to its end: Ok when it completed, else the error code.
async fn outcome(engine: &Arc<Engine>, request: CallRequest) -> Result<(), String> {
    match engine.call(request).await {
        Err(e) => Err(e.code.to_string()),
        Ok(response) => match response.body {
            ResponseBody::Full(_) => Ok(()),
            ResponseBody::Stream(mut s) => {
                let mut text = Vec::new();
                while let Some(Ok(frame)) = s.frame().await {
                    if let Ok(data) = frame.into_data() {
                        text.extend_from_slice(&data);
                    }
                }
                let text = String::from_utf8(text).unwrap();
                if text.contains("\"error\"") {
                    Err(text)
                } else {
                    Ok(())
                }
            }
        },
    }
}

#[tokio::test(start_paused = true)]
async fn tuned_timeouts_pass_a_normal_workload_and_catch_stalls_quickly() {
    let report = measured("gpt-4o-mini").await;
    // Longer answers than the probe's 64 tokens need a longer whole-answer wait.
    let longer = tune::from_report(
        &report,
        &TuneOptions {
            output_tokens: Some(1000),
            ..TuneOptions::default()
        },
    );
    let tunings = tune::from_report(&report, &TuneOptions::default());
    assert!(longer[0].policy.timeouts.first_byte > tunings[0].policy.timeouts.first_byte * 4);
    assert_eq!(tunings.len(), 1);
    let t = &tunings[0];
    let prior = hourglass_config::policy::prior(
        hourglass_config::Family::Chat,
        hourglass_config::Scenario::Content,
    );
    // Every value carries its rule, and the data made them much tighter than the priors.
    for key in [
        "timeouts.connect",
        "timeouts.first_token",
        "timeouts.first_byte",
        "timeouts.idle",
        "timeouts.total",
        "retry.max_attempts",
        "hedge",
    ] {
        let d = t
            .derived
            .iter()
            .find(|d| d.key == key)
            .unwrap_or_else(|| panic!("{key}"));
        assert!(
            !d.rule.contains("prior") || key.starts_with("retry"),
            "{key}: {}",
            d.rule
        );
    }
    assert!(
        t.policy.timeouts.idle < prior.timeouts.idle / 3,
        "{:?}",
        t.policy.timeouts
    );
    assert!(
        t.policy.timeouts.first_token < prior.timeouts.first_token / 3,
        "{:?}",
        t.policy.timeouts
    );

    // Fed back into the gateway's engine, in front of a fresh simulator.
    let toml = tune::render_toml(&tunings);
    let text = format!("[upstreams.sim]\nbase_url = \"http://sim.invalid/v1\"\n{toml}");
    let config = hourglass_config::Config::from_toml(&text, "tuned.toml", &|_| None)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let route = config.route("gpt-4o-mini").unwrap();
    assert_eq!(route.policy.timeouts, t.policy.timeouts);
    let dials: HashMap<String, Arc<dyn Dial>> = [("sim".to_owned(), memory_dial(99))].into();
    let engine = Engine::new(config, dials).unwrap();

    // No false timeouts: 300 calls, streamed and whole, all complete on their first try.
    let mut failures = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..300 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            outcome(&engine, call("gpt-4o-mini", i % 2 == 0, None)).await
        }));
    }
    for task in tasks {
        if let Err(e) = task.await.unwrap() {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{failures:?}");

    // A stall mid-stream is caught at the tuned idle, not the prior's 30 s.
    let start = tokio::time::Instant::now();
    let stalled = outcome(
        &engine,
        call("gpt-4o-mini", true, Some("stall;after_chunks=3;for=600s")),
    )
    .await;
    assert!(stalled.unwrap_err().contains("idle_timeout"));
    let took = start.elapsed();
    assert!(
        took < t.policy.timeouts.idle + Duration::from_secs(3),
        "{took:?} vs idle {:?}",
        t.policy.timeouts.idle
    );

    // A silent upstream is caught at the tuned first_token on each try, then the call fails.
    let start = tokio::time::Instant::now();
    let hung = outcome(
        &engine,
        call("gpt-4o-mini", true, Some("first_token;after=600s")),
    )
    .await;
    assert!(hung.is_err());
    let per_try = t.policy.timeouts.first_token;
    assert!(
        start.elapsed() <= per_try * 3 + Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() < prior.timeouts.first_token,
        "faster than one prior first_token"
    );
}

#[test]
fn a_proxy_shorter_than_the_models_silence_calls_for_heartbeats() {
    let tuned = tune::from_priors(
        "o3",
        &TuneOptions {
            scenario: None,
            middlebox: Some(Duration::from_secs(60)),
            output_tokens: None,
        },
    );
    assert_eq!(tuned.policy.heartbeat, Some(Duration::from_secs(15)));
    assert!(
        tuned.warnings[0].contains("cuts silence at 60s"),
        "{:?}",
        tuned.warnings
    );
    // A chat answer that may take longer than the proxy holds a silent connection: the
    // gateway's timers stay, and the warning says how to get such an answer through.
    let chat = tune::from_priors(
        "gpt-4o-mini",
        &TuneOptions {
            scenario: Some(hourglass_config::Scenario::Realtime),
            middlebox: Some(Duration::from_secs(10)),
            output_tokens: None,
        },
    );
    assert_eq!(chat.policy.timeouts.first_byte, Duration::from_secs(30));
    assert!(
        chat.warnings
            .iter()
            .any(|w| w.contains("non-streamed answer") && w.contains("x-hourglass-heartbeat")),
        "{:?}",
        chat.warnings
    );
    // Beyond undici's 300 s defaults, the Node settings raise them.
    let long = tune::from_priors("o3", &TuneOptions::default());
    let mut long = long;
    long.policy.timeouts.first_byte = Duration::from_secs(400);
    assert!(tune::render_node(&long).contains("headersTimeout: 400000"));
    assert!(tune::render_python(&long).contains("httpx.Timeout(400.0, connect=5.0"));
}

/// The reported bug: a reasoning model behind a 60 s proxy was given heartbeats to survive its
/// 150 s wait for the first token, and then its attempt and first_byte were capped at 59 s,
/// failing every call the heartbeats were meant to save.
#[test]
fn heartbeats_recommended_for_a_proxy_are_not_undone_by_a_cap() {
    let tuned = tune::from_priors(
        "o1-mini",
        &TuneOptions {
            middlebox: Some(Duration::from_secs(60)),
            ..TuneOptions::default()
        },
    );
    let t = &tuned.policy.timeouts;
    assert_eq!(tuned.policy.heartbeat, Some(Duration::from_secs(15)));
    assert_eq!(t.first_token, Duration::from_secs(150));
    assert!(t.attempt >= t.first_token, "attempt {:?}", t.attempt);
    assert!(
        t.first_byte >= Duration::from_secs(150),
        "first_byte {:?}",
        t.first_byte
    );
    assert_eq!(
        tune::contradictions(&tuned, Some(Duration::from_secs(60))),
        Vec::<String>::new()
    );
}

/// Samples of one model: `n` calls whose first token, whole answer and longest gap are the
/// given seconds (spread ±20 %), streamed or not.
fn synthetic(
    model: &str,
    stream: bool,
    first_token: f64,
    whole: f64,
    gap: f64,
) -> probe::TargetReport {
    let samples: Vec<probe::Sample> = (0..40)
        .map(|i| {
            let spread = 0.8 + 0.4 * (i as f64 / 39.0);
            probe::Sample {
                ok: true,
                connect_ms: Some(40.0 * spread),
                first_byte_ms: Some(if stream {
                    300.0
                } else {
                    whole * 1000.0 * spread
                }),
                first_token_ms: stream.then_some(first_token * 1000.0 * spread),
                max_gap_ms: stream.then_some(gap * 1000.0 * spread),
                total_ms: whole * 1000.0 * spread,
                completion_tokens: Some(200),
                tokens_per_s: Some(40.0),
                ..probe::Sample::default()
            }
        })
        .collect();
    probe::TargetReport {
        endpoint: "east".to_owned(),
        base_url: "http://x.invalid/v1".to_owned(),
        model: model.to_owned(),
        family: String::new(),
        stream,
        requests: samples.len(),
        ok: samples.len(),
        success_rate: 1.0,
        timeouts: Default::default(),
        errors: Default::default(),
        latency_ms: Default::default(),
        tokens_per_s: None,
        timeouts_ms: Default::default(),
        verdict: probe::Verdict::Good,
        thresholds: String::new(),
        samples,
    }
}

/// For every family × scenario × proxy limit, from priors and from measured data, no timer
/// `tune` prints cuts a call another allows (given the heartbeat it recommends), and the TOML
/// it prints loads into the same policy.
#[test]
fn every_tuning_is_consistent_with_itself() {
    let models = [
        ("gpt-4o-mini", (0.6, 4.0, 0.3)),
        ("o3", (70.0, 110.0, 3.0)),
        ("gpt-image-1", (25.0, 30.0, 1.0)),
        ("text-embedding-3-small", (0.2, 0.3, 0.1)),
    ];
    let proxies = [
        None,
        Some(5),
        Some(10),
        Some(29),
        Some(30),
        Some(60),
        Some(100),
        Some(230),
        Some(600),
    ];
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (model, (first_token, whole, gap)) in models {
        let report = Report {
            version: probe::RESULTS_VERSION,
            results: vec![
                synthetic(model, true, first_token, whole, gap),
                synthetic(model, false, first_token, whole, gap),
            ],
        };
        for scenario in hourglass_config::Scenario::ALL {
            for proxy in proxies {
                let options = TuneOptions {
                    scenario: Some(scenario),
                    middlebox: proxy.map(Duration::from_secs),
                    output_tokens: None,
                };
                let mut tunings = vec![tune::from_priors(model, &options)];
                tunings.extend(tune::from_report(&report, &options));
                for tuned in &tunings {
                    checked += 1;
                    let label = format!(
                        "{model} {} proxy {proxy:?}s ({})",
                        scenario.name(),
                        tuned.basis
                    );
                    for problem in tune::contradictions(tuned, options.middlebox) {
                        wrong.push(format!("{label}: {problem}"));
                    }
                    if tuned.warnings.iter().any(|w| w.contains("inconsistent")) {
                        wrong.push(format!("{label}: {:?}", tuned.warnings));
                    }
                    let mut served = tuned.clone();
                    served.upstreams = vec!["east".to_owned()];
                    let toml = format!(
                        "[upstreams.east]\nbase_url = \"http://x.invalid/v1\"\n{}",
                        tune::render_toml(std::slice::from_ref(&served))
                    );
                    match hourglass_config::Config::from_toml(&toml, "tuned.toml", &|_| None) {
                        Ok(config) => {
                            let loaded = &config.route(model).unwrap().policy;
                            if loaded.timeouts != tuned.policy.timeouts
                                || loaded.heartbeat != tuned.policy.heartbeat
                            {
                                wrong.push(format!("{label}: the TOML loads into another policy"));
                            }
                        }
                        Err(e) => wrong.push(format!("{label}: config refused the TOML: {e}")),
                    }
                }
            }
        }
    }
    assert_eq!(checked, 4 * 4 * 9 * 2);
    assert!(
        wrong.is_empty(),
        "{} inconsistent:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
