//! Verifiable generated text.
//!
//! Every generated token is `TAG:SEQ ` — a four-letter tag that names one choice of one response,
//! and the token's position from 0. A client that received `k3xq:0 k3xq:1 k3xq:2 ` can prove that
//! nothing was lost (no gap), duplicated (no repeat) or spliced from two attempts (one tag only).

use std::fmt::Write as _;

/// Letters a tag is made of (lowercase base 32, no look-alikes of digits).
const TAG_ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// The tag of one choice of one response, derived from the response's seed.
pub fn tag(response_seed: u64, choice: u32) -> String {
    let mut mixed = splitmix(response_seed ^ (u64::from(choice) << 32 | 0x9e37));
    let mut tag = String::with_capacity(4);
    for _ in 0..4 {
        tag.push(TAG_ALPHABET[(mixed & 31) as usize] as char);
        mixed >>= 5;
    }
    tag
}

/// Appends token `seq` of a choice with `tag` to `out`.
pub fn push_token(out: &mut String, tag: &str, seq: u32) {
    let _ = write!(out, "{tag}:{seq} ");
}

/// Token `seq` of the choice with `tag`.
pub fn token(tag: &str, seq: u32) -> String {
    let mut out = String::with_capacity(tag.len() + 8);
    push_token(&mut out, tag, seq);
    out
}

/// The whole text of a choice of `tokens` tokens.
pub fn text(tag: &str, tokens: u32) -> String {
    let mut out = String::with_capacity(tokens as usize * (tag.len() + 5));
    for seq in 0..tokens {
        push_token(&mut out, tag, seq);
    }
    out
}

/// What a successful [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The single tag of the text.
    pub tag: String,
    /// How many tokens it holds, all in order from 0.
    pub tokens: u32,
}

/// Why a text is not one intact generated answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    /// A word is not a `TAG:SEQ` token.
    #[error("word {index} (`{word}`) is not a simulator token `TAG:SEQ`")]
    NotAToken {
        /// Position of the word.
        index: usize,
        /// The word.
        word: String,
    },
    /// Two tags: text from two responses (attempts) was joined.
    #[error("spliced: word {index} has tag `{found}` but the text began with tag `{first}`")]
    Spliced {
        /// Position of the first foreign word.
        index: usize,
        /// Tag of the first word.
        first: String,
        /// The foreign tag.
        found: String,
    },
    /// A sequence number is out of order: a token was lost or repeated.
    #[error("word {index} is token {found} but token {expected} was due ({})",
        if found < expected { "a token was repeated" } else { "a token was lost" })]
    OutOfOrder {
        /// Position of the word.
        index: usize,
        /// The sequence number that was due.
        expected: u32,
        /// The sequence number found.
        found: u32,
    },
}

/// Checks that `text` is one intact prefix of a generated answer: one tag, tokens 0, 1, 2, … .
pub fn check(text: &str) -> Result<Checked, ContentError> {
    let mut first_tag: Option<&str> = None;
    let mut expected = 0u32;
    for (index, word) in text.split_whitespace().enumerate() {
        let not_a_token = || ContentError::NotAToken {
            index,
            word: word.to_owned(),
        };
        let (tag, seq) = word.split_once(':').ok_or_else(not_a_token)?;
        let seq: u32 = seq.parse().map_err(|_| not_a_token())?;
        match first_tag {
            None => first_tag = Some(tag),
            Some(first) if first != tag => {
                return Err(ContentError::Spliced {
                    index,
                    first: first.to_owned(),
                    found: tag.to_owned(),
                });
            }
            Some(_) => {}
        }
        if seq != expected {
            return Err(ContentError::OutOfOrder {
                index,
                expected,
                found: seq,
            });
        }
        expected += 1;
    }
    Ok(Checked {
        tag: first_tag.unwrap_or_default().to_owned(),
        tokens: expected,
    })
}

/// SplitMix64: a fast, well-mixed hash of a 64-bit value.
pub(crate) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intact_text_checks_out() {
        let tag = tag(42, 0);
        let checked = check(&text(&tag, 5)).unwrap();
        assert_eq!(
            checked,
            Checked {
                tag: tag.clone(),
                tokens: 5
            }
        );
        assert_eq!(text(&tag, 2), format!("{tag}:0 {tag}:1 "));
        assert_eq!(check("").unwrap().tokens, 0);
    }

    #[test]
    fn choices_and_responses_get_distinct_tags() {
        assert_ne!(tag(42, 0), tag(42, 1));
        assert_ne!(tag(42, 0), tag(43, 0));
        assert_eq!(tag(42, 0), tag(42, 0));
    }

    #[test]
    fn lost_repeated_and_spliced_tokens_are_caught() {
        let a = tag(1, 0);
        let b = tag(2, 0);
        let lost = format!("{a}:0 {a}:2 ");
        assert!(matches!(
            check(&lost),
            Err(ContentError::OutOfOrder {
                expected: 1,
                found: 2,
                ..
            })
        ));
        let repeated = format!("{a}:0 {a}:1 {a}:1 ");
        let message = check(&repeated).unwrap_err().to_string();
        assert!(message.contains("repeated"), "{message}");
        let spliced = format!("{a}:0 {a}:1 {b}:2 ");
        assert!(matches!(
            check(&spliced),
            Err(ContentError::Spliced { index: 2, .. })
        ));
        assert!(matches!(
            check("hello world"),
            Err(ContentError::NotAToken { index: 0, .. })
        ));
    }
}
