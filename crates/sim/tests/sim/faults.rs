//! Every fault kind, streaming and not where it applies. Timing faults run on the paused clock
//! over the in-memory transport, so their durations are checked exactly; `reset` and `blackhole`
//! live in the kernel and are checked over loopback TCP.

use std::net::SocketAddr;
use std::time::Duration;

use hourglass_sim::{Server, ServerConfig, content};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const SECOND: Duration = Duration::from_secs(1);

fn instant_stream() -> serde_json::Value {
    chat("sim-instant", json!({"stream": true}))
}

/// Content chunks (token-carrying) of a chat stream, with their arrival times.
fn content_times(reply: &Reply) -> Vec<Duration> {
    reply
        .events()
        .iter()
        .filter(|(_, e)| e.contains("\"content\":\"") && !e.contains("\"content\":\"\""))
        .map(|(at, _)| *at)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn hang_reads_the_request_and_never_answers() {
    let server = memory_server();
    let io = server.connect_in_memory().await;
    let call = post("/v1/chat/completions", instant_stream())
        .fault("hang")
        .send(io);
    let waited = tokio::time::timeout(Duration::from_secs(3600), call).await;
    assert!(waited.is_err(), "no answer within an hour");
    assert_eq!(server.stats().requests, 1, "the request was read");
}

#[tokio::test(start_paused = true)]
async fn hang_applies_to_health_and_models_too() {
    let server = memory_server();
    for path in ["/health", "/v1/models"] {
        let io = server.connect_in_memory().await;
        let call = get(path).fault("hang").send(io);
        assert!(
            tokio::time::timeout(Duration::from_secs(60), call)
                .await
                .is_err(),
            "{path}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn delay_headers_holds_the_head_for_exactly_that_long() {
    let server = memory_server();
    for body in [instant_stream(), chat("sim-instant", json!({}))] {
        let reply = post("/v1/chat/completions", body)
            .fault("delay_headers;for=7s")
            .to(&server)
            .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.head_after, 7 * SECOND);
        assert!(reply.body_error.is_none());
    }
}

#[tokio::test(start_paused = true)]
async fn status_sends_the_code_with_retry_after_headers_and_an_openai_error() {
    let server = memory_server();
    let reply = post("/v1/chat/completions", instant_stream())
        .fault("status;code=503;retry_after=2;retry_after_ms=2000")
        .to(&server)
        .await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("2"));
    assert_eq!(reply.header("retry-after-ms"), Some("2000"));
    let error = &reply.json()["error"];
    assert_eq!(error["type"], "server_error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("status;code=503")
    );

    let html = post("/v1/chat/completions", instant_stream())
        .fault("status;code=524;body=html")
        .to(&server)
        .await;
    assert_eq!(html.status, 524);
    assert_eq!(html.header("content-type"), Some("text/html"));
    assert!(html.text().contains("<title>524"));
    assert!(html.header("retry-after").is_none());

    let empty = post("/v1/embeddings", json!({}))
        .fault("status;code=502;body=empty")
        .to(&server)
        .await;
    assert_eq!(empty.status, 502);
    assert!(empty.body().is_empty());
}

#[tokio::test(start_paused = true)]
async fn rate_limit_is_a_429_with_retry_after() {
    let server = memory_server();
    let default = post("/v1/chat/completions", instant_stream())
        .fault("rate_limit")
        .to(&server)
        .await;
    assert_eq!(default.status, 429);
    assert_eq!(default.header("retry-after"), Some("1"));
    assert_eq!(default.json()["error"]["code"], "rate_limit_exceeded");
    let millis = post("/v1/chat/completions", instant_stream())
        .fault("rate_limit;retry_after_ms=1500")
        .to(&server)
        .await;
    assert_eq!(millis.header("retry-after-ms"), Some("1500"));
    assert!(millis.header("retry-after").is_none());
}

async fn tcp_server() -> Server {
    Server::bind("127.0.0.1:0".parse().unwrap(), ServerConfig::default())
        .await
        .unwrap()
}

fn raw_request(fault: &str) -> String {
    let body = r#"{"model":"sim-instant","messages":[]}"#;
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         x-sim-fault: {fault}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn reset_sends_a_tcp_rst_before_any_response_byte() {
    let server = tcp_server().await;
    let mut stream = TcpStream::connect(server.local_addr().unwrap())
        .await
        .unwrap();
    stream
        .write_all(raw_request("reset").as_bytes())
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(5 * SECOND, stream.read_to_end(&mut buffer))
        .await
        .expect("reset promptly");
    let error = read.expect_err("a reset is an error, not a clean close");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
    assert!(buffer.is_empty(), "no response byte before the reset");
}

#[tokio::test(start_paused = true)]
async fn reset_over_memory_closes_without_a_response() {
    let server = memory_server();
    let io = server.connect_in_memory().await;
    let result = post("/v1/chat/completions", instant_stream())
        .fault("reset")
        .send(io)
        .await;
    assert!(result.is_err(), "no head arrives");
}

#[tokio::test(start_paused = true)]
async fn cut_closes_a_stream_after_n_chunks_without_done() {
    let server = memory_server();
    let reply = post("/v1/chat/completions", instant_stream())
        .fault("cut;after_chunks=5")
        .to(&server)
        .await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.body_error.is_some(),
        "the body ends in an error, not a clean close"
    );
    let text = &streamed_chat_text(&reply, 1)[0];
    assert_eq!(content::check(text).unwrap().tokens, 5);
    assert!(!reply.text().contains("[DONE]") && !reply.text().contains("finish_reason\":\""));
}

#[tokio::test(start_paused = true)]
async fn cut_leaves_a_whole_body_incomplete() {
    let server = memory_server();
    let reply = post("/v1/chat/completions", chat("sim-instant", json!({})))
        .fault("cut")
        .to(&server)
        .await;
    assert_eq!(reply.status, 200);
    let declared: usize = reply.header("content-length").unwrap().parse().unwrap();
    assert!(
        reply.body().len() < declared,
        "{} of {declared} bytes",
        reply.body().len()
    );
    assert!(reply.body_error.is_some());
}

#[tokio::test]
async fn cut_over_tcp_ends_the_chunked_body_early() {
    let server = tcp_server().await;
    let io = TcpStream::connect(server.local_addr().unwrap())
        .await
        .unwrap();
    let reply = post("/v1/chat/completions", instant_stream())
        .fault("cut;after_chunks=2")
        .send(io)
        .await
        .unwrap();
    assert!(
        reply.body_error.is_some(),
        "hyper sees an incomplete chunked body"
    );
    assert_eq!(
        content::check(&streamed_chat_text(&reply, 1)[0])
            .unwrap()
            .tokens,
        2
    );
}

#[tokio::test(start_paused = true)]
async fn stall_stops_after_n_chunks_for_exactly_d_then_goes_on() {
    let server = memory_server();
    let reply = post("/v1/chat/completions", instant_stream())
        .fault("stall;after_chunks=3;for=30s")
        .to(&server)
        .await;
    let times = content_times(&reply);
    assert_eq!(times.len(), 16);
    assert!(times[..3].iter().all(|t| *t == Duration::ZERO), "{times:?}");
    assert!(times[3..].iter().all(|t| *t == 30 * SECOND), "{times:?}");
    assert!(reply.body_error.is_none());
    assert!(reply.text().ends_with("data: [DONE]\n\n"));
}

#[tokio::test(start_paused = true)]
async fn stall_in_a_whole_body_pauses_after_half_of_it() {
    let server = memory_server();
    let reply = post("/v1/chat/completions", chat("sim-instant", json!({})))
        .fault("stall;for=12s")
        .to(&server)
        .await;
    assert_eq!(reply.frames.len(), 2);
    assert_eq!(reply.frames[0].0, Duration::ZERO);
    assert_eq!(reply.frames[1].0, 12 * SECOND);
    content::check(
        reply.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn slow_drips_tokens_at_the_given_rate() {
    let server = memory_server();
    let reply = post("/v1/chat/completions", instant_stream())
        .fault("slow;tokens_per_s=0.5")
        .to(&server)
        .await;
    let times = content_times(&reply);
    for pair in times.windows(2) {
        assert_eq!(pair[1] - pair[0], 2 * SECOND);
    }
    let whole = post("/v1/chat/completions", chat("sim-instant", json!({})))
        .fault("slow;tokens_per_s=4")
        .to(&server)
        .await;
    assert_eq!(
        whole.head_after,
        Duration::from_millis(15 * 250),
        "15 gaps of 250ms before the answer"
    );
}

#[tokio::test(start_paused = true)]
async fn first_token_waits_after_the_role_chunk_with_keepalive_comments() {
    let server = memory_server();
    let reply = post("/v1/chat/completions", instant_stream())
        .fault("first_token;after=20s;keepalive=5s")
        .to(&server)
        .await;
    assert_eq!(reply.head_after, Duration::ZERO, "headers go out at once");
    let events = reply.events();
    assert!(events[0].1.contains("\"role\":\"assistant\""));
    assert_eq!(events[0].0, Duration::ZERO);
    let keepalives: Vec<_> = events
        .iter()
        .filter(|(_, e)| e.starts_with(':'))
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(keepalives, [5 * SECOND, 10 * SECOND, 15 * SECOND]);
    assert_eq!(content_times(&reply)[0], 20 * SECOND);

    let quiet = post("/v1/chat/completions", instant_stream())
        .fault("first_token;after=3s")
        .to(&server)
        .await;
    assert!(quiet.events().iter().all(|(_, e)| !e.starts_with(':')));
    assert_eq!(content_times(&quiet)[0], 3 * SECOND);

    let whole = post("/v1/chat/completions", chat("sim-instant", json!({})))
        .fault("first_token;after=9s")
        .to(&server)
        .await;
    assert_eq!(
        whole.head_after,
        9 * SECOND,
        "a non-streaming answer waits for its first token too"
    );
}

#[tokio::test(start_paused = true)]
async fn malformed_sends_one_broken_json_chunk() {
    let server = memory_server();
    let reply = post("/v1/chat/completions", instant_stream())
        .fault("malformed;after_chunks=2")
        .to(&server)
        .await;
    let broken: Vec<usize> = reply
        .events()
        .iter()
        .enumerate()
        .filter(|(_, (_, e))| {
            e.strip_prefix("data: ").is_some_and(|d| {
                d != "[DONE]" && serde_json::from_str::<serde_json::Value>(d).is_err()
            })
        })
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        broken,
        [3],
        "role chunk, two good chunks, then the broken one"
    );
    let whole = post("/v1/chat/completions", chat("sim-instant", json!({})))
        .fault("malformed")
        .to(&server)
        .await;
    assert_eq!(whole.status, 200);
    assert!(whole.body_error.is_none(), "the framing is intact");
    assert!(serde_json::from_slice::<serde_json::Value>(&whole.body()).is_err());
}

async fn connects(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

#[tokio::test]
async fn blackhole_makes_tcp_connects_time_out_until_lifted() {
    let server = tcp_server().await;
    let addr = server.local_addr().unwrap();
    assert!(connects(addr).await);
    server.set_blackhole(true);
    tokio::time::sleep(Duration::from_millis(300)).await; // the filler connection takes the queue
    for _ in 0..3 {
        assert!(
            !connects(addr).await,
            "a blackholed listener never completes a handshake"
        );
    }
    server.set_blackhole(false);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let io = TcpStream::connect(addr).await.unwrap();
    let reply = post("/v1/chat/completions", chat("sim-instant", json!({})))
        .send(io)
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "the server recovers");
}

#[tokio::test]
async fn blackhole_by_header_hangs_the_request_and_darkens_the_listener_for_a_while() {
    let server = tcp_server().await;
    let addr = server.local_addr().unwrap();
    let io = TcpStream::connect(addr).await.unwrap();
    let call = post("/v1/chat/completions", instant_stream())
        .fault("blackhole;for=1500ms")
        .send(io);
    assert!(
        tokio::time::timeout(Duration::from_millis(400), call)
            .await
            .is_err(),
        "the request hangs"
    );
    assert!(server.is_blackholed());
    assert!(!connects(addr).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!server.is_blackholed());
    assert!(connects(addr).await, "light again after `for`");
}

#[tokio::test(start_paused = true)]
async fn blackhole_over_memory_leaves_connects_pending() {
    let server = Server::in_memory(ServerConfig {
        blackhole: true,
        ..ServerConfig::default()
    });
    let connect = tokio::time::timeout(Duration::from_secs(600), server.connect_in_memory()).await;
    assert!(connect.is_err(), "no connection while dark");
    server.set_blackhole(false);
    let reply = post("/health", json!({})).to(&server).await;
    assert_eq!(reply.status, 405);
}

#[tokio::test(start_paused = true)]
async fn faults_combine_and_can_be_aimed_at_one_upstream() {
    let server = memory_server();
    let reply = post("/v1/chat/completions", instant_stream())
        .fault("delay_headers;for=1s, first_token;after=2s, cut;after_chunks=1")
        .to(&server)
        .await;
    assert_eq!(reply.head_after, SECOND);
    assert_eq!(content_times(&reply), [3 * SECOND]);
    assert!(reply.body_error.is_some());

    let elsewhere = post("/v1/chat/completions", instant_stream())
        .fault("status;code=503;upstream=other")
        .to(&server)
        .await;
    assert_eq!(elsewhere.status, 200, "aimed at `other`, not at `sim`");
    let here = post("/v1/chat/completions", instant_stream())
        .fault("status;code=503;upstream=sim")
        .to(&server)
        .await;
    assert_eq!(here.status, 503);
}

#[tokio::test(start_paused = true)]
async fn bad_fault_headers_are_refused_naming_the_kind_or_key() {
    let server = memory_server();
    for (fault, needle) in [
        ("hnag", "unknown fault kind `hnag`"),
        ("stall;after=3", "unknown key `after`"),
        ("hang, reset", "conflict"),
    ] {
        let reply = post("/v1/chat/completions", instant_stream())
            .fault(fault)
            .to(&server)
            .await;
        assert_eq!(reply.status, 400, "{fault}");
        let error = &reply.json()["error"];
        assert_eq!(error["code"], "invalid_fault");
        assert_eq!(error["param"], "x-sim-fault");
        assert!(
            error["message"].as_str().unwrap().contains(needle),
            "{fault}: {error}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_fault_mix_injects_at_its_probability_reproducibly() {
    let mix = || {
        let faults = hourglass_sim::fault::FaultList::parse("status;code=503").unwrap();
        ServerConfig {
            fault_mix: vec![hourglass_sim::server::WeightedFaults {
                faults,
                probability: 0.3,
            }],
            seed: 11,
            ..ServerConfig::default()
        }
    };
    let statuses = |server: Server| async move {
        let mut out = Vec::new();
        for _ in 0..400 {
            out.push(
                post("/v1/chat/completions", chat("sim-instant", json!({})))
                    .to(&server)
                    .await
                    .status
                    .as_u16(),
            );
        }
        out
    };
    let first = statuses(Server::in_memory(mix())).await;
    let failed = first.iter().filter(|s| **s == 503).count();
    assert!(
        (90..=150).contains(&failed),
        "30% of 400 is 120, got {failed}"
    );
    assert_eq!(
        first,
        statuses(Server::in_memory(mix())).await,
        "same seed, same faults"
    );
}

#[tokio::test(start_paused = true)]
async fn time_scale_runs_a_ninety_second_reasoning_call_in_under_a_second() {
    let server = Server::in_memory(ServerConfig {
        time_scale: 0.01,
        ..ServerConfig::default()
    });
    let mut first_tokens = Vec::new();
    for _ in 0..101 {
        let reply = post(
            "/v1/chat/completions",
            chat("o1-preview", json!({"stream": true, "max_tokens": 2})),
        )
        .to(&server)
        .await;
        first_tokens.push(content_times(&reply)[0]);
    }
    first_tokens.sort();
    let median = first_tokens[50];
    // o1-preview thinks 85 s at the median, 120 s at p99: scaled by 0.01.
    assert!(
        median > Duration::from_millis(780) && median < Duration::from_millis(920),
        "{median:?}"
    );
    assert!(
        first_tokens[100] < Duration::from_millis(1300),
        "{:?}",
        first_tokens[100]
    );
    // A fault's duration is literal, whatever the scale.
    let reply = post("/v1/chat/completions", instant_stream())
        .fault("first_token;after=2s")
        .to(&server)
        .await;
    assert_eq!(content_times(&reply)[0], 2 * SECOND);
}

#[tokio::test]
async fn a_client_that_goes_away_frees_its_connection() {
    let server = tcp_server().await;
    let mut stream = TcpStream::connect(server.local_addr().unwrap())
        .await
        .unwrap();
    stream
        .write_all(raw_request("hang").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.stats().open_connections, 1);
    drop(stream);
    let mut open = 1;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        open = server.stats().open_connections;
        if open == 0 {
            break;
        }
    }
    assert_eq!(open, 0, "a hung request ends when its client leaves");
}
