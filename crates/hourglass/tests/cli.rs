//! The `hourglass` command line: its help, every command started as a user starts it, against
//! `hourglass sim` over loopback.

#![allow(clippy::unwrap_used)] // test helpers may panic on what a test does not expect

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

fn hourglass(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hourglass"))
        .args(args)
        .output()
        .expect("the binary runs")
}

/// A running `hourglass sim`, killed (by its own PID) when dropped.
struct Sim {
    child: Child,
    lines: Vec<String>,
    /// Kept open: the child goes on printing after its banner.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sim(args: &[&str], banner_lines: usize) -> Sim {
    start("sim", args, banner_lines)
}

fn start(command: &str, args: &[&str], banner_lines: usize) -> Sim {
    start_with_env(command, args, &[], banner_lines)
}

fn start_with_env(command: &str, args: &[&str], env: &[(&str, &str)], banner_lines: usize) -> Sim {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hourglass"))
        .arg(command)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary runs");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut lines = Vec::new();
    for _ in 0..banner_lines {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the banner is printed");
        lines.push(line);
    }
    Sim {
        child,
        lines,
        _stdout: stdout,
    }
}

/// The `host:port` of the first `http://…/v1` address in the banner.
fn address(sim: &Sim, line: usize) -> String {
    let text = &sim.lines[line];
    let start = text.find("http://").expect("an address in the banner") + 7;
    let end = text[start..].find("/v1").expect("a base URL") + start;
    text[start..end].to_owned()
}

fn http(addr: &str, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("the server accepts connections");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    // Read to the end, keeping what arrived even if the connection ends in an error.
    let mut response = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buffer[..n]),
            Err(error) => {
                response.extend_from_slice(format!("\n[read error: {error}]").as_bytes());
                break;
            }
        }
    }
    String::from_utf8_lossy(&response).into_owned()
}

fn post(addr: &str, body: &str, fault: Option<&str>) -> String {
    let fault = fault
        .map(|f| format!("x-sim-fault: {f}\r\n"))
        .unwrap_or_default();
    http(
        addr,
        &format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{fault}\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

#[test]
fn help_lists_every_command() {
    let out = hourglass(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for command in [
        "serve", "config", "probe", "diagnose", "explain", "tune", "sim",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "{command} in\n{help}"
        );
    }
}

/// Found by a user: `diagnose` printed the engine's per-call log line, in colour, above its report.
/// A tool's output is its report; `-v` brings the engine's lines back.
#[test]
fn the_tools_print_their_report_and_the_engine_log_only_when_asked() {
    let sim = start_sim(&["--listen", "127.0.0.1:0", "--time-scale", "0.01"], 2);
    let url = format!("http://{}/v1", address(&sim, 0));
    // Whether a probe, verbose or not, under `HOURGLASS_LOG` or none, printed a call line.
    let call_lines = |verbose: bool, filter: Option<&str>| {
        let mut probe = Command::new(env!("CARGO_BIN_EXE_hourglass"));
        probe.args(["probe", &url, "-n", "2"]);
        if verbose {
            probe.arg("-v");
        }
        match filter {
            Some(filter) => probe.env("HOURGLASS_LOG", filter),
            None => probe.env_remove("HOURGLASS_LOG"),
        };
        let output = probe.output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{filter:?}");
        String::from_utf8_lossy(&output.stderr).contains("hourglass::call")
    };
    assert!(!call_lines(false, None));
    assert!(call_lines(true, None));
    // The filter turns the call line off whichever way it is written (straight or by tracing),
    // by its target or by one of its fields; a directive on another field leaves it shown.
    assert!(!call_lines(true, Some("info,hourglass::call=off")));
    assert!(!call_lines(true, Some("info,hourglass::call[{error}]=off")));
    assert!(call_lines(
        true,
        Some("info,hourglass::call[{no_such_field}]=off")
    ));
}

#[test]
fn probe_profiles_a_running_simulator_and_gates_on_the_verdict() {
    let sim = start_sim(&["--listen", "127.0.0.1:0", "--time-scale", "0.01"], 2);
    let url = format!("http://{}/v1", address(&sim, 0));
    let dir = std::env::temp_dir().join(format!("hourglass-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let saved = dir.join("results.json");
    let out = hourglass(&[
        "probe",
        &url,
        "-n",
        "12",
        "-c",
        "3",
        "--stream",
        "--json",
        "--save",
        saved.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let result = &json["results"][0];
    assert_eq!(result["model"], "gpt-4o-mini");
    assert_eq!(result["ok"], 12);
    assert_eq!(result["verdict"], "excellent");
    assert!(result["latency_ms"]["first_token"]["p50"].as_f64().unwrap() > 0.0);
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    assert_eq!(file, json, "--save writes what --json prints");

    // tune reads the saved results; its TOML, behind an upstream table, is a valid configuration.
    let out = hourglass(&[
        "tune",
        "--from",
        saved.to_str().unwrap(),
        "--format",
        "toml",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let toml = String::from_utf8(out.stdout).unwrap();
    assert!(toml.contains("[models.\"gpt-4o-mini\".timeouts]"), "{toml}");
    let config = dir.join("tuned.toml");
    std::fs::write(
        &config,
        format!("[upstreams.sim]\nbase_url = \"{url}\"\n{toml}"),
    )
    .unwrap();
    let out = hourglass(&["config", "check", config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Fed back into the gateway: a normal workload passes with no false timeouts, and a stall
    // mid-stream is cut at the tuned idle (5 s), not the chat prior's 30 s.
    let serve = start(
        "serve",
        &[
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        1,
    );
    let gateway = address(&serve, 0);
    for i in 0..40 {
        let body = if i % 2 == 0 {
            r#"{"model":"gpt-4o-mini","max_tokens":64,"messages":[]}"#
        } else {
            r#"{"model":"gpt-4o-mini","max_tokens":64,"stream":true,"messages":[]}"#
        };
        let answer = post(&gateway, body, None);
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.contains("x-hourglass-attempts: 1"),
            "call {i}: {answer}"
        );
        assert!(!answer.contains("\"error\""), "call {i}: {answer}");
    }
    let start = tokio::time::Instant::now();
    let stalled = post(
        &gateway,
        r#"{"model":"gpt-4o-mini","max_tokens":64,"stream":true,"messages":[]}"#,
        Some("stall;after_chunks=2;for=120s"),
    );
    let took = start.elapsed();
    assert!(stalled.contains("idle_timeout"), "{stalled}");
    assert!(
        took >= Duration::from_millis(4900) && took < Duration::from_secs(8),
        "{took:?}"
    );
    drop(serve);
    let out = hourglass(&[
        "tune",
        "--from",
        saved.to_str().unwrap(),
        "--format",
        "table",
    ]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("p99 first token"), "{table}");
    // A gateway that is not there: said plainly.
    let out = hourglass(&["tune", "--gateway", "http://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8(out.stderr).unwrap();
    assert!(said.contains("cannot connect to 127.0.0.1:1"), "{said}");

    // Every call failing with 503: a poor verdict exits 3 (a deploy gate), shown per status.
    let out = hourglass(&[
        "probe",
        &url,
        "-n",
        "4",
        "-H",
        "x-sim-fault: status;code=503",
        "--csv",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(csv.lines().nth(1).unwrap().contains("http_503:4"), "{csv}");
    assert!(csv.trim_end().ends_with(",poor"), "{csv}");

    let out = hourglass(&["probe", "not a url"]);
    assert_eq!(out.status.code(), Some(1));
    let out = hourglass(&["probe", &url, "-H", "no colon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("Name: value")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn diagnose_walks_the_phases_and_names_the_failing_one() {
    let sim = start_sim(&["--listen", "127.0.0.1:0", "--time-scale", "0.01"], 2);
    let url = format!("http://{}/v1", address(&sim, 0));
    let out = hourglass(&["diagnose", &url, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["verdict"]["phase"], "ok");
    assert!(json["tcp"][0]["connect_ms"].as_f64().is_some());
    assert!(json["call"]["sample"]["first_token_ms"].as_f64().is_some());

    let out = hourglass(&[
        "diagnose",
        &url,
        "-H",
        "x-sim-fault: hang",
        "--timeout",
        "500ms",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("verdict: first_byte (server)"), "{text}");
}

#[test]
fn explain_prints_class_phase_causes_and_fixes() {
    let out = hourglass(&[
        "explain",
        "net/http: timeout awaiting response headers",
        "--model",
        "o3",
        "--elapsed",
        "60s",
        "--json",
    ]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["class"], "first_byte_timeout");
    assert_eq!(json["phase"], "first_byte");
    assert!(
        json["causes"][0]
            .as_str()
            .unwrap()
            .contains("reasoning model")
    );
    assert!(json["fixes"].as_array().unwrap().len() >= 2);
    assert_eq!(json["elapsed_matches"][0]["seconds"], 60);

    let out = hourglass(&["explain", "the weather is nice"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an unrecognised message exits 1"
    );
    let out = hourglass(&["explain", "x", "--elapsed", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("--elapsed"));
}

#[test]
fn explain_reads_a_log_from_stdin_one_object_per_line() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hourglass"))
        .args(["explain", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Error: connect ECONNREFUSED 127.0.0.1:8080\n\nall good\n\xff curl: (52) Empty reply from server\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let classes: Vec<&str> = lines.iter().map(|l| l["class"].as_str().unwrap()).collect();
    assert_eq!(classes, ["conn_refused", "unknown", "peer_closed"]);
    assert_eq!(lines[2]["line"], 4, "line numbers count blank lines");
}

/// A log as applications write it: JSON lines, a Python traceback spanning lines, a Node stack,
/// ordinary lines at quiet levels. `--file` finds the error texts in it and sums them up by class
/// with counts and first/last time seen.
#[test]
fn explain_finds_errors_inside_an_ordinary_log_and_sums_them_up() {
    let dir = std::env::temp_dir().join(format!("hourglass-explain-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("app.log");
    std::fs::write(
        &path,
        r#"2026-11-30 10:00:00,001 INFO served /chat in 812 ms (timeout=60s)
{"timestamp":"2026-11-30T10:00:05Z","level":"error","msg":"call failed","error":"Post \"https://api.openai.com/v1/chat/completions\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"}
2026-11-30 10:01:00,500 ERROR summarise failed
Traceback (most recent call last):
  File "/app/run.py", line 40, in summarise
    for chunk in stream:
  File "/venv/lib/python3.12/site-packages/httpx/_client.py", line 127, in iter_bytes
    for part in self._stream:
httpx.ReadTimeout: The read operation timed out
{"timestamp":"2026-11-30T10:02:00Z","level":"info","msg":"retrying"}
{"timestamp":"2026-11-30T10:03:07Z","level":"error","msg":"Error code: 524 - {'error': {'code': 524, 'type': 'cf_gateway_timeout'}}"}
2026-11-30T10:04:00Z TypeError: fetch failed
    at node:internal/deps/undici/undici:13502:13
    at async postToApi (file:///app/node_modules/@ai-sdk/provider-utils/dist/index.mjs:1:1) {
  [cause]: HeadersTimeoutError: Headers Timeout Error
}
{"timestamp":"2026-11-30T10:09:59Z","level":"error","msg":"Error code: 524 - A timeout occurred"}
"#,
    )
    .unwrap();
    let out = hourglass(&["explain", "--file", path.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    let row = |class: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{class} ")))
            .unwrap_or_else(|| panic!("no {class} row in:\n{text}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<String>>()
    };
    // The two 524s: counted together, first and last time as the log wrote them.
    let middlebox = row("middlebox_timeout");
    assert_eq!(middlebox[1], "2", "{text}");
    assert_eq!(middlebox[3], "2026-11-30T10:03:07Z", "{text}");
    assert_eq!(middlebox[4], "2026-11-30T10:09:59Z", "{text}");
    // The traceback is one record: its exception line, raised while a stream was read.
    let stall = row("idle_stream_stall");
    assert_eq!(stall[1], "1");
    assert_eq!(stall[3], "2026-11-30");
    assert!(
        text.contains("line 4 [2026-11-30 10:01:00,500]: idle_stream_stall"),
        "{text}"
    );
    // Go's client-wide clock, in a JSON log's error field.
    assert_eq!(row("total_deadline")[1], "1");
    // The Node stack and its cause: undici's header timeout.
    assert!(
        text.contains("line 12 [2026-11-30T10:04:00Z]: first_byte_timeout"),
        "{text}"
    );
    // A line that only says something failed is no error text; a time in it is no status.
    assert!(!text.contains("line 3 "), "{text}");
    // Quiet levels are not errors, even when they say "timeout".
    assert!(!text.contains("line 1 "), "{text}");
    assert!(text.starts_with("line 2 "), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `tune --gateway` reads what a gateway measured while serving a few hundred simulated calls
/// (behind its admin key) and prints TOML that `config check` accepts, every value with its rule;
/// a second gateway started from that TOML serves the same traffic with no false timeout.
#[test]
fn tune_reads_a_running_gateway_and_its_toml_runs_a_gateway() {
    let sim = start_sim(&["--listen", "127.0.0.1:0", "--time-scale", "0.05"], 2);
    let upstream = address(&sim, 0);
    let dir = std::env::temp_dir().join(format!("hourglass-tune-gateway-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let upstream_table = format!("[upstreams.sim]\nbase_url = \"http://{upstream}/v1\"\n");
    let first = dir.join("first.toml");
    std::fs::write(
        &first,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_key_env = \"TUNE_TEST_ADMIN\"\n{upstream_table}\
             [models.gpt-4o-mini]\ntargets = [\"sim:gpt-4o-mini\"]\n"
        ),
    )
    .unwrap();
    let key = "admin-key-for-the-tune-test";
    let serve = start_with_env(
        "serve",
        &["--config", first.to_str().unwrap()],
        &[("TUNE_TEST_ADMIN", key)],
        1,
    );
    let gateway = address(&serve, 0);
    let traffic = |gateway: &str, calls: usize| -> Vec<String> {
        let threads: Vec<_> = (0..6)
            .map(|t| {
                let gateway = gateway.to_owned();
                std::thread::spawn(move || {
                    let mut failed = Vec::new();
                    for i in (t..calls).step_by(6) {
                        let body = format!(
                            r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"hi"}}],"max_tokens":24,"stream":{}}}"#,
                            i % 2 == 0
                        );
                        let answer = post(&gateway, &body, None);
                        if !answer.starts_with("HTTP/1.1 200") {
                            failed.push(answer);
                        }
                    }
                    failed
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    };
    let failed = traffic(&gateway, 300);
    assert!(failed.is_empty(), "{failed:?}");

    let tune = |args: &[&str], env: &[(&str, &str)]| {
        Command::new(env!("CARGO_BIN_EXE_hourglass"))
            .arg("tune")
            .args(args)
            .envs(env.iter().copied())
            .env_remove("HOURGLASS_ADMIN_KEY")
            .output()
            .unwrap()
    };
    let url = format!("http://{gateway}");
    // Without the admin key: refused, saying what to do.
    let refused = tune(&["--gateway", &url], &[]);
    assert_eq!(refused.status.code(), Some(1));
    let said = String::from_utf8(refused.stderr).unwrap();
    assert!(said.contains("admin key") && said.contains("401"), "{said}");
    assert!(!said.contains(key));
    // With it: every value has its rule, measured from the gateway's own histograms.
    let with_key = [("TUNE_TEST_ADMIN", key)];
    let table = tune(
        &[
            "--gateway",
            &url,
            "--admin-key-env",
            "TUNE_TEST_ADMIN",
            "--format",
            "table",
        ],
        &with_key,
    );
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.contains("300 calls (300 ok)"), "{table}");
    for key in [
        "timeouts.connect",
        "timeouts.first_token",
        "timeouts.first_byte",
        "timeouts.idle",
    ] {
        let row = table
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("no {key} in:\n{table}"));
        assert!(row.contains("(gateway histogram)"), "{row}");
    }
    let toml = tune(
        &[
            "--gateway",
            &url,
            "--admin-key-env",
            "TUNE_TEST_ADMIN",
            "--format",
            "toml",
        ],
        &with_key,
    );
    assert!(toml.status.success());
    let toml = String::from_utf8(toml.stdout).unwrap();
    assert!(toml.contains(r#"targets = ["sim:gpt-4o-mini"]"#), "{toml}");
    // `config check` accepts it, and a second gateway runs on it.
    let tuned = dir.join("tuned.toml");
    std::fs::write(
        &tuned,
        format!("[server]\nlisten = \"127.0.0.1:0\"\n{upstream_table}{toml}"),
    )
    .unwrap();
    let check = hourglass(&["config", "check", tuned.to_str().unwrap()]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    drop(serve);
    let second = start("serve", &["--config", tuned.to_str().unwrap()], 1);
    let failed = traffic(&address(&second, 0), 120);
    assert!(
        failed.is_empty(),
        "the tuned gateway failed calls: {failed:?}"
    );
    drop(second);
    drop(sim);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_arguments_are_refused_with_the_reason() {
    let out = hourglass(&["sim", "--time-scale", "-1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("--time-scale")
    );
    let out = hourglass(&["sim", "--listen", "nowhere"]);
    assert_eq!(out.status.code(), Some(2));
    let out = hourglass(&["sim", "--listen", "127.0.0.1:0", "--scenario", "x.toml"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--listen and --scenario exclude each other"
    );
}

#[test]
fn a_bad_scenario_exits_1_naming_the_file_and_key() {
    let dir = std::env::temp_dir().join(format!("hourglass-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[[upstream]]\nname = \"east\"\n[[upstream.fault]]\nfault = \"stall;after=3\"\nprobability = 0.1\n").unwrap();
    let out = hourglass(&["sim", "--scenario", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("bad.toml: upstream[0].fault[0].fault: unknown key `after`"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sim_serves_completions_streams_and_faults_by_header() {
    let sim = start_sim(
        &[
            "--listen",
            "127.0.0.1:0",
            "--seed",
            "3",
            "--time-scale",
            "0.01",
        ],
        2,
    );
    assert!(
        sim.lines[1].contains("seed 3, time scale 0.01"),
        "{}",
        sim.lines[1]
    );
    let addr = address(&sim, 0);

    let whole = post(&addr, r#"{"model":"gpt-4o-mini","messages":[]}"#, None);
    assert!(whole.starts_with("HTTP/1.1 200"), "{whole}");
    assert!(whole.contains("\"object\":\"chat.completion\""));

    let stream = post(
        &addr,
        r#"{"model":"gpt-4o-mini","messages":[],"stream":true}"#,
        None,
    );
    assert!(
        stream.contains("text/event-stream") && stream.contains("data: [DONE]"),
        "{stream}"
    );

    let limited = post(
        &addr,
        r#"{"model":"gpt-4o-mini","messages":[]}"#,
        Some("rate_limit;retry_after=3"),
    );
    assert!(
        limited.starts_with("HTTP/1.1 429") && limited.contains("retry-after: 3"),
        "{limited}"
    );
}

#[test]
fn sim_starts_every_upstream_of_a_scenario() {
    let dir = std::env::temp_dir().join(format!("hourglass-cli-scenario-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("two.toml");
    std::fs::write(&path, "[[upstream]]\nname = \"east\"\n[[upstream]]\nname = \"west\"\nmodels = [\"sim-instant\"]\n").unwrap();
    let sim = start_sim(&["--scenario", path.to_str().unwrap()], 3);
    assert!(
        sim.lines[0].contains("`east`") && sim.lines[1].contains("`west`"),
        "{:?}",
        sim.lines
    );
    let west = address(&sim, 1);
    let models = http(
        &west,
        "GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert!(
        models.contains("sim-instant") && !models.contains("gpt-4o-mini"),
        "{models}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn serve_without_configuration_fronts_the_embedded_simulator() {
    let serve = start("serve", &["--listen", "127.0.0.1:0"], 2);
    assert!(
        serve.lines[0].contains("embedded simulator as upstream `sim`"),
        "{:?}",
        serve.lines
    );
    let addr = address(&serve, 1);
    let whole = post(&addr, r#"{"model":"sim-instant","messages":[]}"#, None);
    assert!(whole.starts_with("HTTP/1.1 200"), "{whole}");
    assert!(
        whole.contains("x-hourglass-upstream: sim") && whole.contains("x-hourglass-attempts: 1"),
        "{whole}"
    );
    let failed = post(
        &addr,
        r#"{"model":"sim-instant","messages":[]}"#,
        Some("status;code=503"),
    );
    assert!(
        failed.starts_with("HTTP/1.1 502") && failed.contains("x-should-retry: false"),
        "{failed}"
    );
    assert!(failed.contains("\"code\":\"upstream_status\""), "{failed}");
}

#[test]
fn config_check_prints_every_models_policy_and_where_it_came_from() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/hourglass.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_hourglass"))
        .args(["config", "check", example])
        .env("OPENAI_API_KEY", "sk-cli-test-secret")
        .env("AZURE_OPENAI_API_KEY", "azure-cli-test-secret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("model gpt-4o") && text.contains("models.gpt-4o.timeouts.first_token"),
        "{text}"
    );
    assert!(
        !text.contains("sk-cli-test-secret"),
        "secrets never printed"
    );

    let missing = Command::new(env!("CARGO_BIN_EXE_hourglass"))
        .args(["config", "check", example])
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8(missing.stderr).unwrap();
    assert!(
        stderr.contains("upstreams.openai.api_key_env") && stderr.contains("OPENAI_API_KEY"),
        "{stderr}"
    );
}

#[test]
fn serve_logs_one_json_line_per_call_with_its_request_id_and_never_the_key() {
    let sim = start_sim(&["--listen", "127.0.0.1:0", "--time-scale", "0.01"], 2);
    let upstream = address(&sim, 0);
    let dir = std::env::temp_dir().join(format!("hourglass-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("hourglass.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[upstreams.sim]\nbase_url = \"http://{upstream}/v1\"\napi_key_env = \"HG_TEST_UPSTREAM_KEY\"\n"
        ),
    )
    .unwrap();
    let secret = "sk-test-do-not-leak-91c2";
    let mut child = Command::new(env!("CARGO_BIN_EXE_hourglass"))
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--log-format",
            "json",
        ])
        .env("HG_TEST_UPSTREAM_KEY", secret)
        // Every crate at debug, hyper and rustls included: nothing may print the key.
        .env("HOURGLASS_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    stdout.read_line(&mut banner).unwrap();
    let start = banner.find("http://").unwrap() + 7;
    let gateway = banner[start..start + banner[start..].find("/v1").unwrap()].to_owned();

    let body = r#"{"model":"gpt-4o-mini","messages":[]}"#;
    let answer = http(
        &gateway,
        &format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-request-id: req-logs-1\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(answer.contains("x-request-id: req-logs-1"), "{answer}");
    let failed = post(&gateway, body, Some("status;code=503"));
    assert!(failed.starts_with("HTTP/1.1 502"), "{failed}");
    let metrics = http(
        &gateway,
        "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    let status = http(
        &gateway,
        "GET /status HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    let dashboard = http(
        &gateway,
        "GET /dashboard HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert!(dashboard.contains("<title>hourglass"), "{dashboard}");

    // A graceful stop writes out the log lines still waiting for the log's writer thread.
    stop_gracefully(&child);
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8(out.stderr).unwrap();
    let calls: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "hourglass::call")
        .collect();
    assert_eq!(calls.len(), 2, "{logs}");
    assert!(
        logs.contains(r#""level":"DEBUG""#),
        "debug logs were on: {logs}"
    );
    assert_eq!(calls[0]["request_id"], "req-logs-1");
    assert_eq!(calls[0]["outcome"], "ok");
    assert_eq!(calls[0]["attempts"], "sim:ok@done");
    assert_eq!(calls[0]["endpoint"], "chat");
    assert_eq!(calls[1]["outcome"], "upstream_status");
    let generated = calls[1]["request_id"].as_str().unwrap();
    let groups: Vec<usize> = generated.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "a UUID: {generated}");
    assert_eq!(&generated[14..15], "4", "version 4: {generated}");
    assert!(
        matches!(&generated[19..20], "8" | "9" | "a" | "b"),
        "{generated}"
    );
    assert!(calls[1]["error"].as_str().unwrap().contains("503"));
    for (what, text) in [
        ("logs", &logs),
        ("metrics", &metrics),
        ("status", &status),
        ("dashboard", &dashboard),
        ("answers", &failed),
    ] {
        assert!(
            !text.contains(secret),
            "the upstream key leaked into the {what}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Sends SIGTERM: `serve` stops gracefully, writing out its last log lines.
fn stop_gracefully(child: &std::process::Child) {
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
}

/// Sends SIGHUP to `serve` and waits (up to 2.5 s) until `body` is answered 200.
fn sighup_until_served(serve: &Sim, gateway: &str, body: &str) -> bool {
    let pid = serve.child.id().to_string();
    let sent = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(sent.success());
    (0..50).any(|_| {
        std::thread::park_timeout(Duration::from_millis(50)); // a test thread, not a runtime
        post(gateway, body, None).starts_with("HTTP/1.1 200")
    })
}

#[test]
fn sighup_and_admin_reload_swap_the_configuration_under_load_without_failing_a_call() {
    let sim = start_sim(&["--listen", "127.0.0.1:0", "--time-scale", "0.01"], 2);
    let upstream = address(&sim, 0);
    let dir = std::env::temp_dir().join(format!("hourglass-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("hourglass.toml");
    let base = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[upstreams.sim]\nbase_url = \"http://{upstream}/v1\"\nmodels = [\"gpt-4o-mini\"]\n\
         [models.first]\ntargets = [\"sim:gpt-4o-mini\"]\n"
    );
    std::fs::write(&config, &base).unwrap();
    let serve = start("serve", &["--config", config.to_str().unwrap()], 1);
    let gateway = address(&serve, 0);

    // Load: calls to `first` from two threads for the whole test.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let (stop, done, gateway) = (stop.clone(), done.clone(), gateway.clone());
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let answer = post(&gateway, r#"{"model":"first","messages":[]}"#, None);
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if answer.starts_with("HTTP/1.1 200") {
                        ok += 1;
                    } else {
                        failed.push(answer);
                    }
                }
                (ok, failed)
            })
        })
        .collect();

    // Each reload happens while calls are in flight: wait for the load to be going, each time.
    let wait_for = |calls: usize| {
        while done.load(std::sync::atomic::Ordering::Relaxed) < calls {
            std::thread::park_timeout(Duration::from_millis(5));
        }
    };
    wait_for(20);

    // A new model, by SIGHUP.
    let second = r#"{"model":"second","messages":[]}"#;
    assert!(post(&gateway, second, None).starts_with("HTTP/1.1 404"));
    std::fs::write(
        &config,
        format!("{base}[models.second]\ntargets = [\"sim:gpt-4o-mini\"]\n"),
    )
    .unwrap();
    assert!(
        sighup_until_served(&serve, &gateway, second),
        "SIGHUP did not bring `second` in"
    );

    let before = done.load(std::sync::atomic::Ordering::Relaxed);
    wait_for(before + 20);

    // A bad file, by the admin endpoint: refused with the reason, the old configuration serves on.
    std::fs::write(
        &config,
        format!("{base}[models.third]\ntargetz = [\"sim\"]\n"),
    )
    .unwrap();
    let refused = http(
        &gateway,
        "POST /admin/reload HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
    );
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    assert!(
        refused.contains("not reloaded") && refused.contains("targetz"),
        "{refused}"
    );
    assert!(post(&gateway, second, None).starts_with("HTTP/1.1 200"));
    let before = done.load(std::sync::atomic::Ordering::Relaxed);
    wait_for(before + 20);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut calls = 0;
    for thread in load {
        let (ok, failed) = thread.join().unwrap();
        assert!(failed.is_empty(), "calls failed during reloads: {failed:?}");
        calls += ok;
    }
    assert!(
        calls >= 60,
        "the load ran across both reloads: {calls} calls"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Found by an operator revoking a leaked key: after the key file changed and SIGHUP, the
/// removed key still got 200 and the new one 401 — `[server]` was read once at start — while the
/// reload said it succeeded. Keys (client and admin) now reload; the listen address, which needs
/// a restart, is reported as not applied.
#[test]
fn a_reload_revokes_a_client_key_and_reports_what_needs_a_restart() {
    let sim = start_sim(&["--listen", "127.0.0.1:0", "--time-scale", "0.01"], 2);
    let upstream = address(&sim, 0);
    let dir = std::env::temp_dir().join(format!("hourglass-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (keys, admin) = (dir.join("client-keys"), dir.join("admin-key"));
    std::fs::write(&keys, "ck-old-1111\n").unwrap();
    std::fs::write(&admin, "ak-old-2222\n").unwrap();
    let config = dir.join("hourglass.toml");
    let text = |listen: &str, threads: usize| {
        format!(
            "[server]\nlisten = \"{listen}\"\nthreads = {threads}\nclient_keys_file = \"client-keys\"\nadmin_key_file = \"admin-key\"\n\
             [upstreams.sim]\nbase_url = \"http://{upstream}/v1\"\nmodels = [\"gpt-4o-mini\"]\n"
        )
    };
    std::fs::write(&config, text("127.0.0.1:0", 3)).unwrap();
    let serve = start("serve", &["--config", config.to_str().unwrap()], 1);
    let gateway = address(&serve, 0);
    let call = |key: &str| {
        let body = r#"{"model":"gpt-4o-mini","messages":[]}"#;
        http(
            &gateway,
            &format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer {key}\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let reload = |key: &str| {
        http(
            &gateway,
            &format!(
                "POST /admin/reload HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer {key}\r\ncontent-length: 0\r\n\r\n"
            ),
        )
    };
    assert!(call("ck-old-1111").starts_with("HTTP/1.1 200"));
    assert!(call("ck-new-3333").starts_with("HTTP/1.1 401"));
    assert_eq!(serving_threads(&serve, 3), 3, "server.threads = 3");

    // Rotate both keys by replacing the files, then SIGHUP.
    std::fs::write(&keys, "ck-new-3333\n").unwrap();
    std::fs::write(&admin, "ak-new-4444\n").unwrap();
    let pid = serve.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let rotated = (0..50).any(|_| {
        std::thread::park_timeout(Duration::from_millis(50)); // a test thread, not a runtime
        call("ck-new-3333").starts_with("HTTP/1.1 200")
    });
    assert!(rotated, "the new client key was not taken");
    let revoked = call("ck-old-1111");
    assert!(revoked.starts_with("HTTP/1.1 401"), "{revoked}");
    assert!(
        reload("ak-old-2222").starts_with("HTTP/1.1 401"),
        "the old admin key"
    );

    // A new listen address or thread count cannot move a running gateway: the reload says so.
    std::fs::write(&config, text("127.0.0.1:1", 2)).unwrap();
    let answer = reload("ak-new-4444");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("not_applied")
            && answer.contains("server.listen = 127.0.0.1:1 needs a restart")
            && answer.contains(
                "server.threads changed from 3 to 2: that needs a restart; the serving threads stay"
            ),
        "{answer}"
    );
    assert_eq!(serving_threads(&serve, 3), 3, "the threads stay");
    // Reloaded again, they are still not applied: told against what the gateway started with,
    // not against the last reload's file. Back to the running values, nothing is left unapplied.
    let again = reload("ak-new-4444");
    assert!(
        again.contains("server.listen = 127.0.0.1:1 needs a restart")
            && again.contains("server.threads changed from 3 to 2"),
        "{again}"
    );
    std::fs::write(&config, text("127.0.0.1:0", 3)).unwrap();
    let back = reload("ak-new-4444");
    assert!(back.starts_with("HTTP/1.1 200"), "{back}");
    assert!(!back.contains("needs a restart"), "{back}");
    assert!(
        call("ck-new-3333").starts_with("HTTP/1.1 200"),
        "still serving"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// How many serving threads (`hourglass-lane-N`, cut to 15 bytes by the kernel) a process runs,
/// once it runs `expected` or 2 s have passed (a served call only shows the first has started).
fn serving_threads(process: &Sim, expected: usize) -> usize {
    let tasks = format!("/proc/{}/task", process.child.id());
    let count = || {
        std::fs::read_dir(&tasks)
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with("hourglass-lane"))
            .count()
    };
    for _ in 0..40 {
        if count() == expected {
            break;
        }
        std::thread::park_timeout(Duration::from_millis(50)); // a test thread, not a runtime
    }
    count()
}

/// The `x-hourglass-upstream` and `x-hourglass-attempts` of an answer.
fn served_by(answer: &str) -> (String, String) {
    let header = |name: &str| {
        answer
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or("-")
            .trim()
            .to_owned()
    };
    (
        header("x-hourglass-upstream"),
        header("x-hourglass-attempts"),
    )
}

#[test]
fn an_ejected_upstream_stays_ejected_across_a_reload_that_changes_something_else() {
    let sim = start_sim(&["--listen", "127.0.0.1:0", "--time-scale", "0.01"], 2);
    let healthy = address(&sim, 0);
    // `a` refuses every connection: nothing listens on a port just released.
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("hourglass-eject-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("hourglass.toml");
    let base = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[breaker]\nconsecutive_failures = 2\nejection = \"2m\"\n\
         [health_check]\nmode = \"off\"\n\
         [upstreams.a]\nbase_url = \"http://{refused}/v1\"\nmodels = [\"gpt-4o-mini\"]\n\
         [upstreams.b]\nbase_url = \"http://{healthy}/v1\"\nmodels = [\"gpt-4o-mini\"]\n\
         [models.m]\ntargets = [\"a:gpt-4o-mini\", \"b:gpt-4o-mini\"]\nbalance = \"ordered\"\n"
    );
    std::fs::write(&config, &base).unwrap();
    let serve = start("serve", &["--config", config.to_str().unwrap()], 1);
    let gateway = address(&serve, 0);
    let call = || served_by(&post(&gateway, r#"{"model":"m","messages":[]}"#, None));

    // Two refusals eject `a`; until then each call fails over to `b` after trying `a` first.
    assert_eq!(call(), ("b".to_owned(), "2".to_owned()));
    assert_eq!(call(), ("b".to_owned(), "2".to_owned()));
    assert_eq!(call(), ("b".to_owned(), "1".to_owned()), "`a` is ejected");

    // An unrelated change (a new model), by SIGHUP: `a` stays ejected, calls go straight to `b`.
    std::fs::write(
        &config,
        format!("{base}[models.other]\ntargets = [\"b:gpt-4o-mini\"]\n"),
    )
    .unwrap();
    let other = r#"{"model":"other","messages":[]}"#;
    assert!(
        sighup_until_served(&serve, &gateway, other),
        "SIGHUP did not bring `other` in"
    );
    for _ in 0..3 {
        assert_eq!(
            call(),
            ("b".to_owned(), "1".to_owned()),
            "the reload forgot that `a` is ejected"
        );
    }
    let status = http(
        &gateway,
        "GET /status HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert!(status.contains(r#""breaker":"open""#), "{status}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Found by a user piping the log to a file: the text log had colour escapes in it.
#[test]
fn the_text_log_written_to_a_file_is_plain_text_with_one_line_per_call() {
    let dir = std::env::temp_dir().join(format!("hourglass-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hourglass"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    while !banner.contains("listening on") {
        banner.clear();
        stdout.read_line(&mut banner).unwrap();
    }
    let start = banner.find("http://").unwrap() + 7;
    let addr = &banner[start..start + banner[start..].find("/v1").unwrap()];
    let answer = post(addr, r#"{"model":"gpt-4o-mini","messages":[]}"#, None);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    stop_gracefully(&child);
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("outcome=\"ok\"") || text.contains("outcome=ok"),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "colour escapes in a file: {text:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn serve_refuses_a_public_address_without_client_keys() {
    let out = Command::new(env!("CARGO_BIN_EXE_hourglass"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("refusing to serve on 0.0.0.0:0 without client keys")
            && stderr.contains("server.client_keys_env"),
        "{stderr}"
    );
}
