//! Micro-benchmarks of the per-call and per-chunk work: the SSE scanner with content
//! classification (serde, and a stream's own classifier), a whole answer assembled from a stream, the deadline arithmetic, reading `model`/`stream` from a body, and the retry
//! budget. Prints nanoseconds per operation; nothing is asserted.
//!
//!     cargo bench -p hourglass-engine --bench micro

#![allow(clippy::disallowed_types, clippy::disallowed_methods)] // wall-clock timing is the point here
#![allow(clippy::unwrap_used)] // a benchmark stops at the first surprise

use std::hint::black_box;
use std::time::Instant;

use hourglass_engine::deadlines::Deadlines;
use hourglass_engine::protocol::{Endpoint, Signal};
use hourglass_engine::request::read_head;
use hourglass_engine::retry::RetryBudget;
use hourglass_engine::sse::Scanner;

fn measure(name: &str, iterations: u64, mut f: impl FnMut()) {
    for _ in 0..iterations / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    let per = start.elapsed().as_nanos() as f64 / iterations as f64;
    println!("{name:<58} {per:>10.1} ns/op");
}

/// A 20-chunk chat stream; `padded` adds the random `obfuscation` field OpenAI ends each chunk
/// with.
fn chat_stream(padded: bool) -> Vec<u8> {
    let mut stream = Vec::new();
    stream.extend_from_slice(br#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#);
    stream.extend_from_slice(b"\n\n");
    for i in 0..20 {
        let padding = match padded {
            true => format!(r#","obfuscation":"{}""#, &"pQ8xZ2mW4kR7"[..4 + i % 8]),
            false => String::new(),
        };
        stream.extend_from_slice(format!(r#"data: {{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{{"index":0,"delta":{{"content":"tok{i} "}},"finish_reason":null}}]{padding}}}"#).as_bytes());
        stream.extend_from_slice(b"\n\n");
    }
    stream.extend_from_slice(b"data: [DONE]\n\n");
    stream
}

/// Classifies and assembles `stream` as a whole answer, one parse per chunk.
fn assemble(stream: &[u8]) {
    let mut scanner = Scanner::new();
    let mut assembler = Endpoint::Chat.protocol().assembler(Endpoint::Chat);
    let mut content = 0;
    scanner
        .push(black_box(stream), |event| {
            let data = event.data.as_deref().unwrap();
            if assembler.push_classified(data) == Some(Signal::Content) {
                content += 1;
            }
        })
        .unwrap();
    assert_eq!(content, 20);
    black_box(assembler.finish());
}

fn main() {
    let stream = chat_stream(false);
    let padded = chat_stream(true);
    measure(
        "sse: scan + classify a 20-chunk chat stream (22 events)",
        20_000,
        || {
            let mut scanner = Scanner::new();
            let mut content = 0;
            scanner
                .push(black_box(&stream), |event| {
                    if Endpoint::Chat.protocol().classify(Endpoint::Chat, event) == Signal::Content
                    {
                        content += 1;
                    }
                })
                .unwrap();
            assert_eq!(content, 20);
        },
    );
    measure(
        "sse: the same, classified by the stream's own classifier",
        20_000,
        || {
            let mut scanner = Scanner::new();
            let mut classifier = Endpoint::Chat.protocol().classifier(Endpoint::Chat);
            let mut content = 0;
            scanner
                .push(black_box(&stream), |event| {
                    if classifier.classify(event) == Signal::Content {
                        content += 1;
                    }
                })
                .unwrap();
            assert_eq!(content, 20);
        },
    );
    measure(
        "assemble: classify and assemble a whole chat answer, one parse",
        20_000,
        || assemble(&stream),
    );
    measure(
        "assemble: the same, each chunk padded as OpenAI pads it",
        20_000,
        || assemble(&padded),
    );
    measure(
        "assemble: the same, every chunk through serde (no hand scanner)",
        20_000,
        || {
            let mut scanner = Scanner::new();
            let mut assembler =
                hourglass_engine::protocol::openai::assemble::Assembler::without_fast_path();
            let mut content = 0;
            scanner
                .push(black_box(&stream), |event| {
                    let data = event.data.as_deref().unwrap();
                    if assembler.push_classified(data) == Signal::Content {
                        content += 1;
                    }
                })
                .unwrap();
            assert_eq!(content, 20);
            black_box(assembler.finish());
        },
    );
    measure(
        "assemble: classify, then assemble (two parses, as before)",
        20_000,
        || {
            let mut scanner = Scanner::new();
            let mut assembler = Endpoint::Chat.protocol().assembler(Endpoint::Chat);
            scanner
                .push(black_box(&stream), |event| {
                    let signal = Endpoint::Chat.protocol().classify(Endpoint::Chat, event);
                    let data = event.data.as_deref().unwrap();
                    if signal != Signal::End {
                        assembler.push(data).unwrap();
                    }
                })
                .unwrap();
            black_box(assembler.finish());
        },
    );
    measure("sse: scan only, same stream", 20_000, || {
        let mut scanner = Scanner::new();
        let mut events = 0;
        scanner.push(black_box(&stream), |_| events += 1).unwrap();
        black_box(events);
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let timeouts = hourglass_config::policy::prior(
            hourglass_config::Family::Chat,
            hourglass_config::Scenario::Content,
        )
        .timeouts;
        measure(
            "deadlines: call + attempt + every phase bound",
            1_000_000,
            || {
                let now = tokio::time::Instant::now();
                let deadlines = Deadlines::new(now, black_box(&timeouts), None);
                let attempt = deadlines.attempt(1, now);
                black_box((
                    attempt.connect(),
                    attempt.write(now),
                    attempt.headers(now, true),
                    attempt.first_token(now),
                    attempt.idle(now),
                ));
            },
        );
        let mut budget = RetryBudget::new(0.2, 5.0, tokio::time::Instant::now());
        measure("retry budget: deposit + try_withdraw", 1_000_000, || {
            let now = tokio::time::Instant::now();
            budget.deposit(now);
            black_box(budget.try_withdraw(now));
        });
    });

    let small = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Write a haiku about timeouts."}],"stream":true,"temperature":0.7}"#;
    measure(
        "read_head: model + stream of a 130-byte body",
        1_000_000,
        || {
            black_box(read_head(Endpoint::Chat, black_box(small)).unwrap());
        },
    );
    let big = format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(1 << 20)
    );
    measure("read_head: model + stream of a 1 MiB body", 200, || {
        black_box(read_head(Endpoint::Chat, black_box(big.as_bytes())).unwrap());
    });
}
