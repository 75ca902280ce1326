//! The embedded store: redb, one crash-safe file (copy-on-write B-trees, a checksummed commit
//! that is either whole or absent after a crash), pure Rust. Every write goes to one writer
//! thread that gathers whatever batches are waiting into one transaction and one `fsync` (group
//! commit), so a thousand submitters pay for a handful of syncs; reads run in parallel on
//! snapshots and never wait for the writer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::oneshot;

use super::{Blob, BoxFuture, Change, Size, Store, StoreError};
use crate::job::Job;

/// Job records (JSON) by id.
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
/// Unfinished jobs: id → submission time.
const ACTIVE: TableDefinition<&str, u64> = TableDefinition::new("active");
/// Finished jobs by (end time, id), oldest first, for expiry.
const FINISHED: TableDefinition<(u64, &str), ()> = TableDefinition::new("finished");
/// Bodies by (job, 0 request / 1 answer).
const BLOBS: TableDefinition<(&str, u8), &[u8]> = TableDefinition::new("blobs");
/// Events by (job, number).
const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");
/// Pending webhook deliveries by id.
const DELIVERIES: TableDefinition<&str, &[u8]> = TableDefinition::new("deliveries");
/// Response id → the upstream holding it.
const AFFINITY: TableDefinition<&str, &str> = TableDefinition::new("affinity");
/// Affinities by (record time, response id), for expiry.
const AFFINITY_AGE: TableDefinition<(u64, &str), ()> = TableDefinition::new("affinity_age");

/// The most batches one transaction gathers.
const MAX_GATHERED: usize = 512;

/// Work for the writer thread.
enum Work {
    Apply(Vec<Change>, oneshot::Sender<Result<(), StoreError>>),
    Expire {
        before: u64,
        affinity_before: u64,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<String>, StoreError>>,
    },
}

/// A redb file, written by one thread.
pub struct Embedded {
    path: PathBuf,
    db: Arc<Database>,
    writer: Option<mpsc::Sender<Work>>,
    thread: Option<std::thread::JoinHandle<()>>,
    file_bytes: Arc<AtomicU64>,
    used_bytes: Arc<AtomicU64>,
}

impl Drop for Embedded {
    /// Stops the writer after the work already sent, and waits for it: the file is closed (and
    /// free to open again) once the store is dropped.
    fn drop(&mut self) {
        drop(self.writer.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Embedded {
    /// Opens (or creates) the store at `path`, creating its directory (owner-only: it holds the
    /// requests and answers of every job).
    pub fn open(path: &Path) -> Result<Embedded, StoreError> {
        let fail = |doing, message: String| StoreError {
            store: format!("redb at {}", path.display()),
            doing,
            message,
            lease_lost: false,
        };
        if let Some(dir) = path.parent() {
            create_private_dir(dir).map_err(|e| fail("creating its directory", e.to_string()))?;
        }
        let db = Database::create(path).map_err(|e| fail("opening", e.to_string()))?;
        restrict_to_owner(path).map_err(|e| fail("restricting its permissions", e.to_string()))?;
        let txn = db
            .begin_write()
            .map_err(|e| fail("opening", e.to_string()))?;
        create_tables(&txn).map_err(|e| fail("creating its tables", e.to_string()))?;
        let used = used_bytes(&txn);
        txn.commit().map_err(|e| fail("opening", e.to_string()))?;
        let db = Arc::new(db);
        let file_bytes = Arc::new(AtomicU64::new(file_len(path)));
        let used_bytes = Arc::new(AtomicU64::new(used));
        let (writer, work) = mpsc::channel();
        let thread = Writer {
            db: db.clone(),
            path: path.to_owned(),
            file_bytes: file_bytes.clone(),
            used_bytes: used_bytes.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("hourglass-jobs-writer".to_owned())
            .spawn(move || thread.run(work))
            .map_err(|e| fail("starting its writer", e.to_string()))?;
        Ok(Embedded {
            path: path.to_owned(),
            db,
            writer: Some(writer),
            thread: Some(thread),
            file_bytes,
            used_bytes,
        })
    }

    fn error(&self, doing: &'static str, error: impl std::fmt::Display) -> StoreError {
        StoreError {
            store: self.describe(),
            doing,
            message: error.to_string(),
            lease_lost: false,
        }
    }

    /// Runs `read` on a snapshot, off the async workers.
    fn read<T: Send + 'static>(
        &self,
        doing: &'static str,
        read: impl FnOnce(&redb::ReadTransaction) -> Result<T, redb::Error> + Send + 'static,
    ) -> BoxFuture<'_, Result<T, StoreError>> {
        let db = self.db.clone();
        Box::pin(async move {
            let result = tokio::task::spawn_blocking(move || {
                let txn = db.begin_read().map_err(redb::Error::from)?;
                read(&txn)
            })
            .await;
            match result {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(error)) => Err(self.error(doing, error)),
                Err(error) => Err(self.error(doing, error)),
            }
        })
    }

    fn send<T>(
        &self,
        doing: &'static str,
        work: Work,
        reply: oneshot::Receiver<Result<T, StoreError>>,
    ) -> BoxFuture<'_, Result<T, StoreError>>
    where
        T: Send + 'static,
    {
        let sent = match &self.writer {
            Some(writer) => writer.send(work).map_err(|_| ()),
            None => Err(()),
        };
        Box::pin(async move {
            if sent.is_err() {
                return Err(self.error(doing, "its writer thread stopped"));
            }
            reply
                .await
                .unwrap_or_else(|_| Err(self.error(doing, "its writer thread stopped")))
        })
    }
}

impl Store for Embedded {
    fn describe(&self) -> String {
        format!("redb at {}", self.path.display())
    }

    fn apply(&self, changes: Vec<Change>) -> BoxFuture<'_, Result<(), StoreError>> {
        let (reply, replied) = oneshot::channel();
        self.send("writing", Work::Apply(changes, reply), replied)
    }

    fn job(&self, id: &str) -> BoxFuture<'_, Result<Option<Job>, StoreError>> {
        let id = id.to_owned();
        self.read("reading a job", move |txn| {
            let table = txn.open_table(JOBS)?;
            let Some(bytes) = table.get(id.as_str())? else {
                return Ok(None);
            };
            decode(bytes.value()).map(Some)
        })
    }

    fn blob(&self, id: &str, blob: Blob) -> BoxFuture<'_, Result<Option<Bytes>, StoreError>> {
        let id = id.to_owned();
        self.read("reading a body", move |txn| {
            let table = txn.open_table(BLOBS)?;
            let value = table.get((id.as_str(), blob_key(blob)))?;
            Ok(value.map(|v| Bytes::copy_from_slice(v.value())))
        })
    }

    fn events(
        &self,
        id: &str,
        from: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Bytes>, StoreError>> {
        let id = id.to_owned();
        self.read("reading events", move |txn| {
            let table = txn.open_table(EVENTS)?;
            let mut out = Vec::new();
            for entry in table.range((id.as_str(), from)..=(id.as_str(), u64::MAX))? {
                let (key, value) = entry?;
                // Numbers are dense: a gap would be a bug, and events after it must not be sent.
                if key.value().1 != from + out.len() as u64 || out.len() >= limit {
                    break;
                }
                out.push(Bytes::copy_from_slice(value.value()));
            }
            Ok(out)
        })
    }

    fn unfinished(&self) -> BoxFuture<'_, Result<Vec<Job>, StoreError>> {
        self.read("reading unfinished jobs", |txn| {
            let active = txn.open_table(ACTIVE)?;
            let jobs = txn.open_table(JOBS)?;
            let mut out = Vec::new();
            for entry in active.iter()? {
                let (id, _) = entry?;
                if let Some(bytes) = jobs.get(id.value())? {
                    out.push(decode(bytes.value())?);
                }
            }
            out.sort_by_key(|job: &Job| job.created_at);
            Ok(out)
        })
    }

    fn expire(
        &self,
        before: u64,
        affinity_before: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        let (reply, replied) = oneshot::channel();
        let work = Work::Expire {
            before,
            affinity_before,
            limit,
            reply,
        };
        self.send("expiring jobs", work, replied)
    }

    fn deliveries(&self) -> BoxFuture<'_, Result<Vec<(String, Bytes)>, StoreError>> {
        self.read("reading webhook deliveries", |txn| {
            let table = txn.open_table(DELIVERIES)?;
            let mut out = Vec::new();
            for entry in table.iter()? {
                let (id, bytes) = entry?;
                out.push((id.value().to_owned(), Bytes::copy_from_slice(bytes.value())));
            }
            Ok(out)
        })
    }

    fn affinity(&self, response_id: &str) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        let id = response_id.to_owned();
        self.read("reading a response's upstream", move |txn| {
            let table = txn.open_table(AFFINITY)?;
            Ok(table.get(id.as_str())?.map(|v| v.value().to_owned()))
        })
    }

    fn size(&self) -> Size {
        Size {
            file: self.file_bytes.load(Ordering::Relaxed),
            used: self.used_bytes.load(Ordering::Relaxed),
        }
    }
}

/// The writer thread: gathers waiting work into one transaction.
struct Writer {
    db: Arc<Database>,
    path: PathBuf,
    file_bytes: Arc<AtomicU64>,
    used_bytes: Arc<AtomicU64>,
}

impl Writer {
    fn run(self, work: mpsc::Receiver<Work>) {
        // Ends when the store is dropped (every sender gone).
        while let Ok(first) = work.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_GATHERED {
                match work.try_recv() {
                    Ok(more) => batch.push(more),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    /// One transaction for `batch`; every submitter hears the outcome. A failed piece of work
    /// fails the whole transaction (all or nothing), and everyone in it is told.
    fn commit(&self, batch: Vec<Work>) {
        let mut expired = Vec::new();
        let result = (|| -> Result<(), redb::Error> {
            let txn = self.db.begin_write()?;
            for work in &batch {
                match work {
                    Work::Apply(changes, _) => {
                        for change in changes {
                            apply(&txn, change)?;
                        }
                    }
                    Work::Expire {
                        before,
                        affinity_before,
                        limit,
                        ..
                    } => expired.push(expire(&txn, *before, *affinity_before, *limit)?),
                }
            }
            let used = used_bytes(&txn);
            txn.commit()?;
            self.used_bytes.store(used, Ordering::Relaxed);
            self.file_bytes
                .store(file_len(&self.path), Ordering::Relaxed);
            Ok(())
        })();
        let error = |e: &redb::Error| StoreError {
            store: format!("redb at {}", self.path.display()),
            doing: "writing",
            message: e.to_string(),
            lease_lost: false,
        };
        let mut expired = expired.into_iter();
        for work in batch {
            match work {
                Work::Apply(_, reply) => {
                    let _ = reply.send(result.as_ref().map(|_| ()).map_err(error));
                }
                Work::Expire { reply, .. } => {
                    let outcome = match &result {
                        Ok(()) => Ok(expired.next().unwrap_or_default()),
                        Err(e) => Err(error(e)),
                    };
                    let _ = reply.send(outcome);
                }
            }
        }
    }
}

fn create_tables(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(JOBS)?;
    txn.open_table(ACTIVE)?;
    txn.open_table(FINISHED)?;
    txn.open_table(BLOBS)?;
    txn.open_table(EVENTS)?;
    txn.open_table(DELIVERIES)?;
    txn.open_table(AFFINITY)?;
    txn.open_table(AFFINITY_AGE)?;
    Ok(())
}

fn apply(txn: &WriteTransaction, change: &Change) -> Result<(), redb::Error> {
    match change {
        Change::Job(job) => put_job(txn, job)?,
        Change::Blob { id, blob, bytes } => {
            txn.open_table(BLOBS)?
                .insert((id.as_str(), blob_key(*blob)), bytes.as_ref())?;
        }
        Change::Events { id, first, events } => {
            let mut table = txn.open_table(EVENTS)?;
            for (n, event) in events.iter().enumerate() {
                table.insert((id.as_str(), first + n as u64), event.as_ref())?;
            }
        }
        Change::DropEventsFrom { id, from } => drop_events(txn, id, *from)?,
        Change::Delete(id) => delete_job(txn, id)?,
        Change::Delivery { id, bytes } => {
            txn.open_table(DELIVERIES)?
                .insert(id.as_str(), bytes.as_ref())?;
        }
        Change::Delivered(id) => {
            txn.open_table(DELIVERIES)?.remove(id.as_str())?;
        }
        Change::Affinity {
            response_id,
            upstream,
            at,
        } => {
            txn.open_table(AFFINITY)?
                .insert(response_id.as_str(), upstream.as_str())?;
            txn.open_table(AFFINITY_AGE)?
                .insert((*at, response_id.as_str()), ())?;
        }
    }
    Ok(())
}

fn put_job(txn: &WriteTransaction, job: &Job) -> Result<(), redb::Error> {
    let bytes = serde_json::to_vec(job).map_err(|e| redb::Error::Corrupted(e.to_string()))?;
    txn.open_table(JOBS)?
        .insert(job.id.as_str(), bytes.as_slice())?;
    if job.state.is_terminal() {
        txn.open_table(ACTIVE)?.remove(job.id.as_str())?;
        let ended = job.finished_at.unwrap_or(job.created_at);
        txn.open_table(FINISHED)?
            .insert((ended, job.id.as_str()), ())?;
    } else {
        txn.open_table(ACTIVE)?
            .insert(job.id.as_str(), job.created_at)?;
    }
    Ok(())
}

fn drop_events(txn: &WriteTransaction, id: &str, from: u64) -> Result<(), redb::Error> {
    let mut table = txn.open_table(EVENTS)?;
    let doomed: Vec<u64> = table
        .range((id, from)..=(id, u64::MAX))?
        .map(|entry| entry.map(|(key, _)| key.value().1))
        .collect::<Result<_, _>>()?;
    for n in doomed {
        table.remove((id, n))?;
    }
    Ok(())
}

fn delete_job(txn: &WriteTransaction, id: &str) -> Result<(), redb::Error> {
    let job = {
        let mut jobs = txn.open_table(JOBS)?;
        let Some(bytes) = jobs.remove(id)? else {
            return Ok(());
        };
        decode(bytes.value())?
    };
    txn.open_table(ACTIVE)?.remove(id)?;
    let ended = job.finished_at.unwrap_or(job.created_at);
    txn.open_table(FINISHED)?.remove((ended, id))?;
    let mut blobs = txn.open_table(BLOBS)?;
    blobs.remove((id, blob_key(Blob::Request)))?;
    blobs.remove((id, blob_key(Blob::Answer)))?;
    drop_events(txn, id, 0)
}

/// Deletes up to `limit` jobs finished before `before`, oldest first, and old affinities.
fn expire(
    txn: &WriteTransaction,
    before: u64,
    affinity_before: u64,
    limit: usize,
) -> Result<Vec<String>, redb::Error> {
    let ids: Vec<String> = txn
        .open_table(FINISHED)?
        .range((0, "")..(before, ""))?
        .take(limit)
        .map(|entry| entry.map(|(key, _)| key.value().1.to_owned()))
        .collect::<Result<_, _>>()?;
    for id in &ids {
        delete_job(txn, id)?;
    }
    let mut ages = txn.open_table(AFFINITY_AGE)?;
    let old: Vec<(u64, String)> = ages
        .range((0, "")..(affinity_before, ""))?
        .take(limit)
        .map(|entry| entry.map(|(key, _)| (key.value().0, key.value().1.to_owned())))
        .collect::<Result<_, _>>()?;
    let mut affinity = txn.open_table(AFFINITY)?;
    for (at, id) in old {
        ages.remove((at, id.as_str()))?;
        affinity.remove(id.as_str())?;
    }
    Ok(ids)
}

fn decode(bytes: &[u8]) -> Result<Job, redb::Error> {
    serde_json::from_slice(bytes)
        .map_err(|e| redb::Error::Corrupted(format!("a job record does not read: {e}")))
}

fn blob_key(blob: Blob) -> u8 {
    match blob {
        Blob::Request => 0,
        Blob::Answer => 1,
    }
}

/// Bytes in pages holding data, as of this transaction.
fn used_bytes(txn: &WriteTransaction) -> u64 {
    txn.stats().map_or(0, |stats| {
        stats.allocated_pages() * stats.page_size() as u64
    })
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
