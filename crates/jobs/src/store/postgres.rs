//! The shared store: PostgreSQL, for several gateways acting as one. Every replica reads and
//! writes the same tables; a replica *holds* the unfinished jobs it runs by a lease (its holder
//! token and an expiry in the database's own clock, so replicas' clocks may differ), renews
//! them all in one statement, and every write of a job checks that it still holds it (a replica
//! cut off past its lease cannot write over the one that took the job). Jobs whose lease lapsed
//! are taken with `SELECT … FOR UPDATE SKIP LOCKED`, so two replicas never take the same one.
//! A write that stores events or ends a job sends `NOTIFY` in its transaction: followers on
//! every replica hear of it once it is committed, never before. The schema is created and
//! migrated at start, under an advisory lock so replicas starting together do it once.
//!
//! tokio-postgres (pure Rust, async, pipelined; no ORM and no compile-time database) with a
//! small deadpool pool; TLS by rustls with the Mozilla roots, as `sslmode` asks.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::broadcast;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{Blob, BoxFuture, Change, Notice, Size, Store, StoreError};
use crate::job::Job;

/// The channel replicas tell each other of changes on.
const CHANNEL: &str = "hourglass_jobs";

/// The key of the advisory lock held while the schema is migrated.
const MIGRATION_LOCK: i64 = 0x686f_7572_676c_6173; // "hourglas"

/// The schema, one migration per version, applied in order and never edited once released.
const MIGRATIONS: [&str; 1] = ["
CREATE TABLE hourglass_jobs (
    id text PRIMARY KEY,
    record bytea NOT NULL,
    finished boolean NOT NULL,
    created_at bigint NOT NULL,
    finished_at bigint,
    holder text,
    lease_until timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false
);
CREATE INDEX hourglass_jobs_unfinished ON hourglass_jobs (created_at) WHERE NOT finished;
CREATE INDEX hourglass_jobs_finished ON hourglass_jobs (finished_at) WHERE finished;
CREATE INDEX hourglass_jobs_holder ON hourglass_jobs (holder) WHERE NOT finished;
CREATE TABLE hourglass_job_blobs (
    job_id text NOT NULL,
    kind smallint NOT NULL,
    bytes bytea NOT NULL,
    PRIMARY KEY (job_id, kind)
);
CREATE TABLE hourglass_job_events (
    job_id text NOT NULL,
    n bigint NOT NULL,
    bytes bytea NOT NULL,
    PRIMARY KEY (job_id, n)
);
CREATE TABLE hourglass_deliveries (
    id text PRIMARY KEY,
    bytes bytea NOT NULL,
    holder text,
    lease_until timestamptz
);
CREATE TABLE hourglass_affinities (
    response_id text PRIMARY KEY,
    upstream text NOT NULL,
    at bigint NOT NULL
);
CREATE INDEX hourglass_affinities_at ON hourglass_affinities (at);
"];

/// The tables whose size is the store's.
const TABLES: [&str; 5] = [
    "hourglass_jobs",
    "hourglass_job_blobs",
    "hourglass_job_events",
    "hourglass_deliveries",
    "hourglass_affinities",
];

/// How long a statement may take before the store counts as unreachable.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// PostgreSQL, shared by the replicas of one gateway.
pub struct Postgres {
    pool: Pool,
    /// This process's holder token: the instance's name and a random part, so two processes
    /// under one name (a restart) never hold each other's jobs.
    holder: String,
    instance: String,
    where_: String,
    lease: Duration,
    notices: broadcast::Sender<Notice>,
    reachable: Arc<AtomicBool>,
    used_bytes: AtomicU64,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl Postgres {
    /// Connects to `url` (no connection is opened until used), migrates the schema and starts
    /// listening for other replicas' changes. `instance` names this process in the jobs it
    /// holds; `lease` is how long it holds one without renewing. Errors never repeat the URL.
    pub async fn connect(
        url: &str,
        pool_size: usize,
        instance: &str,
        lease: Duration,
    ) -> Result<Postgres, StoreError> {
        let fail = |doing, message: String| StoreError {
            store: "PostgreSQL".to_owned(),
            doing,
            message,
            lease_lost: false,
        };
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| {
            fail(
                "reading its URL",
                format!("cluster.postgres_url does not parse: {}", without_url(&e)),
            )
        })?;
        if config.get_application_name().is_none() {
            config.application_name(format!("hourglass {instance}"));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(STATEMENT_TIMEOUT);
        }
        let where_ = describe(&config);
        let tls = tls();
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(STATEMENT_TIMEOUT))
            .create_timeout(Some(STATEMENT_TIMEOUT))
            .recycle_timeout(Some(STATEMENT_TIMEOUT))
            .build()
            .map_err(|e| fail("making its pool", e.to_string()))?;
        let (notices, _) = broadcast::channel(4096);
        let reachable = Arc::new(AtomicBool::new(false));
        let listening = tokio::sync::watch::Sender::new(false);
        let mut listened = listening.subscribe();
        let store = Postgres {
            holder: format!("{instance}/{:016x}", fastrand::u64(..)),
            instance: instance.to_owned(),
            where_: where_.clone(),
            lease,
            notices: notices.clone(),
            reachable: reachable.clone(),
            used_bytes: AtomicU64::new(0),
            listener: tokio::spawn(listen(config, tls, notices, listening, where_)),
            pool,
        };
        store.migrate().await?;
        store.reachable.store(true, Ordering::Relaxed);
        store.measure().await;
        // Listening before the first write, so no change made after this is missed.
        let _ = tokio::time::timeout(STATEMENT_TIMEOUT, listened.wait_for(|on| *on)).await;
        Ok(store)
    }

    /// This process's holder token (tests).
    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn error(&self, doing: &'static str, error: impl std::fmt::Display) -> StoreError {
        self.reachable.store(false, Ordering::Relaxed);
        StoreError {
            store: format!("PostgreSQL at {}", self.where_),
            doing,
            message: error.to_string(),
            lease_lost: false,
        }
    }

    /// Runs one statement (prepared once per connection) and returns its rows.
    async fn rows(
        &self,
        doing: &'static str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let client = self.client(doing).await?;
        let statement = client
            .prepare_cached(sql)
            .await
            .map_err(|e| self.error(doing, e))?;
        client
            .query(&statement, params)
            .await
            .map_err(|e| self.error(doing, e))
    }

    async fn client(&self, doing: &'static str) -> Result<deadpool_postgres::Object, StoreError> {
        let client = self.pool.get().await.map_err(|e| self.error(doing, e))?;
        self.reachable.store(true, Ordering::Relaxed);
        Ok(client)
    }

    /// Creates the tables, or brings them up to this version, once across replicas.
    async fn migrate(&self) -> Result<(), StoreError> {
        let doing = "migrating its schema";
        let mut client = self.client(doing).await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.error(doing, e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| self.error(doing, e))?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS hourglass_schema (version integer NOT NULL)")
            .await
            .map_err(|e| self.error(doing, e))?;
        let row = tx
            .query_one(
                "SELECT coalesce(max(version), 0) FROM hourglass_schema",
                &[],
            )
            .await
            .map_err(|e| self.error(doing, e))?;
        let version: i32 = row.get(0);
        let known = MIGRATIONS.len() as i32;
        if version > known {
            return Err(self.error(
                doing,
                format!("the database's schema is version {version}, newer than this gateway knows ({known}): upgrade this gateway"),
            ));
        }
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.batch_execute(migration)
                .await
                .map_err(|e| self.error(doing, e))?;
            let to = i as i32 + 1;
            tx.execute("INSERT INTO hourglass_schema (version) VALUES ($1)", &[&to])
                .await
                .map_err(|e| self.error(doing, e))?;
            tracing::info!(target: "hourglass::jobs", version = to, "job store schema migrated");
        }
        tx.commit().await.map_err(|e| self.error(doing, e))
    }

    /// Refreshes the size the store reports.
    async fn measure(&self) {
        let Ok(client) = self.client("measuring its size").await else {
            return;
        };
        let sql = "SELECT coalesce(sum(pg_total_relation_size(t::regclass)), 0)::bigint FROM unnest($1::text[]) t";
        let tables: Vec<&str> = TABLES.to_vec();
        if let Ok(row) = client.query_one(sql, &[&tables]).await {
            let bytes: i64 = row.get(0);
            self.used_bytes
                .store(bytes.max(0) as u64, Ordering::Relaxed);
        }
    }

    fn lease_ms(&self) -> i64 {
        self.lease.as_millis() as i64
    }

    async fn apply_now(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        let doing = "writing";
        let mut client = self.client(doing).await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.error(doing, e))?;
        let e = |error: tokio_postgres::Error| self.error(doing, error);
        // The jobs this write touches must be this process's (or new): lock them and look.
        let mut touched: Vec<&str> = changes.iter().filter_map(held_job).collect();
        touched.sort_unstable();
        touched.dedup();
        if !touched.is_empty() {
            let rows = tx
                .query(
                    "SELECT id, holder FROM hourglass_jobs WHERE id = ANY($1) FOR UPDATE",
                    &[&touched],
                )
                .await
                .map_err(e)?;
            for row in rows {
                let holder: Option<&str> = row.get(1);
                if holder != Some(self.holder.as_str()) {
                    let id: &str = row.get(0);
                    return Err(StoreError {
                        store: format!("PostgreSQL at {}", self.where_),
                        doing,
                        message: format!(
                            "job {id} is held by another instance ({}) now: this one's lease lapsed",
                            holder.unwrap_or("none")
                        ),
                        lease_lost: true,
                    });
                }
            }
        }
        let mut notify: Vec<String> = Vec::new();
        for change in &changes {
            self.write(&tx, change, &mut notify).await.map_err(e)?;
        }
        if !notify.is_empty() {
            notify.sort_unstable();
            notify.dedup();
            tx.execute(
                "SELECT pg_notify($1, n) FROM unnest($2::text[]) n",
                &[&CHANNEL, &notify],
            )
            .await
            .map_err(e)?;
        }
        tx.commit().await.map_err(e)
    }

    async fn write(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        change: &Change,
        notify: &mut Vec<String>,
    ) -> Result<(), tokio_postgres::Error> {
        match change {
            Change::Job(job) => {
                let record = serde_json::to_vec(job.as_ref()).unwrap_or_default();
                let finished = job.state.is_terminal();
                let statement = tx
                    .prepare_cached(
                        "INSERT INTO hourglass_jobs (id, record, finished, created_at, finished_at, holder, lease_until)
                         VALUES ($1, $2, $3, $4, $5, $6, now() + $7::float8 * interval '1 millisecond')
                         ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record, finished = EXCLUDED.finished,
                             finished_at = EXCLUDED.finished_at, lease_until = EXCLUDED.lease_until",
                    )
                    .await?;
                let lease = self.lease_ms() as f64;
                tx.execute(
                    &statement,
                    &[
                        &job.id,
                        &record,
                        &finished,
                        &(job.created_at as i64),
                        &job.finished_at.map(|at| at as i64),
                        &self.holder,
                        &lease,
                    ],
                )
                .await?;
                notify.push(format!("e:{}", job.id));
            }
            Change::Blob { id, blob, bytes } => {
                let statement = tx
                    .prepare_cached(
                        "INSERT INTO hourglass_job_blobs (job_id, kind, bytes) VALUES ($1, $2, $3)
                         ON CONFLICT (job_id, kind) DO UPDATE SET bytes = EXCLUDED.bytes",
                    )
                    .await?;
                tx.execute(&statement, &[id, &blob_kind(*blob), &bytes.as_ref()])
                    .await?;
            }
            Change::Events { id, first, events } => {
                let statement = tx
                    .prepare_cached(
                        "INSERT INTO hourglass_job_events (job_id, n, bytes)
                         SELECT $1, $2 + t.i - 1, t.b FROM unnest($3::bytea[]) WITH ORDINALITY AS t(b, i)
                         ON CONFLICT (job_id, n) DO UPDATE SET bytes = EXCLUDED.bytes",
                    )
                    .await?;
                let bytes: Vec<&[u8]> = events.iter().map(AsRef::as_ref).collect();
                tx.execute(&statement, &[id, &(*first as i64), &bytes])
                    .await?;
                notify.push(format!("e:{id}"));
            }
            Change::DropEventsFrom { id, from } => {
                tx.execute(
                    "DELETE FROM hourglass_job_events WHERE job_id = $1 AND n >= $2",
                    &[id, &(*from as i64)],
                )
                .await?;
            }
            Change::Delete(id) => {
                for sql in [
                    "DELETE FROM hourglass_job_events WHERE job_id = $1",
                    "DELETE FROM hourglass_job_blobs WHERE job_id = $1",
                    "DELETE FROM hourglass_jobs WHERE id = $1",
                ] {
                    tx.execute(sql, &[id]).await?;
                }
                notify.push(format!("e:{id}"));
            }
            Change::Delivery { id, bytes } => {
                let statement = tx
                    .prepare_cached(
                        "INSERT INTO hourglass_deliveries (id, bytes, holder, lease_until)
                         VALUES ($1, $2, $3, now() + $4::float8 * interval '1 millisecond')
                         ON CONFLICT (id) DO UPDATE SET bytes = EXCLUDED.bytes, holder = EXCLUDED.holder,
                             lease_until = EXCLUDED.lease_until",
                    )
                    .await?;
                let lease = self.lease_ms() as f64;
                tx.execute(&statement, &[id, &bytes.as_ref(), &self.holder, &lease])
                    .await?;
            }
            Change::Delivered(id) => {
                tx.execute("DELETE FROM hourglass_deliveries WHERE id = $1", &[id])
                    .await?;
            }
            Change::Affinity {
                response_id,
                upstream,
                at,
            } => {
                tx.execute(
                    "INSERT INTO hourglass_affinities (response_id, upstream, at) VALUES ($1, $2, $3)
                     ON CONFLICT (response_id) DO UPDATE SET upstream = EXCLUDED.upstream, at = EXCLUDED.at",
                    &[response_id, upstream, &(*at as i64)],
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Reads jobs from rows of `(record, cancel_requested)`.
    fn jobs_of(&self, rows: Vec<tokio_postgres::Row>) -> Vec<Job> {
        rows.into_iter()
            .filter_map(|row| {
                let record: &[u8] = row.get(0);
                match serde_json::from_slice::<Job>(record) {
                    Ok(mut job) => {
                        job.cancel_requested = row.get(1);
                        Some(job)
                    }
                    Err(error) => {
                        tracing::warn!(target: "hourglass::jobs", %error, "a stored job does not read; left alone");
                        None
                    }
                }
            })
            .collect()
    }
}

/// The job a change writes, when only its holder may write it.
fn held_job(change: &Change) -> Option<&str> {
    match change {
        Change::Job(job) => Some(&job.id),
        Change::Blob { id, .. } | Change::Events { id, .. } | Change::DropEventsFrom { id, .. } => {
            Some(id)
        }
        _ => None,
    }
}

fn blob_kind(blob: Blob) -> i16 {
    match blob {
        Blob::Request => 0,
        Blob::Answer => 1,
    }
}

/// Where the database is, without the user's password: `host:port/dbname`.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

/// A parse error's text, which names a part of the URL but never the password.
fn without_url(error: &tokio_postgres::Error) -> String {
    error.to_string()
}

/// TLS as `sslmode` asks: rustls on ring with the Mozilla roots (no ALPN; PostgreSQL's own).
fn tls() -> MakeRustlsConnect {
    let mut config = (*hourglass_engine::upstream::dial::tls_config()).clone();
    config.alpn_protocols.clear();
    MakeRustlsConnect::new(config)
}

/// Listens for other replicas' notices on one connection of its own, reconnecting with a
/// growing pause; after each (re)connection every follower looks again (`Notice::Resync`), as
/// notices sent while it was away are lost.
async fn listen(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    notices: broadcast::Sender<Notice>,
    listening: tokio::sync::watch::Sender<bool>,
    where_: String,
) {
    let mut pause = Duration::from_millis(100);
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let (alive, mut ended) = tokio::sync::oneshot::channel::<()>();
                let relay = notices.clone();
                let driver = tokio::spawn(async move {
                    while let Some(message) =
                        std::future::poll_fn(|cx| connection.poll_message(cx)).await
                    {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                if let Some(notice) = Notice::parse(n.payload()) {
                                    let _ = relay.send(notice);
                                }
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                    drop(alive);
                });
                if client
                    .batch_execute(&format!("LISTEN {CHANNEL}"))
                    .await
                    .is_ok()
                {
                    pause = Duration::from_millis(100);
                    listening.send_replace(true);
                    let _ = notices.send(Notice::Resync);
                    tracing::debug!(target: "hourglass::jobs", %where_, "listening for other replicas' changes");
                    let _ = (&mut ended).await;
                }
                driver.abort();
                tracing::warn!(target: "hourglass::jobs", %where_, "the job store's notice connection closed; reconnecting");
            }
            Err(error) => {
                tracing::debug!(target: "hourglass::jobs", %where_, %error, "the job store's notice connection failed; retrying");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

impl Store for Postgres {
    fn describe(&self) -> String {
        format!(
            "PostgreSQL at {} (instance {}, lease {} ms)",
            self.where_,
            self.instance,
            self.lease.as_millis()
        )
    }

    fn apply(&self, changes: Vec<Change>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            match tokio::time::timeout(STATEMENT_TIMEOUT, self.apply_now(changes)).await {
                Ok(result) => result,
                Err(_) => Err(self.error("writing", "no answer within 5 s")),
            }
        })
    }

    fn job(&self, id: &str) -> BoxFuture<'_, Result<Option<Job>, StoreError>> {
        let id = id.to_owned();
        Box::pin(async move {
            let rows = self
                .rows(
                    "reading a job",
                    "SELECT record, cancel_requested FROM hourglass_jobs WHERE id = $1",
                    &[&id],
                )
                .await?;
            Ok(self.jobs_of(rows).pop())
        })
    }

    fn blob(&self, id: &str, blob: Blob) -> BoxFuture<'_, Result<Option<Bytes>, StoreError>> {
        let id = id.to_owned();
        Box::pin(async move {
            let rows = self
                .rows(
                    "reading a body",
                    "SELECT bytes FROM hourglass_job_blobs WHERE job_id = $1 AND kind = $2",
                    &[&id, &blob_kind(blob)],
                )
                .await?;
            Ok(rows
                .into_iter()
                .next()
                .map(|row| Bytes::from(row.get::<_, Vec<u8>>(0))))
        })
    }

    fn events(
        &self,
        id: &str,
        from: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Bytes>, StoreError>> {
        let id = id.to_owned();
        Box::pin(async move {
            let rows = self
                .rows(
                    "reading events",
                    "SELECT bytes FROM hourglass_job_events WHERE job_id = $1 AND n >= $2 ORDER BY n LIMIT $3",
                    &[&id, &(from as i64), &(limit as i64)],
                )
                .await?;
            Ok(rows
                .into_iter()
                .map(|row| Bytes::from(row.get::<_, Vec<u8>>(0)))
                .collect())
        })
    }

    fn unfinished(&self) -> BoxFuture<'_, Result<Vec<Job>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .rows(
                    "reading unfinished jobs",
                    "SELECT record, cancel_requested FROM hourglass_jobs WHERE NOT finished ORDER BY created_at",
                    &[],
                )
                .await?;
            Ok(self.jobs_of(rows))
        })
    }

    fn expire(
        &self,
        before: u64,
        affinity_before: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let doing = "expiring";
            let mut client = self.client(doing).await?;
            let tx = client
                .transaction()
                .await
                .map_err(|e| self.error(doing, e))?;
            let e = |error: tokio_postgres::Error| self.error(doing, error);
            let before = before.min(i64::MAX as u64) as i64;
            let rows = tx
                .query(
                    "DELETE FROM hourglass_jobs WHERE id IN (
                         SELECT id FROM hourglass_jobs WHERE finished AND finished_at < $1
                         ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)
                     RETURNING id",
                    &[&before, &(limit as i64)],
                )
                .await
                .map_err(e)?;
            let ids: Vec<String> = rows.into_iter().map(|row| row.get(0)).collect();
            if !ids.is_empty() {
                for sql in [
                    "DELETE FROM hourglass_job_events WHERE job_id = ANY($1)",
                    "DELETE FROM hourglass_job_blobs WHERE job_id = ANY($1)",
                ] {
                    tx.execute(sql, &[&ids]).await.map_err(e)?;
                }
            }
            tx.execute(
                "DELETE FROM hourglass_affinities WHERE at < $1",
                &[&(affinity_before.min(i64::MAX as u64) as i64)],
            )
            .await
            .map_err(e)?;
            tx.commit().await.map_err(e)?;
            Ok(ids)
        })
    }

    fn deliveries(&self) -> BoxFuture<'_, Result<Vec<(String, Bytes)>, StoreError>> {
        Box::pin(async move {
            let lease = self.lease_ms() as f64;
            let rows = self
                .rows(
                    "taking webhook deliveries",
                    "UPDATE hourglass_deliveries d SET holder = $1, lease_until = now() + $2::float8 * interval '1 millisecond'
                     FROM (SELECT id FROM hourglass_deliveries
                           WHERE holder IS NULL OR lease_until IS NULL OR lease_until < now()
                           FOR UPDATE SKIP LOCKED) lapsed
                     WHERE d.id = lapsed.id
                     RETURNING d.id, d.bytes",
                    &[&self.holder, &lease],
                )
                .await?;
            Ok(rows
                .into_iter()
                .map(|row| (row.get(0), Bytes::from(row.get::<_, Vec<u8>>(1))))
                .collect())
        })
    }

    fn affinity(&self, response_id: &str) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        let response_id = response_id.to_owned();
        Box::pin(async move {
            let rows = self
                .rows(
                    "reading an affinity",
                    "SELECT upstream FROM hourglass_affinities WHERE response_id = $1",
                    &[&response_id],
                )
                .await?;
            Ok(rows.into_iter().next().map(|row| row.get(0)))
        })
    }

    fn size(&self) -> Size {
        let used = self.used_bytes.load(Ordering::Relaxed);
        Size { file: used, used }
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.lease)
    }

    fn claim(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Job>, StoreError>> {
        Box::pin(async move {
            let lease = self.lease_ms() as f64;
            let rows = self
                .rows(
                    "taking jobs whose lease lapsed",
                    "UPDATE hourglass_jobs j SET holder = $1, lease_until = now() + $2::float8 * interval '1 millisecond'
                     FROM (SELECT id FROM hourglass_jobs
                           WHERE NOT finished AND (lease_until IS NULL OR lease_until < now())
                           ORDER BY created_at LIMIT $3 FOR UPDATE SKIP LOCKED) lapsed
                     WHERE j.id = lapsed.id
                     RETURNING j.record, j.cancel_requested",
                    &[&self.holder, &lease, &(limit.min(i64::MAX as usize) as i64)],
                )
                .await?;
            let mut jobs = self.jobs_of(rows);
            jobs.sort_by_key(|job| job.created_at);
            Ok(jobs)
        })
    }

    fn renew(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let lease = self.lease_ms() as f64;
            for sql in [
                "UPDATE hourglass_jobs SET lease_until = now() + $2::float8 * interval '1 millisecond' WHERE holder = $1 AND NOT finished",
                "UPDATE hourglass_deliveries SET lease_until = now() + $2::float8 * interval '1 millisecond' WHERE holder = $1",
            ] {
                self.rows("renewing its leases", sql, &[&self.holder, &lease])
                    .await?;
            }
            self.measure().await;
            Ok(())
        })
    }

    fn request_cancel(&self, id: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let id = id.to_owned();
        Box::pin(async move {
            let doing = "asking for a cancel";
            let mut client = self.client(doing).await?;
            let tx = client
                .transaction()
                .await
                .map_err(|e| self.error(doing, e))?;
            let e = |error: tokio_postgres::Error| self.error(doing, error);
            tx.execute(
                "UPDATE hourglass_jobs SET cancel_requested = true WHERE id = $1 AND NOT finished",
                &[&id],
            )
            .await
            .map_err(e)?;
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &format!("c:{id}")])
                .await
                .map_err(e)?;
            tx.commit().await.map_err(e)
        })
    }

    fn notices(&self) -> Option<broadcast::Receiver<Notice>> {
        Some(self.notices.subscribe())
    }

    fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }
}
