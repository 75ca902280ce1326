//! The one SSE parser of the project: finds event boundaries in a byte stream and hands each
//! complete event to the caller, without changing the bytes that go on to the client. Events are
//! borrowed from the bytes read; only an event split across two reads is copied, until its end
//! arrives. Boundaries are found with `memchr` (this is on every streamed byte's path).

use std::borrow::Cow;

/// One complete SSE event, borrowed from the stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event<'a> {
    /// The `event:` field, if any.
    pub name: Option<&'a str>,
    /// The `data:` lines joined with `\n`; `None` when the event had no data (comments only).
    pub data: Option<Cow<'a, str>>,
}

/// Splits a byte stream into SSE events.
#[derive(Debug, Default)]
pub struct Scanner {
    /// The start of an event whose end has not arrived yet.
    partial: Vec<u8>,
    /// A `\r` was seen: line ends may be CRLF or CR (rare; LF-only streams take the fast path).
    crlf: bool,
}

/// Longest event kept while waiting for its end (a larger one is reported as malformed).
pub const MAX_EVENT: usize = 16 * 1024 * 1024;

/// The longest blank line that ends an event (`\r\n\r\n`), less one: how far back a search
/// resumes so a boundary split across two reads is found.
const BOUNDARY_OVERLAP: usize = 3;

impl Scanner {
    /// A scanner at the start of a stream.
    pub fn new() -> Scanner {
        Scanner::default()
    }

    /// Feeds the next bytes and calls `each` with every event they complete. Errors when an
    /// event grows past [`MAX_EVENT`] without ending.
    ///
    /// Linear in the bytes fed: an unfinished event is appended to, not copied again, and the
    /// search for its end resumes where the last one stopped.
    pub fn push(&mut self, chunk: &[u8], mut each: impl FnMut(&Event<'_>)) -> Result<(), String> {
        self.push_at(chunk, |event, _| each(event))
    }

    /// As [`Scanner::push`], telling `each` also where in `chunk` the event ends (just past the
    /// blank line that ends it), so a caller can cut a frame at an event's end.
    pub fn push_at(
        &mut self,
        chunk: &[u8],
        each: impl FnMut(&Event<'_>, usize),
    ) -> Result<(), String> {
        self.push_to(chunk, &mut Each(each))
    }

    /// As [`Scanner::push_at`], handing the events to `events`, which may take runs of them
    /// straight from the bytes ([`Events::take_run`]).
    pub fn push_to(&mut self, chunk: &[u8], events: &mut impl Events) -> Result<(), String> {
        self.crlf |= memchr::memchr(b'\r', chunk).is_some();
        if self.partial.is_empty() {
            let consumed = scan(chunk, 0, self.crlf, events);
            self.partial.extend_from_slice(&chunk[consumed..]);
            return self.check_size();
        }
        let resume = self.partial.len().saturating_sub(BOUNDARY_OVERLAP);
        let before = self.partial.len();
        let mut partial = std::mem::take(&mut self.partial);
        partial.extend_from_slice(chunk);
        let mut in_chunk = InChunk { events, before };
        let consumed = scan(&partial, resume, self.crlf, &mut in_chunk);
        partial.drain(..consumed);
        // A large event has ended: do not hold its buffer for the rest of the stream.
        if partial.capacity() > 64 * 1024 && partial.len() < partial.capacity() / 4 {
            partial.shrink_to(partial.len().max(4096));
        }
        self.partial = partial;
        self.check_size()
    }

    fn check_size(&self) -> Result<(), String> {
        if self.partial.len() > MAX_EVENT {
            return Err(format!(
                "an SSE event grew past {} MiB without ending",
                MAX_EVENT >> 20
            ));
        }
        Ok(())
    }

    /// Whether bytes of an unfinished event are waiting.
    pub fn has_partial(&self) -> bool {
        self.partial.iter().any(|b| !b.is_ascii_whitespace())
    }
}

/// Hands every complete event of `bytes` to `each` with the offset just past its end, searching
/// for the first end from `resume` (no earlier end exists); returns how many bytes the events
/// took.
fn scan(bytes: &[u8], resume: usize, crlf: bool, events: &mut impl Events) -> usize {
    let mut start = 0;
    let mut search = resume;
    // The bytes as text, checked once for every event in them when the first one is found: a
    // read of a fast stream holds many events, and one check costs what one event's did.
    // `Some(None)` when they are not all UTF-8 (an event ends in a later read, mid-character, or
    // one is not text): then each event is checked alone, as before.
    let mut text: Option<Option<&str>> = None;
    // The text at the front of the bytes that is UTF-8, for the caller's runs: checked once, when
    // the first run is offered.
    let mut valid: Option<&str> = None;
    let runs = !crlf && events.takes_runs();
    loop {
        // At an event's start, in a stream without `\r`: the caller may take a run of events.
        if search == start && runs {
            let valid = valid.get_or_insert_with(|| valid_prefix(bytes));
            let taken = events.take_run(valid.get(start..).unwrap_or_default());
            if taken > 0 {
                start += taken;
                search = start;
                continue;
            }
        }
        let Some((end, len, one_line)) = boundary(&bytes[search..], crlf) else {
            break;
        };
        let end = search + end;
        let checked = text.get_or_insert_with(|| match valid {
            Some(valid) if valid.len() == bytes.len() => Some(valid),
            _ => simdutf8::basic::from_utf8(bytes).ok(),
        });
        // Events start and end at line ends, so the slice is on character boundaries.
        let block_text = checked.and_then(|text| text.get(start..end));
        // A single line only when the search began at the event's start.
        let event = parse(
            &bytes[start..end],
            block_text,
            crlf,
            one_line && search == start,
        );
        start = end + len;
        events.event(&event, start);
        search = start;
    }
    start
}

/// The longest start of `bytes` that is UTF-8 (a read may end inside a character).
fn valid_prefix(bytes: &[u8]) -> &str {
    match simdutf8::compat::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => std::str::from_utf8(&bytes[..error.valid_up_to()]).unwrap_or_default(),
    }
}

/// What a scanner hands the events it finds to.
pub trait Events {
    /// One complete event, with where in the bytes fed it ends (just past its blank line).
    fn event(&mut self, event: &Event<'_>, end: usize);

    /// Whether it may take runs of events ([`Events::take_run`]): when not, none is offered and
    /// the scanner checks no text for them.
    fn takes_runs(&self) -> bool {
        false
    }

    /// Offered the text at an event's start (in a stream without `\r`; as far as the bytes are
    /// UTF-8), when it [`Events::takes_runs`]: takes the whole events at its front that it can
    /// read without the scanner, and says how many bytes they were (each ends with its blank
    /// line); 0 takes none, and the scanner reads on.
    fn take_run(&mut self, _text: &str) -> usize {
        0
    }
}

/// A closure that takes every event.
struct Each<F>(F);

impl<F: FnMut(&Event<'_>, usize)> Events for Each<F> {
    fn event(&mut self, event: &Event<'_>, end: usize) {
        (self.0)(event, end)
    }
}

/// Events read from a held partial event and the chunk appended to it, told where they end in
/// the chunk.
struct InChunk<'a, E> {
    events: &'a mut E,
    /// How many bytes were held before the chunk.
    before: usize,
}

impl<E: Events> Events for InChunk<'_, E> {
    fn event(&mut self, event: &Event<'_>, end: usize) {
        self.events.event(event, end.saturating_sub(self.before));
    }

    fn takes_runs(&self) -> bool {
        self.events.takes_runs()
    }

    fn take_run(&mut self, text: &str) -> usize {
        self.events.take_run(text)
    }
}

/// The end of the first event in `bytes`, the length of the blank line that ends it, and
/// whether what comes before it is known to be one line (no line end at all).
fn boundary(bytes: &[u8], crlf: bool) -> Option<(usize, usize, bool)> {
    if !crlf {
        // A line end followed by another. Not `memmem::find`: it builds a searcher per call, and
        // most events are one line, so the first `\n` found is usually the boundary.
        let mut i = 0;
        while let Some(offset) = memchr::memchr(b'\n', &bytes[i..]) {
            let at = i + offset;
            if bytes.get(at + 1) == Some(&b'\n') {
                return Some((at, 2, i == 0));
            }
            i = at + 1;
        }
        return None;
    }
    // Rare: "\r\n\r\n", "\r\r", "\n\r\n" as well.
    let mut i = 0;
    while let Some(offset) = memchr::memchr2(b'\n', b'\r', &bytes[i..]) {
        let at = i + offset;
        let len = match &bytes[at..] {
            [b'\n', b'\n', ..] | [b'\r', b'\r', ..] => Some(2),
            [b'\r', b'\n', b'\r', b'\n', ..] => Some(4),
            [b'\n', b'\r', b'\n', ..] => Some(3),
            _ => None,
        };
        if let Some(len) = len {
            return Some((at, len, false));
        }
        i = at + 1;
    }
    None
}

/// The event `block` (without the blank line that ends it), with `text`, the same bytes as text
/// when they are known to be UTF-8; `one_line` when the boundary search already found no line end
/// in it.
fn parse<'a>(block: &'a [u8], text: Option<&'a str>, crlf: bool, one_line: bool) -> Event<'a> {
    // Most events are one `data: ` line: read without splitting lines.
    if let Some(value) = block.strip_prefix(b"data: ")
        && (one_line || memchr::memchr2(b'\n', b'\r', value).is_none())
        && let Some(value) = match text {
            Some(text) => text.get(b"data: ".len()..),
            None => simdutf8::basic::from_utf8(value).ok(),
        }
    {
        return Event {
            name: None,
            data: Some(Cow::Borrowed(value)),
        };
    }
    parse_lines(text.unwrap_or_else(|| readable(block)), crlf)
}

/// The text of `block`, or its valid start: invalid UTF-8 cannot be valid JSON, so what can be
/// read is handed over and the classifier refuses it.
fn readable(block: &[u8]) -> &str {
    match std::str::from_utf8(block) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&block[..e.valid_up_to()]).unwrap_or_default(),
    }
}

/// An event block's text, line by line.
fn parse_lines(text: &str, crlf: bool) -> Event<'_> {
    let mut event = Event::default();
    let lines: &mut dyn Iterator<Item = &str> = if crlf {
        &mut text.split(['\n', '\r'])
    } else {
        &mut text.split('\n')
    };
    for line in lines {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                event.data = Some(match event.data.take() {
                    None => Cow::Borrowed(value),
                    Some(earlier) => Cow::Owned(format!("{earlier}\n{value}")),
                })
            }
            "event" => event.name = Some(value),
            _ => {}
        }
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the runs it is offered, and takes a `data: x` event when it is offered one.
    struct Offers {
        takes_runs: bool,
        offered: Vec<String>,
        events: Vec<Option<String>>,
    }

    impl Events for Offers {
        fn event(&mut self, event: &Event<'_>, _: usize) {
            self.events.push(event.data.as_deref().map(str::to_owned));
        }

        fn takes_runs(&self) -> bool {
            self.takes_runs
        }

        fn take_run(&mut self, text: &str) -> usize {
            self.offered.push(text.to_owned());
            match text.starts_with("data: x\n\n") {
                true => "data: x\n\n".len(),
                false => 0,
            }
        }
    }

    /// Runs are offered at each event's start, only to a reader that takes them, and never in a
    /// stream with `\r`; what a run took is not handed on as events.
    #[test]
    fn runs_are_offered_at_event_starts_to_a_reader_that_takes_them() {
        let stream = b"data: x\n\ndata: y\n\ndata: x\n\n";
        let read = |takes_runs: bool, reads: &[&[u8]]| {
            let mut offers = Offers {
                takes_runs,
                offered: Vec::new(),
                events: Vec::new(),
            };
            let mut scanner = Scanner::new();
            for read in reads {
                scanner.push_to(read, &mut offers).unwrap();
            }
            offers
        };
        let taken = read(true, &[stream]);
        assert_eq!(taken.events, [Some("y".to_owned())]);
        assert_eq!(
            taken.offered,
            [
                "data: x\n\ndata: y\n\ndata: x\n\n",
                "data: y\n\ndata: x\n\n",
                "data: x\n\n",
                ""
            ]
        );
        let not_taken = read(false, &[stream]);
        assert!(not_taken.offered.is_empty());
        assert_eq!(not_taken.events.len(), 3);
        // Split inside the second event: its start is offered again with the rest of it.
        let split = read(true, &[&stream[..12], &stream[12..]]);
        assert_eq!(split.events, [Some("y".to_owned())]);
        let crlf = read(true, &[b"data: x\r\n\r\ndata: x\n\n"]);
        assert!(crlf.offered.is_empty());
        assert_eq!(crlf.events.len(), 2);
    }

    #[test]
    fn a_one_line_data_event_reads_as_its_lines_do() {
        for block in [
            &b"data: {\"a\":1}"[..],
            b"data: ",
            b"data:  two spaces",
            b"data: x\ndata: y",
            b"data: x\r",
            b"data: \xff\xfe",
            b"data: caf\xc3\xa9",
            b"event: ping",
            b"data:nospace",
            b": comment",
        ] {
            // The text is given when the read it came in was checked whole, and only then.
            let texts = [None, std::str::from_utf8(block).ok()];
            for (crlf, text) in [false, true]
                .into_iter()
                .flat_map(|c| texts.map(|t| (c, t)))
            {
                assert_eq!(
                    parse(block, text, crlf, false),
                    parse_lines(readable(block), crlf),
                    "{block:?}"
                );
            }
            // What the boundary search says of a block without a line end changes nothing.
            if !block.contains(&b'\n') && !block.contains(&b'\r') {
                for text in texts {
                    assert_eq!(
                        parse(block, text, false, true),
                        parse_lines(readable(block), false),
                        "{block:?}"
                    );
                }
            }
        }
    }

    /// Where each event ends in the chunk it completes, so a stream can be cut right after its
    /// end marker — found by the event's framing, never by searching for `[DONE]` in content.
    #[test]
    fn each_event_tells_where_it_ends_in_the_chunk_that_completes_it() {
        let mut scanner = Scanner::new();
        let mut ends = Vec::new();
        let quoted = b"data: {\"content\":\"data: [DONE]\"}\n\ndata: [DONE]\n\nafter";
        scanner
            .push_at(quoted, |e, at| {
                ends.push((e.data.as_deref().map(str::to_owned), at))
            })
            .unwrap();
        assert_eq!(ends.len(), 2);
        assert_eq!(ends[0].1, 34);
        assert_eq!(&quoted[ends[0].1..ends[1].1], b"data: [DONE]\n\n");
        assert_eq!(ends[1].0.as_deref(), Some("[DONE]"));
        // An event split across reads ends at its offset in the read that completes it.
        let mut scanner = Scanner::new();
        let mut ends = Vec::new();
        scanner.push_at(b"data: x", |_, at| ends.push(at)).unwrap();
        scanner
            .push_at(b"yz\n\ndata: b\n\n", |_, at| ends.push(at))
            .unwrap();
        assert_eq!(ends, [4, 13]);
    }

    fn events(scanner: &mut Scanner, bytes: &[u8]) -> Vec<(Option<String>, Option<String>)> {
        let mut out = Vec::new();
        scanner
            .push(bytes, |e| {
                out.push((
                    e.name.map(str::to_owned),
                    e.data.as_deref().map(str::to_owned),
                ))
            })
            .unwrap();
        out
    }

    /// The events of `stream` fed in two reads split at `at`.
    fn split_at(stream: &[u8], at: usize) -> Vec<(Option<String>, Option<String>)> {
        let mut scanner = Scanner::new();
        let mut all = events(&mut scanner, &stream[..at]);
        all.extend(events(&mut scanner, &stream[at..]));
        assert!(!scanner.has_partial(), "split at {at}");
        all
    }

    #[test]
    fn events_split_anywhere_are_reassembled() {
        let stream = b"data: {\"a\":1}\n\n: keep-alive\n\nevent: response.created\ndata: {\"b\":2}\n\ndata: [DONE]\n\n";
        for split in 0..stream.len() {
            let all = split_at(stream, split);
            assert_eq!(all.len(), 4, "split at {split}");
            assert_eq!(all[0].1.as_deref(), Some("{\"a\":1}"));
            assert_eq!(all[1], (None, None), "a comment is an empty event");
            assert_eq!(all[2].0.as_deref(), Some("response.created"));
            assert_eq!(all[3].1.as_deref(), Some("[DONE]"));
        }
    }

    /// A read is checked for UTF-8 once for all its events; a read that is not all UTF-8 (one
    /// split mid-character, or an event that is not text) gives each event exactly what it gave
    /// when every event was checked alone.
    #[test]
    fn reads_split_mid_character_or_holding_bad_bytes_give_each_event_its_own_text() {
        let stream = "data: café ☕\n\ndata: \u{1F600}x\n\nevent: é\ndata: ü\n\n".as_bytes();
        let whole = events(&mut Scanner::new(), stream);
        assert_eq!(
            whole.iter().map(|e| e.1.as_deref()).collect::<Vec<_>>(),
            [Some("café ☕"), Some("\u{1F600}x"), Some("ü")]
        );
        assert_eq!(whole[2].0.as_deref(), Some("é"));
        for split in 0..stream.len() {
            assert_eq!(split_at(stream, split), whole, "split at {split}");
        }
        // An event that is not UTF-8 among good ones: the good ones read as text still.
        let mixed = b"data: ok\n\ndata: \xff\xfe{}\n\ndata: caf\xc3\xa9\n\nevent: \xc3\n\n";
        let read = events(&mut Scanner::new(), mixed);
        let data: Vec<_> = read.iter().map(|e| e.1.as_deref()).collect();
        assert_eq!(data, [Some("ok"), Some(""), Some("café"), None]);
        assert_eq!(read[3].0, Some(String::new()));
        for split in 0..mixed.len() {
            assert_eq!(split_at(mixed, split), read, "split at {split}");
        }
    }

    #[test]
    fn crlf_events_split_anywhere_even_byte_by_byte_are_reassembled() {
        let stream = b"data: a\r\n\r\n: ping\r\rdata: b\r\ndata: c\n\r\ndata: d\r\n\r\n";
        for split in 0..stream.len() {
            let all = split_at(stream, split);
            let data: Vec<_> = all.iter().map(|e| e.1.as_deref()).collect();
            assert_eq!(
                data,
                [Some("a"), None, Some("b\nc"), Some("d")],
                "split at {split}"
            );
        }
        let mut scanner = Scanner::new();
        let mut all = Vec::new();
        for byte in stream.chunks(1) {
            all.extend(events(&mut scanner, byte));
        }
        assert_eq!(all.len(), 4);
    }

    #[test]
    fn crlf_and_multiline_data_are_understood() {
        let mut scanner = Scanner::new();
        let all = events(&mut scanner, b"data: a\r\ndata: b\r\n\r\ndata:c\n\n");
        assert_eq!(all[0].1.as_deref(), Some("a\nb"));
        assert_eq!(all[1].1.as_deref(), Some("c"));
        events(&mut scanner, b"data: unfinished");
        assert!(scanner.has_partial());
    }

    #[test]
    fn an_endless_event_is_refused() {
        let mut scanner = Scanner::new();
        let chunk = vec![b'x'; 1 << 20];
        let mut result = Ok(());
        for _ in 0..17 {
            result = scanner.push(&chunk, |_| {});
            if result.is_err() {
                break;
            }
        }
        assert!(result.unwrap_err().contains("16 MiB"));
    }
}
