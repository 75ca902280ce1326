use super::*;

fn load(text: &str) -> Result<Scenario, String> {
    Scenario::from_toml(text, "test.toml").map_err(|e| e.to_string())
}

fn error(text: &str) -> String {
    load(text).expect_err("the scenario should be refused")
}

const TWO_UPSTREAMS: &str = r#"
seed = 42
time_scale = 0.5

[[upstream]]
name = "east"
listen = "127.0.0.1:9101"
models = ["gpt-4o-mini", "o1-mini"]

[[upstream.model]]
name = "slow-chat"
like = "gpt-4o"
first_token = { median = "2s", p99 = "8s" }
tokens_per_s = 40
output_tokens = 20

[[upstream.fault]]
fault = "status;code=503;retry_after=1"
probability = 0.05

[[upstream.fault]]
fault = "first_token;after=3s, cut;after_chunks=2"
probability = 0.1

[[upstream]]
name = "west"
blackhole = true
"#;

#[test]
fn a_full_scenario_loads() {
    let scenario = load(TWO_UPSTREAMS).unwrap();
    assert_eq!((scenario.seed, scenario.time_scale), (42, 0.5));
    let [east, west] = &scenario.upstreams[..] else {
        panic!("two upstreams")
    };
    assert_eq!(east.listen, "127.0.0.1:9101".parse().unwrap());
    let names: Vec<_> = east.config.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["gpt-4o-mini", "o1-mini", "slow-chat"]);
    let custom = &east.config.models[2];
    assert_eq!(custom.kind, ModelKind::Chat);
    assert_eq!(
        custom.latency.first_token,
        Spread {
            median: 2.0,
            p99: 8.0
        }
    );
    assert_eq!(custom.latency.tokens_per_s, 40.0);
    assert_eq!(custom.latency.output_tokens, Spread::fixed(20.0));
    assert_eq!(east.config.fault_mix.len(), 2);
    assert_eq!(east.config.fault_mix[1].faults.0.len(), 2);
    assert_eq!(east.config.time_scale, 0.5);
    assert!(west.config.blackhole);
    assert_eq!(west.listen.port(), 0);
    assert_eq!(west.config.models.len(), ModelProfile::builtin().len());
    assert_ne!(
        east.config.seed, west.config.seed,
        "each upstream draws its own numbers"
    );
}

#[test]
fn seed_and_time_scale_can_be_overridden() {
    let scenario = load(TWO_UPSTREAMS)
        .unwrap()
        .with_seed(7)
        .with_time_scale(0.01);
    assert_eq!(scenario.seed, 7);
    assert!(
        scenario
            .upstreams
            .iter()
            .all(|u| u.config.time_scale == 0.01)
    );
    let again = load(TWO_UPSTREAMS).unwrap().with_seed(7);
    assert_eq!(
        scenario.upstreams[0].config.seed,
        again.upstreams[0].config.seed
    );
}

#[test]
fn unknown_keys_are_named_with_their_path_and_line() {
    let message = error("[[upstream]]\nname = \"a\"\nlisten_on = \"x\"\n");
    assert!(message.starts_with("test.toml:3:"), "{message}");
    assert!(
        message.contains("upstream[0]") && message.contains("listen_on"),
        "{message}"
    );

    let nested = error(
        "[[upstream]]\nname = \"a\"\n[[upstream.model]]\nname = \"m\"\nfirst_tokn = \"1s\"\n",
    );
    assert!(
        nested.contains("upstream[0].model[0]") && nested.contains("first_tokn"),
        "{nested}"
    );
}

#[test]
fn wrong_types_and_bad_durations_name_the_key() {
    let typed = error("time_scale = \"fast\"\n[[upstream]]\nname = \"a\"\n");
    assert!(typed.contains("time_scale"), "{typed}");
    let duration = error(
        "[[upstream]]\nname = \"a\"\n[[upstream.model]]\nname = \"m\"\nfirst_token = { median = \"2\" }\n",
    );
    assert!(
        duration.contains("upstream[0].model[0].first_token"),
        "{duration}"
    );
    let syntax = error("[[upstream]\nname = \"a\"\n");
    assert!(syntax.starts_with("test.toml:1:"), "{syntax}");
}

#[test]
fn semantic_errors_name_the_key_and_the_fix() {
    for (text, key, fix) in [
        (
            "time_scale = 0\n[[upstream]]\nname = \"a\"",
            "time_scale",
            "above 0",
        ),
        ("seed = 1", "upstream", "[[upstream]]"),
        (
            "[[upstream]]\nname = \"a b\"",
            "upstream[0].name",
            "one word",
        ),
        (
            "[[upstream]]\nname = \"a\"\n[[upstream]]\nname = \"a\"",
            "upstream[1].name",
            "already",
        ),
        (
            "[[upstream]]\nname = \"a\"\nlisten = \"localhost\"",
            "upstream[0].listen",
            "IP:PORT",
        ),
        (
            "[[upstream]]\nname = \"a\"\nlisten = \"127.0.0.1:9000\"\n[[upstream]]\nname = \"b\"\nlisten = \"127.0.0.1:9000\"",
            "upstream[1].listen",
            "already taken",
        ),
        (
            "[[upstream]]\nname = \"a\"\nmodels = [\"gpt-5-ultra\"]",
            "upstream[0].models[0]",
            "gpt-4o-mini",
        ),
        (
            "[[upstream]]\nname = \"a\"\n[[upstream.model]]\nname = \"m\"\nlike = \"nope\"",
            "upstream[0].model[0].like",
            "built-in",
        ),
        (
            "[[upstream]]\nname = \"a\"\n[[upstream.model]]\nname = \"m\"\nfirst_token = { median = \"2s\", p99 = \"1s\" }",
            "upstream[0].model[0].first_token.p99",
            "at least the median",
        ),
        (
            "[[upstream]]\nname = \"a\"\n[[upstream.model]]\nname = \"m\"\ntokens_per_s = 0",
            "upstream[0].model[0].tokens_per_s",
            "above 0",
        ),
        (
            "[[upstream]]\nname = \"a\"\n[[upstream.model]]\nname = \"m\"\noutput_tokens = 0",
            "upstream[0].model[0].output_tokens.median",
            "at least 1",
        ),
        (
            "[[upstream]]\nname = \"a\"\n[[upstream.fault]]\nfault = \"hnag\"\nprobability = 0.1",
            "upstream[0].fault[0].fault",
            "unknown fault kind `hnag`",
        ),
        (
            "[[upstream]]\nname = \"a\"\n[[upstream.fault]]\nfault = \"hang\"\nprobability = 1.5",
            "upstream[0].fault[0].probability",
            "0 to 1",
        ),
        (
            "[[upstream]]\nname = \"a\"\n[[upstream.fault]]\nfault = \"hang\"\nprobability = 0.7\n[[upstream.fault]]\nfault = \"reset\"\nprobability = 0.7",
            "upstream[0].fault",
            "at most 1",
        ),
        (
            "[[upstream]]\nname = \"a\"\n[[upstream.fault]]\nfault = \"hang;upstream=b\"\nprobability = 0.1",
            "upstream[0].fault[0].fault",
            "never apply",
        ),
    ] {
        let message = error(text);
        assert!(
            message.starts_with(&format!("test.toml: {key}: ")),
            "{text}\n→ {message}"
        );
        assert!(message.contains(fix), "{text}\n→ {message}");
    }
}

#[test]
fn a_missing_file_is_named() {
    let message = Scenario::load(Path::new("/nonexistent/scenario.toml"))
        .unwrap_err()
        .to_string();
    assert!(message.contains("/nonexistent/scenario.toml"), "{message}");
}
