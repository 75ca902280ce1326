//! Cool-downs across replicas. One learned here (the engine's health table hands it to
//! [`Cooldowns::sink`], which never blocks) is written to Redis as a key that expires with it,
//! and published; every replica subscribed applies it to its own health table within a
//! round trip. A replica that (re)connects reads the keys first, so it converges on the
//! cool-downs in force whatever it missed. Times are relative (milliseconds left), so replicas'
//! clocks need not agree. When Redis is away, each replica keeps learning its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use hourglass_engine::health::cooldown::{Cooldown, Sink};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::EngineSource;
use crate::link::Link;

/// The channel cool-downs are published on.
pub const CHANNEL: &str = "hourglass:cooldowns";
/// The prefix of the keys that hold them.
pub const KEY_PREFIX: &str = "hourglass:cooldown:";
/// Cool-downs waiting to be published at most; more are dropped (and counted).
const QUEUE: usize = 1024;

/// A published cool-down, with who learned it.
#[derive(Debug, Serialize, Deserialize)]
struct Message {
    from: String,
    cooldown: Cooldown,
}

/// Counts for `/status` and `/metrics`.
#[derive(Debug, Default)]
pub struct Counts {
    /// Published to other replicas.
    pub published: AtomicU64,
    /// Heard from other replicas (and applied).
    pub heard: AtomicU64,
    /// Dropped: the queue to Redis was full, or Redis did not answer.
    pub dropped: AtomicU64,
}

/// Cool-downs shared through Redis.
pub struct Cooldowns {
    queue: mpsc::Sender<Cooldown>,
    /// Its counts.
    pub counts: Arc<Counts>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Cooldowns {
    fn drop(&mut self) {
        self.tasks.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

impl Cooldowns {
    /// Starts publishing what `holder` learns and applying what others do to `engine`'s health.
    pub fn start(link: Arc<Link>, holder: String, engine: EngineSource) -> Cooldowns {
        let (queue, learned) = mpsc::channel(QUEUE);
        let counts = Arc::new(Counts::default());
        let tasks = vec![
            tokio::spawn(publish(
                link.clone(),
                holder.clone(),
                learned,
                counts.clone(),
            )),
            tokio::spawn(subscribe(link, holder, engine, counts.clone())),
        ];
        Cooldowns {
            queue,
            counts,
            tasks,
        }
    }

    /// What the engine's health table hands every cool-down it learns to.
    pub fn sink(&self) -> Sink {
        let queue = self.queue.clone();
        let counts = self.counts.clone();
        Arc::new(move |cooldown: &Cooldown| {
            if queue.try_send(cooldown.clone()).is_err() {
                counts.dropped.fetch_add(1, Ordering::Relaxed);
            }
        })
    }
}

/// The key a cool-down is kept under.
fn key(cooldown: &Cooldown) -> String {
    format!(
        "{KEY_PREFIX}{}:{}",
        cooldown.upstream,
        cooldown.model.as_deref().unwrap_or("*")
    )
}

async fn publish(
    link: Arc<Link>,
    holder: String,
    mut learned: mpsc::Receiver<Cooldown>,
    counts: Arc<Counts>,
) {
    while let Some(cooldown) = learned.recv().await {
        let key = key(&cooldown);
        let mut pipe = redis::pipe();
        if cooldown.remaining_ms == 0 {
            pipe.cmd("DEL").arg(&key).ignore();
        } else {
            let value = serde_json::to_string(&cooldown).unwrap_or_default();
            pipe.cmd("SET")
                .arg(&key)
                .arg(value)
                .arg("PX")
                .arg(cooldown.remaining_ms)
                .ignore();
        }
        let message = Message {
            from: holder.clone(),
            cooldown,
        };
        let text = serde_json::to_string(&message).unwrap_or_default();
        pipe.cmd("PUBLISH").arg(CHANNEL).arg(text).ignore();
        match link.run::<()>(&pipe).await {
            Ok(()) => counts.published.fetch_add(1, Ordering::Relaxed),
            Err(_) => counts.dropped.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Listens on its own connection; after each (re)connection reads the cool-downs in force.
async fn subscribe(link: Arc<Link>, holder: String, engine: EngineSource, counts: Arc<Counts>) {
    let mut pause = Duration::from_millis(100);
    loop {
        let connecting = link.client().get_async_pubsub();
        match tokio::time::timeout(Duration::from_secs(2), connecting).await {
            Ok(Ok(mut pubsub)) => {
                if pubsub.subscribe(CHANNEL).await.is_ok() {
                    pause = Duration::from_millis(100);
                    resync(&link, &engine).await;
                    let mut messages = pubsub.into_on_message();
                    while let Some(message) = messages.next().await {
                        let Ok(message) =
                            serde_json::from_slice::<Message>(message.get_payload_bytes())
                        else {
                            continue;
                        };
                        if message.from != holder && engine().health().cool(&message.cooldown) {
                            counts.heard.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(target: "hourglass::cluster", from = %message.from, upstream = %message.cooldown.upstream, model = ?message.cooldown.model, ms = message.cooldown.remaining_ms, reason = message.cooldown.reason.name(), "cool-down heard");
                        }
                    }
                }
                link.failed("the subscription ended").await;
            }
            Ok(Err(error)) => {
                link.failed(&error.to_string()).await;
            }
            Err(_) => {
                link.failed("no subscription within 2 s").await;
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// Applies every cool-down Redis holds now (with the time each has left).
async fn resync(link: &Link, engine: &EngineSource) {
    let mut cursor: u64 = 0;
    let mut applied = 0usize;
    loop {
        let mut scan = redis::pipe();
        scan.cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{KEY_PREFIX}*"))
            .arg("COUNT")
            .arg(200);
        let Ok(((next, keys),)) = link.run::<((u64, Vec<String>),)>(&scan).await else {
            return;
        };
        if !keys.is_empty() {
            let mut read = redis::pipe();
            for key in &keys {
                read.cmd("GET").arg(key).cmd("PTTL").arg(key);
            }
            let Ok(values) = link.run::<Vec<redis::Value>>(&read).await else {
                return;
            };
            for pair in values.chunks(2) {
                let [value, left] = pair else { continue };
                let value: Option<String> = redis::from_redis_value_ref(value).ok().flatten();
                let left: i64 = redis::from_redis_value_ref(left).unwrap_or(-2);
                let Some(mut cooldown) = value
                    .as_deref()
                    .and_then(|v| serde_json::from_str::<Cooldown>(v).ok())
                else {
                    continue;
                };
                if left <= 0 {
                    continue;
                }
                cooldown.remaining_ms = left as u64;
                if engine().health().cool(&cooldown) {
                    applied += 1;
                }
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    tracing::debug!(target: "hourglass::cluster", applied, "cool-downs in force read from Redis");
}
