//! Connections are kept per runtime: the gateway serves on one runtime per core, a socket is
//! registered with the reactor of the runtime that opened it, and an HTTP/2 connection's task
//! runs there too.

use std::sync::Arc;

use hourglass_engine::{Engine, ResponseBody};

use crate::support::{chat, setup, setup_raw};

/// One call on the current runtime, read to its end (so its connection goes back to the pool);
/// whether it went over a reused connection.
async fn reused(engine: &Engine) -> bool {
    let response = engine.call(chat("m", true, None)).await.unwrap();
    let reused = response.timeline.as_ref().unwrap().reused;
    if let ResponseBody::Stream(stream) = response.body {
        http_body_util::BodyExt::collect(stream).await.unwrap();
    }
    reused
}

/// Two calls on the current runtime, the second made while the first's stream is held unread
/// (so its connection stays taken). Whether each went over a reused connection.
async fn second_while_first_held(engine: &Engine) -> (bool, bool) {
    let held = engine.call(chat("m", true, None)).await.unwrap();
    let first = held.timeline.as_ref().unwrap().reused;
    let second = reused(engine).await;
    drop(held);
    (first, second)
}

/// Runs `job` on `runtime` (another thread's) while this runtime keeps running: the in-memory
/// upstream of a connection opened here answers from here.
async fn on<T: Send + 'static>(
    runtime: &Arc<tokio::runtime::Runtime>,
    job: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let runtime = runtime.clone();
    tokio::task::spawn_blocking(move || runtime.block_on(job))
        .await
        .unwrap()
}

/// Another single-threaded runtime, as a second serving thread.
fn other_runtime() -> Arc<tokio::runtime::Runtime> {
    Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    )
}

/// After `other` has a connection of its own (the only one it has, and one opened before it on
/// this runtime, `dialed()` being 2): with its own busy (a stream held unread), another call
/// there dials rather than take this runtime's free one, and this runtime finds its own.
async fn takes_only_its_own(
    engine: &Arc<Engine>,
    other: Arc<tokio::runtime::Runtime>,
    dialed: impl Fn() -> u64,
) {
    let e = engine.clone();
    let (held_reused, next_reused) =
        on(&other, async move { second_while_first_held(&e).await }).await;
    assert!(
        held_reused,
        "the held stream went over the runtime's own connection"
    );
    assert!(!next_reused, "a dial, not this runtime's connection");
    assert_eq!(dialed(), 3);
    assert!(reused(engine).await, "this runtime's own");
    assert_eq!(dialed(), 3, "borrowed nothing");
    // A runtime is dropped where blocking is allowed.
    tokio::task::spawn_blocking(move || drop(other))
        .await
        .unwrap();
}

/// A whole answer is assembled from a streamed upstream answer, and its connection goes back
/// through the engine's pools (`Upstreams::release`), not through the connection's own count of
/// its pool: it must land in the same pool, for this runtime, every time.
#[tokio::test]
async fn a_whole_answers_connection_goes_back_to_its_pool_for_the_next_call() {
    let setup =
        setup("[models.m]\ntargets = [\"a:sim-instant\"]\n[health_check]\nmode = \"off\"\n");
    let engine = setup.engine.clone();
    let dialed = || setup.sims["a"].stats().connections;
    for call in 0..3 {
        let response = engine.call(chat("m", false, None)).await.unwrap();
        assert!(
            matches!(response.body, ResponseBody::Full(_)),
            "a whole answer"
        );
        assert_eq!(response.timeline.as_ref().unwrap().reused, call > 0);
        assert_eq!((dialed(), engine.idle_connections()), (1, vec![1, 0]));
    }
}

#[tokio::test]
async fn a_runtime_reuses_its_own_connections_and_opens_its_own_beside_the_one_it_borrows() {
    let setup =
        setup("[models.m]\ntargets = [\"a:sim-instant\"]\n[health_check]\nmode = \"off\"\n");
    let engine = setup.engine.clone();
    let dialed = || setup.sims["a"].stats().connections;
    let other = other_runtime();

    // This runtime opens a connection and keeps it idle.
    assert!(!reused(&engine).await);
    assert!(reused(&engine).await);
    assert_eq!((dialed(), engine.idle_connections()), (1, vec![1, 0]));

    // A runtime that has opened none borrows it (the first call of a new serving thread gets a
    // warm connection, not a dial), and it comes back to this runtime's pool; beside that call,
    // the other runtime opens a connection of its own and keeps it idle.
    let e = engine.clone();
    assert!(on(&other, async move { reused(&e).await }).await);
    let e = engine.clone();
    let opened = on(&other, async move {
        let wait = async {
            while e.idle_connections() != vec![2, 0] {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), wait).await
    })
    .await;
    assert!(
        opened.is_ok(),
        "the other runtime's own connection was not kept idle"
    );
    assert_eq!(dialed(), 2);

    // From now on it takes only its own: the next call there reuses the one it opened.
    takes_only_its_own(&engine, other, dialed).await;
}

#[tokio::test]
async fn a_runtime_takes_its_own_http2_connections_and_opens_one_beside_the_one_it_borrows() {
    // One stream per connection, so which connection a call took shows in what is dialed.
    let setup = setup_raw(
        &["s"],
        "[health_check]\nmode = \"off\"\n[upstreams.s]\nbase_url = \"http://s.invalid/v1\"\nhttp = \"2\"\nhttp2_max_streams = 1\n[models.m]\ntargets = [\"s:sim-instant\"]\n",
    );
    let engine = setup.engine.clone();
    let dialed = || setup.sims["s"].stats().connections;
    let other = other_runtime();

    // This runtime opens an HTTP/2 connection and keeps it.
    assert!(!reused(&engine).await);
    assert!(reused(&engine).await);
    assert_eq!((dialed(), engine.h2_connections()), (1, vec![1]));

    // A runtime that has opened none borrows it (no dial in the call's way), and opens its own
    // beside that call, once however many calls borrow meanwhile.
    let e = engine.clone();
    let borrowed = on(&other, async move {
        let first = reused(&e).await;
        let second = reused(&e).await;
        (first, second, h2_connections_reach(&e, 2).await)
    })
    .await;
    assert_eq!(
        borrowed,
        (true, true, true),
        "(borrowed, borrowed, opened its own)"
    );
    assert_eq!(
        dialed(),
        2,
        "one connection opened beside two borrowing calls"
    );

    // From now on it takes its own: the next call there reuses the one it opened. With that
    // one busy (a stream held unread), another call there borrows this runtime's free one rather
    // than wait for a dial, and opens another of its own beside it.
    let e = engine.clone();
    let calls = on(&other, async move {
        let held = e.call(chat("m", true, None)).await.unwrap();
        let own = held.timeline.as_ref().unwrap().reused;
        let borrowed = reused(&e).await;
        let opened = h2_connections_reach(&e, 3).await;
        drop(held);
        (own, borrowed, opened)
    })
    .await;
    assert_eq!(
        calls,
        (true, true, true),
        "(its own, borrowed, opened another)"
    );
    assert_eq!(dialed(), 3);
    // This runtime still finds its own.
    assert!(reused(&engine).await);
    assert_eq!(dialed(), 3);
    tokio::task::spawn_blocking(move || drop(other))
        .await
        .unwrap();
}

/// Whether the engine's open HTTP/2 connections reach `want` within 10 s.
async fn h2_connections_reach(engine: &Engine, want: usize) -> bool {
    let wait = async {
        while engine.h2_connections() != vec![want] {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), wait)
        .await
        .is_ok()
}
