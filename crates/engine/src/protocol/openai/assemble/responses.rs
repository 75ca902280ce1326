//! One Responses API body assembled from its stream: the final event (`response.completed`, or
//! `response.incomplete`) carries the whole response object, which is the non-streaming answer —
//! kept byte for byte as the upstream wrote it.

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
    kind: Option<&'a str>,
    response: Option<Box<RawValue>>,
}

impl ResponseAssembler {
    /// Adds the JSON data of one event; only the final one's response is kept.
    pub fn push(&mut self, data: &str) -> Result<(), String> {
        let event: Final<'_> = serde_json::from_str(data)
            .map_err(|e| format!("a Responses event is not JSON: {e}"))?;
        if matches!(
            event.kind,
            Some("response.completed" | "response.incomplete")
        ) {
            self.response = event.response;
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
}
