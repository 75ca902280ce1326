//! A hand scanner for the chunk almost every chat stream is made of — one choice whose delta
//! carries text (or a role) and no finish reason — read without serde. It answers only when the
//! chunk is exactly that shape and nothing in it needs keeping beyond the text: any other key or
//! value, a field the assembler still has to keep the first time, a duplicate key, or anything
//! serde would refuse, and it answers `None` so the caller parses the chunk with serde as before.
//! Its answers are checked against serde's by the tests below and by the SSE fuzz target.

use std::borrow::Cow;

/// The text of a one-choice chunk.
#[derive(Debug, PartialEq)]
pub(super) struct TextChunk<'a> {
    pub index: usize,
    pub role: Option<Cow<'a, str>>,
    pub content: Option<Cow<'a, str>>,
}

/// Which of the chunk's common fields the assembler already keeps: their values may be skipped.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Kept {
    pub id: bool,
    pub created: bool,
    pub model: bool,
    pub system_fingerprint: bool,
    pub service_tier: bool,
}

/// The chunk `data` (already trimmed), when it is a plain one-choice text chunk.
pub(super) fn text_chunk(data: &str, kept: Kept) -> Option<TextChunk<'_>> {
    let mut s = Scan {
        text: data,
        at: 0,
        bytes: data.as_bytes(),
    };
    let mut chunk = None;
    let mut seen = [false; 7];
    s.object(|s, key| {
        let known = |i: usize, seen: &mut [bool; 7]| !std::mem::replace(&mut seen[i], true);
        match key {
            "id" => (kept.id && known(0, &mut seen)).then(|| s.plain_string())?,
            "created" => (kept.created && known(1, &mut seen)).then(|| s.digits())?,
            "model" => (kept.model && known(2, &mut seen)).then(|| s.plain_string())?,
            "system_fingerprint" => (kept.system_fingerprint && known(3, &mut seen))
                .then(|| s.null().or_else(|| s.plain_string()))?,
            "service_tier" => (kept.service_tier && known(4, &mut seen))
                .then(|| s.null().or_else(|| s.plain_string()))?,
            "usage" if known(6, &mut seen) => s.null(),
            // Fields the assembler does not read at all (serde ignores them too).
            "object" | "obfuscation" => s.plain_string(),
            "choices" if known(5, &mut seen) => {
                s.byte(b'[')?;
                chunk = Some(s.choice()?);
                s.byte(b']')
            }
            _ => None,
        }
    })?;
    s.end()?;
    chunk
}

struct Scan<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scan<'a> {
    fn space(&mut self) {
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
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.byte(b'{')?;
        self.space();
        if self.bytes.get(self.at) == Some(&b'}') {
            self.at += 1;
            return Some(());
        }
        loop {
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
            match *self.bytes.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    return Some((&self.text[start..self.at - 1], escaped));
                }
                b'\\' => {
                    escaped = true;
                    self.at += 2;
                }
                0..0x20 => return None,
                _ => self.at += 1,
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

    /// `{"index": N, "delta": {"role"?: …, "content"?: …}, "logprobs"?: null, "finish_reason"?: null}`.
    fn choice(&mut self) -> Option<TextChunk<'a>> {
        let mut chunk = TextChunk {
            index: 0,
            role: None,
            content: None,
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
                    let mut delta_seen = [false; 2];
                    s.object(|s, key| {
                        let slot = match key {
                            "role" => 0,
                            "content" => 1,
                            _ => return None,
                        };
                        if std::mem::replace(&mut delta_seen[slot], true) {
                            return None;
                        }
                        let value = s.nullable_string()?;
                        if slot == 0 {
                            chunk.role = value;
                        } else {
                            chunk.content = value;
                        }
                        Some(())
                    })?
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
    const LAST: &str = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;

    /// Feeds `chunks` to an assembler with the scanner and to one without: every signal and the
    /// assembled answer must be the same.
    fn same_as_serde(chunks: &[&str]) {
        let (mut fast, mut serde) = (Assembler::new(), Assembler::without_fast_path());
        for chunk in chunks {
            assert_eq!(
                fast.push_classified(chunk),
                serde.push_classified(chunk),
                "{chunk}"
            );
        }
        assert_eq!(fast.finish(), serde.finish(), "{chunks:?}");
    }

    #[test]
    fn the_common_text_chunk_is_read_by_the_scanner() {
        let all = Kept {
            id: true,
            created: true,
            model: true,
            system_fingerprint: true,
            service_tier: true,
        };
        let chunk = text_chunk(TEXT, all).expect("a plain text chunk");
        assert_eq!(chunk.content.as_deref(), Some("Hel\"lo\n \u{e9}"));
        assert_eq!(
            text_chunk(FIRST, Kept::default()),
            None,
            "its fields are kept first"
        );
        assert_eq!(text_chunk(LAST, all), None, "a finish reason and usage");
    }

    #[test]
    fn every_answer_is_the_one_serde_gives() {
        same_as_serde(&[FIRST, TEXT, TEXT, LAST, "[DONE]"]);
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
            r#"{"choices":[{}]}"#,
            r#"{"choices":[]}"#,
            r#"{}"#,
            r#"[]"#,
            r#"nul"#,
        ];
        for variant in variants {
            same_as_serde(&[variant]);
            same_as_serde(&[FIRST, variant, LAST]);
        }
    }
}
