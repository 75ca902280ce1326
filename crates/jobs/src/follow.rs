//! Following a job's events: the stored ones from a number on, then each batch as soon as it is
//! durable, until the job has ended and every event was sent. A follower reads the store, never
//! the upstream, and holds no lock while it waits; a client that leaves only ends its follower.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::job::{Job, Kind};
use crate::responses;
use crate::service::Inner;
use crate::store::Blob;

/// Events read from the store at once.
const BATCH: usize = 256;

/// Starts a follower of job `id` from event `from`; its events arrive on the receiver, which
/// closes when the job has ended and all were sent.
pub(crate) fn spawn(inner: Arc<Inner>, id: String, from: u64) -> mpsc::Receiver<Bytes> {
    let (sender, receiver) = mpsc::channel(16);
    tokio::spawn(async move {
        follow(inner, id, from, sender).await;
    });
    receiver
}

async fn follow(inner: Arc<Inner>, id: String, mut next: u64, sender: mpsc::Sender<Bytes>) {
    let Ok(store) = inner.store().await else {
        return;
    };
    loop {
        // Watch before reading, so a change between the read and the wait is not missed.
        let mut changed = inner.watch(&id);
        let Ok(events) = store.events(&id, next, BATCH).await else {
            return;
        };
        let read = events.len();
        let Ok(Some(job)) = inner.find(&id).await else {
            return;
        };
        for event in events {
            if sender.send(numbered(&job, next, event)).await.is_err() {
                return;
            }
            next += 1;
        }
        if read == BATCH {
            continue;
        }
        if job.state.is_terminal() && next >= job.events {
            if !job.asked.stream
                && let Ok(Some(body)) = store.blob(&id, Blob::Answer).await
            {
                let _ = sender
                    .send(numbered(&job, next, responses::render(None, &text(&body))))
                    .await;
            }
            return;
        }
        // A notice may be lost (another instance's store connection dropping): look again
        // after a while even without one.
        let _ = tokio::time::timeout(Duration::from_secs(1), changed.changed()).await;
        if sender.is_closed() {
            return;
        }
    }
}

/// A job's event with its number as the SSE `id` (a Response numbers its events in
/// `sequence_number` instead, as OpenAI's do).
fn numbered(job: &Job, number: u64, event: Bytes) -> Bytes {
    if job.kind == Kind::Response {
        return event;
    }
    let mut out = format!("id: {number}\n").into_bytes();
    out.extend_from_slice(&event);
    Bytes::from(out)
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}
