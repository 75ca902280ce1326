//! The engine against simulated upstreams over the in-memory transport, on tokio's paused clock:
//! every deadline is checked to the millisecond, every fault kind streaming and not, and the
//! attempt trail of each outcome.

#![allow(clippy::unwrap_used)] // test helpers may panic on what a test does not expect

mod balance;
mod chaos;
mod failover;
mod faults;
mod http2;
mod pools;
mod shape;
mod streamed;
mod support;
