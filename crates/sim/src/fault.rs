//! Typed faults and the `x-sim-fault` header grammar.
//!
//! `x-sim-fault: KIND[;key=value]*[, KIND[;key=value]*]*`, e.g. `hang`,
//! `status;code=503;retry_after=2`, `stall;after_chunks=3;for=30s`,
//! `first_token;after=20s;keepalive=5s, cut;after_chunks=5`. Two keys apply to every kind:
//! `upstream=NAME` (only the simulated upstream of that name injects it) and `p=0.3` (inject with
//! that probability, drawn from the request's seeded randomness).
//!
//! # Why one header and not many
//! A gateway forwards unknown headers untouched, so a single header lets a test drive faults
//! through any proxy; `upstream=` aims a fault at one of several upstreams behind it.

use std::{fmt, time::Duration};

use crate::duration;

/// Chunks a stream-shaping fault lets through when the fault names no `after_chunks`.
pub const DEFAULT_AFTER_CHUNKS: u32 = 3;
/// The longest duration a fault may name (a week): longer ones are typos, and bounded values
/// keep deadline arithmetic far from overflow.
pub const MAX_FAULT_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// One fault the simulator can inject.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Read the request, never answer; the connection stays open.
    Hang,
    /// Wait before sending the response headers.
    DelayHeaders {
        /// How long to wait (`for`, default 5s).
        by: Duration,
    },
    /// Answer with an error status instead of a completion.
    Status {
        /// The status code (`code`, 400..=599, default 500).
        code: u16,
        /// `Retry-After` header in whole seconds (`retry_after`).
        retry_after: Option<u64>,
        /// `retry-after-ms` header, as OpenAI sends it (`retry_after_ms`).
        retry_after_ms: Option<u64>,
        /// What the error body looks like (`body`, default `json`).
        body: ErrorBody,
    },
    /// Answer 429 with `Retry-After` (default 1 s when neither key is given).
    RateLimit {
        /// `Retry-After` header in whole seconds (`retry_after`).
        retry_after: Option<u64>,
        /// `retry-after-ms` header (`retry_after_ms`).
        retry_after_ms: Option<u64>,
    },
    /// Read the request, then reset the TCP connection (RST) before any response byte.
    Reset,
    /// Close the connection after N content chunks: no finish chunk, no `[DONE]`.
    Cut {
        /// Content chunks sent before the cut (`after_chunks`, default 3).
        after_chunks: u32,
    },
    /// End a stream after N content chunks with `[DONE]` but no finish chunk, as llama.cpp's
    /// server does when a newer request interrupts it. A whole answer is unaffected.
    Interrupt {
        /// Content chunks sent before the `[DONE]` (`after_chunks`, default 3).
        after_chunks: u32,
    },
    /// Stop after N content chunks for a while, then go on.
    Stall {
        /// Content chunks sent before the stall (`after_chunks`, default 3).
        after_chunks: u32,
        /// How long nothing is sent (`for`, default 30s).
        duration: Duration,
    },
    /// Generate at a fixed, slow rate.
    Slow {
        /// Tokens per second (`tokens_per_s`, default 1, may be fractional such as 0.5).
        tokens_per_s: f64,
    },
    /// Wait before the first content token, optionally with SSE keep-alive comments meanwhile.
    FirstToken {
        /// Delay from the response headers to the first content token (`after`, default 20s).
        after: Duration,
        /// Interval of `: keep-alive` comments while waiting (`keepalive`, off by default).
        keepalive: Option<Duration>,
    },
    /// Send content chunk N as broken JSON (a non-streaming body is broken as a whole).
    Malformed {
        /// Content chunks sent intact before the broken one (`after_chunks`, default 3).
        after_chunks: u32,
    },
    /// Stop completing TCP handshakes (clients see a connect timeout); this request hangs.
    Blackhole {
        /// How long the listener stays dark (`for`, default: until the server stops).
        duration: Option<Duration>,
    },
}

/// The body of a simulated error status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorBody {
    /// OpenAI's `{"error": {...}}` JSON.
    Json,
    /// An HTML page, as CDNs and load balancers send (Cloudflare's 52x pages, nginx's 50x pages).
    Html,
    /// No body at all.
    Empty,
}

/// A fault as written: the fault, and to whom and how often it applies.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    /// The fault itself.
    pub fault: Fault,
    /// Only the simulated upstream of this name injects it (`upstream=`); `None` means every one.
    pub upstream: Option<String>,
    /// Probability of injecting it on a request (`p=`), 1.0 unless written.
    pub probability: f64,
}

/// A parsed `x-sim-fault` value (or scenario fault entry): one or more faults.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultList(pub Vec<FaultSpec>);

/// The faults that apply to one response, after `upstream=` and `p=` were decided.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultSet {
    /// Extra wait before the response headers.
    pub delay_headers: Option<Duration>,
    /// A fault that replaces the response: hang, reset, an error status or a blackhole.
    pub outcome: Option<Fault>,
    /// Delay before the first content token and the keep-alive interval meanwhile.
    pub first_token: Option<(Duration, Option<Duration>)>,
    /// A fixed generation rate in tokens per second.
    pub slow: Option<f64>,
    /// Content chunks before a stall, and its length.
    pub stall: Option<(u32, Duration)>,
    /// Content chunks before the connection is cut.
    pub cut: Option<u32>,
    /// Content chunks before a bare `[DONE]` ends the stream.
    pub interrupt: Option<u32>,
    /// Content chunks before the broken one.
    pub malformed: Option<u32>,
}

/// What was wrong with a fault text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultError {
    /// The header or entry is empty.
    #[error("empty fault; write e.g. `hang` or `status;code=503`")]
    Empty,
    /// The kind is not one the simulator knows.
    #[error("unknown fault kind `{kind}`; known kinds: {}", KINDS.join(", "))]
    UnknownKind {
        /// The kind as written.
        kind: String,
    },
    /// The key does not belong to this kind.
    #[error("unknown key `{key}` for fault `{kind}`; it takes: {}", keys_of(kind))]
    UnknownKey {
        /// The fault kind.
        kind: &'static str,
        /// The key as written.
        key: String,
    },
    /// The key has no `=value`.
    #[error("key `{key}` of fault `{kind}` has no value; write `{key}=VALUE`")]
    MissingValue {
        /// The fault kind.
        kind: &'static str,
        /// The key as written.
        key: String,
    },
    /// The key was given twice.
    #[error("key `{key}` of fault `{kind}` is given twice")]
    RepeatedKey {
        /// The fault kind.
        kind: &'static str,
        /// The repeated key.
        key: String,
    },
    /// The value cannot be used for this key.
    #[error("bad value `{value}` for `{kind};{key}`: {reason}")]
    BadValue {
        /// The fault kind.
        kind: &'static str,
        /// The key.
        key: String,
        /// The value as written.
        value: String,
        /// Why it was refused and what would do.
        reason: String,
    },
    /// Two faults decide the same thing for the same upstream.
    #[error("faults `{first}` and `{second}` conflict: {why}")]
    Conflict {
        /// The first fault's kind.
        first: &'static str,
        /// The second fault's kind.
        second: &'static str,
        /// Why they cannot apply together.
        why: &'static str,
    },
}

/// Every fault kind, as written in the header.
pub const KINDS: [&str; 12] = [
    "hang",
    "delay_headers",
    "status",
    "rate_limit",
    "reset",
    "cut",
    "interrupt",
    "stall",
    "slow",
    "first_token",
    "malformed",
    "blackhole",
];

fn keys_of(kind: &str) -> String {
    let own: &[&str] = match kind {
        "delay_headers" | "blackhole" => &["for"],
        "status" => &["code", "retry_after", "retry_after_ms", "body"],
        "rate_limit" => &["retry_after", "retry_after_ms"],
        "cut" | "interrupt" | "malformed" => &["after_chunks"],
        "stall" => &["after_chunks", "for"],
        "slow" => &["tokens_per_s"],
        "first_token" => &["after", "keepalive"],
        _ => &[],
    };
    own.iter()
        .chain(["upstream", "p"].iter())
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}

impl Fault {
    /// The kind as written in the header.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Hang => "hang",
            Fault::DelayHeaders { .. } => "delay_headers",
            Fault::Status { .. } => "status",
            Fault::RateLimit { .. } => "rate_limit",
            Fault::Reset => "reset",
            Fault::Cut { .. } => "cut",
            Fault::Interrupt { .. } => "interrupt",
            Fault::Stall { .. } => "stall",
            Fault::Slow { .. } => "slow",
            Fault::FirstToken { .. } => "first_token",
            Fault::Malformed { .. } => "malformed",
            Fault::Blackhole { .. } => "blackhole",
        }
    }

    /// Whether this fault replaces the response as a whole (so two of them cannot apply at once).
    fn is_outcome(&self) -> bool {
        matches!(
            self,
            Fault::Hang
                | Fault::Status { .. }
                | Fault::RateLimit { .. }
                | Fault::Reset
                | Fault::Blackhole { .. }
        )
    }
}

/// The key=value pairs of one fault, consumed as the kind's parser reads them.
struct Keys<'a> {
    kind: &'static str,
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Keys<'a> {
    fn take(&mut self, key: &str) -> Option<&'a str> {
        let at = self.pairs.iter().position(|(k, _)| *k == key)?;
        Some(self.pairs.remove(at).1)
    }

    fn bad(&self, key: &str, value: &str, reason: impl Into<String>) -> FaultError {
        FaultError::BadValue {
            kind: self.kind,
            key: key.to_owned(),
            value: value.to_owned(),
            reason: reason.into(),
        }
    }

    fn duration(&mut self, key: &str) -> Result<Option<Duration>, FaultError> {
        self.bounded_duration(key, Duration::ZERO)
    }

    fn positive_duration(&mut self, key: &str) -> Result<Option<Duration>, FaultError> {
        self.bounded_duration(key, Duration::from_millis(1))
    }

    fn bounded_duration(
        &mut self,
        key: &str,
        min: Duration,
    ) -> Result<Option<Duration>, FaultError> {
        let Some(value) = self.take(key) else {
            return Ok(None);
        };
        match duration::parse(value) {
            Ok(d) if d < min => Err(self.bad(
                key,
                value,
                format!("must be at least {}", duration::format(min)),
            )),
            Ok(d) if d > MAX_FAULT_DURATION => Err(self.bad(key, value, "must be at most 7 days")),
            Ok(d) => Ok(Some(d)),
            Err(e) => Err(self.bad(key, value, e.to_string())),
        }
    }

    fn integer(&mut self, key: &str, max: u64) -> Result<Option<u64>, FaultError> {
        let Some(value) = self.take(key) else {
            return Ok(None);
        };
        match value.parse::<u64>() {
            Ok(n) if n <= max => Ok(Some(n)),
            _ => Err(self.bad(key, value, format!("write a whole number from 0 to {max}"))),
        }
    }

    fn count(&mut self, key: &str) -> Result<u32, FaultError> {
        let n = self.integer(key, u64::from(u32::MAX))?;
        Ok(n.map_or(DEFAULT_AFTER_CHUNKS, |n| n as u32))
    }

    fn finish(self) -> Result<(), FaultError> {
        match self.pairs.into_iter().next() {
            Some((key, _)) => Err(FaultError::UnknownKey {
                kind: self.kind,
                key: key.to_owned(),
            }),
            None => Ok(()),
        }
    }
}

impl FaultSpec {
    /// Reads one fault, `KIND[;key=value]*`.
    pub fn parse(text: &str) -> Result<FaultSpec, FaultError> {
        let mut parts = text.split(';').map(str::trim);
        let kind_text = parts.next().unwrap_or_default();
        if kind_text.is_empty() {
            return Err(FaultError::Empty);
        }
        let kind = KINDS
            .iter()
            .copied()
            .find(|k| k.eq_ignore_ascii_case(kind_text))
            .ok_or_else(|| FaultError::UnknownKind {
                kind: kind_text.to_owned(),
            })?;
        let mut keys = Keys {
            kind,
            pairs: Vec::new(),
        };
        for part in parts.filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| FaultError::MissingValue {
                    kind,
                    key: part.to_owned(),
                })?;
            if keys.pairs.iter().any(|(k, _)| *k == key) {
                return Err(FaultError::RepeatedKey {
                    kind,
                    key: key.to_owned(),
                });
            }
            keys.pairs.push((key, value));
        }

        let upstream = keys.take("upstream").map(str::to_owned);
        let probability = match keys.take("p") {
            None => 1.0,
            Some(value) => match value.parse::<f64>() {
                Ok(p) if (0.0..=1.0).contains(&p) => p,
                _ => return Err(keys.bad("p", value, "write a probability from 0 to 1")),
            },
        };
        let fault = Self::parse_kind(kind, &mut keys)?;
        keys.finish()?;
        Ok(FaultSpec {
            fault,
            upstream,
            probability,
        })
    }

    fn parse_kind(kind: &'static str, keys: &mut Keys<'_>) -> Result<Fault, FaultError> {
        Ok(match kind {
            "hang" => Fault::Hang,
            "reset" => Fault::Reset,
            "delay_headers" => Fault::DelayHeaders {
                by: keys.duration("for")?.unwrap_or(Duration::from_secs(5)),
            },
            "status" => {
                let code = match keys.take("code") {
                    None => 500,
                    Some(value) => match value.parse::<u16>() {
                        Ok(code @ 400..=599) => code,
                        _ => {
                            return Err(keys.bad(
                                "code",
                                value,
                                "write an error status from 400 to 599",
                            ));
                        }
                    },
                };
                let body = match keys.take("body") {
                    None | Some("json") => ErrorBody::Json,
                    Some("html") => ErrorBody::Html,
                    Some("empty") => ErrorBody::Empty,
                    Some(other) => {
                        return Err(keys.bad("body", other, "write `json`, `html` or `empty`"));
                    }
                };
                Fault::Status {
                    code,
                    retry_after: keys.integer("retry_after", 86_400)?,
                    retry_after_ms: keys.integer("retry_after_ms", 86_400_000)?,
                    body,
                }
            }
            "rate_limit" => {
                let retry_after = keys.integer("retry_after", 86_400)?;
                let retry_after_ms = keys.integer("retry_after_ms", 86_400_000)?;
                Fault::RateLimit {
                    retry_after: retry_after.or(if retry_after_ms.is_none() {
                        Some(1)
                    } else {
                        None
                    }),
                    retry_after_ms,
                }
            }
            "cut" => Fault::Cut {
                after_chunks: keys.count("after_chunks")?,
            },
            "interrupt" => Fault::Interrupt {
                after_chunks: keys.count("after_chunks")?,
            },
            "malformed" => Fault::Malformed {
                after_chunks: keys.count("after_chunks")?,
            },
            "stall" => Fault::Stall {
                after_chunks: keys.count("after_chunks")?,
                duration: keys.duration("for")?.unwrap_or(Duration::from_secs(30)),
            },
            "slow" => {
                let tokens_per_s = match keys.take("tokens_per_s") {
                    None => 1.0,
                    Some(value) => match value.parse::<f64>() {
                        Ok(rate) if rate.is_finite() && rate >= 0.001 => rate,
                        _ => {
                            return Err(keys.bad(
                                "tokens_per_s",
                                value,
                                "write a rate of at least 0.001 tokens per second, e.g. 0.5",
                            ));
                        }
                    },
                };
                Fault::Slow { tokens_per_s }
            }
            "first_token" => Fault::FirstToken {
                after: keys.duration("after")?.unwrap_or(Duration::from_secs(20)),
                keepalive: keys.positive_duration("keepalive")?,
            },
            "blackhole" => Fault::Blackhole {
                duration: keys.positive_duration("for")?,
            },
            other => unreachable!("fault kind `{other}` is in KINDS but has no parser"),
        })
    }

    fn applies_to(&self, upstream: &str) -> bool {
        self.upstream.as_deref().is_none_or(|name| name == upstream)
    }
}

impl FaultList {
    /// Reads a comma-separated list of faults and refuses pairs that cannot apply together.
    pub fn parse(text: &str) -> Result<FaultList, FaultError> {
        let specs = text
            .split(',')
            .map(FaultSpec::parse)
            .collect::<Result<Vec<_>, _>>()?;
        for (i, a) in specs.iter().enumerate() {
            for b in &specs[i + 1..] {
                let same_scope =
                    a.upstream.is_none() || b.upstream.is_none() || a.upstream == b.upstream;
                if !same_scope {
                    continue;
                }
                if a.fault.kind() == b.fault.kind() {
                    return Err(FaultError::Conflict {
                        first: a.fault.kind(),
                        second: b.fault.kind(),
                        why: "the same kind is given twice for the same upstream",
                    });
                }
                if a.fault.is_outcome() && b.fault.is_outcome() {
                    return Err(FaultError::Conflict {
                        first: a.fault.kind(),
                        second: b.fault.kind(),
                        why: "both decide the whole response; give one",
                    });
                }
            }
        }
        Ok(FaultList(specs))
    }

    /// The faults that apply on `upstream` for one request, drawing each `p=` from `rng`.
    pub fn select(&self, upstream: &str, rng: &mut fastrand::Rng) -> FaultSet {
        let mut set = FaultSet::default();
        for spec in &self.0 {
            if !spec.applies_to(upstream) {
                continue;
            }
            if spec.probability < 1.0 && rng.f64() >= spec.probability {
                continue;
            }
            set.add(&spec.fault);
        }
        set
    }
}

impl FaultSet {
    /// Adds one fault to the set; a later fault of the same role replaces an earlier one.
    pub fn add(&mut self, fault: &Fault) {
        match *fault {
            Fault::DelayHeaders { by } => self.delay_headers = Some(by),
            Fault::FirstToken { after, keepalive } => self.first_token = Some((after, keepalive)),
            Fault::Slow { tokens_per_s } => self.slow = Some(tokens_per_s),
            Fault::Stall {
                after_chunks,
                duration,
            } => self.stall = Some((after_chunks, duration)),
            Fault::Cut { after_chunks } => self.cut = Some(after_chunks),
            Fault::Interrupt { after_chunks } => self.interrupt = Some(after_chunks),
            Fault::Malformed { after_chunks } => self.malformed = Some(after_chunks),
            Fault::Hang
            | Fault::Status { .. }
            | Fault::RateLimit { .. }
            | Fault::Reset
            | Fault::Blackhole { .. } => self.outcome = Some(fault.clone()),
        }
    }

    /// Whether no fault applies.
    pub fn is_empty(&self) -> bool {
        *self == FaultSet::default()
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())?;
        match self {
            Fault::Hang | Fault::Reset => Ok(()),
            Fault::DelayHeaders { by } => write!(f, ";for={}", duration::format(*by)),
            Fault::Status {
                code,
                retry_after,
                retry_after_ms,
                body,
            } => {
                write!(f, ";code={code}")?;
                write_retry_after(f, *retry_after, *retry_after_ms)?;
                match body {
                    ErrorBody::Json => Ok(()),
                    ErrorBody::Html => f.write_str(";body=html"),
                    ErrorBody::Empty => f.write_str(";body=empty"),
                }
            }
            Fault::RateLimit {
                retry_after,
                retry_after_ms,
            } => write_retry_after(f, *retry_after, *retry_after_ms),
            Fault::Cut { after_chunks }
            | Fault::Interrupt { after_chunks }
            | Fault::Malformed { after_chunks } => {
                write!(f, ";after_chunks={after_chunks}")
            }
            Fault::Stall {
                after_chunks,
                duration,
            } => write!(
                f,
                ";after_chunks={after_chunks};for={}",
                duration::format(*duration)
            ),
            Fault::Slow { tokens_per_s } => write!(f, ";tokens_per_s={tokens_per_s}"),
            Fault::FirstToken { after, keepalive } => {
                write!(f, ";after={}", duration::format(*after))?;
                match keepalive {
                    Some(k) => write!(f, ";keepalive={}", duration::format(*k)),
                    None => Ok(()),
                }
            }
            Fault::Blackhole { duration } => match duration {
                Some(d) => write!(f, ";for={}", duration::format(*d)),
                None => Ok(()),
            },
        }
    }
}

fn write_retry_after(
    f: &mut fmt::Formatter<'_>,
    seconds: Option<u64>,
    millis: Option<u64>,
) -> fmt::Result {
    if let Some(s) = seconds {
        write!(f, ";retry_after={s}")?;
    }
    if let Some(ms) = millis {
        write!(f, ";retry_after_ms={ms}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
