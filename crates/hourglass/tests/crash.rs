//! Background jobs across a `kill -9` of `hourglass serve`: fifty jobs in mixed states —
//! completed, streaming (their answer begun), running without an answer yet, queued — the
//! process killed, and a new one started on the same data directory. Every job must end as
//! docs/jobs.md says, none lost, and the simulators' request counts prove that no job that had
//! completed or begun its answer ran again.

#![allow(clippy::unwrap_used)]
// test helpers may panic on what a test does not expect
// The test's own thread polls a child process between sleeps; no runtime worker is blocked (the
// simulators run on the runtime's worker threads).
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hourglass_testkit::http::http;
use hourglass_testkit::jobs::{running, submit};
use hourglass_testkit::serve::Serve;
use hourglass_testkit::sim;

use serde_json::Value;

fn serve(config: &Path, data_dir: &Path) -> Serve {
    Serve::start(
        env!("CARGO_BIN_EXE_hourglass"),
        config,
        &["--data-dir", data_dir.to_str().unwrap()],
        &[(
            "HOURGLASS_CRASH_WEBHOOK_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )],
    )
}

fn wait_until(what: &str, done: impl FnMut() -> bool) {
    hourglass_testkit::wait_until(what, 60, done);
}

/// Receives webhook deliveries on `listener`: the `webhook-id` of each, answered 204.
fn receive_webhooks(listener: std::net::TcpListener, ids: std::sync::mpsc::Sender<String>) {
    for socket in listener.incoming() {
        let Ok(mut socket) = socket else { return };
        let mut reader = BufReader::new(socket.try_clone().unwrap());
        let (mut id, mut length) = (String::new(), 0usize);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(value) = lower.strip_prefix("webhook-id:") {
                id = value.trim().to_owned();
            }
            if let Some(value) = lower.strip_prefix("content-length:") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        let _ = reader.read_exact(&mut body);
        let text = String::from_utf8_lossy(&body).into_owned();
        let _ = ids.send(format!("{id} {}", text_type(&text)));
        let _ = socket.write_all(
            b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
    }
}

fn text_type(body: &str) -> String {
    let event: Value = serde_json::from_str(body).unwrap_or_default();
    event["type"].as_str().unwrap_or_default().to_owned()
}

fn config(dir: &Path, a: &str, b: &str, target: &str, hook: u16) -> PathBuf {
    let path = dir.join(format!("hourglass-{target}.toml"));
    let text = format!(
        r#"
[jobs]
max_running = 30

[jobs.webhooks.receiver]
url = "http://127.0.0.1:{hook}/hook"
secret_env = "HOURGLASS_CRASH_WEBHOOK_SECRET"

# The simulators count every request: no health checks among them.
[health_check]
mode = "off"

[upstreams.a]
base_url = "{a}"

[upstreams.b]
base_url = "{b}"

[models.m]
targets = ["{target}:sim-instant"]
timeouts = {{ first_byte = "300s", first_token = "300s", idle = "300s", attempt = "600s", total = "900s" }}
retry = {{ max_attempts = 1 }}
"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn after_kill_9_every_job_ends_as_the_rules_say_and_nothing_completed_runs_twice() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (a, b) = (sim(&runtime, "a"), sim(&runtime, "b"));
    let dir = std::env::temp_dir().join(format!("hourglass-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    // The webhook receiver is down until after the crash.
    let hook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_port = hook.local_addr().unwrap().port();
    drop(hook);
    let before = config(&dir, &a.base_url(), &b.base_url(), "a", hook_port);

    let first = serve(&before, &data);
    let addr = first.addr.clone();
    // 10 jobs that complete before the crash.
    let completed: Vec<String> = (0..10).map(|_| submit(&addr, false, None)).collect();
    wait_until("the first ten completed", || {
        completed.iter().all(|id| running(&addr, id).is_none())
    });
    let answers: Vec<String> = completed
        .iter()
        .map(|id| http(&addr, "GET", &format!("/v1/hourglass/jobs/{id}"), &[], "").1)
        .collect();
    // 20 streams whose answer has begun: a token a second, sixteen of them.
    let slow = "slow;tokens_per_s=1;upstream=a";
    let begun: Vec<String> = (0..20).map(|_| submit(&addr, true, Some(slow))).collect();
    // 10 whole answers still waiting for their first token (nothing of them is stored).
    let late = "first_token;after=300s;upstream=a";
    let waiting: Vec<String> = (0..10).map(|_| submit(&addr, false, Some(late))).collect();
    // 10 more wait in the queue: 30 run at once.
    let queued: Vec<String> = (0..10).map(|_| submit(&addr, false, None)).collect();
    wait_until("every stream has stored part of its answer", || {
        begun.iter().all(|id| {
            running(&addr, id).is_some_and(|job| job["events"].as_u64().unwrap_or(0) >= 2)
        })
    });
    for id in &waiting {
        assert_eq!(running(&addr, id).unwrap()["status"], "in_progress");
    }
    for id in &queued {
        assert_eq!(running(&addr, id).unwrap()["status"], "queued");
    }
    let seen_by_a = a.stats().requests;
    assert_eq!(seen_by_a, 10 + 20 + 10);

    // kill -9, and a new process on the same data directory; the model now goes to `b`.
    drop(first);
    let after = config(&dir, &a.base_url(), &b.base_url(), "b", hook_port);
    let second = serve(&after, &data);
    let (ids, delivered) = std::sync::mpsc::channel();
    let listener = std::net::TcpListener::bind(("127.0.0.1", hook_port)).unwrap();
    std::thread::spawn(move || receive_webhooks(listener, ids));
    let addr = second.addr.clone();
    let all: Vec<&String> = completed
        .iter()
        .chain(&begun)
        .chain(&waiting)
        .chain(&queued)
        .collect();
    assert_eq!(all.len(), 50);
    wait_until("every job has ended", || {
        all.iter().all(|id| running(&addr, id).is_none())
    });
    let job = |id: &str| {
        let (status, body) = http(&addr, "GET", &format!("/v1/hourglass/jobs/{id}"), &[], "");
        (status, body)
    };
    for (id, answer) in completed.iter().zip(&answers) {
        assert_eq!(
            &job(id),
            &(200, answer.clone()),
            "a completed job is kept as it was"
        );
    }
    for id in &begun {
        let (status, body) = job(id);
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("gateway_restarted"), "{body}");
        // Its events end with the error: never a silently spliced answer.
        let (_, events) = http(
            &addr,
            "GET",
            &format!("/v1/hourglass/jobs/{id}/events"),
            &[],
            "",
        );
        let last = events.trim_end().rsplit("\n\n").next().unwrap();
        assert!(last.contains("gateway_restarted"), "{events}");
        assert!(!events.contains("[DONE]"), "{events}");
    }
    for id in waiting.iter().chain(&queued) {
        let (status, body) = job(id);
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("chat.completion"), "{body}");
    }
    let (_, metrics) = http(&addr, "GET", "/metrics", &[], "");
    assert!(
        metrics.contains("hourglass_jobs_rerun_total 10"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hourglass_jobs_restarted_total 20"),
        "{metrics}"
    );
    // Exactly the ten that had not begun and the ten queued ran after the restart; nothing ran
    // on `a` again.
    assert_eq!(b.stats().requests, 20, "requests after the restart");
    assert_eq!(a.stats().requests, seen_by_a);
    // Every end was announced once, those of the ten completed before the crash included (their
    // deliveries were pending in the store when the process was killed).
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..50 {
        let got = delivered
            .recv_timeout(Duration::from_secs(60))
            .expect("every delivery");
        let (id, kind) = got.split_once(' ').unwrap();
        assert!(ids.insert(id.to_owned()), "{id} was delivered twice");
        *seen.entry(kind.to_owned()).or_default() += 1;
    }
    assert_eq!(seen["job.completed"], 30, "{seen:?}");
    assert_eq!(seen["job.failed"], 20, "{seen:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        delivered.try_recv().is_err(),
        "more than one delivery per job"
    );
    drop(second);
    let _ = std::fs::remove_dir_all(dir);
}
