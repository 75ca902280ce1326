//! The simulator's integration tests: one binary, driven over the in-memory transport on tokio's
//! paused clock (every timing is exact) and over loopback TCP where the fault lives in the kernel
//! (`reset`, `blackhole`), plus round trips with the official OpenAI SDKs.

#![allow(clippy::unwrap_used)] // test helpers may panic on what a test does not expect

mod faults;
mod messages;
mod scenario;
mod sdk;
mod shapes;
mod support;
