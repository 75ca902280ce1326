//! How a job ends: its terminal record, its answer, the events that close its stream and the
//! webhook deliveries it owes, all in one atomic write; then its followers are told and it is
//! forgotten from memory. Every way of ending goes through here: an answer, a failure, a
//! cancel, a restart in the middle of an answer.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use hourglass_engine::{CallError, Endpoint, ErrorCode};
use http::StatusCode;

use crate::job::{Answer, Failure, Job, Kind, State};
use crate::responses;
use crate::service::{ENDINGS, Inner, Live, Phase};
use crate::store::{Blob, Change, Store, StoreError};

/// How a job ends.
pub(crate) struct End {
    pub state: State,
    /// The error, for a failure or a cancel.
    pub error: Option<CallError>,
    /// The answer's status, content type and body (`None`: a Response's is its object; a
    /// failure's is the error body).
    pub answer: Option<(Answer, Bytes)>,
    /// Events that close its stream, after the ones stored.
    pub events: Vec<Bytes>,
    /// Whether the stored events already end the stream with the error (the engine's error
    /// event): no second one is added.
    pub closed: bool,
}

impl End {
    /// An answer.
    pub fn answered(state: State, answer: Answer, body: Bytes) -> End {
        End {
            state,
            error: None,
            answer: Some((answer, body)),
            events: Vec::new(),
            closed: false,
        }
    }

    /// A failure, or a cancel (`job_cancelled`).
    pub fn failed(error: CallError) -> End {
        let state = if error.code == ErrorCode::JobCancelled {
            State::Cancelled
        } else {
            State::Failed
        };
        End {
            state,
            error: Some(error),
            answer: None,
            events: Vec::new(),
            closed: false,
        }
    }

    /// The same end, its stream already closed by an error event.
    pub fn closed(mut self) -> End {
        self.closed = true;
        self
    }
}

/// Ends `job` as `end` says: one durable write, then followers told, webhooks sent.
pub(crate) async fn finish(
    inner: &Arc<Inner>,
    store: &dyn Store,
    live: Option<&Live>,
    mut job: Job,
    end: End,
) -> Result<Job, StoreError> {
    let endpoint = Endpoint::from_name(&job.asked.endpoint).unwrap_or(Endpoint::Other);
    job.state = end.state;
    job.finished_at = Some((inner.clock)());
    job.failure = end.error.as_ref().map(|e| Failure {
        code: e.code.name().to_owned(),
        message: e.message.clone(),
        status: e.status.as_u16(),
    });
    let mut events = end.events;
    if job.asked.stream
        && let Some(error) = &end.error
    {
        match job.kind {
            // A Response stream always ends with its terminal event.
            Kind::Response if job.state == State::Failed => {
                let sequence = job.events + events.len() as u64;
                events.push(responses::failed_event(&job, sequence));
            }
            Kind::Job if !end.closed => {
                events.push(endpoint.protocol().error_event(endpoint, error, 0));
            }
            Kind::Job => {}
            Kind::Response => {}
        }
    }
    let (answer, body) = match (end.answer, job.kind, &end.error) {
        (Some(answer), _, _) => answer,
        (None, Kind::Response, _) => (json_answer(StatusCode::OK), object_body(&job)),
        (None, Kind::Job, Some(error)) => (
            json_answer(error.status),
            endpoint.protocol().error_body(error),
        ),
        (None, Kind::Job, None) => (json_answer(StatusCode::OK), Bytes::new()),
    };
    job.answer = Some(answer);
    let mut changes = Vec::with_capacity(4);
    if !events.is_empty() {
        changes.push(Change::Events {
            id: job.id.clone(),
            first: job.events,
            events: events.clone(),
        });
        job.events += events.len() as u64;
    }
    changes.push(Change::Blob {
        id: job.id.clone(),
        blob: Blob::Answer,
        bytes: body,
    });
    let deliveries = inner.webhooks.deliveries_for(&job);
    changes.extend(deliveries.iter().map(|d| d.change()));
    changes.push(Change::Job(Box::new(job.clone())));
    let written = store.apply(changes).await;
    if let Some(live) = live {
        *live
            .job
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = job.clone();
        *live
            .phase
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Phase::Done;
    }
    inner.finished(&job.id);
    if let Some(live) = live {
        live.changed.send_modify(|n| *n += 1);
    }
    written?;
    if let Some(i) = ENDINGS.iter().position(|s| *s == job.state) {
        inner.counters.ended[i].fetch_add(1, Ordering::Relaxed);
    }
    let code = job.failure.as_ref().map_or("", |f| f.code.as_str());
    tracing::info!(target: "hourglass::jobs", job = %job.id, request_id = %job.request_id, state = job.state.name(), code, runs = job.runs, upstream = ?job.upstream, "job ended");
    inner.webhooks.send(deliveries);
    Ok(job)
}

/// Ends a job the queue held when it was cancelled (its runner never started).
pub(crate) async fn cancel_queued(inner: &Arc<Inner>, store: &dyn Store, live: &Live) {
    let job = live.snapshot();
    let end = End::failed(cancelled());
    if let Err(error) = finish(inner, store, Some(live), job, end).await {
        tracing::warn!(target: "hourglass::jobs", %error, "a cancelled job's end was not stored");
    }
}

/// Ends a job whose answer had begun when the gateway stopped.
pub(crate) async fn restarted(
    inner: &Arc<Inner>,
    store: &dyn Store,
    job: Job,
) -> Result<(), StoreError> {
    let error = CallError::before_attempts(
        ErrorCode::GatewayRestarted,
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "the gateway stopped after {} event(s) of this job's answer were stored; it is not run again, so no answer is spliced from two; submit it again",
            job.events - job.own_events
        ),
    );
    finish(inner, store, None, job, End::failed(error)).await?;
    Ok(())
}

/// The error a cancel ends a job with.
pub(crate) fn cancelled() -> CallError {
    CallError::before_attempts(
        ErrorCode::JobCancelled,
        StatusCode::CONFLICT,
        "the background job was cancelled before it ended".to_owned(),
    )
}

fn json_answer(status: StatusCode) -> Answer {
    Answer {
        status: status.as_u16(),
        content_type: "application/json".to_owned(),
    }
}

fn object_body(job: &Job) -> Bytes {
    Bytes::from(serde_json::to_vec(&responses::object(job)).expect("a json value serializes"))
}
