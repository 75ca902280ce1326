//! The command-line tools that measure and explain: `probe`, `diagnose`, `explain` and `tune`. They
//! reuse the engine's upstream client and its phase timeline, so the tools measure with the code
//! that enforces the timeouts.

pub mod diagnose; // one URL, phase by phase: DNS, TCP, TLS, first byte, first token
pub mod explain; // error text → class, phase, causes, fixes
pub mod gateway; // a running gateway's /metrics and /status, for tune --gateway
pub mod probe; // endpoints × models → latency by phase, verdicts
pub mod prom; // Prometheus text: samples, histograms, quantiles
pub mod stats; // percentiles
pub mod tune; // measured distributions → timeouts and retries, with their rules
mod x509; // subject, issuer and expiry of a certificate
