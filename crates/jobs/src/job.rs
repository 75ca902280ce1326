//! A background job as the store keeps it: what was asked, whose it is, where it stands, what
//! its stream has stored so far, and how it ended. Bodies (the request's, the answer's) and
//! events are stored beside it, so a poll reads only this small record.

use serde::{Deserialize, Serialize};

/// Which interface made the job, and so in which shape it is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `POST /v1/responses` with `"background": true`: told as OpenAI's Response object.
    Response,
    /// Any endpoint with `Prefer: respond-async`: told as an `hourglass.job`.
    Job,
}

/// Where a job stands. The last four are terminal: nothing changes a job after them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for a free runner.
    Queued,
    /// Its call is being made.
    InProgress,
    /// It has its answer.
    Completed,
    /// It ended without an answer (the error says why).
    Failed,
    /// Cancelled before it ended.
    Cancelled,
    /// The upstream ended the answer early (a Response's `incomplete`, e.g. at
    /// `max_output_tokens`).
    Incomplete,
}

impl State {
    /// Whether nothing changes the job any more.
    pub fn is_terminal(self) -> bool {
        !matches!(self, State::Queued | State::InProgress)
    }

    /// The word OpenAI's Response object and the job object use.
    pub fn name(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::InProgress => "in_progress",
            State::Completed => "completed",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
            State::Incomplete => "incomplete",
        }
    }
}

/// What the client asked for (its body is stored beside the record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Asked {
    /// The endpoint's name (`chat`, `responses`, … — see `Endpoint::name`).
    pub endpoint: String,
    /// The path under `/v1`, with its query.
    pub path: String,
    /// The model asked for.
    pub model: Option<String>,
    /// Whether the client asked for a stream: its events are stored as they come.
    pub stream: bool,
    /// The request headers passed on to the upstream (never the client's gateway key).
    pub headers: Vec<(String, String)>,
    /// The one upstream it may go to: where a stored response it continues lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
}

/// A finished job's answer: the status and content type the synchronous call would have had
/// (its body is stored beside the record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// Its `Content-Type`.
    pub content_type: String,
}

/// Why a job failed, or was cancelled: a documented error code and what happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The error code (`docs/errors.md`).
    pub code: String,
    /// What happened, which limit, and where it is set.
    pub message: String,
    /// The HTTP status the synchronous call would have answered with.
    pub status: u16,
}

/// One background job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// `resp_…` for a background response, `job_…` for any other.
    pub id: String,
    /// Which interface made it.
    pub kind: Kind,
    /// The fingerprint of the key that made it: only that key sees it.
    pub owner: String,
    /// Where it stands.
    pub state: State,
    /// When it was submitted, its call last started, and it ended (Unix milliseconds).
    pub created_at: u64,
    /// When its call (last) started.
    pub started_at: Option<u64>,
    /// When it reached its terminal state.
    pub finished_at: Option<u64>,
    /// When it fails if it has not ended (`timeouts.job` after submission).
    pub deadline_at: u64,
    /// What was asked.
    pub asked: Asked,
    /// The submission's `x-request-id`, sent upstream with every run.
    pub request_id: String,
    /// How many times its call was started (a restart before any output runs it again).
    pub runs: u32,
    /// Events stored, the gateway's own included; they are numbered from 0.
    pub events: u64,
    /// How many of them the gateway wrote at submission (a Response's `response.created`):
    /// kept when a run is started again; any more means the answer had begun.
    pub own_events: u64,
    /// The answer, once there is one (for a failure too: the error body the synchronous call
    /// would have sent).
    pub answer: Option<Answer>,
    /// Why it failed or was cancelled.
    pub failure: Option<Failure>,
    /// The upstream that answered.
    pub upstream: Option<String>,
    /// The upstream's own id for the response (a Response stored there under it).
    pub upstream_id: Option<String>,
    /// A webhook URL the job named itself.
    pub webhook: Option<String>,
    /// The request fields its Response object repeats (a background response's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<serde_json::Value>,
    /// Whether a client asked for it to be cancelled while another instance held it (kept by
    /// a shared store beside the record, not in it).
    #[serde(skip)]
    pub cancel_requested: bool,
}

impl Job {
    /// Whether part of the answer was stored (and so may have been seen): such a job cannot be
    /// run again from the start without splicing two answers.
    pub fn output_begun(&self) -> bool {
        self.events > self.own_events
    }
}
