//! Timeout and retry policies: the built-in priors per model family and scenario, and the layers
//! a configuration puts on top of them, each value remembering where it came from.
//!
//! # Why family × scenario
//! A model family decides how long each phase of a healthy call takes (a reasoning model thinks
//! for minutes before its first token; an embedding answers in milliseconds). A scenario decides
//! how patient the caller is (a live chat fails fast; a batch job waits and retries). The origin
//! document's figures are the starting point: chat 30–60 s, reasoning 90–180 s, images 45–90 s;
//! realtime fails fast, content generation retries 2–3 times, reasoning 1–2 times, images twice.

use std::time::Duration;

use serde::Deserialize;

/// The per-phase limits of one call (see `docs/timeouts.md` for every clock's start and end).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// DNS + TCP + TLS of a new connection.
    pub connect: Duration,
    /// Sending the request body.
    pub write: Duration,
    /// From the request sent to the response headers (for a non-streaming call this includes the
    /// whole generation).
    pub first_byte: Duration,
    /// From the request sent to the first meaningful content of a stream.
    pub first_token: Duration,
    /// Between meaningful content chunks.
    pub idle: Duration,
    /// One try, before commit.
    pub attempt: Duration,
    /// Factor applied to `attempt` on each further try (1 = no growth).
    pub attempt_growth: f64,
    /// The whole call, across every try.
    pub total: Duration,
    /// A background job, from its submission to its end (queue time included): the deadline
    /// its call runs under, as a client's own deadline would be.
    pub job: Duration,
}

/// How a call is tried again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    /// Tries in all, the first included.
    pub max_attempts: u32,
    /// Backoff before a second try on the same upstream (full jitter up to this, doubling).
    pub backoff_base: Duration,
    /// Cap of the backoff.
    pub backoff_max: Duration,
}

/// The effective policy of a model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Per-phase limits.
    pub timeouts: Timeouts,
    /// Retries.
    pub retry: Retry,
    /// Stream from the upstream for non-streaming chat, completions and responses clients, so
    /// `first_token` and `idle` protect them too (the client still gets one JSON body).
    pub stream_upstream: bool,
    /// Interval of keep-alive comments to a streaming client while no content flows; `None` is off.
    pub heartbeat: Option<Duration>,
}

/// A model family: how long the phases of a healthy call take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Fast chat models: about a second to the first token.
    Chat,
    /// Reasoning models: 20–120 s of thinking before the first token.
    Reasoning,
    /// Image generation: 5–40 s for the whole picture.
    Image,
    /// Embeddings: well under a second.
    Embedding,
}

/// How patient the caller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// A person waits: fail fast, one retry.
    Realtime,
    /// Content generation: balance speed and success, 2–3 tries.
    Content,
    /// Reasoning tasks: long waits, 1–2 tries.
    Reasoning,
    /// Image generation: long single calls, 2 retries.
    Image,
}

impl Family {
    /// Every family, in the order `config check` lists them.
    pub const ALL: [Family; 4] = [
        Family::Chat,
        Family::Reasoning,
        Family::Image,
        Family::Embedding,
    ];

    /// The family a model name suggests: `o1`/`o3`/`o4`, `*-r1`/`*reason*`/`*thinking*` and
    /// `claude*` models reason, `dall-e`/`gpt-image`/`flux`/`stable-diffusion`/`imagen` draw,
    /// `*embed*` embeds; the rest chat. Claude models count as reasoning: they think before they
    /// answer (extended thinking), and the coding agents that call them send contexts of a
    /// hundred thousand tokens and more, so their first token may come minutes late — a chat
    /// model's 20 s `first_token` would cut (and pay for again) calls that were fine.
    pub fn infer(model: &str) -> Family {
        let name = model
            .rsplit('/')
            .next()
            .unwrap_or(model)
            .to_ascii_lowercase();
        let starts = |p: &str| name.starts_with(p);
        if name.contains("embed") {
            Family::Embedding
        } else if starts("dall-e")
            || starts("gpt-image")
            || name.contains("flux")
            || name.contains("stable-diffusion")
            || starts("imagen")
            || starts("sdxl")
        {
            Family::Image
        } else if starts("o1")
            || starts("o3")
            || starts("o4")
            || name.contains("-r1")
            || name.ends_with("r1")
            || name.contains("reason")
            || name.contains("thinking")
            || starts("claude")
        {
            Family::Reasoning
        } else {
            Family::Chat
        }
    }

    /// The scenario a model of this family runs in unless configured otherwise.
    pub fn default_scenario(self) -> Scenario {
        match self {
            Family::Chat => Scenario::Content,
            Family::Reasoning => Scenario::Reasoning,
            Family::Image => Scenario::Image,
            Family::Embedding => Scenario::Realtime,
        }
    }

    /// The word used in files.
    pub fn name(self) -> &'static str {
        match self {
            Family::Chat => "chat",
            Family::Reasoning => "reasoning",
            Family::Image => "image",
            Family::Embedding => "embedding",
        }
    }
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 4] = [
        Scenario::Realtime,
        Scenario::Content,
        Scenario::Reasoning,
        Scenario::Image,
    ];

    /// The word used in files.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Realtime => "realtime",
            Scenario::Content => "content",
            Scenario::Reasoning => "reasoning",
            Scenario::Image => "image",
        }
    }
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

const fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// The built-in policy of a family in a scenario: the family sets the phases, the scenario the
/// patience (total, tries, growth, backoff).
pub fn prior(family: Family, scenario: Scenario) -> Policy {
    // connect, write, first_byte, first_token, idle, attempt
    let (connect, write, first_byte, first_token, idle, attempt) = match family {
        Family::Chat => (secs(5), secs(10), secs(30), secs(20), secs(30), secs(60)),
        Family::Reasoning => (secs(5), secs(10), secs(150), secs(150), secs(60), secs(180)),
        Family::Image => (secs(5), secs(30), secs(90), secs(90), secs(60), secs(90)),
        Family::Embedding => (secs(3), secs(15), secs(15), secs(15), secs(15), secs(20)),
    };
    // total, tries, growth, backoff base, backoff cap
    let (total, max_attempts, attempt_growth, backoff_base, backoff_max) = match scenario {
        Scenario::Realtime => (secs(45), 2, 1.0, millis(100), secs(1)),
        Scenario::Content => (secs(120), 3, 1.5, millis(250), secs(4)),
        Scenario::Reasoning => (secs(360), 2, 1.5, millis(500), secs(8)),
        Scenario::Image => (secs(180), 3, 1.0, millis(500), secs(8)),
    };
    // Long calls are the ones a silent upstream hurts most: stream them from the upstream.
    let stream_upstream = matches!(family, Family::Chat | Family::Reasoning)
        && matches!(scenario, Scenario::Content | Scenario::Reasoning);
    Policy {
        timeouts: Timeouts {
            connect,
            write,
            first_byte,
            first_token,
            idle,
            attempt,
            attempt_growth,
            total,
            // Nobody waits on a background job: an hour bounds a runaway without cutting a
            // long reasoning or image call short.
            job: secs(3600),
        },
        retry: Retry {
            max_attempts,
            backoff_base,
            backoff_max,
        },
        stream_upstream,
        // Reasoning models are silent for minutes: keep the proxies on the way from cutting them.
        heartbeat: (family == Family::Reasoning).then_some(secs(15)),
    }
}

/// Overrides of some policy values, as written in one table of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyPatch {
    /// Phase timeouts to override.
    #[serde(default)]
    pub timeouts: TimeoutsPatch,
    /// Retry settings to override.
    #[serde(default)]
    pub retry: RetryPatch,
    /// Stream from the upstream for non-streaming chat, completions and responses clients.
    #[serde(default)]
    pub stream_upstream: Option<bool>,
    /// Heartbeats to streaming clients: an interval such as `"15s"`, or `"off"`.
    #[serde(default)]
    pub heartbeat: Option<Heartbeat>,
}

/// A heartbeat setting as written: `"off"` or an interval of at least 100ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Heartbeat(pub Option<Duration>);

impl<'de> Deserialize<'de> for Heartbeat {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.trim().eq_ignore_ascii_case("off") {
            return Ok(Heartbeat(None));
        }
        match crate::duration::parse(&text).map_err(serde::de::Error::custom)? {
            d if d < Duration::from_millis(100) => Err(serde::de::Error::custom(
                "must be at least 100ms, or \"off\"",
            )),
            d => Ok(Heartbeat(Some(d))),
        }
    }
}

/// Timeouts to override; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct TimeoutsPatch {
    pub connect: Option<Positive>,
    pub write: Option<Positive>,
    pub first_byte: Option<Positive>,
    pub first_token: Option<Positive>,
    pub idle: Option<Positive>,
    pub attempt: Option<Positive>,
    pub attempt_growth: Option<Growth>,
    pub total: Option<Positive>,
    pub job: Option<Positive>,
}

/// Retry settings to override; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RetryPatch {
    pub max_attempts: Option<Attempts>,
    pub backoff_base: Option<Positive>,
    pub backoff_max: Option<Positive>,
}

/// A duration above zero, read from text such as `8s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Positive(pub Duration);

/// A growth factor from 1 to 4.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Growth(pub f64);

/// A number of tries from 1 to 10.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attempts(pub u32);

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match crate::duration::parse(&text).map_err(serde::de::Error::custom)? {
            d if d.is_zero() => Err(serde::de::Error::custom("must be more than 0s")),
            d if d > Duration::from_secs(7 * 24 * 3600) => {
                Err(serde::de::Error::custom("must be at most a week"))
            }
            d => Ok(Positive(d)),
        }
    }
}

impl<'de> Deserialize<'de> for Growth {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let factor = f64::deserialize(deserializer)?;
        if (1.0..=4.0).contains(&factor) {
            Ok(Growth(factor))
        } else {
            Err(serde::de::Error::custom(format!(
                "is {factor}; write a factor from 1 (no growth) to 4"
            )))
        }
    }
}

impl<'de> Deserialize<'de> for Attempts {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let tries = i64::deserialize(deserializer)?;
        if (1..=10).contains(&tries) {
            Ok(Attempts(tries as u32))
        } else {
            Err(serde::de::Error::custom(format!(
                "is {tries}; write 1 (no retry) to 10 tries"
            )))
        }
    }
}

/// One layer of overrides and where it is written.
#[derive(Debug, Clone, Copy)]
pub struct Layer<'a> {
    /// The key path prefix of the layer, e.g. `models.gpt-4o` or `families.reasoning`.
    pub source: &'a str,
    /// Its overrides.
    pub patch: &'a PolicyPatch,
}

/// One effective value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced {
    /// The key, e.g. `timeouts.first_token`.
    pub key: &'static str,
    /// The value as written in a file, e.g. `8s`.
    pub value: String,
    /// Where it came from: `built-in chat × content`, or the key path that set it.
    pub source: String,
}

/// Applies layers in order on a prior; returns the policy and, per key, where its value came from.
pub fn resolve(prior: Policy, prior_source: &str, layers: &[Layer<'_>]) -> (Policy, Vec<Sourced>) {
    let mut policy = prior;
    let mut sources: Vec<(&'static str, String)> =
        KEYS.iter().map(|k| (*k, prior_source.to_owned())).collect();
    for layer in layers {
        let mut set = |key: &'static str| {
            if let Some(entry) = sources.iter_mut().find(|(k, _)| *k == key) {
                entry.1 = format!("{}.{key}", layer.source);
            }
        };
        let t = &layer.patch.timeouts;
        let pt = &mut policy.timeouts;
        macro_rules! duration {
            ($field:ident, $key:literal) => {
                if let Some(Positive(d)) = t.$field {
                    pt.$field = d;
                    set($key);
                }
            };
        }
        duration!(connect, "timeouts.connect");
        duration!(write, "timeouts.write");
        duration!(first_byte, "timeouts.first_byte");
        duration!(first_token, "timeouts.first_token");
        duration!(idle, "timeouts.idle");
        duration!(attempt, "timeouts.attempt");
        duration!(total, "timeouts.total");
        duration!(job, "timeouts.job");
        if let Some(Growth(g)) = t.attempt_growth {
            pt.attempt_growth = g;
            set("timeouts.attempt_growth");
        }
        let r = &layer.patch.retry;
        if let Some(Attempts(n)) = r.max_attempts {
            policy.retry.max_attempts = n;
            set("retry.max_attempts");
        }
        if let Some(Positive(d)) = r.backoff_base {
            policy.retry.backoff_base = d;
            set("retry.backoff_base");
        }
        if let Some(Positive(d)) = r.backoff_max {
            policy.retry.backoff_max = d;
            set("retry.backoff_max");
        }
        if let Some(on) = layer.patch.stream_upstream {
            policy.stream_upstream = on;
            set("stream_upstream");
        }
        if let Some(Heartbeat(interval)) = layer.patch.heartbeat {
            policy.heartbeat = interval;
            set("heartbeat");
        }
    }
    let values = policy.values();
    let sourced = sources
        .into_iter()
        .zip(values)
        .map(|((key, source), value)| Sourced { key, value, source })
        .collect();
    (policy, sourced)
}

/// Every policy key, in the order `config check` prints them.
pub const KEYS: [&str; 14] = [
    "timeouts.connect",
    "timeouts.write",
    "timeouts.first_byte",
    "timeouts.first_token",
    "timeouts.idle",
    "timeouts.attempt",
    "timeouts.attempt_growth",
    "timeouts.total",
    "timeouts.job",
    "retry.max_attempts",
    "retry.backoff_base",
    "retry.backoff_max",
    "stream_upstream",
    "heartbeat",
];

impl Policy {
    /// The values in [`KEYS`] order, written as a file would.
    pub fn values(&self) -> [String; 14] {
        let t = &self.timeouts;
        let f = crate::duration::format;
        [
            f(t.connect),
            f(t.write),
            f(t.first_byte),
            f(t.first_token),
            f(t.idle),
            f(t.attempt),
            format!("{}", t.attempt_growth),
            f(t.total),
            f(t.job),
            self.retry.max_attempts.to_string(),
            f(self.retry.backoff_base),
            f(self.retry.backoff_max),
            self.stream_upstream.to_string(),
            self.heartbeat.map_or_else(|| "off".to_owned(), f),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_inferred_from_model_names() {
        for (name, family) in [
            ("gpt-4o", Family::Chat),
            ("gpt-4o-mini", Family::Chat),
            ("o1-mini", Family::Reasoning),
            ("o3-pro", Family::Reasoning),
            ("deepseek-r1", Family::Reasoning),
            ("deepseek/deepseek-r1", Family::Reasoning),
            ("dall-e-3", Family::Image),
            ("gpt-image-1", Family::Image),
            ("flux-kontext", Family::Image),
            ("text-embedding-3-small", Family::Embedding),
            ("claude-4-sonnet", Family::Reasoning),
            ("claude-sonnet-4-5", Family::Reasoning),
            ("anthropic/claude-opus-4-1", Family::Reasoning),
        ] {
            assert_eq!(Family::infer(name), family, "{name}");
        }
    }

    #[test]
    fn priors_follow_the_origin_documents_figures() {
        let chat = prior(Family::Chat, Scenario::Content);
        assert!(chat.timeouts.attempt >= secs(30) && chat.timeouts.attempt <= secs(60));
        assert!(chat.timeouts.total >= secs(60) && chat.timeouts.total <= secs(120));
        assert_eq!(chat.retry.max_attempts, 3);
        let reasoning = prior(Family::Reasoning, Scenario::Reasoning);
        assert!(
            reasoning.timeouts.first_token >= secs(120),
            "o1-preview thinks up to 120 s"
        );
        assert!(reasoning.timeouts.attempt >= secs(120) && reasoning.timeouts.attempt <= secs(180));
        assert_eq!(reasoning.retry.max_attempts, 2);
        let image = prior(Family::Image, Scenario::Image);
        assert!(image.timeouts.attempt >= secs(45) && image.timeouts.attempt <= secs(90));
        let realtime = prior(Family::Chat, Scenario::Realtime);
        assert!(
            realtime.timeouts.total <= secs(60) && realtime.retry.max_attempts == 2,
            "fail fast"
        );
        for family in Family::ALL {
            for scenario in Scenario::ALL {
                let p = prior(family, scenario);
                assert!(p.retry.backoff_base <= p.retry.backoff_max);
                assert!(p.timeouts.connect < p.timeouts.attempt);
            }
        }
    }

    #[test]
    fn layers_override_in_order_and_remember_their_source() {
        let defaults = PolicyPatch {
            timeouts: TimeoutsPatch {
                connect: Some(Positive(secs(2))),
                first_token: Some(Positive(secs(30))),
                ..Default::default()
            },
            ..Default::default()
        };
        let model = PolicyPatch {
            timeouts: TimeoutsPatch {
                first_token: Some(Positive(secs(8))),
                ..Default::default()
            },
            retry: RetryPatch {
                max_attempts: Some(Attempts(4)),
                ..Default::default()
            },
            stream_upstream: Some(false),
            heartbeat: None,
        };
        let (policy, sourced) = resolve(
            prior(Family::Chat, Scenario::Content),
            "built-in chat × content",
            &[
                Layer {
                    source: "defaults",
                    patch: &defaults,
                },
                Layer {
                    source: "models.gpt-4o",
                    patch: &model,
                },
            ],
        );
        assert_eq!(policy.timeouts.connect, secs(2));
        assert_eq!(policy.timeouts.first_token, secs(8));
        assert_eq!(policy.retry.max_attempts, 4);
        assert!(!policy.stream_upstream);
        let source = |key: &str| {
            sourced
                .iter()
                .find(|s| s.key == key)
                .unwrap()
                .source
                .clone()
        };
        assert_eq!(source("timeouts.connect"), "defaults.timeouts.connect");
        assert_eq!(
            source("timeouts.first_token"),
            "models.gpt-4o.timeouts.first_token"
        );
        assert_eq!(
            source("retry.max_attempts"),
            "models.gpt-4o.retry.max_attempts"
        );
        assert_eq!(source("timeouts.idle"), "built-in chat × content");
        assert_eq!(source("stream_upstream"), "models.gpt-4o.stream_upstream");
        assert_eq!(
            sourced
                .iter()
                .find(|s| s.key == "timeouts.first_token")
                .unwrap()
                .value,
            "8s"
        );
    }
}
