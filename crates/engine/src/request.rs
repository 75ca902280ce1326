//! What a call asks for: the endpoint, the body as the client sent it, the model it names (and
//! where in the body, so an alias can be spliced in without re-serializing), whether it streams,
//! and the client's own deadline. What the body asks for is read by the endpoint's protocol.

use std::ops::Range;

use bytes::Bytes;
use http::{HeaderMap, Method};
use tokio::time::Instant;

use crate::protocol::{BadBody, Endpoint, RequestHead};

/// One call to make.
#[derive(Debug, Clone)]
pub struct CallRequest {
    /// The API called.
    pub endpoint: Endpoint,
    /// The method.
    pub method: Method,
    /// Path and query after the `/v1` prefix, e.g. `/chat/completions`.
    pub path: String,
    /// The client's headers (the engine drops hop-by-hop and hourglass-own ones).
    pub headers: HeaderMap,
    /// The body, forwarded untouched except an aliased `model`.
    pub body: Bytes,
    /// The model the client asked for, when the body names one.
    pub model: Option<String>,
    /// Where the `model` value (with its quotes) sits in the body.
    pub model_span: Option<Range<usize>>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Whether a whole answer can be assembled from a stream of the upstream's (the protocol's
    /// assembler rebuilds everything the body asks for).
    pub assemblable: bool,
    /// Whether it asks to run in the background (see [`RequestHead::background`]).
    pub background: bool,
    /// The stored response it continues (see [`RequestHead::continues`]).
    pub continues: Option<String>,
    /// The client's own deadline less the margin, and where it came from (for messages).
    pub client_deadline: Option<(Instant, String)>,
    /// Nobody waits on this call (a background job): its `client_deadline` takes the place of
    /// `timeouts.total` instead of only shortening it — the caller's patience is the job's.
    pub unattended: bool,
    /// When the request arrived.
    pub start: Instant,
    /// The one upstream this call may go to, by name: where a stored response it refers to
    /// lives (`None`: the route's targets, as usual).
    pub pinned: Option<String>,
}

/// Reads what a body for `endpoint` asks for (its protocol decides how).
pub fn read_head(endpoint: Endpoint, body: &[u8]) -> Result<RequestHead, BadBody> {
    endpoint.protocol().read_request(endpoint, body)
}

impl CallRequest {
    /// A POST to `endpoint` at `path` with `body`, read by the endpoint's protocol.
    pub fn new(endpoint: Endpoint, path: &str, body: Bytes) -> Result<CallRequest, BadBody> {
        let head = read_head(endpoint, &body)?;
        Ok(CallRequest::with_head(
            endpoint,
            Method::POST,
            path,
            body,
            head,
        ))
    }

    /// A request whose body was read already (`head`); no headers, no client deadline.
    pub fn with_head(
        endpoint: Endpoint,
        method: Method,
        path: &str,
        body: Bytes,
        head: RequestHead,
    ) -> CallRequest {
        CallRequest {
            endpoint,
            method,
            path: path.to_owned(),
            headers: HeaderMap::new(),
            body,
            model: head.model,
            model_span: head.model_span,
            stream: head.stream,
            assemblable: head.assemblable,
            background: head.background,
            continues: head.continues,
            client_deadline: None,
            unattended: false,
            start: Instant::now(),
            pinned: None,
        }
    }

    /// The body with the `model` value replaced by `model` (only that span changes).
    pub fn body_for(&self, model: &str) -> Bytes {
        match (&self.model_span, &self.model) {
            (Some(span), Some(asked)) if asked != model => {
                let quoted = serde_json::to_string(model).expect("a string serializes");
                let mut out = Vec::with_capacity(self.body.len() + quoted.len());
                out.extend_from_slice(&self.body[..span.start]);
                out.extend_from_slice(quoted.as_bytes());
                out.extend_from_slice(&self.body[span.end..]);
                Bytes::from(out)
            }
            _ => self.body.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alias_is_spliced_in_and_nothing_else_changes() {
        let body = Bytes::from_static(br#"{ "model":"fast",  "messages":[],"temperature":0.25 }"#);
        let request = CallRequest::new(Endpoint::Chat, "/chat/completions", body.clone()).unwrap();
        assert_eq!(
            &request.body_for("gpt-4o-mini")[..],
            br#"{ "model":"gpt-4o-mini",  "messages":[],"temperature":0.25 }"#
        );
        assert_eq!(request.body_for("fast"), body, "no alias, no copy");
        let escaped = request.body_for("we\"ird");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&escaped).unwrap()["model"],
            "we\"ird"
        );
    }
}
