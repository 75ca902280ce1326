//! Configuration: TOML read once into validated types, and the per-model timeout and retry policy
//! built from layered profiles (built-in priors per model family and scenario, then the user's
//! overrides). Pure: no runtime, no I/O beyond reading text, so it can be fuzzed and tested alone.
//!
//! Nothing is built here yet; the gateway issue fills it.
