//! OpenAI's Responses API in background mode, as the gateway serves it for any upstream: the
//! Response object of a job that is queued, running, failed or cancelled; the upstream's answer
//! and stream events renumbered and re-identified as the job's (`sequence_number` counted by the
//! job's own event log, `response.id` the job's id, `background: true`), so a resumed stream
//! continues exactly where it broke.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::job::{Failure, Job, State};

/// The request fields a Response object repeats, as OpenAI's does.
const ECHOED: [&str; 16] = [
    "instructions",
    "max_output_tokens",
    "max_tool_calls",
    "metadata",
    "parallel_tool_calls",
    "previous_response_id",
    "prompt",
    "reasoning",
    "service_tier",
    "store",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_p",
    "truncation",
];

/// The fields of a request body a Response object repeats.
pub fn echoed_fields(request: &Map<String, Value>) -> Value {
    let fields: Map<String, Value> = ECHOED
        .iter()
        .filter_map(|key| request.get(*key).map(|v| ((*key).to_owned(), v.clone())))
        .collect();
    Value::Object(fields)
}

/// The Response object of `job` as the gateway tells it before (or instead of) the upstream's
/// own: queued, in progress, cancelled, or failed without an answer from the upstream.
pub fn object(job: &Job) -> Value {
    let mut response = match &job.echo {
        Some(Value::Object(fields)) => fields.clone(),
        _ => Map::new(),
    };
    let error = match (&job.failure, job.state) {
        (Some(failure), State::Failed) => error_object(failure),
        _ => Value::Null,
    };
    for (key, value) in [
        ("id", json!(job.id)),
        ("object", json!("response")),
        ("created_at", json!(job.created_at / 1000)),
        ("status", json!(job.state.name())),
        ("background", json!(true)),
        ("model", json!(job.asked.model)),
        ("output", json!([])),
        ("error", error),
        ("incomplete_details", Value::Null),
    ] {
        response.insert(key.to_owned(), value);
    }
    if let Some(ended) = job.finished_at {
        response.insert("completed_at".to_owned(), json!(ended / 1000));
    }
    Value::Object(response)
}

/// A Response's `error`: `code` and `message`, as OpenAI shapes it.
fn error_object(failure: &Failure) -> Value {
    json!({"code": failure.code, "message": failure.message})
}

/// The upstream's whole Response, made the job's: its id and `background`; returns it with the
/// upstream's own id and the state its `status` says.
pub fn adopt(job_id: &str, body: &[u8]) -> Result<(Bytes, Option<String>, State), String> {
    let mut response: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the upstream's Response is not JSON: {e}"))?;
    let upstream_id = make_ours(&mut response, job_id);
    let state = state_of(&response);
    let bytes = serde_json::to_vec(&response).expect("a json value serializes");
    Ok((Bytes::from(bytes), upstream_id, state))
}

/// Sets a Response object's id and `background`; returns the id it had.
fn make_ours(response: &mut Value, job_id: &str) -> Option<String> {
    let object = response.as_object_mut()?;
    let upstream_id = object
        .insert("id".to_owned(), json!(job_id))
        .and_then(|v| v.as_str().map(str::to_owned));
    object.insert("background".to_owned(), json!(true));
    upstream_id
}

/// The job state a Response's `status` means (a finished answer is `completed` unless it says
/// otherwise).
fn state_of(response: &Value) -> State {
    match response["status"].as_str() {
        Some("incomplete") => State::Incomplete,
        Some("failed") => State::Failed,
        Some("cancelled") => State::Cancelled,
        _ => State::Completed,
    }
}

/// One upstream event, made the job's.
#[derive(Debug, Clone, PartialEq)]
pub enum Adopted {
    /// Not passed on: the upstream's own `response.created` / `response.queued` (the job
    /// announced itself at submission).
    Skipped,
    /// Passed on, numbered as the job's.
    Event {
        /// The event, rendered as SSE.
        bytes: Bytes,
        /// The upstream's id for the response, when the event carried it.
        upstream_id: Option<String>,
        /// When the event ends the answer: the final Response object and its state.
        end: Option<(Bytes, State)>,
        /// When the event is an error: its code and message.
        error: Option<(String, String)>,
    },
}

/// Makes an upstream stream event the job's: number `sequence`, the job's id in its Response.
pub fn adopt_event(job_id: &str, name: Option<&str>, data: &str, sequence: u64) -> Adopted {
    let Ok(Value::Object(mut event)) = serde_json::from_str::<Value>(data) else {
        // Not a JSON object: passed on as it came (the engine rejects malformed streams first).
        return Adopted::Event {
            bytes: render(name, data),
            upstream_id: None,
            end: None,
            error: None,
        };
    };
    let kind = event
        .get("type")
        .and_then(Value::as_str)
        .or(name)
        .unwrap_or_default()
        .to_owned();
    if matches!(kind.as_str(), "response.created" | "response.queued") {
        return Adopted::Skipped;
    }
    event.insert("sequence_number".to_owned(), json!(sequence));
    let upstream_id = event
        .get_mut("response")
        .and_then(|response| make_ours(response, job_id));
    let end = match kind.as_str() {
        "response.completed" | "response.incomplete" | "response.failed" => {
            event.get("response").map(|response| {
                let bytes = serde_json::to_vec(response).expect("a json value serializes");
                (Bytes::from(bytes), state_of(response))
            })
        }
        _ => None,
    };
    let error = (kind == "error").then(|| {
        let text = |key: &str| {
            event
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        (text("code"), text("message"))
    });
    let data = serde_json::to_string(&event).expect("a json value serializes");
    Adopted::Event {
        bytes: render(Some(&kind), &data),
        upstream_id,
        end,
        error,
    }
}

/// The event the job announces itself with: `response.created`, number 0, status `queued`.
pub fn created_event(job: &Job) -> Bytes {
    let data = json!({
        "type": "response.created",
        "sequence_number": 0,
        "response": object(job),
    });
    render(Some("response.created"), &data.to_string())
}

/// The event that ends a stream that failed before the upstream's answer began:
/// `response.failed` with the job's failed Response.
pub fn failed_event(job: &Job, sequence: u64) -> Bytes {
    let data = json!({
        "type": "response.failed",
        "sequence_number": sequence,
        "response": object(job),
    });
    render(Some("response.failed"), &data.to_string())
}

/// An SSE event: its name (if any) and its data, one `data:` line per line.
pub fn render(name: Option<&str>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 32);
    if let Some(name) = name {
        out.push_str("event: ");
        out.push_str(name);
        out.push('\n');
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_event_is_renumbered_and_given_the_jobs_id() {
        let data = r#"{"type":"response.in_progress","sequence_number":7,"response":{"id":"resp_up","status":"in_progress"}}"#;
        let Adopted::Event {
            bytes, upstream_id, ..
        } = adopt_event("resp_hg1", None, data, 3)
        else {
            panic!("passed on");
        };
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(
            text.starts_with("event: response.in_progress\ndata: "),
            "{text}"
        );
        let value: Value = serde_json::from_str(text.lines().nth(1).unwrap()[6..].trim()).unwrap();
        assert_eq!(value["sequence_number"], 3);
        assert_eq!(value["response"]["id"], "resp_hg1");
        assert_eq!(value["response"]["background"], true);
        assert_eq!(upstream_id.as_deref(), Some("resp_up"));
    }

    #[test]
    fn the_upstreams_own_creation_is_not_passed_on_and_the_end_carries_the_answer() {
        let created = r#"{"type":"response.created","sequence_number":0,"response":{"id":"r"}}"#;
        assert_eq!(adopt_event("j", None, created, 1), Adopted::Skipped);
        let done = r#"{"type":"response.incomplete","response":{"id":"r","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"}}}"#;
        let Adopted::Event { end, .. } = adopt_event("j", None, done, 9) else {
            panic!("passed on");
        };
        let (body, state) = end.unwrap();
        assert_eq!(state, State::Incomplete);
        let response: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(response["id"], "j");
        assert_eq!(
            response["incomplete_details"]["reason"],
            "max_output_tokens"
        );
    }

    #[test]
    fn a_multi_line_data_is_rendered_one_line_each() {
        assert_eq!(
            render(None, "a\nb"),
            Bytes::from_static(b"data: a\ndata: b\n\n")
        );
    }
}
