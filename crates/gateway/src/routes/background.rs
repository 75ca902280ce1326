//! Background calls over HTTP, in both forms: OpenAI's Responses with `"background": true`
//! (`GET /v1/responses/{id}`, `?stream=true&starting_after=N`, `POST …/cancel`, `DELETE`), and
//! any endpoint with `Prefer: respond-async` (`202 Accepted`, `Location:
//! /v1/hourglass/jobs/{id}`, its `/events`, `DELETE`). A job belongs to the key that made it.
//! Response ids the gateway did not make go to the upstream that made them.

use std::sync::Arc;

use bytes::Bytes;
use hourglass_engine::header_names as names;
use hourglass_engine::sse::Scanner;
use hourglass_engine::{CallError, CallRequest, Endpoint, Engine, ErrorCode};
use hourglass_jobs::{Job, Jobs, Kind, Submission, responses};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use serde_json::{Value, json};

use super::{auth, error_response, json_response};
use crate::body::GatewayBody;
use crate::gateway::Gateway;

/// The prefix of the ids of background responses the gateway makes.
const OWN_RESPONSE: &str = "resp_hg";

/// Which form a background call takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Form {
    /// OpenAI's Responses with `"background": true`.
    Response,
    /// Any endpoint with `Prefer: respond-async`.
    Job,
}

/// The form of background call `request` asks for, if any (`Prefer: respond-async` is a
/// preference: a gateway without jobs answers at once, as RFC 7240 allows).
pub(super) fn form(gateway: &Gateway, request: &CallRequest) -> Option<Form> {
    if request.background {
        return Some(Form::Response);
    }
    let endpoint_takes_jobs = matches!(
        request.endpoint,
        Endpoint::Chat
            | Endpoint::Completions
            | Endpoint::Responses
            | Endpoint::Embeddings
            | Endpoint::Images
            | Endpoint::Messages
    );
    (endpoint_takes_jobs && gateway.jobs.is_some() && prefers_async(&request.headers))
        .then_some(Form::Job)
}

/// Whether a `Prefer` header (RFC 7240) holds the `respond-async` preference.
fn prefers_async(headers: &HeaderMap) -> bool {
    headers
        .get_all(hourglass_engine::header_names::PREFER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|preference| {
            let token = preference.split([';', '=']).next().unwrap_or_default();
            token.trim().eq_ignore_ascii_case("respond-async")
        })
}

/// The key a request presented (a bearer token, or `api-key`), kept aside before the gateway
/// removes its own: whose jobs and stored responses these are. Hashed only when asked.
pub(super) struct Key(Option<HeaderValue>);

impl Key {
    /// The key `headers` carry.
    pub(super) fn of(headers: &HeaderMap) -> Key {
        let bearer = headers.get(header::AUTHORIZATION).filter(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.split_once(' '))
                .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        });
        let key = bearer.or_else(|| {
            [names::API_KEY, names::X_API_KEY]
                .into_iter()
                .find_map(|n| headers.get(n))
        });
        Key(key.cloned())
    }

    /// The owner's fingerprint ([`hourglass_jobs::ids::owner`]).
    pub(super) fn owner(&self) -> String {
        let text = self.0.as_ref().and_then(|v| v.to_str().ok());
        let key = text.map(|t| match t.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => t.trim(),
        });
        hourglass_jobs::ids::owner(key.filter(|k| !k.is_empty()))
    }
}

/// Takes a background call: stored, queued, and answered at once.
pub(super) async fn submit(
    gateway: &Gateway,
    engine: &Engine,
    request: CallRequest,
    key: Key,
    form: Form,
) -> Response<GatewayBody> {
    let protocol = request.endpoint.protocol();
    let Some(jobs) = &gateway.jobs else {
        let error = CallError::before_attempts(
            ErrorCode::BadRequest,
            StatusCode::BAD_REQUEST,
            "this gateway takes no background calls (it runs without a job store)".to_owned(),
        );
        return error_response(protocol, &error);
    };
    match submission(engine, request, key.owner(), form) {
        Ok(submission) => match jobs.submit(submission).await {
            Ok(job) => accepted(jobs, &job, form),
            Err(error) => error_response(protocol, &error),
        },
        Err(error) => error_response(protocol, &error),
    }
}

/// What to store of a background call: its body for the upstream (a Response's without
/// `background`, which the gateway does itself), its deadline and the fields it echoes.
fn submission(
    engine: &Engine,
    request: CallRequest,
    owner: String,
    form: Form,
) -> Result<Submission, CallError> {
    let model = request
        .model
        .clone()
        .ok_or_else(|| bad_request("you must provide a model parameter".to_owned()))?;
    let route = engine.config().route(&model).ok_or_else(|| {
        CallError::before_attempts(
            ErrorCode::NoRoute,
            StatusCode::NOT_FOUND,
            format!("no upstream serves model `{model}`"),
        )
    })?;
    let deadline = route.policy.timeouts.job;
    let (body, echo) = match form {
        Form::Job => (request.body.clone(), None),
        Form::Response => {
            let mut fields: serde_json::Map<String, Value> = serde_json::from_slice(&request.body)
                .map_err(|e| bad_request(format!("the request body is not a JSON object: {e}")))?;
            fields.remove("background");
            let echo = responses::echoed_fields(&fields);
            let body = serde_json::to_vec(&fields).expect("a json map serializes");
            (Bytes::from(body), Some(echo))
        }
    };
    let webhook = request
        .headers
        .get("x-hourglass-webhook")
        .map(|v| v.to_str().map(str::to_owned))
        .transpose()
        .map_err(|_| bad_request("x-hourglass-webhook is not text".to_owned()))?;
    let request_id = request
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok(Submission {
        kind: match form {
            Form::Response => Kind::Response,
            Form::Job => Kind::Job,
        },
        owner,
        endpoint: request.endpoint,
        path: request.path,
        headers: request.headers,
        body,
        model: Some(model),
        stream: request.stream,
        request_id,
        webhook,
        deadline,
        echo,
        pinned: request.pinned,
    })
}

/// The answer to a submission: a Response (or its stream, from the start), or `202 Accepted`
/// with the job and where to find it.
fn accepted(jobs: &Jobs, job: &Job, form: Form) -> Response<GatewayBody> {
    match form {
        Form::Response if job.asked.stream => events(jobs, job, 0),
        Form::Response => json(StatusCode::OK, &responses::object(job)),
        Form::Job => {
            let mut response = json(StatusCode::ACCEPTED, &job_object(job));
            let headers = response.headers_mut();
            if let Ok(location) = HeaderValue::from_str(&job_url(&job.id)) {
                headers.insert(header::LOCATION, location);
            }
            headers.insert(
                "preference-applied",
                HeaderValue::from_static("respond-async"),
            );
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
    }
}

/// What a path under the gateway's job endpoints comes to.
pub(super) enum Routed {
    /// Answered here.
    Answered(Response<GatewayBody>),
    /// Not a job of the gateway's: sent on as the API call it is, to `pinned` when a response
    /// it names lives there, at `path` when the upstream knows the response by another id.
    PassThrough {
        pinned: Option<String>,
        path: Option<String>,
    },
}

/// Whether [`route`] may answer `path`: the gateway's own API and `/v1/responses/{id}…`.
pub(super) fn may_answer(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    path.starts_with("/v1/responses/")
        || path.starts_with("/v1/hourglass/")
        || path == "/v1/hourglass"
}

/// Answers `/v1/hourglass/jobs/…` and, for responses the gateway made, `/v1/responses/{id}…`.
pub(super) async fn route(gateway: &Arc<Gateway>, parts: &Parts) -> Routed {
    let path = parts.uri.path().trim_end_matches('/');
    let through = Routed::PassThrough {
        pinned: None,
        path: None,
    };
    let (jobs_path, id, rest) = if let Some(rest) = path.strip_prefix("/v1/hourglass/jobs/") {
        let (id, rest) = rest.split_once('/').unwrap_or((rest, ""));
        (true, id, rest)
    } else if let Some(rest) = path.strip_prefix("/v1/responses/") {
        let (id, rest) = rest.split_once('/').unwrap_or((rest, ""));
        (false, id, rest)
    } else if path.starts_with("/v1/hourglass/") || path == "/v1/hourglass" {
        let error = CallError::before_attempts(
            ErrorCode::NotFound,
            StatusCode::NOT_FOUND,
            format!(
                "Invalid URL ({} {path}); the gateway's own API is /v1/hourglass/jobs/{{id}}",
                parts.method
            ),
        );
        return Routed::Answered(error_response(Endpoint::Other.protocol(), &error));
    } else {
        return through;
    };
    let protocol = if jobs_path {
        Endpoint::Other.protocol()
    } else {
        Endpoint::Responses.protocol()
    };
    if let Err(error) = auth::client(&gateway.settings(), &parts.headers) {
        return Routed::Answered(error_response(protocol, &error));
    }
    let Some(jobs) = &gateway.jobs else {
        if jobs_path {
            let error = hourglass_jobs::not_found(id);
            return Routed::Answered(error_response(protocol, &error));
        }
        return through;
    };
    let owner = Key::of(&parts.headers).owner();
    let answer = if jobs_path {
        job_endpoint(jobs, parts, id, rest, &owner).await
    } else if id.starts_with(OWN_RESPONSE) {
        match response_endpoint(jobs, parts, id, rest, &owner).await {
            Ok(Routed::Answered(response)) => Ok(response),
            Ok(passed) => return passed,
            Err(error) => Err(error),
        }
    } else {
        // A response another party made: to the upstream that made it, when it was recorded.
        let pinned = jobs.affinity(id).await;
        return Routed::PassThrough { pinned, path: None };
    };
    Routed::Answered(answer.unwrap_or_else(|error| error_response(protocol, &error)))
}

/// `GET` (the job, or its answer once it has one), `DELETE` (cancel) and `GET …/events`.
async fn job_endpoint(
    jobs: &Jobs,
    parts: &Parts,
    id: &str,
    rest: &str,
    owner: &str,
) -> Result<Response<GatewayBody>, CallError> {
    match (&parts.method, rest) {
        (&Method::GET, "") => {
            let job = jobs.get(id, owner).await?;
            if !job.state.is_terminal() {
                let mut response = json(StatusCode::ACCEPTED, &job_object(&job));
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return Ok(response);
            }
            answer(jobs, &job).await
        }
        (&Method::DELETE, "") => {
            let job = jobs.cancel(id, owner).await?;
            Ok(json(StatusCode::OK, &job_object(&job)))
        }
        (&Method::GET, "events") => {
            let job = jobs.get(id, owner).await?;
            let from = last_event_id(&parts.headers)?.map_or(0, |n| n + 1);
            Ok(events(jobs, &job, from))
        }
        _ => Err(CallError::before_attempts(
            ErrorCode::NotFound,
            StatusCode::NOT_FOUND,
            format!(
                "Invalid URL ({} {}); a job has GET and DELETE /v1/hourglass/jobs/{{id}} and GET …/events",
                parts.method,
                parts.uri.path()
            ),
        )),
    }
}

/// A background response's endpoints: retrieve (or resume its stream), cancel, delete; any
/// other (its input items) goes to the upstream that answered it, under the upstream's own id.
async fn response_endpoint(
    jobs: &Jobs,
    parts: &Parts,
    id: &str,
    rest: &str,
    owner: &str,
) -> Result<Routed, CallError> {
    let job = jobs.get(id, owner).await?;
    let response = match (&parts.method, rest) {
        (&Method::GET, "") => retrieve(jobs, &job, parts.uri.query()).await?,
        (&Method::POST, "cancel") => {
            let job = jobs.cancel(id, owner).await?;
            response_object(jobs, &job).await?
        }
        (&Method::DELETE, "") => {
            jobs.delete(id, owner).await?;
            json(
                StatusCode::OK,
                &json!({"id": id, "object": "response", "deleted": true}),
            )
        }
        _ => {
            let (Some(upstream), Some(upstream_id)) = (&job.upstream, &job.upstream_id) else {
                return Err(CallError::before_attempts(
                    ErrorCode::JobNotFound,
                    StatusCode::NOT_FOUND,
                    format!(
                        "the background response `{id}` has not been answered by an upstream yet, so it has nothing there to read"
                    ),
                ));
            };
            let uri = parts.uri.path_and_query().map_or("", |p| p.as_str());
            return Ok(Routed::PassThrough {
                pinned: Some(upstream.clone()),
                path: Some(uri.replacen(id, upstream_id, 1)),
            });
        }
    };
    Ok(Routed::Answered(response))
}

/// `GET /v1/responses/{id}`: the Response, or with `stream=true` its events after
/// `starting_after`.
async fn retrieve(
    jobs: &Jobs,
    job: &Job,
    query: Option<&str>,
) -> Result<Response<GatewayBody>, CallError> {
    let mut stream = false;
    let mut starting_after = None;
    for (key, value) in query
        .unwrap_or_default()
        .split('&')
        .filter_map(|p| p.split_once('='))
    {
        match key {
            "stream" => stream = value.eq_ignore_ascii_case("true"),
            "starting_after" => {
                starting_after = Some(value.parse::<u64>().map_err(|_| {
                    bad_request(format!(
                        "starting_after must be a sequence number (a whole number), not `{value}`"
                    ))
                })?);
            }
            _ => {}
        }
    }
    if !stream {
        return response_object(jobs, job).await;
    }
    if !job.asked.stream {
        return Err(bad_request(format!(
            "the response `{}` was not created with stream=true, so it has no events to stream; retrieve it without stream",
            job.id
        )));
    }
    Ok(events(jobs, job, starting_after.map_or(0, |n| n + 1)))
}

/// A background response as its Response object: the stored one once it ended, else the
/// gateway's (queued, in progress).
async fn response_object(jobs: &Jobs, job: &Job) -> Result<Response<GatewayBody>, CallError> {
    if job.state.is_terminal() {
        let body = jobs.answer(job).await?;
        return Ok(json_response(StatusCode::OK, body));
    }
    Ok(json(StatusCode::OK, &responses::object(job)))
}

/// A finished job's answer, as the synchronous call would have sent it.
async fn answer(jobs: &Jobs, job: &Job) -> Result<Response<GatewayBody>, CallError> {
    let body = jobs.answer(job).await?;
    let (status, content_type) = match &job.answer {
        Some(answer) => (
            StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK),
            answer.content_type.as_str(),
        ),
        None => (StatusCode::OK, "application/json"),
    };
    let mut response = Response::new(GatewayBody::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    job_headers(headers, job);
    Ok(response)
}

/// A job's events as SSE, from number `from`.
fn events(jobs: &Jobs, job: &Job, from: u64) -> Response<GatewayBody> {
    let mut response = Response::new(GatewayBody::Events(jobs.follow(job, from)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    job_headers(headers, job);
    response
}

/// `x-hourglass-job` and `x-hourglass-job-status` on every answer about a job.
fn job_headers(headers: &mut HeaderMap, job: &Job) {
    if let Ok(id) = HeaderValue::from_str(&job.id) {
        headers.insert("x-hourglass-job", id);
    }
    headers.insert(
        "x-hourglass-job-status",
        HeaderValue::from_static(job.state.name()),
    );
}

/// `Last-Event-ID`: the number of the last event a client has.
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, CallError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    text.parse::<u64>().map(Some).map_err(|_| {
        bad_request(format!(
            "Last-Event-ID must be the number of an event (a whole number), not `{}`",
            text.chars().take(40).collect::<String>()
        ))
    })
}

/// The job object (`hourglass.job`) of the `Prefer: respond-async` form.
pub(super) fn job_object(job: &Job) -> Value {
    let seconds = |ms: u64| ms / 1000;
    json!({
        "id": job.id,
        "object": "hourglass.job",
        "status": job.state.name(),
        "endpoint": job.asked.endpoint,
        "model": job.asked.model,
        "stream": job.asked.stream,
        "created_at": seconds(job.created_at),
        "started_at": job.started_at.map(seconds),
        "finished_at": job.finished_at.map(seconds),
        "deadline_at": seconds(job.deadline_at),
        "runs": job.runs,
        "events": job.events,
        "upstream": job.upstream,
        "error": job.failure.as_ref().map(|f| json!({"code": f.code, "message": f.message})),
        "url": job_url(&job.id),
        "events_url": format!("{}/events", job_url(&job.id)),
    })
}

fn job_url(id: &str) -> String {
    format!("/v1/hourglass/jobs/{id}")
}

/// Points a Responses call that continues a stored response at the upstream holding it: a
/// background response of the gateway's by the upstream's own id, any other by the affinity
/// recorded when it was made.
pub(super) async fn continuation(
    gateway: &Gateway,
    request: &mut CallRequest,
    key: &Key,
) -> Result<(), CallError> {
    let (Some(jobs), Some(previous)) = (&gateway.jobs, request.continues.clone()) else {
        return Ok(());
    };
    if !previous.starts_with(OWN_RESPONSE) {
        request.pinned = jobs.affinity(&previous).await;
        return Ok(());
    }
    let job = jobs.get(&previous, &key.owner()).await?;
    let (Some(upstream), Some(upstream_id)) = (job.upstream, job.upstream_id) else {
        return Err(bad_request(format!(
            "previous_response_id `{previous}` is a background response that has no answer yet to continue from (it is {})",
            job.state.name()
        )));
    };
    let quoted = |id: &str| serde_json::to_string(id).expect("a string serializes");
    let text = String::from_utf8_lossy(&request.body).replacen(
        &quoted(&previous),
        &quoted(&upstream_id),
        1,
    );
    let body = Bytes::from(text);
    let head = hourglass_engine::request::read_head(request.endpoint, &body)
        .map_err(|bad| bad_request(bad.message))?;
    request.body = body;
    request.model_span = head.model_span;
    request.pinned = Some(upstream);
    Ok(())
}

/// Records which upstream made a synchronous Response, when more than one could have (a later
/// call that names it, or reads it, must go there).
pub(super) fn remember(
    gateway: &Gateway,
    engine: &Engine,
    headers: &HeaderMap,
    body: Option<&[u8]>,
) {
    let Some(jobs) = &gateway.jobs else {
        return;
    };
    if engine.config().upstreams.len() < 2 {
        return;
    }
    let upstream = headers
        .get("x-hourglass-upstream")
        .and_then(|v| v.to_str().ok());
    let id = body.and_then(response_id);
    if let (Some(upstream), Some(id)) = (upstream, id) {
        jobs.remember(id, upstream.to_owned());
    }
}

/// The id of a Response: a whole one's `id`, or in a stream's first bytes, its
/// `response.created` event's `response.id`.
fn response_id(bytes: &[u8]) -> Option<String> {
    let text = |value: &Value| value.as_str().map(str::to_owned);
    if let Ok(whole) = serde_json::from_slice::<Value>(bytes) {
        return text(&whole["id"]);
    }
    let mut found = None;
    let _ = Scanner::new().push(bytes, |event| {
        if found.is_none()
            && let Some(data) = event.data.as_deref()
            && let Ok(event) = serde_json::from_str::<Value>(data)
        {
            found = text(&event["response"]["id"]);
        }
    });
    found.filter(|id| id.starts_with("resp"))
}

fn json(status: StatusCode, value: &Value) -> Response<GatewayBody> {
    json_response(
        status,
        Bytes::from(serde_json::to_vec(value).expect("a json value serializes")),
    )
}

fn bad_request(message: String) -> CallError {
    CallError::before_attempts(ErrorCode::BadRequest, StatusCode::BAD_REQUEST, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respond_async_is_found_among_other_preferences() {
        for (value, asked) in [
            ("respond-async", true),
            ("Respond-Async", true),
            ("return=minimal, respond-async", true),
            ("respond-async; wait=10", true),
            ("wait=10", false),
            ("respond-asynchronously", false),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert("prefer", value.parse().unwrap());
            assert_eq!(prefers_async(&headers), asked, "{value}");
        }
    }

    #[test]
    fn a_responses_id_is_found_whole_or_in_a_streams_first_event() {
        assert_eq!(
            response_id(br#"{"id":"resp_1","object":"response"}"#).as_deref(),
            Some("resp_1")
        );
        let stream = b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_2\"}}\n\n";
        assert_eq!(response_id(stream).as_deref(), Some("resp_2"));
        assert_eq!(response_id(b"data: [DONE]\n\n"), None);
    }
}
