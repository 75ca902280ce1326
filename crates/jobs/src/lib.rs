//! Background calls: a call submitted now and answered later, that outlives its client, every
//! proxy on the way and the gateway process itself. A job runs through the same engine as a
//! synchronous call (phase timeouts, retries, failover, hedging, the retry budget) under its own
//! deadline (`timeouts.job`), and its request, events and answer are kept in a durable store.
//! `docs/jobs.md` is the user's guide.

// Modules top-down: each uses only modules listed after it.
mod service; // the service: submit, look up, cancel, delete, follow; the queue and the sweep
mod runner; // one run of a job: its call through the engine, its answer kept as it comes
mod follow; // a job's events to a client: the stored ones, then each as it is stored
mod ending; // how a job ends: record, answer, closing events and webhooks in one write
pub mod recovery; // what a restart does to the jobs left unfinished
mod webhooks; // signed deliveries of a job's end, retried durably
pub mod responses; // OpenAI's Responses in background mode: objects and events made the job's
pub mod ids; // job ids, the owner's fingerprint, the wall clock
pub mod store; // where jobs live: the Store trait, the embedded redb store, PostgreSQL
pub mod job; // a job as stored: what was asked, whose, where it stands, how it ended

pub use job::{Job, Kind, State};
pub use service::{EngineSource, Jobs, Opener, STORE_FILE, Stats, Submission, not_found};
