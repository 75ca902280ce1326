//! The gateway end to end over loopback TCP: real sockets, simulated upstreams, the real clock
//! (timings are checked with margins), and the official Python SDK pointed at it.

#![allow(clippy::unwrap_used)] // test helpers may panic on what a test does not expect

mod anthropic;
mod curl;
mod dashboard;
mod hostile;
mod http_api;
mod jobs;
mod limits;
mod llama;
mod metrics;
mod middlebox;
mod sdk;
mod support;
