//! The jobs service the gateway holds: submission (durable before it is acknowledged), the
//! queue and the runners, lookups that never touch the upstream (a running job is answered from
//! memory, a finished one from a store snapshot; no lock is held across the store), cancel,
//! delete, event followers, and the sweep that keeps the store within its retention and size.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use hourglass_config::JobsSettings;
use hourglass_engine::{CallError, Endpoint, Engine, ErrorCode};
use http::{HeaderMap, StatusCode};
use tokio::sync::{Notify, OnceCell, Semaphore, mpsc, watch};

use crate::ending;
use crate::ids::{self, Clock};
use crate::job::{Asked, Job, Kind, State};
use crate::recovery::{self, Recovered};
use crate::responses;
use crate::store::{Blob, BoxFuture, Change, Embedded, Notice, Store, StoreError};
use crate::webhooks::Webhooks;

/// The engine a job runs on when it starts: the gateway's current one (a reload applies to jobs
/// that start after it).
pub type EngineSource = Arc<dyn Fn() -> Arc<Engine> + Send + Sync>;

/// Opens a store that lives elsewhere (a server database); tried again at each use until it
/// opens.
pub type Opener =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Arc<dyn Store>, StoreError>> + Send + Sync>;

/// Where the service's store comes from.
enum Source {
    /// The embedded store, in this file (opened at the first job, or at start when it exists).
    Embedded(PathBuf),
    /// A store the caller made (tests).
    Given(Arc<dyn Store>),
    /// A store opened by the caller's function (described without its secrets).
    Remote { describe: String, open: Opener },
}

/// The file of the embedded store, in its data directory.
pub const STORE_FILE: &str = "jobs.redb";

/// How long a cancel waits for the job's runner to record its end.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// How long an affinity (which upstream holds a response the gateway did not make) is kept:
/// as long as OpenAI keeps a stored response.
const AFFINITY_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// What a client submits.
#[derive(Debug, Clone)]
pub struct Submission {
    /// Which interface.
    pub kind: Kind,
    /// The fingerprint of the client's key ([`ids::owner`]).
    pub owner: String,
    /// The endpoint called.
    pub endpoint: Endpoint,
    /// The path under `/v1`, with its query.
    pub path: String,
    /// The headers to pass on (the gateway's own key already removed).
    pub headers: HeaderMap,
    /// The body to send upstream.
    pub body: Bytes,
    /// The model asked for.
    pub model: Option<String>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The submission's request id.
    pub request_id: String,
    /// A webhook URL the job names itself.
    pub webhook: Option<String>,
    /// The job's deadline, from now (`timeouts.job` of its model).
    pub deadline: Duration,
    /// The request fields a Response object repeats.
    pub echo: Option<serde_json::Value>,
    /// The one upstream it may go to (a stored response it continues lives there).
    pub pinned: Option<String>,
}

/// Counts and gauges for `/metrics` and `/status`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Stats {
    /// Whether the store is open.
    pub open: bool,
    /// Whether the store answered its last use (an embedded store not yet opened counts).
    pub reachable: bool,
    /// The store, described.
    pub store: String,
    /// Jobs waiting for a runner.
    pub queued: u64,
    /// Jobs running.
    pub running: u64,
    /// Age of the oldest queued job, in seconds.
    pub oldest_queued_s: f64,
    /// Jobs submitted since start.
    pub submitted: u64,
    /// Jobs ended since start, by terminal state (`completed`, `failed`, …).
    pub ended: std::collections::BTreeMap<&'static str, u64>,
    /// Jobs started again from the start after a restart.
    pub rerun: u64,
    /// Jobs that ended `gateway_restarted`.
    pub restarted: u64,
    /// Store bytes on disk, and holding data.
    pub store_file_bytes: u64,
    /// Bytes of the store holding data.
    pub store_used_bytes: u64,
    /// Webhook deliveries: delivered, failed tries, given up, pending.
    pub webhooks_delivered: u64,
    /// Failed tries of webhook deliveries.
    pub webhook_failures: u64,
    /// Deliveries given up after `jobs.webhook_retry_for`.
    pub webhooks_given_up: u64,
    /// Deliveries waiting.
    pub webhooks_pending: u64,
}

/// Where a job is, as far as who may write it goes: the queue's (a cancel takes it), a
/// runner's (only that runner writes it), or finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Queued,
    Running,
    Done,
}

/// A job not yet finished: its latest durable record, who writes it, and who is waiting on it.
pub(crate) struct Live {
    pub job: Mutex<Job>,
    pub phase: Mutex<Phase>,
    /// Bumped after every durable change; followers wait on it.
    pub changed: watch::Sender<u64>,
    /// Set to ask its runner to stop.
    pub cancel: watch::Sender<bool>,
    /// Set when another instance took the job (this one's lease lapsed): its runner stops
    /// without a word, as the job is no longer its to end.
    pub lost: std::sync::atomic::AtomicBool,
}

impl Live {
    fn new(job: Job) -> Arc<Live> {
        Arc::new(Live {
            job: Mutex::new(job),
            phase: Mutex::new(Phase::Queued),
            changed: watch::Sender::new(0),
            cancel: watch::Sender::new(false),
            lost: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn snapshot(&self) -> Job {
        lock(&self.job).clone()
    }
}

/// Counters behind [`Stats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub submitted: AtomicU64,
    pub ended: [AtomicU64; 4],
    pub rerun: AtomicU64,
    pub restarted: AtomicU64,
}

/// The terminal states, in the order of `Counters::ended`.
pub(crate) const ENDINGS: [State; 4] = [
    State::Completed,
    State::Failed,
    State::Cancelled,
    State::Incomplete,
];

/// The shared state of the service.
pub(crate) struct Inner {
    pub settings: JobsSettings,
    source: Source,
    store: OnceCell<Arc<dyn Store>>,
    started: OnceCell<()>,
    /// The runtime the service was made on: the store is opened and the service's tasks
    /// (runners, sweeps, database connections) run there, not on whichever of the gateway's
    /// serving threads asked first.
    home: Option<tokio::runtime::Handle>,
    /// Followers of jobs other instances run, by job: told by the store's notices.
    remote: Mutex<HashMap<String, watch::Sender<u64>>>,
    pub engine: EngineSource,
    pub clock: Clock,
    live: Mutex<HashMap<String, Arc<Live>>>,
    queue: Mutex<VecDeque<String>>,
    queued: Notify,
    pub running: Arc<Semaphore>,
    pub counters: Counters,
    pub webhooks: Webhooks,
    stop: watch::Sender<bool>,
}

/// Background calls: the service.
pub struct Jobs {
    inner: Arc<Inner>,
}

impl Drop for Jobs {
    fn drop(&mut self) {
        self.inner.stop.send_replace(true);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Jobs {
    /// The service with the embedded store under `settings.data_dir` (or `default_dir` when it
    /// names none), opened when first needed: at [`Jobs::start`] when the file exists (there may
    /// be jobs to recover), else at the first submission.
    pub fn new(
        settings: JobsSettings,
        default_dir: PathBuf,
        engine: EngineSource,
        clock: Clock,
    ) -> Jobs {
        let dir = settings.data_dir.clone().unwrap_or(default_dir);
        Jobs::build(
            settings,
            Source::Embedded(dir.join(STORE_FILE)),
            engine,
            clock,
        )
    }

    /// The service on a store `open` opens (a server database shared by several gateways),
    /// described as `describe` until it is open.
    pub fn remote(
        settings: JobsSettings,
        describe: String,
        open: Opener,
        engine: EngineSource,
        clock: Clock,
    ) -> Jobs {
        Jobs::build(settings, Source::Remote { describe, open }, engine, clock)
    }

    /// The service on a store of the caller's (a server database; tests).
    pub fn with_store(
        settings: JobsSettings,
        store: Arc<dyn Store>,
        engine: EngineSource,
        clock: Clock,
    ) -> Jobs {
        Jobs::build(settings, Source::Given(store), engine, clock)
    }

    fn build(settings: JobsSettings, source: Source, engine: EngineSource, clock: Clock) -> Jobs {
        let running = Arc::new(Semaphore::new(settings.max_running));
        let webhooks = Webhooks::new(&settings, clock.clone());
        Jobs {
            inner: Arc::new(Inner {
                settings,
                source,
                store: OnceCell::new(),
                started: OnceCell::new(),
                home: tokio::runtime::Handle::try_current().ok(),
                remote: Mutex::new(HashMap::new()),
                engine,
                clock,
                live: Mutex::new(HashMap::new()),
                queue: Mutex::new(VecDeque::new()),
                queued: Notify::new(),
                running,
                counters: Counters::default(),
                webhooks,
                stop: watch::Sender::new(false),
            }),
        }
    }

    /// The store's path, for the embedded store.
    pub fn path(&self) -> Option<&std::path::Path> {
        match &self.inner.source {
            Source::Embedded(path) => Some(path),
            _ => None,
        }
    }

    /// Opens the store now if there may be jobs to recover in it (a store given by the caller
    /// or opened elsewhere, or an embedded file that exists), recovers them and starts the
    /// runners.
    pub async fn start(&self) -> Result<(), CallError> {
        let open_now = match &self.inner.source {
            Source::Embedded(path) => path.exists(),
            Source::Given(_) | Source::Remote { .. } => true,
        };
        if !open_now {
            return Ok(());
        }
        let Err(error) = self.inner.store().await else {
            return Ok(());
        };
        if matches!(self.inner.source, Source::Remote { .. }) {
            // A server database may come later: keep trying, so the replica recovers jobs and
            // becomes ready once it answers, not only at the next submission.
            let inner = self.inner.clone();
            tokio::spawn(async move {
                let mut stop = inner.stop.subscribe();
                while inner.opened().is_none() {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = stopped(&mut stop) => return,
                    }
                    if inner.store().await.is_ok() {
                        tracing::info!(target: "hourglass::jobs", "the job store answers: background jobs are taken again");
                    }
                }
            });
        }
        Err(error)
    }

    /// Whether the store has opened (an embedded store not yet opened counts: it opens at the
    /// first job): a replica is ready once it has, even if the store is away later.
    pub fn opened(&self) -> bool {
        self.inner.store.get().is_some() || matches!(self.inner.source, Source::Embedded(_))
    }

    /// Whether the store answered its last use (jobs can be taken now).
    pub fn reachable(&self) -> bool {
        match self.inner.store.get() {
            Some(store) => store.reachable(),
            None => matches!(self.inner.source, Source::Embedded(_)),
        }
    }

    /// Takes a job: stored durably, then queued. Refused when the queue is full or the store
    /// has no room (`too_many_jobs`), or the store fails (`jobs_unavailable`).
    pub async fn submit(&self, submission: Submission) -> Result<Job, CallError> {
        let inner = &self.inner;
        if !inner.settings.enabled {
            return Err(CallError::before_attempts(
                ErrorCode::BadRequest,
                StatusCode::BAD_REQUEST,
                "background calls are off on this gateway (jobs.enabled = false)".to_owned(),
            ));
        }
        if let Some(url) = &submission.webhook {
            inner.webhooks.check_url(url)?;
        }
        let store = inner.store().await?;
        inner.check_room(store.as_ref()).await?;
        let now = (inner.clock)();
        let mut job = new_job(submission.clone(), now);
        let mut changes = vec![Change::Blob {
            id: job.id.clone(),
            blob: Blob::Request,
            bytes: submission.body,
        }];
        if job.kind == Kind::Response && job.asked.stream {
            let created = responses::created_event(&job);
            changes.push(Change::Events {
                id: job.id.clone(),
                first: 0,
                events: vec![created],
            });
            job.events = 1;
            job.own_events = 1;
        }
        changes.push(Change::Job(Box::new(job.clone())));
        store.apply(changes).await.map_err(unavailable)?;
        inner.counters.submitted.fetch_add(1, Ordering::Relaxed);
        tracing::info!(target: "hourglass::jobs", job = %job.id, request_id = %job.request_id, model = ?job.asked.model, state = "queued", "job submitted");
        inner.enqueue(Live::new(job.clone()));
        Ok(job)
    }

    /// The job `id` if it belongs to `owner`; `job_not_found` otherwise (another key's job is
    /// not told apart from none). A running job is answered from memory.
    pub async fn get(&self, id: &str, owner: &str) -> Result<Job, CallError> {
        let job = self.inner.find(id).await?;
        match job {
            Some(job) if job.owner == owner => Ok(job),
            _ => Err(not_found(id)),
        }
    }

    /// A finished job's answer body: what the synchronous call would have returned (a
    /// streamed job's is its events, as the stream sent them).
    pub async fn answer(&self, job: &Job) -> Result<Bytes, CallError> {
        let store = self.inner.store().await?;
        if job.kind == Kind::Job && job.asked.stream {
            let mut body = Vec::new();
            let mut next = 0;
            loop {
                let events = store
                    .events(&job.id, next, 1024)
                    .await
                    .map_err(unavailable)?;
                if events.is_empty() {
                    return Ok(Bytes::from(body));
                }
                next += events.len() as u64;
                events.iter().for_each(|e| body.extend_from_slice(e));
            }
        }
        let body = store
            .blob(&job.id, Blob::Answer)
            .await
            .map_err(unavailable)?;
        Ok(body.unwrap_or_default())
    }

    /// Cancels the job (idempotent): a queued one ends at once, a running one's upstream call is
    /// dropped and it ends `cancelled`; a finished one is returned as it is.
    pub async fn cancel(&self, id: &str, owner: &str) -> Result<Job, CallError> {
        let job = self.get(id, owner).await?;
        if job.state.is_terminal() {
            return Ok(job);
        }
        match self.inner.live(id) {
            Some(live) => self.inner.cancel_here(&live).await,
            None => self.inner.cancel_elsewhere(id).await?,
        }
        self.get(id, owner).await
    }

    /// Deletes the job, cancelling it first if it runs.
    pub async fn delete(&self, id: &str, owner: &str) -> Result<Job, CallError> {
        let job = self.cancel(id, owner).await?;
        let store = self.inner.store().await?;
        store
            .apply(vec![Change::Delete(id.to_owned())])
            .await
            .map_err(unavailable)?;
        tracing::info!(target: "hourglass::jobs", job = %id, request_id = %job.request_id, "job deleted");
        Ok(job)
    }

    /// The job's events from number `from` on, then each as it is stored, until the job ends
    /// (a job made without a stream has one event: its whole answer, once it has ended).
    pub fn follow(&self, job: &Job, from: u64) -> mpsc::Receiver<Bytes> {
        crate::follow::spawn(self.inner.clone(), job.id.clone(), from)
    }

    /// The upstream holding a response the gateway did not make, if one was recorded.
    pub async fn affinity(&self, response_id: &str) -> Option<String> {
        let store = self.inner.store.get()?;
        store.affinity(response_id).await.ok().flatten()
    }

    /// Records which upstream holds a response the gateway did not make (in the background:
    /// the synchronous call that made it does not wait for the store).
    pub fn remember(&self, response_id: String, upstream: String) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let Ok(store) = inner.store().await else {
                return;
            };
            let at = (inner.clock)();
            let change = Change::Affinity {
                response_id,
                upstream,
                at,
            };
            if let Err(error) = store.apply(vec![change]).await {
                tracing::warn!(target: "hourglass::jobs", %error, "a response's upstream was not recorded");
            }
        });
    }

    /// Counts and gauges.
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &JobsSettings {
        &self.inner.settings
    }
}

impl Inner {
    /// Cancels a job this process holds: a queued one ends at once, a running one's runner is
    /// told to drop its call, and its end is waited for (briefly).
    pub(crate) async fn cancel_here(self: &Arc<Self>, live: &Arc<Live>) {
        let phase = {
            let mut phase = lock(&live.phase);
            let was = *phase;
            if was == Phase::Queued {
                *phase = Phase::Done;
            }
            was
        };
        match phase {
            Phase::Queued => {
                let id = live.snapshot().id;
                lock(&self.queue).retain(|queued| *queued != id);
                // A job is live only once the store is open.
                if let Some(store) = self.opened() {
                    ending::cancel_queued(self, store.as_ref(), live).await;
                }
            }
            Phase::Running => {
                let mut changed = live.changed.subscribe();
                live.cancel.send_replace(true);
                // The runner drops the upstream call and records the end; wait for it, briefly.
                let ended = async {
                    while !live.snapshot().state.is_terminal() {
                        if changed.changed().await.is_err() {
                            break;
                        }
                    }
                };
                let _ = tokio::time::timeout(CANCEL_WAIT, ended).await;
            }
            Phase::Done => {}
        }
    }

    /// Asks the instance that holds job `id` to cancel it, and waits (briefly) for its end.
    async fn cancel_elsewhere(self: &Arc<Self>, id: &str) -> Result<(), CallError> {
        let store = self.store().await?;
        if store.lease().is_none() {
            return Ok(());
        }
        let mut changed = self.watch(id);
        store.request_cancel(id).await.map_err(unavailable)?;
        let ended = async {
            loop {
                match self.find(id).await {
                    Ok(Some(job)) if !job.state.is_terminal() => {}
                    _ => return,
                }
                let _ = tokio::time::timeout(Duration::from_millis(250), changed.changed()).await;
            }
        };
        let _ = tokio::time::timeout(CANCEL_WAIT, ended).await;
        Ok(())
    }

    /// A receiver that changes when job `id` does: from this process's runner when it holds
    /// the job, else from the store's notices of other instances' writes.
    pub(crate) fn watch(&self, id: &str) -> watch::Receiver<u64> {
        if let Some(live) = self.live(id) {
            return live.changed.subscribe();
        }
        lock(&self.remote)
            .entry(id.to_owned())
            .or_insert_with(|| watch::Sender::new(0))
            .subscribe()
    }

    /// Tells the followers of job `id` (or of every job, for `None`) that it changed elsewhere.
    fn changed_elsewhere(&self, id: Option<&str>) {
        let mut remote = lock(&self.remote);
        remote.retain(|_, sender| sender.receiver_count() > 0);
        match id {
            Some(id) => {
                if let Some(sender) = remote.get(id) {
                    sender.send_modify(|n| *n += 1);
                }
            }
            None => remote.values().for_each(|s| s.send_modify(|n| *n += 1)),
        }
    }

    /// The store, opened (and its jobs recovered, its runners started) on first use, on the
    /// service's own runtime.
    pub async fn store(self: &Arc<Self>) -> Result<Arc<dyn Store>, CallError> {
        if let Some(store) = self.store.get()
            && self.started.initialized()
        {
            return Ok(store.clone());
        }
        let here = tokio::runtime::Handle::try_current().map(|handle| handle.id());
        let Some(home) = (self.home.clone()).filter(|home| here.ok() != Some(home.id())) else {
            return self.open_and_start().await;
        };
        let inner = self.clone();
        match home
            .spawn(async move { inner.open_and_start().await })
            .await
        {
            Ok(opened) => opened,
            Err(error) => Err(unavailable(StoreError {
                store: match &self.source {
                    Source::Embedded(_) => "redb".to_owned(),
                    Source::Remote { describe, .. } => describe.clone(),
                    Source::Given(store) => store.describe(),
                },
                doing: "opening",
                message: format!("the runtime the job service runs on has stopped: {error}"),
                lease_lost: false,
            })),
        }
    }

    /// [`Inner::store`]'s work, on the runtime it runs on.
    async fn open_and_start(self: &Arc<Self>) -> Result<Arc<dyn Store>, CallError> {
        let store = self
            .store
            .get_or_try_init(|| async {
                let store: Arc<dyn Store> = match &self.source {
                    Source::Given(store) => store.clone(),
                    Source::Remote { open, .. } => open().await?,
                    Source::Embedded(path) => {
                        let path = path.clone();
                        let opened =
                            tokio::task::spawn_blocking(move || Embedded::open(&path)).await;
                        match opened {
                            Ok(result) => Arc::new(result?),
                            Err(error) => {
                                return Err(StoreError {
                                    store: "redb".to_owned(),
                                    doing: "opening",
                                    message: error.to_string(),
                                    lease_lost: false,
                                });
                            }
                        }
                    }
                };
                tracing::info!(target: "hourglass::jobs", store = %store.describe(), "job store open");
                Ok(store)
            })
            .await
            .map_err(unavailable)?
            .clone();
        self.started(&store).await;
        Ok(store)
    }

    /// The store, when it is open already.
    pub fn opened(&self) -> Option<Arc<dyn Store>> {
        self.store.get().cloned()
    }

    /// Recovers the store's unfinished jobs and starts the runners, the sweep and the webhook
    /// sender, once.
    async fn started(self: &Arc<Self>, store: &Arc<dyn Store>) {
        self.started
            .get_or_init(|| async {
                if let Some(notices) = store.notices() {
                    tokio::spawn(relay(self.clone(), notices));
                }
                if let Err(error) = self.recover(store).await {
                    tracing::error!(target: "hourglass::jobs", %error, "unfinished jobs could not be recovered");
                }
                tokio::spawn(dispatch(self.clone()));
                tokio::spawn(sweep(self.clone(), store.clone()));
                self.webhooks.start(store.clone(), self.stop.subscribe()).await;
                if let Some(lease) = store.lease() {
                    tokio::spawn(hold(self.clone(), store.clone(), lease));
                }
            })
            .await;
    }

    /// Takes the unfinished jobs no live process holds (at start: every one the last process
    /// left; with a shared store, also those whose instance died) and runs, re-runs or ends
    /// each by the restart rule — up to the room the queue has.
    async fn recover(self: &Arc<Self>, store: &Arc<dyn Store>) -> Result<(), StoreError> {
        // A store of this process's own is recovered whole, once; a shared one a queue's worth
        // at a time (the rest stays for this replica's next look, or another's).
        let room = match store.lease() {
            None => usize::MAX,
            Some(_) => self
                .settings
                .max_queued
                .saturating_sub(lock(&self.queue).len()),
        };
        if room == 0 {
            return Ok(());
        }
        for job in store.claim(room).await? {
            if job.cancel_requested {
                let live = Live::new(job);
                *lock(&live.phase) = Phase::Done;
                lock(&self.live).insert(live.snapshot().id, live.clone());
                ending::cancel_queued(self, store.as_ref(), &live).await;
                continue;
            }
            match recovery::recover(job) {
                Recovered::Run(job) => {
                    let changes = vec![
                        Change::DropEventsFrom {
                            id: job.id.clone(),
                            from: job.events,
                        },
                        Change::Job(Box::new(job.clone())),
                    ];
                    store.apply(changes).await?;
                    if job.runs > 0 {
                        self.counters.rerun.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::info!(target: "hourglass::jobs", job = %job.id, request_id = %job.request_id, state = "queued", runs = job.runs, "job recovered: it runs");
                    self.enqueue(Live::new(job));
                }
                Recovered::Restarted(job) => {
                    ending::restarted(self, store.as_ref(), job).await?;
                    self.counters.restarted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    fn enqueue(&self, live: Arc<Live>) {
        let id = live.snapshot().id;
        lock(&self.live).insert(id.clone(), live);
        lock(&self.queue).push_back(id);
        self.queued.notify_one();
    }

    pub fn live(&self, id: &str) -> Option<Arc<Live>> {
        lock(&self.live).get(id).cloned()
    }

    /// Forgets a finished job (after its last durable change; followers read the store next).
    pub fn finished(&self, id: &str) {
        lock(&self.live).remove(id);
    }

    /// The job, from memory when it runs, else from the store.
    pub async fn find(self: &Arc<Self>, id: &str) -> Result<Option<Job>, CallError> {
        if let Some(live) = self.live(id) {
            return Ok(Some(live.snapshot()));
        }
        let store = self.store().await?;
        store.job(id).await.map_err(unavailable)
    }

    /// Refuses a job when the queue is full, or the store is past its size after the oldest
    /// finished jobs were let go.
    async fn check_room(&self, store: &dyn Store) -> Result<(), CallError> {
        let queued = lock(&self.queue).len();
        if queued >= self.settings.max_queued {
            return Err(too_many(format!(
                "{queued} background jobs are waiting already (jobs.max_queued = {}); retry later",
                self.settings.max_queued
            )));
        }
        let max = self.settings.max_store_bytes;
        for _ in 0..16 {
            if store.size().used <= max {
                return Ok(());
            }
            let evicted = store.expire(u64::MAX, 0, 64).await.map_err(unavailable)?;
            if evicted.is_empty() {
                break;
            }
            tracing::warn!(target: "hourglass::jobs", count = evicted.len(), "the job store is past jobs.max_store_size: the oldest finished jobs were deleted before their retention ended");
        }
        if store.size().used <= max {
            return Ok(());
        }
        Err(too_many(format!(
            "the job store holds {} bytes of unfinished jobs, past jobs.max_store_size ({max} bytes); retry later",
            store.size().used
        )))
    }

    fn stats(&self) -> Stats {
        let queued_ids: Vec<String> = lock(&self.queue).iter().cloned().collect();
        let now = (self.clock)();
        let oldest = queued_ids
            .first()
            .and_then(|id| self.live(id))
            .map_or(0.0, |live| {
                now.saturating_sub(live.snapshot().created_at) as f64 / 1000.0
            });
        let live = lock(&self.live).len();
        let store = self.store.get();
        let size = store.map(|s| s.size()).unwrap_or_default();
        let c = &self.counters;
        let webhooks = self.webhooks.stats();
        Stats {
            open: store.is_some(),
            reachable: store.map_or(matches!(self.source, Source::Embedded(_)), |s| {
                s.reachable()
            }),
            store: store.map_or_else(
                || match &self.source {
                    Source::Embedded(path) => {
                        format!("redb at {} (opens at the first job)", path.display())
                    }
                    Source::Remote { describe, .. } => format!("{describe} (not reachable yet)"),
                    Source::Given(store) => store.describe(),
                },
                |s| s.describe(),
            ),
            queued: queued_ids.len() as u64,
            running: live.saturating_sub(queued_ids.len()) as u64,
            oldest_queued_s: oldest,
            submitted: c.submitted.load(Ordering::Relaxed),
            ended: ENDINGS
                .iter()
                .zip(&c.ended)
                .map(|(state, n)| (state.name(), n.load(Ordering::Relaxed)))
                .collect(),
            rerun: c.rerun.load(Ordering::Relaxed),
            restarted: c.restarted.load(Ordering::Relaxed),
            store_file_bytes: size.file,
            store_used_bytes: size.used,
            webhooks_delivered: webhooks.delivered,
            webhook_failures: webhooks.failures,
            webhooks_given_up: webhooks.given_up,
            webhooks_pending: webhooks.pending,
        }
    }
}

/// Resolves once the service is dropped.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Hands queued jobs to runners, at most `jobs.max_running` at once.
async fn dispatch(inner: Arc<Inner>) {
    let mut stop = inner.stop.subscribe();
    loop {
        let permit = tokio::select! {
            permit = inner.running.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = stopped(&mut stop) => return,
        };
        let id = loop {
            let notified = inner.queued.notified();
            if let Some(id) = lock(&inner.queue).pop_front() {
                break id;
            }
            tokio::select! {
                () = notified => {}
                () = stopped(&mut stop) => return,
            }
        };
        let Some(live) = inner.live(&id) else {
            continue;
        };
        {
            let mut phase = lock(&live.phase);
            if *phase != Phase::Queued {
                continue;
            }
            *phase = Phase::Running;
        }
        tokio::spawn(crate::runner::run(inner.clone(), live, permit));
    }
}

/// Acts on other instances' notices: followers of a job told when it changed, a cancel asked
/// of a job this process holds carried out.
async fn relay(inner: Arc<Inner>, mut notices: tokio::sync::broadcast::Receiver<Notice>) {
    use tokio::sync::broadcast::error::RecvError;
    let mut stop = inner.stop.subscribe();
    loop {
        let notice = tokio::select! {
            notice = notices.recv() => notice,
            () = stopped(&mut stop) => return,
        };
        match notice {
            Ok(Notice::Changed(id)) => inner.changed_elsewhere(Some(&id)),
            Ok(Notice::Cancel(id)) => {
                if let Some(live) = inner.live(&id) {
                    let inner = inner.clone();
                    tokio::spawn(async move { inner.cancel_here(&live).await });
                }
            }
            Ok(Notice::Resync) | Err(RecvError::Lagged(_)) => inner.changed_elsewhere(None),
            Err(RecvError::Closed) => return,
        }
    }
}

/// Holds this process's jobs in a shared store: renews its leases every third of one, and
/// takes the jobs and webhook deliveries of instances whose leases lapsed (they died).
async fn hold(inner: Arc<Inner>, store: Arc<dyn Store>, lease: Duration) {
    let mut stop = inner.stop.subscribe();
    let every = lease / 3;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stopped(&mut stop) => return,
        }
        if let Err(error) = store.renew().await {
            tracing::warn!(target: "hourglass::jobs", %error, "this instance's job leases were not renewed; other instances take its jobs if it stays cut off");
            continue;
        }
        if let Err(error) = inner.recover(&store).await {
            tracing::warn!(target: "hourglass::jobs", %error, "jobs whose instance died could not be taken");
        }
        inner.webhooks.take_owed(store.as_ref()).await;
    }
}

/// Deletes finished jobs past `jobs.retention` (and old affinities), now and then.
async fn sweep(inner: Arc<Inner>, store: Arc<dyn Store>) {
    let mut stop = inner.stop.subscribe();
    let every =
        (inner.settings.retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let now = (inner.clock)();
        let before = now.saturating_sub(inner.settings.retention.as_millis() as u64);
        let affinity_before = now.saturating_sub(AFFINITY_RETENTION.as_millis() as u64);
        loop {
            match store.expire(before, affinity_before, 256).await {
                Ok(deleted) if deleted.len() == 256 => continue,
                Ok(deleted) => {
                    if !deleted.is_empty() {
                        tracing::debug!(target: "hourglass::jobs", count = deleted.len(), "finished jobs past jobs.retention deleted");
                    }
                    break;
                }
                Err(error) => {
                    tracing::warn!(target: "hourglass::jobs", %error, "the retention sweep failed");
                    break;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stopped(&mut stop) => return,
        }
    }
}

fn new_job(s: Submission, now: u64) -> Job {
    let prefix = match s.kind {
        Kind::Response => "resp_hg",
        Kind::Job => "job_",
    };
    let headers = s
        .headers
        .iter()
        .filter(|(name, _)| kept_header(name.as_str()))
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    Job {
        id: ids::new_id(prefix),
        kind: s.kind,
        owner: s.owner,
        state: State::Queued,
        created_at: now,
        started_at: None,
        finished_at: None,
        deadline_at: now.saturating_add(s.deadline.as_millis() as u64),
        asked: Asked {
            endpoint: s.endpoint.name().to_owned(),
            path: s.path,
            model: s.model,
            stream: s.stream,
            headers,
            pinned: s.pinned,
        },
        request_id: s.request_id,
        runs: 0,
        events: 0,
        own_events: 0,
        answer: None,
        failure: None,
        upstream: None,
        upstream_id: None,
        webhook: s.webhook,
        echo: s.echo,
        cancel_requested: false,
    }
}

/// Whether a request header is passed on when the job runs: not the ones about this one
/// connection or this submission (its preference, its webhook, its timeouts).
fn kept_header(name: &str) -> bool {
    !matches!(
        name,
        "host"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "expect"
            | "te"
            | "upgrade"
            | "prefer"
            | "accept-encoding"
            | "x-request-id"
    ) && !name.starts_with("x-hourglass-")
        && !name.starts_with("proxy-")
        && !name.starts_with("x-stainless-")
}

/// `job_not_found` for `id`.
pub fn not_found(id: &str) -> CallError {
    let shown: String = id.chars().take(80).collect();
    CallError::before_attempts(
        ErrorCode::JobNotFound,
        StatusCode::NOT_FOUND,
        format!(
            "no background job or response `{shown}` belongs to this key (it may be past jobs.retention)"
        ),
    )
}

fn too_many(message: String) -> CallError {
    let mut error = CallError::before_attempts(
        ErrorCode::TooManyJobs,
        StatusCode::TOO_MANY_REQUESTS,
        message,
    );
    error.retry_after = Some(Duration::from_secs(5));
    error
}

/// `jobs_unavailable` for a store failure.
pub(crate) fn unavailable(error: StoreError) -> CallError {
    CallError::before_attempts(
        ErrorCode::JobsUnavailable,
        StatusCode::SERVICE_UNAVAILABLE,
        error.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gateway serves on one runtime per core; the first submission may come from any of
    /// them. The service's tasks must not die with (or crowd) the runtime that asked first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_opened_from_another_runtime_runs_its_tasks_on_the_services_own() {
        let text = "[upstreams.a]\nbase_url = \"http://127.0.0.1:9/v1\"\n[models.m]\ntargets = [\"a\"]\n[health_check]\nmode = \"off\"\n";
        let config = hourglass_config::Config::from_toml(text, "t.toml", &|_| None).unwrap();
        let settings = config.jobs.clone();
        let engine = Engine::new(config, HashMap::new()).unwrap();
        let dir = std::env::temp_dir().join(format!("hourglass-jobs-home-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let jobs = Jobs::new(
            settings,
            dir.clone(),
            Arc::new(move || engine.clone()),
            ids::wall_clock(),
        );

        // Opened from a runtime that then stops.
        let other = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let inner = jobs.inner.clone();
        tokio::task::spawn_blocking(move || {
            other.block_on(async move { inner.store().await.map(|_| ()) })
        })
        .await
        .unwrap()
        .unwrap();

        // A job submitted afterwards is still taken and run to its end (the upstream refuses).
        let body =
            Bytes::from_static(br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        let job = jobs
            .submit(Submission {
                kind: Kind::Job,
                owner: ids::owner(None),
                endpoint: Endpoint::Chat,
                path: "/chat/completions".to_owned(),
                headers: HeaderMap::new(),
                body,
                model: Some("m".to_owned()),
                stream: false,
                request_id: "req-home".to_owned(),
                webhook: None,
                deadline: Duration::from_secs(30),
                echo: None,
                pinned: None,
            })
            .await
            .unwrap();
        let mut state = job.state;
        for _ in 0..300 {
            state = jobs.get(&job.id, &job.owner).await.unwrap().state;
            if state.is_terminal() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            state,
            State::Failed,
            "the job was not run to its end: its runners died with the runtime that opened the store"
        );
        drop(jobs);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
