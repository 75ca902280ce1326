//! The explain catalogue: every pattern's examples, the shared table of real messages, and the
//! elapsed-time and model hints.

use std::time::Duration;

use hourglass_toolkit::explain::{Class, PATTERNS, explain, matching_pattern};

#[test]
fn every_example_is_won_by_its_own_pattern() {
    let mut wrong = Vec::new();
    for pattern in PATTERNS {
        for example in pattern.examples {
            let winner = matching_pattern(example, false).map_or("(none)", |p| p.id);
            if winner != pattern.id {
                wrong.push(format!("{}: {example:?} was won by {winner}", pattern.id));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} examples misrouted:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn the_catalogue_is_large_and_its_ids_unique() {
    assert!(PATTERNS.len() > 120, "only {} patterns", PATTERNS.len());
    let mut ids: Vec<&str> = PATTERNS.iter().map(|p| p.id).collect();
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len(), "duplicate pattern ids");
    for pattern in PATTERNS {
        assert!(
            !pattern.examples.is_empty(),
            "{} has no example",
            pattern.id
        );
        assert!(
            !pattern.fix.is_empty() && !pattern.cause.is_empty(),
            "{}",
            pattern.id
        );
    }
}

/// Every row of the shared table of real messages (`message  producer  failed_phase  class`):
/// the message column, formatting and all, must classify into one of the expected classes.
#[test]
fn every_row_of_the_shared_examples_is_classified() {
    let table = include_str!("data/explain-examples.tsv");
    let mut rows = 0;
    let mut wrong = Vec::new();
    for line in table.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let columns: Vec<&str> = line.split('\t').collect();
        assert_eq!(columns.len(), 4, "malformed row: {line}");
        let (message, expected) = (columns[0], columns[3].trim());
        rows += 1;
        let got = explain(message, None, None);
        assert_ne!(got.class, Class::Unknown, "unrecognised: {message}");
        if expected.is_empty() {
            continue;
        }
        if !expected.split('/').any(|e| e.trim() == got.class.name()) {
            wrong.push(format!(
                "{message}\n  expected {expected}, got {} ({})",
                got.class.name(),
                got.pattern
            ));
        }
    }
    assert_eq!(rows, 49);
    assert!(
        wrong.is_empty(),
        "{} rows misclassified:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Whether `got` is one of the `/`-separated classes of `expected`: its class, or for a wrapper
/// the class of the error it wraps (the output names both).
fn accepted(expected: &str, got: &hourglass_toolkit::explain::Explanation) -> bool {
    expected.split('/').map(str::trim).any(|e| {
        e == got.class.name()
            || (got.class == Class::Wrapper && got.wrapped.is_some_and(|w| w.name() == e))
    })
}

/// Real error texts the catalogue was not written from, collected from public issue threads
/// (`tests/data/explain-real.tsv`: id, message, accepted classes, client, source, note), in sets
/// gathered one after another (A, B, then C and D each held out until the rules were written, and
/// measured before any change they prompted: docs/errors.md gives both figures): at least 95 %
/// must be classified into an accepted class. The misses are printed, and their ids must be the
/// known ones listed here, each with why.
#[test]
fn real_texts_from_public_threads_are_classified() {
    let table = include_str!("data/explain-real.tsv");
    let mut rows = 0;
    let mut misses = Vec::new();
    for line in table.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let columns: Vec<&str> = line.split('\t').collect();
        assert_eq!(columns.len(), 6, "malformed row: {line}");
        let (id, message, expected, source) = (columns[0], columns[1], columns[2], columns[4]);
        assert!(source.starts_with("https://"), "{id} has no source");
        rows += 1;
        let got = explain(message, None, None);
        if !accepted(expected, &got) {
            misses.push((
                id,
                format!(
                    "{id}: expected {expected}, got {} (pattern {}, wrapped {:?})\n    {message}",
                    got.class.name(),
                    got.pattern,
                    got.wrapped.map(Class::name)
                ),
            ));
        }
    }
    assert!(rows >= 40, "only {rows} real texts");
    let report: Vec<&str> = misses.iter().map(|(_, m)| m.as_str()).collect();
    println!(
        "{} of {rows} accepted; misses:\n{}",
        rows - misses.len(),
        report.join("\n")
    );
    let rate = (rows - misses.len()) as f64 / rows as f64;
    assert!(
        rate >= 0.95,
        "{:.1} % accepted:\n{}",
        rate * 100.0,
        report.join("\n")
    );
    let ids: Vec<&str> = misses.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        KNOWN_MISSES,
        "the misses changed:\n{}",
        report.join("\n")
    );
}

/// Texts classified otherwise than their thread decided, each with why (docs/errors.md lists
/// them too). The text alone does not carry what decided them.
const KNOWN_MISSES: &[&str] = &[
    // "Timeout on reading data from socket": aiohttp's sock_read fires both before the headers
    // and between chunks; the thread says it was mid-stream, the text does not.
    "A24",
    // "Request timed out.." from an agents SDK: a TLS handshake timeout per the thread; the text
    // names no phase, so it is a wrapper with readings (connect first).
    "A34",
    // "litellm.Timeout: Connection timed out after None seconds.": LiteLLM says "Connection"
    // for every timeout; read literally it is a connect timeout.
    "A45",
    // "timeout after 120002ms … This operation was aborted": a fetch wrapper's own abort timer,
    // which bounds the whole call (total_deadline); the thread's label is the phase it cut.
    "B22",
    // "AbortError: This operation was aborted": a timer fired it per the thread; the text is
    // the one a person's cancel prints.
    "B23",
    // "Failed to read stream: error decoding response body": reqwest's overall timeout per the
    // thread; the text is also what a stalled stream prints.
    "B57",
    // LangChain4j's "TimeoutException: request timed out" from its JDK client: the JDK's request
    // timeout runs to the response headers, but the text names no phase (a wrapper).
    "C15",
    // "Unknown agent error: ReadTimeout": a read timeout mid-stream per the thread; the text
    // names a read, not a stream (a wrapper around a first-byte timeout).
    "D20",
    // Ollama's "error reading llm response … forcibly closed by the remote host": its runner
    // crashed per the thread; the text is a connection reset.
    "D30",
];

#[test]
fn an_elapsed_time_at_a_layer_default_names_that_layer() {
    let e = explain("upstream error", None, Some(Duration::from_secs_f64(100.4)));
    assert_eq!(e.class, Class::MiddleboxTimeout);
    assert!(e.causes[0].contains("Cloudflare"), "{:?}", e.causes);

    let e = explain("Request timed out.", None, Some(Duration::from_secs(600)));
    assert_eq!(e.class, Class::FirstByteTimeout);
    assert!(
        e.causes[0].contains("OpenAI / Anthropic SDK default timeout"),
        "{:?}",
        e.causes
    );

    let e = explain("socket hang up", None, Some(Duration::from_secs(61)));
    assert!(
        e.causes[0].contains("nginx proxy_read_timeout"),
        "{:?}",
        e.causes
    );

    // 125 s is nobody's default.
    let e = explain("Request timed out.", None, Some(Duration::from_secs(125)));
    assert!(e.elapsed_matches.is_empty());
    // A refusal is not a timer: the elapsed time does not re-rank it.
    let e = explain(
        "Error: connect ECONNREFUSED 127.0.0.1:8080",
        None,
        Some(Duration::from_secs(60)),
    );
    assert!(!e.causes[0].contains("default timeout"));
}

#[test]
fn a_reasoning_model_that_timed_out_early_is_told_to_stream() {
    let e = explain(
        "net/http: timeout awaiting response headers",
        Some("o3"),
        Some(Duration::from_secs(60)),
    );
    assert_eq!(e.class, Class::FirstByteTimeout);
    assert!(
        e.causes[0].contains("`o3` is a reasoning model"),
        "{:?}",
        e.causes
    );
    assert!(e.fixes[0].contains("stream"), "{:?}", e.fixes);
    let e = explain(
        "net/http: timeout awaiting response headers",
        Some("gpt-4o-mini"),
        None,
    );
    assert!(!e.causes[0].contains("reasoning"));
}

#[test]
fn a_wrapper_names_the_error_it_wraps() {
    let e = explain(
        r#"{"error":{"message":"do request failed: Post \"https://x/v1/chat/completions\": dial tcp 10.0.0.1:443: connect: connection refused","code":"do_request_failed"}}"#,
        None,
        None,
    );
    assert_eq!(e.class, Class::Wrapper);
    assert_eq!(e.wrapped, Some(Class::ConnRefused));
    assert!(
        e.causes
            .iter()
            .any(|c| c.starts_with("the wrapped error is conn_refused"))
    );
}

#[test]
fn the_json_form_has_the_promised_fields() {
    let e = explain("httpx.WriteTimeout", None, None);
    let json = serde_json::to_value(&e).expect("serialisable");
    assert_eq!(json["class"], "write_timeout");
    assert_eq!(json["phase"], "write");
    assert!(json["causes"].as_array().is_some_and(|c| !c.is_empty()));
    assert!(json["fixes"].as_array().is_some_and(|c| !c.is_empty()));
}

#[test]
fn nothing_known_is_unknown() {
    let e = explain("everything is fine", None, None);
    assert_eq!(e.class, Class::Unknown);
}

#[test]
fn a_timeout_that_names_no_phase_is_a_wrapper_with_readings_and_a_question() {
    let e = explain("openai.APITimeoutError: Request timed out.", None, None);
    assert_eq!(e.class, Class::Wrapper);
    let readings: Vec<&str> = e.candidates.iter().map(|c| c.class.name()).collect();
    assert_eq!(
        readings,
        [
            "tcp_connect_timeout",
            "first_byte_timeout",
            "idle_stream_stall"
        ]
    );
    assert!(
        e.question
            .as_deref()
            .is_some_and(|q| q.contains("--elapsed"))
    );
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["candidates"][0]["class"], "tcp_connect_timeout");
    // The elapsed time decides: the SDK's 5 s connect timeout, or a long wait for the answer.
    let e = explain("Request timed out.", None, Some(Duration::from_secs(5)));
    assert_eq!(e.class, Class::TcpConnectTimeout);
    assert_eq!(e.phase, "connect");
    let e = explain("Request timed out.", None, Some(Duration::from_secs(120)));
    assert_eq!(e.class, Class::FirstByteTimeout);
    // A frame or the words around it name the phase.
    let e = explain(
        "File \"httpcore/_backends/sync.py\", in connect_tcp ... openai.APITimeoutError: Request timed out.",
        None,
        None,
    );
    assert_eq!(e.class, Class::TcpConnectTimeout);
}

#[test]
fn a_status_a_proxy_produced_is_about_the_path_even_inside_an_sdk_error() {
    let alb = explain(
        "openai.InternalServerError: Error code: 504 - <html><head><title>504 Gateway Time-out</title></head><body><center><h1>504 Gateway Time-out</h1></center></body></html>",
        None,
        None,
    );
    assert_eq!(alb.class, Class::MiddleboxTimeout);
    assert!(alb.because[0].contains("status 504"), "{:?}", alb.because);
    let cf = explain(
        r#"openai.InternalServerError: Error code: 502 - {'error': {'code': 502, 'message': 'Bad gateway.', 'type': 'cf_bad_gateway'}}"#,
        None,
        None,
    );
    assert_eq!(cf.class, Class::PeerClosed);
    assert_eq!(cf.side, "path");
    // The API's own typed timeout is not a proxy's.
    let api = explain(
        "anthropic.APIStatusError: Error code: 504 - {'type': 'error', 'error': {'type': 'timeout_error', 'message': 'Request timed out'}}",
        None,
        None,
    );
    assert_eq!(api.class, Class::FirstByteTimeout);
    // A bare 5xx the API answered stays the API's.
    let e = explain(
        "openai.InternalServerError: Error code: 500 - {'error': {'message': 'The server had an error', 'type': 'server_error'}}",
        None,
        None,
    );
    assert_eq!(e.class, Class::Upstream5xx);
}

#[test]
fn where_a_timeout_was_raised_and_which_clock_fired_decide_its_class() {
    let stall = explain(
        "File \"openai/_streaming.py\", line 72, in __iter__ ... in iter_bytes ... httpx.ReadTimeout: The read operation timed out",
        None,
        None,
    );
    assert_eq!(stall.class, Class::IdleStreamStall);
    assert_eq!(stall.phase, "stream");
    let read = explain(
        "httpx.ReadTimeout: The read operation timed out",
        None,
        None,
    );
    assert_eq!(read.class, Class::FirstByteTimeout);
    for whole in [
        "AxiosError: timeout of 60000ms exceeded",
        "DOMException [TimeoutError]: The operation was aborted due to timeout",
        r#"Post "https://api.openai.com/v1/chat/completions": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"#,
    ] {
        assert_eq!(
            explain(whole, None, None).class,
            Class::TotalDeadline,
            "{whole}"
        );
    }
}

/// A log without times is placed by line: first and last seen are the lines of the first and the
/// last record of the class.
#[test]
fn a_log_without_times_is_summed_up_by_line() {
    let log = "Error: connect ECONNREFUSED 127.0.0.1:8080\nall good\nError: connect ECONNREFUSED 127.0.0.1:8081\n";
    let found: Vec<_> = hourglass_toolkit::explain::log::records(log)
        .into_iter()
        .map(|r| {
            let e = explain(&r.text, None, None);
            (r, e)
        })
        .collect();
    let summary = hourglass_toolkit::explain::summarise(&found);
    assert_eq!(
        summary.len(),
        1,
        "unknown lines are not a class: {summary:?}"
    );
    assert_eq!(summary[0].class, Class::ConnRefused);
    assert_eq!(summary[0].count, 2);
    assert_eq!(summary[0].first_seen, "line 1");
    assert_eq!(summary[0].last_seen, "line 3");
}
