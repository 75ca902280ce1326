use super::*;

fn one(text: &str) -> Fault {
    FaultSpec::parse(text).unwrap().fault
}

#[test]
fn every_kind_reads_with_its_defaults() {
    assert_eq!(one("hang"), Fault::Hang);
    assert_eq!(one("reset"), Fault::Reset);
    assert_eq!(
        one("delay_headers"),
        Fault::DelayHeaders {
            by: Duration::from_secs(5)
        }
    );
    assert_eq!(
        one("status"),
        Fault::Status {
            code: 500,
            retry_after: None,
            retry_after_ms: None,
            body: ErrorBody::Json
        }
    );
    assert_eq!(
        one("rate_limit"),
        Fault::RateLimit {
            retry_after: Some(1),
            retry_after_ms: None
        }
    );
    assert_eq!(one("cut"), Fault::Cut { after_chunks: 3 });
    assert_eq!(one("interrupt"), Fault::Interrupt { after_chunks: 3 });
    assert_eq!(
        one("stall"),
        Fault::Stall {
            after_chunks: 3,
            duration: Duration::from_secs(30)
        }
    );
    assert_eq!(one("slow"), Fault::Slow { tokens_per_s: 1.0 });
    assert_eq!(
        one("first_token"),
        Fault::FirstToken {
            after: Duration::from_secs(20),
            keepalive: None
        }
    );
    assert_eq!(one("malformed"), Fault::Malformed { after_chunks: 3 });
    assert_eq!(one("blackhole"), Fault::Blackhole { duration: None });
    assert_eq!(KINDS.len(), 12);
    for kind in KINDS {
        assert_eq!(one(kind).kind(), kind);
    }
}

#[test]
fn the_issue_examples_read_as_written() {
    assert_eq!(
        one("status;code=503;retry_after=2"),
        Fault::Status {
            code: 503,
            retry_after: Some(2),
            retry_after_ms: None,
            body: ErrorBody::Json
        }
    );
    assert_eq!(
        one("rate_limit;retry_after_ms=1500"),
        Fault::RateLimit {
            retry_after: None,
            retry_after_ms: Some(1500)
        }
    );
    assert_eq!(
        one("stall;after_chunks=3;for=30s"),
        Fault::Stall {
            after_chunks: 3,
            duration: Duration::from_secs(30)
        }
    );
    assert_eq!(one("cut;after_chunks=5"), Fault::Cut { after_chunks: 5 });
    assert_eq!(
        one("slow;tokens_per_s=0.5"),
        Fault::Slow { tokens_per_s: 0.5 }
    );
    assert_eq!(
        one("first_token;after=20s;keepalive=5s"),
        Fault::FirstToken {
            after: Duration::from_secs(20),
            keepalive: Some(Duration::from_secs(5))
        }
    );
    assert_eq!(
        one(" status ; code = 524 ; body = html "),
        Fault::Status {
            code: 524,
            retry_after: None,
            retry_after_ms: None,
            body: ErrorBody::Html
        }
    );
}

#[test]
fn display_writes_the_grammar_back() {
    for text in [
        "hang",
        "delay_headers;for=1.5s",
        "status;code=503;retry_after=2;retry_after_ms=2000;body=empty",
        "rate_limit;retry_after=1",
        "cut;after_chunks=0",
        "stall;after_chunks=3;for=30s",
        "slow;tokens_per_s=0.5",
        "first_token;after=20s;keepalive=5s",
        "malformed;after_chunks=2",
        "blackhole;for=10s",
    ] {
        assert_eq!(one(text).to_string(), text);
        assert_eq!(one(&one(text).to_string()), one(text));
    }
}

#[test]
fn errors_name_the_unknown_kind_or_key_and_what_is_known() {
    let kind = FaultSpec::parse("hnag").unwrap_err().to_string();
    assert!(
        kind.contains("`hnag`") && kind.contains("hang, delay_headers"),
        "{kind}"
    );
    let key = FaultSpec::parse("stall;after=3").unwrap_err().to_string();
    assert!(
        key.contains("`after`") && key.contains("after_chunks, for"),
        "{key}"
    );
    let missing = FaultSpec::parse("cut;after_chunks").unwrap_err();
    assert!(
        matches!(missing, FaultError::MissingValue { .. }),
        "{missing}"
    );
    let repeated = FaultSpec::parse("cut;after_chunks=1;after_chunks=2").unwrap_err();
    assert!(
        matches!(repeated, FaultError::RepeatedKey { .. }),
        "{repeated}"
    );
    assert_eq!(FaultSpec::parse(" ").unwrap_err(), FaultError::Empty);
}

#[test]
fn errors_name_the_bad_value_and_the_fix() {
    for (text, needle) in [
        ("status;code=200", "400 to 599"),
        ("status;code=abc", "`abc`"),
        ("status;body=xml", "`json`, `html` or `empty`"),
        ("stall;for=30", "unit"),
        ("slow;tokens_per_s=0", "at least 0.001"),
        ("slow;tokens_per_s=NaN", "at least 0.001"),
        ("cut;after_chunks=-1", "whole number"),
        ("first_token;keepalive=0s", "at least 1ms"),
        ("stall;for=9000h", "at most 7 days"),
        ("hang;p=1.5", "probability"),
        ("rate_limit;retry_after=99999999", "0 to 86400"),
    ] {
        let message = FaultSpec::parse(text).unwrap_err().to_string();
        assert!(message.contains(needle), "{text}: {message}");
    }
}

#[test]
fn lists_combine_shaping_faults_and_refuse_conflicts() {
    let list =
        FaultList::parse("first_token;after=2s;keepalive=500ms, stall;after_chunks=1;for=3s")
            .unwrap();
    let set = list.select("sim", &mut fastrand::Rng::with_seed(1));
    assert_eq!(
        set.first_token,
        Some((Duration::from_secs(2), Some(Duration::from_millis(500))))
    );
    assert_eq!(set.stall, Some((1, Duration::from_secs(3))));
    assert!(set.outcome.is_none());

    let two_outcomes = FaultList::parse("hang, status;code=503")
        .unwrap_err()
        .to_string();
    assert!(
        two_outcomes.contains("`hang` and `status`"),
        "{two_outcomes}"
    );
    assert!(FaultList::parse("cut, cut;after_chunks=2").is_err());
    // Aimed at different upstreams, two outcomes do not meet.
    assert!(FaultList::parse("hang;upstream=a, status;code=503;upstream=b").is_ok());
}

#[test]
fn upstream_scope_and_probability_select_faults() {
    let list = FaultList::parse("hang;upstream=east, slow;tokens_per_s=2").unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    assert_eq!(list.select("east", &mut rng).outcome, Some(Fault::Hang));
    let west = list.select("west", &mut rng);
    assert_eq!(west.outcome, None);
    assert_eq!(west.slow, Some(2.0));

    let half = FaultList::parse("reset;p=0.5").unwrap();
    let mut rng = fastrand::Rng::with_seed(42);
    let hits = (0..10_000)
        .filter(|_| !half.select("sim", &mut rng).is_empty())
        .count();
    assert!(
        (4_700..=5_300).contains(&hits),
        "p=0.5 injected {hits} of 10000"
    );
    let never = FaultList::parse("reset;p=0").unwrap();
    assert!((0..1000).all(|_| never.select("sim", &mut rng).is_empty()));
}
