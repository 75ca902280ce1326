//! What the store tests share: jobs and events to write, and the contract every store keeps
//! (the embedded one and PostgreSQL run the same checks).

#![allow(dead_code)] // each test binary uses a part

use std::sync::Arc;

use bytes::Bytes;
use hourglass_jobs::job::{Asked, Job, Kind, State};
use hourglass_jobs::store::{Blob, Change, Store};

pub fn job(id: &str, state: State, created_at: u64, finished_at: Option<u64>) -> Job {
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
        cancel_requested: false,
    }
}

pub fn put(job: &Job) -> Change {
    Change::Job(Box::new(job.clone()))
}

pub fn events(n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| Bytes::from(format!("data: {{\"n\":{i}}}\n\n")))
        .collect()
}

/// A deletion takes a job's bodies and events; expiry takes finished jobs oldest first and
/// never an unfinished one.
pub async fn deletion_and_expiry(store: Arc<dyn Store>) {
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
    assert_eq!(
        store.blob("job_0", Blob::Answer).await.unwrap().unwrap(),
        Bytes::from_static(b"answer")
    );

    let all = store.expire(u64::MAX, 0, 10).await.unwrap();
    assert_eq!(all, ["job_0"]);
    assert_eq!(store.unfinished().await.unwrap().len(), 1);
    store
        .apply(vec![Change::Delete("job_running".to_owned())])
        .await
        .unwrap();
    assert!(store.job("job_running").await.unwrap().is_none());
}

/// Events come back in order from any number, and dropping from a number keeps those before.
pub async fn events_in_order_and_dropped_from_a_number(store: Arc<dyn Store>) {
    let id = "job_events".to_owned();
    store
        .apply(vec![
            put(&job(&id, State::InProgress, 1, None)),
            Change::Events {
                id: id.clone(),
                first: 0,
                events: events(6),
            },
        ])
        .await
        .unwrap();
    assert_eq!(store.events(&id, 0, 100).await.unwrap(), events(6));
    assert_eq!(store.events(&id, 4, 100).await.unwrap(), events(6)[4..]);
    assert_eq!(store.events(&id, 1, 2).await.unwrap(), events(6)[1..3]);
    store
        .apply(vec![
            put(&job(&id, State::InProgress, 1, None)),
            Change::DropEventsFrom {
                id: id.clone(),
                from: 2,
            },
        ])
        .await
        .unwrap();
    assert_eq!(store.events(&id, 0, 10).await.unwrap(), events(2));
    store.apply(vec![Change::Delete(id.clone())]).await.unwrap();
    assert!(store.events(&id, 0, 10).await.unwrap().is_empty());
}

/// Many writers at once: each is durable when it returns.
pub async fn concurrent_writers_all_land(store: Arc<dyn Store>) {
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
    let unfinished = store.unfinished().await.unwrap();
    assert_eq!(unfinished.len(), 200);
    assert!(
        unfinished
            .windows(2)
            .all(|w| w[0].created_at <= w[1].created_at),
        "oldest first"
    );
}

/// Deliveries and affinities are kept until deleted or expired.
pub async fn deliveries_and_affinities(store: Arc<dyn Store>) {
    store
        .apply(vec![
            Change::Delivery {
                id: "d1".to_owned(),
                bytes: Bytes::from_static(b"{}"),
            },
            Change::Affinity {
                response_id: "resp_up".to_owned(),
                upstream: "a".to_owned(),
                at: 100,
            },
        ])
        .await
        .unwrap();
    // The deliveries no live sender holds: with one process, every one; with a shared store,
    // none of the ones this process stored (it sends them itself).
    let owed = store.deliveries().await.unwrap();
    if store.lease().is_none() {
        assert_eq!(owed, [("d1".to_owned(), Bytes::from_static(b"{}"))]);
    } else {
        assert!(owed.is_empty(), "{owed:?}");
    }
    assert_eq!(
        store.affinity("resp_up").await.unwrap().as_deref(),
        Some("a")
    );
    store
        .apply(vec![Change::Delivered("d1".to_owned())])
        .await
        .unwrap();
    store.expire(0, 101, 10).await.unwrap();
    assert!(store.affinity("resp_up").await.unwrap().is_none());
}
