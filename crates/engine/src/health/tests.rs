//! The health table: ranking, ejection, estimates and what a reload keeps.

use super::*;

fn health(share: f64) -> Arc<Health> {
    let config = BreakerConfig {
        consecutive_failures: 2,
        max_ejected_share: share,
        ..BreakerConfig::default()
    };
    Arc::new(Health::new(
        &config,
        vec!["a".into(), "b".into(), "c".into()],
    ))
}

fn candidates() -> Vec<Candidate<'static>> {
    (0..3)
        .map(|upstream| Candidate {
            upstream,
            model: "m",
            tier: 0,
            weight: 1,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn an_ejected_target_goes_last_until_too_many_are_ejected() {
    let h = health(0.5);
    let mut rng = fastrand::Rng::with_seed(1);
    let now = Instant::now();
    for _ in 0..2 {
        h.lease(0, "m", false, now).finish(true);
    }
    let order = h.rank(
        "m",
        &candidates(),
        &[false; 3],
        Balance::Ordered,
        &mut rng,
        now,
    );
    assert_eq!(order, [1, 2, 0]);
    for _ in 0..2 {
        h.lease(1, "m", false, now).finish(true);
    }
    // Two of three ejected is above half: ejection is ignored rather than overload one.
    let order = h.rank(
        "m",
        &candidates(),
        &[false; 3],
        Balance::Ordered,
        &mut rng,
        now,
    );
    assert_eq!(order, [0, 1, 2]);
    assert!(
        h.events().iter().any(
            |(_, e)| matches!(e, Event::Ejected { upstream, count: 1, .. } if upstream == "a")
        )
    );
}

#[tokio::test(start_paused = true)]
async fn latency_balancing_prefers_the_cheaper_target() {
    let h = health(0.5);
    let mut rng = fastrand::Rng::with_seed(7);
    let now = Instant::now();
    h.lease(0, "m", false, now)
        .first_token(Duration::from_millis(900));
    h.lease(1, "m", false, now)
        .first_token(Duration::from_millis(100));
    h.lease(2, "m", false, now)
        .first_token(Duration::from_millis(400));
    let two: Vec<Candidate<'_>> = candidates().into_iter().take(2).collect();
    let mut firsts = [0usize; 2];
    for _ in 0..100 {
        firsts[h.rank("m", &two, &[false; 2], Balance::Latency, &mut rng, now)[0]] += 1;
    }
    assert_eq!(firsts, [0, 100], "of two, the cheaper always wins");
    let mut firsts = [0usize; 3];
    for _ in 0..300 {
        firsts[h.rank(
            "m",
            &candidates(),
            &[false; 3],
            Balance::Latency,
            &mut rng,
            now,
        )[0]] += 1;
    }
    assert_eq!(firsts[0], 0, "the slowest never wins a pair: {firsts:?}");
    assert!(firsts[1] > firsts[2], "{firsts:?}");
}

#[tokio::test(start_paused = true)]
async fn endless_failures_saturate_the_estimate_instead_of_overflowing() {
    let h = health(0.5);
    let now = Instant::now();
    for _ in 0..200 {
        h.lease(0, "m", false, now).finish(true);
    }
    assert_eq!(h.snapshot()[0].ewma, MAX_PENALTY);
}

#[tokio::test(start_paused = true)]
async fn made_up_model_names_do_not_grow_the_table_without_end() {
    let h = health(0.5);
    let now = Instant::now();
    for i in 0..1000 {
        h.lease(0, &format!("made-up-{i}"), false, now).finish(true);
    }
    let snapshot = h.snapshot();
    assert_eq!(snapshot.len(), MAX_MODELS_PER_UPSTREAM + 1);
    let overflow = snapshot.iter().find(|t| t.model == OVERFLOW_MODEL).unwrap();
    assert_eq!(overflow.calls, 1000 - MAX_MODELS_PER_UPSTREAM as u64);
}

/// Found in step 34's review: the hedge's latency windows (a few KB each) were kept for every
/// model name a lease named, so a client minting names on a wildcard route with a quantile
/// hedge grew them without end.
#[tokio::test(start_paused = true)]
async fn made_up_model_names_do_not_grow_the_latency_windows_without_end() {
    let h = health(0.5);
    let now = Instant::now();
    for i in 0..1000 {
        let lease = h.lease(0, &format!("made-up-{i}"), true, now);
        lease.first_token(Duration::from_millis(5));
        lease.finish(false);
    }
    let windows = lock(&h.latencies).len();
    assert_eq!(
        windows,
        MAX_LATENCY_WINDOWS + 1,
        "the bound and one shared window"
    );
    // A known model keeps its own window; one past the bound reads the shared one.
    assert!(lock(&h.latencies).contains_key("made-up-0"));
    let fixed = None;
    let (floor, ceiling) = (Duration::ZERO, Duration::from_secs(60));
    let minted = h.hedge_threshold("made-up-999", fixed, Some(0.9), floor, ceiling);
    let shared = h.hedge_threshold(OVERFLOW_MODEL, fixed, Some(0.9), floor, ceiling);
    assert_eq!(minted, shared);
}

#[tokio::test(start_paused = true)]
async fn weights_share_calls_within_a_tier() {
    let h = health(0.5);
    let mut rng = fastrand::Rng::with_seed(3);
    let now = Instant::now();
    let mut c = candidates();
    c.truncate(2);
    c[0].weight = 3;
    let mut firsts = [0usize; 2];
    for _ in 0..4000 {
        firsts[h.rank("m", &c, &[false; 2], Balance::Weighted, &mut rng, now)[0]] += 1;
    }
    assert!((2850..3150).contains(&firsts[0]), "3:1 → {firsts:?}");
}

#[tokio::test(start_paused = true)]
async fn tiers_come_in_order_and_a_dropped_lease_frees_its_slot() {
    let h = health(0.5);
    let mut rng = fastrand::Rng::with_seed(1);
    let now = Instant::now();
    let c = [
        Candidate {
            upstream: 0,
            model: "m",
            tier: 1,
            weight: 1,
        },
        Candidate {
            upstream: 1,
            model: "m",
            tier: 0,
            weight: 1,
        },
        Candidate {
            upstream: 2,
            model: "m",
            tier: 1,
            weight: 1,
        },
    ];
    assert_eq!(
        h.rank("m", &c, &[false; 3], Balance::Ordered, &mut rng, now),
        [1, 0, 2]
    );
    assert_eq!(
        h.rank(
            "m",
            &c,
            &[false, true, false],
            Balance::Ordered,
            &mut rng,
            now
        ),
        [0, 2]
    );
    let lease = h.lease(1, "m", false, now);
    let outstanding = |h: &Health| {
        let status = h.snapshot();
        status
            .iter()
            .find(|t| t.upstream == "b")
            .map(|t| t.outstanding)
    };
    assert_eq!(outstanding(&h), Some(1));
    drop(lease);
    assert_eq!(outstanding(&h), Some(0));
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_the_state_of_upstreams_that_stay_and_drops_the_others() {
    let old = health(0.5);
    let now = Instant::now();
    for _ in 0..2 {
        old.lease(0, "m", false, now).finish(true);
    }
    let in_flight = old.lease(1, "m", false, now);
    let config = BreakerConfig {
        consecutive_failures: 5,
        half_open_calls: 1,
        max_ejected_share: 0.5,
        ..BreakerConfig::default()
    };
    // `b` keeps its name but is another server now: it starts afresh; `d` is new; `c` is gone.
    let new = Arc::new(old.carried_over(
        &config,
        vec!["a".into(), "b".into(), "d".into()],
        |name| name != "b",
    ));
    let status = new.snapshot();
    assert_eq!(status.len(), 1, "{status:?}");
    assert_eq!(
        (status[0].upstream.as_str(), status[0].breaker),
        ("a", "open")
    );
    let order = new.rank(
        "m",
        &candidates(),
        &[false; 3],
        Balance::Ordered,
        &mut fastrand::Rng::with_seed(1),
        now,
    );
    assert_eq!(order, [1, 2, 0], "the ejected upstream stays last");
    // A call still in flight on the old table reports into the old `b`, not the new one.
    in_flight.finish(true);
    let fresh_b = new.snapshot().into_iter().find(|t| t.upstream == "b");
    assert!(fresh_b.as_ref().is_none_or(|b| b.calls == 0), "{fresh_b:?}");
    // The new settings apply to the kept breaker: five failures now, not two, eject again.
    tokio::time::advance(Duration::from_secs(31)).await;
    let later = Instant::now();
    new.lease(0, "m", false, later).finish(false);
    for _ in 0..4 {
        new.lease(0, "m", false, later).finish(true);
    }
    assert_eq!(new.snapshot()[0].breaker, "closed");
    new.lease(0, "m", false, later).finish(true);
    assert_eq!(new.snapshot()[0].breaker, "open");
    assert!(
        new.events()
            .iter()
            .filter(|(_, e)| matches!(e, Event::Ejected { upstream, .. } if upstream == "a"))
            .count()
            == 2,
        "the event log carried over"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cooldown_sends_a_target_last_until_it_ends_and_every_cooling_target_is_tried_anyway() {
    use cooldown::{Cooldown, Reason};
    let h = health(1.0);
    let sent = Arc::new(Mutex::new(Vec::new()));
    let into = sent.clone();
    h.set_cooldown_sink(Arc::new(move |c: &Cooldown| lock(&into).push(c.clone())));
    let mut rng = fastrand::Rng::with_seed(1);
    let rank = |h: &Health, rng: &mut fastrand::Rng| {
        h.rank(
            "m",
            &candidates(),
            &[false; 3],
            Balance::Ordered,
            rng,
            Instant::now(),
        )
    };

    h.learned(0, Some("m"), Duration::from_secs(30), Reason::RateLimited);
    assert_eq!(rank(&h, &mut rng), [1, 2, 0], "a is cooling for model m");
    assert_eq!(
        *lock(&sent),
        [Cooldown {
            upstream: "a".into(),
            model: Some("m".into()),
            remaining_ms: 30_000,
            reason: Reason::RateLimited,
        }],
        "told to the sink, relative to now"
    );
    // Another model of the same upstream is not held back.
    let other = [Candidate {
        model: "n",
        ..candidates()[0]
    }];
    assert!(!h.all_ejected(&other, Instant::now()));

    // One from another replica, for the whole upstream; not sent back out.
    assert!(h.cool(&Cooldown {
        upstream: "b".into(),
        model: None,
        remaining_ms: 10_000,
        reason: Reason::KeyRejected,
    }));
    assert!(!h.cool(&Cooldown {
        upstream: "unknown".into(),
        model: None,
        remaining_ms: 10_000,
        reason: Reason::Down,
    }));
    assert_eq!(lock(&sent).len(), 1);
    assert_eq!(rank(&h, &mut rng), [2, 0, 1]);
    assert_eq!(h.cooldowns().len(), 2);

    // Every target cooling: tried anyway, in order (panic mode), never refused.
    h.learned(2, None, Duration::from_secs(5), Reason::Down);
    assert_eq!(rank(&h, &mut rng), [0, 1, 2]);

    // Ends as they end; a lift (zero) ends one at once.
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(rank(&h, &mut rng), [2, 0, 1], "c's 5 s are over");
    h.cool(&Cooldown {
        upstream: "b".into(),
        model: None,
        remaining_ms: 0,
        reason: Reason::KeyRejected,
    });
    assert_eq!(rank(&h, &mut rng), [1, 2, 0]);
    tokio::time::advance(Duration::from_secs(25)).await;
    assert_eq!(rank(&h, &mut rng), [0, 1, 2], "a's 30 s are over");
    assert!(h.cooldowns().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_cooldown_is_capped_and_a_shorter_one_does_not_shorten_a_longer() {
    use cooldown::Reason;
    let h = health(1.0);
    h.learned(0, None, Duration::from_secs(3600), Reason::Overloaded);
    let (_, _, left, _) = h.cooldowns()[0].clone();
    assert_eq!(left, cooldown::MAX_COOLDOWN);
    h.learned(0, None, Duration::from_secs(1), Reason::Overloaded);
    assert_eq!(h.cooldowns()[0].2, cooldown::MAX_COOLDOWN);
}

#[tokio::test(start_paused = true)]
async fn a_target_is_read_available_without_the_lock_only_while_its_breakers_are_closed() {
    let h = health(0.5);
    let one = [candidates()[0]];
    let other = [Candidate {
        model: "n",
        ..one[0]
    }];
    let unclosed = |h: &Health| {
        h.upstreams[0]
            .unclosed
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert!(!h.all_ejected(&one, Instant::now()));
    for _ in 0..2 {
        h.lease(0, "m", false, Instant::now()).finish(true);
    }
    assert_eq!(unclosed(&h), 1);
    assert!(h.all_ejected(&one, Instant::now()), "ejected");
    assert!(
        !h.all_ejected(&other, Instant::now()),
        "another model of the upstream, read under the lock, is not"
    );

    // The ejection ends: half-open, trials may go; enough of them succeed and it closes.
    tokio::time::advance(h.settings.ejection).await;
    assert!(!h.all_ejected(&one, Instant::now()), "half-open");
    for _ in 0..h.settings.half_open_calls {
        h.lease(0, "m", false, Instant::now()).finish(false);
    }
    assert_eq!(h.snapshot()[0].breaker, "closed");
    assert_eq!(unclosed(&h), 0, "read without the lock again");

    // And opens again.
    for _ in 0..2 {
        h.lease(0, "m", false, Instant::now()).finish(true);
    }
    assert_eq!(unclosed(&h), 1);
    assert!(h.all_ejected(&one, Instant::now()));
}
