//! Giving the pages the heap has freed back to the operating system.
//!
//! glibc's allocator returns freed memory to the system only from the top of a heap, and a
//! refresh frees text and compressed blocks all over it: each active job's text rendered anew,
//! the blocks of the active segments compressed again, the first round's placeholders dropped.
//! So RSS kept what every refresh had freed, about 50 MiB at 100,000 tracked jobs.
//! `malloc_trim` also releases the free pages inside the heaps: after each round, RSS at
//! 100,000 jobs after 120 refreshes fell from 303 to 256 MiB, for a median 4.8 ms a trim
//! (BENCHMARKS.md, run 6).

/// Releases the free pages of every heap (glibc's `malloc_trim`); elsewhere, nothing. It walks
/// the free lists under the allocator's locks, so it is called off the async workers.
pub(crate) fn release_free_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and only walks the allocator's own free lists, under
    // its locks; glibc allows it from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
