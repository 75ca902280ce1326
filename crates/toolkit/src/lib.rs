//! The command-line tools that measure and explain: `probe`, `diagnose`, `explain` and `tune`. They
//! reuse the engine's upstream client and its phase timeline, so the tools measure with the code
//! that enforces the timeouts.

pub mod explain; // error text → class, phase, causes, fixes
pub mod probe; // endpoints × models → latency by phase, verdicts
pub mod stats; // percentiles
