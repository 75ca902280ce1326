//! The HTTP server in front of the engine: OpenAI-compatible routes, the client's deadline
//! headers, OpenAI-shaped errors with `x-should-retry: false`, request limits and graceful
//! shutdown. Plain hyper: the routes are few and the hot path stays visible.

mod server; // accept loop, connection settings, graceful shutdown
mod routes; // which path does what
mod deadline; // x-hourglass-timeout and the OpenAI SDKs' timeout headers
mod body; // the response body: whole, or a stream from the engine
mod heartbeat; // keep-alives to the client while no content flows

pub use body::GatewayBody;
pub use deadline::{ClientTimeouts, client_timeouts};
pub use server::{Gateway, serve};
