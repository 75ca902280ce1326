//! Observation, in one place: every attempt runs under a lease on its target's health (the
//! verdict given when the attempt ends, or a committed stream's at its end) and is told to the
//! observer; every call ends with one log line and one event — when it really ends: at the end
//! of a committed stream, or when the client leaves (`client_cancel`); hedges are told to the
//! observer and the health log. The loop and the stream only decide; they call in here.
//!
//! A call served on a client connection writes its log line after its answer has gone out:
//! while the gateway polls the connection under [`LinesAfterPoll`], the lines of calls that end
//! wait and are written when the poll returns (by then hyper has written the answer to the
//! socket), so formatting a line never delays the bytes a client waits for. Elsewhere (a
//! background job, a test) the line is written at once. The process may install a writer of
//! its own for the line ([`write_call_lines_with`]): the binary's text log writes it straight,
//! byte for byte as its `tracing` subscriber would, without an event's dispatch.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Duration;

use hourglass_config::Hedge;
use tokio::time::Instant;

use crate::call::{Call, Shared, Target};
use crate::error::{AttemptRecord, FailureKind};
use crate::events::{AttemptEvent, CallEvent, HedgeOutcome, retries_and_failovers};
use crate::health::{Event, Lease};
use crate::held::Held;
use crate::upstream::Timeline;
use crate::vocabulary::{ErrorCode, Outcome};

/// A lease on `target`'s health for an attempt of `call`: it counts the attempt in flight.
pub(crate) fn lease<'a>(call: &Call<'a>, target: &Target) -> Lease<'a> {
    let adaptive = matches!(call.route.hedge, Hedge::Quantile(_));
    let health = &call.shared.health;
    health.lease(
        target.upstream,
        &target.model,
        adaptive,
        crate::clock::now(),
    )
}

/// An attempt ended (`failure` when it failed): its event, and the lease's verdict unless a
/// committed stream took the lease (its verdict comes at the stream's end).
pub(crate) fn attempt_ended(
    call: &Call<'_>,
    target: &Target,
    record: &AttemptRecord,
    timeline: Option<&Timeline>,
    failure: Option<&FailureKind>,
    lease: Option<Lease<'_>>,
) {
    if let Some(observer) = call.shared.observer() {
        observer.attempt(&AttemptEvent {
            model: &call.route.name,
            upstream: &target.name,
            upstream_model: &target.model,
            outcome: record.outcome,
            phase: record.phase,
            timeline,
            elapsed: record.elapsed,
        });
    }
    if let Some(FailureKind::Status {
        status,
        retry_after,
        ..
    }) = failure
    {
        learn(call, target, *status, *retry_after);
    }
    let Some(lease) = lease else {
        return;
    };
    match failure {
        None => {
            let latency = timeline.and_then(|t| t.first_token_latency());
            lease.finish_after(latency, false);
        }
        Some(failure) if failure.blames_upstream() => lease.finish(true),
        Some(_) => lease.finish_client_error(),
    }
}

/// What an upstream's status teaches every call (and every replica): a 429 or 503/529 with
/// `Retry-After` cools that upstream and model for that long; a 401 or 403 for the upstream's
/// own key cools the whole upstream. A client's own key passed through is the client's matter:
/// a 429 or 401 for it cools nothing.
fn learn(call: &Call<'_>, target: &Target, status: u16, retry_after: Option<Duration>) {
    use crate::health::cooldown::{KEY_REJECTED_FOR, Reason};
    let own_key = call
        .shared
        .config
        .upstreams
        .get(target.upstream)
        .is_some_and(|u| u.api_key.is_some());
    let health = &call.shared.health;
    match (status, retry_after) {
        (429, Some(after)) if own_key => {
            health.learned(
                target.upstream,
                Some(&target.model),
                after,
                Reason::RateLimited,
            );
        }
        (503 | 529, Some(after)) => {
            health.learned(
                target.upstream,
                Some(&target.model),
                after,
                Reason::Overloaded,
            );
        }
        (401 | 403, _) if own_key => {
            health.learned(target.upstream, None, KEY_REJECTED_FOR, Reason::KeyRejected);
        }
        _ => {}
    }
}

/// A hedge started, won or lost: told to the observer and to the health log.
pub(crate) fn hedge(shared: &Shared, model: &str, outcome: HedgeOutcome, event: Event) {
    if let Some(observer) = shared.observer() {
        observer.hedge(model, outcome);
    }
    shared.health.hedge_event(event);
}

/// A call, until it ends: then one log line (its id, model, outcome, every attempt, the time
/// taken) and one event. Dropped before it was told how the call ended, it tells
/// `client_cancel`: the client left.
pub(crate) struct CallEnding<'a> {
    shared: Held<'a, Shared>,
    model: String,
    request_id: String,
    /// The API called (`chat`, `messages`, … — see `Endpoint::name`).
    endpoint: &'static str,
    start: Instant,
    /// When the call committed (its answer began), once it did.
    committed: Option<Duration>,
    /// Every attempt made, the committed one last.
    pub trail: Vec<AttemptRecord>,
    told: bool,
}

impl<'a> CallEnding<'a> {
    /// A call of `model` (as the client named it) to `endpoint`, with `request_id`, that arrived
    /// at `start`.
    pub fn new(
        shared: &'a Arc<Shared>,
        model: &str,
        endpoint: &'static str,
        request_id: &str,
        start: Instant,
    ) -> CallEnding<'a> {
        CallEnding {
            shared: Held::Call(shared),
            model: model.to_owned(),
            endpoint,
            request_id: request_id.to_owned(),
            start,
            committed: None,
            trail: Vec::new(),
            told: false,
        }
    }

    /// The call committed with `trail`: its answer began, a stream that ends later, when this
    /// (the ending the stream takes) tells how.
    pub fn committed(mut self, trail: &[AttemptRecord]) -> CallEnding<'static> {
        // This one is the stream's now: dropped here, it tells nothing.
        self.told = true;
        CallEnding {
            shared: self.shared.for_stream(),
            model: std::mem::take(&mut self.model),
            request_id: std::mem::take(&mut self.request_id),
            endpoint: self.endpoint,
            start: self.start,
            committed: Some(crate::clock::since(self.start)),
            trail: trail.to_vec(),
            told: false,
        }
    }

    /// The call answered whole with `trail`: it committed and ended at once. The trail is read
    /// where it is, not copied as a commit keeps it (a vector and two strings an attempt).
    pub fn answered(mut self, trail: &[AttemptRecord]) {
        self.committed = Some(crate::clock::since(self.start));
        self.tell(Outcome::Ok, "", trail);
    }

    /// The call ended: `ok`, or failed with `code` and `message` (after its answer began, or
    /// before), with `trail` when no commit recorded one.
    pub fn ended(mut self, outcome: Outcome, message: &str, trail: Option<&[AttemptRecord]>) {
        let kept = std::mem::take(&mut self.trail);
        self.tell(outcome, message, trail.unwrap_or(&kept));
    }

    fn tell(&mut self, outcome: Outcome, message: &str, trail: &[AttemptRecord]) {
        self.told = true;
        let mut attempts = String::with_capacity(32 * trail.len());
        for a in trail {
            if !attempts.is_empty() {
                attempts.push(',');
            }
            for part in [&a.upstream, ":", a.outcome.name(), "@", a.phase.name()] {
                attempts.push_str(part);
            }
        }
        let elapsed = crate::clock::since(self.start);
        if let Some(observer) = self.shared.observer() {
            // A model nothing serves is not a label: clients could mint them without end.
            let unrouted = matches!(
                outcome,
                Outcome::Failed(ErrorCode::NoRoute | ErrorCode::BadRequest)
            );
            let (retries, failovers) = retries_and_failovers(
                trail
                    .iter()
                    .filter(|a| a.outcome != Outcome::HedgeCancelled)
                    .map(|a| a.upstream.as_str()),
            );
            observer.call(&CallEvent {
                model: if unrouted { "" } else { &self.model },
                outcome,
                attempts: trail.len(),
                retries,
                failovers,
                elapsed: self.committed.unwrap_or(elapsed),
            });
        }
        CallLine {
            request_id: std::mem::take(&mut self.request_id),
            model: std::mem::take(&mut self.model),
            endpoint: self.endpoint,
            outcome,
            attempts,
            elapsed_ms: (elapsed.as_secs_f64() * 1000.0 * 10.0).round() / 10.0,
            error: message.to_owned(),
        }
        .write_or_hold();
    }
}

/// One call's log line, with every value it shows taken when the call ended.
struct CallLine {
    request_id: String,
    model: String,
    endpoint: &'static str,
    outcome: Outcome,
    attempts: String,
    elapsed_ms: f64,
    error: String,
}

thread_local! {
    /// Whether this thread is polling a client connection under [`LinesAfterPoll`].
    static HOLDING: Cell<bool> = const { Cell::new(false) };
    /// The lines held meanwhile, in the order their calls ended (the room is kept).
    static HELD: RefCell<Vec<CallLine>> = const { RefCell::new(Vec::new()) };
}

impl CallLine {
    /// Writes the line now, or holds it until the poll under way returns.
    fn write_or_hold(self) {
        if HOLDING.get() {
            HELD.with_borrow_mut(|held| held.push(self));
        } else {
            self.write();
        }
    }

    fn write(&self) {
        CallLineFields {
            request_id: &self.request_id,
            model: &self.model,
            endpoint: self.endpoint,
            outcome: self.outcome.name(),
            attempts: &self.attempts,
            elapsed_ms: self.elapsed_ms,
            error: &self.error,
        }
        .write();
    }
}

/// The target of the per-call log line.
pub const CALL_LINE_TARGET: &str = "hourglass::call";

/// One call's log line (target [`CALL_LINE_TARGET`], level INFO, message `call`): its fields, in
/// the order the line shows them.
#[derive(Debug, Clone, Copy)]
pub struct CallLineFields<'a> {
    /// The call's `x-request-id`.
    pub request_id: &'a str,
    /// The model as the client named it.
    pub model: &'a str,
    /// The endpoint's name (`chat`, `messages`, …).
    pub endpoint: &'a str,
    /// The call's outcome (`ok` or an error code).
    pub outcome: &'a str,
    /// Every attempt as `upstream:outcome@phase`, comma-separated.
    pub attempts: &'a str,
    /// The call's time in milliseconds, rounded to tenths.
    pub elapsed_ms: f64,
    /// The failure's message; empty when the call succeeded.
    pub error: &'a str,
}

/// A process's own writer of call lines: writes the line byte for byte as its `tracing`
/// subscriber would, and says so, or says it did not (the line then goes through `tracing`).
pub type CallLineWriter = Box<dyn Fn(&CallLineFields<'_>) -> bool + Send + Sync>;

/// The installed call-line writer, if any.
static CALL_LINE_WRITER: std::sync::OnceLock<CallLineWriter> = std::sync::OnceLock::new();

/// Installs the process's call-line writer, once (a second is handed back). A line a call
/// ends with is offered to it before `tracing`: an event's dispatch, its walk over the fields
/// and the subscriber's formatter cost the serving thread about 4,500 instructions a call,
/// where writing the known line straight out costs a fraction. Install one only where it
/// writes exactly what the subscriber would, and only when the subscriber's filter lets the
/// line through (the writer is not asked).
pub fn write_call_lines_with(writer: CallLineWriter) -> Result<(), CallLineWriter> {
    CALL_LINE_WRITER.set(writer)
}

impl CallLineFields<'_> {
    /// Writes the line: through the installed writer, else as a `tracing` event.
    pub fn write(&self) {
        if let Some(writer) = CALL_LINE_WRITER.get()
            && writer(self)
        {
            return;
        }
        self.trace();
    }

    /// The line as a `tracing` event: what an installed writer must match byte for byte.
    pub fn trace(&self) {
        // The message as a plain field, not format arguments: the same line, but a string is
        // written as it is where arguments go through `Debug` and an escaping formatter.
        tracing::info!(
            target: CALL_LINE_TARGET,
            message = "call",
            request_id = self.request_id,
            model = self.model,
            endpoint = self.endpoint,
            outcome = self.outcome,
            attempts = self.attempts,
            elapsed_ms = self.elapsed_ms,
            error = self.error,
        );
    }
}

/// Held while a client connection is polled: the log lines of calls that end meanwhile are
/// written when it is dropped, after the poll (and the answer's write) is done. Their events,
/// metrics and health are told at once as before; only the formatting waits. Nested, the
/// outermost one writes.
pub struct LinesAfterPoll {
    outermost: bool,
}

impl LinesAfterPoll {
    /// Starts holding this thread's call lines.
    pub fn begin() -> LinesAfterPoll {
        LinesAfterPoll {
            outermost: !HOLDING.replace(true),
        }
    }
}

impl Drop for LinesAfterPoll {
    fn drop(&mut self) {
        if !self.outermost {
            return;
        }
        HOLDING.set(false);
        // Taken out to write (a subscriber that logs while writing finds the room free), and
        // only when a call ended: most polls end none.
        let held = HELD.with_borrow_mut(|held| (!held.is_empty()).then(|| std::mem::take(held)));
        let Some(mut held) = held else { return };
        for line in held.drain(..) {
            line.write();
        }
        HELD.with_borrow_mut(|room| {
            if room.is_empty() {
                *room = held;
            }
        });
    }
}

impl Drop for CallEnding<'_> {
    fn drop(&mut self) {
        if !self.told {
            let kept = std::mem::take(&mut self.trail);
            self.tell(
                Outcome::ClientCancel,
                "the client left before the call ended",
                &kept,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tracing::field::{Field, Visit};
    use tracing::{Event, Metadata, Subscriber, span};

    /// Keeps the request id of every call line written, in order.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<String>>>);

    impl Written {
        fn ids(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    impl Visit for Written {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "request_id" {
                self.0.lock().unwrap().push(value.to_owned());
            }
        }
        fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
    }

    impl Subscriber for Written {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
            span::Id::from_u64(1)
        }
        fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
        fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
        fn event(&self, event: &Event<'_>) {
            if event.metadata().target() == "hourglass::call" {
                event.record(&mut self.clone());
            }
        }
        fn enter(&self, _: &span::Id) {}
        fn exit(&self, _: &span::Id) {}
    }

    fn line(request_id: &str) -> CallLine {
        CallLine {
            request_id: request_id.to_owned(),
            model: "m".to_owned(),
            endpoint: "chat",
            outcome: Outcome::Ok,
            attempts: "a:ok@done".to_owned(),
            elapsed_ms: 1.5,
            error: String::new(),
        }
    }

    #[test]
    fn call_lines_wait_for_the_poll_and_are_written_in_order_when_it_returns() {
        let written = Written::default();
        tracing::subscriber::with_default(written.clone(), || {
            line("a").write_or_hold();
            assert_eq!(
                written.ids(),
                ["a"],
                "outside a poll, a line is written at once"
            );
            {
                let _poll = LinesAfterPoll::begin();
                line("b").write_or_hold();
                {
                    let _nested = LinesAfterPoll::begin();
                    line("c").write_or_hold();
                }
                assert_eq!(written.ids(), ["a"], "held while the poll runs, nested too");
            }
            assert_eq!(written.ids(), ["a", "b", "c"], "written when it returns");
            line("d").write_or_hold();
            assert_eq!(written.ids(), ["a", "b", "c", "d"], "and at once after it");
        });
    }
}
