//! The HTTP server in front of the engine: OpenAI-compatible routes, the client's deadline
//! headers, errors in the caller's protocol's shape with `x-should-retry: false`, request limits,
//! reloads and graceful shutdown. Plain hyper: the routes are few and the hot path stays visible.

// Modules top-down: each uses only modules listed after it.
mod server; // accept loop, connection limit, graceful shutdown
mod lanes; // the serving threads (`server.threads`): connection settings, draining at shutdown
mod routes; // which path does what: the gateway's own endpoints, the API, keys, request ids
mod gateway; // the engine new calls go through (swapped on reload), settings, metrics
mod body; // the response body: whole, a stream from the engine, or heartbeats while waiting
mod heartbeat; // keep-alives to the client while no content flows
mod deadline; // x-hourglass-timeout and the OpenAI SDKs' timeout headers
mod stopping; // the end of the shutdown grace period, told to calls and streams still running
mod wakes; // a connection's task polled again in place when it wakes itself
mod head_timer; // hyper's header-read timer, fired by a lane's pacemaker

pub use body::GatewayBody;
pub use deadline::{ClientTimeouts, MAX_CLIENT_TIMEOUT, client_timeouts};
pub use gateway::{Gateway, Reloaded, Reloader, Settings};
pub use heartbeat::{MAX_HEARTBEAT, requested as requested_heartbeat};
pub use server::serve;
