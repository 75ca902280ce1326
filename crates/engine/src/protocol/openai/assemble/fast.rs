//! A hand scanner for the chunks almost every chat stream is made of — the first one (role and
//! the common fields), the many that carry text, the one with the finish reason and the one with
//! the usage — read without serde. Each has at most one choice whose delta carries text or a role.
//! It answers only when the chunk is exactly such a shape: any other key or value, a duplicate
//! key, two choices, an escape where a value is kept, or anything serde would refuse, and it
//! answers `None` so the caller parses the chunk with serde as before. Its answers are checked
//! against serde's by the tests below and by the SSE fuzz target.

use std::borrow::Cow;

use crate::protocol::json::{self, string_stop};

mod shapes; // chunks of a known shape (their changing values cut out), remembered across streams

/// A chunk read by the scanner.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct FastChunk<'a> {
    /// The common fields the assembler does not keep yet, as serde would have read them.
    pub first: FirstFields<'a>,
    /// The one choice, or `None` for `"choices": []`.
    pub choice: Option<TextChunk<'a>>,
    /// A usage that is not `null`, as the upstream wrote it (checked as serde checks a raw value).
    pub usage: Option<&'a str>,
    /// Where the `obfuscation` string (quotes included) is in the chunk: OpenAI pads every
    /// chunk with a random one, so it is the one other part of a text chunk that changes.
    pub obfuscation_at: Option<(usize, usize)>,
    /// Where the `choices` key starts, which top-level keys came before it and which common
    /// fields were taken there (when no usage or padding came before it): that head is what the
    /// next chunks usually repeat byte for byte.
    head: Option<(usize, Seen, Kept)>,
}

/// What changes from one chunk of a shape to the next: the id, `created`, the padding and the
/// usage's counts.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Hole {
    #[default]
    Id,
    Created,
    Padding,
    /// A usage object, as the scan meets it: a shape has its counts as holes.
    Usage,
    /// An unsigned integer in a usage.
    Count,
}

/// Most holes a scan notes: the id, `created`, the padding and a usage (a chunk with more has
/// no shape).
const MOST_HOLES: usize = 4;

/// The holes of a scanned chunk in the order they came, each with where its value is.
#[derive(Debug, Default)]
struct Holes {
    spans: [(Hole, usize, usize); MOST_HOLES],
    len: usize,
    /// More holes were read than fit: the chunk has no shape.
    shapeless: bool,
}

impl Holes {
    fn add(&mut self, hole: Hole, start: usize, end: usize) {
        match self.spans.get_mut(self.len) {
            Some(span) => {
                *span = (hole, start, end);
                self.len += 1;
            }
            None => self.shapeless = true,
        }
    }

    fn spans(&self) -> &[(Hole, usize, usize)] {
        &self.spans[..self.len]
    }
}

/// Which of the top-level keys a scan has met (`id`, `created`, `model`, `system_fingerprint`,
/// `service_tier`, `choices`, `usage`): each may come once.
type Seen = [bool; 7];

/// Common fields met for the first time (each `None` when absent or already kept): the id's
/// text, and the others as the JSON text serde writes for the value (the scanner takes only
/// values written that way: an unsigned integer without a leading zero, a string without
/// escapes), borrowed from the chunk, so that keeping them parses and allocates nothing.
#[derive(Debug, PartialEq, Default)]
pub(crate) struct FirstFields<'a> {
    pub id: Option<&'a str>,
    pub created: Option<&'a str>,
    pub model: Option<&'a str>,
    pub system_fingerprint: Option<&'a str>,
    pub service_tier: Option<&'a str>,
}

impl FirstFields<'_> {
    /// Which fields these are.
    fn taken(&self) -> Kept {
        Kept {
            id: self.id.is_some(),
            created: self.created.is_some(),
            model: self.model.is_some(),
            system_fingerprint: self.system_fingerprint.is_some(),
            service_tier: self.service_tier.is_some(),
            usage: false,
        }
    }
}

/// The one choice of a chunk: its text, role and finish reason.
#[derive(Debug, PartialEq)]
pub(crate) struct TextChunk<'a> {
    pub index: usize,
    pub role: Option<Cow<'a, str>>,
    pub content: Option<Cow<'a, str>>,
    /// A finish reason that is a string without escapes (`None` for `null` or absent).
    pub finish_reason: Option<&'a str>,
    /// Where the content's string (quotes included) is in the chunk.
    pub content_at: Option<(usize, usize)>,
}

/// The text around the content of the last plain text chunk read. A stream's text chunks are
/// the same but for their content (and OpenAI's random `obfuscation` padding), so the next one
/// is read by comparing it with these (`memcmp`s and the changing strings), not by scanning it
/// key by key: the scan of ~20 chunks was the largest cost of assembling a whole answer.
///
/// Reading by comparison answers exactly what a scan would: the scan of a chunk is decided by
/// its bytes and by which common fields are kept, and the chunk differs from the remembered one
/// only inside complete string literals, read by the same rules the scan reads them by.
#[derive(Debug, Default)]
pub(crate) struct Memo {
    /// The common head of the last chunk scanned (up to its `choices` key), the keys in it and
    /// what is kept once it has been read: a chunk that starts with it is scanned from there.
    head: String,
    head_seen: Seen,
    head_kept: Kept,
    /// The chunk up to its content's string.
    before: String,
    /// From the content's string to the obfuscation's (or to the end, without one).
    after: String,
    /// After the obfuscation's string, when the chunk has one after its content.
    tail: Option<String>,
    index: usize,
    kept: Kept,
}

/// Longest buffer a cleared memo keeps for the next stream: a usual chunk's text fits many times.
const KEPT_BUFFER: usize = 4096;

impl Memo {
    /// Forgets everything remembered, as a new memo knows nothing, keeping the buffers' room (up
    /// to [`KEPT_BUFFER`]) for the next stream.
    pub fn clear(&mut self) {
        let reuse = |buffer: &mut String| {
            let mut buffer = std::mem::take(buffer);
            buffer.clear();
            if buffer.capacity() > KEPT_BUFFER {
                buffer = String::new();
            }
            buffer
        };
        *self = Memo {
            head: reuse(&mut self.head),
            before: reuse(&mut self.before),
            after: reuse(&mut self.after),
            ..Memo::default()
        };
    }

    /// The chunk [`Memo::chunk_into`] reads, returned (for tests).
    #[cfg(test)]
    pub fn chunk<'a>(&mut self, data: &'a str, kept: Kept) -> Option<FastChunk<'a>> {
        let mut chunk = FastChunk::default();
        self.chunk_into(data, kept, &mut chunk).then_some(chunk)
    }

    /// The chunk `data` read by the scanner ([`chunk_from`]), from the end of the remembered head
    /// when it starts with it, into `chunk` (which holds nothing of use when this is `false`);
    /// what it says is remembered for the next one. Read into the caller's room, not returned:
    /// the chunk is a few hundred bytes, which each function and closure it was returned through
    /// copied again.
    pub fn chunk_into<'a>(&mut self, data: &'a str, kept: Kept, chunk: &mut FastChunk<'a>) -> bool {
        let resume = (!self.head.is_empty()
            && self.head_kept == kept
            && data.starts_with(self.head.as_str()))
        .then_some((self.head.len(), self.head_seen));
        let read = shapes::read_or_scan(data, kept, resume, chunk);
        if read {
            if resume.is_none()
                && let Some((at, seen, taken)) = chunk.head
            {
                // What the head gave is kept from now on, so read again with it kept, the head
                // gives nothing: the first chunk's head serves the second, whose would too.
                self.head.clear();
                self.head.push_str(&data[..at]);
                self.head_seen = seen;
                self.head_kept = kept.with(taken);
                // The text chunk an earlier stream had after such a head: this stream's first
                // text chunk is read by comparison too.
                shapes::recall_text(self);
            }
            self.remember(data, chunk, kept, resume.map_or(0, |(at, _)| at));
        }
        read
    }

    /// Remembers `data` if the scanner read it as a text chunk with content and nothing else: no
    /// role, finish reason, usage or newly kept field. `from` is where the remembered head ends
    /// when the chunk was read from there (0 when it was read whole).
    fn remember(&mut self, data: &str, chunk: &FastChunk<'_>, kept: Kept, from: usize) {
        let Some(choice) = &chunk.choice else { return };
        let Some((start, end)) = choice.content_at else {
            return;
        };
        if chunk.first != FirstFields::default()
            || chunk.usage.is_some()
            || choice.role.is_some()
            || choice.finish_reason.is_some()
        {
            return;
        }
        self.before.clear();
        self.before.push_str(&data[..start]);
        self.after.clear();
        match chunk.obfuscation_at {
            Some((from, to)) if from >= end => {
                self.after.push_str(&data[end..from]);
                self.tail = Some(data[to..].to_owned());
            }
            _ => {
                self.after.push_str(&data[end..]);
                self.tail = None;
            }
        }
        self.index = choice.index;
        self.kept = kept;
        if from > 0 {
            shapes::learn_text(self, from);
        }
    }

    /// The chunk `data`, when it is the remembered one with another string as its content.
    pub fn recall<'a>(&self, data: &'a str, kept: Kept) -> Option<TextChunk<'a>> {
        if self.before.is_empty() || self.kept != kept {
            return None;
        }
        let rest = data.strip_prefix(self.before.as_str())?;
        let text = rest.strip_prefix('"')?;
        // The common content, a plain run up to its closing quote, is found by one search.
        let (content, literal) = match string_stop(text.as_bytes()) {
            Some(end) if text.as_bytes()[end] == b'"' => (Cow::Borrowed(&text[..end]), end + 2),
            _ => {
                let mut s = Scan::new(rest);
                (s.string()?, s.at)
            }
        };
        let after = rest[literal..].strip_prefix(self.after.as_str())?;
        match &self.tail {
            None if !after.is_empty() => return None,
            None => {}
            Some(tail) => {
                // The padding is read as the scan reads it: a string without escapes.
                let mut s = Scan::new(after);
                if !after.starts_with('"') || s.plain_string().is_none() || &after[s.at..] != tail {
                    return None;
                }
            }
        }
        let start = self.before.len();
        Some(TextChunk {
            index: self.index,
            role: None,
            content: Some(content),
            finish_reason: None,
            content_at: Some((start, start + literal)),
        })
    }

    /// Whether the remembered text has no line end: one with one would make an event's data
    /// several lines, joined otherwise than [`Memo::recall_event`] compares them.
    fn one_line(&self) -> bool {
        let mut texts = [&self.before, &self.after].into_iter().chain(&self.tail);
        texts.all(|t| memchr::memchr(b'\n', t.as_bytes()).is_none())
    }

    /// Reads the run of SSE events at the front of `text` (a stream without `\r`, at an event's
    /// start) that [`Memo::recall_event`] recalls, read with `kept` fields, handing `each` the
    /// choice and content of every one; the bytes they were (0: none).
    pub fn run(&self, text: &str, kept: Kept, mut each: impl FnMut(usize, &str)) -> usize {
        if self.before.is_empty() || self.kept != kept {
            return 0;
        }
        let mut taken = 0;
        while let Some((content, len)) = text.get(taken..).and_then(|at| self.recall_event(at)) {
            // Asked once a run matched: most offers match nothing.
            if taken == 0 && !self.one_line() {
                return 0;
            }
            each(self.index, content);
            taken += len;
        }
        taken
    }

    /// The SSE event at the front of `event` (`data: `, the chunk, a blank line: a stream without
    /// `\r`), when its chunk is the remembered one with another non-empty plain string as its
    /// content (and another plain padding string): the content, and the event's length with its
    /// blank line. What [`Memo::recall`] reads of the event's data, found without the SSE scanner:
    /// the whole event is compared in place, so its end is found without a search.
    ///
    /// `None` for anything else, and then the scanner reads the event as before: escapes, an
    /// empty content, another event field, or an event not yet complete in `event`. Its answer
    /// counts only for a chunk read with the remembered kept fields, when the remembered text is
    /// [`Memo::one_line`] ([`Memo::run`] sees to both).
    fn recall_event<'a>(&self, event: &'a str) -> Option<(&'a str, usize)> {
        let rest = event.strip_prefix("data: ")?;
        let rest = rest.strip_prefix(self.before.as_str())?;
        let text = rest.strip_prefix('"')?;
        let end = string_stop(text.as_bytes()).filter(|&end| end > 0)?;
        let content = text.get(..end)?;
        let mut rest = text[end..].strip_prefix('"')?;
        rest = rest.strip_prefix(self.after.as_str())?;
        if let Some(tail) = &self.tail {
            // The padding is read as the scan reads it: a string without escapes.
            let padding = rest.strip_prefix('"')?;
            let stop = string_stop(padding.as_bytes())?;
            rest = padding[stop..].strip_prefix('"')?;
            rest = rest.strip_prefix(tail.as_str())?;
        }
        rest.strip_prefix("\n\n")?;
        Some((content, event.len() - rest.len() + 2))
    }
}

/// Which of the chunk's common fields the assembler already keeps: their values may be skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Kept {
    pub id: bool,
    pub created: bool,
    pub model: bool,
    pub system_fingerprint: bool,
    pub service_tier: bool,
    /// The usage is not wanted at all (the classifier's case): it is checked, not kept.
    pub usage: bool,
}

impl Kept {
    /// These fields and `taken`'s.
    fn with(self, taken: Kept) -> Kept {
        Kept {
            id: self.id || taken.id,
            created: self.created || taken.created,
            model: self.model || taken.model,
            system_fingerprint: self.system_fingerprint || taken.system_fingerprint,
            service_tier: self.service_tier || taken.service_tier,
            usage: self.usage || taken.usage,
        }
    }

    /// Every common field and the usage skipped: what a reader that keeps none of them (the
    /// classifier) uses.
    pub const ALL: Kept = Kept {
        id: true,
        created: true,
        model: true,
        system_fingerprint: true,
        service_tier: true,
        usage: true,
    };
}

impl TextChunk<'_> {
    /// What the chunk with this one choice means, by `content::classify`'s rules: text is
    /// content, a finish reason (not an empty one) finishes.
    pub fn signal(&self) -> crate::protocol::Signal {
        use crate::protocol::Signal;
        let content = self.content.as_deref().is_some_and(|t| !t.is_empty());
        match (content, self.finish_reason.is_some_and(|r| !r.is_empty())) {
            (content, true) => Signal::Finish { content },
            (true, false) => Signal::Content,
            (false, false) => Signal::Nothing,
        }
    }
}

/// The chunk `data` (already trimmed), when it is one of the common shapes; scanned from the
/// end of a remembered head when `head` says where that is and which top-level keys it had.
///
/// `holes` notes where the values that change from stream to stream (the id, `created`, the
/// padding, the usage) are, so that the chunk's shape can be kept ([`shapes`]). They are not
/// part of the chunk: it is moved several times on its way to the assembler, and only a chunk
/// that becomes a shape needs them (most are read by comparison, with none to note).
fn chunk_from<'a>(
    data: &'a str,
    kept: Kept,
    head: Option<(usize, Seen)>,
    holes: &mut Holes,
) -> Option<FastChunk<'a>> {
    let mut s = Scan::new(data);
    let mut chunk = FastChunk::default();
    let mut seen = head.map_or([false; 7], |(_, seen)| seen);
    let field = |s: &mut Scan<'a>, key: &'a str| {
        let once = |i: usize, seen: &mut [bool; 7]| !std::mem::replace(&mut seen[i], true);
        let first = &mut chunk.first;
        match key {
            "id" if once(0, &mut seen) => s.hole(Hole::Id, kept, first, holes).map(drop),
            "created" if once(1, &mut seen) => s.hole(Hole::Created, kept, first, holes).map(drop),
            "model" if once(2, &mut seen) => {
                if kept.model {
                    return s.plain_string();
                }
                first.model = Some(s.plain_json_string()?);
                Some(())
            }
            "system_fingerprint" if once(3, &mut seen) => {
                s.first_nullable(kept.system_fingerprint, &mut first.system_fingerprint)
            }
            "service_tier" if once(4, &mut seen) => {
                s.first_nullable(kept.service_tier, &mut first.service_tier)
            }
            // Its counts change from stream to stream: they are holes of the chunk's shape.
            "usage" if once(6, &mut seen) => s.null().or_else(|| {
                let (start, end) = s.hole(Hole::Usage, kept, first, holes)?;
                if !kept.usage {
                    chunk.usage = Some(&s.text[start..end]);
                }
                Some(())
            }),
            // Fields the assembler does not read at all (serde ignores them too).
            "object" => s.plain_string(),
            "obfuscation" => {
                let padding = s.hole(Hole::Padding, kept, first, holes)?;
                chunk.obfuscation_at = Some(padding);
                Some(())
            }
            "choices" if once(5, &mut seen) => {
                // Everything before this key is a head the next chunk may share: the scan's
                // state there is its position, the keys seen and the common fields taken.
                if chunk.usage.is_none() && chunk.obfuscation_at.is_none() {
                    let mut before = seen;
                    before[5] = false;
                    chunk.head = Some((s.key_at, before, chunk.first.taken()));
                }
                s.byte(b'[')?;
                s.space();
                if s.bytes.get(s.at) != Some(&b']') {
                    chunk.choice = Some(s.choice()?);
                }
                s.byte(b']')
            }
            _ => None,
        }
    };
    match head {
        None => s.object(field)?,
        Some((at, _)) => {
            s.at = at;
            s.members(field)?;
        }
    }
    s.end()?;
    seen[5].then_some(chunk)
}

struct Scan<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    /// Where the key being read starts.
    key_at: usize,
}

impl<'a> Scan<'a> {
    fn new(text: &'a str) -> Scan<'a> {
        Scan {
            text,
            bytes: text.as_bytes(),
            at: 0,
            key_at: 0,
        }
    }

    fn space(&mut self) {
        // Upstreams write chunks without spaces: one comparison for the common byte.
        if self.bytes.get(self.at).is_none_or(|&b| b > b' ') {
            return;
        }
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn byte(&mut self, want: u8) -> Option<()> {
        self.space();
        (self.bytes.get(self.at) == Some(&want)).then(|| self.at += 1)
    }

    fn end(&mut self) -> Option<()> {
        self.space();
        (self.at == self.bytes.len()).then_some(())
    }

    /// `{ "key": value, … }`, each value read by `field` (which answers `None` to give up).
    fn object(&mut self, field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.byte(b'{')?;
        self.space();
        if self.bytes.get(self.at) == Some(&b'}') {
            self.at += 1;
            return Some(());
        }
        self.members(field)
    }

    /// An object's `"key": value` pairs and its closing brace, from the first key on.
    fn members(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        loop {
            self.key_at = self.at;
            let (key, escaped) = self.raw_string()?;
            if escaped {
                return None;
            }
            self.byte(b':')?;
            self.space();
            field(self, key)?;
            self.space();
            match self.bytes.get(self.at)? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
            self.space();
        }
    }

    /// A string's text between its quotes, escapes left as written, and whether it has any.
    /// Control characters (which JSON forbids in strings) give up.
    fn raw_string(&mut self) -> Option<(&'a str, bool)> {
        self.byte(b'"')?;
        let start = self.at;
        let mut escaped = false;
        loop {
            self.at += string_stop(self.bytes.get(self.at..)?)?;
            match self.bytes[self.at] {
                b'"' => {
                    self.at += 1;
                    return Some((&self.text[start..self.at - 1], escaped));
                }
                b'\\' => {
                    escaped = true;
                    self.at += 2;
                }
                _ => return None,
            }
        }
    }

    /// The value of `hole` here ([`Scan::hole_value`]), noted in `holes`; where it is.
    fn hole(
        &mut self,
        hole: Hole,
        kept: Kept,
        first: &mut FirstFields<'a>,
        holes: &mut Holes,
    ) -> Option<(usize, usize)> {
        let start = self.at;
        self.hole_value(hole, kept, first)?;
        holes.add(hole, start, self.at);
        Some((start, self.at))
    }

    /// The value of `hole` here, by the one reader for it, whether the chunk is scanned or read
    /// by a shape: the id and `created` are taken into `first` unless kept.
    fn hole_value(&mut self, hole: Hole, kept: Kept, first: &mut FirstFields<'a>) -> Option<()> {
        match hole {
            Hole::Id if kept.id => self.plain_string(),
            Hole::Id => {
                first.id = Some(self.plain_text()?);
                Some(())
            }
            Hole::Created if kept.created => self.digits(),
            Hole::Created => {
                let start = self.at;
                self.digits()?;
                first.created = Some(&self.text[start..self.at]);
                Some(())
            }
            Hole::Padding => self.plain_string(),
            Hole::Usage => self.skip_value(),
            // A count is a number as the usage's check reads one, and nothing but digits.
            Hole::Count => {
                let start = self.at;
                self.skip_value()?;
                let digits = &self.bytes[start..self.at];
                (!digits.is_empty() && digits.iter().all(u8::is_ascii_digit)).then_some(())
            }
        }
    }

    /// A string whose value is not needed: one without escapes (an escape would have to be
    /// checked, which serde does).
    fn plain_string(&mut self) -> Option<()> {
        (!self.raw_string()?.1).then_some(())
    }

    /// A string's value, unescaped (by serde, for the rare string with escapes).
    fn string(&mut self) -> Option<Cow<'a, str>> {
        let start = self.at;
        let (raw, escaped) = self.raw_string()?;
        if escaped {
            return serde_json::from_str::<String>(&self.text[start..self.at])
                .ok()
                .map(Cow::Owned);
        }
        Some(Cow::Borrowed(raw))
    }

    /// A string without escapes, as written.
    fn plain_text(&mut self) -> Option<&'a str> {
        let (text, escaped) = self.raw_string()?;
        (!escaped).then_some(text)
    }

    /// A string without escapes, quotes included: the JSON text serde writes for its value (it
    /// escapes nothing a string without escapes can hold).
    fn plain_json_string(&mut self) -> Option<&'a str> {
        let start = self.at;
        self.plain_text()?;
        Some(&self.text[start..self.at])
    }

    /// `null` or a string without escapes, skipped when `kept` or `null` (which serde reads as
    /// absent), else put in `slot` as its JSON text.
    fn first_nullable(&mut self, kept: bool, slot: &mut Option<&'a str>) -> Option<()> {
        if self.null().is_some() {
            return Some(());
        }
        let text = self.plain_json_string()?;
        if !kept {
            *slot = Some(text);
        }
        Some(())
    }

    /// Any JSON value, checked as serde checks one it skips or keeps raw ([`json::value_end`]).
    fn skip_value(&mut self) -> Option<()> {
        self.at = json::value_end(self.text, self.at)?;
        Some(())
    }

    fn null(&mut self) -> Option<()> {
        self.bytes[self.at..]
            .starts_with(b"null")
            .then(|| self.at += 4)
    }

    /// An unsigned integer without a leading zero, at most `max_digits` long.
    fn unsigned(&mut self, max_digits: usize) -> Option<usize> {
        let start = self.at;
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        let digits = &self.text[start..self.at];
        if digits.is_empty()
            || digits.len() > max_digits
            || (digits.len() > 1 && digits.starts_with('0'))
        {
            return None;
        }
        digits.parse().ok()
    }

    fn digits(&mut self) -> Option<()> {
        self.unsigned(18).map(|_| ())
    }

    /// A string or `null`.
    fn nullable_string(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.null().is_some() {
            return Some(None);
        }
        self.string().map(Some)
    }

    /// `{"index": N, "delta": {"role"?: …, "content"?: …, "refusal"?: null}, "logprobs"?: null,
    /// "finish_reason"?: null or a string}`.
    fn choice(&mut self) -> Option<TextChunk<'a>> {
        let mut chunk = TextChunk {
            index: 0,
            role: None,
            content: None,
            finish_reason: None,
            content_at: None,
        };
        let mut seen = [false; 4];
        self.object(|s, key| {
            let slot = match key {
                "index" => 0,
                "delta" => 1,
                "finish_reason" => 2,
                "logprobs" => 3,
                _ => return None,
            };
            if std::mem::replace(&mut seen[slot], true) {
                return None;
            }
            match slot {
                0 => chunk.index = s.unsigned(3)?,
                1 => {
                    let mut delta_seen = [false; 3];
                    s.object(|s, key| {
                        let slot = match key {
                            "role" => 0,
                            "content" => 1,
                            // The first chunk's `"refusal": null`; a refusal's text is serde's.
                            "refusal" => 2,
                            _ => return None,
                        };
                        if std::mem::replace(&mut delta_seen[slot], true) {
                            return None;
                        }
                        match slot {
                            0 => chunk.role = s.nullable_string()?,
                            1 => {
                                let start = s.at;
                                chunk.content = s.nullable_string()?;
                                if chunk.content.is_some() {
                                    chunk.content_at = Some((start, s.at));
                                }
                            }
                            _ => s.null()?,
                        }
                        Some(())
                    })?
                }
                2 => {
                    if s.null().is_none() {
                        chunk.finish_reason = Some(s.plain_text()?);
                    }
                }
                _ => s.null()?,
            }
            Some(())
        })?;
        Some(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::openai::assemble::Assembler;

    const FIRST: &str = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","system_fingerprint":"fp_1","service_tier":"default","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}"#;
    const TEXT: &str = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","system_fingerprint":"fp_1","service_tier":"default","choices":[{"index":0,"delta":{"content":"Hel\"lo\n \u00e9"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"x1"}"#;
    const USAGE: &str = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5,"prompt_tokens_details":{"cached_tokens":0}}}"#;
    const LAST: &str = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;

    /// Feeds `chunks` to an assembler with the scanner and to one without: every signal and the
    /// assembled answer must be the same.
    fn same_as_serde(chunks: &[&str]) {
        // Twice: the second stream, with another id and time, meets the shapes the first left.
        let again: Vec<String> = (chunks.iter())
            .map(|chunk| {
                (chunk.replace("chatcmpl-1", "chatcmpl-20")).replace("1700000000", "1700000009")
            })
            .collect();
        same_stream_as_serde(chunks);
        same_stream_as_serde(&again.iter().map(String::as_str).collect::<Vec<_>>());
    }

    fn same_stream_as_serde(chunks: &[&str]) {
        use crate::protocol::Classify as _;
        use crate::protocol::openai::content::{ChatClassifier, classify};
        let (mut fast, mut serde) = (Assembler::new(), Assembler::without_fast_path());
        let mut classifier = ChatClassifier::default();
        for chunk in chunks {
            assert_eq!(
                fast.push_classified(chunk),
                serde.push_classified(chunk),
                "{chunk}"
            );
            // The stream classifier (scanner and memo, no assembling) says what serde says.
            let event = crate::sse::Event {
                name: None,
                data: Some(Cow::Borrowed(chunk)),
            };
            assert_eq!(
                classifier.classify(&event),
                classify(crate::protocol::Endpoint::Chat, &event),
                "classifying {chunk}"
            );
        }
        assert_eq!(fast.finish(), serde.finish(), "{chunks:?}");
    }

    /// Every common field kept (as after FIRST), the usage still read: the assembler's case.
    const ALL: Kept = Kept {
        usage: false,
        ..Kept::ALL
    };

    #[test]
    fn a_reader_that_wants_no_usage_has_it_checked_not_kept() {
        let read = chunk(USAGE, ALL).expect("a usage chunk");
        assert!(read.usage.is_some());
        let checked = chunk(USAGE, Kept::ALL).expect("a usage chunk, its usage checked");
        assert!(checked.usage.is_none());
        // A usage serde would refuse is refused either way (the caller then reads with serde).
        let broken = USAGE.replace(r#""total_tokens":5"#, r#""total_tokens":05"#);
        assert!(chunk(&broken, ALL).is_none());
        assert!(chunk(&broken, Kept::ALL).is_none());
    }

    fn chunk(data: &str, kept: Kept) -> Option<FastChunk<'_>> {
        chunk_from(data, kept, None, &mut Holes::default())
    }

    #[test]
    fn the_common_chunks_are_read_by_the_scanner() {
        let all = ALL;
        let text = chunk(TEXT, all).expect("a plain text chunk");
        let choice = text.choice.expect("one choice");
        assert_eq!(choice.content.as_deref(), Some("Hel\"lo\n \u{e9}"));
        assert_eq!(
            text.first,
            FirstFields::default(),
            "kept fields are skipped"
        );
        let first = chunk(FIRST, Kept::default()).expect("the first chunk");
        assert_eq!(first.first.id, Some("chatcmpl-1"));
        assert_eq!(first.first.created, Some("1700000000"));
        assert_eq!(first.first.service_tier, Some(r#""default""#));
        assert_eq!(
            first.choice.expect("a choice").role.as_deref(),
            Some("assistant")
        );
        let last = chunk(LAST, all).expect("the last chunk");
        assert_eq!(last.choice.expect("a choice").finish_reason, Some("stop"));
        let usage: serde_json::Value = serde_json::from_str(last.usage.expect("a usage")).unwrap();
        assert_eq!(usage["total_tokens"], 5);
        let usage = chunk(USAGE, all).expect("the usage chunk");
        assert_eq!((usage.choice, usage.usage.is_some()), (None, true));
        assert!(
            chunk(r#"{"choices":[{"delta":{"content":"a"}}],"error":{}}"#, all).is_none(),
            "an error is serde's"
        );
    }

    #[test]
    fn every_answer_is_the_one_serde_gives() {
        same_as_serde(&[FIRST, TEXT, TEXT, LAST, "[DONE]"]);
        same_as_serde(&[FIRST, TEXT, LAST, USAGE, "[DONE]"]);
        // Every prefix of the first and last chunks, on their own and after a first chunk.
        for whole in [FIRST, LAST, USAGE] {
            for end in 0..=whole.len() {
                same_as_serde(&[&whole[..end]]);
                same_as_serde(&[FIRST, &whole[..end], TEXT]);
            }
        }
        // Every prefix of a text chunk (malformed JSON) after a good first chunk.
        for end in 0..=TEXT.len() {
            if TEXT.is_char_boundary(end) {
                same_as_serde(&[FIRST, &TEXT[..end], TEXT]);
            }
        }
        let variants = [
            r#"{"choices":[{"index":0,"delta":{"content":"a"}}]}"#,
            r#" { "choices" : [ { "index" : 0 , "delta" : { "content" : "a" } } ] } "#,
            r#"{"choices":[{"index":1,"delta":{"content":"b"}}]}"#,
            r#"{"choices":[{"index":127,"delta":{"content":"b"}}]}"#,
            r#"{"choices":[{"index":128,"delta":{"content":"b"}}]}"#,
            r#"{"choices":[{"index":007,"delta":{"content":"b"}}]}"#,
            r#"{"choices":[{"index":-1,"delta":{"content":"b"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":null}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":""}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"role":null,"content":"x"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"x","content":"y"}}]}"#,
            r#"{"choices":[{"index":0,"index":0,"delta":{"content":"y"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"x"}}],"choices":[]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"bad \x escape"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"\ud800"}}]}"#,
            "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\tb\"}}]}",
            r#"{"choices":[{"index":0,"delta":{"content":"a"}}]} trailing"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":"b"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"length"}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"logprobs":{"content":[]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a","tool_calls":[]}}]}"#,
            r#"{"id":"other","choices":[{"index":0,"delta":{"content":"a"}}]}"#,
            r#"{"model":null,"choices":[{"index":0,"delta":{"content":"a"}}]}"#,
            r#"{"created":1.5e9,"choices":[{"index":0,"delta":{"content":"a"}}]}"#,
            r#"{"usage":{"total_tokens":1},"choices":[{"index":0,"delta":{"content":"a"}}]}"#,
            r#"{"error":{"message":"overloaded"},"choices":[{"index":0,"delta":{"content":"a"}}]}"#,
            r#"{"obfuscation":"a","obfuscation":"b","choices":[{"index":0,"delta":{"content":"a"}}]}"#,
            r#"{"usage":null,"usage":null,"choices":[{"index":0,"delta":{"content":"a"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"logprobs":null,"logprobs":null}]}"#,
            r#"{"choices":[{"index":0,"finish_reason":null,"finish_reason":null,"delta":{"content":"a"}}]}"#,
            r#"{"\u0069d":"x","choices":[{"index":0,"delta":{"content":"a"}}]}"#,
            r#"{"choices":[{"index":0}]}"#,
            r#"{"id":"a\"b","choices":[{"index":0,"delta":{"content":"a"}}]}"#,
            r#"{"id":null,"choices":[{"index":0,"delta":{"content":"a"}}]}"#,
            r#"{"id":7,"choices":[{"index":0,"delta":{"content":"a"}}]}"#,
            r#"{"created":null,"model":"m","choices":[]}"#,
            r#"{"created":012,"choices":[]}"#,
            r#"{"created":-5,"choices":[]}"#,
            r#"{"created":99999999999999999999,"choices":[]}"#,
            r#"{"model":"m\u00e9","choices":[]}"#,
            r#"{"model":7,"choices":[]}"#,
            r#"{"system_fingerprint":null,"service_tier":null,"choices":[]}"#,
            r#"{"system_fingerprint":"fp","service_tier":"s","choices":[]}"#,
            r#"{"system_fingerprint":5,"choices":[]}"#,
            r#"{"choices":[],"usage":{"total_tokens":1}}"#,
            r#"{"choices":[],"usage":5}"#,
            r#"{"choices":[],"usage":[1,2]}"#,
            r#"{"choices":[],"usage":"x"}"#,
            r#"{"choices":[],"usage":{"total_tokens":1}x}"#,
            r#"{"choices":[],"usage":{"total_tokens":1,}}"#,
            r#"{"choices":[],"usage":{"a":1},"usage":{"a":2}}"#,
            r#"{"choices":[ ],"usage":null}"#,
            r#"{"choices":[],}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":""}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":""},"finish_reason":""}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"st\"op"}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":5}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":{"a":1}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"length"}]}"#,
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"refusal":"no"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"refusal":null,"refusal":null}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"refusal":""}}]}"#,
            r#"{"choices":[{}]}"#,
            r#"{"choices":[]}"#,
            r#"{}"#,
            r#"[]"#,
            r#"nul"#,
        ];
        let head = &TEXT[..TEXT.find(r#""choices""#).unwrap()];
        for variant in variants {
            same_as_serde(&[variant]);
            same_as_serde(&[FIRST, variant, LAST]);
            // After a text chunk the scanner remembers: compared, not scanned.
            same_as_serde(&[FIRST, TEXT, variant, TEXT, LAST]);
            // The text chunk's head and then the variant's keys: scanned from the head's end.
            if let Some(keys) = variant.trim_start().strip_prefix('{') {
                let headed = format!("{head}{}", keys.trim_start());
                same_as_serde(&[FIRST, TEXT, &headed, TEXT, &headed, LAST]);
            }
        }
    }

    #[test]
    fn a_chunk_read_by_comparison_is_read_as_a_scan_would() {
        let literal = r#""Hel\"lo\n \u00e9""#;
        assert!(TEXT.contains(literal));
        let others = [
            r#""x""#,
            r#""""#,
            "null",
            r#""a\"b""#,
            r#""bad \x""#,
            r#""\ud800""#,
            "\"a\tb\"",
            r#""unterminated"#,
            r#""a" "b""#,
            r#""a","content":"b""#,
            r#" "a""#,
            r#""a" "#,
            r#"7"#,
            r#""é""#,
        ];
        for other in others {
            let chunk = TEXT.replace(literal, other);
            same_as_serde(&[FIRST, TEXT, &chunk, &chunk, TEXT, LAST]);
            // The memo is taken only after the first chunk's fields are kept.
            same_as_serde(&[TEXT, &chunk, FIRST, &chunk, LAST]);
        }
        // A hit: the same bytes but for the content, read by comparison, give its text.
        let mut memo = Memo::default();
        let first = chunk(TEXT, ALL).expect("a text chunk");
        memo.remember(TEXT, &first, ALL, 0);
        let next = TEXT.replace(literal, r#""more""#);
        let read = memo.recall(&next, ALL).expect("read by comparison");
        assert_eq!(read.content.as_deref(), Some("more"));
        assert_eq!(
            memo.recall(&next, Kept::default()),
            None,
            "other fields kept: scanned"
        );
        assert_eq!(memo.recall(LAST, ALL), None);
        // OpenAI's padding changes in every chunk: still read by comparison.
        let padded = next.replace(r#""x1""#, r#""Zq0""#);
        let read = memo
            .recall(&padded, ALL)
            .expect("other padding, read by comparison");
        assert_eq!(read.content.as_deref(), Some("more"));
    }

    #[test]
    fn a_chunk_with_the_remembered_head_is_scanned_from_its_end() {
        let mut memo = Memo::default();
        let first = memo.chunk(FIRST, Kept::default()).expect("the first chunk");
        assert_eq!(first.first.model, Some(r#""gpt-4o-mini""#));
        // Remembered with what it gave kept: read again so, it gives nothing.
        let head = &TEXT[..TEXT.find(r#""choices""#).unwrap()];
        assert_eq!(memo.head, head);
        assert_eq!(memo.head_kept, ALL);
        let text = memo
            .chunk(TEXT, ALL)
            .expect("a text chunk, read from the head's end");
        assert_eq!(text.first, FirstFields::default());
        assert_eq!(
            text.choice.unwrap().content.as_deref(),
            Some("Hel\"lo\n \u{e9}")
        );
        // Fewer fields kept than the head would leave: scanned whole, and the head kept as it was.
        let partly = Kept {
            id: true,
            ..Kept::default()
        };
        let whole = memo.chunk(TEXT, partly).expect("scanned whole");
        assert_eq!(whole.first.model, Some(r#""gpt-4o-mini""#));
        assert_eq!(whole.first.id, None);
        assert_eq!(memo.head_kept, ALL);
        // The same head, then what the full scan also reads.
        let last = format!(
            "{head}{}",
            r#""choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#
        );
        let read = memo.chunk(&last, ALL).expect("read from the head's end");
        assert_eq!(read.choice.unwrap().finish_reason, Some("stop"));
        // A key of the head again: refused, as the full scan refuses it.
        let again = format!("{head}{}", r#""id":"x","choices":[]}"#);
        assert!(chunk(&again, ALL).is_none());
        assert!(memo.chunk(&again, ALL).is_none());
        // Other fields kept: the head is not used (the scan reads what it would take).
        let first = memo.chunk(&last, Kept::default()).expect("scanned whole");
        assert_eq!(first.first.id, Some("chatcmpl-1"));
    }

    #[test]
    fn a_later_stream_reads_its_first_text_chunk_by_comparison() {
        let mut memo = Memo::default();
        memo.chunk(FIRST, Kept::default()).expect("the first chunk");
        assert_eq!(memo.recall(TEXT, ALL), None, "nothing remembered yet");
        memo.chunk(TEXT, ALL)
            .expect("a text chunk, scanned from the head");
        // Another stream: another id and time, the same head otherwise.
        let other = |chunk: &str| chunk.replace("chatcmpl-1", "chatcmpl-2");
        let mut memo = Memo::default();
        let other_first = other(FIRST);
        let first = memo
            .chunk(&other_first, Kept::default())
            .expect("a first chunk");
        assert_eq!(first.first.id, Some("chatcmpl-2"));
        let text = other(&TEXT.replace("Hel", "Bye"));
        let read = memo.recall(&text, ALL).expect("read by comparison");
        assert_eq!(read.content.as_deref(), Some("Bye\"lo\n \u{e9}"));
        // A head with other keys: the text kept after the first is not used.
        let mut memo = Memo::default();
        let headless = FIRST.replace(r#""service_tier":"default","#, "");
        memo.chunk(&headless, Kept::default())
            .expect("a first chunk");
        assert!(memo.before.is_empty());
    }

    /// A cleared memo knows what a new one knows, nothing, and keeps its buffers' room for the
    /// next stream (but not a large one's).
    #[test]
    fn a_cleared_memo_remembers_nothing_and_keeps_its_room() {
        let mut memo = Memo::default();
        memo.chunk(FIRST, Kept::default()).expect("the first chunk");
        memo.chunk(TEXT, ALL).expect("a text chunk");
        assert!(memo.recall(TEXT, ALL).is_some(), "remembered");
        memo.clear();
        assert_eq!(memo.recall(TEXT, ALL), None, "forgotten");
        assert_eq!(memo.run(&format!("data: {TEXT}\n\n"), ALL, |_, _| {}), 0);
        assert!(memo.head.is_empty() && memo.before.is_empty() && memo.after.is_empty());
        assert!(memo.tail.is_none() && memo.head_kept == Kept::default());
        assert!(memo.before.capacity() >= TEXT.len() / 2, "its room kept");
        memo.before.push_str(&"x".repeat(KEPT_BUFFER + 1));
        memo.clear();
        assert_eq!(memo.before.capacity(), 0, "a large buffer is not kept");
    }

    #[test]
    fn a_chunk_with_other_padding_is_read_as_a_scan_would() {
        let padding = r#""x1""#;
        assert!(TEXT.contains(padding));
        let others = [
            r#""x2""#,
            r#""""#,
            r#""a\"b""#,
            r#""\u0041""#,
            "7",
            "null",
            r#""x" "#,
            r#" "x""#,
            r#""unterminated"#,
            r#""x"}"#,
            r#""x","obfuscation":"y""#,
            r#""x","usage":{"total_tokens":1}"#,
            "\"a\tb\"",
        ];
        for other in others {
            let chunk = TEXT.replace(padding, other);
            let both = chunk.replace("Hel", "Bye");
            same_as_serde(&[FIRST, TEXT, &chunk, &both, TEXT, LAST]);
            same_as_serde(&[FIRST, &chunk, TEXT, &both, LAST]);
        }
        // Padding before the content is part of what is compared: another one is scanned.
        let early = r#"{"obfuscation":"p1","choices":[{"index":0,"delta":{"content":"a"}}]}"#;
        same_as_serde(&[
            early,
            &early.replace("p1", "p2"),
            &early.replace("p1", "p\""),
        ]);
    }
}
