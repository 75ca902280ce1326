//! Background calls end to end over loopback, against simulated upstreams and a real job store:
//! `Prefer: respond-async` jobs (202, Location, the exact synchronous body later, events
//! resumable with Last-Event-ID, cancel), OpenAI's background Responses (queued at once, the
//! job's own id, resumable streams), ownership by key, the queue's limit, the job's deadline,
//! and response ids the gateway did not make sent to the upstream that made them.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// Model `m` (instant answers) on `a` then `b`, and `slow` whose upstream never answers unless
/// a test says otherwise.
const MODELS: &str = r#"
[models.m]
targets = ["a:sim-instant", "b:sim-instant"]
timeouts = { first_byte = "1s", first_token = "1s", total = "20s" }
retry = { max_attempts = 2, backoff_base = "50ms", backoff_max = "100ms" }

[models.brief]
targets = ["a:sim-instant"]
timeouts = { first_byte = "5s", first_token = "5s", idle = "5s", total = "1s" }

[models.short]
targets = ["a:sim-instant"]
timeouts = { first_byte = "10s", first_token = "10s", total = "20s", job = "1s" }
"#;

/// Polls `path` until it stops answering 202, for at most `limit`.
async fn settle(gateway: &Running, path: &str, headers: &[(&str, &str)], limit: Duration) -> Reply {
    let start = tokio::time::Instant::now();
    loop {
        let reply = send(gateway.addr, "GET", path, headers, "").await;
        if reply.status != 202 || start.elapsed() > limit {
            return reply;
        }
        tokio::time::sleep(ms(50)).await;
    }
}

/// Polls a background response until its status is terminal.
async fn settle_response(gateway: &Running, id: &str, headers: &[(&str, &str)]) -> Value {
    let start = tokio::time::Instant::now();
    loop {
        let reply = send(
            gateway.addr,
            "GET",
            &format!("/v1/responses/{id}"),
            headers,
            "",
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let response = reply.json();
        let status = response["status"].as_str().unwrap_or_default().to_owned();
        if !matches!(status.as_str(), "queued" | "in_progress")
            || start.elapsed() > Duration::from_secs(20)
        {
            return response;
        }
        tokio::time::sleep(ms(50)).await;
    }
}

fn without(mut value: Value, keys: &[&str]) -> Value {
    for key in keys {
        value.as_object_mut().unwrap().remove(*key);
    }
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_answers_202_at_once_and_later_the_body_the_synchronous_call_returns() {
    let gateway = start_jobs(MODELS, 0.01).await;
    let seed = [("x-sim-seed", "41")];
    let submitted = chat(
        gateway.addr,
        "m",
        false,
        &[("prefer", "respond-async"), ("x-sim-seed", "41")],
    )
    .await;
    assert_eq!(submitted.status, 202, "{}", submitted.body);
    assert_eq!(
        submitted.header("preference-applied"),
        Some("respond-async")
    );
    assert_eq!(submitted.header("retry-after"), Some("1"));
    let job = submitted.json();
    assert_eq!(job["object"], "hourglass.job");
    assert_eq!(job["status"], "queued");
    let location = submitted.header("location").unwrap().to_owned();
    assert_eq!(
        location,
        format!("/v1/hourglass/jobs/{}", job["id"].as_str().unwrap())
    );

    let done = settle(&gateway, &location, &[], Duration::from_secs(10)).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.header("x-hourglass-job-status"), Some("completed"));
    assert_eq!(done.header("content-type"), Some("application/json"));
    let synchronous = chat(gateway.addr, "m", false, &seed).await;
    assert_eq!(
        without(done.json(), &["created"]),
        without(synchronous.json(), &["created"]),
        "the job's answer is the synchronous call's"
    );
    // Its events: the whole answer as one event.
    let events = send(gateway.addr, "GET", &format!("{location}/events"), &[], "").await;
    assert!(events.body.starts_with("id: 0\ndata: {"), "{}", events.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_jobs_events_resume_after_last_event_id_with_no_gap_and_no_repeat() {
    let gateway = start_jobs(MODELS, 0.01).await;
    // Sixteen tokens at 20 a second: the follower reads them live, as they are stored.
    let headers = [
        ("prefer", "respond-async"),
        ("x-sim-seed", "7"),
        ("x-sim-fault", "slow;tokens_per_s=20"),
    ];
    let submitted = chat(gateway.addr, "m", true, &headers).await;
    assert_eq!(submitted.status, 202);
    let location = submitted.header("location").unwrap().to_owned();
    let live = send(gateway.addr, "GET", &format!("{location}/events"), &[], "").await;
    assert_eq!(
        live.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    let events: Vec<&str> = live.body.split_inclusive("\n\n").collect();
    assert!(events.len() > 10, "{}", live.body);
    assert!(events.last().unwrap().contains("[DONE]"), "{}", live.body);
    for (n, event) in events.iter().enumerate() {
        assert!(
            event.starts_with(&format!("id: {n}\n")),
            "event {n}: {event}"
        );
    }
    // A client that had the first five asks for the rest.
    let rest = send(
        gateway.addr,
        "GET",
        &format!("{location}/events"),
        &[("last-event-id", "4")],
        "",
    )
    .await;
    assert_eq!(format!("{}{}", events[..5].concat(), rest.body), live.body);
    // The finished job's body is the stream the synchronous call sends (without ids).
    let done = send(gateway.addr, "GET", &location, &[], "").await;
    assert_eq!(
        done.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    let synchronous = chat(gateway.addr, "m", true, &[("x-sim-seed", "7")]).await;
    assert_eq!(stream_text(&done.body), stream_text(&synchronous.body));
    assert!(!stream_text(&done.body).is_empty());

    let bad = send(
        gateway.addr,
        "GET",
        &format!("{location}/events"),
        &[("last-event-id", "four")],
        "",
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_key_gets_404_and_never_the_answer() {
    let extra = format!("[server]\nclient_keys_env = \"HOURGLASS_TEST_CLIENT_KEYS\"\n{MODELS}");
    let gateway = start_jobs(&extra, 0.01).await;
    let first = [
        ("authorization", "Bearer ck-first-1a2b"),
        ("prefer", "respond-async"),
    ];
    let submitted = chat(gateway.addr, "m", false, &first).await;
    assert_eq!(submitted.status, 202, "{}", submitted.body);
    let location = submitted.header("location").unwrap().to_owned();
    let second = [("authorization", "Bearer ck-second-3c4d")];
    for method in ["GET", "DELETE"] {
        let other = send(gateway.addr, method, &location, &second, "").await;
        assert_eq!(other.status, 404, "{method}: {}", other.body);
        assert_eq!(other.json()["error"]["code"], "job_not_found");
    }
    let none = send(gateway.addr, "GET", &location, &[], "").await;
    assert_eq!(none.status, 401, "no key at all: {}", none.body);
    let own = settle(&gateway, &location, &first[..1], Duration::from_secs(10)).await;
    assert_eq!(own.status, 200, "{}", own.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_refused_with_429_and_a_cancel_stops_the_upstream_call() {
    let extra = format!("[jobs]\nmax_queued = 1\nmax_running = 1\n{MODELS}");
    let gateway = start_jobs(&extra, 0.01).await;
    let hang = [("prefer", "respond-async"), ("x-sim-fault", "hang")];
    let running = chat(gateway.addr, "short", false, &hang).await;
    assert_eq!(running.status, 202);
    // The runner takes the first; the second waits in the queue; the third finds it full.
    tokio::time::sleep(ms(200)).await;
    let queued = chat(gateway.addr, "short", false, &hang).await;
    assert_eq!(queued.status, 202);
    let refused = chat(gateway.addr, "short", false, &hang).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.json()["error"]["code"], "too_many_jobs");
    assert!(refused.header("retry-after").is_some());

    let location = running.header("location").unwrap().to_owned();
    let cancelled = send(gateway.addr, "DELETE", &location, &[], "").await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(cancelled.json()["status"], "cancelled");
    let again = send(gateway.addr, "DELETE", &location, &[], "").await;
    assert_eq!(
        again.json()["status"],
        "cancelled",
        "a second cancel changes nothing"
    );
    let answer = send(gateway.addr, "GET", &location, &[], "").await;
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert_eq!(answer.json()["error"]["code"], "job_cancelled");
    assert_eq!(answer.header("x-hourglass-job-status"), Some("cancelled"));
    // The queued one now runs (and hangs until its 1 s job deadline): a queue slot is free.
    let next = queued.header("location").unwrap().to_owned();
    let ended = settle(&gateway, &next, &[], Duration::from_secs(10)).await;
    assert_eq!(ended.status, 504, "{}", ended.body);
    let error = &ended.json()["error"];
    assert_eq!(error["code"], "deadline_exceeded", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("timeouts.job"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_response_is_queued_at_once_and_completed_under_its_own_id() {
    let gateway = start_jobs(MODELS, 0.01).await;
    let body = r#"{"model":"m","input":"hi","background":true,"metadata":{"k":"v"}}"#;
    let created = send(gateway.addr, "POST", "/v1/responses", &[], body).await;
    assert_eq!(created.status, 200, "{}", created.body);
    let response = created.json();
    assert_eq!(response["object"], "response");
    assert_eq!(response["status"], "queued");
    assert_eq!(response["background"], true);
    assert_eq!(response["metadata"]["k"], "v", "request fields are echoed");
    let id = response["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("resp_hg"), "{id}");

    let done = settle_response(&gateway, &id, &[]).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["id"],
        id.as_str(),
        "the upstream's id became the job's"
    );
    assert!(
        !done["output"][0]["content"][0]["text"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    // The upstream never saw `background`: it answered as to any call.
    let cancelled = send(
        gateway.addr,
        "POST",
        &format!("/v1/responses/{id}/cancel"),
        &[],
        "",
    )
    .await;
    assert_eq!(
        cancelled.json()["status"],
        "completed",
        "cancelling a finished response changes nothing"
    );
    let streamed = send(
        gateway.addr,
        "GET",
        &format!("/v1/responses/{id}?stream=true"),
        &[],
        "",
    )
    .await;
    assert_eq!(
        streamed.status, 400,
        "it was not created with stream: {}",
        streamed.body
    );
    let deleted = send(
        gateway.addr,
        "DELETE",
        &format!("/v1/responses/{id}"),
        &[],
        "",
    )
    .await;
    assert_eq!(deleted.json()["deleted"], true);
    let gone = send(gateway.addr, "GET", &format!("/v1/responses/{id}"), &[], "").await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.json()["error"]["code"], "job_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_its_background_stream_does_not_cancel_it() {
    let gateway = start_jobs(MODELS, 0.01).await;
    let body = r#"{"model":"m","input":"hi","background":true,"stream":true}"#;
    // Read the head and the first event, then close the connection.
    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let request = format!(
        "POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-sim-fault: slow;tokens_per_s=20\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    while !text.contains("\r\n\r\n") {
        let mut chunk = vec![0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "{text}");
        text.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    let id = text
        .lines()
        .find_map(|line| line.strip_prefix("x-hourglass-job: "))
        .unwrap_or_else(|| panic!("{text}"))
        .trim()
        .to_owned();
    drop(stream);
    let done = settle_response(&gateway, &id, &[]).await;
    assert_eq!(done["status"], "completed", "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_the_gateway_did_not_make_go_to_the_upstream_that_made_them() {
    let gateway = start_jobs(MODELS, 0.01).await;
    // `a` fails, so `b` makes the response.
    let fault = [("x-sim-fault", "status;code=503;upstream=a")];
    let body = r#"{"model":"m","input":"hi"}"#;
    let made = send(gateway.addr, "POST", "/v1/responses", &fault, body).await;
    assert_eq!(made.status, 200, "{}", made.body);
    assert_eq!(made.header("x-hourglass-upstream"), Some("b"));
    let upstream_id = made.json()["id"].as_str().unwrap().to_owned();
    // The record is written in the background: give it a moment.
    tokio::time::sleep(ms(300)).await;
    let (a, b) = (gateway.requests("a"), gateway.requests("b"));
    // The simulator stores nothing (404), but the request reached `b`, and only `b`.
    let read = send(
        gateway.addr,
        "GET",
        &format!("/v1/responses/{upstream_id}"),
        &[],
        "",
    )
    .await;
    let attempts = &read.json()["error"]["hourglass"]["attempts"];
    assert_eq!(attempts[0]["upstream"], "b", "{}", read.body);
    assert_eq!((gateway.requests("a"), gateway.requests("b")), (a, b + 1));

    // A background response, continued by a later call: it goes to the upstream that answered,
    // under that upstream's own id.
    let background = r#"{"model":"m","input":"hi","background":true}"#;
    let created = send(gateway.addr, "POST", "/v1/responses", &fault, background).await;
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let done = settle_response(&gateway, &id, &[]).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (a, b) = (gateway.requests("a"), gateway.requests("b"));
    let next = format!(r#"{{"model":"m","input":"and then?","previous_response_id":"{id}"}}"#);
    let continued = send(gateway.addr, "POST", "/v1/responses", &[], next).await;
    assert_eq!(continued.status, 200, "{}", continued.body);
    assert_eq!(continued.header("x-hourglass-upstream"), Some("b"));
    assert_eq!((gateway.requests("a"), gateway.requests("b")), (a, b + 1));

    // A continuation that is itself a background call: both asked of one call, both done — it
    // is stored and answered later, and made by the upstream that made what it continues.
    let (a, b) = (gateway.requests("a"), gateway.requests("b"));
    let next = format!(
        r#"{{"model":"m","input":"and then?","previous_response_id":"{id}","background":true}}"#
    );
    let queued = send(gateway.addr, "POST", "/v1/responses", &[], next).await;
    assert_eq!(queued.status, 200, "{}", queued.body);
    let later = queued.json()["id"].as_str().unwrap().to_owned();
    assert!(later.starts_with("resp_hg"), "{}", queued.body);
    assert_ne!(later, id);
    let done = settle_response(&gateway, &later, &[]).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!((gateway.requests("a"), gateway.requests("b")), (a, b + 1));
}

/// A webhook receiver: records every request (headers and body) and answers 204.
async fn receive_webhooks(
    listener: tokio::net::TcpListener,
    got: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let got = got.clone();
        tokio::spawn(async move {
            let mut data = Vec::new();
            let mut chunk = [0u8; 8192];
            let (head, body) = loop {
                let n = socket.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                data.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&data).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        break (head.to_owned(), body[..length].to_owned());
                    }
                }
            };
            let headers: serde_json::Map<String, Value> = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), Value::from(v.trim())))
                .collect();
            got.lock()
                .unwrap()
                .push(serde_json::json!({"headers": headers, "body": body}));
            let _ = socket
                .write_all(
                    b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_reach_a_receiver_that_was_down_and_the_python_sdk_verifies_them() {
    // A port bound but not listening: connections to it are refused (the receiver is down),
    // and no other test is given it meanwhile. A port bound and let go was, once, in CI: the
    // receiver could not bind it back (`AddrInUse`).
    let held = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    held.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let port = held.local_addr().unwrap().as_socket().unwrap().port();
    let extra = format!(
        "[jobs.webhooks.test]\nurl = \"http://127.0.0.1:{port}/hook?token=t\"\nsecret_env = \"HOURGLASS_TEST_WEBHOOK_SECRET\"\n{MODELS}"
    );
    let gateway = start_jobs(&extra, 0.01).await;
    // A background response that completes, and a job that is cancelled.
    let created = send(
        gateway.addr,
        "POST",
        "/v1/responses",
        &[],
        r#"{"model":"m","input":"hi","background":true}"#,
    )
    .await;
    let response_id = created.json()["id"].as_str().unwrap().to_owned();
    let hanging = chat(
        gateway.addr,
        "m",
        false,
        &[("prefer", "respond-async"), ("x-sim-fault", "hang")],
    )
    .await;
    let location = hanging.header("location").unwrap().to_owned();
    let job_id = location.rsplit('/').next().unwrap().to_owned();
    tokio::time::sleep(ms(100)).await;
    assert_eq!(
        send(gateway.addr, "DELETE", &location, &[], "")
            .await
            .status,
        200
    );
    assert_eq!(
        settle_response(&gateway, &response_id, &[]).await["status"],
        "completed"
    );
    // The receiver is down for a while: the first tries fail.
    tokio::time::sleep(ms(2500)).await;
    let status = send(gateway.addr, "GET", "/status", &[], "").await.json();
    assert!(
        status["jobs"]["webhook_failures"].as_u64().unwrap() >= 2,
        "{}",
        status["jobs"]
    );
    assert_eq!(status["jobs"]["webhooks_delivered"], 0);

    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    held.listen(128).unwrap();
    held.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(held.into()).unwrap();
    tokio::spawn(receive_webhooks(listener, got.clone()));
    let start = tokio::time::Instant::now();
    while got.lock().unwrap().len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "deliveries: {:?}",
            got.lock().unwrap()
        );
        tokio::time::sleep(ms(100)).await;
    }
    tokio::time::sleep(ms(300)).await;
    let deliveries = got.lock().unwrap().clone();
    assert_eq!(
        deliveries.len(),
        2,
        "one delivery per end, no repeats: {deliveries:?}"
    );
    for delivery in &deliveries {
        let headers = &delivery["headers"];
        assert!(
            headers["webhook-signature"]
                .as_str()
                .unwrap()
                .starts_with("v1,")
        );
        assert_eq!(headers["content-type"], "application/json");
    }

    let file = gateway.data_dir.as_ref().unwrap().join("deliveries.json");
    std::fs::write(&file, serde_json::to_vec(&deliveries).unwrap()).unwrap();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::sdk::python())
            .arg(
                std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../../tests/sdk/python/verify_webhooks.py"),
            )
            .arg(&file)
            .arg(WEBHOOK_SECRET)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("webhooks: 2 verified"), "{stdout}");
    assert!(
        stdout.contains(&format!("response.completed {response_id}")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("job.cancelled {job_id}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("tampered: InvalidWebhookSignatureError"),
        "{stdout}"
    );
}

fn doc(name: &str) -> String {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The headers, the job object's fields, the statuses and the metrics a user sees of jobs are
/// the ones docs/jobs.md and docs/metrics.md describe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_jobs_show_a_user_is_documented() {
    let gateway = start_jobs(MODELS, 0.01).await;
    let (jobs_doc, metrics_doc) = (doc("jobs.md"), doc("metrics.md"));
    let submitted = chat(gateway.addr, "m", false, &[("prefer", "respond-async")]).await;
    let location = submitted.header("location").unwrap().to_owned();
    let done = settle(&gateway, &location, &[], Duration::from_secs(10)).await;
    for (reply, names) in [
        (
            &submitted,
            &["location", "preference-applied", "retry-after"][..],
        ),
        (&done, &["x-hourglass-job", "x-hourglass-job-status"][..]),
    ] {
        for name in names {
            assert!(reply.header(name).is_some(), "{name} was not sent");
            let shown = name
                .split('-')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join("-");
            assert!(
                jobs_doc.contains(&format!("`{name}")) || jobs_doc.contains(&format!("`{shown}")),
                "header {name} is not in docs/jobs.md"
            );
        }
    }
    for field in submitted.json().as_object().unwrap().keys() {
        assert!(
            jobs_doc.contains(&format!("\"{field}\"")),
            "job field {field} is not in docs/jobs.md"
        );
    }
    for state in [
        "queued",
        "in_progress",
        "completed",
        "failed",
        "cancelled",
        "incomplete",
    ] {
        assert!(jobs_doc.contains(&format!("`{state}`")), "state {state}");
    }
    let metrics = send(gateway.addr, "GET", "/metrics", &[], "").await.body;
    let names: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .filter(|n| n.starts_with("hourglass_jobs") || n.starts_with("hourglass_webhook"))
        .collect();
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        assert!(
            metrics_doc.contains(&format!("`{name}`")),
            "{name} is not in docs/metrics.md"
        );
        assert!(
            jobs_doc.contains(&format!("`{name}")),
            "{name} is not in docs/jobs.md"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_names_its_own_webhook_only_under_an_allowed_prefix() {
    let closed = start_jobs(MODELS, 0.01).await;
    let hook = [
        ("prefer", "respond-async"),
        ("x-hourglass-webhook", "http://127.0.0.1:9/hook"),
    ];
    let refused = chat(closed.addr, "m", false, &hook).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("jobs.webhook_urls")
    );

    let extra = format!(
        "[jobs]\nwebhook_secret_env = \"HOURGLASS_TEST_WEBHOOK_SECRET\"\nwebhook_urls = [\"http://127.0.0.1:9/\"]\n{MODELS}"
    );
    let open = start_jobs(&extra, 0.01).await;
    assert_eq!(chat(open.addr, "m", false, &hook).await.status, 202);
    let elsewhere = [
        ("prefer", "respond-async"),
        ("x-hourglass-webhook", "http://10.0.0.1/hook"),
    ];
    let outside = chat(open.addr, "m", false, &elsewhere).await;
    assert_eq!(outside.status, 400, "{}", outside.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_are_deleted_after_their_retention() {
    let extra = format!("[jobs]\nretention = \"1s\"\n{MODELS}");
    let gateway = start_jobs(&extra, 0.01).await;
    let submitted = chat(gateway.addr, "m", false, &[("prefer", "respond-async")]).await;
    let location = submitted.header("location").unwrap().to_owned();
    assert_eq!(
        settle(&gateway, &location, &[], Duration::from_secs(10))
            .await
            .status,
        200
    );
    // The sweep runs every quarter of the retention (at least every second).
    let start = tokio::time::Instant::now();
    loop {
        let reply = send(gateway.addr, "GET", &location, &[], "").await;
        if reply.status == 404 {
            assert_eq!(reply.json()["error"]["code"], "job_not_found");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still kept: {}",
            reply.status
        );
        tokio::time::sleep(ms(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_open_refuses_jobs_and_leaves_synchronous_calls_alone() {
    // The data directory is a file: nothing can be created in it.
    let file = std::env::temp_dir().join(format!("hourglass-not-a-dir-{}", fastrand::u64(..)));
    std::fs::write(&file, b"not a directory").unwrap();
    let gateway = start_jobs_in(MODELS, file.clone()).await;
    let refused = chat(gateway.addr, "m", false, &[("prefer", "respond-async")]).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.json()["error"]["code"], "jobs_unavailable");
    assert_eq!(chat(gateway.addr, "m", false, &[]).await.status, 200);
    std::fs::remove_file(file).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_responses_other_reads_go_to_its_upstream_under_the_upstreams_id() {
    let gateway = start_jobs(MODELS, 0.01).await;
    let fault = [("x-sim-fault", "status;code=503;upstream=a")];
    let body = r#"{"model":"m","input":"hi","background":true}"#;
    let created = send(gateway.addr, "POST", "/v1/responses", &fault, body).await;
    let id = created.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        settle_response(&gateway, &id, &[]).await["status"],
        "completed"
    );
    let (a, b) = (gateway.requests("a"), gateway.requests("b"));
    // The simulator keeps no input items (404), but the request reached `b`, under its own id.
    let items = send(
        gateway.addr,
        "GET",
        &format!("/v1/responses/{id}/input_items"),
        &[],
        "",
    )
    .await;
    let error = items.json()["error"].clone();
    assert_eq!(
        error["hourglass"]["attempts"][0]["upstream"], "b",
        "{error}"
    );
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("/v1/responses/resp_sim") && !message.contains(&id),
        "{message}"
    );
    assert_eq!((gateway.requests("a"), gateway.requests("b")), (a, b + 1));
}

/// Nobody waits on a job, so `timeouts.job` takes the place of `timeouts.total`: an answer
/// longer than the model's total fails synchronously and completes as a job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_deadline_takes_the_place_of_the_models_total() {
    let gateway = start_jobs(MODELS, 0.01).await;
    // Sixteen tokens at eight a second: two seconds, past the model's one-second total.
    let slow = ("x-sim-fault", "slow;tokens_per_s=8");
    let synchronous = chat(gateway.addr, "brief", false, &[slow]).await;
    assert_eq!(synchronous.status, 504, "{}", synchronous.body);
    assert_eq!(synchronous.json()["error"]["code"], "deadline_exceeded");
    let submitted = chat(
        gateway.addr,
        "brief",
        false,
        &[slow, ("prefer", "respond-async")],
    )
    .await;
    let location = submitted.header("location").unwrap().to_owned();
    let done = settle(&gateway, &location, &[], Duration::from_secs(10)).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("chat.completion"), "{}", done.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orchestrator_endpoints_answer_as_docs_cluster_md_says() {
    let gateway = start_jobs(MODELS, 0.01).await;
    let docs = doc("cluster.md");
    for (path, word) in [
        ("/health", "ok"),
        ("/health/live", "live"),
        ("/health/ready", "ready"),
    ] {
        let reply = send(gateway.addr, "GET", path, &[], "").await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        assert_eq!(reply.json()["status"], word, "{path}");
        assert!(
            docs.contains(&format!("`GET {path}`")),
            "{path} is documented"
        );
        assert!(
            docs.contains(&format!("{{\"status\":\"{word}\"")),
            "{path}'s body is documented"
        );
    }
    // The embedded store counts as reachable before it opens: a single instance is ready.
    let ready = send(gateway.addr, "GET", "/health/ready", &[], "")
        .await
        .json();
    assert_eq!(ready["jobs"]["reachable"], true, "{ready}");
    assert_eq!(ready["why"], "ready");
    assert!(
        docs.contains("{\"status\":\"starting\""),
        "the 503 body is documented"
    );
    let metrics = send(gateway.addr, "GET", "/metrics", &[], "").await.body;
    assert!(metrics.contains("hourglass_jobs_store_up 1"), "{metrics}");
}
