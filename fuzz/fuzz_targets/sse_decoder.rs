//! The SSE decoder and the content classifier on arbitrary bytes: no panic, and the same events
//! whether the stream arrives in one read or split at any point (a network may split anywhere).

#![no_main]

use hourglass_engine::protocol::openai::assemble::Assembler;
use hourglass_engine::protocol::{Assemble, Classify, Endpoint, Signal};
use hourglass_engine::sse::{Event, Events, Scanner};
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

/// Hands `reads`, in order, to one scanner feeding `events`, until an event grows too large.
fn feed(reads: &[&[u8]], events: &mut impl Events) {
    let mut scanner = Scanner::new();
    for read in reads {
        if scanner.push_to(read, events).is_err() {
            break;
        }
    }
}

/// A stream's reader assembling a whole answer: with `runs`, text chunks the assembler recalls
/// are taken in place (`Assemble::push_run`); every other event is read by the scanner.
struct Reader {
    assembler: Box<Assembler>,
    runs: bool,
    content: bool,
}

impl Events for Reader {
    fn event(&mut self, event: &Event<'_>, _: usize) {
        if let Some(data) = event.data.as_deref() {
            let signal = Assemble::push_classified(&mut *self.assembler, data);
            self.content |= signal == Some(Signal::Content);
        }
    }

    fn takes_runs(&self) -> bool {
        self.runs
    }

    fn take_run(&mut self, text: &str) -> usize {
        let taken = self.assembler.push_run(text);
        self.content |= taken > 0;
        taken
    }
}

/// The answer assembled from `reads`, with or without `runs` taken in place, and whether
/// content came.
fn assembled(reads: &[&[u8]], runs: bool) -> (Vec<u8>, bool) {
    let mut reader = Reader {
        assembler: Box::new(Assembler::new()),
        runs,
        content: false,
    };
    feed(reads, &mut reader);
    (reader.assembler.finish().to_vec(), reader.content)
}

/// A stream's reader classifying its events: with `runs`, text chunks the classifier recalls
/// are read in place (`Classify::classify_run`).
struct Classifier {
    classifier: Box<dyn Classify>,
    runs: bool,
    content: bool,
    signals: Vec<Signal>,
}

impl Events for Classifier {
    fn event(&mut self, event: &Event<'_>, _: usize) {
        match self.classifier.classify(event) {
            Signal::Content => self.content = true,
            other => self.signals.push(other),
        }
    }

    fn takes_runs(&self) -> bool {
        self.runs
    }

    fn take_run(&mut self, text: &str) -> usize {
        let taken = self.classifier.classify_run(text);
        self.content |= taken > 0;
        taken
    }
}

/// Whether `reads` had content, and every other signal in order, as a chat stream's classifier
/// reads them, with or without `runs` read in place.
fn classified(reads: &[&[u8]], runs: bool) -> (bool, Vec<Signal>) {
    let mut reader = Classifier {
        classifier: Endpoint::Chat.protocol().classifier(Endpoint::Chat),
        runs,
        content: false,
        signals: Vec::new(),
    };
    feed(reads, &mut reader);
    (reader.content, reader.signals)
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
    // Text chunks taken in place, however the stream is split, give what reading each event
    // gives: the same answer, and content when it had some.
    let each = assembled(&[stream], false);
    assert_eq!(assembled(&[first, second], true), each, "split at {at}");
    let each = classified(&[stream], false);
    assert_eq!(classified(&[first, second], true), each, "split at {at}");
});
