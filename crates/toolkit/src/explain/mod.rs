//! `hourglass explain`: an error text (with the model and the elapsed time, when known) becomes the
//! failed phase, a class, the probable causes ranked and the fixes in the failing client's own
//! terms. The knowledge lives in [`catalogue`]; this module matches, weighs the elapsed time
//! against well-known layer defaults and the model's family, and renders.

pub mod catalogue;
pub mod class;
pub mod log;
pub mod rules;

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use hourglass_config::Family;
use regex_lite::Regex;
use serde::Serialize;

pub use catalogue::{PATTERNS, Pattern, Phase};
pub use class::Class;
pub use rules::Candidate;

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

/// Well-known default timeouts, by duration. Each figure's source is in the comment above it;
/// defaults drift (LiteLLM's went from 600 s to 6000 s, Vercel's from 10 s to 300 s), so the
/// table names the version or date it was read at. Last reviewed 2026-11-30.
pub static KNOWN_DEFAULTS: &[KnownDefault] = &[
    // openai-python and anthropic-sdk-python `_constants.py`: `httpx.Timeout(600, connect=5.0)`.
    KnownDefault {
        seconds: 5,
        layer: "OpenAI / Anthropic Python SDK connect timeout",
        class: Class::TcpConnectTimeout,
        setting: "httpx.Timeout(connect=...)",
    },
    // undici `Client` docs: `connect.timeout` 10e3 ms; Go net/http `DefaultTransport`:
    // `TLSHandshakeTimeout: 10 * time.Second`; OkHttp `OkHttpClient.Builder`: connect, read and
    // write 10 s each.
    KnownDefault {
        seconds: 10,
        layer: "undici connect timeout / Go TLSHandshakeTimeout / OkHttp connect-read-write timeouts",
        class: Class::TcpConnectTimeout,
        setting: "Agent({ connect: { timeout } }) / Transport.TLSHandshakeTimeout / connectTimeout, readTimeout",
    },
    // Envoy `config.route.v3.RouteAction.timeout`: "defaults to 15 seconds" (Istio's
    // VirtualService sets no timeout unless told to).
    KnownDefault {
        seconds: 15,
        layer: "Envoy route timeout",
        class: Class::MiddleboxTimeout,
        setting: "route `timeout` (Istio VirtualService `timeout:`)",
    },
    // AWS API Gateway quotas: REST API integration timeout 29 s (raisable for regional and
    // private APIs since 2024-06).
    KnownDefault {
        seconds: 29,
        layer: "AWS API Gateway REST integration timeout",
        class: Class::MiddleboxTimeout,
        setting: "integration timeout (29 s quota; raise it for regional APIs)",
    },
    // Go `DefaultTransport` dialer 30 s; Heroku router H12 at 30 s; CloudFront origin response
    // timeout 30 s; API Gateway HTTP API 30 s; Azure Front Door origin response timeout 30 s
    // (troubleshoot-issues, up to 240 s); GCP Application LB backend service timeout 30 s.
    KnownDefault {
        seconds: 30,
        layer: "Heroku router (H12) / CloudFront origin response / AWS HTTP API / Azure Front Door / GCP load balancer backend timeout / Go net.Dialer",
        class: Class::MiddleboxTimeout,
        setting: "move off the synchronous path or stream / origin response timeout / backend service timeoutSec",
    },
    // Heroku router: after the first byte, a 55 s rolling window between bytes.
    KnownDefault {
        seconds: 55,
        layer: "Heroku router rolling window between bytes",
        class: Class::MiddleboxTimeout,
        setting: "send a byte at least every 55 s (heartbeats)",
    },
    // nginx `proxy_read_timeout 60s`; AWS ALB `idle_timeout.timeout_seconds` 60; Kong
    // `read_timeout` 60000 ms; Node's http.Server `headersTimeout` 60 s.
    KnownDefault {
        seconds: 60,
        layer: "nginx proxy_read_timeout / AWS ALB idle timeout / Kong read_timeout",
        class: Class::MiddleboxTimeout,
        setting: "proxy_read_timeout / idle_timeout.timeout_seconds / read_timeout",
    },
    // Cloudflare: 100 s to the origin's first byte (error 524; Enterprise can raise it);
    // .NET `HttpClient.Timeout` default 100 s.
    KnownDefault {
        seconds: 100,
        layer: "Cloudflare proxy read timeout (524) / .NET HttpClient.Timeout",
        class: Class::MiddleboxTimeout,
        setting: "stream or heartbeat inside 100 s / HttpClient.Timeout",
    },
    // Azure App Service: the front end ends a request after 230 s.
    KnownDefault {
        seconds: 230,
        layer: "Azure App Service front end",
        class: Class::MiddleboxTimeout,
        setting: "stream, or run the call in a background job",
    },
    // Azure Load Balancer TCP idle timeout 4 min (up to 30).
    KnownDefault {
        seconds: 240,
        layer: "Azure Load Balancer idle timeout (4 min)",
        class: Class::MiddleboxTimeout,
        setting: "idle timeout (up to 30 min) or TCP keep-alive",
    },
    // undici `headersTimeout`/`bodyTimeout` 300e3 ms (Node's fetch); aiohttp `ClientTimeout`
    // total 5 min; Envoy `stream_idle_timeout` 5 min; Vercel Functions default maximum duration
    // 300 s (functions/limitations, 2025-12); Cloud Run request timeout 300 s.
    KnownDefault {
        seconds: 300,
        layer: "undici headersTimeout/bodyTimeout (Node fetch) / aiohttp ClientTimeout.total / Envoy stream idle timeout / Vercel function duration / Cloud Run request timeout",
        class: Class::FirstByteTimeout,
        setting: "Agent({ headersTimeout, bodyTimeout }) / ClientTimeout(total=...) / stream_idle_timeout / maxDuration",
    },
    // AWS NAT Gateway: idle connections are dropped after 350 s.
    KnownDefault {
        seconds: 350,
        layer: "AWS NAT Gateway idle timeout",
        class: Class::PeerClosed,
        setting: "TCP keep-alive below 350 s",
    },
    // openai-python / openai-node / Anthropic SDKs: 10 minutes.
    KnownDefault {
        seconds: 600,
        layer: "OpenAI / Anthropic SDK default timeout (10 min)",
        class: Class::TotalDeadline,
        setting: "timeout= on the client",
    },
    // Cloudflare proxy idle timeout 900 s; AWS Lambda maximum 900 s.
    KnownDefault {
        seconds: 900,
        layer: "Cloudflare proxy idle timeout / AWS Lambda maximum",
        class: Class::MiddleboxTimeout,
        setting: "keep the connection busy / split the work",
    },
    // LiteLLM `litellm/constants.py`: `request_timeout: float = 6000  # time in seconds`.
    KnownDefault {
        seconds: 6000,
        layer: "LiteLLM request_timeout",
        class: Class::TotalDeadline,
        setting: "litellm `timeout` / `request_timeout`",
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
    /// Why the rules about layers and phases changed the pattern's class (a status a proxy
    /// produced, an error raised mid-stream, a client-wide clock, a timeout that names no phase).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub because: Vec<String>,
    /// For a message that does not say its phase: the readings, likeliest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Candidate>,
    /// For a message that does not say its phase: what to find out to decide.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
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
    first_match(text, |p| {
        !(skip_wrappers && (p.wraps || p.class == Class::Wrapper))
    })
}

/// The first catalogue pattern that `considered` lets through and that matches `text`.
fn first_match(text: &str, considered: impl Fn(&Pattern) -> bool) -> Option<&'static Pattern> {
    PATTERNS
        .iter()
        .zip(&COMPILED.regexes)
        .find(|(p, re)| considered(p) && re.is_match(text))
        .map(|(p, _)| p)
}

/// Explains one message; `model` and `elapsed` sharpen the causes when given.
pub fn explain(message: &str, model: Option<&str>, elapsed: Option<Duration>) -> Explanation {
    let text = message.trim();
    // A timeout that names no phase often quotes the timeout it wraps (`httpx.PoolTimeout …
    // APITimeoutError: Request timed out`): the quoted one says more.
    let pattern = matching_pattern(text, false).map(|p| {
        if rules::is_ambiguous(p.id) {
            first_match(text, |q| {
                !q.wraps && q.class.is_timeout() && !rules::is_ambiguous(q.id)
            })
            .unwrap_or(p)
        } else {
            p
        }
    });
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
    let start = match (pattern, elapsed_matches.first()) {
        (Some(p), _) => (p.class, p.phase.name()),
        (None, Some(d)) => (d.class, "any"),
        (None, None) => (Class::Unknown, "unknown"),
    };
    // The rules read the facts of the text; for a wrapper they judge the error it wraps (its
    // class stays `wrapper`, and `wrapped` says what the rules made of the inside).
    let facts = rules::read(text);
    let (class, phase, wrapped_class, ruling) = match pattern {
        Some(p) if p.wraps => {
            let inside = wrapped.map_or((Class::Unknown, "unknown"), |w| (w.class, w.phase.name()));
            let ruling = rules::rule(wrapped, &facts, elapsed, inside);
            // A wrapper around a timeout that names no phase wraps nothing more telling.
            let found =
                (!matches!(ruling.class, Class::Unknown | Class::Wrapper)).then_some(ruling.class);
            (p.class, p.phase.name(), found, ruling)
        }
        _ => {
            let ruling = rules::rule(pattern, &facts, elapsed, start);
            (ruling.class, ruling.phase, None, ruling)
        }
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
    causes.extend(ruling.because.iter().cloned());
    if let Some(p) = pattern.filter(|p| p.class == class) {
        causes.push(p.cause.to_owned());
        fixes.push(p.fix.to_owned());
    }
    if let Some(inner) = wrapped.filter(|w| Some(w.class) == wrapped_class) {
        causes.push(format!(
            "the wrapped error is {} ({}): {}",
            inner.class.name(),
            inner.layer,
            inner.cause
        ));
        fixes.push(inner.fix.to_owned());
    } else if let Some(inner) = wrapped_class {
        causes.push(format!("the wrapped error is {}", inner.name()));
        fixes.extend(inner.fixes().iter().map(|f| (*f).to_owned()));
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
        wrapped: wrapped_class,
        because: ruling.because,
        candidates: ruling.candidates,
        question: ruling.question,
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
    if !e.candidates.is_empty() {
        out.push_str("could be:\n");
        for (i, c) in e.candidates.iter().enumerate() {
            out.push_str(&format!(
                "  {}. {} ({}) — if {}\n",
                i + 1,
                c.class.name(),
                c.phase,
                c.when
            ));
        }
    }
    if let Some(q) = &e.question {
        out.push_str(&format!("decide:  {q}\n"));
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

/// One class's share of a log: how often, when first and last, mostly from whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassSummary {
    /// The class.
    pub class: Class,
    /// How many records.
    pub count: usize,
    /// When first seen, as the log wrote it, else `line N`.
    pub first_seen: String,
    /// When last seen, as the log wrote it, else `line N`.
    pub last_seen: String,
    /// The layer most of its messages came from (empty when none was recognised).
    pub layer: &'static str,
    /// The first fix for the class's first record.
    pub fix: String,
}

/// Sums the recognised records up by class, the most frequent first.
pub fn summarise(found: &[(log::Record, Explanation)]) -> Vec<ClassSummary> {
    let mut by_class: BTreeMap<Class, Vec<&(log::Record, Explanation)>> = BTreeMap::new();
    for pair in found.iter().filter(|(_, e)| e.class != Class::Unknown) {
        by_class.entry(pair.1.class).or_default().push(pair);
    }
    let mut summary = by_class
        .into_iter()
        .map(|(class, pairs)| {
            let mut layers: BTreeMap<&'static str, usize> = BTreeMap::new();
            for (_, e) in &pairs {
                if !e.layer.is_empty() {
                    *layers.entry(e.layer).or_insert(0) += 1;
                }
            }
            let seen = |(r, _): &&(log::Record, Explanation)| {
                if r.time.is_empty() {
                    format!("line {}", r.line)
                } else {
                    r.time.clone()
                }
            };
            ClassSummary {
                class,
                count: pairs.len(),
                first_seen: pairs.first().map(seen).unwrap_or_default(),
                last_seen: pairs.last().map(seen).unwrap_or_default(),
                layer: layers
                    .iter()
                    .max_by_key(|(_, n)| **n)
                    .map_or("", |(l, _)| l),
                fix: pairs
                    .first()
                    .and_then(|(_, e)| e.fixes.first().cloned())
                    .unwrap_or_default(),
            }
        })
        .collect::<Vec<_>>();
    summary.sort_by_key(|s| std::cmp::Reverse(s.count));
    summary
}

/// Renders a log's summary: one line per class with its count, share, first and last time seen
/// and its most common layer, then each class's fix.
pub fn render_summary(found: &[(log::Record, Explanation)]) -> String {
    let summary = summarise(found);
    let total: usize = summary.iter().map(|s| s.count).sum();
    let mut out = format!(
        "{total} error texts found ({} other {} with no known error text)\n  {:<20} {:>6} {:>6}  {:<26} {:<26} from\n",
        found.len() - total,
        if found.len() - total == 1 {
            "line"
        } else {
            "lines"
        },
        "class",
        "count",
        "share",
        "first seen",
        "last seen"
    );
    for s in &summary {
        out.push_str(&format!(
            "  {:<20} {:>6} {:>5.1}%  {:<26} {:<26} {}\n",
            s.class.name(),
            s.count,
            100.0 * s.count as f64 / total.max(1) as f64,
            s.first_seen,
            s.last_seen,
            if s.layer.is_empty() { "—" } else { s.layer }
        ));
    }
    out.push_str("fixes:\n");
    for s in &summary {
        out.push_str(&format!("  {}: {}\n", s.class.name(), s.fix));
    }
    out
}

/// Explains every error text in a log ([`log::records`]: plain lines, JSON log lines, Python
/// tracebacks, JavaScript stacks) and renders the result: in text, one line per recognised
/// record and a summary by class with counts and first/last time seen; in JSON, one object per
/// record (JSON Lines) with its `line` and `time`.
pub fn explain_lines(
    text: &str,
    model: Option<&str>,
    elapsed: Option<Duration>,
    json: bool,
) -> (String, Vec<Explanation>) {
    let found: Vec<(log::Record, Explanation)> = log::records(text)
        .into_iter()
        .map(|r| {
            let e = explain(&r.text, model, elapsed);
            (r, e)
        })
        .collect();
    let mut out = String::new();
    if json {
        for (record, e) in &found {
            let mut value = serde_json::to_value(e).unwrap_or_default();
            value["line"] = record.line.into();
            if !record.time.is_empty() {
                value["time"] = record.time.clone().into();
            }
            out.push_str(&value.to_string());
            out.push('\n');
        }
    } else {
        for (record, e) in found.iter().filter(|(_, e)| e.class != Class::Unknown) {
            let when = if record.time.is_empty() {
                String::new()
            } else {
                format!(" [{}]", record.time)
            };
            out.push_str(&format!(
                "line {}{when}: {} ({}, {})\n",
                record.line,
                e.class.name(),
                e.phase,
                if e.layer.is_empty() {
                    "elapsed time"
                } else {
                    e.layer
                },
            ));
        }
        out.push_str("\nsummary: ");
        out.push_str(&render_summary(&found));
    }
    (out, found.into_iter().map(|(_, e)| e).collect())
}
