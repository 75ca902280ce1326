//! The end of the shutdown grace period, told to everything still running: a call waiting for its
//! engine answers `gateway_shutdown`, and a stream ends with that error in its protocol's shape,
//! instead of a bare close when the process exits.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

/// The moment the shutdown grace period runs out: every call and stream still running then ends
/// with a `gateway_shutdown` error in its protocol's shape, not a bare close.
#[derive(Clone, Default)]
pub struct Stopping {
    notify: Arc<Notify>,
    now: Arc<AtomicBool>,
}

impl Stopping {
    /// Tells everything waiting that the grace period ran out.
    pub fn now(&self) {
        self.now.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Whether the grace period ran out.
    pub fn has_come(&self) -> bool {
        self.now.load(Ordering::Acquire)
    }

    /// Resolves when the grace period runs out (at once if it has), borrowing: for a call's own
    /// future.
    pub async fn arrived(&self) {
        // Created before the check: it hears a `now()` that comes after.
        let notified = self.notify.notified();
        if self.has_come() {
            return;
        }
        notified.await;
    }

    /// Resolves when the grace period runs out (at once if it has), owned: for a body.
    pub fn wait(&self) -> StoppingSoon {
        StoppingSoon {
            notified: Box::pin(self.notify.clone().notified_owned()),
            stopping: self.clone(),
        }
    }
}

/// The error a call still running when the grace period runs out ends with.
pub fn error() -> hourglass_engine::CallError {
    hourglass_engine::CallError::before_attempts(
        hourglass_engine::ErrorCode::GatewayShutdown,
        http::StatusCode::SERVICE_UNAVAILABLE,
        "the gateway stopped before the answer ended (server.shutdown_grace ran out); retry the call"
            .to_owned(),
    )
}

/// The future of [`Stopping::wait`], kept by a body that polls it beside its own work.
pub struct StoppingSoon {
    notified: Pin<Box<OwnedNotified>>,
    stopping: Stopping,
}

impl Future for StoppingSoon {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A `Notified` hears `notify_waiters` from its creation on; the flag covers the rest.
        if self.notified.as_mut().poll(cx).is_ready() || self.stopping.has_come() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}
