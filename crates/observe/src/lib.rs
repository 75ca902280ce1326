//! Observers of the engine's events: Prometheus exposition now; rolling windows, time series
//! and failures for `/status` and the dashboard. The engine never depends on this crate; events flow out through
//! `hourglass_engine::events::Observer`, metrics never in.

pub mod metrics; // Prometheus counters, histograms and the text format
pub mod series; // fifteen minutes in ten-second steps per target, for the dashboard's charts
pub mod status; // recent windows and failures for GET /status

pub use metrics::Metrics;
