use std::time::Duration;

use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "OPENAI_API_KEY" => Some("sk-test-secret".to_owned()),
        _ => None,
    }
}

fn load(text: &str) -> Result<Config, String> {
    Config::from_toml(text, "test.toml", &env).map_err(|e| e.to_string())
}

const FULL: &str = r#"
[server]
listen = "127.0.0.1:9000"
max_request_body = "8MiB"
client_deadline_margin = "250ms"
threads = 3

[retry_budget]
ratio = 0.1

[upstreams.openai]
base_url = "https://api.openai.com/v1/"
api_key_env = "OPENAI_API_KEY"
headers = { "openai-organization" = "org-1" }
models = ["gpt-4o", "gpt-4o-mini", "o1-mini"]

[upstreams.backup]
base_url = "http://127.0.0.1:9102/v1"

[models.gpt-4o]
targets = ["openai", "backup:gpt-4o-2024-08-06"]
fallbacks = ["gpt-4o-mini"]
timeouts = { first_token = "8s" }
retry = { max_attempts = 4 }

[defaults.timeouts]
connect = "2s"

[families.reasoning.timeouts]
first_token = "200s"

[scenarios.content.retry]
backoff_max = "2s"
"#;

#[test]
fn a_full_configuration_loads() {
    let config = load(FULL).unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(config.server.max_request_body, 8 * 1024 * 1024);
    assert_eq!(
        config.server.client_deadline_margin,
        Duration::from_millis(250)
    );
    assert_eq!(config.server.threads, Some(3));
    assert_eq!(
        Config::single_upstream("a", "http://a/v1").server.threads,
        None,
        "one per CPU unless written"
    );
    assert_eq!(config.retry_budget.ratio, 0.1);
    let [openai, backup] = &config.upstreams[..] else {
        panic!("two upstreams in file order")
    };
    assert_eq!(openai.name, "openai");
    assert_eq!(openai.base_url.to_string(), "https://api.openai.com/v1");
    assert_eq!(openai.api_key.as_ref().unwrap().expose(), "sk-test-secret");
    assert_eq!(openai.headers[0].0, "openai-organization");
    assert_eq!(backup.models, Served::Any);

    let gpt4o = config.route("gpt-4o").unwrap();
    assert_eq!(
        gpt4o.targets,
        [
            Target {
                upstream: 0,
                model: "gpt-4o".into(),
                tier: 0,
                weight: 1
            },
            Target {
                upstream: 1,
                model: "gpt-4o-2024-08-06".into(),
                tier: 1,
                weight: 1
            }
        ]
    );
    assert_eq!(gpt4o.fallbacks, ["gpt-4o-mini"]);
    assert_eq!(gpt4o.policy.timeouts.first_token, Duration::from_secs(8));
    assert_eq!(gpt4o.policy.timeouts.connect, Duration::from_secs(2));
    assert_eq!(gpt4o.policy.retry.max_attempts, 4);
    assert_eq!(gpt4o.policy.retry.backoff_max, Duration::from_secs(2));

    // Listed by an upstream: routable with the family's policy and the file's layers.
    let o1 = config.route("o1-mini").unwrap();
    assert_eq!(
        (o1.family, o1.scenario),
        (Family::Reasoning, Scenario::Reasoning)
    );
    assert_eq!(o1.policy.timeouts.first_token, Duration::from_secs(200));
    assert_eq!(
        o1.targets.len(),
        2,
        "openai lists it, backup serves everything"
    );
    // Unlisted: only the wildcard upstream.
    let other = config.route("llama-3-70b").unwrap();
    assert_eq!(
        other.targets,
        [Target {
            upstream: 1,
            model: "llama-3-70b".into(),
            tier: 0,
            weight: 1
        }]
    );

    // A wildcard model's policy is resolved once per family and scenario, not per call: two
    // models of one family share it (sources and all), and another family has its own.
    let again = config.route("mistral-large").unwrap();
    assert!(std::sync::Arc::ptr_eq(&other.sources, &again.sources));
    assert_eq!(other.policy, again.policy);
    let reasoning = config.route("deepseek-r1").unwrap();
    assert_eq!(reasoning.family, Family::Reasoning);
    assert!(!std::sync::Arc::ptr_eq(&other.sources, &reasoning.sources));
    let another = config.route("my-reasoner").unwrap();
    assert_eq!(another.family, Family::Reasoning);
    assert!(std::sync::Arc::ptr_eq(&reasoning.sources, &another.sources));
}

#[test]
fn secrets_never_show_in_debug_output() {
    let config = load(FULL).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("sk-test-secret"), "{debug}");
    assert!(debug.contains("Secret(***)"));
    assert!(!config.render_check().contains("sk-test-secret"));
}

#[test]
fn config_check_names_where_every_value_came_from() {
    let text = load(FULL).unwrap().render_check();
    assert!(
        text.contains("model gpt-4o  (family chat, scenario content)"),
        "{text}"
    );
    assert!(
        text.contains("openai → backup (as gpt-4o-2024-08-06)"),
        "{text}"
    );
    let line = |key: &str, model_marker: &str| {
        let section = &text[text.find(model_marker).unwrap()..];
        section
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap()
            .to_owned()
    };
    assert!(
        line("timeouts.first_token", "model gpt-4o ")
            .contains("models.gpt-4o.timeouts.first_token")
    );
    assert!(line("timeouts.connect", "model gpt-4o ").contains("defaults.timeouts.connect"));
    assert!(line("timeouts.idle", "model gpt-4o ").contains("built-in chat × content"));
    assert!(
        line("retry.backoff_max", "model gpt-4o ").contains("scenarios.content.retry.backoff_max")
    );
    assert!(
        line("timeouts.first_token", "model o1-mini")
            .contains("families.reasoning.timeouts.first_token")
    );
    assert!(text.contains("key from $OPENAI_API_KEY"));
}

#[test]
fn parse_errors_name_the_line_and_key_path() {
    let unknown = load("[upstreams.a]\nbase_url = \"http://x\"\nbase_ulr = 1\n").unwrap_err();
    assert!(
        unknown.starts_with("test.toml:3:1: upstreams.a.base_ulr: unknown field"),
        "{unknown}"
    );
    let duration = load("[upstreams.a]\nbase_url = \"http://x\"\n[models.m]\ntargets = [\"a\"]\ntimeouts = { idle = \"30\" }\n").unwrap_err();
    assert!(
        duration.contains("models.m.timeouts.idle") && duration.contains("unit"),
        "{duration}"
    );
    let zero =
        load("[defaults.timeouts]\ntotal = \"0s\"\n[upstreams.a]\nbase_url = \"http://x\"\n")
            .unwrap_err();
    assert!(
        zero.contains("defaults.timeouts.total") && zero.contains("more than 0s"),
        "{zero}"
    );
    let family = load("[families.fast]\n[upstreams.a]\nbase_url = \"http://x\"\n").unwrap_err();
    assert!(
        family.contains("families") && family.contains("chat"),
        "{family}"
    );
    let growth =
        load("[defaults.timeouts]\nattempt_growth = 9.0\n[upstreams.a]\nbase_url = \"http://x\"\n")
            .unwrap_err();
    assert!(
        growth.contains("attempt_growth") && growth.contains("1 (no growth) to 4"),
        "{growth}"
    );
}

#[test]
fn invalid_values_name_the_key_and_the_fix() {
    let up = "[upstreams.a]\nbase_url = \"http://127.0.0.1:1/v1\"\n";
    for (text, key, fix) in [
        (String::new(), "upstreams", "[upstreams.openai]"),
        (
            format!("[server]\nlisten = \"localhost\"\n{up}"),
            "server.listen",
            "IP:PORT",
        ),
        (
            format!("[server]\nmax_request_body = \"lots\"\n{up}"),
            "server.max_request_body",
            "32MiB",
        ),
        (
            format!("[retry_budget]\nratio = 2.0\n{up}"),
            "retry_budget.ratio",
            "0 to 1",
        ),
        (
            "[upstreams.a]\nbase_url = \"ftp://x\"\n".to_owned(),
            "upstreams.a.base_url",
            "http://",
        ),
        (
            "[upstreams.a]\nbase_url = \"http://x\"\napi_key_env = \"NOPE_KEY\"\n".to_owned(),
            "upstreams.a.api_key_env",
            "`NOPE_KEY` is not set",
        ),
        (
            "[upstreams.a]\nbase_url = \"http://x\"\nhttp = \"h2\"\n".to_owned(),
            "upstreams.a.http",
            "write \"auto\"",
        ),
        (
            "[upstreams.a]\nbase_url = \"http://x\"\nhttp2_max_streams = 0\n".to_owned(),
            "upstreams.a.http2_max_streams",
            "1 to 10000",
        ),
        (
            format!("[server]\nthreads = 0\n{up}"),
            "server.threads",
            "must be 1 to 1024; leave it out for one per CPU",
        ),
        (
            format!("[server]\nthreads = 1025\n{up}"),
            "server.threads",
            "must be 1 to 1024",
        ),
        (
            "[upstreams.a]\nbase_url = \"http://x\"\nheaders = { host = \"y\" }\n".to_owned(),
            "upstreams.a.headers.host",
            "set by the gateway",
        ),
        (
            "[upstreams.a]\nbase_url = \"http://x\"\nheaders = { x-tag = \"a\\nb\" }\n".to_owned(),
            "upstreams.a.headers.x-tag",
            "a control character",
        ),
        (
            format!("{up}[models.m]\ntargets = [\"b\"]\n"),
            "models.m.targets[0]",
            "unknown upstream `b`; known: a",
        ),
        (
            "[upstreams.a]\nbase_url = \"http://x\"\nmodels = [\"x\"]\n[models.m]\n".to_owned(),
            "models.m.targets",
            "no upstream lists `m`",
        ),
        (
            format!("{up}[models.m]\ntargets = [\"a\"]\nfallbacks = [\"m\"]\n"),
            "models.m.fallbacks[0]",
            "itself",
        ),
        (
            format!(
                "{up}[models.m]\ntargets = [\"a\"]\nretry = {{ backoff_base = \"5s\", backoff_max = \"1s\" }}\n"
            ),
            "models.m.retry",
            "above backoff_max",
        ),
    ] {
        let message = load(&text).unwrap_err();
        assert!(
            message.starts_with(&format!("test.toml: {key}: ")),
            "{text}\n→ {message}"
        );
        assert!(message.contains(fix), "{text}\n→ {message}");
    }
}

#[test]
fn zero_configuration_comes_from_the_environment() {
    assert!(Config::from_env(&|_| None).unwrap().is_none());
    let with_key = Config::from_env(&env).unwrap().unwrap();
    let openai = &with_key.upstreams[0];
    assert_eq!(openai.base_url.to_string(), "https://api.openai.com/v1");
    assert!(openai.api_key.is_some());
    assert!(with_key.route("anything").is_some());
    let with_base = Config::from_env(&|name| {
        (name == "OPENAI_BASE_URL").then(|| "http://127.0.0.1:8700/v1/".to_owned())
    })
    .unwrap()
    .unwrap();
    let bad =
        Config::from_env(&|name| (name == "OPENAI_BASE_URL").then(|| "localhost:8700".to_owned()))
            .unwrap_err()
            .to_string();
    assert!(
        bad.contains("OPENAI_BASE_URL") && bad.contains("http://"),
        "{bad}"
    );
    assert_eq!(
        with_base.upstreams[0].base_url.to_string(),
        "http://127.0.0.1:8700/v1"
    );
    assert!(
        with_base.upstreams[0].api_key.is_none(),
        "no key: clients' own Authorization is passed on"
    );
    let sim = Config::single_upstream("sim", "http://sim.invalid/v1");
    assert_eq!(sim.route("gpt-4o").unwrap().targets[0].upstream, 0);
}

#[test]
fn the_example_configurations_are_valid() {
    for file in ["hourglass.toml", "failover.toml", "demo.toml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples")
            .join(file);
        let config = Config::load(&path, &|name| Some(format!("value-of-{name}"))).unwrap();
        assert!(config.upstreams.len() >= 2, "{file}");
        assert!(!config.models.is_empty(), "{file}");
    }
}

#[test]
fn balance_hedge_and_breaker_are_read_and_checked() {
    let text = "[upstreams.a]\nbase_url = \"http://a/v1\"\n[upstreams.b]\nbase_url = \"http://b/v1\"\n\
                [breaker]\nconsecutive_failures = 3\nejection = \"5s\"\nmax_ejected_share = 0.34\n\
                [models.fast]\ntargets = [\"a:m\", \"b:m\"]\nbalance = \"latency\"\nhedge = \"p95\"\n\
                [models.slow]\ntargets = [\"a:m\", \"b:m\"]\nhedge = \"1.5s\"\n";
    let config = Config::from_toml(text, "t.toml", &|_| None).unwrap();
    assert_eq!(config.breaker.consecutive_failures, 3);
    assert_eq!(config.breaker.ejection, Duration::from_secs(5));
    assert_eq!(config.breaker.max_ejected_share, 0.34);
    assert_eq!(config.breaker.min_calls, 10, "defaults fill the rest");
    assert_eq!(config.health_check, crate::HealthCheckConfig::default());
    let fast = config.route("fast").unwrap();
    assert_eq!(fast.balance, crate::Balance::Latency);
    assert_eq!(fast.hedge, crate::Hedge::Quantile(0.95));
    assert!(
        fast.targets.iter().all(|t| t.tier == 0),
        "balanced targets share a tier"
    );
    let slow = config.route("slow").unwrap();
    assert_eq!(slow.hedge, crate::Hedge::After(Duration::from_millis(1500)));
    assert_eq!(
        slow.targets.iter().map(|t| t.tier).collect::<Vec<_>>(),
        [0, 1]
    );

    let text = "[upstreams.a]\nbase_url = \"http://a/v1\"\n[upstreams.b]\nbase_url = \"http://b/v1\"\n\
                [upstreams.c]\nbase_url = \"http://c/v1\"\n\
                [models.w]\nbalance = \"weighted\"\ntargets = [{ upstream = \"a\", weight = 3 }, \"b:other\", { upstream = \"c\", model = \"x\", tier = 1 }]\n";
    let config = Config::from_toml(text, "t.toml", &|_| None).unwrap();
    let w = config.route("w").unwrap();
    assert_eq!(w.balance, crate::Balance::Weighted);
    let shape: Vec<(usize, &str, u32, u32)> = w
        .targets
        .iter()
        .map(|t| (t.upstream, t.model.as_str(), t.tier, t.weight))
        .collect();
    assert_eq!(shape, [(0, "w", 0, 3), (1, "other", 0, 1), (2, "x", 1, 1)]);

    for (bad, says) in [
        (
            "[models.x]\ntargets = [{ upstream = \"a\", weight = 0 }]\n",
            "models.x.targets[0].weight: is 0",
        ),
        (
            "[models.x]\ntargets = [{ upstream = \"zz\" }]\n",
            "models.x.targets[0]: unknown upstream `zz`",
        ),
        (
            "[models.x]\ntargets = [\"a\"]\nhedge = \"p100\"\n",
            "models.x.hedge: `p100` is not a percentile",
        ),
        (
            "[models.x]\ntargets = [\"a\"]\nhedge = \"soon\"\n",
            "models.x.hedge: `soon` is not `off`",
        ),
        (
            "[models.x]\ntargets = [\"a\"]\nbalance = \"random\"\n",
            "unknown variant `random`",
        ),
        (
            "[breaker]\nfailure_rate = 1.5\n",
            "breaker.failure_rate: is 1.5",
        ),
        (
            "[breaker]\nhalf_open_calls = 0\n",
            "breaker.half_open_calls: is 0",
        ),
        (
            "[breaker]\nejection = \"10m\"\nmax_ejection = \"1m\"\n",
            "breaker.ejection: (600s) is above",
        ),
        (
            "[health_check]\nmode = \"completion\"\n",
            "health_check.model: mode = \"completion\" needs",
        ),
        (
            "[health_check]\nmodel = \"m\"\n",
            "health_check.model: is only used with",
        ),
        (
            "[health_check]\ninterval = \"1s\"\ntimeout = \"2s\"\n",
            "health_check.timeout: (2s) is longer",
        ),
        (
            "[health_check]\nhealthy_threshold = 0\n",
            "health_check.healthy_threshold: is 0",
        ),
        (
            "[health_check]\nmode = \"ping\"\n",
            "unknown variant `ping`",
        ),
        (
            "[server]\nclient_keys_env = \"NOPE\"\n",
            "server.client_keys_env: environment variable `NOPE` is not set",
        ),
        (
            "[server]\nadmin_key_env = \"NOPE\"\n",
            "server.admin_key_env: environment variable `NOPE` is not set",
        ),
        (
            "[server]\nclient_keys_env = \"COMMAS\"\n",
            "server.client_keys_env: holds no key",
        ),
        (
            "[server]\nmax_header_bytes = \"1KB\"\n",
            "server.max_header_bytes: must be between 8KiB and 1MiB",
        ),
        (
            "[server]\nmax_header_bytes = \"big\"\n",
            "server.max_header_bytes: `big` is not a size",
        ),
        // Found by a user: the key path of a family or scenario read `families.?`.
        (
            "[families.reasonin.timeouts]\nfirst_token = \"1s\"\n",
            "families.reasonin: there is no such family; write one of chat, reasoning, image, embedding",
        ),
        (
            "[families.chat.timeouts]\nfirst_tokn = \"1s\"\n",
            "families.chat.timeouts.first_tokn: unknown field",
        ),
        (
            "[scenarios.contnt.retry]\nmax_attempts = 2\n",
            "scenarios.contnt: there is no such scenario",
        ),
        // Found by a user: `0B` is a size, just not one a request fits in.
        (
            "[server]\nmax_request_body = \"0B\"\n",
            "server.max_request_body: `0B` is zero: no request would fit",
        ),
        (
            "[server]\nbody_read_timeout = \"0s\"\n",
            "server.body_read_timeout",
        ),
    ] {
        let text = format!("[upstreams.a]\nbase_url = \"http://a/v1\"\n{bad}");
        let env = |name: &str| (name == "COMMAS").then(|| " , ,".to_owned());
        let error = Config::from_toml(&text, "t.toml", &env)
            .unwrap_err()
            .to_string();
        assert!(error.contains(says), "{error}");
    }
}

#[test]
fn keys_come_from_files_read_beside_the_configuration() {
    let dir = std::env::temp_dir().join(format!(
        "hourglass-secrets-{}-{}",
        std::process::id(),
        line!()
    ));
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets/upstream"), "sk-from-a-file\n").unwrap();
    std::fs::write(
        dir.join("secrets/clients"),
        "# one key per line, or commas\nck-one\n\nck-two, ck-three\n",
    )
    .unwrap();
    let admin = dir.join("admin");
    std::fs::write(&admin, "  admin-from-file  ").unwrap();
    std::fs::write(dir.join("empty"), "\n").unwrap();
    let origin = dir.join("hourglass.toml");
    let origin = origin.to_str().unwrap();
    let text = format!(
        "[server]\nadmin_key_file = \"{}\"\nclient_keys_file = \"secrets/clients\"\n\
         [upstreams.a]\nbase_url = \"http://a/v1\"\napi_key_file = \"secrets/upstream\"\n",
        admin.display()
    );
    let config = Config::from_toml(&text, origin, &|_| None).unwrap();
    assert_eq!(
        config.upstreams[0].api_key.as_ref().unwrap().expose(),
        "sk-from-a-file"
    );
    assert_eq!(
        config.server.admin_key.as_ref().unwrap().expose(),
        "admin-from-file"
    );
    let clients: Vec<&str> = config
        .server
        .client_keys
        .iter()
        .map(Secret::expose)
        .collect();
    assert_eq!(clients, ["ck-one", "ck-two", "ck-three"]);
    let check = config.render_check();
    assert!(check.contains("key from file secrets/upstream"), "{check}");
    assert!(!check.contains("sk-from-a-file"));

    for (bad, says) in [
        (
            "api_key_file = \"secrets/missing\"\n",
            "upstreams.a.api_key_file: cannot read `",
        ),
        ("api_key_file = \"empty\"\n", "upstreams.a.api_key_file: `"),
        (
            "api_key_file = \"secrets/upstream\"\napi_key_env = \"OPENAI_API_KEY\"\n",
            "both upstreams.a.api_key_env and upstreams.a.api_key_file are set; keep one",
        ),
    ] {
        let text = format!("[upstreams.a]\nbase_url = \"http://a/v1\"\n{bad}");
        let error = Config::from_toml(&text, origin, &env)
            .unwrap_err()
            .to_string();
        assert!(error.contains(says), "{error}");
        assert!(!error.contains("sk-"), "no secret in errors: {error}");
    }
    let missing = Config::from_toml(
        "[upstreams.a]\nbase_url = \"http://a/v1\"\napi_key_file = \"secrets/missing\"\n",
        origin,
        &env,
    )
    .unwrap_err()
    .to_string();
    assert!(missing.contains("secrets/missing"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Found by a user: credentials in `base_url` were accepted, printed by `config check` and the
/// banner, and sent in the Host header. They are refused, and the error does not repeat them.
#[test]
fn credentials_in_a_base_url_are_refused_without_being_repeated() {
    let error = load("[upstreams.a]\nbase_url = \"https://user:s3cret-pw@api.example.com/v1\"\n")
        .unwrap_err();
    assert!(
        error.contains("upstreams.a.base_url") && error.contains("credentials before its host"),
        "{error}"
    );
    assert!(
        !error.contains("s3cret-pw") && !error.contains("user:"),
        "{error}"
    );
    assert!(error.contains("https://***@api.example.com/v1"), "{error}");
    let env_error = Config::from_env(&|name| match name {
        "OPENAI_BASE_URL" => Some("http://k:v@127.0.0.1:9/v1".to_owned()),
        _ => None,
    })
    .unwrap_err()
    .to_string();
    assert!(
        env_error.contains("credentials") && !env_error.contains("k:v"),
        "{env_error}"
    );
}

const ONE_UPSTREAM: &str = "[upstreams.local]\nbase_url = \"http://127.0.0.1:9/v1\"\n";

#[test]
fn the_jobs_table_loads_with_its_webhooks_and_never_shows_a_secret() {
    let env = |name: &str| match name {
        "HOOK_SECRET" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()),
        _ => None,
    };
    let text = format!(
        "{ONE_UPSTREAM}[jobs]\ndata_dir = \"/var/lib/hourglass\"\nretention = \"2h\"\nmax_queued = 10\nmax_running = 2\nmax_store_size = \"64MiB\"\nwebhook_secret_env = \"HOOK_SECRET\"\nwebhook_urls = [\"https://hooks.example.com/\"]\n\n[jobs.webhooks.billing]\nurl = \"https://billing.example.com/hook\"\nsecret_env = \"HOOK_SECRET\"\nevents = [\"response.completed\", \"job.failed\"]\n\n[models.m]\ntargets = [\"local\"]\ntimeouts = {{ job = \"10m\" }}\n"
    );
    let config = Config::from_toml(&text, "test.toml", &env).unwrap();
    let jobs = &config.jobs;
    assert_eq!(
        jobs.data_dir.as_deref(),
        Some(std::path::Path::new("/var/lib/hourglass"))
    );
    assert_eq!(jobs.retention, Duration::from_secs(7200));
    assert_eq!((jobs.max_queued, jobs.max_running), (10, 2));
    assert_eq!(jobs.max_store_bytes, 64 << 20);
    assert_eq!(jobs.webhooks[0].name, "billing");
    assert_eq!(
        jobs.webhooks[0].events,
        ["response.completed", "job.failed"]
    );
    assert_eq!(
        config.route("m").unwrap().policy.timeouts.job,
        Duration::from_secs(600)
    );
    let shown = config.render_check();
    assert!(shown.contains("webhook billing"), "{shown}");
    assert!(
        shown.contains("timeouts.job") && shown.contains("600s"),
        "{shown}"
    );
    assert!(!shown.contains("MfKQ9r8"), "a secret was shown: {shown}");
    assert!(
        !format!("{config:?}").contains("MfKQ9r8"),
        "a secret was in Debug output"
    );
}

#[test]
fn a_bad_jobs_table_is_refused_with_the_key_at_fault() {
    let env = |name: &str| {
        (name == "HOOK_SECRET").then(|| "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned())
    };
    for (table, key, words) in [
        ("max_queued = 0", "jobs.max_queued", "at least 1"),
        ("max_store_size = \"1KiB\"", "jobs.max_store_size", "1MiB"),
        (
            "max_store_size = \"lots\"",
            "jobs.max_store_size",
            "not a size",
        ),
        (
            "webhook_urls = [\"https://h.example/\"]",
            "jobs.webhook_urls",
            "secret",
        ),
        (
            "webhook_secret_env = \"HOOK_SECRET\"\nwebhook_urls = [\"ftp://h\"]",
            "jobs.webhook_urls[0]",
            "http",
        ),
        (
            "[jobs.webhooks.x]\nurl = \"https://h.example/\"",
            "jobs.webhooks.x.secret_env",
            "secret",
        ),
        (
            "[jobs.webhooks.x]\nurl = \"/relative\"\nsecret_env = \"HOOK_SECRET\"",
            "jobs.webhooks.x.url",
            "absolute",
        ),
        (
            "[jobs.webhooks.x]\nurl = \"https://h.example/\"\nsecret_env = \"HOOK_SECRET\"\nevents = [\"job.done\"]",
            "jobs.webhooks.x.events[0]",
            "not an event",
        ),
        (
            "webhook_secret_env = \"SHORT\"",
            "jobs.webhook_secret_env",
            "not set",
        ),
    ] {
        let text = format!("{ONE_UPSTREAM}[jobs]\n{table}\n");
        let error = Config::from_toml(&text, "test.toml", &env)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(key) && error.contains(words),
            "{table}: {error}"
        );
    }
    let unknown = Config::from_toml(
        &format!("{ONE_UPSTREAM}[jobs]\nretension = \"1d\"\n"),
        "t.toml",
        &env,
    );
    assert!(unknown.unwrap_err().to_string().contains("retension"));
}

#[test]
fn the_cluster_table_loads_and_check_shows_what_is_shared_never_the_url() {
    let env = |name: &str| match name {
        "PG_URL" => Some("postgres://gw:pa55word@db.internal:5432/hourglass".to_owned()),
        "REDIS_URL" => Some("rediss://:r3dispass@cache.internal:6380/0".to_owned()),
        _ => None,
    };
    let text = format!(
        "{ONE_UPSTREAM}[cluster]\ninstance = \"gw-1\"\npostgres_url_env = \"PG_URL\"\nredis_url_env = \"REDIS_URL\"\npostgres_pool = 4\njob_lease = \"6s\"\nwait_for_stores = \"10s\"\n\n[client_limits]\nrequests_per_minute = 600\nconcurrent = 8\n"
    );
    let config = Config::from_toml(&text, "test.toml", &env).unwrap();
    let cluster = &config.cluster;
    assert!(cluster.is_shared());
    assert_eq!(cluster.instance.as_deref(), Some("gw-1"));
    assert_eq!(cluster.postgres_pool, 4);
    assert_eq!(cluster.job_lease, Duration::from_secs(6));
    assert_eq!(cluster.wait_for_stores, Duration::from_secs(10));
    let shown = config.render_check();
    for words in [
        "instance gw-1",
        "store PostgreSQL",
        "shared     background jobs",
        "local      breakers",
        "renewed every 2s",
    ] {
        assert!(shown.contains(words), "{words}: {shown}");
    }
    assert!(
        !shown.contains("pa55word") && !shown.contains("db.internal"),
        "{shown}"
    );
    assert!(!format!("{config:?}").contains("pa55word"));

    // Without the table: one instance, nothing shared, the embedded store.
    let single = Config::from_toml(ONE_UPSTREAM, "test.toml", &env).unwrap();
    assert!(!single.cluster.is_shared());
    let shown = single.render_check();
    assert!(shown.contains("nothing is shared"), "{shown}");
    assert!(shown.contains("store redb"), "{shown}");
}

#[test]
fn a_bad_cluster_table_is_refused_with_the_key_at_fault_and_no_url() {
    let env = |name: &str| match name {
        "NOT_PG" => Some("https://user:pa55word@db.internal/x".to_owned()),
        "NOT_REDIS" => Some("http://:pa55word@cache/0".to_owned()),
        "PG_URL" => Some("postgres://db/x".to_owned()),
        _ => None,
    };
    for (table, key, words) in [
        ("instance = \"gw 1\"", "cluster.instance", "letters"),
        ("instance = \"\"", "cluster.instance", "1 to 64"),
        (
            "postgres_url_env = \"UNSET\"",
            "cluster.postgres_url_env",
            "not set",
        ),
        (
            "postgres_url_env = \"NOT_PG\"",
            "cluster.postgres_url_env",
            "PostgreSQL URL",
        ),
        (
            "postgres_url_env = \"PG_URL\"\npostgres_url_file = \"/x\"",
            "cluster.postgres_url_file",
            "keep one",
        ),
        ("postgres_pool = 0", "cluster.postgres_pool", "1 to 256"),
        (
            "job_lease = \"100ms\"",
            "cluster.job_lease",
            "at least 500ms",
        ),
        ("postgres = true", "postgres", "unknown field"),
        (
            "redis_url_env = \"NOT_REDIS\"",
            "cluster.redis_url_env",
            "Redis URL",
        ),
    ] {
        let text = format!("{ONE_UPSTREAM}[cluster]\n{table}\n");
        let error = Config::from_toml(&text, "test.toml", &env)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(key) && error.contains(words),
            "{table}: {error}"
        );
        assert!(!error.contains("pa55word"), "{error}");
    }
}

#[test]
fn a_client_limit_of_zero_is_refused() {
    let text = format!("{ONE_UPSTREAM}[client_limits]\ntokens_per_minute = 0\n");
    let error = Config::from_toml(&text, "test.toml", &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("client_limits.tokens_per_minute") && error.contains("at least 1"),
        "{error}"
    );
}

#[test]
fn upstreams_say_which_protocol_they_speak_and_where_their_key_goes() {
    let config = load(
        r#"
[upstreams.openai]
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"

[upstreams.anthropic]
base_url = "https://api.anthropic.com/v1"
protocol = "anthropic"
api_key_env = "OPENAI_API_KEY"

[upstreams.azure]
base_url = "https://example.openai.azure.com/openai/v1"
api_key_env = "OPENAI_API_KEY"
api_key_header = "api-key"

[upstreams.both]
base_url = "http://127.0.0.1:4000/v1"
protocol = ["openai", "anthropic"]
http = "2"
http2_max_streams = 64

[models.claude]
targets = ["anthropic:claude-sonnet-4-5", "both"]
"#,
    )
    .unwrap();
    let upstream = |name: &str| config.upstream(name).unwrap();
    assert_eq!(upstream("openai").protocols, [WireFormat::OpenAi]);
    assert_eq!(upstream("openai").key_header, KeyHeader::Authorization);
    assert_eq!(upstream("anthropic").protocols, [WireFormat::Anthropic]);
    assert_eq!(upstream("anthropic").key_header, KeyHeader::XApiKey);
    assert_eq!(upstream("azure").key_header, KeyHeader::ApiKey);
    assert_eq!(upstream("openai").http, HttpVersion::Auto);
    assert_eq!(
        upstream("openai").http2_max_streams,
        DEFAULT_HTTP2_MAX_STREAMS
    );
    assert_eq!(
        (upstream("both").http, upstream("both").http2_max_streams),
        (HttpVersion::Http2, 64)
    );
    assert!(
        upstream("both").speaks(WireFormat::OpenAi)
            && upstream("both").speaks(WireFormat::Anthropic)
    );
    let check = config.render_check();
    assert!(
        check.contains("anthropic protocol; key from $OPENAI_API_KEY in x-api-key"),
        "{check}"
    );
    assert!(
        check.contains("openai and anthropic protocol; HTTP/2, 64 calls per connection"),
        "{check}"
    );
    let pass = config.passthrough_route(WireFormat::Anthropic).unwrap();
    assert_eq!(config.upstreams[pass.targets[0].upstream].name, "anthropic");
}

#[test]
fn a_models_targets_and_fallbacks_must_speak_one_protocol() {
    let upstreams = "[upstreams.openai]\nbase_url = \"http://o/v1\"\n\
                     [upstreams.anthropic]\nbase_url = \"http://a/v1\"\nprotocol = \"anthropic\"\n";
    let mixed = load(&format!(
        "{upstreams}[models.m]\ntargets = [\"openai\", \"anthropic\"]\n"
    ))
    .unwrap_err();
    assert!(
        mixed.contains("models.m.targets")
            && mixed.contains("`openai` speaks openai, `anthropic` speaks anthropic")
            && mixed.contains("does not translate"),
        "{mixed}"
    );
    let fallback = load(&format!(
        "{upstreams}[models.m]\ntargets = [\"openai\"]\nfallbacks = [\"c\"]\n\
         [models.c]\ntargets = [\"anthropic\"]\n"
    ))
    .unwrap_err();
    assert!(
        fallback.contains("models.m.fallbacks[0]") && fallback.contains("served over anthropic"),
        "{fallback}"
    );
    for (value, says) in [
        ("\"grpc\"", "`grpc` is not a protocol"),
        ("[]", "is empty"),
        ("[\"openai\", \"openai\"]", "lists `openai` twice"),
        ("3", "a integer is not a protocol"),
    ] {
        let error = load(&format!(
            "[upstreams.a]\nbase_url = \"http://a/v1\"\nprotocol = {value}\n"
        ))
        .unwrap_err();
        assert!(
            error.contains("upstreams.a.protocol") && error.contains(says),
            "{error}"
        );
    }
    let header = load("[upstreams.a]\nbase_url = \"http://a/v1\"\napi_key_header = \"cookie\"\n")
        .unwrap_err();
    assert!(
        header.contains("upstreams.a.api_key_header") && header.contains("\"x-api-key\""),
        "{header}"
    );
    let twice = load(
        "[upstreams.a]\nbase_url = \"http://a/v1\"\nprotocol = \"anthropic\"\napi_key_env = \"OPENAI_API_KEY\"\nheaders = { \"x-api-key\" = \"k\" }\n",
    )
    .unwrap_err();
    assert!(twice.contains("already sets x-api-key"), "{twice}");
}

#[test]
fn zero_configuration_adds_anthropic_from_its_key_alone() {
    let both = Config::from_env(&|name| match name {
        "OPENAI_API_KEY" => Some("sk-o".to_owned()),
        "ANTHROPIC_API_KEY" => Some("sk-ant".to_owned()),
        "ANTHROPIC_BASE_URL" => Some("http://127.0.0.1:8787".to_owned()),
        _ => None,
    })
    .unwrap()
    .unwrap();
    assert_eq!(both.upstreams.len(), 2);
    let anthropic = both.upstream("anthropic").unwrap();
    assert_eq!(
        anthropic.base_url.to_string(),
        "https://api.anthropic.com/v1",
        "ANTHROPIC_BASE_URL points Claude Code at the gateway, so the gateway never reads it"
    );
    assert_eq!(anthropic.key_header, KeyHeader::XApiKey);
    assert_eq!(anthropic.protocols, [WireFormat::Anthropic]);
    let alone = Config::from_env(&|name| (name == "ANTHROPIC_API_KEY").then(|| "k".to_owned()))
        .unwrap()
        .unwrap();
    assert!(alone.passthrough_route(WireFormat::OpenAi).is_none());
    assert!(
        alone.origin.contains("ANTHROPIC_API_KEY"),
        "{}",
        alone.origin
    );
}

/// A key that holds what no header can carry would fail every call: it is refused at load,
/// naming where it came from, never showing it.
#[test]
fn an_upstream_key_no_header_can_carry_is_refused_at_load_without_showing_it() {
    let bad = "sk-s3cret\u{1}tail";
    let text = "[upstreams.a]\nbase_url = \"http://a/v1\"\napi_key_env = \"K\"\n";
    let error = Config::from_toml(text, "t.toml", &|n| (n == "K").then(|| bad.to_owned()))
        .unwrap_err()
        .to_string();
    assert!(error.contains("upstreams.a.api_key_env"), "{error}");
    assert!(
        error.contains("$K holds a character no HTTP header can carry"),
        "{error}"
    );
    assert!(!error.contains("s3cret"), "{error}");
    let env = |name: &str| (name == "OPENAI_API_KEY").then(|| "sk-s3cret\nsecond line".to_owned());
    let error = Config::from_env(&env).unwrap_err().to_string();
    assert!(error.contains("OPENAI_API_KEY"), "{error}");
    assert!(error.contains("no HTTP header can carry"), "{error}");
    assert!(!error.contains("s3cret"), "{error}");
    // A good key is built once, as its header carries it, and marked sensitive.
    let env = |name: &str| (name == "K").then(|| "sk-1".to_owned());
    let text = "[upstreams.a]\nbase_url = \"http://a/v1\"\napi_key_env = \"K\"\n[upstreams.b]\nbase_url = \"http://b/v1\"\napi_key_env = \"K\"\napi_key_header = \"api-key\"\n";
    let config = Config::from_toml(text, "t.toml", &env).unwrap();
    for (upstream, value) in [("a", "Bearer sk-1"), ("b", "sk-1")] {
        let upstream = config
            .upstreams
            .iter()
            .find(|u| u.name == upstream)
            .unwrap();
        let built = upstream.key_value.as_ref().unwrap();
        assert_eq!(built.to_str().unwrap(), value);
        assert!(built.is_sensitive());
        assert_eq!(format!("{built:?}"), "Sensitive", "Debug never shows it");
    }
    assert_eq!(KeyHeader::ApiKey.header_name().as_str(), "api-key");
    assert_eq!(KeyHeader::XApiKey.header_name().as_str(), "x-api-key");
    assert_eq!(
        KeyHeader::Authorization.header_name().as_str(),
        "authorization"
    );
}

/// An extra header's value may hold text beyond ASCII (HTTP carries it as bytes), but not a
/// control character: the error says which, where.
#[test]
fn an_extra_header_value_may_hold_non_ascii_text_but_no_control_character() {
    let text = "[upstreams.a]\nbase_url = \"http://a/v1\"\nheaders = { x-team = \"café\\tbar\" }\n";
    let config = Config::from_toml(text, "t.toml", &|_| None).unwrap();
    let (name, value) = &config.upstreams[0].headers[0];
    assert_eq!(name.as_str(), "x-team");
    assert_eq!(value.as_bytes(), "café\tbar".as_bytes());
    for bad in ["a\\u0000b", "a\\rb", "a\\u007fb"] {
        let text = format!(
            "[upstreams.a]\nbase_url = \"http://a/v1\"\nheaders = {{ x-team = \"{bad}\" }}\n"
        );
        let error = Config::from_toml(&text, "t.toml", &|_| None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("upstreams.a.headers.x-team"), "{error}");
        assert!(error.contains("holds a control character"), "{error}");
    }
}
