//! Several `hourglass serve` replicas on one real PostgreSQL and one real Redis (Debian's, started
//! on loopback for each test): a job submitted to one is read, followed and resumed from the
//! others; a replica killed with `kill -9` while it runs twenty jobs leaves each to the others,
//! which end it by the restart rule (none lost, nothing that had begun its answer run twice); a
//! stopped database refuses job submissions with 503 while synchronous calls go on, and a replica
//! started while it is away is not ready until it returns or `cluster.wait_for_stores` runs out;
//! a 429 cool-down learned by one replica is honoured by the others within 100 ms; Redis stopped
//! under load fails no call, and sharing resumes when it returns; client limits count every
//! replica's calls.

#![allow(clippy::unwrap_used)]
// a test panics on what it does not expect
// The test's own thread polls the replicas between sleeps; no runtime worker is blocked.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;

use hourglass_sim::Server;
use hourglass_testkit::http::{exchange, http};
use hourglass_testkit::jobs::{running, submit};
use hourglass_testkit::postgres::TestPostgres;
use hourglass_testkit::redis::TestRedis;
use hourglass_testkit::serve::Serve;
use hourglass_testkit::sim;
use hourglass_testkit::wait_until;
use serde_json::Value;

const URL_VAR: &str = "HOURGLASS_TEST_POSTGRES_URL";
const REDIS_VAR: &str = "HOURGLASS_TEST_REDIS_URL";
const KEY_VAR: &str = "HOURGLASS_TEST_UPSTREAM_KEY";

struct Cluster {
    _runtime: tokio::runtime::Runtime,
    postgres: TestPostgres,
    url: String,
    redis: TestRedis,
    /// Lines added to every replica's configuration.
    extra: String,
    a: Server,
    b: Server,
    dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Cluster {
    fn start(name: &str) -> Cluster {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (a, b) = (sim(&runtime, "a"), sim(&runtime, "b"));
        let postgres = TestPostgres::start();
        let url = postgres.database("hourglass");
        let redis = TestRedis::start();
        let dir = std::env::temp_dir().join(format!("hourglass-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Cluster {
            _runtime: runtime,
            postgres,
            url,
            redis,
            extra: String::new(),
            a,
            b,
            dir,
        }
    }

    /// A configuration whose model goes to simulator `target`.
    fn config(&self, instance: &str, target: &str, wait_for_stores: &str) -> PathBuf {
        let path = self.dir.join(format!("{instance}.toml"));
        let text = format!(
            r#"
[cluster]
instance = "{instance}"
postgres_url_env = "{URL_VAR}"
redis_url_env = "{REDIS_VAR}"
job_lease = "1s"
wait_for_stores = "{wait_for_stores}"

[jobs]
max_running = 40

# The simulators count every request: no health checks among them.
[health_check]
mode = "off"

[upstreams.a]
base_url = "{a}"
api_key_env = "{KEY_VAR}"

[upstreams.b]
base_url = "{b}"
api_key_env = "{KEY_VAR}"
{extra}

[models.m]
targets = ["{target}:sim-instant"]
timeouts = {{ first_byte = "300s", first_token = "300s", idle = "300s", attempt = "600s", total = "900s" }}
retry = {{ max_attempts = 2 }}
"#,
            a = self.a.base_url(),
            b = self.b.base_url(),
            extra = self.extra,
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn replica(&self, instance: &str, target: &str) -> Serve {
        self.replica_waiting(instance, target, "30s")
    }

    fn replica_waiting(&self, instance: &str, target: &str, wait: &str) -> Serve {
        let config = self.config(instance, target, wait);
        let data = self.dir.join(format!("data-{instance}"));
        Serve::start(
            env!("CARGO_BIN_EXE_hourglass"),
            &config,
            &["--data-dir", data.to_str().unwrap()],
            &[
                (URL_VAR, self.url.as_str()),
                (REDIS_VAR, self.redis.url().as_str()),
                (KEY_VAR, "sk-upstream-test"),
            ],
        )
    }
}

fn events(addr: &str, id: &str, last: Option<&str>) -> String {
    let headers: Vec<(&str, &str)> = last.map(|n| ("last-event-id", n)).into_iter().collect();
    let (status, body) = http(
        addr,
        "GET",
        &format!("/v1/hourglass/jobs/{id}/events"),
        &headers,
        "",
    );
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn a_job_submitted_to_one_replica_is_read_followed_and_resumed_from_the_others() {
    let cluster = Cluster::start("cluster-read");
    let replicas: Vec<Serve> = ["r1", "r2", "r3"]
        .iter()
        .map(|name| cluster.replica(name, "a"))
        .collect();
    let [r1, r2, r3] = [&replicas[0].addr, &replicas[1].addr, &replicas[2].addr];

    // A stream of twelve tokens at ten a second, submitted to r1.
    let id = submit(r1, true, Some("slow;tokens_per_s=10"));
    let job = running(r2, &id).expect("r2 sees it running");
    assert_eq!(job["id"], id.as_str());
    // r3 follows it live, from the start, while r1 runs it.
    let followed = std::thread::spawn({
        let (r3, id) = (r3.to_string(), id.clone());
        move || events(&r3, &id, None)
    });
    wait_until("the job has ended", 60, || running(r2, &id).is_none());
    let whole = events(r1, &id, None);
    assert_eq!(
        followed.join().unwrap(),
        whole,
        "r3 saw every event, in order, once"
    );
    assert!(whole.contains("[DONE]"), "{whole}");
    // r2 resumes after event 4: exactly the rest.
    let rest = events(r2, &id, Some("4"));
    let from_5 = whole
        .split_once("id: 5\n")
        .map(|(_, tail)| format!("id: 5\n{tail}"));
    assert_eq!(Some(rest), from_5);
    // Every replica answers with the same finished job.
    let answers: Vec<(u16, String)> = [r1, r2, r3]
        .iter()
        .map(|r| http(r, "GET", &format!("/v1/hourglass/jobs/{id}"), &[], ""))
        .collect();
    assert_eq!(answers[0].0, 200);
    assert!(answers.iter().all(|a| a == &answers[0]));

    // A background Response made on r2, read and cancelled from r3 (idempotent on a finished one).
    let body = r#"{"model":"m","input":"hi","background":true}"#;
    let (status, created) = http(r2, "POST", "/v1/responses", &[], body);
    assert_eq!(status, 200, "{created}");
    let response: Value = serde_json::from_str(&created).unwrap();
    let rid = response["id"].as_str().unwrap().to_owned();
    wait_until("the response has completed", 60, || {
        let (_, body) = http(r3, "GET", &format!("/v1/responses/{rid}"), &[], "");
        body.contains("\"completed\"")
    });
    let (_, cancelled) = http(r1, "POST", &format!("/v1/responses/{rid}/cancel"), &[], "");
    assert!(cancelled.contains("\"completed\""), "{cancelled}");

    // A streamed background Response made on r1, replayed from r3 and resumed on r2 after
    // sequence number 3: exactly the events after it, as r1 sent them.
    let body = r#"{"model":"m","input":"hi","background":true,"stream":true}"#;
    let (status, streamed) = http(r1, "POST", "/v1/responses", &[], body);
    assert_eq!(status, 200, "{streamed}");
    let events: Vec<&str> = streamed
        .split("\n\n")
        .filter(|e| e.contains("data: "))
        .collect();
    assert!(events.len() > 5, "{streamed}");
    assert!(
        events.last().unwrap().contains("response.completed"),
        "{streamed}"
    );
    let rid = streamed
        .split("\"id\":\"")
        .find_map(|rest| {
            rest.starts_with("resp_hg")
                .then(|| rest.split('"').next().unwrap())
        })
        .unwrap()
        .to_owned();
    let path = format!("/v1/responses/{rid}?stream=true");
    let (_, replayed) = http(r3, "GET", &path, &[], "");
    assert_eq!(replayed, streamed, "r3 replays the stream r1 sent");
    let (_, resumed) = http(r2, "GET", &format!("{path}&starting_after=3"), &[], "");
    let rest: Vec<&str> = resumed
        .split("\n\n")
        .filter(|e| e.contains("data: "))
        .collect();
    assert_eq!(rest, events[4..], "r2 resumes after sequence number 3");

    // A cancel on r3 reaches the job r1 runs: its upstream call is dropped and it ends.
    let long = submit(r1, true, Some("slow;tokens_per_s=1"));
    wait_until("the long job runs", 30, || {
        running(r3, &long).is_some_and(|job| job["status"] == "in_progress")
    });
    let (status, body) = http(r3, "DELETE", &format!("/v1/hourglass/jobs/{long}"), &[], "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"cancelled\""), "{body}");
    let answer = exchange(r1, "GET", &format!("/v1/hourglass/jobs/{long}"), &[], "").unwrap();
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert_eq!(answer.header("x-hourglass-job-status"), Some("cancelled"));
    assert!(answer.body.contains("job_cancelled"), "{}", answer.body);
}

#[test]
fn after_kill_9_of_a_replica_running_twenty_jobs_the_others_end_each_by_the_rule() {
    let cluster = Cluster::start("cluster-kill");
    let mut r1 = cluster.replica("r1", "a");
    // The others send the model to `b`, so what runs again is told apart by the simulators.
    let r2 = cluster.replica("r2", "b");
    let r3 = cluster.replica("r3", "b");
    let addr = r1.addr.clone();
    let slow = "slow;tokens_per_s=1;upstream=a";
    let begun: Vec<String> = (0..10).map(|_| submit(&addr, true, Some(slow))).collect();
    let late = "first_token;after=300s;upstream=a";
    let waiting: Vec<String> = (0..10).map(|_| submit(&addr, false, Some(late))).collect();
    wait_until("every stream has stored part of its answer", 60, || {
        begun.iter().all(|id| {
            running(&r2.addr, id).is_some_and(|job| job["events"].as_u64().unwrap_or(0) >= 2)
        })
    });
    for id in &waiting {
        assert_eq!(running(&r3.addr, id).unwrap()["status"], "in_progress");
    }
    let seen_by_a = cluster.a.stats().requests;
    assert_eq!(seen_by_a, 20);

    r1.kill();
    let all: Vec<&String> = begun.iter().chain(&waiting).collect();
    wait_until("every job has ended on the other replicas", 60, || {
        all.iter().all(|id| running(&r2.addr, id).is_none())
    });
    for id in &begun {
        let (status, body) = http(
            &r3.addr,
            "GET",
            &format!("/v1/hourglass/jobs/{id}"),
            &[],
            "",
        );
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("gateway_restarted"), "{body}");
        let events = events(&r2.addr, id, None);
        let last = events.trim_end().rsplit("\n\n").next().unwrap();
        assert!(last.contains("gateway_restarted"), "{events}");
        assert!(!events.contains("[DONE]"), "{events}");
    }
    for id in &waiting {
        let (status, body) = http(
            &r2.addr,
            "GET",
            &format!("/v1/hourglass/jobs/{id}"),
            &[],
            "",
        );
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("chat.completion"), "{body}");
    }
    // The ten that had not begun ran once more, on `b`; nothing ran on `a` again.
    assert_eq!(cluster.b.stats().requests, 10);
    assert_eq!(cluster.a.stats().requests, seen_by_a);
    let taken: u64 = [&r2, &r3]
        .iter()
        .map(|r| {
            let (_, metrics) = http(&r.addr, "GET", "/metrics", &[], "");
            metric(&metrics, "hourglass_jobs_rerun_total")
                + metric(&metrics, "hourglass_jobs_restarted_total")
        })
        .sum();
    assert_eq!(taken, 20, "each job was taken by exactly one replica");
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

#[test]
fn while_the_database_is_away_jobs_get_503_synchronous_calls_go_on_and_readiness_waits() {
    let cluster = Cluster::start("cluster-away");
    let r1 = cluster.replica_waiting("r1", "a", "1s");
    let ready = |addr: &str| exchange(addr, "GET", "/health/ready", &[], "").unwrap();
    wait_until("r1 is ready", 30, || ready(&r1.addr).status == 200);

    cluster.postgres.stop();
    let chat = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let headers = [("prefer", "respond-async")];
    let (status, body) = http(&r1.addr, "POST", "/v1/chat/completions", &headers, chat);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("jobs_unavailable"), "{body}");
    assert!(!body.contains(&cluster.url), "no URL in errors: {body}");
    for _ in 0..20 {
        let (status, body) = http(&r1.addr, "POST", "/v1/chat/completions", &[], chat);
        assert_eq!(status, 200, "synchronous calls need no database: {body}");
    }
    // It reached the store once: still ready (synchronous calls need none), and says so.
    let answer = ready(&r1.addr);
    assert_eq!(answer.status, 200);
    assert!(answer.body.contains("does not answer"), "{}", answer.body);
    assert!(
        answer.body.contains("\"reachable\":false"),
        "{}",
        answer.body
    );
    let (_, metrics) = http(&r1.addr, "GET", "/metrics", &[], "");
    assert!(metrics.contains("hourglass_jobs_store_up 0"), "{metrics}");
    assert_eq!(
        exchange(&r1.addr, "GET", "/health/live", &[], "")
            .unwrap()
            .status,
        200
    );

    // A replica started now waits for the store: not ready, until it answers.
    let r2 = cluster.replica_waiting("r2", "a", "120s");
    wait_until("r2 has reached Redis", 30, || {
        ready(&r2.addr).body.contains("\"redis\":{\"at\"")
            && !ready(&r2.addr).body.contains("waiting for Redis")
    });
    let answer = ready(&r2.addr);
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(
        answer.body.contains("waiting for its job store"),
        "{}",
        answer.body
    );
    cluster.postgres.resume();
    wait_until("r2 is ready once the database answers", 30, || {
        ready(&r2.addr).status == 200
    });
    wait_until("r1 takes jobs again", 30, || {
        http(&r1.addr, "POST", "/v1/chat/completions", &headers, chat).0 == 202
    });
    let id = submit(&r2.addr, false, None);
    wait_until("the job ends", 30, || running(&r1.addr, &id).is_none());
    let (status, body) = http(
        &r1.addr,
        "GET",
        &format!("/v1/hourglass/jobs/{id}"),
        &[],
        "",
    );
    assert_eq!(status, 200, "{body}");
}

fn ready(addr: &str) -> bool {
    exchange(addr, "GET", "/health/ready", &[], "").is_ok_and(|a| {
        a.status == 200
            && a.body.contains("\"reachable\":true")
            && !a.body.contains("\"reachable\":false")
    })
}

/// A chat call to `addr`: its status and the upstream that answered.
fn chat(addr: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let answer = exchange(addr, "POST", "/v1/chat/completions", headers, body).unwrap();
    let upstream = answer
        .header("x-hourglass-upstream")
        .unwrap_or("")
        .to_owned();
    (answer.status, upstream)
}

#[test]
fn a_429_cool_down_learned_by_one_replica_is_honoured_by_the_others_within_100_ms() {
    let cluster = Cluster::start("cluster-cool");
    let replicas: Vec<Serve> = ["r1", "r2", "r3"]
        .iter()
        .map(|name| cluster.replica(name, "a:sim-instant\", \"b"))
        .collect();
    let [r1, r2, r3] = [&replicas[0].addr, &replicas[1].addr, &replicas[2].addr];
    wait_until("every replica is ready with both stores", 30, || {
        [r1, r2, r3].iter().all(|r| ready(r))
    });
    let fault = [("x-sim-fault", "rate_limit;retry_after=30;upstream=a")];
    assert_eq!(
        chat(r1, &fault),
        (200, "b".to_owned()),
        "r1 fails over and learns"
    );
    std::thread::sleep(std::time::Duration::from_millis(100));
    let before = cluster.a.stats().requests;
    for r in [r2, r3] {
        for _ in 0..10 {
            assert_eq!(chat(r, &[]), (200, "b".to_owned()), "{r} keeps off a");
        }
    }
    assert_eq!(
        cluster.a.stats().requests,
        before,
        "a saw none of the twenty"
    );
    let (_, status) = http(r2, "GET", "/status", &[], "");
    let status: Value = serde_json::from_str(&status).unwrap();
    let cooling = &status["cluster"]["cooldowns"][0];
    assert_eq!(cooling["upstream"], "a", "{status}");
    assert_eq!(cooling["reason"], "rate_limited");
    assert!(cooling["remaining_s"].as_f64().unwrap() <= 30.0);
    let (_, metrics) = http(r3, "GET", "/metrics", &[], "");
    assert!(
        metrics.contains("hourglass_cooldowns_shared_total{direction=\"heard\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("hourglass_redis_up 1"), "{metrics}");
}

#[test]
fn redis_stopped_under_load_fails_no_call_and_sharing_resumes_when_it_returns() {
    let cluster = Cluster::start("cluster-redis-away");
    let replicas: Vec<Serve> = ["r1", "r2", "r3"]
        .iter()
        .map(|name| cluster.replica(name, "a:sim-instant\", \"b"))
        .collect();
    let addrs: Vec<String> = replicas.iter().map(|r| r.addr.clone()).collect();
    wait_until("every replica is ready with both stores", 30, || {
        addrs.iter().all(|r| ready(r))
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = std::thread::spawn({
        let (addrs, stop) = (addrs.clone(), stop.clone());
        move || {
            let mut failed = Vec::new();
            let mut calls = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for addr in &addrs {
                    let (status, _) = chat(addr, &[]);
                    calls += 1;
                    if status != 200 {
                        failed.push(status);
                    }
                }
            }
            (calls, failed)
        }
    });
    std::thread::sleep(std::time::Duration::from_secs(1));
    cluster.redis.stop();
    wait_until("a replica sees Redis gone", 10, || {
        http(&addrs[0], "GET", "/metrics", &[], "")
            .1
            .contains("hourglass_redis_up 0")
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    cluster.redis.resume();
    std::thread::sleep(std::time::Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (calls, failed) = load.join().unwrap();
    assert!(calls > 100, "{calls} calls");
    assert!(
        failed.is_empty(),
        "{} of {calls} calls failed: {failed:?}",
        failed.len()
    );
    // Sharing resumes: a cool-down learned by r3 now reaches r1.
    wait_until("every replica has its subscription back", 30, || {
        addrs.iter().all(|r| {
            let (_, status) = http(r, "GET", "/status", &[], "");
            status.contains("\"up\":true")
        })
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let fault = [("x-sim-fault", "rate_limit;retry_after=30;upstream=a")];
    assert_eq!(chat(&addrs[2], &fault).0, 200);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let before = cluster.a.stats().requests;
    for _ in 0..5 {
        assert_eq!(chat(&addrs[0], &[]), (200, "b".to_owned()));
    }
    assert_eq!(cluster.a.stats().requests, before);
}

#[test]
fn client_limits_count_every_replicas_calls() {
    let mut cluster = Cluster::start("cluster-limits");
    cluster.extra = "\n[client_limits]\nrequests_per_minute = 10\n".to_owned();
    let replicas: Vec<Serve> = ["r1", "r2", "r3"]
        .iter()
        .map(|name| cluster.replica(name, "a"))
        .collect();
    let [r1, r2, r3] = [&replicas[0].addr, &replicas[1].addr, &replicas[2].addr];
    wait_until("every replica is ready with both stores", 30, || {
        [r1, r2, r3].iter().all(|r| ready(r))
    });
    let key = [("authorization", "Bearer client-one")];
    // One call on each replica, then seven more on r1: ten in all.
    for r in [r1, r2, r3] {
        assert_eq!(chat(r, &key).0, 200);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    for _ in 0..7 {
        assert_eq!(chat(r1, &key).0, 200);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    // r2 and r3 each admitted one call themselves, and refuse the eleventh.
    for r in [r2, r3] {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let answer = exchange(r, "POST", "/v1/chat/completions", &key, body).unwrap();
        assert_eq!(answer.status, 429, "{}", answer.body);
        assert!(
            answer.body.contains("client_rate_limited"),
            "{}",
            answer.body
        );
        assert_eq!(
            answer.header("x-hourglass-limit"),
            Some("requests_per_minute")
        );
        assert!(answer.header("retry-after").is_some());
    }
    // Another key is counted apart.
    assert_eq!(chat(r2, &[("authorization", "Bearer client-two")]).0, 200);
}
