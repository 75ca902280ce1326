//! The SSE decoder and the content classifier on arbitrary bytes: no panic, and the same events
//! whether the stream arrives in one read or split at any point (a network may split anywhere).

#![no_main]

use hourglass_engine::protocol::Endpoint;
use hourglass_engine::protocol::openai::assemble::Assembler;
use hourglass_engine::sse::Scanner;
use libfuzzer_sys::fuzz_target;

/// Every event of `reads` in order, as (name, data).
fn events(reads: &[&[u8]]) -> Result<Vec<(Option<String>, Option<String>)>, String> {
    let mut scanner = Scanner::new();
    let mut out = Vec::new();
    for read in reads {
        scanner.push(read, |event| {
            out.push((
                event.name.map(str::to_owned),
                event.data.as_deref().map(str::to_owned),
            ));
        })?;
    }
    Ok(out)
}

fuzz_target!(|input: &[u8]| {
    let Some((&split, stream)) = input.split_first() else {
        return;
    };
    let whole = events(&[stream]);
    let at = usize::from(split) * stream.len() / 256;
    let (first, second) = stream.split_at(at);
    assert_eq!(whole, events(&[first, second]), "split at {at}");
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(whole, events(&bytes), "one byte per read");

    // Whatever the events say, classifying and assembling them never panics, and the hand
    // scanner of the common chunks says what serde says of every chunk.
    // A chat stream's classifier (which remembers the last text chunk) says what the
    // protocol's stateless classify says of every event.
    let (mut assembler, mut by_serde) = (Assembler::new(), Assembler::without_fast_path());
    let mut classifier = Endpoint::Chat.protocol().classifier(Endpoint::Chat);
    let mut scanner = Scanner::new();
    let _ = scanner.push(stream, |event| {
        for endpoint in [Endpoint::Chat, Endpoint::Completions, Endpoint::Responses] {
            let _ = endpoint.protocol().classify(endpoint, event);
        }
        assert_eq!(
            classifier.classify(event),
            Endpoint::Chat.protocol().classify(Endpoint::Chat, event),
            "{event:?}"
        );
        if let Some(data) = event.data.as_deref() {
            assert_eq!(
                assembler.push_classified(data),
                by_serde.push_classified(data),
                "{data}"
            );
        }
    });
    assert_eq!(assembler.finish(), by_serde.finish());
});
