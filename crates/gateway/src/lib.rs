//! The HTTP server in front of the engine: OpenAI-compatible routes, client deadline headers,
//! heartbeats, OpenAI-shaped errors, the admin API, hot reload and graceful shutdown.
//!
//! Nothing is built here yet; the gateway issue fills it.
