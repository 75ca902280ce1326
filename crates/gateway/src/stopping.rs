//! The end of the shutdown grace period, told to everything still running: a call waiting for its
//! engine answers `gateway_shutdown`, and a stream ends with that error in its protocol's shape,
//! instead of a bare close when the process exits.
//!
//! Every call waits on it, so it is sharded by thread: a call registers with its own serving
//! thread's `Notify`, and the lanes do not take one shared lock twice per call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use hourglass_observe::metrics::{SHARDS, shard};
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

/// The moment the shutdown grace period runs out: every call and stream still running then ends
/// with a `gateway_shutdown` error in its protocol's shape, not a bare close.
#[derive(Clone)]
pub struct Stopping {
    shards: Arc<[Arc<Notify>]>,
    now: Arc<AtomicBool>,
}

impl Default for Stopping {
    fn default() -> Stopping {
        Stopping {
            shards: (0..SHARDS).map(|_| Arc::new(Notify::new())).collect(),
            now: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Stopping {
    /// Tells everything waiting that the grace period ran out.
    pub fn now(&self) {
        self.now.store(true, Ordering::Release);
        for shard in self.shards.iter() {
            shard.notify_waiters();
        }
    }

    /// The calling thread's `Notify`.
    fn notify(&self) -> &Arc<Notify> {
        &self.shards[shard()]
    }

    /// Whether the grace period ran out.
    pub fn has_come(&self) -> bool {
        self.now.load(Ordering::Acquire)
    }

    /// Resolves when the grace period runs out (at once if it has), borrowing: for a call's own
    /// future.
    pub async fn arrived(&self) {
        // Created before the check: it hears a `now()` that comes after.
        let notified = self.notify().notified();
        if self.has_come() {
            return;
        }
        let mut notified = std::pin::pin!(notified);
        // The waker the `Notified` holds. A call's future is polled many times, nearly always
        // with the same waker; each poll of a waiting `Notified` takes its `Notify`'s lock to
        // look at it, so with the same waker only the flag is read (it is set before the
        // waiters are woken), and the `Notified` is polled when the flag is up or the waker
        // changed.
        let mut registered: Option<std::task::Waker> = None;
        std::future::poll_fn(|cx| {
            if !self.has_come() && registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                return Poll::Pending;
            }
            let polled = notified.as_mut().poll(cx);
            if polled.is_pending() {
                registered = Some(cx.waker().clone());
            }
            polled
        })
        .await;
    }

    /// Resolves when the grace period runs out (at once if it has), owned: for a body.
    pub fn wait(&self) -> StoppingSoon {
        StoppingSoon {
            notified: Box::pin(self.notify().clone().notified_owned()),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Waiters on threads of their own (each on its own shard) all hear `now`, both kinds.
    #[test]
    fn every_thread_hears_the_end_of_the_grace_period() {
        let stopping = Stopping::default();
        let waiters: Vec<_> = (0..SHARDS + 2)
            .map(|i| {
                let stopping = stopping.clone();
                let (registered, ready) = std::sync::mpsc::channel();
                let thread = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap();
                    runtime.block_on(async {
                        if i % 2 == 0 {
                            let mut arrived = std::pin::pin!(stopping.arrived());
                            assert!(poll_once(arrived.as_mut()).is_pending());
                            registered.send(()).unwrap();
                            arrived.await;
                        } else {
                            let mut soon = stopping.wait();
                            assert!(poll_once(Pin::new(&mut soon)).is_pending());
                            registered.send(()).unwrap();
                            soon.await;
                        }
                    });
                });
                ready.recv().unwrap();
                thread
            })
            .collect();
        stopping.now();
        for waiter in waiters {
            waiter.join().unwrap();
        }
        // After it, a new wait ends at once.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            stopping.arrived().await;
            stopping.wait().await;
        });
    }

    /// Polls once with a waker that does nothing.
    fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(std::task::Waker::noop()))
    }
}
