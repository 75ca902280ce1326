//! The `[jobs]` table: background calls — where their store lives, how long results are kept,
//! how many may wait and run, and where their webhooks go (with the secrets that sign them).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::Secret;
use crate::policy::Positive;
use crate::raw::Ordered;
use crate::secrets::Source;

/// The settings of background calls (`[jobs]`).
#[derive(Debug, Clone, PartialEq)]
pub struct JobsSettings {
    /// Whether the gateway takes background calls at all (`jobs.enabled`).
    pub enabled: bool,
    /// The directory of the embedded store (`jobs.data_dir`); `None`: the platform's data
    /// directory (`$XDG_DATA_HOME/hourglass`, else `~/.local/share/hourglass`).
    pub data_dir: Option<PathBuf>,
    /// How long a finished job's result and events are kept (`jobs.retention`).
    pub retention: Duration,
    /// Jobs waiting to run at once; more are refused with 429 (`jobs.max_queued`).
    pub max_queued: usize,
    /// Jobs running at once (`jobs.max_running`).
    pub max_running: usize,
    /// The store's largest size: past it, the oldest finished jobs go before their retention
    /// ends, and new jobs are refused while only unfinished ones are left (`jobs.max_store_size`).
    pub max_store_bytes: u64,
    /// Where every job's end is announced.
    pub webhooks: Vec<WebhookEndpoint>,
    /// The secret that signs deliveries to the URLs jobs name themselves
    /// (`jobs.webhook_secret_env` / `_file`).
    pub webhook_secret: Option<Secret>,
    /// The URL prefixes a job may name as its own webhook (`jobs.webhook_urls`); empty: none.
    pub webhook_urls: Vec<String>,
    /// How long a delivery is retried before it is given up (`jobs.webhook_retry_for`).
    pub webhook_retry_for: Duration,
}

/// A configured webhook endpoint (`[jobs.webhooks.<name>]`).
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEndpoint {
    /// Its name, as logs and metrics show it.
    pub name: String,
    /// Where deliveries are POSTed.
    pub url: http::Uri,
    /// The Standard Webhooks secret (`whsec_…`) that signs them.
    pub secret: Secret,
    /// The event types it receives; empty: every one.
    pub events: Vec<String>,
}

/// Every event type a webhook can receive: the OpenAI names for background responses, and the
/// same ends of jobs made with `Prefer: respond-async`.
pub const WEBHOOK_EVENTS: [&str; 7] = [
    "response.completed",
    "response.failed",
    "response.cancelled",
    "response.incomplete",
    "job.completed",
    "job.failed",
    "job.cancelled",
];

impl Default for JobsSettings {
    fn default() -> JobsSettings {
        JobsSettings {
            enabled: true,
            data_dir: None,
            retention: Duration::from_secs(24 * 3600),
            max_queued: 1000,
            max_running: 64,
            max_store_bytes: 1 << 30,
            webhooks: Vec::new(),
            webhook_secret: None,
            webhook_urls: Vec::new(),
            webhook_retry_for: Duration::from_secs(24 * 3600),
        }
    }
}

/// `[jobs]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJobs {
    pub enabled: Option<bool>,
    pub data_dir: Option<String>,
    pub retention: Option<Positive>,
    pub max_queued: Option<usize>,
    pub max_running: Option<usize>,
    pub max_store_size: Option<String>,
    pub webhook_secret_env: Option<String>,
    pub webhook_secret_file: Option<String>,
    pub webhook_urls: Option<Vec<String>>,
    pub webhook_retry_for: Option<Positive>,
    #[serde(default)]
    pub webhooks: Ordered<RawWebhook>,
}

/// `[jobs.webhooks.<name>]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    pub url: String,
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
    pub events: Option<Vec<String>>,
}

/// A failed check: the key path and what was wrong.
type Fault = (String, String);

/// Checks `[jobs]`; `secret` reads a secret from its source.
pub(crate) fn validate(
    raw: RawJobs,
    config_dir: &std::path::Path,
    secret: &dyn Fn(Source<'_>) -> Result<Option<String>, Fault>,
) -> Result<JobsSettings, Fault> {
    let defaults = JobsSettings::default();
    let fault = |key: &str, message: String| (format!("jobs.{key}"), message);
    let at_least_one = |key: &str, value: Option<usize>, default: usize| match value {
        None => Ok(default),
        Some(0) => Err(fault(key, "must be at least 1".to_owned())),
        Some(n) => Ok(n),
    };
    let max_store_bytes = match raw.max_store_size.as_deref() {
        None => defaults.max_store_bytes,
        Some(text) => match crate::validate::parse_size(text) {
            Some(size) if size >= 1 << 20 => size as u64,
            Some(_) => return Err(fault("max_store_size", "must be at least 1MiB".to_owned())),
            None => {
                return Err(fault(
                    "max_store_size",
                    format!("`{text}` is not a size; write e.g. \"1GiB\""),
                ));
            }
        },
    };
    let data_dir = raw.data_dir.map(|dir| {
        let path = PathBuf::from(dir);
        if path.is_absolute() {
            path
        } else {
            config_dir.join(path)
        }
    });
    let webhook_secret = secret(Source {
        key: "jobs.webhook_secret",
        env_var: raw.webhook_secret_env.as_deref(),
        file: raw.webhook_secret_file.as_deref(),
        without: "to refuse webhooks that jobs name themselves",
    })?
    .map(|text| signing_secret("jobs.webhook_secret", text))
    .transpose()?;
    let webhook_urls = raw.webhook_urls.unwrap_or_default();
    for (i, prefix) in webhook_urls.iter().enumerate() {
        if !(prefix.starts_with("http://") || prefix.starts_with("https://")) {
            return Err(fault(
                &format!("webhook_urls[{i}]"),
                format!("`{prefix}` is not an http:// or https:// URL prefix"),
            ));
        }
    }
    if !webhook_urls.is_empty() && webhook_secret.is_none() {
        return Err(fault(
            "webhook_urls",
            "jobs may name their own webhooks only with a secret to sign them: set jobs.webhook_secret_env or jobs.webhook_secret_file".to_owned(),
        ));
    }
    let mut webhooks = Vec::with_capacity(raw.webhooks.0.len());
    for (name, hook) in raw.webhooks.0 {
        webhooks.push(webhook(&name, hook, secret)?);
    }
    Ok(JobsSettings {
        enabled: raw.enabled.unwrap_or(defaults.enabled),
        data_dir,
        retention: raw.retention.map_or(defaults.retention, |p| p.0),
        max_queued: at_least_one("max_queued", raw.max_queued, defaults.max_queued)?,
        max_running: at_least_one("max_running", raw.max_running, defaults.max_running)?,
        max_store_bytes,
        webhooks,
        webhook_secret,
        webhook_urls,
        webhook_retry_for: raw
            .webhook_retry_for
            .map_or(defaults.webhook_retry_for, |p| p.0),
    })
}

fn webhook(
    name: &str,
    raw: RawWebhook,
    secret: &dyn Fn(Source<'_>) -> Result<Option<String>, Fault>,
) -> Result<WebhookEndpoint, Fault> {
    let key = format!("jobs.webhooks.{name}");
    let url = parse_url(&raw.url).map_err(|message| (format!("{key}.url"), message))?;
    let secret_key = format!("{key}.secret");
    let text = secret(Source {
        key: &secret_key,
        env_var: raw.secret_env.as_deref(),
        file: raw.secret_file.as_deref(),
        without: "",
    })?
    .ok_or_else(|| {
        (
            format!("{key}.secret_env"),
            "a webhook needs the secret that signs its deliveries: set secret_env or secret_file"
                .to_owned(),
        )
    })?;
    let events = raw.events.unwrap_or_default();
    for (i, event) in events.iter().enumerate() {
        if !WEBHOOK_EVENTS.contains(&event.as_str()) {
            return Err((
                format!("{key}.events[{i}]"),
                format!(
                    "`{event}` is not an event; choose from {}",
                    WEBHOOK_EVENTS.join(", ")
                ),
            ));
        }
    }
    Ok(WebhookEndpoint {
        name: name.to_owned(),
        url,
        secret: signing_secret(&secret_key, text)?,
        events,
    })
}

/// A webhook URL: absolute, http or https, with a host.
pub fn parse_url(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text.parse().map_err(|_| format!("`{text}` is not a URL"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err(format!(
            "`{text}` is not an absolute http:// or https:// URL"
        )),
    }
}

/// A Standard Webhooks secret: `whsec_` and base64, as OpenAI gives them, or any other text,
/// used as its bytes (as the OpenAI SDKs read a secret without the prefix).
fn signing_secret(key: &str, text: String) -> Result<Secret, Fault> {
    if let Some(encoded) = text.strip_prefix("whsec_") {
        let valid = !encoded.is_empty()
            && encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
        if !valid {
            return Err((
                key.to_owned(),
                "a `whsec_` secret must be followed by base64 (as OpenAI and Standard Webhooks write them)".to_owned(),
            ));
        }
    } else if text.len() < 16 {
        return Err((
            key.to_owned(),
            "is shorter than 16 characters: too easy to guess; use a `whsec_` secret".to_owned(),
        ));
    }
    Ok(Secret::new(text))
}
