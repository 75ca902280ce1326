//! The log's writer: lines are formatted on the calling thread and written to stderr by a thread
//! of their own, so a call never waits on a write to a slow pipe, journald or a terminal, and
//! pays no system call for its line. Lines wait in a bounded buffer that the writer thread writes
//! out every 20 ms in one write while lines keep coming; after a tick with nothing to write the
//! thread sleeps until the next line wakes it (an idle gateway wakes nobody 50 times a second).
//! A line that finds the buffer full is dropped and counted in
//! `hourglass_log_lines_dropped_total`, never allowed to hold a call up. The guard writes out what
//! waits when the process ends.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hourglass_observe::metrics::LOG_LINES_DROPPED;
use tracing_subscriber::fmt::MakeWriter;

/// Bytes of lines that may wait for the writer thread (about 16,000 call lines).
const QUEUE_BYTES: usize = 4 << 20;

/// Past this many bytes waiting, the writer thread is woken at once rather than at its next tick.
const WAKE_BYTES: usize = 256 << 10;

/// How often the writer thread writes out what is waiting.
const TICK: Duration = Duration::from_millis(20);

/// Lines waiting to be written, and whether the writer thread sleeps until one comes.
#[derive(Default)]
struct Queue {
    /// Lines, one after another.
    bytes: Vec<u8>,
    /// The writer thread found nothing at its last tick and waits for a line to wake it.
    asleep: bool,
}

/// What the logging threads and the writer thread share.
struct Shared {
    /// Lines waiting to be written.
    waiting: Mutex<Queue>,
    /// Wakes the writer thread before its tick when much is waiting.
    wake: Condvar,
    /// The output, held while a batch is written so batches never interleave or reorder.
    out: Mutex<Box<dyn Write + Send>>,
    /// How many times a line woke the writer thread.
    #[cfg(test)]
    wakes: std::sync::atomic::AtomicUsize,
}

impl Shared {
    /// Writes out everything waiting, in order, as one write.
    fn write_waiting(&self, spare: &mut Vec<u8>) {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::swap(&mut waiting.bytes, spare);
        }
        if !spare.is_empty() {
            let _ = out.write_all(spare);
            let _ = out.flush();
            spare.clear();
        }
    }
}

/// A handle the log layer writes each formatted line to (one `write` per line): the line is
/// appended to what waits, under a lock held for a copy, with no system call — and a wake-up only
/// for the first line after the writer went to sleep.
#[derive(Clone)]
pub struct Lines {
    shared: Arc<Shared>,
}

/// The layers write each line through a borrowed handle: a handle made per line (a clone) counted
/// the shared writer up and down for every line, two writes to a cache line every serving thread
/// writes.
impl<'a> MakeWriter<'a> for Lines {
    type Writer = &'a Lines;

    fn make_writer(&'a self) -> &'a Lines {
        self
    }
}

impl Write for Lines {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        (&*self).write(line)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Write for &Lines {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut waiting = self
            .shared
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if waiting.bytes.len() + line.len() > QUEUE_BYTES {
            LOG_LINES_DROPPED.fetch_add(1, Ordering::Relaxed);
            return Ok(line.len());
        }
        waiting.bytes.extend_from_slice(line);
        if waiting.asleep || waiting.bytes.len() >= WAKE_BYTES {
            waiting.asleep = false;
            self.shared.wake.notify_one();
            #[cfg(test)]
            self.shared.wakes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes out the waiting lines when dropped (at the end of `main`).
pub struct Guard {
    shared: Arc<Shared>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.write_waiting(&mut Vec::new());
    }
}

/// The writer of `out` on a thread of its own: the handle to log to, and the guard that writes
/// out what is left.
pub fn spawn(out: impl Write + Send + 'static) -> (Lines, Guard) {
    let shared = Arc::new(Shared {
        waiting: Mutex::new(Queue {
            bytes: Vec::with_capacity(64 << 10),
            asleep: false,
        }),
        wake: Condvar::new(),
        out: Mutex::new(Box::new(out)),
        #[cfg(test)]
        wakes: Default::default(),
    });
    let writer = shared.clone();
    let thread = std::thread::Builder::new()
        .name("hourglass-log".to_owned())
        .spawn(move || write_lines(&writer));
    if let Err(error) = thread {
        // Without the thread, lines would wait until the end: say so once, where they would go.
        eprintln!(
            "hourglass: the log writer thread did not start ({error}); log lines are written at exit"
        );
    }
    (
        Lines {
            shared: shared.clone(),
        },
        Guard { shared },
    )
}

/// Every tick (or sooner when much is waiting), writes out what waits; after a tick with
/// nothing, sleeps until a line comes, then gives the lines a tick to gather.
///
/// A tick passes after each write before the thread looks for lines: looked for at once, the
/// buffer the write had just emptied was found empty, so under steady load the thread went to
/// sleep after every write and a serving thread's next line paid a `futex` wake, and often its
/// core, to the writer: 50 times a second (docs/benchmarks-log.md, issue 19's step 55).
fn write_lines(shared: &Shared) {
    let mut spare = Vec::with_capacity(64 << 10);
    let lock = || {
        shared
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    };
    let mut waiting = lock();
    loop {
        if waiting.bytes.is_empty() {
            waiting.asleep = true;
            while waiting.asleep {
                waiting = (shared.wake)
                    .wait(waiting)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            waiting = gather(shared, waiting);
        }
        drop(waiting);
        shared.write_waiting(&mut spare);
        waiting = gather(shared, lock());
    }
}

/// Waits a tick for lines to gather, cut short when much is waiting.
fn gather<'a>(shared: &'a Shared, waiting: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
    if waiting.bytes.len() >= WAKE_BYTES {
        return waiting;
    }
    (shared.wake)
        .wait_timeout(waiting, TICK)
        .unwrap_or_else(PoisonError::into_inner)
        .0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer that keeps what it is given, and can be held back.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<Vec<u8>>>);

    impl Write for Kept {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_and_the_guard_flushes_them() {
        let kept = Kept::default();
        let (mut lines, guard) = spawn(kept.clone());
        for i in 0..1000 {
            lines.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let text = String::from_utf8(kept.0.lock().unwrap().clone()).unwrap();
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected);
    }

    /// Waits (yielding, up to a minute: a correctness bound, not a speed one) until `done`.
    fn until(done: impl Fn() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !done() {
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            std::thread::yield_now();
        }
        true
    }

    #[test]
    fn an_idle_writer_sleeps_until_a_line_wakes_it() {
        let kept = Kept::default();
        let (lines, guard) = spawn(kept.clone());
        let asleep = || lines.shared.waiting.lock().unwrap().asleep;
        assert!(
            until(asleep),
            "with nothing to write, the writer goes to sleep"
        );
        let mut lines2 = lines.clone();
        lines2.write_all(b"one\n").unwrap();
        let written = |n: usize| kept.0.lock().unwrap().len() == n;
        assert!(
            until(|| written(4)),
            "the line is written without any other"
        );
        assert!(until(asleep), "and it sleeps again");
        lines2.write_all(b"two\n").unwrap();
        assert!(until(|| written(8)));
        assert_eq!(kept.0.lock().unwrap().as_slice(), b"one\ntwo\n");
        drop(guard);
    }

    #[test]
    fn lines_that_keep_coming_seldom_wake_the_writer() {
        let kept = Kept::default();
        let (lines, guard) = spawn(kept.clone());
        let mut lines2 = lines.clone();
        // A line every millisecond for 20 ticks: each tick finds lines, so the writer never
        // sleeps and no line has to wake it but the first. (It slept after each of its writes,
        // and the next line woke it: about 20 wakes.) A few are allowed for a test machine
        // that holds this thread up for a whole tick.
        let started = tokio::time::Instant::now();
        let mut count = 0;
        while started.elapsed() < 20 * TICK {
            lines2.write_all(b"line\n").unwrap();
            count += 1;
            std::thread::park_timeout(Duration::from_millis(1));
        }
        let wakes = lines.shared.wakes.load(Ordering::Relaxed);
        assert!(wakes <= 5, "{wakes} wakes for {count} lines over 20 ticks");
        drop(guard);
        assert_eq!(kept.0.lock().unwrap().len(), 5 * count);
    }

    #[test]
    fn a_full_queue_drops_and_counts_lines_instead_of_waiting() {
        // A writer that blocks until released: the queue fills behind it.
        let gate = Arc::new(Mutex::new(()));
        struct Blocked(Arc<Mutex<()>>);
        impl Write for Blocked {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                let _held = self.0.lock().unwrap_or_else(|e| e.into_inner());
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let held = gate.lock().unwrap();
        let (mut lines, guard) = spawn(Blocked(gate.clone()));
        // A first line the writer thread takes and then holds on to, stuck in its write.
        lines.write_all(b"first\n").unwrap();
        while !lines.shared.waiting.lock().unwrap().bytes.is_empty() {
            std::thread::yield_now();
        }
        // With the writer stuck, a full buffer and 100 lines more: were a write to wait on the
        // writer, this loop would never end.
        let before = LOG_LINES_DROPPED.load(Ordering::Relaxed);
        let line = [b'x'; 1024];
        for _ in 0..QUEUE_BYTES / line.len() + 100 {
            lines.write_all(&line).unwrap();
        }
        let dropped = LOG_LINES_DROPPED.load(Ordering::Relaxed) - before;
        assert_eq!(dropped, 100);
        assert_eq!(
            lines.shared.waiting.lock().unwrap().bytes.len(),
            QUEUE_BYTES
        );
        drop(held);
        drop(guard);
    }
}
