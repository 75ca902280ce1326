//! A whole answer assembled from an upstream's stream, for every endpoint that assembles one
//! (chat, completions, Responses, Anthropic's Messages), on arbitrary events read as the engine
//! reads them: no panic; an answer the engine would send (its stream ended after a finish, with
//! no event refused or reporting an error) is always one JSON value, since the engine sends the
//! assembled body as it is; the same answer and verdict however the stream is split; and each
//! endpoint's classifier says what its protocol's stateless `classify` says of every event.
//!
//! Input: the first byte picks the endpoint, the second where the stream is split; the rest is
//! the stream.

#![no_main]

use hourglass_engine::protocol::{Assemble, Endpoint, Signal};
use hourglass_engine::sse::{Event, Events, Scanner};
use libfuzzer_sys::fuzz_target;

const ENDPOINTS: [Endpoint; 4] = [
    Endpoint::Chat,
    Endpoint::Completions,
    Endpoint::Responses,
    Endpoint::Messages,
];

/// What the engine's stream reader keeps of a stream it assembles a whole answer from (the
/// engine's `Reading`): each event pushed to the assembler, the first failure, whether the
/// answer finished and then ended.
struct Reader {
    endpoint: Endpoint,
    assembler: Box<dyn Assemble>,
    runs: bool,
    finished: bool,
    ended: bool,
    failure: Option<String>,
}

impl Reader {
    fn new(endpoint: Endpoint, runs: bool) -> Reader {
        let protocol = endpoint.protocol();
        Reader {
            endpoint,
            assembler: protocol.assembler(endpoint),
            runs: runs && !protocol.numbers_events(endpoint),
            finished: !protocol.needs_finish_reason(endpoint),
            ended: false,
            failure: None,
        }
    }
}

impl Events for Reader {
    fn event(&mut self, event: &Event<'_>, _: usize) {
        let protocol = self.endpoint.protocol();
        let once = event
            .data
            .as_deref()
            .and_then(|data| self.assembler.push_classified(data));
        let pushed = once.is_some();
        let signal = once.unwrap_or_else(|| protocol.classify(self.endpoint, event));
        if !pushed
            && matches!(
                signal,
                Signal::Nothing | Signal::Content | Signal::Finish { .. } | Signal::End
            )
            && let Err(message) = self.assembler.push_event(event)
        {
            self.failure.get_or_insert(message);
        }
        match signal {
            Signal::Nothing | Signal::Content => {}
            Signal::Finish { .. } => self.finished = true,
            Signal::End if self.finished => self.ended = true,
            Signal::End => {
                self.failure.get_or_insert_with(|| "truncated".to_owned());
            }
            Signal::UpstreamError(message) | Signal::Malformed(message) => {
                self.failure.get_or_insert(message);
            }
        }
    }

    fn takes_runs(&self) -> bool {
        self.runs
    }

    fn take_run(&mut self, text: &str) -> usize {
        self.assembler.push_run(text)
    }
}

/// The answer assembled from `reads` for `endpoint` (with runs of text chunks taken in place,
/// or not), the first failure, and whether the stream ended: the engine sends the answer only
/// when no failure came and the stream ended.
fn assembled(endpoint: Endpoint, reads: &[&[u8]], runs: bool) -> (Vec<u8>, Option<String>, bool) {
    let mut reader = Reader::new(endpoint, runs);
    let mut scanner = Scanner::new();
    for read in reads {
        if let Err(message) = scanner.push_to(read, &mut reader) {
            reader.failure.get_or_insert(message);
            break;
        }
    }
    let (failure, ended) = (reader.failure, reader.ended);
    (reader.assembler.finish().to_vec(), failure, ended)
}

fuzz_target!(|input: &[u8]| {
    let [pick, split, stream @ ..] = input else {
        return;
    };
    let endpoint = ENDPOINTS[usize::from(*pick) % ENDPOINTS.len()];
    let whole = assembled(endpoint, &[stream], false);
    let (answer, failure, ended) = &whole;
    if failure.is_none() && *ended {
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(answer) {
            panic!(
                "{endpoint:?}: an answer the engine would send is not JSON ({e}): {}",
                String::from_utf8_lossy(answer)
            );
        }
    }
    let at = usize::from(*split) * stream.len() / 256;
    let (first, second) = stream.split_at(at);
    assert_eq!(
        assembled(endpoint, &[first, second], true),
        whole,
        "{endpoint:?}, split at {at}"
    );

    // The classifier a stream's reader keeps says what the stateless classify says.
    let protocol = endpoint.protocol();
    let mut classifier = protocol.classifier(endpoint);
    let mut scanner = Scanner::new();
    let _ = scanner.push(stream, |event| {
        assert_eq!(
            classifier.classify(event),
            protocol.classify(endpoint, event),
            "{endpoint:?}: {event:?}"
        );
    });
});
