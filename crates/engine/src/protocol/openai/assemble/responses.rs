//! One Responses API body assembled from its stream: the final event (`response.completed`, or
//! `response.incomplete`) carries the whole response object, which is the non-streaming answer —
//! kept byte for byte as the upstream wrote it.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// Keeps the response object of a Responses stream's final event.
#[derive(Debug, Default)]
pub struct ResponseAssembler {
    response: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct Final<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    response: Option<Box<RawValue>>,
}

impl ResponseAssembler {
    /// Adds the JSON data of one event; only the final one's response is kept.
    pub fn push(&mut self, data: &str) -> Result<(), String> {
        self.push_named(None, data)
    }

    /// Adds the JSON data of one event named `name` (its SSE `event:`), whose type its data
    /// says, or else its name says (as the classifier reads it); only the final one's response is
    /// kept. A `[DONE]` (which some servers add, and which ends the stream for the classifier)
    /// is refused when no final event came before it.
    pub fn push_named(&mut self, name: Option<&str>, data: &str) -> Result<(), String> {
        if crate::protocol::trimmed(data) == "[DONE]" {
            return match self.response {
                Some(_) => Ok(()),
                None => Err("the stream ended (`[DONE]`) before its final event, \
                     `response.completed`"
                    .to_owned()),
            };
        }
        let event: Final<'_> = serde_json::from_str(data)
            .map_err(|e| format!("a Responses event is not JSON: {e}"))?;
        let kind = event.kind.as_deref().or(name);
        if let Some(kind @ ("response.completed" | "response.incomplete")) = kind {
            // The answer is this object, sent as it is: without one, the client would get an
            // empty or foreign body with a 200.
            match event.response {
                Some(response) if response.get().trim_start().starts_with('{') => {
                    self.response = Some(response);
                }
                _ => return Err(format!("a `{kind}` event without its response object")),
            }
        }
        Ok(())
    }

    /// The response object, as the final event carried it (empty when no final event came).
    pub fn finish(self) -> bytes::Bytes {
        self.response.map_or_else(bytes::Bytes::new, |raw| {
            bytes::Bytes::from(String::from(Box::<str>::from(raw)))
        })
    }
}

impl crate::protocol::Assemble for ResponseAssembler {
    fn push(&mut self, data: &str) -> Result<(), String> {
        ResponseAssembler::push(self, data)
    }

    fn push_event(&mut self, event: &crate::sse::Event<'_>) -> Result<(), String> {
        (event.data.as_deref()).map_or(Ok(()), |data| self.push_named(event.name, data))
    }

    fn finish(self: Box<Self>) -> bytes::Bytes {
        ResponseAssembler::finish(*self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_events_response_is_the_answer_byte_for_byte() {
        let mut a = ResponseAssembler::default();
        a.push(r#"{"type":"response.created","sequence_number":0,"response":{"status":"in_progress"}}"#)
            .unwrap();
        a.push(r#"{"type":"response.output_text.delta","delta":"Hi","sequence_number":1}"#)
            .unwrap();
        a.push(r#"{"type":"response.completed","sequence_number":2,"response":{"id":"r1", "status":"completed"}}"#)
            .unwrap();
        assert_eq!(&a.finish()[..], br#"{"id":"r1", "status":"completed"}"#);
        assert!(ResponseAssembler::default().push("nope").is_err());
    }

    /// A final event that does not carry the response object (left out, `null`, or another
    /// kind of value) fails the answer: it was sent as an empty or foreign body with a 200.
    #[test]
    fn a_final_event_without_its_response_object_is_refused() {
        for event in [
            r#"{"type":"response.completed"}"#,
            r#"{"type":"response.completed","response":null}"#,
            r#"{"type":"response.incomplete","response":"cut"}"#,
            r#"{"type":"response.completed","response":[{"id":"r1"}]}"#,
        ] {
            let refused = ResponseAssembler::default().push(event).unwrap_err();
            assert!(
                refused.contains("without its response object"),
                "{event}: {refused}"
            );
        }
    }

    /// The assembler reads an event's type as the classifier does (its data's `type`, else its
    /// SSE name), so an event the classifier takes for the final one is the final one here too:
    /// a final event named only by `event:` gave the client an empty body with a 200. And a
    /// `[DONE]`, which ends the stream for the classifier, is refused unless the final event came.
    #[test]
    fn the_final_event_is_the_one_the_classifier_reads_as_final() {
        let mut a = ResponseAssembler::default();
        a.push_named(Some("response.completed"), r#"{"response":{"id":"r1"}}"#)
            .unwrap();
        a.push("[DONE]").unwrap();
        assert_eq!(&a.finish()[..], br#"{"id":"r1"}"#);
        let refused = (ResponseAssembler::default())
            .push_named(Some("response.completed"), "{}")
            .unwrap_err();
        assert!(refused.contains("without its response object"), "{refused}");
        let refused = ResponseAssembler::default().push(" [DONE]").unwrap_err();
        assert!(refused.contains("`[DONE]`"), "{refused}");
    }
}
