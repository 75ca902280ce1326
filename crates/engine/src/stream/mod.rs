//! Streams from upstreams: the SSE scanner (bytes pass through unchanged; events are only looked
//! at) and the classification of each event as meaningful content or not.

pub mod sse; // event boundaries in a byte stream
pub mod content; // which events are meaningful content
pub mod assemble; // one chat completion body put together from a stream
