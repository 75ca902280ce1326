use super::*;
use crate::fault::FaultList;
use crate::model::{LatencyModel, ModelKind, Spread};
use crate::request;

/// A model with fixed timing: first token after 1 s, 10 tokens/s with no jitter, 5 tokens.
fn steady_model() -> ModelProfile {
    ModelProfile {
        name: "steady".into(),
        kind: ModelKind::Chat,
        latency: LatencyModel {
            first_token: Spread::fixed(1.0),
            tokens_per_s: 10.0,
            jitter: 0.0,
            output_tokens: Spread::fixed(5.0),
        },
        dimensions: 8,
    }
}

fn context(model: &ModelProfile, seed: u64, time_scale: f64) -> Context<'_> {
    Context {
        endpoint: Endpoint::Chat,
        model,
        time_scale,
        seed,
        prompt_tokens: 3,
        base_url: "http://x",
    }
}

fn faults(text: &str) -> FaultSet {
    FaultList::parse(text)
        .unwrap()
        .select("sim", &mut fastrand::Rng::with_seed(0))
}

/// Every step of a planned stream.
fn play(plan: Plan) -> Vec<Step> {
    let Steps::Stream(mut script) = plan.body else {
        panic!("a stream was planned")
    };
    std::iter::from_fn(|| script.next_step()).collect()
}

fn script(body: &str, fault_text: &str) -> Vec<Step> {
    let model = steady_model();
    let parsed = request::parse(Endpoint::Chat, body.as_bytes()).unwrap();
    let faults = if fault_text.is_empty() {
        FaultSet::default()
    } else {
        faults(fault_text)
    };
    play(plan(&parsed, &faults, &context(&model, 7, 1.0)))
}

const STREAM: &str = r#"{"model":"steady","messages":[],"stream":true}"#;

/// Renders a script as a compact timeline: `w1000` waits, `R` role chunk, `C` content, `K`
/// keep-alive, `F` finish, `D` done, `X` cut, `!` broken JSON.
fn timeline(steps: &[Step]) -> String {
    steps
        .iter()
        .map(|step| match step {
            Step::Wait(d) => format!("w{}", d.as_millis()),
            Step::Cut => "X".into(),
            Step::Data(bytes) => {
                let text = std::str::from_utf8(bytes).unwrap();
                if text == "data: [DONE]\n\n" {
                    "D".into()
                } else if text.starts_with(':') {
                    "K".into()
                } else if serde_json::from_str::<serde_json::Value>(&text[6..]).is_err() {
                    "!".into()
                } else if text.contains("\"role\"") {
                    "R".into()
                } else if text.contains("\"finish_reason\":\"") {
                    "F".into()
                } else {
                    "C".into()
                }
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn a_clean_stream_follows_the_latency_model() {
    assert_eq!(
        timeline(&script(STREAM, "")),
        "R w1000 C w100 C w100 C w100 C w100 C F D"
    );
}

#[test]
fn stall_pauses_after_n_content_chunks() {
    assert_eq!(
        timeline(&script(STREAM, "stall;after_chunks=2;for=30s")),
        "R w1000 C w100 C w100 w30000 C w100 C w100 C F D"
    );
    // After every chunk: the stall falls between the last token and the finish chunk.
    assert_eq!(
        timeline(&script(STREAM, "stall;after_chunks=99;for=2s")),
        "R w1000 C w100 C w100 C w100 C w100 C w2000 F D"
    );
}

#[test]
fn cut_ends_the_stream_without_finish_or_done() {
    assert_eq!(
        timeline(&script(STREAM, "cut;after_chunks=2")),
        "R w1000 C w100 C w100 X"
    );
    assert_eq!(timeline(&script(STREAM, "cut;after_chunks=0")), "R w1000 X");
    assert_eq!(
        timeline(&script(STREAM, "cut;after_chunks=5")),
        "R w1000 C w100 C w100 C w100 C w100 C X"
    );
}

#[test]
fn interrupt_ends_the_stream_with_done_but_no_finish() {
    assert_eq!(
        timeline(&script(STREAM, "interrupt;after_chunks=2")),
        "R w1000 C w100 C w100 D"
    );
    assert_eq!(
        timeline(&script(STREAM, "interrupt;after_chunks=0")),
        "R w1000 D"
    );
}

#[test]
fn first_token_waits_with_keepalives_after_the_role_chunk() {
    assert_eq!(
        timeline(&script(STREAM, "first_token;after=20s;keepalive=5s")),
        "R w5000 K w5000 K w5000 K w5000 C w100 C w100 C w100 C w100 C F D"
    );
    assert!(timeline(&script(STREAM, "first_token;after=3s")).starts_with("R w3000 C"));
}

#[test]
fn slow_sets_the_gap_between_tokens() {
    assert_eq!(
        timeline(&script(STREAM, "slow;tokens_per_s=0.5")),
        "R w1000 C w2000 C w2000 C w2000 C w2000 C F D"
    );
}

#[test]
fn malformed_breaks_exactly_one_chunk() {
    assert_eq!(
        timeline(&script(STREAM, "malformed;after_chunks=1")),
        "R w1000 C w100 ! w100 C w100 C w100 C F D"
    );
}

#[test]
fn non_streaming_answers_wait_for_the_whole_generation() {
    let model = steady_model();
    let parsed = request::parse(Endpoint::Chat, br#"{"model":"steady","messages":[]}"#).unwrap();
    let ctx = context(&model, 7, 1.0);
    let clean = plan(&parsed, &FaultSet::default(), &ctx);
    assert_eq!(
        clean.head_delay,
        Duration::from_millis(1400),
        "first token + 4 gaps"
    );
    assert!(!clean.streaming);

    let delayed = plan(
        &parsed,
        &faults("delay_headers;for=2s, slow;tokens_per_s=1"),
        &ctx,
    );
    assert_eq!(
        delayed.head_delay,
        Duration::from_millis(1000 + 4000),
        "delay_headers is served apart"
    );

    let cut = plan(&parsed, &faults("cut"), &ctx);
    let Steps::Fixed(steps) = cut.body else {
        panic!("whole bodies are fixed")
    };
    let Step::Data(half) = &steps[0] else {
        panic!("data first")
    };
    assert_eq!(steps[1], Step::Cut);
    assert_eq!(
        cut.content_length,
        Some(half.len() as u64 * 2 + cut.content_length.unwrap() % 2)
    );
}

#[test]
fn time_scale_and_seed_shape_the_draw() {
    let model = ModelProfile::builtin_named("o1-mini").unwrap();
    let parsed = request::parse(
        Endpoint::Chat,
        STREAM.replace("steady", "o1-mini").as_bytes(),
    )
    .unwrap();
    let first_wait = |seed: u64, time_scale: f64| {
        play(plan(
            &parsed,
            &FaultSet::default(),
            &context(&model, seed, time_scale),
        ))
        .into_iter()
        .find_map(|s| match s {
            Step::Wait(d) => Some(d),
            _ => None,
        })
        .unwrap()
    };
    let full = first_wait(3, 1.0);
    let scaled = first_wait(3, 0.01);
    assert!(
        full >= Duration::from_secs(20) && full <= Duration::from_secs(120),
        "{full:?}"
    );
    assert!((scaled.as_secs_f64() - full.as_secs_f64() / 100.0).abs() < 1e-6);
    assert_eq!(first_wait(3, 1.0), full, "same seed, same draw");
}

/// With no wait between tokens, the content chunks are written into one frame — byte for byte
/// the chunks rendered one by one — and a frame never grows past `MAX_BURST`.
#[test]
fn chunks_due_together_leave_in_one_frame() {
    let instant = |tokens: f64| ModelProfile {
        latency: LatencyModel {
            first_token: Spread::fixed(0.0),
            tokens_per_s: 0.0,
            jitter: 0.0,
            output_tokens: Spread::fixed(tokens),
        },
        ..steady_model()
    };
    let parsed = request::parse(Endpoint::Chat, STREAM.as_bytes()).unwrap();
    let model = instant(5.0);
    let ctx = context(&model, 7, 1.0);
    let Steps::Stream(script) = plan(&parsed, &FaultSet::default(), &ctx).body else {
        panic!("a stream was planned")
    };
    let answer = script.answer.clone();
    let steps = play(plan(&parsed, &FaultSet::default(), &ctx));
    let data: Vec<&Bytes> = (steps.iter())
        .filter_map(|step| match step {
            Step::Data(bytes) => Some(bytes),
            _ => None,
        })
        .collect();
    assert!(
        steps
            .iter()
            .all(|s| matches!(s, Step::Data(_) | Step::Wait(_))),
        "no cut"
    );
    // The role chunk, the five content chunks in one frame, the finish chunk, `[DONE]`.
    assert_eq!(data.len(), 4, "{:?}", timeline(&steps));
    let one_by_one: Vec<u8> = (0..5)
        .flat_map(|seq| answer.content(seq, &mut 0).concat())
        .collect();
    assert_eq!(data[1].as_ref(), one_by_one.as_slice());

    // A long answer is cut into frames of at most MAX_BURST (plus the chunk that crossed it).
    let model = instant(2_000.0);
    let ctx = context(&model, 7, 1.0);
    let steps = play(plan(&parsed, &FaultSet::default(), &ctx));
    let sizes: Vec<usize> = (steps.iter())
        .filter_map(|step| match step {
            Step::Data(bytes) => Some(bytes.len()),
            _ => None,
        })
        .collect();
    assert!(sizes.len() > 4, "{sizes:?}");
    assert!(sizes.iter().all(|&n| n < MAX_BURST + 1024), "{sizes:?}");
}
