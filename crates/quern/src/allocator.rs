//! The memory allocator of every `quern` process: jemalloc.
//!
//! glibc's malloc keeps what a burst freed: after 2,000 clients connected
//! at once and left, a server stayed at the burst's peak (100–400 MB) for
//! good. jemalloc, with its background thread, hands freed pages back to
//! the system within seconds (the decay of `opt.dirty_decay_ms`, 10 s), and
//! measured faster on the batched end-to-end path too (bench/JOURNAL.md,
//! "Hardening").
//!
//! Invariant: a long-running process (server, worker) calls
//! [`release_in_background`] once at start; without it pages are returned
//! only while the process keeps allocating.

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Starts jemalloc's background thread, which returns freed memory to the
/// system while the process is idle.
pub(crate) fn release_in_background() {
    #[cfg(not(target_env = "msvc"))]
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "cannot start the allocator's background thread; freed memory returns more slowly");
    }
}
