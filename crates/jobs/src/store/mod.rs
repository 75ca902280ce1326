//! Where jobs live: the [`Store`] trait every backend implements, and the embedded one
//! (`embedded`, redb in a file under the data directory) that `hourglass serve` uses unless told
//! otherwise. A server database (PostgreSQL, for several gateways acting as one) is another
//! implementation of the same trait.
//!
//! The contract: [`Store::apply`] is atomic and durable when it resolves (a crash after it loses
//! nothing of it; a crash before it keeps none of it), and a read sees every change applied
//! before it began.

mod embedded; // redb: one file, group commits from one writer thread, reads in parallel
mod postgres; // PostgreSQL: shared by replicas, jobs held by leases, changes told by NOTIFY

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

pub use embedded::Embedded;
pub use postgres::Postgres;
use tokio::sync::broadcast;

use crate::job::Job;

/// A boxed future, so the trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which body of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blob {
    /// The request body sent upstream.
    Request,
    /// The answer's body: what the synchronous call would have returned.
    Answer,
}

/// One change to the store; a batch of them is applied atomically.
#[derive(Debug, Clone)]
pub enum Change {
    /// Puts a job's record (the store keeps its own indexes of unfinished and finished jobs).
    Job(Box<Job>),
    /// Puts one of a job's bodies.
    Blob {
        /// The job.
        id: String,
        /// Which body.
        blob: Blob,
        /// Its bytes.
        bytes: Bytes,
    },
    /// Stores a job's events, numbered from `first`.
    Events {
        /// The job.
        id: String,
        /// The number of the first.
        first: u64,
        /// Each event, as sent to a client.
        events: Vec<Bytes>,
    },
    /// Drops a job's events from number `from` on (a run started again from the start).
    DropEventsFrom {
        /// The job.
        id: String,
        /// The first number dropped.
        from: u64,
    },
    /// Deletes a job with its bodies and events.
    Delete(String),
    /// Puts a pending webhook delivery (opaque to the store).
    Delivery {
        /// Its id.
        id: String,
        /// What the webhook module keeps of it.
        bytes: Bytes,
    },
    /// Deletes a delivery (delivered, or given up).
    Delivered(String),
    /// Remembers which upstream holds a response the gateway did not make itself.
    Affinity {
        /// The upstream's response id.
        response_id: String,
        /// The upstream's name.
        upstream: String,
        /// When (Unix milliseconds), for its expiry.
        at: u64,
    },
}

/// A failure of the store: what it was doing and what went wrong (never a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the job store ({store}) failed {doing}: {message}")]
pub struct StoreError {
    /// Which store.
    pub store: String,
    /// What it was doing.
    pub doing: &'static str,
    /// What went wrong.
    pub message: String,
    /// Whether the write touched a job another instance holds now (this one's lease lapsed):
    /// its runner stops, and the other instance's run stands.
    pub lease_lost: bool,
}

/// What another instance changed, as a shared store tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Job `id` has new events, or a new record.
    Changed(String),
    /// A client asked for job `id` to be cancelled, wherever it runs.
    Cancel(String),
    /// Notices may have been missed (the store's connection was lost): every follower looks.
    Resync,
}

impl Notice {
    /// Reads a notice's payload: `e:<id>` or `c:<id>`.
    pub fn parse(payload: &str) -> Option<Notice> {
        match payload.split_once(':')? {
            ("e", id) if !id.is_empty() => Some(Notice::Changed(id.to_owned())),
            ("c", id) if !id.is_empty() => Some(Notice::Cancel(id.to_owned())),
            _ => None,
        }
    }
}

/// The store's size: the file (or table space) it takes, and the part of it holding data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Size {
    /// Bytes on disk.
    pub file: u64,
    /// Bytes holding data (the rest is free space it reuses).
    pub used: u64,
}

/// What keeps jobs, their bodies and events, webhook deliveries and response affinities.
pub trait Store: Send + Sync + 'static {
    /// What it is and where, for `config check`, `/status` and errors.
    fn describe(&self) -> String;

    /// Applies `changes` atomically; durable when it resolves.
    fn apply(&self, changes: Vec<Change>) -> BoxFuture<'_, Result<(), StoreError>>;

    /// A job's record.
    fn job(&self, id: &str) -> BoxFuture<'_, Result<Option<Job>, StoreError>>;

    /// One of a job's bodies.
    fn blob(&self, id: &str, blob: Blob) -> BoxFuture<'_, Result<Option<Bytes>, StoreError>>;

    /// A job's events from number `from` on, at most `limit`.
    fn events(
        &self,
        id: &str,
        from: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Bytes>, StoreError>>;

    /// Every job not yet in a terminal state, oldest first.
    fn unfinished(&self) -> BoxFuture<'_, Result<Vec<Job>, StoreError>>;

    /// Deletes up to `limit` finished jobs that ended before `before` (Unix milliseconds),
    /// oldest first, and the affinities recorded before `affinity_before`; returns the ids of the
    /// jobs deleted.
    fn expire(
        &self,
        before: u64,
        affinity_before: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;

    /// Every pending webhook delivery, as `(id, bytes)`.
    fn deliveries(&self) -> BoxFuture<'_, Result<Vec<(String, Bytes)>, StoreError>>;

    /// The upstream holding a response the gateway did not make, if one was recorded.
    fn affinity(&self, response_id: &str) -> BoxFuture<'_, Result<Option<String>, StoreError>>;

    /// Its size now (cheap: kept up to date as it is written).
    fn size(&self) -> Size;

    /// How long this process holds a job it runs without renewing it, for a store several
    /// instances share; `None` (the default): the store is this process's alone.
    fn lease(&self) -> Option<Duration> {
        None
    }

    /// Takes up to `limit` unfinished jobs no live instance holds, oldest first. A store of
    /// one process's own gives every unfinished job: the process that left them is gone.
    fn claim(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Job>, StoreError>> {
        Box::pin(async move {
            let mut jobs = self.unfinished().await?;
            jobs.truncate(limit);
            Ok(jobs)
        })
    }

    /// Renews this process's leases on the jobs and deliveries it holds.
    fn renew(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// Asks the instance that holds job `id` to cancel it (a shared store; the default, with
    /// one process, has no one else to ask).
    fn request_cancel(&self, _id: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// Changes other instances make, as they are committed (`None`: there are none).
    fn notices(&self) -> Option<broadcast::Receiver<Notice>> {
        None
    }

    /// Whether its last use succeeded.
    fn reachable(&self) -> bool {
        true
    }
}
