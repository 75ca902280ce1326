//! What a call asks for: the endpoint, the body as the client sent it, the model it names (and
//! where in the body, so an alias can be spliced in without re-serializing), whether it streams,
//! and the client's own deadline. What the body asks for is read by the endpoint's protocol.

use std::ops::Range;

use bytes::Bytes;
use http::{HeaderMap, Method};
use tokio::time::Instant;

use crate::protocol::json::Field;
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
    /// Where the body's top-level fields are ([`RequestHead::fields`]), with the body they were
    /// found in: a body replaced since is not described by them.
    fields: Option<(Bytes, Vec<Field>)>,
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
        // Kept only for a body that may be rewritten to ask for a stream: a streamed call holds
        // its request for as long as it runs, and 10,000 of them would hold 10,000 lists.
        let rewritable = head.assemblable && !head.stream;
        let fields = (head.fields)
            .filter(|_| rewritable)
            .map(|fields| (body.clone(), fields));
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
            fields,
            client_deadline: None,
            unattended: false,
            start: crate::clock::now(),
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

    /// The body asking for a stream, for a whole answer to be assembled from it, with `model` in
    /// place of the client's (unless it is empty). Written from the fields found when the body
    /// was read, so it is not read again.
    pub fn streaming_body_for(&self, model: &str) -> Result<Bytes, String> {
        let usage = self.endpoint.protocol().stream_asks_usage(self.endpoint);
        let renamed =
            !model.is_empty() && self.model.as_deref().is_some_and(|asked| asked != model);
        if let Some((read, fields)) = &self.fields
            // The very buffer the fields were found in (held, so its address is not reused).
            && read.as_ptr() == self.body.as_ptr()
            && read.len() == self.body.len()
        {
            let quoted =
                renamed.then(|| serde_json::to_string(model).expect("a string serializes"));
            if let Some(out) =
                crate::protocol::streaming_body_from(&self.body, fields, usage, quoted.as_deref())
            {
                return Ok(Bytes::from(out));
            }
        }
        let body = if model.is_empty() {
            self.body.clone()
        } else {
            self.body_for(model)
        };
        crate::protocol::streaming_body(&body, usage).map(Bytes::from)
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

    #[test]
    fn a_streaming_body_is_written_from_the_fields_as_a_second_read_would_write_it() {
        let bodies = [
            r#"{"model":"fast","stream":false,"messages":[{"role":"user","content":"h\u00e9"}],"n":1.50}"#,
            r#" { "model" : "fast", "stream_options" : {"x":[1]}, "input":"hi" } "#,
            r#"{"messages":[],"model":"fast","stream_options":null}"#,
            r#"{"model":"fast"}"#,
        ];
        for (endpoint, path) in [
            (Endpoint::Chat, "/chat/completions"),
            (Endpoint::Responses, "/responses"),
            (Endpoint::Messages, "/messages"),
        ] {
            let usage = endpoint.protocol().stream_asks_usage(endpoint);
            for text in bodies {
                let body = Bytes::from_static(text.as_bytes());
                let request = CallRequest::new(endpoint, path, body).unwrap();
                assert!(request.fields.is_some(), "{text}");
                for model in ["", "fast", "gpt-4o", "we\"ird"] {
                    let named = if model.is_empty() {
                        request.body.clone()
                    } else {
                        request.body_for(model)
                    };
                    let read_again = crate::protocol::streaming_body(&named, usage).unwrap();
                    let written = request.streaming_body_for(model).unwrap();
                    assert_eq!(written, read_again, "{text} as {model}");
                }
            }
        }
        // A streamed call keeps no fields: nothing rewrites its body, and it holds its request
        // for as long as it runs.
        let streamed = Bytes::from_static(br#"{"model":"fast","stream":true}"#);
        let request = CallRequest::new(Endpoint::Chat, "/chat/completions", streamed).unwrap();
        assert!(request.stream && request.fields.is_none());
        // A body replaced after it was read is read again; a repeated key takes the general way.
        let mut request = CallRequest::new(
            Endpoint::Chat,
            "/chat/completions",
            Bytes::from_static(br#"{"model":"fast","n":1}"#),
        )
        .unwrap();
        request.body = Bytes::from_static(br#"{"model":"fast","n":2}"#);
        let out: serde_json::Value =
            serde_json::from_slice(&request.streaming_body_for("").unwrap()).unwrap();
        assert_eq!(out["n"], 2);
        let repeated = Bytes::from_static(br#"{"model":"fast","n":1,"n":3}"#);
        let request = CallRequest::new(Endpoint::Chat, "/chat/completions", repeated).unwrap();
        let out: serde_json::Value =
            serde_json::from_slice(&request.streaming_body_for("gpt-4o").unwrap()).unwrap();
        assert_eq!(
            (out["n"].as_i64(), out["model"].as_str()),
            (Some(3), Some("gpt-4o"))
        );
    }
}
