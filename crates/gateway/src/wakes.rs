//! A client connection's task polled again at once when it woke itself while being polled.
//!
//! One task holds hyper's server connection, the handler, and the upstream connection it drives,
//! so a call keeps waking its own task: the request body's reader signals hyper's server side,
//! the upstream's response head and body come through hyper's channels, and a connection given
//! back to the pool is polled once more. tokio treats a task woken during its own poll as a
//! yield: it goes to the back of the run queue and a parked worker is woken to steal it, a
//! futex wake and two context switches each time (about 3 per call when calls come one by one;
//! docs/benchmarks-log.md). Here such a wake only marks the task, and the poll runs again in place;
//! wakes from anywhere else (the socket, a timer) go to tokio as they are.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// Polls in a row before a task that keeps waking itself is yielded to the scheduler, as tokio
/// would, so it cannot starve the others.
const MAX_POLLS_IN_A_ROW: usize = 4;

/// Not being polled: a wake goes to tokio.
const IDLE: u8 = 0;
/// Being polled: a wake only marks it.
const POLLING: u8 = 1;
/// Woken while being polled: polled again before it returns.
const WOKEN: u8 = 2;

/// `inner`, its own wakes during a poll turned into another poll in place.
pub(crate) struct SelfWakesInPlace<F> {
    inner: Pin<Box<F>>,
    state: Arc<WakeState>,
    /// The waker `inner` is polled with (a handle on `state`), made once.
    waker: Waker,
    /// The scheduler's waker `state` holds, as last handed to it: a poll with the same one
    /// (nearly every poll) leaves `state`'s lock alone.
    scheduler: Option<Waker>,
}

impl<F: Future> SelfWakesInPlace<F> {
    pub(crate) fn new(inner: F) -> Self {
        let state = Arc::new(WakeState {
            phase: AtomicU8::new(IDLE),
            scheduler: Mutex::new(None),
        });
        SelfWakesInPlace {
            inner: Box::pin(inner),
            waker: Waker::from(state.clone()),
            state,
            scheduler: None,
        }
    }
}

impl<F: Future> Future for SelfWakesInPlace<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        if !(this.scheduler.as_ref()).is_some_and(|known| known.will_wake(cx.waker())) {
            this.state.remember(cx.waker());
            this.scheduler = Some(cx.waker().clone());
        }
        let mut own = Context::from_waker(&this.waker);
        for _ in 0..MAX_POLLS_IN_A_ROW {
            // A plain store (not an exchange): a wake that still reads IDLE goes to the
            // scheduler, which polls again; one that reads POLLING marks it, and the exchange
            // below sees the mark (both are read-modify-writes of `phase`, so ordered).
            this.state.phase.store(POLLING, Ordering::Release);
            if let Poll::Ready(output) = this.inner.as_mut().poll(&mut own) {
                this.state.phase.store(IDLE, Ordering::Release);
                return Poll::Ready(output);
            }
            // A wake that came after this exchange finds IDLE and goes to tokio.
            if this
                .state
                .phase
                .compare_exchange(POLLING, IDLE, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return Poll::Pending;
            }
        }
        this.state.phase.store(IDLE, Ordering::Release);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Whether the task is being polled, and the scheduler's waker for wakes that come when not.
struct WakeState {
    phase: AtomicU8,
    scheduler: Mutex<Option<Waker>>,
}

impl WakeState {
    /// Keeps the waker of the poll under way (tokio's is the same each time: a cheap check;
    /// [`SelfWakesInPlace`] calls this only when it changed).
    fn remember(&self, waker: &Waker) {
        let mut scheduler = self
            .scheduler
            .lock()
            .expect("the waker lock is never poisoned");
        match scheduler.as_ref() {
            Some(known) if known.will_wake(waker) => {}
            _ => *scheduler = Some(waker.clone()),
        }
    }
}

impl Wake for WakeState {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Being polled (or already marked): the poll under way runs again; otherwise tokio's.
        if let Ok(_) | Err(WOKEN) =
            self.phase
                .compare_exchange(POLLING, WOKEN, Ordering::SeqCst, Ordering::SeqCst)
        {
            return;
        }
        let scheduler = self
            .scheduler
            .lock()
            .expect("the waker lock is never poisoned");
        if let Some(waker) = scheduler.as_ref() {
            waker.wake_by_ref();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A scheduler's waker that counts its wakes.
    #[derive(Default)]
    struct Counted(AtomicUsize);

    impl Wake for Counted {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Wakes itself during each of its first `times` polls, as hyper's channels do, then is done;
    /// counts its polls.
    struct WakesItself {
        times: usize,
        polls: Arc<AtomicUsize>,
    }

    impl Future for WakesItself {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.times == 0 {
                return Poll::Ready(());
            }
            self.times -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn scheduler() -> (Arc<Counted>, Waker) {
        let counted = Arc::new(Counted::default());
        (counted.clone(), Waker::from(counted))
    }

    #[test]
    fn a_self_wake_is_polled_again_in_place_without_waking_the_scheduler() {
        let (woken, waker) = scheduler();
        let polls = Arc::new(AtomicUsize::new(0));
        let mut task = SelfWakesInPlace::new(WakesItself {
            times: 2,
            polls: polls.clone(),
        });
        let polled = Pin::new(&mut task).poll(&mut Context::from_waker(&waker));
        assert!(polled.is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 3);
        assert_eq!(woken.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_task_that_keeps_waking_itself_is_yielded_to_the_scheduler() {
        let (woken, waker) = scheduler();
        let polls = Arc::new(AtomicUsize::new(0));
        let mut task = SelfWakesInPlace::new(WakesItself {
            times: 100,
            polls: polls.clone(),
        });
        let polled = Pin::new(&mut task).poll(&mut Context::from_waker(&waker));
        assert!(polled.is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), MAX_POLLS_IN_A_ROW);
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_wake_between_polls_reaches_the_scheduler() {
        let (woken, waker) = scheduler();
        let (sender, receiver) = tokio::sync::oneshot::channel::<u8>();
        let mut task = SelfWakesInPlace::new(receiver);
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut task).poll(&mut cx).is_pending());
        assert_eq!(woken.0.load(Ordering::SeqCst), 0);
        sender.send(7).expect("the receiver is alive");
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert!(matches!(
            Pin::new(&mut task).poll(&mut cx),
            Poll::Ready(Ok(7))
        ));
    }

    /// On its first poll, another thread wakes it and has finished before the poll returns.
    struct WokenFromAnotherThreadWhilePolled {
        polled: bool,
    }

    impl Future for WokenFromAnotherThreadWhilePolled {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.polled {
                return Poll::Ready(());
            }
            self.polled = true;
            let waker = cx.waker().clone();
            std::thread::spawn(move || waker.wake())
                .join()
                .expect("the waking thread");
            Poll::Pending
        }
    }

    #[test]
    fn a_wake_from_another_thread_during_a_poll_is_not_lost() {
        let (woken, waker) = scheduler();
        let mut task = SelfWakesInPlace::new(WokenFromAnotherThreadWhilePolled { polled: false });
        let polled = Pin::new(&mut task).poll(&mut Context::from_waker(&waker));
        // Polled again in place: neither pending and forgotten, nor handed to the scheduler.
        assert!(polled.is_ready());
        assert_eq!(woken.0.load(Ordering::SeqCst), 0);
    }
}
