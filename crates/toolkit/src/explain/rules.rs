//! Rules about layers and phases that hold for any message, applied after the catalogue's pattern
//! has named who printed it: which HTTP status it carries and who produced that status (the API,
//! or a CDN, load balancer or gateway on the way), where the error was raised (while a streamed
//! body was being read), whether a client-wide clock fired, and whether a timeout says its phase
//! at all. They generalise where one pattern per example cannot: a text the catalogue has never
//! seen still carries these facts.

use std::sync::LazyLock;
use std::time::Duration;

use regex_lite::Regex;
use serde::Serialize;

use super::KNOWN_DEFAULTS;
use super::catalogue::{Pattern, Phase};
use super::class::Class;

/// What a message says besides its pattern.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// The HTTP status it reports, when it reports one.
    pub status: Option<u16>,
    /// Who on the way produced the answer, when the text shows it (a CDN's page, a load
    /// balancer's header, an HTML body where an API answers JSON).
    pub middlebox: Option<&'static str>,
    /// Whether the API itself typed the error (a JSON error object).
    pub api_typed: bool,
    /// Whether the error was raised while a streamed body was being read.
    pub while_streaming: bool,
    /// The client-wide clock that fired, when the text names one.
    pub client_deadline: Option<&'static str>,
    /// The phase the text names beside its timeout, or the frame it was raised in
    /// (`connect_tcp`, `start_tls`, `_send_request_body` …), as the class a timeout there is.
    pub named_phase: Option<Class>,
    /// How long the call ran, when the text says (`time taken=20.3 seconds`, `after 30000 ms`).
    pub elapsed: Option<Duration>,
    /// Whether the text speaks of a timeout at all (an abort that does was fired by a timer).
    pub says_timeout: bool,
}

/// One reading of an ambiguous message: what it is when `when` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// The class it would be.
    pub class: Class,
    /// Where the call would have been.
    pub phase: &'static str,
    /// What decides for it.
    pub when: String,
}

fn re(pattern: &str) -> Regex {
    Regex::new(&format!("(?i){pattern}"))
        .unwrap_or_else(|e| panic!("rule pattern `{pattern}` does not compile: {e}"))
}

/// Where a status appears: `Error code: 504`, `status code 502`, `HTTP/1.1 524`, `"status":502`,
/// `statusCode: 504`, `<title>502 Bad Gateway`, `502 Bad Gateway`, `error code: 524`.
static STATUS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        r"(?:\\[nrt]|\b)(?:error code|status[ _-]?code|http status|status|statuscode|got status|response code)\b\W{0,3}([1-5]\d\d)\b",
        r"\bHTTP/\d(?:\.\d)?\s+([1-5]\d\d)\b",
        r"<title>\s*([1-5]\d\d)\b",
        r"\b([45]\d\d)\s*[-:]?\s*(?:Bad Gateway|Gateway Time-?out|Service Unavailable|Service Temporarily Unavailable|Internal Server Error|Request Time-?out|Too Many Requests|Origin Is Unreachable|Web Server Is Down|A timeout occurred|Connection timed out|Web server is returning an unknown error)",
        r"\b(?:Bad Gateway|Gateway Time-?out|Gateway Timeout)\s*\(([45]\d\d)\)",
        r"\bError\W{1,3}([45]\d\d)\b",
        r#"['"](?:code|status|statusCode|status_code)['"]\s*:\s*['"]?([1-5]\d\d)\b"#,
        r"^\W*([1-5]\d\d)\s*[-:]?\s+[A-Za-z]",
    ]
    .iter()
    .map(|p| re(p))
    .collect()
});

/// Reason phrases that say the status without the number.
static REASONS: LazyLock<Vec<(Regex, u16)>> = LazyLock::new(|| {
    [
        (
            r"\bGateway ?Time-?out\b|gateway did not receive a response",
            504,
        ),
        (r"\bBad ?Gateway\b", 502),
    ]
    .iter()
    .map(|(p, status)| (re(p), *status))
    .collect()
});

/// Who produced a page or a status, most specific first.
static MIDDLEBOXES: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (
            r"cloudflare|cf-ray|\bray id\b|cdn-cgi|\bcf_[a-z_]+|error code:? 52\d",
            "Cloudflare",
        ),
        (r"cloudfront", "Amazon CloudFront"),
        (
            r"awselb|\belb\b|application load balancer|\balb\b",
            "an AWS load balancer",
        ),
        (
            r"endpoint request timed out|x-amzn-errortype|api gateway|apigateway",
            "AWS API Gateway",
        ),
        (r"\bkong\b", "Kong"),
        (
            r"\benvoy\b|upstream request timeout|upstream connect error|reset before headers|\bistio\b",
            "Envoy",
        ),
        (r"<center>nginx|\bnginx/\d|\bopenresty\b", "nginx"),
        (
            r"\bvercel\b|FUNCTION_INVOCATION|x-vercel",
            "Vercel",
        ),
        (r"\bheroku\b|\bH1[2-5]\b", "the Heroku router"),
        (
            r"front ?door|x-azure-ref|azurefd|application gateway",
            "Azure Front Door / Application Gateway",
        ),
        (r"\bakamai\b|reference #\d+\.", "Akamai"),
        (r"\bfastly\b|\bvarnish\b", "Fastly / Varnish"),
        (r"\btraefik\b", "Traefik"),
        (r"\bhaproxy\b", "HAProxy"),
        (r"\bgoogle frontend\b|that.s an error", "Google's front end"),
        (r"\bingress\b", "a Kubernetes ingress"),
        (
            r"failed to forward (?:the )?request|error forwarding|\bproxy error\b|\breverse proxy\b|\bthe upstream server\b|from (?:the )?(?:upstream|provider|origin|backend)\b",
            "a proxy (it speaks of forwarding, or of its upstream)",
        ),
        (
            r"<!doctype html|<html|<head>|<body",
            "an HTML error page (APIs answer in JSON: a proxy on the way wrote it)",
        ),
    ]
    .iter()
    .map(|(p, who)| (re(p), *who))
    .collect()
});

/// An error object typed by an API (OpenAI's `"error": {"type" …`, Anthropic's `'type': 'error'`).
static API_TYPED: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r#"['"](?:type|code)['"]\s*:\s*['"](?:error|timeout_error|api_error|overloaded_error|server_error|internal_error|invalid_request_error|rate_limit_error)['"]|['"]error['"]\s*:\s*\{"#,
    )
});

/// Frames and words that show an error raised while a streamed body was read.
static STREAMING: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        r"\biter_(?:lines|bytes|raw|text|events)\b|\b_?iter_events\b|\baiter_\w+|__(?:a)?iter__|__(?:a)?next__",
        r"|\bfor (?:chunk|event|line|part|delta)s? in\b|\basync for\b|\bfor await\b",
        r"|while reading (?:the )?(?:response )?body|reading (?:the )?response body|\bbody timeout|UND_ERR_BODY_TIMEOUT",
        r"|during streaming|mid-?stream|MidStreamFallbackError|while streaming|\bin stream\b|stream (?:was )?interrupted",
        r"|ReadableStream|\breadChunk\b|\bprocessStream\b|\bstreamText\b|\btext_stream\b|\bSSEDecoder\b|\bStream\.__",
        r"|\bidle timeout|\btimeout\b[^\n]{0,20}\bidle\b|partial response|\bstall(?:ed)?\b|kind: Body\b|hyper::Error\(Body|\bstream (?:disconnected|closed|ended|interrupted)\b",
    ))
});

/// Client-wide clocks: they bound the whole call, whatever step they interrupt.
static CLIENT_DEADLINES: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"Client\.Timeout", "Go's http.Client.Timeout"),
        (
            r"timeout of \d+(?:\.\d+)? ?m?s exceeded",
            "a client's overall timeout (axios's `timeout`, a retry deadline)",
        ),
        (
            r"AbortSignal\.timeout|aborted due to timeout|signal timed out|DOMException \[TimeoutError\]",
            "an AbortSignal.timeout",
        ),
        (r"asyncio\.wait_for|asyncio\.timeout\(", "an asyncio timeout around the call"),
        (r"\bcontext deadline exceeded\b", "a Go context deadline"),
        (r"HttpClient\.Timeout", ".NET HttpClient.Timeout"),
        (r"\bcallTimeout\b|\bcall timeout\b", "OkHttp's callTimeout"),
        (r"--max-time|\bmax-time\b", "curl --max-time"),
        (r"\bp-timeout\b|promise timed out", "a promise timeout around the whole call"),
        (r"Future not completed", "a Dart Future.timeout around the whole call"),
    ]
    .iter()
    .map(|(p, who)| (re(p), *who))
    .collect()
});

/// The phase a timeout's own words or its frames name, first match wins: the most specific step
/// first (a write, a handshake, a connect), then waiting for headers, then reading.
static NAMED_PHASES: LazyLock<Vec<(Regex, Class)>> = LazyLock::new(|| {
    [
        (
            r"\bwrite operation\b|\bwrit(?:e|ing)\b[^\n]{0,20}tim|\bsend(?:ing)?\b[^\n]{0,20}(?:body|request)[^\n]{0,20}tim|_send_request_body|\bsendall\b",
            Class::WriteTimeout,
        ),
        (
            r"handshake|\bstart_tls\b|\bwrap_socket\b|do_handshake|secure (?:TLS )?connection",
            Class::TlsTimeout,
        ),
        (r"\bpool\b|acquir\w* (?:a )?connection", Class::PoolTimeout),
        (r"\bdns\b|\blookup\b|resolv(?:e|ing)\b", Class::Dns),
        (
            r"\bconnect(?:ion|ing)? time(?:d)? ?out\b|\bconnect(?:ion|ing)?\b[^\n]{0,25}(?:tim|took longer|too long)|trying to connect|\bconnect_tcp\b|create_connection|_new_conn\b|internalConnect|\bdial(?:ing)?\b",
            Class::TcpConnectTimeout,
        ),
        (
            r"header|_read_status|receive_response_headers|getresponse|first (?:byte|event|chunk)|waiting for (?:a |the )?response|awaiting response",
            Class::FirstByteTimeout,
        ),
        (
            r"\bbody\b|reading (?:data|from)|\bread\b|ReadTimeout|read_timeout",
            Class::FirstByteTimeout,
        ),
    ]
    .iter()
    .map(|(p, class)| (re(p), *class))
    .collect()
});

/// A timer's words.
static TIMEOUT_WORDS: LazyLock<Regex> = LazyLock::new(|| re(r"time[ds]? ?out|timeout|deadline"));

/// How long the call ran, in the text's own words.
static ELAPSED: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?:time taken|elapsed|took|after)\s*[=:]?\s*(\d+(?:\.\d+)?)\s*(ms|milliseconds|s|sec|secs|seconds)\b",
    )
});

/// Patterns whose timeout says nothing of its phase unless the text around it does.
const AMBIGUOUS_TIMEOUTS: &[&str] = &[
    "openai.timeout",
    "anthropic.sdk_timeout",
    "claude_code.timeout",
    "litellm.timeout",
    "generic.timeout",
];

/// Patterns whose class holds unless the text names the step the timer cut (reqwest's
/// "operation timed out" is its whole-request timeout, unless it says "trying to connect").
const REFINABLE_TIMEOUTS: &[&str] = &["rust.timeout"];

/// Whether a pattern's timeout says nothing of its phase unless the text around it does.
pub fn is_ambiguous(id: &str) -> bool {
    AMBIGUOUS_TIMEOUTS.contains(&id)
}

/// Reads the facts of a message.
pub fn read(text: &str) -> Facts {
    let status = STATUS
        .iter()
        .find_map(|r| {
            r.captures(text)
                .and_then(|c| c.get(1))
                .and_then(|m| m.as_str().parse().ok())
        })
        .or_else(|| {
            REASONS
                .iter()
                .find(|(r, _)| r.is_match(text))
                .map(|(_, status)| *status)
        });
    let elapsed = ELAPSED.captures(text).and_then(|c| {
        let value: f64 = c.get(1)?.as_str().parse().ok()?;
        let unit = c.get(2)?.as_str().to_ascii_lowercase();
        let seconds = if unit.starts_with('m') {
            value / 1000.0
        } else {
            value
        };
        Duration::try_from_secs_f64(seconds).ok()
    });
    Facts {
        status,
        middlebox: MIDDLEBOXES
            .iter()
            .find(|(r, _)| r.is_match(text))
            .map(|(_, who)| *who),
        api_typed: API_TYPED.is_match(text),
        while_streaming: STREAMING.is_match(text),
        client_deadline: CLIENT_DEADLINES
            .iter()
            .find(|(r, _)| r.is_match(text))
            .map(|(_, who)| *who),
        named_phase: NAMED_PHASES
            .iter()
            .find(|(r, _)| r.is_match(text))
            .map(|(_, class)| *class),
        elapsed,
        says_timeout: TIMEOUT_WORDS.is_match(text),
    }
}

/// What the rules made of a message: its class and phase, and for an ambiguous one the readings
/// ranked and the question that decides between them.
#[derive(Debug, Clone)]
pub struct Ruling {
    /// The class.
    pub class: Class,
    /// Where the call was.
    pub phase: &'static str,
    /// Why the rules changed the pattern's class (empty when they did not).
    pub because: Vec<String>,
    /// For an ambiguous message, its readings, likeliest first.
    pub candidates: Vec<Candidate>,
    /// For an ambiguous message, what to find out to decide.
    pub question: Option<String>,
}

impl Ruling {
    /// Settles the message as `class` in `phase`, saying why.
    fn decide(&mut self, class: Class, phase: Phase, why: impl Into<String>) {
        self.class = class;
        self.phase = phase.name();
        self.because.push(why.into());
    }
}

/// Statuses a gateway produces when it gave up waiting for what is behind it.
fn is_gateway_timeout(status: u16) -> bool {
    matches!(status, 504 | 522 | 524 | 408 | 598 | 599)
}

/// Statuses a gateway produces when what is behind it failed or closed.
fn is_gateway_failure(status: u16) -> bool {
    matches!(status, 502 | 503 | 520 | 530)
}

/// A TCP connect gives up by itself long before this (Linux retries a SYN for about 127 s,
/// Windows for 21 s): a "connection" timeout that ran longer was not connecting.
const LONGEST_CONNECT: Duration = Duration::from_secs(130);

/// Applies the rules to what the catalogue matched (`pattern`, or none), from `start`: the
/// pattern's class and phase (or what the elapsed time alone suggests).
pub fn rule(
    pattern: Option<&Pattern>,
    facts: &Facts,
    elapsed: Option<Duration>,
    start: (Class, &'static str),
) -> Ruling {
    let mut ruling = Ruling {
        class: start.0,
        phase: start.1,
        because: Vec::new(),
        candidates: Vec::new(),
        question: None,
    };
    let id = pattern.map_or("", |p| p.id);
    // hourglass's own codes say exactly what failed.
    if id.starts_with("hourglass.") {
        return ruling;
    }
    let elapsed = elapsed.or(facts.elapsed);
    let ambiguous = is_ambiguous(id);
    if status_rules(&mut ruling, facts, ambiguous) || proxy_timer(&mut ruling, facts) {
        return ruling;
    }

    // An abort that speaks of a timeout was fired by the caller's own timer, not by a person.
    if ruling.class == Class::ClientCancel && facts.says_timeout {
        ruling.decide(
            Class::TotalDeadline,
            Phase::Any,
            "the call was aborted by a timer (the caller's own deadline), not by a person",
        );
        return ruling;
    }

    // A client-wide clock bounds the whole call, whatever step it interrupted.
    if let Some(clock) = facts.client_deadline
        && matches!(
            ruling.class,
            Class::FirstByteTimeout
                | Class::IdleStreamStall
                | Class::Wrapper
                | Class::ClientCancel
                | Class::TcpConnectTimeout
                | Class::ConnRefused
                | Class::Unknown
        )
    {
        ruling.decide(
            Class::TotalDeadline,
            Phase::Any,
            format!("{clock} bounds the whole call: it fired whatever step the call was at"),
        );
        return ruling;
    }

    // A refusal comes at once; one that timed out was a connect that never got an answer.
    if ruling.class == Class::ConnRefused && facts.says_timeout {
        ruling.decide(
            Class::TcpConnectTimeout,
            Phase::Connect,
            "the connect did not fail at once, it timed out: nothing answered the handshake",
        );
        return ruling;
    }

    // A timeout raised while a streamed body was being read is a stall, not a wait for the
    // first byte; a close there happened mid-stream.
    if facts.while_streaming {
        match ruling.class {
            Class::FirstByteTimeout | Class::TotalDeadline | Class::Wrapper
                if ambiguous
                    || REFINABLE_TIMEOUTS.contains(&id)
                    || ruling.class == Class::FirstByteTimeout =>
            {
                ruling.decide(
                    Class::IdleStreamStall,
                    Phase::Stream,
                    "it was raised while a streamed body was being read: the stream went silent",
                );
                return ruling;
            }
            // A stream that was closed because a timer found it silent stalled first.
            Class::PeerClosed if facts.says_timeout => {
                ruling.decide(
                    Class::IdleStreamStall,
                    Phase::Stream,
                    "the stream was closed because it went silent past a timeout",
                );
                return ruling;
            }
            Class::PeerClosed => ruling.phase = Phase::Stream.name(),
            _ => {}
        }
    }

    if !ambiguous && !REFINABLE_TIMEOUTS.contains(&id) {
        return ruling;
    }
    // A timeout whose words or frames name the step it cut.
    let named = facts.named_phase.filter(|named| {
        !(matches!(named, Class::TcpConnectTimeout | Class::TlsTimeout)
            && elapsed.is_some_and(|e| e > LONGEST_CONNECT))
    });
    if let Some(named) = named {
        if named == ruling.class {
            ruling.phase = phase_of(named).name();
        } else {
            let why = format!(
                "the message names the step the timeout cut: {}",
                named.name()
            );
            ruling.decide(named, phase_of(named), why);
        }
        return ruling;
    }
    // A timeout that names no phase: the readings, and the question that decides.
    if ambiguous {
        ambiguous_timeout(&mut ruling, elapsed);
    }
    ruling
}

/// The phase a timeout class happens in.
fn phase_of(class: Class) -> Phase {
    match class {
        Class::Dns => Phase::Dns,
        Class::TcpConnectTimeout => Phase::Connect,
        Class::TlsTimeout => Phase::Tls,
        Class::PoolTimeout => Phase::Pool,
        Class::WriteTimeout => Phase::Write,
        Class::FirstByteTimeout => Phase::FirstByte,
        Class::IdleStreamStall => Phase::Stream,
        _ => Phase::Any,
    }
}

/// A status and who produced it. A CDN's, load balancer's or gateway's status is about the
/// path, not the API — even wrapped by an SDK as `Error code: 5NN`; a 504 is a gateway's by
/// definition unless the API typed the error itself. A status the API answered settles a message
/// that said nothing else. Returns whether it decided.
fn status_rules(ruling: &mut Ruling, facts: &Facts, ambiguous: bool) -> bool {
    let Some(status) = facts.status else {
        return false;
    };
    // Cloudflare's own statuses (520–527, 530) say who produced them.
    let cloudflare = (520..=530).contains(&status);
    let from_path = facts.middlebox.is_some() || cloudflare || (status == 504 && !facts.api_typed);
    let who = facts.middlebox.unwrap_or(if cloudflare {
        "Cloudflare (520–530 are its own statuses)"
    } else {
        "a gateway on the way"
    });
    let class = ruling.class;
    if from_path
        && is_gateway_timeout(status)
        && class != Class::MiddleboxTimeout
        && (class.is_timeout()
            || matches!(
                class,
                Class::Upstream5xx | Class::Wrapper | Class::Unknown | Class::PeerClosed
            ))
    {
        let phase = if status == 522 {
            Phase::Connect
        } else {
            Phase::FirstByte
        };
        ruling.decide(
            Class::MiddleboxTimeout,
            phase,
            format!(
                "status {status} was produced by {who}: it gave up waiting for what is behind it"
            ),
        );
        return true;
    }
    if from_path
        && is_gateway_failure(status)
        && matches!(
            class,
            Class::Upstream5xx | Class::Wrapper | Class::Unknown | Class::FirstByteTimeout
        )
    {
        let why = format!(
            "status {status} was produced by {who}: what is behind it closed the connection or answered nothing it could read"
        );
        ruling.decide(Class::PeerClosed, Phase::FirstByte, why);
        return true;
    }
    if from_path || !(ambiguous || matches!(class, Class::Wrapper | Class::Unknown)) {
        return false;
    }
    let (answered, why) = match status {
        429 => (
            Class::Upstream429,
            "the API answered 429: a rate limit or quota",
        ),
        408 => (
            Class::Upstream5xx,
            "the API answered 408: it gave up on the request itself (retryable, like a 5xx)",
        ),
        400..=499 => (
            Class::ClientError,
            "the API answered a 4xx: it refused the request as it is",
        ),
        500..=599 => (Class::Upstream5xx, "the API answered a server error"),
        _ => return false,
    };
    ruling.decide(answered, Phase::Response, why);
    true
}

/// A timeout a proxy reports about its own wait (it says it forwards, or names itself) is the
/// proxy's timer, not the client's. Returns whether it decided.
fn proxy_timer(ruling: &mut Ruling, facts: &Facts) -> bool {
    let Some(who) = facts.middlebox else {
        return false;
    };
    if facts.status.is_some() || who.starts_with("an HTML") {
        return false;
    }
    // A proxy that says what is behind it failed reports a path failure, not the API's error.
    if matches!(ruling.class, Class::Upstream5xx | Class::Unknown) {
        ruling.decide(
            Class::PeerClosed,
            Phase::FirstByte,
            format!("{who} reports that what is behind it failed to answer"),
        );
        return true;
    }
    if !ruling.class.is_timeout() || ruling.class == Class::MiddleboxTimeout {
        return false;
    }
    ruling.decide(
        Class::MiddleboxTimeout,
        Phase::FirstByte,
        format!("the timeout is {who}'s own: it gave up waiting for what is behind it"),
    );
    true
}

/// A bare "Request timed out.": a connect timeout (the SDK's 5 s — the common case when the
/// network blocks the API) or a read timeout (600 s, or the caller's own); `elapsed` decides.
fn ambiguous_timeout(ruling: &mut Ruling, elapsed: Option<Duration>) {
    ruling.candidates = vec![
        Candidate {
            class: Class::TcpConnectTimeout,
            phase: Phase::Connect.name(),
            when: "it failed about 5 s in (the Python SDKs' connect timeout; 10 s in Node): the connection never opened — a firewall, a blocked region, a proxy that is needed and not set".to_owned(),
        },
        Candidate {
            class: Class::FirstByteTimeout,
            phase: Phase::FirstByte.name(),
            when: "it failed at the read timeout (600 s by default, or the `timeout` you set) before any answer came: the model did not answer in time".to_owned(),
        },
        Candidate {
            class: Class::IdleStreamStall,
            phase: Phase::Stream.name(),
            when: "tokens had already arrived (a stream): the stream went silent for longer than the read timeout".to_owned(),
        },
    ];
    ruling.question = Some(
        "how long after the call began did it fail? (pass --elapsed): about 5–10 s means connect; the read timeout means the answer never came".to_owned(),
    );
    let Some(elapsed) = elapsed else {
        let why = "the message says a timeout fired but not in which phase: it is one of the readings (`could be`), and the elapsed time decides";
        ruling.decide(Class::Wrapper, Phase::Any, why);
        return;
    };
    let secs = elapsed.as_secs_f64();
    // The clients' connect timeouts of the table of layer defaults (5 s, 10 s).
    let near_connect_default = KNOWN_DEFAULTS
        .iter()
        .any(|d| d.class == Class::TcpConnectTimeout && d.matches(elapsed));
    if near_connect_default {
        ruling.decide(
            Class::TcpConnectTimeout,
            Phase::Connect,
            format!(
                "it failed after {secs:.1} s, an SDK's connect timeout: the connection never opened"
            ),
        );
    } else if secs >= 15.0 {
        ruling.candidates.swap(0, 1);
        let why = format!(
            "it failed after {secs:.0} s, far past any connect timeout: the answer did not come in time"
        );
        ruling.decide(Class::FirstByteTimeout, Phase::FirstByte, why);
    } else {
        ruling.candidates.swap(0, 1);
        let why = format!(
            "{secs:.1} s is nobody's default: it is the timeout the caller set, and the message does not say which phase it cut"
        );
        ruling.decide(Class::Wrapper, Phase::Any, why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_and_who_produced_it_are_read() {
        let f = read(
            "Error code: 504 - <html><head><title>504 Gateway Time-out</title></head><body><center>awselb/2.0</center></body></html>",
        );
        assert_eq!(f.status, Some(504));
        assert_eq!(f.middlebox, Some("an AWS load balancer"));
        let f = read(
            "anthropic.APIStatusError: Error code: 504 - {'type': 'error', 'error': {'type': 'timeout_error', 'message': 'Request timed out'}}",
        );
        assert_eq!(f.status, Some(504));
        assert!(f.api_typed);
        assert_eq!(f.middlebox, None);
        assert_eq!(read("connect ETIMEDOUT 1.2.3.4:443").status, None);
    }

    #[test]
    fn streaming_frames_and_client_clocks_are_read() {
        assert!(read("File \"x.py\", line 3, in iter_lines httpx.ReadTimeout").while_streaming);
        assert!(!read("httpx.ReadTimeout: The read operation timed out").while_streaming);
        assert_eq!(
            read("AxiosError: timeout of 60000ms exceeded").client_deadline,
            Some("a client's overall timeout (axios's `timeout`, a retry deadline)")
        );
        assert_eq!(read("Request timed out.").named_phase, None);
        assert_eq!(
            read("Request timed out after 30000 ms").elapsed,
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            read("('Connection aborted.', timeout('The write operation timed out'))").named_phase,
            Some(Class::WriteTimeout)
        );
    }
}
