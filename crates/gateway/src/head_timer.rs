//! hyper's header-read timer for a lane's client connections, kept on the lane's pacemaker.
//!
//! hyper asks its timer for a sleep each time it waits for a request head (the first, and each
//! next one on a kept-alive connection), and drops it when the head has come: once per request.
//! tokio's timer made each a timer entry in the runtime's wheel, boxed, inserted when first polled
//! and taken out when dropped: about 500 instructions a request (`bench/instructions`,
//! docs/benchmarks-log.md). Here a sleep takes a slot in the lane's list when first polled and
//! gives it back when dropped, and the lane's pacemaker (`lanes::pace`, every 50 ms while the lane
//! has a connection) wakes those whose deadline has passed. A head that does not come is cut within
//! a tick of `server.header_read_timeout`, never before it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

/// The header-read sleeps of one lane's connections.
#[derive(Debug, Default)]
pub struct HeadTimers {
    slots: Mutex<Slots>,
}

/// Sleeps waiting, each in its slot; a free slot is `None` and listed in `free`.
#[derive(Debug, Default)]
struct Slots {
    slots: Vec<Option<Waiting>>,
    free: Vec<usize>,
}

/// One sleep that has been polled and not yet dropped.
#[derive(Debug)]
struct Waiting {
    deadline: Instant,
    waker: Waker,
    fired: bool,
}

impl HeadTimers {
    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fires every sleep whose deadline is `now` or earlier: its connection's task is woken,
    /// and the sleep is ready when polled.
    pub fn fire_due(&self, now: Instant) {
        let mut due = Vec::new();
        let mut slots = self.slots();
        let mut waiting = 0;
        for sleep in slots.slots.iter_mut().flatten() {
            waiting += 1;
            if !sleep.fired && sleep.deadline <= now {
                sleep.fired = true;
                due.push(sleep.waker.clone());
            }
        }
        // None waits and the list grew past 64 (a flood of connections is over): it starts again
        // small, so the ticks from now on walk a short list.
        if waiting == 0 && slots.slots.capacity() > 64 {
            *slots = Slots::default();
        }
        drop(slots);
        // Woken outside the lock: a task polled at once takes it.
        due.into_iter().for_each(Waker::wake);
    }

    /// How many sleeps are waiting (polled, not dropped).
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.slots().slots.iter().flatten().count()
    }
}

/// The timer hyper's connections on one lane are given.
#[derive(Debug, Clone, Default)]
pub struct LaneTimer(pub Arc<HeadTimers>);

// hyper's trait speaks std's `Instant`; on tokio's clock, as hyper-util's `TokioTimer` is, so a
// test that pauses tokio's clock pauses these too.
#[allow(
    clippy::disallowed_types,
    reason = "hyper's Timer trait takes and gives std's Instant"
)]
impl hyper::rt::Timer for LaneTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        // A duration past any clock is a sleep that does not end (as tokio's far future).
        let now = Instant::now();
        let deadline = (now.checked_add(duration))
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30));
        self.sleep_until(deadline.into_std())
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HeadSleep {
            timers: self.0.clone(),
            deadline: Instant::from_std(deadline),
            slot: None,
        })
    }

    fn now(&self) -> std::time::Instant {
        // A fresh reading, not the turn's: a head's deadline is never earlier than its timeout.
        Instant::now().into_std()
    }
}

/// One header-read sleep: ready once the lane's pacemaker has found its deadline passed.
struct HeadSleep {
    timers: Arc<HeadTimers>,
    deadline: Instant,
    /// Its slot, once polled.
    slot: Option<usize>,
}

impl hyper::rt::Sleep for HeadSleep {}

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut slots = this.timers.slots();
        let Slots { slots, free } = &mut *slots;
        if let Some(Some(waiting)) = this.slot.and_then(|at| slots.get_mut(at)) {
            if waiting.fired {
                return Poll::Ready(());
            }
            if !waiting.waker.will_wake(cx.waker()) {
                waiting.waker = cx.waker().clone();
            }
            return Poll::Pending;
        }
        let waiting = Waiting {
            deadline: this.deadline,
            waker: cx.waker().clone(),
            fired: false,
        };
        this.slot = Some(match free.pop() {
            Some(at) => {
                slots[at] = Some(waiting);
                at
            }
            None => {
                slots.push(Some(waiting));
                slots.len() - 1
            }
        });
        Poll::Pending
    }
}

impl Drop for HeadSleep {
    fn drop(&mut self) {
        if let Some(at) = self.slot {
            let mut slots = self.timers.slots();
            // A slot is held until its sleep is dropped (the list is emptied only when none is).
            if let Some(slot) = slots.slots.get_mut(at) {
                *slot = None;
                slots.free.push(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use hyper::rt::Timer;

    use super::*;

    /// A waker that counts its wakes.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_sleep_fires_on_the_first_tick_at_or_after_its_deadline_and_gives_its_slot_back() {
        let timer = LaneTimer::default();
        let start = Instant::now();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut sleep = timer.sleep_until((start + Duration::from_secs(1)).into_std());
        assert_eq!(timer.0.waiting(), 0, "a slot is taken when first polled");
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        assert!(sleep.as_mut().poll(&mut cx).is_pending(), "polled again");
        assert_eq!(timer.0.waiting(), 1);

        timer.0.fire_due(start + Duration::from_millis(999));
        assert_eq!(
            count.0.load(Ordering::Relaxed),
            0,
            "never before its deadline"
        );
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        timer.0.fire_due(start + Duration::from_secs(1));
        assert_eq!(count.0.load(Ordering::Relaxed), 1, "its task is woken");
        timer.0.fire_due(start + Duration::from_secs(2));
        assert_eq!(count.0.load(Ordering::Relaxed), 1, "once");
        assert!(sleep.as_mut().poll(&mut cx).is_ready());

        // A later sleep reuses the slot; a dropped one is never woken.
        let mut next = timer.sleep(Duration::from_secs(3600));
        drop(sleep);
        assert_eq!(timer.0.waiting(), 0);
        assert!(next.as_mut().poll(&mut cx).is_pending());
        let mut third = timer.sleep_until(start.into_std());
        assert!(third.as_mut().poll(&mut cx).is_pending());
        assert_eq!(timer.0.waiting(), 2);
        assert_eq!(
            timer.0.slots().slots.len(),
            2,
            "the freed slot was taken again"
        );
        drop(third);
        timer.0.fire_due(start + Duration::from_secs(2));
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(next.as_mut().poll(&mut cx).is_pending());

        // After a flood, the list shrinks once nothing waits.
        let mut flood: Vec<_> = (0..100)
            .map(|_| timer.sleep(Duration::from_secs(60)))
            .collect();
        for sleep in &mut flood {
            assert!(sleep.as_mut().poll(&mut cx).is_pending());
        }
        drop((next, flood));
        assert!(timer.0.slots().slots.capacity() >= 100);
        timer.0.fire_due(start);
        assert_eq!(timer.0.slots().slots.capacity(), 0);
        assert_eq!(
            count.0.load(Ordering::Relaxed),
            1,
            "nothing dropped was woken"
        );
    }
}
