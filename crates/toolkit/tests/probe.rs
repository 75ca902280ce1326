//! `probe` against in-memory simulators on tokio's paused clock: it must see the faults and the
//! latencies the simulator injected, in the phases where they happened.

#![allow(clippy::unwrap_used)] // test helpers may panic on what a test does not expect

use std::collections::HashMap;
use std::sync::Arc;

use hourglass_engine::error::FailureKind;
use hourglass_engine::{BoxFuture, BoxIo, Dial, DialFn};
use hourglass_sim::{Server, ServerConfig};
use hourglass_toolkit::probe::{self, Options, Report, Verdict};

fn memory_dial(name: &str) -> Arc<dyn Dial> {
    let server = Arc::new(Server::in_memory(ServerConfig {
        name: name.to_owned(),
        ..ServerConfig::default()
    }));
    Arc::new(DialFn(move || -> BoxFuture<Result<BoxIo, FailureKind>> {
        let server = server.clone();
        Box::pin(async move { Ok(Box::new(server.connect_in_memory().await) as BoxIo) })
    }))
}

fn options(n: usize, stream: bool, fault: Option<&str>) -> Options {
    let mut headers = http::HeaderMap::new();
    if let Some(fault) = fault {
        headers.insert("x-sim-fault", fault.parse().unwrap());
    }
    Options {
        n,
        concurrency: 8,
        stream,
        max_tokens: 64,
        prompt: "hi".to_owned(),
        headers,
        timeout: None,
        api: None,
    }
}

async fn run(model: &str, options: &Options) -> probe::TargetReport {
    let targets = probe::targets_for_url(
        "http://sim.invalid/v1",
        None,
        &[model.to_owned()],
        options,
        Some(memory_dial("sim")),
    )
    .unwrap();
    probe::probe(&targets[0], options, &|| {}).await
}

#[tokio::test(start_paused = true)]
async fn probe_sees_injected_hangs_as_first_byte_timeouts_and_measures_the_stream() {
    let options = options(200, true, Some("hang;p=0.25"));
    let r = run("gpt-4o-mini", &options).await;
    assert_eq!(r.requests, 200);
    let timed_out = r.timeouts.get("first_byte").copied().unwrap_or(0);
    assert!((30..=70).contains(&timed_out), "{:?}", r.timeouts);
    assert_eq!(r.ok + timed_out, 200, "{:?}", r.errors);
    // A stream's headers wait is capped by first_token (20 s for chat): every hang ends there.
    for s in r.samples.iter().filter(|s| !s.ok) {
        assert!((s.total_ms - 20_000.0).abs() < 2.0, "{s:?}");
    }
    // gpt-4o-mini in the simulator: first token median 0.45 s, 90 tokens/s (a gap of ~11 ms).
    let ft = r.latency_ms["first_token"];
    assert!((300.0..=650.0).contains(&ft.p50), "{ft:?}");
    assert!(ft.p99 <= 3000.0, "{ft:?}");
    let gap = r.latency_ms["gap"];
    assert!((5.0..=20.0).contains(&gap.p50), "{gap:?}");
    let tps = r.tokens_per_s.unwrap();
    assert!((50.0..=150.0).contains(&tps.p50), "{tps:?}");
    assert!(
        r.samples
            .iter()
            .filter(|s| s.ok)
            .all(|s| s.completion_tokens.is_some_and(|n| (1..=64).contains(&n))),
        "usage is read from the last chunk, capped by max_tokens"
    );
    assert_eq!(r.verdict, Verdict::Poor, "75% success is poor");
}

#[tokio::test(start_paused = true)]
async fn probe_sees_a_late_first_token_and_a_stall_mid_stream() {
    let r = run(
        "gpt-4o-mini",
        &options(20, true, Some("first_token;after=3s")),
    )
    .await;
    assert_eq!(r.ok, 20);
    let ft = r.latency_ms["first_token"];
    assert!((3000.0..=3100.0).contains(&ft.p50), "{ft:?}");
    assert!(
        r.latency_ms["first_byte"].p99 < 50.0,
        "headers come at once"
    );
    assert_eq!(r.verdict, Verdict::Excellent);

    let r = run(
        "gpt-4o-mini",
        &options(10, true, Some("stall;after_chunks=3;for=90s")),
    )
    .await;
    assert_eq!(r.ok, 0);
    assert_eq!(r.errors.get("idle_timeout"), Some(&10), "{:?}", r.errors);
    assert_eq!(r.timeouts.get("body"), Some(&10));
    for s in &r.samples {
        // Three tokens, then 30 s of silence (chat's idle timeout).
        assert!(s.total_ms > 30_000.0 && s.total_ms < 32_000.0, "{s:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn probe_measures_whole_answers_and_counts_error_statuses() {
    let r = run("gpt-4o-mini", &options(20, false, None)).await;
    assert_eq!(r.ok, 20);
    assert!(!r.latency_ms.contains_key("first_token"));
    let fb = r.latency_ms["first_byte"];
    // A whole answer's headers come when the answer is done: first token + 63 gaps of ~11 ms.
    assert!((700.0..=2500.0).contains(&fb.p50), "{fb:?}");
    assert!(r.latency_ms["connect"].n >= 1);

    let r = run("gpt-4o-mini", &options(10, false, Some("status;code=503"))).await;
    assert_eq!(r.errors.get("http_503"), Some(&10), "{:?}", r.errors);
    assert!(r.timeouts.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_configuration_probes_every_upstream_side_by_side() {
    let text = "[upstreams.east]\nbase_url = \"http://east.invalid/v1\"\n\
                [upstreams.west]\nbase_url = \"http://west.invalid/v1\"\n\
                [models.fast]\ntargets = [\"east:gpt-4o-mini\", \"west:gpt-4o-mini\"]\n";
    let config = hourglass_config::Config::from_toml(text, "test.toml", &|_| None).unwrap();
    let dials: HashMap<String, Arc<dyn Dial>> = [
        ("east".to_owned(), memory_dial("east")),
        ("west".to_owned(), memory_dial("west")),
    ]
    .into();
    let options = options(10, true, Some("delay_headers;for=2s;upstream=west"));
    let targets = probe::targets_for_config(&config, &[], &options, dials).unwrap();
    assert_eq!(targets.len(), 2);
    let mut results = Vec::new();
    for t in &targets {
        results.push(probe::probe(t, &options, &|| {}).await);
    }
    let report = Report {
        version: probe::RESULTS_VERSION,
        results,
    };
    let east = &report.results[0];
    let west = &report.results[1];
    assert_eq!(
        (east.endpoint.as_str(), west.endpoint.as_str()),
        ("east", "west")
    );
    assert!(
        east.latency_ms
            .get("first_byte")
            .is_some_and(|s| s.p50 < 50.0),
        "{:?}",
        east.errors
    );
    assert!(
        west.latency_ms
            .get("first_byte")
            .is_some_and(|s| (2000.0..=2050.0).contains(&s.p50)),
        "{:?} {:?}",
        west.latency_ms,
        west.errors
    );

    let table = probe::render_table(&report);
    let first = table.lines().next().unwrap();
    assert!(first.contains("east") && first.contains("west"), "{table}");
    assert!(table.contains("verdict thresholds"), "{table}");
    let csv = probe::render_csv(&report);
    assert_eq!(csv.lines().count(), 3, "{csv}");
    // The saved results read back (for `tune --from`).
    let json = serde_json::to_string(&report).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back.results[1].samples.len(), 10);
}

/// Anthropic's Messages API: the same phases, measured from Anthropic's own stream
/// (`message_start` … `content_block_delta` … `message_stop`), its usage (`output_tokens`) and
/// its error shape; the simulator speaks it.
#[tokio::test(start_paused = true)]
async fn probe_measures_anthropics_messages_api_streamed_and_whole() {
    let mut streamed = options(40, true, None);
    streamed.api = Some(hourglass_config::WireFormat::Anthropic);
    let r = run("claude-4-sonnet", &streamed).await;
    assert_eq!(r.ok, 40, "{:?}", r.errors);
    let ft = r.latency_ms["first_token"];
    assert!(
        ft.p50 > 100.0,
        "a first token measured from text_delta: {ft:?}"
    );
    assert!(r.latency_ms["gap"].p50 > 0.0);
    assert!(
        r.samples
            .iter()
            .all(|s| s.completion_tokens.is_some_and(|n| (1..=64).contains(&n))),
        "output_tokens read from message_delta"
    );
    let mut whole = options(10, false, None);
    whole.api = Some(hourglass_config::WireFormat::Anthropic);
    let r = run("claude-4-sonnet", &whole).await;
    assert_eq!(r.ok, 10, "{:?}", r.errors);
    assert!(r.samples.iter().all(|s| s.completion_tokens.is_some()));
    // Overloaded, in Anthropic's shape: counted by status, a poor verdict.
    let mut overloaded = options(5, true, Some("status;code=529"));
    overloaded.api = Some(hourglass_config::WireFormat::Anthropic);
    let r = run("claude-4-sonnet", &overloaded).await;
    assert_eq!(r.errors.get("http_529"), Some(&5), "{:?}", r.errors);
    assert_eq!(r.verdict, Verdict::Poor);
    // A URL on anthropic.com is Anthropic's API without being told.
    assert_eq!(
        probe::api_of_url("https://api.anthropic.com/v1"),
        hourglass_config::WireFormat::Anthropic
    );
    assert_eq!(
        probe::api_of_url("https://api.openai.com/v1"),
        hourglass_config::WireFormat::OpenAi
    );
}
