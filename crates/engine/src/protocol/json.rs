//! JSON read by hand where serde's general reader is the cost: a request body's top-level fields
//! (each key and its value as written, every value checked as serde checks what it skips), and
//! the word-wise search for the end of a string's plain run that the stream chunk scanner uses
//! too. A body the scanner does not take as it is (an escaped key, deep nesting, anything
//! serde would refuse) gets `None`, and the caller reads it with serde as before; the tests and
//! the request fuzz target hold what it takes to what serde takes.

use std::ops::Range;

use serde::Deserializer;
use serde::de::{IntoDeserializer, Visitor};

/// Nesting deeper than this is left to serde (whose own limit is 128).
const MAX_DEPTH: usize = 100;

/// One top-level field of an object: where its key (quotes excluded) and its value are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The key's text, between its quotes.
    pub key: Range<usize>,
    /// The value as written.
    pub value: Range<usize>,
}

impl Field {
    /// The key's and the value's text in `text`, the object the field was found in.
    pub fn in_text<'a>(&self, text: &'a str) -> (&'a str, &'a str) {
        (&text[self.key.clone()], &text[self.value.clone()])
    }
}

/// The top-level fields of a JSON object, in order. `None` unless `text` is one object, with
/// surrounding whitespace at most, whose keys have no escapes and whose values serde would skip
/// without error. Keys are between ASCII quotes and values between ASCII bytes, so every range
/// is on char boundaries.
pub fn fields(text: &str) -> Option<Vec<Field>> {
    let mut s = Scan {
        bytes: text.as_bytes(),
        at: 0,
    };
    s.space();
    s.byte(b'{')?;
    // Room for a request's usual fields at once: growing from empty costs more than the scan.
    let mut fields = Vec::with_capacity(8);
    s.space();
    if s.peek() == Some(b'}') {
        s.at += 1;
    } else {
        loop {
            s.space();
            let key = s.plain_key()?;
            s.space();
            s.byte(b':')?;
            s.space();
            let start = s.at;
            s.value(0)?;
            fields.push(Field {
                key,
                value: start..s.at,
            });
            s.space();
            match s.next()? {
                b',' => {}
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.space();
    (s.at == s.bytes.len()).then_some(fields)
}

/// Where the JSON value starting at `at` in `text` ends, when serde would skip it without
/// error (`None` otherwise, or when it nests too deep for the scan).
pub fn value_end(text: &str, at: usize) -> Option<usize> {
    let mut s = Scan {
        bytes: text.as_bytes(),
        at,
    };
    s.value(0)?;
    Some(s.at)
}

/// Whether `bytes` are one JSON value with whitespace around it at most, which serde would skip
/// without error (a whole upstream answer checked before it is relayed). `false` when serde
/// would refuse it, and when the scan cannot tell (nesting too deep for it): the caller asks
/// serde then, for the verdict and its message. Bytes are scanned as serde's reader of a slice
/// scans what it skips: inside a string any byte but a quote, a backslash or a control character
/// passes, UTF-8 or not; outside one only JSON's own.
pub fn one_value(bytes: &[u8]) -> bool {
    let mut s = Scan { bytes, at: 0 };
    s.space();
    if s.value(0).is_none() {
        return false;
    }
    s.space();
    s.at == bytes.len()
}

/// Reads `T` from fields found by [`fields`], as serde reads it from the whole object: each value
/// `T` names is read by serde from its text; the others are not read again. `None` when serde
/// refuses (the caller reads the whole body with serde then, for its exact message).
pub fn read_from<'a, T: serde::Deserialize<'a>>(text: &'a str, fields: &[Field]) -> Option<T> {
    let map = serde::de::value::MapDeserializer::<_, serde_json::Error>::new(fields.iter().map(
        |field| {
            let (key, value) = field.in_text(text);
            (key, FieldValue(value))
        },
    ));
    T::deserialize(map).ok()
}

const ONES: u64 = u64::from_ne_bytes([1; 8]);
const HIGH: u64 = ONES << 7;

/// The high bit of each byte of `x` that ends a string's plain run (a quote, a backslash or a
/// control character) may be set; the lowest set one is a true match (a borrow can only flag
/// bytes above one).
fn stops(x: u64) -> u64 {
    let quote = x ^ (ONES * u64::from(b'"'));
    let backslash = x ^ (ONES * u64::from(b'\\'));
    (zero(quote) | zero(backslash) | (x.wrapping_sub(ONES * 0x20) & !x)) & HIGH
}

/// The high bit of each zero byte of `v` may be set, and is for the lowest one.
fn zero(v: u64) -> u64 {
    v.wrapping_sub(ONES) & !v & HIGH
}

/// The last few bytes of `rest` as one more word, padded with a byte that flags nothing.
fn last_word(rest: &[u8]) -> u64 {
    let mut last = [b'a'; 8];
    last[..rest.len()].copy_from_slice(rest);
    u64::from_le_bytes(last)
}

/// Where the first byte that ends a string's plain run is in `bytes`: a quote, a backslash or a
/// control character. Eight bytes at a time, as serde_json's own string reader does: a byte-wise
/// loop was the chunk scanner's largest cost.
pub fn string_stop(bytes: &[u8]) -> Option<usize> {
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        let found = stops(u64::from_le_bytes(word.try_into().ok()?));
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let found = stops(last_word(words.remainder()));
    (found != 0).then(|| at + (found.trailing_zeros() / 8) as usize)
}

/// Whether `bytes` is printable ASCII without a quote or a backslash (what `Debug` writes as it
/// is between quotes): eight bytes at a time with [`string_stop`]'s masks, and no early exit.
pub fn plain_ascii(bytes: &[u8]) -> bool {
    const DEL: u64 = ONES * 0x7f;
    let flags = |word: u64| word & HIGH | stops(word) | zero(word ^ DEL);
    let mut words = bytes.chunks_exact(8);
    let mut flagged = 0;
    for word in &mut words {
        flagged |= flags(<[u8; 8]>::try_from(word).map_or(HIGH, u64::from_le_bytes));
    }
    flagged | flags(last_word(words.remainder())) == 0
}

/// A position in the text being checked.
struct Scan<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn byte(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// A key without escapes: where its text is (quotes excluded).
    fn plain_key(&mut self) -> Option<Range<usize>> {
        self.byte(b'"')?;
        let start = self.at;
        self.at += string_stop(self.bytes.get(self.at..)?)?;
        (self.next()? == b'"').then_some(start..self.at - 1)
    }

    /// Any value, checked as serde checks a value it skips.
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string(),
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b't' => self.word(b"true"),
            b'f' => self.word(b"false"),
            b'n' => self.word(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn word(&mut self, word: &[u8]) -> Option<()> {
        self.bytes[self.at..]
            .starts_with(word)
            .then(|| self.at += word.len())
    }

    /// A string: escapes must be one of JSON's, `\u` with four hex digits (a lone surrogate is
    /// not checked, as serde does not check one it skips); no control characters.
    fn string(&mut self) -> Option<()> {
        self.byte(b'"')?;
        loop {
            self.at += string_stop(self.bytes.get(self.at..)?)?;
            match self.next()? {
                b'"' => return Some(()),
                b'\\' => match self.next()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' => {
                        let hex = self.bytes.get(self.at..self.at + 4)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        self.at += 4;
                    }
                    _ => return None,
                },
                _ => return None,
            }
        }
    }

    /// `-`? then `0` or digits without a leading zero, then an optional fraction and exponent,
    /// each with at least one digit.
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.some_digits()?;
        }
        // A digit right after `0` (`01`) is what serde refuses as an invalid number.
        (!self.peek().is_some_and(|b| b.is_ascii_digit())).then_some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.byte(b'{')?;
        self.space();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Some(());
        }
        loop {
            self.space();
            self.string()?;
            self.space();
            self.byte(b':')?;
            self.space();
            self.value(depth)?;
            self.space();
            match self.next()? {
                b',' => {}
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.byte(b'[')?;
        self.space();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Some(());
        }
        loop {
            self.space();
            self.value(depth)?;
            self.space();
            match self.next()? {
                b',' => {}
                b']' => return Some(()),
                _ => return None,
            }
        }
    }
}

/// One field's value as written, read by serde when the reader wants it, and not read at all
/// when it is skipped (`IgnoredAny`): the scan checked it already.
struct FieldValue<'a>(&'a str);

impl<'a> IntoDeserializer<'a, serde_json::Error> for FieldValue<'a> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

/// Hands a `deserialize_*` call to serde_json's reader of the value's text.
macro_rules! by_serde_json {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'a>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, serde_json::Error> {
            serde_json::Deserializer::from_str(self.0).$method($($arg,)* visitor)
        }
    )*};
}

impl<'a> Deserializer<'a> for FieldValue<'a> {
    type Error = serde_json::Error;

    fn deserialize_ignored_any<V: Visitor<'a>>(
        self,
        visitor: V,
    ) -> Result<V::Value, serde_json::Error> {
        visitor.visit_unit()
    }

    by_serde_json! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::IgnoredAny;

    /// What serde says of `text` as a whole body: skipped without error, an object.
    fn serde_takes(text: &str) -> bool {
        serde_json::from_str::<IgnoredAny>(text).is_ok() && text.trim_start().starts_with('{')
    }

    /// The whole-answer check says yes only where serde's does, and for the answers upstreams
    /// send (and every usual shape of JSON) it says what serde says.
    #[test]
    fn one_value_is_valid_only_where_serde_skips_the_whole_body() {
        let serde_takes = |bytes: &[u8]| serde_json::from_slice::<IgnoredAny>(bytes).is_ok();
        let deep = format!(
            "{}1{}",
            "[".repeat(MAX_DEPTH + 5),
            "]".repeat(MAX_DEPTH + 5)
        );
        let same: &[&[u8]] = &[
            br#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"h\u00e9 \"x\"\n"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
            b" \r\n\t{} \n",
            b"[]",
            b"[1, -0.5e+3, 2E-2, true, false, null, \"s\", {\"a\": []}]",
            b"\"just a string\"",
            b"0",
            "{\"t\":\"caf\u{e9} \u{1F600}\"}".as_bytes(),
            // Not UTF-8 inside a string: serde's slice reader skips it, and so does the scan.
            b"{\"t\":\"\xff\xfe\"}",
            // What serde refuses, the scan refuses.
            b"",
            b"   ",
            b"{",
            b"{\"a\":1,}",
            b"[1,]",
            b"{\"a\" 1}",
            b"{} {}",
            b"{}x",
            b"01",
            b"1.",
            b"-",
            b"1e",
            b"tru",
            b"nul",
            b"\"\\x\"",
            b"\"\\u12g4\"",
            b"\"tab\there\"",
            b"\"open",
            b"{1:2}",
            b"\xff",
            b"NaN",
            b"<html>502 Bad Gateway</html>",
        ];
        for &bytes in same {
            assert_eq!(
                one_value(bytes),
                serde_takes(bytes),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        // Deeper than the scan goes: it cannot tell, and says no; serde decides (here: yes).
        assert!(!one_value(deep.as_bytes()));
        assert!(serde_takes(deep.as_bytes()));
    }

    #[test]
    fn the_fields_are_the_keys_and_values_as_written() {
        let text = r#" {"model" : "m", "n":1.5e-3,"messages":[{"role":"user","content":"h\u00e9 \"x\""}],"s":null ,"t":true,"e":{}} "#;
        let found: Vec<_> = fields(text)
            .unwrap()
            .iter()
            .map(|field| field.in_text(text))
            .collect();
        assert_eq!(
            found,
            vec![
                ("model", r#""m""#),
                ("n", "1.5e-3"),
                ("messages", r#"[{"role":"user","content":"h\u00e9 \"x\""}]"#),
                ("s", "null"),
                ("t", "true"),
                ("e", "{}"),
            ]
        );
        assert_eq!(fields("{}").unwrap(), vec![]);
        // One value found in the middle of a text, and one serde would refuse.
        let usage = r#"{"usage":{"total":[1, 2.5e3]} ,"x":1}"#;
        assert_eq!(value_end(usage, 9), Some(29));
        assert_eq!(value_end(r#"{"usage":{"total":01}}"#, 9), None);
        assert_eq!(
            fields(text).unwrap()[1],
            Field {
                key: 18..19,
                value: 21..27
            }
        );
    }

    #[test]
    fn the_scan_takes_only_what_serde_takes() {
        let taken = [
            r#"{"a":[]}"#,
            r#"{"a":[1,-0,0.5,2E+7,-3e-0]}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\/\b\f\n\r\t"}"#,
            "{\"a\":\t\"\u{e9}\u{1f600}\"\r\n}",
            r#"{"a":{"b":{"c":[[[]]]}}}"#,
        ];
        let refused_by_both = [
            "",
            "[1]",
            "{",
            r#"{"a":1}x"#,
            r#"{"a":1,}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":1e}"#,
            r#"{"a":.5}"#,
            r#"{"a":+1}"#,
            r#"{"a":tru}"#,
            r#"{"a":nul}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12g4"}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a" 1}"#,
            r#"{"a":1 "b":2}"#,
            r#"{"a":{"b"}}"#,
            r#"{a:1}"#,
            r#"{"a":"x}"#,
        ];
        for text in taken {
            assert!(serde_takes(text), "{text}");
            assert!(fields(text).is_some(), "{text}");
        }
        for text in refused_by_both {
            assert!(!serde_takes(text), "{text}");
            assert!(fields(text).is_none(), "{text}");
        }
        // Left to serde, which takes them: an escaped key, and nesting past the scan's depth.
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(120), "]".repeat(120));
        for text in [r#"{"m\u006fdel":"m"}"#, deep.as_str()] {
            assert!(serde_takes(text), "{text}");
            assert!(fields(text).is_none(), "{text}");
        }
    }

    #[test]
    fn a_struct_is_read_from_the_fields_as_serde_reads_it_from_the_body() {
        #[derive(serde::Deserialize)]
        struct Head<'a> {
            #[serde(borrow, default)]
            model: Option<&'a serde_json::value::RawValue>,
            #[serde(default)]
            stream: Option<bool>,
            #[serde(default)]
            n: Option<u32>,
        }
        let text = r#"{"model":"gpt","messages":[{"x":[1,2,{"y":null}]}],"stream":true,"n":null}"#;
        let read: Head = read_from(text, &fields(text).unwrap()).unwrap();
        let by_serde: Head = serde_json::from_str(text).unwrap();
        assert_eq!(read.model.map(|m| m.get()), by_serde.model.map(|m| m.get()));
        assert_eq!((read.stream, read.n), (by_serde.stream, by_serde.n));
        // The raw value is the body's own text, so its place in the body can be found.
        let at = read.model.unwrap().get().as_ptr() as usize - text.as_ptr() as usize;
        assert_eq!(&text[at..at + 5], r#""gpt""#);
        // What serde refuses in a named field, or a named field twice, is refused here too.
        for text in [
            r#"{"stream":"yes"}"#,
            r#"{"n":-1}"#,
            r#"{"model":1,"model":2}"#,
        ] {
            assert!(serde_json::from_str::<Head>(text).is_err(), "{text}");
            assert!(
                read_from::<Head>(text, &fields(text).unwrap()).is_none(),
                "{text}"
            );
        }
    }

    #[test]
    fn the_word_wise_search_finds_what_a_byte_wise_one_finds() {
        let stops = [b'"', b'\\', 0, 0x1f, b'\n'];
        let fillers = [b'a', b' ', 0x21, 0x5b, 0x5d, 0x7f, 0x80, 0xff, 0x20];
        for len in 0..=20 {
            for &filler in &fillers {
                let mut bytes = vec![filler; len];
                let naive = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
                assert_eq!(string_stop(&bytes), naive(&bytes));
                for at in 0..len {
                    for &stop in &stops {
                        bytes[at] = stop;
                        // A second stop later, and a borrow-prone byte before.
                        if at + 3 < len {
                            bytes[at + 3] = b'"';
                        }
                        assert_eq!(string_stop(&bytes), naive(&bytes), "{bytes:?}");
                        bytes.fill(filler);
                    }
                }
            }
        }
    }

    #[test]
    fn plain_ascii_is_printable_ascii_without_a_quote_or_a_backslash_wherever_the_byte_is() {
        let plain = |b: u8| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\';
        for len in 0..20 {
            let mut bytes = vec![b'm'; len];
            assert!(plain_ascii(&bytes));
            for at in 0..len {
                for byte in 0..=255u8 {
                    bytes[at] = byte;
                    assert_eq!(
                        plain_ascii(&bytes),
                        plain(byte),
                        "{byte:#x} at {at} of {len}"
                    );
                }
                bytes[at] = b'm';
            }
        }
    }
}
