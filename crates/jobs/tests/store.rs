//! The embedded store against a real file: what is applied is there after a reopen, events come
//! back in order from any number, a deletion takes a job's bodies and events with it, expiry
//! goes oldest first, and a store that keeps taking and expiring jobs stays the same size.

#![allow(clippy::unwrap_used)] // a test panics on what it does not expect

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
mod common;

use common::{events, job, put};
use hourglass_jobs::job::State;
use hourglass_jobs::store::{Blob, Change, Embedded, Store};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "hourglass-store-{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn what_is_applied_is_there_after_a_reopen() {
    let dir = temp_dir("reopen");
    let path = dir.join("jobs.redb");
    {
        let store = Embedded::open(&path).unwrap();
        let queued = job("job_a", State::Queued, 1, None);
        let done = job("job_b", State::Completed, 2, Some(3));
        store
            .apply(vec![
                put(&queued),
                put(&done),
                Change::Blob {
                    id: "job_a".to_owned(),
                    blob: Blob::Request,
                    bytes: Bytes::from_static(b"{\"model\":\"m\"}"),
                },
                Change::Events {
                    id: "job_b".to_owned(),
                    first: 0,
                    events: events(5),
                },
                Change::Affinity {
                    response_id: "resp_up".to_owned(),
                    upstream: "b".to_owned(),
                    at: 1,
                },
            ])
            .await
            .unwrap();
    }
    // The writer thread ends with the store; the file is free to open again.
    let store = Embedded::open(&path).unwrap();
    let unfinished = store.unfinished().await.unwrap();
    assert_eq!(
        unfinished.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        ["job_a"]
    );
    assert_eq!(
        store.job("job_b").await.unwrap().unwrap().state,
        State::Completed
    );
    let body = store.blob("job_a", Blob::Request).await.unwrap().unwrap();
    assert_eq!(&body[..], b"{\"model\":\"m\"}");
    let from_two = store.events("job_b", 2, 100).await.unwrap();
    assert_eq!(from_two, events(5)[2..].to_vec());
    assert_eq!(
        store.events("job_b", 1, 2).await.unwrap(),
        events(5)[1..3].to_vec()
    );
    assert_eq!(
        store.affinity("resp_up").await.unwrap().as_deref(),
        Some("b")
    );
    assert!(store.size().file > 0 && store.size().used > 0);
    std::fs::remove_dir_all(dir).unwrap();
}

fn embedded(name: &str) -> (Arc<dyn Store>, PathBuf) {
    let dir = temp_dir(name);
    let store = Embedded::open(&dir.join("jobs.redb")).unwrap();
    (Arc::new(store), dir)
}

#[tokio::test]
async fn a_deleted_job_takes_its_bodies_and_events_and_expiry_goes_oldest_first() {
    let (store, dir) = embedded("expire");
    common::deletion_and_expiry(store).await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn events_come_back_in_order_and_dropping_from_a_number_keeps_the_ones_before() {
    let (store, dir) = embedded("events");
    common::events_in_order_and_dropped_from_a_number(store).await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// Many writers at once: each is durable when it returns, and they share transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_all_land() {
    let (store, dir) = embedded("concurrent");
    common::concurrent_writers_all_land(store).await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn deliveries_and_affinities_are_kept_until_deleted_or_expired() {
    let (store, dir) = embedded("deliveries");
    common::deliveries_and_affinities(store).await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// Retention bounds the store: taking and expiring the same number of jobs round after round,
/// the file stops growing (freed pages are used again).
#[tokio::test]
async fn a_store_that_keeps_taking_and_expiring_jobs_stays_the_same_size() {
    let dir = temp_dir("bounded");
    let path = dir.join("jobs.redb");
    let store = Embedded::open(&path).unwrap();
    let answer = Bytes::from(vec![b'x'; 20_000]);
    let mut sizes = Vec::new();
    for round in 0..12u64 {
        let mut changes = Vec::new();
        for i in 0..100 {
            let id = format!("job_{round}_{i}");
            changes.push(put(&job(
                &id,
                State::Completed,
                round,
                Some(round * 10 + 1),
            )));
            changes.push(Change::Blob {
                id: id.clone(),
                blob: Blob::Answer,
                bytes: answer.clone(),
            });
            changes.push(Change::Events {
                id,
                first: 0,
                events: events(20),
            });
        }
        store.apply(changes).await.unwrap();
        // Retention: everything that ended before this round goes.
        while !store.expire(round * 10, 0, 256).await.unwrap().is_empty() {}
        sizes.push(std::fs::metadata(&path).unwrap().len());
    }
    eprintln!("file sizes by round: {sizes:?}");
    let settled = sizes[3];
    let last = *sizes.last().unwrap();
    assert!(
        last <= settled + settled / 4,
        "the file kept growing: {sizes:?}"
    );
    // Far less than all that was written (twelve rounds of 100 answers of 20 KB).
    assert!(last < 12 * 100 * 20_000 / 2, "{sizes:?}");
    std::fs::remove_dir_all(dir).unwrap();
}
