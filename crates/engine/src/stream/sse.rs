//! The one SSE parser of the project: finds event boundaries in a byte stream and hands each
//! complete event to the caller, without changing or copying the bytes that go on to the client
//! (only an event split across two reads is kept until its end arrives).

/// One complete SSE event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event:` field, if any.
    pub name: Option<String>,
    /// The `data:` lines joined with `\n`; `None` when the event had no data (comments only).
    pub data: Option<String>,
}

/// Splits a byte stream into SSE events.
#[derive(Debug, Default)]
pub struct Scanner {
    partial: Vec<u8>,
}

/// Longest event kept while waiting for its end (a larger one is reported as malformed).
pub const MAX_EVENT: usize = 16 * 1024 * 1024;

impl Scanner {
    /// A scanner at the start of a stream.
    pub fn new() -> Scanner {
        Scanner::default()
    }

    /// Feeds the next bytes; returns the events they complete. Errors when an event grows past
    /// [`MAX_EVENT`] without ending.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, String> {
        let mut events = Vec::new();
        let owned;
        let bytes: &[u8] = if self.partial.is_empty() {
            chunk
        } else {
            self.partial.extend_from_slice(chunk);
            owned = std::mem::take(&mut self.partial);
            &owned
        };
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            // An event ends at an empty line: "\n\n", "\r\n\r\n" or "\r\r".
            let end = match &bytes[i..] {
                [b'\n', b'\n', ..] => Some(2),
                [b'\r', b'\n', b'\r', b'\n', ..] => Some(4),
                [b'\r', b'\r', ..] => Some(2),
                [b'\n', b'\r', b'\n', ..] => Some(3),
                _ => None,
            };
            match end {
                Some(len) => {
                    if let Some(event) = parse(&bytes[start..i]) {
                        events.push(event);
                    }
                    i += len;
                    start = i;
                }
                None => i += 1,
            }
        }
        let rest = &bytes[start..];
        if rest.len() > MAX_EVENT {
            return Err(format!(
                "an SSE event grew past {} MiB without ending",
                MAX_EVENT / 1024 / 1024
            ));
        }
        self.partial = rest.to_vec();
        Ok(events)
    }

    /// Whether bytes of an unfinished event are waiting.
    pub fn has_partial(&self) -> bool {
        self.partial.iter().any(|b| !b.is_ascii_whitespace())
    }
}

fn parse(block: &[u8]) -> Option<Event> {
    let text = String::from_utf8_lossy(block);
    let mut event = Event::default();
    let mut any = false;
    for line in text.split(['\n', '\r']) {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                any = true;
                match &mut event.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => event.data = Some(value.to_owned()),
                }
            }
            "event" => {
                any = true;
                event.name = Some(value.to_owned());
            }
            _ => {}
        }
    }
    if any {
        Some(event)
    } else {
        Some(Event::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_are_reassembled() {
        let stream = b"data: {\"a\":1}\n\n: keep-alive\n\nevent: response.created\ndata: {\"b\":2}\n\ndata: [DONE]\n\n";
        for split in 0..stream.len() {
            let mut scanner = Scanner::new();
            let mut events = scanner.push(&stream[..split]).unwrap();
            events.extend(scanner.push(&stream[split..]).unwrap());
            assert_eq!(events.len(), 4, "split at {split}");
            assert_eq!(events[0].data.as_deref(), Some("{\"a\":1}"));
            assert_eq!(events[1], Event::default(), "a comment is an empty event");
            assert_eq!(events[2].name.as_deref(), Some("response.created"));
            assert_eq!(events[3].data.as_deref(), Some("[DONE]"));
            assert!(!scanner.has_partial());
        }
    }

    #[test]
    fn crlf_and_multiline_data_are_understood() {
        let mut scanner = Scanner::new();
        let events = scanner
            .push(b"data: a\r\ndata: b\r\n\r\ndata:c\n\n")
            .unwrap();
        assert_eq!(events[0].data.as_deref(), Some("a\nb"));
        assert_eq!(events[1].data.as_deref(), Some("c"));
        scanner.push(b"data: unfinished").unwrap();
        assert!(scanner.has_partial());
    }
}
