//! The embedded store against a real file: what is applied is there after a reopen, events come
//! back in order from any number, a deletion takes a job's bodies and events with it, expiry
//! goes oldest first, and a store that keeps taking and expiring jobs stays the same size.

#![allow(clippy::unwrap_used)] // a test panics on what it does not expect

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use hourglass_jobs::job::{Asked, Job, Kind, State};
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

fn job(id: &str, state: State, created_at: u64, finished_at: Option<u64>) -> Job {
    Job {
        id: id.to_owned(),
        kind: Kind::Job,
        owner: "owner".to_owned(),
        state,
        created_at,
        started_at: None,
        finished_at,
        deadline_at: created_at + 3_600_000,
        asked: Asked {
            endpoint: "chat".to_owned(),
            path: "/chat/completions".to_owned(),
            model: Some("m".to_owned()),
            stream: true,
            headers: Vec::new(),
            pinned: None,
        },
        request_id: "r".to_owned(),
        runs: 0,
        events: 0,
        own_events: 0,
        answer: None,
        failure: None,
        upstream: None,
        upstream_id: None,
        webhook: None,
        echo: None,
    }
}

fn put(job: &Job) -> Change {
    Change::Job(Box::new(job.clone()))
}

fn events(n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| Bytes::from(format!("data: {{\"n\":{i}}}\n\n")))
        .collect()
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

#[tokio::test]
async fn a_deleted_job_takes_its_bodies_and_events_and_expiry_goes_oldest_first() {
    let dir = temp_dir("expire");
    let store = Embedded::open(&dir.join("jobs.redb")).unwrap();
    let mut changes = Vec::new();
    for (i, finished) in [30u64, 10, 20].into_iter().enumerate() {
        let id = format!("job_{i}");
        changes.push(put(&job(&id, State::Completed, 1, Some(finished))));
        changes.push(Change::Events {
            id: id.clone(),
            first: 0,
            events: events(3),
        });
        changes.push(Change::Blob {
            id,
            blob: Blob::Answer,
            bytes: Bytes::from_static(b"answer"),
        });
    }
    // A running job is never expired, however old.
    changes.push(put(&job("job_running", State::InProgress, 0, None)));
    store.apply(changes).await.unwrap();

    let expired = store.expire(25, 0, 10).await.unwrap();
    assert_eq!(expired, ["job_1", "job_2"], "ended at 10, then 20");
    assert!(store.job("job_1").await.unwrap().is_none());
    assert!(store.events("job_1", 0, 10).await.unwrap().is_empty());
    assert!(store.blob("job_1", Blob::Answer).await.unwrap().is_none());
    assert_eq!(store.events("job_0", 0, 10).await.unwrap().len(), 3);

    let all = store.expire(u64::MAX, 0, 10).await.unwrap();
    assert_eq!(all, ["job_0"]);
    assert_eq!(store.unfinished().await.unwrap().len(), 1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn dropping_events_from_a_number_keeps_the_ones_before() {
    let dir = temp_dir("drop");
    let store = Embedded::open(&dir.join("jobs.redb")).unwrap();
    store
        .apply(vec![Change::Events {
            id: "j".to_owned(),
            first: 0,
            events: events(6),
        }])
        .await
        .unwrap();
    store
        .apply(vec![Change::DropEventsFrom {
            id: "j".to_owned(),
            from: 2,
        }])
        .await
        .unwrap();
    assert_eq!(store.events("j", 0, 10).await.unwrap(), events(2));
    std::fs::remove_dir_all(dir).unwrap();
}

/// Many writers at once: each is durable when it returns, and they share transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_all_land() {
    let dir = temp_dir("concurrent");
    let store = Arc::new(Embedded::open(&dir.join("jobs.redb")).unwrap());
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let job = job(&format!("job_{i:03}"), State::Queued, i, None);
            store.apply(vec![put(&job)]).await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(store.unfinished().await.unwrap().len(), 200);
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
