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
