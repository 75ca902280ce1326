//! The PostgreSQL store against a real server (Debian's, started on loopback for this test
//! binary): the same contract as the embedded store, and what only a shared store does —
//! migrations run once when replicas start together, a lapsed lease is taken by exactly one
//! replica and the old holder can no longer write, renewal keeps a job, deliveries are sent by
//! one replica at a time, and other replicas hear of a change once it is committed.

#![allow(clippy::unwrap_used)] // a test panics on what it does not expect

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{events, job, put};
use hourglass_jobs::job::State;
use hourglass_jobs::store::{Change, Notice, Postgres, Store};
use hourglass_testkit::postgres::TestPostgres;

/// A server of the test's own (stopped and removed when the test ends) and a database in it.
fn database() -> (TestPostgres, String) {
    let server = TestPostgres::start();
    let url = server.database("jobs");
    (server, url)
}

async fn store(url: &str, instance: &str, lease: Duration) -> Arc<dyn Store> {
    Arc::new(Postgres::connect(url, 4, instance, lease).await.unwrap())
}

const LEASE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_contract_holds_on_postgres() {
    let (_server, url) = database();
    let one = store(&url, "a", LEASE).await;
    common::deletion_and_expiry(one.clone()).await;
    common::events_in_order_and_dropped_from_a_number(one.clone()).await;
    common::deliveries_and_affinities(one.clone()).await;
    common::concurrent_writers_all_land(one.clone()).await;
    assert!(one.size().used > 0, "its tables have a size");
    assert!(one.describe().contains("127.0.0.1"), "{}", one.describe());
    assert!(
        !one.describe().contains("hourglass@"),
        "no user or password"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_the_schema_once() {
    let (server, url) = database();
    let starts = (0..4).map(|i| {
        let url = url.clone();
        tokio::spawn(async move { Postgres::connect(&url, 2, &format!("r{i}"), LEASE).await })
    });
    for start in starts {
        start.await.unwrap().unwrap();
    }
    assert_eq!(
        server.query(
            "jobs",
            "SELECT count(*), max(version) FROM hourglass_schema"
        ),
        "1|1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_lease_is_taken_by_one_replica_and_its_old_holder_cannot_write() {
    let (_server, url) = database();
    let lease = Duration::from_millis(600);
    let a = store(&url, "a", lease).await;
    let (b, c) = (store(&url, "b", lease).await, store(&url, "c", lease).await);
    let mut running = job("job_held", State::InProgress, 1, None);
    a.apply(vec![put(&running)]).await.unwrap();
    assert!(b.claim(10).await.unwrap().is_empty(), "a holds it");

    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    let (by_b, by_c) = tokio::join!(b.claim(10), c.claim(10));
    let (by_b, by_c) = (by_b.unwrap(), by_c.unwrap());
    assert_eq!(by_b.len() + by_c.len(), 1, "exactly one replica takes it");
    let taker = if by_b.is_empty() { &c } else { &b };

    // The old holder's next write is refused: the job is the taker's now.
    running.events = 3;
    let refused = a
        .apply(vec![
            Change::Events {
                id: running.id.clone(),
                first: 0,
                events: events(3),
            },
            put(&running),
        ])
        .await
        .unwrap_err();
    assert!(refused.lease_lost, "{refused}");
    assert!(
        refused.message.contains("held by another instance"),
        "{refused}"
    );
    assert!(
        a.events(&running.id, 0, 10).await.unwrap().is_empty(),
        "nothing of it landed"
    );
    running.events = 0;
    taker.apply(vec![put(&running)]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewing_keeps_a_replicas_jobs_and_deliveries() {
    let (_server, url) = database();
    let lease = Duration::from_millis(600);
    let a = store(&url, "a", lease).await;
    let b = store(&url, "b", lease).await;
    a.apply(vec![
        put(&job("job_kept", State::InProgress, 1, None)),
        Change::Delivery {
            id: "d_kept".to_owned(),
            bytes: Bytes::from_static(b"{}"),
        },
    ])
    .await
    .unwrap();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        a.renew().await.unwrap();
    }
    assert!(
        b.claim(10).await.unwrap().is_empty(),
        "renewed past three leases"
    );
    assert!(b.deliveries().await.unwrap().is_empty(), "a sends its own");
    // Without renewal, b takes both, and only once.
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    assert_eq!(b.claim(10).await.unwrap().len(), 1);
    assert_eq!(b.deliveries().await.unwrap().len(), 1);
    assert!(b.claim(10).await.unwrap().is_empty());
    assert!(b.deliveries().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_replicas_hear_of_a_change_once_it_is_committed() {
    let (_server, url) = database();
    let a = store(&url, "a", LEASE).await;
    let b = store(&url, "b", LEASE).await;
    // Each listens once connected.
    let mut notices = b.notices().unwrap();
    let mut a_notices = a.notices().unwrap();

    let id = "job_told".to_owned();
    a.apply(vec![
        put(&job(&id, State::InProgress, 1, None)),
        Change::Events {
            id: id.clone(),
            first: 0,
            events: events(2),
        },
    ])
    .await
    .unwrap();
    assert_eq!(next(&mut notices).await, Notice::Changed(id.clone()));
    // By the time it is heard, the events are readable from the other replica.
    assert_eq!(b.events(&id, 0, 10).await.unwrap(), events(2));

    assert_eq!(
        next(&mut a_notices).await,
        Notice::Changed(id.clone()),
        "its own too"
    );
    b.request_cancel(&id).await.unwrap();
    assert_eq!(next(&mut a_notices).await, Notice::Cancel(id.clone()));
    assert!(a.job(&id).await.unwrap().unwrap().cancel_requested);
}

/// The next notice that is not a resync, within 5 s.
async fn next(notices: &mut tokio::sync::broadcast::Receiver<Notice>) -> Notice {
    loop {
        let notice = tokio::time::timeout(Duration::from_secs(5), notices.recv())
            .await
            .expect("a notice within 5 s")
            .unwrap();
        if notice != Notice::Resync {
            return notice;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_url_and_an_unreachable_server_are_clear_errors_without_the_password() {
    let bad = Postgres::connect("postgres://u:s3cret@127.0.0.1:notaport/db", 1, "a", LEASE).await;
    let error = bad.err().unwrap().to_string();
    assert!(
        error.contains("cluster.postgres_url does not parse"),
        "{error}"
    );
    assert!(!error.contains("s3cret"), "{error}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://u:s3cret@127.0.0.1:{port}/db?sslmode=disable&connect_timeout=2");
    let error = Postgres::connect(&url, 1, "a", LEASE)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains(&format!("127.0.0.1:{port}/db")), "{error}");
    assert!(!error.contains("s3cret"), "{error}");
}
