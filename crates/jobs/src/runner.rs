//! One run of a job: marked running (durably), its call made through the engine exactly as a
//! synchronous one would be — under the job's deadline instead of a client's — and its answer
//! kept: a whole body at once, a stream event by event as it arrives (each batch durable
//! before a follower can see it). A cancel drops the upstream call. The job's writes are this
//! runner's alone while it runs.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hourglass_engine::sse::Scanner;
use hourglass_engine::{CallError, CallRequest, Endpoint, ErrorCode, ResponseBody};
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Instant;

use crate::ending::{self, End};
use crate::job::{Answer, Job, Kind, State};
use crate::responses::{self, Adopted};
use crate::service::{Inner, Live};
use crate::store::{Blob, Change, Store};

/// Runs the job `live` holds, then releases `permit`.
pub(crate) async fn run(inner: Arc<Inner>, live: Arc<Live>, permit: OwnedSemaphorePermit) {
    let _permit = permit;
    // Runners start only once the store is open.
    let Some(store) = inner.opened() else {
        return;
    };
    let mut job = live.snapshot();
    job.state = State::InProgress;
    job.started_at = Some((inner.clock)());
    job.runs += 1;
    if let Err(error) = write(store.as_ref(), &live, &job, Vec::new()).await {
        tracing::warn!(target: "hourglass::jobs", job = %job.id, %error, "a job's start was not stored");
    }
    tracing::info!(target: "hourglass::jobs", job = %job.id, request_id = %job.request_id, state = "in_progress", runs = job.runs, "job started");
    let mut cancel = live.cancel.subscribe();
    let end = tokio::select! {
        end = call(&inner, store.as_ref(), &live, &mut job) => end,
        () = cancelled(&mut cancel) => End::failed(ending::cancelled()),
    };
    if live.lost.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(target: "hourglass::jobs", job = %job.id, request_id = %job.request_id, "another instance took this job (this one's lease lapsed): this run stops and leaves the job to it");
        inner.finished(&job.id);
        return;
    }
    if let Err(error) = ending::finish(&inner, store.as_ref(), Some(&live), job, end).await {
        tracing::warn!(target: "hourglass::jobs", %error, "a job's end was not stored");
    }
}

/// Makes the job's call and keeps its answer; returns how the job ends.
async fn call(inner: &Inner, store: &dyn Store, live: &Live, job: &mut Job) -> End {
    let body = match store.blob(&job.id, Blob::Request).await {
        Ok(Some(body)) => body,
        Ok(None) => return End::failed(lost("its request body is missing from the store")),
        Err(error) => return End::failed(lost(&error.to_string())),
    };
    let now = (inner.clock)();
    let left = Duration::from_millis(job.deadline_at.saturating_sub(now));
    let request = match request_of(job, body, Instant::now() + left) {
        Ok(request) => request,
        Err(error) => return End::failed(error),
    };
    let engine = (inner.engine)();
    let response = match engine.call(request).await {
        Ok(response) => response,
        Err(error) => return End::failed(error),
    };
    job.upstream = response
        .headers
        .get("x-hourglass-upstream")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let answer = Answer {
        status: response.status.as_u16(),
        content_type: response
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_owned(),
    };
    match response.body {
        ResponseBody::Full(bytes) => whole(job, answer, bytes),
        ResponseBody::Stream(stream) => {
            let mut reader = Reader {
                store,
                live,
                job,
                scanner: Scanner::new(),
                end: None,
                error: None,
            };
            reader.read(stream).await
        }
    }
}

/// A whole answer: a Response made the job's, or any other body as it came.
fn whole(job: &mut Job, answer: Answer, bytes: Bytes) -> End {
    if job.kind != Kind::Response {
        return End::answered(State::Completed, answer, bytes);
    }
    match responses::adopt(&job.id, &bytes) {
        Ok((body, upstream_id, state)) => {
            job.upstream_id = upstream_id;
            End::answered(state, answer, body)
        }
        Err(message) => End::failed(CallError::before_attempts(
            ErrorCode::UpstreamMalformed,
            StatusCode::BAD_GATEWAY,
            message,
        )),
    }
}

/// Reads a committed stream into the job's event log.
struct Reader<'a> {
    store: &'a dyn Store,
    live: &'a Live,
    job: &'a mut Job,
    scanner: Scanner,
    /// A Response's final object and state, from its terminal event.
    end: Option<(Bytes, State)>,
    /// An error event the upstream sent inside its stream.
    error: Option<(String, String)>,
}

impl Reader<'_> {
    async fn read(&mut self, mut stream: Box<hourglass_engine::commit::CommittedStream>) -> End {
        loop {
            // A cancel drops this whole future (see `run`), the stream and its connection with it.
            let Some(Ok(frame)) = stream.frame().await else {
                break;
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let events = self.events_of(&data);
            if events.is_empty() {
                continue;
            }
            let first = self.job.events;
            self.job.events += events.len() as u64;
            let change = Change::Events {
                id: self.job.id.clone(),
                first,
                events,
            };
            if let Err(error) = write(self.store, self.live, self.job, vec![change]).await {
                tracing::warn!(target: "hourglass::jobs", job = %self.job.id, %error, "a job's events were not stored");
            }
        }
        if let Some((code, status, message)) = stream.failure() {
            let error = CallError::before_attempts(code, status, message.to_owned());
            // The engine's error event, stored with the rest, already ends the stream.
            return End::failed(error).closed();
        }
        self.ending()
    }

    /// The events a frame completes, as the job stores them.
    fn events_of(&mut self, data: &[u8]) -> Vec<Bytes> {
        let mut events = Vec::new();
        let job = &mut *self.job;
        let (end, error) = (&mut self.end, &mut self.error);
        let scanned = self.scanner.push(data, |event| {
            // Comments (heartbeats, keep-alives) are not part of the answer.
            let Some(text) = event.data.as_deref() else {
                return;
            };
            if job.kind != Kind::Response {
                events.push(responses::render(event.name, text));
                return;
            }
            let sequence = job.events + events.len() as u64;
            if let Adopted::Event {
                bytes,
                upstream_id,
                end: last,
                error: failed,
            } = responses::adopt_event(&job.id, event.name, text, sequence)
            {
                events.push(bytes);
                if upstream_id.is_some() {
                    job.upstream_id = upstream_id;
                }
                if last.is_some() {
                    *end = last;
                }
                if failed.is_some() {
                    *error = failed;
                }
            }
        });
        if let Err(message) = scanned {
            tracing::warn!(target: "hourglass::jobs", job = %job.id, %message, "a job's stream was malformed");
        }
        events
    }

    /// How a stream that ended without the engine failing it ends the job.
    fn ending(&mut self) -> End {
        let json = || Answer {
            status: 200,
            content_type: "application/json".to_owned(),
        };
        if self.job.kind != Kind::Response {
            let answer = Answer {
                status: 200,
                content_type: "text/event-stream; charset=utf-8".to_owned(),
            };
            // A job's streamed answer is its events, read from the store when asked for.
            return End::answered(State::Completed, answer, Bytes::new());
        }
        match (self.end.take(), self.error.take()) {
            (Some((body, state)), _) => End::answered(state, json(), body),
            (None, Some((code, message))) => {
                let code = ErrorCode::from_name(&code).unwrap_or(ErrorCode::UpstreamStatus);
                End::failed(CallError::before_attempts(
                    code,
                    StatusCode::BAD_GATEWAY,
                    message,
                ))
                .closed()
            }
            (None, None) => End::failed(CallError::before_attempts(
                ErrorCode::UpstreamTruncated,
                StatusCode::BAD_GATEWAY,
                "the upstream's Response stream ended without its final event".to_owned(),
            )),
        }
    }
}

/// Resolves once the job is asked to stop.
async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    let _ = cancel.wait_for(|cancelled| *cancelled).await;
}

/// Stores `job` with `changes`, then shows it to lookups and followers.
async fn write(
    store: &dyn Store,
    live: &Live,
    job: &Job,
    mut changes: Vec<Change>,
) -> Result<(), crate::store::StoreError> {
    changes.push(Change::Job(Box::new(job.clone())));
    let written = store.apply(changes).await;
    if let Err(error) = &written
        && error.lease_lost
    {
        live.lost.store(true, std::sync::atomic::Ordering::Relaxed);
        live.cancel.send_replace(true);
        return written;
    }
    *live
        .job
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = job.clone();
    live.changed.send_modify(|n| *n += 1);
    written
}

/// The engine's request for a stored job, under its deadline.
fn request_of(job: &Job, body: Bytes, deadline: Instant) -> Result<CallRequest, CallError> {
    let endpoint = Endpoint::from_name(&job.asked.endpoint).unwrap_or(Endpoint::Other);
    let head = if endpoint.passes_through() {
        Default::default()
    } else {
        hourglass_engine::request::read_head(endpoint, &body).map_err(|bad| {
            CallError::before_attempts(ErrorCode::BadRequest, StatusCode::BAD_REQUEST, bad.message)
        })?
    };
    let mut request = CallRequest::with_head(endpoint, Method::POST, &job.asked.path, body, head);
    for (name, value) in &job.asked.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            request.headers.append(name, value);
        }
    }
    if let Ok(id) = HeaderValue::from_str(&job.request_id) {
        request.headers.insert("x-request-id", id);
    }
    request.client_deadline = Some((deadline, "timeouts.job".to_owned()));
    request.unattended = true;
    request.pinned = job.asked.pinned.clone();
    Ok(request)
}

/// A job whose stored request cannot be read: it fails, it is not retried.
fn lost(why: &str) -> CallError {
    CallError::before_attempts(
        ErrorCode::JobsUnavailable,
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the job could not be run: {why}"),
    )
}
