//! Observers of the engine's events: Prometheus exposition now; rolling windows and the
//! dashboard's data to come. The engine never depends on this crate; events flow out through
//! `hourglass_engine::events::Observer`, metrics never in.

pub mod metrics; // Prometheus counters, histograms and the text format
pub mod status; // recent windows and failures for GET /status

pub use metrics::Metrics;
