//! The process's memory allocator: jemalloc. Measured against glibc's malloc on 10,000
//! concurrent streams (docs/benchmarks-log.md): glibc kept a flood's high-water mark for ever
//! (fragmented arenas are only trimmed at their top), jemalloc gives pages back a second after
//! they are freed, and costs less CPU per call.

use tikv_jemalloc_ctl::{Access, AsName};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long a freed page stays unused before it goes back to the system: a second, not
/// jemalloc's ten. 10,000 slow streams over HTTP/2 a minute after a flood over HTTP/1.1 peaked
/// at 178–196 MB with it against 192–209 MB with the default, and a flood's memory was back
/// within 5 s (docs/benchmarks-log.md, step 18), at no cost in instructions per call: the
/// background threads do the purging.
const DIRTY_DECAY_MS: isize = 1000;
/// jemalloc's own default; any other value was chosen in `_RJEM_MALLOC_CONF` and is kept.
const JEMALLOC_DIRTY_DECAY_MS: isize = 10_000;

/// Lets jemalloc return freed memory to the system from threads of its own, so an idle process
/// shrinks too (without them pages are only purged when other allocations happen), and a second
/// after it was freed. For the long-running commands (`serve`, `sim`).
pub fn return_memory_while_idle() {
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(
            "memory: jemalloc's background purging is off ({error}); freed pages return only while calls are served"
        );
    }
    if let Err(error) = purge_after_a_second() {
        tracing::warn!(
            "memory: jemalloc keeps freed pages for its default 10 s ({error}), not {DIRTY_DECAY_MS} ms"
        );
    }
}

/// Sets the decay of freed pages for every arena, now and later, unless the environment chose one.
fn purge_after_a_second() -> Result<(), tikv_jemalloc_ctl::Error> {
    let chosen: isize = b"opt.dirty_decay_ms\0".name().read()?;
    if chosen != JEMALLOC_DIRTY_DECAY_MS {
        return Ok(());
    }
    // An arena not made yet will take `arenas.dirty_decay_ms` when it is.
    b"arenas.dirty_decay_ms\0".name().write(DIRTY_DECAY_MS)?;
    for key in decay_keys_of_made_arenas()? {
        key.as_bytes().name().write(DIRTY_DECAY_MS)?;
    }
    Ok(())
}

/// `arena.<i>.dirty_decay_ms` of every arena jemalloc has made so far (NUL-terminated keys).
fn decay_keys_of_made_arenas() -> Result<Vec<String>, tikv_jemalloc_ctl::Error> {
    let mut keys = Vec::new();
    for arena in 0..tikv_jemalloc_ctl::arenas::narenas::read()? {
        let made = format!("arena.{arena}.initialized\0");
        if Access::<bool>::read(made.as_bytes().name())? {
            keys.push(format!("arena.{arena}.dirty_decay_ms\0"));
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    /// jemalloc is linked and its background purging turns on (that it serves every allocation is
    /// the `#[global_allocator]` above; proving it at run time would take jemalloc's stats build).
    #[test]
    fn jemalloc_purges_in_the_background() {
        use tikv_jemalloc_ctl::{Access, AsName};
        super::return_memory_while_idle();
        assert!(tikv_jemalloc_ctl::background_thread::read().unwrap());
        // Freed pages go back after a second, in the arenas made later and in every one made.
        let later: isize = b"arenas.dirty_decay_ms\0".name().read().unwrap();
        assert_eq!(later, super::DIRTY_DECAY_MS);
        let made = super::decay_keys_of_made_arenas().unwrap();
        assert!(
            made.iter().any(|key| key == "arena.0.dirty_decay_ms\0"),
            "arena 0 is made as jemalloc starts: {made:?}"
        );
        for key in made {
            let decay: isize = key.as_bytes().name().read().unwrap();
            assert_eq!(decay, super::DIRTY_DECAY_MS, "{key}");
        }
        assert!(
            tikv_jemalloc_ctl::version::read()
                .unwrap()
                .starts_with("5.")
        );
    }
}
