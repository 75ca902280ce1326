//! The call path, usable as a library by Rust programs that call AI APIs directly: route, deadlines,
//! the one attempt loop (retry, failover, hedge), balancing, health, the upstream client timed by
//! phase, the stream watchdog, events and the error taxonomy. See `docs/timeouts.md` for the phase
//! model this crate enforces.
//!
//! Nothing is built here yet; the gateway issue fills it.
