//! Chunk shapes remembered across streams, per thread. Within a stream the scanner reads a text
//! chunk by comparing it with the last one, and every chunk from the end of the head the first
//! one had; what was left was the chunks a stream has once — its first, finish and usage chunks
//! — and its first text chunk, each scanned key by key in every stream although an upstream writes
//! them the same in every stream but for the id, `created`, OpenAI's random padding and the
//! usage's counts.
//!
//! So a chunk the scanner read is kept as its shape: its text with those values (the holes) cut
//! out, and what the scan made of it. A later chunk with the same text between values the scan
//! reads by the same rules is the same chunk but for those values, and is read by comparison;
//! anything else — another byte, a value the scan would refuse — is scanned as before. The same
//! holds for the text chunk after a head: its text around the content is kept, and a later
//! stream with the same kind of head reads its first text chunk by comparison too.

use std::borrow::Cow;
use std::cell::RefCell;

use super::{FastChunk, Hole, Holes, Kept, Memo, Scan, Seen, TextChunk, chunk_from};
use crate::protocol::json::string_stop;

/// Most whole shapes a thread keeps: the first, finish and usage chunks of a few upstreams and
/// models, as the assembler and the stream classifier read them.
const MOST_SHAPES: usize = 16;
/// Most text chunks a thread keeps, one per kind of head (the assembler's and the classifier's
/// differ in what they keep).
const MOST_TEXTS: usize = 4;
/// Longest chunk kept as a shape: the common chunks are a few hundred bytes.
const LONGEST: usize = 2048;
/// Most holes a shape has: the id, `created`, the padding and a dozen counts of a usage.
const MOST_HOLES: usize = 16;

thread_local! {
    static SHAPES: RefCell<Shapes> = const { RefCell::new(Shapes::new()) };
}

/// The shapes one thread keeps.
struct Shapes {
    chunks: Vec<Shape>,
    /// Which shape a new one replaces once there are [`MOST_SHAPES`].
    next: usize,
    texts: Vec<TextShape>,
}

/// Where in a chunk of a shape a part of it is: in which piece, how far into it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pos {
    piece: usize,
    at: usize,
}

/// A chunk without its holes, and what the scan made of it.
struct Shape {
    /// What was kept when it was read.
    kept: Kept,
    /// The keys the head had when the chunk was read from a head's end (its pieces start
    /// there); `None` when it was read whole.
    seen: Option<Seen>,
    /// The text between the holes: `pieces[i]` comes before `holes[i]`, and the last piece ends
    /// the chunk.
    pieces: Vec<Box<str>>,
    holes: Vec<Hole>,
    /// Where the common fields it gave are that are the same in every chunk of the shape.
    model: Option<(Pos, Pos)>,
    system_fingerprint: Option<(Pos, Pos)>,
    service_tier: Option<(Pos, Pos)>,
    /// Where the usage it gave is.
    usage: Option<(Pos, Pos)>,
    choice: Option<ChoiceShape>,
    /// Where its `choices` key is, the keys before it and the common fields taken there.
    head: Option<(Pos, Seen, Kept)>,
}

/// The one choice of a shape: no text (a chunk with text is a text chunk, kept apart).
struct ChoiceShape {
    index: usize,
    role: Option<(Pos, Pos)>,
    /// Where the content's string is when there is one (it is `""`).
    content_at: Option<(Pos, Pos)>,
    finish_reason: Option<(Pos, Pos)>,
}

/// A chunk (from `from`) and where its holes are, while its shape is made.
struct Cuts<'d> {
    data: &'d str,
    from: usize,
    holes: Vec<(Hole, usize, usize)>,
}

impl Cuts<'_> {
    /// Where the offset `at` of the chunk is among its pieces; `None` inside a hole.
    fn pos(&self, at: usize) -> Option<Pos> {
        let mut start = self.from;
        for (piece, &(_, hole_start, hole_end)) in self.holes.iter().enumerate() {
            if at <= hole_start {
                return Some(Pos {
                    piece,
                    at: at.checked_sub(start)?,
                });
            }
            if at < hole_end {
                return None;
            }
            start = hole_end;
        }
        Some(Pos {
            piece: self.holes.len(),
            at: at.checked_sub(start)?,
        })
    }

    /// Where `part`, a slice of the chunk, starts and ends.
    fn span(&self, part: &str) -> Option<(Pos, Pos)> {
        let start = part.as_ptr() as usize - self.data.as_ptr() as usize;
        Some((self.pos(start)?, self.pos(start + part.len())?))
    }
}

impl ChoiceShape {
    /// The shape of `choice`: none when it has text, or a value the scan unescaped.
    fn of(choice: &TextChunk<'_>, cuts: &Cuts<'_>) -> Option<ChoiceShape> {
        let borrowed = |text: &Option<Cow<'_, str>>| !matches!(text, Some(Cow::Owned(_)));
        let textless = choice.content.as_deref().is_none_or(str::is_empty);
        if !(textless && borrowed(&choice.role) && borrowed(&choice.content)) {
            return None;
        }
        let role = match choice.role.as_deref() {
            Some(role) => Some(cuts.span(role)?),
            None => None,
        };
        let content_at = match choice.content_at {
            Some((start, end)) => Some((cuts.pos(start)?, cuts.pos(end)?)),
            None => None,
        };
        let finish_reason = match choice.finish_reason {
            Some(reason) => Some(cuts.span(reason)?),
            None => None,
        };
        Some(ChoiceShape {
            index: choice.index,
            role,
            content_at,
            finish_reason,
        })
    }
}

/// The text chunk read after a head, around its content: what `Memo` keeps, without the head.
struct TextShape {
    seen: Seen,
    kept: Kept,
    before: String,
    after: String,
    tail: Option<String>,
    index: usize,
}

impl Shapes {
    const fn new() -> Shapes {
        Shapes {
            chunks: Vec::new(),
            next: 0,
            texts: Vec::new(),
        }
    }

    /// `data` read by a kept shape, from `from` (a head's end, with `seen` its keys).
    fn read<'a>(
        &self,
        data: &'a str,
        from: usize,
        seen: Option<Seen>,
        kept: Kept,
        chunk: &mut FastChunk<'a>,
    ) -> bool {
        (self.chunks.iter())
            .filter(|shape| shape.kept == kept && shape.seen == seen)
            .any(|shape| shape.read(data, from, chunk).is_some())
    }

    /// Keeps the shape of `read`, the scan of `data` from `from`, if it has one.
    fn learn(
        &mut self,
        data: &str,
        from: usize,
        seen: Option<Seen>,
        kept: Kept,
        read: &FastChunk<'_>,
        holes: &Holes,
    ) {
        let Some(shape) = Shape::of(data, from, seen, kept, read, holes) else {
            return;
        };
        if self.chunks.len() < MOST_SHAPES {
            self.chunks.push(shape);
        } else {
            self.chunks[self.next] = shape;
            self.next = (self.next + 1) % MOST_SHAPES;
        }
    }
}

impl Shape {
    /// The shape of `read`, the scan of `data` from `from`: none when the scan read something
    /// that changes and is no hole (a text, a usage with more than objects, plain strings and
    /// counts), or something the shape could not give back as the scan did (an unescaped copy),
    /// or the chunk is long.
    fn of(
        data: &str,
        from: usize,
        seen: Option<Seen>,
        kept: Kept,
        read: &FastChunk<'_>,
        holes: &Holes,
    ) -> Option<Shape> {
        // A text chunk is the usual chunk that has no shape: it is turned away before any work.
        let text =
            |choice: &TextChunk<'_>| choice.content.as_deref().is_some_and(|t| !t.is_empty());
        if holes.shapeless || data.len() - from > LONGEST || read.choice.as_ref().is_some_and(text)
        {
            return None;
        }
        let mut cuts = Cuts {
            data,
            from,
            holes: Vec::with_capacity(MOST_HOLES),
        };
        let mut usage = None;
        for &(hole, start, end) in holes.spans() {
            if hole == Hole::Usage {
                usage = Some((start, end));
                counts(data, start, end, &mut cuts.holes)?;
            } else {
                cuts.holes.push((hole, start, end));
            }
        }
        if cuts.holes.len() > MOST_HOLES {
            return None;
        }
        let pos = |at: usize| cuts.pos(at);
        // Where a common field given is (`Some(None)` for none; `None` when it is in a hole).
        let span = |part: Option<&str>| match part {
            Some(part) => cuts.span(part).map(Some),
            None => Some(None),
        };
        let choice = match &read.choice {
            None => None,
            Some(choice) => Some(ChoiceShape::of(choice, &cuts)?),
        };
        let usage = match (read.usage, usage) {
            (Some(_), Some((start, end))) => Some((pos(start)?, pos(end)?)),
            (Some(_), None) => return None,
            (None, _) => None,
        };
        let head = match read.head {
            Some((at, seen, taken)) => Some((pos(at)?, seen, taken)),
            None => None,
        };
        let mut pieces = Vec::with_capacity(cuts.holes.len() + 1);
        let mut start = from;
        for &(_, hole_start, hole_end) in &cuts.holes {
            pieces.push(data.get(start..hole_start)?.into());
            start = hole_end;
        }
        pieces.push(data.get(start..)?.into());
        Some(Shape {
            kept,
            seen,
            pieces,
            holes: cuts.holes.iter().map(|&(hole, _, _)| hole).collect(),
            model: span(read.first.model)?,
            system_fingerprint: span(read.first.system_fingerprint)?,
            service_tier: span(read.first.service_tier)?,
            usage,
            choice,
            head,
        })
    }

    /// `data` from `from`, when it is this shape with other values in its holes, each one the
    /// scan reads (by the scan's own readers): what the scan of it gives.
    /// Read into `chunk` (which holds nothing of use on `None`), not returned: the chunk is a few
    /// hundred bytes, which each function and closure it was returned through copied again.
    fn read<'a>(&self, data: &'a str, from: usize, chunk: &mut FastChunk<'a>) -> Option<()> {
        let mut starts = [0; MOST_HOLES + 1];
        *chunk = FastChunk::default();
        let mut at = from;
        let (last, pieces) = self.pieces.split_last()?;
        for ((piece, hole), start) in pieces.iter().zip(&self.holes).zip(&mut starts) {
            *start = at;
            if !data.get(at..)?.starts_with(&**piece) {
                return None;
            }
            let mut s = Scan::new(data);
            s.at = at + piece.len();
            let value_at = s.at;
            s.hole_value(*hole, self.kept, &mut chunk.first)?;
            if *hole == Hole::Padding {
                chunk.obfuscation_at = Some((value_at, s.at));
            }
            at = s.at;
        }
        starts[pieces.len()] = at;
        if data.get(at..)? != &**last {
            return None;
        }
        let at = |pos: Pos| starts[pos.piece] + pos.at;
        let text = |(start, end): (Pos, Pos)| &data[at(start)..at(end)];
        chunk.first.model = self.model.map(text);
        chunk.first.system_fingerprint = self.system_fingerprint.map(text);
        chunk.first.service_tier = self.service_tier.map(text);
        chunk.usage = self.usage.map(text);
        chunk.choice = self.choice.as_ref().map(|choice| TextChunk {
            index: choice.index,
            role: choice.role.map(|role| Cow::Borrowed(text(role))),
            content: choice.content_at.map(|_| Cow::Borrowed("")),
            finish_reason: choice.finish_reason.map(text),
            content_at: choice.content_at.map(|(start, end)| (at(start), at(end))),
        });
        chunk.head = self.head.map(|(pos, seen, taken)| (at(pos), seen, taken));
        Some(())
    }
}

/// Adds the counts of the usage at `start..end` in `data` to `holes`: `None` unless it is made
/// of objects, strings without escapes and unsigned integers only (what a usage is).
fn counts(
    data: &str,
    start: usize,
    end: usize,
    holes: &mut Vec<(Hole, usize, usize)>,
) -> Option<()> {
    let bytes = data.as_bytes().get(..end)?;
    let mut at = start;
    while at < end {
        match bytes[at] {
            b'"' => {
                let stop = at + 1 + string_stop(&bytes[at + 1..])?;
                if bytes[stop] != b'"' {
                    return None;
                }
                at = stop + 1;
            }
            b'0'..=b'9' => {
                let count = at;
                while bytes.get(at).is_some_and(u8::is_ascii_digit) {
                    at += 1;
                }
                if !matches!(
                    bytes.get(at),
                    Some(b',' | b'}' | b' ' | b'\n' | b'\r' | b'\t')
                ) {
                    return None;
                }
                holes.push((Hole::Count, count, at));
            }
            b'{' | b'}' | b':' | b',' | b' ' | b'\n' | b'\r' | b'\t' => at += 1,
            _ => return None,
        }
    }
    Some(())
}

/// The chunk `data` as the scanner reads it ([`chunk_from`]), by a shape this thread kept when
/// one fits; else scanned, and its shape kept.
pub(super) fn read_or_scan<'a>(
    data: &'a str,
    kept: Kept,
    resume: Option<(usize, Seen)>,
    chunk: &mut FastChunk<'a>,
) -> bool {
    let (from, seen) = (resume.map_or(0, |(at, _)| at), resume.map(|(_, seen)| seen));
    SHAPES.with_borrow_mut(|shapes| {
        if shapes.read(data, from, seen, kept, chunk) {
            return true;
        }
        let mut holes = Holes::default();
        let Some(read) = chunk_from(data, kept, resume, &mut holes) else {
            return false;
        };
        shapes.learn(data, from, seen, kept, &read, &holes);
        *chunk = read;
        true
    })
}

/// Keeps the text chunk `memo` remembers, read from `from` (the end of its head), as the one
/// to expect after such a head.
pub(super) fn learn_text(memo: &Memo, from: usize) {
    let Some(before) = memo.before.get(from..) else {
        return;
    };
    if before.len() + memo.after.len() + memo.tail.as_ref().map_or(0, String::len) > LONGEST {
        return;
    }
    SHAPES.with_borrow_mut(|shapes| {
        let key = (memo.head_seen, memo.kept);
        let slot = shapes
            .texts
            .iter()
            .position(|text| (text.seen, text.kept) == key);
        if let Some(text) = slot.map(|at| &shapes.texts[at])
            && text.index == memo.index
            && text.before == before
            && text.after == memo.after
            && text.tail == memo.tail
        {
            return;
        }
        let text = TextShape {
            seen: memo.head_seen,
            kept: memo.kept,
            before: before.to_owned(),
            after: memo.after.clone(),
            tail: memo.tail.clone(),
            index: memo.index,
        };
        match slot {
            Some(at) => shapes.texts[at] = text,
            None if shapes.texts.len() < MOST_TEXTS => shapes.texts.push(text),
            // Another kind of head than those kept: it takes the oldest's place.
            None => {
                shapes.texts.remove(0);
                shapes.texts.push(text);
            }
        }
    });
}

/// Has `memo`, whose head was just read, remember the text chunk an earlier stream had after a
/// head with the same keys read with the same fields kept: the chunk after this head that has
/// that text around its content reads as that one did.
pub(super) fn recall_text(memo: &mut Memo) {
    SHAPES.with_borrow(|shapes| {
        let key = (memo.head_seen, memo.head_kept);
        let Some(text) = shapes
            .texts
            .iter()
            .find(|text| (text.seen, text.kept) == key)
        else {
            return;
        };
        memo.before.clear();
        memo.before.reserve(memo.head.len() + text.before.len());
        memo.before.push_str(&memo.head);
        memo.before.push_str(&text.before);
        memo.after.clone_from(&text.after);
        memo.tail.clone_from(&text.tail);
        memo.index = text.index;
        memo.kept = text.kept;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chunk `shape` reads from `data` at `from`, returned.
    fn shape_read<'a>(shape: &Shape, data: &'a str, from: usize) -> Option<FastChunk<'a>> {
        let mut chunk = FastChunk::default();
        shape.read(data, from, &mut chunk).map(|()| chunk)
    }

    /// The scan of `data` and the holes it noted.
    fn scanned(data: &str, kept: Kept) -> (FastChunk<'_>, Holes) {
        let mut holes = Holes::default();
        let read = chunk_from(data, kept, None, &mut holes).expect("a chunk the scan reads");
        (read, holes)
    }

    const FIRST: &str = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"obfuscation":"pad"}"#;

    #[test]
    fn a_chunk_of_a_kept_shape_reads_as_its_scan_does() {
        let kept = Kept::default();
        let (read, holes) = scanned(FIRST, kept);
        let shape = Shape::of(FIRST, 0, None, kept, &read, &holes).expect("a shape");
        assert_eq!(shape.holes, [Hole::Id, Hole::Created, Hole::Padding]);
        let again = shape_read(&shape, FIRST, 0).expect("the same chunk");
        assert_eq!(again, read);
        // Other values in the holes, good and bad, and other bytes around them: the shape
        // answers what the scan answers, or leaves the chunk to it.
        let others = [
            ("chatcmpl-1", "chatcmpl-22"),
            ("chatcmpl-1", ""),
            ("chatcmpl-1", r#"a\"b"#),
            ("chatcmpl-1", "a\tb"),
            ("1700000000", "7"),
            ("1700000000", "0"),
            ("1700000000", "07"),
            ("1700000000", "-7"),
            ("1700000000", "1.5"),
            ("1700000000", "1234567890123456789"),
            ("\"pad\"", "\"\""),
            ("\"pad\"", "\"p\\u0041\""),
            ("\"pad\"", "null"),
            ("\"pad\"", "\"a\",\"x\":1"),
            ("\"m\"", "\"n\""),
            ("assistant", "user"),
            (r#""finish_reason":null"#, r#""finish_reason":"stop""#),
            ("}],", "}],\"usage\":null,"),
        ];
        for (from, to) in others {
            let other = FIRST.replacen(from, to, 1);
            let scanned = chunk_from(&other, kept, None, &mut Holes::default());
            let by_shape = shape_read(&shape, &other, 0);
            match (&scanned, &by_shape) {
                (Some(scanned), Some(by_shape)) => {
                    assert_eq!(by_shape, scanned, "{other}");
                }
                (_, None) => {}
                (None, Some(_)) => panic!("the shape read a chunk the scan refuses: {other}"),
            }
            let hole = ["chatcmpl-1", "1700000000", "\"pad\""].contains(&from);
            let readable = scanned.is_some() && hole;
            assert_eq!(by_shape.is_some(), readable, "{other}");
        }
    }

    const USAGE: &str = r#"{"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":8,"completion_tokens":16,"total_tokens":24,"completion_tokens_details":{"reasoning_tokens":0}}}"#;

    #[test]
    fn a_usage_chunk_of_a_kept_shape_reads_as_its_scan_does() {
        for kept in [Kept::default(), Kept::ALL] {
            let (read, holes) = scanned(USAGE, kept);
            let shape = Shape::of(USAGE, 0, None, kept, &read, &holes).expect("a shape");
            assert_eq!(shape.holes.len(), 5, "the id and four counts");
            let others = [
                (":8,", ":12345678901234567890,", true),
                (":16,", ":0,", true),
                (":0}", ":3}", true),
                (":0}", ":03}", false),
                (":0}", ":-3}", false),
                (":0}", ":3.5}", false),
                (":0}", ":3e2}", false),
                (":0}", ":\"3\"}", false),
                (":0}", ": 3}", false),
                (":8,", ":,", false),
                ("reasoning", "thinking", false),
            ];
            for (from, to, readable) in others {
                let other = USAGE.replacen(from, to, 1);
                let scanned = chunk_from(&other, kept, None, &mut Holes::default());
                let by_shape = shape_read(&shape, &other, 0);
                if let (Some(scanned), Some(by_shape)) = (&scanned, &by_shape) {
                    assert_eq!(by_shape, scanned, "{other}");
                }
                assert_eq!(by_shape.is_some(), readable, "{other}");
                assert!(scanned.is_some() || !readable, "{other}");
            }
        }
    }

    #[test]
    fn a_chunk_with_text_or_an_odd_usage_has_no_shape() {
        let kept = Kept::default();
        for chunk in [
            r#"{"choices":[{"index":0,"delta":{"content":"a"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"\u0041"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"role":"\u0041"}}]}"#,
            r#"{"choices":[],"usage":{"total_tokens":1.5}}"#,
            r#"{"choices":[],"usage":{"total_tokens":-1}}"#,
            r#"{"choices":[],"usage":{"total_tokens":1e3}}"#,
            r#"{"choices":[],"usage":{"total_tokens":[1]}}"#,
            r#"{"choices":[],"usage":{"total_tokens":null}}"#,
            r#"{"choices":[],"usage":{"t\u0041":1}}"#,
            r#"{"choices":[],"usage":7}"#,
        ] {
            let (read, holes) = scanned(chunk, kept);
            assert!(
                Shape::of(chunk, 0, None, kept, &read, &holes).is_none(),
                "{chunk}"
            );
        }
        for chunk in [
            r#"{"choices":[]}"#,
            r#"{"choices":[],"usage":{}}"#,
            r#"{"choices":[],"usage":{"a":{"b":0},"c":"d"}}"#,
        ] {
            let (read, holes) = scanned(chunk, kept);
            assert!(
                Shape::of(chunk, 0, None, kept, &read, &holes).is_some(),
                "{chunk}"
            );
        }
    }
}
