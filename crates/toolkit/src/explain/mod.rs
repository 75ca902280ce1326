//! `hourglass explain`: an error text (with the model and the elapsed time, when known) becomes the
//! failed phase, a class, the probable causes ranked and the fixes in the failing client's own
//! terms. The knowledge lives in [`catalogue`]; this module matches, weighs the elapsed time
//! against well-known layer defaults and the model's family, and renders.

pub mod catalogue;
pub mod class;

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use hourglass_config::Family;
use regex_lite::Regex;
use serde::Serialize;

pub use catalogue::{PATTERNS, Pattern, Phase};
pub use class::Class;

/// A layer whose well-known default timeout an elapsed time can match.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct KnownDefault {
    /// The default, in seconds.
    pub seconds: u64,
    /// Who has it.
    pub layer: &'static str,
    /// What such a timeout is, as a class.
    #[serde(skip)]
    pub class: Class,
    /// The setting to change.
    pub setting: &'static str,
}

/// Well-known default timeouts, by duration.
pub static KNOWN_DEFAULTS: &[KnownDefault] = &[
    KnownDefault {
        seconds: 5,
        layer: "OpenAI Python SDK connect timeout",
        class: Class::TcpConnectTimeout,
        setting: "httpx.Timeout(connect=...)",
    },
    KnownDefault {
        seconds: 10,
        layer: "undici connect timeout / Go TLSHandshakeTimeout / OkHttp read timeout",
        class: Class::TcpConnectTimeout,
        setting: "Agent({ connect: { timeout } }) / Transport.TLSHandshakeTimeout / readTimeout",
    },
    KnownDefault {
        seconds: 15,
        layer: "Envoy / Istio route timeout",
        class: Class::MiddleboxTimeout,
        setting: "route `timeout` (VirtualService `timeout:`)",
    },
    KnownDefault {
        seconds: 29,
        layer: "AWS API Gateway REST integration timeout",
        class: Class::MiddleboxTimeout,
        setting: "integration timeout (29 s quota)",
    },
    KnownDefault {
        seconds: 30,
        layer: "Go net.Dialer in DefaultTransport / Heroku router / CloudFront origin response / AWS HTTP API",
        class: Class::MiddleboxTimeout,
        setting: "net.Dialer.Timeout / move off the synchronous path / origin response timeout",
    },
    KnownDefault {
        seconds: 60,
        layer: "nginx proxy_read_timeout / AWS ALB idle timeout / Kong read_timeout",
        class: Class::MiddleboxTimeout,
        setting: "proxy_read_timeout / idle_timeout.timeout_seconds / read_timeout",
    },
    KnownDefault {
        seconds: 100,
        layer: "Cloudflare proxy read timeout (524) / .NET HttpClient.Timeout",
        class: Class::MiddleboxTimeout,
        setting: "stream or heartbeat inside 100 s / HttpClient.Timeout",
    },
    KnownDefault {
        seconds: 230,
        layer: "Azure App Service front end",
        class: Class::MiddleboxTimeout,
        setting: "stream, or run the call in a background job",
    },
    KnownDefault {
        seconds: 240,
        layer: "Azure Load Balancer idle timeout (4 min)",
        class: Class::MiddleboxTimeout,
        setting: "idle timeout (up to 30 min) or TCP keep-alive",
    },
    KnownDefault {
        seconds: 300,
        layer: "undici headersTimeout/bodyTimeout (Node fetch) / aiohttp ClientTimeout.total / Envoy stream idle timeout",
        class: Class::FirstByteTimeout,
        setting: "Agent({ headersTimeout, bodyTimeout }) / ClientTimeout(total=...) / stream_idle_timeout",
    },
    KnownDefault {
        seconds: 350,
        layer: "AWS NAT Gateway idle timeout",
        class: Class::PeerClosed,
        setting: "TCP keep-alive below 350 s",
    },
    KnownDefault {
        seconds: 600,
        layer: "OpenAI / Anthropic SDK default timeout (10 min) / LiteLLM request timeout",
        class: Class::TotalDeadline,
        setting: "timeout= on the client / litellm `timeout`",
    },
    KnownDefault {
        seconds: 900,
        layer: "Cloudflare proxy idle timeout / AWS Lambda maximum",
        class: Class::MiddleboxTimeout,
        setting: "keep the connection busy / split the work",
    },
];

impl KnownDefault {
    /// Whether `elapsed` is this default: a timer fires at or a little after its value, so the
    /// window reaches 1 % (at least 0.5 s) below and 5 % (at least 1.5 s) above.
    pub fn matches(&self, elapsed: Duration) -> bool {
        let value = self.seconds as f64;
        let elapsed = elapsed.as_secs_f64();
        let below = (value * 0.01).max(0.5);
        let above = (value * 0.05).max(1.5);
        elapsed >= value - below && elapsed <= value + above
    }
}

/// What `explain` made of one message.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The message as given.
    pub input: String,
    /// The class.
    pub class: Class,
    /// Where the call was.
    pub phase: &'static str,
    /// Network, server, client or path (a middlebox).
    pub side: &'static str,
    /// Who printed the message (empty when unknown).
    pub layer: &'static str,
    /// The catalogue pattern that matched (empty when none).
    pub pattern: &'static str,
    /// The wrapped error's class, when the message wraps a known one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wrapped: Option<Class>,
    /// Layers whose default timeout the elapsed time matches.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub elapsed_matches: Vec<KnownDefault>,
    /// Probable causes, most likely first.
    pub causes: Vec<String>,
    /// Concrete fixes, most specific first.
    pub fixes: Vec<String>,
}

struct Compiled {
    regexes: Vec<Regex>,
}

static COMPILED: LazyLock<Compiled> = LazyLock::new(|| Compiled {
    regexes: PATTERNS
        .iter()
        .map(|p| {
            Regex::new(&format!("(?im){}", p.regex))
                .unwrap_or_else(|e| panic!("catalogue pattern `{}` does not compile: {e}", p.id))
        })
        .collect(),
});

/// The first catalogue pattern that matches `text`, skipping wrappers when `skip_wrappers`.
pub fn matching_pattern(text: &str, skip_wrappers: bool) -> Option<&'static Pattern> {
    PATTERNS
        .iter()
        .zip(&COMPILED.regexes)
        .find(|(p, re)| {
            !(skip_wrappers && (p.wraps || p.class == Class::Wrapper)) && re.is_match(text)
        })
        .map(|(p, _)| p)
}

/// Explains one message; `model` and `elapsed` sharpen the causes when given.
pub fn explain(message: &str, model: Option<&str>, elapsed: Option<Duration>) -> Explanation {
    let text = message.trim();
    let pattern = matching_pattern(text, false);
    let wrapped = pattern
        .filter(|p| p.wraps)
        .and_then(|_| matching_pattern(text, true));
    let elapsed_matches: Vec<KnownDefault> = elapsed
        .map(|e| {
            KNOWN_DEFAULTS
                .iter()
                .copied()
                .filter(|d| d.matches(e))
                .collect()
        })
        .unwrap_or_default();

    // An unrecognised text at a layer's well-known default is most likely that layer.
    let (class, phase) = match (pattern, elapsed_matches.first()) {
        (Some(p), _) => (p.class, p.phase.name()),
        (None, Some(d)) => (d.class, "any"),
        (None, None) => (Class::Unknown, "unknown"),
    };
    let mut causes: Vec<String> = Vec::new();
    let mut fixes: Vec<String> = Vec::new();
    let timer_like = class.is_timeout()
        || matches!(
            class,
            Class::Wrapper | Class::Unknown | Class::PeerClosed | Class::ClientCancel
        );
    if timer_like {
        for d in &elapsed_matches {
            causes.push(format!(
                "the elapsed time is the default timeout of {} ({} s)",
                d.layer, d.seconds
            ));
            fixes.push(format!("raise or avoid that timer: {}", d.setting));
        }
    }
    if let Some(p) = pattern {
        causes.push(p.cause.to_owned());
        fixes.push(p.fix.to_owned());
    }
    if let Some(inner) = wrapped {
        causes.push(format!(
            "the wrapped error is {} ({}): {}",
            inner.class.name(),
            inner.layer,
            inner.cause
        ));
        fixes.push(inner.fix.to_owned());
    }
    if let Some(model) = model {
        model_causes(model, class, elapsed, &mut causes, &mut fixes);
    }
    causes.extend(class.causes().iter().map(|c| (*c).to_owned()));
    fixes.extend(class.fixes().iter().map(|f| (*f).to_owned()));
    dedup(&mut causes);
    dedup(&mut fixes);
    Explanation {
        input: message.to_owned(),
        class,
        phase,
        side: class.side(),
        layer: pattern.map_or("", |p| p.layer),
        pattern: pattern.map_or("", |p| p.id),
        wrapped: wrapped.map(|p| p.class),
        elapsed_matches,
        causes,
        fixes,
    }
}

/// Causes that follow from the model's family: a reasoning model's silence, an image model's wait.
fn model_causes(
    model: &str,
    class: Class,
    elapsed: Option<Duration>,
    causes: &mut Vec<String>,
    fixes: &mut Vec<String>,
) {
    let waiting = matches!(
        class,
        Class::FirstByteTimeout
            | Class::TotalDeadline
            | Class::MiddleboxTimeout
            | Class::ClientCancel
    );
    if !waiting {
        return;
    }
    let prior = hourglass_config::policy::prior(
        Family::infer(model),
        Family::infer(model).default_scenario(),
    );
    let first_token = prior.timeouts.first_token;
    let short = elapsed.is_none_or(|e| e < first_token);
    match Family::infer(model) {
        Family::Reasoning if short => {
            causes.insert(0, format!(
                "`{model}` is a reasoning model: it thinks 20–120 s before its first token, and a non-streamed answer sends nothing until it is done"
            ));
            fixes.insert(0, format!(
                "stream `{model}` (`stream: true`), or give it ≥ {} s to the first token; through hourglass, `stream_upstream` and `heartbeat` keep proxies from cutting the silence",
                first_token.as_secs()
            ));
        }
        Family::Image if short => {
            causes.insert(
                0,
                format!("`{model}` generates images: 5–40 s per picture is normal"),
            );
            fixes.insert(
                0,
                format!(
                    "give `{model}` at least {} s",
                    prior.timeouts.attempt.as_secs()
                ),
            );
        }
        _ => {}
    }
}

fn dedup(items: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    items.retain(|item| seen.insert(item.clone()));
}

/// Renders one explanation for a person.
pub fn render(e: &Explanation) -> String {
    let mut out = String::new();
    let layer = if e.layer.is_empty() {
        "unrecognised message".to_owned()
    } else {
        format!("{} (pattern {})", e.layer, e.pattern)
    };
    out.push_str(&format!(
        "class:   {}   phase: {}   side: {}\n",
        e.class.name(),
        e.phase,
        e.side
    ));
    out.push_str(&format!("from:    {layer}\n"));
    if let Some(inner) = e.wrapped {
        out.push_str(&format!("wraps:   {}\n", inner.name()));
    }
    for d in &e.elapsed_matches {
        out.push_str(&format!("elapsed: matches {} ({} s)\n", d.layer, d.seconds));
    }
    out.push_str("probable causes:\n");
    for (i, cause) in e.causes.iter().enumerate() {
        out.push_str(&format!("  {}. {cause}\n", i + 1));
    }
    out.push_str("fixes:\n");
    for fix in &e.fixes {
        out.push_str(&format!("  - {fix}\n"));
    }
    out
}

/// Counts of many explanations by class, for the summary of a log.
pub fn summary(explanations: &[Explanation]) -> BTreeMap<Class, usize> {
    let mut counts = BTreeMap::new();
    for e in explanations {
        *counts.entry(e.class).or_insert(0) += 1;
    }
    counts
}

/// Renders the summary of many explanations: one line per class, with its most common layer.
pub fn render_summary(explanations: &[Explanation]) -> String {
    let total = explanations.len();
    let mut out = format!("{total} messages\n");
    for (class, count) in summary(explanations) {
        let mut layers: BTreeMap<&str, usize> = BTreeMap::new();
        for e in explanations
            .iter()
            .filter(|e| e.class == class && !e.layer.is_empty())
        {
            *layers.entry(e.layer).or_insert(0) += 1;
        }
        let top = layers
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(l, _)| format!("  (mostly {l})"))
            .unwrap_or_default();
        out.push_str(&format!(
            "  {:<20} {count:>6}  {:>5.1}%{top}\n",
            class.name(),
            100.0 * count as f64 / total.max(1) as f64
        ));
    }
    out
}

/// Explains every non-empty line of a log and renders the result: in text, one line per
/// recognised message and a summary by class; in JSON, one object per line (JSON Lines).
pub fn explain_lines(
    text: &str,
    model: Option<&str>,
    elapsed: Option<Duration>,
    json: bool,
) -> (String, Vec<Explanation>) {
    let explanations: Vec<(usize, Explanation)> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| (n + 1, explain(line, model, elapsed)))
        .collect();
    let mut out = String::new();
    if json {
        for (line, e) in &explanations {
            let mut value = serde_json::to_value(e).unwrap_or_default();
            value["line"] = (*line).into();
            out.push_str(&value.to_string());
            out.push('\n');
        }
    } else {
        for (line, e) in explanations
            .iter()
            .filter(|(_, e)| e.class != Class::Unknown)
        {
            out.push_str(&format!(
                "line {line}: {} ({}, {}) — {}\n",
                e.class.name(),
                e.phase,
                if e.layer.is_empty() {
                    "elapsed time"
                } else {
                    e.layer
                },
                e.fixes.first().map_or("", String::as_str)
            ));
        }
        let all: Vec<Explanation> = explanations.iter().map(|(_, e)| e.clone()).collect();
        out.push_str("\nsummary: ");
        out.push_str(&render_summary(&all));
    }
    (out, explanations.into_iter().map(|(_, e)| e).collect())
}
