//! A fault-injecting simulator of an OpenAI-compatible API server.
//!
//! It answers the OpenAI routes with bodies the official SDKs parse, on a latency model per
//! simulated model (time to first token, tokens per second, output length), and injects the typed
//! faults that kill real calls: at the TCP level (`reset`, `blackhole`), at the HTTP level (`hang`,
//! `delay_headers`, `status`, `rate_limit`) and at the stream level (`first_token`, `slow`,
//! `stall`, `cut`, `malformed`). Faults are chosen per request by the `x-sim-fault` header or per
//! server by probability in a scenario file.
//!
//! A [`Server`] is a value: it serves over TCP on its own address or over an in-memory transport
//! (for tests on tokio's paused clock), so tests run in parallel. Streamed content is verifiable
//! ([`content::check`]): every token carries its choice's tag and sequence number, so a client can
//! prove nothing was lost, duplicated or spliced from two attempts.
//!
//! This crate depends on no other hourglass crate.

// Modules in the order a request meets them.
pub mod duration; // human durations ("250ms", "1m 30s") shared by faults and scenarios
pub mod scenario; // scenario files: several simulated upstreams, their models and fault mixes
pub mod server; // the listener, the in-memory transport, connections, reset and blackhole
pub mod fault; // the `x-sim-fault` grammar and the typed faults
mod request; // what the simulator reads from a request body
pub mod model; // simulated models: built-in families and the latency model
mod plan; // request + model + faults + randomness → the timed script of one response
pub mod content; // verifiable generated text
mod render; // OpenAI-shaped JSON bodies and SSE events
mod body; // the timed response body that plays a script

pub use fault::{Fault, FaultSet};
pub use model::{LatencyModel, ModelKind, ModelProfile};
pub use scenario::Scenario;
pub use server::{Server, ServerConfig, Stats};
