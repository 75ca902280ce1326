//! The process's memory allocator: jemalloc. Measured against glibc's malloc on 10,000
//! concurrent streams (docs/benchmarks.md): glibc kept a flood's high-water mark for ever
//! (fragmented arenas are only trimmed at their top), jemalloc gives pages back within seconds
//! of the load ending, and costs less CPU per call.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Lets jemalloc return freed memory to the system from threads of its own, so an idle process
/// shrinks too (without them pages are only purged when other allocations happen). For the
/// long-running commands (`serve`, `sim`).
pub fn return_memory_while_idle() {
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(
            "memory: jemalloc's background purging is off ({error}); freed pages return only while calls are served"
        );
    }
}

#[cfg(test)]
mod tests {
    /// jemalloc is linked and its background purging turns on (that it serves every allocation is
    /// the `#[global_allocator]` above; proving it at run time would take jemalloc's stats build).
    #[test]
    fn jemalloc_purges_in_the_background() {
        super::return_memory_while_idle();
        assert!(tikv_jemalloc_ctl::background_thread::read().unwrap());
        assert!(
            tikv_jemalloc_ctl::version::read()
                .unwrap()
                .starts_with("5.")
        );
    }
}
