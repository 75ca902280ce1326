//! Values kept in slots on cache lines of their own, so that the serving threads (one per core)
//! write no line another one writes: each thread updates the slot its number (or its runtime)
//! picks, and a reader goes over them all. Also the lock the engine's shared state is taken with.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// `mutex`, locked. A lock a panicking holder left poisoned is taken over: every value kept
/// behind these locks is whole between two writes, so a panic elsewhere loses nothing in it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The calling thread's number: threads are numbered from 0 as they first ask.
pub fn thread_number() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static NUMBER: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    NUMBER.with(|number| *number)
}

/// A value on cache lines of its own: 128 bytes, as a core's prefetcher pulls lines in pairs.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Padded<T>(pub T);

/// `N` values, each behind a lock of its own on cache lines of its own.
#[derive(Debug)]
pub struct Slots<T, const N: usize>([Padded<Mutex<T>>; N]);

impl<T: Default, const N: usize> Default for Slots<T, N> {
    fn default() -> Self {
        Slots(std::array::from_fn(|_| Padded::default()))
    }
}

impl<T, const N: usize> Slots<T, N> {
    /// The calling thread's slot, locked: its own while there are no more than `N` threads
    /// asking; past that, threads share.
    pub fn local(&self) -> MutexGuard<'_, T> {
        self.at(thread_number())
    }

    /// Slot `i` (modulo `N`), locked.
    pub fn at(&self, i: usize) -> MutexGuard<'_, T> {
        lock(&self.0[i % N].0)
    }

    /// Every slot, each locked as the iterator reaches it: a caller that drops each guard
    /// before taking the next holds one lock at a time.
    pub fn each(&self) -> impl Iterator<Item = MutexGuard<'_, T>> {
        self.0.iter().map(|slot| lock(&slot.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_writes_the_slot_its_number_picks_and_a_reader_sees_them_all() {
        let slots: Slots<Vec<usize>, 4> = Slots::default();
        let numbers: Vec<usize> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..3)
                .map(|_| {
                    scope.spawn(|| {
                        let me = thread_number();
                        slots.local().push(me);
                        slots.local().push(thread_number());
                        me
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let mut distinct = numbers.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            3,
            "every thread has a number of its own: {numbers:?}"
        );
        let kept: Vec<Vec<usize>> = slots.each().map(|slot| slot.clone()).collect();
        for me in numbers {
            // Both of a thread's writes went to the slot its number picks.
            let mine = &kept[me % 4];
            assert_eq!(mine.iter().filter(|&&n| n == me).count(), 2, "{kept:?}");
        }
        assert_eq!(kept.iter().map(Vec::len).sum::<usize>(), 6, "{kept:?}");
        assert_eq!(std::mem::align_of::<Padded<u8>>(), 128);
        assert_eq!(std::mem::size_of::<Slots<u64, 4>>(), 4 * 128);
    }

    #[test]
    fn a_lock_left_poisoned_by_a_panic_is_taken_over() {
        let mutex = Mutex::new(5);
        let _ = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let _held = mutex.lock().unwrap();
                    panic!("the holder panics");
                })
                .join()
        });
        assert!(mutex.is_poisoned());
        *lock(&mutex) += 1;
        assert_eq!(*lock(&mutex), 6);
    }
}
