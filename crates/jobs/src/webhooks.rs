//! Webhooks: a job's end announced to the configured endpoints (`[jobs.webhooks.<name>]`) and to
//! the URL the job named itself, signed the Standard Webhooks way OpenAI uses (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`
//! with the `whsec_` secret), retried with growing pauses for `jobs.webhook_retry_for`. A
//! delivery is stored with the job's end in one write and deleted only once delivered (or given
//! up), so a restart drops none. Secrets are looked up when sending, never stored.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use hourglass_config::{JobsSettings, Secret, WebhookEndpoint};
use hourglass_engine::upstream::dial::{Dial, NetworkDial};
use hourglass_engine::{CallError, ErrorCode};
use http::{Request, StatusCode, Uri, header};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::ids::{self, Clock};
use crate::job::{Job, Kind};
use crate::service::stopped;
use crate::store::{Change, Store};

/// Tries of deliveries in flight at once.
const PARALLEL: usize = 16;
/// The longest one try may take.
const TRY_TIMEOUT: Duration = Duration::from_secs(15);
/// The pause after the first failed try; it doubles, up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause between tries.
const MAX_PAUSE: Duration = Duration::from_secs(600);

/// One delivery owed: the event, where it goes, and how its tries went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Delivery {
    /// `webhook-id`: the same on every try, so a receiver can drop repeats.
    pub id: String,
    /// The configured endpoint's name; `None`: the URL the job named itself.
    pub endpoint: Option<String>,
    /// Where it is POSTed.
    pub url: String,
    /// The event type (`response.completed`, `job.failed`, …).
    pub event: String,
    /// The JSON body.
    pub payload: String,
    /// When it was owed (Unix milliseconds).
    pub created_at: u64,
    /// Tries so far.
    pub attempts: u32,
    /// When the next try is due.
    pub next_at: u64,
}

impl Delivery {
    /// The store change that keeps it.
    pub fn change(&self) -> Change {
        Change::Delivery {
            id: self.id.clone(),
            bytes: Bytes::from(serde_json::to_vec(self).expect("a delivery serializes")),
        }
    }
}

/// Counts of deliveries since start.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct WebhookStats {
    pub delivered: u64,
    pub failures: u64,
    pub given_up: u64,
    pub pending: u64,
}

struct Shared {
    endpoints: Vec<WebhookEndpoint>,
    job_secret: Option<Secret>,
    allowed: Vec<String>,
    retry_for: Duration,
    clock: Clock,
    delivered: AtomicU64,
    failures: AtomicU64,
    given_up: AtomicU64,
    pending: AtomicU64,
}

/// The webhook sender.
pub(crate) struct Webhooks {
    shared: Arc<Shared>,
    queue: Mutex<Option<mpsc::UnboundedSender<Delivery>>>,
}

impl Webhooks {
    pub fn new(settings: &JobsSettings, clock: Clock) -> Webhooks {
        Webhooks {
            shared: Arc::new(Shared {
                endpoints: settings.webhooks.clone(),
                job_secret: settings.webhook_secret.clone(),
                allowed: settings.webhook_urls.clone(),
                retry_for: settings.webhook_retry_for,
                clock,
                delivered: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                given_up: AtomicU64::new(0),
                pending: AtomicU64::new(0),
            }),
            queue: Mutex::new(None),
        }
    }

    /// Whether a job may name `url` as its webhook: under one of `jobs.webhook_urls`.
    pub fn check_url(&self, url: &str) -> Result<(), CallError> {
        let refuse = |message: String| {
            Err(CallError::before_attempts(
                ErrorCode::BadRequest,
                StatusCode::BAD_REQUEST,
                message,
            ))
        };
        if let Err(message) = hourglass_config::jobs::parse_url(url) {
            return refuse(format!("x-hourglass-webhook: {message}"));
        }
        if self.shared.allowed.is_empty() {
            return refuse(
                "x-hourglass-webhook: this gateway takes no webhook URLs from jobs (jobs.webhook_urls is empty); its configured webhooks still hear every job".to_owned(),
            );
        }
        if !self
            .shared
            .allowed
            .iter()
            .any(|prefix| url.starts_with(prefix.as_str()))
        {
            return refuse(format!(
                "x-hourglass-webhook: `{url}` is under none of the prefixes jobs.webhook_urls allows"
            ));
        }
        Ok(())
    }

    /// The deliveries `job`'s end owes: one per configured endpoint that takes its event, and
    /// one to its own URL.
    pub fn deliveries_for(&self, job: &Job) -> Vec<Delivery> {
        let prefix = match job.kind {
            Kind::Response => "response",
            Kind::Job => "job",
        };
        let event = format!("{prefix}.{}", job.state.name());
        let now = (self.shared.clock)();
        let payload = serde_json::json!({
            "id": ids::new_id("evt_"),
            "object": "event",
            "created_at": now / 1000,
            "type": event,
            "data": {"id": job.id, "status": job.state.name()},
        })
        .to_string();
        let delivery = |endpoint: Option<String>, url: String| Delivery {
            id: ids::new_id("msg_"),
            endpoint,
            url,
            event: event.clone(),
            payload: payload.clone(),
            created_at: now,
            attempts: 0,
            next_at: now,
        };
        let mut out: Vec<Delivery> = self
            .shared
            .endpoints
            .iter()
            .filter(|e| e.events.is_empty() || e.events.contains(&event))
            .map(|e| delivery(Some(e.name.clone()), e.url.to_string()))
            .collect();
        if let Some(url) = &job.webhook {
            out.push(delivery(None, url.clone()));
        }
        out
    }

    /// Hands deliveries (stored already) to the sender.
    pub fn send(&self, deliveries: Vec<Delivery>) {
        let queue = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(queue) = queue.as_ref() {
            for delivery in deliveries {
                let _ = queue.send(delivery);
            }
        }
    }

    /// Starts the sender with the deliveries the store still owes.
    pub async fn start(&self, store: Arc<dyn Store>, stop: watch::Receiver<bool>) {
        let (queue, incoming) = mpsc::unbounded_channel();
        *self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(queue);
        self.take_owed(store.as_ref()).await;
        tokio::spawn(sender(self.shared.clone(), store, incoming, stop));
    }

    /// Takes the deliveries the store owes and no one else is sending (all of them for a store
    /// of one process; those whose sender's lease lapsed for a shared one) and sends them.
    pub async fn take_owed(&self, store: &dyn Store) {
        match store.deliveries().await {
            Ok(stored) => {
                let mut owed = Vec::with_capacity(stored.len());
                for (id, bytes) in stored {
                    match serde_json::from_slice::<Delivery>(&bytes) {
                        Ok(delivery) => owed.push(delivery),
                        Err(error) => {
                            tracing::warn!(target: "hourglass::jobs", delivery = %id, %error, "a stored webhook delivery does not read; dropped");
                        }
                    }
                }
                self.send(owed);
            }
            Err(error) => {
                tracing::error!(target: "hourglass::jobs", %error, "pending webhook deliveries could not be read");
            }
        }
    }

    pub fn stats(&self) -> WebhookStats {
        let s = &self.shared;
        WebhookStats {
            delivered: s.delivered.load(Ordering::Relaxed),
            failures: s.failures.load(Ordering::Relaxed),
            given_up: s.given_up.load(Ordering::Relaxed),
            pending: s.pending.load(Ordering::Relaxed),
        }
    }
}

/// Sends deliveries as they fall due, [`PARALLEL`] at once, until stopped.
async fn sender(
    shared: Arc<Shared>,
    store: Arc<dyn Store>,
    mut incoming: mpsc::UnboundedReceiver<Delivery>,
    mut stop: watch::Receiver<bool>,
) {
    let mut waiting: HashMap<String, Delivery> = HashMap::new();
    let mut due: BinaryHeap<Reverse<(u64, String)>> = BinaryHeap::new();
    let mut trying: JoinSet<(Delivery, Result<(), String>)> = JoinSet::new();
    loop {
        let now = (shared.clock)();
        while trying.len() < PARALLEL {
            match due.peek() {
                Some(Reverse((at, _))) if *at <= now => {}
                _ => break,
            }
            let Some(Reverse((_, id))) = due.pop() else {
                break;
            };
            if let Some(delivery) = waiting.remove(&id) {
                let shared = shared.clone();
                trying.spawn(async move {
                    let result = attempt(&shared, &delivery).await;
                    (delivery, result)
                });
            }
        }
        shared
            .pending
            .store((waiting.len() + trying.len()) as u64, Ordering::Relaxed);
        let next = due.peek().map(|Reverse((at, _))| at.saturating_sub(now));
        let pause = Duration::from_millis(next.unwrap_or(3_600_000));
        tokio::select! {
            delivery = incoming.recv() => match delivery {
                Some(delivery) => {
                    due.push(Reverse((delivery.next_at, delivery.id.clone())));
                    waiting.insert(delivery.id.clone(), delivery);
                }
                None => return,
            },
            Some(Ok((delivery, result))) = trying.join_next(), if !trying.is_empty() => {
                if let Some(again) = settle(&shared, store.as_ref(), delivery, result).await {
                    due.push(Reverse((again.next_at, again.id.clone())));
                    waiting.insert(again.id.clone(), again);
                }
            }
            () = tokio::time::sleep(pause), if trying.len() < PARALLEL => {}
            () = stopped(&mut stop) => return,
        }
    }
}

/// Records how a try went; returns the delivery when it is to be tried again.
async fn settle(
    shared: &Shared,
    store: &dyn Store,
    mut delivery: Delivery,
    result: Result<(), String>,
) -> Option<Delivery> {
    let now = (shared.clock)();
    delivery.attempts += 1;
    let change = match result {
        Ok(()) => {
            shared.delivered.fetch_add(1, Ordering::Relaxed);
            tracing::info!(target: "hourglass::jobs", delivery = %delivery.id, event = %delivery.event, url = %shown(&delivery.url), attempts = delivery.attempts, "webhook delivered");
            Change::Delivered(delivery.id.clone())
        }
        Err(why)
            if now.saturating_sub(delivery.created_at) >= shared.retry_for.as_millis() as u64 =>
        {
            shared.failures.fetch_add(1, Ordering::Relaxed);
            shared.given_up.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(target: "hourglass::jobs", delivery = %delivery.id, event = %delivery.event, url = %shown(&delivery.url), attempts = delivery.attempts, %why, "webhook given up after jobs.webhook_retry_for");
            Change::Delivered(delivery.id.clone())
        }
        Err(why) => {
            shared.failures.fetch_add(1, Ordering::Relaxed);
            let pause = FIRST_PAUSE
                .saturating_mul(1 << delivery.attempts.min(16).saturating_sub(1))
                .min(MAX_PAUSE);
            let jitter = fastrand::u64(0..=pause.as_millis() as u64 / 4);
            delivery.next_at = now + pause.as_millis() as u64 + jitter;
            tracing::debug!(target: "hourglass::jobs", delivery = %delivery.id, url = %shown(&delivery.url), attempts = delivery.attempts, %why, "webhook try failed; tried again later");
            let change = delivery.change();
            if let Err(error) = store.apply(vec![change]).await {
                tracing::warn!(target: "hourglass::jobs", %error, "a webhook's next try was not stored");
            }
            return Some(delivery);
        }
    };
    if let Err(error) = store.apply(vec![change]).await {
        tracing::warn!(target: "hourglass::jobs", %error, "a webhook's end was not stored");
    }
    None
}

/// One try: the delivery signed with a fresh timestamp and POSTed; a 2xx answer delivers it.
async fn attempt(shared: &Shared, delivery: &Delivery) -> Result<(), String> {
    let secret = match &delivery.endpoint {
        Some(name) => shared
            .endpoints
            .iter()
            .find(|e| &e.name == name)
            .map(|e| e.secret.clone()),
        None => shared.job_secret.clone(),
    }
    .ok_or("its endpoint or secret is no longer configured")?;
    let timestamp = ((shared.clock)() / 1000).to_string();
    let signature = sign(&secret, &delivery.id, &timestamp, &delivery.payload);
    let url: Uri = delivery.url.parse().map_err(|_| "not a URL".to_owned())?;
    let headers = [
        ("webhook-id", delivery.id.as_str()),
        ("webhook-timestamp", timestamp.as_str()),
        ("webhook-signature", signature.as_str()),
    ];
    let sent = tokio::time::timeout(TRY_TIMEOUT, post(&url, &headers, &delivery.payload)).await;
    match sent {
        Ok(Ok(status)) if status.is_success() => Ok(()),
        Ok(Ok(status)) => Err(format!("answered {status}")),
        Ok(Err(why)) => Err(why),
        Err(_) => Err(format!("no answer within {}s", TRY_TIMEOUT.as_secs())),
    }
}

/// The `webhook-signature` value: `v1,` and the base64 HMAC-SHA256 of `id.timestamp.payload`.
pub(crate) fn sign(secret: &Secret, id: &str, timestamp: &str, payload: &str) -> String {
    let text = secret.expose();
    let key = match text.strip_prefix("whsec_") {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap_or_else(|_| text.as_bytes().to_vec()),
        None => text.as_bytes().to_vec(),
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let signed = format!("{id}.{timestamp}.{payload}");
    let tag = ring::hmac::sign(&key, signed.as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    )
}

/// POSTs `payload` as JSON to `url`, over HTTP/1.1 (TLS for https).
async fn post(url: &Uri, headers: &[(&str, &str)], payload: &str) -> Result<StatusCode, String> {
    let mut tls = (*hourglass_engine::upstream::dial::tls_config()).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let dial = NetworkDial::new(url, &Arc::new(tls))?;
    let io = dial
        .dial()
        .await
        .map_err(|kind| format!("could not connect ({})", kind.code()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("could not speak HTTP: {e}"))?;
    tokio::spawn(connection);
    let authority = url.authority().map_or("", |a| a.as_str());
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let mut request = Request::post(path)
        .header(header::HOST, authority)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, "hourglass-webhooks");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(payload.to_owned())))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("the request failed: {e}"))?;
    Ok(response.status())
}

/// A URL as logs show it: scheme, host and path, never a query (it may carry a token).
fn shown(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The example of the Standard Webhooks specification.
        let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned());
        let payload = r#"{"test": 2432232314}"#;
        let signature = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            payload,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn urls_in_logs_lose_their_query() {
        assert_eq!(
            shown("https://h.example/hook?token=s3cret"),
            "https://h.example/hook"
        );
    }
}
