//! The engine's shared state as a call holds it: borrowed while the call runs, and counted (an
//! `Arc` of its own) only when a committed stream takes it past the call. Every serving thread
//! writes such a count, so a count taken by every call would move its cache line between the
//! cores call after call (ARCHITECTURE.md, the serving threads).

use std::ops::Deref;
use std::sync::Arc;

/// A `T` the engine shares, held by a call or by the stream it committed to.
pub(crate) enum Held<'a, T> {
    /// Borrowed for the call.
    Call(&'a Arc<T>),
    /// Counted, for a stream that outlives the call.
    Stream(Arc<T>),
}

impl<T> Held<'_, T> {
    /// The same, for a stream to hold past the call.
    pub(crate) fn for_stream(&self) -> Held<'static, T> {
        Held::Stream(match self {
            Held::Call(shared) => Arc::clone(shared),
            Held::Stream(shared) => shared.clone(),
        })
    }
}

impl<T> Deref for Held<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        match self {
            Held::Call(shared) => shared,
            Held::Stream(shared) => shared,
        }
    }
}
