//! Which upstream, and when: a hanging upstream is ejected and readmitted through half-open,
//! latency-aware balancing shifts load to the faster upstream, and hedging cuts the tail.

use std::time::Duration;

use hourglass_engine::health::Event;

use crate::support::*;

#[tokio::test(start_paused = true)]
async fn a_hanging_upstream_is_ejected_then_readmitted_through_half_open() {
    let setup = setup_seeded(
        &["a", "b"],
        "[breaker]\nconsecutive_failures = 3\nejection = \"60s\"\nhalf_open_calls = 2\n\
         [models.m]\ntargets = [\"a:gpt-4o-mini\", \"b:gpt-4o-mini\"]\n",
    );
    // `a` hangs: each call waits out a's first_byte (capped by first_token, 20 s) and fails over.
    for _ in 0..3 {
        let outcome = call(&setup, chat("m", true, Some("hang;upstream=a"))).await;
        assert_eq!(outcome.ok().upstream, "b");
    }
    assert_eq!(setup.requests("a"), 3);
    // Ejected: the next calls go straight to b, and a sees no traffic.
    for _ in 0..10 {
        let outcome = call(&setup, chat("m", true, Some("hang;upstream=a"))).await;
        assert_eq!(outcome.trail(), [("b".to_owned(), "ok")]);
        assert!(
            outcome.elapsed < Duration::from_secs(5),
            "{:?}",
            outcome.elapsed
        );
    }
    assert_eq!(
        setup.requests("a"),
        3,
        "no call reached the ejected upstream"
    );
    let status = setup.engine.health().snapshot();
    assert_eq!(
        (status[0].upstream.as_str(), status[0].breaker),
        ("a", "open")
    );

    // a recovers; after the ejection, two trial calls readmit it.
    tokio::time::sleep(Duration::from_secs(60)).await;
    for _ in 0..2 {
        let outcome = call(&setup, chat("m", true, None)).await;
        assert_eq!(
            outcome.ok().upstream,
            "a",
            "ordered: the readmitted first target"
        );
    }
    assert_eq!(setup.engine.health().snapshot()[0].breaker, "closed");
    let events: Vec<Event> = setup
        .engine
        .health()
        .events()
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert!(
        matches!(&events[0], Event::Ejected { upstream, count: 1, duration, .. } if upstream == "a" && *duration == Duration::from_secs(60)),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::HalfOpened { upstream, .. } if upstream == "a")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Readmitted { upstream, .. } if upstream == "a"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_trial_ejects_again_for_longer() {
    let setup = setup_seeded(
        &["a", "b"],
        "[breaker]\nconsecutive_failures = 2\nejection = \"5s\"\n\
         [models.m]\ntargets = [\"a:gpt-4o-mini\", \"b:gpt-4o-mini\"]\n",
    );
    for _ in 0..2 {
        call(&setup, chat("m", false, Some("status;code=503;upstream=a"))).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let outcome = call(&setup, chat("m", false, Some("status;code=503;upstream=a"))).await;
    assert_eq!(
        outcome.trail()[0],
        ("a".to_owned(), "upstream_status"),
        "the trial went to a"
    );
    let ejections: Vec<Duration> = setup
        .engine
        .health()
        .events()
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::Ejected { duration, .. } => Some(duration),
            _ => None,
        })
        .collect();
    assert_eq!(ejections, [Duration::from_secs(5), Duration::from_secs(10)]);
}

#[tokio::test(start_paused = true)]
async fn latency_balancing_shifts_load_toward_the_faster_upstream() {
    let setup = setup_seeded(
        &["slow", "fast"],
        "[models.m]\ntargets = [\"slow:gpt-4o-mini\", \"fast:gpt-4o-mini\"]\nbalance = \"latency\"\n",
    );
    let mut tasks = Vec::new();
    let engine = setup.engine.clone();
    for i in 0..200u64 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50 * i)).await;
            let request = chat("m", true, Some("first_token;after=2s;upstream=slow"));
            let response = engine.call(request).await.unwrap();
            if let hourglass_engine::ResponseBody::Stream(s) = response.body {
                let _ = http_body_util::BodyExt::collect(s).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (slow, fast) = (setup.requests("slow"), setup.requests("fast"));
    println!("latency balancing: slow {slow}, fast {fast} of 200");
    assert_eq!(slow + fast, 200);
    // The cost is latency × (calls in flight + 1): at 20 calls/s the fast one carries many
    // streams at once, so the slow one still takes a share, as least-loaded balancing should.
    assert!(fast >= 2 * slow, "slow {slow}, fast {fast}");
    assert!(slow >= 1, "the slow one is still sampled now and then");
}

/// p50 and p99 of first-token latency over 400 streamed calls against two upstreams whose
/// answers each have an independent 5% chance of a 5 s first token.
async fn tail(hedge: &str) -> (Duration, Duration, u64, usize) {
    let setup = setup_seeded(
        &["a", "b"],
        &format!(
            "[retry_budget]\nratio = 0.2\nmin_per_s = 1\n\
             [models.m]\ntargets = [\"a:gpt-4o-mini\", \"b:gpt-4o-mini\"]\nbalance = \"latency\"\nhedge = \"{hedge}\"\n"
        ),
    );
    let mut latencies = Vec::new();
    for i in 0..400u64 {
        let request = chat("m", true, Some("first_token;after=5s;p=0.05"));
        let outcome = call(&setup, request).await;
        assert!(outcome.result.is_ok(), "call {i}: {:?}", outcome.trail());
        latencies.push(outcome.elapsed);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    latencies.sort_unstable();
    let attempts = setup.requests("a") + setup.requests("b");
    let hedges = setup
        .engine
        .health()
        .events()
        .iter()
        .filter(|(_, e)| matches!(e, Event::HedgeStarted { .. }))
        .count();
    (latencies[199], latencies[395], attempts, hedges)
}

#[tokio::test(start_paused = true)]
async fn hedging_cuts_the_first_token_tail() {
    let (p50, p99, attempts, _) = tail("off").await;
    let (hp50, hp99, hattempts, hedges) = tail("1s").await;
    println!(
        "hedging off: p50 {p50:?} p99 {p99:?}, {attempts} attempts for 400 calls; \
         hedge after 1s: p50 {hp50:?} p99 {hp99:?}, {hattempts} attempts ({hedges} hedges)"
    );
    assert!(
        p99 >= Duration::from_secs(5),
        "the slow tail shows unhedged: {p99:?}"
    );
    assert!(hp99 < Duration::from_millis(2600), "hedged p99 {hp99:?}");
    assert!(
        hp50 <= p50 + Duration::from_millis(50),
        "the median is untouched"
    );
    assert!(
        hattempts > attempts && hattempts < attempts + 80,
        "{hattempts} vs {attempts}"
    );
    assert!(hedges >= 10, "{hedges}");
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_drips_below_the_floor_counts_against_its_upstream() {
    let setup = setup_seeded(
        &["a", "b"],
        "[breaker]\nconsecutive_failures = 2\nmin_tokens_per_s = 2\n\
         [models.m]\ntargets = [\"a:gpt-4o-mini\", \"b:gpt-4o-mini\"]\n",
    );
    // 0.5 tokens/s: each token inside chat's 30 s idle, so the stream completes — slowly.
    for _ in 0..2 {
        let body = r#"{"model":"m","messages":[],"stream":true,"max_tokens":20}"#;
        let mut request = hourglass_engine::CallRequest::new(
            hourglass_engine::Endpoint::Chat,
            "/chat/completions",
            bytes::Bytes::from_static(body.as_bytes()),
        )
        .unwrap();
        request.headers.insert(
            "x-sim-fault",
            "slow;tokens_per_s=0.5;upstream=a".parse().unwrap(),
        );
        let outcome = call(&setup, request).await;
        let done = outcome.ok();
        assert_eq!(done.upstream, "a");
        assert!(
            stream_text(&done.body).1.is_none(),
            "the client got a whole stream"
        );
    }
    let status = setup.engine.health().snapshot();
    assert_eq!(
        (status[0].failures, status[0].breaker),
        (2, "open"),
        "{status:?}"
    );
    // The next call avoids the dripping upstream.
    let outcome = call(&setup, chat("m", true, None)).await;
    assert_eq!(outcome.ok().upstream, "b");
}

#[tokio::test(start_paused = true)]
async fn a_call_to_a_model_whose_upstreams_are_all_ejected_says_so() {
    let setup = setup_seeded(
        &["a"],
        "[breaker]\nconsecutive_failures = 2\n[models.m]\ntargets = [\"a:gpt-4o-mini\"]\n",
    );
    for _ in 0..2 {
        call(&setup, chat("m", false, Some("status;code=503"))).await;
    }
    let outcome = call(&setup, chat("m", false, Some("status;code=503"))).await;
    let error = outcome.err();
    assert_eq!(
        outcome.trail()[0].0,
        "a",
        "the only upstream is still tried"
    );
    assert!(
        error.message.contains("was ejected by its circuit breaker"),
        "{}",
        error.message
    );
    // A healthy answer still comes through the ejected single upstream.
    let outcome = call(&setup, chat("m", false, None)).await;
    assert_eq!(outcome.ok().upstream, "a");
}

#[tokio::test(start_paused = true)]
async fn active_checks_take_a_dead_upstream_out_before_any_call_pays_for_it() {
    let setup = setup_seeded(
        &["a", "b"],
        "[health_check]\ninterval = \"1s\"\ntimeout = \"500ms\"\nunhealthy_threshold = 2\nhealthy_threshold = 2\n\
         [models.m]\ntargets = [\"a:gpt-4o-mini\", \"b:gpt-4o-mini\"]\n",
    );
    let _checks = setup.engine.spawn_background();
    setup.sims["a"].set_blackhole(true);
    // Two failed checks (each 1–1.1 s after the last ended, each waiting 0.5 s) mark a down.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let probes = setup.engine.health().probes();
    assert_eq!(probes[0].0, "a");
    assert!(!probes[0].1.healthy, "{probes:?}");
    assert!(probes[1].1.healthy);
    // A call goes straight to b: no connect timeout on a.
    let outcome = call(&setup, chat("m", true, None)).await;
    assert_eq!(outcome.trail(), [("b".to_owned(), "ok")]);
    assert!(
        outcome.elapsed < Duration::from_secs(2),
        "{:?}",
        outcome.elapsed
    );

    // a comes back: two good checks and traffic returns to it (ordered: it is first).
    setup.sims["a"].set_blackhole(false);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(setup.engine.health().probes()[0].1.healthy);
    let outcome = call(&setup, chat("m", true, None)).await;
    assert_eq!(outcome.ok().upstream, "a");
    let events: Vec<Event> = setup
        .engine
        .health()
        .events()
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert!(
        matches!(&events[0], Event::UpstreamDown { upstream, .. } if upstream == "a"),
        "{events:?}"
    );
    assert!(
        matches!(&events[1], Event::UpstreamUp { upstream } if upstream == "a"),
        "{events:?}"
    );
    // The checks went over the pool: a's checks left a warm connection the call reused.
    assert!(setup.requests("a") >= 3, "checks and the call reached a");
}

#[tokio::test(start_paused = true)]
async fn completion_checks_measure_first_token_latency() {
    let setup = setup_seeded(
        &["a"],
        "[health_check]\nmode = \"completion\"\nmodel = \"gpt-4o-mini\"\ninterval = \"2s\"\ntimeout = \"1s\"\n",
    );
    let _checks = setup.engine.spawn_background();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let status = setup.engine.health().snapshot();
    assert_eq!(status[0].model, "gpt-4o-mini");
    // The simulator's gpt-4o-mini: first token median 0.45 s (p99 1.5 s, over 1 s times out).
    let ewma = status[0].ewma;
    assert!(
        ewma > Duration::from_millis(100) && ewma < Duration::from_secs(1),
        "{ewma:?}"
    );
    let probes = setup.engine.health().probes();
    assert!(probes[0].1.healthy);
    // A check on its own: the latency is the first token's, not the headers'.
    let latency = setup
        .engine
        .check_upstream(
            0,
            &hourglass_config::CheckMode::Completion("gpt-4o-mini".into()),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(latency > Duration::from_millis(50), "{latency:?}");
}

/// First-call latency with and without a warm pool, against an upstream whose connection set-up
/// (DNS + TCP + TLS) takes 150 ms.
#[tokio::test(start_paused = true)]
async fn checks_keep_slow_connection_set_up_off_the_first_call() {
    use std::sync::Arc;

    use hourglass_engine::error::FailureKind;
    use hourglass_engine::{BoxFuture, BoxIo, DialFn};
    use hourglass_sim::{Server, ServerConfig};

    async fn first_call_connect(checks: bool) -> Duration {
        let server = Arc::new(Server::in_memory(ServerConfig::default()));
        let slow_dial = DialFn(move || -> BoxFuture<Result<BoxIo, FailureKind>> {
            let server = server.clone();
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(150)).await;
                Ok(Box::new(server.connect_in_memory().await) as BoxIo)
            })
        });
        let config = hourglass_config::Config::from_toml(
            "[upstreams.a]\nbase_url = \"https://a.invalid/v1\"\n[models.m]\ntargets = [\"a:gpt-4o-mini\"]\n",
            "t.toml",
            &|_| None,
        )
        .unwrap();
        let dials: std::collections::HashMap<String, Arc<dyn hourglass_engine::Dial>> = [(
            "a".to_owned(),
            Arc::new(slow_dial) as Arc<dyn hourglass_engine::Dial>,
        )]
        .into();
        let engine = hourglass_engine::Engine::new(config, dials).unwrap();
        let _checks = if checks {
            engine.spawn_background()
        } else {
            Vec::new()
        };
        tokio::time::sleep(Duration::from_millis(500)).await; // the gateway has just started
        let response = engine.call(chat("m", false, None)).await.unwrap();
        let timeline = response.timeline.unwrap();
        timeline.connected.unwrap() - timeline.start
    }

    let cold = first_call_connect(false).await;
    let warm = first_call_connect(true).await;
    println!("first call's connect phase: {cold:?} without health checks, {warm:?} with");
    assert_eq!(cold, Duration::from_millis(150));
    assert_eq!(
        warm,
        Duration::ZERO,
        "the check's pooled connection was reused"
    );
}

/// Found by a user after a burst: idle pooled connections were never reaped, so up to 256 per
/// upstream sat in CLOSE-WAIT for good. The sweep closes the expired ones.
#[tokio::test(start_paused = true)]
async fn idle_connections_are_swept_once_they_expire() {
    let setup =
        setup("[models.m]\ntargets = [\"a:sim-instant\"]\n[health_check]\nmode = \"off\"\n");
    let _background = setup.engine.spawn_background();
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let engine = setup.engine.clone();
            tokio::spawn(async move { engine.call(chat("m", false, None)).await.is_ok() })
        })
        .collect();
    for call in calls {
        assert!(call.await.unwrap());
    }
    assert_eq!(
        setup.engine.idle_connections()[0],
        5,
        "a burst leaves its connections idle"
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(setup.engine.idle_connections()[0], 5, "not yet expired");
    tokio::time::sleep(Duration::from_secs(50)).await;
    assert_eq!(setup.engine.idle_connections()[0], 0, "expired and closed");
}
