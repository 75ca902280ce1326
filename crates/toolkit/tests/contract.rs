//! The vocabulary contract: every error code the gateway or the engine can answer with has a row
//! in docs/errors.md, a diagnosis, and an entry in `explain`'s catalogue of hourglass's own codes
//! (found from the very error body the gateway sends); every phase and outcome is documented; and
//! every name the toolkit's `--json` prints is one the docs list. The docs list nothing stale.

use std::collections::BTreeSet;
use std::path::PathBuf;

use hourglass_engine::protocol::Protocol;
use hourglass_engine::protocol::anthropic::{self, Anthropic};
use hourglass_engine::protocol::openai::OpenAi;
use hourglass_engine::{CallError, ErrorCode, Outcome, Phase};
use hourglass_toolkit::diagnose::{Side, Step};
use hourglass_toolkit::explain::{self, Class};

fn doc(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The first column of every table row in `text` that starts with a backticked word.
fn first_column(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_owned)
        .collect()
}

/// The part of errors.md about hourglass's own codes (before `explain`'s classes).
fn code_section() -> String {
    let errors = doc("errors.md");
    let end = errors
        .find("## Other layers")
        .expect("errors.md has the explain section");
    errors[..end].to_owned()
}

#[test]
fn every_code_has_a_row_in_the_docs_and_every_row_is_a_code() {
    let documented = first_column(&code_section());
    let codes: BTreeSet<String> = ErrorCode::ALL.iter().map(|c| c.name().to_owned()).collect();
    let missing: Vec<_> = codes.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&codes).collect();
    assert!(
        missing.is_empty(),
        "codes without a row in docs/errors.md: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "rows in docs/errors.md that no code has: {stale:?}"
    );
}

#[test]
fn every_code_has_a_diagnosis_of_its_own() {
    let mut seen = BTreeSet::new();
    for code in ErrorCode::ALL {
        let diagnosis = code.diagnosis();
        assert!(diagnosis.len() > 20, "{code}: {diagnosis:?}");
        assert!(seen.insert(diagnosis), "{code} shares its diagnosis");
    }
}

#[test]
fn explain_knows_every_code_from_the_body_the_gateway_sends() {
    let mut wrong = Vec::new();
    let protocols: [&dyn Protocol; 2] = [&OpenAi, &Anthropic];
    for (code, protocol) in ErrorCode::ALL
        .iter()
        .flat_map(|code| protocols.map(|p| (code, p)))
    {
        let error = CallError::before_attempts(
            *code,
            http::StatusCode::BAD_GATEWAY,
            format!("what happened for {code}"),
        );
        let body = String::from_utf8(protocol.error_body(&error).to_vec()).unwrap();
        let explained = explain::explain(&body, None, None);
        if !explained.pattern.starts_with("hourglass.") || explained.class == Class::Unknown {
            wrong.push(format!(
                "{code} in {}'s shape: pattern `{}`, class {}",
                protocol.name(),
                explained.pattern,
                explained.class.name()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "codes explain does not know as hourglass's own:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_phase_and_outcome_is_documented() {
    let errors = code_section();
    for phase in Phase::ALL {
        assert!(errors.contains(&format!("`{phase}`")), "phase {phase}");
    }
    for outcome in Outcome::OTHERS {
        assert!(
            errors.contains(&format!("`{outcome}`")),
            "outcome {outcome}"
        );
    }
}

#[test]
fn explain_json_prints_only_documented_names() {
    let errors = doc("errors.md");
    let classes = first_column(&errors[errors.find("## Other layers").unwrap()..]);
    for class in Class::ALL {
        let json = serde_json::to_value(class).unwrap();
        assert_eq!(json, class.name(), "--json prints the documented name");
        assert!(
            classes.contains(class.name()),
            "class {} has no row",
            class.name()
        );
        assert!(
            errors.contains(&format!("`{}`", class.side())),
            "side {} of {}",
            class.side(),
            class.name()
        );
    }
    for phase in explain::Phase::ALL {
        assert!(
            errors.contains(&format!("`{}`", phase.name())),
            "phase {}",
            phase.name()
        );
    }
    // The named bug: serde's own snake case printed `upstream429`.
    let e = explain::explain(
        "openai.RateLimitError: Error code: 429 - rate limited",
        None,
        None,
    );
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["class"], "upstream_429");
    // The catalogue's size as the docs give it.
    let count = format!("{} patterns", explain::PATTERNS.len());
    assert!(errors.contains(&count), "docs/errors.md should say {count}");
    // Every field `--json` prints is documented, the rules' ones too.
    let ambiguous = explain::explain("openai.APITimeoutError: Request timed out.", None, None);
    let json = serde_json::to_value(&ambiguous).unwrap();
    let fields = json.as_object().unwrap();
    for field in ["because", "candidates", "question"] {
        assert!(fields.contains_key(field), "{field} missing from {json}");
    }
    for field in fields.keys() {
        assert!(
            errors.contains(&format!("`{field}`")),
            "--json field `{field}` is not documented in docs/errors.md"
        );
    }
    for field in json["candidates"][0].as_object().unwrap().keys() {
        assert!(
            errors.contains(&format!("`{field}`")),
            "candidate field `{field}`"
        );
    }
}

#[test]
fn probe_and_diagnose_json_print_only_documented_names() {
    let toolkit = doc("toolkit.md");
    for step in Step::ALL {
        assert!(
            toolkit.contains(&format!("`{}`", step.name())),
            "step {}",
            step.name()
        );
        assert_eq!(serde_json::to_value(step).unwrap(), step.name());
    }
    for side in Side::ALL {
        assert!(toolkit.contains(side.name()), "side {}", side.name());
        assert_eq!(serde_json::to_value(side).unwrap(), side.name());
    }
    // probe's `errors` keys: a code, `http_NNN` or `unknown`; its samples' codes and phases.
    assert!(toolkit.contains("`http_503`") && toolkit.contains("`unknown`"));
    assert_eq!(
        hourglass_toolkit::probe::error_key(Some(ErrorCode::UpstreamStatus), Some(503)),
        "http_503"
    );
    assert_eq!(
        hourglass_toolkit::probe::error_key(Some(ErrorCode::IdleTimeout), None),
        "idle_timeout"
    );
    let sample = hourglass_toolkit::probe::Sample {
        code: Some(ErrorCode::FirstTokenTimeout),
        phase: Some(Phase::FirstToken),
        ..Default::default()
    };
    let json = serde_json::to_value(&sample).unwrap();
    assert_eq!(
        (json["code"].as_str(), json["phase"].as_str()),
        (Some("first_token_timeout"), Some("first_token"))
    );
    let back: hourglass_toolkit::probe::Sample = serde_json::from_value(json).unwrap();
    assert_eq!(back.code, Some(ErrorCode::FirstTokenTimeout));
}

#[test]
fn every_anthropic_error_type_the_gateway_sends_is_documented_and_explained() {
    let docs = doc("anthropic.md");
    for kind in anthropic::ERROR_TYPES {
        assert!(
            docs.contains(&format!("`{kind}`")),
            "{kind} in docs/anthropic.md"
        );
    }
    for kind in [
        "overloaded_error",
        "rate_limit_error",
        "api_error",
        "timeout_error",
    ] {
        let body = format!(
            "Error code: 500 - {{'type': 'error', 'error': {{'type': '{kind}', 'message': 'x'}}}}"
        );
        let explained = explain::explain(&body, None, None);
        assert_ne!(
            explained.class,
            Class::Unknown,
            "{kind}: {}",
            explained.pattern
        );
        assert!(
            explained.pattern.starts_with("anthropic.") || explained.pattern.starts_with("openai."),
            "{kind}: {}",
            explained.pattern
        );
    }
}

#[test]
fn every_endpoint_name_the_call_log_prints_is_documented() {
    let metrics = doc("metrics.md");
    for endpoint in hourglass_engine::Endpoint::ALL {
        assert!(
            metrics.contains(&format!("`{}`", endpoint.name())),
            "{} in docs/metrics.md",
            endpoint.name()
        );
    }
}
