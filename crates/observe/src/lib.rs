//! Observers of the engine's events: Prometheus exposition, rolling latency histograms and the
//! dashboard's data. The engine never depends on this crate; events flow out, metrics never in.
//!
//! Nothing is built here yet.
